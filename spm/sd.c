/* spm/sd.c - storage domains of both types behind one handle.
 *
 * What is common to file and block domains lives here: option handling,
 * the record's generation compare-and-bump, opening image chains whose
 * backing names are volume UUIDs, and the locations of leases.  The rest
 * is dispatched to the backend (sd_int.h): filesd.c or blocksd.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "sd_int.h"

static const struct sd_backend *sd_backend_of(enum cp_domain_type t)
{
	switch (t) {
	case CP_DOMAIN_TYPE_FILE:
		return &cp_sd_file_backend;
	case CP_DOMAIN_TYPE_BLOCK:
		return &cp_sd_block_backend;
	}
	return NULL;
}

CP_EXPORT void cp_sd_loc_init(struct cp_sd_loc *loc)
{
	memset(loc, 0, sizeof(*loc));
	loc->size = sizeof(*loc);
	loc->type = CP_DOMAIN_TYPE_FILE;
}

CP_EXPORT void cp_sd_create_opts_init(struct cp_sd_create_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	cp_sd_loc_init(&o->loc);
	o->io_timeout = 10;
	o->chunk_size = CP_SD_CHUNK_DEFAULT;
	o->max_volumes = CP_SD_MAX_VOLUMES_DEFAULT;
	o->extent_size = 128ull << 20;
}

static int sd_check_loc(const struct cp_sd_loc *loc)
{
	if (!loc)
		return cp_error(-EINVAL, "domain location not given");
	if (loc->type == CP_DOMAIN_TYPE_FILE && !loc->root)
		return cp_error(-EINVAL, "file domain: root directory not given");
	if (!sd_backend_of(loc->type))
		return cp_error(-EINVAL, "domain type %d is not file (1) or block (2)",
				(int)loc->type);
	return 0;
}

CP_EXPORT int cp_sd_create(const struct cp_sd_create_opts *opts,
			   struct cp_domain_md *out)
{
	CP_API_ENTER();
	struct cp_sd_create_opts o;
	char uuid[CP_UUID_STR_LEN + 1];
	int r;

	r = SD_OPTS_COPY(o, opts, cp_sd_create_opts_init, master,
			 "domain create");
	if (r < 0)
		return r;
	if ((r = sd_check_loc(&o.loc)) < 0)
		return r;
	if (o.io_timeout < 1 || o.io_timeout > 255)
		return cp_error(-EINVAL, "domain create: io_timeout %u is not in 1..255",
				o.io_timeout);
	if (o.chunk_size == 0 || o.chunk_size % (1u << 20))
		return cp_error(-EINVAL,
				"domain create: chunk size %" PRIu64
				" is not a positive multiple of 1 MiB", o.chunk_size);
	if (!o.pool_uuid || !cp_uuid_valid(o.pool_uuid))
		return cp_error(-EINVAL, "domain create: pool UUID '%s' is not valid",
				o.pool_uuid ? o.pool_uuid : "");
	if (!o.name || !o.name[0] || strlen(o.name) > CP_DOMAIN_NAME_MAX)
		return cp_error(-EINVAL, "domain create: name must be 1..%d bytes",
				CP_DOMAIN_NAME_MAX);
	if (o.dom_uuid) {
		if (!cp_uuid_valid(o.dom_uuid))
			return cp_error(-EINVAL, "domain UUID '%s' is not valid",
					o.dom_uuid);
	} else {
		if ((r = cp_uuid_generate(uuid)) < 0)
			return r;
		o.dom_uuid = uuid;
	}
	if (o.loc.type == CP_DOMAIN_TYPE_BLOCK) {
		if (!o.devices || !o.devices[0])
			return cp_error(-EINVAL,
					"block domain %s: no device given", o.dom_uuid);
		if (o.max_volumes < 1 || o.max_volumes > 100000)
			return cp_error(-EINVAL,
					"block domain %s: max_volumes %u is not in 1..100000",
					o.dom_uuid, o.max_volumes);
	}
	return sd_backend_of(o.loc.type)->create(&o, out);
}

int sd_destroy(const struct cp_sd_loc *loc, const char *uuid)
{
	int r = sd_check_loc(loc);

	if (r < 0)
		return r;
	if (!uuid || !cp_uuid_valid(uuid))
		return cp_error(-EINVAL, "domain UUID '%s' is not valid",
				uuid ? uuid : "");
	return sd_backend_of(loc->type)->destroy(loc, uuid);
}

static char *sd_strdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void sd_free(cp_sd *sd)
{
	if (!sd)
		return;
	free(sd->lvm_path);
	free(sd->lvm_system_dir);
	if (sd->lvm_devices) {
		for (char **d = sd->lvm_devices; *d; d++)
			free(*d);
		free(sd->lvm_devices);
	}
	pthread_mutex_destroy(&sd->lock);
	free(sd);
}

CP_EXPORT int cp_sd_open(const struct cp_sd_loc *loc, const char *dom_uuid,
			 cp_sd **out)
{
	CP_API_ENTER();
	cp_sd *sd;
	int r;

	if ((r = sd_check_loc(loc)) < 0)
		return r;
	if (!dom_uuid || !cp_uuid_valid(dom_uuid))
		return cp_error(-EINVAL, "domain UUID '%s' is not valid",
				dom_uuid ? dom_uuid : "");
	sd = calloc(1, sizeof(*sd));
	if (!sd)
		return cp_error(-ENOMEM, "out of memory");
	pthread_mutex_init(&sd->lock, NULL);
	sd->type = loc->type;
	sd->ops = sd_backend_of(loc->type);
	strcpy(sd->uuid, dom_uuid);
	if (loc->type == CP_DOMAIN_TYPE_FILE) {
		if (snprintf(sd->root, sizeof(sd->root), "%s", loc->root) >=
			    (int)sizeof(sd->root) ||
		    snprintf(sd->dir, sizeof(sd->dir), "%s/%s", loc->root,
			     dom_uuid) >= (int)sizeof(sd->dir)) {
			sd_free(sd);
			return cp_error(-ENAMETOOLONG, "%s: path too long",
					loc->root);
		}
	}
	cp_lvm_opts_init(&sd->lvm);
	if (loc->lvm) {
		const struct cp_lvm_opts *l = loc->lvm;
		size_t n = 0;

		sd->lvm.timeout_ms = l->timeout_ms;
		sd->lvm_path = sd_strdup(l->lvm_path);
		sd->lvm_system_dir = sd_strdup(l->system_dir);
		sd->lvm.lvm_path = sd->lvm_path ? sd->lvm_path : sd->lvm.lvm_path;
		sd->lvm.system_dir = sd->lvm_system_dir;
		if (l->devices) {
			while (l->devices[n])
				n++;
			sd->lvm_devices = calloc(n + 1, sizeof(char *));
			if (!sd->lvm_devices) {
				sd_free(sd);
				return cp_error(-ENOMEM, "out of memory");
			}
			for (size_t i = 0; i < n; i++) {
				sd->lvm_devices[i] = strdup(l->devices[i]);
				if (!sd->lvm_devices[i]) {
					sd_free(sd);
					return cp_error(-ENOMEM, "out of memory");
				}
			}
			sd->lvm.devices = (const char *const *)sd->lvm_devices;
		}
	}
	if (loc->size >= offsetof(struct cp_sd_loc, disk_gid) +
				 sizeof(loc->disk_gid)) {
		sd->disk_uid = loc->disk_uid;
		sd->disk_gid = loc->disk_gid;
	}
	r = sd->ops->open(sd);
	if (r < 0) {
		sd_free(sd);
		return r;
	}
	*out = sd;
	return 0;
}

CP_EXPORT void cp_sd_close(cp_sd *sd)
{
	if (!sd)
		return;
	sd->ops->close(sd);
	sd_free(sd);
}

CP_EXPORT const struct cp_domain_md *cp_sd_md(const cp_sd *sd)
{
	return &sd->md;
}

CP_EXPORT int cp_sd_refresh(cp_sd *sd)
{
	CP_API_ENTER();
	struct cp_domain_md d;
	int r = sd->ops->read_md(sd, &d);

	if (r < 0)
		return r;
	if (strcmp(d.dom_uuid, sd->uuid) != 0)
		return cp_error(-EUCLEAN, "domain %s: record names domain %s",
				sd->uuid, d.dom_uuid);
	pthread_mutex_lock(&sd->lock);
	sd->md = d;
	pthread_mutex_unlock(&sd->lock);
	return 0;
}

CP_EXPORT int cp_sd_md_update(cp_sd *sd, uint64_t expected_gen,
			      struct cp_domain_md *d)
{
	CP_API_ENTER();
	struct cp_domain_md cur;
	int r = sd->ops->read_md(sd, &cur);

	if (r < 0)
		return r;
	if (cur.generation != expected_gen)
		return cp_error(-ESTALE,
				"domain %s: generation %" PRIu64 " expected, %" PRIu64
				" on disk", sd->uuid, expected_gen, cur.generation);
	if (strcmp(d->dom_uuid, sd->uuid) != 0 || d->type != sd->type)
		return cp_error(-EINVAL, "domain %s: record names another domain",
				sd->uuid);
	d->generation = expected_gen + 1;
	r = sd->ops->write_md(sd, d);
	if (r < 0)
		return r;
	pthread_mutex_lock(&sd->lock);
	sd->md = *d;
	pthread_mutex_unlock(&sd->lock);
	return 0;
}

CP_EXPORT int cp_sd_stats(cp_sd *sd, struct cp_sd_stats *out)
{
	CP_API_ENTER();
	return sd->ops->stats(sd, out);
}

CP_EXPORT int cp_sd_extend(cp_sd *sd, const char *device)
{
	CP_API_ENTER();
	if (sd->type != CP_DOMAIN_TYPE_BLOCK)
		return cp_error(-ENOTSUP,
				"domain %s is a file domain: only block domains take devices",
				sd->uuid);
	if (!device || device[0] != '/')
		return cp_error(-EINVAL, "domain %s: device must be an absolute path",
				sd->uuid);
	return sd->ops->extend(sd, device);
}

CP_EXPORT int cp_sd_lockspace(cp_sd *sd, struct cp_lockspace_opts *ls)
{
	CP_API_ENTER();
	cp_lockspace_opts_init(ls);
	ls->name = sd->uuid;
	ls->path = sd->ids_path;
	ls->offset = sd->ids_offset;
	ls->io_timeout = sd->md.io_timeout;
	return 0;
}

CP_EXPORT int cp_sd_mailbox_open(cp_sd *sd, bool outbox, cp_bdev **out)
{
	CP_API_ENTER();
	return sd->ops->mailbox_open(sd, outbox, out);
}

static _Thread_local char sd_lease_path[PATH_MAX];

CP_EXPORT int cp_sd_lease(cp_sd *sd, const char *img_uuid,
			  const char *vol_uuid, struct cp_lease_opts *lease)
{
	CP_API_ENTER();
	uint64_t off;
	int r;

	cp_lease_opts_init(lease);
	lease->lockspace = sd->uuid;
	if (!vol_uuid) {
		lease->name = "SDM";
		lease->path = sd->leases_path;
		lease->offset = sd->leases_offset + CP_SD_SDM_LEASE_OFFSET;
		return 0;
	}
	if (!cp_uuid_valid(img_uuid) || !cp_uuid_valid(vol_uuid))
		return cp_error(-EINVAL, "domain %s: invalid image or volume UUID",
				sd->uuid);
	r = sd->ops->vol_lease(sd, img_uuid, vol_uuid, sd_lease_path,
			       sizeof(sd_lease_path), &off);
	if (r < 0)
		return r;
	lease->name = vol_uuid;
	lease->path = sd_lease_path;
	lease->offset = off;
	return 0;
}

int sd_format_vol_lease(cp_sd *sd, const char *vol, const char *path,
			uint64_t offset)
{
	struct cp_lease_opts l;

	cp_lease_opts_init(&l);
	l.lockspace = sd->uuid;
	l.name = vol;
	l.path = path;
	l.offset = offset;
	return cp_lease_format(&l);
}

static int sd_check_img(cp_sd *sd, const char *img)
{
	if (!img || !cp_uuid_valid(img))
		return cp_error(-EINVAL, "domain %s: image UUID '%s' is not valid",
				sd->uuid, img ? img : "");
	return 0;
}

static int sd_check_vol(cp_sd *sd, const char *img, const char *vol)
{
	int r = sd_check_img(sd, img);

	if (r < 0)
		return r;
	if (!vol || !cp_uuid_valid(vol))
		return cp_error(-EINVAL, "domain %s: volume UUID '%s' is not valid",
				sd->uuid, vol ? vol : "");
	return 0;
}

CP_EXPORT int cp_sd_list_images(cp_sd *sd, struct cp_uuid_str **out, size_t *n)
{
	CP_API_ENTER();
	return sd->ops->list_images(sd, out, n);
}

CP_EXPORT int cp_sd_list_volumes(cp_sd *sd, const char *img_uuid,
				 struct cp_uuid_str **out, size_t *n)
{
	CP_API_ENTER();
	int r = sd_check_img(sd, img_uuid);

	return r < 0 ? r : sd->ops->list_volumes(sd, img_uuid, out, n);
}

CP_EXPORT int cp_sd_vol_md(cp_sd *sd, const char *img_uuid,
			   const char *vol_uuid, struct cp_volmeta *out)
{
	CP_API_ENTER();
	int r = sd_check_vol(sd, img_uuid, vol_uuid);

	return r < 0 ? r : sd->ops->md_read(sd, img_uuid, vol_uuid, out);
}

CP_EXPORT int cp_sd_vol_size(cp_sd *sd, const char *img_uuid,
			     const char *vol_uuid, struct cp_vol_size *out)
{
	CP_API_ENTER();
	int r = sd_check_vol(sd, img_uuid, vol_uuid);

	return r < 0 ? r : sd->ops->vol_size(sd, img_uuid, vol_uuid, out);
}

CP_EXPORT int cp_sd_vol_path(cp_sd *sd, const char *img_uuid,
			     const char *vol_uuid, char *out, size_t outlen)
{
	CP_API_ENTER();
	int r = sd_check_vol(sd, img_uuid, vol_uuid);

	return r < 0 ? r : sd->ops->vol_path(sd, img_uuid, vol_uuid, out, outlen);
}

/* ---- image chains ---------------------------------------------------------- */

