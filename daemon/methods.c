/* daemon/methods.c - the JSON-RPC methods: calls into spm.h, results as
 * JSON (records.c), params checked with params.c.  docs/api.md is the
 * reference for every method.
 *
 * Handlers run in the connection's thread.  They return 0 with one value
 * written to c->res, DMN_RPC_ERROR with c->rpc_* set (bad params), or
 * -errno from the library with its message in cp_last_error().
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cowpoold.h"

/* A handler's params spec, checked by dmn_params_parse(). */
#define PARAMS(c, ...)                                                         \
	({                                                                     \
		const struct dmn_param spec_[] = {__VA_ARGS__};                \
		dmn_params_parse(c, spec_, CP_ARRAY_SIZE(spec_));                  \
	})
#define NO_PARAMS(c) dmn_params_parse(c, NULL, 0)

/* Shorthands for spec entries. */
#define REQ(n, t, o) {.name = (n), .type = (t), .required = true, .out = (o)}
#define OPT(n, t, o) {.name = (n), .type = (t), .out = (o)}
#define OPTG(n, t, o, g) {.name = (n), .type = (t), .out = (o), .given = (g)}
#define ENUM(n, ch, o) {.name = (n), .type = P_ENUM, .out = (o), .choices = (ch)}


static const char *const fmt_names[] = {"cow", "raw", NULL};
static const char *const alloc_names[] = {"sparse", "preallocated", NULL};

static enum cp_vol_format fmt_of(int i)
{
	return i == 1 ? CP_VOL_FORMAT_RAW : CP_VOL_FORMAT_COW;
}

static enum cp_vol_alloc alloc_of(int i)
{
	return i == 1 ? CP_VOL_ALLOC_PREALLOCATED : CP_VOL_ALLOC_SPARSE;
}

/* ---- helpers -------------------------------------------------------------- */

static int get_sd(struct dmn_call *c, const char *dom, cp_sd **sd)
{
	return cp_pool_domain(c->d->pool, dom, sd);
}

/* A volume's record and sizes as one object. */
static int write_volume(struct dmn_call *c, struct cp_jsonw *w, cp_sd *sd,
			const char *img, const char *vol)
{
	struct cp_volmeta m;
	struct cp_vol_size sz;
	int r = cp_sd_vol_md(sd, img, vol, &m);
	if (r < 0)
		return r;
	r = cp_sd_vol_size(sd, img, vol, &sz);
	if (r < 0)
		return r;
	dmn_json_volmeta(w, NULL, &m, &sz);
	return 0;
}

/* cp_spm_check() with the reason named: -EPERM says who the SPM is. */
static int spm_check(struct dmn_call *c)
{
	int r = cp_spm_check(c->d->pool);
	if (r != -EPERM || cp_last_error()[0])
		return r;
	struct cp_spm_status s;
	uint64_t host = c->d->cfg.host_id;
	if (!c->d->cfg.sanlock)
		return cp_error(-EPERM, "host %" PRIu64 " is not the SPM "
				"(cowpoold runs with sanlock = no: no SPM role)",
				host);
	if (cp_spm_status(c->d->pool, &s) == 0 && s.host_id && !s.self)
		return cp_error(-EPERM, "host %" PRIu64 " is not the SPM (SPM "
				"is host %" PRIu64 ", lease version %" PRIu64
				")", host, s.host_id, s.lver);
	return cp_error(-EPERM, "host %" PRIu64 " is not the SPM (no host "
			"is; run spm.start)", host);
}

/* ---- host, domains, SPM --------------------------------------------------- */

static int m_host_info(struct dmn_call *c)
{
	int r = NO_PARAMS(c);
	if (r)
		return r;
	struct dmn *d = c->d;
	struct cp_jsonw *w = c->res;
	const char *pool = d->cfg.pool;
	cp_sd *master;
	if (!pool && cp_pool_master(d->pool, &master) == 0)
		pool = cp_sd_md(master)->pool_uuid;
	cp_clear_error();
	cp_jsonw_obj_begin(w, NULL);
	cp_jsonw_u64(w, "host_id", d->cfg.host_id);
	cp_jsonw_str_or_null(w, "pool_uuid", pool);
	cp_jsonw_str(w, "version", CP_VERSION);
	cp_jsonw_str(w, "socket", d->cfg.socket);
	cp_jsonw_bool(w, "sanlock", d->cfg.sanlock);
	pthread_mutex_lock(&d->lock);
	static const char *const js[] = {"off", "joining", "joined",
					 "failed"};
	cp_jsonw_str(w, "join", js[d->join_state]);
	if (d->join_state == DMN_JOIN_FAILED)
		cp_jsonw_str(w, "join_error", d->join_message);
	pthread_mutex_unlock(&d->lock);
	cp_jsonw_obj_end(w);
	return 0;
}

