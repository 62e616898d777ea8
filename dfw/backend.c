/* nf_tables batches through libnftnl + libmnl, and conntrack removal through
 * ctnetlink.  One plan or diff = one batch = one kernel transaction. */
#include "dfw/backend.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/gen.h>
#include <libnftnl/object.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter_bridge.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "dfw/layout.h"

/* nft's datatype numbers, so `nft list ruleset` shows our sets readably. */
enum {
	TYPE_VERDICT = 1, TYPE_INTEGER = 4, TYPE_IPADDR = 7, TYPE_IP6ADDR = 8, TYPE_ETHERADDR = 9,
	TYPE_INET_SERVICE = 13,
	TYPE_MARK = 19, TYPE_CLASSID = 23, TYPE_IFNAME = 41,
};
#define CONCAT(a, b) (((a) << 6) | (b))

#define ELEMS_PER_MSG 512
#define REQ_BUF_SIZE 8192 /* one small request: dumps, deletes */
#define BATCH_KEEP (1024 * 1024) /* batch buffer kept between batches */
/* One receive size for every read: the kernel sizes dump messages after the
 * largest buffer a socket has read with, so a smaller one would truncate. */
#define RBUF_SIZE (256 * 1024)
/* The netlink socket's receive buffer, and how long an answer may take. */
#define RCVBUF_BYTES (4 << 20)
#define ANSWER_TIMEOUT_S 30
#define MSG_ROOM 65536

/* A rule being written into the batch. */
struct xrule {
	struct nlmsghdr *nlh;
	struct nlattr *exprs; /* NFTA_RULE_EXPRESSIONS, open */
};

struct backend {
	struct mnl_socket *nl;
	char table[64];
	uint32_t seq;
	uint32_t set_id;
	char *rbuf; /* RBUF_SIZE */
	/* The batch being built. */
	char *buf;
	size_t len, cap;
	struct xrule rule; /* the rule being written (rule_new) */
	/* seq -> where the message is in buf, to explain a kernel error. */
	struct { uint32_t seq; size_t off; } *msgs;
	size_t nmsgs, capmsgs;
	char what[160]; /* msg_what's answer */
	/* The tables it loads are owned by its socket (backend_own_tables);
	 * own_seq: the messages that ask so in the batch being built, and
	 * own_refused: the kernel refused one of them (it predates
	 * NFT_TABLE_F_PERSIST). */
	bool own;
	uint32_t own_seq[2];
	bool own_refused;
};

/* A netfilter netlink socket as every exchange here wants it, or NULL. */
static struct mnl_socket *nl_open(void)
{
	struct mnl_socket *nl = mnl_socket_open(NETLINK_NETFILTER);
	struct timeval tmo = { ANSWER_TIMEOUT_S, 0 };
	int one = 1, rcvbuf = RCVBUF_BYTES;

	if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		if (nl)
			mnl_socket_close(nl);
		return NULL;
	}
	/* Extended ACKs carry the kernel's own words on errors; capped ACKs
	 * leave out the failed message, which for a refused batch of
	 * thousands of rules would overrun the receive buffer (ENOBUFS). */
	mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, &one, sizeof(one));
	mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, &one, sizeof(one));
	setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
	/* The kernel answers at once; an answer it dropped must not hang us. */
	setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo));
	return nl;
}

/* Reads the next answers.  After a failed read (an overrun drops
 * answers; a timeout leaves them to come) the socket's state is unknown:
 * answers to this exchange could meet the next one.  It is replaced by a
 * fresh one, and the caller reports the outcome as unknown. */
static ssize_t nl_recv(struct backend *b, void *buf, size_t len)
{
	ssize_t n = mnl_socket_recvfrom(b->nl, buf, len);
	struct mnl_socket *fresh;
	int saved = errno;

	if (n >= 0)
		return n;
	if ((fresh = nl_open())) {
		mnl_socket_close(b->nl);
		b->nl = fresh;
	}
	errno = saved;
	return -1;
}

struct backend *backend_open(const char *table, char *err, size_t errlen)
{
	struct backend *b = xcalloc(1, sizeof(*b));

	snprintf(b->table, sizeof(b->table), "%s", table);
	b->nl = nl_open();
	if (!b->nl) {
		snprintf(err, errlen, "netfilter netlink socket: %s", strerror(errno));
		backend_close(b);
		return NULL;
	}
	b->seq = (uint32_t)time(NULL);
	b->rbuf = xmalloc(RBUF_SIZE);
	return b;
}

void backend_close(struct backend *b)
{
	if (!b)
		return;
	if (b->nl)
		mnl_socket_close(b->nl);
	free(b->buf);
	free(b->rbuf);
	free(b->msgs);
	free(b);
}

/* --- batch building -------------------------------------------------------- */

/* Room for one more message.  New memory is zeroed once, so alignment
 * padding the builders skip never carries stale bytes to the kernel. */
static char *msg_room(struct backend *b)
{
	size_t old = b->cap;

	grow((void **)&b->buf, &b->cap, b->len + MSG_ROOM, 1);
	if (b->cap > old)
		memset(b->buf + old, 0, b->cap - old);
	return b->buf + b->len;
}

static void msg_done(struct backend *b, struct nlmsghdr *nlh)
{
	grow((void **)&b->msgs, &b->capmsgs, b->nmsgs + 1, sizeof(*b->msgs));
	b->msgs[b->nmsgs].seq = nlh->nlmsg_seq;
	b->msgs[b->nmsgs].off = (size_t)((char *)nlh - b->buf);
	b->nmsgs++;
	b->len += MNL_ALIGN(nlh->nlmsg_len);
}

static struct nlmsghdr *msg_hdr(struct backend *b, uint16_t type, uint16_t family,
				uint16_t flags)
{
	return nftnl_nlmsg_build_hdr(msg_room(b), type, family, flags, b->seq++);
}

static void batch_begin(struct backend *b)
{
	struct nlmsghdr *nlh;

	b->len = 0;
	b->nmsgs = 0;
	nlh = nftnl_batch_begin(msg_room(b), b->seq++);
	msg_done(b, nlh);
}

/* Linux 6.9's; older uapi headers lack it. */
#ifndef NFT_TABLE_F_PERSIST
#define NFT_TABLE_F_PERSIST 0x4
#endif

/* A table message; with owned, the new table belongs to this socket and
 * outlives it (NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST): while it is open,
 * no other process can change or delete the table, `nft flush ruleset`
 * included; once it closes (dfwd stopped or died) the table stays, owned
 * by no one. */
static void table_msg_owned(struct backend *b, uint16_t family, uint16_t type, bool owned)
{
	struct nftnl_table *t = nftnl_table_alloc();
	struct nlmsghdr *nlh;

	nftnl_table_set_str(t, NFTNL_TABLE_NAME, b->table);
	nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, family);
	if (owned) {
		nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST);
		b->own_seq[family == NFPROTO_INET] = b->seq;
	}
	nlh = msg_hdr(b, type, family, type == NFT_MSG_NEWTABLE ? NLM_F_CREATE : 0);
	nftnl_table_nlmsg_build_payload(nlh, t);
	msg_done(b, nlh);
	nftnl_table_free(t);
}

static void table_msg(struct backend *b, uint16_t family, uint16_t type)
{
	table_msg_owned(b, family, type, false);
}

static void chain_msg(struct backend *b, uint16_t family, const char *name, int hook,
		      int prio, uint16_t type)
{
	struct nftnl_chain *c = nftnl_chain_alloc();
	struct nlmsghdr *nlh;

	nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, b->table);
	nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_FAMILY, family);
	if (hook >= 0) {
		nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, (uint32_t)hook);
		nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, prio);
		nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, "filter");
		nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);
	}
	nlh = msg_hdr(b, type, family, type == NFT_MSG_NEWCHAIN ? NLM_F_CREATE : 0);
	nftnl_chain_nlmsg_build_payload(nlh, c);
	msg_done(b, nlh);
	nftnl_chain_free(c);
}

/* nft's byte orders, recorded in set userdata so that `nft list` prints
 * keys and data the way they are stored. */
enum { BO_HOST = 1, BO_BIG = 2 };

struct set_spec {
	const char *name;
	uint16_t family;
	uint32_t flags;
	uint32_t key_type, key_len;
	uint32_t data_type, data_len; /* maps */
	uint32_t key_order, data_order;
	bool nd_target_key; /* typeof iifname . DFW_ND_TARGET_NFT (port_nd6) */
	uint32_t size;      /* pset.size; 0: none */
};

/* How nft records a set's `typeof` in its userdata (nft's own numbers, from
 * its expression.c, meta.c and payload.c; read back from the set nft 1.0.6
 * makes for `typeof iifname . @th,64,128`).  Without it nft would list the
 * key as "ifname . integer", which it cannot read back. */
enum {
	NFT_EXPR_PAYLOAD = 7, NFT_EXPR_META = 9, NFT_EXPR_CONCAT = 13,
	NFT_UD_SUB_TYPE = 0, NFT_UD_SUB_DATA = 1, /* in a concatenation's item i (nest type i) */
	NFT_UD_META_KEY = 0,
	NFT_UD_PAYLOAD_DESC = 0, NFT_UD_PAYLOAD_TYPE, NFT_UD_PAYLOAD_BASE, NFT_UD_PAYLOAD_OFFSET,
	NFT_UD_PAYLOAD_LEN,
	NFT_PROTO_BASE_TRANSPORT = 3,
};

/* The typeof of DFW_SET_PORT_ND6: iifname . @th,64,128. */
static void nd_target_typeof(struct nftnl_udata_buf *ud)
{
	struct nftnl_udata *key, *data, *item, *sub;

	key = nftnl_udata_nest_start(ud, NFTNL_UDATA_SET_KEY_TYPEOF);
	nftnl_udata_put_u32(ud, NFTNL_UDATA_SET_TYPEOF_EXPR, NFT_EXPR_CONCAT);
	data = nftnl_udata_nest_start(ud, NFTNL_UDATA_SET_TYPEOF_DATA);
	item = nftnl_udata_nest_start(ud, 0);
	nftnl_udata_put_u32(ud, NFT_UD_SUB_TYPE, NFT_EXPR_META);
	sub = nftnl_udata_nest_start(ud, NFT_UD_SUB_DATA);
	nftnl_udata_put_u32(ud, NFT_UD_META_KEY, NFT_META_IIFNAME);
	nftnl_udata_nest_end(ud, sub);
	nftnl_udata_nest_end(ud, item);
	item = nftnl_udata_nest_start(ud, 1);
	nftnl_udata_put_u32(ud, NFT_UD_SUB_TYPE, NFT_EXPR_PAYLOAD);
	sub = nftnl_udata_nest_start(ud, NFT_UD_SUB_DATA);
	nftnl_udata_put_u32(ud, NFT_UD_PAYLOAD_DESC, 0); /* raw */
	nftnl_udata_put_u32(ud, NFT_UD_PAYLOAD_TYPE, 0);
	nftnl_udata_put_u32(ud, NFT_UD_PAYLOAD_BASE, NFT_PROTO_BASE_TRANSPORT);
	nftnl_udata_put_u32(ud, NFT_UD_PAYLOAD_OFFSET, DFW_ND_TARGET_OFF * 8);
	nftnl_udata_put_u32(ud, NFT_UD_PAYLOAD_LEN, 16 * 8);
	nftnl_udata_nest_end(ud, sub);
	nftnl_udata_nest_end(ud, item);
	nftnl_udata_nest_end(ud, data);
	nftnl_udata_nest_end(ud, key);
}

static void set_msg(struct backend *b, const struct set_spec *s, uint16_t type)
{
	struct nftnl_set *set = nftnl_set_alloc();
	struct nlmsghdr *nlh;

	nftnl_set_set_str(set, NFTNL_SET_TABLE, b->table);
	nftnl_set_set_str(set, NFTNL_SET_NAME, s->name);
	nftnl_set_set_u32(set, NFTNL_SET_FAMILY, s->family);
	if (type == NFT_MSG_NEWSET) {
		nftnl_set_set_u32(set, NFTNL_SET_ID, ++b->set_id);
		nftnl_set_set_u32(set, NFTNL_SET_FLAGS, s->flags);
		nftnl_set_set_u32(set, NFTNL_SET_KEY_TYPE, s->key_type);
		nftnl_set_set_u32(set, NFTNL_SET_KEY_LEN, s->key_len);
		if (s->size)
			nftnl_set_set_u32(set, NFTNL_SET_DESC_SIZE, s->size);
		if (s->flags & NFT_SET_MAP) {
			nftnl_set_set_u32(set, NFTNL_SET_DATA_TYPE, s->data_type);
			nftnl_set_set_u32(set, NFTNL_SET_DATA_LEN, s->data_len);
		}
		{
			struct nftnl_udata_buf *ud = nftnl_udata_buf_alloc(128);

			nftnl_udata_put_u32(ud, NFTNL_UDATA_SET_KEYBYTEORDER, s->key_order);
			if (s->data_order)
				nftnl_udata_put_u32(ud, NFTNL_UDATA_SET_DATABYTEORDER, s->data_order);
			if (s->nd_target_key)
				nd_target_typeof(ud);
			nftnl_set_set_data(set, NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud),
					   nftnl_udata_buf_len(ud));
			nftnl_udata_buf_free(ud);
		}
	}
	nlh = msg_hdr(b, type, s->family, type == NFT_MSG_NEWSET ? NLM_F_CREATE : 0);
	nftnl_set_nlmsg_build_payload(nlh, set);
	msg_done(b, nlh);
	nftnl_set_free(set);
}

/* One element: key bytes, optional interval-end flag, optional map data. */
struct elem {
	uint8_t key[48];
	uint32_t key_len;
	uint32_t flags;
	bool has_data;
	uint32_t data;          /* u32 data (mark / classid) */
	const char *jump;       /* verdict map: jump to this chain */
	uint64_t timeout_ms;    /* sets with timeouts: 0 for the set's default */
};

/* Sends elements in messages of at most ELEMS_PER_MSG (an attribute nest is
 * limited to 64 KiB). */
static void elems_msg(struct backend *b, uint16_t family, const char *set_name,
		      const struct elem *el, size_t n, uint16_t type)
{
	for (size_t off = 0; off < n; off += ELEMS_PER_MSG) {
		struct nftnl_set *set = nftnl_set_alloc();
		struct nlmsghdr *nlh;
		size_t end = off + ELEMS_PER_MSG < n ? off + ELEMS_PER_MSG : n;

		nftnl_set_set_str(set, NFTNL_SET_TABLE, b->table);
		nftnl_set_set_str(set, NFTNL_SET_NAME, set_name);
		nftnl_set_set_u32(set, NFTNL_SET_FAMILY, family);
		for (size_t i = off; i < end; i++) {
			struct nftnl_set_elem *e = nftnl_set_elem_alloc();

			nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, el[i].key, el[i].key_len);
			if (el[i].flags)
				nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, el[i].flags);
			if (el[i].timeout_ms && type == NFT_MSG_NEWSETELEM)
				nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, el[i].timeout_ms);
			if (el[i].has_data && type == NFT_MSG_NEWSETELEM)
				nftnl_set_elem_set(e, NFTNL_SET_ELEM_DATA, &el[i].data, 4);
			if (el[i].jump && type == NFT_MSG_NEWSETELEM) {
				nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_VERDICT, (uint32_t)NFT_JUMP);
				nftnl_set_elem_set_str(e, NFTNL_SET_ELEM_CHAIN, el[i].jump);
			}
			nftnl_set_elem_add(set, e);
		}
		nlh = msg_hdr(b, type, family, type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0);
		nftnl_set_elems_nlmsg_build_payload(nlh, set);
		msg_done(b, nlh);
		nftnl_set_free(set);
	}
}