struct sd_chain_ctx {
	cp_sd *sd;
	bool backing_rw;
	struct cp_sd_chain *c;
	char img[CP_UUID_STR_LEN + 1];   /* image of the layer naming it */
};

/* Parse a backing name: "<vol>" (same image) or "../<img>/<vol>". */
int sd_parse_backing(const char *name, const char *cur_img, char *img,
		     char *vol)
{
	if (cp_uuid_valid(name) && strlen(name) == CP_UUID_STR_LEN) {
		strcpy(img, cur_img);
		strcpy(vol, name);
		return 0;
	}
	if (strlen(name) == 3 + CP_UUID_STR_LEN + 1 + CP_UUID_STR_LEN &&
	    strncmp(name, "../", 3) == 0 && name[3 + CP_UUID_STR_LEN] == '/') {
		memcpy(img, name + 3, CP_UUID_STR_LEN);
		img[CP_UUID_STR_LEN] = '\0';
		strcpy(vol, name + 3 + CP_UUID_STR_LEN + 1);
		if (cp_uuid_valid(img) && cp_uuid_valid(vol))
			return 0;
	}
	return cp_error(-EUCLEAN,
			"backing file name '%s' is not a volume of this domain "
			"('<volume>' or '../<image>/<volume>')", name);
}

static int sd_open_backing(void *opaque, const char *name, cp_bdev **out)
{
	struct sd_chain_ctx *x = opaque;
	char img[CP_UUID_STR_LEN + 1], vol[CP_UUID_STR_LEN + 1];
	int r;

	if (x->c->ndevs >= CP_SD_CHAIN_MAX)
		return cp_error(-ELOOP, "domain %s: chain deeper than %d",
				x->sd->uuid, CP_SD_CHAIN_MAX);
	r = sd_parse_backing(name, x->img, img, vol);
	if (r < 0)
		return r;
	/* a backing name must be a volume of this domain (its record there),
	 * never just a file that happens to exist */
	struct cp_volmeta bm;
	r = x->sd->ops->md_read(x->sd, img, vol, &bm);
	if (r < 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", cp_last_error());
		return cp_error(r == -ENOENT ? -EUCLEAN : r, "backing file '%s' "
				"is not a volume of domain %s: %s", name,
				x->sd->uuid, why);
	}
	r = x->sd->ops->vol_open(x->sd, img, vol, x->backing_rw, out);
	if (r < 0)
		return r;
	x->c->devs[x->c->ndevs++] = *out;
	/* Bare names are always in the top's image: only templates live in
	 * other images, and a template has no backing file. */
	return 0;
}

