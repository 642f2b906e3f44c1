/* spm/sd_int.h - private: the two storage domain backends behind cp_sd.
 *
 * sd.c holds what both types share (opening image chains, leases of the
 * SDM, the generic calls of spm.h) and dispatches the rest to a backend:
 * filesd.c (directories and files) or blocksd.c (an LVM volume group).
 *
 * Backend rules:
 *   - Every function returns 0 / >= 0 or -errno with cp_error() naming the
 *     domain, image and volume.
 *   - Volume data and records: vol_create makes the data (file / LV) and
 *     nothing else; md_write writes a record (creating it when new); the
 *     generic layer orders these steps (vol_*.c) so a crash between any
 *     two leaves something the task journal can finish or undo.
 *   - Removals are idempotent: removing what is already gone returns 0.
 */
#ifndef CP_SPM_SD_INT_H
#define CP_SPM_SD_INT_H

#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/types.h>

#include "common.h"
#include "spm.h"

struct sd_backend;

struct cp_sd {
	const struct sd_backend *ops;
	enum cp_domain_type type;
	char uuid[CP_UUID_STR_LEN + 1];
	struct cp_domain_md md;        /* the record as last read */
	pthread_mutex_t lock;          /* md, path buffers */

	/* FILE */
	char root[PATH_MAX - 256];     /* directory holding <uuid>/ */
	char dir[PATH_MAX - 192];      /* <root>/<uuid> */
	uint32_t disk_uid, disk_gid;   /* owner, group of what it makes (0:
					* the process's) */
	int dom_fd;                    /* O_PATH fd of dir (dom_fd_open) */
	bool dom_fd_open;

	/* BLOCK */
	struct cp_lvm_opts lvm;        /* copied, strings below owned */
	char *lvm_path, *lvm_system_dir;
	char **lvm_devices;            /* NULL-terminated, owned */

	/* sanlock locations (filled at open) */
	char ids_path[PATH_MAX];
	uint64_t ids_offset;
	char leases_path[PATH_MAX];
	uint64_t leases_offset;        /* where the leases volume starts */

	void *priv;                    /* backend's own state */
};

/* Options for creating a volume's data. */
struct sd_vol_spec {
	const char *img_uuid, *vol_uuid;
	const char *parent_uuid;       /* "" none (for LV tags) */
	enum cp_vol_format format;
	enum cp_vol_alloc allocation;
	uint64_t size;                 /* bytes of storage to provide now:
					* file: preallocated bytes (0 sparse);
					* block: LV size */
};

struct sd_backend {
	/* create a domain (everything including the record and the
	 * formatted lockspace/SDM lease); open: fill sd (md, sanlock
	 * locations, priv). */
	int (*create)(const struct cp_sd_create_opts *o, struct cp_domain_md *out);
	/* Wipe a domain's storage: the directory <root>/<uuid> with all it
	 * holds, or the VG with its LVs.  Gone already: 0.  A create that
	 * fails calls it for what it made; cp_pool_domain_remove for a
	 * domain formatted away. */
	int (*destroy)(const struct cp_sd_loc *loc, const char *uuid);
	int (*open)(cp_sd *sd);
	void (*close)(cp_sd *sd);
	int (*read_md)(cp_sd *sd, struct cp_domain_md *out);
	int (*write_md)(cp_sd *sd, const struct cp_domain_md *d);
	int (*stats)(cp_sd *sd, struct cp_sd_stats *out);
	int (*extend)(cp_sd *sd, const char *device);

	int (*list_images)(cp_sd *sd, struct cp_uuid_str **out, size_t *n);
	int (*list_volumes)(cp_sd *sd, const char *img,
			    struct cp_uuid_str **out, size_t *n);

	/* Volume records.  md_write creates or replaces atomically (one
	 * sector on block, rename on file); md_remove clears it. */
	int (*md_read)(cp_sd *sd, const char *img, const char *vol,
		       struct cp_volmeta *out);
	int (*md_write)(cp_sd *sd, const struct cp_volmeta *m);
	int (*md_remove)(cp_sd *sd, const char *img, const char *vol);

	/* Volume data.  vol_create: -EEXIST if there; vol_remove: data and
	 * lease; vol_resize: the storage (not the virtual size) to at least
	 * (grow) / exactly (shrink) size bytes; vol_set_parent: block LV tag
	 * PU_ (file: no-op). */
	int (*vol_create)(cp_sd *sd, const struct sd_vol_spec *spec);
	int (*vol_remove)(cp_sd *sd, const char *img, const char *vol);
	int (*vol_exists)(cp_sd *sd, const char *img, const char *vol);
	int (*vol_resize)(cp_sd *sd, const char *img, const char *vol,
			  uint64_t size, bool shrink, uint64_t *new_size);
	int (*vol_set_parent)(cp_sd *sd, const char *img, const char *vol,
			      const char *parent_uuid);
	int (*vol_size)(cp_sd *sd, const char *img, const char *vol,
			struct cp_vol_size *out);
	/* Open the data as a device; refresh after another host extended
	 * it (block: re-read the extent map). */
	int (*vol_open)(cp_sd *sd, const char *img, const char *vol, bool rw,
			cp_bdev **out);
	int (*vol_refresh)(cp_sd *sd, const char *img, const char *vol,
			   cp_bdev *dev);
	/* Where a volume's lease lives (path into buf, offset). */
	int (*vol_lease)(cp_sd *sd, const char *img, const char *vol,
			 char *path, size_t pathlen, uint64_t *offset);
	/* A file path for local tools; block without device-mapper -ENOTSUP. */
	int (*vol_path)(cp_sd *sd, const char *img, const char *vol, char *out,
			size_t outlen);
	/* The tasks area (1 MiB at least) as a device, O_DIRECT. */
	int (*tasks_open)(cp_sd *sd, cp_bdev **out);
	/* The mailbox's inbox or outbox as a device, O_DIRECT. */
	int (*mailbox_open)(cp_sd *sd, bool outbox, cp_bdev **out);
};

