/* common/iov.h - scatter/gather helpers. */
#ifndef CP_IOV_H
#define CP_IOV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Total bytes described by iov. */
size_t cp_iov_size(const struct iovec *iov, int cnt);
/* Describe bytes [skip, skip+len) of iov in out (at most max entries).
 * Returns the number of entries used, or -E2BIG if max is too small. */
int cp_iov_slice(const struct iovec *iov, int cnt, size_t skip, size_t len,
		 struct iovec *out, int max);
/* Copy between a flat buffer and bytes [skip, skip+len) of iov. */
void cp_iov_to_buf(const struct iovec *iov, int cnt, size_t skip, void *buf,
		   size_t len);
void cp_iov_from_buf(const struct iovec *iov, int cnt, size_t skip,
		     const void *buf, size_t len);
void cp_iov_memset(const struct iovec *iov, int cnt, size_t skip, int c,
		   size_t len);
/* True if every byte of [skip, skip+len) is zero. */
int cp_iov_is_zero(const struct iovec *iov, int cnt, size_t skip, size_t len);

#endif
