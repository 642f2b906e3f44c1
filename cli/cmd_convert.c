/* cli/cmd_convert.c - `cowpool convert`: copy an image (through its backing
 * chain) into a new raw or qcow2 image.
 *
 * The source is walked with its allocation map: whole units of max(-S,
 * target cluster size), aligned in the image, that read as zeroes are
 * skipped (a new target already reads as zeroes); the rest is read in 2 MiB
 * chunks and written in runs, leaving every such unit that holds only
 * zeroes unwritten.  With -B the target has a backing file
 * assumed to hold the source's backing content, so only what the source's
 * top layer allocates is copied, zeroes included.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CONVERT_CHUNK (2u << 20)
#define CONVERT_MAX_SPARSE (16u << 20)

struct convert_state {
	const char *src_file, *dst_file;
	cp_image *src, *dst;
	uint64_t size;
	uint64_t min_sparse;	 /* 0: write everything */
	uint64_t align;		 /* max(-S, target cluster size) */
	bool target_has_backing; /* -B: copy the source's top layer only */
	bool target_is_zero; /* the target reads as zeroes before we start */
	bool progress;
	double last_pct;
	uint8_t *buf;
};

static void convert_progress(struct convert_state *s, uint64_t done, bool force)
{
	if (!s->progress)
		return;
	double pct = s->size ? (double)done * 100.0 / (double)s->size : 100.0;
	if (!force && pct - s->last_pct < 1.0)
		return;
	s->last_pct = pct;
	printf("    (%3.2f/100%%)\r", pct);
	fflush(stdout);
}

static int convert_write(struct convert_state *s, const void *buf,
			 uint64_t offset, size_t len)
{
	cp_clear_error();
	int r = cp_image_pwrite(s->dst, buf, len, offset);
	if (r < 0)
		cli_error_image(s->dst_file, r);
	return r;
}

static int convert_zero(struct convert_state *s, uint64_t offset, uint64_t len)
{
	if (s->target_is_zero && !s->target_has_backing)
		return 0;
	cp_clear_error();
	int r = cp_image_write_zeroes(
	    s->dst, offset, len, s->target_has_backing ? 0 : CP_ZERO_MAY_UNMAP);
	if (r < 0)
		cli_error_image(s->dst_file, r);
	return r;
}

/* Copy [offset, offset+len) of data, at most CONVERT_CHUNK bytes. */
static int convert_chunk(struct convert_state *s, uint64_t offset, size_t len)
{
	cp_clear_error();
	int r = cp_image_pread(s->src, s->buf, len, offset);
	if (r < 0) {
		cli_error_image(s->src_file, r);
		return r;
	}
	if (!s->min_sparse)
		return convert_write(s, s->buf, offset, len);

	/* Pieces are units of max(-S, target cluster size) aligned in the
	 * image: a zero piece then maps to whole target clusters, and a
	 * cluster with some data is written whole. */
	size_t pos = 0;
	while (pos < len) {
		uint64_t at = offset + pos;
		size_t piece =
		    (size_t)CP_MIN(len - pos, s->align - at % s->align);
		bool zero = cp_is_zero(s->buf + pos, piece);
		size_t run = piece;
		while (pos + run < len) {
			size_t next = (size_t)CP_MIN(len - pos - run, s->align);
			if (cp_is_zero(s->buf + pos + run, next) != zero)
				break;
			run += next;
		}
		if (zero)
			r = convert_zero(s, at, run);
		else
			r = convert_write(s, s->buf + pos, at, run);
		if (r < 0)
			return r;
		pos += run;
	}
	return 0;
}

