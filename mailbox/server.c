/* mailbox/server.c - the SPM side of the storage mailbox.
 *
 * State machine of the server (docs/formats/mailbox.md, "SPM"):
 *
 *   START:  read every outbox area 1..max_hosts -> answered[h][s]
 *   POLL:   read the doorbell area; unchanged and no timer due -> POLL
 *   SCAN:   read inbox areas 1..max_hosts in one request; classify every
 *           slot (the SPM section of mailbox.h); pending ones -> batch
 *   SERVE:  the serve callback answers the batch
 *   REPLY:  replies into the outbox copy; one write per run of touched
 *           areas; answered[h][s] = seq only once the write succeeded
 *           (a failed write forces the next SCAN) -> POLL
 *
 * Why this is enough: a host writes its request before it rings the
 * doorbell, and the server reads the doorbell before it scans.  So a
 * request whose doorbell write the server has not seen yet will make the
 * doorbell differ from what the server last read (tokens are random and
 * never repeat), and the next poll scans.  Requests are idempotent and
 * answered[h][s] comes from the outbox, so a crash anywhere (of the SPM
 * or of a host) at worst serves a request twice, which changes nothing.
 *
 * Memory: everything is allocated at start (inbox and outbox copies of
 * max_hosts areas, the batch array); a scan allocates nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "cleanup.h"
#include "mailbox_int.h"
#include "spm.h"

struct cp_mbox_server {
	cp_bdev *inbox, *outbox;
	struct cp_mbox_server_opts o;
	unsigned nhosts;                /* areas 1..nhosts */
	uint8_t *bell, *last_bell;      /* doorbell area: read, last seen */
	bool bell_seen;
	uint8_t *in;                    /* inbox areas 1..nhosts */
	uint8_t *out;                   /* outbox areas 1..nhosts as written */
	uint64_t *answered;             /* [h-1][s]: seq answered there */
	uint64_t *deferred;             /* [h-1][s]: seq deferred by serve */
	bool kicked;                    /* cp_mbox_server_kick(): under lock */
	uint32_t *reported;             /* [h-1][s]: CRC of the bad slot last
					 * reported, so each is reported once */
	bool *dirty;                    /* [h-1]: reply area to write */
	struct cp_mbox_item *items;     /* nhosts * CP_MBOX_SLOTS */
	uint64_t next_safety_us;
	uint64_t last_change_us;        /* doorbell last seen changing */
	bool rescan;                    /* a reply write failed */
	pthread_mutex_t serve_lock;     /* one serve callback at a time */
	pthread_mutex_t lock;           /* stats, stop */
	pthread_cond_t cond;
	bool stop, thread_started;
	pthread_t thread;
	struct cp_mbox_server_stats st;
};

CP_EXPORT void cp_mbox_server_opts_init(struct cp_mbox_server_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->max_hosts = CP_MBOX_HOSTS_DEFAULT;
	o->poll_us = 2000;
	o->idle_poll_us = 10000;
	o->idle_after_ms = 1000;
	o->scan_ms = 30000;
}

CP_EXPORT const char *cp_mbox_event_name(enum cp_mbox_event_kind k)
{
	switch (k) {
	case CP_MBOX_EV_CORRUPT: return "corrupt";
	case CP_MBOX_EV_MISPLACED: return "misplaced";
	case CP_MBOX_EV_STALE: return "stale";
	case CP_MBOX_EV_VERSION: return "version";
	case CP_MBOX_EV_OPCODE: return "opcode";
	case CP_MBOX_EV_IO: return "io";
	}
	return "unknown";
}

static void mb_stat_add(cp_mbox_server *s, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&s->lock);
	*field += n;
	pthread_mutex_unlock(&s->lock);
}

static void mb_event(cp_mbox_server *s, enum cp_mbox_event_kind kind,
		     uint32_t host, uint32_t slot, uint64_t seq, int err)
{
	struct cp_mbox_event ev = {
		.kind = kind, .host_id = host, .slot = slot, .seq = seq,
		.err = err,
	};
	uint64_t *c = NULL;

	switch (kind) {
	case CP_MBOX_EV_CORRUPT: c = &s->st.corrupt; break;
	case CP_MBOX_EV_MISPLACED: c = &s->st.misplaced; break;
	case CP_MBOX_EV_STALE: c = &s->st.stale; break;
	case CP_MBOX_EV_VERSION: c = &s->st.bad_version; break;
	case CP_MBOX_EV_OPCODE: c = &s->st.bad_opcode; break;
	case CP_MBOX_EV_IO: c = &s->st.io_errors; break;
	}
	if (c)
		mb_stat_add(s, c, 1);
	if (s->o.event)
		s->o.event(s->o.event_opaque, &ev);
}

