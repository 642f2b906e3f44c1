/* spm/spm.h - storage pool: domains, volumes, LVM, sanlock leases, the
 * Storage Pool Manager role and its task journal (public header).
 *
 * Errors: int functions return >= 0 on success, -errno on failure, with a
 * message in cp_last_error() naming the domain/volume/host.  -ESTALE means
 * a lease this host relied on is no longer held.
 *
 * Sections are added module by module:
 *   lvm.c    - LVM volume groups and logical volumes through the lvm
 *              commands, with activation off; LV extent maps
 *   lease.c  - sanlock lockspaces and resources
 *   domain.c - file domain layout and volume/domain metadata records
 *   sd.c     - storage domains of both types behind one handle
 *              (filesd.c and blocksd.c are the two backends)
 *   task.c   - the task journal
 *   pool.c   - a host's view of the pool: domains, lockspaces, the SPM
 *              role, volume leases
 *   volume.c - image and volume lifecycle (SPM work, journaled as tasks)
 */
#ifndef CP_SPM_H
#define CP_SPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockcore.h"
#include "qcow.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- lvm.c ---------------------------------------------------------------- */

/* LVM volume groups and logical volumes through the lvm2 commands.
 *
 * Every call runs `lvm <command> --config 'global{activation=0} ...'`
 * (fork + execve, no shell; stdout and stderr captured, stdin /dev/null)
 * with LVM_SUPPRESS_FD_WARNINGS=1, LC_ALL=C and, when opts.system_dir is
 * set, LVM_SYSTEM_DIR=opts.system_dir.  With opts.devices, LVM sees only
 * those devices (devices/filter accepts them and rejects the rest;
 * use_devicesfile=0), so tests never touch the machine's own VGs.
 * Activation stays off: LVs are created inactive (-an -Zn) and extended,
 * reduced and tagged in the metadata only.  Reads use LVM's JSON report
 * (--reportformat json --units b --nosuffix), read by common/json.h.
 *
 * Reaching an LV's data (cp_lvm_open_lv):
 *   - on a host with device-mapper (cp_lvm_activation_available()) and the
 *     LV active, the activated /dev/VG/LV is opened with cp_bdev_open();
 *     cp_lvm_refresh_lv() then runs `lvchange --refresh` (device-mapper
 *     table reload) and the device's size follows;
 *   - otherwise (no device-mapper, as on the CI machines, or LV inactive)
 *     the LV's extent map is read from LVM's report and opened as a
 *     blockcore linear device (cp_bdev_open_linear(): dm-linear done in
 *     user space); cp_lvm_refresh_lv() re-reads the map and remaps.
 *   Both are one cp_bdev to the layers above.  Only linear segments can be
 *   mapped without device-mapper (striped/thin/raid LVs: -ENOTSUP).
 *
 * Names: VG and LV names are 1..127 characters of [A-Za-z0-9+_.-], not
 * starting with '-'; tags 1..1024 characters of [A-Za-z0-9_+.-/=!:#&];
 * devices absolute paths.  Lists (devices, tags) are NULL-terminated and
 * may be NULL for none; at most 32 tags per list and 64 devices.  Strings
 * are borrowed for the call.
 *
 * Errors: -errno with a message that carries LVM's own error line, e.g.
 *   -ENOENT     VG, LV or device not found ("VG vg0: not found (...)")
 *   -EEXIST     the VG/LV exists, the device is already in a VG
 *   -ENOSPC     not enough free extents:
 *               "VG vg0: insufficient free space (lvextend vg0/lv1 to
 *               1073741824 bytes: Insufficient free space: 150 extents
 *               needed, but only 9 available)"
 *   -EINVAL     bad name, tag, size or options; LVM refused the arguments
 *   -EBUSY      LVM could not get its lock
 *   -ENOTSUP    LV layout that cannot be mapped without device-mapper
 *   -EPROTO     LVM's report did not have the expected shape
 *   -ETIMEDOUT  a command ran longer than opts.timeout_ms (it is killed)
 *   -EIO        any other failure of a command
 *
 * Threads: any thread; calls may run concurrently (LVM's own locks
 * serialise changes to one VG).  Each call blocks for the command(s) it
 * runs (tens to hundreds of milliseconds).  The process must not ignore
 * SIGCHLD (the command's exit status is collected with waitpid).
 */
struct cp_lvm_opts {
	size_t size;               /* sizeof(struct cp_lvm_opts), set by _init */
	const char *lvm_path;      /* the lvm binary; default "lvm" (PATH) */
	const char *system_dir;    /* LVM_SYSTEM_DIR for the commands; NULL:
				    * the process environment's (or LVM's
				    * default, /etc/lvm) */
	const char *const *devices; /* accept only these devices (absolute
				    * paths without + * ? ( ) [ ] { } ^ $);
				    * NULL: LVM's own filter */
	unsigned timeout_ms;       /* per command; default 120000 */
};
void cp_lvm_opts_init(struct cp_lvm_opts *opts);

/* vgcreate: a VG on devices (pvcreate'd implicitly; a device holding a
 * file system or other signature is refused, never wiped), with tags.
 * extent_size in bytes (a power of two); 0 = LVM's default (4 MiB). */
int cp_lvm_vg_create(const struct cp_lvm_opts *opts, const char *vg,
		     const char *const *devices, const char *const *tags,
		     uint64_t extent_size);
/* vgextend: add a device to a VG. */
int cp_lvm_vg_extend(const struct cp_lvm_opts *opts, const char *vg,
		     const char *device);
/* vgremove -f: the VG and all its LVs (-ENOENT if there is none).  The
 * PVs stay labelled, free for another vgcreate. */
int cp_lvm_vg_remove(const struct cp_lvm_opts *opts, const char *vg);
/* vgchange --deltag ... --addtag ...: one metadata commit, so replacing a
 * tag (del old + add new) is atomic.  Adding a tag present or deleting a
 * tag absent is not an error. */
int cp_lvm_vg_change_tags(const struct cp_lvm_opts *opts, const char *vg,
			  const char *const *add, const char *const *del);

struct cp_lvm_vg_info {
	uint64_t extent_size; /* bytes */
	uint64_t size, free;  /* bytes */
	char **tags;          /* NULL-terminated, never NULL on success */
	size_t ntags;
};
/* Read a VG's extent size, size, free space and tags.  Free with
 * cp_lvm_vg_info_clear(). */
int cp_lvm_vg_info(const struct cp_lvm_opts *opts, const char *vg,
		   struct cp_lvm_vg_info *out);
