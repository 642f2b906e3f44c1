/* blockcore/blockcore.h - the cowpool I/O engine (public header).
 *
 * One device interface (cp_bdev) over regular files, block devices and a RAM
 * device for tests, served by one of three asynchronous backends:
 *
 *   CP_AIO_IO_URING  io_uring (default)           qemu-img -i io_uring
 *   CP_AIO_NATIVE    Linux AIO (libaio)           qemu-img -i native
 *   CP_AIO_THREADS   pool of preadv/pwritev threads  qemu-img -i threads
 *
 * Errors: every int-returning function returns >= 0 on success, -errno on
 * failure, and leaves a message in cp_last_error() naming the device.
 *
 * Threads: every function may be called from any thread, concurrently,
 * unless stated otherwise.  Completion callbacks run on a completion thread
 * owned by the device (never on the submitting thread's stack frame, except
 * that a request that fails before submission returns its error directly and
 * its callback is NOT called).  A callback may submit new requests.
 *
 * Completion threads, in detail (blockcore/blockcore_int.h has the locks):
 *   - io_uring / native: one completion thread per device, so callbacks of
 *     fast-path requests are serialised; threads: any of opts.threads
 *     workers, concurrently; RAM: one thread, in submission order.
 *     Requests served by the slow path (unaligned with O_DIRECT, flush with
 *     cache=unsafe or read-only) complete on one of the device's helper
 *     threads, concurrently with the others.  Completion order is not
 *     submission order.
 *   - No blockcore lock is held while a callback runs.  A callback should
 *     not block for long: it holds up every completion behind it.
 *   - Synchronous calls (cp_bdev_preadv/pwritev/pread/pwrite/flush, and
 *     cp_bdev_write_zeroes / cp_bdev_preallocate when they fall back to
 *     writing zero buffers) made from a completion callback of the SAME
 *     device fail with -EDEADLK instead of hanging.  Use the async calls
 *     there.  cp_bdev_close() must not be called from a callback.
 *   - Submitting never waits for I/O, except with native AIO on a file
 *     opened without O_DIRECT, where io_submit() does the I/O itself.
 *
 * Writes (including discard, write zeroes, truncate, preallocate) on a
 * read-only device fail with -EROFS before submission.
 *
 * Ownership: buffers passed to an async request belong to the engine until
 * its callback has run.  The iovec array itself is copied at submission.
 *
 * Alignment: with CP_CACHE_NONE (O_DIRECT) the kernel needs offsets, lengths
 * and buffer addresses aligned to cp_bdev_align().  Requests that are not
 * aligned are still served correctly (bounce buffer for reads, read-modify-
 * write for writes, serialised against overlapping writes on the same
 * device), just more slowly.  cp_bdev_alloc_buf() returns suitably aligned
 * memory.
 */
#ifndef CP_BLOCKCORE_H
#define CP_BLOCKCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cp_bdev cp_bdev;

enum cp_aio {
	CP_AIO_IO_URING = 0,
	CP_AIO_NATIVE = 1,
	CP_AIO_THREADS = 2,
};

enum cp_cache {
	CP_CACHE_WRITEBACK = 0, /* buffered I/O, flush = fdatasync   (-t writeback) */
	CP_CACHE_NONE = 1,      /* O_DIRECT, flush = fdatasync       (-t none) */
	CP_CACHE_WRITETHROUGH = 2, /* buffered + O_DSYNC              (-t writethrough) */
	CP_CACHE_DIRECTSYNC = 3,   /* O_DIRECT + O_DSYNC               (-t directsync) */
	CP_CACHE_UNSAFE = 4,       /* buffered, flush is a no-op        (-t unsafe) */
};

/* Parse "io_uring" | "native" | "threads" and "none" | "writeback" |
 * "writethrough" | "directsync" | "unsafe".  Return 0 or -EINVAL. */
int cp_aio_parse(const char *s, enum cp_aio *out);
int cp_cache_parse(const char *s, enum cp_cache *out);
const char *cp_aio_name(enum cp_aio aio);

