/* spm/vol_merge.c - merge a layer V out of its chain (snapshot delete).
 *
 * V is committed into its parent P (P's LV extended first by what V
 * holds, reduced to its use plus one chunk after), V's child re-pointed to
 * P (header only: the data is already identical), V removed.  When P is a
 * template or there is none, V's child pulls V in with a safe rebase
 * instead.  Rolls forward: every step is repeatable.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "volume_int.h"

enum {
	MG_ILLEGAL = 1,   /* V ILLEGAL */
	MG_EXTENDED = 2,  /* target storage extended */
	MG_COPIED = 3,    /* V's data in P (commit) or in C (pull) */
	MG_REPOINTED = 4, /* C's header and record name P; or P a leaf */
	MG_REMOVED = 5,   /* V gone */
};

/* How much storage the target needs: what it uses plus what V holds. */
static int mg_extend(cp_pool *p, cp_sd *sd, struct cp_task *t,
		     const char *target)
{
	struct cp_vol_size vs;
	struct cp_volmeta tm;
	uint64_t end, want, max;
	int r;

	if (sd->type != CP_DOMAIN_TYPE_BLOCK)
		return 0;
	if ((r = md_get(sd, t->img_uuid, target, &tm)) < 0)
		return r;
	if (tm.format != CP_VOL_FORMAT_COW)
		return 0;  /* raw: already the full size */
	if ((r = qcow_used_end(sd, t->img_uuid, target, &end)) < 0 ||
	    (r = sd->ops->vol_size(sd, t->img_uuid, t->vol_uuid, &vs)) < 0)
		return r;
	max = qcow_max_size(tm.capacity);
	want = end + vs.apparent + cp_sd_md(sd)->chunk_size;
	if (want > max)
		want = max;
	if ((r = pool_guard(p, "lvextend")) < 0)
		return r;
	return sd->ops->vol_resize(sd, t->img_uuid, target, want, false, NULL);
}

static int mg_reduce(cp_pool *p, cp_sd *sd, struct cp_task *t,
		     const char *target)
{
	struct cp_volmeta tm;
	struct cp_vol_size vs;
	uint64_t end, want;
	int r;

	if (sd->type != CP_DOMAIN_TYPE_BLOCK)
		return 0;
	if ((r = md_get(sd, t->img_uuid, target, &tm)) < 0)
		return r;
	if (tm.format != CP_VOL_FORMAT_COW ||
	    tm.allocation == CP_VOL_ALLOC_PREALLOCATED)
		return 0;
	if ((r = qcow_used_end(sd, t->img_uuid, target, &end)) < 0 ||
	    (r = sd->ops->vol_size(sd, t->img_uuid, target, &vs)) < 0)
		return r;
	want = round_up(end, 1u << 20) + cp_sd_md(sd)->chunk_size;
	if (want >= vs.apparent)
		return 0;
	if ((r = pool_guard(p, "lvreduce")) < 0)
		return r;
	return sd->ops->vol_resize(sd, t->img_uuid, target, want, true, NULL);
}

static int mg_copy(cp_pool *p, cp_sd *sd, struct cp_task *t,
		   cp_task_progress_fn fn, void *opaque)
{
	struct progress_ctx px = {.p = p, .t = t, .fn = fn, .opaque = opaque};
	struct cp_sd_chain c;
	int r;

	if ((r = pool_guard(p, "merge copy")) < 0)
		return r;
	if (!(t->flags & TF_PULL)) {
		/* commit V into P: V opened read-write at the top so commit can
		 * reopen P (its backing) for writing */
		struct cp_commit_opts co;
		if ((r = sd_open_chain(sd, t->img_uuid, t->vol_uuid, true, true,
				       false, &c)) < 0)
			return r;
		cp_commit_opts_init(&co);
		co.keep_top = true;
		co.progress = task_progress;
		co.opaque = &px;
		r = cp_image_commit(c.img, &co);
	} else {
		/* C pulls V in: safe rebase of C onto V's parent (or none) */
		struct cp_rebase_opts ro;
		char bname[2 * CP_UUID_STR_LEN + 8];
		struct cp_volmeta pm;
		if ((r = cp_sd_open_image(sd, t->img_uuid, t->aux_uuid, true,
					  &c)) < 0)
			return r;
		cp_rebase_opts_init(&ro);
		if (t->parent_uuid[0]) {
			const char *pimg = t->src_img_uuid[0] ? t->src_img_uuid
							     : t->img_uuid;
			backing_name(bname, sizeof(bname), t->img_uuid, pimg,
				     t->parent_uuid);
			ro.backing = bname;
			if ((r = md_get(sd, pimg, t->parent_uuid, &pm)) < 0) {
				cp_sd_close_image(&c);
				return r;
			}
			ro.backing_format = pm.format == CP_VOL_FORMAT_COW ? "qcow2"
									 : "raw";
		}
		ro.progress = task_progress;
		ro.opaque = &px;
		r = cp_image_rebase(c.img, &ro);
	}
	int r2 = cp_sd_close_image(&c);
	if (r == 0)
		r = r2;
	if (r < 0)
		return cp_error_prefix(r, "merge of volume %s", t->vol_uuid);
	return 0;
}

