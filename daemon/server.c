/* daemon/server.c - the API socket: a unix stream socket, one thread per
 * connection, newline-delimited JSON-RPC 2.0.
 *
 * Who may call: the socket is created under umask 0177 (never wider than
 * 0600 before its final mode 0660 and group socket_group), and every
 * connection's peer (SO_PEERCRED, SO_PEERGROUPS) is checked against
 * allowed_uids / allowed_gids (root always) before anything is read: a
 * refused peer gets one EACCES error line, the connection is closed and a
 * line is logged.
 *
 * Limits (daemon/README.md): max_connections (one more gets an EBUSY
 * line and is closed), request_timeout to the first request and
 * idle_timeout between requests (then the connection is closed), at most
 * max_request bytes buffered per connection (the buffer grows on demand
 * and shrinks after a big request), at most max_answer bytes of one
 * answer (-32001 instead).  Big buffers are freed after use and the heap
 * trimmed, so RSS goes back after a spike.
 *
 * Framing: a request is one line (one JSON object, or a batch array) of at
 * most max_request bytes before its '\n'; the answer is one line.  A
 * connection's requests are answered in order; connections are
 * independent.  A longer line gets an -32600 error and the connection is
 * closed (the rest of the line cannot be resynchronised).  Lines of only
 * whitespace are skipped.  Text left without '\n' at EOF is answered as a
 * request.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <malloc.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cowpoold.h"

struct dmn_conn {
	struct dmn *d;
	int fd;
	unsigned id;
	struct dmn_peer peer;
	struct dmn_conn *next;
};

/* Buffers above this are freed after use (and the heap trimmed). */
#define CONN_KEEP_BUF (64u << 10)
/* Requests above CONN_KEEP_BUF answered at the same time, at most: the
 * parse tree and answer of a 1 MiB batch take several MiB, so forty
 * clients sending one each must not make forty of them at once. */
#define CONN_BIG_MAX 2
static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t big_cond = PTHREAD_COND_INITIALIZER;
static unsigned big_running;

/* ---- JSON-RPC envelope ---------------------------------------------------- */

static void rpc_error(struct cp_jsonw *w, const cp_json *id, int code,
		      const char *msg, const char *data_key,
		      const char *data_val, int app_errno)
{
	cp_jsonw_obj_begin(w, NULL);
	cp_jsonw_str(w, "jsonrpc", "2.0");
	cp_jsonw_obj_begin(w, "error");
	cp_jsonw_i64(w, "code", code);
	cp_jsonw_str(w, "message", msg);
	if (app_errno) {
		cp_jsonw_obj_begin(w, "data");
		cp_jsonw_str(w, "errno", dmn_errno_name(app_errno));
		cp_jsonw_i64(w, "errno_value", app_errno);
		cp_jsonw_obj_end(w);
	} else if (data_key) {
		cp_jsonw_obj_begin(w, "data");
		cp_jsonw_str(w, data_key, data_val);
		cp_jsonw_obj_end(w);
	}
	cp_jsonw_obj_end(w);
	if (id)
		cp_jsonw_value(w, "id", id);
	else
		cp_jsonw_null(w, "id");
	cp_jsonw_obj_end(w);
}

static cp_json *rpc_empty;
static pthread_once_t rpc_empty_once = PTHREAD_ONCE_INIT;

static void rpc_empty_init(void)
{
	if (cp_json_parse("{}", 2, NULL, &rpc_empty) < 0)
		abort();
}

/* The params of a request without "params": an empty object. */
static const cp_json *rpc_empty_params(void)
{
	pthread_once(&rpc_empty_once, rpc_empty_init);
	return rpc_empty;
}

