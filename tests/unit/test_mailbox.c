/* tests/unit/test_mailbox.c - the storage mailbox (mailbox/, format in
 * docs/formats/mailbox.md).
 *
 * - codec: every field round-trips; a flipped bit, a torn slot, an
 *   unknown version, a non-zero reserved byte are recognised;
 *   cp_mbox_reply_set_map clips and continues (MORE);
 * - the server (manual: the test drives each poll) ignores and counts
 *   corrupt, torn, misplaced and stale messages and serves the good ones;
 *   it scans only when the doorbell changed;
 * - 250 hosts as 250 threads posting through the library against one
 *   threaded server, on O_DIRECT files and on a RAM device: every request
 *   is served and answered exactly once (counted per host and sequence
 *   number), each fake LV ends exactly as large as asked;
 * - a new server serves what the old one left pending, including a batch
 *   whose replies never reached the disk;
 * - a restarted host continues above its old sequence numbers; a full
 *   set of slots gives -EBUSY; the SPM's own requests are served locally.
 * The tests wait on replies, never on time.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "blockcore.h"
#include "common.h"
#include "mailbox.h"
#include "spm.h"

#define DOM "11111111-2222-3333-4444-555555555555"
#define IMG "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
#define MiB (1ull << 20)
#define EXTENT (128 * MiB)

static const char *vol_uuid(unsigned host, unsigned v, char *buf)
{
	snprintf(buf, CP_MBOX_UUID_LEN + 1, "%08x-0000-4000-8000-%012x", host,
		 v);
	return buf;
}

/* ---- codec ----------------------------------------------------------------- */

static void make_request(struct cp_mbox_request *r, uint32_t host,
			 uint32_t slot, uint64_t seq)
{
	char v[CP_MBOX_UUID_LEN + 1];

	memset(r, 0, sizeof(*r));
	r->version = CP_MBOX_VERSION;
	r->opcode = CP_MBOX_OP_EXTEND;
	r->host_id = host;
	r->slot = slot;
	r->seq = seq;
	strcpy(r->dom_uuid, DOM);
	strcpy(r->img_uuid, IMG);
	strcpy(r->vol_uuid, vol_uuid(host, slot, v));
	r->size = 3 * EXTENT + 5;
	r->mapped = EXTENT;
}

static void test_codec_roundtrip(void **state)
{
	uint8_t slot[CP_MBOX_SLOT_SIZE];
	struct cp_mbox_request rq, rq2;
	struct cp_mbox_reply rp, rp2;
	struct cp_mbox_seg map[2] = {
		{ .lv_offset = 0, .length = 2 * EXTENT, .pv_offset = MiB,
		  .pv = "pvA" },
		{ .lv_offset = 2 * EXTENT, .length = 2 * EXTENT,
		  .pv_offset = 7 * EXTENT, .pv = "pvB-0123456789012345678901234567890123" },
	};

	make_request(&rq, 2000, 7, UINT64_MAX);
	assert_int_equal(cp_mbox_request_encode(&rq, slot), 0);
	assert_int_equal(cp_mbox_request_decode(slot, &rq2), 0);
	assert_memory_equal(&rq, &rq2, sizeof(rq));
	/* upper-case UUIDs are accepted and read back in lower case */
	strcpy(rq.dom_uuid, "ABCDEF00-2222-3333-4444-555555555555");
	assert_int_equal(cp_mbox_request_encode(&rq, slot), 0);
	assert_int_equal(cp_mbox_request_decode(slot, &rq2), 0);
	assert_string_equal(rq2.dom_uuid, "abcdef00-2222-3333-4444-555555555555");

	memset(&rp, 0, sizeof(rp));
	rp.version = CP_MBOX_VERSION;
	rp.opcode = CP_MBOX_OP_EXTEND;
	rp.host_id = 1;
	rp.slot = 0;
	rp.seq = 42;
	rp.status = -ENOSPC;
	rp.size = 4 * EXTENT;
	rp.map_from = EXTENT + 4096;
	strcpy(rp.dom_uuid, DOM);
	strcpy(rp.vol_uuid, IMG);
	assert_int_equal(cp_mbox_reply_set_map(&rp, map, 2), 0);
	assert_int_equal(rp.nsegs, 2);
	assert_int_equal(rp.flags, 0);
	assert_int_equal(rp.segs[0].lv_offset, EXTENT + 4096);
	assert_int_equal(rp.segs[0].length, EXTENT - 4096);
	assert_int_equal(rp.segs[0].pv_offset, MiB + EXTENT + 4096);
	assert_int_equal(rp.segs[1].lv_offset, 2 * EXTENT);
	assert_int_equal(cp_mbox_reply_encode(&rp, slot), 0);
	assert_int_equal(cp_mbox_reply_decode(slot, &rp2), 0);
	assert_memory_equal(&rp, &rp2, sizeof(rp));

	/* a PV name longer than the field is refused, not truncated */
	strcpy(rp.segs[1].pv, "x");
	memset(map[1].pv, 'p', sizeof(map[1].pv));
	assert_int_equal(cp_mbox_reply_set_map(&rp, map, 2), -EINVAL);
	/* bad fields are refused by encode, the slot untouched */
	memset(slot, 0x5a, sizeof(slot));
	rq.host_id = 0;
	assert_int_equal(cp_mbox_request_encode(&rq, slot), -EINVAL);
	rq.host_id = 1;
	rq.slot = CP_MBOX_SLOTS;
	assert_int_equal(cp_mbox_request_encode(&rq, slot), -EINVAL);
	rq.slot = 0;
	strcpy(rq.vol_uuid, "not-a-uuid");
	assert_int_equal(cp_mbox_request_encode(&rq, slot), -EINVAL);
	assert_int_equal(slot[0], 0x5a);
	rp.status = 1;
	assert_int_equal(cp_mbox_reply_encode(&rp, slot), -EINVAL);
}

