/* `migrate`: moves a running VM to another host as a hypervisor's live
 * migration would.  The store learns the new placement first and every
 * host agent realizes it (the new host installs the VM's policy on a port
 * that is not there yet, the old host removes its state); only then does
 * the port move, so it never forwards a frame under no policy.  The guest
 * is untouched: same eth0, MAC and addresses, link up. */
#include "sim/lab.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PLACE_WAIT "--wait=10s"

static double ms_since(uint64_t t0)
{
	return (double)(now_ns() - t0) / 1e6;
}

/* dfw-lab migrate VM HOST [--lab NAME] [--no-place] */
int cmd_migrate(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lab", required_argument, NULL, 'l' },
		{ "no-place", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct topo_opts to = { .bridge = LAB_DEFAULT_BRIDGE };
	const char *labname = LAB_DEFAULT_NAME;
	char err[LAB_ERRLEN], out[1024];
	struct lab *lab = NULL;
	bool place = true;
	long vm, host;
	size_t from;
	uint64_t t0;
	int c, ret;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': labname = optarg; break;
		case 'n': place = false; break;
		case 'h': lab_usage("migrate"); return LAB_OK;
		default: return lab_usage("migrate");
		}
	}
	if (argc - optind != 2)
		return lab_usage("migrate");
	ret = lab_open(labname, &lab, err, sizeof(err));
	if (ret != LAB_OK) {
		lab_errorf("%s", err);
		return ret;
	}
	ret = LAB_EINPUT;
	if ((vm = lab_find_vm(lab, argv[optind], err, sizeof(err))) < 0 ||
	    (host = lab_find_host(lab, argv[optind + 1], err, sizeof(err))) < 0) {
		lab_errorf("migrate: %s", err);
		goto out;
	}
	from = lab->vm_host[vm];
	if (from == (size_t)host) {
		lab_errorf("migrate: VM %s already runs on host %s", lab->pol->inv.vms[vm].name,
			   lab->hosts[host]);
		goto out;
	}
	lab_catch_signals();
	t0 = now_ns();
	if (place) {
		char *args[] = { (char *)"place", (char *)PLACE_WAIT, lab->pol->inv.vms[vm].name,
				 lab->hosts[host] };

		if (lab_dfwctl(labname, args, ARRAY_SIZE(args), out, sizeof(out), err,
			       sizeof(err)) < 0) {
			lab_errorf("migrate: %s", err);
			ret = LAB_EDAEMON;
			goto out;
		}
		printf("%s\n", out);
	}
	ret = LAB_EKERNEL;
	if (topo_move_port(lab, (size_t)vm, from, (size_t)host, &to, err, sizeof(err)) < 0) {
		lab_errorf("migrate: %s", err);
		goto out;
	}
	lab->vm_host[vm] = (size_t)host;
	if (lab_placement_save(lab, err, sizeof(err)) < 0 ||
	    topo_announce(lab, (size_t)vm, err, sizeof(err)) < 0) {
		lab_errorf("migrate: %s", err);
		goto out;
	}
	printf("VM %s moved from %s to %s%s in %.1f ms; its eth0 was not touched\n",
	       lab->pol->inv.vms[vm].name, lab->hosts[from], lab->hosts[host],
	       place ? "" : " (--no-place: the store was not told)", ms_since(t0));
	ret = LAB_OK;
out:
	lab_free(lab);
	return ret;
}
