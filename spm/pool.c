/* spm/pool.c - the pool as one host sees it: the domains it reaches, its
 * lockspace membership, the SPM role, the volume leases it holds.
 *
 * Locks: p->lock guards the domain list, the statuses, the SPM state and
 * the held leases (short critical sections, never across I/O except the
 * lease client's own calls).  p->spm_lock serialises structural work:
 * one SPM operation (or SPM start with its recovery) at a time.  spm stop
 * does not take spm_lock: with force it drops the role under a running
 * operation, whose next pool_guard() then fails and leaves its task in the
 * journal for the next SPM.
 *
 * The role: cp_spm_start (vol_recover.c) takes it with pool_spm_take(),
 * which joins the master domain's lockspace, acquires the SDM lease
 * (sanlock bumps its version: the version counts SPM terms) and opens the
 * task journal, then recovers unfinished tasks before it returns.
 * Every structural write first calls pool_guard(): the role must still be
 * ours and the sanlock connection alive (cp_lease_client_check, a poll
 * without I/O).  If the daemon connection is gone, sanlock holds no lease
 * of ours any more: the role is dropped and the write refused (-ESTALE).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "pool_int.h"
#include "timeouts.h"

struct pool_dom {
	cp_sd *sd;
	struct cp_domain_status st;
};

struct held_lease {
	char dom[CP_UUID_STR_LEN + 1];
	char img[CP_UUID_STR_LEN + 1];
	char vol[CP_UUID_STR_LEN + 1];
};

struct cp_pool {
	uint64_t host_id;
	char pool_uuid[CP_UUID_STR_LEN + 1];
	bool pool_fixed;
	char **file_roots;
	char **lvm_devices;
	char *lvm_system_dir;
	struct cp_lvm_opts lvm;
	bool use_sanlock;
	uint32_t disk_uid, disk_gid;

	pthread_mutex_t lock;
	pthread_mutex_t spm_lock;
	pthread_mutex_t scan_lock;     /* a monitor pass or rescan, against
					* a domain being removed under it */
	struct pool_dom *doms;
	size_t ndoms;
	cp_sd **gone;                  /* removed domains: closed with the
					* pool (callers may still hold them) */
	size_t ngone;

	cp_lease_client *client;
	bool spm;
	bool lost;                     /* the role ended by losing the lease:
					* -ESTALE until the next start/stop */
	uint64_t lver;
	char master[CP_UUID_STR_LEN + 1];
	struct task_journal tj;
	bool tj_open;
	unsigned active;               /* structural operations running */

	struct held_lease *leases;
	size_t nleases;
};

/* ---- crash points ---------------------------------------------------------- */

static atomic_long crash_at = -2;  /* -2 unread, -1 off */
static atomic_long crash_count;
static atomic_int crash_pid;

void cp_crashpoint(const char *where)
{
	long at = atomic_load(&crash_at);

	if (at == -2 || atomic_load(&crash_pid) != (int)getpid()) {
		/* read once per process (a forked child reads it anew) */
		const char *e = getenv("CP_FAULT_SPM_KILL_AT");
		at = e && *e ? strtol(e, NULL, 10) : -1;
		if (at <= 0)
			at = -1;
		atomic_store(&crash_count, 0);
		atomic_store(&crash_at, at);
		atomic_store(&crash_pid, (int)getpid());
	}
	if (at < 0)
		return;
	if (atomic_fetch_add(&crash_count, 1) + 1 == at) {
		fprintf(stderr, "cowpool: crash point %ld (%s): SIGKILL\n", at,
			where);
		fflush(stderr);
		raise(SIGKILL);
	}
}

/* ---- options and scanning -------------------------------------------------- */

CP_EXPORT void cp_pool_opts_init(struct cp_pool_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->use_sanlock = true;
}

static char **strv_dup(const char *const *v)
{
	size_t n = 0;
	char **out;

	if (!v)
		return NULL;
	while (v[n])
		n++;
	out = calloc(n + 1, sizeof(char *));
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!(out[i] = strdup(v[i]))) {
			cp_lvm_names_free(out);
			return NULL;
		}
	return out;
}

static struct pool_dom *pool_find_locked(cp_pool *p, const char *uuid)
{
	for (size_t i = 0; i < p->ndoms; i++)
		if (!strcasecmp(p->doms[i].sd->uuid, uuid))
			return &p->doms[i];
	return NULL;
}

/* Take sd into the pool (or close it if it belongs elsewhere / is known). */
static int pool_add_locked(cp_pool *p, cp_sd *sd)
{
	const struct cp_domain_md *md = cp_sd_md(sd);
	struct pool_dom *nd;

	if (pool_find_locked(p, sd->uuid) ||
	    (p->pool_uuid[0] && strcasecmp(md->pool_uuid, p->pool_uuid))) {
		cp_sd_close(sd);
		return 0;
	}
	nd = realloc(p->doms, (p->ndoms + 1) * sizeof(*nd));
	if (!nd) {
		cp_sd_close(sd);
		return cp_error(-ENOMEM, "out of memory");
	}
	p->doms = nd;
	memset(&nd[p->ndoms], 0, sizeof(nd[0]));
	nd[p->ndoms].sd = sd;
	nd[p->ndoms].st.md = *md;
	nd[p->ndoms].st.readable = true;
	p->ndoms++;
	if (!p->pool_uuid[0] && md->master)
		strcpy(p->pool_uuid, md->pool_uuid);
	return 0;
}

