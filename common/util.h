/* Small shared helpers: diagnostics collection, string vectors, strict number
 * parsing, and address/MAC parsing.  No I/O beyond what callers ask for. */
#ifndef DFW_UTIL_H
#define DFW_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/stat.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* A list of "file:line: message" diagnostics, collected before failing. */
struct diag {
	char **msgs;
	size_t n, cap;
};

/* Appends "file:line: message" (or "file: message" when line <= 0, or just
 * "message" when file is NULL).  Allocation failure aborts. */
void diag_add(struct diag *d, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void diag_free(struct diag *d);
/* Joins all messages with newlines into buf (truncating). */
void diag_join(const struct diag *d, char *buf, size_t len);

/* A growable vector of owned strings. */
struct strv {
	char **v;
	size_t n, cap;
};

void strv_push(struct strv *s, const char *str); /* copies */
void strv_free(struct strv *s);
bool strv_contains(const struct strv *s, const char *str, bool nocase);
/* Removes the first equal string (the last one takes its place); false
 * when there is none. */
bool strv_remove(struct strv *s, const char *str, bool nocase);
/* Splits a comma-separated list, trimming blanks; empty items are kept as ""
 * so that callers can report them.  An all-blank input yields no items. */
void strv_split(struct strv *out, const char *list);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* Grows *v (elements of size sz) so that it holds at least need; *cap updated. */
void grow(void **v, size_t *cap, size_t need, size_t sz);

void str_lower(char *s);
bool str_eq_nocase(const char *a, const char *b);
char *str_trim(char *s); /* in place; returns s advanced past blanks */

/* Strict unsigned parsing of the whole string: decimal digits only (no sign,
 * no blanks, no hex).  Returns 0, or -1 with errno (EINVAL/ERANGE). */
int parse_u64(const char *s, uint64_t max, uint64_t *out);
/* Parses "yes/no/true/false/on/off/1/0".  Returns 0 or -1. */
int parse_bool(const char *s, bool *out);
/* Parses a duration "250ms", "10s", "5m", "1h", "2d" or plain seconds into
 * ms. */
int parse_duration_ms(const char *s, uint64_t *out);

/* An IPv4 or IPv6 prefix.  Host addresses have plen 32 / 128. */
struct dfw_addr {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t plen;
	uint8_t a[16]; /* network byte order; IPv4 in a[0..3] */
};

/* Parses "10.0.0.1", "10.0.0.0/24", "fd00::1", "fd00::/64".  Host bits set
 * under the prefix are an error (catching typos such as 10.0.0.1/24). */
int addr_parse(const char *s, struct dfw_addr *out, const char **why);
/* Formats like addr_parse accepts; /32 and /128 are omitted. */
void addr_format(const struct dfw_addr *a, char *buf, size_t len);
bool addr_contains(const struct dfw_addr *net, const struct dfw_addr *host);
/* What a host address is when no single host can own it (unspecified,
 * loopback, multicast, broadcast, reserved, IPv4-mapped), or NULL. */
const char *addr_not_own(const struct dfw_addr *a);
/* The IPv6 link-local address the kernel derives from mac (EUI-64). */
struct dfw_addr addr_link_local(const uint8_t mac[6]);
int addr_cmp(const struct dfw_addr *x, const struct dfw_addr *y);
int mac_parse(const char *s, uint8_t mac[6]);
void mac_format(const uint8_t mac[6], char *buf, size_t len); /* needs 18 bytes */

/* Levenshtein distance, for "did you mean" suggestions. */
size_t edit_distance(const char *a, const char *b);

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);
/* A non-blocking eventfd that wakes another thread's poll: efd_wake makes
 * it readable, efd_clear makes it unreadable until the next wake. */
void efd_wake(int fd);
void efd_clear(int fd);
/* Depth-first post-order over nodes 0..n-1 (nested groups, service
 * objects): done(arg, node) is called for each node after every node it
 * leads to; cycle(arg, path, len) for each cycle found, path[0] being
 * where it closes.  edge(arg, node, k) is the k-th of degree(arg, node)
 * out-edges, or DFS_NO_EDGE to skip it.  Returns the number of cycles. */
#define DFS_NO_EDGE ((size_t)-1)
struct dfs_ops {
	size_t (*degree)(void *arg, size_t node);
	size_t (*edge)(void *arg, size_t node, size_t k);
	void (*done)(void *arg, size_t node);
	void (*cycle)(void *arg, const size_t *path, size_t len);
};
size_t dfs_postorder(size_t n, const struct dfs_ops *ops, void *arg);

/* Wall-clock time in ms since the epoch (CLOCK_REALTIME). */
uint64_t wall_ms(void);

/* Opens name (relative to directory dfd, or AT_FDCWD) with flags (no
 * O_CREAT) only when it is a regular file, so that a device node, a FIFO
 * or a socket is never opened, not even for a moment (opening a device
 * runs its driver: it may block, or start a watchdog).  The name is first
 * opened O_PATH (a last symbolic link followed unless flags hold
 * O_NOFOLLOW), its type is checked on that fd, and the same object is
 * then opened for I/O through /proc/self/fd.  Returns the fd; or -1 with
 * errno, *st holding what was found (not a regular file: its type; a
 * symbolic link: S_ISLNK, errno ELOOP; a regular file that could not be
 * opened: S_ISREG), or zeroed when nothing was. */
int open_regular(int dfd, const char *name, int flags, struct stat *st);
/* Writes s so that text others chose (a guest's file names, a store key)
 * cannot forge a line or drive a terminal: control characters (C0, DEL,
 * C1) and bytes that are not UTF-8 become \xNN, and a backslash is
 * doubled. */
void fput_shown(FILE *f, const char *s);
/* One log line "2026-11-22T10:00:00 WHO: message\n", flushed; f may be NULL. */
void log_line(FILE *f, const char *who, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Whether the n bytes at s are UTF-8 text without NUL (what a store can
 * hold: etcd's JSON gateway takes nothing else); *bad (may be NULL) gets
 * the offset of the first byte that is not. */
bool utf8_text(const char *s, size_t n, size_t *bad);

#endif
