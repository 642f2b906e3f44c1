/* blockcore/blockcore_int.h - private header of the blockcore module.
 *
 * One section per .c file.  Request life cycle (docs/hacking.md):
 *
 *   cp_bdev_p{read,write}v_async / cp_bdev_flush_async      (bdev.c)
 *     -> fast path: bc_dispatch() -> backend submit_locked()   (uring/aio)
 *                   or backend submit() (threads pool, RAM, linear)
 *     -> slow path: bc_helper_push() -> bounce / RMW on a helper thread
 *   backend completion -> bc_req_io_done()  (short I/O: resubmit/zero-fill)
 *                      -> bc_req_finish()   (release slot, run callback)
 *
 * Locks (never nested except as listed, in this order):
 *   dev->sq_lock     inflight count, pending list, io_uring SQ / io_submit
 *     -> helper.lock (a libaio flush may be handed to the helper pool)
 *   dev->req_lock    free list of request slots (leaf)
 *   dev->wlock       write-range tracking for the RMW path (leaf)
 *   dev->idle_lock   close() waiting for outstanding requests (leaf)
 *   pool->lock       a pool's queue (leaf)
 *   ram->lock        RAM device state (leaf; then pool.lock to queue the cpl)
 *   lin->remap_lock  linear device remaps (lv.c) -> lin->map_lock (leaf)
 * No lock is held while a completion callback runs.
 */
#ifndef CP_BLOCKCORE_INT_H
#define CP_BLOCKCORE_INT_H

#include "config.h"

/* config.h defines CP_HAVE_* either empty (meson conf.set(true)), 1 or 0,
 * or leaves it undefined: map all of these to BC_HAVE_* = 0/1. */
#if defined(CP_HAVE_IO_URING) && (0 - CP_HAVE_IO_URING - 1) == 1
#define BC_HAVE_IO_URING 1
#elif defined(CP_HAVE_IO_URING) && CP_HAVE_IO_URING
#define BC_HAVE_IO_URING 1
#else
#define BC_HAVE_IO_URING 0
#endif
#if defined(CP_HAVE_LIBAIO) && (0 - CP_HAVE_LIBAIO - 1) == 1
#define BC_HAVE_LIBAIO 1
#elif defined(CP_HAVE_LIBAIO) && CP_HAVE_LIBAIO
#define BC_HAVE_LIBAIO 1
#else
#define BC_HAVE_LIBAIO 0
#endif

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#if BC_HAVE_IO_URING
#include <liburing.h>
#endif
#if BC_HAVE_LIBAIO
#include <libaio.h>
#endif

#include "blockcore.h"
#include "common.h"
#include "vector.h"

/* iovec entries kept inside the request; longer vectors go to the heap. */
#define BC_INLINE_IOV 16
/* Largest bounce buffer / zero buffer used by the slow paths. */
#define BC_CHUNK (1u << 20)
/* Helper threads for the unaligned (bounce / RMW) path, started lazily. */
#define BC_HELPER_THREADS 4
#define BC_MAX_QUEUE_DEPTH 4096
#define BC_MAX_THREADS 256

enum bc_op {
	BC_OP_READ,
	BC_OP_WRITE,
	BC_OP_FLUSH,
};

struct bc_req;
/* Entry point of a request taken by a pool worker. */
typedef void (*bc_exec_fn)(struct bc_req *req);

struct bc_req {
	struct bc_req *next; /* free list, pending list or pool queue */
	cp_bdev *dev;
	enum bc_op op;
	uint64_t offset;   /* offset of the request */
	size_t len;	   /* total bytes of the request */
	size_t done;	   /* bytes transferred so far */
	struct iovec *iov; /* inline_iov or heap; advanced as done grows */
	int iovcnt;
	int iov_idx;	 /* first iov entry not completely transferred */
	bool heap_req;	 /* allocated beyond the slot array */
	bool counted;	 /* holds one of the backend's inflight slots */
	bool fast_write; /* counted in dev->fast_writes */
	int ret;	 /* result to deliver (RAM device, helper) */
	bc_exec_fn exec; /* what a pool worker runs */
	cp_io_cb cb;
	void *opaque;
#if BC_HAVE_LIBAIO
	struct iocb iocb;
#endif
	struct iovec inline_iov[BC_INLINE_IOV];
};

/* ---- pool.c: worker pools and engine threads ------------------------------ */

struct bc_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct bc_req *head, *tail;
	pthread_t *threads;
	unsigned nthreads;
	bool stop;
	cp_bdev *dev;
};

/* Start n workers that run req->exec(req) for queued requests in FIFO
 * order.  Returns 0 or -errno (no message). */
int bc_pool_init(struct bc_pool *pool, cp_bdev *dev, unsigned n,
		 const char *name);
void bc_pool_push(struct bc_pool *pool, struct bc_req *req);
/* Stop and join the workers; the queue must be empty. */
void bc_pool_fini(struct bc_pool *pool);
/* Start a thread with all signals blocked, named name (<= 15 chars). */
int bc_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg,
		    const char *name);
