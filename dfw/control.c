/* The control socket's connections, served from dfwd's poll loop
 * (dfw/control.h). */
#include "dfw/control.h"

#include "common/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Input after the request line is read and thrown away, up to this much:
 * a socket closed with unread input resets the connection. */
#define DRAIN_MAX 65536
/* After accept fails for want of a file descriptor (or memory), new
 * clients wait this long: the waiting connection keeps the socket
 * readable, and each turn of the loop would fail and log again. */
#define ACCEPT_PAUSE_MS 1000

struct client {
	int fd;           /* -1: a free slot */
	bool answering;   /* the request is done; out is being written */
	bool denied;      /* not root: the request is read, then refused */
	uint64_t deadline; /* now_ns() clock */
	char line[CONTROL_REQ_MAX + 2];
	size_t n;
	char *out;
	size_t len, off, drained;
};

struct control {
	int lfd;
	char *path;
	FILE *log;
	uint64_t accept_after; /* now_ns() clock; 0: accepting */
	struct client cl[CONTROL_CLIENTS];
};

static const char *const status_prefix[] = {
	[CONTROL_INPUT] = "error: ",
	[CONTROL_DATAPLANE] = "error (dataplane): ",
	[CONTROL_STORE] = "error (store): ",
};

void control_error(FILE *out, int status, const char *fmt, ...)
{
	va_list ap;

	if (status < CONTROL_INPUT || status > CONTROL_STORE)
		status = CONTROL_INPUT;
	fputs(status_prefix[status], out);
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
}

int control_answer_status(const char *first_line, const char **msg)
{
	uint64_t len;

	*msg = first_line;
	if (!strcmp(first_line, "ok") || !strcmp(first_line, "ok\n"))
		return CONTROL_OK;
	if (control_answer_len(first_line, &len)) {
		*msg = first_line + 3;
		return CONTROL_OK;
	}
	for (int s = CONTROL_STORE; s >= CONTROL_INPUT; s--) {
		size_t k = strlen(status_prefix[s]);

		if (!strncmp(first_line, status_prefix[s], k)) {
			*msg = first_line + k;
			return s;
		}
	}
	return CONTROL_INPUT; /* not an answer dfwd writes */
}

int control_answer_len(const char *first_line, uint64_t *len)
{
	char num[24];
	size_t n;

	if (strncmp(first_line, "ok ", 3))
		return 0;
	n = strcspn(first_line + 3, "\n");
	if (!n || n >= sizeof(num) || (first_line[3 + n] && strcmp(first_line + 3 + n, "\n")))
		return 0;
	memcpy(num, first_line + 3, n);
	num[n] = '\0';
	return parse_u64(num, UINT64_MAX, len) == 0;
}

int control_in_use(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "control socket path too long: %s", path);
		return -1;
	}
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "control socket %s: exists and is not a socket (left alone)", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
		return -1;
	}
	/* A full backlog (EAGAIN) is a listener too. */
	r = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 || errno == EAGAIN;
	close(fd);
	if (r)
		snprintf(err, errlen, "control socket %s: another dfwd answers there", path);
	return r;
}

struct control *control_open(const char *path, FILE *log, char *err, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char dir[sizeof(sun.sun_path)], *slash;
	struct control *c;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "control socket path too long: %s", path);
		return NULL;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) && slash != dir) {
		*slash = '\0';
		mkdir(dir, 0755);
	}
	/* Only a stale socket is removed: not a live dfwd's, nor a file
	 * that --socket named by mistake. */
	if (control_in_use(path, err, errlen))
		return NULL;
	strcpy(sun.sun_path, path);
	unlink(path);
	c = xcalloc(1, sizeof(*c));
	c->log = log;
	for (size_t i = 0; i < CONTROL_CLIENTS; i++)
		c->cl[i].fd = -1;
	c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->lfd < 0 || bind(c->lfd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    chmod(path, 0600) < 0 || listen(c->lfd, 16) < 0) {
		snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
		if (c->lfd >= 0)
			close(c->lfd);
		free(c);
		return NULL;
	}
	c->path = xstrdup(path);
	return c;
}

static void client_close(struct client *cl)
{
	close(cl->fd);
	free(cl->out);
	memset(cl, 0, sizeof(*cl));
	cl->fd = -1;
}

void control_close(struct control *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < CONTROL_CLIENTS; i++)
		if (c->cl[i].fd >= 0)
			client_close(&c->cl[i]);
	close(c->lfd);
	unlink(c->path);
	free(c->path);
	free(c);
}

void control_pollfds(const struct control *c, struct pollfd *p)
{
	bool room = false;

	for (size_t i = 0; i < CONTROL_CLIENTS; i++) {
		const struct client *cl = &c->cl[i];

		p[1 + i] = (struct pollfd){ .fd = cl->fd, .events = POLLIN };
		if (cl->answering)
			p[1 + i].events = POLLOUT | (cl->drained < DRAIN_MAX ? POLLIN : 0);
		room |= cl->fd < 0;
	}
	/* With every slot taken, new clients wait in the backlog; so they do
	 * for a while after accept failed. */
	if (c->accept_after && now_ns() < c->accept_after)
		room = false;
	p[0] = (struct pollfd){ .fd = room ? c->lfd : -1, .events = POLLIN };
}

/* Reads and discards what the client sent after its request.  At its end
 * of input, stops looking (a socket at its end stays readable). */
static void client_drain(struct client *cl)
{
	char junk[4096];
	ssize_t r = -1;

	while (cl->drained < DRAIN_MAX && (r = read(cl->fd, junk, sizeof(junk))) > 0)
		cl->drained += (size_t)r;
	if (r == 0)
		cl->drained = DRAIN_MAX;
}

