/* The lab's side of detection: each VM's sandbox (the directory standing
 * in for its disk, watched by its host's dfw-scan), the lab's copy of the
 * signature file, and the `infect` and `scan` subcommands. */
#include "sim/lab.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sim/scanner.h"

char *lab_sandbox_path(const char *labname, const char *host, const char *vm)
{
	if (!host)
		return xasprintf(LAB_RUN_DIR "/%s/sandbox", labname);
	if (!vm)
		return xasprintf(LAB_RUN_DIR "/%s/sandbox/%s", labname, host);
	return xasprintf(LAB_RUN_DIR "/%s/sandbox/%s/%s", labname, host, vm);
}

static int mkdir_new(const char *path, char *err, size_t errlen)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return errf(err, errlen, "cannot create %s: %s", path, strerror(errno));
	return 0;
}

int lab_sandbox_make(const struct lab *lab, char *err, size_t errlen)
{
	char *root = lab_sandbox_path(lab->name, NULL, NULL);
	int ret = mkdir_new(root, err, errlen);

	for (size_t h = 0; ret == 0 && h < lab->nhosts; h++) {
		char *dir = lab_sandbox_path(lab->name, lab->hosts[h], NULL);

		ret = mkdir_new(dir, err, errlen);
		free(dir);
	}
	for (size_t i = 0; ret == 0 && i < lab->pol->inv.nvms; i++) {
		char *dir = lab_sandbox_path(lab->name, lab->hosts[lab->vm_host[i]],
					     lab->pol->inv.vms[i].name);

		ret = mkdir_new(dir, err, errlen);
		free(dir);
	}
	free(root);
	return ret;
}

char *lab_default_signatures(void)
{
	char *path = xasprintf("%s/../configs/signatures.txt", lab_bindir());

	if (access(path, R_OK) == 0)
		return path;
	free(path);
	return NULL;
}

int lab_signatures_check(const char *path, char *err, size_t errlen)
{
	struct diag d = { 0 };
	struct sigdb *db = sigdb_load(path, &d);
	int ret = 0;

	if (!db) {
		diag_join(&d, err, errlen);
		ret = -1;
	}
	sigdb_free(db);
	diag_free(&d);
	return ret;
}

int lab_signatures_install(const char *labname, const char *path, char *err, size_t errlen)
{
	char *dst = lab_path(labname, LAB_SIGNATURES), buf[65536];
	int in = open(path, O_RDONLY | O_CLOEXEC), out = -1, ret = -1;
	ssize_t n;

	if (in < 0) {
		errf(err, errlen, "%s: %s", path, strerror(errno));
		goto done;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (out < 0) {
		errf(err, errlen, "cannot create %s: %s", dst, strerror(errno));
		goto done;
	}
	while ((n = read(in, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || write(out, buf, (size_t)n) != n) {
			errf(err, errlen, "copying %s to %s: %s", path, dst, strerror(errno));
			goto done;
		}
	}
	if (close(out) < 0) {
		out = -1;
		errf(err, errlen, "cannot write %s: %s", dst, strerror(errno));
		goto done;
	}
	out = -1;
	ret = 0;
done:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	free(dst);
	return ret;
}

/* The lab's signatures: its copy, or EICAR alone when it has none (a lab
 * brought up with --no-daemon and no signature file). *path is the file,
 * or NULL. */
static struct sigdb *lab_sigdb(const char *labname, char **path, char *err, size_t errlen)
{
	struct diag d = { 0 };
	struct sigdb *db;

	*path = lab_path(labname, LAB_SIGNATURES);
	if (access(*path, F_OK) < 0) {
		free(*path);
		*path = NULL;
		return sigdb_builtin();
	}
	db = sigdb_load(*path, &d);
	if (!db)
		diag_join(&d, err, errlen);
	diag_free(&d);
	return db;
}

/* A file name that stays in the sandbox's top directory. */
static int file_name_check(const char *name, char *err, size_t errlen)
{
	if (!*name || strlen(name) > NAME_MAX || strchr(name, '/') || !strcmp(name, ".") ||
	    !strcmp(name, ".."))
		return errf(err, errlen,
			    "--file '%s': a file name of 1 to %d bytes, without '/', not '.' or '..'",
			    name, NAME_MAX);
	return 0;
}

/* dfw-lab infect VM [--severity high|medium|low] [--file NAME] [--lab NAME] */
int cmd_infect(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lab", required_argument, NULL, 'l' },
		{ "severity", required_argument, NULL, 's' },
		{ "file", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *labname = LAB_DEFAULT_NAME, *sevname = "high", *file = NULL, *signame;
	char err[LAB_ERRLEN], *sigpath = NULL, *dir = NULL, *path = NULL, *defname = NULL;
	const unsigned char *pat;
	struct sigdb *db = NULL;
	struct lab *lab = NULL;
	struct stat st;
	size_t len, vm;
	enum scan_severity sev;
	int c, ret = LAB_EINPUT;
	long found;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': labname = optarg; break;
		case 's': sevname = optarg; break;
		case 'f': file = optarg; break;
		case 'h': lab_usage("infect"); ret = LAB_OK; goto out;
		default: ret = lab_usage("infect"); goto out;
		}
	}
	if (argc - optind != 1) {
		ret = lab_usage("infect");
		goto out;
	}
	if (scan_severity_parse(sevname, &sev, err, sizeof(err)) < 0) {
		lab_errorf("infect: %s", err);
		goto out;
	}
	if (file && file_name_check(file, err, sizeof(err)) < 0) {
		lab_errorf("infect: %s", err);
		goto out;
	}
	ret = lab_open(labname, &lab, err, sizeof(err));
	if (ret != LAB_OK) {
		lab_errorf("%s", err);
		goto out;
	}
	ret = LAB_EINPUT;
	if ((found = lab_find_vm(lab, argv[optind], err, sizeof(err))) < 0) {
		lab_errorf("infect: %s", err);
		goto out;
	}
	vm = (size_t)found;
	db = lab_sigdb(labname, &sigpath, err, sizeof(err));
	if (!db) {
		lab_errorf("infect: the lab's signature file is not valid:\n%s", err);
		goto out;
	}
	if (sigdb_pick(db, sev, &signame, &pat, &len) < 0) {
		lab_errorf("infect: no signature of severity %s in %s (the format is in configs/signatures.txt)",
			   sevname, sigpath ? sigpath : "the lab (it has no signature file: EICAR only)");
		goto out;
	}
	ret = LAB_EKERNEL;
	dir = lab_sandbox_path(labname, lab->hosts[lab->vm_host[vm]], lab->pol->inv.vms[vm].name);
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		lab_errorf("infect: %s has no sandbox %s (was the lab brought up by an older dfw-lab?)",
			   lab->pol->inv.vms[vm].name, dir);
		goto out;
	}
	if (!file) {
		defname = strcmp(signame, SCAN_EICAR_NAME) ? xasprintf("%s.bin", signame)
							    : xstrdup("eicar.com");
		str_lower(defname);
		file = defname;
	}
	path = xasprintf("%s/%s", dir, file);
	if (lab_write_file(path, pat, len, O_TRUNC | O_NOFOLLOW, err, sizeof(err)) < 0) {
		lab_errorf("infect: %s", err);
		goto out;
	}
	printf("%s: wrote %s (test signature %s, severity %s, %zu bytes) into its sandbox %s/\n",
	       lab->pol->inv.vms[vm].name, file, signame, sevname, len, dir);
	ret = LAB_OK;
out:
	sigdb_free(db);
	lab_free(lab);
	free(sigpath);
	free(defname);
	free(dir);
	free(path);
	return ret;
}

