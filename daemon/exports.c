/* daemon/exports.c - volumes served over NBD: cowpoold's one cp_nbd_server
 * (nbd/nbd.h) on a unix socket next to the API socket, and the table of
 * exports behind volume.export, volume.unexport and export.list.
 *
 * An export is a volume chain opened through its domain
 * (cp_sd_open_image(), O_DIRECT) and handed to the server under a name
 * (default: the volume UUID).  A writable export first prepares the volume
 * for writing (cp_vol_prepare(rw): the volume lease, so no other host can
 * write the leaf); unexport closes the chain and tears the volume down
 * (the lease released).  One export per volume per host: exporting it
 * again with the same mode and name answers the existing export, anything
 * else is -EEXIST naming it.
 *
 * Locks: `op` serialises export, unexport, lease loss and stop, and is held
 * across the library calls they make (prepare, open, close, teardown);
 * `lock` protects the list and each entry's flags and is a leaf.  The
 * server's release callback (any thread) only sets `released` under
 * `lock` and broadcasts `cond`: the image is closed by whoever removed
 * the export, once the server let go of it.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cowpoold.h"
#include "nbd.h"

#define EXPORT_NAME_MAX 255

struct dmn_export {
	struct dmn_export *next;
	struct dmn_exports *owner;
	char name[EXPORT_NAME_MAX + 1];
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], vol[DMN_UUID_BUF];
	bool rw;
	bool ready;                    /* added to the server */
	bool released;                 /* the server let go of the image */
	uint64_t size;
	int64_t ctime;
	struct cp_sd_chain chain;
};

struct dmn_exports {
	pthread_mutex_t op;            /* export/unexport/lease loss/stop */
	pthread_mutex_t lock;          /* head, entry flags (leaf) */
	pthread_cond_t cond;           /* released */
	cp_nbd_server *srv;
	char socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct dmn_export *head;
	bool stopped;
};

/* ---- start and stop -------------------------------------------------------- */

int dmn_exports_start(struct dmn *d)
{
	const char *path = d->cfg.nbd_socket;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char abs[sizeof(sa.sun_path)];
	int r;

	if (path[0] != '/') {
		char cwd[4096];
		if (!getcwd(cwd, sizeof(cwd)))
			return cp_error(-errno, "nbd_socket %s: getcwd: %s",
					path, strerror(errno));
		if ((size_t)snprintf(abs, sizeof(abs), "%s/%s", cwd, path) >=
		    sizeof(abs))
			return cp_error(-ENAMETOOLONG, "nbd_socket %s/%s is "
					"longer than %zu bytes", cwd, path,
					sizeof(abs) - 1);
	} else if ((size_t)snprintf(abs, sizeof(abs), "%s", path) >=
		   sizeof(abs)) {
		return cp_error(-ENAMETOOLONG, "nbd_socket %s is longer than "
				"%zu bytes", path, sizeof(abs) - 1);
	}
	/* A live server there (another daemon) is an error; the library
	 * would replace its socket. */
	struct stat st;
	if (lstat(abs, &st) == 0 && S_ISSOCK(st.st_mode)) {
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		strcpy(sa.sun_path, abs);
		if (probe >= 0 &&
		    connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			return cp_error(-EADDRINUSE, "another server is "
					"listening on the NBD socket %s (set "
					"nbd_socket)", abs);
		}
		if (probe >= 0)
			close(probe);
	}

	struct dmn_exports *x = calloc(1, sizeof(*x));
	if (!x)
		return cp_error(-ENOMEM, "out of memory");
	pthread_mutex_init(&x->op, NULL);
	pthread_mutex_init(&x->lock, NULL);
	pthread_cond_init(&x->cond, NULL);
	strcpy(x->socket, abs);
	struct cp_nbd_server_opts o;
	cp_nbd_server_opts_init(&o);
	if ((r = cp_nbd_server_create(&o, &x->srv)) < 0)
		goto fail;
	if ((r = cp_nbd_server_listen_unix(x->srv, x->socket)) < 0)
		goto fail;
	chmod(x->socket, 0660); /* as the API socket */
	if ((r = cp_nbd_server_start(x->srv)) < 0)
		goto fail;
	d->exports = x;
	dmn_info("NBD exports on %s", x->socket);
	return 0;
fail:
	cp_nbd_server_destroy(x->srv);
	pthread_mutex_destroy(&x->op);
	pthread_mutex_destroy(&x->lock);
	pthread_cond_destroy(&x->cond);
	free(x);
	return r;
}

