/* Writing security tags: validated against the stored policy inside the
 * write transaction, so a concurrent apply cannot slip between.  Shared by
 * dfwctl (a person) and the scanner (a detection). */
#include "tagger/tags.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "tagger/config.h"
#include "tagger/state.h"

/* Tag and untag validate VM and tags against the stored policy inside the
 * write transaction, so a concurrent apply cannot slip between.
 *
 * The policy compares tags ignoring case, but a key keeps the tag's
 * spelling it was written with, and the declared spelling can change
 * since.  So both look for the VM's keys of a tag equal ignoring case: tag
 * keeps such a key rather than add a second one, and untag removes every
 * one, also of a VM or tag the policy has no more (else the tag would come
 * back with them). */
struct tag_req {
	const char *vm;
	char **tags;
	size_t ntags;
	bool add;
	struct strv found;          /* the stored keys of vm and one of tags */
	size_t *hit;                /* per tag: its first key in found, or NO_HIT */
	char (*keys)[TAG_KEY_MAX];  /* per tag: its key when none was found */
	char (*names)[TAG_KEY_MAX]; /* per tag: its spelling, for the caller */
	bool *changed;              /* per tag: written (else already so, or kept) */
	bool unchanged;             /* the check found nothing to write */
	struct store_op *ops;
	size_t cap;                 /* how many ops store_txn was given */
	size_t nops;                /* how many the check wanted */
	bool failed;                /* the check could not read the store */
	const char *rec_key, *rec_value; /* tags_write_rec */
	bool rec_moved;             /* untag: rec_key no longer held rec_value */
	char nt_key[TAG_KEY_MAX];   /* untag: NETTHREAT_PREFIX VM */
	char *nt_tag;               /* ...its value: the network detector's tag */
};

#define NO_HIT SIZE_MAX

/* The last policy this process parsed, reused while the stored text is
 * byte-identical: a long-running tagger (the scanner, dfwd's threat
 * response) then does not parse a 10k-VM policy on every detection. */
static struct {
	char *text, *file;
	struct dfw_policy *p;
} cache;

static const struct dfw_policy *cached_policy(char *text, char *file, char *err, size_t errlen)
{
	struct diag d = { 0 };
	const char *name = file ? file : "store:policy";
	struct dfw_policy *p;

	if (cache.p && !strcmp(cache.text, text) && !strcmp(cache.file, name)) {
		free(text);
		free(file);
		return cache.p;
	}
	p = policy_parse(text, name, &d);
	if (!p) {
		snprintf(err, errlen, "the stored policy does not parse: %s", d.n ? d.msgs[0] : "?");
		diag_free(&d);
		free(text);
		free(file);
		return NULL;
	}
	policy_free(cache.p);
	free(cache.text);
	free(cache.file);
	cache.p = p;
	cache.text = text;
	cache.file = file ? file : xstrdup(name);
	return p;
}

/* The stored policy; NULL with the reason in err, and *unread (if not
 * NULL) set when the store itself could not be read. */
static const struct dfw_policy *read_policy(struct store *s, bool *unread, char *err,
					    size_t errlen)
{
	char *text = NULL, *file = NULL, perr[256];
	int r;

	r = store_get(s, "policy", &text, perr, sizeof(perr));
	if (unread)
		*unread = r < 0;
	if (r != 0) {
		snprintf(err, errlen, r == 1 ? "the store holds no policy yet: run 'dfwctl apply FILE' first"
					     : "reading the policy: %s", perr);
		free(text);
		return NULL;
	}
	store_get(s, "policy-file", &file, perr, sizeof(perr));
	return cached_policy(text, file, err, errlen);
}

/* The stored policy, inside a transaction's check; NULL with the reason
 * in err. */
static const struct dfw_policy *stored_policy(struct store *s, char *err, size_t errlen)
{
	return read_policy(s, NULL, err, errlen);
}

/* The stored policy and the index of vm in it, inside a transaction's
 * check; NULL with the reason in err (and *unread as read_policy's). */
