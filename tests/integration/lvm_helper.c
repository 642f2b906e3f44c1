/* tests/integration/lvm_helper.c - drives spm/lvm.c and the linear device
 * for tests/integration/lvm.sh (not installed, not part of cowpool).
 *
 *   cp_lvm_helper vg-create VG DEV[,DEV...] [TAG...]
 *   cp_lvm_helper vg-extend VG DEV
 *   cp_lvm_helper vg-tags VG [+ADD|-DEL]...
 *   cp_lvm_helper vg-info VG                  extent size, size, free, tags
 *   cp_lvm_helper lv-create VG LV SIZE [TAG...]
 *   cp_lvm_helper lv-extend VG LV SIZE        prints the new size
 *   cp_lvm_helper lv-reduce VG LV SIZE        prints the new size
 *   cp_lvm_helper lv-remove VG LV
 *   cp_lvm_helper lv-tags VG LV [+ADD|-DEL]...
 *   cp_lvm_helper lv-list VG                  "name size tag,tag" lines
 *   cp_lvm_helper map VG LV                   "lv_offset length pv pv_offset"
 *   cp_lvm_helper pattern SEED LEN            the pattern bytes to stdout
 *   cp_lvm_helper write VG LV SEED            fill the LV with the pattern
 *   cp_lvm_helper verify VG LV SEED           compare the LV with it
 *   cp_lvm_helper dump VG LV FILE             copy the LV to FILE
 *   cp_lvm_helper qcow-create VG LV VSIZE
 *   cp_lvm_helper qcow-grow VG LV SEED -- CMD...
 *       write 1 MiB chunks (chunk i at guest offset i * 4 MiB) until the
 *       LV is full (-ENOSPC), run CMD (the SPM's lvextend), refresh the
 *       open device, rewrite the failed chunk and 4 more past the old end;
 *       prints "chunks N"
 *   cp_lvm_helper qcow-verify VG LV SEED N    read back chunks 0..N-1
 *   cp_lvm_helper qcow-check VG LV            no corruption, no leak
 *
 * LVM_SYSTEM_DIR (environment) goes to cp_lvm_opts.system_dir and
 * CP_LVM_DEVICES (comma-separated) to cp_lvm_opts.devices.  SIZE accepts
 * k/M/G suffixes.  Exit 0 on success, 1 with "cp_lvm_helper: errno N:
 * message" on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blockcore.h"
#include "common.h"
#include "qcow.h"
#include "spm.h"

#include "helper_lib.h"

#define MiB (1024ull * 1024)
#define CHUNK MiB
#define STRIDE (4 * MiB)

static struct cp_lvm_opts lo;

static uint64_t size_arg(const char *s)
{
	return hl_size("size", s);
}

/* Split "+a -b" arguments into add/del lists. */
static void tag_lists(char **argv, int argc, const char **add, const char **del)
{
	int na = 0, nd = 0;
	for (int i = 0; i < argc && i < 30; i++) {
		if (argv[i][0] == '-')
			del[nd++] = argv[i] + 1;
		else
			add[na++] = argv[i][0] == '+' ? argv[i] + 1 : argv[i];
	}
	add[na] = NULL;
	del[nd] = NULL;
}

static void print_tags(char **tags)
{
	for (size_t i = 0; tags[i]; i++)
		printf("%s%s", i ? "," : "", tags[i]);
	printf("\n");
}

static int open_lv(const char *vg, const char *lv, cp_bdev **dev)
{
	struct cp_bdev_opts bo;
	cp_bdev_opts_init(&bo);
	bo.cache = CP_CACHE_NONE;
	return cp_lvm_open_lv(&lo, vg, lv, &bo, dev);
}

/* The LV VG/LV and the qcow2 image on it (named "VG/LV"); check: opened
 * for cp_image_check(). */
static int open_lv_img(const char *vg, const char *lv, bool check,
		       cp_bdev **dev, cp_image **img)
{
	char name[300];
	struct cp_open_opts o;
	snprintf(name, sizeof(name), "%s/%s", vg, lv);
	int r = open_lv(vg, lv, dev);
	if (r < 0)
		return r;
	cp_open_opts_init(&o);
	o.for_check = check;
	r = cp_image_open_dev(*dev, name, &o, img);
	if (r < 0)
		cp_bdev_close(*dev);
	return r;
}

