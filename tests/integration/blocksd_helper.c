/* tests/integration/blocksd_helper.c - drives a BLOCK storage domain
 * (spm/blocksd.c behind cp_sd) for tests/integration/blocksd.sh (not
 * installed, not part of cowpool).  Public cp_sd_* calls where spm.h has
 * them, the backend table (sd_int.h) for the SPM-side volume operations
 * that volume.c wraps.
 *
 *   create DOM POOL NAME DEV[,DEV...] EXTENT MAXVOL   (io_timeout 1)
 *   info DOM                    record, lockspace and SDM lease locations
 *   set-master DOM 0|1          cp_sd_md_update (generation bump)
 *   vol-create DOM IMG VOL PARENT|- SIZE
 *   vol-remove DOM IMG VOL
 *   vol-exists DOM IMG VOL      prints 1 or 0
 *   vol-resize DOM IMG VOL SIZE grow|shrink   prints the new size
 *   vol-size DOM IMG VOL        "apparent allocated"
 *   vol-lease DOM IMG VOL       "name path offset"
 *   vol-path DOM IMG VOL
 *   set-parent DOM IMG VOL PARENT|-
 *   md-write DOM IMG VOL CAPACITY DESC
 *   md-read DOM IMG VOL         "vol img parent capacity generation desc"
 *   md-remove DOM IMG VOL
 *   list-images DOM / list-volumes DOM IMG    one UUID per line
 *   stats DOM                   "total free"
 *   extend DOM DEV
 *   tasks DOM SEED              write + read back a pattern on `tasks`
 *   qcow DOM IMG VOL VSIZE SEED qcow2 on the volume's LV: create, write
 *                               1 MiB every 4 MiB of the LV's worth,
 *                               close, reopen, read back, check
 *   sanlock DOM HOSTID IMG VOL  join the lockspace, acquire and release
 *                               SDM and the volume lease, leave
 *
 * LVM_SYSTEM_DIR (environment) goes to cp_lvm_opts.system_dir and
 * CP_LVM_DEVICES (comma-separated) to cp_lvm_opts.devices.  SIZE accepts
 * k/M/G suffixes.  Exit 0 on success, 1 with "cp_blocksd_helper: errno N:
 * message" on stderr.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blockcore.h"
#include "common.h"
#include "qcow.h"
#include "sd_int.h"
#include "spm.h"

#include "helper_lib.h"

#define MiB (1024ull * 1024)

static struct cp_lvm_opts lo;

static uint64_t size_arg(const char *s)
{
	return hl_size("size", s);
}

static const char *parent_arg(const char *s)
{
	return strcmp(s, "-") ? s : "";
}

static int open_dom(const char *dom, cp_sd **sd)
{
	struct cp_sd_loc loc;
	cp_sd_loc_init(&loc);
	loc.type = CP_DOMAIN_TYPE_BLOCK;
	loc.lvm = &lo;
	return cp_sd_open(&loc, dom, sd);
}

static void print_md(const struct cp_domain_md *d)
{
	printf("uuid %s\npool %s\nname %s\ntype %d\nmaster %d\n"
	       "generation %" PRIu64 "\nchunk %" PRIu64 "\nio_timeout %u\n"
	       "max_volumes %u\n",
	       d->dom_uuid, d->pool_uuid, d->name, (int)d->type, d->master,
	       d->generation, d->chunk_size, d->io_timeout, d->max_volumes);
}

static int cmd_create(char **a)
{
	struct cp_sd_create_opts o;
	struct cp_domain_md d;
	char *devs[16];
	int n = 0;
	for (char *t = strtok(a[3], ","); t && n < 15; t = strtok(NULL, ","))
		devs[n++] = t;
	devs[n] = NULL;
	cp_sd_create_opts_init(&o);
	o.loc.type = CP_DOMAIN_TYPE_BLOCK;
	o.loc.lvm = &lo;
	o.devices = (const char *const *)devs;
	o.dom_uuid = a[0];
	o.pool_uuid = a[1];
	o.name = a[2];
	o.io_timeout = 1;
	o.extent_size = size_arg(a[4]);
	o.max_volumes = (uint32_t)strtoul(a[5], NULL, 10);
	int r = cp_sd_create(&o, &d);
	if (r < 0)
		return hl_die(r);
	print_md(&d);
	return 0;
}

static int cmd_info(cp_sd *sd)
{
	struct cp_lockspace_opts ls;
	struct cp_lease_opts l;
	print_md(cp_sd_md(sd));
	cp_sd_lockspace(sd, &ls);
	printf("lockspace %s %s %" PRIu64 "\n", ls.name, ls.path, ls.offset);
	int r = cp_sd_lease(sd, NULL, NULL, &l);
	if (r < 0)
		return hl_die(r);
	printf("sdm %s %s %" PRIu64 "\n", l.name, l.path, l.offset);
	printf("leases %s %" PRIu64 "\n", sd->leases_path, sd->leases_offset);
	return 0;
}

static int cmd_set_master(cp_sd *sd, const char *v)
{
	struct cp_domain_md d = *cp_sd_md(sd);
	d.master = atoi(v) != 0;
	int r = cp_sd_md_update(sd, d.generation, &d);
	if (r < 0)
		return hl_die(r);
	/* read back from LVM, not from the cache */
	r = cp_sd_refresh(sd);
	if (r < 0)
		return hl_die(r);
	print_md(cp_sd_md(sd));
	return 0;
}

