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
 *   nbd        the NBD server's accept thread and two threads per NBD
 *              client (nbd/nbd.h), serving the volume exports
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
#include "api.h"
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
/* Log to path from now on (opened O_APPEND, put on fd 2, so stray stderr
 * output lands there too); a SIGHUP calls it again to reopen a rotated
 * file.  0 or -errno (the old sink stays). */
int dmn_log_open(const char *path);
bool dmn_log_enabled(enum dmn_log_level l);
/* "2026-11-22T10:00:00.123Z cowpoold[pid] LEVEL: message\n" (UTC) on fd 2, one
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

#define DMN_MAX_LIST 64 /* file_root / lvm_device / allowed_* entries */

/* What a SIGHUP may change while the daemon runs (dmn_config_reload):
 * read through dmn_limits_get() by any thread. */
struct dmn_limits {
	uint32_t allowed_uids[DMN_MAX_LIST]; /* besides root */
	uint32_t allowed_gids[DMN_MAX_LIST];
	unsigned n_uids, n_gids;
	unsigned max_connections;      /* 1..10000, default 64 */
	unsigned idle_timeout;         /* seconds without a request, 0 = none */
	unsigned request_timeout;      /* seconds to the first request */
	size_t max_request;            /* bytes of one request line */
	size_t max_answer;             /* bytes of one answer line */
	enum dmn_log_level log_level;
};

struct dmn_config {
	uint64_t host_id;              /* 1..2000, required */
	char *socket;                  /* unix socket path */
	char *run_dir;                 /* the host id's lock file */
	char *socket_group;            /* group of the socket, NULL = root's */
	char *log_file;                /* NULL = stderr */
	char *nbd_socket;              /* NBD exports' unix socket */
	char *file_roots[DMN_MAX_LIST + 1];  /* NULL-terminated */
	char *lvm_devices[DMN_MAX_LIST + 1]; /* NULL-terminated */
	char *lvm_system_dir;          /* NULL = LVM's default */
	char *pool;                    /* pool UUID or NULL */
	unsigned monitor_interval;     /* seconds, >= 1, default 10 */
	unsigned io_timeout;           /* domain.create's default, 1..255 */
	bool sanlock;                  /* default true */
	struct dmn_limits lim;
	int ready_fd;                  /* -1, or "ready\n" is written there */
	uint32_t disk_uid, disk_gid;   /* disk_owner, disk_group (0: the
					* daemon's own) */
	char *config_path;             /* -c, for a reload */
};

/* Parse argv (cowpoold's flags) and the config file they name into cfg.
 * Returns 0, 1 when the process should exit 0 at once (--help,
 * --version), or -EINVAL after printing the error ("cowpoold: FILE:LINE:
 * unknown key 'x'", "cowpoold: --host-id: ...") to stderr. */
int dmn_config_load(struct dmn_config *cfg, int argc, char **argv);
void dmn_config_free(struct dmn_config *cfg);
/* The group name or number -> gid; -ENOENT. */
int dmn_config_gid(const char *name, uint32_t *gid);
struct dmn;
/* SIGHUP: reopen the log file, read the configuration again (the same
 * flags and file) and apply what can change while running (d->cfg.lim:
 * allowed_uids/gids, limits, log_level); keys that need a restart are
 * logged.  A bad file keeps the running configuration (logged). */
void dmn_config_reload(struct dmn *d);
/* A copy of the current limits (any thread). */
void dmn_limits_get(struct dmn *d, struct dmn_limits *out);

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

/* ---- params.c: a call and its params, checked against api/methods.def --- */

#define DMN_UUID_BUF (CP_UUID_STR_LEN + 1)

/* One checked param. */
struct dmn_arg {
	bool given;
	union {
		const char *s;         /* STR (borrowed from the request) */
		uint64_t u;            /* SIZE, U64 */
		bool b;
		double n;
		int e;                 /* ENUM: index into choices */
		const char **strv;     /* STRV: NULL-terminated (freed by
					* dmn_params_free) */
	} v;
	char uuid[DMN_UUID_BUF];       /* UUID, lower-cased; "" when absent */
};

/* The process at the other end of a connection (SO_PEERCRED). */
struct dmn_peer {
	uint32_t uid, gid;
	int32_t pid;
	unsigned conn;                 /* connection number (log lines) */
};

/* One call being answered. */
struct dmn_call {
	struct dmn *d;
	const char *method;            /* the request's; the table's once
					* found */
	const struct cp_api_method *api; /* its table entry (NULL: unknown) */
	const cp_json *params;         /* an object (empty when absent) */
	struct cp_jsonw *res;          /* the handler writes one value */
	/* JSON-RPC level error (set with dmn_call_error, returned as
	 * DMN_RPC_ERROR by handlers) */
	const struct dmn_peer *peer;   /* the caller (audit lines) */
	int rpc_code;
	char rpc_msg[512];
	char rpc_param[64];            /* the param named, for error.data */
	struct dmn_arg args[CP_API_MAX_PARAMS]; /* api->params order */
};
#define DMN_RPC_ERROR 1

