/* cli/cmd_map.c - `cowpool map`: qemu-img map, human and JSON.
 *
 * The loop, the merging of adjacent extents and both output formats follow
 * qemu-img 7.2's img_map() so the output is identical.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* qemu-img's MapEntry. */
struct map_entry {
	uint64_t start, length;
	int depth;
	bool present, zero, data;
	bool has_offset;
	uint64_t offset;
	const char *filename; /* set only with has_offset, as in qemu */
};

static bool map_mergeable(const struct map_entry *curr,
			  const struct map_entry *next)
{
	if (curr->length == 0)
		return false;
	if (curr->zero != next->zero || curr->data != next->data ||
	    curr->depth != next->depth || curr->present != next->present ||
	    !curr->filename != !next->filename ||
	    curr->has_offset != next->has_offset)
		return false;
	if (curr->filename && strcmp(curr->filename, next->filename))
		return false;
	if (curr->has_offset && curr->offset + curr->length != next->offset)
		return false;
	return true;
}

static int map_dump(bool json, const char *file, const struct map_entry *e,
		    struct map_entry *next)
{
	if (!json) {
		if (e->data && !e->has_offset) {
			cli_error("%s: file contains external, encrypted or "
				  "compressed clusters",
				  file);
			return -1;
		}
		if (e->data && !e->zero)
			printf(
			    "%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n",
			    e->start, e->length, e->has_offset ? e->offset : 0,
			    e->filename ? e->filename : "");
		/* The human format ignores the distinction between 0, ZERO
		 * and ZERO|DATA: fold them to allow more coalescing. */
		if (next && (!next->data || next->zero)) {
			next->data = false;
			next->zero = true;
		}
		return 0;
	}
	printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
	       ", \"depth\": %d, \"present\": %s, \"zero\": %s, \"data\": %s",
	       e->start, e->length, e->depth, e->present ? "true" : "false",
	       e->zero ? "true" : "false", e->data ? "true" : "false");
	if (e->has_offset)
		printf(", \"offset\": %" PRIu64, e->offset);
	putchar('}');
	if (next)
		puts(",");
	return 0;
}

static int map_get(cp_image *img, int layers, uint64_t offset, uint64_t len,
		   struct map_entry *e)
{
	struct cp_extent ext;
	int r = cp_image_map(img, offset, len, &ext);
	if (r < 0)
		return r;
	if (ext.length == 0 || ext.start != offset)
		return cp_error(-EIO,
				"%s: allocation map of offset %" PRIu64
				" returned an empty or misplaced extent",
				cp_image_filename(img), offset);
	*e = (struct map_entry){
	    .start = offset,
	    .length = CP_MIN(ext.length, len),
	    .depth = ext.depth,
	    .present = ext.present,
	    .zero = ext.zero,
	    .data = ext.data,
	    .has_offset = ext.offset != CP_NO_OFFSET,
	    .offset = ext.offset,
	};
	if (e->has_offset)
		e->filename = ext.filename;
	/* qemu reports a range allocated nowhere at the depth of the last
	 * layer it asked. */
	if (!e->present && e->depth > layers - 1)
		e->depth = layers - 1;
	return 0;
}

int cli_cmd_map(int argc, char **argv)
{
	struct cp_open_opts opts;
	bool json = false, have_max = false;
	uint64_t start = 0, max_len = 0;

	cp_open_opts_init(&opts);
	opts.readonly = true;
	const struct cli_opt table[] = {
	    CLI_OPT_F(&opts.format, "image format"),
	    CLI_OPT_OUTPUT(&json, "ofmt", "human (default) or json"),
	    CLI_O_SIZE(0, "start-offset", "offset", "start offset", &start,
		       "first byte to map"),
	    CLI_O_SIZE_SEEN(0, "max-length", "len", "max length", &max_len,
			    &have_max, "bytes to map"),
	    CLI_OPTS_OPEN_END(&opts, "cache mode"),
	};
	cp_image *img;
	int st = cli_parse_open("map", table, argc, argv, &opts, &img);
	if (!img)
		return st;
	const char *file = cp_image_filename(img);

	int layers = cli_chain_length(img);
	uint64_t length = cp_image_size(img);
	if (have_max)
		length = CP_MIN(start + max_len, length);

	if (json)
		putchar('[');
	else
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to",
		       "File");

	struct map_entry curr = {.start = start}, next;
	int ret = 0;
	while (curr.start + curr.length < length) {
		uint64_t offset = curr.start + curr.length;
		uint64_t n = CP_MIN(length - offset, (uint64_t)1 << 30);
		int r = map_get(img, layers, offset, n, &next);
		if (r < 0) {
			cli_error_image(file, r);
			ret = 1;
			goto out;
		}
		if (map_mergeable(&curr, &next)) {
			curr.length += next.length;
			continue;
		}
		if (curr.length > 0 && map_dump(json, file, &curr, &next) < 0) {
			ret = 1;
			goto out;
		}
		curr = next;
	}
	if (map_dump(json, file, &curr, NULL) < 0)
		ret = 1;
	if (json)
		puts("]");
out:
	cp_image_close(img);
	return ret;
}
