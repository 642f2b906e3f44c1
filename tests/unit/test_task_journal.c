/* tests/unit/test_task_journal.c - the task journal's two copies
 * (spm/task.c, docs/formats/tasks.md) on a RAM device:
 *   - every update lands in the copy its sequence number names (seq mod 2)
 *     and leaves the other copy holding the previous state;
 *   - a damaged (torn) write of the copy being written leaves the previous
 *     state readable, for every update of a task's life;
 *   - a power cut at every write of a task's life (dropping unflushed
 *     writes, and keeping seeded subsets) leaves the last completed state
 *     or the one being written, never an older one, never nothing.
 * The journal is driven through the private tj_* calls (pool_int.h) on a
 * RAM device standing in for the master domain's `tasks` volume.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockcore.h"
#include "common.h"
#include "pool_int.h"
#include "spm.h"

#define DOM "deadbeef-0000-4000-8000-000000000001"
#define NUPD 7 /* updates after tj_begin */

static void jopen(struct task_journal *tj, uint64_t keep)
{
	struct cp_ram_opts ro;
	cp_ram_opts_init(&ro);
	ro.initial_size = TJ_AREA_SIZE;
	ro.max_size = TJ_AREA_SIZE;
	ro.keep_seed = keep;
	memset(tj, 0, sizeof(*tj));
	assert_int_equal(cp_bdev_open_ram(&ro, &tj->dev), 0);
	pthread_mutex_init(&tj->lock, NULL);
	strcpy(tj->dom_uuid, DOM);
}

static void sample(struct cp_task *t, int i)
{
	memset(t, 0, sizeof(*t));
	assert_int_equal(cp_uuid_generate(t->task_uuid), 0);
	t->type = CP_TASK_CREATE_VOLUME;
	t->state = CP_TASK_RUNNING;
	strcpy(t->dom_uuid, DOM);
	t->total = 1000;
	t->u64[0] = (uint64_t)i;
}

/* The journal's only task; 0 when there is none.  Fails on a damaged
 * slot (both copies bad). */
static int only_task(struct task_journal *tj, struct cp_task *out)
{
	struct cp_task *v;
	size_t n;
	unsigned bad;
	assert_int_equal(tj_list(tj, &v, &n, &bad), 0);
	assert_int_equal(bad, 0);
	assert_true(n <= 1);
	if (n)
		*out = v[0];
	free(v);
	return (int)n;
}

/* Step s of a task's life: its fields after tj_begin (s = 0) and after
 * update s. */
static void advance(struct cp_task *t, unsigned s)
{
	t->step = s;
	t->done = 100 * s;
	t->u64[1] = 12345u * s + 1; /* past byte 100: differs in every step */
	if (s == NUPD)
		t->state = CP_TASK_DONE;
}

static void test_copy_by_seq(void **state)
{
	(void)state;
	struct task_journal tj;
	jopen(&tj, 0);
	struct cp_task t, other, got;
	sample(&other, 99);
	assert_int_equal(tj_begin(&tj, &other), 0); /* slot 0: a neighbour */
	sample(&t, 1);
	assert_int_equal(tj_begin(&tj, &t), 0);
	assert_int_equal(t.slot, 1);
	assert_int_equal(t.seq, 2);
	uint8_t *copy = cp_bdev_alloc_buf(TJ_SLOT_SIZE);
	for (unsigned s = 1; s <= NUPD; s++) {
		struct cp_task prev = t;
		advance(&t, s);
		assert_int_equal(tj_update(&tj, &t), 0);
		assert_int_equal(t.seq, prev.seq + 1);
		/* the copy seq mod 2 names holds the new state ... */
		uint64_t at = ((uint64_t)t.slot * 2 + (t.seq % 2)) * TJ_SLOT_SIZE;
		assert_int_equal(cp_bdev_pread(tj.dev, copy, TJ_SLOT_SIZE, at), 0);
		assert_int_equal(tj_decode(copy, "copy", &got), 0);
		assert_int_equal(got.seq, t.seq);
		assert_int_equal(got.step, s);
		/* ... and the other one the previous state */
		at = ((uint64_t)t.slot * 2 + (prev.seq % 2)) * TJ_SLOT_SIZE;
		assert_int_equal(cp_bdev_pread(tj.dev, copy, TJ_SLOT_SIZE, at), 0);
		assert_int_equal(tj_decode(copy, "copy", &got), 0);
		assert_int_equal(got.seq, prev.seq);
		assert_int_equal(got.step, prev.step);
	}
	/* the neighbour slot was never touched */
	struct cp_task *v;
	size_t n;
	assert_int_equal(tj_list(&tj, &v, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].task_uuid, other.task_uuid);
	assert_int_equal(v[0].seq, 2);
	free(v);
	cp_bdev_free_buf(copy);
	tj_close(&tj);
}

