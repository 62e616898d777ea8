/* Sliding-window distinct counting per source (see netthreat.h).
 *
 * Each source keeps two open-addressing tables, key -> last seen, of the
 * destinations and of the (destination, protocol, port) triples it
 * contacted.  A table is swept of entries older than the window only when
 * it reaches its threshold, so the common case is one probe per packet;
 * a table never holds more than threshold + 1 live keys. */
#include "dfw/netthreat.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>

/* key -> last seen (ms).  Key 0 marks an empty slot. */
struct seen {
	uint64_t *keys, *ms;
	size_t cap, n;
};

struct source {
	uint32_t id;
	uint64_t quiet_until;
	struct seen ports, hosts;
};

struct nt_detector {
	struct dfw_netthreat cfg;
	struct source *src;   /* open addressing by id; id 0 is empty */
	size_t cap, n;
};

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static uint64_t addr_key(const struct dfw_addr *a)
{
	uint64_t h = a->family;

	for (size_t i = 0; i < (a->family == AF_INET6 ? 16u : 4u); i++)
		h = mix(h ^ a->a[i]) + i;
	return h ? h : 1;
}

static void seen_free(struct seen *s)
{
	free(s->keys);
	free(s->ms);
	memset(s, 0, sizeof(*s));
}

static void seen_init(struct seen *s, size_t threshold)
{
	size_t cap = 16;

	while (cap < 2 * (threshold + 1))
		cap *= 2;
	s->keys = xcalloc(cap, sizeof(*s->keys));
	s->ms = xcalloc(cap, sizeof(*s->ms));
	s->cap = cap;
	s->n = 0;
}

static size_t seen_slot(const struct seen *s, uint64_t key)
{
	size_t i = (size_t)mix(key) & (s->cap - 1);

	while (s->keys[i] && s->keys[i] != key)
		i = (i + 1) & (s->cap - 1);
	return i;
}

/* Keeps only the keys seen since `since` (rebuilds the table). */
static void seen_sweep(struct seen *s, uint64_t since)
{
	struct seen old = *s;

	s->keys = xcalloc(old.cap, sizeof(*s->keys));
	s->ms = xcalloc(old.cap, sizeof(*s->ms));
	s->n = 0;
	for (size_t i = 0; i < old.cap; i++) {
		size_t j;

		if (!old.keys[i] || old.ms[i] < since)
			continue;
		j = seen_slot(s, old.keys[i]);
		s->keys[j] = old.keys[i];
		s->ms[j] = old.ms[i];
		s->n++;
	}
	free(old.keys);
	free(old.ms);
}

/* Records key at now; returns the number of keys seen within the window
 * (exact once it reaches the threshold). */
static size_t seen_add(struct seen *s, uint64_t key, uint64_t now, uint64_t window,
		       size_t threshold)
{
	size_t i = seen_slot(s, key);

	if (!s->keys[i]) {
		if (s->n + 1 > threshold) {
			seen_sweep(s, now >= window ? now - window : 0);
			i = seen_slot(s, key);
		}
		s->keys[i] = key;
		s->n++;
	}
	s->ms[i] = now;
	return s->n;
}

static void source_reset(struct nt_detector *d, struct source *s)
{
	seen_free(&s->ports);
	seen_free(&s->hosts);
	seen_init(&s->ports, d->cfg.max_ports);
	seen_init(&s->hosts, d->cfg.max_hosts);
}

static void sources_free(struct nt_detector *d)
{
	for (size_t i = 0; i < d->cap; i++) {
		seen_free(&d->src[i].ports);
		seen_free(&d->src[i].hosts);
	}
	free(d->src);
	d->src = NULL;
	d->cap = d->n = 0;
}

static struct source *source_get(struct nt_detector *d, uint32_t id)
{
	size_t i;

	if (2 * (d->n + 1) > d->cap) {
		struct source *old = d->src;
		size_t oldcap = d->cap;

		d->cap = d->cap ? 2 * d->cap : 64;
		d->src = xcalloc(d->cap, sizeof(*d->src));
		for (size_t k = 0; k < oldcap; k++) {
			if (!old[k].id)
				continue;
			for (i = (size_t)mix(old[k].id) & (d->cap - 1); d->src[i].id;)
				i = (i + 1) & (d->cap - 1);
			d->src[i] = old[k];
		}
		free(old);
	}
	for (i = (size_t)mix(id) & (d->cap - 1); d->src[i].id && d->src[i].id != id;)
		i = (i + 1) & (d->cap - 1);
	if (!d->src[i].id) {
		d->src[i].id = id;
		source_reset(d, &d->src[i]);
		d->n++;
	}
	return &d->src[i];
}

struct nt_detector *nt_new(const struct dfw_netthreat *cfg)
{
	struct nt_detector *d = xcalloc(1, sizeof(*d));

	nt_configure(d, cfg);
	return d;
}

void nt_free(struct nt_detector *d)
{
	if (!d)
		return;
	sources_free(d);
	free(d);
}

void nt_configure(struct nt_detector *d, const struct dfw_netthreat *cfg)
{
	sources_free(d);
	d->cfg = *cfg;
	d->cfg.tag = NULL; /* not ours to keep */
}

bool nt_feed(struct nt_detector *d, uint32_t src, const struct dfw_addr *dst, uint8_t proto,
	     uint16_t port, uint64_t now_ms, uint64_t hold_ms, struct nt_alert *out)
{
	struct source *s;
	uint64_t hkey = addr_key(dst), pkey;
	size_t ports, hosts;

	if (!src)
		return false;
	s = source_get(d, src);
	if (now_ms < s->quiet_until)
		return false;
	pkey = mix(hkey ^ ((uint64_t)proto << 16 | port));
	pkey = pkey ? pkey : 1;
	ports = seen_add(&s->ports, pkey, now_ms, d->cfg.window_ms, d->cfg.max_ports);
	hosts = seen_add(&s->hosts, hkey, now_ms, d->cfg.window_ms, d->cfg.max_hosts);
	if (ports <= d->cfg.max_ports && hosts <= d->cfg.max_hosts)
		return false;
	out->src = src;
	out->ports = (uint32_t)ports;
	out->hosts = (uint32_t)hosts;
	out->by_ports = ports > d->cfg.max_ports;
	s->quiet_until = now_ms + hold_ms;
	source_reset(d, s);
	return true;
}

size_t nt_sources(const struct nt_detector *d)
{
	return d->n;
}
