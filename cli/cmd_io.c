/* cli/cmd_io.c - `cowpool io`: a qemu-io subset for scripts and tests.
 *
 *   cowpool io [-f fmt] [-t cache] [-n] [-i aio] [-r] -c 'CMD' ... FILE
 *
 * Each -c command runs in order; a failing command does not stop the
 * others, and the exit status is 1 if any failed (as qemu-io).  Output
 * lines match qemu-io's.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "vector.h"

#define IO_MAX_ARGS 32

struct io_ctx {
	const char *file;
	cp_image *img;
};

/* --- output ----------------------------------------------------------------
 */

/* qemu-io's timestr(): "00.12 sec" under a second, else "0:00:02.50". */
static void io_timestr(const struct timespec *t, char *buf, size_t len)
{
	double frac = (double)t->tv_nsec / 1e9;
	if (t->tv_sec == 0) {
		snprintf(buf, len, "%05.2f sec", frac);
		return;
	}
	snprintf(buf, len, "%u:%02u:%05.2f", (unsigned)(t->tv_sec / 3600),
		 (unsigned)(t->tv_sec / 60 % 60),
		 (double)(t->tv_sec % 60) + frac);
}

static void io_report(const char *op, const struct timespec *t0,
		      uint64_t offset, uint64_t count, int ops)
{
	struct timespec t1, d;
	char s1[64], s2[64], ts[64];

	clock_gettime(CLOCK_MONOTONIC, &t1);
	d.tv_sec = t1.tv_sec - t0->tv_sec;
	d.tv_nsec = t1.tv_nsec - t0->tv_nsec;
	if (d.tv_nsec < 0) {
		d.tv_sec--;
		d.tv_nsec += 1000000000L;
	}
	double secs = (double)d.tv_sec + (double)d.tv_nsec / 1e9;
	if (secs <= 0)
		secs = 1e-9;
	io_timestr(&d, ts, sizeof(ts));
	cli_cvtstr((double)count, s1, sizeof(s1));
	cli_cvtstr((double)count / secs, s2, sizeof(s2));
	printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", op,
	       count, count, offset);
	printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", s1, ops, ts, s2,
	       (double)ops / secs);
}

/* qemu-io's dump_buffer(). */
static void io_dump(const uint8_t *buf, uint64_t offset, size_t len)
{
	for (size_t i = 0; i < len; i += 16) {
		printf("%08" PRIx64 ":  ", offset + i);
		for (size_t j = 0; j < 16 && i + j < len; j++)
			printf("%02x ", buf[i + j]);
		printf(" ");
		for (size_t j = 0; j < 16 && i + j < len; j++)
			putchar(isalnum(buf[i + j]) ? buf[i + j] : '.');
		printf("\n");
	}
}

/* --- argument parsing ------------------------------------------------------
 */

static int io_parse_num(const char *what, const char *s, uint64_t *out)
{
	if (cp_parse_size(s, out) < 0 || *out > INT64_MAX) {
		cli_error("invalid %s '%s'", what, s);
		return -EINVAL;
	}
	return 0;
}

static int io_parse_pattern(const char *s, uint8_t *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 0);
	if (errno || end == s || *end || v < 0 || v > 255) {
		cli_error("%s is not a valid pattern byte", s);
		return -EINVAL;
	}
	*out = (uint8_t)v;
	return 0;
}

static int io_opt_pattern(struct cli_parser *p, const struct cli_opt *o,
			  const char *arg)
{
	return io_parse_pattern(arg, o->dst);
}
/* -P pattern (a byte) into *p, *s set when given. */
#define IO_OPT_PATTERN(p, s)                                                   \
	{.short_name = 'P',                                                    \
	 .arg = "pattern",                                                     \
	 .fn = io_opt_pattern,                                                 \
	 .dst = (p),                                                           \
	 .seen = (s)}

/* Parse the options of a command (argv[0] its name).  0 or -EINVAL. */
static int io_opts(int argc, char **argv, const struct cli_opt *opts,
		   struct cli_parser *p)
{
	*p = (struct cli_parser){.cmd = argv[0], .opts = opts, .no_help = true};
	return cli_parse(p, argc, argv) ? -EINVAL : 0;
}

