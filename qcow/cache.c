/* qcow/cache.c - metadata slice cache (L2 slices and refcount blocks)
 * and the L2 barrier between them.
 *
 * A small set-associative-free LRU cache: n slots, linear search.  n is a
 * few hundred at most for the default sizes; lookups are a scan of offsets
 * that stays in L1 cache.  All functions run with q->lock held.  An L2
 * slice is written only after qc_l2_barrier_locked() (crash-ordering rules
 * 1 and 2 in qcow_int.h); the rest of the ordering machinery is order.c.
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

int qc_cache_init(struct qc_cache *c, const char *what, unsigned n,
		  uint32_t entry_size)
{
	memset(c, 0, sizeof(*c));
	c->what = what;
	c->n = n < 4 ? 4 : n;
	c->entry_size = entry_size;
	c->e = calloc(c->n, sizeof(*c->e));
	if (!c->e)
		return -ENOMEM;
	for (unsigned i = 0; i < c->n; i++) {
		c->e[i].data = cp_bdev_alloc_buf(entry_size);
		if (!c->e[i].data) {
			qc_cache_destroy(c);
			return -ENOMEM;
		}
	}
	return 0;
}

void qc_cache_destroy(struct qc_cache *c)
{
	if (!c->e)
		return;
	for (unsigned i = 0; i < c->n; i++)
		cp_bdev_free_buf(c->e[i].data);
	free(c->e);
	c->e = NULL;
	c->last = NULL;
}

static struct qc_centry *cache_find(struct qc_cache *c, const void *data)
{
	/* mostly the entry just returned by qc_cache_get() */
	if (c->last && c->last->data == data)
		return c->last;
	for (unsigned i = 0; i < c->n; i++)
		if (c->e[i].data == data)
			return &c->e[i];
	abort(); /* pointer not from this cache: a programming error */
}

static int cache_write_entry(struct qcow *q, struct qc_cache *c,
			     struct qc_centry *e)
{
	int r;
	if (c == &q->l2c) {
		/* rules 1 and 2: data and refcounts before the L2 entry */
		r = qc_l2_barrier_locked(q);
		if (r < 0)
			return r;
	}
	r = qc_overlap_check_locked(q, e->offset, c->entry_size,
				    c == &q->l2c ? QC_META_L2 : QC_META_REFBLOCK);
	if (r < 0)
		return r;
	r = cp_bdev_pwrite(q->dev, e->data, c->entry_size, e->offset);
	if (r < 0)
		return cp_error_prefix(r, "%s: writing %s table at 0x%" PRIx64,
				       q->name, c->what, e->offset);
	e->dirty = false;
	if (c == &q->rbc)
		q->barrier_needed = true;
	return 0;
}

int qc_cache_get(struct qcow *q, struct qc_cache *c, uint64_t off, bool load,
		 void **data)
{
	struct qc_centry *victim = NULL;
	for (unsigned i = 0; i < c->n; i++) {
		struct qc_centry *e = &c->e[i];
		if (e->offset == off) {
			e->pins++;
			e->lru = ++c->clock;
			c->last = e;
			*data = e->data;
			return 0;
		}
		if (e->pins == 0 &&
		    (!victim || (victim->offset && !e->offset) ||
		     (e->offset && victim->offset && e->lru < victim->lru) ||
		     (!e->offset && !victim->offset && e->lru < victim->lru)))
			victim = e;
	}
	if (!victim)
		return cp_error(-ENOMEM, "%s: %s cache exhausted (all entries in use)",
				q->name, c->what);
	if (victim->offset && victim->dirty) {
		int r = cache_write_entry(q, c, victim);
		if (r < 0)
			return r;
	}
	victim->offset = 0;
	if (load) {
		int r = cp_bdev_pread(q->dev, victim->data, c->entry_size, off);
		if (r < 0)
			return cp_error_prefix(r, "%s: reading %s table at 0x%" PRIx64,
					       q->name, c->what, off);
	} else {
		memset(victim->data, 0, c->entry_size);
	}
	victim->offset = off;
	victim->dirty = false;
	victim->checked = false;
	victim->pins = 1;
	victim->lru = ++c->clock;
	c->last = victim;
	*data = victim->data;
	return 0;
}

void qc_cache_put(struct qc_cache *c, void *data)
{
	struct qc_centry *e = cache_find(c, data);
	e->pins--;
}

void qc_cache_mark_dirty(struct qc_cache *c, void *data)
{
	cache_find(c, data)->dirty = true;
}

bool qc_cache_checked(struct qc_cache *c, void *data)
{
	return cache_find(c, data)->checked;
}

void qc_cache_set_checked(struct qc_cache *c, void *data)
{
	cache_find(c, data)->checked = true;
}

bool qc_cache_has_dirty(const struct qc_cache *c)
{
	for (unsigned i = 0; i < c->n; i++)
		if (c->e[i].offset && c->e[i].dirty)
			return true;
	return false;
}

int qc_cache_writeback(struct qcow *q, struct qc_cache *c)
{
	/* Write in offset order: friendlier to the disk. */
	for (;;) {
		struct qc_centry *best = NULL;
		for (unsigned i = 0; i < c->n; i++) {
			struct qc_centry *e = &c->e[i];
			if (e->offset && e->dirty &&
			    (!best || e->offset < best->offset))
				best = e;
		}
		if (!best)
			return 0;
		int r = cache_write_entry(q, c, best);
		if (r < 0)
			return r;
	}
}

void qc_cache_drop(struct qc_cache *c, uint64_t off)
{
	for (unsigned i = 0; i < c->n; i++) {
		if (c->e[i].offset == off && c->e[i].pins == 0) {
			c->e[i].offset = 0;
			c->e[i].dirty = false;
		}
	}
}

void qc_cache_clear(struct qc_cache *c)
{
	for (unsigned i = 0; i < c->n; i++) {
		c->e[i].offset = 0;
		c->e[i].dirty = false;
	}
}

/* --- the L2 barrier (rules 1 and 2) ----------------------------------------- */

int qc_l2_barrier_locked(struct qcow *q)
{
	int r;
	if (!q->lazy) {
		r = qc_cache_writeback(q, &q->rbc);
		if (r < 0)
			return r;
	}
	if (q->barrier_needed) {
		r = cp_bdev_flush(q->dev);
		if (r < 0)
			return cp_error_prefix(r, "%s: flush", q->name);
		q->barrier_needed = false;
	}
	return 0;
}
