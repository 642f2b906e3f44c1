/* tests/unit/test_qcow_bitmap.c - persistent dirty bitmaps (qcow/bitmap.c)
 * under power cuts.
 *
 * Session 1 adds bitmaps and writes; session 2 writes more, removes one
 * bitmap, adds another and closes (the bitmaps are stored).  Session 2 runs
 * once to count its device writes, then once per write with the power cut
 * just before it (dropping every unflushed write, and keeping seeded
 * subsets).  After each cut:
 *   - the image opens, check finds no corruption (leaks are allowed);
 *   - every bitmap listed is either in use (its writer stopped: QEMU calls
 *     it inconsistent) or consistent, and a consistent one has the bits of
 *     every write of session 1, and of every write of session 2 whose data
 *     reads back (or once the directory shows session 2's layout), and no
 *     bit where nothing was written;
 *   - a read-write open and close afterwards leaves check clean too.
 * Also: an open that writes nothing leaves the device as it was, and
 * writers on many threads lose no bit.
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
#include "qcow.h"

#define SIZE (8ull << 20)
#define CLUSTER 4096u

static const uint64_t w1[] = { 0, 1u << 20, 5u << 20 };   /* session 1 */
static const uint64_t w2[] = { 2u << 20, 7u << 20 };      /* session 2 */

static void open_img(cp_bdev *dev, bool ro, bool check, cp_image **img)
{
	struct cp_open_opts o;
	cp_open_opts_init(&o);
	o.readonly = ro;
	o.for_check = check;
	int r = cp_image_open_dev(dev, "bm.qcow2", &o, img);
	if (r < 0)
		fail_msg("open: %s", cp_last_error());
}

static void write_at(cp_image *img, uint64_t off)
{
	static uint8_t buf[8192];
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(cp_image_pwrite(img, buf, sizeof(buf), off), 0);
}

static void add(cp_image *img, const char *name, uint32_t gran, bool off)
{
	struct cp_bitmap_add_opts ao;
	cp_bitmap_add_opts_init(&ao);
	ao.granularity = gran;
	ao.disabled = off;
	if (cp_image_bitmap_add(img, name, &ao) < 0)
		fail_msg("add %s: %s", name, cp_last_error());
}

/* A new SIZE image of CLUSTER clusters on a RAM device (keep_seed keep). */
static cp_bdev *new_image(uint64_t keep)
{
	struct cp_ram_opts ro;
	cp_ram_opts_init(&ro);
	ro.keep_seed = keep;
	cp_bdev *dev;
	assert_int_equal(cp_bdev_open_ram(&ro, &dev), 0);
	struct cp_create_opts co;
	cp_create_opts_init(&co);
	co.virtual_size = SIZE;
	co.cluster_size = CLUSTER;
	assert_int_equal(cp_image_create_dev(dev, "bm.qcow2", &co, NULL, NULL), 0);
	return dev;
}

static cp_bdev *session1(uint64_t keep)
{
	cp_bdev *dev = new_image(keep);
	cp_image *img;
	open_img(dev, false, false, &img);
	add(img, "a", 0, false);
	add(img, "gone", 65536, false);
	add(img, "off", 512, true);
	for (size_t i = 0; i < CP_ARRAY_SIZE(w1); i++)
		write_at(img, w1[i]);
	assert_int_equal(cp_image_close(img), 0);
	assert_int_equal(cp_bdev_flush(dev), 0);
	return dev;
}

/* Returns an error only after the cut.  With layout, a bitmap is removed
 * and one added (a new directory); without, only writes (the directory is
 * rewritten in place). */
