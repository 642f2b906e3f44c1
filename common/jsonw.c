/* common/jsonw.c - a compact JSON writer (see jsonw.h). */
#include "jsonw.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "json.h"

void cp_jsonw_init(struct cp_jsonw *w)
{
	memset(w, 0, sizeof(*w));
	w->first[0] = true;
}

void cp_jsonw_free(struct cp_jsonw *w)
{
	free(w->buf);
	cp_jsonw_init(w);
}

void cp_jsonw_reset(struct cp_jsonw *w)
{
	char *buf = w->buf;
	size_t cap = w->cap;
	cp_jsonw_init(w);
	w->buf = buf;
	w->cap = cap;
	if (buf)
		buf[0] = 0;
}

int cp_jsonw_error(const struct cp_jsonw *w)
{
	if (w->err)
		return w->err;
	return w->depth ? -EINVAL : 0;
}

static void jsonw_put(struct cp_jsonw *w, const char *s, size_t n)
{
	if (w->err)
		return;
	if (w->len + n + 1 > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < w->len + n + 1)
			cap *= 2;
		char *p = realloc(w->buf, cap);
		if (!p) {
			w->err = -ENOMEM;
			return;
		}
		w->buf = p;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = 0;
}

static void jsonw_putc(struct cp_jsonw *w, char c)
{
	jsonw_put(w, &c, 1);
}

static void jsonw_string(struct cp_jsonw *w, const char *str)
{
	const char *p = str, *end = str + strlen(str);
	jsonw_putc(w, '"');
	while (p < end) {
		size_t l;
		int32_t cp = cp_utf8_decode(p, (size_t)(end - p), &l);
		char esc[8] = {'\\', cp_json_escape_letter(cp)};
		if (esc[1]) {
			jsonw_put(w, esc, 2);
		} else if (cp < 0) {
			jsonw_put(w, "\xef\xbf\xbd", 3); /* U+FFFD */
		} else if (cp < 0x20 || cp == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x",
				 (unsigned)cp & 0xffffu);
			jsonw_put(w, esc, 6);
		} else {
			jsonw_put(w, p, l);
		}
		p += l;
	}
	jsonw_putc(w, '"');
}

/* Separator and key before a value. */
static void jsonw_prefix(struct cp_jsonw *w, const char *key)
{
	if (w->err)
		return;
	bool in_obj = w->depth && w->is_obj[w->depth];
	if (in_obj != (key != NULL) || (!w->depth && !w->first[0])) {
		w->err = -EINVAL;
		return;
	}
	if (!w->first[w->depth])
		jsonw_putc(w, ',');
	w->first[w->depth] = false;
	if (key) {
		jsonw_string(w, key);
		jsonw_putc(w, ':');
	}
}

static void jsonw_open(struct cp_jsonw *w, const char *key, bool obj)
{
	jsonw_prefix(w, key);
	if (w->err)
		return;
	if (w->depth >= CP_JSONW_DEPTH) {
		w->err = -EINVAL;
		return;
	}
	jsonw_putc(w, obj ? '{' : '[');
	w->depth++;
	w->first[w->depth] = true;
	w->is_obj[w->depth] = obj;
}

static void jsonw_close(struct cp_jsonw *w, bool obj)
{
	if (w->err)
		return;
	if (!w->depth || w->is_obj[w->depth] != obj) {
		w->err = -EINVAL;
		return;
	}
	w->depth--;
	jsonw_putc(w, obj ? '}' : ']');
}

void cp_jsonw_obj_begin(struct cp_jsonw *w, const char *key)
{
	jsonw_open(w, key, true);
}

void cp_jsonw_obj_end(struct cp_jsonw *w)
{
	jsonw_close(w, true);
}

void cp_jsonw_arr_begin(struct cp_jsonw *w, const char *key)
{
	jsonw_open(w, key, false);
}

void cp_jsonw_arr_end(struct cp_jsonw *w)
{
	jsonw_close(w, false);
}

void cp_jsonw_str(struct cp_jsonw *w, const char *key, const char *s)
{
	jsonw_prefix(w, key);
	jsonw_string(w, s);
}

void cp_jsonw_str_or_null(struct cp_jsonw *w, const char *key, const char *s)
{
	if (s && *s)
		cp_jsonw_str(w, key, s);
	else
		cp_jsonw_null(w, key);
}

