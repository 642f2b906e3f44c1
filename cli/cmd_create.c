/* cli/cmd_create.c - `cowpool create`, and the -o create option parser that
 * convert shares.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct create_opt_desc {
	const char *name, *type, *help;
	bool qcow2_only;
};

/* The options we implement, in qemu-img's "-o help" order and wording. */
static const struct create_opt_desc create_opt_descs[] = {
    {"backing_file", "<str>", "File name of a base image", true},
    {"backing_fmt", "<str>", "Image format of the base image", true},
    {"cluster_size", "<size>", "qcow2 cluster size", true},
    {"compat", "<str>", "Compatibility level (v2 [0.10] or v3 [1.1])", true},
    {"compression_type", "<str>",
     "Compression method used for image cluster compression", true},
    {"extended_l2", "<bool (on/off)>", "Extended L2 tables", true},
    {"lazy_refcounts", "<bool (on/off)>", "Postpone refcount updates", true},
    {"preallocation", "<str>",
     "Preallocation mode (allowed values: off, metadata, falloc, full)", false},
    {"refcount_bits", "<num>", "Width of a reference count entry in bits",
     true},
    {"size", "<size>", "Virtual disk size", false},
};

int cli_parse_compat(const char *file, const char *val, int *version)
{
	if (!strcmp(val, "0.10") || !strcmp(val, "v2")) {
		*version = 2;
	} else if (!strcmp(val, "1.1") || !strcmp(val, "v3")) {
		*version = 3;
	} else {
		cli_error("%s: invalid compat '%s' (expected 0.10, v2, 1.1 or "
			  "v3)",
			  file, val);
		return -EINVAL;
	}
	return 0;
}

void cli_create_args_init(struct cli_create_args *ca, enum cp_fmt fmt)
{
	memset(ca, 0, sizeof(*ca));
	cp_create_opts_init(&ca->opts);
	ca->opts.format = fmt;
}

void cli_create_args_free(struct cli_create_args *ca)
{
	free(ca->optbuf);
	free(ca->kv);
	ca->optbuf = NULL;
	ca->kv = NULL;
}

bool cli_create_opts_want_help(const char *optstr)
{
	char *buf;
	struct cli_kv *kv;
	bool help = false;
	int n = cli_optlist_split(optstr, &buf, &kv);
	for (int i = 0; i < n; i++) {
		if (!strcmp(kv[i].key, "help") || !strcmp(kv[i].key, "?"))
			help = true;
	}
	if (n >= 0) {
		free(buf);
		free(kv);
	}
	return help;
}

void cli_create_opts_help(enum cp_fmt fmt)
{
	printf("Supported %s options:\n", cp_fmt_name(fmt));
	for (size_t i = 0; i < CP_ARRAY_SIZE(create_opt_descs); i++) {
		const struct create_opt_desc *d = &create_opt_descs[i];
		char left[64];
		if (d->qcow2_only && fmt != CP_FMT_QCOW2)
			continue;
		snprintf(left, sizeof(left), "%s=%s", d->name, d->type);
		printf("  %-22s - %s\n", left, d->help);
	}
}

static const struct create_opt_desc *create_find_opt(const char *name,
						     enum cp_fmt fmt)
{
	for (size_t i = 0; i < CP_ARRAY_SIZE(create_opt_descs); i++) {
		const struct create_opt_desc *d = &create_opt_descs[i];
		if (!strcmp(d->name, name) &&
		    (!d->qcow2_only || fmt == CP_FMT_QCOW2))
			return d;
	}
	return NULL;
}

