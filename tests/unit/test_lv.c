/* tests/unit/test_lv.c - the linear (LV) device of blockcore, and the JSON
 * reader that spm/lvm.c uses to read LVM's extent map.
 *
 * Three sparse files under /var/tmp act as PVs.  A hand-made, fragmented
 * map (segments given out of order, spread over the PVs, with 512-byte and
 * 4 KiB segments so requests cross boundaries at every alignment) is opened
 * as a linear device for each backend and cache mode.  Every check is made
 * twice: through the device against a shadow buffer, and by reading the
 * PV files directly at the offsets dm-linear would use (computed here from
 * the table, independently of lv.c).  Deterministic: fixed seeds, no
 * sleeps.
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
#include "json.h"
#include "qcow.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define NPV 3
#define PV_SIZE (16 * MiB)

/* ---- helpers ------------------------------------------------------------ */

static char tmpdir[64];
static char pv_path[NPV][96];

/* The map of the tests, in the order given to the device (not LV order). */
struct tseg {
	uint64_t lv, len;
	int pv;
	uint64_t pvoff;
};

static const struct tseg map_base[] = {
    {2 * MiB, 3 * MiB, 0, 8 * MiB},
    {5 * MiB + 4 * KiB, 2 * MiB - 4 * KiB, 1, 6 * MiB},
    {0, 1 * MiB, 1, 3 * MiB},
    {7 * MiB, 1 * MiB, 0, 1 * MiB},
    {1 * MiB + 512, 1 * MiB - 512, 2, 512},
    {5 * MiB, 4 * KiB, 2, 10 * MiB},
    {1 * MiB, 512, 0, 64 * KiB},
};
#define BASE_SIZE (8 * MiB)

/* After "lvextend": the last segment grew in place (LVM merges it) and a
 * new one follows on another PV. */
static const struct tseg map_grown[] = {
    {9 * MiB, 1 * MiB, 2, 12 * MiB},
    {2 * MiB, 3 * MiB, 0, 8 * MiB},
    {5 * MiB + 4 * KiB, 2 * MiB - 4 * KiB, 1, 6 * MiB},
    {0, 1 * MiB, 1, 3 * MiB},
    {7 * MiB, 2 * MiB, 0, 1 * MiB},
    {1 * MiB + 512, 1 * MiB - 512, 2, 512},
    {5 * MiB, 4 * KiB, 2, 10 * MiB},
    {1 * MiB, 512, 0, 64 * KiB},
};
#define GROWN_SIZE (10 * MiB)

struct tmap {
	struct cp_linear_seg segs[16];
	struct cp_linear_map map;
};

static void make_map(struct tmap *m, const struct tseg *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		m->segs[i] = (struct cp_linear_seg){
		    t[i].lv, t[i].len, pv_path[t[i].pv], t[i].pvoff};
	m->map.nsegs = n;
	m->map.segs = m->segs;
}

/* Where dm-linear puts LV offset off: PV index and offset, and how many
 * bytes follow in the same segment. */
static void ref_locate(const struct tseg *t, size_t n, uint64_t off, int *pv,
		       uint64_t *pvoff, uint64_t *run)
{
	*pv = 0;
	*pvoff = *run = 0;
	for (size_t i = 0; i < n; i++) {
		if (off >= t[i].lv && off < t[i].lv + t[i].len) {
			*pv = t[i].pv;
			*pvoff = t[i].pvoff + (off - t[i].lv);
			*run = t[i].lv + t[i].len - off;
			return;
		}
	}
	fail_msg("offset %llu not mapped", (unsigned long long)off);
}

/* The PV files hold exactly shadow[0, size) at the mapped offsets. */
static void check_pvs(const struct tseg *t, size_t n, const uint8_t *shadow,
		      uint64_t size)
{
	int fds[NPV];
	for (int i = 0; i < NPV; i++) {
		fds[i] = open(pv_path[i], O_RDONLY);
		assert_true(fds[i] >= 0);
	}
	uint8_t *buf = malloc(4 * MiB);
	assert_non_null(buf);
	for (uint64_t off = 0; off < size;) {
		int pv;
		uint64_t pvoff, run;
		ref_locate(t, n, off, &pv, &pvoff, &run);
		run = CP_MIN(run, 4 * MiB);
		run = CP_MIN(run, size - off);
		ssize_t r = pread(fds[pv], buf, run, (off_t)pvoff);
		assert_int_equal(r, (ssize_t)run);
		if (memcmp(buf, shadow + off, run)) {
			size_t k = 0;
			while (buf[k] == shadow[off + k])
				k++;
			fail_msg("LV offset %llu (PV %d offset %llu) differs",
				 (unsigned long long)(off + k), pv,
				 (unsigned long long)(pvoff + k));
		}
		off += run;
	}
	free(buf);
	for (int i = 0; i < NPV; i++)
		close(fds[i]);
}

