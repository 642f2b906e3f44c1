/* spm/vol_create.c - create a volume: a new image, a snapshot on top of
 * an image's leaf, or a thin clone of a template (a qcow2 leaf in a new
 * image over the template of another).
 *
 * Steps (CREATE_VOLUME): data created, record written ILLEGAL, data
 * formatted, parent turned INTERNAL, record LEGAL.  Rolls back: the new
 * volume goes and the parent is a leaf again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "volume_int.h"

/* Storage to provide at creation. */
static uint64_t initial_storage(cp_sd *sd, enum cp_vol_format fmt,
				enum cp_vol_alloc alloc, uint64_t capacity,
				uint64_t initial)
{
	if (fmt == CP_VOL_FORMAT_RAW)
		return capacity;
	if (sd->type == CP_DOMAIN_TYPE_FILE)
		return 0;  /* the qcow2 file grows as it is written */
	if (alloc == CP_VOL_ALLOC_PREALLOCATED)
		return qcow_max_size(capacity);
	uint64_t want = initial ? initial : cp_sd_md(sd)->chunk_size;
	uint64_t max = qcow_max_size(capacity);
	return want < max ? want : max;
}

CP_EXPORT void cp_vol_create_opts_init(struct cp_vol_create_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->format = CP_VOL_FORMAT_COW;
	o->allocation = CP_VOL_ALLOC_SPARSE;
}

/* Steps of CREATE_VOLUME (and the thin CLONE). */
enum {
	CV_DATA = 1,     /* data created */
	CV_MD = 2,       /* record written ILLEGAL */
	CV_FORMAT = 3,   /* data formatted */
	CV_PARENT = 4,   /* parent turned INTERNAL */
	CV_LEGAL = 5,    /* record LEGAL: done */
};

int vol_format(cp_sd *sd, const struct cp_task *t)
{
	enum cp_vol_format fmt = (t->flags >> TF_FMT_SHIFT) & 0xff;
	enum cp_vol_alloc alloc = (t->flags >> TF_ALLOC_SHIFT) & 0xff;
	struct cp_create_opts co;
	char bname[2 * CP_UUID_STR_LEN + 8], name[2 * CP_UUID_STR_LEN + 8];
	struct cp_volmeta pm;
	cp_bdev *dev;
	int r;

	if (fmt == CP_VOL_FORMAT_RAW)
		return 0;  /* raw: the data is the disk; created at its size */
	cp_create_opts_init(&co);
	co.format = CP_FMT_QCOW2;
	co.virtual_size = t->u64[TU_CAPACITY];
	co.cache = CP_CACHE_NONE;
	if (alloc == CP_VOL_ALLOC_PREALLOCATED)
		co.prealloc = sd->type == CP_DOMAIN_TYPE_FILE ? CP_PREALLOC_FALLOC
							      : CP_PREALLOC_METADATA;
	if (t->parent_uuid[0]) {
		const char *pimg = t->src_img_uuid[0] ? t->src_img_uuid : t->img_uuid;
		backing_name(bname, sizeof(bname), t->img_uuid, pimg,
			     t->parent_uuid);
		if ((r = md_get(sd, pimg, t->parent_uuid, &pm)) < 0)
			return r;
		co.backing_file = bname;
		co.backing_format = pm.format == CP_VOL_FORMAT_COW ? "qcow2" : "raw";
	}
	r = sd->ops->vol_open(sd, t->img_uuid, t->vol_uuid, true, &dev);
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "%s/%s", t->img_uuid, t->vol_uuid);
	r = cp_image_create_dev(dev, name, &co, NULL, NULL);
	cp_bdev_close(dev);
	if (r < 0)
		return cp_error_prefix(r, "domain %s: format volume %s",
				       sd->uuid, t->vol_uuid);
	return 0;
}

/* Roll a create back: the new volume goes, the parent is a leaf again
 * (if it has no other child). */
