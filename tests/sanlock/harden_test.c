/* tests/sanlock/harden_test.c - what a file domain may touch and how its
 * failures end, against a real sanlock daemon; run by
 * tests/integration/harden.sh, one scenario per run, each on fresh roots.
 *
 * Scenarios (each asserts what would break without its fix):
 *   perms     a domain and an image made with --disk-gid G: every file
 *             0660 and every directory 0750, group G; prints the volume's
 *             path and the others for the script, which checks that an
 *             unprivileged user cannot read them and a member of G can
 *   confine   domain create refused for a relative, a non-canonical and a
 *             foreign path (nothing made); a volume file turned into a
 *             link to an outside file: copy to another domain and prepare
 *             refused, the outside file unchanged, nothing copied; an image
 *             directory that is a link: volume create refused, the outside
 *             directory still empty; a qcow2 backing name pointing at a
 *             file of the domain that is no volume: prepare and snapshot
 *             refused
 *   merge     (--root on a small tmpfs) a merge cut by ENOSPC half-way:
 *             the call fails, the task is FAILED at once, the layer is
 *             LEGAL and reads as before, also after a restart of the SPM;
 *             then the same merge killed at each of its crash points before
 *             the failure: the next SPM cannot roll it forward (still no
 *             space) and leaves the layer LEGAL, the task FAILED; space
 *             freed, the same merge succeeds
 *   full      (--root on a small tmpfs) the file system filled to the last
 *             block: a snapshot, a template, thin and full clones, a copy
 *             into it and a create fail, each FAILED at once with nothing left ILLEGAL;
 *             a volume delete and an image delete succeed and free space
 *   journal   1000 create + delete rounds in a row all succeed (finished
 *             tasks' slots are recycled)
 *
 * usage: harden_test SCENARIO --root DIR --root2 DIR [--disk-gid N]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "spm.h"
#include "pool_lib.h"

static const char *root, *root2;
static uint32_t disk_gid;

static cp_pool *open_pool(void)
{
	struct cp_pool_opts po;
	const char *roots[] = {root, root2, NULL};
	cp_pool *p;

	cp_pool_opts_init(&po);
	po.host_id = 1;
	po.file_roots = roots;
	po.disk_gid = disk_gid;
	OK(cp_pool_open(&po, &p));
	return p;
}

static void start(cp_pool **p, char *dom, char *dom2)
{
	*p = open_pool();
	create_domain(*p, root, true, NULL, dom);
	if (dom2)
		create_domain(*p, root2, false, NULL, dom2);
	OK(cp_pool_join(*p));
	OK(cp_spm_start(*p));
}

static void new_volume(cp_pool *p, const char *dom, const char *img,
		       const char *parent, enum cp_vol_format fmt,
		       uint64_t size, struct cp_volmeta *out)
{
	struct cp_vol_create_opts co;

	cp_vol_create_opts_init(&co);
	co.img_uuid = img;
	co.parent_uuid = parent;
	co.format = fmt;
	co.capacity = size;
	OK(cp_vol_create(p, dom, &co, out));
	CHECK(out->legality == CP_VOL_LEGAL, "new volume LEGAL");
}

static struct cp_volmeta vol_md(cp_pool *p, const char *dom, const char *img,
				const char *vol)
{
	struct cp_volmeta m;
	cp_sd *sd;

	OK(cp_pool_domain(p, dom, &sd));
	OK(cp_sd_vol_md(sd, img, vol, &m));
	return m;
}

/* Every volume of every image of dom LEGAL. */
static void all_legal(cp_pool *p, const char *dom)
{
	struct cp_uuid_str *imgs, *vols;
	size_t ni, nv;
	cp_sd *sd;

	OK(cp_pool_domain(p, dom, &sd));
	OK(cp_sd_list_images(sd, &imgs, &ni));
	for (size_t i = 0; i < ni; i++) {
		OK(cp_sd_list_volumes(sd, imgs[i].s, &vols, &nv));
		for (size_t k = 0; k < nv; k++) {
			struct cp_volmeta m = vol_md(p, dom, imgs[i].s, vols[k].s);
			CHECK(m.legality == CP_VOL_LEGAL, "volume %s of image %s "
			      "ILLEGAL", vols[k].s, imgs[i].s);
		}
		free(vols);
	}
	free(imgs);
}

