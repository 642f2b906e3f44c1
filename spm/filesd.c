/* spm/filesd.c - the file domain backend: a directory on any POSIX file
 * system (a local folder, NFS, ...), laid out as docs/formats/domain.md
 * says.  Records are written by domain.c (write new, fsync, rename, fsync
 * the directory); volume data is a file, sparse or fallocated; a volume's
 * lease is a 1 MiB file beside it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common.h"
#include "sd_int.h"

#define FILESD_LEASE_SIZE (1u << 20)

static int fsd_path(cp_sd *sd, char *out, size_t len, const char *img,
		    const char *vol, const char *suffix)
{
	int n;

	if (vol)
		n = snprintf(out, len, "%s/images/%s/%s%s", sd->dir, img, vol,
			     suffix);
	else if (img)
		n = snprintf(out, len, "%s/images/%s", sd->dir, img);
	else
		n = snprintf(out, len, "%s/images", sd->dir);
	if (n < 0 || (size_t)n >= len)
		return cp_error(-ENAMETOOLONG, "domain %s: path too long", sd->uuid);
	return 0;
}

/* images/<img> (images/ when img is NULL) beneath the domain directory,
 * no link followed; O_RDONLY (for listing and fsync). */
static int fsd_dirfd(cp_sd *sd, const char *img)
{
	char rel[sizeof("images/") + CP_UUID_STR_LEN];

	if (img)
		snprintf(rel, sizeof(rel), "images/%s", img);
	else
		snprintf(rel, sizeof(rel), "images");
	return sd_openat(sd->dom_fd, sd->dir, rel, O_RDONLY | O_DIRECTORY, 0);
}

static int fsd_fsync_fd(int fd, const char *what)
{
	if (fsync(fd) < 0)
		return cp_error(-errno, "%s: fsync: %s", what, strerror(errno));
	return 0;
}

/* vol + suffix */
static void fsd_name(char *out, size_t len, const char *vol,
		     const char *suffix)
{
	snprintf(out, len, "%s%s", vol, suffix);
}

/* A regular file img/vol+suffix, no link on the way: an O_PATH fd. */
static int fsd_open_file(cp_sd *sd, const char *img, const char *vol,
			 const char *suffix, int flags)
{
	char rel[2 * CP_UUID_STR_LEN + 32];
	struct stat st;
	int fd;

	snprintf(rel, sizeof(rel), "images/%s/%s%s", img, vol, suffix);
	fd = sd_openat(sd->dom_fd, sd->dir, rel, flags, 0);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return cp_error(-EUCLEAN, "%s/%s: not a regular file", sd->dir,
				rel);
	}
	return fd;
}

/* Open a device on an fd already resolved beneath the domain. */
static int fsd_bdev_open_fd(int fd, const char *what, bool rw, cp_bdev **out)
{
	char proc[64];
	struct cp_bdev_opts bo;
	int r;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	cp_bdev_opts_init(&bo);
	bo.cache = CP_CACHE_NONE;
	bo.readonly = !rw;
	bo.name = what; /* errors name the volume, not /proc/self/fd/N */
	r = cp_bdev_open(proc, &bo, out);
	if (r < 0)
		return cp_error_prefix(r, "%s", what);
	return 0;
}

static int fsd_rm_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT)
		return -1;
	return 0;
}

/* Remove <root>/<uuid> and everything beneath it (no link followed: a
 * link is removed, not what it points to). */
