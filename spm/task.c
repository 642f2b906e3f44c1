/* spm/task.c - the task journal (docs/formats/tasks.md).
 *
 * The `tasks` volume of the master domain holds CP_TASK_MAX slots; a slot
 * is two 4 KiB copies.  Every write of a task goes to the copy the new
 * sequence number selects (seq % 2), so the previous state survives a torn
 * write; readers take the valid copy with the highest sequence number.  A
 * copy is valid when its magic, version and CRC32C match and its fields are
 * in range.  Writes are single aligned 4 KiB O_DIRECT writes followed by a
 * flush: durable when tj_begin/tj_update return.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "pool_int.h"

#define TJ_MAGIC "CPTASK01"
#define TJ_VERSION 1u

#define TO_SEQ     16
#define TO_UUID    24
#define TO_TYPE    60
#define TO_STATE   64
#define TO_STEP    68
#define TO_ERROR   72
#define TO_FLAGS   76
#define TO_LVER    80
#define TO_CTIME   88
#define TO_MTIME   96
#define TO_DONE    104
#define TO_TOTAL   112
#define TO_U64     120
#define TO_UUIDS   152
#define TO_MSGLEN  440
#define TO_MSG     442
#define TO_END     (TO_MSG + CP_TASK_ERR_MAX)

static void put32(uint8_t *b, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *b, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *b)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = (v << 8) | b[i];
	return v;
}

static uint64_t get64(const uint8_t *b)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | b[i];
	return v;
}

static char *task_uuid_field(struct cp_task *t, int i)
{
	char *f[] = {t->dom_uuid,     t->img_uuid,     t->vol_uuid,
		     t->parent_uuid,  t->src_img_uuid, t->src_vol_uuid,
		     t->dst_dom_uuid, t->aux_uuid};
	return f[i];
}

static uint32_t tj_crc(const uint8_t *buf)
{
	uint8_t saved[4];
	uint32_t c;

	memcpy(saved, buf + 12, 4);
	memset((uint8_t *)buf + 12, 0, 4);
	c = cp_crc32c(buf, TJ_SLOT_SIZE);
	memcpy((uint8_t *)buf + 12, saved, 4);
	return c;
}

void tj_encode(const struct cp_task *t, uint8_t *buf)
{
	struct cp_task c = *t;
	size_t ml = strnlen(t->message, CP_TASK_ERR_MAX);

	memset(buf, 0, TJ_SLOT_SIZE);
	memcpy(buf, TJ_MAGIC, 8);
	put32(buf + 8, TJ_VERSION);
	put64(buf + TO_SEQ, t->seq);
	memcpy(buf + TO_UUID, t->task_uuid, CP_UUID_STR_LEN);
	put32(buf + TO_TYPE, t->type);
	put32(buf + TO_STATE, t->state);
	put32(buf + TO_STEP, t->step);
	put32(buf + TO_ERROR, (uint32_t)t->error);
	put32(buf + TO_FLAGS, t->flags);
	put64(buf + TO_LVER, t->spm_lver);
	put64(buf + TO_CTIME, (uint64_t)t->ctime);
	put64(buf + TO_MTIME, (uint64_t)t->mtime);
	put64(buf + TO_DONE, t->done);
	put64(buf + TO_TOTAL, t->total);
	for (int i = 0; i < 4; i++)
		put64(buf + TO_U64 + 8 * i, t->u64[i]);
	for (int i = 0; i < 8; i++) {
		const char *u = task_uuid_field(&c, i);
		if (u[0])
			memcpy(buf + TO_UUIDS + i * CP_UUID_STR_LEN, u,
			       CP_UUID_STR_LEN);
	}
	buf[TO_MSGLEN] = (uint8_t)ml;
	buf[TO_MSGLEN + 1] = 0;
	memcpy(buf + TO_MSG, t->message, ml);
	put32(buf + 12, tj_crc(buf));
}

int tj_decode(const uint8_t *buf, const char *what, struct cp_task *out)
{
	struct cp_task t;
	uint32_t crc;
	size_t ml;

	if (memcmp(buf, TJ_MAGIC, 8) != 0)
		return cp_error(-EUCLEAN, "%s: bad magic", what);
	if (get32(buf + 8) != TJ_VERSION)
		return cp_error(-EUCLEAN, "%s: unknown version %u", what,
				get32(buf + 8));
	crc = tj_crc(buf);
	if (crc != get32(buf + 12))
		return cp_error(-EUCLEAN,
				"%s: checksum mismatch: stored 0x%08x, computed 0x%08x",
				what, get32(buf + 12), crc);
	memset(&t, 0, sizeof(t));
	t.seq = get64(buf + TO_SEQ);
	memcpy(t.task_uuid, buf + TO_UUID, CP_UUID_STR_LEN);
	t.type = (enum cp_task_type)get32(buf + TO_TYPE);
	t.state = (enum cp_task_state)get32(buf + TO_STATE);
	t.step = get32(buf + TO_STEP);
	t.error = (int32_t)get32(buf + TO_ERROR);
	t.flags = get32(buf + TO_FLAGS);
	t.spm_lver = get64(buf + TO_LVER);
	t.ctime = (int64_t)get64(buf + TO_CTIME);
	t.mtime = (int64_t)get64(buf + TO_MTIME);
	t.done = get64(buf + TO_DONE);
	t.total = get64(buf + TO_TOTAL);
	for (int i = 0; i < 4; i++)
		t.u64[i] = get64(buf + TO_U64 + 8 * i);
	for (int i = 0; i < 8; i++) {
		const uint8_t *u = buf + TO_UUIDS + i * CP_UUID_STR_LEN;
		char *f = task_uuid_field(&t, i);
		if (cp_is_zero(u, CP_UUID_STR_LEN))
			continue;
		memcpy(f, u, CP_UUID_STR_LEN);
		f[CP_UUID_STR_LEN] = '\0';
		if (!cp_uuid_valid(f))
			return cp_error(-EUCLEAN, "%s: UUID field %d is not valid",
					what, i);
	}
	ml = buf[TO_MSGLEN];
	if (ml > CP_TASK_ERR_MAX || buf[TO_MSGLEN + 1])
		return cp_error(-EUCLEAN, "%s: message length out of range", what);
	memcpy(t.message, buf + TO_MSG, ml);
	if (!cp_uuid_valid(t.task_uuid))
		return cp_error(-EUCLEAN, "%s: task UUID is not valid", what);
	if (t.type < CP_TASK_CREATE_VOLUME || t.type > CP_TASK_EXTEND)
		return cp_error(-EUCLEAN, "%s: task type %u out of range", what,
				(unsigned)t.type);
	if (t.state < CP_TASK_RUNNING || t.state > CP_TASK_ABORTED)
		return cp_error(-EUCLEAN, "%s: task state %u out of range", what,
				(unsigned)t.state);
	if (t.seq == 0)
		return cp_error(-EUCLEAN, "%s: sequence number 0", what);
	if (!cp_is_zero(buf + TO_MSG + ml, TJ_SLOT_SIZE - TO_MSG - ml))
		return cp_error(-EUCLEAN, "%s: reserved bytes are not zero", what);
	*out = t;
	return 0;
}

CP_EXPORT const char *cp_task_type_name(enum cp_task_type t)
{
	switch (t) {
	case CP_TASK_CREATE_VOLUME: return "create_volume";
	case CP_TASK_DELETE_VOLUME: return "delete_volume";
	case CP_TASK_DELETE_IMAGE: return "delete_image";
	case CP_TASK_MERGE: return "merge";
	case CP_TASK_TEMPLATE: return "create_template";
	case CP_TASK_CLONE: return "clone";
	case CP_TASK_COPY_IMAGE: return "copy_image";
	case CP_TASK_EXTEND: return "extend";
	}
	return "unknown";
}

CP_EXPORT const char *cp_task_state_name(enum cp_task_state s)
{
	switch (s) {
	case CP_TASK_RUNNING: return "running";
	case CP_TASK_RECOVERING: return "recovering";
	case CP_TASK_DONE: return "done";
	case CP_TASK_FAILED: return "failed";
	case CP_TASK_ABORTED: return "aborted";
	}
	return "unknown";
}

int tj_open(cp_sd *master, struct task_journal *tj)
{
	int r;

	memset(tj, 0, sizeof(*tj));
	pthread_mutex_init(&tj->lock, NULL);
	strcpy(tj->dom_uuid, master->uuid);
	r = master->ops->tasks_open(master, &tj->dev);
	if (r < 0) {
		pthread_mutex_destroy(&tj->lock);
		return cp_error_prefix(r, "domain %s: task journal", master->uuid);
	}
	if (cp_bdev_size(tj->dev) < TJ_AREA_SIZE) {
		cp_bdev_close(tj->dev);
		pthread_mutex_destroy(&tj->lock);
		tj->dev = NULL;
		return cp_error(-EUCLEAN, "domain %s: task journal is smaller than %"
				PRIu64 " bytes", master->uuid, TJ_AREA_SIZE);
	}
	return 0;
}

void tj_close(struct task_journal *tj)
{
	if (!tj->dev)
		return;
	cp_bdev_close(tj->dev);
	tj->dev = NULL;
	pthread_mutex_destroy(&tj->lock);
}

/* Read a slot: 1 and *t when a valid copy exists, 0 empty, -EUCLEAN when
 * both copies are damaged. */