/* A delete of elements without an element list flushes the set. */
static void set_flush(struct backend *b, uint16_t family, const char *set_name)
{
	struct nftnl_set *set = nftnl_set_alloc();
	struct nlmsghdr *nlh;

	nftnl_set_set_str(set, NFTNL_SET_TABLE, b->table);
	nftnl_set_set_str(set, NFTNL_SET_NAME, set_name);
	nftnl_set_set_u32(set, NFTNL_SET_FAMILY, family);
	nlh = msg_hdr(b, NFT_MSG_DELSETELEM, family, 0);
	nftnl_set_elems_nlmsg_build_payload(nlh, set);
	msg_done(b, nlh);
	nftnl_set_free(set);
}

/* --- expressions ------------------------------------------------------------ */

/* Rules are written straight into the batch, expression by expression,
 * with libmnl: a full load sends some 130,000 expressions, and building
 * each as a libnftnl object first (allocated, its type found by name,
 * serialized, freed) cost more than the writing.  The attributes are the
 * ones libnftnl would send, in the same order. */

/* One expression's NFTA_LIST_ELEM and NFTA_EXPR_DATA nests. */
struct xexpr {
	struct nlattr *elem, *data;
};

static struct xexpr x_open(struct xrule *r, const char *name)
{
	struct xexpr x;

	x.elem = mnl_attr_nest_start(r->nlh, NFTA_LIST_ELEM);
	mnl_attr_put_strz(r->nlh, NFTA_EXPR_NAME, name);
	x.data = mnl_attr_nest_start(r->nlh, NFTA_EXPR_DATA);
	return x;
}

static void x_close(struct xrule *r, struct xexpr x)
{
	mnl_attr_nest_end(r->nlh, x.data);
	mnl_attr_nest_end(r->nlh, x.elem);
}

static void put_u32(struct xrule *r, uint16_t type, uint32_t v)
{
	mnl_attr_put_u32(r->nlh, type, htonl(v));
}

/* A value in its NFTA_DATA_VALUE nest. */
static void put_value(struct xrule *r, uint16_t type, const void *data, uint32_t len)
{
	struct nlattr *nest = mnl_attr_nest_start(r->nlh, type);

	mnl_attr_put(r->nlh, NFTA_DATA_VALUE, len, data);
	mnl_attr_nest_end(r->nlh, nest);
}

static void x_meta_load(struct xrule *r, uint32_t key, uint32_t dreg)
{
	struct xexpr x = x_open(r, "meta");

	put_u32(r, NFTA_META_KEY, key);
	put_u32(r, NFTA_META_DREG, dreg);
	x_close(r, x);
}

static void x_meta_set(struct xrule *r, uint32_t key, uint32_t sreg)
{
	struct xexpr x = x_open(r, "meta");

	put_u32(r, NFTA_META_KEY, key);
	put_u32(r, NFTA_META_SREG, sreg);
	x_close(r, x);
}

static void x_payload(struct xrule *r, uint32_t base, uint32_t off, uint32_t len, uint32_t dreg)
{
	struct xexpr x = x_open(r, "payload");

	put_u32(r, NFTA_PAYLOAD_DREG, dreg);
	put_u32(r, NFTA_PAYLOAD_BASE, base);
	put_u32(r, NFTA_PAYLOAD_OFFSET, off);
	put_u32(r, NFTA_PAYLOAD_LEN, len);
	x_close(r, x);
}

static void x_cmp(struct xrule *r, uint32_t op, const void *data, uint32_t len)
{
	struct xexpr x = x_open(r, "cmp");

	put_u32(r, NFTA_CMP_SREG, NFT_REG_1);
	put_u32(r, NFTA_CMP_OP, op);
	put_value(r, NFTA_CMP_DATA, data, len);
	x_close(r, x);
}

static void x_cmp_u8(struct xrule *r, uint8_t v)
{
	x_cmp(r, NFT_CMP_EQ, &v, 1);
}

static void x_range(struct xrule *r, const void *from, const void *to, uint32_t len)
{
	struct xexpr x = x_open(r, "range");

	put_u32(r, NFTA_RANGE_SREG, NFT_REG_1);
	put_u32(r, NFTA_RANGE_OP, NFT_RANGE_EQ);
	put_value(r, NFTA_RANGE_FROM_DATA, from, len);
	put_value(r, NFTA_RANGE_TO_DATA, to, len);
	x_close(r, x);
}

/* A lookup in a set (dreg < 0) or a map (dreg = destination register). */
static void x_lookup(struct xrule *r, const char *set, int dreg, bool inverted)
{
	struct xexpr x = x_open(r, "lookup");

	put_u32(r, NFTA_LOOKUP_SREG, NFT_REG_1);
	if (dreg >= 0)
		put_u32(r, NFTA_LOOKUP_DREG, (uint32_t)dreg);
	mnl_attr_put_strz(r->nlh, NFTA_LOOKUP_SET, set);
	if (inverted)
		put_u32(r, NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
	x_close(r, x);
}

static void x_imm_u32(struct xrule *r, uint32_t v)
{
	struct xexpr x = x_open(r, "immediate");

	put_u32(r, NFTA_IMMEDIATE_DREG, NFT_REG_1);
	put_value(r, NFTA_IMMEDIATE_DATA, &v, sizeof(v));
	x_close(r, x);
}

/* A verdict; to a chain (NFT_JUMP, NFT_GOTO) when chain is not NULL. */
static void x_to_chain(struct xrule *r, int verdict, const char *chain)
{
	struct xexpr x = x_open(r, "immediate");
	struct nlattr *data, *v;

	put_u32(r, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
	data = mnl_attr_nest_start(r->nlh, NFTA_IMMEDIATE_DATA);
	v = mnl_attr_nest_start(r->nlh, NFTA_DATA_VERDICT);
	put_u32(r, NFTA_VERDICT_CODE, (uint32_t)verdict);
	if (chain)
		mnl_attr_put_strz(r->nlh, NFTA_VERDICT_CHAIN, chain);
	mnl_attr_nest_end(r->nlh, v);
	mnl_attr_nest_end(r->nlh, data);
	x_close(r, x);
}

static void x_verdict(struct xrule *r, int verdict)
{
	x_to_chain(r, verdict, NULL);
}

static void x_counter(struct xrule *r)
{
	x_close(r, x_open(r, "counter"));
}

static void x_objref_counter(struct xrule *r, const char *name)
{
	struct xexpr x = x_open(r, "objref");

	put_u32(r, NFTA_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER);
	mnl_attr_put_str(r->nlh, NFTA_OBJREF_IMM_NAME, name); /* as libnftnl: no NUL */
	x_close(r, x);
}

/* reg1 &= mask (len bytes). */
static void x_mask(struct xrule *r, const void *mask, uint32_t len)
{
	static const uint8_t zero[16];
	struct xexpr x = x_open(r, "bitwise");

	put_u32(r, NFTA_BITWISE_SREG, NFT_REG_1);
	put_u32(r, NFTA_BITWISE_DREG, NFT_REG_1);
	put_u32(r, NFTA_BITWISE_LEN, len);
	put_value(r, NFTA_BITWISE_MASK, mask, len);
	put_value(r, NFTA_BITWISE_XOR, zero, len);
	x_close(r, x);
}

static void x_ct_state(struct xrule *r, uint32_t mask)
{
	struct xexpr x = x_open(r, "ct");
	uint32_t zero = 0;

	put_u32(r, NFTA_CT_KEY, NFT_CT_STATE);
	put_u32(r, NFTA_CT_DREG, NFT_REG_1);
	x_close(r, x);
	x_mask(r, &mask, 4);
	x_cmp(r, NFT_CMP_NEQ, &zero, 4);
}

/* reg1 := 1 if the IPv6 packet has an extension header of this type, else 0
 * (nft's `exthdr NAME exists`). */
static void x_exthdr_present(struct xrule *r, uint8_t type)
{
	struct xexpr x = x_open(r, "exthdr");

	put_u32(r, NFTA_EXTHDR_DREG, NFT_REG_1);
	mnl_attr_put_u8(r->nlh, NFTA_EXTHDR_TYPE, type);
	put_u32(r, NFTA_EXTHDR_OFFSET, 0);
	put_u32(r, NFTA_EXTHDR_LEN, 1);
	put_u32(r, NFTA_EXTHDR_FLAGS, NFT_EXTHDR_F_PRESENT);
	put_u32(r, NFTA_EXTHDR_OP, NFT_EXTHDR_OP_IPV6);
	x_close(r, x);
}

/* The packet's source or destination address (v6: IPv6) in net, or not
 * (neq): a load, a mask for a prefix, a compare. */
static void x_addr_in(struct xrule *r, bool src, bool v6, const struct dfw_addr *net, bool neq)
{
	uint32_t len = v6 ? 16 : 4;
	uint8_t mask[16] = { 0 };

	x_payload(r, NFT_PAYLOAD_NETWORK_HEADER, src ? (v6 ? 8 : 12) : (v6 ? 24 : 16), len,
		  NFT_REG_1);
	if (net->plen < len * 8) {
		for (unsigned bit = 0; bit < net->plen; bit++)
			mask[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
		x_mask(r, mask, len);
	}
	x_cmp(r, neq ? NFT_CMP_NEQ : NFT_CMP_EQ, net->a, len);
}

static void x_ether_type(struct xrule *r, uint16_t type)
{
	uint16_t be = htons(type);

	x_payload(r, NFT_PAYLOAD_LL_HEADER, 12, 2, NFT_REG_1);
	x_cmp(r, NFT_CMP_EQ, &be, 2);
}

/* An IPv6 frame of ICMPv6 of a type from lo to hi (bridge family). */
static void x_icmp6_types(struct xrule *r, uint8_t lo, uint8_t hi)
{
	x_ether_type(r, 0x86dd);
	x_meta_load(r, NFT_META_L4PROTO, NFT_REG_1);
	x_cmp_u8(r, IPPROTO_ICMPV6);
	x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, NFT_REG_1);
	x_range(r, &lo, &hi, 1);
}

/* A copy to an NFLOG group: with a prefix, or of snaplen bytes (0: no
 * limit given). */
static void x_log_to(struct xrule *r, const char *prefix, uint16_t group, uint32_t snaplen)
{
	struct xexpr x = x_open(r, "log");

	if (prefix)
		mnl_attr_put_strz(r->nlh, NFTA_LOG_PREFIX, prefix);
	mnl_attr_put_u16(r->nlh, NFTA_LOG_GROUP, htons(group));
	if (snaplen)
		put_u32(r, NFTA_LOG_SNAPLEN, snaplen);
	x_close(r, x);
}

static void x_log(struct xrule *r, uint16_t group, uint32_t snaplen)
{
	x_log_to(r, NULL, group, snaplen);
}

static void x_reject(struct xrule *r, uint32_t type, uint8_t code)
{
	struct xexpr x = x_open(r, "reject");

	put_u32(r, NFTA_REJECT_TYPE, type);
	mnl_attr_put_u8(r->nlh, NFTA_REJECT_ICMP_CODE, code);
	x_close(r, x);
}

/* meta l4proto udp, udp sport, udp dport (each compared apart, so that
 * `nft list` shows them as such). */
static void x_udp_ports(struct xrule *r, uint16_t sport, uint16_t dport)
{
	uint16_t sp = htons(sport), dp = htons(dport);

	x_meta_load(r, NFT_META_L4PROTO, NFT_REG_1);
	x_cmp_u8(r, IPPROTO_UDP);
	x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, NFT_REG_1);
	x_cmp(r, NFT_CMP_EQ, &sp, 2);
	x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG_1);
	x_cmp(r, NFT_CMP_EQ, &dp, 2);
}

/* Starts a rule appended to chain in the batch (the backend's one rule
 * being written: rule_send ends it before the next starts). */
static struct xrule *rule_new(struct backend *b, uint16_t family, const char *chain,
			      const char *comment)
{
	struct xrule *r = &b->rule;

	r->nlh = msg_hdr(b, NFT_MSG_NEWRULE, family, NLM_F_CREATE | NLM_F_APPEND);
	mnl_attr_put_strz(r->nlh, NFTA_RULE_TABLE, b->table);
	mnl_attr_put_strz(r->nlh, NFTA_RULE_CHAIN, chain);
	if (comment) {
		struct nftnl_udata_buf *ud = nftnl_udata_buf_alloc(NFTNL_UDATA_COMMENT_MAXLEN + 8);

		nftnl_udata_put_strz(ud, NFTNL_UDATA_RULE_COMMENT, comment);
		mnl_attr_put(r->nlh, NFTA_RULE_USERDATA, nftnl_udata_buf_len(ud),
			     nftnl_udata_buf_data(ud));
		nftnl_udata_buf_free(ud);
	}
	r->exprs = mnl_attr_nest_start(r->nlh, NFTA_RULE_EXPRESSIONS);
	return r;
}

static void rule_send(struct backend *b, struct xrule *r)
{
	mnl_attr_nest_end(r->nlh, r->exprs);
	msg_done(b, r->nlh);
}

static void goto_rule(struct backend *b, const char *chain, const char *target)
{
	struct xrule *r = rule_new(b, NFPROTO_INET, chain, NULL);

	x_to_chain(r, NFT_GOTO, target);
	rule_send(b, r);
}

/* --- the fixed layout --------------------------------------------------------- */

/* Meta key target := the id the port ifkey names in map (a lookup that
 * fails ends the rule, the key left as it was). */
static void x_port_id(struct xrule *r, uint32_t ifkey, const char *map, uint32_t target)
{
	x_meta_load(r, ifkey, NFT_REG_1);
	x_lookup(r, map, NFT_REG_1, false);
	x_meta_set(r, target, NFT_REG_1);
}

/* Clears a meta key, sets it to the port's id from a map, and drops frames
 * of ports the map does not know (fail closed). */
static void port_id_rules(struct backend *b, const char *chain, uint32_t ifkey,
			  const char *map, uint32_t target)
{
	struct xrule *r;
	uint32_t zero = 0;

	r = rule_new(b, NFPROTO_BRIDGE, chain, NULL);
	x_imm_u32(r, 0);
	x_meta_set(r, target, NFT_REG_1);
	rule_send(b, r);
	r = rule_new(b, NFPROTO_BRIDGE, chain, NULL);
	x_port_id(r, ifkey, map, target);
	rule_send(b, r);
	r = rule_new(b, NFPROTO_BRIDGE, chain, "unknown port");
	x_meta_load(r, target, NFT_REG_1);
	x_cmp(r, NFT_CMP_EQ, &zero, 4);
	x_counter(r);
	x_verdict(r, NF_DROP);
	rule_send(b, r);
}

/* The test that ends a bridge rule for the ports in an ifname set
 * (learn4 / learn6): the frame's ingress (or egress) port is in the set.
 * It comes after the rule's cheaper tests (ethertype, addresses, ports),
 * on which every other frame fails first, and before its action. */
static void x_learning_port(struct xrule *r, uint32_t ifkey, const char *set)
{
	x_meta_load(r, ifkey, NFT_REG_1);
	x_lookup(r, set, -1, false);
}

/* A learning port's DHCP to the learn group: from its client (classify),
 * or the server's offer and ack to it, which then pass (steer: to an
 * address the port does not have yet). */
static void dhcp_learn_rule(struct backend *b, bool client)
{
	struct xrule *r = rule_new(b, NFPROTO_BRIDGE, client ? DFW_CHAIN_BR_PRE : DFW_CHAIN_BR_FWD,
				   client ? "learn: DHCP" : "learn: DHCP reply");

	x_ether_type(r, 0x0800);
	x_udp_ports(r, client ? 68 : 67, client ? 67 : 68);
	x_learning_port(r, client ? NFT_META_IIFNAME : NFT_META_OIFNAME, DFW_SET_LEARN4);
	x_log(r, DFW_NFLOG_LEARN, DFW_NFLOG_LEARN_SNAPLEN);
	if (!client)
		x_verdict(r, NF_ACCEPT);
	rule_send(b, r);
}