CP_EXPORT int cp_sd_open_image(cp_sd *sd, const char *img_uuid,
			       const char *vol_uuid, bool readwrite,
			       struct cp_sd_chain *out)
{
	CP_API_ENTER();
	return sd_open_chain(sd, img_uuid, vol_uuid, readwrite, false, false,
			     out);
}

int sd_open_chain(cp_sd *sd, const char *img_uuid, const char *vol_uuid,
		  bool readwrite, bool backing_rw, bool force_share,
		  struct cp_sd_chain *out)
{
	struct cp_volmeta m;
	struct cp_open_opts oo;
	struct sd_chain_ctx *x;
	cp_bdev *dev;
	char name[2 * CP_UUID_STR_LEN + 8];
	int r;

	memset(out, 0, sizeof(*out));
	r = cp_sd_vol_md(sd, img_uuid, vol_uuid, &m);
	if (r < 0)
		return r;
	r = sd->ops->vol_open(sd, img_uuid, vol_uuid, readwrite, &dev);
	if (r < 0)
		return r;
	out->devs[out->ndevs++] = dev;
	/* the image keeps the resolver for later reopens (rebase, commit) */
	x = calloc(1, sizeof(*x));
	if (!x) {
		cp_sd_close_image(out);
		return cp_error(-ENOMEM, "out of memory");
	}
	out->priv = x;
	x->sd = sd;
	x->backing_rw = backing_rw;
	x->c = out;
	strcpy(x->img, img_uuid);
	cp_open_opts_init(&oo);
	oo.format = m.format == CP_VOL_FORMAT_COW ? CP_FMT_QCOW2 : CP_FMT_RAW;
	oo.readonly = !readwrite;
	oo.force_share = force_share;
	oo.cache = CP_CACHE_NONE;
	oo.open_backing = sd_open_backing;
	oo.open_backing_opaque = x;
	snprintf(name, sizeof(name), "%s/%s", img_uuid, vol_uuid);
	r = cp_image_open_dev(dev, name, &oo, &out->img);
	if (r < 0) {
		cp_sd_close_image(out);
		return cp_error_prefix(r, "domain %s: volume %s", sd->uuid,
				       vol_uuid);
	}
	return 0;
}

