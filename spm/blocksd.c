/* spm/blocksd.c - the BLOCK storage domain backend: one LVM volume group per
 * domain (see sd_int.h for the backend contract and docs/formats/domain.md,
 * "Block domain", for every byte).
 *
 * Layout
 *   VG <domain-uuid>, tags CP_DOMAIN (marker, written by vgcreate) and
 *   CPMD_<base64 of the 512-byte domain record> (written last by create,
 *   replaced atomically by write_md: --deltag old --addtag new in one
 *   vgchange, i.e. one LVM metadata commit).
 *   Special LVs, created right after vgcreate in this order so that each is
 *   one segment on the first device:
 *     ids       1 MiB                  sanlock lockspace
 *     leases    (2 + max_volumes) MiB  SDM at 1 MiB, volume of slot s at
 *                                      (2 + s) MiB
 *     metadata  max_volumes * 4 KiB    volume record of slot s at s * 4 KiB
 *     inbox     8 MiB                  mailbox (2000 hosts x 4 KiB)
 *     outbox    8 MiB
 *     tasks     1 MiB                  task journal
 *   A volume is an LV named by its UUID with tags IU_<image>,
 *   PU_<parent or the zero UUID> and MD_<slot>.
 *
 * sanlock needs a path and an offset.  Without device-mapper there is no
 * /dev/VG/ids, so the lockspace and the leases are given to sanlock as the
 * PV device and the byte offset of the LV's single segment there
 * (pe_start + first_pe * extent_size, from cp_lvm_lv_map()): exactly the
 * bytes dm-linear would address.  The same is used on a host with
 * device-mapper (the PV is reachable there too), so every host names the
 * same bytes the same way and there is one code path.  ids and leases must
 * therefore stay single-segment; open() refuses them otherwise (-EUCLEAN).
 *
 * Volume records: one aligned O_DIRECT write of the metadata LV's logical
 * block size (512, or 4096 on 4K-sector PVs) at slot * 4096, through the
 * linear device (cp_lvm_open_lv()), then a flush.  A sector write is
 * atomic on the devices we support, so a reader sees the old or the new
 * record.  The slot of a volume is found from its LV's MD_ tag on every
 * call (no cache: another host's SPM may have removed and re-created it);
 * the record must name that volume, else -EUCLEAN.  vol_create zeroes the
 * slot before it creates the LV, so a new volume reads "no metadata"
 * (-ENOENT) rather than a stale record of a removed one.
 *
 * LVM options: sd->lvm (with its strings) belongs to sd.c, which fills it
 * before open() and frees it after close().
 *
 * Threads: as cp_sd (spm.h, "sd.c"): structural calls serialised by the
 * caller; reads concurrently.  priv->lock protects the lazily opened
 * metadata device only; the device itself takes concurrent I/O.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "common.h"
#include "sd_int.h"
#include "timeouts.h"

#define MiB (1ull << 20)

#define BLK_TAG_DOMAIN "CP_DOMAIN"
#define BLK_TAG_MD "CPMD_"
#define BLK_TAG_IMG "IU_"
#define BLK_TAG_PARENT "PU_"
#define BLK_TAG_SLOT "MD_"
#define BLK_ZERO_UUID "00000000-0000-0000-0000-000000000000"

#define BLK_LV_IDS "ids"
#define BLK_LV_LEASES "leases"
#define BLK_LV_METADATA "metadata"
#define BLK_LV_INBOX "inbox"
#define BLK_LV_OUTBOX "outbox"
#define BLK_LV_TASKS "tasks"

#define BLK_IDS_SIZE MiB
#define BLK_MAILBOX_SIZE (8 * MiB) /* 2000 hosts x 4 KiB, rounded up */
#define BLK_TASKS_SIZE MiB
#define BLK_SLOT_SIZE 4096u
#define BLK_VOL_LEASE_BASE (2 * MiB) /* lease of slot s at base + s MiB */
#define BLK_VOL_LEASE_STEP MiB
#define BLK_EXTENT_DEFAULT (128 * MiB)
#define BLK_MAX_VOLUMES_MAX 100000u /* as cp_sd_create checks */

/* base64 of one 512-byte record: 170 groups of 3 bytes + 2 bytes ("=") */
#define BLK_B64_LEN (4 * ((CP_MD_SECTOR_SIZE + 2) / 3))
_Static_assert(BLK_B64_LEN == 684, "record tag length");
_Static_assert(sizeof(BLK_TAG_MD) - 1 + BLK_B64_LEN <= 1024,
	       "record tag fits LVM's tag limit");
_Static_assert(CP_SD_SDM_LEASE_OFFSET == MiB, "SDM lease at 1 MiB");

struct blk_priv {
	pthread_mutex_t lock; /* md_dev */
	cp_bdev *md_dev;      /* the metadata LV, O_DIRECT, opened lazily */
};

static uint64_t blk_leases_size(uint32_t max_volumes)
{
	return BLK_VOL_LEASE_BASE + (uint64_t)max_volumes * BLK_VOL_LEASE_STEP;
}

static uint64_t blk_metadata_size(uint32_t max_volumes)
{
	return (uint64_t)max_volumes * BLK_SLOT_SIZE;
}

/* ---- base64 (RFC 4648 standard alphabet, padded, canonical) ---------------- */

static const char blk_b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* out must hold 4 * ceil(n / 3) + 1 bytes. */
static void blk_b64_encode(const uint8_t *in, size_t n, char *out)
{
	size_t i = 0, o = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
			     in[i + 2];
		out[o++] = blk_b64_chars[v >> 18];
		out[o++] = blk_b64_chars[(v >> 12) & 63];
		out[o++] = blk_b64_chars[(v >> 6) & 63];
		out[o++] = blk_b64_chars[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = blk_b64_chars[v >> 18];
		out[o++] = blk_b64_chars[(v >> 12) & 63];
		out[o++] = '=';
		out[o++] = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = blk_b64_chars[v >> 18];
		out[o++] = blk_b64_chars[(v >> 12) & 63];
		out[o++] = blk_b64_chars[(v >> 6) & 63];
		out[o++] = '=';
	}
	out[o] = '\0';
}