static void reset_pvs(void)
{
	for (int i = 0; i < NPV; i++) {
		int fd = open(pv_path[i], O_RDWR | O_CREAT | O_TRUNC, 0644);
		assert_true(fd >= 0);
		/* A recognisable non-zero pattern outside every segment. */
		assert_int_equal(ftruncate(fd, PV_SIZE), 0);
		close(fd);
	}
}

static int group_setup(void **state)
{
	strcpy(tmpdir, "/var/tmp/cp-test-lv.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	for (int i = 0; i < NPV; i++)
		snprintf(pv_path[i], sizeof(pv_path[i]), "%s/pv%d", tmpdir, i);
	return 0;
}

static int group_teardown(void **state)
{
	for (int i = 0; i < NPV; i++)
		unlink(pv_path[i]);
	rmdir(tmpdir);
	return 0;
}

struct lcfg {
	enum cp_aio aio;
	enum cp_cache cache;
};

static const struct lcfg lcfgs[] = {
    {CP_AIO_IO_URING, CP_CACHE_NONE},
    {CP_AIO_IO_URING, CP_CACHE_WRITEBACK},
    {CP_AIO_NATIVE, CP_CACHE_NONE},
    {CP_AIO_THREADS, CP_CACHE_WRITEBACK},
};

static cp_bdev *open_lv(const struct lcfg *c, const struct tseg *t, size_t n)
{
	struct cp_bdev_opts o;
	struct tmap m;
	cp_bdev *dev = NULL;
	cp_bdev_opts_init(&o);
	o.aio = c->aio;
	o.cache = c->cache;
	o.queue_depth = 16; /* < 32 so QD32 also uses heap requests */
	make_map(&m, t, n);
	int r = cp_bdev_open_linear("lv:test/lv", &m.map, &o, &dev);
	if (r < 0)
		fail_msg("open linear: %s", cp_last_error());
	return dev;
}

/* ---- sync I/O through the map -------------------------------------------- */

static void test_basic_props(void **state)
{
	reset_pvs();
	cp_bdev *dev = open_lv(&lcfgs[0], map_base, CP_ARRAY_SIZE(map_base));
	assert_int_equal(cp_bdev_size(dev), BASE_SIZE);
	assert_true(cp_bdev_is_blockdev(dev));
	assert_true(cp_bdev_is_linear(dev));
	assert_string_equal(cp_bdev_name(dev), "lv:test/lv");
	assert_true(cp_bdev_align(dev) >= 512);
	assert_int_equal(cp_bdev_cache(dev), CP_CACHE_NONE);
	/* truncate / preallocate follow the block device rules */
	assert_int_equal(cp_bdev_truncate(dev, BASE_SIZE), 0);
	assert_int_equal(cp_bdev_truncate(dev, BASE_SIZE + MiB), -ENOTSUP);
	assert_int_equal(cp_bdev_truncate(dev, MiB), -ENOTSUP);
	assert_int_equal(
	    cp_bdev_preallocate(dev, 0, BASE_SIZE, CP_PREALLOC_FALLOC), 0);
	assert_int_equal(
	    cp_bdev_preallocate(dev, MiB, BASE_SIZE, CP_PREALLOC_FALLOC),
	    -ENOSPC);
	uint64_t pnum;
	assert_int_equal(cp_bdev_block_status(dev, 0, MiB, &pnum), 1);
	assert_int_equal(pnum, MiB);
	cp_bdev_close(dev);
	reset_pvs();
}

static void random_rw(const struct lcfg *c)
{
	reset_pvs();
	cp_bdev *dev = open_lv(c, map_base, CP_ARRAY_SIZE(map_base));
	uint8_t *shadow = calloc(1, BASE_SIZE);
	uint8_t *buf = cp_bdev_alloc_buf(2 * MiB);
	uint8_t *rbuf = cp_bdev_alloc_buf(2 * MiB);
	assert_non_null(shadow);
	assert_non_null(buf);
	assert_non_null(rbuf);
	uint64_t s = 42 + (uint64_t)c->aio * 7 + (uint64_t)c->cache;

	for (int i = 0; i < 300; i++) {
		/* half aligned to 4 KiB, half to 512, a few to 1 byte */
		uint64_t g = i % 10 == 0 ? 1 : (i & 1 ? 512 : 4096);
		uint64_t len = (rng_next(&s) % (2 * MiB / g) + 1) * g;
		len = CP_MIN(len, 2 * MiB);
		uint64_t off = rng_next(&s) % (BASE_SIZE - len + 1) / g * g;
		if (rng_next(&s) % 3) {
			fill_random(buf, len, s);
			int r = cp_bdev_pwrite(dev, buf, len, off);
			if (r < 0)
				fail_msg("pwrite %llu+%llu: %s",
					 (unsigned long long)off,
					 (unsigned long long)len,
					 cp_last_error());
			memcpy(shadow + off, buf, len);
		} else {
			assert_int_equal(cp_bdev_pread(dev, rbuf, len, off), 0);
			assert_memory_equal(rbuf, shadow + off, len);
		}
	}
	assert_int_equal(cp_bdev_flush(dev), 0);

	/* One request crossing every segment, as an odd iovec. */
	fill_random(shadow, BASE_SIZE, 99);
	struct iovec iov[5];
	size_t cuts[] = {0,	   777, 1 * MiB + 100, 3 * MiB, 5 * MiB + 4097,
			 BASE_SIZE};
	for (int k = 0; k < 5; k++) {
		iov[k].iov_base = shadow + cuts[k];
		iov[k].iov_len = cuts[k + 1] - cuts[k];
	}
	assert_int_equal(cp_bdev_pwritev(dev, iov, 5, 0), 0);
	uint8_t *all = malloc(BASE_SIZE);
	assert_non_null(all);
	memset(all, 0xee, BASE_SIZE);
	for (int k = 0; k < 5; k++)
		iov[k].iov_base = all + cuts[k];
	assert_int_equal(cp_bdev_preadv(dev, iov, 5, 0), 0);
	assert_memory_equal(all, shadow, BASE_SIZE);
	cp_bdev_close(dev);
	check_pvs(map_base, CP_ARRAY_SIZE(map_base), shadow, BASE_SIZE);

	/* The content survives a reopen with the map in another order. */
	struct tseg rev[CP_ARRAY_SIZE(map_base)];
	for (size_t i = 0; i < CP_ARRAY_SIZE(map_base); i++)
		rev[i] = map_base[CP_ARRAY_SIZE(map_base) - 1 - i];
	dev = open_lv(c, rev, CP_ARRAY_SIZE(rev));
	memset(all, 0, BASE_SIZE);
	assert_int_equal(cp_bdev_pread(dev, all, BASE_SIZE, 0), 0);
	assert_memory_equal(all, shadow, BASE_SIZE);
	cp_bdev_close(dev);
	free(all);
	free(shadow);
	cp_bdev_free_buf(buf);
	cp_bdev_free_buf(rbuf);
}

static void test_random_rw(void **state)
{
	for (size_t i = 0; i < CP_ARRAY_SIZE(lcfgs); i++)
		random_rw(&lcfgs[i]);
}

/* Requests that start or end exactly at, one sector before/after, every
 * segment boundary. */
static void test_boundaries(void **state)
{
	reset_pvs();
	cp_bdev *dev = open_lv(&lcfgs[0], map_base, CP_ARRAY_SIZE(map_base));
	uint8_t *shadow = calloc(1, BASE_SIZE);
	uint8_t *buf = cp_bdev_alloc_buf(64 * KiB);
	uint8_t *rbuf = cp_bdev_alloc_buf(64 * KiB);
	uint64_t seed = 1;
	for (size_t i = 0; i < CP_ARRAY_SIZE(map_base); i++) {
		uint64_t b = map_base[i].lv;
		int64_t deltas[] = {-4096, -512, 0, 512};
		for (size_t d = 0; d < CP_ARRAY_SIZE(deltas); d++) {
			int64_t off = (int64_t)b + deltas[d];
			size_t len = 8 * KiB + (d & 1) * 512;
			if (off < 0 || (uint64_t)off + len > BASE_SIZE)
				continue;
			fill_random(buf, len, seed++);
			assert_int_equal(
			    cp_bdev_pwrite(dev, buf, len, (uint64_t)off), 0);
			memcpy(shadow + off, buf, len);
			assert_int_equal(
			    cp_bdev_pread(dev, rbuf, len, (uint64_t)off), 0);
			assert_memory_equal(rbuf, buf, len);
		}
	}
	/* discard and write zeroes across boundaries */
	assert_int_equal(cp_bdev_write_zeroes(dev, MiB - 4096, 8192 + 512, 0),
			 0);
	memset(shadow + MiB - 4096, 0, 8192 + 512);
	int r = cp_bdev_discard(dev, 5 * MiB - 4096, 12288);
	assert_int_equal(r, 0); /* PVs are files: punch hole reads zeroes */
	memset(shadow + 5 * MiB - 4096, 0, 12288);
	assert_int_equal(cp_bdev_write_zeroes(dev, BASE_SIZE - 512, 1024, 0),
			 -ENOSPC);
	assert_int_equal(cp_bdev_discard(dev, BASE_SIZE - 512, 4096), 0);
	memset(shadow + BASE_SIZE - 512, 0, 512);
	cp_bdev_close(dev);
	check_pvs(map_base, CP_ARRAY_SIZE(map_base), shadow, BASE_SIZE);
	free(shadow);
	cp_bdev_free_buf(buf);
	cp_bdev_free_buf(rbuf);
}

/* ---- async -------------------------------------------------------------- */

static void async_qd32(const struct lcfg *cfg)
{
	enum { QD = 32 };
	const uint64_t slot = BASE_SIZE / QD;
	reset_pvs();
	cp_bdev *dev = open_lv(cfg, map_base, CP_ARRAY_SIZE(map_base));
	uint8_t *shadow = calloc(1, BASE_SIZE);
	uint8_t *bufs[QD];
	struct counter c;
	uint64_t s = 7;
	counter_init(&c);
	for (int i = 0; i < QD; i++)
		bufs[i] = cp_bdev_alloc_buf(slot);

	for (int round = 0; round < 8; round++) {
		uint64_t off[QD], len[QD];
		for (int i = 0; i < QD; i++) {
			len[i] = (rng_next(&s) % (slot / 512) + 1) * 512;
			off[i] =
			    i * slot +
			    (rng_next(&s) % ((slot - len[i]) / 512 + 1)) * 512;
			fill_random(bufs[i], len[i], s);
			memcpy(shadow + off[i], bufs[i], len[i]);
		}
		for (int i = 0; i < QD; i++) {
			struct iovec v = {bufs[i], len[i]};
			counter_add(&c);
			assert_int_equal(cp_bdev_pwritev_async(dev, &v, 1,
							       off[i],
							       counter_cb, &c),
					 0);
		}
		counter_wait(&c, 0);
		assert_int_equal(c.errors, 0);
		/* read back the whole slots, again QD32 */
		for (int i = 0; i < QD; i++) {
			struct iovec v = {bufs[i], slot};
			counter_add(&c);
			assert_int_equal(cp_bdev_preadv_async(dev, &v, 1,
							      i * slot,
							      counter_cb, &c),
					 0);
		}
		counter_flush_wait(&c, dev);
		assert_int_equal(c.errors, 0);
		for (int i = 0; i < QD; i++)
			assert_memory_equal(bufs[i], shadow + i * slot, slot);
	}
	assert_int_equal(c.same_thread, 0);

	/* Errors complete asynchronously too, never on the submitter. */
	struct iovec v = {bufs[0], 8192};
	counter_add(&c);
	assert_int_equal(
	    cp_bdev_pwritev_async(dev, &v, 1, BASE_SIZE - 4096, counter_cb, &c),
	    0);
	counter_add(&c);
	v.iov_len = 0;
	assert_int_equal(cp_bdev_preadv_async(dev, &v, 1, 0, counter_cb, &c),
			 0);
	counter_wait(&c, 0);
	assert_int_equal(c.errors, 1);
	assert_int_equal(c.last_err, -ENOSPC);
	assert_int_equal(c.same_thread, 0);

	/* A synchronous call from a callback of the device: -EDEADLK. */
	c.sync_dev = dev;
	c.sync_ret = 1;
	v.iov_len = 4096;
	counter_add(&c);
	assert_int_equal(
	    cp_bdev_preadv_async(dev, &v, 1, MiB - 512, counter_cb, &c), 0);
	counter_wait(&c, 0);
	assert_int_equal(c.sync_ret, -EDEADLK);

	cp_bdev_close(dev);
	check_pvs(map_base, CP_ARRAY_SIZE(map_base), shadow, BASE_SIZE);
	for (int i = 0; i < QD; i++)
		cp_bdev_free_buf(bufs[i]);
	free(shadow);
}

static void test_async_qd32(void **state)
{
	for (size_t i = 0; i < CP_ARRAY_SIZE(lcfgs); i++)
		async_qd32(&lcfgs[i]);
}

/* ---- the end of the LV, remap -------------------------------------------- */

static void test_end_and_remap(void **state)
{
	reset_pvs();
	cp_bdev *dev = open_lv(&lcfgs[0], map_base, CP_ARRAY_SIZE(map_base));
	uint8_t *shadow = calloc(1, GROWN_SIZE);
	uint8_t *buf = cp_bdev_alloc_buf(2 * MiB);
	struct tmap m;

	/* a write that ends past the end fails whole */
	fill_random(buf, 8192, 5);
	assert_int_equal(cp_bdev_pwrite(dev, buf, 8192, BASE_SIZE - 4096),
			 -ENOSPC);
	assert_non_null(strstr(cp_last_error(), "lv:test/lv"));
	assert_int_equal(cp_bdev_pwrite(dev, buf, 4096, BASE_SIZE), -ENOSPC);
	/* a read past the end reads zeroes there */
	memset(buf, 0xaa, 8192);
	assert_int_equal(cp_bdev_pread(dev, buf, 8192, BASE_SIZE - 4096), 0);
	for (int i = 0; i < 8192; i++)
		assert_int_equal(buf[i], 0);

	fill_random(shadow, BASE_SIZE, 11);
	assert_int_equal(cp_bdev_pwrite(dev, shadow, BASE_SIZE, 0), 0);

	/* invalid remaps leave the map alone */
	make_map(&m, map_base, 3);
	assert_int_equal(cp_bdev_linear_remap(dev, &m.map), -EINVAL);
	struct tseg moved[CP_ARRAY_SIZE(map_grown)];
	memcpy(moved, map_grown, sizeof(moved));
	moved[4].pvoff = 13 * MiB; /* LV 7M..9M elsewhere on pv0 */
	make_map(&m, moved, CP_ARRAY_SIZE(moved));
	assert_int_equal(cp_bdev_linear_remap(dev, &m.map), -EINVAL);
	assert_non_null(strstr(cp_last_error(), "moves LV offset"));
	make_map(&m, map_base, CP_ARRAY_SIZE(map_base) - 1); /* smaller */
	assert_int_equal(cp_bdev_linear_remap(dev, &m.map), -EINVAL);
	assert_int_equal(cp_bdev_size(dev), BASE_SIZE);

	/* a request in flight across the remap keeps its map */
	struct counter c;
	counter_init(&c);
	uint8_t *abuf = cp_bdev_alloc_buf(BASE_SIZE);
	struct iovec v = {abuf, BASE_SIZE};
	counter_add(&c);
	assert_int_equal(cp_bdev_preadv_async(dev, &v, 1, 0, counter_cb, &c),
			 0);

	make_map(&m, map_grown, CP_ARRAY_SIZE(map_grown));
	assert_int_equal(cp_bdev_linear_remap(dev, &m.map), 0);
	counter_wait(&c, 0);
	assert_int_equal(c.errors, 0);
	assert_memory_equal(abuf, shadow, BASE_SIZE);
	cp_bdev_free_buf(abuf);

	assert_int_equal(cp_bdev_size(dev), GROWN_SIZE);
	/* the same remap again is fine (idempotent refresh) */
	assert_int_equal(cp_bdev_linear_remap(dev, &m.map), 0);

	fill_random(buf, 2 * MiB, 6);
	assert_int_equal(cp_bdev_pwrite(dev, buf, 2 * MiB, BASE_SIZE - MiB), 0);
	memcpy(shadow + BASE_SIZE - MiB, buf, 2 * MiB);
	assert_int_equal(cp_bdev_pwrite(dev, buf, 4096, GROWN_SIZE), -ENOSPC);
	uint8_t *all = malloc(GROWN_SIZE);
	assert_int_equal(cp_bdev_pread(dev, all, GROWN_SIZE, 0), 0);
	assert_memory_equal(all, shadow, GROWN_SIZE);
	free(all);
	cp_bdev_close(dev);
	check_pvs(map_grown, CP_ARRAY_SIZE(map_grown), shadow, GROWN_SIZE);
	free(shadow);
	cp_bdev_free_buf(buf);
}

/* Concurrent writers while another thread remaps: nothing is lost. */
struct remap_writer {
	cp_bdev *dev;
	uint8_t *shadow;
	uint64_t base;
	int errors;
};

static void *remap_writer_main(void *arg)
{
	struct remap_writer *w = arg;
	uint8_t *buf = cp_bdev_alloc_buf(64 * KiB);
	uint64_t s = w->base + 1;
	for (int i = 0; i < 400; i++) {
		uint64_t off = w->base + (rng_next(&s) % 16) * 64 * KiB;
		fill_random(buf, 64 * KiB, s);
		if (cp_bdev_pwrite(w->dev, buf, 64 * KiB, off) < 0)
			w->errors++;
		else
			memcpy(w->shadow + off, buf, 64 * KiB);
	}
	cp_bdev_free_buf(buf);
	return NULL;
}

static void test_remap_concurrent(void **state)
{
	reset_pvs();
	cp_bdev *dev = open_lv(&lcfgs[0], map_base, CP_ARRAY_SIZE(map_base));
	uint8_t *shadow = calloc(1, GROWN_SIZE);
	struct remap_writer w[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct remap_writer){dev, shadow, (uint64_t)i * 2 * MiB,
					     0};
		assert_int_equal(
		    pthread_create(&th[i], NULL, remap_writer_main, &w[i]), 0);
	}
	struct tmap m;
	for (int i = 0; i < 50; i++) {
		make_map(&m, map_grown, CP_ARRAY_SIZE(map_grown));
		assert_int_equal(cp_bdev_linear_remap(dev, &m.map), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].errors, 0);
	}
	cp_bdev_close(dev);
	check_pvs(map_grown, CP_ARRAY_SIZE(map_grown), shadow, GROWN_SIZE);
	free(shadow);
}

