/* qcow/ops.c - whole-image operations: commit, rebase, convert, measure.
 *
 * All copies run through one parallel runner: the disk is cut into chunks
 * taken in order by `parallel` worker threads; a worker maps its chunk,
 * reads and writes synchronously.  Progress and the rate limit are shared.
 *
 * Crash safety comes from the order of steps, not from journaling:
 *  - commit copies data that the top (or an intermediate layer) already
 *    shadows, so the chain's view never changes while base is written;
 *    base is flushed before the top is emptied, and emptying a cluster of
 *    the top only uncovers identical data in base;
 *  - rebase copies into the image only ranges it does not allocate, with
 *    the content it already shows, then switches the backing file with a
 *    header rewrite whose first sector is written last;
 *  - convert into an existing target writes each range with the source's
 *    content, so repeating it converges.
 */
#include "qcow_int.h"
#include "iov.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define CHUNK (2u << 20)

struct runner;
typedef int (*chunk_fn)(struct runner *rn, uint8_t *buf, uint8_t *buf2,
			uint64_t off, uint64_t len);

struct runner {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t next, total, chunk;
	uint64_t done;        /* bytes finished, for progress */
	uint64_t next_write;  /* in-order mode: chunk index allowed to write */
	bool in_order;
	int err;
	char errmsg[1024];
	chunk_fn fn;
	void *ctx;
	uint64_t rate;        /* bytes per second */
	uint64_t moved;       /* bytes read+written, for the rate limit */
	struct timespec start;
	cp_progress_fn progress;
	void *opaque;
};

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Account bytes moved and sleep as long as needed to stay under the rate. */
static void rate_limit(struct runner *rn, uint64_t bytes)
{
	if (!rn->rate)
		return;
	pthread_mutex_lock(&rn->lock);
	rn->moved += bytes;
	double want = (double)rn->moved / (double)rn->rate;
	double start = (double)rn->start.tv_sec + (double)rn->start.tv_nsec / 1e9;
	pthread_mutex_unlock(&rn->lock);
	double ahead = want - (now_s() - start);
	if (ahead > 0) {
		struct timespec ts = { (time_t)ahead,
				       (long)((ahead - (double)(time_t)ahead) * 1e9) };
		nanosleep(&ts, NULL);
	}
}

/* In-order mode: wait until chunk idx may write. */
static void wait_turn(struct runner *rn, uint64_t idx)
{
	if (!rn->in_order)
		return;
	pthread_mutex_lock(&rn->lock);
	while (rn->next_write != idx && !rn->err)
		pthread_cond_wait(&rn->cond, &rn->lock);
	pthread_mutex_unlock(&rn->lock);
}

static void *runner_main(void *arg)
{
	/* The thread works for a public call: the public functions fn calls
	 * must not clear a message fn recorded before them. */
	CP_API_ENTER();
	struct runner *rn = arg;
	uint8_t *buf = cp_bdev_alloc_buf(rn->chunk);
	uint8_t *buf2 = cp_bdev_alloc_buf(rn->chunk);
	int r = (buf && buf2) ? 0 : -ENOMEM;
	for (;;) {
		pthread_mutex_lock(&rn->lock);
		if (r < 0 && !rn->err) {
			rn->err = r;
			snprintf(rn->errmsg, sizeof(rn->errmsg), "%s", cp_error_msg(r));
			pthread_cond_broadcast(&rn->cond);
		}
		if (rn->err || rn->next >= rn->total) {
			pthread_mutex_unlock(&rn->lock);
			break;
		}
		uint64_t off = rn->next;
		uint64_t len = CP_MIN(rn->chunk, rn->total - off);
		rn->next += len;
		pthread_mutex_unlock(&rn->lock);
		r = rn->fn(rn, buf, buf2, off, len);
		pthread_mutex_lock(&rn->lock);
		if (r >= 0) {
			rn->done += len;
			if (rn->in_order && rn->next_write == off / rn->chunk)
				rn->next_write++;
			pthread_cond_broadcast(&rn->cond);
			if (rn->progress)
				rn->progress(rn->opaque, rn->done, rn->total);
		}
		pthread_mutex_unlock(&rn->lock);
	}
	cp_bdev_free_buf(buf);
	cp_bdev_free_buf(buf2);
	return NULL;
}

/* Run fn over [0, total) in chunks on n threads.  Returns the first error
 * (its message is restored on the calling thread). */