static int cmd_rw(const char *vg, const char *lv, uint64_t seed, bool write)
{
	cp_bdev *dev;
	int r = open_lv(vg, lv, &dev);
	if (r < 0)
		return hl_die(r);
	uint64_t size = cp_bdev_size(dev);
	uint8_t *buf = cp_bdev_alloc_buf(4 * MiB), *exp = malloc(4 * MiB);
	for (uint64_t off = 0; off < size && r == 0; off += 4 * MiB) {
		size_t n = (size_t)CP_MIN(4 * MiB, size - off);
		hl_fill(exp, n, seed, off);
		if (write) {
			memcpy(buf, exp, n);
			r = cp_bdev_pwrite(dev, buf, n, off);
		} else {
			r = cp_bdev_pread(dev, buf, n, off);
			if (r == 0 && memcmp(buf, exp, n)) {
				size_t k = 0;
				while (buf[k] == exp[k])
					k++;
				r = cp_error(-EIO, "%s/%s: differs at %" PRIu64,
					     vg, lv, off + k);
			}
		}
	}
	if (r == 0 && write)
		r = cp_bdev_flush(dev);
	cp_bdev_close(dev);
	cp_bdev_free_buf(buf);
	free(exp);
	return r < 0 ? hl_die(r) : 0;
}

