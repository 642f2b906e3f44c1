/* qcow/bitmap.c - persistent dirty bitmaps (QCOW2 "bitmaps" extension,
 * autoclear bit 0), kept consistent as QEMU keeps them.
 *
 * On disk (docs/interop/qcow2.txt, "Bitmaps"): the extension names a
 * directory of entries (table offset, table size, flags in_use/auto/
 * extra_data_compatible, type 1, granularity bits 9..31, name); each
 * bitmap table holds one 64-bit entry per data cluster: the cluster's
 * offset, or 0 with bit 0 meaning "all ones" (1) or "all zeroes" (0).
 * Bit k of the bitmap covers guest bytes [k << gb, (k + 1) << gb); data
 * clusters store bits least significant first in each byte.
 *
 * Life cycle, as QEMU's block/qcow2-bitmap.c:
 *  - every open (check's too) reads the directory and loads every bitmap
 *    without the in_use flag into memory (qc_bitmaps_load); a directory
 *    or table QEMU would refuse makes the open fail (never silently
 *    dropped).  Bitmaps already in use at open are inconsistent: kept
 *    byte for byte, never used;
 *  - a read-write open then sets in_use on the loaded ones in the
 *    directory (written in place and flushed) before any guest write:
 *    from then on the copy on disk is stale and QEMU would call it
 *    inconsistent (qc_bitmaps_start_locked);
 *  - every guest write, zero write and discard sets the bits of its range
 *    in the enabled (auto) bitmaps (qc_bitmaps_mark: lock free, no
 *    allocation);
 *  - close (and a reopen read-only) stores them (qc_bitmaps_store_locked):
 *    changed bitmaps get new tables and data clusters, written with their
 *    refcounts and flushed; then the directory (in place when its layout
 *    is unchanged, otherwise a new one that the header extension is
 *    switched to, first sector last) with in_use cleared; the old clusters
 *    are freed last, through the pending-free list.  A cut anywhere leaves
 *    either in_use bitmaps (inconsistent, as after a QEMU crash) or the
 *    stored ones, and at worst leaked clusters.  Unchanged bitmaps only
 *    get in_use cleared in place, so a read-write open that writes
 *    nothing leaves the file as it was.
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BM_EXT_LEN 24
#define BM_ENTRY_LEN 24
#define BM_FLAG_IN_USE 0x1u
#define BM_FLAG_AUTO 0x2u
#define BM_FLAG_EXTRA_COMPAT 0x4u
#define BM_FLAGS_KNOWN 0x7u
#define BM_TYPE_DIRTY 1
#define BM_MIN_GRAN_BITS 9
#define BM_MAX_GRAN_BITS 31
#define BM_MAX_NAME 1023
#define BM_MAX_BITMAPS 65535
#define BM_MAX_TABLE 0x8000000u        /* entries */
#define BM_MAX_PHYS (64ull << 20)      /* bytes of one bitmap's data */
#define BM_MAX_DIR (1024ull * 65536)   /* directory bytes */
#define BM_TE_OFFSET_MASK 0x00fffffffffffe00ull
#define BM_TE_RESERVED 0xff000000000001feull
#define BM_TE_ALL_ONES 1ull
#define QC_AUTOCLEAR_BITMAPS 1ull
/* in-memory bitmaps of one image, at most (a hostile image could ask for
 * 65535 x 64 MiB) */
#define BM_MAX_MEM (1ull << 30)

static uint64_t bm_nbits(uint64_t size, unsigned gb)
{
	return size ? ((size - 1) >> gb) + 1 : 0;
}

/* Data clusters a bitmap of size/granularity needs (its table size). */
static uint64_t bm_table_size(const struct qcow *q, uint64_t size, unsigned gb)
{
	uint64_t bytes = CP_DIV_ROUND_UP(bm_nbits(size, gb), 8);
	return CP_DIV_ROUND_UP(bytes, q->cluster_size);
}

static uint64_t bm_entry_len(size_t name_len, uint32_t extra)
{
	return CP_ALIGN_UP(BM_ENTRY_LEN + (uint64_t)extra + name_len, 8);
}

static void bm_free(struct qc_bitmap *b)
{
	if (!b)
		return;
	free(b->name);
	free(b->extra);
	free(b->bits);
	free(b);
}

void qc_bitmaps_free(struct qcow *q)
{
	for (uint32_t i = 0; i < q->nb_bm; i++)
		bm_free(q->bm[i]);
	free(q->bm);
	q->bm = NULL;
	q->nb_bm = 0;
	atomic_store(&q->bm_ntrack, 0);
	free(q->bm_track);
	q->bm_track = NULL;
	free(q->bm_freed);
	q->bm_freed = NULL;
	q->nb_freed = 0;
}

static struct qc_ext *bm_ext(struct qcow *q)
{
	for (size_t i = 0; i < q->exts.len; i++)
		if (q->exts.ptr[i].type == QC_EXT_BITMAPS)
			return &q->exts.ptr[i];
	return NULL;
}

static int bm_bad(struct qcow *q, const char *fmt, const char *what)
{
	return cp_error(-EUCLEAN, "%s: bitmaps extension: %s%s%s%s "
			"(QEMU refuses such an image too)", q->name, fmt,
			what ? " '" : "", what ? what : "", what ? "'" : "");
}

