/* api/api.h - cowpoold's JSON-RPC API as data: one entry per method.
 *
 * api/methods.def is the single source of every method's name, flags,
 * journal task type, summary and parameters (name, type, required, enum
 * values, a doc line, and how the cowpool CLI spells it).  From it:
 *   - daemon/ checks the params of every call and dispatches it
 *     (daemon/params.c, daemon/methods.c);
 *   - cli/ builds its daemon verbs' options, checks and help text
 *     (cli/rpc.c);
 *   - api/gendoc.c prints the parameter tables of docs/api.md, and the
 *     api-doc test fails when the file and the table disagree.
 * This module is data only: no I/O, no allocation; any thread.
 */
#ifndef CP_API_H
#define CP_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spm.h" /* enum cp_task_type */

enum cp_api_type {
	CP_API_STR,  /* string */
	CP_API_UUID, /* UUID string, either case (answers use lower case) */
	CP_API_SIZE, /* bytes below 2^63: an integer, or a string "10G" */
	CP_API_U64,  /* integer 0..max */
	CP_API_BOOL, /* true or false */
	CP_API_NUM,  /* a number */
	CP_API_ENUM, /* one of choices (a string) */
	CP_API_STRV, /* an array of strings */
};

struct cp_api_param {
	const char *name;
	enum cp_api_type type;
	bool required;
	const char *const *choices; /* ENUM: NULL-terminated; [0] is the
				     * default when the param is absent */
	uint64_t max;               /* U64: 0 means UINT64_MAX */
	const char *doc;            /* one line, Markdown (may be NULL) */
	/* How the cowpool CLI spells it (cli/rpc.c): */
	int pos;                    /* > 0: the Nth positional argument */
	const char *opt;            /* else --opt (NULL: not in the CLI); a
				     * BOOL is a flag; an STRV repeats */
	const char *flag_value;     /* ENUM: --opt is a flag that sends this
				     * value (--prealloc, --full) */
	const char *metavar;        /* help text: DIR, VOL... (default by
				     * type) */
};

/* cp_api_method.flags */
#define CP_API_SPM 1u  /* structural: only the SPM may call it (EPERM/ESTALE
			* before anything is done) */
#define CP_API_TASK 2u /* starts a task: answers {"task": ...} at once */

struct cp_api_method {
	const char *name;                  /* "volume.create" */
	unsigned flags;                    /* CP_API_SPM | CP_API_TASK */
	enum cp_task_type task_type;       /* CP_API_TASK: the journal's type */
	const char *summary;               /* one line */
	const struct cp_api_param *params; /* in checking order */
	size_t nparams;
};

/* CP_API_host_info, CP_API_volume_create, ... in methods.def order. */
enum cp_api_id {
#define CP_API_METHOD(id, ...) CP_API_##id,
#include "methods.def"
#undef CP_API_METHOD
	CP_API_N
};

#define CP_API_MAX_PARAMS 16 /* params of one method, at most */

extern const struct cp_api_method cp_api_methods[CP_API_N];

/* The method called name, or NULL. */
const struct cp_api_method *cp_api_lookup(const char *name);
/* The method's param called name, or NULL. */
const struct cp_api_param *cp_api_param(const struct cp_api_method *m,
					const char *name);

#endif