/* Address learning (layout.h): after the MAC check, before the address
 * checks drop them, the frames of learning ports that carry the guest's
 * address go to the learn group.  A DHCP client that has no address yet
 * (0.0.0.0 to the broadcast address) passes, or it could never get one;
 * every other IP packet of the port stays dropped until its address is
 * locked. */
static void learn_rules(struct backend *b)
{
	const uint8_t nd_lo = 135, nd_hi = 136; /* neighbour solicit / advert */
	const uint32_t zero = 0, bcast = 0xffffffff;
	struct xrule *r;

	r = rule_new(b, NFPROTO_BRIDGE, DFW_CHAIN_BR_PRE, "learn");
	x_ether_type(r, 0x0806);
	x_learning_port(r, NFT_META_IIFNAME, DFW_SET_LEARN4);
	x_log(r, DFW_NFLOG_LEARN, DFW_NFLOG_LEARN_SNAPLEN);
	rule_send(b, r);
	r = rule_new(b, NFPROTO_BRIDGE, DFW_CHAIN_BR_PRE, "learn");
	x_icmp6_types(r, nd_lo, nd_hi);
	x_learning_port(r, NFT_META_IIFNAME, DFW_SET_LEARN6);
	x_log(r, DFW_NFLOG_LEARN, DFW_NFLOG_LEARN_SNAPLEN);
	rule_send(b, r);
	dhcp_learn_rule(b, true);
	r = rule_new(b, NFPROTO_BRIDGE, DFW_CHAIN_BR_PRE, "learn: DHCP without an address");
	x_ether_type(r, 0x0800);
	x_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, NFT_REG_1);
	x_cmp(r, NFT_CMP_EQ, &zero, 4);
	x_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, NFT_REG_1);
	x_cmp(r, NFT_CMP_EQ, &bcast, 4);
	x_udp_ports(r, 68, 67);
	x_learning_port(r, NFT_META_IIFNAME, DFW_SET_LEARN4);
	x_verdict(r, NF_ACCEPT);
	rule_send(b, r);
}

/* A vNIC's frames other than IPv4, IPv6 and ARP drop, right after the MAC
 * check.  The address checks below and the policy in the inet table see
 * only untagged IPv4 and IPv6 (br_netfilter passes no 802.1Q or 802.1ad
 * frame to it while bridge-nf-filter-vlan-tagged is 0), so anything else
 * would pass both: a frame tagged with VLAN 0 (priority-tagged), which the
 * receiving guest takes as untagged, would carry any IP packet from any
 * source address past the policy, a quarantined VM's too. */
static void ethertype_rule(struct backend *b)
{
	static const uint16_t allowed[] = { 0x0800, 0x86dd, 0x0806 };
	struct xrule *r = rule_new(b, NFPROTO_BRIDGE, DFW_CHAIN_BR_PRE, "not IPv4, IPv6 or ARP");

	x_payload(r, NFT_PAYLOAD_LL_HEADER, 12, 2, NFT_REG_1);
	for (size_t i = 0; i < ARRAY_SIZE(allowed); i++) {
		uint16_t be = htons(allowed[i]);

		x_cmp(r, NFT_CMP_NEQ, &be, 2);
	}
	x_counter(r);
	x_verdict(r, NF_DROP);
	rule_send(b, r);
}

/* A vNIC's neighbour discovery, after the address checks (so after the
 * learn rules, which copy a learning port's advertisements first): only
 * frames whose source MAC and address are the port's own get here, and an
 * uplink's never do.  A VM is not a router, and advertises no address but
 * its own (the IPv6 counterpart of "spoofed ARP").  A receiver takes only
 * packets of hop limit 255 as neighbour discovery (RFC 4861); a fragment
 * of one could hide its type or target (or its whole ICMPv6 header) from
 * the rules after, so such fragments drop whatever they carry. */
/* "::" is a vNIC's source only for duplicate address detection and its
 * multicast listener reports: ICMPv6 to a multicast group.  Anything else
 * from it would be a packet of no VM that no group matches, which rules on
 * `any` or `not G` would let through (a quarantined VM's, too). */
static void unspecified_rules(struct backend *b)
{
	static const struct dfw_addr unspec = { .family = AF_INET6, .plen = 128 };
	static const struct dfw_addr mcast = { .family = AF_INET6, .plen = 8, .a = { 0xff } };
	const uint8_t icmp6 = IPPROTO_ICMPV6;

	for (int i = 0; i < 2; i++) {
		struct xrule *r = rule_new(b, NFPROTO_BRIDGE, DFW_CHAIN_BR_PRE,
					   i ? "from :: to no multicast group" : "from :: and not ICMPv6");

		x_ether_type(r, 0x86dd);
		x_addr_in(r, true, true, &unspec, false);
		if (i) {
			x_addr_in(r, false, true, &mcast, true);
		} else {
			x_meta_load(r, NFT_META_L4PROTO, NFT_REG_1);
			x_cmp(r, NFT_CMP_NEQ, &icmp6, 1);
		}
		x_counter(r);
		x_verdict(r, NF_DROP);
		rule_send(b, r);
	}
}

static void nd_rules(struct backend *b)
{
	static const struct {
		uint8_t type; /* 0: a fragment of any type */
		const char *why;
	} nd[] = {
		{ 0, "fragmented neighbour discovery" },
		{ ND_ROUTER_ADVERT, "router advertisement from a vNIC" },
		{ ND_REDIRECT, "redirect from a vNIC" },
		{ ND_NEIGHBOR_ADVERT, "spoofed neighbour advertisement" },
	};
	const uint8_t hop_limit = 255, present = 1;

	for (size_t i = 0; i < ARRAY_SIZE(nd); i++) {
		struct xrule *r = rule_new(b, NFPROTO_BRIDGE, DFW_CHAIN_BR_PRE, nd[i].why);

		x_ether_type(r, 0x86dd);
		if (!nd[i].type) {
			x_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 7, 1, NFT_REG_1);
			x_cmp_u8(r, hop_limit);
			x_exthdr_present(r, IPPROTO_FRAGMENT);
			x_cmp_u8(r, present);
		} else {
			x_meta_load(r, NFT_META_L4PROTO, NFT_REG_1);
			x_cmp_u8(r, IPPROTO_ICMPV6);
			x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, NFT_REG_1);
			x_cmp_u8(r, nd[i].type);
		}
		if (nd[i].type == ND_NEIGHBOR_ADVERT) {
			x_meta_load(r, NFT_META_IIFNAME, NFT_REG_1);
			x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, DFW_ND_TARGET_OFF, 16, NFT_REG_2);
			x_lookup(r, DFW_SET_PORT_ND6, -1, true);
		}
		x_counter(r);
		x_verdict(r, NF_DROP);
		rule_send(b, r);
	}
}

/* The two ways through classify (ingress: src) and steer (egress): a
 * port's own IPv4 and IPv6 frames pass at once with its id in meta mark
 * (meta priority), after one lookup of (port, MAC, source address) in
 * port_src4/6 (of (port, destination address), for unicast frames only,
 * in port_dst4/6): most frames.  The rest take the long way: the port's
 * id from the port map (a port it does not know drops), and an uplink's
 * frames pass. */
static void own_way_rules(struct backend *b, bool src)
{
	static const struct {
		uint16_t ethertype;
		uint32_t addr_len;
		const char *map[2]; /* egress, ingress */
	} own[] = {
		{ 0x0800, 4, { DFW_MAP_PORT_DST4, DFW_MAP_PORT_SRC4 } },
		{ 0x86dd, 16, { DFW_MAP_PORT_DST6, DFW_MAP_PORT_SRC6 } },
	};
	const char *chain = src ? DFW_CHAIN_BR_PRE : DFW_CHAIN_BR_FWD;
	uint32_t ifkey = src ? NFT_META_IIFNAME : NFT_META_OIFNAME;
	uint32_t target = src ? NFT_META_MARK : NFT_META_PRIORITY;
	const uint32_t uplink = DFW_UPLINK_ID;
	const uint8_t icmp6 = IPPROTO_ICMPV6;
	struct xrule *r;

	for (size_t i = 0; i < ARRAY_SIZE(own); i++) {
		uint32_t off = own[i].addr_len == 4 ? 12 : 8;

		r = rule_new(b, NFPROTO_BRIDGE, chain, src ? "a port's own" : "to a port's own");
		x_ether_type(r, own[i].ethertype);
		/* ICMPv6 from a port goes the long way, to the neighbour
		 * discovery checks: an advertisement from the port's own
		 * address may still claim another's. */
		if (src && own[i].ethertype == 0x86dd) {
			x_meta_load(r, NFT_META_L4PROTO, NFT_REG_1);
			x_cmp(r, NFT_CMP_NEQ, &icmp6, 1);
		}
		if (!src) { /* a broadcast or multicast is for no port */
			x_meta_load(r, NFT_META_PKTTYPE, NFT_REG_1);
			x_cmp_u8(r, PACKET_OTHERHOST);
		}
		x_meta_load(r, ifkey, NFT_REG_1);
		if (src) {
			x_payload(r, NFT_PAYLOAD_LL_HEADER, 6, 6, NFT_REG_2);
			/* after the MAC, padded to 8 bytes: the third 32-bit
			 * register of register 2 */
			x_payload(r, NFT_PAYLOAD_NETWORK_HEADER, off, own[i].addr_len,
				  NFT_REG32_06);
		} else {
			x_payload(r, NFT_PAYLOAD_NETWORK_HEADER, off + own[i].addr_len,
				  own[i].addr_len, NFT_REG_2);
		}
		x_lookup(r, own[i].map[src], NFT_REG_1, false);
		x_meta_set(r, target, NFT_REG_1);
		x_verdict(r, NF_ACCEPT);
		rule_send(b, r);
	}
	port_id_rules(b, chain, ifkey, src ? DFW_MAP_PORT_SRC : DFW_MAP_PORT_DST, target);
	r = rule_new(b, NFPROTO_BRIDGE, chain, src ? "uplink: checked at the sending host"
						  : "to an uplink: the receiving host checks");
	x_meta_load(r, target, NFT_REG_1);
	x_cmp(r, NFT_CMP_EQ, &uplink, 4);
	x_verdict(r, NF_ACCEPT);
	rule_send(b, r);
}

/* steer: a unicast frame to an address of its egress port passes at
 * once with the port's id in meta priority (one lookup: most frames).
 * The rest go the long way: the port's id (a port the map does not know
 * drops); to an uplink, pass (the receiving host checks); the DHCP
 * server's offer and ack to a learning port carry its address (yiaddr):
 * copied, and pass.  Any other unicast IP frame is to an address that is
 * not the port's, and drops: the in-policy matches the destination
 * address, so a sender that picked another VM's MAC would have its
 * packet judged as for the address and delivered to that VM.  A multicast
 * frame must carry a multicast address, for the same reason. */
static void steer_rules(struct backend *b)
{
	static const struct dfw_addr mcast4 = { .family = AF_INET, .plen = 4, .a = { 0xe0 } };
	static const struct dfw_addr mcast6 = { .family = AF_INET6, .plen = 8, .a = { 0xff } };
	const uint8_t bcast = PACKET_BROADCAST, mcast = PACKET_MULTICAST;
	const uint16_t fam = NFPROTO_BRIDGE;
	struct xrule *r;

	own_way_rules(b, false);
	dhcp_learn_rule(b, false);
	for (int v6 = 0; v6 < 2; v6++) {
		r = rule_new(b, fam, DFW_CHAIN_BR_FWD, "to an address not the port's");
		x_ether_type(r, v6 ? 0x86dd : 0x0800);
		x_meta_load(r, NFT_META_PKTTYPE, NFT_REG_1);
		if (!v6)
			x_cmp(r, NFT_CMP_NEQ, &bcast, 1);
		x_cmp(r, NFT_CMP_NEQ, &mcast, 1);
		x_counter(r);
		x_verdict(r, NF_DROP);
		rule_send(b, r);
	}
	for (int v4 = 0; v4 < 2; v4++) {
		r = rule_new(b, fam, DFW_CHAIN_BR_FWD, "multicast frame to a unicast address");
		x_ether_type(r, v4 ? 0x0800 : 0x86dd);
		if (v4) {
			x_meta_load(r, NFT_META_PKTTYPE, NFT_REG_1);
			x_cmp(r, NFT_CMP_EQ, &mcast, 1);
		}
		x_addr_in(r, false, !v4, v4 ? &mcast4 : &mcast6, true);
		x_counter(r);
		x_verdict(r, NF_DROP);
		rule_send(b, r);
	}
}

/* to_host: a vNIC's IP frames for the hypervisor itself (an address on the
 * bridge, its automatic IPv6 link-local one included) drop: the policy
 * is enforced on the forward path only, and a guest, a quarantined one
 * too, would reach the host's own services.  An uplink's pass: it is the
 * host's own network.  Neighbour solicitations and advertisements pass
 * (IPv6's ARP, which passes too): the host resolves a guest to send it a
 * reject's answer. */
static void to_host_rules(struct backend *b)
{
	const uint32_t uplink = DFW_UPLINK_ID;
	struct xrule *r;

	r = rule_new(b, NFPROTO_BRIDGE, DFW_CHAIN_BR_IN, "from an uplink: the host's own network");
	x_meta_load(r, NFT_META_MARK, NFT_REG_1);
	x_cmp(r, NFT_CMP_EQ, &uplink, 4);
	x_verdict(r, NF_ACCEPT);
	rule_send(b, r);
	r = rule_new(b, NFPROTO_BRIDGE, DFW_CHAIN_BR_IN, "neighbour discovery");
	x_icmp6_types(r, ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT);
	x_verdict(r, NF_ACCEPT);
	rule_send(b, r);
	for (int v6 = 0; v6 < 2; v6++) {
		r = rule_new(b, NFPROTO_BRIDGE, DFW_CHAIN_BR_IN, "from a vNIC to the hypervisor");
		x_ether_type(r, v6 ? 0x86dd : 0x0800);
		x_counter(r);
		x_verdict(r, NF_DROP);
		rule_send(b, r);
	}
}

