/* cli/cmd_check.c - `cowpool check`: qemu-img check.
 *
 * Exit status as qemu-img: 0 no problem, 1 the check could not complete,
 * 2 corruptions found, 3 only leaks found, 63 the format cannot be checked.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

enum {
	CHECK_EXIT_OK = 0,
	CHECK_EXIT_FAILED = 1,
	CHECK_EXIT_CORRUPT = 2,
	CHECK_EXIT_LEAKS = 3,
	CHECK_EXIT_NOTSUP = 63,
};

static void check_report(void *opaque CP_UNUSED, const char *msg)
{
	size_t n = strlen(msg);
	fflush(stdout);
	fputs(msg, stderr);
	if (!n || msg[n - 1] != '\n')
		fputc('\n', stderr);
}

static void check_print_human(const struct cp_check_result *r)
{
	if (!(r->corruptions || r->leaks || r->check_errors)) {
		printf("No errors were found on the image.\n");
	} else {
		if (r->corruptions)
			printf("\n%" PRIu64 " errors were found on the image.\n"
			       "Data may be corrupted, or further writes to "
			       "the image may corrupt it.\n",
			       r->corruptions);
		if (r->leaks)
			printf("\n%" PRIu64
			       " leaked clusters were found on the image.\n"
			       "This means waste of disk space, but no harm "
			       "to data.\n",
			       r->leaks);
		if (r->check_errors)
			printf("\n%" PRIu64 " internal errors have occurred "
			       "during the check.\n",
			       r->check_errors);
	}
	if (r->total_clusters && r->allocated_clusters)
		printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% "
		       "fragmented, %0.2f%% compressed clusters\n",
		       r->allocated_clusters, r->total_clusters,
		       (double)r->allocated_clusters * 100.0 /
			   (double)r->total_clusters,
		       (double)r->fragmented_clusters * 100.0 /
			   (double)r->allocated_clusters,
		       (double)r->compressed_clusters * 100.0 /
			   (double)r->allocated_clusters);
	if (r->image_end_offset)
		printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

static void check_print_json(const struct cp_check_result *r, const char *file,
			     enum cp_fmt fmt)
{
	struct cli_json *o = cli_json_new();
	/* qemu-img's ImageCheck: optional members only when non-zero. */
	cli_json_add_str(o, "filename", file);
	cli_json_add_str(o, "format", cp_fmt_name(fmt));
	cli_json_add_int(o, "check-errors", (int64_t)r->check_errors);
	const struct {
		const char *key;
		uint64_t val;
	} opt[] = {
	    {"image-end-offset", r->image_end_offset},
	    {"corruptions", r->corruptions},
	    {"leaks", r->leaks},
	    {"corruptions-fixed", r->corruptions_fixed},
	    {"leaks-fixed", r->leaks_fixed},
	    {"total-clusters", r->total_clusters},
	    {"allocated-clusters", r->allocated_clusters},
	    {"fragmented-clusters", r->fragmented_clusters},
	    {"compressed-clusters", r->compressed_clusters},
	};
	for (size_t i = 0; i < CP_ARRAY_SIZE(opt); i++) {
		if (opt[i].val)
			cli_json_add_int(o, opt[i].key, (int64_t)opt[i].val);
	}
	cli_json_print(stdout, o, 0);
	putchar('\n');
	cli_json_free(o);
}

static int check_opt_repair(struct cli_parser *p, const struct cli_opt *o,
			    const char *arg)
{
	unsigned *repair = o->dst;
	if (!strcmp(arg, "leaks"))
		*repair = CP_CHECK_REPAIR_LEAKS;
	else if (!strcmp(arg, "all"))
		*repair = CP_CHECK_REPAIR_ALL;
	else {
		cli_error("%s: invalid -r value '%s' (expected leaks or all)",
			  p->cmd, arg);
		return -EINVAL;
	}
	return 0;
}

int cli_cmd_check(int argc, char **argv)
{
	struct cp_open_opts opts;
	bool json = false, quiet = false;
	unsigned repair = 0;
	cp_image *img;

	cp_open_opts_init(&opts);
	/* like qemu-img, the backing chain is opened: a missing backing file
	 * or a loop is an error */
	opts.for_check = true;
	const struct cli_opt table[] = {
	    CLI_OPT_F(&opts.format,
		      "image format (qcow2, raw; probed if omitted)"),
	    CLI_OPT_OUTPUT(&json, "ofmt", "human (default) or json"),
	    CLI_O_FN('r', "repair", "leaks|all", check_opt_repair, &repair,
		     "repair leaked clusters only, or all errors"),
	    CLI_OPT_QUIET(&quiet),
	    CLI_OPTS_OPEN_END(&opts,
			      "cache mode (none, writeback, writethrough,\n"
			      "directsync, unsafe)"),
	};
	const char *file;
	int st = cli_parse_files("check", table, argc, argv, 1, &file);
	if (!file)
		return st;

	opts.readonly = !repair;
	if (cli_open(file, &opts, &img) < 0)
		return CHECK_EXIT_FAILED;

	enum cp_fmt fmt = cp_image_format(img);
	if (fmt != CP_FMT_QCOW2) {
		cp_image_close(img);
		cli_error("%s: this image format (%s) does not support checks",
			  file, cp_fmt_name(fmt));
		return CHECK_EXIT_NOTSUP;
	}

	struct cp_check_result res = {0};
	int r = cp_image_check(img, repair, &res, check_report, NULL);
	if (r == 0 && (res.corruptions_fixed || res.leaks_fixed)) {
		uint64_t cfixed = res.corruptions_fixed;
		uint64_t lfixed = res.leaks_fixed;
		if (!quiet && !json)
			printf("The following inconsistencies were found and "
			       "repaired:\n\n"
			       "    %" PRIu64 " leaked clusters\n"
			       "    %" PRIu64 " corruptions\n\n"
			       "Double checking the fixed image now...\n",
			       lfixed, cfixed);
		memset(&res, 0, sizeof(res));
		r = cp_image_check(img, 0, &res, check_report, NULL);
		res.corruptions_fixed = cfixed;
		res.leaks_fixed = lfixed;
	}

	int ret;
	if (r == -ENOTSUP) {
		cli_error("%s: this image format does not support checks",
			  file);
		ret = CHECK_EXIT_NOTSUP;
		goto out;
	}
	if (r == 0 && !quiet) {
		if (json)
			check_print_json(&res, file, fmt);
		else
			check_print_human(&res);
	}
	if (r < 0) {
		const char *msg = cp_error_msg(r);
		if (!strstr(msg, file))
			cli_error("%s: check failed: %s", file, msg);
		else
			cli_error("check failed: %s", msg);
		ret = CHECK_EXIT_FAILED;
	} else if (res.check_errors) {
		cli_error("%s: check failed", file);
		ret = CHECK_EXIT_FAILED;
	} else if (res.corruptions) {
		ret = CHECK_EXIT_CORRUPT;
	} else if (res.leaks) {
		ret = CHECK_EXIT_LEAKS;
	} else {
		ret = CHECK_EXIT_OK;
	}
out:
	if (cli_close(img) < 0 && ret == CHECK_EXIT_OK)
		ret = CHECK_EXIT_FAILED;
	return ret;
}
