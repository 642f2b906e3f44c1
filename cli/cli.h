/* cli/cli.h - private header of the cowpool command-line tool.
 *
 * The CLI is a thin client of qcow.h: it parses arguments, calls the
 * engine and prints results in qemu-img's formats.  It holds no QCOW2
 * format knowledge.
 *
 * Conventions:
 *  - every command is `int cli_cmd_<name>(int argc, char **argv)`, with
 *    argv[0] the command name, and returns the process exit status;
 *  - every error is one line on stderr, "cowpool: <file>: <what>", printed
 *    with cli_error() or cli_error_image();
 *  - output goes to stdout in exactly the shape qemu-img prints.
 *
 * One section per .c file.
 */
#ifndef CP_CLI_H
#define CP_CLI_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common.h"
#include "json.h"
#include "api.h"
#include "jsonw.h"
#include "qcow.h"
#include "spm.h"

/* --- cowpool.c: dispatch and shared helpers --------------------------------
 */

/* Print "cowpool: <message>\n" to stderr.  Returns 1 (the usual exit
 * status) so callers can write `return cli_error(...)`. */
int cli_error(const char *fmt, ...) CP_PRINTF(1, 2);
/* Report an engine failure (err is -errno) on file: prints the engine's
 * message for err (cp_error_msg), prefixed with "file: " unless the
 * message already names file ("file: strerror(-err)" without one). */
void cli_error_image(const char *file, int err);
/* The synopsis and the notes of a command's --help (opt.c prints them);
 * -ENOENT if there is no such command. */
int cli_cmd_help(const char *cmd, const char **synopsis, const char **notes);

/* Parsers that print a one-line error naming the bad value and return
 * -EINVAL, or 0 on success. */
int cli_parse_fmt(const char *s, enum cp_fmt *out);
int cli_parse_cache(const char *s, enum cp_cache *out);
int cli_parse_aio(const char *s, enum cp_aio *out);
/* what names the value in the error ("image size", "offset"...). */
int cli_parse_size(const char *what, const char *s, uint64_t *out);
/* --output=human|json; *json set accordingly. */
int cli_parse_output(const char *s, bool *json);

/* Open path with opts, printing the error on failure. */
int cli_open(const char *path, const struct cp_open_opts *opts, cp_image **out);
/* Close and report a flush error.  Returns 0 or -errno. */
int cli_close(cp_image *img);
/* Number of layers in img's chain (1 without backing). */
int cli_chain_length(const cp_image *img);

/* qemu's size_to_str(): "1 GiB", "196 KiB", "1.25 MiB", "0 B". */
void cli_size_to_str(uint64_t val, char *buf, size_t len);
/* qemu-io's cvtstr(): "4 KiB", "1.500 KiB", "512 bytes". */
void cli_cvtstr(double val, char *buf, size_t len);

/* --- opt.c: the option parser of every command ---------------------------
 *
 * A command describes its options in a table (an array of struct cli_opt
 * ended by CLI_OPT_END) and calls cli_parse() on it: short options ("-f
 * fmt", "-fqcow2", clustered flags "-pq"), long options ("--output=json",
 * "--output json", unique prefixes), permutation (options may follow the
 * file names), "--" ending the options.  Each option is applied as the
 * parser meets it, so errors come out in command-line order.  --help
 * prints "usage: cowpool <synopsis>", the option lines made from the
 * table (the options with a help text) and the command's notes. */
struct cli_parser;
struct cli_opt;
/* Parse arg (NULL for an option without a value) into o->dst.  0, or
 * -errno with the error printed. */
typedef int cli_opt_parse_fn(struct cli_parser *p, const struct cli_opt *o,
			     const char *arg);
typedef cli_opt_parse_fn *cli_opt_fn;
/* An option: its names (name: long name without "--", or NULL;
 * short_name: the letter of the short option, or 0) and what it does:
 * set *flag; store the value in *val; append it to list (NULL-terminated,
 * list_max entries); or call fn (dst and what are for fn); none of these:
 * accepted without effect.  It takes a value if val, list or arg is set;
 * arg names the value in --help.  seen, if set, becomes true when the
 * option is given.  help: its --help text ("\n" between lines), NULL to
 * leave it out of --help. */