/* Answer one request object; writes nothing for a notification. */
static void rpc_one(struct dmn *d, const struct dmn_peer *peer,
		    const cp_json *req, struct cp_jsonw *out)
{
	static const char *const members[] = {"jsonrpc", "method", "params",
					      "id"};
	char msg[600];
	if (cp_json_type(req) != CP_JSON_OBJECT) {
		snprintf(msg, sizeof(msg), "invalid request: expected an "
			 "object, not %s", cp_json_type_name(cp_json_type(req)));
		rpc_error(out, NULL, DMN_EINVALID_REQUEST, msg, NULL, NULL, 0);
		return;
	}
	const cp_json *id = cp_json_get(req, "id");
	if (id && cp_json_type(id) != CP_JSON_STRING &&
	    cp_json_type(id) != CP_JSON_NUMBER &&
	    cp_json_type(id) != CP_JSON_NULL) {
		snprintf(msg, sizeof(msg), "invalid request: 'id' must be a "
			 "string, a number or null, not %s",
			 cp_json_type_name(cp_json_type(id)));
		rpc_error(out, NULL, DMN_EINVALID_REQUEST, msg, NULL, NULL, 0);
		return;
	}
	for (size_t i = 0; i < cp_json_count(req); i++) {
		const char *k = cp_json_key_at(req, i);
		bool known = false;
		for (size_t j = 0; j < CP_ARRAY_SIZE(members); j++)
			known |= !strcmp(k, members[j]);
		if (!known) {
			snprintf(msg, sizeof(msg), "invalid request: unknown "
				 "member '%.100s'", k);
			rpc_error(out, id, DMN_EINVALID_REQUEST, msg, NULL,
				  NULL, 0);
			return;
		}
	}
	const cp_json *ver = cp_json_get(req, "jsonrpc");
	const char *vs = ver ? cp_json_string(ver, NULL) : NULL;
	if (!vs || strcmp(vs, "2.0")) {
		rpc_error(out, id, DMN_EINVALID_REQUEST,
			  "invalid request: 'jsonrpc' must be \"2.0\"", NULL,
			  NULL, 0);
		return;
	}
	const cp_json *m = cp_json_get(req, "method");
	const char *method = m ? cp_json_string(m, NULL) : NULL;
	if (!method) {
		rpc_error(out, id, DMN_EINVALID_REQUEST,
			  m ? "invalid request: 'method' must be a string"
			    : "invalid request: 'method' is missing",
			  NULL, NULL, 0);
		return;
	}
	const cp_json *params = cp_json_get(req, "params");
	if (params && cp_json_type(params) != CP_JSON_OBJECT) {
		snprintf(msg, sizeof(msg), "invalid params: 'params' must be "
			 "an object (parameters by name), not %s",
			 cp_json_type_name(cp_json_type(params)));
		if (id)
			rpc_error(out, id, DMN_EINVALID_PARAMS, msg, NULL,
				  NULL, 0);
		return;
	}

	struct cp_jsonw res;
	cp_jsonw_init(&res);
	struct dmn_call c = {
	    .d = d,
	    .peer = peer,
	    .method = method,
	    .params = params ? params : rpc_empty_params(),
	    .res = &res,
	};
	cp_clear_error();
	int r = dmn_method_call(&c);
	if (r == 0 && cp_jsonw_error(&res) < 0)
		r = -ENOMEM;
	if (r < 0) {
		snprintf(msg, sizeof(msg), "%s", cp_error_msg(r));
		dmn_debug("%s: failed: %s (%s)", method, msg,
			  dmn_errno_name(-r));
	} else if (r == DMN_RPC_ERROR) {
		dmn_debug("%s: %s", method, c.rpc_msg);
	}
	if (id) {
		if (r == 0) {
			cp_jsonw_obj_begin(out, NULL);
			cp_jsonw_str(out, "jsonrpc", "2.0");
			cp_jsonw_raw(out, "result", res.buf, res.len);
			cp_jsonw_value(out, "id", id);
			cp_jsonw_obj_end(out);
		} else if (r == DMN_RPC_ERROR) {
			const char *dk = NULL, *dv = NULL;
			if (c.rpc_code == DMN_ENO_METHOD)
				dk = "method", dv = method;
			else if (c.rpc_param[0])
				dk = "param", dv = c.rpc_param;
			rpc_error(out, id, c.rpc_code, c.rpc_msg, dk, dv, 0);
		} else {
			rpc_error(out, id, DMN_EAPP_BASE - r, msg, NULL, NULL,
				  -r);
		}
	}
	cp_jsonw_free(&res);
}