/* dfw-lab scan VM --full [--auto-release yes|no] [--lab NAME]: dfw-scan
 * --full-scan with the lab's store, sandbox, signatures and audit log; its
 * exit status is ours (0 clean, 4 threats found or unreadable files). */
int cmd_scan(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lab", required_argument, NULL, 'l' },
		{ "full", no_argument, NULL, 'f' },
		{ "auto-release", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *labname = LAB_DEFAULT_NAME, *release = NULL, *host;
	char err[LAB_ERRLEN], *prog = NULL, *store = NULL, *sandbox = NULL, *sigs = NULL;
	char *audit = NULL, *args[16];
	struct lab *lab = NULL;
	bool full = false;
	int c, n = 0, ret = LAB_EINPUT;
	long vm;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': labname = optarg; break;
		case 'f': full = true; break;
		case 'r': release = optarg; break;
		case 'h': lab_usage("scan"); ret = LAB_OK; goto out;
		default: ret = lab_usage("scan"); goto out;
		}
	}
	if (argc - optind != 1) {
		ret = lab_usage("scan");
		goto out;
	}
	if (!full) {
		lab_errorf("scan: only --full is a scan to ask for: files are scanned as they are written");
		ret = lab_usage("scan");
		goto out;
	}
	ret = lab_open(labname, &lab, err, sizeof(err));
	if (ret != LAB_OK) {
		lab_errorf("%s", err);
		goto out;
	}
	ret = LAB_EINPUT;
	if ((vm = lab_find_vm(lab, argv[optind], err, sizeof(err))) < 0) {
		lab_errorf("scan: %s", err);
		goto out;
	}
	host = lab->hosts[lab->vm_host[vm]];
	prog = xasprintf("%s/dfw-scan", lab_bindir());
	store = lab_store_uri(labname);
	if (lab_store_ns_enter(labname, err, sizeof(err)) < 0) {
		lab_errorf("scan: %s", err);
		ret = LAB_EKERNEL;
		goto out;
	}
	sandbox = lab_sandbox_path(labname, host, NULL);
	sigs = lab_path(labname, LAB_SIGNATURES);
	audit = lab_host_path(labname, host, LAB_AUDIT_LOG);
	args[n++] = prog;
	args[n++] = (char *)"--store";
	args[n++] = store;
	args[n++] = (char *)"--host";
	args[n++] = (char *)host;
	args[n++] = (char *)"--sandbox";
	args[n++] = sandbox;
	if (access(sigs, F_OK) == 0) {
		args[n++] = (char *)"--signatures";
		args[n++] = sigs;
	}
	args[n++] = (char *)"--audit";
	args[n++] = audit;
	args[n++] = (char *)"--full-scan";
	args[n++] = lab->pol->inv.vms[vm].name;
	if (release) {
		args[n++] = (char *)"--auto-release";
		args[n++] = (char *)release;
	}
	args[n] = NULL;
	fflush(NULL);
	execv(prog, args);
	lab_errorf("scan: cannot run %s: %s (build it: make)", prog, strerror(errno));
	ret = LAB_EDAEMON;
out:
	lab_free(lab);
	free(prog);
	free(store);
	free(sandbox);
	free(sigs);
	free(audit);
	return ret;
}