void cp_jsonw_i64(struct cp_jsonw *w, const char *key, int64_t v)
{
	char b[32];
	int n = snprintf(b, sizeof(b), "%" PRId64, v);
	jsonw_prefix(w, key);
	jsonw_put(w, b, (size_t)n);
}

void cp_jsonw_u64(struct cp_jsonw *w, const char *key, uint64_t v)
{
	char b[32];
	int n = snprintf(b, sizeof(b), "%" PRIu64, v);
	jsonw_prefix(w, key);
	jsonw_put(w, b, (size_t)n);
}

void cp_jsonw_double(struct cp_jsonw *w, const char *key, double v)
{
	char b[64];
	int n;
	if (v != v || v > 1e308 || v < -1e308)
		n = snprintf(b, sizeof(b), "null"); /* no NaN/Inf in JSON */
	else
		n = snprintf(b, sizeof(b), "%.17g", v);
	jsonw_prefix(w, key);
	jsonw_put(w, b, (size_t)n);
}

void cp_jsonw_bool(struct cp_jsonw *w, const char *key, bool v)
{
	jsonw_prefix(w, key);
	jsonw_put(w, v ? "true" : "false", v ? 4 : 5);
}

void cp_jsonw_null(struct cp_jsonw *w, const char *key)
{
	jsonw_prefix(w, key);
	jsonw_put(w, "null", 4);
}

void cp_jsonw_raw(struct cp_jsonw *w, const char *key, const char *text,
		  size_t len)
{
	jsonw_prefix(w, key);
	jsonw_put(w, text, len);
}

void cp_jsonw_value(struct cp_jsonw *w, const char *key, const cp_json *v)
{
	switch (cp_json_type(v)) {
	case CP_JSON_NULL:
		cp_jsonw_null(w, key);
		break;
	case CP_JSON_BOOL: {
		bool b = false;
		cp_json_bool(v, &b);
		cp_jsonw_bool(w, key, b);
		break;
	}
	case CP_JSON_NUMBER: {
		const char *t = cp_json_number_text(v);
		cp_jsonw_raw(w, key, t, strlen(t));
		break;
	}
	case CP_JSON_STRING:
		cp_jsonw_str(w, key, cp_json_string(v, NULL));
		break;
	case CP_JSON_ARRAY:
		cp_jsonw_arr_begin(w, key);
		for (size_t i = 0; i < cp_json_count(v); i++)
			cp_jsonw_value(w, NULL, cp_json_at(v, i));
		cp_jsonw_arr_end(w);
		break;
	case CP_JSON_OBJECT:
		cp_jsonw_obj_begin(w, key);
		for (size_t i = 0; i < cp_json_count(v); i++)
			cp_jsonw_value(w, cp_json_key_at(v, i),
				       cp_json_at(v, i));
		cp_jsonw_obj_end(w);
		break;
	}
}

int cp_json_print(FILE *f, const cp_json *v)
{
	struct cp_jsonw w;
	cp_jsonw_init(&w);
	cp_jsonw_value(&w, NULL, v);
	if (w.buf)
		fputs(w.buf, f);
	cp_jsonw_free(&w);
	return ferror(f) ? -EIO : 0;
}

static void json_pretty(FILE *f, const cp_json *v, int level)
{
	enum cp_json_type t = cp_json_type(v);
	size_t n = cp_json_count(v);
	if ((t != CP_JSON_ARRAY && t != CP_JSON_OBJECT) || !n) {
		cp_json_print(f, v);
		return;
	}
	fputc(t == CP_JSON_OBJECT ? '{' : '[', f);
	for (size_t i = 0; i < n; i++) {
		fprintf(f, "%s\n%*s", i ? "," : "", 2 * (level + 1), "");
		if (t == CP_JSON_OBJECT) {
			struct cp_jsonw w;
			cp_jsonw_init(&w);
			cp_jsonw_str(&w, NULL, cp_json_key_at(v, i));
			if (w.buf)
				fprintf(f, "%s: ", w.buf);
			cp_jsonw_free(&w);
		}
		json_pretty(f, cp_json_at(v, i), level + 1);
	}
	fprintf(f, "\n%*s%c", 2 * level, "", t == CP_JSON_OBJECT ? '}' : ']');
}

int cp_json_print_pretty(FILE *f, const cp_json *v)
{
	json_pretty(f, v, 0);
	return ferror(f) ? -EIO : 0;
}
