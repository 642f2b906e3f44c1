/* spm/vol_recover.c - recovery of the unfinished tasks at SPM start.
 *
 * Every journaled operation is listed here once; its descriptor's recover
 * finishes it (roll forward) or undoes it (roll back).  The task is marked
 * RECOVERING first, and ends DONE, ABORTED (-ECANCELED, rolled back), or
 * stays in the journal with the reason when recovery fails.
 */
#include <errno.h>
#include <stdio.h>

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
	t->state = CP_TASK_RECOVERING;
	t->spm_lver = pool_spm_lver(p);
	if ((r = tj_update(pool_journal(p), t)) < 0)
		return r;
	r = x.op ? x.op->recover(&x) : 0;
	if (r == VOL_OP_ROLLED_BACK)
		return task_end(p, t, -ECANCELED, CP_TASK_ABORTED);
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
