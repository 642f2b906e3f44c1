/* nbd/conn.c - one client connection: handshake and transmission.
 *
 * The reader (the thread that calls nbd_conn_run) runs the handshake state
 * machine, then parses requests.  READ and WRITE go to the image's async
 * API with a preallocated slot; their completion (on an engine thread)
 * only queues the slot for the connection's sender thread, which writes
 * the reply, so an engine thread never blocks on a slow client.  The other
 * commands are short metadata operations that the reader runs itself and
 * answers directly.  All socket writes hold send_lock.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbd_int.h"

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- socket I/O ------------------------------------------------------------ */

/* Wait for input until the handshake deadline (-ETIMEDOUT). */
static int conn_wait_input(struct nbd_conn *c)
{
	for (;;) {
		uint64_t now = now_ms();
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int pr;

		if (c->tls && nbd_tls_pending(c->tls))
			return 0;
		if (now >= c->deadline_ms)
			return -ETIMEDOUT;
		pr = poll(&pfd, 1,
			  (int)CP_MIN(c->deadline_ms - now, (uint64_t)INT32_MAX));
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return -errno;
		if (pr == 0)
			return -ETIMEDOUT;
		return 0;
	}
}

/* One recv (or TLS record read) of at most len bytes into buf. */
static ssize_t conn_recv(struct nbd_conn *c, void *buf, size_t len)
{
	for (;;) {
		ssize_t r;
		if (c->state == NBD_CONN_HANDSHAKE && c->deadline_ms) {
			int w = conn_wait_input(c);
			if (w < 0)
				return w;
		}
		if (c->tls)
			return nbd_tls_recv(c->tls, buf, len);
		r = recv(c->fd, buf, len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		return r < 0 ? -errno : r;
	}
}

/* Read exactly len bytes, through the input buffer (large payloads go
 * straight to their destination once the buffer is drained).  During the
 * handshake, gives up at the deadline (-ETIMEDOUT).  -ECONNRESET on end of
 * file. */
static int conn_read(struct nbd_conn *c, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t r;
		if (c->rpos < c->rlen) {
			size_t n = CP_MIN(len, c->rlen - c->rpos);
			memcpy(p, c->rbuf + c->rpos, n);
			c->rpos += n;
			p += n;
			len -= n;
			continue;
		}
		if (len >= sizeof(c->rbuf)) {
			r = conn_recv(c, p, len);
			if (r < 0)
				return (int)r;
			if (r == 0)
				return -ECONNRESET;
			p += r;
			len -= (size_t)r;
			continue;
		}
		r = conn_recv(c, c->rbuf, sizeof(c->rbuf));
		if (r < 0)
			return (int)r;
		if (r == 0)
			return -ECONNRESET;
		c->rpos = 0;
		c->rlen = (size_t)r;
	}
	return 0;
}

/* Discard len bytes of input. */
static int conn_skip(struct nbd_conn *c, uint64_t len)
{
	while (len) {
		size_t n = (size_t)CP_MIN(len, (uint64_t)sizeof(c->opt_buf));
		int r = conn_read(c, c->opt_buf, n);
		if (r < 0)
			return r;
		len -= n;
	}
	return 0;
}

/* Write the whole iovec array; caller holds send_lock.  After a failure
 * the connection is dead and later sends return at once. */
static int conn_writev_locked(struct nbd_conn *c, struct iovec *iov, int n)
{
	if (c->tls) {
		for (int i = 0; i < n && !c->dead; i++) {
			const uint8_t *p = iov[i].iov_base;
			size_t left = iov[i].iov_len;
			while (left && !c->dead) {
				ssize_t r = nbd_tls_send(c->tls, p, left);
				if (r <= 0) {
					c->dead = true;
					shutdown(c->fd, SHUT_RDWR);
					break;
				}
				p += r;
				left -= (size_t)r;
			}
		}
		return c->dead ? -EPIPE : 0;
	}
	while (n > 0 && !c->dead) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t r = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			c->dead = true;
			shutdown(c->fd, SHUT_RDWR);
			return -errno;
		}
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return c->dead ? -EPIPE : 0;
}

