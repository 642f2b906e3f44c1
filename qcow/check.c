/* qcow/check.c - consistency check and repair (qemu-img check semantics).
 *
 * A pass builds an in-memory refcount table (IMRT, one uint32_t per host
 * cluster, saturating at the image's maximum refcount) from everything that
 * references host clusters: header, active and snapshot L1 tables, their L2
 * tables and data, the snapshot table, the refcount table and blocks, and
 * the bitmap directory.  It then compares the IMRT with the refcounts on
 * disk and checks the COPIED flags of the active tables.  Messages and
 * counters follow QEMU's block/qcow2-refcount.c so that `cowpool check`
 * reads like `qemu-img check`.
 *
 * Repair writes the device directly (the caller flushed every cache, holds
 * no lock and runs no other I/O):
 *  - refcount fixes: increases are written and flushed before decreases;
 *    only blocks that are valid and referenced exactly once are written;
 *  - COPIED flags: L1 entries and whole L2 tables are rewritten after an
 *    overlap check, once the refcounts they mirror are on disk;
 *  - a damaged refcount structure is rebuilt from the IMRT into clusters
 *    that nothing references (first fit, growing past the end of the
 *    file), flushed, and only then made current by a header update.  The
 *    old structure is then leaked and freed by a second pass.
 * A crash at any point leaves an image that another repair can fix.  After
 * repairing, a quiet verification pass produces the final counters.
 *
 * When some references cannot be known (an unreadable table, an unaligned
 * L2 or snapshot L1 offset, a damaged bitmap directory) nothing is
 * repaired: freeing "leaks" could then free live clusters.
 *
 * The snapshot table is read first, as QEMU reads it (snapshot.c): a table
 * QEMU cannot read fails the check; with -r all, entries past 64 MiB are
 * dropped at once and a table with incomplete entries or cut extra data
 * is rewritten after the refcounts are repaired.
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CK_MAX_CLUSTERS 0x7fffffffull     /* as QEMU: nb_clusters <= INT_MAX */
#define CK_MAX_BITMAP_DIR (64ull << 20)
#define CK_MAX_BITMAP_TABLE (1ull << 27)    /* entries, BME_MAX_TABLE_SIZE */
#define CK_REFT_RESERVED 0x1ffull
#define CK_BME_OFFSET_MASK 0x00fffffffffffe00ull
#define CK_BME_RESERVED 0xff000000000001feull
#define CK_AUTOCLEAR_BITMAPS 1ull
#define CK_RC_CACHE_BYTES (4u << 20)
#define CK_ALLOC 0xffffffffull           /* extl2: subcluster alloc bits */

struct ck {
	struct qcow *q;
	unsigned fix;               /* CP_CHECK_REPAIR_* for this pass */
	cp_check_report_fn report;  /* NULL: quiet */
	void *opaque;
	struct cp_check_result r;
	uint64_t cs, file_len;
	uint32_t *rc;               /* IMRT */
	uint64_t nb, cap;           /* clusters compared / allocated */
	uint32_t rc_max;
	uint8_t *buf;               /* one cluster: L2 tables, chunks */
	uint8_t *rb;                /* one cluster: refcount block */
	uint8_t *rcache;            /* direct-mapped refblock cache */
	uint64_t *rcache_ri;
	unsigned rcache_n;
	uint64_t highest, copied_fixed, write_errors;
	bool rebuild;   /* refcount structure must be rebuilt */
	bool unsafe;    /* references not fully known: do not repair */
	bool no_rebuild, rebuilt, changed;
	struct qc_snaps sn;         /* the snapshot table as read */
	uint64_t sn_corruptions, sn_fixed, sn_check_errors;
};

static void ck_msg(struct ck *c, const char *fmt, ...) CP_PRINTF(2, 3);
static void ck_msg(struct ck *c, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!c->report)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c->report(c->opaque, line);
}

static bool ck_can_write(const struct ck *c)
{
	return !c->q->readonly;
}

