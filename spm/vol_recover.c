/* spm/vol_recover.c - recovery of the unfinished tasks at SPM start.
 *
 * Every journaled operation is listed here once; its descriptor's recover
 * finishes it (roll forward) or undoes it (roll back).  The task is marked
 * RECOVERING first, and ends DONE, ABORTED (-ECANCELED, rolled back),
 * FAILED (a roll forward that cannot finish: its restore put the volumes
 * back in use), or stays in the journal with the reason when recovery
 * fails.  A FAILED task flagged TF_UNFINISHED gets its undo retried.
 *
 * cp_spm_start() lives here: pool.c takes the role (pool_spm_take), this
 * file recovers, so the pool does not call back into the operations.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "volume_int.h"

static const struct vol_op *const vol_ops[] = {
	&vol_create_op, &vol_template_op,     &vol_clone_op, &vol_copy_op,
	&vol_delete_op, &vol_delete_image_op, &vol_merge_op,
};

static const struct vol_op *vol_op_of(enum cp_task_type type)
{
	for (size_t i = 0; i < CP_ARRAY_SIZE(vol_ops); i++)
		if (vol_ops[i]->type == type)
			return vol_ops[i];
	return NULL; /* EXTEND: nothing to finish */
}

int vol_recover_task(cp_pool *p, struct cp_task *t)
{
	struct vol_op_ctx x = {.p = p, .t = t, .op = vol_op_of(t->type)};
	int r;

	if ((r = cp_pool_domain(p, t->dom_uuid, &x.sd)) < 0)
		goto fail;
	if (t->state == CP_TASK_FAILED) {
		/* failed, but its undo was cut short: the caller was told;
		 * only the volumes need putting back */
		if (t->type == CP_TASK_COPY_IMAGE &&
		    (r = cp_pool_domain(p, t->dst_dom_uuid, &x.dst)) < 0)
			goto fail;
		t->spm_lver = pool_spm_lver(p);
		if ((r = vol_op_undo_failed(&x)) < 0)
			goto fail;
		return 0;
	}
	t->state = CP_TASK_RECOVERING;
	t->spm_lver = pool_spm_lver(p);
	if ((r = tj_update(pool_journal(p), t)) < 0)
		return r;
	r = x.op ? x.op->recover(&x) : 0;
	if (r == VOL_OP_ROLLED_BACK)
		return task_end(p, t, -ECANCELED, CP_TASK_ABORTED);
	if (r == -ESTALE)
		return r;
	if (r < 0 && x.op && x.op->restore && cp_spm_check(p) == 0) {
		/* a roll-forward that cannot finish (e.g. ENOSPC): put the
		 * volumes back in use and record it FAILED, as a failure of
		 * the call itself would */
		char msg[CP_TASK_ERR_MAX + 1];
		snprintf(msg, sizeof(msg), "recovery: %s", cp_last_error());
		int u = x.op->restore(&x);
		if (u == VOL_OP_FINISHED) {
			t->message[0] = '\0';
			return task_end(p, t, 0, CP_TASK_DONE);
		}
		if (u == -ESTALE)
			return u;
		if (u < 0)
			t->flags |= TF_UNFINISHED;
		cp_error(r, "%s", msg);
		return task_end(p, t, r, CP_TASK_FAILED);
	}
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

CP_EXPORT int cp_spm_start(cp_pool *p)
{
	CP_API_ENTER();
	struct cp_task *tasks = NULL;
	size_t nt = 0;
	int r = pool_spm_take(p);
	if (r != 0)
		return r < 0 ? r : 0;
	/* Recovery: finish or undo what the previous SPM left. */
	if (tj_list(pool_journal(p), &tasks, &nt, NULL) == 0) {
		for (size_t i = 0; i < nt; i++) {
			if (!pool_task_unfinished(&tasks[i]))
				continue;
			if (cp_spm_check(p) < 0)
				break;
			vol_recover_task(p, &tasks[i]);
		}
	}
	free(tasks);
	return pool_spm_taken(p);
}
