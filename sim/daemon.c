/* The lab's processes: dfwctl (to load the policy into the lab's store),
 * and on each host, inside its namespace, one dfwd and one dfw-scan (the
 * host's anti-malware appliance); and the `daemon` and `ctl` subcommands
 * built on them.  A process is only ever signalled after its pidfile's pid
 * is checked to still be a dfwd or dfw-scan of this lab. */
#include "sim/lab.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 3000
#define LOG_TAIL_LINES 15
/* dfwd's flow log, HOST.flows.jsonl in the lab dir, and the environment
 * variable that sets its --flow-log-rate (tests flood with a small one). */
#define LAB_FLOW_LOG ".flows.jsonl"
#define LAB_FLOW_LOG_RATE_ENV "DFW_LAB_FLOW_LOG_RATE"
/* Set (to anything but empty): dfwd runs with --shared-tables, so that a
 * test can change its tables behind its back. */
#define LAB_SHARED_TABLES_ENV "DFW_LAB_SHARED_TABLES"

static char *prog_path(const char *prog)
{
	return xasprintf("%s/%s", lab_bindir(), prog);
}

static int need_prog(const char *path, char *err, size_t errlen)
{
	if (access(path, X_OK) < 0)
		return errf(err, errlen,
			    "%s: %s (dfw-lab runs dfwd, dfw-scan and dfwctl from its own directory; build them, or use --no-daemon)",
			    path, strerror(errno));
	return 0;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

int lab_dfwctl(const char *labname, char *const *args, size_t nargs, char *out, size_t outlen,
	       char *err, size_t errlen)
{
	char *dfwctl = prog_path("dfwctl"), *store = lab_store_uri(labname);
	char **argv = xcalloc(nargs + 4, sizeof(*argv));
	size_t len = 0;
	int pipefd[2] = { -1, -1 }, st, ret = -1;
	pid_t pid;
	ssize_t r;

	argv[0] = dfwctl;
	argv[1] = (char *)"--store";
	argv[2] = store;
	memcpy(argv + 3, args, nargs * sizeof(*argv));
	out[0] = '\0';
	if (need_prog(dfwctl, err, errlen) < 0)
		goto out;
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		errf(err, errlen, "pipe: %s", strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		errf(err, errlen, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		char nserr[256];

		dup2(pipefd[1], STDOUT_FILENO);
		dup2(pipefd[1], STDERR_FILENO);
		if (lab_store_ns_enter(labname, nserr, sizeof(nserr)) < 0) {
			dprintf(STDERR_FILENO, "%s\n", nserr);
			_exit(126);
		}
		execv(dfwctl, argv);
		dprintf(STDERR_FILENO, "cannot run %s: %s\n", dfwctl, strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	pipefd[1] = -1;
	/* Keep the start and, past the buffer, drop the middle: errors come
	 * first in dfwctl's output. */
	while ((r = read(pipefd[0], out + len, outlen - 1 - len)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		len += (size_t)r;
		if (len == outlen - 1) {
			char sink[4096];

			while (read(pipefd[0], sink, sizeof(sink)) > 0)
				;
			break;
		}
	}
	out[len] = '\0';
	while (len && out[len - 1] == '\n')
		out[--len] = '\0';
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			errf(err, errlen, "waitpid: %s", strerror(errno));
			goto out;
		}
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		errf(err, errlen, "`dfwctl --store %s %s%s` failed (%s %d):\n%s", store, args[0],
		     nargs > 1 ? " ..." : "", WIFEXITED(st) ? "exit" : "signal",
		     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), out);
		goto out;
	}
	ret = 0;
out:
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	free(argv);
	free(dfwctl);
	free(store);
	return ret;
}

int daemon_apply(const char *labname, const char *config, char *err, size_t errlen)
{
	char *args[] = { (char *)"apply", (char *)config };
	char out[LAB_ERRLEN - 256];

	return lab_dfwctl(labname, args, ARRAY_SIZE(args), out, sizeof(out), err, errlen);
}

/* The last lines of a log file, for failure messages. */
static void log_tail(const char *path, char *buf, size_t len)
{
	char data[LAB_ERRLEN / 2];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	off_t size;
	ssize_t n;
	const char *p;
	int lines = 0;

	snprintf(buf, len, "(%s is empty)", path);
	if (fd < 0) {
		snprintf(buf, len, "(no log: %s: %s)", path, strerror(errno));
		return;
	}
	size = lseek(fd, 0, SEEK_END);
	if (size > (off_t)sizeof(data) - 1)
		lseek(fd, size - (off_t)sizeof(data) + 1, SEEK_SET);
	else
		lseek(fd, 0, SEEK_SET);
	n = read(fd, data, sizeof(data) - 1);
	close(fd);
	if (n <= 0)
		return;
	data[n] = '\0';
	while (n && data[n - 1] == '\n')
		data[--n] = '\0';
	for (p = data + n; p > data; p--)
		if (p[-1] == '\n' && ++lines == LOG_TAIL_LINES)
			break;
	snprintf(buf, len, "%s", p);
}

static bool sock_ready(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/* The lab's programs on each host: each runs in its host's namespace,
 * leads a session of its own, writes its own pidfile, and is ready when
 * its socket accepts connections.  Files are HOST<suffix> in the lab dir. */
struct hostprog {
	const char *prog; /* beside dfw-lab */
	const char *pid, *log, *sock;
};

static const struct hostprog hostprogs[] = {
	[LAB_DFWD] = { "dfwd", ".pid", ".log", ".sock" },
	[LAB_SCANNER] = { "dfw-scan", ".scan.pid", ".scan.log", ".events.sock" },
	/* Not a host's: the lab's one etcd, in the fabric namespace, with
	 * files LAB_ETCD_FILES.pid/.log. */
	[LAB_ETCD] = { "etcd", ".pid", ".log", NULL },
};

const char *daemon_name(enum lab_proc which)
{
	return hostprogs[which].prog;
}

/* A host's files in the lab dir are HOST<suffix>; the lab's own have fixed
 * names.  Two hosts whose files share a name ("hv1.scan": hv1.scan.pid is
 * hv1's scanner's pidfile) would stop, log and answer for each other. */
static const char *const lab_files[] = {
	"store.db", "store.db-wal", "store.db-shm", "config.ini", "sandbox", LAB_SIGNATURES,
	LAB_STORE_URI, LAB_PLACEMENT, LAB_ETCD_DATA,
};

struct lab_file {
	char *name;
	long host; /* -1: the lab's */
};

static int lab_file_cmp(const void *a, const void *b)
{
	return strcmp(((const struct lab_file *)a)->name, ((const struct lab_file *)b)->name);
}

int daemon_files_check(char *const *hosts, size_t nhosts, char *err, size_t errlen)
{
	const struct hostprog *dfwd = &hostprogs[LAB_DFWD], *scan = &hostprogs[LAB_SCANNER],
			      *etcd = &hostprogs[LAB_ETCD];
	const char *const suffixes[] = { dfwd->pid, dfwd->log, dfwd->sock, scan->pid,
					 scan->log, scan->sock, LAB_AUDIT_LOG, LAB_FLOW_LOG };
	size_t nsuf = ARRAY_SIZE(suffixes), n = 0;
	struct lab_file *f = xcalloc(nhosts * nsuf + ARRAY_SIZE(lab_files) + 2, sizeof(*f));
	int ret = 0;

	for (size_t i = 0; i < ARRAY_SIZE(lab_files); i++)
		f[n++] = (struct lab_file){ xstrdup(lab_files[i]), -1 };
	f[n++] = (struct lab_file){ xasprintf("%s%s", LAB_ETCD_FILES, etcd->pid), -1 };
	f[n++] = (struct lab_file){ xasprintf("%s%s", LAB_ETCD_FILES, etcd->log), -1 };
	for (size_t h = 0; h < nhosts; h++)
		for (size_t k = 0; k < nsuf; k++)
			f[n++] = (struct lab_file){ xasprintf("%s%s", hosts[h], suffixes[k]),
						    (long)h };
	qsort(f, n, sizeof(*f), lab_file_cmp);
	for (size_t i = 1; i < n && !ret; i++) {
		const struct lab_file *a = &f[i - 1], *b = &f[i];

		if (strcmp(a->name, b->name))
			continue;
		if (a->host < 0 || b->host < 0)
			ret = errf(err, errlen, "host name '%s': its file %s would be the lab's own; choose another name",
				   hosts[a->host < 0 ? b->host : a->host], a->name);
		else
			ret = errf(err, errlen, "host names '%s' and '%s': both would use the file %s in the lab's directory; rename one",
				   hosts[a->host < b->host ? a->host : b->host],
				   hosts[a->host < b->host ? b->host : a->host], a->name);
	}
	for (size_t i = 0; i < n; i++)
		free(f[i].name);
	free(f);
	return ret;
}

/* The pid in pidfile when it is a live process of this lab running
 * hostprogs[which] (any of them when which < 0), else 0. With pidfd, also
 * a pidfd of that process (-1 with 0): it is opened before the process is
 * checked, and the process is still alive after the check, so signals
 * through it cannot reach another process that took over the number. */
static pid_t live_pid(const char *labname, const char *pidfile, int which, int *pidfd)
{
	char *own = NULL;
	char *store = lab_store_uri(labname), *data = lab_path(labname, LAB_ETCD_DATA);
	char buf[64], exe[PATH_MAX], cmdline[8192], *base;
	char *exelink = NULL, *cmdpath = NULL;
	const char *marker = NULL;
	uint64_t v;
	pid_t pid = 0;
	ssize_t n;
	FILE *f;
	int fd, pfd = -1;

	if (!pidfile)
		pidfile = own = lab_host_path(labname, LAB_ETCD_FILES, hostprogs[LAB_ETCD].pid);
	f = fopen(pidfile, "re");
	if (!f)
		goto out;
	if (!fgets(buf, sizeof(buf), f)) {
		fclose(f);
		goto out;
	}
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	if (parse_u64(buf, INT_MAX, &v) < 0 || v < 2)
		goto out;
	pfd = pidfd_open((pid_t)v, 0);
	if (pfd < 0)
		goto out;
	exelink = xasprintf("/proc/%d/exe", (int)v);
	n = readlink(exelink, exe, sizeof(exe) - 1);
	if (n <= 0)
		goto out;
	exe[n] = '\0';
	if (n > 10 && !strcmp(exe + n - 10, " (deleted)"))
		exe[n - 10] = '\0'; /* rebuilt while running */
	base = strrchr(exe, '/');
	base = base ? base + 1 : exe;
	for (size_t k = 0; k < ARRAY_SIZE(hostprogs); k++)
		if ((which < 0 || (size_t)which == k) && !strcmp(base, hostprogs[k].prog))
			marker = k == LAB_ETCD ? data : store;
	if (!marker)
		goto out;
	/* ...and one of this lab: its command line names the lab's store (or,
	 * for etcd, the lab's data dir). */
	cmdpath = xasprintf("/proc/%d/cmdline", (int)v);
	fd = open(cmdpath, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		goto out;
	n = read(fd, cmdline, sizeof(cmdline) - 1);
	close(fd);
	if (n <= 0)
		goto out;
	cmdline[n] = '\0';
	for (ssize_t off = 0; off < n; off += (ssize_t)strlen(cmdline + off) + 1) {
		if (!strcmp(cmdline + off, marker)) {
			/* Alive after the reads: what they showed was this process. */
			if (pidfd_send_signal(pfd, 0, NULL, 0) == 0)
				pid = (pid_t)v;
			break;
		}
	}
out:
	if (pid && pidfd) {
		*pidfd = pfd;
	} else {
		if (pidfd)
			*pidfd = -1;
		if (pfd >= 0)
			close(pfd);
	}
	free(cmdpath);
	free(exelink);
	free(store);
	free(data);
	free(own);
	return pid;
}

static pid_t live_daemon(const char *labname, enum lab_proc which, const char *host)
{
	char *pidfile = lab_host_path(labname, host, hostprogs[which].pid);
	pid_t pid = live_pid(labname, pidfile, (int)which, NULL);

	free(pidfile);
	return pid;
}

/* Whether the process of pidfd has exited, waiting at most ms; our own
 * child (a rollback inside `up`) is reaped. */
static bool wait_gone(pid_t pid, int pidfd, unsigned ms)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	int st;

	if (poll(&p, 1, (int)ms) == 0)
		return false;
	waitpid(pid, &st, WNOHANG);
	return true;
}

/* Signals pid and waits for it to go, with SIGKILL after STOP_TIMEOUT_MS.
 * pidfd is the process's (from live_pid), or -1 for our own child, which
 * cannot have been reaped yet. what and host name it in messages. */
static int stop_pid(pid_t pid, int pidfd, int sig, const char *what, const char *host,
		    char *err, size_t errlen)
{
	int own = -1, ret = 0;

	if (pidfd < 0) {
		pidfd = own = pidfd_open(pid, 0);
		if (pidfd < 0)
			return errno == ESRCH ? 0 : errf(err, errlen, "cannot open process %d (%s of host %s): %s",
						    (int)pid, what, host, strerror(errno));
	}
	for (int round = 0; round < 2; round++) {
		/* Each leads its own session (setsid below): its process group
		 * is everything it started, which goes with it. While the
		 * leader lives (the pidfd says so), the group's number is its. */
		if (pidfd_send_signal(pidfd, 0, NULL, 0) == 0) {
			if (getpgid(pid) == pid ? kill(-pid, sig) : pidfd_send_signal(pidfd, sig, NULL, 0))
				if (errno != ESRCH) {
					ret = errf(err, errlen, "cannot signal %s of host %s (pid %d): %s",
						   what, host, (int)pid, strerror(errno));
					break;
				}
		}
		if (wait_gone(pid, pidfd, STOP_TIMEOUT_MS))
			break;
		if (round == 1)
			ret = errf(err, errlen, "%s of host %s (pid %d) does not exit, even after SIGKILL",
				   what, host, (int)pid);
		sig = SIGKILL;
	}
	if (own >= 0)
		close(own);
	return ret;
}

int daemon_stop(const char *labname, enum lab_proc which, const char *host, int sig,
		bool *stopped, char *err, size_t errlen)
{
	char *pidfile = lab_host_path(labname, host, hostprogs[which].pid);
	int pidfd, ret = 0;
	pid_t pid = live_pid(labname, pidfile, (int)which, &pidfd);

	*stopped = false;
	/* Without a live process of ours under that pid, the pidfile is stale. */
	if (pid) {
		ret = stop_pid(pid, pidfd, sig, hostprogs[which].prog, host, err, errlen);
		*stopped = ret == 0;
		close(pidfd);
	}
	if (ret == 0)
		unlink(pidfile);
	free(pidfile);
	return ret;
}

/* Every pidfile of the lab, whatever it names: only a live dfwd or
 * dfw-scan of this lab is signalled, and any other pidfile is stale. */
int daemon_stop_all(const char *labname, char *err, size_t errlen)
{
	char *dir = lab_path(labname, NULL);
	struct strv files = { 0 };
	struct dirent *de;
	DIR *d = opendir(dir);
	int ret = 0;

	if (!d) {
		if (errno != ENOENT)
			ret = errf(err, errlen, "cannot read %s: %s", dir, strerror(errno));
		goto out;
	}
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);

		if (n > 4 && !strcmp(de->d_name + n - 4, ".pid"))
			strv_push(&files, de->d_name);
	}
	closedir(d);
	for (size_t i = 0; i < files.n; i++) {
		char *path = xasprintf("%s/%s", dir, files.v[i]);
		int pidfd;
		pid_t pid = live_pid(labname, path, -1, &pidfd);

		files.v[i][strlen(files.v[i]) - 4] = '\0';
		if (pid && stop_pid(pid, pidfd, SIGTERM, "the process", files.v[i], err, errlen) < 0)
			ret = -1;
		else
			unlink(path);
		if (pid)
			close(pidfd);
		free(path);
	}
out:
	strv_free(&files);
	free(dir);
	return ret;
}

/* The command line of hostprogs[which] for host. */
static void prog_args(enum lab_proc which, const char *prog, const struct lab *lab,
		      const char *host, struct strv *a)
{
	const char *labname = lab->name;
	char *store = lab_store_uri(labname);
	char *sock = lab_host_path(labname, host, hostprogs[which].sock);
	char *log = lab_host_path(labname, host, hostprogs[which].log);
	char *flows = lab_host_path(labname, host, LAB_FLOW_LOG);
	const char *rate = getenv(LAB_FLOW_LOG_RATE_ENV);

	strv_push(a, prog);
	strv_push(a, "--store");
	strv_push(a, store);
	strv_push(a, "--host");
	strv_push(a, host);
	if (which == LAB_DFWD) {
		strv_push(a, "--socket");
		strv_push(a, sock);
		strv_push(a, "--log");
		strv_push(a, log);
		strv_push(a, "--status-ttl");
		strv_push(a, LAB_STATUS_TTL);
		/* The lab always keeps flow logs; dfwd checks the rate. */
		strv_push(a, "--flow-log");
		strv_push(a, flows);
		if (rate && *rate) {
			strv_push(a, "--flow-log-rate");
			strv_push(a, rate);
		}
		if (lab->nhosts > 1) {
			strv_push(a, "--uplink");
			strv_push(a, LAB_UPLINK);
		}
		if (getenv(LAB_SHARED_TABLES_ENV) && *getenv(LAB_SHARED_TABLES_ENV))
			strv_push(a, "--shared-tables");
	} else {
		char *sandbox = lab_sandbox_path(labname, host, NULL);
		char *sigs = lab_path(labname, LAB_SIGNATURES);
		char *audit = lab_host_path(labname, host, LAB_AUDIT_LOG);

		strv_push(a, "--sandbox");
		strv_push(a, sandbox);
		if (access(sigs, F_OK) == 0) {
			strv_push(a, "--signatures");
			strv_push(a, sigs);
		}
		strv_push(a, "--audit");
		strv_push(a, audit);
		strv_push(a, "--events");
		strv_push(a, sock);
		free(sandbox);
		free(sigs);
		free(audit);
	}
	free(store);
	free(sock);
	free(log);
	free(flows);
}

/* In the child: becomes the host's program.  Never returns. */
static void exec_prog(enum lab_proc which, int nsfd, const char *labname, const char *host,
		      char **argv)
{
	char *log = lab_host_path(labname, host, hostprogs[which].log);
	char *pidfile = lab_host_path(labname, host, hostprogs[which].pid);
	char *tmp = xasprintf("%s.tmp", pidfile);
	sigset_t none;
	int fd;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Its own session: a ^C to the terminal that ran `up` is not for it. */
	setsid();
	if (setns(nsfd, CLONE_NEWNET) < 0)
		_exit(126);
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
	}
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		dup2(fd, STDIN_FILENO);
	/* Written by the child itself, so there is no moment in which a
	 * daemon runs that `down` cannot find. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		dprintf(fd, "%d\n", (int)getpid());
		close(fd);
		rename(tmp, pidfile);
	}
	close_range(3, ~0U, 0);
	execv(argv[0], argv);
	dprintf(STDERR_FILENO, "dfw-lab: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

int daemon_start(struct lab *lab, enum lab_proc which, const size_t *hosts, size_t n,
		 char *err, size_t errlen)
{
	const struct hostprog *k = &hostprogs[which];
	char *path = prog_path(k->prog);
	size_t count = hosts ? n : lab->nhosts;
	pid_t *pids = xcalloc(count ? count : 1, sizeof(*pids));
	bool *ready = xcalloc(count ? count : 1, sizeof(*ready));
	size_t nready = 0, started = 0;
	uint64_t deadline;
	int ret = -1;

	if (need_prog(path, err, errlen) < 0)
		goto out;
	for (size_t j = 0; j < count; j++) {
		size_t h = hosts ? hosts[j] : j;
		char *sock = lab_host_path(lab->name, lab->hosts[h], k->sock);
		size_t slen = strlen(sock);
		pid_t old = live_daemon(lab->name, which, lab->hosts[h]);
		struct strv args = { 0 };
		char **argv;
		int fd;

		free(sock);
		if (slen >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			errf(err, errlen, "host name '%s' is too long for a socket path", lab->hosts[h]);
			goto out;
		}
		if (old) {
			errf(err, errlen, "%s of host %s is already running (pid %d)", k->prog,
			     lab->hosts[h], (int)old);
			goto out;
		}
		fd = lab_host_fd(lab, h, err, errlen);
		if (fd < 0)
			goto out;
		prog_args(which, path, lab, lab->hosts[h], &args);
		argv = xcalloc(args.n + 1, sizeof(*argv)); /* NULL-terminated for execv */
		memcpy(argv, args.v, args.n * sizeof(*argv));
		pids[j] = fork();
		if (pids[j] == 0)
			exec_prog(which, fd, lab->name, lab->hosts[h], argv);
		free(argv);
		strv_free(&args);
		if (pids[j] < 0) {
			errf(err, errlen, "fork: %s", strerror(errno));
			goto out;
		}
		started++;
	}
	/* All start together; wait for every socket to accept connections. */
	deadline = now_ns() + START_TIMEOUT_MS * 1000000ull;
	while (nready < count) {
		bool late = now_ns() >= deadline;

		for (size_t j = 0; j < count; j++) {
			size_t h = hosts ? hosts[j] : j;
			char *sock, *log, tail[LAB_ERRLEN / 2];
			int st;

			if (ready[j])
				continue;
			sock = lab_host_path(lab->name, lab->hosts[h], k->sock);
			log = lab_host_path(lab->name, lab->hosts[h], k->log);
			if (sock_ready(sock)) {
				ready[j] = true;
				nready++;
			} else if (waitpid(pids[j], &st, WNOHANG) == pids[j]) {
				log_tail(log, tail, sizeof(tail));
				errf(err, errlen, "%s of host %s exited (%s %d) before opening %s; last lines of %s:\n%s",
				     k->prog, lab->hosts[h], WIFEXITED(st) ? "exit" : "signal",
				     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), sock, log, tail);
				pids[j] = 0;
			} else if (late || lab_interrupted) {
				log_tail(log, tail, sizeof(tail));
				errf(err, errlen, "%s of host %s %s before %s accepted connections; last lines of %s:\n%s",
				     k->prog, lab->hosts[h],
				     lab_interrupted ? "interrupted" : "timed out (10 s)", sock, log, tail);
			}
			free(sock);
			free(log);
			if (!ready[j] && (pids[j] == 0 || late || lab_interrupted))
				goto out;
		}
		if (nready < count)
			sleep_ms(20);
	}
	ret = 0;