static int m_domain_create(struct dmn_call *c)
{
	static const char *const types[] = {"file", "block", NULL};
	int type = -1;
	const char *path = NULL, *name = NULL, **devices = NULL;
	char uuid[DMN_UUID_BUF] = "", pool[DMN_UUID_BUF] = "";
	bool master = false;
	uint64_t io_timeout = 0, chunk = 0, maxvol = 0, extent = 0;
	int r = PARAMS(c, {.name = "type", .type = P_ENUM, .required = true,
			   .out = &type, .choices = types},
		       OPT("path", P_STR, &path), OPT("devices", P_STRV, &devices),
		       REQ("name", P_STR, &name), OPT("uuid", P_UUID, uuid),
		       OPT("pool", P_UUID, pool), OPT("master", P_BOOL, &master),
		       {.name = "io_timeout", .type = P_U64, .out = &io_timeout,
			.max = 255},
		       OPT("chunk_size", P_SIZE, &chunk),
		       {.name = "max_volumes", .type = P_U64, .out = &maxvol,
			.max = UINT32_MAX},
		       OPT("extent_size", P_SIZE, &extent));
	if (r)
		goto out;
	if (type == 0 && !path) {
		r = dmn_call_error(c, DMN_EINVALID_PARAMS, "path",
				   "invalid params: 'path' is missing (a file "
				   "domain needs the directory to create it "
				   "in)");
		goto out;
	}
	if (type == 1 && (!devices || !devices[0])) {
		r = dmn_call_error(c, DMN_EINVALID_PARAMS, "devices",
				   "invalid params: 'devices' is missing or "
				   "empty (a block domain needs devices)");
		goto out;
	}
	if (type == 0 && devices) {
		r = dmn_call_error(c, DMN_EINVALID_PARAMS, "devices",
				   "invalid params: 'devices' is for block "
				   "domains only");
		goto out;
	}
	if (type == 1 && path) {
		r = dmn_call_error(c, DMN_EINVALID_PARAMS, "path",
				   "invalid params: 'path' is for file "
				   "domains only");
		goto out;
	}
	struct cp_sd_create_opts o;
	struct cp_lvm_opts lvm;
	cp_sd_create_opts_init(&o);
	cp_lvm_opts_init(&lvm);
	lvm.system_dir = c->d->cfg.lvm_system_dir;
	lvm.devices = c->d->cfg.lvm_devices[0]
			  ? (const char *const *)c->d->cfg.lvm_devices
			  : NULL;
	o.loc.type = type == 1 ? CP_DOMAIN_TYPE_BLOCK : CP_DOMAIN_TYPE_FILE;
	o.loc.root = path;
	o.loc.lvm = type == 1 ? &lvm : NULL;
	o.devices = devices;
	o.dom_uuid = uuid[0] ? uuid : NULL;
	o.pool_uuid = pool[0] ? pool : c->d->cfg.pool;
	cp_sd *cur_master;
	if (!o.pool_uuid && master &&
	    cp_pool_master(c->d->pool, &cur_master) < 0) {
		/* The first master domain starts a new pool. */
		if ((r = cp_uuid_generate(pool)) < 0)
			goto out;
		o.pool_uuid = pool;
	}
	cp_clear_error();
	o.name = name;
	o.master = master;
	if (io_timeout)
		o.io_timeout = (uint32_t)io_timeout;
	if (chunk)
		o.chunk_size = chunk;
	if (maxvol)
		o.max_volumes = (uint32_t)maxvol;
	if (extent)
		o.extent_size = extent;
	struct cp_domain_md md;
	r = cp_pool_domain_create(c->d->pool, &o, &md);
	if (r < 0)
		goto out;
	dmn_info("domain %s (%s) created: %s %s", md.dom_uuid, md.name,
		 dmn_domain_type_name(md.type), type == 1 ? devices[0] : path);
	dmn_json_domain_md(c->res, NULL, &md);
	r = 0;
out:
	free(devices);
	return r;
}

static int m_domain_list(struct dmn_call *c)
{
	int r = NO_PARAMS(c);
	if (r)
		return r;
	struct cp_domain_status *st;
	size_t n;
	r = cp_pool_domains(c->d->pool, &st, &n);
	if (r < 0)
		return r;
	cp_jsonw_arr_begin(c->res, NULL);
	for (size_t i = 0; i < n; i++)
		dmn_json_domain_status(c->res, &st[i]);
	cp_jsonw_arr_end(c->res);
	free(st);
	return 0;
}

static int m_domain_info(struct dmn_call *c)
{
	char dom[DMN_UUID_BUF];
	int r = PARAMS(c, REQ("domain", P_UUID, dom));
	if (r)
		return r;
	struct cp_domain_status *st;
	size_t n;
	r = cp_pool_domains(c->d->pool, &st, &n);
	if (r < 0)
		return r;
	r = cp_error(-ENOENT, "domain %s: not found in the pool of host "
		     "%" PRIu64, dom, c->d->cfg.host_id);
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(st[i].md.dom_uuid, dom)) {
			dmn_json_domain_status(c->res, &st[i]);
			cp_clear_error();
			r = 0;
			break;
		}
	}
	free(st);
	return r;
}