static int run_parallel(struct runner *rn, unsigned n)
{
	pthread_mutex_init(&rn->lock, NULL);
	pthread_cond_init(&rn->cond, NULL);
	clock_gettime(CLOCK_MONOTONIC, &rn->start);
	if (n == 0)
		n = 8;
	if (n > 64)
		n = 64;
	pthread_t th[64];
	unsigned started = 0;
	if (rn->progress)
		rn->progress(rn->opaque, 0, rn->total);
	for (unsigned i = 0; i < n; i++) {
		if (pthread_create(&th[i], NULL, runner_main, rn) != 0)
			break;
		started++;
	}
	if (!started)
		runner_main(rn);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&rn->lock);
	pthread_cond_destroy(&rn->cond);
	if (rn->err) {
		cp_error(rn->err, "%s", rn->errmsg);
		return rn->err;
	}
	return 0;
}

static uint64_t chunk_for(uint64_t a, uint64_t b)
{
	uint64_t c = CHUNK;
	while (c < a || c < b)
		c *= 2;
	return c;
}

/* --- commit ----------------------------------------------------------------------- */

void cp_commit_opts_init(struct cp_commit_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
}

struct commit_ctx {
	cp_image *top, *base;
	int base_depth;
};

/* Write len bytes of buf at off into img, leaving all-zero runs of whole
 * clusters as zero writes (so a sparse source keeps the target sparse). */
static int write_sparse(cp_image *img, const uint8_t *buf, uint64_t off,
			uint64_t len, uint64_t gran, bool target_zero,
			unsigned zflags)
{
	uint64_t p = 0;
	if (!gran)
		return cp_image_pwrite(img, buf, len, off);
	while (p < len) {
		/* a zero run must cover whole granules */
		uint64_t g_end = CP_MIN(len, CP_ALIGN_DOWN(off + p, gran) + gran - off);
		bool zero = cp_is_zero(buf + p, g_end - p);
		uint64_t q = g_end;
		while (q < len) {
			uint64_t n = CP_MIN(len, q + gran) - q;
			if (cp_is_zero(buf + q, n) != zero)
				break;
			q += n;
		}
		int r;
		if (zero)
			r = target_zero ? 0
					: cp_image_write_zeroes(img, off + p, q - p,
								zflags);
		else
			r = cp_image_pwrite(img, buf + p, q - p, off + p);
		if (r < 0)
			return r;
		p = q;
	}
	return 0;
}

/* Completion counting for a batch of async requests. */
struct batch {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned pending;
	int err;
};

