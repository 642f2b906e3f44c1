/* qcow/order.c - the crash-ordering machinery of qcow2 images: the grace
 * period of freed clusters, the in-flight list of metadata changes, the
 * dirty bit of lazy refcounts and the flush sequence.  The rules these
 * carry out are at the top of qcow_int.h; the L2 barrier (rules 1 and 2)
 * lives with the caches in cache.c, which run it before an L2 slice goes
 * to disk.
 */
#include "qcow_int.h"

#include <errno.h>

/* --- grace period for freed clusters ------------------------------------ */

unsigned qc_gp_enter_locked(struct qcow *q)
{
	unsigned e = atomic_load(&q->epoch) & 1;
	atomic_fetch_add(&q->gp_count[e], 1);
	return e;
}

void qc_gp_exit(struct qcow *q, unsigned e)
{
	if (atomic_fetch_sub(&q->gp_count[e], 1) == 1) {
		pthread_mutex_lock(&q->gp_lock);
		pthread_cond_broadcast(&q->gp_cond);
		pthread_mutex_unlock(&q->gp_lock);
	}
}

/* Wait until every data request that started before now has finished. */
static void gp_wait_locked(struct qcow *q)
{
	unsigned old = atomic_fetch_add(&q->epoch, 1) & 1;
	pthread_mutex_lock(&q->gp_lock);
	while (atomic_load(&q->gp_count[old]) != 0)
		pthread_cond_wait(&q->gp_cond, &q->gp_lock);
	pthread_mutex_unlock(&q->gp_lock);
}

/* --- in-flight metadata changes ------------------------------------------ */

bool qc_inflight_conflict_locked(struct qcow *q, uint64_t s, uint64_t e)
{
	for (struct qc_inflight *f = q->inflight; f; f = f->next)
		if (f->start < e && s < f->end)
			return true;
	return false;
}

void qc_inflight_add_locked(struct qcow *q, struct qc_inflight *f, uint64_t s,
			    uint64_t e)
{
	f->start = s;
	f->end = e;
	f->next = q->inflight;
	q->inflight = f;
}

void qc_inflight_del_locked(struct qcow *q, struct qc_inflight *f)
{
	for (struct qc_inflight **p = &q->inflight; *p; p = &(*p)->next) {
		if (*p == f) {
			*p = f->next;
			break;
		}
	}
	pthread_cond_broadcast(&q->inflight_cond);
}

void qc_inflight_wait_locked(struct qcow *q, uint64_t s, uint64_t e)
{
	while (qc_inflight_conflict_locked(q, s, e))
		pthread_cond_wait(&q->inflight_cond, &q->lock);
}

/* --- dirty bit and flush ------------------------------------------------------- */

int qc_set_dirty_locked(struct qcow *q)
{
	if (!q->lazy || q->dirty_set || q->version < 3)
		return 0;
	int r = qc_header_set_incompat_locked(q, QC_INCOMPAT_DIRTY, 0);
	if (r == 0)
		q->dirty_set = true;
	return r;
}

int qc_flush_locked(struct qcow *q)
{
	int r;
	bool meta = qc_cache_has_dirty(&q->l2c) || qc_cache_has_dirty(&q->rbc) ||
		    q->pending_free.len;
	if (meta) {
		r = qc_l2_barrier_locked(q);
		if (r < 0)
			return r;
		r = qc_cache_writeback(q, &q->l2c);
		if (r < 0)
			return r;
	}
	r = cp_bdev_flush(q->dev);
	if (r < 0)
		return cp_error_prefix(r, "%s: flush", q->name);
	q->barrier_needed = false;
	if (q->pending_free.len) {
		/* the L2 entries no longer reference these clusters on disk;
		 * wait for readers that mapped them before, then free */
		gp_wait_locked(q);
		r = qc_apply_pending_free_locked(q);
		if (r < 0)
			return r;
		if (!q->lazy) {
			r = qc_cache_writeback(q, &q->rbc);
			if (r < 0)
				return r;
			r = cp_bdev_flush(q->dev);
			if (r < 0)
				return r;
			q->barrier_needed = false;
		}
	}
	return 0;
}

int qc_flush(struct qcow *q)
{
	if (q->readonly && !q->corrupt)
		return 0;
	pthread_mutex_lock(&q->lock);
	int r = qc_flush_locked(q);
	pthread_mutex_unlock(&q->lock);
	return r;
}
