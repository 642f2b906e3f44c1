/* tests/unit/test_lock.c - blockcore's QEMU-compatible image locks.
 *
 * Locks are per open file description, so two devices opened on one file
 * in this process conflict as two processes would: every case here opens
 * the same file twice (or more) and checks what the second open may take.
 * The bytes themselves are checked from a third, plain descriptor with
 * F_OFD_GETLK, against QEMU's layout written out here independently of
 * lock.c (100 + bit: permission held, 200 + bit: permission not shared).
 * The chain policy of qcow (writable top, read-only layers, force share) is
 * checked the same way on a two-layer qcow2 chain.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "blockcore.h"
#include "common.h"
#include "qcow.h"

#define RW_PERM (CP_PERM_CONSISTENT_READ | CP_PERM_WRITE | CP_PERM_RESIZE)
#define RW_SHARED (CP_PERM_CONSISTENT_READ | CP_PERM_WRITE_UNCHANGED)
#define RO_PERM CP_PERM_CONSISTENT_READ

static char dir[64];
static char path[96];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/var/tmp/cp-lock-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/img", dir);
	int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		return -1;
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static cp_bdev *open_dev(const char *p, bool ro)
{
	struct cp_bdev_opts bo;
	cp_bdev_opts_init(&bo);
	bo.readonly = ro;
	bo.aio = CP_AIO_THREADS;
	bo.threads = 1;
	cp_bdev *dev = NULL;
	assert_int_equal(cp_bdev_open(p, &bo, &dev), 0);
	return dev;
}

/* Bitmap of the bytes 0..255 of p that some open has locked, as seen from
 * a fresh descriptor: bit b of locked[b / 64]. */
static void locked_bytes(const char *p, uint64_t locked[4])
{
	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	memset(locked, 0, 4 * sizeof(uint64_t));
	for (int b = 0; b < 256; b++) {
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
				   .l_start = b, .l_len = 1};
		assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
		if (fl.l_type != F_UNLCK)
			locked[b / 64] |= 1ull << (b % 64);
	}
	close(fd);
}

/* The bytes QEMU locks for perm / shared, on a file with nothing else. */
static void expect_bytes(const char *p, unsigned perm, unsigned shared)
{
	uint64_t got[4], want[4] = {0, 0, 0, 0};
	for (int i = 0; i < 4; i++) {
		if (perm & (1u << i))
			want[(100 + i) / 64] |= 1ull << ((100 + i) % 64);
		if (!(shared & (1u << i)))
			want[(200 + i) / 64] |= 1ull << ((200 + i) % 64);
	}
	locked_bytes(p, got);
	for (int i = 0; i < 4; i++)
		assert_int_equal(got[i], want[i]);
}

/* The layout: a writer holds 100, 101, 103 and denies 201, 203 (what
 * qemu-io holds on a qcow2 file it writes); a reader 100 and 201, 203; a
 * force-share reader 100 only; dropping everything leaves nothing. */
static void test_layout(void **state)
{
	(void)state;
	cp_bdev *a = open_dev(path, false);
	expect_bytes(path, 0, CP_PERM_ALL);
	assert_int_equal(cp_bdev_set_perm(a, RW_PERM, RW_SHARED), 0);
	expect_bytes(path, RW_PERM, RW_SHARED);
	unsigned p, s;
	cp_bdev_get_perm(a, &p, &s);
	assert_int_equal(p, RW_PERM);
	assert_int_equal(s, RW_SHARED);
	assert_int_equal(cp_bdev_set_perm(a, RO_PERM, RW_SHARED), 0);
	expect_bytes(path, RO_PERM, RW_SHARED);
	assert_int_equal(cp_bdev_set_perm(a, RO_PERM, CP_PERM_ALL), 0);
	expect_bytes(path, RO_PERM, CP_PERM_ALL);
	assert_int_equal(cp_bdev_set_perm(a, 0, CP_PERM_ALL), 0);
	expect_bytes(path, 0, CP_PERM_ALL);
	assert_int_equal(cp_bdev_set_perm(a, 0x10, CP_PERM_ALL), -EINVAL);
	/* closing drops the locks */
	assert_int_equal(cp_bdev_set_perm(a, RW_PERM, RW_SHARED), 0);
	cp_bdev_close(a);
	expect_bytes(path, 0, CP_PERM_ALL);
}

