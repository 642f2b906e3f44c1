/* cli/cmd_amend.c - `cowpool amend`: qemu-img amend, for the options the
 * engine can change in place (cp_image_amend()): compat and
 * lazy_refcounts.
 */
#include <errno.h>
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

/* -o help (qcow2's options, whatever -f says: only qcow2 is amended). */
static void amend_help(enum cp_fmt fmt CP_UNUSED)
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
			r = cli_parse_compat(file, val, &ao->qcow_version);
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
	struct cp_open_opts opts;
	struct cp_amend_opts ao;
	struct cli_progress prog;
	char *optstr = NULL;
	bool json = false, quiet = false, progress = false;
	int ret = 1;
	cp_image *img = NULL;

	cp_open_opts_init(&opts);
	cp_amend_opts_init(&ao);
	const struct cli_opt table[] = {
	    CLI_OPT_OPTIONS(&optstr,
			    "compat=0.10|1.1 and/or lazy_refcounts=on|off\n"
			    "(other options are refused; -o help lists them)"),
	    CLI_OPT_F(&opts.format, "image format"),
	    CLI_OPT_T(&opts.cache, "cache mode (default writeback)"),
	    CLI_OPT_AIO(&opts.aio),
	    CLI_OPTS_PROGRESS(&progress, &json, &quiet, ""),
	    CLI_O_NOP(0, "force", CLI_H_NOP),
	    CLI_OPT_QEMU_END,
	};
	struct cli_parser p = {.cmd = "amend", .opts = table};
	int st;
	if (!cli_parse_optlist(&p, argc, argv, &optstr, amend_help,
			       &opts.format, &st))
		return st;
	if (!optstr) {
		cli_error("amend: must specify options (-o)");
		goto out;
	}
	if (p.npos != 1) {
		cli_error("amend: expecting one image file name");
		goto out;
	}
	const char *file = p.pos[0];
	if (amend_parse_opts(&ao, file, optstr) < 0)
		goto out;

	/* With its backing chain: a downgrade must know whether zero
	 * clusters hide backing data. */
	if (cli_open(file, &opts, &img) < 0)
		goto out;

	cli_progress_init(&prog, progress && !quiet, json);
	cli_progress_update(&prog, 0, cp_image_size(img));
	if (cli_progress_finish(&prog, cp_image_amend(img, &ao), file) < 0)
		goto out;
	ret = 0;
out:
	if (img && cli_close(img) < 0)
		ret = 1;
	free(optstr);
	return ret;
}
