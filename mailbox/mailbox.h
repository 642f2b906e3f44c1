/* mailbox/mailbox.h - the storage mailbox: hosts ask the SPM to extend thin
 * LVs and get the new extents back (public header).
 *
 * Two volumes of the master domain carry it (docs/formats/mailbox.md has
 * every byte): `inbox` (hosts -> SPM) and `outbox` (SPM -> hosts), LVs on a
 * block domain, dom_md/inbox and dom_md/outbox on a file domain.  Host h
 * owns the 4 KiB area at h * 4096 of each, CP_MBOX_SLOTS message slots of
 * 512 bytes; a request in inbox slot s is answered in outbox slot s of the
 * same area.  Area 0 of the inbox is the doorbell: a host that posts writes
 * a fresh token there; the SPM polls it every few milliseconds and scans
 * the areas only when it changes (and on a slow safety timer).
 *
 * Every message has a magic, a version, an opcode, its host id and slot,
 * a sequence number and its own CRC32C, so torn, corrupt, misplaced and
 * stale messages are recognised one by one and never acted on.  Requests
 * are idempotent ("extend to at least N bytes"): a new SPM serves whatever
 * is pending, a repeated request changes nothing.
 *
 * Devices: the caller opens inbox and outbox (cp_bdev, CP_CACHE_NONE on
 * shared storage; cp_sd_mailbox_open() in spm.h does it for a domain) and
 * keeps them open while the host or server object lives.  All I/O is whole
 * 4 KiB areas at 4 KiB offsets from cp_bdev_alloc_buf() memory.
 *
 * Errors: int functions return >= 0 on success, -errno on failure with a
 * message in cp_last_error() naming the host, slot or device.  Nothing is
 * printed; the server reports bad messages through its event callback and
 * counters.
 */
#ifndef CP_MAILBOX_H
#define CP_MAILBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockcore.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CP_MBOX_VERSION 1u          /* the message format this code writes */
#define CP_MBOX_AREA_SIZE 4096u     /* one host's area, in each volume */
#define CP_MBOX_SLOT_SIZE 512u      /* one message */
#define CP_MBOX_SLOTS 8u            /* slots per area */
#define CP_MBOX_MAX_HOST_ID 2000u   /* as sanlock's host ids */
#define CP_MBOX_HOSTS_DEFAULT 250u  /* areas the server scans by default */
#define CP_MBOX_MAX_SEGS 6u         /* segments one reply carries */
#define CP_MBOX_PV_MAX 39u          /* bytes of a PV name (LVM's PV UUID) */
#define CP_MBOX_UUID_LEN 36u        /* text UUID, 8-4-4-4-12 */

enum cp_mbox_opcode {
	CP_MBOX_OP_EXTEND = 1,      /* grow a volume to at least N bytes */
};

/* A request as the SPM sees it (decoded from an inbox slot). */
struct cp_mbox_request {
	uint16_t version;
	uint16_t opcode;             /* enum cp_mbox_opcode */
	uint32_t host_id;            /* 1..CP_MBOX_MAX_HOST_ID */
	uint32_t slot;               /* 0..CP_MBOX_SLOTS-1 */
	uint64_t seq;                /* per host, > 0, grows with every post */
	char dom_uuid[CP_MBOX_UUID_LEN + 1];
	char img_uuid[CP_MBOX_UUID_LEN + 1];
	char vol_uuid[CP_MBOX_UUID_LEN + 1];
	uint64_t size;               /* EXTEND: at least this many bytes */
	uint64_t mapped;             /* EXTEND: bytes of the LV the host maps
				      * already; the reply's segments start
				      * there */
};

/* One linear segment of an LV, as blockcore's cp_linear_seg with the PV
 * named by LVM's PV UUID (the host maps it to its own device path). */
struct cp_mbox_seg {
	uint64_t lv_offset;          /* bytes from the start of the LV */
	uint64_t length;             /* bytes */
	uint64_t pv_offset;          /* bytes from the start of the PV */
	char pv[CP_MBOX_PV_MAX + 1]; /* NUL-terminated */
};