void cp_lvm_vg_info_clear(struct cp_lvm_vg_info *info);
/* Names of the VGs LVM sees (with tag: only those carrying it).  *out is
 * NULL-terminated; free with cp_lvm_names_free(). */
int cp_lvm_vg_list(const struct cp_lvm_opts *opts, const char *tag,
		   char ***out, size_t *n);
void cp_lvm_names_free(char **names);

/* lvcreate -an -Zn: an inactive LV of at least size bytes (rounded up to
 * extents by LVM), with tags. */
int cp_lvm_lv_create(const struct cp_lvm_opts *opts, const char *vg,
		     const char *lv, uint64_t size, const char *const *tags);
/* lvextend to at least size bytes (rounded up to extents).  Idempotent: an
 * LV already that large is left alone (also when another caller extended
 * it concurrently).  *new_size (may be NULL) gets the LV size after. */
int cp_lvm_lv_extend(const struct cp_lvm_opts *opts, const char *vg,
		     const char *lv, uint64_t size, uint64_t *new_size);
/* lvreduce -f to size bytes (rounded up to extents), e.g. after a merge;
 * the data past it is lost.  An LV already that small is left alone.  A
 * device open on the LV must be reopened afterwards (remap only grows). */
int cp_lvm_lv_reduce(const struct cp_lvm_opts *opts, const char *vg,
		     const char *lv, uint64_t size, uint64_t *new_size);
/* lvremove (an active LV is refused rather than removed). */
int cp_lvm_lv_remove(const struct cp_lvm_opts *opts, const char *vg,
		     const char *lv);
/* lvchange --deltag ... --addtag ... (one commit, as for VGs). */
int cp_lvm_lv_change_tags(const struct cp_lvm_opts *opts, const char *vg,
			  const char *lv, const char *const *add,
			  const char *const *del);

struct cp_lvm_lv_info {
	char *name;
	uint64_t size; /* bytes */
	char **tags;   /* NULL-terminated, never NULL */
	size_t ntags;
};
/* The visible LVs of a VG (*out: array of *n, sorted by name; free with
 * cp_lvm_lv_list_free()). */
int cp_lvm_lv_list(const struct cp_lvm_opts *opts, const char *vg,
		   struct cp_lvm_lv_info **out, size_t *n);
void cp_lvm_lv_list_free(struct cp_lvm_lv_info *lvs, size_t n);

/* The extent map of an LV as dm-linear would load it: one segment per LVM
 * segment, pv_offset = pe_start + first extent * extent size.  Reads
 * lvs (lv_name, lv_size, seg_start_pe, seg_size_pe, seg_pe_ranges, lv_tags,
 * segtype), vgs (vg_extent_size, ...) and pvs (pv_name, pe_start).  Free
 * with cp_lvm_map_free(). */
int cp_lvm_lv_map(const struct cp_lvm_opts *opts, const char *vg,
		  const char *lv, struct cp_linear_map *out);
void cp_lvm_map_free(struct cp_linear_map *map);

/* True if this host has a working device-mapper (/dev/mapper/control can
 * be opened; the node may exist without the kernel driver). */
bool cp_lvm_activation_available(void);
/* Open VG/LV as a cp_bdev (see above: /dev/VG/LV when activated, else the
 * extent map as a linear device named "VG/LV").  bo may be NULL. */
int cp_lvm_open_lv(const struct cp_lvm_opts *opts, const char *vg,
		   const char *lv, const struct cp_bdev_opts *bo,
		   cp_bdev **out);
/* After an lvextend of VG/LV (here or by the SPM on another host): make
 * dev (from cp_lvm_open_lv) see the new size.  Idempotent. */
int cp_lvm_refresh_lv(const struct cp_lvm_opts *opts, const char *vg,
		      const char *lv, cp_bdev *dev);

/* ---- lease.c -------------------------------------------------------------- */

/* sanlock lockspaces and resources (leases).
 *
 * A storage domain has one lockspace, named by the domain UUID, on its `ids`
 * volume; every host joins it with its host id (1..2000).  Resources live on
 * the `leases` volume: `SDM` (the SPM role) and one lease per volume.  All
 * timing follows the lockspace's io_timeout, written once by
 * cp_lockspace_format(); spm/timeouts.h has the worked timeline (join time,
 * when a silent host counts as dead, when its leases may be taken).
 *
 * Which daemon: every call talks to the sanlock daemon of this host, found
 * through SANLOCK_RUN_DIR (default /run/sanlock).  Tests simulate several
 * hosts on one machine by giving each its own SANLOCK_RUN_DIR; the caller
 * sets it in the environment before the first call (libsanlock reads it
 * once per process).  Commands on a dead daemon's socket would raise
 * SIGPIPE; lease.c blocks and consumes it around its own calls, so the
 * process's SIGPIPE disposition does not matter.
 *
 * Process model: sanlock grants leases to a registered *process*.  A process
 * opens one cp_lease_client (sanlock_register) and keeps it for its
 * lifetime; the leases it acquires are released by the daemon when the
 * process exits or is killed (kill -9 included).  If the daemon dies, no
 * lease of this host is held any more (other hosts take them after the
 * host_dead timeout); cp_lease_client_check() then fails with -ESTALE and
 * the client fd reports POLLRDHUP/POLLHUP.  lease.c's top comment says how
 * cowpoold uses this.
 *
 * Threads: every function may be called from any thread.  Calls on one
 * cp_lease_client are serialised by its mutex (sanlock runs one command per
 * registered process at a time); the other calls open their own daemon
 * connection and run concurrently.  Calls block for disk I/O on the lease
 * areas (bounded by a few io_timeouts) except where stated.
 *
 * Errors (besides the usual -EINVAL for bad options, message in
 * cp_last_error() naming lockspace/resource, path:offset and host):
 *   -ECONNREFUSED  no sanlock daemon answers at SANLOCK_RUN_DIR
 *   -ENOTCONN      the lockspace is not joined on this host
 *   -EBUSY         the lease is held by another live host (or by another
 *                  process of this host); the host id is owned by another
 *                  host; leave while leases are held
 *   -EAGAIN        the owner stopped renewing (this host's daemon sees it
 *                  failing) but is not dead yet (acquire without
 *                  wait_dead_owner), or the lease version is not the
 *                  expected one
 *   -ESTALE        the daemon connection was lost: no lease is held
 *   -ENOENT        no lockspace/lease written at path:offset; release of a
 *                  lease this process does not hold
 *   -EUCLEAN       the lease area holds something else or is corrupt
 *   -EIO           lease I/O failed or timed out (io_timeout)
 *   -ENOTSUP       cowpool was built without sanlock
 */