int sd_check_chain(cp_sd *sd, const char *img, const char *vol)
{
	struct cp_sd_chain c;
	/* a look, not a use: share everything, so a chain another process
	 * (or host) has open for writing is still checked, and a writer
	 * elsewhere is refused by the volume lease, not by this open */
	int r = sd_open_chain(sd, img, vol, false, false, true, &c);

	if (r < 0)
		return r;
	return cp_sd_close_image(&c);
}

CP_EXPORT int cp_sd_close_image(struct cp_sd_chain *c)
{
	CP_API_ENTER();
	int r = 0;

	if (c->img)
		r = cp_image_close(c->img);
	c->img = NULL;
	for (unsigned i = c->ndevs; i-- > 0;)
		cp_bdev_close(c->devs[i]);
	c->ndevs = 0;
	free(c->priv);
	c->priv = NULL;
	return r;
}

/* ---- chains ------------------------------------------------------------------ */

/* Order m[use] into ord; 0 or -EUCLEAN. */
static int sd_order_chain(cp_sd *sd, const char *img, struct cp_volmeta *m,
			  const bool *use, size_t nv, struct cp_volmeta *ord,
			  size_t *nout)
{
	size_t k = 0, total = 0;
	const char *prev;

	for (size_t i = 0; i < nv; i++) {
		bool inside = false;
		if (!use[i])
			continue;
		total++;
		for (size_t j = 0; j < nv; j++)
			if (use[j] && !strcasecmp(m[i].parent_uuid, m[j].vol_uuid))
				inside = true;
		if (!inside) {
			if (k)
				return cp_error(-EUCLEAN,
						"domain %s: image %s has two base volumes (%s, %s)",
						sd->uuid, img, ord[0].vol_uuid,
						m[i].vol_uuid);
			ord[k++] = m[i];
		}
	}
	if (k == 0)
		return cp_error(-EUCLEAN, "domain %s: image %s: volumes form a loop",
				sd->uuid, img);
	prev = ord[0].vol_uuid;
	while (k < total) {
		size_t found = nv, cnt = 0;
		for (size_t j = 0; j < nv; j++)
			if (use[j] && !strcasecmp(m[j].parent_uuid, prev)) {
				found = j;
				cnt++;
			}
		if (cnt != 1)
			return cp_error(-EUCLEAN,
					"domain %s: image %s: volume %s has %zu children, "
					"expected 1", sd->uuid, img, prev, cnt);
		ord[k++] = m[found];
		prev = ord[k - 1].vol_uuid;
	}
	*nout = k;
	return 0;
}

