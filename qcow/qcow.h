/* qcow/qcow.h - the cowpool image engine (public header).
 *
 * A cp_image is one layer of a disk: a QCOW2 image (version 2 "compat=0.10"
 * or 3 "compat=1.1") or a raw file, opened on a blockcore device, with its
 * backing chain opened below it (each backing layer may be qcow2 or raw).
 *
 * Errors: int functions return >= 0 on success, -errno on failure, with a
 * message in cp_last_error() that names the file and what is wrong, e.g.
 * "disk.qcow2: L2 table at 0x50000 beyond end of file".  Notable codes:
 *   -EUCLEAN   the image is corrupt (and is now marked corrupt if writable)
 *   -ENOTSUP   a feature cowpool refuses (the message names it)
 *   -EROFS     write to an image opened read-only (or refused read-write)
 *   -EINVAL    bad argument
 *
 * Threads: all functions may be called concurrently from any thread on the
 * same image, except cp_image_close() (no other call may be running) and
 * cp_image_resize() (serialised internally; in-flight I/O is drained first).
 * Async callbacks run on engine threads (blockcore completion threads or the
 * image's worker threads) and may submit new requests.
 */
#ifndef CP_QCOW_H
#define CP_QCOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "blockcore.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cp_image cp_image;

enum cp_fmt {
	CP_FMT_AUTO = 0, /* probe: qcow2 magic, else raw */
	CP_FMT_RAW = 1,
	CP_FMT_QCOW2 = 2,
};
int cp_fmt_parse(const char *s, enum cp_fmt *out); /* "raw", "qcow2" */
const char *cp_fmt_name(enum cp_fmt f);

/* Hook to open a backing layer on a device the caller provides (tests chain
 * RAM devices this way).  name is the backing file name as stored in the
 * image.  Return 0 and set *out, or -errno.  The caller keeps ownership of
 * the device and must close it after the image. */
typedef int (*cp_open_backing_fn)(void *opaque, const char *name,
				  cp_bdev **out);

struct cp_open_opts {
	size_t size;             /* sizeof(struct cp_open_opts), set by _init */
	enum cp_fmt format;      /* CP_FMT_AUTO */
	bool readonly;
	bool no_backing;         /* do not open the backing chain (reads of
				  * unallocated ranges then return zeroes) */
	enum cp_fmt backing_format; /* for layers without a backing format
				  * extension; AUTO probes (default) */
	enum cp_aio aio;         /* CP_AIO_IO_URING */
	enum cp_cache cache;     /* CP_CACHE_WRITEBACK */
	uint64_t l2_cache_size;  /* bytes; 0 = default: enough to map the whole
				  * disk, capped at 32 MiB */
	uint32_t l2_cache_entry_size; /* slice size in bytes; 0 = 4096 */
	uint64_t refcount_cache_size; /* bytes; 0 = default (1 MiB) */
	unsigned max_chain_depth; /* 0 = 64 */
	/* Open for check/repair: no automatic repair of a dirty (lazy
	 * refcounts) image, and a corrupt image may be opened read-write. */
	bool for_check;
	/* qemu-img -U: the read-only layers (the backing chain, and the top
	 * when readonly) take no lock that keeps writers out, so an image in
	 * use by a writer can be read (its content may then be inconsistent).
	 * A writable top is locked as always.  Every layer is locked as QEMU
	 * locks it (blockcore.h "image locks", qcow/perm.c): an open that
	 * conflicts with another program's or handle's fails with -EBUSY. */
	bool force_share;
	cp_open_backing_fn open_backing;
	void *open_backing_opaque;
};
void cp_open_opts_init(struct cp_open_opts *opts);

/* Open path (and its backing chain: relative names are resolved against
 * the directory of the image that names them). */
int cp_image_open(const char *path, const struct cp_open_opts *opts,
		  cp_image **out);
/* Open an image on a device the caller owns (closed by the caller after
 * cp_image_close()).  name is used in messages and to resolve relative
 * backing names. */
int cp_image_open_dev(cp_bdev *dev, const char *name,
		      const struct cp_open_opts *opts, cp_image **out);
/* Flush (writes cached metadata, clears the dirty bit) and close the whole
 * chain.  Always frees; returns the first error met while flushing. */
int cp_image_close(cp_image *img);

