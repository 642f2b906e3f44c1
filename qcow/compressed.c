/* qcow/compressed.c - the compressed store of qcow2 images: compressed
 * clusters written one at a time (packed after the previous one, as qemu
 * packs them) or many at once in one fresh run of host clusters (convert,
 * ops.c).  A cluster that does not compress is written plainly.
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

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
	qc_inflight_wait_locked(q, off, off + cs);
	r = qc_set_dirty_locked(q);
	if (r >= 0)
		r = qc_l2_lookup_locked(q, off, QC_L2_ALLOC, &slice, &idx);
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
	qc_inflight_add_locked(q, &inf, off, off + cs);
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
		r = qc_l2_lookup_locked(q, off, QC_L2_ALLOC, &slice, &idx);
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
	qc_inflight_del_locked(q, &inf);
unlock:
	if (slice)
		qc_cache_put(&q->l2c, slice);
	pthread_mutex_unlock(&q->lock);
	cp_bdev_free_buf(out);
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
	qc_inflight_wait_locked(q, gmin, gmax);
	r = qc_set_dirty_locked(q);
	for (unsigned i = 0; i < k && r >= 0; i++) {
		void *slice;
		uint32_t idx;
		r = qc_l2_lookup_locked(q, pc[i].off, QC_L2_ALLOC, &slice, &idx);
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
		qc_inflight_add_locked(q, &inf, gmin, gmax);
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
		r = qc_l2_lookup_locked(q, pc[i].off, QC_L2_ALLOC, &slice, &idx);
		if (r < 0)
			break;
		uint64_t coff = host + p;
		uint64_t nsec = ((coff + pc[i].len - 1) >> 9) - (coff >> 9);
		qc_l2_set(q, slice, idx, QC_OFLAG_COMPRESSED | (nsec << x) | coff, 0);
		qc_cache_put(&q->l2c, slice);
		p += CP_ALIGN_UP(pc[i].len, 512);
	}
	q->barrier_needed = true;
	qc_inflight_del_locked(q, &inf);
	pthread_mutex_unlock(&q->lock);
	return r;
}
