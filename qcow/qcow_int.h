/* qcow/qcow_int.h - private declarations of the image engine.
 *
 * Locking
 * -------
 * Each qcow2 image has one mutex, q->lock, protecting the in-memory header,
 * the L1 table, both metadata caches, the allocator and the in-flight list.
 * Guest data I/O is never issued with q->lock held.  Metadata I/O (cache
 * misses, write-back) currently is: it is rare on the hot path because the
 * default L2 cache maps the whole disk.
 *
 * Crash ordering (what a power cut at any write can leave)
 * ---------------------------------------------------------
 *  1. a new data cluster is written before the L2 entry pointing at it:
 *     every dirty L2 slice is written only after a device flush that follows
 *     the data writes (qc_l2_barrier_locked);
 *  2. a refcount increase reaches disk before the L2/L1/refcount-table entry
 *     that makes the cluster used (dirty refcount blocks are written, then
 *     the device flushed, before any dirty L2 slice is written);
 *  3. an L2 entry is cleared on disk before the refcount decrease: freed
 *     clusters go to q->pending_free and are only applied to the refcounts
 *     in the flush sequence after the L2 slices have been written and
 *     flushed, and after a grace period in which every data request that
 *     could still touch them has completed.
 *  Leaks (refcount higher than references) are the only damage a cut can
 *  cause; check -r leaks repairs them.
 *
 * With lazy_refcounts, rule 2 is relaxed: refcount blocks are written only
 * at close, the image carries the dirty bit meanwhile, and the next
 * read-write open rebuilds the refcounts (qc_check(), repair all) before use.
 */
#ifndef CP_QCOW_INT_H
#define CP_QCOW_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "common.h"
#include "qcow.h"
#include "vector.h"

/* ------------------------------------------------------------------------
 * On-disk format constants (QCOW2 spec, docs/interop/qcow2.txt; all fields
 * big-endian).  The header layout is described in docs/formats/qcow2.md.
 */
#define QC_MAGIC 0x514649fbu
#define QC_HDR_V2_LEN 72
#define QC_HDR_V3_LEN 104 /* + compression_type byte + padding = 112 */

#define QC_INCOMPAT_DIRTY (1ull << 0)
#define QC_INCOMPAT_CORRUPT (1ull << 1)
#define QC_INCOMPAT_DATA_FILE (1ull << 2)
#define QC_INCOMPAT_COMPRESSION (1ull << 3)
#define QC_INCOMPAT_EXTL2 (1ull << 4)
#define QC_INCOMPAT_KNOWN                                                      \
	(QC_INCOMPAT_DIRTY | QC_INCOMPAT_CORRUPT | QC_INCOMPAT_COMPRESSION |   \
	 QC_INCOMPAT_EXTL2)
#define QC_COMPAT_LAZY_REFCOUNTS (1ull << 0)

#define QC_EXT_END 0x00000000u
#define QC_EXT_BACKING_FORMAT 0xe2792acau
#define QC_EXT_FEATURE_TABLE 0x6803f857u
#define QC_EXT_BITMAPS 0x23852875u
#define QC_EXT_CRYPTO 0x0537be77u
#define QC_EXT_DATA_FILE 0x44415441u

#define QC_OFLAG_COPIED (1ull << 63)
#define QC_OFLAG_COMPRESSED (1ull << 62)
#define QC_OFLAG_ZERO (1ull << 0)
#define QC_L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define QC_L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define QC_L1E_RESERVED 0x7f000000000001ffull
#define QC_L2E_STD_RESERVED 0x3f000000000001feull
#define QC_REFT_OFFSET_MASK 0xfffffffffffffe00ull

#define QC_COMPRESSION_ZLIB 0
#define QC_COMPRESSION_ZSTD 1

