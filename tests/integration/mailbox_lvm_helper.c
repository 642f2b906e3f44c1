/* tests/integration/mailbox_lvm_helper.c - the storage mailbox over real
 * LVM, for tests/integration/mailbox-lvm.sh (not installed, not part of
 * cowpool).
 *
 *   cp_mbox_lvm_helper VG DEV_A DEV_B
 *
 * Makes VG on the two devices (4 MiB extents) with the mailbox LVs and a
 * one-extent volume, leaves exactly 8 free extents scattered between
 * other LVs, then plays both sides in one process: an SPM whose serve
 * callback runs spm's real lvextend and answers with the LV's map
 * (cp_lvm_lv_map; PVs named by their device path, which every "host" of
 * this one-machine test shares), and a host that asks for 8 more extents
 * through the mailbox, follows MORE until it has the whole map, remaps
 * its open linear device with the segments from the replies only (no LVM
 * on the host side), and writes a pattern over the whole LV through it.
 * Checks: the map assembled from the replies is LVM's map, byte for byte;
 * the pattern reads back through a fresh cp_lvm_open_lv() (LVM's own
 * report).  Prints "segments N rounds R size S".  LVM_SYSTEM_DIR and
 * CP_LVM_DEVICES as for cp_lvm_helper.  Exit 0, or 1 with "errno N:
 * message" on stderr.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockcore.h"
#include "common.h"
#include "mailbox.h"
#include "spm.h"

#include "helper_lib.h"

#define MiB (1024ull * 1024)
#define EXT (4 * MiB)
#define DOM "11111111-2222-3333-4444-555555555555"
#define IMG "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
#define VOL "0badc0de-0000-4000-8000-000000000001"
#define HOST 7
#define MAXSEG 64

static struct cp_lvm_opts lo;
static const char *vg;

/* The SPM's serve callback: one lvextend per request, then the map. */
static void serve(void *opaque, struct cp_mbox_item *items, size_t n)
{
	int *err = opaque;

	for (size_t i = 0; i < n; i++) {
		struct cp_mbox_request *rq = &items[i].req;
		struct cp_mbox_reply *rp = &items[i].reply;
		struct cp_mbox_seg segs[MAXSEG];
		struct cp_linear_map map = { 0 };
		uint64_t size = 0;
		int r;

		r = cp_lvm_lv_extend(&lo, vg, rq->vol_uuid, rq->size, &size);
		if (r == 0)
			r = cp_lvm_lv_map(&lo, vg, rq->vol_uuid, &map);
		if (r == 0 && map.nsegs > MAXSEG)
			r = -E2BIG;
		for (size_t s = 0; r == 0 && s < map.nsegs; s++) {
			segs[s].lv_offset = map.segs[s].lv_offset;
			segs[s].length = map.segs[s].length;
			segs[s].pv_offset = map.segs[s].pv_offset;
			snprintf(segs[s].pv, sizeof(segs[s].pv), "%s",
				 map.segs[s].pv_path);
		}
		if (r == 0)
			r = cp_mbox_reply_set_map(rp, segs, map.nsegs);
		cp_lvm_map_free(&map);
		if (r < 0) {
			fprintf(stderr, "serve: %s\n", cp_error_msg(r));
			*err = r;
		}
		rp->status = r;
		rp->size = size;
	}
}

static int map_equal(const struct cp_linear_map *a,
		     const struct cp_linear_map *b)
{
	uint64_t at = 0;

	/* both tile [0, size): compare segment by segment after sorting
	 * by LV offset (LVM gives them in order; so do the replies) */
	if (a->nsegs != b->nsegs)
		return 0;
	for (size_t i = 0; i < a->nsegs; i++) {
		if (a->segs[i].lv_offset != b->segs[i].lv_offset ||
		    a->segs[i].length != b->segs[i].length ||
		    a->segs[i].pv_offset != b->segs[i].pv_offset ||
		    strcmp(a->segs[i].pv_path, b->segs[i].pv_path) ||
		    a->segs[i].lv_offset != at)
			return 0;
		at += a->segs[i].length;
	}
	return 1;
}

