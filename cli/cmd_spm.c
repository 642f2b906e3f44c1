/* cli/cmd_spm.c - `cowpool spm`: the Storage Pool Manager role of this
 * host, through cowpoold. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define V "spm"

static void print_spm_status(const cp_json *res)
{
	const char *role = cli_jstr(res, "role");
	uint64_t host = cli_ju64(res, "host_id"), lver = cli_ju64(res, "lver");
	if (!strcmp(role, "SPM"))
		printf("SPM: this host (host %" PRIu64 ", lease version %" PRIu64
		       ")\n", host, lver);
	else if (host)
		printf("%s: SPM is host %" PRIu64 " (lease version %" PRIu64
		       ")\n", role, host, lver);
	else
		printf("%s: no SPM (lease version %" PRIu64 ")\n", role, lver);
}

static const struct cli_subcmd spm_subs[] = {
    {.name = "start", .method = "spm.start", .print = print_spm_status,
     .help = "Acquire the SPM lease (recovers unfinished tasks first).\n"},
    {.name = "stop", .method = "spm.stop", .print = print_spm_status,
     .help = "Release the SPM role; refused while tasks run unless "
	     "--force.\n"},
    {.name = "status", .method = "spm.status", .print = print_spm_status,
     .help = "SPM (this host), Contending (another host or starting) or "
	     "Free.\n"},
    {.name = NULL},
};

int cli_cmd_spm(int argc, char **argv)
{
	return cli_verb_dispatch(V, spm_subs, argc, argv);
}
