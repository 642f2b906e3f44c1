/* cli/cmd_task.c - `cowpool task`: the daemon's tasks and the task
 * journal. */
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

static const char *const task_key[] = {"task", NULL};

static int task_list(const struct cli_subcmd *sub, int argc, char **argv)
{
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 0, 0);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run("task.list", NULL, a.json, print_task_list);
}

static int task_get(const struct cli_subcmd *sub, int argc, char **argv)
{
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 1, 1);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run_pos("task.get", &a, task_key, NULL);
}

static int task_wait(const struct cli_subcmd *sub, int argc, char **argv)
{
	const char *timeout = NULL;
	const struct cli_opt opts[] = {CLI_VAL("timeout", &timeout), CLI_OPT_END};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, opts, &a, 1, 1);
	if (r)
		return r < 0 ? 0 : r;
	struct cp_jsonw w;
	cli_params_pos(&w, &a, task_key);
	if (timeout) {
		char *end;
		double t = strtod(timeout, &end);
		if (end == timeout || *end || t < 0) {
			cp_jsonw_free(&w);
			cli_error("invalid timeout '%s': expected seconds",
				  timeout);
			return CLI_EXIT_USAGE;
		}
		cp_jsonw_double(&w, "timeout", t);
	}
	cp_jsonw_obj_end(&w);
	struct cli_rpc c;
	cp_json *tree;
	const cp_json *res;
	r = cli_rpc_open(&c);
	if (!r)
		r = cli_rpc_call(&c, "task.wait", &w, &tree, &res);
	cli_rpc_close(&c);
	cp_jsonw_free(&w);
	if (r)
		return r;
	if (a.json)
		cli_print_json(res);
	else
		cli_print_human(res);
	const char *state = cli_jstr(res, "state");
	if (!strcmp(state, "failed") || !strcmp(state, "aborted")) {
		const cp_json *e = cp_json_get(res, "error");
		cli_error("task %s %s: %s", a.pos[0], state,
			  e ? cli_jstr(e, "message") : "-");
		r = CLI_EXIT_FAILED;
	} else if (!strcmp(state, "running") || !strcmp(state, "recovering")) {
		cli_error("task %s is still %s", a.pos[0], state);
		r = CLI_EXIT_FAILED;
	}
	cp_json_free(tree);
	return r;
}

static int task_clear(const struct cli_subcmd *sub, int argc, char **argv)
{
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, NULL, &a, 1, 1);
	if (r)
		return r < 0 ? 0 : r;
	return cli_run_pos("task.clear", &a, task_key, NULL);
}

static const struct cli_subcmd task_subs[] = {
    {"list", task_list, "list [--output=json]", NULL, false},
    {"get", task_get, "get TASK [--output=json]", NULL, false},
    {"wait", task_wait, "wait TASK [--timeout SECONDS] [--output=json]",
     "Waits (in the daemon) until the task ends; exit status 1 if it\n"
     "failed or is still running at the timeout.\n",
     false},
    {"clear", task_clear, "clear TASK", NULL, false},
    {NULL, NULL, NULL, NULL, false},
};

int cli_cmd_task(int argc, char **argv)
{
	return cli_verb_dispatch(V, task_subs, argc, argv);
}
