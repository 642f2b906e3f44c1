/* tests/unit/test_qcow_safety.c - one test per safety rule of the image
 * engine that the generic power-cut tests (test_qcow_crash.c) cannot see
 * broken.  Each test names the rule it guards and the deliberate break it
 * was shown to catch (tests/mutation/ re-applies those breaks on demand).
 *
 *   barrier-lazy-backing   rule 1 (data before the L2 entry) where the data
 *                          write's barrier is the only one: lazy refcounts
 *                          write no refcount block, and the old content
 *                          (a non-zero raw backing file) is not zero
 *   barrier-extl2-owned    the same for extended-L2 writes that fill new
 *                          subclusters of clusters the image already owns
 *   async-*                the asynchronous fast path (qc_write_async_fast:
 *                          L2 update in the data completion), which runs
 *                          only when data and metadata use separate device
 *                          handles: the image's metadata handle is replaced
 *                          by a second handle on the same RAM backing
 *   alloc-refblocks-*      the allocator across many refcount-block ranges
 *                          (new refcount blocks created during allocation,
 *                          and the re-scan of the run they may take)
 *   corrupt-bit-*          a read-write open of an image marked corrupt (by
 *                          another program, or by cowpool itself during a
 *                          session) is refused and writes nothing; read-only
 *                          use and check still work
 *   overlap-*              allocations that would land on metadata (damage
 *                          classes) fail naming the metadata, mark the
 *                          image corrupt and leave the metadata intact
 *
 * Cut sweeps: every write of the scenario is a cut point (drop every
 * unflushed write, and keep seeded subsets); CP_SAFETY_LONG=1 runs more
 * kept subsets per cut (the mutation runner sets it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockcore.h"
#include "common.h"
#include "unit_lib.h"
#include "qcow.h"
#include "qcow_int.h"      /* img->q->dev: the image's metadata handle */

static bool long_run(void)
{
	const char *e = getenv("CP_SAFETY_LONG");
	return e && *e && strcmp(e, "0");
}

/* --- a second handle on a RAM device ------------------------------------
 * Images opened by path get two handles on their file (q->dev for metadata,
 * q->ddev for data) and only then take the async fast path.  A RAM device
 * has no path: cp_ram_open_twin() builds the same situation, a device that
 * shares the RAM state (content, write counter, cut) but has its own
 * completion thread. */
static cp_bdev *ram_twin(cp_bdev *ram)
{
	cp_bdev *d;
	if (cp_ram_open_twin(ram, &d) < 0)
		fail_msg("open twin: %s", cp_last_error());
	return d;
}

/* --- environment: image on RAM over a non-zero raw base on RAM ------------ */

struct scen {
	const char *name;
	uint64_t size;
	uint32_t cluster;
	unsigned refbits;
	bool extl2, lazy, backing;
	bool prefill;   /* extl2: one subcluster of every cluster written */
	bool async;     /* writes through the async API, split handles */
	unsigned l2slices; /* L2 cache entries (512-byte slices): fewer than
			    * the disk has, so dirty slices are written
			    * between flushes */
	int nops;
	uint64_t seed;
};

struct env {
	const struct scen *s;
	/* rc.base_content: the guest content when the ops start */
	struct ram_chain rc;
	cp_bdev *twin;
};

static void env_open_opts(struct env *e, struct cp_open_opts *o)
{
	/* small caches: L2 slices are written between flushes */
	ram_chain_open_opts(&e->rc, o, 512ull * e->s->l2slices);
}

static int env_open(struct env *e, cp_image **img)
{
	struct cp_open_opts o;
	env_open_opts(e, &o);
	int r = cp_image_open_dev(e->rc.top, "top.qcow2", &o, img);
	if (r < 0)
		return r;
	if (e->s->async) {
		e->twin = ram_twin(e->rc.top);
		(*img)->q->dev = e->twin;
	}
	return 0;
}

static int env_close(struct env *e, cp_image *img)
{
	int r = cp_image_close(img);
	cp_bdev_close(e->twin);
	e->twin = NULL;
	return r;
}