#define QC_MAX_CLUSTER_BITS 21
#define QC_MIN_CLUSTER_BITS 9
#define QC_MAX_L1_BYTES (32u << 20)      /* as QEMU: QCOW_MAX_L1_SIZE */
#define QC_MAX_REFTABLE_BYTES (8u << 20) /* QCOW_MAX_REFTABLE_SIZE */
#define QC_SUBCLUSTERS 32
#define QC_MAX_SIZE (1ull << 56)          /* sanity bound on virtual size */

/* ------------------------------------------------------------------------
 * cache.c - metadata slice cache (L2 slices, refcount blocks), L2 barrier
 */
struct qc_centry {
	uint64_t offset; /* host offset of the slice; 0 = empty slot */
	void *data;      /* entry_size bytes, 4 KiB aligned */
	uint64_t lru;
	int pins;
	bool dirty;
	bool checked; /* L2: passed the write check since it was loaded */
};

struct qc_cache {
	const char *what; /* "L2" or "refcount" for messages */
	unsigned n;
	uint32_t entry_size;
	uint64_t clock;
	struct qc_centry *e;
	struct qc_centry *last; /* returned by the last qc_cache_get() */
};

struct qcow;
int qc_cache_init(struct qc_cache *c, const char *what, unsigned n,
		  uint32_t entry_size);
void qc_cache_destroy(struct qc_cache *c);
/* Pin the slice at host offset off and return its data.  With load, read it
 * from disk on a miss (validated by the caller), otherwise fill with zeroes
 * (a freshly allocated table).  May write back a dirty victim.  Caller holds
 * q->lock and must qc_cache_put() the returned pointer. */
int qc_cache_get(struct qcow *q, struct qc_cache *c, uint64_t off, bool load,
		 void **data);
void qc_cache_put(struct qc_cache *c, void *data);
void qc_cache_mark_dirty(struct qc_cache *c, void *data);
/* Write every dirty entry (no device flush). */
int qc_cache_writeback(struct qcow *q, struct qc_cache *c);
bool qc_cache_has_dirty(const struct qc_cache *c);
/* The `checked` mark of a pinned entry (cleared when the entry is loaded). */
bool qc_cache_checked(struct qc_cache *c, void *data);
void qc_cache_set_checked(struct qc_cache *c, void *data);
/* Forget the entry for off (it is being freed or rewritten directly). */
void qc_cache_drop(struct qc_cache *c, uint64_t off);
/* Forget every entry (must be clean). */
void qc_cache_clear(struct qc_cache *c);
/* Write the dirty state back in crash-safe order before an L2 slice goes to
 * disk: dirty refblocks (unless lazy), then a device flush if needed. */
int qc_l2_barrier_locked(struct qcow *q);

/* ------------------------------------------------------------------------
 * image state
 */
struct qc_ext {
	uint32_t type, len;
	uint8_t *data;
};
CP_VECTOR(qc_ext_vec, struct qc_ext);

/* A guest range whose metadata an in-flight request is changing. */
struct qc_inflight {
	uint64_t start, end; /* guest bytes, cluster aligned */
	struct qc_inflight *next;
};

struct qc_free {
	uint64_t off, len; /* host bytes, cluster aligned */
};
CP_VECTOR(qc_free_vec, struct qc_free);

/* A persistent dirty bitmap (bitmap.c). */
struct qc_bitmap {
	char *name;
	uint32_t flags;       /* directory flags (auto, extra_data_compatible;
			       * in_use as found at open) */
	unsigned gran_bits;
	uint64_t table_off;   /* 0: not stored yet */
	uint32_t table_size;
	uint8_t *extra;       /* extra data (compatible), kept as found */
	uint32_t extra_size;
	bool inconsistent;    /* in_use at open: kept as found, never used */
	bool modified;        /* bits changed since load: store anew */
	uint64_t *bits;       /* read-write opens: the bitmap (bit k of word
			       * k/64); NULL when not loaded */
	uint64_t nbits;
};