/* Close the chain and, for a writable export, tear the volume down (the
 * lease released; after a lease loss only forgotten by the pool, which
 * fails to release it: logged, not an error).  The server no longer uses
 * the image. */
static void export_end(struct dmn *d, struct dmn_export *e, bool lost)
{
	int r = cp_sd_close_image(&e->chain);
	if (r < 0)
		dmn_err("export %s: closing volume %s: %s", e->name, e->vol,
			cp_error_msg(r));
	if (e->rw) {
		r = cp_vol_teardown(d->pool, e->dom, e->img, e->vol);
		if (r < 0)
			dmn_log(lost ? DMN_LOG_INFO : DMN_LOG_ERROR,
				"export %s: releasing the lease of volume %s: "
				"%s", e->name, e->vol, cp_error_msg(r));
	}
}

static void list_unlink(struct dmn_exports *x, struct dmn_export *e)
{
	pthread_mutex_lock(&x->lock);
	for (struct dmn_export **pp = &x->head; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	pthread_mutex_unlock(&x->lock);
}

void dmn_exports_stop(struct dmn *d)
{
	struct dmn_exports *x = d->exports;
	if (!x)
		return;
	pthread_mutex_lock(&x->op);
	x->stopped = true;
	unsigned clients = cp_nbd_server_clients(x->srv);
	if (clients)
		dmn_info("disconnecting %u NBD client(s)", clients);
	/* Disconnects every client, waits for their I/O, releases every
	 * export. */
	cp_nbd_server_destroy(x->srv);
	x->srv = NULL;
	for (;;) {
		pthread_mutex_lock(&x->lock);
		struct dmn_export *e = x->head;
		if (e)
			x->head = e->next;
		pthread_mutex_unlock(&x->lock);
		if (!e)
			break;
		export_end(d, e, false);
		dmn_info("export %s (volume %s/%s/%s) ended", e->name, e->dom,
			 e->img, e->vol);
		free(e);
	}
	pthread_mutex_unlock(&x->op);
	pthread_mutex_destroy(&x->op);
	pthread_mutex_destroy(&x->lock);
	pthread_cond_destroy(&x->cond);
	free(x);
	d->exports = NULL;
}

/* ---- the table -------------------------------------------------------------- */

/* The server's release callback (any thread): the image is unused. */
static void release_cb(void *opaque, cp_image *img)
{
	struct dmn_export *e = opaque;
	struct dmn_exports *x = e->owner;
	(void)img;
	pthread_mutex_lock(&x->lock);
	e->released = true;
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
}

static void wait_released(struct dmn_exports *x, struct dmn_export *e)
{
	pthread_mutex_lock(&x->lock);
	while (!e->released)
		pthread_cond_wait(&x->cond, &x->lock);
	pthread_mutex_unlock(&x->lock);
}

/* Names go into URIs unescaped: letters, digits and ._- only. */
static int check_name(const char *name)
{
	size_t n = strlen(name);
	if (!n || n > EXPORT_NAME_MAX)
		return cp_error(-EINVAL, "export name '%.64s' must be 1..%d "
				"bytes", name, EXPORT_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		      ch == '-'))
			return cp_error(-EINVAL, "export name '%.64s': only "
					"letters, digits, '.', '_' and '-' "
					"are allowed", name);
	}
	return 0;
}

/* Under x->lock. */
static struct dmn_export *find_name(struct dmn_exports *x, const char *name)
{
	for (struct dmn_export *e = x->head; e; e = e->next)
		if (!strcmp(e->name, name))
			return e;
	return NULL;
}

