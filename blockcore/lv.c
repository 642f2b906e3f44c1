/* blockcore/lv.c - the linear device: an LVM logical volume reached through
 * its extent map instead of device-mapper (see blockcore.h, "linear
 * device").
 *
 * Request life cycle (docs/hacking.md):
 *
 *   cp_bdev_p{read,write}v_async / cp_bdev_flush_async      (bdev.c)
 *     -> bc_dispatch() -> bc_lin_submit()   (unlimited backend, this file)
 *          takes a reference on the current map, splits the request at
 *          segment boundaries (flush: one part per PV) and submits each
 *          part with the public async API of the PV device
 *     -> bc_lin_part_cb() per part, on a PV completion thread
 *     -> the last part: bc_lin_complete() -> bc_req_finish()  (callback)
 *
 * Each request slot of the device has a context (struct bc_lin_ctx) at the
 * same index, so the fast path allocates nothing; requests beyond the slot
 * array (heap_req) get a heap context.  `pending` starts at the number of
 * parts, so whichever part completes last finishes the request; if the
 * submitter itself drops the count to zero (a part failed to submit, or
 * there was nothing to do) the completion is handed to the device's helper
 * pool, so callbacks never run on the submitter's stack.
 *
 * Maps are immutable and reference counted: lin->map holds one reference,
 * every request in flight one more.  A remap builds the new map, swaps the
 * pointer under map_lock and drops the old reference; requests in flight
 * keep the map (and so the PV layout) they started with.
 *
 * Locks: lin->remap_lock (remaps; the PV list) -> lin->map_lock (the map
 * pointer; leaf, held for a pointer load and an increment).  No lock is
 * held while submitting to a PV or running a callback.
 */
#include "blockcore_int.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* Parts whose iovec slice fits here are submitted without allocating. */
#define BC_LIN_STACK_IOV 32
/* Upper bound of segments in a map (LVM's own limit is far lower in
 * practice: one segment per extension). */
#define BC_LIN_MAX_SEGS (1u << 20)

struct bc_lin_seg {
	uint64_t lv_off, len, pv_off;
	cp_bdev *pv;
};

struct bc_lin_map {
	atomic_uint refs;
	uint64_t size;
	size_t nsegs, npvs;
	cp_bdev **pvs; /* distinct PVs of the map, in the same allocation */
	struct bc_lin_seg segs[]; /* sorted by lv_off, tiling [0, size) */
};

struct bc_lin_pv {
	char *path;
	cp_bdev *dev;
};
CP_VECTOR(bc_lin_pv_vec, struct bc_lin_pv);

struct bc_lin_ctx {
	struct bc_req *req;
	struct bc_lin_map *map;
	atomic_uint pending; /* parts not completed yet */
	atomic_int ret;	     /* first error */
};

struct bc_linear {
	pthread_mutex_t map_lock;
	struct bc_lin_map *map;
	pthread_mutex_t remap_lock;
	bc_lin_pv_vec pvs; /* every PV opened so far (closed at close) */
	struct cp_bdev_opts opts;
	struct bc_lin_ctx *ctx; /* queue_depth entries, one per slot */
};

/* ---- maps ---------------------------------------------------------------- */

static struct bc_lin_map *bc_lin_map_get(struct bc_linear *lin)
{
	pthread_mutex_lock(&lin->map_lock);
	struct bc_lin_map *m = lin->map;
	atomic_fetch_add(&m->refs, 1);
	pthread_mutex_unlock(&lin->map_lock);
	return m;
}

static void bc_lin_map_put(struct bc_lin_map *m)
{
	if (m && atomic_fetch_sub(&m->refs, 1) == 1)
		free(m);
}