static int fsd_destroy(const struct cp_sd_loc *loc, const char *uuid)
{
	char dir[PATH_MAX];
	struct stat st;

	if (!loc->root || !cp_uuid_valid(uuid))
		return cp_error(-EINVAL, "file domain: no root or bad UUID");
	if (snprintf(dir, sizeof(dir), "%s/%s", loc->root, uuid) >=
	    (int)sizeof(dir))
		return cp_error(-ENAMETOOLONG, "%s: path too long", loc->root);
	if (lstat(dir, &st) < 0 && errno == ENOENT)
		return 0;
	if (nftw(dir, fsd_rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0 &&
	    errno != ENOENT)
		return cp_error(-errno, "file domain %s: removing %s: %s", uuid,
				dir, strerror(errno));
	int fd = open(loc->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

static int fsd_create_steps(const struct cp_sd_create_opts *o,
			    struct cp_domain_md *out);

/* Create, or leave nothing behind: everything under <root>/<uuid> is
 * removed again when any step fails (a directory that was there before
 * is refused, never removed). */
static int fsd_create(const struct cp_sd_create_opts *o,
		      struct cp_domain_md *out)
{
	char dir[PATH_MAX];
	struct stat st;
	int r;

	if (!o->dom_uuid || !cp_uuid_valid(o->dom_uuid))
		return fsd_create_steps(o, out); /* refused there */
	snprintf(dir, sizeof(dir), "%s/%s", o->loc.root, o->dom_uuid);
	if (lstat(dir, &st) == 0)
		return cp_error(-EEXIST, "file domain %s: %s exists",
				o->dom_uuid, dir);
	r = fsd_create_steps(o, out);
	if (r < 0) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", cp_error_msg(r));
		if (fsd_destroy(&o->loc, o->dom_uuid) < 0)
			return cp_error(r, "%s (and removing %s failed: %s)",
					msg, dir, cp_last_error());
		cp_error(r, "%s (%s removed again)", msg, dir);
	}
	return r;
}

static int fsd_create_steps(const struct cp_sd_create_opts *o,
			    struct cp_domain_md *out)
{
	struct cp_domain_create_opts dc;
	struct cp_domain_md d;
	struct cp_lockspace_opts ls;
	struct cp_lease_opts l;
	char ids[PATH_MAX], leases[PATH_MAX];
	int r;

	cp_domain_create_opts_init(&dc);
	dc.root = o->loc.root;
	dc.dom_uuid = o->dom_uuid;
	dc.pool_uuid = o->pool_uuid;
	dc.name = o->name;
	dc.master = o->master;
	dc.chunk_size = o->chunk_size;
	dc.io_timeout = o->io_timeout;
	dc.disk_uid = o->loc.disk_uid;
	dc.disk_gid = o->loc.disk_gid;
	r = cp_domain_create(&dc, &d);
	if (r < 0)
		return r;
	snprintf(ids, sizeof(ids), "%s/%s/dom_md/ids", o->loc.root, d.dom_uuid);
	snprintf(leases, sizeof(leases), "%s/%s/dom_md/leases", o->loc.root,
		 d.dom_uuid);
	cp_lockspace_opts_init(&ls);
	ls.name = d.dom_uuid;
	ls.path = ids;
	ls.io_timeout = o->io_timeout;
	r = cp_lockspace_format(&ls);
	if (r < 0)
		return cp_error_prefix(r, "domain %s: lockspace", d.dom_uuid);
	cp_lease_opts_init(&l);
	l.lockspace = d.dom_uuid;
	l.name = "SDM";
	l.path = leases;
	l.offset = CP_SD_SDM_LEASE_OFFSET;
	r = cp_lease_format(&l);
	if (r < 0)
		return cp_error_prefix(r, "domain %s: SDM lease", d.dom_uuid);
	if (out)
		*out = d;
	return 0;
}

static int fsd_read_md(cp_sd *sd, struct cp_domain_md *out)
{
	return cp_domain_read(sd->root, sd->uuid, out);
}

static int fsd_open_dir(cp_sd *sd);

static void fsd_close(cp_sd *sd)
{
	if (sd->dom_fd_open)
		close(sd->dom_fd);
	sd->dom_fd_open = false;
}

static int fsd_open(cp_sd *sd)
{
	int r = fsd_open_dir(sd);

	if (r < 0)
		fsd_close(sd);
	return r;
}

static int fsd_open_dir(cp_sd *sd)
{
	static const char *const prealloc[] = {"metadata", "ids", "leases", "inbox",
					       "outbox", "tasks"};
	int fd, r;

	fd = sd_dom_dirfd(sd->root, sd->uuid);
	if (fd < 0)
		return fd;
	sd->dom_fd = fd;
	sd->dom_fd_open = true;
	r = fsd_read_md(sd, &sd->md);
	if (r < 0)
		return r;
	/* Domains made before the dom_md files were allocated up front:
	 * allocate them now (fallocate mode 0 never changes data; a file
	 * system without it, or without space, keeps them as they are). */
	for (size_t i = 0; i < CP_ARRAY_SIZE(prealloc); i++) {
		char rel[32];
		struct stat st;
		snprintf(rel, sizeof(rel), "dom_md/%s", prealloc[i]);
		fd = sd_openat(sd->dom_fd, sd->dir, rel, O_RDWR, 0);
		if (fd == -EACCES || fd == -EPERM || fd == -EROFS)
			/* read-only use (inspection, a read-only export):
			 * only the link check */
			fd = sd_openat(sd->dom_fd, sd->dir, rel, O_PATH, 0);
		if (fd < 0)
			return cp_error_prefix(fd, "domain %s", sd->uuid);
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    (uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size)
			(void)fallocate(fd, 0, 0, st.st_size);
		close(fd);
	}
	snprintf(sd->ids_path, sizeof(sd->ids_path), "%s/dom_md/ids", sd->dir);
	snprintf(sd->leases_path, sizeof(sd->leases_path), "%s/dom_md/leases",
		 sd->dir);
	sd->ids_offset = 0;
	sd->leases_offset = 0;
	return 0;
}

static int fsd_write_md(cp_sd *sd, const struct cp_domain_md *d)
{
	return sd_file_write_domain_md(sd->root, d);
}

static int fsd_stats(cp_sd *sd, struct cp_sd_stats *out)
{
	struct statvfs v;

	if (statvfs(sd->dir, &v) < 0)
		return cp_error(-errno, "domain %s: %s: %s", sd->uuid, sd->dir,
				strerror(errno));
	out->total = (uint64_t)v.f_blocks * v.f_frsize;
	out->free = (uint64_t)v.f_bavail * v.f_frsize;
	return 0;
}

static int fsd_extend(cp_sd *sd, const char *device)
{
	return cp_error(-ENOTSUP, "domain %s: file domains take no devices",
			sd->uuid);
}

/* UUID names in directory fd (closed): entries of exactly 36 + strlen(suffix)
 * characters ending in suffix. */
static int fsd_list_uuids(int fd, const char *what, const char *suffix,
			  struct cp_uuid_str **out, size_t *n)
{
	DIR *dp = fdopendir(fd);

	if (!dp) {
		int err = -errno;
		close(fd);
		return cp_error(err, "%s: %s", what, strerror(-err));
	}
	return sd_list_uuids(dp, what, suffix, out, n);
}

static int fsd_list_images(cp_sd *sd, struct cp_uuid_str **out, size_t *n)
{
	int fd = fsd_dirfd(sd, NULL);

	if (fd < 0)
		return cp_error_prefix(fd, "domain %s", sd->uuid);
	return fsd_list_uuids(fd, sd->dir, "", out, n);
}

static int fsd_list_volumes(cp_sd *sd, const char *img,
			    struct cp_uuid_str **out, size_t *n)
{
	int fd = fsd_dirfd(sd, img);

	if (fd == -ENOENT) {
		*out = NULL;
		*n = 0;
		return 0;  /* no such image: no volumes */
	}
	if (fd < 0)
		return cp_error_prefix(fd, "domain %s", sd->uuid);
	return fsd_list_uuids(fd, sd->dir, ".meta", out, n);
}

static int fsd_md_read(cp_sd *sd, const char *img, const char *vol,
		       struct cp_volmeta *out)
{
	char path[PATH_MAX];
	uint8_t buf[CP_MD_SECTOR_SIZE];
	struct stat st;
	ssize_t got;
	int fd, r = fsd_path(sd, path, sizeof(path), img, vol, ".meta");

	if (r < 0)
		return r;
	fd = fsd_open_file(sd, img, vol, ".meta", O_RDONLY);
	if (fd == -ENOENT)
		return cp_error(-ENOENT, "domain %s: volume %s of image %s not found",
				sd->uuid, vol, img);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0 || st.st_size != CP_MD_SECTOR_SIZE) {
		close(fd);
		return cp_error(-EUCLEAN, "%s: size %lld, expected %d", path,
				(long long)st.st_size, CP_MD_SECTOR_SIZE);
	}
	got = pread(fd, buf, sizeof(buf), 0);
	close(fd);
	if (got != (ssize_t)sizeof(buf))
		return cp_error(got < 0 ? -errno : -EUCLEAN, "%s: short read",
				path);
	r = cp_volmeta_decode(buf, path, out);
	if (r < 0)
		return r;
	if (strcasecmp(out->vol_uuid, vol) || strcasecmp(out->img_uuid, img))
		return cp_error(-EUCLEAN, "%s: record names volume %s of image %s",
				path, out->vol_uuid, out->img_uuid);
	return 0;
}

static int fsd_mkimage(cp_sd *sd, const char *img)
{
	int ifd = fsd_dirfd(sd, NULL), fd, r;

	if (ifd < 0)
		return ifd;
	if (mkdirat(ifd, img, SD_DIR_MODE) < 0) {
		r = errno == EEXIST ? 0 : cp_error(-errno, "%s/images/%s: %s",
						   sd->dir, img, strerror(errno));
		close(ifd);
		return r;
	}
	fd = sd_openat(ifd, sd->dir, img, O_RDONLY | O_DIRECTORY, 0);
	r = fd;
	if (fd >= 0) {
		r = sd_own(fd, img, SD_DIR_MODE, sd->disk_uid, sd->disk_gid);
		close(fd);
	}
	if (r == 0)
		r = fsd_fsync_fd(ifd, sd->dir);
	close(ifd);
	return r;
}

static int fsd_md_write(cp_sd *sd, const struct cp_volmeta *m)
{
	uint8_t buf[CP_MD_SECTOR_SIZE];
	char name[CP_UUID_STR_LEN + 8], what[PATH_MAX];
	int fd, r = fsd_mkimage(sd, m->img_uuid);

	if (r < 0)
		return r;
	if ((r = cp_volmeta_encode(m, buf)) < 0)
		return r;
	fsd_path(sd, what, sizeof(what), m->img_uuid, NULL, NULL);
	fd = fsd_dirfd(sd, m->img_uuid);
	if (fd < 0)
		return fd;
	fsd_name(name, sizeof(name), m->vol_uuid, ".meta");
	r = sd_atomic_write_at(fd, what, name, buf, sizeof(buf), sd->disk_uid,
			       sd->disk_gid);
	close(fd);
	return r;
}

static int fsd_unlink(cp_sd *sd, const char *img, const char *vol,
		      const char *suffix)
{
	char name[CP_UUID_STR_LEN + 16];
	int fd = fsd_dirfd(sd, img), r = 0;

	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	fsd_name(name, sizeof(name), vol, suffix);
	if (unlinkat(fd, name, 0) < 0 && errno != ENOENT)
		r = cp_error(-errno, "%s/images/%s/%s: %s", sd->dir, img, name,
			     strerror(errno));
	close(fd);
	return r;
}

/* fsync images/<img> when it exists. */
static int fsd_sync_image(cp_sd *sd, const char *img)
{
	int fd = fsd_dirfd(sd, img), r;

	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	r = fsd_fsync_fd(fd, img);
	close(fd);
	return r;
}

/* Remove the image directory once it is empty (fsyncing images/). */
static int fsd_rmdir_image(cp_sd *sd, const char *img)
{
	int ifd = fsd_dirfd(sd, NULL), r = 0;

	if (ifd < 0)
		return ifd;
	if (unlinkat(ifd, img, AT_REMOVEDIR) == 0)
		r = fsd_fsync_fd(ifd, sd->dir);
	else if (errno != ENOENT && errno != ENOTEMPTY && errno != EEXIST)
		r = cp_error(-errno, "%s/images/%s: %s", sd->dir, img,
			     strerror(errno));
	close(ifd);
	return r;
}

static int fsd_md_remove(cp_sd *sd, const char *img, const char *vol)
{
	int r = fsd_unlink(sd, img, vol, ".meta");

	if (r < 0)
		return r;
	fsd_unlink(sd, img, vol, ".meta.tmp");
	if ((r = fsd_sync_image(sd, img)) < 0)
		return r;
	return fsd_rmdir_image(sd, img);
}

static int fsd_create_file(cp_sd *sd, int dfd, const char *name,
			   uint64_t size, bool prealloc)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
				       O_CLOEXEC, SD_FILE_MODE);
	int r;

	if (fd < 0)
		return cp_error(-errno, "%s: %s", name, strerror(errno));
	r = sd_own(fd, name, SD_FILE_MODE, sd->disk_uid, sd->disk_gid);
	if (r == 0 && size && prealloc) {
		r = posix_fallocate(fd, 0, (off_t)size);
		if (r)
			r = cp_error(-r, "%s: preallocate %llu bytes: %s", name,
				     (unsigned long long)size, strerror(r));
	} else if (r == 0 && size && ftruncate(fd, (off_t)size) < 0) {
		r = cp_error(-errno, "%s: %s", name, strerror(errno));
	}
	if (r == 0 && fsync(fd) < 0)
		r = cp_error(-errno, "%s: fsync: %s", name, strerror(errno));
	close(fd);
	if (r < 0)
		unlinkat(dfd, name, 0);
	return r;
}

