/* common/iov.c - scatter/gather helpers. */
#include "iov.h"
#include "common.h"

#include <errno.h>
#include <string.h>

size_t cp_iov_size(const struct iovec *iov, int cnt)
{
	size_t n = 0;
	for (int i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	return n;
}

int cp_iov_slice(const struct iovec *iov, int cnt, size_t skip, size_t len,
		 struct iovec *out, int max)
{
	int n = 0;
	for (int i = 0; i < cnt && len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		if (n == max)
			return -E2BIG;
		size_t l = CP_MIN(iov[i].iov_len - skip, len);
		out[n].iov_base = (char *)iov[i].iov_base + skip;
		out[n].iov_len = l;
		n++;
		len -= l;
		skip = 0;
	}
	return n;
}

#define IOV_WALK(body)                                                         \
	for (int i = 0; i < cnt && len; i++) {                                 \
		if (skip >= iov[i].iov_len) {                                  \
			skip -= iov[i].iov_len;                                \
			continue;                                              \
		}                                                              \
		size_t l = CP_MIN(iov[i].iov_len - skip, len);                 \
		char *p = (char *)iov[i].iov_base + skip;                      \
		body;                                                          \
		len -= l;                                                      \
		skip = 0;                                                      \
	}

void cp_iov_to_buf(const struct iovec *iov, int cnt, size_t skip, void *buf,
		   size_t len)
{
	char *b = buf;
	IOV_WALK({
		memcpy(b, p, l);
		b += l;
	})
}

void cp_iov_from_buf(const struct iovec *iov, int cnt, size_t skip,
		     const void *buf, size_t len)
{
	const char *b = buf;
	IOV_WALK({
		memcpy(p, b, l);
		b += l;
	})
}

void cp_iov_memset(const struct iovec *iov, int cnt, size_t skip, int c,
		   size_t len)
{
	IOV_WALK({ memset(p, c, l); })
}

int cp_iov_is_zero(const struct iovec *iov, int cnt, size_t skip, size_t len)
{
	IOV_WALK({
		if (!cp_is_zero(p, l))
			return 0;
	})
	return 1;
}
