/* qcow/cluster.c - guest offset to host offset: L1 and L2 tables.
 *
 * Standard L2 entry (8 bytes):  bit 63 COPIED, bit 62 COMPRESSED, bits 9..55
 * host cluster offset, bit 0 ZERO (version 3).  Extended L2 entry (16
 * bytes): the standard entry, then a bitmap: bits 0..31 "subcluster
 * allocated", bits 32..63 "subcluster reads as zeroes".
 * All functions run with q->lock held.
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

uint64_t qc_l2_entry(const struct qcow *q, const void *slice, uint32_t idx)
{
	return cp_be64((const uint8_t *)slice + (size_t)idx * q->l2_entry_size);
}

uint64_t qc_l2_bitmap(const struct qcow *q, const void *slice, uint32_t idx)
{
	if (!q->extl2)
		return 0;
	return cp_be64((const uint8_t *)slice + (size_t)idx * 16 + 8);
}

void qc_l2_set(struct qcow *q, void *slice, uint32_t idx, uint64_t entry,
	       uint64_t bitmap)
{
	uint8_t *p = (uint8_t *)slice + (size_t)idx * q->l2_entry_size;
	cp_put_be64(p, entry);
	if (q->extl2)
		cp_put_be64(p + 8, bitmap);
	qc_cache_mark_dirty(&q->l2c, slice);
}

void qc_compressed_range(const struct qcow *q, uint64_t entry, uint64_t *off,
			 uint64_t *len)
{
	unsigned x = 62 - (q->cluster_bits - 8);
	uint64_t mask = (1ull << x) - 1;
	uint64_t o = entry & mask;
	uint64_t sectors = ((entry & ~QC_OFLAG_COPIED & ~QC_OFLAG_COMPRESSED) >> x) + 1;
	*off = o;
	/* the data ends at the end of the last 512-byte sector */
	*len = sectors * 512 - (o & 511);
}

void qc_entry_host_range(const struct qcow *q, uint64_t entry, uint64_t *off,
			 uint64_t *len)
{
	if (entry & QC_OFLAG_COMPRESSED) {
		uint64_t o, l;
		qc_compressed_range(q, entry, &o, &l);
		*off = CP_ALIGN_DOWN(o, q->cluster_size);
		*len = CP_ALIGN_UP(o + l, q->cluster_size) - *off;
		return;
	}
	*off = entry & QC_L2E_OFFSET_MASK;
	*len = *off ? q->cluster_size : 0;
}

/* Write the block of the on-disk L1 table containing entry i. */
static int l1_write_entry(struct qcow *q, uint32_t i)
{
	return qc_table_write_entry_locked(q, "L1 table", QC_META_L1,
					   q->l1_table_offset,
					   q->l1, q->l1_size, i, true);
}

static int l2_alloc_table(struct qcow *q, uint32_t l1i)
{
	uint64_t off;
	int r = qc_alloc_clusters_locked(q, 1, &off);
	if (r < 0)
		return r;
	/* a table in known-zero space need not be written, provided the file
	 * already reaches past it (grown ahead); otherwise the file would end
	 * before a table its L1 entry points at */
	if (off < q->known_zero_from || !q->grow_ahead ||
	    off + q->cluster_size > q->file_end) {
		void *z = cp_bdev_alloc_buf(q->cluster_size);
		if (!z)
			return -ENOMEM;
		memset(z, 0, q->cluster_size);
		r = cp_bdev_pwrite(q->dev, z, q->cluster_size, off);
		cp_bdev_free_buf(z);
		if (r < 0)
			return cp_error_prefix(r, "%s: writing new L2 table", q->name);
	}
	if (off + q->cluster_size > q->known_zero_from)
		q->known_zero_from = off + q->cluster_size;
	/* refcount of the new table, then its content, before the L1 entry */
	if (!q->lazy) {
		r = qc_cache_writeback(q, &q->rbc);
		if (r < 0)
			return r;
	}
	r = cp_bdev_flush(q->dev);
	if (r < 0)
		return r;
	q->barrier_needed = false;
	uint64_t old = q->l1[l1i];
	q->l1[l1i] = off | QC_OFLAG_COPIED;
	r = l1_write_entry(q, l1i);
	if (r < 0) {
		q->l1[l1i] = old;
		return r;
	}
	/* the new table's slices are known: zeroes */
	for (uint32_t s = 0; s < q->cluster_size / q->slice_size; s++)
		qc_cache_drop(&q->l2c, off + (uint64_t)s * q->slice_size);
	return 0;
}

