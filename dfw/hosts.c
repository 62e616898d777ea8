/* Reading the host statuses that the agents publish (see hosts.h). */
#include "dfw/hosts.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

/* hosts_wait reads the status every millisecond for WAIT_FAST_MS (a change
 * is realized everywhere in tens of ms), then every WAIT_SLOW_MS. */
#define WAIT_FAST_MS 200
#define WAIT_SLOW_MS 50

static int row_add(void *arg, const struct store_host *h)
{
	struct host_list *l = arg;
	struct host_row *r;
	json_t *j = json_loads(h->value, 0, NULL);

	grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v));
	r = memset(&l->v[l->n++], 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", h->host);
	r->alive = h->alive;
	if (json_is_object(j) && json_is_integer(json_object_get(j, "revision"))) {
		const char *e = json_string_value(json_object_get(j, "last_error"));

		r->valid = true;
		r->rev = (uint64_t)json_integer_value(json_object_get(j, "revision"));
		r->vnics = (uint64_t)json_integer_value(json_object_get(j, "vnics"));
		r->updated = (uint64_t)json_integer_value(json_object_get(j, "updated"));
		r->loaded = json_is_true(json_object_get(j, "loaded"));
		snprintf(r->error, sizeof(r->error), "%s", e ? e : "");
	} else {
		snprintf(r->error, sizeof(r->error), "unreadable status: %.200s", h->value);
	}
	json_decref(j);
	return 0;
}

int hosts_read(struct store *s, struct host_list *l, char *err, size_t errlen)
{
	l->n = 0;
	return store_host_scan(s, row_add, l, err, errlen);
}

void hosts_free(struct host_list *l)
{
	free(l->v);
	memset(l, 0, sizeof(*l));
}

bool host_lags(const struct host_row *r, uint64_t rev)
{
	return (r->alive || r->vnics) && (!r->valid || r->rev < rev);
}

int hosts_wait(struct store *s, uint64_t rev, uint64_t timeout_ms, struct host_list *l,
	       char *err, size_t errlen)
{
	uint64_t start = now_ns(), deadline = start + timeout_ms * 1000000ull;
	struct timespec fast = { 0, 1000000 }, slow = { 0, WAIT_SLOW_MS * 1000000L };

	for (;;) {
		bool lag = false;
		uint64_t now;

		if (hosts_read(s, l, err, errlen) < 0)
			return -1;
		for (size_t i = 0; i < l->n; i++)
			lag |= host_lags(&l->v[i], rev);
		if (!lag)
			return 0;
		now = now_ns();
		if (now >= deadline)
			return 1;
		/* A host that lags past WAIT_FAST_MS is dead or stuck: reading
		 * every millisecond until the timeout costs an etcd two requests
		 * a millisecond (half of a core, for one waiting dfwctl) and
		 * brings it no sooner. */
		nanosleep(now - start < WAIT_FAST_MS * 1000000ull ? &fast : &slow, NULL);
	}
}
