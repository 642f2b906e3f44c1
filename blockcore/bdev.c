/* blockcore/bdev.c - the device: open/close, request life cycle, sync
 * wrappers, the unaligned (bounce / read-modify-write) path, and the
 * synchronous range operations (discard, write zeroes, truncate,
 * preallocate, block status): checked here, carried out by the backend
 * (file.c for the fd backends, ram.c, lv.c).
 *
 * Write serialisation with O_DIRECT (the only mode with a slow path):
 * aligned writes go straight to the backend after bumping dev->fast_writes;
 * an RMW write first raises dev->rmw_active, waits until fast_writes drains
 * to zero, then waits until no tracked range overlaps its aligned range and
 * inserts it.  While rmw_active != 0, newly submitted aligned writes are
 * routed to the helper pool and lock their range as well.  The check pair
 * (writer: inc fast_writes, load rmw_active; RMW: inc rmw_active, load
 * fast_writes) is sequentially consistent, so at least one side sees the
 * other.  Nothing on a submission or completion path ever blocks on the
 * range lock; only helper threads and synchronous calls do.
 */
#include "blockcore_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "cleanup.h"

/* ---- names and parsers --------------------------------------------------- */

static const char *const bc_aio_names[] = {"io_uring", "native", "threads"};
static const char *const bc_cache_names[] = {
    "writeback", "none", "writethrough", "directsync", "unsafe"};
static const char *const bc_prealloc_names[] = {"off", "metadata", "falloc",
						"full"};

static int bc_parse(const char *s, const char *const *names, size_t n,
		    const char *what)
{
	for (size_t i = 0; s && i < n; i++) {
		if (!strcmp(s, names[i]))
			return (int)i;
	}
	char list[128] = "";
	for (size_t i = 0; i < n; i++) {
		strncat(list, names[i], sizeof(list) - strlen(list) - 1);
		if (i + 1 < n)
			strncat(list, ", ", sizeof(list) - strlen(list) - 1);
	}
	return cp_error(-EINVAL, "invalid %s '%s' (expected %s)", what,
			s ? s : "", list);
}

int cp_aio_parse(const char *s, enum cp_aio *out)
{
	CP_API_ENTER();
	int r =
	    bc_parse(s, bc_aio_names, CP_ARRAY_SIZE(bc_aio_names), "aio mode");
	if (r < 0)
		return r;
	*out = (enum cp_aio)r;
	return 0;
}

int cp_cache_parse(const char *s, enum cp_cache *out)
{
	CP_API_ENTER();
	int r = bc_parse(s, bc_cache_names, CP_ARRAY_SIZE(bc_cache_names),
			 "cache mode");
	if (r < 0)
		return r;
	*out = (enum cp_cache)r;
	return 0;
}

int cp_prealloc_parse(const char *s, enum cp_prealloc *out)
{
	CP_API_ENTER();
	int r = bc_parse(s, bc_prealloc_names, CP_ARRAY_SIZE(bc_prealloc_names),
			 "preallocation mode");
	if (r < 0)
		return r;
	*out = (enum cp_prealloc)r;
	return 0;
}

const char *cp_aio_name(enum cp_aio aio)
{
	if ((unsigned)aio < CP_ARRAY_SIZE(bc_aio_names))
		return bc_aio_names[aio];
	return "unknown";
}

const char *cp_prealloc_name(enum cp_prealloc p)
{
	if ((unsigned)p < CP_ARRAY_SIZE(bc_prealloc_names))
		return bc_prealloc_names[p];
	return "unknown";
}

void cp_bdev_opts_init(struct cp_bdev_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
	opts->aio = CP_AIO_IO_URING;
	opts->cache = CP_CACHE_WRITEBACK;
	opts->queue_depth = 128;
	opts->threads = 16;
	opts->fallback = true;
}

void *cp_bdev_alloc_buf(size_t len)
{
	void *p;
	if (posix_memalign(&p, 4096, len ? len : 1))
		return NULL;
	return p;
}

void cp_bdev_free_buf(void *buf)
{
	free(buf);
}

/* ---- accessors ----------------------------------------------------------- */

const char *cp_bdev_name(const cp_bdev *dev)
{
	return dev->name;
}

unsigned cp_bdev_align(const cp_bdev *dev)
{
	return dev->align;
}

enum cp_aio cp_bdev_aio(const cp_bdev *dev)
{
	return dev->aio;
}

enum cp_cache cp_bdev_cache(const cp_bdev *dev)
{
	return dev->cache;
}

bool cp_bdev_is_blockdev(const cp_bdev *dev)
{
	return dev->is_blockdev;
}

bool cp_bdev_readonly(const cp_bdev *dev)
{
	return dev->readonly;
}

/* Size without setting a message; -errno on failure. */
static int64_t bc_size(cp_bdev *dev)
{
	return dev->backend->size(dev);
}

uint64_t cp_bdev_size(cp_bdev *dev)
{
	int64_t r = bc_size(dev);
	if (r < 0) {
		cp_error((int)r, "%s: size: %s", dev->name, strerror((int)-r));
		return 0;
	}
	return (uint64_t)r;
}

/* ---- device allocation --------------------------------------------------- */

