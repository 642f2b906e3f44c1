/* nbd/nbd_int.h - private header of the NBD server, one section per .c.
 *
 * Wire format: every integer on the wire is big-endian (network order),
 * converted with cp_be32() and cp_put_be32() (and friends) at the one place each message is built
 * or parsed.  Constants are those of the NBD protocol (doc/proto.md of the
 * NetworkBlockDevice/nbd project).
 */
#ifndef CP_NBD_INT_H
#define CP_NBD_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "common.h"
#include "nbd.h"

/* --- protocol constants ---------------------------------------------------- */
#define NBD_MAGIC 0x4e42444d41474943ull   /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454F5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x3e889045565a9ull
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

/* handshake flags (server) and client flags */
#define NBD_FLAG_FIXED_NEWSTYLE 0x1u
#define NBD_FLAG_NO_ZEROES 0x2u
#define NBD_FLAG_C_FIXED_NEWSTYLE 0x1u
#define NBD_FLAG_C_NO_ZEROES 0x2u

/* transmission flags */
#define NBD_FLAG_HAS_FLAGS (1u << 0)
#define NBD_FLAG_READ_ONLY (1u << 1)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_FUA (1u << 3)
#define NBD_FLAG_ROTATIONAL (1u << 4)
#define NBD_FLAG_SEND_TRIM (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)
#define NBD_FLAG_SEND_RESIZE (1u << 9)
#define NBD_FLAG_SEND_CACHE (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO (1u << 11)

/* options */
#define NBD_OPT_EXPORT_NAME 1u
#define NBD_OPT_ABORT 2u
#define NBD_OPT_LIST 3u
#define NBD_OPT_STARTTLS 5u
#define NBD_OPT_INFO 6u
#define NBD_OPT_GO 7u
#define NBD_OPT_STRUCTURED_REPLY 8u
#define NBD_OPT_LIST_META_CONTEXT 9u
#define NBD_OPT_SET_META_CONTEXT 10u

/* option replies */
#define NBD_REP_ACK 1u
#define NBD_REP_SERVER 2u
#define NBD_REP_INFO 3u
#define NBD_REP_META_CONTEXT 4u
#define NBD_REP_ERR(n) (0x80000000u | (n))
#define NBD_REP_ERR_UNSUP NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG NBD_REP_ERR(9)

/* NBD_REP_INFO types */
#define NBD_INFO_EXPORT 0u
#define NBD_INFO_NAME 1u
#define NBD_INFO_DESCRIPTION 2u
#define NBD_INFO_BLOCK_SIZE 3u

/* commands and command flags */
#define NBD_CMD_READ 0u
#define NBD_CMD_WRITE 1u
#define NBD_CMD_DISC 2u
#define NBD_CMD_FLUSH 3u
#define NBD_CMD_TRIM 4u
#define NBD_CMD_CACHE 5u
#define NBD_CMD_WRITE_ZEROES 6u
#define NBD_CMD_BLOCK_STATUS 7u
#define NBD_CMD_FLAG_FUA (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* structured reply chunks */
#define NBD_REPLY_FLAG_DONE 1u
#define NBD_REPLY_TYPE_NONE 0u
#define NBD_REPLY_TYPE_OFFSET_DATA 1u
#define NBD_REPLY_TYPE_OFFSET_HOLE 2u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_ERROR 32769u

/* base:allocation flags */
#define NBD_STATE_HOLE 1u
#define NBD_STATE_ZERO 2u

/* errors on the wire (fixed values, not the host's errno) */
#define NBD_EPERM 1u
#define NBD_EIO 5u
#define NBD_ENOMEM 12u
#define NBD_EINVAL 22u
#define NBD_ENOSPC 28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP 95u
#define NBD_ESHUTDOWN 108u

#define NBD_REQUEST_SIZE 28
#define NBD_SIMPLE_REPLY_SIZE 16
#define NBD_CHUNK_HDR_SIZE 20
#define NBD_MAX_NAME 4096
#define NBD_MAX_OPTION (64u << 10)  /* longer option data: disconnect */
#define NBD_MAX_STRING 4096         /* export names, context queries */

/* meta context ids handed to the client */
#define NBD_CTX_BASE_ALLOCATION 1u
#define NBD_CTX_ALLOCATION_DEPTH 2u
/* Extents in one BLOCK_STATUS reply (the client asks again for more). */
#define NBD_MAX_EXTENTS 2048
/* Request buffers of at most this size stay with their slot; larger ones
 * are allocated per request and freed on completion. */
#define NBD_KEEP_BUF (1u << 20)
/* Payload bytes in flight per connection before the reader waits. */
#define NBD_INFLIGHT_BYTES (64u << 20)
/* Stack of connection threads (500 clients = 1000 threads). */
#define NBD_THREAD_STACK (512u << 10)
/* Socket input buffer per connection. */
#define NBD_RBUF_SIZE (16u << 10)

/* --- server.c: server, exports, accept loop --------------------------------- */
struct nbd_conn;

struct cp_nbd_server {
	struct cp_nbd_server_opts opts;
	pthread_mutex_t lock;
	pthread_cond_t cond;         /* a connection ended */
	struct nbd_export *exports;  /* sorted by name */
	struct nbd_conn *conns;      /* live connections */
	unsigned nconns;
	bool served_one;             /* oneshot: a client has connected */
	bool stopping;
	int lfds[8];                 /* listening sockets */
	char *unix_paths[8];         /* to unlink at destroy (NULL for TCP) */
	unsigned nlfds;
	int wake_fd;                 /* eventfd: wakes the accept thread */
	int done_fd;                 /* eventfd: oneshot server is done */
	pthread_t accept_thread;
	bool started;
	struct nbd_tls *tls;         /* NULL without TLS */
};

