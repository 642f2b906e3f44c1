/* qcow/create.c - create qcow2 and raw images.
 *
 * Layout of a new qcow2 image (as qemu-img lays it out):
 *   cluster 0            header, extensions, backing file name
 *   clusters 1..T        refcount table
 *   next R clusters      refcount blocks covering the metadata
 *   next L clusters      L1 table (zeroes)
 * Everything else is allocated on demand, or now by preallocation.
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
	uint8_t type, bit;
	const char *name;
} features[] = {
	{ 0, 0, "dirty bit" },         { 0, 1, "corrupt bit" },
	{ 0, 2, "external data file" }, { 0, 3, "compression type" },
	{ 0, 4, "extended L2 entries" }, { 1, 0, "lazy refcounts" },
	{ 2, 0, "bitmaps" },            { 2, 1, "raw external data" },
};

static int validate(const char *name, const struct cp_create_opts *o)
{
	if (!cp_is_pow2(o->cluster_size) || o->cluster_size < 512 ||
	    o->cluster_size > (2u << 20))
		return cp_error(-EINVAL, "%s: cluster size %u must be a power of two between 512 and 2097152",
				name, o->cluster_size);
	if (o->qcow_version != 2 && o->qcow_version != 3)
		return cp_error(-EINVAL, "%s: compat must be 0.10 or 1.1", name);
	if (!cp_is_pow2(o->refcount_bits) || o->refcount_bits > 64)
		return cp_error(-EINVAL, "%s: refcount_bits %u must be a power of two between 1 and 64",
				name, o->refcount_bits);
	if (o->qcow_version == 2 && o->refcount_bits != 16)
		return cp_error(-EINVAL, "%s: refcount_bits other than 16 need compat=1.1",
				name);
	if (o->qcow_version == 2 && o->lazy_refcounts)
		return cp_error(-EINVAL, "%s: lazy refcounts need compat=1.1", name);
	if (o->extended_l2 && o->qcow_version == 2)
		return cp_error(-EINVAL, "%s: extended L2 entries need compat=1.1", name);
	if (o->extended_l2 && o->cluster_size < 16384)
		return cp_error(-EINVAL, "%s: extended L2 entries need a cluster size of at least 16 KiB",
				name);
	if (o->compression_type && strcmp(o->compression_type, "zlib") &&
	    strcmp(o->compression_type, "zstd"))
		return cp_error(-EINVAL, "%s: unknown compression type '%s' (zlib or zstd)",
				name, o->compression_type);
	if (o->compression_type && !strcmp(o->compression_type, "zstd")) {
		if (o->qcow_version == 2)
			return cp_error(-EINVAL, "%s: compression_type=zstd needs compat=1.1",
					name);
#if !CP_HAVE_ZSTD
		return cp_error(-ENOTSUP, "%s: zstd support not built in", name);
#endif
	}
	if (o->backing_format && strcmp(o->backing_format, "raw") &&
	    strcmp(o->backing_format, "qcow2"))
		return cp_error(-EINVAL, "%s: unknown backing format '%s'", name,
				o->backing_format);
	if (o->backing_file && strlen(o->backing_file) > 1023)
		return cp_error(-EINVAL, "%s: backing file name longer than 1023 bytes",
				name);
	return 0;
}

int qc_create(cp_bdev *dev, const char *name, const struct cp_create_opts *o,
	      uint64_t size)
{
	int r = validate(name, o);
	if (r < 0)
		return r;
	uint64_t cs = o->cluster_size;
	unsigned cbits = (unsigned)__builtin_ctz(o->cluster_size);
	unsigned order = (unsigned)__builtin_ctz(o->refcount_bits);
	unsigned esz = o->extended_l2 ? 16 : 8;
	uint64_t l2_span = cs * (cs / esz);
	if (size > QC_MAX_SIZE)
		return cp_error(-EFBIG, "%s: size %" PRIu64 " is too large", name, size);
	uint64_t l1_size = CP_DIV_ROUND_UP(size, l2_span);
	if (l1_size * 8 > QC_MAX_L1_BYTES)
		return cp_error(-EFBIG, "%s: size %" PRIu64 " needs an L1 table over %u bytes (use larger clusters)",
				name, size, QC_MAX_L1_BYTES);
	uint64_t per = cs * 8 / o->refcount_bits;
	uint64_t L = CP_DIV_ROUND_UP(l1_size * 8, cs);
	uint64_t T = 1, R = 1;
	for (int i = 0; i < 64; i++) {
		uint64_t total = 1 + T + R + L;
		uint64_t nR = CP_DIV_ROUND_UP(total, per);
		uint64_t nT = CP_MAX(1, CP_DIV_ROUND_UP(nR * 8, cs));
		if (nR == R && nT == T)
			break;
		R = nR;
		T = nT;
	}
	uint64_t total = 1 + T + R + L;
	if (T * cs > QC_MAX_REFTABLE_BYTES)
		return cp_error(-EFBIG, "%s: image too large for cluster size %" PRIu64,
				name, cs);
	uint64_t rt_off = cs, rb_off = (1 + T) * cs, l1_off = (1 + T + R) * cs;
	size_t bytes = total * cs;
	uint8_t *buf = cp_bdev_alloc_buf(bytes);
	if (!buf)
		return -ENOMEM;
	memset(buf, 0, bytes);

	/* header */
	int ver = o->qcow_version;
	bool zstd = o->compression_type && !strcmp(o->compression_type, "zstd");
	cp_put_be32(buf, QC_MAGIC);
	cp_put_be32(buf + 4, (uint32_t)ver);
	cp_put_be32(buf + 20, cbits);
	cp_put_be64(buf + 24, size);
	cp_put_be32(buf + 36, (uint32_t)l1_size);
	cp_put_be64(buf + 40, l1_off);
	cp_put_be64(buf + 48, rt_off);
	cp_put_be32(buf + 56, (uint32_t)T);
	uint32_t hlen = ver == 3 ? 112 : 72;
	if (ver == 3) {
		uint64_t incompat = (o->extended_l2 ? QC_INCOMPAT_EXTL2 : 0) |
				    (zstd ? QC_INCOMPAT_COMPRESSION : 0);
		cp_put_be64(buf + 72, incompat);
		cp_put_be64(buf + 80, o->lazy_refcounts ? QC_COMPAT_LAZY_REFCOUNTS : 0);
		cp_put_be32(buf + 96, order);
		cp_put_be32(buf + 100, hlen);
		buf[104] = zstd ? QC_COMPRESSION_ZSTD : QC_COMPRESSION_ZLIB;
	}
	/* extensions (version 3 and version 2 alike may carry them) */
	uint32_t p = hlen;
	size_t blen = o->backing_file ? strlen(o->backing_file) : 0;
	if (o->backing_file && o->backing_format) {
		size_t fl = strlen(o->backing_format);
		cp_put_be32(buf + p, QC_EXT_BACKING_FORMAT);
		cp_put_be32(buf + p + 4, (uint32_t)fl);
		memcpy(buf + p + 8, o->backing_format, fl);
		p += 8 + (uint32_t)CP_ALIGN_UP(fl, 8);
	}
	size_t ft = CP_ARRAY_SIZE(features) * 48;
	if (p + 8 + ft + 8 + blen <= cs && ver == 3) {
		cp_put_be32(buf + p, QC_EXT_FEATURE_TABLE);
		cp_put_be32(buf + p + 4, (uint32_t)ft);
		for (size_t i = 0; i < CP_ARRAY_SIZE(features); i++) {
			uint8_t *e = buf + p + 8 + 48 * i;
			e[0] = features[i].type;
			e[1] = features[i].bit;
			memcpy(e + 2, features[i].name, strlen(features[i].name));
		}
		p += 8 + (uint32_t)ft;
	}
	p += 8; /* end marker: zeroes */
	if (o->backing_file) {
		if (p + blen > cs) {
			cp_bdev_free_buf(buf);
			return cp_error(-EINVAL, "%s: backing file name does not fit in the header cluster",
					name);
		}
		memcpy(buf + p, o->backing_file, blen);
		cp_put_be64(buf + 8, p);
		cp_put_be32(buf + 16, (uint32_t)blen);
	}
	/* refcount table and blocks: every metadata cluster has refcount 1 */
	struct qcow tmp = { .refcount_order = order };
	for (uint64_t j = 0; j < R; j++)
		cp_put_be64(buf + rt_off + 8 * j, rb_off + j * cs);
	for (uint64_t c = 0; c < total; c++)
		qc_refblock_set(&tmp, buf + rb_off + (c / per) * cs, c % per, 1);

	if (!cp_bdev_is_blockdev(dev)) {
		r = cp_bdev_truncate(dev, 0);
		if (r < 0)
			goto out;
	}
	r = cp_bdev_pwrite(dev, buf, bytes, 0);
	/* as qemu-img, the file ends with the L1 table's last entry (the
	 * rest of its cluster reads as zeroes): same length, same disk size */
	if (r >= 0 && L && !cp_bdev_is_blockdev(dev))
		r = cp_bdev_truncate(dev, l1_off + l1_size * 8);
	if (r >= 0)
		r = cp_bdev_flush(dev);