/* Two writers: the second is refused with QEMU's message, naming this
 * process as the holder, and keeps what it held before. */
static void test_two_writers(void **state)
{
	(void)state;
	cp_bdev *a = open_dev(path, false);
	cp_bdev *b = open_dev(path, false);
	assert_int_equal(cp_bdev_set_perm(a, RW_PERM, RW_SHARED), 0);
	assert_int_equal(cp_bdev_set_perm(b, RW_PERM, RW_SHARED), -EBUSY);
	assert_non_null(strstr(cp_last_error(), "Failed to get \"write\" lock"));
	assert_non_null(strstr(cp_last_error(), path));
	assert_non_null(strstr(cp_last_error(), "another open in this process"));
	unsigned p, s;
	cp_bdev_get_perm(b, &p, &s);
	assert_int_equal(p, 0);
	assert_int_equal(s, CP_PERM_ALL);
	/* b's failed attempt left no byte behind: only a's remain */
	expect_bytes(path, RW_PERM, RW_SHARED);
	/* once a lets go, b gets it */
	assert_int_equal(cp_bdev_set_perm(a, 0, CP_PERM_ALL), 0);
	assert_int_equal(cp_bdev_set_perm(b, RW_PERM, RW_SHARED), 0);
	cp_bdev_close(a);
	cp_bdev_close(b);
}

/* A reader that does not share writing is refused by a writer ("shared"
 * lock), and a writer by such a reader; readers coexist; a force-share
 * reader coexists with a writer. */
static void test_readers(void **state)
{
	(void)state;
	cp_bdev *w = open_dev(path, false);
	cp_bdev *r1 = open_dev(path, true);
	cp_bdev *r2 = open_dev(path, true);
	assert_int_equal(cp_bdev_set_perm(r1, RO_PERM, RW_SHARED), 0);
	assert_int_equal(cp_bdev_set_perm(r2, RO_PERM, RW_SHARED), 0);
	assert_int_equal(cp_bdev_set_perm(w, RW_PERM, RW_SHARED), -EBUSY);
	assert_non_null(strstr(cp_last_error(), "Failed to get \"write\" lock"));
	cp_bdev_close(r1);
	cp_bdev_close(r2);
	assert_int_equal(cp_bdev_set_perm(w, RW_PERM, RW_SHARED), 0);
	r1 = open_dev(path, true);
	assert_int_equal(cp_bdev_set_perm(r1, RO_PERM, RW_SHARED), -EBUSY);
	assert_non_null(strstr(cp_last_error(),
			       "Failed to get shared \"write\" lock"));
	assert_int_equal(cp_bdev_set_perm(r1, RO_PERM, CP_PERM_ALL), 0);
	cp_bdev_close(r1);
	cp_bdev_close(w);
}

/* An upgrade that conflicts keeps the old permissions, bytes included. */
static void test_upgrade_keeps_old(void **state)
{
	(void)state;
	cp_bdev *a = open_dev(path, false);
	cp_bdev *b = open_dev(path, true);
	assert_int_equal(cp_bdev_set_perm(a, RO_PERM, RW_SHARED), 0);
	assert_int_equal(cp_bdev_set_perm(b, RO_PERM, RW_SHARED), 0);
	assert_int_equal(cp_bdev_set_perm(a, RW_PERM, RW_SHARED), -EBUSY);
	unsigned p, s;
	cp_bdev_get_perm(a, &p, &s);
	assert_int_equal(p, RO_PERM);
	assert_int_equal(s, RW_SHARED);
	cp_bdev_close(b);
	expect_bytes(path, RO_PERM, RW_SHARED);
	assert_int_equal(cp_bdev_set_perm(a, RW_PERM, RW_SHARED), 0);
	cp_bdev_close(a);
}

/* A reopen hands its locks to the new open with no gap: while both are
 * open and after the old one closes, a third open is refused. */
