/* cli/rpc.c - the client side of cowpoold's JSON-RPC API (docs/api.md), and
 * the helpers the daemon verbs share: connecting, calling, waiting for
 * tasks, printing results.  Also `cowpool rpc`, raw access to the API.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"

const char *cli_socket;

const char *cli_socket_path(void)
{
	static char buf[4096];
	if (cli_socket)
		return cli_socket;
	const char *s = getenv("COWPOOL_SOCKET");
	if (s && *s)
		return s;
	const char *run = getenv("COWPOOL_RUN_DIR");
	snprintf(buf, sizeof(buf), "%s/cowpoold.sock",
		 run && *run ? run : "/run/cowpool");
	return buf;
}

int cli_rpc_open(struct cli_rpc *c)
{
	const char *path = cli_socket_path();
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->next_id = 1;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		cli_error("cannot connect to cowpoold at %s: path too long",
			  path);
		return CLI_EXIT_NO_DAEMON;
	}
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		cli_error("cannot connect to cowpoold at %s: %s", path,
			  strerror(errno));
		if (fd >= 0)
			close(fd);
		return CLI_EXIT_NO_DAEMON;
	}
	c->fd = fd;
	return 0;
}

void cli_rpc_close(struct cli_rpc *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	c->fd = -1;
	c->buf = NULL;
}

/* Read one line (without '\n') into c->buf; *len its length.  0, or -EPIPE
 * at EOF, -errno. */
static int rpc_read_line(struct cli_rpc *c, size_t *len)
{
	for (;;) {
		char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
		if (nl) {
			*len = (size_t)(nl - c->buf);
			return 0;
		}
		if (c->len + 65536 > c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 131072;
			char *p = realloc(c->buf, cap);
			if (!p)
				return -ENOMEM;
			c->buf = p;
			c->cap = cap;
		}
		ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EPIPE;
		c->len += (size_t)n;
	}
}

static void rpc_consume_line(struct cli_rpc *c, size_t len)
{
	memmove(c->buf, c->buf + len + 1, c->len - len - 1);
	c->len -= len + 1;
}

int cli_rpc_call(struct cli_rpc *c, const char *method,
		 struct cp_jsonw *params, cp_json **tree,
		 const cp_json **result)
{
	struct cp_jsonw w;
	uint64_t id = c->next_id++;
	*tree = NULL;
	cp_jsonw_init(&w);
	cp_jsonw_obj_begin(&w, NULL);
	cp_jsonw_str(&w, "jsonrpc", "2.0");
	cp_jsonw_str(&w, "method", method);
	if (params && params->len)
		cp_jsonw_raw(&w, "params", params->buf, params->len);
	cp_jsonw_u64(&w, "id", id);
	cp_jsonw_obj_end(&w);
	if (cp_jsonw_error(&w) < 0) {
		cp_jsonw_free(&w);
		return cli_error("out of memory");
	}
	int r = cp_send_all(c->fd, w.buf, w.len);
	if (!r)
		r = cp_send_all(c->fd, "\n", 1);
	cp_jsonw_free(&w);
	size_t len = 0;
	if (!r)
		r = rpc_read_line(c, &len);
	if (r < 0) {
		cli_error("lost the connection to cowpoold at %s: %s",
			  cli_socket_path(),
			  r == -EPIPE ? "connection closed" : strerror(-r));
		return CLI_EXIT_NO_DAEMON;
	}
	cp_json *resp;
	r = cp_json_parse(c->buf, len, NULL, &resp);
	rpc_consume_line(c, len);
	if (r < 0)
		return cli_error("bad answer from cowpoold: %s",
				 cp_error_msg(r));
	const cp_json *err = cp_json_get(resp, "error");
	const cp_json *res = cp_json_get(resp, "result");
	if (err) {
		const char *msg = cp_json_string(cp_json_get(err, "message"),
						 NULL);
		cli_error("%s", msg ? msg : "unknown error");
		cp_json_free(resp);
		return CLI_EXIT_FAILED;
	}
	if (!res) {
		cp_json_free(resp);
		return cli_error("bad answer from cowpoold: no result");
	}
	*tree = resp;
	*result = res;
	return 0;
}

