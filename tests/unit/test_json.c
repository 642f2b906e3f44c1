/* tests/unit/test_json.c - common/json.c, the JSON reader that parses every
 * byte arriving on cowpoold's socket (and LVM's reports): valid documents
 * and the accessors, every class of malformed text (each refused with
 * -EINVAL and a "JSON line L column C: ..." message), the depth, length
 * and value-count limits (-E2BIG), escapes, surrogate pairs, invalid
 * UTF-8, numbers at the limits of the integer conversions, and duplicate
 * keys (refused, after decoding).  Also common/utf8.c, which the reader
 * decodes with, and a round trip through the writer (common/jsonw.c).
 * Deterministic; no files, no sleeps.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common.h"
#include "json.h"
#include "jsonw.h"

/* Parse the NUL-terminated text with default options; must succeed. */
static cp_json *parse_ok(const char *text)
{
	cp_json *v = NULL;
	int r = cp_json_parse(text, strlen(text), NULL, &v);
	if (r != 0)
		fail_msg("parse of '%s' failed: %d %s", text, r,
			 cp_last_error());
	assert_non_null(v);
	return v;
}

/* Parse len bytes; must fail with err and a message containing what. */
static void parse_bad_n(const char *text, size_t len,
			const struct cp_json_opts *o, int err,
			const char *what)
{
	cp_json *v = (cp_json *)1;
	cp_clear_error();
	int r = cp_json_parse(text, len, o, &v);
	if (r != err)
		fail_msg("parse of '%.*s': got %d (%s), want %d", (int)len,
			 text, r, cp_last_error(), err);
	assert_null(v);
	if (!strstr(cp_last_error(), what))
		fail_msg("parse of '%.*s': message '%s' lacks '%s'", (int)len,
			 text, cp_last_error(), what);
}

static void parse_bad(const char *text, const char *what)
{
	parse_bad_n(text, strlen(text), NULL, -EINVAL, what);
}

/* The single string a document "[...]" holds, compared with want. */
static void string_is(const char *text, const char *want, size_t wantlen)
{
	cp_json *v = parse_ok(text);
	size_t len = 0;
	const char *s = cp_json_string(cp_json_at(v, 0), &len);
	assert_non_null(s);
	assert_int_equal(len, wantlen);
	assert_memory_equal(s, want, wantlen);
	assert_int_equal(s[len], '\0');
	cp_json_free(v);
}

/* ---- valid documents ----------------------------------------------------- */

static void test_scalars(void **state)
{
	(void)state;
	cp_json *v = parse_ok("null");
	assert_int_equal(cp_json_type(v), CP_JSON_NULL);
	cp_json_free(v);

	bool b = false;
	v = parse_ok(" \t\r\ntrue\n");
	assert_int_equal(cp_json_type(v), CP_JSON_BOOL);
	assert_int_equal(cp_json_bool(v, &b), 0);
	assert_true(b);
	cp_json_free(v);
	v = parse_ok("false");
	assert_int_equal(cp_json_bool(v, &b), 0);
	assert_false(b);
	assert_int_equal(cp_json_count(v), 0);
	assert_null(cp_json_string(v, NULL));
	cp_json_free(v);

	v = parse_ok("\"\"");
	size_t len = 9;
	assert_string_equal(cp_json_string(v, &len), "");
	assert_int_equal(len, 0);
	cp_json_free(v);

	v = parse_ok("-12.5e3");
	assert_int_equal(cp_json_type(v), CP_JSON_NUMBER);
	assert_string_equal(cp_json_number_text(v), "-12.5e3");
	double d = 0;
	assert_int_equal(cp_json_double(v, &d), 0);
	assert_true(d == -12500.0);
	cp_json_free(v);

	/* Not NUL-terminated: only len bytes are read. */
	char buf[4] = {'1', '2', '3', '4'};
	uint64_t u = 0;
	assert_int_equal(cp_json_parse(buf, 2, NULL, &v), 0);
	assert_int_equal(cp_json_u64(v, &u), 0);
	assert_int_equal(u, 12);
	cp_json_free(v);

	cp_json_free(NULL);
	assert_string_equal(cp_json_type_name(CP_JSON_OBJECT), "object");
	assert_string_equal(cp_json_type_name(CP_JSON_ARRAY), "array");
	assert_string_equal(cp_json_type_name(CP_JSON_STRING), "string");
	assert_string_equal(cp_json_type_name(CP_JSON_NUMBER), "number");
	assert_string_equal(cp_json_type_name(CP_JSON_BOOL), "boolean");
	assert_string_equal(cp_json_type_name(CP_JSON_NULL), "null");
}

