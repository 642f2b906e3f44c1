/* spm/filesd.c - the file domain backend: a directory on any POSIX file
 * system (a local folder, NFS, ...), laid out as docs/formats/domain.md
 * says.  Records are written by domain.c (write new, fsync, rename, fsync
 * the directory); volume data is a file, sparse or fallocated; a volume's
 * lease is a 1 MiB file beside it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

static int fsd_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return cp_error(-errno, "%s: %s", dir, strerror(errno));
	if (fsync(fd) < 0)
		r = cp_error(-errno, "%s: fsync: %s", dir, strerror(errno));
	close(fd);
	return r;
}

static int fsd_create(const struct cp_sd_create_opts *o,
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

static int fsd_open(cp_sd *sd)
{
	int r = fsd_read_md(sd, &sd->md);

	if (r < 0)
		return r;
	snprintf(sd->ids_path, sizeof(sd->ids_path), "%s/dom_md/ids", sd->dir);
	snprintf(sd->leases_path, sizeof(sd->leases_path), "%s/dom_md/leases",
		 sd->dir);
	sd->ids_offset = 0;
	sd->leases_offset = 0;
	return 0;
}

static void fsd_close(cp_sd *sd)
{
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

static int uuid_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cp_uuid_str *)a)->s,
		      ((const struct cp_uuid_str *)b)->s);
}

static int fsd_list_images(cp_sd *sd, struct cp_uuid_str **out, size_t *n)
{
	char path[PATH_MAX];
	struct cp_uuid_str *v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	DIR *dp;
	int r = fsd_path(sd, path, sizeof(path), NULL, NULL, NULL);

	if (r < 0)
		return r;
	dp = opendir(path);
	if (!dp)
		return cp_error(-errno, "domain %s: %s: %s", sd->uuid, path,
				strerror(errno));
	while ((de = readdir(dp))) {
		if (strlen(de->d_name) != CP_UUID_STR_LEN ||
		    !cp_uuid_valid(de->d_name))
			continue;
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct cp_uuid_str *nv = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				closedir(dp);
				free(v);
				return cp_error(-ENOMEM, "out of memory");
			}
			v = nv;
			cap = nc;
		}
		strcpy(v[cnt++].s, de->d_name);
	}
	closedir(dp);
	if (cnt)
		qsort(v, cnt, sizeof(*v), uuid_cmp);
	*out = v;
	*n = cnt;
	return 0;
}

static int fsd_list_volumes(cp_sd *sd, const char *img,
			    struct cp_uuid_str **out, size_t *n)
{
	char path[PATH_MAX];
	struct stat st;

	fsd_path(sd, path, sizeof(path), img, NULL, NULL);
	if (stat(path, &st) < 0 && errno == ENOENT) {
		*out = NULL;
		*n = 0;
		return 0;  /* no such image: no volumes */
	}
	return cp_domain_list_volumes(sd->root, sd->uuid, img, out, n);
}

static int fsd_md_read(cp_sd *sd, const char *img, const char *vol,
		       struct cp_volmeta *out)
{
	char path[PATH_MAX];
	struct stat st;
	int r = fsd_path(sd, path, sizeof(path), img, vol, ".meta");

	if (r < 0)
		return r;
	if (stat(path, &st) < 0 && errno == ENOENT)
		return cp_error(-ENOENT, "domain %s: volume %s of image %s not found",
				sd->uuid, vol, img);
	r = cp_volmeta_read(path, out);
	if (r < 0)
		return r;
	if (strcasecmp(out->vol_uuid, vol) || strcasecmp(out->img_uuid, img))
		return cp_error(-EUCLEAN, "%s: record names volume %s of image %s",
				path, out->vol_uuid, out->img_uuid);
	return 0;
}

static int fsd_mkimage(cp_sd *sd, const char *img)
{
	char path[PATH_MAX];
	int r = fsd_path(sd, path, sizeof(path), img, NULL, NULL);

	if (r < 0)
		return r;
	if (mkdir(path, 0755) == 0) {
		char parent[PATH_MAX];
		fsd_path(sd, parent, sizeof(parent), NULL, NULL, NULL);
		return fsd_fsync_dir(parent);
	}
	if (errno == EEXIST)
		return 0;
	return cp_error(-errno, "%s: %s", path, strerror(errno));
}

static int fsd_md_write(cp_sd *sd, const struct cp_volmeta *m)
{
	char path[PATH_MAX];
	int r = fsd_mkimage(sd, m->img_uuid);

	if (r < 0)
		return r;
	r = fsd_path(sd, path, sizeof(path), m->img_uuid, m->vol_uuid, ".meta");
	if (r < 0)
		return r;
	return cp_volmeta_write(path, m);
}

static int fsd_unlink(cp_sd *sd, const char *img, const char *vol,
		      const char *suffix)
{
	char path[PATH_MAX];
	int r = fsd_path(sd, path, sizeof(path), img, vol, suffix);

	if (r < 0)
		return r;
	if (unlink(path) < 0 && errno != ENOENT)
		return cp_error(-errno, "%s: %s", path, strerror(errno));
	return 0;
}

/* Remove the image directory once it is empty (fsyncing images/). */
static int fsd_rmdir_image(cp_sd *sd, const char *img)
{
	char path[PATH_MAX], parent[PATH_MAX];

	fsd_path(sd, path, sizeof(path), img, NULL, NULL);
	fsd_path(sd, parent, sizeof(parent), NULL, NULL, NULL);
	if (rmdir(path) == 0)
		return fsd_fsync_dir(parent);
	if (errno == ENOENT || errno == ENOTEMPTY || errno == EEXIST)
		return 0;
	return cp_error(-errno, "%s: %s", path, strerror(errno));
}

