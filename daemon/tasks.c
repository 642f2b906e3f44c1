/* daemon/tasks.c - the daemon's tasks: long SPM calls run by worker
 * threads, and the in-memory table that answers task.get/task.wait.
 *
 * The library journals each call in the master domain's task journal
 * (spm.h, task.c) before its first change; the table here adds what the
 * journal cannot hold: calls that failed before being journaled, the
 * result (new records), and a condition variable for task.wait.  A task
 * stays in the table until task.clear (or the daemon exits).
 *
 * Lock order: tasks.lock is a leaf (never held across a library call).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cowpoold.h"

void dmn_tasks_init(struct dmn_tasks *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cond, &ca);
	pthread_condattr_destroy(&ca);
}

static void task_free(struct dmn_task *k)
{
	free(k->result);
	free(k->args);
	free(k);
}

void dmn_tasks_destroy(struct dmn_tasks *t)
{
	while (t->head) {
		struct dmn_task *k = t->head;
		t->head = k->next;
		task_free(k);
	}
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
}

static struct dmn_task *task_find_locked(struct dmn_tasks *t,
					 const char *uuid)
{
	for (struct dmn_task *k = t->head; k; k = k->next)
		if (!strcmp(k->uuid, uuid))
			return k;
	return NULL;
}

struct task_ctx {
	struct dmn *d;
	struct dmn_task *task; /* stays in the table while running: task.clear
				* refuses running tasks */
};

static void task_progress(void *opaque, uint64_t done, uint64_t total)
{
	struct task_ctx *x = opaque;
	struct dmn_tasks *t = &x->d->tasks;
	pthread_mutex_lock(&t->lock);
	x->task->done = done;
	x->task->total = total;
	x->task->mtime = time(NULL);
	pthread_mutex_unlock(&t->lock);
}

/* Run the job; the result (JSON text) into *result. */
static int task_run(struct task_ctx *x, char **result)
{
	struct dmn_task *k = x->task;
	struct dmn_run run = {
	    .pool = x->d->pool,
	    .task_uuid = k->uuid,
	    .progress = task_progress,
	    .opaque = x,
	};
	struct cp_jsonw w;
	cp_jsonw_init(&w);
	cp_jsonw_obj_begin(&w, NULL);
	int r = k->ops->run(&run, k->args, &w);
	cp_jsonw_obj_end(&w);
	if (r == 0 && cp_jsonw_error(&w) == 0) {
		*result = w.buf; /* ownership moves */
		w.buf = NULL;
	}
	cp_jsonw_free(&w);
	return r;
}

static void *task_worker(void *arg)
{
	struct task_ctx *x = arg;
	struct dmn *d = x->d;
	struct dmn_task *k = x->task;
	char *result = NULL;

	cp_clear_error();
	int r = task_run(x, &result);

	pthread_mutex_lock(&d->tasks.lock);
	k->mtime = time(NULL);
	if (r < 0) {
		k->state = DMN_TASK_FAILED;
		k->error = r;
		snprintf(k->message, sizeof(k->message), "%s",
			 cp_error_msg(r));
	} else {
		k->state = DMN_TASK_DONE;
		k->result = result;
		if (k->total)
			k->done = k->total;
	}
	d->tasks.running--;
	pthread_cond_broadcast(&d->tasks.cond);
	pthread_mutex_unlock(&d->tasks.lock);

	if (r < 0)
		dmn_warn("task %s (%s) failed: %s", k->uuid, k->api->name,
			 k->message);
	else
		dmn_info("task %s (%s) done", k->uuid, k->api->name);
	free(x);
	return NULL;
}