static void test_containers(void **state)
{
	(void)state;
	const char *text =
	    "{\"jsonrpc\": \"2.0\", \"id\": 7, \"method\": \"volume.create\",\n"
	    " \"params\": {\"size\": 1073741824, \"tags\": [\"a\", \"b\", [], {}],"
	    " \"sparse\": true, \"parent\": null}}";
	cp_json *v = parse_ok(text);
	assert_int_equal(cp_json_type(v), CP_JSON_OBJECT);
	assert_int_equal(cp_json_count(v), 4);
	/* Members in document order. */
	assert_string_equal(cp_json_key_at(v, 0), "jsonrpc");
	assert_string_equal(cp_json_key_at(v, 3), "params");
	assert_null(cp_json_key_at(v, 4));
	assert_null(cp_json_at(v, 4));
	assert_string_equal(cp_json_string(cp_json_at(v, 2), NULL),
			    "volume.create");
	assert_string_equal(cp_json_string(cp_json_get(v, "jsonrpc"), NULL),
			    "2.0");
	assert_null(cp_json_get(v, "nope"));
	assert_null(cp_json_get(v, NULL));

	const cp_json *p = cp_json_get(v, "params");
	uint64_t size = 0;
	assert_int_equal(cp_json_u64(cp_json_get(p, "size"), &size), 0);
	assert_int_equal(size, 1073741824ull);
	const cp_json *tags = cp_json_get(p, "tags");
	assert_int_equal(cp_json_type(tags), CP_JSON_ARRAY);
	assert_int_equal(cp_json_count(tags), 4);
	assert_string_equal(cp_json_string(cp_json_at(tags, 1), NULL), "b");
	assert_null(cp_json_key_at(tags, 0));
	assert_null(cp_json_get(tags, "a"));
	assert_int_equal(cp_json_type(cp_json_at(tags, 2)), CP_JSON_ARRAY);
	assert_int_equal(cp_json_count(cp_json_at(tags, 2)), 0);
	assert_int_equal(cp_json_type(cp_json_at(tags, 3)), CP_JSON_OBJECT);
	assert_int_equal(cp_json_count(cp_json_at(tags, 3)), 0);
	assert_int_equal(cp_json_type(cp_json_get(p, "parent")), CP_JSON_NULL);
	/* A missing member reads as null (NULL pointer). */
	assert_int_equal(cp_json_type(cp_json_get(p, "missing")),
			 CP_JSON_NULL);

	/* Type mismatches: -EINVAL, no crash. */
	bool b;
	int64_t i;
	double d;
	assert_int_equal(cp_json_bool(cp_json_get(v, "id"), &b), -EINVAL);
	assert_int_equal(cp_json_u64(cp_json_get(v, "method"), &size),
			 -EINVAL);
	assert_int_equal(cp_json_i64(NULL, &i), -EINVAL);
	assert_int_equal(cp_json_double(tags, &d), -EINVAL);
	assert_null(cp_json_number_text(tags));
	cp_json_free(v);

	/* Whitespace everywhere it may be. */
	v = parse_ok(" { \"a\" : [ 1 , 2 ] , \"b\" : { } } ");
	assert_int_equal(cp_json_count(cp_json_get(v, "a")), 2);
	cp_json_free(v);
}

/* ---- malformed text ------------------------------------------------------ */