out:
	/* On failure stop what this call started: a process that never got
	 * ready is of no use, and the caller's rollback needs none running. */
	for (size_t j = 0; ret < 0 && j < started; j++) {
		size_t h = hosts ? hosts[j] : j;
		char *pidfile = lab_host_path(lab->name, lab->hosts[h], k->pid);

		/* Our own children: no pidfile check needed (nor yet possible). */
		if (pids[j] > 0 && stop_pid(pids[j], -1, SIGTERM, k->prog, lab->hosts[h], NULL, 0) == 0)
			unlink(pidfile);
		free(pidfile);
	}
	free(pids);
	free(ready);
	free(path);
	return ret;
}

/* One HTTP GET of etcd's /health on 127.0.0.1 of the calling thread's
 * namespace: true when it answers healthy. */
static bool etcd_healthy(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(LAB_ETCD_PORT),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	static const char req[] = "GET /health HTTP/1.0\r\n\r\n";
	struct timeval tv = { 1, 0 };
	char buf[1024];
	size_t len = 0;
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = false;

	if (fd < 0)
		return false;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1) {
		while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
			len += (size_t)n;
		buf[len] = '\0';
		ok = strstr(buf, "\"health\":\"true\"") != NULL;
	}
	close(fd);
	return ok;
}

int etcd_start(const struct lab *lab, char *err, size_t errlen)
{
	char *ns = lab_fabric_ns(lab->name), *data = lab_path(lab->name, LAB_ETCD_DATA);
	char *log = lab_host_path(lab->name, LAB_ETCD_FILES, hostprogs[LAB_ETCD].log);
	char *listen = xasprintf("http://" LAB_UNDERLAY_GW_ADDR ":%d,http://127.0.0.1:%d",
				 LAB_ETCD_PORT, LAB_ETCD_PORT);
	char *advertise = xasprintf("http://" LAB_UNDERLAY_GW_ADDR ":%d", LAB_ETCD_PORT);
	char *peer = xasprintf("http://127.0.0.1:%d", LAB_ETCD_PORT + 1);
	char *cluster = xasprintf("%s=%s", lab->name, peer);
	char tail[LAB_ERRLEN / 2];
	/* Restarted on its data dir, it keeps its keys and revisions. */
	char *argv[] = { (char *)LAB_ETCD_BIN, (char *)"--name", lab->name, (char *)"--data-dir", data,
			 (char *)"--listen-client-urls", listen, (char *)"--advertise-client-urls",
			 advertise, (char *)"--listen-peer-urls", peer,
			 (char *)"--initial-advertise-peer-urls", peer, (char *)"--initial-cluster",
			 cluster, (char *)"--log-level", (char *)"warn", NULL };
	int fd = netns_open(ns), ret = -1, st;
	uint64_t deadline = now_ns() + START_TIMEOUT_MS * 1000000ull;
	pid_t pid, old = live_pid(lab->name, NULL, LAB_ETCD, NULL);

	if (old) {
		errf(err, errlen, "etcd of lab %s is already running (pid %d)", lab->name, (int)old);
		goto out;
	}
	if (access(LAB_ETCD_BIN, X_OK) < 0) {
		errf(err, errlen, "%s: %s (install Debian's etcd-server)", LAB_ETCD_BIN, strerror(errno));
		goto out;
	}
	if (fd < 0) {
		errf(err, errlen, "%s: %s", ns, strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		errf(err, errlen, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0)
		exec_prog(LAB_ETCD, fd, lab->name, LAB_ETCD_FILES, argv);
	for (;;) {
		bool up = false, exited;

		if (netns_enter(fd, err, errlen) < 0) {
			stop_pid(pid, -1, SIGTERM, "etcd", "fabric", NULL, 0);
			goto out;
		}
		up = etcd_healthy();
		netns_leave(NULL, 0);
		if (up)
			break;
		exited = waitpid(pid, &st, WNOHANG) == pid; /* reaped: its number is free */
		if (exited || now_ns() >= deadline || lab_interrupted) {
			log_tail(log, tail, sizeof(tail));
			errf(err, errlen, "etcd of lab %s did not answer /health on %s:%d within %d s; last lines of %s:\n%s",
			     lab->name, LAB_UNDERLAY_GW_ADDR, LAB_ETCD_PORT, START_TIMEOUT_MS / 1000, log,
			     tail);
			if (!exited)
				stop_pid(pid, -1, SIGTERM, "etcd", "fabric", NULL, 0);
			goto out;
		}
		sleep_ms(50);
	}
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	free(ns);
	free(data);
	free(log);
	free(listen);
	free(advertise);
	free(peer);
	free(cluster);
	return ret;
}

/* ---- subcommands ---- */

/* dfw-lab ctl [--lab NAME] [--host HOST] -- DFWCTL-ARGS... */
int cmd_ctl(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lab", required_argument, NULL, 'l' },
		{ "host", required_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *labname = LAB_DEFAULT_NAME, *hostname = NULL;
	char err[LAB_ERRLEN], **tail, **args = NULL;
	char *dfwctl = NULL, *store = NULL, *sock = NULL;
	struct lab *lab = NULL;
	int c, ntail, ret;
	long h = 0;

	args_split(&argc, argv, &tail, &ntail);
	/* Without "--", options end at the first word that is dfwctl's. */
	while ((c = getopt_long(argc, argv, tail ? "h" : "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': labname = optarg; break;
		case 'H': hostname = optarg; break;
		case 'h': lab_usage("ctl"); ret = LAB_OK; goto out;
		default: ret = lab_usage("ctl"); goto out;
		}
	}
	if (tail && optind < argc) {
		lab_errorf("ctl: unexpected '%s' before '--'", argv[optind]);
		ret = LAB_EINPUT;
		goto out;
	}
	if (!tail) {
		tail = argv + optind;
		ntail = argc - optind;
	}
	ret = lab_open(labname, &lab, err, sizeof(err));
	if (ret != LAB_OK) {
		lab_errorf("%s", err);
		goto out;
	}
	if (hostname && (h = lab_find_host(lab, hostname, err, sizeof(err))) < 0) {
		lab_errorf("%s", err);
		ret = LAB_EINPUT;
		goto out;
	}
	if (lab->nhosts == 0) {
		lab_errorf("lab %s has no hosts", labname);
		ret = LAB_EINPUT;
		goto out;
	}
	dfwctl = prog_path("dfwctl");
	store = lab_store_uri(labname);
	if (lab_store_ns_enter(labname, err, sizeof(err)) < 0) {
		lab_errorf("ctl: %s", err);
		ret = LAB_EKERNEL;
		goto out;
	}
	sock = lab_host_path(labname, lab->hosts[h], ".sock");
	args = xcalloc((size_t)ntail + 6, sizeof(*args));
	args[0] = dfwctl;
	args[1] = (char *)"--store";
	args[2] = store;
	args[3] = (char *)"--socket";
	args[4] = sock;
	for (int i = 0; i < ntail; i++)
		args[5 + i] = tail[i];
	fflush(NULL);
	execv(dfwctl, args);
	lab_errorf("cannot run %s: %s", dfwctl, strerror(errno));
	ret = LAB_EDAEMON;
out:
	free(args);
	free(dfwctl);
	free(store);
	free(sock);
	lab_free(lab);
	return ret;
}

/* `daemon start|stop|kill --etcd`: the lab's etcd (sig 0: start). */
static int etcd_verb(struct lab *lab, int sig)
{
	char err[LAB_ERRLEN];
	bool stopped;

	if (!lab_store_is_etcd(lab->name)) {
		lab_errorf("daemon: lab %s keeps its store in SQLite, not etcd (see `up --store`)",
			   lab->name);
		return LAB_EINPUT;
	}
	if (!sig) {
		lab_catch_signals();
		if (etcd_start(lab, err, sizeof(err)) < 0) {
			lab_errorf("%s", err);
			return LAB_EDAEMON;
		}
		printf("etcd of lab %s started\n", lab->name);
		return LAB_OK;
	}
	if (daemon_stop(lab->name, LAB_ETCD, LAB_ETCD_FILES, sig, &stopped, err, sizeof(err)) < 0) {
		lab_errorf("%s", err);
		return LAB_EDAEMON;
	}
	printf("etcd of lab %s %s\n", lab->name,
	       !stopped ? "was not running" : sig == SIGKILL ? "killed" : "stopped");
	return LAB_OK;
}

/* dfw-lab daemon stop|kill|start HOST [--scanner] [--lab NAME],
 * dfw-lab daemon stop|kill|start --etcd [--lab NAME] */
int cmd_daemon(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lab", required_argument, NULL, 'l' },
		{ "scanner", no_argument, NULL, 's' },
		{ "etcd", no_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	static const struct { const char *name; int sig; } verbs[] = {
		{ "start", 0 }, { "stop", SIGTERM }, { "kill", SIGKILL },
	};
	const char *labname = LAB_DEFAULT_NAME, *verb, *hostname, *what;
	enum lab_proc which = LAB_DFWD;
	char err[LAB_ERRLEN];
	struct lab *lab = NULL;
	size_t v, h;
	long found;
	bool stopped;
	int c, ret;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': labname = optarg; break;
		case 's': which = LAB_SCANNER; break;
		case 'e': which = LAB_ETCD; break;
		case 'h': lab_usage("daemon"); ret = LAB_OK; goto out;
		default: ret = lab_usage("daemon"); goto out;
		}
	}
	if (argc - optind != (which == LAB_ETCD ? 1 : 2)) {
		ret = lab_usage("daemon");
		goto out;
	}
	verb = argv[optind];
	hostname = which == LAB_ETCD ? NULL : argv[optind + 1];
	for (v = 0; v < ARRAY_SIZE(verbs); v++)
		if (!strcmp(verb, verbs[v].name))
			break;
	if (v == ARRAY_SIZE(verbs)) {
		lab_errorf("daemon: unknown action '%s' (start, stop or kill)", verb);
		ret = LAB_EINPUT;
		goto out;
	}
	ret = lab_open(labname, &lab, err, sizeof(err));
	if (ret != LAB_OK) {
		lab_errorf("%s", err);
		goto out;
	}
	if (which == LAB_ETCD) {
		ret = etcd_verb(lab, verbs[v].sig);
		goto out;
	}
	found = lab_find_host(lab, hostname, err, sizeof(err));
	if (found < 0) {
		lab_errorf("%s", err);
		ret = LAB_EINPUT;
		goto out;
	}
	h = (size_t)found;
	what = daemon_name(which);
	if (verbs[v].sig == 0) {
		pid_t old = live_daemon(labname, which, lab->hosts[h]);

		if (old) {
			lab_errorf("%s of host %s is already running (pid %d); stop it first", what,
				   lab->hosts[h], (int)old);
			ret = LAB_EINPUT;
			goto out;
		}
		lab_catch_signals();
		if (daemon_start(lab, which, &h, 1, err, sizeof(err)) < 0) {
			lab_errorf("%s", err);
			ret = LAB_EDAEMON;
			goto out;
		}
		printf("%s of host %s started\n", what, lab->hosts[h]);
	} else {
		if (daemon_stop(labname, which, lab->hosts[h], verbs[v].sig, &stopped, err,
				sizeof(err)) < 0) {
			lab_errorf("%s", err);
			ret = LAB_EDAEMON;
			goto out;
		}
		printf("%s of host %s %s\n", what, lab->hosts[h],
		       !stopped ? "was not running" : verbs[v].sig == SIGKILL ? "killed" : "stopped");
	}
	ret = LAB_OK;
out:
	lab_free(lab);
	return ret;
}