struct cp_bdev_opts {
	size_t size;             /* sizeof(struct cp_bdev_opts), set by _init */
	enum cp_aio aio;         /* default CP_AIO_IO_URING */
	enum cp_cache cache;     /* default CP_CACHE_WRITEBACK */
	bool readonly;           /* open O_RDONLY */
	bool create;             /* create the file if missing (O_CREAT, 0644) */
	bool truncate;           /* with create: truncate to 0 (O_TRUNC) */
	unsigned queue_depth;    /* ring size / aio context size; default 128 */
	unsigned threads;        /* CP_AIO_THREADS pool size; default 16 */
	/* If the requested backend cannot be set up (io_uring disabled, aio
	 * context limit), fall back io_uring -> native -> threads instead of
	 * failing.  Default true. */
	bool fallback;
	/* Name in messages and cp_bdev_name(); NULL = path.  For a path
	 * such as /proc/self/fd/N that says nothing to the reader. */
	const char *name;
};
void cp_bdev_opts_init(struct cp_bdev_opts *opts);

/* Open a regular file or a block device.  opts may be NULL for defaults. */
int cp_bdev_open(const char *path, const struct cp_bdev_opts *opts,
		 cp_bdev **out);
/* Wait for all in-flight requests, then close and free.  NULL is a no-op. */
void cp_bdev_close(cp_bdev *dev);

/* Path given at open, or the opts' name ("ram:<n>" for RAM devices). */
const char *cp_bdev_name(const cp_bdev *dev);
/* Current size in bytes (files: st_size, grows with writes past the end;
 * block devices: BLKGETSIZE64). */
uint64_t cp_bdev_size(cp_bdev *dev);
/* Required alignment of offset, length and buffer address for the fast
 * path: logical block size with O_DIRECT (512 or 4096), 1 otherwise. */
unsigned cp_bdev_align(const cp_bdev *dev);
/* Backend actually in use (after any fallback). */
enum cp_aio cp_bdev_aio(const cp_bdev *dev);
enum cp_cache cp_bdev_cache(const cp_bdev *dev);
bool cp_bdev_is_blockdev(const cp_bdev *dev);
bool cp_bdev_readonly(const cp_bdev *dev);

/* Memory aligned to 4096 (suits any cp_bdev_align()).  Free with
 * cp_bdev_free_buf().  Returns NULL on ENOMEM. */
void *cp_bdev_alloc_buf(size_t len);
void cp_bdev_free_buf(void *buf);

/* --- asynchronous requests ------------------------------------------------
 * cb(opaque, ret) runs exactly once when the request completes; ret is 0 on
 * success or -errno.  A short read past the end of a file is zero-filled and
 * is success.  A short write is retried internally; ret never reports a
 * partial transfer.  The submit call itself returns 0 (queued: the callback
 * will run) or -errno (not queued: the callback will not run). */
typedef void (*cp_io_cb)(void *opaque, int ret);

int cp_bdev_preadv_async(cp_bdev *dev, const struct iovec *iov, int iovcnt,
			 uint64_t offset, cp_io_cb cb, void *opaque);
int cp_bdev_pwritev_async(cp_bdev *dev, const struct iovec *iov, int iovcnt,
			  uint64_t offset, cp_io_cb cb, void *opaque);
int cp_bdev_flush_async(cp_bdev *dev, cp_io_cb cb, void *opaque);

/* --- synchronous requests (submit, then wait) ----------------------------- */
int cp_bdev_preadv(cp_bdev *dev, const struct iovec *iov, int iovcnt,
		   uint64_t offset);
int cp_bdev_pwritev(cp_bdev *dev, const struct iovec *iov, int iovcnt,
		    uint64_t offset);
int cp_bdev_pread(cp_bdev *dev, void *buf, size_t len, uint64_t offset);
int cp_bdev_pwrite(cp_bdev *dev, const void *buf, size_t len, uint64_t offset);
/* Make every completed write durable (fdatasync / IORING_OP_FSYNC). */
int cp_bdev_flush(cp_bdev *dev);

/* Deallocate: FALLOC_FL_PUNCH_HOLE|KEEP_SIZE on files, BLKDISCARD on block
 * devices.  Afterwards the range reads as zeroes on files; on block devices
 * the content is unspecified.  -EOPNOTSUPP if the device cannot. */
int cp_bdev_discard(cp_bdev *dev, uint64_t offset, uint64_t len);

