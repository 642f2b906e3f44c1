/* cli/cowpool.c - the cowpool command: dispatch, global options and the
 * helpers every command shares (errors, parsing, opening images).
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

struct cli_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *synopsis;
	/* After the option lines of --help (which come from the command's
	 * table, see opt.c): positionals, exit status, remarks. */
	const char *notes;
};

/* clang-format off */
static const struct cli_cmd cli_cmds[] = {
	{ "amend", cli_cmd_amend,
	  "amend [-p] [-q] [-f fmt] [-t cache] [--output=ofmt] -o options "
	  "filename",
	  "" },
	{ "bench", cli_cmd_bench,
	  "bench [-c count] [-d depth] [-f fmt] [--flush-interval=n] [-i aio] "
	  "[-n] [--no-drain] [-o offset] [--pattern=byte] [-q] [-s size] "
	  "[-S step] [-t cache] [-U] [-w] [--random] [--output=ofmt] filename",
	  "" },
	{ "bitmap", cli_cmd_bitmap,
	  "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | "
	  "--disable)... [-b source_file [-F source_fmt]] [-g granularity] "
	  "[--object objectdef] [--image-opts | -f fmt] filename bitmap",
	  "The actions run in order on one read-write open; the list is checked\n"
	  "first, so a command that fails changes nothing.\n" },
	{ "chain", cli_cmd_chain,
	  "chain [-f fmt] [--output=ofmt] [-U] filename",
	  "Lists every layer of the backing chain, top first, with the bytes\n"
	  "it allocates (data and zero clusters) and its disk usage.\n" },
	{ "check", cli_cmd_check,
	  "check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] "
	  "[-T src_cache] [-U] filename",
	  "Exit status: 0 clean, 1 check failed, 2 corruptions, 3 leaks,\n"
	  "63 format cannot be checked.\n" },
	{ "commit", cli_cmd_commit,
	  "commit [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] "
	  "[-p] [--output=ofmt] filename",
	  "" },
	{ "compare", cli_cmd_compare,
	  "compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] "
	  "filename1 filename2",
	  "Exit status: 0 identical, 1 different, 2 cannot open, 3 cannot\n"
	  "map, 4 cannot read.\n" },
	{ "convert", cli_cmd_convert,
	  "convert [-U] [-C] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] "
	  "[-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] "
	  "[-S sparse_size] [-m num] [-W] [-c] [--bitmaps "
	  "[--skip-broken-bitmaps]] [--output=ofmt] filename "
	  "output_filename",
	  "" },
	{ "create", cli_cmd_create,
	  "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] "
	  "[-o options] filename [size]",
	  "  size            bytes, or with a k, M, G, T, P, E suffix\n" },
	{ "domain", cli_cmd_domain,
	  "domain create|list|info|extend|inspect ... (cowpoold)",
	  "" },
	{ "export", cli_cmd_export,
	  "export list (cowpoold)",
	  "" },
	{ "info", cli_cmd_info,
	  "info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename",
	  "" },
	{ "image", cli_cmd_image,
	  "image list|info|delete|copy|snapshot ... (cowpoold)",
	  "" },
	{ "io", cli_cmd_io,
	  "io [-f fmt] [-t cache] [-n] [-i aio] [-r] [-U] -c 'command' "
	  "[-c 'command' ...] filename",
	  "Offsets and lengths take k, M, G... suffixes; a pattern is a byte\n"
	  "value such as 0xab or 171.  The exit status is 1 if any command\n"
	  "failed.\n" },
	{ "map", cli_cmd_map,
	  "map [-f fmt] [--start-offset=offset] [--max-length=len] "
	  "[--output=ofmt] [-U] filename",
	  "" },
	{ "measure", cli_cmd_measure,
	  "measure [--output=ofmt] [-O output_fmt] [-o options] "
	  "[--size N | [-f fmt] filename]",
	  "" },
	{ "nbd", cli_cmd_nbd,
	  "nbd [-f fmt] [-k SOCKET | -b ADDR -p PORT] [-x NAME] [-D DESC] "
	  "[-r] [-e SHARED] [-t] [--fork] [--pid-file F] [--cache MODE] "
	  "[--aio MODE] [--discard ignore|unmap] [--detect-zeroes "
	  "off|on|unmap] [-A] [--handshake-limit N] [--tls-creds DIR | "
	  "--tls-psk FILE | --tls=off] IMAGE",
	  "TLS is mandatory when configured.  TCP without TLS needs --tls=off.\n" },
	{ "rebase", cli_cmd_rebase,
	  "rebase [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] "
	  "[--output=ofmt] -b backing_file [-F backing_fmt] filename",
	  "" },
	{ "rpc", cli_cmd_rpc,
	  "rpc METHOD [PARAMS-JSON] | rpc --raw (cowpoold)",
	  "  METHOD PARAMS   call one method of cowpoold's API (docs/api.md)\n"
	  "                  and print the result as JSON\n" },
	{ "resize", cli_cmd_resize,
	  "resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] "
	  "filename [+ | -]size",
	  "  size            absolute, or +N / -N relative\n" },
	{ "spm", cli_cmd_spm,
	  "spm start|stop|status (cowpoold)",
	  "" },
	{ "task", cli_cmd_task,
	  "task list|get|wait|clear ... (cowpoold)",
	  "" },
	{ "template", cli_cmd_template,
	  "template create|clone ... (cowpoold)",
	  "" },
	{ "volume", cli_cmd_volume,
	  "volume create|info|list|delete|merge|extend|prepare|teardown|"
	  "export|unexport ... (cowpoold)",
	  "" },
};
/* clang-format on */

