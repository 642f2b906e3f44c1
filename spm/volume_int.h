/* spm/volume_int.h - private: the journaled volume operations.
 *
 * Every structural operation of the SPM is one skeleton (volume.c):
 *
 *   public call: check the arguments, find the domains
 *   vol_op_execute():
 *     structural lock -> task in memory -> op->precheck (pool state, fill
 *     the task) -> journal (task_begin) -> op->run (records each step)
 *     -> task DONE (op->result reads what was made)
 *        or, on failure: op->rollback and FAILED (roll-back operations),
 *        FAILED (roll-forward operations), nothing after -ESTALE
 *   at the next SPM start: vol_recover_task() -> op->recover
 *
 * An operation is a descriptor, struct vol_op, in the file of its family
 * (one section per file below); the descriptors are listed once, for
 * recovery, in vol_recover.c.
 */
#ifndef CP_SPM_VOLUME_INT_H
#define CP_SPM_VOLUME_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

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

/* ---- volume.c: the operation skeleton and shared helpers ---------------- */

struct vol_op;

/* What an operation works on. */
struct vol_op_ctx {
	const struct vol_op *op;
	cp_pool *p;
	cp_sd *sd;                     /* the task's domain */
	cp_sd *dst;                    /* copy: the target domain */
	struct cp_task *t;
	cp_task_progress_fn progress;  /* NULL in recovery */
	void *opaque;
	void *args;                    /* precheck: the call's arguments */
	struct cp_volmeta *out;        /* result: the new record, or NULL */
};

/* op->recover returns this when it rolled the task back (the task ends
 * ABORTED with -ECANCELED); 0 when the task is finished (DONE). */
#define VOL_OP_ROLLED_BACK 1
/* op->restore finished the task after all. */
#define VOL_OP_FINISHED 2

struct vol_op {
	enum cp_task_type type;
	/* Under the structural lock, before the journal: check the pool's
	 * state and fill x->t from x->args.  No change on storage. */
	int (*precheck)(struct vol_op_ctx *x);
	/* Run, or resume (recovery), from x->t->step on. */
	int (*run)(struct vol_op_ctx *x);
	/* Undo a run that failed or was cut short (create, template,
	 * clone, copy: nothing was promised yet).  NULL: the operation rolls
	 * forward (delete, merge: every step is repeatable). */
	int (*rollback)(struct vol_op_ctx *x);
	/* Roll-forward operations: after a run that failed (not cut short:
	 * -ESTALE leaves the task to the next SPM), put every volume back in
	 * use: LEGAL again where the data is intact, so the call can be
	 * retried; VOL_OP_FINISHED when it finished the work instead (the
	 * task ends DONE).  NULL: nothing to put back. */
	int (*restore)(struct vol_op_ctx *x);
	/* Finish or undo an unfinished task at SPM start: < 0 error (the
	 * task stays for the next try), 0 finished, VOL_OP_ROLLED_BACK. */
	int (*recover)(struct vol_op_ctx *x);
	/* After a successful run, with x->out set: fill it.  May be NULL. */
	int (*result)(struct vol_op_ctx *x);
};

/* The skeleton: structural lock, task (type, task_uuid, domain dom),
 * precheck, journal, run, end or rollback.  x: p, sd, dst, progress,
 * args, out filled by the caller. */
int vol_op_execute(const struct vol_op *op, struct vol_op_ctx *x,
		   const char *dom, const char *task_uuid);
/* A FAILED task whose undo (rollback / restore) did not finish
 * (TF_UNFINISHED): try again at SPM start. */
int vol_op_undo_failed(struct vol_op_ctx *x);
/* Recovery helpers: run again to the end (roll-forward operations); or,
 * unless the volume img/vol is LEGAL already (the task was finished but
 * for the journal; img NULL: never), roll back. */
int vol_op_recover_forward(struct vol_op_ctx *x);
int vol_op_recover_back(struct vol_op_ctx *x, const char *img,
			const char *vol);

/* Record step as done in the journal (after pool_guard). */
int task_step(cp_pool *p, struct cp_task *t, uint32_t step);
/* End a task: DONE, or FAILED/ABORTED with the error.  Journal write
 * errors here are returned only when the work itself succeeded. */