/* Mark the calling thread as one of dev's internal threads (completion
 * callbacks of dev run on it). */
void bc_thread_set_dev(cp_bdev *dev);
bool bc_thread_is_dev(const cp_bdev *dev);

/* ---- backends (uring.c, aio.c, threads.c, ram.c, lv.c) ------------------
 * A backend is complete: it moves the requests and it carries out the
 * synchronous operations on its medium.  bdev.c checks the arguments
 * (range, read-only, mode), passes the fault point and calls these; it
 * never looks at which kind of device it holds. */

struct bc_backend {
	enum cp_aio aio;
	/* Limit of requests in the kernel at once; 0 = no limit and no
	 * sq_lock (submit() is called instead of submit_locked()). */
	bool limited;
	/* Not a real medium (RAM) or one whose writes are counted on the
	 * devices below (linear): skip the crash-test fault point. */
	bool no_fault_point;
	int (*init)(cp_bdev *dev);
	/* Destroy the backend and its medium state; called once every
	 * request has completed (cp_bdev_close). */
	void (*fini)(cp_bdev *dev);
	/* With dev->sq_lock held; returns 0 or -errno (not submitted). */
	int (*submit_locked)(cp_bdev *dev, struct bc_req *req);
	/* Unlimited backends: queue the request; never fails. */
	void (*submit)(cp_bdev *dev, struct bc_req *req);

	/* The medium.  size: bytes or -errno (no message); the others
	 * return 0 or -errno with the message set (block_status: 0 hole,
	 * 1 data, *pnum bytes of the same kind; len > 0). */
	int64_t (*size)(cp_bdev *dev);
	int (*discard)(cp_bdev *dev, uint64_t offset, uint64_t len);
	int (*write_zeroes)(cp_bdev *dev, uint64_t offset, uint64_t len,
			    unsigned flags);
	int (*truncate)(cp_bdev *dev, uint64_t size);
	int (*preallocate)(cp_bdev *dev, uint64_t offset, uint64_t len,
			   enum cp_prealloc mode);
	int (*block_status)(cp_bdev *dev, uint64_t offset, uint64_t len,
			    uint64_t *pnum);
	/* Where the image lock bytes go (lock.c): the fd and the offset of
	 * byte 0; false if the medium takes no locks (RAM). */
	bool (*lock_target)(cp_bdev *dev, int *fd, uint64_t *base);
};

#if BC_HAVE_IO_URING
extern const struct bc_backend bc_uring_backend;
#endif
#if BC_HAVE_LIBAIO
extern const struct bc_backend bc_aio_backend;
#endif
extern const struct bc_backend bc_threads_backend;

/* ---- file.c: the medium of the fd backends --------------------------------
 * A regular file or a block device behind dev->fd.  A block device (and
 * the linear device) follows the fixed-size rules: truncate only to its
 * size, preallocate only inside it, block status all data. */

int64_t bc_fd_size(cp_bdev *dev);
int bc_fd_discard(cp_bdev *dev, uint64_t offset, uint64_t len);
int bc_fd_write_zeroes(cp_bdev *dev, uint64_t offset, uint64_t len,
		       unsigned flags);
int bc_fd_truncate(cp_bdev *dev, uint64_t size);
int bc_fd_preallocate(cp_bdev *dev, uint64_t offset, uint64_t len,
		      enum cp_prealloc mode);
int bc_fd_block_status(cp_bdev *dev, uint64_t offset, uint64_t len,
		       uint64_t *pnum);
int bc_fixed_truncate(cp_bdev *dev, uint64_t size);
int bc_fixed_preallocate(cp_bdev *dev, uint64_t offset, uint64_t len,
			 enum cp_prealloc mode);
int bc_all_data_block_status(cp_bdev *dev, uint64_t offset, uint64_t len,
			     uint64_t *pnum);

/* ---- ram.c: the RAM device (bc_ram_backend, set by cp_bdev_open_ram) ----
 * dev->ram is the medium; cp_ram_open_twin() gives it another device, and
 * the backend's fini destroys it with the last of them. */

struct bc_ram;

/* ---- lv.c: linear device (LV extents on PV devices) ---------------------
 * A linear device has fd = -1, direct = false, is_blockdev = true and
 * dev->backend = bc_linear_backend (unlimited: submit() splits
 * read/write/flush into requests on the PV devices, discard and write
 * zeroes are split the same way; truncate, preallocate and block status
 * follow the fixed-size rules of file.c). */

struct bc_linear;

/* ---- lock.c: QEMU-compatible image locks --------------------------------
 * The state lives in struct cp_bdev (zeroed at allocation = holds nothing,
 * shares all).  Where the bytes go is the backend's lock_target: the
 * device's own fd, or for a linear device the PV of its first extent at
 * that extent's offset; RAM devices lock nothing. */