static const struct dfw_policy *stored_vm_read(struct store *s, const char *name, long *vm,
					       bool *unread, char *err, size_t errlen)
{
	const struct dfw_policy *p = read_policy(s, unread, err, errlen);

	if (!p)
		return NULL;
	if ((*vm = policy_find_vm(p, name)) < 0) {
		policy_unknown(p, false, name, err, errlen);
		return NULL;
	}
	return p;
}

static const struct dfw_policy *stored_vm(struct store *s, const char *name, long *vm, char *err,
					  size_t errlen)
{
	return stored_vm_read(s, name, vm, NULL, err, errlen);
}

int tags_vm_known(struct store *s, const char *vm, char *err, size_t errlen)
{
	bool unread = false;
	long idx;

	if (stored_vm_read(s, vm, &idx, &unread, err, errlen))
		return 0;
	return unread ? -1 : 1;
}

/* Whether a release (an untag with a record) must keep tag: the network
 * threat detector put it, and a clean file scan says nothing of that. */
static bool held(const struct tag_req *t, const char *tag)
{
	return !t->add && t->rec_key && t->nt_tag && !strcasecmp(tag, t->nt_tag);
}

void netthreat_key(char key[TAG_KEY_MAX], const char *vm)
{
	snprintf(key, TAG_KEY_MAX, NETTHREAT_PREFIX "%s", vm);
	str_lower(key);
}

/* Untag: reads the network detector's record of t->vm into t->nt_tag. */
static int read_netthreat_rec(struct store *s, struct tag_req *t, char *err, size_t errlen)
{
	int r;

	netthreat_key(t->nt_key, t->vm);
	free(t->nt_tag);
	t->nt_tag = NULL;
	r = store_get(s, t->nt_key, &t->nt_tag, err, errlen);
	if (r > 0)
		t->nt_tag = NULL;
	return r < 0 ? -1 : 0;
}

/* Collects the stored keys tag/VM/TAG of t->vm and one of t->tags, both
 * compared ignoring case (not those a release must keep). */
static int find_tag_key(void *arg, const char *key, const char *value)
{
	struct tag_req *t = arg;
	const char *v = key + strlen("tag/"), *slash = strchr(v, '/');
	size_t n = strlen(t->vm);
	bool pushed = false;

	(void)value;
	if (!slash || (size_t)(slash - v) != n || strncasecmp(v, t->vm, n) ||
	    strchr(slash + 1, '/') || held(t, slash + 1))
		return 0;
	for (size_t i = 0; i < t->ntags; i++) {
		if (strcasecmp(slash + 1, t->tags[i]))
			continue;
		if (!pushed)
			strv_push(&t->found, key);
		pushed = true;
		if (t->hit[i] == NO_HIT)
			t->hit[i] = t->found.n - 1;
	}
	return 0;
}

/* Fills t->found and t->hit from the keys of the VM: the policy keeps VM
 * names in lower case, and so do the keys written from it; only tags keep
 * their declared spelling.  Only that VM's keys are read: a detection's
 * tag waits for no scan of other VMs' tags. */
static int find_tag_keys(struct store *s, struct tag_req *t, char *err, size_t errlen)
{
	char prefix[TAG_KEY_MAX];
	uint64_t at;

	strv_free(&t->found);
	for (size_t i = 0; i < t->ntags; i++)
		t->hit[i] = NO_HIT;
	snprintf(prefix, sizeof(prefix), "tag/%s/", t->vm);
	str_lower(prefix);
	return store_scan(s, prefix, find_tag_key, t, &at, err, errlen);
}