/* Under x->lock.  img NULL: any image. */
static struct dmn_export *find_vol(struct dmn_exports *x, const char *dom,
				   const char *img, const char *vol)
{
	for (struct dmn_export *e = x->head; e; e = e->next)
		if (!strcmp(e->dom, dom) && (!img || !strcmp(e->img, img)) &&
		    !strcmp(e->vol, vol))
			return e;
	return NULL;
}

static void write_export(struct dmn_exports *x, struct cp_jsonw *w,
			 const struct dmn_export *e,
			 const struct cp_nbd_export_stats *st)
{
	char uri[64 + EXPORT_NAME_MAX + sizeof(x->socket)];
	snprintf(uri, sizeof(uri), "nbd+unix:///%s?socket=%s", e->name,
		 x->socket);
	cp_jsonw_obj_begin(w, NULL);
	cp_jsonw_str(w, "name", e->name);
	cp_jsonw_str(w, "uri", uri);
	cp_jsonw_str(w, "socket", x->socket);
	cp_jsonw_str(w, "domain", e->dom);
	cp_jsonw_str(w, "image", e->img);
	cp_jsonw_str(w, "volume", e->vol);
	cp_jsonw_bool(w, "rw", e->rw);
	cp_jsonw_u64(w, "size", e->size);
	cp_jsonw_i64(w, "ctime", e->ctime);
	cp_jsonw_u64(w, "clients", st ? st->clients : 0);
	cp_jsonw_u64(w, "bytes_read", st ? st->bytes_read : 0);
	cp_jsonw_u64(w, "bytes_written", st ? st->bytes_written : 0);
	cp_jsonw_u64(w, "ops", st ? st->ops : 0);
	cp_jsonw_u64(w, "errors", st ? st->errors : 0);
	cp_jsonw_obj_end(w);
}

/* The server's stats of every export (free()); *n set. */
static struct cp_nbd_export_stats *all_stats(struct dmn_exports *x, int *n)
{
	struct cp_nbd_export_stats *st = NULL;
	int cap = 0;
	for (;;) {
		*n = cp_nbd_server_list_exports(x->srv, st, (size_t)cap);
		if (*n <= cap)
			return st;
		free(st);
		cap = *n + 4;
		st = calloc((size_t)cap, sizeof(*st));
		if (!st) {
			*n = 0;
			return NULL;
		}
	}
}

static const struct cp_nbd_export_stats *
stats_of(const struct cp_nbd_export_stats *st, int n, const char *name)
{
	for (int i = 0; st && i < n; i++)
		if (!strcmp(st[i].name, name))
			return &st[i];
	return NULL;
}

/* Take x->op for a change of the exports: 0, or -ESHUTDOWN (x->op not
 * held) once they are being stopped. */
static int op_lock(struct dmn_exports *x)
{
	pthread_mutex_lock(&x->op);
	if (!x->stopped)
		return 0;
	pthread_mutex_unlock(&x->op);
	return cp_error(-ESHUTDOWN, "cowpoold is shutting down: no export "
			"can change");
}

int dmn_export_add(struct dmn *d, const struct dmn_export_req *q,
		   struct cp_jsonw *w)
{
	struct dmn_exports *x = d->exports;
	const char *name = q->name && q->name[0] ? q->name : q->vol;
	struct dmn_export *e, *old;
	cp_sd *sd;
	int r;

	if ((r = check_name(name)) < 0 || (r = op_lock(x)) < 0)
		return r;
	pthread_mutex_lock(&x->lock);
	old = find_vol(x, q->dom, NULL, q->vol);
	if (!old)
		old = find_name(x, name);
	pthread_mutex_unlock(&x->lock);
	if (old) {
		bool same = !strcmp(old->vol, q->vol) &&
			    !strcmp(old->img, q->img) && old->rw == q->rw &&
			    (!q->name || !q->name[0] ||
			     !strcmp(old->name, q->name));
		if (same) {
			/* Idempotent: the export as it is. */
			int n;
			struct cp_nbd_export_stats *st = all_stats(x, &n);
			write_export(x, w, old, stats_of(st, n, old->name));
			free(st);
			r = 0;
		} else if (!strcmp(old->vol, q->vol)) {
			r = cp_error(-EEXIST, "volume %s is already exported "
				     "%s as '%s' on this host (unexport it "
				     "first)", q->vol,
				     old->rw ? "read-write" : "read-only",
				     old->name);
		} else {
			r = cp_error(-EEXIST, "export name '%s' is taken by "
				     "volume %s/%s/%s", name, old->dom,
				     old->img, old->vol);
		}
		goto out;
	}

