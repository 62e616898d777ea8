/* dfw-lab: network namespaces standing in for hypervisors and their VMs, so
 * that dfwd runs on real bridges and its policy is checked with real traffic.
 *
 * Layout of a lab NAME (see dfw-lab help):
 *   /run/netns/dfwl-NAME-h-HOST   one per hypervisor: bridge (br-dfw) + ports
 *   /run/netns/dfwl-NAME-v-VM     one per VM: eth0 (the VM's MAC and addresses)
 *   /run/netns/dfwl-NAME-fabric   with several hosts or --store etcd: the
 *                                 underlay bridge (and the lab's etcd)
 *   /run/dfw-lab/NAME/            config.ini, store.db or store.uri (etcd),
 *                                 etcd.{pid,log,data/}, placement, signatures.txt,
 *                                 HOST.{sock,log,pid} (dfwd),
 *                                 HOST.{events.sock,scan.log,scan.pid,audit.jsonl}
 *                                 (dfw-scan), sandbox/HOST/VM/ (each VM's disk)
 *
 * Helpers return 0, or -1 with a one-line reason in err; only the cmd_*
 * functions print, and they return the process exit code. */
#ifndef DFW_LAB_H
#define DFW_LAB_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"
#include "tagger/config.h"

/* Exit codes of every subcommand (STYLE.md). */
enum {
	LAB_OK = 0,
	LAB_EINPUT = 1,  /* bad usage or input */
	LAB_EKERNEL = 2, /* kernel, namespace or dataplane failure */
	LAB_EDAEMON = 3, /* dfwd or dfwctl (the store) failed or unreachable */
};

#define LAB_ERRLEN 4096
#define LAB_DEFAULT_NAME "dfw"
#define LAB_DEFAULT_BRIDGE "br-dfw"
#define LAB_RUN_DIR "/run/dfw-lab"
#define LAB_NS_PREFIX "dfwl-"
#define LAB_UPLINK "dfw-uplink"   /* a host bridge's VXLAN port to the others */
#define LAB_FABRIC_BRIDGE "br-fabric"
#define LAB_SIGNATURES "signatures.txt" /* the lab's copy, in its state dir */
#define LAB_STORE_URI "store.uri"    /* etcd-backed labs: the store's URI */
#define LAB_PLACEMENT "placement"    /* VM -> host after migrations */
#define LAB_ETCD_FILES "etcd"        /* etcd.pid, etcd.log */
#define LAB_ETCD_DATA "etcd.data"    /* etcd's data dir */
#define LAB_AUDIT_LOG ".audit.jsonl" /* HOST.audit.jsonl: its scanner's audit log */
#define LAB_ETCD_PORT 2379
#define LAB_ETCD_BIN "/usr/bin/etcd"
#define LAB_STATUS_TTL "3"           /* dfwd --status-ttl in the lab */

/* Set by the SIGINT/SIGTERM/SIGHUP handler; long loops check it so that an
 * interrupted `up` still rolls back. */
extern volatile sig_atomic_t lab_interrupted;
void lab_catch_signals(void);

/* printf to stderr, prefixed with "dfw-lab: ". */
void lab_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Writes len bytes to path, created with mode 0644 and open(2) flags
 * O_WRONLY | O_CREAT | oflags (O_EXCL: never an existing file; O_TRUNC |
 * O_NOFOLLOW: replace it in place, never through a link).  The write is
 * in place: its close is what an inotify watcher sees.  Returns 0, or -1
 * with the reason in err. */
int lab_write_file(const char *path, const void *buf, size_t len, int oflags, char *err,
		   size_t errlen);
/* snprintf into err (no-op when err is NULL); returns -1 for "return errf(...)". */
int errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- lab.c: names, paths and the inventory of a running lab ---- */

struct lab {
	char *name;              /* validated lab name */
	char *dir;               /* LAB_RUN_DIR/NAME */
	struct dfw_policy *pol;  /* inventory (owned) */
	char **hosts;            /* distinct VM hosts, in inventory order */
	size_t nhosts;
	size_t *vm_host;         /* host index of each VM */
	int *vm_fd, *host_fd;    /* namespace fds, opened on demand, or -1 */
};

/* Lab names become part of namespace names: [a-z0-9_], 1..32 chars, no '-'
 * so that one lab's prefix "dfwl-NAME-" is never a prefix of another's. */
int lab_name_check(const char *name, char *err, size_t errlen);
/* Host and VM names become file and namespace names: [A-Za-z0-9._-]. */
int lab_ident_check(const char *what, const char *s, char *err, size_t errlen);

