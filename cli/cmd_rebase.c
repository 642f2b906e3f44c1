/* cli/cmd_rebase.c - `cowpool rebase`: qemu-img rebase.
 *
 * Safe mode (default) copies into the image whatever would change when the
 * backing file is switched, then rewrites the header; -u only rewrites the
 * header.  The work is cp_image_rebase()'s.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cli_cmd_rebase(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256, OPT_OBJECT, OPT_IOPTS };
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"output", required_argument, NULL, OPT_OUTPUT},
	    {"force-share", no_argument, NULL, 'U'},
	    {"object", required_argument, NULL, OPT_OBJECT},
	    {"image-opts", no_argument, NULL, OPT_IOPTS},
	    {NULL, 0, NULL, 0},
	};
	struct cp_open_opts opts;
	struct cp_rebase_opts ro;
	struct cli_progress prog;
	enum cp_cache src_cache = CP_CACHE_WRITEBACK;
	enum cp_fmt bfmt;
	const char *backing = NULL, *backing_fmt = NULL;
	bool json = false, quiet = false, progress = false;
	int c;

	cp_open_opts_init(&opts);
	cp_rebase_opts_init(&ro);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:t:T:pub:F:qUi:", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'h':
			return cli_help("rebase");
		case 'f':
			if (cli_parse_fmt(optarg, &opts.format) < 0)
				return 1;
			break;
		case 't':
			if (cli_parse_cache(optarg, &opts.cache) < 0)
				return 1;
			break;
		case 'T':
			if (cli_parse_cache(optarg, &src_cache) < 0)
				return 1;
			break;
		case 'i':
			if (cli_parse_aio(optarg, &opts.aio) < 0)
				return 1;
			break;
		case 'p':
			progress = true;
			break;
		case 'u':
			ro.unsafe = true;
			break;
		case 'b':
			backing = optarg;
			break;
		case 'F':
			backing_fmt = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'U':
			opts.force_share = true;
			break;
		case OPT_OUTPUT:
			if (cli_parse_output(optarg, &json) < 0)
				return 1;
			break;
		case OPT_OBJECT:
		case OPT_IOPTS:
			return cli_error("rebase: %s is not supported",
					 argv[optind - 1]);
		default:
			return cli_bad_option("rebase", argv, c);
		}
	}
	if (optind != argc - 1)
		return cli_error("rebase: expecting one image file name");
	const char *file = argv[optind];

	if (!backing && !ro.unsafe)
		return cli_error("rebase: must specify backing file (-b) or use "
				 "unsafe mode (-u)");
	if (backing_fmt && cli_parse_fmt(backing_fmt, &bfmt) < 0)
		return 1;
	/* qemu-img 7.2 refuses to record a backing file without its format;
	 * it says so after copying, we before starting. */
	if (backing && backing[0] && !backing_fmt)
		return cli_error("%s: could not change the backing file to "
				 "'%s': backing format must be specified "
				 "with -F",
				 file, backing);

	cp_image *img;
	/* -u must work when the old backing file is gone. */
	opts.no_backing = ro.unsafe;
	if (cli_open(file, &opts, &img) < 0)
		return 1;

	/* As qemu-img, -u shows 0% then 100%. */
	cli_progress_init(&prog, progress && !quiet, json);
	cli_progress_update(&prog, 0, cp_image_size(img));
	ro.backing = backing && backing[0] ? backing : NULL;
	ro.backing_format = ro.backing ? backing_fmt : NULL;
	ro.progress = cli_progress_update;
	ro.opaque = &prog;
	cp_clear_error();
	int r = cp_image_rebase(img, &ro);
	cli_progress_end(&prog, r >= 0);
	int ret = 0;
	if (r < 0) {
		cli_error_image(file, r);
		ret = 1;
	}
	if (cli_close(img) < 0)
		ret = 1;
	return ret;
}