struct cli_opt {
	const char *name;
	const char **val;
	bool *flag;
	const char **list;
	size_t list_max;
	char short_name;
	const char *arg;
	const char *help;
	cli_opt_fn fn;
	void *dst;
	const char *what;
	bool *seen;
};
/* The daemon verbs' options (long names only, no help text). */
#define CLI_VAL(n, p) {.name = (n), .val = (p)}
#define CLI_FLAG(n, p) {.name = (n), .flag = (p)}
#define CLI_LIST(n, arr)                                                       \
	{.name = (n), .list = (arr), .list_max = CP_ARRAY_SIZE(arr)}
#define CLI_OPT_END {.name = NULL}

/* Generic entries: c is the short name (0: none), n the long name (NULL:
 * none), h the help text (NULL: not in --help). */
#define CLI_O_FLAG(c, n, p, h)                                                 \
	{.short_name = (c), .name = (n), .flag = (p), .help = (h)}
#define CLI_O_VAL(c, n, a, p, h)                                               \
	{.short_name = (c), .name = (n), .arg = (a), .val = (p), .help = (h)}
#define CLI_O_FN(c, n, a, f, p, h)                                             \
	{.short_name = (c),                                                    \
	 .name = (n),                                                          \
	 .arg = (a),                                                           \
	 .fn = (f),                                                            \
	 .dst = (p),                                                           \
	 .help = (h)}
/* Accepted for compatibility, no effect. */
#define CLI_O_NOP(c, n, h) {.short_name = (c), .name = (n), .help = (h)}
/* A size with k, M, G... suffixes into *p (uint64_t); what names it in
 * the error. */
#define CLI_O_SIZE(c, n, a, w, p, h) CLI_O_SIZE_SEEN(c, n, a, w, p, NULL, h)
/* The same, *s (bool) set when the option is given. */
#define CLI_O_SIZE_SEEN(c, n, a, w, p, s, h)                                   \
	{.short_name = (c),                                                    \
	 .name = (n),                                                          \
	 .arg = (a),                                                           \
	 .fn = cli_opt_size,                                                   \
	 .dst = (p),                                                           \
	 .what = (w),                                                          \
	 .seen = (s),                                                          \
	 .help = (h)}
/* Refused: "<cmd>: <w> is not supported" (w NULL: the argument as
 * written).  a: it takes a value. */
#define CLI_O_REFUSE(c, n, a, w)                                               \
	{.short_name = (c), .name = (n), .arg = (a), .fn = cli_opt_refuse,     \
	 .what = (w)}

/* The options qemu-img's commands share, defined once. */
#define CLI_H_AIO "io_uring, native or threads"
#define CLI_H_NOP "accepted for compatibility (no effect)"
/* -f fmt, -F backing_fmt, -O output_fmt: into *p (enum cp_fmt). */
#define CLI_OPT_FMT(c, a, p, h) CLI_O_FN(c, NULL, a, cli_opt_fmt, p, h)
#define CLI_OPT_F(p, h) CLI_OPT_FMT('f', "fmt", p, h)
/* -t cache, -T src_cache: into *p (enum cp_cache). */
#define CLI_OPT_CACHE(c, a, p, h) CLI_O_FN(c, NULL, a, cli_opt_cache, p, h)
#define CLI_OPT_T(p, h) CLI_OPT_CACHE('t', "cache", p, h)
#define CLI_OPT_SRC_T(p, h) CLI_OPT_CACHE('T', "src_cache", p, h)
/* -i aio: into *p (enum cp_aio). */
#define CLI_OPT_AIO(p) CLI_O_FN('i', NULL, "aio", cli_opt_aio, p, CLI_H_AIO)
/* -U, --force-share: *p (bool, cp_open_opts.force_share) true: share
 * every permission on read-only layers (docs/cowpool.md, Locking). */
#define CLI_OPT_U(p)                                                           \
	CLI_O_FLAG('U', "force-share", p,                                      \
		   "force share: read layers another process writes")
#define CLI_OPT_QUIET(p) CLI_O_FLAG('q', NULL, p, "quiet")
#define CLI_OPT_PROGRESS(p, h) CLI_O_FLAG('p', NULL, p, h)
/* -p, --output=json and -q of the commands that show progress: into *p,
 * *j, *q (bool); more: the end of --output's help ("" or "; ..."). */
