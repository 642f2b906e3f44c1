/* daemon/monitor.c - the join thread (cp_pool_join() once at start-up)
 * and the monitor thread (cp_pool_monitor() every monitor_interval
 * seconds, and lease loss seen at once on the sanlock client fd); the
 * lockspaces this daemon owns (the record in its host id's lock file).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cowpoold.h"

/* ---- the lockspaces this daemon owns --------------------------------------- */

size_t dmn_lockspaces(struct dmn *d, struct dmn_ls **out)
{
	struct cp_domain_status *st;
	size_t n, k = 0;
	*out = NULL;
	if (!d->cfg.sanlock || cp_pool_domains(d->pool, &st, &n) < 0)
		return 0;
	struct dmn_ls *ls = calloc(n ? n : 1, sizeof(*ls));
	for (size_t i = 0; ls && i < n; i++) {
		cp_sd *sd;
		struct cp_lockspace_opts o;
		if (cp_pool_domain(d->pool, st[i].md.dom_uuid, &sd) < 0 ||
		    cp_sd_lockspace(sd, &o) < 0)
			continue;
		snprintf(ls[k].name, sizeof(ls[k].name), "%s", o.name);
		snprintf(ls[k].path, sizeof(ls[k].path), "%s", o.path);
		ls[k].offset = o.offset;
		k++;
	}
	free(st);
	cp_clear_error();
	*out = ls;
	return k;
}

void dmn_ls_opts(const struct dmn_ls *ls, struct cp_lockspace_opts *o)
{
	cp_lockspace_opts_init(o);
	o->name = ls->name;
	o->path = ls->path;
	o->offset = ls->offset;
}

/* The lock file's text: our pid, then one lockspace name a line. */
static void ls_record(struct dmn *d, const struct dmn_ls *ls, size_t n)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static char last[8192];
	char buf[8192];
	size_t len = (size_t)snprintf(buf, sizeof(buf), "%ld\n",
				      (long)getpid());
	for (size_t i = 0; i < n && len < sizeof(buf); i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s\n",
					ls[i].name);
	if (len >= sizeof(buf) || d->lock_fd < 0)
		return;
	pthread_mutex_lock(&lock);
	/* the new text over the old one, then cut: a reader sees a pid */
	if (strcmp(buf, last) &&
	    (pwrite(d->lock_fd, buf, len, 0) != (ssize_t)len ||
	     ftruncate(d->lock_fd, (off_t)len) < 0))
		dmn_warn("cannot write the host id's lock file: %s",
			 strerror(errno));
	else
		memcpy(last, buf, len + 1);
	pthread_mutex_unlock(&lock);
}

void dmn_lockspaces_record(struct dmn *d)
{
	struct dmn_ls *ls;
	size_t n = dmn_lockspaces(d, &ls);
	ls_record(d, ls, n);
	free(ls);
}

/* Is name a line (after the first, the pid) of the previous holder's
 * record? */
static bool ls_recorded(const char *rec, const char *name)
{
	size_t len = strlen(name);
	const char *p = rec ? strchr(rec, '\n') : NULL;
	while (p) {
		p++;
		if (!strncmp(p, name, len) && (p[len] == '\n' || !p[len]))
			return true;
		p = strchr(p, '\n');
	}
	return false;
}

int dmn_lockspaces_claim(struct dmn *d)
{
	struct dmn_ls *ls;
	size_t n = dmn_lockspaces(d, &ls);
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		struct cp_lockspace_opts o;
		dmn_ls_opts(&ls[i], &o);
		int st = cp_lockspace_status(&o, d->cfg.host_id);
		cp_clear_error();
		if (st < 0 || st == CP_LOCKSPACE_NOT_JOINED)
			continue;
		if (ls_recorded(d->ls_prev, ls[i].name)) {
			dmn_info("lockspace %s: joined with host id %" PRIu64
				 " by the previous cowpoold of %s: this "
				 "daemon takes it over", ls[i].name,
				 d->cfg.host_id, d->cfg.run_dir);
			continue;
		}
		dmn_err("lockspace %s is already joined with host id %" PRIu64
			" by another process of this host (another cowpoold "
			"with this host id and another run_dir?): refusing "
			"to start; it is left as it is", ls[i].name,
			d->cfg.host_id);
		r = -EEXIST;
	}
	if (r == 0)
		ls_record(d, ls, n);
	free(ls);
	return r;
}

/* ---- join thread ---------------------------------------------------------- */

void *dmn_join_thread(void *arg)
{
	struct dmn *d = arg;
	int r = cp_pool_join(d->pool);
	pthread_mutex_lock(&d->lock);
	d->join_state = r < 0 ? DMN_JOIN_FAILED : DMN_JOIN_DONE;
	d->join_error = r;
	snprintf(d->join_message, sizeof(d->join_message), "%s",
		 r < 0 ? cp_error_msg(r) : "");
	pthread_mutex_unlock(&d->lock);
	if (r < 0)
		dmn_err("joining the lockspaces failed: %s", d->join_message);
	else
		dmn_info("lockspaces joined");
	return NULL;
}

/* ---- monitor thread ------------------------------------------------------- */

/* What the monitor warned about, per domain: a warning is logged when a
 * condition appears or changes, and one line when it clears. */
#define MON_MAX 256
struct mon_state {
	bool pool_warned;
	size_t n;
	struct {
		char uuid[DMN_UUID_BUF];
		char error[256];       /* "" = fine */
		bool renewal_warned;   /* joined, but the lease does not renew */
	} dom[MON_MAX];
};