static int m_domain_extend(struct dmn_call *c)
{
	char dom[DMN_UUID_BUF];
	const char *device;
	int r = PARAMS(c, REQ("domain", P_UUID, dom),
		       REQ("device", P_STR, &device));
	if (r)
		return r;
	cp_sd *sd;
	if ((r = spm_check(c)) < 0 || (r = get_sd(c, dom, &sd)) < 0)
		return r;
	r = cp_sd_extend(sd, device);
	if (r < 0)
		return r;
	struct cp_sd_stats st;
	r = cp_sd_stats(sd, &st);
	if (r < 0)
		return r;
	dmn_info("domain %s extended with %s", dom, device);
	cp_jsonw_obj_begin(c->res, NULL);
	cp_jsonw_u64(c->res, "total", st.total);
	cp_jsonw_u64(c->res, "free", st.free);
	cp_jsonw_obj_end(c->res);
	return 0;
}

static int m_spm_status(struct dmn_call *c)
{
	int r = NO_PARAMS(c);
	if (r)
		return r;
	struct cp_spm_status s;
	r = cp_spm_status(c->d->pool, &s);
	if (r < 0)
		return r;
	dmn_json_spm_status(c->res, &s);
	return 0;
}

static int m_spm_start(struct dmn_call *c)
{
	int r = NO_PARAMS(c);
	if (r)
		return r;
	dmn_info("spm start requested");
	r = cp_spm_start(c->d->pool);
	if (r < 0) {
		dmn_warn("spm start failed: %s", cp_last_error());
		return r;
	}
	struct cp_spm_status s;
	r = cp_spm_status(c->d->pool, &s);
	if (r < 0)
		return r;
	dmn_info("this host is the SPM (lease version %" PRIu64 ")", s.lver);
	dmn_monitor_kick(c->d);
	dmn_json_spm_status(c->res, &s);
	return 0;
}

static int m_spm_stop(struct dmn_call *c)
{
	bool force = false;
	int r = PARAMS(c, OPT("force", P_BOOL, &force));
	if (r)
		return r;
	r = cp_spm_stop(c->d->pool, force);
	if (r < 0)
		return r;
	dmn_info("spm stopped%s", force ? " (forced)" : "");
	struct cp_spm_status s;
	r = cp_spm_status(c->d->pool, &s);
	if (r < 0)
		return r;
	dmn_json_spm_status(c->res, &s);
	return 0;
}

/* ---- images and volumes (reads and short calls) --------------------------- */

static int m_image_list(struct dmn_call *c)
{
	char dom[DMN_UUID_BUF];
	int r = PARAMS(c, REQ("domain", P_UUID, dom));
	if (r)
		return r;
	cp_sd *sd;
	struct cp_uuid_str *u;
	size_t n;
	if ((r = get_sd(c, dom, &sd)) < 0 ||
	    (r = cp_sd_list_images(sd, &u, &n)) < 0)
		return r;
	cp_jsonw_arr_begin(c->res, NULL);
	for (size_t i = 0; i < n; i++)
		cp_jsonw_str(c->res, NULL, u[i].s);
	cp_jsonw_arr_end(c->res);
	free(u);
	return 0;
}

/* The image's volumes in chain order, base first; volumes whose record
 * cannot be read, or that are not on the chain, come last. */
static int image_chain(cp_sd *sd, const char *img, struct cp_volmeta **out,
		       size_t *nout, struct cp_uuid_str **bad, size_t *nbad,
		       int **bad_err)
{
	struct cp_uuid_str *u;
	size_t n;
	int r = cp_sd_list_volumes(sd, img, &u, &n);
	if (r < 0)
		return r;
	if (!n) {
		free(u);
		return cp_error(-ENOENT, "image %s: not found in domain %s",
				img, cp_sd_md(sd)->dom_uuid);
	}
	struct cp_volmeta *m = calloc(n, sizeof(*m));
	struct cp_volmeta *sorted = calloc(n, sizeof(*sorted));
	bool *used = calloc(n, sizeof(*used));
	*bad = calloc(n, sizeof(**bad));
	*bad_err = calloc(n, sizeof(int));
	if (!m || !sorted || !used || !*bad || !*bad_err) {
		free(m), free(sorted), free(used), free(*bad), free(*bad_err);
		free(u);
		return -ENOMEM;
	}
	size_t ok = 0;
	*nbad = 0;
	for (size_t i = 0; i < n; i++) {
		r = cp_sd_vol_md(sd, img, u[i].s, &m[ok]);
		if (r < 0) {
			(*bad)[*nbad] = u[i];
			(*bad_err)[(*nbad)++] = r;
		} else {
			ok++;
		}
	}
	free(u);
	/* base: a volume whose parent is not in this image */
	size_t k = 0;
	const char *prev = NULL;
	for (;;) {
		size_t next = ok;
		for (size_t i = 0; i < ok; i++) {
			if (used[i])
				continue;
			bool base = true;
			if (!prev) {
				for (size_t j = 0; j < ok; j++)
					base &= strcmp(m[i].parent_uuid,
						       m[j].vol_uuid) != 0;
			} else {
				base = !strcmp(m[i].parent_uuid, prev);
			}
			if (base) {
				next = i;
				break;
			}
		}
		if (next == ok)
			break;
		used[next] = true;
		sorted[k++] = m[next];
		prev = sorted[k - 1].vol_uuid;
	}
	for (size_t i = 0; i < ok; i++)
		if (!used[i])
			sorted[k++] = m[i];
	free(m);
	free(used);
	*out = sorted;
	*nout = ok;
	cp_clear_error();
	return 0;
}

