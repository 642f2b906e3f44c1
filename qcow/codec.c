/* qcow/codec.c - the compression codecs of qcow2 images: deflate (zlib,
 * raw, window 2^12) and zstd (one frame), as QEMU writes and reads them.
 * Compression keeps one context per thread; decompression reads the
 * compressed bytes of one cluster and inflates them.
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <zlib.h>
#if CP_HAVE_ZSTD
#include <zstd.h>
#endif

#include "config.h"

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

/* --- compression ----------------------------------------------------------------- */

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
