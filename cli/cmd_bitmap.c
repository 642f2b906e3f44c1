/* cli/cmd_bitmap.c - `cowpool bitmap`: qemu-img bitmap, the persistent
 * dirty bitmaps of a qcow2 image (cp_image_bitmap_*()).
 *
 * The actions run in command-line order on one read-write open.  Unlike
 * qemu-img, which keeps the actions done before a failing one, the whole
 * list is checked against the image's bitmaps first, so a command that
 * fails changes nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum bm_verb { BM_ADD, BM_REMOVE, BM_CLEAR, BM_ENABLE, BM_DISABLE, BM_MERGE };
static const char *const bm_verb_name[] = {
    "add", "remove", "clear", "enable", "disable", "merge",
};

struct bm_action {
	enum bm_verb verb;
	const char *src; /* --merge SOURCE */
};

struct bm_cmd {
	struct bm_action act[64];
	unsigned n;
	bool add;
};

static int bm_opt_push(struct cli_parser *p, struct bm_cmd *c, enum bm_verb v,
		       const char *src)
{
	if (c->n == CP_ARRAY_SIZE(c->act)) {
		cli_error("%s: too many actions", p->cmd);
		return -EINVAL;
	}
	c->act[c->n].verb = v;
	c->act[c->n++].src = src;
	if (v == BM_ADD)
		c->add = true;
	return 0;
}

#define BM_OPT_FN(verb)                                                        \
	static int bm_opt_##verb(struct cli_parser *p,                         \
				 const struct cli_opt *o, const char *arg)     \
	{                                                                      \
		return bm_opt_push(p, o->dst, verb, arg);                      \
	}
BM_OPT_FN(BM_ADD)
BM_OPT_FN(BM_REMOVE)
BM_OPT_FN(BM_CLEAR)
BM_OPT_FN(BM_ENABLE)
BM_OPT_FN(BM_DISABLE)
BM_OPT_FN(BM_MERGE)

/* The bitmaps after each action, to refuse a failing list up front. */
struct bm_sim {
	char (*name)[1024];
	bool *in_use;
	int n, cap;
};

static int bm_sim_find(const struct bm_sim *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->name[i], name))
			return i;
	return -1;
}

static int bm_fail(enum bm_verb v, const char *name, const char *fmt,
		   const char *arg)
{
	char msg[1200];
	snprintf(msg, sizeof(msg), fmt, arg);
	return cli_error("Operation %s on bitmap %s failed: %s", bm_verb_name[v],
			 name, msg);
}

/* Check the actions against the image's bitmaps (and the merge source's
 * bitmap names in src).  0 when every action would succeed. */
