/* The lab's links, built over rtnetlink (libnl-route): a bridge per host
 * namespace, a veth per VM from the host's bridge to the VM's eth0, and,
 * with several hosts, a fabric namespace whose bridge joins the host bridges
 * so that VMs on different hosts reach each other (like an overlay would).
 *
 * Everything is done from this one process: a namespace is entered with
 * setns() only to write its sysctls and to open a netlink socket that then
 * stays bound to it, so hundreds of VMs take no process spawns. */
#include "sim/lab.h"

#include <errno.h>
#include <linux/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>

#define UPLINK_IFINDEX 0x10000
#define READY_TIMEOUT_MS 5000
#define BRNF_IPT "net/bridge/bridge-nf-call-iptables"
#define BRNF_IP6T "net/bridge/bridge-nf-call-ip6tables"

/* A netlink socket in the current network namespace. */
static struct nl_sock *nl_open(const char *where, char *err, size_t errlen)
{
	struct nl_sock *sk = nl_socket_alloc();
	int e;

	if (!sk) {
		errf(err, errlen, "%s: cannot allocate a netlink socket", where);
		return NULL;
	}
	e = nl_connect(sk, NETLINK_ROUTE);
	if (e < 0) {
		errf(err, errlen, "%s: cannot open rtnetlink: %s", where, nl_geterror(e));
		nl_socket_free(sk);
		return NULL;
	}
	return sk;
}

static void nlsk_close(struct nl_sock *sk)
{
	if (sk)
		nl_socket_free(sk);
}

static int link_index(struct nl_sock *sk, const char *ns, const char *ifname, int *ifindex,
		      char *err, size_t errlen)
{
	struct rtnl_link *l = NULL;
	int e = rtnl_link_get_kernel(sk, 0, ifname, &l);

	if (e < 0)
		return errf(err, errlen, "%s: cannot find link %s: %s", ns, ifname, nl_geterror(e));
	*ifindex = rtnl_link_get_ifindex(l);
	rtnl_link_put(l);
	return 0;
}

static int link_up(struct nl_sock *sk, const char *ns, int ifindex, const char *shown,
		   char *err, size_t errlen)
{
	struct rtnl_link *orig = rtnl_link_alloc(), *chg = rtnl_link_alloc();
	int e, ret = 0;

	if (!orig || !chg)
		abort();
	rtnl_link_set_ifindex(orig, ifindex);
	rtnl_link_set_flags(chg, IFF_UP);
	e = rtnl_link_change(sk, orig, chg, 0);
	if (e < 0)
		ret = errf(err, errlen, "%s: cannot set %s up: %s", ns, shown, nl_geterror(e));
	rtnl_link_put(orig);
	rtnl_link_put(chg);
	return ret;
}

/* Makes ifname (by name: one round trip) an up port of bridge master. */
static int link_set_master(struct nl_sock *sk, const char *ns, const char *ifname, int master,
			   const char *bridge, char *err, size_t errlen)
{
	struct rtnl_link *orig = rtnl_link_alloc(), *chg = rtnl_link_alloc();
	int e;

	if (!orig || !chg)
		abort();
	rtnl_link_set_name(chg, ifname);
	rtnl_link_set_master(chg, master);
	rtnl_link_set_flags(chg, IFF_UP);
	e = rtnl_link_change(sk, orig, chg, 0);
	rtnl_link_put(orig);
	rtnl_link_put(chg);
	if (e < 0)
		return errf(err, errlen, "%s: cannot add %s to bridge %s: %s", ns, ifname, bridge,
			    nl_geterror(e));
	return 0;
}

/* A bridge, up, in the socket's namespace. */
static int bridge_add(struct nl_sock *sk, const char *ns, const char *name, int *ifindex,
		      char *err, size_t errlen)
{
	struct rtnl_link *br = rtnl_link_bridge_alloc();
	int e;

	if (!br)
		abort();
	rtnl_link_set_name(br, name);
	rtnl_link_set_flags(br, IFF_UP);
	e = rtnl_link_add(sk, br, NLM_F_CREATE | NLM_F_EXCL);
	rtnl_link_put(br);
	if (e < 0)
		return errf(err, errlen, "%s: cannot create bridge %s: %s", ns, name, nl_geterror(e));
	return link_index(sk, ns, name, ifindex, err, errlen);
}