int cli_create_opts_parse(struct cli_create_args *ca, const char *file,
			  const char *optstr)
{
	struct cp_create_opts *o = &ca->opts;
	int n = cli_optlist_split(optstr, &ca->optbuf, &ca->kv);
	if (n < 0)
		return n;

	for (int i = 0; i < n; i++) {
		const char *key = ca->kv[i].key, *val = ca->kv[i].val;
		uint64_t v;
		if (!create_find_opt(key, o->format)) {
			cli_error(
			    "%s: invalid parameter '%s' for format %s (see "
			    "-o help)",
			    file, key, cp_fmt_name(o->format));
			return -EINVAL;
		}
		if (!strcmp(key, "size")) {
			if (cli_parse_size("image size", val, &v) < 0)
				return -EINVAL;
			o->virtual_size = v;
			ca->size_set = true;
		} else if (!strcmp(key, "backing_file")) {
			o->backing_file = val;
		} else if (!strcmp(key, "backing_fmt")) {
			o->backing_format = val;
		} else if (!strcmp(key, "cluster_size")) {
			if (cp_parse_size(val, &v) < 0 || v > UINT32_MAX) {
				cli_error("%s: invalid cluster_size '%s'", file,
					  val);
				return -EINVAL;
			}
			o->cluster_size = (uint32_t)v;
		} else if (!strcmp(key, "compat")) {
			if (cli_parse_compat(file, val, &o->qcow_version) < 0)
				return -EINVAL;
			ca->compat_str = val;
		} else if (!strcmp(key, "compression_type")) {
			if (strcmp(val, "zlib") && strcmp(val, "zstd")) {
				cli_error("%s: invalid compression_type '%s' "
					  "(expected zlib or zstd)",
					  file, val);
				return -EINVAL;
			}
			o->compression_type = val;
		} else if (!strcmp(key, "extended_l2")) {
			if (cli_parse_bool(key, val, &o->extended_l2) < 0)
				return -EINVAL;
		} else if (!strcmp(key, "lazy_refcounts")) {
			if (cli_parse_bool(key, val, &o->lazy_refcounts) < 0)
				return -EINVAL;
		} else if (!strcmp(key, "preallocation")) {
			if (cp_prealloc_parse(val, &o->prealloc) < 0) {
				cli_error("%s: invalid preallocation '%s' "
					  "(expected off, metadata, falloc or "
					  "full)",
					  file, val);
				return -EINVAL;
			}
			ca->prealloc_str = val;
		} else if (!strcmp(key, "refcount_bits")) {
			char *end;
			errno = 0;
			unsigned long bits = strtoul(val, &end, 0);
			if (errno || end == val || *end || bits > 64) {
				cli_error("%s: invalid refcount_bits '%s'",
					  file, val);
				return -EINVAL;
			}
			o->refcount_bits = (unsigned)bits;
		}
	}
	return 0;
}

/* qemu prints string option values with commas doubled. */
static void create_print_str(const char *key, const char *val)
{
	printf(" %s=", key);
	for (; *val; val++) {
		if (*val == ',')
			putchar(',');
		putchar(*val);
	}
}

static void create_print_formatting(const char *path,
				    const struct cli_create_args *ca)
{
	const struct cp_create_opts *o = &ca->opts;
	printf("Formatting '%s', fmt=%s", path, cp_fmt_name(o->format));
	if (o->format == CP_FMT_RAW) {
		printf(" size=%" PRIu64, o->virtual_size);
		if (ca->prealloc_str)
			create_print_str("preallocation", ca->prealloc_str);
		putchar('\n');
		return;
	}
	printf(" cluster_size=%" PRIu32 " extended_l2=%s", o->cluster_size,
	       o->extended_l2 ? "on" : "off");
	if (ca->prealloc_str)
		create_print_str("preallocation", ca->prealloc_str);
	create_print_str("compression_type",
			 o->compression_type ? o->compression_type : "zlib");
	printf(" size=%" PRIu64, o->virtual_size);
	if (o->backing_file)
		create_print_str("backing_file", o->backing_file);
	if (o->backing_format)
		create_print_str("backing_fmt", o->backing_format);
	if (ca->compat_str)
		create_print_str("compat", ca->compat_str);
	printf(" lazy_refcounts=%s refcount_bits=%u\n",
	       o->lazy_refcounts ? "on" : "off", o->refcount_bits);
}

/* The backing file name as seen from the current directory: relative names
 * are relative to the directory of the image that names them. */
static void create_backing_path(const char *image, const char *backing,
				char *out, size_t len)
{
	const char *slash = strrchr(image, '/');
	if (backing[0] == '/' || !slash)
		snprintf(out, len, "%s", backing);
	else
		snprintf(out, len, "%.*s/%s", (int)(slash - image + 1), image,
			 backing);
}

