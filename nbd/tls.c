/* nbd/tls.c - TLS for NBD connections (GnuTLS): X.509 and PSK credentials,
 * one session per connection after NBD_OPT_STARTTLS. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "nbd_int.h"

#if CP_HAVE_GNUTLS
#include <gnutls/gnutls.h>

struct psk_entry {
	char *identity;
	uint8_t *key;
	size_t key_len;
};

struct nbd_tls {
	gnutls_certificate_credentials_t x509;
	gnutls_psk_server_credentials_t psk;
	struct psk_entry *keys;
	size_t nkeys;
	bool verify_peer;
};

struct nbd_tls_session {
	gnutls_session_t s;
};

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parse "identity:hexkey" lines (blank lines ignored). */
static int psk_parse(struct nbd_tls *t, const char *text)
{
	const char *p = text;
	unsigned line = 0;

	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);
		const char *colon = memchr(p, ':', n);
		struct psk_entry *e, *nk;
		size_t il, hl;

		line++;
		while (n && (p[n - 1] == '\r' || p[n - 1] == ' '))
			n--;
		if (n == 0)
			goto next;
		if (!colon || colon == p)
			return cp_error(-EINVAL, "PSK line %u: expected "
					"identity:hexkey", line);
		il = (size_t)(colon - p);
		hl = n - il - 1;
		if (hl == 0 || hl % 2)
			return cp_error(-EINVAL, "PSK line %u: bad key", line);
		nk = realloc(t->keys, (t->nkeys + 1) * sizeof(*nk));
		if (!nk)
			return cp_error(-ENOMEM, "out of memory");
		t->keys = nk;
		e = &t->keys[t->nkeys];
		e->identity = strndup(p, il);
		e->key = malloc(hl / 2);
		e->key_len = hl / 2;
		if (!e->identity || !e->key) {
			free(e->identity);
			free(e->key);
			return cp_error(-ENOMEM, "out of memory");
		}
		t->nkeys++;
		for (size_t i = 0; i < hl / 2; i++) {
			int hi = hexval(colon[1 + 2 * i]);
			int lo = hexval(colon[2 + 2 * i]);
			if (hi < 0 || lo < 0)
				return cp_error(-EINVAL,
						"PSK line %u: key is not hex",
						line);
			e->key[i] = (uint8_t)(hi << 4 | lo);
		}
next:
		p += eol ? (size_t)(eol - p) + 1 : strlen(p);
	}
	if (!t->nkeys)
		return cp_error(-EINVAL, "PSK list has no key");
	return 0;
}

static int psk_lookup(gnutls_session_t s, const char *user,
		      gnutls_datum_t *key)
{
	struct nbd_tls *t = gnutls_session_get_ptr(s);

	for (size_t i = 0; i < t->nkeys; i++)
		if (strcmp(t->keys[i].identity, user) == 0) {
			key->data = gnutls_malloc(t->keys[i].key_len);
			if (!key->data)
				return -1;
			memcpy(key->data, t->keys[i].key, t->keys[i].key_len);
			key->size = (unsigned)t->keys[i].key_len;
			return 0;
		}
	return -1;
}

void nbd_tls_destroy(struct nbd_tls *t)
{
	if (!t)
		return;
	if (t->x509)
		gnutls_certificate_free_credentials(t->x509);
	if (t->psk)
		gnutls_psk_free_server_credentials(t->psk);
	for (size_t i = 0; i < t->nkeys; i++) {
		free(t->keys[i].identity);
		explicit_bzero(t->keys[i].key, t->keys[i].key_len);
		free(t->keys[i].key);
	}
	free(t->keys);
	free(t);
}

static gnutls_datum_t datum(const char *s)
{
	gnutls_datum_t d = { .data = (unsigned char *)s,
			     .size = (unsigned)strlen(s) };
	return d;
}

int nbd_tls_create(const struct cp_nbd_tls_opts *o, struct nbd_tls **out)
{
	struct nbd_tls *t;
	int r;

	*out = NULL;
	if (o->size != sizeof(*o))
		return cp_error(-EINVAL, "nbd: TLS options of unknown size");
	if (!o->cert_pem && !o->psk)
		return cp_error(-EINVAL, "nbd: TLS needs a certificate or PSKs");
	if (o->cert_pem && !o->key_pem)
		return cp_error(-EINVAL, "nbd: TLS certificate without a key");
	if (o->verify_peer && !o->ca_pem)
		return cp_error(-EINVAL, "nbd: verifying clients needs a CA");
	t = calloc(1, sizeof(*t));
	if (!t)
		return cp_error(-ENOMEM, "out of memory");
	t->verify_peer = o->verify_peer;
	if (o->cert_pem) {
		gnutls_datum_t c = datum(o->cert_pem), k = datum(o->key_pem);
		r = gnutls_certificate_allocate_credentials(&t->x509);
		if (r == 0)
			r = gnutls_certificate_set_x509_key_mem(
			    t->x509, &c, &k, GNUTLS_X509_FMT_PEM);
		if (r < 0) {
			nbd_tls_destroy(t);
			return cp_error(-EINVAL, "TLS certificate or key: %s",
					gnutls_strerror(r));
		}
		if (o->ca_pem) {
			gnutls_datum_t ca = datum(o->ca_pem);
			r = gnutls_certificate_set_x509_trust_mem(
			    t->x509, &ca, GNUTLS_X509_FMT_PEM);
			if (r < 0) {
				nbd_tls_destroy(t);
				return cp_error(-EINVAL, "TLS CA: %s",
						gnutls_strerror(r));
			}
		}
	}
	if (o->psk) {
		r = psk_parse(t, o->psk);
		if (r < 0) {
			nbd_tls_destroy(t);
			return r;
		}
		if (gnutls_psk_allocate_server_credentials(&t->psk) < 0) {
			nbd_tls_destroy(t);
			return cp_error(-ENOMEM, "out of memory");
		}
		gnutls_psk_set_server_credentials_function(t->psk, psk_lookup);
	}
	*out = t;
	return 0;
}

