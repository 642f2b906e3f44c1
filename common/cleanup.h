/* common/cleanup.h - scoped cleanup helpers (GCC/Clang cleanup attribute). */
#ifndef CP_CLEANUP_H
#define CP_CLEANUP_H

#include <stdlib.h>
#include <unistd.h>
#include <pthread.h>

static inline void cp_cleanup_free(void *p)
{
	free(*(void **)p);
}
static inline void cp_cleanup_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
static inline void cp_cleanup_unlock(pthread_mutex_t **m)
{
	if (*m)
		pthread_mutex_unlock(*m);
}

#define CP_CLEANUP_FREE __attribute__((cleanup(cp_cleanup_free)))
#define CP_CLEANUP_CLOSE __attribute__((cleanup(cp_cleanup_close)))
/* CP_LOCK_GUARD(&mutex): lock now, unlock at end of scope. */
#define CP_CONCAT_(a, b) a##b
#define CP_CONCAT(a, b) CP_CONCAT_(a, b)
#define CP_LOCK_GUARD(m)                                                       \
	pthread_mutex_t *CP_CONCAT(cp_guard_, __LINE__)                        \
		__attribute__((cleanup(cp_cleanup_unlock))) = (m);             \
	pthread_mutex_lock(CP_CONCAT(cp_guard_, __LINE__))

#endif
