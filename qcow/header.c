/* qcow/header.c - QCOW2 header: parse, validate, update in place.
 *
 * Byte layout (big-endian), see docs/formats/qcow2.md:
 *    0 magic        4 version      8 backing_file_offset  16 backing_file_size
 *   20 cluster_bits 24 size       32 crypt_method         36 l1_size
 *   40 l1_table_offset            48 refcount_table_offset
 *   56 refcount_table_clusters    60 nb_snapshots         64 snapshots_offset
 *   version 3:
 *   72 incompatible_features      80 compatible_features  88 autoclear_features
 *   96 refcount_order            100 header_length       104 compression_type
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define HDR_BUF 4096

/* Name an unknown incompatible bit from the image's feature name table. */
static void feature_table_name(struct qcow *q, unsigned bit, char *out,
			       size_t outlen)
{
	snprintf(out, outlen, "bit %u", bit);
	for (size_t i = 0; i < q->exts.len; i++) {
		struct qc_ext *x = &q->exts.ptr[i];
		if (x->type != QC_EXT_FEATURE_TABLE)
			continue;
		for (uint32_t o = 0; o + 48 <= x->len; o += 48) {
			if (x->data[o] == 0 && x->data[o + 1] == bit) {
				char name[47];
				memcpy(name, x->data + o + 2, 46);
				name[46] = 0;
				snprintf(out, outlen, "'%s' (bit %u)", name, bit);
				return;
			}
		}
	}
}