/* Words of the in-memory bitmap. */
static uint64_t bm_words(const struct qc_bitmap *b)
{
	return CP_DIV_ROUND_UP(b->nbits, 64) ? CP_DIV_ROUND_UP(b->nbits, 64) : 1;
}

static int bm_alloc_bits(struct qc_bitmap *b, uint64_t nbits)
{
	uint64_t words = CP_DIV_ROUND_UP(nbits, 64) ? CP_DIV_ROUND_UP(nbits, 64) : 1;
	uint64_t *n = calloc(words, 8);
	if (!n)
		return -ENOMEM;
	if (b->bits) {
		uint64_t keep = CP_MIN(words, bm_words(b));
		memcpy(n, b->bits, keep * 8);
		free(b->bits);
	}
	b->bits = n;
	b->nbits = nbits;
	/* bits past the end stay clear */
	if (nbits % 64)
		n[words - 1] &= (1ull << (nbits % 64)) - 1;
	return 0;
}

/* Set bits [first, last] of b (atomically: writers run on many threads). */
static void bm_set_bits(struct qc_bitmap *b, uint64_t first, uint64_t last)
{
	if (last >= b->nbits)
		last = b->nbits - 1;
	for (uint64_t k = first; k <= last;) {
		uint64_t w = k / 64, lo = k % 64;
		uint64_t hi = CP_MIN(63, lo + (last - k));
		uint64_t m = (hi == 63 ? ~0ull : ((1ull << (hi + 1)) - 1)) &
			     ~((1ull << lo) - 1);
		if ((__atomic_load_n(&b->bits[w], __ATOMIC_RELAXED) & m) != m)
			__atomic_fetch_or(&b->bits[w], m, __ATOMIC_RELAXED);
		k += hi - lo + 1;
	}
}

static bool bm_get_bit(const struct qc_bitmap *b, uint64_t k)
{
	return (b->bits[k / 64] >> (k % 64)) & 1;
}

/* Mark guest bytes [off, off + len) dirty in b. */
static void bm_mark(struct qc_bitmap *b, uint64_t off, uint64_t len)
{
	if (!len || !b->nbits || (off >> b->gran_bits) >= b->nbits)
		return;
	bm_set_bits(b, off >> b->gran_bits, (off + len - 1) >> b->gran_bits);
	if (!__atomic_load_n(&b->modified, __ATOMIC_RELAXED))
		__atomic_store_n(&b->modified, true, __ATOMIC_RELAXED);
}

void qc_bitmaps_mark(struct qcow *q, uint64_t off, uint64_t len)
{
	unsigned n = atomic_load_explicit(&q->bm_ntrack, memory_order_acquire);
	for (unsigned i = 0; i < n; i++)
		bm_mark(q->bm_track[i], off, len);
}

/* Rebuild the list of bitmaps writes mark (no request in flight). */
static int bm_retrack(struct qcow *q)
{
	unsigned n = 0;
	atomic_store(&q->bm_ntrack, 0);
	struct qc_bitmap **t = realloc(q->bm_track, (q->nb_bm + 1) * sizeof(*t));
	if (!t)
		return -ENOMEM;
	q->bm_track = t;
	for (uint32_t i = 0; i < q->nb_bm; i++) {
		struct qc_bitmap *b = q->bm[i];
		if (b->bits && (b->flags & BM_FLAG_AUTO))
			q->bm_track[n++] = b;
	}
	atomic_store_explicit(&q->bm_ntrack, n, memory_order_release);
	return 0;
}

/* Read bitmap b's data from its table into b->bits (allocated here). */
static int bm_read_data(struct qcow *q, struct qc_bitmap *b)
{
	uint64_t cs = q->cluster_size;
	int r = bm_alloc_bits(b, bm_nbits(q->size, b->gran_bits));
	if (r < 0)
		return r;
	uint64_t tbytes = (uint64_t)b->table_size * 8;
	uint8_t *t = cp_bdev_alloc_buf(CP_ALIGN_UP(tbytes, 512));
	uint8_t *d = cp_bdev_alloc_buf(cs);
	if (!t || !d) {
		r = -ENOMEM;
		goto out;
	}
	r = cp_bdev_pread(q->dev, t, CP_ALIGN_UP(tbytes, 512), b->table_off);
	if (r < 0) {
		r = cp_error_prefix(r, "%s: reading the table of bitmap '%s'",
				    q->name, b->name);
		goto out;
	}
	uint64_t bytes = CP_DIV_ROUND_UP(b->nbits, 8);
	for (uint64_t i = 0; i < b->table_size && i * cs < bytes; i++) {
		uint64_t e = cp_be64(t + i * 8), off = e & BM_TE_OFFSET_MASK;
		uint64_t n = CP_MIN(cs, bytes - i * cs);
		if ((e & BM_TE_RESERVED) || off % cs ||
		    (off && off + cs > q->host_end)) {
			r = bm_bad(q, "invalid table entry in bitmap", b->name);
			goto out;
		}
		if (!off) {
			if (e & BM_TE_ALL_ONES)
				bm_set_bits(b, i * cs * 8,
					    CP_MIN(b->nbits, (i + 1) * cs * 8) - 1);
			continue;
		}
		r = cp_bdev_pread(q->dev, d, cs, off);
		if (r < 0) {
			r = cp_error_prefix(r, "%s: reading bitmap '%s'", q->name,
					    b->name);
			goto out;
		}
		/* little-endian bytes: bit k is bit k%8 of byte k/8 */
		for (uint64_t j = 0; j < n; j++) {
			uint64_t byte = i * cs + j;
			uint64_t w = byte / 8;
			b->bits[w] |= (uint64_t)d[j] << (8 * (byte % 8));
		}
	}
	if (b->nbits % 64)
		b->bits[bm_words(b) - 1] &= (1ull << (b->nbits % 64)) - 1;
	r = 0;
out:
	cp_bdev_free_buf(t);
	cp_bdev_free_buf(d);
	return r;
}

