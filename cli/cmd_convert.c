/* cli/cmd_convert.c - `cowpool convert`: copy an image (through its backing
 * chain) into a new raw or qcow2 image.
 *
 * This file creates the target (or opens it with -n) and hands the copy to
 * cp_image_convert(): zero detection in units of max(-S, target cluster
 * size), compression (-c), parallel workers (-m), out-of-order writes (-W),
 * and with -B a copy of the source's top layer only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CONVERT_MAX_SPARSE (16u << 20)

static int convert_opt_sparse(struct cli_parser *p, const struct cli_opt *o,
			      const char *arg)
{
	uint64_t *sparse = o->dst;
	if (cp_parse_size(arg, sparse) < 0 || *sparse % 512 ||
	    *sparse > CONVERT_MAX_SPARSE) {
		cli_error("%s: invalid sparse size '%s': valid sizes are "
			  "multiples of 512 up to 16 MiB, 0 disables sparse "
			  "detection",
			  p->cmd, arg);
		return -EINVAL;
	}
	return 0;
}

static int convert_opt_parallel(struct cli_parser *p, const struct cli_opt *o,
				const char *arg)
{
	char *end;
	long m = strtol(arg, &end, 10);
	if (end == arg || *end || m < 1 || m > 16) {
		cli_error("%s: invalid -m '%s': the number of parallel "
			  "workers must be between 1 and 16",
			  p->cmd, arg);
		return -EINVAL;
	}
	*(unsigned *)o->dst = (unsigned)m;
	return 0;
}

/* --bitmaps: an inconsistent source bitmap fails the command before
 * anything is written, unless skipped (with qemu-img's warning). */
static int convert_check_bitmaps(cp_image *src, bool skip)
{
	int n = cp_image_bitmap_count(src);
	for (int i = 0; i < n; i++) {
		struct cp_bitmap_info bi;
		if (cp_image_bitmap_get(src, (unsigned)i, &bi) < 0 || !bi.in_use)
			continue;
		if (!skip) {
			cli_error("Cannot copy inconsistent bitmap '%s'; try "
				  "--skip-broken-bitmaps, or use 'cowpool bitmap "
				  "--remove' to delete it", bi.name);
			return -EINVAL;
		}
		fprintf(stderr, "cowpool: warning: Skipping inconsistent "
			"bitmap '%s'\n", bi.name);
	}
	return 0;
}

/* Each consistent source bitmap becomes a target bitmap of the same name,
 * granularity and state holding the same bits (stored at close). */
static int convert_copy_bitmaps(cp_image *src, cp_image *dst)
{
	int n = cp_image_bitmap_count(src);
	for (int i = 0; i < n; i++) {
		struct cp_bitmap_info bi;
		struct cp_bitmap_add_opts ao;
		int r = cp_image_bitmap_get(src, (unsigned)i, &bi);
		if (r >= 0 && bi.in_use)
			continue;
		cp_bitmap_add_opts_init(&ao);
		ao.granularity = bi.granularity;
		ao.disabled = !bi.enabled;
		if (r >= 0)
			r = cp_image_bitmap_add(dst, bi.name, &ao);
		if (r >= 0)
			r = cp_image_bitmap_merge(dst, bi.name, src, bi.name);
		if (r < 0) {
			cli_error("Failed to create bitmap %s: %s", bi.name,
				  cp_error_msg(r));
			return r;
		}
	}
	return 0;
}

