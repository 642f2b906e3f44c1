/* spm/vol_copy.c - copy an image to another domain, layer by layer, with
 * the same UUIDs (each layer copied top-only over its already copied
 * parent); a thin clone needs its template on the target first.
 *
 * Steps (COPY_IMAGE): 1 all target volumes created and their records
 * ILLEGAL (in chain order), 2 + i layer i copied, final: all LEGAL.
 * Rolls back: the image goes from the target.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "volume_int.h"

static int copy_run(struct vol_op_ctx *x)
{
	cp_pool *p = x->p;
	cp_sd *src = x->sd, *dst = x->dst;
	struct cp_task *t = x->t;
	struct progress_ctx px = {.p = p, .t = t, .fn = x->progress,
				  .opaque = x->opaque};
	struct cp_volmeta *chain = NULL;
	size_t n = 0;
	int r = cp_sd_image_chain(src, t->img_uuid, &chain, &n);

	if (r < 0)
		return r;
	if (t->step < 1) {
		for (size_t i = 0; i < n && r == 0; i++) {
			struct sd_vol_spec spec;
			struct cp_volmeta m = chain[i];
			struct cp_vol_size vs;
			if ((r = src->ops->vol_size(src, t->img_uuid,
						    m.vol_uuid, &vs)) < 0)
				break;
			if (dst->ops->vol_exists(dst, t->img_uuid, m.vol_uuid) > 0)
				continue;  /* resumed: made before the crash */
			memset(&spec, 0, sizeof(spec));
			spec.img_uuid = t->img_uuid;
			spec.vol_uuid = m.vol_uuid;
			spec.parent_uuid = m.parent_uuid;
			spec.format = m.format;
			spec.allocation = m.allocation;
			spec.size = m.format == CP_VOL_FORMAT_RAW ? m.capacity :
				    dst->type == CP_DOMAIN_TYPE_FILE ? 0 :
				    vs.apparent > cp_sd_md(dst)->chunk_size ?
				    vs.apparent : cp_sd_md(dst)->chunk_size;
			if ((r = pool_guard(p, "volume create")) < 0 ||
			    (r = dst->ops->vol_create(dst, &spec)) < 0)
				break;
			strcpy(m.dom_uuid, dst->uuid);
			m.legality = CP_VOL_ILLEGAL;
			r = md_put(p, dst, &m, "metadata write");
		}
		if (r == 0)
			r = task_step(p, t, 1);
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		struct cp_convert_opts co;
		struct cp_task ft;
		if (t->step >= 2 + i)
			continue;
		/* format the target layer over its parent copy, then copy
		 * what the source layer holds */
		memset(&ft, 0, sizeof(ft));
		strcpy(ft.img_uuid, t->img_uuid);
		strcpy(ft.vol_uuid, chain[i].vol_uuid);
		strcpy(ft.parent_uuid, chain[i].parent_uuid);
		if (chain[i].parent_uuid[0] && i == 0)
			strcpy(ft.src_img_uuid, t->aux_uuid); /* template image */
		ft.flags = ((uint32_t)chain[i].format << TF_FMT_SHIFT) |
			   ((uint32_t)chain[i].allocation << TF_ALLOC_SHIFT);
		ft.u64[TU_CAPACITY] = chain[i].capacity;
		if ((r = pool_guard(p, "copy")) < 0 || (r = vol_format(dst, &ft)) < 0)
			break;
		cp_convert_opts_init(&co);
		co.source_top_only = chain[i].parent_uuid[0] != '\0';
		co.target_is_zero = chain[i].format == CP_VOL_FORMAT_COW;
		if ((r = vol_convert(src, t->img_uuid, chain[i].vol_uuid, dst,
				     t->img_uuid, chain[i].vol_uuid, &co,
				     &px)) < 0)
			break;
		r = task_step(p, t, (uint32_t)(2 + i));
	}
	for (size_t i = 0; i < n && r == 0; i++)
		r = md_set_role(p, dst, t->img_uuid, chain[i].vol_uuid, 0,
				CP_VOL_LEGAL, NULL);
	free(chain);
	return r;
}