static int fsd_vol_create(cp_sd *sd, const struct sd_vol_spec *s)
{
	char name[CP_UUID_STR_LEN + 8], lname[CP_UUID_STR_LEN + 8];
	char lease[PATH_MAX];
	int dfd, r = fsd_mkimage(sd, s->img_uuid);

	if (r < 0)
		return r;
	dfd = fsd_dirfd(sd, s->img_uuid);
	if (dfd < 0)
		return dfd;
	fsd_name(name, sizeof(name), s->vol_uuid, "");
	fsd_name(lname, sizeof(lname), s->vol_uuid, ".lease");
	fsd_path(sd, lease, sizeof(lease), s->img_uuid, s->vol_uuid, ".lease");
	/* raw: the file has the disk's size, allocated only when the volume
	 * is preallocated; qcow2 files start empty (size 0) */
	r = fsd_create_file(sd, dfd, name, s->size,
			    s->allocation == CP_VOL_ALLOC_PREALLOCATED);
	if (r == -EEXIST)
		r = cp_error(-EEXIST, "domain %s: volume %s exists", sd->uuid,
			     s->vol_uuid);
	if (r < 0)
		goto out;
	unlinkat(dfd, lname, 0);
	/* the lease area is allocated: sanlock must be able to write it on
	 * a full file system */
	r = fsd_create_file(sd, dfd, lname, FILESD_LEASE_SIZE, true);
	if (r == 0)
		r = sd_format_vol_lease(sd, s->vol_uuid, lease, 0);
	if (r == 0)
		r = fsd_fsync_fd(dfd, lease);
	if (r < 0) {
		unlinkat(dfd, name, 0);
		unlinkat(dfd, lname, 0);
	}
out:
	close(dfd);
	return r;
}