static int create_rollback(struct vol_op_ctx *x)
{
	cp_pool *p = x->p;
	cp_sd *sd = x->sd;
	const struct cp_task *t = x->t;
	int r;

	if (t->parent_uuid[0] && !t->src_img_uuid[0]) {
		struct cp_volmeta pm;
		size_t n = 0;
		if (md_get(sd, t->img_uuid, t->parent_uuid, &pm) == 0 &&
		    pm.role == CP_VOL_ROLE_INTERNAL) {
			/* children other than the volume being undone */
			struct cp_volmeta self;
			bool self_there = md_get(sd, t->img_uuid, t->vol_uuid,
						 &self) == 0;
			if ((r = count_children(sd, t->img_uuid, t->parent_uuid,
						false, &n, NULL, NULL)) < 0)
				return r;
			if (n - (self_there ? 1 : 0) == 0 &&
			    (r = md_set_role(p, sd, t->img_uuid, t->parent_uuid,
					     CP_VOL_ROLE_LEAF, 0, NULL)) < 0)
				return r;
		}
	}
	if ((r = md_set_role(p, sd, t->img_uuid, t->vol_uuid, 0, CP_VOL_ILLEGAL,
			     NULL)) < 0 && r != -ENOENT)
		return r;
	return vol_remove_all(p, sd, t->img_uuid, t->vol_uuid);
}

/* Run (or resume) a create from t->step on. */
static int create_run(struct vol_op_ctx *x)
{
	cp_pool *p = x->p;
	cp_sd *sd = x->sd;
	struct cp_task *t = x->t;
	int r;

	if ((r = vol_new_steps(p, sd, t, t->img_uuid, t->vol_uuid,
			       t->parent_uuid, CP_VOL_ROLE_LEAF, CV_DATA,
			       CV_MD)) < 0)
		return r;
	if (t->step < CV_FORMAT) {
		if ((r = pool_guard(p, "volume format")) < 0 ||
		    (r = vol_format(sd, t)) < 0 ||
		    (r = task_step(p, t, CV_FORMAT)) < 0)
			return r;
	}
	if (t->step < CV_PARENT) {
		if (t->parent_uuid[0] && !t->src_img_uuid[0] &&
		    (r = md_set_role(p, sd, t->img_uuid, t->parent_uuid,
				     CP_VOL_ROLE_INTERNAL, 0, NULL)) < 0)
			return r;
		if ((r = task_step(p, t, CV_PARENT)) < 0)
			return r;
	}
	if ((r = md_set_role(p, sd, t->img_uuid, t->vol_uuid, 0, CP_VOL_LEGAL,
			     NULL)) < 0)
		return r;
	t->step = CV_LEGAL;
	return 0;
}

struct create_args {
	struct cp_vol_create_opts *o;
	const char *dom;
};

static int create_precheck(struct vol_op_ctx *x)
{
	struct create_args *a = x->args;
	struct cp_vol_create_opts *o = a->o;
	const char *dom = a->dom;
	cp_sd *sd = x->sd;
	struct cp_task *t = x->t;
	struct cp_volmeta pm;
	int r;

	bool has_parent = o->parent_uuid && o->parent_uuid[0];
	bool other_img = o->parent_img_uuid && o->parent_img_uuid[0] &&
			 (!o->img_uuid || strcasecmp(o->parent_img_uuid, o->img_uuid));
	if (o->img_uuid && o->img_uuid[0])
		strcpy(t->img_uuid, o->img_uuid);
	else if ((r = cp_uuid_generate(t->img_uuid)) < 0)
		return r;
	if (o->vol_uuid && o->vol_uuid[0])
		strcpy(t->vol_uuid, o->vol_uuid);
	else if ((r = cp_uuid_generate(t->vol_uuid)) < 0)
		return r;
	/* the image: new unless a snapshot of it */
	struct cp_uuid_str *vols = NULL;
	size_t nv = 0;
	r = cp_sd_list_volumes(sd, t->img_uuid, &vols, &nv);
	free(vols);
	if (r < 0)
		return r;
	if (has_parent && !other_img) {
		if (nv == 0)
			return cp_error(-ENOENT, "domain %s: image %s not found", dom,
					t->img_uuid);
		if ((r = md_get(sd, t->img_uuid, o->parent_uuid, &pm)) < 0)
			return r;
		if (pm.role != CP_VOL_ROLE_LEAF || pm.legality != CP_VOL_LEGAL)
			return cp_error(-EINVAL, "volume %s is not the image's legal leaf: "
					"snapshots go on top of the leaf", o->parent_uuid);
		strcpy(t->parent_uuid, o->parent_uuid);
	} else {
		if (nv)
			return cp_error(-EEXIST, "domain %s: image %s exists (give a "
					"parent to add a snapshot)", dom, t->img_uuid);
		t->flags |= TF_NEW_IMAGE;
		if (has_parent) {  /* thin clone: the parent is a template */
			if ((r = md_get(sd, o->parent_img_uuid, o->parent_uuid, &pm)) < 0)
				return r;
			if (pm.role != CP_VOL_ROLE_SHARED || pm.legality != CP_VOL_LEGAL)
				return cp_error(-EINVAL, "volume %s of image %s is not a "
						"template: only templates are shared "
						"between images", o->parent_uuid,
						o->parent_img_uuid);
			strcpy(t->parent_uuid, o->parent_uuid);
			strcpy(t->src_img_uuid, o->parent_img_uuid);
		}
	}
	if (md_get(sd, t->img_uuid, t->vol_uuid, &pm) == 0 ||
	    sd->ops->vol_exists(sd, t->img_uuid, t->vol_uuid) > 0)
		return cp_error(-EEXIST, "domain %s: volume %s exists", dom, t->vol_uuid);
	if (has_parent) {
		/* build only on a chain whose every backing name is a volume
		 * of this domain */
		if ((r = sd_check_chain(sd, t->src_img_uuid[0] ? t->src_img_uuid
							    : t->img_uuid,
					t->parent_uuid)) < 0)
			return r;
		if (o->capacity == 0)
			o->capacity = pm.capacity;
		if (o->capacity < pm.capacity)
			return cp_error(-EINVAL, "volume create: capacity %" PRIu64
					" is smaller than the parent's %" PRIu64,
					o->capacity, pm.capacity);
		if (o->format == CP_VOL_FORMAT_RAW)
			return cp_error(-EINVAL, "volume create: a snapshot layer must be "
					"cow (qcow2), not raw");
	}
	if (o->capacity == 0 || o->capacity % 512)
		return cp_error(-EINVAL, "volume create: capacity must be a positive "
				"multiple of 512 bytes");
	t->flags |= (uint32_t)o->format << TF_FMT_SHIFT;
	t->flags |= (uint32_t)o->allocation << TF_ALLOC_SHIFT;
	t->u64[TU_CAPACITY] = o->capacity;
	t->u64[TU_STORAGE] = initial_storage(sd, o->format, o->allocation,
					    o->capacity, o->initial_size);
	snprintf(t->message, sizeof(t->message), "%s",
		 o->description ? o->description : "");
	return 0;
}

