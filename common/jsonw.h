/* common/jsonw.h - a compact JSON writer into a growable buffer.
 *
 * The counterpart of json.h for producing JSON text: cowpoold builds its
 * JSON-RPC responses with it, the cowpool CLI its requests (and prints the
 * raw results it received).  Output is RFC 8259 JSON on one line (no
 * newline anywhere, so one value is one line of a newline-delimited
 * stream), strings escaped (control characters as \u00XX, invalid UTF-8
 * replaced by U+FFFD), keys in insertion order.
 *
 * Usage:
 *   struct cp_jsonw w;
 *   cp_jsonw_init(&w);
 *   cp_jsonw_obj_begin(&w, NULL);
 *   cp_jsonw_str(&w, "name", "dom1");
 *   cp_jsonw_u64(&w, "size", 1 << 20);
 *   cp_jsonw_obj_end(&w);
 *   if (cp_jsonw_error(&w) == 0) use(w.buf, w.len);
 *   cp_jsonw_free(&w);
 *
 * key is the member name inside an object and must be NULL inside an array
 * and at the top level.  Errors are sticky: after an allocation failure
 * every call is a no-op and cp_jsonw_error() returns -ENOMEM; nesting
 * errors (a key where none belongs, unbalanced ends, more than
 * CP_JSONW_DEPTH levels) give -EINVAL the same way.
 *
 * Threads: a writer belongs to one thread at a time.
 */
#ifndef CP_JSONW_H
#define CP_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "json.h"

#define CP_JSONW_DEPTH 64

struct cp_jsonw {
	char *buf;        /* NUL-terminated text, owned */
	size_t len, cap;
	int err;          /* 0 or the first -errno */
	unsigned depth;
	bool first[CP_JSONW_DEPTH + 1]; /* no member written yet at level */
	bool is_obj[CP_JSONW_DEPTH + 1];
};

void cp_jsonw_init(struct cp_jsonw *w);
void cp_jsonw_free(struct cp_jsonw *w);
/* Empty the buffer for the next document (keeps the allocation). */
void cp_jsonw_reset(struct cp_jsonw *w);
/* 0, -ENOMEM or -EINVAL (see above); -EINVAL too while a container is
 * still open. */
int cp_jsonw_error(const struct cp_jsonw *w);

void cp_jsonw_obj_begin(struct cp_jsonw *w, const char *key);
void cp_jsonw_obj_end(struct cp_jsonw *w);
void cp_jsonw_arr_begin(struct cp_jsonw *w, const char *key);
void cp_jsonw_arr_end(struct cp_jsonw *w);
void cp_jsonw_str(struct cp_jsonw *w, const char *key, const char *s);
void cp_jsonw_i64(struct cp_jsonw *w, const char *key, int64_t v);
void cp_jsonw_u64(struct cp_jsonw *w, const char *key, uint64_t v);
void cp_jsonw_double(struct cp_jsonw *w, const char *key, double v);
void cp_jsonw_bool(struct cp_jsonw *w, const char *key, bool v);
void cp_jsonw_null(struct cp_jsonw *w, const char *key);
/* A string, or null when s is NULL or empty. */
void cp_jsonw_str_or_null(struct cp_jsonw *w, const char *key,
			  const char *s);
/* Insert len bytes of text that is already one JSON value (not checked). */
void cp_jsonw_raw(struct cp_jsonw *w, const char *key, const char *text,
		  size_t len);
/* Write a parsed value (json.h) again, numbers as they were written. */
void cp_jsonw_value(struct cp_jsonw *w, const char *key, const cp_json *v);

/* Print v to f as compact JSON text (no trailing newline).  Returns 0 or
 * -EIO. */
int cp_json_print(FILE *f, const cp_json *v);
/* Print v to f, indented by 2 spaces per level (human-friendly JSON; one
 * value, no trailing newline).  Returns 0 or -EIO. */
int cp_json_print_pretty(FILE *f, const cp_json *v);

#endif