static int fsd_vol_remove(cp_sd *sd, const char *img, const char *vol)
{
	int r;

	if ((r = fsd_unlink(sd, img, vol, "")) < 0 ||
	    (r = fsd_unlink(sd, img, vol, ".lease")) < 0 ||
	    (r = fsd_sync_image(sd, img)) < 0)
		return r;
	return fsd_rmdir_image(sd, img);
}

static int fsd_vol_exists(cp_sd *sd, const char *img, const char *vol)
{
	int fd = fsd_open_file(sd, img, vol, "", O_PATH);

	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	close(fd);
	return 1;
}

static int fsd_vol_size(cp_sd *sd, const char *img, const char *vol,
			struct cp_vol_size *out)
{
	struct stat st;
	int fd = fsd_open_file(sd, img, vol, "", O_PATH);

	if (fd < 0)
		return cp_error_prefix(fd, "domain %s: volume %s", sd->uuid, vol);
	if (fstat(fd, &st) < 0) {
		int err = -errno;
		close(fd);
		return cp_error(err, "domain %s: volume %s: %s", sd->uuid, vol,
				strerror(-err));
	}
	close(fd);
	out->apparent = (uint64_t)st.st_size;
	out->allocated = (uint64_t)st.st_blocks * 512;
	return 0;
}

