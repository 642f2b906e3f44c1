/* tests/unit/test_ops_crash.c - power cut at every write of commit,
 * rebase and repair.
 *
 * The images live on RAM devices.  Each operation runs once to count the
 * writes it makes to each device, then once per write with the power cut
 * there (both devices lose their unflushed writes at that instant; a
 * second pass keeps a seeded subset of them).  After every cut:
 *   - the chain reads exactly what it read before the operation started;
 *   - check finds no corruption in any image;
 *   - running the same operation again completes it, and the result is
 *     what an uninterrupted run gives.
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
#include "unit_lib.h"
#include "qcow.h"

#define SIZE (2u << 20)
#define NDEV 3

/* Devices by name: base.qcow2, mid.qcow2, top.qcow2 (and new.qcow2 for
 * rebase, which reuses slot 1). */
struct env {
	const char *names[NDEV];
	cp_bdev *dev[NDEV];
	uint8_t *saved[NDEV];
	uint64_t saved_len[NDEV];
};

static int find_dev(struct env *e, const char *name)
{
	for (int i = 0; i < NDEV; i++)
		if (e->names[i] && !strcmp(e->names[i], name))
			return i;
	return -1;
}

static int open_hook(void *opaque, const char *name, cp_bdev **out)
{
	struct env *e = opaque;
	int i = find_dev(e, name);
	if (i < 0)
		return cp_error(-ENOENT, "no such test device '%s'", name);
	*out = e->dev[i];
	return 0;
}

static cp_bdev *new_ram(uint64_t keep)
{
	struct cp_ram_opts ro;
	cp_ram_opts_init(&ro);
	ro.max_size = 64u << 20;
	ro.keep_seed = keep;
	cp_bdev *d;
	assert_int_equal(cp_bdev_open_ram(&ro, &d), 0);
	return d;
}

static cp_image *open_named(struct env *e, const char *name, bool rw,
			    bool check)
{
	struct cp_open_opts o;
	cp_open_opts_init(&o);
	o.readonly = !rw;
	o.for_check = check;
	o.open_backing = open_hook;
	o.open_backing_opaque = e;
	o.l2_cache_size = 4096;
	o.l2_cache_entry_size = 512;
	cp_image *img;
	int i = find_dev(e, name);
	assert_true(i >= 0);
	if (cp_image_open_dev(e->dev[i], name, &o, &img) < 0)
		fail_msg("open %s: %s", name, cp_last_error());
	return img;
}

static void create(struct env *e, const char *name, uint32_t cluster,
		   const char *backing)
{
	struct cp_create_opts co;
	cp_create_opts_init(&co);
	co.virtual_size = SIZE;
	co.cluster_size = cluster;
	co.backing_file = backing;
	co.backing_format = backing ? "qcow2" : NULL;
	int i = find_dev(e, name);
	if (cp_image_create_dev(e->dev[i], name, &co, open_hook, e) < 0)
		fail_msg("create %s: %s", name, cp_last_error());
}

static void scribble(struct env *e, const char *name, uint64_t seed, int n)
{
	cp_image *img = open_named(e, name, true, false);
	uint8_t *buf = malloc(256 << 10);
	for (int k = 0; k < n; k++) {
		uint64_t off = rng_next(&seed) % SIZE;
		uint64_t len = 1 + rng_next(&seed) % (200 << 10);
		if (off + len > SIZE)
			len = SIZE - off;
		if (k % 7 == 6) {
			assert_int_equal(cp_image_write_zeroes(img, off, len, 0), 0);
			continue;
		}
		memset(buf, (int)(1 + rng_next(&seed) % 250), len);
		assert_int_equal(cp_image_pwrite(img, buf, len, off), 0);
	}
	free(buf);
	assert_int_equal(cp_image_close(img), 0);
}

static uint8_t *read_view(struct env *e, const char *name)
{
	cp_image *img = open_named(e, name, false, false);
	uint8_t *b = malloc(SIZE);
	if (cp_image_pread(img, b, SIZE, 0) < 0)
		fail_msg("read %s: %s", name, cp_last_error());
	cp_image_close(img);
	return b;
}

static void save(struct env *e)
{
	for (int i = 0; i < NDEV; i++) {
		if (!e->dev[i])
			continue;
		e->saved_len[i] = cp_bdev_size(e->dev[i]);
		e->saved[i] = malloc(e->saved_len[i] + 1);
		assert_int_equal(cp_bdev_pread(e->dev[i], e->saved[i],
					       e->saved_len[i], 0), 0);
	}
}

/* Fresh RAM devices holding the saved (durable) content. */
static void restore(struct env *e, uint64_t keep)
{
	for (int i = 0; i < NDEV; i++) {
		if (!e->saved[i])
			continue;
		cp_bdev_close(e->dev[i]);
		e->dev[i] = new_ram(keep ? keep + (uint64_t)i : 0);
		assert_int_equal(cp_bdev_pwrite(e->dev[i], e->saved[i],
						e->saved_len[i], 0), 0);
		assert_int_equal(cp_bdev_flush(e->dev[i]), 0);
		cp_ram_restart(e->dev[i]);
	}
}