/* Open the domain uuid at loc and take it into the pool, unless the pool
 * knows it already or it does not open (reported by inspection; not ours
 * to guess). */
static void pool_scan_add(cp_pool *p, const struct cp_sd_loc *loc,
			  const char *uuid)
{
	cp_sd *sd;

	pthread_mutex_lock(&p->lock);
	bool known = pool_find_locked(p, uuid) != NULL;
	pthread_mutex_unlock(&p->lock);
	if (known || cp_sd_open(loc, uuid, &sd) < 0)
		return;
	pthread_mutex_lock(&p->lock);
	pool_add_locked(p, sd);
	pthread_mutex_unlock(&p->lock);
}

static int pool_scan_file_root(cp_pool *p, const char *root)
{
	struct cp_sd_loc loc;
	struct dirent *de;
	DIR *dp = opendir(root);

	if (!dp)
		return cp_error(-errno, "file root %s: %s", root, strerror(errno));
	cp_sd_loc_init(&loc);
	loc.type = CP_DOMAIN_TYPE_FILE;
	loc.root = root;
	loc.disk_uid = p->disk_uid;
	loc.disk_gid = p->disk_gid;
	while ((de = readdir(dp))) {
		char md[PATH_MAX];
		struct stat st;

		if (strlen(de->d_name) != CP_UUID_STR_LEN ||
		    !cp_uuid_valid(de->d_name))
			continue;
		snprintf(md, sizeof(md), "%s/%s/dom_md/metadata", root, de->d_name);
		if (stat(md, &st) < 0)
			continue;  /* an unfinished create */
		pool_scan_add(p, &loc, de->d_name);
	}
	closedir(dp);
	return 0;
}

static int pool_scan_block(cp_pool *p)
{
	struct cp_sd_loc loc;
	char **vgs;
	size_t n;
	int r = cp_lvm_vg_list(&p->lvm, "CP_DOMAIN", &vgs, &n);

	if (r < 0)
		return r;
	cp_sd_loc_init(&loc);
	loc.type = CP_DOMAIN_TYPE_BLOCK;
	loc.lvm = &p->lvm;
	for (size_t i = 0; i < n; i++)
		if (cp_uuid_valid(vgs[i]))
			pool_scan_add(p, &loc, vgs[i]);
	cp_lvm_names_free(vgs);
	return 0;
}

static int pool_rescan_locked(cp_pool *p)
{
	int r = 0;

	for (char **root = p->file_roots; root && *root; root++) {
		int k = pool_scan_file_root(p, *root);
		if (k < 0 && r == 0)
			r = k;
	}
	if (p->lvm_devices) {
		int k = pool_scan_block(p);
		if (k < 0 && r == 0)
			r = k;
	}
	return r;
}

CP_EXPORT int cp_pool_rescan(cp_pool *p)
{
	CP_API_ENTER();
	pthread_mutex_lock(&p->scan_lock);
	int r = pool_rescan_locked(p);
	pthread_mutex_unlock(&p->scan_lock);
	return r;
}

CP_EXPORT int cp_pool_open(const struct cp_pool_opts *uo, cp_pool **out)
{
	CP_API_ENTER();
	struct cp_pool_opts o;
	cp_pool *p;
	int r = SD_OPTS_COPY(o, uo, cp_pool_opts_init, lvm_devices, "pool");

	if (r < 0)
		return r;
	if (o.host_id < 1 || o.host_id > CP_LEASE_MAX_HOST_ID)
		return cp_error(-EINVAL, "host id %" PRIu64 " is not in 1..%d",
				o.host_id, CP_LEASE_MAX_HOST_ID);
	if (o.pool_uuid && !cp_uuid_valid(o.pool_uuid))
		return cp_error(-EINVAL, "pool UUID '%s' is not valid", o.pool_uuid);
	p = calloc(1, sizeof(*p));
	if (!p)
		return cp_error(-ENOMEM, "out of memory");
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->spm_lock, NULL);
	pthread_mutex_init(&p->scan_lock, NULL);
	p->host_id = o.host_id;
	p->use_sanlock = o.use_sanlock;
	if (uo->size >= offsetof(struct cp_pool_opts, disk_gid) +
			       sizeof(o.disk_gid)) {
		p->disk_uid = o.disk_uid;
		p->disk_gid = o.disk_gid;
	}
	if (o.pool_uuid) {
		strcpy(p->pool_uuid, o.pool_uuid);
		p->pool_fixed = true;
	}
	p->file_roots = strv_dup(o.file_roots);
	p->lvm_devices = strv_dup(o.lvm_devices);
	p->lvm_system_dir = o.lvm_system_dir ? strdup(o.lvm_system_dir) : NULL;
	cp_lvm_opts_init(&p->lvm);
	p->lvm.devices = (const char *const *)p->lvm_devices;
	p->lvm.system_dir = p->lvm_system_dir;
	cp_pool_rescan(p);
	*out = p;
	return 0;
}

