/* cli/cmd_amend.c - `cowpool amend`: qemu-img amend, for the options the
 * engine can change in place (cp_image_amend()): compat and
 * lazy_refcounts.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* qcow2 options qemu-img knows that cowpool cannot amend: named in the
 * refusal rather than called unknown. */
static const char *const amend_refused[] = {
    "refcount_bits", "size",	      "cluster_size",     "extended_l2",
    "compression_type", "preallocation", "data_file",      "data_file_raw",
    "encrypt",		"encryption",	 "backing_file",    "backing_fmt",
};

static void amend_help(void)
{
	printf("Amend options for 'qcow2':\n"
	       "  compat=<str>           - Compatibility level (v2 [0.10] or "
	       "v3 [1.1])\n"
	       "  lazy_refcounts=<bool (on/off)> - Postpone refcount "
	       "updates\n");
}

/* Apply the -o list ("help" already handled) to ao.  Returns 0 or -EINVAL
 * (error printed, naming file and key). */
static int amend_parse_opts(struct cp_amend_opts *ao, const char *file,
			    const char *optstr)
{
	char *buf;
	struct cli_kv *kv;
	int n = cli_optlist_split(optstr, &buf, &kv), r = 0;
	if (n < 0)
		return n;
	for (int i = 0; i < n && r == 0; i++) {
		const char *key = kv[i].key, *val = kv[i].val;
		if (!strcmp(key, "compat")) {
			if (!strcmp(val, "0.10") || !strcmp(val, "v2")) {
				ao->qcow_version = 2;
			} else if (!strcmp(val, "1.1") || !strcmp(val, "v3")) {
				ao->qcow_version = 3;
			} else {
				cli_error("%s: invalid compat '%s' (expected "
					  "0.10, v2, 1.1 or v3)",
					  file, val);
				r = -EINVAL;
			}
		} else if (!strcmp(key, "lazy_refcounts")) {
			bool on;
			if (cli_parse_bool(key, val, &on) < 0)
				r = -EINVAL;
			else
				ao->lazy_refcounts = on;
		} else {
			bool known = !strncmp(key, "encrypt.", 8);
			for (size_t k = 0; k < CP_ARRAY_SIZE(amend_refused); k++)
				known |= !strcmp(key, amend_refused[k]);
			if (!known)
				cli_error("%s: invalid parameter '%s' for amend "
					  "(see -o help)",
					  file, key);
			else if (!strncmp(key, "backing_", 8))
				cli_error("%s: changing %s is not supported; "
					  "use 'cowpool rebase'",
					  file, key);
			else if (!strcmp(key, "size"))
				cli_error("%s: changing size is not supported; "
					  "use 'cowpool resize'",
					  file);
			else
				cli_error("%s: changing %s is not supported",
					  file, key);
			r = -EINVAL;
		}
	}
	free(buf);
	free(kv);
	return r;
}

int cli_cmd_amend(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256, OPT_FORCE, OPT_OBJECT, OPT_IOPTS };
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"output", required_argument, NULL, OPT_OUTPUT},
	    {"force", no_argument, NULL, OPT_FORCE},
	    {"object", required_argument, NULL, OPT_OBJECT},
	    {"image-opts", no_argument, NULL, OPT_IOPTS},
	    {NULL, 0, NULL, 0},
	};
	struct cp_open_opts opts;
	struct cp_amend_opts ao;
	struct cli_progress prog;
	char *optstr = NULL;
	bool json = false, quiet = false, progress = false;
	int c, ret = 1;
	cp_image *img = NULL;

	cp_open_opts_init(&opts);
	cp_amend_opts_init(&ao);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:t:o:pqi:", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'h':
			free(optstr);
			return cli_help("amend");
		case 'f':
			if (cli_parse_fmt(optarg, &opts.format) < 0)
				goto out;
			break;
		case 't':
			if (cli_parse_cache(optarg, &opts.cache) < 0)
				goto out;
			break;
		case 'i':
			if (cli_parse_aio(optarg, &opts.aio) < 0)
				goto out;
			break;
		case 'o':
			if (cli_optlist_append(&optstr, optarg) < 0) {
				cli_error("out of memory");
				goto out;
			}
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case OPT_FORCE:
			break;
		case OPT_OUTPUT:
			if (cli_parse_output(optarg, &json) < 0)
				goto out;
			break;
		case OPT_OBJECT:
		case OPT_IOPTS:
			cli_error("amend: %s is not supported",
				  argv[optind - 1]);
			goto out;
		default:
			free(optstr);
			return cli_bad_option("amend", argv, c);
		}
	}
	if (optstr && cli_create_opts_want_help(optstr)) {
		amend_help();
		free(optstr);
		return 0;
	}
	if (!optstr) {
		cli_error("amend: must specify options (-o)");
		goto out;
	}
	if (optind != argc - 1) {
		cli_error("amend: expecting one image file name");
		goto out;
	}
	const char *file = argv[optind];
	if (amend_parse_opts(&ao, file, optstr) < 0)
		goto out;

	/* With its backing chain: a downgrade must know whether zero
	 * clusters hide backing data. */
	if (cli_open(file, &opts, &img) < 0)
		goto out;

	cli_progress_init(&prog, progress && !quiet, json);
	cli_progress_update(&prog, 0, cp_image_size(img));
	cp_clear_error();
	int r = cp_image_amend(img, &ao);
	cli_progress_end(&prog, r >= 0);
	if (r < 0) {
		cli_error_image(file, r);
		goto out;
	}
	ret = 0;
out:
	if (img && cli_close(img) < 0)
		ret = 1;
	free(optstr);
	return ret;
}