/* Index of the segment holding LV offset off (off < map->size). */
static size_t bc_lin_find(const struct bc_lin_map *m, uint64_t off)
{
	size_t lo = 0, hi = m->nsegs;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->segs[mid].lv_off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* The PV device for path, opened with the device's options on first use.
 * Caller holds remap_lock (or is opening the device). */
static int bc_lin_pv_get(cp_bdev *dev, const char *path, cp_bdev **out)
{
	struct bc_linear *lin = dev->linear;
	for (size_t i = 0; i < lin->pvs.len; i++) {
		if (!strcmp(lin->pvs.ptr[i].path, path)) {
			*out = lin->pvs.ptr[i].dev;
			return 0;
		}
	}
	struct bc_lin_pv pv = {strdup(path), NULL};
	if (!pv.path || bc_lin_pv_vec_reserve(&lin->pvs, 1) < 0) {
		free(pv.path);
		return cp_error(-ENOMEM, "%s: out of memory", dev->name);
	}
	int r = cp_bdev_open(path, &lin->opts, &pv.dev);
	if (r < 0) {
		free(pv.path);
		return cp_error_prefix(r, "%s", dev->name);
	}
	bc_lin_pv_vec_append(&lin->pvs, pv); /* reserved above */
	*out = pv.dev;
	return 0;
}

static int bc_lin_cmp_lv(const void *a, const void *b)
{
	const struct bc_lin_seg *x = a, *y = b;
	return x->lv_off < y->lv_off ? -1 : x->lv_off > y->lv_off;
}

static int bc_lin_cmp_pv(const void *a, const void *b)
{
	const struct bc_lin_seg *x = a, *y = b;
	if (x->pv != y->pv)
		return (uintptr_t)x->pv < (uintptr_t)y->pv ? -1 : 1;
	return x->pv_off < y->pv_off ? -1 : x->pv_off > y->pv_off;
}

static bool bc_lin_aligned(uint64_t v)
{
	return CP_IS_ALIGNED(v, 512);
}

/* Validate the caller's map and build an immutable copy (refs = 1),
 * opening PVs not open yet. */
static int bc_lin_map_build(cp_bdev *dev, const struct cp_linear_map *um,
			    struct bc_lin_map **out)
{
	const char *name = dev->name;
	struct bc_lin_seg *bypv = NULL;
	struct bc_lin_map *m = NULL;
	int r;

	if (!um || (um->nsegs && !um->segs))
		return cp_error(-EINVAL, "%s: no map", name);
	if (um->nsegs == 0)
		return cp_error(-EINVAL, "%s: map has no segments", name);
	if (um->nsegs > BC_LIN_MAX_SEGS)
		return cp_error(-EINVAL, "%s: map has %zu segments (max %u)",
				name, um->nsegs, BC_LIN_MAX_SEGS);
	size_t n = um->nsegs;
	m = calloc(1,
		   sizeof(*m) + n * sizeof(m->segs[0]) + n * sizeof(cp_bdev *));
	bypv = calloc(n, sizeof(*bypv));
	if (!m || !bypv) {
		r = cp_error(-ENOMEM, "%s: out of memory", name);
		goto fail;
	}
	m->nsegs = n;
	m->pvs = (cp_bdev **)(void *)&m->segs[n];
	atomic_init(&m->refs, 1);

	for (size_t i = 0; i < n; i++) {
		const struct cp_linear_seg *s = &um->segs[i];
		if (!s->pv_path || !*s->pv_path) {
			r = cp_error(-EINVAL, "%s: segment %zu has no PV", name,
				     i);
			goto fail;
		}
		if (s->length == 0 || !bc_lin_aligned(s->lv_offset) ||
		    !bc_lin_aligned(s->length) ||
		    !bc_lin_aligned(s->pv_offset)) {
			r = cp_error(-EINVAL,
				     "%s: segment %zu (LV offset %" PRIu64
				     " length %" PRIu64 " on %s at %" PRIu64
				     "): empty or not a multiple of 512 bytes",
				     name, i, s->lv_offset, s->length,
				     s->pv_path, s->pv_offset);
			goto fail;
		}
		if (s->lv_offset > INT64_MAX || s->length > INT64_MAX ||
		    s->pv_offset > INT64_MAX ||
		    s->length > INT64_MAX - s->lv_offset ||
		    s->length > INT64_MAX - s->pv_offset) {
			r = cp_error(-EINVAL,
				     "%s: segment %zu (LV offset %" PRIu64
				     "): range too large",
				     name, i, s->lv_offset);
			goto fail;
		}
		cp_bdev *pv = NULL;
		r = bc_lin_pv_get(dev, s->pv_path, &pv);
		if (r < 0)
			goto fail;
		if (cp_bdev_is_blockdev(pv)) {
			uint64_t pvsize = cp_bdev_size(pv);
			if (s->pv_offset + s->length > pvsize) {
				r = cp_error(
				    -EINVAL,
				    "%s: segment %zu (LV offset %" PRIu64
				    ") ends at %" PRIu64
				    " past the end of %s (%" PRIu64 " bytes)",
				    name, i, s->lv_offset,
				    s->pv_offset + s->length, s->pv_path,
				    pvsize);
				goto fail;
			}
		}
		m->segs[i] = (struct bc_lin_seg){s->lv_offset, s->length,
						 s->pv_offset, pv};
	}

	/* Tiling of [0, size). */
	qsort(m->segs, n, sizeof(m->segs[0]), bc_lin_cmp_lv);
	uint64_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		const struct bc_lin_seg *s = &m->segs[i];
		if (s->lv_off != pos) {
			r = cp_error(-EINVAL,
				     "%s: map has a %s at LV offset %" PRIu64
				     " (next segment starts at %" PRIu64 ")",
				     name, s->lv_off > pos ? "gap" : "overlap",
				     pos, s->lv_off);
			goto fail;
		}
		if (s->len > INT64_MAX - pos) {
			r = cp_error(-EINVAL, "%s: map too large", name);
			goto fail;
		}
		pos += s->len;
	}
	m->size = pos;

	/* No PV byte mapped twice; collect the distinct PVs. */
	memcpy(bypv, m->segs, n * sizeof(*bypv));
	qsort(bypv, n, sizeof(*bypv), bc_lin_cmp_pv);
	for (size_t i = 0; i < n; i++) {
		if (i == 0 || bypv[i].pv != bypv[i - 1].pv) {
			m->pvs[m->npvs++] = bypv[i].pv;
			continue;
		}
		const struct bc_lin_seg *a = &bypv[i - 1], *b = &bypv[i];
		if (a->pv_off + a->len > b->pv_off) {
			r = cp_error(-EINVAL,
				     "%s: LV offsets %" PRIu64 " and %" PRIu64
				     " both map to %s offset %" PRIu64,
				     name, a->lv_off, b->lv_off,
				     cp_bdev_name(b->pv), b->pv_off);
			goto fail;
		}
	}
	free(bypv);
	*out = m;
	return 0;

fail:
	free(bypv);
	free(m);
	return r;
}

