/* cli/cmd_compare.c - `cowpool compare`: qemu-img compare.
 *
 * Walks both images with the allocation map, skipping ranges that read as
 * zeroes on both sides and reading the rest in chunks of at most 2 MiB.
 * Exit status as qemu-img: 0 identical, 1 different, 2 an image cannot be
 * opened, 3 an allocation map failed, 4 a read failed (1 also for bad
 * arguments).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define COMPARE_BUF_SIZE (2u << 20)
#define COMPARE_SECTOR 512u

enum {
	COMPARE_SAME = 0,
	COMPARE_DIFFERENT = 1,
	COMPARE_ERR_OPEN = 2,
	COMPARE_ERR_MAP = 3,
	COMPARE_ERR_READ = 4,
};

struct compare_side {
	const char *file;
	cp_image *img;
	uint64_t size;
	void *buf;
};

/* Status flags as qemu's block status compares them in strict mode. */
static unsigned compare_status(const struct cp_extent *e)
{
	return (e->present ? 1u : 0) | (e->zero ? 2u : 0) | (e->data ? 4u : 0) |
	       (e->offset != CP_NO_OFFSET ? 8u : 0);
}

static int compare_map(struct compare_side *s, uint64_t offset, uint64_t end,
		       struct cp_extent *e)
{
	int r = cp_image_map(s->img, offset, end - offset, e);
	if (r < 0) {
		cli_error_image(s->file, r);
		return -COMPARE_ERR_MAP;
	}
	if (e->length == 0) {
		cli_error("%s: allocation map returned an empty extent at "
			  "offset %" PRIu64,
			  s->file, offset);
		return -COMPARE_ERR_MAP;
	}
	if (e->length > end - offset)
		e->length = end - offset;
	return 0;
}

static int compare_read(struct compare_side *s, void *buf, uint64_t offset,
			size_t len)
{
	int r = cp_image_pread(s->img, buf, len, offset);
	if (r < 0) {
		cli_error_image(s->file, r);
		return -COMPARE_ERR_READ;
	}
	return 0;
}

/* Offset of the first 512-byte sector of buf that is not all zeroes, or
 * -1 (qemu's find_nonzero()). */
static int64_t compare_find_nonzero(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i += COMPARE_SECTOR) {
		if (!cp_is_zero(buf + i, CP_MIN(COMPARE_SECTOR, len - i)))
			return (int64_t)i;
	}
	return -1;
}

/* Offset of the first differing sector, or -1. */
static int64_t compare_buffers(const uint8_t *a, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i += COMPARE_SECTOR) {
		size_t n = CP_MIN(COMPARE_SECTOR, len - i);
		if (memcmp(a + i, b + i, n))
			return (int64_t)i;
	}
	return -1;
}

/* The range must read as zeroes on side s. */
static int compare_check_empty(struct compare_side *s, uint64_t offset,
			       size_t len, bool quiet)
{
	int r = compare_read(s, s->buf, offset, len);
	if (r < 0)
		return r;
	int64_t idx = compare_find_nonzero(s->buf, len);
	if (idx >= 0) {
		if (!quiet)
			printf("Content mismatch at offset %" PRIu64 "!\n",
			       offset + (uint64_t)idx);
		return COMPARE_DIFFERENT;
	}
	return COMPARE_SAME;
}

