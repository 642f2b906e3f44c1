/* daemon/main.c - cowpoold: start-up, signals and shutdown.
 *
 * Start-up: configuration (config.c), the host id's lock file in run_dir
 * (a second daemon with the same host id stops there, before it touches
 * anything), the socket bound, cp_pool_open(), the pool's lockspaces
 * claimed (monitor.c: one joined by another process stops the start),
 * the NBD server (exports.c), then the
 * threads: join (cp_pool_join once; the API answers meanwhile), monitor,
 * accept.  Then "ready\n" goes to --ready-fd and READY=1 to systemd
 * (sd_notify).
 *
 * SIGHUP: reopen the log file and reload what can change (config.c).
 *
 * Shutdown (first SIGTERM/SIGINT): stop accepting, wake task.wait callers
 * (ESHUTDOWN), end connections, let running tasks finish, end the NBD
 * exports (clients disconnected, images closed, volume leases released),
 * cp_pool_close() (releases the leases, leaves the lockspaces; any
 * lockspace of the pool still joined by this host afterwards is left
 * here), remove the socket, exit 0.  A second signal exits at once
 * (status 1): sanlock releases this process's leases when it dies and the
 * next SPM recovers the journaled tasks.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if CP_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "cowpoold.h"

/* ---- systemd ------------------------------------------------------------- */

/* sd_notify() when built with libsystemd and run by systemd (NOTIFY_SOCKET
 * set); nothing otherwise. */
static void dmn_notify(const char *state)
{
#if CP_HAVE_SYSTEMD
	sd_notify(0, state);
#else
	(void)state;
#endif
}

/* ---- signals -------------------------------------------------------------- */

struct dmn_signals {
	struct dmn *d;
	sigset_t set;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int received;
};

static void *signal_thread(void *arg)
{
	struct dmn_signals *s = arg;
	for (;;) {
		int sig;
		if (sigwait(&s->set, &sig))
			continue;
		if (sig == SIGHUP) {
			pthread_mutex_lock(&s->lock);
			bool stopping = s->received > 0;
			pthread_mutex_unlock(&s->lock);
			if (stopping)
				continue;
			dmn_notify("RELOADING=1");
			dmn_config_reload(s->d);
			dmn_notify("READY=1");
			continue;
		}
		pthread_mutex_lock(&s->lock);
		int n = ++s->received;
		/* Log before main can run (and exit) on the broadcast. */
		if (n == 1)
			dmn_info("%s received: shutting down",
				 sigabbrev_np(sig) ? sigabbrev_np(sig) : "signal");
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->lock);
		if (n > 1) {
			dmn_warn("second signal: exiting at once");
			_exit(1);
		}
	}
	return NULL;
}

/* ---- main ----------------------------------------------------------------- */

static int dmn_open_pool(struct dmn *d)
{
	struct cp_pool_opts o;
	cp_pool_opts_init(&o);
	o.host_id = d->cfg.host_id;
	o.pool_uuid = d->cfg.pool;
	o.file_roots = d->cfg.file_roots[0]
			   ? (const char *const *)d->cfg.file_roots
			   : NULL;
	o.lvm_devices = d->cfg.lvm_devices[0]
			    ? (const char *const *)d->cfg.lvm_devices
			    : NULL;
	o.lvm_system_dir = d->cfg.lvm_system_dir;
	o.use_sanlock = d->cfg.sanlock;
	o.disk_uid = d->cfg.disk_uid;
	o.disk_gid = d->cfg.disk_gid;
	int r = cp_pool_open(&o, &d->pool);
	if (r < 0) {
		dmn_err("cannot open the pool: %s", cp_error_msg(r));
		return r;
	}
	struct cp_domain_status *st;
	size_t n;
	if (cp_pool_domains(d->pool, &st, &n) == 0) {
		dmn_info("pool open: %zu domain(s)", n);
		for (size_t i = 0; i < n; i++)
			dmn_info("domain %s (%s, %s%s)", st[i].md.dom_uuid,
				 st[i].md.name,
				 st[i].md.type == CP_DOMAIN_TYPE_BLOCK ? "block"
								       : "file",
				 st[i].md.master ? ", master" : "");
		free(st);
	}
	return 0;
}

/* mkdir -p dir (0755). */
static void dmn_mkdirs(const char *dir)
{
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		mkdir(buf, 0755);
		*p = '/';
	}
	mkdir(buf, 0755);
}