/* Report a bad slot once: until its bytes change. */
static void mb_report_once(cp_mbox_server *s, size_t i, const uint8_t *slot,
			   enum cp_mbox_event_kind kind, uint32_t host,
			   uint32_t idx, uint64_t seq)
{
	uint32_t sum = cp_crc32c(slot, CP_MBOX_SLOT_SIZE) | 1u;

	if (s->reported[i] == sum)
		return;
	s->reported[i] = sum;
	mb_event(s, kind, host, idx, seq, 0);
}

static void mb_server_free(cp_mbox_server *s)
{
	cp_bdev_free_buf(s->bell);
	cp_bdev_free_buf(s->last_bell);
	cp_bdev_free_buf(s->in);
	cp_bdev_free_buf(s->out);
	free(s->answered);
	free(s->deferred);
	free(s->reported);
	free(s->dirty);
	free(s->items);
	pthread_mutex_destroy(&s->serve_lock);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}

/* The reply header for req, before the callback fills the answer. */
static void mb_reply_init(const struct cp_mbox_request *rq,
			  struct cp_mbox_reply *rp)
{
	memset(rp, 0, sizeof(*rp));
	rp->version = CP_MBOX_VERSION;
	rp->opcode = rq->opcode;
	rp->host_id = rq->host_id;
	rp->slot = rq->slot;
	rp->seq = rq->seq;
	rp->status = -EIO;
	rp->map_from = rq->mapped;
	memcpy(rp->dom_uuid, rq->dom_uuid, sizeof(rp->dom_uuid));
	memcpy(rp->vol_uuid, rq->vol_uuid, sizeof(rp->vol_uuid));
}

/* Write the touched outbox areas (runs of adjacent ones as one write);
 * mark their replies answered only when written. */
static void mb_write_replies(cp_mbox_server *s, struct cp_mbox_item *items,
			     size_t n)
{
	unsigned h = 0;

	while (h < s->nhosts) {
		unsigned end;
		int r;

		if (!s->dirty[h]) {
			h++;
			continue;
		}
		for (end = h; end < s->nhosts && s->dirty[end]; end++)
			s->dirty[end] = false;
		r = cp_bdev_pwrite(s->outbox, s->out + (size_t)h * CP_MBOX_AREA_SIZE,
				   (size_t)(end - h) * CP_MBOX_AREA_SIZE,
				   (uint64_t)(h + 1) * CP_MBOX_AREA_SIZE);
		if (r < 0) {
			mb_event(s, CP_MBOX_EV_IO, h + 1, 0, 0, r);
			s->rescan = true;
			for (size_t i = 0; i < n; i++)
				if (items[i].req.host_id > h &&
				    items[i].req.host_id <= end)
					items[i].req.seq = 0; /* not answered */
		} else {
			mb_stat_add(s, &s->st.bytes_written,
				    (uint64_t)(end - h) * CP_MBOX_AREA_SIZE);
		}
		h = end;
	}
	for (size_t i = 0; i < n; i++) {
		const struct cp_mbox_request *rq = &items[i].req;

		if (rq->seq)
			s->answered[(size_t)(rq->host_id - 1) * CP_MBOX_SLOTS +
				    rq->slot] = rq->seq;
	}
}

