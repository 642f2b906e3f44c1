/* qcow/snapshot.c - the internal snapshot table, read and rewritten with
 * QEMU's rules (block/qcow2-snapshot.c), so that the images QEMU refuses
 * to open are refused here too and `check -r all` repairs a damaged table
 * as `qemu-img check -r all` does.
 *
 * cowpool never creates, applies or deletes internal snapshots: an image
 * that has some is opened read-only (open.c), and check counts the
 * clusters the snapshots reference.
 *
 * On-disk entry (8-byte aligned, big-endian): L1 offset (8), L1 size (4),
 * id length (2), name length (2), date seconds (4), date nanoseconds (4),
 * VM clock (8), 32-bit VM state size (4), extra data size (4), then the
 * extra data (64-bit VM state size, disk size, icount, then data unknown
 * to us, kept as is), the id and the name (not NUL-terminated).
 */
#include "qcow_int.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SN_HDR 40u
#define SN_EXTRA_KNOWN 24u      /* vm_state_size_large, disk_size, icount */
#define SN_EXTRA_V3_MIN 16u     /* v3 entries carry at least the first two */
#define SN_MAX_EXTRA 1024u      /* QCOW_MAX_SNAPSHOT_EXTRA_DATA */
#define SN_MAX_TABLE (64ull << 20) /* QCOW_MAX_SNAPSHOTS_SIZE */
/* QEMU's BDRV_MAX_LENGTH: INT64_MAX rounded down to 1 GiB; a read past it
 * fails with EIO (a read past the end of the file reads zeroes). */
#define SN_MAX_LENGTH 0x7fffffffc0000000ull

static void sn_say(cp_check_report_fn report, void *opaque, const char *fmt,
		   ...) CP_PRINTF(3, 4);
static void sn_say(cp_check_report_fn report, void *opaque, const char *fmt,
		   ...)
{
	char line[256];
	va_list ap;

	if (!report)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	report(opaque, line);
}

static int sn_pread(struct qcow *q, void *buf, uint64_t len, uint64_t off)
{
	if (!len)
		return 0;
	if (off > SN_MAX_LENGTH || len > SN_MAX_LENGTH - off)
		return -EIO;
	return cp_bdev_pread(q->dev, buf, len, off);
}

void qc_snapshots_free(struct qc_snaps *s)
{
	for (uint32_t i = 0; s->v && i < s->n; i++) {
		free(s->v[i].unknown);
		free(s->v[i].id);
		free(s->v[i].name);
	}
	free(s->v);
	memset(s, 0, sizeof(*s));
}

int qc_snapshots_validate(const struct qcow *q, uint32_t nb, uint64_t off)
{
	if (nb > QC_MAX_SNAPSHOTS)
		return cp_error(-EFBIG, "%s: snapshot table too large (%" PRIu32
				" snapshots, at most %u)", q->name, nb,
				QC_MAX_SNAPSHOTS);
	if ((uint64_t)INT64_MAX - (uint64_t)nb * SN_HDR < off ||
	    off % q->cluster_size)
		return cp_error(-EINVAL, "%s: snapshot table offset invalid "
				"(0x%" PRIx64 ")", q->name, off);
	return 0;
}

/* Read a string of len bytes at *pos into a new NUL-terminated buffer. */
static int sn_read_str(struct qcow *q, uint64_t *pos, unsigned len, char **out)
{
	char *s = malloc((size_t)len + 1);
	if (!s)
		return -ENOMEM;
	int r = sn_pread(q, s, len, *pos);
	if (r < 0) {
		free(s);
		return r;
	}
	s[len] = 0;
	*pos += len;
	*out = s;
	return 0;
}