static void test_adopt(void **state)
{
	(void)state;
	cp_bdev *old = open_dev(path, true);
	cp_bdev *other = open_dev(path, false);
	assert_int_equal(cp_bdev_set_perm(old, RO_PERM, RW_SHARED), 0);
	/* upgrade on the old open (tests the others), then hand over */
	assert_int_equal(cp_bdev_set_perm(old, RW_PERM, RW_SHARED), 0);
	cp_bdev *nw = open_dev(path, false);
	assert_int_equal(cp_bdev_lock_adopt(nw, old), 0);
	cp_bdev_close(old);
	expect_bytes(path, RW_PERM, RW_SHARED);
	unsigned p, s;
	cp_bdev_get_perm(nw, &p, &s);
	assert_int_equal(p, RW_PERM);
	assert_int_equal(cp_bdev_set_perm(other, RO_PERM, RW_SHARED), -EBUSY);
	cp_bdev_close(nw);
	assert_int_equal(cp_bdev_set_perm(other, RW_PERM, RW_SHARED), 0);
	cp_bdev_close(other);
}

/* RAM devices lock nothing but keep the state. */
static void test_ram(void **state)
{
	(void)state;
	struct cp_ram_opts ro;
	cp_ram_opts_init(&ro);
	ro.initial_size = 1 << 20;
	cp_bdev *a, *b;
	assert_int_equal(cp_bdev_open_ram(&ro, &a), 0);
	assert_int_equal(cp_bdev_open_ram(&ro, &b), 0);
	assert_int_equal(cp_bdev_set_perm(a, RW_PERM, RW_SHARED), 0);
	assert_int_equal(cp_bdev_set_perm(b, RW_PERM, RW_SHARED), 0);
	unsigned p, s;
	cp_bdev_get_perm(a, &p, &s);
	assert_int_equal(p, RW_PERM);
	cp_bdev_close(a);
	cp_bdev_close(b);
}

/* Linear devices lock at their first extent's PV offset: two LVs on one
 * PV do not meet, two opens of one LV do, and the PV's own bytes 100..203
 * stay free. */
static void test_linear(void **state)
{
	(void)state;
	char pv[128];
	snprintf(pv, sizeof(pv), "%s/pv", dir);
	int fd = open(pv, O_CREAT | O_RDWR | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 8 << 20), 0);
	close(fd);
	struct cp_linear_seg s1[] = {{0, 1 << 20, pv, 1 << 20}};
	struct cp_linear_seg s2[] = {{0, 1 << 20, pv, 2 << 20},
				     {1 << 20, 1 << 20, pv, 4 << 20}};
	struct cp_linear_map m1 = {1, s1}, m2 = {2, s2};
	struct cp_bdev_opts bo;
	cp_bdev_opts_init(&bo);
	bo.aio = CP_AIO_THREADS;
	bo.threads = 1;
	cp_bdev *l1, *l1b, *l2;
	assert_int_equal(cp_bdev_open_linear("vg/lv1", &m1, &bo, &l1), 0);
	assert_int_equal(cp_bdev_open_linear("vg/lv1", &m1, &bo, &l1b), 0);
	assert_int_equal(cp_bdev_open_linear("vg/lv2", &m2, &bo, &l2), 0);
	assert_int_equal(cp_bdev_set_perm(l1, RW_PERM, RW_SHARED), 0);
	assert_int_equal(cp_bdev_set_perm(l2, RW_PERM, RW_SHARED), 0);
	assert_int_equal(cp_bdev_set_perm(l1b, RW_PERM, RW_SHARED), -EBUSY);
	assert_non_null(strstr(cp_last_error(), "vg/lv1: Failed to get"));
	expect_bytes(pv, 0, CP_PERM_ALL); /* bytes 0..255 of the PV: free */
	int pfd = open(pv, O_RDONLY);
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
			   .l_start = (2 << 20) + 101, .l_len = 1};
	assert_int_equal(fcntl(pfd, F_OFD_GETLK, &fl), 0);
	assert_int_not_equal(fl.l_type, F_UNLCK);
	close(pfd);
	cp_bdev_close(l1);
	assert_int_equal(cp_bdev_set_perm(l1b, RW_PERM, RW_SHARED), 0);
	cp_bdev_close(l1b);
	cp_bdev_close(l2);
}

/* qcow's policy on a chain base <- top: the writable top and the
 * read-only base lock as qemu-io locks them; a second read-write open of
 * the top is refused; a read-only open of the chain is refused while the
 * top is written but works with force_share; closing releases all. */