static void test_codec_map_more(void **state)
{
	struct cp_mbox_seg map[10];
	struct cp_mbox_reply rp;
	uint64_t at = 0;

	/* ten one-extent segments given in reverse order */
	for (int i = 0; i < 10; i++) {
		map[9 - i] = (struct cp_mbox_seg){ .lv_offset = (uint64_t)i * EXTENT,
			.length = EXTENT, .pv_offset = (uint64_t)(20 - i) * EXTENT };
		snprintf(map[9 - i].pv, sizeof(map[9 - i].pv), "pv%d", i % 3);
	}
	memset(&rp, 0, sizeof(rp));
	rp.map_from = EXTENT / 2;
	assert_int_equal(cp_mbox_reply_set_map(&rp, map, 10), 0);
	assert_int_equal(rp.nsegs, CP_MBOX_MAX_SEGS);
	assert_true(rp.flags & CP_MBOX_REPLY_MORE);
	for (uint32_t i = 0; i < rp.nsegs; i++) {
		assert_int_equal(rp.segs[i].lv_offset, i ? at : EXTENT / 2);
		at = rp.segs[i].lv_offset + rp.segs[i].length;
	}
	/* the host asks again from where it stopped: the rest, no MORE */
	rp.map_from = at;
	assert_int_equal(cp_mbox_reply_set_map(&rp, map, 10), 0);
	assert_int_equal(rp.nsegs, 4);
	assert_false(rp.flags & CP_MBOX_REPLY_MORE);
	assert_int_equal(rp.segs[3].lv_offset + rp.segs[3].length, 10 * EXTENT);
	/* past the end: nothing */
	rp.map_from = 10 * EXTENT;
	assert_int_equal(cp_mbox_reply_set_map(&rp, map, 10), 0);
	assert_int_equal(rp.nsegs, 0);
}

