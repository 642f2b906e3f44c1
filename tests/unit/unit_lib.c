/* Helpers shared by the unit tests (see unit_lib.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "unit_lib.h"

uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

void fill_random(void *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	uint8_t *p = buf;
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(rng_next(&s) >> 56);
}

void model_init(struct model *m, uint64_t size, const uint8_t *base)
{
	m->size = size;
	m->flushed = calloc(1, size);
	m->cur = calloc(1, size);
	m->alt = calloc(size, MAXV);
	m->nalt = calloc(1, size);
	m->overflow = calloc(1, size);
	assert_non_null(m->flushed);
	assert_non_null(m->cur);
	assert_non_null(m->alt);
	assert_non_null(m->nalt);
	assert_non_null(m->overflow);
	if (base) {
		memcpy(m->flushed, base, size);
		memcpy(m->cur, base, size);
	}
}

void model_free(struct model *m)
{
	free(m->flushed);
	free(m->cur);
	free(m->alt);
	free(m->nalt);
	free(m->overflow);
}

void model_write(struct model *m, uint64_t off, const uint8_t *data,
		 uint64_t len)
{
	for (uint64_t i = 0; i < len; i++) {
		uint64_t o = off + i;
		m->cur[o] = data[i];
		if (m->nalt[o] < MAXV)
			m->alt[o][m->nalt[o]++] = data[i];
		else
			m->overflow[o] = true;
	}
}

void model_flush(struct model *m)
{
	memcpy(m->flushed, m->cur, m->size);
	memset(m->nalt, 0, m->size);
	memset(m->overflow, 0, m->size);
}

int64_t model_verify(const struct model *m, const uint8_t *got, uint64_t size)
{
	for (uint64_t o = 0; o < size; o++) {
		uint8_t v = got[o];
		if (v == m->flushed[o] || m->overflow[o])
			continue;
		bool ok = false;
		for (unsigned k = 0; k < m->nalt[o]; k++)
			ok |= m->alt[o][k] == v;
		if (!ok)
			return (int64_t)o;
	}
	return -1;
}