static void test_malformed(void **state)
{
	(void)state;
	/* Empty and incomplete texts. */
	parse_bad("", "expected a value, found end of text");
	parse_bad("   ", "expected a value, found end of text");
	parse_bad("[", "expected a value, found end of text");
	parse_bad("[1", "expected ',' or ']' after an array element");
	parse_bad("{\"a\":1", "expected ',' or '}' after an object member");
	parse_bad("{\"a\"", "expected ':' after key, found end of text");
	parse_bad("{\"a\":", "expected a value, found end of text");
	parse_bad("\"abc", "unterminated string");
	parse_bad("\"abc\\", "unterminated string");
	/* Grammar. */
	parse_bad("[1,]", "trailing comma before ']'");
	parse_bad("{\"a\":1,}", "trailing comma before '}'");
	parse_bad("[,1]", "expected a value, found ','");
	parse_bad("[1 2]", "expected ',' or ']' after an array element, "
			   "found '2'");
	parse_bad("{1:2}", "expected a string key, found '1'");
	parse_bad("{'a':2}", "expected a string key, found '''");
	parse_bad("{a:2}", "expected a string key, found 'a'");
	parse_bad("{\"a\" 2}", "expected ':' after key, found '2'");
	parse_bad("{\"a\":1 \"b\":2}", "expected ',' or '}'");
	parse_bad("[1}", "expected ',' or ']'");
	parse_bad("{\"a\":1]", "expected ',' or '}'");
	parse_bad("'a'", "expected a value, found '''");
	parse_bad("]", "expected a value, found ']'");
	/* One value per text. */
	parse_bad("1 2", "unexpected '2' after the value");
	parse_bad("{} {}", "unexpected '{' after the value");
	parse_bad("null\x01", "unexpected byte 0x01 after the value");
	/* Literals. */
	parse_bad("tru", "invalid literal (expected true or false)");
	parse_bad("True", "expected a value, found 'T'");
	parse_bad("nul", "invalid literal (expected null)");
	parse_bad("nulll", "unexpected 'l' after the value");
	parse_bad("NaN", "expected a value, found 'N'");
	parse_bad("Infinity", "expected a value, found 'I'");
	parse_bad("-Infinity", "expected a digit in number");
	/* Numbers. */
	parse_bad("+1", "expected a value, found '+'");
	parse_bad("01", "leading zero in number");
	parse_bad("-01", "leading zero in number");
	parse_bad("-", "expected a digit in number");
	parse_bad("1.", "expected a digit after '.'");
	parse_bad(".5", "expected a value, found '.'");
	parse_bad("1.e3", "expected a digit after '.'");
	parse_bad("1e", "expected a digit in exponent");
	parse_bad("1e+", "expected a digit in exponent");
	parse_bad("0x10", "unexpected 'x' after the value");
	/* Comments, byte order mark, stray bytes. */
	parse_bad("// c\n1", "expected a value, found '/'");
	parse_bad("[1 /* c */]", "found '/'");
	parse_bad("\xef\xbb\xbf{}", "byte order mark");
	parse_bad_n("\0", 1, NULL, -EINVAL,
		    "expected a value, found byte 0x00");
	parse_bad_n("[1]\0", 4, NULL, -EINVAL,
		    "unexpected byte 0x00 after the value");
	parse_bad("\f1", "expected a value, found byte 0x0c");
	/* Strings: raw control characters must be escaped. */
	parse_bad("\"a\nb\"", "control character 0x0a in string");
	parse_bad("\"a\tb\"", "control character 0x09 in string");
	parse_bad("\"\x1f\"", "control character 0x1f in string");
	/* NULL text with a length. */
	cp_json *v = (cp_json *)1;
	assert_int_equal(cp_json_parse(NULL, 1, NULL, &v), -EINVAL);
	assert_null(v);
	assert_int_equal(cp_json_parse(NULL, 0, NULL, &v), -EINVAL);
	assert_null(v);
}