struct qcow {
	cp_image *img; /* owning image */
	/* Metadata I/O (always under q->lock) goes to dev; guest data to
	 * ddev.  For images opened by path they are two handles on the same
	 * file, so a data completion callback may wait for q->lock while the
	 * lock holder waits for a metadata completion on the other ring. */
	cp_bdev *dev;
	cp_bdev *ddev;
	bool own_mdev;
	const char *name;
	/* Read len bytes at off of the backing chain (zeroes past its end)
	 * into iov from skip on.  image.c, which owns the chain, sets it after
	 * qc_open(): the format code does not call the generic layer. */
	int (*read_backing)(struct qcow *q, const struct iovec *iov, int cnt,
			    size_t skip, uint64_t off, uint64_t len);
	/* Does [off, off + len) of the backing chain read as zeroes by its
	 * metadata alone (no data read)?  Past its end counts as zeroes.
	 * Set by image.c with read_backing. */
	bool (*backing_reads_zero)(struct qcow *q, uint64_t off, uint64_t len);

	/* header */
	int version;
	uint64_t size;
	unsigned cluster_bits;
	uint32_t cluster_size;
	uint64_t l1_table_offset;
	uint32_t l1_size;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	unsigned refcount_order;  /* refcount_bits = 1 << order */
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t incompat, compat, autoclear;
	uint32_t header_length;
	uint8_t compression_type;
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	char *backing_file;   /* NULL if none */
	char *backing_format; /* from the extension; NULL if none */
	qc_ext_vec exts;      /* every header extension, in order */

	/* derived geometry */
	bool extl2;
	unsigned l2_entry_size; /* 8 or 16 */
	unsigned l2_bits;       /* log2(entries per L2 table) */
	uint32_t l2_entries;
	uint32_t slice_size;    /* L2 cache entry size, bytes */
	uint32_t slice_entries;
	uint32_t subcluster_size; /* extl2: cluster/32, else cluster */
	uint64_t refblock_entries; /* per refcount block */
	unsigned refblock_bits;    /* log2(refblock_entries) */
	uint64_t max_refcount;

	/* tables in host order */
	uint64_t *l1;       /* l1_size entries (allocated to a cluster multiple) */
	uint64_t *reftable; /* reftable_entries */
	uint64_t reftable_entries;

	pthread_mutex_t lock;
	pthread_cond_t inflight_cond;
	struct qc_cache l2c, rbc;
	struct qc_inflight *inflight;
	uint64_t free_cluster_index;
	uint64_t known_zero_from; /* host clusters at/after this read zero */
	uint64_t host_end;        /* file length, or end of the highest
				   * cluster allocated since open if larger */
	/* Files grow ahead of allocation (fallocate), so that data writes
	 * to new clusters are not extending writes, which the filesystem
	 * serialises.  file_end: the length we set; alloc_end: end of the
	 * highest cluster allocated; the excess is trimmed at close. */
	bool grow_ahead;
	uint64_t file_end, alloc_end;
	/* High-water mark (cp_image_high_water): known once computed from
	 * the refcounts, then raised by every allocation; the one-shot
	 * threshold event fires from qc_note_alloc_locked(). */
	bool hw_known;
	uint64_t hw, hw_threshold;
	void (*hw_cb)(void *opaque, uint64_t hw);
	void *hw_opaque;
	uint64_t open_end; /* file length at open: metadata found on disk
			    * lies below it */
	qc_free_vec pending_free;
	bool barrier_needed; /* data/refblocks written since the last flush */
	bool dirty_set;      /* dirty bit written (lazy refcounts) */
	bool readonly, corrupt;
	bool lazy;
	bool for_check; /* opened for check: tables past EOF are reported by
			 * check as corruption instead of refusing the open */
	uint64_t comp_off; /* next free byte for compressed data (0: none) */
	int meta_prealloc; /* image.c: -1 unknown, 0/1 (qemu's heuristic) */

	/* persistent dirty bitmaps (bitmap.c) */
	struct qc_bitmap **bm;
	uint32_t nb_bm;
	uint64_t bm_dir_off, bm_dir_size; /* directory on disk (0: none) */
	bool bm_active;          /* in_use written at open: store at close */
	bool bm_layout;          /* bitmaps added/removed: new directory */
	struct qc_bitmap **bm_track; /* enabled bitmaps writes mark */
	atomic_uint bm_ntrack;
	struct qc_free *bm_freed;    /* tables of removed bitmaps (off, size
				      * in entries) to free at store */
	uint32_t nb_freed;