static int blk_b64_val(char c)
{
	const char *p = c ? strchr(blk_b64_chars, c) : NULL;
	return p ? (int)(p - blk_b64_chars) : -1;
}

/* Decode exactly the canonical encoding of outlen bytes; anything else
 * (length, alphabet, padding, non-zero unused bits) is -EINVAL. */
static int blk_b64_decode(const char *in, uint8_t *out, size_t outlen)
{
	size_t len = strlen(in), o = 0;

	if (len != 4 * ((outlen + 2) / 3))
		return -EINVAL;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			if (in[i + k] == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad)
				return -EINVAL; /* data after '=' */
			v[k] = blk_b64_val(in[i + k]);
			if (v[k] < 0)
				return -EINVAL;
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
			     (uint32_t)v[2] << 6 | (uint32_t)v[3];
		size_t nbytes = 3 - (size_t)pad;
		if (o + nbytes != CP_MIN(o + 3, outlen))
			return -EINVAL; /* padding does not match outlen */
		if ((pad == 1 && (w & 0xFF)) || (pad == 2 && (w & 0xFFFF)))
			return -EINVAL; /* non-canonical unused bits */
		for (size_t k = 0; k < nbytes; k++)
			out[o++] = (uint8_t)(w >> (16 - 8 * k));
	}
	return o == outlen ? 0 : -EINVAL;
}

/* ---- the domain record tag ------------------------------------------------- */

/* From a VG's tags: whether it carries the marker, and the record tag
 * (borrowed from info; NULL if none).  Two record tags: -EUCLEAN. */
static int blk_find_md_tag(const char *vg, const struct cp_lvm_vg_info *vi,
			   bool *marker, const char **md)
{
	size_t n = 0;

	*marker = false;
	*md = NULL;
	for (size_t i = 0; i < vi->ntags; i++) {
		if (!strcmp(vi->tags[i], BLK_TAG_DOMAIN))
			*marker = true;
		if (!strncmp(vi->tags[i], BLK_TAG_MD, strlen(BLK_TAG_MD))) {
			n++;
			*md = vi->tags[i];
		}
	}
	if (n > 1)
		return cp_error(-EUCLEAN,
				"VG %s: %zu domain record tags (" BLK_TAG_MD
				"...); exactly one is allowed",
				vg, n);
	return 0;
}

/* Decode and check the record tag of VG vg into *d. */
static int blk_decode_md(const char *vg, const char *tag,
			 struct cp_domain_md *d)
{
	uint8_t buf[CP_MD_SECTOR_SIZE];
	char what[200];
	int r;

	snprintf(what, sizeof(what), "VG %s: domain record (tag " BLK_TAG_MD
		 ")", vg);
	if (blk_b64_decode(tag + strlen(BLK_TAG_MD), buf, sizeof(buf)) < 0)
		return cp_error(-EUCLEAN,
				"%s: not the base64 of a %d-byte record (%zu "
				"characters)",
				what, CP_MD_SECTOR_SIZE,
				strlen(tag + strlen(BLK_TAG_MD)));
	r = cp_domain_md_decode(buf, what, d);
	if (r < 0)
		return r;
	if (d->type != CP_DOMAIN_TYPE_BLOCK)
		return cp_error(-EUCLEAN, "%s: type %u, not BLOCK", what,
				(unsigned)d->type);
	if (strcmp(d->dom_uuid, vg))
		return cp_error(-EUCLEAN, "%s: names domain %s", what,
				d->dom_uuid);
	if (d->max_volumes < 1 || d->max_volumes > BLK_MAX_VOLUMES_MAX)
		return cp_error(-EUCLEAN, "%s: max_volumes %u out of 1..%u",
				what, d->max_volumes, BLK_MAX_VOLUMES_MAX);
	return 0;
}

/* The tag holding record d (tag: 5 + 684 + 1 bytes). */
static int blk_encode_md(const struct cp_domain_md *d, char *tag)
{
	uint8_t buf[CP_MD_SECTOR_SIZE];
	int r = cp_domain_md_encode(d, buf);

	if (r < 0)
		return r;
	memcpy(tag, BLK_TAG_MD, strlen(BLK_TAG_MD));
	blk_b64_encode(buf, sizeof(buf), tag + strlen(BLK_TAG_MD));
	return 0;
}

static int blk_read_md_vg(const struct cp_lvm_opts *lvm, const char *vg,
			  struct cp_domain_md *out)
{
	struct cp_lvm_vg_info vi;
	const char *tag;
	bool marker;
	int r = cp_lvm_vg_info(lvm, vg, &vi);

	if (r < 0)
		return r == -ENOENT
			   ? cp_error_prefix(r, "block domain %s", vg)
			   : r;
	r = blk_find_md_tag(vg, &vi, &marker, &tag);
	if (r == 0 && !marker)
		r = cp_error(-EUCLEAN,
			     "VG %s is not a cowpool domain (no " BLK_TAG_DOMAIN
			     " tag)",
			     vg);
	if (r == 0 && !tag)
		r = cp_error(-EUCLEAN,
			     "VG %s: no domain record (tag " BLK_TAG_MD
			     "...): an unfinished domain create",
			     vg);
	if (r == 0)
		r = blk_decode_md(vg, tag, out);
	cp_lvm_vg_info_clear(&vi);
	return r;
}

/* ---- special LVs ----------------------------------------------------------- */

/* Where LV lv starts on its PV: it must be one segment of at least
 * min_size bytes.  path gets the PV. */
