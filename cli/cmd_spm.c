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

static int spm_start(const struct cli_subcmd *sub, int argc, char **argv)
{
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 0, 0);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run("spm.start", NULL, a.json, print_spm_status);
}

static int spm_stop(const struct cli_subcmd *sub, int argc, char **argv)
{
	bool force = false;
	const struct cli_opt opts[] = {CLI_FLAG("force", &force), CLI_OPT_END};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, opts, &a, 0, 0);
	if (r)
		return r < 0 ? 0 : r;
	struct cp_jsonw w;
	cp_jsonw_init(&w);
	cp_jsonw_obj_begin(&w, NULL);
	if (force)
		cp_jsonw_bool(&w, "force", true);
	cp_jsonw_obj_end(&w);
	r = cli_run("spm.stop", &w, a.json, print_spm_status);
	cp_jsonw_free(&w);
	return r;
}

static int spm_status(const struct cli_subcmd *sub, int argc, char **argv)
{
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 0, 0);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run("spm.status", NULL, a.json, print_spm_status);
}

static const struct cli_subcmd spm_subs[] = {
    {"start", spm_start, "start",
     "Acquire the SPM lease (recovers unfinished tasks first).\n", false},
    {"stop", spm_stop, "stop [--force]",
     "Release the SPM role; refused while tasks run unless --force.\n",
     false},
    {"status", spm_status, "status [--output=json]",
     "SPM (this host), Contending (another host or starting) or Free.\n",
     false},
    {NULL, NULL, NULL, NULL, false},
};

int cli_cmd_spm(int argc, char **argv)
{
	return cli_verb_dispatch(V, spm_subs, argc, argv);
}