/* The position in messages: lines from 1, columns in characters. */
static void test_position(void **state)
{
	(void)state;
	parse_bad("{\n  \"a\": 1,\n  \"b\" 2}",
		  "JSON line 3 column 7: expected ':' after key, found '2'");
	parse_bad("[\"\xc3\xa9\xc3\xa9\", x]",
		  "JSON line 1 column 8: expected a value, found 'x'");
	parse_bad("x", "JSON line 1 column 1: ");
}

/* ---- limits -------------------------------------------------------------- */

static char *nested(unsigned depth, char open, char close)
{
	char *s = malloc(2 * (size_t)depth + 1);
	assert_non_null(s);
	memset(s, open, depth);
	memset(s + depth, close, depth);
	s[2 * depth] = '\0';
	return s;
}

static void test_limits(void **state)
{
	(void)state;
	struct cp_json_opts o;
	cp_json *v;
	char *s;

	/* Default depth 64: 64 levels parse, 65 do not. */
	s = nested(64, '[', ']');
	v = parse_ok(s);
	cp_json_free(v);
	free(s);
	s = nested(65, '[', ']');
	parse_bad_n(s, strlen(s), NULL, -E2BIG,
		    "nesting deeper than 64 levels");
	free(s);

	/* Objects count as levels too. */
	cp_json_opts_init(&o);
	o.max_depth = 2;
	const char *d2 = "{\"a\":[1]}";
	assert_int_equal(cp_json_parse(d2, strlen(d2), &o, &v), 0);
	cp_json_free(v);
	const char *d3 = "{\"a\":[{}]}";
	parse_bad_n(d3, strlen(d3), &o, -E2BIG, "deeper than 2 levels");
	/* Scalars need no depth at all. */
	o.max_depth = 1;
	assert_int_equal(cp_json_parse("7", 1, &o, &v), 0);
	cp_json_free(v);
	/* 0 means 1; above 1024 is capped at 1024, so the stack stays
	 * bounded whatever the caller asks. */
	o.max_depth = 0;
	parse_bad_n("[[]]", 4, &o, -E2BIG, "deeper than 1 levels");
	o.max_depth = 100000;
	o.max_len = 1u << 20;
	s = nested(1024, '[', ']');
	assert_int_equal(cp_json_parse(s, strlen(s), &o, &v), 0);
	cp_json_free(v);
	free(s);
	s = nested(1025, '[', ']');
	parse_bad_n(s, strlen(s), &o, -E2BIG, "deeper than 1024 levels");
	free(s);
	/* A deep text that is not JSON fails the same way, not by
	 * overflowing the stack. */
	s = nested(200000, '[', '[');
	o.max_len = 1u << 20;
	parse_bad_n(s, strlen(s), &o, -E2BIG, "deeper than 1024 levels");
	free(s);

	/* Text length. */
	cp_json_opts_init(&o);
	o.max_len = 5;
	assert_int_equal(cp_json_parse("[1,2]", 5, &o, &v), 0);
	cp_json_free(v);
	parse_bad_n("[1, 2]", 6, &o, -E2BIG, "text of 6 bytes exceeds 5");

	/* Value count: the root counts. */
	cp_json_opts_init(&o);
	o.max_values = 3;
	assert_int_equal(cp_json_parse("[1,2]", 5, &o, &v), 0);
	cp_json_free(v);
	parse_bad_n("[1,2,3]", 7, &o, -E2BIG, "more than 3 values");
	parse_bad_n("{\"a\":{\"b\":{\"c\":1}}}", 20, &o, -E2BIG,
		    "more than 3 values");

	/* Options that were not initialised are refused. */
	struct cp_json_opts bad;
	memset(&bad, 0, sizeof(bad));
	parse_bad_n("1", 1, &bad, -EINVAL, "options not initialised");
	bad.size = sizeof(bad) + 8;
	parse_bad_n("1", 1, &bad, -EINVAL, "options not initialised");
	/* An older, smaller opts struct keeps the defaults for the rest. */
	cp_json_opts_init(&o);
	o.size = offsetof(struct cp_json_opts, max_depth);
	s = nested(64, '[', ']');
	assert_int_equal(cp_json_parse(s, strlen(s), &o, &v), 0);
	cp_json_free(v);
	free(s);
}

