/* The control socket between dfwctl and dfwd: one request per connection,
 * a line in, an answer out, then close.  dfwd serves its clients from its
 * poll loop without ever blocking on one: a client that never finishes its
 * line, or a pager that stops reading a long answer, holds a slot and
 * nothing else.  Only root may ask. */
#ifndef DFW_CONTROL_H
#define DFW_CONTROL_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The longest request, without its newline. */
#define CONTROL_REQ_MAX 511
/* Clients served at once; further ones wait in the listen backlog. */
#define CONTROL_CLIENTS 8
/* A request must arrive whole this soon after its connection... */
#define CONTROL_READ_MS 1000
/* ...and its answer be taken within this (a pager may hold it a while). */
#define CONTROL_WRITE_MS 60000
/* The pollfds control_pollfds fills: the listening socket, then a slot per
 * client (fd -1 when idle, which poll skips). */
#define CONTROL_NFDS (1 + CONTROL_CLIENTS)

/* How a request failed, carried by its answer's first line and turned into
 * dfwctl's exit status (the same numbers). */
enum control_status {
	CONTROL_OK = 0,
	CONTROL_INPUT = 1,     /* "error: ..."             bad request or input */
	CONTROL_DATAPLANE = 2, /* "error (dataplane): ..." the kernel refused or failed */
	CONTROL_STORE = 3,     /* "error (store): ..."     the store failed */
};

/* Answers one request line (no newline, no control characters) into out:
 * "ok LEN\n" and the body of LEN bytes, or control_error's line; returns
 * the status.  The length lets a client tell a whole answer from one that
 * broke off (dfwd drops an answer not taken within CONTROL_WRITE_MS). */
typedef int (*control_fn)(void *arg, const char *line, FILE *out);

struct control;

/* Whether path is taken: 1 when a process accepts connections there (a
 * dfwd running), -1 when it is not a socket (never removed), both with a
 * message in err; 0 when it is free or a stale socket file. */
int control_in_use(const char *path, char *err, size_t errlen);
/* Listens on path (made 0600; its directory is created if missing), unless
 * control_in_use says it is taken.  Returns NULL with a message in err. */
struct control *control_open(const char *path, FILE *log, char *err, size_t errlen);
/* Closes every client and the socket, and removes its file.  NULL is fine. */
void control_close(struct control *c);
/* Fills p[0..CONTROL_NFDS) for poll. */
void control_pollfds(const struct control *c, struct pollfd *p);
/* After poll: reads requests, runs fn on each whole one, writes answers,
 * drops clients past their deadline, accepts new ones. */
void control_serve(struct control *c, const struct pollfd *p, control_fn fn, void *arg);

/* Writes the error answer "error: msg" (or with the status's class). */
void control_error(FILE *out, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The status an answer's first line carries; its message after *msg (for
 * "ok LEN", the length: see control_answer_len). */
int control_answer_status(const char *first_line, const char **msg);
/* The body's length an "ok LEN" line gives: 1 and *len, or 0 for a plain
 * "ok" (no length to check) or any other line. */
int control_answer_len(const char *first_line, uint64_t *len);

#endif