#define CP_ZERO_MAY_UNMAP 0x1u /* may deallocate (punch hole) instead */
/* Make the range read as zeroes: FALLOC_FL_ZERO_RANGE (or PUNCH_HOLE with
 * MAY_UNMAP) on files, BLKZEROOUT on block devices, falling back to writing
 * zero buffers.  Extends a file if the range ends past its end. */
int cp_bdev_write_zeroes(cp_bdev *dev, uint64_t offset, uint64_t len,
			 unsigned flags);

/* Set the size of a file (grow or shrink; ftruncate).  -ENOTSUP on block
 * devices unless size == current size.  Not serialised against in-flight
 * writes: the caller orders them. */
int cp_bdev_truncate(cp_bdev *dev, uint64_t size);

enum cp_prealloc {
	CP_PREALLOC_OFF = 0,
	CP_PREALLOC_METADATA = 1, /* meaningful to qcow2 only; raw treats as off */
	CP_PREALLOC_FALLOC = 2,   /* posix_fallocate */
	CP_PREALLOC_FULL = 3,     /* write zeroes */
};
int cp_prealloc_parse(const char *s, enum cp_prealloc *out);
const char *cp_prealloc_name(enum cp_prealloc p);
/* Reserve space for [offset, offset+len) (falloc or full) and grow the file
 * to at least offset+len.  Existing data is never changed: FULL writes real
 * zeroes only past the current end of the file and reserves the part inside
 * it with fallocate().  On block devices: 0 if the range is inside the
 * device, else -ENOSPC.  On RAM devices: grows the device (no write is
 * counted). */
int cp_bdev_preallocate(cp_bdev *dev, uint64_t offset, uint64_t len,
			enum cp_prealloc mode);

/* Allocation status of a file range (SEEK_DATA/SEEK_HOLE): sets *pnum to
 * the length of the run starting at offset that is all data (returns 1) or
 * all hole (returns 0).  Block devices and RAM devices always report data.
 * A range past the end of a file is a hole. */
int cp_bdev_block_status(cp_bdev *dev, uint64_t offset, uint64_t len,
			 uint64_t *pnum);

/* --- RAM device for tests -------------------------------------------------
 * Holds the device content in memory, models a volatile write cache, and can
 * "cut power": at the moment of the cut every write not followed by a flush
 * is dropped (or, with keep_seed != 0, a seeded random subset of them is
 * kept, applied in submission order), and from then on every request fails
 * with -EIO until cp_ram_restart().  Writes, write-zeroes and discards each
 * count as one write; the cut happens instead of the (cut_after_writes+1)th
 * write, which fails with -EIO and is not applied.  The device grows on
 * writes past its end, up to max_size.
 *
 * Details the tests can rely on:
 *   - Requests execute when submitted (under a device lock) and complete
 *     on the device's single completion thread, so the write counter and
 *     the cut point follow the order of the submitting calls.
 *   - A write that would pass max_size fails with -ENOSPC and is not
 *     counted; the write that triggers the cut is not counted either.
 *   - cp_bdev_truncate() and cp_bdev_preallocate() change the size in the
 *     volatile state too (undone by a cut unless flushed or kept) but are
 *     not counted as writes.  A discard is clamped to the current size.
 *   - With keep_seed, the surviving writes become durable at the cut.
 *   - cp_ram_load() replaces the content and makes it durable (as if the
 *     image had been written and flushed). */
struct cp_ram_opts {
	size_t size;              /* sizeof(struct cp_ram_opts), set by _init */
	uint64_t initial_size;    /* default 0 */
	uint64_t max_size;        /* default 1 GiB (address space reserved lazily) */
	unsigned align;           /* reported cp_bdev_align(); default 512 */
	int64_t cut_after_writes; /* -1 (default): never cut by count */
	uint64_t keep_seed;       /* 0: drop all unflushed writes at the cut */
	enum cp_aio aio;          /* completion model; ignored but recorded */
};
void cp_ram_opts_init(struct cp_ram_opts *opts);
int cp_bdev_open_ram(const struct cp_ram_opts *opts, cp_bdev **out);
/* Open a second handle on the RAM device dev: the same content, write
 * counter, cut and options (cp_ram_* act on either handle), with its own
 * request slots and completion thread, as two opens of one file.  The
 * state lives until every handle is closed, in any order.  Returns 0, or
 * -EINVAL if dev is not RAM, or -errno. */