static int cmd_dump(const char *vg, const char *lv, const char *path)
{
	cp_bdev *dev;
	int r = open_lv(vg, lv, &dev);
	if (r < 0)
		return hl_die(r);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	uint64_t size = cp_bdev_size(dev);
	uint8_t *buf = cp_bdev_alloc_buf(4 * MiB);
	for (uint64_t off = 0; off < size && r == 0 && fd >= 0;
	     off += 4 * MiB) {
		size_t n = (size_t)CP_MIN(4 * MiB, size - off);
		r = cp_bdev_pread(dev, buf, n, off);
		if (r == 0 && pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
			r = cp_error(-errno, "%s: write failed", path);
	}
	if (fd < 0)
		r = cp_error(-errno, "%s: cannot create", path);
	else
		close(fd);
	cp_bdev_close(dev);
	cp_bdev_free_buf(buf);
	return r < 0 ? hl_die(r) : 0;
}

static int run_cmd(char **argv)
{
	pid_t pid = fork();
	if (pid == 0) {
		execvp(argv[0], argv);
		_exit(127);
	}
	int st;
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return cp_error(-errno, "cannot run %s", argv[0]);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		return cp_error(-EIO, "%s failed (status %d)", argv[0],
				WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}

static int chunk_write(cp_image *img, uint8_t *buf, uint64_t seed, int i)
{
	hl_fill(buf, CHUNK, seed, (uint64_t)i * STRIDE);
	return cp_image_pwrite(img, buf, CHUNK, (uint64_t)i * STRIDE);
}

static int cmd_qcow_grow(const char *vg, const char *lv, uint64_t seed,
			 char **cmd)
{
	cp_bdev *dev;
	cp_image *img;
	int r = open_lv_img(vg, lv, false, &dev, &img);
	if (r < 0)
		return hl_die(r);
	uint64_t old_size = cp_bdev_size(dev);
	uint8_t *buf = malloc(CHUNK);
	int i;
	for (i = 0; i < 1000; i++) {
		r = chunk_write(img, buf, seed, i);
		if (r < 0)
			break;
	}
	if (r != -ENOSPC) {
		fprintf(stderr, "expected ENOSPC, got %d after %d chunks\n", r,
			i);
		return hl_die(r < 0 ? r : -EIO);
	}
	printf("enospc at chunk %d: %s\n", i, cp_last_error());
	r = run_cmd(cmd);
	if (r == 0)
		r = cp_lvm_refresh_lv(&lo, vg, lv, dev);
	if (r < 0)
		return hl_die(r);
	printf("size %" PRIu64 " -> %" PRIu64 "\n", old_size,
	       cp_bdev_size(dev));
	int n = i + 5;
	for (; i < n && r == 0; i++)
		r = chunk_write(img, buf, seed, i);
	if (r < 0)
		return hl_die(r);
	r = cp_image_close(img);
	if (r < 0)
		return hl_die(r);
	cp_bdev_close(dev);
	free(buf);
	printf("chunks %d\n", n);
	return 0;
}

static int cmd_qcow_verify(const char *vg, const char *lv, uint64_t seed, int n)
{
	cp_bdev *dev;
	cp_image *img;
	int r = open_lv_img(vg, lv, false, &dev, &img);
	if (r < 0)
		return hl_die(r);
	uint8_t *buf = malloc(CHUNK), *exp = malloc(CHUNK);
	for (int i = 0; i < n && r == 0; i++) {
		hl_fill(exp, CHUNK, seed, (uint64_t)i * STRIDE);
		r = cp_image_pread(img, buf, CHUNK, (uint64_t)i * STRIDE);
		if (r == 0 && memcmp(buf, exp, CHUNK))
			r = cp_error(-EIO, "chunk %d differs", i);
	}
	int e = cp_image_close(img);
	cp_bdev_close(dev);
	free(buf);
	free(exp);
	if (r == 0)
		r = e;
	return r < 0 ? hl_die(r) : 0;
}

static void report(void *opaque, const char *msg)
{
	printf("%s\n", msg);
}

static int cmd_qcow_check(const char *vg, const char *lv)
{
	cp_bdev *dev;
	cp_image *img;
	struct cp_check_result res;
	int r = open_lv_img(vg, lv, true, &dev, &img);
	if (r < 0)
		return hl_die(r);
	memset(&res, 0, sizeof(res));
	r = cp_image_check(img, 0, &res, report, NULL);
	cp_image_close(img);
	cp_bdev_close(dev);
	if (r < 0)
		return hl_die(r);
	printf("corruptions %" PRIu64 " leaks %" PRIu64 " errors %" PRIu64
	       " image_end %" PRIu64 "\n",
	       res.corruptions, res.leaks, res.check_errors,
	       res.image_end_offset);
	return res.corruptions || res.leaks || res.check_errors;
}

int main(int argc, char **argv)
{
	hl_prog = "cp_lvm_helper";
	hl_lvm_opts_from_env(&lo);
	if (argc < 3) {
		fprintf(stderr, "usage: see tests/integration/lvm_helper.c\n");
		return 2;
	}
	const char *c = argv[1], *vg = argv[2];
	const char *add[32], *del[32];
	int r;

	if (!strcmp(c, "vg-create") && argc >= 4) {
		const char *dv[16];
		int n = 0;
		for (char *save = NULL, *t = strtok_r(argv[3], ",", &save);
		     t && n < 15; t = strtok_r(NULL, ",", &save))
			dv[n++] = t;
		dv[n] = NULL;
		tag_lists(argv + 4, argc - 4, add, del);
		r = cp_lvm_vg_create(&lo, vg, dv, add, 4 * MiB);
		return r < 0 ? hl_die(r) : 0;
	}
	if (!strcmp(c, "vg-extend") && argc == 4) {
		r = cp_lvm_vg_extend(&lo, vg, argv[3]);
		return r < 0 ? hl_die(r) : 0;
	}
	if (!strcmp(c, "vg-tags")) {
		tag_lists(argv + 3, argc - 3, add, del);
		r = cp_lvm_vg_change_tags(&lo, vg, add, del);
		return r < 0 ? hl_die(r) : 0;
	}
	if (!strcmp(c, "vg-info")) {
		struct cp_lvm_vg_info vi;
		r = cp_lvm_vg_info(&lo, vg, &vi);
		if (r < 0)
			return hl_die(r);
		printf("%" PRIu64 " %" PRIu64 " %" PRIu64 " ", vi.extent_size,
		       vi.size, vi.free);
		print_tags(vi.tags);
		cp_lvm_vg_info_clear(&vi);
		return 0;
	}
	if (!strcmp(c, "lv-list")) {
		struct cp_lvm_lv_info *lvs;
		size_t n;
		r = cp_lvm_lv_list(&lo, vg, &lvs, &n);
		if (r < 0)
			return hl_die(r);
		for (size_t i = 0; i < n; i++) {
			printf("%s %" PRIu64 " ", lvs[i].name, lvs[i].size);
			print_tags(lvs[i].tags);
		}
		cp_lvm_lv_list_free(lvs, n);
		return 0;
	}
	if (!strcmp(c, "pattern") && argc == 4) {
		uint64_t seed = strtoull(argv[2], NULL, 0);
		uint64_t len = size_arg(argv[3]);
		uint8_t *buf = malloc(MiB);
		for (uint64_t off = 0; off < len; off += MiB) {
			size_t n = (size_t)CP_MIN(MiB, len - off);
			hl_fill(buf, n, seed, off);
			fwrite(buf, 1, n, stdout);
		}
		free(buf);
		return 0;
	}
	if (argc < 4) {
		fprintf(stderr, "cp_lvm_helper: %s: missing arguments\n", c);
		return 2;
	}
	const char *lv = argv[3];
	if (!strcmp(c, "lv-create") && argc >= 5) {
		tag_lists(argv + 5, argc - 5, add, del);
		r = cp_lvm_lv_create(&lo, vg, lv, size_arg(argv[4]), add);
		return r < 0 ? hl_die(r) : 0;
	}
	if ((!strcmp(c, "lv-extend") || !strcmp(c, "lv-reduce")) && argc == 5) {
		uint64_t ns;
		r = c[3] == 'e'
			? cp_lvm_lv_extend(&lo, vg, lv, size_arg(argv[4]), &ns)
			: cp_lvm_lv_reduce(&lo, vg, lv, size_arg(argv[4]), &ns);
		if (r < 0)
			return hl_die(r);
		printf("%" PRIu64 "\n", ns);
		return 0;
	}
	if (!strcmp(c, "lv-remove")) {
		r = cp_lvm_lv_remove(&lo, vg, lv);
		return r < 0 ? hl_die(r) : 0;
	}
	if (!strcmp(c, "lv-tags")) {
		tag_lists(argv + 4, argc - 4, add, del);
		r = cp_lvm_lv_change_tags(&lo, vg, lv, add, del);
		return r < 0 ? hl_die(r) : 0;
	}
	if (!strcmp(c, "map")) {
		struct cp_linear_map m;
		r = cp_lvm_lv_map(&lo, vg, lv, &m);
		if (r < 0)
			return hl_die(r);
		for (size_t i = 0; i < m.nsegs; i++)
			printf("%" PRIu64 " %" PRIu64 " %s %" PRIu64 "\n",
			       m.segs[i].lv_offset, m.segs[i].length,
			       m.segs[i].pv_path, m.segs[i].pv_offset);
		cp_lvm_map_free(&m);
		return 0;
	}
	if (!strcmp(c, "write") || !strcmp(c, "verify"))
		return argc == 5 ? cmd_rw(vg, lv, strtoull(argv[4], NULL, 0),
					  c[0] == 'w')
				 : 2;
	if (!strcmp(c, "dump") && argc == 5)
		return cmd_dump(vg, lv, argv[4]);
	if (!strcmp(c, "qcow-create") && argc == 5) {
		cp_bdev *dev;
		struct cp_create_opts co;
		char name[300];
		snprintf(name, sizeof(name), "%s/%s", vg, lv);
		cp_create_opts_init(&co);
		co.virtual_size = size_arg(argv[4]);
		r = open_lv(vg, lv, &dev);
		if (r < 0)
			return hl_die(r);
		r = cp_image_create_dev(dev, name, &co, NULL, NULL);
		cp_bdev_close(dev);
		return r < 0 ? hl_die(r) : 0;
	}
	if (!strcmp(c, "qcow-grow") && argc >= 7 && !strcmp(argv[5], "--"))
		return cmd_qcow_grow(vg, lv, strtoull(argv[4], NULL, 0),
				     argv + 6);
	if (!strcmp(c, "qcow-verify") && argc == 6)
		return cmd_qcow_verify(vg, lv, strtoull(argv[4], NULL, 0),
				       atoi(argv[5]));
	if (!strcmp(c, "qcow-check"))
		return cmd_qcow_check(vg, lv);
	fprintf(stderr, "cp_lvm_helper: unknown command %s\n", c);
	return 2;
}
