/* cli/cmd_bench.c - cowpool bench: qemu-img bench's workload and flags,
 * plus --random offsets and a --output=json result with IOPS, MB/s,
 * latency percentiles and CPU seconds.
 *
 * `depth` requests are kept in flight with the async API: each completion
 * callback records its latency and submits the next request itself, the
 * way qemu-img bench drives its block backend.
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

struct bench;

struct slot {
	struct bench *b;
	struct iovec iov;
	uint64_t t0_ns;
	uint64_t op; /* index of the request in flight */
};

struct bench {
	cp_image *img;
	bool write, random;
	uint64_t count, bufsize, step, offset, image_size;
	uint64_t batch_end;   /* requests with index < batch_end may start */
	atomic_uint_fast64_t next;
	uint64_t rng;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned idle;        /* slots with nothing in flight */
	unsigned depth;
	int err;
	uint32_t *lat_us;     /* per request */
};

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t op_offset(struct bench *b, uint64_t i)
{
	if (b->image_size <= b->bufsize)
		return 0;
	uint64_t span = b->image_size - b->bufsize;
	if (b->random) {
		/* splitmix64 of the request index: reproducible, no shared state */
		uint64_t z = b->rng + i * 0x9e3779b97f4a7c15ull;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		uint64_t slots = span / b->bufsize + 1;
		return (z % slots) * b->bufsize;
	}
	/* qemu-img bench: advance by step, wrap within the image */
	__uint128_t o = (__uint128_t)b->offset + (__uint128_t)i * b->step;
	return (uint64_t)(o % span);
}

static void slot_cb(void *opaque, int ret);

/* Start the next request on slot s, or mark it idle. */
static void slot_start(struct slot *s)
{
	struct bench *b = s->b;
	for (;;) {
		uint64_t i = atomic_fetch_add(&b->next, 1);
		pthread_mutex_lock(&b->lock);
		bool go = i < b->batch_end && !b->err;
		if (!go) {
			b->idle++;
			pthread_cond_broadcast(&b->cond);
			pthread_mutex_unlock(&b->lock);
			return;
		}
		pthread_mutex_unlock(&b->lock);
		s->op = i;
		s->t0_ns = now_ns();
		uint64_t off = op_offset(b, i);
		int r = b->write ? cp_image_pwritev_async(b->img, &s->iov, 1, off, slot_cb, s)
				 : cp_image_preadv_async(b->img, &s->iov, 1, off, slot_cb, s);
		if (r == 0)
			return;
		pthread_mutex_lock(&b->lock);
		if (!b->err)
			b->err = r;
		pthread_mutex_unlock(&b->lock);
	}
}