static int parse_extensions(struct qcow *q, const uint8_t *buf, uint32_t start,
			    uint32_t end)
{
	uint32_t off = start;
	while (off + 8 <= end) {
		uint32_t type = cp_be32(buf + off);
		uint32_t len = cp_be32(buf + off + 4);
		off += 8;
		if (type == QC_EXT_END)
			return 0;
		if (len > end - off)
			return cp_error(-EUCLEAN,
					"%s: header extension 0x%08x (length %u) extends past the header cluster",
					q->name, type, len);
		struct qc_ext x = { .type = type, .len = len };
		x.data = malloc(len ? len : 1);
		if (!x.data)
			return -ENOMEM;
		memcpy(x.data, buf + off, len);
		if (qc_ext_vec_append(&q->exts, x) < 0) {
			free(x.data);
			return -ENOMEM;
		}
		if (type == QC_EXT_BACKING_FORMAT) {
			free(q->backing_format);
			q->backing_format = strndup((const char *)x.data, len);
			if (!q->backing_format)
				return -ENOMEM;
		}
		off += CP_ALIGN_UP(len, 8u);
	}
	return 0;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

int qc_header_read(struct qcow *q)
{
	uint8_t *buf = cp_bdev_alloc_buf(HDR_BUF);
	if (!buf)
		return -ENOMEM;
	int r;
	uint64_t flen = cp_bdev_size(q->dev);
	if (flen < QC_HDR_V2_LEN) {
		r = cp_error(-EUCLEAN, "%s: truncated header (file is %" PRIu64 " bytes)",
			     q->name, flen);
		goto out;
	}
	memset(buf, 0, HDR_BUF);
	r = cp_bdev_pread(q->dev, buf, HDR_BUF, 0);
	if (r < 0) {
		cp_error_prefix(r, "%s: reading header", q->name);
		goto out;
	}
	r = -EUCLEAN;
	if (cp_be32(buf) != QC_MAGIC) {
		cp_error(r, "%s: not a qcow2 image (bad magic)", q->name);
		goto out;
	}
	q->version = (int)cp_be32(buf + 4);
	if (q->version != 2 && q->version != 3) {
		r = cp_error(-ENOTSUP, "%s: unsupported qcow2 version %d",
			     q->name, q->version);
		goto out;
	}
	q->backing_file_offset = cp_be64(buf + 8);
	q->backing_file_size = cp_be32(buf + 16);
	q->cluster_bits = cp_be32(buf + 20);
	q->size = cp_be64(buf + 24);
	uint32_t crypt = cp_be32(buf + 32);
	q->l1_size = cp_be32(buf + 36);
	q->l1_table_offset = cp_be64(buf + 40);
	q->refcount_table_offset = cp_be64(buf + 48);
	q->refcount_table_clusters = cp_be32(buf + 56);
	q->nb_snapshots = cp_be32(buf + 60);
	q->snapshots_offset = cp_be64(buf + 64);
	if (q->version == 3) {
		if (flen < QC_HDR_V3_LEN) {
			cp_error(r, "%s: truncated header (file is %" PRIu64 " bytes)",
				 q->name, flen);
			goto out;
		}
		q->incompat = cp_be64(buf + 72);
		q->compat = cp_be64(buf + 80);
		q->autoclear = cp_be64(buf + 88);
		q->refcount_order = cp_be32(buf + 96);
		q->header_length = cp_be32(buf + 100);
	} else {
		q->incompat = q->compat = q->autoclear = 0;
		q->refcount_order = 4;
		q->header_length = QC_HDR_V2_LEN;
	}

	if (q->cluster_bits < QC_MIN_CLUSTER_BITS ||
	    q->cluster_bits > QC_MAX_CLUSTER_BITS) {
		cp_error(r, "%s: invalid cluster size (cluster_bits %u; must be %d..%d)",
			 q->name, q->cluster_bits, QC_MIN_CLUSTER_BITS,
			 QC_MAX_CLUSTER_BITS);
		goto out;
	}
	q->cluster_size = 1u << q->cluster_bits;
	if (q->version == 3 &&
	    (q->header_length < QC_HDR_V3_LEN || q->header_length % 8 ||
	     q->header_length > q->cluster_size ||
	     q->header_length > HDR_BUF)) {
		cp_error(r, "%s: invalid header length %u", q->name,
			 q->header_length);
		goto out;
	}
	if (q->refcount_order > 6) {
		cp_error(r, "%s: invalid refcount order %u (refcount width must be at most 64 bits)",
			 q->name, q->refcount_order);
		goto out;
	}
	if (crypt != 0) {
		r = cp_error(-ENOTSUP, "%s: encrypted images are not supported (crypt_method %u)",
			     q->name, crypt);
		goto out;
	}
	uint32_t hdr_end = q->cluster_size < HDR_BUF ? q->cluster_size : HDR_BUF;
	{
		/* version 2 images carry extensions too, right after the
		 * 72-byte header (the backing format, for one) */
		uint32_t ext_end = hdr_end;
		if (q->backing_file_offset && q->backing_file_offset < hdr_end)
			ext_end = (uint32_t)CP_MAX(q->backing_file_offset,
						   (uint64_t)q->header_length);
		int e = parse_extensions(q, buf, q->header_length, ext_end);
		if (e < 0) {
			r = e;
			goto out;
		}
	}
	if (q->incompat & QC_INCOMPAT_DATA_FILE) {
		r = cp_error(-ENOTSUP, "%s: images with an external data file are not supported",
			     q->name);
		goto out;
	}
	uint64_t unknown = q->incompat & ~QC_INCOMPAT_KNOWN;
	if (unknown) {
		char names[512] = "", one[96];
		for (unsigned b = 0; b < 64; b++) {
			if (!(unknown & (1ull << b)))
				continue;
			feature_table_name(q, b, one, sizeof(one));
			if (names[0])
				strncat(names, ", ", sizeof(names) - strlen(names) - 1);
			strncat(names, one, sizeof(names) - strlen(names) - 1);
		}
		r = cp_error(-ENOTSUP, "%s: unsupported incompatible features: %s",
			     q->name, names);
		goto out;
	}
	q->compression_type = QC_COMPRESSION_ZLIB;
	if (q->version == 3 && q->header_length > 104)
		q->compression_type = buf[104];
	if (q->incompat & QC_INCOMPAT_COMPRESSION) {
		if (q->header_length <= 104 ||
		    (q->compression_type != QC_COMPRESSION_ZLIB &&
		     q->compression_type != QC_COMPRESSION_ZSTD)) {
			r = cp_error(-ENOTSUP, "%s: unknown compression type %u",
				     q->name, q->compression_type);
			goto out;
		}
#if !CP_HAVE_ZSTD
		if (q->compression_type == QC_COMPRESSION_ZSTD) {
			r = cp_error(-ENOTSUP, "%s: zstd compression not built in",
				     q->name);
			goto out;
		}
#endif
	} else if (q->compression_type != QC_COMPRESSION_ZLIB) {
		cp_error(r, "%s: compression type %u set without the compression type feature bit",
			 q->name, q->compression_type);
		goto out;
	}
	q->extl2 = (q->incompat & QC_INCOMPAT_EXTL2) != 0;
	if (q->extl2 && q->cluster_bits < 14) {
		cp_error(r, "%s: extended L2 entries need clusters of at least 16 KiB",
			 q->name);
		goto out;
	}
	q->l2_entry_size = q->extl2 ? 16 : 8;
	q->l2_bits = q->cluster_bits - (q->extl2 ? 4 : 3);
	q->l2_entries = 1u << q->l2_bits;
	q->subcluster_size = q->extl2 ? q->cluster_size / QC_SUBCLUSTERS
				      : q->cluster_size;
	q->refblock_bits = q->cluster_bits + 3 - q->refcount_order;
	q->refblock_entries = 1ull << q->refblock_bits;
	q->max_refcount = q->refcount_order == 6
				  ? UINT64_MAX
				  : (1ull << (1u << q->refcount_order)) - 1;
	q->lazy = (q->compat & QC_COMPAT_LAZY_REFCOUNTS) != 0;
	q->corrupt = (q->incompat & QC_INCOMPAT_CORRUPT) != 0;

	/* sizes and tables */
	if (q->size > QC_MAX_SIZE) {
		cp_error(r, "%s: virtual size %" PRIu64 " is too large", q->name,
			 q->size);
		goto out;
	}
	uint64_t l1_needed = CP_DIV_ROUND_UP(q->size, (uint64_t)q->cluster_size
							      << q->l2_bits);
	if ((uint64_t)q->l1_size * 8 > QC_MAX_L1_BYTES) {
		cp_error(r, "%s: L1 table too large (%u entries)", q->name,
			 q->l1_size);
		goto out;
	}
	if (q->l1_size < l1_needed) {
		cp_error(r, "%s: L1 table too small (%u entries for a %" PRIu64 "-byte disk)",
			 q->name, q->l1_size, q->size);
		goto out;
	}
	if (q->l1_size && (q->l1_table_offset % q->cluster_size ||
			   q->l1_table_offset == 0)) {
		cp_error(r, "%s: L1 table offset 0x%" PRIx64 " is not cluster aligned",
			 q->name, q->l1_table_offset);
		goto out;
	}
	if (q->l1_size && !q->for_check &&
	    q->l1_table_offset + (uint64_t)q->l1_size * 8 > flen) {
		cp_error(r, "%s: L1 table at 0x%" PRIx64 " beyond end of file",
			 q->name, q->l1_table_offset);
		goto out;
	}
	if (q->refcount_table_clusters == 0 ||
	    (uint64_t)q->refcount_table_clusters * q->cluster_size >
		    QC_MAX_REFTABLE_BYTES) {
		cp_error(r, "%s: invalid refcount table size (%u clusters)",
			 q->name, q->refcount_table_clusters);
		goto out;
	}
	if (q->refcount_table_offset % q->cluster_size ||
	    q->refcount_table_offset == 0) {
		cp_error(r, "%s: refcount table offset 0x%" PRIx64 " is not cluster aligned",
			 q->name, q->refcount_table_offset);
		goto out;
	}
	uint64_t rt_bytes = (uint64_t)q->refcount_table_clusters * q->cluster_size;
	if (!q->for_check &&
	    q->refcount_table_offset + rt_bytes > CP_ALIGN_UP(flen, q->cluster_size)) {
		cp_error(r, "%s: refcount table at 0x%" PRIx64 " beyond end of file",
			 q->name, q->refcount_table_offset);
		goto out;
	}
	if (ranges_overlap(q->l1_table_offset, (uint64_t)q->l1_size * 8,
			   q->refcount_table_offset, rt_bytes)) {
		cp_error(r, "%s: L1 table at 0x%" PRIx64 " overlaps the refcount table at 0x%" PRIx64,
			 q->name, q->l1_table_offset, q->refcount_table_offset);
		goto out;
	}
	/* the snapshot table: open.c and check.c (snapshot.c's rules) */

	/* backing file name */
	if (q->backing_file_offset) {
		if (q->backing_file_size > 1023 ||
		    q->backing_file_offset + q->backing_file_size > hdr_end ||
		    q->backing_file_offset < (q->version == 3 ? q->header_length : 72)) {
			cp_error(r, "%s: invalid backing file name location (offset %" PRIu64 ", length %u)",
				 q->name, q->backing_file_offset,
				 q->backing_file_size);
			goto out;
		}
		q->backing_file = strndup((const char *)buf + q->backing_file_offset,
					  q->backing_file_size);
		if (!q->backing_file) {
			r = -ENOMEM;
			goto out;
		}
		if (strlen(q->backing_file) != q->backing_file_size || !q->backing_file[0]) {
			cp_error(r, "%s: invalid backing file name", q->name);
			goto out;
		}
	}

	/* L1 table */
	size_t l1_alloc = CP_ALIGN_UP((size_t)q->l1_size * 8 + 8, 4096);
	q->l1 = cp_bdev_alloc_buf(l1_alloc);
	if (!q->l1) {
		r = -ENOMEM;
		goto out;
	}
	memset(q->l1, 0, l1_alloc);
	if (q->l1_size) {
		int e = cp_bdev_pread(q->dev, q->l1, (size_t)q->l1_size * 8,
				      q->l1_table_offset);
		if (e < 0) {
			r = cp_error_prefix(e, "%s: reading L1 table", q->name);
			goto out;
		}
		for (uint32_t i = 0; i < q->l1_size; i++)
			q->l1[i] = cp_be64(&q->l1[i]);
	}
	/* refcount table */
	q->reftable_entries = rt_bytes / 8;
	q->reftable = cp_bdev_alloc_buf(rt_bytes);
	if (!q->reftable) {
		r = -ENOMEM;
		goto out;
	}
	{
		int e = cp_bdev_pread(q->dev, q->reftable, rt_bytes,
				      q->refcount_table_offset);
		if (e < 0) {
			r = cp_error_prefix(e, "%s: reading refcount table", q->name);
			goto out;
		}
		for (uint64_t i = 0; i < q->reftable_entries; i++)
			q->reftable[i] = cp_be64(&q->reftable[i]);
	}
	r = 0;
out:
	cp_bdev_free_buf(buf);
	return r;
}

int qc_header_update_locked(struct qcow *q)
{
	unsigned blk = cp_bdev_align(q->dev);
	if (blk < 512)
		blk = 512;
	uint8_t *buf = cp_bdev_alloc_buf(blk);
	if (!buf)
		return -ENOMEM;
	int r = cp_bdev_pread(q->dev, buf, blk, 0);
	if (r < 0)
		goto out;
	cp_put_be64(buf + 24, q->size);
	cp_put_be32(buf + 36, q->l1_size);
	cp_put_be64(buf + 40, q->l1_table_offset);
	cp_put_be64(buf + 48, q->refcount_table_offset);
	cp_put_be32(buf + 56, q->refcount_table_clusters);
	if (q->version == 3) {
		cp_put_be64(buf + 72, q->incompat);
		cp_put_be64(buf + 80, q->compat);
		cp_put_be64(buf + 88, q->autoclear);
	}
	/* one block: atomic on any device we support */
	r = cp_bdev_pwrite(q->dev, buf, blk, 0);
out:
	cp_bdev_free_buf(buf);
	if (r < 0)
		return cp_error_prefix(r, "%s: updating header", q->name);
	return 0;
}

int qc_header_set_incompat_locked(struct qcow *q, uint64_t set, uint64_t clear)
{
	if (q->version < 3)
		return 0;
	uint64_t n = (q->incompat | set) & ~clear;
	if (n == q->incompat)
		return 0;
	uint64_t old = q->incompat;
	q->incompat = n;
	int r = qc_header_update_locked(q);
	if (r < 0) {
		q->incompat = old;
		return r;
	}
	return cp_bdev_flush(q->dev);
}

int qc_corrupt(struct qcow *q, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	bool was = q->corrupt;
	q->corrupt = true;
	if (!q->readonly && !was && q->version == 3) {
		q->incompat |= QC_INCOMPAT_CORRUPT;
		if (qc_header_update_locked(q) == 0)
			cp_bdev_flush(q->dev);
	}
	bool marked = !q->readonly && !was;
	q->readonly = true;
	return cp_error(-EUCLEAN, "%s: %s%s", q->name, msg,
			marked ? "; image marked corrupt" : "");
}

/* Rebuild the header cluster from q: fixed fields, the backing format
 * extension first, then every other extension as found (unknown ones are
 * preserved byte for byte), the end marker and the backing file name.
 * Everything past the first 512 bytes is written and flushed before the
 * first sector, which is the commit point: when the extension layout
 * beyond sector 0 is unchanged (the common case: a new backing name or
 * format of the same padded length), the switch is atomic. */
int qc_header_rewrite_locked(struct qcow *q)
{
	uint32_t cs = q->cluster_size;
	uint8_t *buf = cp_bdev_alloc_buf(cs);
	if (!buf)
		return -ENOMEM;
	uint8_t *old = cp_bdev_alloc_buf(cs);
	if (!old) {
		cp_bdev_free_buf(buf);
		return -ENOMEM;
	}
	memset(buf, 0, cs);
	int r = cp_bdev_pread(q->dev, old, cs, 0);
	if (r < 0)
		goto out;
	memcpy(buf, old, 512);
	uint64_t old_name_off = cp_be64(buf + 8);
	uint32_t old_name_len = cp_be32(buf + 16);
	if (old_name_off >= cs || old_name_len > cs)
		old_name_off = old_name_len = 0;
	memset(buf + 8, 0, 12); /* backing offset/size, rewritten below */
	cp_put_be32(buf + 4, (uint32_t)q->version);
	cp_put_be64(buf + 24, q->size);
	cp_put_be32(buf + 36, q->l1_size);
	cp_put_be64(buf + 40, q->l1_table_offset);
	cp_put_be64(buf + 48, q->refcount_table_offset);
	cp_put_be32(buf + 56, q->refcount_table_clusters);
	cp_put_be32(buf + 60, q->nb_snapshots);
	cp_put_be64(buf + 64, q->snapshots_offset);
	uint32_t p;
	if (q->version == 3) {
		if (q->header_length < 112)
			q->header_length = 112;
		memset(buf + 72, 0, q->header_length - 72);
		cp_put_be64(buf + 72, q->incompat);
		cp_put_be64(buf + 80, q->compat);
		cp_put_be64(buf + 88, q->autoclear);
		cp_put_be32(buf + 96, q->refcount_order);
		cp_put_be32(buf + 100, q->header_length);
		buf[104] = q->compression_type;
		p = q->header_length;
	} else {
		p = 72;
	}
	memset(buf + p, 0, cs - p);
	if (q->backing_file && q->backing_format) {
		size_t fl = strlen(q->backing_format);
		cp_put_be32(buf + p, QC_EXT_BACKING_FORMAT);
		cp_put_be32(buf + p + 4, (uint32_t)fl);
		memcpy(buf + p + 8, q->backing_format, fl);
		p += 8 + (uint32_t)CP_ALIGN_UP(fl, 8u);
	}
	for (size_t i = 0; i < q->exts.len; i++) {
		struct qc_ext *x = &q->exts.ptr[i];
		if (x->type == QC_EXT_BACKING_FORMAT)
			continue;
		if (p + 8 + CP_ALIGN_UP(x->len, 8u) + 8 > cs) {
			r = cp_error(-EFBIG, "%s: header extensions do not fit in the header cluster",
				     q->name);
			goto out;
		}
		cp_put_be32(buf + p, x->type);
		cp_put_be32(buf + p + 4, x->len);
		memcpy(buf + p + 8, x->data, x->len);
		p += 8 + (uint32_t)CP_ALIGN_UP(x->len, 8u);
	}
	p += 8; /* end of extensions */
	uint32_t ext_end = p;
	if (q->backing_file) {
		size_t bl = strlen(q->backing_file);
		/* never write the new name over bytes the old header points
		 * at: until the first sector lands, the old header must still
		 * read its own name */
		uint64_t oo = old_name_off, oe = old_name_off + old_name_len;
		if (old_name_len && p < oe && oo < p + bl)
			p = (uint32_t)CP_ALIGN_UP(oe, 8u);
		/* and keep the old name readable where it was */
		if (old_name_len && oo >= ext_end && oe <= cs &&
		    (oe <= p || oo >= p + bl))
			memcpy(buf + oo, old + oo, old_name_len);
		if (p + bl > cs) {
			r = cp_error(-EFBIG, "%s: backing file name does not fit in the header cluster",
				     q->name);
			goto out;
		}
		memcpy(buf + p, q->backing_file, bl);
		cp_put_be64(buf + 8, p);
		cp_put_be32(buf + 16, (uint32_t)bl);
		q->backing_file_offset = p;
		q->backing_file_size = (uint32_t)bl;
		p += (uint32_t)bl;
	} else {
		q->backing_file_offset = 0;
		q->backing_file_size = 0;
	}
	uint32_t end = CP_ALIGN_UP(p, 512u);
	if (end > 512) {
		r = cp_bdev_pwrite(q->dev, buf + 512, end - 512, 512);
		if (r >= 0)
			r = cp_bdev_flush(q->dev);
		if (r < 0)
			goto out;
	}
	r = cp_bdev_pwrite(q->dev, buf, 512, 0);
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
out:
	cp_bdev_free_buf(buf);
	cp_bdev_free_buf(old);
	if (r < 0)
		return cp_error_prefix(r, "%s: rewriting the header", q->name);
	return 0;
}