int cp_ram_open_twin(cp_bdev *dev, cp_bdev **out);
/* Cut power now (see above).  Returns 0, or -EINVAL if dev is not RAM. */
int cp_ram_cut(cp_bdev *dev);
/* True once power has been cut. */
bool cp_ram_is_cut(cp_bdev *dev);
/* After a cut: make the device usable again holding what survived, reset
 * the write counter and disable cutting (set a new limit with
 * cp_ram_set_cut_after).  Cutting an already cut device is a no-op. */
int cp_ram_restart(cp_bdev *dev);
/* Cut at the next write once cp_ram_write_count() == writes; < 0: never. */
int cp_ram_set_cut_after(cp_bdev *dev, int64_t writes);
/* Writes counted since open or restart. */
uint64_t cp_ram_write_count(cp_bdev *dev);
/* Copy the current (volatile) content of a RAM device to/from a file or a
 * buffer, for tests that hand RAM images to other tools. */
int cp_ram_save(cp_bdev *dev, const char *path);
int cp_ram_load(cp_bdev *dev, const char *path);

/* --- linear device: an LVM logical volume without device-mapper ----------
 * Presents the segments of a map as one block device, exactly as the
 * kernel's dm-linear target would: LV byte `off` inside segment s lives on
 * s.pv_path at s.pv_offset + (off - s.lv_offset).  Used where LVs cannot be
 * activated (no device-mapper); spm/ builds the map from LVM's report
 * (cp_lvm_open_lv()).  On a host with device-mapper the activated
 * /dev/VG/LV is opened with cp_bdev_open() instead, behind the same
 * cp_bdev interface.
 *
 * Map rules: segments may be given in any order; sorted by lv_offset they
 * must tile [0, size) with no gap or overlap; lv_offset, length and
 * pv_offset are multiples of 512 and length > 0; no two segments may share
 * bytes of one PV; on a PV that is a block device, every segment must end
 * inside it.  -EINVAL (message names the segment) otherwise.  The map is
 * copied; the caller keeps ownership of it and of its strings.
 *
 * The device: cp_bdev_size() = sum of the segment lengths,
 * cp_bdev_is_blockdev() = true, cp_bdev_align() = the largest alignment of
 * its PVs, cp_bdev_aio()/cache() those of the PVs (opened once each, with
 * opts; opts.create and opts.truncate are refused).  Reads, writes and
 * flushes are split at segment boundaries into requests on the PV devices
 * (flush: one per PV); the callback runs once, after every part has
 * completed, with the first error met; it runs on a completion thread of
 * one of the PVs (synchronous calls on the linear device from it fail with
 * -EDEADLK, as for other devices).  A write that ends past the end of the
 * device fails whole with -ENOSPC (an LV does not grow by writing); a read
 * past the end reads zeroes there.  discard and write_zeroes are split the
 * same way (write zeroes past the end: -ENOSPC; discard is clamped);
 * cp_bdev_truncate() is -ENOTSUP unless size == current size;
 * cp_bdev_preallocate() is 0 inside the device, -ENOSPC past it;
 * cp_bdev_block_status() reports data.  Submitting allocates nothing
 * unless more than opts.queue_depth requests are in flight or a request
 * has a long iovec spanning many segments. */
struct cp_linear_seg {
	uint64_t lv_offset;  /* bytes from the start of the LV */
	uint64_t length;     /* bytes */
	const char *pv_path; /* the physical volume: block device or file */
	uint64_t pv_offset;  /* bytes from the start of the PV */
};

struct cp_linear_map {
	size_t nsegs;
	struct cp_linear_seg *segs;
};

/* Open a linear device called name (cp_bdev_name(), messages) over map.
 * opts may be NULL for defaults.  Close with cp_bdev_close() (closes the
 * PVs). */
int cp_bdev_open_linear(const char *name, const struct cp_linear_map *map,
			const struct cp_bdev_opts *opts, cp_bdev **out);