static int tag_check(struct store *s, void *arg, char *err, size_t errlen)
{
	struct tag_req *t = arg;
	const struct dfw_policy *p;
	const char *near;
	bool nt_del;
	size_t n;
	long vm;

	t->failed = false;
	t->unchanged = false;
	if (!(p = stored_policy(s, err, errlen)))
		return 1;
	if (t->rec_key && !t->add) {
		char *now = NULL;
		int r = store_get(s, t->rec_key, &now, err, errlen);
		bool same = r == 0 ? t->rec_value && !strcmp(now, t->rec_value) : !t->rec_value;

		free(now);
		if (r < 0) {
			t->failed = true;
			return 1;
		}
		if (!same) {
			t->rec_moved = true;
			snprintf(err, errlen, "'%s' changed since it was read", t->rec_key);
			return 1;
		}
	}
	vm = policy_find_vm(p, t->vm);
	if ((!t->add && read_netthreat_rec(s, t, err, errlen) < 0) ||
	    find_tag_keys(s, t, err, errlen) < 0) {
		t->failed = true;
		return 1;
	}
	/* Tag needs a VM and tag of the policy; untag only where no key is
	 * found (else it would not tell "no such tag" from "not tagged").  A
	 * tag the VM has already, or has not when removed, needs no op. */
	n = t->add ? 0 : t->found.n;
	for (size_t i = 0; i < t->ntags; i++) {
		size_t hit = t->hit[i];
		const char *tag;

		t->changed[i] = false;
		if (held(t, t->tags[i])) {
			t->names[i][0] = '\0'; /* kept */
			continue;
		}
		if (hit != NO_HIT && !t->add) {
			snprintf(t->names[i], TAG_KEY_MAX, "%s", strrchr(t->found.v[hit], '/') + 1);
			t->changed[i] = true;
			continue;
		}
		if (vm < 0) {
			policy_unknown(p, false, t->vm, err, errlen);
			return 1;
		}
		if (!(tag = policy_find_tag(p, t->tags[i]))) {
			near = nearest_name(t->tags[i], (const char *const *)p->tags.v, p->tags.n);
			snprintf(err, errlen, "unknown tag '%s'%s%s%s; declared tags: see [tags] in %s",
				 t->tags[i], near ? " (did you mean '" : "", near ? near : "",
				 near ? "'?)" : "", p->file);
			return 1;
		}
		snprintf(t->names[i], TAG_KEY_MAX, "%s", tag);
		snprintf(t->keys[i], TAG_KEY_MAX, "tag/%s/%s", p->inv.vms[vm].name, tag);
		t->changed[i] = t->add && hit == NO_HIT;
		n += t->changed[i];
	}
	n += t->rec_key && t->add;
	/* An untag of the network detector's tag (not a release) ends its
	 * record with it. */
	nt_del = false;
	for (size_t i = 0; !t->add && !t->rec_key && t->nt_tag && i < t->found.n; i++)
		nt_del |= !strcasecmp(strrchr(t->found.v[i], '/') + 1, t->nt_tag);
	n += nt_del;
	/* Nothing to write: no revision (the check's veto writes nothing). */
	if (!n) {
		t->unchanged = true;
		return 1;
	}
	/* store_txn took the number of ops before the check ran. */
	t->nops = n;
	if (n != t->cap)
		return 1;
	n = 0;
	for (size_t i = 0; t->add && i < t->ntags; i++)
		if (t->changed[i])
			t->ops[n++] = (struct store_op){ STORE_PUT, t->keys[i], "" };
	if (nt_del)
		t->ops[n++] = (struct store_op){ STORE_DEL, t->nt_key, NULL };
	for (size_t i = 0; !t->add && i < t->found.n; i++)
		t->ops[n++] = (struct store_op){ STORE_DEL, t->found.v[i], NULL };
	if (t->rec_key && t->add)
		t->ops[n++] = (struct store_op){ STORE_PUT, t->rec_key, t->rec_value };
	return 0;
}

int tags_write(struct store *s, const char *vm, char *const *tags, size_t ntags, bool add,
	       char (*names)[TAG_KEY_MAX], bool *changed, uint64_t *rev, char *err, size_t errlen)
{
	return tags_write_rec(s, vm, tags, ntags, add, NULL, NULL, names, changed, rev, err,
			      errlen);
}