static void vol_file(char *out, size_t len, const char *r, const char *dom,
		     const char *img, const char *vol, const char *suffix)
{
	snprintf(out, len, "%s/%s/images/%s/%s%s", r, dom, img, vol, suffix);
}

/* ---- perms ------------------------------------------------------------------ */

static void check_mode(const char *path, mode_t want)
{
	struct stat st;

	CHECK(lstat(path, &st) == 0, "%s: %s", path, strerror(errno));
	CHECK((st.st_mode & 07777) == want, "%s: mode %o, expected %o", path,
	      (unsigned)(st.st_mode & 07777), (unsigned)want);
	CHECK(!disk_gid || st.st_gid == disk_gid, "%s: group %u, expected %u",
	      path, (unsigned)st.st_gid, disk_gid);
}

static void perms(void)
{
	char dom[40], path[PATH_MAX];
	struct cp_volmeta base, snap;
	static const char *const dommd[] = {"metadata", "ids", "leases", "inbox",
					    "outbox", "tasks"};
	cp_pool *p;

	start(&p, dom, NULL);
	new_volume(p, dom, NULL, NULL, CP_VOL_FORMAT_COW, 16 * MIB, &base);
	fill(p, dom, base.img_uuid, base.vol_uuid, 0, MIB, 7);
	new_volume(p, dom, base.img_uuid, base.vol_uuid, CP_VOL_FORMAT_COW, 0,
		   &snap);
	/* a record rewritten (generation bump) keeps mode and group */
	OK(cp_vol_set_description(p, dom, base.img_uuid, snap.vol_uuid,
				  snap.generation, "renamed"));
	snprintf(path, sizeof(path), "%s/%s", root, dom);
	check_mode(path, 0750);
	snprintf(path, sizeof(path), "%s/%s/dom_md", root, dom);
	check_mode(path, 0750);
	snprintf(path, sizeof(path), "%s/%s/images", root, dom);
	check_mode(path, 0750);
	snprintf(path, sizeof(path), "%s/%s/images/%s", root, dom, base.img_uuid);
	check_mode(path, 0750);
	for (size_t i = 0; i < CP_ARRAY_SIZE(dommd); i++) {
		snprintf(path, sizeof(path), "%s/%s/dom_md/%s", root, dom, dommd[i]);
		check_mode(path, 0660);
	}
	const char *vols[] = {base.vol_uuid, snap.vol_uuid};
	const char *sfx[] = {"", ".meta", ".lease"};
	for (size_t v = 0; v < 2; v++)
		for (size_t s = 0; s < 3; s++) {
			vol_file(path, sizeof(path), root, dom, base.img_uuid,
				 vols[v], sfx[s]);
			check_mode(path, 0660);
		}
	/* for the script: the base volume's data (it holds data) */
	vol_file(path, sizeof(path), root, dom, base.img_uuid, base.vol_uuid, "");
	printf("VOLUME %s\n", path);
	vol_file(path, sizeof(path), root, dom, base.img_uuid, snap.vol_uuid,
		 ".meta");
	printf("META %s\n", path);
	snprintf(path, sizeof(path), "%s/%s/dom_md/tasks", root, dom);
	printf("TASKS %s\n", path);
	cp_pool_close(p);
}

/* ---- confine ---------------------------------------------------------------- */

struct snap {
	struct stat st;
	char *data;
	size_t len;
};

static struct snap snap_file(const char *path)
{
	struct snap s;
	FILE *f = fopen(path, "rb");

	CHECK(f, "%s: %s", path, strerror(errno));
	CHECK(stat(path, &s.st) == 0, "%s", path);
	s.len = (size_t)s.st.st_size;
	s.data = malloc(s.len + 1);
	CHECK(fread(s.data, 1, s.len, f) == s.len, "%s: read", path);
	fclose(f);
	return s;
}

static void same_file(const char *path, const struct snap *a)
{
	struct snap b = snap_file(path);

	CHECK(b.len == a->len && !memcmp(a->data, b.data, a->len),
	      "%s: content changed", path);
	CHECK(b.st.st_mtim.tv_sec == a->st.st_mtim.tv_sec &&
	      b.st.st_mtim.tv_nsec == a->st.st_mtim.tv_nsec,
	      "%s: mtime changed", path);
	free(b.data);
}