	e = calloc(1, sizeof(*e));
	if (!e) {
		r = cp_error(-ENOMEM, "out of memory");
		goto out;
	}
	e->owner = x;
	snprintf(e->name, sizeof(e->name), "%s", name);
	memcpy(e->dom, q->dom, sizeof(e->dom));
	memcpy(e->img, q->img, sizeof(e->img));
	memcpy(e->vol, q->vol, sizeof(e->vol));
	e->rw = q->rw;
	e->ctime = time(NULL);
	/* In the table from now on: structural calls see it (busy). */
	pthread_mutex_lock(&x->lock);
	e->next = x->head;
	x->head = e;
	pthread_mutex_unlock(&x->lock);

	r = cp_vol_prepare(d->pool, q->dom, q->img, q->vol, q->rw);
	if (r < 0)
		goto unlist;
	if ((r = cp_pool_domain(d->pool, q->dom, &sd)) < 0 ||
	    (r = cp_sd_open_image(sd, q->img, q->vol, q->rw, &e->chain)) < 0) {
		r = cp_error_prefix(r, "export volume %s", q->vol);
		goto teardown;
	}
	e->size = cp_image_size(e->chain.img);
	char desc[3 * DMN_UUID_BUF + 32];
	snprintf(desc, sizeof(desc), "cowpool volume %s/%s/%s", e->dom,
		 e->img, e->vol);
	struct cp_nbd_export_opts o;
	cp_nbd_export_opts_init(&o);
	o.name = e->name;
	o.description = desc;
	o.img = e->chain.img;
	o.readonly = !q->rw;
	o.allocation_depth = true;
	o.release = release_cb;
	o.opaque = e;
	if ((r = cp_nbd_server_add_export(x->srv, &o)) < 0)
		goto close;
	pthread_mutex_lock(&x->lock);
	e->ready = true;
	pthread_mutex_unlock(&x->lock);
	dmn_info("export %s: volume %s/%s/%s %s, %" PRIu64 " bytes", e->name,
		 e->dom, e->img, e->vol, e->rw ? "read-write" : "read-only",
		 e->size);
	write_export(x, w, e, NULL);
	r = 0;
	goto out;

close:
	{
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", cp_error_msg(r));
		cp_sd_close_image(&e->chain);
		cp_error(r, "%s", msg);
	}
teardown:
	if (q->rw) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", cp_error_msg(r));
		cp_vol_teardown(d->pool, q->dom, q->img, q->vol);
		cp_error(r, "%s", msg);
	}
unlist:
	list_unlink(x, e);
	free(e);
out:
	pthread_mutex_unlock(&x->op);
	return r;
}

/* Remove e from the server (force: disconnect its clients), wait until
 * the server let go of it, close and tear down, free.  Under x->op. */
static int export_remove(struct dmn *d, struct dmn_export *e, bool force,
			 bool lost, unsigned *clients)
{
	struct dmn_exports *x = d->exports;
	int n;
	struct cp_nbd_export_stats *st = all_stats(x, &n);
	const struct cp_nbd_export_stats *s = stats_of(st, n, e->name);
	*clients = s ? s->clients : 0;
	free(st);
	int r = cp_nbd_server_remove_export(x->srv, e->name, force);
	if (r == -EBUSY)
		return cp_error(r, "export %s (volume %s) has %u client(s) "
				"connected: disconnect them, or unexport with "
				"force", e->name, e->vol, *clients);
	if (r < 0)
		return r;
	wait_released(x, e);
	list_unlink(x, e);
	export_end(d, e, lost);
	return 0;
}

int dmn_export_remove(struct dmn *d, const char *dom, const char *img,
		      const char *vol, const char *name, bool force,
		      struct cp_jsonw *w)
{
	struct dmn_exports *x = d->exports;
	struct dmn_export *e;
	unsigned clients = 0;
	int r;