	/* grace period: data requests in flight per epoch parity */
	atomic_uint epoch;
	atomic_int gp_count[2];
	pthread_mutex_t gp_lock;
	pthread_cond_t gp_cond;
};

/* ------------------------------------------------------------------------
 * header.c - header parsing, validation, updates, creation
 */
/* Parse and validate the header on q->dev; fills q.  Unknown incompatible
 * features, encryption and external data files are refused (-ENOTSUP). */
int qc_header_read(struct qcow *q);
/* Rewrite the fixed fields that change in place (size, L1, refcount table,
 * incompat bits), one aligned block containing bytes 0..103, with the
 * remainder of that block (extensions) read back and preserved. */
int qc_header_update_locked(struct qcow *q);
/* Set/clear incompatible bits on disk (dirty, corrupt). */
int qc_header_set_incompat_locked(struct qcow *q, uint64_t set, uint64_t clear);
/* Rewrite the whole header cluster from q (backing name/format, version,
 * feature bits), first sector last. */
int qc_header_rewrite_locked(struct qcow *q);
/* Mark the image corrupt (header bit, read-only from now on) and return
 * -EUCLEAN with a message "name: <what>; image marked corrupt". */
int qc_corrupt(struct qcow *q, const char *fmt, ...) CP_PRINTF(2, 3);

/* ------------------------------------------------------------------------
 * refcount.c - refcounts and the cluster allocator
 */
int qc_refcount_get_locked(struct qcow *q, uint64_t cluster, uint64_t *rc);
/* Add delta (may be negative) to the refcount of every cluster in [off,
 * off+len). */
int qc_refcount_update_locked(struct qcow *q, uint64_t off, uint64_t len,
			      int64_t delta);
/* Allocate n contiguous clusters (refcount 1 each), sets *off. */
int qc_alloc_clusters_locked(struct qcow *q, uint64_t n, uint64_t *off);
/* Host clusters up to end are in use now: raise alloc_end (and, for
 * clusters past the old end of the file, host_end and known_zero_from) and
 * the high-water mark, firing its threshold event once crossed. */
void qc_note_alloc_locked(struct qcow *q, uint64_t end, bool fresh);
/* The end of the highest cluster with a non-zero refcount (0: none). */
int qc_highest_used_locked(struct qcow *q, uint64_t *end);
/* Largest run a data writer should ask qc_alloc_clusters_locked for (a
 * longer one is placed in a fresh region past everything in use). */
uint64_t qc_max_alloc(const struct qcow *q);
/* Queue clusters for freeing after the next L2 barrier (rule 3). */
int qc_free_later_locked(struct qcow *q, uint64_t off, uint64_t len);
/* What a write puts on disk, for the overlap check: a structure may be
 * rewritten by a write of its own kind only (an L2 slice never passes over
 * a refcount block that damage placed at the same offset). */
enum qc_meta {
	QC_META_NONE,      /* guest data or a fresh allocation */
	QC_META_L1,        /* the L1 table */
	QC_META_REFT,      /* the refcount table */
	QC_META_REFBLOCK,  /* a refcount block: refused too when more than
			    * one refcount table entry points at it */
	QC_META_L2,        /* an L2 table (guest write-back): refused too
			    * when more than one L1 entry points at it */
	QC_META_L2_REPAIR, /* an L2 table rewritten by check -r (which
			    * repairs shared tables: no such refusal) */
	QC_META_FIXED,     /* header, snapshot table: never rewritten here */
};
/* Checks that [off, off+len) overlaps no metadata (header, L1, refcount
 * table, refcount blocks, L2 tables (only while the L1 table has at most
 * 16384 entries), snapshot table) other than the structure of kind `kind`
 * that contains off.  On overlap the image is marked corrupt and -EUCLEAN
 * returned, naming what would be overwritten. */
