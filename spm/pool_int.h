/* spm/pool_int.h - private: the pool, the task journal and the volume
 * operations share these. */
#ifndef CP_SPM_POOL_INT_H
#define CP_SPM_POOL_INT_H

#include <pthread.h>

#include "sd_int.h"

/* ---- task.c ---- */

#define TJ_SLOT_SIZE 4096u
#define TJ_AREA_SIZE ((uint64_t)CP_TASK_MAX * 2 * TJ_SLOT_SIZE)

struct task_journal {
	cp_bdev *dev;
	pthread_mutex_t lock;
	char dom_uuid[CP_UUID_STR_LEN + 1];
};

int tj_open(cp_sd *master, struct task_journal *tj);
void tj_close(struct task_journal *tj);
/* All tasks in the journal; *bad (may be NULL) counts slots whose both
 * copies are damaged (reported, never guessed). */
int tj_list(struct task_journal *tj, struct cp_task **out, size_t *n,
	    unsigned *bad);
/* Journal a new task (free slot, seq 1). */
int tj_begin(struct task_journal *tj, struct cp_task *t);
/* Write the next copy of t (seq + 1), durable on return. */
int tj_update(struct task_journal *tj, struct cp_task *t);
/* Zero both copies of t's slot. */
int tj_clear(struct task_journal *tj, const struct cp_task *t);
/* Encode/decode one copy (unit tests). */
void tj_encode(const struct cp_task *t, uint8_t *buf);
int tj_decode(const uint8_t *buf, const char *what, struct cp_task *t);

/* ---- pool.c ---- */

/* Crash points for the task-recovery tests: when the environment variable
 * CP_FAULT_SPM_KILL_AT=N is set, the Nth call in this process raises
 * SIGKILL (cowpoold dies as kill -9 would kill it).  Called before every
 * journal write, metadata write and storage command of SPM work. */
void cp_crashpoint(const char *where);

struct cp_pool;
/* Structural work: lock the pool's SPM mutex and check the role; on
 * success the caller holds p's spm lock until pool_end_structural(). */
int pool_begin_structural(struct cp_pool *p);
void pool_end_structural(struct cp_pool *p);
/* The check before each structural write (cp_spm_check + crashpoint). */
int pool_guard(struct cp_pool *p, const char *where);
struct task_journal *pool_journal(struct cp_pool *p);
uint64_t pool_spm_lver(struct cp_pool *p);

/* ---- vol_recover.c (the volume operations: volume_int.h) ---- */

/* Finish or undo one unfinished task (SPM start). */
int vol_recover_task(struct cp_pool *p, struct cp_task *t);

#endif