const char *cp_image_filename(const cp_image *img);
enum cp_fmt cp_image_format(const cp_image *img);
uint64_t cp_image_size(const cp_image *img);     /* virtual size */
cp_image *cp_image_backing(const cp_image *img); /* borrowed; NULL if none */
cp_bdev *cp_image_dev(const cp_image *img);      /* borrowed */
bool cp_image_readonly(const cp_image *img);
/* Granularity of allocation: cluster size for qcow2, 512 for raw. */
uint32_t cp_image_cluster_size(const cp_image *img);

/* --- data path ------------------------------------------------------------
 * Reads past the virtual size fail with -EINVAL; so do writes.  Buffers need
 * no particular alignment (aligned buffers, see cp_bdev_alloc_buf(), take
 * the fast path with O_DIRECT). */
int cp_image_pread(cp_image *img, void *buf, size_t len, uint64_t offset);
int cp_image_pwrite(cp_image *img, const void *buf, size_t len,
		    uint64_t offset);
int cp_image_preadv(cp_image *img, const struct iovec *iov, int iovcnt,
		    uint64_t offset);
int cp_image_pwritev(cp_image *img, const struct iovec *iov, int iovcnt,
		     uint64_t offset);
/* Asynchronous forms: same rules as blockcore (0 = queued and cb will run
 * exactly once; -errno = not queued, cb will not run).  Many requests may
 * be in flight; overlapping writes complete in some order, each atomically
 * per cluster. */
int cp_image_preadv_async(cp_image *img, const struct iovec *iov, int iovcnt,
			  uint64_t offset, cp_io_cb cb, void *opaque);
int cp_image_pwritev_async(cp_image *img, const struct iovec *iov, int iovcnt,
			   uint64_t offset, cp_io_cb cb, void *opaque);
/* As cp_image_preadv_async, and *data says, before the request can
 * complete, whether the whole range is known to be data allocated in the
 * top qcow2 layer (true: no part of it reads as a hole or zero cluster;
 * false: unknown, it may).  An NBD server uses it to send such reads as
 * one data chunk without scanning them for zeroes, as QEMU decides holes
 * by block status. */
int cp_image_preadv_async_data(cp_image *img, const struct iovec *iov,
			       int iovcnt, uint64_t offset, cp_io_cb cb,
			       void *opaque, bool *data);

/* Make [offset, offset+len) read as zeroes.  qcow2 v3: zero flag (with
 * CP_ZERO_MAY_UNMAP the clusters are also freed); v2: clusters are
 * deallocated when nothing shows through from a backing file, otherwise
 * zeroes are written.  Partial clusters are written with zeroes. */
int cp_image_write_zeroes(cp_image *img, uint64_t offset, uint64_t len,
			  unsigned flags);
/* Deallocate whole clusters in the range (guest discard): afterwards the
 * range reads from the backing chain (or as zeroes if there is none; on v3
 * with a backing file, discarded clusters become zero clusters so the
 * backing does not show through).  Partial clusters are left untouched. */
int cp_image_discard(cp_image *img, uint64_t offset, uint64_t len);
/* Write all cached metadata in crash-safe order and flush the device. */
int cp_image_flush(cp_image *img);

/* Grow (or with allow_shrink, shrink: raw only; qcow2 refuses to drop
 * allocated data) to new_size.  prealloc applies to the new area. */
int cp_image_resize(cp_image *img, uint64_t new_size, bool allow_shrink,
		    enum cp_prealloc prealloc);

/* --- high-water mark (thin volumes) -----------------------------------------
 * What a thin LV under a qcow2 layer must hold: the end of the highest host
 * cluster in use (refcount > 0) in the top layer's file.  Freed clusters do
 * not lower it.  A raw layer has none (-ENOTSUP). */
int cp_image_high_water(cp_image *img, uint64_t *end);
typedef void (*cp_image_threshold_cb)(void *opaque, uint64_t high_water);
/* Arm a one-shot event, as QEMU's block-set-write-threshold: cb(opaque, hw)
 * runs once, when an allocation first takes the high-water mark above
 * threshold, on the allocating thread, with the image's metadata lock
 * held: it must only record or signal (an eventfd, a condition), never
 * call into the image.  If the mark is already above threshold, cb runs at
 * once, on the caller's thread.  cb NULL disarms.  Raw: -ENOTSUP. */
int cp_image_set_write_threshold(cp_image *img, uint64_t threshold,
				 cp_image_threshold_cb cb, void *opaque);