/* ---- printing ------------------------------------------------------------- */

void cli_print_json(const cp_json *v)
{
	cp_json_print_pretty(stdout, v);
	putchar('\n');
}

static void print_scalar(const cp_json *v)
{
	switch (cp_json_type(v)) {
	case CP_JSON_STRING:
		fputs(cp_json_string(v, NULL), stdout);
		break;
	case CP_JSON_NULL:
		fputs("-", stdout);
		break;
	default:
		cp_json_print(stdout, v);
	}
}

static bool is_scalar(const cp_json *v)
{
	return cp_json_type(v) != CP_JSON_ARRAY &&
	       cp_json_type(v) != CP_JSON_OBJECT;
}

/* key: value lines; nested objects as prefix.key; arrays of scalars
 * joined with ", "; arrays of objects as numbered blocks. */
static void print_human_obj(const cp_json *v, const char *prefix, int indent)
{
	for (size_t i = 0; i < cp_json_count(v); i++) {
		const char *k = cp_json_key_at(v, i);
		const cp_json *m = cp_json_at(v, i);
		char key[256];
		snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "",
			 k);
		if (cp_json_type(m) == CP_JSON_OBJECT) {
			print_human_obj(m, key, indent);
			continue;
		}
		if (cp_json_type(m) == CP_JSON_ARRAY) {
			bool scalars = true;
			for (size_t j = 0; j < cp_json_count(m); j++)
				scalars &= is_scalar(cp_json_at(m, j));
			printf("%*s%s:", indent, "", key);
			if (scalars) {
				for (size_t j = 0; j < cp_json_count(m); j++) {
					fputs(j ? ", " : " ", stdout);
					print_scalar(cp_json_at(m, j));
				}
				putchar('\n');
			} else {
				putchar('\n');
				for (size_t j = 0; j < cp_json_count(m); j++) {
					printf("%*s[%zu]\n", indent + 2, "", j);
					print_human_obj(cp_json_at(m, j), "",
							indent + 4);
				}
			}
			continue;
		}
		printf("%*s%s: ", indent, "", key);
		print_scalar(m);
		putchar('\n');
	}
}

void cli_print_human(const cp_json *v)
{
	if (cp_json_type(v) == CP_JSON_OBJECT) {
		print_human_obj(v, "", 0);
	} else if (cp_json_type(v) == CP_JSON_ARRAY) {
		for (size_t j = 0; j < cp_json_count(v); j++) {
			const cp_json *e = cp_json_at(v, j);
			if (is_scalar(e)) {
				print_scalar(e);
				putchar('\n');
			} else {
				if (j)
					putchar('\n');
				print_human_obj(e, "", 0);
			}
		}
	} else {
		print_scalar(v);
		putchar('\n');
	}
}

const char *cli_jstr(const cp_json *obj, const char *key)
{
	const cp_json *v = cp_json_get(obj, key);
	const char *s = v ? cp_json_string(v, NULL) : NULL;
	return s ? s : "-";
}

uint64_t cli_ju64(const cp_json *obj, const char *key)
{
	uint64_t u = 0;
	const cp_json *v = cp_json_get(obj, key);
	if (v)
		cp_json_u64(v, &u);
	return u;
}

bool cli_jbool(const cp_json *obj, const char *key)
{
	bool b = false;
	const cp_json *v = cp_json_get(obj, key);
	if (v)
		cp_json_bool(v, &b);
	return b;
}

/* ---- calls ---------------------------------------------------------------- */

