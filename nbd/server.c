/* nbd/server.c - server object, export table and accept loop. */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "nbd_int.h"

void cp_nbd_server_opts_init(struct cp_nbd_server_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
	opts->handshake_timeout_ms = 10000;
	opts->max_inflight = 64;
}

void cp_nbd_export_opts_init(struct cp_nbd_export_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
	opts->name = "";
	opts->multi_conn = true;
}

CP_EXPORT int cp_nbd_server_create(const struct cp_nbd_server_opts *opts,
				   cp_nbd_server **out)
{
	CP_API_ENTER();
	cp_nbd_server *s;

	*out = NULL;
	if (opts && opts->size != sizeof(*opts))
		return cp_error(-EINVAL, "nbd: server options of unknown size %zu",
				opts->size);
	s = calloc(1, sizeof(*s));
	if (!s)
		return cp_error(-ENOMEM, "nbd: out of memory");
	if (opts)
		s->opts = *opts;
	else
		cp_nbd_server_opts_init(&s->opts);
	if (s->opts.max_inflight == 0)
		s->opts.max_inflight = 64;
	if (s->opts.max_inflight > 1024)
		s->opts.max_inflight = 1024;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->wake_fd < 0 || s->done_fd < 0) {
		int err = -errno;
		if (s->wake_fd >= 0)
			close(s->wake_fd);
		if (s->done_fd >= 0)
			close(s->done_fd);
		free(s);
		return cp_error(err, "nbd: eventfd: %s", strerror(-err));
	}
	s->opts.tls = NULL; /* not kept: the strings may go away */
	if (opts && opts->tls) {
		int r = nbd_tls_create(opts->tls, &s->tls);
		if (r < 0) {
			close(s->wake_fd);
			close(s->done_fd);
			free(s);
			return r;
		}
	}
	*out = s;
	return 0;
}

CP_EXPORT int cp_nbd_server_done_fd(const cp_nbd_server *s)
{
	CP_API_ENTER();
	return s->done_fd;
}

static void server_kick(int fd)
{
	uint64_t one = 1;
	ssize_t r = write(fd, &one, sizeof(one));
	(void)r;
}

static int server_add_listener(cp_nbd_server *s, int fd, const char *path)
{
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	if (s->nlfds == CP_ARRAY_SIZE(s->lfds)) {
		ret = cp_error(-EMFILE, "nbd: too many listeners");
	} else {
		s->lfds[s->nlfds] = fd;
		s->unix_paths[s->nlfds] = path ? strdup(path) : NULL;
		s->nlfds++;
	}
	pthread_mutex_unlock(&s->lock);
	if (ret < 0)
		close(fd);
	else
		server_kick(s->wake_fd);
	return ret;
}

CP_EXPORT int cp_nbd_server_listen_unix(cp_nbd_server *s, const char *path)
{
	CP_API_ENTER();
	struct sockaddr_un sa;
	struct stat st;
	int fd, err;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path))
		return cp_error(-ENAMETOOLONG, "%s: socket path too long", path);
	memcpy(sa.sun_path, path, strlen(path));
	/* Replace a stale socket file (qemu-nbd does too), nothing else. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return cp_error(-errno, "%s: socket: %s", path, strerror(errno));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 128) < 0) {
		err = -errno;
		close(fd);
		return cp_error(err, "%s: cannot listen: %s", path,
				strerror(-err));
	}
	return server_add_listener(s, fd, path);
}

CP_EXPORT int cp_nbd_server_listen_tcp(cp_nbd_server *s, const char *addr,
				       const char *port)
{
	CP_API_ENTER();
	struct addrinfo hints, *res, *ai;
	int fd = -1, err = 0, one = 1;
	int r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	r = getaddrinfo(addr, port ? port : "10809", &hints, &res);
	if (r != 0)
		return cp_error(-EINVAL, "%s:%s: %s", addr ? addr : "*",
				port ? port : "10809", gai_strerror(r));
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, 128) == 0)
			break;
		err = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return cp_error(err ? err : -EADDRNOTAVAIL,
				"%s:%s: cannot listen: %s", addr ? addr : "*",
				port ? port : "10809", strerror(-err));
	return server_add_listener(s, fd, NULL);
}

/* --- exports --------------------------------------------------------------- */