/* One daemon per host id: an OFD lock on run_dir/host-<id>.lock, held
 * until the process ends (kill -9 included).  A second daemon stops here,
 * before it binds, opens the pool or joins anything.  The file holds the
 * holder's pid, then the lockspaces it joins (monitor.c): what it held
 * before is kept in d->ls_prev for dmn_lockspaces_claim(). */
static int dmn_lock_host(struct dmn *d)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/host-%" PRIu64 ".lock",
		 d->cfg.run_dir, d->cfg.host_id);
	dmn_mkdirs(d->cfg.run_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		dmn_err("cannot open the lock file %s: %s", path,
			strerror(errno));
		return -1;
	}
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	char prev[8192];
	if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		int e = errno;
		ssize_t n = pread(fd, prev, 31, 0);
		prev[n > 0 ? n : 0] = 0;
		prev[strcspn(prev, "\n")] = 0;
		if (e == EAGAIN || e == EACCES)
			dmn_err("another cowpoold (pid %s) runs with host id "
				"%" PRIu64 " (lock file %s): refusing to start",
				prev[0] ? prev : "?", d->cfg.host_id, path);
		else
			dmn_err("cannot lock %s: %s", path, strerror(e));
		close(fd);
		return -1;
	}
	ssize_t n = pread(fd, prev, sizeof(prev) - 1, 0);
	prev[n > 0 ? n : 0] = 0;
	d->ls_prev = strdup(prev);
	d->lock_fd = fd;
	char pid[32];
	int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len)
		dmn_warn("cannot write %s: %s", path, strerror(errno));
	return 0;
}

/* After cp_pool_close(): nothing of this host may stay joined (a joined
 * lockspace keeps the file system busy: it cannot be unmounted).  The
 * sanlock daemon releases the leases of a closed client asynchronously, so
 * a leave right after the close may be refused (-EBUSY, "processes of
 * this host still hold leases"): it is retried for a while. */