/* Builds a lab around pol, which it takes over (also on failure). */
struct lab *lab_new(const char *name, struct dfw_policy *pol);
/* Opens a lab that is up: loads LAB_RUN_DIR/NAME/config.ini.  Returns an
 * exit code (LAB_OK, or LAB_EKERNEL when the lab is not up or unreadable)
 * with the reason in err. */
int lab_open(const char *name, struct lab **out, char *err, size_t errlen);
void lab_free(struct lab *lab);

/* "dfwl-NAME-v-VM", "dfwl-NAME-h-HOST", "dfwl-NAME-fabric"; malloc'd. */
char *lab_vm_ns(const struct lab *lab, size_t vm);
char *lab_host_ns(const struct lab *lab, size_t host);
char *lab_fabric_ns(const char *labname);
char *lab_ns_prefix(const char *labname);
/* LAB_RUN_DIR/NAME/FILE; malloc'd. */
char *lab_path(const char *labname, const char *file);
char *lab_host_path(const char *labname, const char *host, const char *suffix);

/* Index of a VM or host by name (case-insensitive), or -1 with
 * "unknown VM 'x' in lab NAME (did you mean 'y'?)" in err. */
long lab_find_vm(const struct lab *lab, const char *name, char *err, size_t errlen);
long lab_find_host(const struct lab *lab, const char *name, char *err, size_t errlen);
/* Namespace fds, opened once and cached; -1 with err when missing. */
int lab_vm_fd(struct lab *lab, size_t vm, char *err, size_t errlen);
int lab_host_fd(struct lab *lab, size_t host, char *err, size_t errlen);
/* The VM's first address of family (AF_INET/AF_INET6), or NULL. */
const struct dfw_addr *lab_vm_addr(const struct lab *lab, size_t vm, int family);

/* The lab's store: LAB_RUN_DIR/NAME/store.db (SQLite), or for a lab made
 * with `up --store etcd` the etcd URI in its LAB_STORE_URI file; malloc'd. */
char *lab_store_uri(const char *labname);
bool lab_store_is_etcd(const char *labname);
/* Moves the calling process into the namespace from which the lab's
 * store is reached (the fabric, where etcd listens); no-op for SQLite. */
int lab_store_ns_enter(const char *labname, char *err, size_t errlen);
/* Records the lab's current VM placement (LAB_PLACEMENT: "VM HOST" lines,
 * read back by lab_open) after a migration. */
int lab_placement_save(const struct lab *lab, char *err, size_t errlen);

/* Directory holding this binary (and dfwd, dfwctl next to it). */
const char *lab_bindir(void);
/* Recursively removes path; missing is fine. */
int rm_rf(const char *path, char *err, size_t errlen);

/* ---- netns.c: named network namespaces, as `ip netns` makes them ---- */

#define NETNS_RUN_DIR "/run/netns"

/* Creates NETNS_RUN_DIR/name holding a new network namespace and returns an
 * O_CLOEXEC fd to it (caller closes), or -1.  The caller stays in its own
 * namespace. */
int netns_add(const char *name, char *err, size_t errlen);
/* Unmounts and removes NETNS_RUN_DIR/name; a missing one is fine. */
int netns_del(const char *name, char *err, size_t errlen);
/* Opens NETNS_RUN_DIR/name; -1 with errno. */
int netns_open(const char *name);
/* Appends the names in NETNS_RUN_DIR starting with prefix, sorted. */
int netns_list(const char *prefix, struct strv *out, char *err, size_t errlen);
/* Moves the calling thread into the namespace fd / back to the one it
 * started in.  Sockets opened in between stay in that namespace. */
int netns_enter(int fd, char *err, size_t errlen);
int netns_leave(char *err, size_t errlen);
/* Writes value to /proc/sys/path in the current network namespace. */
int sysctl_write(const char *path, const char *value, char *err, size_t errlen);

/* ---- topo.c: building and tearing down the lab's links (libnl) ---- */

/* The underlay: a /24 on the fabric namespace's bridge, where host h is
 * LAB_UNDERLAY_NET ".(h+1)" on its veth LAB_UNDERLAY and the fabric's bridge
 * itself (the lab's services, etcd) is LAB_UNDERLAY_GW_ADDR.  Over it, with
 * several hosts, each host bridge's port LAB_UPLINK is a VXLAN device. */
