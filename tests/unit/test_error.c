/* tests/unit/test_error.c - the per-thread error store (common/error.c).
 *
 * The message is stored with the errno it was written for: cp_error_msg()
 * returns it only for that errno, cp_error_prefix() only prefixes it for
 * that errno, and the outermost public call of a library (CP_API_ENTER)
 * clears it, so a message left by an earlier failure never describes a
 * later one.  Checked on the store alone, on the entry macro with nested
 * calls, and through qcow.h on real image files.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common.h"
#include "qcow.h"

static void test_store(void **state)
{
	(void)state;
	cp_clear_error();
	assert_int_equal(cp_last_errno(), 0);
	assert_string_equal(cp_error_msg(-EIO), strerror(EIO));

	errno = EBADF;
	assert_int_equal(cp_error(-EINVAL, "bad %s", "thing"), -EINVAL);
	assert_int_equal(errno, EBADF);
	assert_int_equal(cp_last_errno(), -EINVAL);
	assert_string_equal(cp_error_msg(-EINVAL), "bad thing");
	/* a message is never reported for another errno */
	assert_string_equal(cp_error_msg(-ENOENT), strerror(ENOENT));
	assert_string_equal(cp_error_msg(0), strerror(0));

	cp_clear_error();
	assert_int_equal(cp_last_errno(), 0);
	assert_string_equal(cp_last_error(), "");
	assert_string_equal(cp_error_msg(-EINVAL), strerror(EINVAL));
}

static void test_prefix(void **state)
{
	(void)state;
	cp_error(-EIO, "inner");
	errno = EBADF;
	assert_int_equal(cp_error_prefix(-EIO, "outer %d", 1), -EIO);
	assert_int_equal(errno, EBADF);
	assert_string_equal(cp_error_msg(-EIO), "outer 1: inner");
	cp_error_prefix(-EIO, "top");
	assert_string_equal(cp_error_msg(-EIO), "top: outer 1: inner");

	/* a stale message of another errno is not prefixed */
	cp_error(-EIO, "stale");
	cp_error_prefix(-ENOENT, "opening x");
	assert_int_equal(cp_last_errno(), -ENOENT);
	char want[256];
	snprintf(want, sizeof(want), "opening x: %s", strerror(ENOENT));
	assert_string_equal(cp_error_msg(-ENOENT), want);
	assert_string_equal(cp_error_msg(-EIO), strerror(EIO));

	/* nothing stored: strerror */
	cp_clear_error();
	cp_error_prefix(-EACCES, "opening y");
	snprintf(want, sizeof(want), "opening y: %s", strerror(EACCES));
	assert_string_equal(cp_error_msg(-EACCES), want);

	/* long messages are cut, not overflowed */
	char big[2000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	cp_error(-E2BIG, "%s", big);
	cp_error_prefix(-E2BIG, "%s", big);
	assert_true(strlen(cp_error_msg(-E2BIG)) < sizeof(big));
	assert_int_equal(strncmp(cp_error_msg(-E2BIG), "aaaa", 4), 0);
}

/* Stand-ins for public functions: fake_inner() fails or succeeds,
 * fake_outer() records a message, then calls fake_inner() as a library
 * does during cleanup, then prefixes its own message. */
static int fake_inner(int ret)
{
	CP_API_ENTER();
	return ret < 0 ? cp_error(ret, "inner failed") : 0;
}

static int fake_outer(void)
{
	CP_API_ENTER();
	int r = cp_error(-ENOSPC, "device full");
	fake_inner(0); /* a nested public call must not clear it */
	return cp_error_prefix(r, "writing");
}

static void test_api_enter(void **state)
{
	(void)state;
	cp_error(-ENOSPC, "stale");
	assert_int_equal(fake_inner(0), 0);
	/* the outermost call cleared the earlier failure */
	assert_int_equal(cp_last_errno(), 0);
	assert_string_equal(cp_error_msg(-ENOSPC), strerror(ENOSPC));

	assert_int_equal(fake_outer(), -ENOSPC);
	assert_string_equal(cp_error_msg(-ENOSPC), "writing: device full");

	/* after a nested call returned, the next outermost call clears */
	assert_int_equal(fake_inner(-EIO), -EIO);
	assert_string_equal(cp_error_msg(-EIO), "inner failed");
	assert_string_equal(cp_error_msg(-ENOSPC), strerror(ENOSPC));
}

/* Through qcow.h: fail, succeed, fail with another errno. */
static void test_qcow_calls(void **state)
{
	(void)state;
	char dir[] = "/var/tmp/cp-error-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[64], missing[64];
	snprintf(path, sizeof(path), "%s/a.qcow2", dir);
	snprintf(missing, sizeof(missing), "%s/missing.qcow2", dir);

	struct cp_create_opts co;
	cp_create_opts_init(&co);
	co.virtual_size = 1 << 20;
	assert_int_equal(cp_image_create(path, &co), 0);

	struct cp_open_opts oo;
	cp_open_opts_init(&oo);
	oo.readonly = true;
	cp_image *img = NULL;
	int r = cp_image_open(missing, &oo, &img);
	assert_int_equal(r, -ENOENT);
	assert_int_equal(cp_last_errno(), -ENOENT);
	assert_non_null(strstr(cp_error_msg(r), "missing.qcow2"));

	/* success: the ENOENT message is gone */
	assert_int_equal(cp_image_open(path, &oo, &img), 0);
	assert_int_equal(cp_last_errno(), 0);
	assert_string_equal(cp_error_msg(-ENOENT), strerror(ENOENT));

	/* a message stored by the caller does not survive a library call */
	cp_error(-EROFS, "stale");
	uint8_t buf[512];
	assert_int_equal(cp_image_pread(img, buf, sizeof(buf), 0), 0);
	assert_string_equal(cp_error_msg(-EROFS), strerror(EROFS));

	/* another failure, another errno: its own message only */
	r = cp_image_resize(img, 2 << 20, false, CP_PREALLOC_OFF);
	assert_int_equal(r, -EROFS);
	assert_non_null(strstr(cp_error_msg(r), "read-only"));
	assert_null(strstr(cp_error_msg(r), "stale"));
	assert_string_equal(cp_error_msg(-ENOENT), strerror(ENOENT));

	assert_int_equal(cp_image_close(img), 0);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_store),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_api_enter),
		cmocka_unit_test(test_qcow_calls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
