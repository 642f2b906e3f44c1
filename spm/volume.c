/* spm/volume.c - image and volume lifecycle: the SPM's structural work.
 *
 * Every operation is a task journaled in the master domain before its
 * first change (task.c) and records each step it completes.  The order of
 * the steps is chosen so that a crash between any two leaves a state the
 * journal describes, and recovery (vol_recover_task, run by the next SPM)
 * either rolls back (create, template, clone, copy: nothing was promised
 * yet; the new volumes are removed) or rolls forward (delete, merge: the
 * data is already where it must end up, or the step is repeatable).
 *
 * This file holds the skeleton every operation shares (vol_op_execute:
 * precheck, journal, run, end or rollback; see volume_int.h), the helpers
 * they share, and the two structural calls that are not tasks (extend,
 * description).  The operations are descriptors in vol_create.c,
 * vol_delete.c, vol_merge.c, vol_clone.c and vol_copy.c; recovery is
 * vol_recover.c.
 *
 * Rules kept by every operation:
 *   - a new volume's record is written ILLEGAL before its data is
 *     formatted and turns LEGAL last; a volume about to be removed turns
 *     ILLEGAL first;
 *   - every record write bumps the volume's generation;
 *   - every write is preceded by pool_guard(): the SPM lease must still be
 *     held (-ESTALE otherwise) and, in tests, a crash point may fire;
 *   - removals are idempotent, so roll-forward may repeat them.
 *
 * Backing names stored in qcow2 headers: "<parent>" for a parent in the
 * same image, "../<image>/<parent>" for a template in another image; on a
 * file domain these are plain relative paths qemu-img follows too.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "volume_int.h"

/* ---- tasks ------------------------------------------------------------------ */

uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static void task_init(struct cp_task *t, enum cp_task_type type,
		      const char *task_uuid, cp_pool *p, const char *dom)
{
	memset(t, 0, sizeof(*t));
	t->type = type;
	t->state = CP_TASK_RUNNING;
	t->spm_lver = pool_spm_lver(p);
	if (task_uuid)
		snprintf(t->task_uuid, sizeof(t->task_uuid), "%s", task_uuid);
	snprintf(t->dom_uuid, sizeof(t->dom_uuid), "%s", dom);
}

static int task_begin(cp_pool *p, struct cp_task *t)
{
	int r;

	if (!t->task_uuid[0] && (r = cp_uuid_generate(t->task_uuid)) < 0)
		return r;
	if (!cp_uuid_valid(t->task_uuid))
		return cp_error(-EINVAL, "task UUID '%s' is not valid", t->task_uuid);
	if ((r = pool_guard(p, "task begin")) < 0)
		return r;
	return tj_begin(pool_journal(p), t);
}

int task_step(cp_pool *p, struct cp_task *t, uint32_t step)
{
	int r = pool_guard(p, "task step");

	if (r < 0)
		return r;
	t->step = step;
	return tj_update(pool_journal(p), t);
}

int task_end(cp_pool *p, struct cp_task *t, int err,
	     enum cp_task_state fail_state)
{
	int r;

	t->state = err < 0 ? fail_state : CP_TASK_DONE;
	t->error = err < 0 ? err : 0;
	if (err < 0)
		snprintf(t->message, sizeof(t->message), "%s", cp_last_error());
	else
		t->message[0] = '\0';
	if (cp_spm_check(p) < 0)
		return err;  /* lease gone: the next SPM finishes it */
	r = tj_update(pool_journal(p), t);
	if (err < 0)
		cp_error(err, "%s", t->message);  /* keep the first error */
	return err < 0 ? err : r;
}

void task_progress(void *opaque, uint64_t done, uint64_t total)
{
	struct progress_ctx *x = opaque;
	struct timespec now;

	if (x->fn)
		x->fn(x->opaque, done, total);
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (done < total &&
	    (now.tv_sec - x->last.tv_sec) * 1000000000L +
		    (now.tv_nsec - x->last.tv_nsec) < 500000000L)
		return;
	x->last = now;
	x->t->done = done;
	x->t->total = total;
	if (cp_spm_check(x->p) == 0)
		tj_update(pool_journal(x->p), x->t);
}

int vol_convert(cp_sd *src, const char *simg, const char *svol, cp_sd *dst,
		const char *dimg, const char *dvol, struct cp_convert_opts *co,
		struct progress_ctx *px)
{
	struct cp_sd_chain s, d;
	int r = cp_sd_open_image(src, simg, svol, false, &s);