/* A veth pair whose ends are born in their namespaces: "near" in near_fd,
 * up, and "far" in far_fd with mac (NULL: random), still down: the kernel
 * refuses (ENOTCONN) to open the peer before the pair is linked, so the
 * caller sets it up, as it enslaves the near end, in a later request. */
struct veth_spec {
	const char *near, *far;
	int near_fd, far_fd;
	int near_index;  /* ifindex to ask for, 0: any */
	const uint8_t *mac;
};

static int veth_add(struct nl_sock *sk, const struct veth_spec *v, const char *what,
		    char *err, size_t errlen)
{
	struct rtnl_link *near = rtnl_link_veth_alloc(), *far;
	struct nl_addr *mac = NULL;
	int e;

	if (!near)
		abort();
	far = rtnl_link_veth_get_peer(near);
	rtnl_link_set_name(near, v->near);
	rtnl_link_set_ns_fd(near, v->near_fd);
	if (v->near_index)
		rtnl_link_set_ifindex(near, v->near_index);
	rtnl_link_set_flags(near, IFF_UP);
	rtnl_link_set_name(far, v->far);
	rtnl_link_set_ns_fd(far, v->far_fd);
	if (v->mac) {
		mac = nl_addr_build(AF_LLC, v->mac, 6);
		if (!mac)
			abort();
		rtnl_link_set_addr(far, mac);
	}
	e = rtnl_link_add(sk, near, NLM_F_CREATE | NLM_F_EXCL);
	nl_addr_put(mac);
	rtnl_link_put(far);
	rtnl_link_put(near);
	if (e < 0)
		return errf(err, errlen, "%s: cannot create veth %s/%s: %s", what, v->near, v->far,
			    nl_geterror(e));
	return 0;
}

static int addr_add(struct nl_sock *sk, const char *ns, int ifindex, const struct dfw_addr *a,
		    char *err, size_t errlen)
{
	struct rtnl_addr *ra = rtnl_addr_alloc();
	bool v4 = a->family == AF_INET;
	/* The lab's subnet: every VM of one /24 (/64) shares its bridges. */
	unsigned plen = v4 ? 24 : 64;
	struct nl_addr *local = nl_addr_build(a->family, a->a, v4 ? 4 : 16);
	char shown[64];
	int e;

	if (!ra || !local)
		abort();
	nl_addr_set_prefixlen(local, (int)plen);
	rtnl_addr_set_ifindex(ra, ifindex);
	rtnl_addr_set_local(ra, local);
	rtnl_addr_set_prefixlen(ra, (int)plen);
	/* Usable at once: no duplicate address detection (accept_dad is
	 * off too, this covers kernels that ignore it for some paths). */
	rtnl_addr_set_flags(ra, IFA_F_NODAD);
	e = rtnl_addr_add(sk, ra, NLM_F_EXCL);
	nl_addr_put(local);
	rtnl_addr_put(ra);
	if (e < 0) {
		addr_format(a, shown, sizeof(shown));
		return errf(err, errlen, "%s: cannot add address %s/%u to eth0: %s", ns, shown,
			    plen, nl_geterror(e));
	}
	return 0;
}

/* `modprobe br_netfilter`, once per process; true when it was tried. */
static bool load_br_netfilter(void)
{
	static bool tried;
	pid_t pid;
	int st;

	if (tried)
		return false;
	tried = true;
	pid = fork();
	if (pid == 0) {
		char *argv[] = { (char *)"modprobe", (char *)"br_netfilter", NULL };

		execvp(argv[0], argv);
		_exit(127);
	}
	if (pid > 0)
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
	return true;
}

/* bridge-nf-call-ip{,6}tables=1 in the current namespace: nftables' ip/ip6/inet
 * hooks then see bridged traffic too, as on a real hypervisor. */
static int host_sysctls(const char *ns, char *err, size_t errlen)
{
	if (access("/proc/sys/" BRNF_IPT, F_OK) < 0 && load_br_netfilter() &&
	    access("/proc/sys/" BRNF_IPT, F_OK) < 0)
		return errf(err, errlen,
			    "%s: /proc/sys/net/bridge is missing: the br_netfilter module is not loaded and `modprobe br_netfilter` did not load it; load it on this machine and retry",
			    ns);
	if (sysctl_write(BRNF_IPT, "1", err, errlen) < 0 ||
	    sysctl_write(BRNF_IP6T, "1", err, errlen) < 0)
		return -1;
	return 0;
}

