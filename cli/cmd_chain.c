/* cli/cmd_chain.c - `cowpool chain`: the backing chain of an image, top to
 * bottom, with what each layer allocates.  No qemu-img counterpart.
 *
 * Per layer: bytes allocated in that layer alone (cp_image_is_allocated()
 * runs), split into data and zero clusters by the allocation map, and the
 * host file's disk usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vector.h"

struct chain_layer {
	const char *filename; /* borrowed from the open image */
	enum cp_fmt format;
	int depth;
	uint64_t virtual_size, allocated, data, zero, disk_size;
};

CP_VECTOR(chain_layers, struct chain_layer);

/* Account what layer img (opened in its chain) allocates itself. */
static int chain_measure_layer(cp_image *img, struct chain_layer *l)
{
	uint64_t size = cp_image_size(img), off = 0, n;
	struct cp_image_info info;
	int r;

	while (off < size) {
		r = cp_image_is_allocated(img, off, size - off, &n);
		if (r < 0)
			return r;
		if (!n)
			return cp_error(-EIO, "%s: empty allocation run at "
					"offset %" PRIu64,
					cp_image_filename(img), off);
		n = CP_MIN(n, size - off);
		if (r == 1) {
			l->allocated += n;
			/* Split the run by the map; depth 0 here is this
			 * layer. */
			for (uint64_t p = off, end = off + n; p < end;) {
				struct cp_extent e;
				r = cp_image_map(img, p, end - p, &e);
				if (r < 0)
					return r;
				if (!e.length)
					return cp_error(
					    -EIO,
					    "%s: empty allocation map extent "
					    "at offset %" PRIu64,
					    cp_image_filename(img), p);
				uint64_t len = CP_MIN(e.length, end - p);
				if (e.zero && !e.data)
					l->zero += len;
				else
					l->data += len;
				p += len;
			}
		}
		off += n;
	}
	r = cp_image_get_info(img, &info);
	if (r < 0)
		return r;
	l->disk_size = info.actual_size;
	return 0;
}

static void chain_print_json(const chain_layers *v)
{
	printf("[");
	for (size_t k = 0; k < v->len; k++) {
		const struct chain_layer *l = &v->ptr[k];
		struct cli_json *o = cli_json_new();
		cli_json_add_str(o, "filename", l->filename);
		cli_json_add_str(o, "format", cp_fmt_name(l->format));
		cli_json_add_int(o, "virtual-size", (int64_t)l->virtual_size);
		cli_json_add_int(o, "allocated", (int64_t)l->allocated);
		cli_json_add_int(o, "data", (int64_t)l->data);
		cli_json_add_int(o, "zero", (int64_t)l->zero);
		cli_json_add_int(o, "disk-size", (int64_t)l->disk_size);
		cli_json_add_int(o, "depth", l->depth);
		printf(k ? ",\n    " : "\n    ");
		cli_json_print(stdout, o, 1);
		cli_json_free(o);
	}
	printf("\n]\n");
}

static void chain_print_human(const chain_layers *v)
{
	printf("%-5s  %-6s  %12s  %12s  %12s  %12s  %12s  %s\n", "DEPTH",
	       "FORMAT", "VIRTUAL SIZE", "ALLOCATED", "DATA", "ZERO",
	       "DISK SIZE", "FILENAME");
	for (size_t k = 0; k < v->len; k++) {
		const struct chain_layer *l = &v->ptr[k];
		char vs[32], al[32], da[32], ze[32], ds[32];
		cli_size_to_str(l->virtual_size, vs, sizeof(vs));
		cli_size_to_str(l->allocated, al, sizeof(al));
		cli_size_to_str(l->data, da, sizeof(da));
		cli_size_to_str(l->zero, ze, sizeof(ze));
		cli_size_to_str(l->disk_size, ds, sizeof(ds));
		printf("%-5d  %-6s  %12s  %12s  %12s  %12s  %12s  %s\n",
		       l->depth, cp_fmt_name(l->format), vs, al, da, ze, ds,
		       l->filename);
	}
}

int cli_cmd_chain(int argc, char **argv)
{
	struct cp_open_opts opts;
	bool json = false;

	cp_open_opts_init(&opts);
	opts.readonly = true;
	const struct cli_opt table[] = {
	    CLI_OPT_F(&opts.format, "format of the top image"),
	    CLI_OPT_OUTPUT(&json, "ofmt", "human (default) or json"),
	    CLI_OPTS_OPEN(&opts, "cache mode"),
	    CLI_OPT_END,
	};
	cp_image *top;
	int st = cli_parse_open("chain", table, argc, argv, &opts, &top);
	if (!top)
		return st;

	chain_layers layers = {0};
	int ret = 1, depth = 0;
	for (cp_image *img = top; img; img = cp_image_backing(img), depth++) {
		struct chain_layer l = {
		    .filename = cp_image_filename(img),
		    .format = cp_image_format(img),
		    .depth = depth,
		    .virtual_size = cp_image_size(img),
		};
		int r = chain_measure_layer(img, &l);
		if (r < 0) {
			cli_error_image(l.filename, r);
			goto out;
		}
		if (chain_layers_append(&layers, l) < 0) {
			cli_error("out of memory");
			goto out;
		}
	}
	if (json)
		chain_print_json(&layers);
	else
		chain_print_human(&layers);
	ret = 0;
out:
	free(layers.ptr);
	cp_image_close(top);
	return ret;
}
