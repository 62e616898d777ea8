/* Writing security tags: validated against the stored policy inside the
 * write transaction, so a concurrent apply cannot slip between.  Shared by
 * dfwctl (a person) and the scanner (a detection). */
#include "tagger/tags.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tagger/config.h"

/* Tag and untag validate VM and tags against the stored policy inside the
 * write transaction, so a concurrent apply cannot slip between. */
struct tag_req {
	const char *vm;
	char **tags;
	size_t ntags;
	bool add;
	struct store_op *ops;
	char (*keys)[TAG_KEY_MAX];
	size_t nops;
};

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

/* The stored policy and the index of vm in it, inside a transaction's
 * check; NULL with the reason in err. */
static const struct dfw_policy *stored_vm(struct store *s, const char *name, long *vm, char *err,
					  size_t errlen)
{
	const struct dfw_policy *p;
	char *text = NULL, *file = NULL, perr[256];
	int r;

	r = store_get(s, "policy", &text, perr, sizeof(perr));
	if (r != 0) {
		snprintf(err, errlen, r == 1 ? "the store holds no policy yet: run 'dfwctl apply FILE' first"
					     : "reading the policy: %s", perr);
		free(text);
		return NULL;
	}
	store_get(s, "policy-file", &file, perr, sizeof(perr));
	if (!(p = cached_policy(text, file, err, errlen)))
		return NULL;
	if ((*vm = policy_find_vm(p, name)) < 0) {
		policy_unknown(p, false, name, err, errlen);
		return NULL;
	}
	return p;
}

static int tag_check(struct store *s, void *arg, char *err, size_t errlen)
{
	struct tag_req *t = arg;
	const struct dfw_policy *p;
	const char *near;
	long vm;

	if (!(p = stored_vm(s, t->vm, &vm, err, errlen)))
		return 1;
	t->nops = 0;
	for (size_t i = 0; i < t->ntags; i++) {
		const char *tag = policy_find_tag(p, t->tags[i]);

		if (!tag) {
			near = nearest_name(t->tags[i], (const char *const *)p->tags.v, p->tags.n);
			snprintf(err, errlen, "unknown tag '%s'%s%s%s; declared tags: see [tags] in %s",
				 t->tags[i], near ? " (did you mean '" : "", near ? near : "",
				 near ? "'?)" : "", p->file);
			return 1;
		}
		snprintf(t->keys[i], sizeof(t->keys[i]), "tag/%s/%s", p->inv.vms[vm].name, tag);
		t->ops[t->nops++] = (struct store_op){ t->add ? STORE_PUT : STORE_DEL, t->keys[i],
						       t->add ? "" : NULL };
	}
	return 0;
}

int tags_write(struct store *s, const char *vm, char *const *tags, size_t ntags, bool add,
	       char (*names)[TAG_KEY_MAX], uint64_t *rev, char *err, size_t errlen)
{
	struct tag_req t = { .vm = vm, .tags = (char **)tags, .ntags = ntags, .add = add };
	int r;

	t.ops = xcalloc(ntags + 1, sizeof(*t.ops));
	t.keys = xcalloc(ntags + 1, sizeof(*t.keys));
	/* ops are filled in by tag_check, inside the transaction. */
	r = store_txn(s, t.ops, ntags, tag_check, &t, rev, err, errlen);
	for (size_t i = 0; r == 0 && names && i < ntags; i++)
		snprintf(names[i], TAG_KEY_MAX, "%s", strrchr(t.keys[i], '/') + 1);
	free(t.ops);
	free(t.keys);
	return r;
}

struct place_req {
	const char *vm, *host;
	char key[TAG_KEY_MAX];
	struct store_op op;
};

static int place_check(struct store *s, void *arg, char *err, size_t errlen)
{
	struct place_req *q = arg;
	const struct dfw_policy *p;
	long vm;

	if (!(p = stored_vm(s, q->vm, &vm, err, errlen)))
		return 1;
	snprintf(q->key, sizeof(q->key), "%s%s", PLACEMENT_PREFIX, p->inv.vms[vm].name);
	q->op = (struct store_op){ STORE_PUT, q->key, q->host };
	return 0;
}

int placement_write(struct store *s, const char *vm, const char *host, uint64_t *rev, char *err,
		    size_t errlen)
{
	struct place_req q = { .vm = vm, .host = host };

	if (!policy_name_ok(host)) {
		snprintf(err, errlen, "host '%s': 1-48 letters, digits and . _ -", host);
		return 1;
	}
	/* op is filled in by place_check, inside the transaction. */
	return store_txn(s, &q.op, 1, place_check, &q, rev, err, errlen);
}