static int blk_locate(const struct cp_lvm_opts *lvm, const char *vg,
		      const char *lv, uint64_t min_size, char *path,
		      size_t pathlen, uint64_t *offset)
{
	struct cp_linear_map map;
	int r = cp_lvm_lv_map(lvm, vg, lv, &map);

	if (r < 0)
		return cp_error_prefix(r, "block domain %s: LV %s", vg, lv);
	if (map.nsegs != 1)
		r = cp_error(-EUCLEAN,
			     "block domain %s: LV %s has %zu segments; sanlock "
			     "needs it in one piece on one PV",
			     vg, lv, map.nsegs);
	else if (map.segs[0].length < min_size)
		r = cp_error(-EUCLEAN,
			     "block domain %s: LV %s has %" PRIu64
			     " bytes, needs %" PRIu64,
			     vg, lv, map.segs[0].length, min_size);
	else if (strlen(map.segs[0].pv_path) >= pathlen)
		r = cp_error(-ENAMETOOLONG, "block domain %s: PV path %s",
			     vg, map.segs[0].pv_path);
	if (r == 0) {
		strcpy(path, map.segs[0].pv_path);
		*offset = map.segs[0].pv_offset;
	}
	cp_lvm_map_free(&map);
	return r;
}

struct blk_special {
	const char *name;
	uint64_t size;
};

static void blk_specials(uint32_t max_volumes, struct blk_special s[6])
{
	s[0] = (struct blk_special){BLK_LV_IDS, BLK_IDS_SIZE};
	s[1] = (struct blk_special){BLK_LV_LEASES, blk_leases_size(max_volumes)};
	s[2] = (struct blk_special){BLK_LV_METADATA,
				    blk_metadata_size(max_volumes)};
	s[3] = (struct blk_special){BLK_LV_INBOX, BLK_MAILBOX_SIZE};
	s[4] = (struct blk_special){BLK_LV_OUTBOX, BLK_MAILBOX_SIZE};
	s[5] = (struct blk_special){BLK_LV_TASKS, BLK_TASKS_SIZE};
}

static int blk_open_lv(const struct cp_lvm_opts *lvm, const char *vg,
		       const char *lv, bool rw, cp_bdev **out)
{
	struct cp_bdev_opts bo;

	cp_bdev_opts_init(&bo);
	bo.cache = CP_CACHE_NONE;
	bo.readonly = !rw;
	return cp_lvm_open_lv(lvm, vg, lv, &bo, out);
}

/* Zero a whole special LV through the linear device. */
static int blk_zero_lv(const struct cp_lvm_opts *lvm, const char *vg,
		       const char *lv)
{
	cp_bdev *dev;
	int r = blk_open_lv(lvm, vg, lv, true, &dev);

	if (r < 0)
		return r;
	r = cp_bdev_write_zeroes(dev, 0, cp_bdev_size(dev), 0);
	if (r == 0)
		r = cp_bdev_flush(dev);
	if (r < 0)
		cp_error_prefix(r, "block domain %s: zeroing LV %s", vg, lv);
	cp_bdev_close(dev);
	return r;
}

/* ---- create / open / close ------------------------------------------------- */

static int blk_create_layout(const struct cp_lvm_opts *lvm, const char *vg,
			     const struct cp_domain_md *d)
{
	struct blk_special sp[6];
	char ids_path[PATH_MAX], leases_path[PATH_MAX];
	uint64_t ids_off, leases_off;
	int r;

	blk_specials(d->max_volumes, sp);
	for (int i = 0; i < 6; i++) {
		r = cp_lvm_lv_create(lvm, vg, sp[i].name, sp[i].size, NULL);
		if (r < 0)
			return r;
	}
	r = blk_zero_lv(lvm, vg, BLK_LV_METADATA);
	if (r == 0)
		r = blk_zero_lv(lvm, vg, BLK_LV_INBOX);
	if (r == 0)
		r = blk_zero_lv(lvm, vg, BLK_LV_OUTBOX);
	if (r == 0)
		r = blk_zero_lv(lvm, vg, BLK_LV_TASKS);
	if (r == 0)
		r = blk_locate(lvm, vg, BLK_LV_IDS, BLK_IDS_SIZE, ids_path,
			       sizeof(ids_path), &ids_off);
	if (r == 0)
		r = blk_locate(lvm, vg, BLK_LV_LEASES,
			       blk_leases_size(d->max_volumes), leases_path,
			       sizeof(leases_path), &leases_off);
	if (r < 0)
		return r;

	struct cp_lockspace_opts ls;
	cp_lockspace_opts_init(&ls);
	ls.name = d->dom_uuid;
	ls.path = ids_path;
	ls.offset = ids_off;
	ls.io_timeout = d->io_timeout;
	r = cp_lockspace_format(&ls);
	if (r < 0)
		return cp_error_prefix(r, "block domain %s: lockspace", vg);

	struct cp_lease_opts lo;
	cp_lease_opts_init(&lo);
	lo.lockspace = d->dom_uuid;
	lo.name = "SDM";
	lo.path = leases_path;
	lo.offset = leases_off + CP_SD_SDM_LEASE_OFFSET;
	r = cp_lease_format(&lo);
	if (r < 0)
		return cp_error_prefix(r, "block domain %s: SDM lease", vg);
	return 0;
}

/* vgremove -f: the VG with its LVs (all inactive: activation is off). */
static int blk_destroy(const struct cp_sd_loc *loc, const char *uuid)
{
	int r = cp_lvm_vg_remove(loc->lvm, uuid);

	return r == -ENOENT ? 0 : r;
}

static int blk_create(const struct cp_sd_create_opts *o,
		      struct cp_domain_md *out)
{
	struct cp_domain_md d;
	char tag[sizeof(BLK_TAG_MD) + BLK_B64_LEN];
	uint64_t ext;
	int r;

