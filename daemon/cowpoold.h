/* daemon/cowpoold.h - private header of cowpoold, the host storage daemon.
 *
 * cowpoold is a thin server over spm.h: one cp_pool per host, a JSON-RPC 2.0
 * API on a unix socket, a monitor thread, and worker threads that run the
 * long SPM calls as tasks.  It holds no storage logic of its own.
 *
 * Threads (see daemon/README.md):
 *   main       parses the configuration, opens the pool, starts the others,
 *              then waits for SIGTERM/SIGINT (sigwait) and shuts down
 *   join       cp_pool_join() once at start-up (the API answers meanwhile)
 *   monitor    cp_pool_monitor() every monitor_interval seconds; polls the
 *              pool's sanlock client fd to see lease loss at once
 *   accept     accepts connections, one thread per connection
 *   connection reads newline-delimited requests, answers them in order
 *   worker     one per running task (volume.create, image.copy, ...)
 * Every signal is blocked in every thread but main.
 *
 * One section per .c file.
 */
#ifndef CP_COWPOOLD_H
#define CP_COWPOOLD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "json.h"
#include "jsonw.h"
#include "spm.h"

/* ---- log.c: one sink, stderr with timestamps ------------------------------ */

enum dmn_log_level {
	DMN_LOG_ERROR = 0,
	DMN_LOG_WARN = 1,
	DMN_LOG_INFO = 2,
	DMN_LOG_DEBUG = 3,
};
/* "error", "warn"/"warning", "info", "debug" -> level; -EINVAL otherwise. */
int dmn_log_parse_level(const char *s);
void dmn_log_set_level(enum dmn_log_level l);
bool dmn_log_enabled(enum dmn_log_level l);
/* "2026-11-22 10:00:00.123 cowpoold[pid] LEVEL: message\n" on stderr, one
 * write(2) per line.  Preserves errno.  Any thread. */
void dmn_log(enum dmn_log_level l, const char *fmt, ...) CP_PRINTF(2, 3);
#define dmn_err(...) dmn_log(DMN_LOG_ERROR, __VA_ARGS__)
#define dmn_warn(...) dmn_log(DMN_LOG_WARN, __VA_ARGS__)
#define dmn_info(...) dmn_log(DMN_LOG_INFO, __VA_ARGS__)
#define dmn_debug(...)                                                         \
	do {                                                                   \
		if (dmn_log_enabled(DMN_LOG_DEBUG))                            \
			dmn_log(DMN_LOG_DEBUG, __VA_ARGS__);                   \
	} while (0)

/* ---- config.c: defaults < config file < command line ---------------------- */

#define DMN_MAX_LIST 64 /* file_root / lvm_device entries */

struct dmn_config {
	uint64_t host_id;              /* 1..2000, required */
	char *socket;                  /* unix socket path */
	char *file_roots[DMN_MAX_LIST + 1];  /* NULL-terminated */
	char *lvm_devices[DMN_MAX_LIST + 1]; /* NULL-terminated */
	char *lvm_system_dir;          /* NULL = LVM's default */
	char *pool;                    /* pool UUID or NULL */
	unsigned monitor_interval;     /* seconds, >= 1, default 10 */
	bool sanlock;                  /* default true */
	enum dmn_log_level log_level;  /* default info */
	int ready_fd;                  /* -1, or "ready\n" is written there */
};

/* Parse argv (cowpoold's flags) and the config file they name into cfg.
 * Returns 0, 1 when the process should exit 0 at once (--help,
 * --version), or -EINVAL after printing the error ("cowpoold: FILE:LINE:
 * unknown key 'x'", "cowpoold: --host-id: ...") to stderr. */
int dmn_config_load(struct dmn_config *cfg, int argc, char **argv);
void dmn_config_free(struct dmn_config *cfg);

/* ---- records.c: records as JSON (leaf: uses no other daemon file) ------- */

/* "EPERM" for 1 (positive errno); "E<n>" when unknown. */
const char *dmn_errno_name(int e);
const char *dmn_domain_type_name(enum cp_domain_type t); /* "file" */
void dmn_json_domain_md(struct cp_jsonw *w, const char *key,
			const struct cp_domain_md *md);
/* The record's members plus stats, readable, joined, renewal... */
void dmn_json_domain_status(struct cp_jsonw *w,
			    const struct cp_domain_status *s);
/* sz may be NULL (no sizes). */
void dmn_json_volmeta(struct cp_jsonw *w, const char *key,
		      const struct cp_volmeta *m, const struct cp_vol_size *sz);
