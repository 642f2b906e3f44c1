/* mailbox/host.c - the host side of the storage mailbox: post a request
 * into the host's inbox area, ring the doorbell, poll the outbox area for
 * the reply.
 *
 * State machine of one slot (docs/formats/mailbox.md, "Host"):
 *
 *   FREE --post--> PENDING(seq) --reply seq >= seq read--> FREE
 *                    |  ^
 *                    +--+ post for the same volume: new seq, max size
 *
 * h->area is the host's inbox area as last written: a post changes one
 * slot in it and writes all 4 KiB (a torn write can only break slots
 * whose bytes changed, and the CRC catches each).  The mutex covers the
 * slot table, the area and the two writes, so posts of one host reach the
 * disk in order and the doorbell always follows its request.  Waiters
 * take turns reading the outbox area: one reads (h->reading), at most once
 * per poll_us (h->next_read_us), and broadcasts h->cond; the others sleep
 * on it, so N waiters cost one 4 KiB read per poll, not N.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <strings.h>

#include "cleanup.h"
#include "mailbox_int.h"

enum mb_slot_state { MB_SLOT_FREE = 0, MB_SLOT_PENDING = 1 };

struct mb_host_slot {
	enum mb_slot_state state;
	uint64_t seq;                   /* of the request in the slot */
	struct cp_mbox_request req;
	struct cp_mbox_reply reply;     /* the newest reply read */
	bool have_reply;
};

struct cp_mbox_host {
	cp_bdev *inbox, *outbox;
	uint32_t host_id;
	unsigned poll_us;
	uint64_t off;                   /* host_id * 4096 */
	pthread_mutex_t lock;
	uint64_t seq;                   /* last used */
	uint8_t *area;                  /* inbox area as written (aligned) */
	uint8_t *bell;                  /* doorbell area buffer (aligned) */
	uint8_t *rbuf;                  /* outbox area read (by `reading`) */
	pthread_cond_t cond;            /* a read finished */
	bool reading;                   /* a waiter is reading the outbox */
	uint64_t next_read_us;          /* no read before (poll_us apart) */
	struct mb_host_slot slots[CP_MBOX_SLOTS];
	struct cp_mbox_host_stats st;
};

CP_EXPORT void cp_mbox_host_opts_init(struct cp_mbox_host_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->poll_us = 1000;
}

static int mb_read_area(cp_bdev *dev, uint64_t off, uint8_t *buf,
			const char *what, uint32_t host)
{
	int r = cp_bdev_pread(dev, buf, CP_MBOX_AREA_SIZE, off);

	if (r < 0)
		return cp_error_prefix(r, "mailbox: host %" PRIu32 ": read %s "
				       "area", host, what);
	return 0;
}

CP_EXPORT int cp_mbox_host_open(cp_bdev *inbox, cp_bdev *outbox,
				const struct cp_mbox_host_opts *o,
				cp_mbox_host **out)
{
	struct cp_mbox_host *h;
	uint8_t *obuf;
	int r;
	CP_API_ENTER();

	if (!o || o->size < sizeof(*o) || !inbox || !outbox)
		return cp_error(-EINVAL, "mailbox: host options missing");
	if (o->host_id < 1 || o->host_id > CP_MBOX_MAX_HOST_ID)
		return cp_error(-EINVAL, "mailbox: host id %" PRIu64
				" out of range 1..%u", o->host_id,
				CP_MBOX_MAX_HOST_ID);
	if (o->host_id >= mb_areas(inbox) || o->host_id >= mb_areas(outbox))
		return cp_error(-EINVAL, "mailbox: host id %" PRIu64 " has no "
				"area in %s (%" PRIu64 " bytes) / %s (%" PRIu64
				" bytes)", o->host_id, cp_bdev_name(inbox),
				cp_bdev_size(inbox), cp_bdev_name(outbox),
				cp_bdev_size(outbox));
	h = calloc(1, sizeof(*h));
	if (!h)
		return cp_error(-ENOMEM, "mailbox: out of memory");
	h->inbox = inbox;
	h->outbox = outbox;
	h->host_id = (uint32_t)o->host_id;
	h->poll_us = o->poll_us ? o->poll_us : 1000;
	h->off = o->host_id * CP_MBOX_AREA_SIZE;
	pthread_mutex_init(&h->lock, NULL);
	mb_cond_init(&h->cond);
	h->area = cp_bdev_alloc_buf(CP_MBOX_AREA_SIZE);
	h->bell = cp_bdev_alloc_buf(CP_MBOX_AREA_SIZE);
	h->rbuf = cp_bdev_alloc_buf(CP_MBOX_AREA_SIZE);
	obuf = cp_bdev_alloc_buf(CP_MBOX_AREA_SIZE);
	if (!h->area || !h->bell || !h->rbuf || !obuf) {
		r = cp_error(-ENOMEM, "mailbox: out of memory");
		goto fail;
	}
	r = mb_read_area(inbox, h->off, h->area, "inbox", h->host_id);
	if (r < 0)
		goto fail;
	r = mb_read_area(outbox, h->off, obuf, "outbox", h->host_id);
	if (r < 0)
		goto fail;
	/* Resume above every sequence number of a previous incarnation;
	 * slots that do not decode as ours are cleared in memory (they are
	 * rewritten by the next post). */
	for (uint32_t s = 0; s < CP_MBOX_SLOTS; s++) {
		uint8_t *slot = h->area + s * CP_MBOX_SLOT_SIZE;
		struct cp_mbox_request rq;
		struct cp_mbox_reply rp;

		if (cp_mbox_request_decode(slot, &rq) == 0 &&
		    rq.host_id == h->host_id && rq.slot == s)
			h->seq = CP_MAX(h->seq, rq.seq);
		else
			memset(slot, 0, CP_MBOX_SLOT_SIZE);
		if (cp_mbox_reply_decode(obuf + s * CP_MBOX_SLOT_SIZE, &rp) == 0 &&
		    rp.host_id == h->host_id && rp.slot == s)
			h->seq = CP_MAX(h->seq, rp.seq);
	}
	cp_bdev_free_buf(obuf);
	*out = h;
	return 0;
fail:
	cp_bdev_free_buf(obuf);
	cp_mbox_host_close(h);
	return r;
}