int tags_write_rec(struct store *s, const char *vm, char *const *tags, size_t ntags, bool add,
		   const char *rec_key, const char *rec_value, char (*names)[TAG_KEY_MAX],
		   bool *changed, uint64_t *rev, char *err, size_t errlen)
{
	struct tag_req t = { .vm = vm, .tags = (char **)tags, .ntags = ntags, .add = add,
			     .cap = ntags + (rec_key && add), .rec_key = rec_key,
			     .rec_value = rec_value };
	int r;

	t.hit = xcalloc(ntags + 1, sizeof(*t.hit));
	t.keys = xcalloc(ntags + 1, sizeof(*t.keys));
	t.names = xcalloc(ntags + 1, sizeof(*t.names));
	t.changed = xcalloc(ntags + 1, sizeof(*t.changed));
	/* ops are filled in by tag_check, inside the transaction.  Untag's
	 * number of ops depends on the keys found: when the guess was wrong,
	 * again with the number found (changed again meanwhile: again). */
	for (int tries = 0;; tries++) {
		t.ops = xrealloc(t.ops, (t.cap + 1) * sizeof(*t.ops));
		t.nops = t.cap;
		r = store_txn(s, t.ops, t.cap, tag_check, &t, rev, err, errlen);
		if (r != 1 || t.failed || t.rec_moved || t.nops == t.cap)
			break;
		if (tries == 8) {
			snprintf(err, errlen, "the tags of VM '%s' kept changing meanwhile", vm);
			r = -1;
			break;
		}
		t.cap = t.nops;
	}
	if (r == 1 && t.unchanged)
		r = store_rev(s, rev, err, errlen) < 0 ? -1 : 0;
	if (r == 1 && t.failed)
		r = -1;
	if (r == 1 && t.rec_moved)
		r = 2;
	for (size_t i = 0; r == 0 && names && i < ntags; i++)
		snprintf(names[i], TAG_KEY_MAX, "%s", t.names[i]);
	for (size_t i = 0; r == 0 && changed && i < ntags; i++)
		changed[i] = t.changed[i];
	strv_free(&t.found);
	free(t.nt_tag);
	free(t.hit);
	free(t.ops);
	free(t.keys);
	free(t.names);
	free(t.changed);
	return r;
}

struct place_req {
	const char *vm, *host;
	char key[TAG_KEY_MAX];
	struct store_op op;
	bool unchanged; /* the VM is placed there already */
};

struct host_find {
	const char *name;
	bool found;
};

static int host_reported(void *arg, const struct store_host *h)
{
	struct host_find *f = arg;

	return f->found = !strcmp(h->host, f->name);
}

/* A host the inventory names, or one whose agent ever reported: a typo
 * would take the VM's policy off the host it runs on (its traffic then
 * dropped there, fail closed) and put it nowhere. */
static int known_host(struct store *s, struct place_req *q, const struct dfw_policy *p, char *err,
		      size_t errlen)
{
	const char **names = xcalloc(p->inv.nvms + 1, sizeof(*names));
	struct host_find f = { q->host, false };
	const char *near;
	size_t n = 0;

	for (size_t i = 0; i < p->inv.nvms; i++) {
		if (!strcmp(p->inv.vms[i].host, q->host)) {
			free(names);
			return 0;
		}
		names[n++] = p->inv.vms[i].host;
	}
	if (store_host_scan(s, host_reported, &f, err, errlen) < 0 || f.found) {
		free(names);
		return f.found ? 0 : -1;
	}
	near = nearest_name(q->host, names, n);
	snprintf(err, errlen, "unknown host '%s'%s%s%s: no VM of the policy runs there and no dfwd has "
		 "reported from it", q->host, near ? " (did you mean '" : "", near ? near : "",
		 near ? "'?)" : "");
	free(names);
	return 1;
}

/* Whether ops would change the store: a PUT of a missing key or of another
 * value, a DEL of a present key.  1 yes, 0 no, -1 a store error. */
