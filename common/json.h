/* common/json.h - a small, strict, bounded JSON reader.
 *
 * Parses RFC 8259 JSON text into a tree of values (objects, arrays,
 * strings, numbers, booleans, null) for lookups by key and index.  Made for
 * reading what other programs report (LVM's --reportformat json, ...), not
 * for untrusted multi-megabyte documents, but safe with any input:
 *
 *   - strict grammar: no comments, no trailing commas, no single quotes, no
 *     leading zeros or '+', no NaN/Infinity, one value per text (only
 *     whitespace around it), no byte order mark;
 *   - strings must be valid UTF-8 (no overlong forms, no surrogates); the
 *     escapes of RFC 8259 are decoded, \u surrogate pairs must pair up;
 *     \u0000 is refused so every string is a C string; raw control
 *     characters are refused;
 *   - duplicate keys in one object are refused;
 *   - bounded: text length, nesting depth and value count (opts), so the
 *     parser's stack and memory are bounded too.
 *
 * Errors: cp_json_parse() returns 0, or -EINVAL (not JSON), -E2BIG (a
 * limit was exceeded) or -ENOMEM, with a message in cp_last_error() such
 * as "JSON line 3 column 17: expected ',' or '}' after an object member".
 * Callers usually prefix it with what they were reading.
 *
 * Threads: a parsed tree is immutable; any number of threads may read it.
 * Ownership: the tree belongs to the caller (cp_json_free()); pointers
 * returned by the accessors live as long as the tree.
 */
#ifndef CP_JSON_H
#define CP_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cp_json cp_json;

enum cp_json_type {
	CP_JSON_NULL = 0,
	CP_JSON_BOOL = 1,
	CP_JSON_NUMBER = 2,
	CP_JSON_STRING = 3,
	CP_JSON_ARRAY = 4,
	CP_JSON_OBJECT = 5,
};

struct cp_json_opts {
	size_t size;	/* sizeof(struct cp_json_opts), set by _init */
	size_t max_len; /* bytes of text; default 64 MiB */
	unsigned
	    max_depth;	   /* nesting of arrays/objects; default 64, max 1024 */
	size_t max_values; /* values in the tree; default 1M */
};
void cp_json_opts_init(struct cp_json_opts *opts);

/* Parse len bytes of text (need not be NUL-terminated).  opts may be NULL
 * for defaults.  On success *out is the root value. */
int cp_json_parse(const char *text, size_t len, const struct cp_json_opts *opts,
		  cp_json **out);
/* Free a tree returned by cp_json_parse().  NULL is a no-op. */
void cp_json_free(cp_json *root);

enum cp_json_type cp_json_type(const cp_json *v);
/* "null", "boolean", "number", "string", "array", "object". */
const char *cp_json_type_name(enum cp_json_type t);

/* Arrays: number of elements; objects: number of members; else 0. */
size_t cp_json_count(const cp_json *v);
/* Element i of an array, or the value of member i of an object (members in
 * document order).  NULL if out of range or v is neither. */
const cp_json *cp_json_at(const cp_json *v, size_t i);
/* Key of member i of an object; NULL otherwise. */
const char *cp_json_key_at(const cp_json *v, size_t i);
/* Value of the member key of an object (linear search); NULL if v is not
 * an object or has no such member. */
const cp_json *cp_json_get(const cp_json *v, const char *key);

/* The decoded UTF-8 string (NUL-terminated; *len, may be NULL, gets its
 * length); NULL if v is not a string. */
const char *cp_json_string(const cp_json *v, size_t *len);
/* The number as written in the text ("-12.5e3"); NULL if not a number. */
const char *cp_json_number_text(const cp_json *v);
/* Conversions: 0, or -EINVAL if v is not of that type (not a number, or a
 * number with a fraction/exponent for the integer forms) or -ERANGE if it
 * does not fit.  No message is set: the caller knows the context. */
int cp_json_bool(const cp_json *v, bool *out);
int cp_json_u64(const cp_json *v, uint64_t *out);
int cp_json_i64(const cp_json *v, int64_t *out);
int cp_json_double(const cp_json *v, double *out);

/* JSON's escapes of a backslash and a letter (RFC 8259 section 7), for
 * the readers and writers of JSON text: the letter that stands for
 * character c ('"', '\\', 'b', 'f', 'n', 'r', 't'), or 0 if c has none
 * ('/' is never escaped).  cp_json_unescape_letter(): the character that
 * letter e stands for ('/' too), or -1. */
char cp_json_escape_letter(int32_t c);
int cp_json_unescape_letter(char e);

#endif