#define DMN_LEAVE_TRIES 200 /* x 50 ms */
static void dmn_leave_lockspaces(struct dmn *d, const struct dmn_ls *ls,
				 size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct cp_lockspace_opts o;
		dmn_ls_opts(&ls[i], &o);
		int r = 0;
		for (int k = 0; k < DMN_LEAVE_TRIES; k++) {
			int st = cp_lockspace_status(&o, d->cfg.host_id);
			if (st == CP_LOCKSPACE_NOT_JOINED || st < 0) {
				r = st < 0 ? st : 0;
				break;
			}
			cp_clear_error();
			r = st == CP_LOCKSPACE_BUSY
				? -EBUSY
				: cp_lockspace_leave(&o, d->cfg.host_id);
			if (r == 0) {
				dmn_info("lockspace %s left", ls[i].name);
				break;
			}
			if (r != -EBUSY)
				break;
			struct timespec ts = {0, 50 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		if (r < 0)
			dmn_err("lockspace %s is still joined after the stop: "
				"%s", ls[i].name, cp_error_msg(r));
	}
	cp_clear_error();
}

static int dmn_start_thread(pthread_t *t, void *(*fn)(void *), void *arg,
			    const char *what)
{
	int r = pthread_create(t, NULL, fn, arg);
	if (r)
		dmn_err("cannot start the %s thread: %s", what, strerror(r));
	return -r;
}

int main(int argc, char **argv)
{
	static struct dmn dmn;
	struct dmn *d = &dmn;
	int r = dmn_config_load(&d->cfg, argc, argv);
	if (r)
		return r > 0 ? 0 : 2;
	d->argc = argc;
	d->argv = argv;
	d->lock_fd = -1;
	pthread_mutex_init(&d->lim_lock, NULL);
	dmn_log_set_level(d->cfg.lim.log_level);
	if (d->cfg.log_file && (r = dmn_log_open(d->cfg.log_file)) < 0) {
		fprintf(stderr, "cowpoold: log_file %s: %s\n", d->cfg.log_file,
			strerror(-r));
		return 2;
	}
	/* Big buffers (a 1 MiB batch, its answer) are mmap()ed and go back
	 * to the system when freed; few arenas keep the heap compact. */
	mallopt(M_MMAP_THRESHOLD, 256 * 1024);
	mallopt(M_ARENA_MAX, 4);

	/* Every thread inherits this mask; the signal thread takes them. */
	struct dmn_signals sigs = {.lock = PTHREAD_MUTEX_INITIALIZER,
				   .cond = PTHREAD_COND_INITIALIZER};
	sigemptyset(&sigs.set);
	sigaddset(&sigs.set, SIGTERM);
	sigaddset(&sigs.set, SIGINT);
	sigaddset(&sigs.set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs.set, NULL);
	signal(SIGPIPE, SIG_IGN);

	sigs.d = d;
	pthread_mutex_init(&d->lock, NULL);
	pthread_mutex_init(&d->conn_lock, NULL);
	pthread_cond_init(&d->conn_cond, NULL);
	dmn_tasks_init(&d->tasks);
	d->listen_fd = -1;
	if (pipe2(d->wake_fd, O_CLOEXEC) < 0 ||
	    pipe2(d->kick_fd, O_CLOEXEC | O_NONBLOCK) < 0) {
		dmn_err("pipe: %s", strerror(errno));
		return 1;
	}

	dmn_info("cowpoold %s starting: host %" PRIu64 ", socket %s, "
		 "sanlock %s", CP_VERSION, d->cfg.host_id, d->cfg.socket,
		 d->cfg.sanlock ? "on" : "off");
	pthread_t sig_thread;
	if (dmn_start_thread(&sig_thread, signal_thread, &sigs, "signal") < 0)
		return 1;
	pthread_detach(sig_thread);

	if (dmn_lock_host(d) < 0)
		return 1;
	int sr = dmn_server_listen(d);
	if (sr < 0) {
		dmn_err("%s", cp_error_msg(sr));
		return 1;
	}
	if (dmn_open_pool(d) < 0) {
		close(d->listen_fd);
		unlink(d->cfg.socket);
		return 1;
	}
	if (dmn_lockspaces_claim(d) < 0) {
		/* nothing joined: cp_pool_close() leaves nothing */
		cp_pool_close(d->pool);
		close(d->listen_fd);
		unlink(d->cfg.socket);
		return 1;
	}
	sr = dmn_exports_start(d);
	if (sr < 0) {
		dmn_err("%s", cp_error_msg(sr));
		cp_pool_close(d->pool);
		close(d->listen_fd);
		unlink(d->cfg.socket);
		return 1;
	}
	if (d->cfg.sanlock) {
		d->join_state = DMN_JOIN_RUNNING;
		if (dmn_start_thread(&d->join_thread, dmn_join_thread, d,
				     "join") == 0)
			d->join_started = true;
	}
	if (dmn_start_thread(&d->monitor_thread, dmn_monitor_thread, d,
			     "monitor") == 0)
		d->monitor_started = true;
	sr = dmn_server_start(d);
	if (sr < 0) {
		dmn_err("%s", cp_error_msg(sr));
		atomic_store(&d->stopping, true);
	} else {
		dmn_info("listening on %s", d->cfg.socket);
		if (d->cfg.ready_fd >= 0) {
			ssize_t w = write(d->cfg.ready_fd, "ready\n", 6);
			if (w != 6)
				dmn_warn("--ready-fd %d: %s", d->cfg.ready_fd,
					 strerror(errno));
			close(d->cfg.ready_fd);
		}
		dmn_notify("READY=1");
		pthread_mutex_lock(&sigs.lock);
		while (!sigs.received)
			pthread_cond_wait(&sigs.cond, &sigs.lock);
		pthread_mutex_unlock(&sigs.lock);
	}

	/* shutdown */
	dmn_notify("STOPPING=1");
	atomic_store(&d->stopping, true);
	ssize_t w = write(d->wake_fd[1], "x", 1);
	(void)w;
	dmn_server_stop(d);
	dmn_tasks_stop(d);
	if (d->monitor_started)
		pthread_join(d->monitor_thread, NULL);
	if (d->join_started) {
		pthread_mutex_lock(&d->lock);
		bool joining = d->join_state == DMN_JOIN_RUNNING;
		pthread_mutex_unlock(&d->lock);
		if (joining)
			dmn_info("waiting for the lockspace join to end");
		pthread_join(d->join_thread, NULL);
	}
	dmn_exports_stop(d); /* clients, images, leases: before the pool */
	struct dmn_ls *ls;
	size_t nls = dmn_lockspaces(d, &ls);
	cp_pool_close(d->pool);
	dmn_leave_lockspaces(d, ls, nls);
	free(ls);
	dmn_tasks_destroy(&d->tasks);
	dmn_info("stopped");
	dmn_config_free(&d->cfg);
	free(d->ls_prev);
	return 0;
}