/* Files grow as the qcow engine writes and shrink when it truncates; the
 * storage needs no extension.  Report the current size. */
static int fsd_vol_resize(cp_sd *sd, const char *img, const char *vol,
			  uint64_t size, bool shrink, uint64_t *new_size)
{
	struct cp_vol_size s;
	int r = fsd_vol_size(sd, img, vol, &s);

	if (r == 0 && new_size)
		*new_size = s.apparent;
	return r;
}

static int fsd_vol_set_parent(cp_sd *sd, const char *img, const char *vol,
			      const char *parent)
{
	return 0;
}

static int fsd_vol_open(cp_sd *sd, const char *img, const char *vol, bool rw,
			cp_bdev **out)
{
	char path[PATH_MAX];
	int fd = fsd_open_file(sd, img, vol, "", O_PATH), r;

	if (fd < 0)
		return fd;
	fsd_path(sd, path, sizeof(path), img, vol, "");
	r = fsd_bdev_open_fd(fd, path, rw, out);
	close(fd);
	return r;
}

static int fsd_vol_refresh(cp_sd *sd, const char *img, const char *vol,
			   cp_bdev *dev)
{
	return 0;
}

/* Paths handed to others (sanlock, local tools, clients) are checked
 * first: a regular file beneath the domain, no link on the way. */