static void env_make(const struct scen *s, struct env *e, uint64_t keep)
{
	memset(e, 0, sizeof(*e));
	e->s = s;
	struct cp_create_opts co;
	cp_create_opts_init(&co);
	co.virtual_size = s->size;
	co.cluster_size = s->cluster;
	co.refcount_bits = s->refbits;
	co.extended_l2 = s->extl2;
	co.lazy_refcounts = s->lazy;
	uint8_t *base = calloc(1, s->size);
	assert_non_null(base);
	if (s->backing) {
		/* non-zero everywhere: a lost write cannot pass for old data */
		uint64_t seed = s->seed ^ 0x5a5a;
		for (uint64_t i = 0; i < s->size; i += 8) {
			uint64_t v = rng_next(&seed) | 0x0101010101010101ull;
			memcpy(base + i, &v, 8);
		}
	}
	ram_chain_make(&e->rc, keep, &co, s->backing ? base : NULL, s->size);
	e->rc.base_content = base; /* the guest's content, base or not */
	if (s->prefill) {
		/* every cluster owned by the image, one subcluster written */
		cp_image *img;
		struct cp_open_opts o;
		env_open_opts(e, &o);
		assert_int_equal(cp_image_open_dev(e->rc.top, "top.qcow2", &o, &img), 0);
		uint32_t sub = s->extl2 ? s->cluster / 32 : s->cluster;
		uint8_t *b = malloc(sub);
		for (uint64_t c = 0; c < s->size; c += s->cluster) {
			memset(b, (int)(0xa0 + (c / s->cluster) % 64), sub);
			assert_int_equal(cp_image_pwrite(img, b, sub, c), 0);
			memcpy(e->rc.base_content + c, b, sub);
		}
		free(b);
		assert_int_equal(cp_image_close(img), 0);
	}
	assert_int_equal(cp_bdev_flush(e->rc.top), 0);
}

static void env_free(struct env *e)
{
	cp_bdev_close(e->twin);
	ram_chain_free(&e->rc);
}

/* --- the ops -------------------------------------------------------------- */

/* One op: offset and length.  extl2 scenarios write whole subclusters
 * (mostly: the rest are unaligned and need copy-on-write from the base). */
static void pick(const struct scen *s, uint64_t *seed, uint64_t *off,
		 uint64_t *len)
{
	uint64_t x = rng_next(seed);
	uint32_t sub = s->extl2 ? s->cluster / 32 : s->cluster;
	if (s->extl2 || s->async) {
		uint64_t nsub = s->size / sub;
		*off = (rng_next(seed) % nsub) * sub;
		*len = sub * (1 + x % 3);
		if (!s->async && x % 4 == 3) { /* unaligned */
			*off += rng_next(seed) % sub;
			*len = 1 + rng_next(seed) % (2 * sub);
		}
	} else {
		*off = rng_next(seed) % s->size;
		*len = 512 + rng_next(seed) % (2 * s->cluster);
		if (x % 3 == 0)
			*off = *off / s->cluster * s->cluster;
	}
	/* async batches never cross an L2 slice or touch the same cluster
	 * twice: keep each request inside its cluster */
	if (s->async && *off / s->cluster != (*off + *len - 1) / s->cluster)
		*len = CP_ALIGN_UP(*off + 1, s->cluster) - *off;
	if (*off + *len > s->size)
		*len = s->size - *off;
}