void dmn_json_spm_status(struct cp_jsonw *w, const struct cp_spm_status *s);
/* Journal record -> JSON object members (no braces). */
void dmn_json_journal_task(struct cp_jsonw *w, const struct cp_task *t);

/* ---- params.c: a call and the check of its params ----------------------- */

/* One call being answered. */
struct dmn_call {
	struct dmn *d;
	const char *method;
	const cp_json *params;         /* an object (empty when absent) */
	struct cp_jsonw *res;          /* the handler writes one value */
	/* JSON-RPC level error (set with dmn_call_error, returned as
	 * DMN_RPC_ERROR by handlers) */
	int rpc_code;
	char rpc_msg[512];
	char rpc_param[64];            /* the param named, for error.data */
};
#define DMN_RPC_ERROR 1

/* JSON-RPC 2.0 codes */
#define DMN_EPARSE -32700
#define DMN_EINVALID_REQUEST -32600
#define DMN_ENO_METHOD -32601
#define DMN_EINVALID_PARAMS -32602
#define DMN_EINTERNAL -32603
#define DMN_EAPP_BASE 1000             /* + errno */

int dmn_call_error(struct dmn_call *c, int code, const char *param,
		   const char *fmt, ...) CP_PRINTF(4, 5);

/* A handler's spec of its params: each checked value goes to out. */
enum dmn_ptype {
	P_STR,   /* out: const char ** (borrowed from the request) */
	P_UUID,  /* out: char[DMN_UUID_BUF], lower-cased; "" when absent */
	P_SIZE,  /* out: uint64_t *; integer or "1G" */
	P_U64,   /* out: uint64_t *; integer <= max (when max) */
	P_BOOL,  /* out: bool * */
	P_NUM,   /* out: double * */
	P_ENUM,  /* out: int * index into choices (NULL-terminated) */
	P_STRV,  /* out: const char *** NULL-terminated, caller frees */
};

struct dmn_param {
	const char *name;
	enum dmn_ptype type;
	bool required;
	void *out;
	bool *given;                   /* may be NULL */
	const char *const *choices;    /* P_ENUM */
	uint64_t max;                  /* P_U64: 0 = UINT64_MAX */
};

/* Check c->params against spec: unknown names, missing required ones,
 * types and values.  0, DMN_RPC_ERROR (-32602 set) or -ENOMEM.  On error
 * nothing allocated is left behind except what earlier P_STRV entries
 * stored (free them: they are NULL-init). */
int dmn_params_parse(struct dmn_call *c, const struct dmn_param *spec,
		     size_t n);

/* ---- tasks.c: the daemon's tasks ------------------------------------------ */

/* What a worker runs: one of the long structural calls with its
 * parameters copied out of the request. */
enum dmn_job_type {
	DMN_JOB_VOL_CREATE,
	DMN_JOB_VOL_DELETE,
	DMN_JOB_VOL_MERGE,
	DMN_JOB_IMG_DELETE,
	DMN_JOB_IMG_COPY,
	DMN_JOB_TEMPLATE_CREATE,
	DMN_JOB_TEMPLATE_CLONE,
};

#define DMN_UUID_BUF (CP_UUID_STR_LEN + 1)

struct dmn_job {
	enum dmn_job_type type;
	const char *method;            /* "volume.create": the method table's
					* string (static) */
	char dom[DMN_UUID_BUF], img[DMN_UUID_BUF], vol[DMN_UUID_BUF];
	char parent[DMN_UUID_BUF], parent_img[DMN_UUID_BUF];
	char dst_dom[DMN_UUID_BUF];
	char tmpl_img[DMN_UUID_BUF], tmpl_vol[DMN_UUID_BUF];
	bool has_desc;
	char desc[CP_VOLMETA_DESC_MAX + 1];
	enum cp_vol_format format;
	enum cp_vol_alloc allocation;
	uint64_t capacity, initial_size;
	bool full;                     /* clone mode */
};

enum dmn_task_state { DMN_TASK_RUNNING, DMN_TASK_DONE, DMN_TASK_FAILED };

struct dmn_task {
	char uuid[DMN_UUID_BUF];
	struct dmn_job job;
	enum dmn_task_state state;
	uint64_t done, total;          /* progress, bytes */
	int error;                     /* -errno when FAILED */
	char message[1024];            /* cp_last_error() of the failure */
	char *result;                  /* JSON text of the result when DONE */
	int64_t ctime, mtime;          /* unix seconds */
	struct dmn_task *next;
};

