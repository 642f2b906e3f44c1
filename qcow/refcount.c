/* qcow/refcount.c - reference counts, cluster allocation, overlap checks.
 *
 * Refcount entries are 1 << refcount_order bits wide.  Sub-byte widths are
 * packed least significant bits first; 8 bits and wider are big-endian.
 * All functions run with q->lock held.
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

uint64_t qc_refblock_get(const struct qcow *q, const void *block, uint64_t i)
{
	const uint8_t *b = block;
	switch (q->refcount_order) {
	case 0: return (b[i / 8] >> (i % 8)) & 1;
	case 1: return (b[i / 4] >> (2 * (i % 4))) & 3;
	case 2: return (b[i / 2] >> (4 * (i % 2))) & 15;
	case 3: return b[i];
	case 4: return cp_be16(b + 2 * i);
	case 5: return cp_be32(b + 4 * i);
	default: return cp_be64(b + 8 * i);
	}
}

void qc_refblock_set(const struct qcow *q, void *block, uint64_t i, uint64_t v)
{
	uint8_t *b = block;
	unsigned sh;
	switch (q->refcount_order) {
	case 0:
		sh = i % 8;
		b[i / 8] = (uint8_t)((b[i / 8] & ~(1u << sh)) | ((v & 1) << sh));
		break;
	case 1:
		sh = 2 * (i % 4);
		b[i / 4] = (uint8_t)((b[i / 4] & ~(3u << sh)) | ((v & 3) << sh));
		break;
	case 2:
		sh = 4 * (i % 2);
		b[i / 2] = (uint8_t)((b[i / 2] & ~(15u << sh)) | ((v & 15) << sh));
		break;
	case 3: b[i] = (uint8_t)v; break;
	case 4: cp_put_be16(b + 2 * i, (uint16_t)v); break;
	case 5: cp_put_be32(b + 4 * i, (uint32_t)v); break;
	default: cp_put_be64(b + 8 * i, v); break;
	}
}

int qc_grow_file_locked(struct qcow *q, uint64_t end);

/* Offset of the refcount block for reftable index ri (0 if none). */
static int refblock_offset(struct qcow *q, uint64_t ri, uint64_t *off)
{
	*off = 0;
	if (ri >= q->reftable_entries)
		return 0;
	uint64_t e = q->reftable[ri];
	uint64_t o = e & QC_REFT_OFFSET_MASK;
	if (!o)
		return 0;
	if (o % q->cluster_size || (e & 0x1ff))
		return qc_corrupt(q, "refcount block %" PRIu64 " at 0x%" PRIx64 " is not cluster aligned",
				  ri, o);
	if (o >= q->host_end)
		return qc_corrupt(q, "refcount block %" PRIu64 " at 0x%" PRIx64 " beyond end of file",
				  ri, o);
	*off = o;
	return 0;
}

int qc_refcount_get_locked(struct qcow *q, uint64_t cluster, uint64_t *rc)
{
	uint64_t ri = cluster >> q->refblock_bits, off;
	int r = refblock_offset(q, ri, &off);
	if (r < 0)
		return r;
	if (!off) {
		*rc = 0;
		return 0;
	}
	void *blk;
	r = qc_cache_get(q, &q->rbc, off, true, &blk);
	if (r < 0)
		return r;
	*rc = qc_refblock_get(q, blk, cluster & (q->refblock_entries - 1));
	qc_cache_put(&q->rbc, blk);
	return 0;
}

int qc_highest_used_locked(struct qcow *q, uint64_t *end)
{
	for (uint64_t ri = q->reftable_entries; ri-- > 0;) {
		uint64_t off;
		void *blk;
		int r = refblock_offset(q, ri, &off);
		if (r < 0)
			return r;
		if (!off)
			continue;
		r = qc_cache_get(q, &q->rbc, off, true, &blk);
		if (r < 0)
			return r;
		for (uint64_t i = q->refblock_entries; i-- > 0;) {
			if (qc_refblock_get(q, blk, i)) {
				qc_cache_put(&q->rbc, blk);
				*end = ((ri << q->refblock_bits) + i + 1) *
				       q->cluster_size;
				return 0;
			}
		}
		qc_cache_put(&q->rbc, blk);
	}
	*end = 0;
	return 0;
}

