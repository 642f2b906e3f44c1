/* Helpers shared by pool_test.c and harden_test.c: the failure macros,
 * creating a domain, writing and reading back a volume's chain through
 * the pool library, the check that the task journal has settled, and the command line (a
 * scenario, then "--option value" pairs). */
#ifndef CP_POOL_LIB_H
#define CP_POOL_LIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "spm.h"

#define POOL "11111111-2222-3333-4444-555555555555"
#define MIB (1ull << 20)

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, \
				#cond);                                        \
			fprintf(stderr, __VA_ARGS__);                          \
			fprintf(stderr, " (last error: %s)\n", cp_last_error()); \
			exit(1);                                               \
		}                                                              \
	} while (0)
#define OK(expr) CHECK((expr) >= 0, "%s", #expr)

/* Fill [off, off+len) of the volume's chain with bytes of seed. */
void fill(cp_pool *p, const char *dom, const char *img, const char *vol,
	  uint64_t off, uint64_t len, int seed);

/* The whole disk content of a chain (malloc'ed), which must be size bytes. */
char *content(cp_pool *p, const char *dom, const char *img, const char *vol,
	      uint64_t size);

/* Create a domain named "master" or "data2" in p (io_timeout 1, 64 MiB
 * chunks): a file domain under dir, or with lvm_dev (master only) a block
 * domain on that device.  Its UUID goes to uuid_out. */
void create_domain(cp_pool *p, const char *dir, bool master,
		   const char *lvm_dev, char *uuid_out);

/* No task of p RUNNING or RECOVERING (else a failure naming it); with
 * clear, each is cleared from the journal.  Returns the state of the task
 * whose UUID is last (0 when last is NULL or not listed). */
enum cp_task_state tasks_settled(cp_pool *p, const char *last, bool clear);

/* An option of the command line: name ("--root") sets *val. */
struct pool_opt {
	const char *name;
	const char **val;
};

/* Set the options given as "name value" pairs in argv[first..]; others
 * are ignored. */
void parse_opts(int argc, char **argv, int first, const struct pool_opt *o,
		size_t n);

struct pool_scenario {
	const char *name;
	void (*run)(void);
};

/* Run the scenario called name; returns 0, or 2 (after a message) when
 * there is none of that name. */
int run_scenario(const struct pool_scenario *s, size_t n, const char *name);

#endif