struct build {
	struct lab *lab;
	const struct topo_opts *o;
	int *host_fd;       /* per host */
	struct nl_sock **host_sk;
	int *bridge_idx;    /* per host, in its namespace */
	int fabric_fd;
	struct nl_sock *fabric_sk;
	int fabric_br;
	bool have_ipv6;
};

static int interrupted(char *err, size_t errlen)
{
	if (!lab_interrupted)
		return 0;
	return errf(err, errlen, "interrupted");
}

/* Creates namespace ns holding an up bridge (and lo); host namespaces also
 * get their bridge-netfilter sysctls.  The socket stays in ns. */
static int bridge_ns(const char *ns, const char *bridge, bool host, int *fd,
		     struct nl_sock **sk, int *bridge_idx, char *err, size_t errlen)
{
	bool entered = false;
	int ret = -1;

	*fd = netns_add(ns, err, errlen);
	if (*fd < 0 || netns_enter(*fd, err, errlen) < 0)
		goto out;
	entered = true;
	if (host && host_sysctls(ns, err, errlen) < 0)
		goto out;
	*sk = nl_open(ns, err, errlen);
	if (!*sk || link_up(*sk, ns, 1, "lo", err, errlen) < 0 ||
	    bridge_add(*sk, ns, bridge, bridge_idx, err, errlen) < 0)
		goto out;
	ret = 0;
out:
	if (entered)
		netns_leave(NULL, 0);
	return ret;
}

static int build_host(struct build *b, size_t h, char *err, size_t errlen)
{
	char *ns = lab_host_ns(b->lab, h);
	int ret = bridge_ns(ns, b->o->bridge, true, &b->host_fd[h], &b->host_sk[h],
			    &b->bridge_idx[h], err, errlen);

	free(ns);
	return ret;
}

/* Joins the host bridges through one fabric bridge. */
static int build_fabric(struct build *b, char *err, size_t errlen)
{
	char *ns = lab_fabric_ns(b->lab->name);
	bool entered = false;
	int ret = -1;

	if (bridge_ns(ns, LAB_FABRIC_BRIDGE, false, &b->fabric_fd, &b->fabric_sk,
		      &b->fabric_br, err, errlen) < 0 ||
	    netns_enter(b->fabric_fd, err, errlen) < 0)
		goto out;
	entered = true;
	for (size_t h = 0; h < b->lab->nhosts; h++) {
		const char *host = b->lab->hosts[h];
		char port[IFNAMSIZ];
		/* A veth end whose ifindex equals its peer's gets its carrier
		 * changes handled "not urgent", up to a second late (linkwatch),
		 * and the host uplinks and fabric ports would both count from
		 * 3: an ifindex no fabric port has avoids that. */
		struct veth_spec v = {
			.near = LAB_UPLINK, .near_fd = b->host_fd[h], .near_index = UPLINK_IFINDEX,
			.far = port, .far_fd = b->fabric_fd,
		};
		char *hns = lab_host_ns(b->lab, h);
		int e;

		/* The fabric's port is named after its host when that fits. */
		if (strlen(host) < IFNAMSIZ && strcmp(host, LAB_FABRIC_BRIDGE) && strcmp(host, "lo"))
			snprintf(port, sizeof(port), "%s", host);
		else
			snprintf(port, sizeof(port), "h%u", (unsigned)h);
		e = veth_add(b->fabric_sk, &v, ns, err, errlen) < 0 ||
		    link_set_master(b->fabric_sk, ns, port, b->fabric_br, LAB_FABRIC_BRIDGE,
				    err, errlen) < 0 ||
		    link_set_master(b->host_sk[h], hns, LAB_UPLINK, b->bridge_idx[h],
				    b->o->bridge, err, errlen) < 0;
		free(hns);
		if (e)
			goto out;
	}
	ret = 0;
out:
	if (entered)
		netns_leave(NULL, 0);
	free(ns);
	return ret;
}