static void rpc_too_large(struct cp_jsonw *out, size_t max, size_t ran,
			  size_t n)
{
	char msg[400], data[32];
	cp_jsonw_reset(out);
	if (n)
		snprintf(msg, sizeof(msg), "answer too large: the answers to "
			 "the first %zu of the batch's %zu calls exceed %zu "
			 "bytes (max_answer); those calls ran, the others did "
			 "not: split the batch", ran, n, max);
	else
		snprintf(msg, sizeof(msg), "answer too large: more than %zu "
			 "bytes (max_answer)", max);
	snprintf(data, sizeof(data), "%zu", ran);
	rpc_error(out, NULL, DMN_EANSWER_TOO_LARGE, msg, n ? "ran" : NULL,
		  data, 0);
}

void dmn_rpc_handle(struct dmn *d, const struct dmn_peer *peer,
		    const char *text, size_t len, size_t max_answer,
		    struct cp_jsonw *out)
{
	struct cp_json_opts jo;
	cp_json *req;
	char msg[600];

	cp_jsonw_reset(out);
	cp_json_opts_init(&jo);
	jo.max_len = len + 1;
	jo.max_depth = 64;
	jo.max_values = 100000;
	cp_clear_error();
	int r = cp_json_parse(text, len, &jo, &req);
	if (r < 0) {
		snprintf(msg, sizeof(msg), "parse error: %s", cp_error_msg(r));
		rpc_error(out, NULL, DMN_EPARSE, msg, NULL, NULL, 0);
		return;
	}
	if (cp_json_type(req) == CP_JSON_ARRAY) {
		size_t n = cp_json_count(req);
		if (!n) {
			rpc_error(out, NULL, DMN_EINVALID_REQUEST,
				  "invalid request: empty batch", NULL, NULL,
				  0);
		} else {
			struct cp_jsonw one;
			bool any = false, big = false;
			cp_jsonw_init(&one);
			cp_jsonw_arr_begin(out, NULL);
			for (size_t i = 0; i < n; i++) {
				cp_jsonw_reset(&one);
				rpc_one(d, peer, cp_json_at(req, i), &one);
				if (out->len + one.len + 2 > max_answer) {
					rpc_too_large(out, max_answer, i + 1,
						      n);
					dmn_warn("connection %u: a batch's "
						 "answer exceeds max_answer "
						 "(%zu bytes) after %zu of %zu "
						 "calls; refused", peer->conn,
						 max_answer, i + 1, n);
					big = true;
					break;
				}
				if (one.len) {
					cp_jsonw_raw(out, NULL, one.buf,
						     one.len);
					any = true;
				}
			}
			cp_jsonw_free(&one);
			if (!big) {
				cp_jsonw_arr_end(out);
				if (!any) /* all notifications: no answer */
					cp_jsonw_reset(out);
			}
		}
	} else if (cp_json_type(req) == CP_JSON_OBJECT) {
		rpc_one(d, peer, req, out);
		if (out->len + 1 > max_answer) {
			rpc_too_large(out, max_answer, 1, 0);
			dmn_warn("connection %u: an answer exceeds max_answer "
				 "(%zu bytes); refused", peer->conn,
				 max_answer);
		}
	} else {
		snprintf(msg, sizeof(msg), "invalid request: expected an "
			 "object or a batch array, not %s",
			 cp_json_type_name(cp_json_type(req)));
		rpc_error(out, NULL, DMN_EINVALID_REQUEST, msg, NULL, NULL, 0);
	}
	cp_json_free(req);
}

/* ---- connections ---------------------------------------------------------- */

/* One error line to a connection being refused (a fresh socket's buffer
 * takes it without blocking), then our side's EOF. */