static int cmd_md_write(cp_sd *sd, char **a)
{
	struct cp_volmeta m;
	memset(&m, 0, sizeof(m));
	snprintf(m.dom_uuid, sizeof(m.dom_uuid), "%s", sd->uuid);
	snprintf(m.img_uuid, sizeof(m.img_uuid), "%s", a[0]);
	snprintf(m.vol_uuid, sizeof(m.vol_uuid), "%s", a[1]);
	m.format = CP_VOL_FORMAT_COW;
	m.allocation = CP_VOL_ALLOC_SPARSE;
	m.role = CP_VOL_ROLE_LEAF;
	m.legality = CP_VOL_LEGAL;
	m.capacity = size_arg(a[2]);
	m.generation = 0;
	m.ctime = (int64_t)time(NULL);
	snprintf(m.description, sizeof(m.description), "%s", a[3]);
	int r = sd->ops->md_write(sd, &m);
	return r < 0 ? hl_die(r) : 0;
}

static int cmd_md_read(cp_sd *sd, char **a)
{
	struct cp_volmeta m;
	int r = cp_sd_vol_md(sd, a[0], a[1], &m);
	if (r < 0)
		return hl_die(r);
	printf("%s %s %s %" PRIu64 " %" PRIu64 " %s\n", m.vol_uuid,
	       m.img_uuid, m.parent_uuid[0] ? m.parent_uuid : "-", m.capacity,
	       m.generation, m.description);
	return 0;
}

static int print_uuids(int r, struct cp_uuid_str *u, size_t n)
{
	if (r < 0)
		return hl_die(r);
	for (size_t i = 0; i < n; i++)
		printf("%s\n", u[i].s);
	free(u);
	return 0;
}

static int cmd_tasks(cp_sd *sd, uint64_t seed)
{
	cp_bdev *dev;
	int r = sd->ops->tasks_open(sd, &dev);
	if (r < 0)
		return hl_die(r);
	uint64_t size = cp_bdev_size(dev);
	uint8_t *buf = cp_bdev_alloc_buf(MiB), *exp = malloc(MiB);
	printf("size %" PRIu64 " align %u\n", size, cp_bdev_align(dev));
	hl_fill(exp, MiB, seed, 0);
	memcpy(buf, exp, MiB);
	r = cp_bdev_pwrite(dev, buf, MiB, 0);
	if (r == 0)
		r = cp_bdev_flush(dev);
	memset(buf, 0, MiB);
	if (r == 0)
		r = cp_bdev_pread(dev, buf, MiB, 0);
	if (r == 0 && memcmp(buf, exp, MiB))
		r = cp_error(-EIO, "tasks: data read back differs");
	cp_bdev_close(dev);
	cp_bdev_free_buf(buf);
	free(exp);
	return r < 0 ? hl_die(r) : 0;
}

/* qcow2 on the volume's LV: write chunk i (1 MiB) at guest offset
 * i * 4 MiB for as many chunks as fit half the LV, close, reopen, verify,
 * check for leaks and corruption. */
