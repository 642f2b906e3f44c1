/* tests/fuzz/fuzz_qcow.c - libFuzzer target for the image engine.
 *
 * Each input is the content of an image file.  It is put on a RAM device
 * and opened the ways the CLI opens images:
 *
 *   1. read-only, format probed (AUTO) -- and forced qcow2 when the probe
 *      said raw: get_info, map over the disk, reads at offsets taken from
 *      the map and from a hash of the input, is_allocated;
 *   2. read-only for_check: check without repair;
 *   3. read-write on a copy of the bytes: a few writes, write zeroes and
 *      discards derived from the input, flush, close; then a for_check
 *      read-write open, check -r all, and a second check.
 *
 * The backing hook hands out small RAM devices holding a raw pattern, so
 * backing chains are exercised without touching the filesystem (a name
 * containing "missing" makes the hook fail, to exercise that path too).
 *
 * Oracles, besides ASan/LSan/UBSan and libFuzzer's timeout:
 *   - every failing call leaves a message in cp_last_error() (an error
 *     without a message traps);
 *   - the read-only passes write nothing to the device;
 *   - when the image checked clean before the read-write pass and every
 *     operation of that pass succeeded, the written window reads back the
 *     same after close and reopen, and check finds no corruption (leaks
 *     are tolerated: see pass_rw).
 *
 * Bounds: virtual sizes are only touched in their first 64 MiB; map walks
 * at most MAP_STEPS extents; reads total at most 1 MiB per open.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockcore.h"
#include "common.h"
#include "qcow.h"

#define FUZZ_NAME "fuzz_qcow"
#include "fuzz.h"

#define RAM_MAX (8ull << 20)        /* device size limit (ENOSPC past it) */
#define WINDOW_LIMIT (64ull << 20)  /* only this much of the disk is used */
#define MAP_STEPS 512
#define READ_BUDGET (1u << 20)
#define READ_MAX (64u << 10)        /* one read */
#define RW_WINDOW (256u << 10)      /* read-write pass: bytes modelled */
#define BACKING_SIZE (96u << 10)
#define MAX_BACKING 8

/* Trap when a call failed without saying why: no message stored for the
 * errno it returned. */
#define EXPECT_MSG(r)                                                          \
	do {                                                                   \
		if ((r) < 0 && cp_last_errno() != (r))                         \
			FINDING("%s:%d: error %d without a message", __FILE__, \
				__LINE__, (int)(r));                           \
	} while (0)

/* FUZZ_QCOW_VERBOSE=1 in the environment: log the read-write operations
 * and the check reports (to reproduce a finding). */
static int verbose = -1;

static bool is_verbose(void)
{
	if (verbose < 0) {
		const char *v = getenv("FUZZ_QCOW_VERBOSE");
		verbose = v && *v && *v != '0';
	}
	return verbose;
}

#define LOG(...)                                                               \
	do {                                                                   \
		if (is_verbose())                                              \
			fprintf(stderr, "fuzz_qcow: " __VA_ARGS__);            \
	} while (0)

static void report_cb(void *opaque, const char *msg)
{
	LOG("check%s: %s\n", (const char *)opaque, msg);
}

/* --- deterministic randomness from the input ----------------------------- */

struct rng {
	uint64_t s;
};