static size_t mon_slot(struct mon_state *m, const char *uuid)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->dom[i].uuid, uuid))
			return i;
	if (m->n == MON_MAX)
		return MON_MAX;
	memset(&m->dom[m->n], 0, sizeof(m->dom[0]));
	snprintf(m->dom[m->n].uuid, DMN_UUID_BUF, "%s", uuid);
	return m->n++;
}

static void monitor_once(struct dmn *d, struct mon_state *m)
{
	int r = cp_pool_monitor(d->pool);
	if (r < 0 && !m->pool_warned) {
		dmn_warn("domain monitor: %s", cp_error_msg(r));
		m->pool_warned = true;
	} else if (r == 0 && m->pool_warned) {
		dmn_info("domain monitor: recovered (the pool can be checked "
			 "again)");
		m->pool_warned = false;
	}
	dmn_lockspaces_record(d); /* domains found by the monitor */
	struct cp_domain_status *st;
	size_t n;
	if (cp_pool_domains(d->pool, &st, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		const struct cp_domain_status *s = &st[i];
		size_t k = mon_slot(m, s->md.dom_uuid);
		if (k == MON_MAX)
			break;
		char *err = m->dom[k].error;
		if (s->last_error) {
			const char *msg = s->message[0]
					      ? s->message
					      : strerror(-s->last_error);
			if (strcmp(err, msg)) {
				dmn_warn("domain %s (%s): %s", s->md.dom_uuid,
					 s->md.name, msg);
				snprintf(err, sizeof(m->dom[0].error), "%s",
					 msg);
			}
		} else if (err[0]) {
			dmn_info("domain %s (%s): recovered: reachable again "
				 "(was: %s)", s->md.dom_uuid, s->md.name, err);
			err[0] = 0;
		}
		bool bad = s->joined && s->renewal != CP_HOST_LIVE &&
			   s->renewal != CP_HOST_UNKNOWN;
		if (bad && !m->dom[k].renewal_warned) {
			dmn_warn("domain %s (%s): this host's lease does not "
				 "renew (%s)", s->md.dom_uuid, s->md.name,
				 cp_host_state_name(s->renewal));
			m->dom[k].renewal_warned = true;
		} else if (!bad && m->dom[k].renewal_warned &&
			   s->renewal == CP_HOST_LIVE) {
			dmn_info("domain %s (%s): recovered: the lease renews "
				 "again", s->md.dom_uuid, s->md.name);
			m->dom[k].renewal_warned = false;
		}
	}
	free(st);
}

/* Lease loss: the sanlock daemon connection hung up, so no lease of this
 * process is held any more.  cp_spm_check() drops the SPM role; writable
 * exports end (another host may now take their volumes' leases). */
static void monitor_lease_lost(struct dmn *d)
{
	int r = cp_spm_check(d->pool);
	dmn_err("lost the connection to the sanlock daemon: no lease is held "
		"any more%s%s", r == -ESTALE ? "; SPM role dropped: " : "",
		r == -ESTALE ? cp_error_msg(r) : "");
	dmn_exports_lease_lost(d);
}

void dmn_monitor_kick(struct dmn *d)
{
	ssize_t w = write(d->kick_fd[1], "k", 1);
	(void)w; /* a full pipe already holds a kick */
}

void *dmn_monitor_thread(void *arg)
{
	struct dmn *d = arg;
	int lease_fd = -1;
	bool lease_lost = false;
	struct timespec next;
	static struct mon_state mon; /* one monitor thread */
	clock_gettime(CLOCK_MONOTONIC, &next);

	for (;;) {
		if (lease_fd < 0 && !lease_lost && d->cfg.sanlock) {
			int fd = cp_pool_lease_fd(d->pool);
			if (fd >= 0)
				lease_fd = fd;
		}
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		int64_t ms = (next.tv_sec - now.tv_sec) * 1000 +
			     (next.tv_nsec - now.tv_nsec) / 1000000;
		if (ms < 0)
			ms = 0;
		struct pollfd pfd[3] = {
		    {.fd = d->wake_fd[0], .events = POLLIN},
		    {.fd = d->kick_fd[0], .events = POLLIN},
		    {.fd = lease_fd, .events = POLLRDHUP},
		};
		int n = poll(pfd, lease_fd >= 0 ? 3 : 2, (int)ms);
		if (n < 0 && errno != EINTR) {
			dmn_err("monitor: poll: %s", strerror(errno));
			break;
		}
		if (atomic_load(&d->stopping) || (n > 0 && pfd[0].revents))
			break;
		if (n > 0 && pfd[1].revents) {
			char buf[64];
			ssize_t k = read(d->kick_fd[0], buf, sizeof(buf));
			(void)k;
			/* look it up again (a new client after a loss) */
			lease_fd = -1;
			lease_lost = false;
		}
		if (lease_fd >= 0 && n > 0 && pfd[2].revents) {
			monitor_lease_lost(d);
			lease_fd = -1;
			lease_lost = true;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > next.tv_sec ||
		    (now.tv_sec == next.tv_sec && now.tv_nsec >= next.tv_nsec)) {
			monitor_once(d, &mon);
			clock_gettime(CLOCK_MONOTONIC, &next);
			next.tv_sec += d->cfg.monitor_interval;
		}
	}
	return NULL;
}