static size_t dir_entries(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	size_t n = 0;

	CHECK(d, "%s: %s", path, strerror(errno));
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void confine(void)
{
	char dom[40], dom2[40], path[PATH_MAX], outside[PATH_MAX];
	char secret[PATH_MAX + 16], odir[PATH_MAX], cwd_dir[PATH_MAX + 16];
	struct cp_volmeta v, base, leaf, m;
	struct cp_sd_create_opts o;
	struct cp_domain_md md;
	cp_pool *p;
	cp_sd *sd2;
	int r;

	start(&p, dom, dom2);

	/* domain create: relative, non-canonical, foreign paths refused and
	 * nothing is made anywhere */
	snprintf(outside, sizeof(outside), "%s/../outside", root);
	CHECK(mkdir(outside, 0700) == 0 || errno == EEXIST, "mkdir %s", outside);
	CHECK(realpath(outside, odir), "realpath");
	snprintf(cwd_dir, sizeof(cwd_dir), "%s/cwd", odir);
	CHECK(mkdir(cwd_dir, 0700) == 0, "mkdir %s", cwd_dir);
	CHECK(chdir(cwd_dir) == 0, "chdir");
	CHECK(mkdir("rel", 0700) == 0, "mkdir rel");
	size_t root_before = dir_entries(root);
	cp_sd_create_opts_init(&o);
	o.loc.type = CP_DOMAIN_TYPE_FILE;
	o.pool_uuid = POOL;
	o.name = "evil";
	o.io_timeout = 1;
	o.loc.root = "rel";
	r = cp_pool_domain_create(p, &o, &md);
	CHECK(r == -EINVAL && strstr(cp_last_error(), "not absolute"),
	      "relative path: %d", r);
	CHECK(dir_entries("rel") == 0, "nothing made in rel/");
	snprintf(path, sizeof(path), "%s/../%s", root,
		 strrchr(root, '/') + 1);  /* the root itself, spelled with .. */
	o.loc.root = path;
	r = cp_pool_domain_create(p, &o, &md);
	CHECK(r == -EINVAL && strstr(cp_last_error(), "not canonical"),
	      "non-canonical path: %d", r);
	o.loc.root = cwd_dir;
	r = cp_pool_domain_create(p, &o, &md);
	CHECK(r == -EPERM && strstr(cp_last_error(), "file roots"),
	      "foreign path: %d", r);
	CHECK(dir_entries("rel") == 0 && dir_entries(cwd_dir) == 1,
	      "nothing made outside");
	CHECK(dir_entries(root) == root_before, "nothing new in the root");

	/* a volume file replaced by a link to an outside file */
	snprintf(secret, sizeof(secret), "%s/secret", odir);
	FILE *f = fopen(secret, "wb");
	CHECK(f, "%s", secret);
	for (int i = 0; i < (int)MIB; i++)
		fputc("SECRET"[i % 6], f);
	fclose(f);
	struct snap sec = snap_file(secret);
	new_volume(p, dom, NULL, NULL, CP_VOL_FORMAT_RAW, MIB, &v);
	vol_file(path, sizeof(path), root, dom, v.img_uuid, v.vol_uuid, "");
	CHECK(unlink(path) == 0 && symlink(secret, path) == 0, "plant link");
	r = cp_img_copy(p, dom, v.img_uuid, dom2, NULL, NULL, NULL);
	CHECK(r == -ELOOP, "copy through a link: %d", r);
	OK(cp_pool_domain(p, dom2, &sd2));
	struct cp_uuid_str *vols;
	size_t nv;
	OK(cp_sd_list_volumes(sd2, v.img_uuid, &vols, &nv));
	CHECK(nv == 0, "nothing copied to the other domain (%zu volumes)", nv);
	free(vols);
	snprintf(path, sizeof(path), "%s/%s/images/%s", root2, dom2, v.img_uuid);
	CHECK(access(path, F_OK) < 0, "%s: no image directory left", path);
	r = cp_vol_prepare(p, dom, v.img_uuid, v.vol_uuid, false);
	CHECK(r == -ELOOP, "prepare of a link: %d", r);
	same_file(secret, &sec);
	tasks_settled(p, NULL, false);

	/* an image directory that is a link to an outside directory */
	char img2[40], odir2[PATH_MAX + 16];
	OK(cp_uuid_generate(img2));
	snprintf(odir2, sizeof(odir2), "%s/imgdir", odir);
	CHECK(mkdir(odir2, 0700) == 0, "mkdir");
	snprintf(path, sizeof(path), "%s/%s/images/%s", root, dom, img2);
	CHECK(symlink(odir2, path) == 0, "plant dir link");
	struct cp_vol_create_opts co;
	cp_vol_create_opts_init(&co);
	co.img_uuid = img2;
	co.capacity = MIB;
	r = cp_vol_create(p, dom, &co, &m);
	CHECK(r == -ELOOP, "create through a linked image directory: %d", r);
	CHECK(dir_entries(odir2) == 0, "nothing written outside the domain");
	tasks_settled(p, NULL, false);

	/* a backing name that is a file of the domain but no volume */
	new_volume(p, dom, NULL, NULL, CP_VOL_FORMAT_COW, 4 * MIB, &base);
	new_volume(p, dom, base.img_uuid, base.vol_uuid, CP_VOL_FORMAT_COW, 0,
		   &leaf);
	char ximg[40], xvol[40], bname[100];
	OK(cp_uuid_generate(ximg));
	OK(cp_uuid_generate(xvol));
	snprintf(path, sizeof(path), "%s/%s/images/%s", root, dom, ximg);
	CHECK(mkdir(path, 0700) == 0, "mkdir");
	vol_file(path, sizeof(path), root, dom, ximg, xvol, "");
	f = fopen(path, "wb");
	CHECK(f && ftruncate(fileno(f), 4 * MIB) == 0, "plant raw file");
	fclose(f);
	vol_file(path, sizeof(path), root, dom, base.img_uuid, leaf.vol_uuid, "");
	struct cp_open_opts oo;
	cp_image *img;
	cp_open_opts_init(&oo);
	oo.no_backing = true;
	OK(cp_image_open(path, &oo, &img));
	snprintf(bname, sizeof(bname), "../%s/%s", ximg, xvol);
	OK(cp_image_set_backing(img, bname, "raw", false));
	OK(cp_image_close(img));
	r = cp_vol_prepare(p, dom, base.img_uuid, leaf.vol_uuid, true);
	CHECK(r == -EUCLEAN && strstr(cp_last_error(), "not a volume"),
	      "prepare of a chain leaving the volumes: %d", r);
	cp_vol_create_opts_init(&co);
	co.img_uuid = base.img_uuid;
	co.parent_uuid = leaf.vol_uuid;
	r = cp_vol_create(p, dom, &co, &m);
	CHECK(r == -EUCLEAN && strstr(cp_last_error(), "not a volume"),
	      "snapshot on a chain leaving the volumes: %d", r);
	tasks_settled(p, NULL, false);
	m = vol_md(p, dom, base.img_uuid, leaf.vol_uuid);
	CHECK(m.role == CP_VOL_ROLE_LEAF && m.legality == CP_VOL_LEGAL,
	      "leaf untouched");
	free(sec.data);
	cp_pool_close(p);
	printf("confine: relative, non-canonical and foreign domain paths, a "
	       "volume link, an image directory link and a foreign backing "
	       "name refused\n");
}

/* ---- merge / full: a small tmpfs as the root -------------------------------- */

/* Fill the file system of dir, leaving about leave bytes (0: none at all). */
static void fill_fs(const char *dir, uint64_t leave, char *filler)
{
	struct statvfs v;
	char *buf = malloc(MIB);
	uint64_t avail, done = 0;
	int fd;

	memset(buf, 0xa5, MIB);
	snprintf(filler, PATH_MAX, "%s/filler", dir);
	fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0, "%s", filler);
	CHECK(statvfs(dir, &v) == 0, "statvfs");
	avail = (uint64_t)v.f_bavail * v.f_frsize;
	while (done + leave < avail) {
		size_t n = avail - leave - done >= MIB ? MIB : 4096;
		ssize_t w = write(fd, buf, n);
		if (w <= 0) {
			CHECK(w < 0 && errno == ENOSPC, "filler: %s", strerror(errno));
			break;
		}
		done += (uint64_t)w;
	}
	if (!leave) {  /* the last pages */
		while (write(fd, buf, 4096) > 0)
			;
		CHECK(errno == ENOSPC, "filler end: %s", strerror(errno));
	}
	fsync(fd);
	close(fd);
	free(buf);
}

