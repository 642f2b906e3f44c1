/* daemon/main.c - cowpoold: start-up, signals and shutdown.
 *
 * Start-up: configuration (config.c), the socket bound (so a second
 * daemon fails early), cp_pool_open(), the NBD server (exports.c), then
 * the threads: join
 * (cp_pool_join once; the API answers meanwhile), monitor, accept.  Then
 * "ready\n" goes to --ready-fd.
 *
 * Shutdown (first SIGTERM/SIGINT): stop accepting, end connections, let
 * running tasks finish, end the NBD exports (clients disconnected, images
 * closed, volume leases released), cp_pool_close() (releases the leases,
 * leaves the lockspaces), remove the socket, exit 0.  A second signal exits at once
 * (status 1): sanlock releases this process's leases when it dies and the
 * next SPM recovers the journaled tasks.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cowpoold.h"

/* ---- signals -------------------------------------------------------------- */

struct dmn_signals {
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
	dmn_log_set_level(d->cfg.log_level);

	/* Every thread inherits this mask; the signal thread takes them. */
	struct dmn_signals sigs = {.lock = PTHREAD_MUTEX_INITIALIZER,
				   .cond = PTHREAD_COND_INITIALIZER};
	sigemptyset(&sigs.set);
	sigaddset(&sigs.set, SIGTERM);
	sigaddset(&sigs.set, SIGINT);
	sigaddset(&sigs.set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs.set, NULL);
	signal(SIGPIPE, SIG_IGN);

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

	cp_clear_error();
	if (dmn_server_listen(d) < 0) {
		dmn_err("%s", cp_last_error());
		return 1;
	}
	if (dmn_open_pool(d) < 0) {
		close(d->listen_fd);
		unlink(d->cfg.socket);
		return 1;
	}
	cp_clear_error();
	if (dmn_exports_start(d) < 0) {
		dmn_err("%s", cp_last_error());
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
	if (dmn_server_start(d) < 0) {
		dmn_err("%s", cp_last_error());
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
		pthread_mutex_lock(&sigs.lock);
		while (!sigs.received)
			pthread_cond_wait(&sigs.cond, &sigs.lock);
		pthread_mutex_unlock(&sigs.lock);
	}

	/* shutdown */
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
	cp_pool_close(d->pool);
	dmn_tasks_destroy(&d->tasks);
	dmn_info("stopped");
	dmn_config_free(&d->cfg);
	return 0;
}