static int session2(cp_bdev *dev, bool layout)
{
	cp_image *img;
	struct cp_open_opts o;
	cp_open_opts_init(&o);
	int r = cp_image_open_dev(dev, "bm.qcow2", &o, &img);
	if (r < 0)
		return r;
	static uint8_t buf[8192];
	memset(buf, 0xa5, sizeof(buf));
	for (size_t i = 0; i < CP_ARRAY_SIZE(w2) && r >= 0; i++)
		r = cp_image_pwrite(img, buf, sizeof(buf), w2[i]);
	if (r >= 0) /* the data is visible before the bitmaps are stored */
		r = cp_image_flush(img);
	if (r >= 0 && layout)
		r = cp_image_bitmap_remove(img, "gone");
	if (r >= 0 && layout) {
		struct cp_bitmap_add_opts ao;
		cp_bitmap_add_opts_init(&ao);
		r = cp_image_bitmap_add(img, "new", &ao);
	}
	int c = cp_image_close(img);
	return r < 0 ? r : c;
}

static bool dirty(cp_image *img, const char *name, uint64_t off)
{
	uint64_t pnum;
	int r = cp_image_bitmap_status(img, name, off, 4096, &pnum);
	if (r < 0)
		fail_msg("status %s: %s", name, cp_last_error());
	return r == 1;
}

static void check_clean(cp_bdev *dev, const char *when)
{
	cp_image *img;
	struct cp_check_result res;
	open_img(dev, true, true, &img);
	assert_int_equal(cp_image_check(img, 0, &res, NULL, NULL), 0);
	if (res.corruptions)
		fail_msg("%s: %llu corruptions", when,
			 (unsigned long long)res.corruptions);
	cp_image_close(img);
}

static void verify(cp_bdev *dev, uint64_t cut, bool layout)
{
	cp_image *img;
	check_clean(dev, "after the cut");
	open_img(dev, true, false, &img);
	int n = cp_image_bitmap_count(img);
	bool layout2 = false;
	for (int i = 0; i < n; i++) {
		struct cp_bitmap_info bi;
		assert_int_equal(cp_image_bitmap_get(img, (unsigned)i, &bi), 0);
		if (!strcmp(bi.name, "new"))
			layout2 = true;
	}
	(void)layout;
	assert_int_equal(n, 3); /* a, gone or new, off */
	for (int i = 0; i < n; i++) {
		struct cp_bitmap_info bi;
		assert_int_equal(cp_image_bitmap_get(img, (unsigned)i, &bi), 0);
		if (bi.in_use || !strcmp(bi.name, "new"))
			continue;
		if (!strcmp(bi.name, "off")) {
			for (size_t k = 0; k < CP_ARRAY_SIZE(w1); k++)
				if (dirty(img, "off", w1[k]))
					fail_msg("cut %llu: disabled bitmap dirty",
						 (unsigned long long)cut);
			continue;
		}
		for (size_t k = 0; k < CP_ARRAY_SIZE(w1); k++)
			if (!dirty(img, bi.name, w1[k]))
				fail_msg("cut %llu: %s lost session 1's bit at %llu",
					 (unsigned long long)cut, bi.name,
					 (unsigned long long)w1[k]);
		/* data that changed is dirty in every consistent bitmap */
		for (size_t k = 0; k < CP_ARRAY_SIZE(w2); k++) {
			uint8_t c;
			assert_int_equal(cp_image_pread(img, &c, 1, w2[k]), 0);
			if ((c || layout2) && !dirty(img, bi.name, w2[k]))
				fail_msg("cut %llu: %s stored without session 2's bit at %llu",
					 (unsigned long long)cut, bi.name,
					 (unsigned long long)w2[k]);
		}
		if (dirty(img, bi.name, 3u << 20))
			fail_msg("cut %llu: %s dirty where nothing was written",
				 (unsigned long long)cut, bi.name);
	}
	cp_image_close(img);
	/* a writer after the cut stores a clean state again */
	open_img(dev, false, false, &img);
	write_at(img, 6u << 20);
	assert_int_equal(cp_image_close(img), 0);
	check_clean(dev, "after the next session");
	open_img(dev, true, false, &img);
	assert_int_equal(cp_image_bitmap_count(img), 3);
	cp_image_close(img);
}