/* ---- strings ------------------------------------------------------------- */

static void test_escapes(void **state)
{
	(void)state;
	string_is("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]", "\"\\/\b\f\n\r\t", 8);
	string_is("[\"\\u0041\\u00e9\\u00E9\\u20ac\"]",
		  "A\xc3\xa9\xc3\xa9\xe2\x82\xac", 8);
	string_is("[\"\\u007f\\u0080\\u07ff\\u0800\\uffff\"]",
		  "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 11);
	string_is("[\"\\u0001\"]", "\x01", 1);
	/* Raw UTF-8 passes through. */
	string_is("[\"d\xc3\xa9j\xc3\xa0 \xe2\x9c\x93 \xf0\x9f\x98\x80\"]",
		  "d\xc3\xa9j\xc3\xa0 \xe2\x9c\x93 \xf0\x9f\x98\x80", 15);
	/* DEL is not a control character in JSON. */
	string_is("[\"\x7f\"]", "\x7f", 1);

	parse_bad("\"\\a\"", "invalid escape '\\a'");
	parse_bad("\"\\'\"", "invalid escape '\\''");
	parse_bad("\"\\x41\"", "invalid escape '\\x'");
	parse_bad("\"\\\x01\"", "invalid escape '\\?'");
	parse_bad("\"\\u12\"", "truncated \\u escape");
	parse_bad("\"\\u12g4\"", "bad hex digit in \\u escape");
	parse_bad("\"\\u", "unterminated string");
	parse_bad("[\"\\u12\"]", "bad hex digit in \\u escape");
	parse_bad_n("\"\\u1", 4, NULL, -EINVAL, "unterminated string");
	/* \u0000 would cut the C string short. */
	parse_bad("\"a\\u0000b\"", "\\u0000 in string is not supported");
}

static void test_surrogates(void **state)
{
	(void)state;
	/* U+1F600 and the extremes U+10000 and U+10FFFF. */
	string_is("[\"\\ud83d\\ude00\"]", "\xf0\x9f\x98\x80", 4);
	string_is("[\"\\uD83D\\uDE00\"]", "\xf0\x9f\x98\x80", 4);
	string_is("[\"\\ud800\\udc00\"]", "\xf0\x90\x80\x80", 4);
	string_is("[\"\\udbff\\udfff\"]", "\xf4\x8f\xbf\xbf", 4);
	string_is("[\"x\\ud83d\\ude00y\\ud83d\\ude00\"]",
		  "x\xf0\x9f\x98\x80y\xf0\x9f\x98\x80", 10);

	parse_bad("\"\\ud83d\"", "unpaired high surrogate \\ud83d");
	parse_bad("\"\\ud83dx\"", "unpaired high surrogate");
	parse_bad("\"\\ud83d\\n\"", "unpaired high surrogate");
	parse_bad("\"\\ud83d\\u0041\"", "unpaired high surrogate");
	parse_bad("\"\\ud83d\\ud83d\"", "unpaired high surrogate");
	parse_bad("\"\\ude00\"", "unpaired low surrogate \\ude00");
	parse_bad("\"\\ude00\\ud83d\"", "unpaired low surrogate");
	parse_bad("\"\\ud83d\\ude0\"", "bad hex digit");
	/* Surrogates written as raw UTF-8 are not UTF-8. */
	parse_bad("\"\xed\xa0\xbd\xed\xb8\x80\"", "invalid UTF-8 in string");
}

static void test_invalid_utf8(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "\"\x80\"",                 /* lone continuation byte */
	    "\"\xbf\"",
	    "\"\xc3\"",                 /* truncated 2-byte */
	    "\"\xc3x\"",                /* missing continuation */
	    "\"\xe2\x82\"",             /* truncated 3-byte */
	    "\"\xf0\x9f\x98\"",         /* truncated 4-byte */
	    "\"\xc0\xaf\"",             /* overlong '/' */
	    "\"\xc1\xbf\"",             /* overlong */
	    "\"\xe0\x80\xaf\"",         /* overlong 3-byte */
	    "\"\xf0\x80\x80\xaf\"",     /* overlong 4-byte */
	    "\"\xed\xa0\x80\"",         /* U+D800 */
	    "\"\xed\xbf\xbf\"",         /* U+DFFF */
	    "\"\xf4\x90\x80\x80\"",     /* U+110000 */
	    "\"\xf5\x80\x80\x80\"",     /* lead byte above 0xf4 */
	    "\"\xf8\x88\x80\x80\x80\"", /* 5-byte form */
	    "\"\xfe\"",
	    "\"\xff\"",
	};
	for (size_t i = 0; i < CP_ARRAY_SIZE(bad); i++)
		parse_bad(bad[i], "invalid UTF-8 in string");
	/* In a key too, and the position names the bad character. */
	parse_bad("{\"ok\":1, \"k\xff\":2}",
		  "JSON line 1 column 12: invalid UTF-8 in string");
	/* The boundaries that are valid. */
	string_is("[\"\xc2\x80\xdf\xbf\"]", "\xc2\x80\xdf\xbf", 4);
	string_is("[\"\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\"]",
		  "\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80", 9);
	string_is("[\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"]",
		  "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 8);
}