#define LAB_UNDERLAY "underlay"
#define LAB_UNDERLAY_NET "10.255.0"
#define LAB_UNDERLAY_PLEN 24
#define LAB_UNDERLAY_GW 254
#define LAB_STR_(x) #x
#define LAB_STR(x) LAB_STR_(x)
#define LAB_UNDERLAY_GW_ADDR LAB_UNDERLAY_NET "." LAB_STR(LAB_UNDERLAY_GW)
#define LAB_UNDERLAY_MTU 1600  /* room for the VXLAN headers (50 bytes) */
#define LAB_OVERLAY_MTU 1500
#define LAB_VXLAN_VNI 4242
#define LAB_VXLAN_PORT 4789    /* IANA's, not Linux's default 8472 */
#define LAB_MAX_HOSTS 253      /* .1 .. .253 of the underlay */

struct topo_opts {
	const char *bridge;  /* bridge name in each host namespace */
	bool fabric;         /* build the fabric and underlay even for one host */
};

/* Checks the names the kernel would refuse (ports, hosts, VMs), before
 * anything is made. */
int topo_check(const struct lab *lab, const struct topo_opts *o, char *err, size_t errlen);
/* Creates every namespace, bridge, veth and address of lab.  On failure
 * (or interruption) the partial lab is left for lab_teardown. */
int topo_build(struct lab *lab, const struct topo_opts *o, char *err, size_t errlen);
/* Stops the lab's daemons, deletes its namespaces and its state dir.
 * Succeeds when there is nothing to remove; *nns receives the count of
 * namespaces deleted. */
int lab_teardown(const char *labname, size_t *nns, char *err, size_t errlen);

struct nl_sock;
/* An rtnetlink socket bound to the network namespace nsfd, which the
 * calling thread leaves again at once; ns names it in err.  Free it with
 * nl_socket_free(). */
struct nl_sock *topo_nl_open(int nsfd, const char *ns, char *err, size_t errlen);
/* Makes link port (by name) an up port of bridge in sk's namespace ns and
 * waits until it passes frames (operationally up). */
int topo_port_attach(struct nl_sock *sk, const char *ns, const char *port, const char *bridge,
		     char *err, size_t errlen);

/* ---- migrate.c: the link-level half of moving a VM between hosts ---- */

/* Moves VM vm's port (the host-side veth end, named vm->port) from host
 * from's namespace to host to's: into the namespace (RTM_NEWLINK with the
 * target's namespace fd), enslaved to that host's bridge o->bridge, set up,
 * and waits until it is operationally up.  The VM's own eth0 (its ifindex,
 * MAC, addresses, admin state) is never touched; lab->vm_host (the
 * inventory's placement) is left as it is.  When the port cannot be
 * attached on to, it is put back on from. */
int topo_move_port(struct lab *lab, size_t vm, size_t from, size_t to,
		   const struct topo_opts *o, char *err, size_t errlen);
/* The self-announce a hypervisor makes for a migrated guest (as QEMU does):
 * a gratuitous ARP for each IPv4 address and an unsolicited neighbour
 * advertisement for each IPv6 address of the VM, sent out of its eth0 from
 * inside its namespace through an AF_PACKET socket, so that bridges and
 * VXLAN FDBs everywhere learn the port's new place at once.  One round;
 * QEMU repeats it (announce-rounds), and a caller whose first round may be
 * dropped (a dataplane not yet told of the port) calls it again. */
int topo_announce(struct lab *lab, size_t vm, char *err, size_t errlen);

/* ---- daemon.c: dfwd, dfw-scan and dfwctl processes ---- */

/* The programs the lab runs on each host. */
enum lab_proc {
	LAB_DFWD,    /* the agent: HOST.{pid,log,sock} */
	LAB_SCANNER, /* dfw-scan: HOST.{scan.pid,scan.log,events.sock,audit.jsonl} */
	LAB_ETCD,    /* the lab's etcd (not a host's): etcd.{pid,log}, etcd.data/ */
};
const char *daemon_name(enum lab_proc which); /* "dfwd", "dfw-scan" */
/* Whether the hosts' files in the lab dir (HOST.pid, HOST.scan.log, ...)
 * are all distinct, and distinct from the lab's own; -1 with err if not. */
int daemon_files_check(char *const *hosts, size_t nhosts, char *err, size_t errlen);

/* Runs `dfwctl --store STORE ARGS...` where the store is reachable, with
 * its output (stdout and stderr, the start of it) in out; on failure err
 * holds the command and its output.  Returns 0 or -1. */
int lab_dfwctl(const char *labname, char *const *args, size_t nargs, char *out, size_t outlen,
	       char *err, size_t errlen);