static int run_ops(struct env *e, struct model *m)
{
	const struct scen *s = e->s;
	cp_image *img;
	int r = env_open(e, &img);
	if (r < 0)
		return r;
	uint64_t seed = s->seed;
	uint8_t *buf = malloc(8 * (size_t)s->cluster * 3);
	assert_non_null(buf);
	for (int i = 0; i < s->nops && r >= 0; i++) {
		if (i % 5 == 4) {
			r = cp_image_flush(img);
			if (r >= 0)
				model_flush(m);
			continue;
		}
		if (!s->async) {
			uint64_t off, len;
			pick(s, &seed, &off, &len);
			for (uint64_t k = 0; k < len; k++)
				buf[k] = (uint8_t)(1 + (i * 37 + k / 512) % 250);
			model_write(m, off, buf, len);
			r = cp_image_pwrite(img, buf, len, off);
			continue;
		}
		/* a batch of up to 4 writes in flight, distinct clusters */
		struct counter w;
		counter_init(&w);
		struct iovec iov[4];
		uint64_t used[4];
		int n = 0;
		for (int j = 0; j < 4; j++) {
			uint64_t off, len;
			pick(s, &seed, &off, &len);
			bool dup = false;
			for (int k = 0; k < n; k++)
				dup |= used[k] == off / s->cluster;
			if (dup)
				continue;
			uint8_t *b = buf + (size_t)n * 3 * s->cluster;
			for (uint64_t k = 0; k < len; k++)
				b[k] = (uint8_t)(1 + (i * 37 + j * 11 + k / 512) % 250);
			model_write(m, off, b, len);
			iov[n].iov_base = b;
			iov[n].iov_len = len;
			used[n] = off / s->cluster;
			counter_add(&w);
			int q = cp_image_pwritev_async(img, &iov[n], 1, off, counter_cb, &w);
			if (q < 0) {
				counter_cb(&w, q);
				break;
			}
			n++;
		}
		counter_wait(&w, 0);
		r = w.first_err;
		counter_destroy(&w);
	}
	free(buf);
	int r2 = env_close(e, img);
	if (r >= 0 && r2 >= 0)
		model_flush(m);
	return r < 0 ? r : r2;
}

static void no_report(void *opaque, const char *msg)
{
	(void)opaque;
	(void)msg;
}

static void verify(struct env *e, struct model *m, uint64_t cut, uint64_t keep)
{
	const struct scen *s = e->s;
	assert_int_equal(cp_ram_restart(e->rc.top), 0);
	struct cp_open_opts o;
	cp_image *img;
	env_open_opts(e, &o);
	int r = cp_image_open_dev(e->rc.top, "top.qcow2", &o, &img);
	if (r < 0)
		fail_msg("%s cut %llu keep %llu: open: %s", s->name,
			 (unsigned long long)cut, (unsigned long long)keep,
			 cp_last_error());
	uint8_t *got = malloc(s->size);
	assert_non_null(got);
	r = cp_image_pread(img, got, s->size, 0);
	if (r < 0)
		fail_msg("%s cut %llu: read: %s", s->name,
			 (unsigned long long)cut, cp_last_error());
	int64_t bad = model_verify(m, got, m->size);
	if (bad >= 0)
		fail_msg("%s cut %llu keep %llu: byte %lld is 0x%02x, flushed 0x%02x (%u later versions)",
			 s->name, (unsigned long long)cut, (unsigned long long)keep,
			 (long long)bad, got[bad], m->flushed[bad], m->nalt[bad]);
	free(got);
	assert_int_equal(cp_image_close(img), 0);
	o.for_check = true;
	assert_int_equal(cp_image_open_dev(e->rc.top, "top.qcow2", &o, &img), 0);
	struct cp_check_result res;
	assert_int_equal(cp_image_check(img, 0, &res, no_report, NULL), 0);
	if (res.corruptions)
		fail_msg("%s cut %llu keep %llu: check found %llu corruptions",
			 s->name, (unsigned long long)cut, (unsigned long long)keep,
			 (unsigned long long)res.corruptions);
	assert_int_equal(cp_image_close(img), 0);
}

/* --- the sweep's callbacks (unit_lib.c's cut_sweep_run) ------------------- */

static cp_bdev *sweep_make(void *opaque, uint64_t keep, struct model *m)
{
	struct env *e = opaque;
	env_make(e->s, e, keep);
	model_init(m, e->s->size, e->rc.base_content);
	return e->rc.top;
}

static int sweep_ops(void *opaque, struct model *m)
{
	return run_ops(opaque, m);
}

static int sweep_open(void *opaque, cp_image **img)
{
	return env_open(opaque, img);
}

static int sweep_close(void *opaque, cp_image *img)
{
	return env_close(opaque, img);
}

static void sweep_verify(void *opaque, struct model *m, uint64_t cut,
			 uint64_t keep)
{
	struct env *e = opaque;
	cp_bdev_close(e->twin);
	e->twin = NULL;
	verify(e, m, cut, keep);
}

static void sweep_free(void *opaque)
{
	env_free(opaque);
}

