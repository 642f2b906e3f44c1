/* nbd/nbd.h - the cowpool NBD server (public header).
 *
 * A cp_nbd_server serves named exports, each a cp_image chain, to NBD
 * clients (QEMU, qemu-img, nbdcopy, nbdinfo, fio) using the fixed newstyle
 * handshake and structured replies.  It is embedded by `cowpool nbd` (one
 * export, qemu-nbd's flags) and by cowpoold (exports added and removed at
 * run time).
 *
 * Threads: every function may be called from any thread, except
 * cp_nbd_server_destroy() (no other call on the server may be running or
 * start).  The server runs one accept thread (after cp_nbd_server_start())
 * and two threads per connection (a reader that parses requests and submits
 * asynchronous image I/O, a sender that writes replies as I/O completes).
 *
 * Errors: int functions return >= 0 on success, -errno on failure with a
 * message in cp_last_error().  The library never prints.
 */
#ifndef CP_NBD_H
#define CP_NBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cp_nbd_server cp_nbd_server;

/* Largest payload of one request (NBD_CMD_READ / NBD_CMD_WRITE), also the
 * maximum block size advertised with NBD_INFO_BLOCK_SIZE. */
#define CP_NBD_MAX_PAYLOAD (32u << 20)

/* TLS with GnuTLS.  When a server has TLS options, TLS is mandatory: a
 * client must send NBD_OPT_STARTTLS before anything but NBD_OPT_ABORT
 * (other options get NBD_REP_ERR_TLS_REQD).  The library reads no files:
 * the caller passes the PEM text and the PSK list (cowpool nbd reads
 * them from --tls-creds DIR / --tls-psk FILE).  Every string is copied at
 * cp_nbd_server_create().  X.509 and PSK may be combined. */
struct cp_nbd_tls_opts {
	size_t size;             /* sizeof(struct cp_nbd_tls_opts), set by _init */
	const char *cert_pem;    /* server certificate (chain), PEM; NULL = no X.509 */
	const char *key_pem;     /* its private key, PEM */
	const char *ca_pem;      /* CA certificates, PEM; NULL = none */
	/* Require a client certificate signed by ca_pem (qemu's
	 * verify-peer=on).  Default false. */
	bool verify_peer;
	/* PSK identities in qemu's keys.psk format: lines "identity:hexkey".
	 * NULL = no PSK. */
	const char *psk;
};
void cp_nbd_tls_opts_init(struct cp_nbd_tls_opts *opts);

struct cp_nbd_server_opts {
	size_t size;              /* sizeof(struct cp_nbd_server_opts), set by _init */
	/* Concurrent clients over all exports; 0 = unlimited.  At the limit
	 * the server stops accepting (clients wait in the listen backlog),
	 * as qemu-nbd -e does.  Default 0. */
	unsigned max_clients;
	/* A client that has not finished the handshake (reached NBD_OPT_GO
	 * or NBD_OPT_EXPORT_NAME) within this many milliseconds is
	 * disconnected; 0 = never.  Default 10000. */
	unsigned handshake_timeout_ms;
	/* Requests in flight per connection (further requests wait in the
	 * socket).  Default 64, at most 1024. */
	unsigned max_inflight;
	/* When true, the server stops once a client has connected and the
	 * number of clients has dropped back to zero (qemu-nbd without -t):
	 * it stops accepting and cp_nbd_server_done_fd() becomes readable. */
	bool oneshot;
	/* NULL = no TLS (STARTTLS answered NBD_REP_ERR_POLICY).  -ENOTSUP
	 * from create when cowpool was built without GnuTLS. */
	const struct cp_nbd_tls_opts *tls;
};
void cp_nbd_server_opts_init(struct cp_nbd_server_opts *opts);

/* Allocate a server with no listener and no export. */
int cp_nbd_server_create(const struct cp_nbd_server_opts *opts,
			 cp_nbd_server **out);

/* Listen on a unix socket at path (an existing socket file there is
 * replaced, as qemu-nbd does; the file is removed by destroy).  May be
 * called several times, before or after start. */
int cp_nbd_server_listen_unix(cp_nbd_server *s, const char *path);
/* Listen on TCP addr:port (addr NULL = all interfaces, port "10809").
 * The caller decides whether plain TCP is acceptable (see `cowpool nbd`). */