#define CP_LEASE_NAME_MAX 48    /* bytes of a lockspace or resource name */
#define CP_LEASE_MAX_HOST_ID 2000

/* Where a lockspace lives.  The strings are borrowed for the call. */
struct cp_lockspace_opts {
	size_t size;            /* sizeof(struct cp_lockspace_opts), set by _init */
	const char *name;       /* the domain UUID, 1..48 bytes */
	const char *path;       /* the `ids` volume: file or block device */
	uint64_t offset;        /* bytes; 0 */
	uint32_t io_timeout;    /* seconds, 1..255; used by cp_lockspace_format
				 * only (joins read it from disk); default
				 * CP_IO_TIMEOUT_DEFAULT (timeouts.h) = 10 */
	uint32_t sector_size;   /* 0 = as the device reports, 512 or 4096 */
	uint32_t align;         /* lease area alignment in bytes: 0 = sanlock's
				 * default (1 MiB), or 1, 2, 4, 8 MiB */
};
void cp_lockspace_opts_init(struct cp_lockspace_opts *opts);

/* Write an empty lockspace (all 2000 host ids free) with opts->io_timeout.
 * Destroys any lockspace there: only for a new domain, by the SPM. */
int cp_lockspace_format(const struct cp_lockspace_opts *opts);

/* Read the io_timeout written in the lockspace at opts->path:offset. */
int cp_lockspace_read_io_timeout(const struct cp_lockspace_opts *opts,
				 uint32_t *io_timeout);

/* Join the lockspace as host_id, with the io_timeout read from disk.
 * Blocks until joined: cp_join_free_max(io) normally (2..5 io_timeouts),
 * up to cp_join_held_max(io) when host_id was left held by a crashed
 * instance of a host with another name.  Joining twice returns 0.  The same
 * lockspace name joined with another host_id/path: -EINVAL.
 * host_id owned by a live host: -EBUSY. */
int cp_lockspace_join(const struct cp_lockspace_opts *opts, uint64_t host_id);

/* Start joining and return at once (0, or -errno if the daemon refused at
 * once); poll cp_lockspace_status().  A failed async join just disappears
 * (status turns CP_LOCKSPACE_NOT_JOINED); cp_lockspace_join() gives the
 * reason. */
int cp_lockspace_join_start(const struct cp_lockspace_opts *opts,
			    uint64_t host_id);

/* Leave the lockspace (release host_id, cleanly: other hosts need not wait
 * for it to expire).  Refuses with -EBUSY while processes of this host hold
 * leases in it.  Not joined: -ENOENT. */
int cp_lockspace_leave(const struct cp_lockspace_opts *opts, uint64_t host_id);

enum cp_lockspace_state {
	CP_LOCKSPACE_NOT_JOINED = 0,
	CP_LOCKSPACE_JOINED = 1,
	CP_LOCKSPACE_BUSY = 2,  /* a join or leave is in progress */
};
/* Whether this host has joined: returns a cp_lockspace_state or -errno.
 * Does no disk I/O. */
int cp_lockspace_status(const struct cp_lockspace_opts *opts,
			uint64_t host_id);

/* Liveness of another host as this host's daemon sees it (from that host's
 * renewals of its host id, checked every cp_id_renewal_seconds()). */
enum cp_host_state {
	CP_HOST_UNKNOWN = 0,    /* not seen yet, or lockspace not joined here */
	CP_HOST_FREE = 1,       /* host id not in use */
	CP_HOST_LIVE = 2,       /* renewing */
	CP_HOST_FAIL = 3,       /* silent for cp_id_renewal_fail_seconds() */
	CP_HOST_DEAD = 4,       /* silent for cp_host_dead_seconds(): its
				 * leases may be taken */
};
const char *cp_host_state_name(enum cp_host_state s); /* "live", ... */
/* Returns a cp_host_state or -errno (-ENOTCONN: not joined here). */
int cp_lockspace_host_state(const char *lockspace, uint64_t host_id);

/* Where a lease (sanlock resource) lives.  Strings borrowed for the call. */
struct cp_lease_opts {
	size_t size;            /* sizeof(struct cp_lease_opts), set by _init */
	const char *lockspace;  /* lockspace name (the domain UUID) */
	const char *name;       /* resource name: "SDM" or a volume UUID, 1..48 */
	const char *path;       /* the `leases` volume, or a volume's .lease */
	uint64_t offset;        /* bytes; a multiple of the alignment */
	uint32_t sector_size;   /* as in cp_lockspace_opts */
	uint32_t align;
};
void cp_lease_opts_init(struct cp_lease_opts *opts);

/* Write a free lease (version 0) at path:offset.  Destroys what is there:
 * only when creating a domain/volume, by the SPM. */
int cp_lease_format(const struct cp_lease_opts *opts);

/* Who holds a lease, read from its on-disk leader record. */
struct cp_lease_owner {
	bool held;
	uint64_t lver;          /* lease version: +1 by every acquisition */
	uint64_t host_id;       /* owner (when held) */
	uint64_t generation;    /* owner's lockspace generation (+1 per join) */
	uint64_t timestamp;     /* when the owner acquired it, seconds on the
				 * owner's monotonic clock */
	enum cp_host_state host_state; /* owner's liveness seen from here */
};
/* Read the holder of a lease (spm status: "free" / "held by host N, lease
 * version V").  Needs no lockspace membership; host_state is UNKNOWN when
 * this host has not joined the lockspace.  The owner comes from the daemon
 * (sanlock_read_resource_owners); a lease whose owner released it after
 * another host wrote its leader record (contended acquisition) still names
 * that owner there, so lease.c also reads the leader and the owner's
 * ballot block itself (O_DIRECT) and reports such a lease free, exactly
 * as sanlock's acquire treats it.  A held lease of a host seen "dead" may
 * be taken. */
int cp_lease_read(const struct cp_lease_opts *opts, struct cp_lease_owner *out);

/* The registered process (see "Process model" above). */
typedef struct cp_lease_client cp_lease_client;

/* Register this process with the daemon.  One per process; do not use it
 * in a child after fork() (leases belong to the registering pid).
 * *out is the caller's, freed by cp_lease_client_close(). */
int cp_lease_client_open(cp_lease_client **out);
/* Close the connection: the daemon releases every lease this process still
 * holds.  NULL is ignored. */
void cp_lease_client_close(cp_lease_client *c);
/* The registered socket, for poll() with POLLRDHUP: POLLRDHUP/POLLHUP means
 * the daemon went away and no lease is held any more.  Do not read or
 * write it. */
int cp_lease_client_fd(const cp_lease_client *c);
/* 0 while the daemon connection is up, -ESTALE once it is lost.  Cheap (one
 * poll() with zero timeout, no lock, never waits for a command in another
 * thread): call it before every structural write. */