struct dmn;

/* The table: every task this daemon started since it started (until
 * task.clear).  One lock and one condition variable for the table; all
 * state changes broadcast. */
struct dmn_tasks {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct dmn_task *head;
	unsigned running;              /* workers not finished */
	bool stopping;                 /* wakes task.wait at shutdown */
};

void dmn_tasks_init(struct dmn_tasks *t);
void dmn_tasks_destroy(struct dmn_tasks *t);
/* Add a RUNNING task with job and start its worker (detached).  task_uuid
 * was generated by the caller.  0 or -errno (the task is not added). */
int dmn_task_start(struct dmn *d, const char *task_uuid,
		   const struct dmn_job *job);
/* Write the task's status object (see docs/api.md, task.get).  jt (may be
 * NULL) is the journal's record of the same task.  Locks the table. */
void dmn_task_write(struct dmn *d, struct cp_jsonw *w, const char *key,
		    const char *task_uuid, const struct cp_task *jt);
/* Whether the daemon knows the task; *running (may be NULL) set. */
bool dmn_task_known(struct dmn *d, const char *task_uuid, bool *running);
/* Wait until the task is no longer RUNNING, the timeout (seconds, < 0 =
 * none) passes or the daemon stops.  0, -ENOENT unknown, -ETIMEDOUT,
 * -ESHUTDOWN. */
int dmn_task_wait(struct dmn *d, const char *task_uuid, double timeout);
/* Remove a finished task from the table: 0, -ENOENT, -EBUSY running. */
int dmn_task_remove(struct dmn *d, const char *task_uuid);
/* The UUIDs of the table's tasks (caller frees). */
int dmn_task_uuids(struct dmn *d, struct cp_uuid_str **out, size_t *n);
/* Shutdown: wake waiters, then wait until no worker runs. */
void dmn_tasks_stop(struct dmn *d);

/* ---- methods.c: the handlers and the dispatch table ---------------------- */

/* Run a method: 0 (result written to c->res), DMN_RPC_ERROR, or -errno
 * (application error; message in cp_last_error() of this thread). */
int dmn_method_call(struct dmn_call *c);

/* ---- monitor.c: the join and monitor threads ------------------------------ */

void *dmn_join_thread(void *d);    /* cp_pool_join() once */
void *dmn_monitor_thread(void *d); /* until d->stopping or wake_fd */
/* Tell the monitor to look for the lease fd again (after spm.start,
 * volume.prepare --rw). */
void dmn_monitor_kick(struct dmn *d);

/* ---- server.c: the unix socket and JSON-RPC framing ----------------------- */

#define DMN_MAX_REQUEST (1u << 20)     /* bytes of one request line */

/* Create, bind and listen (removing a stale socket of a dead daemon;
 * -EADDRINUSE when a live one answers there). */
int dmn_server_listen(struct dmn *d);
/* Start the accept thread. */
int dmn_server_start(struct dmn *d);
/* Stop accepting, shut every connection down, wait for the connection
 * threads, remove the socket. */
void dmn_server_stop(struct dmn *d);
/* Answer one request text (a line): the response text goes to out (empty
 * for notifications).  Returns false when the connection must be closed
 * afterwards.  Exposed for tests. */
void dmn_rpc_handle(struct dmn *d, const char *text, size_t len,
		    struct cp_jsonw *out);

/* ---- main.c: the daemon ----------------------------------------------------- */

enum dmn_join_state {
	DMN_JOIN_NONE,                 /* sanlock off */
	DMN_JOIN_RUNNING,
	DMN_JOIN_DONE,
	DMN_JOIN_FAILED,
};

struct dmn {
	struct dmn_config cfg;
	cp_pool *pool;
	atomic_bool stopping;

	/* join / monitor */
	pthread_mutex_t lock;          /* join_* */
	enum dmn_join_state join_state;
	int join_error;
	char join_message[256];
	pthread_t join_thread, monitor_thread;
	bool join_started, monitor_started;
	int wake_fd[2];                /* pipe: written once at shutdown (wakes
					* the monitor and accept threads) */
	int kick_fd[2];                /* pipe: the monitor re-reads the lease
					* fd (after spm.start, volume.prepare) */

	/* server */
	int listen_fd;
	pthread_t accept_thread;
	bool accept_started;
	pthread_mutex_t conn_lock;
	pthread_cond_t conn_cond;
	struct dmn_conn *conns;        /* open connections */
	unsigned nconns;

	struct dmn_tasks tasks;
};

#endif
