/* The control socket (dfw/control.c) over a real unix socket: whole
 * requests only, answers that reach the client, and clients that stall
 * without stalling the others. */
#include "tests/unit/unit.h"

#include "common/util.h"
#include "dfw/control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

struct served {
	int calls;
	char last[CONTROL_REQ_MAX + 1];
	size_t big; /* answer this many bytes of 'x' after "ok" */
};

static int answer(void *arg, const char *line, FILE *out)
{
	struct served *s = arg;

	s->calls++;
	snprintf(s->last, sizeof(s->last), "%s", line);
	fprintf(out, "ok\n%s\n", line);
	for (size_t i = 0; i < s->big; i++)
		fputc('x', out);
	return CONTROL_OK;
}

static char sock_path[100];

static struct control *open_ctl(void)
{
	char err[256];
	struct control *c;

	snprintf(sock_path, sizeof(sock_path), "%s/ctl.sock", unit_tmpdir());
	c = control_open(sock_path, stderr, err, sizeof(err));
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	return c;
}

/* A connected non-blocking client, or -1. */
static int connect_ctl(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int client(void)
{
	int fd = connect_ctl();

	CU_ASSERT_FATAL(fd >= 0);
	return fd;
}

/* One turn of dfwd's loop. */
static void pump(struct control *c, struct served *s, int ms)
{
	struct pollfd p[CONTROL_NFDS];

	control_pollfds(c, p);
	poll(p, CONTROL_NFDS, ms);
	control_serve(c, p, answer, s);
}

/* What the client has been sent until the server closed, within ms. */
struct reply {
	char *buf;
	size_t n;
	bool closed;
};

static void take(int fd, struct reply *r)
{
	char chunk[65536];
	ssize_t k;

	while ((k = read(fd, chunk, sizeof(chunk))) > 0) {
		r->buf = xrealloc(r->buf, r->n + (size_t)k + 1);
		memcpy(r->buf + r->n, chunk, (size_t)k);
		r->n += (size_t)k;
		r->buf[r->n] = '\0';
	}
	if (k == 0 || (k < 0 && errno != EAGAIN))
		r->closed = true;
}

static void serve_until_closed(struct control *c, struct served *s, int fd, struct reply *r,
			       int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000;

	while (!r->closed && now_ns() < end) {
		pump(c, s, 10);
		take(fd, r);
	}
}

/* Sends bytes (shutting its side down if shut), returns the whole answer. */
static char *exchange(struct control *c, struct served *s, const char *bytes, size_t len,
		      bool shut)
{
	struct reply r = { 0 };
	int fd = client();

	CU_ASSERT_EQUAL(write(fd, bytes, len), (ssize_t)len);
	if (shut)
		shutdown(fd, SHUT_WR);
	serve_until_closed(c, s, fd, &r, 3000);
	CU_ASSERT(r.closed);
	close(fd);
	return r.buf ? r.buf : xstrdup("");
}

static void test_whole_requests(void)
{
	struct control *c = open_ctl();
	struct served s = { 0 };
	char *a;

	a = exchange(c, &s, "status\n", 7, false);
	CU_ASSERT_STRING_EQUAL(a, "ok\nstatus\n");
	free(a);
	/* A CRLF client, and a last line without its newline. */
	a = exchange(c, &s, "rules web-1\r\n", 13, false);
	CU_ASSERT_STRING_EQUAL(s.last, "rules web-1");
	free(a);
	a = exchange(c, &s, "threats", 7, true);
	CU_ASSERT_STRING_EQUAL(a, "ok\nthreats\n");
	free(a);
	/* Input after the line is not a second request, and the answer to
	 * the first still arrives whole. */
	a = exchange(c, &s, "status\nstatus\nbogus\n", 20, true);
	CU_ASSERT_STRING_EQUAL(a, "ok\nstatus\n");
	free(a);
	CU_ASSERT_EQUAL(s.calls, 4);
	control_close(c);
}

static void test_bad_requests(void)
{
	struct control *c = open_ctl();
	struct served s = { 0 };
	char big[CONTROL_REQ_MAX + 2], *a;

	a = exchange(c, &s, "sta\001tus\n", 8, true);
	CU_ASSERT_STRING_EQUAL(a, "error: request contains control characters\n");
	free(a);
	a = exchange(c, &s, "sta\0tus\n", 8, true);
	CU_ASSERT_STRING_EQUAL(a, "error: request contains control characters\n");
	free(a);
	memset(big, 'a', sizeof(big));
	a = exchange(c, &s, big, sizeof(big), true);
	CU_ASSERT_STRING_EQUAL(a, "error: request too long (at most 511 bytes)\n");
	free(a);
	CU_ASSERT_EQUAL(s.calls, 0);
	/* The longest request there may be. */
	big[CONTROL_REQ_MAX] = '\n';
	a = exchange(c, &s, big, CONTROL_REQ_MAX + 1, true);
	CU_ASSERT_EQUAL(s.calls, 1);
	CU_ASSERT_EQUAL(strlen(s.last), CONTROL_REQ_MAX);
	free(a);
	control_close(c);
}

/* A line that never ends is refused, not run in part: "rules web" of
 * "rules web-10" would answer for another VM. */
static void test_unfinished_request(void)
{
	struct control *c = open_ctl();
	struct served s = { 0 };
	struct reply r = { 0 };
	int fd = client();

	CU_ASSERT_EQUAL(write(fd, "rules web", 9), 9);
	serve_until_closed(c, &s, fd, &r, CONTROL_READ_MS + 2000);
	CU_ASSERT(r.closed);
	CU_ASSERT_EQUAL(s.calls, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r.buf);
	CU_ASSERT_STRING_EQUAL(r.buf, "error: no whole request line within 1000 ms; nothing done\n");
	free(r.buf);
	close(fd);
	control_close(c);
}

/* A client that stops reading a long answer (a pager) holds its slot; the
 * next client is answered meanwhile, and the first still gets every byte. */
static void test_stalled_reader(void)
{
	struct control *c = open_ctl();
	struct served s = { .big = 8 << 20 };
	struct reply r1 = { 0 };
	int fd1 = client();
	char *a;

	CU_ASSERT_EQUAL(write(fd1, "groups\n", 7), 7);
	for (int i = 0; i < 20; i++)
		pump(c, &s, 5);
	CU_ASSERT_EQUAL(s.calls, 1);
	s.big = 0;
	a = exchange(c, &s, "status\n", 7, true);
	CU_ASSERT_STRING_EQUAL(a, "ok\nstatus\n");
	free(a);
	serve_until_closed(c, &s, fd1, &r1, 10000);
	CU_ASSERT(r1.closed);
	CU_ASSERT_EQUAL(r1.n, strlen("ok\ngroups\n") + (8 << 20));
	free(r1.buf);
	close(fd1);
	control_close(c);
}

/* The socket is 0600; should it be opened up, the peer's credentials
 * still keep everyone but root out. */
static void test_root_only(void)
{
	struct control *c;
	struct served s = { 0 };
	pid_t pid;
	int status = -1;

	if (geteuid() != 0)
		return; /* the tests run as root under make check */
	/* The child is forked before the socket exists: it holds none of the
	 * parent's memory, and retries until the socket is there and open. */
	snprintf(sock_path, sizeof(sock_path), "%s/ctl.sock", unit_tmpdir());
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		struct reply r = { 0 };
		uint64_t end = now_ns() + 3000000000ull;
		bool ok;
		int fd = -1;

		if (setgid(65534) || setuid(65534))
			_exit(2);
		while ((fd = connect_ctl()) < 0 && now_ns() < end)
			usleep(10000);
		if (fd < 0 || write(fd, "status\n", 7) != 7)
			_exit(3);
		while (!r.closed && now_ns() < end)
			take(fd, &r);
		ok = r.buf && !strcmp(r.buf, "error: permission denied (root only)\n");
		free(r.buf);
		close(fd);
		_exit(ok ? 0 : 1);
	}
	c = open_ctl();
	chmod(sock_path, 0666);
	chmod(unit_tmpdir(), 0711); /* mkdtemp made it 0700 */
	while (waitpid(pid, &status, WNOHANG) == 0)
		pump(c, &s, 10);
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CU_ASSERT_EQUAL(s.calls, 0);
	control_close(c);
}