static int convert_run(struct convert_state *s)
{
	uint64_t offset = 0;
	convert_progress(s, 0, true);
	while (offset < s->size) {
		uint64_t len;
		bool zero;
		int r;

		if (s->target_has_backing) {
			/* Only what the top layer allocates; the rest comes
			 * from the target's backing file. */
			cp_clear_error();
			r = cp_image_is_allocated(s->src, offset,
						  s->size - offset, &len);
			if (r < 0) {
				cli_error_image(s->src_file, r);
				return r;
			}
			len = CP_MIN(len, s->size - offset);
			if (r == 0) {
				offset += len;
				convert_progress(s, offset, false);
				continue;
			}
		} else {
			len = s->size - offset;
		}

		struct cp_extent e;
		cp_clear_error();
		r = cp_image_map(s->src, offset, len, &e);
		if (r < 0) {
			cli_error_image(s->src_file, r);
			return r;
		}
		if (!e.length) {
			cli_error("%s: allocation map returned an empty extent "
				  "at offset %" PRIu64,
				  s->src_file, offset);
			return -EIO;
		}
		len = CP_MIN(e.length, len);
		zero = e.zero && s->min_sparse;

		if (zero && !s->target_has_backing) {
			/* Leave whole aligned units unwritten; a partial unit
			 * at either end joins its data neighbour, so that the
			 * target is written in whole clusters (as qemu-img
			 * does). */
			uint64_t zend = offset + len;
			if (zend != s->size)
				zend = CP_ALIGN_DOWN(zend, s->align);
			if (offset % s->align || zend <= offset) {
				zero = false;
				len = CP_MIN(CP_ALIGN_UP(offset + 1, s->align),
					     s->size) -
				      offset;
			} else {
				len = zend - offset;
			}
		} else if (!zero && s->align && !s->target_has_backing) {
			/* Extend data to the next unit boundary, so a zero
			 * tail shorter than a unit is written with it. */
			len = CP_MIN(CP_ALIGN_UP(offset + len, s->align),
				     s->size) -
			      offset;
		}
		if (zero) {
			r = convert_zero(s, offset, len);
			if (r < 0)
				return r;
			offset += len;
			convert_progress(s, offset, false);
			continue;
		}
		uint64_t end = offset + len;
		while (offset < end) {
			size_t n = (size_t)CP_MIN(end - offset, CONVERT_CHUNK);
			r = convert_chunk(s, offset, n);
			if (r < 0)
				return r;
			offset += n;
			convert_progress(s, offset, false);
		}
	}
	convert_progress(s, s->size, true);
	return 0;
}