/* Reply flag: the LV has more segments past the last one given; post again
 * with mapped = the end of the last segment to get them (no new
 * extension happens, the size is there already). */
#define CP_MBOX_REPLY_MORE 0x1u

/* A reply as the host sees it (decoded from an outbox slot). */
struct cp_mbox_reply {
	uint16_t version;
	uint16_t opcode;
	uint32_t host_id;
	uint32_t slot;
	uint64_t seq;                /* the request's */
	int32_t status;              /* 0 or -errno (-ENOSPC: VG full) */
	uint32_t flags;              /* CP_MBOX_REPLY_* */
	uint64_t size;               /* the volume's size now (granted) */
	uint64_t map_from;           /* segments cover [map_from, ...) */
	char dom_uuid[CP_MBOX_UUID_LEN + 1];
	char vol_uuid[CP_MBOX_UUID_LEN + 1];
	uint32_t nsegs;              /* 0..CP_MBOX_MAX_SEGS */
	struct cp_mbox_seg segs[CP_MBOX_MAX_SEGS];
};

/* ---- codec ----------------------------------------------------------------
 * One 512-byte slot <-> one message; little-endian, CRC32C over bytes
 * 0..507 in the last 4 bytes.  encode: -EINVAL (slot untouched) when a
 * field is out of range.  decode:
 *   0                 valid (*out filled)
 *   -ENODATA          the slot is all zeroes (never written)
 *   -EUCLEAN          bad magic, CRC, UUID or reserved byte (torn or
 *                     corrupt: the message is not used)
 *   -EPROTONOSUPPORT  CRC good, version unknown: only the frozen header
 *                     (version, opcode, host_id, slot, seq) is filled
 * Decoding sets no error message (the server decodes thousands). */
int cp_mbox_request_encode(const struct cp_mbox_request *r, uint8_t *slot);
int cp_mbox_request_decode(const uint8_t *slot, struct cp_mbox_request *out);
int cp_mbox_reply_encode(const struct cp_mbox_reply *r, uint8_t *slot);
int cp_mbox_reply_decode(const uint8_t *slot, struct cp_mbox_reply *out);

/* Fill r->segs from an LV's whole map (n segments, any order, tiling the
 * LV): the parts at or past r->map_from, clipped to start there, in LV
 * order; at most CP_MBOX_MAX_SEGS, with CP_MBOX_REPLY_MORE set when more
 * remain.  -EINVAL if a PV name is too long. */
int cp_mbox_reply_set_map(struct cp_mbox_reply *r,
			  const struct cp_mbox_seg *map, size_t n);

/* ---- host side -------------------------------------------------------------
 * A host posts requests into its own inbox area and reads replies from its
 * own outbox area.  At open it reads both areas: the next sequence number
 * is above every one found there, so a restarted host never reuses one.
 *
 * Slots: a post for a volume that has a request pending reuses its slot
 * (the size asked becomes the larger of the two); otherwise it takes a
 * free slot, or fails with -EBUSY when all CP_MBOX_SLOTS are pending.  A
 * slot is free again once its reply has been read by cp_mbox_wait_reply().
 *
 * Threads: any thread; posts of one host are serialised by its mutex (each
 * writes the area, then the doorbell); concurrent waits share the reads:
 * one waiter reads the area (at most once per poll_us), the others wait
 * for its result. */
typedef struct cp_mbox_host cp_mbox_host;

struct cp_mbox_host_opts {
	size_t size;                 /* sizeof, set by _init */
	uint64_t host_id;            /* 1..CP_MBOX_MAX_HOST_ID, required; the
				      * area must fit in both devices */
	unsigned poll_us;            /* outbox poll while waiting; default
				      * 1000 */
};
void cp_mbox_host_opts_init(struct cp_mbox_host_opts *o);

/* inbox and outbox are borrowed; they must outlive the host object. */
int cp_mbox_host_open(cp_bdev *inbox, cp_bdev *outbox,
		      const struct cp_mbox_host_opts *o, cp_mbox_host **out);