static int cmd_qcow(cp_sd *sd, const char *img, const char *vol,
		    uint64_t vsize, uint64_t seed)
{
	struct cp_create_opts co;
	struct cp_open_opts oo;
	struct cp_check_result res;
	cp_bdev *dev;
	cp_image *im;
	char name[200];
	int r = sd->ops->vol_open(sd, img, vol, true, &dev);
	if (r < 0)
		return hl_die(r);
	snprintf(name, sizeof(name), "%s/%s", sd->uuid, vol);
	cp_create_opts_init(&co);
	co.virtual_size = vsize;
	r = cp_image_create_dev(dev, name, &co, NULL, NULL);
	if (r < 0)
		return hl_die(r);
	int chunks = (int)CP_MIN(cp_bdev_size(dev) / 2 / MiB, vsize / (4 * MiB));
	uint8_t *buf = malloc(MiB), *got = malloc(MiB);
	cp_open_opts_init(&oo);
	r = cp_image_open_dev(dev, name, &oo, &im);
	for (int i = 0; r == 0 && i < chunks; i++) {
		hl_fill(buf, MiB, seed, (uint64_t)i * 4 * MiB);
		r = cp_image_pwrite(im, buf, MiB, (uint64_t)i * 4 * MiB);
	}
	if (r == 0)
		r = cp_image_close(im);
	oo.for_check = true; /* cp_image_check wants it */
	if (r == 0)
		r = cp_image_open_dev(dev, name, &oo, &im);
	for (int i = 0; r == 0 && i < chunks; i++) {
		hl_fill(buf, MiB, seed, (uint64_t)i * 4 * MiB);
		r = cp_image_pread(im, got, MiB, (uint64_t)i * 4 * MiB);
		if (r == 0 && memcmp(buf, got, MiB))
			r = cp_error(-EIO, "%s: chunk %d differs", name, i);
	}
	if (r == 0) {
		r = cp_image_check(im, 0, &res, NULL, NULL);
		if (r >= 0 && (res.corruptions || res.leaks))
			r = cp_error(-EUCLEAN, "%s: check: %" PRIu64
				     " corruptions, %" PRIu64 " leaks",
				     name, (uint64_t)res.corruptions,
				     (uint64_t)res.leaks);
		int e = cp_image_close(im);
		if (r >= 0)
			r = e;
	}
	cp_bdev_close(dev);
	free(buf);
	free(got);
	if (r < 0)
		return hl_die(r);
	printf("chunks %d\n", chunks);
	return 0;
}

static int cmd_sanlock(cp_sd *sd, uint64_t host_id, const char *img,
		       const char *vol)
{
	struct cp_lockspace_opts ls;
	struct cp_lease_opts sdm, vl;
	cp_lease_client *c = NULL;
	uint64_t lver = 0;
	char vpath[PATH_MAX];
	int r;

	cp_sd_lockspace(sd, &ls);
	r = cp_lockspace_join(&ls, host_id);
	if (r < 0)
		return hl_die(r);
	cp_sd_lease(sd, NULL, NULL, &sdm);
	r = cp_sd_lease(sd, img, vol, &vl);
	if (r == 0) {
		snprintf(vpath, sizeof(vpath), "%s", vl.path);
		vl.path = vpath;
		r = cp_lease_client_open(&c);
	}
	if (r == 0)
		r = cp_lease_acquire(c, &sdm, NULL, &lver);
	if (r == 0)
		printf("SDM acquired, lease version %" PRIu64 "\n", lver);
	if (r == 0)
		r = cp_lease_acquire(c, &vl, NULL, &lver);
	if (r == 0)
		printf("volume lease acquired, lease version %" PRIu64 "\n",
		       lver);
	if (r == 0)
		r = cp_lease_release(c, &vl);
	if (r == 0)
		r = cp_lease_release(c, &sdm);
	cp_lease_client_close(c);
	int e = cp_lockspace_leave(&ls, host_id);
	if (r == 0)
		r = e;
	return r < 0 ? hl_die(r) : 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: cp_blocksd_helper CMD ARGS (see the source)\n");
	return 2;
}

