/* tests/sanlock/pool_test.c - the pool library (spm/sd.c, pool.c, task.c,
 * volume.c) against a real sanlock daemon, on a file domain (and a block
 * domain when POOL_TEST_LVM_DEVICE is given), run by pool.sh.
 *
 * Scenarios (each asserts data and metadata, not just return codes):
 *   lifecycle   domains, SPM start, image create/write/snapshot, merge of a
 *               middle and of a leaf layer, templates with thin and full
 *               clones, template-in-use refusal, image copy between
 *               domains, delete, generations, tasks cleared, spm stop
 *   crash       for every crash point of create, merge, template and copy:
 *               a child process does the work with CP_FAULT_SPM_KILL_AT=N
 *               and dies by SIGKILL at point N; the parent becomes SPM,
 *               recovery finishes or undoes the task, and the image data
 *               and records are checked against the reference
 *   lease-loss  for merge, template and copy: the SPM role is dropped
 *               (spm stop with force, as a lost lease drops it) from the
 *               operation's first progress callback; the operation must
 *               fail with EPERM/ESTALE at its next structural step, write
 *               no record, journal entry or domain metadata after the
 *               drop, and the next SPM must finish or undo its task (file
 *               domains only)
 *
 * usage: pool_test SCENARIO --root DIR --root2 DIR [--lvm-device DEV
 *                  --lvm-system-dir D]
 * With --lvm-device the master domain is a block domain on DEV (the VG is
 * made there), the second one a file domain under --root2.
 */
#include <errno.h>
#include <dirent.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <signal.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "spm.h"
#include "pool_lib.h"

static const char *root, *root2, *lvm_dev, *lvm_sysdir;

static cp_pool *open_pool(void)
{
	struct cp_pool_opts po;
	const char *roots[] = {root, root2, NULL};
	static const char *devs[2];
	cp_pool *p;

	cp_pool_opts_init(&po);
	po.host_id = 1;
	po.file_roots = roots;
	if (lvm_dev) {
		devs[0] = lvm_dev;
		po.lvm_devices = devs;
		po.lvm_system_dir = lvm_sysdir;
	}
	OK(cp_pool_open(&po, &p));
	return p;
}

static void same(const char *a, const char *b, uint64_t size, const char *what)
{
	for (uint64_t i = 0; i < size; i++)
		CHECK(a[i] == b[i], "%s: differs at byte %" PRIu64, what, i);
}

static size_t chain_len(cp_pool *p, const char *dom, const char *img,
			struct cp_volmeta **chain)
{
	cp_sd *sd;
	size_t n;

	OK(cp_pool_domain(p, dom, &sd));
	OK(cp_sd_image_chain(sd, img, chain, &n));
	return n;
}

static void new_image(cp_pool *p, const char *dom, uint64_t size,
		      struct cp_volmeta *out)
{
	struct cp_vol_create_opts co;

	cp_vol_create_opts_init(&co);
	co.capacity = size;
	co.description = "disk";
	OK(cp_vol_create(p, dom, &co, out));
	CHECK(out->role == CP_VOL_ROLE_LEAF && out->legality == CP_VOL_LEGAL,
	      "new leaf");
}

static void snapshot(cp_pool *p, const char *dom, const char *img,
		     const char *leaf, struct cp_volmeta *out)
{
	struct cp_vol_create_opts co;
	struct cp_volmeta pm;
	cp_sd *sd;

	cp_vol_create_opts_init(&co);
	co.img_uuid = img;
	co.parent_uuid = leaf;
	OK(cp_vol_create(p, dom, &co, out));
	OK(cp_pool_domain(p, dom, &sd));
	OK(cp_sd_vol_md(sd, img, leaf, &pm));
	CHECK(pm.role == CP_VOL_ROLE_INTERNAL, "parent INTERNAL after snapshot");
	CHECK(!strcmp(out->parent_uuid, leaf), "parent recorded");
}

