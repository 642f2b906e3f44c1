/* common/sock.c - socket helpers shared by cowpoold and the cowpool CLI. */
#include <errno.h>
#include <sys/socket.h>

#include "common.h"

int cp_send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