	if ((r = op_lock(x)) < 0)
		return r;
	pthread_mutex_lock(&x->lock);
	e = name ? find_name(x, name) : find_vol(x, dom, img, vol);
	pthread_mutex_unlock(&x->lock);
	if (!e) {
		r = name ? cp_error(-ENOENT, "no export named '%s' on this "
				    "host", name)
			 : cp_error(-ENOENT, "volume %s/%s/%s is not exported "
				    "on this host", dom, img, vol);
		goto out;
	}
	if ((r = export_remove(d, e, force, false, &clients)) < 0)
		goto out;
	dmn_info("export %s (volume %s/%s/%s) removed%s", e->name, e->dom,
		 e->img, e->vol,
		 clients ? " (its clients were disconnected)" : "");
	cp_jsonw_obj_begin(w, NULL);
	cp_jsonw_str(w, "name", e->name);
	cp_jsonw_str(w, "domain", e->dom);
	cp_jsonw_str(w, "image", e->img);
	cp_jsonw_str(w, "volume", e->vol);
	cp_jsonw_bool(w, "rw", e->rw);
	cp_jsonw_u64(w, "clients_disconnected", clients);
	cp_jsonw_obj_end(w);
	free(e);
out:
	pthread_mutex_unlock(&x->op);
	return r;
}

int dmn_export_list(struct dmn *d, struct cp_jsonw *w)
{
	struct dmn_exports *x = d->exports;
	int n;
	/* Not under op (an export acquiring a lease would hold it up): the
	 * server lives until dmn_exports_stop(), which runs after every API
	 * connection has ended. */
	struct cp_nbd_export_stats *st = all_stats(x, &n);
	cp_jsonw_arr_begin(w, NULL);
	pthread_mutex_lock(&x->lock);
	/* name order, as the server lists them */
	for (int i = 0; st && i < n; i++) {
		struct dmn_export *e = find_name(x, st[i].name);
		if (e && e->ready)
			write_export(x, w, e, &st[i]);
	}
	pthread_mutex_unlock(&x->lock);
	cp_jsonw_arr_end(w);
	free(st);
	return 0;
}

int dmn_export_busy(struct dmn *d, const char *dom, const char *img,
		    const char *vol, bool rw_only, const char *what)
{
	struct dmn_exports *x = d->exports;
	int r = 0;
	if (!x)
		return 0;
	pthread_mutex_lock(&x->lock);
	for (struct dmn_export *e = x->head; e; e = e->next) {
		if (strcmp(e->dom, dom) || (img && strcmp(e->img, img)) ||
		    (vol && strcmp(e->vol, vol)) || (rw_only && !e->rw))
			continue;
		r = cp_error(-EBUSY, "%s: volume %s/%s/%s is exported %s as "
			     "'%s' on host %" PRIu64 " (volume.unexport "
			     "first)", what, e->dom, e->img, e->vol,
			     e->rw ? "read-write" : "read-only", e->name,
			     d->cfg.host_id);
		break;
	}
	pthread_mutex_unlock(&x->lock);
	return r;
}

void dmn_exports_lease_lost(struct dmn *d)
{
	struct dmn_exports *x = d->exports;
	if (!x)
		return;
	pthread_mutex_lock(&x->op);
	while (!x->stopped) {
		struct dmn_export *e = NULL;
		pthread_mutex_lock(&x->lock);
		for (e = x->head; e && !(e->rw && e->ready); e = e->next)
			;
		pthread_mutex_unlock(&x->lock);
		if (!e)
			break;
		unsigned clients;
		/* logged before the clients see their connection end, so
		 * whoever watches them finds the reason already written */
		dmn_err("export %s (volume %s) ended: its volume lease is "
			"lost", e->name, e->vol);
		/* force: nothing can be busy */
		int r = export_remove(d, e, true, true, &clients);
		if (r < 0) {
			dmn_err("export %s: %s", e->name, cp_error_msg(r));
			break;
		}
		dmn_info("export %s: %u client(s) disconnected", e->name,
			 clients);
		free(e);
	}
	pthread_mutex_unlock(&x->op);
}