CP_EXPORT int cp_nbd_server_add_export(cp_nbd_server *s,
				       const struct cp_nbd_export_opts *o)
{
	CP_API_ENTER();
	struct nbd_export *e, **pp;
	int ret = 0;

	if (!o || o->size != sizeof(*o))
		return cp_error(-EINVAL, "nbd: export options of unknown size");
	if (!o->img || !o->name)
		return cp_error(-EINVAL, "nbd: export needs a name and an image");
	if (strlen(o->name) > NBD_MAX_NAME)
		return cp_error(-EINVAL, "nbd: export name longer than %d bytes",
				NBD_MAX_NAME);
	if (o->description && strlen(o->description) > NBD_MAX_NAME)
		return cp_error(-EINVAL,
				"nbd: export description longer than %d bytes",
				NBD_MAX_NAME);
	e = calloc(1, sizeof(*e));
	if (!e)
		return cp_error(-ENOMEM, "nbd: out of memory");
	e->name = strdup(o->name);
	e->description = o->description ? strdup(o->description) : NULL;
	if (!e->name || (o->description && !e->description)) {
		free(e->name);
		free(e->description);
		free(e);
		return cp_error(-ENOMEM, "nbd: out of memory");
	}
	e->img = o->img;
	e->size = cp_image_size(o->img);
	e->readonly = o->readonly || cp_image_readonly(o->img);
	e->unmap = o->unmap;
	e->detect_zeroes = o->detect_zeroes;
	e->allocation_depth = o->allocation_depth;
	e->multi_conn = o->multi_conn;
	e->release = o->release;
	e->opaque = o->opaque;
	e->refs = 1;

	pthread_mutex_lock(&s->lock);
	for (pp = &s->exports; *pp; pp = &(*pp)->next) {
		int c = strcmp((*pp)->name, e->name);
		if (c == 0) {
			ret = cp_error(-EEXIST, "nbd: export '%s' exists",
				       e->name);
			break;
		}
		if (c > 0)
			break;
	}
	if (ret == 0) {
		e->next = *pp;
		*pp = e;
	}
	pthread_mutex_unlock(&s->lock);
	if (ret < 0) {
		e->release = NULL; /* the caller keeps the image */
		nbd_export_free(e);
	}
	return ret;
}

CP_EXPORT int cp_nbd_server_remove_export(cp_nbd_server *s, const char *name,
					  bool force)
{
	CP_API_ENTER();
	struct nbd_export *e, **pp;
	struct nbd_conn *c;
	bool last = false;
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	for (pp = &s->exports; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->name, name) == 0)
			break;
	e = *pp;
	if (!e) {
		ret = cp_error(-ENOENT, "nbd: no export '%s'", name);
	} else if (e->clients && !force) {
		ret = cp_error(-EBUSY, "nbd: export '%s' has %u client(s)",
			       name, e->clients);
	} else {
		*pp = e->next;
		e->next = NULL;
		e->removed = true;
		for (c = s->conns; c; c = c->next)
			if (c->exp == e)
				shutdown(c->fd, SHUT_RDWR);
		last = --e->refs == 0;
	}
	pthread_mutex_unlock(&s->lock);
	if (last)
		nbd_export_free(e);
	return ret;
}

