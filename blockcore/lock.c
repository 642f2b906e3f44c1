/* blockcore/lock.c - image locks that QEMU understands.
 *
 * The scheme (the contract is in blockcore.h): open file description
 * locks, all of them read locks, on single bytes of the image file:
 * 100 + i while the open holds permission bit i, 200 + i while it refuses
 * to share bit i.  A conflict is a byte someone else has read-locked,
 * found by asking F_OFD_GETLK whether a write lock could be taken there:
 * the kernel ignores the asking description's own locks, so the test sees
 * other opens only (other processes and other opens in this process).
 *
 * A change of permissions goes as QEMU's does, in three steps: lock the
 * bytes of old | new permissions and of old | new unshared bits (never
 * unlocking, so another opener sees at least the old state all along),
 * test the bytes the new set needs free, then unlock what only the old set
 * needed (or, on a conflict, what only the new one did).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "blockcore_int.h"

/* Libvirt uses byte 0; QEMU starts at 100 and 200 (block/file-posix.c). */
#define BC_LOCK_PERM_BASE 100
#define BC_LOCK_SHARED_BASE 200
#define BC_PERM_BITS 4 /* CP_PERM_ALL == (1 << BC_PERM_BITS) - 1 */

const char *cp_perm_name(unsigned bit)
{
	switch (bit) {
	case CP_PERM_CONSISTENT_READ: return "consistent read";
	case CP_PERM_WRITE: return "write";
	case CP_PERM_WRITE_UNCHANGED: return "write unchanged";
	case CP_PERM_RESIZE: return "resize";
	default: return "?";
	}
}

/* Where dev's lock bytes go; false if the device locks nothing (RAM). */
static bool lock_target(cp_bdev *dev, int *fd, uint64_t *base)
{
	return dev->backend->lock_target &&
	       dev->backend->lock_target(dev, fd, base);
}

bool bc_fd_lock_target(cp_bdev *dev, int *fd, uint64_t *base)
{
	*fd = dev->fd;
	*base = 0;
	return dev->fd >= 0;
}

/* fcntl(fd, cmd) on the byte at off with lock type *type; for
 * F_OFD_GETLK *type becomes the type of a lock held there (F_UNLCK:
 * none).  0 or -errno. */
static int ofd_fcntl(int fd, int cmd, uint64_t off, short *type)
{
	struct flock fl = {
		.l_whence = SEEK_SET,
		.l_start = (off_t)off,
		.l_len = 1,
		.l_type = *type,
	};
	if (fcntl(fd, cmd, &fl) < 0)
		return -errno;
	*type = fl.l_type;
	return 0;
}

static int ofd_lock(int fd, uint64_t off, short type)
{
	return ofd_fcntl(fd, F_OFD_SETLK, off, &type);
}

/* 0 if byte off could be write-locked by fd (nobody else holds a lock
 * there), -EBUSY if another open holds one, -errno on failure. */
static int ofd_test(int fd, uint64_t off)
{
	short type = F_WRLCK;
	int r = ofd_fcntl(fd, F_OFD_GETLK, off, &type);
	if (r < 0)
		return r;
	return type == F_UNLCK ? 0 : -EBUSY;
}

/* Make the locked bytes of lk cover perm / unshared; with unlock, also drop
 * the bytes outside them.  Returns 0 or -errno with a message. */
