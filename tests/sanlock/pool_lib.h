/* Helpers shared by pool_test.c and harden_test.c: the failure macros and
 * writing and reading back a volume's chain through the pool library. */
#ifndef CP_POOL_LIB_H
#define CP_POOL_LIB_H

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

#endif