CP_EXPORT void cp_mbox_host_close(cp_mbox_host *h)
{
	if (!h)
		return;
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
	cp_bdev_free_buf(h->area);
	cp_bdev_free_buf(h->bell);
	cp_bdev_free_buf(h->rbuf);
	free(h);
}

static bool mb_same_volume(const struct cp_mbox_request *a,
			   const char *dom, const char *img, const char *vol)
{
	return !strcasecmp(a->dom_uuid, dom) && !strcasecmp(a->img_uuid, img) &&
	       !strcasecmp(a->vol_uuid, vol);
}

CP_EXPORT int cp_mbox_post_extend(cp_mbox_host *h, const char *dom_uuid,
				  const char *img_uuid, const char *vol_uuid,
				  uint64_t size, uint64_t mapped,
				  struct cp_mbox_ticket *t)
{
	struct cp_mbox_request rq = {0};
	struct mb_host_slot *sl = NULL;
	uint8_t *slot;
	uint32_t s;
	int r;
	CP_API_ENTER();

	if (!dom_uuid || !img_uuid || !vol_uuid ||
	    strlen(dom_uuid) != CP_MBOX_UUID_LEN ||
	    strlen(img_uuid) != CP_MBOX_UUID_LEN ||
	    strlen(vol_uuid) != CP_MBOX_UUID_LEN)
		return cp_error(-EINVAL, "mailbox: host %" PRIu32 ": invalid "
				"UUID", h->host_id);
	CP_LOCK_GUARD(&h->lock);
	for (s = 0; s < CP_MBOX_SLOTS; s++)
		if (h->slots[s].state == MB_SLOT_PENDING &&
		    mb_same_volume(&h->slots[s].req, dom_uuid, img_uuid,
				   vol_uuid)) {
			sl = &h->slots[s];
			size = CP_MAX(size, sl->req.size);
			break;
		}
	if (!sl)
		for (s = 0; s < CP_MBOX_SLOTS; s++)
			if (h->slots[s].state == MB_SLOT_FREE) {
				sl = &h->slots[s];
				break;
			}
	if (!sl)
		return cp_error(-EBUSY, "mailbox: host %" PRIu32 ": all %u "
				"slots have a request pending", h->host_id,
				CP_MBOX_SLOTS);
	rq.version = CP_MBOX_VERSION;
	rq.opcode = CP_MBOX_OP_EXTEND;
	rq.host_id = h->host_id;
	rq.slot = s;
	rq.seq = h->seq + 1;
	memcpy(rq.dom_uuid, dom_uuid, CP_MBOX_UUID_LEN + 1);
	memcpy(rq.img_uuid, img_uuid, CP_MBOX_UUID_LEN + 1);
	memcpy(rq.vol_uuid, vol_uuid, CP_MBOX_UUID_LEN + 1);
	rq.size = size;
	rq.mapped = mapped;
	slot = h->area + s * CP_MBOX_SLOT_SIZE;
	r = cp_mbox_request_encode(&rq, slot);
	if (r < 0)
		return r;
	h->seq = rq.seq;
	/* From here the slot is pending even if a write fails: the bytes
	 * may have reached the disk, and a later post rewrites them. */
	sl->state = MB_SLOT_PENDING;
	sl->seq = rq.seq;
	sl->req = rq;
	r = cp_bdev_pwrite(h->inbox, h->area, CP_MBOX_AREA_SIZE, h->off);
	if (r < 0)
		return cp_error_prefix(r, "mailbox: host %" PRIu32 ": write "
				       "request to %s", h->host_id,
				       cp_bdev_name(h->inbox));
	h->st.posts++;
	mb_doorbell_encode(h->bell, h->host_id, mb_token(h->host_id, rq.seq),
			   h->st.posts);
	r = cp_bdev_pwrite(h->inbox, h->bell, CP_MBOX_AREA_SIZE, 0);
	if (r < 0)
		return cp_error_prefix(r, "mailbox: host %" PRIu32 ": ring "
				       "the doorbell of %s", h->host_id,
				       cp_bdev_name(h->inbox));
	t->slot = s;
	t->seq = rq.seq;
	memcpy(t->dom_uuid, rq.dom_uuid, sizeof(t->dom_uuid));
	memcpy(t->vol_uuid, rq.vol_uuid, sizeof(t->vol_uuid));
	return 0;
}