static int apply(cp_bdev *dev, struct bc_lock *lk, int fd, uint64_t base,
		 unsigned perm, unsigned unshared, bool unlock)
{
	for (int pass = 0; pass < 2; pass++) {
		unsigned want = pass ? unshared : perm;
		unsigned *have = pass ? &lk->locked_unshared : &lk->locked_perm;
		uint64_t off0 = base + (pass ? BC_LOCK_SHARED_BASE : BC_LOCK_PERM_BASE);
		for (unsigned i = 0; i < BC_PERM_BITS; i++) {
			unsigned bit = 1u << i;
			int r;
			if ((want & bit) && !(*have & bit)) {
				r = ofd_lock(fd, off0 + i, F_RDLCK);
				if (r < 0)
					return cp_error(r, "%s: Failed to lock byte %llu: %s",
							dev->name, (unsigned long long)(off0 + i),
							strerror(-r));
				*have |= bit;
			} else if (unlock && (*have & bit) && !(want & bit)) {
				r = ofd_lock(fd, off0 + i, F_UNLCK);
				if (r < 0)
					return cp_error(r, "%s: Failed to unlock byte %llu: %s",
							dev->name, (unsigned long long)(off0 + i),
							strerror(-r));
				*have &= ~bit;
			}
		}
	}
	return 0;
}

/* Does one "lock:" line of /proc/PID/fdinfo/FD cover byte off of the file
 * whose key is "maj:min:ino"? */
static bool fdinfo_line_covers(const char *line, const char *key, uint64_t off)
{
	const char *p = strstr(line, key);
	if (!p || (p[strlen(key)] != ' ') || (p > line && p[-1] != ' '))
		return false;
	unsigned long long start;
	char end[32];
	if (sscanf(p + strlen(key), " %llu %31s", &start, end) != 2)
		return false;
	if (off < start)
		return false;
	return !strcmp(end, "EOF") || off <= strtoull(end, NULL, 10);
}

/* Name the process holding a lock on byte off of fd's file ("qemu-nbd,
 * pid 4242"), skipping fd itself in this process.  Reads /proc/PID/fdinfo,
 * which lists the locks of each open file description; returns false when
 * it finds none (not permitted to look, or the holder is on another host
 * of a shared file system). */
static bool find_holder(int fd, uint64_t off, char *out, size_t len)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return false;
	char key[64];
	snprintf(key, sizeof(key), "%02x:%02x:%llu", major(st.st_dev),
		 minor(st.st_dev), (unsigned long long)st.st_ino);
	DIR *proc = opendir("/proc");
	if (!proc)
		return false;
	pid_t self = getpid();
	bool found = false;
	struct dirent *pe;
	while (!found && (pe = readdir(proc))) {
		char *endp;
		long pid = strtol(pe->d_name, &endp, 10);
		if (*endp || pid <= 0)
			continue;
		char path[64];
		snprintf(path, sizeof(path), "/proc/%ld/fdinfo", pid);
		DIR *fds = opendir(path);
		if (!fds)
			continue;
		struct dirent *fe;
		while (!found && (fe = readdir(fds))) {
			long n = strtol(fe->d_name, &endp, 10);
			if (*endp || fe->d_name[0] == '.' || (pid == self && n == fd))
				continue;
			char fpath[320];
			snprintf(fpath, sizeof(fpath), "/proc/%ld/fdinfo/%s", pid,
				 fe->d_name);
			FILE *f = fopen(fpath, "re");
			if (!f)
				continue;
			char line[256];
			while (fgets(line, sizeof(line), f))
				if (!strncmp(line, "lock:", 5) &&
				    fdinfo_line_covers(line, key, off)) {
					found = true;
					break;
				}
			fclose(f);
		}
		closedir(fds);
		if (!found)
			continue;
		char comm[64] = "?";
		snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
		FILE *f = fopen(path, "re");
		if (f) {
			if (fgets(comm, sizeof(comm), f))
				comm[strcspn(comm, "\n")] = '\0';
			fclose(f);
		}
		if (pid == self)
			snprintf(out, len, "another open in this process, %s pid %ld",
				 comm, pid);
		else
			snprintf(out, len, "%s, pid %ld", comm, pid);
	}
	closedir(proc);
	return found;
}