/* --- allocation map (qemu-img map semantics) ------------------------------
 * Describes the longest run starting at offset (at most len bytes) whose
 * status is uniform.  depth: index of the layer that provides the data (0 =
 * this image); for ranges allocated nowhere, the last layer consulted (the
 * deepest one whose size covers the offset).
 * present: allocated in some layer; zero: reads as zeroes; data: backed by
 * data in a file; offset: host offset of the data in the layer's file, or
 * CP_NO_OFFSET (zero clusters, compressed clusters, unallocated). */
#define CP_NO_OFFSET UINT64_MAX
struct cp_extent {
	uint64_t start, length;
	int depth;
	bool present, zero, data, compressed;
	uint64_t offset;
	const char *filename; /* layer that provides it (borrowed) */
	/* data clusters whose host range is a hole in the file are reported
	 * with zero = true (and data = true), as qemu-img map does */
};
int cp_image_map(cp_image *img, uint64_t offset, uint64_t len,
		 struct cp_extent *ext);
/* Allocation in this layer only (no backing walk): sets *pnum to the length
 * of the run at offset that is allocated here (returns 1) or not (returns
 * 0).  Zero clusters count as allocated. */
int cp_image_is_allocated(cp_image *img, uint64_t offset, uint64_t len,
			  uint64_t *pnum);

/* --- information ----------------------------------------------------------- */
struct cp_image_info {
	enum cp_fmt format;
	uint64_t virtual_size;
	uint64_t actual_size;   /* bytes allocated on the host (st_blocks) */
	uint64_t file_length;   /* host file length */
	uint32_t cluster_size;  /* qcow2 only */
	int qcow_version;       /* 2 or 3 */
	bool lazy_refcounts, corrupt, extended_l2, dirty;
	unsigned refcount_bits;
	char compression_type[8]; /* "zlib" or "zstd" */
	unsigned nb_snapshots;
	char backing_file[1024];  /* as stored in the image ("" if none) */
	char backing_format[32];  /* as stored ("" if none) */
	char full_backing_filename[4096]; /* resolved path ("" if none) */
};
int cp_image_get_info(cp_image *img, struct cp_image_info *info);

/* --- create ----------------------------------------------------------------- */
struct cp_create_opts {
	size_t size;              /* sizeof(struct cp_create_opts), set by _init */
	enum cp_fmt format;       /* CP_FMT_QCOW2 default */
	uint64_t virtual_size;    /* bytes; with a backing file 0 = its size */
	uint32_t cluster_size;    /* 65536 */
	int qcow_version;         /* 3 (compat=1.1); 2 = compat=0.10 */
	enum cp_prealloc prealloc;/* off */
	bool extended_l2;         /* false; needs version 3, cluster >= 16 KiB */
	bool lazy_refcounts;      /* false; needs version 3 */
	unsigned refcount_bits;   /* 16; a power of two 1..64 (v2: 16 only) */
	const char *compression_type; /* NULL = "zlib"; "zstd" needs v3 */
	const char *backing_file; /* NULL = none */
	const char *backing_format; /* NULL = probe the backing file */
	enum cp_aio aio;
	enum cp_cache cache;
};
void cp_create_opts_init(struct cp_create_opts *opts);
/* Create (or overwrite) path. */
int cp_image_create(const char *path, const struct cp_create_opts *opts);
/* Create on a caller-owned device (content overwritten).  name resolves a
 * relative backing file name; open_backing (may be NULL) is used to read
 * the backing file's size when virtual_size is 0. */
int cp_image_create_dev(cp_bdev *dev, const char *name,
			const struct cp_create_opts *opts,
			cp_open_backing_fn open_backing, void *opaque);

/* --- image operations used by commit, rebase, convert and amend ---------- */

/* Store one cluster compressed (compression type of the image).  offset is
 * cluster aligned, len at most one cluster (the last cluster of the disk may
 * be shorter; the rest is zero padded).  The cluster must be unallocated
 * (or a zero cluster) in this image.  Data that does not compress is stored
 * as a normal cluster.  -EINVAL for raw images. */
int cp_image_write_compressed(cp_image *img, const void *buf, size_t len,
			      uint64_t offset);
/* The same in two steps, so callers can compress on many threads and
 * store in order: cp_image_compress() fills out (cluster size bytes) and
 * returns the compressed length, or 0 when the data does not compress
 * (store it with a normal write then); cp_image_store_compressed() writes
 * such bytes as the cluster at offset. */