	if (r < 0)
		return r;
	if ((r = cp_sd_open_image(dst, dimg, dvol, true, &d)) < 0) {
		cp_sd_close_image(&s);
		return r;
	}
	co->out_of_order = true;
	co->progress = task_progress;
	co->opaque = px;
	r = cp_image_convert(s.img, d.img, co);
	int r2 = cp_sd_close_image(&d);
	cp_sd_close_image(&s);
	if (r == 0)
		r = r2;
	if (r < 0)
		return cp_error_prefix(r, "copy of volume %s", svol);
	return 0;
}

/* A task failed with err before its end: undo what it changed now, while
 * still the SPM (roll-back operations: rollback; roll-forward ones:
 * restore, which makes the volumes LEGAL again), and record it FAILED at
 * once.  If the undo fails too, the task is FAILED with TF_UNFINISHED and
 * the next SPM start undoes it.  After -ESTALE (the role is gone) nothing
 * is written: the task stays RUNNING for the next SPM.  Returns err, with
 * its message. */
static int task_fail(struct vol_op_ctx *x, int err)
{
	const struct vol_op *op = x->op;
	cp_pool *p = x->p;
	struct cp_task *t = x->t;
	int (*undo)(struct vol_op_ctx *) = op->rollback ? op->rollback
							: op->restore;
	char msg[256];
	int u = 0;

	if (err == -ESTALE || cp_spm_check(p) < 0)
		return err;
	snprintf(msg, sizeof(msg), "%s", cp_last_error());
	if (undo)
		u = undo(x);
	if (u == -ESTALE || cp_spm_check(p) < 0)
		return cp_error(err, "%s", msg);
	if (u == VOL_OP_FINISHED) {
		t->message[0] = '\0';
		return task_end(p, t, 0, CP_TASK_DONE);
	}
	if (u < 0) {
		t->flags |= TF_UNFINISHED;
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
			 " (undo: %s)", cp_last_error());
	}
	cp_error(err, "%s", msg);
	return task_end(p, t, err, CP_TASK_FAILED);
}

int vol_op_undo_failed(struct vol_op_ctx *x)
{
	const struct vol_op *op = x->op;
	int (*undo)(struct vol_op_ctx *) =
	    !op ? NULL : op->rollback ? op->rollback : op->restore;
	int r = undo ? undo(x) : 0;

	if (r < 0)
		return r;
	x->t->flags &= ~TF_UNFINISHED;
	if (r == VOL_OP_FINISHED)
		return task_end(x->p, x->t, 0, CP_TASK_DONE);
	return tj_update(pool_journal(x->p), x->t);
}

/* ---- the operation skeleton ------------------------------------------------ */

/* Journal the task, run it, and end it DONE, or FAILED after undoing what
 * it changed (task_fail). */
static int vol_op_journal_run(struct vol_op_ctx *x)
{
	const struct vol_op *op = x->op;
	struct cp_task *t = x->t;
	int r = task_begin(x->p, t);

	if (r < 0)
		return r;
	r = op->run(x);
	if (r < 0)
		return task_fail(x, r);
	t->message[0] = '\0';
	r = task_end(x->p, t, 0, CP_TASK_DONE);
	if (r == 0 && x->out && op->result)
		r = op->result(x);
	return r;
}

int vol_op_execute(const struct vol_op *op, struct vol_op_ctx *x,
		   const char *dom, const char *task_uuid)
{
	struct cp_task t;
	int r = pool_begin_structural(x->p);

	if (r < 0)
		return r;
	task_init(&t, op->type, task_uuid, x->p, dom);
	x->op = op;
	x->t = &t;
	r = op->precheck(x);
	if (r == 0)
		r = vol_op_journal_run(x);
	pool_end_structural(x->p);
	return r;
}

int vol_op_recover_forward(struct vol_op_ctx *x)
{
	return x->op->run(x);
}

int vol_op_recover_back(struct vol_op_ctx *x, const char *img,
			const char *vol)
{
	struct cp_volmeta m;
	int r;

	/* done but for the journal: keep it; otherwise undo */
	if (img && md_get(x->sd, img, vol, &m) == 0 &&
	    m.legality == CP_VOL_LEGAL)
		return 0;
	r = x->op->rollback(x);
	return r < 0 ? r : VOL_OP_ROLLED_BACK;
}

/* ---- shared helpers --------------------------------------------------------- */