static void sweep(const struct scen *s)
{
	struct env e = { .s = s };
	struct cut_sweep cs = {
		.name = s->name, .seed = s->seed,
		.passes = long_run() ? 9 : 4, .env = &e,
		.make = sweep_make, .run = sweep_ops, .open = sweep_open,
		.close = sweep_close, .verify = sweep_verify, .free = sweep_free,
	};
	cut_sweep_run(&cs);
}

/* name, size, cluster, refbits, extl2, lazy, backing, prefill, async,
 * l2slices, nops, seed */
static const struct scen sweeps[] = {
	/* Rule 1 alone: lazy refcounts write no refcount block (so no
	 * refcount barrier flushes the data), and a lost data write would
	 * read as zeroes where the base has non-zero bytes.  4 KiB clusters,
	 * 2 MiB: eight L2 slices in a four-entry cache */
	{ "barrier-lazy-backing", 2 << 20, 4096, 16, false, true, true, false, false, 4, 30, 31 },
	/* Rule 1 alone: new subclusters of clusters the image already owns
	 * need no allocation, so no refcount update at all.  16 KiB
	 * clusters, 4 MiB: eight L2 slices in a four-entry cache */
	{ "barrier-extl2-owned", 4 << 20, 16384, 16, true, false, true, true, false, 4, 30, 32 },
	/* The async fast path: subclusters of owned clusters (extended L2)
	 * and fresh whole clusters under lazy refcounts, over a non-zero
	 * base.  The fast path needs 4 unpinned cache entries besides the
	 * batch's: 9 entries, 12 slices on the disk */
	{ "async-extl2-owned", 6 << 20, 16384, 16, true, false, true, true, true, 9, 12, 33 },
	{ "async-fresh", 3 << 20, 4096, 16, false, false, true, false, true, 9, 12, 34 },
	{ "async-fresh-lazy", 3 << 20, 4096, 16, false, true, true, false, true, 9, 12, 35 },
};

static void test_sweep(void **state)
{
	sweep(*state);
}

/* one test per sweep, named after it */
#define SWEEP_TEST(i) { sweeps[i].name, test_sweep, NULL, NULL, (void *)&sweeps[i] }

/* --- raw access to the image's metadata ----------------------------------- */

static uint64_t rd64(cp_bdev *d, uint64_t off)
{
	uint8_t b[8];
	assert_int_equal(cp_bdev_pread(d, b, 8, off), 0);
	return cp_be64(b);
}

static void wr64(cp_bdev *d, uint64_t off, uint64_t v)
{
	uint8_t b[8];
	cp_put_be64(b, v);
	assert_int_equal(cp_bdev_pwrite(d, b, 8, off), 0);
	assert_int_equal(cp_bdev_flush(d), 0);
}

#define H_L1 40
#define H_RT 48
#define H_INCOMPAT 72

static uint8_t *snapshot(cp_bdev *d, uint64_t *len)
{
	*len = cp_bdev_size(d);
	uint8_t *b = malloc(*len);
	assert_non_null(b);
	assert_int_equal(cp_bdev_pread(d, b, *len, 0), 0);
	return b;
}

/* A plain image (no backing) on RAM with pattern data in the listed guest
 * clusters; returns the device. */
static cp_bdev *plain_image(uint64_t size, uint32_t cluster, unsigned refbits,
			    const uint64_t *gc, int n)
{
	cp_bdev *d;
	struct cp_ram_opts ro;
	cp_ram_opts_init(&ro);
	ro.max_size = 1ull << 32;
	assert_int_equal(cp_bdev_open_ram(&ro, &d), 0);
	struct cp_create_opts co;
	cp_create_opts_init(&co);
	co.virtual_size = size;
	co.cluster_size = cluster;
	co.refcount_bits = refbits;
	assert_int_equal(cp_image_create_dev(d, "img.qcow2", &co, NULL, NULL), 0);
	cp_image *img;
	struct cp_open_opts o;
	cp_open_opts_init(&o);
	assert_int_equal(cp_image_open_dev(d, "img.qcow2", &o, &img), 0);
	uint8_t *b = malloc(cluster);
	for (int i = 0; i < n; i++) {
		memset(b, (int)(0x40 + i), cluster);
		assert_int_equal(cp_image_pwrite(img, b, cluster, gc[i] * cluster), 0);
	}
	free(b);
	assert_int_equal(cp_image_close(img), 0);
	return d;
}