/* ---- completion ---------------------------------------------------------- */

static void bc_lin_finish_exec(struct bc_req *req)
{
	bc_req_finish(req, req->ret);
}

/* Finish the request of ctx.  defer: the caller is the submitter, so the
 * callback goes to the helper pool (whose threads are marked as this
 * device's).  Otherwise we are on a PV completion thread: mark it as the
 * linear device's while the callback runs, so synchronous calls on the
 * linear device from the callback fail with -EDEADLK instead of hanging
 * this thread. */
static void bc_lin_complete(struct bc_lin_ctx *ctx, bool defer)
{
	struct bc_req *req = ctx->req;
	struct bc_lin_map *map = ctx->map;
	cp_bdev *dev = req->dev;
	int ret = atomic_load(&ctx->ret);
	cp_bdev *prev = NULL;

	if (!defer) {
		for (size_t i = 0; i < map->npvs; i++) {
			if (bc_thread_is_dev(map->pvs[i])) {
				prev = map->pvs[i];
				break;
			}
		}
	}
	if (req->heap_req)
		free(ctx);
	bc_lin_map_put(map);
	if (defer) {
		req->ret = ret;
		req->exec = bc_lin_finish_exec;
		if (bc_helper_push(dev, req) < 0)
			bc_req_finish(req, ret); /* no thread: finish here */
		return;
	}
	bc_thread_set_dev(dev);
	bc_req_finish(req, ret);
	bc_thread_set_dev(prev);
}

