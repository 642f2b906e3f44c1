/* tests/unit/test_blockcore.c - unit tests of the blockcore module.
 *
 * File tests run for every backend (io_uring, native, threads) and cache
 * mode (none = O_DIRECT, writeback) on a temporary file under /var/tmp
 * (O_DIRECT needs a real file system, not tmpfs).  RAM device tests cover
 * write counting, power cuts, keep_seed, restart, growth and save/load.
 * Everything is deterministic: fixed seeds, no sleeps.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "blockcore.h"
#include "common.h"
#include "unit_lib.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)

/* ---- helpers ------------------------------------------------------------ */

static bool all_bytes(const void *buf, size_t len, uint8_t v)
{
	const uint8_t *p = buf;
	for (size_t i = 0; i < len; i++) {
		if (p[i] != v)
			return false;
	}
	return true;
}

struct counter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned inflight;
	unsigned done;
	unsigned errors;
	int last_err;
	pthread_t submitter;
	unsigned same_thread;
};

static void counter_init(struct counter *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->submitter = pthread_self();
}

static void counter_destroy(struct counter *c)
{
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
}

static void counter_add(struct counter *c)
{
	pthread_mutex_lock(&c->lock);
	c->inflight++;
	pthread_mutex_unlock(&c->lock);
}

