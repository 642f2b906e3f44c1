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
#include "pool_int.h"

#define NO_PARENT ""

/* task flags */
#define TF_FMT_SHIFT 0         /* cp_vol_format, 8 bits */
#define TF_ALLOC_SHIFT 8       /* cp_vol_alloc, 8 bits */
#define TF_NEW_IMAGE (1u << 16)
#define TF_PULL (1u << 17)     /* merge: the child pulls the volume in */
#define TF_ROLE_SHARED (1u << 18)

/* u64 slots */
#define TU_CAPACITY 0
#define TU_STORAGE 1

/* ---- small helpers ---------------------------------------------------------- */

static uint64_t round_up(uint64_t v, uint64_t a)
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

static int task_step(cp_pool *p, struct cp_task *t, uint32_t step)
{
	int r = pool_guard(p, "task step");

	if (r < 0)
		return r;
	t->step = step;
	return tj_update(pool_journal(p), t);
}

/* End a task: DONE, or FAILED/ABORTED with the error.  Journal write
 * errors here are returned only when the work itself succeeded. */
static int task_end(cp_pool *p, struct cp_task *t, int err,
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

struct progress_ctx {
	cp_pool *p;
	struct cp_task *t;
	cp_task_progress_fn fn;
	void *opaque;
	struct timespec last;
};

static void task_progress(void *opaque, uint64_t done, uint64_t total)
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

/* How a failed task is undone: (pool, domain, target domain, task). */
typedef int (*undo_fn)(cp_pool *p, cp_sd *sd, cp_sd *dst,
		       const struct cp_task *t);

/* A task failed with err before its end: undo it now (while still the
 * SPM) and record it FAILED; if the undo fails too, leave it RUNNING for
 * the next SPM's recovery.  Returns err, with its message. */
static int task_fail_undo(cp_pool *p, struct cp_task *t, int err, undo_fn undo,
			  cp_sd *sd, cp_sd *dst)
{
	char msg[256];

	if (err == -ESTALE || cp_spm_check(p) < 0)
		return err;
	snprintf(msg, sizeof(msg), "%s", cp_last_error());
	if (undo(p, sd, dst, t) == 0) {
		cp_error(err, "%s", msg);
		return task_end(p, t, err, CP_TASK_FAILED);
	}
	return cp_error(err, "%s", msg);
}

/* The image of this domain holding volume vol (a template's), or
 * -EUCLEAN naming it. */
static int find_vol_image(cp_sd *sd, const char *vol, char *img_out)
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

static int md_get(cp_sd *sd, const char *img, const char *vol,
		  struct cp_volmeta *m)
{
	return sd->ops->md_read(sd, img, vol, m);
}

/* Write m with its generation bumped (m updated). */
static int md_put(cp_pool *p, cp_sd *sd, struct cp_volmeta *m,
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
static int md_set_role(cp_pool *p, cp_sd *sd, const char *img,
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

static int vol_remove_all(cp_pool *p, cp_sd *sd, const char *img,
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

static void backing_name(char *out, size_t len, const char *img,
			 const char *parent_img, const char *parent)
{
	if (!parent_img || !parent_img[0] || !strcasecmp(img, parent_img))
		snprintf(out, len, "%s", parent);
	else
		snprintf(out, len, "../%s/%s", parent_img, parent);
}

/* qcow2 size for a capacity, fully allocated (qemu-img measure). */
static uint64_t qcow_max_size(uint64_t capacity)
{
	struct cp_measure_opts mo;
	struct cp_measure_result mr;

	cp_measure_opts_init(&mo);
	mo.virtual_size = capacity;
	if (cp_image_measure(NULL, &mo, &mr) < 0)
		return capacity + capacity / 64 + (8u << 20);
	return mr.fully_allocated;
}

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

/* The end of the highest cluster in use (qcow2), from a check pass. */
static int qcow_used_end(cp_sd *sd, const char *img, const char *vol,
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
static int count_children(cp_sd *sd, const char *img, const char *vol,
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

/* ---- create ------------------------------------------------------------------ */

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

static int cv_format(cp_sd *sd, const struct cp_task *t)
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
static int cv_rollback(cp_pool *p, cp_sd *sd, cp_sd *unused,
		       const struct cp_task *t)
{
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
static int cv_run(cp_pool *p, cp_sd *sd, struct cp_task *t)
{
	enum cp_vol_format fmt = (t->flags >> TF_FMT_SHIFT) & 0xff;
	enum cp_vol_alloc alloc = (t->flags >> TF_ALLOC_SHIFT) & 0xff;
	struct sd_vol_spec spec;
	struct cp_volmeta m;
	int r;

	if (t->step < CV_DATA) {
		memset(&spec, 0, sizeof(spec));
		spec.img_uuid = t->img_uuid;
		spec.vol_uuid = t->vol_uuid;
		spec.parent_uuid = t->parent_uuid;
		spec.format = fmt;
		spec.allocation = alloc;
		spec.size = t->u64[TU_STORAGE];
		if ((r = pool_guard(p, "volume create")) < 0 ||
		    (r = sd->ops->vol_create(sd, &spec)) < 0 ||
		    (r = task_step(p, t, CV_DATA)) < 0)
			return r;
	}
	if (t->step < CV_MD) {
		memset(&m, 0, sizeof(m));
		strcpy(m.vol_uuid, t->vol_uuid);
		strcpy(m.img_uuid, t->img_uuid);
		strcpy(m.parent_uuid, t->parent_uuid);
		strcpy(m.dom_uuid, sd->uuid);
		m.format = fmt;
		m.allocation = alloc;
		m.role = CP_VOL_ROLE_LEAF;
		m.legality = CP_VOL_ILLEGAL;
		m.capacity = t->u64[TU_CAPACITY];
		m.generation = 0;
		m.ctime = t->ctime;
		/* the description rides in the task message until done */
		snprintf(m.description, sizeof(m.description), "%s", t->message);
		if ((r = md_put(p, sd, &m, "metadata write")) < 0 ||
		    (r = task_step(p, t, CV_MD)) < 0)
			return r;
	}
	if (t->step < CV_FORMAT) {
		if ((r = pool_guard(p, "volume format")) < 0 ||
		    (r = cv_format(sd, t)) < 0 ||
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

static int vol_create_task(cp_pool *p, cp_sd *sd, struct cp_task *t,
			   struct cp_volmeta *out)
{
	int r = task_begin(p, t);

	if (r < 0)
		return r;
	r = cv_run(p, sd, t);
	if (r < 0)
		return task_fail_undo(p, t, r, cv_rollback, sd, NULL);
	t->message[0] = '\0';
	r = task_end(p, t, 0, CP_TASK_DONE);
	if (r == 0 && out)
		r = md_get(sd, t->img_uuid, t->vol_uuid, out);
	return r;
}

CP_EXPORT int cp_vol_create(cp_pool *p, const char *dom,
			    const struct cp_vol_create_opts *uo,
			    struct cp_volmeta *out)
{
	struct cp_vol_create_opts o;
	struct cp_volmeta pm;
	struct cp_task t;
	cp_sd *sd;
	int r;

	cp_vol_create_opts_init(&o);
	if (!uo || uo->size < offsetof(struct cp_vol_create_opts, capacity))
		return cp_error(-EINVAL, "volume create: bad options");
	memcpy(&o, uo, CP_MIN(uo->size, sizeof(o)));
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
	if ((r = pool_begin_structural(p)) < 0)
		return r;
	task_init(&t, CP_TASK_CREATE_VOLUME, o.task_uuid, p, dom);
	bool has_parent = o.parent_uuid && o.parent_uuid[0];
	bool other_img = o.parent_img_uuid && o.parent_img_uuid[0] &&
			 (!o.img_uuid || strcasecmp(o.parent_img_uuid, o.img_uuid));
	if (o.img_uuid && o.img_uuid[0])
		strcpy(t.img_uuid, o.img_uuid);
	else if ((r = cp_uuid_generate(t.img_uuid)) < 0)
		goto out;
	if (o.vol_uuid && o.vol_uuid[0])
		strcpy(t.vol_uuid, o.vol_uuid);
	else if ((r = cp_uuid_generate(t.vol_uuid)) < 0)
		goto out;
	/* the image: new unless a snapshot of it */
	struct cp_uuid_str *vols = NULL;
	size_t nv = 0;
	r = cp_sd_list_volumes(sd, t.img_uuid, &vols, &nv);
	free(vols);
	if (r < 0)
		goto out;
	if (has_parent && !other_img) {
		if (nv == 0) {
			r = cp_error(-ENOENT, "domain %s: image %s not found", dom,
				     t.img_uuid);
			goto out;
		}
		if ((r = md_get(sd, t.img_uuid, o.parent_uuid, &pm)) < 0)
			goto out;
		if (pm.role != CP_VOL_ROLE_LEAF || pm.legality != CP_VOL_LEGAL) {
			r = cp_error(-EINVAL, "volume %s is not the image's legal leaf: "
				     "snapshots go on top of the leaf", o.parent_uuid);
			goto out;
		}
		strcpy(t.parent_uuid, o.parent_uuid);
	} else {
		if (nv) {
			r = cp_error(-EEXIST, "domain %s: image %s exists (give a "
				     "parent to add a snapshot)", dom, t.img_uuid);
			goto out;
		}
		t.flags |= TF_NEW_IMAGE;
		if (has_parent) {  /* thin clone: the parent is a template */
			if ((r = md_get(sd, o.parent_img_uuid, o.parent_uuid, &pm)) < 0)
				goto out;
			if (pm.role != CP_VOL_ROLE_SHARED || pm.legality != CP_VOL_LEGAL) {
				r = cp_error(-EINVAL, "volume %s of image %s is not a "
					     "template: only templates are shared "
					     "between images", o.parent_uuid,
					     o.parent_img_uuid);
				goto out;
			}
			strcpy(t.parent_uuid, o.parent_uuid);
			strcpy(t.src_img_uuid, o.parent_img_uuid);
		}
	}
	if (md_get(sd, t.img_uuid, t.vol_uuid, &pm) == 0 ||
	    sd->ops->vol_exists(sd, t.img_uuid, t.vol_uuid) > 0) {
		r = cp_error(-EEXIST, "domain %s: volume %s exists", dom, t.vol_uuid);
		goto out;
	}
	if (has_parent) {
		if (o.capacity == 0)
			o.capacity = pm.capacity;
		if (o.capacity < pm.capacity) {
			r = cp_error(-EINVAL, "volume create: capacity %" PRIu64
				     " is smaller than the parent's %" PRIu64,
				     o.capacity, pm.capacity);
			goto out;
		}
		if (o.format == CP_VOL_FORMAT_RAW) {
			r = cp_error(-EINVAL, "volume create: a snapshot layer must be "
				     "cow (qcow2), not raw");
			goto out;
		}
	}
	if (o.capacity == 0 || o.capacity % 512) {
		r = cp_error(-EINVAL, "volume create: capacity must be a positive "
			     "multiple of 512 bytes");
		goto out;
	}
	t.flags |= (uint32_t)o.format << TF_FMT_SHIFT;
	t.flags |= (uint32_t)o.allocation << TF_ALLOC_SHIFT;
	t.u64[TU_CAPACITY] = o.capacity;
	t.u64[TU_STORAGE] = initial_storage(sd, o.format, o.allocation,
					    o.capacity, o.initial_size);
	snprintf(t.message, sizeof(t.message), "%s",
		 o.description ? o.description : "");
	r = vol_create_task(p, sd, &t, out);
out:
	pool_end_structural(p);
	return r;
}

/* ---- delete ------------------------------------------------------------------- */

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

static int dv_run(cp_pool *p, cp_sd *sd, struct cp_task *t)
{
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

CP_EXPORT int cp_vol_delete(cp_pool *p, const char *dom, const char *img,
			    const char *vol, const char *task_uuid)
{
	struct cp_volmeta m;
	struct cp_task t;
	size_t nch;
	cp_sd *sd;
	int r;

	if ((r = cp_pool_domain(p, dom, &sd)) < 0 ||
	    (r = cp_sd_vol_md(sd, img, vol, &m)) < 0)
		return r;
	if ((r = pool_begin_structural(p)) < 0)
		return r;
	if ((r = count_children(sd, img, vol, false, &nch, NULL, NULL)) < 0)
		goto out;
	if (m.role == CP_VOL_ROLE_SHARED) {
		if ((r = template_in_use(sd, img, vol)) < 0)
			goto out;
	} else if (nch) {
		r = cp_error(-EBUSY, "volume %s has a child: delete the leaf, or "
			     "merge this snapshot (volume merge)", vol);
		goto out;
	}
	task_init(&t, CP_TASK_DELETE_VOLUME, task_uuid, p, dom);
	strcpy(t.img_uuid, img);
	strcpy(t.vol_uuid, vol);
	strcpy(t.parent_uuid, m.parent_uuid);
	if (m.parent_uuid[0]) {
		struct cp_volmeta pm;
		/* a parent in another image is a template */
		if (md_get(sd, img, m.parent_uuid, &pm) < 0 &&
		    (r = find_vol_image(sd, m.parent_uuid, t.src_img_uuid)) < 0)
			goto out;
	}
	if ((r = task_begin(p, &t)) < 0)
		goto out;
	r = dv_run(p, sd, &t);
	if (r != -ESTALE)
		r = task_end(p, &t, r, CP_TASK_FAILED);
out:
	pool_end_structural(p);
	return r;
}

static int di_run(cp_pool *p, cp_sd *sd, struct cp_task *t)
{
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

CP_EXPORT int cp_img_delete(cp_pool *p, const char *dom, const char *img,
			    const char *task_uuid)
{
	struct cp_task t;
	size_t n = 0;
	cp_sd *sd;
	int r;

	if ((r = cp_pool_domain(p, dom, &sd)) < 0)
		return r;
	if (!img || !cp_uuid_valid(img))
		return cp_error(-EINVAL, "image UUID '%s' is not valid",
				img ? img : "");
	if ((r = pool_begin_structural(p)) < 0)
		return r;
	struct cp_uuid_str *vols = NULL;
	r = cp_sd_list_volumes(sd, img, &vols, &n);
	if (r == 0 && n == 0)
		r = cp_error(-ENOENT, "domain %s: image %s not found", dom, img);
	for (size_t i = 0; i < n && r == 0; i++) {
		struct cp_volmeta m;
		if (md_get(sd, img, vols[i].s, &m) == 0 &&
		    m.role == CP_VOL_ROLE_SHARED)
			r = template_in_use(sd, img, vols[i].s);
	}
	free(vols);
	if (r < 0)
		goto out;
	task_init(&t, CP_TASK_DELETE_IMAGE, task_uuid, p, dom);
	strcpy(t.img_uuid, img);
	if ((r = task_begin(p, &t)) < 0)
		goto out;
	r = di_run(p, sd, &t);
	if (r != -ESTALE)
		r = task_end(p, &t, r, CP_TASK_FAILED);
out:
	pool_end_structural(p);
	return r;
}

/* ---- merge (snapshot delete) --------------------------------------------------- */

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
				       &c)) < 0)
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

static int mg_run(cp_pool *p, cp_sd *sd, struct cp_task *t,
		  cp_task_progress_fn fn, void *opaque)
{
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
		if ((r = mg_copy(p, sd, t, fn, opaque)) < 0 ||
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

CP_EXPORT int cp_vol_merge(cp_pool *p, const char *dom, const char *img,
			   const char *vol, const char *task_uuid,
			   cp_task_progress_fn progress, void *opaque)
{
	struct cp_volmeta m, pm;
	struct cp_task t;
	char cimg[CP_UUID_STR_LEN + 1] = "", cvol[CP_UUID_STR_LEN + 1] = "";
	size_t nch;
	cp_sd *sd;
	int r;

	if ((r = cp_pool_domain(p, dom, &sd)) < 0 ||
	    (r = cp_sd_vol_md(sd, img, vol, &m)) < 0)
		return r;
	if ((r = pool_begin_structural(p)) < 0)
		return r;
	if (m.role == CP_VOL_ROLE_SHARED) {
		r = cp_error(-EINVAL, "volume %s is a template: delete it instead "
			     "of merging", vol);
		goto out;
	}
	if (m.legality != CP_VOL_LEGAL) {
		r = cp_error(-EINVAL, "volume %s is ILLEGAL: a task is changing it",
			     vol);
		goto out;
	}
	if ((r = count_children(sd, img, vol, false, &nch, cimg, cvol)) < 0)
		goto out;
	task_init(&t, CP_TASK_MERGE, task_uuid, p, dom);
	strcpy(t.img_uuid, img);
	strcpy(t.vol_uuid, vol);
	strcpy(t.parent_uuid, m.parent_uuid);
	if (nch)
		strcpy(t.aux_uuid, cvol);
	bool parent_here = m.parent_uuid[0] &&
			   md_get(sd, img, m.parent_uuid, &pm) == 0;
	/* a parent in another image is a template */
	if (m.parent_uuid[0] && !parent_here &&
	    (r = find_vol_image(sd, m.parent_uuid, t.src_img_uuid)) < 0)
		goto out;
	if (!parent_here) {
		/* no parent to commit into (or it is a shared template): the
		 * child pulls this layer in */
		if (!nch) {
			r = cp_error(-EINVAL, "volume %s is the image's only "
				     "writable layer: nothing to merge it with "
				     "(delete the image instead)", vol);
			goto out;
		}
		t.flags |= TF_PULL;
	}
	if ((r = task_begin(p, &t)) < 0)
		goto out;
	r = mg_run(p, sd, &t, progress, opaque);
	if (r != -ESTALE)
		r = task_end(p, &t, r, CP_TASK_FAILED);
out:
	pool_end_structural(p);
	return r;
}

/* ---- templates, full clones, copies --------------------------------------------- */

enum {
	CP_DATA = 1,    /* target data created */
	CP_MD = 2,      /* target record ILLEGAL */
	CP_COPIED = 3,  /* content copied */
	CP_LEGAL = 4,
};

/* Copy the chain of (src sd, img, vol) collapsed into a new volume
 * t->aux_uuid of image t->dst img on dsd; used by templates and full
 * clones.  t: img/vol = source; src_img/src_vol = new image/volume. */
static int collapse_run(cp_pool *p, cp_sd *sd, struct cp_task *t,
			cp_task_progress_fn fn, void *opaque)
{
	enum cp_vol_format fmt = (t->flags >> TF_FMT_SHIFT) & 0xff;
	enum cp_vol_alloc alloc = (t->flags >> TF_ALLOC_SHIFT) & 0xff;
	struct progress_ctx px = {.p = p, .t = t, .fn = fn, .opaque = opaque};
	struct sd_vol_spec spec;
	struct cp_volmeta m;
	int r;

	if (t->step < CP_DATA) {
		memset(&spec, 0, sizeof(spec));
		spec.img_uuid = t->src_img_uuid;
		spec.vol_uuid = t->src_vol_uuid;
		spec.parent_uuid = NO_PARENT;
		spec.format = fmt;
		spec.allocation = alloc;
		spec.size = t->u64[TU_STORAGE];
		if ((r = pool_guard(p, "volume create")) < 0 ||
		    (r = sd->ops->vol_create(sd, &spec)) < 0 ||
		    (r = task_step(p, t, CP_DATA)) < 0)
			return r;
	}
	if (t->step < CP_MD) {
		memset(&m, 0, sizeof(m));
		strcpy(m.vol_uuid, t->src_vol_uuid);
		strcpy(m.img_uuid, t->src_img_uuid);
		strcpy(m.dom_uuid, sd->uuid);
		m.format = fmt;
		m.allocation = alloc;
		m.role = (t->flags & TF_ROLE_SHARED) ? CP_VOL_ROLE_SHARED
						      : CP_VOL_ROLE_LEAF;
		m.legality = CP_VOL_ILLEGAL;
		m.capacity = t->u64[TU_CAPACITY];
		m.ctime = t->ctime;
		snprintf(m.description, sizeof(m.description), "%s", t->message);
		if ((r = md_put(p, sd, &m, "metadata write")) < 0 ||
		    (r = task_step(p, t, CP_MD)) < 0)
			return r;
	}
	if (t->step < CP_COPIED) {
		struct cp_sd_chain src, dst;
		struct cp_convert_opts co;
		if ((r = pool_guard(p, "copy")) < 0)
			return r;
		/* (re)format the target, then copy the collapsed chain */
		struct cp_task ft = *t;
		strcpy(ft.img_uuid, t->src_img_uuid);
		strcpy(ft.vol_uuid, t->src_vol_uuid);
		ft.parent_uuid[0] = '\0';
		ft.src_img_uuid[0] = '\0';
		if ((r = cv_format(sd, &ft)) < 0)
			return r;
		if ((r = cp_sd_open_image(sd, t->img_uuid, t->vol_uuid, false,
					  &src)) < 0)
			return r;
		if ((r = cp_sd_open_image(sd, t->src_img_uuid, t->src_vol_uuid,
					  true, &dst)) < 0) {
			cp_sd_close_image(&src);
			return r;
		}
		cp_convert_opts_init(&co);
		co.target_is_zero = fmt == CP_VOL_FORMAT_COW &&
				    alloc == CP_VOL_ALLOC_SPARSE;
		co.out_of_order = true;
		co.progress = task_progress;
		co.opaque = &px;
		r = cp_image_convert(src.img, dst.img, &co);
		int r2 = cp_sd_close_image(&dst);
		cp_sd_close_image(&src);
		if (r == 0)
			r = r2;
		if (r < 0)
			return cp_error_prefix(r, "copy of volume %s", t->vol_uuid);
		if ((r = task_step(p, t, CP_COPIED)) < 0)
			return r;
	}
	return md_set_role(p, sd, t->src_img_uuid, t->src_vol_uuid, 0,
			   CP_VOL_LEGAL, NULL);
}

static int collapse_rollback(cp_pool *p, cp_sd *sd, cp_sd *unused,
			     const struct cp_task *t)
{
	int r = md_set_role(p, sd, t->src_img_uuid, t->src_vol_uuid, 0,
			    CP_VOL_ILLEGAL, NULL);

	if (r < 0 && r != -ENOENT)
		return r;
	return vol_remove_all(p, sd, t->src_img_uuid, t->src_vol_uuid);
}

static int collapse_task(cp_pool *p, cp_sd *sd, struct cp_task *t,
			 cp_task_progress_fn fn, void *opaque,
			 struct cp_volmeta *out)
{
	int r = task_begin(p, t);

	if (r < 0)
		return r;
	r = collapse_run(p, sd, t, fn, opaque);
	if (r < 0)
		return task_fail_undo(p, t, r, collapse_rollback, sd, NULL);
	t->message[0] = '\0';
	r = task_end(p, t, 0, CP_TASK_DONE);
	if (r == 0 && out)
		r = md_get(sd, t->src_img_uuid, t->src_vol_uuid, out);
	return r;
}

static int collapse_prepare(cp_pool *p, cp_sd *sd, struct cp_task *t,
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

CP_EXPORT int cp_template_create(cp_pool *p, const char *dom,
				 const struct cp_template_opts *uo,
				 cp_task_progress_fn progress, void *opaque,
				 struct cp_volmeta *out)
{
	struct cp_template_opts o;
	struct cp_task t;
	char leaf[CP_UUID_STR_LEN + 1];
	cp_sd *sd;
	int r;

	cp_template_opts_init(&o);
	if (!uo || uo->size < offsetof(struct cp_template_opts, format))
		return cp_error(-EINVAL, "template create: bad options");
	memcpy(&o, uo, CP_MIN(uo->size, sizeof(o)));
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
	if ((r = pool_begin_structural(p)) < 0)
		return r;
	task_init(&t, CP_TASK_TEMPLATE, o.task_uuid, p, dom);
	t.flags |= TF_ROLE_SHARED;
	r = collapse_prepare(p, sd, &t, o.img_uuid, o.vol_uuid, o.tmpl_img_uuid,
			     o.tmpl_vol_uuid, o.format, CP_VOL_ALLOC_SPARSE,
			     o.description);
	if (r == 0)
		r = collapse_task(p, sd, &t, progress, opaque, out);
	pool_end_structural(p);
	return r;
}

CP_EXPORT void cp_clone_opts_init(struct cp_clone_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->format = CP_VOL_FORMAT_COW;
	o->allocation = CP_VOL_ALLOC_SPARSE;
}

CP_EXPORT int cp_template_clone(cp_pool *p, const char *dom,
				const struct cp_clone_opts *uo,
				cp_task_progress_fn progress, void *opaque,
				struct cp_volmeta *out)
{
	struct cp_clone_opts o;
	struct cp_volmeta tm;
	struct cp_task t;
	cp_sd *sd;
	int r;

	cp_clone_opts_init(&o);
	if (!uo || uo->size < offsetof(struct cp_clone_opts, full))
		return cp_error(-EINVAL, "template clone: bad options");
	memcpy(&o, uo, CP_MIN(uo->size, sizeof(o)));
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
	if ((r = pool_begin_structural(p)) < 0)
		return r;
	task_init(&t, CP_TASK_CLONE, o.task_uuid, p, dom);
	r = collapse_prepare(p, sd, &t, o.tmpl_img_uuid, o.tmpl_vol_uuid,
			     o.img_uuid, o.vol_uuid, o.format, o.allocation,
			     o.description);
	if (r == 0)
		r = collapse_task(p, sd, &t, progress, opaque, out);
	pool_end_structural(p);
	return r;
}

/* Copy an image, layer by layer, to another domain (same UUIDs).
 * Steps: 1 all target volumes created and their records ILLEGAL (in
 * chain order), 2 + i layer i copied, final: all LEGAL.  Rollback: the
 * image goes from the target. */
static int copy_run(cp_pool *p, cp_sd *src, cp_sd *dst, struct cp_task *t,
		    cp_task_progress_fn fn, void *opaque)
{
	struct progress_ctx px = {.p = p, .t = t, .fn = fn, .opaque = opaque};
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
		struct cp_sd_chain sc, dc;
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
		if ((r = pool_guard(p, "copy")) < 0 || (r = cv_format(dst, &ft)) < 0)
			break;
		if ((r = cp_sd_open_image(src, t->img_uuid, chain[i].vol_uuid,
					  false, &sc)) < 0)
			break;
		if ((r = cp_sd_open_image(dst, t->img_uuid, chain[i].vol_uuid,
					  true, &dc)) < 0) {
			cp_sd_close_image(&sc);
			break;
		}
		cp_convert_opts_init(&co);
		co.source_top_only = chain[i].parent_uuid[0] != '\0';
		co.target_is_zero = chain[i].format == CP_VOL_FORMAT_COW;
		co.out_of_order = true;
		co.progress = task_progress;
		co.opaque = &px;
		r = cp_image_convert(sc.img, dc.img, &co);
		int r2 = cp_sd_close_image(&dc);
		cp_sd_close_image(&sc);
		if (r == 0)
			r = r2;
		if (r < 0) {
			r = cp_error_prefix(r, "copy of volume %s", chain[i].vol_uuid);
			break;
		}
		r = task_step(p, t, (uint32_t)(2 + i));
	}
	for (size_t i = 0; i < n && r == 0; i++)
		r = md_set_role(p, dst, t->img_uuid, chain[i].vol_uuid, 0,
				CP_VOL_LEGAL, NULL);
	free(chain);
	return r;
}

static int copy_rollback(cp_pool *p, cp_sd *src, cp_sd *dst,
			 const struct cp_task *t)
{
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

CP_EXPORT int cp_img_copy(cp_pool *p, const char *src_dom, const char *img,
			  const char *dst_dom, const char *task_uuid,
			  cp_task_progress_fn progress, void *opaque)
{
	struct cp_volmeta *chain = NULL;
	struct cp_uuid_str *vols = NULL;
	struct cp_task t;
	cp_sd *src, *dst;
	size_t n = 0, nv = 0;
	int r;

	if ((r = cp_pool_domain(p, src_dom, &src)) < 0 ||
	    (r = cp_pool_domain(p, dst_dom, &dst)) < 0)
		return r;
	if (src == dst)
		return cp_error(-EINVAL, "image copy: source and target domain are "
				"the same (%s)", src_dom);
	if (!img || !cp_uuid_valid(img))
		return cp_error(-EINVAL, "image UUID '%s' is not valid",
				img ? img : "");
	if ((r = pool_begin_structural(p)) < 0)
		return r;
	task_init(&t, CP_TASK_COPY_IMAGE, task_uuid, p, src_dom);
	strcpy(t.img_uuid, img);
	strcpy(t.dst_dom_uuid, dst_dom);
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
		if ((r = find_vol_image(src, chain[0].parent_uuid, t.aux_uuid)) < 0)
			goto out;
		if (md_get(dst, t.aux_uuid, chain[0].parent_uuid, &tm) < 0) {
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
	if ((r = task_begin(p, &t)) < 0)
		goto out;
	r = copy_run(p, src, dst, &t, progress, opaque);
	if (r < 0)
		r = task_fail_undo(p, &t, r, copy_rollback, src, dst);
	else
		r = task_end(p, &t, 0, CP_TASK_DONE);
out:
	free(chain);
	free(vols);
	pool_end_structural(p);
	return r;
}

/* ---- small structural calls --------------------------------------------------- */

CP_EXPORT int cp_vol_extend(cp_pool *p, const char *dom, const char *img,
			    const char *vol, uint64_t size, uint64_t *new_size)
{
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

/* ---- recovery ------------------------------------------------------------------ */

int vol_recover_task(cp_pool *p, struct cp_task *t)
{
	cp_sd *sd, *dst;
	struct cp_volmeta m;
	int r;

	if ((r = cp_pool_domain(p, t->dom_uuid, &sd)) < 0)
		goto fail;
	t->state = CP_TASK_RECOVERING;
	t->spm_lver = pool_spm_lver(p);
	if ((r = tj_update(pool_journal(p), t)) < 0)
		return r;
	switch (t->type) {
	case CP_TASK_CREATE_VOLUME:
		/* done but for the journal: keep it; otherwise undo */
		if (md_get(sd, t->img_uuid, t->vol_uuid, &m) == 0 &&
		    m.legality == CP_VOL_LEGAL) {
			r = 0;
			break;
		}
		r = cv_rollback(p, sd, NULL, t);
		if (r == 0)
			return task_end(p, t, -ECANCELED, CP_TASK_ABORTED);
		break;
	case CP_TASK_TEMPLATE:
	case CP_TASK_CLONE:
		if (md_get(sd, t->src_img_uuid, t->src_vol_uuid, &m) == 0 &&
		    m.legality == CP_VOL_LEGAL) {
			r = 0;
			break;
		}
		r = collapse_rollback(p, sd, NULL, t);
		if (r == 0)
			return task_end(p, t, -ECANCELED, CP_TASK_ABORTED);
		break;
	case CP_TASK_COPY_IMAGE:
		if ((r = cp_pool_domain(p, t->dst_dom_uuid, &dst)) < 0)
			break;
		r = copy_rollback(p, sd, dst, t);
		if (r == 0)
			return task_end(p, t, -ECANCELED, CP_TASK_ABORTED);
		break;
	case CP_TASK_DELETE_VOLUME:
		r = dv_run(p, sd, t);
		break;
	case CP_TASK_DELETE_IMAGE:
		r = di_run(p, sd, t);
		break;
	case CP_TASK_MERGE:
		r = mg_run(p, sd, t, NULL, NULL);
		break;
	case CP_TASK_EXTEND:
		r = 0;
		break;
	}
	if (r == -ESTALE)
		return r;
fail:
	if (r < 0) {
		/* keep it for the next try; the message says why */
		snprintf(t->message, sizeof(t->message), "recovery: %s",
			 cp_last_error());
		t->error = r;
		if (cp_spm_check(p) == 0)
			tj_update(pool_journal(p), t);
		return r;
	}
	t->message[0] = '\0';
	return task_end(p, t, 0, CP_TASK_DONE);
}