/* JSON-RPC 2.0 codes */
#define DMN_EPARSE -32700
#define DMN_EINVALID_REQUEST -32600
#define DMN_ENO_METHOD -32601
#define DMN_EINVALID_PARAMS -32602
#define DMN_EINTERNAL -32603
#define DMN_EANSWER_TOO_LARGE -32001  /* server error: answer > max_answer */
#define DMN_EAPP_BASE 1000             /* + errno */

int dmn_call_error(struct dmn_call *c, int code, const char *param,
		   const char *fmt, ...) CP_PRINTF(4, 5);
/* Check c->params against c->api into c->args: 0, DMN_RPC_ERROR
 * (-32602 set) or -ENOMEM.  dmn_params_free() afterwards in any case. */
int dmn_params_parse(struct dmn_call *c);
void dmn_params_free(struct dmn_call *c);
/* "domain=..., capacity=1073741824, description=\"...\"": the call's
 * params in one line for the audit log (long strings cut, arrays
 * counted). */
void dmn_params_summary(const struct dmn_call *c, char *buf, size_t size);
/* A param's value, by its table name; the absent value when not given
 * (NULL, "", 0, false, dflt, 0 = the first choice).  Asking for a name
 * the table does not give the method, or with another type, aborts. */
bool dmn_arg_given(const struct dmn_call *c, const char *name);
const char *dmn_arg_str(const struct dmn_call *c, const char *name);
const char *dmn_arg_uuid(const struct dmn_call *c, const char *name);
uint64_t dmn_arg_u64(const struct dmn_call *c, const char *name); /* SIZE too */
bool dmn_arg_bool(const struct dmn_call *c, const char *name);
double dmn_arg_num(const struct dmn_call *c, const char *name, double dflt);
int dmn_arg_enum(const struct dmn_call *c, const char *name);
const char **dmn_arg_strv(const struct dmn_call *c, const char *name);

/* ---- tasks.c: the daemon's tasks ------------------------------------------ */

/* What a running job sees. */
struct dmn_run {
	cp_pool *pool;
	const char *task_uuid;         /* for the library's journal */
	cp_task_progress_fn progress;  /* with opaque: updates the task */
	void *opaque;
};

/* How a task method's work runs (methods.c: its handler passes it to
 * start_job() with an argument struct of the method's own). */
struct dmn_job_ops {
	size_t args_size;
	/* Worker thread: the library call.  Writes the members of the task's
	 * result object to result ({} when it writes none).  0 or -errno
	 * with cp_last_error() set. */
	int (*run)(const struct dmn_run *x, const void *args,
		   struct cp_jsonw *result);
	/* The start answer's members after "task" and "domain": the UUIDs
	 * the work will create or touch. */
	void (*started)(struct cp_jsonw *w, const void *args);
};

enum dmn_task_state { DMN_TASK_RUNNING, DMN_TASK_DONE, DMN_TASK_FAILED };