/* NULL is a no-op.  Requests still pending stay on disk (the SPM serves
 * them; nobody reads the reply). */
void cp_mbox_host_close(cp_mbox_host *h);

/* What identifies one posted request. */
struct cp_mbox_ticket {
	uint32_t slot;
	uint64_t seq;
	char dom_uuid[CP_MBOX_UUID_LEN + 1];
	char vol_uuid[CP_MBOX_UUID_LEN + 1];
};

/* Ask for dom/img/vol to be at least size bytes; mapped = the bytes the
 * host maps already (the reply's segments start there).  Writes the area
 * (O_DIRECT), then rings the doorbell; returns when both writes are done.
 * -EBUSY: every slot pending; -EINVAL: bad UUID or size 0. */
int cp_mbox_post_extend(cp_mbox_host *h, const char *dom_uuid,
			const char *img_uuid, const char *vol_uuid,
			uint64_t size, uint64_t mapped,
			struct cp_mbox_ticket *t);

/* Wait up to timeout_ms for the reply to t (or to a later request for the
 * same volume in the same slot: the size only grows) by polling
 * the host's outbox area every poll_us.  0: *out is the reply (the SPM's
 * answer is out->status); -ETIMEDOUT: no reply yet (the request stays
 * pending; wait again or post again); -EIO etc.: the outbox read failed. */
int cp_mbox_wait_reply(cp_mbox_host *h, const struct cp_mbox_ticket *t,
		       unsigned timeout_ms, struct cp_mbox_reply *out);

struct cp_mbox_host_stats {
	uint64_t posts, replies, outbox_reads, bad_replies;
};
void cp_mbox_host_stats(cp_mbox_host *h, struct cp_mbox_host_stats *out);

/* ---- SPM side: the server ------------------------------------------------
 * Polls the doorbell every poll_us; when it changed (or every scan_ms, or
 * after a failed reply write) it reads inbox areas 1..max_hosts in one
 * read and checks every slot:
 *   empty (zeroes)                            skipped
 *   bad magic/CRC/UUID/reserved (torn)        CORRUPT event, ignored
 *   host id or slot not those of its place    MISPLACED event, ignored
 *   seq < the seq answered in that slot       STALE event, ignored
 *   seq == the seq answered in that slot      done already, skipped
 *   unknown version / opcode                  answered -EPROTONOSUPPORT /
 *                                             -EOPNOTSUPP, event
 *   otherwise                                 pending: served
 * Each bad message is reported once (until its slot changes).  The pending
 * EXTEND requests of one scan go to the serve callback as one batch; then
 * the replies are written, one 4 KiB write per host area touched.  The
 * server knows what was answered from the outbox itself (read at start),
 * so a new SPM serves exactly what its predecessor left pending.
 */
typedef struct cp_mbox_server cp_mbox_server;

/* One request of a batch.  The server fills req and the reply's header
 * (version, opcode, host, slot, seq, UUIDs, map_from = req.mapped,
 * status = -EIO, size 0, no segments); the serve callback sets
 * reply.status, reply.size and the segments (cp_mbox_reply_set_map()).
 *
 * defer (false on entry): the callback cannot serve the request now (the
 * VG is full) and wants to serve it later without the host asking again.
 * No reply is written; the request is left out of every batch until
 * cp_mbox_server_kick() (the domain grew), then served again.  The host
 * meanwhile waits, bounded by its own timeout.  A new SPM serves deferred
 * requests at once (they are pending on disk). */
struct cp_mbox_item {
	struct cp_mbox_request req;
	struct cp_mbox_reply reply;
	bool defer;
};

/* Serve n requests (n >= 1; several may name the same volume).  Runs on
 * the server thread (or the caller of cp_mbox_server_poll /
 * cp_mbox_server_serve_local), never twice at once.  It may block (LVM
 * runs here); the doorbell is not polled meanwhile. */
typedef void (*cp_mbox_serve_fn)(void *opaque, struct cp_mbox_item *items,
				 size_t n);