int dmn_task_start(struct dmn *d, const char *task_uuid,
		   const struct cp_api_method *api,
		   const struct dmn_job_ops *ops, const char *dom,
		   const void *args)
{
	struct dmn_task *k = calloc(1, sizeof(*k));
	struct task_ctx *x = calloc(1, sizeof(*x));
	void *a = malloc(ops->args_size);
	if (!k || !x || !a) {
		free(k);
		free(x);
		free(a);
		return cp_error(-ENOMEM, "out of memory");
	}
	snprintf(k->uuid, sizeof(k->uuid), "%s", task_uuid);
	k->api = api;
	k->ops = ops;
	snprintf(k->dom, sizeof(k->dom), "%s", dom);
	k->args = memcpy(a, args, ops->args_size);
	k->state = DMN_TASK_RUNNING;
	k->ctime = k->mtime = time(NULL);
	x->d = d;
	x->task = k;

	pthread_mutex_lock(&d->tasks.lock);
	if (d->tasks.stopping) {
		pthread_mutex_unlock(&d->tasks.lock);
		task_free(k);
		free(x);
		return cp_error(-ESHUTDOWN, "cowpoold is shutting down");
	}
	k->next = d->tasks.head;
	d->tasks.head = k;
	d->tasks.running++;
	int r = cp_thread_start_detached(task_worker, x, 0);
	if (r < 0) {
		d->tasks.head = k->next;
		d->tasks.running--;
		pthread_mutex_unlock(&d->tasks.lock);
		task_free(k);
		free(x);
		return cp_error(r, "cannot start a worker thread: %s",
				strerror(-r));
	}
	pthread_mutex_unlock(&d->tasks.lock);
	return 0;
}

/* finished: a task that ended reports 100% even without byte counts. */
static void write_progress(struct cp_jsonw *w, uint64_t done, uint64_t total,
			   bool finished)
{
	cp_jsonw_obj_begin(w, "progress");
	cp_jsonw_u64(w, "done", done);
	cp_jsonw_u64(w, "total", total);
	cp_jsonw_double(w, "percent",
			total ? floor(10000.0 * (double)done / (double)total) /
				    100.0
			: finished ? 100.0 : 0.0);
	cp_jsonw_obj_end(w);
}

static void write_error(struct cp_jsonw *w, int err, const char *msg)
{
	cp_jsonw_obj_begin(w, "error");
	cp_jsonw_i64(w, "code", DMN_EAPP_BASE - err);
	cp_jsonw_str(w, "errno", dmn_errno_name(-err));
	cp_jsonw_i64(w, "errno_value", -err);
	cp_jsonw_str(w, "message", msg[0] ? msg : strerror(-err));
	cp_jsonw_obj_end(w);
}

void dmn_task_write(struct dmn *d, struct cp_jsonw *w, const char *key,
		    const char *task_uuid, const struct cp_task *jt)
{
	static const char *const states[] = {"running", "done", "failed"};
	pthread_mutex_lock(&d->tasks.lock);
	struct dmn_task *k = task_find_locked(&d->tasks, task_uuid);
	cp_jsonw_obj_begin(w, key);
	cp_jsonw_str(w, "task", task_uuid);
	if (k) {
		cp_jsonw_str(w, "method", k->api->name);
		cp_jsonw_str(w, "type", cp_task_type_name(k->api->task_type));
		cp_jsonw_str(w, "state", states[k->state]);
		cp_jsonw_str(w, "domain", k->dom);
		write_progress(w, k->done, k->total,
			       k->state == DMN_TASK_DONE);
		cp_jsonw_i64(w, "ctime", k->ctime);
		cp_jsonw_i64(w, "mtime", k->mtime);
		if (k->state == DMN_TASK_DONE && k->result)
			cp_jsonw_raw(w, "result", k->result,
				     strlen(k->result));
		else
			cp_jsonw_null(w, "result");
		if (k->state == DMN_TASK_FAILED)
			write_error(w, k->error, k->message);
		else
			cp_jsonw_null(w, "error");
		cp_jsonw_bool(w, "this_daemon", true);
	} else if (jt) {
		cp_jsonw_null(w, "method");
		cp_jsonw_str(w, "type", cp_task_type_name(jt->type));
		cp_jsonw_str(w, "state", cp_task_state_name(jt->state));
		cp_jsonw_str_or_null(w, "domain", jt->dom_uuid);
		write_progress(w, jt->done, jt->total,
			       jt->state == CP_TASK_DONE);
		cp_jsonw_i64(w, "ctime", jt->ctime);
		cp_jsonw_i64(w, "mtime", jt->mtime);
		cp_jsonw_null(w, "result");
		if (jt->error)
			write_error(w, jt->error, jt->message);
		else
			cp_jsonw_null(w, "error");
		cp_jsonw_bool(w, "this_daemon", false);
	}
	pthread_mutex_unlock(&d->tasks.lock);
	if (jt) {
		cp_jsonw_obj_begin(w, "journal");
		dmn_json_journal_task(w, jt);
		cp_jsonw_obj_end(w);
	} else {
		cp_jsonw_null(w, "journal");
	}
	cp_jsonw_obj_end(w);
}

