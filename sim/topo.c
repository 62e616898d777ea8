/* The lab's links, built over rtnetlink (libnl-route): a bridge per host
 * namespace and a veth per VM from the host's bridge to the VM's eth0.  With
 * several hosts (or when asked), a fabric namespace is the underlay: its
 * bridge holds LAB_UNDERLAY_GW_ADDR and a veth to each host, and with several
 * hosts each host bridge gets a VXLAN port (LAB_UPLINK) over it, flooding
 * to every other host by head-end replication, as a real overlay does.
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

#include <linux/neighbour.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>

#define UNDERLAY_IFINDEX 0x10000
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
	unsigned mtu;    /* of both ends, 0: the default */
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
	if (v->mtu) {
		rtnl_link_set_mtu(near, v->mtu);
		rtnl_link_set_mtu(far, v->mtu);
	}
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

/* Adds address a with prefix length plen to link ifname (ifindex). */
static int addr_add(struct nl_sock *sk, const char *ns, int ifindex, const char *ifname,
		    const struct dfw_addr *a, unsigned plen, char *err, size_t errlen)
{
	struct rtnl_addr *ra = rtnl_addr_alloc();
	bool v4 = a->family == AF_INET;
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
		return errf(err, errlen, "%s: cannot add address %s/%u to %s: %s", ns, shown,
			    plen, ifname, nl_geterror(e));
	}
	return 0;
}

/* bridge-nf-call-ip{,6}tables=1 in the current namespace: nftables' ip/ip6/inet
 * hooks then see bridged traffic too, as on a real hypervisor. */