static void sweep(uint64_t keep, bool layout)
{
	cp_bdev *dev = session1(keep);
	uint64_t start = cp_ram_write_count(dev);
	assert_int_equal(session2(dev, layout), 0);
	uint64_t total = cp_ram_write_count(dev) - start;
	verify(dev, total, layout);
	cp_bdev_close(dev);
	assert_true(total > 4);
	if (getenv("CP_TRACE"))
		fprintf(stderr, "session 2: %llu writes\n", (unsigned long long)total);
	for (uint64_t cut = 0; cut < total; cut++) {
		dev = session1(keep ? keep + cut : 0);
		assert_int_equal(cp_ram_set_cut_after(dev, (int64_t)(start + cut)), 0);
		session2(dev, layout);
		cp_clear_error();
		assert_true(cp_ram_is_cut(dev));
		assert_int_equal(cp_ram_restart(dev), 0);
		verify(dev, cut, layout);
		cp_bdev_close(dev);
	}
}

static void test_cut_drop(void **state)
{
	(void)state;
	sweep(0, true);
	sweep(0, false);
}

static void test_cut_keep(void **state)
{
	(void)state;
	sweep(0x5eed, true);
	sweep(0x5eed, false);
}

/* An open that writes nothing leaves the device byte for byte. */
static void test_open_no_write(void **state)
{
	(void)state;
	cp_bdev *dev = session1(0);
	uint64_t n = cp_bdev_size(dev);
	uint8_t *a = malloc(n), *b = malloc(n);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(cp_bdev_pread(dev, a, n, 0), 0);
	cp_image *img;
	open_img(dev, false, false, &img);
	assert_int_equal(cp_image_close(img), 0);
	assert_int_equal(cp_bdev_size(dev), n);
	assert_int_equal(cp_bdev_pread(dev, b, n, 0), 0);
	assert_memory_equal(a, b, n);
	free(a);
	free(b);
	cp_bdev_close(dev);
}

/* Writers on many threads set neighbouring bits of the same words: none
 * may be lost (the bits are set with atomic ORs, without the lock). */
#define NTHREADS 4
#define NWRITES 2048 /* 8 x 2048 granules of 512 bytes: the disk */
struct writer {
	cp_image *img;
	unsigned t;
	pthread_barrier_t *go;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t buf[512];
	memset(buf, (int)w->t + 1, sizeof(buf));
	pthread_barrier_wait(w->go);
	for (uint64_t k = 0; k < NWRITES; k++) {
		/* 512-byte granules t, t + 8, t + 16...: thread t owns every
		 * 8th bit */
		uint64_t off = (k * 8 + w->t) * 512;
		if (cp_image_pwrite(w->img, buf, sizeof(buf), off) < 0)
			return (void *)1;
	}
	return NULL;
}

static void test_concurrent_marks(void **state)
{
	(void)state;
	cp_bdev *dev = new_image(0);
	cp_image *img;
	open_img(dev, false, false, &img);
	add(img, "fine", 512, false);
	pthread_t th[NTHREADS];
	struct writer w[NTHREADS];
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, NTHREADS);
	for (unsigned t = 0; t < NTHREADS; t++) {
		w[t] = (struct writer){ img, t, &go };
		assert_int_equal(pthread_create(&th[t], NULL, writer_main, &w[t]), 0);
	}
	for (unsigned t = 0; t < NTHREADS; t++) {
		void *ret;
		pthread_join(th[t], &ret);
		assert_null(ret);
	}
	pthread_barrier_destroy(&go);
	assert_int_equal(cp_image_close(img), 0);
	open_img(dev, true, false, &img);
	for (uint64_t g = 0; g < NWRITES * 8; g++) {
		uint64_t pnum;
		int r = cp_image_bitmap_status(img, "fine", g * 512, 512, &pnum);
		if (r != ((g % 8) < NTHREADS))
			fail_msg("granule %llu: status %d", (unsigned long long)g, r);
	}
	cp_image_close(img);
	cp_bdev_close(dev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_no_write),
		cmocka_unit_test(test_concurrent_marks),
		cmocka_unit_test(test_cut_drop),
		cmocka_unit_test(test_cut_keep),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
