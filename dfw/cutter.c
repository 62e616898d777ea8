/* The connection cutter: one thread, two queues of addresses (quarantine
 * cuts, made together; ticketed cuts, made alone and handed back), and the
 * backend's conntrack cut (backend_ct_flush). */
#include "dfw/cutter.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* A ticketed cut, queued. */
struct job {
	uint64_t ticket, t0;
	struct dfw_addr *addrs;
	size_t n;
};

struct cutter {
	struct backend *be; /* the thread's own */
	FILE *log;
	char who[80];
	int efd;            /* counts results waiting in done */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	/* Under lock: the quarantine cuts queued, the addresses of nvms VMs,
	 * first named first; the ticketed cuts queued; their results. */
	struct dfw_addr *addrs;
	size_t n, cap, nvms;
	char first[64];
	struct job *jobs;
	size_t njobs, capjobs;
	struct cutter_result *done;
	size_t ndone, capdone;
	bool stop;
};

/* Makes one cut of the quarantine cuts queued until now (the lock is not
 * held). */
static void cut_quarantined(struct cutter *c, const struct dfw_addr *addrs, size_t n,
			    size_t nvms, const char *first)
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

/* Makes a ticketed cut and queues its result (the lock is not held). */
static void cut_ticketed(struct cutter *c, struct job *j)
{
	struct cutter_result r = { .ticket = j->ticket };

	r.rc = backend_ct_flush(c->be, j->addrs, j->n, BACKEND_CUT_AUTO, &r.cut, r.err,
				sizeof(r.err));
	r.us = (now_ns() - j->t0) / 1000;
	free(j->addrs);
	pthread_mutex_lock(&c->lock);
	grow((void **)&c->done, &c->capdone, c->ndone + 1, sizeof(*c->done));
	c->done[c->ndone++] = r;
	pthread_mutex_unlock(&c->lock);
	efd_wake(c->efd);
}

static void *run(void *arg)
{
	struct cutter *c = arg;
	struct dfw_addr *addrs = NULL;
	size_t cap = 0;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct job *jobs;
		size_t n, nvms, njobs;
		char first[sizeof(c->first)];

		while (!c->n && !c->njobs && !c->stop)
			pthread_cond_wait(&c->wake, &c->lock);
		if (!c->n && !c->njobs)
			break;
		/* Take both queues: the agent may queue more meanwhile. */
		grow((void **)&addrs, &cap, c->n, sizeof(*addrs));
		if (c->n)
			memcpy(addrs, c->addrs, c->n * sizeof(*addrs));
		n = c->n;
		nvms = c->nvms;
		memcpy(first, c->first, sizeof(first));
		c->n = c->nvms = 0;
		jobs = c->jobs;
		njobs = c->njobs;
		c->jobs = NULL;
		c->njobs = c->capjobs = 0;
		pthread_mutex_unlock(&c->lock);
		if (n)
			cut_quarantined(c, addrs, n, nvms, first);
		for (size_t i = 0; i < njobs; i++)
			cut_ticketed(c, &jobs[i]);
		free(jobs);
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
	if ((c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		snprintf(err, errlen, "starting the connection cutter: eventfd: %s", strerror(errno));
		free(c);
		return NULL;
	}
	if (!(c->be = backend_open(table, err, errlen))) {
		close(c->efd);
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
		pthread_cond_destroy(&c->wake);
		pthread_mutex_destroy(&c->lock);
		backend_close(c->be);
		close(c->efd);
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

void cutter_queue_ticket(struct cutter *c, const struct dfw_addr *addrs, size_t n,
			 uint64_t ticket)
{
	struct job j = { .ticket = ticket, .t0 = now_ns(), .n = n };

	j.addrs = xcalloc(n, sizeof(*addrs));
	if (n)
		memcpy(j.addrs, addrs, n * sizeof(*addrs));
	pthread_mutex_lock(&c->lock);
	grow((void **)&c->jobs, &c->capjobs, c->njobs + 1, sizeof(*c->jobs));
	c->jobs[c->njobs++] = j;
	pthread_cond_signal(&c->wake);
	pthread_mutex_unlock(&c->lock);
}

int cutter_fd(const struct cutter *c)
{
	return c->efd;
}

void cutter_reap(struct cutter *c, void (*fn)(void *arg, const struct cutter_result *r),
		 void *arg)
{
	struct cutter_result *done;
	size_t ndone;

	/* Clear first: a result queued after the take below makes the fd
	 * readable again. */
	efd_clear(c->efd);
	pthread_mutex_lock(&c->lock);
	done = c->done;
	ndone = c->ndone;
	c->done = NULL;
	c->ndone = c->capdone = 0;
	pthread_mutex_unlock(&c->lock);
	for (size_t i = 0; i < ndone; i++)
		fn(arg, &done[i]);
	free(done);
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
	close(c->efd);
	free(c->addrs);
	free(c->jobs);
	free(c->done);
	free(c);
}
