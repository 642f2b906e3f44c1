/* qcow/io.c - reads, writes, zeroes, discard, flush, resize of qcow2.
 *
 * A write that changes metadata (allocates a cluster, fills subclusters,
 * replaces a compressed or shared cluster) registers its guest clusters in
 * q->inflight, so overlapping metadata changes wait for each other: no lost
 * write, no double allocation.  Writes into clusters that are already
 * allocated to this image alone (COPIED) go straight to the host offset.
 * See qcow_int.h for the lock and the crash-ordering rules.
 */
#include "qcow_int.h"
#include "iov.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <zlib.h>
#if CP_HAVE_ZSTD
#include <zstd.h>
#endif

#include "config.h"

#define MAX_IOV 64

/* --- grace period for freed clusters ------------------------------------ */

unsigned qc_gp_enter_locked(struct qcow *q)
{
	unsigned e = atomic_load(&q->epoch) & 1;
	atomic_fetch_add(&q->gp_count[e], 1);
	return e;
}

void qc_gp_exit(struct qcow *q, unsigned e)
{
	if (atomic_fetch_sub(&q->gp_count[e], 1) == 1) {
		pthread_mutex_lock(&q->gp_lock);
		pthread_cond_broadcast(&q->gp_cond);
		pthread_mutex_unlock(&q->gp_lock);
	}
}

/* Wait until every data request that started before now has finished. */
static void gp_wait_locked(struct qcow *q)
{
	unsigned old = atomic_fetch_add(&q->epoch, 1) & 1;
	pthread_mutex_lock(&q->gp_lock);
	while (atomic_load(&q->gp_count[old]) != 0)
		pthread_cond_wait(&q->gp_cond, &q->gp_lock);
	pthread_mutex_unlock(&q->gp_lock);
}

/* --- in-flight metadata changes ------------------------------------------ */

static bool inflight_conflict(struct qcow *q, uint64_t s, uint64_t e)
{
	for (struct qc_inflight *f = q->inflight; f; f = f->next)
		if (f->start < e && s < f->end)
			return true;
	return false;
}

static void inflight_add(struct qcow *q, struct qc_inflight *f, uint64_t s,
			 uint64_t e)
{
	f->start = s;
	f->end = e;
	f->next = q->inflight;
	q->inflight = f;
}

static void inflight_del(struct qcow *q, struct qc_inflight *f)
{
	for (struct qc_inflight **p = &q->inflight; *p; p = &(*p)->next) {
		if (*p == f) {
			*p = f->next;
			break;
		}
	}
	pthread_cond_broadcast(&q->inflight_cond);
}

/* --- crash ordering -------------------------------------------------------- */

int qc_l2_barrier_locked(struct qcow *q)
{
	int r;
	if (!q->lazy) {
		r = qc_cache_writeback(q, &q->rbc);
		if (r < 0)
			return r;
	}
	if (q->barrier_needed) {
		r = cp_bdev_flush(q->dev);
		if (r < 0)
			return cp_error_prefix(r, "%s: flush", q->name);
		q->barrier_needed = false;
	}
	return 0;
}

static int set_dirty_locked(struct qcow *q)
{
	if (!q->lazy || q->dirty_set || q->version < 3)
		return 0;
	int r = qc_header_set_incompat_locked(q, QC_INCOMPAT_DIRTY, 0);
	if (r == 0)
		q->dirty_set = true;
	return r;
}

int qc_flush_locked(struct qcow *q)
{
	int r;
	bool meta = qc_cache_has_dirty(&q->l2c) || qc_cache_has_dirty(&q->rbc) ||
		    q->pending_free.len;
	if (meta) {
		r = qc_l2_barrier_locked(q);
		if (r < 0)
			return r;
		r = qc_cache_writeback(q, &q->l2c);
		if (r < 0)
			return r;
	}
	r = cp_bdev_flush(q->dev);
	if (r < 0)
		return cp_error_prefix(r, "%s: flush", q->name);
	q->barrier_needed = false;
	if (q->pending_free.len) {
		/* the L2 entries no longer reference these clusters on disk;
		 * wait for readers that mapped them before, then free */
		gp_wait_locked(q);
		r = qc_apply_pending_free_locked(q);
		if (r < 0)
			return r;
		if (!q->lazy) {
			r = qc_cache_writeback(q, &q->rbc);
			if (r < 0)
				return r;
			r = cp_bdev_flush(q->dev);
			if (r < 0)
				return r;
			q->barrier_needed = false;
		}
	}
	return 0;
}

int qc_flush(struct qcow *q)
{
	if (q->readonly && !q->corrupt)
		return 0;
	pthread_mutex_lock(&q->lock);
	int r = qc_flush_locked(q);
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* --- decompression ----------------------------------------------------------- */

static int inflate_zlib(const uint8_t *in, size_t inlen, uint8_t *out,
			size_t outlen)
{
	z_stream s;
	memset(&s, 0, sizeof(s));
	if (inflateInit2(&s, -12) != Z_OK)
		return -ENOMEM;
	s.next_in = (Bytef *)(uintptr_t)in;
	s.avail_in = (uInt)inlen;
	s.next_out = out;
	s.avail_out = (uInt)outlen;
	int ret = inflate(&s, Z_FINISH);
	bool ok = (ret == Z_STREAM_END || ret == Z_BUF_ERROR) && s.avail_out == 0;
	inflateEnd(&s);
	return ok ? 0 : -EIO;
}

#if CP_HAVE_ZSTD
static int inflate_zstd(const uint8_t *in, size_t inlen, uint8_t *out,
			size_t outlen)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	if (!d)
		return -ENOMEM;
	ZSTD_inBuffer ib = { in, inlen, 0 };
	ZSTD_outBuffer ob = { out, outlen, 0 };
	int r = 0;
	while (ob.pos < ob.size) {
		size_t prev_in = ib.pos, prev_out = ob.pos;
		size_t z = ZSTD_decompressStream(d, &ob, &ib);
		if (ZSTD_isError(z)) {
			r = -EIO;
			break;
		}
		if (ib.pos == prev_in && ob.pos == prev_out) {
			r = -EIO; /* no progress: truncated input */
			break;
		}
		if (z == 0 && ob.pos < ob.size) {
			r = -EIO; /* frame ended early */
			break;
		}
	}
	ZSTD_freeDCtx(d);
	return r;
}
#endif

int qc_decompress(struct qcow *q, uint64_t entry, uint8_t *buf)
{
	uint64_t off, len;
	qc_compressed_range(q, entry, &off, &len);
	uint64_t aoff = CP_ALIGN_DOWN(off, 512);
	size_t alen = CP_ALIGN_UP(off + len, 512) - aoff;
	uint8_t *in = cp_bdev_alloc_buf(alen);
	if (!in)
		return -ENOMEM;
	int r = cp_bdev_pread(q->ddev, in, alen, aoff);
	if (r < 0) {
		cp_bdev_free_buf(in);
		return cp_error_prefix(r, "%s: reading compressed cluster", q->name);
	}
	const uint8_t *src = in + (off - aoff);
	if (q->compression_type == QC_COMPRESSION_ZLIB)
		r = inflate_zlib(src, len, buf, q->cluster_size);
#if CP_HAVE_ZSTD
	else
		r = inflate_zstd(src, len, buf, q->cluster_size);
#else
	else
		r = -ENOTSUP;
#endif
	cp_bdev_free_buf(in);
	if (r < 0)
		return cp_error(-EUCLEAN, "%s: compressed cluster at 0x%" PRIx64 " (%" PRIu64 " bytes) cannot be decompressed",
				q->name, off, len);
	return 0;
}

/* --- read ---------------------------------------------------------------- */

static int backing_readv(struct qcow *q, const struct iovec *iov, int cnt,
			 size_t skip, uint64_t off, uint64_t len)
{
	cp_image *b = q->img->backing;
	uint64_t bsize = b ? cp_image_size(b) : 0;
	uint64_t have = off < bsize ? CP_MIN(len, bsize - off) : 0;
	if (have) {
		struct iovec sl[MAX_IOV];
		int n = cp_iov_slice(iov, cnt, skip, have, sl, MAX_IOV);
		if (n >= 0) {
			int r = cp_image_preadv(b, sl, n, off);
			if (r < 0)
				return r;
		} else {
			void *tmp = malloc(have);
			if (!tmp)
				return -ENOMEM;
			int r = cp_image_pread(b, tmp, have, off);
			if (r >= 0)
				cp_iov_from_buf(iov, cnt, skip, tmp, have);
			free(tmp);
			if (r < 0)
				return r;
		}
	}
	if (have < len)
		cp_iov_memset(iov, cnt, skip + have, 0, len - have);
	return 0;
}

