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

/* `spm start --wait` without a value: as long as the lease timeline
 * allows (the daemon caps the wait at takeover_max). */
#define SPM_WAIT_MAX "3600"

static int spm_start(const struct cli_subcmd *sub, int argc, char **argv)
{
	static char wait_max[] = "--wait=" SPM_WAIT_MAX;
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "--wait"))
			argv[i] = wait_max;
	return cli_api_run(V, sub, argc, argv);
}

static const struct cli_subcmd spm_subs[] = {
    {.name = "start", .method = "spm.start", .fn = spm_start,
     .usage = "start [--wait[=SECONDS]] [--output=json]",
     .print = print_spm_status,
     .help = "Acquire the SPM lease (recovers unfinished tasks first).\n"
	     "--wait: while another host holds the lease or a dead holder's\n"
	     "lease has not expired, keep trying for SECONDS (default: as\n"
	     "long as the lease timeline allows, takeover_max of the\n"
	     "master's io_timeout); the daemon logs the expected expiry.\n"},
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