int cli_cmd_convert(int argc, char **argv)
{
	struct cp_open_opts so, to;
	struct cp_convert_opts co;
	struct cli_progress prog;
	enum cp_fmt out_fmt = CP_FMT_RAW;
	const char *src_file, *dst_file;
	const char *backing = NULL, *backing_fmt = NULL;
	char *optstr = NULL;
	bool quiet = false, no_create = false, target_is_zero = false;
	bool progress = false, json = false;
	int ret = 1;
	bool bitmaps = false, skip_broken = false;
	struct cli_create_args ca;
	bool ca_init = false;
	cp_image *src = NULL, *dst = NULL;

	cp_open_opts_init(&so);
	cp_open_opts_init(&to);
	cp_convert_opts_init(&co);
	so.readonly = true;
	to.cache = CP_CACHE_UNSAFE; /* qemu-img convert's default */
	const struct cli_opt table[] = {
	    CLI_OPT_F(&so.format, "source format"),
	    CLI_OPT_FMT('O', "output_fmt", &out_fmt,
			"target format (raw default, qcow2)"),
	    CLI_OPT_OPTIONS(&optstr,
			    "target create options (see create -o help)"),
	    CLI_O_VAL('B', NULL, "backing", &backing,
		      "target backing file; only data allocated in the\n"
		      "source's top layer is copied"),
	    CLI_O_VAL('F', NULL, "backing_fmt", &backing_fmt,
		      "format of the target backing file"),
	    CLI_O_FLAG('n', NULL, &no_create,
		       "do not create the target (it must exist)"),
	    CLI_O_FLAG(0, "target-is-zero", &target_is_zero,
		       "with -n: the target already reads as zeroes"),
	    CLI_O_FN('S', NULL, "size", convert_opt_sparse, &co.sparse_size,
		     "zero detection unit (default 4k; units of\n"
		     "max(size, target cluster) reading as zeroes\n"
		     "are left unwritten; 0 = fully allocate)"),
	    CLI_OPT_T(&to.cache, "target cache mode (default unsafe)"),
	    CLI_OPT_SRC_T(&so.cache, "source cache mode (default writeback)"),
	    CLI_OPT_AIO(&so.aio), /* for the target too */
	    CLI_O_FLAG('c', NULL, &co.compress,
		       "compress the target (qcow2; -o compression_type=\n"
		       "zlib|zstd chooses the method)"),
	    CLI_O_FN('m', NULL, "num", convert_opt_parallel, &co.parallel,
		     "parallel workers, 1 to 16 (default 8)"),
	    CLI_O_FLAG('W', NULL, &co.out_of_order,
		       "allow out-of-order writes"),
	    CLI_OPTS_PROGRESS(&progress, &json, &quiet, ""),
	    CLI_O_NOP('C', NULL, CLI_H_NOP),
	    CLI_OPT_U(&so.force_share),
	    CLI_O_REFUSE('l', NULL, "snapshot", "-l (internal snapshots)"),
	    CLI_O_REFUSE('r', NULL, "rate_limit", "-r (rate limit)"),
	    CLI_OPT_OBJECT,
	    CLI_OPT_IMAGE_OPTS,
	    CLI_O_REFUSE(0, "target-image-opts", NULL, NULL),
	    CLI_O_FLAG(0, "bitmaps", &bitmaps,
		       "copy the source's persistent bitmaps (qcow2 target)"),
	    CLI_O_FLAG(0, "skip-broken-bitmaps", &skip_broken,
		       "with --bitmaps: skip inconsistent bitmaps"),
	    CLI_O_REFUSE(0, "salvage", NULL, NULL),
	    CLI_OPT_END,
	};
	struct cli_parser p = {.cmd = "convert", .opts = table};
	int st;
	if (!cli_parse_optlist(&p, argc, argv, &optstr, cli_create_opts_help,
			       &out_fmt, &st))
		return st;
	to.aio = so.aio;

	if (p.npos > 2) {
		cli_error("convert: only one source image is supported");
		goto out;
	}
	if (p.npos != 2) {
		cli_error("convert: expecting a source and a target file name");
		goto out;
	}
	src_file = p.pos[0];
	dst_file = p.pos[1];
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

	if (skip_broken && !bitmaps) {
		cli_error("convert: --skip-broken-bitmaps requires --bitmaps");
		goto out;
	}
	if (bitmaps && !no_create && out_fmt != CP_FMT_QCOW2) {
		cli_error("Format driver '%s' does not support bitmaps",
			  cp_fmt_name(out_fmt));
		goto out;
	}

	if (cli_open(src_file, &so, &src) < 0)
		goto out;
	uint64_t size = cp_image_size(src);
	if (bitmaps && convert_check_bitmaps(src, skip_broken) < 0)
		goto out;

	if (!no_create) {
		ca_init = true;
		if (cli_create_args_set(&ca, out_fmt, dst_file, optstr, backing,
					backing_fmt) < 0)
			goto out;
		if (ca.opts.backing_file && !backing)
			backing = ca.opts.backing_file;
		ca.opts.virtual_size = size;
		ca.size_set = true;
		if (bitmaps && ca.opts.qcow_version < 3) {
			cli_error("Format driver 'qcow2' does not support "
				  "bitmaps (compat=0.10)");
			goto out;
		}
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
	int r = cp_image_convert(src, dst, &co);
	cli_progress_end(&prog, r >= 0);
	if (r < 0) {
		/* Name the image the engine's message is about. */
		cli_error_image(strstr(cp_error_msg(r), src_file) ? src_file
								  : dst_file,
				r);
		goto out;
	}
	if (bitmaps && convert_copy_bitmaps(src, dst) < 0)
		goto out;
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