static int tj_read_slot(struct task_journal *tj, const uint8_t *area,
			unsigned slot, struct cp_task *t)
{
	struct cp_task c[2];
	bool ok[2], zero = true;
	char what[128];

	for (int i = 0; i < 2; i++) {
		const uint8_t *b = area + ((size_t)slot * 2 + i) * TJ_SLOT_SIZE;
		snprintf(what, sizeof(what), "domain %s: task slot %u copy %d",
			 tj->dom_uuid, slot, i);
		if (cp_is_zero(b, TJ_SLOT_SIZE)) {
			ok[i] = false;
			continue;
		}
		zero = false;
		ok[i] = tj_decode(b, what, &c[i]) == 0;
	}
	if (zero)
		return 0;
	if (!ok[0] && !ok[1])
		return cp_error(-EUCLEAN, "domain %s: task slot %u: both copies "
				"are damaged", tj->dom_uuid, slot);
	if (ok[0] && ok[1])
		*t = c[0].seq >= c[1].seq ? c[0] : c[1];
	else
		*t = ok[0] ? c[0] : c[1];
	t->slot = slot;
	return 1;
}

static int tj_read_area(struct task_journal *tj, uint8_t **area)
{
	uint8_t *a = cp_bdev_alloc_buf(TJ_AREA_SIZE);
	int r;

	if (!a)
		return cp_error(-ENOMEM, "out of memory");
	r = cp_bdev_pread(tj->dev, a, TJ_AREA_SIZE, 0);
	if (r < 0) {
		cp_bdev_free_buf(a);
		return cp_error_prefix(r, "domain %s: task journal read",
				       tj->dom_uuid);
	}
	*area = a;
	return 0;
}