/* Whether the tests run under valgrind (its preloaded library). */
static bool under_valgrind(void)
{
	const char *p = getenv("LD_PRELOAD");

	return p && strstr(p, "vgpreload");
}

/* Out of file descriptors, accept fails while the client keeps waiting:
 * dfwd logs it once and pauses accepting, rather than spin and log on
 * every turn; the client is answered once a descriptor is free again. */
static void test_accept_fails(void)
{
	struct served s = { 0 };
	struct reply r = { 0 };
	struct rlimit lim, low;
	struct control *c;
	char *log = NULL, err[256];
	size_t loglen = 0, lines = 0, nfill = 0;
	FILE *logf = open_memstream(&log, &loglen);
	int fd, fill[64];

	CU_ASSERT_PTR_NOT_NULL_FATAL(logf);
	snprintf(sock_path, sizeof(sock_path), "%s/ctl.sock", unit_tmpdir());
	c = control_open(sock_path, logf, err, sizeof(err));
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	fd = client();
	CU_ASSERT_EQUAL(write(fd, "status\n", 7), 7);
	/* Every descriptor below the limit taken (poll needs the limit above
	 * its count of pollfds). */
	CU_ASSERT_FATAL(getrlimit(RLIMIT_NOFILE, &lim) == 0);
	low = (struct rlimit){ ARRAY_SIZE(fill), lim.rlim_max };
	CU_ASSERT_FATAL(setrlimit(RLIMIT_NOFILE, &low) == 0);
	while (nfill < ARRAY_SIZE(fill) && (fill[nfill] = dup(0)) >= 0)
		nfill++;
	for (int i = 0; i < 50; i++)
		pump(c, &s, 10);
	while (nfill)
		close(fill[--nfill]);
	CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_NOFILE, &lim), 0);
	fflush(logf);
	for (size_t i = 0; i < loglen; i++)
		lines += log[i] == '\n';
	CU_ASSERT(lines >= 1 && lines <= 2);
	CU_ASSERT_EQUAL(s.calls, 0);
	serve_until_closed(c, &s, fd, &r, 3000);
	/* Valgrind checks an accepted descriptor against the limit itself,
	 * and closes one above it: its client was dropped, not kept waiting. */
	if (!under_valgrind()) {
		CU_ASSERT_PTR_NOT_NULL(r.buf);
		CU_ASSERT(r.buf && !strcmp(r.buf, "ok\nstatus\n"));
	}
	free(r.buf);
	close(fd);
	control_close(c);
	fclose(logf);
	free(log);
}