static int m_image_info(struct dmn_call *c)
{
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF];
	int r = PARAMS(c, REQ("domain", P_UUID, dom),
		       REQ("image", P_UUID, img));
	if (r)
		return r;
	cp_sd *sd;
	if ((r = get_sd(c, dom, &sd)) < 0)
		return r;
	struct cp_volmeta *m = NULL;
	struct cp_uuid_str *bad = NULL;
	int *bad_err = NULL;
	size_t n = 0, nbad = 0;
	r = image_chain(sd, img, &m, &n, &bad, &nbad, &bad_err);
	if (r < 0)
		return r;
	struct cp_jsonw *w = c->res;
	cp_jsonw_obj_begin(w, NULL);
	cp_jsonw_str(w, "domain", dom);
	cp_jsonw_str(w, "image", img);
	const char *leaf = NULL;
	uint64_t capacity = 0;
	cp_jsonw_arr_begin(w, "volumes");
	for (size_t i = 0; i < n; i++) {
		struct cp_vol_size sz;
		if (m[i].role == CP_VOL_ROLE_LEAF) {
			leaf = m[i].vol_uuid;
			capacity = m[i].capacity;
		}
		if (cp_sd_vol_size(sd, img, m[i].vol_uuid, &sz) < 0) {
			dmn_json_volmeta(w, NULL, &m[i], NULL);
			cp_clear_error();
		} else {
			dmn_json_volmeta(w, NULL, &m[i], &sz);
		}
	}
	cp_jsonw_arr_end(w);
	cp_jsonw_str_or_null(w, "leaf", leaf);
	cp_jsonw_u64(w, "capacity", capacity);
	cp_jsonw_arr_begin(w, "bad_volumes");
	for (size_t i = 0; i < nbad; i++) {
		cp_jsonw_obj_begin(w, NULL);
		cp_jsonw_str(w, "uuid", bad[i].s);
		cp_jsonw_str(w, "errno", dmn_errno_name(-bad_err[i]));
		cp_jsonw_obj_end(w);
	}
	cp_jsonw_arr_end(w);
	cp_jsonw_obj_end(w);
	free(m);
	free(bad);
	free(bad_err);
	return 0;
}

static int m_volume_info(struct dmn_call *c)
{
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], vol[DMN_UUID_BUF];
	int r = PARAMS(c, REQ("domain", P_UUID, dom), REQ("image", P_UUID, img),
		       REQ("volume", P_UUID, vol));
	if (r)
		return r;
	cp_sd *sd;
	if ((r = get_sd(c, dom, &sd)) < 0)
		return r;
	return write_volume(c, c->res, sd, img, vol);
}

static int m_volume_list(struct dmn_call *c)
{
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF];
	int r = PARAMS(c, REQ("domain", P_UUID, dom),
		       REQ("image", P_UUID, img));
	if (r)
		return r;
	cp_sd *sd;
	struct cp_uuid_str *u;
	size_t n;
	if ((r = get_sd(c, dom, &sd)) < 0 ||
	    (r = cp_sd_list_volumes(sd, img, &u, &n)) < 0)
		return r;
	cp_jsonw_arr_begin(c->res, NULL);
	for (size_t i = 0; i < n; i++)
		cp_jsonw_str(c->res, NULL, u[i].s);
	cp_jsonw_arr_end(c->res);
	free(u);
	return 0;
}