static int host_sysctls(const char *ns, char *err, size_t errlen)
{
	/* Not loaded for the user: loading br_netfilter turns bridge-nf-call-
	 * iptables on in the main namespace too, for every bridge there. */
	if (access("/proc/sys/" BRNF_IPT, F_OK) < 0)
		return errf(err, errlen,
			    "%s: /proc/sys/net/bridge is missing: the br_netfilter module is not loaded. dfw-lab does not load kernel modules (this one changes how the main namespace's bridges filter); load it (modprobe br_netfilter) and retry",
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
	bool underlay;      /* the fabric and each host's underlay veth */
	bool overlay;       /* each host's VXLAN port (several hosts) */
	bool have_ipv6;
	struct dfw_addr *nets; /* the VMs' subnets, /24 and /64, each once */
	size_t nnets;
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

/* An on-link route to a/plen over link ifindex (no gateway, no address
 * of its own needed). */
static int route_add(struct nl_sock *sk, const char *ns, int ifindex, const struct dfw_addr *a,
		     unsigned plen, char *err, size_t errlen)
{
	struct rtnl_route *r = rtnl_route_alloc();
	struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
	bool v4 = a->family == AF_INET;
	struct nl_addr *dst = nl_addr_build(a->family, a->a, v4 ? 4 : 16);
	char shown[64];
	int e;

	if (!r || !nh || !dst)
		abort();
	nl_addr_set_prefixlen(dst, (int)plen);
	rtnl_route_set_family(r, a->family);
	rtnl_route_set_dst(r, dst);
	rtnl_route_set_scope(r, RT_SCOPE_LINK);
	rtnl_route_set_protocol(r, RTPROT_STATIC);
	rtnl_route_nh_set_ifindex(nh, ifindex);
	rtnl_route_add_nexthop(r, nh);
	e = rtnl_route_add(sk, r, NLM_F_CREATE | NLM_F_REPLACE);
	nl_addr_put(dst);
	rtnl_route_put(r);
	if (e < 0) {
		addr_format(a, shown, sizeof(shown));
		return errf(err, errlen, "%s: cannot add a route to %s/%u: %s", ns, shown, plen,
			    nl_geterror(e));
	}
	return 0;
}

static int build_host(struct build *b, size_t h, char *err, size_t errlen)
{
	char *ns = lab_host_ns(b->lab, h);
	int ret = bridge_ns(ns, b->o->bridge, true, &b->host_fd[h], &b->host_sk[h],
			    &b->bridge_idx[h], err, errlen);

	/* A route to every VM over the bridge: what the kernel's reject needs
	 * to send its TCP reset or ICMP error back to a bridged client
	 * (docs/DATAPLANE.md). */
	for (size_t i = 0; ret == 0 && i < b->nnets; i++)
		ret = route_add(b->host_sk[h], ns, b->bridge_idx[h], &b->nets[i],
				b->nets[i].plen, err, errlen);
	free(ns);
	return ret;
}

/* LAB_UNDERLAY_NET ".n" */
static void underlay_addr(unsigned n, struct dfw_addr *a)
{
	char s[32];
	const char *why;

	snprintf(s, sizeof(s), LAB_UNDERLAY_NET ".%u", n);
	if (addr_parse(s, a, &why) < 0)
		abort();
}

static struct nl_addr *nl_addr4(const struct dfw_addr *a)
{
	struct nl_addr *n = nl_addr_build(AF_INET, a->a, 4);

	if (!n)
		abort();
	return n;
}

/* The host's VXLAN port LAB_UPLINK: VNI LAB_VXLAN_VNI over the underlay
 * from local, learning where remote MACs live from what arrives, an up port
 * of the host's bridge. */
static int vxlan_add(struct nl_sock *sk, const char *ns, const struct dfw_addr *local,
		     int bridge, int *ifindex, char *err, size_t errlen)
{
	struct rtnl_link *l = rtnl_link_vxlan_alloc();
	struct nl_addr *src = nl_addr4(local);
	int e;

	if (!l)
		abort();
	rtnl_link_set_name(l, LAB_UPLINK);
	rtnl_link_set_mtu(l, LAB_OVERLAY_MTU);
	rtnl_link_set_master(l, bridge);
	rtnl_link_set_flags(l, IFF_UP);
	e = rtnl_link_vxlan_set_id(l, LAB_VXLAN_VNI);
	if (e >= 0)
		e = rtnl_link_vxlan_set_port(l, LAB_VXLAN_PORT);
	if (e >= 0)
		e = rtnl_link_vxlan_set_local(l, src);
	if (e >= 0)
		e = rtnl_link_vxlan_set_link(l, UNDERLAY_IFINDEX);
	if (e >= 0)
		e = rtnl_link_vxlan_set_learning(l, 1);
	if (e >= 0)
		e = rtnl_link_add(sk, l, NLM_F_CREATE | NLM_F_EXCL);
	nl_addr_put(src);
	rtnl_link_put(l);
	if (e < 0)
		return errf(err, errlen, "%s: cannot create VXLAN device %s (VNI %d over %s): %s", ns,
			    LAB_UPLINK, LAB_VXLAN_VNI, LAB_UNDERLAY, nl_geterror(e));
	return link_index(sk, ns, LAB_UPLINK, ifindex, err, errlen);
}

/* Head-end replication: each all-zero-MAC entry of a VXLAN device's FDB
 * (appended, one per remote VTEP) gets a copy of every broadcast, multicast
 * and unknown-unicast frame, so that ARP and neighbour discovery reach all
 * hosts without underlay multicast. */
static int flood_add(struct nl_sock *sk, const char *ns, int vxlan, const struct dfw_addr *remote,
		     char *err, size_t errlen)
{
	static const uint8_t zero[6];
	struct rtnl_neigh *n = rtnl_neigh_alloc();
	struct nl_addr *mac = nl_addr_build(AF_LLC, zero, sizeof(zero)), *dst = nl_addr4(remote);
	char shown[64];
	int e;

	if (!n || !mac)
		abort();
	rtnl_neigh_set_ifindex(n, vxlan);
	/* The destination first: it sets the family to its own, and a
	 * family set before would have to match it. */
	e = rtnl_neigh_set_dst(n, dst);
	rtnl_neigh_set_family(n, AF_BRIDGE);
	rtnl_neigh_set_lladdr(n, mac);
	rtnl_neigh_set_state(n, NUD_PERMANENT);
	rtnl_neigh_set_flags(n, NTF_SELF);
	if (e >= 0)
		e = rtnl_neigh_add(sk, n, NLM_F_CREATE | NLM_F_APPEND);
	nl_addr_put(mac);
	nl_addr_put(dst);
	rtnl_neigh_put(n);
	if (e < 0) {
		addr_format(remote, shown, sizeof(shown));
		return errf(err, errlen, "%s: cannot add the flood entry to %s on %s: %s", ns, shown,
			    LAB_UPLINK, nl_geterror(e));
	}
	return 0;
}

/* Host h's side of the underlay: its veth LAB_UNDERLAY, a port of the
 * fabric's bridge, with address LAB_UNDERLAY_NET ".(h+1)"; with several
 * hosts, its VXLAN port over it, flooding to every other host. */
static int build_underlay(struct build *b, size_t h, const char *fns, char *err, size_t errlen)
{
	const char *host = b->lab->hosts[h];
	char *hns = lab_host_ns(b->lab, h);
	char port[IFNAMSIZ];
	/* A veth end whose ifindex equals its peer's gets its carrier
	 * changes handled "not urgent", up to a second late (linkwatch), and
	 * the hosts' underlay ends and the fabric ports would both count from
	 * 3: an ifindex no fabric port has avoids that. */
	struct veth_spec v = {
		.near = LAB_UNDERLAY, .near_fd = b->host_fd[h], .near_index = UNDERLAY_IFINDEX,
		.far = port, .far_fd = b->fabric_fd, .mtu = LAB_UNDERLAY_MTU,
	};
	struct dfw_addr local, remote;
	int vxlan, ret = -1;

	/* The fabric's port is named after its host when that fits. */
	if (strlen(host) < IFNAMSIZ && strcmp(host, LAB_FABRIC_BRIDGE) && strcmp(host, "lo"))
		snprintf(port, sizeof(port), "%s", host);
	else
		snprintf(port, sizeof(port), "h%u", (unsigned)h);
	underlay_addr((unsigned)h + 1, &local);
	if (veth_add(b->fabric_sk, &v, hns, err, errlen) < 0 ||
	    link_set_master(b->fabric_sk, fns, port, b->fabric_br, LAB_FABRIC_BRIDGE, err,
			    errlen) < 0 ||
	    addr_add(b->host_sk[h], hns, UNDERLAY_IFINDEX, LAB_UNDERLAY, &local, LAB_UNDERLAY_PLEN,
		     err, errlen) < 0)
		goto out;
	if (b->overlay) {
		if (vxlan_add(b->host_sk[h], hns, &local, b->bridge_idx[h], &vxlan, err, errlen) < 0)
			goto out;
		for (size_t k = 0; k < b->lab->nhosts; k++) {
			if (k == h)
				continue;
			underlay_addr((unsigned)k + 1, &remote);
			if (flood_add(b->host_sk[h], hns, vxlan, &remote, err, errlen) < 0)
				goto out;
		}
	}
	ret = 0;
out:
	free(hns);
	return ret;
}

/* The underlay: the fabric namespace's bridge, holding LAB_UNDERLAY_GW_ADDR
 * (where the lab's services listen), with every host on it. */
static int build_fabric(struct build *b, char *err, size_t errlen)
{
	char *ns = lab_fabric_ns(b->lab->name);
	struct dfw_addr gw;
	int ret = -1;

	underlay_addr(LAB_UNDERLAY_GW, &gw);
	if (bridge_ns(ns, LAB_FABRIC_BRIDGE, false, &b->fabric_fd, &b->fabric_sk, &b->fabric_br,
		      err, errlen) < 0 ||
	    addr_add(b->fabric_sk, ns, b->fabric_br, LAB_FABRIC_BRIDGE, &gw, LAB_UNDERLAY_PLEN, err,
		     errlen) < 0)
		goto out;
	for (size_t h = 0; h < b->lab->nhosts; h++)
		if (interrupted(err, errlen) < 0 || build_underlay(b, h, ns, err, errlen) < 0)
			goto out;
	ret = 0;
out:
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
	/* The lab's subnet: every VM of one /24 (/64) shares its bridges. */
	for (size_t k = 0; k < vm->naddrs; k++)
		if (addr_add(sk, ns, ifindex, "eth0", &vm->addrs[k],
			     vm->addrs[k].family == AF_INET ? 24 : 64, err, errlen) < 0)
			goto out;
	/* The lab has no router: the VMs of other subnets are on the same
	 * wire, so they are reached on-link. */
	for (size_t k = 0; k < b->nnets; k++) {
		bool own = false;

		for (size_t j = 0; j < vm->naddrs && !own; j++)
			own = addr_contains(&b->nets[k], &vm->addrs[j]);
		if (!own && (b->nets[k].family == AF_INET || b->have_ipv6) &&
		    route_add(sk, ns, ifindex, &b->nets[k], b->nets[k].plen, err, errlen) < 0)
			goto out;
	}
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

/* Whether link l passes frames, as a bridge asks of its ports
 * (netif_oper_up): up, and operationally up; a VXLAN device, which has no
 * carrier to report, stays "unknown" when up. */
static bool link_passes(struct rtnl_link *l)
{
	const char *type = rtnl_link_get_type(l);
	uint8_t op = rtnl_link_get_operstate(l);

	if (!(rtnl_link_get_flags(l) & IFF_UP))
		return false;
	return op == IF_OPER_UP || (op == IF_OPER_UNKNOWN && type && !strcmp(type, "vxlan"));
}

/* Counts the links of the socket's namespace that do not pass frames yet:
 * the bridge ports (when ports) and the links named in need (a missing one
 * counts too); names one of them in *which. */
static int links_down(struct nl_sock *sk, const char *ns, bool ports, const char *const *need,
		      size_t nneed, size_t *down, char *which, size_t wlen, char *err,
		      size_t errlen)
{
	struct nl_cache *cache = NULL;
	struct nl_object *o;
	int e = rtnl_link_alloc_cache(sk, AF_UNSPEC, &cache);

	if (e < 0)
		return errf(err, errlen, "%s: cannot list links: %s", ns, nl_geterror(e));
	*down = 0;
	for (o = ports ? nl_cache_get_first(cache) : NULL; o; o = nl_cache_get_next(o)) {
		struct rtnl_link *l = (struct rtnl_link *)o;

		const char *name = rtnl_link_get_name(l);
		bool needed = false;

		for (size_t k = 0; k < nneed; k++)
			needed |= !strcmp(name, need[k]);
		/* The needed ones are counted below. */
		if (!needed && rtnl_link_get_master(l) > 0 && !link_passes(l) && !(*down)++)
			snprintf(which, wlen, "%s", name);
	}
	for (size_t k = 0; k < nneed; k++) {
		struct rtnl_link *l = rtnl_link_get_by_name(cache, need[k]);

		if ((!l || !link_passes(l)) && !(*down)++)
			snprintf(which, wlen, "%s%s", need[k], l ? "" : " (missing)");
		if (l)
			rtnl_link_put(l);
	}
	nl_cache_free(cache);
	return 0;
}

/* Waits until links_down() finds none, or deadline (now_ns()). */
static int links_wait(struct nl_sock *sk, const char *ns, bool ports, const char *const *need,
		      size_t nneed, uint64_t deadline, char *err, size_t errlen)
{
	char which[IFNAMSIZ + 16] = "";
	size_t down = 0;
	int ret;

	while ((ret = links_down(sk, ns, ports, need, nneed, &down, which, sizeof(which), err,
				 errlen)) == 0 &&
	       down && now_ns() < deadline && !lab_interrupted) {
		struct timespec ts = { 0, 10000000 };

		nanosleep(&ts, NULL);
	}
	if (ret == 0 && down)
		ret = errf(err, errlen, "%s: %zu link%s (%s...) still not up after %d ms", ns, down,
			   down == 1 ? "" : "s", which, READY_TIMEOUT_MS);
	return ret;
}

/* Waits until every bridge port, underlay and VXLAN device is up, so that
 * `up` returns a lab that forwards at once. */
static int wait_ready(struct build *b, char *err, size_t errlen)
{
	static const char *const host_links[] = { LAB_UNDERLAY, LAB_UPLINK };
	size_t n = b->lab->nhosts + (b->fabric_sk ? 1 : 0);
	size_t nneed = b->overlay ? 2 : b->underlay ? 1 : 0;
	uint64_t deadline = now_ns() + READY_TIMEOUT_MS * 1000000ull;

	for (size_t k = 0; k < n; k++) {
		bool host = k < b->lab->nhosts;
		char *ns = host ? lab_host_ns(b->lab, k) : lab_fabric_ns(b->lab->name);
		int ret = links_wait(host ? b->host_sk[k] : b->fabric_sk, ns, true, host_links,
				     host ? nneed : 0, deadline, err, errlen);

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
	    !strcmp(o->bridge, "lo") || !strcmp(o->bridge, LAB_UPLINK) ||
	    !strcmp(o->bridge, LAB_UNDERLAY))
		return errf(err, errlen, "bridge name '%s' is not a usable interface name (at most %d characters)",
			    o->bridge, IFNAMSIZ - 1);
	if (lab->nhosts > LAB_MAX_HOSTS)
		return errf(err, errlen, "%zu hosts: the lab's underlay, " LAB_UNDERLAY_NET
			    ".0/%d, has addresses for at most %d",
			    lab->nhosts, LAB_UNDERLAY_PLEN, LAB_MAX_HOSTS);
	for (size_t h = 0; h < lab->nhosts; h++)
		if (lab_ident_check("host", lab->hosts[h], err, errlen) < 0)
			return -1;
	if (daemon_files_check(lab->hosts, lab->nhosts, err, errlen) < 0)
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
		    !strcmp(vm->port, LAB_UNDERLAY) || !strcmp(vm->port, "lo"))
			return errf(err, errlen, "VM %s: port '%s' is a name the lab uses itself on host %s",
				    vm->name, vm->port, vm->host);
	}
	return 0;
}

/* The VMs' subnets (each address's /24 or /64), each once. */
static void collect_nets(struct build *b)
{
	const struct inventory *inv = &b->lab->pol->inv;

	for (size_t i = 0; i < inv->nvms; i++) {
		for (size_t k = 0; k < inv->vms[i].naddrs; k++) {
			struct dfw_addr n = inv->vms[i].addrs[k];
			size_t j;

			if (n.family == AF_INET6 && !b->have_ipv6)
				continue;
			n.plen = n.family == AF_INET ? 24 : 64;
			memset(n.a + n.plen / 8, 0, sizeof(n.a) - n.plen / 8);
			for (j = 0; j < b->nnets && addr_cmp(&b->nets[j], &n); j++)
				;
			if (j == b->nnets) {
				b->nets = xrealloc(b->nets, (b->nnets + 1) * sizeof(*b->nets));
				b->nets[b->nnets++] = n;
			}
		}
	}
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
	b.underlay = lab->nhosts > 1 || o->fabric;
	b.overlay = lab->nhosts > 1;
	collect_nets(&b);
	if (topo_check(lab, o, err, errlen) < 0)
		goto out;
	for (size_t h = 0; h < lab->nhosts; h++)
		if (interrupted(err, errlen) < 0 || build_host(&b, h, err, errlen) < 0)
			goto out;
	if (b.underlay && build_fabric(&b, err, errlen) < 0)
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
	free(b.nets);
	return ret;
}

struct nl_sock *topo_nl_open(int nsfd, const char *ns, char *err, size_t errlen)
{
	struct nl_sock *sk;

	if (netns_enter(nsfd, err, errlen) < 0)
		return NULL;
	sk = nl_open(ns, err, errlen);
	netns_leave(NULL, 0);
	return sk;
}

int topo_port_attach(struct nl_sock *sk, const char *ns, const char *port, const char *bridge,
		     char *err, size_t errlen)
{
	int br;

	if (link_index(sk, ns, bridge, &br, err, errlen) < 0 ||
	    link_set_master(sk, ns, port, br, bridge, err, errlen) < 0)
		return -1;
	return links_wait(sk, ns, false, &port, 1, now_ns() + READY_TIMEOUT_MS * 1000000ull, err,
			  errlen);
}

int lab_teardown(const char *labname, size_t *nns, char *err, size_t errlen)
{
	char *prefix = lab_ns_prefix(labname), *dir = lab_path(labname, NULL);
	struct strv names = { 0 };
	char msg[LAB_ERRLEN];
	bool stuck = false;
	int ret = 0;

	*nns = 0;
	/* Daemons first: a process left in a namespace keeps it alive. */
	if (daemon_stop_all(labname, err, errlen) < 0) {
		ret = -1;
		stuck = true;
	}
	if (netns_list(prefix, &names, ret ? msg : err, ret ? sizeof(msg) : errlen) < 0)
		ret = -1;
	for (size_t i = 0; i < names.n; i++) {
		if (netns_del(names.v[i], ret ? msg : err, ret ? sizeof(msg) : errlen) < 0)
			ret = -1;
		else
			(*nns)++;
	}
	/* A daemon that would not stop keeps the state dir: its pidfile is how
	 * the next `dfw-lab down` finds it. */
	if (!stuck && rm_rf(dir, ret ? msg : err, ret ? sizeof(msg) : errlen) < 0)
		ret = -1;
	strv_free(&names);
	free(prefix);
	free(dir);
	return ret;
}