/* send() without SIGPIPE: the server may be embedded in a process that
 * does not ignore it. */
static ssize_t tls_push(gnutls_transport_ptr_t ptr, const void *buf,
			size_t len)
{
	return send((int)(intptr_t)ptr, buf, len, MSG_NOSIGNAL);
}

int nbd_tls_session_start(struct nbd_tls *t, int fd, unsigned timeout_ms,
			  struct nbd_tls_session **out)
{
	struct nbd_tls_session *ts = calloc(1, sizeof(*ts));
	int r;

	*out = NULL;
	if (!ts)
		return -ENOMEM;
	r = gnutls_init(&ts->s, GNUTLS_SERVER);
	if (r < 0) {
		free(ts);
		return -ENOMEM;
	}
	gnutls_session_set_ptr(ts->s, t);
	r = gnutls_priority_set_direct(
	    ts->s, t->psk ? "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK" : "NORMAL",
	    NULL);
	if (r == 0 && t->x509)
		r = gnutls_credentials_set(ts->s, GNUTLS_CRD_CERTIFICATE,
					   t->x509);
	if (r == 0 && t->psk)
		r = gnutls_credentials_set(ts->s, GNUTLS_CRD_PSK, t->psk);
	if (r < 0)
		goto fail;
	if (t->x509 && t->verify_peer)
		gnutls_certificate_server_set_request(ts->s,
						      GNUTLS_CERT_REQUIRE);
	gnutls_transport_set_int(ts->s, fd);
	gnutls_transport_set_push_function(ts->s, tls_push);
	if (timeout_ms)
		gnutls_handshake_set_timeout(ts->s, timeout_ms);
	do {
		r = gnutls_handshake(ts->s);
	} while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0)
		goto fail;
	if (t->x509 && t->verify_peer &&
	    gnutls_auth_get_type(ts->s) == GNUTLS_CRD_CERTIFICATE) {
		unsigned status = 0;
		if (gnutls_certificate_verify_peers2(ts->s, &status) < 0 ||
		    status != 0) {
			r = -1;
			goto fail;
		}
	}
	*out = ts;
	return 0;
fail:
	gnutls_deinit(ts->s);
	free(ts);
	return -EPROTO;
}

void nbd_tls_session_end(struct nbd_tls_session *ts)
{
	if (!ts)
		return;
	gnutls_deinit(ts->s);
	free(ts);
}

/* nbd_tls_recv() into rbuf, or nbd_tls_send() of wbuf (rbuf NULL). */
static ssize_t tls_record(struct nbd_tls_session *ts, void *rbuf,
			  const void *wbuf, size_t len)
{
	for (;;) {
		ssize_t r = rbuf ? gnutls_record_recv(ts->s, rbuf, len)
				 : gnutls_record_send(ts->s, wbuf, len);
		if (r >= 0)
			return r;
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
			continue;
		if (rbuf && r == GNUTLS_E_PREMATURE_TERMINATION)
			return 0;
		return rbuf ? -EIO : -EPIPE;
	}
}

ssize_t nbd_tls_recv(struct nbd_tls_session *ts, void *buf, size_t len)
{
	return tls_record(ts, buf, NULL, len);
}

ssize_t nbd_tls_send(struct nbd_tls_session *ts, const void *buf, size_t len)
{
	return tls_record(ts, NULL, buf, len);
}

size_t nbd_tls_pending(struct nbd_tls_session *ts)
{
	return gnutls_record_check_pending(ts->s);
}

#else /* !CP_HAVE_GNUTLS */

int nbd_tls_create(const struct cp_nbd_tls_opts *o, struct nbd_tls **out)
{
	(void)o;
	*out = NULL;
	return cp_error(-ENOTSUP, "nbd: cowpool was built without GnuTLS");
}

void nbd_tls_destroy(struct nbd_tls *t)
{
	(void)t;
}

int nbd_tls_session_start(struct nbd_tls *t, int fd, unsigned timeout_ms,
			  struct nbd_tls_session **out)
{
	(void)t, (void)fd, (void)timeout_ms;
	*out = NULL;
	return -ENOTSUP;
}

void nbd_tls_session_end(struct nbd_tls_session *ts)
{
	(void)ts;
}

ssize_t nbd_tls_recv(struct nbd_tls_session *ts, void *buf, size_t len)
{
	(void)ts, (void)buf, (void)len;
	return -ENOTSUP;
}

ssize_t nbd_tls_send(struct nbd_tls_session *ts, const void *buf, size_t len)
{
	(void)ts, (void)buf, (void)len;
	return -ENOTSUP;
}

size_t nbd_tls_pending(struct nbd_tls_session *ts)
{
	(void)ts;
	return 0;
}
#endif

void cp_nbd_tls_opts_init(struct cp_nbd_tls_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
}
