/* api/api.c - the method table, expanded from methods.def. */
#include <string.h>

#include "api.h"

#define CHOICES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define P(n, t, d, ...) {.name = (n), .type = CP_API_##t, .doc = (d), __VA_ARGS__}

/* One params array per method, ended by an entry without a name. */
#define CP_API_METHOD(id, name, flags, task, summary, ...)                     \
	static const struct cp_api_param params_##id[] = {                    \
	    __VA_ARGS__ __VA_OPT__(, ) {NULL}};
#include "methods.def"
#undef CP_API_METHOD

const struct cp_api_method cp_api_methods[CP_API_N] = {
#define CP_API_METHOD(id, n, f, t, s, ...)                                     \
	[CP_API_##id] = {.name = (n), .flags = (f),                            \
			 .task_type = (enum cp_task_type)(t), .summary = (s),  \
			 .params = params_##id,                                \
			 .nparams = sizeof(params_##id) /                      \
				    sizeof(params_##id[0]) - 1},
#include "methods.def"
#undef CP_API_METHOD
};

#define CP_API_METHOD(id, ...)                                                 \
	_Static_assert(sizeof(params_##id) / sizeof(params_##id[0]) - 1 <=    \
			   CP_API_MAX_PARAMS,                                  \
		       "too many params: raise CP_API_MAX_PARAMS");
#include "methods.def"
#undef CP_API_METHOD

const struct cp_api_method *cp_api_lookup(const char *name)
{
	for (size_t i = 0; i < CP_API_N; i++)
		if (!strcmp(cp_api_methods[i].name, name))
			return &cp_api_methods[i];
	return NULL;
}

const struct cp_api_param *cp_api_param(const struct cp_api_method *m,
					const char *name)
{
	for (size_t i = 0; i < m->nparams; i++)
		if (!strcmp(m->params[i].name, name))
			return &m->params[i];
	return NULL;
}