/* The positionals of a command: an offset and a length. */
static int io_offlen(const struct cli_parser *p, uint64_t *off, uint64_t *len)
{
	if (p->npos != 2) {
		cli_error("%s: expecting an offset and a length", p->cmd);
		return -EINVAL;
	}
	if (io_parse_num("offset", p->pos[0], off) < 0 ||
	    io_parse_num("length", p->pos[1], len) < 0)
		return -EINVAL;
	if (*len > SIZE_MAX / 2) {
		cli_error("%s: length %" PRIu64 " is too large", p->cmd, *len);
		return -EINVAL;
	}
	return 0;
}

/* --- synchronous wait for an asynchronous request --------------------------
 */

static int io_rw(struct io_ctx *io, bool write, bool async, void *buf,
		 size_t len, uint64_t off)
{
	if (!async)
		return write ? cp_image_pwrite(io->img, buf, len, off)
			     : cp_image_pread(io->img, buf, len, off);

	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct cp_waiter w = CP_WAITER_INIT(1);
	int r = write ? cp_image_pwritev_async(io->img, &iov, 1, off,
					       cp_waiter_done, &w)
		      : cp_image_preadv_async(io->img, &iov, 1, off,
					      cp_waiter_done, &w);
	if (r < 0)
		return r;
	r = cp_waiter_wait(&w);
	if (r < 0 && cp_last_errno() != r)
		cp_error(r, "%s: %s failed: %s", io->file,
			 write ? "write" : "read", strerror(-r));
	return r;
}

/* The end of a command over [off, off + len): r < 0 printed as the error
 * on the image, else (unless quiet) io_report()'s line for op.  Returns
 * r, or 0. */
static int io_finish(const struct io_ctx *io, int r, bool quiet,
		     const char *op, const struct timespec *t0, uint64_t off,
		     uint64_t len)
{
	if (r < 0) {
		cli_error_image(io->file, r);
		return r;
	}
	if (!quiet)
		io_report(op, t0, off, len, 1);
	return 0;
}

/* --- commands --------------------------------------------------------------
 */

static int io_cmd_read(struct io_ctx *io, int argc, char **argv)
{
	bool async = !strcmp(argv[0], "aio_read");
	bool verify = false, verbose = false, quiet = false;
	uint8_t pattern = 0;
	uint64_t off, len;

	const struct cli_opt opts[] = {
	    IO_OPT_PATTERN(&pattern, &verify),
	    CLI_O_FLAG('q', NULL, &quiet, NULL),
	    CLI_O_FLAG('v', NULL, &verbose, NULL),
	    CLI_OPT_END,
	};
	struct cli_parser p;
	if (io_opts(argc, argv, opts, &p) < 0 || io_offlen(&p, &off, &len) < 0)
		return -EINVAL;

	uint8_t *buf = cp_bdev_alloc_buf(len ? len : 1);
	if (!buf) {
		cli_error("%s: out of memory", argv[0]);
		return -ENOMEM;
	}
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int r = io_rw(io, false, async, buf, len, off);
	if (r < 0) {
		cli_error_image(io->file, r);
		goto out;
	}
	if (verify) {
		for (uint64_t i = 0; i < len; i++) {
			if (buf[i] != pattern) {
				printf("Pattern verification failed at offset "
				       "%" PRIu64 ", %" PRIu64 " bytes\n",
				       off, len);
				r = -EINVAL;
				break;
			}
		}
	}
	if (quiet)
		goto out;
	if (verbose)
		io_dump(buf, off, len);
	io_report("read", &t0, off, len, 1);
out:
	cp_bdev_free_buf(buf);
	return r;
}

