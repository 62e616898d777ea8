/* `up` and `down`: a lab is either wholly up or not there at all; a failed
 * or interrupted `up` rolls back with the same teardown `down` uses. */
#include "sim/lab.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Something of the lab is there already: a state dir or a namespace. */
static bool lab_exists(const char *labname)
{
	char *dir = lab_path(labname, NULL), *prefix = lab_ns_prefix(labname);
	struct strv ns = { 0 };
	bool exists = access(dir, F_OK) == 0;

	if (!exists && netns_list(prefix, &ns, NULL, 0) == 0)
		exists = ns.n > 0;
	strv_free(&ns);
	free(dir);
	free(prefix);
	return exists;
}

/* dfw-lab up CONFIG [--lab NAME] [--no-daemon] [--bridge BR] [--signatures FILE]
 *               [--store sqlite|etcd] */
int cmd_up(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lab", required_argument, NULL, 'l' },
		{ "no-daemon", no_argument, NULL, 'n' },
		{ "bridge", required_argument, NULL, 'b' },
		{ "signatures", required_argument, NULL, 's' },
		{ "store", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct topo_opts to = { .bridge = LAB_DEFAULT_BRIDGE };
	const char *labname = LAB_DEFAULT_NAME, *config, *sigopt = NULL;
	char *sigs = NULL;
	struct dfw_policy *pol = NULL;
	struct diag d = { 0 };
	struct lab *lab = NULL;
	char err[LAB_ERRLEN], *text = NULL, *path = NULL;
	bool daemons = true, made = false;
	size_t nns;
	uint64_t t0 = now_ns();
	int c, ret = LAB_EINPUT;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': labname = optarg; break;
		case 'n': daemons = false; break;
		case 'b': to.bridge = optarg; break;
		case 's': sigopt = optarg; break;
		case 'S':
			if (strcmp(optarg, "sqlite") && strcmp(optarg, "etcd")) {
				lab_errorf("up: --store '%s': sqlite or etcd", optarg);
				goto out;
			}
			to.fabric = !strcmp(optarg, "etcd");
			break;
		case 'h': lab_usage("up"); ret = LAB_OK; goto out;
		default: ret = lab_usage("up"); goto out;
		}
	}
	if (argc - optind != 1) {
		ret = lab_usage("up");
		goto out;
	}
	config = argv[optind];
	if (lab_name_check(labname, err, sizeof(err)) < 0) {
		lab_errorf("up: %s", err);
		goto out;
	}
	pol = policy_load(config, &text, &d);
	if (!pol) {
		for (size_t i = 0; i < d.n; i++)
			fprintf(stderr, "%s\n", d.msgs[i]);
		lab_errorf("up: '%s' is not a valid policy (%zu problem%s)", config, d.n,
			   d.n == 1 ? "" : "s");
		goto out;
	}
	/* The scanners' signatures, checked before anything is made. */
	sigs = sigopt ? xstrdup(sigopt) : lab_default_signatures();
	if (!sigs && daemons) {
		lab_errorf("up: no signature file beside %s (../configs/signatures.txt): give --signatures FILE",
			   lab_bindir());
		goto out;
	}
	if (sigs && lab_signatures_check(sigs, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		lab_errorf("up: '%s' is not a valid signature file", sigs);
		goto out;
	}
	lab = lab_new(labname, pol);
	pol = NULL;
	if (topo_check(lab, &to, err, sizeof(err)) < 0) {
		lab_errorf("up: %s: %s", config, err);
		goto out;
	}
	if (lab_exists(labname)) {
		lab_errorf("up: lab '%s' is already up (or half made): run `dfw-lab down --lab %s` first",
			   labname, labname);
		goto out;
	}
	lab_catch_signals();
	ret = LAB_EKERNEL;
	if (mkdir(LAB_RUN_DIR, 0755) < 0 && errno != EEXIST) {
		lab_errorf("up: cannot create %s: %s", LAB_RUN_DIR, strerror(errno));
		goto out;
	}
	/* The state dir is the lab's lock: whoever made it owns the lab
	 * (and only then may roll it back). */
	if (mkdir(lab->dir, 0755) < 0) {
		lab_errorf("up: cannot create %s: %s", lab->dir, strerror(errno));
		goto out;
	}
	made = true;
	/* The copy is what later subcommands read the inventory from: exactly
	 * the text that was validated, even if CONFIG changes afterwards. */
	path = lab_path(labname, "config.ini");
	if (lab_write_file(path, text ? text : "", text ? strlen(text) : 0, O_EXCL, err,
			   sizeof(err)) < 0 ||
	    topo_build(lab, &to, err, sizeof(err)) < 0 ||
	    lab_sandbox_make(lab, err, sizeof(err)) < 0 ||
	    (sigs && lab_signatures_install(labname, sigs, err, sizeof(err)) < 0)) {
		lab_errorf("up: %s", err);
		goto out;
	}
	if (to.fabric) {
		/* etcd: the store every host's agent watches, in the fabric
		 * namespace, reached over the underlay. */
		char *uri = xasprintf("etcd://" LAB_UNDERLAY_GW_ADDR ":%d/%s", LAB_ETCD_PORT, labname);
		char *file = lab_path(labname, LAB_STORE_URI);
		int e = lab_write_file(file, uri, strlen(uri), O_EXCL, err, sizeof(err)) < 0 ||
			etcd_start(lab, err, sizeof(err)) < 0;

		free(uri);
		free(file);
		if (e) {
			lab_errorf("up: %s", err);
			ret = LAB_EDAEMON;
			goto out;
		}
	}
	if (daemons) {
		ret = LAB_EDAEMON;
		if (daemon_apply(labname, config, err, sizeof(err)) < 0 ||
		    daemon_start(lab, LAB_DFWD, NULL, 0, err, sizeof(err)) < 0 ||
		    daemon_start(lab, LAB_SCANNER, NULL, 0, err, sizeof(err)) < 0) {
			lab_errorf("up: %s", err);
			goto out;
		}
	}
	printf("lab %s up: %zu host%s, %zu VM%s, %s%s in %llu ms\n", labname, lab->nhosts,
	       lab->nhosts == 1 ? "" : "s", lab->pol->inv.nvms, lab->pol->inv.nvms == 1 ? "" : "s",
	       daemons ? "dfwd and dfw-scan running on each host" : "no daemons",
	       to.fabric ? ", store in etcd" : "",
	       (unsigned long long)((now_ns() - t0) / 1000000));
	ret = LAB_OK;
out:
	if (ret != LAB_OK && made) {
		if (lab_teardown(labname, &nns, err, sizeof(err)) < 0)
			lab_errorf("up: rolling back failed too: %s; retry `dfw-lab down --lab %s`", err,
				   labname);
		else
			lab_errorf("up: rolled back (%zu namespace%s removed)", nns, nns == 1 ? "" : "s");
	}
	diag_free(&d);
	policy_free(pol);
	lab_free(lab);
	free(text);
	free(path);
	free(sigs);
	return ret;
}

/* dfw-lab down [--lab NAME] */
int cmd_down(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lab", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *labname = LAB_DEFAULT_NAME;
	char err[LAB_ERRLEN];
	uint64_t t0 = now_ns();
	size_t nns;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': labname = optarg; break;
		case 'h': lab_usage("down"); return LAB_OK;
		default: return lab_usage("down");
		}
	}
	if (optind != argc) {
		lab_errorf("down: unexpected argument '%s'", argv[optind]);
		return lab_usage("down");
	}
	if (lab_name_check(labname, err, sizeof(err)) < 0) {
		lab_errorf("down: %s", err);
		return LAB_EINPUT;
	}
	if (lab_teardown(labname, &nns, err, sizeof(err)) < 0) {
		lab_errorf("down: %s", err);
		return LAB_EKERNEL;
	}
	printf("lab %s down: %zu namespace%s removed in %llu ms\n", labname, nns,
	       nns == 1 ? "" : "s", (unsigned long long)((now_ns() - t0) / 1000000));
	return LAB_OK;
}
