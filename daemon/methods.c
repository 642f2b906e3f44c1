/* daemon/methods.c - the handlers of the JSON-RPC methods and the
 * dispatch table that binds them to api/methods.def.
 *
 * A call's params are checked against the table (params.c) before its
 * handler runs; the handler reads them with dmn_arg_*(), checks what the
 * table cannot say (one param needs another...), calls spm.h and writes
 * the result.  A task method's handler fills its own argument struct and
 * calls start_job() with its struct dmn_job_ops (run in a worker thread,
 * writer of the start answer), which sits beside it.  The handler of the
 * api/methods.def entry `id` is m_<id>; the dispatch table is expanded
 * from methods.def.  docs/api.md is the reference for every method.
 *
 * Handlers run in the connection's thread.  They return 0 with one value
 * written to c->res, DMN_RPC_ERROR with c->rpc_* set (bad params), or
 * -errno from the library with its message (cp_error_msg()).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cowpoold.h"
#include "timeouts.h" /* spm.start --wait: the lease timeline */

/* ---- helpers -------------------------------------------------------------- */

static enum cp_vol_format fmt_of(int i) /* "format": cow, raw */
{
	return i == 1 ? CP_VOL_FORMAT_RAW : CP_VOL_FORMAT_COW;
}

static enum cp_vol_alloc alloc_of(int i) /* "allocation": sparse, prealloc */
{
	return i == 1 ? CP_VOL_ALLOC_PREALLOCATED : CP_VOL_ALLOC_SPARSE;
}

static void uuid_arg(const struct dmn_call *c, const char *name,
		     char out[DMN_UUID_BUF])
{
	memcpy(out, dmn_arg_uuid(c, name), DMN_UUID_BUF);
}

static const char *opt_str(const char *s)
{
	return s[0] ? s : NULL;
}

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
	if (r != -EPERM || cp_last_errno() == -EPERM)
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
	int type = dmn_arg_enum(c, "type"); /* file, block */
	const char *path = dmn_arg_str(c, "path");
	const char *name = dmn_arg_str(c, "name");
	const char **devices = dmn_arg_strv(c, "devices");
	char uuid[DMN_UUID_BUF], pool[DMN_UUID_BUF];
	bool master = dmn_arg_bool(c, "master");
	uint64_t io_timeout = dmn_arg_u64(c, "io_timeout");
	uint64_t chunk = dmn_arg_u64(c, "chunk_size");
	uint64_t maxvol = dmn_arg_u64(c, "max_volumes");
	uint64_t extent = dmn_arg_u64(c, "extent_size");
	int r;
	uuid_arg(c, "uuid", uuid);
	uuid_arg(c, "pool", pool);
	if (type == 0 && !path)
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "path",
				      "invalid params: 'path' is missing (a "
				      "file domain needs the directory to "
				      "create it in)");
	if (type == 1 && (!devices || !devices[0]))
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "devices",
				      "invalid params: 'devices' is missing or "
				      "empty (a block domain needs devices)");
	if (type == 0 && devices)
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "devices",
				      "invalid params: 'devices' is for block "
				      "domains only");
	if (type == 1 && path)
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "path",
				      "invalid params: 'path' is for file "
				      "domains only");
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
	o.dom_uuid = opt_str(uuid);
	o.pool_uuid = pool[0] ? pool : c->d->cfg.pool;
	cp_sd *cur_master;
	if (!o.pool_uuid && master &&
	    cp_pool_master(c->d->pool, &cur_master) < 0) {
		/* The first master domain starts a new pool. */
		if ((r = cp_uuid_generate(pool)) < 0)
			return r;
		o.pool_uuid = pool;
	}
	cp_clear_error();
	o.name = name;
	o.master = master;
	/* not given (or 0): the configuration's io_timeout */
	o.io_timeout = (uint32_t)(io_timeout ? io_timeout
					     : c->d->cfg.io_timeout);
	if (chunk)
		o.chunk_size = chunk;
	if (maxvol)
		o.max_volumes = (uint32_t)maxvol;
	if (extent)
		o.extent_size = extent;
	struct cp_domain_md md;
	r = cp_pool_domain_create(c->d->pool, &o, &md);
	if (r < 0)
		return r;
	dmn_lockspaces_record(c->d); /* joined: ours after a kill too */
	dmn_info("domain %s (%s) created: %s %s", md.dom_uuid, md.name,
		 dmn_domain_type_name(md.type), type == 1 ? devices[0] : path);
	dmn_json_domain_md(c->res, NULL, &md);
	return 0;
}

