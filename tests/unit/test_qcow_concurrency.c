/* tests/unit/test_qcow_concurrency.c - many writers on one image.
 *
 *  - 64 threads race to allocate the same clusters, each writing its own
 *    1 KiB slot of every cluster (the content is fully determined);
 *  - 64 threads write overlapping random sector ranges: every sector must
 *    end up holding one complete write that covered it, never a mix;
 *  - the same through the async API at queue depth 64 from one thread;
 *  - after each: the image checks clean (no corruption, no leak) and all
 *    of it reads back as expected through a fresh open.
 * Images are files under /var/tmp with O_DIRECT and io_uring, so the
 * real engine paths (fast path, workers, in-flight list) are exercised.
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
#include <unistd.h>

#include "blockcore.h"
#include "common.h"
#include "unit_lib.h"
#include "qcow.h"

#define NTHREADS 64

static char dir[] = "/var/tmp/cp-conc-XXXXXX";

struct cfg {
	uint32_t cluster;
	bool extl2;
	bool backing;
	enum cp_aio aio;
	enum cp_cache cache;
};

static void create(const char *path, const struct cfg *c, uint64_t size,
		   const char *backing)
{
	struct cp_create_opts o;
	cp_create_opts_init(&o);
	o.virtual_size = size;
	o.cluster_size = c->cluster;
	o.extended_l2 = c->extl2;
	o.backing_file = backing;
	o.backing_format = backing ? "raw" : NULL;
	if (cp_image_create(path, &o) < 0)
		fail_msg("create %s: %s", path, cp_last_error());
}

static cp_image *open_img(const char *path, const struct cfg *c, bool check)
{
	struct cp_open_opts o;
	cp_open_opts_init(&o);
	o.aio = c->aio;
	o.cache = c->cache;
	o.for_check = check;
	cp_image *img;
	if (cp_image_open(path, &o, &img) < 0)
		fail_msg("open %s: %s", path, cp_last_error());
	return img;
}

static void check_clean(const char *path, const struct cfg *c)
{
	image_check_clean(open_img(path, c, true), path);
}

/* --- same clusters, own slots ---------------------------------------------- */

#define SLOT 1024
#define ROUNDS 24

struct slot_arg {
	cp_image *img;
	int t;
	uint32_t cluster;
	int err;
};

static uint64_t slot_cluster(int round)
{
	/* a spread of clusters, the same sequence for every thread */
	return ((uint64_t)round * 37 + 5) % 200;
}

static void *slot_writer(void *p)
{
	struct slot_arg *a = p;
	uint8_t *buf = cp_bdev_alloc_buf(SLOT);
	for (int j = 0; j < ROUNDS && !a->err; j++) {
		memset(buf, (uint8_t)(a->t * 7 + j + 1), SLOT);
		uint64_t off = slot_cluster(j) * a->cluster + (uint64_t)a->t * SLOT;
		if (cp_image_pwrite(a->img, buf, SLOT, off) < 0)
			a->err = 1;
	}
	cp_bdev_free_buf(buf);
	return NULL;
}

static void verify_slots(cp_image *img, uint32_t cluster, const uint8_t *base)
{
	uint8_t *buf = malloc(cluster);
	for (int j = 0; j < ROUNDS; j++) {
		uint64_t c = slot_cluster(j);
		assert_int_equal(cp_image_pread(img, buf, cluster, c * cluster), 0);
		for (int t = 0; t < NTHREADS; t++) {
			/* the last round that wrote this cluster wins the slot */
			int last = -1;
			for (int k = 0; k < ROUNDS; k++)
				if (slot_cluster(k) == c)
					last = k;
			uint8_t want = (uint8_t)(t * 7 + last + 1);
			for (int b = 0; b < SLOT; b++)
				if (buf[t * SLOT + b] != want)
					fail_msg("cluster %llu slot %d byte %d: 0x%02x, want 0x%02x",
						 (unsigned long long)c, t, b,
						 buf[t * SLOT + b], want);
		}
		/* beyond the slots: zeroes or the backing file */
		for (uint64_t b = NTHREADS * SLOT; b < cluster; b++) {
			uint8_t want = base ? base[c * cluster + b] : 0;
			if (buf[b] != want)
				fail_msg("cluster %llu byte %llu: 0x%02x, want 0x%02x (COW lost)",
					 (unsigned long long)c, (unsigned long long)b,
					 buf[b], want);
		}
	}
	free(buf);
}

static uint8_t *make_base(const char *path, uint64_t size)
{
	uint8_t *b = malloc(size);
	uint64_t s = 99;
	for (uint64_t i = 0; i < size; i += 8) {
		uint64_t v = rng_next(&s);
		memcpy(b + i, &v, 8);
	}
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, size, f), size);
	fclose(f);
	return b;
}