/* --- export.c: the export object, its references and clients ----------- */
struct nbd_export {
	struct nbd_export *next;     /* server's list, under s->lock */
	char *name;
	char *description;
	cp_image *img;
	uint64_t size;
	bool readonly, unmap, allocation_depth, multi_conn;
	enum cp_nbd_detect_zeroes detect_zeroes;
	cp_nbd_release_fn release;
	void *opaque;
	unsigned refs;               /* list + connections, under s->lock */
	bool removed;
	unsigned clients;            /* under s->lock */
	_Atomic uint64_t bytes_read, bytes_written, ops, errors;
};

/* Free e (its release callback gives the image back); the last
 * reference does it. */
void nbd_export_free(struct nbd_export *e);
/* Find an export by name and take a reference (NULL if none or removed).
 * Caller releases with nbd_export_put(). */
struct nbd_export *nbd_export_get(cp_nbd_server *s, const char *name);
void nbd_export_put(cp_nbd_server *s, struct nbd_export *e);
/* Connection bookkeeping: the export now has one more (or one less)
 * client; attach also sets c->exp, in the same critical section, so a
 * forced removal always finds the connection.  -ESHUTDOWN if the export
 * was removed meanwhile. */
int nbd_export_attach(cp_nbd_server *s, struct nbd_export *e,
		      struct nbd_conn *c);
void nbd_export_detach(cp_nbd_server *s, struct nbd_export *e);

/* --- tls.c: GnuTLS credentials and sessions (stubs without GnuTLS) ------- */
struct nbd_tls;
struct nbd_tls_session;
int nbd_tls_create(const struct cp_nbd_tls_opts *o, struct nbd_tls **out);
void nbd_tls_destroy(struct nbd_tls *t);
/* Handshake on fd, giving up after timeout_ms (0 = none). */
int nbd_tls_session_start(struct nbd_tls *t, int fd, unsigned timeout_ms,
			  struct nbd_tls_session **out);
void nbd_tls_session_end(struct nbd_tls_session *ts);
/* Like recv/send: bytes moved, 0 at end of stream (recv), -errno.  One
 * thread may receive while another sends. */
ssize_t nbd_tls_recv(struct nbd_tls_session *ts, void *buf, size_t len);
ssize_t nbd_tls_send(struct nbd_tls_session *ts, const void *buf, size_t len);
/* Bytes already decrypted and waiting (recv will not block). */
size_t nbd_tls_pending(struct nbd_tls_session *ts);

/* --- conn.c: one client connection ------------------------------------------
 * States: HANDSHAKE (options, with the handshake deadline) -> TRANSMISSION
 * (requests) -> CLOSING (no new requests; wait for in-flight slots) -> done.
 * The reader thread owns parsing and submission; completions put their slot
 * on the done queue; the sender thread writes replies.  Every write to the
 * socket happens under send_lock. */
enum nbd_conn_state {
	NBD_CONN_HANDSHAKE,
	NBD_CONN_TRANSMISSION,
	NBD_CONN_CLOSING,
};

struct nbd_slot {
	struct nbd_conn *conn;
	struct nbd_slot *next;       /* free list or done queue */
	uint16_t flags, type;
	uint64_t cookie;
	uint64_t offset;
	uint32_t len;
	int ret;                     /* -errno from the engine */
	bool data;                   /* READ: the engine says all data */
	void *buf;                   /* NBD_KEEP_BUF or smaller, kept */
	size_t buf_size;
	void *big;                   /* larger requests: this request only */
	struct iovec iov;
	uint8_t hdr[32];             /* reply header, for batched sends */
};

struct nbd_conn {
	cp_nbd_server *server;
	struct nbd_conn *next;       /* server's list, under server->lock */
	int fd;
	enum nbd_conn_state state;
	struct nbd_export *exp;      /* set at GO / EXPORT_NAME */
	bool structured, no_zeroes;
	bool ctx_base, ctx_depth;    /* selected meta contexts */
	char *ctx_export;            /* export the contexts were set for */
	uint64_t deadline_ms;        /* handshake deadline (CLOCK_MONOTONIC) */
	pthread_mutex_t send_lock;
	pthread_mutex_t lock;        /* free list, done queue, counters */
	pthread_cond_t cond;         /* slot freed / queued for the sender */
	struct nbd_slot *slots;
	unsigned nslots;
	struct nbd_slot *free_slots;
	struct nbd_slot *done_head, *done_tail;
	unsigned inflight;           /* slots out of the free list */
	uint64_t inflight_bytes;
	bool sender_quit;
	struct nbd_tls_session *tls; /* after STARTTLS */
	atomic_bool dead;            /* socket failed: drop further replies */
	uint8_t opt_buf[NBD_MAX_OPTION];
	/* Input buffer: one recv() usually brings several requests. */
	uint8_t rbuf[NBD_RBUF_SIZE];
	size_t rpos, rlen;
};

/* Run a connection on fd (closed on return).  Called by the accept path
 * on a new thread and by cp_nbd_server_serve_fd() on the caller's. */
void nbd_conn_run(cp_nbd_server *s, int fd);

#endif