static void lifecycle(void)
{
	cp_pool *p = open_pool();
	char dom[40], dom2[40];
	struct cp_volmeta base, s1, s2, tm, thin, full, m;
	struct cp_volmeta *chain;
	struct cp_spm_status st;
	const uint64_t size = 32 * MIB;
	char *ref, *got;
	cp_sd *sd;
	size_t n;

	create_domain(p, root, true, lvm_dev, dom);
	create_domain(p, root2, false, lvm_dev, dom2);
	OK(cp_pool_join(p));
	/* not SPM yet: structural calls refused */
	struct cp_vol_create_opts co;
	cp_vol_create_opts_init(&co);
	co.capacity = size;
	CHECK(cp_vol_create(p, dom, &co, NULL) == -EPERM, "EPERM before start");
	CHECK(strstr(cp_last_error(), "is not the SPM"), "message");
	OK(cp_spm_status(p, &st));
	CHECK(st.role == CP_SPM_FREE, "free before start: %s",
	      cp_spm_role_name(st.role));
	OK(cp_spm_start(p));
	OK(cp_spm_status(p, &st));
	CHECK(st.role == CP_SPM_SPM && st.self && st.host_id == 1 && st.lver >= 1,
	      "SPM after start");

	/* image, two snapshots, data in every layer */
	new_image(p, dom, size, &base);
	fill(p, dom, base.img_uuid, base.vol_uuid, 0, 8 * MIB, 1);
	snapshot(p, dom, base.img_uuid, base.vol_uuid, &s1);
	fill(p, dom, base.img_uuid, s1.vol_uuid, 4 * MIB, 8 * MIB, 2);
	snapshot(p, dom, base.img_uuid, s1.vol_uuid, &s2);
	fill(p, dom, base.img_uuid, s2.vol_uuid, 10 * MIB, 4 * MIB, 3);
	CHECK(chain_len(p, dom, base.img_uuid, &chain) == 3, "3 layers");
	free(chain);
	ref = content(p, dom, base.img_uuid, s2.vol_uuid, size);

	/* merge the middle layer (s1 into base, s2 re-pointed) */
	OK(cp_vol_merge(p, dom, base.img_uuid, s1.vol_uuid, NULL, NULL, NULL));
	n = chain_len(p, dom, base.img_uuid, &chain);
	CHECK(n == 2 && !strcmp(chain[0].vol_uuid, base.vol_uuid) &&
	      !strcmp(chain[1].vol_uuid, s2.vol_uuid), "chain after merge");
	CHECK(!strcmp(chain[1].parent_uuid, base.vol_uuid), "re-pointed");
	CHECK(chain[0].role == CP_VOL_ROLE_INTERNAL, "base internal");
	free(chain);
	got = content(p, dom, base.img_uuid, s2.vol_uuid, size);
	same(ref, got, size, "after middle merge");
	free(got);

	/* merge the leaf into base: base is the leaf again */
	OK(cp_vol_merge(p, dom, base.img_uuid, s2.vol_uuid, NULL, NULL, NULL));
	n = chain_len(p, dom, base.img_uuid, &chain);
	CHECK(n == 1 && chain[0].role == CP_VOL_ROLE_LEAF, "leaf merged");
	free(chain);
	got = content(p, dom, base.img_uuid, base.vol_uuid, size);
	same(ref, got, size, "after leaf merge");
	free(got);

	/* templates and clones */
	struct cp_template_opts to;
	cp_template_opts_init(&to);
	to.img_uuid = base.img_uuid;
	to.description = "golden";
	OK(cp_template_create(p, dom, &to, NULL, NULL, &tm));
	CHECK(tm.role == CP_VOL_ROLE_SHARED && tm.legality == CP_VOL_LEGAL &&
	      !tm.parent_uuid[0], "template record");
	struct cp_clone_opts cl;
	cp_clone_opts_init(&cl);
	cl.tmpl_img_uuid = tm.img_uuid;
	cl.tmpl_vol_uuid = tm.vol_uuid;
	OK(cp_template_clone(p, dom, &cl, NULL, NULL, &thin));
	CHECK(!strcmp(thin.parent_uuid, tm.vol_uuid), "thin clone parent");
	cl.full = true;
	OK(cp_template_clone(p, dom, &cl, NULL, NULL, &full));
	CHECK(!full.parent_uuid[0] && full.role == CP_VOL_ROLE_LEAF, "full clone");
	got = content(p, dom, thin.img_uuid, thin.vol_uuid, size);
	same(ref, got, size, "thin clone");
	free(got);
	got = content(p, dom, full.img_uuid, full.vol_uuid, size);
	same(ref, got, size, "full clone");
	free(got);
	CHECK(cp_img_delete(p, dom, tm.img_uuid, NULL) == -EBUSY,
	      "template in use");
	CHECK(strstr(cp_last_error(), "in use"), "message");
	/* a snapshot of the thin clone, then its base merged: pull mode */
	struct cp_volmeta ts;
	fill(p, dom, thin.img_uuid, thin.vol_uuid, 20 * MIB, 2 * MIB, 7);
	snapshot(p, dom, thin.img_uuid, thin.vol_uuid, &ts);
	char *tref = content(p, dom, thin.img_uuid, ts.vol_uuid, size);
	OK(cp_vol_merge(p, dom, thin.img_uuid, thin.vol_uuid, NULL, NULL, NULL));
	n = chain_len(p, dom, thin.img_uuid, &chain);
	CHECK(n == 1 && !strcmp(chain[0].vol_uuid, ts.vol_uuid) &&
	      !strcmp(chain[0].parent_uuid, tm.vol_uuid), "pulled into child");
	free(chain);
	got = content(p, dom, thin.img_uuid, ts.vol_uuid, size);
	same(tref, got, size, "after pull merge");
	free(got);

	/* copy to the other domain (thin clone needs the template there) */
	CHECK(cp_img_copy(p, dom, thin.img_uuid, dom2, NULL, NULL, NULL) ==
		      -ENOENT, "template missing on target");
	OK(cp_img_copy(p, dom, tm.img_uuid, dom2, NULL, NULL, NULL));
	OK(cp_img_copy(p, dom, thin.img_uuid, dom2, NULL, NULL, NULL));
	got = content(p, dom2, thin.img_uuid, ts.vol_uuid, size);
	same(tref, got, size, "copied image");
	free(got);
	free(tref);

	/* generation compare-and-bump */
	OK(cp_pool_domain(p, dom, &sd));
	OK(cp_sd_vol_md(sd, full.img_uuid, full.vol_uuid, &m));
	CHECK(cp_vol_set_description(p, dom, full.img_uuid, full.vol_uuid,
				     m.generation + 1, "x") == -ESTALE,
	      "stale generation refused");
	OK(cp_vol_set_description(p, dom, full.img_uuid, full.vol_uuid,
				  m.generation, "renamed"));
	OK(cp_sd_vol_md(sd, full.img_uuid, full.vol_uuid, &m));
	CHECK(!strcmp(m.description, "renamed"), "description");

	/* formats and allocation: raw preallocated, cow preallocated, and a
	 * thin cow volume that starts at one chunk and grows by extend */
	struct cp_vol_create_opts vo;
	struct cp_volmeta raw, cowp, thinv;
	struct cp_vol_size vs;
	cp_vol_create_opts_init(&vo);
	vo.capacity = 16 * MIB;
	vo.format = CP_VOL_FORMAT_RAW;
	vo.allocation = CP_VOL_ALLOC_PREALLOCATED;
	OK(cp_vol_create(p, dom, &vo, &raw));
	OK(cp_sd_vol_size(sd, raw.img_uuid, raw.vol_uuid, &vs));
	CHECK(vs.apparent >= 16 * MIB && vs.allocated >= 16 * MIB,
	      "raw preallocated: %" PRIu64 "/%" PRIu64, vs.apparent, vs.allocated);
	fill(p, dom, raw.img_uuid, raw.vol_uuid, 0, MIB, 9);
	struct cp_volmeta raws;
	vo.allocation = CP_VOL_ALLOC_SPARSE;
	OK(cp_vol_create(p, dom, &vo, &raws));
	OK(cp_sd_vol_size(sd, raws.img_uuid, raws.vol_uuid, &vs));
	CHECK(vs.apparent >= 16 * MIB, "raw sparse size: %" PRIu64, vs.apparent);
	if (cp_sd_md(sd)->type == CP_DOMAIN_TYPE_FILE)
		CHECK(vs.allocated < 16 * MIB, "raw sparse file is allocated: %"
		      PRIu64, vs.allocated);
	OK(cp_img_delete(p, dom, raws.img_uuid, NULL));
	vo.allocation = CP_VOL_ALLOC_PREALLOCATED;
	vo.format = CP_VOL_FORMAT_COW;
	OK(cp_vol_create(p, dom, &vo, &cowp));
	OK(cp_sd_vol_size(sd, cowp.img_uuid, cowp.vol_uuid, &vs));
	CHECK(vs.allocated >= 16 * MIB, "cow preallocated: %" PRIu64, vs.allocated);
	vo.allocation = CP_VOL_ALLOC_SPARSE;
	vo.capacity = 1024 * MIB;
	OK(cp_vol_create(p, dom, &vo, &thinv));
	OK(cp_sd_vol_size(sd, thinv.img_uuid, thinv.vol_uuid, &vs));
	if (cp_sd_md(sd)->type == CP_DOMAIN_TYPE_BLOCK) {
		uint64_t grown;
		CHECK(vs.apparent == 64 * MIB, "thin LV starts at one chunk: %"
		      PRIu64, vs.apparent);
		OK(cp_vol_extend(p, dom, thinv.img_uuid, thinv.vol_uuid, 128 * MIB,
				 &grown));
		OK(cp_sd_vol_size(sd, thinv.img_uuid, thinv.vol_uuid, &vs));
		CHECK(vs.apparent == 128 * MIB && grown == 128 * MIB,
		      "extended LV: %" PRIu64, vs.apparent);
		CHECK(cp_vol_extend(p, dom, thinv.img_uuid, thinv.vol_uuid,
				    4096 * MIB, NULL) == -EINVAL,
		      "extend past a full qcow2's size refused");
	} else {
		CHECK(vs.allocated < 4 * MIB, "thin qcow2 file: %" PRIu64,
		      vs.allocated);
	}
	fill(p, dom, thinv.img_uuid, thinv.vol_uuid, 100 * MIB, MIB, 4);
	OK(cp_img_delete(p, dom, raw.img_uuid, NULL));
	OK(cp_img_delete(p, dom, cowp.img_uuid, NULL));
	OK(cp_img_delete(p, dom, thinv.img_uuid, NULL));

	/* delete: a leaf with a parent, whole images */
	CHECK(cp_vol_delete(p, dom, base.img_uuid, base.vol_uuid, NULL) == 0,
	      "delete the only volume");
	struct cp_uuid_str *imgs;
	OK(cp_sd_list_images(sd, &imgs, &n));
	for (size_t i = 0; i < n; i++)
		CHECK(strcmp(imgs[i].s, base.img_uuid), "image gone");
	free(imgs);
	OK(cp_img_delete(p, dom, thin.img_uuid, NULL));
	OK(cp_img_delete(p, dom, full.img_uuid, NULL));
	OK(cp_img_delete(p, dom, tm.img_uuid, NULL));
	OK(cp_sd_list_images(sd, &imgs, &n));
	CHECK(n == 0, "no images left, %zu", n);
	free(imgs);
	free(ref);

	tasks_settled(p, NULL, true);
	struct cp_task *t;
	OK(cp_task_list(p, &t, &n));
	CHECK(n == 0, "cleared");
	free(t);
	OK(cp_spm_stop(p, false));
	CHECK(cp_vol_create(p, dom, &co, NULL) == -EPERM, "EPERM after stop");
	cp_pool_close(p);
	printf("lifecycle: ok\n");
}