static void env_free(struct env *e)
{
	for (int i = 0; i < NDEV; i++) {
		cp_bdev_close(e->dev[i]);
		free(e->saved[i]);
	}
}

static void check_no_corruption(struct env *e, const char *name, const char *ctx)
{
	cp_image *img = open_named(e, name, false, true);
	struct cp_check_result r;
	assert_int_equal(cp_image_check(img, 0, &r, NULL, NULL), 0);
	if (r.corruptions)
		fail_msg("%s: %s has %llu corruptions", ctx, name,
			 (unsigned long long)r.corruptions);
	cp_image_close(img);
}

enum op { OP_COMMIT, OP_COMMIT_BASE, OP_REBASE, OP_REPAIR };

static int run_op(struct env *e, enum op op)
{
	cp_image *img;
	int r;
	switch (op) {
	case OP_COMMIT:
	case OP_COMMIT_BASE: {
		img = open_named(e, "top.qcow2", op == OP_COMMIT, false);
		struct cp_commit_opts o;
		cp_commit_opts_init(&o);
		o.parallel = 1; /* deterministic write order */
		if (op == OP_COMMIT_BASE)
			o.base = cp_image_backing(cp_image_backing(img));
		r = cp_image_commit(img, &o);
		break;
	}
	case OP_REBASE: {
		img = open_named(e, "top.qcow2", true, false);
		struct cp_rebase_opts o;
		cp_rebase_opts_init(&o);
		o.backing = "base.qcow2";
		o.backing_format = "qcow2";
		o.parallel = 1;
		r = cp_image_rebase(img, &o);
		break;
	}
	case OP_REPAIR: {
		img = open_named(e, "top.qcow2", true, true);
		struct cp_check_result res;
		r = cp_image_check(img, CP_CHECK_REPAIR_ALL, &res, NULL, NULL);
		if (r >= 0 && (res.corruptions || res.leaks))
			r = -EUCLEAN;
		break;
	}
	default:
		return -EINVAL;
	}
	int r2 = cp_image_close(img);
	return r < 0 ? r : r2;
}

static void run_cuts(const char *name, struct env *e, enum op op,
		     const char *view, void (*after_done)(struct env *, const uint8_t *))
{
	uint8_t *before = read_view(e, view);
	save(e);
	/* dry run: per-device write counts */
	restore(e, 0);
	uint64_t w0[NDEV];
	for (int i = 0; i < NDEV; i++)
		w0[i] = e->dev[i] ? cp_ram_write_count(e->dev[i]) : 0;
	if (run_op(e, op) < 0)
		fail_msg("%s: dry run: %s", name, cp_last_error());
	uint64_t per[NDEV];
	for (int i = 0; i < NDEV; i++)
		per[i] = e->dev[i] ? cp_ram_write_count(e->dev[i]) - w0[i] : 0;
	if (after_done)
		after_done(e, before);
	int points = 0;
	for (int d = 0; d < NDEV; d++) {
		for (uint64_t cut = 0; cut < per[d]; cut++) {
			for (int pass = 0; pass < 2; pass++) {
				char ctx[128];
				uint64_t keep = pass ? 7777 + cut * 13 + (uint64_t)d : 0;
				snprintf(ctx, sizeof(ctx), "%s dev %d cut %llu keep %llu",
					 name, d, (unsigned long long)cut,
					 (unsigned long long)keep);
				restore(e, keep);
				assert_int_equal(cp_ram_set_cut_after(e->dev[d], (int64_t)cut), 0);
				(void)run_op(e, op);
				/* the power fails for every device at once */
				for (int i = 0; i < NDEV; i++)
					if (e->dev[i] && !cp_ram_is_cut(e->dev[i]))
						cp_ram_cut(e->dev[i]);
				for (int i = 0; i < NDEV; i++)
					if (e->dev[i])
						assert_int_equal(cp_ram_restart(e->dev[i]), 0);
				uint8_t *now = read_view(e, view);
				if (memcmp(now, before, SIZE)) {
					uint64_t k = 0;
					while (now[k] == before[k])
						k++;
					fail_msg("%s: view changed at byte %llu (0x%02x, was 0x%02x)",
						 ctx, (unsigned long long)k, now[k], before[k]);
				}
				free(now);
				/* (a repair starts from a corrupt image: only
				 * its re-run must end clean, checked by run_op) */
				for (int i = 0; i < NDEV && op != OP_REPAIR; i++)
					if (e->dev[i])
						check_no_corruption(e, e->names[i], ctx);
				/* run it again: it must complete */
				if (run_op(e, op) < 0)
					fail_msg("%s: re-run: %s", ctx, cp_last_error());
				now = read_view(e, view);
				assert_memory_equal(now, before, SIZE);
				free(now);
				if (after_done)
					after_done(e, before);
				points++;
			}
		}
	}
	printf("# %s: %d cut points verified (%llu/%llu/%llu writes)\n", name,
	       points, (unsigned long long)per[0], (unsigned long long)per[1],
	       (unsigned long long)per[2]);
	free(before);
}

