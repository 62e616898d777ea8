/* dfw-lab: brings up hypervisors and VMs as network namespaces from an
 * inventory, runs dfwd on them, and probes what the policy lets through.
 * One table drives dispatch and help. */
#include "sim/lab.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static int cmd_help(int argc, char **argv);

static const struct subcommand {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *args;
	const char *help;
} subcommands[] = {
	{ "up", cmd_up,
	  "CONFIG [--lab NAME] [--no-daemon] [--bridge BR] [--signatures FILE] [--store sqlite|etcd]",
	  "build a namespace per host and per VM from CONFIG's inventory and a\n"
	  "sandbox directory per VM (its disk), load the policy into the lab's\n"
	  "store and start dfwd and dfw-scan on every host (signatures: FILE, by\n"
	  "default configs/signatures.txt beside the build directory).  Several\n"
	  "hosts are joined by VXLAN over an underlay in a fabric namespace.\n"
	  "--store etcd: the store is an etcd the lab runs in the fabric namespace\n"
	  "(cluster mode); default sqlite, one file in the lab's state dir" },
	{ "down", cmd_down, "[--lab NAME]",
	  "stop the lab's daemons and remove its namespaces and state (idempotent)" },
	{ "probe", cmd_probe,
	  "SRC DST tcp/PORT|udp/PORT|icmp|proto/NUMBER [--lab NAME] [--timeout MS] [-6]",
	  "one real connection attempt from VM SRC to VM DST's first address\n"
	  "(proto/47: a raw IP datagram of that protocol, which DST echoes back);\n"
	  "exit 0 reachable, 1 blocked, 2 on any error" },
	{ "matrix", cmd_matrix,
	  "[--lab NAME] [--ports tcp/443,udp/53,icmp] [--json] [-6] [--timeout MS] [--parallel N]",
	  "probe every ordered pair of VMs on each port, concurrently; a cell lists\n"
	  "what was reachable ('-': nothing, '.': the VM itself, 'n/a': no address)" },
	{ "exec", cmd_exec, "[--lab NAME] VM|host:HOST -- CMD [ARGS...]",
	  "run a command in a VM's (or a host's) network namespace" },
	{ "ctl", cmd_ctl, "[--lab NAME] [--host HOST] -- DFWCTL-ARGS...",
	  "run dfwctl with the lab's store and a host's dfwd socket (default: the\n"
	  "first host)" },
	{ "daemon", cmd_daemon, "start|stop|kill HOST [--scanner] [--lab NAME] | start|stop|kill --etcd",
	  "start, stop (SIGTERM) or kill (SIGKILL) one host's dfwd (or its dfw-scan),\n"
	  "or the etcd of a lab made with `up --store etcd`" },
	{ "migrate", cmd_migrate, "VM HOST [--no-place] [--lab NAME]",
	  "move a VM's port to another host's bridge, as a live migration: first\n"
	  "`dfwctl place VM HOST --wait` (every host agent realizes the new placement),\n"
	  "then the port moves and the VM is announced (gratuitous ARP / unsolicited\n"
	  "NA); the guest's eth0, MAC and addresses stay.  --no-place moves the port\n"
	  "only (the new host then drops its traffic: fail closed)" },
	{ "infect", cmd_infect, "VM [--severity high|medium|low] [--file NAME] [--lab NAME]",
	  "write a test file into VM's sandbox, as malware landing on its disk:\n"
	  "EICAR for high (default), for medium and low the pattern of a signature\n"
	  "of that severity from the lab's signature file; the host's dfw-scan\n"
	  "detects it and the tag of that severity isolates the VM" },
	{ "scan", cmd_scan, "VM --full [--auto-release yes|no] [--lab NAME]",
	  "a full scan of VM's sandbox by dfw-scan: exit 0 clean (then, when the\n"
	  "policy's auto_release is yes, the VM is released), 4 threats found or\n"
	  "files unreadable (it stays quarantined), 1 bad input, 3 store failure" },
	{ "help", cmd_help, "[SUBCOMMAND]", "show this help" },
};

static const struct subcommand *find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(subcommands); i++)
		if (!strcmp(subcommands[i].name, name))
			return &subcommands[i];
	return NULL;
}

int lab_usage(const char *cmd)
{
	const struct subcommand *s = find(cmd);

	if (s)
		fprintf(stderr, "Usage: dfw-lab %s %s\n", s->name, s->args);
	return LAB_EINPUT;
}

static void print_help(FILE *f, const struct subcommand *only)
{
	if (!only)
		fprintf(f, "Usage: dfw-lab SUBCOMMAND [ARGS...]\n\n"
			   "A lab of network namespaces for dfw (default lab name '" LAB_DEFAULT_NAME
			   "', state in " LAB_RUN_DIR "/NAME).\n"
			   "Exit codes: 0 ok, 1 bad usage or input, 2 kernel or lab failure,\n"
			   "3 dfwd or dfwctl failed.\n\n");
	for (size_t i = 0; i < ARRAY_SIZE(subcommands); i++) {
		const struct subcommand *s = &subcommands[i];
		const char *p, *nl;

		if (only && s != only)
			continue;
		fprintf(f, "  dfw-lab %s %s\n", s->name, s->args);
		for (p = s->help; p; p = nl ? nl + 1 : NULL) {
			nl = strchr(p, '\n');
			fprintf(f, "      %.*s\n", nl ? (int)(nl - p) : (int)strlen(p), p);
		}
	}
}

static int cmd_help(int argc, char **argv)
{
	const struct subcommand *s = NULL;

	if (argc > 2)
		return lab_usage("help");
	if (argc == 2 && !(s = find(argv[1]))) {
		lab_errorf("help: unknown subcommand '%s'", argv[1]);
		return LAB_EINPUT;
	}
	print_help(stdout, s);
	return LAB_OK;
}

/* A big lab keeps a namespace fd per VM and a few sockets per probe. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	const struct subcommand *s;
	const char *names[ARRAY_SIZE(subcommands)], *near;
	static char prog[64];

	if (argc < 2) {
		print_help(stderr, NULL);
		return LAB_EINPUT;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(1, argv + 1);
	s = find(argv[1]);
	if (!s) {
		for (size_t i = 0; i < ARRAY_SIZE(subcommands); i++)
			names[i] = subcommands[i].name;
		near = nearest_name(argv[1], names, ARRAY_SIZE(names));
		if (near)
			lab_errorf("unknown subcommand '%s' (did you mean '%s'?); see `dfw-lab help`",
				   argv[1], near);
		else
			lab_errorf("unknown subcommand '%s'; see `dfw-lab help`", argv[1]);
		return LAB_EINPUT;
	}
	raise_fd_limit();
	/* Subcommands get their own argv, whose [0] getopt's messages quote:
	 * "dfw-lab up: unrecognized option '--x'". */
	snprintf(prog, sizeof(prog), "dfw-lab %s", s->name);
	argv[1] = prog;
	return s->fn(argc - 1, argv + 1);
}