int cli_run(const char *method, struct cp_jsonw *params, bool json,
	    cli_printer_fn print)
{
	struct cli_rpc c;
	int r = cli_rpc_open(&c);
	if (r)
		return r;
	cp_json *tree;
	const cp_json *res;
	r = cli_rpc_call(&c, method, params, &tree, &res);
	cli_rpc_close(&c);
	if (r)
		return r;
	if (json)
		cli_print_json(res);
	else if (print)
		print(res);
	else
		cli_print_human(res);
	cp_json_free(tree);
	return 0;
}

int cli_run_task(const char *method, struct cp_jsonw *params, bool json,
		 bool async, cli_printer_fn print)
{
	struct cli_rpc c;
	int r = cli_rpc_open(&c);
	if (r)
		return r;
	cp_json *tree, *tree2 = NULL;
	const cp_json *res, *st;
	r = cli_rpc_call(&c, method, params, &tree, &res);
	if (r)
		goto out;
	const char *task = cp_json_string(cp_json_get(res, "task"), NULL);
	if (async || !task) {
		if (json)
			cli_print_json(res);
		else
			cli_print_human(res);
		goto out;
	}
	/* Wait server-side until the task ends. */
	struct cp_jsonw p;
	cp_jsonw_init(&p);
	cp_jsonw_obj_begin(&p, NULL);
	cp_jsonw_str(&p, "task", task);
	cp_jsonw_obj_end(&p);
	r = cli_rpc_call(&c, "task.wait", &p, &tree2, &st);
	cp_jsonw_free(&p);
	if (r)
		goto out;
	const char *state = cli_jstr(st, "state");
	bool ok = !strcmp(state, "done");
	if (json) {
		cli_print_json(st);
	} else if (ok) {
		const cp_json *result = cp_json_get(st, "result");
		/* The new UUIDs from the first answer, then the result. */
		printf("task: %s\n", task);
		for (size_t i = 0; i < cp_json_count(res); i++) {
			const char *k = cp_json_key_at(res, i);
			if (strcmp(k, "task") && is_scalar(cp_json_at(res, i))) {
				printf("%s: ", k);
				print_scalar(cp_json_at(res, i));
				putchar('\n');
			}
		}
		if (result && cp_json_type(result) == CP_JSON_OBJECT &&
		    cp_json_get(result, "volume")) {
			if (print)
				print(cp_json_get(result, "volume"));
			else
				print_human_obj(cp_json_get(result, "volume"),
						"volume", 0);
		}
	}
	if (!ok) {
		const cp_json *e = cp_json_get(st, "error");
		const char *msg = e ? cli_jstr(e, "message") : NULL;
		if (msg && strcmp(msg, "-"))
			cli_error("%s", msg);
		else
			cli_error("task %s ended in state %s", task, state);
		r = CLI_EXIT_FAILED;
	}
out:
	cp_json_free(tree);
	cp_json_free(tree2);
	cli_rpc_close(&c);
	return r;
}

/* ---- verbs ---------------------------------------------------------------- */

static const struct cp_api_method *sub_api(const struct cli_subcmd *sub)
{
	return sub->method ? cp_api_lookup(sub->method) : NULL;
}

static bool sub_is_task(const struct cli_subcmd *sub)
{
	const struct cp_api_method *m = sub_api(sub);
	return m && (m->flags & CP_API_TASK);
}

