/* The lab as a whole: its name, where its state lives, and the inventory
 * (VMs and hosts) it was brought up from. */
#include "sim/lab.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

volatile sig_atomic_t lab_interrupted;

static void on_signal(int sig)
{
	(void)sig;
	lab_interrupted = 1;
}

void lab_catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };

	/* No SA_RESTART: a blocking wait returns EINTR and the loop around it
	 * notices the flag. */
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
		sigaction(sigs[i], &sa, NULL);
}

void lab_errorf(const char *fmt, ...)
{
	va_list ap;

	fputs("dfw-lab: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

int lab_name_check(const char *name, char *err, size_t errlen)
{
	size_t len = strlen(name);

	if (len == 0 || len > 32)
		return errf(err, errlen, "lab name '%s' must be 1 to 32 characters", name);
	for (const char *p = name; *p; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '_')
			return errf(err, errlen,
				    "lab name '%s': only a-z, 0-9 and '_' are allowed", name);
	return 0;
}

int lab_ident_check(const char *what, const char *s, char *err, size_t errlen)
{
	size_t len = strlen(s);

	if (len == 0 || len > 64 || !strcmp(s, ".") || !strcmp(s, ".."))
		return errf(err, errlen, "%s name '%s' must be 1 to 64 characters", what, s);
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._-", *p))
			return errf(err, errlen,
				    "%s name '%s' cannot name a namespace: only letters, digits, '.', '_' and '-' are allowed",
				    what, s);
	return 0;
}

struct lab *lab_new(const char *name, struct dfw_policy *pol)
{
	struct lab *lab = xcalloc(1, sizeof(*lab));
	const struct inventory *inv = &pol->inv;
	size_t cap = 0;

	lab->name = xstrdup(name);
	lab->dir = lab_path(name, NULL);
	lab->pol = pol;
	lab->vm_host = xcalloc(inv->nvms, sizeof(*lab->vm_host));
	lab->vm_fd = xcalloc(inv->nvms, sizeof(*lab->vm_fd));
	for (size_t i = 0; i < inv->nvms; i++) {
		size_t h;

		for (h = 0; h < lab->nhosts; h++)
			if (!strcmp(lab->hosts[h], inv->vms[i].host))
				break;
		if (h == lab->nhosts) {
			grow((void **)&lab->hosts, &cap, h + 1, sizeof(*lab->hosts));
			lab->hosts[lab->nhosts++] = xstrdup(inv->vms[i].host);
		}
		lab->vm_host[i] = h;
		lab->vm_fd[i] = -1;
	}
	lab->host_fd = xcalloc(lab->nhosts, sizeof(*lab->host_fd));
	for (size_t h = 0; h < lab->nhosts; h++)
		lab->host_fd[h] = -1;
	return lab;
}

/* Applies LAB_PLACEMENT ("VM HOST" lines, written by `migrate`). */
static int placement_load(struct lab *lab, char *err, size_t errlen)
{
	char *path = lab_path(lab->name, LAB_PLACEMENT), line[256], vm[128], host[128];
	FILE *f = fopen(path, "re");
	int n = 0, ret = 0;

	while (f && fgets(line, sizeof(line), f)) {
		long v, h;

		n++;
		if (sscanf(line, "%127s %127s", vm, host) != 2 ||
		    (v = lab_find_vm(lab, vm, NULL, 0)) < 0 ||
		    (h = lab_find_host(lab, host, NULL, 0)) < 0) {
			ret = errf(err, errlen, "%s:%d: not a VM and a host of lab %s", path, n,
				   lab->name);
			break;
		}
		lab->vm_host[v] = (size_t)h;
	}
	if (f)
		fclose(f);
	free(path);
	return ret;
}

int lab_placement_save(const struct lab *lab, char *err, size_t errlen)
{
	char *path = lab_path(lab->name, LAB_PLACEMENT), *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int ret;

	for (size_t i = 0; i < lab->pol->inv.nvms; i++)
		fprintf(f, "%s %s\n", lab->pol->inv.vms[i].name, lab->hosts[lab->vm_host[i]]);
	fclose(f);
	ret = lab_write_file(path, text, len, O_TRUNC | O_NOFOLLOW, err, errlen);
	free(text);
	free(path);
	return ret;
}

char *lab_store_uri(const char *labname)
{
	char *path = lab_path(labname, LAB_STORE_URI), line[512];
	FILE *f = fopen(path, "re");

	free(path);
	if (f && fgets(line, sizeof(line), f)) {
		fclose(f);
		line[strcspn(line, "\n")] = '\0';
		return xstrdup(line);
	}
	if (f)
		fclose(f);
	return lab_path(labname, "store.db");
}

bool lab_store_is_etcd(const char *labname)
{
	char *uri = lab_store_uri(labname);
	bool etcd = !strncmp(uri, "etcd://", 7);

	free(uri);
	return etcd;
}

int lab_store_ns_enter(const char *labname, char *err, size_t errlen)
{
	char *ns;
	int fd, ret = 0;

	if (!lab_store_is_etcd(labname))
		return 0;
	ns = lab_fabric_ns(labname);
	fd = netns_open(ns);
	if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
		ret = errf(err, errlen, "%s: %s (the namespace of the lab's etcd)", ns,
			   strerror(errno));
	if (fd >= 0)
		close(fd);
	free(ns);
	return ret;
}

int lab_open(const char *name, struct lab **out, char *err, size_t errlen)
{
	struct diag d = { 0 };
	struct dfw_policy *pol = NULL;
	char *config = NULL;
	int ret = LAB_EKERNEL;

	*out = NULL;
	if (lab_name_check(name, err, errlen) < 0) {
		ret = LAB_EINPUT;
		goto out;
	}
	config = lab_path(name, "config.ini");
	if (access(config, R_OK) < 0) {
		errf(err, errlen, "lab '%s' is not up (no %s); start it with `dfw-lab up CONFIG --lab %s`",
		     name, config, name);
		goto out;
	}
	pol = policy_load(config, NULL, &d);
	if (!pol) {
		char msg[LAB_ERRLEN / 2];

		diag_join(&d, msg, sizeof(msg));
		errf(err, errlen, "lab '%s': cannot read its inventory: %s", name, msg);
		goto out;
	}
	*out = lab_new(name, pol);
	if (placement_load(*out, err, errlen) < 0) {
		lab_free(*out);
		*out = NULL;
		goto out;
	}
	ret = LAB_OK;
out:
	diag_free(&d);
	free(config);
	return ret;
}

void lab_free(struct lab *lab)
{
	if (!lab)
		return;
	for (size_t i = 0; i < lab->pol->inv.nvms; i++)
		if (lab->vm_fd[i] >= 0)
			close(lab->vm_fd[i]);
	for (size_t h = 0; h < lab->nhosts; h++) {
		if (lab->host_fd[h] >= 0)
			close(lab->host_fd[h]);
		free(lab->hosts[h]);
	}
	policy_free(lab->pol);
	free(lab->hosts);
	free(lab->vm_host);
	free(lab->vm_fd);
	free(lab->host_fd);
	free(lab->name);
	free(lab->dir);
	free(lab);
}

char *lab_vm_ns(const struct lab *lab, size_t vm)
{
	return xasprintf(LAB_NS_PREFIX "%s-v-%s", lab->name, lab->pol->inv.vms[vm].name);
}

char *lab_host_ns(const struct lab *lab, size_t host)
{
	return xasprintf(LAB_NS_PREFIX "%s-h-%s", lab->name, lab->hosts[host]);
}

char *lab_fabric_ns(const char *labname)
{
	return xasprintf(LAB_NS_PREFIX "%s-fabric", labname);
}

char *lab_ns_prefix(const char *labname)
{
	return xasprintf(LAB_NS_PREFIX "%s-", labname);
}

char *lab_path(const char *labname, const char *file)
{
	if (!file)
		return xasprintf(LAB_RUN_DIR "/%s", labname);
	return xasprintf(LAB_RUN_DIR "/%s/%s", labname, file);
}

char *lab_host_path(const char *labname, const char *host, const char *suffix)
{
	return xasprintf(LAB_RUN_DIR "/%s/%s%s", labname, host, suffix);
}

/* Looks name up in names (case-insensitively) or explains what is near. */
static long find_name(const char *what, const char *labname, const char *name,
		      const char *const *names, size_t n, char *err, size_t errlen)
{
	const char *near;

	for (size_t i = 0; i < n; i++)
		if (str_eq_nocase(names[i], name))
			return (long)i;
	near = nearest_name(name, names, n);
	if (near)
		errf(err, errlen, "unknown %s '%s' in lab %s (did you mean '%s'?)", what,
		     name, labname, near);
	else
		errf(err, errlen, "unknown %s '%s' in lab %s", what, name, labname);
	return -1;
}

long lab_find_vm(const struct lab *lab, const char *name, char *err, size_t errlen)
{
	const struct inventory *inv = &lab->pol->inv;
	const char **names = xcalloc(inv->nvms, sizeof(*names));
	long i;

	for (size_t k = 0; k < inv->nvms; k++)
		names[k] = inv->vms[k].name;
	i = find_name("VM", lab->name, name, names, inv->nvms, err, errlen);
	free(names);
	return i;
}

long lab_find_host(const struct lab *lab, const char *name, char *err, size_t errlen)
{
	return find_name("host", lab->name, name, (const char *const *)lab->hosts,
			 lab->nhosts, err, errlen);
}

static int cached_ns_fd(int *slot, char *nsname, char *err, size_t errlen)
{
	if (*slot < 0) {
		*slot = netns_open(nsname);
		if (*slot < 0)
			errf(err, errlen, "namespace %s: %s (is the lab up? try `dfw-lab down` then `up`)",
			     nsname, strerror(errno));
	}
	free(nsname);
	return *slot;
}

int lab_vm_fd(struct lab *lab, size_t vm, char *err, size_t errlen)
{
	return cached_ns_fd(&lab->vm_fd[vm], lab_vm_ns(lab, vm), err, errlen);
}

int lab_host_fd(struct lab *lab, size_t host, char *err, size_t errlen)
{
	return cached_ns_fd(&lab->host_fd[host], lab_host_ns(lab, host), err, errlen);
}

const struct dfw_addr *lab_vm_addr(const struct lab *lab, size_t vm, int family)
{
	const struct vm *v = &lab->pol->inv.vms[vm];

	for (size_t i = 0; i < v->naddrs; i++)
		if (v->addrs[i].family == family)
			return &v->addrs[i];
	return NULL;
}

const char *lab_bindir(void)
{
	static char dir[PATH_MAX];
	ssize_t n;
	char *slash;

	if (dir[0])
		return dir;
	n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
	if (n <= 0) {
		strcpy(dir, ".");
		return dir;
	}
	dir[n] = '\0';
	slash = strrchr(dir, '/');
	if (slash && slash != dir)
		*slash = '\0';
	else
		strcpy(dir, "/");
	return dir;
}

static int rm_rf_at(int dirfd, const char *name, const char *shown, char *err, size_t errlen)
{
	DIR *d = NULL;
	struct dirent *de;
	int fd, ret = -1;

	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return errf(err, errlen, "cannot remove %s/%s: %s", shown, name, strerror(errno));
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errf(err, errlen, "cannot open %s/%s: %s", shown, name, strerror(errno));
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return errf(err, errlen, "cannot read %s/%s: %s", shown, name, strerror(errno));
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (rm_rf_at(fd, de->d_name, shown, err, errlen) < 0)
			goto out;
	}
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
		errf(err, errlen, "cannot remove %s/%s: %s", shown, name, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	closedir(d);
	return ret;
}

int rm_rf(const char *path, char *err, size_t errlen)
{
	char *copy = xstrdup(path), *slash = strrchr(copy, '/');
	const char *parent = "/", *base = copy;
	int dirfd, ret;

	if (slash && slash != copy) {
		*slash = '\0';
		parent = copy;
		base = slash + 1;
	} else if (slash) {
		base = slash + 1;
	}
	dirfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		ret = errno == ENOENT ? 0 : errf(err, errlen, "cannot open %s: %s", parent, strerror(errno));
		goto out;
	}
	ret = rm_rf_at(dirfd, base, parent, err, errlen);
	close(dirfd);
out:
	free(copy);
	return ret;
}

void args_split(int *argc, char **argv, char ***tail, int *ntail)
{
	*tail = NULL;
	*ntail = 0;
	for (int i = 1; i < *argc; i++) {
		if (!strcmp(argv[i], "--")) {
			*tail = argv + i + 1;
			*ntail = *argc - i - 1;
			*argc = i;
			return;
		}
	}
}

int lab_write_file(const char *path, const void *buf, size_t len, int oflags, char *err,
		   size_t errlen)
{
	const unsigned char *data = buf;
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | oflags, 0644);
	size_t off = 0;

	if (fd < 0)
		return errf(err, errlen, "cannot create %s: %s", path, strerror(errno));
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			errf(err, errlen, "cannot write %s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
		off += (size_t)w;
	}
	if (close(fd) < 0)
		return errf(err, errlen, "cannot write %s: %s", path, strerror(errno));
	return 0;
}