out:
	cp_bdev_free_buf(buf);
	if (r < 0)
		return cp_error_prefix(r, "%s: writing the new image", name);
	return 0;
}

static int backing_size(cp_bdev *dev, const char *name,
			const struct cp_create_opts *o, cp_open_backing_fn fn,
			void *opaque, uint64_t *size)
{
	struct cp_open_opts oo;
	cp_open_opts_init(&oo);
	oo.readonly = true;
	oo.aio = o->aio;
	oo.cache = o->cache;
	if (o->backing_format)
		cp_fmt_parse(o->backing_format, &oo.format);
	cp_image *b;
	int r;
	if (fn) {
		cp_bdev *bd;
		r = fn(opaque, o->backing_file, &bd);
		if (r < 0)
			return cp_error_prefix(r, "%s: could not open backing file '%s'",
					       name, o->backing_file);
		oo.open_backing = fn;
		oo.open_backing_opaque = opaque;
		r = cp_image_open_dev(bd, o->backing_file, &oo, &b);
	} else {
		char *path = NULL;
		const char *slash = strrchr(name, '/');
		if (o->backing_file[0] != '/' && slash) {
			if (asprintf(&path, "%.*s/%s", (int)(slash - name), name,
				     o->backing_file) < 0)
				return -ENOMEM;
		} else {
			path = strdup(o->backing_file);
		}
		if (!path)
			return -ENOMEM;
		r = cp_image_open(path, &oo, &b);
		if (r < 0)
			cp_error_prefix(r, "%s: could not open backing file '%s'", name,
					o->backing_file);
		free(path);
	}
	(void)dev;
	if (r < 0)
		return r;
	*size = cp_image_size(b);
	cp_image_close(b);
	return 0;
}