static void bridge_objects(struct backend *b)
{
	static const struct set_spec sets[] = {
		{ DFW_MAP_PORT_SRC, NFPROTO_BRIDGE, NFT_SET_MAP, TYPE_IFNAME, IFNAMSIZ, TYPE_MARK, 4, BO_HOST, BO_HOST },
		{ DFW_MAP_PORT_DST, NFPROTO_BRIDGE, NFT_SET_MAP, TYPE_IFNAME, IFNAMSIZ, TYPE_CLASSID, 4, BO_HOST, BO_HOST },
		{ DFW_SET_PORT_MAC, NFPROTO_BRIDGE, 0, CONCAT(TYPE_IFNAME, TYPE_ETHERADDR), IFNAMSIZ + 8, 0, 0, BO_BIG, 0 },
		{ DFW_SET_PORT_IP4, NFPROTO_BRIDGE, 0, CONCAT(TYPE_IFNAME, TYPE_IPADDR), IFNAMSIZ + 4, 0, 0, BO_BIG, 0 },
		{ DFW_SET_PORT_IP6, NFPROTO_BRIDGE, 0, CONCAT(TYPE_IFNAME, TYPE_IP6ADDR), IFNAMSIZ + 16, 0, 0, BO_BIG, 0 },
		{ DFW_SET_PORT_ND6, NFPROTO_BRIDGE, 0, CONCAT(TYPE_IFNAME, TYPE_INTEGER), IFNAMSIZ + 16, 0, 0, 0, 0,
		  true },
		{ DFW_SET_LEARN4, NFPROTO_BRIDGE, 0, TYPE_IFNAME, IFNAMSIZ, 0, 0, BO_HOST, 0 },
		{ DFW_SET_LEARN6, NFPROTO_BRIDGE, 0, TYPE_IFNAME, IFNAMSIZ, 0, 0, BO_HOST, 0 },
		{ DFW_MAP_PORT_SRC4, NFPROTO_BRIDGE, NFT_SET_MAP,
		  CONCAT(CONCAT(TYPE_IFNAME, TYPE_ETHERADDR), TYPE_IPADDR), IFNAMSIZ + 8 + 4,
		  TYPE_MARK, 4, BO_BIG, BO_HOST },
		{ DFW_MAP_PORT_SRC6, NFPROTO_BRIDGE, NFT_SET_MAP,
		  CONCAT(CONCAT(TYPE_IFNAME, TYPE_ETHERADDR), TYPE_IP6ADDR), IFNAMSIZ + 8 + 16,
		  TYPE_MARK, 4, BO_BIG, BO_HOST },
		{ DFW_MAP_PORT_DST4, NFPROTO_BRIDGE, NFT_SET_MAP, CONCAT(TYPE_IFNAME, TYPE_IPADDR),
		  IFNAMSIZ + 4, TYPE_CLASSID, 4, BO_BIG, BO_HOST },
		{ DFW_MAP_PORT_DST6, NFPROTO_BRIDGE, NFT_SET_MAP, CONCAT(TYPE_IFNAME, TYPE_IP6ADDR),
		  IFNAMSIZ + 16, TYPE_CLASSID, 4, BO_BIG, BO_HOST },
	};
	/* Anti-spoofing: (port, source) pairs not in the port's sets drop. */
	static const struct {
		uint16_t ethertype; /* 0: any frame */
		uint32_t base, off, len;
		const char *set, *why;
	} spoof[] = {
		{ 0, NFT_PAYLOAD_LL_HEADER, 6, 6, DFW_SET_PORT_MAC, "spoofed MAC" },
		{ 0x0800, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, DFW_SET_PORT_IP4, "spoofed IPv4" },
		{ 0x0806, NFT_PAYLOAD_NETWORK_HEADER, 8, 6, DFW_SET_PORT_MAC, "spoofed ARP" },
		{ 0x0806, NFT_PAYLOAD_NETWORK_HEADER, 14, 4, DFW_SET_PORT_IP4, "spoofed ARP" },
		{ 0x86dd, NFT_PAYLOAD_NETWORK_HEADER, 8, 16, DFW_SET_PORT_IP6, "spoofed IPv6" },
	};
	const uint16_t fam = NFPROTO_BRIDGE;
	struct xrule *r;

	for (size_t i = 0; i < ARRAY_SIZE(sets); i++)
		set_msg(b, &sets[i], NFT_MSG_NEWSET);
	chain_msg(b, fam, DFW_CHAIN_BR_PRE, NF_BR_PRE_ROUTING, DFW_PRIO_BR_PRE, NFT_MSG_NEWCHAIN);
	chain_msg(b, fam, DFW_CHAIN_BR_FWD, NF_BR_FORWARD, DFW_PRIO_BR_FWD, NFT_MSG_NEWCHAIN);
	chain_msg(b, fam, DFW_CHAIN_BR_IN, NF_BR_LOCAL_IN, DFW_PRIO_BR_IN, NFT_MSG_NEWCHAIN);

	/* classify: a port's own IPv4 and IPv6 frames pass at once with
	 * its id (own_way_rules); the rest go the long way: the ingress
	 * port's id into meta mark, anti-spoofing, learning. */
	own_way_rules(b, true);
	for (size_t i = 0; i < ARRAY_SIZE(spoof); i++) {
		if (i == 1)
			learn_rules(b);
		r = rule_new(b, fam, DFW_CHAIN_BR_PRE, spoof[i].why);
		if (spoof[i].ethertype)
			x_ether_type(r, spoof[i].ethertype);
		x_meta_load(r, NFT_META_IIFNAME, NFT_REG_1);
		x_payload(r, spoof[i].base, spoof[i].off, spoof[i].len, NFT_REG_2);
		x_lookup(r, spoof[i].set, -1, true);
		x_counter(r);
		x_verdict(r, NF_DROP);
		rule_send(b, r);
		if (i == 0)
			ethertype_rule(b);
	}
	unspecified_rules(b);
	nd_rules(b);

	steer_rules(b);
	to_host_rules(b);
}

static void inet_base(struct backend *b)
{
	static const struct set_spec maps[] = {
		{ DFW_MAP_OUT, NFPROTO_INET, NFT_SET_MAP, TYPE_MARK, 4, NFT_DATA_VERDICT, 0, BO_HOST, 0 },
		{ DFW_MAP_IN, NFPROTO_INET, NFT_SET_MAP, TYPE_CLASSID, 4, NFT_DATA_VERDICT, 0, BO_HOST, 0 },
		{ DFW_SET_BLOCK4, NFPROTO_INET, NFT_SET_TIMEOUT, TYPE_IPADDR, 4, 0, 0, BO_BIG, 0 },
		{ DFW_SET_BLOCK6, NFPROTO_INET, NFT_SET_TIMEOUT, TYPE_IP6ADDR, 16, 0, 0, BO_BIG, 0 },
		{ DFW_SET_OPBLOCK4, NFPROTO_INET, NFT_SET_TIMEOUT, TYPE_IPADDR, 4, 0, 0, BO_BIG, 0 },
		{ DFW_SET_OPBLOCK6, NFPROTO_INET, NFT_SET_TIMEOUT, TYPE_IP6ADDR, 16, 0, 0, BO_BIG, 0 },
		{ DFW_SET_OPSCOPE4, NFPROTO_INET, NFT_SET_TIMEOUT,
		  CONCAT(TYPE_IPADDR, TYPE_MARK), 8, 0, 0, BO_BIG, 0 },
		{ DFW_SET_OPSCOPE6, NFPROTO_INET, NFT_SET_TIMEOUT,
		  CONCAT(TYPE_IP6ADDR, TYPE_MARK), 20, 0, 0, BO_BIG, 0 },
		{ DFW_SET_OPSCOPE4_IN, NFPROTO_INET, NFT_SET_TIMEOUT,
		  CONCAT(TYPE_IPADDR, TYPE_CLASSID), 8, 0, 0, BO_BIG, 0 },
		{ DFW_SET_OPSCOPE6_IN, NFPROTO_INET, NFT_SET_TIMEOUT,
		  CONCAT(TYPE_IP6ADDR, TYPE_CLASSID), 20, 0, 0, BO_BIG, 0 },
	};
	/* Blocked addresses, either way: saddr and daddr of each family; the
	 * scoped operator blocks pair the address with the vNIC's id (meta
	 * priority: destination vNIC; meta mark: source vNIC). */
	static const struct {
		uint8_t nfproto;
		uint32_t off, len;
		const char *set, *why;
		uint32_t id_key; /* 0: none */
	} blocks[] = {
		{ NFPROTO_IPV4, 12, 4, DFW_SET_BLOCK4, "blocked", 0 },
		{ NFPROTO_IPV4, 16, 4, DFW_SET_BLOCK4, "blocked", 0 },
		{ NFPROTO_IPV6, 8, 16, DFW_SET_BLOCK6, "blocked", 0 },
		{ NFPROTO_IPV6, 24, 16, DFW_SET_BLOCK6, "blocked", 0 },
		{ NFPROTO_IPV4, 12, 4, DFW_SET_OPBLOCK4, "operator block", 0 },
		{ NFPROTO_IPV4, 16, 4, DFW_SET_OPBLOCK4, "operator block", 0 },
		{ NFPROTO_IPV6, 8, 16, DFW_SET_OPBLOCK6, "operator block", 0 },
		{ NFPROTO_IPV6, 24, 16, DFW_SET_OPBLOCK6, "operator block", 0 },
		{ NFPROTO_IPV4, 12, 4, DFW_SET_OPSCOPE4_IN, "operator block in scope", NFT_META_PRIORITY },
		{ NFPROTO_IPV4, 16, 4, DFW_SET_OPSCOPE4, "operator block in scope", NFT_META_MARK },
		{ NFPROTO_IPV6, 8, 16, DFW_SET_OPSCOPE6_IN, "operator block in scope", NFT_META_PRIORITY },
		{ NFPROTO_IPV6, 24, 16, DFW_SET_OPSCOPE6, "operator block in scope", NFT_META_MARK },
	};
	const uint16_t fam = NFPROTO_INET;
	struct xrule *r;
	const uint32_t zero = 0, uplink = DFW_UPLINK_ID;
	uint8_t nd_lo = 133, nd_hi = 136; /* neighbour/router solicit/advert */
	const uint8_t host = PACKET_HOST;

	for (size_t i = 0; i < ARRAY_SIZE(maps); i++)
		set_msg(b, &maps[i], NFT_MSG_NEWSET);
	chain_msg(b, fam, DFW_CHAIN_INET_FWD, NF_INET_FORWARD, DFW_PRIO_INET_FWD, NFT_MSG_NEWCHAIN);
	r = rule_new(b, fam, DFW_CHAIN_INET_FWD, "not bridged through a dfw port");
	x_meta_load(r, NFT_META_MARK, NFT_REG_1);
	x_cmp(r, NFT_CMP_EQ, &zero, 4);
	x_verdict(r, NF_ACCEPT);
	rule_send(b, r);
	r = rule_new(b, fam, DFW_CHAIN_INET_FWD, "neighbour discovery");
	x_meta_load(r, NFT_META_NFPROTO, NFT_REG_1);
	x_cmp_u8(r, NFPROTO_IPV6);
	x_meta_load(r, NFT_META_L4PROTO, NFT_REG_1);
	x_cmp_u8(r, IPPROTO_ICMPV6);
	x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, NFT_REG_1);
	x_range(r, &nd_lo, &nd_hi, 1);
	x_verdict(r, NF_ACCEPT);
	rule_send(b, r);
	/* An isolated vNIC takes nothing flooded (broadcast, multicast),
	 * new or of an established flow: before the conntrack accept
	 * (compile.c, isolated_set).  br_netfilter shows a bridged unicast
	 * packet as "host". */
	r = rule_new(b, fam, DFW_CHAIN_INET_FWD, "isolated: no broadcast or multicast");
	x_meta_load(r, NFT_META_PKTTYPE, NFT_REG_1);
	x_cmp(r, NFT_CMP_NEQ, &host, 1);
	x_meta_load(r, NFT_META_PRIORITY, NFT_REG_1);
	x_lookup(r, DFW_SET_ISOLATED, -1, false);
	x_counter(r);
	x_verdict(r, NF_DROP);
	rule_send(b, r);
	r = rule_new(b, fam, DFW_CHAIN_INET_FWD, NULL);
	x_ct_state(r, NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED));
	x_verdict(r, NF_ACCEPT);
	rule_send(b, r);
	r = rule_new(b, fam, DFW_CHAIN_INET_FWD, "invalid");
	x_ct_state(r, NF_CT_STATE_INVALID_BIT);
	x_counter(r);
	x_verdict(r, NF_DROP);
	rule_send(b, r);
	for (size_t i = 0; i < ARRAY_SIZE(blocks); i++) {
		r = rule_new(b, fam, DFW_CHAIN_INET_FWD, blocks[i].why);
		x_meta_load(r, NFT_META_NFPROTO, NFT_REG_1);
		x_cmp_u8(r, blocks[i].nfproto);
		x_payload(r, NFT_PAYLOAD_NETWORK_HEADER, blocks[i].off, blocks[i].len, NFT_REG_1);
		/* A concatenation continues in the next 32-bit register. */
		if (blocks[i].id_key)
			x_meta_load(r, blocks[i].id_key, blocks[i].len == 4 ? NFT_REG32_01 : NFT_REG_2);
		x_lookup(r, blocks[i].set, -1, false);
		x_counter(r);
		x_verdict(r, NF_DROP);
		rule_send(b, r);
	}
	/* Copies nothing unless someone listens on the group (dfwd does only
	 * when [netthreat] is on). */
	r = rule_new(b, fam, DFW_CHAIN_INET_FWD, "new flow");
	x_log(r, DFW_NFLOG_NEWFLOWS, DFW_NFLOG_SNAPLEN);
	rule_send(b, r);
	r = rule_new(b, fam, DFW_CHAIN_INET_FWD, NULL);
	x_meta_load(r, NFT_META_MARK, NFT_REG_1);
	x_lookup(r, DFW_MAP_OUT, NFT_REG_VERDICT, false);
	rule_send(b, r);
	goto_rule(b, DFW_CHAIN_INET_FWD, DFW_CHAIN_ADMIT);
	/* admit: created empty before the policy chains (backend_load) */
	r = rule_new(b, fam, DFW_CHAIN_ADMIT, "to an uplink: the receiving host checks");
	x_meta_load(r, NFT_META_PRIORITY, NFT_REG_1);
	x_cmp(r, NFT_CMP_EQ, &uplink, 4);
	x_verdict(r, NF_ACCEPT);
	rule_send(b, r);
	r = rule_new(b, fam, DFW_CHAIN_ADMIT, NULL);
	x_meta_load(r, NFT_META_PRIORITY, NFT_REG_1);
	x_lookup(r, DFW_MAP_IN, NFT_REG_VERDICT, false);
	rule_send(b, r);
	r = rule_new(b, fam, DFW_CHAIN_ADMIT, "no realized policy");
	x_counter(r);
	x_verdict(r, NF_DROP);
	rule_send(b, r);
}

/* --- plan objects --------------------------------------------------------------- */

/* A policy rule; in an atom's chain or a leaf chain (atom), without the
 * tests a dispatch map's key implies, and with "goto admit" for "return"
 * (the chain was jumped to from the policy chain: dfw/dispatch.c,
 * dfw/factor.c).  Register 1
 * is loaded once for consecutive lookups of the same address (a side's
 * set, then its negated quarantine set): a lookup leaves its source
 * register as it was, so the second load, which nft would emit for the
 * same text, is work the kernel need not do at load or per packet. */
static void policy_rule(struct backend *b, const char *chain, const struct prule *pr, bool atom)
{
	char comment[48];
	struct xrule *r;
	uint32_t fam = 0;
	enum pitem_kind held = PI_VERDICT; /* the address in register 1: none */

	r = rule_new(b, NFPROTO_INET, chain, prule_comment(pr, comment, sizeof(comment)));
	for (size_t i = 0; i < pr->nitems; i++) {
		const struct pitem *it = &pr->items[i];
		bool v6 = fam == NFPROTO_IPV6;

		if (atom && disp_item_implied(it))
			continue;
		switch (it->kind) {
		case PI_PORT_SET:
			x_meta_load(r, it->u & PI_PORT_DST ? NFT_META_PRIORITY : NFT_META_MARK,
				    NFT_REG_1);
			x_lookup(r, it->name, -1, it->u & PI_LOOKUP_NEG);
			break;
		case PI_NFPROTO:
			fam = it->u;
			x_meta_load(r, NFT_META_NFPROTO, NFT_REG_1);
			x_cmp_u8(r, (uint8_t)fam);
			break;
		case PI_SADDR_SET:
		case PI_DADDR_SET:
			if (held != it->kind)
				x_payload(r, NFT_PAYLOAD_NETWORK_HEADER,
					  it->kind == PI_SADDR_SET ? (v6 ? 8 : 12) : (v6 ? 24 : 16),
					  v6 ? 16 : 4, NFT_REG_1);
			x_lookup(r, it->name, -1, it->u & PI_LOOKUP_NEG);
			held = it->kind;
			continue;
		case PI_SADDR_NET:
		case PI_DADDR_NET: {
			struct dfw_addr net;
			const char *why;

			if (addr_parse(it->name, &net, &why) < 0)
				abort(); /* written by plan_compile */
			x_addr_in(r, it->kind == PI_SADDR_NET, v6, &net, it->u & PI_LOOKUP_NEG);
			break;
		}
		case PI_L4PROTO:
			x_meta_load(r, NFT_META_L4PROTO, NFT_REG_1);
			x_cmp_u8(r, (uint8_t)it->u);
			break;
		case PI_DPORT: {
			uint16_t lo = htons(it->lo), hi = htons(it->hi);

			x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG_1);
			if (it->lo == it->hi)
				x_cmp(r, NFT_CMP_EQ, &lo, 2);
			else
				x_range(r, &lo, &hi, 2);
			break;
		}
		case PI_DPORT_SET:
			x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG_1);
			x_lookup(r, it->name, -1, false);
			break;
		case PI_ICMP_TYPE: /* after PI_L4PROTO: type, then code */
		case PI_ICMP_CODE:
			x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, it->kind == PI_ICMP_TYPE ? 0 : 1, 1,
				  NFT_REG_1);
			x_cmp_u8(r, (uint8_t)it->lo);
			break;
		case PI_JUMP:
			x_to_chain(r, NFT_JUMP, it->name);
			break;
		case PI_COUNTER:
			x_objref_counter(r, it->name);
			break;
		case PI_LOG:
			x_log_to(r, it->name, DFW_NFLOG_GROUP, 0);
			break;
		case PI_VERDICT:
			switch (it->u) {
			case PV_ACCEPT: x_verdict(r, NF_ACCEPT); break;
			case PV_DROP: x_verdict(r, NF_DROP); break;
			case PV_RETURN:
				if (atom)
					x_to_chain(r, NFT_GOTO, DFW_CHAIN_ADMIT);
				else
					x_verdict(r, NFT_RETURN);
				break;
			case PV_REJECT_TCP:
				x_reject(r, NFT_REJECT_TCP_RST, 0);
				break;
			case PV_REJECT_ICMPX:
				x_reject(r, NFT_REJECT_ICMPX_UNREACH, NFT_REJECT_ICMPX_ADMIN_PROHIBITED);
				break;
			}
			break;
		}
		held = PI_VERDICT; /* anything else may have written register 1 */
	}
	rule_send(b, r);
}