static int host_io(struct qcow *q, bool write, const struct iovec *iov,
		   int cnt, size_t skip, uint64_t host, uint64_t len)
{
	struct iovec sl[MAX_IOV];
	int n = cp_iov_slice(iov, cnt, skip, len, sl, MAX_IOV);
	int r;
	if (n >= 0) {
		r = write ? cp_bdev_pwritev(q->ddev, sl, n, host)
			  : cp_bdev_preadv(q->ddev, sl, n, host);
	} else {
		void *tmp = malloc(len);
		if (!tmp)
			return -ENOMEM;
		if (write)
			cp_iov_to_buf(iov, cnt, skip, tmp, len);
		r = write ? cp_bdev_pwrite(q->ddev, tmp, len, host)
			  : cp_bdev_pread(q->ddev, tmp, len, host);
		if (r >= 0 && !write)
			cp_iov_from_buf(iov, cnt, skip, tmp, len);
		free(tmp);
	}
	return r;
}

int qc_readv(struct qcow *q, const struct iovec *iov, int cnt, uint64_t off,
	     uint64_t len)
{
	uint64_t done = 0;
	uint8_t *cbuf = NULL;
	int r = 0;
	while (done < len) {
		struct qc_map m;
		unsigned e = 0;
		pthread_mutex_lock(&q->lock);
		r = qc_map_locked(q, off + done, len - done, &m);
		if (r >= 0 && (m.type == QC_NORMAL || m.type == QC_COMPRESSED))
			e = qc_gp_enter_locked(q);
		pthread_mutex_unlock(&q->lock);
		if (r < 0)
			break;
		switch (m.type) {
		case QC_NORMAL:
			r = host_io(q, false, iov, cnt, done, m.host, m.bytes);
			qc_gp_exit(q, e);
			if (r < 0)
				cp_error_prefix(r, "%s: reading data at 0x%" PRIx64,
						q->name, m.host);
			break;
		case QC_COMPRESSED:
			if (!cbuf)
				cbuf = malloc(q->cluster_size);
			if (!cbuf) {
				qc_gp_exit(q, e);
				r = -ENOMEM;
				break;
			}
			r = qc_decompress(q, m.cdesc, cbuf);
			qc_gp_exit(q, e);
			if (r >= 0)
				cp_iov_from_buf(iov, cnt, done,
						cbuf + ((off + done) & (q->cluster_size - 1)),
						m.bytes);
			break;
		case QC_ZERO:
			cp_iov_memset(iov, cnt, done, 0, m.bytes);
			break;
		case QC_UNALLOC:
			r = backing_readv(q, iov, cnt, done, off + done, m.bytes);
			break;
		}
		if (r < 0)
			break;
		done += m.bytes;
	}
	free(cbuf);
	return r < 0 ? r : 0;
}

/* --- write ---------------------------------------------------------------- */

/* Fill buf (len bytes, guest offset goff) with what the image shows there
 * now according to (type, old entry): zeroes, backing data, the old cluster
 * or the decompressed cluster. */
static int cow_source_read(struct qcow *q, enum qc_ctype t, uint64_t old_e,
			   const uint8_t *dbuf, uint64_t goff, uint8_t *buf,
			   uint64_t len)
{
	struct iovec v = { buf, len };
	switch (t) {
	case QC_ZERO:
		memset(buf, 0, len);
		return 0;
	case QC_UNALLOC:
		return backing_readv(q, &v, 1, 0, goff, len);
	case QC_COMPRESSED:
		memcpy(buf, dbuf + (goff & (q->cluster_size - 1)), len);
		return 0;
	case QC_NORMAL: {
		uint64_t host = (old_e & QC_L2E_OFFSET_MASK) +
				(goff & (q->cluster_size - 1));
		int r = cp_bdev_pread(q->ddev, buf, len, host);
		return r < 0 ? cp_error_prefix(r, "%s: copy-on-write read", q->name) : 0;
	}
	}
	return 0;
}

/* Per-cluster plan of an allocating write. */
struct wplan {
	uint64_t goff;     /* guest cluster start */
	uint64_t ws, we;   /* written bytes within the cluster */
	uint64_t old_e, old_bm;
	uint64_t host;     /* host cluster written */
	bool fresh;        /* host is newly allocated */
	bool known_zero;   /* host cluster reads as zeroes now */
	bool full_cow;     /* std semantics: whole cluster defined by us */
};

static enum qc_ctype unit_type(struct qcow *q, uint64_t e, uint64_t bm,
			       unsigned si)
{
	if (e & QC_OFLAG_COMPRESSED)
		return QC_COMPRESSED;
	if (q->extl2) {
		if ((bm >> si) & 1)
			return QC_NORMAL;
		return ((bm >> (32 + si)) & 1) ? QC_ZERO : QC_UNALLOC;
	}
	if ((e & QC_OFLAG_ZERO) && q->version >= 3)
		return QC_ZERO;
	return (e & QC_L2E_OFFSET_MASK) ? QC_NORMAL : QC_UNALLOC;
}

/* Write the data of one planned cluster. */
static int write_cluster_data(struct qcow *q, struct wplan *p,
			      const struct iovec *iov, int cnt, size_t skip)
{
	uint64_t cs = q->cluster_size;
	uint64_t unit = p->full_cow ? cs : q->subcluster_size;
	/* the span we define: whole units around [ws, we) */
	uint64_t s = CP_ALIGN_DOWN(p->ws, unit), e = CP_ALIGN_UP(p->we, unit);
	uint8_t *dbuf = NULL;
	int r = 0;
	if (p->old_e & QC_OFLAG_COMPRESSED) {
		dbuf = malloc(cs);
		if (!dbuf)
			return -ENOMEM;
		r = qc_decompress(q, p->old_e, dbuf);
		if (r < 0)
			goto out;
	}
	/* Which parts outside [ws, we) need COW data?  With extl2 (not
	 * full_cow) only the partial head/tail units that were not allocated
	 * yet; with full_cow every byte outside [ws, we). */
	uint64_t head_s = s, head_e = p->ws, tail_s = p->we, tail_e = e;
	if (!p->full_cow) {
		unsigned hs = (unsigned)(s / unit), ts = (unsigned)((e - 1) / unit);
		if (unit_type(q, p->old_e, p->old_bm, hs) == QC_NORMAL)
			head_e = head_s; /* allocated already: no COW */
		if (unit_type(q, p->old_e, p->old_bm, ts) == QC_NORMAL)
			tail_s = tail_e;
	}
	bool need_head = head_e > head_s, need_tail = tail_e > tail_s;
	if (need_head || need_tail) {
		/* one bounce buffer for [bs, be): guest data plus COW parts */
		uint64_t bs = need_head ? head_s : p->ws;
		uint64_t be = need_tail ? tail_e : p->we;
		uint8_t *b = cp_bdev_alloc_buf(be - bs);
		if (!b) {
			r = -ENOMEM;
			goto out;
		}
		for (int part = 0; part < 2 && r >= 0; part++) {
			uint64_t ps = part ? tail_s : head_s;
			uint64_t pe = part ? tail_e : head_e;
			while (ps < pe && r >= 0) {
				/* unit by unit: each may come from another source */
				uint64_t ue = CP_MIN(pe, CP_ALIGN_DOWN(ps, q->subcluster_size) +
							     q->subcluster_size);
				enum qc_ctype t = unit_type(
					q, p->old_e, p->old_bm,
					q->extl2 ? (unsigned)(ps / q->subcluster_size) : 0);
				r = cow_source_read(q, t, p->old_e, dbuf, p->goff + ps,
						    b + (ps - bs), ue - ps);
				ps = ue;
			}
		}
		if (r >= 0) {
			cp_iov_to_buf(iov, cnt, skip, b + (p->ws - bs), p->we - p->ws);
			r = cp_bdev_pwrite(q->ddev, b, be - bs, p->host + bs);
		}
		cp_bdev_free_buf(b);
	} else {
		r = host_io(q, true, iov, cnt, skip, p->host + p->ws, p->we - p->ws);
	}
	if (r < 0)
		cp_error_prefix(r, "%s: writing data at 0x%" PRIx64, q->name,
				p->host + p->ws);
out:
	free(dbuf);
	return r;
}