static int m_volume_extend(struct dmn_call *c)
{
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], vol[DMN_UUID_BUF];
	uint64_t size = 0, new_size = 0;
	int r = PARAMS(c, REQ("domain", P_UUID, dom), REQ("image", P_UUID, img),
		       REQ("volume", P_UUID, vol), REQ("size", P_SIZE, &size));
	if (r)
		return r;
	r = cp_vol_extend(c->d->pool, dom, img, vol, size, &new_size);
	if (r < 0)
		return r;
	cp_jsonw_obj_begin(c->res, NULL);
	cp_jsonw_u64(c->res, "size", new_size);
	cp_jsonw_obj_end(c->res);
	return 0;
}

static int m_volume_prepare(struct dmn_call *c)
{
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], vol[DMN_UUID_BUF];
	bool rw = false;
	int r = PARAMS(c, REQ("domain", P_UUID, dom), REQ("image", P_UUID, img),
		       REQ("volume", P_UUID, vol), OPT("rw", P_BOOL, &rw));
	if (r)
		return r;
	r = cp_vol_prepare(c->d->pool, dom, img, vol, rw);
	if (r < 0)
		return r;
	dmn_info("volume %s/%s/%s prepared %s", dom, img, vol,
		 rw ? "read-write" : "read-only");
	if (rw)
		dmn_monitor_kick(c->d);
	cp_jsonw_obj_begin(c->res, NULL);
	cp_jsonw_bool(c->res, "rw", rw);
	cp_sd *sd;
	char path[4096];
	if (get_sd(c, dom, &sd) == 0 &&
	    cp_sd_vol_path(sd, img, vol, path, sizeof(path)) == 0)
		cp_jsonw_str(c->res, "path", path);
	else
		cp_jsonw_null(c->res, "path");
	cp_clear_error();
	cp_jsonw_obj_end(c->res);
	return 0;
}

static int m_volume_teardown(struct dmn_call *c)
{
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], vol[DMN_UUID_BUF];
	int r = PARAMS(c, REQ("domain", P_UUID, dom), REQ("image", P_UUID, img),
		       REQ("volume", P_UUID, vol));
	if (r)
		return r;
	r = cp_vol_teardown(c->d->pool, dom, img, vol);
	if (r < 0)
		return r;
	dmn_info("volume %s/%s/%s torn down", dom, img, vol);
	cp_jsonw_obj_begin(c->res, NULL);
	cp_jsonw_obj_end(c->res);
	return 0;
}

static int m_volume_set_description(struct dmn_call *c)
{
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], vol[DMN_UUID_BUF];
	uint64_t gen = 0;
	const char *desc;
	int r = PARAMS(c, REQ("domain", P_UUID, dom), REQ("image", P_UUID, img),
		       REQ("volume", P_UUID, vol),
		       REQ("generation", P_U64, &gen),
		       REQ("description", P_STR, &desc));
	if (r)
		return r;
	if (strlen(desc) > CP_VOLMETA_DESC_MAX)
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "description",
				      "invalid params: 'description' is longer "
				      "than %d bytes", CP_VOLMETA_DESC_MAX);
	r = cp_vol_set_description(c->d->pool, dom, img, vol, gen, desc);
	if (r < 0)
		return r;
	cp_sd *sd;
	if ((r = get_sd(c, dom, &sd)) < 0)
		return r;
	return write_volume(c, c->res, sd, img, vol);
}

/* ---- structural calls: tasks ---------------------------------------------- */

static int copy_desc(struct dmn_call *c, struct dmn_job *job,
		     const char *desc)
{
	if (!desc)
		return 0;
	if (strlen(desc) > CP_VOLMETA_DESC_MAX)
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "description",
				      "invalid params: 'description' is longer "
				      "than %d bytes", CP_VOLMETA_DESC_MAX);
	job->has_desc = true;
	snprintf(job->desc, sizeof(job->desc), "%s", desc);
	return 0;
}

/* Check the SPM role, start the job as a task and answer {"task": uuid,
 * ...the job's new UUIDs}. */
static int start_job(struct dmn_call *c, struct dmn_job *job)
{
	char task[DMN_UUID_BUF];
	cp_clear_error();
	int r = spm_check(c);
	if (r < 0)
		return r;
	if ((r = cp_uuid_generate(task)) < 0)
		return r;
	job->method = c->method;
	r = dmn_task_start(c->d, task, job);
	if (r < 0)
		return r;
	struct cp_jsonw *w = c->res;
	cp_jsonw_obj_begin(w, NULL);
	cp_jsonw_str(w, "task", task);
	cp_jsonw_str(w, "domain", job->dom);
	switch (job->type) {
	case DMN_JOB_VOL_CREATE:
		cp_jsonw_str(w, "image", job->img);
		cp_jsonw_str(w, "volume", job->vol);
		cp_jsonw_str_or_null(w, "parent", job->parent);
		break;
	case DMN_JOB_VOL_DELETE:
	case DMN_JOB_VOL_MERGE:
		cp_jsonw_str(w, "image", job->img);
		cp_jsonw_str(w, "volume", job->vol);
		break;
	case DMN_JOB_IMG_DELETE:
		cp_jsonw_str(w, "image", job->img);
		break;
	case DMN_JOB_IMG_COPY:
		cp_jsonw_str(w, "image", job->img);
		cp_jsonw_str(w, "target_domain", job->dst_dom);
		break;
	case DMN_JOB_TEMPLATE_CREATE:
		cp_jsonw_str(w, "image", job->img);
		cp_jsonw_str_or_null(w, "volume", job->vol);
		cp_jsonw_str(w, "template_image", job->tmpl_img);
		cp_jsonw_str(w, "template_volume", job->tmpl_vol);
		break;
	case DMN_JOB_TEMPLATE_CLONE:
		cp_jsonw_str(w, "template_image", job->tmpl_img);
		cp_jsonw_str(w, "template_volume", job->tmpl_vol);
		cp_jsonw_str(w, "image", job->img);
		cp_jsonw_str(w, "volume", job->vol);
		break;
	}
	cp_jsonw_obj_end(w);
	dmn_info("task %s started: %s", task, c->method);
	return 0;
}