/* Point C's header at P (data identical: commit already copied V into P). */
static int mg_repoint(cp_pool *p, cp_sd *sd, struct cp_task *t)
{
	struct cp_sd_chain c;
	char bname[2 * CP_UUID_STR_LEN + 8];
	const char *pimg = t->src_img_uuid[0] ? t->src_img_uuid : t->img_uuid;
	int r;

	if (!t->aux_uuid[0]) {
		/* V was the leaf: P is the leaf now */
		return md_set_role(p, sd, t->img_uuid, t->parent_uuid,
				   CP_VOL_ROLE_LEAF, 0, NULL);
	}
	if (!(t->flags & TF_PULL)) {
		struct cp_volmeta pm;
		struct cp_image_info info;
		if ((r = md_get(sd, pimg, t->parent_uuid, &pm)) < 0)
			return r;
		if ((r = pool_guard(p, "rebase")) < 0)
			return r;
		/* no backing opened: only the header changes */
		struct cp_volmeta cm;
		if ((r = md_get(sd, t->img_uuid, t->aux_uuid, &cm)) < 0)
			return r;
		cp_bdev *dev;
		struct cp_open_opts oo;
		char name[2 * CP_UUID_STR_LEN + 8];
		if ((r = sd->ops->vol_open(sd, t->img_uuid, t->aux_uuid, true,
					   &dev)) < 0)
			return r;
		cp_open_opts_init(&oo);
		oo.format = CP_FMT_QCOW2;
		oo.no_backing = true;
		oo.cache = CP_CACHE_NONE;
		snprintf(name, sizeof(name), "%s/%s", t->img_uuid, t->aux_uuid);
		r = cp_image_open_dev(dev, name, &oo, &c.img);
		if (r == 0) {
			backing_name(bname, sizeof(bname), t->img_uuid, pimg,
				     t->parent_uuid);
			r = cp_image_get_info(c.img, &info);
			if (r == 0 && strcmp(info.backing_file, bname))
				r = cp_image_set_backing(
				    c.img, bname,
				    pm.format == CP_VOL_FORMAT_COW ? "qcow2" : "raw",
				    false);
			int r2 = cp_image_close(c.img);
			if (r == 0)
				r = r2;
		}
		cp_bdev_close(dev);
		if (r < 0)
			return cp_error_prefix(r, "rebase volume %s onto %s",
					       t->aux_uuid, t->parent_uuid);
	}
	if ((r = pool_guard(p, "lvchange tags")) < 0 ||
	    (r = sd->ops->vol_set_parent(sd, t->img_uuid, t->aux_uuid,
					 t->parent_uuid)) < 0)
		return r;
	return md_set_role(p, sd, t->img_uuid, t->aux_uuid, 0, 0,
			   t->parent_uuid);
}

static int merge_run(struct vol_op_ctx *x)
{
	cp_pool *p = x->p;
	cp_sd *sd = x->sd;
	struct cp_task *t = x->t;
	const char *target = (t->flags & TF_PULL) ? t->aux_uuid : t->parent_uuid;
	int r;

	if (t->step < MG_ILLEGAL) {
		r = md_set_role(p, sd, t->img_uuid, t->vol_uuid, 0, CP_VOL_ILLEGAL,
				NULL);
		if (r < 0 || (r = task_step(p, t, MG_ILLEGAL)) < 0)
			return r;
	}
	if (t->step < MG_EXTENDED) {
		if ((r = mg_extend(p, sd, t, target)) < 0 ||
		    (r = task_step(p, t, MG_EXTENDED)) < 0)
			return r;
	}
	if (t->step < MG_COPIED) {
		if ((r = mg_copy(p, sd, t, x->progress, x->opaque)) < 0 ||
		    (r = task_step(p, t, MG_COPIED)) < 0)
			return r;
	}
	if (t->step < MG_REPOINTED) {
		if ((r = mg_repoint(p, sd, t)) < 0 ||
		    (r = task_step(p, t, MG_REPOINTED)) < 0)
			return r;
	}
	if (t->step < MG_REMOVED) {
		if ((r = vol_remove_all(p, sd, t->img_uuid, t->vol_uuid)) < 0 ||
		    (r = task_step(p, t, MG_REMOVED)) < 0)
			return r;
	}
	return mg_reduce(p, sd, t, target);
}