/* Does the COW of plan p read only zeroes? (then a known-zero host cluster
 * needs no COW write at all) */
static bool cow_is_zero(struct qcow *q, struct wplan *p)
{
	if (p->old_e & QC_OFLAG_COMPRESSED)
		return false;
	unsigned n = p->full_cow ? 1 : QC_SUBCLUSTERS;
	for (unsigned si = 0; si < n; si++) {
		enum qc_ctype t = p->full_cow && !q->extl2
					  ? unit_type(q, p->old_e, p->old_bm, 0)
					  : unit_type(q, p->old_e, p->old_bm, si);
		if (t == QC_NORMAL)
			return false;
		if (t == QC_UNALLOC && q->img->backing)
			return false;
	}
	return true;
}

#define MAX_BATCH 256

/* One step of an allocating write starting at guest offset off; returns
 * the number of bytes written (> 0) or -errno. */
static int64_t write_alloc_step(struct qcow *q, const struct iovec *iov,
				int cnt, size_t skip, uint64_t off,
				uint64_t len)
{
	uint64_t cs = q->cluster_size;
	struct wplan plans[MAX_BATCH];
	struct qc_inflight inf;
	uint64_t c0 = CP_ALIGN_DOWN(off, cs);
	uint64_t slice_span = (uint64_t)q->slice_entries << q->cluster_bits;
	uint64_t limit = CP_MIN(off + len, CP_ALIGN_DOWN(off, slice_span) + slice_span);
	unsigned k = 0;
	int r;
	void *slice = NULL;
	uint32_t idx;

	pthread_mutex_lock(&q->lock);
	if (q->readonly) {
		pthread_mutex_unlock(&q->lock);
		return cp_error(-EROFS, "%s: image is read-only%s", q->name,
				q->corrupt ? " (marked corrupt)" : "");
	}
	for (;;) {
		uint64_t cend = CP_ALIGN_UP(limit, cs);
		if (!inflight_conflict(q, c0, cend))
			break;
		pthread_cond_wait(&q->inflight_cond, &q->lock);
	}
	r = set_dirty_locked(q);
	if (r < 0)
		goto unlock;
	r = qc_l2_lookup_locked(q, off, true, &slice, &idx);
	if (r < 0)
		goto unlock;
	/* Gather clusters that need a metadata change.  The first one always
	 * does (the caller found it not writable in place), or it may have
	 * become writable in place while we waited: then write in place. */
	uint64_t nfresh = 0;
	unsigned max_k = (unsigned)CP_MIN((uint64_t)MAX_BATCH, qc_max_alloc(q));
	for (uint64_t g = c0; g < limit && k < max_k; g += cs) {
		uint32_t i = idx + (uint32_t)((g - c0) >> q->cluster_bits);
		uint64_t e = qc_l2_entry(q, slice, i), bm = qc_l2_bitmap(q, slice, i);
		struct wplan *p = &plans[k];
		memset(p, 0, sizeof(*p));
		p->goff = g;
		p->ws = g < off ? off - g : 0;
		p->we = CP_MIN(limit - g, cs);
		p->old_e = e;
		p->old_bm = bm;
		uint64_t hc = e & QC_L2E_OFFSET_MASK;
		bool copied_normal = hc && (e & QC_OFLAG_COPIED) &&
				     !(e & QC_OFLAG_COMPRESSED);
		if (!q->extl2) {
			if (copied_normal && !((e & QC_OFLAG_ZERO) && q->version >= 3))
				break; /* writable in place */
			p->full_cow = true;
		} else if (e & QC_OFLAG_COMPRESSED || (hc && !(e & QC_OFLAG_COPIED))) {
			p->full_cow = true;
		} else if (copied_normal) {
			/* host cluster exists: are all touched units there? */
			unsigned a = (unsigned)(p->ws / q->subcluster_size);
			unsigned b = (unsigned)((p->we - 1) / q->subcluster_size);
			uint64_t mask = (b == 31 ? 0xffffffffull : ((1ull << (b + 1)) - 1)) &
					~((1ull << a) - 1);
			if ((bm & mask) == mask)
				break; /* all allocated: in place */
			p->host = hc;
		}
		if (!p->host)
			nfresh++;
		/* a later cluster that keeps its host cluster ends the
		 * batch of fresh ones, to keep allocations contiguous */
		if (k > 0 && (!!p->host) != (!!plans[0].host))
			break;
		k++;
		if (p->host)
			break; /* one existing cluster at a time */
	}
	if (k == 0) {
		qc_cache_put(&q->l2c, slice);
		pthread_mutex_unlock(&q->lock);
		return 0; /* caller writes in place */
	}
	if (plans[0].host == 0) {
		uint64_t h;
		bool kz;
		r = qc_alloc_clusters_locked(q, k, &h);
		if (r < 0)
			goto unlock;
		kz = h >= q->known_zero_from;
		if (kz)
			q->known_zero_from = h + k * cs;
		for (unsigned j = 0; j < k; j++) {
			plans[j].host = h + j * cs;
			plans[j].fresh = true;
			plans[j].known_zero = kz;
		}
	}
	inflight_add(q, &inf, c0, plans[k - 1].goff + cs);
	unsigned e = qc_gp_enter_locked(q);
	qc_cache_put(&q->l2c, slice);
	slice = NULL;
	pthread_mutex_unlock(&q->lock);

	/* data, outside the lock */
	uint64_t written = 0;
	for (unsigned j = 0; j < k && r >= 0; j++) {
		struct wplan *p = &plans[j];
		size_t sk = skip + (p->goff + p->ws - off);
		if (p->known_zero && cow_is_zero(q, p)) {
			/* nothing to copy: the fresh cluster reads as zeroes;
			 * batch contiguous fully-covered neighbours */
			unsigned j2 = j;
			while (j2 + 1 < k && plans[j2].we == cs &&
			       plans[j2 + 1].ws == 0 && plans[j2 + 1].known_zero &&
			       cow_is_zero(q, &plans[j2 + 1]))
				j2++;
			uint64_t hs = p->host + p->ws;
			uint64_t l = plans[j2].goff + plans[j2].we - (p->goff + p->ws);
			r = host_io(q, true, iov, cnt, sk, hs, l);
			if (r < 0)
				cp_error_prefix(r, "%s: writing data at 0x%" PRIx64,
						q->name, hs);
			j = j2;
		} else {
			r = write_cluster_data(q, p, iov, cnt, sk);
		}
	}
	qc_gp_exit(q, e);
	written = plans[k - 1].goff + plans[k - 1].we - off;

	pthread_mutex_lock(&q->lock);
	if (r >= 0) {
		r = qc_l2_lookup_locked(q, off, true, &slice, &idx);
	}
	if (r >= 0) {
		for (unsigned j = 0; j < k; j++) {
			struct wplan *p = &plans[j];
			uint32_t i = idx + (uint32_t)((p->goff - c0) >> q->cluster_bits);
			uint64_t ne = p->host | QC_OFLAG_COPIED, nbm = 0;
			if (q->extl2) {
				uint64_t bm = qc_l2_bitmap(q, slice, i);
				if (p->full_cow) {
					nbm = 0xffffffffull;
				} else {
					unsigned a = (unsigned)(p->ws / q->subcluster_size);
					unsigned b = (unsigned)((p->we - 1) / q->subcluster_size);
					uint64_t mask = (b == 31 ? 0xffffffffull
								 : ((1ull << (b + 1)) - 1)) &
							~((1ull << a) - 1);
					nbm = (bm | mask) & ~(mask << 32);
				}
			}
			qc_l2_set(q, slice, i, ne, nbm);
			if (p->fresh) {
				uint64_t fo, fl;
				qc_entry_host_range(q, p->old_e, &fo, &fl);
				if (fl && r >= 0)
					r = qc_free_later_locked(q, fo, fl);
			}
		}
		q->barrier_needed = true;
		qc_cache_put(&q->l2c, slice);
		slice = NULL;
	} else if (plans[0].fresh) {
		/* nothing references the new clusters: give them back */
		int r2 = qc_refcount_update_locked(q, plans[0].host, k * cs, -1);
		(void)r2;
	}
	inflight_del(q, &inf);
unlock:
	if (slice)
		qc_cache_put(&q->l2c, slice);
	pthread_mutex_unlock(&q->lock);
	return r < 0 ? r : (int64_t)written;
}

