/* cli/cmd_image.c - `cowpool image`: images (volume chains) through
 * cowpoold.  The options come from api/methods.def. */
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

static const struct cli_subcmd img_subs[] = {
    {.name = "list", .method = "image.list"},
    {.name = "info", .method = "image.info", .print = print_image_info,
     .help = "The image's volumes in chain order, base first.\n"},
    {.name = "delete", .method = "image.delete"},
    {.name = "copy", .method = "image.copy"},
    {.name = "snapshot", .method = "image.snapshot",
     .help = "A new leaf volume on top of the image's current leaf.\n"},
    {.name = NULL},
};

int cli_cmd_image(int argc, char **argv)
{
	return cli_verb_dispatch(V, img_subs, argc, argv);
}
