/* common/json.c - a small, strict, bounded JSON reader (see json.h).
 *
 * Recursive descent over the text; recursion depth is bounded by
 * opts.max_depth (<= 1024), and every value counts against max_values.
 * Each value is one heap node; arrays and objects own growable arrays of
 * child pointers (and keys).  Duplicate keys are found by sorting the keys
 * once the object is complete.
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define JSON_DEPTH_CAP 1024

struct cp_json {
	enum cp_json_type type;
	bool b;
	char *s;       /* STRING: decoded text; NUMBER: the text as written */
	size_t slen;   /* STRING: length */
	size_t n, cap; /* ARRAY / OBJECT */
	cp_json **items;
	char **keys; /* OBJECT */
};

struct json_parser {
	const char *text;
	size_t len, pos;
	unsigned depth, max_depth;
	size_t values, max_values;
};

void cp_json_opts_init(struct cp_json_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
	opts->max_len = 64u << 20;
	opts->max_depth = 64;
	opts->max_values = 1u << 20;
}

const char *cp_json_type_name(enum cp_json_type t)
{
	switch (t) {
	case CP_JSON_NULL:
		return "null";
	case CP_JSON_BOOL:
		return "boolean";
	case CP_JSON_NUMBER:
		return "number";
	case CP_JSON_STRING:
		return "string";
	case CP_JSON_ARRAY:
		return "array";
	case CP_JSON_OBJECT:
		return "object";
	}
	return "unknown";
}

/* ---- errors ------------------------------------------------------------- */

static int json_fail(struct json_parser *p, size_t at, int err, const char *fmt,
		     ...) CP_PRINTF(4, 5);

static int json_fail(struct json_parser *p, size_t at, int err, const char *fmt,
		     ...)
{
	unsigned line = 1, col = 1;
	for (size_t i = 0; i < at && i < p->len; i++) {
		if (p->text[i] == '\n') {
			line++;
			col = 1;
		} else if (((unsigned char)p->text[i] & 0xc0) != 0x80) {
			col++; /* count characters, not UTF-8 bytes */
		}
	}
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return cp_error(err, "JSON line %u column %u: %s", line, col, what);
}

/* Printable description of the byte at pos, for messages. */
static const char *json_near(struct json_parser *p, size_t pos, char *buf,
			     size_t n)
{
	if (pos >= p->len)
		return "end of text";
	unsigned char c = (unsigned char)p->text[pos];
	if (c >= 0x20 && c < 0x7f)
		snprintf(buf, n, "'%c'", c);
	else
		snprintf(buf, n, "byte 0x%02x", c);
	return buf;
}

/* ---- nodes --------------------------------------------------------------- */

static void json_node_free(cp_json *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n; i++) {
		json_node_free(v->items[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
	free(v->s);
	free(v);
}

void cp_json_free(cp_json *root)
{
	json_node_free(root);
}

static cp_json *json_node_new(struct json_parser *p, enum cp_json_type t,
			      int *err)
{
	if (p->values >= p->max_values) {
		*err = json_fail(p, p->pos, -E2BIG, "more than %zu values",
				 p->max_values);
		return NULL;
	}
	cp_json *v = calloc(1, sizeof(*v));
	if (!v) {
		*err = cp_error(-ENOMEM, "JSON: out of memory");
		return NULL;
	}
	p->values++;
	v->type = t;
	return v;
}

static int json_append(cp_json *v, cp_json *item, char *key)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 8;
		cp_json **items = realloc(v->items, cap * sizeof(*items));
		if (!items)
			return cp_error(-ENOMEM, "JSON: out of memory");
		v->items = items;
		if (v->type == CP_JSON_OBJECT) {
			char **keys = realloc(v->keys, cap * sizeof(*keys));
			if (!keys)
				return cp_error(-ENOMEM, "JSON: out of memory");
			v->keys = keys;
		}
		v->cap = cap;
	}
	v->items[v->n] = item;
	if (v->type == CP_JSON_OBJECT)
		v->keys[v->n] = key;
	v->n++;
	return 0;
}

/* ---- lexing -------------------------------------------------------------- */