static void conn_refuse(int fd, int code, const char *msg, int app_errno)
{
	struct cp_jsonw w;
	cp_jsonw_init(&w);
	rpc_error(&w, NULL, code, msg, NULL, NULL, app_errno);
	if (!cp_jsonw_error(&w) && cp_send_all(fd, w.buf, w.len) == 0)
		cp_send_all(fd, "\n", 1);
	cp_jsonw_free(&w);
	shutdown(fd, SHUT_WR);
}

/* Refused connections linger until the client closes (or LINGER_MS): a
 * close with the client's request unread would reset the connection
 * before the client reads the error line.  The accept thread drains them;
 * when the list is full the oldest is closed at once. */
#define LINGER_MAX 16
#define LINGER_MS 2000
struct lingering {
	int fd;
	struct timespec until;
};

static void linger_add(struct lingering *l, size_t *n, int fd)
{
	if (*n == LINGER_MAX) {
		close(l[0].fd);
		memmove(l, l + 1, (LINGER_MAX - 1) * sizeof(*l));
		(*n)--;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	l[*n].fd = fd;
	clock_gettime(CLOCK_MONOTONIC, &l[*n].until);
	l[*n].until.tv_sec += LINGER_MS / 1000;
	(*n)++;
}

static int64_t ms_until(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (t->tv_sec - now.tv_sec) * 1000 +
	       (t->tv_nsec - now.tv_nsec) / 1000000;
}

/* Answer one line; false when the answer could not be sent. */
static bool conn_request(struct dmn_conn *c, struct cp_jsonw *out,
			 const char *line, size_t len, size_t max_answer)
{
	size_t k = 0;
	while (k < len && (line[k] == ' ' || line[k] == '\t' ||
			   line[k] == '\r'))
		k++;
	if (k == len)
		return true;
	bool big = len > CONN_KEEP_BUF;
	if (big) {
		pthread_mutex_lock(&big_lock);
		while (big_running >= CONN_BIG_MAX)
			pthread_cond_wait(&big_cond, &big_lock);
		big_running++;
		pthread_mutex_unlock(&big_lock);
	}
	dmn_rpc_handle(c->d, &c->peer, line, len, max_answer, out);
	if (big) {
		/* the answer is built: its size is bounded by max_answer */
		pthread_mutex_lock(&big_lock);
		big_running--;
		pthread_cond_signal(&big_cond);
		pthread_mutex_unlock(&big_lock);
	}
	if (cp_jsonw_error(out) < 0) {
		cp_jsonw_reset(out);
		rpc_error(out, NULL, DMN_EINTERNAL, "internal error: out of "
			  "memory", NULL, NULL, 0);
	}
	if (!out->len)
		return true; /* notification(s) */
	if (cp_send_all(c->fd, out->buf, out->len) < 0 ||
	    cp_send_all(c->fd, "\n", 1) < 0)
		return false;
	return true;
}

static void conn_unlink(struct dmn_conn *c)
{
	struct dmn *d = c->d;
	pthread_mutex_lock(&d->conn_lock);
	for (struct dmn_conn **pp = &d->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	d->nconns--;
	pthread_cond_broadcast(&d->conn_cond);
	pthread_mutex_unlock(&d->conn_lock);
}

/* After a big request or answer: give the memory back to the system. */
static void conn_shrink(char **buf, size_t *cap, size_t len,
			struct cp_jsonw *out)
{
	bool trim = false;
	if (out->cap > CONN_KEEP_BUF) {
		cp_jsonw_free(out);
		cp_jsonw_init(out);
		trim = true;
	}
	if (*cap > CONN_KEEP_BUF && len < CONN_KEEP_BUF) {
		char *p = realloc(*buf, CONN_KEEP_BUF);
		if (p) {
			*buf = p;
			*cap = CONN_KEEP_BUF;
		}
		trim = true;
	}
	if (trim)
		malloc_trim(0);
}

/* Wait for input: 1 readable, 0 timed out, -1 error. */
static int conn_wait(int fd, unsigned seconds)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int n;
	do
		n = poll(&p, 1, seconds ? (int)CP_MIN(seconds, 86400u) * 1000
					: -1);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -1 : n;
}

static void *conn_thread(void *arg)
{
	struct dmn_conn *c = arg;
	struct dmn_limits lim;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	bool first = true;
	struct cp_jsonw out;
	cp_jsonw_init(&out);
	dmn_debug("connection %u: open (uid %u, pid %d)", c->id, c->peer.uid,
		  c->peer.pid);
	if (!buf)
		goto done;
	for (;;) {
		dmn_limits_get(c->d, &lim);
		unsigned t = first ? lim.request_timeout : lim.idle_timeout;
		int w = conn_wait(c->fd, t);
		if (w == 0) {
			dmn_info("connection %u (uid %u, pid %d): %s %u s; "
				 "closing it", c->id, c->peer.uid, c->peer.pid,
				 first ? "no request within request_timeout"
				       : "idle for idle_timeout", t);
			break;
		}
		if (cap - len < 4096 && cap < lim.max_request + 1) {
			size_t ncap = CP_MIN(cap * 2, lim.max_request + 1);
			char *p = ncap > cap ? realloc(buf, ncap) : NULL;
			if (p) {
				buf = p;
				cap = ncap;
			}
		}
		ssize_t n = w < 0 ? -1 : recv(c->fd, buf + len, cap - len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (len && !atomic_load(&c->d->stopping))
				conn_request(c, &out, buf, len,
					     lim.max_answer);
			break;
		}
		size_t scan = len;
		len += (size_t)n;
		size_t start = 0;
		bool big = false;
		for (size_t i = scan; i < len; i++) {
			if (buf[i] != '\n')
				continue;
			first = false;
			big |= i - start > CONN_KEEP_BUF;
			if (!conn_request(c, &out, buf + start, i - start,
					  lim.max_answer))
				goto done;
			start = i + 1;
		}
		memmove(buf, buf + start, len - start);
		len -= start;
		if (big || out.cap > CONN_KEEP_BUF)
			conn_shrink(&buf, &cap, len, &out);
		if (len > lim.max_request ||
		    (len == cap && cap >= lim.max_request)) {
			char msg[128];
			snprintf(msg, sizeof(msg), "invalid request: request "
				 "larger than %zu bytes", lim.max_request);
			dmn_warn("connection %u: %s; closing it", c->id, msg);
			conn_refuse(c->fd, DMN_EINVALID_REQUEST, msg, 0);
			break;
		}
	}
done:
	dmn_debug("connection %u: closed", c->id);
	cp_jsonw_free(&out);
	free(buf);
	if (cap > CONN_KEEP_BUF)
		malloc_trim(0);
	conn_unlink(c);
	close(c->fd);
	free(c);
	return NULL;
}

/* The peer's credentials; whether it may call (root, allowed_uids, or a
 * group of allowed_gids among its primary and supplementary groups). */
static bool conn_allowed(int fd, const struct dmn_limits *lim,
			 struct dmn_peer *peer)
{
	struct ucred uc;
	socklen_t sl = sizeof(uc);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &sl) < 0) {
		peer->uid = peer->gid = UINT32_MAX;
		peer->pid = -1;
		return false;
	}
	peer->uid = uc.uid;
	peer->gid = uc.gid;
	peer->pid = uc.pid;
	if (uc.uid == 0)
		return true;
	for (unsigned i = 0; i < lim->n_uids; i++)
		if (lim->allowed_uids[i] == uc.uid)
			return true;
	if (!lim->n_gids)
		return false;
	gid_t groups[256];
	socklen_t gl = sizeof(groups);
	size_t ng = 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &gl) == 0)
		ng = gl / sizeof(gid_t);
	for (unsigned i = 0; i < lim->n_gids; i++) {
		if (lim->allowed_gids[i] == uc.gid)
			return true;
		for (size_t j = 0; j < ng; j++)
			if (lim->allowed_gids[i] == groups[j])
				return true;
	}
	return false;
}