static void bc_lin_set_error(struct bc_lin_ctx *ctx, int ret)
{
	int zero = 0;
	atomic_compare_exchange_strong(&ctx->ret, &zero, ret);
}

static void bc_lin_part_cb(void *opaque, int ret)
{
	struct bc_lin_ctx *ctx = opaque;
	if (ret < 0)
		bc_lin_set_error(ctx, ret);
	if (atomic_fetch_sub(&ctx->pending, 1) == 1)
		bc_lin_complete(ctx, false);
}

/* Part k of n could not be submitted: the parts after it will never be. */
static void bc_lin_abort_parts(struct bc_lin_ctx *ctx, unsigned k, unsigned n,
			       int ret)
{
	bc_lin_set_error(ctx, ret);
	if (atomic_fetch_sub(&ctx->pending, n - k) == n - k)
		bc_lin_complete(ctx, true);
}

/* ---- submission ---------------------------------------------------------- */

struct bc_iov_cur {
	const struct iovec *iov;
	int cnt, idx;
	size_t off; /* bytes of iov[idx] consumed */
};

/* Entries needed for the next n bytes. */
static int bc_iov_count(const struct bc_iov_cur *c, size_t n)
{
	int k = 0;
	size_t off = c->off;
	for (int i = c->idx; i < c->cnt && n; i++) {
		size_t l = c->iov[i].iov_len - off;
		off = 0;
		if (!l)
			continue;
		k++;
		n -= CP_MIN(l, n);
	}
	return k;
}

/* Take the next n bytes into out (bc_iov_count() entries). */
static void bc_iov_take(struct bc_iov_cur *c, size_t n, struct iovec *out)
{
	int k = 0;
	while (n && c->idx < c->cnt) {
		const struct iovec *v = &c->iov[c->idx];
		size_t l = v->iov_len - c->off;
		if (!l) {
			c->idx++;
			c->off = 0;
			continue;
		}
		size_t t = CP_MIN(l, n);
		out[k].iov_base = (char *)v->iov_base + c->off;
		out[k].iov_len = t;
		k++;
		n -= t;
		c->off += t;
		if (c->off == v->iov_len) {
			c->idx++;
			c->off = 0;
		}
	}
}

/* Zero bytes [pos, end of request) of the caller's buffers. */
static void bc_iov_zero_from(const struct bc_req *req, size_t pos)
{
	for (int i = 0; i < req->iovcnt; i++) {
		size_t l = req->iov[i].iov_len;
		if (pos >= l) {
			pos -= l;
			continue;
		}
		memset((char *)req->iov[i].iov_base + pos, 0, l - pos);
		pos = 0;
	}
}

static void bc_lin_submit_flush(struct bc_lin_ctx *ctx)
{
	struct bc_lin_map *map = ctx->map;
	unsigned n = (unsigned)map->npvs;
	atomic_init(&ctx->pending, n);
	for (unsigned k = 0; k < n; k++) {
		/* After the last submission ctx may be gone: read first. */
		int r = cp_bdev_flush_async(map->pvs[k], bc_lin_part_cb, ctx);
		if (r < 0) {
			bc_lin_abort_parts(ctx, k, n, r);
			return;
		}
	}
}