static void test_chain_policy(void **state)
{
	(void)state;
	char base[128], top[128];
	snprintf(base, sizeof(base), "%s/base.qcow2", dir);
	snprintf(top, sizeof(top), "%s/top.qcow2", dir);
	struct cp_create_opts co;
	cp_create_opts_init(&co);
	co.virtual_size = 1 << 20;
	assert_int_equal(cp_image_create(base, &co), 0);
	co.backing_file = "base.qcow2";
	co.backing_format = "qcow2";
	assert_int_equal(cp_image_create(top, &co), 0);

	struct cp_open_opts oo;
	cp_open_opts_init(&oo);
	cp_image *a, *b;
	assert_int_equal(cp_image_open(top, &oo, &a), 0);
	expect_bytes(top, RW_PERM, RW_SHARED);
	expect_bytes(base, RO_PERM, RW_SHARED);
	assert_int_equal(cp_image_open(top, &oo, &b), -EBUSY);
	assert_non_null(strstr(cp_last_error(), "Failed to get \"write\" lock"));
	oo.readonly = true;
	assert_int_equal(cp_image_open(top, &oo, &b), -EBUSY);
	assert_non_null(strstr(cp_last_error(),
			       "Failed to get shared \"write\" lock"));
	/* the base alone, read-only, coexists with the chain */
	assert_int_equal(cp_image_open(base, &oo, &b), 0);
	assert_int_equal(cp_image_close(b), 0);
	oo.force_share = true;
	assert_int_equal(cp_image_open(top, &oo, &b), 0);
	assert_int_equal(cp_image_close(b), 0);
	assert_int_equal(cp_image_close(a), 0);
	/* force share leaves a writable top locked, the layers below not */
	oo.readonly = false;
	assert_int_equal(cp_image_open(top, &oo, &a), 0);
	expect_bytes(top, RW_PERM, RW_SHARED);
	expect_bytes(base, RO_PERM, CP_PERM_ALL);
	assert_int_equal(cp_image_close(a), 0);
	expect_bytes(top, 0, CP_PERM_ALL);
	expect_bytes(base, 0, CP_PERM_ALL);

	/* a reopen of the base for writing (commit) upgrades in place */
	oo.force_share = false;
	assert_int_equal(cp_image_open(top, &oo, &a), 0);
	assert_int_equal(cp_image_reopen(cp_image_backing(a), true), 0);
	expect_bytes(base, RW_PERM, RW_SHARED);
	assert_int_equal(cp_image_reopen(cp_image_backing(a), false), 0);
	expect_bytes(base, RO_PERM, RW_SHARED);

	/* a safe rebase opens the new backing file (here the current one)
	 * a second time in this process: two read-only opens coexist */
	struct cp_rebase_opts rbo;
	cp_rebase_opts_init(&rbo);
	rbo.backing = "base.qcow2";
	rbo.backing_format = "qcow2";
	assert_int_equal(cp_image_rebase(a, &rbo), 0);
	expect_bytes(top, RW_PERM, RW_SHARED);
	expect_bytes(base, RO_PERM, RW_SHARED);

	/* commit needs the base writable: refused while another open reads
	 * it, and the chain keeps working; allowed once the reader is gone */
	oo.readonly = true;
	assert_int_equal(cp_image_open(base, &oo, &b), 0);
	struct cp_commit_opts cmo;
	cp_commit_opts_init(&cmo);
	cmo.keep_top = true;
	assert_int_equal(cp_image_commit(a, &cmo), -EBUSY);
	assert_non_null(strstr(cp_last_error(), "base.qcow2: Failed to get \"write\" lock"));
	expect_bytes(base, RO_PERM, RW_SHARED);
	char buf[512];
	assert_int_equal(cp_image_pread(a, buf, sizeof(buf), 0), 0);
	assert_int_equal(cp_image_close(b), 0);
	assert_int_equal(cp_image_commit(a, &cmo), 0);
	assert_int_equal(cp_image_close(a), 0);
	expect_bytes(top, 0, CP_PERM_ALL);
	expect_bytes(base, 0, CP_PERM_ALL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_layout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_two_writers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_upgrade_keeps_old, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_adopt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ram, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_linear, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_chain_policy, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