int cp_lease_client_check(cp_lease_client *c);

struct cp_lease_acquire_opts {
	size_t size;            /* sizeof(struct cp_lease_acquire_opts), set by _init */
	uint64_t expect_lver;   /* 0 = any; else acquire only if the lease
				 * version is still this one (-EAGAIN if not) */
	bool wait_dead_owner;   /* the owner stopped renewing: false = fail at
				 * once with -EAGAIN (default); true = block
				 * until it counts as dead (up to
				 * cp_paxos_acquire_held_max(io)) and take it */
};
void cp_lease_acquire_opts_init(struct cp_lease_acquire_opts *opts);

/* Acquire the lease exclusively for this process (opts NULL = defaults).
 * The lockspace must be joined on this host (-ENOTCONN).  On success
 * *lver (may be NULL) is the new lease version.  A live holder: -EBUSY,
 * message "lease SDM on <path>:<off> is held by host 2 (lease version 7)". */
int cp_lease_acquire(cp_lease_client *c, const struct cp_lease_opts *lease,
		     const struct cp_lease_acquire_opts *opts, uint64_t *lver);

/* Release a lease this process holds (-ENOENT if it does not).  The lease
 * is free on disk when this returns. */
int cp_lease_release(cp_lease_client *c, const struct cp_lease_opts *lease);

/* Whether this process holds the lease: 1 held (and *lver, may be NULL, is
 * its version), 0 not held, -ESTALE when the daemon connection is lost. */
int cp_lease_held(cp_lease_client *c, const struct cp_lease_opts *lease,
		  uint64_t *lver);

/* ---- domain.c ------------------------------------------------------------- */

/* File storage domains: the on-disk metadata records (docs/formats/domain.md)
 * and the directory layout
 *
 *   <root>/<domain-uuid>/dom_md/{metadata,ids,leases,inbox,outbox,tasks}
 *   <root>/<domain-uuid>/images/<image-uuid>/<volume-uuid>.meta
 *
 * Both records are one 512-byte sector, little-endian, with a magic, a
 * version and a CRC32C (Castagnoli, reflected poly 0x82F63B78, init and
 * final xor 0xFFFFFFFF) over the sector with the crc field zeroed.  A reader
 * that finds a bad magic, version, checksum, enum, UUID or reserved byte
 * returns -EUCLEAN with a message naming the file and what is wrong; it
 * never guesses.  .meta files are replaced atomically (see
 * cp_volmeta_write).  Only the SPM writes; the write calls are not safe
 * against concurrent writers of the same volume (the caller serialises),
 * any thread may read.  No call keeps state between calls.
 */

#define CP_UUID_STR_LEN 36         /* 8-4-4-4-12 hex digits */
#define CP_VOLMETA_DESC_MAX 255    /* bytes of UTF-8, no NUL */
#define CP_DOMAIN_NAME_MAX 64      /* bytes of UTF-8, no NUL */
#define CP_MD_SECTOR_SIZE 512      /* each record */

/* dom_md file sizes (bytes) written by cp_domain_create. */
#define CP_DOMMD_IDS_SIZE    (1u << 20)
#define CP_DOMMD_LEASES_SIZE (2u << 20)
#define CP_DOMMD_INBOX_SIZE  (1u << 20)
#define CP_DOMMD_OUTBOX_SIZE (1u << 20)
#define CP_DOMMD_TASKS_SIZE  (1u << 20)

/* CRC32C of buf (init ~0, final ~), e.g. "123456789" -> 0xE3069283. */
uint32_t cp_crc32c(const void *buf, size_t len);

/* True if s is exactly 36 chars 8-4-4-4-12 of hex digits (either case). */
bool cp_uuid_valid(const char *s);
/* A random (version 4) UUID in lower case from /dev/urandom; out must hold
 * CP_UUID_STR_LEN + 1 bytes.  0 or -errno. */
int cp_uuid_generate(char *out);

enum cp_vol_format { CP_VOL_FORMAT_RAW = 1, CP_VOL_FORMAT_COW = 2 };
enum cp_vol_alloc { CP_VOL_ALLOC_PREALLOCATED = 1, CP_VOL_ALLOC_SPARSE = 2 };
enum cp_vol_role {
	CP_VOL_ROLE_LEAF = 1,
	CP_VOL_ROLE_INTERNAL = 2,
	CP_VOL_ROLE_SHARED = 3,
};
enum cp_vol_legality { CP_VOL_LEGAL = 1, CP_VOL_ILLEGAL = 2 };

/* A volume's metadata, in memory.  UUIDs are NUL-terminated text. */
struct cp_volmeta {
	char vol_uuid[CP_UUID_STR_LEN + 1];
	char img_uuid[CP_UUID_STR_LEN + 1];
	char parent_uuid[CP_UUID_STR_LEN + 1]; /* "" = no parent */
	char dom_uuid[CP_UUID_STR_LEN + 1];
	enum cp_vol_format format;
	enum cp_vol_alloc allocation;
	enum cp_vol_role role;
	enum cp_vol_legality legality;
	uint64_t capacity;                     /* virtual size, bytes */
	uint64_t generation;                   /* bumped by every change */
	int64_t ctime;                         /* creation, unix seconds */
	char description[CP_VOLMETA_DESC_MAX + 1];
};

/* Serialise m into the 512-byte sector buf.  -EINVAL (buf untouched) if a
 * field is out of range: bad UUID, enum, description too long / not UTF-8. */
int cp_volmeta_encode(const struct cp_volmeta *m, uint8_t *buf);
/* Parse and validate a sector; what names it in messages (a path).
 * -EUCLEAN on any inconsistency; *m is only written on success. */
int cp_volmeta_decode(const uint8_t *buf, const char *what,
		      struct cp_volmeta *m);

/* <root>/<dom>/images/<img>/<vol>.meta into out (size outlen); -ENAMETOOLONG
 * or -EINVAL (bad UUID). */
int cp_volmeta_path(char *out, size_t outlen, const char *root,
		    const char *dom_uuid, const char *img_uuid,
		    const char *vol_uuid);

/* Atomically replace (or create) path with m: write <path>.tmp, fsync,
 * rename over path, fsync the directory.  After a crash the reader sees
 * the old or the new record, never a mix; a leftover .tmp is ignored by
 * readers and replaced by the next write.  No generation check: use
 * cp_volmeta_update to change an existing volume. */
