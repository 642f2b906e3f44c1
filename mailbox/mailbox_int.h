/* mailbox/mailbox_int.h - private to mailbox/: the on-disk layout
 * (docs/formats/mailbox.md) and what host.c and server.c share.
 *
 * codec.c   slots <-> messages, the doorbell record, little-endian helpers
 * host.c    cp_mbox_host: posting and waiting
 * server.c  cp_mbox_server: doorbell poll, scan, batches, replies
 */
#ifndef CP_MAILBOX_INT_H
#define CP_MAILBOX_INT_H

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "mailbox.h"

/* ---- codec.c -------------------------------------------------------------- */

/* Byte offsets of a slot (both kinds share the first 24 bytes, frozen
 * across versions, and the CRC in the last 4). */
#define MB_OFF_MAGIC 0
#define MB_OFF_VERSION 4
#define MB_OFF_OPCODE 6
#define MB_OFF_HOST 8
#define MB_OFF_SLOT 12
#define MB_OFF_SEQ 16
#define MB_OFF_CRC (CP_MBOX_SLOT_SIZE - 4)
/* request */
#define MB_RQ_OFF_DOM 24
#define MB_RQ_OFF_IMG 40
#define MB_RQ_OFF_VOL 56
#define MB_RQ_OFF_SIZE 72
#define MB_RQ_OFF_MAPPED 80
#define MB_RQ_END 88
/* reply */
#define MB_RP_OFF_STATUS 24
#define MB_RP_OFF_FLAGS 28
#define MB_RP_OFF_SIZE 32
#define MB_RP_OFF_MAP_FROM 40
#define MB_RP_OFF_DOM 48
#define MB_RP_OFF_VOL 64
#define MB_RP_OFF_NSEGS 80
#define MB_RP_OFF_SEGS 88
#define MB_SEG_SIZE 64
#define MB_SEG_OFF_PV 24
#define MB_RP_END (MB_RP_OFF_SEGS + CP_MBOX_MAX_SEGS * MB_SEG_SIZE)
/* doorbell record, at the start of inbox area 0 */
#define MB_DB_OFF_HOST 8
#define MB_DB_OFF_TOKEN 16
#define MB_DB_OFF_COUNT 24
#define MB_DB_SIZE 64

#define MB_MAGIC_REQUEST "CPRQ"
#define MB_MAGIC_REPLY "CPRP"
#define MB_MAGIC_DOORBELL "CPDB"

_Static_assert(CP_MBOX_SLOTS * CP_MBOX_SLOT_SIZE == CP_MBOX_AREA_SIZE,
	       "slots fill the area");
_Static_assert(MB_RQ_END <= MB_OFF_CRC, "request fits its slot");
_Static_assert(MB_RP_END <= MB_OFF_CRC, "reply fits its slot");
_Static_assert(MB_SEG_OFF_PV + CP_MBOX_PV_MAX + 1 == MB_SEG_SIZE,
	       "segment layout");

static inline uint16_t mb_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t mb_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}
static inline uint64_t mb_le64(const uint8_t *p)
{
	return mb_le32(p) | (uint64_t)mb_le32(p + 4) << 32;
}
static inline void mb_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void mb_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void mb_put_le64(uint8_t *p, uint64_t v)
{
	mb_put_le32(p, (uint32_t)v);
	mb_put_le32(p + 4, (uint32_t)(v >> 32));
}

/* The CRC32C a slot should carry (over bytes 0..507). */
uint32_t mb_slot_crc(const uint8_t *slot);
/* The doorbell record a post writes (MB_DB_SIZE bytes, rest of the area
 * zero): host, a random token, the host's post count. */
void mb_doorbell_encode(uint8_t *area, uint32_t host_id, uint64_t token,
			uint64_t count);
/* A token no earlier post used (random, from getrandom, else a mix of the
 * clock, host id and counter). */
uint64_t mb_token(uint32_t host_id, uint64_t count);

/* Monotonic clock in microseconds. */
static inline uint64_t mb_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* pthread_cond_init on CLOCK_MONOTONIC (waits take mb_now_us() times). */
void mb_cond_init(pthread_cond_t *c);

/* Areas a device holds (its size / 4096). */
uint64_t mb_areas(cp_bdev *dev);

#endif