	if (!o || o->size != sizeof(*o))
		return cp_error(-EINVAL, "block domain: create options not "
					 "initialised");
	if (!o->devices || !o->devices[0])
		return cp_error(-EINVAL, "block domain: no devices given");
	memset(&d, 0, sizeof(d));
	if (o->dom_uuid) {
		if (!cp_uuid_valid(o->dom_uuid))
			return cp_error(-EINVAL,
					"block domain: invalid UUID '%s'",
					o->dom_uuid);
		snprintf(d.dom_uuid, sizeof(d.dom_uuid), "%s", o->dom_uuid);
	} else if ((r = cp_uuid_generate(d.dom_uuid)) < 0) {
		return r;
	}
	if (!o->pool_uuid || !cp_uuid_valid(o->pool_uuid))
		return cp_error(-EINVAL, "block domain %s: invalid pool UUID",
				d.dom_uuid);
	if (!o->name || strlen(o->name) > CP_DOMAIN_NAME_MAX)
		return cp_error(-EINVAL, "block domain %s: name missing or "
					 "longer than %d bytes",
				d.dom_uuid, CP_DOMAIN_NAME_MAX);
	snprintf(d.pool_uuid, sizeof(d.pool_uuid), "%s", o->pool_uuid);
	snprintf(d.name, sizeof(d.name), "%s", o->name);
	d.type = CP_DOMAIN_TYPE_BLOCK;
	d.dom_version = 1;
	d.master = o->master;
	d.generation = 0;
	d.chunk_size = o->chunk_size ? o->chunk_size : CP_SD_CHUNK_DEFAULT;
	d.io_timeout = o->io_timeout ? o->io_timeout : CP_IO_TIMEOUT_DEFAULT;
	d.max_volumes = o->max_volumes ? o->max_volumes
				       : CP_SD_MAX_VOLUMES_DEFAULT;
	if (d.max_volumes > BLK_MAX_VOLUMES_MAX)
		return cp_error(-EINVAL,
				"block domain %s: max_volumes %u out of 1..%u",
				d.dom_uuid, d.max_volumes, BLK_MAX_VOLUMES_MAX);
	ext = o->extent_size ? o->extent_size : BLK_EXTENT_DEFAULT;
	if (!cp_is_pow2(ext) || ext < MiB)
		return cp_error(-EINVAL,
				"block domain %s: extent size %" PRIu64
				" is not a power of two >= 1 MiB",
				d.dom_uuid, ext);
	/* Everything is checked (the record encodes) before a disk is
	 * touched. */
	r = blk_encode_md(&d, tag);
	if (r < 0)
		return r;

	const char *marker[] = {BLK_TAG_DOMAIN, NULL};
	r = cp_lvm_vg_create(o->loc.lvm, d.dom_uuid, o->devices, marker, ext);
	if (r < 0)
		return r;
	r = blk_create_layout(o->loc.lvm, d.dom_uuid, &d);
	if (r == 0) {
		const char *add[] = {tag, NULL};
		r = cp_lvm_vg_change_tags(o->loc.lvm, d.dom_uuid, add, NULL);
	}
	if (r < 0) {
		/* the VG is ours (vgcreate succeeded): remove it again */
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", cp_error_msg(r));
		if (blk_destroy(&o->loc, d.dom_uuid) < 0)
			return cp_error(r, "block domain %s: create failed: %s "
					"(and removing VG %s failed: %s)",
					d.dom_uuid, msg, d.dom_uuid,
					cp_last_error());
		return cp_error(r, "block domain %s: create failed (VG "
				"removed again): %s", d.dom_uuid, msg);
	}
	if (out)
		*out = d;
	return 0;
}

static void blk_close(cp_sd *sd)
{
	struct blk_priv *p = sd->priv;

	if (p) {
		cp_bdev_close(p->md_dev);
		pthread_mutex_destroy(&p->lock);
		free(p);
		sd->priv = NULL;
	}
}

static int blk_open(cp_sd *sd)
{
	struct blk_special sp[6];
	struct cp_lvm_lv_info *lvs = NULL;
	struct blk_priv *p;
	size_t n = 0;
	int r;

	sd->type = CP_DOMAIN_TYPE_BLOCK;
	if (sd->lvm.size == 0)
		cp_lvm_opts_init(&sd->lvm); /* defaults */
	if (!cp_uuid_valid(sd->uuid)) {
		return cp_error(-EINVAL, "block domain: invalid UUID '%s'",
				sd->uuid);
	}
	r = blk_read_md_vg(&sd->lvm, sd->uuid, &sd->md);
	if (r < 0)
		return r;
	/* Every special LV, at least as large as the record says. */
	r = cp_lvm_lv_list(&sd->lvm, sd->uuid, &lvs, &n);
	if (r < 0)
		return r;
	blk_specials(sd->md.max_volumes, sp);
	for (int i = 0; i < 6 && r == 0; i++) {
		size_t k = 0;
		while (k < n && strcmp(lvs[k].name, sp[i].name))
			k++;
		if (k == n)
			r = cp_error(-EUCLEAN, "block domain %s: LV %s is missing",
				     sd->uuid, sp[i].name);
		else if (lvs[k].size < sp[i].size)
			r = cp_error(-EUCLEAN,
				     "block domain %s: LV %s has %" PRIu64
				     " bytes, needs %" PRIu64,
				     sd->uuid, sp[i].name, lvs[k].size,
				     sp[i].size);
	}
	cp_lvm_lv_list_free(lvs, n);
	if (r == 0)
		r = blk_locate(&sd->lvm, sd->uuid, BLK_LV_IDS, BLK_IDS_SIZE,
			       sd->ids_path, sizeof(sd->ids_path),
			       &sd->ids_offset);
	if (r == 0)
		r = blk_locate(&sd->lvm, sd->uuid, BLK_LV_LEASES,
			       blk_leases_size(sd->md.max_volumes),
			       sd->leases_path, sizeof(sd->leases_path),
			       &sd->leases_offset);
	if (r < 0)
		return r;
	p = calloc(1, sizeof(*p));
	if (!p)
		return cp_error(-ENOMEM, "block domain %s: out of memory",
				sd->uuid);
	pthread_mutex_init(&p->lock, NULL);
	sd->priv = p;
	return 0;
}

static int blk_read_md(cp_sd *sd, struct cp_domain_md *out)
{
	return blk_read_md_vg(&sd->lvm, sd->uuid, out);
}

