/* tests/unit/test_qcow_crash.c - power cut at every write.
 *
 * Each scenario is a seeded sequence of guest operations (writes, zero
 * writes, discards, flushes, a resize) on a qcow2 image held on a RAM
 * device.  It runs once to count the device writes it causes, then once
 * per write with the power cut just before that write.  After each cut the
 * device is restarted with what survived, and:
 *   - the image opens read-write (a dirty lazy-refcounts image is repaired);
 *   - check finds no corruption (leaks are allowed) and check -r leaks
 *     leaves it clean;
 *   - every byte reads back either as it was at the last completed flush,
 *     or as one of the writes issued after it (those may or may not have
 *     reached the disk).
 * Each cut runs five times: once dropping every unflushed write, and with
 * four seeded random subsets of them kept (which catches missing ordering
 * barriers; one subset per cut stopped exposing a removed L2 barrier once
 * the engine's write sequence changed, four do).
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

static void model_grow(struct model *m, uint64_t size)
{
	m->flushed = realloc(m->flushed, size);
	m->cur = realloc(m->cur, size);
	m->alt = realloc(m->alt, size * MAXV);
	m->nalt = realloc(m->nalt, size);
	m->overflow = realloc(m->overflow, size);
	memset(m->flushed + m->size, 0, size - m->size);
	memset(m->cur + m->size, 0, size - m->size);
	memset(m->nalt + m->size, 0, size - m->size);
	memset(m->overflow + m->size, 0, size - m->size);
	m->size = size;
}

/* --- the environment: overlay on RAM, optional base on RAM (unit_lib.c's
 * struct ram_chain) ---------------------------------------------------------- */

struct scenario {
	const char *name;
	uint64_t size;
	uint32_t cluster;
	int version;
	unsigned refbits;
	bool extl2, lazy, backing;
	int nops;
	uint64_t seed;
	bool resize; /* grow to 4x in the middle */
	bool discards;
};

static void test_open_opts(struct ram_chain *e, struct cp_open_opts *o)
{
	ram_chain_open_opts(e, o, 2048); /* small caches: force evictions */
}

static void open_img(struct ram_chain *e, cp_image **img)
{
	struct cp_open_opts o;
	test_open_opts(e, &o);
	int r = cp_image_open_dev(e->top, "top.qcow2", &o, img);
	if (r < 0)
		fail_msg("open: %s", cp_last_error());
}

/* Run the scenario's guest operations.  Returns 0, or the first error
 * (after a cut). */
static int run_ops(const struct scenario *s, struct ram_chain *e, struct model *m)
{
	cp_image *img;
	struct cp_open_opts o;
	test_open_opts(e, &o);
	int r = cp_image_open_dev(e->top, "top.qcow2", &o, &img);
	if (r < 0)
		return r;
	uint64_t seed = s->seed;
	uint64_t size = s->size;
	uint8_t *buf = malloc(4 * s->cluster + 8192);
	assert_non_null(buf);
	for (int i = 0; i < s->nops && r >= 0; i++) {
		uint64_t x = rng_next(&seed);
		unsigned kind = x % 16;
		uint64_t off = rng_next(&seed) % size;
		uint64_t len = 1 + rng_next(&seed) % (3 * s->cluster + 1000);
		if (kind < 2)
			off = off / s->cluster * s->cluster; /* aligned sometimes */
		if (off + len > size)
			len = size - off;
		if (getenv("CP_TRACE"))
			fprintf(stderr, "op %d kind %u off %llu len %llu wc %llu\n", i, kind,
				(unsigned long long)off, (unsigned long long)len,
				(unsigned long long)cp_ram_write_count(e->top));
		if (kind == 15 || (i % 5) == 4) {
			r = cp_image_flush(img);
			if (r >= 0)
				model_flush(m);
		} else if (kind == 14 && s->discards) {
			r = 0;
			{
				/* discard leaves whole clusters reading zero
				 * (version 3, or no backing) or backing data:
				 * the scenarios that discard have no backing */
				uint64_t a = (off + s->cluster - 1) / s->cluster * s->cluster;
				uint64_t b = (off + len) / s->cluster * s->cluster;
				if (off + len == size)
					b = size;
				if (a < b) {
					memset(buf, 0, b - a < 4 * s->cluster ? b - a : 4 * s->cluster);
					for (uint64_t p = a; p < b;) {
						uint64_t l = b - p < 4 * s->cluster ? b - p : 4 * s->cluster;
						model_write(m, p, buf, l);
						p += l;
					}
				}
			}
			r = cp_image_discard(img, off, len);
		} else if (kind == 13) {
			memset(buf, 0, len);
			model_write(m, off, buf, len); /* may land even on failure */
			r = cp_image_write_zeroes(img, off, len,
						  (x >> 8) & 1 ? CP_ZERO_MAY_UNMAP : 0);
		} else if (kind == 12 && s->resize && size == s->size) {
			r = cp_image_resize(img, size * 4, false, CP_PREALLOC_OFF);
			if (r >= 0) {
				size *= 4;
				model_grow(m, size);
			}
		} else {
			uint8_t pat = (uint8_t)(1 + (x >> 16) % 250);
			for (uint64_t k = 0; k < len; k++)
				buf[k] = (uint8_t)(pat + k / 512);
			model_write(m, off, buf, len); /* may land even on failure */
			r = cp_image_pwrite(img, buf, len, off);
		}
	}
	free(buf);
	int r2 = cp_image_close(img);
	if (r >= 0 && r2 >= 0)
		model_flush(m); /* close flushes */
	return r < 0 ? r : r2;
}