int qc_overlap_check_locked(struct qcow *q, uint64_t off, uint64_t len,
			    enum qc_meta kind);
/* O(1) part of the overlap check, for every in-place data write: the
 * header, the L1 table and the refcount table.  (Allocations get the full
 * check.)  Marks the image corrupt and returns -EUCLEAN on overlap. */
int qc_overlap_fast_locked(struct qcow *q, uint64_t off, uint64_t len);
/* Write the aligned block of an on-disk table of big-endian 64-bit
 * entries (L1, refcount table) that holds entry i, from the in-memory copy
 * table[0..n) (host order); check runs the overlap check first (the
 * table is of kind `kind`). */
int qc_table_write_entry_locked(struct qcow *q, const char *what,
				enum qc_meta kind, uint64_t table_off,
				const uint64_t *table, uint64_t n, uint64_t i,
				bool check);
/* Apply pending frees (after the grace period). */
int qc_apply_pending_free_locked(struct qcow *q);
/* Make sure the file reaches end (growing ahead by a window). */
int qc_grow_file_locked(struct qcow *q, uint64_t end);
/* Offsets of refcount block/entry helpers shared with check.c */
uint64_t qc_refblock_get(const struct qcow *q, const void *block, uint64_t i);
void qc_refblock_set(const struct qcow *q, void *block, uint64_t i,
		     uint64_t v);

/* ------------------------------------------------------------------------
 * snapshot.c - the internal snapshot table (QEMU's reading and writing)
 */
#define QC_MAX_SNAPSHOTS 65536u
struct qc_snap {
	uint64_t l1_offset;
	uint32_t l1_size;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size, disk_size, icount;
	uint32_t extra_size; /* as stored (cut to 1024 by a repair) */
	uint8_t *unknown;    /* extra data past the 24 bytes known */
	char *id, *name;
};
struct qc_snaps {
	struct qc_snap *v;
	uint32_t n;
	uint64_t size;     /* bytes from the table's offset to its end */
	uint32_t reduced;  /* repair: overhanging snapshots dropped */
	uint32_t dropped;  /* repair: entries whose extra data was cut */
};
/* QEMU's qcow2_validate_table for the snapshot table: at most 65536
 * entries (-EFBIG), a cluster aligned offset that leaves room for them
 * below 2^63 (-EINVAL). */
int qc_snapshots_validate(const struct qcow *q, uint32_t nb, uint64_t off);
/* Read the table q->nb_snapshots / q->snapshots_offset point at.  Past the
 * end of the file it reads zeroes; more than 1024 bytes of extra data in an
 * entry or a table over 64 MiB fail with -EFBIG, unless repair: then the
 * extra data is cut (s->dropped) and the overhanging entries dropped
 * (s->reduced), each said through report. */
int qc_snapshots_read(struct qcow *q, bool repair, struct qc_snaps *s,
		      cp_check_report_fn report, void *opaque);
void qc_snapshots_free(struct qc_snaps *s);
/* 1 if entry i of a v3 image lacks the 16 bytes of extra data v3 requires */
uint32_t qc_snapshots_incomplete(const struct qcow *q, const struct qc_snaps *s,
				 uint32_t i);
/* Write nb_snapshots in the header (flushed). */
int qc_snapshots_set_count(struct qcow *q, uint32_t nb);
/* Write s as a new table in fresh clusters, point the header at it and
 * free the old table's clusters (refcounts must be right: check only). */
int qc_snapshots_write(struct qcow *q, const struct qc_snaps *s,
		       uint64_t old_off, uint64_t old_size);

/* ------------------------------------------------------------------------
 * cluster.c - L1/L2 mapping
 */