/* Classify every slot of the inbox copy; collect the pending ones. */
static size_t mb_collect(cp_mbox_server *s, size_t *nserve)
{
	size_t n = 0, nerr = 0, total = (size_t)s->nhosts * CP_MBOX_SLOTS;

	/* Requests to serve fill items from the front, answered-by-error
	 * ones from the back. */
	for (size_t i = 0; i < total; i++) {
		uint32_t host = (uint32_t)(i / CP_MBOX_SLOTS) + 1;
		uint32_t idx = (uint32_t)(i % CP_MBOX_SLOTS);
		const uint8_t *slot = s->in + i * CP_MBOX_SLOT_SIZE;
		struct cp_mbox_request rq;
		struct cp_mbox_item *it;
		int r = cp_mbox_request_decode(slot, &rq);

		if (r == -ENODATA)
			continue;
		if (r == -EUCLEAN) {
			mb_report_once(s, i, slot, CP_MBOX_EV_CORRUPT, host, idx,
				       0);
			continue;
		}
		if (rq.host_id != host || rq.slot != idx) {
			mb_report_once(s, i, slot, CP_MBOX_EV_MISPLACED, host,
				       idx, rq.seq);
			continue;
		}
		if (rq.seq == s->answered[i] || rq.seq == s->deferred[i])
			continue;
		if (rq.seq < s->answered[i]) {
			mb_report_once(s, i, slot, CP_MBOX_EV_STALE, host, idx,
				       rq.seq);
			continue;
		}
		if (r == -EPROTONOSUPPORT || rq.opcode != CP_MBOX_OP_EXTEND) {
			bool ver = r == -EPROTONOSUPPORT;

			mb_report_once(s, i, slot, ver ? CP_MBOX_EV_VERSION :
				       CP_MBOX_EV_OPCODE, host, idx, rq.seq);
			it = &s->items[total - 1 - nerr++];
			it->req = rq;
			it->defer = false;
			mb_reply_init(&rq, &it->reply);
			if (ver) {
				/* only the frozen header is known */
				snprintf(it->reply.dom_uuid,
					 sizeof(it->reply.dom_uuid), "%s",
					 "00000000-0000-0000-0000-000000000000");
				memcpy(it->reply.vol_uuid, it->reply.dom_uuid,
				       sizeof(it->reply.vol_uuid));
				it->reply.map_from = 0;
			}
			it->reply.status = ver ? -EPROTONOSUPPORT : -EOPNOTSUPP;
			continue;
		}
		s->reported[i] = 0;
		it = &s->items[n++];
		it->req = rq;
		it->defer = false;
		mb_reply_init(&rq, &it->reply);
	}
	/* move the error replies next to the served ones */
	memmove(&s->items[n], &s->items[total - nerr],
		nerr * sizeof(s->items[0]));
	*nserve = n;
	return n + nerr;
}

static void mb_encode_reply(cp_mbox_server *s, struct cp_mbox_item *it)
{
	const struct cp_mbox_request *rq = &it->req;
	size_t i = (size_t)(rq->host_id - 1) * CP_MBOX_SLOTS + rq->slot;
	uint8_t *slot = s->out + i * CP_MBOX_SLOT_SIZE;

	if (it->defer) {
		/* no reply; left out of the batches until a kick */
		s->deferred[i] = rq->seq;
		it->req.seq = 0;
		mb_stat_add(s, &s->st.deferred, 1);
		return;
	}

	/* the callback may only change the answer, never the header */
	it->reply.version = CP_MBOX_VERSION;
	it->reply.host_id = rq->host_id;
	it->reply.slot = rq->slot;
	it->reply.seq = rq->seq;
	if (it->reply.status > 0)
		it->reply.status = -EIO;
	if (cp_mbox_reply_encode(&it->reply, slot) < 0) {
		/* the callback gave something unencodable: say so */
		it->reply.nsegs = 0;
		it->reply.flags = 0;
		it->reply.status = -EIO;
		if (cp_mbox_reply_encode(&it->reply, slot) < 0) {
			it->req.seq = 0;
			return;
		}
	}
	s->dirty[rq->host_id - 1] = true;
}

static int mb_scan(cp_mbox_server *s, bool safety)
{
	size_t n, nserve, answered = 0;
	int r;

	r = cp_bdev_pread(s->inbox, s->in,
			  (size_t)s->nhosts * CP_MBOX_AREA_SIZE,
			  CP_MBOX_AREA_SIZE);
	pthread_mutex_lock(&s->lock);
	s->st.scans++;
	if (safety)
		s->st.safety_scans++;
	if (r >= 0)
		s->st.bytes_read += (uint64_t)s->nhosts * CP_MBOX_AREA_SIZE;
	pthread_mutex_unlock(&s->lock);
	if (r < 0) {
		mb_event(s, CP_MBOX_EV_IO, 0, 0, 0, r);
		s->rescan = true;
		return cp_error_prefix(r, "mailbox: scan %s",
				       cp_bdev_name(s->inbox));
	}
	s->rescan = false;
	n = mb_collect(s, &nserve);
	if (n == 0)
		return 0;
	if (nserve) {
		pthread_mutex_lock(&s->serve_lock);
		s->o.serve(s->o.serve_opaque, s->items, nserve);
		pthread_mutex_unlock(&s->serve_lock);
	}
	for (size_t i = 0; i < n; i++)
		mb_encode_reply(s, &s->items[i]);
	mb_write_replies(s, s->items, n);
	for (size_t i = 0; i < nserve; i++)
		answered += s->items[i].req.seq != 0;
	pthread_mutex_lock(&s->lock);
	if (nserve)
		s->st.batches++;
	s->st.served += answered;
	pthread_mutex_unlock(&s->lock);
	return (int)answered;
}

