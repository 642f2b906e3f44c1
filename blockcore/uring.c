/* blockcore/uring.c - the CP_AIO_IO_URING backend.
 *
 * One ring of queue_depth entries per device.  Submissions (get_sqe, prep,
 * io_uring_submit) run under dev->sq_lock; bdev.c keeps at most queue_depth
 * requests in the ring, so an SQE is always available and the CQ cannot
 * overflow.  One completion thread per device reaps CQEs and runs
 * bc_req_io_done() with no lock held.  A NOP whose user_data is NULL tells
 * the completion thread to exit.
 */
#include "blockcore_int.h"

#if BC_HAVE_IO_URING

#include <errno.h>
#include <sched.h>
#include <string.h>

#ifndef IORING_SETUP_COOP_TASKRUN /* older headers */
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#define IORING_SETUP_TASKRUN_FLAG (1U << 9)
#endif

static int bc_uring_submit_sqes_locked(cp_bdev *dev)
{
	for (unsigned tries = 0;; tries++) {
		int r = io_uring_submit(&dev->ring);
		if (r >= 0)
			return 0;
		/* The SQE stays in the SQ ring: retry transient failures. */
		if ((r == -EINTR || r == -EAGAIN || r == -EBUSY) &&
		    tries < 100000) {
			sched_yield();
			continue;
		}
		return r;
	}
}

static int bc_uring_submit_locked(cp_bdev *dev, struct bc_req *req)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&dev->ring);
	if (!sqe) {
		int r = bc_uring_submit_sqes_locked(dev);
		if (r < 0)
			return r;
		sqe = io_uring_get_sqe(&dev->ring);
		if (!sqe)
			return -EAGAIN;
	}
	const struct iovec *iov = req->iov + req->iov_idx;
	unsigned cnt = (unsigned)(req->iovcnt - req->iov_idx);
	uint64_t off = req->offset + req->done;

	bool wr = req->op == BC_OP_WRITE;
	switch (req->op) {
	case BC_OP_READ:
	case BC_OP_WRITE:
		/* as io_uring_prep_read/write for one buffer, else _readv/v */
		if (cnt == 1 && iov->iov_len <= UINT32_MAX)
			io_uring_prep_rw(wr ? IORING_OP_WRITE : IORING_OP_READ,
					 sqe, dev->fd, iov->iov_base,
					 (unsigned)iov->iov_len, off);
		else
			io_uring_prep_rw(wr ? IORING_OP_WRITEV
					    : IORING_OP_READV,
					 sqe, dev->fd, iov, cnt, off);
		break;
	case BC_OP_FLUSH:
	default:
		io_uring_prep_fsync(sqe, dev->fd, IORING_FSYNC_DATASYNC);
		break;
	}
	io_uring_sqe_set_data(sqe, req);
	if (bc_thread_is_dev(dev)) {
		/* A callback on our completion thread resubmits: gather
		 * these and submit once after the batch of completions, so
		 * neighbouring requests reach the block layer together (one
		 * plug, merged) and cost one system call. */
		dev->uring_deferred = true;
		/* but never hold back more than a few: a random workload
		 * loses more to the queue running dry than it gains */
		if (io_uring_sq_ready(&dev->ring) < 4)
			return 0;
		dev->uring_deferred = false;
	}
	return bc_uring_submit_sqes_locked(dev);
}

static void *bc_uring_main(void *arg)
{
	cp_bdev *dev = arg;
	bc_thread_set_dev(dev);
	for (;;) {
		struct io_uring_cqe *cqe;
		int r = io_uring_wait_cqe(&dev->ring, &cqe);
		if (r == -EINTR || r == -EAGAIN)
			continue;
		if (r < 0) {
			/* Cannot happen with a valid ring; avoid spinning. */
			sched_yield();
			continue;
		}
		bool stop = false;
		/* every completion already there, then one submission */
		do {
			struct bc_req *req = io_uring_cqe_get_data(cqe);
			int res = cqe->res;
			io_uring_cqe_seen(&dev->ring, cqe);
			if (!req) {
				stop = true;
				break;
			}
			bc_req_io_done(req, res);
		} while (io_uring_peek_cqe(&dev->ring, &cqe) == 0);
		pthread_mutex_lock(&dev->sq_lock);
		if (dev->uring_deferred) {
			dev->uring_deferred = false;
			int sr = bc_uring_submit_sqes_locked(dev);
			(void)sr; /* SQEs stay queued; the next submit retries */
		}
		pthread_mutex_unlock(&dev->sq_lock);
		if (stop)
			break;
	}
	return NULL;
}

static int bc_uring_init(cp_bdev *dev)
{
	/* Completions of reads and writes reach the submitting task as task
	 * work.  By default the kernel interrupts that task with an IPI to
	 * run it at once; COOP_TASKRUN lets it run at the task's next entry
	 * into the kernel (a sleeping task is still woken), which the
	 * completion thread makes all the time.  In a VM the IPIs are exits:
	 * random writes into fresh clusters went 12% faster on 2 vCPUs.
	 * TASKRUN_FLAG tells liburing when to enter the kernel to run it.
	 * Kernels before 5.19 refuse the flags: then without. */
	int r = io_uring_queue_init(dev->queue_depth, &dev->ring,
				    IORING_SETUP_COOP_TASKRUN |
					    IORING_SETUP_TASKRUN_FLAG);
	if (r == -EINVAL)
		r = io_uring_queue_init(dev->queue_depth, &dev->ring, 0);
	if (r < 0)
		return cp_error(r, "%s: io_uring_queue_init(%u): %s", dev->name,
				dev->queue_depth, strerror(-r));
	r = bc_thread_start(&dev->uring_thread, bc_uring_main, dev, "cp-uring");
	if (r < 0) {
		io_uring_queue_exit(&dev->ring);
		return cp_error(r, "%s: starting io_uring thread: %s",
				dev->name, strerror(-r));
	}
	return 0;
}

static void bc_uring_fini(cp_bdev *dev)
{
	pthread_mutex_lock(&dev->sq_lock);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&dev->ring);
	if (!sqe) {
		bc_uring_submit_sqes_locked(dev);
		sqe = io_uring_get_sqe(&dev->ring);
	}
	/* All requests have completed, so the SQ has room. */
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data(sqe, NULL);
	bc_uring_submit_sqes_locked(dev);
	pthread_mutex_unlock(&dev->sq_lock);
	pthread_join(dev->uring_thread, NULL);
	io_uring_queue_exit(&dev->ring);
}

const struct bc_backend bc_uring_backend = {
    .aio = CP_AIO_IO_URING,
    .limited = true,
    .init = bc_uring_init,
    .fini = bc_uring_fini,
    .submit_locked = bc_uring_submit_locked,
    BC_FD_BACKEND_OPS,
};

#endif
