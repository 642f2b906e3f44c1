/* blockcore/ram.c - the RAM device used by the unit tests.
 *
 * Two lazily committed anonymous mappings of max_size bytes: `vol`, what
 * reads see (the device plus its volatile write cache), and `dur`, what
 * survives a power cut.  Both are zero beyond their size (size, dur_size).
 * Every write-like request since the last flush is recorded in `pending`
 * (its range, plus a copy of the data when keep_seed != 0):
 *
 *   flush: copy vol -> dur over each pending range, dur_size = size.
 *   cut:   copy dur -> vol over each pending range (vol == dur again),
 *          then with keep_seed replay a xorshift-chosen subset of the
 *          pending requests, in submission order, into vol and dur.
 *
 * Requests execute at submission under ram->lock, so the write counter and
 * the cut point follow the order of the submitting calls; the completion
 * (callback) is handed to a one-thread pool so callbacks never run on the
 * submitter's stack.
 *
 * cp_ram_open_twin() makes another handle on the same state (each handle
 * has its own completion thread); the state counts its handles and goes
 * with the last one closed.
 */
#include "blockcore_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"

enum bc_ram_kind {
	BC_RAM_WRITE,
	BC_RAM_ZERO,
	BC_RAM_DISCARD,
	BC_RAM_TRUNCATE,
};

struct bc_ram_op {
	enum bc_ram_kind kind;
	uint64_t off, len; /* TRUNCATE: off = new size, len = old size */
	uint8_t *data;	   /* WRITE with keep_seed: copy of the data */
};
CP_VECTOR(bc_ram_op_vec, struct bc_ram_op);

struct bc_ram {
	pthread_mutex_t lock;
	uint8_t *vol, *dur;
	uint64_t size, dur_size, max_size;
	int64_t cut_after;
	uint64_t keep_seed;
	uint64_t writes;
	bool cut;
	bc_ram_op_vec pending;
	atomic_uint handles; /* devices sharing this state */
};

static atomic_uint bc_ram_counter;

void cp_ram_opts_init(struct cp_ram_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
	opts->initial_size = 0;
	opts->max_size = 1ull << 30;
	opts->align = 512;
	opts->cut_after_writes = -1;
	opts->keep_seed = 0;
	opts->aio = CP_AIO_IO_URING;
}

/* Range of the map touched by op, clamped to max_size. */
static void bc_ram_op_range(const struct bc_ram *ram,
			    const struct bc_ram_op *op, uint64_t *start,
			    uint64_t *end)
{
	if (op->kind == BC_RAM_TRUNCATE) {
		*start = CP_MIN(op->off, op->len);
		*end = CP_MAX(op->off, op->len);
	} else {
		*start = op->off;
		*end = op->off + op->len;
	}
	*start = CP_MIN(*start, ram->max_size);
	*end = CP_MIN(*end, ram->max_size);
}

/* Zero [start, end) of a map, returning whole pages to the kernel. */
static void bc_ram_zero(uint8_t *map, uint64_t start, uint64_t end)
{
	const uint64_t pg = 4096;
	if (start >= end)
		return;
	uint64_t ps = CP_ALIGN_UP(start, pg), pe = CP_ALIGN_DOWN(end, pg);
	if (ps < pe && pe - ps >= 16 * pg) {
		memset(map + start, 0, ps - start);
		madvise(map + ps, pe - ps, MADV_DONTNEED);
		memset(map + pe, 0, end - pe);
	} else {
		memset(map + start, 0, end - start);
	}
}

static void bc_ram_clear_pending_locked(struct bc_ram *ram)
{
	for (size_t i = 0; i < ram->pending.len; i++)
		free(ram->pending.ptr[i].data);
	ram->pending.len = 0;
}

/* Copy the ranges the pending ops touched from src to dst (vol and dur
 * are the same size). */
static void bc_ram_copy_pending_locked(struct bc_ram *ram, uint8_t *dst,
				       const uint8_t *src)
{
	for (size_t i = 0; i < ram->pending.len; i++) {
		uint64_t s, e;
		bc_ram_op_range(ram, &ram->pending.ptr[i], &s, &e);
		if (s < e)
			memcpy(dst + s, src + s, e - s);
	}
}

static void bc_ram_flush_locked(struct bc_ram *ram)
{
	bc_ram_copy_pending_locked(ram, ram->dur, ram->vol);
	ram->dur_size = ram->size;
	bc_ram_clear_pending_locked(ram);
}