int qc_writev(struct qcow *q, const struct iovec *iov, int cnt, uint64_t off,
	      uint64_t len)
{
	uint64_t done = 0;
	while (done < len) {
		struct qc_map m;
		unsigned e = 0;
		pthread_mutex_lock(&q->lock);
		if (q->readonly) {
			pthread_mutex_unlock(&q->lock);
			return cp_error(-EROFS, "%s: image is read-only%s", q->name,
					q->corrupt ? " (marked corrupt)" : "");
		}
		int r = qc_map_locked(q, off + done, len - done, &m);
		bool inplace = r >= 0 && m.type == QC_NORMAL && m.copied;
		if (inplace)
			r = qc_overlap_fast_locked(q, m.host, m.bytes);
		if (inplace && r >= 0)
			e = qc_gp_enter_locked(q);
		pthread_mutex_unlock(&q->lock);
		if (r < 0)
			return r;
		if (inplace) {
			r = host_io(q, true, iov, cnt, done, m.host, m.bytes);
			qc_gp_exit(q, e);
			if (r < 0)
				return cp_error_prefix(r, "%s: writing data at 0x%" PRIx64,
						       q->name, m.host);
			done += m.bytes;
			continue;
		}
		int64_t n = write_alloc_step(q, iov, cnt, done, off + done, len - done);
		if (n < 0)
			return (int)n;
		done += (uint64_t)n; /* 0: became writable in place, loop again */
	}
	return 0;
}

/* --- zeroes and discard ------------------------------------------------------ */

static int write_zero_buf(struct qcow *q, uint64_t off, uint64_t len)
{
	void *z = calloc(1, len);
	if (!z)
		return -ENOMEM;
	struct iovec v = { z, len };
	int r = qc_writev(q, &v, 1, off, len);
	free(z);
	return r;
}

/* Change whole clusters [s, e) to zero (discard=false) or deallocate them
 * (discard=true). */
static int zero_clusters(struct qcow *q, uint64_t s, uint64_t e, unsigned flags,
			 bool discard, bool dealloc)
{
	uint64_t cs = q->cluster_size;
	bool backing = q->img->backing != NULL;
	struct qc_inflight inf;
	int r = 0;
	pthread_mutex_lock(&q->lock);
	while (inflight_conflict(q, s, e))
		pthread_cond_wait(&q->inflight_cond, &q->lock);
	inflight_add(q, &inf, s, e);
	for (uint64_t g = s; g < e && r >= 0;) {
		void *slice;
		uint32_t idx;
		r = qc_l2_lookup_locked(q, g, !dealloc && (!discard || backing), &slice, &idx);
		if (r < 0)
			break;
		uint64_t slice_span = (uint64_t)q->slice_entries << q->cluster_bits;
		uint64_t lim = CP_MIN(e, CP_ALIGN_DOWN(g, slice_span) + slice_span);
		if (!slice) {
			/* no L2 table: already unallocated */
			uint64_t span = (uint64_t)cs << q->l2_bits;
			g = CP_MIN(e, CP_ALIGN_DOWN(g, span) + span);
			continue;
		}
		uint64_t g0 = g;
		for (; g < lim && r >= 0; g += cs) {
			uint32_t i = idx + (uint32_t)((g - g0) >> q->cluster_bits);
			uint64_t old = qc_l2_entry(q, slice, i);
			uint64_t oldbm = qc_l2_bitmap(q, slice, i);
			uint64_t hc = old & QC_L2E_OFFSET_MASK;
			bool keep_host = false;
			uint64_t ne, nbm = 0;
			if (dealloc) {
				ne = 0;
			} else if (discard) {
				if (q->version >= 3 && backing) {
					ne = q->extl2 ? 0 : QC_OFLAG_ZERO;
					nbm = q->extl2 ? 0xffffffff00000000ull : 0;
				} else {
					ne = 0;
				}
			} else if (q->version < 3) {
				ne = 0; /* no backing (else zeroes were written) */
			} else {
				bool inplace_ok = hc && (old & QC_OFLAG_COPIED) &&
						  !(old & QC_OFLAG_COMPRESSED);
				if (inplace_ok && !(flags & CP_ZERO_MAY_UNMAP)) {
					keep_host = true;
					ne = q->extl2 ? (hc | QC_OFLAG_COPIED)
						      : (hc | QC_OFLAG_COPIED | QC_OFLAG_ZERO);
				} else {
					ne = q->extl2 ? 0 : QC_OFLAG_ZERO;
				}
				nbm = q->extl2 ? 0xffffffff00000000ull : 0;
			}
			if (ne == old && nbm == oldbm)
				continue;
			qc_l2_set(q, slice, i, ne, nbm);
			if (!keep_host) {
				uint64_t fo, fl;
				qc_entry_host_range(q, old, &fo, &fl);
				if (fl)
					r = qc_free_later_locked(q, fo, fl);
			}
		}
		qc_cache_put(&q->l2c, slice);
	}
	inflight_del(q, &inf);
	pthread_mutex_unlock(&q->lock);
	return r;
}

int qc_zero(struct qcow *q, uint64_t off, uint64_t len, unsigned flags,
	    bool discard)
{
	uint64_t cs = q->cluster_size;
	if (q->readonly)
		return cp_error(-EROFS, "%s: image is read-only", q->name);
	uint64_t s = CP_ALIGN_UP(off, cs), e = CP_ALIGN_DOWN(off + len, cs);
	/* the disk's last cluster may be partial: treat its end as aligned */
	if (off + len == q->size)
		e = CP_ALIGN_UP(off + len, cs);
	if (s >= e) {
		s = e = off; /* no whole cluster */
	}
	int r = 0;
	bool v2_backing = q->version < 3 && q->img->backing && !discard;
	if (v2_backing) {
		/* no zero flag in version 2: write real zeroes */
		for (uint64_t o = off; o < off + len && r >= 0;) {
			uint64_t l = CP_MIN(off + len - o, 1u << 20);
			r = write_zero_buf(q, o, l);
			o += l;
		}
		return r;
	}
	if (!discard) {
		if (off < s)
			r = write_zero_buf(q, off, CP_MIN(s, off + len) - off);
		if (r >= 0 && e < off + len && e >= s)
			r = write_zero_buf(q, CP_MAX(e, off), off + len - CP_MAX(e, off));
	}
	if (r >= 0 && s < e)
		r = zero_clusters(q, s, e, flags, discard, false);
	return r;
}

/* --- preallocation and resize ------------------------------------------------ */