static int compare_images(struct compare_side *a, struct compare_side *b,
			  bool strict, bool quiet)
{
	uint64_t common = CP_MIN(a->size, b->size);
	uint64_t offset;
	int r;

	if (strict && a->size != b->size) {
		if (!quiet)
			printf("Strict mode: Image size mismatch!\n");
		return COMPARE_DIFFERENT;
	}

	for (offset = 0; offset < common;) {
		struct cp_extent ea, eb;
		if ((r = compare_map(a, offset, common, &ea)) < 0 ||
		    (r = compare_map(b, offset, common, &eb)) < 0)
			return -r;
		uint64_t chunk = CP_MIN(ea.length, eb.length);

		if (strict && compare_status(&ea) != compare_status(&eb)) {
			if (!quiet)
				printf("Strict mode: Offset %" PRIu64
				       " block status mismatch!\n",
				       offset);
			return COMPARE_DIFFERENT;
		}
		if (ea.zero && eb.zero) {
			/* nothing to read */
		} else if (ea.present == eb.present) {
			if (ea.present) {
				chunk = CP_MIN(chunk, COMPARE_BUF_SIZE);
				if ((r = compare_read(a, a->buf, offset,
						      chunk)) < 0 ||
				    (r = compare_read(b, b->buf, offset,
						      chunk)) < 0)
					return -r;
				int64_t idx =
				    compare_buffers(a->buf, b->buf, chunk);
				if (idx >= 0) {
					if (!quiet)
						printf("Content mismatch at "
						       "offset %" PRIu64 "!\n",
						       offset + (uint64_t)idx);
					return COMPARE_DIFFERENT;
				}
			}
		} else {
			chunk = CP_MIN(chunk, COMPARE_BUF_SIZE);
			r = compare_check_empty(ea.present ? a : b, offset,
						chunk, quiet);
			if (r < 0)
				return -r;
			if (r)
				return r;
		}
		offset += chunk;
	}

	if (a->size != b->size) {
		struct compare_side *over = a->size > b->size ? a : b;
		if (!quiet)
			printf("Warning: Image size mismatch!\n");
		for (offset = common; offset < over->size;) {
			struct cp_extent e;
			if ((r = compare_map(over, offset, over->size, &e)) < 0)
				return -r;
			uint64_t chunk = e.length;
			if (!e.zero) {
				chunk = CP_MIN(chunk, COMPARE_BUF_SIZE);
				r = compare_check_empty(over, offset, chunk,
							quiet);
				if (r < 0)
					return -r;
				if (r)
					return r;
			}
			offset += chunk;
		}
	}

	if (!quiet)
		printf("Images are identical.\n");
	return COMPARE_SAME;
}

int cli_cmd_compare(int argc, char **argv)
{
	struct cp_open_opts o1, o2;
	bool strict = false, quiet = false;

	cp_open_opts_init(&o1);
	o1.readonly = true;
	enum cp_fmt f2 = CP_FMT_AUTO;
	const struct cli_opt table[] = {
	    CLI_OPT_F(&o1.format, "format of the first image"),
	    CLI_OPT_FMT('F', "fmt", &f2, "format of the second image"),
	    CLI_O_FLAG('s', NULL, &strict,
		       "strict: fail on different size or allocation"),
	    CLI_O_NOP('p', NULL, "accepted (no progress output)"),
	    CLI_OPT_QUIET(&quiet),
	    CLI_OPTS_OPEN_END(&o1, "cache mode for both images"),
	};
	const char *files[2];
	int st = cli_parse_files("compare", table, argc, argv, 2, files);
	if (!files[0])
		return st;

	o2 = o1;
	o2.format = f2;
	struct compare_side a = {.file = files[0]};
	struct compare_side b = {.file = files[1]};
	int ret = COMPARE_ERR_OPEN;

	if (cli_open(a.file, &o1, &a.img) < 0)
		goto out;
	if (cli_open(b.file, &o2, &b.img) < 0)
		goto out;
	a.size = cp_image_size(a.img);
	b.size = cp_image_size(b.img);
	a.buf = cp_bdev_alloc_buf(COMPARE_BUF_SIZE);
	b.buf = cp_bdev_alloc_buf(COMPARE_BUF_SIZE);
	if (!a.buf || !b.buf) {
		cli_error("out of memory");
		goto out;
	}
	ret = compare_images(&a, &b, strict, quiet);
out:
	if (a.buf)
		cp_bdev_free_buf(a.buf);
	if (b.buf)
		cp_bdev_free_buf(b.buf);
	if (a.img)
		cp_image_close(a.img);
	if (b.img)
		cp_image_close(b.img);
	return ret;
}