static void batch_cb(void *opaque, int ret)
{
	struct batch *b = opaque;
	pthread_mutex_lock(&b->lock);
	if (ret < 0 && !b->err)
		b->err = ret;
	if (--b->pending == 0)
		pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

static int batch_wait(struct batch *b)
{
	pthread_mutex_lock(&b->lock);
	while (b->pending)
		pthread_cond_wait(&b->cond, &b->lock);
	pthread_mutex_unlock(&b->lock);
	return b->err;
}

#define MAX_OPS 512

/* Copy the ranges of one chunk that are allocated above the base: all
 * reads in flight at once, then all writes (a sync round trip per 64 KiB
 * costs more than the copy itself). */
static int commit_chunk(struct runner *rn, uint8_t *buf, uint8_t *buf2,
			uint64_t off, uint64_t len)
{
	struct commit_ctx *c = rn->ctx;
	(void)buf2;
	struct { uint64_t pos, len; bool zero; } ops[MAX_OPS];
	unsigned n = 0;
	uint64_t pos = off, end = off + len, moved = 0;
	while (pos < end) {
		struct cp_extent e;
		int r = cp_image_map(c->top, pos, end - pos, &e);
		if (r < 0)
			return r;
		if (e.depth < c->base_depth && e.present) {
			bool z = e.zero && !e.data;
			if (n && ops[n - 1].zero == z && ops[n - 1].pos + ops[n - 1].len == pos) {
				ops[n - 1].len += e.length; /* merge neighbours */
			} else {
				if (n == MAX_OPS)
					break; /* rest in the next call */
				ops[n].pos = pos;
				ops[n].len = e.length;
				ops[n].zero = z;
				n++;
			}
		}
		pos += e.length;
	}
	end = pos;
	struct batch b = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
	struct iovec iov[MAX_OPS];
	for (unsigned i = 0; i < n; i++) {
		if (ops[i].zero)
			continue;
		iov[i].iov_base = buf + (ops[i].pos - off);
		iov[i].iov_len = ops[i].len;
		pthread_mutex_lock(&b.lock);
		b.pending++;
		pthread_mutex_unlock(&b.lock);
		int r = cp_image_preadv_async(c->top, &iov[i], 1, ops[i].pos, batch_cb, &b);
		if (r < 0)
			batch_cb(&b, r);
	}
	int r = batch_wait(&b);
	if (r < 0)
		return cp_error(r, "%s: reading for commit: %s", cp_image_filename(c->top),
				strerror(-r));
	for (unsigned i = 0; i < n; i++) {
		moved += ops[i].len;
		/* zeroes become zero clusters that keep their host space: no
		 * hole punching in the base */
		if (ops[i].zero || cp_is_zero(buf + (ops[i].pos - off), ops[i].len)) {
			r = cp_image_write_zeroes(c->base, ops[i].pos, ops[i].len, 0);
			if (r < 0)
				break;
			continue;
		}
		pthread_mutex_lock(&b.lock);
		b.pending++;
		pthread_mutex_unlock(&b.lock);
		r = cp_image_pwritev_async(c->base, &iov[i], 1, ops[i].pos, batch_cb, &b);
		if (r < 0) {
			batch_cb(&b, r);
			break;
		}
	}
	int r2 = batch_wait(&b);
	if (r >= 0 && r2 < 0)
		r = cp_error(r2, "%s: writing for commit: %s", cp_image_filename(c->base),
			     strerror(-r2));
	if (r < 0)
		return r;
	rate_limit(rn, 2 * moved);
	if (end < off + len)
		return commit_chunk(rn, buf, buf2, end, off + len - end);
	return 0;
}

int cp_image_commit(cp_image *top, const struct cp_commit_opts *opts)
{
	CP_API_ENTER();
	struct cp_commit_opts o;
	QC_OPTS_OR_DEFAULTS(o, opts, cp_commit_opts_init);
	if (!top->backing)
		return cp_error(-EINVAL, "%s: image has no backing file to commit into",
				top->filename);
	cp_image *base = o.base ? o.base : top->backing;
	int depth = 0;
	cp_image *l = top;
	while (l && l != base) {
		l = l->backing;
		depth++;
	}
	if (!l || depth == 0)
		return cp_error(-EINVAL, "%s: '%s' is not in the backing chain",
				top->filename, base->filename);
	bool empty_top = !o.keep_top && base == top->backing;
	int r = cp_image_reopen(base, true);
	if (r < 0)
		return cp_error_prefix(r, "%s: cannot open the base read-write",
				       base->filename);
	if (empty_top) {
		r = cp_image_reopen(top, true);
		if (r < 0)
			return r;
	}
	uint64_t size = cp_image_size(top);
	if (cp_image_size(base) < size) {
		r = cp_image_resize(base, size, false, CP_PREALLOC_OFF);
		if (r < 0)
			return r;
	}
	/* intermediate layers shrink their size views? no: sizes only grow */
	struct commit_ctx c = { top, base, depth };
	struct runner rn;
	memset(&rn, 0, sizeof(rn));
	rn.total = size;
	rn.chunk = chunk_for(cp_image_cluster_size(top), cp_image_cluster_size(base));
	rn.fn = commit_chunk;
	rn.ctx = &c;
	rn.rate = o.rate_limit;
	rn.progress = o.progress;
	rn.opaque = o.opaque;
	r = run_parallel(&rn, o.parallel);
	if (r >= 0)
		r = cp_image_flush(base);
	if (r >= 0 && empty_top)
		r = cp_image_make_empty(top);
	return r;
}

/* --- rebase -------------------------------------------------------------------------- */

void cp_rebase_opts_init(struct cp_rebase_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
}

struct rebase_ctx {
	cp_image *img, *nb;
};

static int rebase_chunk(struct runner *rn, uint8_t *buf, uint8_t *buf2,
			uint64_t off, uint64_t len)
{
	struct rebase_ctx *c = rn->ctx;
	uint64_t pos = off, end = off + len;
	while (pos < end) {
		uint64_t n;
		int a = cp_image_is_allocated(c->img, pos, end - pos, &n);
		if (a < 0)
			return a;
		if (a == 0) {
			int r = cp_image_pread(c->img, buf, n, pos); /* old view */
			if (r < 0)
				return r;
			uint64_t nsize = c->nb ? cp_image_size(c->nb) : 0;
			uint64_t have = pos < nsize ? CP_MIN(n, nsize - pos) : 0;
			if (have) {
				r = cp_image_pread(c->nb, buf2, have, pos);
				if (r < 0)
					return r;
			}
			memset(buf2 + have, 0, n - have);
			/* copy exactly the differing 512-byte sectors */
			uint64_t p = 0;
			while (p < n) {
				uint64_t s = CP_MIN(n - p, 512 - ((pos + p) & 511));
				if (!memcmp(buf + p, buf2 + p, s)) {
					p += s;
					continue;
				}
				uint64_t q = p + s;
				while (q < n) {
					uint64_t t = CP_MIN(n - q, 512);
					if (!memcmp(buf + q, buf2 + q, t))
						break;
					q += t;
				}
				r = cp_image_pwrite(c->img, buf + p, q - p, pos + p);
				if (r < 0)
					return r;
				p = q;
			}
			rate_limit(rn, 2 * n);
		}
		pos += n;
	}
	return 0;
}

int cp_image_rebase(cp_image *img, const struct cp_rebase_opts *opts)
{
	CP_API_ENTER();
	struct cp_rebase_opts o;
	QC_OPTS_OR_DEFAULTS(o, opts, cp_rebase_opts_init);
	if (!img->q)
		return cp_error(-EINVAL, "%s: raw images have no backing file",
				img->filename);
	if (cp_image_readonly(img))
		return cp_error(-EROFS, "%s: image is read-only", img->filename);
	const char *nbname = o.backing && *o.backing ? o.backing : NULL;
	char fmtbuf[16];
	const char *fmt = o.backing_format;
	cp_image *nb = NULL;
	int r;
	if (nbname) {
		enum cp_fmt f = CP_FMT_AUTO;
		if (fmt && (r = cp_fmt_parse(fmt, &f)) < 0)
			return r;
		r = qc_open_relative(img, nbname, f, o.unsafe, &nb);
		if (r < 0) {
			if (!o.unsafe)
				return cp_error_prefix(r, "%s: could not open new backing file '%s'",
						       img->filename, nbname);
			cp_clear_error(); /* unsafe: the file need not exist */
			nb = NULL;
		}
		if (!fmt && nb) {
			snprintf(fmtbuf, sizeof(fmtbuf), "%s",
				 cp_fmt_name(cp_image_format(nb)));
			fmt = fmtbuf;
		}
	}
	if (!o.unsafe) {
		struct rebase_ctx c = { img, nb };
		struct runner rn;
		memset(&rn, 0, sizeof(rn));
		rn.total = cp_image_size(img);
		rn.chunk = chunk_for(cp_image_cluster_size(img), 0);
		rn.fn = rebase_chunk;
		rn.ctx = &c;
		rn.progress = o.progress;
		rn.opaque = o.opaque;
		r = run_parallel(&rn, o.parallel);
		if (r >= 0)
			r = cp_image_flush(img);
		if (r < 0) {
			cp_image_close(nb);
			return r;
		}
	}
	cp_image_close(nb);
	return cp_image_set_backing(img, nbname, nbname ? fmt : NULL, !o.unsafe);
}

/* --- convert -------------------------------------------------------------------------- */

void cp_convert_opts_init(struct cp_convert_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->sparse_size = 4096;
}

struct convert_ctx {
	cp_image *src, *dst;
	const struct cp_convert_opts *o;
	uint32_t dcs; /* target cluster size */
};

/* Is any byte of [off, off+len) allocated in src's top layer? */
static int top_allocated(cp_image *src, uint64_t off, uint64_t len)
{
	uint64_t pos = off, n;
	while (pos < off + len) {
		int a = cp_image_is_allocated(src, pos, off + len - pos, &n);
		if (a != 0)
			return a;
		pos += n;
	}
	return 0;
}

static int convert_chunk(struct runner *rn, uint8_t *buf, uint8_t *buf2,
			 uint64_t off, uint64_t len)
{
	struct convert_ctx *c = rn->ctx;
	const struct cp_convert_opts *o = c->o;
	uint64_t idx = off / rn->chunk;
	bool sparse = o->sparse_size != 0;
	(void)buf2;
	/* read the chunk, skipping what is known to read as zeroes */
	uint64_t pos = off, end = off + len;
	bool any_data = false;
	memset(buf, 0, len);
	while (pos < end) {
		struct cp_extent e;
		int r = cp_image_map(c->src, pos, end - pos, &e);
		if (r < 0)
			return r;
		if (!e.zero && e.present) {
			r = cp_image_pread(c->src, buf + (pos - off), e.length, pos);
			if (r < 0)
				return r;
			any_data = true;
		}
		pos += e.length;
	}
	rate_limit(rn, len);
	if (o->compress) {
		/* compress every cluster first, on this worker, then take
		 * our turn only for the writes */
		uint64_t nc = CP_DIV_ROUND_UP(len, c->dcs);
		long *clen = calloc(nc, sizeof(long));
		if (!clen)
			return -ENOMEM;
		int r = 0;
		for (uint64_t i = 0; i < nc && r >= 0; i++) {
			uint64_t p = i * c->dcs, n = CP_MIN(c->dcs, len - p);
			clen[i] = -1; /* skip */
			if (o->source_top_only) {
				r = top_allocated(c->src, off + p, n);
				if (r <= 0)
					continue;
			}
			if (sparse && cp_is_zero(buf + p, n)) {
				clen[i] = -2; /* zeroes */
				continue;
			}
			long z = cp_image_compress(c->dst, buf + p, n, buf2 + p);
			if (z < 0)
				r = (int)z;
			clen[i] = z;
		}
		struct qc_cpiece *pc = calloc(nc, sizeof(*pc));
		unsigned npc = 0;
		if (!pc)
			r = r < 0 ? r : -ENOMEM;
		wait_turn(rn, idx);
		for (uint64_t i = 0; i < nc && r >= 0; i++) {
			uint64_t p = i * c->dcs, n = CP_MIN(c->dcs, len - p);
			if (clen[i] == -1)
				continue;
			if (clen[i] == -2)
				r = o->target_is_zero && !o->source_top_only
					    ? 0
					    : cp_image_write_zeroes(c->dst, off + p, n, CP_ZERO_MAY_UNMAP);
			else if (clen[i] == 0)
				r = cp_image_pwrite(c->dst, buf + p, n, off + p);
			else
				pc[npc++] = (struct qc_cpiece){ buf2 + p, (size_t)clen[i], off + p };
		}
		/* the compressed clusters of the chunk: one packed write */
		for (unsigned k = 0; r >= 0 && k < npc; k++)
			qc_bitmaps_mark(c->dst->q, pc[k].off, c->dst->q->cluster_size);
		if (r >= 0 && npc)
			r = qc_store_compressed_batch(c->dst->q, pc, npc);
		free(pc);
		free(clen);
		return r < 0 ? r : 0;
	}
	wait_turn(rn, idx);
	if (o->source_top_only) {
		/* only what the top allocates, verbatim (zeroes included:
		 * they must hide the target's backing file) */
		pos = off;
		while (pos < end) {
			uint64_t n;
			int a = cp_image_is_allocated(c->src, pos, end - pos, &n);
			if (a < 0)
				return a;
			if (a == 1) {
				int r = write_sparse(c->dst, buf + (pos - off), pos, n,
						     o->sparse_size, false,
						     CP_ZERO_MAY_UNMAP);
				if (r < 0)
					return r;
			}
			pos += n;
		}
		return 0;
	}
	if (!any_data && sparse) {
		if (o->target_is_zero)
			return 0;
		return cp_image_write_zeroes(c->dst, off, len, CP_ZERO_MAY_UNMAP);
	}
	/* -S 0: every byte is written, the target fully allocated */
	return write_sparse(c->dst, buf, off, len, o->sparse_size,
			    o->target_is_zero && sparse, CP_ZERO_MAY_UNMAP);
}

int cp_image_convert(cp_image *src, cp_image *dst, const struct cp_convert_opts *opts)
{
	CP_API_ENTER();
	struct cp_convert_opts o;
	QC_OPTS_OR_DEFAULTS(o, opts, cp_convert_opts_init);
	if (cp_image_size(dst) < cp_image_size(src))
		return cp_error(-EINVAL, "%s: target (%" PRIu64 " bytes) is smaller than the source (%" PRIu64 " bytes)",
				cp_image_filename(dst), cp_image_size(dst),
				cp_image_size(src));
	if (o.compress && !dst->q)
		return cp_error(-EINVAL, "%s: compression needs a qcow2 target",
				cp_image_filename(dst));
	struct convert_ctx c = { src, dst, &o, cp_image_cluster_size(dst) };
	struct runner rn;
	memset(&rn, 0, sizeof(rn));
	rn.total = cp_image_size(src);
	rn.chunk = chunk_for(cp_image_cluster_size(src), c.dcs);
	rn.fn = convert_chunk;
	rn.ctx = &c;
	rn.in_order = !o.out_of_order;
	rn.progress = o.progress;
	rn.opaque = o.opaque;
	int r = run_parallel(&rn, o.parallel);
	if (r >= 0)
		r = cp_image_flush(dst);
	return r;
}

/* --- measure ----------------------------------------------------------------------------- */

void cp_measure_opts_init(struct cp_measure_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->format = CP_FMT_QCOW2;
	o->cluster_size = 65536;
	o->refcount_bits = 16;
	o->qcow_version = 3;
}

/* Refcount metadata for `clusters` clusters, counting itself (the fixed
 * point QEMU computes in qcow2_refcount_metadata_size). */
static uint64_t refcount_meta(uint64_t clusters, uint64_t cs, unsigned order)
{
	uint64_t per_table = cs / 8, per_block = cs * 8 / (1u << order);
	uint64_t table = 0, blocks = 0, n = 0, last;
	do {
		last = n;
		blocks = CP_DIV_ROUND_UP(clusters + table + blocks, per_block);
		table = CP_DIV_ROUND_UP(blocks, per_table);
		n = clusters + blocks + table;
	} while (n != last);
	return (blocks + table) * cs;
}

/* Size of an image of `size` bytes with every cluster allocated. */
static uint64_t prealloc_size(uint64_t size, uint64_t cs, unsigned order, bool extl2)
{
	uint64_t esz = extl2 ? 16 : 8;
	uint64_t total = CP_ALIGN_UP(size, cs);
	uint64_t meta = cs; /* header */
	uint64_t nl2e = CP_ALIGN_UP(total / cs, cs / esz);
	meta += nl2e * esz;
	uint64_t nl1e = CP_ALIGN_UP(nl2e * esz / cs, cs / 8);
	meta += nl1e * 8;
	meta += refcount_meta((meta + total) / cs, cs, order);
	return meta + total;
}

int cp_image_measure(cp_image *src, const struct cp_measure_opts *opts,
		     struct cp_measure_result *res)
{
	CP_API_ENTER();
	struct cp_measure_opts o;
	if (opts)
		o = *opts;
	else
		cp_measure_opts_init(&o);
	memset(res, 0, sizeof(*res));
	uint64_t size = src ? cp_image_size(src) : o.virtual_size;
	size = CP_ALIGN_UP(size, 512);
	if (o.format == CP_FMT_RAW) {
		res->required = res->fully_allocated = size;
		return 0;
	}
	uint64_t cs = o.cluster_size;
	if (!cp_is_pow2(cs) || cs < 512 || cs > (2u << 20))
		return cp_error(-EINVAL, "cluster size %" PRIu64 " must be a power of two between 512 and 2097152",
				cs);
	if (!cp_is_pow2(o.refcount_bits) || o.refcount_bits > 64)
		return cp_error(-EINVAL, "refcount_bits %u must be a power of two between 1 and 64",
				o.refcount_bits);
	/* as qemu-img measure: the L1 table must stay within its limit */
	uint64_t l2_tables = CP_DIV_ROUND_UP(size / cs, cs / (o.extended_l2 ? 16 : 8));
	if (l2_tables * 8 > QC_MAX_L1_BYTES)
		return cp_error(-EFBIG, "the image size is too large for cluster size %" PRIu64
				" (try using a larger cluster size)", cs);
	unsigned order = (unsigned)__builtin_ctz(o.refcount_bits);
	uint64_t required = 0;
	if (src) {
		uint64_t pnum;
		for (uint64_t off = 0; off < size; off += pnum) {
			struct cp_extent e;
			int r = cp_image_map(src, off, size - off, &e);
			if (r < 0)
				return r;
			pnum = e.length;
			if (e.zero || !e.present) {
				/* zero ranges need no cluster */
			} else if (e.data) {
				pnum = CP_ALIGN_UP(off + pnum, cs) - off;
				required += off % cs + pnum;
			}
		}
		res->has_bitmaps = o.qcow_version >= 3 && src->q && src->q->version >= 3;
		/* as qemu-img: every persistent bitmap fully allocated, its
		 * table and its directory entry */
		if (res->has_bitmaps)
			res->bitmaps = qc_bitmaps_measure(src->q, size, (uint32_t)cs);
	}
	if (o.prealloc == CP_PREALLOC_FULL || o.prealloc == CP_PREALLOC_FALLOC)
		required = CP_ALIGN_UP(size, cs);
	res->fully_allocated = prealloc_size(size, cs, order, o.extended_l2);
	res->required = res->fully_allocated - CP_ALIGN_UP(size, cs) + required;
	return 0;
}