static int open_mode(cp_bdev *d, bool ro, bool check, cp_image **img)
{
	struct cp_open_opts o;
	cp_open_opts_init(&o);
	o.readonly = ro;
	o.for_check = check;
	return cp_image_open_dev(d, "img.qcow2", &o, img);
}

/* --- the allocator across refcount blocks --------------------------------- */

static void alloc_across(const char *name, uint64_t size, uint32_t cluster,
			 unsigned refbits, uint64_t seed)
{
	cp_bdev *d = plain_image(size, cluster, refbits, NULL, 0);
	struct cp_open_opts o;
	cp_open_opts_init(&o);
	o.refcount_cache_size = 4 * cluster; /* refcount blocks evicted */
	cp_image *img;
	uint8_t *want = calloc(1, size);
	uint8_t *buf = malloc(8 * (size_t)cluster);
	assert_non_null(buf);
	assert_int_equal(cp_image_open_dev(d, "img.qcow2", &o, &img), 0);
	/* the whole disk in runs of 1..8 clusters, in two interleaved passes
	 * (even runs, then odd ones after a reopen: the allocator restarts
	 * its scan from the first cluster and walks every range again) */
	uint64_t ncl = size / cluster;
	for (int pass = 0; pass < 2; pass++) {
		uint64_t s = seed, c = 0;
		for (int run = 0; c < ncl; run++) {
			uint64_t k = 1 + rng_next(&s) % 8;
			if (c + k > ncl)
				k = ncl - c;
			if (run % 2 == pass) {
				for (uint64_t j = 0; j < k * cluster; j++)
					buf[j] = (uint8_t)(1 + (c * 7 + j / 512 + (uint64_t)run) % 251);
				int r = cp_image_pwrite(img, buf, k * cluster, c * cluster);
				if (r < 0)
					fail_msg("%s: write at cluster %llu: %s", name,
						 (unsigned long long)c, cp_last_error());
				memcpy(want + c * cluster, buf, k * cluster);
				if (run % 16 == 0)
					assert_int_equal(cp_image_flush(img), 0);
			}
			c += k;
		}
		assert_int_equal(cp_image_close(img), 0);
		assert_int_equal(cp_image_open_dev(d, "img.qcow2", &o, &img), 0);
	}
	uint8_t *got = malloc(size);
	assert_int_equal(cp_image_pread(img, got, size, 0), 0);
	for (uint64_t i = 0; i < size; i++)
		if (got[i] != want[i])
			fail_msg("%s: byte %llu reads 0x%02x, wrote 0x%02x", name,
				 (unsigned long long)i, got[i], want[i]);
	assert_int_equal(cp_image_close(img), 0);
	assert_int_equal(open_mode(d, true, true, &img), 0);
	image_check_clean(img, name);
	printf("# %s: %llu clusters, %llu refcount blocks' ranges\n", name,
	       (unsigned long long)ncl,
	       (unsigned long long)(ncl / (cluster * 8ull / refbits) + 1));
	free(got);
	free(want);
	free(buf);
	cp_bdev_close(d);
}

static void test_alloc_refblocks(void **state)
{
	(void)state;
	/* 64 refcounts per block: a new block every 32 KiB */
	alloc_across("alloc-refblocks-512-rc64", 4 << 20, 512, 64, 41);
	/* 256 per block */
	alloc_across("alloc-refblocks-512-rc16", 4 << 20, 512, 16, 42);
	/* 512 per block, 4 KiB clusters */
	alloc_across("alloc-refblocks-4k-rc64", 16 << 20, 4096, 64, 43);
	/* 2 MiB clusters: one refcount block covers 512 GiB, so no new
	 * block is made; the allocator's runs and the 4-entry refcount
	 * cache of whole 2 MiB blocks are exercised */
	alloc_across("alloc-2m-rc64", 64 << 20, 2 << 20, 64, 44);
}

/* --- the corrupt bit ------------------------------------------------------ */