int task_end(cp_pool *p, struct cp_task *t, int err,
	     enum cp_task_state fail_state);

/* Progress of a long copy: passed to qcow's progress callbacks, calls the
 * caller's and saves done/total in the journal at most twice a second. */
struct progress_ctx {
	cp_pool *p;
	struct cp_task *t;
	cp_task_progress_fn fn;
	void *opaque;
	struct timespec last;
};
void task_progress(void *opaque, uint64_t done, uint64_t total);
/* Copy what volume simg/svol of src reads as (co->source_top_only: what
 * its top layer holds) into the formatted volume dimg/dvol of dst, with
 * cp_image_convert(co) out of order and its progress through px; -errno
 * naming svol. */
int vol_convert(cp_sd *src, const char *simg, const char *svol, cp_sd *dst,
		const char *dimg, const char *dvol, struct cp_convert_opts *co,
		struct progress_ctx *px);

uint64_t round_up(uint64_t v, uint64_t a);
/* The first two steps of a new volume img/vol of task t: its data
 * (recorded as step data_step), then its record ILLEGAL with role
 * (md_step).  Format, allocation, capacity, storage, creation time and
 * description (the task message) come from the task. */
int vol_new_steps(cp_pool *p, cp_sd *sd, struct cp_task *t, const char *img,
		  const char *vol, const char *parent, enum cp_vol_role role,
		  uint32_t data_step, uint32_t md_step);
/* The image of this domain holding volume vol (a template's), or
 * -EUCLEAN naming it. */
int find_vol_image(cp_sd *sd, const char *vol, char *img_out);
int md_get(cp_sd *sd, const char *img, const char *vol,
	   struct cp_volmeta *m);
/* Write m with its generation bumped (m updated). */
int md_put(cp_pool *p, cp_sd *sd, struct cp_volmeta *m, const char *where);
/* Change fields of an existing record (read, modify, write); 0 for role,
 * legality and NULL for parent leave them. */
int md_set_role(cp_pool *p, cp_sd *sd, const char *img, const char *vol,
		int role, int legality, const char *parent);
/* Remove a volume's data and lease, then its record (idempotent). */
int vol_remove_all(cp_pool *p, cp_sd *sd, const char *img, const char *vol);
/* The backing name of a layer of img over parent in parent_img. */
void backing_name(char *out, size_t len, const char *img,
		  const char *parent_img, const char *parent);
/* qcow2 size for a capacity, fully allocated (qemu-img measure). */
uint64_t qcow_max_size(uint64_t capacity);
/* The end of the highest cluster in use (qcow2), from a check pass. */
int qcow_used_end(cp_sd *sd, const char *img, const char *vol,
		  uint64_t *end);
/* Volumes of this domain (any image) that name vol as their parent; the
 * first in one_img/one_vol when not NULL. */
int count_children(cp_sd *sd, const char *img, const char *vol,
		   bool other_images_only, size_t *n, char *one_img,
		   char *one_vol);

/* ---- vol_create.c: create (new image, snapshot, thin clone) ------------- */

extern const struct vol_op vol_create_op;
/* Format a new volume's data for task t (qcow2 over its parent; raw:
 * nothing to do). */
int vol_format(cp_sd *sd, const struct cp_task *t);

/* ---- vol_delete.c: delete a volume or an image -------------------------- */

extern const struct vol_op vol_delete_op;
extern const struct vol_op vol_delete_image_op;

/* ---- vol_merge.c: merge (snapshot delete) ------------------------------- */

extern const struct vol_op vol_merge_op;

/* ---- vol_clone.c: templates and full clones (collapsed copies) ---------- */

extern const struct vol_op vol_template_op;
extern const struct vol_op vol_clone_op;

/* ---- vol_copy.c: image copy to another domain --------------------------- */

extern const struct vol_op vol_copy_op;

/* ---- vol_recover.c: recovery of unfinished tasks ------------------------
 * vol_recover_task() is declared in pool_int.h (pool.c calls it). */

#endif