static void test_codec_bad(void **state)
{
	uint8_t slot[CP_MBOX_SLOT_SIZE], old[CP_MBOX_SLOT_SIZE];
	struct cp_mbox_request rq, out;
	uint32_t crc;

	memset(slot, 0, sizeof(slot));
	assert_int_equal(cp_mbox_request_decode(slot, &out), -ENODATA);
	make_request(&rq, 3, 1, 10);
	assert_int_equal(cp_mbox_request_encode(&rq, old), 0);
	rq.seq = 11;
	rq.size *= 2;
	assert_int_equal(cp_mbox_request_encode(&rq, slot), 0);
	/* every single-bit flip is caught */
	for (size_t bit = 0; bit < CP_MBOX_SLOT_SIZE * 8; bit += 7) {
		slot[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_int_not_equal(cp_mbox_request_decode(slot, &out), 0);
		slot[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	assert_int_equal(cp_mbox_request_decode(slot, &out), 0);
	/* torn: the first half new, the rest old */
	memcpy(slot + 256, old + 256, 256);
	assert_int_equal(cp_mbox_request_decode(slot, &out), -EUCLEAN);
	/* a reply is not a request */
	assert_int_equal(cp_mbox_reply_decode(old, (struct cp_mbox_reply *)&out),
			 -EUCLEAN);
	/* unknown version with a good CRC: header only */
	memcpy(slot, old, sizeof(slot));
	slot[4] = 9;
	crc = 0;
	crc = cp_crc32c(slot, CP_MBOX_SLOT_SIZE - 4);
	memcpy(slot + CP_MBOX_SLOT_SIZE - 4, &crc, 4); /* x86: little-endian */
	assert_int_equal(cp_mbox_request_decode(slot, &out),
			 -EPROTONOSUPPORT);
	assert_int_equal(out.version, 9);
	assert_int_equal(out.seq, 10);
	assert_int_equal(out.host_id, 3);
	/* a reserved byte set, CRC fixed: still refused */
	memcpy(slot, old, sizeof(slot));
	slot[300] = 1;
	crc = cp_crc32c(slot, CP_MBOX_SLOT_SIZE - 4);
	memcpy(slot + CP_MBOX_SLOT_SIZE - 4, &crc, 4);
	assert_int_equal(cp_mbox_request_decode(slot, &out), -EUCLEAN);
}

/* ---- a mailbox on two devices, a fake SPM ---------------------------------- */

#define MAXH 250
#define MAXSEQ 64
#define NVOL 4

struct fake_spm {
	pthread_mutex_t lock;
	unsigned served[256][MAXSEQ];   /* per host and seq */
	uint64_t lv[256][NVOL];         /* fake LV sizes */
	unsigned batches, calls;
	int force_status;                    /* 0 or -errno for every reply */
	bool defer;                          /* defer every request */
};

static int vol_index(const char *vol)
{
	return (int)strtoul(vol + 24, NULL, 16);
}

static void fake_serve(void *opaque, struct cp_mbox_item *items, size_t n)
{
	struct fake_spm *f = opaque;

	pthread_mutex_lock(&f->lock);
	f->batches++;
	for (size_t i = 0; i < n; i++) {
		struct cp_mbox_request *rq = &items[i].req;
		struct cp_mbox_reply *rp = &items[i].reply;
		unsigned h = rq->host_id, v = (unsigned)vol_index(rq->vol_uuid);
		struct cp_mbox_seg seg = { 0 };

		f->calls++;
		if (f->defer) {
			items[i].defer = true;
			continue;
		}
		if (h < 256 && rq->seq < MAXSEQ)
			f->served[h][rq->seq]++;
		if (f->force_status) {
			rp->status = f->force_status;
			continue;
		}
		if (h >= 256 || v >= NVOL) {
			rp->status = -ENOENT;
			continue;
		}
		/* lvextend to at least size: whole extents, never shrinks */
		f->lv[h][v] = CP_MAX(f->lv[h][v], CP_ALIGN_UP(rq->size, EXTENT));
		seg.lv_offset = 0;
		seg.length = f->lv[h][v];
		seg.pv_offset = (uint64_t)h * 64 * EXTENT;
		snprintf(seg.pv, sizeof(seg.pv), "pv-%u", h);
		rp->status = 0;
		rp->size = f->lv[h][v];
		assert_int_equal(cp_mbox_reply_set_map(rp, &seg, 1), 0);
	}
	pthread_mutex_unlock(&f->lock);
}

struct ev_log {
	pthread_mutex_t lock;
	unsigned n[CP_MBOX_EV_IO + 1];
	struct cp_mbox_event last;
};

static void log_event(void *opaque, const struct cp_mbox_event *ev)
{
	struct ev_log *l = opaque;

	pthread_mutex_lock(&l->lock);
	l->n[ev->kind]++;
	l->last = *ev;
	pthread_mutex_unlock(&l->lock);
}

struct mbox {
	char dir[64], in_path[96], out_path[96];
	cp_bdev *in, *out;
	bool ram;
};

/* inbox and outbox of nhosts + 1 areas: O_DIRECT files, or RAM */
static void mbox_open(struct mbox *m, bool ram, unsigned nhosts)
{
	uint64_t size = (uint64_t)(nhosts + 1) * CP_MBOX_AREA_SIZE;

	memset(m, 0, sizeof(*m));
	m->ram = ram;
	if (ram) {
		struct cp_ram_opts ro;

		cp_ram_opts_init(&ro);
		ro.initial_size = size;
		ro.max_size = size;
		ro.align = 4096;
		assert_int_equal(cp_bdev_open_ram(&ro, &m->in), 0);
		assert_int_equal(cp_bdev_open_ram(&ro, &m->out), 0);
	} else {
		struct cp_bdev_opts bo;

		strcpy(m->dir, "/var/tmp/cp-mbox-XXXXXX");
		assert_non_null(mkdtemp(m->dir));
		snprintf(m->in_path, sizeof(m->in_path), "%s/inbox", m->dir);
		snprintf(m->out_path, sizeof(m->out_path), "%s/outbox", m->dir);
		cp_bdev_opts_init(&bo);
		bo.cache = CP_CACHE_NONE;
		bo.create = true;
		assert_int_equal(cp_bdev_open(m->in_path, &bo, &m->in), 0);
		assert_int_equal(cp_bdev_open(m->out_path, &bo, &m->out), 0);
		assert_int_equal(cp_bdev_truncate(m->in, size), 0);
		assert_int_equal(cp_bdev_truncate(m->out, size), 0);
	}
}

static void mbox_close(struct mbox *m)
{
	cp_bdev_close(m->in);
	cp_bdev_close(m->out);
	if (!m->ram) {
		unlink(m->in_path);
		unlink(m->out_path);
		rmdir(m->dir);
	}
}

static cp_mbox_server *server(struct mbox *m, struct fake_spm *f,
			      struct ev_log *l, bool manual, unsigned nhosts)
{
	struct cp_mbox_server_opts o;
	cp_mbox_server *s = NULL;

	cp_mbox_server_opts_init(&o);
	o.max_hosts = nhosts;
	o.manual = manual;
	o.poll_us = 500;
	o.serve = fake_serve;
	o.serve_opaque = f;
	o.event = log_event;
	o.event_opaque = l;
	assert_int_equal(cp_mbox_server_start(m->in, m->out, &o, &s), 0);
	return s;
}

static cp_mbox_host *host(struct mbox *m, unsigned id)
{
	struct cp_mbox_host_opts o;
	cp_mbox_host *h = NULL;

	cp_mbox_host_opts_init(&o);
	o.host_id = id;
	o.poll_us = 500;
	assert_int_equal(cp_mbox_host_open(m->in, m->out, &o, &h), 0);
	return h;
}

static struct fake_spm *fake_new(void)
{
	struct fake_spm *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	pthread_mutex_init(&f->lock, NULL);
	return f;
}

static void fake_free(struct fake_spm *f)
{
	pthread_mutex_destroy(&f->lock);
	free(f);
}

/* Write raw bytes into slot s of host h's inbox area (one 4 KiB
 * read-modify-write, as a host would). */
static void poke_slot(struct mbox *m, unsigned h, unsigned s,
		      const uint8_t *bytes, size_t off, size_t len)
{
	uint8_t *area = cp_bdev_alloc_buf(CP_MBOX_AREA_SIZE);

	assert_int_equal(cp_bdev_pread(m->in, area, CP_MBOX_AREA_SIZE,
				       (uint64_t)h * CP_MBOX_AREA_SIZE), 0);
	memcpy(area + s * CP_MBOX_SLOT_SIZE + off, bytes, len);
	assert_int_equal(cp_bdev_pwrite(m->in, area, CP_MBOX_AREA_SIZE,
					(uint64_t)h * CP_MBOX_AREA_SIZE), 0);
	cp_bdev_free_buf(area);
}

static void test_server_bad_messages(void **state)
{
	struct fake_spm *f = fake_new();
	struct ev_log l = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cp_mbox_server_stats st;
	struct cp_mbox_ticket t, t2;
	struct cp_mbox_reply rp;
	struct cp_mbox_request rq;
	uint8_t slot[CP_MBOX_SLOT_SIZE], old[CP_MBOX_SLOT_SIZE];
	char v[CP_MBOX_UUID_LEN + 1];
	struct mbox m;
	cp_mbox_server *s;
	cp_mbox_host *h1, *h2;
	uint32_t crc;

	mbox_open(&m, false, 8);
	s = server(&m, f, &l, true, 8);
	h1 = host(&m, 1);
	h2 = host(&m, 2);

	/* nothing rang: a poll reads the doorbell and scans once (first
	 * look), then polls do not scan */
	assert_int_equal(cp_mbox_server_poll(s, false), 0);
	assert_int_equal(cp_mbox_server_poll(s, false), 0);
	cp_mbox_server_stats(s, &st);
	assert_int_equal(st.doorbell_reads, 2);
	assert_int_equal(st.scans, 1);

	/* a good request: served on the next poll, answered once */
	assert_int_equal(cp_mbox_post_extend(h1, DOM, IMG, vol_uuid(1, 0, v),
					     EXTENT + 1, 0, &t), 0);
	assert_int_equal(cp_mbox_server_poll(s, false), 1);
	assert_int_equal(cp_mbox_wait_reply(h1, &t, 60000, &rp), 0);
	assert_int_equal(rp.status, 0);
	assert_int_equal(rp.size, 2 * EXTENT);
	assert_int_equal(rp.nsegs, 1);
	assert_string_equal(rp.segs[0].pv, "pv-1");
	assert_int_equal(rp.segs[0].length, 2 * EXTENT);
	assert_int_equal(f->served[1][t.seq], 1);
	/* polling again serves nothing more (full scan included) */
	assert_int_equal(cp_mbox_server_poll(s, true), 0);
	assert_int_equal(f->calls, 1);

	/* corrupt: a bit flipped in a new request of host 2 */
	make_request(&rq, 2, 3, 5);
	assert_int_equal(cp_mbox_request_encode(&rq, slot), 0);
	memcpy(old, slot, sizeof(old));
	slot[100] ^= 4;
	poke_slot(&m, 2, 3, slot, 0, sizeof(slot));
	/* torn: host 2 slot 4 half new, half zero (never written) */
	make_request(&rq, 2, 4, 6);
	assert_int_equal(cp_mbox_request_encode(&rq, slot), 0);
	poke_slot(&m, 2, 4, slot, 0, 256);
	/* misplaced: host 1's good message copied into host 3's area, and
	 * one with the right host in the wrong slot */
	make_request(&rq, 1, 5, 7);
	assert_int_equal(cp_mbox_request_encode(&rq, slot), 0);
	poke_slot(&m, 3, 5, slot, 0, sizeof(slot));
	poke_slot(&m, 1, 6, slot, 0, sizeof(slot));
	assert_int_equal(cp_mbox_server_poll(s, true), 0);
	cp_mbox_server_stats(s, &st);
	assert_int_equal(st.corrupt, 2);
	assert_int_equal(st.misplaced, 2);
	assert_int_equal(st.stale, 0);
	assert_int_equal(l.n[CP_MBOX_EV_CORRUPT], 2);
	assert_int_equal(l.n[CP_MBOX_EV_MISPLACED], 2);
	assert_int_equal(f->calls, 1); /* nothing acted on */
	/* reported once, not on every scan */
	assert_int_equal(cp_mbox_server_poll(s, true), 0);
	cp_mbox_server_stats(s, &st);
	assert_int_equal(st.corrupt, 2);
	assert_int_equal(st.misplaced, 2);

	/* stale: an older sequence number in an answered slot */
	assert_int_equal(cp_mbox_post_extend(h2, DOM, IMG, vol_uuid(2, 0, v),
					     EXTENT, 0, &t2), 0);
	assert_int_equal(cp_mbox_server_poll(s, false), 1);
	assert_int_equal(cp_mbox_wait_reply(h2, &t2, 60000, &rp), 0);
	assert_int_equal(cp_mbox_post_extend(h2, DOM, IMG, vol_uuid(2, 0, v),
					     2 * EXTENT, 0, &t2), 0);
	assert_int_equal(cp_mbox_server_poll(s, false), 1);
	assert_int_equal(cp_mbox_wait_reply(h2, &t2, 60000, &rp), 0);
	make_request(&rq, 2, t2.slot, t2.seq - 1);
	assert_int_equal(cp_mbox_request_encode(&rq, slot), 0);
	poke_slot(&m, 2, t2.slot, slot, 0, sizeof(slot));
	assert_int_equal(cp_mbox_server_poll(s, true), 0);
	cp_mbox_server_stats(s, &st);
	assert_int_equal(st.stale, 1);
	assert_int_equal(l.last.kind, CP_MBOX_EV_STALE);
	assert_int_equal(l.last.host_id, 2);
	assert_int_equal(l.last.seq, t2.seq - 1);
	assert_int_equal(f->served[2][t2.seq - 1], 1); /* not served again */

	/* an unknown opcode is answered with an error, not served */
	make_request(&rq, 2, 7, t2.seq + 10);
	assert_int_equal(cp_mbox_request_encode(&rq, slot), 0);
	slot[6] = 77;
	crc = cp_crc32c(slot, CP_MBOX_SLOT_SIZE - 4);
	memcpy(slot + CP_MBOX_SLOT_SIZE - 4, &crc, 4);
	poke_slot(&m, 2, 7, slot, 0, sizeof(slot));
	assert_int_equal(cp_mbox_server_poll(s, true), 0);
	cp_mbox_server_stats(s, &st);
	assert_int_equal(st.bad_opcode, 1);
	{
		struct cp_mbox_ticket t3 = { .slot = 7, .seq = t2.seq + 10 };

		strcpy(t3.dom_uuid, DOM);
		strcpy(t3.vol_uuid, rq.vol_uuid);
		assert_int_equal(cp_mbox_wait_reply(h2, &t3, 60000, &rp), 0);
		assert_int_equal(rp.status, -EOPNOTSUPP);
	}
	assert_int_equal(f->calls, 3);

	cp_mbox_host_close(h1);
	cp_mbox_host_close(h2);
	cp_mbox_server_stop(s);
	mbox_close(&m);
	fake_free(f);
}

/* ---- 250 hosts ------------------------------------------------------------- */

#define ROUNDS 6

struct poster {
	struct mbox *m;
	unsigned id;
	uint64_t asked[NVOL];
	int err;
	char msg[256];
};

static uint64_t ask_size(unsigned id, unsigned k)
{
	return (uint64_t)(k + 1) * EXTENT / 2 + id * 4096;
}

static void *poster_main(void *arg)
{
	struct poster *p = arg;
	cp_mbox_host *h = NULL;
	struct cp_mbox_host_opts o;
	char v[CP_MBOX_UUID_LEN + 1];

	cp_mbox_host_opts_init(&o);
	o.host_id = p->id;
	o.poll_us = 500;
	p->err = cp_mbox_host_open(p->m->in, p->m->out, &o, &h);
	for (unsigned k = 0; !p->err && k < ROUNDS; k++) {
		struct cp_mbox_ticket t;
		struct cp_mbox_reply rp;
		unsigned vi = k % NVOL;
		uint64_t size = ask_size(p->id, k);

		p->err = cp_mbox_post_extend(h, DOM, IMG, vol_uuid(p->id, vi, v),
					     size, 0, &t);
		if (!p->err)
			p->err = cp_mbox_wait_reply(h, &t, 120000, &rp);
		if (p->err) {
			snprintf(p->msg, sizeof(p->msg), "%s",
				 cp_error_msg(p->err));
			break;
		}
		if (rp.status != 0 || rp.size < size || rp.seq != t.seq ||
		    rp.nsegs != 1 || rp.segs[0].length != rp.size ||
		    strcmp(rp.vol_uuid, v) != 0) {
			snprintf(p->msg, sizeof(p->msg), "host %u round %u: bad "
				 "reply status %d size %llu seq %llu", p->id, k,
				 rp.status, (unsigned long long)rp.size,
				 (unsigned long long)rp.seq);
			p->err = -EPROTO;
			break;
		}
		p->asked[vi] = CP_MAX(p->asked[vi], size);
	}
	cp_mbox_host_close(h);
	return NULL;
}

static void many_hosts(bool ram)
{
	struct fake_spm *f = fake_new();
	struct ev_log l = { .lock = PTHREAD_MUTEX_INITIALIZER };
	static struct poster ps[MAXH + 1];
	pthread_t th[MAXH + 1];
	struct cp_mbox_server_stats st;
	struct mbox m;
	cp_mbox_server *s;
	unsigned answered = 0;

	mbox_open(&m, ram, MAXH);
	s = server(&m, f, &l, false, MAXH);
	for (unsigned i = 1; i <= MAXH; i++) {
		ps[i] = (struct poster){ .m = &m, .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, poster_main,
						&ps[i]), 0);
	}
	for (unsigned i = 1; i <= MAXH; i++) {
		pthread_join(th[i], NULL);
		if (ps[i].err)
			fail_msg("host %u: %d %s", i, ps[i].err, ps[i].msg);
	}
	cp_mbox_server_stats(s, &st);
	cp_mbox_server_stop(s);
	assert_int_equal(st.served, MAXH * ROUNDS);
	assert_true(st.batches <= st.served);
	/* every request served exactly once, none twice, none extra */
	for (unsigned i = 1; i <= MAXH; i++) {
		for (unsigned q = 0; q < MAXSEQ; q++) {
			unsigned want = q >= 1 && q <= ROUNDS;

			if (f->served[i][q] != want)
				fail_msg("host %u seq %u served %u times", i, q,
					 f->served[i][q]);
			answered += f->served[i][q];
		}
		/* each LV grew exactly as asked: whole extents over the
		 * largest request */
		for (unsigned vi = 0; vi < NVOL; vi++)
			assert_int_equal(f->lv[i][vi],
					 CP_ALIGN_UP(ps[i].asked[vi], EXTENT));
	}
	assert_int_equal(answered, MAXH * ROUNDS);
	assert_int_equal(f->calls, MAXH * ROUNDS);
	assert_int_equal(l.n[CP_MBOX_EV_CORRUPT] + l.n[CP_MBOX_EV_MISPLACED] +
			 l.n[CP_MBOX_EV_STALE] + l.n[CP_MBOX_EV_IO], 0);
	mbox_close(&m);
	fake_free(f);
}

static void test_250_hosts_file(void **state)
{
	many_hosts(false);
}

static void test_250_hosts_ram(void **state)
{
	many_hosts(true);
}

/* ---- a new SPM ------------------------------------------------------------- */

static void test_server_restart(void **state)
{
	struct fake_spm *f = fake_new();
	struct ev_log l = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cp_mbox_server_stats st;
	struct cp_mbox_ticket t[5];
	struct cp_mbox_reply rp;
	struct cp_bdev_opts bo;
	cp_mbox_host *h[5];
	char v[CP_MBOX_UUID_LEN + 1];
	struct mbox m, ro;
	cp_mbox_server *s;

	mbox_open(&m, false, 8);
	for (unsigned i = 1; i <= 4; i++)
		h[i] = host(&m, i);
	/* SPM A sees requests of hosts 1..3 and serves them, but its replies
	 * never reach the disk (its outbox handle is read-only: a crash
	 * between serving and writing) */
	for (unsigned i = 1; i <= 3; i++)
		assert_int_equal(cp_mbox_post_extend(h[i], DOM, IMG,
						     vol_uuid(i, 0, v),
						     i * EXTENT, 0, &t[i]), 0);
	ro = m;
	cp_bdev_opts_init(&bo);
	bo.cache = CP_CACHE_NONE;
	bo.readonly = true;
	assert_int_equal(cp_bdev_open(m.out_path, &bo, &ro.out), 0);
	s = server(&ro, f, &l, true, 8);
	assert_int_equal(cp_mbox_server_poll(s, false), 0); /* none answered */
	assert_int_equal(f->calls, 3);                      /* all served */
	cp_mbox_server_stats(s, &st);
	assert_int_equal(st.served, 0);
	assert_true(st.io_errors >= 1);
	assert_int_equal(l.last.kind, CP_MBOX_EV_IO);
	cp_mbox_server_stop(s);
	cp_bdev_close(ro.out);
	for (unsigned i = 1; i <= 3; i++)
		assert_int_equal(f->served[i][t[i].seq], 1);

	/* host 4 posts while there is no SPM */
	assert_int_equal(cp_mbox_post_extend(h[4], DOM, IMG, vol_uuid(4, 0, v),
					     EXTENT, 0, &t[4]), 0);
	/* SPM B serves everything pending: the lost batch again (idempotent)
	 * and host 4 */
	s = server(&m, f, &l, true, 8);
	assert_int_equal(cp_mbox_server_poll(s, false), 4);
	for (unsigned i = 1; i <= 4; i++) {
		assert_int_equal(cp_mbox_wait_reply(h[i], &t[i], 60000, &rp), 0);
		assert_int_equal(rp.status, 0);
		assert_int_equal(rp.size, CP_ALIGN_UP(i < 4 ? i * EXTENT : EXTENT,
						      EXTENT));
		assert_int_equal(f->served[i][t[i].seq], i < 4 ? 2 : 1);
		assert_int_equal(f->lv[i][0], i < 4 ? i * EXTENT : EXTENT);
	}
	assert_int_equal(cp_mbox_server_poll(s, true), 0);
	cp_mbox_server_stop(s);
	/* SPM C finds nothing pending: the outbox says all was answered */
	s = server(&m, f, &l, true, 8);
	assert_int_equal(cp_mbox_server_poll(s, true), 0);
	cp_mbox_server_stop(s);
	assert_int_equal(f->calls, 7);

	for (unsigned i = 1; i <= 4; i++)
		cp_mbox_host_close(h[i]);
	mbox_close(&m);
	fake_free(f);
}

/* ---- host rules ------------------------------------------------------------ */

static void test_host_slots(void **state)
{
	struct fake_spm *f = fake_new();
	struct ev_log l = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cp_mbox_ticket t[CP_MBOX_SLOTS + 1], tx;
	struct cp_mbox_reply rp;
	struct cp_mbox_item it;
	char v[CP_MBOX_UUID_LEN + 1];
	struct mbox m;
	cp_mbox_server *s;
	cp_mbox_host *h;
	struct cp_mbox_host_opts o;

	mbox_open(&m, false, 4);
	h = host(&m, 3);
	for (unsigned i = 0; i < CP_MBOX_SLOTS; i++)
		assert_int_equal(cp_mbox_post_extend(h, DOM, IMG,
						     vol_uuid(3, i, v), EXTENT,
						     0, &t[i]), 0);
	/* all slots pending: a ninth volume must wait */
	assert_int_equal(cp_mbox_post_extend(h, DOM, IMG, vol_uuid(3, 99, v),
					     EXTENT, 0, &tx), -EBUSY);
	assert_non_null(strstr(cp_last_error(), "host 3"));
	/* the same volume again reuses its slot and keeps the larger size */
	assert_int_equal(cp_mbox_post_extend(h, DOM, IMG, vol_uuid(3, 1, v),
					     1, 0, &tx), 0);
	assert_int_equal(tx.slot, t[1].slot);
	assert_true(tx.seq > t[CP_MBOX_SLOTS - 1].seq);
	/* a host restarted continues above its old sequence numbers */
	cp_mbox_host_close(h);
	h = host(&m, 3);
	assert_int_equal(cp_mbox_post_extend(h, DOM, IMG, vol_uuid(3, 2, v),
					     EXTENT, 0, &t[CP_MBOX_SLOTS]), 0);
	assert_true(t[CP_MBOX_SLOTS].seq > tx.seq);
	/* the old ticket for slot 1 is answered by the newer request's
	 * reply (same volume, at least as large) */
	s = server(&m, f, &l, true, 4);
	assert_true(cp_mbox_server_poll(s, false) >= 1);
	assert_int_equal(cp_mbox_wait_reply(h, &t[1], 60000, &rp), 0);
	assert_int_equal(rp.seq, tx.seq);
	assert_int_equal(rp.size, EXTENT);
	/* a host id without an area is refused */
	cp_mbox_host_opts_init(&o);
	o.host_id = 5;
	{
		cp_mbox_host *bad = NULL;

		assert_int_equal(cp_mbox_host_open(m.in, m.out, &o, &bad),
				 -EINVAL);
		assert_null(bad);
	}
	/* the SPM's own request: served by the same callback, no I/O */
	memset(&it, 0, sizeof(it));
	make_request(&it.req, 4, 0, 1);
	it.req.size = 3 * EXTENT;
	assert_int_equal(cp_mbox_server_serve_local(s, &it), 0);
	assert_int_equal(it.reply.status, 0);
	assert_int_equal(it.reply.size, 3 * EXTENT);
	assert_int_equal(it.reply.nsegs, 1);
	assert_int_equal(f->served[4][1], 1);
	/* a server that does not fit its devices is refused */
	{
		struct cp_mbox_server_opts so;
		cp_mbox_server *bad = NULL;

		cp_mbox_server_opts_init(&so);
		so.serve = fake_serve;
		so.max_hosts = 5;
		assert_int_equal(cp_mbox_server_start(m.in, m.out, &so, &bad),
				 -EINVAL);
	}
	cp_mbox_server_stop(s);
	cp_mbox_host_close(h);
	mbox_close(&m);
	fake_free(f);
}

/* ---- one host, eight volumes waiting at once -------------------------------- */

struct waiter {
	cp_mbox_host *h;
	struct cp_mbox_ticket t;
	struct cp_mbox_reply rp;
	int r;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;

	w->r = cp_mbox_wait_reply(w->h, &w->t, 120000, &w->rp);
	return NULL;
}

static void test_host_waiters(void **state)
{
	struct fake_spm *f = fake_new();
	struct ev_log l = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct waiter w[CP_MBOX_SLOTS];
	pthread_t th[CP_MBOX_SLOTS];
	struct cp_mbox_host_stats hs;
	char v[CP_MBOX_UUID_LEN + 1];
	struct mbox m;
	cp_mbox_server *s;
	cp_mbox_host *h;

	mbox_open(&m, true, 4);
	h = host(&m, 1);
	for (unsigned i = 0; i < CP_MBOX_SLOTS; i++) {
		w[i].h = h;
		assert_int_equal(cp_mbox_post_extend(h, DOM, IMG,
						     vol_uuid(1, i % NVOL, v),
						     (i + 1) * EXTENT, 0,
						     &w[i].t), 0);
	}
	/* four volumes, two posts each: the second reuses the slot */
	for (unsigned i = 0; i < CP_MBOX_SLOTS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, waiter_main,
						&w[i]), 0);
	s = server(&m, f, &l, false, 4);
	for (unsigned i = 0; i < CP_MBOX_SLOTS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].r, 0);
		assert_int_equal(w[i].rp.status, 0);
		/* both tickets of a volume get the reply to the larger ask */
		assert_int_equal(w[i].rp.size, (i % NVOL + 1 + NVOL) * EXTENT);
		assert_int_equal(w[i].rp.seq, w[i % NVOL + NVOL].t.seq);
	}
	cp_mbox_host_stats(h, &hs);
	assert_int_equal(hs.posts, CP_MBOX_SLOTS);
	assert_int_equal(hs.replies, NVOL);
	cp_mbox_server_stop(s);
	cp_mbox_host_close(h);
	mbox_close(&m);
	fake_free(f);
}