enum qc_ctype {
	QC_UNALLOC = 0, /* read from backing (or zeroes) */
	QC_ZERO,        /* reads as zeroes */
	QC_NORMAL,      /* data at host offset */
	QC_COMPRESSED,
};
struct qc_map {
	enum qc_ctype type;
	uint64_t host;   /* NORMAL: host offset of the byte asked for;
			  * UNALLOC in an allocated extended-L2 cluster: the
			  * host offset the subcluster would have (else 0) */
	uint64_t cdesc;  /* COMPRESSED: the raw L2 entry */
	bool copied;     /* NORMAL: refcount known to be 1 */
	uint64_t bytes;  /* run length from the asked offset */
};
/* Map guest offset off, at most len bytes, to one run of uniform type
 * (contiguous host offsets for NORMAL), never crossing an L2 slice.  With
 * extl2 the run is made of subclusters. */
int qc_map_locked(struct qcow *q, uint64_t off, uint64_t len,
		  struct qc_map *m);
/* What the caller of qc_l2_lookup_locked() does with the entry. */
enum qc_l2_use {
	QC_L2_READ,  /* reads it */
	QC_L2_ALLOC, /* changes it; allocates the L2 table if absent */
	QC_L2_WRITE, /* changes it if the L2 table exists (else no slice) */
};
/* Read the L2 entry (and bitmap) of the cluster containing off.  Pins the
 * slice: *slice and *idx are valid until qc_cache_put(&q->l2c, *slice).
 * For a change (ALLOC, WRITE) the table must be one the image may write:
 * an L2 table that is also other metadata or that another L1 entry shares
 * (damage) marks the image corrupt and fails with -EUCLEAN before anything
 * is written; its L1 entry gets COPIED if its refcount is 1. */
int qc_l2_lookup_locked(struct qcow *q, uint64_t off, enum qc_l2_use use,
			void **slice, uint32_t *idx);
uint64_t qc_l2_entry(const struct qcow *q, const void *slice, uint32_t idx);
uint64_t qc_l2_bitmap(const struct qcow *q, const void *slice, uint32_t idx);
void qc_l2_set(struct qcow *q, void *slice, uint32_t idx, uint64_t entry,
	       uint64_t bitmap);
/* Host clusters referenced by an L2 entry (for freeing): normal cluster,
 * or the clusters spanned by compressed data. */
void qc_entry_host_range(const struct qcow *q, uint64_t entry, uint64_t *off,
			 uint64_t *len);
/* Compressed descriptor decode */
void qc_compressed_range(const struct qcow *q, uint64_t entry, uint64_t *off,
			 uint64_t *len);

/* ------------------------------------------------------------------------
 * order.c - crash ordering: grace period, in-flight list, dirty bit, flush
 */
/* Grace period of a data request that may touch host clusters: enter
 * under q->lock (returns the epoch), exit from any thread. */
unsigned qc_gp_enter_locked(struct qcow *q);
void qc_gp_exit(struct qcow *q, unsigned epoch);
/* The in-flight list: guest ranges [s, e) whose metadata a request is
 * changing (q->lock held).  A request waits until its range is free,
 * registers it (f lives until the matching del), and deletes it when its
 * metadata is in place, waking the waiters. */
bool qc_inflight_conflict_locked(struct qcow *q, uint64_t s, uint64_t e);
void qc_inflight_wait_locked(struct qcow *q, uint64_t s, uint64_t e);
void qc_inflight_add_locked(struct qcow *q, struct qc_inflight *f, uint64_t s,
			    uint64_t e);
void qc_inflight_del_locked(struct qcow *q, struct qc_inflight *f);
/* Lazy refcounts: write the dirty bit before the first metadata change. */
int qc_set_dirty_locked(struct qcow *q);
/* The flush sequence: L2 barrier, L2 slices, device flush, then (after the
 * grace period) the pending frees, their refcount blocks and a flush. */
int qc_flush(struct qcow *q);
int qc_flush_locked(struct qcow *q);

/* ------------------------------------------------------------------------
 * open.c - open and close of qcow2 images
 */
int qc_open(cp_image *img, struct qcow **out, const struct cp_open_opts *o);
int qc_close(struct qcow *q);