static void bc_lin_submit(cp_bdev *dev, struct bc_req *req)
{
	struct bc_linear *lin = dev->linear;
	struct bc_lin_ctx *ctx;

	if (req->heap_req) {
		ctx = malloc(sizeof(*ctx));
		if (!ctx) {
			req->ret = -ENOMEM;
			req->exec = bc_lin_finish_exec;
			if (bc_helper_push(dev, req) < 0)
				bc_req_finish(req, -ENOMEM);
			return;
		}
	} else {
		ctx = &lin->ctx[req - dev->slots];
	}
	ctx->req = req;
	ctx->map = bc_lin_map_get(lin);
	atomic_init(&ctx->ret, 0);
	atomic_init(&ctx->pending, 0);

	if (req->op == BC_OP_FLUSH) {
		bc_lin_submit_flush(ctx);
		return;
	}

	const struct bc_lin_map *map = ctx->map;
	uint64_t off = req->offset, end = off + req->len;
	if (end > map->size) {
		if (req->op == BC_OP_WRITE) {
			/* An LV does not grow by writing. */
			bc_lin_abort_parts(ctx, 0, 0, -ENOSPC);
			return;
		}
		bc_iov_zero_from(req, off >= map->size ? 0 : map->size - off);
		end = CP_MAX(off, map->size);
	}
	if (off >= end) {
		bc_lin_abort_parts(ctx, 0, 0, 0);
		return;
	}

	size_t first = bc_lin_find(map, off);
	unsigned n = 0;
	for (size_t i = first; i < map->nsegs && map->segs[i].lv_off < end; i++)
		n++;
	atomic_init(&ctx->pending, n);

	struct bc_iov_cur cur = {req->iov, req->iovcnt, 0, 0};
	enum bc_op op = req->op;
	for (unsigned k = 0; k < n; k++) {
		const struct bc_lin_seg *s = &map->segs[first + k];
		uint64_t ps = CP_MAX(off, s->lv_off);
		uint64_t pe = CP_MIN(end, s->lv_off + s->len);
		size_t len = (size_t)(pe - ps);
		struct iovec stack[BC_LIN_STACK_IOV];
		struct iovec *v = stack;
		int cnt = bc_iov_count(&cur, len);
		if (cnt > BC_LIN_STACK_IOV) {
			v = malloc((size_t)cnt * sizeof(*v));
			if (!v) {
				bc_lin_abort_parts(ctx, k, n, -ENOMEM);
				return;
			}
		}
		bc_iov_take(&cur, len, v);
		/* ctx (and map) may be gone once the last part is queued:
		 * nothing below the call may touch them on the last turn. */
		int r;
		if (op == BC_OP_READ)
			r = cp_bdev_preadv_async(s->pv, v, cnt,
						 s->pv_off + (ps - s->lv_off),
						 bc_lin_part_cb, ctx);
		else
			r = cp_bdev_pwritev_async(s->pv, v, cnt,
						  s->pv_off + (ps - s->lv_off),
						  bc_lin_part_cb, ctx);
		if (v != stack)
			free(v);
		if (r < 0) {
			bc_lin_abort_parts(ctx, k, n, r);
			return;
		}
	}
}

static int bc_lin_init(cp_bdev *dev)
{
	return -ENOTSUP; /* set up by cp_bdev_open_linear() only */
}

static void bc_lin_destroy(struct bc_linear *lin)
{
	if (!lin)
		return;
	bc_lin_map_put(lin->map);
	for (size_t i = 0; i < lin->pvs.len; i++) {
		cp_bdev_close(lin->pvs.ptr[i].dev);
		free(lin->pvs.ptr[i].path);
	}
	bc_lin_pv_vec_reset(&lin->pvs);
	pthread_mutex_destroy(&lin->map_lock);
	pthread_mutex_destroy(&lin->remap_lock);
	free(lin->ctx);
	free(lin);
}

static void bc_lin_fini(cp_bdev *dev)
{
	bc_lin_destroy(dev->linear);
	dev->linear = NULL;
}

/* ---- synchronous range operations ---------------------------------------- */

static int64_t bc_linear_size(cp_bdev *dev)
{
	struct bc_linear *lin = dev->linear;
	pthread_mutex_lock(&lin->map_lock);
	int64_t size = (int64_t)lin->map->size;
	pthread_mutex_unlock(&lin->map_lock);
	return size;
}

