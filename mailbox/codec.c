/* mailbox/codec.c - mailbox messages <-> 512-byte slots
 * (docs/formats/mailbox.md), the doorbell record, the reply's segment
 * list, and the small helpers host.c and server.c share.
 *
 * One rule for every field: encode refuses what decode would refuse, so a
 * slot this code writes always reads back as the same message.  Reserved
 * bytes are written as zero and must read as zero; a slot whose CRC does
 * not match is never looked into (a torn write of a slot leaves part of
 * the old and part of the new message, and the CRC catches it).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "mailbox_int.h"
#include "spm.h"

uint32_t mb_slot_crc(const uint8_t *slot)
{
	return cp_crc32c(slot, MB_OFF_CRC);
}

void mb_cond_init(pthread_cond_t *c)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(c, &ca);
	pthread_condattr_destroy(&ca);
}

uint64_t mb_areas(cp_bdev *dev)
{
	return cp_bdev_size(dev) / CP_MBOX_AREA_SIZE;
}

/* ---- UUIDs: 36 characters of text <-> 16 bytes ----------------------------- */

static int mb_uuid_pack(const char *s, uint8_t *out)
{
	size_t i, o = 0;

	if (!s || strnlen(s, CP_MBOX_UUID_LEN + 1) != CP_MBOX_UUID_LEN)
		return -EINVAL;
	for (i = 0; i < CP_MBOX_UUID_LEN;) {
		char byte[3] = { 0 };

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return -EINVAL;
			i++;
			continue;
		}
		if (!isxdigit((unsigned char)s[i]) ||
		    !isxdigit((unsigned char)s[i + 1]))
			return -EINVAL;
		byte[0] = s[i];
		byte[1] = s[i + 1];
		out[o++] = (uint8_t)strtoul(byte, NULL, 16);
		i += 2;
	}
	return 0;
}

static void mb_uuid_unpack(const uint8_t *in, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[in[i] >> 4];
		out[o++] = hex[in[i] & 15];
	}
	out[o] = '\0';
}

/* ---- the frozen header ----------------------------------------------------- */

static void mb_put_header(uint8_t *slot, const char *magic, uint16_t version,
			  uint16_t opcode, uint32_t host, uint32_t idx,
			  uint64_t seq)
{
	memcpy(slot + MB_OFF_MAGIC, magic, 4);
	mb_put_le16(slot + MB_OFF_VERSION, version);
	mb_put_le16(slot + MB_OFF_OPCODE, opcode);
	mb_put_le32(slot + MB_OFF_HOST, host);
	mb_put_le32(slot + MB_OFF_SLOT, idx);
	mb_put_le64(slot + MB_OFF_SEQ, seq);
}

static int mb_check_header(uint32_t host, uint32_t idx, uint64_t seq)
{
	if (host < 1 || host > CP_MBOX_MAX_HOST_ID || idx >= CP_MBOX_SLOTS ||
	    seq == 0)
		return -EINVAL;
	return 0;
}

/* Magic and CRC; then the frozen header into the caller's fields.  0 for
 * version 1, -EPROTONOSUPPORT for another, -ENODATA empty, -EUCLEAN. */
static int mb_open_slot(const uint8_t *slot, const char *magic,
			uint16_t *version, uint16_t *opcode, uint32_t *host,
			uint32_t *idx, uint64_t *seq)
{
	if (memcmp(slot + MB_OFF_MAGIC, magic, 4) != 0)
		return cp_is_zero(slot, CP_MBOX_SLOT_SIZE) ? -ENODATA : -EUCLEAN;
	if (mb_le32(slot + MB_OFF_CRC) != mb_slot_crc(slot))
		return -EUCLEAN;
	*version = mb_le16(slot + MB_OFF_VERSION);
	*opcode = mb_le16(slot + MB_OFF_OPCODE);
	*host = mb_le32(slot + MB_OFF_HOST);
	*idx = mb_le32(slot + MB_OFF_SLOT);
	*seq = mb_le64(slot + MB_OFF_SEQ);
	if (mb_check_header(*host, *idx, *seq) < 0)
		return -EUCLEAN;
	return *version == CP_MBOX_VERSION ? 0 : -EPROTONOSUPPORT;
}

static void mb_seal(uint8_t *slot)
{
	mb_put_le32(slot + MB_OFF_CRC, mb_slot_crc(slot));
}

/* ---- requests -------------------------------------------------------------- */