/* Check and register a new connection; false when it was refused (and
 * closed). */
static bool conn_admit(struct dmn *d, int fd, unsigned id,
		       struct dmn_conn **out, struct lingering *lg, size_t *nlg)
{
	struct dmn_limits lim;
	struct dmn_peer peer = {.conn = id};
	char msg[300];
	dmn_limits_get(d, &lim);
	if (!conn_allowed(fd, &lim, &peer)) {
		snprintf(msg, sizeof(msg), "permission denied: uid %u (pid %d) "
			 "may not call cowpoold (allowed_uids, allowed_gids)",
			 peer.uid, peer.pid);
		dmn_warn("connection %u refused: %s", id, msg);
		conn_refuse(fd, DMN_EAPP_BASE + EACCES, msg, EACCES);
		linger_add(lg, nlg, fd);
		return false;
	}
	struct dmn_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return false;
	}
	c->d = d;
	c->fd = fd;
	c->id = id;
	c->peer = peer;
	pthread_mutex_lock(&d->conn_lock);
	if (d->nconns >= lim.max_connections) {
		pthread_mutex_unlock(&d->conn_lock);
		snprintf(msg, sizeof(msg), "too many connections: %u open "
			 "(max_connections); try again later",
			 lim.max_connections);
		dmn_warn("connection %u (uid %u, pid %d) refused: %s", id,
			 peer.uid, peer.pid, msg);
		conn_refuse(fd, DMN_EAPP_BASE + EBUSY, msg, EBUSY);
		linger_add(lg, nlg, fd);
		free(c);
		return false;
	}
	c->next = d->conns;
	d->conns = c;
	d->nconns++;
	pthread_mutex_unlock(&d->conn_lock);
	/* A client that stops reading cannot hold a connection thread (and
	 * the shutdown) for ever. */
	struct timeval tv = {.tv_sec = lim.idle_timeout ? lim.idle_timeout
							 : 600};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	*out = c;
	return true;
}

