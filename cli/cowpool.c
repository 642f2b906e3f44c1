/* cli/cowpool.c - the cowpool command: dispatch, global options and the
 * helpers every command shares (errors, parsing, opening images).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

struct cli_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *synopsis;
	const char *help; /* flags, one per line */
};

/* clang-format off */
static const struct cli_cmd cli_cmds[] = {
	{ "amend", cli_cmd_amend,
	  "amend [-p] [-q] [-f fmt] [-t cache] [--output=ofmt] -o options "
	  "filename",
	  "  -o options      compat=0.10|1.1 and/or lazy_refcounts=on|off\n"
	  "                  (other options are refused; -o help lists them)\n"
	  "  -f fmt          image format\n"
	  "  -t cache        cache mode (default writeback)\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -p              show progress\n"
	  "  --output=json   progress as JSON lines when stdout is not a\n"
	  "                  terminal\n"
	  "  -q              quiet\n"
	  "  --force         accepted for compatibility (no effect)\n" },
	{ "bench", cli_cmd_bench,
	  "bench [-c count] [-d depth] [-f fmt] [--flush-interval=n] [-i aio] "
	  "[-n] [--no-drain] [-o offset] [--pattern=byte] [-q] [-s size] "
	  "[-S step] [-t cache] [-U] [-w] [--random] [--output=ofmt] filename",
	  "  -c count        number of requests (default 75000)\n"
	  "  -d depth        requests in flight (default 64)\n"
	  "  -f fmt          image format\n"
	  "  -i aio          io_uring (default), native or threads\n"
	  "  -n              native AIO (implies -t none unless -t is given)\n"
	  "  -o offset       first offset (default 0)\n"
	  "  -s size         request size (default 4k)\n"
	  "  -S step         offset step (default: the request size)\n"
	  "  -t cache        cache mode (default writeback)\n"
	  "  -w              write instead of read\n"
	  "  --pattern=byte  byte written by -w (default 0xa5)\n"
	  "  --flush-interval=n  flush after every n requests (with -w)\n"
	  "  --no-drain      accepted; flushes always wait for the batch\n"
	  "  --random        random offsets (request-size aligned)\n"
	  "  --output=json   one JSON object: ops, seconds, iops, mbps,\n"
	  "                  p50_us, p99_us, cpu_seconds\n"
	  "  -q              quiet\n" },
	{ "chain", cli_cmd_chain,
	  "chain [-f fmt] [--output=ofmt] [-U] filename",
	  "  -f fmt          format of the top image\n"
	  "  --output=ofmt   human (default) or json\n"
	  "  -T src_cache    cache mode\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -U              force share: read layers another process writes\n"
	  "Lists every layer of the backing chain, top first, with the bytes\n"
	  "it allocates (data and zero clusters) and its disk usage.\n" },
	{ "check", cli_cmd_check,
	  "check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] "
	  "[-T src_cache] [-U] filename",
	  "  -f fmt          image format (qcow2, raw; probed if omitted)\n"
	  "  --output=ofmt   human (default) or json\n"
	  "  -r leaks|all    repair leaked clusters only, or all errors\n"
	  "  -T src_cache    cache mode (none, writeback, writethrough,\n"
	  "                  directsync, unsafe)\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -q              quiet\n"
	  "  -U              force share: read layers another process writes\n"
	  "Exit status: 0 clean, 1 check failed, 2 corruptions, 3 leaks,\n"
	  "63 format cannot be checked.\n" },
	{ "commit", cli_cmd_commit,
	  "commit [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] "
	  "[-p] [--output=ofmt] filename",
	  "  -f fmt          image format\n"
	  "  -t cache        cache mode (default writeback)\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -b base         commit into this layer of the backing chain\n"
	  "                  (default: the backing file); implies -d\n"
	  "  -d              do not empty the image after committing\n"
	  "  -r rate_limit   bytes per second (k, M, G... suffixes)\n"
	  "  -p              show progress\n"
	  "  --output=json   progress as JSON lines when stdout is not a\n"
	  "                  terminal; no \"Image committed.\" line\n"
	  "  -q              quiet\n" },
	{ "compare", cli_cmd_compare,
	  "compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] "
	  "filename1 filename2",
	  "  -f fmt          format of the first image\n"
	  "  -F fmt          format of the second image\n"
	  "  -s              strict: fail on different size or allocation\n"
	  "  -T src_cache    cache mode for both images\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -p              accepted (no progress output)\n"
	  "  -q              quiet\n"
	  "Exit status: 0 identical, 1 different, 2 cannot open, 3 cannot\n"
	  "map, 4 cannot read.\n" },
	{ "convert", cli_cmd_convert,
	  "convert [-U] [-C] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] "
	  "[-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] "
	  "[-S sparse_size] [-m num] [-W] [-c] [--output=ofmt] filename "
	  "output_filename",
	  "  -f fmt          source format\n"
	  "  -O output_fmt   target format (raw default, qcow2)\n"
	  "  -o options      target create options (see create -o help)\n"
	  "  -B backing      target backing file; only data allocated in the\n"
	  "                  source's top layer is copied\n"
	  "  -F backing_fmt  format of the target backing file\n"
	  "  -n              do not create the target (it must exist)\n"
	  "  --target-is-zero  with -n: the target already reads as zeroes\n"
	  "  -S size         zero detection unit (default 4k; units of\n"
	  "                  max(size, target cluster) reading as zeroes\n"
	  "                  are left unwritten; 0 = fully allocate)\n"
	  "  -t cache        target cache mode (default unsafe)\n"
	  "  -T src_cache    source cache mode (default writeback)\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -c              compress the target (qcow2; -o compression_type=\n"
	  "                  zlib|zstd chooses the method)\n"
	  "  -m num          parallel workers, 1 to 16 (default 8)\n"
	  "  -W              allow out-of-order writes\n"
	  "  -p              show progress\n"
	  "  --output=json   progress as JSON lines when stdout is not a\n"
	  "                  terminal\n"
	  "  -q              quiet\n"
	  "  -U              force share: read a source another process writes\n"
	  "  -C              accepted for compatibility (no effect)\n" },
	{ "create", cli_cmd_create,
	  "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] "
	  "[-o options] filename [size]",
	  "  -f fmt          qcow2 (default) or raw\n"
	  "  -b backing      backing file (needs -F)\n"
	  "  -F backing_fmt  backing file format\n"
	  "  -o options      comma separated key=value list; -o help lists\n"
	  "                  them\n"
	  "  -u              do not open the backing file (size required)\n"
	  "  -q              quiet\n"
	  "  size            bytes, or with a k, M, G, T, P, E suffix\n" },
	{ "domain", cli_cmd_domain,
	  "domain create|list|info|extend|inspect ... (cowpoold)",
	  "" },
	{ "info", cli_cmd_info,
	  "info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename",
	  "  -f fmt          image format\n"
	  "  --output=ofmt   human (default) or json\n"
	  "  --backing-chain show every layer of the backing chain\n"
	  "  -T src_cache    cache mode\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -U              force share: read layers another process writes\n" },
	{ "image", cli_cmd_image,
	  "image list|info|delete|copy|snapshot ... (cowpoold)",
	  "" },
	{ "io", cli_cmd_io,
	  "io [-f fmt] [-t cache] [-n] [-i aio] [-r] [-U] -c 'command' "
	  "[-c 'command' ...] filename",
	  "  -c command      run command (repeatable); commands:\n"
	  "                    read [-P pattern] [-q] [-v] off len\n"
	  "                    write [-P pattern | -z [-u]] [-q] off len\n"
	  "                    aio_read, aio_write: same flags as read/write\n"
	  "                    aio_flush, flush, discard off len, map\n"
	  "  -f fmt          image format\n"
	  "  -r              open read-only\n"
	  "  -t cache        cache mode (default writeback)\n"
	  "  -n              same as -t none\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -U              force share: read layers another process writes\n"
	  "Offsets and lengths take k, M, G... suffixes; a pattern is a byte\n"
	  "value such as 0xab or 171.  The exit status is 1 if any command\n"
	  "failed.\n" },
	{ "map", cli_cmd_map,
	  "map [-f fmt] [--start-offset=offset] [--max-length=len] "
	  "[--output=ofmt] [-U] filename",
	  "  -f fmt          image format\n"
	  "  --output=ofmt   human (default) or json\n"
	  "  --start-offset=offset  first byte to map\n"
	  "  --max-length=len       bytes to map\n"
	  "  -T src_cache    cache mode\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -U              force share: read layers another process writes\n" },
	{ "measure", cli_cmd_measure,
	  "measure [--output=ofmt] [-O output_fmt] [-o options] "
	  "[--size N | [-f fmt] filename]",
	  "  -O output_fmt   format of the new image: raw (default) or qcow2\n"
	  "  -o options      cluster_size, refcount_bits, extended_l2,\n"
	  "                  preallocation, compat (and the other create\n"
	  "                  options, which do not change the result)\n"
	  "  --size N        measure a new empty image of N bytes\n"
	  "  -f fmt          format of filename\n"
	  "  --output=ofmt   human (default) or json\n"
	  "  -T src_cache    cache mode\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -U              force share: read layers another process writes\n" },
	{ "rebase", cli_cmd_rebase,
	  "rebase [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] "
	  "[--output=ofmt] -b backing_file [-F backing_fmt] filename",
	  "  -b backing      new backing file (\"\" = none); relative to the\n"
	  "                  image's directory\n"
	  "  -F backing_fmt  its format; required with a non-empty -b\n"
	  "  -u              unsafe: only rewrite the header (the old backing\n"
	  "                  file is not opened; -b may be omitted = none)\n"
	  "  -f fmt          image format\n"
	  "  -t cache        cache mode (default writeback)\n"
	  "  -T src_cache    accepted and checked; backing files use -t\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -p              show progress\n"
	  "  --output=json   progress as JSON lines when stdout is not a\n"
	  "                  terminal\n"
	  "  -q              quiet\n"
	  "  -U              force share: read layers another process writes\n" },
	{ "rpc", cli_cmd_rpc,
	  "rpc METHOD [PARAMS-JSON] | rpc --raw (cowpoold)",
	  "  METHOD PARAMS   call one method of cowpoold's API (docs/api.md)\n"
	  "                  and print the result as JSON\n"
	  "  --raw           send standard input to the socket as it is and\n"
	  "                  print every answer line\n" },
	{ "resize", cli_cmd_resize,
	  "resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] "
	  "filename [+ | -]size",
	  "  -f fmt          image format\n"
	  "  --preallocation=off|metadata|falloc|full  for the new area\n"
	  "  --shrink        allow shrinking\n"
	  "  -t cache        cache mode\n"
	  "  -i aio          io_uring, native or threads\n"
	  "  -q              quiet\n"
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
	  "volume create|info|list|delete|merge|extend|prepare|teardown ... "
	  "(cowpoold)",
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

int cli_help(const char *cmd)
{
	const struct cli_cmd *c = cli_find_cmd(cmd);
	if (!c)
		return 0;
	printf("usage: cowpool %s\n\n%s", c->synopsis, c->help);
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
	const char *msg = cp_last_error();
	if (!msg[0]) {
		cli_error("%s: %s", file, strerror(-err));
		return;
	}
	/* The engine names the file in most messages; do not say it twice. */
	size_t n = strlen(file);
	const char *p = strstr(msg, file);
	if (p && (p == msg || p[-1] == ' ' || p[-1] == '\'' || p[-1] == '/') &&
	    (p[n] == ':' || p[n] == '\'' || p[n] == ' ' || p[n] == 0))
		cli_error("%s", msg);
	else
		cli_error("%s: %s", file, msg);
}

int cli_bad_option(const char *cmd, char **argv, int c)
{
	const char *arg = argv[optind - 1];
	if (c == ':') {
		if (optopt)
			return cli_error(
			    "%s: option '-%c' requires an argument", cmd,
			    optopt);
		return cli_error("%s: option '%s' requires an argument", cmd,
				 arg);
	}
	if (optopt)
		return cli_error("%s: invalid option -- '%c'", cmd, optopt);
	return cli_error("%s: unrecognized option '%s'", cmd, arg);
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
	cp_clear_error();
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
	cp_clear_error();
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
