/* The link-level half of moving a VM between hosts: its port (the host end
 * of its veth) goes to the other host's namespace and bridge while the VM's
 * eth0 stays as it is, and the VM is announced from its new place the way a
 * hypervisor does after a live migration, so that every bridge and VXLAN
 * FDB of the lab learns where its MAC now lives. */
#include "sim/lab.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <netinet/icmp6.h>
#include <netinet/if_ether.h>
#include <netinet/ip6.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/link.h>

/* Moves link ifname (by name) from sk's namespace into the namespace fd
 * tofd: one RTM_NEWLINK carrying IFLA_NET_NS_FD.  The kernel sets it down
 * on the way, and keeps its ifindex when the target has it free. */
static int link_move(struct nl_sock *sk, const char *ns, const char *ifname, int tofd,
		     const char *tons, char *err, size_t errlen)
{
	struct rtnl_link *orig = rtnl_link_alloc(), *chg = rtnl_link_alloc();
	int e;

	if (!orig || !chg)
		abort();
	rtnl_link_set_name(chg, ifname);
	rtnl_link_set_ns_fd(chg, tofd);
	e = rtnl_link_change(sk, orig, chg, 0);
	rtnl_link_put(orig);
	rtnl_link_put(chg);
	if (e == -NLE_OBJ_NOTFOUND || e == -NLE_NODEV)
		return errf(err, errlen, "%s: there is no link %s to move", ns, ifname);
	if (e == -NLE_EXIST)
		return errf(err, errlen, "cannot move %s from %s: %s has a link of that name already",
			    ifname, ns, tons);
	if (e < 0)
		return errf(err, errlen, "cannot move %s from %s to %s: %s", ifname, ns, tons,
			    nl_geterror(e));
	return 0;
}

int topo_move_port(struct lab *lab, size_t vm, size_t from, size_t to,
		   const struct topo_opts *o, char *err, size_t errlen)
{
	const struct vm *v;
	char *fns = NULL, *tns = NULL, why[LAB_ERRLEN], back[LAB_ERRLEN];
	struct nl_sock *fsk = NULL, *tsk = NULL;
	int ffd, tfd, ret = -1;

	if (vm >= lab->pol->inv.nvms || from >= lab->nhosts || to >= lab->nhosts)
		return errf(err, errlen, "lab %s has no VM %zu or no host %zu or %zu", lab->name,
			    vm, from, to);
	v = &lab->pol->inv.vms[vm];
	if (from == to)
		return errf(err, errlen, "VM %s: its port %s is on host %s already", v->name, v->port,
			    lab->hosts[to]);
	fns = lab_host_ns(lab, from);
	tns = lab_host_ns(lab, to);
	if ((ffd = lab_host_fd(lab, from, err, errlen)) < 0 ||
	    (tfd = lab_host_fd(lab, to, err, errlen)) < 0 ||
	    !(fsk = topo_nl_open(ffd, fns, err, errlen)) ||
	    !(tsk = topo_nl_open(tfd, tns, err, errlen)))
		goto out;
	if (link_move(fsk, fns, v->port, tfd, tns, why, sizeof(why)) < 0) {
		errf(err, errlen, "VM %s: %s", v->name, why);
		goto out;
	}
	if (topo_port_attach(tsk, tns, v->port, o->bridge, why, sizeof(why)) == 0) {
		ret = 0;
		goto out;
	}
	/* Half moved is the worst place to leave a VM: back where it was. */
	if (link_move(tsk, tns, v->port, ffd, fns, back, sizeof(back)) < 0 ||
	    topo_port_attach(fsk, fns, v->port, o->bridge, back, sizeof(back)) < 0)
		errf(err, errlen, "VM %s: %s; and putting its port back on host %s failed too: %s",
		     v->name, why, lab->hosts[from], back);
	else
		errf(err, errlen, "VM %s: %s (its port is back on host %s)", v->name, why,
		     lab->hosts[from]);
out:
	if (fsk)
		nl_socket_free(fsk);
	if (tsk)
		nl_socket_free(tsk);
	free(fns);
	free(tns);
	return ret;
}

/* ---- the announcement ---- */

#define ANNOUNCE_MAX 128  /* bytes: the largest frame below */