/* ------------------------------------------------------------------------
 * io.c - read/write/zero/discard/preallocate/resize of qcow2 images
 */
int qc_readv(struct qcow *q, const struct iovec *iov, int iovcnt,
	     uint64_t off, uint64_t len);
int qc_writev(struct qcow *q, const struct iovec *iov, int iovcnt,
	      uint64_t off, uint64_t len);
int qc_zero(struct qcow *q, uint64_t off, uint64_t len, unsigned flags,
	    bool discard);
int qc_resize(struct qcow *q, uint64_t new_size, enum cp_prealloc pre);
/* Deallocate every cluster of the image (the backing shows through). */
int qc_make_empty(struct qcow *q);
/* Asynchronous write without worker threads when it needs no copy-on-
 * write and no metadata I/O at completion: a fresh cluster allocation
 * (whole clusters, or a known-zero cluster with nothing to copy, or whole
 * subclusters with extended L2) or filling subclusters of a cluster this
 * image owns.  The L2 update runs in the completion.  Returns -EAGAIN when
 * the request does not qualify (nothing was done), 0 when queued (cb will
 * run), or -errno. */
int qc_write_async_fast(struct qcow *q, const struct iovec *iov, int cnt,
			uint64_t off, uint64_t len, cp_io_cb cb, void *opaque);
/* Deallocate whole clusters [s, e) (version 2 semantics of a zero). */
int qc_dealloc(struct qcow *q, uint64_t s, uint64_t e);
int qc_preallocate(struct qcow *q, uint64_t from, uint64_t to,
		   enum cp_prealloc pre);
int qc_block_status(struct qcow *q, uint64_t off, uint64_t len,
		    struct qc_map *m);

/* ------------------------------------------------------------------------
 * bitmap.c - persistent dirty bitmaps (life cycle at the top of bitmap.c)
 */
/* Read the bitmap directory and the consistent bitmaps' data (every
 * open).  A directory or table QEMU would refuse fails the open. */
int qc_bitmaps_load(struct qcow *q);
/* Read-write open: set in_use on the loaded bitmaps on disk (flushed)
 * before any guest write, and start tracking the enabled ones. */
int qc_bitmaps_start_locked(struct qcow *q);
/* Mark guest bytes [off, off + len) dirty in every enabled bitmap.  Lock
 * free, no allocation; called before every guest write, zero write and
 * discard. */
void qc_bitmaps_mark(struct qcow *q, uint64_t off, uint64_t len);
/* Close / reopen read-only: store the bitmaps and clear in_use (crash
 * safe; old clusters go to the pending-free list). */
int qc_bitmaps_store_locked(struct qcow *q);
void qc_bitmaps_free(struct qcow *q);
struct qc_bitmap *qc_bitmap_find(struct qcow *q, const char *name);
/* Resize: refused while an inconsistent bitmap exists (as QEMU); then the
 * in-memory bitmaps follow the new size. */
int qc_bitmaps_resize_check_locked(struct qcow *q);
int qc_bitmaps_resize_locked(struct qcow *q, uint64_t new_size);
/* qemu-img measure's "bitmaps size" for src's bitmaps in a new image of
 * the given size and cluster size. */
uint64_t qc_bitmaps_measure(struct qcow *src, uint64_t size, uint32_t cs);

/* ------------------------------------------------------------------------
 * codec.c - compression codecs (zlib deflate, zstd)
 */
/* Compress one cluster (len <= cluster_size, zero padded) into out
 * (cluster_size bytes) returning the length, or 0 when it does not
 * compress. */
long qc_compress(struct qcow *q, const void *buf, size_t len, void *out);
/* Decompress one compressed cluster into buf (cluster_size bytes). */
int qc_decompress(struct qcow *q, uint64_t entry, uint8_t *buf);

/* ------------------------------------------------------------------------
 * compressed.c - the compressed store
 */
