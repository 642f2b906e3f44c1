/* cli/cmd_commit.c - `cowpool commit`: qemu-img commit.
 *
 * Copies what the top image (and the layers between it and the base)
 * allocates into the base, then empties the top unless -d or -b.  The work
 * is cp_image_commit()'s; this file finds the base named by -b and prints.
 */
#include <errno.h>
#include <getopt.h>
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
	enum { OPT_OUTPUT = 256, OPT_OBJECT, OPT_IOPTS };
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"output", required_argument, NULL, OPT_OUTPUT},
	    {"object", required_argument, NULL, OPT_OBJECT},
	    {"image-opts", no_argument, NULL, OPT_IOPTS},
	    {NULL, 0, NULL, 0},
	};
	struct cp_open_opts opts;
	struct cp_commit_opts co;
	struct cli_progress prog;
	const char *base_name = NULL;
	bool json = false, quiet = false, progress = false, drop = false;
	int c;

	cp_open_opts_init(&opts);
	cp_commit_opts_init(&co);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:t:b:dpr:qi:", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'h':
			return cli_help("commit");
		case 'f':
			if (cli_parse_fmt(optarg, &opts.format) < 0)
				return 1;
			break;
		case 't':
			if (cli_parse_cache(optarg, &opts.cache) < 0)
				return 1;
			break;
		case 'i':
			if (cli_parse_aio(optarg, &opts.aio) < 0)
				return 1;
			break;
		case 'b':
			base_name = optarg;
			break;
		case 'd':
			drop = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'r':
			if (cli_parse_size("rate limit", optarg,
					   &co.rate_limit) < 0)
				return 1;
			break;
		case 'q':
			quiet = true;
			break;
		case OPT_OUTPUT:
			if (cli_parse_output(optarg, &json) < 0)
				return 1;
			break;
		case OPT_OBJECT:
		case OPT_IOPTS:
			return cli_error("commit: %s is not supported",
					 argv[optind - 1]);
		default:
			return cli_bad_option("commit", argv, c);
		}
	}
	if (optind != argc - 1)
		return cli_error("commit: expecting one image file name");

	const char *file = argv[optind];
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
	cp_clear_error();
	int r = cp_image_commit(top, &co);
	cli_progress_end(&prog, r >= 0);
	if (r < 0) {
		cli_error_image(file, r);
		goto out;
	}
	ret = 0;
out:
	if (cli_close(top) < 0)
		ret = 1;
	if (ret == 0 && !quiet && !json)
		printf("Image committed.\n");
	return ret;
}