CP_EXPORT int cp_mbox_request_encode(const struct cp_mbox_request *r,
				     uint8_t *slot)
{
	uint8_t tmp[CP_MBOX_SLOT_SIZE] = {0};
	CP_API_ENTER();

	if (r->version != CP_MBOX_VERSION || r->opcode != CP_MBOX_OP_EXTEND ||
	    mb_check_header(r->host_id, r->slot, r->seq) < 0 || r->size == 0)
		return cp_error(-EINVAL, "mailbox request of host %" PRIu32
				" slot %" PRIu32 ": header out of range",
				r->host_id, r->slot);
	if (mb_uuid_pack(r->dom_uuid, tmp + MB_RQ_OFF_DOM) < 0 ||
	    mb_uuid_pack(r->img_uuid, tmp + MB_RQ_OFF_IMG) < 0 ||
	    mb_uuid_pack(r->vol_uuid, tmp + MB_RQ_OFF_VOL) < 0)
		return cp_error(-EINVAL, "mailbox request of host %" PRIu32
				": invalid UUID", r->host_id);
	mb_put_header(tmp, MB_MAGIC_REQUEST, r->version, r->opcode, r->host_id,
		      r->slot, r->seq);
	mb_put_le64(tmp + MB_RQ_OFF_SIZE, r->size);
	mb_put_le64(tmp + MB_RQ_OFF_MAPPED, r->mapped);
	mb_seal(tmp);
	memcpy(slot, tmp, sizeof(tmp));
	return 0;
}

CP_EXPORT int cp_mbox_request_decode(const uint8_t *slot,
				     struct cp_mbox_request *out)
{
	struct cp_mbox_request r = {0};
	int ret = mb_open_slot(slot, MB_MAGIC_REQUEST, &r.version, &r.opcode,
			       &r.host_id, &r.slot, &r.seq);

	if (ret == -EPROTONOSUPPORT)
		*out = r;
	if (ret < 0)
		return ret;
	if (!cp_is_zero(slot + MB_RQ_END, MB_OFF_CRC - MB_RQ_END))
		return -EUCLEAN;
	mb_uuid_unpack(slot + MB_RQ_OFF_DOM, r.dom_uuid);
	mb_uuid_unpack(slot + MB_RQ_OFF_IMG, r.img_uuid);
	mb_uuid_unpack(slot + MB_RQ_OFF_VOL, r.vol_uuid);
	r.size = mb_le64(slot + MB_RQ_OFF_SIZE);
	r.mapped = mb_le64(slot + MB_RQ_OFF_MAPPED);
	*out = r;
	return 0;
}

/* ---- replies --------------------------------------------------------------- */

CP_EXPORT int cp_mbox_reply_encode(const struct cp_mbox_reply *r,
				   uint8_t *slot)
{
	uint8_t tmp[CP_MBOX_SLOT_SIZE] = {0};
	CP_API_ENTER();

	if (r->version != CP_MBOX_VERSION ||
	    mb_check_header(r->host_id, r->slot, r->seq) < 0 ||
	    r->status > 0 || r->nsegs > CP_MBOX_MAX_SEGS ||
	    (r->flags & ~CP_MBOX_REPLY_MORE))
		return cp_error(-EINVAL, "mailbox reply to host %" PRIu32
				" slot %" PRIu32 ": field out of range",
				r->host_id, r->slot);
	if (mb_uuid_pack(r->dom_uuid, tmp + MB_RP_OFF_DOM) < 0 ||
	    mb_uuid_pack(r->vol_uuid, tmp + MB_RP_OFF_VOL) < 0)
		return cp_error(-EINVAL, "mailbox reply to host %" PRIu32
				": invalid UUID", r->host_id);
	mb_put_header(tmp, MB_MAGIC_REPLY, r->version, r->opcode, r->host_id,
		      r->slot, r->seq);
	mb_put_le32(tmp + MB_RP_OFF_STATUS, (uint32_t)r->status);
	mb_put_le32(tmp + MB_RP_OFF_FLAGS, r->flags);
	mb_put_le64(tmp + MB_RP_OFF_SIZE, r->size);
	mb_put_le64(tmp + MB_RP_OFF_MAP_FROM, r->map_from);
	mb_put_le32(tmp + MB_RP_OFF_NSEGS, r->nsegs);
	for (uint32_t i = 0; i < r->nsegs; i++) {
		const struct cp_mbox_seg *sg = &r->segs[i];
		uint8_t *p = tmp + MB_RP_OFF_SEGS + i * MB_SEG_SIZE;
		size_t pvlen = strnlen(sg->pv, CP_MBOX_PV_MAX + 1);

		if (pvlen > CP_MBOX_PV_MAX || sg->length == 0)
			return cp_error(-EINVAL, "mailbox reply to host %" PRIu32
					": segment %" PRIu32 " out of range",
					r->host_id, i);
		mb_put_le64(p, sg->lv_offset);
		mb_put_le64(p + 8, sg->length);
		mb_put_le64(p + 16, sg->pv_offset);
		memcpy(p + MB_SEG_OFF_PV, sg->pv, pvlen);
	}
	mb_seal(tmp);
	memcpy(slot, tmp, sizeof(tmp));
	return 0;
}

CP_EXPORT int cp_mbox_reply_decode(const uint8_t *slot,
				   struct cp_mbox_reply *out)
{
	struct cp_mbox_reply r;
	int ret;