bool dmn_task_known(struct dmn *d, const char *task_uuid, bool *running)
{
	pthread_mutex_lock(&d->tasks.lock);
	struct dmn_task *k = task_find_locked(&d->tasks, task_uuid);
	if (k && running)
		*running = k->state == DMN_TASK_RUNNING;
	pthread_mutex_unlock(&d->tasks.lock);
	return k != NULL;
}

int dmn_task_wait(struct dmn *d, const char *task_uuid, double timeout)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	if (timeout >= 0) {
		double s = floor(timeout);
		deadline.tv_sec += (time_t)s;
		deadline.tv_nsec += (long)((timeout - s) * 1e9);
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
	}
	struct dmn_tasks *t = &d->tasks;
	int r = 0;
	pthread_mutex_lock(&t->lock);
	for (;;) {
		/* Look the task up again after every wake-up: task.clear may
		 * not remove it while running, but be safe. */
		struct dmn_task *k = task_find_locked(t, task_uuid);
		if (!k) {
			r = -ENOENT;
			break;
		}
		if (k->state != DMN_TASK_RUNNING)
			break;
		if (t->stopping) {
			r = -ESHUTDOWN;
			break;
		}
		int e = timeout >= 0
			    ? pthread_cond_timedwait(&t->cond, &t->lock,
						     &deadline)
			    : pthread_cond_wait(&t->cond, &t->lock);
		if (e == ETIMEDOUT) {
			r = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int dmn_task_remove(struct dmn *d, const char *task_uuid)
{
	struct dmn_tasks *t = &d->tasks;
	int r = -ENOENT;
	pthread_mutex_lock(&t->lock);
	for (struct dmn_task **pp = &t->head; *pp; pp = &(*pp)->next) {
		struct dmn_task *k = *pp;
		if (strcmp(k->uuid, task_uuid))
			continue;
		if (k->state == DMN_TASK_RUNNING) {
			r = -EBUSY;
			break;
		}
		*pp = k->next;
		task_free(k);
		r = 0;
		break;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int dmn_task_uuids(struct dmn *d, struct cp_uuid_str **out, size_t *n)
{
	struct dmn_tasks *t = &d->tasks;
	pthread_mutex_lock(&t->lock);
	size_t count = 0;
	for (struct dmn_task *k = t->head; k; k = k->next)
		count++;
	struct cp_uuid_str *u = calloc(count ? count : 1, sizeof(*u));
	if (!u) {
		pthread_mutex_unlock(&t->lock);
		return cp_error(-ENOMEM, "out of memory");
	}
	/* oldest first: the list is newest first */
	size_t i = count;
	for (struct dmn_task *k = t->head; k; k = k->next)
		memcpy(u[--i].s, k->uuid, sizeof(u[0].s));
	pthread_mutex_unlock(&t->lock);
	*out = u;
	*n = count;
	return 0;
}

void dmn_tasks_stop(struct dmn *d)
{
	struct dmn_tasks *t = &d->tasks;
	pthread_mutex_lock(&t->lock);
	t->stopping = true;
	pthread_cond_broadcast(&t->cond);
	if (t->running)
		dmn_info("waiting for %u running task(s) to finish (send the "
			 "signal again to exit at once; the next SPM "
			 "recovers them)", t->running);
	while (t->running)
		pthread_cond_wait(&t->cond, &t->lock);
	pthread_mutex_unlock(&t->lock);
}