static int conn_write(struct nbd_conn *c, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	int r;

	pthread_mutex_lock(&c->send_lock);
	r = conn_writev_locked(c, &iov, 1);
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

/* --- handshake --------------------------------------------------------------- */

static int opt_reply(struct nbd_conn *c, uint32_t opt, uint32_t type,
		     const void *data, size_t len)
{
	uint8_t hdr[20];
	struct iovec iov[2];

	cp_put_be64(hdr, NBD_REP_MAGIC);
	cp_put_be32(hdr + 8, opt);
	cp_put_be32(hdr + 12, type);
	cp_put_be32(hdr + 16, (uint32_t)len);
	iov[0].iov_base = hdr;
	iov[0].iov_len = sizeof(hdr);
	iov[1].iov_base = (void *)data;
	iov[1].iov_len = len;
	pthread_mutex_lock(&c->send_lock);
	int r = conn_writev_locked(c, iov, len ? 2 : 1);
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

/* An error reply with a human-readable message (allowed by the spec). */
static int opt_error(struct nbd_conn *c, uint32_t opt, uint32_t type,
		     const char *fmt, ...) CP_PRINTF(4, 5);
static int opt_error(struct nbd_conn *c, uint32_t opt, uint32_t type,
		     const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	return opt_reply(c, opt, type, msg, (size_t)n);
}

static uint16_t export_tflags(struct nbd_conn *c, struct nbd_export *e)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
		     NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;

	if (e->readonly)
		f |= NBD_FLAG_READ_ONLY;
	else
		f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
		     NBD_FLAG_SEND_FAST_ZERO;
	if (c->structured)
		f |= NBD_FLAG_SEND_DF;
	if (e->multi_conn && c->server->opts.max_clients != 1)
		f |= NBD_FLAG_CAN_MULTI_CONN;
	return f;
}

/* Enter transmission with export e (reference passed in). */
static int conn_select_export(struct nbd_conn *c, struct nbd_export *e)
{
	if (nbd_export_attach(c->server, e, c) < 0) {
		nbd_export_put(c->server, e);
		return -ESHUTDOWN;
	}
	if (!c->ctx_export || strcmp(c->ctx_export, e->name) != 0)
		c->ctx_base = c->ctx_depth = false;
	c->state = NBD_CONN_TRANSMISSION;
	return 0;
}

static void put_info_export(uint8_t *b, uint64_t size, uint16_t flags)
{
	cp_put_be16(b, NBD_INFO_EXPORT);
	cp_put_be64(b + 2, size);
	cp_put_be16(b + 10, flags);
}

/* NBD_OPT_INFO / NBD_OPT_GO.  Returns 1 when transmission starts. */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, uint32_t len)
{
	const uint8_t *d = c->opt_buf;
	uint32_t namelen;
	uint16_t nreq, i;
	bool want_name = false, want_desc = false;
	char name[NBD_MAX_NAME + 1];
	struct nbd_export *e;
	uint8_t b[64];
	int r;

	if (len < 6)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "option too short");
	namelen = cp_be32(d);
	if (namelen > len - 6 || namelen > NBD_MAX_NAME)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "bad export name length");
	nreq = cp_be16(d + 4 + namelen);
	if ((uint64_t)4 + namelen + 2 + 2ull * nreq != len)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "bad option length");
	memcpy(name, d + 4, namelen);
	name[namelen] = '\0';
	if (memchr(name, '\0', namelen))
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "export name contains NUL");
	for (i = 0; i < nreq; i++) {
		uint16_t t = cp_be16(d + 4 + namelen + 2 + 2 * i);
		if (t == NBD_INFO_NAME)
			want_name = true;
		else if (t == NBD_INFO_DESCRIPTION)
			want_desc = true;
	}
	e = nbd_export_get(c->server, name);
	if (!e)
		return opt_error(c, opt, NBD_REP_ERR_UNKNOWN,
				 "export '%s' not present", name);
	if (want_name) {
		uint8_t *nb = c->opt_buf; /* option data was copied to name */
		cp_put_be16(nb, NBD_INFO_NAME);
		memcpy(nb + 2, name, namelen);
		r = opt_reply(c, opt, NBD_REP_INFO, nb, 2 + namelen);
		if (r < 0)
			goto out;
	}
	if (want_desc && e->description) {
		size_t dl = strlen(e->description);
		uint8_t *nb = c->opt_buf;
		cp_put_be16(nb, NBD_INFO_DESCRIPTION);
		memcpy(nb + 2, e->description, dl);
		r = opt_reply(c, opt, NBD_REP_INFO, nb, 2 + dl);
		if (r < 0)
			goto out;
	}
	/* Always sent: minimum 1 asks nothing of a client that did not
	 * request it. */
	{
		unsigned align = cp_bdev_align(cp_image_dev(e->img));
		cp_put_be16(b, NBD_INFO_BLOCK_SIZE);
		cp_put_be32(b + 2, 1);
		cp_put_be32(b + 6, CP_MAX(4096u, align));
		cp_put_be32(b + 10, CP_NBD_MAX_PAYLOAD);
		r = opt_reply(c, opt, NBD_REP_INFO, b, 14);
		if (r < 0)
			goto out;
	}
	put_info_export(b, e->size, export_tflags(c, e));
	r = opt_reply(c, opt, NBD_REP_INFO, b, 12);
	if (r < 0)
		goto out;
	if (opt == NBD_OPT_GO) {
		r = conn_select_export(c, e);
		if (r == -ESHUTDOWN)
			return opt_error(c, opt, NBD_REP_ERR_SHUTDOWN,
					 "export '%s' is going away", name);
		r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		return r < 0 ? r : 1;
	}
	r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
out:
	nbd_export_put(c->server, e);
	return r;
}

static int opt_export_name(struct nbd_conn *c, uint32_t len)
{
	char name[NBD_MAX_NAME + 1];
	struct nbd_export *e;
	uint8_t b[10 + 124];

	if (len > NBD_MAX_NAME)
		return -EINVAL;
	memcpy(name, c->opt_buf, len);
	name[len] = '\0';
	e = nbd_export_get(c->server, name);
	if (!e)
		return -ENOENT; /* the protocol has no error reply here */
	if (conn_select_export(c, e) < 0)
		return -ESHUTDOWN;
	memset(b, 0, sizeof(b));
	cp_put_be64(b, e->size);
	cp_put_be16(b + 8, export_tflags(c, e));
	return conn_write(c, b, c->no_zeroes ? 10 : sizeof(b));
}

static int opt_list(struct nbd_conn *c, uint32_t len)
{
	cp_nbd_server *s = c->server;
	struct nbd_export *e;
	uint8_t *b = c->opt_buf;
	int r = 0;

	if (len)
		return opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
				 "NBD_OPT_LIST takes no data");
	/* Build each reply under the lock into opt_buf, send outside it. */
	for (unsigned i = 0;; i++) {
		size_t n = 0, nl, dl;
		unsigned j = 0;
		pthread_mutex_lock(&s->lock);
		for (e = s->exports; e && j < i; e = e->next)
			j++;
		if (e) {
			nl = strlen(e->name);
			dl = e->description ? strlen(e->description) : 0;
			cp_put_be32(b, (uint32_t)nl);
			memcpy(b + 4, e->name, nl);
			if (dl)
				memcpy(b + 4 + nl, e->description, dl);
			n = 4 + nl + dl;
		}
		pthread_mutex_unlock(&s->lock);
		if (!e)
			break;
		r = opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, b, n);
		if (r < 0)
			return r;
	}
	return opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static int meta_reply(struct nbd_conn *c, uint32_t opt, uint32_t id,
		      const char *name)
{
	uint8_t b[64];
	size_t n = strlen(name);

	cp_put_be32(b, opt == NBD_OPT_SET_META_CONTEXT ? id : 0);
	memcpy(b + 4, name, n);
	return opt_reply(c, opt, NBD_REP_META_CONTEXT, b, 4 + n);
}

static bool query_is(const uint8_t *q, uint32_t ql, const char *s)
{
	return ql == strlen(s) && memcmp(q, s, ql) == 0;
}