static int ops_change(struct store *s, const struct store_op *ops, size_t n, char *err,
		      size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		char *v = NULL;
		int r = store_get(s, ops[i].key, &v, err, errlen);
		bool same = r == 0 ? ops[i].kind == STORE_PUT && !strcmp(v, ops[i].value)
				   : ops[i].kind == STORE_DEL;

		free(v);
		if (r < 0)
			return -1;
		if (!same)
			return 1;
	}
	return 0;
}

/* After store_txn returned r for a write whose check found nothing to
 * change (a veto that wrote nothing): 0 with the store's revision in *rev
 * (or -1 when it cannot be read), and *changed set. */
static int unchanged_result(struct store *s, int r, bool unchanged, bool *changed, uint64_t *rev,
			    char *err, size_t errlen)
{
	if (changed)
		*changed = !unchanged;
	if (r == 1 && unchanged)
		return store_rev(s, rev, err, errlen) < 0 ? -1 : 0;
	return r;
}

static int place_check(struct store *s, void *arg, char *err, size_t errlen)
{
	struct place_req *q = arg;
	const struct dfw_policy *p;
	long vm;
	int r;

	q->unchanged = false;
	if (!(p = stored_vm(s, q->vm, &vm, err, errlen)))
		return 1;
	if ((r = known_host(s, q, p, err, errlen)))
		return r;
	snprintf(q->key, sizeof(q->key), "%s%s", PLACEMENT_PREFIX, p->inv.vms[vm].name);
	q->op = (struct store_op){ STORE_PUT, q->key, q->host };
	if ((r = ops_change(s, &q->op, 1, err, errlen)) < 0)
		return -1;
	q->unchanged = !r;
	return !r; /* placed there already: write nothing */
}

int placement_write(struct store *s, const char *vm, const char *host, bool *changed,
		    uint64_t *rev, char *err, size_t errlen)
{
	struct place_req q = { .vm = vm, .host = host };
	int r;

	if (!policy_name_ok(host)) {
		snprintf(err, errlen, "host '%s': 1-48 letters, digits and . _ -", host);
		return 1;
	}
	/* op is filled in by place_check, inside the transaction. */
	r = store_txn(s, &q.op, 1, place_check, &q, rev, err, errlen);
	return unchanged_result(s, r, q.unchanged, changed, rev, err, errlen);
}

/* --- monitor mode ----------------------------------------------------------- */

/* Keys and ops of a write whose ops are known before the transaction. */
struct key_ops {
	struct store_op *ops;
	char (*keys)[TAG_KEY_MAX];
	size_t n, cap;
};

