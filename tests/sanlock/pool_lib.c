/* Helpers shared by pool_test.c and harden_test.c (see pool_lib.h). */
#include <inttypes.h>
#include <stdlib.h>

#include "pool_lib.h"

void fill(cp_pool *p, const char *dom, const char *img, const char *vol,
	  uint64_t off, uint64_t len, int seed)
{
	struct cp_sd_chain c;
	cp_sd *sd;
	char *buf = malloc(len);

	for (uint64_t i = 0; i < len; i++)
		buf[i] = (char)(seed + (int)((off + i) / 4096));
	OK(cp_pool_domain(p, dom, &sd));
	OK(cp_sd_open_image(sd, img, vol, true, &c));
	OK(cp_image_pwrite(c.img, buf, len, off));
	OK(cp_sd_close_image(&c));
	free(buf);
}

char *content(cp_pool *p, const char *dom, const char *img, const char *vol,
	      uint64_t size)
{
	struct cp_sd_chain c;
	cp_sd *sd;
	char *buf = malloc(size);

	OK(cp_pool_domain(p, dom, &sd));
	OK(cp_sd_open_image(sd, img, vol, false, &c));
	CHECK(cp_image_size(c.img) == size, "size %" PRIu64, cp_image_size(c.img));
	OK(cp_image_pread(c.img, buf, size, 0));
	OK(cp_sd_close_image(&c));
	return buf;
}