/* A segment's dispatch map of one protocol: port intervals -> verdicts. */
static void disp_map_msg(struct backend *b, const char *name, uint16_t type)
{
	const struct set_spec spec = { name, NFPROTO_INET, NFT_SET_MAP | NFT_SET_INTERVAL,
				       TYPE_INET_SERVICE, 2, NFT_DATA_VERDICT, 0, BO_BIG, 0 };

	set_msg(b, &spec, type);
}

/* A policy chain in its kernel form (kform_walk): the leaf chains first
 * (with their rules: they refer to no other chain), the atoms' chains
 * (their rules may jump to leaves), the maps that jump to them, then the
 * chain, whose dispatch rules bind the maps. */
struct chain_add_ctx {
	struct backend *b;
	char chain[PLAN_NAME_MAX];
};

static void ca_chain(void *arg, const char *name)
{
	struct chain_add_ctx *a = arg;

	plan_name_copy(a->chain, name);
	chain_msg(a->b, NFPROTO_INET, name, -1, 0, NFT_MSG_NEWCHAIN);
}

static void ca_rule(void *arg, const struct prule *pr, bool atom)
{
	struct chain_add_ctx *a = arg;

	policy_rule(a->b, a->chain, pr, atom);
}

/* A segment's map with its elements (port interval -> jump to the atom's
 * chain; an interval ends at the first port after it). */
static void ca_map(void *arg, const char *name, const struct kform_jump *j, size_t n)
{
	struct backend *b = ((struct chain_add_ctx *)arg)->b;
	struct elem *el = xcalloc(2 * n + 1, sizeof(*el));
	size_t m = 0;

	for (size_t i = 0; i < n; i++) {
		el[m].key[0] = (uint8_t)(j[i].lo >> 8);
		el[m].key[1] = (uint8_t)j[i].lo;
		el[m].key_len = 2;
		el[m++].jump = j[i].atom;
		if (j[i].hi < 65535) {
			el[m].key[0] = (uint8_t)((j[i].hi + 1) >> 8);
			el[m].key[1] = (uint8_t)(j[i].hi + 1);
			el[m].key_len = 2;
			el[m++].flags = NFT_SET_ELEM_INTERVAL_END;
		}
	}
	disp_map_msg(b, name, NFT_MSG_NEWSET);
	elems_msg(b, NFPROTO_INET, name, el, m, NFT_MSG_NEWSETELEM);
	free(el);
}

/* A segment's dispatch, in its chain's place: its map of one protocol. */
static void ca_map_lookup(void *arg, const struct pchain *c, size_t seg, uint8_t proto)
{
	struct chain_add_ctx *a = arg;
	char map[PLAN_NAME_MAX];
	struct xrule *r;

	disp_map_name(c, seg, proto, map, sizeof(map));
	r = rule_new(a->b, NFPROTO_INET, a->chain, NULL);
	x_meta_load(r, NFT_META_L4PROTO, NFT_REG_1);
	x_cmp_u8(r, proto);
	x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG_1);
	x_lookup(r, map, NFT_REG_VERDICT, false);
	rule_send(a->b, r);
}

static void chain_add(struct backend *b, const struct pchain *c)
{
	static const struct kform_ops ops = {
		.chain = ca_chain, .rule = ca_rule, .map = ca_map, .map_lookup = ca_map_lookup,
	};
	struct chain_add_ctx a = { .b = b };

	kform_walk(c, &ops, &a);
}

/* Deletes a policy chain with its dispatch and factored runs: its kernel
 * form's chains and maps, recorded by kform_walk, in the reverse order
 * (the chain, whose rules bind the maps; each segment's maps, whose
 * elements jump to its atoms' chains, then those chains; the leaves). */
struct chain_del_ctx {
	struct {
		bool map;
		char name[PLAN_NAME_MAX];
	} *v;
	size_t n, cap;
};

static void cd_push(struct chain_del_ctx *d, bool map, const char *name)
{
	grow((void **)&d->v, &d->cap, d->n + 1, sizeof(*d->v));
	d->v[d->n].map = map;
	plan_name_copy(d->v[d->n++].name, name);
}

static void cd_chain(void *arg, const char *name)
{
	cd_push(arg, false, name);
}

static void cd_map(void *arg, const char *name, const struct kform_jump *j, size_t n)
{
	(void)j, (void)n;
	cd_push(arg, true, name);
}

static void chain_del(struct backend *b, const struct pchain *c)
{
	static const struct kform_ops ops = { .chain = cd_chain, .map = cd_map };
	struct chain_del_ctx d = { 0 };

	kform_walk(c, &ops, &d);
	for (size_t i = d.n; i-- > 0;) {
		if (d.v[i].map)
			disp_map_msg(b, d.v[i].name, NFT_MSG_DELSET);
		else
			chain_msg(b, NFPROTO_INET, d.v[i].name, -1, 0, NFT_MSG_DELCHAIN);
	}
	free(d.v);
}

static size_t addr_len(uint8_t family)
{
	return family == AF_INET ? 4 : 16;
}

/* An interval [start, end): the end element is the first address after. */
static size_t interval_elems(const struct dfw_addr *a, struct elem *out)
{
	size_t len = addr_len(a->family), n = 0;
	uint8_t end[16];
	int carry = 1;

	memset(out, 0, 2 * sizeof(*out));
	memcpy(out[n].key, a->a, len);
	out[n++].key_len = (uint32_t)len;
	memcpy(end, a->a, len);
	for (int bit = (int)len * 8 - 1; bit >= a->plen; bit--)
		end[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
	for (int i = (int)len - 1; i >= 0 && carry; i--) {
		end[i]++;
		carry = end[i] == 0;
	}
	if (!carry) { /* no end element when the range runs to the last address */
		memcpy(out[n].key, end, len);
		out[n].key_len = (uint32_t)len;
		out[n++].flags = NFT_SET_ELEM_INTERVAL_END;
	}
	return n;
}

/* A port range [lo, hi] as interval elements: lo, and hi + 1 as the end
 * (none when the range runs to 65535). */
static size_t range_elems(const struct dfw_addr *a, struct elem *out)
{
	unsigned hi = (unsigned)(a->a[2] << 8 | a->a[3]);
	size_t n = 0;

	memset(out, 0, 2 * sizeof(*out));
	memcpy(out[n].key, a->a, 2);
	out[n++].key_len = 2;
	if (hi < 65535) {
		out[n].key[0] = (uint8_t)((hi + 1) >> 8);
		out[n].key[1] = (uint8_t)(hi + 1);
		out[n].key_len = 2;
		out[n++].flags = NFT_SET_ELEM_INTERVAL_END;
	}
	return n;
}

static void addr_elems(struct backend *b, const struct pset *s, const struct dfw_addr *addrs,
		       size_t n, uint16_t type)
{
	struct elem *el = xcalloc(2 * n, sizeof(*el));
	size_t ne = 0;

	for (size_t i = 0; i < n; i++) {
		if (s->service) {
			ne += range_elems(&addrs[i], &el[ne]);
		} else if (s->interval) {
			ne += interval_elems(&addrs[i], &el[ne]);
		} else { /* a host address or a vNIC id */
			size_t len = s->family ? addr_len(s->family) : 4;

			memcpy(el[ne].key, addrs[i].a, len);
			el[ne++].key_len = (uint32_t)len;
		}
	}
	elems_msg(b, NFPROTO_INET, s->name, el, ne, type);
	free(el);
}

static void set_add(struct backend *b, const struct pset *s)
{
	struct set_spec spec = {
		s->name, NFPROTO_INET, s->interval ? NFT_SET_INTERVAL : 0,
		s->family == AF_INET ? TYPE_IPADDR : TYPE_IP6ADDR,
		(uint32_t)addr_len(s->family), 0, 0, BO_BIG, 0
	};

	if (s->service) /* port ranges */
		spec = (struct set_spec){ s->name, NFPROTO_INET, NFT_SET_INTERVAL,
					  TYPE_INET_SERVICE, 2, 0, 0, BO_BIG, 0 };
	else if (!s->family) /* vNIC ids */
		spec = (struct set_spec){ s->name, NFPROTO_INET, 0,
					  s->dst ? TYPE_CLASSID : TYPE_MARK, 4, 0, 0, BO_HOST, 0 };
	spec.size = s->size;
	set_msg(b, &spec, NFT_MSG_NEWSET);
	addr_elems(b, s, s->elems, s->nelems, NFT_MSG_NEWSETELEM);
}

static void set_del(struct backend *b, const struct pset *s)
{
	struct set_spec spec = { .name = s->name, .family = NFPROTO_INET };

	set_msg(b, &spec, NFT_MSG_DELSET);
}

/* A named counter object in the inet table, created with a count (a full
 * load carries counts over) or deleted. */
static void counter_msg(struct backend *b, const char *name, uint16_t type, uint64_t packets,
			uint64_t bytes)
{
	struct nftnl_obj *o = nftnl_obj_alloc();
	struct nlmsghdr *nlh;

	nftnl_obj_set_str(o, NFTNL_OBJ_TABLE, b->table);
	nftnl_obj_set_str(o, NFTNL_OBJ_NAME, name);
	nftnl_obj_set_u32(o, NFTNL_OBJ_FAMILY, NFPROTO_INET);
	nftnl_obj_set_u32(o, NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
	if (type == NFT_MSG_NEWOBJ) {
		nftnl_obj_set_u64(o, NFTNL_OBJ_CTR_PKTS, packets);
		nftnl_obj_set_u64(o, NFTNL_OBJ_CTR_BYTES, bytes);
	}
	nlh = msg_hdr(b, type, NFPROTO_INET, type == NFT_MSG_NEWOBJ ? NLM_F_CREATE : 0);
	nftnl_obj_nlmsg_build_payload(nlh, o);
	msg_done(b, nlh);
	nftnl_obj_free(o);
}

static void ifname_key(struct elem *e, const char *ifname)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->key, ifname, strnlen(ifname, IFNAMSIZ - 1));
	e->key_len = IFNAMSIZ;
}

/* Adds or deletes every element that realizes ports. */
static void ports_msg(struct backend *b, const struct pport *const *ports, size_t n,
		      uint16_t type)
{
	struct elem *src = xcalloc(n, sizeof(*src)), *dst = xcalloc(n, sizeof(*dst));
	struct elem *mac = xcalloc(n, sizeof(*mac));
	struct elem *out = xcalloc(n, sizeof(*out)), *in = xcalloc(n, sizeof(*in));
	struct elem *ip4 = NULL, *ip6 = NULL, *own4 = NULL, *own6 = NULL, *to4 = NULL, *to6 = NULL;
	struct elem *learn4 = xcalloc(n + 1, sizeof(*learn4)), *learn6 = xcalloc(n + 1, sizeof(*learn6));
	size_t n4 = 0, n6 = 0, no4 = 0, no6 = 0, nt4 = 0, nt6 = 0, naddrs = 0, nl4 = 0, nl6 = 0;

	for (size_t i = 0; i < n; i++)
		naddrs += ports[i]->naddrs;
	ip4 = xcalloc(naddrs, sizeof(*ip4));
	ip6 = xcalloc(naddrs, sizeof(*ip6));
	own4 = xcalloc(naddrs, sizeof(*own4));
	own6 = xcalloc(naddrs, sizeof(*own6));
	to4 = xcalloc(naddrs, sizeof(*to4));
	to6 = xcalloc(naddrs, sizeof(*to6));
	for (size_t i = 0; i < n; i++) {
		const struct pport *p = ports[i];

		ifname_key(&src[i], p->ifname);
		src[i].has_data = true;
		src[i].data = p->id;
		dst[i] = src[i];
		ifname_key(&mac[i], p->ifname);
		memcpy(mac[i].key + IFNAMSIZ, p->mac, 6);
		mac[i].key_len = IFNAMSIZ + 8;
		memset(&out[i], 0, sizeof(out[i]));
		memcpy(out[i].key, &p->id, 4);
		out[i].key_len = 4;
		out[i].jump = p->out_chain;
		in[i] = out[i];
		in[i].jump = p->in_chain;
		if (p->learn4)
			ifname_key(&learn4[nl4++], p->ifname);
		if (p->learn6)
			ifname_key(&learn6[nl6++], p->ifname);
		for (size_t a = 0; a < p->naddrs; a++) {
			const struct dfw_addr *ad = &p->addrs[a];
			struct elem *e = ad->family == AF_INET ? &ip4[n4++] : &ip6[n6++];

			ifname_key(e, p->ifname);
			memcpy(e->key + IFNAMSIZ, ad->a, addr_len(ad->family));
			e->key_len = (uint32_t)(IFNAMSIZ + addr_len(ad->family));
			/* To the port: every address but "::", no packet's
			 * destination. */
			if (pport_dst_addr(ad)) {
				struct elem *t = ad->family == AF_INET ? &to4[nt4++] : &to6[nt6++];

				*t = *e;
				t->has_data = true;
				t->data = p->id;
			}
			/* The long way: past the learn rules (a learning port's
			 * link-local and "::" are in port_ip6 from the start),
			 * and for "::", past unspecified_rules(). */
			if (!pport_fast_addr(p, ad))
				continue;
			e = ad->family == AF_INET ? &own4[no4++] : &own6[no6++];
			*e = mac[i];
			memcpy(e->key + IFNAMSIZ + 8, ad->a, addr_len(ad->family));
			e->key_len = (uint32_t)(IFNAMSIZ + 8 + addr_len(ad->family));
			e->has_data = true;
			e->data = p->id;
		}
	}
	/* Dispatch first on delete, last on add: a port never points nowhere. */
	if (type == NFT_MSG_DELSETELEM) {
		elems_msg(b, NFPROTO_INET, DFW_MAP_OUT, out, n, type);
		elems_msg(b, NFPROTO_INET, DFW_MAP_IN, in, n, type);
	}
	elems_msg(b, NFPROTO_BRIDGE, DFW_MAP_PORT_SRC, src, n, type);
	elems_msg(b, NFPROTO_BRIDGE, DFW_MAP_PORT_DST, dst, n, type);
	elems_msg(b, NFPROTO_BRIDGE, DFW_SET_PORT_MAC, mac, n, type);
	elems_msg(b, NFPROTO_BRIDGE, DFW_SET_PORT_IP4, ip4, n4, type);
	elems_msg(b, NFPROTO_BRIDGE, DFW_SET_PORT_IP6, ip6, n6, type);
	elems_msg(b, NFPROTO_BRIDGE, DFW_SET_PORT_ND6, ip6, n6, type); /* the same keys */
	elems_msg(b, NFPROTO_BRIDGE, DFW_SET_LEARN4, learn4, nl4, type);
	elems_msg(b, NFPROTO_BRIDGE, DFW_SET_LEARN6, learn6, nl6, type);
	elems_msg(b, NFPROTO_BRIDGE, DFW_MAP_PORT_SRC4, own4, no4, type);
	elems_msg(b, NFPROTO_BRIDGE, DFW_MAP_PORT_SRC6, own6, no6, type);
	elems_msg(b, NFPROTO_BRIDGE, DFW_MAP_PORT_DST4, to4, nt4, type);
	elems_msg(b, NFPROTO_BRIDGE, DFW_MAP_PORT_DST6, to6, nt6, type);
	if (type == NFT_MSG_NEWSETELEM) {
		elems_msg(b, NFPROTO_INET, DFW_MAP_OUT, out, n, type);
		elems_msg(b, NFPROTO_INET, DFW_MAP_IN, in, n, type);
	}
	free(src);
	free(dst);
	free(mac);
	free(out);
	free(in);
	free(ip4);
	free(ip6);
	free(own4);
	free(own6);
	free(to4);
	free(to6);
	free(learn4);
	free(learn6);
}