struct bc_lock {
	unsigned perm, unshared;             /* what the device holds / denies */
	unsigned locked_perm, locked_unshared; /* bytes actually locked */
};

/* The fd backends' lock_target: the device's own fd from byte 0. */
bool bc_fd_lock_target(cp_bdev *dev, int *fd, uint64_t *base);

/* The members every fd backend's table (uring.c, aio.c, threads.c) shares:
 * the medium of file.c and the device's own fd for locks. */
#define BC_FD_BACKEND_OPS                                                      \
	.size = bc_fd_size, .discard = bc_fd_discard,                          \
	.write_zeroes = bc_fd_write_zeroes, .truncate = bc_fd_truncate,        \
	.preallocate = bc_fd_preallocate,                                      \
	.block_status = bc_fd_block_status, .lock_target = bc_fd_lock_target

/* ---- bdev.c: the device -------------------------------------------------- */

struct bc_range {
	uint64_t start, end;
};
CP_VECTOR(bc_range_vec, struct bc_range);

struct cp_bdev {
	char *name;
	int fd;
	enum cp_aio aio;
	enum cp_cache cache;
	bool readonly;
	bool is_blockdev;
	bool direct;	/* O_DIRECT: alignment enforced, slow path exists */
	unsigned align; /* reported by cp_bdev_align() */
	unsigned lbs;	/* block devices: logical block size */
	unsigned queue_depth;
	unsigned nthreads;
	const struct bc_backend *backend;

	/* request slots: queue_depth structs, free list under req_lock */
	pthread_mutex_t req_lock;
	struct bc_req *free_reqs;
	struct bc_req *slots;

	/* limited backends: requests in the kernel and those waiting */
	pthread_mutex_t sq_lock;
	unsigned inflight;
	struct bc_req *pend_head, *pend_tail;

	/* accepted requests whose callback has not returned yet */
	atomic_uint outstanding;
	pthread_mutex_t idle_lock;
	pthread_cond_t idle_cond;

	/* write serialisation for the RMW path (direct only):
	 * fast_writes counts aligned writes submitted untracked; while
	 * rmw_active != 0 new writes go to the helper and lock their range. */
	pthread_mutex_t wlock;
	pthread_cond_t wcond;
	atomic_uint fast_writes;
	atomic_uint rmw_active;
	bc_range_vec ranges;

	pthread_mutex_t helper_lock;
	bool helper_started;
	struct bc_pool helper;

	/* backend state */
	struct bc_pool workers; /* threads backend, RAM completion worker */
	bool workers_started;
#if BC_HAVE_IO_URING
	struct io_uring ring;
	pthread_t uring_thread;
	/* SQEs queued by callbacks on the completion thread, submitted in
	 * one io_uring_enter after the batch of completions (sq_lock) */
	bool uring_deferred;
#endif
#if BC_HAVE_LIBAIO
	io_context_t aio_ctx;
	pthread_t aio_thread;
	atomic_bool aio_no_fdsync;
	atomic_bool aio_stopping;
	void *aio_stop_buf;
#endif
	struct bc_ram *ram;	  /* ram.c: RAM device, else NULL */
	struct bc_linear *linear; /* lv.c: linear (LV) device, else NULL */
	struct bc_lock lock;	  /* lock.c */
};

/* Allocate a device named name with queue_depth request slots (fd = -1,
 * no backend).  Returns 0 or -ENOMEM (message set). */
int bc_dev_alloc(const char *name, unsigned queue_depth, cp_bdev **out);
/* Free what bc_dev_alloc() made and close dev->fd if open. */
void bc_dev_free(cp_bdev *dev);

/* Completion of one backend transfer of req (res bytes or -errno): advances
 * the request, zero-fills reads at EOF, resubmits the rest of a short
 * transfer, or finishes the request. */
void bc_req_io_done(struct bc_req *req, ssize_t res);
/* Release the request and run its callback with ret. */
void bc_req_finish(struct bc_req *req, int ret);
/* Hand the request to the helper pool (lazily started). */
int bc_helper_push(cp_bdev *dev, struct bc_req *req);
/* Take exclusive ownership of [rg.start, rg.end) against other tracked
 * writes (O_DIRECT devices); with rmw also against every aligned fast-path
 * write.  Blocks; returns 0 or -ENOMEM. */
int bc_range_lock(cp_bdev *dev, struct bc_range rg, bool rmw);
void bc_range_unlock(cp_bdev *dev, struct bc_range rg, bool rmw);

/* Synchronous I/O on fd at an offset, looping over short transfers.
 * Reads zero-fill past EOF (align > 1: also after a short read that ends
 * unaligned, which with O_DIRECT only happens at EOF).  Return 0 or -errno
 * (no message). */
int bc_fd_pread_full(int fd, void *buf, size_t len, uint64_t offset,
		     unsigned align);
int bc_fd_pwrite_full(int fd, const void *buf, size_t len, uint64_t offset);

#endif