static int blk_write_md(cp_sd *sd, const struct cp_domain_md *d)
{
	char tag[sizeof(BLK_TAG_MD) + BLK_B64_LEN];
	struct cp_lvm_vg_info vi;
	const char *old;
	bool marker;
	int r;

	if (d->type != CP_DOMAIN_TYPE_BLOCK || strcmp(d->dom_uuid, sd->uuid))
		return cp_error(-EINVAL,
				"block domain %s: record of another domain "
				"(%s) or type",
				sd->uuid, d->dom_uuid);
	r = blk_encode_md(d, tag);
	if (r < 0)
		return r;
	r = cp_lvm_vg_info(&sd->lvm, sd->uuid, &vi);
	if (r < 0)
		return r;
	r = blk_find_md_tag(sd->uuid, &vi, &marker, &old);
	if (r == 0 && !marker)
		r = cp_error(-EUCLEAN,
			     "VG %s is not a cowpool domain (no " BLK_TAG_DOMAIN
			     " tag)",
			     sd->uuid);
	if (r == 0 && !(old && !strcmp(old, tag))) {
		const char *add[] = {tag, NULL};
		const char *del[] = {old, NULL};
		/* One vgchange: one metadata commit, old or new. */
		r = cp_lvm_vg_change_tags(&sd->lvm, sd->uuid, add,
					  old ? del : NULL);
	}
	cp_lvm_vg_info_clear(&vi);
	return r;
}

static int blk_stats(cp_sd *sd, struct cp_sd_stats *out)
{
	struct cp_lvm_vg_info vi;
	int r = cp_lvm_vg_info(&sd->lvm, sd->uuid, &vi);

	if (r < 0)
		return r;
	out->total = vi.size;
	out->free = vi.free;
	cp_lvm_vg_info_clear(&vi);
	return 0;
}

static int blk_extend(cp_sd *sd, const char *device)
{
	return cp_lvm_vg_extend(&sd->lvm, sd->uuid, device);
}

/* ---- volume LVs and their tags --------------------------------------------- */

struct blk_vol {
	char img[CP_UUID_STR_LEN + 1];
	char parent[CP_UUID_STR_LEN + 1]; /* "" = none */
	uint32_t slot;
	uint64_t size;
	char **tags; /* borrowed from the LV list */
};

/* The value of tag "<prefix><value>" of an LV: 1 found (once), 0 absent,
 * -EUCLEAN twice. */
static int blk_tag_value(const char *vg, const struct cp_lvm_lv_info *lv,
			 const char *prefix, const char **value)
{
	size_t pl = strlen(prefix);
	int found = 0;

	*value = NULL;
	for (size_t i = 0; i < lv->ntags; i++) {
		if (strncmp(lv->tags[i], prefix, pl))
			continue;
		if (found)
			return cp_error(-EUCLEAN,
					"block domain %s: LV %s has two %s tags",
					vg, lv->name, prefix);
		*value = lv->tags[i] + pl;
		found = 1;
	}
	return found;
}

/* MD_<slot>: decimal without leading zeros, < max. */
static int blk_parse_slot(const char *s, uint32_t max, uint32_t *slot)
{
	uint64_t v = 0;

	if (!*s || (s[0] == '0' && s[1]) || strlen(s) > 10)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v >= max)
		return -ERANGE;
	*slot = (uint32_t)v;
	return 0;
}

/* Read a volume LV's tags into *v (all three must be there and valid). */
static int blk_vol_parse(cp_sd *sd, const struct cp_lvm_lv_info *lv,
			 struct blk_vol *v)
{
	const char *img, *parent, *slot;
	int r;

	memset(v, 0, sizeof(*v));
	if ((r = blk_tag_value(sd->uuid, lv, BLK_TAG_IMG, &img)) < 0 ||
	    (r = blk_tag_value(sd->uuid, lv, BLK_TAG_PARENT, &parent)) < 0 ||
	    (r = blk_tag_value(sd->uuid, lv, BLK_TAG_SLOT, &slot)) < 0)
		return r;
	if (!img || !cp_uuid_valid(img))
		return cp_error(-EUCLEAN,
				"block domain %s: volume LV %s: tag " BLK_TAG_IMG
				" missing or not a UUID",
				sd->uuid, lv->name);
	if (!parent || !cp_uuid_valid(parent))
		return cp_error(-EUCLEAN,
				"block domain %s: volume LV %s: tag " BLK_TAG_PARENT
				" missing or not a UUID",
				sd->uuid, lv->name);
	if (!slot || blk_parse_slot(slot, sd->md.max_volumes, &v->slot) < 0)
		return cp_error(-EUCLEAN,
				"block domain %s: volume LV %s: tag " BLK_TAG_SLOT
				"%s missing or not a slot below %u",
				sd->uuid, lv->name, slot ? slot : "",
				sd->md.max_volumes);
	strcpy(v->img, img);
	if (strcmp(parent, BLK_ZERO_UUID))
		strcpy(v->parent, parent);
	v->size = lv->size;
	v->tags = lv->tags;
	return 0;
}

static int blk_check_ids(cp_sd *sd, const char *img, const char *vol)
{
	if (!cp_uuid_valid(img) || !cp_uuid_valid(vol))
		return cp_error(-EINVAL,
				"block domain %s: invalid image/volume UUID "
				"'%s'/'%s'",
				sd->uuid, img ? img : "", vol ? vol : "");
	return 0;
}

/* Find volume vol of image img: -ENOENT if there is no such LV or it
 * belongs to another image. */
static int blk_vol_find(cp_sd *sd, const char *img, const char *vol,
			struct blk_vol *v)
{
	struct cp_lvm_lv_info *lvs;
	size_t n, k;
	int r = blk_check_ids(sd, img, vol);

	if (r < 0)
		return r;
	r = cp_lvm_lv_list(&sd->lvm, sd->uuid, &lvs, &n);
	if (r < 0)
		return r;
	for (k = 0; k < n && strcmp(lvs[k].name, vol); k++)
		;
	if (k == n)
		r = cp_error(-ENOENT, "block domain %s: volume %s not found",
			     sd->uuid, vol);
	if (r == 0)
		r = blk_vol_parse(sd, &lvs[k], v);
	if (r == 0 && strcmp(v->img, img))
		r = cp_error(-ENOENT,
			     "block domain %s: volume %s belongs to image %s, "
			     "not %s",
			     sd->uuid, vol, v->img, img);
	v->tags = NULL;
	cp_lvm_lv_list_free(lvs, n);
	return r;
}