int cli_cmd_convert(int argc, char **argv)
{
	enum {
		OPT_OBJECT = 256,
		OPT_IOPTS,
		OPT_TIOPTS,
		OPT_TZERO,
		OPT_BITMAPS,
		OPT_SALVAGE
	};
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"force-share", no_argument, NULL, 'U'},
	    {"target-is-zero", no_argument, NULL, OPT_TZERO},
	    {"object", required_argument, NULL, OPT_OBJECT},
	    {"image-opts", no_argument, NULL, OPT_IOPTS},
	    {"target-image-opts", no_argument, NULL, OPT_TIOPTS},
	    {"bitmaps", no_argument, NULL, OPT_BITMAPS},
	    {"salvage", no_argument, NULL, OPT_SALVAGE},
	    {NULL, 0, NULL, 0},
	};
	struct convert_state s = {.min_sparse = 4096};
	struct cp_open_opts so, to;
	enum cp_fmt out_fmt = CP_FMT_RAW;
	const char *backing = NULL, *backing_fmt = NULL;
	char *optstr = NULL;
	bool quiet = false, no_create = false, target_is_zero = false;
	int c, ret = 1;
	struct cli_create_args ca;
	bool ca_init = false;

	cp_open_opts_init(&so);
	cp_open_opts_init(&to);
	so.readonly = true;
	to.cache = CP_CACHE_UNSAFE; /* qemu-img convert's default */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:O:B:F:o:t:T:i:S:m:l:r:UCcpqnW",
				longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			free(optstr);
			return cli_help("convert");
		case 'f':
			if (cli_parse_fmt(optarg, &so.format) < 0)
				goto out;
			break;
		case 'O':
			if (cli_parse_fmt(optarg, &out_fmt) < 0)
				goto out;
			break;
		case 'B':
			backing = optarg;
			break;
		case 'F':
			backing_fmt = optarg;
			break;
		case 'o':
			if (cli_optlist_append(&optstr, optarg) < 0) {
				cli_error("out of memory");
				goto out;
			}
			break;
		case 't':
			if (cli_parse_cache(optarg, &to.cache) < 0)
				goto out;
			break;
		case 'T':
			if (cli_parse_cache(optarg, &so.cache) < 0)
				goto out;
			break;
		case 'i':
			if (cli_parse_aio(optarg, &so.aio) < 0)
				goto out;
			to.aio = so.aio;
			break;
		case 'S':
			if (cp_parse_size(optarg, &s.min_sparse) < 0 ||
			    s.min_sparse % 512 ||
			    s.min_sparse > CONVERT_MAX_SPARSE) {
				cli_error("convert: invalid sparse size '%s': "
					  "valid sizes are multiples of 512 up "
					  "to 16 MiB, 0 disables sparse "
					  "detection",
					  optarg);
				goto out;
			}
			break;
		case 'm': {
			char *end;
			long m = strtol(optarg, &end, 10);
			if (*end || m < 1 || m > 16) {
				cli_error("convert: invalid -m '%s': expected "
					  "1 to 16",
					  optarg);
				goto out;
			}
			break;
		}
		case 'W':
		case 'U':
		case 'C':
			break;
		case 'p':
			s.progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'n':
			no_create = true;
			break;
		case OPT_TZERO:
			target_is_zero = true;
			break;
		case 'c':
			cli_error("convert: -c (compressed target) is not "
				  "supported");
			goto out;
		case 'l':
			cli_error("convert: -l (internal snapshots) is not "
				  "supported");
			goto out;
		case 'r':
			cli_error("convert: -r (rate limit) is not supported");
			goto out;
		case OPT_OBJECT:
		case OPT_IOPTS:
		case OPT_TIOPTS:
		case OPT_BITMAPS:
		case OPT_SALVAGE:
			cli_error("convert: %s is not supported",
				  argv[optind - 1]);
			goto out;
		default:
			free(optstr);
			return cli_bad_option("convert", argv, c);
		}
	}
	if (quiet)
		s.progress = false;

	if (optstr && cli_create_opts_want_help(optstr)) {
		cli_create_opts_help(out_fmt);
		free(optstr);
		return 0;
	}
	if (argc - optind > 2) {
		cli_error("convert: only one source image is supported");
		goto out;
	}
	if (argc - optind != 2) {
		cli_error("convert: expecting a source and a target file name");
		goto out;
	}
	s.src_file = argv[optind];
	s.dst_file = argv[optind + 1];
	if (target_is_zero && !no_create) {
		cli_error("convert: --target-is-zero requires -n");
		goto out;
	}
	if (no_create && (optstr || backing)) {
		cli_error("convert: -o and -B cannot be used with -n");
		goto out;
	}

	if (cli_open(s.src_file, &so, &s.src) < 0)
		goto out;
	s.size = cp_image_size(s.src);

	if (!no_create) {
		cli_create_args_init(&ca, out_fmt);
		ca_init = true;
		if (optstr &&
		    cli_create_opts_parse(&ca, s.dst_file, optstr) < 0)
			goto out;
		if (backing)
			ca.opts.backing_file = backing;
		if (backing_fmt)
			ca.opts.backing_format = backing_fmt;
		if (ca.opts.backing_file && !backing)
			backing = ca.opts.backing_file;
		ca.opts.virtual_size = s.size;
		ca.size_set = true;
		ca.opts.cache = to.cache;
		ca.opts.aio = to.aio;
		/* qemu-img convert does not print "Formatting ...". */
		if (cli_create_image(s.dst_file, &ca, true) < 0)
			goto out;
	}

	to.format = out_fmt;
	if (cli_open(s.dst_file, &to, &s.dst) < 0)
		goto out;
	if (no_create && cp_image_size(s.dst) < s.size) {
		cli_error("%s: target image is smaller than the source "
			  "(%" PRIu64 " < %" PRIu64 " bytes)",
			  s.dst_file, cp_image_size(s.dst), s.size);
		goto out;
	}
	s.target_has_backing = backing != NULL;
	s.align = CP_MAX(s.min_sparse, (uint64_t)cp_image_cluster_size(s.dst));
	s.target_is_zero = !no_create || target_is_zero;

	s.buf = cp_bdev_alloc_buf(CONVERT_CHUNK);
	if (!s.buf) {
		cli_error("out of memory");
		goto out;
	}
	if (convert_run(&s) < 0)
		goto out;
	if (s.progress)
		printf("\n");
	ret = 0;
out:
	if (s.buf)
		cp_bdev_free_buf(s.buf);
	if (s.dst && cli_close(s.dst) < 0)
		ret = 1;
	if (s.src)
		cp_image_close(s.src);
	if (ca_init)
		cli_create_args_free(&ca);
	free(optstr);
	return ret;
}
