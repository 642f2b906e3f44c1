/* tests/integration/helper_lib.c - see helper_lib.h. */
#include "helper_lib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

const char *hl_prog = "helper";

int hl_die(int r)
{
	fprintf(stderr, "%s: errno %d: %s\n", hl_prog, -r, cp_last_error());
	return 1;
}

uint64_t hl_size(const char *what, const char *s)
{
	uint64_t v;
	if (cp_parse_size(s, &v) < 0) {
		fprintf(stderr, "%s: bad %s '%s'\n", hl_prog, what, s);
		exit(2);
	}
	return v;
}

void hl_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t pos)
{
	for (size_t i = 0; i < len; i++) {
		uint64_t p = pos + i;
		uint64_t x = (seed + 1) * 0x9e3779b97f4a7c15ull ^ (p >> 3);
		x ^= x >> 31;
		x *= 0xbf58476d1ce4e5b9ull;
		x ^= x >> 29;
		buf[i] = (uint8_t)(x >> (8 * (p & 7)));
	}
}

void hl_lvm_opts_from_env(struct cp_lvm_opts *lo)
{
	static char *devlist[64];
	cp_lvm_opts_init(lo);
	lo->system_dir = getenv("LVM_SYSTEM_DIR");
	char *devs = getenv("CP_LVM_DEVICES");
	if (devs && *devs) {
		int n = 0;
		for (char *save = NULL, *t = strtok_r(devs, ",", &save);
		     t && n < 63; t = strtok_r(NULL, ",", &save))
			devlist[n++] = t;
		devlist[n] = NULL;
		lo->devices = (const char *const *)devlist;
	}
}
