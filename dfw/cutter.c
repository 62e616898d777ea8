/* The connection cutter: one thread, a queue of addresses, and the
 * backend's conntrack cut (backend_ct_flush). */
#include "dfw/cutter.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dfw/backend.h"

struct cutter {
	struct backend *be; /* the thread's own */
	FILE *log;
	char who[80];
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	/* Queued, under lock: the addresses of nvms VMs, first named first. */
	struct dfw_addr *addrs;
	size_t n, cap, nvms;
	char first[64];
	bool stop;
};

/* Makes one cut of everything queued until now (the lock is not held). */
static void cut(struct cutter *c, const struct dfw_addr *addrs, size_t n, size_t nvms,
		const char *first)
{
	struct backend_cut res;
	char err[256], how[96];
	uint64_t t0 = now_ns();

	if (backend_ct_flush(c->be, addrs, n, BACKEND_CUT_AUTO, &res, err, sizeof(err)) < 0)
		log_line(c->log, c->who, "cutting connections of %zu VM(s) entering quarantine: %s",
			 nvms, err);
	else
		log_line(c->log, c->who,
			 "quarantine: cut %zu connection(s) of %zu VM(s) (%s%s) in %llu us (%s)",
			 res.deleted, nvms, first, nvms > 1 ? ", ..." : "",
			 (unsigned long long)(now_ns() - t0) / 1000,
			 backend_cut_str(&res, how, sizeof(how)));
}

static void *run(void *arg)
{
	struct cutter *c = arg;
	struct dfw_addr *addrs = NULL;
	size_t cap = 0;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		size_t n, nvms;
		char first[sizeof(c->first)];

		while (!c->n && !c->stop)
			pthread_cond_wait(&c->wake, &c->lock);
		if (!c->n)
			break;
		/* Take the queue: the agent may queue more meanwhile. */
		grow((void **)&addrs, &cap, c->n, sizeof(*addrs));
		memcpy(addrs, c->addrs, c->n * sizeof(*addrs));
		n = c->n;
		nvms = c->nvms;
		memcpy(first, c->first, sizeof(first));
		c->n = c->nvms = 0;
		pthread_mutex_unlock(&c->lock);
		cut(c, addrs, n, nvms, first);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	free(addrs);
	return NULL;
}

struct cutter *cutter_new(const char *table, FILE *log, const char *who, char *err,
			  size_t errlen)
{
	struct cutter *c = xcalloc(1, sizeof(*c));
	sigset_t all, old;
	int e;

	c->log = log;
	snprintf(c->who, sizeof(c->who), "%s", who);
	if (!(c->be = backend_open(table, err, errlen))) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->wake, NULL);
	/* Signals are the main thread's (dfwd reads them from a signalfd). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	e = pthread_create(&c->thread, NULL, run, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e) {
		snprintf(err, errlen, "starting the connection cutter: %s", strerror(e));
		backend_close(c->be);
		free(c);
		return NULL;
	}
	return c;
}

void cutter_queue(struct cutter *c, const struct dfw_addr *addrs, size_t n, size_t nvms,
		  const char *first)
{
	if (!n)
		return;
	pthread_mutex_lock(&c->lock);
	grow((void **)&c->addrs, &c->cap, c->n + n, sizeof(*c->addrs));
	memcpy(c->addrs + c->n, addrs, n * sizeof(*addrs));
	c->n += n;
	if (!c->nvms)
		snprintf(c->first, sizeof(c->first), "%s", first);
	c->nvms += nvms;
	pthread_cond_signal(&c->wake);
	pthread_mutex_unlock(&c->lock);
}

void cutter_free(struct cutter *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_signal(&c->wake);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thread, NULL);
	pthread_cond_destroy(&c->wake);
	pthread_mutex_destroy(&c->lock);
	backend_close(c->be);
	free(c->addrs);
	free(c);
}