int qc_snapshots_read(struct qcow *q, bool repair, struct qc_snaps *s,
		      cp_check_report_fn report, void *opaque)
{
	uint64_t start = q->snapshots_offset, off = start, pre, len = 0;
	uint32_t nb = q->nb_snapshots;
	uint8_t h[SN_HDR], ex[SN_EXTRA_KNOWN];
	int r = qc_snapshots_validate(q, nb, start);

	memset(s, 0, sizeof(*s));
	if (r < 0 || !nb)
		return r;
	s->v = calloc(nb, sizeof(*s->v));
	if (!s->v)
		return cp_error(-ENOMEM, "%s: out of memory", q->name);
	for (uint32_t i = 0; i < nb; i++) {
		struct qc_snap *sn = &s->v[i];
		bool cut = false;

		pre = off;
		len = CP_ALIGN_UP(len, 8);
		off = CP_ALIGN_UP(off, 8);
		s->n = i + 1;
		r = sn_pread(q, h, SN_HDR, off);
		if (r < 0)
			goto fail;
		off += SN_HDR;
		sn->l1_offset = cp_be64(h);
		sn->l1_size = cp_be32(h + 8);
		unsigned id_len = cp_be16(h + 12), name_len = cp_be16(h + 14);
		sn->date_sec = cp_be32(h + 16);
		sn->date_nsec = cp_be32(h + 20);
		sn->vm_clock_nsec = cp_be64(h + 24);
		sn->vm_state_size = cp_be32(h + 32);
		sn->extra_size = cp_be32(h + 36);
		if (sn->extra_size > SN_MAX_EXTRA) {
			if (!repair) {
				r = cp_error(-EFBIG, "%s: too much extra metadata "
					     "in snapshot table entry %" PRIu32
					     " (remove it with 'cowpool check "
					     "-r all')", q->name, i);
				goto out;
			}
			sn_say(report, opaque, "Discarding too much extra "
			       "metadata in snapshot table entry %" PRIu32
			       " (%" PRIu32 " > %u)", i, sn->extra_size,
			       SN_MAX_EXTRA);
			s->dropped++;
			cut = true;
		}
		uint32_t known = CP_MIN(sn->extra_size, SN_EXTRA_KNOWN);
		r = sn_pread(q, ex, known, off);
		if (r < 0)
			goto fail;
		off += known;
		if (known >= 8)
			sn->vm_state_size = cp_be64(ex);
		sn->disk_size = known >= 16 ? cp_be64(ex + 8)
					    : CP_ALIGN_UP(q->size, 512);
		sn->icount = known >= 24 ? cp_be64(ex + 16) : UINT64_MAX;
		if (sn->extra_size > SN_EXTRA_KNOWN) {
			uint64_t end = off + sn->extra_size - SN_EXTRA_KNOWN;
			if (cut)
				sn->extra_size = SN_MAX_EXTRA;
			size_t n = sn->extra_size - SN_EXTRA_KNOWN;
			sn->unknown = malloc(n);
			if (!sn->unknown) {
				r = -ENOMEM;
				goto fail;
			}
			r = sn_pread(q, sn->unknown, n, off);
			if (r < 0)
				goto fail;
			off = end;
		}
		r = sn_read_str(q, &off, id_len, &sn->id);
		if (r >= 0)
			r = sn_read_str(q, &off, name_len, &sn->name);
		if (r < 0)
			goto fail;
		len += SN_HDR + sn->extra_size + id_len + name_len;
		if (len > SN_MAX_TABLE || off - start > INT_MAX) {
			if (!repair) {
				r = cp_error(-EFBIG, "%s: snapshot table is too "
					     "big (remove the %" PRIu32
					     " overhanging snapshots with "
					     "'cowpool check -r all')", q->name,
					     nb - i);
				goto out;
			}
			sn_say(report, opaque, "Discarding %" PRIu32 " overhanging "
			       "snapshots (snapshot table is too big)", nb - i);
			s->reduced += nb - i;
			free(sn->unknown);
			free(sn->id);
			free(sn->name);
			memset(sn, 0, sizeof(*sn));
			s->n = i;
			off = pre;
			break;
		}
	}
	s->size = off - start;
	return 0;
fail:
	if (r == -ENOMEM)
		r = cp_error(r, "%s: out of memory", q->name);
	else
		r = cp_error(r, "%s: failed to read snapshot table: %s", q->name,
			     strerror(-r));
out:
	qc_snapshots_free(s);
	return r;
}

uint32_t qc_snapshots_incomplete(const struct qcow *q, const struct qc_snaps *s,
				 uint32_t i)
{
	return q->version >= 3 && s->v[i].extra_size < SN_EXTRA_V3_MIN;
}

int qc_snapshots_set_count(struct qcow *q, uint32_t nb)
{
	uint8_t be[4];
	cp_put_be32(be, nb);
	int r = cp_bdev_pwrite(q->dev, be, 4, 60);
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
	if (r < 0)
		return r;
	q->nb_snapshots = nb;
	return 0;
}

/* Lay the table out as QEMU's qcow2_write_snapshots does: every entry gets
 * at least the 24 bytes of known extra data. */