static void on_segv(int sig)
{
	void *bt[64];
	int n = backtrace(bt, 64);

	backtrace_symbols_fd(bt, n, 2);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ---- crash recovery ---------------------------------------------------------- */

enum op { OP_CREATE, OP_SNAPSHOT, OP_MERGE, OP_TEMPLATE, OP_COPY, OP_DELETE };
static const char *op_name[] = {"create", "snapshot", "merge", "template",
				 "copy", "delete"};

struct world {
	char dom[40], dom2[40];
	struct cp_volmeta base, s1, s2;
	char *ref;
	uint64_t size;
};

/* An empty world of 16 MiB images on two new domains, this host SPM. */
static void world_start(cp_pool *p, struct world *w)
{
	memset(w, 0, sizeof(*w));
	w->size = 16 * MIB;
	create_domain(p, root, true, lvm_dev, w->dom);
	create_domain(p, root2, false, lvm_dev, w->dom2);
	OK(cp_pool_join(p));
	OK(cp_spm_start(p));
}

/* A fresh image with two snapshots in dom. */
static void build(cp_pool *p, struct world *w)
{
	new_image(p, w->dom, w->size, &w->base);
	fill(p, w->dom, w->base.img_uuid, w->base.vol_uuid, 0, 6 * MIB, 1);
	snapshot(p, w->dom, w->base.img_uuid, w->base.vol_uuid, &w->s1);
	fill(p, w->dom, w->base.img_uuid, w->s1.vol_uuid, 3 * MIB, 6 * MIB, 2);
	snapshot(p, w->dom, w->base.img_uuid, w->s1.vol_uuid, &w->s2);
	fill(p, w->dom, w->base.img_uuid, w->s2.vol_uuid, 8 * MIB, 2 * MIB, 3);
	w->ref = content(p, w->dom, w->base.img_uuid, w->s2.vol_uuid, w->size);
}

/* progress (with opaque) is called by merge, template and copy. */
static int run_op_progress(cp_pool *p, struct world *w, enum op op,
			   const char *task, cp_task_progress_fn progress,
			   void *opaque)
{
	struct cp_vol_create_opts co;
	struct cp_template_opts to;

	switch (op) {
	case OP_CREATE:
		cp_vol_create_opts_init(&co);
		co.capacity = w->size;
		co.img_uuid = "aaaaaaaa-0000-0000-0000-000000000001";
		co.task_uuid = task;
		return cp_vol_create(p, w->dom, &co, NULL);
	case OP_SNAPSHOT:
		cp_vol_create_opts_init(&co);
		co.img_uuid = w->base.img_uuid;
		co.parent_uuid = w->s2.vol_uuid;
		co.task_uuid = task;
		return cp_vol_create(p, w->dom, &co, NULL);
	case OP_MERGE:
		return cp_vol_merge(p, w->dom, w->base.img_uuid, w->s1.vol_uuid,
				    task, progress, opaque);
	case OP_TEMPLATE:
		cp_template_opts_init(&to);
		to.img_uuid = w->base.img_uuid;
		to.tmpl_img_uuid = "aaaaaaaa-0000-0000-0000-000000000002";
		to.task_uuid = task;
		return cp_template_create(p, w->dom, &to, progress, opaque, NULL);
	case OP_COPY:
		return cp_img_copy(p, w->dom, w->base.img_uuid, w->dom2, task,
				   progress, opaque);
	case OP_DELETE:
		return cp_img_delete(p, w->dom, w->base.img_uuid, task);
	}
	return -EINVAL;
}

static int run_op(cp_pool *p, struct world *w, enum op op, const char *task)
{
	return run_op_progress(p, w, op, task, NULL, NULL);
}

/* After recovery: the task ended, and every image reads as before (or,
 * for a finished delete, is gone; for an undone create, nothing is left). */
static void verify(cp_pool *p, struct world *w, enum op op, const char *task,
		   int point)
{
	struct cp_task t;
	struct cp_volmeta *chain;
	struct cp_uuid_str *imgs;
	size_t n;
	cp_sd *sd;
	char *got;

	/* killed before the task was journaled: nothing may have changed */
	if (cp_task_get(p, task, &t) == -ENOENT) {
		memset(&t, 0, sizeof(t));
		t.state = CP_TASK_ABORTED;
	}
	CHECK(t.state == CP_TASK_DONE || t.state == CP_TASK_ABORTED ||
	      t.state == CP_TASK_FAILED,
	      "%s point %d: task %s: %s", op_name[op], point,
	      cp_task_state_name(t.state), t.message);
	OK(cp_pool_domain(p, w->dom, &sd));
	if (op == OP_DELETE && t.state == CP_TASK_DONE) {
		OK(cp_sd_list_images(sd, &imgs, &n));
		for (size_t i = 0; i < n; i++)
			CHECK(strcmp(imgs[i].s, w->base.img_uuid),
			      "delete point %d: image still there", point);
		free(imgs);
		return;
	}
	n = chain_len(p, w->dom, w->base.img_uuid, &chain);
	for (size_t i = 0; i < n; i++)
		CHECK(chain[i].legality == CP_VOL_LEGAL,
		      "%s point %d: volume %s ILLEGAL after recovery", op_name[op],
		      point, chain[i].vol_uuid);
	got = content(p, w->dom, w->base.img_uuid, chain[n - 1].vol_uuid, w->size);
	same(w->ref, got, w->size, op_name[op]);
	free(got);
	free(chain);
	/* every volume on disk has a record, every record its data; no
	 * image is left without volumes (orphan data) in either domain */
	cp_sd *sd2;
	OK(cp_pool_domain(p, w->dom2, &sd2));
	OK(cp_sd_list_images(sd2, &imgs, &n));
	for (size_t i = 0; i < n; i++) {
		struct cp_volmeta *c2;
		size_t n2;
		CHECK(cp_sd_image_chain(sd2, imgs[i].s, &c2, &n2) == 0,
		      "%s point %d: target image %s broken", op_name[op], point,
		      imgs[i].s);
		for (size_t j = 0; j < n2; j++)
			CHECK(c2[j].legality == CP_VOL_LEGAL, "%s point %d: target "
			      "volume ILLEGAL", op_name[op], point);
		free(c2);
	}
	free(imgs);
	OK(cp_sd_list_images(sd, &imgs, &n));
	for (size_t i = 0; i < n; i++) {
		struct cp_uuid_str *vols;
		size_t nv;
		OK(cp_sd_list_volumes(sd, imgs[i].s, &vols, &nv));
		CHECK(nv > 0, "%s point %d: image %s has data but no volume "
		      "record", op_name[op], point, imgs[i].s);
		for (size_t j = 0; j < nv; j++) {
			struct cp_volmeta m;
			struct cp_vol_size vs;
			OK(cp_sd_vol_md(sd, imgs[i].s, vols[j].s, &m));
			CHECK(m.legality == CP_VOL_LEGAL, "%s point %d: leftover "
			      "ILLEGAL volume %s", op_name[op], point, vols[j].s);
			OK(cp_sd_vol_size(sd, imgs[i].s, vols[j].s, &vs));
		}
		free(vols);
	}
	free(imgs);
}

/* Remove everything so the next point starts clean. */
static void wipe(cp_pool *p, struct world *w)
{
	const char *doms[] = {w->dom, w->dom2};
	for (int d = 0; d < 2; d++) {
		struct cp_uuid_str *imgs;
		size_t n;
		cp_sd *sd;
		OK(cp_pool_domain(p, doms[d], &sd));
		OK(cp_sd_list_images(sd, &imgs, &n));
		for (size_t i = 0; i < n; i++) {
			struct cp_volmeta m;
			struct cp_uuid_str *vols;
			size_t nv;
			/* templates last: delete non-shared images first */
			OK(cp_sd_list_volumes(sd, imgs[i].s, &vols, &nv));
			bool shared = nv && cp_sd_vol_md(sd, imgs[i].s, vols[0].s,
							 &m) == 0 &&
				      m.role == CP_VOL_ROLE_SHARED;
			free(vols);
			if (!shared)
				OK(cp_img_delete(p, doms[d], imgs[i].s, NULL));
		}
		for (size_t i = 0; i < n; i++) {
			struct cp_uuid_str *vols;
			size_t nv;
			OK(cp_sd_list_volumes(sd, imgs[i].s, &vols, &nv));
			free(vols);
			if (nv)
				OK(cp_img_delete(p, doms[d], imgs[i].s, NULL));
		}
		free(imgs);
	}
	tasks_settled(p, NULL, true);
	free(w->ref);
	w->ref = NULL;
}

static void crash(void)
{
	cp_pool *p = open_pool();
	struct world w;
	int total = 0, completed = 0;

	world_start(p, &w);

	/* POOL_TEST_STRIDE=k: every k-th crash point only (block domains,
	 * where each point costs a dozen LVM commands) */
	const char *se = getenv("POOL_TEST_STRIDE");
	int stride = se ? atoi(se) : 1;
	if (stride < 1)
		stride = 1;
	for (int op = OP_CREATE; op <= OP_DELETE; op++) {
		for (int point = 1 + op % stride;; point += stride) {
			char task[40];
			int status;
			pid_t pid;

			build(p, &w);
			OK(cp_uuid_generate(task));
			/* the child must be SPM itself: hand the role over */
			OK(cp_spm_stop(p, false));
			fflush(NULL);
			pid = fork();
			if (pid == 0) {
				cp_pool *c;
				char env[32];
				snprintf(env, sizeof(env), "%d", point);
				setenv("CP_FAULT_SPM_KILL_AT", env, 1);
				signal(SIGSEGV, on_segv);
				c = open_pool();
				if (cp_pool_join(c) < 0 || cp_spm_start(c) < 0) {
					fprintf(stderr, "child: %s\n", cp_last_error());
					_exit(3);
				}
				int r = run_op(c, &w, (enum op)op, task);
				if (r < 0)
					fprintf(stderr, "child: %s\n", cp_last_error());
				_exit(r < 0 ? 2 : 0);
			}
			CHECK(pid > 0, "fork");
			CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
			/* the child's sanlock registration died with it: the
			 * SDM lease is free again at once */
			OK(cp_spm_start(p));
			total++;
			if (WIFEXITED(status)) {
				CHECK(WEXITSTATUS(status) == 0,
				      "%s point %d: child failed (%d)", op_name[op],
				      point, WEXITSTATUS(status));
				verify(p, &w, (enum op)op, task, point);
				wipe(p, &w);
				completed++;
				break;  /* ran to the end: no more points */
			}
			CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
			      "%s point %d: child died of signal %d", op_name[op],
			      point, WTERMSIG(status));
			verify(p, &w, (enum op)op, task, point);
			if (getenv("POOL_TEST_VERBOSE"))
				fprintf(stderr, "%s point %d recovered\n",
					op_name[op], point);
			wipe(p, &w);
		}
	}
	printf("crash: %d crash points over %d operations, all recovered\n",
	       total - completed, completed);
	cp_pool_close(p);
}