/* Build the directory from q->bm; with in_use_all, every consistent bitmap
 * carries in_use (the mark of an open session). */
static int bm_dir_build(struct qcow *q, bool in_use_all, uint8_t **out,
			uint64_t *len)
{
	uint64_t dsize = 0;
	for (uint32_t i = 0; i < q->nb_bm; i++)
		dsize += bm_entry_len(strlen(q->bm[i]->name), q->bm[i]->extra_size);
	uint64_t alloc = CP_ALIGN_UP(dsize ? dsize : 1, q->cluster_size);
	uint8_t *d = cp_bdev_alloc_buf(alloc);
	if (!d)
		return -ENOMEM;
	memset(d, 0, alloc);
	uint64_t p = 0;
	for (uint32_t i = 0; i < q->nb_bm; i++) {
		struct qc_bitmap *b = q->bm[i];
		size_t nl = strlen(b->name);
		uint32_t fl = b->flags;
		if (b->inconsistent || in_use_all)
			fl |= BM_FLAG_IN_USE;
		else
			fl &= ~BM_FLAG_IN_USE;
		cp_put_be64(d + p, b->table_off);
		cp_put_be32(d + p + 8, b->table_size);
		cp_put_be32(d + p + 12, fl);
		d[p + 16] = BM_TYPE_DIRTY;
		d[p + 17] = (uint8_t)b->gran_bits;
		cp_put_be16(d + p + 18, (uint16_t)nl);
		cp_put_be32(d + p + 20, b->extra_size);
		if (b->extra_size)
			memcpy(d + p + 24, b->extra, b->extra_size);
		memcpy(d + p + 24 + b->extra_size, b->name, nl);
		p += bm_entry_len(nl, b->extra_size);
	}
	*out = d;
	*len = dsize;
	return 0;
}

static int bm_write_dir_in_place(struct qcow *q, bool in_use_all)
{
	uint8_t *d;
	uint64_t len;
	int r = bm_dir_build(q, in_use_all, &d, &len);
	if (r < 0)
		return r;
	/* the directory's clusters are its own: whole sectors are written */
	uint64_t wlen = CP_ALIGN_UP(len, 512);
	r = qc_overlap_check_locked(q, q->bm_dir_off, wlen, QC_META_NONE);
	if (r >= 0)
		r = cp_bdev_pwrite(q->dev, d, wlen, q->bm_dir_off);
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
	cp_bdev_free_buf(d);
	if (r < 0)
		return cp_error_prefix(r, "%s: writing the bitmap directory",
				       q->name);
	return 0;
}

static bool bm_name_ok(const char *s, size_t n)
{
	return n && n <= BM_MAX_NAME && memchr(s, 0, n) == NULL;
}

struct qc_bitmap *qc_bitmap_find(struct qcow *q, const char *name)
{
	for (uint32_t i = 0; i < q->nb_bm; i++)
		if (!strcmp(q->bm[i]->name, name))
			return q->bm[i];
	return NULL;
}

static int bm_name_cmp(const void *a, const void *b)
{
	return strcmp((*(struct qc_bitmap *const *)a)->name,
		      (*(struct qc_bitmap *const *)b)->name);
}

/* Two bitmaps of one name fail QEMU's open too (sorted: n log n). */
static int bm_check_names(struct qcow *q)
{
	struct qc_bitmap **v = malloc((q->nb_bm + 1) * sizeof(*v));
	int r = 0;
	if (!v)
		return -ENOMEM;
	memcpy(v, q->bm, q->nb_bm * sizeof(*v));
	qsort(v, q->nb_bm, sizeof(*v), bm_name_cmp);
	for (uint32_t i = 1; i < q->nb_bm && r >= 0; i++)
		if (!strcmp(v[i - 1]->name, v[i]->name))
			r = bm_bad(q, "duplicate bitmap", v[i]->name);
	free(v);
	return r;
}

/* Parse the directory (every open).  With load, the consistent bitmaps'
 * data is read too (read-write opens). */