int cp_volmeta_write(const char *path, const struct cp_volmeta *m);
/* Read and validate path (must be exactly 512 bytes, else -EUCLEAN). */
int cp_volmeta_read(const char *path, struct cp_volmeta *m);
/* Compare-and-bump: read path; if its generation is not expected_gen,
 * -ESTALE ("generation N expected, M on disk"); if rec names another
 * volume, -EINVAL; else write rec with generation expected_gen + 1 (also
 * stored into rec->generation on success). */
int cp_volmeta_update(const char *path, uint64_t expected_gen,
		      struct cp_volmeta *rec);

enum cp_domain_type { CP_DOMAIN_TYPE_FILE = 1, CP_DOMAIN_TYPE_BLOCK = 2 };
#define CP_DOMAIN_FLAG_MASTER 0x1u

/* The domain record (dom_md/metadata), in memory. */
struct cp_domain_md {
	char dom_uuid[CP_UUID_STR_LEN + 1];
	char pool_uuid[CP_UUID_STR_LEN + 1];
	char name[CP_DOMAIN_NAME_MAX + 1];
	enum cp_domain_type type;
	uint32_t dom_version;                  /* domain format version */
	bool master;
	uint64_t generation;
	uint64_t chunk_size;     /* thin qcow2 volumes on block domains: first
				  * LV size and extension step, bytes */
	uint32_t io_timeout;     /* of the domain's lockspace, seconds */
	uint32_t max_volumes;    /* block: metadata slots; file: 0 */
};

int cp_domain_md_encode(const struct cp_domain_md *d, uint8_t *buf);
int cp_domain_md_decode(const uint8_t *buf, const char *what,
			struct cp_domain_md *d);

struct cp_domain_create_opts {
	size_t size;            /* sizeof(struct cp_domain_create_opts), _init */
	const char *root;       /* existing directory (the mount point) */
	const char *dom_uuid;   /* NULL = generate one */
	const char *pool_uuid;  /* required */
	const char *name;       /* required, <= CP_DOMAIN_NAME_MAX bytes */
	bool master;            /* default false */
	uint32_t dom_version;   /* default 1 */
	uint64_t chunk_size;    /* default CP_SD_CHUNK_DEFAULT */
	uint32_t io_timeout;    /* default 10 */
	uint32_t disk_uid, disk_gid; /* owner, group of what is made; 0 = the
				      * process's (files 0660, dirs 0750) */
};
void cp_domain_create_opts_init(struct cp_domain_create_opts *opts);

/* Create <root>/<uuid>/ with dom_md/ (metadata written last, atomically;
 * ids, leases, inbox, outbox, tasks zero-filled at their sizes above) and
 * images/.  -ENOENT if root does not exist, -EEXIST if the domain does.
 * *out (may be NULL) receives the record written (with the UUID). */
int cp_domain_create(const struct cp_domain_create_opts *opts,
		     struct cp_domain_md *out);
/* Read and validate a domain: its record (UUID must match the directory),
 * the dom_md file sizes and images/.  -ENOENT (root or domain missing),
 * -EUCLEAN (anything inconsistent). */
int cp_domain_read(const char *root, const char *dom_uuid,
		   struct cp_domain_md *out);
/* mkdir images/<img_uuid> (fsyncing images/); -EEXIST if it exists. */
int cp_domain_image_create(const char *root, const char *dom_uuid,
			   const char *img_uuid);

struct cp_uuid_str {
	char s[CP_UUID_STR_LEN + 1];
};
/* The volumes of an image: every <uuid>.meta in its directory (other
 * names, e.g. .meta.tmp leftovers, are skipped), sorted.  *out: array of
 * *n, caller frees with free() (NULL when *n == 0). */
int cp_domain_list_volumes(const char *root, const char *dom_uuid,
			   const char *img_uuid, struct cp_uuid_str **out,
			   size_t *n);


/* ---- sd.c: storage domains of both types ---------------------------------- */

/* A storage domain opened on this host, file or block, behind one handle.
 *
 * File domain: <root>/<uuid>/ as described for domain.c above.
 * Block domain: an LVM volume group named by the domain UUID on shared
 * devices (docs/formats/domain.md, "Block domain"): the domain record, the
 * same 512 bytes as dom_md/metadata, base64 in a VG tag; special LVs ids,
 * leases, metadata, inbox, outbox, tasks; one LV per volume tagged
 * IU_<image>, PU_<parent> and MD_<slot>, its record in slot <slot> of the
 * metadata LV.  LV data is reached with cp_lvm_open_lv() (no device-mapper
 * needed), sanlock is given the PV path and the offset of the ids/leases
 * LV (they are created first, one segment each).
 *
 * Threads: a cp_sd may be used by several threads; structural changes
 * (create/remove/resize of volumes, metadata writes) must be serialised by
 * the caller (the SPM does this); reads may run concurrently with them.
 */
#define CP_SD_CHUNK_DEFAULT (1ull << 30)   /* thin LV chunk, bytes */
#define CP_SD_MAX_VOLUMES_DEFAULT 1024u    /* block: metadata slots */
#define CP_SD_SDM_LEASE_OFFSET (1u << 20)  /* SDM on the leases volume */

typedef struct cp_sd cp_sd;

/* Where a domain lives (borrowed for the call; cp_sd_open copies it). */
struct cp_sd_loc {
	size_t size;                   /* sizeof, set by _init */
	enum cp_domain_type type;
	const char *root;              /* FILE: directory holding <uuid>/ */
	const struct cp_lvm_opts *lvm; /* BLOCK: how to run LVM (NULL =
					* defaults) */
	/* FILE: owner and group given to every file and directory the
	 * domain makes (volumes, .meta, .lease, dom_md, images/<img>: mode
	 * 0660, directories 0750); 0 = the process's own.  LVs are device
	 * nodes: their owner is udev's business. */
	uint32_t disk_uid, disk_gid;
};
void cp_sd_loc_init(struct cp_sd_loc *loc);

struct cp_sd_create_opts {
	size_t size;                   /* sizeof, set by _init */
	struct cp_sd_loc loc;
	const char *const *devices;    /* BLOCK: NULL-terminated devices */
	const char *dom_uuid;          /* NULL = generate */
	const char *pool_uuid;         /* required */
	const char *name;              /* required */
	bool master;
	uint32_t io_timeout;           /* lockspace; default 10 (tests 1) */
	uint64_t chunk_size;           /* default CP_SD_CHUNK_DEFAULT */
	uint32_t max_volumes;          /* BLOCK; default
					* CP_SD_MAX_VOLUMES_DEFAULT */
	uint64_t extent_size;          /* BLOCK VG extent size; default 128 MiB */
};
void cp_sd_create_opts_init(struct cp_sd_create_opts *o);