/* Before the guest's first change through an L2 slice loaded in the cache:
 * the whole table must be no other metadata (a refcount block placed at
 * its offset) and no other L1 entry may point at it (a duplicated table:
 * the change would remap the other range too).  Damage only; each loaded
 * slice is checked once, so the scan stays off the I/O fast path. */
static int l2_check_writable(struct qcow *q, uint64_t l2off, void *slice)
{
	if (qc_cache_checked(&q->l2c, slice))
		return 0;
	int r = qc_overlap_check_locked(q, l2off, q->cluster_size, QC_META_L2);
	if (r < 0)
		return r;
	qc_cache_set_checked(&q->l2c, slice);
	return 0;
}

int qc_l2_lookup_locked(struct qcow *q, uint64_t off, enum qc_l2_use use,
			void **slice, uint32_t *idx)
{
	uint64_t l1i = off >> (q->cluster_bits + q->l2_bits);
	*slice = NULL;
	if (l1i >= q->l1_size)
		return cp_error(-EINVAL, "%s: offset %" PRIu64 " beyond the L1 table",
				q->name, off);
	uint64_t l1e = q->l1[l1i];
	uint64_t l2off = l1e & QC_L1E_OFFSET_MASK;
	if (!l2off) {
		if (use != QC_L2_ALLOC)
			return 0;
		int r = l2_alloc_table(q, (uint32_t)l1i);
		if (r < 0)
			return r;
		l1e = q->l1[l1i];
		l2off = l1e & QC_L1E_OFFSET_MASK;
	}
	if (l2off % q->cluster_size)
		return qc_corrupt(q, "L2 table at 0x%" PRIx64 " is not cluster aligned (L1 entry %" PRIu64 ")",
				  l2off, l1i);
	if (l2off >= q->host_end)
		return qc_corrupt(q, "L2 table at 0x%" PRIx64 " beyond end of file",
				  l2off);
	uint32_t l2i = (uint32_t)((off >> q->cluster_bits) & (q->l2_entries - 1));
	uint64_t soff = l2off + (uint64_t)(l2i / q->slice_entries) * q->slice_size;
	void *s;
	int r = qc_cache_get(q, &q->l2c, soff, true, &s);
	if (r < 0)
		return r;
	if (use != QC_L2_READ) {
		r = l2_check_writable(q, l2off, s);
		if (r >= 0 && !(l1e & QC_OFLAG_COPIED)) {
			uint64_t rc;
			r = qc_refcount_get_locked(q, l2off / q->cluster_size, &rc);
			if (r >= 0 && rc != 1)
				r = cp_error(-ENOTSUP, "%s: L2 table at 0x%" PRIx64 " is shared (refcount %" PRIu64 "); writing images with internal snapshots is not supported",
					     q->name, l2off, rc);
			if (r >= 0) {
				q->l1[l1i] = l1e | QC_OFLAG_COPIED;
				r = l1_write_entry(q, (uint32_t)l1i);
			}
		}
		if (r < 0) {
			qc_cache_put(&q->l2c, s);
			return r;
		}
	}
	*slice = s;
	*idx = l2i % q->slice_entries;
	return 0;
}

/* Classify one (sub)cluster at guest offset off given its entry/bitmap.
 * Returns the type; *host is the host offset of off for NORMAL. */
