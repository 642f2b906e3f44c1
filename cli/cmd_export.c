/* cli/cmd_export.c - `cowpool export`: the NBD exports of cowpoold (made
 * with `cowpool volume export`).  The options come from api/methods.def. */
#include <inttypes.h>
#include <stdio.h>

#include "cli.h"

#define V "export"

static void print_export_list(const cp_json *res)
{
	printf("%-36s  %-2s  %7s  %14s  %14s  %10s  %s\n", "NAME", "RW",
	       "CLIENTS", "READ", "WRITTEN", "OPS", "URI");
	for (size_t i = 0; i < cp_json_count(res); i++) {
		const cp_json *e = cp_json_at(res, i);
		const cp_json *rw = cp_json_get(e, "rw");
		bool w = false;
		if (rw)
			cp_json_bool(rw, &w);
		printf("%-36s  %-2s  %7" PRIu64 "  %14" PRIu64 "  %14" PRIu64
		       "  %10" PRIu64 "  %s\n",
		       cli_jstr(e, "name"), w ? "rw" : "ro",
		       cli_ju64(e, "clients"), cli_ju64(e, "bytes_read"),
		       cli_ju64(e, "bytes_written"), cli_ju64(e, "ops"),
		       cli_jstr(e, "uri"));
	}
}

static const struct cli_subcmd export_subs[] = {
    {.name = "list", .method = "export.list", .print = print_export_list,
     .help = "Every export of this host with its clients, bytes read and "
	     "written\nand requests answered.\n"},
    {.name = NULL},
};

int cli_cmd_export(int argc, char **argv)
{
	return cli_verb_dispatch(V, export_subs, argc, argv);
}