/* ---- losing the SPM role in the middle of an operation ------------------------ */

/* Everything structural of the file domains under root and root2: the
 * domain record, the task journal, every volume record, and the names of
 * every file of every image (data files by name only: an operation's
 * data copy may still be running when the role goes).  Sanlock's own
 * areas (ids, leases) change by themselves and are left out. */
struct snap {
	char *buf;
	size_t len, cap;
};

static void snap_add(struct snap *s, const void *d, size_t n)
{
	if (s->len + n > s->cap) {
		s->cap = (s->len + n) * 2;
		s->buf = realloc(s->buf, s->cap);
		CHECK(s->buf != NULL, "out of memory");
	}
	memcpy(s->buf + s->len, d, n);
	s->len += n;
}

static void snap_file(struct snap *s, const char *path, bool content)
{
	snap_add(s, path, strlen(path) + 1);
	if (!content)
		return;
	FILE *f = fopen(path, "rb");
	CHECK(f != NULL, "open %s", path);
	char b[4096];
	size_t n;
	while ((n = fread(b, 1, sizeof(b), f)) > 0)
		snap_add(s, b, n);
	fclose(f);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of a directory (free each and the array). */
static size_t dir_names(const char *dir, char ***out)
{
	DIR *d = opendir(dir);
	char **v = NULL;
	size_t n = 0;
	struct dirent *e;
	if (!d) {
		*out = NULL;
		return 0;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		v = realloc(v, (n + 1) * sizeof(*v));
		v[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(v, n, sizeof(*v), name_cmp);
	*out = v;
	return n;
}

static void snap_domain(struct snap *s, const char *top, const char *dom)
{
	char path[5120];
	const char *md[] = {"metadata", "tasks"};
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s/dom_md/%s", top, dom, md[i]);
		snap_file(s, path, true);
	}
	char imgdir[4096], **imgs, **vols;
	snprintf(imgdir, sizeof(imgdir), "%s/%s/images", top, dom);
	size_t ni = dir_names(imgdir, &imgs);
	for (size_t i = 0; i < ni; i++) {
		char d[4608];
		snprintf(d, sizeof(d), "%s/%s", imgdir, imgs[i]);
		size_t nv = dir_names(d, &vols);
		for (size_t j = 0; j < nv; j++) {
			size_t l = strlen(vols[j]);
			snprintf(path, sizeof(path), "%s/%s", d, vols[j]);
			snap_file(s, path, l > 5 && !strcmp(vols[j] + l - 5, ".meta"));
			free(vols[j]);
		}
		free(vols);
		free(imgs[i]);
	}
	free(imgs);
}

struct drop {
	cp_pool *p;
	struct world *w;
	atomic_int fired;
	struct snap at_drop;
};

static void snap_world(struct snap *s, struct world *w)
{
	snap_domain(s, root, w->dom);
	snap_domain(s, root2, w->dom2);
}

static void drop_role(void *opaque, uint64_t done, uint64_t total)
{
	struct drop *d = opaque;
	(void)done;
	(void)total;
	if (atomic_fetch_add(&d->fired, 1))
		return;
	OK(cp_spm_stop(d->p, true));
	CHECK(cp_spm_check(d->p) < 0, "still SPM after spm stop");
	snap_world(&d->at_drop, d->w);
}

static void lease_loss(void)
{
	cp_pool *p = open_pool();
	struct world w;
	const enum op ops[] = {OP_MERGE, OP_TEMPLATE, OP_COPY};

	CHECK(!lvm_dev, "lease-loss runs on file domains only");
	world_start(p, &w);
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		enum op op = ops[i];
		char task[40];
		struct drop d;
		struct cp_task t;

		build(p, &w);
		OK(cp_uuid_generate(task));
		memset(&d, 0, sizeof(d));
		d.p = p;
		d.w = &w;
		int r = run_op_progress(p, &w, op, task, drop_role, &d);
		CHECK(atomic_load(&d.fired) > 0, "%s: no progress callback",
		      op_name[op]);
		CHECK(r == -EPERM || r == -ESTALE,
		      "%s: returned %d after the SPM role was lost", op_name[op], r);
		/* nothing structural was written after the drop */
		struct snap after = {0};
		snap_world(&after, &w);
		CHECK(after.len == d.at_drop.len &&
		      !memcmp(after.buf, d.at_drop.buf, after.len),
		      "%s: records, journal or domain metadata changed after "
		      "the SPM role was lost", op_name[op]);
		free(after.buf);
		free(d.at_drop.buf);
		OK(cp_task_get(p, task, &t));
		CHECK(t.state == CP_TASK_RUNNING, "%s: task %s after the loss",
		      op_name[op], cp_task_state_name(t.state));
		/* the next SPM finishes or undoes it */
		OK(cp_spm_start(p));
		verify(p, &w, op, task, 0);
		wipe(p, &w);
		printf("lease-loss: %s stopped and recovered\n", op_name[op]);
	}
	cp_pool_close(p);
}

int main(int argc, char **argv)
{
	static const struct pool_scenario scenarios[] = {
		{ "lifecycle", lifecycle },
		{ "crash", crash },
		{ "lease-loss", lease_loss },
	};
	const struct pool_opt opts[] = {
		{ "--root", &root },
		{ "--root2", &root2 },
		{ "--lvm-device", &lvm_dev },
		{ "--lvm-system-dir", &lvm_sysdir },
	};

	parse_opts(argc, argv, 2, opts, CP_ARRAY_SIZE(opts));
	if (!root || !root2) {
		fprintf(stderr, "usage: pool_test lifecycle|crash|lease-loss --root DIR --root2 DIR\n");
		return 2;
	}
	return run_scenario(scenarios, CP_ARRAY_SIZE(scenarios),
			    argc > 1 ? argv[1] : "");
}