/* Sends what the socket takes; closes the client once all is sent or the
 * client is gone. */
static void client_write(struct client *cl)
{
	while (cl->off < cl->len) {
		ssize_t w = send(cl->fd, cl->out + cl->off, cl->len - cl->off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (w <= 0)
			break; /* the client went away: nothing to tell it */
		cl->off += (size_t)w;
	}
	client_drain(cl);
	client_close(cl);
}

/* Puts the answer that fn (or an error) wrote into out on its way. */
static void client_answer(struct client *cl, FILE *out)
{
	if (fclose(out) != 0) {
		client_close(cl); /* out of memory: no answer to give */
		return;
	}
	cl->answering = true;
	cl->off = 0;
	cl->deadline = now_ns() + CONTROL_WRITE_MS * 1000000ull;
	client_write(cl);
}

static FILE *client_out(struct client *cl)
{
	free(cl->out);
	cl->out = NULL;
	cl->len = 0;
	return open_memstream(&cl->out, &cl->len);
}

/* The request is whole: line[0..n). */
static void client_request(struct client *cl, control_fn fn, void *arg)
{
	FILE *out = client_out(cl);
	size_t i;

	if (!out) {
		client_close(cl);
		return;
	}
	if (cl->n && cl->line[cl->n - 1] == '\r') /* a CRLF client */
		cl->n--;
	cl->line[cl->n] = '\0';
	/* NUL is one of them: the loop runs over all n bytes read. */
	for (i = 0; i < cl->n; i++)
		if (((unsigned char)cl->line[i] < 0x20 && cl->line[i] != '\t') ||
		    cl->line[i] == 0x7f)
			break;
	if (i < cl->n)
		control_error(out, CONTROL_INPUT, "request contains control characters");
	else if (cl->denied)
		control_error(out, CONTROL_INPUT, "permission denied (root only)");
	else
		fn(arg, cl->line, out);
	client_answer(cl, out);
}

/* Reads what has arrived of the request; runs it once whole (a newline,
 * or the client's end of sending). */
static void client_read(struct client *cl, control_fn fn, void *arg)
{
	for (;;) {
		size_t room = sizeof(cl->line) - 1 - cl->n;
		ssize_t r = read(cl->fd, cl->line + cl->n, room);
		char *nl;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r < 0) {
			client_close(cl);
			return;
		}
		nl = memchr(cl->line + cl->n, '\n', (size_t)r);
		cl->n += (size_t)r;
		if (nl) {
			cl->n = (size_t)(nl - cl->line);
			break;
		}
		if (r == 0)
			break;
		if (cl->n > CONTROL_REQ_MAX) {
			FILE *out = client_out(cl);

			if (!out) {
				client_close(cl);
				return;
			}
			control_error(out, CONTROL_INPUT, "request too long (at most %d bytes)",
				      CONTROL_REQ_MAX);
			client_answer(cl, out);
			return;
		}
	}
	client_request(cl, fn, arg);
}

/* A slot's deadline passed: a request still unfinished is refused, never
 * run in part; an answer not taken is dropped. */
static void client_expire(struct control *c, struct client *cl)
{
	FILE *out;

	if (cl->answering) {
		fprintf(c->log, "dfwd: control: a client took %zu of %zu answer bytes in %d s; dropped\n",
			cl->off, cl->len, CONTROL_WRITE_MS / 1000);
		client_close(cl);
		return;
	}
	if (!(out = client_out(cl))) {
		client_close(cl);
		return;
	}
	control_error(out, CONTROL_INPUT, "no whole request line within %d ms; nothing done",
		      CONTROL_READ_MS);
	client_answer(cl, out);
}

static void accept_clients(struct control *c)
{
	for (size_t i = 0; i < CONTROL_CLIENTS; i++) {
		struct client *cl = &c->cl[i];
		struct ucred cred;
		socklen_t clen = sizeof(cred);

		if (cl->fd >= 0)
			continue;
		cl->fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (cl->fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED) {
				fprintf(c->log, "dfwd: control: accept: %s; new clients wait %d ms\n",
					strerror(errno), ACCEPT_PAUSE_MS);
				c->accept_after = now_ns() + ACCEPT_PAUSE_MS * 1000000ull;
			}
			cl->fd = -1;
			return;
		}
		c->accept_after = 0;
		cl->deadline = now_ns() + CONTROL_READ_MS * 1000000ull;
		/* Refused once its request is read: answering at once could
		 * break the pipe the client is still writing to. */
		cl->denied = getsockopt(cl->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
			     cred.uid != 0;
	}
}

void control_serve(struct control *c, const struct pollfd *p, control_fn fn, void *arg)
{
	uint64_t now = now_ns();

	for (size_t i = 0; i < CONTROL_CLIENTS; i++) {
		struct client *cl = &c->cl[i];
		short ev = p[1 + i].revents;

		if (cl->fd < 0 || p[1 + i].fd != cl->fd)
			continue;
		if (cl->answering) {
			if (ev & POLLIN)
				client_drain(cl);
			if (ev & (POLLOUT | POLLERR | POLLHUP))
				client_write(cl);
		} else if (ev & (POLLIN | POLLERR | POLLHUP)) {
			client_read(cl, fn, arg);
		}
		if (cl->fd >= 0 && now > cl->deadline)
			client_expire(c, cl);
	}
	if (p[0].revents & POLLIN)
		accept_clients(c);
}