static int io_cmd_write(struct io_ctx *io, int argc, char **argv)
{
	bool async = !strcmp(argv[0], "aio_write");
	bool zero = false, unmap = false, quiet = false, have_pattern = false;
	uint8_t pattern = 0xcd;
	uint64_t off, len;

	const struct cli_opt opts[] = {
	    IO_OPT_PATTERN(&pattern, &have_pattern),
	    CLI_O_FLAG('q', NULL, &quiet, NULL),
	    CLI_O_FLAG('u', NULL, &unmap, NULL),
	    CLI_O_FLAG('z', NULL, &zero, NULL),
	    CLI_OPT_END,
	};
	struct cli_parser p;
	if (io_opts(argc, argv, opts, &p) < 0)
		return -EINVAL;
	if (zero && have_pattern) {
		cli_error("%s: -z and -P cannot be specified at the same time",
			  argv[0]);
		return -EINVAL;
	}
	if (unmap && !zero) {
		cli_error("%s: -u requires -z to be specified", argv[0]);
		return -EINVAL;
	}
	if (zero && async) {
		cli_error("%s: -z is not supported", argv[0]);
		return -EINVAL;
	}
	if (io_offlen(&p, &off, &len) < 0)
		return -EINVAL;

	struct timespec t0;
	int r;
	if (zero) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		r = cp_image_write_zeroes(io->img, off, len,
					  unmap ? CP_ZERO_MAY_UNMAP : 0);
	} else {
		uint8_t *buf = cp_bdev_alloc_buf(len ? len : 1);
		if (!buf) {
			cli_error("%s: out of memory", argv[0]);
			return -ENOMEM;
		}
		memset(buf, pattern, len);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		r = io_rw(io, true, async, buf, len, off);
		cp_bdev_free_buf(buf);
	}
	return io_finish(io, r, quiet, "wrote", &t0, off, len);
}

static int io_cmd_discard(struct io_ctx *io, int argc, char **argv)
{
	bool quiet = false;
	uint64_t off, len;

	const struct cli_opt opts[] = {CLI_O_FLAG('q', NULL, &quiet, NULL),
				       CLI_OPT_END};
	struct cli_parser p;
	if (io_opts(argc, argv, opts, &p) < 0 || io_offlen(&p, &off, &len) < 0)
		return -EINVAL;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int r = cp_image_discard(io->img, off, len);
	return io_finish(io, r, quiet, "discard", &t0, off, len);
}

static int io_cmd_flush(struct io_ctx *io, int argc, char **argv)
{
	if (argc != 1) {
		cli_error("%s: takes no arguments", argv[0]);
		return -EINVAL;
	}
	int r = cp_image_flush(io->img);
	if (r < 0)
		cli_error_image(io->file, r);
	return r;
}

/* qemu-io's map: runs allocated in this layer only, merged. */
static int io_cmd_map(struct io_ctx *io, int argc, char **argv)
{
	if (argc != 1) {
		cli_error("%s: takes no arguments", argv[0]);
		return -EINVAL;
	}
	uint64_t size = cp_image_size(io->img), offset = 0;
	while (offset < size) {
		uint64_t num = 0, n;
		int first = -1;
		while (offset + num < size) {
			int r = cp_image_is_allocated(io->img, offset + num,
						      size - offset - num, &n);
			if (r < 0) {
				cli_error_image(io->file, r);
				return r;
			}
			if (n == 0) {
				cli_error("%s: unexpected end of image",
					  io->file);
				return -EIO;
			}
			if (first < 0)
				first = r;
			else if (r != first)
				break;
			num += CP_MIN(n, size - offset - num);
		}
		char s1[64], s2[64];
		cli_cvtstr((double)num, s1, sizeof(s1));
		cli_cvtstr((double)offset, s2, sizeof(s2));
		printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64
		       ")\n",
		       s1, num, first ? "    allocated" : "not allocated", s2,
		       offset);
		offset += num;
	}
	return 0;
}

static int io_cmd_nop(struct io_ctx *io CP_UNUSED, int argc CP_UNUSED,
		      char **argv CP_UNUSED)
{
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(struct io_ctx *io, int argc, char **argv);
	bool writes;
} io_cmds[] = {
    {"read", io_cmd_read, false},      {"aio_read", io_cmd_read, false},
    {"write", io_cmd_write, true},     {"aio_write", io_cmd_write, true},
    {"discard", io_cmd_discard, true}, {"flush", io_cmd_flush, false},
    {"aio_flush", io_cmd_nop, false},  {"map", io_cmd_map, false},
};