static int fsd_checked_path(cp_sd *sd, const char *img, const char *vol,
			    const char *suffix, char *out, size_t len)
{
	int fd, r = fsd_path(sd, out, len, img, vol, suffix);

	if (r < 0)
		return r;
	fd = fsd_open_file(sd, img, vol, suffix, O_PATH);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

static int fsd_vol_lease(cp_sd *sd, const char *img, const char *vol,
			 char *path, size_t len, uint64_t *offset)
{
	*offset = 0;
	return fsd_checked_path(sd, img, vol, ".lease", path, len);
}

static int fsd_vol_path(cp_sd *sd, const char *img, const char *vol,
			char *out, size_t len)
{
	return fsd_checked_path(sd, img, vol, "", out, len);
}

/* dom_md/<name> as a read-write O_DIRECT device. */
static int fsd_dommd_open(cp_sd *sd, const char *name, cp_bdev **out)
{
	char path[PATH_MAX];
	int fd, r;

	snprintf(path, sizeof(path), "dom_md/%s", name);
	fd = sd_openat(sd->dom_fd, sd->dir, path, O_PATH, 0);
	if (fd < 0)
		return fd;
	snprintf(path, sizeof(path), "%s/dom_md/%s", sd->dir, name);
	r = fsd_bdev_open_fd(fd, path, true, out);
	close(fd);
	return r;
}

static int fsd_tasks_open(cp_sd *sd, cp_bdev **out)
{
	return fsd_dommd_open(sd, "tasks", out);
}

static int fsd_mailbox_open(cp_sd *sd, bool outbox, cp_bdev **out)
{
	return fsd_dommd_open(sd, outbox ? "outbox" : "inbox", out);
}

const struct sd_backend cp_sd_file_backend = {
	.create = fsd_create,
	.destroy = fsd_destroy,
	.open = fsd_open,
	.close = fsd_close,
	.read_md = fsd_read_md,
	.write_md = fsd_write_md,
	.stats = fsd_stats,
	.extend = fsd_extend,
	.list_images = fsd_list_images,
	.list_volumes = fsd_list_volumes,
	.md_read = fsd_md_read,
	.md_write = fsd_md_write,
	.md_remove = fsd_md_remove,
	.vol_create = fsd_vol_create,
	.vol_remove = fsd_vol_remove,
	.vol_exists = fsd_vol_exists,
	.vol_resize = fsd_vol_resize,
	.vol_set_parent = fsd_vol_set_parent,
	.vol_size = fsd_vol_size,
	.vol_open = fsd_vol_open,
	.vol_refresh = fsd_vol_refresh,
	.vol_lease = fsd_vol_lease,
	.vol_path = fsd_vol_path,
	.tasks_open = fsd_tasks_open,
	.mailbox_open = fsd_mailbox_open,
};