int tj_list(struct task_journal *tj, struct cp_task **out, size_t *n,
	    unsigned *bad)
{
	struct cp_task *v;
	uint8_t *area;
	size_t cnt = 0;
	unsigned nbad = 0;
	int r;

	pthread_mutex_lock(&tj->lock);
	r = tj_read_area(tj, &area);
	pthread_mutex_unlock(&tj->lock);
	if (r < 0)
		return r;
	v = calloc(CP_TASK_MAX, sizeof(*v));
	if (!v) {
		cp_bdev_free_buf(area);
		return cp_error(-ENOMEM, "out of memory");
	}
	for (unsigned s = 0; s < CP_TASK_MAX; s++) {
		r = tj_read_slot(tj, area, s, &v[cnt]);
		if (r > 0)
			cnt++;
		else if (r < 0)
			nbad++;
	}
	cp_bdev_free_buf(area);
	if (bad)
		*bad = nbad;
	*out = v;
	*n = cnt;
	return 0;
}

static int tj_write_copy(struct task_journal *tj, const struct cp_task *t)
{
	uint8_t *buf = cp_bdev_alloc_buf(TJ_SLOT_SIZE);
	uint64_t off = ((uint64_t)t->slot * 2 + (t->seq & 1)) * TJ_SLOT_SIZE;
	int r;

	if (!buf)
		return cp_error(-ENOMEM, "out of memory");
	tj_encode(t, buf);
	r = cp_bdev_pwrite(tj->dev, buf, TJ_SLOT_SIZE, off);
	if (r == 0)
		r = cp_bdev_flush(tj->dev);
	cp_bdev_free_buf(buf);
	if (r < 0)
		return cp_error_prefix(r, "domain %s: task %s: journal write",
				       tj->dom_uuid, t->task_uuid);
	return 0;
}