int vol_new_steps(cp_pool *p, cp_sd *sd, struct cp_task *t, const char *img,
		  const char *vol, const char *parent, enum cp_vol_role role,
		  uint32_t data_step, uint32_t md_step)
{
	enum cp_vol_format fmt = (t->flags >> TF_FMT_SHIFT) & 0xff;
	enum cp_vol_alloc alloc = (t->flags >> TF_ALLOC_SHIFT) & 0xff;
	struct sd_vol_spec spec;
	struct cp_volmeta m;
	int r;

	if (t->step < data_step) {
		memset(&spec, 0, sizeof(spec));
		spec.img_uuid = img;
		spec.vol_uuid = vol;
		spec.parent_uuid = parent;
		spec.format = fmt;
		spec.allocation = alloc;
		spec.size = t->u64[TU_STORAGE];
		if ((r = pool_guard(p, "volume create")) < 0 ||
		    (r = sd->ops->vol_create(sd, &spec)) < 0 ||
		    (r = task_step(p, t, data_step)) < 0)
			return r;
	}
	if (t->step < md_step) {
		memset(&m, 0, sizeof(m));
		strcpy(m.vol_uuid, vol);
		strcpy(m.img_uuid, img);
		strcpy(m.parent_uuid, parent);
		strcpy(m.dom_uuid, sd->uuid);
		m.format = fmt;
		m.allocation = alloc;
		m.role = role;
		m.legality = CP_VOL_ILLEGAL;
		m.capacity = t->u64[TU_CAPACITY];
		m.generation = 0;
		m.ctime = t->ctime;
		/* the description rides in the task message until done */
		snprintf(m.description, sizeof(m.description), "%s", t->message);
		if ((r = md_put(p, sd, &m, "metadata write")) < 0 ||
		    (r = task_step(p, t, md_step)) < 0)
			return r;
	}
	return 0;
}

/* The image of this domain holding volume vol (a template's), or
 * -EUCLEAN naming it. */
int find_vol_image(cp_sd *sd, const char *vol, char *img_out)
{
	struct cp_uuid_str *imgs = NULL;
	struct cp_volmeta m;
	size_t ni = 0;
	int r = cp_sd_list_images(sd, &imgs, &ni);

	if (r < 0)
		return r;
	img_out[0] = '\0';
	for (size_t i = 0; i < ni && !img_out[0]; i++)
		if (sd->ops->md_read(sd, imgs[i].s, vol, &m) == 0)
			strcpy(img_out, imgs[i].s);
	free(imgs);
	if (!img_out[0])
		return cp_error(-EUCLEAN, "domain %s: volume %s not found in any "
				"image", sd->uuid, vol);
	return 0;
}

int md_get(cp_sd *sd, const char *img, const char *vol,
	   struct cp_volmeta *m)
{
	return sd->ops->md_read(sd, img, vol, m);
}

/* Write m with its generation bumped (m updated). */
int md_put(cp_pool *p, cp_sd *sd, struct cp_volmeta *m,
	   const char *where)
{
	struct cp_volmeta n = *m;
	int r = pool_guard(p, where);

	if (r < 0)
		return r;
	n.generation++;
	r = sd->ops->md_write(sd, &n);
	if (r == 0)
		*m = n;
	return r;
}

/* Change fields of an existing record (read, modify, write). */
int md_set_role(cp_pool *p, cp_sd *sd, const char *img,
		const char *vol, int role, int legality,
		const char *parent)
{
	struct cp_volmeta m;
	int r = md_get(sd, img, vol, &m);

	if (r < 0)
		return r;
	if ((role == 0 || (int)m.role == role) &&
	    (legality == 0 || (int)m.legality == legality) &&
	    (!parent || !strcasecmp(m.parent_uuid, parent)))
		return 0;  /* already so (idempotent roll-forward) */
	if (role)
		m.role = (enum cp_vol_role)role;
	if (legality)
		m.legality = (enum cp_vol_legality)legality;
	if (parent)
		snprintf(m.parent_uuid, sizeof(m.parent_uuid), "%s", parent);
	return md_put(p, sd, &m, "metadata write");
}

int vol_remove_all(cp_pool *p, cp_sd *sd, const char *img,
		   const char *vol)
{
	int r = pool_guard(p, "volume remove");

	if (r < 0)
		return r;
	r = sd->ops->vol_remove(sd, img, vol);
	if (r < 0)
		return r;
	if ((r = pool_guard(p, "metadata remove")) < 0)
		return r;
	return sd->ops->md_remove(sd, img, vol);
}

void backing_name(char *out, size_t len, const char *img,
		  const char *parent_img, const char *parent)
{
	if (!parent_img || !parent_img[0] || !strcasecmp(img, parent_img))
		snprintf(out, len, "%s", parent);
	else
		snprintf(out, len, "../%s/%s", parent_img, parent);
}