extern const struct sd_backend cp_sd_file_backend;
extern const struct sd_backend cp_sd_block_backend;

/* Shared helpers (sd.c). */
/* Wipe a domain's storage through its backend's destroy. */
int sd_destroy(const struct cp_sd_loc *loc, const char *uuid);
/* Format a lease at path:offset for vol (name = vol UUID) in sd's
 * lockspace. */
int sd_format_vol_lease(cp_sd *sd, const char *vol, const char *path,
			uint64_t offset);

/* Parse a backing name "<vol>" or "../<img>/<vol>" (cur_img for the
 * first form); -EUCLEAN naming it otherwise. */
int sd_parse_backing(const char *name, const char *cur_img, char *img,
		     char *vol);
/* cp_sd_open_image, with the devices of the backing layers opened
 * read-write too (the layers stay read-only until reopened: commit), and
 * with force_share, an open that takes no image lock another open could
 * meet (a look at the chain, not a use of it). */
int sd_open_chain(cp_sd *sd, const char *img_uuid, const char *vol_uuid,
		  bool readwrite, bool backing_rw, bool force_share,
		  struct cp_sd_chain *out);
/* Open the chain of img/vol read-only and close it: every backing name
 * resolves to a volume of this domain (a record there, data beneath the
 * domain, no link), else -EUCLEAN / -ELOOP naming it. */
int sd_check_chain(cp_sd *sd, const char *img, const char *vol);
/* domain.c: replace dom_md/metadata of a file domain atomically. */
int sd_file_write_domain_md(const char *root, const struct cp_domain_md *d);
/* domain.c: qsort order of struct cp_uuid_str. */
int sd_uuid_cmp(const void *a, const void *b);
/* domain.c: the UUIDs named by the entries of dp (closed) that are a UUID
 * followed by suffix, sorted; what names the directory in messages.
 * Caller frees *out. */
int sd_list_uuids(DIR *dp, const char *what, const char *suffix,
		  struct cp_uuid_str **out, size_t *n);

/* ---- file domains: confinement and ownership (domain.c) ----
 * Everything inside a file domain is opened beneath the domain directory
 * without following any symbolic link (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS): a link planted in a domain fails with -ELOOP
 * instead of reaching outside it. */
#define SD_FILE_MODE 0660
#define SD_DIR_MODE 0750
/* Open rel beneath dirfd, no symlink followed (-errno, message naming
 * what/rel). */
int sd_openat(int dirfd, const char *what, const char *rel, int flags,
	      mode_t mode);
/* The domain directory <root>/<uuid> (the last component not a link),
 * O_PATH. */
int sd_dom_dirfd(const char *root, const char *uuid);
/* Give fd mode and owner (uid/gid 0: leave). */
int sd_own(int fd, const char *what, mode_t mode, uint32_t uid, uint32_t gid);
/* Replace dirfd/name with buf: name.tmp written, fsync, rename, fsync of
 * the directory.  When the file system has no space for the new copy and
 * name exists with len bytes, name is overwritten in place by one write
 * of len (<= 4096) bytes (atomic as the block domain's sector writes), so
 * records of a full domain can still change (a delete frees the space). */
int sd_atomic_write_at(int dirfd, const char *what, const char *name,
		       const uint8_t *buf, size_t len, uint32_t uid,
		       uint32_t gid);

/* ---- options of the public calls (every file) ----
 * Copy the caller's options uo over the defaults already in *o (its
 * _opts_init): uo must be given and reach at least the first `need` bytes
 * (offsetof the first field a caller may leave out); a caller built
 * against a smaller struct keeps the defaults for the rest, and o's size
 * is then its own.  Else -EINVAL "<what>: bad options". */
static inline int sd_opts_copy(void *o, size_t o_size, const void *uo,
			       size_t need, const char *what)
{
	size_t size;
	if (!uo)
		return cp_error(-EINVAL, "%s: bad options", what);
	memcpy(&size, uo, sizeof(size)); /* the first member */
	if (size < need)
		return cp_error(-EINVAL, "%s: bad options", what);
	memcpy(o, uo, CP_MIN(size, o_size));
	size = o_size; /* *o is whole now */
	memcpy(o, &size, sizeof(size));
	return 0;
}

/* The usual call: o (a struct, not a pointer) filled by init, then the
 * caller's uo over it; first is the first field uo may leave out. */
#define SD_OPTS_COPY(o, uo, init, first, what)                                 \
	(init(&(o)), sd_opts_copy(&(o), sizeof(o), (uo),                       \
				  offsetof(__typeof__(o), first), (what)))

#endif