/* ---- numbers ------------------------------------------------------------- */

static cp_json *number(const char *text)
{
	cp_json *v = parse_ok(text);
	assert_int_equal(cp_json_type(v), CP_JSON_NUMBER);
	assert_string_equal(cp_json_number_text(v), text);
	return v;
}

static void u64_is(const char *text, int want_r, uint64_t want)
{
	cp_json *v = number(text);
	uint64_t x = 12345;
	int r = cp_json_u64(v, &x);
	if (r != want_r)
		fail_msg("u64 of %s: %d, want %d", text, r, want_r);
	assert_int_equal(x, want_r == 0 ? want : 12345);
	cp_json_free(v);
}

static void i64_is(const char *text, int want_r, int64_t want)
{
	cp_json *v = number(text);
	int64_t x = 12345;
	int r = cp_json_i64(v, &x);
	if (r != want_r)
		fail_msg("i64 of %s: %d, want %d", text, r, want_r);
	assert_true(x == (want_r == 0 ? want : 12345));
	cp_json_free(v);
}

static void test_numbers(void **state)
{
	(void)state;
	u64_is("0", 0, 0);
	u64_is("-0", 0, 0);
	u64_is("1", 0, 1);
	u64_is("18446744073709551615", 0, UINT64_MAX);
	u64_is("18446744073709551616", -ERANGE, 0);
	u64_is("99999999999999999999", -ERANGE, 0);
	u64_is("-1", -ERANGE, 0);
	u64_is("1.0", -EINVAL, 0);
	u64_is("1e3", -EINVAL, 0);
	u64_is("1E3", -EINVAL, 0);

	i64_is("0", 0, 0);
	i64_is("-0", 0, 0);
	i64_is("9223372036854775807", 0, INT64_MAX);
	i64_is("9223372036854775808", -ERANGE, 0);
	i64_is("-9223372036854775808", 0, INT64_MIN);
	i64_is("-9223372036854775809", -ERANGE, 0);
	i64_is("-18446744073709551616", -ERANGE, 0);
	i64_is("-5", 0, -5);
	i64_is("-5.5", -EINVAL, 0);

	double d;
	cp_json *v = number("1.7976931348623157e308");
	assert_int_equal(cp_json_double(v, &d), 0);
	assert_true(d == 1.7976931348623157e308);
	cp_json_free(v);
	v = number("1e309");
	assert_int_equal(cp_json_double(v, &d), -ERANGE);
	cp_json_free(v);
	v = number("-1e309");
	assert_int_equal(cp_json_double(v, &d), -ERANGE);
	cp_json_free(v);
	/* Underflow is not an error: the value is (near) zero. */
	v = number("1e-400");
	assert_int_equal(cp_json_double(v, &d), 0);
	assert_true(d >= 0 && d < 1e-300);
	cp_json_free(v);
	v = number("-0.0e-0");
	assert_int_equal(cp_json_double(v, &d), 0);
	assert_true(d == 0);
	cp_json_free(v);
	v = number("123");
	assert_int_equal(cp_json_double(v, &d), 0);
	assert_true(d == 123);
	cp_json_free(v);
	/* Integers of any length keep their text. */
	cp_json_free(number("123456789012345678901234567890"));
	cp_json_free(number("0.000000000000000000000000000001"));
}

