/* cli/cmd_volume.c - `cowpool volume`: volumes through cowpoold. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define V "volume"

static int vol_create(const struct cli_subcmd *sub, int argc, char **argv)
{
	const char *size = NULL, *img = NULL, *vol = NULL, *parent = NULL,
		   *parent_img = NULL, *format = NULL, *initial = NULL,
		   *desc = NULL;
	bool prealloc = false;
	const struct cli_opt opts[] = {
	    CLI_VAL("size", &size), CLI_VAL("image", &img), CLI_VAL("volume", &vol),
	    CLI_VAL("parent", &parent), CLI_VAL("parent-image", &parent_img),
	    CLI_VAL("format", &format), CLI_FLAG("prealloc", &prealloc),
	    CLI_VAL("initial-size", &initial), CLI_VAL("desc", &desc), CLI_OPT_END,
	};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, opts, &a, 1, 1);
	if (r)
		return r < 0 ? 0 : r;
	if (!size && !parent)
		return cli_usage_error(V, sub, "--size is required (except "
				       "for a snapshot with --parent)");
	if (format && strcmp(format, "cow") && strcmp(format, "raw"))
		return cli_usage_error(V, sub, "--format must be cow or raw");
	uint64_t sz = 0, isz = 0;
	if ((size && cli_parse_size("size", size, &sz) < 0) ||
	    (initial && cli_parse_size("initial size", initial, &isz) < 0))
		return CLI_EXIT_USAGE;
	struct cp_jsonw w;
	cp_jsonw_init(&w);
	cp_jsonw_obj_begin(&w, NULL);
	cp_jsonw_str(&w, "domain", a.pos[0]);
	if (img)
		cp_jsonw_str(&w, "image", img);
	if (vol)
		cp_jsonw_str(&w, "volume", vol);
	if (parent)
		cp_jsonw_str(&w, "parent", parent);
	if (parent_img)
		cp_jsonw_str(&w, "parent_image", parent_img);
	cp_jsonw_str(&w, "format", format ? format : "cow");
	cp_jsonw_str(&w, "allocation", prealloc ? "preallocated" : "sparse");
	if (size)
		cp_jsonw_u64(&w, "capacity", sz);
	if (initial)
		cp_jsonw_u64(&w, "initial_size", isz);
	if (desc)
		cp_jsonw_str(&w, "description", desc);
	cp_jsonw_obj_end(&w);
	r = cli_run_task("volume.create", &w, a.json, a.async, NULL);
	cp_jsonw_free(&w);
	return r;
}

static const char *const dom_img_vol[] = {"domain", "image", "volume", NULL};

static int vol_info(const struct cli_subcmd *sub, int argc, char **argv)
{
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 3, 3);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run_pos("volume.info", &a, dom_img_vol, NULL);
}

static int vol_list(const struct cli_subcmd *sub, int argc, char **argv)
{
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 2, 2);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run_pos("volume.list", &a, dom_img_vol, NULL);
}

static int vol_task(const struct cli_subcmd *sub, int argc, char **argv,
		    const char *method)
{
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 3, 3);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run_task_pos(method, &a, dom_img_vol);
}

static int vol_delete(const struct cli_subcmd *sub, int argc, char **argv)
{
	return vol_task(sub, argc, argv, "volume.delete");
}

static int vol_merge(const struct cli_subcmd *sub, int argc, char **argv)
{
	return vol_task(sub, argc, argv, "volume.merge");
}

static int vol_extend(const struct cli_subcmd *sub, int argc, char **argv)
{
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 4, 4);
	if (r)
		return r < 0 ? 0 : r;
	uint64_t sz;
	if (cli_parse_size("size", a.pos[3], &sz) < 0)
		return CLI_EXIT_USAGE;
	struct cp_jsonw w;
	cli_params_pos(&w, &a, dom_img_vol);
	cp_jsonw_u64(&w, "size", sz);
	cp_jsonw_obj_end(&w);
	r = cli_run("volume.extend", &w, a.json, NULL);
	cp_jsonw_free(&w);
	return r;
}

static int vol_prepare(const struct cli_subcmd *sub, int argc, char **argv)
{
	bool rw = false;
	const struct cli_opt opts[] = {CLI_FLAG("rw", &rw), CLI_OPT_END};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, opts, &a, 3, 3);
	if (r)
		return r < 0 ? 0 : r;
	struct cp_jsonw w;
	cli_params_pos(&w, &a, dom_img_vol);
	cp_jsonw_bool(&w, "rw", rw);
	cp_jsonw_obj_end(&w);
	r = cli_run("volume.prepare", &w, a.json, NULL);
	cp_jsonw_free(&w);
	return r;
}

static int vol_teardown(const struct cli_subcmd *sub, int argc, char **argv)
{
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 3, 3);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run_pos("volume.teardown", &a, dom_img_vol, NULL);
}

static const struct cli_subcmd vol_subs[] = {
    {"create", vol_create,
     "create DOMAIN --size SIZE [--image IMG] [--volume VOL] [--parent VOL "
     "[--parent-image IMG]] [--format cow|raw] [--prealloc] "
     "[--initial-size SIZE] [--desc TEXT] [--async]",
     "Without --image a new image is created.  With --parent the volume is\n"
     "a snapshot layer on top of VOL (--size may be left out).\n",
     true},
    {"info", vol_info, "info DOMAIN IMAGE VOLUME [--output=json]", NULL,
     false},
    {"list", vol_list, "list DOMAIN IMAGE [--output=json]", NULL, false},
    {"delete", vol_delete, "delete DOMAIN IMAGE VOLUME [--async]", NULL,
     true},
    {"merge", vol_merge, "merge DOMAIN IMAGE VOLUME [--async]",
     "Deletes the snapshot layer VOLUME by merging it into its parent.\n",
     true},
    {"extend", vol_extend, "extend DOMAIN IMAGE VOLUME SIZE", NULL, false},
    {"prepare", vol_prepare, "prepare DOMAIN IMAGE VOLUME [--rw]",
     "--rw takes the volume's lease (leaf volumes only).\n", false},
    {"teardown", vol_teardown, "teardown DOMAIN IMAGE VOLUME", NULL, false},
    {NULL, NULL, NULL, NULL, false},
};

int cli_cmd_volume(int argc, char **argv)
{
	return cli_verb_dispatch(V, vol_subs, argc, argv);
}