#define CLI_OPTS_PROGRESS(p, j, q, more)                                      \
	CLI_OPT_PROGRESS(p, "show progress"),                                  \
	    CLI_OPT_OUTPUT(j, "json",                                          \
			   "progress as JSON lines when stdout is not a\n"     \
			   "terminal" more),                                   \
	    CLI_OPT_QUIET(q)
/* --output=human|json: *p (bool) true for json. */
#define CLI_OPT_OUTPUT(p, a, h)                                                \
	CLI_O_FN(0, "output", a, cli_opt_output, p, h)
/* -o options (repeatable; joined with commas into *p, a malloc'ed char *
 * the caller frees). */
#define CLI_OPT_OPTIONS(p, h)                                                  \
	CLI_O_FN('o', NULL, "options", cli_opt_optlist, p, h)
/* qemu's --object and --image-opts: refused. */
#define CLI_OPT_OBJECT CLI_O_REFUSE(0, "object", "object", NULL)
#define CLI_OPT_IMAGE_OPTS CLI_O_REFUSE(0, "image-opts", NULL, NULL)
/* -T cache (help h), -i aio, -U: the open options of the commands that
 * read images, into *o (struct cp_open_opts). */
#define CLI_OPTS_OPEN(o, h)                                                    \
	CLI_OPT_SRC_T(&(o)->cache, h), CLI_OPT_AIO(&(o)->aio),                  \
	    CLI_OPT_U(&(o)->force_share)
/* The end of a qemu-img command's table: --object and --image-opts
 * refused, then CLI_OPT_END. */
#define CLI_OPT_QEMU_END CLI_OPT_OBJECT, CLI_OPT_IMAGE_OPTS, CLI_OPT_END
/* The end of the table of a qemu-img command that reads images:
 * CLI_OPTS_OPEN(o, h), then CLI_OPT_QEMU_END. */
#define CLI_OPTS_OPEN_END(o, h) CLI_OPTS_OPEN(o, h), CLI_OPT_QEMU_END

struct cli_parser {
	const char *cmd;             /* errors: "cowpool: <cmd>: ..." */
	const struct cli_opt *opts;  /* the table */
	bool in_order;  /* the first positional ends the options */
	bool no_help;   /* no built-in -h, --help */
	const char *usage; /* if set: "usage: cowpool <usage>" after errors */
	/* --help: NULL prints cli_help_opts(cmd, opts); else this is called
	 * (with ctx, for the caller's use) and the parse still returns
	 * CLI_PARSE_HELP. */
	void (*help)(const struct cli_parser *p);
	void *ctx;
	int npos;       /* out: the positional arguments */
	char **pos;
	const char *token; /* for fn: the argument that named the option */
};
#define CLI_PARSE_HELP 1
/* Parse argv[1..argc) (argv[0] is the command's name).  0; CLI_PARSE_HELP
 * after printing --help (exit 0); -1 with the error printed.  The
 * positionals are moved to argv[1..]: p->pos, p->npos. */
int cli_parse(struct cli_parser *p, int argc, char **argv);
/* The start of the qemu-img commands that take exactly nfiles (1 or 2)
 * image file names: cli_parse() of argv with table, then "<cmd>:
 * expecting one image file name" (two ... names) if the count is wrong.
 * files[0..nfiles) receive the names; files[0] is NULL when the command
 * must return the status returned (0 after --help, 1 after an error). */
int cli_parse_files(const char *cmd, const struct cli_opt *table, int argc,
		    char **argv, int nfiles, const char **files);
/* cli_parse_files() for one image file name, then cli_open() of it with
 * opts: *img is the image (cp_image_filename(): the name as given), or
 * NULL when the command must return the status returned. */
int cli_parse_open(const char *cmd, const struct cli_opt *table, int argc,
		   char **argv, const struct cp_open_opts *opts, cp_image **img);
/* cli_parse() for the commands with -o (CLI_OPT_OPTIONS into *optlist):
 * true: go on; false (*optlist freed): the command returns *status, 0
 * after --help or after "-o help" (help(*fmt) has listed the -o options;
 * help NULL: the command answers "-o help" itself), 1 after an error. */
bool cli_parse_optlist(struct cli_parser *p, int argc, char **argv,
		       char **optlist, void (*help)(enum cp_fmt fmt),
		       const enum cp_fmt *fmt, int *status);
