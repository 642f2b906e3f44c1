/* common/vector.h - a type-safe growable array.
 *
 *   CP_VECTOR(u64_vec, uint64_t);
 *   u64_vec v = { 0 };
 *   if (u64_vec_append(&v, 42) < 0) ...
 *   free(v.ptr);
 */
#ifndef CP_VECTOR_H
#define CP_VECTOR_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CP_VECTOR(name, type)                                                  \
	typedef struct {                                                       \
		type *ptr;                                                     \
		size_t len, cap;                                               \
	} name;                                                                \
	static inline CP_VECTOR_UNUSED int name##_reserve(name *v, size_t n)   \
	{                                                                      \
		if (v->len + n <= v->cap)                                      \
			return 0;                                              \
		size_t cap = v->cap ? v->cap * 2 : 8;                          \
		while (cap < v->len + n)                                       \
			cap *= 2;                                              \
		type *p = realloc(v->ptr, cap * sizeof(type));                 \
		if (!p)                                                        \
			return -ENOMEM;                                        \
		v->ptr = p;                                                    \
		v->cap = cap;                                                  \
		return 0;                                                      \
	}                                                                      \
	static inline CP_VECTOR_UNUSED int name##_append(name *v, type elem)   \
	{                                                                      \
		int r_ = name##_reserve(v, 1);                                 \
		if (r_ < 0)                                                    \
			return r_;                                             \
		v->ptr[v->len++] = elem;                                       \
		return 0;                                                      \
	}                                                                      \
	static inline CP_VECTOR_UNUSED void name##_reset(name *v)              \
	{                                                                      \
		free(v->ptr);                                                  \
		v->ptr = NULL;                                                 \
		v->len = v->cap = 0;                                           \
	}

#define CP_VECTOR_UNUSED __attribute__((unused))

#endif