/* UUIDs of volume LVs: images (distinct IU_ values) when img is NULL,
 * else the volumes of img. */
static int blk_list(cp_sd *sd, const char *img, struct cp_uuid_str **out,
		    size_t *nout)
{
	struct cp_lvm_lv_info *lvs;
	struct cp_uuid_str *u = NULL;
	size_t n, cnt = 0;
	int r;

	*out = NULL;
	*nout = 0;
	if (img && !cp_uuid_valid(img))
		return cp_error(-EINVAL, "block domain %s: invalid image UUID "
					 "'%s'",
				sd->uuid, img);
	r = cp_lvm_lv_list(&sd->lvm, sd->uuid, &lvs, &n);
	if (r < 0)
		return r;
	if (n && !(u = calloc(n, sizeof(*u))))
		r = cp_error(-ENOMEM, "block domain %s: out of memory",
			     sd->uuid);
	for (size_t i = 0; r == 0 && i < n; i++) {
		const char *iu;
		/* Special LVs (ids, leases, ...) have no UUID names. */
		if (!cp_uuid_valid(lvs[i].name))
			continue;
		r = blk_tag_value(sd->uuid, &lvs[i], BLK_TAG_IMG, &iu);
		if (r <= 0)
			continue;
		r = 0;
		if (img) {
			if (!strcmp(iu, img))
				snprintf(u[cnt++].s, sizeof(u->s), "%s",
					 lvs[i].name);
		} else if (cp_uuid_valid(iu)) {
			bool seen = false;
			for (size_t k = 0; k < cnt && !seen; k++)
				seen = !strcmp(u[k].s, iu);
			if (!seen)
				snprintf(u[cnt++].s, sizeof(u->s), "%s", iu);
		}
	}
	cp_lvm_lv_list_free(lvs, n);
	if (r < 0) {
		free(u);
		return r;
	}
	if (cnt == 0) {
		free(u);
		return 0;
	}
	qsort(u, cnt, sizeof(*u), sd_uuid_cmp);
	*out = u;
	*nout = cnt;
	return 0;
}

static int blk_list_images(cp_sd *sd, struct cp_uuid_str **out, size_t *n)
{
	return blk_list(sd, NULL, out, n);
}

static int blk_list_volumes(cp_sd *sd, const char *img,
			    struct cp_uuid_str **out, size_t *n)
{
	return blk_list(sd, img, out, n);
}

/* ---- metadata slots -------------------------------------------------------- */

static int blk_md_dev(cp_sd *sd, cp_bdev **out)
{
	struct blk_priv *p = sd->priv;
	int r = 0;

	CP_LOCK_GUARD(&p->lock);
	if (!p->md_dev) {
		r = blk_open_lv(&sd->lvm, sd->uuid, BLK_LV_METADATA, true,
				&p->md_dev);
		if (r == 0) {
			unsigned a = cp_bdev_align(p->md_dev);
			if (a < 512 || a > BLK_SLOT_SIZE || !cp_is_pow2(a)) {
				cp_bdev_close(p->md_dev);
				p->md_dev = NULL;
				r = cp_error(-ENOTSUP,
					     "block domain %s: metadata LV "
					     "block size %u (512..4096 "
					     "supported)",
					     sd->uuid, a);
			}
		}
	}
	*out = p->md_dev;
	return r;
}

/* Read (rec != NULL on write: the 512 bytes to write; NULL: zero the 4 KiB
 * slot) or write slot's first sector(s).  what names the slot. */
static int blk_slot_io(cp_sd *sd, uint32_t slot, uint8_t *rec, bool write,
		       const char *what)
{
	cp_bdev *dev;
	int r = blk_md_dev(sd, &dev);

	if (r < 0)
		return cp_error_prefix(r, "%s", what);
	size_t len = write && !rec ? BLK_SLOT_SIZE : cp_bdev_align(dev);
	uint8_t *buf = cp_bdev_alloc_buf(len);
	if (!buf)
		return cp_error(-ENOMEM, "%s: out of memory", what);
	memset(buf, 0, len);
	uint64_t off = (uint64_t)slot * BLK_SLOT_SIZE;
	if (write) {
		if (rec)
			memcpy(buf, rec, CP_MD_SECTOR_SIZE);
		r = cp_bdev_pwrite(dev, buf, len, off);
		if (r == 0)
			r = cp_bdev_flush(dev);
	} else {
		r = cp_bdev_pread(dev, buf, len, off);
		if (r == 0)
			memcpy(rec, buf, CP_MD_SECTOR_SIZE);
	}
	cp_bdev_free_buf(buf);
	if (r < 0)
		cp_error_prefix(r, "%s", what);
	return r;
}

static void blk_slot_what(char *what, size_t len, cp_sd *sd, uint32_t slot,
			  const char *vol)
{
	snprintf(what, len, "%s/" BLK_LV_METADATA " slot %u (volume %s)",
		 sd->uuid, slot, vol);
}

static int blk_md_read(cp_sd *sd, const char *img, const char *vol,
		       struct cp_volmeta *out)
{
	uint8_t rec[CP_MD_SECTOR_SIZE];
	struct cp_volmeta m;
	struct blk_vol v;
	char what[200];
	int r = blk_vol_find(sd, img, vol, &v);

	if (r < 0)
		return r;
	blk_slot_what(what, sizeof(what), sd, v.slot, vol);
	r = blk_slot_io(sd, v.slot, rec, false, what);
	if (r < 0)
		return r;
	if (cp_is_zero(rec, sizeof(rec)))
		return cp_error(-ENOENT, "%s: no metadata", what);
	r = cp_volmeta_decode(rec, what, &m);
	if (r < 0)
		return r;
	if (strcmp(m.vol_uuid, vol) || strcmp(m.img_uuid, img) ||
	    strcmp(m.dom_uuid, sd->uuid))
		return cp_error(-EUCLEAN,
				"%s: holds the record of volume %s of image %s "
				"in domain %s",
				what, m.vol_uuid, m.img_uuid, m.dom_uuid);
	*out = m;
	return 0;
}

