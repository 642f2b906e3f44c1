/* tests/sanlock/memlock_shim.c - LD_PRELOAD shim for the sanlock daemon in
 * a test sandbox without CAP_SYS_RESOURCE (harness.sh uses it only when
 * the daemon cannot start without it).
 *
 * The daemon raises RLIMIT_MEMLOCK (and RLIMIT_RTPRIO with -h 1) to
 * unlimited at start-up and exits when that fails ("cannot set the limits
 * for memlock 1").  The sandbox lacks CAP_SYS_RESOURCE, so the call fails
 * with EPERM.  This library makes a failed setrlimit() of those two limits
 * report success; every other call goes to libc unchanged.  The harness
 * (harness.sh) preloads it only when a plain start of the daemon fails.
 *
 * <sys/resource.h> is deliberately not included: with _FILE_OFFSET_BITS=64
 * it renames setrlimit to setrlimit64, and this file must define both
 * symbols.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <linux/resource.h> /* RLIMIT_MEMLOCK, RLIMIT_RTPRIO */

typedef int (*setrlimit_fn)(int, const void *);

#define SHIM_EXPORT __attribute__((visibility("default")))

int setrlimit(int res, const void *rl);
int setrlimit64(int res, const void *rl);

static int shim_call(const char *sym, int res, const void *rl)
{
	setrlimit_fn real = (setrlimit_fn)(void (*)(void))dlsym(RTLD_NEXT, sym);
	int rv = real ? real(res, rl) : -1;

	if (rv < 0 && (res == RLIMIT_MEMLOCK || res == RLIMIT_RTPRIO))
		return 0;
	return rv;
}

SHIM_EXPORT int setrlimit(int res, const void *rl)
{
	return shim_call("setrlimit", res, rl);
}

SHIM_EXPORT int setrlimit64(int res, const void *rl)
{
	return shim_call("setrlimit64", res, rl);
}