static int copy_rollback(struct vol_op_ctx *x)
{
	cp_pool *p = x->p;
	cp_sd *src = x->sd, *dst = x->dst;
	const struct cp_task *t = x->t;
	struct cp_uuid_str *vols = NULL;
	struct cp_volmeta *chain = NULL;
	size_t n = 0, nc = 0;
	int r = cp_sd_list_volumes(dst, t->img_uuid, &vols, &n);

	for (size_t i = 0; i < n && r == 0; i++) {
		r = md_set_role(p, dst, t->img_uuid, vols[i].s, 0, CP_VOL_ILLEGAL,
				NULL);
		if (r == -ENOENT)
			r = 0;
	}
	for (size_t i = n; i-- > 0 && r == 0;)
		r = vol_remove_all(p, dst, t->img_uuid, vols[i].s);
	free(vols);
	/* volumes whose data was made before their record (a crash between
	 * the two): known from the source chain */
	if (r == 0 && cp_sd_image_chain(src, t->img_uuid, &chain, &nc) == 0)
		for (size_t i = nc; i-- > 0 && r == 0;)
			r = vol_remove_all(p, dst, t->img_uuid, chain[i].vol_uuid);
	free(chain);
	return r;
}

static int copy_recover(struct vol_op_ctx *x)
{
	int r = cp_pool_domain(x->p, x->t->dst_dom_uuid, &x->dst);

	if (r < 0)
		return r;
	return vol_op_recover_back(x, NULL, NULL);
}

struct copy_args {
	const char *img, *dst_dom;
};

static int copy_precheck(struct vol_op_ctx *x)
{
	const struct copy_args *a = x->args;
	const char *img = a->img, *dst_dom = a->dst_dom;
	cp_sd *src = x->sd, *dst = x->dst;
	struct cp_task *t = x->t;
	struct cp_volmeta *chain = NULL;
	struct cp_uuid_str *vols = NULL;
	size_t n = 0, nv = 0;
	int r;

	strcpy(t->img_uuid, img);
	strcpy(t->dst_dom_uuid, dst_dom);
	if ((r = cp_sd_image_chain(src, img, &chain, &n)) < 0)
		goto out;
	for (size_t i = 0; i < n && r == 0; i++)
		if (chain[i].legality != CP_VOL_LEGAL)
			r = cp_error(-EINVAL, "volume %s is ILLEGAL: a task is "
				     "changing the image", chain[i].vol_uuid);
	if (r < 0)
		goto out;
	if (chain[0].parent_uuid[0]) {
		/* a thin clone: its template must be on the target */
		struct cp_volmeta tm;
		if ((r = find_vol_image(src, chain[0].parent_uuid, t->aux_uuid)) < 0)
			goto out;
		if (md_get(dst, t->aux_uuid, chain[0].parent_uuid, &tm) < 0) {
			r = cp_error(-ENOENT, "image %s is a thin clone of template "
				     "%s, which is not on domain %s: copy the "
				     "template first", img, chain[0].parent_uuid,
				     dst_dom);
			goto out;
		}
	}
	if ((r = cp_sd_list_volumes(dst, img, &vols, &nv)) < 0)
		goto out;
	if (nv) {
		r = cp_error(-EEXIST, "domain %s already has image %s", dst_dom, img);
		goto out;
	}
out:
	free(chain);
	free(vols);
	return r;
}

const struct vol_op vol_copy_op = {
	.type = CP_TASK_COPY_IMAGE,
	.precheck = copy_precheck,
	.run = copy_run,
	.rollback = copy_rollback,
	.recover = copy_recover,
};

CP_EXPORT int cp_img_copy(cp_pool *p, const char *src_dom, const char *img,
			  const char *dst_dom, const char *task_uuid,
			  cp_task_progress_fn progress, void *opaque)
{
	CP_API_ENTER();
	struct copy_args a = {.img = img, .dst_dom = dst_dom};
	struct vol_op_ctx x = {.p = p, .progress = progress, .opaque = opaque,
			       .args = &a};
	int r;

	if ((r = cp_pool_domain(p, src_dom, &x.sd)) < 0 ||
	    (r = cp_pool_domain(p, dst_dom, &x.dst)) < 0)
		return r;
	if (x.sd == x.dst)
		return cp_error(-EINVAL, "image copy: source and target domain are "
				"the same (%s)", src_dom);
	if (!img || !cp_uuid_valid(img))
		return cp_error(-EINVAL, "image UUID '%s' is not valid",
				img ? img : "");
	return vol_op_execute(&vol_copy_op, &x, src_dom, task_uuid);
}