static int blk_md_write(cp_sd *sd, const struct cp_volmeta *m)
{
	uint8_t rec[CP_MD_SECTOR_SIZE];
	struct blk_vol v;
	char what[200];
	int r;

	if (strcmp(m->dom_uuid, sd->uuid))
		return cp_error(-EINVAL,
				"block domain %s: record of volume %s names "
				"domain %s",
				sd->uuid, m->vol_uuid, m->dom_uuid);
	r = cp_volmeta_encode(m, rec);
	if (r < 0)
		return r;
	r = blk_vol_find(sd, m->img_uuid, m->vol_uuid, &v);
	if (r < 0)
		return r;
	blk_slot_what(what, sizeof(what), sd, v.slot, m->vol_uuid);
	return blk_slot_io(sd, v.slot, rec, true, what);
}

static int blk_md_remove(cp_sd *sd, const char *img, const char *vol)
{
	struct blk_vol v;
	char what[200];
	int r = blk_vol_find(sd, img, vol, &v);

	if (r == -ENOENT)
		return 0; /* the LV is gone: its slot is free anyway */
	if (r < 0)
		return r;
	blk_slot_what(what, sizeof(what), sd, v.slot, vol);
	return blk_slot_io(sd, v.slot, NULL, true, what);
}

/* ---- volume data ----------------------------------------------------------- */

static int blk_vol_create(cp_sd *sd, const struct sd_vol_spec *spec)
{
	struct cp_lvm_lv_info *lvs;
	const uint32_t max = sd->md.max_volumes;
	size_t n;
	uint8_t *used;
	int r = blk_check_ids(sd, spec->img_uuid, spec->vol_uuid);

	if (r < 0)
		return r;
	const char *parent = spec->parent_uuid && spec->parent_uuid[0]
				 ? spec->parent_uuid
				 : BLK_ZERO_UUID;
	if (!cp_uuid_valid(parent))
		return cp_error(-EINVAL, "block domain %s: volume %s: invalid "
					 "parent UUID '%s'",
				sd->uuid, spec->vol_uuid, parent);
	r = cp_lvm_lv_list(&sd->lvm, sd->uuid, &lvs, &n);
	if (r < 0)
		return r;
	used = calloc(max, 1);
	if (!used)
		r = cp_error(-ENOMEM, "block domain %s: out of memory",
			     sd->uuid);
	for (size_t i = 0; r == 0 && i < n; i++) {
		const char *s;
		uint32_t slot;
		if (!strcmp(lvs[i].name, spec->vol_uuid)) {
			r = cp_error(-EEXIST,
				     "block domain %s: volume %s exists",
				     sd->uuid, spec->vol_uuid);
			break;
		}
		/* A slot is used if any LV carries its tag. */
		for (size_t k = 0; k < lvs[i].ntags; k++) {
			s = lvs[i].tags[k];
			if (!strncmp(s, BLK_TAG_SLOT, strlen(BLK_TAG_SLOT)) &&
			    blk_parse_slot(s + strlen(BLK_TAG_SLOT), max,
					   &slot) == 0)
				used[slot] = 1;
		}
	}
	cp_lvm_lv_list_free(lvs, n);
	uint32_t slot = 0;
	while (r == 0 && slot < max && used[slot])
		slot++;
	free(used);
	if (r < 0)
		return r;
	if (slot == max)
		return cp_error(-ENOSPC,
				"domain %s: all %u metadata slots are in use",
				sd->uuid, max);

	/* The slot is free: clear any record a removed volume left there, so
	 * the new volume reads "no metadata" until its record is written. */
	char what[200];
	blk_slot_what(what, sizeof(what), sd, slot, spec->vol_uuid);
	r = blk_slot_io(sd, slot, NULL, true, what);
	if (r < 0)
		return r;

	char t_img[64], t_parent[64], t_slot[32];
	snprintf(t_img, sizeof(t_img), BLK_TAG_IMG "%s", spec->img_uuid);
	snprintf(t_parent, sizeof(t_parent), BLK_TAG_PARENT "%s", parent);
	snprintf(t_slot, sizeof(t_slot), BLK_TAG_SLOT "%u", slot);
	const char *tags[] = {t_img, t_parent, t_slot, NULL};
	/* LVM rounds up to whole extents; at least one. */
	r = cp_lvm_lv_create(&sd->lvm, sd->uuid, spec->vol_uuid,
			     spec->size ? spec->size : 1, tags);
	if (r < 0)
		return r;

	r = sd_format_vol_lease(sd, spec->vol_uuid, sd->leases_path,
				sd->leases_offset + BLK_VOL_LEASE_BASE +
				    (uint64_t)slot * BLK_VOL_LEASE_STEP);
	if (r < 0) {
		/* Without its lease the volume cannot be used: undo. */
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", cp_last_error());
		cp_lvm_lv_remove(&sd->lvm, sd->uuid, spec->vol_uuid);
		return cp_error(r, "%s", msg);
	}
	return 0;
}

static int blk_vol_remove(cp_sd *sd, const char *img, const char *vol)
{
	struct blk_vol v;
	int r = blk_vol_find(sd, img, vol, &v);

	if (r == -ENOENT)
		return 0; /* already gone (or never in this image) */
	if (r < 0)
		return r;
	/* The record goes first: the slot is found through the LV's MD_ tag,
	 * which leaves with the LV (the record is ILLEGAL by now; a crash
	 * in between leaves an LV without a record, which the task removes
	 * when it rolls forward).  The lease needs no removal: it lives in
	 * the slot's area of the leases LV and is formatted again by the
	 * next vol_create there. */
	char what[200];
	blk_slot_what(what, sizeof(what), sd, v.slot, vol);
	r = blk_slot_io(sd, v.slot, NULL, true, what);
	if (r < 0)
		return r;
	r = cp_lvm_lv_remove(&sd->lvm, sd->uuid, vol);
	return r == -ENOENT ? 0 : r;
}