static void merge(void)
{
	char dom[40], filler[PATH_MAX], task[40];
	struct cp_volmeta base, leaf, m;
	const uint64_t size = 48 * MIB;
	cp_pool *p;
	int r;

	start(&p, dom, NULL);
	new_volume(p, dom, NULL, NULL, CP_VOL_FORMAT_COW, size, &base);
	fill(p, dom, base.img_uuid, base.vol_uuid, 0, 2 * MIB, 1);
	new_volume(p, dom, base.img_uuid, base.vol_uuid, CP_VOL_FORMAT_COW, 0,
		   &leaf);
	fill(p, dom, base.img_uuid, leaf.vol_uuid, MIB, 24 * MIB, 2);
	char *ref = content(p, dom, base.img_uuid, leaf.vol_uuid, size);

	/* ~8 MiB left: committing 24 MiB into the base runs out half-way */
	fill_fs(root, 8 * MIB, filler);
	OK(cp_uuid_generate(task));
	r = cp_vol_merge(p, dom, base.img_uuid, leaf.vol_uuid, task, NULL, NULL);
	CHECK(r == -ENOSPC, "merge on a full file system: %d", r);
	CHECK(tasks_settled(p, task, false) == CP_TASK_FAILED, "task FAILED at once");
	m = vol_md(p, dom, base.img_uuid, leaf.vol_uuid);
	CHECK(m.legality == CP_VOL_LEGAL && m.role == CP_VOL_ROLE_LEAF,
	      "leaf LEGAL after the failed merge");
	m = vol_md(p, dom, base.img_uuid, base.vol_uuid);
	CHECK(m.legality == CP_VOL_LEGAL && m.role == CP_VOL_ROLE_INTERNAL,
	      "base unchanged");
	char *got = content(p, dom, base.img_uuid, leaf.vol_uuid, size);
	CHECK(!memcmp(ref, got, size), "data intact after the failed merge");
	free(got);
	OK(cp_vol_prepare(p, dom, base.img_uuid, leaf.vol_uuid, true));
	OK(cp_vol_teardown(p, dom, base.img_uuid, leaf.vol_uuid));

	/* a restart (new SPM term, recovery) keeps it so */
	OK(cp_spm_stop(p, false));
	cp_pool_close(p);
	p = open_pool();
	OK(cp_pool_join(p));
	OK(cp_spm_start(p));
	CHECK(tasks_settled(p, task, false) == CP_TASK_FAILED, "still FAILED");
	m = vol_md(p, dom, base.img_uuid, leaf.vol_uuid);
	CHECK(m.legality == CP_VOL_LEGAL, "leaf LEGAL after the restart");

	/* killed at every crash point of the same merge on the full file
	 * system: the next SPM's recovery cannot roll it forward (ENOSPC
	 * again) and must put the layer back in use, FAILED */
	int points = 0;
	for (int point = 1;; point++) {
		int status;
		pid_t pid;

		OK(cp_uuid_generate(task));
		OK(cp_spm_stop(p, false));
		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			char env[32];
			cp_pool *c;
			snprintf(env, sizeof(env), "%d", point);
			setenv("CP_FAULT_SPM_KILL_AT", env, 1);
			c = open_pool();
			if (cp_pool_join(c) < 0 || cp_spm_start(c) < 0)
				_exit(3);
			r = cp_vol_merge(c, dom, base.img_uuid, leaf.vol_uuid, task,
					 NULL, NULL);
			_exit(r == -ENOSPC ? 0 : 2);
		}
		CHECK(pid > 0, "fork");
		CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
		OK(cp_spm_start(p));
		CHECK(WIFSIGNALED(status) || (WIFEXITED(status) &&
					      WEXITSTATUS(status) == 0),
		      "point %d: child status 0x%x", point, status);
		enum cp_task_state st = tasks_settled(p, task, false);
		CHECK(st == CP_TASK_FAILED || st == 0,
		      "point %d: task %s", point, cp_task_state_name(st));
		m = vol_md(p, dom, base.img_uuid, leaf.vol_uuid);
		CHECK(m.legality == CP_VOL_LEGAL && m.role == CP_VOL_ROLE_LEAF,
		      "point %d: leaf LEGAL after recovery", point);
		got = content(p, dom, base.img_uuid, leaf.vol_uuid, size);
		CHECK(!memcmp(ref, got, size), "point %d: data intact", point);
		free(got);
		if (WIFEXITED(status))
			break;  /* failed with ENOSPC before the next point */
		points++;
	}
	CHECK(points >= 3, "only %d crash points before the copy", points);

	/* space back: the same merge succeeds */
	CHECK(unlink(filler) == 0, "rm filler");
	OK(cp_vol_merge(p, dom, base.img_uuid, leaf.vol_uuid, NULL, NULL, NULL));
	m = vol_md(p, dom, base.img_uuid, base.vol_uuid);
	CHECK(m.legality == CP_VOL_LEGAL && m.role == CP_VOL_ROLE_LEAF,
	      "base is the leaf after the merge");
	got = content(p, dom, base.img_uuid, base.vol_uuid, size);
	CHECK(!memcmp(ref, got, size), "data after the merge");
	free(got);
	free(ref);
	tasks_settled(p, NULL, false);
	all_legal(p, dom);
	cp_pool_close(p);
	printf("merge: ENOSPC half-way left the layer LEGAL and intact (in "
	       "the call and in recovery after %d crash points); the retry "
	       "succeeded\n", points);
}