int qc_preallocate(struct qcow *q, uint64_t from, uint64_t to,
		   enum cp_prealloc pre)
{
	uint64_t cs = q->cluster_size;
	int r = 0;
	if (pre == CP_PREALLOC_OFF || from >= to)
		return 0;
	uint64_t g = CP_ALIGN_DOWN(from, cs), end = CP_ALIGN_UP(to, cs);
	pthread_mutex_lock(&q->lock);
	r = set_dirty_locked(q);
	while (g < end && r >= 0) {
		void *slice;
		uint32_t idx;
		r = qc_l2_lookup_locked(q, g, true, &slice, &idx);
		if (r < 0)
			break;
		uint64_t slice_span = (uint64_t)q->slice_entries << q->cluster_bits;
		uint64_t lim = CP_MIN(end, CP_ALIGN_DOWN(g, slice_span) + slice_span);
		uint64_t g0 = g;
		while (g < lim && r >= 0) {
			uint32_t i = idx + (uint32_t)((g - g0) >> q->cluster_bits);
			if (qc_l2_entry(q, slice, i) != 0 || qc_l2_bitmap(q, slice, i) != 0) {
				g += cs;
				continue;
			}
			uint64_t k = 1;
			while (g + k * cs < lim && k < qc_max_alloc(q) &&
			       qc_l2_entry(q, slice, i + (uint32_t)k) == 0 &&
			       qc_l2_bitmap(q, slice, i + (uint32_t)k) == 0)
				k++;
			uint64_t h;
			r = qc_alloc_clusters_locked(q, k, &h);
			if (r < 0)
				break;
			bool kz = h >= q->known_zero_from;
			if (kz)
				q->known_zero_from = h + k * cs;
			if (pre == CP_PREALLOC_FALLOC || pre == CP_PREALLOC_FULL) {
				r = cp_bdev_preallocate(q->dev, h, k * cs, pre);
				if (r < 0)
					break;
				if (pre == CP_PREALLOC_FULL)
					kz = true;
			}
			for (uint64_t j = 0; j < k; j++) {
				uint64_t ne = (h + j * cs) | QC_OFLAG_COPIED;
				uint64_t bm = q->extl2 ? 0xffffffffull : 0;
				if (!kz) {
					/* reused space: make it read as zeroes */
					if (q->extl2)
						bm = 0xffffffff00000000ull;
					else if (q->version >= 3)
						ne |= QC_OFLAG_ZERO;
				}
				qc_l2_set(q, slice, i + (uint32_t)j, ne, bm);
			}
			if (!kz && q->version < 3) {
				r = cp_bdev_write_zeroes(q->dev, h, k * cs, 0);
				if (r < 0)
					break;
			}
			q->barrier_needed = true;
			g += k * cs;
		}
		qc_cache_put(&q->l2c, slice);
		g = CP_MAX(g, lim);
	}
	if (r >= 0 && !cp_bdev_is_blockdev(q->dev) &&
	    cp_bdev_size(q->dev) < q->host_end)
		r = cp_bdev_truncate(q->dev, q->host_end);
	if (r >= 0)
		r = qc_flush_locked(q);
	pthread_mutex_unlock(&q->lock);
	return r;
}

int qc_resize(struct qcow *q, uint64_t new_size, enum cp_prealloc pre)
{
	uint64_t cs = q->cluster_size;
	if (q->readonly)
		return cp_error(-EROFS, "%s: image is read-only", q->name);
	if (new_size > QC_MAX_SIZE)
		return cp_error(-EFBIG, "%s: size %" PRIu64 " is too large", q->name,
				new_size);
	uint64_t old_size = q->size;
	if (new_size < old_size) {
		/* as qemu-img resize --shrink: clusters past the new end go */
		uint64_t s = CP_ALIGN_UP(new_size, cs), e = CP_ALIGN_UP(old_size, cs);
		int r = s < e ? qc_dealloc(q, s, e) : 0;
		pthread_mutex_lock(&q->lock);
		if (r >= 0)
			r = qc_flush_locked(q);
		if (r >= 0) {
			q->size = new_size;
			r = qc_header_update_locked(q);
			if (r >= 0)
				r = cp_bdev_flush(q->dev);
			if (r < 0)
				q->size = old_size;
		}
		pthread_mutex_unlock(&q->lock);
		return r;
	}
	pthread_mutex_lock(&q->lock);
	int r = qc_flush_locked(q);
	uint64_t need = CP_DIV_ROUND_UP(new_size, (uint64_t)cs << q->l2_bits);
	if (r >= 0 && need * 8 > QC_MAX_L1_BYTES)
		r = cp_error(-EFBIG, "%s: size %" PRIu64 " needs an L1 table over %u bytes",
			     q->name, new_size, QC_MAX_L1_BYTES);
	if (r >= 0 && need > q->l1_size) {
		uint64_t bytes = CP_ALIGN_UP(need * 8, cs), noff;
		uint64_t *nl1 = cp_bdev_alloc_buf(bytes + 8);
		uint8_t *disk = cp_bdev_alloc_buf(bytes);
		if (!nl1 || !disk) {
			r = -ENOMEM;
		} else {
			memset(nl1, 0, bytes + 8);
			memcpy(nl1, q->l1, (size_t)q->l1_size * 8);
			for (uint64_t i = 0; i < bytes / 8; i++)
				cp_put_be64(disk + 8 * i, i < need ? nl1[i] : 0);
			r = qc_alloc_clusters_locked(q, bytes / cs, &noff);
			if (r >= 0) {
				r = cp_bdev_pwrite(q->dev, disk, bytes, noff);
				if (r >= 0 && !q->lazy)
					r = qc_cache_writeback(q, &q->rbc);
				if (r >= 0)
					r = cp_bdev_flush(q->dev);
			}
			if (r >= 0) {
				uint64_t old_off = q->l1_table_offset;
				uint64_t old_bytes = CP_ALIGN_UP((uint64_t)q->l1_size * 8, cs);
				uint64_t *old_l1 = q->l1;
				uint32_t old_n = q->l1_size;
				q->l1 = nl1;
				q->l1_size = (uint32_t)need;
				q->l1_table_offset = noff;
				q->size = new_size;
				r = qc_header_update_locked(q);
				if (r >= 0)
					r = cp_bdev_flush(q->dev);
				if (r < 0) {
					q->l1 = old_l1;
					q->l1_size = old_n;
					q->l1_table_offset = old_off;
					q->size = old_size;
				} else {
					nl1 = old_l1;
					if (old_n)
						r = qc_refcount_update_locked(q, old_off, old_bytes, -1);
					if (r >= 0)
						r = qc_flush_locked(q);
				}
			}
		}
		cp_bdev_free_buf(nl1);
		cp_bdev_free_buf(disk);
	} else if (r >= 0) {
		q->size = new_size;
		r = qc_header_update_locked(q);
		if (r >= 0)
			r = cp_bdev_flush(q->dev);
		if (r < 0)
			q->size = old_size;
	}
	pthread_mutex_unlock(&q->lock);
	if (r >= 0)
		r = qc_preallocate(q, old_size, new_size, pre);
	return r;
}

int qc_block_status(struct qcow *q, uint64_t off, uint64_t len, struct qc_map *m)
{
	pthread_mutex_lock(&q->lock);
	int r = qc_map_locked(q, off, len, m);
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* --- open and close ------------------------------------------------------------ */

static void qc_free(struct qcow *q)
{
	if (q->own_mdev)
		cp_bdev_close(q->dev);
	qc_cache_destroy(&q->l2c);
	qc_cache_destroy(&q->rbc);
	cp_bdev_free_buf(q->l1);
	cp_bdev_free_buf(q->reftable);
	for (size_t i = 0; i < q->exts.len; i++)
		free(q->exts.ptr[i].data);
	qc_ext_vec_reset(&q->exts);
	qc_free_vec_reset(&q->pending_free);
	free(q->backing_file);
	free(q->backing_format);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->inflight_cond);
	pthread_mutex_destroy(&q->gp_lock);
	pthread_cond_destroy(&q->gp_cond);
	free(q);
}

