/* cli/cmd_image.c - `cowpool image`: images (volume chains) through
 * cowpoold. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define V "image"

static void print_image_info(const cp_json *res)
{
	const cp_json *vols = cp_json_get(res, "volumes");
	printf("image: %s\ndomain: %s\nleaf: %s\n", cli_jstr(res, "image"),
	       cli_jstr(res, "domain"), cli_jstr(res, "leaf"));
	printf("%-36s  %-36s  %-4s  %-12s  %-8s  %-7s  %10s  %10s  %s\n",
	       "VOLUME", "PARENT", "FMT", "ALLOCATION", "ROLE", "LEGAL",
	       "CAPACITY", "ALLOCATED", "DESCRIPTION");
	for (size_t i = 0; i < cp_json_count(vols); i++) {
		const cp_json *v = cp_json_at(vols, i);
		char cap[32], al[32] = "-";
		cli_size_to_str(cli_ju64(v, "capacity"), cap, sizeof(cap));
		if (cp_json_get(v, "allocated_size"))
			cli_size_to_str(cli_ju64(v, "allocated_size"), al,
					sizeof(al));
		printf("%-36s  %-36s  %-4s  %-12s  %-8s  %-7s  %10s  %10s  %s\n",
		       cli_jstr(v, "uuid"), cli_jstr(v, "parent"),
		       cli_jstr(v, "format"), cli_jstr(v, "allocation"),
		       cli_jstr(v, "role"), cli_jstr(v, "legality"), cap, al,
		       cli_jstr(v, "description"));
	}
	const cp_json *bad = cp_json_get(res, "bad_volumes");
	for (size_t i = 0; i < cp_json_count(bad); i++)
		printf("%-36s  BAD METADATA (%s)\n",
		       cli_jstr(cp_json_at(bad, i), "uuid"),
		       cli_jstr(cp_json_at(bad, i), "errno"));
}

static int img_list(const struct cli_subcmd *sub, int argc, char **argv)
{
	static const char *const keys[] = {"domain", NULL};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 1, 1);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run_pos("image.list", &a, keys, NULL);
}

static int img_info(const struct cli_subcmd *sub, int argc, char **argv)
{
	static const char *const keys[] = {"domain", "image", NULL};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 2, 2);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run_pos("image.info", &a, keys, print_image_info);
}

static int img_delete(const struct cli_subcmd *sub, int argc, char **argv)
{
	static const char *const keys[] = {"domain", "image", NULL};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 2, 2);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run_task_pos("image.delete", &a, keys);
}

static int img_copy(const struct cli_subcmd *sub, int argc, char **argv)
{
	static const char *const keys[] = {"domain", "image", "target_domain",
					   NULL};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 3, 3);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run_task_pos("image.copy", &a, keys);
}

static int img_snapshot(const struct cli_subcmd *sub, int argc, char **argv)
{
	static const char *const keys[] = {"domain", "image", NULL};
	const char *desc = NULL, *vol = NULL;
	const struct cli_opt opts[] = {
	    CLI_VAL("desc", &desc), CLI_VAL("volume", &vol), CLI_OPT_END,
	};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, opts, &a, 2, 2);
	if (r)
		return r < 0 ? 0 : r;
	struct cp_jsonw w;
	cli_params_pos(&w, &a, keys);
	if (desc)
		cp_jsonw_str(&w, "description", desc);
	if (vol)
		cp_jsonw_str(&w, "volume", vol);
	cp_jsonw_obj_end(&w);
	r = cli_run_task("image.snapshot", &w, a.json, a.async, NULL);
	cp_jsonw_free(&w);
	return r;
}

static const struct cli_subcmd img_subs[] = {
    {"list", img_list, "list DOMAIN [--output=json]", NULL, false},
    {"info", img_info, "info DOMAIN IMAGE [--output=json]",
     "The image's volumes in chain order, base first.\n", false},
    {"delete", img_delete, "delete DOMAIN IMAGE [--async]", NULL, true},
    {"copy", img_copy, "copy DOMAIN IMAGE TARGET_DOMAIN [--async]", NULL,
     true},
    {"snapshot", img_snapshot,
     "snapshot DOMAIN IMAGE [--desc TEXT] [--volume UUID] [--async]",
     "A new leaf volume on top of the image's current leaf.\n", true},
    {NULL, NULL, NULL, NULL, false},
};

int cli_cmd_image(int argc, char **argv)
{
	return cli_verb_dispatch(V, img_subs, argc, argv);
}
