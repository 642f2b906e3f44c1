/* spm/vol_clone.c - templates and full clones: the chain of a volume
 * copied collapsed into one new volume of a new image (SHARED for a
 * template, a LEAF for a full clone).  A thin clone is a create
 * (vol_create.c).
 *
 * Steps (TEMPLATE, CLONE): target data created, target record ILLEGAL,
 * content copied, record LEGAL.  Rolls back: the new volume goes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "volume_int.h"

enum {
	CP_DATA = 1,    /* target data created */
	CP_MD = 2,      /* target record ILLEGAL */
	CP_COPIED = 3,  /* content copied */
	CP_LEGAL = 4,
};

/* Copy the chain of (src sd, img, vol) collapsed into a new volume
 * t->aux_uuid of image t->dst img on dsd; used by templates and full
 * clones.  t: img/vol = source; src_img/src_vol = new image/volume. */
static int collapse_run(struct vol_op_ctx *x)
{
	cp_pool *p = x->p;
	cp_sd *sd = x->sd;
	struct cp_task *t = x->t;
	enum cp_vol_format fmt = (t->flags >> TF_FMT_SHIFT) & 0xff;
	enum cp_vol_alloc alloc = (t->flags >> TF_ALLOC_SHIFT) & 0xff;
	struct progress_ctx px = {.p = p, .t = t, .fn = x->progress,
				  .opaque = x->opaque};
	int r;

	if ((r = vol_new_steps(p, sd, t, t->src_img_uuid, t->src_vol_uuid,
			       NO_PARENT,
			       (t->flags & TF_ROLE_SHARED) ? CP_VOL_ROLE_SHARED
							   : CP_VOL_ROLE_LEAF,
			       CP_DATA, CP_MD)) < 0)
		return r;
	if (t->step < CP_COPIED) {
		struct cp_convert_opts co;
		if ((r = pool_guard(p, "copy")) < 0)
			return r;
		/* (re)format the target, then copy the collapsed chain */
		struct cp_task ft = *t;
		strcpy(ft.img_uuid, t->src_img_uuid);
		strcpy(ft.vol_uuid, t->src_vol_uuid);
		ft.parent_uuid[0] = '\0';
		ft.src_img_uuid[0] = '\0';
		if ((r = vol_format(sd, &ft)) < 0)
			return r;
		cp_convert_opts_init(&co);
		co.target_is_zero = fmt == CP_VOL_FORMAT_COW &&
				    alloc == CP_VOL_ALLOC_SPARSE;
		if ((r = vol_convert(sd, t->img_uuid, t->vol_uuid, sd,
				     t->src_img_uuid, t->src_vol_uuid, &co,
				     &px)) < 0 ||
		    (r = task_step(p, t, CP_COPIED)) < 0)
			return r;
	}
	return md_set_role(p, sd, t->src_img_uuid, t->src_vol_uuid, 0,
			   CP_VOL_LEGAL, NULL);
}

static int collapse_rollback(struct vol_op_ctx *x)
{
	cp_pool *p = x->p;
	cp_sd *sd = x->sd;
	const struct cp_task *t = x->t;
	int r = md_set_role(p, sd, t->src_img_uuid, t->src_vol_uuid, 0,
			    CP_VOL_ILLEGAL, NULL);

	if (r < 0 && r != -ENOENT)
		return r;
	return vol_remove_all(p, sd, t->src_img_uuid, t->src_vol_uuid);
}

static int collapse_result(struct vol_op_ctx *x)
{
	return md_get(x->sd, x->t->src_img_uuid, x->t->src_vol_uuid, x->out);
}

static int collapse_recover(struct vol_op_ctx *x)
{
	return vol_op_recover_back(x, x->t->src_img_uuid, x->t->src_vol_uuid);
}