static int bc_linear_discard(cp_bdev *dev, uint64_t offset, uint64_t len)
{
	struct bc_lin_map *map = bc_lin_map_get(dev->linear);
	uint64_t end = CP_MIN(offset + len, map->size);
	int r = 0;
	for (size_t i = offset < end ? bc_lin_find(map, offset) : map->nsegs;
	     i < map->nsegs && map->segs[i].lv_off < end && r == 0; i++) {
		const struct bc_lin_seg *s = &map->segs[i];
		uint64_t ps = CP_MAX(offset, s->lv_off);
		uint64_t pe = CP_MIN(end, s->lv_off + s->len);
		r = cp_bdev_discard(s->pv, s->pv_off + (ps - s->lv_off),
				    pe - ps);
		if (r < 0)
			cp_error_prefix(r, "%s", dev->name);
	}
	bc_lin_map_put(map);
	return r;
}

static int bc_linear_write_zeroes(cp_bdev *dev, uint64_t offset, uint64_t len,
				  unsigned flags)
{
	struct bc_lin_map *map = bc_lin_map_get(dev->linear);
	uint64_t end = offset + len;
	int r = 0;
	if (end > map->size) {
		r = cp_error(
		    -ENOSPC,
		    "%s: write zeroes at offset %" PRIu64 " length %" PRIu64
		    ": beyond the end of the device (%" PRIu64 " bytes)",
		    dev->name, offset, len, map->size);
		goto out;
	}
	for (size_t i = len ? bc_lin_find(map, offset) : map->nsegs;
	     i < map->nsegs && map->segs[i].lv_off < end && r == 0; i++) {
		const struct bc_lin_seg *s = &map->segs[i];
		uint64_t ps = CP_MAX(offset, s->lv_off);
		uint64_t pe = CP_MIN(end, s->lv_off + s->len);
		r = cp_bdev_write_zeroes(s->pv, s->pv_off + (ps - s->lv_off),
					 pe - ps, flags);
		if (r < 0)
			cp_error_prefix(r, "%s", dev->name);
	}
out:
	bc_lin_map_put(map);
	return r;
}

static bool bc_linear_lock_target(cp_bdev *dev, int *fd, uint64_t *base);

/* Writes are counted (fault point) on the PV devices. */
static const struct bc_backend bc_linear_backend = {
    .aio = CP_AIO_THREADS, /* not used: dev->aio is the PVs' */
    .limited = false,
    .no_fault_point = true,
    .init = bc_lin_init,
    .fini = bc_lin_fini,
    .submit = bc_lin_submit,
    .size = bc_linear_size,
    .discard = bc_linear_discard,
    .write_zeroes = bc_linear_write_zeroes,
    .truncate = bc_fixed_truncate,
    .preallocate = bc_fixed_preallocate,
    .block_status = bc_all_data_block_status,
    .lock_target = bc_linear_lock_target,
};

/* ---- open, remap --------------------------------------------------------- */

int cp_bdev_open_linear(const char *name, const struct cp_linear_map *map,
			const struct cp_bdev_opts *uopts, cp_bdev **out)
{
	struct cp_bdev_opts opts;
	struct bc_linear *lin;
	cp_bdev *dev;
	int r;

	*out = NULL;
	if (!name)
		return cp_error(-EINVAL, "open linear device: no name");
	cp_bdev_opts_init(&opts);
	if (uopts) {
		if (uopts->size < sizeof(size_t) || uopts->size > sizeof(opts))
			return cp_error(
			    -EINVAL, "%s: options not initialised (size %zu)",
			    name, uopts->size);
		memcpy(&opts, uopts, uopts->size);
	}
	if (opts.create || opts.truncate)
		return cp_error(
		    -EINVAL, "%s: a linear device cannot create its PVs", name);
	if (opts.queue_depth == 0 || opts.queue_depth > BC_MAX_QUEUE_DEPTH)
		return cp_error(-EINVAL, "%s: queue depth %u out of range 1-%u",
				name, opts.queue_depth, BC_MAX_QUEUE_DEPTH);

	r = bc_dev_alloc(name, opts.queue_depth, &dev);
	if (r < 0)
		return r;
	lin = calloc(1, sizeof(*lin));
	if (lin)
		lin->ctx = calloc(opts.queue_depth, sizeof(*lin->ctx));
	if (!lin || !lin->ctx) {
		free(lin);
		bc_dev_free(dev);
		return cp_error(-ENOMEM, "%s: out of memory", name);
	}
	pthread_mutex_init(&lin->map_lock, NULL);
	pthread_mutex_init(&lin->remap_lock, NULL);
	lin->opts = opts;
	lin->opts.size = sizeof(lin->opts);
	dev->linear = lin;

	r = bc_lin_map_build(dev, map, &lin->map);
	if (r < 0)
		goto fail;

	dev->is_blockdev = true;
	dev->direct = false; /* the PVs take care of their alignment */
	dev->readonly = opts.readonly;
	dev->cache = opts.cache;
	dev->nthreads = opts.threads;
	dev->aio = cp_bdev_aio(lin->pvs.ptr[0].dev);
	unsigned align = 1;
	for (size_t i = 0; i < lin->pvs.len; i++)
		align = CP_MAX(align, cp_bdev_align(lin->pvs.ptr[i].dev));
	dev->align = align;
	dev->lbs = CP_MAX(512u, align);
	dev->backend = &bc_linear_backend;
	*out = dev;
	return 0;

fail:
	bc_lin_destroy(lin);
	dev->linear = NULL;
	bc_dev_free(dev);
	return r;
}