/* --- sending ---------------------------------------------------------------------- */

struct msg_attrs {
	const struct nlattr *name;  /* the object's name, or the set's or chain's */
	size_t nelems;              /* NFTA_SET_ELEM_LIST_ELEMENTS entries */
	bool has_elems;
	uint16_t name_type;
};

static int msg_attr_cb(const struct nlattr *a, void *data)
{
	struct msg_attrs *m = data;

	if (mnl_attr_get_type(a) == m->name_type && !mnl_attr_validate(a, MNL_TYPE_NUL_STRING))
		m->name = a;
	if (m->name_type == NFTA_SET_ELEM_LIST_SET &&
	    mnl_attr_get_type(a) == NFTA_SET_ELEM_LIST_ELEMENTS) {
		const struct nlattr *e;

		m->has_elems = true;
		mnl_attr_for_each_nested(e, a)
			m->nelems++;
	}
	return MNL_CB_OK;
}

/* What the batch's message seq did, read back from the message itself, in
 * words: "add set g-web-4", "add 3 element(s) of set g-web-4", ... */
static const char *msg_what(struct backend *b, uint32_t seq)
{
	static const struct {
		uint16_t type, name_type;
		const char *verb, *noun;
	} kinds[] = {
		{ NFT_MSG_NEWTABLE, NFTA_TABLE_NAME, "add", "table" },
		{ NFT_MSG_DELTABLE, NFTA_TABLE_NAME, "delete", "table" },
		{ NFT_MSG_NEWCHAIN, NFTA_CHAIN_NAME, "add", "chain" },
		{ NFT_MSG_DELCHAIN, NFTA_CHAIN_NAME, "delete", "chain" },
		{ NFT_MSG_NEWSET, NFTA_SET_NAME, "add", "set" },
		{ NFT_MSG_DELSET, NFTA_SET_NAME, "delete", "set" },
		{ NFT_MSG_NEWSETELEM, NFTA_SET_ELEM_LIST_SET, "add", "set" },
		{ NFT_MSG_DELSETELEM, NFTA_SET_ELEM_LIST_SET, "delete", "set" },
		{ NFT_MSG_NEWRULE, NFTA_RULE_CHAIN, "add rule to", "chain" },
		{ NFT_MSG_NEWOBJ, NFTA_OBJ_NAME, "add", "counter" },
		{ NFT_MSG_DELOBJ, NFTA_OBJ_NAME, "delete", "counter" },
	};
	const struct nlmsghdr *nlh = NULL;
	struct msg_attrs m = { 0 };
	size_t k;

	for (size_t i = 0; i < b->nmsgs && !nlh; i++)
		if (b->msgs[i].seq == seq)
			nlh = (const struct nlmsghdr *)(b->buf + b->msgs[i].off);
	if (!nlh)
		return "batch";
	if (nlh->nlmsg_type == NFNL_MSG_BATCH_BEGIN)
		return "batch begin";
	if (nlh->nlmsg_type == NFNL_MSG_BATCH_END)
		return "batch end";
	for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
		if (kinds[k].type == NFNL_MSG_TYPE(nlh->nlmsg_type))
			break;
	if (k == sizeof(kinds) / sizeof(kinds[0])) {
		snprintf(b->what, sizeof(b->what), "message of type %u", nlh->nlmsg_type);
		return b->what;
	}
	m.name_type = kinds[k].name_type;
	mnl_attr_parse(nlh, sizeof(struct nfgenmsg), msg_attr_cb, &m);
	if (m.name_type == NFTA_SET_ELEM_LIST_SET && !m.has_elems)
		snprintf(b->what, sizeof(b->what), "flush set %s",
			 m.name ? mnl_attr_get_str(m.name) : "?");
	else if (m.name_type == NFTA_SET_ELEM_LIST_SET)
		snprintf(b->what, sizeof(b->what), "%s %zu element(s) of set %s", kinds[k].verb,
			 m.nelems, m.name ? mnl_attr_get_str(m.name) : "?");
	else
		snprintf(b->what, sizeof(b->what), "%s %s %s", kinds[k].verb, kinds[k].noun,
			 m.name ? mnl_attr_get_str(m.name) : "?");
	return b->what;
}

/* The kernel's extended-ack message, if any. */
static const char *ext_ack_msg(const struct nlmsghdr *nlh)
{
	const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *attr;
	size_t off = sizeof(*e);

	if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS))
		return NULL;
	if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
		off += e->msg.nlmsg_len - sizeof(e->msg);
	mnl_attr_for_each(attr, nlh, off + 0) {
		if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG)
			return mnl_attr_get_str(attr);
	}
	return NULL;
}

/* Sends the batch, then a get-generation request as a fence: every error
 * of the batch arrives before the fence's answer. */
static int batch_send(struct backend *b, bool check_only, struct backend_stats *st,
		      char *err, size_t errlen)
{
	struct nlmsghdr *nlh;
	uint32_t fence;
	char *rbuf = b->rbuf;
	int ret = -1, sndbuf;
	bool done = false, failed = false;

	if (!check_only) {
		nlh = nftnl_batch_end(msg_room(b), b->seq++);
		msg_done(b, nlh);
	}
	sndbuf = (int)(b->len + 65536);
	setsockopt(mnl_socket_get_fd(b->nl), SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf));
	if (mnl_socket_sendto(b->nl, b->buf, b->len) < 0) {
		snprintf(err, errlen, "sending the batch (%zu bytes): %s", b->len, strerror(errno));
		goto out;
	}
	/* nfnetlink ignores whatever follows the batch in the same message, so
	 * the fence goes on its own; the batch was processed during sendmsg. */
	fence = b->seq++;
	nlh = nftnl_nlmsg_build_hdr(msg_room(b), NFT_MSG_GETGEN, AF_UNSPEC, NLM_F_REQUEST, fence);
	if (mnl_socket_sendto(b->nl, nlh, nlh->nlmsg_len) < 0) {
		snprintf(err, errlen, "asking for the ruleset generation: %s", strerror(errno));
		goto out;
	}
	if (st) {
		st->msgs = b->nmsgs;
		st->bytes = b->len;
	}
	while (!done) {
		ssize_t n = nl_recv(b, rbuf, RBUF_SIZE);

		if (n < 0) {
			snprintf(err, errlen, "reading the kernel's answer: %s (whether the batch was "
				 "committed is unknown)", strerror(errno));
			goto out;
		}
		for (nlh = (struct nlmsghdr *)rbuf; mnl_nlmsg_ok(nlh, (int)n);
		     nlh = mnl_nlmsg_next(nlh, (int *)&n)) {
			if (nlh->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
				const char *ext = ext_ack_msg(nlh);

				if (e->error && !failed) {
					snprintf(err, errlen, "kernel refused the change (%s): %s%s%s",
						 msg_what(b, nlh->nlmsg_seq), strerror(-e->error),
						 ext ? ": " : "", ext ? ext : "");
					failed = true;
					b->own_refused = b->own && e->error == -EOPNOTSUPP &&
							 (nlh->nlmsg_seq == b->own_seq[0] ||
							  nlh->nlmsg_seq == b->own_seq[1]);
				}
				if (nlh->nlmsg_seq == fence)
					done = true;
				continue;
			}
			if (nlh->nlmsg_seq == fence) {
				struct nftnl_gen *g = nftnl_gen_alloc();

				if (st && nftnl_gen_nlmsg_parse(nlh, g) == 0)
					st->genid = nftnl_gen_get_u32(g, NFTNL_GEN_ID);
				nftnl_gen_free(g);
				done = true;
			}
		}
	}
	ret = failed ? -1 : 0;
out:
	/* A full load can grow the batch buffer to tens of MiB; do not keep
	 * that for the small batches that follow. */
	if (b->cap > BATCH_KEEP) {
		free(b->buf);
		b->buf = NULL;
		b->cap = 0;
		free(b->msgs);
		b->msgs = NULL;
		b->capmsgs = 0;
	}
	return ret;
}

static void block_elems(struct backend *b, const struct backend_block *bl, size_t n);

/* The uplinks' ids, in both port maps (no anti-spoofing, no dispatch). */
static void uplinks_msg(struct backend *b, const struct plan *pl)
{
	struct elem e[DFW_MAX_UPLINKS];

	for (size_t i = 0; i < pl->nuplinks; i++) {
		ifname_key(&e[i], pl->uplinks[i]);
		e[i].has_data = true;
		e[i].data = DFW_UPLINK_ID;
	}
	elems_msg(b, NFPROTO_BRIDGE, DFW_MAP_PORT_SRC, e, pl->nuplinks, NFT_MSG_NEWSETELEM);
	elems_msg(b, NFPROTO_BRIDGE, DFW_MAP_PORT_DST, e, pl->nuplinks, NFT_MSG_NEWSETELEM);
}

/* Counter values read back, sorted by name. */
struct counter_vals {
	struct counter_val { char name[PLAN_NAME_MAX]; uint64_t packets, bytes; } *v;
	size_t n, cap;
};

static void collect_counter(void *arg, const char *name, uint64_t packets, uint64_t bytes)
{
	struct counter_vals *c = arg;

	grow((void **)&c->v, &c->cap, c->n + 1, sizeof(*c->v));
	snprintf(c->v[c->n].name, sizeof(c->v[c->n].name), "%s", name);
	c->v[c->n].packets = packets;
	c->v[c->n++].bytes = bytes;
}

static int cmp_counter_val(const void *x, const void *y)
{
	return strcmp(((const struct counter_val *)x)->name, ((const struct counter_val *)y)->name);
}

static const struct counter_val *counter_find(const struct counter_vals *c, const char *name)
{
	struct counter_val key;

	if (!c->n)
		return NULL;
	snprintf(key.name, sizeof(key.name), "%s", name);
	return bsearch(&key, c->v, c->n, sizeof(*c->v), cmp_counter_val);
}

static void op_block_elems(struct backend *b, const struct backend_op_blocks *ob);

static int load(struct backend *b, const struct plan *pl, const struct backend_op_blocks *ob,
		bool check_only, struct backend_stats *st, char *err, size_t errlen)
{
	const struct pport **ports = xcalloc(pl->nports, sizeof(*ports));
	size_t *order;
	struct backend_block *blocks = NULL;
	struct counter_vals old = { 0 };
	size_t nblocks = 0;
	char rerr[256];
	int ret;

	/* Timed blocks outlive a reload (and a restart of dfwd): they carry
	 * over with the time they have left.  So do the rule counters that
	 * the plan keeps, with their counts (what is counted between this
	 * read and the commit is lost). */
	if (backend_tables_exist(b)) {
		backend_read_blocks(b, &blocks, &nblocks, rerr, sizeof(rerr));
		if (backend_read_counters(b, collect_counter, &old, rerr, sizeof(rerr)) == 0 && old.n)
			qsort(old.v, old.n, sizeof(*old.v), cmp_counter_val);
	}
	batch_begin(b);
	/* add + delete + add: the table is replaced whether or not it existed. */
	for (int i = 0; i < 2; i++) {
		uint16_t fam = i ? NFPROTO_INET : NFPROTO_BRIDGE;

		/* Another process's table is refused at the first message
		 * (EPERM); an orphaned one of ours is deleted and made anew. */
		table_msg(b, fam, NFT_MSG_NEWTABLE);
		table_msg(b, fam, NFT_MSG_DELTABLE);
		table_msg_owned(b, fam, NFT_MSG_NEWTABLE, b->own);
	}
	bridge_objects(b);
	order = xcalloc(pl->nsets + 1, sizeof(*order));
	plan_set_order(pl, order);
	for (size_t i = 0; i < pl->nsets; i++)
		set_add(b, &pl->sets[order[i]]);
	free(order);
	/* enforce names it; plan_compile makes it, a plan made by hand may
	 * not have it. */
	if (!plan_find_set(pl, DFW_SET_ISOLATED)) {
		struct pset iso = { .name = DFW_SET_ISOLATED, .dst = true };

		set_add(b, &iso);
	}
	for (size_t i = 0; i < pl->ncounters; i++) {
		const struct counter_val *v = counter_find(&old, pl->counters[i]);

		counter_msg(b, pl->counters[i], NFT_MSG_NEWOBJ, v ? v->packets : 0, v ? v->bytes : 0);
	}
	/* Atoms' chains goto admit (dfw/dispatch.c); inet_base fills it. */
	chain_msg(b, NFPROTO_INET, DFW_CHAIN_ADMIT, -1, 0, NFT_MSG_NEWCHAIN);
	for (size_t i = 0; i < pl->nchains; i++)
		chain_add(b, &pl->chains[i]);
	inet_base(b);
	for (size_t i = 0; i < pl->nports; i++)
		ports[i] = &pl->ports[i];
	ports_msg(b, ports, pl->nports, NFT_MSG_NEWSETELEM);
	uplinks_msg(b, pl);
	block_elems(b, blocks, nblocks);
	if (ob)
		op_block_elems(b, ob);
	free(ports);
	free(blocks);
	free(old.v);
	ret = batch_send(b, check_only, st, err, errlen);
	return ret;
}

/* load(), again without owning the tables when the kernel refused that
 * (it predates NFT_TABLE_F_PERSIST, Linux 6.9): the tables are then
 * anyone's to change, as before. */
static int load_owned(struct backend *b, const struct plan *pl,
		      const struct backend_op_blocks *ob, bool check_only,
		      struct backend_stats *st, char *err, size_t errlen)
{
	int ret;

	b->own_refused = false;
	ret = load(b, pl, ob, check_only, st, err, errlen);
	if (ret < 0 && b->own_refused) {
		b->own = false;
		ret = load(b, pl, ob, check_only, st, err, errlen);
	}
	return ret;
}

int backend_load(struct backend *b, const struct plan *pl, bool check_only,
		 struct backend_stats *st, char *err, size_t errlen)
{
	return load_owned(b, pl, NULL, check_only, st, err, errlen);
}

int backend_load_blocks(struct backend *b, const struct plan *pl,
			const struct backend_op_blocks *ob, struct backend_stats *st, char *err,
			size_t errlen)
{
	return load_owned(b, pl, ob, false, st, err, errlen);
}

void backend_own_tables(struct backend *b, bool own)
{
	b->own = own;
}

bool backend_owns_tables(const struct backend *b)
{
	return b->own;
}

static int cmp_change_set(const void *x, const void *y)
{
	const struct pelem_change *a = x, *b = y;

	return a->set < b->set ? -1 : a->set > b->set;
}