static int sn_build(const struct qc_snaps *s, uint8_t **out, uint64_t *size)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < s->n; i++) {
		const struct qc_snap *sn = &s->v[i];
		n = CP_ALIGN_UP(n, 8) + SN_HDR +
		    CP_MAX(SN_EXTRA_KNOWN, sn->extra_size) + strlen(sn->id) +
		    strlen(sn->name);
		if (n > SN_MAX_TABLE)
			return -EFBIG;
	}
	uint8_t *b = calloc(1, n ? n : 1);
	if (!b)
		return -ENOMEM;
	uint64_t p = 0;
	for (uint32_t i = 0; i < s->n; i++) {
		const struct qc_snap *sn = &s->v[i];
		size_t il = strlen(sn->id), nl = strlen(sn->name);
		uint32_t extra = CP_MAX(SN_EXTRA_KNOWN, sn->extra_size);
		p = CP_ALIGN_UP(p, 8);
		cp_put_be64(b + p, sn->l1_offset);
		cp_put_be32(b + p + 8, sn->l1_size);
		cp_put_be16(b + p + 12, (uint16_t)il);
		cp_put_be16(b + p + 14, (uint16_t)nl);
		cp_put_be32(b + p + 16, sn->date_sec);
		cp_put_be32(b + p + 20, sn->date_nsec);
		cp_put_be64(b + p + 24, sn->vm_clock_nsec);
		/* too big for 32 bits: older readers see no VM state */
		if (sn->vm_state_size <= UINT32_MAX)
			cp_put_be32(b + p + 32, (uint32_t)sn->vm_state_size);
		cp_put_be32(b + p + 36, extra);
		p += SN_HDR;
		cp_put_be64(b + p, sn->vm_state_size);
		cp_put_be64(b + p + 8, sn->disk_size);
		cp_put_be64(b + p + 16, sn->icount);
		p += SN_EXTRA_KNOWN;
		if (sn->extra_size > SN_EXTRA_KNOWN) {
			memcpy(b + p, sn->unknown, sn->extra_size - SN_EXTRA_KNOWN);
			p += sn->extra_size - SN_EXTRA_KNOWN;
		}
		memcpy(b + p, sn->id, il);
		p += il;
		memcpy(b + p, sn->name, nl);
		p += nl;
	}
	*out = b;
	*size = n;
	return 0;
}

int qc_snapshots_write(struct qcow *q, const struct qc_snaps *s,
		       uint64_t old_off, uint64_t old_size)
{
	uint64_t cs = q->cluster_size, size, new_off = 0;
	uint8_t *b = NULL;
	int r = sn_build(s, &b, &size);

	if (r < 0)
		return r;
	pthread_mutex_lock(&q->lock);
	if (size) {
		r = qc_alloc_clusters_locked(q, CP_DIV_ROUND_UP(size, cs),
					     &new_off);
		if (r >= 0)
			r = qc_cache_writeback(q, &q->rbc);
		if (r >= 0)
			r = cp_bdev_flush(q->dev);
		if (r >= 0)
			r = cp_bdev_pwrite(q->dev, b, size, new_off);
	}
	if (r >= 0)
		r = cp_bdev_flush(q->dev);
	if (r >= 0) {
		/* nb_snapshots and snapshots_offset, one write */
		uint8_t be[12];
		cp_put_be32(be, s->n);
		cp_put_be64(be + 4, new_off);
		r = cp_bdev_pwrite(q->dev, be, sizeof(be), 60);
		if (r >= 0)
			r = cp_bdev_flush(q->dev);
	}
	if (r >= 0) {
		q->nb_snapshots = s->n;
		q->snapshots_offset = new_off;
		/* free the old table where it has refcounts (not past the
		 * end of the file, where damage may have put it) */
		uint64_t fend = cp_bdev_size(q->dev);
		for (uint64_t c = old_off / cs;
		     old_size && c <= (old_off + old_size - 1) / cs &&
		     c * cs < fend && r >= 0; c++) {
			uint64_t rc = 0;
			if (qc_refcount_get_locked(q, c, &rc) >= 0 && rc)
				r = qc_refcount_update_locked(q, c * cs, cs, -1);
		}
		if (r >= 0)
			r = qc_cache_writeback(q, &q->rbc);
		if (r >= 0)
			r = cp_bdev_flush(q->dev);
		cp_clear_error();
	}
	pthread_mutex_unlock(&q->lock);
	free(b);
	return r;
}