void qc_note_alloc_locked(struct qcow *q, uint64_t end, bool fresh)
{
	if (fresh && end > q->known_zero_from)
		q->known_zero_from = end;
	if (fresh && end > q->host_end)
		q->host_end = end;
	if (end > q->alloc_end)
		q->alloc_end = end;
	if (!q->hw_known || end <= q->hw)
		return;
	q->hw = end;
	if (q->hw_cb && end > q->hw_threshold) {
		void (*cb)(void *, uint64_t) = q->hw_cb;
		q->hw_cb = NULL; /* one shot */
		cb(q->hw_opaque, end);
	}
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

/* The overlap check.  A structure is passed over only when it is the
 * target of the write: of the kind written and holding off.  (Passing over
 * whatever lies at off, of any kind, let an L2 slice overwrite a refcount
 * block that damage had placed at the same offset.)  A second entry of the
 * same table pointing at the target (a duplicated L2 table or refcount
 * block) is refused too: the write would change both ranges. */
struct ovl {
	struct qcow *q;
	uint64_t off, len;
	enum qc_meta kind;
	uint64_t target; /* entry of the current table holding the target */
};

static int ovl_one(struct ovl *v, enum qc_meta k, const char *what,
		   uint64_t b, uint64_t blen, const char *table, uint64_t i)
{
	if (k == v->kind && v->off >= b && v->off - b < blen) {
		if (v->target == UINT64_MAX || v->kind == QC_META_L2_REPAIR) {
			v->target = i;
			return 0;
		}
		return qc_corrupt(v->q, "write at 0x%" PRIx64 " (%" PRIu64 " bytes) would overwrite the %s of %s entry %" PRIu64 " (shared with entry %" PRIu64 ")",
				  v->off, v->len, what, table, v->target, i);
	}
	if (!overlaps(v->off, v->len, b, blen))
		return 0;
	return qc_corrupt(v->q, "write at 0x%" PRIx64 " (%" PRIu64 " bytes) would overwrite the %s",
			  v->off, v->len, what);
}

int qc_overlap_check_locked(struct qcow *q, uint64_t off, uint64_t len,
			    enum qc_meta kind)
{
	uint64_t cs = q->cluster_size;
	struct ovl v = { q, off, len, kind, UINT64_MAX };
	int r = ovl_one(&v, QC_META_FIXED, "header", 0, cs, "", 0);
	if (r >= 0)
		r = ovl_one(&v, QC_META_L1, "L1 table", q->l1_table_offset,
			    CP_ALIGN_UP((uint64_t)q->l1_size * 8, cs), "", 0);
	if (r >= 0)
		r = ovl_one(&v, QC_META_REFT, "refcount table",
			    q->refcount_table_offset,
			    (uint64_t)q->refcount_table_clusters * cs, "", 0);
	if (r >= 0 && q->nb_snapshots)
		r = ovl_one(&v, QC_META_FIXED, "snapshot table",
			    q->snapshots_offset, cs, "", 0);
	v.target = UINT64_MAX;
	for (uint64_t i = 0; r >= 0 && i < q->reftable_entries; i++) {
		uint64_t o = q->reftable[i] & QC_REFT_OFFSET_MASK;
		if (o)
			r = ovl_one(&v, QC_META_REFBLOCK, "refcount block", o,
				    cs, "refcount table", i);
	}
	/* check -r rewrites L2 tables as QC_META_L2_REPAIR */
	enum qc_meta l2 = kind == QC_META_L2_REPAIR ? kind : QC_META_L2;
	v.target = UINT64_MAX;
	for (uint32_t i = 0; r >= 0 && q->l1_size <= 16384 && i < q->l1_size; i++) {
		uint64_t o = q->l1[i] & QC_L1E_OFFSET_MASK;
		if (o)
			r = ovl_one(&v, l2, "L2 table", o, cs, "L1", i);
	}
	return r;
}

int qc_overlap_fast_locked(struct qcow *q, uint64_t off, uint64_t len)
{
	uint64_t cs = q->cluster_size;
	const char *what = NULL;
	if (overlaps(off, len, 0, cs))
		what = "header";
	else if (overlaps(off, len, q->l1_table_offset,
			  CP_ALIGN_UP((uint64_t)q->l1_size * 8, cs)))
		what = "L1 table";
	else if (overlaps(off, len, q->refcount_table_offset,
			  (uint64_t)q->refcount_table_clusters * cs))
		what = "refcount table";
	if (!what)
		return 0;
	return qc_corrupt(q, "data write at 0x%" PRIx64 " (%" PRIu64 " bytes) would overwrite the %s",
			  off, len, what);
}

int qc_table_write_entry_locked(struct qcow *q, const char *what,
				enum qc_meta kind, uint64_t table_off,
				const uint64_t *table, uint64_t n, uint64_t i,
				bool check)
{
	unsigned blk = cp_bdev_align(q->dev);
	if (blk < 512)
		blk = 512;
	uint64_t boff = CP_ALIGN_DOWN(i * 8, blk);
	uint8_t *buf = cp_bdev_alloc_buf(blk);
	if (!buf)
		return -ENOMEM;
	for (unsigned k = 0; k < blk / 8; k++) {
		uint64_t idx = boff / 8 + k;
		cp_put_be64(buf + 8 * k, idx < n ? table[idx] : 0);
	}
	int r = check ? qc_overlap_check_locked(q, table_off + boff, blk, kind) : 0;
	if (r >= 0)
		r = cp_bdev_pwrite(q->dev, buf, blk, table_off + boff);
	cp_bdev_free_buf(buf);
	if (r < 0)
		return cp_error_prefix(r, "%s: writing %s", q->name, what);
	return 0;
}

static int reftable_write_entry(struct qcow *q, uint64_t ri)
{
	return qc_table_write_entry_locked(q, "refcount table", QC_META_REFT,
					   q->refcount_table_offset, q->reftable,
					   q->reftable_entries, ri, false);
}

/* Grow the refcount table so that it has an entry for index need_ri, and
 * give the new ranges refcount blocks.  Self-describing: the new blocks and
 * table are placed in the first new range, and count themselves. */
static int reftable_grow(struct qcow *q, uint64_t need_ri, uint64_t min_entries)
{
	uint64_t cs = q->cluster_size, per = q->refblock_entries;
	uint64_t base_ri = q->reftable_entries > need_ri ? need_ri : q->reftable_entries;
	/* every range from the old end up to need_ri and beyond is empty */
	if (base_ri < need_ri)
		base_ri = need_ri;
	uint64_t k = 1, entries = 0, tc = 0;
	for (int iter = 0; iter < 64; iter++) {
		entries = CP_MAX(base_ri + k, q->reftable_entries * 3 / 2 + 1);
		entries = CP_MAX(entries, min_entries);
		tc = CP_DIV_ROUND_UP(entries * 8, cs);
		entries = tc * cs / 8;
		uint64_t nk = CP_DIV_ROUND_UP(k + tc, per);
		if (nk <= k)
			break;
		k = nk;
	}
	if (tc * cs > QC_MAX_REFTABLE_BYTES)
		return cp_error(-EFBIG, "%s: refcount table would exceed %u bytes",
				q->name, QC_MAX_REFTABLE_BYTES);
	uint64_t base = (base_ri << q->refblock_bits) * cs; /* host offset */
	size_t rb_bytes = k * cs, rt_bytes = tc * cs;
	uint8_t *rbs = cp_bdev_alloc_buf(rb_bytes);
	uint8_t *rt = cp_bdev_alloc_buf(rt_bytes);
	uint64_t *nrt = cp_bdev_alloc_buf(entries * 8);
	int r = -ENOMEM;
	if (!rbs || !rt || !nrt)
		goto out;
	memset(rbs, 0, rb_bytes);
	memset(nrt, 0, entries * 8);
	/* the region [base, base + (k + tc) * cs) gets refcount 1 */
	for (uint64_t c = 0; c < k + tc; c++) {
		uint64_t j = c / per;
		qc_refblock_set(q, rbs + j * cs, c % per, 1);
	}
	memcpy(nrt, q->reftable, q->reftable_entries * 8);
	for (uint64_t j = 0; j < k; j++)
		nrt[base_ri + j] = base + j * cs;
	for (uint64_t i = 0; i < entries; i++)
		cp_put_be64(rt + 8 * i, nrt[i]);
	uint64_t rt_off = base + k * cs;
	r = cp_bdev_pwrite(q->dev, rbs, rb_bytes, base);
	if (r >= 0)
		r = cp_bdev_pwrite(q->dev, rt, rt_bytes, rt_off);
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
	if (r < 0) {
		cp_error_prefix(r, "%s: growing the refcount table", q->name);
		goto out;
	}
	uint64_t old_off = q->refcount_table_offset;
	uint64_t old_clusters = q->refcount_table_clusters;
	uint64_t *old_rt = q->reftable;
	uint64_t old_entries = q->reftable_entries;
	q->refcount_table_offset = rt_off;
	q->refcount_table_clusters = (uint32_t)tc;
	q->reftable = nrt;
	q->reftable_entries = entries;
	r = qc_header_update_locked(q);
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
	if (r < 0) {
		q->refcount_table_offset = old_off;
		q->refcount_table_clusters = (uint32_t)old_clusters;
		q->reftable = old_rt;
		q->reftable_entries = old_entries;
		goto out;
	}
	nrt = NULL;
	cp_bdev_free_buf(old_rt);
	qc_note_alloc_locked(q, base + (k + tc) * cs, true);
	/* the old table is referenced by nothing now: free it directly */
	r = qc_refcount_update_locked(q, old_off, old_clusters * cs, -1);
out:
	cp_bdev_free_buf(rbs);
	cp_bdev_free_buf(rt);
	if (nrt && nrt != q->reftable)
		cp_bdev_free_buf(nrt);
	return r;
}

/* Make sure range ri has a refcount block (creating it at the range's first
 * free cluster). */
/* Make sure range ri has a refcount block.  A new block goes to the first
 * cluster of the range at or after cluster `from` (when from lies in the
 * range; else at the range's start) that holds no fixed metadata. */
static int ensure_refblock_from(struct qcow *q, uint64_t ri, uint64_t from)
{
	uint64_t off;
	if (ri >= q->reftable_entries)
		return reftable_grow(q, ri, 0);
	int r = refblock_offset(q, ri, &off);
	if (r < 0 || off)
		return r;
	uint64_t cs = q->cluster_size;
	uint64_t c = ri << q->refblock_bits;
	uint64_t end = c + q->refblock_entries;
	if (from > c && from < end)
		c = from;
	/* no block: every cluster of the range has refcount 0; skip any that
	 * the fixed metadata occupies (only possible in damaged images) */
	for (; c < end; c++) {
		if (qc_overlap_check_locked(q, c * cs, cs, QC_META_NONE) == 0)
			break;
		cp_clear_error();
	}
	if (c == end)
		return qc_corrupt(q, "no room for refcount block %" PRIu64, ri);
	void *blk;
	r = qc_cache_get(q, &q->rbc, c * cs, false, &blk);
	if (r < 0)
		return r;
	qc_refblock_set(q, blk, c & (q->refblock_entries - 1), 1);
	r = cp_bdev_pwrite(q->dev, blk, cs, c * cs);
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
	if (r < 0) {
		qc_cache_put(&q->rbc, blk);
		qc_cache_drop(&q->rbc, c * cs);
		return cp_error_prefix(r, "%s: writing new refcount block", q->name);
	}
	qc_cache_put(&q->rbc, blk);
	q->reftable[ri] = c * cs;
	r = reftable_write_entry(q, ri);
	if (r < 0) {
		q->reftable[ri] = 0;
		qc_cache_drop(&q->rbc, c * cs);
		return r;
	}
	qc_note_alloc_locked(q, (c + 1) * cs, true);
	q->barrier_needed = true;
	return 0;
}

static int ensure_refblock(struct qcow *q, uint64_t ri)
{
	return ensure_refblock_from(q, ri, 0);
}

int qc_refcount_update_locked(struct qcow *q, uint64_t off, uint64_t len,
			      int64_t delta)
{
	uint64_t cs = q->cluster_size;
	uint64_t first = off / cs, last = (off + len - 1) / cs;
	if (!len)
		return 0;
	if (delta > 0 && off + len > q->host_end)
		q->host_end = CP_ALIGN_UP(off + len, cs);
	if (delta > 0) /* clusters taken into use: the high-water mark */
		qc_note_alloc_locked(q, CP_ALIGN_UP(off + len, cs), false);
	for (uint64_t c = first; c <= last;) {
		uint64_t ri = c >> q->refblock_bits, boff;
		int r;
		if (delta > 0) {
			r = ensure_refblock(q, ri);
			if (r < 0)
				return r;
		}
		r = refblock_offset(q, ri, &boff);
		if (r < 0)
			return r;
		if (!boff)
			return qc_corrupt(q, "cluster %" PRIu64 " has refcount 0 but is being freed",
					  c);
		void *blk;
		r = qc_cache_get(q, &q->rbc, boff, true, &blk);
		if (r < 0)
			return r;
		uint64_t end = CP_MIN(last + 1, (ri + 1) << q->refblock_bits);
		for (; c < end; c++) {
			uint64_t i = c & (q->refblock_entries - 1);
			uint64_t v = qc_refblock_get(q, blk, i);
			if (delta < 0 && v < (uint64_t)-delta) {
				qc_cache_put(&q->rbc, blk);
				return qc_corrupt(q, "refcount of cluster %" PRIu64 " would drop below zero",
						  c);
			}
			if (delta > 0 && q->max_refcount - v < (uint64_t)delta) {
				qc_cache_put(&q->rbc, blk);
				return cp_error(-ERANGE, "%s: refcount of cluster %" PRIu64 " would overflow %u bits",
						q->name, c, 1u << q->refcount_order);
			}
			v += (uint64_t)delta;
			qc_refblock_set(q, blk, i, v);
			if (v == 0 && c < q->free_cluster_index)
				q->free_cluster_index = c;
		}
		qc_cache_mark_dirty(&q->rbc, blk);
		qc_cache_put(&q->rbc, blk);
	}
	return 0;
}

/* Length of the run of free clusters starting at c (at most n); stops at
 * the first used cluster, whose index goes to *used. */
static int free_run(struct qcow *q, uint64_t c, uint64_t n, uint64_t *run)
{
	uint64_t got = 0;
	while (got < n) {
		uint64_t ri = (c + got) >> q->refblock_bits, boff;
		int r = refblock_offset(q, ri, &boff);
		if (r < 0)
			return r;
		uint64_t end = CP_MIN(c + n, (ri + 1) << q->refblock_bits);
		if (!boff) {
			got = end - c;
			continue;
		}
		void *blk;
		r = qc_cache_get(q, &q->rbc, boff, true, &blk);
		if (r < 0)
			return r;
		for (uint64_t x = c + got; x < end; x++) {
			if (qc_refblock_get(q, blk, x & (q->refblock_entries - 1))) {
				qc_cache_put(&q->rbc, blk);
				*run = got;
				return 0;
			}
			got++;
		}
		qc_cache_put(&q->rbc, blk);
	}
	*run = got;
	return 0;
}

/* n clusters that cannot fit between the refcount blocks of ordinary
 * ranges (n > half a range): a fresh region past everything in use, made
 * of k new refcount blocks followed by the n clusters, describing itself. */
static int alloc_fresh_region(struct qcow *q, uint64_t n, uint64_t *off)
{
	uint64_t cs = q->cluster_size, per = q->refblock_entries;
	uint64_t k = CP_DIV_ROUND_UP(n, per - 1);
	uint64_t base_ri;
	for (int i = 0;; i++) {
		/* ranges past everything in use have no refcount block */
		base_ri = CP_MAX(CP_DIV_ROUND_UP(q->alloc_end / cs, per),
				 CP_DIV_ROUND_UP(q->host_end / cs, per));
		if (base_ri + k <= q->reftable_entries || i > 8)
			break;
		/* the table needs entries for the new ranges first; it
		 * grows past them with slack, then we look again */
		int r = reftable_grow(q, base_ri, base_ri + 4 * k + 64);
		if (r < 0)
			return r;
	}
	if (base_ri + k > q->reftable_entries)
		return cp_error(-EFBIG, "%s: cannot place %" PRIu64 " contiguous clusters",
				q->name, n);
	for (uint64_t j = 0; j < k; j++)
		if (q->reftable[base_ri + j])
			return qc_corrupt(q, "refcount block for range %" PRIu64 " lies past the end of the image",
					  base_ri + j);
	uint64_t start = base_ri * per; /* cluster index */
	size_t bytes = k * cs;
	uint8_t *rbs = cp_bdev_alloc_buf(bytes);
	if (!rbs)
		return -ENOMEM;
	memset(rbs, 0, bytes);
	for (uint64_t c = 0; c < k + n; c++)
		qc_refblock_set(q, rbs + (c / per) * cs, c % per, 1);
	int r = cp_bdev_pwrite(q->dev, rbs, bytes, start * cs);
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
	cp_bdev_free_buf(rbs);
	if (r < 0)
		return cp_error_prefix(r, "%s: writing refcount blocks", q->name);
	for (uint64_t j = 0; j < k; j++) {
		q->reftable[base_ri + j] = (start + j) * cs;
		r = reftable_write_entry(q, base_ri + j);
		if (r < 0)
			return r;
	}
	uint64_t end = (start + k + n) * cs;
	qc_note_alloc_locked(q, end, true);
	q->barrier_needed = true;
	qc_grow_file_locked(q, end);
	*off = (start + k) * cs;
	return 0;
}

int qc_alloc_clusters_locked(struct qcow *q, uint64_t n, uint64_t *off)
{
	uint64_t cs = q->cluster_size;
	/* Runs of at most half a range always fit next to the range's own
	 * refcount block; longer ones get a region of their own.  (Data
	 * writers ask for at most qc_max_alloc() clusters at a time.) */
	if (n > q->refblock_entries / 2)
		return alloc_fresh_region(q, n, off);
	uint64_t c = q->free_cluster_index;
	bool hole_seen = false; /* a free cluster lies below c */
	for (int tries = 0;; tries++) {
		uint64_t run;
		int r = free_run(q, c, n, &run);
		if (r < 0)
			return r;
		if (run < n) {
			if (run)
				hole_seen = true;
			else if (!hole_seen)
				q->free_cluster_index = c + 1;
			c += run + 1;
			continue;
		}
		/* make sure the refblocks exist; creating one may take a
		 * cluster of our run, so look again afterwards */
		uint64_t ri0 = c >> q->refblock_bits;
		uint64_t ri1 = (c + n - 1) >> q->refblock_bits;
		bool created = false;
		for (uint64_t ri = ri0; ri <= ri1; ri++) {
			uint64_t boff;
			r = refblock_offset(q, ri, &boff);
			if (r < 0)
				return r;
			if (!boff) {
				/* as QEMU: past the run when the range holds
				 * its end (the run stays contiguous) */
				r = ensure_refblock_from(q, ri, c + n);
				if (r < 0)
					return r;
				created = true;
			}
		}
		if (created) {
			r = free_run(q, c, n, &run);
			if (r < 0)
				return r;
			if (run < n) {
				if (run)
					hole_seen = true;
				c += run + 1;
				continue;
			}
		}
		/* Space past the file's length at open can hold no metadata
		 * that was on disk then, and metadata made since is counted
		 * by the refcounts that just said free: the full scan of
		 * every L2 table and refcount block is needed only when
		 * reusing space inside the original file. */
		if (c * cs < q->open_end)
			r = qc_overlap_check_locked(q, c * cs, n * cs, QC_META_NONE);
		else
			r = qc_overlap_fast_locked(q, c * cs, n * cs);
		if (r < 0)
			return r;
		r = qc_refcount_update_locked(q, c * cs, n * cs, 1);
		if (r < 0)
			return r;
		qc_note_alloc_locked(q, (c + n) * cs, false);
		qc_grow_file_locked(q, (c + n) * cs);
		if (c == q->free_cluster_index)
			q->free_cluster_index = c + n;
		*off = c * cs;
		return 0;
	}
}

int qc_free_later_locked(struct qcow *q, uint64_t off, uint64_t len)
{
	if (!len)
		return 0;
	if (q->pending_free.len) {
		struct qc_free *l = &q->pending_free.ptr[q->pending_free.len - 1];
		if (l->off + l->len == off) {
			l->len += len;
			return 0;
		}
	}
	struct qc_free f = { off, len };
	return qc_free_vec_append(&q->pending_free, f);
}

int qc_apply_pending_free_locked(struct qcow *q)
{
	uint64_t cs = q->cluster_size;
	for (size_t i = 0; i < q->pending_free.len; i++) {
		struct qc_free *f = &q->pending_free.ptr[i];
		uint64_t s = CP_ALIGN_DOWN(f->off, cs);
		uint64_t e = CP_ALIGN_UP(f->off + f->len, cs);
		int r = qc_refcount_update_locked(q, s, e - s, -1);
		if (r < 0)
			return r;
		/* give the space back to the host where nothing uses it, one
		 * call per run of now-free clusters */
		uint64_t run_s = 0, run_l = 0;
		for (uint64_t c = s; c <= e; c += cs) {
			uint64_t rc = 1;
			if (c < e && qc_refcount_get_locked(q, c / cs, &rc) < 0)
				rc = 1;
			if (c < e && rc == 0) {
				if (!run_l)
					run_s = c;
				run_l += cs;
				continue;
			}
			if (run_l)
				cp_bdev_discard(q->dev, run_s, run_l);
			run_l = 0;
		}
	}
	cp_clear_error();
	q->pending_free.len = 0;
	return 0;
}

uint64_t qc_max_alloc(const struct qcow *q)
{
	return CP_MAX(1, q->refblock_entries / 2);
}

int qc_grow_file_locked(struct qcow *q, uint64_t end)
{
	if (!q->grow_ahead || end <= q->file_end)
		return 0;
	uint64_t win = CP_MIN(CP_MAX(q->file_end / 8, 1ull << 20), 64ull << 20);
	uint64_t to = CP_ALIGN_UP(CP_MAX(end, q->file_end + win), q->cluster_size);
	/* the new range reads as zeroes; failure only costs speed */
	if (cp_bdev_preallocate(q->dev, q->file_end, to - q->file_end,
				CP_PREALLOC_FALLOC) < 0) {
		cp_clear_error();
		q->grow_ahead = false;
		return 0;
	}
	q->file_end = to;
	if (to > q->host_end)
		q->host_end = to;
	return 0;
}