static uint64_t rng_next(struct rng *g)
{
	/* splitmix64 */
	uint64_t z = (g->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rng_below(struct rng *g, uint64_t n)
{
	return n ? rng_next(g) % n : 0;
}

static uint64_t hash_input(const uint8_t *data, size_t size)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (size_t i = 0; i < size; i++) {
		h ^= data[i];
		h *= 0x100000001b3ull;
	}
	return h ^ size;
}

/* --- devices ----------------------------------------------------------------- */

static cp_bdev *ram_with(const uint8_t *data, size_t size)
{
	struct cp_ram_opts ro;
	cp_bdev *dev;
	cp_ram_opts_init(&ro);
	ro.max_size = RAM_MAX;
	int r = cp_bdev_open_ram(&ro, &dev);
	EXPECT_MSG(r);
	if (r < 0)
		return NULL;
	if (size) {
		r = cp_bdev_pwrite(dev, data, size, 0);
		EXPECT_MSG(r);
		if (r >= 0) {
			r = cp_bdev_flush(dev);
			EXPECT_MSG(r);
		}
		if (r < 0) {
			cp_bdev_close(dev);
			return NULL;
		}
	}
	return dev;
}

struct backing_pool {
	cp_bdev *devs[MAX_BACKING];
	int n;
};

static int open_backing_hook(void *opaque, const char *name, cp_bdev **out)
{
	struct backing_pool *bp = opaque;
	*out = NULL;
	if (strstr(name, "missing"))
		return cp_error(-ENOENT, "%s: no such backing file (fuzz hook)", name);
	if (bp->n >= MAX_BACKING)
		return cp_error(-EMFILE, "%s: too many backing files (fuzz hook)", name);
	static uint8_t pattern[BACKING_SIZE];
	if (!pattern[1]) {
		for (size_t i = 0; i < sizeof(pattern); i++)
			pattern[i] = (uint8_t)(i * 7 + (i >> 9) + 1);
	}
	cp_bdev *dev = ram_with(pattern, sizeof(pattern));
	if (!dev)
		return cp_error(-ENOMEM, "%s: cannot make backing device (fuzz hook)", name);
	bp->devs[bp->n++] = dev;
	*out = dev;
	return 0;
}

static void backing_pool_close(struct backing_pool *bp)
{
	for (int i = 0; i < bp->n; i++)
		cp_bdev_close(bp->devs[i]);
	bp->n = 0;
}

static void open_opts(struct cp_open_opts *o, struct backing_pool *bp,
		      enum cp_fmt fmt, bool readonly, bool for_check,
		      uint64_t seed)
{
	cp_open_opts_init(o);
	o->format = fmt;
	o->readonly = readonly;
	o->for_check = for_check;
	o->aio = CP_AIO_THREADS;
	/* small caches so that eviction and write-back paths run */
	o->l2_cache_size = (seed & 1) ? 4096 : 16384;
	o->l2_cache_entry_size = (seed & 2) ? 512 : 0;
	o->refcount_cache_size = 64u << 10;
	o->max_chain_depth = 4;
	o->open_backing = open_backing_hook;
	o->open_backing_opaque = bp;
}

static int image_open(cp_bdev *dev, const struct cp_open_opts *o, cp_image **img)
{
	int r = cp_image_open_dev(dev, "fuzz.img", o, img);
	EXPECT_MSG(r);
	if (r < 0)
		*img = NULL;
	return r;
}

static int image_close(cp_image *img)
{
	int r = cp_image_close(img);
	EXPECT_MSG(r);
	return r;
}

/* --- read-only exercise ------------------------------------------------------ */

static uint64_t usable_size(cp_image *img)
{
	uint64_t s = cp_image_size(img);
	return s < WINDOW_LIMIT ? s : WINDOW_LIMIT;
}

static void do_read(cp_image *img, uint8_t *buf, uint64_t off, uint64_t len,
		    uint64_t *budget)
{
	uint64_t usable = usable_size(img);
	if (off >= usable || !*budget)
		return;
	if (len > READ_MAX)
		len = READ_MAX;
	if (len > usable - off)
		len = usable - off;
	if (len > *budget)
		len = *budget;
	*budget -= len;
	int r = cp_image_pread(img, buf, len, off);
	EXPECT_MSG(r);
}

static void exercise_ro(cp_image *img, struct rng *g, uint8_t *buf)
{
	struct cp_image_info info;
	int r;

	r = cp_image_get_info(img, &info);
	EXPECT_MSG(r);
	(void)cp_image_filename(img);
	(void)cp_image_format(img);
	(void)cp_image_cluster_size(img);
	(void)cp_image_readonly(img);
	for (cp_image *b = cp_image_backing(img); b; b = cp_image_backing(b))
		(void)cp_image_size(b);

	uint64_t usable = usable_size(img);
	uint64_t budget = READ_BUDGET;
	uint64_t data_at[16];
	unsigned ndata = 0;

	/* map: the whole disk, bounded in steps; remember some data runs */
	uint64_t off = 0, size = cp_image_size(img);
	for (unsigned step = 0; step < MAP_STEPS && off < size; step++) {
		struct cp_extent ext;
		r = cp_image_map(img, off, size - off, &ext);
		EXPECT_MSG(r);
		if (r < 0) {
			/* skip the damaged cluster and go on */
			uint32_t cs = cp_image_cluster_size(img);
			off = (off / cs + 1) * (uint64_t)cs;
			continue;
		}
		if (ext.start != off || ext.length == 0 || ext.length > size - off)
			FINDING("map at %llu returned start %llu length %llu (disk %llu)",
				(unsigned long long)off, (unsigned long long)ext.start,
				(unsigned long long)ext.length, (unsigned long long)size);
		if (ext.data && ndata < 16 && off < usable)
			data_at[ndata++] = off;
		off += ext.length;
	}

	/* allocation in this layer at a few places */
	for (int i = 0; i < 4 && usable; i++) {
		uint64_t pnum = 0, o = rng_below(g, usable);
		r = cp_image_is_allocated(img, o, usable - o, &pnum);
		EXPECT_MSG(r);
		if (r >= 0 && (pnum == 0 || pnum > usable - o))
			FINDING("is_allocated at %llu: pnum %llu",
				(unsigned long long)o, (unsigned long long)pnum);
	}

	/* reads: the data runs found, then offsets from the input */
	for (unsigned i = 0; i < ndata; i++)
		do_read(img, buf, data_at[i], 1 + rng_below(g, 16384), &budget);
	do_read(img, buf, 0, 4096, &budget);
	if (usable > 1)
		do_read(img, buf, usable - 1, 1, &budget);
	for (int i = 0; i < 8 && usable; i++) {
		uint64_t o = rng_below(g, usable);
		if (rng_next(g) & 1)
			o &= ~511ull;
		do_read(img, buf, o, 1 + rng_below(g, (rng_next(g) & 3) ? 4096 : READ_MAX),
			&budget);
	}
	/* and one past the end (must fail with a message) */
	r = cp_image_pread(img, buf, 1, size);
	if (r >= 0)
		FINDING("read past the end of a %llu-byte disk succeeded",
			(unsigned long long)size);
	EXPECT_MSG(r);
}

static void pass_ro(cp_bdev *dev, enum cp_fmt fmt, uint64_t seed, uint8_t *buf,
		    enum cp_fmt *opened_as)
{
	struct backing_pool bp = { .n = 0 };
	struct cp_open_opts o;
	cp_image *img;
	struct rng g = { seed };
	open_opts(&o, &bp, fmt, true, false, seed);
	if (image_open(dev, &o, &img) >= 0) {
		if (opened_as)
			*opened_as = cp_image_format(img);
		exercise_ro(img, &g, buf);
		image_close(img);
	}
	backing_pool_close(&bp);
}

/* Check without repair; returns 1 when the image checks clean, 0 when it
 * does not (or cannot be checked). */
static int pass_check_ro(cp_bdev *dev, uint64_t seed)
{
	struct backing_pool bp = { .n = 0 };
	struct cp_open_opts o;
	cp_image *img;
	int clean = 0;
	open_opts(&o, &bp, CP_FMT_QCOW2, true, true, seed);
	if (image_open(dev, &o, &img) >= 0) {
		struct cp_check_result res;
		int r = cp_image_check(img, 0, &res, report_cb, " (read-only)");
		EXPECT_MSG(r);
		LOG("read-only check -> %d: %llu corruptions, %llu leaks, %llu check errors %s\n", r,
		    (unsigned long long)res.corruptions, (unsigned long long)res.leaks,
		    (unsigned long long)res.check_errors, r < 0 ? cp_last_error() : "");
		struct cp_image_info info;
		if (r >= 0 && cp_image_get_info(img, &info) == 0)
			clean = !res.corruptions && !res.leaks && !res.check_errors &&
				!info.corrupt && !info.dirty && !info.nb_snapshots;
		image_close(img);
	}
	backing_pool_close(&bp);
	return clean;
}

/* --- read-write exercise ------------------------------------------------------ */

struct rw_model {
	uint64_t base, len; /* window of the disk modelled in shadow */
	uint8_t *shadow;
	bool valid;         /* shadow known to match the disk */
};

static void rw_ops(cp_image *img, struct rng *g, struct rw_model *m, bool clean,
		   bool *all_ok)
{
	uint64_t usable = usable_size(img);
	uint32_t cs = cp_image_cluster_size(img);
	uint8_t *buf = malloc(RW_WINDOW);
	int r;
	if (!buf)
		return;
	if (!usable || !cs) {
		free(buf);
		return;
	}
	m->base = rng_below(g, usable) & ~((uint64_t)cs - 1);
	m->len = usable - m->base < RW_WINDOW ? usable - m->base : RW_WINDOW;
	r = cp_image_pread(img, m->shadow, m->len, m->base);
	EXPECT_MSG(r);
	m->valid = r >= 0;

	unsigned nops = 2 + (unsigned)rng_below(g, 6);
	for (unsigned i = 0; i < nops; i++) {
		uint64_t o = rng_below(g, m->len);
		uint64_t l = 1 + rng_below(g, (rng_next(g) & 1) ? 4 * (uint64_t)cs : 1024);
		if (rng_next(g) & 1)
			o &= ~((uint64_t)cs - 1);
		if (l > m->len - o)
			l = m->len - o;
		unsigned kind = (unsigned)rng_below(g, 4);
		cp_clear_error();
		switch (kind) {
		case 0:
		case 1: {
			uint8_t pat = (uint8_t)(0x40 + i);
			memset(buf, pat, l);
			r = cp_image_pwrite(img, buf, l, m->base + o);
			if (r >= 0)
				memset(m->shadow + o, pat, l);
			break;
		}
		case 2:
			r = cp_image_write_zeroes(img, m->base + o, l,
						  (rng_next(g) & 1) ? CP_ZERO_MAY_UNMAP : 0);
			if (r >= 0)
				memset(m->shadow + o, 0, l);
			break;
		default:
			/* what a discard leaves is the engine's choice: re-read */
			r = cp_image_discard(img, m->base + o, l);
			if (r >= 0) {
				r = cp_image_pread(img, m->shadow + o, l, m->base + o);
			}
			break;
		}
		EXPECT_MSG(r);
		LOG("%s %llu +%llu -> %d %s\n",
		    kind < 2 ? "write" : kind == 2 ? "write_zeroes" : "discard",
		    (unsigned long long)(m->base + o), (unsigned long long)l, r,
		    r < 0 ? cp_last_error() : "");
		if (r < 0) {
			*all_ok = false;
			m->valid = false;
		}
	}
	/* what we just wrote reads back (before any flush).  Only for images
	 * that checked clean: in a damaged one, data clusters may share host
	 * clusters with each other or with metadata, and then legitimately
	 * change under the writes. */
	if (clean && *all_ok && m->valid) {
		r = cp_image_pread(img, buf, m->len, m->base);
		EXPECT_MSG(r);
		if (r < 0)
			*all_ok = false;
		else if (memcmp(buf, m->shadow, m->len))
			FINDING("read-back before flush differs from what was written");
	}
	r = cp_image_flush(img);
	EXPECT_MSG(r);
	if (r < 0)
		*all_ok = false;
	free(buf);
}

static void pass_rw(const uint8_t *data, size_t size, uint64_t seed, bool clean)
{
	cp_bdev *dev = ram_with(data, size);
	if (!dev)
		return;
	struct backing_pool bp = { .n = 0 };
	struct cp_open_opts o;
	struct rw_model m = { 0 };
	struct rng g = { seed ^ 0x5bd1e995ull };
	cp_image *img;
	bool all_ok = true, opened = false;
	enum cp_fmt fmt = CP_FMT_AUTO;

	m.shadow = malloc(RW_WINDOW);
	if (!m.shadow)
		goto out;
	open_opts(&o, &bp, CP_FMT_AUTO, false, false, seed);
	if (image_open(dev, &o, &img) >= 0) {
		opened = true;
		fmt = cp_image_format(img);
		struct cp_image_info info;
		if (is_verbose() && cp_image_get_info(img, &info) == 0)
			LOG("read-write open: %s v%d size %llu cluster %u refcount_bits %u extl2 %d lazy %d backing '%s' (%s) clean %d\n",
			    cp_fmt_name(info.format), info.qcow_version,
			    (unsigned long long)info.virtual_size, info.cluster_size,
			    info.refcount_bits, info.extended_l2, info.lazy_refcounts,
			    info.backing_file, info.backing_format, clean);
		rw_ops(img, &g, &m, clean, &all_ok);
		if (image_close(img) < 0)
			all_ok = false;
	}
	backing_pool_close(&bp);
	if (!opened || fmt != CP_FMT_QCOW2)
		goto out;

	/* FUZZ_QCOW_PAD=1: grow the device by 1 MiB of zeroes after the
	 * session.  Hides one known finding (a table allocated past the end
	 * of the file and never written; see regress-v2-l2-table-never-
	 * written.qcow2) so that long runs can look past it. */
	const char *pad = getenv("FUZZ_QCOW_PAD");
	if (pad && *pad && *pad != '0') {
		int e = cp_bdev_truncate(dev, cp_bdev_size(dev) + (1u << 20));
		EXPECT_MSG(e);
	}

	/* FUZZ_QCOW_SAVE=path: keep the image as the read-write session left
	 * it, to look at with other tools */
	const char *save = getenv("FUZZ_QCOW_SAVE");
	if (save && *save && cp_ram_save(dev, save) < 0)
		fprintf(stderr, "fuzz_qcow: %s\n", cp_last_error());

	/* reopen for check/repair */
	open_opts(&o, &bp, CP_FMT_QCOW2, false, true, seed);
	if (image_open(dev, &o, &img) < 0) {
		if (clean && all_ok)
			FINDING("image does not reopen after a clean read-write session: %s",
				cp_last_error());
		goto out_bp;
	}
	struct cp_check_result res;
	if (clean && all_ok) {
		int r = cp_image_check(img, 0, &res, report_cb, " (after writes)");
		EXPECT_MSG(r);
		/* Leaks are not a finding here: refcounts of clusters past
		 * the end of a (truncated) file are invisible to check, and
		 * become leaks once the file grows over them. */
		if (r >= 0 && (res.corruptions || res.check_errors))
			FINDING("clean image no longer checks clean after writes: %llu corruptions, %llu check errors (%llu leaks)",
				(unsigned long long)res.corruptions,
				(unsigned long long)res.check_errors,
				(unsigned long long)res.leaks);
		if (m.valid && m.len) {
			uint8_t *buf = malloc(m.len);
			if (buf) {
				r = cp_image_pread(img, buf, m.len, m.base);
				EXPECT_MSG(r);
				if (r >= 0 && memcmp(buf, m.shadow, m.len))
					FINDING("data written at %llu (+%llu) differs after close and reopen",
						(unsigned long long)m.base,
						(unsigned long long)m.len);
				free(buf);
			}
		}
	}
	int r = cp_image_check(img, CP_CHECK_REPAIR_ALL, &res, report_cb, " -r all");
	EXPECT_MSG(r);
	if (r >= 0) {
		r = cp_image_check(img, 0, &res, NULL, NULL);
		EXPECT_MSG(r);
		/* a few more writes on the repaired image */
		if (r >= 0 && !cp_image_readonly(img) && cp_image_size(img)) {
			uint8_t b[1024];
			memset(b, 0x77, sizeof(b));
			uint64_t off = rng_below(&g, usable_size(img));
			uint64_t len = sizeof(b) < usable_size(img) - off
					       ? sizeof(b) : usable_size(img) - off;
			r = cp_image_pwrite(img, b, len, off);
			EXPECT_MSG(r);
			r = cp_image_flush(img);
			EXPECT_MSG(r);
		}
	}
	image_close(img);
out_bp:
	backing_pool_close(&bp);
out:
	free(m.shadow);
	cp_bdev_close(dev);
}

/* --- entry point ------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *buf;
	if (!buf) {
		buf = malloc(READ_MAX);
		if (!buf)
			abort();
	}
	uint64_t seed = hash_input(data, size);
	cp_bdev *dev = ram_with(data, size);
	if (!dev)
		return 0;
	uint64_t writes0 = cp_ram_write_count(dev);

	enum cp_fmt as = CP_FMT_AUTO;
	pass_ro(dev, CP_FMT_AUTO, seed, buf, &as);
	if (as != CP_FMT_QCOW2)
		pass_ro(dev, CP_FMT_QCOW2, seed, buf, NULL);
	int clean = as == CP_FMT_QCOW2 ? pass_check_ro(dev, seed) : 0;
	if (cp_ram_write_count(dev) != writes0)
		FINDING("read-only opens wrote to the device (%llu writes)",
			(unsigned long long)(cp_ram_write_count(dev) - writes0));
	cp_bdev_close(dev);

	pass_rw(data, size, seed, clean);
	return 0;
}