int bc_dev_alloc(const char *name, unsigned queue_depth, cp_bdev **out)
{
	cp_bdev *dev = calloc(1, sizeof(*dev));
	if (!dev)
		return cp_error(-ENOMEM, "%s: out of memory", name);
	dev->fd = -1;
	dev->queue_depth = queue_depth;
	dev->name = strdup(name);
	dev->slots = calloc(queue_depth, sizeof(*dev->slots));
	if (!dev->name || !dev->slots) {
		free(dev->name);
		free(dev->slots);
		free(dev);
		return cp_error(-ENOMEM, "%s: out of memory", name);
	}
	for (unsigned i = queue_depth; i-- > 0;) {
		dev->slots[i].next = dev->free_reqs;
		dev->free_reqs = &dev->slots[i];
	}
	pthread_mutex_init(&dev->req_lock, NULL);
	pthread_mutex_init(&dev->sq_lock, NULL);
	pthread_mutex_init(&dev->idle_lock, NULL);
	pthread_cond_init(&dev->idle_cond, NULL);
	pthread_mutex_init(&dev->wlock, NULL);
	pthread_cond_init(&dev->wcond, NULL);
	pthread_mutex_init(&dev->helper_lock, NULL);
	atomic_init(&dev->outstanding, 0);
	atomic_init(&dev->fast_writes, 0);
	atomic_init(&dev->rmw_active, 0);
	*out = dev;
	return 0;
}

void bc_dev_free(cp_bdev *dev)
{
	if (dev->fd >= 0)
		close(dev->fd);
	pthread_mutex_destroy(&dev->req_lock);
	pthread_mutex_destroy(&dev->sq_lock);
	pthread_mutex_destroy(&dev->idle_lock);
	pthread_cond_destroy(&dev->idle_cond);
	pthread_mutex_destroy(&dev->wlock);
	pthread_cond_destroy(&dev->wcond);
	pthread_mutex_destroy(&dev->helper_lock);
	bc_range_vec_reset(&dev->ranges);
	free(dev->slots);
	free(dev->name);
	free(dev);
}

/* ---- request slots ------------------------------------------------------- */

static struct bc_req *bc_req_get(cp_bdev *dev)
{
	struct bc_req *req;
	pthread_mutex_lock(&dev->req_lock);
	req = dev->free_reqs;
	if (req)
		dev->free_reqs = req->next;
	pthread_mutex_unlock(&dev->req_lock);
	if (req) {
		memset(req, 0, offsetof(struct bc_req, inline_iov));
	} else {
		/* More requests than queue_depth at once: slow path. */
		req = calloc(1, sizeof(*req));
		if (!req)
			return NULL;
		req->heap_req = true;
	}
	req->dev = dev;
	return req;
}

static void bc_req_put(cp_bdev *dev, struct bc_req *req)
{
	if (req->iov != req->inline_iov)
		free(req->iov);
	if (req->heap_req) {
		free(req);
		return;
	}
	pthread_mutex_lock(&dev->req_lock);
	req->next = dev->free_reqs;
	dev->free_reqs = req;
	pthread_mutex_unlock(&dev->req_lock);
}

/* Copy the caller's iovec array into req; sets req->len. */
static int bc_req_set_iov(struct bc_req *req, const struct iovec *iov,
			  int iovcnt)
{
	size_t len = 0;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SSIZE_MAX - len)
			return -EINVAL;
		len += iov[i].iov_len;
	}
	if (iovcnt <= BC_INLINE_IOV) {
		req->iov = req->inline_iov;
	} else {
		req->iov = malloc((size_t)iovcnt * sizeof(*iov));
		if (!req->iov) {
			req->iov = req->inline_iov;
			return -ENOMEM;
		}
	}
	if (iovcnt)
		memcpy(req->iov, iov, (size_t)iovcnt * sizeof(*iov));
	req->iovcnt = iovcnt;
	req->len = len;
	return 0;
}

static bool bc_req_aligned(const struct bc_req *req, unsigned align)
{
	if (!CP_IS_ALIGNED(req->offset, align) ||
	    !CP_IS_ALIGNED(req->len, align))
		return false;
	for (int i = 0; i < req->iovcnt; i++) {
		if (!CP_IS_ALIGNED((uintptr_t)req->iov[i].iov_base, align) ||
		    !CP_IS_ALIGNED(req->iov[i].iov_len, align))
			return false;
	}
	return true;
}

/* Account n more bytes as transferred. */
static void bc_req_advance(struct bc_req *req, size_t n)
{
	req->done += n;
	while (n && req->iov_idx < req->iovcnt) {
		struct iovec *v = &req->iov[req->iov_idx];
		if (n >= v->iov_len) {
			n -= v->iov_len;
			v->iov_len = 0;
			req->iov_idx++;
		} else {
			v->iov_base = (char *)v->iov_base + n;
			v->iov_len -= n;
			n = 0;
		}
	}
}

static void bc_req_zero_rest(struct bc_req *req)
{
	for (int i = req->iov_idx; i < req->iovcnt; i++)
		memset(req->iov[i].iov_base, 0, req->iov[i].iov_len);
	req->done = req->len;
}

/* Copy n bytes between buf and the request's data at byte offset pos of
 * the (unadvanced) iovec array. */