/* ---- bad maps ------------------------------------------------------------ */

static void expect_bad_map(const struct tseg *t, size_t n, const char *msg)
{
	struct tmap m;
	cp_bdev *dev = (cp_bdev *)1;
	make_map(&m, t, n);
	assert_int_equal(cp_bdev_open_linear("lv:bad", &m.map, NULL, &dev),
			 -EINVAL);
	assert_null(dev);
	if (!strstr(cp_last_error(), msg))
		fail_msg("expected '%s' in '%s'", msg, cp_last_error());
}

static void test_bad_maps(void **state)
{
	reset_pvs();
	const struct tseg gap[] = {{0, MiB, 0, 0}, {2 * MiB, MiB, 0, MiB}};
	expect_bad_map(gap, 2, "gap at LV offset 1048576");
	const struct tseg overlap[] = {{0, 2 * MiB, 0, 0}, {MiB, MiB, 1, 0}};
	expect_bad_map(overlap, 2, "overlap");
	const struct tseg nostart[] = {{MiB, MiB, 0, 0}};
	expect_bad_map(nostart, 1, "gap at LV offset 0");
	const struct tseg unaligned[] = {{0, 1000, 0, 0}};
	expect_bad_map(unaligned, 1, "not a multiple of 512");
	const struct tseg twice[] = {{0, MiB, 0, 0}, {MiB, MiB, 0, 512 * KiB}};
	expect_bad_map(twice, 2, "both map to");
	expect_bad_map(NULL, 0, "no segments");

	struct cp_linear_seg s = {0, MiB, "/nonexistent/pv", 0};
	struct cp_linear_map m = {1, &s};
	cp_bdev *dev;
	assert_int_equal(cp_bdev_open_linear("lv:x", &m, NULL, &dev), -ENOENT);
	assert_non_null(strstr(cp_last_error(), "lv:x: /nonexistent/pv"));

	struct cp_bdev_opts o;
	cp_bdev_opts_init(&o);
	o.create = true;
	s.pv_path = pv_path[0];
	assert_int_equal(cp_bdev_open_linear("lv:x", &m, &o, &dev), -EINVAL);

	/* not a linear device */
	struct cp_ram_opts ro;
	cp_ram_opts_init(&ro);
	assert_int_equal(cp_bdev_open_ram(&ro, &dev), 0);
	assert_false(cp_bdev_is_linear(dev));
	assert_int_equal(cp_bdev_linear_remap(dev, &m), -EINVAL);
	cp_bdev_close(dev);

	/* read-only */
	cp_bdev_opts_init(&o);
	o.readonly = true;
	assert_int_equal(cp_bdev_open_linear("lv:ro", &m, &o, &dev), 0);
	uint8_t b[512] = {0};
	assert_int_equal(cp_bdev_pwrite(dev, b, 512, 0), -EROFS);
	assert_int_equal(cp_bdev_pread(dev, b, 512, 0), 0);
	assert_int_equal(cp_bdev_flush(dev), 0);
	cp_bdev_close(dev);
}

