/* common/error.c - per-thread last error and small utilities. */
#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The calling thread's last error: the -errno a function returned and the
 * message it recorded for it, kept together so a message is only ever
 * reported for the errno it was written for (docs/hacking.md, Errors). */
static _Thread_local int last_errno;
static _Thread_local char last_error[1024];
/* How many public entry points (CP_API_ENTER) are active on this thread. */
static _Thread_local unsigned api_depth;

int cp_error(int err, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	last_errno = err;
	errno = saved;
	return err;
}

int cp_error_prefix(int err, const char *fmt, ...)
{
	int saved = errno;
	char prefix[512], old[sizeof(last_error) - 520];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	/* Only a message recorded for this very errno belongs to it: anything
	 * else is left over from an earlier failure. */
	const char *m = cp_error_msg(err);
	size_t n = strnlen(m, sizeof(old) - 1);
	memcpy(old, m, n);
	old[n] = 0;
	snprintf(last_error, sizeof(last_error), "%s: %s", prefix, old);
	last_errno = err;
	errno = saved;
	return err;
}

const char *cp_error_msg(int err)
{
	if (err < 0 && err == last_errno && last_error[0])
		return last_error;
	return strerror(err < 0 ? -err : err);
}

int cp_last_errno(void)
{
	return last_errno;
}

const char *cp_last_error(void)
{
	return last_error;
}

void cp_clear_error(void)
{
	last_errno = 0;
	last_error[0] = 0;
}

unsigned cp_api_enter(void)
{
	if (api_depth++ == 0)
		cp_clear_error();
	return api_depth;
}

void cp_api_leave(unsigned *depth)
{
	(void)depth;
	api_depth--;
}

bool cp_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len && ((uintptr_t)p & 7)) {
		if (*p)
			return false;
		p++;
		len--;
	}
	const uint64_t *q = (const uint64_t *)(const void *)p;
	while (len >= 32) {
		if (q[0] | q[1] | q[2] | q[3])
			return false;
		q += 4;
		len -= 32;
	}
	p = (const uint8_t *)q;
	while (len--) {
		if (*p++)
			return false;
	}
	return true;
}

/* qemu-img's size grammar (QEMU's qemu_strtosz): a decimal number with an
 * optional fraction ("1.5M", the fraction needs a suffix), or a hex number
 * ("0x1000", suffix allowed as QEMU still allows it); leading whitespace and
 * '+' as strtoull takes them; suffixes b/B k/K m/M g/G t/T p/P e/E, and
 * cowpool's own "KiB" / "KB" spellings. */
int cp_parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!s)
		return -EINVAL;
	while (*s == ' ' || (*s >= '\t' && *s <= '\r'))
		s++;
	if (!*s || *s == '-')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	double frac = 0;
	if (v == 0 && (*end == 'x' || *end == 'X')) {
		const char *digits = end + 1;
		errno = 0;
		v = strtoull(s, &end, 16);
		if (errno || end == digits || *end == '.')
			return -EINVAL;
	} else if (*end == '.') {
		double scale = 0.1;
		for (end++; *end >= '0' && *end <= '9'; end++) {
			frac += (*end - '0') * scale;
			scale /= 10;
		}
	}
	unsigned shift = 0;
	if (*end) {
		switch (*end) {
		case 'b': case 'B': shift = 0; break;
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		case 't': case 'T': shift = 40; break;
		case 'p': case 'P': shift = 50; break;
		case 'e': case 'E': shift = 60; break;
		default: return -EINVAL;
		}
		end++;
		if (*end == 'i' && end[1] == 'B')
			end += 2;
		else if (*end == 'B' && shift)
			end++;
		if (*end)
			return -EINVAL;
	}
	if (frac != 0 && !shift)
		return -EINVAL; /* a fraction of a byte */
	if (shift && v > (UINT64_MAX >> shift))
		return -EINVAL;
	uint64_t r = (uint64_t)v << shift;
	if (frac != 0) {
		double f = frac * (double)(1ull << shift);
		if ((double)(UINT64_MAX - r) < f)
			return -EINVAL;
		r += (uint64_t)f;
	}
	*out = r;
	return 0;
}