int qc_open(cp_image *img, struct qcow **out, const struct cp_open_opts *o)
{
	struct qcow *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->img = img;
	q->meta_prealloc = -1;
	q->dev = q->ddev = img->dev;
	if (img->own_dev) {
		struct cp_bdev_opts bo;
		cp_bdev_opts_init(&bo);
		bo.readonly = cp_bdev_readonly(img->dev);
		bo.aio = cp_bdev_aio(img->dev);
		bo.cache = cp_bdev_cache(img->dev);
		bo.queue_depth = 32;
		if (cp_bdev_open(img->filename, &bo, &q->dev) == 0)
			q->own_mdev = true;
		else
			q->dev = img->dev; /* works, minus the async fast paths */
		cp_clear_error();
	}
	q->name = img->filename;
	q->readonly = img->readonly;
	q->for_check = o->for_check;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->inflight_cond, NULL);
	pthread_mutex_init(&q->gp_lock, NULL);
	pthread_cond_init(&q->gp_cond, NULL);
	int r = qc_header_read(q);
	if (r < 0)
		goto fail;
	if (q->corrupt && !q->readonly && !o->for_check) {
		r = cp_error(-EROFS, "%s: image is marked corrupt; it cannot be opened read-write (repair it with 'cowpool check -r all')",
			     q->name);
		goto fail;
	}
	if (q->nb_snapshots && !q->readonly && !o->for_check) {
		r = cp_error(-ENOTSUP, "%s: image has %u internal snapshot(s); cowpool opens such images read-only",
			     q->name, q->nb_snapshots);
		goto fail;
	}
	uint32_t slice = o->l2_cache_entry_size ? o->l2_cache_entry_size : 4096;
	if (!cp_is_pow2(slice) || slice < 512) {
		r = cp_error(-EINVAL, "%s: L2 cache entry size %u must be a power of two >= 512",
			     q->name, slice);
		goto fail;
	}
	if (slice > q->cluster_size)
		slice = q->cluster_size;
	q->slice_size = slice;
	q->slice_entries = slice / q->l2_entry_size;
	uint64_t l2bytes = o->l2_cache_size;
	if (!l2bytes) {
		uint64_t need = CP_DIV_ROUND_UP(q->size, q->cluster_size) * q->l2_entry_size;
		l2bytes = CP_MIN(need, 32ull << 20);
	}
	uint64_t l2n = CP_MAX(4, CP_DIV_ROUND_UP(l2bytes, slice));
	uint64_t rcbytes = o->refcount_cache_size ? o->refcount_cache_size : (1u << 20);
	uint64_t rcn = CP_MAX(4, rcbytes / q->cluster_size);
	r = qc_cache_init(&q->l2c, "L2", (unsigned)CP_MIN(l2n, 1u << 20), slice);
	if (r >= 0)
		r = qc_cache_init(&q->rbc, "refcount", (unsigned)CP_MIN(rcn, 1u << 16),
				  q->cluster_size);
	if (r < 0)
		goto fail;
	uint64_t fs = cp_bdev_size(q->dev);
	q->host_end = fs;
	q->file_end = fs;
	q->open_end = CP_ALIGN_UP(fs, q->cluster_size);
	q->alloc_end = CP_ALIGN_UP(fs, q->cluster_size);
	q->grow_ahead = q->own_mdev && !q->readonly && !cp_bdev_is_blockdev(q->dev);
	q->known_zero_from = cp_bdev_is_blockdev(q->dev)
				     ? UINT64_MAX
				     : CP_ALIGN_UP(fs, q->cluster_size);
	*out = q;
	img->q = q;
	if (!q->readonly) {
		pthread_mutex_lock(&q->lock);
		if (q->autoclear && !o->for_check) {
			/* we do not maintain what these bits vouch for */
			q->autoclear = 0;
			r = qc_header_update_locked(q);
			if (r >= 0)
				r = cp_bdev_flush(q->dev);
		}
		pthread_mutex_unlock(&q->lock);
		if (r < 0)
			goto fail;
		if ((q->incompat & QC_INCOMPAT_DIRTY) && !o->for_check) {
			struct cp_check_result res;
			r = qc_check(q, CP_CHECK_REPAIR_ALL, &res, NULL, NULL);
			if (r >= 0 && (res.corruptions || (q->incompat & QC_INCOMPAT_DIRTY)))
				r = cp_error(-EUCLEAN, "%s: repairing the refcounts of a dirty image failed (%" PRIu64 " corruptions left)",
					     q->name, res.corruptions);
			if (r < 0)
				goto fail;
		}
		q->dirty_set = (q->incompat & QC_INCOMPAT_DIRTY) != 0;
	}
	return 0;
fail:
	img->q = NULL;
	*out = NULL;
	qc_free(q);
	return r;
}

int qc_close(struct qcow *q)
{
	int r = 0;
	if (!q)
		return 0;
	if (!q->readonly) {
		pthread_mutex_lock(&q->lock);
		r = qc_flush_locked(q);
		if (r >= 0 && q->lazy) {
			r = qc_cache_writeback(q, &q->rbc);
			if (r >= 0)
				r = cp_bdev_flush(q->dev);
		}
		if (r >= 0 && q->dirty_set)
			r = qc_header_set_incompat_locked(q, 0, QC_INCOMPAT_DIRTY);
		/* give back what grew ahead of the last allocated cluster */
		if (r >= 0 && q->grow_ahead && q->file_end > q->alloc_end &&
		    cp_bdev_size(q->dev) == q->file_end) {
			if (cp_bdev_truncate(q->dev, q->alloc_end) < 0)
				cp_clear_error();
		}
		pthread_mutex_unlock(&q->lock);
	}
	qc_free(q);
	return r;
}

int qc_dealloc(struct qcow *q, uint64_t s, uint64_t e)
{
	return zero_clusters(q, s, e, 0, true, true);
}

int qc_make_empty(struct qcow *q)
{
	if (q->readonly)
		return cp_error(-EROFS, "%s: image is read-only", q->name);
	int r = zero_clusters(q, 0, CP_ALIGN_UP(q->size, q->cluster_size), 0, true,
			      true);
	if (r >= 0)
		r = qc_flush(q);
	return r;
}

/* --- compressed clusters ---------------------------------------------------------- */

/* One compression context per thread, kept for the thread's life:
 * creating a zstd or deflate context per cluster costs more than
 * compressing the cluster. */
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;
struct tl_ctx {
	z_stream *zs;
#if CP_HAVE_ZSTD
	ZSTD_CCtx *zc;
#endif
};

static void tl_free(void *p)
{
	struct tl_ctx *t = p;
	if (t->zs) {
		deflateEnd(t->zs);
		free(t->zs);
	}
#if CP_HAVE_ZSTD
	ZSTD_freeCCtx(t->zc);
#endif
	free(t);
}

static void tl_make_key(void)
{
	pthread_key_create(&tl_key, tl_free);
}

static struct tl_ctx *tl_get(void)
{
	pthread_once(&tl_once, tl_make_key);
	struct tl_ctx *t = pthread_getspecific(tl_key);
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (t)
			pthread_setspecific(tl_key, t);
	}
	return t;
}

static long deflate_zlib(const uint8_t *in, size_t inlen, uint8_t *out,
			 size_t outlen)
{
	struct tl_ctx *t = tl_get();
	if (!t)
		return -ENOMEM;
	if (!t->zs) {
		t->zs = calloc(1, sizeof(z_stream));
		if (!t->zs)
			return -ENOMEM;
		if (deflateInit2(t->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
				 Z_DEFAULT_STRATEGY) != Z_OK) {
			free(t->zs);
			t->zs = NULL;
			return -ENOMEM;
		}
	} else if (deflateReset(t->zs) != Z_OK) {
		return -ENOMEM;
	}
	z_stream *s = t->zs;
	s->next_in = (Bytef *)(uintptr_t)in;
	s->avail_in = (uInt)inlen;
	s->next_out = out;
	s->avail_out = (uInt)outlen;
	int ret = deflate(s, Z_FINISH);
	return ret == Z_STREAM_END ? (long)(outlen - s->avail_out) : -ENOSPC;
}

#if CP_HAVE_ZSTD
static long deflate_zstd(const uint8_t *in, size_t inlen, uint8_t *out,
			 size_t outlen)
{
	/* one frame, as QEMU's reader expects (the frame may be followed
	 * by padding up to the sector end) */
	struct tl_ctx *t = tl_get();
	if (!t)
		return -ENOMEM;
	if (!t->zc && !(t->zc = ZSTD_createCCtx()))
		return -ENOMEM;
	size_t z = ZSTD_compressCCtx(t->zc, out, outlen, in, inlen, ZSTD_CLEVEL_DEFAULT);
	if (ZSTD_isError(z))
		return -ENOSPC;
	return (long)z;
}
#endif

long qc_compress(struct qcow *q, const void *buf, size_t len, void *outbuf)
{
	uint64_t cs = q->cluster_size;
	uint8_t *in = malloc(cs);
	if (!in)
		return -ENOMEM;
	memcpy(in, buf, len);
	memset(in + len, 0, cs - len);
	long n;
	if (q->compression_type == QC_COMPRESSION_ZLIB)
		n = deflate_zlib(in, cs, outbuf, cs - 1);
#if CP_HAVE_ZSTD
	else
		n = deflate_zstd(in, cs, outbuf, cs - 1);
#else
	else
		n = -ENOTSUP;
#endif
	free(in);
	if (n == -ENOMEM || n == -ENOTSUP)
		return n;
	if (n < 0 || (uint64_t)n >= cs - 512)
		return 0; /* does not compress: store it plainly */
	return n;
}