/* The option lines of --help: "  -f fmt          text". */
void cli_opt_help(FILE *f, const struct cli_opt *opts);
/* Print the help text of a command to stdout; returns 0. */
int cli_help(const char *cmd);
/* The same with the option lines of opts before the notes. */
int cli_help_opts(const char *cmd, const struct cli_opt *opts);
/* The fns of the shared options. */
cli_opt_parse_fn cli_opt_fmt, cli_opt_cache, cli_opt_aio, cli_opt_output,
    cli_opt_size, cli_opt_optlist, cli_opt_refuse;

/* --- json.c: QEMU-compatible JSON output ---------------------------------- *
 * qemu-img builds its JSON from a QDict and prints the members in hash
 * bucket order, not insertion order.  cli_json reproduces that order so
 * that our output matches byte for byte: add members in any order, then
 * print. */
struct cli_json;
struct cli_json *cli_json_new(void);
/* A list: its members print in insertion order, their keys ignored (pass
 * ""); add it to an object with cli_json_add_obj(). */
struct cli_json *cli_json_new_array(void);
void cli_json_free(struct cli_json *obj); /* frees children too; NULL ok */
/* The adders copy key and string values; on ENOMEM they abort. */
void cli_json_add_int(struct cli_json *obj, const char *key, int64_t v);
void cli_json_add_bool(struct cli_json *obj, const char *key, bool v);
void cli_json_add_str(struct cli_json *obj, const char *key, const char *v);
/* Takes ownership of child. */
void cli_json_add_obj(struct cli_json *obj, const char *key,
		      struct cli_json *child);
/* Print obj pretty (4-space indent) at the given nesting level, without a
 * trailing newline. */
void cli_json_print(FILE *f, const struct cli_json *obj, int level);
/* Print s as a JSON string literal (quotes included), escaped as QEMU
 * does. */
void cli_json_print_str(FILE *f, const char *s);

/* --- optlist.c: "-o key=val,key=val" lists -------------------------------- */
struct cli_kv {
	char *key, *val; /* val is "on" for a bare key */
};
/* Split s (",," escapes a comma) into pairs.  *buf receives the storage
 * the pairs point into; the caller frees *buf and *kv.  Returns the number
 * of pairs, or -EINVAL (error printed). */
int cli_optlist_split(const char *s, char **buf, struct cli_kv **kv);
/* Parse on/off/true/false/yes/no.  Returns 0 or -EINVAL (error printed
 * naming key). */
int cli_parse_bool(const char *key, const char *val, bool *out);
/* Append "-o" arguments: *acc = *acc + "," + s.  Returns 0 or -ENOMEM. */
int cli_optlist_append(char **acc, const char *s);
/* True if the -o list s asks for help ("help" or "?"). */
bool cli_optlist_wants_help(const char *s);

/* --- progress.c: -p for commit, rebase, convert, amend ------------------- *
 * Human: qemu-img's "    (12.34/100%)\r" line, ended by a newline.  JSON
 * lines {"progress": P, "done": B, "total": T} instead when --output=json
 * was given and stdout is not a terminal.  cli_progress_update() is a
 * cp_progress_fn (opaque = the struct cli_progress) and may be called from
 * any thread; printing is serialised and limited to ~10 lines a second,
 * plus the first line and the final 100% (each printed once). */
struct cli_progress {
	pthread_mutex_t lock;
	bool enabled, json;
	bool printed, finished;
	double last_time;
	uint64_t done, total;
};
/* enabled: -p and not -q; json: --output=json. */
void cli_progress_init(struct cli_progress *p, bool enabled, bool json);
void cli_progress_update(void *opaque, uint64_t done, uint64_t total);
/* After the operation (no more updates): on success print the final 100%
 * if not printed yet; end the human line.  Destroys the lock. */
void cli_progress_end(struct cli_progress *p, bool success);
/* cli_progress_end(p, r >= 0) after an operation that returned r, then,
 * if r < 0, its error on file (cli_error_image()).  Returns r. */
int cli_progress_finish(struct cli_progress *p, int r, const char *file);

