/* cli/cmd_template.c - `cowpool template`: templates and clones through
 * cowpoold. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define V "template"

static int tmpl_create(const struct cli_subcmd *sub, int argc, char **argv)
{
	static const char *const keys[] = {"domain", "image", NULL};
	const char *vol = NULL, *desc = NULL, *timg = NULL, *tvol = NULL,
		   *format = NULL;
	const struct cli_opt opts[] = {
	    CLI_VAL("volume", &vol), CLI_VAL("desc", &desc), CLI_VAL("template-image", &timg),
	    CLI_VAL("template-volume", &tvol), CLI_VAL("format", &format), CLI_OPT_END,
	};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, opts, &a, 2, 2);
	if (r)
		return r < 0 ? 0 : r;
	struct cp_jsonw w;
	cli_params_pos(&w, &a, keys);
	if (vol)
		cp_jsonw_str(&w, "volume", vol);
	if (desc)
		cp_jsonw_str(&w, "description", desc);
	if (timg)
		cp_jsonw_str(&w, "template_image", timg);
	if (tvol)
		cp_jsonw_str(&w, "template_volume", tvol);
	if (format)
		cp_jsonw_str(&w, "format", format);
	cp_jsonw_obj_end(&w);
	r = cli_run_task("template.create", &w, a.json, a.async, NULL);
	cp_jsonw_free(&w);
	return r;
}

static int tmpl_clone(const struct cli_subcmd *sub, int argc, char **argv)
{
	static const char *const keys[] = {"domain", "template_image",
					   "template_volume", NULL};
	const char *img = NULL, *vol = NULL, *desc = NULL;
	bool full = false;
	const struct cli_opt opts[] = {
	    CLI_VAL("image", &img), CLI_VAL("volume", &vol), CLI_VAL("desc", &desc),
	    CLI_FLAG("full", &full), CLI_OPT_END,
	};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, opts, &a, 3, 3);
	if (r)
		return r < 0 ? 0 : r;
	struct cp_jsonw w;
	cli_params_pos(&w, &a, keys);
	if (img)
		cp_jsonw_str(&w, "image", img);
	if (vol)
		cp_jsonw_str(&w, "volume", vol);
	if (desc)
		cp_jsonw_str(&w, "description", desc);
	cp_jsonw_str(&w, "mode", full ? "full" : "thin");
	cp_jsonw_obj_end(&w);
	r = cli_run_task("template.clone", &w, a.json, a.async, NULL);
	cp_jsonw_free(&w);
	return r;
}

static const struct cli_subcmd tmpl_subs[] = {
    {"create", tmpl_create,
     "create DOMAIN IMAGE [--volume VOL] [--desc TEXT] [--template-image U] "
     "[--template-volume U] [--format cow|raw] [--async]",
     "Collapses the chain of IMAGE (up to VOL, default its leaf) into one\n"
     "shared volume in a new image.\n",
     true},
    {"clone", tmpl_clone,
     "clone DOMAIN TEMPLATE_IMAGE TEMPLATE_VOLUME [--full] [--image IMG] "
     "[--volume VOL] [--desc TEXT] [--async]",
     "A new disk from a template: a thin qcow2 overlay, or with --full an\n"
     "independent copy.\n",
     true},
    {NULL, NULL, NULL, NULL, false},
};

int cli_cmd_template(int argc, char **argv)
{
	return cli_verb_dispatch(V, tmpl_subs, argc, argv);
}
