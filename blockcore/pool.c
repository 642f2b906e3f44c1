/* blockcore/pool.c - worker pools and the engine's threads.
 *
 * A pool is N threads taking requests from one FIFO queue and running
 * req->exec(req) on them.  It serves as the workers of the threads
 * backend (threads.c), the helper pool of the slow (unaligned) path
 * (bdev.c) and the completion worker of RAM devices (ram.c).  Every
 * engine thread starts with all signals blocked and knows which device it
 * serves (bc_thread_is_dev: synchronous calls from a callback of the same
 * device are refused).
 */
#include "blockcore_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static _Thread_local const cp_bdev *bc_thread_dev;

void bc_thread_set_dev(cp_bdev *dev)
{
	bc_thread_dev = dev;
}

bool bc_thread_is_dev(const cp_bdev *dev)
{
	return bc_thread_dev == dev;
}

int bc_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg,
		    const char *name)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		return -r;
	pthread_setname_np(*thread, name);
	return 0;
}

static void *bc_pool_main(void *arg)
{
	struct bc_pool *pool = arg;
	bc_thread_set_dev(pool->dev);
	pthread_mutex_lock(&pool->lock);
	for (;;) {
		while (!pool->head && !pool->stop)
			pthread_cond_wait(&pool->cond, &pool->lock);
		struct bc_req *req = pool->head;
		if (!req)
			break;
		pool->head = req->next;
		if (!pool->head)
			pool->tail = NULL;
		req->next = NULL;
		pthread_mutex_unlock(&pool->lock);
		req->exec(req);
		pthread_mutex_lock(&pool->lock);
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

int bc_pool_init(struct bc_pool *pool, cp_bdev *dev, unsigned n,
		 const char *name)
{
	memset(pool, 0, sizeof(*pool));
	pool->dev = dev;
	pool->threads = calloc(n, sizeof(*pool->threads));
	if (!pool->threads)
		return -ENOMEM;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->cond, NULL);
	for (unsigned i = 0; i < n; i++) {
		char tname[16];
		snprintf(tname, sizeof(tname), "%s%u", name, i);
		int r = bc_thread_start(&pool->threads[i], bc_pool_main, pool,
					tname);
		if (r < 0) {
			bc_pool_fini(pool);
			return r;
		}
		pool->nthreads++;
	}
	return 0;
}

void bc_pool_push(struct bc_pool *pool, struct bc_req *req)
{
	pthread_mutex_lock(&pool->lock);
	CP_FIFO_PUSH(pool->head, pool->tail, req);
	pthread_cond_signal(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
}

void bc_pool_fini(struct bc_pool *pool)
{
	if (!pool->threads)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stop = true;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned i = 0; i < pool->nthreads; i++)
		pthread_join(pool->threads[i], NULL);
	free(pool->threads);
	pool->threads = NULL;
	pool->nthreads = 0;
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->cond);
}