static const struct cli_cmd *cli_find_cmd(const char *name)
{
	for (size_t i = 0; i < CP_ARRAY_SIZE(cli_cmds); i++) {
		if (!strcmp(cli_cmds[i].name, name))
			return &cli_cmds[i];
	}
	return NULL;
}

static void cli_usage(void)
{
	printf("cowpool version %s\n"
	       "usage: cowpool [-h | --help] [-V | --version] "
	       "[--socket PATH] command [command options]\n"
	       "cowpool disk image utility (qemu-img compatible where the "
	       "commands overlap)\n\n"
	       "Command syntax:\n",
	       CP_VERSION);
	for (size_t i = 0; i < CP_ARRAY_SIZE(cli_cmds); i++)
		printf("  %s\n", cli_cmds[i].synopsis);
	printf("\n'cowpool COMMAND --help' describes the options of a "
	       "command.\n"
	       "The commands marked (cowpoold) talk to the host's storage "
	       "daemon at\n--socket PATH (default $COWPOOL_SOCKET, "
	       "$COWPOOL_RUN_DIR/cowpoold.sock or\n"
	       "/run/cowpool/cowpoold.sock); their exit status is 0 ok, 1 "
	       "failed,\n2 usage error, 3 daemon unreachable.\n"
	       "Supported formats: qcow2 raw\n");
}

int cli_cmd_help(const char *cmd, const char **synopsis, const char **notes)
{
	const struct cli_cmd *c = cli_find_cmd(cmd);
	if (!c)
		return -ENOENT;
	*synopsis = c->synopsis;
	*notes = c->notes;
	return 0;
}

int main(int argc, char **argv)
{
	/* Global options of the daemon verbs, before the command. */
	while (argc >= 2 && !strncmp(argv[1], "--socket", 8)) {
		if (argv[1][8] == '=') {
			cli_socket = argv[1] + 9;
			argc--, argv++;
		} else if (!argv[1][8] && argc >= 3) {
			cli_socket = argv[2];
			argc -= 2, argv += 2;
		} else if (!argv[1][8]) {
			cli_error("option '--socket' requires an argument");
			return CLI_EXIT_USAGE;
		} else {
			break;
		}
	}
	if (argc < 2) {
		cli_error("not enough arguments; try 'cowpool --help'");
		return 1;
	}
	const char *arg = argv[1];
	if (!strcmp(arg, "-h") || !strcmp(arg, "--help") ||
	    !strcmp(arg, "help")) {
		cli_usage();
		return 0;
	}
	if (!strcmp(arg, "-V") || !strcmp(arg, "--version")) {
		printf("cowpool version %s\n", CP_VERSION);
		return 0;
	}
	if (arg[0] == '-')
		return cli_error("unrecognized option '%s'", arg);
	const struct cli_cmd *c = cli_find_cmd(arg);
	if (!c)
		return cli_error("command '%s' not found; try 'cowpool --help'",
				 arg);
	int ret = c->fn(argc - 1, argv + 1);
	if (fflush(stdout) == EOF && ret == 0)
		return cli_error("error writing output: %s", strerror(errno));
	return ret;
}

/* --- shared helpers ---------------------------------------------------------
 */

