/* blockcore/threads.c - worker pools and the CP_AIO_THREADS backend.
 *
 * A pool is N threads taking requests from one FIFO queue and running
 * req->exec(req) on them.  The threads backend uses a pool of opts.threads
 * workers doing preadv/pwritev/fdatasync; the same pool code serves as the
 * helper pool of the slow (unaligned) path and as the completion worker of
 * RAM devices.  Callbacks run on the worker thread.
 */
#include "blockcore_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
	req->next = NULL;
	pthread_mutex_lock(&pool->lock);
	if (pool->tail)
		pool->tail->next = req;
	else
		pool->head = req;
	pool->tail = req;
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

/* ---- CP_AIO_THREADS backend ---------------------------------------------- */

static void bc_threads_exec(struct bc_req *req)
{
	cp_bdev *dev = req->dev;
	const struct iovec *iov = req->iov + req->iov_idx;
	int cnt = req->iovcnt - req->iov_idx;
	off_t off = (off_t)(req->offset + req->done);
	ssize_t r;

	switch (req->op) {
	case BC_OP_READ:
		r = cnt ? preadv(dev->fd, iov, cnt, off) : 0;
		break;
	case BC_OP_WRITE:
		r = cnt ? pwritev(dev->fd, iov, cnt, off) : 0;
		break;
	case BC_OP_FLUSH:
	default:
		r = fdatasync(dev->fd);
		break;
	}
	bc_req_io_done(req, r < 0 ? -errno : r);
}

static int bc_threads_init(cp_bdev *dev)
{
	int r = bc_pool_init(&dev->workers, dev, dev->nthreads, "cp-io");
	if (r < 0)
		return cp_error(r, "%s: starting %u I/O threads: %s", dev->name,
				dev->nthreads, strerror(-r));
	dev->workers_started = true;
	return 0;
}

static void bc_threads_fini(cp_bdev *dev)
{
	if (dev->workers_started)
		bc_pool_fini(&dev->workers);
	dev->workers_started = false;
}

static void bc_threads_submit(cp_bdev *dev, struct bc_req *req)
{
	req->exec = bc_threads_exec;
	bc_pool_push(&dev->workers, req);
}

const struct bc_backend bc_threads_backend = {
    .aio = CP_AIO_THREADS,
    .limited = false,
    .init = bc_threads_init,
    .fini = bc_threads_fini,
    .submit = bc_threads_submit,
    .size = bc_fd_size,
    .discard = bc_fd_discard,
    .write_zeroes = bc_fd_write_zeroes,
    .truncate = bc_fd_truncate,
    .preallocate = bc_fd_preallocate,
    .block_status = bc_fd_block_status,
};
