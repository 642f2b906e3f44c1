/* cli/opt.c - the option parser every command shares: a table of struct
 * cli_opt in, the options applied in command-line order, the positional
 * arguments out; and the option lines of --help, from the same table.
 *
 * It parses as GNU getopt_long does for qemu-img (permutation, clustered
 * short flags, "-fqcow2" and "-f qcow2", "--opt=value" and "--opt value",
 * unique prefixes of long names, "--" ending the options) and prints the
 * errors qemu-img's parser would, with the command's name in front.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Built into every table unless no_help is set. */
static const struct cli_opt cli_opt_help_entry = {.name = "help",
						  .short_name = 'h'};

static bool cli_opt_end(const struct cli_opt *o)
{
	return !o->name && !o->short_name;
}

static bool cli_opt_has_arg(const struct cli_opt *o)
{
	return o->val || o->list || o->arg;
}

static const struct cli_opt *cli_opt_short(const struct cli_parser *p, char c)
{
	if (!p->no_help && c == 'h')
		return &cli_opt_help_entry;
	for (const struct cli_opt *o = p->opts; o && !cli_opt_end(o); o++) {
		if (o->short_name == c)
			return o;
	}
	return NULL;
}

/* name[0..len) is an exact long name, or a prefix of exactly one. */
static const struct cli_opt *cli_opt_long(const struct cli_parser *p,
					  const char *name, size_t len)
{
	const struct cli_opt *found = NULL;
	bool ambiguous = false;
	const struct cli_opt *o = p->no_help ? p->opts : &cli_opt_help_entry;
	while (o && !cli_opt_end(o)) {
		if (o->name && !strncmp(o->name, name, len)) {
			if (!o->name[len])
				return o; /* exact */
			if (found)
				ambiguous = true;
			found = o;
		}
		o = o == &cli_opt_help_entry ? p->opts : o + 1;
	}
	return ambiguous ? NULL : found;
}

static int cli_parse_fail(const struct cli_parser *p, const char *fmt, ...)
    CP_PRINTF(2, 3);
static int cli_parse_fail(const struct cli_parser *p, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cli_error("%s: %s", p->cmd, msg);
	if (p->usage)
		fprintf(stderr, "usage: cowpool %s\n", p->usage);
	return -1;
}

/* Apply option o given as token (value arg, NULL for a flag).  0, or
 * CLI_PARSE_HELP, or -1 with the error printed. */
static int cli_opt_apply(struct cli_parser *p, const struct cli_opt *o,
			 const char *arg, const char *token)
{
	if (o == &cli_opt_help_entry) {
		if (p->help)
			p->help(p);
		else
			cli_help_opts(p->cmd, p->opts);
		return CLI_PARSE_HELP;
	}
	if (o->seen)
		*o->seen = true;
	if (o->fn) {
		p->token = token;
		return o->fn(p, o, arg) < 0 ? -1 : 0;
	}
	if (o->flag) {
		*o->flag = true;
	} else if (o->val) {
		*o->val = arg;
	} else if (o->list) {
		size_t k = 0;
		while (o->list[k])
			k++;
		if (k + 1 >= o->list_max)
			return cli_parse_fail(p, "%s: too many values", token);
		o->list[k] = arg;
	}
	return 0;
}

static int cli_parse_long(struct cli_parser *p, int argc, char **argv, int *i)
{
	const char *token = argv[*i], *name = token + 2;
	const char *eq = strchr(name, '=');
	size_t len = eq ? (size_t)(eq - name) : strlen(name);
	const struct cli_opt *o = cli_opt_long(p, name, len);
	if (!o)
		return cli_parse_fail(p, "unrecognized option '%s'", token);
	const char *arg = NULL;
	if (cli_opt_has_arg(o)) {
		if (eq)
			arg = eq + 1;
		else if (*i + 1 < argc)
			arg = argv[++*i];
		else
			return cli_parse_fail(
			    p, "option '--%s' requires an argument", o->name);
	} else if (eq) {
		return cli_parse_fail(
		    p, "option '--%s' doesn't allow an argument", o->name);
	}
	return cli_opt_apply(p, o, arg, token);
}

/* A cluster of short options: "-pq", "-fqcow2", "-f" "qcow2". */
static int cli_parse_short(struct cli_parser *p, int argc, char **argv, int *i)
{
	const char *token = argv[*i];
	for (const char *c = token + 1; *c; c++) {
		char name[2] = {*c, 0};
		const struct cli_opt *o = cli_opt_short(p, *c);
		if (!o)
			return cli_parse_fail(p, "invalid option -- '%s'",
					      name);
		const char *arg = NULL;
		if (cli_opt_has_arg(o)) {
			if (c[1])
				arg = c + 1;
			else if (*i + 1 < argc)
				arg = argv[++*i];
			else
				return cli_parse_fail(
				    p, "option '-%s' requires an argument",
				    name);
		}
		int r = cli_opt_apply(p, o, arg, token);
		if (r || arg)
			return r;
	}
	return 0;
}