/* ---- the qcow engine on a linear device ---------------------------------- */

static cp_image *open_img(cp_bdev *dev, bool check)
{
	struct cp_open_opts o;
	cp_image *img = NULL;
	cp_open_opts_init(&o);
	o.for_check = check;
	if (cp_image_open_dev(dev, "lv:test/lv", &o, &img) < 0)
		fail_msg("open image: %s", cp_last_error());
	return img;
}

static void check_clean(cp_bdev *dev)
{
	struct cp_check_result res;
	cp_image *img = open_img(dev, true);
	memset(&res, 0, sizeof(res));
	assert_int_equal(cp_image_check(img, 0, &res, NULL, NULL), 0);
	assert_int_equal(res.corruptions, 0);
	assert_int_equal(res.leaks, 0);
	assert_int_equal(res.check_errors, 0);
	assert_int_equal(cp_image_close(img), 0);
}

static void test_qcow_on_lv(void **state)
{
	const uint64_t vsize = 128 * MiB, chunk = 256 * KiB;
	reset_pvs();
	cp_bdev *dev = open_lv(&lcfgs[0], map_base, CP_ARRAY_SIZE(map_base));
	struct cp_create_opts co;
	cp_create_opts_init(&co);
	co.virtual_size = vsize;
	if (cp_image_create_dev(dev, "lv:test/lv", &co, NULL, NULL) < 0)
		fail_msg("create: %s", cp_last_error());

	/* Fill the 8 MiB LV with guest data spread over the disk until the
	 * engine runs out of host space: -ENOSPC, and nothing is leaked or
	 * corrupted by the failed allocation. */
	cp_image *img = open_img(dev, false);
	uint8_t *buf = malloc(chunk), *rbuf = malloc(chunk);
	int n = 0, r;
	for (;; n++) {
		assert_true(n < 40);
		fill_random(buf, chunk, 100 + n);
		r = cp_image_pwrite(img, buf, chunk, (uint64_t)n * 2 * MiB);
		if (r < 0)
			break;
	}
	assert_int_equal(r, -ENOSPC);
	assert_true(n >= 20);
	assert_int_equal(cp_image_close(img), 0);
	check_clean(dev);

	/* "lvextend" + refresh, then the same write and more succeed,
	 * allocating past the old end. */
	struct tmap m;
	make_map(&m, map_grown, CP_ARRAY_SIZE(map_grown));
	assert_int_equal(cp_bdev_linear_remap(dev, &m.map), 0);
	img = open_img(dev, false);
	const int total = n + 4;
	for (int i = n; i < total; i++) {
		fill_random(buf, chunk, 100 + i);
		r = cp_image_pwrite(img, buf, chunk, (uint64_t)i * 2 * MiB);
		if (r < 0)
			fail_msg("write %d after remap: %s", i,
				 cp_last_error());
	}
	assert_int_equal(cp_image_close(img), 0);
	check_clean(dev);

	/* The old end of the LV (now PV 0 at 2 MiB, where the last segment
	 * grew in place) holds data now. */
	int pv;
	uint64_t pvoff, run;
	ref_locate(map_grown, CP_ARRAY_SIZE(map_grown), BASE_SIZE, &pv, &pvoff,
		   &run);
	assert_int_equal(pv, 0);
	assert_int_equal(pvoff, 2 * MiB);
	int fd = open(pv_path[pv], O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, rbuf, chunk, (off_t)pvoff), (ssize_t)chunk);
	assert_false(cp_is_zero(rbuf, chunk));
	close(fd);

	img = open_img(dev, false);
	for (int i = 0; i < total; i++) {
		fill_random(buf, chunk, 100 + i);
		assert_int_equal(
		    cp_image_pread(img, rbuf, chunk, (uint64_t)i * 2 * MiB), 0);
		assert_memory_equal(rbuf, buf, chunk);
	}
	assert_int_equal(cp_image_close(img), 0);
	cp_bdev_close(dev);
	free(buf);
	free(rbuf);
}