static void counter_cb(void *opaque, int ret)
{
	struct counter *c = opaque;
	pthread_mutex_lock(&c->lock);
	if (pthread_equal(pthread_self(), c->submitter))
		c->same_thread++;
	if (ret < 0) {
		c->errors++;
		c->last_err = ret;
	}
	c->inflight--;
	c->done++;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* Wait until at most max requests are in flight. */
static void counter_wait(struct counter *c, unsigned max)
{
	pthread_mutex_lock(&c->lock);
	while (c->inflight > max)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

/* ---- file device fixture ---------------------------------------------- */

struct fcfg {
	enum cp_aio aio;
	enum cp_cache cache;
	char path[64];
	cp_bdev *dev;
};

static struct fcfg fcfgs[] = {
    {CP_AIO_IO_URING, CP_CACHE_NONE, "", NULL},
    {CP_AIO_IO_URING, CP_CACHE_WRITEBACK, "", NULL},
    {CP_AIO_NATIVE, CP_CACHE_NONE, "", NULL},
    {CP_AIO_NATIVE, CP_CACHE_WRITEBACK, "", NULL},
    {CP_AIO_THREADS, CP_CACHE_NONE, "", NULL},
    {CP_AIO_THREADS, CP_CACHE_WRITEBACK, "", NULL},
};

static int open_cfg(struct fcfg *c)
{
	struct cp_bdev_opts opts;
	cp_bdev_opts_init(&opts);
	opts.aio = c->aio;
	opts.cache = c->cache;
	opts.fallback = false;
	opts.queue_depth = 32; /* < 64 so the QD64 test overflows the ring */
	opts.threads = 4;
	int r = cp_bdev_open(c->path, &opts, &c->dev);
	if (r < 0)
		fprintf(stderr, "open: %s\n", cp_last_error());
	return r;
}

static int file_setup(void **state)
{
	struct fcfg *c = *state;
	snprintf(c->path, sizeof(c->path), "/var/tmp/cp-bc-test-XXXXXX");
	int fd = mkstemp(c->path);
	if (fd < 0)
		return -1;
	close(fd);
	if (open_cfg(c) < 0)
		return -1;
	if (cp_bdev_aio(c->dev) != c->aio)
		return -1;
	return 0;
}

static int file_teardown(void **state)
{
	struct fcfg *c = *state;
	cp_bdev_close(c->dev);
	c->dev = NULL;
	unlink(c->path);
	return 0;
}

/* ---- file tests ---------------------------------------------------------- */

static void test_props(void **state)
{
	struct fcfg *c = *state;
	cp_bdev *dev = c->dev;
	assert_string_equal(cp_bdev_name(dev), c->path);
	assert_int_equal(cp_bdev_cache(dev), c->cache);
	assert_false(cp_bdev_is_blockdev(dev));
	assert_false(cp_bdev_readonly(dev));
	assert_int_equal(cp_bdev_size(dev), 0);
	if (c->cache == CP_CACHE_NONE) {
		unsigned a = cp_bdev_align(dev);
		assert_true(a == 512 || a == 4096);
	} else {
		assert_int_equal(cp_bdev_align(dev), 1);
	}
	assert_int_equal(cp_bdev_flush(dev), 0);
}

/* Random aligned and unaligned reads/writes against a shadow copy. */
static void test_roundtrip(void **state)
{
	struct fcfg *c = *state;
	cp_bdev *dev = c->dev;
	const size_t span = 2 * MiB;
	uint8_t *shadow = calloc(1, span);
	uint8_t *wbuf = cp_bdev_alloc_buf(128 * KiB + 4096);
	uint8_t *rbuf = cp_bdev_alloc_buf(128 * KiB + 4096);
	uint64_t s = 12345 + (uint64_t)c->aio * 10 + (uint64_t)c->cache;
	uint64_t max_end = 0;

	assert_non_null(shadow);
	for (int i = 0; i < 300; i++) {
		bool aligned = i % 2 == 0;
		size_t len;
		uint64_t off;
		size_t boff = 0;
		if (aligned) {
			len = (rng_next(&s) % 32 + 1) * 4096;
			off = rng_next(&s) % ((span - len) / 4096) * 4096;
		} else {
			len = rng_next(&s) % (64 * KiB) + 1;
			off = rng_next(&s) % (span - len);
			boff = rng_next(&s) % 4096;
		}
		fill_random(wbuf + boff, len, (uint64_t)i);
		if (i % 3 == 0) {
			/* split into a few iovecs */
			struct iovec iov[3];
			size_t a = len / 3, b = len / 3;
			iov[0] = (struct iovec){wbuf + boff, a};
			iov[1] = (struct iovec){wbuf + boff + a, b};
			iov[2] =
			    (struct iovec){wbuf + boff + a + b, len - a - b};
			assert_int_equal(cp_bdev_pwritev(dev, iov, 3, off), 0);
		} else {
			assert_int_equal(
			    cp_bdev_pwrite(dev, wbuf + boff, len, off), 0);
		}
		memcpy(shadow + off, wbuf + boff, len);
		max_end = CP_MAX(max_end, off + len);
		assert_int_equal(cp_bdev_size(dev), max_end);

		/* read back a random range */
		size_t rlen = rng_next(&s) % (128 * KiB) + 1;
		uint64_t roff = rng_next(&s) % (span - rlen);
		size_t rboff = (i % 4 == 0) ? 0 : rng_next(&s) % 4096;
		if (i % 4 == 0) {
			rlen = CP_ALIGN_UP(rlen, 4096);
			roff = CP_ALIGN_DOWN(roff, 4096);
		}
		memset(rbuf, 0xee, 128 * KiB + 4096);
		assert_int_equal(cp_bdev_pread(dev, rbuf + rboff, rlen, roff),
				 0);
		assert_memory_equal(rbuf + rboff, shadow + roff, rlen);
	}
	/* whole span through a multi-iovec read */
	uint8_t *all = cp_bdev_alloc_buf(span);
	struct iovec iov[2] = {{all, span / 2}, {all + span / 2, span / 2}};
	assert_int_equal(cp_bdev_preadv(dev, iov, 2, 0), 0);
	assert_memory_equal(all, shadow, span);
	assert_int_equal(cp_bdev_flush(dev), 0);

	/* reopen and check the data is really in the file */
	cp_bdev_close(dev);
	assert_int_equal(open_cfg(c), 0);
	memset(all, 0, span);
	assert_int_equal(cp_bdev_pread(c->dev, all, span, 0), 0);
	assert_memory_equal(all, shadow, span);

	cp_bdev_free_buf(all);
	cp_bdev_free_buf(wbuf);
	cp_bdev_free_buf(rbuf);
	free(shadow);
}

/* QD 64 async random writes (more than the ring size), then async reads. */
static void test_async_qd64(void **state)
{
	struct fcfg *c = *state;
	cp_bdev *dev = c->dev;
	enum { NBLK = 1024, BS = 4096, QD = 64 };
	uint8_t *data = cp_bdev_alloc_buf((size_t)NBLK * BS);
	uint8_t *back = cp_bdev_alloc_buf((size_t)NBLK * BS);
	unsigned perm[NBLK];
	uint64_t s = 777;
	struct counter cnt;

	for (unsigned i = 0; i < NBLK; i++)
		perm[i] = i;
	for (unsigned i = NBLK - 1; i > 0; i--) {
		unsigned j = (unsigned)(rng_next(&s) % (i + 1));
		unsigned t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	fill_random(data, (size_t)NBLK * BS, 99);
	counter_init(&cnt);
	for (unsigned i = 0; i < NBLK; i++) {
		unsigned b = perm[i];
		struct iovec iov = {data + (size_t)b * BS, BS};
		counter_wait(&cnt, QD - 1);
		counter_add(&cnt);
		assert_int_equal(cp_bdev_pwritev_async(dev, &iov, 1,
						       (uint64_t)b * BS,
						       counter_cb, &cnt),
				 0);
	}
	/* a few unaligned async writes as well, past the aligned area */
	for (unsigned i = 0; i < 16; i++) {
		struct iovec iov = {data + i * 777, 777};
		counter_add(&cnt);
		assert_int_equal(
		    cp_bdev_pwritev_async(dev, &iov, 1,
					  (uint64_t)NBLK * BS + i * 1000 + 3,
					  counter_cb, &cnt),
		    0);
	}
	counter_add(&cnt);
	assert_int_equal(cp_bdev_flush_async(dev, counter_cb, &cnt), 0);
	counter_wait(&cnt, 0);
	assert_int_equal(cnt.errors, 0);
	assert_int_equal(cnt.done, NBLK + 17);
	assert_int_equal(cnt.same_thread, 0);

	memset(back, 0, (size_t)NBLK * BS);
	for (unsigned i = 0; i < NBLK; i++) {
		unsigned b = perm[NBLK - 1 - i];
		struct iovec iov = {back + (size_t)b * BS, BS};
		counter_wait(&cnt, QD - 1);
		counter_add(&cnt);
		assert_int_equal(cp_bdev_preadv_async(dev, &iov, 1,
						      (uint64_t)b * BS,
						      counter_cb, &cnt),
				 0);
	}
	counter_wait(&cnt, 0);
	assert_int_equal(cnt.errors, 0);
	assert_memory_equal(back, data, (size_t)NBLK * BS);
	for (unsigned i = 0; i < 16; i++) {
		uint8_t tmp[777];
		assert_int_equal(
		    cp_bdev_pread(dev, tmp, 777,
				  (uint64_t)NBLK * BS + i * 1000 + 3),
		    0);
		assert_memory_equal(tmp, data + i * 777, 777);
	}
	counter_destroy(&cnt);
	cp_bdev_free_buf(data);
	cp_bdev_free_buf(back);
}

static void test_read_past_eof(void **state)
{
	struct fcfg *c = *state;
	cp_bdev *dev = c->dev;
	uint8_t *buf = cp_bdev_alloc_buf(16384);
	uint8_t pat[1000];

	fill_random(pat, sizeof(pat), 5);
	/* unaligned write at 0 must leave the size at exactly 1000 */
	assert_int_equal(cp_bdev_pwrite(dev, pat, sizeof(pat), 0), 0);
	assert_int_equal(cp_bdev_size(dev), 1000);

	/* aligned read across EOF: short read, zero-filled */
	memset(buf, 0xff, 16384);
	assert_int_equal(cp_bdev_pread(dev, buf, 8192, 0), 0);
	assert_memory_equal(buf, pat, 1000);
	assert_true(all_bytes(buf + 1000, 8192 - 1000, 0));

	/* unaligned read across EOF */
	memset(buf, 0xff, 16384);
	assert_int_equal(cp_bdev_pread(dev, buf + 1, 3000, 500), 0);
	assert_memory_equal(buf + 1, pat + 500, 500);
	assert_true(all_bytes(buf + 501, 2500, 0));

	/* entirely past EOF */
	memset(buf, 0xff, 16384);
	assert_int_equal(cp_bdev_pread(dev, buf, 4096, 1 * MiB), 0);
	assert_true(all_bytes(buf, 4096, 0));
	assert_int_equal(cp_bdev_size(dev), 1000);

	/* unaligned write past EOF leaves a zero gap and exact size */
	assert_int_equal(cp_bdev_pwrite(dev, pat, 10, 5000), 0);
	assert_int_equal(cp_bdev_size(dev), 5010);
	memset(buf, 0xff, 16384);
	assert_int_equal(cp_bdev_pread(dev, buf, 5010, 0), 0);
	assert_memory_equal(buf, pat, 1000);
	assert_true(all_bytes(buf + 1000, 4000, 0));
	assert_memory_equal(buf + 5000, pat, 10);
	cp_bdev_free_buf(buf);
}

static void fill_file(cp_bdev *dev, uint64_t len, uint8_t v)
{
	uint8_t *buf = cp_bdev_alloc_buf(len);
	memset(buf, v, len);
	assert_int_equal(cp_bdev_pwrite(dev, buf, len, 0), 0);
	assert_int_equal(cp_bdev_flush(dev), 0);
	cp_bdev_free_buf(buf);
}

static void check_range(cp_bdev *dev, uint64_t off, uint64_t len, uint8_t v)
{
	uint8_t *buf = malloc(len);
	assert_int_equal(cp_bdev_pread(dev, buf, len, off), 0);
	assert_true(all_bytes(buf, len, v));
	free(buf);
}

static void test_discard(void **state)
{
	struct fcfg *c = *state;
	cp_bdev *dev = c->dev;
	fill_file(dev, 64 * KiB, 0xaa);
	assert_int_equal(cp_bdev_discard(dev, 4096, 8192), 0);
	assert_int_equal(cp_bdev_discard(dev, 20000, 100), 0);
	check_range(dev, 0, 4096, 0xaa);
	check_range(dev, 4096, 8192, 0);
	check_range(dev, 12288, 20000 - 12288, 0xaa);
	check_range(dev, 20000, 100, 0);
	check_range(dev, 20100, 64 * KiB - 20100, 0xaa);
	assert_int_equal(cp_bdev_size(dev), 64 * KiB);
	/* past EOF: no-op, size unchanged */
	assert_int_equal(cp_bdev_discard(dev, 1 * MiB, 4096), 0);
	assert_int_equal(cp_bdev_size(dev), 64 * KiB);
}

static void test_write_zeroes(void **state)
{
	struct fcfg *c = *state;
	cp_bdev *dev = c->dev;
	fill_file(dev, 64 * KiB, 0xaa);
	assert_int_equal(cp_bdev_write_zeroes(dev, 1000, 5000, 0), 0);
	assert_int_equal(
	    cp_bdev_write_zeroes(dev, 16384, 8192, CP_ZERO_MAY_UNMAP), 0);
	check_range(dev, 0, 1000, 0xaa);
	check_range(dev, 1000, 5000, 0);
	check_range(dev, 6000, 16384 - 6000, 0xaa);
	check_range(dev, 16384, 8192, 0);
	check_range(dev, 24576, 64 * KiB - 24576, 0xaa);
	assert_int_equal(cp_bdev_size(dev), 64 * KiB);
	/* extends the file */
	assert_int_equal(
	    cp_bdev_write_zeroes(dev, 64 * KiB - 10, 4106, CP_ZERO_MAY_UNMAP),
	    0);
	assert_int_equal(cp_bdev_size(dev), 68 * KiB);
	check_range(dev, 64 * KiB - 10, 4106, 0);
	check_range(dev, 64 * KiB - 100, 90, 0xaa);
}

static void test_truncate(void **state)
{
	struct fcfg *c = *state;
	cp_bdev *dev = c->dev;
	fill_file(dev, 8192, 0x11);
	assert_int_equal(cp_bdev_truncate(dev, 1 * MiB), 0);
	assert_int_equal(cp_bdev_size(dev), 1 * MiB);
	check_range(dev, 0, 8192, 0x11);
	check_range(dev, 8192, 1 * MiB - 8192, 0);
	assert_int_equal(cp_bdev_truncate(dev, 4096), 0);
	assert_int_equal(cp_bdev_size(dev), 4096);
	assert_int_equal(cp_bdev_truncate(dev, 8192), 0);
	check_range(dev, 4096, 4096, 0);
}

static void test_prealloc(void **state)
{
	struct fcfg *c = *state;
	cp_bdev *dev = c->dev;
	uint64_t pnum;

	fill_file(dev, 4096, 0x33);
	assert_int_equal(
	    cp_bdev_preallocate(dev, 0, 1 * MiB, CP_PREALLOC_FALLOC), 0);
	assert_int_equal(cp_bdev_size(dev), 1 * MiB);
	check_range(dev, 0, 4096, 0x33);
	check_range(dev, 4096, 1 * MiB - 4096, 0);

	assert_int_equal(
	    cp_bdev_preallocate(dev, 0, 3 * MiB + 100, CP_PREALLOC_FULL), 0);
	assert_int_equal(cp_bdev_size(dev), 3 * MiB + 100);
	check_range(dev, 0, 4096, 0x33);
	check_range(dev, 4096, 3 * MiB + 100 - 4096, 0);
	/* really written: data, not a hole */
	assert_int_equal(cp_bdev_block_status(dev, 2 * MiB, 4096, &pnum), 1);
	assert_int_equal(pnum, 4096);

	/* off only grows */
	assert_int_equal(
	    cp_bdev_preallocate(dev, 4 * MiB, 4096, CP_PREALLOC_OFF), 0);
	assert_int_equal(cp_bdev_size(dev), 4 * MiB + 4096);
	assert_int_equal(cp_bdev_preallocate(dev, 0, 4096, CP_PREALLOC_OFF), 0);
	assert_int_equal(cp_bdev_size(dev), 4 * MiB + 4096);
}

static void test_block_status(void **state)
{
	struct fcfg *c = *state;
	cp_bdev *dev = c->dev;
	uint8_t *buf = cp_bdev_alloc_buf(4096);
	uint64_t pnum;

	memset(buf, 0x44, 4096);
	assert_int_equal(cp_bdev_truncate(dev, 1 * MiB), 0);
	assert_int_equal(cp_bdev_pwrite(dev, buf, 4096, 256 * KiB), 0);
	assert_int_equal(cp_bdev_flush(dev), 0);

	assert_int_equal(cp_bdev_block_status(dev, 0, 1 * MiB, &pnum), 0);
	assert_int_equal(pnum, 256 * KiB);
	assert_int_equal(cp_bdev_block_status(dev, 256 * KiB, 1 * MiB, &pnum),
			 1);
	assert_int_equal(pnum, 4096);
	assert_int_equal(cp_bdev_block_status(dev, 256 * KiB, 100, &pnum), 1);
	assert_int_equal(pnum, 100);
	assert_int_equal(
	    cp_bdev_block_status(dev, 260 * KiB, 1 * MiB - 260 * KiB, &pnum),
	    0);
	assert_int_equal(pnum, 1 * MiB - 260 * KiB);
	/* past EOF: hole */
	assert_int_equal(cp_bdev_block_status(dev, 2 * MiB, 4096, &pnum), 0);
	assert_int_equal(pnum, 4096);
	/* discard makes a hole again */
	assert_int_equal(cp_bdev_discard(dev, 256 * KiB, 4096), 0);
	assert_int_equal(cp_bdev_block_status(dev, 0, 1 * MiB, &pnum), 0);
	assert_int_equal(pnum, 1 * MiB);
	cp_bdev_free_buf(buf);
}

/* Eight threads hammer unaligned writes that share blocks. */
enum { NTHR = 8, ROUNDS = 100 };

enum hammer_mode {
	HAMMER_SAME,	/* 1000 bytes at the same unaligned offset */
	HAMMER_SHARED,	/* 300-byte neighbours sharing blocks */
	HAMMER_ALIGNED, /* id 0: whole aligned block 24576..28671,
			 * id 1: 100 unaligned bytes in that block */
};

struct hammer {
	cp_bdev *dev;
	unsigned id;
	enum hammer_mode mode;
	int ret;
};

/* Distinct for every thread and round, so a stale read-modify-write (an
 * older round coming back) is detected, not just a mix of threads. */
static void hammer_pattern(uint8_t *buf, size_t len, unsigned id,
			   unsigned round)
{
	fill_random(buf, len, 1 + id * 1000 + round);
}

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	uint8_t *buf = cp_bdev_alloc_buf(4096);
	uint8_t *chk = cp_bdev_alloc_buf(4096);
	for (unsigned i = 0; i < ROUNDS && h->ret == 0; i++) {
		hammer_pattern(buf, 4096, h->id, i);
		if (h->mode == HAMMER_SAME) {
			h->ret = cp_bdev_pwrite(h->dev, buf, 1000, 1234);
		} else if (h->mode == HAMMER_SHARED) {
			h->ret = cp_bdev_pwrite(h->dev, buf, 300,
						10000 + 300 * h->id + 7);
		} else if (h->id == 0) {
			/* Write round i, then it must stay visible outside
			 * the RMW writer's bytes: a stale read-modify-write
			 * would bring back round i - 1. */
			memset(buf, (int)(i + 1), 4096);
			h->ret = cp_bdev_pwrite(h->dev, buf, 4096, 24576);
			for (int k = 0; k < 4 && h->ret == 0; k++) {
				h->ret =
				    cp_bdev_pread(h->dev, chk, 4096, 24576);
				if (h->ret == 0 &&
				    (!all_bytes(chk, 503, (uint8_t)(i + 1)) ||
				     !all_bytes(chk + 603, 4096 - 603,
						(uint8_t)(i + 1))))
					h->ret = -EUCLEAN;
			}
		} else {
			h->ret = cp_bdev_pwrite(h->dev, buf, 100, 24576 + 503);
		}
	}
	cp_bdev_free_buf(chk);
	cp_bdev_free_buf(buf);
	return NULL;
}

static void run_hammer(cp_bdev *dev, enum hammer_mode mode, unsigned nthr)
{
	pthread_t t[NTHR];
	struct hammer h[NTHR];
	for (unsigned i = 0; i < nthr; i++) {
		h[i] = (struct hammer){dev, i, mode, 0};
		assert_int_equal(
		    pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);
	}
	for (unsigned i = 0; i < nthr; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(h[i].ret, 0);
	}
}

static void test_concurrent_unaligned(void **state)
{
	struct fcfg *c = *state;
	cp_bdev *dev = c->dev;
	uint8_t got[32768], want[4096];

	fill_file(dev, 16384, 0x55);
	run_hammer(dev, HAMMER_SAME, NTHR);
	assert_int_equal(cp_bdev_pread(dev, got, 16384, 0), 0);
	assert_true(all_bytes(got, 1234, 0x55));
	assert_true(all_bytes(got + 2234, 16384 - 2234, 0x55));
	bool match = false;
	for (unsigned id = 0; id < NTHR && !match; id++) {
		hammer_pattern(want, 1000, id, ROUNDS - 1);
		match = !memcmp(got + 1234, want, 1000);
	}
	assert_true(match);

	run_hammer(dev, HAMMER_SHARED, NTHR);
	assert_int_equal(cp_bdev_pread(dev, got, 16384, 0), 0);
	assert_true(all_bytes(got + 2234, 10007 - 2234, 0x55));
	for (unsigned id = 0; id < NTHR; id++) {
		hammer_pattern(want, 300, id, ROUNDS - 1);
		assert_memory_equal(got + 10007 + 300 * id, want, 300);
	}
	assert_true(all_bytes(got + 10007 + 300 * NTHR,
			      16384 - 10007 - 300 * NTHR, 0x55));

	/* One aligned writer (id 0) against one RMW writer (id 1) in the
	 * same block; the checks are in hammer_main(). */
	run_hammer(dev, HAMMER_ALIGNED, 2);
	assert_int_equal(cp_bdev_pread(dev, got, 4096, 24576), 0);
	assert_true(all_bytes(got, 503, ROUNDS));
	assert_true(all_bytes(got + 603, 4096 - 603, ROUNDS));
}

/* Callbacks may submit; sync calls from a callback are refused. */
struct chain {
	cp_bdev *dev;
	struct counter *cnt;
	uint8_t *buf;
	int remaining;
	int sync_ret;
};

static void chain_cb(void *opaque, int ret)
{
	struct chain *ch = opaque;
	if (ret == 0 && ch->remaining-- > 0) {
		struct iovec iov = {ch->buf, 4096};
		if (ch->remaining == 5)
			ch->sync_ret = cp_bdev_pread(ch->dev, ch->buf, 4096, 0);
		if (cp_bdev_pwritev_async(ch->dev, &iov, 1,
					  (uint64_t)ch->remaining * 4096,
					  chain_cb, ch) == 0)
			return;
		ret = -EIO;
	}
	counter_cb(ch->cnt, ret);
}

static void test_callback_submit(void **state)
{
	struct fcfg *c = *state;
	struct counter cnt;
	uint8_t *buf = cp_bdev_alloc_buf(4096);
	memset(buf, 0x77, 4096);
	counter_init(&cnt);
	struct chain ch = {c->dev, &cnt, buf, 20, 0};
	struct iovec iov = {buf, 4096};
	counter_add(&cnt);
	assert_int_equal(
	    cp_bdev_pwritev_async(c->dev, &iov, 1, 100 * 4096, chain_cb, &ch),
	    0);
	counter_wait(&cnt, 0);
	assert_int_equal(cnt.errors, 0);
	assert_int_equal(ch.sync_ret, -EDEADLK);
	check_range(c->dev, 0, 20 * 4096, 0x77);
	counter_destroy(&cnt);
	cp_bdev_free_buf(buf);
}

/* ---- non-fixture tests --------------------------------------------------- */

static void test_parsers(void **state)
{
	enum cp_aio aio;
	enum cp_cache cache;
	enum cp_prealloc pre;
	(void)state;
	assert_int_equal(cp_aio_parse("native", &aio), 0);
	assert_int_equal(aio, CP_AIO_NATIVE);
	assert_int_equal(cp_aio_parse("io_uring", &aio), 0);
	assert_int_equal(aio, CP_AIO_IO_URING);
	assert_int_equal(cp_aio_parse("bogus", &aio), -EINVAL);
	assert_non_null(strstr(cp_last_error(), "bogus"));
	assert_int_equal(cp_cache_parse("directsync", &cache), 0);
	assert_int_equal(cache, CP_CACHE_DIRECTSYNC);
	assert_int_equal(cp_cache_parse("none", &cache), 0);
	assert_int_equal(cache, CP_CACHE_NONE);
	assert_int_equal(cp_cache_parse("", &cache), -EINVAL);
	assert_int_equal(cp_prealloc_parse("full", &pre), 0);
	assert_int_equal(pre, CP_PREALLOC_FULL);
	assert_int_equal(cp_prealloc_parse("x", &pre), -EINVAL);
	assert_string_equal(cp_aio_name(CP_AIO_THREADS), "threads");
	assert_string_equal(cp_prealloc_name(CP_PREALLOC_FALLOC), "falloc");
}

static void test_open_errors(void **state)
{
	cp_bdev *dev = (cp_bdev *)1;
	(void)state;
	assert_int_equal(cp_bdev_open("/var/tmp/cp-bc-no/such", NULL, &dev),
			 -ENOENT);
	assert_null(dev);
	assert_non_null(strstr(cp_last_error(), "/var/tmp/cp-bc-no/such"));
	cp_bdev_close(NULL);
}

static void test_readonly_and_modes(void **state)
{
	char path[] = "/var/tmp/cp-bc-test-XXXXXX";
	struct cp_bdev_opts opts;
	cp_bdev *dev;
	uint8_t buf[512] = {0};
	(void)state;
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);

	static const enum cp_cache modes[] = {
	    CP_CACHE_WRITETHROUGH, CP_CACHE_DIRECTSYNC, CP_CACHE_UNSAFE};
	for (unsigned i = 0; i < CP_ARRAY_SIZE(modes); i++) {
		cp_bdev_opts_init(&opts);
		opts.cache = modes[i];
		assert_int_equal(cp_bdev_open(path, &opts, &dev), 0);
		assert_int_equal(cp_bdev_pwrite(dev, buf, 100, 1), 0);
		assert_int_equal(cp_bdev_flush(dev), 0);
		assert_int_equal(cp_bdev_size(dev), 101);
		cp_bdev_close(dev);
	}
	cp_bdev_opts_init(&opts);
	opts.readonly = true;
	assert_int_equal(cp_bdev_open(path, &opts, &dev), 0);
	assert_true(cp_bdev_readonly(dev));
	assert_int_equal(cp_bdev_pwrite(dev, buf, 100, 0), -EROFS);
	assert_non_null(strstr(cp_last_error(), path));
	assert_int_equal(cp_bdev_pread(dev, buf, 100, 0), 0);
	assert_int_equal(cp_bdev_flush(dev), 0);
	cp_bdev_close(dev);

	/* opened through /proc/self/fd/N under a name: errors use the name */
	char proc[64];
	fd = open(path, O_PATH | O_CLOEXEC);
	assert_true(fd >= 0);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	cp_bdev_opts_init(&opts);
	opts.readonly = true;
	opts.name = "domain/images/vol";
	assert_int_equal(cp_bdev_open(proc, &opts, &dev), 0);
	close(fd);
	assert_string_equal(cp_bdev_name(dev), "domain/images/vol");
	assert_int_equal(cp_bdev_pwrite(dev, buf, 100, 0), -EROFS);
	assert_non_null(strstr(cp_last_error(), "domain/images/vol"));
	assert_null(strstr(cp_last_error(), "/proc/self"));
	cp_bdev_close(dev);
	unlink(path);
}

/* ---- RAM device -------------------------------------------------------- */

static cp_bdev *ram_open(int64_t cut_after, uint64_t keep_seed)
{
	struct cp_ram_opts o;
	cp_bdev *dev;
	cp_ram_opts_init(&o);
	o.max_size = 64 * MiB;
	o.cut_after_writes = cut_after;
	o.keep_seed = keep_seed;
	assert_int_equal(cp_bdev_open_ram(&o, &dev), 0);
	return dev;
}

static void ram_write_pat(cp_bdev *dev, uint64_t off, size_t len, uint64_t seed,
			  int expect)
{
	uint8_t *buf = malloc(len);
	fill_random(buf, len, seed);
	assert_int_equal(cp_bdev_pwrite(dev, buf, len, off), expect);
	free(buf);
}

static bool ram_has_pat(cp_bdev *dev, uint64_t off, size_t len, uint64_t seed)
{
	uint8_t *buf = malloc(len), *want = malloc(len);
	fill_random(want, len, seed);
	assert_int_equal(cp_bdev_pread(dev, buf, len, off), 0);
	bool ok = !memcmp(buf, want, len);
	free(buf);
	free(want);
	return ok;
}

static void test_ram_basic(void **state)
{
	(void)state;
	cp_bdev *dev = ram_open(-1, 0);
	assert_int_equal(strncmp(cp_bdev_name(dev), "ram:", 4), 0);
	assert_int_equal(cp_bdev_align(dev), 512);
	assert_int_equal(cp_bdev_size(dev), 0);
	ram_write_pat(dev, 3, 1000, 1, 0);
	assert_int_equal(cp_bdev_size(dev), 1003);
	assert_true(ram_has_pat(dev, 3, 1000, 1));
	check_range(dev, 0, 3, 0);
	check_range(dev, 1003, 5000, 0); /* past the end reads zeroes */
	ram_write_pat(dev, 1 * MiB, 10, 2, 0);
	assert_int_equal(cp_bdev_size(dev), 1 * MiB + 10);
	assert_int_equal(cp_ram_write_count(dev), 2);
	/* beyond max_size */
	ram_write_pat(dev, 64 * MiB - 5, 10, 3, -ENOSPC);
	assert_int_equal(cp_bdev_size(dev), 1 * MiB + 10);
	/* zeroes, discard, truncate */
	assert_int_equal(cp_bdev_write_zeroes(dev, 2 * MiB, 100, 0), 0);
	assert_int_equal(cp_bdev_size(dev), 2 * MiB + 100);
	assert_int_equal(cp_bdev_discard(dev, 0, 500), 0);
	check_range(dev, 0, 500, 0);
	assert_int_equal(cp_bdev_truncate(dev, 1000), 0);
	assert_int_equal(cp_bdev_size(dev), 1000);
	assert_int_equal(cp_bdev_truncate(dev, 4000), 0);
	check_range(dev, 1000, 3000, 0);
	assert_int_equal(cp_bdev_preallocate(dev, 0, 8000, CP_PREALLOC_FULL),
			 0);
	assert_int_equal(cp_bdev_size(dev), 8000);
	uint64_t pnum;
	assert_int_equal(cp_bdev_block_status(dev, 0, 8000, &pnum), 1);
	assert_int_equal(pnum, 8000);
	/* 2 writes, zeroes, discard; ENOSPC, truncate and preallocate are not
	 * counted */
	assert_int_equal(cp_ram_write_count(dev), 4);
	assert_int_equal(cp_bdev_flush(dev), 0);
	cp_bdev_close(dev);
}

static void test_ram_async(void **state)
{
	(void)state;
	cp_bdev *dev = ram_open(-1, 0);
	struct counter cnt;
	uint8_t buf[4096];
	counter_init(&cnt);
	fill_random(buf, sizeof(buf), 8);
	for (unsigned i = 0; i < 300; i++) {
		struct iovec iov = {buf, sizeof(buf)};
		counter_add(&cnt);
		assert_int_equal(cp_bdev_pwritev_async(dev, &iov, 1,
						       (uint64_t)i * 4096,
						       counter_cb, &cnt),
				 0);
	}
	counter_add(&cnt);
	assert_int_equal(cp_bdev_flush_async(dev, counter_cb, &cnt), 0);
	counter_wait(&cnt, 0);
	assert_int_equal(cnt.done, 301);
	assert_int_equal(cnt.errors, 0);
	assert_int_equal(cnt.same_thread, 0);
	assert_int_equal(cp_ram_write_count(dev), 300);
	counter_destroy(&cnt);
	cp_bdev_close(dev);
}

/* A second handle shares content, write counter and cut, completes on its
 * own thread, and either handle may be closed first. */
static void test_ram_twin(void **state)
{
	(void)state;
	for (int first = 0; first < 2; first++) {
		cp_bdev *dev = ram_open(-1, 0), *twin;
		assert_int_equal(cp_ram_open_twin(dev, &twin), 0);
		assert_string_equal(cp_bdev_name(twin), cp_bdev_name(dev));
		assert_int_equal(cp_bdev_align(twin), cp_bdev_align(dev));
		ram_write_pat(twin, 4096, 8192, 1, 0);
		assert_true(ram_has_pat(dev, 4096, 8192, 1));
		assert_int_equal(cp_bdev_size(dev), 4096 + 8192);
		ram_write_pat(dev, 0, 512, 2, 0);
		assert_true(ram_has_pat(twin, 0, 512, 2));
		assert_int_equal(cp_ram_write_count(twin), 2);
		struct counter cnt;
		uint8_t buf[512];
		fill_random(buf, sizeof(buf), 3);
		struct iovec iov = {buf, sizeof(buf)};
		counter_init(&cnt);
		counter_add(&cnt);
		assert_int_equal(cp_bdev_pwritev_async(twin, &iov, 1, 512,
						       counter_cb, &cnt), 0);
		counter_wait(&cnt, 0);
		assert_int_equal(cnt.errors, 0);
		assert_int_equal(cnt.same_thread, 0);
		counter_destroy(&cnt);
		assert_true(ram_has_pat(dev, 512, 512, 3));
		assert_int_equal(cp_bdev_flush(twin), 0);
		/* a cut through one handle is a cut of both */
		assert_int_equal(cp_ram_cut(dev), 0);
		assert_true(cp_ram_is_cut(twin));
		assert_int_equal(cp_bdev_pread(twin, buf, 512, 0), -EIO);
		assert_int_equal(cp_ram_restart(twin), 0);
		/* the state outlives the handle closed first */
		cp_bdev *keep = first ? twin : dev;
		cp_bdev_close(first ? dev : twin);
		assert_true(ram_has_pat(keep, 4096, 8192, 1));
		ram_write_pat(keep, 0, 512, 4, 0);
		assert_true(ram_has_pat(keep, 0, 512, 4));
		cp_bdev_close(keep);
	}
}

static void test_ram_cut_count(void **state)
{
	(void)state;
	cp_bdev *dev = ram_open(3, 0);
	uint8_t buf[512];
	assert_false(cp_ram_is_cut(dev));
	ram_write_pat(dev, 0, 512, 1, 0);
	assert_int_equal(cp_bdev_flush(dev), 0);
	ram_write_pat(dev, 512, 512, 2, 0);
	assert_int_equal(cp_bdev_write_zeroes(dev, 0, 100, 0), 0);
	assert_int_equal(cp_ram_write_count(dev), 3);
	assert_false(cp_ram_is_cut(dev));
	/* the 4th write triggers the cut and fails */
	ram_write_pat(dev, 1024, 512, 3, -EIO);
	assert_true(cp_ram_is_cut(dev));
	assert_int_equal(cp_ram_write_count(dev), 3);
	assert_int_equal(cp_bdev_pread(dev, buf, 512, 0), -EIO);
	assert_non_null(strstr(cp_last_error(), "ram:"));
	assert_int_equal(cp_bdev_flush(dev), -EIO);
	assert_int_equal(cp_bdev_discard(dev, 0, 512), -EIO);
	assert_int_equal(cp_bdev_write_zeroes(dev, 0, 512, 0), -EIO);
	assert_int_equal(cp_bdev_truncate(dev, 0), -EIO);
	ram_write_pat(dev, 0, 512, 4, -EIO);

	/* only the flushed write survived */
	assert_int_equal(cp_ram_restart(dev), 0);
	assert_false(cp_ram_is_cut(dev));
	assert_int_equal(cp_ram_write_count(dev), 0);
	assert_int_equal(cp_bdev_size(dev), 512);
	assert_true(ram_has_pat(dev, 0, 512, 1));
	check_range(dev, 512, 1024, 0);

	/* cutting is disabled after restart until set again */
	for (int i = 0; i < 10; i++)
		ram_write_pat(dev, 4096, 512, 5, 0);
	assert_int_equal(cp_ram_set_cut_after(dev, 11), 0);
	ram_write_pat(dev, 4096, 512, 6, 0);
	ram_write_pat(dev, 4096, 512, 7, -EIO);
	assert_int_equal(cp_ram_restart(dev), 0);
	assert_int_equal(cp_bdev_size(dev), 512);
	/* async: the cut write's callback gets -EIO */
	struct counter cnt;
	counter_init(&cnt);
	assert_int_equal(cp_ram_set_cut_after(dev, 0), 0);
	struct iovec iov = {buf, 512};
	counter_add(&cnt);
	assert_int_equal(
	    cp_bdev_pwritev_async(dev, &iov, 1, 0, counter_cb, &cnt), 0);
	counter_wait(&cnt, 0);
	assert_int_equal(cnt.errors, 1);
	assert_int_equal(cnt.last_err, -EIO);
	counter_destroy(&cnt);
	cp_bdev_close(dev);

	cp_bdev *file_dev = NULL;
	assert_int_equal(cp_ram_cut(file_dev = ram_open(-1, 0)), 0);
	assert_true(cp_ram_is_cut(file_dev));
	cp_bdev_close(file_dev);
}

static void test_ram_flush_survives(void **state)
{
	(void)state;
	cp_bdev *dev = ram_open(-1, 0);
	ram_write_pat(dev, 0, 8192, 1, 0);
	assert_int_equal(cp_bdev_flush(dev), 0);
	ram_write_pat(dev, 4096, 8192, 2, 0); /* overwrite + grow */
	assert_int_equal(cp_bdev_truncate(dev, 100 * KiB), 0);
	assert_int_equal(cp_bdev_discard(dev, 0, 100), 0);
	assert_int_equal(cp_bdev_size(dev), 100 * KiB);
	assert_int_equal(cp_ram_cut(dev), 0);
	assert_int_equal(cp_ram_restart(dev), 0);
	assert_int_equal(cp_bdev_size(dev), 8192);
	assert_true(ram_has_pat(dev, 0, 8192, 1));
	check_range(dev, 8192, 8192, 0);

	/* shrink, flush, cut: the shrink is durable */
	assert_int_equal(cp_bdev_truncate(dev, 1000), 0);
	assert_int_equal(cp_bdev_flush(dev), 0);
	ram_write_pat(dev, 0, 2000, 3, 0);
	assert_int_equal(cp_ram_cut(dev), 0);
	assert_int_equal(cp_ram_restart(dev), 0);
	assert_int_equal(cp_bdev_size(dev), 1000);
	assert_true(ram_has_pat(dev, 0, 1000, 1));
	check_range(dev, 1000, 8192, 0);
	cp_bdev_close(dev);
}

/* Run the same sequence on a keep_seed device and snapshot the result. */
static uint8_t *ram_keep_run(uint64_t seed, uint64_t *size)
{
	cp_bdev *dev = ram_open(-1, seed);
	enum { N = 64 };
	ram_write_pat(dev, 0, 512, 1000, 0);
	assert_int_equal(cp_bdev_flush(dev), 0);
	for (unsigned i = 0; i < N; i++)
		ram_write_pat(dev, 512 + (uint64_t)i * 512, 512, i, 0);
	/* overlapping writes to one block: order matters */
	for (unsigned i = 0; i < 8; i++)
		ram_write_pat(dev, 0, 512, 2000 + i, 0);
	assert_int_equal(cp_ram_cut(dev), 0);
	assert_int_equal(cp_ram_restart(dev), 0);
	*size = cp_bdev_size(dev);
	uint8_t *img = calloc(1, (N + 1) * 512);
	assert_int_equal(cp_bdev_pread(dev, img, (N + 1) * 512, 0), 0);

	/* every block is either its old or one of its written contents */
	unsigned kept = 0;
	for (unsigned i = 0; i < N; i++) {
		uint8_t want[512];
		fill_random(want, 512, i);
		const uint8_t *blk = img + 512 + (size_t)i * 512;
		if (!memcmp(blk, want, 512))
			kept++;
		else
			assert_true(all_bytes(blk, 512, 0));
	}
	if (seed == 0)
		assert_int_equal(kept, 0);
	else
		assert_true(kept > 0 && kept < N);
	bool ok = false;
	for (unsigned i = 0; i < 9 && !ok; i++) {
		uint8_t want[512];
		fill_random(want, 512, i < 8 ? 2000 + i : 1000);
		ok = !memcmp(img, want, 512);
	}
	assert_true(ok);
	/* the survivors are durable: a second cut keeps them */
	assert_int_equal(cp_ram_cut(dev), 0);
	assert_int_equal(cp_ram_restart(dev), 0);
	uint8_t *again = calloc(1, (N + 1) * 512);
	assert_int_equal(cp_bdev_pread(dev, again, (N + 1) * 512, 0), 0);
	assert_memory_equal(img, again, (N + 1) * 512);
	free(again);
	cp_bdev_close(dev);
	return img;
}

static void test_ram_keep_seed(void **state)
{
	(void)state;
	uint64_t s1, s2, s3, s0;
	uint8_t *a = ram_keep_run(42, &s1);
	uint8_t *b = ram_keep_run(42, &s2);
	uint8_t *c = ram_keep_run(4242, &s3);
	uint8_t *z = ram_keep_run(0, &s0);
	assert_int_equal(s1, s2);
	assert_memory_equal(a, b, 65 * 512);
	assert_memory_not_equal(a, c, 65 * 512);
	assert_int_equal(s0, 512);
	free(a);
	free(b);
	free(c);
	free(z);
}

static void test_ram_save_load(void **state)
{
	(void)state;
	char path[] = "/var/tmp/cp-bc-ram-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	cp_bdev *dev = ram_open(-1, 0);
	ram_write_pat(dev, 100, 300000, 9, 0);
	assert_int_equal(cp_ram_save(dev, path), 0);
	cp_bdev_close(dev);

	dev = ram_open(-1, 0);
	ram_write_pat(dev, 0, 500000, 10, 0);
	assert_int_equal(cp_ram_load(dev, path), 0);
	assert_int_equal(cp_bdev_size(dev), 300100);
	assert_true(ram_has_pat(dev, 100, 300000, 9));
	check_range(dev, 0, 100, 0);
	check_range(dev, 300100, 200000, 0);
	/* loaded content is durable */
	assert_int_equal(cp_ram_cut(dev), 0);
	assert_int_equal(cp_ram_restart(dev), 0);
	assert_true(ram_has_pat(dev, 100, 300000, 9));
	cp_bdev_close(dev);

	/* a file device can read the saved image */
	cp_bdev *fdev;
	assert_int_equal(cp_bdev_open(path, NULL, &fdev), 0);
	assert_int_equal(cp_bdev_size(fdev), 300100);
	assert_true(ram_has_pat(fdev, 100, 300000, 9));
	cp_bdev_close(fdev);
	assert_int_equal(cp_ram_cut(dev = ram_open(-1, 0)), 0);
	cp_bdev_close(dev);
	unlink(path);
}

static void test_ram_not_ram(void **state)
{
	(void)state;
	char path[] = "/var/tmp/cp-bc-test-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	cp_bdev *dev;
	assert_int_equal(cp_bdev_open(path, NULL, &dev), 0);
	assert_int_equal(cp_ram_cut(dev), -EINVAL);
	assert_false(cp_ram_is_cut(dev));
	assert_int_equal(cp_ram_restart(dev), -EINVAL);
	cp_bdev *twin = dev;
	assert_int_equal(cp_ram_open_twin(dev, &twin), -EINVAL);
	assert_null(twin);
	cp_bdev_close(dev);
	unlink(path);
}

/* ---- main ------------------------------------------------------------------
 */

struct ftest {
	const char *name;
	CMUnitTestFunction fn;
};

static const struct ftest ftests[] = {
    {"props", test_props},
    {"roundtrip", test_roundtrip},
    {"async_qd64", test_async_qd64},
    {"read_past_eof", test_read_past_eof},
    {"discard", test_discard},
    {"write_zeroes", test_write_zeroes},
    {"truncate", test_truncate},
    {"prealloc", test_prealloc},
    {"block_status", test_block_status},
    {"concurrent_unaligned", test_concurrent_unaligned},
    {"callback_submit", test_callback_submit},
};

static const struct CMUnitTest plain_tests[] = {
    cmocka_unit_test(test_parsers),
    cmocka_unit_test(test_open_errors),
    cmocka_unit_test(test_readonly_and_modes),
    cmocka_unit_test(test_ram_basic),
    cmocka_unit_test(test_ram_async),
    cmocka_unit_test(test_ram_twin),
    cmocka_unit_test(test_ram_cut_count),
    cmocka_unit_test(test_ram_flush_survives),
    cmocka_unit_test(test_ram_keep_seed),
    cmocka_unit_test(test_ram_save_load),
    cmocka_unit_test(test_ram_not_ram),
};

int main(void)
{
	enum { NF = CP_ARRAY_SIZE(fcfgs) * CP_ARRAY_SIZE(ftests) };
	static struct CMUnitTest tests[NF + CP_ARRAY_SIZE(plain_tests)];
	static char names[NF][64];
	size_t n = 0;

	for (size_t i = 0; i < CP_ARRAY_SIZE(fcfgs); i++) {
		for (size_t j = 0; j < CP_ARRAY_SIZE(ftests); j++) {
			snprintf(names[n], sizeof(names[n]), "%s/%s/%s",
				 cp_aio_name(fcfgs[i].aio),
				 fcfgs[i].cache == CP_CACHE_NONE ? "none"
								 : "writeback",
				 ftests[j].name);
			tests[n] = (struct CMUnitTest){
			    names[n], ftests[j].fn, file_setup, file_teardown,
			    &fcfgs[i]};
			n++;
		}
	}
	for (size_t i = 0; i < CP_ARRAY_SIZE(plain_tests); i++)
		tests[n++] = plain_tests[i];
	return _cmocka_run_group_tests("blockcore", tests, n, NULL, NULL);
}