/* --- cmd_create.c: create, and the -o parser shared with convert --------- */
struct cli_create_args {
	struct cp_create_opts opts;
	bool size_set;
	bool unsafe; /* -u: do not open the backing file */
	/* Values as the user wrote them, for the "Formatting ..." line. */
	const char *compat_str, *prealloc_str;
	char *optbuf; /* storage of the parsed -o strings */
	struct cli_kv *kv;
};
void cli_create_args_init(struct cli_create_args *ca, enum cp_fmt fmt);
/* cli_create_args_init(), then the -o list optstr (NULL: none; errors
 * name file), then -b backing and -F backing_fmt (NULL: as -o says).  0,
 * or -EINVAL with the error printed; free ca either way. */
int cli_create_args_set(struct cli_create_args *ca, enum cp_fmt fmt,
			const char *file, const char *optstr,
			const char *backing, const char *backing_fmt);
void cli_create_args_free(struct cli_create_args *ca);
/* -o compat=VAL: 0.10/v2 -> 2, 1.1/v3 -> 3 into *version; else -EINVAL
 * with "<file>: invalid compat ..." printed. */
int cli_parse_compat(const char *file, const char *val, int *version);
void cli_create_opts_help(enum cp_fmt fmt);
/* Apply a -o list to ca (errors name the key and the image file). */
int cli_create_opts_parse(struct cli_create_args *ca, const char *file,
			  const char *optstr);
/* Print the "Formatting '...', fmt=..." line (unless quiet) and create. */
int cli_create_image(const char *path, struct cli_create_args *ca, bool quiet);

int cli_cmd_create(int argc, char **argv);
int cli_cmd_info(int argc, char **argv);
int cli_cmd_map(int argc, char **argv);
int cli_cmd_check(int argc, char **argv);
int cli_cmd_compare(int argc, char **argv);
int cli_cmd_resize(int argc, char **argv);
int cli_cmd_bitmap(int argc, char **argv);
int cli_cmd_convert(int argc, char **argv);
int cli_cmd_io(int argc, char **argv);
int cli_cmd_commit(int argc, char **argv);
int cli_cmd_rebase(int argc, char **argv);
int cli_cmd_measure(int argc, char **argv);
int cli_cmd_amend(int argc, char **argv);
int cli_cmd_chain(int argc, char **argv);
int cli_cmd_bench(int argc, char **argv);
int cli_cmd_nbd(int argc, char **argv);

/* --- rpc.c: client of cowpoold (docs/api.md) ----------------------------- *
 * The daemon verbs (domain, image, volume, template, spm, task, rpc) talk
 * to cowpoold over its unix socket.  Their exit status: */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILED 1     /* the operation failed (message printed) */
#define CLI_EXIT_USAGE 2      /* bad arguments */
#define CLI_EXIT_NO_DAEMON 3  /* cowpoold cannot be reached */

/* --socket PATH given before the verb (NULL: $COWPOOL_SOCKET, else
 * $COWPOOL_RUN_DIR/cowpoold.sock, else /run/cowpool/cowpoold.sock). */
extern const char *cli_socket;
const char *cli_socket_path(void);

struct cli_rpc {
	int fd;
	char *buf; /* bytes received, not consumed yet */
	size_t len, cap;
	uint64_t next_id;
};
/* Connect; 0 or CLI_EXIT_NO_DAEMON ("cannot connect to cowpoold at PATH:
 * ..." printed). */
int cli_rpc_open(struct cli_rpc *c);
void cli_rpc_close(struct cli_rpc *c);
/* Call method with params (the JSON text of one object, or NULL/empty for
 * none).  0: *result points into *tree (caller frees with
 * cp_json_free()); else an exit status with the error printed
 * ("cowpool: <the daemon's message>"). */
int cli_rpc_call(struct cli_rpc *c, const char *method,
		 struct cp_jsonw *params, cp_json **tree,
		 const cp_json **result);

typedef void (*cli_printer_fn)(const cp_json *result);
/* Connect, call, print the result: raw JSON (json) or with print (NULL:
 * generic "key: value" lines).  Returns the exit status. */
int cli_run(const char *method, struct cp_jsonw *params, bool json,
	    cli_printer_fn print);
/* For methods that start a task: unless async, wait for it (task.wait)
 * and print the outcome; a failed task prints its error and returns
 * CLI_EXIT_FAILED.  print (may be NULL) prints a result volume record. */