/* Element changes grouped by set, one message per set (and per
 * ELEMS_PER_MSG): the kernel finds a set by walking the table's sets by
 * name, once per message. */
static void elem_changes(struct backend *b, const struct pelem_change *c, size_t n,
			 uint16_t type)
{
	struct pelem_change *sorted = xcalloc(n + 1, sizeof(*sorted));
	struct dfw_addr *addrs = xcalloc(n + 1, sizeof(*addrs));

	if (n) {
		memcpy(sorted, c, n * sizeof(*c));
		qsort(sorted, n, sizeof(*sorted), cmp_change_set);
	}
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i; j < n && sorted[j].set == sorted[i].set; j++)
			addrs[j - i] = sorted[j].addr;
		addr_elems(b, sorted[i].set, addrs, j - i, type);
	}
	free(sorted);
	free(addrs);
}

int backend_apply(struct backend *b, const struct plan_diff *d, bool check_only,
		  struct backend_stats *st, char *err, size_t errlen)
{
	if (plan_diff_empty(d)) {
		if (st)
			memset(st, 0, sizeof(*st));
		return 0;
	}
	batch_begin(b);
	/* Order: unhook what goes away, change sets, add new objects, hook them,
	 * then delete what is no longer referenced. */
	ports_msg(b, d->port_del, d->nport_del, NFT_MSG_DELSETELEM);
	elem_changes(b, d->elem_del, d->nelem_del, NFT_MSG_DELSETELEM);
	for (size_t i = 0; i < d->nset_add; i++)
		set_add(b, d->set_add[i]);
	elem_changes(b, d->elem_add, d->nelem_add, NFT_MSG_NEWSETELEM);
	for (size_t i = 0; i < d->ncounter_add; i++)
		counter_msg(b, d->counter_add[i], NFT_MSG_NEWOBJ, 0, 0);
	for (size_t i = 0; i < d->nchain_add; i++)
		chain_add(b, d->chain_add[i]);
	ports_msg(b, d->port_add, d->nport_add, NFT_MSG_NEWSETELEM);
	for (size_t i = 0; i < d->nchain_del; i++)
		chain_del(b, d->chain_del[i]);
	for (size_t i = 0; i < d->nset_del; i++)
		set_del(b, d->set_del[i]);
	/* Only once the chains whose rules referenced them are gone. */
	for (size_t i = 0; i < d->ncounter_del; i++)
		counter_msg(b, d->counter_del[i], NFT_MSG_DELOBJ, 0, 0);
	return batch_send(b, check_only, st, err, errlen);
}

/* --- conntrack ---------------------------------------------------------------------- */

/* The kernel's tuple filter flags (net/netfilter/nf_internals.h, part of
 * ctnetlink's ABI since Linux 5.8): which fields of CTA_TUPLE_ORIG a
 * filtered dump compares. */
#define CT_FILTER_IP_SRC (1u << 0)
#define CT_FILTER_IP_DST (1u << 1)

/* What finding a cut's entries costs, measured on the development machine
 * (docs/PERFORMANCE.md, "Cutting connections"): every dump takes each
 * bucket's lock, empty or not; a whole-table dump copies every entry out
 * for us to read, a filtered one compares each entry in the kernel and
 * copies only the matches. */
#define CT_NS_PER_BUCKET 35
#define CT_NS_PER_ENTRY_COPIED 2000
#define CT_NS_PER_ENTRY_FILTERED 250

struct ct_victims {
	const struct dfw_addr *addrs;
	size_t naddrs;
	struct { uint8_t *tuple; size_t len; uint16_t zone; bool has_zone; uint8_t family; } *v;
	size_t n, cap;
};

static bool tuple_ip_matches(const struct nlattr *ipnest, uint8_t family,
			     const struct dfw_addr *addrs, size_t n)
{
	const struct nlattr *a;

	mnl_attr_for_each_nested(a, ipnest) {
		uint16_t t = mnl_attr_get_type(a);
		size_t len = family == AF_INET ? 4 : 16;

		if (t != CTA_IP_V4_SRC && t != CTA_IP_V4_DST && t != CTA_IP_V6_SRC &&
		    t != CTA_IP_V6_DST)
			continue;
		if (mnl_attr_get_payload_len(a) < len)
			continue;
		for (size_t i = 0; i < n; i++)
			if (addrs[i].family == family &&
			    !memcmp(addrs[i].a, mnl_attr_get_payload(a), len))
				return true;
	}
	return false;
}

/* Keeps an entry of the dump whose original tuple has one of the victims'
 * addresses: all a whole-table dump sends, and a check of what a filtered
 * dump sends. */
static int ct_dump_cb(const struct nlmsghdr *nlh, void *data)
{
	struct ct_victims *cv = data;
	const struct nfgenmsg *nfg = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *a, *orig = NULL, *zone = NULL;
	bool match = false;

	mnl_attr_for_each(a, nlh, sizeof(*nfg)) {
		if (mnl_attr_get_type(a) == CTA_TUPLE_ORIG)
			orig = a;
		else if (mnl_attr_get_type(a) == CTA_ZONE)
			zone = a;
	}
	if (!orig)
		return MNL_CB_OK;
	mnl_attr_for_each_nested(a, orig)
		if (mnl_attr_get_type(a) == CTA_TUPLE_IP)
			match = tuple_ip_matches(a, nfg->nfgen_family, cv->addrs, cv->naddrs);
	if (!match)
		return MNL_CB_OK;
	grow((void **)&cv->v, &cv->cap, cv->n + 1, sizeof(*cv->v));
	cv->v[cv->n].len = orig->nla_len;
	cv->v[cv->n].tuple = xmalloc(orig->nla_len);
	memcpy(cv->v[cv->n].tuple, orig, orig->nla_len);
	cv->v[cv->n].has_zone = zone != NULL;
	cv->v[cv->n].zone = zone ? mnl_attr_get_u16(zone) : 0;
	cv->v[cv->n].family = nfg->nfgen_family;
	cv->n++;
	return MNL_CB_OK;
}

/* Sends one ctnetlink request and runs cb over the answer until done. */
static int ct_talk(struct backend *b, struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
	char *rbuf = b->rbuf;
	uint32_t portid = mnl_socket_get_portid(b->nl);
	ssize_t n;
	int ret = 0;

	if (mnl_socket_sendto(b->nl, nlh, nlh->nlmsg_len) < 0) {
		ret = -1;
		goto out;
	}
	while ((n = nl_recv(b, rbuf, RBUF_SIZE)) > 0) {
		ret = mnl_cb_run(rbuf, (size_t)n, nlh->nlmsg_seq, portid, cb, data);
		if (ret <= 0)
			break;
	}
	if (n < 0)
		ret = -1;
out:
	return ret < 0 ? -1 : 0;
}

static struct nlmsghdr *ct_msg(void *buf, struct backend *b, uint16_t type, uint16_t flags,
			       uint8_t family)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct nfgenmsg *nfg;

	nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | type;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	nlh->nlmsg_seq = b->seq++;
	nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
	nfg->nfgen_family = family;
	nfg->version = NFNETLINK_V0;
	return nlh;
}

/* Lists entries into cv: the whole table (a == NULL), or, compared in the
 * kernel, those whose original source (side CT_FILTER_IP_SRC) or
 * destination (CT_FILTER_IP_DST) is a. */
static int ct_dump(struct backend *b, const struct dfw_addr *a, uint32_t side,
		   struct ct_victims *cv)
{
	char buf[REQ_BUF_SIZE] = { 0 };
	struct nlmsghdr *nlh = ct_msg(buf, b, IPCTNL_MSG_CT_GET, NLM_F_DUMP,
				      a ? a->family : AF_UNSPEC);
	struct nlattr *nest, *ip;

	if (a) {
		bool v4 = a->family == AF_INET;
		uint16_t type = side == CT_FILTER_IP_SRC ? (v4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC)
							 : (v4 ? CTA_IP_V4_DST : CTA_IP_V6_DST);

		nest = mnl_attr_nest_start(nlh, CTA_TUPLE_ORIG);
		ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
		mnl_attr_put(nlh, type, v4 ? 4 : 16, a->a);
		mnl_attr_nest_end(nlh, ip);
		mnl_attr_nest_end(nlh, nest);
		nest = mnl_attr_nest_start(nlh, CTA_FILTER);
		mnl_attr_put_u32(nlh, CTA_FILTER_ORIG_FLAGS, side);
		mnl_attr_put_u32(nlh, CTA_FILTER_REPLY_FLAGS, 0);
		mnl_attr_nest_end(nlh, nest);
	}
	return ct_talk(b, nlh, ct_dump_cb, cv);
}

/* Deletes the listed entries, as many requests per send as one buffer
 * holds, then reads their acknowledgements.  An entry that expired
 * meanwhile, or that two filtered dumps both listed, is gone already
 * (ENOENT): as good as deleted, and not counted. */
static int ct_delete(struct backend *b, const struct ct_victims *cv, size_t *deleted,
		     char *err, size_t errlen)
{
	char buf[REQ_BUF_SIZE];
	int fail = 0;

	for (size_t i = 0; i < cv->n;) {
		size_t len = 0, sent = 0, acked = 0;

		/* Room for a header, the nfgenmsg, the tuple and a zone. */
		while (i < cv->n && len + MNL_NLMSG_HDRLEN + 16 + cv->v[i].len + 8 <= sizeof(buf)) {
			struct nlmsghdr *nlh = ct_msg(buf + len, b, IPCTNL_MSG_CT_DELETE, NLM_F_ACK,
						      cv->v[i].family);

			memcpy((char *)nlh + nlh->nlmsg_len, cv->v[i].tuple, cv->v[i].len);
			nlh->nlmsg_len += MNL_ALIGN((uint32_t)cv->v[i].len);
			if (cv->v[i].has_zone)
				mnl_attr_put_u16(nlh, CTA_ZONE, cv->v[i].zone);
			len += nlh->nlmsg_len;
			sent++;
			i++;
		}
		if (mnl_socket_sendto(b->nl, buf, len) < 0) {
			snprintf(err, errlen, "deleting conntrack entries: %s", strerror(errno));
			return -1;
		}
		while (acked < sent) {
			ssize_t n = nl_recv(b, b->rbuf, RBUF_SIZE);
			int left = (int)n;

			if (n < 0) {
				snprintf(err, errlen, "deleting conntrack entries: %s", strerror(errno));
				return -1;
			}
			for (const struct nlmsghdr *h = (const struct nlmsghdr *)b->rbuf;
			     mnl_nlmsg_ok(h, left); h = mnl_nlmsg_next(h, &left)) {
				const struct nlmsgerr *e = mnl_nlmsg_get_payload(h);

				if (h->nlmsg_type != NLMSG_ERROR)
					continue;
				acked++;
				if (!e->error)
					(*deleted)++;
				else if (e->error != -ENOENT && !fail)
					fail = -e->error;
			}
		}
	}
	if (fail)
		snprintf(err, errlen, "deleting a conntrack entry: %s", strerror(fail));
	return fail ? -1 : 0;
}

/* One of this namespace's conntrack figures, or -1 when there is none
 * (no conntrack module). */
static long ct_sysctl(const char *name)
{
	char path[96];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/sys/net/netfilter/%s", name);
	if (!(f = fopen(path, "r")))
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* How to find the entries: by the cost model above, unless told. */
static enum backend_cut_how ct_how(enum backend_cut_how how, size_t naddrs, long entries)
{
	long buckets = ct_sysctl("nf_conntrack_buckets");
	double walk, whole, filtered;

	if (how != BACKEND_CUT_AUTO)
		return how;
	if (entries < 0 || buckets < 0)
		return BACKEND_CUT_WHOLE;
	walk = (double)buckets * CT_NS_PER_BUCKET;
	whole = walk + (double)entries * CT_NS_PER_ENTRY_COPIED;
	filtered = 2.0 * (double)naddrs * (walk + (double)entries * CT_NS_PER_ENTRY_FILTERED);
	return filtered < whole ? BACKEND_CUT_FILTERED : BACKEND_CUT_WHOLE;
}

long backend_ct_entries(void)
{
	return ct_sysctl("nf_conntrack_count");
}

int backend_ct_flush(struct backend *b, const struct dfw_addr *addrs, size_t n,
		     enum backend_cut_how how, struct backend_cut *cut, char *err,
		     size_t errlen)
{
	struct ct_victims cv = { .addrs = addrs, .naddrs = n };
	int ret = -1;

	memset(cut, 0, sizeof(*cut));
	cut->entries = backend_ct_entries();
	/* An empty table: nothing to walk (a dump would still take every
	 * bucket's lock). */
	if (!n || cut->entries == 0)
		return 0;
	cut->how = ct_how(how, n, cut->entries);
	if (cut->how == BACKEND_CUT_WHOLE) {
		cut->dumps = 1;
		if (ct_dump(b, NULL, 0, &cv) < 0)
			goto dump_failed;
	} else {
		for (size_t i = 0; i < n; i++) {
			cut->dumps += 2;
			if (ct_dump(b, &addrs[i], CT_FILTER_IP_SRC, &cv) < 0 ||
			    ct_dump(b, &addrs[i], CT_FILTER_IP_DST, &cv) < 0)
				goto dump_failed;
		}
	}
	ret = ct_delete(b, &cv, &cut->deleted, err, errlen);
	goto out;
dump_failed:
	snprintf(err, errlen, "listing conntrack entries: %s", strerror(errno));
out:
	for (size_t i = 0; i < cv.n; i++)
		free(cv.v[i].tuple);
	free(cv.v);
	return ret;
}

const char *backend_cut_str(const struct backend_cut *c, char *buf, size_t len)
{
	int off;

	if (c->how == BACKEND_CUT_AUTO) {
		snprintf(buf, len, "%s", c->entries < 0 ? "no conntrack" : "the conntrack table was empty");
		return buf;
	}
	off = snprintf(buf, len, "%zu %s", c->dumps,
		       c->how == BACKEND_CUT_WHOLE ? "whole-table dump" : "filtered dumps");
	if (c->entries >= 0 && off >= 0 && (size_t)off < len)
		snprintf(buf + off, len - (size_t)off, " of %ld conntrack entries", c->entries);
	return buf;
}

/* --- reading back --------------------------------------------------------------------- */

bool backend_tables_exist(struct backend *b)
{
	static const uint16_t fams[] = { NFPROTO_BRIDGE, NFPROTO_INET };
	char buf[REQ_BUF_SIZE] = { 0 };

	for (size_t i = 0; i < ARRAY_SIZE(fams); i++) {
		struct nftnl_table *t = nftnl_table_alloc();
		struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, fams[i],
							     NLM_F_ACK, b->seq++);
		int ret;

		nftnl_table_set_str(t, NFTNL_TABLE_NAME, b->table);
		nftnl_table_nlmsg_build_payload(nlh, t);
		nftnl_table_free(t);
		ret = ct_talk(b, nlh, NULL, NULL);
		if (ret < 0)
			return false;
	}
	return true;
}

static int table_owner_cb(const struct nlmsghdr *nlh, void *data)
{
	struct nftnl_table *t = nftnl_table_alloc();
	uint32_t *owner = data;

	if (nftnl_table_nlmsg_parse(nlh, t) == 0 && nftnl_table_is_set(t, NFTNL_TABLE_OWNER))
		*owner = nftnl_table_get_u32(t, NFTNL_TABLE_OWNER);
	nftnl_table_free(t);
	return MNL_CB_OK;
}

uint32_t backend_tables_owner(struct backend *b)
{
	static const uint16_t fams[] = { NFPROTO_BRIDGE, NFPROTO_INET };
	char buf[REQ_BUF_SIZE] = { 0 };
	uint32_t owner = 0, self = mnl_socket_get_portid(b->nl);

	for (size_t i = 0; i < ARRAY_SIZE(fams) && !owner; i++) {
		struct nftnl_table *t = nftnl_table_alloc();
		struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, fams[i],
							     NLM_F_ACK, b->seq++);

		nftnl_table_set_str(t, NFTNL_TABLE_NAME, b->table);
		nftnl_table_nlmsg_build_payload(nlh, t);
		nftnl_table_free(t);
		if (ct_talk(b, nlh, table_owner_cb, &owner) < 0 || owner == self)
			owner = 0;
	}
	return owner;
}

