/* cli/cmd_measure.c - `cowpool measure`: qemu-img measure.
 *
 * The size a new image would need, empty (--size) or holding a copy of an
 * existing image, computed by cp_image_measure().  As qemu-img, the output
 * format defaults to raw.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void measure_print(const struct cp_measure_result *res, bool json)
{
	if (json) {
		struct cli_json *o = cli_json_new();
		if (res->has_bitmaps)
			cli_json_add_int(o, "bitmaps", (int64_t)res->bitmaps);
		cli_json_add_int(o, "required", (int64_t)res->required);
		cli_json_add_int(o, "fully-allocated",
				 (int64_t)res->fully_allocated);
		cli_json_print(stdout, o, 0);
		putchar('\n');
		cli_json_free(o);
		return;
	}
	printf("required size: %" PRIu64 "\n"
	       "fully allocated size: %" PRIu64 "\n",
	       res->required, res->fully_allocated);
	if (res->has_bitmaps)
		printf("bitmaps size: %" PRIu64 "\n", res->bitmaps);
}

/* Apply -o to mo, with qemu-img's checks of the combinations. */
static int measure_parse_opts(struct cp_measure_opts *mo, const char *optstr)
{
	struct cli_create_args ca;
	int r;

	cli_create_args_init(&ca, mo->format);
	r = cli_create_opts_parse(&ca, "measure", optstr);
	if (r < 0)
		goto out;
	const struct cp_create_opts *o = &ca.opts;
	mo->cluster_size = o->cluster_size;
	mo->refcount_bits = o->refcount_bits;
	mo->extended_l2 = o->extended_l2;
	mo->prealloc = o->prealloc;
	mo->qcow_version = o->qcow_version;
	if (mo->format != CP_FMT_QCOW2)
		goto out;
	r = -EINVAL;
	if (!cp_is_pow2(o->cluster_size) || o->cluster_size < 512 ||
	    o->cluster_size > (2u << 20)) {
		cli_error("measure: cluster size must be a power of two "
			  "between 512 and 2048k");
		goto out;
	}
	if (!cp_is_pow2(o->refcount_bits) || o->refcount_bits > 64) {
		cli_error("measure: refcount width must be a power of two and "
			  "may not exceed 64 bits");
		goto out;
	}
	if (o->extended_l2 && o->cluster_size < 16384) {
		cli_error("measure: extended L2 entries are only supported "
			  "with cluster sizes of at least 16384 bytes");
		goto out;
	}
	if (o->qcow_version < 3 && o->refcount_bits != 16) {
		cli_error("measure: different refcount widths than 16 bits "
			  "require compatibility level 1.1 or above (use "
			  "compat=1.1 or greater)");
		goto out;
	}
	if (o->qcow_version < 3 && o->extended_l2) {
		cli_error("measure: extended L2 entries require compatibility "
			  "level 1.1 or above (use compat=1.1 or greater)");
		goto out;
	}
	r = 0;
out:
	cli_create_args_free(&ca);
	return r;
}

int cli_cmd_measure(int argc, char **argv)
{
	struct cp_open_opts opts;
	struct cp_measure_opts mo;
	enum cp_fmt out_fmt = CP_FMT_RAW; /* qemu-img's default */
	char *optstr = NULL;
	bool json = false, size_set = false;
	uint64_t size = 0;
	int ret = 1;
	cp_image *img = NULL;

	cp_open_opts_init(&opts);
	opts.readonly = true;
	cp_measure_opts_init(&mo);
	const struct cli_opt table[] = {
	    CLI_OPT_FMT('O', "output_fmt", &out_fmt,
			"format of the new image: raw (default) or qcow2"),
	    CLI_OPT_OPTIONS(&optstr,
			    "cluster_size, refcount_bits, extended_l2,\n"
			    "preallocation, compat (and the other create\n"
			    "options, which do not change the result)"),
	    CLI_O_SIZE_SEEN(0, "size", "N", "image size", &size, &size_set,
			    "measure a new empty image of N bytes"),
	    CLI_OPT_F(&opts.format, "format of filename"),
	    CLI_OPT_OUTPUT(&json, "ofmt", "human (default) or json"),
	    CLI_O_REFUSE('l', NULL, "snapshot", "-l (internal snapshots)"),
	    CLI_OPTS_OPEN_END(&opts, "cache mode"),
	};
	struct cli_parser p = {.cmd = "measure", .opts = table};
	int st;
	if (!cli_parse_optlist(&p, argc, argv, &optstr, cli_create_opts_help,
			       &out_fmt, &st))
		return st;
	if (p.npos > 1) {
		cli_error("measure: at most one filename argument is allowed");
		goto out;
	}
	const char *file = p.npos ? p.pos[0] : NULL;
	if (file && size_set) {
		cli_error("measure: --size N cannot be used together with a "
			  "filename");
		goto out;
	}
	if (!file && !size_set) {
		cli_error("measure: either --size N or one filename must be "
			  "specified");
		goto out;
	}

	mo.format = out_fmt;
	mo.virtual_size = size;
	if (optstr && measure_parse_opts(&mo, optstr) < 0)
		goto out;
	if (file && cli_open(file, &opts, &img) < 0)
		goto out;

	struct cp_measure_result res;
	int r = cp_image_measure(img, &mo, &res);
	if (r < 0) {
		cli_error_image(file ? file : "measure", r);
		goto out;
	}
	measure_print(&res, json);
	ret = 0;
out:
	if (img)
		cp_image_close(img);
	free(optstr);
	return ret;
}