/* Split line at blanks (qemu-io has no quoting) and run it. */
static int io_run(struct io_ctx *io, const char *line)
{
	char *copy = strdup(line);
	char *argv[IO_MAX_ARGS + 1];
	int argc = 0, r = -EINVAL;

	if (!copy) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	for (char *save, *tok = strtok_r(copy, " \t\n", &save); tok;
	     tok = strtok_r(NULL, " \t\n", &save)) {
		if (argc == IO_MAX_ARGS) {
			cli_error("command '%s': too many arguments", line);
			goto out;
		}
		argv[argc++] = tok;
	}
	argv[argc] = NULL;
	if (!argc) {
		r = 0;
		goto out;
	}
	for (size_t i = 0; i < CP_ARRAY_SIZE(io_cmds); i++) {
		if (strcmp(io_cmds[i].name, argv[0]))
			continue;
		if (io_cmds[i].writes && cp_image_readonly(io->img)) {
			cli_error("%s: %s: image is opened read-only", io->file,
				  argv[0]);
			goto out;
		}
		fflush(stdout);
		r = io_cmds[i].fn(io, argc, argv);
		goto out;
	}
	cli_error("command \"%s\" not found", argv[0]);
out:
	free(copy);
	return r;
}

CP_VECTOR(io_cmd_list, const char *);

static int io_opt_cmd(struct cli_parser *p, const struct cli_opt *o,
		      const char *arg)
{
	if (io_cmd_list_append(o->dst, arg) < 0) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* -n: the same as -t none (a later -t wins, and -n after -t). */
static int io_opt_nocache(struct cli_parser *p, const struct cli_opt *o,
			  const char *arg)
{
	*(enum cp_cache *)o->dst = CP_CACHE_NONE;
	return 0;
}

int cli_cmd_io(int argc, char **argv)
{
	struct cp_open_opts opts;
	io_cmd_list cmds = {0};
	int ret = 1;

	cp_open_opts_init(&opts);
	const struct cli_opt table[] = {
	    CLI_O_FN('c', "cmd", "command", io_opt_cmd, &cmds,
		     "run command (repeatable); commands:\n"
		     "  read [-P pattern] [-q] [-v] off len\n"
		     "  write [-P pattern | -z [-u]] [-q] off len\n"
		     "  aio_read, aio_write: same flags as read/write\n"
		     "  aio_flush, flush, discard off len, map"),
	    CLI_O_FN('f', "format", "fmt", cli_opt_fmt, &opts.format,
		     "image format"),
	    CLI_O_FLAG('r', "read-only", &opts.readonly, "open read-only"),
	    CLI_O_FN('t', "cache", "cache", cli_opt_cache, &opts.cache,
		     "cache mode (default writeback)"),
	    CLI_O_FN('n', "nocache", NULL, io_opt_nocache, &opts.cache,
		     "same as -t none"),
	    CLI_O_FN('i', "aio", "aio", cli_opt_aio, &opts.aio, CLI_H_AIO),
	    CLI_OPT_U(&opts.force_share),
	    CLI_OPT_END,
	};
	/* in_order: stop at the file name, so that nothing after it is
	 * taken for an option. */
	struct cli_parser p = {.cmd = "io", .opts = table, .in_order = true};
	int pr = cli_parse(&p, argc, argv);
	if (pr) {
		free(cmds.ptr);
		return pr == CLI_PARSE_HELP ? 0 : 1;
	}
	if (p.npos != 1) {
		cli_error("io: expecting one image file name");
		goto out;
	}
	if (!cmds.len) {
		cli_error("io: no command given (use -c 'command')");
		goto out;
	}

	struct io_ctx io = {.file = p.pos[0]};
	if (cli_open(io.file, &opts, &io.img) < 0)
		goto out;
	ret = 0;
	for (size_t i = 0; i < cmds.len; i++) {
		if (io_run(&io, cmds.ptr[i]) < 0)
			ret = 1;
	}
	if (cli_close(io.img) < 0)
		ret = 1;
out:
	free(cmds.ptr);
	return ret;
}
