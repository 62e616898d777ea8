/* Flow logs: one JSON line per packet that a rule with `log = yes` copied
 * to nflog group DFW_NFLOG_GROUP, appended to a file, at most `rate` lines
 * a second (a token bucket with a burst of `rate`).  Lines the limit
 * refused are counted and reported in a line of their own, so that nothing
 * is lost silently:
 *
 *   {"time":"2026-11-22T15:23:45.123Z","host":"hv1","vnic":"vnet-desktop1",
 *    "rule":230,"direction":"out","verdict":"drop","proto":"tcp",
 *    "src":"10.10.0.11","dst":"10.10.0.12","sport":40312,"dport":445}
 *   {"time":"2026-11-22T15:23:46.001Z","host":"hv1","suppressed":480}
 *
 * The formatting, the prefix parser and the rate limit are pure functions,
 * for the tests; flowlog_open()... is the part with the socket and file. */
#ifndef DFW_FLOWLOG_H
#define DFW_FLOWLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dfw/nflog.h"

#define FLOWLOG_RATE_DEFAULT 1000
#define FLOWLOG_RATE_MAX 1000000

/* The verdict of a rule ("allow", "drop", "reject"), asked per line: rule
 * is the id as in the prefix ("230") or "default"; out is the direction.
 * NULL (or a NULL answer) makes the verdict "unknown". */
typedef const char *flowlog_verdict_fn(void *arg, const char *rule, bool out);

struct flowlog_opts {
	const char *path;               /* appended to; made with mode 0640 */
	const char *host;               /* the "host" member */
	uint32_t rate;                  /* lines a second, 1..FLOWLOG_RATE_MAX */
	flowlog_verdict_fn *verdict_of; /* may be NULL */
	void *verdict_arg;
};

struct flowlog;

/* Opens (creates) the file and binds nflog group DFW_NFLOG_GROUP; copies
 * the strings of o.  NULL with the reason in err. */
struct flowlog *flowlog_open(const struct flowlog_opts *o, char *err, size_t errlen);
void flowlog_close(struct flowlog *fl); /* accepts NULL */
/* The descriptor to poll, and what to do when it is readable: one line per
 * packet (or a count of it).  Returns the packets read, or -1 with errno on
 * a socket error. */
int flowlog_fd(const struct flowlog *fl);
int flowlog_read(struct flowlog *fl);
/* Writes a count line that is due although no packet came (call it now and
 * then, at least once a second, e.g. on every wake-up of a loop). */
void flowlog_tick(struct flowlog *fl);
/* Reopens the file by its path (after logrotate moved it; SIGHUP).  On
 * failure the old file stays in use. */
int flowlog_reopen(struct flowlog *fl, char *err, size_t errlen);

struct flowlog_stats {
	uint64_t packets;      /* read from the kernel */
	uint64_t lines;        /* packet lines written */
	uint64_t suppressed;   /* refused by the rate limit */
	uint64_t foreign;      /* without a dfw prefix: another rule's */
	uint64_t overruns;     /* the socket buffer overflowed (packets lost) */
	uint64_t write_errors; /* lines (of any kind) that could not be written */
	int last_errno;        /* of the last write error */
};
void flowlog_stats(const struct flowlog *fl, struct flowlog_stats *out);

/* ---- pure parts ---- */

/* What a dfw log prefix says: "dfw rule=ID|default in|out [monitor] ". */
struct flowlog_prefix {
	char rule[16];   /* "230" or "default" */
	bool out;
	bool monitor;    /* the rule's action was not enforced */
};
/* 0, or -1 when prefix is not a dfw rule's.  Words after the direction
 * other than "monitor" are ignored (room to grow). */
int flowlog_prefix_parse(const char *prefix, struct flowlog_prefix *out);
/* "monitor" for a monitored rule, else verdict_of's answer, else "unknown". */
const char *flowlog_verdict(const struct flowlog_prefix *pfx, flowlog_verdict_fn *verdict_of,
			    void *arg);

/* "2026-11-22T15:23:45.123Z" (needs 25 bytes). */
void flowlog_time(uint64_t ms, char buf[32]);
/* One packet's line (JSON and '\n') on f.  vnic may be NULL (unknown: the
 * member is left out).  proto is "tcp", "udp", "sctp", "icmp", "icmpv6" or
 * the number; TCP/UDP/SCTP have "sport"/"dport", ICMP "type"/"code", when
 * the packet had them. */
void flowlog_format(FILE *f, const struct nflog_pkt *p, const struct flowlog_prefix *pfx,
		    const char *host, const char *vnic, const char *verdict, uint64_t ms);
/* {"time":...,"host":...,"KEY":n} and '\n' on f. */
void flowlog_format_count(FILE *f, const char *host, const char *key, uint64_t n, uint64_t ms);

/* The rate limit: a token bucket holding up to rate lines, refilled at
 * rate lines a second (exactly, in integers), on a clock in ns that the
 * caller passes (monotonic; tests use a fake one).  Refused lines are
 * counted; their count is due for a report once the bucket has a line to
 * spare again, and at most once a second. */
struct flowlog_limit {
	uint64_t rate;
	uint64_t credit;      /* 1e9 per line */
	uint64_t refilled_ns; /* the time credit is up to date to */
	uint64_t suppressed;  /* refused since the last report */
	uint64_t reported_ns; /* the last report */
	bool reported;        /* reported_ns is set */
};
void flowlog_limit_init(struct flowlog_limit *l, uint32_t rate, uint64_t now_ns);
/* True: write the line.  False: refused (and counted). */
bool flowlog_limit_take(struct flowlog_limit *l, uint64_t now_ns);
/* The count to report now (then it starts again from 0), or 0. */
uint64_t flowlog_limit_due(struct flowlog_limit *l, uint64_t now_ns);

#endif