/* Create a domain: layout, special volumes, the lockspace formatted (with
 * io_timeout) and the SDM lease written free, the record written last.
 * *out (may be NULL) gets the record.  -EEXIST if it exists. */
int cp_sd_create(const struct cp_sd_create_opts *o, struct cp_domain_md *out);
/* Open an existing domain (its record read and checked). */
int cp_sd_open(const struct cp_sd_loc *loc, const char *dom_uuid,
	       cp_sd **out);
void cp_sd_close(cp_sd *sd);
/* The record as last read (borrowed while sd is open). */
const struct cp_domain_md *cp_sd_md(const cp_sd *sd);
/* Re-read and check the record (monitoring; master flag changes). */
int cp_sd_refresh(cp_sd *sd);
/* Replace the record (generation compare-and-bump as cp_volmeta_update):
 * used to move the master role.  SPM only (caller checks). */
int cp_sd_md_update(cp_sd *sd, uint64_t expected_gen, struct cp_domain_md *d);

struct cp_sd_stats {
	uint64_t total, free;          /* bytes: file system or VG */
};
int cp_sd_stats(cp_sd *sd, struct cp_sd_stats *out);
/* BLOCK: vgextend with one more device (the domain grows); FILE: -ENOTSUP. */
int cp_sd_extend(cp_sd *sd, const char *device);

/* The lockspace of the domain (name = UUID, path/offset of `ids`).  The
 * strings in *ls point into sd. */
int cp_sd_lockspace(cp_sd *sd, struct cp_lockspace_opts *ls);
/* A lease: vol_uuid NULL = the SDM lease; otherwise the volume's lease
 * (FILE: <vol>.lease at 0; BLOCK: `leases` at (2 + slot) MiB).  name and
 * path in *lease point into sd (or into a per-call buffer of sd for
 * volume leases: valid until the next call on sd from this thread). */
int cp_sd_lease(cp_sd *sd, const char *img_uuid, const char *vol_uuid,
		struct cp_lease_opts *lease);

/* The storage mailbox's inbox (outbox false) or outbox of the domain
 * (mailbox/mailbox.h; used on the master domain) as a read-write O_DIRECT
 * device, closed by the caller: FILE dom_md/inbox|outbox (1 MiB: host ids
 * 1..255), BLOCK the inbox|outbox LV (8 MiB). */
int cp_sd_mailbox_open(cp_sd *sd, bool outbox, cp_bdev **out);

/* Lists: arrays of UUIDs, sorted; free() them. */
int cp_sd_list_images(cp_sd *sd, struct cp_uuid_str **out, size_t *n);
int cp_sd_list_volumes(cp_sd *sd, const char *img_uuid,
		       struct cp_uuid_str **out, size_t *n);
/* Read a volume's record (checked; -ENOENT unknown, -EUCLEAN bad slot or
 * file, message naming it). */
int cp_sd_vol_md(cp_sd *sd, const char *img_uuid, const char *vol_uuid,
		 struct cp_volmeta *out);

/* The volumes of an image in chain order, base first (a thin clone's base
 * names its template, in another image, as parent).  -EUCLEAN when the
 * records do not form one chain (two children, a loop, a missing parent).
 * *out: free(). */
int cp_sd_image_chain(cp_sd *sd, const char *img_uuid,
		      struct cp_volmeta **out, size_t *n);

/* Sizes of a volume's data: apparent (file size / LV size) and true
 * (blocks allocated on a file system; LV size on block). */
struct cp_vol_size {
	uint64_t apparent, allocated;
};
int cp_sd_vol_size(cp_sd *sd, const char *img_uuid, const char *vol_uuid,
		   struct cp_vol_size *out);

/* An image chain opened through a domain: the top image and the devices
 * of every layer (owned; closed by cp_sd_close_image after the image). */
#define CP_SD_CHAIN_MAX 64
struct cp_sd_chain {
	cp_image *img;                 /* the top; its backing chain below */
	cp_bdev *devs[CP_SD_CHAIN_MAX];
	unsigned ndevs;
	void *priv;                    /* sd.c: the backing resolver */
};
/* Open the image chain whose top is vol (qcow2 or raw, by its record).
 * Backing names inside a domain are "<vol>" (same image) or
 * "../<img>/<vol>" (a template in another image); they are resolved
 * through the domain, so the same works on LVs without device-mapper.
 * readwrite opens the top layer writable (the chain below read-only).
 * O_DIRECT (shared storage). */
int cp_sd_open_image(cp_sd *sd, const char *img_uuid, const char *vol_uuid,
		     bool readwrite, struct cp_sd_chain *out);
/* Close the image, then the devices; returns the image's close result. */
int cp_sd_close_image(struct cp_sd_chain *c);
/* The path a local tool (qemu-img) may use for a volume of a FILE domain;
 * -ENOTSUP on a BLOCK domain without device-mapper. */
int cp_sd_vol_path(cp_sd *sd, const char *img_uuid, const char *vol_uuid,
		   char *out, size_t outlen);

/* ---- task.c: the task journal --------------------------------------------- */

/* SPM work that must survive a crash is journaled in the master domain's
 * `tasks` volume before it starts (docs/formats/tasks.md): 128 tasks of two
 * 4 KiB copies each, written alternately with a sequence number and a
 * CRC32C, so a torn write leaves the other copy valid.  A task records its
 * type, its parameters (UUIDs, sizes), the last step completed, its state
 * and progress.  The next SPM runs cp_pool's recovery over every task not
 * finished: each type rolls forward or back from its recorded step. */
enum cp_task_type {
	CP_TASK_CREATE_VOLUME = 1,  /* new image or snapshot; rollback */
	CP_TASK_DELETE_VOLUME = 2,  /* roll forward */
	CP_TASK_DELETE_IMAGE = 3,   /* roll forward */
	CP_TASK_MERGE = 4,          /* snapshot delete; roll forward */
	CP_TASK_TEMPLATE = 5,       /* template from a chain; rollback */
	CP_TASK_CLONE = 6,          /* disk from template, thin or full */
	CP_TASK_COPY_IMAGE = 7,     /* image to another domain; rollback */
	CP_TASK_EXTEND = 8,         /* LV extension; roll forward */
};
enum cp_task_state {
	CP_TASK_RUNNING = 1,        /* journaled, not finished */
	CP_TASK_RECOVERING = 2,     /* a new SPM is finishing or undoing it */
	CP_TASK_DONE = 3,           /* finished (rolled forward) */
	CP_TASK_FAILED = 4,         /* failed; rolled back */
	CP_TASK_ABORTED = 5,        /* rolled back by recovery */
};
const char *cp_task_type_name(enum cp_task_type t);   /* "create_volume" */
const char *cp_task_state_name(enum cp_task_state s); /* "running" */