static void bc_req_copy(struct bc_req *req, size_t pos, void *buf, size_t n,
			bool to_iov)
{
	char *b = buf;
	for (int i = 0; i < req->iovcnt && n; i++) {
		size_t l = req->iov[i].iov_len;
		if (pos >= l) {
			pos -= l;
			continue;
		}
		size_t c = CP_MIN(l - pos, n);
		char *p = (char *)req->iov[i].iov_base + pos;
		if (to_iov)
			memcpy(p, b, c);
		else
			memcpy(b, p, c);
		b += c;
		n -= c;
		pos = 0;
	}
}

/* ---- fault injection for crash tests -------------------------------------
 * CP_FAULT_KILL_AFTER_WRITES=N: the process kills itself with SIGKILL just
 * before its (N+1)th write request (write, write-zeroes, discard, truncate)
 * to any file or block device, so tests can stop a real cowpool at a
 * seeded, reproducible point.  CP_FAULT_COUNT_WRITES=1 prints the number of
 * write requests made ("cp-writes: N") to stderr at exit.  RAM devices are
 * not counted (they have their own cut).  Costs one branch when unset. */
static atomic_long bc_fault_left = -2; /* -2: not read yet, -1: off */
static atomic_long bc_fault_count;
static bool bc_fault_counting;

static void bc_fault_report(void)
{
	fprintf(stderr, "cp-writes: %ld\n", atomic_load(&bc_fault_count));
}

static void bc_fault_init(void)
{
	const char *k = getenv("CP_FAULT_KILL_AFTER_WRITES");
	const char *c = getenv("CP_FAULT_COUNT_WRITES");
	long v = -1;
	if (k && *k)
		v = strtol(k, NULL, 10);
	if (c && *c == '1' && !bc_fault_counting) {
		bc_fault_counting = true;
		atexit(bc_fault_report);
	}
	long expect = -2;
	atomic_compare_exchange_strong(&bc_fault_left, &expect, v);
}

static void bc_fault_point(cp_bdev *dev)
{
	if (dev->backend->no_fault_point)
		return;
	if (bc_fault_counting)
		atomic_fetch_add(&bc_fault_count, 1);
	long left = atomic_load(&bc_fault_left);
	if (left < 0)
		return;
	if (atomic_fetch_sub(&bc_fault_left, 1) == 0)
		kill(getpid(), SIGKILL);
}

/* ---- dispatch to the backend --------------------------------------------- */

static int bc_dispatch(cp_bdev *dev, struct bc_req *req)
{
	const struct bc_backend *be = dev->backend;
	if (!be->limited) {
		be->submit(dev, req);
		return 0;
	}
	pthread_mutex_lock(&dev->sq_lock);
	if (dev->inflight >= dev->queue_depth) {
		req->next = NULL;
		if (dev->pend_tail)
			dev->pend_tail->next = req;
		else
			dev->pend_head = req;
		dev->pend_tail = req;
		pthread_mutex_unlock(&dev->sq_lock);
		return 0;
	}
	/* Count first: the completion may run before submit_locked returns
	 * (it then waits for sq_lock). */
	dev->inflight++;
	req->counted = true;
	int r = be->submit_locked(dev, req);
	if (r < 0) {
		dev->inflight--;
		req->counted = false;
	}
	pthread_mutex_unlock(&dev->sq_lock);
	return r;
}

/* A counted request finished: free its slot and start waiting ones. */
static void bc_dispatch_release(cp_bdev *dev)
{
	struct bc_req *failed = NULL;
	pthread_mutex_lock(&dev->sq_lock);
	dev->inflight--;
	while (dev->pend_head && dev->inflight < dev->queue_depth) {
		struct bc_req *req = dev->pend_head;
		dev->pend_head = req->next;
		if (!dev->pend_head)
			dev->pend_tail = NULL;
		req->next = NULL;
		dev->inflight++;
		req->counted = true;
		int r = dev->backend->submit_locked(dev, req);
		if (r < 0) {
			dev->inflight--;
			req->counted = false;
			req->ret = r;
			req->next = failed;
			failed = req;
		}
	}
	pthread_mutex_unlock(&dev->sq_lock);
	while (failed) {
		struct bc_req *req = failed;
		failed = req->next;
		bc_req_finish(req, req->ret);
	}
}

static void bc_req_resubmit(struct bc_req *req)
{
	cp_bdev *dev = req->dev;
	if (!dev->backend->limited) {
		dev->backend->submit(dev, req);
		return;
	}
	pthread_mutex_lock(&dev->sq_lock);
	int r = dev->backend->submit_locked(dev, req);
	pthread_mutex_unlock(&dev->sq_lock);
	if (r < 0)
		bc_req_finish(req, r);
}

static void bc_outstanding_dec(cp_bdev *dev)
{
	if (atomic_fetch_sub(&dev->outstanding, 1) == 1) {
		pthread_mutex_lock(&dev->idle_lock);
		pthread_cond_broadcast(&dev->idle_cond);
		pthread_mutex_unlock(&dev->idle_lock);
	}
}