static void slot_cb(void *opaque, int ret)
{
	struct slot *s = opaque;
	struct bench *b = s->b;
	uint64_t us = (now_ns() - s->t0_ns) / 1000;
	b->lat_us[s->op] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	if (ret < 0) {
		pthread_mutex_lock(&b->lock);
		if (!b->err)
			b->err = ret;
		pthread_mutex_unlock(&b->lock);
	}
	slot_start(s);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* arg as a size (cli_parse_size(), what names it) into *v, from min to
 * max; else "<cmd>: invalid <name> '<arg>'<hint>". */
static int bench_size_in(struct cli_parser *p, const char *arg, uint64_t *v,
			 const char *what, const char *name, const char *hint,
			 uint64_t min, uint64_t max)
{
	if (cli_parse_size(what, arg, v) < 0)
		return -EINVAL;
	if (*v < min || *v > max) {
		cli_error("%s: invalid %s '%s'%s", p->cmd, name, arg, hint);
		return -EINVAL;
	}
	return 0;
}

static int bench_opt_count(struct cli_parser *p, const struct cli_opt *o,
			   const char *arg)
{
	return bench_size_in(p, arg, o->dst, "count", "request count", "", 1,
			     UINT64_MAX);
}

static int bench_opt_depth(struct cli_parser *p, const struct cli_opt *o,
			   const char *arg)
{
	return bench_size_in(p, arg, o->dst, "depth", "queue depth",
			     " (1..4096)", 1, 4096);
}

static int bench_opt_bufsize(struct cli_parser *p, const struct cli_opt *o,
			     const char *arg)
{
	return bench_size_in(p, arg, o->dst, "buffer size", "buffer size", "",
			     1, 64u << 20);
}

static int bench_opt_pattern(struct cli_parser *p, const struct cli_opt *o,
			     const char *arg)
{
	uint64_t v;
	if (cli_parse_size("pattern", arg, &v) < 0 || v > 255) {
		cli_error("%s: invalid pattern byte '%s'", p->cmd, arg);
		return -EINVAL;
	}
	*(int *)o->dst = (int)v;
	return 0;
}

int cli_cmd_bench(int argc, char **argv)
{
	struct cp_open_opts opts;
	cp_open_opts_init(&opts);
	opts.readonly = true;
	uint64_t count = 75000, depth = 64, bufsize = 4096, step = 0, offset = 0;
	uint64_t flush_interval = 0;
	int pattern = 0xa5;
	bool write = false, quiet = false, json = false, random = false;
	bool native = false, cache_set = false;
	const struct cli_opt table[] = {
	    CLI_O_FN('c', NULL, "count", bench_opt_count, &count,
		     "number of requests (default 75000)"),
	    CLI_O_FN('d', NULL, "depth", bench_opt_depth, &depth,
		     "requests in flight (default 64)"),
	    CLI_OPT_F(&opts.format, "image format"),
	    CLI_O_FN('i', NULL, "aio", cli_opt_aio, &opts.aio,
		     "io_uring (default), native or threads"),
	    CLI_O_FLAG('n', NULL, &native,
		       "native AIO (implies -t none unless -t is given)"),
	    CLI_O_SIZE('o', NULL, "offset", "offset", &offset,
		       "first offset (default 0)"),
	    CLI_O_FN('s', NULL, "size", bench_opt_bufsize, &bufsize,
		     "request size (default 4k)"),
	    CLI_O_SIZE('S', NULL, "step", "step size", &step,
		       "offset step (default: the request size)"),
	    {.short_name = 't',
	     .arg = "cache",
	     .fn = cli_opt_cache,
	     .dst = &opts.cache,
	     .seen = &cache_set,
	     .help = "cache mode (default writeback)"},
	    CLI_O_FLAG('w', NULL, &write, "write instead of read"),
	    CLI_O_FN(0, "pattern", "byte", bench_opt_pattern, &pattern,
		     "byte written by -w (default 0xa5)"),
	    CLI_O_SIZE(0, "flush-interval", "n", "flush interval",
		       &flush_interval,
		       "flush after every n requests (with -w)"),
	    CLI_O_NOP(0, "no-drain",
		      "accepted; flushes always wait for the batch"),
	    CLI_O_FLAG(0, "random", &random,
		       "random offsets (request-size aligned)"),
	    CLI_OPT_OUTPUT(&json, "json",
			   "one JSON object: ops, seconds, iops, mbps,\n"
			   "p50_us, p99_us, cpu_seconds"),
	    CLI_OPT_QUIET(&quiet),
	    CLI_OPT_U(&opts.force_share),
	    CLI_OPT_END,
	};
	struct cli_parser p = {.cmd = "bench", .opts = table};
	int pr = cli_parse(&p, argc, argv);
	if (pr)
		return pr == CLI_PARSE_HELP ? 0 : 1;
	if (write)
		opts.readonly = false;
	if (p.npos != 1)
		return cli_error("bench: expecting one image file name");
	if (native) {
		opts.aio = CP_AIO_NATIVE;
		if (!cache_set)
			opts.cache = CP_CACHE_NONE;
	}
	if (flush_interval && !write)
		return cli_error("bench: --flush-interval is only available in write tests");
	if (!step)
		step = bufsize;
	const char *file = p.pos[0];
	cp_image *img;
	if (cli_open(file, &opts, &img) < 0)
		return 1;
	struct bench b;
	memset(&b, 0, sizeof(b));
	b.img = img;
	b.write = write;
	b.random = random;
	b.count = count;
	b.bufsize = bufsize;
	b.step = step;
	b.offset = offset;
	b.image_size = cp_image_size(img);
	b.rng = 0x243f6a8885a308d3ull;
	b.depth = (unsigned)CP_MIN(depth, count);
	pthread_mutex_init(&b.lock, NULL);
	pthread_cond_init(&b.cond, NULL);
	b.lat_us = calloc(count, sizeof(uint32_t));
	struct slot *slots = calloc(b.depth, sizeof(*slots));
	uint8_t *bufs = cp_bdev_alloc_buf((size_t)b.depth * bufsize);
	int ret = 1;
	if (!b.lat_us || !slots || !bufs) {
		cli_error("bench: out of memory");
		goto out;
	}
	if (bufsize > b.image_size) {
		cli_error("%s: buffer size %" PRIu64 " is larger than the disk", file, bufsize);
		goto out;
	}
	memset(bufs, pattern, (size_t)b.depth * bufsize);
	for (unsigned i = 0; i < b.depth; i++) {
		slots[i].b = &b;
		slots[i].iov.iov_base = bufs + (size_t)i * bufsize;
		slots[i].iov.iov_len = bufsize;
	}
	if (!quiet && !json)
		printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %u in parallel (starting at offset %" PRIu64 ", step size %" PRIu64 ")\n",
		       count, write ? "write" : "read", bufsize, b.depth, offset,
		       random ? (uint64_t)0 : step);
	double cpu0 = cpu_seconds();
	uint64_t t0 = now_ns();
	uint64_t batch = flush_interval ? flush_interval : count;
	for (uint64_t start = 0; start < count && !b.err; start += batch) {
		pthread_mutex_lock(&b.lock);
		b.batch_end = CP_MIN(count, start + batch);
		b.idle = 0;
		pthread_mutex_unlock(&b.lock);
		atomic_store(&b.next, start);
		unsigned n = (unsigned)CP_MIN((uint64_t)b.depth, b.batch_end - start);
		pthread_mutex_lock(&b.lock);
		b.idle = b.depth - n;
		pthread_mutex_unlock(&b.lock);
		for (unsigned i = 0; i < n; i++)
			slot_start(&slots[i]);
		pthread_mutex_lock(&b.lock);
		while (b.idle < b.depth)
			pthread_cond_wait(&b.cond, &b.lock);
		pthread_mutex_unlock(&b.lock);
		if (flush_interval && !b.err) {
			int r = cp_image_flush(img);
			if (r < 0)
				b.err = r;
		}
	}
	double secs = (double)(now_ns() - t0) / 1e9;
	double cpu = cpu_seconds() - cpu0;
	if (b.err) {
		cli_error_image(file, b.err);
		goto out;
	}
	qsort(b.lat_us, count, sizeof(uint32_t), cmp_u32);
	uint32_t p50 = b.lat_us[count / 2];
	uint32_t p99 = b.lat_us[CP_MIN(count - 1, count * 99 / 100)];
	double mbps = (double)count * (double)bufsize / secs / 1e6;
	if (json) {
		printf("{\"ops\": %" PRIu64 ", \"seconds\": %.6f, \"iops\": %.1f, \"mbps\": %.2f, "
		       "\"p50_us\": %u, \"p99_us\": %u, \"cpu_seconds\": %.6f, "
		       "\"bytes\": %" PRIu64 ", \"depth\": %u, \"write\": %s, \"random\": %s}\n",
		       count, secs, (double)count / secs, mbps, p50, p99, cpu,
		       count * bufsize, b.depth, write ? "true" : "false",
		       random ? "true" : "false");
	} else if (!quiet) {
		printf("Run completed in %.3f seconds.\n", secs);
	}
	ret = 0;
out:
	if (cli_close(img) < 0)
		ret = 1;
	free(b.lat_us);
	free(slots);
	cp_bdev_free_buf(bufs);
	return ret;
}