/* ---- JSON reader ----------------------------------------------------------
 */

static const char lvs_sample[] =
    "  {\n"
    "      \"report\": [\n"
    "          {\n"
    "              \"lv\": [\n"
    "                  {\"lv_name\":\"lva\", \"lv_size\":\"79691776\", "
    "\"seg_start_pe\":\"0\", \"seg_size_pe\":\"2\", "
    "\"seg_pe_ranges\":\"/dev/loop0:0-1\", \"lv_tags\":\"t1\"},\n"
    "                  {\"lv_name\":\"lvb\", \"lv_size\":\"8388608\", "
    "\"seg_start_pe\":\"0\", \"seg_size_pe\":\"2\", "
    "\"seg_pe_ranges\":\"/dev/loop0:2-3\", \"lv_tags\":\"\"}\n"
    "              ]\n"
    "          }\n"
    "      ]\n"
    "  }\n";

static void expect_json_error(const char *text, int err, const char *msg)
{
	cp_json *j = (cp_json *)1;
	int r = cp_json_parse(text, strlen(text), NULL, &j);
	if (r != err)
		fail_msg("'%s': expected %d, got %d (%s)", text, err, r,
			 cp_last_error());
	assert_null(j);
	if (!strstr(cp_last_error(), msg))
		fail_msg("'%s': expected '%s' in '%s'", text, msg,
			 cp_last_error());
}