CP_EXPORT void cp_pool_close(cp_pool *p)
{
	struct cp_lockspace_opts ls;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->tj_open)
		tj_close(&p->tj);
	p->tj_open = false;
	p->spm = false;
	pthread_mutex_unlock(&p->lock);
	/* Closing the client releases every lease (SDM, volumes). */
	cp_lease_client_close(p->client);
	p->client = NULL;
	for (size_t i = 0; i < p->ndoms; i++) {
		if (p->use_sanlock && p->doms[i].st.joined) {
			cp_sd_lockspace(p->doms[i].sd, &ls);
			cp_lockspace_leave(&ls, p->host_id);
		}
		cp_sd_close(p->doms[i].sd);
	}
	free(p->doms);
	for (size_t i = 0; i < p->ngone; i++)
		cp_sd_close(p->gone[i]);
	free(p->gone);
	free(p->leases);
	cp_lvm_names_free(p->file_roots);
	cp_lvm_names_free(p->lvm_devices);
	free(p->lvm_system_dir);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->spm_lock);
	pthread_mutex_destroy(&p->scan_lock);
	free(p);
}

static int pool_need_sanlock(cp_pool *p)
{
	if (!p->use_sanlock)
		return cp_error(-ENOTSUP,
				"host %" PRIu64 ": sanlock is off (read-only use)",
				p->host_id);
	return 0;
}