/* Store one compressed cluster (guest offset cluster aligned; len <= one
 * cluster, zero padded) into an unallocated or zero cluster: qc_compress,
 * then qc_store_compressed, or a plain write when it does not compress. */
int qc_write_compressed(struct qcow *q, const void *buf, size_t len,
			uint64_t off);
struct qc_cpiece {
	const void *data;
	size_t len;
	uint64_t off; /* guest cluster */
};
/* Store k compressed clusters packed into one fresh run of host clusters
 * with one write. */
int qc_store_compressed_batch(struct qcow *q, const struct qc_cpiece *pc,
			      unsigned k);
/* Store compressed bytes for the cluster at off. */
int qc_store_compressed(struct qcow *q, const void *data, size_t dlen,
			uint64_t off);

/* ------------------------------------------------------------------------
 * check.c - consistency check and repair
 */
int qc_check(struct qcow *q, unsigned repair, struct cp_check_result *res,
	     cp_check_report_fn report, void *opaque);

/* ------------------------------------------------------------------------
 * create.c
 */
int qc_create(cp_bdev *dev, const char *name,
	      const struct cp_create_opts *o, uint64_t size);

/* ------------------------------------------------------------------------
 * image.c - the generic layer (raw and qcow2, backing chains)
 */
struct img_async;
struct cp_image {
	char *filename;
	char *dir;            /* for resolving relative backing names */
	enum cp_fmt format;
	cp_bdev *dev;
	bool own_dev;
	bool readonly;
	uint64_t size;        /* raw: device size at open (virtual size) */
	struct qcow *q;       /* qcow2 only */
	cp_image *backing;
	struct cp_open_opts opts;
	int depth;            /* 0 = top */
	struct img_async *async; /* image.c: async state and workers */
	bool probed;          /* raw without -f: sector 0 writes are checked */
};
/* The options of a public call (image.c, create.c, ops.c): a copy of
 * *opts, or the defaults (init) when opts is NULL. */
#define QC_OPTS_OR_DEFAULTS(o, opts, init)                                     \
	do {                                                                   \
		if (opts)                                                      \
			(o) = *(opts);                                         \
		else                                                           \
			init(&(o));                                            \
	} while (0)
/* Open a chain named relative to img (through its backing hook if any). */
int qc_open_relative(cp_image *img, const char *name, enum cp_fmt fmt,
		     bool no_backing, cp_image **out);

/* ------------------------------------------------------------------------
 * perm.c - the locks of each layer (QEMU's permissions)
 */
/* Lock dev for img as a writable or read-only layer (img->opts.force_share
 * applies to read-only ones); -EBUSY on a conflict (blockcore's message). */
int qc_image_lock(cp_image *img, cp_bdev *dev, bool writable);
/* Drop img's locks on img->dev (a device the caller keeps open). */
void qc_image_unlock(cp_image *img);
/* Lock a file about to be created or overwritten by cp_image_create(). */
int qc_create_lock(cp_bdev *dev);

/* ------------------------------------------------------------------------
 * probe.c - the formats qemu-img probes
 */
/* The format the first bytes b[0..n) (and the file name) probe as, as
 * QEMU's drivers probe them, or NULL for raw. */
const char *qc_probe_format(const uint8_t *b, size_t n, const char *filename);
/* -EPERM if a write of [offset, offset+len) would make a probed raw image
 * probe as another format (QEMU's rule for probed raw images). */
int qc_probed_write_check(cp_image *img, const struct iovec *iov, int iovcnt,
			  uint64_t offset, uint64_t len);

/* jsonname.c: parse a json:{...} image name into its file name (malloc'd)
 * and the format to open it with: want (-f, or the overlay's backing
 * format) when given, as in QEMU, else the name's driver, raw for the file
 * protocol alone, CP_FMT_AUTO (probe) when it names none; -ENOTSUP for the
 * shapes cowpool does not understand, -EINVAL for the protocol alone when
 * a format is wanted. */
int qc_json_name(const char *name, enum cp_fmt want, char **filename,
		 enum cp_fmt *fmt);

#endif
