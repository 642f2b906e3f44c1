/* blockcore/aio.c - the CP_AIO_NATIVE backend (Linux AIO via libaio).
 *
 * One io_context of queue_depth events per device; io_submit under
 * dev->sq_lock (bdev.c keeps at most queue_depth requests in the context);
 * one completion thread per device running io_getevents.  Linux AIO is only
 * asynchronous with O_DIRECT; on buffered files io_submit does the I/O
 * before returning, which is correct, just synchronous.  Flush uses
 * IOCB_CMD_FDSYNC; if the kernel refuses it (EINVAL) the device falls back
 * to fdatasync() on a helper thread.  Close submits a zero-length read whose
 * data is NULL to make the completion thread exit.
 */
#include "blockcore_int.h"

#if BC_HAVE_LIBAIO

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

static void bc_aio_flush_exec(struct bc_req *req)
{
	int r = fdatasync(req->dev->fd) < 0 ? -errno : 0;
	bc_req_finish(req, r);
}

static int bc_aio_submit_iocb_locked(cp_bdev *dev, struct iocb *iocb)
{
	struct iocb *iocbs[1] = {iocb};
	for (unsigned tries = 0;; tries++) {
		int r = io_submit(dev->aio_ctx, 1, iocbs);
		if (r == 1)
			return 0;
		if (r >= 0)
			r = -EAGAIN;
		if ((r == -EINTR || r == -EAGAIN) && tries < 100000) {
			sched_yield();
			continue;
		}
		return r;
	}
}

static int bc_aio_submit_locked(cp_bdev *dev, struct bc_req *req)
{
	struct iocb *iocb = &req->iocb;
	struct iovec *iov = req->iov + req->iov_idx;
	int cnt = req->iovcnt - req->iov_idx;
	long long off = (long long)(req->offset + req->done);

	bool wr = req->op == BC_OP_WRITE;
	switch (req->op) {
	case BC_OP_READ:
	case BC_OP_WRITE:
		/* the plain form for one buffer */
		if (cnt == 1)
			(wr ? io_prep_pwrite : io_prep_pread)(
			    iocb, dev->fd, iov->iov_base, iov->iov_len, off);
		else
			(wr ? io_prep_pwritev : io_prep_preadv)(iocb, dev->fd,
								iov, cnt, off);
		break;
	case BC_OP_FLUSH:
	default:
		if (atomic_load(&dev->aio_no_fdsync))
			goto helper_flush;
		io_prep_fdsync(iocb, dev->fd);
		break;
	}
	iocb->data = req;
	int r = bc_aio_submit_iocb_locked(dev, iocb);
	if (r == -EINVAL && req->op == BC_OP_FLUSH) {
		atomic_store(&dev->aio_no_fdsync, true);
		goto helper_flush;
	}
	return r;

helper_flush:
	req->exec = bc_aio_flush_exec;
	return bc_helper_push(dev, req);
}

static void *bc_aio_main(void *arg)
{
	cp_bdev *dev = arg;
	struct io_event events[64];
	bool stop = false;

	bc_thread_set_dev(dev);
	while (!stop) {
		int n = io_getevents(dev->aio_ctx, 1, CP_ARRAY_SIZE(events),
				     events, NULL);
		if (n < 0) {
			if (n != -EINTR && atomic_load(&dev->aio_stopping))
				break;
			sched_yield();
			continue;
		}
		for (int i = 0; i < n; i++) {
			struct bc_req *req = events[i].data;
			if (!req) {
				stop = true;
				continue;
			}
			bc_req_io_done(req, (ssize_t)(long)events[i].res);
		}
	}
	return NULL;
}

static int bc_aio_init(cp_bdev *dev)
{
	dev->aio_ctx = 0;
	int r = io_setup((int)dev->queue_depth, &dev->aio_ctx);
	if (r < 0)
		return cp_error(r, "%s: io_setup(%u): %s", dev->name,
				dev->queue_depth, strerror(-r));
	dev->aio_stop_buf = cp_bdev_alloc_buf(4096);
	if (!dev->aio_stop_buf) {
		io_destroy(dev->aio_ctx);
		return cp_error(-ENOMEM, "%s: out of memory", dev->name);
	}
	r = bc_thread_start(&dev->aio_thread, bc_aio_main, dev, "cp-aio");
	if (r < 0) {
		io_destroy(dev->aio_ctx);
		cp_bdev_free_buf(dev->aio_stop_buf);
		return cp_error(r, "%s: starting aio thread: %s", dev->name,
				strerror(-r));
	}
	return 0;
}

static void bc_aio_fini(cp_bdev *dev)
{
	struct iocb stop;
	pthread_mutex_lock(&dev->sq_lock);
	io_prep_pread(&stop, dev->fd, dev->aio_stop_buf, 0, 0);
	stop.data = NULL;
	int r = bc_aio_submit_iocb_locked(dev, &stop);
	pthread_mutex_unlock(&dev->sq_lock);
	if (r < 0) {
		/* Destroying the context makes io_getevents fail (EINVAL). */
		atomic_store(&dev->aio_stopping, true);
		io_destroy(dev->aio_ctx);
		pthread_join(dev->aio_thread, NULL);
	} else {
		pthread_join(dev->aio_thread, NULL);
		io_destroy(dev->aio_ctx);
	}
	cp_bdev_free_buf(dev->aio_stop_buf);
}

const struct bc_backend bc_aio_backend = {
    .aio = CP_AIO_NATIVE,
    .limited = true,
    .init = bc_aio_init,
    .fini = bc_aio_fini,
    .submit_locked = bc_aio_submit_locked,
    BC_FD_BACKEND_OPS,
};

#endif
