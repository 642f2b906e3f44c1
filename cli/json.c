/* cli/json.c - JSON output in the exact shape qemu-img prints.
 *
 * qemu-img converts its QAPI results to a QDict and pretty-prints it.  A
 * QDict iterates its 512 hash buckets in order, and inside a bucket the
 * most recently inserted member first, so key order is neither insertion
 * nor alphabetical order.  We keep members in a vector and sort them the
 * same way when printing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vector.h"

enum cli_json_type { CLI_JSON_INT, CLI_JSON_BOOL, CLI_JSON_STR, CLI_JSON_OBJ };

struct cli_json_member {
	char *key;
	enum cli_json_type type;
	int64_t i;
	bool b;
	char *s;
	struct cli_json *obj;
	unsigned bucket, seq;
};

CP_VECTOR(cli_json_members, struct cli_json_member);

struct cli_json {
	cli_json_members m;
	bool array; /* a list: members in insertion order, keys unused */
};

#define QDICT_BUCKET_MAX 512

/* QEMU's qobject/qdict.c tdb_hash(). */
static unsigned json_qdict_bucket(const char *name)
{
	unsigned value = 0x238F13AFu * (unsigned)strlen(name);
	for (unsigned i = 0; name[i]; i++)
		value += (unsigned)(const unsigned char)name[i] << (i * 5 % 24);
	return (1103515243u * value + 12345u) % QDICT_BUCKET_MAX;
}

static void *json_xmalloc(size_t n)
{
	void *p = calloc(1, n);
	if (!p) {
		cli_error("out of memory");
		exit(1);
	}
	return p;
}

static char *json_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = json_xmalloc(n);
	memcpy(p, s, n);
	return p;
}

struct cli_json *cli_json_new(void)
{
	return json_xmalloc(sizeof(struct cli_json));
}

struct cli_json *cli_json_new_array(void)
{
	struct cli_json *a = cli_json_new();
	a->array = true;
	return a;
}

void cli_json_free(struct cli_json *obj)
{
	if (!obj)
		return;
	for (size_t i = 0; i < obj->m.len; i++) {
		free(obj->m.ptr[i].key);
		free(obj->m.ptr[i].s);
		cli_json_free(obj->m.ptr[i].obj);
	}
	free(obj->m.ptr);
	free(obj);
}

static struct cli_json_member *json_add(struct cli_json *obj, const char *key,
					enum cli_json_type type)
{
	struct cli_json_member m = {
	    .key = json_xstrdup(key),
	    .type = type,
	    .bucket = json_qdict_bucket(key),
	    .seq = (unsigned)obj->m.len,
	};
	if (cli_json_members_append(&obj->m, m) < 0) {
		cli_error("out of memory");
		exit(1);
	}
	return &obj->m.ptr[obj->m.len - 1];
}

void cli_json_add_int(struct cli_json *obj, const char *key, int64_t v)
{
	json_add(obj, key, CLI_JSON_INT)->i = v;
}

void cli_json_add_bool(struct cli_json *obj, const char *key, bool v)
{
	json_add(obj, key, CLI_JSON_BOOL)->b = v;
}

void cli_json_add_str(struct cli_json *obj, const char *key, const char *v)
{
	json_add(obj, key, CLI_JSON_STR)->s = json_xstrdup(v);
}

void cli_json_add_obj(struct cli_json *obj, const char *key,
		      struct cli_json *child)
{
	json_add(obj, key, CLI_JSON_OBJ)->obj = child;
}

static int json_member_cmp(const void *a, const void *b)
{
	const struct cli_json_member *x = a, *y = b;
	if (x->bucket != y->bucket)
		return x->bucket < y->bucket ? -1 : 1;
	/* Same bucket: QDict inserts at the head of the bucket's list. */
	return x->seq > y->seq ? -1 : x->seq < y->seq;
}

void cli_json_print_str(FILE *f, const char *str)
{
	const char *p = str, *end = str + strlen(str);
	fputc('"', f);
	while (p < end) {
		size_t l;
		int32_t cp = cp_utf8_decode(p, (size_t)(end - p), &l);
		p += l;
		char e = cp_json_escape_letter(cp);
		if (cp < 0)
			cp = 0xfffd;
		if (e)
			fprintf(f, "\\%c", e);
		else if (cp > 0xffff)
			fprintf(f, "\\u%04X\\u%04X",
				0xd800 + ((cp - 0x10000) >> 10),
				0xdc00 + ((cp - 0x10000) & 0x3ff));
		else if (cp < 0x20 || cp >= 0x7f)
			fprintf(f, "\\u%04X", cp);
		else
			fputc(cp, f);
	}
	fputc('"', f);
}

static void json_indent(FILE *f, int level)
{
	for (int i = 0; i < level; i++)
		fputs("    ", f);
}

void cli_json_print(FILE *f, const struct cli_json *obj, int level)
{
	size_t n = obj->m.len;
	if (!n && !obj->array) {
		fputs("{}", f);
		return;
	}
	struct cli_json_member *sorted = json_xmalloc((n ? n : 1) * sizeof(*sorted));
	if (n)
		memcpy(sorted, obj->m.ptr, n * sizeof(*sorted));
	if (!obj->array)
		qsort(sorted, n, sizeof(*sorted), json_member_cmp);

	fputc(obj->array ? '[' : '{', f);
	if (!n) /* qemu prints an empty list on two lines */
		fputc('\n', f);
	for (size_t i = 0; i < n; i++) {
		const struct cli_json_member *m = &sorted[i];
		fputs(i ? ",\n" : "\n", f);
		json_indent(f, level + 1);
		if (!obj->array) {
			cli_json_print_str(f, m->key);
			fputs(": ", f);
		}
		switch (m->type) {
		case CLI_JSON_INT:
			fprintf(f, "%lld", (long long)m->i);
			break;
		case CLI_JSON_BOOL:
			fputs(m->b ? "true" : "false", f);
			break;
		case CLI_JSON_STR:
			cli_json_print_str(f, m->s);
			break;
		case CLI_JSON_OBJ:
			cli_json_print(f, m->obj, level + 1);
			break;
		}
	}
	if (n)
		fputc('\n', f);
	json_indent(f, level);
	fputc(obj->array ? ']' : '}', f);
	free(sorted);
}
