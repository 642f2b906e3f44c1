/* cli/cmd_volume.c - `cowpool volume`: volumes through cowpoold.  The
 * options come from the methods' entries in api/methods.def. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define V "volume"

static int vol_create_check(const struct cli_subcmd *sub,
			    const struct cli_call *k)
{
	if (!cli_call_val(k, "capacity") && !cli_call_val(k, "parent"))
		return cli_usage_error(V, sub, "--size is required (except "
				       "for a snapshot with --parent)");
	return 0;
}

static const struct cli_subcmd vol_subs[] = {
    {.name = "create", .method = "volume.create", .check = vol_create_check,
     .help = "Without --image a new image is created.  With --parent the "
	     "volume is\na snapshot layer on top of VOL (--size may be left "
	     "out).\n"},
    {.name = "info", .method = "volume.info"},
    {.name = "list", .method = "volume.list"},
    {.name = "delete", .method = "volume.delete"},
    {.name = "merge", .method = "volume.merge",
     .help = "Deletes the snapshot layer VOLUME by merging it into its "
	     "parent.\n"},
    {.name = "extend", .method = "volume.extend"},
    {.name = "prepare", .method = "volume.prepare",
     .help = "--rw takes the volume's lease (leaf volumes only).\n"},
    {.name = "teardown", .method = "volume.teardown"},
    {.name = "export", .method = "volume.export",
     .help = "Serves the volume's chain over NBD on this host; prints the "
	     "nbd+unix:// URI.\n--rw takes the volume's lease (leaf "
	     "volumes only).\n"},
    {.name = "unexport", .method = "volume.unexport",
     .help = "Give DOMAIN IMAGE VOLUME or --name.  Without --force it "
	     "fails while clients\nare connected.\n"},
    {.name = NULL},
};

int cli_cmd_volume(int argc, char **argv)
{
	return cli_verb_dispatch(V, vol_subs, argc, argv);
}