static int conflict(cp_bdev *dev, int fd, uint64_t off, bool shared,
		    unsigned bit)
{
	char holder[160];
	if (find_holder(fd, off, holder, sizeof(holder)))
		return cp_error(-EBUSY, "%s: Failed to get %s\"%s\" lock: another process is using the image (%s)",
				dev->name, shared ? "shared " : "",
				cp_perm_name(bit), holder);
	return cp_error(-EBUSY, "%s: Failed to get %s\"%s\" lock: is another process using the image?",
			dev->name, shared ? "shared " : "", cp_perm_name(bit));
}

/* Test the lock bytes first + i for every bit i of mask; shared: a
 * conflict is reported as qemu's "shared" lock (we would not share). */
static int check_bytes(cp_bdev *dev, int fd, uint64_t base, unsigned mask,
		       unsigned first, bool shared)
{
	for (unsigned i = 0; i < BC_PERM_BITS; i++) {
		unsigned bit = 1u << i;
		if (!(mask & bit))
			continue;
		int r = ofd_test(fd, base + first + i);
		if (r == -EBUSY)
			return conflict(dev, fd, base + first + i, shared, bit);
		if (r < 0)
			return cp_error(r, "%s: testing lock byte %u: %s", dev->name,
					first + i, strerror(-r));
	}
	return 0;
}

/* Test the bytes that taking perm and not sharing ~shared need free. */
static int check(cp_bdev *dev, int fd, uint64_t base, unsigned perm,
		 unsigned unshared)
{
	int r = check_bytes(dev, fd, base, perm, BC_LOCK_SHARED_BASE, false);
	if (r < 0)
		return r;
	return check_bytes(dev, fd, base, unshared, BC_LOCK_PERM_BASE, true);
}

int cp_bdev_set_perm(cp_bdev *dev, unsigned perm, unsigned shared)
{
	CP_API_ENTER();
	struct bc_lock *lk = &dev->lock;
	unsigned unshared = ~shared & CP_PERM_ALL;
	int fd;
	uint64_t base;
	if ((perm | shared) & ~CP_PERM_ALL)
		return cp_error(-EINVAL, "%s: unknown permission bits 0x%x",
				dev->name, (perm | shared) & ~CP_PERM_ALL);
	if (!lock_target(dev, &fd, &base)) {
		lk->perm = perm;
		lk->unshared = unshared;
		return 0;
	}
	if ((lk->perm | perm) == lk->perm &&
	    (lk->unshared | unshared) == lk->unshared) {
		/* only dropping: unlocking cannot conflict */
		int r = apply(dev, lk, fd, base, perm, unshared, true);
		lk->perm = perm;
		lk->unshared = unshared;
		return r;
	}
	int r = apply(dev, lk, fd, base, lk->perm | perm,
		      lk->unshared | unshared, false);
	if (r == 0)
		r = check(dev, fd, base, perm, unshared);
	if (r < 0) {
		/* back to the old set; the message of r stays */
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", cp_error_msg(r));
		apply(dev, lk, fd, base, lk->perm, lk->unshared, true);
		return cp_error(r, "%s", msg);
	}
	r = apply(dev, lk, fd, base, perm, unshared, true);
	lk->perm = perm;
	lk->unshared = unshared;
	return r;
}

void cp_bdev_get_perm(const cp_bdev *dev, unsigned *perm, unsigned *shared)
{
	*perm = dev->lock.perm;
	*shared = ~dev->lock.unshared & CP_PERM_ALL;
}

int cp_bdev_lock_adopt(cp_bdev *dev, const cp_bdev *from)
{
	CP_API_ENTER();
	struct bc_lock *lk = &dev->lock;
	int fd;
	uint64_t base;
	if (!lock_target(dev, &fd, &base)) {
		lk->perm = from->lock.perm;
		lk->unshared = from->lock.unshared;
		return 0;
	}
	int r = apply(dev, lk, fd, base, from->lock.perm, from->lock.unshared,
		      true);
	if (r == 0) {
		lk->perm = from->lock.perm;
		lk->unshared = from->lock.unshared;
	}
	return r;
}