int main(int argc, char **argv)
{
	const char *devs[3];
	struct cp_lvm_vg_info vi;
	struct cp_bdev_opts bo;
	struct cp_mbox_server_opts so;
	struct cp_mbox_host_opts ho;
	struct cp_linear_map lvm_map = { 0 }, host_map = { 0 };
	static struct cp_linear_seg segs[MAXSEG];
	static char pvs[MAXSEG][CP_MBOX_PV_MAX + 1];
	cp_bdev *inbox, *outbox, *vol, *check;
	cp_mbox_server *srv;
	cp_mbox_host *h;
	uint64_t want, mapped;
	uint8_t *buf;
	unsigned rounds = 0;
	int r, serve_err = 0;

	hl_prog = "cp_mbox_lvm_helper";
	if (argc != 4) {
		fprintf(stderr, "usage: cp_mbox_lvm_helper VG DEV_A DEV_B\n");
		return 2;
	}
	vg = argv[1];
	hl_lvm_opts_from_env(&lo);
	devs[0] = argv[2];
	devs[1] = argv[3];
	devs[2] = NULL;
	if ((r = cp_lvm_vg_create(&lo, vg, devs, NULL, EXT)) < 0 ||
	    (r = cp_lvm_lv_create(&lo, vg, "inbox", MiB, NULL)) < 0 ||
	    (r = cp_lvm_lv_create(&lo, vg, "outbox", MiB, NULL)) < 0 ||
	    (r = cp_lvm_lv_create(&lo, vg, VOL, EXT, NULL)) < 0)
		return hl_die(r);
	/* 16 one-extent LVs after the volume, every other one removed: 8
	 * single-extent holes; then everything else is taken */
	for (int i = 0; i < 16; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%d", i);
		if ((r = cp_lvm_lv_create(&lo, vg, name, EXT, NULL)) < 0)
			return hl_die(r);
	}
	for (int i = 1; i < 16; i += 2) {
		char name[16];

		snprintf(name, sizeof(name), "f%d", i);
		if ((r = cp_lvm_lv_remove(&lo, vg, name)) < 0)
			return hl_die(r);
	}
	if ((r = cp_lvm_vg_info(&lo, vg, &vi)) < 0)
		return hl_die(r);
	if (vi.free < 8 * EXT) {
		fprintf(stderr, "cp_mbox_lvm_helper: VG too small\n");
		return 1;
	}
	if (vi.free > 8 * EXT &&
	    (r = cp_lvm_lv_create(&lo, vg, "rest", vi.free - 8 * EXT, NULL)) < 0)
		return hl_die(r);
	cp_lvm_vg_info_clear(&vi);

	/* both sides open the mailbox LVs through their extent maps */
	cp_bdev_opts_init(&bo);
	bo.cache = CP_CACHE_NONE;
	if ((r = cp_lvm_open_lv(&lo, vg, "inbox", &bo, &inbox)) < 0 ||
	    (r = cp_lvm_open_lv(&lo, vg, "outbox", &bo, &outbox)) < 0 ||
	    (r = cp_lvm_open_lv(&lo, vg, VOL, &bo, &vol)) < 0)
		return hl_die(r);
	cp_mbox_server_opts_init(&so);
	so.max_hosts = 250;
	so.poll_us = 1000;
	so.serve = serve;
	so.serve_opaque = &serve_err;
	if ((r = cp_mbox_server_start(inbox, outbox, &so, &srv)) < 0)
		return hl_die(r);
	cp_mbox_host_opts_init(&ho);
	ho.host_id = HOST;
	if ((r = cp_mbox_host_open(inbox, outbox, &ho, &h)) < 0)
		return hl_die(r);

	/* the host's map before: what it had when it opened the volume */
	if ((r = cp_lvm_lv_map(&lo, vg, VOL, &lvm_map)) < 0)
		return hl_die(r);
	for (size_t i = 0; i < lvm_map.nsegs; i++) {
		segs[i] = lvm_map.segs[i];
		snprintf(pvs[i], sizeof(pvs[i]), "%s", lvm_map.segs[i].pv_path);
		segs[i].pv_path = pvs[i];
	}
	host_map.segs = segs;
	host_map.nsegs = lvm_map.nsegs;
	cp_lvm_map_free(&lvm_map);
	mapped = cp_bdev_size(vol);
	want = mapped + 8 * EXT;
	/* ask, then follow MORE until the whole map is known */
	for (;;) {
		struct cp_mbox_ticket t;
		struct cp_mbox_reply rp;

		if ((r = cp_mbox_post_extend(h, DOM, IMG, VOL, want, mapped,
					     &t)) < 0 ||
		    (r = cp_mbox_wait_reply(h, &t, 120000, &rp)) < 0)
			return hl_die(r);
		rounds++;
		if (rp.status < 0)
			return hl_die(rp.status);
		if (rp.map_from != mapped || rp.size < want) {
			fprintf(stderr, "reply: map_from %" PRIu64 " size %" PRIu64
				"\n", rp.map_from, rp.size);
			return 1;
		}
		for (uint32_t i = 0; i < rp.nsegs; i++) {
			size_t k = host_map.nsegs++;

			if (k >= MAXSEG)
				return hl_die(-E2BIG);
			snprintf(pvs[k], sizeof(pvs[k]), "%s", rp.segs[i].pv);
			segs[k] = (struct cp_linear_seg){
				.lv_offset = rp.segs[i].lv_offset,
				.length = rp.segs[i].length,
				.pv_path = pvs[k],
				.pv_offset = rp.segs[i].pv_offset };
			mapped = rp.segs[i].lv_offset + rp.segs[i].length;
		}
		if (!(rp.flags & CP_MBOX_REPLY_MORE))
			break;
	}
	/* the host maps the new extents from the replies alone */
	if ((r = cp_bdev_linear_remap(vol, &host_map)) < 0)
		return hl_die(r);
	if (cp_bdev_size(vol) != want) {
		fprintf(stderr, "remapped size %" PRIu64 ", want %" PRIu64 "\n",
			cp_bdev_size(vol), want);
		return 1;
	}
	/* ... which is LVM's map exactly */
	if ((r = cp_lvm_lv_map(&lo, vg, VOL, &lvm_map)) < 0)
		return hl_die(r);
	if (!map_equal(&host_map, &lvm_map)) {
		fprintf(stderr, "the map from the replies is not LVM's\n");
		return 1;
	}
	/* data written through the host's map reads back through LVM's */
	buf = cp_bdev_alloc_buf(want);
	if (!buf)
		return hl_die(-ENOMEM);
	hl_fill(buf, want, 42, 0);
	if ((r = cp_bdev_pwrite(vol, buf, want, 0)) < 0 ||
	    (r = cp_bdev_flush(vol)) < 0)
		return hl_die(r);
	if ((r = cp_lvm_open_lv(&lo, vg, VOL, &bo, &check)) < 0)
		return hl_die(r);
	memset(buf, 0, want);
	if ((r = cp_bdev_pread(check, buf, want, 0)) < 0)
		return hl_die(r);
	{
		uint8_t *ref = malloc(want);

		if (!ref)
			return hl_die(-ENOMEM);
		hl_fill(ref, want, 42, 0);
		if (memcmp(ref, buf, want) != 0) {
			fprintf(stderr, "data read back through LVM's map differs\n");
			return 1;
		}
		free(ref);
	}
	printf("segments %zu rounds %u size %" PRIu64 "\n", lvm_map.nsegs,
	       rounds, want);
	cp_lvm_map_free(&lvm_map);
	cp_bdev_free_buf(buf);
	cp_bdev_close(check);
	cp_mbox_host_close(h);
	cp_mbox_server_stop(srv);
	cp_bdev_close(vol);
	cp_bdev_close(inbox);
	cp_bdev_close(outbox);
	return serve_err ? 1 : 0;
}
