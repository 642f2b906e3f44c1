/* cli/cmd_convert.c - `cowpool convert`: copy an image (through its backing
 * chain) into a new raw or qcow2 image.
 *
 * This file creates the target (or opens it with -n) and hands the copy to
 * cp_image_convert(): zero detection in units of max(-S, target cluster
 * size), compression (-c), parallel workers (-m), out-of-order writes (-W),
 * and with -B a copy of the source's top layer only.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CONVERT_MAX_SPARSE (16u << 20)

int cli_cmd_convert(int argc, char **argv)
{
	enum {
		OPT_OBJECT = 256,
		OPT_IOPTS,
		OPT_TIOPTS,
		OPT_TZERO,
		OPT_BITMAPS,
		OPT_SALVAGE,
		OPT_OUTPUT
	};
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"force-share", no_argument, NULL, 'U'},
	    {"target-is-zero", no_argument, NULL, OPT_TZERO},
	    {"output", required_argument, NULL, OPT_OUTPUT},
	    {"object", required_argument, NULL, OPT_OBJECT},
	    {"image-opts", no_argument, NULL, OPT_IOPTS},
	    {"target-image-opts", no_argument, NULL, OPT_TIOPTS},
	    {"bitmaps", no_argument, NULL, OPT_BITMAPS},
	    {"salvage", no_argument, NULL, OPT_SALVAGE},
	    {NULL, 0, NULL, 0},
	};
	struct cp_open_opts so, to;
	struct cp_convert_opts co;
	struct cli_progress prog;
	enum cp_fmt out_fmt = CP_FMT_RAW;
	const char *src_file, *dst_file;
	const char *backing = NULL, *backing_fmt = NULL;
	char *optstr = NULL;
	bool quiet = false, no_create = false, target_is_zero = false;
	bool progress = false, json = false;
	int c, ret = 1;
	struct cli_create_args ca;
	bool ca_init = false;
	cp_image *src = NULL, *dst = NULL;

	cp_open_opts_init(&so);
	cp_open_opts_init(&to);
	cp_convert_opts_init(&co);
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
			if (cp_parse_size(optarg, &co.sparse_size) < 0 ||
			    co.sparse_size % 512 ||
			    co.sparse_size > CONVERT_MAX_SPARSE) {
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
			if (end == optarg || *end || m < 1 || m > 16) {
				cli_error("convert: invalid -m '%s': the "
					  "number of parallel workers must be "
					  "between 1 and 16",
					  optarg);
				goto out;
			}
			co.parallel = (unsigned)m;
			break;
		}
		case 'W':
			co.out_of_order = true;
			break;
		case 'c':
			co.compress = true;
			break;
		case 'U':
			so.force_share = true;
			break;
		case 'C':
			break;
		case 'p':
			progress = true;
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
		case OPT_OUTPUT:
			if (cli_parse_output(optarg, &json) < 0)
				goto out;
			break;
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
	src_file = argv[optind];
	dst_file = argv[optind + 1];
	if (target_is_zero && !no_create) {
		cli_error("convert: --target-is-zero requires -n");
		goto out;
	}
	if (no_create && (optstr || backing)) {
		cli_error("convert: -o and -B cannot be used with -n");
		goto out;
	}
	if (co.compress && !no_create && out_fmt != CP_FMT_QCOW2) {
		cli_error("%s: compression not supported for this file format "
			  "(%s)",
			  dst_file, cp_fmt_name(out_fmt));
		goto out;
	}

	if (cli_open(src_file, &so, &src) < 0)
		goto out;
	uint64_t size = cp_image_size(src);

	if (!no_create) {
		cli_create_args_init(&ca, out_fmt);
		ca_init = true;
		if (optstr && cli_create_opts_parse(&ca, dst_file, optstr) < 0)
			goto out;
		if (backing)
			ca.opts.backing_file = backing;
		if (backing_fmt)
			ca.opts.backing_format = backing_fmt;
		if (ca.opts.backing_file && !backing)
			backing = ca.opts.backing_file;
		ca.opts.virtual_size = size;
		ca.size_set = true;
		ca.opts.cache = to.cache;
		ca.opts.aio = to.aio;
		/* qemu-img convert does not print "Formatting ...". */
		if (cli_create_image(dst_file, &ca, true) < 0)
			goto out;
	}

	to.format = out_fmt;
	if (cli_open(dst_file, &to, &dst) < 0)
		goto out;
	if (no_create && cp_image_size(dst) < size) {
		cli_error("%s: target image is smaller than the source "
			  "(%" PRIu64 " < %" PRIu64 " bytes)",
			  dst_file, cp_image_size(dst), size);
		goto out;
	}
	if (target_is_zero && cp_image_backing(dst)) {
		cli_error("%s: --target-is-zero cannot be used with a target "
			  "that has a backing file",
			  dst_file);
		goto out;
	}
	/* Zero detection works on whole target clusters, as qemu-img's. */
	if (co.sparse_size)
		co.sparse_size = CP_MAX(co.sparse_size,
					(uint64_t)cp_image_cluster_size(dst));
	co.source_top_only = backing != NULL;
	/* A target we just created without a backing file reads as zeroes. */
	co.target_is_zero = (!no_create && !backing) || target_is_zero;

	cli_progress_init(&prog, progress && !quiet, json);
	co.progress = cli_progress_update;
	co.opaque = &prog;
	cp_clear_error();
	int r = cp_image_convert(src, dst, &co);
	cli_progress_end(&prog, r >= 0);
	if (r < 0) {
		/* Name the image the engine's message is about. */
		cli_error_image(strstr(cp_last_error(), src_file) ? src_file
								  : dst_file,
				r);
		goto out;
	}
	ret = 0;
out:
	if (dst && cli_close(dst) < 0)
		ret = 1;
	if (src)
		cp_image_close(src);
	if (ca_init)
		cli_create_args_free(&ca);
	free(optstr);
	return ret;
}