static int bm_simulate(cp_image *img, cp_image *src, const struct bm_cmd *c,
		       const char *name, uint64_t gran)
{
	struct bm_sim s = {0};
	int n = cp_image_bitmap_count(img), ret = 1;
	s.cap = n + (int)c->n + 1;
	s.name = calloc((size_t)s.cap, sizeof(*s.name));
	s.in_use = calloc((size_t)s.cap, sizeof(*s.in_use));
	if (!s.name || !s.in_use) {
		cli_error("out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		struct cp_bitmap_info bi;
		if (cp_image_bitmap_get(img, (unsigned)i, &bi) < 0)
			goto out;
		memcpy(s.name[s.n], bi.name, sizeof(bi.name));
		s.in_use[s.n++] = bi.in_use;
	}
	if (gran && (gran < 512 || (gran & (gran - 1)) || gran > (1ull << 31))) {
		bm_fail(BM_ADD, name, "%s", "Granularity must be power of 2 "
			"and at least 512");
		goto out;
	}
	if (strlen(name) > 1023) {
		cli_error("bitmap name '%s' is longer than 1023 bytes", name);
		goto out;
	}
	for (unsigned k = 0; k < c->n; k++) {
		enum bm_verb v = c->act[k].verb;
		int i = bm_sim_find(&s, name);
		if (v == BM_ADD) {
			if (i >= 0) {
				bm_fail(v, name, "Bitmap already exists: %s", name);
				goto out;
			}
			snprintf(s.name[s.n], sizeof(s.name[0]), "%s", name);
			s.in_use[s.n++] = false;
			continue;
		}
		if (i < 0) {
			bm_fail(v, name, "Dirty bitmap '%s' not found", name);
			goto out;
		}
		if (v == BM_REMOVE) {
			memmove(s.name + i, s.name + i + 1,
				(size_t)(s.n - i - 1) * sizeof(s.name[0]));
			memmove(s.in_use + i, s.in_use + i + 1,
				(size_t)(s.n - i - 1) * sizeof(s.in_use[0]));
			s.n--;
			continue;
		}
		if (s.in_use[i]) {
			bm_fail(v, name, "Bitmap '%s' is inconsistent and cannot "
				"be used", name);
			goto out;
		}
		if (v == BM_MERGE) {
			const char *sn = c->act[k].src;
			int j = -1, m = src ? cp_image_bitmap_count(src) : s.n;
			bool bad = false;
			for (int t = 0; t < m && j < 0; t++) {
				struct cp_bitmap_info bi;
				if (!src) {
					if (!strcmp(s.name[t], sn)) {
						j = t;
						bad = s.in_use[t];
					}
				} else if (cp_image_bitmap_get(src, (unsigned)t, &bi) == 0 &&
					   !strcmp(bi.name, sn)) {
					j = t;
					bad = bi.in_use;
				}
			}
			if (j < 0) {
				bm_fail(v, name, "Dirty bitmap '%s' not found", sn);
				goto out;
			}
			if (bad) {
				bm_fail(v, name, "Bitmap '%s' is inconsistent and "
					"cannot be used", sn);
				goto out;
			}
			if (src && cp_image_size(src) != cp_image_size(img)) {
				bm_fail(v, name, "%s", "Bitmaps are of different "
					"sizes and can't be merged");
				goto out;
			}
		}
	}
	ret = 0;
out:
	free(s.name);
	free(s.in_use);
	return ret;
}

int cli_cmd_bitmap(int argc, char **argv)
{
	struct cp_open_opts opts, sopts;
	struct bm_cmd c = {0};
	enum cp_fmt sfmt = CP_FMT_AUTO;
	const char *source = NULL;
	uint64_t gran = 0;
	bool gran_seen = false;

	cp_open_opts_init(&opts);
	const struct cli_opt table[] = {
	    CLI_O_FN(0, "add", NULL, bm_opt_BM_ADD, &c, "create the bitmap "
		     "(enabled unless --disable follows)"),
	    CLI_O_FN(0, "remove", NULL, bm_opt_BM_REMOVE, &c,
		     "delete the bitmap"),
	    CLI_O_FN(0, "clear", NULL, bm_opt_BM_CLEAR, &c,
		     "clear every bit"),
	    CLI_O_FN(0, "enable", NULL, bm_opt_BM_ENABLE, &c,
		     "track writes"),
	    CLI_O_FN(0, "disable", NULL, bm_opt_BM_DISABLE, &c,
		     "stop tracking writes"),
	    CLI_O_FN(0, "merge", "SOURCE", bm_opt_BM_MERGE, &c,
		     "set the bits of bitmap SOURCE (of -b source_file, "
		     "else of this image)"),
	    CLI_O_VAL('b', NULL, "source_file", &source,
		      "image holding the --merge source bitmaps"),
	    CLI_OPT_FMT('F', "source_fmt", &sfmt, "format of source_file"),
	    CLI_O_SIZE_SEEN('g', NULL, "granularity", "granularity", &gran,
			    &gran_seen, "bytes per bit of --add (default: "
			    "cluster size within 4 KiB..64 KiB)"),
	    CLI_OPT_F(&opts.format, "image format"),
	    CLI_OPT_QEMU_END,
	};
	struct cli_parser p = {.cmd = "bitmap", .opts = table};
	int pr = cli_parse(&p, argc, argv);
	if (pr)
		return pr == CLI_PARSE_HELP ? 0 : 1;
	if (!c.n)
		return cli_error("Need at least one of --add, --remove, --clear, "
				 "--enable, --disable, or --merge");
	if (gran_seen && !c.add)
		return cli_error("granularity only supported with --add");
	bool merge = false;
	for (unsigned k = 0; k < c.n; k++)
		merge |= c.act[k].verb == BM_MERGE;
	if (source && !merge)
		return cli_error("Merge bitmap source file only supported with "
				 "--merge");
	if (sfmt != CP_FMT_AUTO && !source)
		return cli_error("--merge -F only supported with -b");
	if (p.npos != 2)
		return cli_error("Expecting filename and bitmap name");
	const char *file = p.pos[0], *name = p.pos[1];

	cp_image *img, *src = NULL;
	if (cli_open(file, &opts, &img) < 0)
		return 1;
	int ret = 1;
	if (source) {
		sopts = opts;
		sopts.format = sfmt;
		sopts.readonly = true;
		sopts.no_backing = true;
		if (cli_open(source, &sopts, &src) < 0)
			goto out;
	}
	if (cp_image_format(img) != CP_FMT_QCOW2) {
		cli_error("%s: only qcow2 images have persistent bitmaps", file);
		goto out;
	}
	if (bm_simulate(img, src, &c, name, gran))
		goto out;
	for (unsigned k = 0; k < c.n; k++) {
		int r = 0;
		struct cp_bitmap_add_opts ao;
		switch (c.act[k].verb) {
		case BM_ADD:
			cp_bitmap_add_opts_init(&ao);
			ao.granularity = (uint32_t)gran;
			r = cp_image_bitmap_add(img, name, &ao);
			break;
		case BM_REMOVE:
			r = cp_image_bitmap_remove(img, name);
			break;
		case BM_CLEAR:
			r = cp_image_bitmap_clear(img, name);
			break;
		case BM_ENABLE:
		case BM_DISABLE:
			r = cp_image_bitmap_enable(img, name,
						   c.act[k].verb == BM_ENABLE);
			break;
		case BM_MERGE:
			r = cp_image_bitmap_merge(img, name, src, c.act[k].src);
			break;
		}
		if (r < 0) {
			cli_error_image(file, r);
			goto out;
		}
	}
	ret = 0;
out:
	if (src)
		cp_image_close(src);
	if (cli_close(img) < 0)
		ret = 1;
	return ret;
}