static int create_result(struct vol_op_ctx *x)
{
	return md_get(x->sd, x->t->img_uuid, x->t->vol_uuid, x->out);
}

static int create_recover(struct vol_op_ctx *x)
{
	return vol_op_recover_back(x, x->t->img_uuid, x->t->vol_uuid);
}

const struct vol_op vol_create_op = {
	.type = CP_TASK_CREATE_VOLUME,
	.precheck = create_precheck,
	.run = create_run,
	.rollback = create_rollback,
	.recover = create_recover,
	.result = create_result,
};

CP_EXPORT int cp_vol_create(cp_pool *p, const char *dom,
			    const struct cp_vol_create_opts *uo,
			    struct cp_volmeta *out)
{
	CP_API_ENTER();
	struct cp_vol_create_opts o;
	struct create_args a = {.o = &o, .dom = dom};
	struct vol_op_ctx x = {.p = p, .args = &a, .out = out};
	cp_sd *sd;
	int r;

	r = SD_OPTS_COPY(o, uo, cp_vol_create_opts_init, capacity,
			 "volume create");
	if (r < 0)
		return r;
	if ((r = cp_pool_domain(p, dom, &sd)) < 0)
		return r;
	if (o.format != CP_VOL_FORMAT_RAW && o.format != CP_VOL_FORMAT_COW)
		return cp_error(-EINVAL, "volume create: format %d is not raw or cow",
				(int)o.format);
	if (o.allocation != CP_VOL_ALLOC_SPARSE &&
	    o.allocation != CP_VOL_ALLOC_PREALLOCATED)
		return cp_error(-EINVAL, "volume create: allocation %d is not "
				"sparse or preallocated", (int)o.allocation);
	if (o.description && strlen(o.description) > CP_VOLMETA_DESC_MAX)
		return cp_error(-EINVAL, "volume create: description longer than %d "
				"bytes", CP_VOLMETA_DESC_MAX);
	const char *uuids[] = {o.img_uuid, o.vol_uuid, o.parent_uuid,
			       o.parent_img_uuid, o.task_uuid};
	for (size_t i = 0; i < CP_ARRAY_SIZE(uuids); i++)
		if (uuids[i] && uuids[i][0] && !cp_uuid_valid(uuids[i]))
			return cp_error(-EINVAL, "volume create: '%s' is not a UUID",
					uuids[i]);
	x.sd = sd;
	return vol_op_execute(&vol_create_op, &x, dom, o.task_uuid);
}