static int create_on(cp_bdev *dev, const char *name,
		     const struct cp_create_opts *o, cp_open_backing_fn fn,
		     void *opaque)
{
	uint64_t size = o->virtual_size;
	int r;
	struct cp_create_opts oc = *o;
	char fmtbuf[16];
	if (o->format == CP_FMT_RAW) {
		if (o->backing_file)
			return cp_error(-EINVAL, "%s: raw images cannot have a backing file",
					name);
		size = CP_ALIGN_UP(size, 512); /* whole sectors, as qemu-img */
		r = cp_bdev_truncate(dev, 0);
		if (r >= 0)
			r = cp_bdev_truncate(dev, size);
		if (r >= 0 && size && o->prealloc >= CP_PREALLOC_FALLOC)
			r = cp_bdev_preallocate(dev, 0, size, o->prealloc);
		if (r >= 0)
			r = cp_bdev_flush(dev);
		return r;
	}
	if (o->format != CP_FMT_QCOW2)
		return cp_error(-EINVAL, "%s: unknown format", name);
	if (o->backing_file) {
		if (!o->backing_format || size == 0) {
			uint64_t bs = 0;
			struct cp_create_opts probe = *o;
			r = backing_size(dev, name, &probe, fn, opaque, &bs);
			if (r < 0)
				return r;
			if (!size)
				size = bs;
		}
		if (!o->backing_format) {
			/* record what the backing file is, as qemu-img did */
			struct cp_open_opts oo;
			cp_open_opts_init(&oo);
			oo.readonly = true;
			oo.no_backing = true;
			cp_image *b = NULL;
			if (fn) {
				cp_bdev *bd;
				if (fn(opaque, o->backing_file, &bd) == 0)
					cp_image_open_dev(bd, o->backing_file, &oo, &b);
			} else {
				char *path = NULL;
				const char *slash = strrchr(name, '/');
				if (o->backing_file[0] != '/' && slash)
					r = asprintf(&path, "%.*s/%s", (int)(slash - name),
						     name, o->backing_file);
				else
					path = strdup(o->backing_file);
				if (path)
					cp_image_open(path, &oo, &b);
				free(path);
			}
			if (b) {
				snprintf(fmtbuf, sizeof(fmtbuf), "%s",
					 cp_fmt_name(cp_image_format(b)));
				oc.backing_format = fmtbuf;
				cp_image_close(b);
			}
			cp_clear_error();
		}
	}
	size = CP_ALIGN_UP(size, 512);
	r = qc_create(dev, name, &oc, size);
	if (r < 0 || o->prealloc == CP_PREALLOC_OFF)
		return r;
	struct cp_open_opts oo;
	cp_open_opts_init(&oo);
	oo.format = CP_FMT_QCOW2;
	oo.no_backing = true;
	cp_image *img;
	r = cp_image_open_dev(dev, name, &oo, &img);
	if (r < 0)
		return r;
	r = qc_preallocate(img->q, 0, size, o->prealloc);
	int r2 = cp_image_close(img);
	return r < 0 ? r : r2;
}