static int bm_parse(struct qcow *q, bool load)
{
	struct qc_ext *x = bm_ext(q);
	uint64_t cs = q->cluster_size;
	if (!x || !(q->autoclear & QC_AUTOCLEAR_BITMAPS) || q->version < 3)
		return 0;
	if (x->len < BM_EXT_LEN)
		return bm_bad(q, "extension too short", NULL);
	uint32_t nb = cp_be32(x->data);
	uint64_t dsize = cp_be64(x->data + 8), doff = cp_be64(x->data + 16);
	if (cp_be32(x->data + 4))
		return bm_bad(q, "reserved field is not zero", NULL);
	if (nb > BM_MAX_BITMAPS)
		return bm_bad(q, "too many bitmaps", NULL);
	if (!nb)
		return bm_bad(q, "no bitmaps in the extension", NULL);
	if (dsize > BM_MAX_DIR || dsize < BM_ENTRY_LEN || doff % cs ||
	    doff + dsize > q->host_end)
		return bm_bad(q, "invalid bitmap directory location", NULL);
	uint8_t *d = malloc(dsize);
	if (!d)
		return -ENOMEM;
	int r = cp_bdev_pread(q->dev, d, dsize, doff);
	if (r < 0) {
		free(d);
		return cp_error_prefix(r, "%s: reading the bitmap directory",
				       q->name);
	}
	q->bm = calloc(nb, sizeof(*q->bm));
	if (!q->bm) {
		free(d);
		return -ENOMEM;
	}
	uint64_t p = 0;
	r = 0;
	for (uint32_t i = 0; i < nb; i++) {
		if (p + BM_ENTRY_LEN > dsize) {
			r = bm_bad(q, "bitmap directory is truncated", NULL);
			break;
		}
		uint32_t extra = cp_be32(d + p + 20);
		unsigned nl = cp_be16(d + p + 18);
		uint64_t el = bm_entry_len(nl, extra);
		if (p + el > dsize) {
			r = bm_bad(q, "bitmap directory is truncated", NULL);
			break;
		}
		struct qc_bitmap *b = calloc(1, sizeof(*b));
		char *name = b ? strndup((char *)d + p + 24 + extra, nl) : NULL;
		if (!b || !name) {
			free(b);
			r = -ENOMEM;
			break;
		}
		b->name = name;
		q->bm[q->nb_bm++] = b;
		b->table_off = cp_be64(d + p);
		b->table_size = cp_be32(d + p + 8);
		b->flags = cp_be32(d + p + 12);
		b->gran_bits = d[p + 17];
		b->extra_size = extra;
		if (extra) {
			b->extra = malloc(extra);
			if (!b->extra) {
				r = -ENOMEM;
				break;
			}
			memcpy(b->extra, d + p + 24, extra);
		}
		/* QEMU's check_dir_entry */
		if (!b->table_size || !b->table_off || b->table_off % cs ||
		    b->table_size > BM_MAX_TABLE ||
		    b->gran_bits > BM_MAX_GRAN_BITS ||
		    b->gran_bits < BM_MIN_GRAN_BITS ||
		    (b->flags & ~BM_FLAGS_KNOWN) || !bm_name_ok(name, nl) ||
		    d[p + 16] != BM_TYPE_DIRTY ||
		    (uint64_t)b->table_size * cs > BM_MAX_PHYS ||
		    (!(b->flags & BM_FLAG_IN_USE) &&
		     b->table_size < bm_table_size(q, q->size, b->gran_bits))) {
			r = bm_bad(q, "constraints not satisfied by bitmap", b->name);
			break;
		}
		if (extra && !(b->flags & BM_FLAG_EXTRA_COMPAT)) {
			r = cp_error(-ENOTSUP, "%s: bitmap '%s' has extra data "
				     "cowpool does not understand", q->name,
				     b->name);
			break;
		}
		b->inconsistent = (b->flags & BM_FLAG_IN_USE) != 0;
		p += el;
	}
	free(d);
	if (r >= 0 && p != dsize)
		r = bm_bad(q, "bitmap directory size does not match its entries",
			   NULL);
	if (r >= 0)
		r = bm_check_names(q);
	if (r < 0)
		return r;
	q->bm_dir_off = doff;
	q->bm_dir_size = dsize;
	uint64_t mem = 0;
	for (uint32_t i = 0; load && i < q->nb_bm; i++) {
		if (q->bm[i]->inconsistent)
			continue;
		mem += CP_DIV_ROUND_UP(bm_nbits(q->size, q->bm[i]->gran_bits), 8);
		if (mem > BM_MAX_MEM)
			return cp_error(-ENOTSUP, "%s: the image's bitmaps need more than %llu MiB of memory",
					q->name, BM_MAX_MEM >> 20);
		r = bm_read_data(q, q->bm[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

int qc_bitmaps_load(struct qcow *q)
{
	int r = bm_parse(q, true);
	if (r < 0) {
		qc_bitmaps_free(q);
		return r;
	}
	return 0;
}

int qc_bitmaps_start_locked(struct qcow *q)
{
	bool any = false;
	for (uint32_t i = 0; i < q->nb_bm; i++)
		if (!q->bm[i]->inconsistent)
			any = true;
	if (any) {
		int r = bm_write_dir_in_place(q, true);
		if (r < 0)
			return r;
		q->bm_active = true;
	}
	return bm_retrack(q);
}

/* Free a stored bitmap's table and data clusters (after the directory no
 * longer points at them). */
static int bm_free_stored_locked(struct qcow *q, uint64_t toff, uint32_t tsize)
{
	uint64_t cs = q->cluster_size;
	uint64_t tbytes = CP_ALIGN_UP((uint64_t)tsize * 8, cs);
	if (!toff || !tsize)
		return 0;
	uint8_t *t = cp_bdev_alloc_buf(tbytes);
	if (!t)
		return -ENOMEM;
	int r = cp_bdev_pread(q->dev, t, tbytes, toff);
	for (uint32_t i = 0; r >= 0 && i < tsize; i++) {
		uint64_t e = cp_be64(t + (uint64_t)i * 8);
		uint64_t off = e & BM_TE_OFFSET_MASK;
		/* an in-use bitmap's table was never validated: skip what
		 * QEMU's check_table_entry() would refuse */
		if (off && off % cs == 0 && !(e & BM_TE_RESERVED))
			r = qc_free_later_locked(q, off, cs);
	}
	cp_bdev_free_buf(t);
	if (r >= 0)
		r = qc_free_later_locked(q, toff, tbytes);
	return r;
}

/* Write b's data to new clusters and a new table. */
static int bm_write_new_locked(struct qcow *q, struct qc_bitmap *b)
{
	uint64_t cs = q->cluster_size;
	uint64_t tsize = bm_table_size(q, q->size, b->gran_bits);
	uint64_t bytes = CP_DIV_ROUND_UP(b->nbits, 8);
	if (!tsize)
		tsize = 1;
	uint64_t tbytes = CP_ALIGN_UP(tsize * 8, cs);
	uint8_t *t = cp_bdev_alloc_buf(tbytes);
	uint8_t *d = cp_bdev_alloc_buf(cs);
	int r = 0;
	if (!t || !d) {
		r = -ENOMEM;
		goto out;
	}
	memset(t, 0, tbytes);
	for (uint64_t i = 0; i < tsize && i * cs < bytes; i++) {
		uint64_t n = CP_MIN(cs, bytes - i * cs);
		bool zero = true;
		memset(d, 0, cs);
		for (uint64_t j = 0; j < n; j++) {
			uint64_t byte = i * cs + j;
			d[j] = (uint8_t)(b->bits[byte / 8] >> (8 * (byte % 8)));
			if (d[j])
				zero = false;
		}
		if (zero)
			continue;
		uint64_t off;
		r = qc_alloc_clusters_locked(q, 1, &off);
		if (r >= 0)
			r = cp_bdev_pwrite(q->dev, d, cs, off);
		if (r < 0)
			goto out;
		cp_put_be64(t + i * 8, off);
	}
	uint64_t toff;
	r = qc_alloc_clusters_locked(q, tbytes / cs, &toff);
	if (r >= 0)
		r = cp_bdev_pwrite(q->dev, t, tbytes, toff);
	if (r < 0)
		goto out;
	b->table_off = toff;
	b->table_size = (uint32_t)tsize;
out:
	cp_bdev_free_buf(t);
	cp_bdev_free_buf(d);
	if (r < 0)
		return cp_error_prefix(r, "%s: storing bitmap '%s'", q->name,
				       b->name);
	return 0;
}

/* Point the header's bitmaps extension at the directory (or drop it). */
static int bm_header_switch_locked(struct qcow *q, uint64_t doff, uint64_t dsize)
{
	struct qc_ext *x = bm_ext(q);
	if (q->nb_bm && !x) {
		struct qc_ext n = { QC_EXT_BITMAPS, BM_EXT_LEN, calloc(1, BM_EXT_LEN) };
		if (!n.data || qc_ext_vec_append(&q->exts, n) < 0) {
			free(n.data);
			return -ENOMEM;
		}
		/* right after the feature table, where QEMU writes it */
		size_t last = q->exts.len - 1;
		for (size_t k = 0; k < last; k++) {
			if (q->exts.ptr[k].type != QC_EXT_FEATURE_TABLE)
				continue;
			memmove(q->exts.ptr + k + 2, q->exts.ptr + k + 1,
				(last - k - 1) * sizeof(n));
			q->exts.ptr[k + 1] = n;
			break;
		}
		x = bm_ext(q);
	}
	if (x && x->len != BM_EXT_LEN) { /* a stale extension of odd size */
		uint8_t *d = calloc(1, BM_EXT_LEN);
		if (!d)
			return -ENOMEM;
		free(x->data);
		x->data = d;
		x->len = BM_EXT_LEN;
	}
	uint64_t oldac = q->autoclear;
	if (q->nb_bm) {
		cp_put_be32(x->data, q->nb_bm);
		cp_put_be32(x->data + 4, 0);
		cp_put_be64(x->data + 8, dsize);
		cp_put_be64(x->data + 16, doff);
		q->autoclear |= QC_AUTOCLEAR_BITMAPS;
	} else if (x) {
		free(x->data);
		size_t k = (size_t)(x - q->exts.ptr);
		memmove(x, x + 1, (q->exts.len - k - 1) * sizeof(*x));
		q->exts.len--;
		q->autoclear &= ~QC_AUTOCLEAR_BITMAPS;
	}
	int r = qc_header_rewrite_locked(q);
	if (r < 0) {
		q->autoclear = oldac;
		return r;
	}
	q->bm_dir_off = doff;
	q->bm_dir_size = dsize;
	return 0;
}

int qc_bitmaps_store_locked(struct qcow *q)
{
	if (!q->bm_active && !q->bm_layout)
		return 0;
	uint64_t cs = q->cluster_size;
	struct qc_free *old = calloc(q->nb_bm + 1, sizeof(*old));
	if (!old)
		return -ENOMEM;
	int r = 0;
	/* 1. new tables and data for what changed */
	for (uint32_t i = 0; i < q->nb_bm && r >= 0; i++) {
		struct qc_bitmap *b = q->bm[i];
		if (b->inconsistent || !b->bits)
			continue;
		if (!b->modified && b->table_off &&
		    b->table_size == bm_table_size(q, q->size, b->gran_bits))
			continue;
		old[i].off = b->table_off;
		old[i].len = b->table_size;
		r = bm_write_new_locked(q, b);
	}
	/* 2. their refcounts and contents on disk */
	if (r >= 0)
		r = qc_cache_writeback(q, &q->rbc);
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
	/* 3. the directory, in_use cleared */
	uint64_t old_doff = q->bm_dir_off, old_dsize = q->bm_dir_size;
	bool moved = false;
	if (r >= 0) {
		uint8_t *d = NULL;
		uint64_t dlen = 0;
		r = bm_dir_build(q, false, &d, &dlen);
		if (r >= 0 && !q->bm_layout && dlen == q->bm_dir_size) {
			cp_bdev_free_buf(d);
			r = bm_write_dir_in_place(q, false);
		} else if (r >= 0) {
			uint64_t doff = 0;
			if (q->nb_bm) {
				uint64_t n = CP_DIV_ROUND_UP(dlen, cs);
				r = qc_alloc_clusters_locked(q, n, &doff);
				if (r >= 0)
					r = cp_bdev_pwrite(q->dev, d, n * cs, doff);
				if (r >= 0)
					r = qc_cache_writeback(q, &q->rbc);
				if (r >= 0)
					r = cp_bdev_flush(q->dev);
			}
			cp_bdev_free_buf(d);
			if (r >= 0)
				r = bm_header_switch_locked(q, doff, dlen);
			if (r >= 0)
				moved = true;
			else
				cp_error_prefix(r, "%s: writing the bitmap "
						"directory", q->name);
		}
	}
	/* 4. the old clusters, now unreferenced */
	if (r >= 0) {
		for (uint32_t i = 0; i < q->nb_bm && r >= 0; i++)
			r = bm_free_stored_locked(q, old[i].off, (uint32_t)old[i].len);
		for (uint32_t i = 0; i < q->nb_freed && r >= 0; i++)
			r = bm_free_stored_locked(q, q->bm_freed[i].off,
						  (uint32_t)q->bm_freed[i].len);
		if (r >= 0 && moved && old_doff && old_dsize)
			r = qc_free_later_locked(q, old_doff,
						 CP_ALIGN_UP(old_dsize, cs));
		free(q->bm_freed);
		q->bm_freed = NULL;
		q->nb_freed = 0;
		q->bm_active = false;
		q->bm_layout = false;
		for (uint32_t i = 0; i < q->nb_bm; i++)
			q->bm[i]->modified = false;
	}
	free(old);
	return r;
}

/* --- public API -------------------------------------------------------- */

static int bm_need_rw(cp_image *img, struct qcow **qp)
{
	if (!img->q)
		return cp_error(-ENOTSUP, "%s: only qcow2 images have bitmaps",
				img->filename);
	if (img->q->version < 3)
		return cp_error(-ENOTSUP, "%s: cannot store dirty bitmaps in qcow2 v2 files",
				img->filename);
	if (img->readonly || img->q->readonly)
		return cp_error(-EROFS, "%s: image is read-only", img->filename);
	*qp = img->q;
	return 0;
}

static int bm_usable(struct qcow *q, const char *name, struct qc_bitmap **out)
{
	struct qc_bitmap *b = qc_bitmap_find(q, name);
	if (!b)
		return cp_error(-ENOENT, "%s: dirty bitmap '%s' not found",
				q->name, name);
	if (b->inconsistent || !b->bits)
		return cp_error(-EBUSY, "%s: bitmap '%s' is inconsistent and "
				"cannot be used (remove it with 'cowpool bitmap "
				"--remove')", q->name, name);
	*out = b;
	return 0;
}

void cp_bitmap_add_opts_init(struct cp_bitmap_add_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
}

int cp_image_bitmap_count(cp_image *img)
{
	return img->q ? (int)img->q->nb_bm : 0;
}

int cp_image_bitmap_get(cp_image *img, unsigned i, struct cp_bitmap_info *bi)
{
	struct qcow *q = img->q;
	if (!q || i >= q->nb_bm)
		return cp_error(-ENOENT, "%s: no bitmap %u", img->filename, i);
	struct qc_bitmap *b = q->bm[i];
	memset(bi, 0, sizeof(*bi));
	snprintf(bi->name, sizeof(bi->name), "%s", b->name);
	bi->granularity = 1u << b->gran_bits;
	bi->in_use = b->inconsistent;
	bi->enabled = (b->flags & BM_FLAG_AUTO) != 0;
	return 0;
}

int cp_image_bitmap_add(cp_image *img, const char *name,
			const struct cp_bitmap_add_opts *o)
{
	CP_API_ENTER();
	struct qcow *q;
	int r = bm_need_rw(img, &q);
	if (r < 0)
		return r;
	size_t nl = strlen(name);
	if (!bm_name_ok(name, nl))
		return cp_error(-EINVAL, "%s: bitmap name must be 1 to %d bytes",
				img->filename, BM_MAX_NAME);
	uint64_t g = o->granularity;
	if (!g)
		g = CP_MIN(65536, CP_MAX(4096, q->cluster_size));
	if (!cp_is_pow2(g) || g < 512)
		return cp_error(-EINVAL, "%s: granularity must be power of 2 and at least 512",
				img->filename);
	if (g > (1ull << BM_MAX_GRAN_BITS))
		return cp_error(-EINVAL, "%s: granularity must be at most %llu",
				img->filename, 1ull << BM_MAX_GRAN_BITS);
	pthread_mutex_lock(&q->lock);
	if (qc_bitmap_find(q, name)) {
		r = cp_error(-EEXIST, "%s: bitmap already exists: %s",
			     img->filename, name);
		goto out;
	}
	if (q->nb_bm >= BM_MAX_BITMAPS) {
		r = cp_error(-ENOSPC, "%s: the image holds %d bitmaps already",
			     img->filename, BM_MAX_BITMAPS);
		goto out;
	}
	struct qc_bitmap *b = calloc(1, sizeof(*b));
	struct qc_bitmap **nbm = realloc(q->bm, (q->nb_bm + 1) * sizeof(*nbm));
	if (nbm)
		q->bm = nbm;
	if (!b || !nbm || !(b->name = strdup(name))) {
		bm_free(b);
		r = -ENOMEM;
		goto out;
	}
	b->gran_bits = (unsigned)__builtin_ctzll(g);
	b->flags = o->disabled ? 0 : BM_FLAG_AUTO;
	if ((uint64_t)bm_table_size(q, q->size, b->gran_bits) * q->cluster_size >
	    BM_MAX_PHYS) {
		bm_free(b);
		r = cp_error(-EINVAL, "%s: a bitmap of granularity %" PRIu64
			     " is too big for this disk", img->filename, g);
		goto out;
	}
	r = bm_alloc_bits(b, bm_nbits(q->size, b->gran_bits));
	if (r < 0) {
		bm_free(b);
		goto out;
	}
	b->modified = true;
	q->bm[q->nb_bm++] = b;
	q->bm_layout = true;
	r = bm_retrack(q);
out:
	pthread_mutex_unlock(&q->lock);
	return r;
}

int cp_image_bitmap_remove(cp_image *img, const char *name)
{
	CP_API_ENTER();
	struct qcow *q;
	int r = bm_need_rw(img, &q);
	if (r < 0)
		return r;
	pthread_mutex_lock(&q->lock);
	struct qc_bitmap *b = qc_bitmap_find(q, name);
	if (!b) {
		r = cp_error(-ENOENT, "%s: dirty bitmap '%s' not found",
			     img->filename, name);
		goto out;
	}
	struct qc_free *nf = realloc(q->bm_freed, (q->nb_freed + 1) * sizeof(*nf));
	if (!nf) {
		r = -ENOMEM;
		goto out;
	}
	q->bm_freed = nf;
	q->bm_freed[q->nb_freed].off = b->table_off;
	q->bm_freed[q->nb_freed].len = b->table_size;
	q->nb_freed++;
	atomic_store(&q->bm_ntrack, 0);
	uint32_t i = 0;
	while (q->bm[i] != b)
		i++;
	memmove(q->bm + i, q->bm + i + 1, (q->nb_bm - i - 1) * sizeof(*q->bm));
	q->nb_bm--;
	bm_free(b);
	q->bm_layout = true;
	r = bm_retrack(q);
out:
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* The usable bitmap name of a read-write image, q->lock held on success. */
static int bm_lock_usable(cp_image *img, const char *name, struct qcow **qp,
			  struct qc_bitmap **bp)
{
	int r = bm_need_rw(img, qp);
	if (r < 0)
		return r;
	pthread_mutex_lock(&(*qp)->lock);
	r = bm_usable(*qp, name, bp);
	if (r < 0)
		pthread_mutex_unlock(&(*qp)->lock);
	return r;
}

int cp_image_bitmap_clear(cp_image *img, const char *name)
{
	CP_API_ENTER();
	struct qcow *q;
	struct qc_bitmap *b;
	int r = bm_lock_usable(img, name, &q, &b);
	if (r < 0)
		return r;
	memset(b->bits, 0, bm_words(b) * 8);
	b->modified = true;
	pthread_mutex_unlock(&q->lock);
	return 0;
}

int cp_image_bitmap_enable(cp_image *img, const char *name, bool enable)
{
	CP_API_ENTER();
	struct qcow *q;
	struct qc_bitmap *b;
	int r = bm_lock_usable(img, name, &q, &b);
	if (r < 0)
		return r;
	b->flags = enable ? (b->flags | BM_FLAG_AUTO) : (b->flags & ~BM_FLAG_AUTO);
	r = bm_retrack(q);
	pthread_mutex_unlock(&q->lock);
	return r;
}

int cp_image_bitmap_merge(cp_image *img, const char *name, cp_image *src,
			  const char *src_name)
{
	CP_API_ENTER();
	struct qcow *q, *sq;
	struct qc_bitmap *b, *sb, tmp;
	int r = bm_need_rw(img, &q);
	if (r < 0)
		return r;
	if (!src)
		src = img;
	sq = src->q;
	if (!sq)
		return cp_error(-ENOENT, "%s: dirty bitmap '%s' not found",
				src->filename, src_name);
	if (sq != q)
		pthread_mutex_lock(&sq->lock);
	sb = qc_bitmap_find(sq, src_name);
	memset(&tmp, 0, sizeof(tmp));
	if (!sb)
		r = cp_error(-ENOENT, "%s: dirty bitmap '%s' not found",
			     src->filename, src_name);
	else if (sb->inconsistent)
		r = cp_error(-EBUSY, "%s: bitmap '%s' is inconsistent and "
			     "cannot be used", src->filename, src_name);
	else if (!sb->bits) {
		/* a read-only source: read its data now */
		tmp = *sb;
		tmp.bits = NULL;
		r = bm_read_data(sq, &tmp);
		sb = &tmp;
	}
	uint64_t ssize = sq->size;
	if (sq != q)
		pthread_mutex_unlock(&sq->lock);
	if (r < 0)
		goto out_tmp;
	pthread_mutex_lock(&q->lock);
	r = bm_usable(q, name, &b);
	if (r >= 0 && ssize != q->size)
		r = cp_error(-EINVAL, "%s: bitmaps are of different sizes "
			     "(destination %" PRIu64 ", source %" PRIu64
			     ") and can't be merged", img->filename, q->size,
			     ssize);
	if (r >= 0) {
		for (uint64_t k = 0; k < sb->nbits; k++) {
			if (!sb->bits[k / 64]) {
				k |= 63;
				continue;
			}
			if (bm_get_bit(sb, k))
				bm_mark(b, k << sb->gran_bits, 1ull << sb->gran_bits);
		}
		b->modified = true;
	}
	pthread_mutex_unlock(&q->lock);
out_tmp:
	free(tmp.bits);
	return r;
}

int cp_image_bitmap_status(cp_image *img, const char *name, uint64_t offset,
			   uint64_t len, uint64_t *pnum)
{
	CP_API_ENTER();
	struct qcow *q = img->q;
	struct qc_bitmap *b;
	if (!q)
		return cp_error(-ENOENT, "%s: dirty bitmap '%s' not found",
				img->filename, name);
	if (offset >= q->size || !len)
		return cp_error(-EINVAL, "%s: offset %" PRIu64 " is beyond the end of the disk",
				img->filename, offset);
	pthread_mutex_lock(&q->lock);
	int r = bm_usable(q, name, &b);
	if (r >= 0) {
		uint64_t end = CP_MIN(q->size, offset + CP_MIN(len, q->size));
		uint64_t k = offset >> b->gran_bits;
		bool v = bm_get_bit(b, k);
		uint64_t e = (k + 1) << b->gran_bits;
		while (e < end && bm_get_bit(b, e >> b->gran_bits) == v)
			e += 1ull << b->gran_bits;
		*pnum = CP_MIN(e, end) - offset;
		r = v;
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* --- measure ----------------------------------------------------------- */

uint64_t qc_bitmaps_measure(struct qcow *src, uint64_t size, uint32_t cs)
{
	uint64_t total = 0, dir = 0;
	for (uint32_t i = 0; i < src->nb_bm; i++) {
		struct qc_bitmap *b = src->bm[i];
		uint64_t bytes = CP_DIV_ROUND_UP(bm_nbits(size, b->gran_bits), 8);
		uint64_t clusters = CP_DIV_ROUND_UP(bytes, cs);
		total += clusters * cs + CP_ALIGN_UP(clusters * 8, cs);
		dir += bm_entry_len(strlen(b->name), 0);
	}
	return total + CP_ALIGN_UP(dir, cs);
}

/* --- resize ------------------------------------------------------------ */

int qc_bitmaps_resize_check_locked(struct qcow *q)
{
	for (uint32_t i = 0; i < q->nb_bm; i++)
		if (q->bm[i]->inconsistent)
			return cp_error(-EBUSY, "%s: bitmap '%s' is inconsistent "
					"and cannot be used (remove it with "
					"'cowpool bitmap --remove')", q->name,
					q->bm[i]->name);
	return 0;
}

int qc_bitmaps_resize_locked(struct qcow *q, uint64_t new_size)
{
	atomic_store(&q->bm_ntrack, 0);
	int r = 0;
	for (uint32_t i = 0; i < q->nb_bm && r >= 0; i++) {
		struct qc_bitmap *b = q->bm[i];
		if (!b->bits)
			continue;
		r = bm_alloc_bits(b, bm_nbits(new_size, b->gran_bits));
		b->modified = true;
	}
	int r2 = bm_retrack(q);
	return r < 0 ? r : r2;
}