/* Replace the map after the LV was extended.  Grow only: the new map must
 * be at least as large and map every byte of the current size to the same
 * PV and offset (else -EINVAL and the device keeps its map; to follow a
 * reduce or a pvmove, close and reopen).  PVs new to the map are opened
 * with the opts given at open.  Requests already submitted finish on the
 * map they started with; requests submitted after the return see the new
 * size.  Remaps are serialised; any thread may call it (it waits for no
 * I/O).  -EINVAL if dev is not a linear device. */
int cp_bdev_linear_remap(cp_bdev *dev, const struct cp_linear_map *map);
/* True for a device made by cp_bdev_open_linear(). */
bool cp_bdev_is_linear(const cp_bdev *dev);

/* --- image locks (blockcore/lock.c) ---------------------------------------
 * QEMU's file locking, so that cowpool, qemu-img, qemu-io, qemu-nbd and QEMU
 * see each other's opens.  A device holds a set of permissions (perm) and
 * lets other opens hold a set (shared); the bits are QEMU's BLK_PERM_* of
 * QEMU 6.2 and later.  On the device's file, as QEMU's file-posix driver
 * does, with open file description (OFD) read locks:
 *
 *   byte 100 + i locked   this open holds permission bit i
 *   byte 200 + i locked   this open does NOT share permission bit i
 *
 * Taking permission i needs byte 200 + i free of other opens' locks; not
 * sharing i needs byte 100 + i free (tested with F_OFD_GETLK for a write
 * lock).  Locks belong to the open file description: two devices opened on
 * one file conflict even inside one process, exactly as two processes do;
 * closing the device drops them.
 *
 * What is locked: a file or block device: its own node (a symlink such as
 * /dev/VG/LV is followed, as QEMU follows it).  A linear device (an LV
 * without device-mapper) has no node of its own: it locks the bytes
 * pv_offset + 100 + i / pv_offset + 200 + i of the PV holding its first
 * extent, through that PV's descriptor.  Those bytes are inside the LV's
 * own first extent, so two LVs never share a byte and a program that locks
 * the PV node itself (bytes 100..203; LVM keeps its label and metadata
 * there, data starts at 1 MiB) never meets them.  Nothing but cowpool can
 * open such an LV, so this guards cowpool against cowpool.  RAM devices
 * lock nothing (they are private to the process).
 */
#define CP_PERM_CONSISTENT_READ 0x1u /* "consistent read" */
#define CP_PERM_WRITE 0x2u           /* "write" */
#define CP_PERM_WRITE_UNCHANGED 0x4u /* "write unchanged" */
#define CP_PERM_RESIZE 0x8u          /* "resize" */
#define CP_PERM_ALL 0xfu

/* Change dev's permissions to perm, sharing shared (both within
 * CP_PERM_ALL), as QEMU's prepare / commit / abort does: lock the bytes of
 * the union of old and new, test for conflicts with other opens, then drop
 * the bytes only the old set needed; on a conflict the old set is restored
 * and kept.  Dropping permissions never fails.  A new device holds 0 and
 * shares CP_PERM_ALL (locks nothing).  Returns 0, or:
 *   -EBUSY  another open holds a conflicting lock; the message is QEMU's:
 *           "disk.qcow2: Failed to get "write" lock: another process is
 *           using the image (qemu-nbd, pid 4242)", or "Failed to get shared
 *           "write" lock" when the conflict is with what this open would not
 *           share.  The holder is named when /proc shows it.
 *   -errno  fcntl failed otherwise ("Failed to lock byte 101: ...").
 * Not to be called concurrently with another cp_bdev_set_perm() or
 * cp_bdev_lock_adopt() on the same device. */
int cp_bdev_set_perm(cp_bdev *dev, unsigned perm, unsigned shared);
/* The permissions dev holds and shares now. */
void cp_bdev_get_perm(const cp_bdev *dev, unsigned *perm, unsigned *shared);
/* Make dev hold the permissions from holds, without testing for conflicts:
 * used when an open is replaced by another of the same file (a reopen).
 * Call it while from still holds them, so no other process can slip in
 * between; conflicts were tested when from took them.  Returns 0 or -errno
 * (fcntl failed). */
int cp_bdev_lock_adopt(cp_bdev *dev, const cp_bdev *from);
/* QEMU's name of one permission bit ("write"), "?" for others. */
const char *cp_perm_name(unsigned perm_bit);

#ifdef __cplusplus
}
#endif

#endif