static void full(void)
{
	char dom[40], dom2[40], filler[PATH_MAX];
	struct cp_volmeta a, a2, b, c, m;
	struct statvfs v0, v1;
	cp_pool *p;
	int r;

	start(&p, dom, dom2);
	new_volume(p, dom2, NULL, NULL, CP_VOL_FORMAT_COW, 16 * MIB, &c);
	fill(p, dom2, c.img_uuid, c.vol_uuid, 0, 4 * MIB, 5);
	new_volume(p, dom, NULL, NULL, CP_VOL_FORMAT_COW, 16 * MIB, &a);
	fill(p, dom, a.img_uuid, a.vol_uuid, 0, 4 * MIB, 3);
	new_volume(p, dom, a.img_uuid, a.vol_uuid, CP_VOL_FORMAT_COW, 0, &a2);
	fill(p, dom, a.img_uuid, a2.vol_uuid, 0, 4 * MIB, 4);
	new_volume(p, dom, NULL, NULL, CP_VOL_FORMAT_RAW, 4 * MIB, &b);
	struct cp_template_opts to;
	struct cp_volmeta tm;
	cp_template_opts_init(&to);
	to.img_uuid = a.img_uuid;
	OK(cp_template_create(p, dom, &to, NULL, NULL, &tm));
	fill_fs(root, 0, filler);

	/* every kind of create fails for want of space, undone at once:
	 * the task FAILED, every volume LEGAL, the chain as it was */
	char task[40];
	struct cp_vol_create_opts sc;
	cp_vol_create_opts_init(&sc);
	sc.img_uuid = a.img_uuid;
	sc.parent_uuid = a2.vol_uuid;
	sc.task_uuid = task;
	OK(cp_uuid_generate(task));
	r = cp_vol_create(p, dom, &sc, &m);
	CHECK(r == -ENOSPC, "snapshot on a full file system: %d", r);
	CHECK(tasks_settled(p, task, false) == CP_TASK_FAILED, "snapshot FAILED");
	m = vol_md(p, dom, a.img_uuid, a2.vol_uuid);
	CHECK(m.role == CP_VOL_ROLE_LEAF, "the leaf is the leaf again");
	all_legal(p, dom);
	to.task_uuid = task;
	OK(cp_uuid_generate(task));
	r = cp_template_create(p, dom, &to, NULL, NULL, &m);
	CHECK(r == -ENOSPC, "template on a full file system: %d", r);
	CHECK(tasks_settled(p, task, false) == CP_TASK_FAILED, "template FAILED");
	all_legal(p, dom);
	for (int full_clone = 0; full_clone < 2; full_clone++) {
		struct cp_clone_opts cl;
		cp_clone_opts_init(&cl);
		cl.tmpl_img_uuid = tm.img_uuid;
		cl.tmpl_vol_uuid = tm.vol_uuid;
		cl.full = full_clone;
		cl.task_uuid = task;
		OK(cp_uuid_generate(task));
		r = cp_template_clone(p, dom, &cl, NULL, NULL, &m);
		CHECK(r == -ENOSPC, "%s clone on a full file system: %d",
		      full_clone ? "full" : "thin", r);
		CHECK(tasks_settled(p, task, false) == CP_TASK_FAILED, "clone FAILED");
		all_legal(p, dom);
	}

	/* a copy into the full domain: rolled back, nothing left there */
	OK(cp_uuid_generate(task));
	r = cp_img_copy(p, dom2, c.img_uuid, dom, task, NULL, NULL);
	CHECK(r == -ENOSPC, "copy to a full file system: %d", r);
	CHECK(tasks_settled(p, task, false) == CP_TASK_FAILED, "copy FAILED");
	cp_sd *sd;
	struct cp_uuid_str *vols;
	size_t nv;
	OK(cp_pool_domain(p, dom, &sd));
	OK(cp_sd_list_volumes(sd, c.img_uuid, &vols, &nv));
	CHECK(nv == 0, "nothing of the copy left (%zu volumes)", nv);
	free(vols);
	all_legal(p, dom2);

	/* a create fails for want of space and leaves nothing behind */
	struct cp_vol_create_opts co;
	cp_vol_create_opts_init(&co);
	co.capacity = 4 * MIB;
	co.format = CP_VOL_FORMAT_RAW;
	co.allocation = CP_VOL_ALLOC_PREALLOCATED;
	r = cp_vol_create(p, dom, &co, &m);
	CHECK(r == -ENOSPC, "create on a full file system: %d", r);
	tasks_settled(p, NULL, false);
	all_legal(p, dom);

	CHECK(statvfs(root, &v0) == 0, "statvfs");
	OK(cp_vol_delete(p, dom, a.img_uuid, a2.vol_uuid, NULL));
	m = vol_md(p, dom, a.img_uuid, a.vol_uuid);
	CHECK(m.role == CP_VOL_ROLE_LEAF && m.legality == CP_VOL_LEGAL,
	      "parent is the leaf again");
	OK(cp_img_delete(p, dom, b.img_uuid, NULL));
	CHECK(statvfs(root, &v1) == 0, "statvfs");
	CHECK(v1.f_bavail > v0.f_bavail, "space freed (%llu -> %llu blocks)",
	      (unsigned long long)v0.f_bavail, (unsigned long long)v1.f_bavail);
	tasks_settled(p, NULL, false);
	all_legal(p, dom);
	CHECK(unlink(filler) == 0, "rm filler");
	cp_pool_close(p);
	printf("full: deletes on a full domain succeeded\n");
}