static int build_vm(struct build *b, size_t i, char *err, size_t errlen)
{
	const struct vm *vm = &b->lab->pol->inv.vms[i];
	size_t h = b->lab->vm_host[i];
	char *ns = lab_vm_ns(b->lab, i);
	struct nl_sock *sk = NULL;
	bool entered = false, v6 = false;
	int fd = -1, ifindex, ret = -1;
	char what[128];

	for (size_t k = 0; k < vm->naddrs; k++)
		v6 |= vm->addrs[k].family == AF_INET6;
	if (v6 && !b->have_ipv6) {
		errf(err, errlen, "VM %s has IPv6 addresses but IPv6 is disabled in this kernel",
		     vm->name);
		goto out;
	}
	fd = netns_add(ns, err, errlen);
	if (fd < 0 || netns_enter(fd, err, errlen) < 0)
		goto out;
	entered = true;
	/* Before eth0 exists, so that it inherits "default". */
	if (b->have_ipv6 &&
	    (sysctl_write("net/ipv6/conf/all/accept_dad", "0", err, errlen) < 0 ||
	     sysctl_write("net/ipv6/conf/default/accept_dad", "0", err, errlen) < 0))
		goto out;
	sk = nl_open(ns, err, errlen);
	if (!sk || link_up(sk, ns, 1, "lo", err, errlen) < 0)
		goto out;
	snprintf(what, sizeof(what), "VM %s (port %s on host %s)", vm->name, vm->port,
		 b->lab->hosts[h]);
	{
		struct veth_spec v = {
			.near = vm->port, .near_fd = b->host_fd[h],
			.far = "eth0", .far_fd = fd, .mac = vm->mac,
		};
		char *hns = lab_host_ns(b->lab, h);
		int e = veth_add(sk, &v, what, err, errlen) < 0 ||
			link_set_master(b->host_sk[h], hns, vm->port, b->bridge_idx[h],
					b->o->bridge, err, errlen) < 0;

		free(hns);
		if (e)
			goto out;
	}
	if (b->have_ipv6 && sysctl_write("net/ipv6/conf/eth0/accept_dad", "0", err, errlen) < 0)
		goto out;
	if (link_index(sk, ns, "eth0", &ifindex, err, errlen) < 0 ||
	    link_up(sk, ns, ifindex, "eth0", err, errlen) < 0)
		goto out;
	for (size_t k = 0; k < vm->naddrs; k++)
		if (addr_add(sk, ns, ifindex, &vm->addrs[k], err, errlen) < 0)
			goto out;
	ret = 0;
out:
	nlsk_close(sk);
	if (entered)
		netns_leave(NULL, 0);
	if (fd >= 0)
		close(fd);
	free(ns);
	return ret;
}

/* Counts the bridge ports of the socket's namespace not yet operationally
 * up (the bridge drops frames until a port is), naming one in *which. */
static int ports_down(struct nl_sock *sk, const char *ns, size_t *down, char *which,
		      size_t wlen, char *err, size_t errlen)
{
	struct nl_cache *cache = NULL;
	struct nl_object *o;
	int e = rtnl_link_alloc_cache(sk, AF_UNSPEC, &cache);

	if (e < 0)
		return errf(err, errlen, "%s: cannot list links: %s", ns, nl_geterror(e));
	*down = 0;
	for (o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
		struct rtnl_link *l = (struct rtnl_link *)o;

		if (rtnl_link_get_master(l) > 0 && rtnl_link_get_operstate(l) != IF_OPER_UP) {
			if (!(*down)++)
				snprintf(which, wlen, "%s", rtnl_link_get_name(l));
		}
	}
	nl_cache_free(cache);
	return 0;
}

/* Waits until every bridge port is up, so that `up` returns a lab that
 * forwards at once. */
static int wait_ready(struct build *b, char *err, size_t errlen)
{
	size_t n = b->lab->nhosts + (b->fabric_sk ? 1 : 0);
	uint64_t deadline = now_ns() + READY_TIMEOUT_MS * 1000000ull;

	for (size_t k = 0; k < n; k++) {
		struct nl_sock *sk = k < b->lab->nhosts ? b->host_sk[k] : b->fabric_sk;
		char *ns = k < b->lab->nhosts ? lab_host_ns(b->lab, k) : lab_fabric_ns(b->lab->name);
		char which[IFNAMSIZ] = "";
		size_t down = 0;
		int ret;

		while ((ret = ports_down(sk, ns, &down, which, sizeof(which), err, errlen)) == 0 &&
		       down && now_ns() < deadline && !lab_interrupted) {
			struct timespec ts = { 0, 10000000 };

			nanosleep(&ts, NULL);
		}
		if (ret == 0 && down)
			ret = errf(err, errlen, "%s: %zu bridge port%s (%s...) still not up after %d ms",
				   ns, down, down == 1 ? "" : "s", which, READY_TIMEOUT_MS);
		free(ns);
		if (ret < 0)
			return -1;
	}
	return 0;
}

