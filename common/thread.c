/* common/thread.c - threads nobody joins, waiting for completions. */
#include <pthread.h>

#include "common.h"

int cp_thread_start_detached(void *(*fn)(void *), void *arg,
			     size_t stack_size)
{
	pthread_attr_t attr;
	pthread_t t;
	int r = pthread_attr_init(&attr);
	if (r)
		return -r;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (stack_size)
		pthread_attr_setstacksize(&attr, stack_size);
	r = pthread_create(&t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	return -r;
}

void cp_waiter_add(struct cp_waiter *w)
{
	pthread_mutex_lock(&w->lock);
	w->pending++;
	pthread_mutex_unlock(&w->lock);
}

void cp_waiter_done(void *opaque, int ret)
{
	struct cp_waiter *w = opaque;
	pthread_mutex_lock(&w->lock);
	if (ret < 0 && !w->err)
		w->err = ret;
	if (--w->pending == 0)
		pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

int cp_waiter_wait(struct cp_waiter *w)
{
	pthread_mutex_lock(&w->lock);
	while (w->pending)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	return w->err;
}
