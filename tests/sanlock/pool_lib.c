/* Helpers shared by pool_test.c and harden_test.c (see pool_lib.h). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "pool_lib.h"

void fill(cp_pool *p, const char *dom, const char *img, const char *vol,
	  uint64_t off, uint64_t len, int seed)
{
	struct cp_sd_chain c;
	cp_sd *sd;
	char *buf = malloc(len);

	for (uint64_t i = 0; i < len; i++)
		buf[i] = (char)(seed + (int)((off + i) / 4096));
	OK(cp_pool_domain(p, dom, &sd));
	OK(cp_sd_open_image(sd, img, vol, true, &c));
	OK(cp_image_pwrite(c.img, buf, len, off));
	OK(cp_sd_close_image(&c));
	free(buf);
}

char *content(cp_pool *p, const char *dom, const char *img, const char *vol,
	      uint64_t size)
{
	struct cp_sd_chain c;
	cp_sd *sd;
	char *buf = malloc(size);

	OK(cp_pool_domain(p, dom, &sd));
	OK(cp_sd_open_image(sd, img, vol, false, &c));
	CHECK(cp_image_size(c.img) == size, "size %" PRIu64, cp_image_size(c.img));
	OK(cp_image_pread(c.img, buf, size, 0));
	OK(cp_sd_close_image(&c));
	return buf;
}

void create_domain(cp_pool *p, const char *dir, bool master,
		   const char *lvm_dev, char *uuid_out)
{
	struct cp_sd_create_opts o;
	struct cp_domain_md md;
	const char *devs[] = {lvm_dev, NULL};

	cp_sd_create_opts_init(&o);
	o.loc.type = CP_DOMAIN_TYPE_FILE;
	o.loc.root = dir;
	if (master && lvm_dev) {
		/* the master on the block domain, the second domain a file one */
		o.loc.type = CP_DOMAIN_TYPE_BLOCK;
		o.loc.root = NULL;
		o.devices = devs;
		o.extent_size = 4 * MIB;
		o.max_volumes = 64;
	}
	o.pool_uuid = POOL;
	o.name = master ? "master" : "data2";
	o.master = master;
	o.io_timeout = 1;
	o.chunk_size = 64 * MIB;
	OK(cp_pool_domain_create(p, &o, &md));
	CHECK(md.master == master, "master flag");
	strcpy(uuid_out, md.dom_uuid);
}

enum cp_task_state tasks_settled(cp_pool *p, const char *last, bool clear)
{
	enum cp_task_state st = 0;
	struct cp_task *t;
	size_t n;

	OK(cp_task_list(p, &t, &n));
	for (size_t i = 0; i < n; i++) {
		CHECK(t[i].state != CP_TASK_RUNNING &&
		      t[i].state != CP_TASK_RECOVERING,
		      "task %s (%s) still %s: %s", t[i].task_uuid,
		      cp_task_type_name(t[i].type), cp_task_state_name(t[i].state),
		      t[i].message);
		if (last && !strcmp(t[i].task_uuid, last))
			st = t[i].state;
		if (clear)
			OK(cp_task_clear(p, t[i].task_uuid));
	}
	free(t);
	return st;
}

void parse_opts(int argc, char **argv, int first, const struct pool_opt *o,
		size_t n)
{
	for (int i = first; i + 1 < argc; i += 2)
		for (size_t k = 0; k < n; k++)
			if (!strcmp(argv[i], o[k].name))
				*o[k].val = argv[i + 1];
}

int run_scenario(const struct pool_scenario *s, size_t n, const char *name)
{
	for (size_t k = 0; k < n; k++) {
		if (!strcmp(name, s[k].name)) {
			s[k].run();
			return 0;
		}
	}
	fprintf(stderr, "unknown scenario '%s'\n", name);
	return 2;
}