int topo_check(const struct lab *lab, const struct topo_opts *o, char *err, size_t errlen)
{
	const struct inventory *inv = &lab->pol->inv;

	if (!*o->bridge || strlen(o->bridge) >= IFNAMSIZ || strpbrk(o->bridge, "/: \t") ||
	    !strcmp(o->bridge, "lo") || !strcmp(o->bridge, LAB_UPLINK))
		return errf(err, errlen, "bridge name '%s' is not a usable interface name (at most %d characters)",
			    o->bridge, IFNAMSIZ - 1);
	for (size_t h = 0; h < lab->nhosts; h++)
		if (lab_ident_check("host", lab->hosts[h], err, errlen) < 0)
			return -1;
	for (size_t i = 0; i < inv->nvms; i++) {
		const struct vm *vm = &inv->vms[i];

		if (lab_ident_check("VM", vm->name, err, errlen) < 0)
			return -1;
		if (!vm->port || !*vm->port || strlen(vm->port) >= IFNAMSIZ ||
		    strpbrk(vm->port, "/: \t"))
			return errf(err, errlen, "VM %s: port '%s' is not a valid interface name",
				    vm->name, vm->port ? vm->port : "");
		if (!strcmp(vm->port, o->bridge) || !strcmp(vm->port, LAB_UPLINK) ||
		    !strcmp(vm->port, "lo"))
			return errf(err, errlen, "VM %s: port '%s' is a name the lab uses itself on host %s",
				    vm->name, vm->port, vm->host);
	}
	return 0;
}

int topo_build(struct lab *lab, const struct topo_opts *o, char *err, size_t errlen)
{
	struct build b = { .lab = lab, .o = o, .fabric_fd = -1 };
	int ret = -1;

	b.host_fd = xcalloc(lab->nhosts, sizeof(*b.host_fd));
	b.host_sk = xcalloc(lab->nhosts, sizeof(*b.host_sk));
	b.bridge_idx = xcalloc(lab->nhosts, sizeof(*b.bridge_idx));
	for (size_t h = 0; h < lab->nhosts; h++)
		b.host_fd[h] = -1;
	b.have_ipv6 = access("/proc/sys/net/ipv6/conf", F_OK) == 0;
	if (topo_check(lab, o, err, errlen) < 0)
		goto out;
	for (size_t h = 0; h < lab->nhosts; h++)
		if (interrupted(err, errlen) < 0 || build_host(&b, h, err, errlen) < 0)
			goto out;
	if (lab->nhosts > 1 && build_fabric(&b, err, errlen) < 0)
		goto out;
	for (size_t i = 0; i < lab->pol->inv.nvms; i++)
		if (interrupted(err, errlen) < 0 || build_vm(&b, i, err, errlen) < 0)
			goto out;
	if (wait_ready(&b, err, errlen) < 0)
		goto out;
	ret = 0;
out:
	for (size_t h = 0; h < lab->nhosts; h++) {
		if (b.host_fd[h] >= 0)
			close(b.host_fd[h]);
		nlsk_close(b.host_sk[h]);
	}
	if (b.fabric_fd >= 0)
		close(b.fabric_fd);
	nlsk_close(b.fabric_sk);
	free(b.host_fd);
	free(b.host_sk);
	free(b.bridge_idx);
	return ret;
}

int lab_teardown(const char *labname, size_t *nns, char *err, size_t errlen)
{
	char *prefix = lab_ns_prefix(labname), *dir = lab_path(labname, NULL);
	struct strv names = { 0 };
	char msg[LAB_ERRLEN];
	int ret = 0;

	*nns = 0;
	/* Daemons first: a process left in a namespace keeps it alive. */
	if (daemon_stop_all(labname, err, errlen) < 0)
		ret = -1;
	if (netns_list(prefix, &names, ret ? msg : err, ret ? sizeof(msg) : errlen) < 0)
		ret = -1;
	for (size_t i = 0; i < names.n; i++) {
		if (netns_del(names.v[i], ret ? msg : err, ret ? sizeof(msg) : errlen) < 0)
			ret = -1;
		else
			(*nns)++;
	}
	if (rm_rf(dir, ret ? msg : err, ret ? sizeof(msg) : errlen) < 0)
		ret = -1;
	strv_free(&names);
	free(prefix);
	free(dir);
	return ret;
}
