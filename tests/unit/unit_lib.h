/* Helpers shared by the unit tests: a seeded RNG, a counter of
 * asynchronous requests, the crash model, an image chain on RAM devices
 * and the power-cut sweep that uses them.
 *
 * The crash model remembers, for each byte of a device, its content at
 * the last completed flush and the values written to it since: after a
 * power cut, a byte may read back as any of them (and anything at all
 * once more than UNIT_MAXV values were written). */
#ifndef CP_UNIT_LIB_H
#define CP_UNIT_LIB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockcore.h"
#include "qcow.h"

/* xorshift64: deterministic, so a failing seed can be replayed. */
uint64_t rng_next(uint64_t *s);

/* Fill buf with bytes derived from seed. */
void fill_random(void *buf, size_t len, uint64_t seed);

/* Requests in flight: counter_add() before each submission, counter_cb
 * (opaque: the counter) as its callback, counter_wait() for the
 * completions. */
struct counter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned inflight, done, errors;
	int first_err, last_err;
	pthread_t submitter;   /* the thread that ran counter_init() */
	unsigned same_thread;  /* callbacks that ran on the submitter */
	/* set: each callback first makes a synchronous read of this device
	 * (which a completion thread must refuse) and leaves its result in
	 * sync_ret */
	cp_bdev *sync_dev;
	int sync_ret;
};

void counter_init(struct counter *c);
void counter_destroy(struct counter *c);
void counter_add(struct counter *c);
void counter_cb(void *opaque, int ret);
/* Wait until at most max requests are in flight. */
void counter_wait(struct counter *c, unsigned max);
/* A flush of dev behind the requests in flight, counted too, then wait
 * for all of them. */
void counter_flush_wait(struct counter *c, cp_bdev *dev);

/* img (opened for check) checks with neither corruption nor leak;
 * then it is closed.  what names it in a failure. */
void image_check_clean(cp_image *img, const char *what);

#define MAXV 8 /* versions of a byte remembered after the last flush */

struct model {
	uint64_t size;
	uint8_t *flushed;  /* content at the last completed flush */
	uint8_t *cur;      /* content now */
	uint8_t (*alt)[MAXV]; /* values written since the last flush */
	uint8_t *nalt;
	bool *overflow;    /* more than MAXV versions: accept anything */
};

/* base (size bytes) is the content before the first write; NULL: zeros. */
void model_init(struct model *m, uint64_t size, const uint8_t *base);
void model_free(struct model *m);
void model_write(struct model *m, uint64_t off, const uint8_t *data,
		 uint64_t len);
void model_flush(struct model *m);
/* Returns the first of size offsets whose content got[] is impossible,
 * or -1. */
int64_t model_verify(const struct model *m, const uint8_t *got, uint64_t size);

/* An image chain on RAM devices for the power-cut tests: top.qcow2 on
 * top, optionally over a raw base.img on base. */
struct ram_chain {
	cp_bdev *top, *base;
	uint8_t *base_content; /* what base.img holds (NULL: no base) */
};

/* A fresh chain: top a RAM device with keep_seed keep (0: a cut drops
 * every unflushed write) and top.qcow2 created on it with co; with base
 * (size bytes, malloc'd, the chain takes it) first a RAM base.img holding
 * it, named in co as top's backing file. */
void ram_chain_make(struct ram_chain *c, uint64_t keep,
		    struct cp_create_opts *co, uint8_t *base, uint64_t size);
/* The backing hook (opaque: the chain): base.img is c->base. */
int ram_chain_open_base(void *opaque, const char *name, cp_bdev **out);
/* Open options for top.qcow2: the backing hook, and small caches (l2_size
 * bytes of 512-byte L2 slices, one 512-byte refcount block) so that
 * metadata is written back between flushes. */
void ram_chain_open_opts(struct ram_chain *c, struct cp_open_opts *o,
			 uint64_t l2_size);
void ram_chain_free(struct ram_chain *c);

/* A power-cut sweep over a scenario on a RAM device.  A dry run counts the
 * device writes the scenario's operations cause (and its result must be
 * the model exactly); then, for each of those writes and each of `passes`
 * passes, a fresh environment runs the operations with the power cut just
 * before that write and `verify` judges what survived.  Pass 0 drops every
 * unflushed write, the others keep a subset seeded by `seed`, the cut and
 * the pass (the RAM device's keep_seed). */
struct cut_sweep {
	const char *name;
	uint64_t seed;
	int passes;
	void *env; /* the test's environment, handed to every callback */
	/* a fresh environment whose RAM device has this keep_seed; fills the
	 * model with the content before the operations; returns the device
	 * the power cut applies to */
	cp_bdev *(*make)(void *env, uint64_t keep, struct model *m);
	/* the scenario's operations, recorded in the model; returns 0 or the
	 * first error (after a cut) */
	int (*run)(void *env, struct model *m);
	int (*open)(void *env, cp_image **img);
	int (*close)(void *env, cp_image *img);
	/* after a cut: the device is cut, not yet restarted */
	void (*verify)(void *env, struct model *m, uint64_t cut, uint64_t keep);
	void (*free)(void *env);
};

void cut_sweep_run(const struct cut_sweep *cs);

#endif