static int ck_grow(struct ck *c, uint64_t n)
{
	if (n > CK_MAX_CLUSTERS)
		return -EFBIG;
	if (n > c->cap) {
		uint64_t ncap = CP_MIN(CP_MAX(n, c->cap + c->cap / 4 + 64),
				       CK_MAX_CLUSTERS);
		uint32_t *p = realloc(c->rc, ncap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		memset(p + c->cap, 0, (ncap - c->cap) * sizeof(*p));
		c->rc = p;
		c->cap = ncap;
	}
	if (n > c->nb)
		c->nb = n;
	return 0;
}

/* Count one reference to every cluster touched by [off, off+len). */
static int ck_inc(struct ck *c, uint64_t off, uint64_t len)
{
	uint64_t cs = c->cs;

	if (!len)
		return 0;
	if (off > UINT64_MAX - len - cs || off + len >= c->file_len + cs) {
		ck_msg(c, "ERROR: counting reference for region exceeding the "
		       "end of the file by one cluster or more: offset 0x%" PRIx64
		       " size 0x%" PRIx64, off, len);
		c->r.corruptions++;
		return 0;
	}
	uint64_t first = off / cs, last = (off + len - 1) / cs;
	if (last >= c->nb) {
		int r = ck_grow(c, last + 1);
		if (r < 0) {
			c->r.check_errors++;
			return r;
		}
	}
	for (uint64_t k = first; k <= last; k++) {
		if (c->rc[k] >= c->rc_max) {
			ck_msg(c, "ERROR: overflow cluster offset=0x%" PRIx64,
			       k * cs);
			c->r.corruptions++;
			continue;
		}
		c->rc[k]++;
	}
	return 0;
}

static void ck_read_error(struct ck *c, const char *what, int r)
{
	ck_msg(c, "ERROR: I/O error in %s: %s", what, strerror(-r));
	c->r.check_errors++;
	c->unsafe = true;
}

/* size bytes at off in a new buffer (the caller frees it), or NULL with
 * *err = 0 after an I/O error (reported as in what: the check goes on) or
 * *err = -ENOMEM (counted as a check error). */
static void *ck_read_alloc(struct ck *c, uint64_t off, uint64_t size,
			   const char *what, int *err)
{
	void *buf = malloc(size);
	*err = 0;
	if (!buf) {
		c->r.check_errors++;
		*err = -ENOMEM;
		return NULL;
	}
	int r = cp_bdev_pread(c->q->dev, buf, size, off);
	if (r < 0) {
		ck_read_error(c, what, r);
		free(buf);
		return NULL;
	}
	return buf;
}

/* --- L1/L2 tables ------------------------------------------------------- */

static int ck_l2(struct ck *c, uint64_t l2_off, bool active)
{
	struct qcow *q = c->q;
	uint64_t cs = c->cs, next = 0;
	int r = cp_bdev_pread(q->dev, c->buf, cs, l2_off);

	if (r < 0) {
		ck_read_error(c, "check_refcounts_l2", r);
		return 0;
	}
	for (uint32_t i = 0; i < q->l2_entries; i++) {
		const uint8_t *p = c->buf + (size_t)i * q->l2_entry_size;
		uint64_t e = cp_be64(p), bm = q->extl2 ? cp_be64(p + 8) : 0;
		uint64_t off = e & QC_L2E_OFFSET_MASK, coff, clen;

		if (e & QC_OFLAG_COMPRESSED) {
			if (e & QC_OFLAG_COPIED) {
				e &= ~QC_OFLAG_COPIED;
				qc_compressed_range(q, e, &coff, &clen);
				ck_msg(c, "ERROR: coffset=0x%" PRIx64 ": copied "
				       "flag must never be set for compressed "
				       "clusters", coff);
				c->r.corruptions++;
			}
			if (bm) {
				ck_msg(c, "ERROR compressed cluster %u with "
				       "non-zero subcluster allocation bitmap, "
				       "entry=0x%" PRIx64, i, e);
				c->r.corruptions++;
				continue;
			}
			qc_compressed_range(q, e, &coff, &clen);
			r = ck_inc(c, coff, clen);
			if (r < 0)
				return r;
			if (active) {
				c->r.allocated_clusters++;
				c->r.compressed_clusters++;
				c->r.fragmented_clusters++;
			}
			continue;
		}
		if (e & QC_L2E_STD_RESERVED) {
			ck_msg(c, "ERROR found l2 entry with reserved bits set: "
			       "%" PRIx64, e);
			c->r.corruptions++;
		}
		if (!off) { /* unallocated or plain zero */
			if (bm & CK_ALLOC) {
				ck_msg(c, "ERROR: Unallocated cluster has "
				       "non-zero subcluster allocation map");
				c->r.corruptions++;
			}
			continue;
		}
		if ((bm >> 32) & bm) {
			ck_msg(c, "ERROR offset=%" PRIx64 ": Allocated cluster "
			       "has corrupted subcluster allocation bitmap", off);
			c->r.corruptions++;
		}
		if (off % cs) {
			bool data = q->extl2 ? (bm & CK_ALLOC) != 0
					     : !(e & QC_OFLAG_ZERO);
			ck_msg(c, "ERROR offset=%" PRIx64 ": %s cluster is not "
			       "properly aligned; L2 entry corrupted.", off,
			       data ? "Data" : "Preallocated");
			c->r.corruptions++;
		}
		if (active) {
			c->r.allocated_clusters++;
			if (next && off != next)
				c->r.fragmented_clusters++;
			next = off + cs;
		}
		r = ck_inc(c, off, cs);
		if (r < 0)
			return r;
	}
	return 0;
}

/* l1: the table in host order, or NULL to read it from disk. */
static int ck_l1(struct ck *c, uint64_t l1_off, uint32_t l1_size,
		 const uint64_t *l1, bool active)
{
	uint64_t bytes = (uint64_t)l1_size * 8;
	uint64_t *tmp = NULL;
	int r;

	if (!l1_size)
		return 0;
	r = ck_inc(c, l1_off, bytes);
	if (r < 0)
		return r;
	if (!l1) {
		if (l1_off >= c->file_len)
			return 0; /* reported above; reads as zeroes */
		tmp = ck_read_alloc(c, l1_off, bytes, "check_refcounts_l1", &r);
		if (!tmp)
			return r;
		for (uint32_t i = 0; i < l1_size; i++)
			tmp[i] = cp_be64(&tmp[i]);
		l1 = tmp;
	}
	r = 0;
	for (uint32_t i = 0; i < l1_size && r >= 0; i++) {
		uint64_t e = l1[i], l2 = e & QC_L1E_OFFSET_MASK;
		if (!e)
			continue;
		if (e & QC_L1E_RESERVED) {
			ck_msg(c, "ERROR found L1 entry with reserved bits set: "
			       "%" PRIx64, e);
			c->r.corruptions++;
		}
		if (!l2)
			continue;
		r = ck_inc(c, l2, c->cs);
		if (r < 0)
			break;
		if (l2 % c->cs) {
			ck_msg(c, "ERROR l2_offset=%" PRIx64 ": Table is not "
			       "cluster aligned; L1 entry corrupted", l2);
			c->r.corruptions++;
			c->unsafe = true; /* its references are unknown */
			continue;
		}
		if (l2 >= c->file_len)
			continue; /* reported by ck_inc; reads as zeroes */
		r = ck_l2(c, l2, active);
	}
	free(tmp);
	return r;
}

/* --- snapshots and bitmaps ---------------------------------------------- */

/* QEMU's qcow2_check_read_snapshot_table: read the table as QEMU does
 * (repairing what it repairs when the errors are to be fixed) before the
 * refcounts are counted.  A table QEMU cannot read fails the check. */
static int ck_sn_load(struct ck *c)
{
	struct qcow *q = c->q;
	bool fix = (c->fix & 2u) && ck_can_write(c);
	int r;

	qc_snapshots_free(&c->sn);
	c->sn_corruptions = 0;
	r = qc_snapshots_validate(q, q->nb_snapshots, q->snapshots_offset);
	if (r < 0) {
		ck_msg(c, "ERROR snapshot table %s", r == -EFBIG ? "too large"
			  : "offset invalid");
		goto fail;
	}
	r = qc_snapshots_read(q, fix, &c->sn, c->report, c->opaque);
	if (r < 0) {
		const char *m = cp_last_error();
		size_t nl = strlen(q->name);
		if (!strncmp(m, q->name, nl) && !strncmp(m + nl, ": ", 2))
			m += nl + 2;
		ck_msg(c, "ERROR failed to read the snapshot table: %s", m);
		goto fail;
	}
	c->sn_corruptions = c->sn.dropped;
	if (c->sn.reduced) {
		/* now: the refcount pass relies on the header's count */
		r = qc_snapshots_set_count(q, c->sn.n);
		if (r < 0) {
			ck_msg(c, "ERROR failed to update the snapshot count in "
			       "the image header: %s", strerror(-r));
			goto fail;
		}
		c->sn_fixed += c->sn.reduced;
		c->changed = true;
	}
	for (uint32_t i = 0; i < c->sn.n; i++) {
		if (!qc_snapshots_incomplete(q, &c->sn, i))
			continue;
		c->sn_corruptions++;
		ck_msg(c, "%s snapshot table entry %" PRIu32 " is incomplete",
		       c->fix & 2u ? "Repairing" : "ERROR", i);
	}
	return 0;
fail:
	c->sn_check_errors++;
	qc_snapshots_free(&c->sn);
	return cp_error(r, "%s: %s", q->name, strerror(-r));
}

/* The clusters of the snapshots (as qcow2_check_refcounts counts them). */
static int ck_snapshots(struct ck *c)
{
	const struct qc_snaps *s = &c->sn;
	int r;

	for (uint32_t i = 0; i < s->n; i++) {
		const struct qc_snap *sn = &s->v[i];
		if (sn->l1_offset % c->cs) {
			ck_msg(c, "ERROR snapshot %s (%s) l1_offset=%#" PRIx64
			       ": L1 table is not cluster aligned; snapshot "
			       "table entry corrupted", sn->id, sn->name,
			       sn->l1_offset);
		} else if (sn->l1_size > QC_MAX_L1_BYTES / 8) {
			ck_msg(c, "ERROR snapshot %s (%s) l1_size=%#" PRIx32
			       ": L1 table is too large; snapshot table entry "
			       "corrupted", sn->id, sn->name, sn->l1_size);
		} else {
			r = ck_l1(c, sn->l1_offset, sn->l1_size, NULL, false);
			if (r < 0)
				return r;
			continue;
		}
		c->r.corruptions++;
		/* its clusters would look leaked: freeing them would lose
		 * the snapshot for good (QEMU frees them) */
		c->unsafe = true;
	}
	return ck_inc(c, c->q->snapshots_offset, s->size);
}

/* QEMU's qcow2_check_fix_snapshot_table: rewrite a table whose entries
 * were incomplete or had their extra data cut, once the refcounts are
 * right (the new table is allocated as any cluster). */
static int ck_sn_fix(struct ck *c)
{
	struct qcow *q = c->q;

	if (!c->sn_corruptions || !(c->fix & 2u) || !ck_can_write(c))
		return 0;
	if (c->unsafe || c->r.check_errors) {
		ck_msg(c, "ERROR not rewriting the snapshot table: the "
		       "refcounts are not known to be right");
		return 0;
	}
	int r = qc_snapshots_write(q, &c->sn, q->snapshots_offset, c->sn.size);
	c->changed = true;
	if (r < 0) {
		ck_msg(c, "ERROR failed to update snapshot table: %s",
		       strerror(-r));
		c->sn_check_errors++;
		return cp_error(r, "%s: %s", q->name, strerror(-r));
	}
	c->sn_fixed += c->sn_corruptions;
	c->sn_corruptions = 0;
	/* what the next passes count */
	struct qc_snaps again;
	r = qc_snapshots_read(q, false, &again, NULL, NULL);
	if (r < 0) {
		c->sn_check_errors++;
		return r;
	}
	qc_snapshots_free(&c->sn);
	c->sn = again;
	return 0;
}

static void ck_bitmap_bad(struct ck *c, const char *what, uint64_t off)
{
	ck_msg(c, "ERROR %s at 0x%" PRIx64 " is invalid; bitmaps extension "
	       "corrupted", what, off);
	c->r.corruptions++;
	c->unsafe = true;
}

static int ck_bitmaps(struct ck *c)
{
	struct qcow *q = c->q;
	const struct qc_ext *x = NULL;
	uint8_t *dir = NULL;
	int r = 0;

	for (size_t i = 0; i < q->exts.len; i++)
		if (q->exts.ptr[i].type == QC_EXT_BITMAPS)
			x = &q->exts.ptr[i];
	/* Without the autoclear bit the bitmaps are stale and ignored. */
	if (!x || !(q->autoclear & CK_AUTOCLEAR_BITMAPS))
		return 0;
	if (x->len < 24) {
		ck_bitmap_bad(c, "bitmaps extension", 0);
		return 0;
	}
	uint32_t nb = cp_be32(x->data);
	uint64_t dsize = cp_be64(x->data + 8), doff = cp_be64(x->data + 16);
	if (!nb)
		return 0;
	if (doff % c->cs || doff >= c->file_len || dsize < 24 ||
	    dsize > CK_MAX_BITMAP_DIR) {
		ck_bitmap_bad(c, "bitmap directory", doff);
		return 0;
	}
	r = ck_inc(c, doff, dsize);
	if (r < 0)
		return r;
	dir = ck_read_alloc(c, doff, dsize, "the bitmap directory", &r);
	if (!dir)
		return r;
	uint64_t pos = 0;
	for (uint32_t i = 0; i < nb && r >= 0; i++) {
		if (pos + 24 > dsize) {
			ck_bitmap_bad(c, "bitmap directory", doff);
			break;
		}
		uint64_t toff = cp_be64(dir + pos);
		uint32_t tsize = cp_be32(dir + pos + 8);
		uint64_t esize = CP_ALIGN_UP(24 + (uint64_t)cp_be32(dir + pos + 20)
					     + cp_be16(dir + pos + 18), 8);
		pos += esize;
		if (toff % c->cs || toff >= c->file_len ||
		    tsize > CK_MAX_BITMAP_TABLE ||
		    (uint64_t)tsize * 8 > c->file_len) {
			ck_bitmap_bad(c, "bitmap table", toff);
			continue;
		}
		r = ck_inc(c, toff, (uint64_t)tsize * 8);
		for (uint64_t done = 0; r >= 0 && done < (uint64_t)tsize * 8;
		     done += c->cs) {
			uint64_t n = CP_MIN(c->cs, (uint64_t)tsize * 8 - done);
			int e = cp_bdev_pread(q->dev, c->buf, n, toff + done);
			if (e < 0) {
				ck_read_error(c, "a bitmap table", e);
				break;
			}
			for (uint64_t j = 0; j < n && r >= 0; j += 8) {
				uint64_t te = cp_be64(c->buf + j);
				uint64_t o = te & CK_BME_OFFSET_MASK;
				/* as QEMU's bitmap_table_load(): a bad
				 * entry (only an in-use bitmap's gets
				 * past the open) fails the whole check */
				if ((te & CK_BME_RESERVED) || o % c->cs)
					r = cp_error(-EINVAL, "%s: bitmap table at 0x%" PRIx64 " has an invalid entry 0x%" PRIx64,
						     q->name, toff, te);
				else if (o)
					r = ck_inc(c, o, c->cs);
			}
		}
	}
	if (r > 0)
		r = 0;
	free(dir);
	return r;
}

/* --- refcount structure ------------------------------------------------- */

static int ck_refblocks(struct ck *c)
{
	struct qcow *q = c->q;

	for (uint64_t i = 0; i < q->reftable_entries; i++) {
		uint64_t e = q->reftable[i], off = e & QC_REFT_OFFSET_MASK;
		uint64_t k = off / c->cs;

		if (e & CK_REFT_RESERVED) {
			ck_msg(c, "ERROR refcount table entry %" PRIu64 " has "
			       "reserved bits set", i);
			c->r.corruptions++;
			c->rebuild = true;
			continue;
		}
		if (off % c->cs) {
			ck_msg(c, "ERROR refcount block %" PRIu64 " is not "
			       "cluster aligned; refcount table entry corrupted",
			       i);
			c->r.corruptions++;
			c->rebuild = true;
			continue;
		}
		if (k >= c->nb) {
			ck_msg(c, "%s refcount block %" PRIu64 " is outside "
			       "image", c->fix & 2u ? "Repairing" : "ERROR",
			       i);
			c->r.corruptions++;
			/* as QEMU: only a repair needs it gone (it covers no
			 * cluster of the file, so nothing else is wrong) */
			if (c->fix & 2u)
				c->rebuild = true;
			continue;
		}
		if (!off)
			continue;
		int r = ck_inc(c, off, c->cs);
		if (r < 0)
			return r;
		if (c->rc[k] != 1) {
			ck_msg(c, "ERROR refcount block %" PRIu64 " refcount=%"
			       PRIu32, i, c->rc[k]);
			c->r.corruptions++;
			c->rebuild = true;
		}
	}
	return 0;
}

/* Load the refcount block of range ri into c->rb.  Returns 1 (loaded from
 * *off), 0 (no block: all zero) or -errno (unusable entry or I/O error). */
static int ck_load_rb(struct ck *c, uint64_t ri, uint8_t *rb, uint64_t *off)
{
	struct qcow *q = c->q;
	uint64_t o;

	*off = 0;
	memset(rb, 0, c->cs);
	if (ri >= q->reftable_entries)
		return 0;
	o = q->reftable[ri] & QC_REFT_OFFSET_MASK;
	if (!o)
		return 0;
	if (o % c->cs)
		return -EIO;
	if (o >= c->file_len)
		return 0; /* reads as zeroes */
	int r = cp_bdev_pread(q->dev, rb, c->cs, o);
	if (r < 0)
		return r;
	*off = o;
	return 1;
}

/* Current on-disk refcount of cluster k (through a small cache). */
static int ck_disk_rc(struct ck *c, uint64_t k, uint64_t *rc)
{
	struct qcow *q = c->q;
	uint64_t ri = k >> q->refblock_bits, off;
	unsigned s = (unsigned)(ri % c->rcache_n);
	uint8_t *rb = c->rcache + (size_t)s * c->cs;

	*rc = 0;
	if (c->rcache_ri[s] != ri) {
		c->rcache_ri[s] = UINT64_MAX;
		int r = ck_load_rb(c, ri, rb, &off);
		if (r < 0)
			return r;
		c->rcache_ri[s] = ri;
	}
	*rc = qc_refblock_get(q, rb, k & (q->refblock_entries - 1));
	return 0;
}

static void ck_rcache_drop(struct ck *c)
{
	for (unsigned i = 0; i < c->rcache_n; i++)
		c->rcache_ri[i] = UINT64_MAX;
}

/* Compare the IMRT with the disk.  With fix, repair the mismatches that
 * fix allows: phase 0 reports and writes increases, phase 1 (after a
 * flush) writes decreases. */
static void ck_compare(struct ck *c, unsigned fix)
{
	struct qcow *q = c->q;
	uint64_t per = q->refblock_entries;

	if (!ck_can_write(c))
		fix = 0;
	c->highest = 0;
	for (int phase = 0; phase < (fix ? 2 : 1); phase++) {
		for (uint64_t ri = 0; ri * per < c->nb; ri++) {
			uint64_t start = ri * per, end = CP_MIN(c->nb, start + per);
			uint64_t off;
			bool dirty = false;
			int st = ck_load_rb(c, ri, c->rb, &off);

			for (uint64_t k = start; k < end; k++) {
				uint64_t rc1, rc2 = c->rc[k];
				unsigned which = 0;

				if (st < 0) {
					if (phase)
						continue;
					ck_msg(c, "Can't get refcount for "
					       "cluster %" PRIu64 ": %s", k,
					       strerror(-st));
					c->r.check_errors++;
					continue;
				}
				rc1 = qc_refblock_get(q, c->rb, k - start);
				if (!phase && (rc1 || rc2))
					c->highest = k;
				if (rc1 == rc2)
					continue;
				if (rc1 == 0)
					c->rebuild = true;
				else if (rc1 > rc2 && (fix & CP_CHECK_REPAIR_LEAKS))
					which = 1;
				else if (rc1 < rc2 && (fix & 2u))
					which = 2;
				if (!phase) {
					ck_msg(c, "%s cluster %" PRIu64
					       " refcount=%" PRIu64 " reference=%"
					       PRIu64, which ? "Repairing" :
					       rc1 < rc2 ? "ERROR" : "Leaked",
					       k, rc1, rc2);
					if (which == 1)
						c->r.leaks_fixed++;
					else if (which == 2)
						c->r.corruptions_fixed++;
					else if (rc1 < rc2)
						c->r.corruptions++;
					else
						c->r.leaks++;
				}
				if (which && st == 1 && (phase == 0) == (rc1 < rc2)) {
					qc_refblock_set(q, c->rb, k - start, rc2);
					dirty = true;
				}
			}
			if (dirty) {
				int r = cp_bdev_pwrite(q->dev, c->rb, c->cs, off);
				c->changed = true;
				if (r < 0) {
					ck_msg(c, "ERROR: could not write "
					       "refcount block %" PRIu64 ": %s",
					       ri, strerror(-r));
					c->write_errors++;
				}
			}
		}
		if (fix) {
			int r = cp_bdev_flush(q->dev);
			if (r < 0) {
				ck_msg(c, "ERROR: flush failed: %s", strerror(-r));
				c->write_errors++;
				break;
			}
		}
	}
	ck_rcache_drop(c);
}

/* First fit of n free clusters in the IMRT at or after *ffc (QEMU's
 * alloc_clusters_imrt), growing it past the end of the file when needed;
 * marks them used and sets *out to the first cluster index. */
static int ck_alloc(struct ck *c, uint64_t n, uint64_t *ffc, uint64_t *out)
{
	uint64_t k = *ffc, run = 0;
	bool first = true;

	for (; k < c->nb && run < n; k++) {
		if (!c->rc[k]) {
			if (first)
				*ffc = k;
			first = false;
			run++;
		} else {
			run = 0;
		}
	}
	uint64_t s = k - run;
	if (run < n) {
		int r = ck_grow(c, s + n);
		if (r < 0)
			return r;
	}
	for (uint64_t i = 0; i < n; i++)
		c->rc[s + i] = 1;
	*out = s;
	return 0;
}

struct ck_rt {
	uint64_t *e;    /* new reftable, host order */
	uint64_t n;     /* entries (a cluster multiple) */
	uint64_t high;  /* end of what was written */
	const char *what;
};

/* Write a refcount block, taken from the IMRT, for every range with a used
 * cluster in [first, end), allocating the blocks that the new reftable
 * lacks.  Sets *grown if the reftable had to grow. */
static int ck_write_refblocks(struct ck *c, struct ck_rt *t, uint64_t first,
			      uint64_t end, bool *grown)
{
	struct qcow *q = c->q;
	uint64_t cs = c->cs, per = q->refblock_entries, ffc = 0, blk;
	int r;

	for (uint64_t k = first; k < end; k++) {
		if (!c->rc[k])
			continue;
		uint64_t ri = k / per, start = ri * per;
		if (ri < t->n && t->e[ri]) {
			blk = t->e[ri] / cs;
		} else {
			/* never in a range whose block is already written */
			if (ffc < start)
				ffc = start;
			t->what = "allocating refblock";
			r = ck_alloc(c, 1, &ffc, &blk);
			if (r < 0)
				return r;
			if (blk >= end)
				end = blk + 1;
			if (ri >= t->n) {
				uint64_t n = CP_ALIGN_UP((ri + 1) * 8, cs) / 8;
				if (n * 8 > QC_MAX_REFTABLE_BYTES)
					return -EFBIG;
				uint64_t *p = realloc(t->e, n * 8);
				if (!p)
					return -ENOMEM;
				memset(p + t->n, 0, (n - t->n) * 8);
				t->e = p;
				t->n = n;
				*grown = true;
			}
			t->e[ri] = blk * cs;
		}
		t->what = "writing refblock";
		memset(c->rb, 0, cs);
		for (uint64_t j = start; j < CP_MIN(c->nb, start + per); j++)
			if (c->rc[j])
				qc_refblock_set(q, c->rb, j - start, c->rc[j]);
		r = cp_bdev_pwrite(q->dev, c->rb, cs, blk * cs);
		if (r < 0)
			return r;
		t->high = CP_MAX(t->high, (blk + 1) * cs);
		k = start + per - 1;
	}
	return 0;
}

/* Write a new refcount structure describing the IMRT into clusters that
 * nothing references (QEMU's rebuild_refcount_structure algorithm: all
 * refblocks, then the reftable first fit, then again the refblocks that
 * cover it, until the reftable stops growing), flush, and only then
 * switch the header to it.  The old structure is leaked. */
static int ck_rebuild(struct ck *c)
{
	struct qcow *q = c->q;
	struct ck_rt t = { .what = "allocating reftable" };
	uint64_t cs = c->cs, rt_off = 0, *nrt = NULL;
	uint8_t *rtbuf = NULL;
	bool grown = false;
	int r;

	ck_msg(c, "Rebuilding refcount structure");
	r = ck_write_refblocks(c, &t, 0, c->nb, &grown);
	while (r >= 0 && grown) {
		uint64_t ffc = 0, tc = t.n * 8 / cs;
		t.what = "allocating reftable";
		r = ck_alloc(c, tc, &ffc, &rt_off);
		grown = false;
		if (r >= 0)
			r = ck_write_refblocks(c, &t, rt_off, rt_off + tc,
					       &grown);
	}
	if (r < 0)
		goto fail;

	t.what = "writing reftable";
	rtbuf = cp_bdev_alloc_buf(t.n * 8);
	nrt = cp_bdev_alloc_buf(t.n * 8);
	if (!rtbuf || !nrt) {
		r = -ENOMEM;
		goto fail;
	}
	for (uint64_t i = 0; i < t.n; i++) {
		nrt[i] = t.e[i];
		cp_put_be64(rtbuf + 8 * i, t.e[i]);
	}
	r = cp_bdev_pwrite(q->dev, rtbuf, t.n * 8, rt_off * cs);
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
	if (r < 0)
		goto fail;
	t.high = CP_MAX(t.high, rt_off * cs + t.n * 8);

	/* Everything is durable: make it current. */
	t.what = "setting reftable";
	pthread_mutex_lock(&q->lock);
	uint64_t old_off = q->refcount_table_offset;
	uint32_t old_clusters = q->refcount_table_clusters;
	uint64_t *old_rt = q->reftable, old_n = q->reftable_entries;
	q->refcount_table_offset = rt_off * cs;
	q->refcount_table_clusters = (uint32_t)(t.n * 8 / cs);
	q->reftable = nrt;
	q->reftable_entries = t.n;
	r = qc_header_update_locked(q);
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
	if (r < 0) {
		q->refcount_table_offset = old_off;
		q->refcount_table_clusters = old_clusters;
		q->reftable = old_rt;
		q->reftable_entries = old_n;
	} else {
		nrt = NULL;
		cp_bdev_free_buf(old_rt);
		qc_cache_clear(&q->rbc);
		q->free_cluster_index = 0;
	}
	pthread_mutex_unlock(&q->lock);
	if (r < 0)
		goto fail;
	c->rebuilt = true;
	c->changed = true;
	goto out;
fail:
	ck_msg(c, "ERROR %s: %s", t.what, strerror(-r));
	c->r.check_errors++;
out:
	if (t.high) { /* the file may have grown */
		uint64_t high = CP_ALIGN_UP(t.high, cs);
		pthread_mutex_lock(&q->lock);
		if (high > q->known_zero_from)
			q->known_zero_from = high;
		if (high > q->host_end)
			q->host_end = high;
		pthread_mutex_unlock(&q->lock);
	}
	ck_rcache_drop(c);
	free(t.e);
	cp_bdev_free_buf(nrt);
	cp_bdev_free_buf(rtbuf);
	return r;
}

/* --- COPIED flags ------------------------------------------------------- */

static int ck_write_l1(struct ck *c, uint32_t i, uint64_t e)
{
	struct qcow *q = c->q;
	uint64_t off = q->l1_table_offset + (uint64_t)i * 8;
	uint8_t be[8];
	int r;

	cp_put_be64(be, e);
	pthread_mutex_lock(&q->lock);
	r = qc_overlap_check_locked(q, off, 8, QC_META_L1);
	if (r >= 0)
		r = cp_bdev_pwrite(q->dev, be, 8, off);
	if (r >= 0)
		q->l1[i] = e;
	pthread_mutex_unlock(&q->lock);
	return r;
}

static void ck_copied(struct ck *c)
{
	struct qcow *q = c->q;
	uint64_t cs = c->cs, rc;
	bool repair;

	if (c->fix & 2u)
		repair = true;
	else if (c->fix & CP_CHECK_REPAIR_LEAKS)
		repair = !c->r.check_errors && !c->r.corruptions && !c->r.leaks;
	else
		repair = false;
	if (c->unsafe)
		repair = false;

	for (uint32_t i = 0; i < q->l1_size; i++) {
		uint64_t e = q->l1[i], l2 = e & QC_L1E_OFFSET_MASK;
		uint64_t dirty = 0;
		int r;

		repair = repair && ck_can_write(c);
		if (!l2 && !(e & QC_OFLAG_COPIED))
			continue;
		/* COPIED without an L2 table: QEMU's check would read the
		 * header as an L2 table, so clear it (refcount 0). */
		if (!l2)
			rc = 0;
		if ((!l2 || ck_disk_rc(c, l2 / cs, &rc) == 0) &&
		    (rc == 1) != !!(e & QC_OFLAG_COPIED)) {
			ck_msg(c, "%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu32
			       " l1_entry=%" PRIx64 " refcount=%" PRIu64,
			       repair ? "Repairing" : "ERROR", i, e, rc);
			if (repair) {
				r = ck_write_l1(c, i, rc == 1 ?
						e | QC_OFLAG_COPIED :
						e & ~QC_OFLAG_COPIED);
				c->changed = true;
				if (r < 0) {
					ck_msg(c, "ERROR: Could not write L1 "
					       "entry: %s", strerror(-r));
					c->write_errors++;
					c->r.corruptions++;
				} else {
					c->r.corruptions_fixed++;
					c->copied_fixed++;
				}
			} else {
				c->r.corruptions++;
			}
		}
		if (!l2 || l2 % cs || l2 >= c->file_len)
			continue; /* already reported */
		r = cp_bdev_pread(q->dev, c->buf, cs, l2);
		if (r < 0) {
			ck_msg(c, "ERROR: Could not read L2 table: %s",
			       strerror(-r));
			c->r.check_errors++;
			continue;
		}
		for (uint32_t j = 0; j < q->l2_entries; j++) {
			uint8_t *p = c->buf + (size_t)j * q->l2_entry_size;
			uint64_t le = cp_be64(p), off = le & QC_L2E_OFFSET_MASK;
			if ((le & QC_OFLAG_COMPRESSED) || !off)
				continue;
			if (ck_disk_rc(c, off / cs, &rc) < 0)
				continue;
			if ((rc == 1) == !!(le & QC_OFLAG_COPIED))
				continue;
			ck_msg(c, "%s OFLAG_COPIED data cluster: l2_entry=%"
			       PRIx64 " refcount=%" PRIu64,
			       repair ? "Repairing" : "ERROR", le, rc);
			if (repair) {
				cp_put_be64(p, rc == 1 ? le | QC_OFLAG_COPIED :
						 le & ~QC_OFLAG_COPIED);
				dirty++;
			} else {
				c->r.corruptions++;
			}
		}
		if (!dirty)
			continue;
		pthread_mutex_lock(&q->lock);
		r = qc_overlap_check_locked(q, l2, cs, QC_META_L2_REPAIR);
		pthread_mutex_unlock(&q->lock);
		if (r < 0) {
			ck_msg(c, "ERROR: Could not write L2 table; metadata "
			       "overlap check failed: %s", strerror(-r));
		} else {
			r = cp_bdev_pwrite(q->dev, c->buf, cs, l2);
			c->changed = true;
			if (r < 0)
				ck_msg(c, "ERROR: Could not write L2 table: %s",
				       strerror(-r));
		}
		if (r < 0) {
			c->write_errors++;
			c->r.corruptions += dirty;
		} else {
			c->r.corruptions_fixed += dirty;
			c->copied_fixed += dirty;
		}
	}
}

/* --- passes ------------------------------------------------------------- */

static int ck_pass(struct ck *c)
{
	struct qcow *q = c->q;
	struct cp_check_result saved;
	int r;

	memset(&c->r, 0, sizeof(c->r));
	c->nb = 0;
	if (c->rc)
		memset(c->rc, 0, c->cap * sizeof(*c->rc));
	c->rebuild = c->unsafe = c->rebuilt = false;
	c->highest = c->copied_fixed = 0;
	ck_rcache_drop(c);

	c->file_len = cp_bdev_size(q->dev);
	r = ck_grow(c, CP_DIV_ROUND_UP(c->file_len, c->cs));
	if (r < 0) {
		c->r.check_errors++;
		return cp_error(r, "%s: cannot check an image of %" PRIu64
				" clusters", q->name,
				CP_DIV_ROUND_UP(c->file_len, c->cs));
	}
	c->r.total_clusters = CP_DIV_ROUND_UP(q->size, c->cs);

	if ((r = ck_inc(c, 0, c->cs)) < 0 ||
	    (r = ck_l1(c, q->l1_table_offset, q->l1_size, q->l1, true)) < 0 ||
	    (r = ck_snapshots(c)) < 0 ||
	    (r = ck_inc(c, q->refcount_table_offset,
			(uint64_t)q->refcount_table_clusters * c->cs)) < 0 ||
	    (r = ck_bitmaps(c)) < 0 || (r = ck_refblocks(c)) < 0)
		return cp_error(r, "%s: check: %s", q->name, strerror(-r));

	saved = c->r;
	if (c->no_rebuild) { /* after a rebuild, QEMU reports only repairs */
		cp_check_report_fn rep = c->report;
		c->report = NULL;
		ck_compare(c, 0);
		c->report = rep;
	} else {
		ck_compare(c, 0);
	}
	if (c->rebuild && (c->fix & 2u) && !c->unsafe && !c->no_rebuild &&
	    ck_can_write(c)) {
		r = ck_rebuild(c);
		if (r == -ENOMEM)
			return cp_error(r, "%s: check: out of memory", q->name);
		if (r >= 0)
			return 0; /* the caller runs the next pass */
		c->unsafe = true; /* refcounts still broken: no COPIED repair */
	} else if (c->fix) {
		if (c->rebuild && c->no_rebuild) {
			ck_msg(c, "ERROR rebuilt refcount structure is still "
			       "broken");
			c->r.check_errors++;
		} else if (c->rebuild && !c->unsafe) {
			ck_msg(c, "ERROR need to rebuild refcount structures");
			c->r.check_errors++;
			c->r.image_end_offset = (c->highest + 1) * c->cs;
			return 0; /* QEMU stops here */
		} else if (c->unsafe && (c->r.leaks || c->r.corruptions)) {
			ck_msg(c, "ERROR not repairing refcounts: the references "
			       "of some tables could not be determined");
		} else if (c->r.leaks || c->r.corruptions) {
			c->r = saved;
			ck_compare(c, c->fix);
		}
	}
	ck_copied(c);
	c->r.image_end_offset = (c->highest + 1) * c->cs;
	return 0;
}

int qc_check(struct qcow *q, unsigned repair, struct cp_check_result *res,
	     cp_check_report_fn report, void *opaque)
{
	struct ck c = {
		.q = q, .fix = repair & CP_CHECK_REPAIR_ALL, .report = report,
		.opaque = opaque, .cs = q->cluster_size,
		.rc_max = (uint32_t)CP_MIN(q->max_refcount, UINT32_MAX),
	};
	struct cp_check_result p1, fin;
	uint64_t copied = 0;
	bool rebuilt;
	int r = -ENOMEM;

	memset(res, 0, sizeof(*res));
	if (c.fix && (q->readonly || cp_bdev_readonly(q->dev)))
		return cp_error(-EROFS, "%s: opened read-only; cannot repair",
				q->name);
	if (!q->readonly) { /* lazy refcounts keep refblocks cached */
		pthread_mutex_lock(&q->lock);
		r = qc_cache_has_dirty(&q->rbc) ? qc_cache_writeback(q, &q->rbc)
						: 0;
		if (r >= 0)
			r = cp_bdev_flush(q->dev);
		pthread_mutex_unlock(&q->lock);
		if (r < 0)
			return r;
		r = -ENOMEM;
	}
	c.rcache_n = (unsigned)CP_MAX(1u, CK_RC_CACHE_BYTES / c.cs);
	c.buf = cp_bdev_alloc_buf(c.cs);
	c.rb = cp_bdev_alloc_buf(c.cs);
	c.rcache = cp_bdev_alloc_buf((size_t)c.rcache_n * c.cs);
	c.rcache_ri = calloc(c.rcache_n, sizeof(*c.rcache_ri));
	if (!c.buf || !c.rb || !c.rcache || !c.rcache_ri) {
		cp_error(r, "%s: check: out of memory", q->name);
		goto out;
	}

	r = ck_sn_load(&c);
	if (r < 0) {
		res->check_errors = c.sn_check_errors;
		goto out;
	}
	r = ck_pass(&c);
	if (r < 0)
		goto out;
	p1 = c.r;
	fin = c.r;
	rebuilt = c.rebuilt;
	if (rebuilt) {
		/* Recount against the new structure: frees the old one (fresh
		 * leaks, not reported as fixed, as QEMU) and fixes COPIED. */
		c.no_rebuild = true;
		r = ck_pass(&c);
		if (r < 0)
			goto out;
		copied = c.copied_fixed;
		fin = c.r;
	}
	if (c.sn_corruptions && (c.fix & 2u)) {
		pthread_mutex_lock(&q->lock);
		qc_cache_clear(&q->rbc);
		qc_cache_clear(&q->l2c);
		q->free_cluster_index = 0;
		q->pending_free.len = 0;
		pthread_mutex_unlock(&q->lock);
		r = ck_sn_fix(&c);
		if (r < 0) {
			res->check_errors = c.sn_check_errors;
			goto out;
		}
	}
	if (c.changed) {
		/* Final counters describe the image after repair. */
		pthread_mutex_lock(&q->lock);
		qc_cache_clear(&q->rbc);
		qc_cache_clear(&q->l2c);
		q->free_cluster_index = 0;
		q->pending_free.len = 0; /* superseded by the repair */
		pthread_mutex_unlock(&q->lock);
		c.report = NULL;
		c.fix = 0;
		r = ck_pass(&c);
		c.report = report;
		if (r < 0)
			goto out;
		fin = c.r;
	}
	*res = fin;
	if (rebuilt) { /* as QEMU: what the rebuild made disappear */
		res->corruptions_fixed = copied + (p1.corruptions > fin.corruptions ?
					  p1.corruptions - fin.corruptions : 0);
		res->leaks_fixed = p1.leaks > fin.leaks ? p1.leaks - fin.leaks : 0;
	} else {
		res->corruptions_fixed = p1.corruptions_fixed;
		res->leaks_fixed = p1.leaks_fixed;
	}
	res->check_errors += c.write_errors + c.sn_check_errors;
	/* the snapshot table's own problems, as QEMU adds them */
	res->corruptions += c.sn_corruptions;
	res->corruptions_fixed += c.sn_fixed;

	if (repair) {
		pthread_mutex_lock(&q->lock);
		qc_cache_clear(&q->rbc);
		qc_cache_clear(&q->l2c);
		q->free_cluster_index = 0;
		/* As QEMU (qcow2_mark_clean, qcow2_mark_consistent). */
		if (!res->corruptions && !res->check_errors &&
		    (q->incompat & (QC_INCOMPAT_DIRTY | QC_INCOMPAT_CORRUPT)) &&
		    ck_can_write(&c)) {
			int e = qc_header_set_incompat_locked(
				q, 0, QC_INCOMPAT_DIRTY | QC_INCOMPAT_CORRUPT);
			if (e < 0) {
				ck_msg(&c, "ERROR: could not update the image "
				       "header: %s", strerror(-e));
				res->check_errors++;
			} else {
				q->corrupt = false;
				q->dirty_set = false;
			}
		}
		pthread_mutex_unlock(&q->lock);
		int e = cp_bdev_flush(q->dev);
		if (e < 0) {
			ck_msg(&c, "ERROR: flush failed: %s", strerror(-e));
			res->check_errors++;
		}
	}
	r = 0;
out:
	qc_snapshots_free(&c.sn);
	free(c.rc);
	free(c.rcache_ri);
	cp_bdev_free_buf(c.buf);
	cp_bdev_free_buf(c.rb);
	cp_bdev_free_buf(c.rcache);
	return r;
}
