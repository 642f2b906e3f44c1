/* cli/cmd_commit.c - `cowpool commit`: qemu-img commit.
 *
 * Copies what the top image (and the layers between it and the base)
 * allocates into the base, then empties the top unless -d or -b.  The work
 * is cp_image_commit()'s; this file finds the base named by -b and prints.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The layer of top's chain (top itself excluded) that name designates:
 * same real path as the layer's file, or the backing name stored in the
 * layer above it.  NULL if none. */
static cp_image *commit_find_base(cp_image *top, const char *name)
{
	char want[PATH_MAX], have[PATH_MAX];
	bool want_ok = realpath(name, want) != NULL;
	cp_image *above = top;

	for (cp_image *l = cp_image_backing(top); l;
	     above = l, l = cp_image_backing(l)) {
		if (want_ok && realpath(cp_image_filename(l), have) &&
		    !strcmp(want, have))
			return l;
		if (!strcmp(cp_image_filename(l), name))
			return l;
		struct cp_image_info info;
		if (cp_image_get_info(above, &info) == 0 &&
		    !strcmp(info.backing_file, name))
			return l;
	}
	cp_clear_error();
	return NULL;
}

int cli_cmd_commit(int argc, char **argv)
{
	struct cp_open_opts opts;
	struct cp_commit_opts co;
	struct cli_progress prog;
	const char *base_name = NULL;
	bool json = false, quiet = false, progress = false, drop = false;

	cp_open_opts_init(&opts);
	cp_commit_opts_init(&co);
	const struct cli_opt table[] = {
	    CLI_OPT_F(&opts.format, "image format"),
	    CLI_OPT_T(&opts.cache, "cache mode (default writeback)"),
	    CLI_OPT_AIO(&opts.aio),
	    CLI_O_VAL('b', NULL, "base", &base_name,
		      "commit into this layer of the backing chain\n"
		      "(default: the backing file); implies -d"),
	    CLI_O_FLAG('d', NULL, &drop,
		       "do not empty the image after committing"),
	    CLI_O_SIZE('r', NULL, "rate_limit", "rate limit", &co.rate_limit,
		       "bytes per second (k, M, G... suffixes)"),
	    CLI_OPTS_PROGRESS(&progress, &json, &quiet,
			      "; no \"Image committed.\" line"),
	    CLI_OPT_QEMU_END,
	};
	const char *file;
	int st = cli_parse_files("commit", table, argc, argv, 1, &file);
	if (!file)
		return st;

	cp_image *top;
	/* The top is only written when it is emptied; the engine reopens
	 * what it writes read-write. */
	opts.readonly = drop || base_name != NULL;
	if (cli_open(file, &opts, &top) < 0)
		return 1;

	int ret = 1;
	if (!cp_image_backing(top)) {
		cli_error("%s: image does not have a backing file", file);
		goto out;
	}
	if (base_name) {
		co.base = commit_find_base(top, base_name);
		if (!co.base) {
			cli_error("%s: did not find '%s' in the backing chain",
				  file, base_name);
			goto out;
		}
	}
	/* As qemu-img: -b implies -d, so the top stays valid. */
	co.keep_top = drop || base_name != NULL;

	cli_progress_init(&prog, progress && !quiet, json);
	co.progress = cli_progress_update;
	co.opaque = &prog;
	if (cli_progress_finish(&prog, cp_image_commit(top, &co), file) < 0)
		goto out;
	ret = 0;
out:
	if (cli_close(top) < 0)
		ret = 1;
	if (ret == 0 && !quiet && !json)
		printf("Image committed.\n");
	return ret;
}
