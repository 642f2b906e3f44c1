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
#include "qcow.h"

/* --- cowpool.c: dispatch and shared helpers --------------------------------
 */

/* Print "cowpool: <message>\n" to stderr.  Returns 1 (the usual exit
 * status) so callers can write `return cli_error(...)`. */
int cli_error(const char *fmt, ...) CP_PRINTF(1, 2);
/* Report an engine failure (err is -errno) on file: prints cp_last_error(),
 * prefixed with "file: " unless the message already names file, or
 * "file: strerror(-err)" when the engine left no message. */
void cli_error_image(const char *file, int err);
/* Report a bad option (getopt returned '?' or ':'); returns 1. */
int cli_bad_option(const char *cmd, char **argv, int c);
/* Print the help text of a command to stdout; returns 0. */
int cli_help(const char *cmd);

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

/* --- json.c: QEMU-compatible JSON output ---------------------------------- *
 * qemu-img builds its JSON from a QDict and prints the members in hash
 * bucket order, not insertion order.  cli_json reproduces that order so
 * that our output matches byte for byte: add members in any order, then
 * print. */
struct cli_json;
struct cli_json *cli_json_new(void);
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
void cli_create_args_free(struct cli_create_args *ca);
/* True if the -o list asks for help ("help" or "?"). */
bool cli_create_opts_want_help(const char *optstr);
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
int cli_cmd_convert(int argc, char **argv);
int cli_cmd_io(int argc, char **argv);
int cli_cmd_commit(int argc, char **argv);
int cli_cmd_rebase(int argc, char **argv);
int cli_cmd_measure(int argc, char **argv);
int cli_cmd_amend(int argc, char **argv);
int cli_cmd_chain(int argc, char **argv);
int cli_cmd_bench(int argc, char **argv);

#endif