static int opt_meta(struct nbd_conn *c, uint32_t opt, uint32_t len)
{
	const uint8_t *d = c->opt_buf;
	uint32_t namelen, nq, i, pos;
	char name[NBD_MAX_NAME + 1];
	struct nbd_export *e;
	bool base = false, depth = false;
	int r;

	/* Listing is harmless without structured replies (qemu allows it);
	 * selecting contexts needs them. */
	if (!c->structured && opt == NBD_OPT_SET_META_CONTEXT)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "negotiate structured replies first");
	if (len < 8)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "option too short");
	namelen = cp_be32(d);
	if (namelen > len - 8 || namelen > NBD_MAX_NAME)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "bad export name length");
	memcpy(name, d + 4, namelen);
	name[namelen] = '\0';
	nq = cp_be32(d + 4 + namelen);
	/* Validate the whole query list before answering anything. */
	pos = 8 + namelen;
	for (i = 0; i < nq; i++) {
		uint32_t ql;
		if (len - pos < 4)
			return opt_error(c, opt, NBD_REP_ERR_INVALID,
					 "query list too short");
		ql = cp_be32(d + pos);
		if (ql > len - pos - 4)
			return opt_error(c, opt, NBD_REP_ERR_INVALID,
					 "query longer than the option");
		if (ql > NBD_MAX_STRING)
			return opt_error(c, opt, NBD_REP_ERR_TOO_BIG,
					 "query too long");
		pos += 4 + ql;
	}
	if (pos != len)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "bad option length");
	e = nbd_export_get(c->server, name);
	if (!e)
		return opt_error(c, opt, NBD_REP_ERR_UNKNOWN,
				 "export '%s' not present", name);
	if (nq == 0 && opt == NBD_OPT_LIST_META_CONTEXT) {
		base = true;
		depth = e->allocation_depth;
	}
	pos = 8 + namelen;
	for (i = 0; i < nq; i++) {
		uint32_t ql = cp_be32(d + pos);
		const uint8_t *q = d + pos + 4;
		pos += 4 + ql;
		if (query_is(q, ql, "base:allocation") ||
		    (opt == NBD_OPT_LIST_META_CONTEXT && query_is(q, ql, "base:")))
			base = true;
		if (e->allocation_depth &&
		    (query_is(q, ql, "qemu:allocation-depth") ||
		     (opt == NBD_OPT_LIST_META_CONTEXT &&
		      query_is(q, ql, "qemu:"))))
			depth = true;
	}
	r = 0;
	if (base)
		r = meta_reply(c, opt, NBD_CTX_BASE_ALLOCATION,
			       "base:allocation");
	if (r == 0 && depth)
		r = meta_reply(c, opt, NBD_CTX_ALLOCATION_DEPTH,
			       "qemu:allocation-depth");
	if (r == 0 && opt == NBD_OPT_SET_META_CONTEXT) {
		c->ctx_base = base;
		c->ctx_depth = depth;
		free(c->ctx_export);
		c->ctx_export = strdup(name);
	}
	nbd_export_put(c->server, e);
	if (r == 0)
		r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	return r;
}

/* NBD_OPT_STARTTLS: acknowledge in clear, then the TLS handshake (within
 * what is left of the handshake deadline).  Options negotiated before
 * are forgotten, as the spec requires. */
static int conn_starttls(struct nbd_conn *c)
{
	unsigned left = 0;
	int r;

	/* Bytes after STARTTLS sent before our answer would be read in
	 * clear: a client must wait for the ACK. */
	if (c->rpos < c->rlen)
		return -EPROTO;
	r = opt_reply(c, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL, 0);
	if (r < 0)
		return r;
	if (c->deadline_ms) {
		uint64_t now = now_ms();
		if (now >= c->deadline_ms)
			return -ETIMEDOUT;
		left = (unsigned)CP_MIN(c->deadline_ms - now,
					(uint64_t)UINT32_MAX);
	}
	c->structured = false;
	c->ctx_base = c->ctx_depth = false;
	return nbd_tls_session_start(c->server->tls, c->fd, left, &c->tls);
}

/* The handshake state machine: greeting, client flags, options until GO
 * or EXPORT_NAME.  Returns 0 when transmission starts, -errno to drop the
 * connection. */