	memset(&r, 0, sizeof(r));
	ret = mb_open_slot(slot, MB_MAGIC_REPLY, &r.version, &r.opcode,
			   &r.host_id, &r.slot, &r.seq);
	if (ret == -EPROTONOSUPPORT)
		*out = r;
	if (ret < 0)
		return ret;
	r.status = (int32_t)mb_le32(slot + MB_RP_OFF_STATUS);
	r.flags = mb_le32(slot + MB_RP_OFF_FLAGS);
	r.size = mb_le64(slot + MB_RP_OFF_SIZE);
	r.map_from = mb_le64(slot + MB_RP_OFF_MAP_FROM);
	r.nsegs = mb_le32(slot + MB_RP_OFF_NSEGS);
	if (r.status > 0 || (r.flags & ~CP_MBOX_REPLY_MORE) ||
	    r.nsegs > CP_MBOX_MAX_SEGS ||
	    mb_le32(slot + MB_RP_OFF_NSEGS + 4) != 0 ||
	    !cp_is_zero(slot + MB_RP_OFF_SEGS + r.nsegs * MB_SEG_SIZE,
			MB_OFF_CRC - MB_RP_OFF_SEGS - r.nsegs * MB_SEG_SIZE))
		return -EUCLEAN;
	mb_uuid_unpack(slot + MB_RP_OFF_DOM, r.dom_uuid);
	mb_uuid_unpack(slot + MB_RP_OFF_VOL, r.vol_uuid);
	for (uint32_t i = 0; i < r.nsegs; i++) {
		const uint8_t *p = slot + MB_RP_OFF_SEGS + i * MB_SEG_SIZE;
		struct cp_mbox_seg *sg = &r.segs[i];

		sg->lv_offset = mb_le64(p);
		sg->length = mb_le64(p + 8);
		sg->pv_offset = mb_le64(p + 16);
		if (sg->length == 0 || p[MB_SEG_SIZE - 1] != 0)
			return -EUCLEAN;
		memcpy(sg->pv, p + MB_SEG_OFF_PV, CP_MBOX_PV_MAX + 1);
	}
	*out = r;
	return 0;
}

CP_EXPORT int cp_mbox_reply_set_map(struct cp_mbox_reply *r,
				    const struct cp_mbox_seg *map, size_t n)
{
	uint64_t at = r->map_from;
	CP_API_ENTER();

	r->nsegs = 0;
	r->flags &= ~CP_MBOX_REPLY_MORE;
	/* Walk the map in LV order from map_from: find the segment holding
	 * `at`, clip it, move on to its end.  Maps are short (a few
	 * segments): quadratic is fine and needs no copy. */
	for (;;) {
		const struct cp_mbox_seg *hit = NULL;
		struct cp_mbox_seg *sg;
		uint64_t skip;

		for (size_t i = 0; i < n; i++)
			if (map[i].lv_offset <= at &&
			    at - map[i].lv_offset < map[i].length) {
				hit = &map[i];
				break;
			}
		if (!hit)
			return 0;
		if (r->nsegs == CP_MBOX_MAX_SEGS) {
			r->flags |= CP_MBOX_REPLY_MORE;
			return 0;
		}
		if (strnlen(hit->pv, CP_MBOX_PV_MAX + 1) > CP_MBOX_PV_MAX)
			return cp_error(-EINVAL, "mailbox: PV name longer than %u "
					"bytes", CP_MBOX_PV_MAX);
		skip = at - hit->lv_offset;
		sg = &r->segs[r->nsegs++];
		*sg = *hit;
		sg->lv_offset = at;
		sg->length = hit->length - skip;
		sg->pv_offset = hit->pv_offset + skip;
		at += sg->length;
	}
}

/* ---- doorbell -------------------------------------------------------------- */

void mb_doorbell_encode(uint8_t *area, uint32_t host_id, uint64_t token,
			uint64_t count)
{
	memset(area, 0, CP_MBOX_AREA_SIZE);
	memcpy(area, MB_MAGIC_DOORBELL, 4);
	mb_put_le16(area + MB_OFF_VERSION, CP_MBOX_VERSION);
	mb_put_le32(area + MB_DB_OFF_HOST, host_id);
	mb_put_le64(area + MB_DB_OFF_TOKEN, token);
	mb_put_le64(area + MB_DB_OFF_COUNT, count);
	mb_put_le32(area + MB_DB_SIZE - 4, cp_crc32c(area, MB_DB_SIZE - 4));
}

uint64_t mb_token(uint32_t host_id, uint64_t count)
{
	uint64_t t;

	if (getrandom(&t, sizeof(t), GRND_NONBLOCK) == (ssize_t)sizeof(t))
		return t;
	/* splitmix64 of clock, host and count: unique per host and post */
	t = mb_now_us() ^ (uint64_t)host_id << 48 ^ count;
	t += 0x9e3779b97f4a7c15ull;
	t = (t ^ (t >> 30)) * 0xbf58476d1ce4e5b9ull;
	t = (t ^ (t >> 27)) * 0x94d049bb133111ebull;
	return t ^ (t >> 31);
}