static int m_domain_list(struct dmn_call *c)
{
	struct cp_domain_status *st;
	size_t n;
	int r = cp_pool_domains(c->d->pool, &st, &n);
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
	const char *dom = dmn_arg_uuid(c, "domain");
	struct cp_domain_status *st;
	size_t n;
	int r = cp_pool_domains(c->d->pool, &st, &n);
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

static int m_domain_extend(struct dmn_call *c) /* SPM checked */
{
	const char *dom = dmn_arg_uuid(c, "domain");
	const char *device = dmn_arg_str(c, "device");
	cp_sd *sd;
	int r;
	if ((r = get_sd(c, dom, &sd)) < 0)
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

static int m_domain_remove(struct dmn_call *c) /* SPM checked */
{
	const char *dom = dmn_arg_uuid(c, "domain");
	int r = dmn_export_busy(c->d, dom, NULL, NULL, false, "domain.remove");
	if (r == 0)
		r = cp_pool_domain_remove(c->d->pool, dom);
	if (r < 0)
		return r;
	dmn_lockspaces_record(c->d);
	dmn_info("domain %s removed (storage wiped)", dom);
	cp_jsonw_obj_begin(c->res, NULL);
	cp_jsonw_str(c->res, "removed", dom);
	cp_jsonw_obj_end(c->res);
	return 0;
}

static int m_spm_status(struct dmn_call *c)
{
	struct cp_spm_status s;
	int r = cp_spm_status(c->d->pool, &s);
	if (r < 0)
		return r;
	dmn_json_spm_status(c->res, &s);
	return 0;
}

/* The journal's unfinished tasks before spm start: after it, one line
 * each saying how recovery ended them. */
static void log_recovery(struct dmn_call *c, const struct cp_task *before,
			 size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		const struct cp_task *t = &before[i];
		if (t->state != CP_TASK_RUNNING &&
		    t->state != CP_TASK_RECOVERING)
			continue;
		struct cp_task now;
		k++;
		int gr = cp_task_get(c->d->pool, t->task_uuid, &now);
		if (gr < 0) {
			dmn_warn("recovery: task %s (%s): %s", t->task_uuid,
				 cp_task_type_name(t->type), cp_error_msg(gr));
			continue;
		}
		dmn_info("recovery: task %s (%s, step %u, domain %s) %s%s%s",
			 t->task_uuid, cp_task_type_name(t->type), t->step,
			 t->dom_uuid[0] ? t->dom_uuid : "-",
			 now.state == CP_TASK_DONE     ? "rolled forward: done"
			 : now.state == CP_TASK_ABORTED ? "rolled back: aborted"
							: cp_task_state_name(now.state),
			 now.message[0] ? ": " : "", now.message);
	}
	cp_clear_error();
	dmn_info("recovery: %zu unfinished task(s) found at spm start", k);
}

/* spm.start's wait: while the SDM lease is held (EBUSY) or its dead
 * holder's lease has not expired (EAGAIN), try again every 250 ms, for
 * at most wait seconds and at most takeover_max of the master's
 * io_timeout (spm/timeouts.h: a dead holder's lease is free by then).
 * Each new refusal is logged; the first one with the expected expiry. */
static int spm_start_wait(struct dmn_call *c, uint64_t wait)
{
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int r = cp_spm_start(c->d->pool);
	if (r >= 0 || !wait || (r != -EAGAIN && r != -EBUSY))
		return r;
	char when[32], msg[512];
	snprintf(msg, sizeof(msg), "%s", cp_error_msg(r)); /* before any
							    * other call */
	cp_sd *m;
	unsigned io = CP_IO_TIMEOUT_DEFAULT;
	if (cp_pool_master(c->d->pool, &m) == 0)
		io = cp_sd_md(m)->io_timeout;
	uint64_t bound = cp_takeover_max_seconds(io);
	uint64_t limit = wait < bound ? wait : bound;
	time_t by = time(NULL) + (time_t)bound;
	struct tm tm;
	gmtime_r(&by, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	dmn_info("spm start: %s; waiting up to %" PRIu64 " s (a dead "
		 "holder's lease is free by %s at the latest: takeover_max "
		 "%" PRIu64 " s, io_timeout %u)", msg, limit, when, bound, io);
	for (int last = r;;) {
		struct pollfd pfd = {.fd = c->d->wake_fd[0], .events = POLLIN};
		if (poll(&pfd, 1, 250) > 0 || atomic_load(&c->d->stopping))
			return cp_error(-ESHUTDOWN, "spm start: cowpoold is "
					"shutting down");
		clock_gettime(CLOCK_MONOTONIC, &now);
		uint64_t waited = (uint64_t)(now.tv_sec - t0.tv_sec);
		if (waited >= limit)
			return cp_error(r, "spm start: not the SPM after "
					"waiting %" PRIu64 " s (a dead holder's "
					"lease is free by %s at the latest): %s",
					waited, when, msg);
		r = cp_spm_start(c->d->pool);
		if (r >= 0 || (r != -EAGAIN && r != -EBUSY))
			return r;
		snprintf(msg, sizeof(msg), "%s", cp_error_msg(r));
		if (r != last)
			dmn_info("spm start: %s; still waiting", msg);
		last = r;
	}
}

static int m_spm_start(struct dmn_call *c)
{
	struct cp_task *before = NULL;
	size_t nbefore = 0;
	dmn_info("spm start requested");
	if (cp_task_list(c->d->pool, &before, &nbefore) < 0) {
		before = NULL;
		nbefore = 0;
	}
	cp_clear_error();
	int r = spm_start_wait(c, dmn_arg_u64(c, "wait"));
	if (r < 0) {
		dmn_warn("spm start failed: %s", cp_error_msg(r));
		free(before);
		return r;
	}
	log_recovery(c, before, nbefore);
	free(before);
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
	bool force = dmn_arg_bool(c, "force");
	int r = cp_spm_stop(c->d->pool, force);
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

/* An array of UUIDs. */
static void write_uuids(struct cp_jsonw *w, const struct cp_uuid_str *u,
			size_t n)
{
	cp_jsonw_arr_begin(w, NULL);
	for (size_t i = 0; i < n; i++)
		cp_jsonw_str(w, NULL, u[i].s);
	cp_jsonw_arr_end(w);
}

static int m_image_list(struct dmn_call *c)
{
	cp_sd *sd;
	struct cp_uuid_str *u;
	size_t n;
	int r;
	if ((r = get_sd(c, dmn_arg_uuid(c, "domain"), &sd)) < 0 ||
	    (r = cp_sd_list_images(sd, &u, &n)) < 0)
		return r;
	write_uuids(c->res, u, n);
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
	const char *dom = dmn_arg_uuid(c, "domain");
	const char *img = dmn_arg_uuid(c, "image");
	int r;
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
	cp_sd *sd;
	int r = get_sd(c, dmn_arg_uuid(c, "domain"), &sd);
	if (r < 0)
		return r;
	return write_volume(c, c->res, sd, dmn_arg_uuid(c, "image"),
			    dmn_arg_uuid(c, "volume"));
}

static int m_volume_list(struct dmn_call *c)
{
	cp_sd *sd;
	struct cp_uuid_str *u;
	size_t n;
	int r;
	if ((r = get_sd(c, dmn_arg_uuid(c, "domain"), &sd)) < 0 ||
	    (r = cp_sd_list_volumes(sd, dmn_arg_uuid(c, "image"), &u, &n)) < 0)
		return r;
	write_uuids(c->res, u, n);
	free(u);
	return 0;
}

static int m_volume_extend(struct dmn_call *c)
{
	uint64_t new_size = 0;
	int r = cp_vol_extend(c->d->pool, dmn_arg_uuid(c, "domain"),
			      dmn_arg_uuid(c, "image"),
			      dmn_arg_uuid(c, "volume"),
			      dmn_arg_u64(c, "size"), &new_size);
	if (r < 0)
		return r;
	cp_jsonw_obj_begin(c->res, NULL);
	cp_jsonw_u64(c->res, "size", new_size);
	cp_jsonw_obj_end(c->res);
	return 0;
}

static int m_volume_prepare(struct dmn_call *c)
{
	const char *dom = dmn_arg_uuid(c, "domain");
	const char *img = dmn_arg_uuid(c, "image");
	const char *vol = dmn_arg_uuid(c, "volume");
	bool rw = dmn_arg_bool(c, "rw");
	int r = cp_vol_prepare(c->d->pool, dom, img, vol, rw);
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
	const char *dom = dmn_arg_uuid(c, "domain");
	const char *img = dmn_arg_uuid(c, "image");
	const char *vol = dmn_arg_uuid(c, "volume");
	int r = dmn_export_busy(c->d, dom, img, vol, false, "volume.teardown");
	if (r < 0)
		return r;
	r = cp_vol_teardown(c->d->pool, dom, img, vol);
	if (r < 0)
		return r;
	dmn_info("volume %s/%s/%s torn down", dom, img, vol);
	cp_jsonw_obj_begin(c->res, NULL);
	cp_jsonw_obj_end(c->res);
	return 0;
}

/* ---- exports (exports.c) -------------------------------------------------- */

static int m_volume_export(struct dmn_call *c)
{
	struct dmn_export_req q = {
	    .dom = dmn_arg_uuid(c, "domain"),
	    .img = dmn_arg_uuid(c, "image"),
	    .vol = dmn_arg_uuid(c, "volume"),
	    .name = dmn_arg_str(c, "name"),
	    .rw = dmn_arg_bool(c, "rw"),
	};
	int r = dmn_export_add(c->d, &q, c->res);
	if (r == 0 && q.rw)
		dmn_monitor_kick(c->d); /* the lease client may be new */
	return r;
}

static int m_volume_unexport(struct dmn_call *c)
{
	const char *name = dmn_arg_str(c, "name");
	bool some = dmn_arg_given(c, "domain") || dmn_arg_given(c, "image") ||
		    dmn_arg_given(c, "volume");
	bool all = dmn_arg_given(c, "domain") && dmn_arg_given(c, "image") &&
		   dmn_arg_given(c, "volume");
	if (name && some)
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "name",
				      "invalid params: give 'name' or "
				      "'domain', 'image' and 'volume', not "
				      "both");
	if (!name && !all)
		return dmn_call_error(c, DMN_EINVALID_PARAMS,
				      !dmn_arg_given(c, "domain")  ? "domain"
				      : !dmn_arg_given(c, "image") ? "image"
								   : "volume",
				      "invalid params: 'domain', 'image' and "
				      "'volume' (or 'name') are required");
	return dmn_export_remove(c->d, dmn_arg_uuid(c, "domain"),
				 dmn_arg_uuid(c, "image"),
				 dmn_arg_uuid(c, "volume"), name,
				 dmn_arg_bool(c, "force"), c->res);
}

static int m_export_list(struct dmn_call *c)
{
	return dmn_export_list(c->d, c->res);
}

/* "description" (optional or required) into desc; *has set when given. */
static int desc_arg(struct dmn_call *c, char desc[CP_VOLMETA_DESC_MAX + 1],
		    bool *has)
{
	const char *s = dmn_arg_str(c, "description");
	*has = s != NULL;
	desc[0] = 0;
	if (!s)
		return 0;
	if (strlen(s) > CP_VOLMETA_DESC_MAX)
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "description",
				      "invalid params: 'description' is longer "
				      "than %d bytes", CP_VOLMETA_DESC_MAX);
	memcpy(desc, s, strlen(s) + 1);
	return 0;
}

static int m_volume_set_description(struct dmn_call *c)
{
	const char *dom = dmn_arg_uuid(c, "domain");
	const char *img = dmn_arg_uuid(c, "image");
	const char *vol = dmn_arg_uuid(c, "volume");
	char desc[CP_VOLMETA_DESC_MAX + 1];
	bool has;
	int r = desc_arg(c, desc, &has);
	if (r)
		return r;
	r = cp_vol_set_description(c->d->pool, dom, img, vol,
				   dmn_arg_u64(c, "generation"), desc);
	if (r < 0)
		return r;
	cp_sd *sd;
	if ((r = get_sd(c, dom, &sd)) < 0)
		return r;
	return write_volume(c, c->res, sd, img, vol);
}

/* ---- structural calls: tasks ---------------------------------------------- *
 * Each task method: its argument struct, its dmn_job_ops (run in the
 * worker, the start answer's members) and its handler. */

/* Check the SPM role, start the job as a task and answer {"task": uuid,
 * "domain": dom, ...ops->started()}. */
static int start_job(struct dmn_call *c, const struct dmn_job_ops *ops,
		     const char *dom, const void *args)
{
	char task[DMN_UUID_BUF];
	if (!(c->api->flags & CP_API_TASK))
		return cp_error(-EINVAL, "internal error: %s starts a task "
				"but is no CP_API_TASK method", c->method);
	int r = spm_check(c);
	if (r < 0)
		return r;
	if ((r = cp_uuid_generate(task)) < 0)
		return r;
	r = dmn_task_start(c->d, task, c->api, ops, dom, args);
	if (r < 0)
		return r;
	struct cp_jsonw *w = c->res;
	cp_jsonw_obj_begin(w, NULL);
	cp_jsonw_str(w, "task", task);
	cp_jsonw_str(w, "domain", dom);
	ops->started(w, args);
	cp_jsonw_obj_end(w);
	dmn_info("task %s started: %s", task, c->method);
	return 0;
}

static int gen_if_empty(char *uuid)
{
	return uuid[0] ? 0 : cp_uuid_generate(uuid);
}

/* volume.create, image.snapshot */
struct vol_create_args {
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], vol[DMN_UUID_BUF];
	char parent[DMN_UUID_BUF], parent_img[DMN_UUID_BUF];
	enum cp_vol_format format;
	enum cp_vol_alloc allocation;
	uint64_t capacity, initial_size;   /* 0: the parent's */
	bool has_desc;
	char desc[CP_VOLMETA_DESC_MAX + 1];
};