enum cp_mbox_event_kind {
	CP_MBOX_EV_CORRUPT = 1,      /* torn or corrupt slot */
	CP_MBOX_EV_MISPLACED = 2,    /* host id / slot not its place */
	CP_MBOX_EV_STALE = 3,        /* older than what was answered */
	CP_MBOX_EV_VERSION = 4,      /* unknown version (answered) */
	CP_MBOX_EV_OPCODE = 5,       /* unknown opcode (answered) */
	CP_MBOX_EV_IO = 6,           /* a read or write failed */
};
const char *cp_mbox_event_name(enum cp_mbox_event_kind k); /* "corrupt" */

struct cp_mbox_event {
	enum cp_mbox_event_kind kind;
	uint32_t host_id;            /* the area (0: doorbell, or the whole
				      * scan for IO) */
	uint32_t slot;
	uint64_t seq;                /* when known, else 0 */
	int err;                     /* IO: the -errno */
};
/* Called on the thread that found it; must not call the server. */
typedef void (*cp_mbox_event_fn)(void *opaque, const struct cp_mbox_event *ev);

struct cp_mbox_server_opts {
	size_t size;                 /* sizeof, set by _init */
	unsigned max_hosts;          /* areas 1..max_hosts; default
				      * CP_MBOX_HOSTS_DEFAULT, at most what
				      * both devices hold */
	unsigned poll_us;            /* doorbell poll; default 2000 */
	unsigned idle_poll_us;       /* doorbell poll once it has not changed
				      * for idle_after_ms; default 10000 (at
				      * least poll_us) */
	unsigned idle_after_ms;      /* default 1000; 0: always idle_poll_us
				      * after the first quiet poll */
	unsigned scan_ms;            /* safety scan; default 30000 */
	bool manual;                 /* no thread: the caller drives
				      * cp_mbox_server_poll() (tests) */
	cp_mbox_serve_fn serve;      /* required */
	void *serve_opaque;
	cp_mbox_event_fn event;      /* may be NULL */
	void *event_opaque;
};
void cp_mbox_server_opts_init(struct cp_mbox_server_opts *o);

/* Read the outbox (what was answered), then start polling (unless
 * manual).  inbox and outbox are borrowed until cp_mbox_server_stop. */
int cp_mbox_server_start(cp_bdev *inbox, cp_bdev *outbox,
			 const struct cp_mbox_server_opts *o,
			 cp_mbox_server **out);
/* Stop the thread (a batch being served finishes first) and free.  NULL
 * is a no-op. */
void cp_mbox_server_stop(cp_mbox_server *s);

/* One poll step: read the doorbell; scan if it changed, if the safety
 * timer is due or if full.  Returns the number of requests answered
 * (replies written; deferred ones and lost writes do not count), or
 * -errno when a read failed.  For manual servers (any thread, not
 * concurrently with itself); -EINVAL on a threaded server. */
int cp_mbox_server_poll(cp_mbox_server *s, bool full);

/* Serve the deferred requests again at the next poll (after the domain
 * grew), with a full scan.  Any thread. */
void cp_mbox_server_kick(cp_mbox_server *s);

/* Serve a request of the SPM host itself without disk I/O: item->req is
 * filled by the caller (host id and slot are ignored), the callback runs
 * as for a batch of one, serialised with the batches.  A deferral comes
 * back to the caller in item->defer (it asks again after the kick). */
int cp_mbox_server_serve_local(cp_mbox_server *s, struct cp_mbox_item *item);

struct cp_mbox_server_stats {
	uint64_t doorbell_reads;     /* polls */
	uint64_t scans;              /* scans of the areas (any reason) */
	uint64_t safety_scans;       /* of which by the timer */
	uint64_t bytes_read, bytes_written;
	uint64_t batches, served;    /* serve calls, requests answered */
	uint64_t deferred;           /* requests deferred by the callback */
	uint64_t corrupt, misplaced, stale, bad_version, bad_opcode;
	uint64_t io_errors;
};
void cp_mbox_server_stats(cp_mbox_server *s, struct cp_mbox_server_stats *out);

#ifdef __cplusplus
}
#endif

#endif
