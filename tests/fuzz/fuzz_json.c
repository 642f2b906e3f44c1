/* tests/fuzz/fuzz_json.c - libFuzzer target for the JSON reader
 * (common/json.c), which parses every request line that reaches
 * cowpoold's socket.
 *
 * Each input is one text, parsed with the limits the daemon could use
 * (small ones, so that deep and wide inputs reach them).
 *
 * Oracles, besides ASan/LSan/UBSan and libFuzzer's timeout:
 *   - a refused text returns -EINVAL or -E2BIG with a message that starts
 *     with "JSON" and leaves *out NULL;
 *   - an accepted tree keeps the limits (depth, value count), and every
 *     string in it is valid UTF-8 of the length the reader reports, with
 *     no NUL inside (cp_utf8_valid() is the independent check);
 *   - the accessors and conversions answer for every node without
 *     crashing, and an integer that converts prints back as its text;
 *   - what common/jsonw.c writes for the tree parses again, and writing
 *     that second tree gives the same bytes (the writer and the reader
 *     agree on every string, number and nesting the reader accepts).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "json.h"
#include "jsonw.h"

#define FUZZ_NAME "fuzz_json"
#include "fuzz.h"

#define MAX_DEPTH 32         /* below the writer's CP_JSONW_DEPTH */
#define MAX_VALUES 4096
#define MAX_LEN (256u << 10)

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			FINDING("%s:%d: %s", __FILE__, __LINE__, #cond);       \
	} while (0)

/* Walks the tree; returns the number of values, checks depth and strings. */
static size_t walk(const cp_json *v, unsigned depth)
{
	enum cp_json_type t = cp_json_type(v);
	size_t n = cp_json_count(v), values = 1;

	CHECK(depth <= MAX_DEPTH);
	CHECK(strcmp(cp_json_type_name(t), "unknown") != 0);
	switch (t) {
	case CP_JSON_STRING: {
		size_t len = 0;
		const char *s = cp_json_string(v, &len);
		CHECK(s && strlen(s) == len && cp_utf8_valid(s, len));
		CHECK(n == 0 && !cp_json_number_text(v));
		break;
	}
	case CP_JSON_NUMBER: {
		const char *s = cp_json_number_text(v);
		uint64_t u;
		int64_t i;
		double d;
		char b[32];
		CHECK(s && *s);
		if (cp_json_u64(v, &u) == 0 && s[0] != '-') {
			snprintf(b, sizeof(b), "%" PRIu64, u);
			CHECK(strcmp(b, s) == 0);
		}
		if (cp_json_i64(v, &i) == 0 && strcmp(s, "-0") != 0) {
			snprintf(b, sizeof(b), "%" PRId64, i);
			CHECK(strcmp(b, s) == 0);
		}
		int r = cp_json_double(v, &d);
		CHECK(r == 0 || r == -ERANGE);
		break;
	}
	case CP_JSON_BOOL: {
		bool b;
		CHECK(cp_json_bool(v, &b) == 0);
		break;
	}
	case CP_JSON_ARRAY:
		CHECK(depth < MAX_DEPTH);
		for (size_t k = 0; k < n; k++) {
			CHECK(cp_json_key_at(v, k) == NULL);
			values += walk(cp_json_at(v, k), depth + 1);
		}
		CHECK(cp_json_at(v, n) == NULL);
		break;
	case CP_JSON_OBJECT:
		CHECK(depth < MAX_DEPTH);
		for (size_t k = 0; k < n; k++) {
			const char *key = cp_json_key_at(v, k);
			CHECK(key && cp_utf8_valid(key, strlen(key)));
			/* keys are unique, so lookup finds this member */
			CHECK(cp_json_get(v, key) == cp_json_at(v, k));
			values += walk(cp_json_at(v, k), depth + 1);
		}
		CHECK(cp_json_key_at(v, n) == NULL);
		break;
	case CP_JSON_NULL:
		CHECK(n == 0 && !cp_json_string(v, NULL));
		break;
	}
	return values;
}

static void write_tree(struct cp_jsonw *w, const cp_json *v)
{
	cp_jsonw_init(w);
	cp_jsonw_value(w, NULL, v);
	CHECK(cp_jsonw_error(w) == 0);
	CHECK(w->buf && strlen(w->buf) == w->len);
	CHECK(!memchr(w->buf, '\n', w->len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cp_json_opts o;
	cp_json *root = (cp_json *)&o, *again = NULL;

	cp_json_opts_init(&o);
	o.max_depth = MAX_DEPTH;
	o.max_values = MAX_VALUES;
	o.max_len = MAX_LEN;
	cp_clear_error();
	int r = cp_json_parse((const char *)data, size, &o, &root);
	if (r < 0) {
		CHECK(r == -EINVAL || r == -E2BIG || r == -ENOMEM);
		CHECK(root == NULL);
		CHECK(strncmp(cp_last_error(), "JSON", 4) == 0);
		return 0;
	}
	CHECK(r == 0 && root);
	CHECK(walk(root, 0) <= MAX_VALUES);

	struct cp_jsonw w1, w2;
	write_tree(&w1, root);
	cp_json_opts_init(&o);
	o.max_depth = MAX_DEPTH;
	o.max_values = MAX_VALUES;
	r = cp_json_parse(w1.buf, w1.len, &o, &again);
	if (r < 0)
		fprintf(stderr, "fuzz_json: rewritten text refused: %s\n",
			cp_last_error());
	CHECK(r == 0);
	write_tree(&w2, again);
	CHECK(w1.len == w2.len && memcmp(w1.buf, w2.buf, w1.len) == 0);

	cp_jsonw_free(&w1);
	cp_jsonw_free(&w2);
	cp_json_free(again);
	cp_json_free(root);
	return 0;
}
