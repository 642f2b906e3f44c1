/* tests/integration/mh_helper.c - small tools for the multi-host test
 * (multihost.sh); not installed, not part of cowpool.
 *
 *   json EXPR < JSON     print values of the JSON text on stdin selected by
 *                        EXPR: a chain of .KEY, [N] and [] (every element),
 *                        e.g. '.volumes[].uuid'.  Strings print raw, null as
 *                        "null", numbers and booleans as text, objects and
 *                        arrays as compact JSON; one value per line.  Exit 1
 *                        when nothing is selected or the text is not JSON.
 *   pattern FILE OFF LEN SEED
 *                        write the test pattern for [OFF, OFF+LEN) into a
 *                        plain FILE (the reference), extending it if needed
 *   write DOMAIN-OPTS DOM IMG VOL OFF LEN SEED [OFF LEN SEED...]
 *                        write the same pattern into the volume chain whose
 *                        top is VOL, through the domain (cp_sd_open_image,
 *                        read-write), the way a guest would
 *   export DOMAIN-OPTS DOM IMG VOL OUT
 *                        read the whole chain whose top is VOL through the
 *                        domain (read-only) into the raw file OUT
 *
 * DOMAIN-OPTS: --root DIR (a file domain under DIR) or --lvm-device DEV
 * (a block domain on DEV; repeatable; LVM_SYSTEM_DIR from the
 * environment).  The pattern: every 512-byte block of the disk holds its
 * own byte offset and the seed, so misplaced data is never mistaken for
 * the right data.  Exit 0, or 1 with "mh_helper: message" on stderr.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

#include "common.h"
#include "json.h"
#include "jsonw.h"
#include "qcow.h"
#include "spm.h"

#include "helper_lib.h"

#define CHUNK (1u << 20)

static uint64_t num(const char *s)
{
	return hl_size("number", s);
}

static int die(const char *what, int r)
{
	fprintf(stderr, "mh_helper: %s: %s (%s)\n", what,
		cp_error_msg(r < 0 ? r : -r),
		strerror(r < 0 ? -r : r));
	return 1;
}

/* ---- json ------------------------------------------------------------------ */

static void print_value(const cp_json *v)
{
	struct cp_jsonw w;
	switch (cp_json_type(v)) {
	case CP_JSON_STRING:
		puts(cp_json_string(v, NULL));
		return;
	case CP_JSON_NULL:
		puts("null");
		return;
	case CP_JSON_NUMBER:
		puts(cp_json_number_text(v));
		return;
	default:
		cp_jsonw_init(&w);
		cp_jsonw_value(&w, NULL, v);
		if (w.buf)
			puts(w.buf);
		cp_jsonw_free(&w);
	}
}

/* Select along expr from v; returns the number of values printed. */
static size_t select_print(const cp_json *v, const char *expr)
{
	char key[256];
	size_t n = 0;

	if (!v)
		return 0;
	if (!*expr) {
		print_value(v);
		return 1;
	}
	if (*expr == '.') {
		size_t k = 0;
		expr++;
		if (!*expr) {  /* "." alone: the value itself */
			print_value(v);
			return 1;
		}
		while (*expr && *expr != '.' && *expr != '[' &&
		       k < sizeof(key) - 1)
			key[k++] = *expr++;
		key[k] = '\0';
		if (cp_json_type(v) != CP_JSON_OBJECT)
			return 0;
		return select_print(cp_json_get(v, key), expr);
	}
	if (*expr == '[') {
		const char *close = strchr(expr, ']');
		if (!close || cp_json_type(v) != CP_JSON_ARRAY)
			return 0;
		if (close == expr + 1) {
			for (size_t i = 0; i < cp_json_count(v); i++)
				n += select_print(cp_json_at(v, i), close + 1);
			return n;
		}
		size_t idx = strtoul(expr + 1, NULL, 10);
		if (idx >= cp_json_count(v))
			return 0;
		return select_print(cp_json_at(v, idx), close + 1);
	}
	fprintf(stderr, "mh_helper: bad expression at '%s'\n", expr);
	exit(2);
}

static int cmd_json(const char *expr)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	ssize_t r;
	cp_json *root;

	while (buf && (r = read(0, buf + len, cap - len)) > 0) {
		len += (size_t)r;
		if (len == cap)
			buf = realloc(buf, cap *= 2);
	}
	if (!buf)
		return die("json", -ENOMEM);
	if (cp_json_parse(buf, len, NULL, &root) < 0)
		return die("json: stdin", -EINVAL);
	size_t n = select_print(root, expr);
	cp_json_free(root);
	free(buf);
	return n ? 0 : 1;
}

/* ---- the pattern ------------------------------------------------------------ */

static void pattern(uint8_t *buf, size_t len, uint64_t off, uint64_t seed)
{
	for (size_t i = 0; i < len; i++) {
		uint64_t p = off + i;
		uint64_t blk = p & ~511ull;
		uint64_t x = (blk * 0x9e3779b97f4a7c15ull) ^ (seed * 0xbf58476d1ce4e5b9ull) ^
			     (p & 511);
		x ^= x >> 29;
		x *= 0x94d049bb133111ebull;
		x ^= x >> 32;
		buf[i] = (uint8_t)x;
	}
}

static int cmd_pattern(const char *file, uint64_t off, uint64_t len,
		       uint64_t seed)
{
	int fd = open(file, O_WRONLY | O_CREAT, 0644);
	uint8_t *buf = malloc(CHUNK);
	if (fd < 0 || !buf)
		return die(file, -errno);
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done > CHUNK ? CHUNK : (size_t)(len - done);
		pattern(buf, n, off + done, seed);
		if (pwrite(fd, buf, n, (off_t)(off + done)) != (ssize_t)n)
			return die(file, -errno);
		done += n;
	}
	free(buf);
	return close(fd) < 0 ? die(file, -errno) : 0;
}

