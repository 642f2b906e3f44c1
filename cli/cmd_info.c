/* cli/cmd_info.c - `cowpool info`: qemu-img info, human and JSON. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vector.h"

/* One layer as qemu-img's ImageInfo describes it. */
struct info_layer {
	char filename[4096];
	char real[PATH_MAX]; /* for loop detection */
	struct cp_image_info info;
	struct cp_bitmap_info *bm; /* persistent bitmaps (malloc'd) */
	int nb_bm;
};

CP_VECTOR(info_layers, struct info_layer);

static struct cli_json *info_to_json(const struct info_layer *l)
{
	const struct cp_image_info *i = &l->info;
	struct cli_json *o = cli_json_new();

	cli_json_add_int(o, "virtual-size", (int64_t)i->virtual_size);
	cli_json_add_str(o, "filename", l->filename);
	if (i->format == CP_FMT_QCOW2)
		cli_json_add_int(o, "cluster-size", i->cluster_size);
	cli_json_add_str(o, "format", cp_fmt_name(i->format));
	cli_json_add_int(o, "actual-size", (int64_t)i->actual_size);
	cli_json_add_bool(o, "dirty-flag", i->dirty);
	if (i->backing_file[0]) {
		cli_json_add_str(o, "backing-filename", i->backing_file);
		if (i->full_backing_filename[0])
			cli_json_add_str(o, "full-backing-filename",
					 i->full_backing_filename);
		if (i->backing_format[0])
			cli_json_add_str(o, "backing-filename-format",
					 i->backing_format);
	}
	if (i->format == CP_FMT_QCOW2) {
		struct cli_json *spec = cli_json_new();
		struct cli_json *data = cli_json_new();
		cli_json_add_str(data, "compat",
				 i->qcow_version >= 3 ? "1.1" : "0.10");
		cli_json_add_str(data, "compression-type",
				 i->compression_type[0] ? i->compression_type
							: "zlib");
		if (i->qcow_version >= 3)
			cli_json_add_bool(data, "lazy-refcounts",
					  i->lazy_refcounts);
		cli_json_add_int(data, "refcount-bits", i->refcount_bits);
		if (l->nb_bm) {
			struct cli_json *list = cli_json_new_array();
			for (int k = 0; k < l->nb_bm; k++) {
				struct cli_json *b = cli_json_new();
				struct cli_json *fl = cli_json_new_array();
				if (l->bm[k].in_use)
					cli_json_add_str(fl, "", "in-use");
				if (l->bm[k].enabled)
					cli_json_add_str(fl, "", "auto");
				cli_json_add_obj(b, "flags", fl);
				cli_json_add_str(b, "name", l->bm[k].name);
				cli_json_add_int(b, "granularity",
						 l->bm[k].granularity);
				cli_json_add_obj(list, "", b);
			}
			cli_json_add_obj(data, "bitmaps", list);
		}
		if (i->qcow_version >= 3) {
			cli_json_add_bool(data, "corrupt", i->corrupt);
			cli_json_add_bool(data, "extended-l2", i->extended_l2);
		}
		cli_json_add_str(spec, "type", "qcow2");
		cli_json_add_obj(spec, "data", data);
		cli_json_add_obj(o, "format-specific", spec);
	}
	return o;
}

static void info_print_human(const struct info_layer *l)
{
	const struct cp_image_info *i = &l->info;
	char vsize[32], dsize[32];

	cli_size_to_str(i->virtual_size, vsize, sizeof(vsize));
	cli_size_to_str(i->actual_size, dsize, sizeof(dsize));
	printf("image: %s\n"
	       "file format: %s\n"
	       "virtual size: %s (%" PRIu64 " bytes)\n"
	       "disk size: %s\n",
	       l->filename, cp_fmt_name(i->format), vsize, i->virtual_size,
	       dsize);
	if (i->format == CP_FMT_QCOW2)
		printf("cluster_size: %" PRIu32 "\n", i->cluster_size);
	if (i->dirty)
		printf("cleanly shut down: no\n");
	if (i->backing_file[0]) {
		printf("backing file: %s", i->backing_file);
		if (!i->full_backing_filename[0])
			printf(" (cannot determine actual path)");
		else if (strcmp(i->backing_file, i->full_backing_filename))
			printf(" (actual path: %s)", i->full_backing_filename);
		printf("\n");
		if (i->backing_format[0])
			printf("backing file format: %s\n", i->backing_format);
	}
	if (i->format != CP_FMT_QCOW2)
		return;
	/* The lines of the format-specific data, in qemu's QDict order, with
	 * '-' in key names shown as ' '. */
	printf("Format specific information:\n"
	       "    compat: %s\n"
	       "    compression type: %s\n",
	       i->qcow_version >= 3 ? "1.1" : "0.10",
	       i->compression_type[0] ? i->compression_type : "zlib");
	if (i->qcow_version >= 3)
		printf("    lazy refcounts: %s\n",
		       i->lazy_refcounts ? "true" : "false");
	if (l->nb_bm)
		printf("    bitmaps:\n");
	for (int k = 0; k < l->nb_bm; k++) {
		int n = 0;
		printf("        [%d]:\n"
		       "            flags:\n", k);
		if (l->bm[k].in_use)
			printf("                [%d]: in-use\n", n++);
		if (l->bm[k].enabled)
			printf("                [%d]: auto\n", n++);
		printf("            name: %s\n"
		       "            granularity: %" PRIu32 "\n",
		       l->bm[k].name, l->bm[k].granularity);
	}
	printf("    refcount bits: %u\n", i->refcount_bits);
	if (i->qcow_version >= 3)
		printf("    corrupt: %s\n"
		       "    extended l2: %s\n",
		       i->corrupt ? "true" : "false",
		       i->extended_l2 ? "true" : "false");
}

