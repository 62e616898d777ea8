/* `exec`: runs a command inside a VM's or host's namespace, as
 * `ip netns exec` does (including a /sys that shows that namespace). */
#include "sim/lab.h"

#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

/* Best effort, like iproute2: a private mount namespace whose /sys is the
 * target network namespace's, for tools that read /sys/class/net. */
static void remount_sys(void)
{
	if (unshare(CLONE_NEWNS) < 0)
		return;
	if (mount("", "/", "none", MS_SLAVE | MS_REC, NULL) < 0)
		return;
	if (umount2("/sys", MNT_DETACH) < 0)
		return;
	mount("sysfs", "/sys", "sysfs", 0, NULL);
}

/* dfw-lab exec [--lab NAME] VM|host:HOST -- CMD [ARGS...] */
int cmd_exec(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lab", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *labname = LAB_DEFAULT_NAME, *target;
	char err[LAB_ERRLEN], **cmd;
	struct lab *lab = NULL;
	int c, ncmd, fd, ret = LAB_EINPUT;
	long idx;

	args_split(&argc, argv, &cmd, &ncmd);
	/* Without "--", options end at the target: the rest is the command. */
	while ((c = getopt_long(argc, argv, cmd ? "h" : "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': labname = optarg; break;
		case 'h': lab_usage("exec"); ret = LAB_OK; goto out;
		default: ret = lab_usage("exec"); goto out;
		}
	}
	if (optind >= argc || (cmd && argc - optind != 1)) {
		ret = lab_usage("exec");
		goto out;
	}
	target = argv[optind];
	if (!cmd) {
		cmd = argv + optind + 1;
		ncmd = argc - optind - 1;
	}
	if (ncmd == 0) {
		lab_errorf("exec: no command to run in '%s'", target);
		ret = lab_usage("exec");
		goto out;
	}
	ret = lab_open(labname, &lab, err, sizeof(err));
	if (ret != LAB_OK) {
		lab_errorf("%s", err);
		goto out;
	}
	ret = LAB_EINPUT;
	if (!strncmp(target, "host:", 5)) {
		idx = lab_find_host(lab, target + 5, err, sizeof(err));
		fd = idx < 0 ? -1 : lab_host_fd(lab, (size_t)idx, err, sizeof(err));
	} else {
		idx = lab_find_vm(lab, target, err, sizeof(err));
		fd = idx < 0 ? -1 : lab_vm_fd(lab, (size_t)idx, err, sizeof(err));
	}
	if (fd < 0) {
		lab_errorf("exec: %s", err);
		ret = idx < 0 ? LAB_EINPUT : LAB_EKERNEL;
		goto out;
	}
	if (setns(fd, CLONE_NEWNET) < 0) {
		lab_errorf("exec: cannot enter the namespace of '%s': %s", target, strerror(errno));
		ret = LAB_EKERNEL;
		goto out;
	}
	remount_sys();
	fflush(NULL);
	/* cmd is NULL-terminated: it ends where argv does. */
	execvp(cmd[0], cmd);
	lab_errorf("exec: cannot run '%s': %s", cmd[0], strerror(errno));
	ret = 127;
out:
	lab_free(lab);
	return ret;
}
