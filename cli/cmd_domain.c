/* cli/cmd_domain.c - `cowpool domain`: storage domains through cowpoold
 * (options from api/methods.def), and `domain inspect`, a read-only look
 * at a domain without a daemon.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spm.h"

#define V "domain"

/* The checks of the old builder, in its order and words (exit 2). */
static int dom_create_check(const struct cli_subcmd *sub,
			    const struct cli_call *k)
{
	const char *type = cli_call_val(k, "type");
	const char *path = cli_call_val(k, "path");
	const char *uuid = cli_call_val(k, "uuid");
	const char *pool = cli_call_val(k, "pool");
	const char *const *devices = cli_call_list(k, "devices");
	if (!type || (strcmp(type, "file") && strcmp(type, "block")))
		return cli_usage_error(V, sub, "--type file or --type block "
				       "is required");
	if (!cli_call_val(k, "name"))
		return cli_usage_error(V, sub, "--name is required");
	bool file = !strcmp(type, "file");
	if (file && (!path || devices[0]))
		return cli_usage_error(V, sub, "a file domain takes --path "
				       "(and no --device)");
	if (!file && (path || !devices[0]))
		return cli_usage_error(V, sub, "a block domain takes --device "
				       "(and no --path)");
	if ((uuid && cli_parse_uuid("domain UUID", uuid) < 0) ||
	    (pool && cli_parse_uuid("pool UUID", pool) < 0))
		return CLI_EXIT_USAGE;
	return 0;
}

static void print_domain_list(const cp_json *res)
{
	printf("%-36s  %-16s  %-5s  %-6s  %-7s  %10s  %10s\n", "UUID", "NAME",
	       "TYPE", "MASTER", "STATUS", "FREE", "TOTAL");
	for (size_t i = 0; i < cp_json_count(res); i++) {
		const cp_json *d = cp_json_at(res, i);
		const cp_json *st = cp_json_get(d, "stats");
		char fr[32], to[32];
		cli_size_to_str(cli_ju64(st, "free"), fr, sizeof(fr));
		cli_size_to_str(cli_ju64(st, "total"), to, sizeof(to));
		const char *status = !cli_jbool(d, "readable") ? "error"
				     : cli_jbool(d, "joined")   ? "active"
								: "ok";
		printf("%-36s  %-16s  %-5s  %-6s  %-7s  %10s  %10s\n",
		       cli_jstr(d, "uuid"), cli_jstr(d, "name"),
		       cli_jstr(d, "type"),
		       cli_jbool(d, "master") ? "yes" : "no", status, fr, to);
	}
}

/* ---- inspect: no daemon --------------------------------------------------- */

static const char *role_name(enum cp_vol_role r)
{
	return r == CP_VOL_ROLE_LEAF       ? "leaf"
	       : r == CP_VOL_ROLE_INTERNAL ? "internal"
	       : r == CP_VOL_ROLE_SHARED   ? "shared"
					   : "?";
}

static void inspect_volmeta(struct cp_jsonw *w, const struct cp_volmeta *m)
{
	cp_jsonw_obj_begin(w, NULL);
	cp_jsonw_str(w, "uuid", m->vol_uuid);
	cp_jsonw_str_or_null(w, "parent", m->parent_uuid);
	cp_jsonw_str(w, "format", m->format == CP_VOL_FORMAT_RAW ? "raw" : "cow");
	cp_jsonw_str(w, "allocation", m->allocation == CP_VOL_ALLOC_PREALLOCATED
					  ? "preallocated" : "sparse");
	cp_jsonw_str(w, "role", role_name(m->role));
	cp_jsonw_str(w, "legality",
		     m->legality == CP_VOL_ILLEGAL ? "illegal" : "legal");
	cp_jsonw_u64(w, "capacity", m->capacity);
	cp_jsonw_u64(w, "generation", m->generation);
	cp_jsonw_i64(w, "ctime", m->ctime);
	cp_jsonw_str(w, "description", m->description);
	cp_jsonw_obj_end(w);
}

