/* daemon/records.c - the library's records as JSON objects (docs/api.md,
 * "Records"), and errno names.  Leaf of the daemon: it calls nothing of
 * the other daemon files.
 */
#include <stdio.h>
#include <string.h>

#include "cowpoold.h"

const char *dmn_errno_name(int e)
{
	static _Thread_local char buf[16];
	const char *n = strerrorname_np(e);
	if (n)
		return n;
	snprintf(buf, sizeof(buf), "E%d", e);
	return buf;
}

const char *dmn_domain_type_name(enum cp_domain_type t)
{
	return t == CP_DOMAIN_TYPE_BLOCK ? "block" : "file";
}

static void md_members(struct cp_jsonw *w, const struct cp_domain_md *md)
{
	cp_jsonw_str(w, "uuid", md->dom_uuid);
	cp_jsonw_str(w, "pool", md->pool_uuid);
	cp_jsonw_str(w, "name", md->name);
	cp_jsonw_str(w, "type", dmn_domain_type_name(md->type));
	cp_jsonw_u64(w, "version", md->dom_version);
	cp_jsonw_bool(w, "master", md->master);
	cp_jsonw_u64(w, "generation", md->generation);
	cp_jsonw_u64(w, "chunk_size", md->chunk_size);
	cp_jsonw_u64(w, "io_timeout", md->io_timeout);
	cp_jsonw_u64(w, "max_volumes", md->max_volumes);
}

void dmn_json_domain_md(struct cp_jsonw *w, const char *key,
			const struct cp_domain_md *md)
{
	cp_jsonw_obj_begin(w, key);
	md_members(w, md);
	cp_jsonw_obj_end(w);
}

void dmn_json_domain_status(struct cp_jsonw *w,
			    const struct cp_domain_status *s)
{
	cp_jsonw_obj_begin(w, NULL);
	md_members(w, &s->md);
	cp_jsonw_obj_begin(w, "stats");
	cp_jsonw_u64(w, "total", s->stats.total);
	cp_jsonw_u64(w, "free", s->stats.free);
	cp_jsonw_obj_end(w);
	cp_jsonw_bool(w, "readable", s->readable);
	cp_jsonw_bool(w, "joined", s->joined);
	cp_jsonw_str(w, "renewal", cp_host_state_name(s->renewal));
	if (s->last_error)
		cp_jsonw_str(w, "last_error", dmn_errno_name(-s->last_error));
	else
		cp_jsonw_null(w, "last_error");
	cp_jsonw_str_or_null(w, "message", s->message);
	cp_jsonw_i64(w, "checked", s->checked);
	cp_jsonw_obj_end(w);
}
void dmn_json_volmeta(struct cp_jsonw *w, const char *key,
		      const struct cp_volmeta *m, const struct cp_vol_size *sz)
{
	static const char *const roles[] = {"?", "leaf", "internal", "shared"};
	cp_jsonw_obj_begin(w, key);
	cp_jsonw_str(w, "uuid", m->vol_uuid);
	cp_jsonw_str(w, "image", m->img_uuid);
	cp_jsonw_str(w, "domain", m->dom_uuid);
	cp_jsonw_str_or_null(w, "parent", m->parent_uuid);
	cp_jsonw_str(w, "format",
		     m->format == CP_VOL_FORMAT_RAW ? "raw" : "cow");
	cp_jsonw_str(w, "allocation",
		     m->allocation == CP_VOL_ALLOC_PREALLOCATED
			 ? "preallocated" : "sparse");
	cp_jsonw_str(w, "role",
		     (unsigned)m->role < CP_ARRAY_SIZE(roles) ? roles[m->role]
							      : "?");
	cp_jsonw_str(w, "legality",
		     m->legality == CP_VOL_ILLEGAL ? "illegal" : "legal");
	cp_jsonw_u64(w, "capacity", m->capacity);
	cp_jsonw_u64(w, "generation", m->generation);
	cp_jsonw_i64(w, "ctime", m->ctime);
	cp_jsonw_str(w, "description", m->description);
	if (sz) {
		cp_jsonw_u64(w, "apparent_size", sz->apparent);
		cp_jsonw_u64(w, "allocated_size", sz->allocated);
	}
	cp_jsonw_obj_end(w);
}


void dmn_json_spm_status(struct cp_jsonw *w, const struct cp_spm_status *s)
{
	cp_jsonw_obj_begin(w, NULL);
	cp_jsonw_str(w, "role", cp_spm_role_name(s->role));
	cp_jsonw_u64(w, "host_id", s->host_id);
	cp_jsonw_u64(w, "lver", s->lver);
	cp_jsonw_bool(w, "self", s->self);
	cp_jsonw_obj_end(w);
}

void dmn_json_journal_task(struct cp_jsonw *w, const struct cp_task *t)
{
	cp_jsonw_str(w, "type", cp_task_type_name(t->type));
	cp_jsonw_str(w, "state", cp_task_state_name(t->state));
	cp_jsonw_u64(w, "step", t->step);
	cp_jsonw_u64(w, "seq", t->seq);
	cp_jsonw_u64(w, "spm_lver", t->spm_lver);
	cp_jsonw_i64(w, "ctime", t->ctime);
	cp_jsonw_i64(w, "mtime", t->mtime);
	cp_jsonw_str_or_null(w, "domain", t->dom_uuid);
	cp_jsonw_str_or_null(w, "image", t->img_uuid);
	cp_jsonw_str_or_null(w, "volume", t->vol_uuid);
	cp_jsonw_str_or_null(w, "parent", t->parent_uuid);
	cp_jsonw_str_or_null(w, "source_image", t->src_img_uuid);
	cp_jsonw_str_or_null(w, "source_volume", t->src_vol_uuid);
	cp_jsonw_str_or_null(w, "target_domain", t->dst_dom_uuid);
}