/* A torn write of update s+1: the copy it would write is garbage.  The
 * state after update s must still be read. */
static void test_torn_copy(void **state)
{
	(void)state;
	uint8_t *junk = cp_bdev_alloc_buf(TJ_SLOT_SIZE);
	for (unsigned s = 0; s < NUPD; s++) {
		for (int how = 0; how < 2; how++) {
			struct task_journal tj;
			jopen(&tj, 0);
			struct cp_task t, got;
			sample(&t, (int)s);
			assert_int_equal(tj_begin(&tj, &t), 0);
			for (unsigned k = 1; k <= s; k++) {
				advance(&t, k);
				assert_int_equal(tj_update(&tj, &t), 0);
			}
			/* update s+1 writes copy (seq+1) mod 2: tear it (half
			 * new, half old bytes: a torn sector) or zero it */
			uint64_t at = ((uint64_t)t.slot * 2 + ((t.seq + 1) % 2)) * TJ_SLOT_SIZE;
			assert_int_equal(cp_bdev_pread(tj.dev, junk, TJ_SLOT_SIZE, at), 0);
			if (how == 0) {
				struct cp_task next = t;
				next.seq++;
				advance(&next, s + 1);
				uint8_t enc[TJ_SLOT_SIZE];
				tj_encode(&next, enc);
				memcpy(junk, enc, 100); /* first part of the new copy */
			} else {
				memset(junk + 100, 0xff, 512);
			}
			assert_int_equal(cp_bdev_pwrite(tj.dev, junk, TJ_SLOT_SIZE, at), 0);
			assert_int_equal(only_task(&tj, &got), 1);
			if (got.seq != t.seq || got.step != s)
				fail_msg("torn update %u (%d): read seq %llu step %u, want seq %llu step %u",
					 s + 1, how, (unsigned long long)got.seq, got.step,
					 (unsigned long long)t.seq, s);
			assert_string_equal(got.task_uuid, t.task_uuid);
			tj_close(&tj);
		}
	}
	cp_bdev_free_buf(junk);
}

/* Life of a task: begin, NUPD updates, clear.  Returns the writes. */
static int life(struct task_journal *tj, struct cp_task *t, unsigned *done)
{
	*done = 0; /* 0: nothing durable yet; 1 + s: step s completed */
	int r = tj_begin(tj, t);
	if (r < 0)
		return r;
	*done = 1;
	for (unsigned s = 1; s <= NUPD; s++) {
		advance(t, s);
		r = tj_update(tj, t);
		if (r < 0)
			return r;
		*done = 1 + s;
	}
	r = tj_clear(tj, t);
	if (r == 0)
		*done = NUPD + 2;
	return r;
}

static void test_power_cut(void **state)
{
	(void)state;
	struct task_journal tj;
	struct cp_task t, got;
	unsigned done;
	jopen(&tj, 0);
	sample(&t, 0);
	uint64_t w0 = cp_ram_write_count(tj.dev);
	assert_int_equal(life(&tj, &t, &done), 0);
	uint64_t total = cp_ram_write_count(tj.dev) - w0;
	assert_int_equal(only_task(&tj, &got), 0);
	tj_close(&tj);
	for (uint64_t cut = 0; cut < total; cut++) {
		for (uint64_t pass = 0; pass < 3; pass++) {
			jopen(&tj, pass ? cut * 7919 + pass : 0);
			sample(&t, 0);
			assert_int_equal(cp_ram_set_cut_after(tj.dev, (int64_t)cut), 0);
			int r = life(&tj, &t, &done);
			assert_true(r < 0);
			assert_int_equal(cp_ram_restart(tj.dev), 0);
			int n = only_task(&tj, &got);
			/* done = 1 + s: step s is durable; step s+1 may be */
			if (done == 0) {
				if (n) /* tj_begin's first copy may have landed */
					assert_true(got.seq <= 2 && got.step == 0);
				goto next;
			}
			if (done == NUPD + 1 && n == 0)
				goto next; /* the clear may have landed */
			if (n != 1)
				fail_msg("cut %llu pass %llu: no task after step %u",
					 (unsigned long long)cut, (unsigned long long)pass,
					 done - 1);
			if (got.step != done - 1 && got.step != done)
				fail_msg("cut %llu pass %llu: step %u read after step %u completed",
					 (unsigned long long)cut, (unsigned long long)pass,
					 got.step, done - 1);
			assert_string_equal(got.task_uuid, t.task_uuid);
		next:
			tj_close(&tj);
		}
	}
	printf("# task journal: %llu cut points x 3 verified\n",
	       (unsigned long long)total);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copy_by_seq),
		cmocka_unit_test(test_torn_copy),
		cmocka_unit_test(test_power_cut),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