/* "DOMAIN", "TARGET_DOMAIN": a positional argument's name. */
static void upper(char *out, size_t len, const char *s)
{
	size_t i = 0;
	for (; s[i] && i + 1 < len; i++)
		out[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
	out[i] = 0;
}

static const char *metavar(const struct cp_api_param *p, char *buf,
			   size_t len)
{
	if (p->metavar)
		return p->metavar;
	switch (p->type) {
	case CP_API_SIZE:
		return "SIZE";
	case CP_API_UUID:
		return "UUID";
	case CP_API_U64:
	case CP_API_NUM:
		return "N";
	case CP_API_ENUM:
		buf[0] = 0;
		for (size_t i = 0; p->choices[i]; i++)
			snprintf(buf + strlen(buf), len - strlen(buf), "%s%s",
				 i ? "|" : "", p->choices[i]);
		return buf;
	default:
		return "TEXT";
	}
}

/* The usage line after "cowpool VERB ": the subcommand's own, else the
 * method's positional arguments and options. */
static void print_usage(FILE *f, const struct cli_subcmd *sub)
{
	const struct cp_api_method *m = sub_api(sub);
	char buf[128];
	if (sub->usage || !m) {
		fputs(sub->usage ? sub->usage : sub->name, f);
		return;
	}
	fputs(sub->name, f);
	for (int pos = 1; pos <= CP_API_MAX_PARAMS; pos++) {
		for (size_t i = 0; i < m->nparams; i++) {
			if (m->params[i].pos != pos)
				continue;
			upper(buf, sizeof(buf), m->params[i].name);
			fprintf(f, " %s", buf);
		}
	}
	for (size_t i = 0; i < m->nparams; i++) {
		const struct cp_api_param *p = &m->params[i];
		if (p->pos || !p->opt)
			continue;
		bool flag = p->type == CP_API_BOOL || p->flag_value;
		fprintf(f, " %s--%s", p->required ? "" : "[", p->opt);
		if (!flag)
			fprintf(f, " %s%s", metavar(p, buf, sizeof(buf)),
				p->type == CP_API_STRV ? "..." : "");
		if (!p->required)
			fputc(']', f);
	}
	fputs(sub_is_task(sub) ? " [--async] [--output=json]"
			       : " [--output=json]", f);
}

/* The options with their doc lines (from the method's table entry). */
static void print_options(const struct cli_subcmd *sub)
{
	const struct cp_api_method *m = sub_api(sub);
	char buf[128], opt[160];
	bool first = true;
	for (size_t i = 0; m && i < m->nparams; i++) {
		const struct cp_api_param *p = &m->params[i];
		if (p->pos || !p->opt || !p->doc)
			continue;
		if (first)
			printf("options:\n");
		first = false;
		if (p->type == CP_API_BOOL || p->flag_value)
			snprintf(opt, sizeof(opt), "--%s", p->opt);
		else
			snprintf(opt, sizeof(opt), "--%s %s", p->opt,
				 metavar(p, buf, sizeof(buf)));
		if (p->flag_value)
			printf("  %-24s %s = %s; %s\n", opt, p->name,
			       p->flag_value, p->doc);
		else
			printf("  %-24s %s\n", opt, p->doc);
	}
}

int cli_verb_dispatch(const char *verb, const struct cli_subcmd *subs,
		      int argc, char **argv)
{
	if (argc < 2) {
		cli_error("%s: expecting a subcommand; try 'cowpool %s "
			  "--help'", verb, verb);
		return CLI_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		printf("usage:\n");
		for (size_t i = 0; subs[i].name; i++) {
			printf("  cowpool [--socket PATH] %s ", verb);
			print_usage(stdout, &subs[i]);
			putchar('\n');
		}
		return 0;
	}
	for (size_t i = 0; subs[i].name; i++) {
		if (!strcmp(subs[i].name, argv[1])) {
			if (subs[i].fn)
				return subs[i].fn(&subs[i], argc - 1, argv + 1);
			return cli_api_run(verb, &subs[i], argc - 1, argv + 1);
		}
	}
	cli_error("%s: unknown subcommand '%s'; try 'cowpool %s --help'", verb,
		  argv[1], verb);
	return CLI_EXIT_USAGE;
}

int cli_sub_usage(const struct cli_subcmd *sub, const char *verb)
{
	printf("usage: cowpool [--socket PATH] %s ", verb);
	print_usage(stdout, sub);
	putchar('\n');
	if (sub->help)
		fputs(sub->help, stdout);
	print_options(sub);
	return 0;
}

int cli_usage_error(const char *verb, const struct cli_subcmd *sub,
		    const char *what)
{
	cli_error("%s %s: %s", verb, sub->name, what);
	fprintf(stderr, "usage: cowpool %s ", verb);
	print_usage(stderr, sub);
	fputc('\n', stderr);
	return CLI_EXIT_USAGE;
}

int cli_parse_uuid(const char *what, const char *s)
{
	if (cp_uuid_valid(s))
		return 0;
	cli_error("invalid %s '%s': expected a UUID (8-4-4-4-12 hex digits)",
		  what, s);
	return -EINVAL;
}

/* `cowpool rpc METHOD [PARAMS]` or `cowpool rpc --raw`: talk to the API
 * directly.  --raw sends standard input as it is and prints every answer
 * line until the daemon closes the connection. */
int cli_cmd_rpc(int argc, char **argv)
{
	bool raw = false;
	const struct cli_opt table[] = {
	    CLI_O_FLAG(0, "raw", &raw,
		       "send standard input to the socket as it is and\n"
		       "print every answer line"),
	    CLI_OPT_END,
	};
	struct cli_parser p = {.cmd = "rpc", .opts = table, .in_order = true};
	int pr = cli_parse(&p, argc, argv);
	if (pr)
		return pr == CLI_PARSE_HELP ? 0 : CLI_EXIT_USAGE;
	struct cli_rpc rpc;
	if (raw) {
		if (p.npos) {
			cli_error("rpc --raw: reads the requests from standard "
				  "input; no arguments");
			return CLI_EXIT_USAGE;
		}
		int r = cli_rpc_open(&rpc);
		if (r)
			return r;
		char buf[65536];
		ssize_t n;
		while ((n = read(STDIN_FILENO, buf, sizeof(buf))) > 0) {
			if (cp_send_all(rpc.fd, buf, (size_t)n) < 0)
				break; /* the daemon closed: print what came */
		}
		shutdown(rpc.fd, SHUT_WR);
		while ((n = recv(rpc.fd, buf, sizeof(buf), 0)) > 0)
			fwrite(buf, 1, (size_t)n, stdout);
		cli_rpc_close(&rpc);
		return 0;
	}
	if (p.npos != 1 && p.npos != 2) {
		cli_error("rpc: expecting METHOD [PARAMS-JSON]");
		return CLI_EXIT_USAGE;
	}
	struct cp_jsonw w;
	cp_jsonw_init(&w);
	if (p.npos == 2) {
		cp_json *pj;
		int jr = cp_json_parse(p.pos[1], strlen(p.pos[1]), NULL, &pj);
		if (jr < 0) {
			cli_error("rpc: PARAMS is not JSON: %s",
				  cp_error_msg(jr));
			return CLI_EXIT_USAGE;
		}
		cp_jsonw_value(&w, NULL, pj);
		cp_json_free(pj);
	}
	int r = cli_run(p.pos[0], &w, true, NULL);
	cp_jsonw_free(&w);
	return r;
}

struct cli_sub_ctx {
	const char *verb;
	const struct cli_subcmd *sub;
};

static void cli_sub_help(const struct cli_parser *p)
{
	const struct cli_sub_ctx *c = p->ctx;
	cli_sub_usage(c->sub, c->verb);
}

int cli_sub_parse(const char *verb, const struct cli_subcmd *sub, int argc,
		  char **argv, const struct cli_opt *opts, struct cli_args *a,
		  int min_pos, int max_pos)
{
	struct cli_opt table[40];
	size_t n = 0;
	memset(a, 0, sizeof(*a));
	table[n++] = (struct cli_opt)CLI_O_FN(0, "output", "ofmt",
					      cli_opt_output, &a->json, NULL);
	if (sub_is_task(sub))
		table[n++] = (struct cli_opt)CLI_O_FLAG(0, "async", &a->async,
							NULL);
	for (size_t i = 0; opts && opts[i].name && n < CP_ARRAY_SIZE(table) - 1;
	     i++)
		table[n++] = opts[i];
	table[n] = (struct cli_opt)CLI_OPT_END;
	char usage[1024];
	FILE *uf = fmemopen(usage, sizeof(usage), "w");
	if (uf) {
		fprintf(uf, "%s ", verb);
		print_usage(uf, sub);
		fclose(uf);
	} else {
		snprintf(usage, sizeof(usage), "%s %s", verb, sub->name);
	}
	struct cli_sub_ctx ctx = {verb, sub};
	struct cli_parser p = {.cmd = sub->name,
			       .opts = table,
			       .usage = usage,
			       .help = cli_sub_help,
			       .ctx = &ctx};
	int r = cli_parse(&p, argc, argv);
	if (r)
		return r == CLI_PARSE_HELP ? -1 : CLI_EXIT_USAGE;
	a->npos = p.npos;
	a->pos = p.pos;
	if (a->npos < min_pos || a->npos > max_pos)
		return cli_usage_error(verb, sub,
				       a->npos < min_pos ? "missing arguments"
							 : "too many arguments");
	return 0;
}

/* ---- method subcommands: options from api/methods.def ---------------------- */

static int call_index(const struct cli_call *k, const char *name)
{
	const struct cp_api_param *p = cp_api_param(k->api, name);
	return p ? (int)(p - k->api->params) : -1;
}

const char *cli_call_val(const struct cli_call *k, const char *name)
{
	int i = call_index(k, name);
	return i < 0 ? NULL : k->val[i];
}

bool cli_call_flag(const struct cli_call *k, const char *name)
{
	int i = call_index(k, name);
	return i >= 0 && k->flag[i];
}

const char *const *cli_call_list(const struct cli_call *k, const char *name)
{
	int i = call_index(k, name);
	return i < 0 ? NULL : k->list[i];
}

/* "initial-size" -> "initial size": how errors name an option's value. */
static void what_of(char *out, size_t len, const char *s)
{
	size_t i = 0;
	for (; s[i] && i + 1 < len; i++)
		out[i] = s[i] == '-' || s[i] == '_' ? ' ' : s[i];
	out[i] = 0;
}

/* One given value into the params object; an exit status on error. */
static int call_param(const char *verb, const struct cli_subcmd *sub,
		      struct cli_call *k, size_t i)
{
	const struct cp_api_param *p = &k->api->params[i];
	struct cp_jsonw *w = &k->params;
	const char *s = k->val[i];
	char what[64], *end;
	what_of(what, sizeof(what), p->opt ? p->opt : p->name);
	if (p->type == CP_API_BOOL) {
		if (k->flag[i])
			cp_jsonw_bool(w, p->name, true);
		return 0;
	}
	if (p->flag_value) {
		if (k->flag[i])
			cp_jsonw_str(w, p->name, p->flag_value);
		return 0;
	}
	if (p->type == CP_API_STRV) {
		if (!k->list[i][0])
			return 0;
		cp_jsonw_arr_begin(w, p->name);
		for (size_t j = 0; k->list[i][j]; j++)
			cp_jsonw_str(w, NULL, k->list[i][j]);
		cp_jsonw_arr_end(w);
		return 0;
	}
	if (!s) {
		if (!p->required)
			return 0;
		char msg[96];
		snprintf(msg, sizeof(msg), "--%s is required", p->opt);
		return cli_usage_error(verb, sub, msg);
	}
	switch (p->type) {
	case CP_API_SIZE: {
		uint64_t v;
		if (cli_parse_size(what, s, &v) < 0)
			return CLI_EXIT_USAGE;
		cp_jsonw_u64(w, p->name, v);
		return 0;
	}
	case CP_API_U64: {
		errno = 0;
		unsigned long long v = strtoull(s, &end, 10);
		if (errno || end == s || *end || s[0] == '-') {
			cli_error("invalid %s '%s': expected a number", what, s);
			return CLI_EXIT_USAGE;
		}
		cp_jsonw_u64(w, p->name, v);
		return 0;
	}
	case CP_API_NUM: {
		double v = strtod(s, &end);
		if (end == s || *end || v < 0) {
			char unit[32] = "a number";
			if (p->metavar)
				for (size_t j = 0; p->metavar[j] && j < 31; j++)
					unit[j] = (char)(p->metavar[j] | 0x20),
					unit[j + 1] = 0;
			cli_error("invalid %s '%s': expected %s", what, s, unit);
			return CLI_EXIT_USAGE;
		}
		cp_jsonw_double(w, p->name, v);
		return 0;
	}
	case CP_API_ENUM: {
		char msg[160], list[128] = "";
		for (size_t j = 0; p->choices[j]; j++) {
			if (!strcmp(s, p->choices[j])) {
				cp_jsonw_str(w, p->name, s);
				return 0;
			}
			snprintf(list + strlen(list), sizeof(list) - strlen(list),
				 "%s%s", !j ? "" : p->choices[j + 1] ? ", " : " or ",
				 p->choices[j]);
		}
		snprintf(msg, sizeof(msg), "--%s must be %s", p->opt, list);
		return cli_usage_error(verb, sub, msg);
	}
	default: /* STR, UUID: the daemon checks them */
		cp_jsonw_str(w, p->name, s);
		return 0;
	}
}

int cli_api_parse(const char *verb, const struct cli_subcmd *sub, int argc,
		  char **argv, struct cli_call *k)
{
	struct cli_opt opts[CP_API_MAX_PARAMS + 1];
	size_t n = 0;
	int min_pos = 0, max_pos = 0;
	memset(k, 0, sizeof(*k));
	k->api = sub_api(sub);
	if (!k->api)
		return cli_error("%s %s: unknown method %s (api/methods.def)",
				 verb, sub->name, sub->method);
	for (size_t i = 0; i < k->api->nparams; i++) {
		const struct cp_api_param *p = &k->api->params[i];
		if (p->pos) {
			max_pos = CP_MAX(max_pos, p->pos);
			if (p->required)
				min_pos = CP_MAX(min_pos, p->pos);
		} else if (!p->opt) {
			continue;
		} else if (p->type == CP_API_BOOL || p->flag_value) {
			opts[n++] = (struct cli_opt)CLI_FLAG(p->opt, &k->flag[i]);
		} else if (p->type == CP_API_STRV) {
			opts[n++] = (struct cli_opt)CLI_LIST(p->opt, k->list[i]);
		} else {
			opts[n++] = (struct cli_opt)CLI_VAL(p->opt, &k->val[i]);
		}
	}
	opts[n] = (struct cli_opt)CLI_OPT_END;
	int r = cli_sub_parse(verb, sub, argc, argv, opts, &k->a, min_pos,
			      max_pos);
	if (r)
		return r;
	for (size_t i = 0; i < k->api->nparams; i++) {
		int pos = k->api->params[i].pos;
		if (pos && pos <= k->a.npos)
			k->val[i] = k->a.pos[pos - 1];
	}
	if (sub->check && (r = sub->check(sub, k)))
		return r;
	cp_jsonw_init(&k->params);
	cp_jsonw_obj_begin(&k->params, NULL);
	for (size_t i = 0; i < k->api->nparams; i++) {
		if ((r = call_param(verb, sub, k, i))) {
			cp_jsonw_free(&k->params);
			return r;
		}
	}
	cp_jsonw_obj_end(&k->params);
	return 0;
}

int cli_api_run(const char *verb, const struct cli_subcmd *sub, int argc,
		char **argv)
{
	struct cli_call k;
	int r = cli_api_parse(verb, sub, argc, argv, &k);
	if (r)
		return r < 0 ? 0 : r;
	if (k.api->flags & CP_API_TASK)
		r = cli_run_task(k.api->name, &k.params, k.a.json, k.a.async,
				 sub->print);
	else
		r = cli_run(k.api->name, &k.params, k.a.json, sub->print);
	cp_jsonw_free(&k.params);
	return r;
}