static int vol_create_run(const struct dmn_run *x, const void *args,
			  struct cp_jsonw *result)
{
	const struct vol_create_args *a = args;
	struct cp_vol_create_opts o;
	struct cp_volmeta m;
	cp_vol_create_opts_init(&o);
	o.img_uuid = a->img;
	o.vol_uuid = a->vol;
	o.parent_uuid = opt_str(a->parent);
	o.parent_img_uuid = opt_str(a->parent_img);
	o.format = a->format;
	o.allocation = a->allocation;
	o.capacity = a->capacity;
	o.initial_size = a->initial_size;
	o.description = a->has_desc ? a->desc : NULL;
	o.task_uuid = x->task_uuid;
	int r = cp_vol_create(x->pool, a->dom, &o, &m);
	if (r == 0)
		dmn_json_volmeta(result, "volume", &m, NULL);
	return r;
}

static void vol_create_started(struct cp_jsonw *w, const void *args)
{
	const struct vol_create_args *a = args;
	cp_jsonw_str(w, "image", a->img);
	cp_jsonw_str(w, "volume", a->vol);
	cp_jsonw_str_or_null(w, "parent", a->parent);
}

static const struct dmn_job_ops vol_create_job = {
    sizeof(struct vol_create_args), vol_create_run, vol_create_started};