static int collapse_prepare(cp_sd *sd, struct cp_task *t,
			    const char *img, const char *vol,
			    const char *new_img, const char *new_vol,
			    enum cp_vol_format fmt, enum cp_vol_alloc alloc,
			    const char *desc)
{
	struct cp_volmeta m;
	struct cp_uuid_str *vols = NULL;
	size_t nv = 0;
	int r;

	if ((r = md_get(sd, img, vol, &m)) < 0)
		return r;
	if (m.legality != CP_VOL_LEGAL)
		return cp_error(-EINVAL, "volume %s is ILLEGAL", vol);
	if (desc && strlen(desc) > CP_VOLMETA_DESC_MAX)
		return cp_error(-EINVAL, "description longer than %d bytes",
				CP_VOLMETA_DESC_MAX);
	if (fmt != CP_VOL_FORMAT_RAW && fmt != CP_VOL_FORMAT_COW)
		return cp_error(-EINVAL, "format %d is not raw or cow", (int)fmt);
	strcpy(t->img_uuid, img);
	strcpy(t->vol_uuid, vol);
	if (new_img && new_img[0]) {
		if (!cp_uuid_valid(new_img))
			return cp_error(-EINVAL, "image UUID '%s' is not valid", new_img);
		strcpy(t->src_img_uuid, new_img);
	} else if ((r = cp_uuid_generate(t->src_img_uuid)) < 0) {
		return r;
	}
	if (new_vol && new_vol[0]) {
		if (!cp_uuid_valid(new_vol))
			return cp_error(-EINVAL, "volume UUID '%s' is not valid",
					new_vol);
		strcpy(t->src_vol_uuid, new_vol);
	} else if ((r = cp_uuid_generate(t->src_vol_uuid)) < 0) {
		return r;
	}
	if ((r = cp_sd_list_volumes(sd, t->src_img_uuid, &vols, &nv)) < 0)
		return r;
	free(vols);
	if (nv)
		return cp_error(-EEXIST, "domain %s: image %s exists", sd->uuid,
				t->src_img_uuid);
	t->flags |= (uint32_t)fmt << TF_FMT_SHIFT;
	t->flags |= (uint32_t)alloc << TF_ALLOC_SHIFT;
	t->u64[TU_CAPACITY] = m.capacity;
	if (fmt == CP_VOL_FORMAT_RAW)
		t->u64[TU_STORAGE] = m.capacity;
	else if (sd->type == CP_DOMAIN_TYPE_FILE)
		t->u64[TU_STORAGE] = 0;
	else {
		/* what the collapsed chain needs (measure), plus a chunk for
		 * a writable clone */
		struct cp_sd_chain c;
		struct cp_measure_opts mo;
		struct cp_measure_result mr;
		if ((r = cp_sd_open_image(sd, img, vol, false, &c)) < 0)
			return r;
		cp_measure_opts_init(&mo);
		r = cp_image_measure(c.img, &mo, &mr);
		cp_sd_close_image(&c);
		if (r < 0)
			return r;
		t->u64[TU_STORAGE] = alloc == CP_VOL_ALLOC_PREALLOCATED
					     ? mr.fully_allocated
					     : mr.required;
		if (!(t->flags & TF_ROLE_SHARED) && alloc == CP_VOL_ALLOC_SPARSE)
			t->u64[TU_STORAGE] += cp_sd_md(sd)->chunk_size;
	}
	snprintf(t->message, sizeof(t->message), "%s", desc ? desc : "");
	return 0;
}

CP_EXPORT void cp_template_opts_init(struct cp_template_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->format = CP_VOL_FORMAT_COW;
}

static int template_precheck(struct vol_op_ctx *x)
{
	const struct cp_template_opts *o = x->args;

	x->t->flags |= TF_ROLE_SHARED;
	return collapse_prepare(x->sd, x->t, o->img_uuid, o->vol_uuid,
				o->tmpl_img_uuid, o->tmpl_vol_uuid, o->format,
				CP_VOL_ALLOC_SPARSE, o->description);
}

const struct vol_op vol_template_op = {
	.type = CP_TASK_TEMPLATE,
	.precheck = template_precheck,
	.run = collapse_run,
	.rollback = collapse_rollback,
	.recover = collapse_recover,
	.result = collapse_result,
};