/* After a completed commit into the immediate backing file: base alone
 * reads what the chain read, and the top allocates nothing. */
static void commit_done(struct env *e, const uint8_t *before)
{
	uint8_t *b = read_view(e, "mid.qcow2");
	assert_memory_equal(b, before, SIZE);
	free(b);
	cp_image *top = open_named(e, "top.qcow2", false, false);
	uint64_t pnum;
	for (uint64_t off = 0; off < SIZE; off += pnum)
		assert_int_equal(cp_image_is_allocated(top, off, SIZE - off, &pnum), 0);
	cp_image_close(top);
}

static void commit_base_done(struct env *e, const uint8_t *before)
{
	uint8_t *b = read_view(e, "base.qcow2");
	assert_memory_equal(b, before, SIZE);
	free(b);
}

static void rebase_done(struct env *e, const uint8_t *before)
{
	(void)before;
	cp_image *top = open_named(e, "top.qcow2", false, false);
	struct cp_image_info info;
	assert_int_equal(cp_image_get_info(top, &info), 0);
	assert_string_equal(info.backing_file, "base.qcow2");
	cp_image_close(top);
}

static void make_chain(struct env *e, uint32_t cluster)
{
	memset(e, 0, sizeof(*e));
	e->names[0] = "base.qcow2";
	e->names[1] = "mid.qcow2";
	e->names[2] = "top.qcow2";
	for (int i = 0; i < NDEV; i++)
		e->dev[i] = new_ram(0);
	create(e, "base.qcow2", cluster, NULL);
	scribble(e, "base.qcow2", 1, 12);
	create(e, "mid.qcow2", cluster, "base.qcow2");
	scribble(e, "mid.qcow2", 2, 10);
	create(e, "top.qcow2", cluster, "mid.qcow2");
	scribble(e, "top.qcow2", 3, 10);
}

/* Damage top's refcounts (one too low, one leak): the repair's input. */
static void damage_refcounts(struct env *e)
{
	cp_bdev *d = e->dev[2];
	uint8_t hdr[512];
	assert_int_equal(cp_bdev_pread(d, hdr, 512, 0), 0);
	uint64_t rt = cp_be64(hdr + 48);
	uint8_t ent[8];
	assert_int_equal(cp_bdev_pread(d, ent, 8, rt), 0);
	uint64_t rb = cp_be64(ent);
	uint64_t clusters = cp_bdev_size(d) / 65536;
	uint8_t rc[2];
	/* the last cluster holds data: refcount 1 -> 0 (corruption) */
	cp_put_be16(rc, 0);
	assert_int_equal(cp_bdev_pwrite(d, rc, 2, rb + 2 * (clusters - 1)), 0);
	/* a cluster past the end: refcount 0 -> 1 (leak) */
	cp_put_be16(rc, 1);
	assert_int_equal(cp_bdev_pwrite(d, rc, 2, rb + 2 * (clusters + 3)), 0);
	assert_int_equal(cp_bdev_flush(d), 0);
}

/* One operation on the chain base <- mid <- top, cut at every write; the
 * result is judged through top. */
struct op_case {
	const char *name;
	uint32_t cluster;
	enum op op;
	void (*damage)(struct env *e); /* before the operation, or NULL */
	void (*after_done)(struct env *e, const uint8_t *before);
};

static const struct op_case cases[] = {
	{ "commit", 65536, OP_COMMIT, NULL, commit_done },
	{ "commit-4k", 4096, OP_COMMIT, NULL, commit_done },
	{ "commit-b", 65536, OP_COMMIT_BASE, NULL, commit_base_done },
	/* top: mid -> base, i.e. drop mid from the chain safely */
	{ "rebase", 65536, OP_REBASE, NULL, rebase_done },
	{ "repair", 65536, OP_REPAIR, damage_refcounts, NULL },
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

static void test_case(void **state)
{
	const struct op_case *c = *state;
	struct env e;
	make_chain(&e, c->cluster);
	if (c->damage)
		c->damage(&e);
	run_cuts(c->name, &e, c->op, "top.qcow2", c->after_done);
	env_free(&e);
}

int main(void)
{
	/* one test per case, named after it */
	struct CMUnitTest tests[NCASES];
	for (size_t i = 0; i < NCASES; i++)
		tests[i] = (struct CMUnitTest){ cases[i].name, test_case, NULL,
						NULL, (void *)&cases[i] };
	return cmocka_run_group_tests(tests, NULL, NULL);
}