struct dmn_task {
	char uuid[DMN_UUID_BUF];
	const struct cp_api_method *api;  /* the method that started it */
	const struct dmn_job_ops *ops;
	char dom[DMN_UUID_BUF];        /* the domain it works on */
	void *args;                    /* ops->args_size bytes, owned */
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
/* Add a RUNNING task and start its worker (detached), which runs
 * ops->run with a copy of args.  task_uuid was generated by the caller.
 * 0 or -errno (the task is not added). */
int dmn_task_start(struct dmn *d, const char *task_uuid,
		   const struct cp_api_method *api,
		   const struct dmn_job_ops *ops, const char *dom,
		   const void *args);
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

/* Run a method: check its params (and, for a CP_API_SPM method that is no
 * task, the SPM role), then its handler m_<id> (in the connection's
 * thread).  0 (result written to c->res), DMN_RPC_ERROR, or -errno
 * (application error; message in cp_last_error() of this thread). */
int dmn_method_call(struct dmn_call *c);

/* ---- monitor.c: the join and monitor threads ------------------------------ */

/* A lockspace of the pool's domains, copied (they outlive the pool). */
struct dmn_ls {
	char name[DMN_UUID_BUF];
	char path[4096];
	uint64_t offset;
};
/* The lockspaces of the pool's domains (none with sanlock off); *out is
 * freed by the caller. */
size_t dmn_lockspaces(struct dmn *d, struct dmn_ls **out);
/* The lockspace's options for cp_lockspace_*() (pointing into ls). */
void dmn_ls_opts(const struct dmn_ls *ls, struct cp_lockspace_opts *o);
/* At start-up, before anything joins: a lockspace of the pool already
 * joined with this host id is taken over only when the previous holder
 * of the host id's lock file (d->ls_prev) recorded it (a cowpoold of the
 * same run_dir, killed); else another process of this host uses it:
 * logged, -EEXIST (the daemon stops without touching it).  Then the
 * record (pid, lockspaces) is written to the lock file; the monitor keeps
 * it up to date. */
int dmn_lockspaces_claim(struct dmn *d);
/* Write the record again when the pool's domains changed (the monitor;
 * domain.create). */
void dmn_lockspaces_record(struct dmn *d);

void *dmn_join_thread(void *d);    /* cp_pool_join() once */
void *dmn_monitor_thread(void *d); /* until d->stopping or wake_fd */
/* Tell the monitor to look for the lease fd again (after spm.start,
 * volume.prepare --rw). */
void dmn_monitor_kick(struct dmn *d);

/* ---- exports.c: volumes served over NBD (one cp_nbd_server) ------------- */

struct dmn_exports;

/* Create the NBD server on cfg.nbd_socket (a live server there is
 * -EADDRINUSE) and start it.  0 or -errno with cp_last_error(). */
int dmn_exports_start(struct dmn *d);
/* Shutdown, before cp_pool_close(): disconnect every NBD client, close
 * every exported chain, tear every writable volume down (leases). */
void dmn_exports_stop(struct dmn *d);

struct dmn_export_req {
	const char *dom, *img, *vol;   /* lower-case UUIDs */
	const char *name;              /* NULL or "": the volume UUID */
	bool rw;
};
/* volume.export: prepare (rw: the volume lease), open the chain, add the
 * export; the export object goes to w.  The same volume again with the
 * same mode (and name) answers the existing export; otherwise -EEXIST. */
int dmn_export_add(struct dmn *d, const struct dmn_export_req *q,
		   struct cp_jsonw *w);
/* volume.unexport by name (non-NULL) or by dom/img/vol.  Without force,
 * -EBUSY while clients are connected; with force they are disconnected.
 * The chain is closed and a writable volume torn down before it
 * returns. */
int dmn_export_remove(struct dmn *d, const char *dom, const char *img,
		      const char *vol, const char *name, bool force,
		      struct cp_jsonw *w);
/* export.list: an array of export objects with clients, bytes, ops. */
int dmn_export_list(struct dmn *d, struct cp_jsonw *w);
/* -EBUSY, naming the export and starting with what, when an export of
 * this host uses volume vol of dom/img (vol NULL: any volume of the
 * image; img NULL: any volume of the domain; rw_only: writable exports only).  0 otherwise. */
int dmn_export_busy(struct dmn *d, const char *dom, const char *img,
		    const char *vol, bool rw_only, const char *what);
/* The sanlock connection is gone: every writable export ends (its lease
 * is no longer held, another host may write the volume). */
void dmn_exports_lease_lost(struct dmn *d);

/* ---- server.c: the unix socket and JSON-RPC framing ----------------------- */

#define DMN_MAX_REQUEST (1u << 20)     /* default max_request */

/* Create, bind and listen (removing a stale socket of a dead daemon;
 * -EADDRINUSE when a live one answers there). */
int dmn_server_listen(struct dmn *d);
/* Start the accept thread. */
int dmn_server_start(struct dmn *d);
/* Stop accepting, shut every connection down, wait for the connection
 * threads, remove the socket. */
void dmn_server_stop(struct dmn *d);
/* Answer one request text (a line) from peer: the response text goes to
 * out (empty for notifications); at most max_answer bytes (else a -32001
 * error saying how many of a batch's calls ran). */
void dmn_rpc_handle(struct dmn *d, const struct dmn_peer *peer,
		    const char *text, size_t len, size_t max_answer,
		    struct cp_jsonw *out);

/* ---- main.c: the daemon ----------------------------------------------------- */

enum dmn_join_state {
	DMN_JOIN_NONE,                 /* sanlock off */
	DMN_JOIN_RUNNING,
	DMN_JOIN_DONE,
	DMN_JOIN_FAILED,
};

struct dmn {
	struct dmn_config cfg;         /* cfg.lim under lim_lock */
	pthread_mutex_t lim_lock;
	int argc;                      /* the command line, for a reload */
	char **argv;
	int lock_fd;                   /* the host id's lock file (OFD lock) */
	char *ls_prev;                 /* its text before we took it */
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
	struct dmn_exports *exports;   /* exports.c; NULL when stopped */
};

#endif
