/* common/utf8.c - the one UTF-8 decoder and encoder (see common.h).
 *
 * Strict RFC 3629: a lead byte announces 2, 3 or 4 bytes, each following
 * byte is a continuation byte (10xxxxxx), and the code point is neither an
 * overlong form, nor a UTF-16 surrogate (U+D800..U+DFFF), nor above
 * U+10FFFF.  NUL is a valid one-byte sequence; callers that store C
 * strings refuse it themselves.
 */
#include <string.h>

#include "common.h"

int32_t cp_utf8_decode(const void *s, size_t n, size_t *len)
{
	const uint8_t *b = s;
	size_t l;
	uint32_t cp, min;

	*len = 1;
	if (n == 0)
		return -1;
	if (b[0] < 0x80)
		return b[0];
	if ((b[0] & 0xe0) == 0xc0)
		l = 2, cp = b[0] & 0x1fu, min = 0x80;
	else if ((b[0] & 0xf0) == 0xe0)
		l = 3, cp = b[0] & 0x0fu, min = 0x800;
	else if ((b[0] & 0xf8) == 0xf0)
		l = 4, cp = b[0] & 0x07u, min = 0x10000;
	else
		return -1; /* a continuation byte, or 0xf8..0xff */
	if (n < l)
		return -1;
	for (size_t i = 1; i < l; i++) {
		if ((b[i] & 0xc0) != 0x80)
			return -1;
		cp = cp << 6 | (b[i] & 0x3fu);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*len = l;
	return (int32_t)cp;
}

size_t cp_utf8_encode(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

bool cp_utf8_valid(const void *s, size_t n)
{
	const uint8_t *b = s;
	size_t i = 0, l;

	while (i < n) {
		if (cp_utf8_decode(b + i, n - i, &l) < 0)
			return false;
		i += l;
	}
	return true;
}