static int m_volume_create(struct dmn_call *c)
{
	struct vol_create_args a = {0};
	uuid_arg(c, "domain", a.dom);
	uuid_arg(c, "image", a.img);
	uuid_arg(c, "volume", a.vol);
	uuid_arg(c, "parent", a.parent);
	uuid_arg(c, "parent_image", a.parent_img);
	a.format = fmt_of(dmn_arg_enum(c, "format"));
	a.allocation = alloc_of(dmn_arg_enum(c, "allocation"));
	a.capacity = dmn_arg_u64(c, "capacity");
	a.initial_size = dmn_arg_u64(c, "initial_size");
	int r = desc_arg(c, a.desc, &a.has_desc);
	if (r)
		return r;
	if (!dmn_arg_given(c, "capacity") && !a.parent[0])
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "capacity",
				      "invalid params: 'capacity' is missing "
				      "(only a snapshot, with 'parent', may "
				      "leave it out)");
	if (a.parent_img[0] && !a.parent[0])
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "parent_image",
				      "invalid params: 'parent_image' needs "
				      "'parent'");
	if (a.parent[0] && !a.img[0] && !a.parent_img[0])
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "image",
				      "invalid params: 'image' is missing (a "
				      "snapshot names the image of its "
				      "parent)");
	if ((r = gen_if_empty(a.img)) < 0 || (r = gen_if_empty(a.vol)) < 0)
		return r;
	return start_job(c, &vol_create_job, a.dom, &a);
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
	struct vol_create_args a = {0};
	uuid_arg(c, "domain", a.dom);
	uuid_arg(c, "image", a.img);
	uuid_arg(c, "volume", a.vol);
	int r = desc_arg(c, a.desc, &a.has_desc);
	if (r)
		return r;
	struct cp_volmeta leaf;
	if ((r = spm_check(c)) < 0 ||
	    (r = dmn_export_busy(c->d, a.dom, a.img, NULL, true,
				 "image.snapshot")) < 0 ||
	    (r = image_leaf(c, a.dom, a.img, &leaf)) < 0)
		return r;
	memcpy(a.parent, leaf.vol_uuid, sizeof(a.parent));
	a.format = CP_VOL_FORMAT_COW;
	a.allocation = CP_VOL_ALLOC_SPARSE;
	a.capacity = 0; /* the parent's */
	if ((r = gen_if_empty(a.vol)) < 0)
		return r;
	return start_job(c, &vol_create_job, a.dom, &a);
}