static int pool_join_sd(cp_pool *p, cp_sd *sd)
{
	struct cp_lockspace_opts ls;
	int r;

	cp_sd_lockspace(sd, &ls);
	r = cp_lockspace_join(&ls, p->host_id);
	if (r < 0) {
		/* A background join (the monitor's) may be under way: wait
		 * for its outcome, as long as a join may take. */
		int err = r, st = CP_LOCKSPACE_BUSY;
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", cp_last_error());
		long limit = 100L * cp_join_held_max(sd->md.io_timeout);
		for (long i = 0; i < limit; i++) {
			st = cp_lockspace_status(&ls, p->host_id);
			if (st != CP_LOCKSPACE_BUSY)
				break;
			struct timespec ts = {0, 10 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		r = st == CP_LOCKSPACE_JOINED ? 0 : cp_error(err, "%s", msg);
	}
	pthread_mutex_lock(&p->lock);
	struct pool_dom *d = pool_find_locked(p, sd->uuid);
	if (d)
		d->st.joined = r == 0;
	pthread_mutex_unlock(&p->lock);
	return r;
}

CP_EXPORT int cp_pool_join(cp_pool *p)
{
	CP_API_ENTER();
	int r = pool_need_sanlock(p), first = 0;
	size_t n;

	if (r < 0)
		return r;
	pthread_mutex_lock(&p->lock);
	n = p->ndoms;
	pthread_mutex_unlock(&p->lock);
	for (size_t i = 0; i < n; i++) {
		pthread_mutex_lock(&p->lock);
		cp_sd *sd = i < p->ndoms ? p->doms[i].sd : NULL;
		pthread_mutex_unlock(&p->lock);
		if (!sd)
			break;
		r = pool_join_sd(p, sd);
		if (r < 0 && first == 0)
			first = r;
	}
	return first;
}

CP_EXPORT int cp_pool_lease_fd(cp_pool *p)
{
	CP_API_ENTER();
	int fd;

	pthread_mutex_lock(&p->lock);
	fd = p->client ? cp_lease_client_fd(p->client) : -ENOENT;
	pthread_mutex_unlock(&p->lock);
	return fd;
}

CP_EXPORT int cp_pool_domain(cp_pool *p, const char *dom_uuid, cp_sd **out)
{
	CP_API_ENTER();
	struct pool_dom *d;

	if (!dom_uuid || !cp_uuid_valid(dom_uuid))
		return cp_error(-EINVAL, "domain UUID '%s' is not valid",
				dom_uuid ? dom_uuid : "");
	pthread_mutex_lock(&p->lock);
	d = pool_find_locked(p, dom_uuid);
	if (d)
		*out = d->sd;
	pthread_mutex_unlock(&p->lock);
	if (!d)
		return cp_error(-ENOENT, "domain %s is not connected to host %" PRIu64,
				dom_uuid, p->host_id);
	return 0;
}

CP_EXPORT int cp_pool_master(cp_pool *p, cp_sd **out)
{
	CP_API_ENTER();
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->ndoms; i++) {
		if (cp_sd_md(p->doms[i].sd)->master) {
			*out = p->doms[i].sd;
			pthread_mutex_unlock(&p->lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&p->lock);
	return cp_error(-ENOENT, "host %" PRIu64 ": no master domain is connected",
			p->host_id);
}

/* A file domain is made only directly in one of the pool's file roots,
 * named by its absolute canonical path: nothing relative (sanlock would get
 * relative paths), no "..", no link, nowhere else. */
static int pool_create_undo(cp_pool *p, const struct cp_sd_loc *loc,
			    const char *uuid, int err);
static void pool_drop_spm_locked(cp_pool *p);

static int pool_check_file_root(cp_pool *p, const char *root)
{
	char real[PATH_MAX];

	if (!root || root[0] != '/')
		return cp_error(-EINVAL, "domain create: path '%s' is not absolute",
				root ? root : "");
	if (!realpath(root, real))
		return cp_error(-errno, "domain create: path '%s': %s", root,
				strerror(errno));
	if (strcmp(real, root))
		return cp_error(-EINVAL, "domain create: path '%s' is not canonical "
				"(it resolves to '%s')", root, real);
	for (char **f = p->file_roots; f && *f; f++) {
		char fr[PATH_MAX];
		if (realpath(*f, fr) && !strcmp(fr, real))
			return 0;
	}
	return cp_error(-EPERM, "domain create: path '%s' is not one of this "
			"host's file roots", root);
}

CP_EXPORT int cp_pool_domain_create(cp_pool *p,
				    const struct cp_sd_create_opts *uo,
				    struct cp_domain_md *out)
{
	CP_API_ENTER();
	struct cp_sd_create_opts o;
	struct cp_domain_md md;
	struct cp_sd_loc loc;
	cp_sd *sd;
	int r;

	r = SD_OPTS_COPY(o, uo, cp_sd_create_opts_init, master,
			 "domain create");
	if (r < 0)
		return r;
	if ((r = pool_need_sanlock(p)) < 0)
		return r;
	if (!o.pool_uuid) {
		pthread_mutex_lock(&p->lock);
		bool have = p->pool_uuid[0] != '\0';
		pthread_mutex_unlock(&p->lock);
		if (!have)
			return cp_error(-EINVAL,
					"domain create: no pool yet: give a pool UUID");
		o.pool_uuid = p->pool_uuid;
	}
	if (o.master) {
		cp_sd *m;
		if (cp_pool_master(p, &m) == 0)
			return cp_error(-EEXIST,
					"pool %s already has master domain %s",
					p->pool_uuid, m->uuid);
	}
	if (o.loc.type == CP_DOMAIN_TYPE_BLOCK && !o.loc.lvm)
		o.loc.lvm = &p->lvm;
	if (o.loc.type == CP_DOMAIN_TYPE_FILE) {
		if ((r = pool_check_file_root(p, o.loc.root)) < 0)
			return r;
		o.loc.size = sizeof(o.loc);
		o.loc.disk_uid = p->disk_uid;
		o.loc.disk_gid = p->disk_gid;
	}
	r = cp_sd_create(&o, &md); /* leaves nothing behind on failure */
	if (r < 0)
		return r;
	loc = o.loc;
	r = cp_sd_open(&loc, md.dom_uuid, &sd);
	if (r < 0)
		return pool_create_undo(p, &loc, md.dom_uuid, r);
	pthread_mutex_lock(&p->lock);
	if (!p->pool_uuid[0])
		strcpy(p->pool_uuid, md.pool_uuid);
	r = pool_add_locked(p, sd);
	pthread_mutex_unlock(&p->lock);
	if (r < 0)
		return pool_create_undo(p, &loc, md.dom_uuid, r);
	/* the new domain is used at once (leases of its volumes): join */
	if (cp_pool_domain(p, md.dom_uuid, &sd) == 0 &&
	    (r = pool_join_sd(p, sd)) < 0)
		return pool_create_undo(
		    p, &loc, md.dom_uuid,
		    cp_error_prefix(r, "joining the lockspace of the new "
				    "domain %s failed", md.dom_uuid));
	if (out)
		*out = md;
	return 0;
}

/* Leave sd's lockspace (not joined: fine). */
static int pool_leave_sd(cp_pool *p, cp_sd *sd)
{
	struct cp_lockspace_opts ls;
	int r;

	if (!p->use_sanlock)
		return 0;
	cp_sd_lockspace(sd, &ls);
	r = cp_lockspace_status(&ls, p->host_id);
	if (r == CP_LOCKSPACE_NOT_JOINED)
		return 0;
	r = cp_lockspace_leave(&ls, p->host_id);
	return r == -ENOENT ? 0 : r;
}

/* Wipe a domain's storage and take it out of the pool (a scan finds
 * nothing to take back once the storage is gone).  The cp_sd stays open
 * until the pool closes: other threads may hold it. */
static int pool_wipe(cp_pool *p, const struct cp_sd_loc *loc,
		     const char *uuid)
{
	char id[CP_UUID_STR_LEN + 1];
	int r;

	snprintf(id, sizeof(id), "%s", uuid);
	pthread_mutex_lock(&p->scan_lock);
	r = sd_destroy(loc, id);
	if (r == 0) {
		pthread_mutex_lock(&p->lock);
		struct pool_dom *d = pool_find_locked(p, id);
		cp_sd **g = d ? realloc(p->gone, (p->ngone + 1) * sizeof(*g))
			      : NULL;
		if (g) {
			p->gone = g;
			p->gone[p->ngone++] = d->sd;
			*d = p->doms[--p->ndoms];
		}
		if (d && !g) {
			r = cp_error(-ENOMEM, "out of memory");
		} else if (p->ndoms == 0 && !p->pool_fixed) {
			p->pool_uuid[0] = '\0'; /* the pool went with it */
		}
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_unlock(&p->scan_lock);
	return r;
}

/* A create failed after the storage was made: leave, wipe, forget; err
 * (its message kept) is returned. */
static int pool_create_undo(cp_pool *p, const struct cp_sd_loc *loc,
			    const char *uuid, int err)
{
	char msg[1024];
	cp_sd *sd;
	int u = 0;

	snprintf(msg, sizeof(msg), "%s", cp_error_msg(err));
	if (cp_pool_domain(p, uuid, &sd) == 0)
		u = pool_leave_sd(p, sd);
	if (u == 0)
		u = pool_wipe(p, loc, uuid);
	if (u < 0)
		return cp_error(err, "domain create: %s (removing domain %s "
				"again failed: %s)", msg, uuid, cp_last_error());
	return cp_error(err, "domain create: %s (domain %s removed again: "
			"nothing is left of it)", msg, uuid);
}

/* A task of the journal that has not finished and touches dom. */
static int pool_domain_task(cp_pool *p, const char *dom)
{
	struct cp_task *v;
	size_t n;
	int r;

	pthread_mutex_lock(&p->lock);
	bool open = p->tj_open;
	pthread_mutex_unlock(&p->lock);
	if (!open)
		return 0;
	if ((r = tj_list(&p->tj, &v, &n, NULL)) < 0)
		return r;
	r = 0;
	for (size_t i = 0; i < n && r == 0; i++)
		if (pool_task_unfinished(&v[i]) &&
		    (!strcasecmp(v[i].dom_uuid, dom) ||
		     !strcasecmp(v[i].dst_dom_uuid, dom)))
			r = cp_error(-EBUSY, "domain %s: task %s (%s) is %s: "
				     "wait for it to finish", dom,
				     v[i].task_uuid,
				     cp_task_type_name(v[i].type),
				     cp_task_state_name(v[i].state));
	free(v);
	return r;
}

/* Why dom cannot be removed now (0: it can); caller holds spm_lock. */
static int pool_remove_check(cp_pool *p, cp_sd *sd)
{
	int r = 0;

	pthread_mutex_lock(&p->lock);
	size_t others = p->ndoms - 1;
	for (size_t i = 0; i < p->nleases && r == 0; i++)
		if (!strcasecmp(p->leases[i].dom, sd->uuid))
			r = cp_error(-EBUSY, "domain %s: volume %s/%s is prepared "
				     "for writing on host %" PRIu64
				     " (tear it down first)", sd->uuid,
				     p->leases[i].img, p->leases[i].vol,
				     p->host_id);
	if (r == 0 && sd->md.master && others)
		r = cp_error(-EBUSY, "domain %s is the master domain of pool %s, "
			     "which has %zu other domain%s: remove %s first",
			     sd->uuid, sd->md.pool_uuid, others,
			     others == 1 ? "" : "s", others == 1 ? "it" : "them");
	pthread_mutex_unlock(&p->lock);
	if (r == 0)
		r = pool_domain_task(p, sd->uuid);
	return r;
}

CP_EXPORT int cp_pool_domain_remove(cp_pool *p, const char *dom_uuid)
{
	CP_API_ENTER();
	struct cp_sd_loc loc;
	cp_sd *sd;
	int r;

	if ((r = pool_need_sanlock(p)) < 0 ||
	    (r = cp_pool_domain(p, dom_uuid, &sd)) < 0)
		return r;
	/* refused before waiting for the structural lock a task holds */
	if ((r = pool_domain_task(p, sd->uuid)) < 0)
		return r;
	if ((r = pool_begin_structural(p)) < 0)
		return cp_error_prefix(r, "domain remove %s", sd->uuid);
	if ((r = pool_remove_check(p, sd)) < 0) {
		pool_end_structural(p);
		return r;
	}
	bool master = cp_sd_md(sd)->master;
	if (master) {
		/* the last domain of the pool: the SPM role ends with it */
		struct cp_lease_opts l;
		pthread_mutex_lock(&p->lock);
		pool_drop_spm_locked(p);
		pthread_mutex_unlock(&p->lock);
		if ((r = cp_sd_lease(sd, NULL, NULL, &l)) == 0)
			r = cp_lease_release(p->client, &l);
		if (r == -ENOENT || r == -ESTALE)
			r = 0;
	}
	pool_end_structural(p);
	if (r == 0)
		r = pool_leave_sd(p, sd);
	if (r < 0)
		return cp_error_prefix(r, "domain remove %s", sd->uuid);
	cp_sd_loc_init(&loc);
	loc.type = sd->type;
	loc.root = sd->root;
	loc.lvm = &sd->lvm;
	loc.disk_uid = sd->disk_uid;
	loc.disk_gid = sd->disk_gid;
	if ((r = pool_wipe(p, &loc, sd->uuid)) < 0)
		return cp_error_prefix(r, "domain remove %s", dom_uuid);
	return 0;
}

CP_EXPORT int cp_pool_monitor(cp_pool *p)
{
	CP_API_ENTER();
	size_t n;

	/* domains another host created since the last look; a domain is
	 * not removed under a pass (scan_lock) */
	pthread_mutex_lock(&p->scan_lock);
	pool_rescan_locked(p);
	pthread_mutex_lock(&p->lock);
	n = p->ndoms;
	pthread_mutex_unlock(&p->lock);
	for (size_t i = 0; i < n; i++) {
		struct cp_domain_status st;
		struct cp_lockspace_opts ls;
		cp_sd *sd;
		int r;

		pthread_mutex_lock(&p->lock);
		sd = p->doms[i].sd;
		st = p->doms[i].st;
		pthread_mutex_unlock(&p->lock);
		r = cp_sd_refresh(sd);
		st.readable = r == 0;
		st.last_error = r;
		st.message[0] = '\0';
		if (r < 0)
			snprintf(st.message, sizeof(st.message), "%s",
				 cp_last_error());
		if (r == 0)
			st.md = *cp_sd_md(sd);
		if (r == 0 && (r = cp_sd_stats(sd, &st.stats)) < 0) {
			st.last_error = r;
			snprintf(st.message, sizeof(st.message), "%s",
				 cp_last_error());
		}
		if (p->use_sanlock) {
			cp_sd_lockspace(sd, &ls);
			int ls_state = cp_lockspace_status(&ls, p->host_id);
			st.joined = ls_state == CP_LOCKSPACE_JOINED;
			/* keep every domain joined: (re)join in the background */
			if (ls_state == CP_LOCKSPACE_NOT_JOINED)
				cp_lockspace_join_start(&ls, p->host_id);
			int hs = st.joined ? cp_lockspace_host_state(
						     sd->uuid, p->host_id)
					   : CP_HOST_UNKNOWN;
			st.renewal = hs < 0 ? CP_HOST_UNKNOWN
					    : (enum cp_host_state)hs;
		}
		st.checked = time(NULL);
		pthread_mutex_lock(&p->lock);
		p->doms[i].st = st;
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_unlock(&p->scan_lock);
	return 0;
}

CP_EXPORT int cp_pool_domains(cp_pool *p, struct cp_domain_status **out,
			      size_t *n)
{
	CP_API_ENTER();
	struct cp_domain_status *v;

	pthread_mutex_lock(&p->lock);
	v = calloc(p->ndoms ? p->ndoms : 1, sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&p->lock);
		return cp_error(-ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < p->ndoms; i++)
		v[i] = p->doms[i].st;
	*n = p->ndoms;
	pthread_mutex_unlock(&p->lock);
	*out = v;
	return 0;
}

/* ---- the SPM role ------------------------------------------------------------ */

CP_EXPORT const char *cp_spm_role_name(enum cp_spm_role r)
{
	switch (r) {
	case CP_SPM_FREE: return "Free";
	case CP_SPM_SPM: return "SPM";
	case CP_SPM_CONTENDING: return "Contending";
	}
	return "unknown";
}

static int pool_client(cp_pool *p, cp_lease_client **out)
{
	int r = 0;

	pthread_mutex_lock(&p->lock);
	if (p->client && cp_lease_client_check(p->client) < 0) {
		/* daemon restarted or lost: a new registration */
		cp_lease_client_close(p->client);
		p->client = NULL;
		p->nleases = 0;
	}
	if (!p->client)
		r = cp_lease_client_open(&p->client);
	*out = p->client;
	pthread_mutex_unlock(&p->lock);
	return r;
}

/* Drop the role (lease lost or released); caller holds p->lock. */
static void pool_drop_spm_locked(cp_pool *p)
{
	p->spm = false;
	if (p->tj_open)
		tj_close(&p->tj);
	p->tj_open = false;
}

static int pool_sdm(cp_pool *p, cp_sd **master, struct cp_lease_opts *l)
{
	int r = cp_pool_master(p, master);

	if (r < 0)
		return r;
	return cp_sd_lease(*master, NULL, NULL, l);
}

CP_EXPORT int cp_spm_status(cp_pool *p, struct cp_spm_status *out)
{
	CP_API_ENTER();
	struct cp_lease_opts l;
	struct cp_lease_owner own;
	cp_sd *m;
	int r;

	memset(out, 0, sizeof(*out));
	if ((r = pool_need_sanlock(p)) < 0)
		return r;
	if (cp_spm_check(p) == 0) {
		pthread_mutex_lock(&p->lock);
		out->role = CP_SPM_SPM;
		out->self = true;
		out->host_id = p->host_id;
		out->lver = p->lver;
		pthread_mutex_unlock(&p->lock);
		return 0;
	}
	if ((r = pool_sdm(p, &m, &l)) < 0)
		return r;
	r = cp_lease_read(&l, &own);
	if (r < 0)
		return r;
	out->lver = own.lver;
	if (own.held && own.host_state != CP_HOST_DEAD) {
		out->role = CP_SPM_CONTENDING;
		out->host_id = own.host_id;
	} else {
		out->role = CP_SPM_FREE;
	}
	return 0;
}

CP_EXPORT int cp_spm_check(cp_pool *p)
{
	CP_API_ENTER();
	int r = 0;

	pthread_mutex_lock(&p->lock);
	if (!p->spm && p->lost) {
		pthread_mutex_unlock(&p->lock);
		return cp_error(-ESTALE,
				"host %" PRIu64 " lost the SPM lease (sanlock "
				"connection lost): it is not the SPM any more",
				p->host_id);
	}
	if (!p->spm) {
		pthread_mutex_unlock(&p->lock);
		return -EPERM;
	}
	if (!p->client || cp_lease_client_check(p->client) < 0) {
		pool_drop_spm_locked(p);
		p->lost = true;
		r = cp_error(-ESTALE,
			     "host %" PRIu64 " lost the SPM lease (sanlock "
			     "connection lost): it is not the SPM any more",
			     p->host_id);
	}
	pthread_mutex_unlock(&p->lock);
	return r;
}

/* -EPERM with the holder named. */
static int pool_not_spm(cp_pool *p)
{
	struct cp_lease_opts l;
	struct cp_lease_owner own;
	cp_sd *m;

	if (pool_sdm(p, &m, &l) == 0 && cp_lease_read(&l, &own) == 0 &&
	    own.held)
		return cp_error(-EPERM,
				"host %" PRIu64 " is not the SPM (SPM is host %"
				PRIu64 ", lease version %" PRIu64 ")",
				p->host_id, own.host_id, own.lver);
	return cp_error(-EPERM, "host %" PRIu64 " is not the SPM (no host is)",
			p->host_id);
}

int pool_guard(cp_pool *p, const char *where)
{
	int r = cp_spm_check(p);

	if (r == -EPERM)
		return pool_not_spm(p);
	if (r < 0)
		return r;
	cp_crashpoint(where);
	return 0;
}

int pool_begin_structural(cp_pool *p)
{
	int r = cp_spm_check(p);

	if (r == -EPERM)
		return pool_not_spm(p);
	if (r < 0)
		return r;
	pthread_mutex_lock(&p->spm_lock);
	r = cp_spm_check(p);
	if (r < 0) {
		pthread_mutex_unlock(&p->spm_lock);
		return r == -EPERM ? pool_not_spm(p) : r;
	}
	pthread_mutex_lock(&p->lock);
	p->active++;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

void pool_end_structural(cp_pool *p)
{
	pthread_mutex_lock(&p->lock);
	p->active--;
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_unlock(&p->spm_lock);
}

struct task_journal *pool_journal(cp_pool *p)
{
	return &p->tj;
}

uint64_t pool_spm_lver(cp_pool *p)
{
	return p->lver;
}

bool pool_task_unfinished(const struct cp_task *t)
{
	return t->state == CP_TASK_RUNNING || t->state == CP_TASK_RECOVERING ||
	       (t->flags & TF_UNFINISHED);
}

int pool_spm_take(cp_pool *p)
{
	struct cp_lease_acquire_opts ao;
	struct cp_lease_opts l;
	cp_lease_client *c;
	cp_sd *m;
	uint64_t lver = 0;
	int r;

	if ((r = pool_need_sanlock(p)) < 0)
		return r;
	pthread_mutex_lock(&p->spm_lock);
	if (cp_spm_check(p) == 0) {
		pthread_mutex_unlock(&p->spm_lock);
		return 1;
	}
	if ((r = pool_sdm(p, &m, &l)) < 0)
		goto out;
	r = pool_join_sd(p, m);
	if (r < 0)
		goto out;
	if ((r = pool_client(p, &c)) < 0)
		goto out;
	cp_lease_acquire_opts_init(&ao);
	r = cp_lease_acquire(c, &l, &ao, &lver);
	/* A previous process of this host (a cowpoold killed a moment ago)
	 * held it: its daemon is still releasing it.  The release is quick
	 * (no disk timeout involved); retry for up to io_timeout seconds. */
	for (int i = 0; r == -EAGAIN && i < 100 * (int)m->md.io_timeout; i++) {
		struct cp_lease_owner own;
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", cp_last_error());
		if (cp_lease_read(&l, &own) < 0 ||
		    (own.held && own.host_id != p->host_id)) {
			cp_error(r, "%s", msg);  /* the acquire's reason */
			break;
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
		r = cp_lease_acquire(c, &l, &ao, &lver);
	}
	if (r < 0) {
		r = cp_error_prefix(r, "spm start on host %" PRIu64, p->host_id);
		goto out;
	}
	pthread_mutex_lock(&p->lock);
	strcpy(p->master, m->uuid);
	p->lver = lver;
	r = tj_open(m, &p->tj);
	if (r == 0) {
		p->tj_open = true;
		p->spm = true;
		p->lost = false;
	}
	pthread_mutex_unlock(&p->lock);
	if (r < 0) {
		cp_lease_release(c, &l);
		goto out;
	}
	return 0; /* the caller recovers, then pool_spm_taken() */
out:
	pthread_mutex_unlock(&p->spm_lock);
	return r;
}

int pool_spm_taken(cp_pool *p)
{
	int r = cp_spm_check(p);
	if (r == -EPERM)
		r = cp_error(-ESTALE, "host %" PRIu64 " lost the SPM lease during "
			     "recovery", p->host_id);
	pthread_mutex_unlock(&p->spm_lock);
	return r;
}

CP_EXPORT int cp_spm_stop(cp_pool *p, bool force)
{
	CP_API_ENTER();
	struct cp_lease_opts l;
	cp_sd *m;
	int r;

	pthread_mutex_lock(&p->lock);
	if (!p->spm) {
		bool lost = p->lost;
		p->lost = false;  /* stop acknowledges the loss */
		pthread_mutex_unlock(&p->lock);
		if (lost)
			return 0;
		return cp_error(-EPERM, "host %" PRIu64 " is not the SPM",
				p->host_id);
	}
	if (p->active && !force) {
		unsigned a = p->active;
		pthread_mutex_unlock(&p->lock);
		return cp_error(-EBUSY,
				"host %" PRIu64 ": %u SPM task%s running (stop "
				"with force to leave %s to the next SPM)",
				p->host_id, a, a == 1 ? " is" : "s are",
				a == 1 ? "it" : "them");
	}
	pool_drop_spm_locked(p);
	pthread_mutex_unlock(&p->lock);
	if ((r = pool_sdm(p, &m, &l)) < 0)
		return r;
	r = cp_lease_release(p->client, &l);
	if (r == -ENOENT || r == -ESTALE)
		r = 0;
	return r;
}

/* ---- tasks ------------------------------------------------------------------ */

/* The journal: the SPM's open one, else opened for the call. */
static int pool_with_journal(cp_pool *p, struct task_journal **tj,
			     struct task_journal *tmp, bool *opened)
{
	cp_sd *m;
	int r;

	*opened = false;
	pthread_mutex_lock(&p->lock);
	if (p->tj_open) {
		*tj = &p->tj;
		pthread_mutex_unlock(&p->lock);
		return 0;
	}
	pthread_mutex_unlock(&p->lock);
	if ((r = cp_pool_master(p, &m)) < 0)
		return r;
	if ((r = tj_open(m, tmp)) < 0)
		return r;
	*tj = tmp;
	*opened = true;
	return 0;
}

CP_EXPORT int cp_task_list(cp_pool *p, struct cp_task **out, size_t *n)
{
	CP_API_ENTER();
	struct task_journal tmp, *tj;
	bool opened;
	int r = pool_with_journal(p, &tj, &tmp, &opened);

	if (r < 0)
		return r;
	r = tj_list(tj, out, n, NULL);
	if (opened)
		tj_close(tj);
	return r;
}

CP_EXPORT int cp_task_get(cp_pool *p, const char *task_uuid,
			  struct cp_task *out)
{
	CP_API_ENTER();
	struct cp_task *v;
	size_t n;
	int r;

	if (!task_uuid || !cp_uuid_valid(task_uuid))
		return cp_error(-EINVAL, "task UUID '%s' is not valid",
				task_uuid ? task_uuid : "");
	r = cp_task_list(p, &v, &n);
	if (r < 0)
		return r;
	r = cp_error(-ENOENT, "task %s not found", task_uuid);
	for (size_t i = 0; i < n; i++)
		if (!strcasecmp(v[i].task_uuid, task_uuid)) {
			*out = v[i];
			r = 0;
		}
	free(v);
	return r;
}

CP_EXPORT int cp_task_clear(cp_pool *p, const char *task_uuid)
{
	CP_API_ENTER();
	struct cp_task t;
	int r = cp_task_get(p, task_uuid, &t);

	if (r < 0)
		return r;
	if (pool_task_unfinished(&t))
		return cp_error(-EBUSY, "task %s is %s: only finished tasks are "
				"cleared", task_uuid, cp_task_state_name(t.state));
	if ((r = pool_guard(p, "task clear")) < 0)
		return r;
	return tj_clear(&p->tj, &t);
}

/* ---- volume leases ------------------------------------------------------------ */

CP_EXPORT int cp_vol_prepare(cp_pool *p, const char *dom, const char *img,
			     const char *vol, bool rw)
{
	CP_API_ENTER();
	struct cp_lease_acquire_opts ao;
	struct cp_lease_opts l;
	struct cp_volmeta m;
	struct held_lease *nl;
	cp_lease_client *c;
	cp_sd *sd;
	int r;

	if ((r = cp_pool_domain(p, dom, &sd)) < 0 ||
	    (r = cp_sd_vol_md(sd, img, vol, &m)) < 0)
		return r;
	if (m.legality != CP_VOL_LEGAL)
		return cp_error(-EUCLEAN, "volume %s is ILLEGAL: it cannot be used",
				vol);
	/* hand out nothing whose chain leaves the domain */
	if ((r = sd_check_chain(sd, img, vol)) < 0)
		return cp_error_prefix(r, "prepare volume %s", vol);
	if (!rw)
		return 0;
	if (m.role != CP_VOL_ROLE_LEAF)
		return cp_error(-EPERM, "volume %s is %s: only a leaf is prepared "
				"for writing", vol,
				m.role == CP_VOL_ROLE_SHARED ? "a template" :
				"an internal layer");
	if ((r = pool_need_sanlock(p)) < 0)
		return r;
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->nleases; i++)
		if (!strcasecmp(p->leases[i].vol, vol) &&
		    !strcasecmp(p->leases[i].dom, dom)) {
			pthread_mutex_unlock(&p->lock);
			return 0;
		}
	pthread_mutex_unlock(&p->lock);
	struct cp_lockspace_opts ls;
	cp_sd_lockspace(sd, &ls);
	if (cp_lockspace_status(&ls, p->host_id) != CP_LOCKSPACE_JOINED &&
	    (r = pool_join_sd(p, sd)) < 0)
		return r;
	if ((r = pool_client(p, &c)) < 0)
		return r;
	if ((r = cp_sd_lease(sd, img, vol, &l)) < 0)
		return r;
	cp_lease_acquire_opts_init(&ao);
	r = cp_lease_acquire(c, &l, &ao, NULL);
	if (r < 0)
		return cp_error_prefix(r, "prepare volume %s for writing", vol);
	pthread_mutex_lock(&p->lock);
	nl = realloc(p->leases, (p->nleases + 1) * sizeof(*nl));
	if (nl) {
		p->leases = nl;
		strcpy(nl[p->nleases].dom, dom);
		strcpy(nl[p->nleases].img, img);
		strcpy(nl[p->nleases].vol, vol);
		p->nleases++;
	}
	pthread_mutex_unlock(&p->lock);
	if (!nl) {
		cp_lease_release(c, &l);
		return cp_error(-ENOMEM, "out of memory");
	}
	return 0;
}

CP_EXPORT int cp_vol_teardown(cp_pool *p, const char *dom, const char *img,
			      const char *vol)
{
	CP_API_ENTER();
	struct cp_lease_opts l;
	cp_sd *sd;
	bool held = false;
	int r;

	if ((r = cp_pool_domain(p, dom, &sd)) < 0)
		return r;
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->nleases; i++)
		if (!strcasecmp(p->leases[i].vol, vol) &&
		    !strcasecmp(p->leases[i].dom, dom)) {
			p->leases[i] = p->leases[--p->nleases];
			held = true;
			break;
		}
	pthread_mutex_unlock(&p->lock);
	if (!held)
		return 0;
	if ((r = cp_sd_lease(sd, img, vol, &l)) < 0)
		return r;
	r = cp_lease_release(p->client, &l);
	return r == -ENOENT ? 0 : r;
}