struct obj_ctx {
	const char *table;
	backend_obj_counter_fn fn;
	void *arg;
};

static int obj_counter_cb(const struct nlmsghdr *nlh, void *data)
{
	struct obj_ctx *c = data;
	struct nftnl_obj *o = nftnl_obj_alloc();

	if (nftnl_obj_nlmsg_parse(nlh, o) == 0 &&
	    nftnl_obj_get_u32(o, NFTNL_OBJ_TYPE) == NFT_OBJECT_COUNTER &&
	    !strcmp(nftnl_obj_get_str(o, NFTNL_OBJ_TABLE), c->table))
		c->fn(c->arg, nftnl_obj_get_str(o, NFTNL_OBJ_NAME),
		      nftnl_obj_get_u64(o, NFTNL_OBJ_CTR_PKTS), nftnl_obj_get_u64(o, NFTNL_OBJ_CTR_BYTES));
	nftnl_obj_free(o);
	return MNL_CB_OK;
}

int backend_read_counters(struct backend *b, backend_obj_counter_fn fn, void *arg, char *err,
			  size_t errlen)
{
	char buf[REQ_BUF_SIZE] = { 0 };
	struct nftnl_obj *o = nftnl_obj_alloc();
	struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETOBJ, NFPROTO_INET,
						     NLM_F_DUMP, b->seq++);
	struct obj_ctx c = { b->table, fn, arg };

	/* The kernel filters the dump by table and object type. */
	nftnl_obj_set_str(o, NFTNL_OBJ_TABLE, b->table);
	nftnl_obj_set_u32(o, NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
	nftnl_obj_nlmsg_build_payload(nlh, o);
	nftnl_obj_free(o);
	if (ct_talk(b, nlh, obj_counter_cb, &c) < 0) {
		snprintf(err, errlen, "reading the counters of table inet %s: %s", b->table,
			 strerror(errno));
		return -1;
	}
	return 0;
}

/* A chain's rules as backend_chain_counters reads them: each named counter
 * once, with the id of the first rule that references it, in chain order.
 * A rule with an anonymous counter instead (a ruleset written before named
 * counters) is reported at once.  The rules of the chain's dispatch
 * (the atoms' chains "CHAIN.k.j": dfw/dispatch.c) are the chain's. */
struct counter_ctx {
	const char *chain;
	backend_counter_fn fn;
	void *arg;
	struct counter_ref { uint32_t id; char name[PLAN_NAME_MAX]; } *refs;
	size_t n, cap;
};

struct rule_counter {
	bool anon;
	uint64_t packets, bytes;
	const char *objref; /* borrowed from the parsed rule */
};

static int counter_expr_cb(struct nftnl_expr *e, void *data)
{
	struct rule_counter *rc = data;
	const char *name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);

	if (!strcmp(name, "counter")) {
		rc->anon = true;
		rc->packets = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
		rc->bytes = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
	} else if (!strcmp(name, "objref") && nftnl_expr_is_set(e, NFTNL_EXPR_OBJREF_IMM_NAME) &&
		   nftnl_expr_get_u32(e, NFTNL_EXPR_OBJREF_IMM_TYPE) == NFT_OBJECT_COUNTER) {
		rc->objref = nftnl_expr_get_str(e, NFTNL_EXPR_OBJREF_IMM_NAME);
	}
	return MNL_CB_OK;
}

static int comment_cb(const struct nftnl_udata *attr, void *data)
{
	if (nftnl_udata_type(attr) == NFTNL_UDATA_RULE_COMMENT)
		*(const char **)data = nftnl_udata_get(attr);
	return 0;
}

static int counter_rule_cb(const struct nlmsghdr *nlh, void *data)
{
	struct counter_ctx *c = data;
	struct nftnl_rule *r = nftnl_rule_alloc();
	struct rule_counter rc = { 0 };
	const char *comment = NULL;
	uint32_t id = 0, len;
	const void *ud;
	uint64_t v;

	if (nftnl_rule_nlmsg_parse(nlh, r) < 0 || !nftnl_rule_is_set(r, NFTNL_RULE_CHAIN))
		goto out;
	{
		const char *name = nftnl_rule_get_str(r, NFTNL_RULE_CHAIN);
		size_t n = strlen(c->chain);

		if (strncmp(name, c->chain, n) || (name[n] && name[n] != '.'))
			goto out;
	}
	nftnl_expr_foreach(r, counter_expr_cb, &rc);
	ud = nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &len);
	if (ud)
		nftnl_udata_parse(ud, len, comment_cb, &comment);
	if (comment && !strncmp(comment, "rule ", 5) && parse_u64(comment + 5, UINT32_MAX, &v) == 0)
		id = (uint32_t)v;
	if (rc.objref) {
		for (size_t i = 0; i < c->n; i++)
			if (!strcmp(c->refs[i].name, rc.objref))
				goto out;
		grow((void **)&c->refs, &c->cap, c->n + 1, sizeof(*c->refs));
		c->refs[c->n].id = id;
		snprintf(c->refs[c->n++].name, PLAN_NAME_MAX, "%s", rc.objref);
	} else if (rc.anon) {
		c->fn(c->arg, id, rc.packets, rc.bytes);
	}
out:
	nftnl_rule_free(r);
	return MNL_CB_OK;
}

int backend_chain_counters(struct backend *b, const char *chain,
			   backend_counter_fn fn, void *arg, char *err, size_t errlen)
{
	char buf[REQ_BUF_SIZE] = { 0 };
	struct nftnl_rule *r = nftnl_rule_alloc();
	struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, NFPROTO_INET,
						     NLM_F_DUMP, b->seq++);
	struct counter_ctx c = { chain, fn, arg, NULL, 0, 0 };
	struct counter_vals vals = { 0 };
	int ret = -1;

	nftnl_rule_set_str(r, NFTNL_RULE_TABLE, b->table);
	nftnl_rule_nlmsg_build_payload(nlh, r);
	nftnl_rule_free(r);
	if (ct_talk(b, nlh, counter_rule_cb, &c) < 0) {
		snprintf(err, errlen, "reading chain %s: %s", chain, strerror(errno));
		goto out;
	}
	if (c.n && backend_read_counters(b, collect_counter, &vals, err, errlen) < 0)
		goto out;
	if (vals.n)
		qsort(vals.v, vals.n, sizeof(*vals.v), cmp_counter_val);
	for (size_t i = 0; i < c.n; i++) {
		const struct counter_val *cv = counter_find(&vals, c.refs[i].name);

		fn(arg, c.refs[i].id, cv ? cv->packets : 0, cv ? cv->bytes : 0);
	}
	ret = 0;
out:
	free(c.refs);
	free(vals.v);
	return ret;
}

struct read_set_ctx {
	backend_elem_fn fn;
	void *arg;
};

static int read_set_cb(const struct nlmsghdr *nlh, void *data)
{
	struct read_set_ctx *c = data;
	struct nftnl_set *set = nftnl_set_alloc();
	struct nftnl_set_elems_iter *it;
	struct nftnl_set_elem *e;

	if (nftnl_set_elems_nlmsg_parse(nlh, set) < 0)
		goto out;
	it = nftnl_set_elems_iter_create(set);
	while (it && (e = nftnl_set_elems_iter_next(it))) {
		uint32_t len = 0, flags = 0;
		uint64_t left = 0;
		const void *key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len);

		if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS))
			flags = nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS);
		if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_EXPIRATION))
			left = nftnl_set_elem_get_u64(e, NFTNL_SET_ELEM_EXPIRATION);
		if (key)
			c->fn(c->arg, key, len, flags & NFT_SET_ELEM_INTERVAL_END, left);
	}
	nftnl_set_elems_iter_destroy(it);
out:
	nftnl_set_free(set);
	return MNL_CB_OK;
}

int backend_read_set(struct backend *b, const char *set_name, backend_elem_fn fn, void *arg,
		     char *err, size_t errlen)
{
	char buf[REQ_BUF_SIZE] = { 0 };
	struct nftnl_set *set = nftnl_set_alloc();
	struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, NFPROTO_INET,
						     NLM_F_DUMP, b->seq++);
	struct read_set_ctx c = { fn, arg };

	nftnl_set_set_str(set, NFTNL_SET_TABLE, b->table);
	nftnl_set_set_str(set, NFTNL_SET_NAME, set_name);
	nftnl_set_elems_nlmsg_build_payload(nlh, set);
	nftnl_set_free(set);
	if (ct_talk(b, nlh, read_set_cb, &c) < 0) {
		snprintf(err, errlen, "reading set %s: %s", set_name, strerror(errno));
		return -1;
	}
	return 0;
}

/* --- timed blocks ------------------------------------------------------------------ */

struct blocks_read {
	struct backend_block *v;
	size_t n, cap;
};

static void collect_block(void *arg, const uint8_t *key, uint32_t len, bool end, uint64_t left_ms)
{
	struct blocks_read *r = arg;
	struct backend_block *bl;

	if (end || (len != 4 && len != 16))
		return;
	grow((void **)&r->v, &r->cap, r->n + 1, sizeof(*r->v));
	bl = &r->v[r->n++];
	memset(bl, 0, sizeof(*bl));
	bl->addr.family = len == 4 ? AF_INET : AF_INET6;
	bl->addr.plen = (uint8_t)(len * 8);
	memcpy(bl->addr.a, key, len);
	bl->timeout_ms = left_ms ? left_ms : 1;
}

int backend_read_blocks(struct backend *b, struct backend_block **out, size_t *n,
			char *err, size_t errlen)
{
	struct blocks_read r = { 0 };

	*out = NULL;
	*n = 0;
	if (backend_read_set(b, DFW_SET_BLOCK4, collect_block, &r, err, errlen) < 0 ||
	    backend_read_set(b, DFW_SET_BLOCK6, collect_block, &r, err, errlen) < 0) {
		free(r.v);
		return -1;
	}
	*out = r.v;
	*n = r.n;
	return 0;
}

/* Block elements of both families, in the batch being built. */
static void block_elems(struct backend *b, const struct backend_block *bl, size_t n)
{
	struct elem *el = xcalloc(n + 1, sizeof(*el));

	for (int v6 = 0; v6 < 2; v6++) {
		size_t ne = 0;

		for (size_t i = 0; i < n; i++) {
			if ((bl[i].addr.family == AF_INET6) != v6)
				continue;
			memset(&el[ne], 0, sizeof(el[ne]));
			el[ne].key_len = (uint32_t)addr_len(bl[i].addr.family);
			memcpy(el[ne].key, bl[i].addr.a, el[ne].key_len);
			el[ne++].timeout_ms = bl[i].timeout_ms ? bl[i].timeout_ms : 1;
		}
		if (ne)
			elems_msg(b, NFPROTO_INET, v6 ? DFW_SET_BLOCK6 : DFW_SET_BLOCK4, el, ne,
				  NFT_MSG_NEWSETELEM);
	}
	free(el);
}

int backend_block(struct backend *b, const struct backend_block *bl, size_t n,
		  struct backend_stats *st, char *err, size_t errlen)
{
	if (!n) {
		if (st)
			memset(st, 0, sizeof(*st));
		return 0;
	}
	batch_begin(b);
	block_elems(b, bl, n);
	return batch_send(b, false, st, err, errlen);
}

static const char *const op_sets[] = { DFW_SET_OPBLOCK4, DFW_SET_OPBLOCK6, DFW_SET_OPSCOPE4,
				       DFW_SET_OPSCOPE6, DFW_SET_OPSCOPE4_IN, DFW_SET_OPSCOPE6_IN };

/* The operator blocks' elements, into sets that are empty (a full load's
 * new ones, or flushed first). */
static void op_block_elems(struct backend *b, const struct backend_op_blocks *ob)
{
	struct elem *el = xcalloc(ob->ng + ob->ns + 1, sizeof(*el));

	for (int v6 = 0; v6 < 2; v6++) {
		size_t ne = 0, alen = v6 ? 16 : 4;

		for (size_t i = 0; i < ob->ng; i++) {
			if ((ob->g[i].addr.family == AF_INET6) != v6)
				continue;
			memset(&el[ne], 0, sizeof(el[ne]));
			el[ne].key_len = (uint32_t)alen;
			memcpy(el[ne].key, ob->g[i].addr.a, alen);
			el[ne++].timeout_ms = ob->g[i].timeout_ms ? ob->g[i].timeout_ms : 1;
		}
		if (ne)
			elems_msg(b, NFPROTO_INET, op_sets[v6], el, ne, NFT_MSG_NEWSETELEM);
		ne = 0;
		for (size_t i = 0; i < ob->ns; i++) {
			if ((ob->sc[i].addr.family == AF_INET6) != v6)
				continue;
			memset(&el[ne], 0, sizeof(el[ne]));
			el[ne].key_len = (uint32_t)alen + 4;
			memcpy(el[ne].key, ob->sc[i].addr.a, alen);
			memcpy(el[ne].key + alen, &ob->sc[i].port_id, 4);
			el[ne++].timeout_ms = ob->sc[i].timeout_ms ? ob->sc[i].timeout_ms : 1;
		}
		/* Each pair in both scope sets: the vNIC as source and as
		 * destination. */
		if (ne) {
			elems_msg(b, NFPROTO_INET, op_sets[2 + v6], el, ne, NFT_MSG_NEWSETELEM);
			elems_msg(b, NFPROTO_INET, op_sets[4 + v6], el, ne, NFT_MSG_NEWSETELEM);
		}
	}
	free(el);
}

int backend_set_op_blocks(struct backend *b, const struct backend_block *g, size_t ng,
			  const struct backend_scoped_block *sc, size_t ns,
			  struct backend_stats *st, char *err, size_t errlen)
{
	const struct backend_op_blocks ob = { g, ng, sc, ns };

	batch_begin(b);
	for (size_t i = 0; i < ARRAY_SIZE(op_sets); i++)
		set_flush(b, NFPROTO_INET, op_sets[i]);
	op_block_elems(b, &ob);
	return batch_send(b, false, st, err, errlen);
}

/* br_netfilter's two knobs, which hand bridged IP to the inet table:
 * each must be 1.  With fix, one that is not is set to 1.  Returns 0
 * (both on), 1 (one was set on again) or -1 (err). */
static int bridge_nf(bool fix, char *err, size_t errlen)
{
	static const char *const knobs[] = {
		"/proc/sys/net/bridge/bridge-nf-call-iptables",
		"/proc/sys/net/bridge/bridge-nf-call-ip6tables",
	};
	int fixed = 0;

	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		FILE *f = fopen(knobs[i], "r");
		int c = f ? fgetc(f) : EOF;

		if (f)
			fclose(f);
		if (c == '1')
			continue;
		if (f && fix) {
			f = fopen(knobs[i], "w");
			if (f && fputs("1\n", f) >= 0 && fclose(f) == 0) {
				fixed = 1;
				continue;
			}
			snprintf(err, errlen, "%s is off and cannot be set to 1: %s", knobs[i],
				 strerror(errno));
			return -1;
		}
		snprintf(err, errlen,
			 "%s is %s: bridged traffic would bypass the firewall; "
			 "load br_netfilter and set net.bridge.%s=1",
			 knobs[i], f ? "0" : "missing", strrchr(knobs[i], '/') + 1);
		return -1;
	}
	return fixed;
}

int backend_check_bridge_nf(char *err, size_t errlen)
{
	return bridge_nf(false, err, errlen);
}

int backend_restore_bridge_nf(char *err, size_t errlen)
{
	return bridge_nf(true, err, errlen);
}