static int dom_inspect(const struct cli_subcmd *sub, int argc, char **argv)
{
	const char *root = NULL, *sysdir = NULL;
	const char *devices[65] = {0};
	const struct cli_opt opts[] = {
	    CLI_VAL("path", &root),
	    CLI_LIST("lvm-device", devices),
	    CLI_VAL("lvm-system-dir", &sysdir),
	    CLI_OPT_END,
	};
	struct cli_args a;
	int r = cli_sub_parse(V, sub, argc, argv, opts, &a, 1, 1);
	if (r)
		return r < 0 ? 0 : r;
	if (!root == !devices[0])
		return cli_usage_error(V, sub, "give either --path ROOT or "
				       "--lvm-device DEV");
	const char *dom = a.pos[0];
	if (cli_parse_uuid("domain UUID", dom) < 0)
		return CLI_EXIT_USAGE;

	struct cp_lvm_opts lvm;
	struct cp_sd_loc loc;
	cp_lvm_opts_init(&lvm);
	lvm.system_dir = sysdir;
	lvm.devices = devices;
	cp_sd_loc_init(&loc);
	loc.type = root ? CP_DOMAIN_TYPE_FILE : CP_DOMAIN_TYPE_BLOCK;
	loc.root = root;
	loc.lvm = root ? NULL : &lvm;
	cp_sd *sd;
	r = cp_sd_open(&loc, dom, &sd);
	if (r < 0) {
		cli_error("domain %s: %s", dom,
			  cp_error_msg(r));
		return CLI_EXIT_FAILED;
	}
	const struct cp_domain_md *md = cp_sd_md(sd);
	struct cp_jsonw w;
	unsigned bad = 0;
	cp_jsonw_init(&w);
	cp_jsonw_obj_begin(&w, NULL);
	cp_jsonw_obj_begin(&w, "domain");
	cp_jsonw_str(&w, "uuid", md->dom_uuid);
	cp_jsonw_str(&w, "pool", md->pool_uuid);
	cp_jsonw_str(&w, "name", md->name);
	cp_jsonw_str(&w, "type", md->type == CP_DOMAIN_TYPE_BLOCK ? "block"
								 : "file");
	cp_jsonw_u64(&w, "version", md->dom_version);
	cp_jsonw_bool(&w, "master", md->master);
	cp_jsonw_u64(&w, "generation", md->generation);
	cp_jsonw_u64(&w, "chunk_size", md->chunk_size);
	cp_jsonw_u64(&w, "io_timeout", md->io_timeout);
	cp_jsonw_u64(&w, "max_volumes", md->max_volumes);
	cp_jsonw_obj_end(&w);
	if (!a.json) {
		printf("domain: %s\nname: %s\ntype: %s\npool: %s\nmaster: %s\n"
		       "version: %u\ngeneration: %" PRIu64 "\n"
		       "chunk_size: %" PRIu64 "\nio_timeout: %u\n"
		       "max_volumes: %u\n",
		       md->dom_uuid, md->name,
		       md->type == CP_DOMAIN_TYPE_BLOCK ? "block" : "file",
		       md->pool_uuid, md->master ? "yes" : "no",
		       md->dom_version, md->generation, md->chunk_size,
		       md->io_timeout, md->max_volumes);
	}

	struct cp_uuid_str *imgs = NULL;
	size_t nimg = 0;
	cp_jsonw_arr_begin(&w, "images");
	r = cp_sd_list_images(sd, &imgs, &nimg);
	if (r < 0) {
		cli_error("domain %s: cannot list images: %s", dom,
			  cp_error_msg(r));
		bad++;
	}
	for (size_t i = 0; i < nimg; i++) {
		struct cp_uuid_str *vols = NULL;
		size_t nvol = 0;
		cp_jsonw_obj_begin(&w, NULL);
		cp_jsonw_str(&w, "uuid", imgs[i].s);
		if (!a.json)
			printf("image %s\n", imgs[i].s);
		r = cp_sd_list_volumes(sd, imgs[i].s, &vols, &nvol);
		if (r < 0) {
			bad++;
			cp_jsonw_str(&w, "error", cp_error_msg(r));
			if (!a.json)
				printf("  BAD: %s\n", cp_error_msg(r));
		}
		cp_jsonw_arr_begin(&w, "volumes");
		for (size_t j = 0; j < nvol; j++) {
			struct cp_volmeta m;
			r = cp_sd_vol_md(sd, imgs[i].s, vols[j].s, &m);
			if (r < 0) {
				const char *msg = cp_error_msg(r);
				bad++;
				cp_jsonw_obj_begin(&w, NULL);
				cp_jsonw_str(&w, "uuid", vols[j].s);
				cp_jsonw_str(&w, "error", strerrorname_np(-r)
							      ? strerrorname_np(-r)
							      : "EIO");
				cp_jsonw_str(&w, "message", msg);
				cp_jsonw_obj_end(&w);
				if (!a.json)
					printf("  volume %s: BAD METADATA: %s\n",
					       vols[j].s, msg);
				continue;
			}
			inspect_volmeta(&w, &m);
			if (!a.json) {
				char cap[32];
				cli_size_to_str(m.capacity, cap, sizeof(cap));
				printf("  volume %s: %s %s %s %s, capacity %s, "
				       "parent %s, generation %" PRIu64
				       "%s%s%s\n",
				       m.vol_uuid,
				       m.format == CP_VOL_FORMAT_RAW ? "raw"
								     : "cow",
				       m.allocation == CP_VOL_ALLOC_PREALLOCATED
					   ? "preallocated" : "sparse",
				       role_name(m.role),
				       m.legality == CP_VOL_ILLEGAL ? "ILLEGAL"
								    : "legal",
				       cap, m.parent_uuid[0] ? m.parent_uuid : "-",
				       m.generation, m.description[0] ? ", \"" : "",
				       m.description, m.description[0] ? "\"" : "");
			}
		}
		cp_jsonw_arr_end(&w);
		cp_jsonw_obj_end(&w);
		free(vols);
	}
	cp_jsonw_arr_end(&w);
	cp_jsonw_u64(&w, "bad_records", bad);
	cp_jsonw_obj_end(&w);
	free(imgs);
	cp_sd_close(sd);
	if (a.json && cp_jsonw_error(&w) == 0) {
		cp_json *tree;
		if (cp_json_parse(w.buf, w.len, NULL, &tree) == 0) {
			cli_print_json(tree);
			cp_json_free(tree);
		}
	}
	cp_jsonw_free(&w);
	if (bad) {
		cli_error("domain %s: %u bad metadata record(s)", dom, bad);
		return CLI_EXIT_FAILED;
	}
	return 0;
}

