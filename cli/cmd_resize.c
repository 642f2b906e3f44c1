/* cli/cmd_resize.c - `cowpool resize`: qemu-img resize. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int resize_opt_prealloc(struct cli_parser *p, const struct cli_opt *o,
			       const char *arg)
{
	if (cp_prealloc_parse(arg, o->dst) < 0) {
		cli_error("%s: invalid preallocation '%s' (expected off, "
			  "metadata, falloc or full)",
			  p->cmd, arg);
		return -EINVAL;
	}
	return 0;
}

int cli_cmd_resize(int argc, char **argv)
{
	struct cp_open_opts opts;
	enum cp_prealloc prealloc = CP_PREALLOC_OFF;
	bool quiet = false, shrink = false;

	cp_open_opts_init(&opts);
	const struct cli_opt table[] = {
	    CLI_OPT_F(&opts.format, "image format"),
	    CLI_O_FN(0, "preallocation", "off|metadata|falloc|full",
		     resize_opt_prealloc, &prealloc, "for the new area"),
	    CLI_O_FLAG(0, "shrink", &shrink, "allow shrinking"),
	    CLI_OPT_T(&opts.cache, "cache mode"),
	    CLI_OPT_AIO(&opts.aio),
	    CLI_OPT_QUIET(&quiet),
	    CLI_OPT_QEMU_END,
	};
	for (int k = 1; k < argc; k++) {
		if (!strcmp(argv[k], "-h") || !strcmp(argv[k], "--help"))
			return cli_help_opts("resize", table);
	}
	if (argc < 3)
		return cli_error("resize: expecting an image file name and a "
				 "size");
	/* Take the size off argv before parsing so that "-1G" is not read
	 * as an option (qemu-img does the same). */
	const char *size_arg = argv[--argc];

	struct cli_parser p = {.cmd = "resize", .opts = table};
	int pr = cli_parse(&p, argc, argv);
	if (pr)
		return pr == CLI_PARSE_HELP ? 0 : 1;
	if (p.npos != 1)
		return cli_error("resize: expecting an image file name and a "
				 "size");

	int relative = 0;
	uint64_t n;
	if (size_arg[0] == '+' || size_arg[0] == '-') {
		relative = size_arg[0] == '+' ? 1 : -1;
		size_arg++;
	}
	if (cli_parse_size("size", size_arg, &n) < 0)
		return 1;

	const char *file = p.pos[0];
	cp_image *img;
	if (cli_open(file, &opts, &img) < 0)
		return 1;

	uint64_t cur = cp_image_size(img), new_size = n;
	int ret = 1;
	if (relative > 0) {
		if (n > (uint64_t)INT64_MAX - cur) {
			cli_error("%s: new image size must be less than 8 EiB",
				  file);
			goto out;
		}
		new_size = cur + n;
	} else if (relative < 0) {
		if (n >= cur) {
			cli_error("%s: new image size must be positive", file);
			goto out;
		}
		new_size = cur - n;
	}
	if (new_size == 0) {
		cli_error("%s: new image size must be positive", file);
		goto out;
	}
	if (new_size < cur && !shrink) {
		cli_error("%s: use the --shrink option to perform a shrink "
			  "operation (it deletes all data beyond the new end)",
			  file);
		goto out;
	}
	if (new_size < cur && prealloc != CP_PREALLOC_OFF) {
		cli_error("%s: preallocation can only be used for growing "
			  "images",
			  file);
		goto out;
	}

	int r = cp_image_resize(img, new_size, shrink, prealloc);
	if (r < 0) {
		cli_error_image(file, r);
		goto out;
	}
	ret = 0;
out:
	if (cli_close(img) < 0)
		ret = 1;
	if (ret == 0 && !quiet)
		printf("Image resized.\n");
	return ret;
}