static void json_skip_ws(struct json_parser *p)
{
	while (p->pos < p->len) {
		char c = p->text[p->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		p->pos++;
	}
}

static bool json_literal(struct json_parser *p, const char *word)
{
	size_t n = strlen(word);
	if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n))
		return false;
	p->pos += n;
	return true;
}

static int json_hex4(struct json_parser *p, unsigned *out)
{
	unsigned v = 0;
	if (p->len - p->pos < 4)
		return json_fail(p, p->pos, -EINVAL, "truncated \\u escape");
	for (int i = 0; i < 4; i++) {
		char c = p->text[p->pos + (size_t)i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return json_fail(p, p->pos + (size_t)i, -EINVAL,
					 "bad hex digit in \\u escape");
		v = v << 4 | d;
	}
	p->pos += 4;
	*out = v;
	return 0;
}

/* Parse a string starting at the opening quote; *out is malloc'd. */
static int json_string(struct json_parser *p, char **out, size_t *outlen)
{
	size_t start = p->pos;
	p->pos++; /* '"' */
	/* Decoded text is never longer than the source. */
	size_t end = p->pos;
	while (end < p->len && p->text[end] != '"') {
		if (p->text[end] == '\\')
			end++;
		end++;
	}
	if (end >= p->len)
		return json_fail(p, start, -EINVAL, "unterminated string");
	char *buf = malloc(end - p->pos + 1);
	if (!buf)
		return cp_error(-ENOMEM, "JSON: out of memory");
	size_t o = 0;
	int r = 0;
	while (r == 0) {
		unsigned char c = (unsigned char)p->text[p->pos];
		if (c == '"') {
			p->pos++;
			break;
		}
		if (c < 0x20) {
			r = json_fail(p, p->pos, -EINVAL,
				      "control character 0x%02x in string "
				      "(must be escaped)",
				      c);
			break;
		}
		if (c != '\\') {
			size_t l;
			if (cp_utf8_decode(p->text + p->pos, p->len - p->pos,
					   &l) < 0) {
				r = json_fail(p, p->pos, -EINVAL,
					      "invalid UTF-8 in string");
				break;
			}
			memcpy(buf + o, p->text + p->pos, l);
			o += l;
			p->pos += l;
			continue;
		}
		size_t esc = p->pos;
		p->pos++;
		char e = p->text[p->pos++];
		int u = cp_json_unescape_letter(e);
		if (u > 0) {
			buf[o++] = (char)u;
			continue;
		}
		switch (e) {
		case 'u': {
			unsigned cp, lo;
			r = json_hex4(p, &cp);
			if (r < 0)
				break;
			if (cp >= 0xdc00 && cp <= 0xdfff) {
				r = json_fail(p, esc, -EINVAL,
					      "unpaired low surrogate \\u%04x",
					      cp);
				break;
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (p->len - p->pos < 2 ||
				    p->text[p->pos] != '\\' ||
				    p->text[p->pos + 1] != 'u') {
					r = json_fail(
					    p, esc, -EINVAL,
					    "unpaired high surrogate \\u%04x",
					    cp);
					break;
				}
				p->pos += 2;
				r = json_hex4(p, &lo);
				if (r < 0)
					break;
				if (lo < 0xdc00 || lo > 0xdfff) {
					r = json_fail(
					    p, esc, -EINVAL,
					    "unpaired high surrogate \\u%04x",
					    cp);
					break;
				}
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
			}
			if (cp == 0) {
				r = json_fail(p, esc, -EINVAL,
					      "\\u0000 in string is not "
					      "supported");
				break;
			}
			/* \uXXXX is 6 source bytes, at most 4 decoded;
			 * a pair is 12 source bytes for 4. */
			o += cp_utf8_encode(buf + o, cp);
			break;
		}
		default:
			r = json_fail(p, esc, -EINVAL, "invalid escape '\\%c'",
				      e >= 0x20 && e < 0x7f ? e : '?');
			break;
		}
	}
	if (r < 0) {
		free(buf);
		return r;
	}
	buf[o] = '\0';
	*out = buf;
	if (outlen)
		*outlen = o;
	return 0;
}

static bool json_digit(struct json_parser *p)
{
	return p->pos < p->len && p->text[p->pos] >= '0' &&
	       p->text[p->pos] <= '9';
}

/* If the next character is one of set, skip it: true. */
static bool json_skip(struct json_parser *p, const char *set)
{
	if (p->pos >= p->len || !p->text[p->pos] ||
	    !strchr(set, p->text[p->pos]))
		return false;
	p->pos++;
	return true;
}

/* One digit or more, else "expected a digit <where>". */
static int json_digits(struct json_parser *p, const char *where)
{
	if (!json_digit(p))
		return json_fail(p, p->pos, -EINVAL, "expected a digit %s",
				 where);
	while (json_digit(p))
		p->pos++;
	return 0;
}

static int json_number(struct json_parser *p, cp_json *v)
{
	size_t start = p->pos;
	json_skip(p, "-");
	size_t digits = p->pos;
	int r = json_digits(p, "in number");
	if (r == 0 && p->text[digits] == '0' && p->pos - digits > 1)
		r = json_fail(p, start, -EINVAL, "leading zero in number");
	if (r == 0 && json_skip(p, "."))
		r = json_digits(p, "after '.'");
	if (r == 0 && json_skip(p, "eE")) {
		json_skip(p, "+-");
		r = json_digits(p, "in exponent");
	}
	if (r < 0)
		return r;
	v->s = strndup(p->text + start, p->pos - start);
	if (!v->s)
		return cp_error(-ENOMEM, "JSON: out of memory");
	return 0;
}

/* ---- values -------------------------------------------------------------- */

static int json_value(struct json_parser *p, cp_json **out);

static int json_cmp_key(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int json_check_dup_keys(struct json_parser *p, cp_json *v, size_t start)
{
	if (v->n < 2)
		return 0;
	char **k = malloc(v->n * sizeof(*k));
	if (!k)
		return cp_error(-ENOMEM, "JSON: out of memory");
	memcpy(k, v->keys, v->n * sizeof(*k));
	qsort(k, v->n, sizeof(*k), json_cmp_key);
	int r = 0;
	for (size_t i = 1; i < v->n && r == 0; i++) {
		if (!strcmp(k[i - 1], k[i]))
			r = json_fail(p, start, -EINVAL,
				      "duplicate key \"%.64s\" in object",
				      k[i]);
	}
	free(k);
	return r;
}

static int json_container(struct json_parser *p, cp_json *v)
{
	bool obj = v->type == CP_JSON_OBJECT;
	char close = obj ? '}' : ']';
	size_t start = p->pos;
	char nb[16];
	int r;

	if (p->depth >= p->max_depth)
		return json_fail(p, p->pos, -E2BIG,
				 "nesting deeper than %u levels", p->max_depth);
	p->depth++;
	p->pos++; /* '{' or '[' */
	json_skip_ws(p);
	if (p->pos < p->len && p->text[p->pos] == close) {
		p->pos++;
		p->depth--;
		return 0;
	}
	for (;;) {
		char *key = NULL;
		cp_json *item = NULL;
		json_skip_ws(p);
		if (obj) {
			if (p->pos >= p->len || p->text[p->pos] != '"')
				return json_fail(
				    p, p->pos, -EINVAL,
				    "expected a string key, found %s",
				    json_near(p, p->pos, nb, sizeof(nb)));
			r = json_string(p, &key, NULL);
			if (r < 0)
				return r;
			json_skip_ws(p);
			if (p->pos >= p->len || p->text[p->pos] != ':') {
				free(key);
				return json_fail(
				    p, p->pos, -EINVAL,
				    "expected ':' after key, found %s",
				    json_near(p, p->pos, nb, sizeof(nb)));
			}
			p->pos++;
		}
		r = json_value(p, &item);
		if (r == 0)
			r = json_append(v, item, key);
		if (r < 0) {
			json_node_free(item);
			free(key);
			return r;
		}
		json_skip_ws(p);
		if (p->pos < p->len && p->text[p->pos] == ',') {
			p->pos++;
			json_skip_ws(p);
			if (p->pos < p->len && p->text[p->pos] == close)
				return json_fail(p, p->pos, -EINVAL,
						 "trailing comma before '%c'",
						 close);
			continue;
		}
		if (p->pos < p->len && p->text[p->pos] == close) {
			p->pos++;
			break;
		}
		return json_fail(p, p->pos, -EINVAL,
				 "expected ',' or '%c' after %s, found %s",
				 close,
				 obj ? "an object member" : "an array element",
				 json_near(p, p->pos, nb, sizeof(nb)));
	}
	p->depth--;
	return obj ? json_check_dup_keys(p, v, start) : 0;
}

static int json_value(struct json_parser *p, cp_json **out)
{
	char nb[16];
	int r = 0;
	cp_json *v;

	json_skip_ws(p);
	if (p->pos >= p->len)
		return json_fail(p, p->pos, -EINVAL,
				 "expected a value, found end of text");
	char c = p->text[p->pos];
	enum cp_json_type t;
	switch (c) {
	case '{':
		t = CP_JSON_OBJECT;
		break;
	case '[':
		t = CP_JSON_ARRAY;
		break;
	case '"':
		t = CP_JSON_STRING;
		break;
	case 't':
	case 'f':
		t = CP_JSON_BOOL;
		break;
	case 'n':
		t = CP_JSON_NULL;
		break;
	default:
		if (c == '-' || (c >= '0' && c <= '9')) {
			t = CP_JSON_NUMBER;
			break;
		}
		return json_fail(p, p->pos, -EINVAL,
				 "expected a value, found %s",
				 json_near(p, p->pos, nb, sizeof(nb)));
	}
	v = json_node_new(p, t, &r);
	if (!v)
		return r;
	switch (t) {
	case CP_JSON_OBJECT:
	case CP_JSON_ARRAY:
		r = json_container(p, v);
		break;
	case CP_JSON_STRING:
		r = json_string(p, &v->s, &v->slen);
		break;
	case CP_JSON_NUMBER:
		r = json_number(p, v);
		break;
	case CP_JSON_BOOL:
		if (json_literal(p, "true"))
			v->b = true;
		else if (!json_literal(p, "false"))
			r = json_fail(p, p->pos, -EINVAL,
				      "invalid literal (expected true or "
				      "false)");
		break;
	case CP_JSON_NULL:
	default:
		if (!json_literal(p, "null"))
			r = json_fail(p, p->pos, -EINVAL,
				      "invalid literal (expected null)");
		break;
	}
	if (r < 0) {
		json_node_free(v);
		return r;
	}
	*out = v;
	return 0;
}

int cp_json_parse(const char *text, size_t len, const struct cp_json_opts *uo,
		  cp_json **out)
{
	struct cp_json_opts o;
	struct json_parser p = {0};
	char nb[16];

	*out = NULL;
	cp_json_opts_init(&o);
	if (uo) {
		if (uo->size < sizeof(size_t) || uo->size > sizeof(o))
			return cp_error(-EINVAL,
					"JSON: options not initialised "
					"(size %zu)",
					uo->size);
		memcpy(&o, uo, uo->size);
	}
	if (!text && len)
		return cp_error(-EINVAL, "JSON: no text");
	if (len > o.max_len)
		return cp_error(-E2BIG, "JSON: text of %zu bytes exceeds %zu",
				len, o.max_len);
	p.text = text ? text : "";
	p.len = len;
	p.max_depth = CP_MIN(o.max_depth ? o.max_depth : 1, JSON_DEPTH_CAP);
	p.max_values = o.max_values;
	if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
		return json_fail(&p, 0, -EINVAL, "byte order mark");
	cp_json *root;
	int r = json_value(&p, &root);
	if (r < 0)
		return r;
	json_skip_ws(&p);
	if (p.pos != p.len) {
		r = json_fail(&p, p.pos, -EINVAL,
			      "unexpected %s after the value",
			      json_near(&p, p.pos, nb, sizeof(nb)));
		cp_json_free(root);
		return r;
	}
	*out = root;
	return 0;
}

/* ---- accessors ----------------------------------------------------------- */

enum cp_json_type cp_json_type(const cp_json *v)
{
	return v ? v->type : CP_JSON_NULL;
}

size_t cp_json_count(const cp_json *v)
{
	if (!v || (v->type != CP_JSON_ARRAY && v->type != CP_JSON_OBJECT))
		return 0;
	return v->n;
}

const cp_json *cp_json_at(const cp_json *v, size_t i)
{
	if (!v || (v->type != CP_JSON_ARRAY && v->type != CP_JSON_OBJECT) ||
	    i >= v->n)
		return NULL;
	return v->items[i];
}

const char *cp_json_key_at(const cp_json *v, size_t i)
{
	if (!v || v->type != CP_JSON_OBJECT || i >= v->n)
		return NULL;
	return v->keys[i];
}

const cp_json *cp_json_get(const cp_json *v, const char *key)
{
	if (!v || v->type != CP_JSON_OBJECT || !key)
		return NULL;
	for (size_t i = 0; i < v->n; i++) {
		if (!strcmp(v->keys[i], key))
			return v->items[i];
	}
	return NULL;
}

const char *cp_json_string(const cp_json *v, size_t *len)
{
	if (!v || v->type != CP_JSON_STRING)
		return NULL;
	if (len)
		*len = v->slen;
	return v->s;
}

const char *cp_json_number_text(const cp_json *v)
{
	if (!v || v->type != CP_JSON_NUMBER)
		return NULL;
	return v->s;
}

int cp_json_bool(const cp_json *v, bool *out)
{
	if (!v || v->type != CP_JSON_BOOL)
		return -EINVAL;
	*out = v->b;
	return 0;
}

/* The characters of the short escapes and their letters, in the same
 * order; '/' is read, not written. */
static const char json_esc_chars[] = "\"\\\b\f\n\r\t/";
static const char json_esc_letters[] = "\"\\bfnrt/";

char cp_json_escape_letter(int32_t c)
{
	const char *k = c > 0 && c < 0x80 ? strchr(json_esc_chars, c) : NULL;
	return k && *k != '/' ? json_esc_letters[k - json_esc_chars] : 0;
}

int cp_json_unescape_letter(char e)
{
	const char *k = e ? strchr(json_esc_letters, e) : NULL;
	return k ? json_esc_chars[k - json_esc_letters] : -1;
}

/* An integer (the grammar is already checked) into *out: as is
 * (is_signed false: 0 to UINT64_MAX), or the two's complement bits of an
 * int64_t (INT64_MIN to INT64_MAX).  -EINVAL if v is not an integer,
 * -ERANGE if it does not fit; *out is only written on success. */
static int json_int(const cp_json *v, bool is_signed, uint64_t *out)
{
	if (!v || v->type != CP_JSON_NUMBER)
		return -EINVAL;
	const char *s = v->s;
	bool neg = *s == '-';
	if (neg)
		s++;
	if (strpbrk(s, ".eE"))
		return -EINVAL;
	uint64_t x = 0;
	for (; *s; s++) {
		unsigned d = (unsigned)(*s - '0');
		if (x > (UINT64_MAX - d) / 10)
			return -ERANGE;
		x = x * 10 + d;
	}
	uint64_t max = !is_signed ? UINT64_MAX : (uint64_t)INT64_MAX + neg;
	if (neg && !is_signed ? x != 0 : x > max)
		return -ERANGE;
	*out = neg ? -x : x;
	return 0;
}

int cp_json_u64(const cp_json *v, uint64_t *out)
{
	return json_int(v, false, out);
}

int cp_json_i64(const cp_json *v, int64_t *out)
{
	uint64_t bits;
	int r = json_int(v, true, &bits);
	if (r == 0)
		*out = (int64_t)bits;
	return r;
}

int cp_json_double(const cp_json *v, double *out)
{
	if (!v || v->type != CP_JSON_NUMBER)
		return -EINVAL;
	errno = 0;
	double d = strtod(v->s, NULL); /* the C locale is assumed */
	if (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL))
		return -ERANGE;
	*out = d;
	return 0;
}