static void *accept_thread(void *arg)
{
	struct dmn *d = arg;
	unsigned next_id = 1;
	struct lingering lg[LINGER_MAX];
	size_t nlg = 0;
	for (;;) {
		struct pollfd pfd[2 + LINGER_MAX] = {
		    {.fd = d->listen_fd, .events = POLLIN},
		    {.fd = d->wake_fd[0], .events = POLLIN},
		};
		int64_t timeout = -1;
		for (size_t i = 0; i < nlg; i++) {
			pfd[2 + i] = (struct pollfd){.fd = lg[i].fd,
						     .events = POLLIN};
			int64_t ms = CP_MAX(ms_until(&lg[i].until), 0);
			timeout = timeout < 0 ? ms : CP_MIN(timeout, ms);
		}
		if (poll(pfd, 2 + nlg, (int)timeout) < 0 && errno != EINTR) {
			dmn_err("poll: %s", strerror(errno));
			break;
		}
		if (atomic_load(&d->stopping) || pfd[1].revents)
			break;
		/* drain the refused ones; close at EOF or their time */
		for (size_t i = nlg; i-- > 0;) {
			char junk[4096];
			ssize_t k = 1;
			if (pfd[2 + i].revents)
				while ((k = recv(lg[i].fd, junk, sizeof(junk),
						 0)) > 0)
					;
			if (k == 0 || (k < 0 && errno != EAGAIN) ||
			    ms_until(&lg[i].until) <= 0) {
				close(lg[i].fd);
				lg[i] = lg[--nlg];
			}
		}
		if (!pfd[0].revents)
			continue;
		int fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (atomic_load(&d->stopping)) {
			if (fd >= 0)
				close(fd);
			break;
		}
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED ||
			    errno == EAGAIN)
				continue;
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				dmn_err("accept: %s; waiting for a "
					"connection to close", strerror(errno));
				pthread_mutex_lock(&d->conn_lock);
				unsigned n = d->nconns;
				while (d->nconns == n && n &&
				       !atomic_load(&d->stopping))
					pthread_cond_wait(&d->conn_cond,
							  &d->conn_lock);
				pthread_mutex_unlock(&d->conn_lock);
				continue;
			}
			dmn_err("accept: %s", strerror(errno));
			break;
		}
		struct dmn_conn *c;
		if (!conn_admit(d, fd, next_id++, &c, lg, &nlg))
			continue;
		pthread_t t;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		int r = pthread_create(&t, &attr, conn_thread, c);
		pthread_attr_destroy(&attr);
		if (r) {
			dmn_err("cannot start a connection thread: %s",
				strerror(r));
			conn_unlink(c);
			close(fd);
			free(c);
		}
	}
	for (size_t i = 0; i < nlg; i++)
		close(lg[i].fd);
	return NULL;
}