CP_EXPORT int cp_sd_image_chain(cp_sd *sd, const char *img_uuid,
				struct cp_volmeta **out, size_t *n)
{
	CP_API_ENTER();
	struct cp_uuid_str *vols = NULL;
	struct cp_volmeta *m = NULL, *ord = NULL;
	bool *use = NULL;
	size_t nv = 0, k = 0;
	int r;

	*out = NULL;
	*n = 0;
	r = cp_sd_list_volumes(sd, img_uuid, &vols, &nv);
	if (r < 0)
		return r;
	if (nv == 0) {
		free(vols);
		return cp_error(-ENOENT, "domain %s: image %s not found", sd->uuid,
				img_uuid);
	}
	m = calloc(nv, sizeof(*m));
	ord = calloc(nv, sizeof(*ord));
	use = calloc(nv, sizeof(*use));
	if (!m || !ord || !use) {
		r = cp_error(-ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nv; i++) {
		if ((r = cp_sd_vol_md(sd, img_uuid, vols[i].s, &m[i])) < 0)
			goto out;
		use[i] = true;
	}
	r = sd_order_chain(sd, img_uuid, m, use, nv, ord, &k);
	if (r < 0) {
		/* A volume being removed (ILLEGAL, nobody's parent any more)
		 * sits beside the chain until its task ends: leave it out. */
		bool any = false;
		for (size_t i = 0; i < nv; i++) {
			bool parent = false;
			for (size_t j = 0; j < nv; j++)
				if (!strcasecmp(m[j].parent_uuid, m[i].vol_uuid))
					parent = true;
			if (m[i].legality == CP_VOL_ILLEGAL && !parent) {
				use[i] = false;
				any = true;
			}
		}
		if (any)
			r = sd_order_chain(sd, img_uuid, m, use, nv, ord, &k);
		if (r < 0)
			goto out;
	}
	*out = ord;
	ord = NULL;
	*n = k;
	r = 0;
out:
	free(vols);
	free(m);
	free(ord);
	free(use);
	return r;
}