int cli_parse(struct cli_parser *p, int argc, char **argv)
{
	int npos = 0;
	p->npos = 0;
	p->pos = argv + 1;
	/* Positionals are moved down to argv[1..]: every slot they land in
	 * has been read already. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int r = 0;
		if (!strcmp(a, "--")) {
			while (++i < argc)
				argv[1 + npos++] = argv[i];
			break;
		}
		if (a[0] != '-' || !a[1]) {
			argv[1 + npos++] = argv[i];
			if (p->in_order) {
				while (++i < argc)
					argv[1 + npos++] = argv[i];
				break;
			}
			continue;
		}
		if (a[1] == '-')
			r = cli_parse_long(p, argc, argv, &i);
		else
			r = cli_parse_short(p, argc, argv, &i);
		if (r)
			return r;
	}
	p->npos = npos;
	return 0;
}

int cli_parse_files(const char *cmd, const struct cli_opt *table, int argc,
		    char **argv, int nfiles, const char **files)
{
	struct cli_parser p = {.cmd = cmd, .opts = table};
	int r = cli_parse(&p, argc, argv);
	files[0] = NULL;
	if (r)
		return r == CLI_PARSE_HELP ? 0 : 1;
	if (p.npos != nfiles)
		return cli_error("%s: expecting %s", cmd,
				 nfiles == 1 ? "one image file name"
					     : "two image file names");
	for (int k = 0; k < nfiles; k++)
		files[k] = p.pos[k];
	return 0;
}

int cli_parse_open(const char *cmd, const struct cli_opt *table, int argc,
		   char **argv, const struct cp_open_opts *opts, cp_image **img)
{
	const char *file;
	int st = cli_parse_files(cmd, table, argc, argv, 1, &file);
	*img = NULL;
	if (!file)
		return st;
	return cli_open(file, opts, img) < 0 ? 1 : 0;
}

bool cli_parse_optlist(struct cli_parser *p, int argc, char **argv,
		       char **optlist, void (*help)(enum cp_fmt fmt),
		       const enum cp_fmt *fmt, int *status)
{
	int r = cli_parse(p, argc, argv);
	if (!r && help && *optlist && cli_optlist_wants_help(*optlist)) {
		help(*fmt);
		r = CLI_PARSE_HELP;
	}
	if (r) {
		free(*optlist);
		*optlist = NULL;
		*status = r == CLI_PARSE_HELP ? 0 : 1;
		return false;
	}
	return true;
}

/* --- the shared option kinds ------------------------------------------- */

/* cli_opt_<kind>: the value through cli_parse_<kind>(arg, o->dst). */
#define CLI_OPT_PARSER(kind)                                                   \
	int cli_opt_##kind(struct cli_parser *p, const struct cli_opt *o,      \
			   const char *arg)                                    \
	{                                                                      \
		(void)p;                                                       \
		return cli_parse_##kind(arg, o->dst);                          \
	}
CLI_OPT_PARSER(fmt)
CLI_OPT_PARSER(cache)
CLI_OPT_PARSER(aio)
CLI_OPT_PARSER(output)

int cli_opt_size(struct cli_parser *p, const struct cli_opt *o, const char *arg)
{
	(void)p;
	return cli_parse_size(o->what, arg, o->dst);
}

int cli_opt_optlist(struct cli_parser *p, const struct cli_opt *o,
		    const char *arg)
{
	(void)p;
	if (cli_optlist_append(o->dst, arg) < 0) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	return 0;
}

int cli_opt_refuse(struct cli_parser *p, const struct cli_opt *o,
		   const char *arg)
{
	(void)arg;
	cli_error("%s: %s is not supported", p->cmd,
		  o->what ? o->what : p->token);
	return -ENOTSUP;
}

/* --- --help -------------------------------------------------------------- */

void cli_opt_help(FILE *f, const struct cli_opt *opts)
{
	for (const struct cli_opt *o = opts; o && !cli_opt_end(o); o++) {
		if (!o->help)
			continue;
		char left[128];
		size_t n = 0;
		if (o->short_name)
			n += (size_t)snprintf(left, sizeof(left), "-%c%s",
					      o->short_name,
					      o->name ? ", " : "");
		if (o->name)
			n += (size_t)snprintf(left + n, sizeof(left) - n,
					      "--%s", o->name);
		const char *arg = o->arg ? o->arg : "value";
		if (cli_opt_has_arg(o))
			snprintf(left + n, sizeof(left) - n, "%s%s",
				 o->name ? "=" : " ", arg);
		/* "  -f fmt" padded to 18 columns, or 2 spaces after. */
		fprintf(f, "  %-14s  ", left);
		/* Continuation lines of the text line up with its start. */
		for (const char *h = o->help; *h; h++) {
			fputc(*h, f);
			if (*h == '\n' && h[1])
				fprintf(f, "%18s", "");
		}
		fputc('\n', f);
	}
}

int cli_help(const char *cmd)
{
	return cli_help_opts(cmd, NULL);
}

int cli_help_opts(const char *cmd, const struct cli_opt *opts)
{
	const char *synopsis, *notes;
	if (cli_cmd_help(cmd, &synopsis, &notes) < 0)
		return 0;
	printf("usage: cowpool %s\n\n", synopsis);
	cli_opt_help(stdout, opts);
	fputs(notes, stdout);
	return 0;
}