/* ---- VG full: deferred until the domain grows ------------------------------ */

static void test_server_defer(void **state)
{
	struct fake_spm *f = fake_new();
	struct ev_log l = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cp_mbox_server_stats st;
	struct cp_mbox_ticket t;
	struct cp_mbox_reply rp;
	char v[CP_MBOX_UUID_LEN + 1];
	uint8_t *area = cp_bdev_alloc_buf(CP_MBOX_AREA_SIZE);
	struct mbox m;
	cp_mbox_server *s;
	cp_mbox_host *h;

	mbox_open(&m, false, 4);
	s = server(&m, f, &l, true, 4);
	h = host(&m, 2);
	f->defer = true;
	assert_int_equal(cp_mbox_post_extend(h, DOM, IMG, vol_uuid(2, 0, v),
					     2 * EXTENT, 0, &t), 0);
	assert_int_equal(cp_mbox_server_poll(s, false), 0);
	assert_int_equal(f->calls, 1);
	cp_mbox_server_stats(s, &st);
	assert_int_equal(st.deferred, 1);
	assert_int_equal(st.served, 0);
	/* no reply on disk, and later scans leave it alone */
	assert_int_equal(cp_bdev_pread(m.out, area, CP_MBOX_AREA_SIZE,
				       2 * CP_MBOX_AREA_SIZE), 0);
	assert_true(cp_is_zero(area, CP_MBOX_AREA_SIZE));
	assert_int_equal(cp_mbox_server_poll(s, true), 0);
	assert_int_equal(f->calls, 1);
	/* the domain grew: the kick serves it without the host asking */
	f->defer = false;
	cp_mbox_server_kick(s);
	assert_int_equal(cp_mbox_server_poll(s, false), 1);
	assert_int_equal(cp_mbox_wait_reply(h, &t, 60000, &rp), 0);
	assert_int_equal(rp.status, 0);
	assert_int_equal(rp.size, 2 * EXTENT);
	assert_int_equal(f->served[2][t.seq], 1);
	assert_int_equal(cp_mbox_server_poll(s, true), 0);
	assert_int_equal(f->calls, 2);
	cp_mbox_host_close(h);
	cp_mbox_server_stop(s);
	cp_bdev_free_buf(area);
	mbox_close(&m);
	fake_free(f);
}