static void expect_refused(cp_bdev *d, const uint8_t *before, uint64_t len)
{
	uint64_t w = cp_ram_write_count(d);
	cp_image *img;
	int r = open_mode(d, false, false, &img);
	if (r != -EROFS)
		fail_msg("read-write open of a corrupt image: %d (%s)", r,
			 r < 0 ? cp_last_error() : "opened");
	assert_non_null(strstr(cp_last_error(), "marked corrupt"));
	assert_non_null(strstr(cp_last_error(), "img.qcow2"));
	assert_int_equal(cp_ram_write_count(d), w);
	uint64_t len2;
	uint8_t *after = snapshot(d, &len2);
	assert_int_equal(len2, len);
	assert_memory_equal(after, before, len);
	free(after);
}

static void test_corrupt_bit_foreign(void **state)
{
	(void)state;
	const uint64_t gc[] = { 0, 3 };
	cp_bdev *d = plain_image(1 << 20, 4096, 16, gc, 2);
	/* another program sets the bit */
	wr64(d, H_INCOMPAT, rd64(d, H_INCOMPAT) | QC_INCOMPAT_CORRUPT);
	uint64_t len;
	uint8_t *before = snapshot(d, &len);
	expect_refused(d, before, len);
	/* read-only use works */
	cp_image *img;
	assert_int_equal(open_mode(d, true, false, &img), 0);
	uint8_t b[4096], want[4096];
	memset(want, 0x41, sizeof(want));
	assert_int_equal(cp_image_pread(img, b, 4096, 3 * 4096), 0);
	assert_memory_equal(b, want, 4096);
	struct cp_image_info info;
	assert_int_equal(cp_image_get_info(img, &info), 0);
	assert_true(info.corrupt);
	assert_int_equal(cp_image_pwrite(img, b, 512, 0), -EROFS);
	assert_int_equal(cp_image_close(img), 0);
	/* check runs (the metadata itself is fine) */
	assert_int_equal(open_mode(d, true, true, &img), 0);
	struct cp_check_result res;
	assert_int_equal(cp_image_check(img, 0, &res, no_report, NULL), 0);
	assert_int_equal(res.corruptions, 0);
	assert_int_equal(cp_image_close(img), 0);
	expect_refused(d, before, len);
	free(before);
	cp_bdev_close(d);
}

static void test_corrupt_bit_session(void **state)
{
	(void)state;
	const uint64_t gc[] = { 0, 1 };
	cp_bdev *d = plain_image(1 << 20, 4096, 16, gc, 2);
	/* damage: the L2 entry of guest cluster 1 points at the L1 table */
	uint64_t l1 = rd64(d, H_L1);
	uint64_t l2 = rd64(d, l1) & QC_L1E_OFFSET_MASK;
	wr64(d, l2 + 8, l1 | QC_OFLAG_COPIED);
	uint8_t l1before[4096];
	assert_int_equal(cp_bdev_pread(d, l1before, 4096, l1), 0);
	cp_image *img;
	assert_int_equal(open_mode(d, false, false, &img), 0);
	uint8_t b[4096];
	memset(b, 0x77, sizeof(b));
	/* the in-place write would land on the L1 table: refused, and the
	 * image is marked corrupt during the session */
	int r = cp_image_pwrite(img, b, 512, 4096);
	assert_int_equal(r, -EUCLEAN);
	assert_non_null(strstr(cp_last_error(), "L1 table"));
	assert_non_null(strstr(cp_last_error(), "marked corrupt"));
	assert_true(rd64(d, H_INCOMPAT) & QC_INCOMPAT_CORRUPT);
	/* nothing more is written in this session */
	r = cp_image_pwrite(img, b, 512, 0);
	assert_true(r < 0);
	cp_image_close(img);
	uint8_t l1after[4096];
	assert_int_equal(cp_bdev_pread(d, l1after, 4096, l1), 0);
	assert_memory_equal(l1after, l1before, 4096);
	uint8_t want[4096];
	memset(want, 0x40, sizeof(want));
	uint64_t len;
	uint8_t *before = snapshot(d, &len);
	expect_refused(d, before, len);
	assert_int_equal(open_mode(d, true, false, &img), 0);
	assert_int_equal(cp_image_pread(img, b, 4096, 0), 0);
	assert_memory_equal(b, want, 4096);
	assert_int_equal(cp_image_close(img), 0);
	assert_int_equal(open_mode(d, true, true, &img), 0);
	struct cp_check_result res;
	assert_int_equal(cp_image_check(img, 0, &res, no_report, NULL), 0);
	assert_true(res.corruptions > 0);
	assert_int_equal(cp_image_close(img), 0);
	free(before);
	cp_bdev_close(d);
}