/* keep: the RAM device's keep_seed (0: drop every unflushed write) */
static void make_env(const struct scenario *s, struct ram_chain *e,
		     uint64_t keep)
{
	struct cp_create_opts co;
	cp_create_opts_init(&co);
	co.virtual_size = s->size;
	co.cluster_size = s->cluster;
	co.qcow_version = s->version;
	co.refcount_bits = s->refbits;
	co.extended_l2 = s->extl2;
	co.lazy_refcounts = s->lazy;
	uint8_t *base = NULL;
	if (s->backing) {
		base = malloc(s->size);
		uint64_t seed = s->seed ^ 0x5a5a;
		for (uint64_t i = 0; i < s->size; i += 8) {
			uint64_t v = rng_next(&seed);
			memcpy(base + i, &v, 8);
		}
		/* a raw base, with a hole in the middle */
		memset(base + s->size / 4, 0, s->size / 4);
	}
	ram_chain_make(e, keep, &co, base, s->size);
}

static void count_leak(void *opaque, const char *msg)
{
	(void)opaque;
	(void)msg;
}

static void verify_after_cut(const struct scenario *s, struct ram_chain *e,
			     struct model *m, int cut, uint64_t keep)
{
	assert_int_equal(cp_ram_restart(e->top), 0);
	cp_image *img;
	open_img(e, &img); /* repairs a dirty lazy image */
	uint64_t size = cp_image_size(img);
	uint8_t *got = malloc(size);
	assert_non_null(got);
	int r = cp_image_pread(img, got, size, 0);
	if (r < 0)
		fail_msg("%s cut %d keep %llu: read: %s", s->name, cut,
			 (unsigned long long)keep, cp_last_error());
	if (size > m->size)
		model_grow(m, size);
	int64_t bad = model_verify(m, got, size);
	if (bad >= 0)
		fail_msg("%s cut %d keep %llu: byte %lld is 0x%02x, flushed 0x%02x (%u later versions)",
			 s->name, cut, (unsigned long long)keep, (long long)bad,
			 got[bad], m->flushed[bad], m->nalt[bad]);
	free(got);
	assert_int_equal(cp_image_close(img), 0);

	/* check: no corruption; leaks repairable */
	struct cp_open_opts o;
	cp_open_opts_init(&o);
	o.for_check = true;
	o.open_backing = ram_chain_open_base;
	o.open_backing_opaque = e;
	assert_int_equal(cp_image_open_dev(e->top, "top.qcow2", &o, &img), 0);
	struct cp_check_result res;
	assert_int_equal(cp_image_check(img, 0, &res, count_leak, NULL), 0);
	if (res.corruptions)
		fail_msg("%s cut %d keep %llu: check found %llu corruptions",
			 s->name, cut, (unsigned long long)keep,
			 (unsigned long long)res.corruptions);
	if (res.leaks) {
		assert_int_equal(cp_image_check(img, CP_CHECK_REPAIR_LEAKS, &res,
						count_leak, NULL), 0);
		assert_int_equal(res.leaks, 0);
		assert_int_equal(res.corruptions, 0);
	}
	assert_int_equal(cp_image_close(img), 0);
}