static void bc_fast_write_done(cp_bdev *dev)
{
	if (atomic_fetch_sub(&dev->fast_writes, 1) == 1 &&
	    atomic_load(&dev->rmw_active)) {
		pthread_mutex_lock(&dev->wlock);
		pthread_cond_broadcast(&dev->wcond);
		pthread_mutex_unlock(&dev->wlock);
	}
}

void bc_req_finish(struct bc_req *req, int ret)
{
	cp_bdev *dev = req->dev;
	cp_io_cb cb = req->cb;
	void *opaque = req->opaque;
	bool counted = req->counted;
	bool fast = req->fast_write;

	bc_req_put(dev, req);
	if (fast)
		bc_fast_write_done(dev);
	if (counted)
		bc_dispatch_release(dev);
	cb(opaque, ret);
	bc_outstanding_dec(dev);
}

void bc_req_io_done(struct bc_req *req, ssize_t res)
{
	cp_bdev *dev = req->dev;

	if (req->op == BC_OP_FLUSH) {
		bc_req_finish(req, res < 0 ? (int)res : 0);
		return;
	}
	if (res < 0) {
		if (res == -EINTR || res == -EAGAIN)
			bc_req_resubmit(req);
		else
			bc_req_finish(req, (int)res);
		return;
	}
	if ((size_t)res > req->len - req->done)
		res = (ssize_t)(req->len - req->done);
	bc_req_advance(req, (size_t)res);
	if (req->done == req->len) {
		bc_req_finish(req, 0);
		return;
	}
	bool unaligned = dev->direct && !CP_IS_ALIGNED(req->done, dev->align);
	if (req->op == BC_OP_READ) {
		/* EOF: the rest of the read is zeroes. */
		if (res == 0 || unaligned) {
			bc_req_zero_rest(req);
			bc_req_finish(req, 0);
			return;
		}
	} else if (res == 0 || unaligned) {
		bc_req_finish(req, -EIO);
		return;
	}
	bc_req_resubmit(req);
}

/* ---- helper pool and the slow path --------------------------------------- */

int bc_helper_push(cp_bdev *dev, struct bc_req *req)
{
	pthread_mutex_lock(&dev->helper_lock);
	if (!dev->helper_started) {
		int r = bc_pool_init(&dev->helper, dev, BC_HELPER_THREADS,
				     "cp-helper");
		if (r < 0) {
			pthread_mutex_unlock(&dev->helper_lock);
			return r;
		}
		dev->helper_started = true;
	}
	pthread_mutex_unlock(&dev->helper_lock);
	bc_pool_push(&dev->helper, req);
	return 0;
}