/* --- the overlap check ---------------------------------------------------- */

/* Write guest cluster gc of the damaged image: must fail naming what, mark
 * the image corrupt, and change no other byte of the file. */
static void expect_overlap(cp_bdev *d, uint64_t gc, const char *what)
{
	uint64_t len;
	uint8_t *before = snapshot(d, &len);
	cp_image *img;
	assert_int_equal(open_mode(d, false, false, &img), 0);
	uint8_t b[4096];
	memset(b, 0x99, sizeof(b));
	int r = cp_image_pwrite(img, b, sizeof(b), gc * 4096);
	if (r != -EUCLEAN)
		fail_msg("write over %s: %d (%s)", what, r,
			 r < 0 ? cp_last_error() : "written");
	if (!strstr(cp_last_error(), what))
		fail_msg("message does not name the %s: %s", what, cp_last_error());
	assert_non_null(strstr(cp_last_error(), "marked corrupt"));
	cp_image_close(img);
	uint64_t len2;
	uint8_t *after = snapshot(d, &len2);
	assert_true(cp_be64(after + H_INCOMPAT) & QC_INCOMPAT_CORRUPT);
	cp_put_be64(after + H_INCOMPAT, cp_be64(before + H_INCOMPAT));
	assert_true(len2 >= len);
	for (uint64_t i = 0; i < len; i++)
		if (after[i] != before[i])
			fail_msg("write over %s changed byte 0x%llx", what,
				 (unsigned long long)i);
	free(before);
	free(after);
}

static uint64_t refcount_pos(cp_bdev *d, uint64_t off)
{
	/* 4 KiB clusters, 16-bit refcounts: 2048 per block */
	uint64_t rt = rd64(d, H_RT);
	uint64_t c = off / 4096;
	uint64_t rb = rd64(d, rt + 8 * (c / 2048)) & QC_REFT_OFFSET_MASK;
	return rb + 2 * (c % 2048);
}

static void test_overlap_zero_refcount_l2(void **state)
{
	(void)state;
	const uint64_t gc[] = { 0 };
	cp_bdev *d = plain_image(8 << 20, 4096, 16, gc, 1);
	uint64_t l2 = rd64(d, rd64(d, H_L1)) & QC_L1E_OFFSET_MASK;
	uint8_t z[2] = { 0, 0 };
	assert_int_equal(cp_bdev_pwrite(d, z, 2, refcount_pos(d, l2)), 0);
	assert_int_equal(cp_bdev_flush(d), 0);
	expect_overlap(d, 5, "L2 table");
	cp_bdev_close(d);
}

/* An L2 table on a refcount block: the guest's change through the table
 * would overwrite the refcount block (and the refcount updates the L2
 * entries).  The check runs before the first change through a slice, and
 * a write-back passes over a structure only of its own kind. */
static void test_overlap_l2_on_refblock(void **state)
{
	(void)state;
	const uint64_t gc[] = { 0, 1024 };
	cp_bdev *d = plain_image(8 << 20, 4096, 16, gc, 2);
	uint64_t l1 = rd64(d, H_L1);
	uint64_t rb = rd64(d, rd64(d, H_RT)) & QC_REFT_OFFSET_MASK;
	/* the second L2 table is the refcount block */
	wr64(d, l1 + 8, rb | QC_OFLAG_COPIED);
	expect_overlap(d, 512 + 100, "refcount block");
	cp_bdev_close(d);
}

/* A duplicated L2 table: a change through it would remap the other L1
 * entry's range too (COPIED was copied with the entry, so the refcount is
 * not looked at). */
static void test_overlap_dup_l2(void **state)
{
	(void)state;
	const uint64_t gc[] = { 0, 512 };
	cp_bdev *d = plain_image(8 << 20, 4096, 16, gc, 2);
	uint64_t l1 = rd64(d, H_L1);
	/* L1[1] is a copy of L1[0]: one L2 table, two references */
	wr64(d, l1 + 8, rd64(d, l1));
	expect_overlap(d, 512 + 100, "L2 table");
	cp_bdev_close(d);
}

