/* qcow/image.c - the generic image layer: raw and qcow2 layers, backing
 * chains, the async data path, map and info.
 *
 * Async requests take one of two roads:
 *  - fast: raw layers, and qcow2 requests that map to one contiguous run of
 *    data clusters already allocated to this image (the common case once a
 *    disk is written), go straight to the device; the completion context
 *    comes from a preallocated free list: no allocation on this path;
 *  - slow: anything that needs metadata I/O, copy-on-write, decompression
 *    or a backing read runs the synchronous path on one of the image's
 *    worker threads (created on first use).
 */
#include "qcow_int.h"
#include "iov.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FAST_CTX 256
#define WORKERS 16

struct fast_ctx {
	struct img_async *owner;
	cp_io_cb cb;
	void *opaque;
	unsigned epoch;
	bool nogp; /* the engine tracks the grace period itself */
	struct fast_ctx *next;
};

struct job {
	bool write;
	struct iovec *iov;
	int iovcnt;
	uint64_t off;
	cp_io_cb cb;
	void *opaque;
	struct job *next;
};

struct img_async {
	cp_image *img;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fast_ctx ctx[FAST_CTX];
	struct fast_ctx *free_ctx;
	struct job *head, *tail;
	pthread_t workers[WORKERS];
	int nworkers;
	bool stop;
	uint64_t outstanding;
};


/* --- options ----------------------------------------------------------------- */

void cp_open_opts_init(struct cp_open_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->format = CP_FMT_AUTO;
	o->backing_format = CP_FMT_AUTO;
	o->aio = CP_AIO_IO_URING;
	o->cache = CP_CACHE_WRITEBACK;
}

void cp_create_opts_init(struct cp_create_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->format = CP_FMT_QCOW2;
	o->cluster_size = 65536;
	o->qcow_version = 3;
	o->refcount_bits = 16;
	o->aio = CP_AIO_IO_URING;
	o->cache = CP_CACHE_WRITEBACK;
}

int cp_fmt_parse(const char *s, enum cp_fmt *out)
{
	CP_API_ENTER();
	if (!strcmp(s, "raw"))
		*out = CP_FMT_RAW;
	else if (!strcmp(s, "qcow2"))
		*out = CP_FMT_QCOW2;
	else
		return cp_error(-EINVAL, "unknown image format '%s' (supported: raw, qcow2)", s);
	return 0;
}

const char *cp_fmt_name(enum cp_fmt f)
{
	switch (f) {
	case CP_FMT_RAW: return "raw";
	case CP_FMT_QCOW2: return "qcow2";
	default: return "auto";
	}
}

/* --- open and close ------------------------------------------------------------- */

struct chain {
	const char *names[256];
	int n;
};

static void image_free(cp_image *img)
{
	if (!img)
		return;
	free(img->filename);
	free(img->dir);
	free(img->async);
	free(img);
}

static int probe(cp_bdev *dev, const char *name, enum cp_fmt *fmt)
{
	uint8_t *b = cp_bdev_alloc_buf(4096);
	if (!b)
		return -ENOMEM;
	memset(b, 0, 4096);
	int r = 0;
	if (cp_bdev_size(dev) >= 4)
		r = cp_bdev_pread(dev, b, 4096, 0);
	if (r < 0) {
		cp_bdev_free_buf(b);
		return cp_error_prefix(r, "%s: reading the header", name);
	}
	uint64_t size = cp_bdev_size(dev);
	const char *f = qc_probe_format(b, size < 512 ? (size_t)size : 512, name);
	cp_bdev_free_buf(b);
	if (f && !strcmp(f, "qcow2")) {
		*fmt = CP_FMT_QCOW2;
		return 0;
	}
	if (f)
		return cp_error(-ENOTSUP, "%s: image format '%s' is not supported "
				"(cowpool reads raw and qcow2); use -f raw to open "
				"the file as raw", name, f);
	*fmt = CP_FMT_RAW;
	return 0;
}

static int image_open(cp_bdev *dev, bool own_dev, const char *name,
		      const struct cp_open_opts *o, enum cp_fmt fmt, int depth,
		      struct chain *ch, cp_image **out);

#define IMG_MAX_IOV 64

/* struct qcow's backing_reads_zero: does [off, off + len) of the backing
 * chain read as zeroes by metadata alone (no data read)?  Past its end
 * counts as zeroes. */
static bool img_backing_reads_zero(struct qcow *q, uint64_t off, uint64_t len)
{
	cp_image *img = q->img->backing;
	if (!img)
		return true;
	uint64_t size = cp_image_size(img);
	if (off >= size)
		return true;
	len = CP_MIN(len, size - off);
	while (len) {
		struct cp_extent x;
		if (cp_image_map(img, off, len, &x) < 0) {
			cp_clear_error();
			return false;
		}
		if (!x.zero || x.data || !x.length)
			return false;
		uint64_t n = CP_MIN(x.length, len);
		off += n;
		len -= n;
	}
	return true;
}