static int conn_handshake(struct nbd_conn *c)
{
	uint8_t b[18];
	uint32_t cflags;
	int r;

	cp_put_be64(b, NBD_MAGIC);
	cp_put_be64(b + 8, NBD_IHAVEOPT);
	cp_put_be16(b + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	r = conn_write(c, b, 18);
	if (r < 0)
		return r;
	r = conn_read(c, b, 4);
	if (r < 0)
		return r;
	cflags = cp_be32(b);
	if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
		return -EINVAL; /* unknown client flags: the spec says close */
	c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

	for (;;) {
		uint8_t h[16];
		uint32_t opt, len;

		r = conn_read(c, h, sizeof(h));
		if (r < 0)
			return r;
		if (cp_be64(h) != NBD_IHAVEOPT)
			return -EINVAL;
		opt = cp_be32(h + 8);
		len = cp_be32(h + 12);
		if (len > NBD_MAX_OPTION) {
			/* Too big to be one of ours: skip it when it is an
			 * option we do not know, otherwise give up. */
			if (opt == NBD_OPT_EXPORT_NAME)
				return -EINVAL;
			r = conn_skip(c, len);
			if (r < 0)
				return r;
			r = opt_error(c, opt, NBD_REP_ERR_TOO_BIG,
				      "option data too large");
			if (r < 0)
				return r;
			continue;
		}
		r = conn_read(c, c->opt_buf, len);
		if (r < 0)
			return r;
		if (c->server->tls && !c->tls && opt != NBD_OPT_STARTTLS &&
		    opt != NBD_OPT_ABORT) {
			/* TLS is mandatory on this server */
			if (opt == NBD_OPT_EXPORT_NAME)
				return -EPERM;
			r = opt_error(c, opt, NBD_REP_ERR_TLS_REQD,
				      "TLS is required");
			if (r < 0)
				return r;
			continue;
		}
		switch (opt) {
		case NBD_OPT_EXPORT_NAME:
			r = opt_export_name(c, len);
			if (r < 0)
				return r;
			return 0;
		case NBD_OPT_ABORT:
			opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
			return -ECONNABORTED;
		case NBD_OPT_LIST:
			r = opt_list(c, len);
			break;
		case NBD_OPT_STARTTLS:
			if (len)
				r = opt_error(c, opt, NBD_REP_ERR_INVALID,
					      "NBD_OPT_STARTTLS takes no data");
			else if (!c->server->tls)
				r = opt_error(c, opt, NBD_REP_ERR_POLICY,
					      "TLS not configured");
			else if (c->tls)
				r = opt_error(c, opt, NBD_REP_ERR_INVALID,
					      "TLS already negotiated");
			else
				r = conn_starttls(c);
			break;
		case NBD_OPT_INFO:
		case NBD_OPT_GO:
			r = opt_info_go(c, opt, len);
			if (r == 1)
				return 0;
			break;
		case NBD_OPT_STRUCTURED_REPLY:
			if (len)
				r = opt_error(c, opt, NBD_REP_ERR_INVALID,
					      "NBD_OPT_STRUCTURED_REPLY takes no data");
			else if (c->structured)
				r = opt_error(c, opt, NBD_REP_ERR_INVALID,
					      "structured replies already negotiated");
			else {
				c->structured = true;
				r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
			}
			break;
		case NBD_OPT_LIST_META_CONTEXT:
		case NBD_OPT_SET_META_CONTEXT:
			r = opt_meta(c, opt, len);
			break;
		default:
			r = opt_error(c, opt, NBD_REP_ERR_UNSUP,
				      "option %u not supported", opt);
			break;
		}
		if (r < 0)
			return r;
	}
}

/* --- replies --------------------------------------------------------------- */

static uint32_t nbd_errno(int err)
{
	switch (-err) {
	case 0: return 0;
	case EPERM: case EROFS: return NBD_EPERM;
	case ENOMEM: return NBD_ENOMEM;
	case EINVAL: return NBD_EINVAL;
	case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
	case EOVERFLOW: return NBD_EOVERFLOW;
	case ENOTSUP: return NBD_ENOTSUP;
	case ESHUTDOWN: return NBD_ESHUTDOWN;
	default: return NBD_EIO;
	}
}

static void put_chunk_hdr(uint8_t *h, uint16_t flags, uint16_t type,
			  uint64_t cookie, uint32_t len)
{
	cp_put_be32(h, NBD_STRUCTURED_REPLY_MAGIC);
	cp_put_be16(h + 4, flags);
	cp_put_be16(h + 6, type);
	cp_put_be64(h + 8, cookie);
	cp_put_be32(h + 16, len);
}

/* Answer a request with an error (structured: an ERROR chunk carrying msg;
 * simple: the error field).  Caller holds send_lock. */
static int reply_error_locked(struct nbd_conn *c, uint64_t cookie, int err,
			      const char *msg)
{
	uint8_t h[NBD_CHUNK_HDR_SIZE + 6];
	struct iovec iov[2];
	size_t ml = msg ? CP_MIN(strlen(msg), (size_t)1024) : 0;

	if (!c->structured) {
		cp_put_be32(h, NBD_SIMPLE_REPLY_MAGIC);
		cp_put_be32(h + 4, nbd_errno(err));
		cp_put_be64(h + 8, cookie);
		iov[0].iov_base = h;
		iov[0].iov_len = NBD_SIMPLE_REPLY_SIZE;
		return conn_writev_locked(c, iov, 1);
	}
	put_chunk_hdr(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie,
		      (uint32_t)(6 + ml));
	cp_put_be32(h + 20, nbd_errno(err));
	cp_put_be16(h + 24, (uint16_t)ml);
	iov[0].iov_base = h;
	iov[0].iov_len = sizeof(h);
	iov[1].iov_base = (void *)msg;
	iov[1].iov_len = ml;
	return conn_writev_locked(c, iov, ml ? 2 : 1);
}

static int reply_error(struct nbd_conn *c, uint64_t cookie, int err,
		       const char *msg)
{
	int r;

	pthread_mutex_lock(&c->send_lock);
	r = reply_error_locked(c, cookie, err, msg);
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

/* Success without data: a simple reply, or a NONE chunk with DONE.
 * Caller holds send_lock. */
static int reply_ok_locked(struct nbd_conn *c, uint64_t cookie)
{
	uint8_t h[NBD_CHUNK_HDR_SIZE];
	struct iovec iov;

	if (c->structured) {
		put_chunk_hdr(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
			      cookie, 0);
		iov.iov_len = NBD_CHUNK_HDR_SIZE;
	} else {
		cp_put_be32(h, NBD_SIMPLE_REPLY_MAGIC);
		cp_put_be32(h + 4, 0);
		cp_put_be64(h + 8, cookie);
		iov.iov_len = NBD_SIMPLE_REPLY_SIZE;
	}
	iov.iov_base = h;
	return conn_writev_locked(c, &iov, 1);
}

static int reply_ok(struct nbd_conn *c, uint64_t cookie)
{
	int r;

	pthread_mutex_lock(&c->send_lock);
	r = reply_ok_locked(c, cookie);
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

#define HOLE_GRAIN 4096u

/* Successful read: simple reply + data; structured with DF: one
 * OFFSET_DATA chunk; otherwise 4 KiB-aligned all-zero runs go out as
 * OFFSET_HOLE chunks.  Caller holds send_lock. */
static int reply_read_locked(struct nbd_conn *c, struct nbd_slot *sl,
			     const uint8_t *data)
{
	uint8_t h[NBD_CHUNK_HDR_SIZE + 12];
	struct iovec iov[2];
	uint64_t pos = 0;
	int r;

	if (!c->structured) {
		cp_put_be32(h, NBD_SIMPLE_REPLY_MAGIC);
		cp_put_be32(h + 4, 0);
		cp_put_be64(h + 8, sl->cookie);
		iov[0].iov_base = h;
		iov[0].iov_len = NBD_SIMPLE_REPLY_SIZE;
		iov[1].iov_base = (void *)data;
		iov[1].iov_len = sl->len;
		return conn_writev_locked(c, iov, sl->len ? 2 : 1);
	}
	if (sl->len == 0) {
		put_chunk_hdr(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
			      sl->cookie, 0);
		iov[0].iov_base = h;
		iov[0].iov_len = NBD_CHUNK_HDR_SIZE;
		return conn_writev_locked(c, iov, 1);
	}
	while (pos < sl->len) {
		/* A run of segments of one kind; segments end on HOLE_GRAIN
		 * boundaries of the export, and only whole all-zero grains
		 * are holes.  With DF the whole reply is one data chunk. */
		uint64_t end = pos;
		bool hole = false, first = true;
		while (end < sl->len) {
			uint64_t abs = sl->offset + end;
			uint64_t seg = CP_MIN(HOLE_GRAIN - abs % HOLE_GRAIN,
					      (uint64_t)sl->len - end);
			bool z = !(sl->flags & NBD_CMD_FLAG_DF) &&
				 seg == HOLE_GRAIN &&
				 cp_is_zero(data + end, HOLE_GRAIN);
			if (first)
				hole = z;
			else if (z != hole)
				break;
			first = false;
			end += seg;
		}
		uint16_t fl = end == sl->len ? NBD_REPLY_FLAG_DONE : 0;
		if (hole) {
			put_chunk_hdr(h, fl, NBD_REPLY_TYPE_OFFSET_HOLE,
				      sl->cookie, 12);
			cp_put_be64(h + 20, sl->offset + pos);
			cp_put_be32(h + 28, (uint32_t)(end - pos));
			iov[0].iov_base = h;
			iov[0].iov_len = NBD_CHUNK_HDR_SIZE + 12;
			r = conn_writev_locked(c, iov, 1);
		} else {
			put_chunk_hdr(h, fl, NBD_REPLY_TYPE_OFFSET_DATA,
				      sl->cookie, (uint32_t)(8 + end - pos));
			cp_put_be64(h + 20, sl->offset + pos);
			iov[0].iov_base = h;
			iov[0].iov_len = NBD_CHUNK_HDR_SIZE + 8;
			iov[1].iov_base = (void *)(data + pos);
			iov[1].iov_len = end - pos;
			r = conn_writev_locked(c, iov, 2);
		}
		if (r < 0)
			return r;
		pos = end;
	}
	return 0;
}

/* --- request slots ----------------------------------------------------------- */

static int conn_slots_init(struct nbd_conn *c)
{
	unsigned n = c->server->opts.max_inflight;

	c->slots = calloc(n, sizeof(*c->slots));
	if (!c->slots)
		return -ENOMEM;
	c->nslots = n;
	for (unsigned i = n; i-- > 0;) {
		c->slots[i].conn = c;
		c->slots[i].next = c->free_slots;
		c->free_slots = &c->slots[i];
	}
	return 0;
}

/* Take a free slot with a buffer of len bytes, waiting while the
 * connection is at its request or byte limit. */
static struct nbd_slot *slot_get(struct nbd_conn *c, uint32_t len)
{
	struct nbd_slot *sl;

	pthread_mutex_lock(&c->lock);
	while (!c->free_slots ||
	       (c->inflight && c->inflight_bytes + len > NBD_INFLIGHT_BYTES))
		pthread_cond_wait(&c->cond, &c->lock);
	sl = c->free_slots;
	c->free_slots = sl->next;
	c->inflight++;
	c->inflight_bytes += len;
	pthread_mutex_unlock(&c->lock);

	sl->len = len;
	sl->big = NULL;
	if (len > NBD_KEEP_BUF) {
		sl->big = cp_bdev_alloc_buf(len);
		sl->iov.iov_base = sl->big;
	} else {
		if (!sl->buf) {
			sl->buf = cp_bdev_alloc_buf(NBD_KEEP_BUF);
			sl->buf_size = sl->buf ? NBD_KEEP_BUF : 0;
		}
		sl->iov.iov_base = sl->buf;
	}
	sl->iov.iov_len = len;
	return sl;
}

static void slot_put(struct nbd_conn *c, struct nbd_slot *sl)
{
	if (sl->big) {
		cp_bdev_free_buf(sl->big);
		sl->big = NULL;
	}
	pthread_mutex_lock(&c->lock);
	c->inflight--;
	c->inflight_bytes -= sl->len;
	sl->next = c->free_slots;
	c->free_slots = sl;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* Engine completion: hand the slot to the sender. */
static void slot_io_cpl(void *opaque, int ret)
{
	struct nbd_slot *sl = opaque;
	struct nbd_conn *c = sl->conn;

	sl->ret = ret;
	sl->next = NULL;
	pthread_mutex_lock(&c->lock);
	if (c->done_tail)
		c->done_tail->next = sl;
	else
		c->done_head = sl;
	c->done_tail = sl;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static void account(struct nbd_export *e, int ret, uint64_t rd, uint64_t wr)
{
	atomic_fetch_add(&e->ops, 1);
	if (ret < 0)
		atomic_fetch_add(&e->errors, 1);
	else {
		if (rd)
			atomic_fetch_add(&e->bytes_read, rd);
		if (wr)
			atomic_fetch_add(&e->bytes_written, wr);
	}
}

/* True when a successful structured read goes out as one OFFSET_DATA
 * chunk: DF, data the engine mapped as allocated (as QEMU, holes follow
 * the image's allocation, not the bytes), or no whole all-zero grain to
 * send as a hole. */
static bool read_one_chunk(const struct nbd_slot *sl, const uint8_t *data)
{
	uint64_t pos = 0;

	if ((sl->flags & NBD_CMD_FLAG_DF) || sl->data)
		return true;
	pos = (HOLE_GRAIN - sl->offset % HOLE_GRAIN) % HOLE_GRAIN;
	for (; pos + HOLE_GRAIN <= sl->len; pos += HOLE_GRAIN)
		if (cp_is_zero(data + pos, HOLE_GRAIN))
			return false;
	return true;
}

/* Replies gathered for one sendmsg(): common replies (write done, read
 * as one chunk) of all the slots the sender found queued together. */
#define BATCH_SLOTS 32
struct batch {
	struct nbd_slot *slots[BATCH_SLOTS];
	int ret[BATCH_SLOTS];
	struct iovec iov[2 * BATCH_SLOTS];
	int nslots, niov;
};

static void batch_flush(struct nbd_conn *c, struct batch *b)
{
	struct nbd_export *e = c->exp;

	/* Counted before the replies go out: a client that has its answer
	 * sees it in the stats (cp_nbd_server_list_exports). */
	for (int i = 0; i < b->nslots; i++) {
		struct nbd_slot *sl = b->slots[i];
		account(e, b->ret[i], sl->type == NBD_CMD_READ ? sl->len : 0,
			sl->type == NBD_CMD_WRITE ? sl->len : 0);
	}
	if (b->niov) {
		pthread_mutex_lock(&c->send_lock);
		conn_writev_locked(c, b->iov, b->niov);
		pthread_mutex_unlock(&c->send_lock);
	}
	for (int i = 0; i < b->nslots; i++)
		slot_put(c, b->slots[i]);
	b->nslots = b->niov = 0;
}

/* Put sl's reply in the batch if it has the common shape; false if it
 * must be sent on its own. */
static bool batch_add(struct nbd_conn *c, struct batch *b,
		      struct nbd_slot *sl, int ret)
{
	uint8_t *h = sl->hdr;
	size_t hl;

	if (ret < 0)
		return false;
	if (sl->type == NBD_CMD_READ && sl->len && c->structured) {
		if (!read_one_chunk(sl, sl->iov.iov_base))
			return false;
		put_chunk_hdr(h, NBD_REPLY_FLAG_DONE,
			      NBD_REPLY_TYPE_OFFSET_DATA, sl->cookie,
			      8 + sl->len);
		cp_put_be64(h + 20, sl->offset);
		hl = NBD_CHUNK_HDR_SIZE + 8;
	} else if (sl->type == NBD_CMD_READ && sl->len) {
		cp_put_be32(h, NBD_SIMPLE_REPLY_MAGIC);
		cp_put_be32(h + 4, 0);
		cp_put_be64(h + 8, sl->cookie);
		hl = NBD_SIMPLE_REPLY_SIZE;
	} else if (sl->type == NBD_CMD_WRITE) {
		if (c->structured) {
			put_chunk_hdr(h, NBD_REPLY_FLAG_DONE,
				      NBD_REPLY_TYPE_NONE, sl->cookie, 0);
			hl = NBD_CHUNK_HDR_SIZE;
		} else {
			cp_put_be32(h, NBD_SIMPLE_REPLY_MAGIC);
			cp_put_be32(h + 4, 0);
			cp_put_be64(h + 8, sl->cookie);
			hl = NBD_SIMPLE_REPLY_SIZE;
		}
	} else {
		return false;
	}
	if (b->nslots == BATCH_SLOTS)
		batch_flush(c, b);
	b->iov[b->niov].iov_base = h;
	b->iov[b->niov++].iov_len = hl;
	if (sl->type == NBD_CMD_READ) {
		b->iov[b->niov].iov_base = sl->iov.iov_base;
		b->iov[b->niov++].iov_len = sl->len;
	}
	b->slots[b->nslots] = sl;
	b->ret[b->nslots++] = ret;
	return true;
}

/* The sender thread: replies for completed READ and WRITE slots.  It
 * takes every queued slot at once and sends the common replies with one
 * sendmsg(). */
static void *sender_thread(void *arg)
{
	struct nbd_conn *c = arg;
	struct nbd_export *e = c->exp;
	struct batch b = { .nslots = 0, .niov = 0 };

	for (;;) {
		struct nbd_slot *sl, *next;

		pthread_mutex_lock(&c->lock);
		while (!c->done_head && !c->sender_quit)
			pthread_cond_wait(&c->cond, &c->lock);
		sl = c->done_head;
		c->done_head = c->done_tail = NULL;
		pthread_mutex_unlock(&c->lock);
		if (!sl)
			break;

		for (; sl; sl = next) {
			int ret = sl->ret;
			next = sl->next;
			if (ret == 0 && sl->type == NBD_CMD_WRITE &&
			    (sl->flags & NBD_CMD_FLAG_FUA))
				ret = cp_image_flush(e->img);
			if (batch_add(c, &b, sl, ret))
				continue;
			batch_flush(c, &b); /* keep replies in order */
			account(e, ret, sl->type == NBD_CMD_READ ? sl->len : 0,
				sl->type == NBD_CMD_WRITE ? sl->len : 0);
			pthread_mutex_lock(&c->send_lock);
			if (ret < 0)
				reply_error_locked(c, sl->cookie, ret,
						   sl->type == NBD_CMD_READ ?
						   "read failed" :
						   "write failed");
			else if (sl->type == NBD_CMD_READ)
				reply_read_locked(c, sl, sl->iov.iov_base);
			else
				reply_ok_locked(c, sl->cookie);
			pthread_mutex_unlock(&c->send_lock);
			slot_put(c, sl);
		}
		batch_flush(c, &b);
	}
	return NULL;
}

/* --- transmission: synchronous commands ------------------------------------- */

struct extents {
	uint8_t *buf;       /* pairs of be32 length, be32 flags */
	unsigned n, max;
	uint32_t last_flags;
};

/* Append (or merge into the last extent) len bytes of flags.  Returns
 * false when the reply is full and this range could not be added: the
 * last extent keeps growing while the status stays the same, so a run is
 * not cut at the extent limit. */
static bool extents_add(struct extents *x, uint64_t len, uint32_t flags)
{
	while (len) {
		if (x->n && x->last_flags == flags) {
			uint8_t *p = x->buf + 8 * (x->n - 1);
			uint64_t cur = cp_be32(p);
			uint64_t add = CP_MIN(len, (uint64_t)UINT32_MAX - cur);
			if (add) {
				cp_put_be32(p, (uint32_t)(cur + add));
				len -= add;
				continue;
			}
		}
		if (x->n == x->max)
			return false;
		uint64_t l = CP_MIN(len, (uint64_t)UINT32_MAX);
		cp_put_be32(x->buf + 8 * x->n, (uint32_t)l);
		cp_put_be32(x->buf + 8 * x->n + 4, flags);
		x->n++;
		x->last_flags = flags;
		len -= l;
	}
	return true;
}

/* base:allocation: the chain's status as qemu-img map sees it. */
static int status_base(struct nbd_export *e, uint64_t off, uint64_t len,
		       struct extents *x)
{
	while (len) {
		struct cp_extent ext;
		int r = cp_image_map(e->img, off, len, &ext);
		if (r < 0)
			return r;
		if (ext.length == 0)
			return -EIO;
		uint64_t l = CP_MIN(ext.length, len);
		if (!extents_add(x, l, (ext.data ? 0 : NBD_STATE_HOLE) |
				       (ext.zero ? NBD_STATE_ZERO : 0)))
			break;
		off += l;
		len -= l;
	}
	return 0;
}

/* qemu:allocation-depth: 0 unallocated, N = allocated in the Nth layer
 * (1 = the top). */
static int status_depth(struct nbd_export *e, uint64_t off, uint64_t len,
			struct extents *x)
{
	while (len) {
		uint64_t n = len;
		uint32_t depth = 0, d = 1;
		for (cp_image *l = e->img; l; l = cp_image_backing(l), d++) {
			uint64_t lsize = cp_image_size(l), pnum = 0;
			int r;
			if (off >= lsize) {
				/* past the end of a shorter backing layer:
				 * that layer provides the zeroes (qemu counts
				 * it as allocated there) */
				depth = d;
				break;
			}
			r = cp_image_is_allocated(l, off, CP_MIN(n, lsize - off),
						  &pnum);
			if (r < 0)
				return r;
			if (pnum == 0)
				return -EIO;
			if (r == 1) {
				depth = d;
				n = CP_MIN(n, pnum);
				break;
			}
			n = CP_MIN(n, pnum);
		}
		if (!extents_add(x, n, depth))
			break;
		off += n;
		len -= n;
	}
	return 0;
}

static int cmd_block_status(struct nbd_conn *c, uint16_t flags,
			    uint64_t cookie, uint64_t off, uint32_t len)
{
	struct nbd_export *e = c->exp;
	uint8_t *buf = c->opt_buf; /* free during transmission */
	unsigned max = (flags & NBD_CMD_FLAG_REQ_ONE) ? 1 :
		       CP_MIN((unsigned)NBD_MAX_EXTENTS,
			      (unsigned)((sizeof(c->opt_buf) / 2 - 4) / 8));
	uint64_t l = CP_MIN((uint64_t)len, e->size - off);
	struct extents xb = { .buf = buf + 4, .max = max };
	struct extents xd = { .buf = buf + sizeof(c->opt_buf) / 2 + 4,
			      .max = max };
	uint8_t h[2][NBD_CHUNK_HDR_SIZE];
	struct iovec iov[4];
	int n = 0, r = 0;

	if (c->ctx_base)
		r = status_base(e, off, l, &xb);
	if (r == 0 && c->ctx_depth)
		r = status_depth(e, off, l, &xd);
	if (r < 0)
		return reply_error(c, cookie, r, cp_error_msg(r));
	if (c->ctx_base) {
		cp_put_be32(xb.buf - 4, NBD_CTX_BASE_ALLOCATION);
		put_chunk_hdr(h[0], c->ctx_depth ? 0 : NBD_REPLY_FLAG_DONE,
			      NBD_REPLY_TYPE_BLOCK_STATUS, cookie,
			      4 + 8 * xb.n);
		iov[n].iov_base = h[0];
		iov[n++].iov_len = NBD_CHUNK_HDR_SIZE;
		iov[n].iov_base = xb.buf - 4;
		iov[n++].iov_len = 4 + 8 * xb.n;
	}
	if (c->ctx_depth) {
		cp_put_be32(xd.buf - 4, NBD_CTX_ALLOCATION_DEPTH);
		put_chunk_hdr(h[1], NBD_REPLY_FLAG_DONE,
			      NBD_REPLY_TYPE_BLOCK_STATUS, cookie,
			      4 + 8 * xd.n);
		iov[n].iov_base = h[1];
		iov[n++].iov_len = NBD_CHUNK_HDR_SIZE;
		iov[n].iov_base = xd.buf - 4;
		iov[n++].iov_len = 4 + 8 * xd.n;
	}
	pthread_mutex_lock(&c->send_lock);
	r = conn_writev_locked(c, iov, n);
	pthread_mutex_unlock(&c->send_lock);
	return r;
}

static int do_write_zeroes(struct nbd_export *e, uint16_t flags,
			   uint64_t off, uint64_t len)
{
	unsigned zf = 0;
	int r;

	if (!(flags & NBD_CMD_FLAG_NO_HOLE) && e->unmap)
		zf |= CP_ZERO_MAY_UNMAP;
	if (flags & NBD_CMD_FLAG_FAST_ZERO) {
		/* Fast only when no data has to be written: qcow2 version 3
		 * zero clusters over whole clusters, or raw files. */
		struct cp_image_info info;
		uint32_t cs = cp_image_cluster_size(e->img);
		if (cp_image_format(e->img) == CP_FMT_QCOW2) {
			if (cp_image_get_info(e->img, &info) < 0 ||
			    info.qcow_version < 3 || off % cs ||
			    ((off + len) % cs && off + len != e->size))
				return cp_error(-ENOTSUP, "zeroing is not fast here");
		}
	}
	r = cp_image_write_zeroes(e->img, off, len, zf);
	if (r == 0 && (flags & NBD_CMD_FLAG_FUA))
		r = cp_image_flush(e->img);
	return r;
}

/* --- transmission loop --------------------------------------------------------- */

static uint16_t valid_flags(struct nbd_conn *c, uint16_t type)
{
	uint16_t v = NBD_CMD_FLAG_FUA;

	if (type == NBD_CMD_READ && c->structured)
		v |= NBD_CMD_FLAG_DF;
	if (type == NBD_CMD_WRITE_ZEROES)
		v |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
	if (type == NBD_CMD_BLOCK_STATUS)
		v |= NBD_CMD_FLAG_REQ_ONE;
	return v;
}

/* Returns 0 to continue, < 0 to stop (DISC, socket error, or a request
 * whose payload cannot be skipped). */
static int conn_request(struct nbd_conn *c)
{
	struct nbd_export *e = c->exp;
	uint8_t rq[NBD_REQUEST_SIZE];
	uint16_t flags, type;
	uint64_t cookie, off;
	uint32_t len;
	int r, err = 0;
	const char *msg = NULL;

	r = conn_read(c, rq, sizeof(rq));
	if (r < 0)
		return r;
	if (cp_be32(rq) != NBD_REQUEST_MAGIC)
		return -EINVAL;
	flags = cp_be16(rq + 4);
	type = cp_be16(rq + 6);
	cookie = cp_be64(rq + 8);
	off = cp_be64(rq + 16);
	len = cp_be32(rq + 24);

	if (type == NBD_CMD_DISC)
		return -ECONNRESET;

	if (type == NBD_CMD_WRITE) {
		struct nbd_slot *sl;
		if (len > CP_NBD_MAX_PAYLOAD) {
			/* The payload cannot be skipped safely: answer and
			 * disconnect, as qemu-nbd does. */
			reply_error(c, cookie, -EINVAL, "request too large");
			return -EINVAL;
		}
		sl = slot_get(c, len);
		if (!sl->iov.iov_base && len) {
			slot_put(c, sl);
			conn_skip(c, len);
			return reply_error(c, cookie, -ENOMEM, "out of memory");
		}
		r = conn_read(c, sl->iov.iov_base, len);
		if (r < 0) {
			slot_put(c, sl);
			return r;
		}
		if (flags & ~valid_flags(c, type)) {
			err = -EINVAL, msg = "invalid flags";
		} else if (e->readonly) {
			err = -EPERM, msg = "export is read-only";
		} else if (off > e->size || len > e->size - off) {
			err = -ENOSPC, msg = "write past the end of the export";
		} else if (e->detect_zeroes != CP_NBD_DETECT_ZEROES_OFF &&
			   cp_is_zero(sl->iov.iov_base, len)) {
			uint16_t zfl = flags & NBD_CMD_FLAG_FUA;
			if (e->detect_zeroes != CP_NBD_DETECT_ZEROES_UNMAP)
				zfl |= NBD_CMD_FLAG_NO_HOLE;
			r = do_write_zeroes(e, zfl, off, len);
			slot_put(c, sl);
			account(e, r, 0, len);
			if (r < 0)
				return reply_error(c, cookie, r,
						   cp_error_msg(r));
			return reply_ok(c, cookie);
		}
		if (err) {
			slot_put(c, sl);
			account(e, err, 0, 0);
			return reply_error(c, cookie, err, msg);
		}
		sl->flags = flags;
		sl->type = type;
		sl->cookie = cookie;
		sl->offset = off;
		r = cp_image_pwritev_async(e->img, &sl->iov, 1, off,
					   slot_io_cpl, sl);
		if (r < 0)
			slot_io_cpl(sl, r);
		return 0;
	}

	if (flags & ~valid_flags(c, type)) {
		err = -EINVAL, msg = "invalid flags";
		goto fail;
	}
	switch (type) {
	case NBD_CMD_READ: {
		struct nbd_slot *sl;
		if (len > CP_NBD_MAX_PAYLOAD) {
			err = -EINVAL, msg = "request too large";
			goto fail;
		}
		if (off > e->size || len > e->size - off) {
			err = -EINVAL, msg = "read past the end of the export";
			goto fail;
		}
		sl = slot_get(c, len);
		if (!sl->iov.iov_base && len) {
			slot_put(c, sl);
			err = -ENOMEM, msg = "out of memory";
			goto fail;
		}
		sl->flags = flags;
		sl->type = type;
		sl->cookie = cookie;
		sl->offset = off;
		if (len == 0) {
			slot_io_cpl(sl, 0);
			return 0;
		}
		r = cp_image_preadv_async_data(e->img, &sl->iov, 1, off,
					       slot_io_cpl, sl, &sl->data);
		if (r < 0)
			slot_io_cpl(sl, r);
		return 0;
	}
	case NBD_CMD_FLUSH:
		r = cp_image_flush(e->img);
		break;
	case NBD_CMD_TRIM:
	case NBD_CMD_WRITE_ZEROES:
		if (e->readonly) {
			err = -EPERM, msg = "export is read-only";
			goto fail;
		}
		if (off > e->size || len > e->size - off) {
			err = type == NBD_CMD_TRIM ? -EINVAL : -ENOSPC;
			msg = "request past the end of the export";
			goto fail;
		}
		if (type == NBD_CMD_WRITE_ZEROES) {
			r = do_write_zeroes(e, flags, off, len);
		} else {
			r = e->unmap && len ? cp_image_discard(e->img, off, len)
					    : 0;
			if (r == 0 && (flags & NBD_CMD_FLAG_FUA))
				r = cp_image_flush(e->img);
		}
		break;
	case NBD_CMD_CACHE:
		if (off > e->size || len > e->size - off) {
			err = -EINVAL, msg = "request past the end of the export";
			goto fail;
		}
		r = 0; /* advisory; nothing to prefetch into */
		break;
	case NBD_CMD_BLOCK_STATUS:
		if (!c->ctx_base && !c->ctx_depth) {
			err = -EINVAL, msg = "no metadata context selected";
			goto fail;
		}
		if (len == 0 || off >= e->size) {
			err = -EINVAL, msg = "bad block status range";
			goto fail;
		}
		account(e, 0, 0, 0); /* before the reply, as the others */
		r = cmd_block_status(c, flags, cookie, off, len);
		return r < 0 && c->dead ? r : 0;
	default:
		err = -EINVAL, msg = "unknown command";
		goto fail;
	}
	account(e, r, 0, 0);
	if (r < 0)
		return reply_error(c, cookie, r, cp_error_msg(r)) < 0 &&
		       c->dead ? -EPIPE : 0;
	return reply_ok(c, cookie) < 0 ? -EPIPE : 0;
fail:
	account(e, err, 0, 0);
	return reply_error(c, cookie, err, msg) < 0 ? -EPIPE : 0;
}

/* --- connection lifetime ---------------------------------------------------------- */

void nbd_conn_run(cp_nbd_server *s, int fd)
{
	struct nbd_conn *c = calloc(1, sizeof(*c));
	pthread_t sender;
	bool sender_started = false;
	cp_nbd_server *srv = s;

	if (!c) {
		close(fd);
		return;
	}
	c->server = s;
	c->fd = fd;
	c->state = NBD_CONN_HANDSHAKE;
	if (s->opts.handshake_timeout_ms)
		c->deadline_ms = now_ms() + s->opts.handshake_timeout_ms;
	pthread_mutex_init(&c->send_lock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	pthread_mutex_lock(&srv->lock);
	c->next = srv->conns;
	srv->conns = c;
	if (srv->stopping)
		shutdown(fd, SHUT_RDWR);
	pthread_mutex_unlock(&srv->lock);

	if (conn_handshake(c) < 0 || !c->exp)
		goto out;
	if (conn_slots_init(c) < 0)
		goto out;
	{
		pthread_attr_t attr;
		int pr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, NBD_THREAD_STACK);
		pr = pthread_create(&sender, &attr, sender_thread, c);
		pthread_attr_destroy(&attr);
		if (pr != 0)
			goto out;
	}
	sender_started = true;
	while (conn_request(c) == 0 && !c->dead)
		;
	c->state = NBD_CONN_CLOSING;
	/* Wait for every in-flight request: its buffer belongs to the
	 * engine until the completion ran and the reply went out. */
	pthread_mutex_lock(&c->lock);
	while (c->inflight)
		pthread_cond_wait(&c->cond, &c->lock);
	c->sender_quit = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
out:
	if (sender_started)
		pthread_join(sender, NULL);
	pthread_mutex_lock(&srv->lock);
	for (struct nbd_conn **pp = &srv->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	pthread_mutex_unlock(&srv->lock);
	nbd_tls_session_end(c->tls);
	close(fd);
	if (c->exp) {
		nbd_export_detach(srv, c->exp);
		nbd_export_put(srv, c->exp);
	}
	for (unsigned i = 0; i < c->nslots; i++)
		cp_bdev_free_buf(c->slots[i].buf);
	free(c->slots);
	free(c->ctx_export);
	pthread_mutex_destroy(&c->send_lock);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c);
}