int cp_image_create_dev(cp_bdev *dev, const char *name,
			const struct cp_create_opts *opts,
			cp_open_backing_fn open_backing, void *opaque)
{
	CP_API_ENTER();
	struct cp_create_opts o;
	QC_OPTS_OR_DEFAULTS(o, opts, cp_create_opts_init);
	return create_on(dev, name, &o, open_backing, opaque);
}

int cp_image_create(const char *path, const struct cp_create_opts *opts)
{
	CP_API_ENTER();
	struct cp_create_opts o;
	QC_OPTS_OR_DEFAULTS(o, opts, cp_create_opts_init);
	if (o.format == CP_FMT_AUTO)
		o.format = CP_FMT_QCOW2;
	int r = validate(path, &o);
	if (r < 0 && o.format == CP_FMT_QCOW2)
		return r;
	struct cp_bdev_opts bo;
	cp_bdev_opts_init(&bo);
	bo.create = true;
	bo.aio = o.aio;
	bo.cache = o.cache;
	cp_bdev *dev;
	/* a refused create leaves nothing behind: remove the file if this
	 * call made it */
	struct stat st;
	bool created = lstat(path, &st) < 0 && errno == ENOENT;
	r = cp_bdev_open(path, &bo, &dev);
	if (r < 0)
		return r;
	/* as qemu-img create: never overwrite an image another open holds */
	r = qc_create_lock(dev);
	if (r == 0)
		r = create_on(dev, path, &o, NULL, NULL);
	cp_bdev_close(dev);
	if (r < 0 && created)
		unlink(path);
	return r;
}