/* struct qcow's read_backing: io.c reads the backing chain through it. */
static int img_read_backing(struct qcow *q, const struct iovec *iov, int cnt,
			    size_t skip, uint64_t off, uint64_t len)
{
	cp_image *b = q->img->backing;
	uint64_t bsize = b ? cp_image_size(b) : 0;
	uint64_t have = off < bsize ? CP_MIN(len, bsize - off) : 0;
	if (have) {
		struct iovec sl[IMG_MAX_IOV];
		int n = cp_iov_slice(iov, cnt, skip, have, sl, IMG_MAX_IOV);
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

static int open_backing(cp_image *img, struct chain *ch)
{
	struct qcow *q = img->q;
	const struct cp_open_opts *o = &img->opts;
	unsigned maxd = o->max_chain_depth ? o->max_chain_depth : 64;
	char *path = NULL;
	cp_bdev *dev = NULL;
	bool own = true;
	int r;
	if ((unsigned)img->depth + 1 >= maxd || ch->n >= 255)
		return cp_error(-ELOOP, "%s: backing chain is deeper than %u layers",
				img->filename, maxd);
	enum cp_fmt bf = o->backing_format;
	if (q->backing_format) {
		r = cp_fmt_parse(q->backing_format, &bf);
		if (r < 0)
			return cp_error(-ENOTSUP, "%s: backing file '%s' has unsupported format '%s'",
					img->filename, q->backing_file, q->backing_format);
	}
	/* a json: name (QEMU's pseudo-protocol) names its file itself, as is:
	 * QEMU does not resolve it against the overlay's directory */
	char *jname = NULL;
	enum cp_fmt jfmt = CP_FMT_AUTO;
	if (!strncmp(q->backing_file, "json:", 5)) {
		r = qc_json_name(q->backing_file, bf, &jname, &jfmt);
		if (r < 0)
			return cp_error_prefix(r, "%s: backing file", img->filename);
		bf = jfmt;
	}
	const char *bname = jname ? jname : q->backing_file;
	if (o->open_backing) {
		path = strdup(bname);
		if (!path) {
			free(jname);
			return -ENOMEM;
		}
		r = o->open_backing(o->open_backing_opaque, bname, &dev);
		own = false;
		if (r < 0) {
			cp_error_prefix(r, "%s: could not open backing file '%s'",
					img->filename, bname);
			free(path);
			free(jname);
			return r;
		}
	} else {
		if (bname[0] == '/' || !img->dir || jname)
			path = strdup(bname);
		else if (asprintf(&path, "%s/%s", img->dir, bname) < 0)
			path = NULL;
		free(jname);
		jname = NULL;
		if (!path)
			return -ENOMEM;
	}
	free(jname);
	/* loops: compare resolved paths (or names for hook-provided devices) */
	char real[PATH_MAX];
	const char *key = path;
	if (!o->open_backing && realpath(path, real))
		key = real;
	for (int i = 0; i < ch->n; i++) {
		if (!strcmp(ch->names[i], key)) {
			cp_error(-ELOOP, "%s: backing chain loop: '%s' is already in the chain",
				 img->filename, q->backing_file);
			free(path);
			return -ELOOP;
		}
	}
	if (!dev) {
		struct cp_bdev_opts bo;
		cp_bdev_opts_init(&bo);
		bo.readonly = true;
		bo.aio = o->aio;
		bo.cache = o->cache;
		r = cp_bdev_open(path, &bo, &dev);
		if (r < 0) {
			cp_error(r, "%s: could not open backing file '%s': %s",
				 img->filename, path, strerror(-r));
			free(path);
			return r;
		}
	}
	char *keydup = strdup(key);
	if (!keydup) {
		if (own)
			cp_bdev_close(dev);
		free(path);
		return -ENOMEM;
	}
	ch->names[ch->n++] = keydup;
	struct cp_open_opts bo = *o;
	bo.readonly = true;
	bo.for_check = false;
	r = image_open(dev, own, path, &bo, bf, img->depth + 1, ch, &img->backing);
	free(path);
	return r;
}

static int image_open(cp_bdev *dev, bool own_dev, const char *name,
		      const struct cp_open_opts *o, enum cp_fmt fmt, int depth,
		      struct chain *ch, cp_image **out)
{
	cp_image *img = calloc(1, sizeof(*img));
	int r = -ENOMEM;
	*out = NULL;
	if (!img)
		goto fail_dev;
	img->filename = strdup(name);
	/* relative backing names resolve against the image's directory; a
	 * bare file name means the current one, used as is (as qemu does) */
	if (strchr(name, '/')) {
		char *tmp = strdup(name);
		if (tmp) {
			img->dir = strdup(dirname(tmp));
			free(tmp);
		}
		if (!img->dir)
			goto fail;
	}
	if (!img->filename)
		goto fail;
	img->dev = dev;
	img->own_dev = own_dev;
	img->readonly = o->readonly || cp_bdev_readonly(dev);
	img->opts = *o;
	img->depth = depth;
	img->async = calloc(1, sizeof(struct img_async));
	if (!img->async)
		goto fail;
	/* lock before reading anything: a conflict leaves the file alone */
	r = qc_image_lock(img, dev, !img->readonly);
	if (r < 0)
		goto fail;
	if (fmt == CP_FMT_AUTO) {
		r = probe(dev, name, &fmt);
		if (r < 0)
			goto fail;
		img->probed = fmt == CP_FMT_RAW;
	}
	img->format = fmt;
	struct img_async *a = img->async;
	a->img = img;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	for (int i = 0; i < FAST_CTX; i++) {
		a->ctx[i].owner = a;
		a->ctx[i].next = i + 1 < FAST_CTX ? &a->ctx[i + 1] : NULL;
	}
	a->free_ctx = &a->ctx[0];
	if (fmt == CP_FMT_RAW) {
		/* as QEMU: whole sectors; the tail past the end of the file
		 * reads as zeroes (and a write there extends the file) */
		img->size = CP_ALIGN_UP(cp_bdev_size(dev), 512);
	} else {
		struct qcow *q;
		r = qc_open(img, &q, o);
		if (r < 0)
			goto fail;
		q->read_backing = img_read_backing;
		q->backing_reads_zero = img_backing_reads_zero;
		if (q->backing_file && !o->no_backing) {
			r = open_backing(img, ch);
			if (r < 0) {
				qc_close(q);
				img->q = NULL;
				goto fail;
			}
		}
	}
	*out = img;
	return 0;
fail:
	if (img && img->async) {
		pthread_mutex_destroy(&img->async->lock);
		pthread_cond_destroy(&img->async->cond);
	}
	if (img && !own_dev)
		cp_bdev_set_perm(dev, 0, CP_PERM_ALL); /* drops what it took */
	image_free(img);
fail_dev:
	if (own_dev)
		cp_bdev_close(dev);
	return r;
}

static void chain_free(struct chain *ch)
{
	for (int i = 0; i < ch->n; i++)
		free((char *)ch->names[i]);
}

int cp_image_open_dev(cp_bdev *dev, const char *name,
		      const struct cp_open_opts *opts, cp_image **out)
{
	CP_API_ENTER();
	struct cp_open_opts o;
	QC_OPTS_OR_DEFAULTS(o, opts, cp_open_opts_init);
	struct chain ch = { .n = 0 };
	ch.names[ch.n++] = strdup(name);
	int r = image_open(dev, false, name, &o, o.format, 0, &ch, out);
	chain_free(&ch);
	return r;
}

int cp_image_open(const char *path, const struct cp_open_opts *opts,
		  cp_image **out)
{
	CP_API_ENTER();
	struct cp_open_opts o;
	QC_OPTS_OR_DEFAULTS(o, opts, cp_open_opts_init);
	if (!strncmp(path, "json:", 5)) {
		char *jn;
		enum cp_fmt jf;
		int r = qc_json_name(path, o.format, &jn, &jf);
		if (r < 0)
			return r;
		o.format = jf;
		r = cp_image_open(jn, &o, out);
		free(jn);
		return r;
	}
	struct cp_bdev_opts bo;
	cp_bdev_opts_init(&bo);
	bo.readonly = o.readonly;
	bo.aio = o.aio;
	bo.cache = o.cache;
	cp_bdev *dev;
	*out = NULL;
	int r = cp_bdev_open(path, &bo, &dev);
	if (r < 0)
		return r;
	struct chain ch = { .n = 0 };
	char real[PATH_MAX];
	ch.names[ch.n++] = strdup(realpath(path, real) ? real : path);
	r = image_open(dev, true, path, &o, o.format, 0, &ch, out);
	chain_free(&ch);
	return r;
}

static void async_drain(cp_image *img)
{
	struct img_async *a = img->async;
	pthread_mutex_lock(&a->lock);
	while (a->outstanding)
		pthread_cond_wait(&a->cond, &a->lock);
	pthread_mutex_unlock(&a->lock);
}

static void async_stop(cp_image *img)
{
	struct img_async *a = img->async;
	async_drain(img);
	pthread_mutex_lock(&a->lock);
	a->stop = true;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	for (int i = 0; i < a->nworkers; i++)
		pthread_join(a->workers[i], NULL);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
}

int cp_image_close(cp_image *img)
{
	CP_API_ENTER();
	if (!img)
		return 0;
	async_stop(img);
	int r = 0;
	if (img->q)
		r = qc_close(img->q);
	int r2 = cp_image_close(img->backing);
	if (r >= 0 && r2 < 0)
		r = r2;
	if (img->own_dev)
		cp_bdev_close(img->dev);
	else
		qc_image_unlock(img);
	image_free(img);
	return r;
}

/* --- accessors ----------------------------------------------------------------- */

const char *cp_image_filename(const cp_image *img) { return img->filename; }
enum cp_fmt cp_image_format(const cp_image *img) { return img->format; }
cp_image *cp_image_backing(const cp_image *img) { return img->backing; }
cp_bdev *cp_image_dev(const cp_image *img) { return img->dev; }
bool cp_image_readonly(const cp_image *img)
{
	return img->readonly || (img->q && img->q->readonly);
}

uint64_t cp_image_size(const cp_image *img)
{
	return img->q ? img->q->size : img->size;
}

uint32_t cp_image_cluster_size(const cp_image *img)
{
	return img->q ? img->q->cluster_size : 512;
}

/* --- synchronous data path ----------------------------------------------------------- */

static int check_range(cp_image *img, uint64_t off, uint64_t len, bool write)
{
	uint64_t size = cp_image_size(img);
	if (off > size || len > size - off)
		return cp_error(-EINVAL, "%s: request at offset %" PRIu64 " length %" PRIu64 " is beyond the end of the disk (%" PRIu64 " bytes)",
				img->filename, off, len, size);
	if (write && cp_image_readonly(img))
		return cp_error(-EROFS, "%s: image is read-only%s", img->filename,
				img->q && img->q->corrupt ? " (marked corrupt)" : "");
	if (write && img->q)
		qc_bitmaps_mark(img->q, off, len); /* every guest change */
	return 0;
}

int cp_image_preadv(cp_image *img, const struct iovec *iov, int iovcnt,
		    uint64_t offset)
{
	CP_API_ENTER();
	uint64_t len = cp_iov_size(iov, iovcnt);
	int r = check_range(img, offset, len, false);
	if (r < 0 || !len)
		return r;
	if (img->q)
		return qc_readv(img->q, iov, iovcnt, offset, len);
	r = cp_bdev_preadv(img->dev, iov, iovcnt, offset);
	return r < 0 ? r : 0;
}

int cp_image_pwritev(cp_image *img, const struct iovec *iov, int iovcnt,
		     uint64_t offset)
{
	CP_API_ENTER();
	uint64_t len = cp_iov_size(iov, iovcnt);
	int r = check_range(img, offset, len, true);
	if (r < 0 || !len)
		return r;
	if (img->q)
		return qc_writev(img->q, iov, iovcnt, offset, len);
	r = qc_probed_write_check(img, iov, iovcnt, offset, len);
	if (r < 0)
		return r;
	r = cp_bdev_pwritev(img->dev, iov, iovcnt, offset);
	return r < 0 ? r : 0;
}

int cp_image_pread(cp_image *img, void *buf, size_t len, uint64_t offset)
{
	CP_API_ENTER();
	struct iovec v = { buf, len };
	return cp_image_preadv(img, &v, 1, offset);
}

int cp_image_pwrite(cp_image *img, const void *buf, size_t len, uint64_t offset)
{
	CP_API_ENTER();
	struct iovec v = { (void *)buf, len };
	return cp_image_pwritev(img, &v, 1, offset);
}

int cp_image_write_zeroes(cp_image *img, uint64_t offset, uint64_t len,
			  unsigned flags)
{
	CP_API_ENTER();
	int r = check_range(img, offset, len, true);
	if (r < 0 || !len)
		return r;
	if (img->q)
		return qc_zero(img->q, offset, len, flags, false);
	return cp_bdev_write_zeroes(img->dev, offset, len, flags);
}

int cp_image_discard(cp_image *img, uint64_t offset, uint64_t len)
{
	CP_API_ENTER();
	int r = check_range(img, offset, len, true);
	if (r < 0 || !len)
		return r;
	if (img->q)
		return qc_zero(img->q, offset, len, 0, true);
	r = cp_bdev_discard(img->dev, offset, len);
	if (r == -EOPNOTSUPP || r == -ENOTSUP) {
		cp_clear_error();
		return 0; /* discard is advisory */
	}
	return r;
}

int cp_image_flush(cp_image *img)
{
	CP_API_ENTER();
	if (cp_image_readonly(img))
		return 0;
	if (img->q)
		return qc_flush(img->q);
	return cp_bdev_flush(img->dev);
}

int cp_image_resize(cp_image *img, uint64_t new_size, bool allow_shrink,
		    enum cp_prealloc prealloc)
{
	CP_API_ENTER();
	if (cp_image_readonly(img))
		return cp_error(-EROFS, "%s: image is read-only", img->filename);
	async_drain(img);
	if (img->q) {
		uint64_t old = img->q->size;
		if (new_size < old && !allow_shrink)
			return cp_error(-EINVAL, "%s: shrinking needs --shrink (data past the new end is lost)",
					img->filename);
		int r = qc_resize(img->q, new_size, prealloc);
		if (r < 0 || new_size <= old)
			return r;
		/* the grown area must read as zeroes: clear the tail of a
		 * partial last cluster, and hide a larger backing file */
		uint64_t cs = img->q->cluster_size, pnum;
		uint64_t tail = CP_MIN(new_size, CP_ALIGN_UP(old, cs));
		if (tail > old && cp_image_is_allocated(img, old, tail - old, &pnum) == 1)
			r = cp_image_write_zeroes(img, old, tail - old, 0);
		uint64_t bsize = img->backing ? cp_image_size(img->backing) : 0;
		if (r >= 0 && bsize > old)
			r = cp_image_write_zeroes(img, old, CP_MIN(new_size, bsize) - old, 0);
		if (r >= 0)
			r = cp_image_flush(img);
		return r;
	}
	if (new_size < img->size && !allow_shrink)
		return cp_error(-EINVAL, "%s: shrinking needs --shrink (data past the new end is lost)",
				img->filename);
	int r = cp_bdev_truncate(img->dev, new_size);
	if (r >= 0 && new_size > img->size && prealloc != CP_PREALLOC_OFF &&
	    prealloc != CP_PREALLOC_METADATA)
		r = cp_bdev_preallocate(img->dev, img->size, new_size - img->size,
					prealloc);
	if (r >= 0)
		img->size = new_size;
	return r;
}

/* --- asynchronous data path -------------------------------------------------------- */

static void outstanding_add(struct img_async *a, int d)
{
	pthread_mutex_lock(&a->lock);
	a->outstanding += d;
	if (!a->outstanding)
		pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

static void *worker_main(void *arg)
{
	struct img_async *a = arg;
	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (!a->head && !a->stop)
			pthread_cond_wait(&a->cond, &a->lock);
		if (!a->head)
			break;
		struct job *j = a->head;
		a->head = j->next;
		if (!a->head)
			a->tail = NULL;
		pthread_mutex_unlock(&a->lock);
		int r = j->write ? cp_image_pwritev(a->img, j->iov, j->iovcnt, j->off)
				 : cp_image_preadv(a->img, j->iov, j->iovcnt, j->off);
		j->cb(j->opaque, r);
		free(j);
		pthread_mutex_lock(&a->lock);
		if (--a->outstanding == 0)
			pthread_cond_broadcast(&a->cond);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

static int submit_job(cp_image *img, bool write, const struct iovec *iov,
		      int iovcnt, uint64_t off, cp_io_cb cb, void *opaque)
{
	struct img_async *a = img->async;
	struct job *j = malloc(sizeof(*j) + sizeof(struct iovec) * (size_t)iovcnt);
	if (!j)
		return -ENOMEM;
	j->write = write;
	j->iov = (struct iovec *)(j + 1);
	memcpy(j->iov, iov, sizeof(struct iovec) * (size_t)iovcnt);
	j->iovcnt = iovcnt;
	j->off = off;
	j->cb = cb;
	j->opaque = opaque;
	j->next = NULL;
	pthread_mutex_lock(&a->lock);
	if (a->nworkers < WORKERS && a->nworkers <= (int)a->outstanding) {
		if (pthread_create(&a->workers[a->nworkers], NULL, worker_main, a) == 0)
			a->nworkers++;
	}
	if (a->nworkers == 0) {
		pthread_mutex_unlock(&a->lock);
		free(j);
		return cp_error(-EAGAIN, "%s: cannot start worker threads", img->filename);
	}
	if (a->tail)
		a->tail->next = j;
	else
		a->head = j;
	a->tail = j;
	a->outstanding++;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
	return 0;
}

/* The preallocated completion contexts of the fast paths. */
static struct fast_ctx *ctx_get(struct img_async *a)
{
	pthread_mutex_lock(&a->lock);
	struct fast_ctx *c = a->free_ctx;
	if (c)
		a->free_ctx = c->next;
	pthread_mutex_unlock(&a->lock);
	return c;
}

static void ctx_put(struct img_async *a, struct fast_ctx *c)
{
	pthread_mutex_lock(&a->lock);
	c->next = a->free_ctx;
	a->free_ctx = c;
	pthread_mutex_unlock(&a->lock);
}

static void fast_cpl(void *opaque, int ret)
{
	struct fast_ctx *c = opaque;
	struct img_async *a = c->owner;
	struct qcow *q = a->img->q;
	cp_io_cb cb = c->cb;
	void *op = c->opaque;
	if (q && !c->nogp)
		qc_gp_exit(q, c->epoch);
	ctx_put(a, c);
	cb(op, ret);
	outstanding_add(a, -1);
}

static int submit_async(cp_image *img, bool write, const struct iovec *iov,
			int iovcnt, uint64_t offset, cp_io_cb cb, void *opaque,
			bool *data)
{
	uint64_t len = cp_iov_size(iov, iovcnt);
	int r = check_range(img, offset, len, write);
	if (r < 0)
		return r;
	struct img_async *a = img->async;
	struct qcow *q = img->q;
	uint64_t host = offset;
	struct fast_ctx *c = NULL;
	if (q && len) {
		struct qc_map m;
		pthread_mutex_lock(&q->lock);
		int mr = qc_map_locked(q, offset, len, &m);
		bool fast = mr >= 0 && m.type == QC_NORMAL && m.bytes == len &&
			    (!write || (m.copied && !q->readonly &&
					qc_overlap_fast_locked(q, m.host, len) == 0));
		if (fast)
			c = ctx_get(a);
		if (c) {
			c->epoch = qc_gp_enter_locked(q);
			host = m.host;
		}
		pthread_mutex_unlock(&q->lock);
		if (mr < 0)
			cp_clear_error(); /* the slow path reports it */
		if (!c && write && mr >= 0) {
			/* allocating write that needs no copy: no worker */
			struct fast_ctx *w = ctx_get(a);
			if (w) {
				w->cb = cb;
				w->opaque = opaque;
				w->nogp = true;
				outstanding_add(a, 1);
				r = qc_write_async_fast(q, iov, iovcnt, offset, len, fast_cpl, w);
				if (r == 0)
					return 0;
				outstanding_add(a, -1);
				ctx_put(a, w);
				if (r != -EAGAIN)
					return r;
				cp_clear_error();
			}
		}
		if (!c)
			return submit_job(img, write, iov, iovcnt, offset, cb, opaque);
		c->nogp = false;
		c->cb = cb;
		c->opaque = opaque;
		if (data)
			*data = true; /* before the request can complete */
		outstanding_add(a, 1);
		r = write ? cp_bdev_pwritev_async(img->dev, iov, iovcnt, host, fast_cpl, c)
			  : cp_bdev_preadv_async(img->dev, iov, iovcnt, host, fast_cpl, c);
		if (r < 0) {
			qc_gp_exit(q, c->epoch);
			ctx_put(a, c);
			outstanding_add(a, -1);
		}
		return r;
	}
	if (!q && len) {
		/* raw: straight to the device */
		if (write) {
			int pr = qc_probed_write_check(img, iov, iovcnt, offset, len);
			if (pr < 0)
				return pr;
		}
		return write ? cp_bdev_pwritev_async(img->dev, iov, iovcnt, offset, cb, opaque)
			     : cp_bdev_preadv_async(img->dev, iov, iovcnt, offset, cb, opaque);
	}
	return submit_job(img, write, iov, iovcnt, offset, cb, opaque);
}

int cp_image_preadv_async(cp_image *img, const struct iovec *iov, int iovcnt,
			  uint64_t offset, cp_io_cb cb, void *opaque)
{
	CP_API_ENTER();
	return submit_async(img, false, iov, iovcnt, offset, cb, opaque, NULL);
}

int cp_image_preadv_async_data(cp_image *img, const struct iovec *iov,
			       int iovcnt, uint64_t offset, cp_io_cb cb,
			       void *opaque, bool *data)
{
	CP_API_ENTER();
	*data = false;
	return submit_async(img, false, iov, iovcnt, offset, cb, opaque, data);
}

int cp_image_pwritev_async(cp_image *img, const struct iovec *iov, int iovcnt,
			   uint64_t offset, cp_io_cb cb, void *opaque)
{
	CP_API_ENTER();
	return submit_async(img, true, iov, iovcnt, offset, cb, opaque, NULL);
}

/* --- high-water mark ---------------------------------------------------------------- */

/* Lock img's qcow2 layer with its mark known: computed once (a scan of the
 * last refcount blocks), kept by allocations from then on.  On success the
 * caller holds (*qp)->lock; a raw image has no mark. */
static int high_water_lock(cp_image *img, struct qcow **qp)
{
	struct qcow *q = img->q;
	uint64_t end;
	int r;

	if (!q)
		return cp_error(-ENOTSUP, "%s: a raw image has no high-water "
				"mark", img->filename);
	pthread_mutex_lock(&q->lock);
	if (!q->hw_known) {
		if ((r = qc_highest_used_locked(q, &end)) < 0) {
			pthread_mutex_unlock(&q->lock);
			return r;
		}
		q->hw = end;
		q->hw_known = true;
	}
	*qp = q;
	return 0;
}

int cp_image_high_water(cp_image *img, uint64_t *end)
{
	CP_API_ENTER();
	struct qcow *q;
	int r = high_water_lock(img, &q);

	if (r < 0)
		return r;
	*end = q->hw;
	pthread_mutex_unlock(&q->lock);
	return 0;
}

int cp_image_set_write_threshold(cp_image *img, uint64_t threshold,
				 cp_image_threshold_cb cb, void *opaque)
{
	CP_API_ENTER();
	struct qcow *q;
	int r = high_water_lock(img, &q);

	if (r < 0)
		return r;
	uint64_t hw = q->hw;
	q->hw_cb = NULL;
	if (cb && hw <= threshold) {
		q->hw_threshold = threshold;
		q->hw_opaque = opaque;
		q->hw_cb = cb;
	}
	pthread_mutex_unlock(&q->lock);
	if (cb && hw > threshold)
		cb(opaque, hw); /* already above: at once */
	return 0;
}

/* --- allocation map ---------------------------------------------------------------- */

int cp_image_is_allocated(cp_image *img, uint64_t offset, uint64_t len,
			  uint64_t *pnum)
{
	CP_API_ENTER();
	if (!img->q) {
		*pnum = len;
		return 1;
	}
	struct qc_map m;
	int r = qc_block_status(img->q, offset, len, &m);
	if (r < 0)
		return r;
	*pnum = m.bytes;
	return m.type != QC_UNALLOC;
}

/* QEMU looks at holes in the image file under data clusters only when the
 * image looks metadata-preallocated: more clusters in use than the file
 * has blocks for (qcow2_detect_metadata_preallocation).  Same rule here, so
 * that map output matches qemu-img's on the same file. */
static bool meta_prealloc(cp_image *img)
{
	struct qcow *q = img->q;
	if (q->meta_prealloc >= 0)
		return q->meta_prealloc;
	struct stat st;
	int res = 0;
	if (stat(img->filename, &st) == 0 && S_ISREG(st.st_mode)) {
		uint64_t real = (uint64_t)st.st_blocks * 512 / q->cluster_size;
		uint64_t threshold = CP_MAX(real * 10 / 9, real + 2);
		uint64_t end = CP_DIV_ROUND_UP((uint64_t)st.st_size, q->cluster_size);
		uint64_t count = 0;
		pthread_mutex_lock(&q->lock);
		for (uint64_t i = 0; i < end && count < threshold; i++) {
			uint64_t rc;
			if (qc_refcount_get_locked(q, i, &rc) < 0)
				break;
			count += rc != 0;
		}
		pthread_mutex_unlock(&q->lock);
		cp_clear_error();
		res = count >= threshold;
	}
	q->meta_prealloc = res;
	return res;
}

int cp_image_map(cp_image *img, uint64_t offset, uint64_t len,
		 struct cp_extent *ext)
{
	CP_API_ENTER();
	memset(ext, 0, sizeof(*ext));
	ext->start = offset;
	ext->offset = CP_NO_OFFSET;
	uint64_t size = cp_image_size(img);
	if (offset >= size)
		return cp_error(-EINVAL, "%s: offset %" PRIu64 " beyond the end of the disk",
				img->filename, offset);
	len = CP_MIN(len, size - offset);
	cp_image *l = img;
	int depth = 0;
	for (;;) {
		if (!l->q) {
			uint64_t pnum = len;
			int st = cp_bdev_block_status(l->dev, offset, len, &pnum);
			if (st < 0) {
				st = 1;
				pnum = len;
				cp_clear_error();
			}
			ext->length = CP_MIN(pnum ? pnum : len, len);
			ext->depth = depth;
			ext->present = true;
			ext->data = st == 1;
			ext->zero = st == 0;
			ext->offset = offset;
			ext->filename = l->filename;
			return 0;
		}
		struct qc_map m;
		int r = qc_block_status(l->q, offset, len, &m);
		if (r < 0)
			return r;
		ext->length = m.bytes;
		ext->depth = depth;
		ext->filename = l->filename;
		switch (m.type) {
		case QC_NORMAL: {
			ext->present = ext->data = true;
			ext->offset = m.host;
			if (!meta_prealloc(l))
				return 0;
			uint64_t pnum = m.bytes;
			int st = cp_bdev_block_status(l->dev, m.host, m.bytes, &pnum);
			if (st < 0)
				cp_clear_error();
			else if (pnum && pnum < m.bytes)
				ext->length = pnum;
			if (st == 0)
				ext->zero = true;
			return 0;
		}
		case QC_COMPRESSED:
			ext->present = ext->data = ext->compressed = true;
			return 0;
		case QC_ZERO:
			ext->present = ext->zero = true;
			if (m.host)
				ext->offset = m.host; /* preallocated zeroes */
			return 0;
		case QC_UNALLOC:
			break;
		}
		len = m.bytes;
		cp_image *b = l->backing;
		if (!b || offset >= cp_image_size(b)) {
			/* nothing below: reads as zeroes, reported at this
			 * layer (the last one consulted), as qemu-img does */
			ext->zero = true;
			if (m.host)
				ext->offset = m.host; /* unallocated subclusters */
			if (b)
				ext->filename = l->filename;
			return 0;
		}
		len = CP_MIN(len, cp_image_size(b) - offset);
		ext->length = len;
		l = b;
		depth++;
	}
}

/* --- information --------------------------------------------------------------------- */

int cp_image_get_info(cp_image *img, struct cp_image_info *info)
{
	CP_API_ENTER();
	memset(info, 0, sizeof(*info));
	info->format = img->format;
	info->virtual_size = cp_image_size(img);
	info->file_length = cp_bdev_size(img->dev);
	struct stat st;
	if (stat(img->filename, &st) == 0 && S_ISREG(st.st_mode))
		info->actual_size = (uint64_t)st.st_blocks * 512;
	else
		info->actual_size = info->file_length;
	struct qcow *q = img->q;
	if (!q)
		return 0;
	pthread_mutex_lock(&q->lock);
	info->cluster_size = q->cluster_size;
	info->qcow_version = q->version;
	info->lazy_refcounts = q->lazy;
	info->corrupt = q->corrupt;
	info->extended_l2 = q->extl2;
	info->dirty = (q->incompat & QC_INCOMPAT_DIRTY) != 0;
	info->refcount_bits = 1u << q->refcount_order;
	snprintf(info->compression_type, sizeof(info->compression_type), "%s",
		 q->compression_type == QC_COMPRESSION_ZSTD ? "zstd" : "zlib");
	info->nb_snapshots = q->nb_snapshots;
	if (q->backing_file) {
		snprintf(info->backing_file, sizeof(info->backing_file), "%s",
			 q->backing_file);
		if (q->backing_file[0] == '/' || !img->dir)
			snprintf(info->full_backing_filename,
				 sizeof(info->full_backing_filename), "%s",
				 q->backing_file);
		else
			snprintf(info->full_backing_filename,
				 sizeof(info->full_backing_filename), "%s/%s",
				 img->dir, q->backing_file);
	}
	if (q->backing_format)
		snprintf(info->backing_format, sizeof(info->backing_format), "%s",
			 q->backing_format);
	pthread_mutex_unlock(&q->lock);
	return 0;
}

/* --- check ------------------------------------------------------------------------- */

int cp_image_check(cp_image *img, unsigned repair, struct cp_check_result *res,
		   cp_check_report_fn report, void *opaque)
{
	CP_API_ENTER();
	memset(res, 0, sizeof(*res));
	if (!img->q)
		return cp_error(-ENOTSUP, "%s: raw images have no metadata to check",
				img->filename);
	if (repair && cp_image_readonly(img) && !(img->q->corrupt && !img->readonly))
		return cp_error(-EROFS, "%s: repair needs the image opened read-write",
				img->filename);
	async_drain(img);
	if (!img->readonly) {
		int r = qc_flush(img->q);
		if (r < 0)
			return r;
	}
	return qc_check(img->q, repair, res, report, opaque);
}

static int zero_dealloc(struct qcow *q, uint64_t s, uint64_t e)
{
	return qc_dealloc(q, s, e);
}

/* --- operations on one layer -------------------------------------------------------- */

int cp_image_write_compressed(cp_image *img, const void *buf, size_t len,
			      uint64_t offset)
{
	CP_API_ENTER();
	if (!img->q)
		return cp_error(-EINVAL, "%s: compressed clusters need a qcow2 image",
				img->filename);
	int r = check_range(img, offset, len, true);
	if (r < 0)
		return r;
	return qc_write_compressed(img->q, buf, len, offset);
}

long cp_image_compress(cp_image *img, const void *buf, size_t len, void *out)
{
	CP_API_ENTER();
	if (!img->q)
		return cp_error(-EINVAL, "%s: compressed clusters need a qcow2 image",
				img->filename);
	if (len > img->q->cluster_size)
		return cp_error(-EINVAL, "%s: compress: %zu bytes is more than a cluster",
				img->filename, len);
	return qc_compress(img->q, buf, len, out);
}

int cp_image_store_compressed(cp_image *img, const void *data, size_t dlen,
			      uint64_t offset)
{
	CP_API_ENTER();
	if (!img->q)
		return cp_error(-EINVAL, "%s: compressed clusters need a qcow2 image",
				img->filename);
	int r = check_range(img, offset, 1, true);
	if (r < 0)
		return r;
	qc_bitmaps_mark(img->q, offset, img->q->cluster_size);
	return qc_store_compressed(img->q, data, dlen, offset);
}

int cp_image_make_empty(cp_image *img)
{
	CP_API_ENTER();
	if (!img->q)
		return cp_error(-ENOTSUP, "%s: only qcow2 images can be emptied",
				img->filename);
	if (cp_image_readonly(img))
		return cp_error(-EROFS, "%s: image is read-only", img->filename);
	async_drain(img);
	return qc_make_empty(img->q);
}

int cp_image_reopen(cp_image *img, bool readwrite)
{
	CP_API_ENTER();
	if (readwrite != cp_image_readonly(img))
		return 0;
	if (!img->own_dev && readwrite && cp_bdev_readonly(img->dev))
		return cp_error(-EROFS, "%s: the device is read-only", img->filename);
	async_drain(img);
	/* take write permission on the current open first (refused while
	 * another holds the image); a new open adopts the locks below */
	int r = readwrite ? qc_image_lock(img, img->dev, true) : 0;
	if (r < 0)
		return r;
	if (img->q) {
		r = qc_close(img->q);
		img->q = NULL;
		if (r < 0)
			return r;
	}
	if (img->own_dev) {
		struct cp_bdev_opts bo;
		cp_bdev_opts_init(&bo);
		bo.readonly = !readwrite;
		bo.aio = img->opts.aio;
		bo.cache = img->opts.cache;
		cp_bdev *dev;
		r = cp_bdev_open(img->filename, &bo, &dev);
		if (r < 0) {
			/* keep the old access mode */
			bo.readonly = readwrite;
			if (cp_bdev_open(img->filename, &bo, &dev) < 0)
				return r;
			readwrite = !readwrite;
		}
		int r3 = cp_bdev_lock_adopt(dev, img->dev);
		if (r3 < 0) {
			cp_bdev_close(dev);
			return r3;
		}
		cp_bdev_close(img->dev);
		img->dev = dev;
	}
	img->readonly = !readwrite;
	img->opts.readonly = !readwrite;
	qc_image_lock(img, img->dev, readwrite); /* drops write if read-only */
	if (img->format == CP_FMT_QCOW2) {
		struct qcow *q;
		int r2 = qc_open(img, &q, &img->opts);
		if (r2 < 0)
			return r2;
		q->read_backing = img_read_backing;
		q->backing_reads_zero = img_backing_reads_zero;
	} else {
		img->size = CP_ALIGN_UP(cp_bdev_size(img->dev), 512);
	}
	return r;
}


/* Open `name` (relative to img's directory) as a chain, the way img's own
 * backing files are opened: through the caller's hook when there is one. */
int qc_open_relative(cp_image *img, const char *name, enum cp_fmt fmt,
		     bool no_backing, cp_image **out)
{
	struct cp_open_opts o = img->opts;
	o.readonly = true;
	o.for_check = false;
	o.format = fmt;
	o.no_backing = no_backing;
	*out = NULL;
	if (!strncmp(name, "json:", 5)) {
		char *jn;
		enum cp_fmt jf;
		int r = qc_json_name(name, o.format, &jn, &jf);
		if (r < 0)
			return r;
		o.format = jf;
		if (o.open_backing) {
			cp_bdev *dev;
			r = o.open_backing(o.open_backing_opaque, jn, &dev);
			if (r >= 0)
				r = cp_image_open_dev(dev, jn, &o, out);
		} else {
			r = cp_image_open(jn, &o, out);
		}
		free(jn);
		return r;
	}
	if (o.open_backing) {
		cp_bdev *dev;
		int r = o.open_backing(o.open_backing_opaque, name, &dev);
		if (r < 0)
			return r;
		return cp_image_open_dev(dev, name, &o, out);
	}
	char *path = NULL;
	if (name[0] == '/' || !img->dir)
		path = strdup(name);
	else if (asprintf(&path, "%s/%s", img->dir, name) < 0)
		path = NULL;
	if (!path)
		return -ENOMEM;
	int r = cp_image_open(path, &o, out);
	free(path);
	return r;
}

int cp_image_set_backing(cp_image *img, const char *backing,
			 const char *backing_format, bool reopen)
{
	CP_API_ENTER();
	struct qcow *q = img->q;
	if (!q)
		return cp_error(-EINVAL, "%s: raw images have no backing file",
				img->filename);
	if (cp_image_readonly(img))
		return cp_error(-EROFS, "%s: image is read-only", img->filename);
	if (backing && strlen(backing) > 1023)
		return cp_error(-EINVAL, "%s: backing file name longer than 1023 bytes",
				img->filename);
	if (backing_format && strcmp(backing_format, "raw") &&
	    strcmp(backing_format, "qcow2"))
		return cp_error(-EINVAL, "%s: unknown backing format '%s'",
				img->filename, backing_format);
	cp_image *nb = NULL;
	if (reopen && backing && *backing) {
		enum cp_fmt f = CP_FMT_AUTO;
		if (backing_format)
			cp_fmt_parse(backing_format, &f);
		int r = qc_open_relative(img, backing, f, false, &nb);
		if (r < 0)
			return cp_error_prefix(r, "%s: could not open new backing file '%s'",
					       img->filename, backing);
	}
	async_drain(img);
	pthread_mutex_lock(&q->lock);
	int r = qc_flush_locked(q);
	char *ob = q->backing_file, *of = q->backing_format;
	q->backing_file = backing && *backing ? strdup(backing) : NULL;
	q->backing_format = q->backing_file && backing_format ? strdup(backing_format) : NULL;
	if (r >= 0)
		r = qc_header_rewrite_locked(q);
	if (r < 0) {
		free(q->backing_file);
		free(q->backing_format);
		q->backing_file = ob;
		q->backing_format = of;
	} else {
		free(ob);
		free(of);
	}
	pthread_mutex_unlock(&q->lock);
	if (r < 0) {
		cp_image_close(nb);
		return r;
	}
	if (reopen) {
		cp_image *old = img->backing;
		img->backing = nb;
		for (cp_image *l = nb; l; l = l->backing)
			l->depth += img->depth + 1;
		cp_image_close(old);
	}
	return 0;
}

void cp_amend_opts_init(struct cp_amend_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->lazy_refcounts = -1;
}

int cp_image_amend(cp_image *img, const struct cp_amend_opts *o)
{
	CP_API_ENTER();
	struct qcow *q = img->q;
	if (!q)
		return cp_error(-ENOTSUP, "%s: only qcow2 images can be amended",
				img->filename);
	if (cp_image_readonly(img))
		return cp_error(-EROFS, "%s: image is read-only", img->filename);
	int ver = o->qcow_version ? o->qcow_version : q->version;
	if (ver != 2 && ver != 3)
		return cp_error(-EINVAL, "%s: compat must be 0.10 or 1.1", img->filename);
	int lazy = o->lazy_refcounts < 0 ? q->lazy : o->lazy_refcounts;
	if (ver == 2 && o->lazy_refcounts < 0)
		lazy = 0; /* a downgrade turns them off, as qemu-img amend does */
	if (ver == 2 && lazy)
		return cp_error(-EINVAL, "%s: lazy refcounts need compat=1.1", img->filename);
	if (ver == 2 && q->version == 3) {
		if (q->extl2)
			return cp_error(-ENOTSUP, "%s: cannot downgrade to compat=0.10: the image uses extended L2 entries",
					img->filename);
		if (q->compression_type != QC_COMPRESSION_ZLIB)
			return cp_error(-ENOTSUP, "%s: cannot downgrade to compat=0.10: the image uses zstd compression",
					img->filename);
		if (q->refcount_order != 4)
			return cp_error(-ENOTSUP, "%s: cannot downgrade to compat=0.10: refcount_bits is %u, not 16",
					img->filename, 1u << q->refcount_order);
		/* (qemu-img downgrades and leaks the bitmaps' clusters) */
		if (q->nb_bm)
			return cp_error(-ENOTSUP, "%s: cannot downgrade to compat=0.10: the image has persistent bitmaps (remove them with 'cowpool bitmap --remove')",
					img->filename);
		/* zero clusters do not exist in version 2 */
		uint64_t cs = q->cluster_size;
		for (uint64_t off = 0; off < q->size;) {
			struct qc_map m;
			int r = qc_block_status(q, off, q->size - off, &m);
			if (r < 0)
				return r;
			if (m.type == QC_ZERO) {
				if (img->backing)
					return cp_error(-ENOTSUP, "%s: cannot downgrade to compat=0.10: zero clusters over a backing file",
							img->filename);
				uint64_t s = CP_ALIGN_DOWN(off, cs);
				r = zero_dealloc(q, s, CP_ALIGN_UP(off + m.bytes, cs));
				if (r < 0)
					return r;
			}
			off += m.bytes;
		}
	}
	async_drain(img);
	pthread_mutex_lock(&q->lock);
	int r = qc_flush_locked(q);
	if (r >= 0 && q->lazy && !lazy) {
		/* leave lazy mode: refcounts on disk first, then the bit */
		r = qc_cache_writeback(q, &q->rbc);
		if (r >= 0)
			r = cp_bdev_flush(q->dev);
		if (r >= 0 && q->dirty_set)
			r = qc_header_set_incompat_locked(q, 0, QC_INCOMPAT_DIRTY);
		q->dirty_set = false;
	}
	if (r >= 0) {
		int oldv = q->version;
		uint64_t oc = q->compat;
		q->version = ver;
		if (ver == 3 && oldv == 2) {
			q->incompat = q->autoclear = 0;
			q->compat = 0;
			q->refcount_order = 4;
			q->header_length = 112;
		}
		q->compat = lazy ? (q->compat | QC_COMPAT_LAZY_REFCOUNTS)
				 : (q->compat & ~QC_COMPAT_LAZY_REFCOUNTS);
		if (ver == 2)
			q->compat = q->incompat = q->autoclear = 0;
		r = qc_header_rewrite_locked(q);
		if (r < 0) {
			q->version = oldv;
			q->compat = oc;
		} else {
			q->lazy = lazy;
		}
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}