int qc_write_compressed(struct qcow *q, const void *buf, size_t len, uint64_t off)
{
	uint64_t cs = q->cluster_size;
	if (off % cs || len > cs || off >= q->size)
		return cp_error(-EINVAL, "%s: compressed writes take whole clusters (offset %" PRIu64 ")",
				q->name, off);
	uint8_t *out = cp_bdev_alloc_buf(cs + 512);
	if (!out)
		return -ENOMEM;
	long n = qc_compress(q, buf, len, out);
	int r;
	if (n < 0)
		r = (int)n;
	else if (n == 0) {
		struct iovec v = { (void *)buf, len };
		r = qc_writev(q, &v, 1, off, CP_MIN(len, q->size - off));
	} else {
		r = qc_store_compressed(q, out, (size_t)n, off);
	}
	cp_bdev_free_buf(out);
	return r;
}

int qc_store_compressed(struct qcow *q, const void *data, size_t dlen, uint64_t off)
{
	uint64_t cs = q->cluster_size;
	long n = (long)dlen;
	int r = 0;
	if (off % cs || dlen == 0 || dlen >= cs - 512 || off >= q->size)
		return cp_error(-EINVAL, "%s: invalid compressed cluster (offset %" PRIu64 ", %zu bytes)",
				q->name, off, dlen);
	uint8_t *out = cp_bdev_alloc_buf(CP_ALIGN_UP(dlen, 512));
	if (!out)
		return -ENOMEM;
	memcpy(out, data, dlen);
	struct qc_inflight inf;
	void *slice = NULL;
	uint32_t idx;
	pthread_mutex_lock(&q->lock);
	while (inflight_conflict(q, off, off + cs))
		pthread_cond_wait(&q->inflight_cond, &q->lock);
	r = set_dirty_locked(q);
	if (r >= 0)
		r = qc_l2_lookup_locked(q, off, true, &slice, &idx);
	if (r < 0)
		goto unlock;
	uint64_t old = qc_l2_entry(q, slice, idx);
	if ((old & QC_L2E_OFFSET_MASK) || (old & QC_OFLAG_COMPRESSED) ||
	    qc_l2_bitmap(q, slice, idx) & 0xffffffffull) {
		r = cp_error(-EEXIST, "%s: compressed write into the allocated cluster at %" PRIu64,
			     q->name, off);
		goto unlock;
	}
	/* bytes: continue in the current partial cluster when it fits;
	 * pieces start on a 512-byte boundary so no two share a sector */
	uint64_t coff = q->comp_off;
	if (coff && coff % cs && (coff % cs) + (uint64_t)n <= cs) {
		/* fits in the current cluster */
		r = qc_refcount_update_locked(q, CP_ALIGN_DOWN(coff, cs), cs, 1);
		if (r < 0)
			goto unlock;
	} else {
		uint64_t h;
		r = qc_alloc_clusters_locked(q, 1, &h);
		if (r < 0)
			goto unlock;
		if (h >= q->known_zero_from)
			q->known_zero_from = h + cs;
		if (coff && coff % cs && h == CP_ALIGN_UP(coff, cs)) {
			/* the next cluster is contiguous: span into it, as
			 * qemu packs compressed data */
			r = qc_refcount_update_locked(q, CP_ALIGN_DOWN(coff, cs), cs, 1);
			if (r < 0)
				goto unlock;
		} else {
			coff = h;
		}
	}
	q->comp_off = CP_ALIGN_UP(coff + (uint64_t)n, 512);
	if (q->comp_off % cs == 0)
		q->comp_off = 0;
	inflight_add(q, &inf, off, off + cs);
	qc_cache_put(&q->l2c, slice);
	slice = NULL;
	pthread_mutex_unlock(&q->lock);

	size_t wlen = CP_ALIGN_UP((size_t)n, 512);
	memset(out + n, 0, wlen - (size_t)n);
	r = cp_bdev_pwrite(q->ddev, out, wlen, coff);
	if (r < 0)
		cp_error_prefix(r, "%s: writing compressed data", q->name);

	pthread_mutex_lock(&q->lock);
	if (r >= 0)
		r = qc_l2_lookup_locked(q, off, true, &slice, &idx);
	if (r >= 0) {
		unsigned x = 62 - (q->cluster_bits - 8);
		uint64_t nsec = ((coff + (uint64_t)n - 1) >> 9) - (coff >> 9);
		uint64_t e = QC_OFLAG_COMPRESSED | (nsec << x) | coff;
		qc_l2_set(q, slice, idx, e, 0);
		uint64_t fo, fl;
		qc_entry_host_range(q, old, &fo, &fl);
		if (fl)
			r = qc_free_later_locked(q, fo, fl);
		q->barrier_needed = true;
	}
	inflight_del(q, &inf);
unlock:
	if (slice)
		qc_cache_put(&q->l2c, slice);
	pthread_mutex_unlock(&q->lock);
	cp_bdev_free_buf(out);
	return r;
}

/* --- asynchronous allocating writes ------------------------------------------------ */

struct afast {
	struct qcow *q;
	void *slice;
	uint32_t idx;
	uint64_t c0, off, len, host;
	unsigned k;
	bool fresh;
	unsigned epoch;
	struct qc_inflight inf;
	cp_io_cb cb;
	void *opaque;
};

static unsigned pinned_slices(const struct qc_cache *c)
{
	unsigned n = 0;
	for (unsigned i = 0; i < c->n; i++)
		n += c->e[i].pins > 0;
	return n;
}

static uint64_t sub_mask(const struct qcow *q, uint64_t ws, uint64_t we)
{
	unsigned a = (unsigned)(ws / q->subcluster_size);
	unsigned b = (unsigned)((we - 1) / q->subcluster_size);
	return (b == 31 ? 0xffffffffull : ((1ull << (b + 1)) - 1)) & ~((1ull << a) - 1);
}

static void afast_cpl(void *opaque, int ret)
{
	struct afast *a = opaque;
	struct qcow *q = a->q;
	uint64_t cs = q->cluster_size;
	qc_gp_exit(q, a->epoch);
	pthread_mutex_lock(&q->lock);
	if (ret >= 0) {
		for (unsigned j = 0; j < a->k; j++) {
			uint32_t i = a->idx + j;
			uint64_t g = a->c0 + (uint64_t)j * cs;
			uint64_t host = a->fresh ? a->host + (uint64_t)j * cs
						 : (qc_l2_entry(q, a->slice, i) & QC_L2E_OFFSET_MASK);
			uint64_t bm = 0;
			if (q->extl2) {
				uint64_t ws = CP_MAX(a->off, g) - g;
				uint64_t we = CP_MIN(a->off + a->len, g + cs) - g;
				uint64_t m = sub_mask(q, ws, we);
				bm = (qc_l2_bitmap(q, a->slice, i) | m) & ~(m << 32);
			}
			qc_l2_set(q, a->slice, i, host | QC_OFLAG_COPIED, bm);
		}
		q->barrier_needed = true;
	}
	/* on error fresh clusters stay allocated but unreferenced: a leak,
	 * which check -r leaks repairs; no metadata I/O may happen here */
	qc_cache_put(&q->l2c, a->slice);
	inflight_del(q, &a->inf);
	pthread_mutex_unlock(&q->lock);
	a->cb(a->opaque, ret);
	free(a);
}

