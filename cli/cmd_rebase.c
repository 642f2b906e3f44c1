/* cli/cmd_rebase.c - `cowpool rebase`: qemu-img rebase.
 *
 * Safe mode (default) copies into the image whatever would change when the
 * backing file is switched, then rewrites the header; -u only rewrites the
 * header.  The work is cp_image_rebase()'s.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cli_cmd_rebase(int argc, char **argv)
{
	struct cp_open_opts opts;
	struct cp_rebase_opts ro;
	struct cli_progress prog;
	enum cp_cache src_cache = CP_CACHE_WRITEBACK;
	enum cp_fmt bfmt;
	const char *backing = NULL, *backing_fmt = NULL;
	bool json = false, quiet = false, progress = false;

	cp_open_opts_init(&opts);
	cp_rebase_opts_init(&ro);
	const struct cli_opt table[] = {
	    CLI_O_VAL('b', NULL, "backing", &backing,
		      "new backing file (\"\" = none); relative to the\n"
		      "image's directory"),
	    CLI_O_VAL('F', NULL, "backing_fmt", &backing_fmt,
		      "its format; required with a non-empty -b"),
	    CLI_O_FLAG('u', NULL, &ro.unsafe,
		       "unsafe: only rewrite the header (the old backing\n"
		       "file is not opened; -b may be omitted = none)"),
	    CLI_OPT_F(&opts.format, "image format"),
	    CLI_OPT_T(&opts.cache, "cache mode (default writeback)"),
	    CLI_OPT_SRC_T(&src_cache,
			  "accepted and checked; backing files use -t"),
	    CLI_OPT_AIO(&opts.aio),
	    CLI_OPTS_PROGRESS(&progress, &json, &quiet, ""),
	    CLI_OPT_U(&opts.force_share),
	    CLI_OPT_QEMU_END,
	};
	const char *file;
	int st = cli_parse_files("rebase", table, argc, argv, 1, &file);
	if (!file)
		return st;

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
	int ret = 0;
	if (cli_progress_finish(&prog, cp_image_rebase(img, &ro), file) < 0)
		ret = 1;
	if (cli_close(img) < 0)
		ret = 1;
	return ret;
}