int cp_nbd_server_listen_tcp(cp_nbd_server *s, const char *addr,
			     const char *port);
/* Start the accept thread.  Listeners added later are picked up. */
int cp_nbd_server_start(cp_nbd_server *s);

/* Serve one already connected socket (or socketpair end) on the calling
 * thread: handshake, then transmission until the client disconnects.
 * Returns when the connection is over and all of its I/O has completed;
 * fd is closed by then.  Counts against max_clients like an accepted
 * client (returns -EBUSY at the limit, and closes fd).  Used by tests and
 * the fuzzer; the accept thread uses the same path. */
int cp_nbd_server_serve_fd(cp_nbd_server *s, int fd);

/* An eventfd-like descriptor that becomes readable when a oneshot server
 * has served its last client.  Owned by the server. */
int cp_nbd_server_done_fd(const cp_nbd_server *s);

/* Stop accepting, disconnect every client (shutdown of their sockets),
 * wait for their threads and in-flight I/O, release every export (each
 * release callback runs once) and free.  NULL is a no-op. */
void cp_nbd_server_destroy(cp_nbd_server *s);

/* --- exports ---------------------------------------------------------------
 * Ownership: the server borrows img.  When an export is removed (or the
 * server destroyed) and its last connection is gone, release(opaque, img)
 * runs exactly once, on whichever thread dropped the last reference (the
 * caller of remove/destroy, or a connection thread); the caller may close
 * the image there.  release may be NULL (the caller then knows the image
 * is unused only after cp_nbd_server_destroy() returns). */
typedef void (*cp_nbd_release_fn)(void *opaque, cp_image *img);

enum cp_nbd_detect_zeroes {
	CP_NBD_DETECT_ZEROES_OFF = 0,
	CP_NBD_DETECT_ZEROES_ON = 1,    /* all-zero writes become write zeroes */
	CP_NBD_DETECT_ZEROES_UNMAP = 2, /* ... that may deallocate (with unmap) */
};

struct cp_nbd_export_opts {
	size_t size;             /* sizeof(struct cp_nbd_export_opts), set by _init */
	const char *name;        /* export name (copied); "" is valid */
	const char *description; /* NBD_INFO_DESCRIPTION (copied); NULL = none */
	cp_image *img;           /* borrowed, see above */
	bool readonly;           /* refuse writes (also if img is read-only) */
	/* TRIM and write zeroes without NO_HOLE may deallocate (qemu-nbd
	 * --discard=unmap).  false: TRIM succeeds and does nothing. */
	bool unmap;
	enum cp_nbd_detect_zeroes detect_zeroes;
	bool allocation_depth;   /* offer the qemu:allocation-depth context */
	/* Advertise NBD_FLAG_CAN_MULTI_CONN: every connection of an export
	 * shares one cp_image, and flush covers all of them, so this holds
	 * whenever more than one client may connect.  Default true. */
	bool multi_conn;
	cp_nbd_release_fn release;
	void *opaque;
};
void cp_nbd_export_opts_init(struct cp_nbd_export_opts *opts);

/* Add an export; -EEXIST if the name is taken. */
int cp_nbd_server_add_export(cp_nbd_server *s,
			     const struct cp_nbd_export_opts *opts);

/* Remove an export by name.  New clients can no longer open it at once.
 * Without force, -EBUSY if clients are connected (nothing changes); with
 * force, their connections are shut down (in-flight requests complete or
 * fail first).  -ENOENT if no such export. */
int cp_nbd_server_remove_export(cp_nbd_server *s, const char *name,
				bool force);

struct cp_nbd_export_stats {
	char name[4096 + 1];     /* NBD names are at most 4096 bytes */
	bool readonly;
	unsigned clients;        /* connections currently using the export */
	uint64_t size;           /* virtual size */
	uint64_t bytes_read, bytes_written;
	uint64_t ops;            /* requests answered */
	uint64_t errors;         /* requests answered with an error */
};
/* Copy the stats of at most max exports to out (in name order) and
 * return the number of exports (which may exceed max). */
int cp_nbd_server_list_exports(cp_nbd_server *s,
			       struct cp_nbd_export_stats *out, size_t max);
/* Number of connected clients (handshaking or transmitting). */
unsigned cp_nbd_server_clients(cp_nbd_server *s);

#ifdef __cplusplus
}
#endif

#endif