/* ---- domains ------------------------------------------------------------------ */

static const char *root;
static const char *devices[16];
static struct cp_lvm_opts lvm;

/* Parse DOMAIN-OPTS; returns the index of the first other argument. */
static int dom_opts(int argc, char **argv, int i)
{
	size_t nd = 0;
	while (i + 1 < argc) {
		if (!strcmp(argv[i], "--root")) {
			root = argv[i + 1];
		} else if (!strcmp(argv[i], "--lvm-device") && nd < 15) {
			devices[nd++] = argv[i + 1];
		} else {
			break;
		}
		i += 2;
	}
	if (!root == !nd) {
		fprintf(stderr, "mh_helper: give --root DIR or --lvm-device DEV\n");
		exit(2);
	}
	return i;
}

static int open_sd(const char *dom, cp_sd **sd)
{
	struct cp_sd_loc loc;
	cp_sd_loc_init(&loc);
	cp_lvm_opts_init(&lvm);
	lvm.system_dir = getenv("LVM_SYSTEM_DIR");
	lvm.devices = devices;
	loc.type = root ? CP_DOMAIN_TYPE_FILE : CP_DOMAIN_TYPE_BLOCK;
	loc.root = root;
	loc.lvm = root ? NULL : &lvm;
	return cp_sd_open(&loc, dom, sd);
}

/* The chain of volume vol of image img in domain dom (rw: its top opened
 * read-write); 0, or 1 (the exit status) with the error printed. */
static int open_vol(const char *dom, const char *img, const char *vol,
		    bool rw, cp_sd **sd, struct cp_sd_chain *c)
{
	int r = open_sd(dom, sd);
	if (r < 0)
		return die(dom, r);
	r = cp_sd_open_image(*sd, img, vol, rw, c);
	if (r < 0)
		return die(vol, r);
	return 0;
}

/* ranges: n triples OFF LEN SEED */
static int cmd_write(const char *dom, const char *img, const char *vol,
		     char **ranges, int n)
{
	struct cp_sd_chain c;
	cp_sd *sd;
	uint8_t *buf = malloc(CHUNK);
	int r;

	if (!buf)
		return die("write", -ENOMEM);
	if (open_vol(dom, img, vol, true, &sd, &c))
		return 1;
	for (int k = 0; k < n; k++) {
		uint64_t off = num(ranges[3 * k]), len = num(ranges[3 * k + 1]);
		uint64_t seed = num(ranges[3 * k + 2]);
		for (uint64_t done = 0; done < len;) {
			size_t m = len - done > CHUNK ? CHUNK
						      : (size_t)(len - done);
			pattern(buf, m, off + done, seed);
			if ((r = cp_image_pwrite(c.img, buf, m, off + done)) < 0)
				return die("write", r);
			done += m;
		}
	}
	if ((r = cp_image_flush(c.img)) < 0)
		return die("flush", r);
	if ((r = cp_sd_close_image(&c)) < 0)
		return die("close", r);
	cp_sd_close(sd);
	free(buf);
	return 0;
}

static int cmd_export(const char *dom, const char *img, const char *vol,
		      const char *out)
{
	struct cp_sd_chain c;
	cp_sd *sd;
	uint8_t *buf = malloc(CHUNK);
	int r, fd;

	if (!buf)
		return die("export", -ENOMEM);
	if (open_vol(dom, img, vol, false, &sd, &c))
		return 1;
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return die(out, -errno);
	uint64_t size = cp_image_size(c.img);
	for (uint64_t done = 0; done < size;) {
		size_t n = size - done > CHUNK ? CHUNK : (size_t)(size - done);
		if ((r = cp_image_pread(c.img, buf, n, done)) < 0)
			return die("read", r);
		if (pwrite(fd, buf, n, (off_t)done) != (ssize_t)n)
			return die(out, -errno);
		done += n;
	}
	if (ftruncate(fd, (off_t)size) < 0 || close(fd) < 0)
		return die(out, -errno);
	cp_sd_close_image(&c);
	cp_sd_close(sd);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	hl_prog = "mh_helper";
	const char *cmd = argc > 1 ? argv[1] : "";
	int i;

	if (!strcmp(cmd, "json") && argc == 3)
		return cmd_json(argv[2]);
	if (!strcmp(cmd, "pattern") && argc == 6)
		return cmd_pattern(argv[2], num(argv[3]), num(argv[4]),
				   num(argv[5]));
	if (!strcmp(cmd, "write") && argc > 2) {
		i = dom_opts(argc, argv, 2);
		if (argc - i >= 6 && (argc - i) % 3 == 0)
			return cmd_write(argv[i], argv[i + 1], argv[i + 2],
					 argv + i + 3, (argc - i - 3) / 3);
	}
	if (!strcmp(cmd, "export") && argc > 2) {
		i = dom_opts(argc, argv, 2);
		if (argc - i == 4)
			return cmd_export(argv[i], argv[i + 1], argv[i + 2],
					  argv[i + 3]);
	}
	fprintf(stderr,
		"usage: mh_helper json EXPR < JSON\n"
		"       mh_helper pattern FILE OFF LEN SEED\n"
		"       mh_helper write (--root DIR | --lvm-device DEV) DOM IMG VOL OFF LEN SEED...\n"
		"       mh_helper export (--root DIR | --lvm-device DEV) DOM IMG VOL OUT\n");
	return 2;
}