#define CP_TASK_MAX 128
#define CP_TASK_ERR_MAX 200

struct cp_task {
	char task_uuid[CP_UUID_STR_LEN + 1];
	enum cp_task_type type;
	enum cp_task_state state;
	uint32_t step;                 /* last step completed (type-specific) */
	uint64_t seq;                  /* bumped by every write of the task */
	uint64_t spm_lver;             /* SDM lease version of the writer */
	int64_t ctime, mtime;          /* unix seconds */
	uint64_t done, total;          /* progress, bytes */
	int32_t error;                 /* -errno when FAILED/ABORTED */
	char message[CP_TASK_ERR_MAX + 1];
	/* parameters */
	char dom_uuid[CP_UUID_STR_LEN + 1];
	char img_uuid[CP_UUID_STR_LEN + 1];
	char vol_uuid[CP_UUID_STR_LEN + 1];
	char parent_uuid[CP_UUID_STR_LEN + 1];  /* type-specific */
	char src_img_uuid[CP_UUID_STR_LEN + 1];
	char src_vol_uuid[CP_UUID_STR_LEN + 1];
	char dst_dom_uuid[CP_UUID_STR_LEN + 1];
	char aux_uuid[CP_UUID_STR_LEN + 1];    /* type-specific */
	uint64_t u64[4];                        /* type-specific */
	uint32_t flags;                         /* type-specific */
	uint32_t slot;                          /* journal slot, 0..127 */
};

/* ---- pool.c: the pool as one host sees it ---------------------------------- */

/* cp_pool is a host's view of the storage pool: the domains it can reach
 * (found under the file roots and on the LVM devices it is given), its
 * membership of their lockspaces, the SPM role, volume leases held by this
 * process, and the task journal.  cowpoold holds one.
 *
 * Structural calls (volume.c) are SPM-only: on a host that is not the SPM
 * they fail with -EPERM ("host 2 is not the SPM (SPM is host 1, lease
 * version 7)").  Before every structural write the SPM checks that its
 * lease is still held (cp_lease_client_check); a host that lost it stops
 * at once and the call fails with -ESTALE.
 *
 * Threads: any thread.  Structural calls are serialised per pool (one at a
 * time); reads run concurrently.
 */
typedef struct cp_pool cp_pool;

struct cp_pool_opts {
	size_t size;                    /* sizeof, set by _init */
	uint64_t host_id;               /* 1..2000, required */
	const char *pool_uuid;          /* only domains of this pool; NULL: the
					 * pool of the first master found */
	const char *const *file_roots;  /* directories holding file domains */
	const char *const *lvm_devices; /* block domains: devices LVM may see
					 * (NULL: no block domains) */
	const char *lvm_system_dir;     /* LVM_SYSTEM_DIR, NULL = default */
	bool use_sanlock;               /* default true; false only for
					 * read-only inspection */
	uint32_t disk_uid, disk_gid;    /* owner and group of the files of
					 * file domains (cp_sd_loc); 0 = the
					 * process's */
};
void cp_pool_opts_init(struct cp_pool_opts *o);

/* Scan the storage connections and open every domain found (no sanlock
 * I/O yet). */
int cp_pool_open(const struct cp_pool_opts *o, cp_pool **out);
/* Release leases (the SPM role included), leave lockspaces, close. */
void cp_pool_close(cp_pool *p);
/* Rescan connections for new domains (after domain creation elsewhere). */
int cp_pool_rescan(cp_pool *p);
/* Join the lockspaces of all domains (blocking; already joined is fine). */
int cp_pool_join(cp_pool *p);
/* The sanlock client fd of this process (see cp_lease_client_fd), for
 * poll() with POLLRDHUP: it reports at once when the daemon connection,
 * and with it every lease, is lost.  -ENOENT until the client is opened
 * (by spm start or a writable prepare). */
int cp_pool_lease_fd(cp_pool *p);

/* Create a domain on one of this host's connections, open it and join
 * its lockspace.  Any host may create a domain (nobody else uses it yet).  The pool UUID
 * defaults to the pool's; a master domain starts a new pool.  On any
 * failure everything it made is removed again (the directory, the VG, the
 * pool's entry and lockspace): the same call can be retried. */
int cp_pool_domain_create(cp_pool *p, const struct cp_sd_create_opts *o,
			  struct cp_domain_md *out);
/* Detach, deactivate and format a domain (oVirt's lifecycle in one
 * call): SPM only; its lockspace left, its storage wiped (the directory
 * <root>/<uuid>, or the VG with its LVs), gone from the pool.  -EBUSY
 * while a volume of it is prepared for writing on this host, while an
 * unfinished task touches it, or while it is the master of a pool that
 * has other domains.  The master alone can be removed: the SPM role and
 * the pool end with it.  Other hosts must not use the domain any more
 * (the caller's business, as in oVirt). */
int cp_pool_domain_remove(cp_pool *p, const char *dom_uuid);
/* A domain of the pool by UUID (borrowed; -ENOENT message names it). */
int cp_pool_domain(cp_pool *p, const char *dom_uuid, cp_sd **out);
/* The master domain (-ENOENT when none is connected). */
int cp_pool_master(cp_pool *p, cp_sd **out);

/* Domain monitoring: what the last cp_pool_monitor() saw. */
struct cp_domain_status {
	struct cp_domain_md md;
	struct cp_sd_stats stats;
	bool readable;                  /* record read back and valid */
	bool joined;                    /* lockspace joined by this host */
	enum cp_host_state renewal;     /* this host's id as its sanlock
					 * daemon sees it: LIVE while the
					 * lease renews; UNKNOWN if not
					 * joined */
	int last_error;                 /* 0 or -errno of the last check */
	char message[256];              /* its cp_last_error() */
	int64_t checked;                /* unix seconds of the last check */
};
/* Check every domain once: look for domains created elsewhere since the
 * last call (rescan), read each record, stats, lockspace state; a domain
 * whose lockspace is not joined is joined in the background. */
int cp_pool_monitor(cp_pool *p);
/* Snapshot of the status of all domains (free()). */
int cp_pool_domains(cp_pool *p, struct cp_domain_status **out, size_t *n);