static int blk_vol_exists(cp_sd *sd, const char *img, const char *vol)
{
	struct blk_vol v;
	int r = blk_vol_find(sd, img, vol, &v);

	if (r == -ENOENT)
		return 0;
	return r < 0 ? r : 1;
}

static int blk_vol_resize(cp_sd *sd, const char *img, const char *vol,
			  uint64_t size, bool shrink, uint64_t *new_size)
{
	struct blk_vol v;
	int r = blk_vol_find(sd, img, vol, &v);

	if (r < 0)
		return r;
	if (size == 0)
		size = 1; /* one extent at least */
	if (shrink)
		return cp_lvm_lv_reduce(&sd->lvm, sd->uuid, vol, size, new_size);
	return cp_lvm_lv_extend(&sd->lvm, sd->uuid, vol, size, new_size);
}

static int blk_vol_set_parent(cp_sd *sd, const char *img, const char *vol,
			      const char *parent_uuid)
{
	struct blk_vol v;
	const char *parent = parent_uuid && parent_uuid[0] ? parent_uuid
							   : BLK_ZERO_UUID;
	char t_new[64], t_old[64];
	int r;

	if (!cp_uuid_valid(parent))
		return cp_error(-EINVAL,
				"block domain %s: volume %s: invalid parent "
				"UUID '%s'",
				sd->uuid, vol, parent);
	r = blk_vol_find(sd, img, vol, &v);
	if (r < 0)
		return r;
	snprintf(t_new, sizeof(t_new), BLK_TAG_PARENT "%s", parent);
	snprintf(t_old, sizeof(t_old), BLK_TAG_PARENT "%s",
		 v.parent[0] ? v.parent : BLK_ZERO_UUID);
	if (!strcmp(t_new, t_old))
		return 0;
	const char *add[] = {t_new, NULL}, *del[] = {t_old, NULL};
	return cp_lvm_lv_change_tags(&sd->lvm, sd->uuid, vol, add, del);
}

static int blk_vol_size(cp_sd *sd, const char *img, const char *vol,
			struct cp_vol_size *out)
{
	struct blk_vol v;
	int r = blk_vol_find(sd, img, vol, &v);

	if (r < 0)
		return r;
	out->apparent = out->allocated = v.size;
	return 0;
}

static int blk_vol_open(cp_sd *sd, const char *img, const char *vol, bool rw,
			cp_bdev **out)
{
	struct blk_vol v;
	int r = blk_vol_find(sd, img, vol, &v);

	*out = NULL;
	if (r < 0)
		return r;
	return blk_open_lv(&sd->lvm, sd->uuid, vol, rw, out);
}

static int blk_vol_refresh(cp_sd *sd, const char *img, const char *vol,
			   cp_bdev *dev)
{
	int r = blk_check_ids(sd, img, vol);

	if (r < 0)
		return r;
	return cp_lvm_refresh_lv(&sd->lvm, sd->uuid, vol, dev);
}

static int blk_vol_lease(cp_sd *sd, const char *img, const char *vol,
			 char *path, size_t pathlen, uint64_t *offset)
{
	struct blk_vol v;
	int r = blk_vol_find(sd, img, vol, &v);

	if (r < 0)
		return r;
	if (strlen(sd->leases_path) >= pathlen)
		return cp_error(-ENAMETOOLONG, "block domain %s: lease path",
				sd->uuid);
	strcpy(path, sd->leases_path);
	*offset = sd->leases_offset + BLK_VOL_LEASE_BASE +
		  (uint64_t)v.slot * BLK_VOL_LEASE_STEP;
	return 0;
}

static int blk_vol_path(cp_sd *sd, const char *img, const char *vol,
			char *out, size_t outlen)
{
	struct blk_vol v;
	int r;

	if (!cp_lvm_activation_available())
		return cp_error(-ENOTSUP,
				"block domain %s: no device-mapper on this "
				"host; use the cowpool CLI",
				sd->uuid);
	r = blk_vol_find(sd, img, vol, &v);
	if (r < 0)
		return r;
	if ((size_t)snprintf(out, outlen, "/dev/%s/%s", sd->uuid, vol) >=
	    outlen)
		return cp_error(-ENAMETOOLONG, "block domain %s: volume path",
				sd->uuid);
	return 0;
}

static int blk_tasks_open(cp_sd *sd, cp_bdev **out)
{
	return blk_open_lv(&sd->lvm, sd->uuid, BLK_LV_TASKS, true, out);
}

static int blk_mailbox_open(cp_sd *sd, bool outbox, cp_bdev **out)
{
	return blk_open_lv(&sd->lvm, sd->uuid,
			   outbox ? BLK_LV_OUTBOX : BLK_LV_INBOX, true, out);
}

const struct sd_backend cp_sd_block_backend = {
	.create = blk_create,
	.destroy = blk_destroy,
	.open = blk_open,
	.close = blk_close,
	.read_md = blk_read_md,
	.write_md = blk_write_md,
	.stats = blk_stats,
	.extend = blk_extend,
	.list_images = blk_list_images,
	.list_volumes = blk_list_volumes,
	.md_read = blk_md_read,
	.md_write = blk_md_write,
	.md_remove = blk_md_remove,
	.vol_create = blk_vol_create,
	.vol_remove = blk_vol_remove,
	.vol_exists = blk_vol_exists,
	.vol_resize = blk_vol_resize,
	.vol_set_parent = blk_vol_set_parent,
	.vol_size = blk_vol_size,
	.vol_open = blk_vol_open,
	.vol_refresh = blk_vol_refresh,
	.vol_lease = blk_vol_lease,
	.vol_path = blk_vol_path,
	.tasks_open = blk_tasks_open,
	.mailbox_open = blk_mailbox_open,
};