CP_EXPORT int cp_template_create(cp_pool *p, const char *dom,
				 const struct cp_template_opts *uo,
				 cp_task_progress_fn progress, void *opaque,
				 struct cp_volmeta *out)
{
	CP_API_ENTER();
	struct cp_template_opts o;
	struct vol_op_ctx x = {.p = p, .progress = progress, .opaque = opaque,
			       .args = &o, .out = out};
	char leaf[CP_UUID_STR_LEN + 1];
	cp_sd *sd;
	int r;

	r = SD_OPTS_COPY(o, uo, cp_template_opts_init, format,
			 "template create");
	if (r < 0)
		return r;
	if ((r = cp_pool_domain(p, dom, &sd)) < 0)
		return r;
	if (!o.img_uuid || !cp_uuid_valid(o.img_uuid))
		return cp_error(-EINVAL, "template create: image UUID '%s' is not "
				"valid", o.img_uuid ? o.img_uuid : "");
	if (!o.vol_uuid || !o.vol_uuid[0]) {
		struct cp_volmeta *chain;
		size_t n;
		if ((r = cp_sd_image_chain(sd, o.img_uuid, &chain, &n)) < 0)
			return r;
		strcpy(leaf, chain[n - 1].vol_uuid);
		free(chain);
		o.vol_uuid = leaf;
	}
	x.sd = sd;
	return vol_op_execute(&vol_template_op, &x, dom, o.task_uuid);
}

CP_EXPORT void cp_clone_opts_init(struct cp_clone_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->format = CP_VOL_FORMAT_COW;
	o->allocation = CP_VOL_ALLOC_SPARSE;
}

static int clone_precheck(struct vol_op_ctx *x)
{
	const struct cp_clone_opts *o = x->args;

	return collapse_prepare(x->sd, x->t, o->tmpl_img_uuid,
				o->tmpl_vol_uuid, o->img_uuid, o->vol_uuid,
				o->format, o->allocation, o->description);
}

const struct vol_op vol_clone_op = {
	.type = CP_TASK_CLONE,
	.precheck = clone_precheck,
	.run = collapse_run,
	.rollback = collapse_rollback,
	.recover = collapse_recover,
	.result = collapse_result,
};

CP_EXPORT int cp_template_clone(cp_pool *p, const char *dom,
				const struct cp_clone_opts *uo,
				cp_task_progress_fn progress, void *opaque,
				struct cp_volmeta *out)
{
	CP_API_ENTER();
	struct cp_clone_opts o;
	struct vol_op_ctx x = {.p = p, .progress = progress, .opaque = opaque,
			       .args = &o, .out = out};
	struct cp_volmeta tm;
	cp_sd *sd;
	int r;

	r = SD_OPTS_COPY(o, uo, cp_clone_opts_init, full, "template clone");
	if (r < 0)
		return r;
	if ((r = cp_pool_domain(p, dom, &sd)) < 0 ||
	    (r = cp_sd_vol_md(sd, o.tmpl_img_uuid, o.tmpl_vol_uuid, &tm)) < 0)
		return r;
	if (tm.role != CP_VOL_ROLE_SHARED)
		return cp_error(-EINVAL, "volume %s is not a template", o.tmpl_vol_uuid);
	if (!o.full) {
		struct cp_vol_create_opts co;
		cp_vol_create_opts_init(&co);
		co.img_uuid = o.img_uuid;
		co.vol_uuid = o.vol_uuid;
		co.parent_uuid = o.tmpl_vol_uuid;
		co.parent_img_uuid = o.tmpl_img_uuid;
		co.capacity = tm.capacity;
		co.description = o.description;
		co.task_uuid = o.task_uuid;
		return cp_vol_create(p, dom, &co, out);
	}
	x.sd = sd;
	return vol_op_execute(&vol_clone_op, &x, dom, o.task_uuid);
}