static bool tj_finished(const struct cp_task *t)
{
	return (t->state == CP_TASK_DONE || t->state == CP_TASK_FAILED ||
		t->state == CP_TASK_ABORTED) &&
	       !(t->flags & TF_UNFINISHED);
}

int tj_begin(struct task_journal *tj, struct cp_task *t)
{
	uint8_t *area;
	struct cp_task cur;
	int r, slot = -1, oldest = -1;
	int64_t oldest_mtime = 0;
	uint64_t oldest_seq = 0;

	pthread_mutex_lock(&tj->lock);
	r = tj_read_area(tj, &area);
	if (r < 0)
		goto out;
	for (unsigned s = 0; s < CP_TASK_MAX; s++) {
		int k = tj_read_slot(tj, area, s, &cur);
		if (k == 0 && slot < 0)
			slot = (int)s;
		if (k > 0 && !strcmp(cur.task_uuid, t->task_uuid)) {
			r = cp_error(-EEXIST, "task %s exists", t->task_uuid);
			break;
		}
		/* a finished task's slot is recycled when no slot is empty,
		 * oldest finished first (damaged slots are never reused: they
		 * stay for inspection) */
		if (k > 0 && tj_finished(&cur) &&
		    (oldest < 0 || cur.mtime < oldest_mtime ||
		     (cur.mtime == oldest_mtime && cur.seq < oldest_seq))) {
			oldest = (int)s;
			oldest_mtime = cur.mtime;
			oldest_seq = cur.seq;
		}
	}
	cp_bdev_free_buf(area);
	if (r < 0)
		goto out;
	if (slot < 0)
		slot = oldest;
	if (slot < 0) {
		r = cp_error(-EBUSY, "domain %s: task journal full: %d tasks "
			     "running", tj->dom_uuid, CP_TASK_MAX);
		goto out;
	}
	t->slot = (unsigned)slot;
	t->seq = 1;
	t->ctime = t->mtime = time(NULL);
	/* Both copies: the other copy must not hold an older task's state
	 * with a higher sequence number. */
	r = tj_write_copy(tj, t);
	if (r == 0) {
		t->seq = 2;
		r = tj_write_copy(tj, t);
	}
out:
	pthread_mutex_unlock(&tj->lock);
	return r;
}

int tj_update(struct task_journal *tj, struct cp_task *t)
{
	int r;

	pthread_mutex_lock(&tj->lock);
	t->seq++;
	t->mtime = time(NULL);
	r = tj_write_copy(tj, t);
	pthread_mutex_unlock(&tj->lock);
	return r;
}

int tj_clear(struct task_journal *tj, const struct cp_task *t)
{
	uint8_t *buf = cp_bdev_alloc_buf(2 * TJ_SLOT_SIZE);
	int r;

	if (!buf)
		return cp_error(-ENOMEM, "out of memory");
	memset(buf, 0, 2 * TJ_SLOT_SIZE);
	pthread_mutex_lock(&tj->lock);
	r = cp_bdev_pwrite(tj->dev, buf, 2 * TJ_SLOT_SIZE,
			   (uint64_t)t->slot * 2 * TJ_SLOT_SIZE);
	if (r == 0)
		r = cp_bdev_flush(tj->dev);
	pthread_mutex_unlock(&tj->lock);
	cp_bdev_free_buf(buf);
	if (r < 0)
		return cp_error_prefix(r, "domain %s: task %s: clear",
				       tj->dom_uuid, t->task_uuid);
	return 0;
}