/* The socket's path is taken over only from a dead dfwd: a live one keeps
 * it, and a file that is not a socket is never removed. */
static void test_path_taken(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct control *c = open_ctl(), *c2;
	char err[256], buf[16] = "";
	struct stat st1, st2;
	FILE *f;
	int fd;

	CU_ASSERT_EQUAL_FATAL(stat(sock_path, &st1), 0);
	c2 = control_open(sock_path, stderr, err, sizeof(err));
	CU_ASSERT_PTR_NULL(c2);
	control_close(c2);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "another dfwd answers there"));
	CU_ASSERT_EQUAL(control_in_use(sock_path, err, sizeof(err)), 1);
	CU_ASSERT_EQUAL_FATAL(stat(sock_path, &st2), 0);
	CU_ASSERT_EQUAL(st1.st_ino, st2.st_ino);
	control_close(c);
	/* A stale socket file: nobody listens. */
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CU_ASSERT_EQUAL_FATAL(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	CU_ASSERT_EQUAL(control_in_use(sock_path, err, sizeof(err)), 0);
	c = control_open(sock_path, stderr, err, sizeof(err));
	CU_ASSERT_PTR_NOT_NULL(c);
	control_close(c);
	/* A regular file. */
	f = fopen(sock_path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs("precious\n", f);
	fclose(f);
	c = control_open(sock_path, stderr, err, sizeof(err));
	CU_ASSERT_PTR_NULL(c);
	control_close(c);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "is not a socket"));
	f = fopen(sock_path, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_PTR_NOT_NULL(fgets(buf, sizeof(buf), f));
	fclose(f);
	CU_ASSERT_STRING_EQUAL(buf, "precious\n");
	unlink(sock_path);
}

static void test_answer_status(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	const char *msg;
	uint64_t n;

	control_error(f, CONTROL_DATAPLANE, "the kernel said %s", "no");
	fclose(f);
	CU_ASSERT_STRING_EQUAL(buf, "error (dataplane): the kernel said no\n");
	CU_ASSERT_EQUAL(control_answer_status(buf, &msg), CONTROL_DATAPLANE);
	CU_ASSERT_STRING_EQUAL(msg, "the kernel said no\n");
	CU_ASSERT_EQUAL(control_answer_status("error (store): gone\n", &msg), CONTROL_STORE);
	CU_ASSERT_EQUAL(control_answer_status("error: bad\n", &msg), CONTROL_INPUT);
	CU_ASSERT_STRING_EQUAL(msg, "bad\n");
	CU_ASSERT_EQUAL(control_answer_status("ok\n", &msg), CONTROL_OK);
	CU_ASSERT_EQUAL(control_answer_status("garbage\n", &msg), CONTROL_INPUT);
	/* With the body's length, which a client checks. */
	CU_ASSERT_EQUAL(control_answer_status("ok 1234\n", &msg), CONTROL_OK);
	CU_ASSERT_EQUAL(control_answer_len("ok 1234\n", &n), 1);
	CU_ASSERT_EQUAL(n, 1234);
	CU_ASSERT_EQUAL(control_answer_len("ok 0", &n), 1);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_EQUAL(control_answer_len("ok\n", &n), 0);
	CU_ASSERT_EQUAL(control_answer_len("ok \n", &n), 0);
	CU_ASSERT_EQUAL(control_answer_len("ok 12x\n", &n), 0);
	CU_ASSERT_EQUAL(control_answer_len("ok 12\nmore", &n), 0);
	CU_ASSERT_EQUAL(control_answer_len("ok 99999999999999999999999\n", &n), 0);
	CU_ASSERT_EQUAL(control_answer_status("ok x\n", &msg), CONTROL_INPUT);
	free(buf);
}

void register_control_tests(void)
{
	static const struct unit_test tests[] = {
		{ "whole requests, CRLF, pipelined input", test_whole_requests },
		{ "control characters, NUL, too long, the longest", test_bad_requests },
		{ "an unfinished line is refused after its deadline", test_unfinished_request },
		{ "a stalled reader does not stall the next client", test_stalled_reader },
		{ "root only, by the peer's credentials", test_root_only },
		{ "accept out of descriptors: logged once, no spin", test_accept_fails },
		{ "a live dfwd's socket and other files are not taken over", test_path_taken },
		{ "answer statuses", test_answer_status },
	};

	unit_suite("control", tests, ARRAY_SIZE(tests));
}