long cp_image_compress(cp_image *img, const void *buf, size_t len, void *out);
int cp_image_store_compressed(cp_image *img, const void *data, size_t dlen,
			      uint64_t offset);
/* Deallocate every cluster of a qcow2 image so that its backing file shows
 * through everywhere (what qemu-img commit does to the committed image). */
int cp_image_make_empty(cp_image *img);
/* Reopen this layer (not its backing chain) read-write or read-only.  Only
 * for layers opened by path.  In-flight async requests are drained first. */
int cp_image_reopen(cp_image *img, bool readwrite);
/* Point the image at another backing file (NULL: none) and record its
 * format (NULL: none).  Rewrites the header (first sector last) and, with
 * reopen, replaces the open backing chain by the new one.  Does not copy
 * data: see cp_image_rebase() for the safe form. */
int cp_image_set_backing(cp_image *img, const char *backing,
			 const char *backing_format, bool reopen);

struct cp_amend_opts {
	size_t size;        /* sizeof(struct cp_amend_opts), set by _init */
	int qcow_version;   /* 0 = keep, 2 (compat=0.10) or 3 (compat=1.1) */
	int lazy_refcounts; /* -1 = keep, 0 = off, 1 = on */
};
void cp_amend_opts_init(struct cp_amend_opts *o);
/* Change header options in place where that is safe: compat upgrade,
 * downgrade when no version 3 feature is in use (zero clusters without a
 * backing file are deallocated first), lazy refcounts on/off. */
int cp_image_amend(cp_image *img, const struct cp_amend_opts *o);

/* --- whole-image operations (qemu-img commit/rebase/convert/measure) ------
 * Each runs its copy on `parallel` worker threads over chunks of the disk
 * and reports progress (bytes done of total) from any of them.  Every one
 * is crash safe: at any instant the chain reads the same data, and running
 * the same operation again completes it. */
typedef void (*cp_progress_fn)(void *opaque, uint64_t done, uint64_t total);

struct cp_commit_opts {
	size_t size;            /* sizeof(struct cp_commit_opts), set by _init */
	cp_image *base;         /* NULL = the top's backing file; otherwise a
				 * layer of the top's chain */
	bool keep_top;          /* -d: do not empty the top afterwards
				 * (implied when base is not the backing file) */
	uint64_t rate_limit;    /* bytes per second, 0 = unlimited */
	unsigned parallel;      /* 0 = 8 */
	cp_progress_fn progress;
	void *opaque;
};
void cp_commit_opts_init(struct cp_commit_opts *o);
/* Copy everything allocated above base into base (growing base to the
 * top's size if it is smaller), flush it, then empty the top unless
 * keep_top.  Layers are reopened read-write as needed. */
int cp_image_commit(cp_image *top, const struct cp_commit_opts *o);

struct cp_rebase_opts {
	size_t size;            /* sizeof(struct cp_rebase_opts), set by _init */
	const char *backing;    /* new backing file; NULL or "" = none */
	const char *backing_format; /* NULL = probe it */
	bool unsafe;            /* -u: only change the header */
	unsigned parallel;      /* 0 = 8 */
	cp_progress_fn progress;
	void *opaque;
};
void cp_rebase_opts_init(struct cp_rebase_opts *o);
/* Safe mode: every range not allocated in img whose content differs
 * between the old and the new backing chain is copied into img first;
 * then the header switches to the new backing file. */
int cp_image_rebase(cp_image *img, const struct cp_rebase_opts *o);

struct cp_convert_opts {
	size_t size;            /* sizeof(struct cp_convert_opts), set by _init */
	bool compress;          /* -c: write compressed clusters (qcow2 target) */
	unsigned parallel;      /* -m, 0 = 8 */
	bool out_of_order;      /* -W: writes need not be in disk order */
	uint64_t sparse_size;   /* -S: zero runs of at least this many bytes are
				 * left unallocated; 0 = write everything;
				 * default 4096 */
	bool target_is_zero;    /* the target reads as zeroes already */
	bool source_top_only;   /* -B: copy only what the source's top layer
				 * allocates (target has the same backing) */
	cp_progress_fn progress;
	void *opaque;
};
void cp_convert_opts_init(struct cp_convert_opts *o);
/* Copy src's content (its whole chain) into dst (same or larger size). */
int cp_image_convert(cp_image *src, cp_image *dst,
		     const struct cp_convert_opts *o);