/* A merge that failed: until the child (or, for a leaf, the parent)
 * names P, V is still a layer of the chain and its data is intact (what
 * was copied into P or C is what the chain read through V anyway): V turns
 * LEGAL again and the merge can be retried.  After that, V is out of the
 * chain: its removal is finished instead. */
static int merge_restore(struct vol_op_ctx *x)
{
	cp_pool *p = x->p;
	cp_sd *sd = x->sd;
	struct cp_task *t = x->t;
	struct cp_volmeta vm, om;
	bool out = t->step >= MG_REPOINTED;
	int r;

	if (!out && t->aux_uuid[0])
		out = md_get(sd, t->img_uuid, t->aux_uuid, &om) == 0 &&
		      !strcmp(om.parent_uuid, t->parent_uuid);
	else if (!out)
		out = md_get(sd, t->img_uuid, t->parent_uuid, &om) == 0 &&
		      om.role == CP_VOL_ROLE_LEAF;
	if (out) {
		if (t->step < MG_COPIED)
			t->step = MG_COPIED;  /* the repoint follows a copy */
		r = merge_run(x);
		return r < 0 ? r : VOL_OP_FINISHED;
	}
	r = md_get(sd, t->img_uuid, t->vol_uuid, &vm);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (vm.legality == CP_VOL_LEGAL)
		return 0;
	return md_set_role(p, sd, t->img_uuid, t->vol_uuid, 0, CP_VOL_LEGAL,
			   NULL);
}

struct merge_args {
	const char *img, *vol;
	const struct cp_volmeta *m;
};

static int merge_precheck(struct vol_op_ctx *x)
{
	const struct merge_args *a = x->args;
	const char *img = a->img, *vol = a->vol;
	const struct cp_volmeta *m = a->m;
	cp_sd *sd = x->sd;
	struct cp_task *t = x->t;
	struct cp_volmeta pm;
	char cimg[CP_UUID_STR_LEN + 1] = "", cvol[CP_UUID_STR_LEN + 1] = "";
	size_t nch;
	int r;

	if (m->role == CP_VOL_ROLE_SHARED)
		return cp_error(-EINVAL, "volume %s is a template: delete it instead "
				"of merging", vol);
	if (m->legality != CP_VOL_LEGAL)
		return cp_error(-EINVAL, "volume %s is ILLEGAL: a task is changing it",
				vol);
	if ((r = count_children(sd, img, vol, false, &nch, cimg, cvol)) < 0)
		return r;
	strcpy(t->img_uuid, img);
	strcpy(t->vol_uuid, vol);
	strcpy(t->parent_uuid, m->parent_uuid);
	if (nch)
		strcpy(t->aux_uuid, cvol);
	bool parent_here = m->parent_uuid[0] &&
			   md_get(sd, img, m->parent_uuid, &pm) == 0;
	/* a parent in another image is a template */
	if (m->parent_uuid[0] && !parent_here &&
	    (r = find_vol_image(sd, m->parent_uuid, t->src_img_uuid)) < 0)
		return r;
	if (!parent_here) {
		/* no parent to commit into (or it is a shared template): the
		 * child pulls this layer in */
		if (!nch)
			return cp_error(-EINVAL, "volume %s is the image's only "
					"writable layer: nothing to merge it with "
					"(delete the image instead)", vol);
		t->flags |= TF_PULL;
	}
	return 0;
}

const struct vol_op vol_merge_op = {
	.type = CP_TASK_MERGE,
	.precheck = merge_precheck,
	.run = merge_run,
	.restore = merge_restore,
	.recover = vol_op_recover_forward,
};

CP_EXPORT int cp_vol_merge(cp_pool *p, const char *dom, const char *img,
			   const char *vol, const char *task_uuid,
			   cp_task_progress_fn progress, void *opaque)
{
	CP_API_ENTER();
	struct cp_volmeta m;
	struct merge_args a = {.img = img, .vol = vol, .m = &m};
	struct vol_op_ctx x = {.p = p, .progress = progress, .opaque = opaque,
			       .args = &a};
	int r;

	if ((r = cp_pool_domain(p, dom, &x.sd)) < 0 ||
	    (r = cp_sd_vol_md(x.sd, img, vol, &m)) < 0)
		return r;
	return vol_op_execute(&vol_merge_op, &x, dom, task_uuid);
}
