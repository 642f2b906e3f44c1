/* Helpers shared by the unit tests (see unit_lib.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
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

void counter_init(struct counter *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->submitter = pthread_self();
}

void counter_destroy(struct counter *c)
{
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
}

void counter_add(struct counter *c)
{
	pthread_mutex_lock(&c->lock);
	c->inflight++;
	pthread_mutex_unlock(&c->lock);
}

void counter_cb(void *opaque, int ret)
{
	struct counter *c = opaque;
	if (c->sync_dev) {
		uint8_t b[512];
		c->sync_ret = cp_bdev_pread(c->sync_dev, b, sizeof(b), 0);
	}
	pthread_mutex_lock(&c->lock);
	if (pthread_equal(pthread_self(), c->submitter))
		c->same_thread++;
	if (ret < 0) {
		if (!c->errors)
			c->first_err = ret;
		c->errors++;
		c->last_err = ret;
	}
	c->inflight--;
	c->done++;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

void counter_wait(struct counter *c, unsigned max)
{
	pthread_mutex_lock(&c->lock);
	while (c->inflight > max)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

void counter_flush_wait(struct counter *c, cp_bdev *dev)
{
	counter_add(c);
	assert_int_equal(cp_bdev_flush_async(dev, counter_cb, c), 0);
	counter_wait(c, 0);
}

void image_check_clean(cp_image *img, const char *what)
{
	struct cp_check_result r;
	assert_int_equal(cp_image_check(img, 0, &r, NULL, NULL), 0);
	if (r.corruptions || r.leaks)
		fail_msg("%s: check: %llu corruptions, %llu leaks", what,
			 (unsigned long long)r.corruptions,
			 (unsigned long long)r.leaks);
	assert_int_equal(cp_image_close(img), 0);
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

void ram_chain_make(struct ram_chain *c, uint64_t keep,
		    struct cp_create_opts *co, uint8_t *base, uint64_t size)
{
	memset(c, 0, sizeof(*c));
	struct cp_ram_opts ro;
	cp_ram_opts_init(&ro);
	ro.max_size = 256ull << 20;
	ro.keep_seed = keep;
	assert_int_equal(cp_bdev_open_ram(&ro, &c->top), 0);
	if (base) {
		assert_int_equal(cp_bdev_open_ram(&ro, &c->base), 0);
		c->base_content = base;
		assert_int_equal(cp_bdev_pwrite(c->base, base, size, 0), 0);
		assert_int_equal(cp_bdev_flush(c->base), 0);
		co->backing_file = "base.img";
		co->backing_format = "raw";
	}
	int r = cp_image_create_dev(c->top, "top.qcow2", co, ram_chain_open_base,
				    c);
	if (r < 0)
		fail_msg("create: %s", cp_last_error());
}

int ram_chain_open_base(void *opaque, const char *name, cp_bdev **out)
{
	struct ram_chain *c = opaque;
	if (strcmp(name, "base.img") || !c->base)
		return cp_error(-ENOENT, "no backing file '%s'", name);
	*out = c->base;
	return 0;
}

void ram_chain_open_opts(struct ram_chain *c, struct cp_open_opts *o,
			 uint64_t l2_size)
{
	cp_open_opts_init(o);
	o->open_backing = ram_chain_open_base;
	o->open_backing_opaque = c;
	o->l2_cache_size = l2_size;
	o->l2_cache_entry_size = 512;
	o->refcount_cache_size = 512;
}

void ram_chain_free(struct ram_chain *c)
{
	cp_bdev_close(c->top);
	cp_bdev_close(c->base);
	free(c->base_content);
}

void cut_sweep_run(const struct cut_sweep *cs)
{
	struct model m;
	cp_bdev *top = cs->make(cs->env, 0, &m);
	uint64_t w0 = cp_ram_write_count(top);
	if (cs->run(cs->env, &m) < 0)
		fail_msg("%s: dry run: %s", cs->name, cp_last_error());
	uint64_t total = cp_ram_write_count(top) - w0;
	{
		/* the uncut result is the final model exactly */
		cp_image *img;
		assert_int_equal(cs->open(cs->env, &img), 0);
		uint8_t *got = malloc(m.size);
		assert_non_null(got);
		assert_int_equal(cp_image_pread(img, got, m.size, 0), 0);
		assert_memory_equal(got, m.cur, m.size);
		free(got);
		assert_int_equal(cs->close(cs->env, img), 0);
	}
	model_free(&m);
	cs->free(cs->env);
	assert_true(total > 0);
	for (uint64_t cut = 0; cut < total; cut++) {
		for (int pass = 0; pass < cs->passes; pass++) {
			uint64_t keep = pass ? (cs->seed * 1000003u + cut) * 7919u + (uint64_t)pass : 0;
			top = cs->make(cs->env, keep, &m);
			uint64_t start = cp_ram_write_count(top);
			assert_int_equal(cp_ram_set_cut_after(top, (int64_t)(start + cut)), 0);
			(void)cs->run(cs->env, &m);
			if (!cp_ram_is_cut(top))
				assert_int_equal(cp_ram_cut(top), 0);
			cs->verify(cs->env, &m, cut, keep);
			model_free(&m);
			cs->free(cs->env);
		}
	}
	printf("# %s: %llu cut points x %d verified\n", cs->name,
	       (unsigned long long)total, cs->passes);
}