static void journal(void)
{
	char dom[40];
	struct cp_volmeta v;
	struct cp_task *t;
	size_t n;
	cp_pool *p;

	start(&p, dom, NULL);
	for (int i = 0; i < 1000; i++) {
		struct cp_vol_create_opts co;
		cp_vol_create_opts_init(&co);
		co.capacity = MIB;
		co.format = CP_VOL_FORMAT_RAW;
		int r = cp_vol_create(p, dom, &co, &v);
		CHECK(r == 0, "create %d: %d", i, r);
		r = cp_img_delete(p, dom, v.img_uuid, NULL);
		CHECK(r == 0, "delete %d: %d", i, r);
	}
	OK(cp_task_list(p, &t, &n));
	CHECK(n == CP_TASK_MAX, "journal holds the last %d tasks: %zu",
	      CP_TASK_MAX, n);
	for (size_t i = 0; i < n; i++)
		CHECK(t[i].state == CP_TASK_DONE, "task %zu %s", i,
		      cp_task_state_name(t[i].state));
	free(t);
	cp_pool_close(p);
	printf("journal: 1000 create + delete rounds succeeded\n");
}

int main(int argc, char **argv)
{
	static const struct pool_scenario scenarios[] = {
		{ "perms", perms },
		{ "confine", confine },
		{ "merge", merge },
		{ "full", full },
		{ "journal", journal },
	};
	const char *gid = NULL;
	const struct pool_opt opts[] = {
		{ "--root", &root },
		{ "--root2", &root2 },
		{ "--disk-gid", &gid },
	};

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_opts(argc, argv, 2, opts, CP_ARRAY_SIZE(opts));
	if (gid)
		disk_gid = (uint32_t)strtoul(gid, NULL, 10);
	if (!root || !root2) {
		fprintf(stderr, "usage: harden_test perms|confine|merge|full|"
			"journal --root DIR --root2 DIR [--disk-gid N]\n");
		return 2;
	}
	return run_scenario(scenarios, CP_ARRAY_SIZE(scenarios),
			    argc > 1 ? argv[1] : "");
}