/* --- the sweep's callbacks (unit_lib.c's cut_sweep_run) --------------------- */

struct sweep_env {
	const struct scenario *s;
	struct ram_chain e;
};

static cp_bdev *sweep_make(void *opaque, uint64_t keep, struct model *m)
{
	struct sweep_env *x = opaque;
	make_env(x->s, &x->e, keep);
	model_init(m, x->s->size, x->e.base_content);
	return x->e.top;
}

static int sweep_ops(void *opaque, struct model *m)
{
	struct sweep_env *x = opaque;
	return run_ops(x->s, &x->e, m);
}

static int sweep_open(void *opaque, cp_image **img)
{
	struct sweep_env *x = opaque;
	open_img(&x->e, img);
	return 0;
}

static int sweep_close(void *opaque, cp_image *img)
{
	return cp_image_close(img);
}

static void sweep_verify(void *opaque, struct model *m, uint64_t cut,
			 uint64_t keep)
{
	struct sweep_env *x = opaque;
	verify_after_cut(x->s, &x->e, m, (int)cut, keep);
}

static void sweep_free(void *opaque)
{
	struct sweep_env *x = opaque;
	ram_chain_free(&x->e);
}

static void run_scenario(const struct scenario *s)
{
	struct sweep_env x = { .s = s };
	struct cut_sweep cs = {
		.name = s->name, .seed = s->seed, .passes = 5, .env = &x,
		.make = sweep_make, .run = sweep_ops, .open = sweep_open,
		.close = sweep_close, .verify = sweep_verify, .free = sweep_free,
	};
	cut_sweep_run(&cs);
}

/* name, size, cluster, version, refbits, extl2, lazy, backing, nops, seed,
 * resize, discards */
static const struct scenario scenarios[] = {
	{ "alloc-64k", 4 << 20, 65536, 3, 16, false, false, false, 24, 11, false, false },
	/* 512-byte clusters, 1-bit refcounts: refcount blocks and the
	 * refcount table must grow during the run */
	{ "alloc-512-rc1", 1 << 20, 512, 3, 1, false, false, false, 20, 12, false, false },
	{ "alloc-v2-4k", 2 << 20, 4096, 2, 16, false, false, false, 20, 13, false, false },
	/* 64-bit refcounts on 512-byte clusters: 64 clusters per refcount
	 * block, so refcount blocks are evicted and created all the time */
	{ "alloc-512-rc64", 1 << 20, 512, 3, 64, false, false, false, 20, 19, false, true },
	{ "cow-backing", 2 << 20, 65536, 3, 16, false, false, true, 20, 14, false, false },
	/* 4 KiB clusters: eight L2 slices in a four-entry cache, so dirty
	 * slices are evicted between flushes */
	{ "cow-backing-4k", 2 << 20, 4096, 3, 16, false, false, true, 30, 20, false, false },
	{ "cow-extl2", 2 << 20, 32768, 3, 16, true, false, true, 20, 15, false, false },
	{ "discard", 2 << 20, 16384, 3, 16, false, false, false, 30, 16, false, true },
	/* 512-byte clusters: growing 4x needs a new, larger L1 table */
	{ "resize", 256 << 10, 512, 3, 16, false, false, false, 24, 17, true, false },
	{ "lazy-refcounts", 2 << 20, 65536, 3, 64, false, true, false, 20, 18, false, true },
};

#define NSCEN (sizeof(scenarios) / sizeof(scenarios[0]))

static void test_scenario(void **state)
{
	run_scenario(*state);
}

int main(void)
{
	/* one test per scenario, named after it */
	struct CMUnitTest tests[NSCEN];
	for (size_t i = 0; i < NSCEN; i++)
		tests[i] = (struct CMUnitTest){ scenarios[i].name, test_scenario,
						NULL, NULL,
						(void *)&scenarios[i] };
	return cmocka_run_group_tests(tests, NULL, NULL);
}