int cli_error(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fputs("cowpool: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

void cli_error_image(const char *file, int err)
{
	const char *msg = cp_error_msg(err);
	/* The engine names the file in most messages; do not say it twice. */
	size_t n = strlen(file);
	const char *p = strstr(msg, file);
	if (p && (p == msg || p[-1] == ' ' || p[-1] == '\'' || p[-1] == '/') &&
	    (p[n] == ':' || p[n] == '\'' || p[n] == ' ' || p[n] == 0))
		cli_error("%s", msg);
	else
		cli_error("%s: %s", file, msg);
}

int cli_parse_fmt(const char *s, enum cp_fmt *out)
{
	if (cp_fmt_parse(s, out) < 0 || *out == CP_FMT_AUTO) {
		cli_error("unknown format '%s' (supported: qcow2, raw)", s);
		return -EINVAL;
	}
	return 0;
}

int cli_parse_cache(const char *s, enum cp_cache *out)
{
	if (cp_cache_parse(s, out) < 0) {
		cli_error("invalid cache option '%s' (none, writeback, "
			  "writethrough, directsync, unsafe)",
			  s);
		return -EINVAL;
	}
	return 0;
}

int cli_parse_aio(const char *s, enum cp_aio *out)
{
	if (cp_aio_parse(s, out) < 0) {
		cli_error("invalid aio option '%s' (io_uring, native, threads)",
			  s);
		return -EINVAL;
	}
	return 0;
}

int cli_parse_size(const char *what, const char *s, uint64_t *out)
{
	if (cp_parse_size(s, out) < 0 || *out > INT64_MAX) {
		cli_error("invalid %s '%s': expected a non-negative number "
			  "below 2^63 with an optional k, M, G, T, P or E "
			  "suffix",
			  what, s);
		return -EINVAL;
	}
	return 0;
}

int cli_parse_output(const char *s, bool *json)
{
	if (!strcmp(s, "json")) {
		*json = true;
	} else if (!strcmp(s, "human")) {
		*json = false;
	} else {
		cli_error("--output must be used with human or json as "
			  "argument, not '%s'",
			  s);
		return -EINVAL;
	}
	return 0;
}

int cli_open(const char *path, const struct cp_open_opts *opts, cp_image **out)
{
	int r = cp_image_open(path, opts, out);
	if (r < 0)
		cli_error_image(path, r);
	return r;
}

int cli_close(cp_image *img)
{
	if (!img)
		return 0;
	char name[4096];
	snprintf(name, sizeof(name), "%s", cp_image_filename(img));
	int r = cp_image_close(img);
	if (r < 0)
		cli_error_image(name, r);
	return r;
}

int cli_chain_length(const cp_image *img)
{
	int n = 0;
	for (; img; img = cp_image_backing(img))
		n++;
	return n;
}

void cli_size_to_str(uint64_t val, char *buf, size_t len)
{
	static const char *const suffixes[] = {"",   "Ki", "Mi", "Gi",
					       "Ti", "Pi", "Ei"};
	/* qemu: frexp(val / (1000.0 / 1024.0), &e); i = (e - 1) / 10.  The
	 * correction switches to the next unit once the integer part would
	 * reach 1000. */
	double x = (double)val / (1000.0 / 1024.0);
	int e = 0;
	while (x >= 1.0) {
		x /= 2;
		e++;
	}
	int i = (e - 1) / 10;
	if (i < 0)
		i = 0;
	if (i > 6)
		i = 6;
	uint64_t div = 1ull << (i * 10);
	snprintf(buf, len, "%0.3g %sB", (double)val / (double)div, suffixes[i]);
}

void cli_cvtstr(double val, char *buf, size_t len)
{
	static const struct {
		double unit;
		const char *suffix;
	} units[] = {
	    {1152921504606846976.0, " EiB"},
	    {1125899906842624.0, " PiB"},
	    {1099511627776.0, " TiB"},
	    {1073741824.0, " GiB"},
	    {1048576.0, " MiB"},
	    {1024.0, " KiB"},
	};
	const char *suffix = " bytes";
	char num[64];
	size_t i;
	for (i = 0; i < CP_ARRAY_SIZE(units); i++) {
		if (val >= units[i].unit)
			break;
	}
	if (i < CP_ARRAY_SIZE(units)) {
		suffix = units[i].suffix;
		snprintf(num, sizeof(num), "%.3f", val / units[i].unit);
	} else {
		snprintf(num, sizeof(num), "%f", val);
	}
	char *trim = strstr(num, ".000");
	if (trim)
		*trim = 0;
	snprintf(buf, len, "%s%s", num, suffix);
}