/* Every byte of old must map to the same place in new. */
static int bc_lin_check_prefix(cp_bdev *dev, const struct bc_lin_map *old,
			       const struct bc_lin_map *nm)
{
	for (size_t i = 0; i < old->nsegs; i++) {
		const struct bc_lin_seg *o = &old->segs[i];
		uint64_t pos = o->lv_off, oend = o->lv_off + o->len;
		while (pos < oend) {
			const struct bc_lin_seg *s =
			    &nm->segs[bc_lin_find(nm, pos)];
			uint64_t want = o->pv_off + (pos - o->lv_off);
			uint64_t got = s->pv_off + (pos - s->lv_off);
			if (s->pv != o->pv || got != want)
				return cp_error(
				    -EINVAL,
				    "%s: new map moves LV offset %" PRIu64
				    " from %s offset %" PRIu64
				    " to %s offset %" PRIu64
				    " (only growing is supported; reopen "
				    "the device)",
				    dev->name, pos, cp_bdev_name(o->pv), want,
				    cp_bdev_name(s->pv), got);
			pos = CP_MIN(oend, s->lv_off + s->len);
		}
	}
	return 0;
}

int cp_bdev_linear_remap(cp_bdev *dev, const struct cp_linear_map *map)
{
	struct bc_linear *lin = dev->linear;
	struct bc_lin_map *nm, *old;

	if (!lin)
		return cp_error(-EINVAL, "%s: not a linear device", dev->name);
	pthread_mutex_lock(&lin->remap_lock);
	int r = bc_lin_map_build(dev, map, &nm);
	if (r < 0)
		goto out;
	old = lin->map; /* only remaps change it, under remap_lock */
	if (nm->size < old->size) {
		r = cp_error(-EINVAL,
			     "%s: new map (%" PRIu64
			     " bytes) is smaller than the device (%" PRIu64
			     " bytes); only growing is supported",
			     dev->name, nm->size, old->size);
		free(nm);
		goto out;
	}
	r = bc_lin_check_prefix(dev, old, nm);
	if (r < 0) {
		free(nm);
		goto out;
	}
	pthread_mutex_lock(&lin->map_lock);
	lin->map = nm;
	pthread_mutex_unlock(&lin->map_lock);
	bc_lin_map_put(old);
out:
	pthread_mutex_unlock(&lin->remap_lock);
	return r;
}

bool cp_bdev_is_linear(const cp_bdev *dev)
{
	return dev && dev->linear;
}

static bool bc_linear_lock_target(cp_bdev *dev, int *fd, uint64_t *base)
{
	/* LV offset 0 keeps its PV and offset across remaps (grow only) */
	struct bc_lin_map *m = bc_lin_map_get(dev->linear);
	*fd = m->segs[0].pv->fd;
	*base = m->segs[0].pv_off;
	bc_lin_map_put(m);
	return *fd >= 0;
}