/* ---- duplicate keys ------------------------------------------------------ */

static void test_duplicate_keys(void **state)
{
	(void)state;
	parse_bad("{\"a\":1,\"a\":2}", "duplicate key \"a\" in object");
	parse_bad("{\"a\":1,\"b\":2,\"c\":3,\"b\":4}", "duplicate key \"b\"");
	/* Keys compare after decoding. */
	parse_bad("{\"a\":1,\"\\u0061\":2}", "duplicate key \"a\"");
	parse_bad("{\"\xc3\xa9\":1,\"\\u00e9\":2}", "duplicate key");
	/* In a nested object; the position is the object's brace. */
	parse_bad("[1, {\"x\":{},\"x\":[]}]",
		  "JSON line 1 column 5: duplicate key \"x\"");
	/* Same key in different objects, or differing keys: fine. */
	cp_json *v = parse_ok("[{\"a\":1},{\"a\":2},{\"a\":{\"a\":3}}]");
	cp_json_free(v);
	v = parse_ok("{\"a\":1,\"A\":2,\"a \":3,\"\":4}");
	assert_int_equal(cp_json_count(v), 4);
	assert_non_null(cp_json_get(v, ""));
	cp_json_free(v);
	/* Many keys (the check sorts them). */
	char buf[20000];
	size_t o = 0;
	buf[o++] = '{';
	for (int i = 0; i < 1000; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s\"k%d\":%d",
				      i ? "," : "", (i * 7919) % 1000, i);
	buf[o++] = '}';
	buf[o] = '\0';
	v = parse_ok(buf);
	assert_int_equal(cp_json_count(v), 1000);
	cp_json_free(v);
	buf[o - 1] = '\0';
	strcat(buf, ",\"k999\":0}");
	parse_bad(buf, "duplicate key \"k999\"");
}

/* ---- common/utf8.c ------------------------------------------------------- */

static void test_utf8(void **state)
{
	(void)state;
	size_t len;
	assert_int_equal(cp_utf8_decode("A", 1, &len), 'A');
	assert_int_equal(len, 1);
	assert_int_equal(cp_utf8_decode("", 1, &len), 0);
	assert_int_equal(len, 1);
	assert_int_equal(cp_utf8_decode("A", 0, &len), -1);
	assert_int_equal(cp_utf8_decode("\xc3\xa9", 2, &len), 0xe9);
	assert_int_equal(len, 2);
	assert_int_equal(cp_utf8_decode("\xe2\x82\xac", 3, &len), 0x20ac);
	assert_int_equal(len, 3);
	assert_int_equal(cp_utf8_decode("\xf4\x8f\xbf\xbf", 4, &len),
			 0x10ffff);
	assert_int_equal(len, 4);
	/* Invalid, or cut short by n: -1 and one byte. */
	assert_int_equal(cp_utf8_decode("\xc3\xa9", 1, &len), -1);
	assert_int_equal(len, 1);
	assert_int_equal(cp_utf8_decode("\xf0\x9f\x98\x80", 3, &len), -1);
	assert_int_equal(len, 1);
	assert_int_equal(cp_utf8_decode("\xc0\x80", 2, &len), -1);
	assert_int_equal(len, 1);
	assert_int_equal(cp_utf8_decode("\xed\xa0\x80", 3, &len), -1);
	assert_int_equal(cp_utf8_decode("\xf4\x90\x80\x80", 4, &len), -1);
	assert_int_equal(cp_utf8_decode("\x80", 1, &len), -1);

	/* Every code point encodes and decodes back, surrogates aside. */
	char buf[4];
	for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
		if (cp >= 0xd800 && cp <= 0xdfff)
			continue;
		size_t n = cp_utf8_encode(buf, cp);
		assert_int_equal(n, cp < 0x80      ? 1
				    : cp < 0x800   ? 2
				    : cp < 0x10000 ? 3
						   : 4);
		if (cp_utf8_decode(buf, n, &len) != (int32_t)cp || len != n)
			fail_msg("U+%04X does not round-trip", cp);
	}

	assert_true(cp_utf8_valid("", 0));
	assert_true(cp_utf8_valid("a\xc3\xa9\xf0\x9f\x98\x80", 7));
	assert_true(cp_utf8_valid("a\0b", 3));
	assert_false(cp_utf8_valid("a\xc3\xa9\xf0\x9f\x98\x80", 6));
	assert_false(cp_utf8_valid("\xff", 1));
}