int cli_create_image(const char *path, struct cli_create_args *ca, bool quiet)
{
	struct cp_create_opts *o = &ca->opts;

	if (o->backing_file && o->format != CP_FMT_QCOW2) {
		cli_error("%s: format %s does not support backing files", path,
			  cp_fmt_name(o->format));
		return -ENOTSUP;
	}
	if (o->backing_file && !o->backing_format) {
		cli_error("%s: backing file specified without backing format "
			  "(use -F or -o backing_fmt)",
			  path);
		return -EINVAL;
	}
	if (o->backing_file && !ca->unsafe) {
		/* Check the backing file opens, as qemu-img does, and take
		 * its size when none was given. */
		char bpath[4096];
		struct cp_open_opts oo;
		cp_image *bimg;
		cp_open_opts_init(&oo);
		oo.readonly = true;
		oo.no_backing = true;
		if (cli_parse_fmt(o->backing_format, &oo.format) < 0)
			return -EINVAL;
		create_backing_path(path, o->backing_file, bpath,
				    sizeof(bpath));
		int r = cp_image_open(bpath, &oo, &bimg);
		if (r < 0) {
			cli_error("%s: could not open backing image: %s", path,
				  cp_error_msg(r));
			return r;
		}
		if (!ca->size_set) {
			o->virtual_size = cp_image_size(bimg);
			ca->size_set = true;
		}
		cp_image_close(bimg);
	}
	if (!ca->size_set) {
		cli_error("%s: image creation needs a size parameter", path);
		return -EINVAL;
	}

	if (!quiet) {
		create_print_formatting(path, ca);
		fflush(stdout);
	}
	int r = cp_image_create(path, o);
	if (r < 0)
		cli_error_image(path, r);
	return r;
}

int cli_cmd_create(int argc, char **argv)
{
	const char *fmt = "raw", *backing = NULL, *backing_fmt = NULL;
	char *optstr = NULL;
	bool quiet = false, unsafe = false;
	int ret = 1;
	struct cli_create_args ca;
	enum cp_fmt f;

	/* -f is checked after the loop, as qemu-img does. */
	const struct cli_opt table[] = {
	    CLI_O_VAL('f', NULL, "fmt", &fmt, "raw (default, as qemu-img) or qcow2"),
	    CLI_O_VAL('b', NULL, "backing", &backing,
		      "backing file (needs -F)"),
	    CLI_O_VAL('F', NULL, "backing_fmt", &backing_fmt,
		      "backing file format"),
	    CLI_OPT_OPTIONS(&optstr, "comma separated key=value list; -o "
				     "help lists\nthem"),
	    CLI_O_FLAG('u', NULL, &unsafe,
		       "do not open the backing file (size required)"),
	    CLI_OPT_QUIET(&quiet),
	    CLI_O_REFUSE(0, "object", "object", "--object"),
	    CLI_OPT_END,
	};
	struct cli_parser p = {.cmd = "create", .opts = table};
	int st;
	if (!cli_parse_optlist(&p, argc, argv, &optstr, &st))
		return st;

	if (cli_parse_fmt(fmt, &f) < 0)
		goto out_free;
	if (optstr && cli_create_opts_want_help(optstr)) {
		cli_create_opts_help(f);
		free(optstr);
		return 0;
	}
	if (!p.npos) {
		cli_error("create: expecting image file name");
		goto out_free;
	}
	const char *path = p.pos[0];
	int k = 1;

	cli_create_args_init(&ca, f);
	ca.unsafe = unsafe;
	if (optstr && cli_create_opts_parse(&ca, path, optstr) < 0)
		goto out;
	if (backing)
		ca.opts.backing_file = backing;
	if (backing_fmt)
		ca.opts.backing_format = backing_fmt;
	if (k < p.npos) {
		uint64_t size;
		if (cli_parse_size("image size", p.pos[k++], &size) < 0)
			goto out;
		ca.opts.virtual_size = size;
		ca.size_set = true;
	}
	if (k < p.npos) {
		cli_error("create: unexpected argument '%s'", p.pos[k]);
		goto out;
	}

	ret = cli_create_image(path, &ca, quiet) < 0 ? 1 : 0;
out:
	cli_create_args_free(&ca);
out_free:
	free(optstr);
	return ret;
}