/* The SPM role. */
enum cp_spm_role { CP_SPM_FREE = 0, CP_SPM_SPM = 1, CP_SPM_CONTENDING = 2 };
const char *cp_spm_role_name(enum cp_spm_role r); /* "Free", "SPM", "Contending" */
struct cp_spm_status {
	enum cp_spm_role role;          /* as seen from this host: SPM = this
					 * host holds it; CONTENDING = another
					 * host holds it or we are starting */
	uint64_t host_id;               /* holder (0 when free) */
	uint64_t lver;                  /* SDM lease version */
	bool self;                      /* this host is the SPM */
};
/* spm start: join the master's lockspace, acquire SDM (its version goes
 * up), recover pending tasks, then accept structural calls.  -EBUSY when
 * another live host is SPM; -EAGAIN when its lease has not expired yet. */
int cp_spm_start(cp_pool *p);
/* spm stop: -EBUSY while tasks are running unless force; then release. */
int cp_spm_stop(cp_pool *p, bool force);
int cp_spm_status(cp_pool *p, struct cp_spm_status *out);
/* 0 if this host is the SPM and still holds the lease; -EPERM if it is not
 * the SPM; -ESTALE if it lost the lease (the role is dropped). */
int cp_spm_check(cp_pool *p);

/* Tasks of the journal (any host may read; free()). */
int cp_task_list(cp_pool *p, struct cp_task **out, size_t *n);
int cp_task_get(cp_pool *p, const char *task_uuid, struct cp_task *out);
/* Clear a finished task (DONE, FAILED, ABORTED); SPM only; -EBUSY if it
 * is still running. */
int cp_task_clear(cp_pool *p, const char *task_uuid);

/* Prepare a volume chain for use on this host: rw (a LEAF only) acquires
 * the volume's lease (-EBUSY naming the host that holds it); read-only
 * use takes none.  Any host.  Teardown releases. */
int cp_vol_prepare(cp_pool *p, const char *dom, const char *img,
		   const char *vol, bool rw);
int cp_vol_teardown(cp_pool *p, const char *dom, const char *img,
		    const char *vol);

/* ---- volume.c: image and volume lifecycle (SPM) --------------------------- */

/* Every call: SPM only (cp_spm_check), journaled as a task in the master
 * domain before its first change, progress in the task.  task_uuid may be
 * NULL (generated) or caller-given (cowpoold returns it before the work
 * ends); progress may be NULL. */
typedef void (*cp_task_progress_fn)(void *opaque, uint64_t done,
				    uint64_t total);

struct cp_vol_create_opts {
	size_t size;                   /* sizeof, set by _init */
	const char *img_uuid;          /* NULL/"" = new image (generated) */
	const char *vol_uuid;          /* NULL = generate */
	const char *parent_uuid;       /* snapshot: the image's leaf; NULL/"" =
					* first volume of a new image */
	const char *parent_img_uuid;   /* parent in another image (a template:
					* thin clone); NULL = img_uuid */
	enum cp_vol_format format;     /* default COW */
	enum cp_vol_alloc allocation;  /* default SPARSE */
	uint64_t capacity;             /* bytes; 0 with a parent = its size */
	uint64_t initial_size;         /* BLOCK thin COW: first LV size;
					* 0 = the domain's chunk */
	const char *description;
	const char *task_uuid;
};
void cp_vol_create_opts_init(struct cp_vol_create_opts *o);
/* Create a volume; a snapshot turns the parent (the old leaf) INTERNAL.
 * out (may be NULL) receives the new record. */
int cp_vol_create(cp_pool *p, const char *dom,
		  const struct cp_vol_create_opts *o, struct cp_volmeta *out);

/* Delete a leaf volume that has no children (the image's only volume, or
 * the top of a chain: the parent becomes LEAF again). */
int cp_vol_delete(cp_pool *p, const char *dom, const char *img,
		  const char *vol, const char *task_uuid);
/* Delete a whole image (all its volumes).  -EBUSY if a volume is a
 * template used by another image. */
int cp_img_delete(cp_pool *p, const char *dom, const char *img,
		  const char *task_uuid);
/* Delete the snapshot layer vol: cold merge of vol into its parent (base
 * LV extended first by measure, reduced after), its child re-pointed to
 * the parent, vol marked ILLEGAL then removed.  vol without a parent:
 * its child pulls it in (rebase onto nothing) instead. */
int cp_vol_merge(cp_pool *p, const char *dom, const char *img,
		 const char *vol, const char *task_uuid,
		 cp_task_progress_fn progress, void *opaque);

struct cp_template_opts {
	size_t size;
	const char *img_uuid;          /* source image */
	const char *vol_uuid;          /* source top volume; NULL = its leaf */
	const char *tmpl_img_uuid;     /* NULL = generate */
	const char *tmpl_vol_uuid;     /* NULL = generate */
	enum cp_vol_format format;     /* default COW */
	const char *description;
	const char *task_uuid;
};
void cp_template_opts_init(struct cp_template_opts *o);
/* Make a template: a collapsed copy of the chain as one SHARED volume in
 * a new image. */
int cp_template_create(cp_pool *p, const char *dom,
		       const struct cp_template_opts *o,
		       cp_task_progress_fn progress, void *opaque,
		       struct cp_volmeta *out);

struct cp_clone_opts {
	size_t size;
	const char *tmpl_img_uuid, *tmpl_vol_uuid;
	const char *img_uuid;          /* new image; NULL = generate */
	const char *vol_uuid;          /* NULL = generate */
	bool full;                     /* false: thin qcow2 overlay on the
					* template; true: independent copy */
	enum cp_vol_format format;     /* full clone: default COW */
	enum cp_vol_alloc allocation;  /* full clone: default SPARSE */
	const char *description;
	const char *task_uuid;
};
void cp_clone_opts_init(struct cp_clone_opts *o);
int cp_template_clone(cp_pool *p, const char *dom,
		      const struct cp_clone_opts *o,
		      cp_task_progress_fn progress, void *opaque,
		      struct cp_volmeta *out);

/* Copy an image (its whole chain, same UUIDs) to another domain.  A thin
 * clone's template must exist on the target. */
int cp_img_copy(cp_pool *p, const char *src_dom, const char *img,
		const char *dst_dom, const char *task_uuid,
		cp_task_progress_fn progress, void *opaque);

/* Extend a volume's storage (BLOCK LV to at least size bytes; FILE: a
 * no-op for sparse files).  *new_size may be NULL. */
int cp_vol_extend(cp_pool *p, const char *dom, const char *img,
		  const char *vol, uint64_t size, uint64_t *new_size);

/* Change a volume's description (generation compare-and-bump: -ESTALE
 * when expected_gen is not the one on disk). */
int cp_vol_set_description(cp_pool *p, const char *dom, const char *img,
			   const char *vol, uint64_t expected_gen,
			   const char *description);


#ifdef __cplusplus
}
#endif

#endif