/* ---- socket --------------------------------------------------------------- */

static int mkdir_parents(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int dmn_server_listen(struct dmn *d)
{
	const char *path = d->cfg.socket;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return cp_error(-ENAMETOOLONG, "socket path %s is longer than "
				"%zu bytes", path, sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	int r = mkdir_parents(path);
	if (r < 0)
		return cp_error(r, "cannot create the directory of %s: %s",
				path, strerror(-r));

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return cp_error(-errno, "socket: %s", strerror(errno));
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			close(fd);
			return cp_error(-EEXIST, "%s exists and is not a "
					"socket", path);
		}
		/* Another daemon there?  A stale socket refuses. */
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 &&
		    connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			close(fd);
			return cp_error(-EADDRINUSE, "another cowpoold is "
					"listening on %s", path);
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
	}
	/* Born 0600 (the umask is the process's: only the main and the
	 * signal threads run yet, and neither creates files); opened to the
	 * group only once it has its group.  Every peer is checked anyway
	 * (conn_allowed). */
	mode_t old_mask = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
	umask(old_mask);
	if (r == 0 && listen(fd, 64) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		return cp_error(r, "cannot listen on %s: %s", path,
				strerror(-r));
	}
	uint32_t gid = 0;
	if (d->cfg.socket_group &&
	    (dmn_config_gid(d->cfg.socket_group, &gid) < 0 ||
	     chown(path, (uid_t)-1, gid) < 0)) {
		r = errno ? -errno : -ENOENT;
		close(fd);
		unlink(path);
		return cp_error(r, "socket_group %s: cannot give %s to it: %s",
				d->cfg.socket_group, path, strerror(-r));
	}
	if (chmod(path, 0660) < 0) {
		r = -errno;
		close(fd);
		unlink(path);
		return cp_error(r, "cannot chmod %s: %s", path, strerror(-r));
	}
	d->listen_fd = fd;
	return 0;
}

int dmn_server_start(struct dmn *d)
{
	int r = pthread_create(&d->accept_thread, NULL, accept_thread, d);
	if (r)
		return cp_error(-r, "cannot start the accept thread: %s",
				strerror(r));
	d->accept_started = true;
	return 0;
}

void dmn_server_stop(struct dmn *d)
{
	/* The caller set d->stopping and wrote to wake_fd. */
	if (d->accept_started)
		pthread_join(d->accept_thread, NULL);
	if (d->listen_fd >= 0) {
		close(d->listen_fd);
		d->listen_fd = -1;
		unlink(d->cfg.socket);
	}
	/* Wake task.wait callers, then end every connection (a call into
	 * the pool in progress finishes first). */
	pthread_mutex_lock(&d->tasks.lock);
	d->tasks.stopping = true;
	pthread_cond_broadcast(&d->tasks.cond);
	pthread_mutex_unlock(&d->tasks.lock);
	/* Only the reading side: a call in progress (task.wait woken with
	 * ESHUTDOWN above) still sends its answer, then the thread sees EOF. */
	pthread_mutex_lock(&d->conn_lock);
	for (struct dmn_conn *c = d->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RD);
	if (d->nconns)
		dmn_info("waiting for %u connection(s) to finish",
			 d->nconns);
	while (d->nconns)
		pthread_cond_wait(&d->conn_cond, &d->conn_lock);
	pthread_mutex_unlock(&d->conn_lock);
}