CP_EXPORT int cp_nbd_server_list_exports(cp_nbd_server *s,
					 struct cp_nbd_export_stats *out,
					 size_t max)
{
	CP_API_ENTER();
	struct nbd_export *e;
	int n = 0;

	pthread_mutex_lock(&s->lock);
	for (e = s->exports; e; e = e->next, n++) {
		struct cp_nbd_export_stats *st;
		if ((size_t)n >= max)
			continue;
		st = &out[n];
		memset(st, 0, sizeof(*st));
		snprintf(st->name, sizeof(st->name), "%s", e->name);
		st->readonly = e->readonly;
		st->clients = e->clients;
		st->size = e->size;
		st->bytes_read = atomic_load(&e->bytes_read);
		st->bytes_written = atomic_load(&e->bytes_written);
		st->ops = atomic_load(&e->ops);
		st->errors = atomic_load(&e->errors);
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}

CP_EXPORT unsigned cp_nbd_server_clients(cp_nbd_server *s)
{
	unsigned n;

	pthread_mutex_lock(&s->lock);
	n = s->nconns;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* --- connections and the accept loop ---------------------------------------- */

static bool server_full_locked(cp_nbd_server *s)
{
	return s->opts.max_clients && s->nconns >= s->opts.max_clients;
}

/* Count a new client; false if the server cannot take it. */
static bool server_conn_enter(cp_nbd_server *s)
{
	bool ok;

	pthread_mutex_lock(&s->lock);
	ok = !s->stopping && !server_full_locked(s);
	if (ok) {
		s->nconns++;
		s->served_one = true;
	}
	pthread_mutex_unlock(&s->lock);
	return ok;
}

static void server_conn_leave(cp_nbd_server *s)
{
	bool done;

	pthread_mutex_lock(&s->lock);
	s->nconns--;
	done = s->opts.oneshot && s->served_one && s->nconns == 0;
	if (done)
		s->stopping = true;
	pthread_cond_broadcast(&s->cond);
	/* Kick under the lock: once it is dropped, destroy may free s. */
	server_kick(s->wake_fd);
	if (done)
		server_kick(s->done_fd);
	pthread_mutex_unlock(&s->lock);
}

CP_EXPORT int cp_nbd_server_serve_fd(cp_nbd_server *s, int fd)
{
	CP_API_ENTER();
	if (!server_conn_enter(s)) {
		close(fd);
		return cp_error(-EBUSY, "nbd: server full or stopping");
	}
	nbd_conn_run(s, fd);
	server_conn_leave(s);
	return 0;
}

struct conn_start {
	cp_nbd_server *s;
	int fd;
};

static void *conn_thread(void *arg)
{
	struct conn_start st = *(struct conn_start *)arg;

	free(arg);
	nbd_conn_run(st.s, st.fd);
	server_conn_leave(st.s);
	return NULL;
}

static void server_spawn(cp_nbd_server *s, int fd)
{
	struct conn_start *st;

	if (!server_conn_enter(s)) {
		close(fd);
		return;
	}
	st = malloc(sizeof(*st));
	if (!st)
		goto fail;
	st->s = s;
	st->fd = fd;
	if (cp_thread_start_detached(conn_thread, st, NBD_THREAD_STACK) < 0) {
		free(st);
		goto fail;
	}
	return;
fail:
	close(fd);
	server_conn_leave(s);
}

static void *accept_thread(void *arg)
{
	cp_nbd_server *s = arg;

	bool backoff = false;

	for (;;) {
		struct pollfd pfd[CP_ARRAY_SIZE(s->lfds) + 1];
		unsigned n = 0, i;
		bool full, stop;
		uint64_t v;

		pthread_mutex_lock(&s->lock);
		stop = s->stopping;
		/* Out of descriptors or memory: stop polling the listeners for
		 * a moment instead of spinning on a failing accept(). */
		full = server_full_locked(s) || backoff;
		if (!full)
			for (i = 0; i < s->nlfds; i++) {
				pfd[n].fd = s->lfds[i];
				pfd[n].events = POLLIN;
				n++;
			}
		pthread_mutex_unlock(&s->lock);
		if (stop)
			break;
		pfd[n].fd = s->wake_fd;
		pfd[n].events = POLLIN;
		if (poll(pfd, n + 1, backoff ? 100 : -1) < 0)
			continue;
		backoff = false;
		if (pfd[n].revents & POLLIN) {
			ssize_t r = read(s->wake_fd, &v, sizeof(v));
			(void)r;
		}
		for (i = 0; i < n; i++) {
			int fd;
			if (!(pfd[i].revents & POLLIN))
				continue;
			fd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0) {
				if (errno == EMFILE || errno == ENFILE ||
				    errno == ENOBUFS || errno == ENOMEM)
					backoff = true;
				continue;
			}
			server_spawn(s, fd);
		}
	}
	return NULL;
}

CP_EXPORT int cp_nbd_server_start(cp_nbd_server *s)
{
	CP_API_ENTER();
	int r;

	if (s->started)
		return 0;
	r = pthread_create(&s->accept_thread, NULL, accept_thread, s);
	if (r)
		return cp_error(-r, "nbd: cannot start the accept thread: %s",
				strerror(r));
	s->started = true;
	return 0;
}

CP_EXPORT void cp_nbd_server_destroy(cp_nbd_server *s)
{
	struct nbd_export *e;
	struct nbd_conn *c;
	unsigned i;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_mutex_unlock(&s->lock);
	server_kick(s->wake_fd);
	if (s->started)
		pthread_join(s->accept_thread, NULL);
	pthread_mutex_lock(&s->lock);
	for (c = s->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	while (s->nconns)
		pthread_cond_wait(&s->cond, &s->lock);
	e = s->exports;
	s->exports = NULL;
	pthread_mutex_unlock(&s->lock);
	while (e) {
		struct nbd_export *next = e->next;
		e->removed = true;
		nbd_export_put(s, e);
		e = next;
	}
	for (i = 0; i < s->nlfds; i++) {
		close(s->lfds[i]);
		if (s->unix_paths[i]) {
			unlink(s->unix_paths[i]);
			free(s->unix_paths[i]);
		}
	}
	close(s->wake_fd);
	close(s->done_fd);
	nbd_tls_destroy(s->tls);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}