/* Open one layer on its own (no backing chain, as qemu-img info does) and
 * collect its information. */
static int info_collect(const char *path, enum cp_fmt fmt,
			const struct cp_open_opts *base, struct info_layer *l)
{
	struct cp_open_opts opts = *base;
	cp_image *img;
	opts.format = fmt;
	opts.readonly = true;
	opts.no_backing = true;
	if (cli_open(path, &opts, &img) < 0)
		return -1;
	memset(l, 0, sizeof(*l));
	/* as qemu-img: a json:{...} name shows the file it names */
	snprintf(l->filename, sizeof(l->filename), "%s",
		 strncmp(path, "json:", 5) ? path : cp_image_filename(img));
	int r = cp_image_get_info(img, &l->info);
	int n = r < 0 ? 0 : cp_image_bitmap_count(img);
	if (n > 0 && !(l->bm = calloc((size_t)n, sizeof(*l->bm))))
		r = -ENOMEM;
	for (int k = 0; r >= 0 && k < n; k++)
		r = cp_image_bitmap_get(img, (unsigned)k, &l->bm[k]);
	if (r >= 0)
		l->nb_bm = n;
	if (r < 0)
		cli_error_image(path, r);
	cp_image_close(img);
	return r < 0 ? -1 : 0;
}

int cli_cmd_info(int argc, char **argv)
{
	struct cp_open_opts opts;
	bool json = false, chain = false;
	enum cp_fmt fmt = CP_FMT_AUTO;

	cp_open_opts_init(&opts);
	const struct cli_opt table[] = {
	    CLI_OPT_F(&fmt, "image format"),
	    CLI_OPT_OUTPUT(&json, "ofmt", "human (default) or json"),
	    CLI_O_FLAG(0, "backing-chain", &chain,
		       "show every layer of the backing chain"),
	    CLI_OPTS_OPEN_END(&opts, "cache mode"),
	};
	const char *file;
	int st = cli_parse_files("info", table, argc, argv, 1, &file);
	if (!file)
		return st;

	info_layers layers = {0};
	char path[4096];
	int ret = 1;

	snprintf(path, sizeof(path), "%s", file);
	for (;;) {
		struct info_layer l;
		/* Refuse loops, as qemu-img does. */
		char real[PATH_MAX];
		if (!realpath(path, real))
			snprintf(real, sizeof(real), "%s", path);
		for (size_t k = 0; k < layers.len; k++) {
			if (!strcmp(layers.ptr[k].real, real)) {
				cli_error("%s: backing file '%s' creates an "
					  "infinite loop",
					  layers.ptr[0].filename, path);
				goto out;
			}
		}
		if (layers.len == 64) {
			cli_error("%s: backing chain is longer than 64 layers",
				  layers.ptr[0].filename);
			goto out;
		}
		if (info_collect(path, fmt, &opts, &l) < 0)
			goto out;
		snprintf(l.real, sizeof(l.real), "%s", real);
		if (info_layers_append(&layers, l) < 0) {
			cli_error("out of memory");
			goto out;
		}
		const struct info_layer *cur = &layers.ptr[layers.len - 1];
		const struct cp_image_info *i = &cur->info;
		if (!chain || !i->backing_file[0])
			break;
		if (!i->full_backing_filename[0]) {
			cli_error("%s: cannot determine the path of backing "
				  "file '%s'",
				  cur->filename, i->backing_file);
			goto out;
		}
		fmt = CP_FMT_AUTO;
		if (i->backing_format[0] &&
		    cp_fmt_parse(i->backing_format, &fmt) < 0) {
			cli_error("%s: unknown backing file format '%s'",
				  cur->filename, i->backing_format);
			goto out;
		}
		snprintf(path, sizeof(path), "%s", i->full_backing_filename);
	}

	if (json) {
		if (chain)
			printf("[\n    ");
		for (size_t k = 0; k < layers.len; k++) {
			struct cli_json *o = info_to_json(&layers.ptr[k]);
			if (k)
				printf(",\n    ");
			cli_json_print(stdout, o, chain ? 1 : 0);
			cli_json_free(o);
		}
		printf(chain ? "\n]\n" : "\n");
	} else {
		for (size_t k = 0; k < layers.len; k++) {
			if (k)
				printf("\n");
			info_print_human(&layers.ptr[k]);
		}
	}
	ret = 0;
out:
	for (size_t k = 0; k < layers.len; k++)
		free(layers.ptr[k].bm);
	free(layers.ptr);
	return ret;
}