struct cp_measure_opts {
	size_t size;            /* sizeof(struct cp_measure_opts), set by _init */
	enum cp_fmt format;     /* output format; default qcow2 */
	uint64_t virtual_size;  /* --size, when there is no source image */
	uint32_t cluster_size;  /* 65536 */
	unsigned refcount_bits; /* 16 */
	bool extended_l2;
	enum cp_prealloc prealloc;
	int qcow_version;       /* 3 (default) or 2 */
};
void cp_measure_opts_init(struct cp_measure_opts *o);
struct cp_measure_result {
	uint64_t required, fully_allocated;
	bool has_bitmaps;
	uint64_t bitmaps;
};
/* qemu-img measure: bytes needed for a new image holding src (or an empty
 * one of virtual_size when src is NULL), and when fully allocated. */
int cp_image_measure(cp_image *src, const struct cp_measure_opts *o,
		     struct cp_measure_result *res);

/* --- persistent dirty bitmaps (qcow2 v3; qemu-img bitmap semantics) -------
 * A read-write open loads the image's bitmaps, marks them in use on disk
 * and sets the bits of every range written, zeroed or discarded in the
 * enabled ones; close stores them (crash safe).  Bitmaps found in use at
 * open (their writer stopped without storing them) are "inconsistent":
 * listed, kept, removable, but not usable.  The changing calls need the
 * image open read-write with no request in flight; changes are written
 * at close (cp_image_close) or a reopen read-only. */
struct cp_bitmap_info {
	char name[1024];
	uint32_t granularity; /* bytes per bit */
	bool in_use;          /* inconsistent */
	bool enabled;         /* "auto": tracks writes */
};
/* Number of bitmaps (0 for raw images and images without). */
int cp_image_bitmap_count(cp_image *img);
/* Bitmap i, in directory order. */
int cp_image_bitmap_get(cp_image *img, unsigned i, struct cp_bitmap_info *bi);
struct cp_bitmap_add_opts {
	size_t size;          /* sizeof(struct cp_bitmap_add_opts), set by _init */
	uint32_t granularity; /* 0 = cluster size clamped to 4 KiB..64 KiB */
	bool disabled;        /* created disabled (does not track writes) */
};
void cp_bitmap_add_opts_init(struct cp_bitmap_add_opts *o);
/* -EEXIST when the name exists, -ENOTSUP on raw and compat 0.10 images. */
int cp_image_bitmap_add(cp_image *img, const char *name,
			const struct cp_bitmap_add_opts *o);
/* -ENOENT when there is no such bitmap.  Inconsistent ones may be
 * removed; the others below fail with -EBUSY on them. */
int cp_image_bitmap_remove(cp_image *img, const char *name);
int cp_image_bitmap_clear(cp_image *img, const char *name);
int cp_image_bitmap_enable(cp_image *img, const char *name, bool enable);
/* name |= src_name of src (NULL: img itself; src may be open read-only).
 * Both must cover the same virtual size; granularities may differ. */
int cp_image_bitmap_merge(cp_image *img, const char *name, cp_image *src,
			  const char *src_name);

/* The run of bitmap name's bits at offset (at most len bytes): 1 dirty, 0
 * clean, *pnum its length in bytes (whole granules but at the disk's
 * end). */
int cp_image_bitmap_status(cp_image *img, const char *name, uint64_t offset,
			   uint64_t len, uint64_t *pnum);

/* --- check and repair (qemu-img check semantics) --------------------------- */
#define CP_CHECK_REPAIR_LEAKS 0x1u  /* -r leaks */
#define CP_CHECK_REPAIR_ALL 0x3u    /* -r all */
struct cp_check_result {
	uint64_t corruptions, leaks, check_errors;
	uint64_t corruptions_fixed, leaks_fixed;
	uint64_t image_end_offset;
	uint64_t total_clusters, allocated_clusters;
	uint64_t fragmented_clusters, compressed_clusters;
};
/* report(opaque, msg) is called once per problem found, with a line such
 * as "ERROR cluster 5 refcount=1 reference=2" (qemu-img's wording).  Returns
 * 0 when the check ran (whatever it found), -errno if it could not run.
 * The image must be the top image opened with for_check (read-write when
 * repairing). */
typedef void (*cp_check_report_fn)(void *opaque, const char *msg);
int cp_image_check(cp_image *img, unsigned repair,
		   struct cp_check_result *res, cp_check_report_fn report,
		   void *opaque);

#ifdef __cplusplus
}
#endif

#endif