static void key_op(struct key_ops *k, bool put, const char *value, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void key_op(struct key_ops *k, bool put, const char *value, const char *fmt, ...)
{
	va_list ap;

	if (k->n == k->cap) {
		k->cap = k->cap ? 2 * k->cap : 8;
		k->ops = xrealloc(k->ops, k->cap * sizeof(*k->ops));
		k->keys = xrealloc(k->keys, k->cap * sizeof(*k->keys));
	}
	va_start(ap, fmt);
	vsnprintf(k->keys[k->n], TAG_KEY_MAX, fmt, ap);
	va_end(ap);
	k->ops[k->n++] = (struct store_op){ put ? STORE_PUT : STORE_DEL, NULL, put ? value : NULL };
}

/* Points the ops at their keys (the key array moved while growing) and
 * writes them as one revision. */
static int key_ops_write(struct store *s, struct key_ops *k, store_check_fn check, void *arg,
			 uint64_t *rev, char *err, size_t errlen)
{
	int r;

	for (size_t i = 0; i < k->n; i++)
		k->ops[i].key = k->keys[i];
	r = store_txn(s, k->ops, k->n, check, arg, rev, err, errlen);
	free(k->ops);
	free(k->keys);
	return r;
}

struct mode_req {
	char *const *cats;
	size_t ncat;
	const uint32_t *rules;
	size_t nrules;
	bool monitor;
	const struct key_ops *k;
	bool unchanged; /* every key was as asked already */
};

static int mode_check(struct store *s, void *arg, char *err, size_t errlen)
{
	struct mode_req *m = arg;
	const struct dfw_policy *p = stored_policy(s, err, errlen);
	int changes;

	m->unchanged = false;
	if (!p)
		return 1;
	for (size_t i = 0; i < m->nrules; i++) {
		const struct dfw_rule *r = policy_find_rule(p, m->rules[i]);

		if (!r) {
			snprintf(err, errlen, "no rule %u in the stored policy (%s)", m->rules[i],
				 p->file);
			return 1;
		}
		/* It would do nothing now, and then some day, once the rule
		 * drops, let its packets through unannounced. */
		if (m->monitor && r->action == ACT_ALLOW) {
			snprintf(err, errlen, "rule %u allows: monitor mode is for drop and reject"
				 " rules (it lets their packets through)", m->rules[i]);
			return 1;
		}
	}
	if ((changes = ops_change(s, m->k->ops, m->k->n, err, errlen)) < 0)
		return -1;
	m->unchanged = !changes;
	return !changes; /* as asked already: write nothing */
}

static int list_mode_key(void *arg, const char *key, const char *value)
{
	(void)value;
	key_op(arg, false, NULL, "%s", key);
	return 0;
}

int modes_write(struct store *s, bool monitor, char *const *categories, size_t ncat,
		const uint32_t *rules, size_t nrules, bool all, bool *changed, uint64_t *rev,
		char *err, size_t errlen)
{
	struct key_ops k = { 0 };
	struct mode_req m = { categories, ncat, rules, nrules, monitor, &k, false };
	int r;
	const char *names[CAT_COUNT], *near;
	uint64_t at;

	for (int c = 0; c < CAT_COUNT; c++)
		names[c] = category_name((enum dfw_category)c);
	if (all && !monitor &&
	    store_scan(s, MODE_PREFIX, list_mode_key, &k, &at, err, errlen) < 0) {
		free(k.ops);
		free(k.keys);
		return -1;
	}
	for (size_t i = 0; i < ncat; i++) {
		int c;

		for (c = 0; c < CAT_COUNT && strcasecmp(names[c], categories[i]); c++)
			;
		if (c == CAT_COUNT) {
			near = nearest_name(categories[i], names, CAT_COUNT);
			snprintf(err, errlen, "unknown category '%s'%s%s%s; categories: emergency, infrastructure, environment, application",
				 categories[i], near ? " (did you mean '" : "", near ? near : "",
				 near ? "'?)" : "");
			free(k.ops);
			free(k.keys);
			return 1;
		}
		key_op(&k, monitor, "monitor", MODE_PREFIX "category/%s", names[c]);
	}
	for (size_t i = 0; i < nrules; i++)
		key_op(&k, monitor, "monitor", MODE_PREFIX "rule/%u", rules[i]);
	r = key_ops_write(s, &k, mode_check, &m, rev, err, errlen);
	return unchanged_result(s, r, m.unchanged, changed, rev, err, errlen);
}

/* --- timed blocks ------------------------------------------------------------- */

struct block_req {
	struct store *s;   /* where bad values are reported */
	const char *scope;
	uint64_t now_ms;
	struct key_ops *k;
	size_t nexpired;   /* block_write: the first ops delete expired blocks */
	char **kept;       /* ...unless renewed meanwhile: their value now */
	const char *key;   /* block_delete: the key that must exist */
};

static int expired_block(void *arg, const char *key, const char *value)
{
	struct block_req *b = arg;
	uint64_t until;

	if (!state_number(value, UINT64_MAX, &until))
		store_warn(b->s, "store key '%s': value '%.32s' is not a time in ms since the"
			   " epoch; left alone", key, value);
	else if (until <= b->now_ms)
		key_op(b->k, false, NULL, "%s", key);
	return 0;
}

static int block_check(struct store *s, void *arg, char *err, size_t errlen)
{
	struct block_req *b = arg;
	const struct dfw_policy *p;
	char *v = NULL;
	uint64_t until;
	int r;

	/* An expired block found before the transaction may have been
	 * renewed since: then its delete becomes a put of its value (a
	 * no-op).  The check can run more than once (etcd). */
	for (size_t i = 0; i < b->nexpired; i++) {
		struct store_op *op = &b->k->ops[i];

		free(b->kept[i]);
		b->kept[i] = NULL;
		*op = (struct store_op){ STORE_DEL, op->key, NULL };
		if ((r = store_get(s, op->key, &b->kept[i], err, errlen)) < 0)
			return -1;
		if (r == 0 && !(state_number(b->kept[i], UINT64_MAX, &until) && until <= b->now_ms))
			*op = (struct store_op){ STORE_PUT, op->key, b->kept[i] };
	}
	if (b->scope) {
		if (!(p = stored_policy(s, err, errlen)))
			return 1;
		if (policy_find_group(p, b->scope) < 0) {
			policy_unknown(p, true, b->scope, err, errlen);
			return 1;
		}
	}
	if (b->key) {
		r = store_get(s, b->key, &v, err, errlen);
		free(v);
		if (r < 0)
			return -1;
		if (r == 1) {
			snprintf(err, errlen, "no block %s", b->key + strlen(BLOCK_PREFIX));
			return 1;
		}
	}
	return 0;
}

static void block_key(char *buf, size_t len, const struct dfw_addr *addr, const char *scope)
{
	char a[64];
	char low[64] = "";

	addr_format(addr, a, sizeof(a));
	if (scope) {
		snprintf(low, sizeof(low), "%s", scope);
		str_lower(low);
	}
	snprintf(buf, len, BLOCK_PREFIX "%s%s%s", a, scope ? "/" : "", low);
}

int block_write(struct store *s, const struct dfw_addr *addr, const char *scope,
		uint64_t until_ms, uint64_t *rev, char *err, size_t errlen)
{
	struct key_ops k = { 0 };
	struct block_req b = { .s = s, .scope = scope, .now_ms = wall_ms(), .k = &k };
	char key[TAG_KEY_MAX], until[32];
	const char *why;
	uint64_t at;
	int r;

	if (scope && !policy_name_ok(scope)) {
		snprintf(err, errlen, "scope '%s': not a group name", scope);
		return 1;
	}
	/* No host sends from these, or they are everyone's (0.0.0.0 is every
	 * DHCP client's source, 255.255.255.255 its destination): a block of
	 * one drops what nobody meant, or nothing at all (an IPv4-mapped
	 * address never matches the IPv4 traffic of its address). */
	if ((why = addr_not_own(addr))) {
		addr_format(addr, key, sizeof(key));
		snprintf(err, errlen, "%s is %s, not a host's own: it cannot be blocked", key, why);
		return 1;
	}
	/* Expired blocks go in the same revision (the kernel dropped them
	 * already); block_check keeps any renewed meanwhile. */
	if (store_scan(s, BLOCK_PREFIX, expired_block, &b, &at, err, errlen) < 0) {
		free(k.ops);
		free(k.keys);
		return -1;
	}
	b.nexpired = k.n;
	b.kept = xcalloc(k.n + 1, sizeof(*b.kept));
	block_key(key, sizeof(key), addr, scope);
	snprintf(until, sizeof(until), "%llu", (unsigned long long)until_ms);
	key_op(&k, true, until, "%s", key);
	r = key_ops_write(s, &k, block_check, &b, rev, err, errlen);
	for (size_t i = 0; i < b.nexpired; i++)
		free(b.kept[i]);
	free(b.kept);
	return r;
}

int block_delete(struct store *s, const struct dfw_addr *addr, const char *scope,
		 uint64_t *rev, char *err, size_t errlen)
{
	struct key_ops k = { 0 };
	char key[TAG_KEY_MAX];
	struct block_req b = { .s = s, .scope = scope, .key = key };

	block_key(key, sizeof(key), addr, scope);
	key_op(&k, false, NULL, "%s", key);
	return key_ops_write(s, &k, block_check, &b, rev, err, errlen);
}

/* --- address learning ---------------------------------------------------------- */

struct learn_req {
	const char *vm;
	const struct dfw_addr *addr;
	struct key_ops *k;
	bool forget;
};

struct learned_owner {
	const struct dfw_addr *addr;
	const char *vm;        /* the learner */
	const char *other;     /* another VM holding addr, or NULL */
	char name[64];
};

static int find_owner(void *arg, const char *key, const char *value)
{
	struct learned_owner *o = arg;
	const char *vm = key + strlen(LEARNED_PREFIX), *slash = strchr(vm, '/'), *why;
	struct dfw_addr a;

	if (!slash || (size_t)(slash - vm) >= sizeof(o->name) || addr_parse(value, &a, &why) < 0 ||
	    addr_cmp(&a, o->addr))
		return 0;
	memcpy(o->name, vm, (size_t)(slash - vm));
	o->name[slash - vm] = '\0';
	if (strcasecmp(o->name, o->vm)) {
		o->other = o->name;
		return 1;
	}
	return 0;
}

static int learn_check(struct store *s, void *arg, char *err, size_t errlen)
{
	struct learn_req *l = arg;
	const struct dfw_policy *p;
	char *v = NULL, a[64];
	long vm;
	int r;

	if (!(p = stored_vm(s, l->vm, &vm, err, errlen)))
		return 1;
	if (!p->inv.vms[vm].learn) {
		snprintf(err, errlen, "VM %s does not learn its addresses (addresses = learn)",
			 p->inv.vms[vm].name);
		return 1;
	}
	if (l->forget)
		return 0;
	/* One address, one VM: not declared by another, not locked by another
	 * (two guests claiming it at once: the first write wins). */
	{
		struct learned_owner o = { l->addr, p->inv.vms[vm].name, NULL };
		uint64_t at;

		for (size_t i = 0; i < p->inv.nvms && !o.other; i++)
			for (size_t j = 0; j < p->inv.vms[i].naddrs && (long)i != vm; j++)
				if (!addr_cmp(&p->inv.vms[i].addrs[j], l->addr))
					o.other = p->inv.vms[i].name;
		if (!o.other &&
		    store_scan(s, LEARNED_PREFIX, find_owner, &o, &at, err, errlen) < 0)
			return -1;
		if (o.other) {
			addr_format(l->addr, a, sizeof(a));
			snprintf(err, errlen, "%s belongs to VM %s; not learned for %s", a, o.other,
				 p->inv.vms[vm].name);
			return 1;
		}
	}
	r = store_get(s, l->k->keys[0], &v, err, errlen);
	if (r < 0)
		return -1;
	if (r == 0) {
		addr_format(l->addr, a, sizeof(a));
		snprintf(err, errlen, "VM %s has %s locked already; %s refused", p->inv.vms[vm].name, v,
			 a);
		free(v);
		return 1;
	}
	return 0;
}

int learned_write(struct store *s, const char *vm, const struct dfw_addr *addr, uint64_t *rev,
		  char *err, size_t errlen)
{
	struct key_ops k = { 0 };
	struct learn_req l = { vm, addr, &k, false };
	char a[64], low[64];

	snprintf(low, sizeof(low), "%s", vm);
	str_lower(low);
	addr_format(addr, a, sizeof(a));
	key_op(&k, true, a, LEARNED_PREFIX "%s/%s", low, learned_family(addr->family));
	/* The value points into a: written before a goes out of scope. */
	return key_ops_write(s, &k, learn_check, &l, rev, err, errlen);
}

int learned_forget(struct store *s, const char *vm, uint64_t *rev, char *err, size_t errlen)
{
	struct key_ops k = { 0 };
	struct learn_req l = { vm, NULL, &k, true };
	char low[64];

	snprintf(low, sizeof(low), "%s", vm);
	str_lower(low);
	key_op(&k, false, NULL, LEARNED_PREFIX "%s/ipv4", low);
	key_op(&k, false, NULL, LEARNED_PREFIX "%s/ipv6", low);
	return key_ops_write(s, &k, learn_check, &l, rev, err, errlen);
}