int bc_fd_pread_full(int fd, void *buf, size_t len, uint64_t offset,
		     unsigned align)
{
	char *p = buf;
	size_t done = 0;
	while (done < len) {
		ssize_t r =
		    pread(fd, p + done, len - done, (off_t)(offset + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		done += (size_t)r;
		if (align > 1 && !CP_IS_ALIGNED(done, align))
			break;
	}
	memset(p + done, 0, len - done);
	return 0;
}

int bc_fd_pwrite_full(int fd, const void *buf, size_t len, uint64_t offset)
{
	const char *p = buf;
	size_t done = 0;
	while (done < len) {
		ssize_t r =
		    pwrite(fd, p + done, len - done, (off_t)(offset + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	return 0;
}

static bool bc_range_overlaps_locked(cp_bdev *dev, struct bc_range rg)
{
	for (size_t i = 0; i < dev->ranges.len; i++) {
		const struct bc_range *o = &dev->ranges.ptr[i];
		if (o->start < rg.end && rg.start < o->end)
			return true;
	}
	return false;
}

/* Take exclusive ownership of [rg.start, rg.end) against other tracked
 * writes; with rmw also against every aligned fast-path write.  Blocks. */
int bc_range_lock(cp_bdev *dev, struct bc_range rg, bool rmw)
{
	pthread_mutex_lock(&dev->wlock);
	if (rmw) {
		atomic_fetch_add(&dev->rmw_active, 1);
		while (atomic_load(&dev->fast_writes))
			pthread_cond_wait(&dev->wcond, &dev->wlock);
	}
	while (bc_range_overlaps_locked(dev, rg))
		pthread_cond_wait(&dev->wcond, &dev->wlock);
	int r = bc_range_vec_append(&dev->ranges, rg);
	if (r < 0 && rmw) {
		atomic_fetch_sub(&dev->rmw_active, 1);
		pthread_cond_broadcast(&dev->wcond);
	}
	pthread_mutex_unlock(&dev->wlock);
	return r;
}

void bc_range_unlock(cp_bdev *dev, struct bc_range rg, bool rmw)
{
	pthread_mutex_lock(&dev->wlock);
	for (size_t i = 0; i < dev->ranges.len; i++) {
		struct bc_range *o = &dev->ranges.ptr[i];
		if (o->start == rg.start && o->end == rg.end) {
			*o = dev->ranges.ptr[--dev->ranges.len];
			break;
		}
	}
	if (rmw)
		atomic_fetch_sub(&dev->rmw_active, 1);
	pthread_cond_broadcast(&dev->wcond);
	pthread_mutex_unlock(&dev->wlock);
}

/* Unaligned read: read the aligned superset into a bounce buffer. */
static void bc_slow_read_exec(struct bc_req *req)
{
	cp_bdev *dev = req->dev;
	unsigned a = dev->align;
	uint64_t off = req->offset, end = off + req->len;
	uint64_t astart = CP_ALIGN_DOWN(off, a), aend = CP_ALIGN_UP(end, a);
	int r = 0;

	if (req->len == 0)
		goto out;
	char *buf = cp_bdev_alloc_buf(CP_MIN(BC_CHUNK, aend - astart));
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t cs = astart; cs < aend && r == 0;) {
		uint64_t ce = CP_MIN(cs + BC_CHUNK, aend);
		r = bc_fd_pread_full(dev->fd, buf, ce - cs, cs, a);
		if (r == 0) {
			uint64_t ds = CP_MAX(cs, off), de = CP_MIN(ce, end);
			bc_req_copy(req, ds - off, buf + (ds - cs), de - ds,
				    true);
		}
		cs = ce;
	}
	cp_bdev_free_buf(buf);
out:
	bc_req_finish(req, r);
}

/* Write [off, end) of the request through aligned bounce chunks, reading
 * the partial head and tail blocks first.  Caller holds the range. */
static int bc_slow_write_chunks(cp_bdev *dev, struct bc_req *req,
				uint64_t astart, uint64_t aend)
{
	unsigned a = dev->align;
	uint64_t off = req->offset, end = off + req->len;
	char *buf = cp_bdev_alloc_buf(CP_MIN(BC_CHUNK, aend - astart));
	int r = 0;

	if (!buf)
		return -ENOMEM;
	for (uint64_t cs = astart; cs < aend && r == 0;) {
		uint64_t ce = CP_MIN(cs + BC_CHUNK, aend);
		bool head = cs < off;
		if (head)
			r = bc_fd_pread_full(dev->fd, buf, a, cs, a);
		if (r == 0 && ce > end && !(head && ce - a == cs))
			r = bc_fd_pread_full(dev->fd, buf + (ce - cs - a), a,
					     ce - a, a);
		if (r == 0) {
			uint64_t ds = CP_MAX(cs, off), de = CP_MIN(ce, end);
			bc_req_copy(req, ds - off, buf + (ds - cs), de - ds,
				    false);
			r = bc_fd_pwrite_full(dev->fd, buf, ce - cs, cs);
		}
		cs = ce;
	}
	cp_bdev_free_buf(buf);
	return r;
}

/* Unaligned write (RMW), aligned write from unaligned memory (bounce), or
 * aligned write submitted while an RMW was active (tracked). */
static void bc_slow_write_exec(struct bc_req *req)
{
	cp_bdev *dev = req->dev;
	unsigned a = dev->align;
	uint64_t off = req->offset, end = off + req->len;
	uint64_t astart = CP_ALIGN_DOWN(off, a), aend = CP_ALIGN_UP(end, a);
	bool rmw = astart != off || aend != end;
	struct bc_range rg = {astart, aend};
	bool past_eof = false;
	int64_t size = 0;
	int r = 0;

	if (req->len == 0)
		goto out;
	if (rmw && !dev->is_blockdev) {
		size = bc_size(dev);
		if (size >= 0 && aend > (uint64_t)size) {
			/* Writing whole blocks extends the file beyond end;
			 * exclude every other write after us until the size
			 * is fixed up. */
			past_eof = true;
			rg.end = UINT64_MAX;
		}
	}
	r = bc_range_lock(dev, rg, rmw);
	if (r < 0)
		goto out;
	if (past_eof) {
		size = bc_size(dev);
		if (size < 0)
			r = (int)size;
	}
	if (r == 0)
		r = bc_slow_write_chunks(dev, req, astart, aend);
	if (r == 0 && past_eof) {
		uint64_t want = CP_MAX((uint64_t)size, end);
		if (aend > want && ftruncate(dev->fd, (off_t)want) < 0)
			r = -errno;
	}
	bc_range_unlock(dev, rg, rmw);
out:
	bc_req_finish(req, r);
}

static void bc_noop_exec(struct bc_req *req)
{
	bc_req_finish(req, 0);
}

/* ---- asynchronous requests ----------------------------------------------- */

static const char *bc_op_name(enum bc_op op)
{
	switch (op) {
	case BC_OP_READ:
		return "pread";
	case BC_OP_WRITE:
		return "pwrite";
	case BC_OP_FLUSH:
	default:
		return "fdatasync";
	}
}

static int bc_rw_async(cp_bdev *dev, enum bc_op op, const struct iovec *iov,
		       int iovcnt, uint64_t offset, cp_io_cb cb, void *opaque)
{
	const char *what = bc_op_name(op);
	int r;

	if (op == BC_OP_WRITE && dev->readonly)
		return cp_error(
		    -EROFS, "%s: %s at offset %" PRIu64 ": device is read-only",
		    dev->name, what, offset);
	if (op == BC_OP_WRITE)
		bc_fault_point(dev);
	if (iovcnt < 0 || iovcnt > IOV_MAX || (iovcnt && !iov) || !cb)
		return cp_error(
		    -EINVAL, "%s: %s at offset %" PRIu64 ": invalid arguments",
		    dev->name, what, offset);
	struct bc_req *req = bc_req_get(dev);
	if (!req)
		return cp_error(-ENOMEM, "%s: %s at offset %" PRIu64 ": %s",
				dev->name, what, offset, strerror(ENOMEM));
	r = bc_req_set_iov(req, iov, iovcnt);
	if (r == 0 && (offset > INT64_MAX || req->len > INT64_MAX - offset))
		r = -EINVAL;
	if (r < 0) {
		bc_req_put(dev, req);
		return cp_error(r, "%s: %s at offset %" PRIu64 ": %s",
				dev->name, what, offset, strerror(-r));
	}
	req->op = op;
	req->offset = offset;
	req->cb = cb;
	req->opaque = opaque;
	atomic_fetch_add(&dev->outstanding, 1);

	if (dev->direct && !bc_req_aligned(req, dev->align)) {
		req->exec =
		    op == BC_OP_READ ? bc_slow_read_exec : bc_slow_write_exec;
		r = bc_helper_push(dev, req);
	} else if (op == BC_OP_WRITE && dev->direct) {
		atomic_fetch_add(&dev->fast_writes, 1);
		if (atomic_load(&dev->rmw_active)) {
			bc_fast_write_done(dev);
			req->exec = bc_slow_write_exec;
			r = bc_helper_push(dev, req);
		} else {
			req->fast_write = true;
			r = bc_dispatch(dev, req);
			if (r < 0) {
				req->fast_write = false;
				bc_fast_write_done(dev);
			}
		}
	} else {
		r = bc_dispatch(dev, req);
	}
	if (r < 0) {
		bc_req_put(dev, req);
		bc_outstanding_dec(dev);
		return cp_error(r, "%s: %s at offset %" PRIu64 ": %s",
				dev->name, what, offset, strerror(-r));
	}
	return 0;
}

int cp_bdev_preadv_async(cp_bdev *dev, const struct iovec *iov, int iovcnt,
			 uint64_t offset, cp_io_cb cb, void *opaque)
{
	CP_API_ENTER();
	return bc_rw_async(dev, BC_OP_READ, iov, iovcnt, offset, cb, opaque);
}

int cp_bdev_pwritev_async(cp_bdev *dev, const struct iovec *iov, int iovcnt,
			  uint64_t offset, cp_io_cb cb, void *opaque)
{
	CP_API_ENTER();
	return bc_rw_async(dev, BC_OP_WRITE, iov, iovcnt, offset, cb, opaque);
}

int cp_bdev_flush_async(cp_bdev *dev, cp_io_cb cb, void *opaque)
{
	CP_API_ENTER();
	int r;
	if (!cb)
		return cp_error(-EINVAL, "%s: fdatasync: invalid arguments",
				dev->name);
	struct bc_req *req = bc_req_get(dev);
	if (!req)
		return cp_error(-ENOMEM, "%s: fdatasync: %s", dev->name,
				strerror(ENOMEM));
	req->iov = req->inline_iov;
	req->op = BC_OP_FLUSH;
	req->cb = cb;
	req->opaque = opaque;
	atomic_fetch_add(&dev->outstanding, 1);
	if (dev->cache == CP_CACHE_UNSAFE || dev->readonly) {
		req->exec = bc_noop_exec;
		r = bc_helper_push(dev, req);
	} else {
		r = bc_dispatch(dev, req);
	}
	if (r < 0) {
		bc_req_put(dev, req);
		bc_outstanding_dec(dev);
		return cp_error(r, "%s: fdatasync: %s", dev->name,
				strerror(-r));
	}
	return 0;
}

/* ---- synchronous requests ------------------------------------------------ */

struct bc_waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int ret;
};

static void bc_waiter_init(struct bc_waiter *w)
{
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->done = false;
	w->ret = 0;
}

static void bc_waiter_cb(void *opaque, int ret)
{
	struct bc_waiter *w = opaque;
	pthread_mutex_lock(&w->lock);
	w->ret = ret;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static int bc_waiter_wait(struct bc_waiter *w)
{
	pthread_mutex_lock(&w->lock);
	while (!w->done)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	return w->ret;
}

static void bc_waiter_destroy(struct bc_waiter *w)
{
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
}

static int bc_check_not_cpl_thread(cp_bdev *dev, const char *what)
{
	if (bc_thread_is_dev(dev))
		return cp_error(-EDEADLK,
				"%s: synchronous %s called from a completion "
				"callback of the same device",
				dev->name, what);
	return 0;
}

static int bc_rw_sync(cp_bdev *dev, enum bc_op op, const struct iovec *iov,
		      int iovcnt, uint64_t offset)
{
	struct bc_waiter w;
	int r = bc_check_not_cpl_thread(dev, bc_op_name(op));
	if (r < 0)
		return r;
	bc_waiter_init(&w);
	if (op == BC_OP_FLUSH)
		r = cp_bdev_flush_async(dev, bc_waiter_cb, &w);
	else
		r = bc_rw_async(dev, op, iov, iovcnt, offset, bc_waiter_cb, &w);
	if (r < 0) {
		bc_waiter_destroy(&w);
		return r; /* not queued; message already set */
	}
	r = bc_waiter_wait(&w);
	bc_waiter_destroy(&w);
	if (r < 0 && op == BC_OP_FLUSH)
		return cp_error(r, "%s: fdatasync: %s", dev->name,
				strerror(-r));
	if (r < 0)
		return cp_error(r, "%s: %s at offset %" PRIu64 ": %s",
				dev->name, bc_op_name(op), offset,
				strerror(-r));
	return 0;
}

int cp_bdev_preadv(cp_bdev *dev, const struct iovec *iov, int iovcnt,
		   uint64_t offset)
{
	CP_API_ENTER();
	return bc_rw_sync(dev, BC_OP_READ, iov, iovcnt, offset);
}

int cp_bdev_pwritev(cp_bdev *dev, const struct iovec *iov, int iovcnt,
		    uint64_t offset)
{
	CP_API_ENTER();
	return bc_rw_sync(dev, BC_OP_WRITE, iov, iovcnt, offset);
}

int cp_bdev_pread(cp_bdev *dev, void *buf, size_t len, uint64_t offset)
{
	CP_API_ENTER();
	struct iovec iov = {buf, len};
	return bc_rw_sync(dev, BC_OP_READ, &iov, 1, offset);
}

int cp_bdev_pwrite(cp_bdev *dev, const void *buf, size_t len, uint64_t offset)
{
	CP_API_ENTER();
	struct iovec iov = {(void *)buf, len};
	return bc_rw_sync(dev, BC_OP_WRITE, &iov, 1, offset);
}

int cp_bdev_flush(cp_bdev *dev)
{
	CP_API_ENTER();
	return bc_rw_sync(dev, BC_OP_FLUSH, NULL, 0, 0);
}

/* ---- range operations ---------------------------------------------------- */

static int bc_check_range(cp_bdev *dev, const char *what, uint64_t offset,
			  uint64_t len, bool write)
{
	if (write && dev->readonly)
		return cp_error(-EROFS, "%s: %s: device is read-only",
				dev->name, what);
	if (offset > INT64_MAX || len > INT64_MAX - offset)
		return cp_error(-EINVAL,
				"%s: %s at offset %" PRIu64 " length %" PRIu64
				": range too large",
				dev->name, what, offset, len);
	return 0;
}

int cp_bdev_discard(cp_bdev *dev, uint64_t offset, uint64_t len)
{
	CP_API_ENTER();
	int r = bc_check_range(dev, "discard", offset, len, true);
	if (r < 0)
		return r;
	bc_fault_point(dev);
	return dev->backend->discard(dev, offset, len);
}

int cp_bdev_write_zeroes(cp_bdev *dev, uint64_t offset, uint64_t len,
			 unsigned flags)
{
	CP_API_ENTER();
	int r = bc_check_range(dev, "write zeroes", offset, len, true);
	if (r < 0)
		return r;
	bc_fault_point(dev);
	return dev->backend->write_zeroes(dev, offset, len, flags);
}

int cp_bdev_truncate(cp_bdev *dev, uint64_t size)
{
	CP_API_ENTER();
	int r = bc_check_range(dev, "truncate", size, 0, true);
	if (r < 0)
		return r;
	bc_fault_point(dev);
	return dev->backend->truncate(dev, size);
}

int cp_bdev_preallocate(cp_bdev *dev, uint64_t offset, uint64_t len,
			enum cp_prealloc mode)
{
	CP_API_ENTER();
	int r = bc_check_range(dev, "preallocate", offset, len, true);
	if (r < 0)
		return r;
	if ((unsigned)mode > CP_PREALLOC_FULL)
		return cp_error(-EINVAL, "%s: preallocate: invalid mode %d",
				dev->name, (int)mode);
	return dev->backend->preallocate(dev, offset, len, mode);
}

int cp_bdev_block_status(cp_bdev *dev, uint64_t offset, uint64_t len,
			 uint64_t *pnum)
{
	CP_API_ENTER();
	int r = bc_check_range(dev, "block status", offset, len, false);
	if (r < 0)
		return r;
	*pnum = len;
	if (len == 0)
		return 1;
	return dev->backend->block_status(dev, offset, len, pnum);
}

/* ---- open and close ------------------------------------------------------ */

static int bc_opts_copy(const void *src, size_t src_size, void *dst,
			size_t dst_size, const char *what)
{
	if (src_size < sizeof(size_t) || src_size > dst_size)
		return cp_error(-EINVAL,
				"%s: options not initialised (size %zu)", what,
				src_size);
	memcpy(dst, src, src_size);
	return 0;
}

static unsigned bc_discover_align(cp_bdev *dev)
{
	if (dev->is_blockdev)
		return dev->lbs;
#ifdef STATX_DIOALIGN
	struct statx stx;
	if (statx(dev->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
		unsigned a =
		    CP_MAX(stx.stx_dio_offset_align, stx.stx_dio_mem_align);
		if (cp_is_pow2(a) && a <= 4096)
			return a;
	}
#endif
	/* Probe: a 512-byte O_DIRECT read fails with EINVAL if the logical
	 * block size is larger. */
	void *buf = cp_bdev_alloc_buf(4096);
	unsigned a = 512;
	if (buf) {
		if (pread(dev->fd, buf, 512, 0) < 0 && errno == EINVAL)
			a = 4096;
		cp_bdev_free_buf(buf);
	}
	return a;
}

static const struct bc_backend *bc_backend_of(enum cp_aio aio)
{
	switch (aio) {
	case CP_AIO_IO_URING:
#if BC_HAVE_IO_URING
		return &bc_uring_backend;
#else
		return NULL;
#endif
	case CP_AIO_NATIVE:
#if BC_HAVE_LIBAIO
		return &bc_aio_backend;
#else
		return NULL;
#endif
	case CP_AIO_THREADS:
	default:
		return &bc_threads_backend;
	}
}

static int bc_start_backend(cp_bdev *dev, enum cp_aio aio, bool fallback)
{
	int r = -ENOTSUP;
	for (unsigned a = aio; a <= CP_AIO_THREADS; a++) {
		const struct bc_backend *be = bc_backend_of((enum cp_aio)a);
		if (!be) {
			r = cp_error(-ENOTSUP, "%s: aio=%s: not compiled in",
				     dev->name, cp_aio_name((enum cp_aio)a));
		} else {
			r = be->init(dev);
			if (r == 0) {
				dev->backend = be;
				dev->aio = be->aio;
				return 0;
			}
		}
		if (!fallback)
			break;
	}
	return r;
}

int cp_bdev_open(const char *path, const struct cp_bdev_opts *uopts,
		 cp_bdev **out)
{
	CP_API_ENTER();
	struct cp_bdev_opts opts;
	cp_bdev *dev;
	struct stat st;
	int r;

	if (atomic_load(&bc_fault_left) == -2)
		bc_fault_init();

	*out = NULL;
	cp_bdev_opts_init(&opts);
	if (!path)
		return cp_error(-EINVAL, "open: no path");
	if (uopts) {
		r = bc_opts_copy(uopts, uopts->size, &opts, sizeof(opts), path);
		if (r < 0)
			return r;
	}
	if ((unsigned)opts.aio > CP_AIO_THREADS ||
	    (unsigned)opts.cache > CP_CACHE_UNSAFE)
		return cp_error(-EINVAL, "%s: invalid aio or cache mode", path);
	if (opts.queue_depth == 0 || opts.queue_depth > BC_MAX_QUEUE_DEPTH)
		return cp_error(-EINVAL, "%s: queue depth %u out of range 1-%u",
				path, opts.queue_depth, BC_MAX_QUEUE_DEPTH);
	if (opts.threads == 0 || opts.threads > BC_MAX_THREADS)
		return cp_error(-EINVAL,
				"%s: thread count %u out of range 1-%u", path,
				opts.threads, BC_MAX_THREADS);
	if (opts.readonly && (opts.create || opts.truncate))
		return cp_error(-EINVAL, "%s: read-only open cannot create",
				path);

	r = bc_dev_alloc(opts.name ? opts.name : path, opts.queue_depth, &dev);
	if (r < 0)
		return r;
	dev->cache = opts.cache;
	dev->readonly = opts.readonly;
	dev->nthreads = opts.threads;
	dev->direct =
	    opts.cache == CP_CACHE_NONE || opts.cache == CP_CACHE_DIRECTSYNC;

	int flags = O_CLOEXEC | (opts.readonly ? O_RDONLY : O_RDWR);
	if (opts.create)
		flags |= O_CREAT;
	if (opts.create && opts.truncate)
		flags |= O_TRUNC;
	if (dev->direct)
		flags |= O_DIRECT;
	if (opts.cache == CP_CACHE_WRITETHROUGH ||
	    opts.cache == CP_CACHE_DIRECTSYNC)
		flags |= O_DSYNC;
	dev->fd = open(path, flags, 0644);
	if (dev->fd < 0) {
		r = -errno;
		if (r == -EINVAL && dev->direct)
			cp_error(r, "%s: open: O_DIRECT not supported here",
				 path);
		else
			cp_error(r, "%s: open: %s", path, strerror(-r));
		goto fail;
	}
	if (fstat(dev->fd, &st) < 0) {
		r = cp_error(-errno, "%s: fstat: %s", path, strerror(errno));
		goto fail;
	}
	if (S_ISBLK(st.st_mode)) {
		int lbs;
		dev->is_blockdev = true;
		if (ioctl(dev->fd, BLKSSZGET, &lbs) < 0 || lbs <= 0)
			lbs = 512;
		dev->lbs = (unsigned)lbs;
	} else if (S_ISREG(st.st_mode)) {
		dev->lbs = 512;
	} else {
		r = cp_error(-EINVAL, "%s: not a regular file or block device",
			     path);
		goto fail;
	}
	dev->align = dev->direct ? bc_discover_align(dev) : 1;

	r = bc_start_backend(dev, opts.aio, opts.fallback);
	if (r < 0)
		goto fail;
	*out = dev;
	return 0;

fail:
	bc_dev_free(dev);
	return r;
}

void cp_bdev_close(cp_bdev *dev)
{
	if (!dev)
		return;
	pthread_mutex_lock(&dev->idle_lock);
	while (atomic_load(&dev->outstanding))
		pthread_cond_wait(&dev->idle_cond, &dev->idle_lock);
	pthread_mutex_unlock(&dev->idle_lock);

	if (dev->helper_started)
		bc_pool_fini(&dev->helper);
	dev->backend->fini(dev);
	bc_dev_free(dev);
}