int qc_write_async_fast(struct qcow *q, const struct iovec *iov, int cnt,
			uint64_t off, uint64_t len, cp_io_cb cb, void *opaque)
{
	uint64_t cs = q->cluster_size;
	uint64_t c0 = CP_ALIGN_DOWN(off, cs), cend = CP_ALIGN_UP(off + len, cs);
	uint64_t k = (cend - c0) / cs;
	uint64_t slice_span = (uint64_t)q->slice_entries << q->cluster_bits;
	if (q->dev == q->ddev || !len || k > CP_MIN(64, qc_max_alloc(q)) ||
	    c0 / slice_span != (cend - 1) / slice_span)
		return -EAGAIN;
	bool backing = q->img->backing != NULL;
	pthread_mutex_lock(&q->lock);
	int r = -EAGAIN;
	void *slice = NULL;
	uint32_t idx = 0;
	uint64_t l1i = off >> (q->cluster_bits + q->l2_bits);
	if (q->readonly || (q->lazy && !q->dirty_set) || l1i >= q->l1_size ||
	    !(q->l1[l1i] & QC_L1E_OFFSET_MASK) || !(q->l1[l1i] & QC_OFLAG_COPIED) ||
	    inflight_conflict(q, c0, cend) || pinned_slices(&q->l2c) + 4 >= q->l2c.n)
		goto unlock;
	r = qc_l2_lookup_locked(q, off, false, &slice, &idx);
	if (r < 0 || !slice) {
		r = r < 0 ? r : -EAGAIN;
		goto unlock;
	}
	r = -EAGAIN;
	bool fresh = true;
	uint64_t existing = 0;
	if (q->extl2) {
		if (off % q->subcluster_size || len % q->subcluster_size)
			goto unlock;
		for (unsigned j = 0; j < k; j++) {
			uint64_t e = qc_l2_entry(q, slice, idx + j);
			if (e & QC_OFLAG_COMPRESSED)
				goto unlock;
			uint64_t h = e & QC_L2E_OFFSET_MASK;
			if (h && (!(e & QC_OFLAG_COPIED) || k > 1))
				goto unlock;
			if (h) {
				fresh = false;
				existing = h;
			}
		}
	} else {
		for (unsigned j = 0; j < k; j++) {
			uint64_t e = qc_l2_entry(q, slice, idx + j);
			bool zero = q->version >= 3 && e == QC_OFLAG_ZERO;
			if (e != 0 && !zero)
				goto unlock;
			uint64_t g = c0 + (uint64_t)j * cs;
			bool partial = off > g || off + len < g + cs;
			/* nothing to copy: zeroes below, and a cluster that
			 * reads as zeroes already */
			if (partial && ((backing && !zero) ||
					q->free_cluster_index * cs < q->known_zero_from))
				goto unlock;
		}
	}
	struct afast *a = calloc(1, sizeof(*a));
	if (!a) {
		r = -ENOMEM;
		goto unlock;
	}
	uint64_t host = existing;
	if (!fresh) {
		r = qc_overlap_fast_locked(q, host + (off - c0), len);
		if (r < 0) {
			free(a);
			goto unlock;
		}
	}
	if (fresh) {
		r = qc_alloc_clusters_locked(q, k, &host);
		if (r < 0) {
			free(a);
			goto unlock;
		}
		bool kz = host >= q->known_zero_from;
		if (kz)
			q->known_zero_from = host + k * cs;
		if (!kz && !q->extl2 && (off > c0 || off + len < cend)) {
			/* cannot happen given the free index test; stay safe */
			qc_refcount_update_locked(q, host, k * cs, -1);
			free(a);
			r = -EAGAIN;
			goto unlock;
		}
	}
	a->q = q;
	a->slice = slice;
	a->idx = idx;
	a->c0 = c0;
	a->off = off;
	a->len = len;
	a->host = host;
	a->k = (unsigned)k;
	a->fresh = fresh;
	a->cb = cb;
	a->opaque = opaque;
	inflight_add(q, &a->inf, c0, cend);
	a->epoch = qc_gp_enter_locked(q);
	pthread_mutex_unlock(&q->lock);
	r = cp_bdev_pwritev_async(q->ddev, iov, cnt, host + (off - c0), afast_cpl, a);
	if (r < 0) {
		qc_gp_exit(q, a->epoch);
		pthread_mutex_lock(&q->lock);
		qc_cache_put(&q->l2c, slice);
		inflight_del(q, &a->inf);
		pthread_mutex_unlock(&q->lock);
		free(a);
	}
	return r;
unlock:
	if (slice)
		qc_cache_put(&q->l2c, slice);
	pthread_mutex_unlock(&q->lock);
	return r;
}

int qc_store_compressed_batch(struct qcow *q, const struct qc_cpiece *pc,
			      unsigned k)
{
	uint64_t cs = q->cluster_size;
	if (!k)
		return 0;
	uint64_t total = 0, gmin = UINT64_MAX, gmax = 0;
	for (unsigned i = 0; i < k; i++) {
		if (pc[i].off % cs || !pc[i].len || pc[i].len >= cs - 512 ||
		    pc[i].off >= q->size)
			return cp_error(-EINVAL, "%s: invalid compressed cluster (offset %" PRIu64 ")",
					q->name, pc[i].off);
		total += CP_ALIGN_UP(pc[i].len, 512);
		gmin = CP_MIN(gmin, pc[i].off);
		gmax = CP_MAX(gmax, pc[i].off + cs);
	}
	uint64_t m = CP_DIV_ROUND_UP(total, cs);
	if (m > qc_max_alloc(q)) {
		/* too big for one run: store them one by one */
		for (unsigned i = 0; i < k; i++) {
			int r = qc_store_compressed(q, pc[i].data, pc[i].len, pc[i].off);
			if (r < 0)
				return r;
		}
		return 0;
	}
	uint8_t *buf = cp_bdev_alloc_buf(m * cs);
	if (!buf)
		return -ENOMEM;
	memset(buf, 0, m * cs);
	struct qc_inflight inf;
	uint64_t host = 0;
	int r;
	pthread_mutex_lock(&q->lock);
	while (inflight_conflict(q, gmin, gmax))
		pthread_cond_wait(&q->inflight_cond, &q->lock);
	r = set_dirty_locked(q);
	for (unsigned i = 0; i < k && r >= 0; i++) {
		void *slice;
		uint32_t idx;
		r = qc_l2_lookup_locked(q, pc[i].off, true, &slice, &idx);
		if (r < 0)
			break;
		uint64_t e = qc_l2_entry(q, slice, idx);
		if ((e & QC_L2E_OFFSET_MASK) || (e & QC_OFLAG_COMPRESSED) ||
		    (qc_l2_bitmap(q, slice, idx) & 0xffffffffull))
			r = cp_error(-EEXIST, "%s: compressed write into the allocated cluster at %" PRIu64,
				     q->name, pc[i].off);
		qc_cache_put(&q->l2c, slice);
	}
	if (r >= 0)
		r = qc_alloc_clusters_locked(q, m, &host);
	if (r >= 0) {
		if (host >= q->known_zero_from)
			q->known_zero_from = host + m * cs;
		/* each host cluster is referenced once per piece touching it */
		uint64_t p = 0;
		for (unsigned i = 0; i < k && r >= 0; i++) {
			uint64_t a = (host + p) / cs, b = (host + p + pc[i].len - 1) / cs;
			for (uint64_t c = a; c <= b && r >= 0; c++) {
				bool first = (p == 0 && c == a) ||
					     (c * cs >= host + p); /* first piece in c */
				if (!first)
					r = qc_refcount_update_locked(q, c * cs, cs, 1);
			}
			p += CP_ALIGN_UP(pc[i].len, 512);
		}
	}
	if (r >= 0)
		inflight_add(q, &inf, gmin, gmax);
	pthread_mutex_unlock(&q->lock);
	if (r < 0) {
		cp_bdev_free_buf(buf);
		return r;
	}
	uint64_t p = 0;
	for (unsigned i = 0; i < k; i++) {
		memcpy(buf + p, pc[i].data, pc[i].len);
		p += CP_ALIGN_UP(pc[i].len, 512);
	}
	r = cp_bdev_pwrite(q->ddev, buf, CP_ALIGN_UP(total, 512), host);
	if (r < 0)
		cp_error_prefix(r, "%s: writing compressed data", q->name);
	cp_bdev_free_buf(buf);
	pthread_mutex_lock(&q->lock);
	p = 0;
	unsigned x = 62 - (q->cluster_bits - 8);
	for (unsigned i = 0; i < k && r >= 0; i++) {
		void *slice;
		uint32_t idx;
		r = qc_l2_lookup_locked(q, pc[i].off, true, &slice, &idx);
		if (r < 0)
			break;
		uint64_t coff = host + p;
		uint64_t nsec = ((coff + pc[i].len - 1) >> 9) - (coff >> 9);
		qc_l2_set(q, slice, idx, QC_OFLAG_COMPRESSED | (nsec << x) | coff, 0);
		qc_cache_put(&q->l2c, slice);
		p += CP_ALIGN_UP(pc[i].len, 512);
	}
	q->barrier_needed = true;
	inflight_del(q, &inf);
	pthread_mutex_unlock(&q->lock);
	return r;
}
