/* tests/unit/test_task_slots.c - the task journal's space (spm/task.c) on a file
 * domain made in a temporary directory (no sanlock needed): the dom_md
 * files are allocated, not sparse; finished tasks' slots are recycled
 * (not those of failed tasks whose undo is unfinished); a journal full of running tasks is -EBUSY with its own
 * message, not the -ENOSPC of a full domain.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common.h"
#include "pool_int.h"

#define POOL "11111111-2222-3333-4444-555555555555"

static const char *const dommd[] = {"ids", "leases", "inbox", "outbox",
				    "tasks"};

struct fx {
	bool made_allocated;           /* every dom_md file, before open */
	char dir[64];
	char dom[CP_UUID_STR_LEN + 1];
	cp_sd *sd;
	struct task_journal tj;
};

/* Every dom_md file fully allocated, mode 0660. */
static bool dommd_allocated(struct fx *f)
{
	for (size_t i = 0; i < CP_ARRAY_SIZE(dommd); i++) {
		char path[256];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s/dom_md/%s", f->dir, f->dom,
			 dommd[i]);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0660);
		if ((uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size) {
			fprintf(stderr, "%s: %lld of %lld bytes allocated\n", path,
				(long long)st.st_blocks * 512,
				(long long)st.st_size);
			return false;
		}
	}
	return true;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct cp_domain_create_opts o;
	struct cp_domain_md md;
	struct cp_sd_loc loc;

	strcpy(f->dir, "/tmp/cp-tj-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	cp_domain_create_opts_init(&o);
	o.root = f->dir;
	o.pool_uuid = POOL;
	o.name = "tj";
	o.master = true;
	assert_int_equal(cp_domain_create(&o, &md), 0);
	strcpy(f->dom, md.dom_uuid);
	f->made_allocated = dommd_allocated(f);
	cp_sd_loc_init(&loc);
	loc.root = f->dir;
	assert_int_equal(cp_sd_open(&loc, f->dom, &f->sd), 0);
	assert_int_equal(tj_open(f->sd, &f->tj), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	tj_close(&f->tj);
	cp_sd_close(f->sd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void new_task(struct cp_task *t, const char *dom)
{
	memset(t, 0, sizeof(*t));
	assert_int_equal(cp_uuid_generate(t->task_uuid), 0);
	strcpy(t->dom_uuid, dom);
	t->type = CP_TASK_CREATE_VOLUME;
	t->state = CP_TASK_RUNNING;
}

/* Every dom_md file of a new domain is allocated (the journal must be
 * writable on a full file system), and opening a domain whose files are
 * sparse (made before) allocates them. */
static void test_allocated(void **state)
{
	struct fx *f = *state;
	struct cp_sd_loc loc;
	cp_sd *sd;

	assert_true(f->made_allocated);
	for (size_t i = 0; i < CP_ARRAY_SIZE(dommd); i++) {
		char path[256];
		snprintf(path, sizeof(path), "%s/%s/dom_md/%s", f->dir, f->dom,
			 dommd[i]);
		int fd = open(path, O_RDWR);
		assert_true(fd >= 0);
		assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE |
					   FALLOC_FL_KEEP_SIZE, 0, 1 << 20), 0);
		close(fd);
	}
	assert_false(dommd_allocated(f));
	cp_sd_loc_init(&loc);
	loc.root = f->dir;
	assert_int_equal(cp_sd_open(&loc, f->dom, &sd), 0);
	assert_true(dommd_allocated(f));
	cp_sd_close(sd);
}

static void test_full_and_recycle(void **state)
{
	struct fx *f = *state;
	static struct cp_task t[CP_TASK_MAX + 2];
	struct cp_task *list;
	size_t n;

	for (int i = 0; i < CP_TASK_MAX; i++) {
		new_task(&t[i], f->dom);
		assert_int_equal(tj_begin(&f->tj, &t[i]), 0);
	}
	/* 128 running tasks: -EBUSY, its own message */
	new_task(&t[CP_TASK_MAX], f->dom);
	assert_int_equal(tj_begin(&f->tj, &t[CP_TASK_MAX]), -EBUSY);
	assert_non_null(strstr(cp_last_error(), "task journal full: 128 tasks "
					       "running"));
	/* a finished task's slot is taken (DONE, then FAILED) */
	t[9].state = CP_TASK_DONE;
	assert_int_equal(tj_update(&f->tj, &t[9]), 0);
	assert_int_equal(tj_begin(&f->tj, &t[CP_TASK_MAX]), 0);
	assert_int_equal(t[CP_TASK_MAX].slot, t[9].slot);
	t[3].state = CP_TASK_FAILED;
	t[3].error = -EIO;
	assert_int_equal(tj_update(&f->tj, &t[3]), 0);
	new_task(&t[CP_TASK_MAX + 1], f->dom);
	assert_int_equal(tj_begin(&f->tj, &t[CP_TASK_MAX + 1]), 0);
	assert_int_equal(t[CP_TASK_MAX + 1].slot, t[3].slot);
	/* a failed task whose undo did not finish is not recycled */
	t[5].state = CP_TASK_FAILED;
	t[5].flags |= TF_UNFINISHED;
	assert_int_equal(tj_update(&f->tj, &t[5]), 0);
	struct cp_task extra;
	new_task(&extra, f->dom);
	assert_int_equal(tj_begin(&f->tj, &extra), -EBUSY);
	/* the journal reads back: 128 tasks, the recycled ones new */
	assert_int_equal(tj_list(&f->tj, &list, &n, NULL), 0);
	assert_int_equal(n, CP_TASK_MAX);
	for (size_t i = 0; i < n; i++) {
		assert_string_not_equal(list[i].task_uuid, t[9].task_uuid);
		assert_string_not_equal(list[i].task_uuid, t[3].task_uuid);
	}
	free(list);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_allocated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_and_recycle, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