static void run_slots(const struct cfg *c)
{
	char path[256], bpath[256];
	uint64_t size = 200ull * c->cluster;
	uint8_t *base = NULL;
	snprintf(path, sizeof(path), "%s/slots.qcow2", dir);
	snprintf(bpath, sizeof(bpath), "%s/base.raw", dir);
	if (c->backing)
		base = make_base(bpath, size);
	create(path, c, size, c->backing ? bpath : NULL);
	cp_image *img = open_img(path, c, false);
	pthread_t th[NTHREADS];
	struct slot_arg args[NTHREADS];
	for (int t = 0; t < NTHREADS; t++) {
		args[t] = (struct slot_arg){ img, t, c->cluster, 0 };
		assert_int_equal(pthread_create(&th[t], NULL, slot_writer, &args[t]), 0);
	}
	for (int t = 0; t < NTHREADS; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(args[t].err, 0);
	}
	verify_slots(img, c->cluster, base); /* through the same open */
	assert_int_equal(cp_image_close(img), 0);
	check_clean(path, c);
	img = open_img(path, c, false);
	verify_slots(img, c->cluster, base); /* and after reopening */
	assert_int_equal(cp_image_close(img), 0);
	free(base);
	unlink(path);
	unlink(bpath);
}

/* cluster, extl2, backing, aio, cache */
static const struct cfg slot_cfgs[] = {
	{ 65536, false, false, CP_AIO_IO_URING, CP_CACHE_NONE },
	{ 65536, false, true, CP_AIO_IO_URING, CP_CACHE_NONE },
	{ 131072, true, true, CP_AIO_NATIVE, CP_CACHE_NONE },
	{ 65536, false, true, CP_AIO_THREADS, CP_CACHE_WRITEBACK },
};

static void test_slots(void **s)
{
	run_slots(*s);
}

#define SLOTS_TEST(name, i) { name, test_slots, NULL, NULL, (void *)&slot_cfgs[i] }

/* --- overlapping random writes ------------------------------------------------ */

#define OV_SIZE (16u << 20)
#define OV_WRITES 40

struct ov_arg {
	cp_image *img;
	int t;
	int err;
};

/* Sector content of write (t, seq) at sector s: a 16-byte header repeated. */
static void fill_sector(uint8_t *p, int t, int seq, uint64_t sector)
{
	uint8_t h[16];
	uint32_t a = (uint32_t)t, b = (uint32_t)seq;
	memcpy(h, &a, 4);
	memcpy(h + 4, &b, 4);
	memcpy(h + 8, &sector, 8);
	for (int i = 0; i < 512; i += 16)
		memcpy(p + i, h, 16);
}

static void ov_range(int t, int seq, uint64_t *off, uint64_t *len)
{
	uint64_t s = (uint64_t)t * 1000 + (uint64_t)seq + 1;
	rng_next(&s);
	uint64_t sectors = OV_SIZE / 512;
	uint64_t st = rng_next(&s) % sectors;
	uint64_t n = 1 + rng_next(&s) % 300;
	if (st + n > sectors)
		n = sectors - st;
	*off = st * 512;
	*len = n * 512;
}

static void *ov_writer(void *p)
{
	struct ov_arg *a = p;
	uint8_t *buf = cp_bdev_alloc_buf(300 * 512);
	for (int seq = 0; seq < OV_WRITES && !a->err; seq++) {
		uint64_t off, len;
		ov_range(a->t, seq, &off, &len);
		for (uint64_t i = 0; i < len; i += 512)
			fill_sector(buf + i, a->t, seq, (off + i) / 512);
		if (cp_image_pwrite(a->img, buf, len, off) < 0)
			a->err = 1;
	}
	cp_bdev_free_buf(buf);
	return NULL;
}

static void verify_overlap(cp_image *img)
{
	uint8_t *all = malloc(OV_SIZE);
	assert_int_equal(cp_image_pread(img, all, OV_SIZE, 0), 0);
	/* which writes covered each sector */
	uint64_t sectors = OV_SIZE / 512;
	uint8_t *covered = calloc(sectors, 1);
	for (int t = 0; t < NTHREADS; t++)
		for (int seq = 0; seq < OV_WRITES; seq++) {
			uint64_t off, len;
			ov_range(t, seq, &off, &len);
			for (uint64_t s = off / 512; s < (off + len) / 512; s++)
				covered[s] = 1;
		}
	uint64_t written = 0;
	for (uint64_t s = 0; s < sectors; s++) {
		uint8_t *p = all + s * 512;
		if (!covered[s]) {
			if (!cp_is_zero(p, 512))
				fail_msg("sector %llu never written but not zero",
					 (unsigned long long)s);
			continue;
		}
		uint32_t t, seq;
		uint64_t sec;
		memcpy(&t, p, 4);
		memcpy(&seq, p + 4, 4);
		memcpy(&sec, p + 8, 8);
		if (t >= NTHREADS || seq >= OV_WRITES || sec != s)
			fail_msg("sector %llu holds garbage (t=%u seq=%u sector=%llu)",
				 (unsigned long long)s, t, seq, (unsigned long long)sec);
		uint64_t off, len;
		ov_range((int)t, (int)seq, &off, &len);
		if (s < off / 512 || s >= (off + len) / 512)
			fail_msg("sector %llu holds write %u/%u which did not cover it",
				 (unsigned long long)s, t, seq);
		uint8_t ref[512];
		fill_sector(ref, (int)t, (int)seq, s);
		if (memcmp(ref, p, 512))
			fail_msg("sector %llu is torn", (unsigned long long)s);
		written++;
	}
	assert_true(written > sectors / 4);
	free(covered);
	free(all);
}