static int gen_if_empty(char *uuid)
{
	return uuid[0] ? 0 : cp_uuid_generate(uuid);
}

static int m_volume_create(struct dmn_call *c)
{
	struct dmn_job job = {.type = DMN_JOB_VOL_CREATE};
	int fmt = 0, alloc = 0;
	const char *desc = NULL;
	bool cap_given = false;
	int r = PARAMS(c, REQ("domain", P_UUID, job.dom),
		       OPT("image", P_UUID, job.img),
		       OPT("volume", P_UUID, job.vol),
		       OPT("parent", P_UUID, job.parent),
		       OPT("parent_image", P_UUID, job.parent_img),
		       ENUM("format", fmt_names, &fmt),
		       ENUM("allocation", alloc_names, &alloc),
		       OPTG("capacity", P_SIZE, &job.capacity, &cap_given),
		       OPT("initial_size", P_SIZE, &job.initial_size),
		       OPT("description", P_STR, &desc));
	if (r || (r = copy_desc(c, &job, desc)))
		return r;
	if (!cap_given && !job.parent[0])
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "capacity",
				      "invalid params: 'capacity' is missing "
				      "(only a snapshot, with 'parent', may "
				      "leave it out)");
	if (job.parent_img[0] && !job.parent[0])
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "parent_image",
				      "invalid params: 'parent_image' needs "
				      "'parent'");
	if (job.parent[0] && !job.img[0] && !job.parent_img[0])
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "image",
				      "invalid params: 'image' is missing (a "
				      "snapshot names the image of its "
				      "parent)");
	job.format = fmt_of(fmt);
	job.allocation = alloc_of(alloc);
	if ((r = gen_if_empty(job.img)) < 0 || (r = gen_if_empty(job.vol)) < 0)
		return r;
	return start_job(c, &job);
}

static int vol_job(struct dmn_call *c, enum dmn_job_type type)
{
	struct dmn_job job = {.type = type};
	int r = PARAMS(c, REQ("domain", P_UUID, job.dom),
		       REQ("image", P_UUID, job.img),
		       REQ("volume", P_UUID, job.vol));
	if (r)
		return r;
	return start_job(c, &job);
}

static int m_volume_delete(struct dmn_call *c)
{
	return vol_job(c, DMN_JOB_VOL_DELETE);
}

static int m_volume_merge(struct dmn_call *c)
{
	return vol_job(c, DMN_JOB_VOL_MERGE);
}

static int m_image_delete(struct dmn_call *c)
{
	struct dmn_job job = {.type = DMN_JOB_IMG_DELETE};
	int r = PARAMS(c, REQ("domain", P_UUID, job.dom),
		       REQ("image", P_UUID, job.img));
	if (r)
		return r;
	return start_job(c, &job);
}

static int m_image_copy(struct dmn_call *c)
{
	struct dmn_job job = {.type = DMN_JOB_IMG_COPY};
	int r = PARAMS(c, REQ("domain", P_UUID, job.dom),
		       REQ("image", P_UUID, job.img),
		       REQ("target_domain", P_UUID, job.dst_dom));
	if (r)
		return r;
	if (!strcmp(job.dom, job.dst_dom))
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "target_domain",
				      "invalid params: 'target_domain' is the "
				      "source domain");
	return start_job(c, &job);
}

