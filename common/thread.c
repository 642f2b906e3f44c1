/* common/thread.c - threads nobody joins. */
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
