/* daemon/log.c - cowpoold's one log sink: fd 2 (stderr, or the log_file
 * opened onto it), one line per message with a UTC ISO-8601 timestamp,
 * the pid and the level.  Debug messages cost one branch when off
 * (dmn_debug). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cowpoold.h"

static atomic_int dmn_level = DMN_LOG_INFO;

int dmn_log_parse_level(const char *s)
{
	if (!strcasecmp(s, "error"))
		return DMN_LOG_ERROR;
	if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning"))
		return DMN_LOG_WARN;
	if (!strcasecmp(s, "info"))
		return DMN_LOG_INFO;
	if (!strcasecmp(s, "debug"))
		return DMN_LOG_DEBUG;
	return -EINVAL;
}

void dmn_log_set_level(enum dmn_log_level l)
{
	atomic_store(&dmn_level, (int)l);
}

bool dmn_log_enabled(enum dmn_log_level l)
{
	return (int)l <= atomic_load_explicit(&dmn_level, memory_order_relaxed);
}

void dmn_log(enum dmn_log_level l, const char *fmt, ...)
{
	static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
	int saved = errno;
	if (!dmn_log_enabled(l)) {
		errno = saved;
		return;
	}
	char line[2048];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n,
			      ".%03ldZ cowpoold[%ld] %s: ",
			      ts.tv_nsec / 1000000, (long)getpid(), names[l]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += CP_MIN((size_t)m, sizeof(line) - n - 2);
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
	errno = saved;
}

int dmn_log_open(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC |
				O_NOCTTY, 0640);
	if (fd < 0)
		return -errno;
	/* dup2 replaces fd 2 atomically: a line being written goes to the
	 * old file or the new one, whole. */
	int r = dup2(fd, STDERR_FILENO) < 0 ? -errno : 0;
	close(fd);
	return r;
}