/* The image's leaf volume (the one with role LEAF). */
static int image_leaf(struct dmn_call *c, const char *dom, const char *img,
		      struct cp_volmeta *leaf)
{
	cp_sd *sd;
	struct cp_uuid_str *u;
	size_t n, found = 0;
	int r;
	if ((r = get_sd(c, dom, &sd)) < 0 ||
	    (r = cp_sd_list_volumes(sd, img, &u, &n)) < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct cp_volmeta m;
		r = cp_sd_vol_md(sd, img, u[i].s, &m);
		if (r < 0) {
			free(u);
			return r;
		}
		if (m.role == CP_VOL_ROLE_LEAF) {
			*leaf = m;
			found++;
		}
	}
	free(u);
	if (found == 1)
		return 0;
	if (!n)
		return cp_error(-ENOENT, "image %s: not found in domain %s",
				img, dom);
	if (!found)
		return cp_error(-EINVAL, "image %s in domain %s has no leaf "
				"volume (a template cannot be snapshotted; "
				"clone it)", img, dom);
	return cp_error(-EUCLEAN, "image %s in domain %s has %zu leaf "
			"volumes", img, dom, found);
}

static int m_image_snapshot(struct dmn_call *c)
{
	struct dmn_job job = {.type = DMN_JOB_VOL_CREATE};
	const char *desc = NULL;
	int r = PARAMS(c, REQ("domain", P_UUID, job.dom),
		       REQ("image", P_UUID, job.img),
		       OPT("volume", P_UUID, job.vol),
		       OPT("description", P_STR, &desc));
	if (r || (r = copy_desc(c, &job, desc)))
		return r;
	struct cp_volmeta leaf;
	if ((r = spm_check(c)) < 0 ||
	    (r = image_leaf(c, job.dom, job.img, &leaf)) < 0)
		return r;
	memcpy(job.parent, leaf.vol_uuid, sizeof(job.parent));
	job.format = CP_VOL_FORMAT_COW;
	job.allocation = CP_VOL_ALLOC_SPARSE;
	job.capacity = 0; /* the parent's */
	if ((r = gen_if_empty(job.vol)) < 0)
		return r;
	return start_job(c, &job);
}

static int m_template_create(struct dmn_call *c)
{
	struct dmn_job job = {.type = DMN_JOB_TEMPLATE_CREATE};
	const char *desc = NULL;
	int fmt = 0;
	int r = PARAMS(c, REQ("domain", P_UUID, job.dom),
		       REQ("image", P_UUID, job.img),
		       OPT("volume", P_UUID, job.vol),
		       OPT("template_image", P_UUID, job.tmpl_img),
		       OPT("template_volume", P_UUID, job.tmpl_vol),
		       ENUM("format", fmt_names, &fmt),
		       OPT("description", P_STR, &desc));
	if (r || (r = copy_desc(c, &job, desc)))
		return r;
	job.format = fmt_of(fmt);
	if ((r = gen_if_empty(job.tmpl_img)) < 0 ||
	    (r = gen_if_empty(job.tmpl_vol)) < 0)
		return r;
	return start_job(c, &job);
}

static int m_template_clone(struct dmn_call *c)
{
	static const char *const modes[] = {"thin", "full", NULL};
	struct dmn_job job = {.type = DMN_JOB_TEMPLATE_CLONE};
	const char *desc = NULL;
	int mode = 0, fmt = 0, alloc = 0;
	int r = PARAMS(c, REQ("domain", P_UUID, job.dom),
		       REQ("template_image", P_UUID, job.tmpl_img),
		       REQ("template_volume", P_UUID, job.tmpl_vol),
		       OPT("image", P_UUID, job.img),
		       OPT("volume", P_UUID, job.vol),
		       ENUM("mode", modes, &mode),
		       ENUM("format", fmt_names, &fmt),
		       ENUM("allocation", alloc_names, &alloc),
		       OPT("description", P_STR, &desc));
	if (r || (r = copy_desc(c, &job, desc)))
		return r;
	job.full = mode == 1;
	job.format = fmt_of(fmt);
	job.allocation = alloc_of(alloc);
	if ((r = gen_if_empty(job.img)) < 0 || (r = gen_if_empty(job.vol)) < 0)
		return r;
	return start_job(c, &job);
}

/* ---- tasks ---------------------------------------------------------------- */

static int find_journal(struct cp_task *jt, size_t n, const char *uuid)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(jt[i].task_uuid, uuid))
			return (int)i;
	return -1;
}

/* The journal, or none: a host that cannot read it (no master domain
 * connected, sanlock off) still reports its own tasks. */
static void journal_list(struct dmn_call *c, struct cp_task **jt, size_t *n)
{
	if (cp_task_list(c->d->pool, jt, n) < 0) {
		dmn_debug("task journal not readable: %s", cp_last_error());
		*jt = NULL;
		*n = 0;
	}
	cp_clear_error();
}