static const uint8_t mac_broadcast[ETH_ALEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t mac_all_nodes[ETH_ALEN] = { 0x33, 0x33, 0x00, 0x00, 0x00, 0x01 };

static size_t eth_header(uint8_t *buf, const uint8_t *dst, const uint8_t *src, uint16_t type)
{
	struct ether_header eh;

	memcpy(eh.ether_dhost, dst, ETH_ALEN);
	memcpy(eh.ether_shost, src, ETH_ALEN);
	eh.ether_type = htons(type);
	memcpy(buf, &eh, sizeof(eh));
	return sizeof(eh);
}

/* A gratuitous ARP request (sender and target both the address), as
 * Linux sends one for an address of its own; padded to ETH_ZLEN. */
static size_t garp_frame(uint8_t *buf, const uint8_t *mac, const uint8_t *ip4)
{
	struct ether_arp a;
	size_t len = eth_header(buf, mac_broadcast, mac, ETHERTYPE_ARP);

	memset(&a, 0, sizeof(a));
	a.arp_hrd = htons(ARPHRD_ETHER);
	a.arp_pro = htons(ETHERTYPE_IP);
	a.arp_hln = ETH_ALEN;
	a.arp_pln = 4;
	a.arp_op = htons(ARPOP_REQUEST);
	memcpy(a.arp_sha, mac, ETH_ALEN);
	memcpy(a.arp_spa, ip4, 4);
	memcpy(a.arp_tpa, ip4, 4);
	memcpy(buf + len, &a, sizeof(a));
	len += sizeof(a);
	memset(buf + len, 0, ETH_ZLEN - len);
	return ETH_ZLEN;
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

/* ICMPv6's checksum over the IPv6 pseudo-header and msg (RFC 8200 8.1). */
static uint16_t icmp6_csum(const struct in6_addr *src, const struct in6_addr *dst,
			   const uint8_t *msg, size_t len)
{
	uint8_t tail[8] = { 0 };
	uint32_t sum = 0;

	tail[0] = (uint8_t)(len >> 24);
	tail[1] = (uint8_t)(len >> 16);
	tail[2] = (uint8_t)(len >> 8);
	tail[3] = (uint8_t)len;
	tail[7] = IPPROTO_ICMPV6;
	sum = csum_add(sum, src->s6_addr, 16);
	sum = csum_add(sum, dst->s6_addr, 16);
	sum = csum_add(sum, tail, sizeof(tail));
	sum = csum_add(sum, msg, len);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons((uint16_t)~sum);
}

/* An unsolicited neighbour advertisement (RFC 4861 7.2.6) to all nodes:
 * override set, solicited clear, with the target link-layer address. */
static size_t una_frame(uint8_t *buf, const uint8_t *mac, const uint8_t *ip6)
{
	struct {
		struct nd_neighbor_advert na;
		struct nd_opt_hdr opt;
		uint8_t lladdr[ETH_ALEN];
	} __attribute__((packed)) m;
	struct ip6_hdr ip;
	size_t len = eth_header(buf, mac_all_nodes, mac, ETHERTYPE_IPV6);

	memset(&m, 0, sizeof(m));
	m.na.nd_na_type = ND_NEIGHBOR_ADVERT;
	m.na.nd_na_code = 0;
	m.na.nd_na_flags_reserved = ND_NA_FLAG_OVERRIDE;
	memcpy(&m.na.nd_na_target, ip6, 16);
	m.opt.nd_opt_type = ND_OPT_TARGET_LINKADDR;
	m.opt.nd_opt_len = 1;  /* in units of 8 bytes */
	memcpy(m.lladdr, mac, ETH_ALEN);

	memset(&ip, 0, sizeof(ip));
	ip.ip6_flow = htonl(6u << 28);
	ip.ip6_plen = htons(sizeof(m));
	ip.ip6_nxt = IPPROTO_ICMPV6;
	ip.ip6_hlim = 255;  /* receivers drop neighbour discovery that was routed */
	memcpy(&ip.ip6_src, ip6, 16);
	inet_pton(AF_INET6, "ff02::1", &ip.ip6_dst);
	m.na.nd_na_cksum = icmp6_csum(&ip.ip6_src, &ip.ip6_dst, (const uint8_t *)&m, sizeof(m));

	memcpy(buf + len, &ip, sizeof(ip));
	len += sizeof(ip);
	memcpy(buf + len, &m, sizeof(m));
	return len + sizeof(m);
}

int topo_announce(struct lab *lab, size_t vm, char *err, size_t errlen)
{
	const struct vm *v;
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_halen = ETH_ALEN };
	struct ifreq ifr = { 0 };
	uint8_t mac[ETH_ALEN], frame[ANNOUNCE_MAX];
	char *ns = NULL, shown[64];
	int fd, sock = -1, ret = -1;

	if (vm >= lab->pol->inv.nvms)
		return errf(err, errlen, "lab %s has no VM %zu", lab->name, vm);
	v = &lab->pol->inv.vms[vm];
	ns = lab_vm_ns(lab, vm);
	fd = lab_vm_fd(lab, vm, err, errlen);
	if (fd < 0 || netns_enter(fd, err, errlen) < 0)
		goto out;
	/* Protocol 0: a socket that only sends, and stays in the VM's
	 * namespace after we leave it. */
	sock = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	netns_leave(NULL, 0);
	if (sock < 0) {
		errf(err, errlen, "%s: cannot open a packet socket: %s", ns, strerror(errno));
		goto out;
	}
	/* The MAC eth0 has, which is the one the VM speaks with. */
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "eth0");
	if (ioctl(sock, SIOCGIFINDEX, &ifr) < 0) {
		errf(err, errlen, "%s: no eth0: %s", ns, strerror(errno));
		goto out;
	}
	sll.sll_ifindex = ifr.ifr_ifindex;
	if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0) {
		errf(err, errlen, "%s: cannot read the MAC of eth0: %s", ns, strerror(errno));
		goto out;
	}
	memcpy(mac, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
	for (size_t k = 0; k < v->naddrs; k++) {
		const struct dfw_addr *a = &v->addrs[k];
		bool v4 = a->family == AF_INET;
		size_t len = v4 ? garp_frame(frame, mac, a->a) : una_frame(frame, mac, a->a);

		sll.sll_protocol = htons(v4 ? ETH_P_ARP : ETH_P_IPV6);
		memcpy(sll.sll_addr, v4 ? mac_broadcast : mac_all_nodes, ETH_ALEN);
		if (sendto(sock, frame, len, 0, (const struct sockaddr *)&sll, sizeof(sll)) < 0) {
			addr_format(a, shown, sizeof(shown));
			errf(err, errlen, "%s: cannot announce %s out of eth0: %s", ns, shown,
			     strerror(errno));
			goto out;
		}
	}
	ret = 0;
out:
	if (sock >= 0)
		close(sock);
	free(ns);
	return ret;
}