static int classify(struct qcow *q, uint64_t off, uint64_t e, uint64_t bm,
		    enum qc_ctype *t, uint64_t *host)
{
	uint64_t in = off & (q->cluster_size - 1);
	*host = 0;
	if (e & QC_OFLAG_COMPRESSED) {
		if (q->extl2 && bm)
			return qc_corrupt(q, "compressed cluster at guest offset 0x%" PRIx64 " has a subcluster bitmap",
					  off - in);
		uint64_t o, l;
		qc_compressed_range(q, e, &o, &l);
		if (o + l > q->host_end || l > 2ull * q->cluster_size + 512)
			return qc_corrupt(q, "compressed cluster at guest offset 0x%" PRIx64 " points outside the image (0x%" PRIx64 ", %" PRIu64 " bytes)",
					  off - in, o, l);
		*t = QC_COMPRESSED;
		return 0;
	}
	uint64_t hc = e & QC_L2E_OFFSET_MASK;
	if (q->extl2) {
		unsigned si = (unsigned)(in / q->subcluster_size);
		bool a = (bm >> si) & 1, z = (bm >> (32 + si)) & 1;
		if (a && z)
			return qc_corrupt(q, "subcluster %u at guest offset 0x%" PRIx64 " is both allocated and zero",
					  si, off - in);
		if (a) {
			if (!hc)
				return qc_corrupt(q, "allocated subcluster at guest offset 0x%" PRIx64 " has no host cluster",
						  off - in);
		} else {
			*t = z ? QC_ZERO : QC_UNALLOC;
			if (hc && hc % q->cluster_size == 0)
				*host = hc + in;
			return 0;
		}
	} else {
		if ((e & QC_OFLAG_ZERO) && q->version >= 3) {
			*t = QC_ZERO;
			if (hc && hc % q->cluster_size == 0)
				*host = hc + in; /* preallocated zero cluster */
			return 0;
		}
		if (!hc) {
			*t = QC_UNALLOC;
			return 0;
		}
	}
	if (hc % q->cluster_size)
		return qc_corrupt(q, "data cluster at 0x%" PRIx64 " is not cluster aligned (guest offset 0x%" PRIx64 ")",
				  hc, off - in);
	if (hc >= q->host_end)
		return qc_corrupt(q, "data cluster at 0x%" PRIx64 " beyond end of file (guest offset 0x%" PRIx64 ")",
				  hc, off - in);
	*t = QC_NORMAL;
	*host = hc + in;
	return 0;
}

int qc_map_locked(struct qcow *q, uint64_t off, uint64_t len, struct qc_map *m)
{
	memset(m, 0, sizeof(*m));
	void *slice;
	uint32_t idx;
	int r = qc_l2_lookup_locked(q, off, QC_L2_READ, &slice, &idx);
	if (r < 0)
		return r;
	if (!slice) {
		uint64_t span = (uint64_t)q->cluster_size << q->l2_bits;
		m->type = QC_UNALLOC;
		m->bytes = CP_MIN(len, span - (off & (span - 1)));
		return 0;
	}
	uint64_t unit = q->subcluster_size;
	/* the slice covers guest bytes up to here */
	uint64_t slice_span = (uint64_t)q->slice_entries << q->cluster_bits;
	uint64_t limit = CP_MIN(off + len, CP_ALIGN_DOWN(off, slice_span) + slice_span);
	uint64_t e = qc_l2_entry(q, slice, idx), bm = qc_l2_bitmap(q, slice, idx);
	r = classify(q, off, e, bm, &m->type, &m->host);
	if (r < 0)
		goto out;
	m->copied = (e & QC_OFLAG_COPIED) != 0;
	if (m->type == QC_COMPRESSED) {
		m->cdesc = e;
		m->bytes = CP_MIN(len, q->cluster_size - (off & (q->cluster_size - 1)));
		goto out;
	}
	uint64_t pos = CP_ALIGN_DOWN(off, unit) + unit;
	uint64_t expect = m->host + (pos - off);
	while (pos < limit) {
		uint32_t i = idx + (uint32_t)((pos >> q->cluster_bits) -
					       (off >> q->cluster_bits));
		uint64_t e2 = qc_l2_entry(q, slice, i), bm2 = qc_l2_bitmap(q, slice, i);
		enum qc_ctype t2;
		uint64_t h2 = 0;
		if (classify(q, pos, e2, bm2, &t2, &h2) < 0) {
			cp_clear_error();
			break; /* report the damage when the run reaches it */
		}
		if (t2 != m->type)
			break;
		if (t2 == QC_NORMAL &&
		    (h2 != expect || ((e2 & QC_OFLAG_COPIED) != 0) != m->copied))
			break;
		if ((t2 == QC_UNALLOC || t2 == QC_ZERO) &&
		    ((h2 != 0) != (m->host != 0) || (h2 && h2 != expect)))
			break;
		pos += unit;
		expect += unit;
	}
	m->bytes = CP_MIN(pos, limit) - off;
out:
	qc_cache_put(&q->l2c, slice);
	return r;
}