/* volume.delete, volume.merge */
struct vol_args {
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], vol[DMN_UUID_BUF];
};

static int vol_delete_run(const struct dmn_run *x, const void *args,
			  struct cp_jsonw *result)
{
	const struct vol_args *a = args;
	return cp_vol_delete(x->pool, a->dom, a->img, a->vol, x->task_uuid);
}

static int vol_merge_run(const struct dmn_run *x, const void *args,
			 struct cp_jsonw *result)
{
	const struct vol_args *a = args;
	return cp_vol_merge(x->pool, a->dom, a->img, a->vol, x->task_uuid,
			    x->progress, x->opaque);
}

static void vol_started(struct cp_jsonw *w, const void *args)
{
	const struct vol_args *a = args;
	cp_jsonw_str(w, "image", a->img);
	cp_jsonw_str(w, "volume", a->vol);
}

static const struct dmn_job_ops vol_delete_job = {
    sizeof(struct vol_args), vol_delete_run, vol_started};
static const struct dmn_job_ops vol_merge_job = {
    sizeof(struct vol_args), vol_merge_run, vol_started};

/* {domain, image, volume} */
static int vol_job(struct dmn_call *c, const struct dmn_job_ops *ops)
{
	struct vol_args a;
	uuid_arg(c, "domain", a.dom);
	uuid_arg(c, "image", a.img);
	uuid_arg(c, "volume", a.vol);
	return start_job(c, ops, a.dom, &a);
}