static int fsd_md_remove(cp_sd *sd, const char *img, const char *vol)
{
	char dir[PATH_MAX];
	int r = fsd_unlink(sd, img, vol, ".meta");

	if (r < 0)
		return r;
	fsd_unlink(sd, img, vol, ".meta.tmp");
	fsd_path(sd, dir, sizeof(dir), img, NULL, NULL);
	if (access(dir, F_OK) == 0 && (r = fsd_fsync_dir(dir)) < 0)
		return r;
	return fsd_rmdir_image(sd, img);
}

static int fsd_create_file(const char *path, uint64_t size, bool prealloc)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	int r = 0;

	if (fd < 0)
		return cp_error(-errno, "%s: %s", path, strerror(errno));
	if (size && prealloc) {
		r = posix_fallocate(fd, 0, (off_t)size);
		if (r)
			r = cp_error(-r, "%s: preallocate %llu bytes: %s", path,
				     (unsigned long long)size, strerror(r));
	} else if (size && ftruncate(fd, (off_t)size) < 0) {
		r = cp_error(-errno, "%s: %s", path, strerror(errno));
	}
	if (r == 0 && fsync(fd) < 0)
		r = cp_error(-errno, "%s: fsync: %s", path, strerror(errno));
	close(fd);
	if (r < 0)
		unlink(path);
	return r;
}

static int fsd_vol_create(cp_sd *sd, const struct sd_vol_spec *s)
{
	char path[PATH_MAX], lease[PATH_MAX], dir[PATH_MAX];
	int r = fsd_mkimage(sd, s->img_uuid);

	if (r < 0)
		return r;
	fsd_path(sd, path, sizeof(path), s->img_uuid, s->vol_uuid, "");
	fsd_path(sd, lease, sizeof(lease), s->img_uuid, s->vol_uuid, ".lease");
	fsd_path(sd, dir, sizeof(dir), s->img_uuid, NULL, NULL);
	/* raw: the file has the disk's size, allocated only when the volume
	 * is preallocated; qcow2 files start empty (size 0) */
	r = fsd_create_file(path, s->size,
			    s->allocation == CP_VOL_ALLOC_PREALLOCATED);
	if (r == -EEXIST)
		return cp_error(-EEXIST, "domain %s: volume %s exists", sd->uuid,
				s->vol_uuid);
	if (r < 0)
		return r;
	unlink(lease);
	r = fsd_create_file(lease, FILESD_LEASE_SIZE, false);
	if (r == 0)
		r = sd_format_vol_lease(sd, s->vol_uuid, lease, 0);
	if (r == 0)
		r = fsd_fsync_dir(dir);
	if (r < 0) {
		unlink(path);
		unlink(lease);
	}
	return r;
}

static int fsd_vol_remove(cp_sd *sd, const char *img, const char *vol)
{
	char dir[PATH_MAX];
	int r;

	if ((r = fsd_unlink(sd, img, vol, "")) < 0 ||
	    (r = fsd_unlink(sd, img, vol, ".lease")) < 0)
		return r;
	fsd_path(sd, dir, sizeof(dir), img, NULL, NULL);
	if (access(dir, F_OK) == 0 && (r = fsd_fsync_dir(dir)) < 0)
		return r;
	return fsd_rmdir_image(sd, img);
}

static int fsd_vol_exists(cp_sd *sd, const char *img, const char *vol)
{
	char path[PATH_MAX];
	struct stat st;

	fsd_path(sd, path, sizeof(path), img, vol, "");
	if (stat(path, &st) == 0)
		return 1;
	if (errno == ENOENT)
		return 0;
	return cp_error(-errno, "%s: %s", path, strerror(errno));
}

static int fsd_vol_size(cp_sd *sd, const char *img, const char *vol,
			struct cp_vol_size *out)
{
	char path[PATH_MAX];
	struct stat st;

	fsd_path(sd, path, sizeof(path), img, vol, "");
	if (stat(path, &st) < 0)
		return cp_error(-errno, "domain %s: volume %s: %s", sd->uuid, vol,
				strerror(errno));
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
	struct cp_bdev_opts bo;

	fsd_path(sd, path, sizeof(path), img, vol, "");
	cp_bdev_opts_init(&bo);
	bo.cache = CP_CACHE_NONE;
	bo.readonly = !rw;
	return cp_bdev_open(path, &bo, out);
}

static int fsd_vol_refresh(cp_sd *sd, const char *img, const char *vol,
			   cp_bdev *dev)
{
	return 0;
}

static int fsd_vol_lease(cp_sd *sd, const char *img, const char *vol,
			 char *path, size_t len, uint64_t *offset)
{
	*offset = 0;
	return fsd_path(sd, path, len, img, vol, ".lease");
}

static int fsd_vol_path(cp_sd *sd, const char *img, const char *vol,
			char *out, size_t len)
{
	return fsd_path(sd, out, len, img, vol, "");
}

static int fsd_tasks_open(cp_sd *sd, cp_bdev **out)
{
	char path[PATH_MAX];
	struct cp_bdev_opts bo;

	snprintf(path, sizeof(path), "%s/dom_md/tasks", sd->dir);
	cp_bdev_opts_init(&bo);
	bo.cache = CP_CACHE_NONE;
	return cp_bdev_open(path, &bo, out);
}

const struct sd_backend cp_sd_file_backend = {
	.create = fsd_create,
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
};