int cli_run_task(const char *method, struct cp_jsonw *params, bool json,
		 bool async, cli_printer_fn print);
void cli_print_json(const cp_json *v);   /* pretty, 2-space indent */
void cli_print_human(const cp_json *v);  /* generic key: value lines */
/* Member accessors for printers: "-" / 0 / false when absent. */
const char *cli_jstr(const cp_json *obj, const char *key);
uint64_t cli_ju64(const cp_json *obj, const char *key);
bool cli_jbool(const cp_json *obj, const char *key);

/* A verb's subcommands.  One that calls an API method names it: its
 * options, positional arguments, --async, the checks of their values and
 * the usage line come from the method's api/methods.def entry, and
 * cli_verb_dispatch() runs it (cli_api_run()).  fn (argv[0] = the
 * subcommand name) replaces that when set. */
struct cli_call;
struct cli_subcmd {
	const char *name;
	const char *method;  /* "volume.create", or NULL (fn does all) */
	int (*fn)(const struct cli_subcmd *sub, int argc, char **argv);
	const char *usage;   /* NULL: generated from the method */
	const char *help;    /* prose, one line each; may be NULL */
	/* Checks across options the table cannot say, before the values
	 * are converted: 0, or an exit status with the error printed. */
	int (*check)(const struct cli_subcmd *sub, const struct cli_call *k);
	cli_printer_fn print; /* NULL: generic */
};
struct cli_args {
	bool json, async;  /* --output=json, --async */
	int npos;          /* positional arguments */
	char **pos;
};
/* Parse a subcommand's options (opts ends with a NULL name; --help and
 * --output=human|json always, --async for task subcommands) and check
 * the number of positional arguments.  0, -1 after --help (exit 0), or
 * CLI_EXIT_USAGE with the error printed. */
int cli_sub_parse(const char *verb, const struct cli_subcmd *sub, int argc,
		  char **argv, const struct cli_opt *opts, struct cli_args *a,
		  int min_pos, int max_pos);
/* Run the subcommand named by argv[1] (subs ends with a NULL name). */
int cli_verb_dispatch(const char *verb, const struct cli_subcmd *subs,
		      int argc, char **argv);
int cli_sub_usage(const struct cli_subcmd *sub, const char *verb);
/* Print a usage error; return CLI_EXIT_USAGE. */
int cli_usage_error(const char *verb, const struct cli_subcmd *sub,
		    const char *what);
/* 0 if s is a UUID, else -EINVAL with "invalid <what> '<s>'" printed. */
int cli_parse_uuid(const char *what, const char *s);

/* A method subcommand's arguments: parsed with the options of the
 * method's table entry, checked, and converted to its params. */
struct cli_call {
	const struct cp_api_method *api;
	struct cli_args a;
	const char *val[CP_API_MAX_PARAMS];  /* as given; NULL: absent */
	bool flag[CP_API_MAX_PARAMS];        /* BOOL and flag_value options */
	const char *list[CP_API_MAX_PARAMS][65]; /* STRV options */
	struct cp_jsonw params;              /* the params object */
};
/* 0 (k->params built: free it with cp_jsonw_free), -1 after --help
 * (exit 0), or an exit status with the error printed. */
int cli_api_parse(const char *verb, const struct cli_subcmd *sub, int argc,
		  char **argv, struct cli_call *k);
/* Parse, call the method (cli_run / cli_run_task), print. */
int cli_api_run(const char *verb, const struct cli_subcmd *sub, int argc,
		char **argv);
/* For check hooks: a param's value as given (NULL: absent), by its API
 * name; whether its flag was given; its list (STRV). */
const char *cli_call_val(const struct cli_call *k, const char *name);
bool cli_call_flag(const struct cli_call *k, const char *name);
const char *const *cli_call_list(const struct cli_call *k, const char *name);

int cli_cmd_domain(int argc, char **argv);
int cli_cmd_image(int argc, char **argv);
int cli_cmd_volume(int argc, char **argv);
int cli_cmd_export(int argc, char **argv);
int cli_cmd_template(int argc, char **argv);
int cli_cmd_spm(int argc, char **argv);
int cli_cmd_task(int argc, char **argv);
int cli_cmd_rpc(int argc, char **argv);

#endif