static int m_task_list(struct dmn_call *c)
{
	int r = NO_PARAMS(c);
	if (r)
		return r;
	struct cp_task *jt;
	size_t njt;
	struct cp_uuid_str *u;
	size_t n;
	journal_list(c, &jt, &njt);
	r = dmn_task_uuids(c->d, &u, &n);
	if (r < 0) {
		free(jt);
		return r;
	}
	cp_jsonw_arr_begin(c->res, NULL);
	for (size_t i = 0; i < n; i++) {
		int k = find_journal(jt, njt, u[i].s);
		dmn_task_write(c->d, c->res, NULL, u[i].s, k >= 0 ? &jt[k] : NULL);
	}
	for (size_t i = 0; i < njt; i++) {
		if (dmn_task_known(c->d, jt[i].task_uuid, NULL))
			continue;
		dmn_task_write(c->d, c->res, NULL, jt[i].task_uuid, &jt[i]);
	}
	cp_jsonw_arr_end(c->res);
	free(u);
	free(jt);
	return 0;
}

static int task_get(struct dmn_call *c, const char *uuid)
{
	struct cp_task jt;
	bool have_jt = cp_task_get(c->d->pool, uuid, &jt) == 0;
	cp_clear_error();
	if (!have_jt && !dmn_task_known(c->d, uuid, NULL))
		return cp_error(-ENOENT, "task %s: not found (not started by "
				"this daemon and not in the task journal)",
				uuid);
	dmn_task_write(c->d, c->res, NULL, uuid, have_jt ? &jt : NULL);
	return 0;
}

static int m_task_get(struct dmn_call *c)
{
	char task[DMN_UUID_BUF];
	int r = PARAMS(c, REQ("task", P_UUID, task));
	if (r)
		return r;
	return task_get(c, task);
}

static int m_task_wait(struct dmn_call *c)
{
	char task[DMN_UUID_BUF];
	double timeout = -1;
	bool given = false;
	int r = PARAMS(c, REQ("task", P_UUID, task),
		       OPTG("timeout", P_NUM, &timeout, &given));
	if (r)
		return r;
	if (given && (timeout < 0 || timeout > 1e9))
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "timeout",
				      "invalid params: 'timeout' must be "
				      "seconds >= 0");
	if (!given)
		timeout = -1;
	r = dmn_task_wait(c->d, task, timeout);
	if (r == -ESHUTDOWN)
		return cp_error(r, "task %s: cowpoold is shutting down", task);
	if (r < 0 && r != -ETIMEDOUT && r != -ENOENT)
		return r;
	/* -ENOENT: not ours; the journal may still know it. */
	return task_get(c, task);
}

static int m_task_clear(struct dmn_call *c)
{
	char task[DMN_UUID_BUF];
	int r = PARAMS(c, REQ("task", P_UUID, task));
	if (r)
		return r;
	bool running, ours = dmn_task_known(c->d, task, &running);
	if (ours && running)
		return cp_error(-EBUSY, "task %s is still running", task);
	r = cp_task_clear(c->d->pool, task);
	if (r < 0 && !(r == -ENOENT && ours))
		return r;
	cp_clear_error();
	if (ours)
		dmn_task_remove(c->d, task);
	cp_jsonw_obj_begin(c->res, NULL);
	cp_jsonw_obj_end(c->res);
	return 0;
}

/* ---- dispatch ------------------------------------------------------------- */

struct dmn_method {
	const char *name;
	int (*fn)(struct dmn_call *c);
};

static const struct dmn_method dmn_methods[] = {
    {"host.info", m_host_info},
    {"domain.create", m_domain_create},
    {"domain.list", m_domain_list},
    {"domain.info", m_domain_info},
    {"domain.extend", m_domain_extend},
    {"spm.start", m_spm_start},
    {"spm.stop", m_spm_stop},
    {"spm.status", m_spm_status},
    {"image.list", m_image_list},
    {"image.info", m_image_info},
    {"image.delete", m_image_delete},
    {"image.copy", m_image_copy},
    {"image.snapshot", m_image_snapshot},
    {"volume.create", m_volume_create},
    {"volume.info", m_volume_info},
    {"volume.list", m_volume_list},
    {"volume.delete", m_volume_delete},
    {"volume.merge", m_volume_merge},
    {"volume.extend", m_volume_extend},
    {"volume.prepare", m_volume_prepare},
    {"volume.teardown", m_volume_teardown},
    {"volume.set_description", m_volume_set_description},
    {"template.create", m_template_create},
    {"template.clone", m_template_clone},
    {"task.list", m_task_list},
    {"task.get", m_task_get},
    {"task.wait", m_task_wait},
    {"task.clear", m_task_clear},
};

int dmn_method_call(struct dmn_call *c)
{
	for (size_t i = 0; i < CP_ARRAY_SIZE(dmn_methods); i++) {
		if (!strcmp(dmn_methods[i].name, c->method)) {
			/* The table's string outlives the request (tasks keep
			 * it). */
			c->method = dmn_methods[i].name;
			dmn_debug("call %s", c->method);
			return dmn_methods[i].fn(c);
		}
	}
	return dmn_call_error(c, DMN_ENO_METHOD, NULL,
			      "method not found: '%.100s'", c->method);
}