static int mb_poll(cp_mbox_server *s, bool full)
{
	uint64_t now = mb_now_us();
	bool safety = now >= s->next_safety_us, changed;
	bool kicked;
	int r;

	pthread_mutex_lock(&s->lock);
	kicked = s->kicked;
	s->kicked = false;
	pthread_mutex_unlock(&s->lock);
	if (kicked) {
		memset(s->deferred, 0, (size_t)s->nhosts * CP_MBOX_SLOTS *
		       sizeof(*s->deferred));
		full = true;
	}
	r = cp_bdev_pread(s->inbox, s->bell, CP_MBOX_AREA_SIZE, 0);
	mb_stat_add(s, &s->st.doorbell_reads, 1);
	if (r < 0) {
		mb_event(s, CP_MBOX_EV_IO, 0, 0, 0, r);
		return cp_error_prefix(r, "mailbox: read doorbell of %s",
				       cp_bdev_name(s->inbox));
	}
	mb_stat_add(s, &s->st.bytes_read, CP_MBOX_AREA_SIZE);
	changed = !s->bell_seen ||
		  memcmp(s->bell, s->last_bell, CP_MBOX_AREA_SIZE) != 0;
	if (!changed && !safety && !full && !s->rescan)
		return 0;
	/* remember the doorbell before scanning: a ring after this read
	 * makes the next poll scan again */
	memcpy(s->last_bell, s->bell, CP_MBOX_AREA_SIZE);
	s->bell_seen = true;
	if (changed)
		s->last_change_us = now;
	if (safety)
		s->next_safety_us = now + (uint64_t)s->o.scan_ms * 1000u;
	return mb_scan(s, safety && !changed && !full);
}