/* The reply to t, from what was read already.  Called locked. */
static bool mb_match_locked(cp_mbox_host *h, const struct cp_mbox_ticket *t,
			    struct cp_mbox_reply *out)
{
	struct mb_host_slot *sl = &h->slots[t->slot];

	if (!sl->have_reply || sl->reply.seq < t->seq ||
	    strcasecmp(sl->reply.vol_uuid, t->vol_uuid) ||
	    strcasecmp(sl->reply.dom_uuid, t->dom_uuid))
		return false;
	*out = sl->reply;
	return true;
}

/* Take in the replies of one outbox area read.  Called locked. */
static void mb_absorb_locked(cp_mbox_host *h, const uint8_t *buf)
{
	for (uint32_t s = 0; s < CP_MBOX_SLOTS; s++) {
		struct mb_host_slot *sl = &h->slots[s];
		struct cp_mbox_reply rp;
		int r = cp_mbox_reply_decode(buf + s * CP_MBOX_SLOT_SIZE, &rp);

		if (r == -ENODATA)
			continue;
		if (r < 0 || rp.host_id != h->host_id || rp.slot != s) {
			/* torn while the SPM writes it: read again later */
			h->st.bad_replies++;
			continue;
		}
		if (sl->have_reply && rp.seq <= sl->reply.seq)
			continue;
		sl->reply = rp;
		sl->have_reply = true;
		if (sl->state == MB_SLOT_PENDING && rp.seq >= sl->seq) {
			sl->state = MB_SLOT_FREE;
			h->st.replies++;
		}
	}
}

/* Wait on h->cond until wake_us (monotonic microseconds).  Locked. */
static void mb_wait_until_locked(cp_mbox_host *h, uint64_t wake_us)
{
	struct timespec ts = { .tv_sec = (time_t)(wake_us / 1000000u),
			       .tv_nsec = (long)(wake_us % 1000000u) * 1000 };

	pthread_cond_timedwait(&h->cond, &h->lock, &ts);
}

CP_EXPORT int cp_mbox_wait_reply(cp_mbox_host *h,
				 const struct cp_mbox_ticket *t,
				 unsigned timeout_ms, struct cp_mbox_reply *out)
{
	uint64_t deadline = mb_now_us() + (uint64_t)timeout_ms * 1000u;
	int r;
	CP_API_ENTER();

	if (t->slot >= CP_MBOX_SLOTS || t->seq == 0)
		return cp_error(-EINVAL, "mailbox: host %" PRIu32 ": bad ticket",
				h->host_id);
	/* One thread reads the area at a time, at most once per poll_us;
	 * the other waiters of this host wait for its result, so a host
	 * with many volumes waiting still reads 4 KiB per poll. */
	pthread_mutex_lock(&h->lock);
	for (;;) {
		uint64_t now;
		int rr;

		if (mb_match_locked(h, t, out)) {
			r = 0;
			break;
		}
		now = mb_now_us();
		if (now >= deadline) {
			r = cp_error(-ETIMEDOUT, "mailbox: host %" PRIu32
				     ": no reply to request %" PRIu64
				     " (slot %" PRIu32 ") after %u ms",
				     h->host_id, t->seq, t->slot, timeout_ms);
			break;
		}
		if (h->reading || now < h->next_read_us) {
			mb_wait_until_locked(h, h->reading ? deadline :
					     CP_MIN(deadline, h->next_read_us));
			continue;
		}
		h->reading = true;
		pthread_mutex_unlock(&h->lock);
		rr = cp_bdev_pread(h->outbox, h->rbuf, CP_MBOX_AREA_SIZE, h->off);
		pthread_mutex_lock(&h->lock);
		h->reading = false;
		h->next_read_us = mb_now_us() + h->poll_us;
		pthread_cond_broadcast(&h->cond);
		if (rr < 0) {
			r = cp_error_prefix(rr, "mailbox: host %" PRIu32
					    ": read outbox area", h->host_id);
			break;
		}
		h->st.outbox_reads++;
		mb_absorb_locked(h, h->rbuf);
	}
	pthread_mutex_unlock(&h->lock);
	return r;
}

CP_EXPORT void cp_mbox_host_stats(cp_mbox_host *h,
				  struct cp_mbox_host_stats *out)
{
	CP_LOCK_GUARD(&h->lock);
	*out = h->st;
}