static const struct cli_subcmd dom_subs[] = {
    {.name = "create", .method = "domain.create", .check = dom_create_check,
     .usage = "create --type file --path DIR --name NAME [--uuid U] "
	      "[--pool P] [--master] [--io-timeout N] [--chunk-size S]\n"
	      "  cowpool [--socket PATH] domain create --type block --device "
	      "DEV [--device DEV...] --name NAME [--max-volumes N] "
	      "[--extent-size S] [--uuid U] [--pool P] [--master] "
	      "[--io-timeout N] [--chunk-size S]"},
    {.name = "list", .method = "domain.list", .print = print_domain_list},
    {.name = "info", .method = "domain.info"},
    {.name = "extend", .method = "domain.extend"},
    {.name = "remove", .method = "domain.remove"},
    {.name = "inspect", .fn = dom_inspect,
     .usage = "inspect (--path ROOT | --lvm-device DEV [--lvm-device DEV...] "
	      "[--lvm-system-dir DIR]) DOMAIN [--output=json]",
     .help = "Reads the domain directly (no cowpoold, no leases, nothing "
	     "written)\nand lists its record, images and volume records.  "
	     "Exit status 1 if\nany record is bad.\n"},
    {.name = NULL},
};

int cli_cmd_domain(int argc, char **argv)
{
	return cli_verb_dispatch(V, dom_subs, argc, argv);
}