/* --- the high-water mark and its threshold event (thin volumes) ------------ */

struct hw_event {
	int calls;
	uint64_t hw;
};

static void hw_event_cb(void *opaque, uint64_t hw)
{
	struct hw_event *e = opaque;
	e->calls++;
	e->hw = hw;
}

static uint64_t end_offset_by_check(cp_bdev *d)
{
	cp_image *img;
	struct cp_check_result res;
	assert_int_equal(open_mode(d, true, true, &img), 0);
	assert_int_equal(cp_image_check(img, 0, &res, NULL, NULL), 0);
	assert_int_equal(res.corruptions + res.leaks, 0);
	assert_int_equal(cp_image_close(img), 0);
	return res.image_end_offset;
}

static void test_high_water(void **state)
{
	(void)state;
	const uint32_t cs = 65536;
	const uint64_t gc[] = { 0, 7 };
	cp_bdev *d = plain_image(64 << 20, cs, 16, gc, 2);
	uint8_t *b = malloc(cs);
	uint64_t hw, now, thr, next = 20;
	cp_image *img;
	memset(b, 0x5c, cs);

	/* computed from the refcounts: qemu-img check's image end offset,
	 * not the size of the device (an LV is larger than what it holds) */
	uint64_t want = end_offset_by_check(d);
	assert_int_equal(cp_bdev_truncate(d, 32 << 20), 0);
	assert_int_equal(open_mode(d, false, false, &img), 0);
	assert_int_equal(cp_image_high_water(img, &hw), 0);
	assert_int_equal(hw, want);
	assert_true(hw < cp_bdev_size(d));

	/* one shot, on the write whose allocation crosses the threshold */
	struct hw_event ev = { 0, 0 };
	thr = hw + 2 * cs;
	assert_int_equal(cp_image_set_write_threshold(img, thr, hw_event_cb,
						      &ev), 0);
	assert_int_equal(cp_image_pwrite(img, b, cs, 0), 0); /* allocated */
	assert_int_equal(ev.calls, 0);
	for (int i = 0; i < 32; i++) {
		assert_int_equal(cp_image_pwrite(img, b, cs, next++ * cs), 0);
		assert_int_equal(cp_image_high_water(img, &now), 0);
		assert_int_equal(ev.calls, now > thr ? 1 : 0);
	}
	assert_int_equal(ev.calls, 1);
	assert_true(ev.hw > thr);
	assert_true(ev.hw <= now);

	/* already above: at once, on the caller's thread */
	struct hw_event at_once = { 0, 0 };
	assert_int_equal(cp_image_set_write_threshold(img, 0, hw_event_cb,
						      &at_once), 0);
	assert_int_equal(at_once.calls, 1);
	assert_int_equal(at_once.hw, now);

	/* disarmed: no call */
	struct hw_event off = { 0, 0 };
	assert_int_equal(cp_image_set_write_threshold(img, now, hw_event_cb,
						      &off), 0);
	assert_int_equal(cp_image_set_write_threshold(img, now, NULL, NULL), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(cp_image_pwrite(img, b, cs, next++ * cs), 0);
	assert_int_equal(off.calls, 0);
	assert_int_equal(cp_image_high_water(img, &now), 0);
	assert_int_equal(cp_image_close(img), 0);

	/* after a reopen the refcounts give the same mark again */
	assert_int_equal(end_offset_by_check(d), now);
	assert_int_equal(open_mode(d, true, false, &img), 0);
	assert_int_equal(cp_image_high_water(img, &hw), 0);
	assert_int_equal(hw, now);
	assert_int_equal(cp_image_close(img), 0);
	cp_bdev_close(d);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		SWEEP_TEST(0),
		SWEEP_TEST(1),
		SWEEP_TEST(2),
		SWEEP_TEST(3),
		SWEEP_TEST(4),
		cmocka_unit_test(test_alloc_refblocks),
		cmocka_unit_test(test_corrupt_bit_foreign),
		cmocka_unit_test(test_corrupt_bit_session),
		cmocka_unit_test(test_overlap_zero_refcount_l2),
		cmocka_unit_test(test_overlap_l2_on_refblock),
		cmocka_unit_test(test_overlap_dup_l2),
		cmocka_unit_test(test_high_water),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