/* An exported volume is not deleted, and no layer of an image with an
 * export is merged (the chain under the open image would change), on this
 * host; other hosts' exports are guarded by the volume lease. */
static int m_volume_delete(struct dmn_call *c)
{
	int r = dmn_export_busy(c->d, dmn_arg_uuid(c, "domain"),
				dmn_arg_uuid(c, "image"),
				dmn_arg_uuid(c, "volume"), false,
				"volume.delete");
	return r < 0 ? r : vol_job(c, &vol_delete_job);
}

static int m_volume_merge(struct dmn_call *c)
{
	int r = dmn_export_busy(c->d, dmn_arg_uuid(c, "domain"),
				dmn_arg_uuid(c, "image"), NULL, false,
				"volume.merge");
	return r < 0 ? r : vol_job(c, &vol_merge_job);
}

/* image.delete, image.copy */
struct img_args {
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], dst_dom[DMN_UUID_BUF];
};

static int img_delete_run(const struct dmn_run *x, const void *args,
			  struct cp_jsonw *result)
{
	const struct img_args *a = args;
	return cp_img_delete(x->pool, a->dom, a->img, x->task_uuid);
}

static void img_delete_started(struct cp_jsonw *w, const void *args)
{
	cp_jsonw_str(w, "image", ((const struct img_args *)args)->img);
}

static const struct dmn_job_ops img_delete_job = {
    sizeof(struct img_args), img_delete_run, img_delete_started};

static int m_image_delete(struct dmn_call *c)
{
	struct img_args a = {0};
	uuid_arg(c, "domain", a.dom);
	uuid_arg(c, "image", a.img);
	int r = dmn_export_busy(c->d, a.dom, a.img, NULL, false,
				"image.delete");
	if (r < 0)
		return r;
	return start_job(c, &img_delete_job, a.dom, &a);
}

static int img_copy_run(const struct dmn_run *x, const void *args,
			struct cp_jsonw *result)
{
	const struct img_args *a = args;
	return cp_img_copy(x->pool, a->dom, a->img, a->dst_dom, x->task_uuid,
			   x->progress, x->opaque);
}