/* qcow2 size for a capacity, fully allocated (qemu-img measure). */
uint64_t qcow_max_size(uint64_t capacity)
{
	struct cp_measure_opts mo;
	struct cp_measure_result mr;

	cp_measure_opts_init(&mo);
	mo.virtual_size = capacity;
	if (cp_image_measure(NULL, &mo, &mr) < 0)
		return capacity + capacity / 64 + (8u << 20);
	return mr.fully_allocated;
}

/* The end of the highest cluster in use (qcow2), from a check pass. */
int qcow_used_end(cp_sd *sd, const char *img, const char *vol,
		  uint64_t *end)
{
	struct cp_sd_chain c;
	struct cp_check_result cr;
	int r = cp_sd_open_image(sd, img, vol, false, &c);

	if (r < 0)
		return r;
	memset(&cr, 0, sizeof(cr));
	r = cp_image_check(c.img, 0, &cr, NULL, NULL);
	cp_sd_close_image(&c);
	if (r < 0)
		return r;
	*end = cr.image_end_offset;
	return 0;
}

/* Volumes of this domain (any image) that name vol as their parent. */
int count_children(cp_sd *sd, const char *img, const char *vol,
		   bool other_images_only, size_t *n,
		   char *one_img, char *one_vol)
{
	struct cp_uuid_str *imgs = NULL;
	size_t ni = 0, cnt = 0;
	int r = cp_sd_list_images(sd, &imgs, &ni);

	if (r < 0)
		return r;
	for (size_t i = 0; i < ni && r == 0; i++) {
		struct cp_uuid_str *vols = NULL;
		size_t nv = 0;
		if (other_images_only && !strcasecmp(imgs[i].s, img))
			continue;
		if ((r = cp_sd_list_volumes(sd, imgs[i].s, &vols, &nv)) < 0)
			break;
		for (size_t j = 0; j < nv; j++) {
			struct cp_volmeta m;
			if (md_get(sd, imgs[i].s, vols[j].s, &m) < 0)
				continue;
			if (!strcasecmp(m.parent_uuid, vol)) {
				if (!cnt && one_img) {
					strcpy(one_img, imgs[i].s);
					strcpy(one_vol, vols[j].s);
				}
				cnt++;
			}
		}
		free(vols);
	}
	free(imgs);
	*n = cnt;
	return r;
}

/* ---- small structural calls --------------------------------------------------- */

CP_EXPORT int cp_vol_extend(cp_pool *p, const char *dom, const char *img,
			    const char *vol, uint64_t size, uint64_t *new_size)
{
	CP_API_ENTER();
	struct cp_volmeta m;
	cp_sd *sd;
	int r;

	if ((r = cp_pool_domain(p, dom, &sd)) < 0 ||
	    (r = cp_sd_vol_md(sd, img, vol, &m)) < 0)
		return r;
	if (m.format == CP_VOL_FORMAT_COW && size > qcow_max_size(m.capacity))
		return cp_error(-EINVAL, "volume %s: %" PRIu64 " bytes is more than "
				"a fully allocated qcow2 of %" PRIu64 " bytes needs "
				"(%" PRIu64 ")", vol, size, m.capacity,
				qcow_max_size(m.capacity));
	if ((r = pool_begin_structural(p)) < 0)
		return r;
	r = pool_guard(p, "lvextend");
	if (r == 0)
		r = sd->ops->vol_resize(sd, img, vol, size, false, new_size);
	pool_end_structural(p);
	return r;
}

CP_EXPORT int cp_vol_set_description(cp_pool *p, const char *dom,
				     const char *img, const char *vol,
				     uint64_t expected_gen,
				     const char *description)
{
	CP_API_ENTER();
	struct cp_volmeta m;
	cp_sd *sd;
	int r;

	if ((r = cp_pool_domain(p, dom, &sd)) < 0)
		return r;
	if (!description || strlen(description) > CP_VOLMETA_DESC_MAX)
		return cp_error(-EINVAL, "description must be at most %d bytes",
				CP_VOLMETA_DESC_MAX);
	if ((r = pool_begin_structural(p)) < 0)
		return r;
	r = cp_sd_vol_md(sd, img, vol, &m);
	if (r == 0 && m.generation != expected_gen)
		r = cp_error(-ESTALE, "volume %s: generation %" PRIu64 " expected, "
			     "%" PRIu64 " on disk", vol, expected_gen, m.generation);
	if (r == 0) {
		snprintf(m.description, sizeof(m.description), "%s", description);
		r = md_put(p, sd, &m, "metadata write");
	}
	pool_end_structural(p);
	return r;
}

