/* cli/cmd_resize.c - `cowpool resize`: qemu-img resize. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cli_cmd_resize(int argc, char **argv)
{
	enum { OPT_PREALLOC = 256, OPT_SHRINK, OPT_OBJECT, OPT_IOPTS };
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"preallocation", required_argument, NULL, OPT_PREALLOC},
	    {"shrink", no_argument, NULL, OPT_SHRINK},
	    {"object", required_argument, NULL, OPT_OBJECT},
	    {"image-opts", no_argument, NULL, OPT_IOPTS},
	    {NULL, 0, NULL, 0},
	};
	struct cp_open_opts opts;
	enum cp_prealloc prealloc = CP_PREALLOC_OFF;
	bool quiet = false, shrink = false;
	int c;

	for (int k = 1; k < argc; k++) {
		if (!strcmp(argv[k], "-h") || !strcmp(argv[k], "--help"))
			return cli_help("resize");
	}
	if (argc < 3)
		return cli_error("resize: expecting an image file name and a "
				 "size");
	/* Take the size off argv before getopt so that "-1G" is not read as
	 * an option (qemu-img does the same). */
	const char *size_arg = argv[--argc];

	cp_open_opts_init(&opts);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:qt:i:", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'h':
			return cli_help("resize");
		case 'f':
			if (cli_parse_fmt(optarg, &opts.format) < 0)
				return 1;
			break;
		case 'q':
			quiet = true;
			break;
		case 't':
			if (cli_parse_cache(optarg, &opts.cache) < 0)
				return 1;
			break;
		case 'i':
			if (cli_parse_aio(optarg, &opts.aio) < 0)
				return 1;
			break;
		case OPT_PREALLOC:
			if (cp_prealloc_parse(optarg, &prealloc) < 0)
				return cli_error(
				    "resize: invalid preallocation "
				    "'%s' (expected off, metadata, "
				    "falloc or full)",
				    optarg);
			break;
		case OPT_SHRINK:
			shrink = true;
			break;
		case OPT_OBJECT:
		case OPT_IOPTS:
			return cli_error("resize: %s is not supported",
					 argv[optind - 1]);
		default:
			return cli_bad_option("resize", argv, c);
		}
	}
	if (optind != argc - 1)
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

	const char *file = argv[optind];
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

	cp_clear_error();
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
