/* qcow/io.c - reads, writes, zeroes, discard, preallocation, resize and
 * block status of qcow2 images, and the asynchronous fast write.
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

#include "config.h"

#define MAX_IOV 64

/* --- read ---------------------------------------------------------------- */

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
			r = q->read_backing(q, iov, cnt, done, off + done, m.bytes);
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
		return q->read_backing(q, &v, 1, 0, goff, len);
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
		if (!qc_inflight_conflict_locked(q, c0, cend))
			break;
		pthread_cond_wait(&q->inflight_cond, &q->lock);
	}
	r = qc_set_dirty_locked(q);
	if (r < 0)
		goto unlock;
	r = qc_l2_lookup_locked(q, off, QC_L2_ALLOC, &slice, &idx);
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
	qc_inflight_add_locked(q, &inf, c0, plans[k - 1].goff + cs);
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
		r = qc_l2_lookup_locked(q, off, QC_L2_ALLOC, &slice, &idx);
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
	qc_inflight_del_locked(q, &inf);
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
static int zero_clusters_locked(struct qcow *q, uint64_t s, uint64_t e,
				unsigned flags, bool discard, bool dealloc);

static int zero_clusters(struct qcow *q, uint64_t s, uint64_t e, unsigned flags,
			 bool discard, bool dealloc)
{
	struct qc_inflight inf;
	pthread_mutex_lock(&q->lock);
	qc_inflight_wait_locked(q, s, e);
	qc_inflight_add_locked(q, &inf, s, e);
	int r = zero_clusters_locked(q, s, e, flags, discard, dealloc);
	qc_inflight_del_locked(q, &inf);
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* zero_clusters() with q->lock held and [s, e) in flight */
static int zero_clusters_locked(struct qcow *q, uint64_t s, uint64_t e,
				unsigned flags, bool discard, bool dealloc)
{
	uint64_t cs = q->cluster_size;
	bool backing = q->img->backing != NULL;
	int r = 0;
	for (uint64_t g = s; g < e && r >= 0;) {
		void *slice;
		uint32_t idx;
		r = qc_l2_lookup_locked(q, g, !dealloc && (!discard || backing) ? QC_L2_ALLOC : QC_L2_WRITE,
					&slice, &idx);
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
	return r;
}

/* Extended L2: make the subclusters of [s, e) (subcluster aligned, within
 * one cluster) read as zeroes: zero bits set, allocation bits cleared, the
 * host cluster kept.  -ENOTSUP for a compressed cluster. */
static int zero_subclusters_locked(struct qcow *q, uint64_t s, uint64_t e)
{
	void *slice;
	uint32_t idx;
	int r = qc_l2_lookup_locked(q, s, true, &slice, &idx);
	if (r < 0)
		return r;
	uint64_t ent = qc_l2_entry(q, slice, idx);
	uint64_t bm = qc_l2_bitmap(q, slice, idx);
	if (ent & QC_OFLAG_COMPRESSED) {
		qc_cache_put(&q->l2c, slice);
		return -ENOTSUP;
	}
	unsigned a = (unsigned)((s & (q->cluster_size - 1)) / q->subcluster_size);
	unsigned b = (unsigned)(((e - 1) & (q->cluster_size - 1)) / q->subcluster_size) + 1;
	uint64_t bits = (b - a == 32 ? 0xffffffffull : ((1ull << (b - a)) - 1)) << a;
	uint64_t nbm = (bm & ~bits) | (bits << 32);
	if (nbm != bm)
		qc_l2_set(q, slice, idx, ent, nbm);
	qc_cache_put(&q->l2c, slice);
	return 0;
}

/* Zero [s, e), aligned to subclusters (extended L2) or clusters, the end
 * possibly the disk's end: whole clusters through zero_clusters_locked(),
 * partial clusters through their subcluster bits. */
static int zero_units_locked(struct qcow *q, uint64_t s, uint64_t e,
			     unsigned flags)
{
	uint64_t cs = q->cluster_size;
	int r = 0;
	while (s < e && r >= 0) {
		uint64_t ce = CP_MIN(e, CP_ALIGN_DOWN(s, cs) + cs);
		bool whole = s % cs == 0 && (ce % cs == 0 || ce >= q->size);
		if (whole) {
			uint64_t we = CP_ALIGN_DOWN(e, cs);
			if (e >= q->size)
				we = CP_ALIGN_UP(e, cs);
			if (we <= s)
				we = ce;
			r = zero_clusters_locked(q, s, we, flags, false, false);
			s = we;
		} else {
			r = zero_subclusters_locked(q, s, ce);
			s = ce;
		}
	}
	return r;
}

/* QEMU's rule for a write-zeroes piece [p, pe) that does not cover its
 * unit (subcluster with extended L2, else cluster) [u0, u1): when the unit
 * is unallocated or zero in this layer and the rest of it reads as zeroes,
 * the whole unit becomes zero; otherwise zeroes are written (data). */
static int zero_partial(struct qcow *q, uint64_t p, uint64_t pe, unsigned flags)
{
	uint64_t unit = q->subcluster_size;
	uint64_t u0 = CP_ALIGN_DOWN(p, unit);
	uint64_t u1 = CP_MIN(u0 + unit, q->size);
	struct qc_inflight inf;
	struct qc_map m;
	int r;
	bool done = false;
	pthread_mutex_lock(&q->lock);
	qc_inflight_wait_locked(q, u0, u1);
	qc_inflight_add_locked(q, &inf, u0, u1);
	r = qc_map_locked(q, u0, u1 - u0, &m);
	if (r >= 0 && m.bytes >= u1 - u0 &&
	    (m.type == QC_ZERO ||
	     (m.type == QC_UNALLOC &&
	      q->backing_reads_zero(q, u0, p - u0) &&
	      q->backing_reads_zero(q, pe, u1 - pe)))) {
		r = zero_units_locked(q, u0, u1, flags);
		if (r == -ENOTSUP) {
			cp_clear_error();
			r = 0;
		} else {
			done = true;
		}
	}
	qc_inflight_del_locked(q, &inf);
	pthread_mutex_unlock(&q->lock);
	if (r < 0 || done)
		return r;
	return write_zero_buf(q, p, pe - p);
}

static int zero_aligned(struct qcow *q, uint64_t s, uint64_t e, unsigned flags)
{
	struct qc_inflight inf;
	pthread_mutex_lock(&q->lock);
	qc_inflight_wait_locked(q, s, e);
	qc_inflight_add_locked(q, &inf, s, e);
	int r = zero_units_locked(q, s, e, flags);
	qc_inflight_del_locked(q, &inf);
	pthread_mutex_unlock(&q->lock);
	if (r == -ENOTSUP) {
		/* a compressed cluster under a subcluster range */
		cp_clear_error();
		r = write_zero_buf(q, s, CP_MIN(e, q->size) - s);
	}
	return r;
}

/* Write zeroes as QEMU does: aligned units become zero (or unallocated in
 * version 2 without a backing file), partial ones too when the rest of the
 * unit already reads as zeroes, else zeroes are written. */
static int zero_write(struct qcow *q, uint64_t off, uint64_t len, unsigned flags)
{
	uint64_t unit = q->subcluster_size, end = off + len;
	uint64_t a = CP_ALIGN_UP(off, unit), b = CP_ALIGN_DOWN(end, unit);
	if (end == q->size)
		b = CP_ALIGN_UP(end, unit); /* the disk's last unit may be partial */
	int r = 0;
	if (a > b)
		return zero_partial(q, off, end, flags); /* inside one unit */
	if (off < a)
		r = zero_partial(q, off, a, flags);
	if (r >= 0 && a < b)
		r = zero_aligned(q, a, b, flags);
	if (r >= 0 && b < end)
		r = zero_partial(q, b, end, flags);
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
	if (discard && q->version < 3 && q->img->backing)
		/* version 2 has no zero flag: deallocating would show the
		 * backing file's data again; QEMU makes this a no-op too */
		return 0;
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
	if (!discard)
		return zero_write(q, off, len, flags);
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
	/* metadata preallocation writes no data: growing the file ahead
	 * (fallocate) would give the clusters disk space, as data */
	bool grow_ahead = q->grow_ahead;
	if (pre == CP_PREALLOC_METADATA)
		q->grow_ahead = false;
	r = qc_set_dirty_locked(q);
	while (g < end && r >= 0) {
		void *slice;
		uint32_t idx;
		r = qc_l2_lookup_locked(q, g, QC_L2_ALLOC, &slice, &idx);
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
			/* the allocation may write a refcount block past the
			 * run (never in it): whether the run reads as zeroes
			 * is decided by what was known before */
			uint64_t h, kzf = q->known_zero_from;
			r = qc_alloc_clusters_locked(q, k, &h);
			if (r < 0)
				break;
			bool kz = h >= kzf;
			if (kz && h + k * cs > q->known_zero_from)
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
	q->grow_ahead = grow_ahead;
	pthread_mutex_unlock(&q->lock);
	return r;
}

static int resize_image(struct qcow *q, uint64_t new_size, enum cp_prealloc pre)
{
	uint64_t cs = q->cluster_size;
	if (q->readonly)
		return cp_error(-EROFS, "%s: image is read-only", q->name);
	if (new_size > QC_MAX_SIZE)
		return cp_error(-EFBIG, "%s: size %" PRIu64 " is too large", q->name,
				new_size);
	if (new_size % 512)
		/* as qemu-img: qcow2 sizes are whole sectors */
		return cp_error(-EINVAL, "%s: the new size must be a multiple of 512",
				q->name);
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
	qc_inflight_del_locked(q, &a->inf);
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
	    qc_inflight_conflict_locked(q, c0, cend) || pinned_slices(&q->l2c) + 4 >= q->l2c.n)
		goto unlock;
	r = qc_l2_lookup_locked(q, off, QC_L2_WRITE, &slice, &idx);
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
	qc_inflight_add_locked(q, &a->inf, c0, cend);
	a->epoch = qc_gp_enter_locked(q);
	pthread_mutex_unlock(&q->lock);
	r = cp_bdev_pwritev_async(q->ddev, iov, cnt, host + (off - c0), afast_cpl, a);
	if (r < 0) {
		qc_gp_exit(q, a->epoch);
		pthread_mutex_lock(&q->lock);
		qc_cache_put(&q->l2c, slice);
		qc_inflight_del_locked(q, &a->inf);
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

/* The disk, then its persistent bitmaps, which follow the new size (an
 * inconsistent one cannot: refused first, as QEMU refuses). */
int qc_resize(struct qcow *q, uint64_t new_size, enum cp_prealloc pre)
{
	pthread_mutex_lock(&q->lock);
	int r = qc_bitmaps_resize_check_locked(q);
	pthread_mutex_unlock(&q->lock);
	if (r >= 0)
		r = resize_image(q, new_size, pre);
	if (r >= 0 && q->nb_bm) {
		pthread_mutex_lock(&q->lock);
		r = qc_bitmaps_resize_locked(q, q->size);
		pthread_mutex_unlock(&q->lock);
	}
	return r;
}