static void img_copy_started(struct cp_jsonw *w, const void *args)
{
	const struct img_args *a = args;
	cp_jsonw_str(w, "image", a->img);
	cp_jsonw_str(w, "target_domain", a->dst_dom);
}

static const struct dmn_job_ops img_copy_job = {
    sizeof(struct img_args), img_copy_run, img_copy_started};

static int m_image_copy(struct dmn_call *c)
{
	struct img_args a;
	uuid_arg(c, "domain", a.dom);
	uuid_arg(c, "image", a.img);
	uuid_arg(c, "target_domain", a.dst_dom);
	if (!strcmp(a.dom, a.dst_dom))
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "target_domain",
				      "invalid params: 'target_domain' is the "
				      "source domain");
	return start_job(c, &img_copy_job, a.dom, &a);
}

/* template.create, template.clone */
struct tmpl_args {
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], vol[DMN_UUID_BUF];
	char tmpl_img[DMN_UUID_BUF], tmpl_vol[DMN_UUID_BUF];
	bool full;                     /* clone mode */
	enum cp_vol_format format;
	enum cp_vol_alloc allocation;
	bool has_desc;
	char desc[CP_VOLMETA_DESC_MAX + 1];
};

static int tmpl_create_run(const struct dmn_run *x, const void *args,
			   struct cp_jsonw *result)
{
	const struct tmpl_args *a = args;
	struct cp_template_opts o;
	struct cp_volmeta m;
	cp_template_opts_init(&o);
	o.img_uuid = a->img;
	o.vol_uuid = opt_str(a->vol);
	o.tmpl_img_uuid = a->tmpl_img;
	o.tmpl_vol_uuid = a->tmpl_vol;
	o.format = a->format;
	o.description = a->has_desc ? a->desc : NULL;
	o.task_uuid = x->task_uuid;
	int r = cp_template_create(x->pool, a->dom, &o, x->progress,
				   x->opaque, &m);
	if (r == 0)
		dmn_json_volmeta(result, "volume", &m, NULL);
	return r;
}

static void tmpl_create_started(struct cp_jsonw *w, const void *args)
{
	const struct tmpl_args *a = args;
	cp_jsonw_str(w, "image", a->img);
	cp_jsonw_str_or_null(w, "volume", a->vol);
	cp_jsonw_str(w, "template_image", a->tmpl_img);
	cp_jsonw_str(w, "template_volume", a->tmpl_vol);
}

static const struct dmn_job_ops tmpl_create_job = {
    sizeof(struct tmpl_args), tmpl_create_run, tmpl_create_started};

static int m_template_create(struct dmn_call *c)
{
	struct tmpl_args a = {0};
	uuid_arg(c, "domain", a.dom);
	uuid_arg(c, "image", a.img);
	uuid_arg(c, "volume", a.vol);
	uuid_arg(c, "template_image", a.tmpl_img);
	uuid_arg(c, "template_volume", a.tmpl_vol);
	a.format = fmt_of(dmn_arg_enum(c, "format"));
	int r = desc_arg(c, a.desc, &a.has_desc);
	if (r)
		return r;
	if ((r = gen_if_empty(a.tmpl_img)) < 0 ||
	    (r = gen_if_empty(a.tmpl_vol)) < 0)
		return r;
	return start_job(c, &tmpl_create_job, a.dom, &a);
}

static int tmpl_clone_run(const struct dmn_run *x, const void *args,
			  struct cp_jsonw *result)
{
	const struct tmpl_args *a = args;
	struct cp_clone_opts o;
	struct cp_volmeta m;
	cp_clone_opts_init(&o);
	o.tmpl_img_uuid = a->tmpl_img;
	o.tmpl_vol_uuid = a->tmpl_vol;
	o.img_uuid = a->img;
	o.vol_uuid = a->vol;
	o.full = a->full;
	o.format = a->format;
	o.allocation = a->allocation;
	o.description = a->has_desc ? a->desc : NULL;
	o.task_uuid = x->task_uuid;
	int r = cp_template_clone(x->pool, a->dom, &o, x->progress, x->opaque,
				  &m);
	if (r == 0)
		dmn_json_volmeta(result, "volume", &m, NULL);
	return r;
}