static void *mb_thread(void *arg)
{
	cp_mbox_server *s = arg;

	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		struct timespec ts;

		unsigned nap;
		int served;

		pthread_mutex_unlock(&s->lock);
		served = mb_poll(s, false);
		pthread_mutex_lock(&s->lock);
		if (s->stop)
			break;
		/* after a batch, look again at once: under load the next
		 * requests came in while this one was served */
		if (served > 0 || s->kicked)
			continue;
		/* idle for a while: poll slower (the first request after a
		 * quiet spell waits up to idle_poll_us more) */
		nap = mb_now_us() - s->last_change_us >
			      (uint64_t)s->o.idle_after_ms * 1000u ?
			      s->o.idle_poll_us : s->o.poll_us;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += (long)(nap % 1000000u) * 1000;
		ts.tv_sec += (time_t)(nap / 1000000u) + ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_cond_timedwait(&s->cond, &s->lock, &ts);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

CP_EXPORT int cp_mbox_server_start(cp_bdev *inbox, cp_bdev *outbox,
				   const struct cp_mbox_server_opts *o,
				   cp_mbox_server **out)
{
	struct cp_mbox_server *s;
	uint64_t areas;
	size_t total;
	int r;
	CP_API_ENTER();

	if (!o || o->size < sizeof(*o) || !inbox || !outbox || !o->serve)
		return cp_error(-EINVAL, "mailbox: server options missing "
				"(serve callback required)");
	areas = CP_MIN(mb_areas(inbox), mb_areas(outbox));
	if (o->max_hosts < 1 || o->max_hosts > CP_MBOX_MAX_HOST_ID ||
	    o->max_hosts >= areas)
		return cp_error(-EINVAL, "mailbox: %u hosts do not fit in %s / "
				"%s (%" PRIu64 " areas of 4 KiB, area 0 the "
				"doorbell)", o->max_hosts, cp_bdev_name(inbox),
				cp_bdev_name(outbox), areas);
	s = calloc(1, sizeof(*s));
	if (!s)
		return cp_error(-ENOMEM, "mailbox: out of memory");
	s->inbox = inbox;
	s->outbox = outbox;
	s->o = *o;
	if (!s->o.poll_us)
		s->o.poll_us = 2000;
	if (!s->o.idle_poll_us)
		s->o.idle_poll_us = 10000;
	s->o.idle_poll_us = CP_MAX(s->o.idle_poll_us, s->o.poll_us);
	if (!s->o.scan_ms)
		s->o.scan_ms = 30000;
	s->nhosts = o->max_hosts;
	total = (size_t)s->nhosts * CP_MBOX_SLOTS;
	pthread_mutex_init(&s->serve_lock, NULL);
	pthread_mutex_init(&s->lock, NULL);
	mb_cond_init(&s->cond);
	s->bell = cp_bdev_alloc_buf(CP_MBOX_AREA_SIZE);
	s->last_bell = cp_bdev_alloc_buf(CP_MBOX_AREA_SIZE);
	s->in = cp_bdev_alloc_buf((size_t)s->nhosts * CP_MBOX_AREA_SIZE);
	s->out = cp_bdev_alloc_buf((size_t)s->nhosts * CP_MBOX_AREA_SIZE);
	s->answered = calloc(total, sizeof(*s->answered));
	s->deferred = calloc(total, sizeof(*s->deferred));
	s->reported = calloc(total, sizeof(*s->reported));
	s->dirty = calloc(s->nhosts, sizeof(*s->dirty));
	s->items = calloc(total, sizeof(*s->items));
	if (!s->bell || !s->last_bell || !s->in || !s->out || !s->answered ||
	    !s->deferred || !s->reported || !s->dirty || !s->items) {
		mb_server_free(s);
		return cp_error(-ENOMEM, "mailbox: out of memory for %u hosts",
				s->nhosts);
	}
	/* What was answered: the outbox as the last SPM left it.  A slot
	 * that does not decode counts as never answered (its request, if
	 * still there, is served again: idempotent). */
	r = cp_bdev_pread(outbox, s->out, (size_t)s->nhosts * CP_MBOX_AREA_SIZE,
			  CP_MBOX_AREA_SIZE);
	if (r < 0) {
		mb_server_free(s);
		return cp_error_prefix(r, "mailbox: read outbox %s",
				       cp_bdev_name(outbox));
	}
	s->st.bytes_read += (uint64_t)s->nhosts * CP_MBOX_AREA_SIZE;
	for (size_t i = 0; i < total; i++) {
		struct cp_mbox_reply rp;

		if (cp_mbox_reply_decode(s->out + i * CP_MBOX_SLOT_SIZE, &rp) == 0 &&
		    rp.host_id == i / CP_MBOX_SLOTS + 1 &&
		    rp.slot == i % CP_MBOX_SLOTS)
			s->answered[i] = rp.seq;
	}
	s->next_safety_us = mb_now_us() + (uint64_t)s->o.scan_ms * 1000u;
	if (!s->o.manual) {
		r = -pthread_create(&s->thread, NULL, mb_thread, s);
		if (r < 0) {
			mb_server_free(s);
			return cp_error(r, "mailbox: cannot start the server "
					"thread");
		}
		s->thread_started = true;
	}
	*out = s;
	return 0;
}

CP_EXPORT void cp_mbox_server_stop(cp_mbox_server *s)
{
	if (!s)
		return;
	if (s->thread_started) {
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_cond_signal(&s->cond);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->thread, NULL);
	}
	mb_server_free(s);
}

CP_EXPORT int cp_mbox_server_poll(cp_mbox_server *s, bool full)
{
	CP_API_ENTER();

	if (!s->o.manual)
		return cp_error(-EINVAL, "mailbox: the server polls by itself "
				"(not started manual)");
	return mb_poll(s, full);
}

CP_EXPORT void cp_mbox_server_kick(cp_mbox_server *s)
{
	pthread_mutex_lock(&s->lock);
	s->kicked = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

CP_EXPORT int cp_mbox_server_serve_local(cp_mbox_server *s,
					 struct cp_mbox_item *item)
{
	CP_API_ENTER();

	if (item->req.opcode != CP_MBOX_OP_EXTEND)
		return cp_error(-EOPNOTSUPP, "mailbox: opcode %u unknown",
				item->req.opcode);
	mb_reply_init(&item->req, &item->reply);
	item->defer = false;
	pthread_mutex_lock(&s->serve_lock);
	s->o.serve(s->o.serve_opaque, item, 1);
	pthread_mutex_unlock(&s->serve_lock);
	mb_stat_add(s, &s->st.served, 1);
	return 0;
}

CP_EXPORT void cp_mbox_server_stats(cp_mbox_server *s,
				    struct cp_mbox_server_stats *out)
{
	CP_LOCK_GUARD(&s->lock);
	*out = s->st;
}