int main(int argc, char **argv)
{
	hl_prog = "cp_blocksd_helper";
	hl_lvm_opts_from_env(&lo);
	if (argc < 3)
		return usage();
	const char *cmd = argv[1];
	char **a = argv + 2;
	int na = argc - 2;

	if (!strcmp(cmd, "create"))
		return na == 6 ? cmd_create(a) : usage();

	cp_sd *sd;
	int r = open_dom(a[0], &sd);
	if (r < 0)
		return hl_die(r);
	a++;
	na--;
	int rc = 2;
	struct cp_uuid_str *u = NULL;
	size_t n = 0;
	if (!strcmp(cmd, "info") && na == 0) {
		rc = cmd_info(sd);
	} else if (!strcmp(cmd, "set-master") && na == 1) {
		rc = cmd_set_master(sd, a[0]);
	} else if (!strcmp(cmd, "vol-create") && na == 4) {
		struct sd_vol_spec s = {
		    .img_uuid = a[0],
		    .vol_uuid = a[1],
		    .parent_uuid = parent_arg(a[2]),
		    .format = CP_VOL_FORMAT_COW,
		    .allocation = CP_VOL_ALLOC_SPARSE,
		    .size = size_arg(a[3]),
		};
		r = sd->ops->vol_create(sd, &s);
		rc = r < 0 ? hl_die(r) : 0;
	} else if (!strcmp(cmd, "vol-remove") && na == 2) {
		r = sd->ops->vol_remove(sd, a[0], a[1]);
		rc = r < 0 ? hl_die(r) : 0;
	} else if (!strcmp(cmd, "vol-exists") && na == 2) {
		r = sd->ops->vol_exists(sd, a[0], a[1]);
		rc = r < 0 ? hl_die(r) : (printf("%d\n", r), 0);
	} else if (!strcmp(cmd, "vol-resize") && na == 4) {
		uint64_t ns = 0;
		r = sd->ops->vol_resize(sd, a[0], a[1], size_arg(a[2]),
					!strcmp(a[3], "shrink"), &ns);
		rc = r < 0 ? hl_die(r) : (printf("%" PRIu64 "\n", ns), 0);
	} else if (!strcmp(cmd, "vol-size") && na == 2) {
		struct cp_vol_size vs;
		r = cp_sd_vol_size(sd, a[0], a[1], &vs);
		rc = r < 0 ? hl_die(r)
			   : (printf("%" PRIu64 " %" PRIu64 "\n", vs.apparent,
				     vs.allocated),
			      0);
	} else if (!strcmp(cmd, "vol-lease") && na == 2) {
		struct cp_lease_opts l;
		r = cp_sd_lease(sd, a[0], a[1], &l);
		rc = r < 0 ? hl_die(r)
			   : (printf("%s %s %" PRIu64 "\n", l.name, l.path,
				     l.offset),
			      0);
	} else if (!strcmp(cmd, "vol-path") && na == 2) {
		char p[PATH_MAX];
		r = cp_sd_vol_path(sd, a[0], a[1], p, sizeof(p));
		rc = r < 0 ? hl_die(r) : (printf("%s\n", p), 0);
	} else if (!strcmp(cmd, "set-parent") && na == 3) {
		r = sd->ops->vol_set_parent(sd, a[0], a[1], parent_arg(a[2]));
		rc = r < 0 ? hl_die(r) : 0;
	} else if (!strcmp(cmd, "md-write") && na == 4) {
		rc = cmd_md_write(sd, a);
	} else if (!strcmp(cmd, "md-read") && na == 2) {
		rc = cmd_md_read(sd, a);
	} else if (!strcmp(cmd, "md-remove") && na == 2) {
		r = sd->ops->md_remove(sd, a[0], a[1]);
		rc = r < 0 ? hl_die(r) : 0;
	} else if (!strcmp(cmd, "list-images") && na == 0) {
		r = cp_sd_list_images(sd, &u, &n);
		rc = print_uuids(r, u, n);
	} else if (!strcmp(cmd, "list-volumes") && na == 1) {
		r = cp_sd_list_volumes(sd, a[0], &u, &n);
		rc = print_uuids(r, u, n);
	} else if (!strcmp(cmd, "stats") && na == 0) {
		struct cp_sd_stats st;
		r = cp_sd_stats(sd, &st);
		rc = r < 0 ? hl_die(r)
			   : (printf("%" PRIu64 " %" PRIu64 "\n", st.total,
				     st.free),
			      0);
	} else if (!strcmp(cmd, "extend") && na == 1) {
		r = cp_sd_extend(sd, a[0]);
		rc = r < 0 ? hl_die(r) : 0;
	} else if (!strcmp(cmd, "tasks") && na == 1) {
		rc = cmd_tasks(sd, size_arg(a[0]));
	} else if (!strcmp(cmd, "qcow") && na == 4) {
		rc = cmd_qcow(sd, a[0], a[1], size_arg(a[2]), size_arg(a[3]));
	} else if (!strcmp(cmd, "sanlock") && na == 3) {
		rc = cmd_sanlock(sd, size_arg(a[0]), a[1], a[2]);
	} else {
		rc = usage();
	}
	cp_sd_close(sd);
	return rc;
}