static void test_overlapping_random(void **st)
{
	(void)st;
	struct cfg c = { 65536, false, false, CP_AIO_IO_URING, CP_CACHE_NONE };
	char path[256];
	snprintf(path, sizeof(path), "%s/overlap.qcow2", dir);
	create(path, &c, OV_SIZE, NULL);
	cp_image *img = open_img(path, &c, false);
	pthread_t th[NTHREADS];
	struct ov_arg args[NTHREADS];
	for (int t = 0; t < NTHREADS; t++) {
		args[t] = (struct ov_arg){ img, t, 0 };
		assert_int_equal(pthread_create(&th[t], NULL, ov_writer, &args[t]), 0);
	}
	for (int t = 0; t < NTHREADS; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(args[t].err, 0);
	}
	verify_overlap(img);
	assert_int_equal(cp_image_close(img), 0);
	check_clean(path, &c);
	img = open_img(path, &c, false);
	verify_overlap(img);
	assert_int_equal(cp_image_close(img), 0);
	unlink(path);
}

/* --- async, queue depth 64, one submitter ------------------------------------------ */

static void test_async_qd64(void **st)
{
	(void)st;
	struct cfg c = { 65536, false, true, CP_AIO_IO_URING, CP_CACHE_NONE };
	char path[256], bpath[256];
	uint64_t size = 200ull * c.cluster;
	snprintf(path, sizeof(path), "%s/async.qcow2", dir);
	snprintf(bpath, sizeof(bpath), "%s/abase.raw", dir);
	uint8_t *base = make_base(bpath, size);
	create(path, &c, size, bpath);
	cp_image *img = open_img(path, &c, false);
	struct counter s;
	counter_init(&s);
	int total = NTHREADS * ROUNDS;
	uint8_t *bufs = cp_bdev_alloc_buf((size_t)total * SLOT);
	struct iovec *iov = calloc((size_t)total, sizeof(*iov));
	/* the same writes as the slot test, 64 in flight at all times */
	for (int j = 0; j < ROUNDS; j++) {
		for (int t = 0; t < NTHREADS; t++) {
			int n = j * NTHREADS + t;
			counter_wait(&s, 63);
			memset(bufs + (size_t)n * SLOT, (uint8_t)(t * 7 + j + 1), SLOT);
			iov[n].iov_base = bufs + (size_t)n * SLOT;
			iov[n].iov_len = SLOT;
			uint64_t off = slot_cluster(j) * c.cluster + (uint64_t)t * SLOT;
			counter_add(&s);
			assert_int_equal(cp_image_pwritev_async(img, &iov[n], 1, off,
								counter_cb, &s), 0);
		}
	}
	counter_wait(&s, 0);
	assert_int_equal(s.errors, 0);
	counter_destroy(&s);
	/* async reads of everything back, QD 64, compared with sync reads */
	uint8_t *a = cp_bdev_alloc_buf(size), *b = malloc(size);
	struct counter r;
	counter_init(&r);
	int nreq = (int)(size / 65536);
	struct iovec *riov = calloc((size_t)nreq, sizeof(*riov));
	for (int i = 0; i < nreq; i++) {
		counter_wait(&r, 63);
		riov[i].iov_base = a + (size_t)i * 65536;
		riov[i].iov_len = 65536;
		counter_add(&r);
		assert_int_equal(cp_image_preadv_async(img, &riov[i], 1,
						       (uint64_t)i * 65536, counter_cb, &r), 0);
	}
	counter_wait(&r, 0);
	assert_int_equal(r.errors, 0);
	counter_destroy(&r);
	assert_int_equal(cp_image_pread(img, b, size, 0), 0);
	assert_memory_equal(a, b, size);
	verify_slots(img, c.cluster, base);
	assert_int_equal(cp_image_close(img), 0);
	check_clean(path, &c);
	free(riov);
	cp_bdev_free_buf(a);
	free(b);
	free(iov);
	cp_bdev_free_buf(bufs);
	free(base);
	unlink(path);
	unlink(bpath);
}

static int setup(void **s)
{
	(void)s;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **s)
{
	(void)s;
	return rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		SLOTS_TEST("slots-64k", 0),
		SLOTS_TEST("slots-backing", 1),
		SLOTS_TEST("slots-extl2-backing", 2),
		SLOTS_TEST("slots-threads-writeback", 3),
		cmocka_unit_test(test_overlapping_random),
		cmocka_unit_test(test_async_qd64),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
