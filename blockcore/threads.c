/* blockcore/threads.c - the CP_AIO_THREADS backend.
 *
 * A worker pool (pool.c) of opts.threads workers doing
 * preadv/pwritev/fdatasync.  Callbacks run on the worker thread.
 */
#include "blockcore_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
    BC_FD_BACKEND_OPS,
};
