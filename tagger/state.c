/* Reading the store's desired state and laying it onto a policy. */
#include "tagger/state.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "tagger/tags.h"

static void warnf(state_warn_fn warn, void *arg, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void warnf(state_warn_fn warn, void *arg, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (!warn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	warn(arg, msg);
}

struct scan_ctx {
	struct snapshot *snap;
	state_warn_fn warn;
	void *arg;
};

static bool has_prefix(const char *s, const char *prefix)
{
	return !strncmp(s, prefix, strlen(prefix));
}

static void push_pair(struct strv *v, const char *key, const char *prefix, const char *value)
{
	strv_push(v, key + strlen(prefix));
	strv_push(v, value);
}

static int snapshot_kv(void *arg, const char *key, const char *value)
{
	struct scan_ctx *c = arg;
	struct snapshot *s = c->snap;

	if (!strcmp(key, "policy")) {
		free(s->policy);
		s->policy = xstrdup(value);
	} else if (!strcmp(key, "policy-file")) {
		free(s->policy_file);
		s->policy_file = xstrdup(value);
	} else if (has_prefix(key, "tag/")) {
		strv_push(&s->tag_keys, key);
	} else if (has_prefix(key, PLACEMENT_PREFIX)) {
		push_pair(&s->placement, key, PLACEMENT_PREFIX, value);
	} else if (has_prefix(key, MODE_PREFIX)) {
		push_pair(&s->modes, key, MODE_PREFIX, value);
	} else if (has_prefix(key, LEARNED_PREFIX)) {
		push_pair(&s->learned, key, LEARNED_PREFIX, value);
	} else if (has_prefix(key, BLOCK_PREFIX)) {
		push_pair(&s->blocks, key, BLOCK_PREFIX, value);
	} else if (!state_key_known(key)) {
		warnf(c->warn, c->arg, "store key '%s': not a key dfw writes; ignored", key);
	}
	/* else the detectors' records (detected/, netthreat/): nothing to realize */
	return 0;
}

bool state_key_known(const char *key)
{
	return !strcmp(key, "policy") || !strcmp(key, "policy-file") || has_prefix(key, "tag/") ||
	       has_prefix(key, PLACEMENT_PREFIX) || has_prefix(key, MODE_PREFIX) ||
	       has_prefix(key, LEARNED_PREFIX) || has_prefix(key, BLOCK_PREFIX) ||
	       has_prefix(key, DETECTED_PREFIX) || has_prefix(key, NETTHREAT_PREFIX);
}

int snapshot_read(struct store *s, struct snapshot *snap, uint64_t *rev, state_warn_fn warn,
		  void *arg, char *err, size_t errlen)
{
	struct scan_ctx c = { snap, warn, arg };

	memset(snap, 0, sizeof(*snap));
	return store_scan(s, "", snapshot_kv, &c, rev, err, errlen);
}

void snapshot_free(struct snapshot *snap)
{
	free(snap->policy);
	free(snap->policy_file);
	strv_free(&snap->tag_keys);
	strv_free(&snap->placement);
	strv_free(&snap->modes);
	strv_free(&snap->learned);
	strv_free(&snap->blocks);
	memset(snap, 0, sizeof(*snap));
}

bool state_key_reshapes(const char *key)
{
	return !strcmp(key, "policy") || !strcmp(key, "policy-file") ||
	       has_prefix(key, PLACEMENT_PREFIX) || has_prefix(key, MODE_PREFIX) ||
	       has_prefix(key, LEARNED_PREFIX);
}

const char *learned_family(uint8_t family)
{
	return family == AF_INET ? "ipv4" : "ipv6";
}

/* placement/VM = HOST overrides the inventory's host. */
static void apply_placement(struct dfw_policy *p, const struct strv *pl, state_warn_fn warn,
			    void *arg)
{
	for (size_t i = 0; i + 1 < pl->n; i += 2) {
		const char *vm = pl->v[i], *host = pl->v[i + 1];
		long idx = policy_find_vm(p, vm);

		if (idx < 0) {
			warnf(warn, arg, "store key '%s%s': no VM '%s' in the policy; ignored",
			      PLACEMENT_PREFIX, vm, vm);
		} else if (!policy_name_ok(host)) {
			warnf(warn, arg, "store key '%s%s': '%.64s' is not a host name; ignored",
			      PLACEMENT_PREFIX, vm, host);
		} else {
			free(p->inv.vms[idx].host);
			p->inv.vms[idx].host = xstrdup(host);
		}
	}
}

bool state_number(const char *s, uint64_t max, uint64_t *out)
{
	/* parse_u64 refuses a sign or blank; a leading zero is left. */
	return (s[0] != '0' || !s[1]) && parse_u64(s, max, out) == 0;
}

/* mode/category/NAME and mode/rule/ID = monitor. */
static void apply_modes(struct dfw_policy *p, const struct strv *m, state_warn_fn warn,
			void *arg)
{
	for (size_t i = 0; i + 1 < m->n; i += 2) {
		const char *k = m->v[i], *v = m->v[i + 1];
		bool found = false;

		if (strcmp(v, "monitor")) {
			warnf(warn, arg, "store key '%s%s': value '%.32s' is not 'monitor'; ignored",
			      MODE_PREFIX, k, v);
			continue;
		}
		if (has_prefix(k, "category/")) {
			for (size_t r = 0; r < p->nrules; r++)
				if (!strcmp(category_name(p->rules[r].category), k + 9))
					found = p->rules[r].monitor = true;
			for (int c = 0; c < CAT_COUNT && !found; c++)
				found = !strcmp(category_name((enum dfw_category)c), k + 9);
		} else if (has_prefix(k, "rule/")) {
			uint64_t id;

			if (!state_number(k + 5, UINT32_MAX, &id)) {
				warnf(warn, arg, "store key '%s%s': '%.32s' is not a rule id; ignored",
				      MODE_PREFIX, k, k + 5);
				continue;
			}
			for (size_t r = 0; r < p->nrules; r++)
				if (p->rules[r].id == id)
					found = p->rules[r].monitor = true;
		}
		if (!found)
			warnf(warn, arg, "store key '%s%s': no such category or rule in the policy; ignored",
			      MODE_PREFIX, k);
	}
}

/* learned/VM/ipv4|ipv6 = ADDRESS: the locked address of a learning VM. */
static void apply_learned(struct dfw_policy *p, const struct strv *l, state_warn_fn warn,
			  void *arg)
{
	for (size_t i = 0; i + 1 < l->n; i += 2) {
		const char *k = l->v[i], *slash = strchr(k, '/'), *why = NULL;
		struct dfw_addr a;
		char vm[64];
		long idx = -1;
		struct vm *v;

		if (slash && (size_t)(slash - k) < sizeof(vm)) {
			memcpy(vm, k, (size_t)(slash - k));
			vm[slash - k] = '\0';
			idx = policy_find_vm(p, vm);
		}
		if (idx < 0) {
			warnf(warn, arg, "store key '%s%s': no VM of that name in the policy; ignored",
			      LEARNED_PREFIX, k);
			continue;
		}
		v = &p->inv.vms[idx];
		if (!v->learn) {
			warnf(warn, arg, "store key '%s%s': VM %s does not learn its addresses; ignored",
			      LEARNED_PREFIX, k, v->name);
			continue;
		}
		if (addr_parse(l->v[i + 1], &a, &why) < 0 || a.plen != (a.family == AF_INET ? 32 : 128) ||
		    strcmp(slash + 1, learned_family(a.family))) {
			warnf(warn, arg, "store key '%s%s': '%.64s' is not an %s host address; ignored",
			      LEARNED_PREFIX, k, l->v[i + 1], slash + 1);
			continue;
		}
		for (size_t j = 0; j < v->naddrs; j++)
			if (v->addrs[j].family == a.family)
				goto next; /* one per family: the first one locked */
		v->addrs = xrealloc(v->addrs, (v->naddrs + 1) * sizeof(*v->addrs));
		v->addrs[v->naddrs++] = a;
next:;
	}
}

void state_apply(struct dfw_policy *p, const struct snapshot *snap, state_warn_fn warn,
		 void *arg)
{
	apply_placement(p, &snap->placement, warn, arg);
	apply_modes(p, &snap->modes, warn, arg);
	apply_learned(p, &snap->learned, warn, arg);
}

bool state_tag_key(const struct dfw_policy *p, const char *key, size_t *vm,
		   const char **tag, state_warn_fn warn, void *arg)
{
	const char *t = key + 4, *slash = strchr(t, '/');
	char name[256];
	long idx;

	if (strncmp(key, "tag/", 4) || !slash || slash == t || !slash[1] ||
	    strchr(slash + 1, '/') || (size_t)(slash - t) >= sizeof(name)) {
		warnf(warn, arg, "store key '%s': not of the form tag/VM/TAG; ignored", key);
		return false;
	}
	memcpy(name, t, (size_t)(slash - t));
	name[slash - t] = '\0';
	if ((idx = policy_find_vm(p, name)) < 0) {
		warnf(warn, arg, "store key '%s': no VM '%s' in the policy; ignored", key, name);
		return false;
	}
	if (!(*tag = policy_find_tag(p, slash + 1))) {
		warnf(warn, arg, "store key '%s': tag '%s' is not declared in the policy; ignored",
		      key, slash + 1);
		return false;
	}
	*vm = (size_t)idx;
	return true;
}

bool state_block(const struct dfw_policy *p, const char *key, const char *value,
		 struct dfw_block *b, char *err, size_t errlen)
{
	char addr[64];
	const char *slash = strrchr(key, '/'), *why = NULL;
	size_t alen = slash ? (size_t)(slash - key) : strlen(key);

	if (alen >= sizeof(addr)) {
		snprintf(err, errlen, "not an address");
		return false;
	}
	memcpy(addr, key, alen);
	addr[alen] = '\0';
	if (addr_parse(addr, &b->addr, &why) < 0 ||
	    b->addr.plen != (b->addr.family == AF_INET ? 32 : 128)) {
		snprintf(err, errlen, "'%s' is not a host address%s%s", addr, why ? ": " : "",
			 why ? why : "");
		return false;
	}
	/* As block_write refuses it: a key of an older dfwctl, or written
	 * behind its back, must not drop every guest's DHCP (0.0.0.0). */
	if ((why = addr_not_own(&b->addr))) {
		snprintf(err, errlen, "'%s' is %s, not a host's own", addr, why);
		return false;
	}
	b->group = -1;
	if (slash && (b->group = policy_find_group(p, slash + 1)) < 0) {
		policy_unknown(p, true, slash + 1, err, errlen);
		return false;
	}
	if (!state_number(value, UINT64_MAX, &b->until_ms)) {
		snprintf(err, errlen, "value '%.32s' is not a time in ms since the epoch", value);
		return false;
	}
	return true;
}