/* ---- on a file domain ------------------------------------------------------ */

/* The mailbox of a real file domain (dom_md/inbox, dom_md/outbox opened by
 * spm): 1 MiB each holds host ids 1..255; a host and a server meet there. */
static void test_file_domain(void **state)
{
	struct fake_spm *f = fake_new();
	struct ev_log l = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cp_domain_create_opts o;
	struct cp_domain_md md;
	struct cp_sd_loc loc;
	struct cp_mbox_ticket t;
	struct cp_mbox_reply rp;
	char v[CP_MBOX_UUID_LEN + 1], cmd[128];
	struct mbox m;
	cp_mbox_server *s;
	cp_mbox_host *h;
	cp_sd *sd;

	memset(&m, 0, sizeof(m));
	m.ram = true; /* mbox_close: nothing to unlink, the domain goes */
	strcpy(m.dir, "/var/tmp/cp-mbox-sd-XXXXXX");
	assert_non_null(mkdtemp(m.dir));
	cp_domain_create_opts_init(&o);
	o.root = m.dir;
	o.pool_uuid = IMG;
	o.name = "mbox";
	o.master = true;
	assert_int_equal(cp_domain_create(&o, &md), 0);
	cp_sd_loc_init(&loc);
	loc.root = m.dir;
	assert_int_equal(cp_sd_open(&loc, md.dom_uuid, &sd), 0);
	assert_int_equal(cp_sd_mailbox_open(sd, false, &m.in), 0);
	assert_int_equal(cp_sd_mailbox_open(sd, true, &m.out), 0);
	assert_int_equal(cp_bdev_size(m.in), 256 * CP_MBOX_AREA_SIZE);
	assert_int_equal(cp_bdev_cache(m.in), CP_CACHE_NONE);
	s = server(&m, f, &l, false, 255);
	h = host(&m, 255);
	assert_int_equal(cp_mbox_post_extend(h, md.dom_uuid, IMG,
					     vol_uuid(255, 1, v), 5 * EXTENT,
					     EXTENT, &t), 0);
	assert_int_equal(cp_mbox_wait_reply(h, &t, 60000, &rp), 0);
	assert_int_equal(rp.status, 0);
	assert_int_equal(rp.size, 5 * EXTENT);
	assert_int_equal(rp.map_from, EXTENT);
	assert_int_equal(rp.nsegs, 1);
	assert_int_equal(rp.segs[0].lv_offset, EXTENT);
	assert_int_equal(rp.segs[0].length, 4 * EXTENT);
	assert_string_equal(rp.dom_uuid, md.dom_uuid);
	assert_int_equal(f->served[255][t.seq], 1);
	cp_mbox_host_close(h);
	cp_mbox_server_stop(s);
	mbox_close(&m);
	cp_sd_close(sd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m.dir);
	assert_int_equal(system(cmd), 0);
	fake_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec_roundtrip),
		cmocka_unit_test(test_codec_map_more),
		cmocka_unit_test(test_codec_bad),
		cmocka_unit_test(test_server_bad_messages),
		cmocka_unit_test(test_server_restart),
		cmocka_unit_test(test_server_defer),
		cmocka_unit_test(test_host_slots),
		cmocka_unit_test(test_host_waiters),
		cmocka_unit_test(test_file_domain),
		cmocka_unit_test(test_250_hosts_file),
		cmocka_unit_test(test_250_hosts_ram),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
