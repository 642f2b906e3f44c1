/* tests/integration/helper_lib.h - what the C helper programs of the
 * integration tests (lvm_helper.c, blocksd_helper.c, mh_helper.c) share.
 * Not installed, not part of cowpool. */
#ifndef CP_TESTS_HELPER_LIB_H
#define CP_TESTS_HELPER_LIB_H

#include <stddef.h>
#include <stdint.h>

#include "spm.h"

/* The program's name in its messages; main() sets it first. */
extern const char *hl_prog;

/* "<prog>: errno N: <cp_last_error()>" on stderr (r is -errno); returns 1,
 * the exit status. */
int hl_die(int r);
/* s as a size with k/M/G... suffixes; exits 2 with "<prog>: bad <what>
 * 's'" when it is not one. */
uint64_t hl_size(const char *what, const char *s);
/* The test pattern: the byte at absolute position p depends on (seed,
 * p / 8) only, so any slice [pos, pos + len) can be generated on its
 * own. */
void hl_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t pos);
/* cp_lvm_opts_init(lo), then LVM_SYSTEM_DIR (environment) into
 * lo->system_dir and CP_LVM_DEVICES (comma-separated, up to 63) into
 * lo->devices. */
void hl_lvm_opts_from_env(struct cp_lvm_opts *lo);

#endif