/* lab_dfwctl(apply config). */
int daemon_apply(const char *labname, const char *config, char *err, size_t errlen);
/* Starts the lab's etcd in its fabric namespace, listening on
 * LAB_UNDERLAY_GW_ADDR and 127.0.0.1 (port LAB_ETCD_PORT), with its data
 * in LAB_ETCD_DATA, and waits until it answers /health. */
int etcd_start(const struct lab *lab, char *err, size_t errlen);
/* Starts the program of each listed host (NULL: every host) and waits up
 * to 10 s for their sockets to accept connections; err gets the log tail
 * on failure, and then none of them is left running. */
int daemon_start(struct lab *lab, enum lab_proc which, const size_t *hosts, size_t n,
		 char *err, size_t errlen);
/* Stops the host's program named by its pidfile in the lab's dir: sig
 * first, SIGKILL after 3 s.  A missing or stale pidfile is fine (*stopped
 * false). */
int daemon_stop(const char *labname, enum lab_proc which, const char *host, int sig,
		bool *stopped, char *err, size_t errlen);
/* Stops whatever live dfwd or dfw-scan of the lab each *.pid names. */
int daemon_stop_all(const char *labname, char *err, size_t errlen);

/* ---- detect.c: sandboxes, signatures, `infect` and `scan` ---- */

/* LAB_RUN_DIR/NAME/sandbox[/HOST[/VM]]; malloc'd. */
char *lab_sandbox_path(const char *labname, const char *host, const char *vm);
/* Creates the sandbox of every VM of the lab, under its host's. */
int lab_sandbox_make(const struct lab *lab, char *err, size_t errlen);
/* configs/signatures.txt of the tree this binary was built in (beside its
 * build directory), or NULL when there is none; malloc'd. */
char *lab_default_signatures(void);
/* Checks a signature file as dfw-scan will; on errors err holds every one
 * as "file:line: reason" (one per line). */
int lab_signatures_check(const char *path, char *err, size_t errlen);
/* Copies the signature file into the lab's state dir (LAB_SIGNATURES). */
int lab_signatures_install(const char *labname, const char *path, char *err, size_t errlen);

/* ---- probe.c: real connection attempts between VMs ---- */

/* PROBE_IP: another IP protocol by number (GRE, ESP, ...): a raw IP
 * datagram that the destination echoes back, as for UDP.  Conntrack keys
 * such datagrams by the address pair alone: once A -> B passed, B -> A is
 * its reply for a while (stateful, whatever the policy says of B -> A). */
enum probe_proto { PROBE_TCP, PROBE_UDP, PROBE_ICMP, PROBE_IP };

struct probe_port {
	enum probe_proto proto;
	uint16_t port;  /* 0 for icmp; the IP protocol number for PROBE_IP */
};

/* Parses "tcp/443", "udp/53", "icmp", "proto/47" (case-insensitive). */
int probe_port_parse(const char *s, struct probe_port *out, char *err, size_t errlen);
/* "tcp/443", "udp/53", "icmp", "proto/47". */
void probe_port_format(const struct probe_port *p, char *buf, size_t len);

struct probe {
	size_t src, dst;          /* VM indexes */
	struct probe_port port;
	/* results */
	bool reachable;
	unsigned ms;              /* time to the answer or the verdict */
};

struct probe_opts {
	int family;           /* AF_INET or AF_INET6 */
	unsigned timeout_ms;  /* a probe unanswered this long is blocked */
	unsigned parallel;    /* probes in flight at once */
};

/* Runs every probe (src and dst must have an address of the family), at
 * most o->parallel at a time, and fills in the results.  -1 only for lab
 * failures (a namespace or socket that cannot be had). */
int probe_run(struct lab *lab, struct probe *pr, size_t n, const struct probe_opts *o,
	      char *err, size_t errlen);

/* ---- subcommands (one table in dfw-lab.c) ---- */

int cmd_up(int argc, char **argv);
int cmd_down(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_matrix(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_ctl(int argc, char **argv);
int cmd_daemon(int argc, char **argv);
int cmd_infect(int argc, char **argv);
int cmd_scan(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
/* Prints the usage line of one subcommand to stderr; returns LAB_EINPUT. */
int lab_usage(const char *cmd);

/* Splits argv (argv[0] is the subcommand) at the first "--": *ntail and
 * *tail receive what follows it (argc then counts what precedes it).  When
 * there is no "--", *tail is NULL. */
void args_split(int *argc, char **argv, char ***tail, int *ntail);

#endif
