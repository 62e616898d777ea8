/* Named network namespaces made the way iproute2's `ip netns add` makes them
 * (a bind mount of the namespace on /run/netns/NAME), so that `ip netns list`
 * and `ip netns exec` work on them, but without a process per namespace. */
#include "sim/lab.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define SELF_NS "/proc/thread-self/ns/net"

/* The namespace this thread started in, to come back to. */
static int home_fd = -1;

static int home(char *err, size_t errlen)
{
	if (home_fd < 0) {
		home_fd = open(SELF_NS, O_RDONLY | O_CLOEXEC);
		if (home_fd < 0)
			return errf(err, errlen, "cannot open %s: %s", SELF_NS, strerror(errno));
	}
	return home_fd;
}

int netns_enter(int fd, char *err, size_t errlen)
{
	if (home(err, errlen) < 0)
		return -1;
	if (setns(fd, CLONE_NEWNET) < 0)
		return errf(err, errlen, "cannot enter network namespace: %s", strerror(errno));
	return 0;
}

int netns_leave(char *err, size_t errlen)
{
	if (home_fd < 0)
		return 0;
	if (setns(home_fd, CLONE_NEWNET) < 0) {
		/* Staying in a lab namespace would make every later step act
		 * on the wrong network: there is no safe way on. */
		fprintf(stderr, "dfw-lab: cannot return to the original network namespace: %s\n",
			strerror(errno));
		abort();
	}
	return 0;
}

/* Like iproute2: /run/netns must be a shared mount point so that namespaces
 * mounted later are seen from mount namespaces made before (`ip netns exec`). */
static int prepare_run_dir(char *err, size_t errlen)
{
	static bool done;
	bool bound = false;

	if (done)
		return 0;
	if (mkdir(NETNS_RUN_DIR, 0755) < 0 && errno != EEXIST)
		return errf(err, errlen, "cannot create %s: %s", NETNS_RUN_DIR, strerror(errno));
	while (mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC, NULL) < 0) {
		if (errno != EINVAL || bound)
			return errf(err, errlen, "cannot make %s a shared mount: %s",
				    NETNS_RUN_DIR, strerror(errno));
		/* Not a mount point yet: make it one. */
		if (mount(NETNS_RUN_DIR, NETNS_RUN_DIR, "none", MS_BIND | MS_REC, NULL) < 0)
			return errf(err, errlen, "cannot bind-mount %s: %s", NETNS_RUN_DIR,
				    strerror(errno));
		bound = true;
	}
	done = true;
	return 0;
}

int netns_add(const char *name, char *err, size_t errlen)
{
	char *path = xasprintf(NETNS_RUN_DIR "/%s", name);
	bool created = false, entered = false, mounted = false;
	int fd = -1, tmp;

	if (prepare_run_dir(err, errlen) < 0 || home(err, errlen) < 0)
		goto out;
	tmp = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
	if (tmp < 0) {
		if (errno == EEXIST)
			errf(err, errlen, "namespace %s already exists", name);
		else
			errf(err, errlen, "cannot create %s: %s", path, strerror(errno));
		goto out;
	}
	close(tmp);
	created = true;
	if (unshare(CLONE_NEWNET) < 0) {
		errf(err, errlen, "cannot create network namespace %s: %s", name, strerror(errno));
		goto out;
	}
	entered = true;
	if (mount(SELF_NS, path, "none", MS_BIND, NULL) < 0) {
		errf(err, errlen, "cannot bind-mount namespace on %s: %s", path, strerror(errno));
		goto out;
	}
	mounted = true;
	fd = open(SELF_NS, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		errf(err, errlen, "cannot open namespace %s: %s", name, strerror(errno));
out:
	if (entered)
		netns_leave(NULL, 0);
	if (fd < 0 && mounted)
		umount2(path, MNT_DETACH);
	if (fd < 0 && created)
		unlink(path);
	free(path);
	return fd;
}

int netns_del(const char *name, char *err, size_t errlen)
{
	char *path = xasprintf(NETNS_RUN_DIR "/%s", name);
	int ret = 0;

	/* EINVAL: not mounted (a half-made namespace); still unlink it. */
	if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		ret = errf(err, errlen, "cannot unmount %s: %s", path, strerror(errno));
	else if (unlink(path) < 0 && errno != ENOENT)
		ret = errf(err, errlen, "cannot remove %s: %s", path, strerror(errno));
	free(path);
	return ret;
}

int netns_open(const char *name)
{
	char *path = xasprintf(NETNS_RUN_DIR "/%s", name);
	struct statfs st;
	int fd;

	/* A lone file left by an interrupted `up` is not a namespace: say
	 * ENOENT for it, which is what it means here. */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && (fstatfs(fd, &st) < 0 || st.f_type != NSFS_MAGIC)) {
		close(fd);
		fd = -1;
		errno = ENOENT;
	}
	free(path);
	return fd;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int netns_list(const char *prefix, struct strv *out, char *err, size_t errlen)
{
	size_t len = strlen(prefix), first = out->n;
	DIR *d = opendir(NETNS_RUN_DIR);
	struct dirent *de;

	if (!d) {
		if (errno == ENOENT)
			return 0;
		return errf(err, errlen, "cannot read %s: %s", NETNS_RUN_DIR, strerror(errno));
	}
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, prefix, len))
			strv_push(out, de->d_name);
	closedir(d);
	if (out->n > first)
		qsort(out->v + first, out->n - first, sizeof(*out->v), cmp_str);
	return 0;
}

int sysctl_write(const char *path, const char *value, char *err, size_t errlen)
{
	char *full = xasprintf("/proc/sys/%s", path);
	size_t len = strlen(value);
	int fd, ret = -1;

	fd = open(full, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		errf(err, errlen, "cannot open %s: %s", full, strerror(errno));
		goto out;
	}
	if (write(fd, value, len) != (ssize_t)len) {
		errf(err, errlen, "cannot write '%s' to %s: %s", value, full, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	free(full);
	return ret;
}