static uint64_t bc_xorshift64(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

/* Apply a recorded op to vol (replay after a cut). */
static void bc_ram_apply_locked(struct bc_ram *ram, const struct bc_ram_op *op)
{
	uint64_t s, e;
	bc_ram_op_range(ram, op, &s, &e);
	switch (op->kind) {
	case BC_RAM_WRITE:
		if (s < e)
			memcpy(ram->vol + s, op->data, e - s);
		ram->size = CP_MAX(ram->size, op->off + op->len);
		break;
	case BC_RAM_ZERO:
		bc_ram_zero(ram->vol, s, e);
		ram->size = CP_MAX(ram->size, op->off + op->len);
		break;
	case BC_RAM_DISCARD:
		bc_ram_zero(ram->vol, s, CP_MIN(e, ram->size));
		break;
	case BC_RAM_TRUNCATE:
		if (op->off < ram->size)
			bc_ram_zero(ram->vol, op->off, ram->size);
		ram->size = op->off;
		break;
	}
}

static void bc_ram_cut_locked(struct bc_ram *ram)
{
	/* Forget the volatile cache. */
	bc_ram_copy_pending_locked(ram, ram->vol, ram->dur);
	ram->size = ram->dur_size;

	/* Some of it may have reached the medium anyway. */
	if (ram->keep_seed) {
		uint64_t x = ram->keep_seed;
		for (size_t i = 0; i < ram->pending.len; i++) {
			const struct bc_ram_op *op = &ram->pending.ptr[i];
			if (!(bc_xorshift64(&x) >> 63))
				continue;
			bc_ram_apply_locked(ram, op);
			uint64_t s, e;
			bc_ram_op_range(ram, op, &s, &e);
			if (s < e)
				memcpy(ram->dur + s, ram->vol + s, e - s);
		}
		ram->dur_size = ram->size;
	}
	bc_ram_clear_pending_locked(ram);
	ram->cut = true;
}

/* Count one write; cut instead if the limit is reached. */
static int bc_ram_count_write_locked(struct bc_ram *ram, uint64_t end)
{
	if (ram->cut)
		return -EIO;
	if (ram->cut_after >= 0 && ram->writes >= (uint64_t)ram->cut_after) {
		bc_ram_cut_locked(ram);
		return -EIO;
	}
	if (end > ram->max_size)
		return -ENOSPC;
	ram->writes++;
	return 0;
}

static int bc_ram_record_locked(struct bc_ram *ram, enum bc_ram_kind kind,
				uint64_t off, uint64_t len, uint8_t *data)
{
	struct bc_ram_op op = {kind, off, len, data};
	return bc_ram_op_vec_append(&ram->pending, op);
}

static int bc_ram_write_locked(struct bc_ram *ram, struct bc_req *req)
{
	uint64_t off = req->offset, end = off + req->len;
	uint8_t *copy = NULL;
	int r = bc_ram_count_write_locked(ram, end);
	if (r < 0)
		return r;
	if (ram->keep_seed && req->len) {
		copy = malloc(req->len);
		if (!copy)
			return -ENOMEM;
	}
	r = bc_ram_record_locked(ram, BC_RAM_WRITE, off, req->len, copy);
	if (r < 0) {
		free(copy);
		return r;
	}
	uint64_t pos = off;
	for (int i = 0; i < req->iovcnt; i++) {
		memcpy(ram->vol + pos, req->iov[i].iov_base,
		       req->iov[i].iov_len);
		pos += req->iov[i].iov_len;
	}
	if (copy)
		memcpy(copy, ram->vol + off, req->len);
	ram->size = CP_MAX(ram->size, end);
	return 0;
}

static void bc_ram_read_locked(struct bc_ram *ram, struct bc_req *req)
{
	uint64_t pos = req->offset;
	for (int i = 0; i < req->iovcnt; i++) {
		char *p = req->iov[i].iov_base;
		size_t l = req->iov[i].iov_len;
		size_t n = 0;
		if (pos < ram->max_size)
			n = (size_t)CP_MIN((uint64_t)l, ram->max_size - pos);
		memcpy(p, ram->vol + pos, n);
		memset(p + n, 0, l - n);
		pos += l;
	}
}

static void bc_ram_cpl_exec(struct bc_req *req)
{
	bc_req_finish(req, req->ret);
}

static void bc_ram_submit(cp_bdev *dev, struct bc_req *req)
{
	struct bc_ram *ram = dev->ram;
	int r = 0;

	pthread_mutex_lock(&ram->lock);
	switch (req->op) {
	case BC_OP_READ:
		if (ram->cut)
			r = -EIO;
		else
			bc_ram_read_locked(ram, req);
		break;
	case BC_OP_WRITE:
		r = bc_ram_write_locked(ram, req);
		break;
	case BC_OP_FLUSH:
	default:
		if (ram->cut)
			r = -EIO;
		else
			bc_ram_flush_locked(ram);
		break;
	}
	pthread_mutex_unlock(&ram->lock);
	req->ret = r;
	req->exec = bc_ram_cpl_exec;
	bc_pool_push(&dev->workers, req);
}

static int bc_ram_error(cp_bdev *dev, int r, const char *what, uint64_t off,
			uint64_t len)
{
	return cp_error(
	    r, "%s: %s at offset %" PRIu64 " length %" PRIu64 ": %s", dev->name,
	    what, off, len, r == -EIO ? "power cut" : strerror(-r));
}

static int bc_ram_discard(cp_bdev *dev, uint64_t offset, uint64_t len)
{
	struct bc_ram *ram = dev->ram;
	CP_LOCK_GUARD(&ram->lock);
	int r = bc_ram_count_write_locked(ram, 0);
	if (r < 0)
		return bc_ram_error(dev, r, "discard", offset, len);
	uint64_t end = CP_MIN(offset + len, ram->size);
	uint64_t l = end > offset ? end - offset : 0;
	r = bc_ram_record_locked(ram, BC_RAM_DISCARD, offset, l, NULL);
	if (r < 0)
		return bc_ram_error(dev, r, "discard", offset, len);
	if (l)
		bc_ram_zero(ram->vol, offset, end);
	return 0;
}

static int bc_ram_write_zeroes(cp_bdev *dev, uint64_t offset, uint64_t len,
			       unsigned flags)
{
	(void)flags; /* zeroes are zeroes: never unmapped */
	struct bc_ram *ram = dev->ram;
	CP_LOCK_GUARD(&ram->lock);
	int r = bc_ram_count_write_locked(ram, offset + len);
	if (r == 0)
		r = bc_ram_record_locked(ram, BC_RAM_ZERO, offset, len, NULL);
	if (r < 0)
		return bc_ram_error(dev, r, "write zeroes", offset, len);
	bc_ram_zero(ram->vol, offset, offset + len);
	ram->size = CP_MAX(ram->size, offset + len);
	return 0;
}

static int bc_ram_resize(cp_bdev *dev, uint64_t size, bool grow_only)
{
	struct bc_ram *ram = dev->ram;
	CP_LOCK_GUARD(&ram->lock);
	int r = 0;
	if (ram->cut)
		r = -EIO;
	else if (size > ram->max_size)
		r = -ENOSPC;
	if (r < 0)
		return cp_error(r, "%s: truncate to %" PRIu64 ": %s", dev->name,
				size, r == -EIO ? "power cut" : strerror(-r));
	if (size == ram->size || (grow_only && size < ram->size))
		return 0;
	r = bc_ram_record_locked(ram, BC_RAM_TRUNCATE, size, ram->size, NULL);
	if (r < 0)
		return cp_error(r, "%s: truncate: %s", dev->name, strerror(-r));
	if (size < ram->size)
		bc_ram_zero(ram->vol, size, ram->size);
	ram->size = size;
	return 0;
}

static int bc_ram_truncate(cp_bdev *dev, uint64_t size)
{
	return bc_ram_resize(dev, size, false);
}

static int bc_ram_preallocate(cp_bdev *dev, uint64_t offset, uint64_t len,
			      enum cp_prealloc mode)
{
	(void)mode; /* the mappings are committed lazily in any mode */
	return bc_ram_resize(dev, offset + len, true);
}

static int64_t bc_ram_size(cp_bdev *dev)
{
	CP_LOCK_GUARD(&dev->ram->lock);
	return (int64_t)dev->ram->size;
}

static void bc_ram_destroy(struct bc_ram *ram)
{
	bc_ram_clear_pending_locked(ram);
	bc_ram_op_vec_reset(&ram->pending);
	if (ram->vol)
		munmap(ram->vol, ram->max_size);
	if (ram->dur)
		munmap(ram->dur, ram->max_size);
	pthread_mutex_destroy(&ram->lock);
	free(ram);
}

static int bc_ram_init(cp_bdev *dev)
{
	(void)dev;
	return -ENOTSUP; /* set up by cp_bdev_open_ram() only */
}

static void bc_ram_fini(cp_bdev *dev)
{
	if (dev->workers_started)
		bc_pool_fini(&dev->workers);
	/* the last handle takes the state with it */
	if (atomic_fetch_sub(&dev->ram->handles, 1) == 1)
		bc_ram_destroy(dev->ram);
	dev->ram = NULL;
}

/* Requests execute at submission (unlimited); every range operation is
 * recorded for the power cut, so none of them is a crash-test fault
 * point of its own. */
static const struct bc_backend bc_ram_backend = {
    .aio = CP_AIO_THREADS, /* not used: dev->aio is the one asked for */
    .limited = false,
    .no_fault_point = true,
    .init = bc_ram_init,
    .fini = bc_ram_fini,
    .submit = bc_ram_submit,
    .size = bc_ram_size,
    .discard = bc_ram_discard,
    .write_zeroes = bc_ram_write_zeroes,
    .truncate = bc_ram_truncate,
    .preallocate = bc_ram_preallocate,
    .block_status = bc_all_data_block_status,
};

static uint8_t *bc_ram_map(uint64_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

int cp_bdev_open_ram(const struct cp_ram_opts *uopts, cp_bdev **out)
{
	CP_API_ENTER();
	struct cp_ram_opts opts;
	char name[32];
	cp_bdev *dev;
	int r;

	*out = NULL;
	snprintf(name, sizeof(name), "ram:%u",
		 atomic_fetch_add(&bc_ram_counter, 1));
	cp_ram_opts_init(&opts);
	if (uopts) {
		if (uopts->size < sizeof(size_t) || uopts->size > sizeof(opts))
			return cp_error(-EINVAL, "%s: options not initialised",
					name);
		memcpy(&opts, uopts, uopts->size);
	}
	if (opts.max_size == 0 || opts.max_size > (1ull << 46) ||
	    opts.initial_size > opts.max_size || !cp_is_pow2(opts.align) ||
	    opts.align > 4096)
		return cp_error(-EINVAL,
				"%s: invalid sizes (initial %" PRIu64
				", max %" PRIu64 ") or alignment %u",
				name, opts.initial_size, opts.max_size,
				opts.align);

	r = bc_dev_alloc(name, 128, &dev);
	if (r < 0)
		return r;
	dev->aio = opts.aio;
	dev->cache = CP_CACHE_WRITEBACK;
	dev->align = opts.align;
	dev->lbs = opts.align;
	dev->direct = false;

	struct bc_ram *ram = calloc(1, sizeof(*ram));
	if (!ram) {
		bc_dev_free(dev);
		return cp_error(-ENOMEM, "%s: out of memory", name);
	}
	pthread_mutex_init(&ram->lock, NULL);
	ram->max_size = opts.max_size;
	ram->size = ram->dur_size = opts.initial_size;
	ram->cut_after = opts.cut_after_writes;
	ram->keep_seed = opts.keep_seed;
	atomic_init(&ram->handles, 1);
	ram->vol = bc_ram_map(ram->max_size);
	ram->dur = bc_ram_map(ram->max_size);
	dev->ram = ram;
	if (!ram->vol || !ram->dur) {
		r = cp_error(-ENOMEM, "%s: mmap %" PRIu64 " bytes: %s", name,
			     ram->max_size, strerror(errno));
		goto fail;
	}
	r = bc_pool_init(&dev->workers, dev, 1, "cp-ram");
	if (r < 0) {
		cp_error(r, "%s: starting completion thread: %s", name,
			 strerror(-r));
		goto fail;
	}
	dev->workers_started = true;
	dev->backend = &bc_ram_backend;
	*out = dev;
	return 0;

fail:
	bc_ram_destroy(ram);
	bc_dev_free(dev);
	return r;
}

static struct bc_ram *bc_ram_of(cp_bdev *dev, const char *what)
{
	if (!dev->ram) {
		cp_error(-EINVAL, "%s: %s: not a RAM device", dev->name, what);
		return NULL;
	}
	return dev->ram;
}

int cp_ram_open_twin(cp_bdev *dev, cp_bdev **out)
{
	*out = NULL;
	struct bc_ram *ram = bc_ram_of(dev, "open twin");
	if (!ram)
		return -EINVAL;
	cp_bdev *twin;
	int r = bc_dev_alloc(dev->name, dev->queue_depth, &twin);
	if (r < 0)
		return r;
	twin->aio = dev->aio;
	twin->cache = dev->cache;
	twin->align = dev->align;
	twin->lbs = dev->lbs;
	twin->direct = false;
	r = bc_pool_init(&twin->workers, twin, 1, "cp-ram");
	if (r < 0) {
		bc_dev_free(twin);
		return cp_error(r, "%s: starting completion thread: %s",
				dev->name, strerror(-r));
	}
	twin->workers_started = true;
	atomic_fetch_add(&ram->handles, 1);
	twin->ram = ram;
	twin->backend = &bc_ram_backend;
	*out = twin;
	return 0;
}

int cp_ram_cut(cp_bdev *dev)
{
	CP_API_ENTER();
	struct bc_ram *ram = bc_ram_of(dev, "cut");
	if (!ram)
		return -EINVAL;
	CP_LOCK_GUARD(&ram->lock);
	if (!ram->cut)
		bc_ram_cut_locked(ram);
	return 0;
}

bool cp_ram_is_cut(cp_bdev *dev)
{
	if (!dev->ram)
		return false;
	CP_LOCK_GUARD(&dev->ram->lock);
	return dev->ram->cut;
}

int cp_ram_restart(cp_bdev *dev)
{
	CP_API_ENTER();
	struct bc_ram *ram = bc_ram_of(dev, "restart");
	if (!ram)
		return -EINVAL;
	CP_LOCK_GUARD(&ram->lock);
	ram->cut = false;
	ram->writes = 0;
	ram->cut_after = -1;
	return 0;
}

int cp_ram_set_cut_after(cp_bdev *dev, int64_t writes)
{
	CP_API_ENTER();
	struct bc_ram *ram = bc_ram_of(dev, "set cut");
	if (!ram)
		return -EINVAL;
	CP_LOCK_GUARD(&ram->lock);
	ram->cut_after = writes < 0 ? -1 : writes;
	return 0;
}

uint64_t cp_ram_write_count(cp_bdev *dev)
{
	if (!dev->ram)
		return 0;
	CP_LOCK_GUARD(&dev->ram->lock);
	return dev->ram->writes;
}

int cp_ram_save(cp_bdev *dev, const char *path)
{
	CP_API_ENTER();
	struct bc_ram *ram = bc_ram_of(dev, "save");
	if (!ram)
		return -EINVAL;
	CP_CLEANUP_CLOSE int fd =
	    open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return cp_error(-errno, "%s: save: open %s: %s", dev->name,
				path, strerror(errno));
	CP_LOCK_GUARD(&ram->lock);
	int r = bc_fd_pwrite_full(fd, ram->vol, ram->size, 0);
	if (r < 0)
		return cp_error(r, "%s: save: write %s: %s", dev->name, path,
				strerror(-r));
	return 0;
}

int cp_ram_load(cp_bdev *dev, const char *path)
{
	CP_API_ENTER();
	struct bc_ram *ram = bc_ram_of(dev, "load");
	struct stat st;
	if (!ram)
		return -EINVAL;
	CP_CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return cp_error(-errno, "%s: load: %s: %s", dev->name, path,
				strerror(errno));
	if ((uint64_t)st.st_size > ram->max_size)
		return cp_error(-ENOSPC,
				"%s: load: %s is larger than %" PRIu64 " bytes",
				dev->name, path, ram->max_size);
	CP_LOCK_GUARD(&ram->lock);
	uint64_t len = (uint64_t)st.st_size;
	bc_ram_zero(ram->vol, 0, CP_MAX(ram->size, ram->dur_size));
	int r = bc_fd_pread_full(fd, ram->vol, len, 0, 1);
	if (r < 0) {
		ram->size = 0;
		r = cp_error(r, "%s: load: read %s: %s", dev->name, path,
			     strerror(-r));
	} else {
		ram->size = len;
	}
	/* The loaded content is on the medium. */
	bc_ram_zero(ram->dur, 0, ram->dur_size);
	memcpy(ram->dur, ram->vol, ram->size);
	ram->dur_size = ram->size;
	bc_ram_clear_pending_locked(ram);
	return r;
}
