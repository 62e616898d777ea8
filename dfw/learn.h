/* Address learning, the packet half: the frames that the bridge table
 * copies to nflog group DFW_NFLOG_LEARN for the ports of VMs with
 * `addresses = learn` (ARP, IPv6 neighbour discovery and DHCP), read down
 * to the address a guest uses and the port it sits behind.  Deciding
 * whether to lock the address is agent_learn()'s (agent.h).
 *
 * What counts:
 *  - ARP (request, reply, gratuitous) from the guest: the sender's IPv4
 *    address, unless it is 0.0.0.0 (an ARP probe, RFC 5227);
 *  - IPv6 neighbour solicitation from the guest with the unspecified
 *    source (duplicate address detection): the target address;
 *  - IPv6 neighbour advertisement from the guest: the target address;
 *  - a DHCPACK towards the guest (UDP 67 -> 68, option 53 = 5): yiaddr,
 *    when the frame is addressed to the client's own MAC (chaddr).  A
 *    broadcast ACK is flooded to every port, and the copy at each port
 *    would claim the address for that port's guest: it is not used (the
 *    client's next ARP announces the address anyway).  Whether its sender
 *    may answer DHCP is agent_learn()'s to decide.
 * Anything else, such as a neighbour solicitation with a source address
 * or a DHCP request, teaches nothing. */
#ifndef DFW_LEARN_H
#define DFW_LEARN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "dfw/nflog.h"

/* What dfwd asks the kernel to copy of each learn frame; a rule's own
 * snaplen can only shorten it (DHCP options may come late). */
#define LEARN_COPY_LEN 1500

enum learn_dir {
	LEARN_NONE = 0,
	LEARN_FROM_GUEST = 1, /* the guest sent it: its port is the way in */
	LEARN_TO_GUEST = 2,   /* sent to the guest: its port is the way out */
};

/* Parses one frame: pkt from its network header (len bytes), hwproto its
 * ethertype (0: unknown, then only IP is recognized), eth its Ethernet
 * header (may be NULL; a DHCPACK needs it).  Returns a learn_dir with addr
 * set, LEARN_NONE when it teaches nothing, or -1 when it is malformed or
 * truncated before what it would teach. */
int learn_parse_frame(const uint8_t *pkt, size_t len, uint16_t hwproto, const uint8_t *eth,
		      size_t ethlen, struct dfw_addr *addr);

/* What one learn frame teaches. */
struct learn_seen {
	char ifname[16];      /* the guest's port */
	struct dfw_addr addr; /* the address it uses */
	bool to_guest;        /* a DHCPACK to it (else the guest's own frame) */
	uint8_t client[6];    /* to_guest: the client MAC (chaddr) it is for */
	uint8_t server[6];    /* to_guest: the MAC it comes from */
	uint32_t from;        /* to_guest: the vNIC id it came in by (the mark) */
};

/* learn_parse_frame() on an nflog packet (nflog_read_frames), plus the
 * guest's port.  Returns 1 when *seen is set, 0 when the frame teaches
 * nothing, -1 when it is malformed or its port is unknown. */
int learn_parse(const struct nflog_pkt *p, struct learn_seen *seen);

#endif
