/* cli/cmd_task.c - `cowpool task`: the daemon's tasks and the task
 * journal.  The options come from api/methods.def. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define V "task"

static void print_task_list(const cp_json *res)
{
	printf("%-36s  %-16s  %-10s  %8s  %s\n", "TASK", "TYPE", "STATE",
	       "PROGRESS", "ERROR");
	for (size_t i = 0; i < cp_json_count(res); i++) {
		const cp_json *t = cp_json_at(res, i);
		const cp_json *p = cp_json_get(t, "progress");
		const cp_json *e = cp_json_get(t, "error");
		double pct = 0;
		if (p && cp_json_get(p, "percent"))
			cp_json_double(cp_json_get(p, "percent"), &pct);
		printf("%-36s  %-16s  %-10s  %7.2f%%  %s\n", cli_jstr(t, "task"),
		       cli_jstr(t, "type"), cli_jstr(t, "state"), pct,
		       e && cp_json_type(e) == CP_JSON_OBJECT
			   ? cli_jstr(e, "message") : "");
	}
}

/* Waits in the daemon; exit status 1 unless the task ended well. */
static int task_wait(const struct cli_subcmd *sub, int argc, char **argv)
{
	struct cli_call k;
	int r = cli_api_parse(V, sub, argc, argv, &k);
	if (r)
		return r < 0 ? 0 : r;
	struct cli_rpc c;
	cp_json *tree;
	const cp_json *res;
	r = cli_rpc_open(&c);
	if (!r)
		r = cli_rpc_call(&c, "task.wait", &k.params, &tree, &res);
	cli_rpc_close(&c);
	cp_jsonw_free(&k.params);
	if (r)
		return r;
	if (k.a.json)
		cli_print_json(res);
	else
		cli_print_human(res);
	const char *task = k.a.pos[0], *state = cli_jstr(res, "state");
	if (!strcmp(state, "failed") || !strcmp(state, "aborted")) {
		const cp_json *e = cp_json_get(res, "error");
		cli_error("task %s %s: %s", task, state,
			  e ? cli_jstr(e, "message") : "-");
		r = CLI_EXIT_FAILED;
	} else if (!strcmp(state, "running") || !strcmp(state, "recovering")) {
		cli_error("task %s is still %s", task, state);
		r = CLI_EXIT_FAILED;
	}
	cp_json_free(tree);
	return r;
}

static const struct cli_subcmd task_subs[] = {
    {.name = "list", .method = "task.list", .print = print_task_list},
    {.name = "get", .method = "task.get"},
    {.name = "wait", .method = "task.wait", .fn = task_wait,
     .help = "Waits (in the daemon) until the task ends; exit status 1 if "
	     "it\nfailed or is still running at the timeout.\n"},
    {.name = "clear", .method = "task.clear"},
    {.name = NULL},
};

int cli_cmd_task(int argc, char **argv)
{
	return cli_verb_dispatch(V, task_subs, argc, argv);
}