static void tmpl_clone_started(struct cp_jsonw *w, const void *args)
{
	const struct tmpl_args *a = args;
	cp_jsonw_str(w, "template_image", a->tmpl_img);
	cp_jsonw_str(w, "template_volume", a->tmpl_vol);
	cp_jsonw_str(w, "image", a->img);
	cp_jsonw_str(w, "volume", a->vol);
}

static const struct dmn_job_ops tmpl_clone_job = {
    sizeof(struct tmpl_args), tmpl_clone_run, tmpl_clone_started};

static int m_template_clone(struct dmn_call *c)
{
	struct tmpl_args a = {0};
	uuid_arg(c, "domain", a.dom);
	uuid_arg(c, "template_image", a.tmpl_img);
	uuid_arg(c, "template_volume", a.tmpl_vol);
	uuid_arg(c, "image", a.img);
	uuid_arg(c, "volume", a.vol);
	a.full = dmn_arg_enum(c, "mode") == 1; /* thin, full */
	a.format = fmt_of(dmn_arg_enum(c, "format"));
	a.allocation = alloc_of(dmn_arg_enum(c, "allocation"));
	int r = desc_arg(c, a.desc, &a.has_desc);
	if (r)
		return r;
	if ((r = gen_if_empty(a.img)) < 0 || (r = gen_if_empty(a.vol)) < 0)
		return r;
	return start_job(c, &tmpl_clone_job, a.dom, &a);
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
	int r = cp_task_list(c->d->pool, jt, n);
	if (r < 0) {
		dmn_debug("task journal not readable: %s", cp_error_msg(r));
		*jt = NULL;
		*n = 0;
	}
	cp_clear_error();
}

static int m_task_list(struct dmn_call *c)
{
	int r;
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
	return task_get(c, dmn_arg_uuid(c, "task"));
}

static int m_task_wait(struct dmn_call *c)
{
	const char *task = dmn_arg_uuid(c, "task");
	bool given = dmn_arg_given(c, "timeout");
	double timeout = dmn_arg_num(c, "timeout", -1);
	if (given && (timeout < 0 || timeout > 1e9))
		return dmn_call_error(c, DMN_EINVALID_PARAMS, "timeout",
				      "invalid params: 'timeout' must be "
				      "seconds >= 0");
	int r = dmn_task_wait(c->d, task, timeout);
	if (r == -ESHUTDOWN)
		return cp_error(r, "task %s: cowpoold is shutting down", task);
	if (r < 0 && r != -ETIMEDOUT && r != -ENOENT)
		return r;
	/* -ENOENT: not ours; the journal may still know it. */
	return task_get(c, task);
}

static int m_task_clear(struct dmn_call *c)
{
	const char *task = dmn_arg_uuid(c, "task");
	bool running, ours = dmn_task_known(c->d, task, &running);
	if (ours && running)
		return cp_error(-EBUSY, "task %s is still running", task);
	int r = cp_task_clear(c->d->pool, task);
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

/* Every api/methods.def entry's handler is m_<id> (a method without one
 * does not compile). */
static int (*const dmn_handlers[CP_API_N])(struct dmn_call *c) = {
#define CP_API_METHOD(id, ...) [CP_API_##id] = m_##id,
#include "methods.def"
#undef CP_API_METHOD
};

int dmn_method_call(struct dmn_call *c)
{
	const struct cp_api_method *m = cp_api_lookup(c->method);
	if (!m)
		return dmn_call_error(c, DMN_ENO_METHOD, NULL,
				      "method not found: '%.100s'", c->method);
	/* The table's string outlives the request. */
	c->api = m;
	c->method = m->name;
	dmn_debug("call %s", c->method);
	int r = dmn_params_parse(c);
	/* Structural calls leave an audit line: who, what, with what (also
	 * those refused later: the caller asked). */
	if (!r && (m->flags & (CP_API_SPM | CP_API_TASK)) && c->peer) {
		char sum[600];
		dmn_params_summary(c, sum, sizeof(sum));
		dmn_info("audit: uid %u pid %d connection %u: %s {%s}",
			 c->peer->uid, c->peer->pid, c->peer->conn, c->method,
			 sum);
	}
	/* Tasks check the SPM role when they start (start_job). */
	if (!r && (m->flags & (CP_API_SPM | CP_API_TASK)) == CP_API_SPM)
		r = spm_check(c);
	if (!r)
		r = dmn_handlers[m - cp_api_methods](c);
	dmn_params_free(c);
	return r;
}