/* ---- the writer (common/jsonw.c) reads back ------------------------------ */

static void test_writer_round_trip(void **state)
{
	(void)state;
	struct cp_jsonw w;
	cp_jsonw_init(&w);
	cp_jsonw_obj_begin(&w, NULL);
	cp_jsonw_str(&w, "s", "q\"b\\n\nt\t\x01\x7f \xc3\xa9 \xf0\x9f\x98\x80");
	cp_jsonw_str(&w, "bad", "a\xff" "b\xc0\xaf");
	cp_jsonw_i64(&w, "min", INT64_MIN);
	cp_jsonw_u64(&w, "max", UINT64_MAX);
	cp_jsonw_bool(&w, "t", true);
	cp_jsonw_null(&w, "n");
	cp_jsonw_arr_begin(&w, "a");
	cp_jsonw_str_or_null(&w, NULL, "");
	cp_jsonw_double(&w, NULL, 0.5);
	cp_jsonw_arr_end(&w);
	cp_jsonw_obj_end(&w);
	assert_int_equal(cp_jsonw_error(&w), 0);
	assert_null(memchr(w.buf, '\n', w.len));

	cp_json *v = NULL;
	assert_int_equal(cp_json_parse(w.buf, w.len, NULL, &v), 0);
	assert_string_equal(
	    cp_json_string(cp_json_get(v, "s"), NULL),
	    "q\"b\\n\nt\t\x01\x7f \xc3\xa9 \xf0\x9f\x98\x80");
	/* Invalid UTF-8 became U+FFFD, one per bad byte. */
	assert_string_equal(cp_json_string(cp_json_get(v, "bad"), NULL),
			    "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd");
	int64_t i;
	uint64_t u;
	assert_int_equal(cp_json_i64(cp_json_get(v, "min"), &i), 0);
	assert_true(i == INT64_MIN);
	assert_int_equal(cp_json_u64(cp_json_get(v, "max"), &u), 0);
	assert_true(u == UINT64_MAX);
	const cp_json *a = cp_json_get(v, "a");
	assert_int_equal(cp_json_type(cp_json_at(a, 0)), CP_JSON_NULL);
	double d;
	assert_int_equal(cp_json_double(cp_json_at(a, 1), &d), 0);
	assert_true(d == 0.5);

	/* A parsed value written again is the same text. */
	struct cp_jsonw w2;
	cp_jsonw_init(&w2);
	cp_jsonw_value(&w2, NULL, v);
	assert_int_equal(cp_jsonw_error(&w2), 0);
	assert_int_equal(w2.len, w.len);
	assert_memory_equal(w2.buf, w.buf, w.len);
	cp_jsonw_free(&w2);
	cp_json_free(v);
	cp_jsonw_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_scalars),
	    cmocka_unit_test(test_containers),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_position),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_escapes),
	    cmocka_unit_test(test_surrogates),
	    cmocka_unit_test(test_invalid_utf8),
	    cmocka_unit_test(test_numbers),
	    cmocka_unit_test(test_duplicate_keys),
	    cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_writer_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
