/* spm/vol_delete.c - delete a volume (a leaf, or a template nobody uses)
 * or a whole image.
 *
 * Steps (DELETE_VOLUME, DELETE_IMAGE): the volume(s) ILLEGAL, the parent a
 * leaf again, data and records removed (leaf first).  Rolls forward:
 * every step is repeatable and removals are idempotent.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "volume_int.h"

enum {
	DV_ILLEGAL = 1,  /* the volume(s) ILLEGAL */
	DV_PARENT = 2,   /* the parent a leaf again */
	DV_REMOVED = 3,  /* data and records gone */
};

static int template_in_use(cp_sd *sd, const char *img, const char *vol)
{
	char uimg[CP_UUID_STR_LEN + 1], uvol[CP_UUID_STR_LEN + 1];
	size_t n;
	int r = count_children(sd, img, vol, true, &n, uimg, uvol);

	if (r < 0)
		return r;
	if (n)
		return cp_error(-EBUSY, "template %s is in use by %zu volume%s "
				"(e.g. %s of image %s)", vol, n, n == 1 ? "" : "s",
				uvol, uimg);
	return 0;
}

static int delete_run(struct vol_op_ctx *x)
{
	cp_pool *p = x->p;
	cp_sd *sd = x->sd;
	struct cp_task *t = x->t;
	int r;

	if (t->step < DV_ILLEGAL) {
		r = md_set_role(p, sd, t->img_uuid, t->vol_uuid, 0, CP_VOL_ILLEGAL,
				NULL);
		if ((r < 0 && r != -ENOENT) || (r = task_step(p, t, DV_ILLEGAL)) < 0)
			return r;
	}
	if (t->step < DV_PARENT) {
		if (t->parent_uuid[0] && !t->src_img_uuid[0]) {
			r = md_set_role(p, sd, t->img_uuid, t->parent_uuid,
					CP_VOL_ROLE_LEAF, 0, NULL);
			if (r < 0)
				return r;
		}
		if ((r = task_step(p, t, DV_PARENT)) < 0)
			return r;
	}
	return vol_remove_all(p, sd, t->img_uuid, t->vol_uuid);
}

struct delete_args {
	const char *img, *vol;
	const struct cp_volmeta *m;
};

static int delete_precheck(struct vol_op_ctx *x)
{
	const struct delete_args *a = x->args;
	const char *img = a->img, *vol = a->vol;
	const struct cp_volmeta *m = a->m;
	cp_sd *sd = x->sd;
	struct cp_task *t = x->t;
	size_t nch;
	int r;

	if ((r = count_children(sd, img, vol, false, &nch, NULL, NULL)) < 0)
		return r;
	if (m->role == CP_VOL_ROLE_SHARED) {
		if ((r = template_in_use(sd, img, vol)) < 0)
			return r;
	} else if (nch) {
		return cp_error(-EBUSY, "volume %s has a child: delete the leaf, or "
				"merge this snapshot (volume merge)", vol);
	}
	strcpy(t->img_uuid, img);
	strcpy(t->vol_uuid, vol);
	strcpy(t->parent_uuid, m->parent_uuid);
	if (m->parent_uuid[0]) {
		struct cp_volmeta pm;
		/* a parent in another image is a template */
		if (md_get(sd, img, m->parent_uuid, &pm) < 0 &&
		    (r = find_vol_image(sd, m->parent_uuid, t->src_img_uuid)) < 0)
			return r;
	}
	return 0;
}

const struct vol_op vol_delete_op = {
	.type = CP_TASK_DELETE_VOLUME,
	.precheck = delete_precheck,
	.run = delete_run,
	.recover = vol_op_recover_forward,
};

CP_EXPORT int cp_vol_delete(cp_pool *p, const char *dom, const char *img,
			    const char *vol, const char *task_uuid)
{
	struct cp_volmeta m;
	struct delete_args a = {.img = img, .vol = vol, .m = &m};
	struct vol_op_ctx x = {.p = p, .args = &a};
	int r;

	if ((r = cp_pool_domain(p, dom, &x.sd)) < 0 ||
	    (r = cp_sd_vol_md(x.sd, img, vol, &m)) < 0)
		return r;
	return vol_op_execute(&vol_delete_op, &x, dom, task_uuid);
}

static int delete_image_run(struct vol_op_ctx *x)
{
	cp_pool *p = x->p;
	cp_sd *sd = x->sd;
	struct cp_task *t = x->t;
	struct cp_uuid_str *vols = NULL;
	size_t nv = 0;
	int r = cp_sd_list_volumes(sd, t->img_uuid, &vols, &nv);

	if (r < 0)
		return r;
	if (t->step < DV_ILLEGAL) {
		for (size_t i = 0; i < nv && r == 0; i++) {
			r = md_set_role(p, sd, t->img_uuid, vols[i].s, 0,
					CP_VOL_ILLEGAL, NULL);
			if (r == -ENOENT)
				r = 0;
		}
		if (r == 0)
			r = task_step(p, t, DV_ILLEGAL);
	}
	/* leaf first: data then record of every volume */
	for (size_t i = nv; i-- > 0 && r == 0;)
		r = vol_remove_all(p, sd, t->img_uuid, vols[i].s);
	free(vols);
	if (r == 0) {
		/* volumes whose record is gone but data remains (a crash
		 * between the two removals of an earlier pass) */
		struct cp_uuid_str *left = NULL;
		size_t nl = 0;
		if (cp_sd_list_volumes(sd, t->img_uuid, &left, &nl) == 0)
			for (size_t i = 0; i < nl && r == 0; i++)
				r = vol_remove_all(p, sd, t->img_uuid, left[i].s);
		free(left);
	}
	return r;
}

struct delete_image_args {
	const char *dom, *img;
};

static int delete_image_precheck(struct vol_op_ctx *x)
{
	const struct delete_image_args *a = x->args;
	const char *img = a->img;
	cp_sd *sd = x->sd;
	struct cp_uuid_str *vols = NULL;
	size_t n = 0;
	int r = cp_sd_list_volumes(sd, img, &vols, &n);

	if (r == 0 && n == 0)
		r = cp_error(-ENOENT, "domain %s: image %s not found", a->dom,
			     img);
	for (size_t i = 0; i < n && r == 0; i++) {
		struct cp_volmeta m;
		if (md_get(sd, img, vols[i].s, &m) == 0 &&
		    m.role == CP_VOL_ROLE_SHARED)
			r = template_in_use(sd, img, vols[i].s);
	}
	free(vols);
	if (r < 0)
		return r;
	strcpy(x->t->img_uuid, img);
	return 0;
}

const struct vol_op vol_delete_image_op = {
	.type = CP_TASK_DELETE_IMAGE,
	.precheck = delete_image_precheck,
	.run = delete_image_run,
	.recover = vol_op_recover_forward,
};

CP_EXPORT int cp_img_delete(cp_pool *p, const char *dom, const char *img,
			    const char *task_uuid)
{
	struct delete_image_args a = {.dom = dom, .img = img};
	struct vol_op_ctx x = {.p = p, .args = &a};
	int r;

	if ((r = cp_pool_domain(p, dom, &x.sd)) < 0)
		return r;
	if (!img || !cp_uuid_valid(img))
		return cp_error(-EINVAL, "image UUID '%s' is not valid",
				img ? img : "");
	return vol_op_execute(&vol_delete_image_op, &x, dom, task_uuid);
}