static void test_json(void **state)
{
	cp_json *j;
	assert_int_equal(
	    cp_json_parse(lvs_sample, strlen(lvs_sample), NULL, &j), 0);
	const cp_json *lv =
	    cp_json_get(cp_json_at(cp_json_get(j, "report"), 0), "lv");
	assert_int_equal(cp_json_type(lv), CP_JSON_ARRAY);
	assert_int_equal(cp_json_count(lv), 2);
	assert_string_equal(
	    cp_json_string(cp_json_get(cp_json_at(lv, 1), "lv_name"), NULL),
	    "lvb");
	assert_string_equal(cp_json_key_at(cp_json_at(lv, 0), 4),
			    "seg_pe_ranges");
	assert_null(cp_json_get(cp_json_at(lv, 0), "nope"));
	assert_null(cp_json_at(lv, 2));
	cp_json_free(j);

	const char *doc = "{\"a\": [1, -0, 18446744073709551615, "
			  "-9223372036854775808, 2.5e-3, true, false, null],"
			  " \"s\": \"x\\u00e9\\ud83d\\ude00\\n\\\"\\/\"}";
	assert_int_equal(cp_json_parse(doc, strlen(doc), NULL, &j), 0);
	const cp_json *a = cp_json_get(j, "a");
	uint64_t u;
	int64_t i;
	double d;
	bool b;
	assert_int_equal(cp_json_u64(cp_json_at(a, 0), &u), 0);
	assert_int_equal(u, 1);
	assert_int_equal(cp_json_u64(cp_json_at(a, 1), &u), 0);
	assert_int_equal(u, 0);
	assert_int_equal(cp_json_u64(cp_json_at(a, 2), &u), 0);
	assert_true(u == UINT64_MAX);
	assert_int_equal(cp_json_i64(cp_json_at(a, 2), &i), -ERANGE);
	assert_int_equal(cp_json_i64(cp_json_at(a, 3), &i), 0);
	assert_true(i == INT64_MIN);
	assert_int_equal(cp_json_u64(cp_json_at(a, 3), &u), -ERANGE);
	assert_int_equal(cp_json_u64(cp_json_at(a, 4), &u), -EINVAL);
	assert_int_equal(cp_json_double(cp_json_at(a, 4), &d), 0);
	assert_true(d > 0.0024 && d < 0.0026);
	assert_string_equal(cp_json_number_text(cp_json_at(a, 4)), "2.5e-3");
	assert_int_equal(cp_json_bool(cp_json_at(a, 5), &b), 0);
	assert_true(b);
	assert_int_equal(cp_json_type(cp_json_at(a, 7)), CP_JSON_NULL);
	assert_int_equal(cp_json_u64(cp_json_at(a, 5), &u), -EINVAL);
	size_t sl;
	const char *s = cp_json_string(cp_json_get(j, "s"), &sl);
	assert_string_equal(s, "x\xc3\xa9\xf0\x9f\x98\x80\n\"/");
	assert_int_equal(sl, strlen(s));
	cp_json_free(j);

	expect_json_error("", -EINVAL, "found end of text");
	expect_json_error("{\"a\":1,}", -EINVAL, "trailing comma");
	expect_json_error("[1 2]", -EINVAL,
			  "line 1 column 4: expected ',' or ']'");
	expect_json_error("{\"a\":1}\n x", -EINVAL,
			  "line 2 column 2: unexpected 'x'");
	expect_json_error("[01]", -EINVAL, "leading zero");
	expect_json_error("[+1]", -EINVAL, "expected a value");
	expect_json_error("[1.]", -EINVAL, "digit after '.'");
	expect_json_error("[NaN]", -EINVAL, "expected a value");
	expect_json_error("{'a':1}", -EINVAL, "expected a string key");
	expect_json_error("{\"a\":1,\"a\":2}", -EINVAL, "duplicate key \"a\"");
	expect_json_error("[\"\\x\"]", -EINVAL, "invalid escape");
	expect_json_error("[\"\\ud800\"]", -EINVAL, "unpaired high");
	expect_json_error("[\"\\udc00\"]", -EINVAL, "unpaired low");
	expect_json_error("[\"\\u0000\"]", -EINVAL, "\\u0000");
	expect_json_error("[\"a\tb\"]", -EINVAL, "control character");
	expect_json_error("[\"\xc0\xaf\"]", -EINVAL, "invalid UTF-8");
	expect_json_error("[\"\xed\xa0\x80\"]", -EINVAL, "invalid UTF-8");
	expect_json_error("[\"abc", -EINVAL, "unterminated string");
	expect_json_error("[tru]", -EINVAL, "invalid literal");
	expect_json_error("\xef\xbb\xbf{}", -EINVAL, "byte order mark");
	expect_json_error("[1] // c", -EINVAL, "unexpected '/'");

	/* limits */
	char deep[200];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	assert_int_equal(cp_json_parse(deep, 200, NULL, &j), -E2BIG);
	assert_non_null(strstr(cp_last_error(), "nesting deeper than 64"));
	struct cp_json_opts o;
	cp_json_opts_init(&o);
	o.max_depth = 100;
	assert_int_equal(cp_json_parse(deep, 200, &o, &j), 0);
	cp_json_free(j);
	o.max_values = 3;
	assert_int_equal(cp_json_parse("[1,2,3]", 7, &o, &j), -E2BIG);
	o.max_values = 4;
	assert_int_equal(cp_json_parse("[1,2,3]", 7, &o, &j), 0);
	cp_json_free(j);
	o.max_len = 6;
	assert_int_equal(cp_json_parse("[1,2,3]", 7, &o, &j), -E2BIG);
	/* length-delimited: no NUL needed, and a NUL inside is an error */
	assert_int_equal(cp_json_parse("[1]xyz", 3, NULL, &j), 0);
	cp_json_free(j);
	assert_int_equal(cp_json_parse("[1]\0", 4, NULL, &j), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_json),
	    cmocka_unit_test(test_basic_props),
	    cmocka_unit_test(test_random_rw),
	    cmocka_unit_test(test_boundaries),
	    cmocka_unit_test(test_async_qd32),
	    cmocka_unit_test(test_end_and_remap),
	    cmocka_unit_test(test_remap_concurrent),
	    cmocka_unit_test(test_bad_maps),
	    cmocka_unit_test(test_qcow_on_lv),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
