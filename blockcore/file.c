/* blockcore/file.c - the medium of the fd backends (io_uring, libaio,
 * threads): the size and the synchronous range operations of a regular
 * file or a block device, and the fixed-size device rules a block device
 * shares with the linear device (lv.c).
 *
 * bdev.c has checked the range (and read-only) and passed the fault point
 * before any of these runs.  fallocate() is serialised against the RMW
 * path of O_DIRECT devices (bdev.c) through the write-range lock.
 */
#include "blockcore_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include "cleanup.h"

int64_t bc_fd_size(cp_bdev *dev)
{
	if (dev->is_blockdev) {
		uint64_t sz;
		if (ioctl(dev->fd, BLKGETSIZE64, &sz) < 0)
			return -errno;
		return (int64_t)sz;
	}
	struct stat st;
	if (fstat(dev->fd, &st) < 0)
		return -errno;
	return st.st_size;
}

/* Lock the aligned superset against the RMW path (O_DIRECT only). */
static int bc_range_lock_sync(cp_bdev *dev, uint64_t offset, uint64_t len,
			      struct bc_range *rg)
{
	if (!dev->direct)
		return 0;
	rg->start = CP_ALIGN_DOWN(offset, dev->align);
	rg->end = CP_ALIGN_UP(offset + len, dev->align);
	return bc_range_lock(dev, *rg, false);
}

static void bc_range_unlock_sync(cp_bdev *dev, struct bc_range rg)
{
	if (dev->direct)
		bc_range_unlock(dev, rg, false);
}

/* fallocate() serialised against the RMW path; returns 0 or -errno. */
static int bc_fallocate(cp_bdev *dev, int mode, uint64_t offset, uint64_t len)
{
	struct bc_range rg;
	int r = bc_range_lock_sync(dev, offset, len, &rg);
	if (r < 0)
		return r;
	if (fallocate(dev->fd, mode, (off_t)offset, (off_t)len) < 0)
		r = -errno;
	bc_range_unlock_sync(dev, rg);
	return r;
}

static bool bc_unsupported(int r)
{
	return r == -EOPNOTSUPP || r == -ENOTSUP || r == -ENOSYS ||
	       r == -EINVAL || r == -ENOTTY;
}

/* Write zero buffers over [offset, offset+len) through the normal path. */
static int bc_write_zero_buffers(cp_bdev *dev, uint64_t offset, uint64_t len)
{
	size_t blen = (size_t)CP_MIN((uint64_t)BC_CHUNK, len);
	CP_CLEANUP_FREE void *buf = cp_bdev_alloc_buf(blen);
	if (!buf)
		return cp_error(-ENOMEM, "%s: write zeroes: out of memory",
				dev->name);
	memset(buf, 0, blen);
	uint64_t end = offset + len;
	for (uint64_t pos = offset; pos < end;) {
		size_t n = (size_t)CP_MIN((uint64_t)blen, end - pos);
		/* Keep the bulk aligned so only the edges take the RMW path. */
		if (dev->direct && !CP_IS_ALIGNED(pos, dev->align))
			n = (size_t)CP_MIN((uint64_t)n,
					   CP_ALIGN_UP(pos, dev->align) - pos);
		int r = cp_bdev_pwrite(dev, buf, n, pos);
		if (r < 0)
			return r;
		pos += n;
	}
	return 0;
}

int bc_fd_discard(cp_bdev *dev, uint64_t offset, uint64_t len)
{
	int r = 0;
	if (len == 0)
		return 0;
	if (dev->is_blockdev) {
		int64_t size = bc_fd_size(dev);
		if (size < 0)
			return cp_error((int)size, "%s: discard: size: %s",
					dev->name, strerror((int)-size));
		uint64_t s = CP_ALIGN_UP(offset, dev->lbs);
		uint64_t e = CP_MIN(CP_ALIGN_DOWN(offset + len, dev->lbs),
				    (uint64_t)size);
		if (s >= e)
			return 0;
		uint64_t range[2] = {s, e - s};
		if (ioctl(dev->fd, BLKDISCARD, range) < 0)
			r = -errno;
	} else {
		r = bc_fallocate(dev,
				 FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				 offset, len);
	}
	if (r < 0) {
		if (bc_unsupported(r))
			r = -EOPNOTSUPP;
		return cp_error(r,
				"%s: discard at offset %" PRIu64
				" length %" PRIu64 ": %s",
				dev->name, offset, len, strerror(-r));
	}
	return 0;
}

int bc_fd_write_zeroes(cp_bdev *dev, uint64_t offset, uint64_t len,
		       unsigned flags)
{
	int r;
	if (len == 0)
		return 0;
	if (dev->is_blockdev) {
		if (CP_IS_ALIGNED(offset, dev->lbs) &&
		    CP_IS_ALIGNED(len, dev->lbs)) {
			uint64_t range[2] = {offset, len};
			if (ioctl(dev->fd, BLKZEROOUT, range) == 0)
				return 0;
			r = -errno;
			if (!bc_unsupported(r))
				goto fail;
		}
	} else {
		int64_t size = bc_fd_size(dev);
		if (size < 0) {
			r = (int)size;
			goto fail;
		}
		if ((flags & CP_ZERO_MAY_UNMAP) &&
		    offset + len <= (uint64_t)size) {
			r = bc_fallocate(
			    dev, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    offset, len);
			if (r == 0)
				return 0;
			if (!bc_unsupported(r))
				goto fail;
		}
		r = bc_fallocate(dev, FALLOC_FL_ZERO_RANGE, offset, len);
		if (r == 0)
			return 0;
		if (!bc_unsupported(r))
			goto fail;
	}
	return bc_write_zero_buffers(dev, offset, len);

fail:
	return cp_error(
	    r, "%s: write zeroes at offset %" PRIu64 " length %" PRIu64 ": %s",
	    dev->name, offset, len, strerror(-r));
}

int bc_fixed_truncate(cp_bdev *dev, uint64_t size)
{
	int64_t cur = dev->backend->size(dev);
	if (cur >= 0 && (uint64_t)cur == size)
		return 0;
	return cp_error(-ENOTSUP,
			"%s: truncate to %" PRIu64
			": cannot resize a block device",
			dev->name, size);
}

int bc_fd_truncate(cp_bdev *dev, uint64_t size)
{
	if (dev->is_blockdev)
		return bc_fixed_truncate(dev, size);
	if (ftruncate(dev->fd, (off_t)size) < 0)
		return cp_error(-errno, "%s: truncate to %" PRIu64 ": %s",
				dev->name, size, strerror(errno));
	return 0;
}

/* The size, or -errno with a message. */
static int64_t bc_prealloc_size(cp_bdev *dev)
{
	int64_t size = dev->backend->size(dev);
	if (size < 0)
		return cp_error((int)size, "%s: preallocate: size: %s",
				dev->name, strerror((int)-size));
	return size;
}

int bc_fixed_preallocate(cp_bdev *dev, uint64_t offset, uint64_t len,
			 enum cp_prealloc mode)
{
	(void)mode;
	uint64_t end = offset + len;
	int64_t size = bc_prealloc_size(dev);
	if (size < 0)
		return (int)size;
	if (end > (uint64_t)size)
		return cp_error(-ENOSPC,
				"%s: preallocate to %" PRIu64
				": beyond the end of the device",
				dev->name, end);
	return 0;
}

int bc_fd_preallocate(cp_bdev *dev, uint64_t offset, uint64_t len,
		      enum cp_prealloc mode)
{
	if (dev->is_blockdev)
		return bc_fixed_preallocate(dev, offset, len, mode);
	uint64_t end = offset + len;
	int64_t size = bc_prealloc_size(dev);
	if (size < 0)
		return (int)size;
	int r;

	switch (mode) {
	case CP_PREALLOC_FALLOC:
		if (len == 0)
			break;
		r = bc_fallocate(dev, 0, offset, len);
		if (r < 0 && bc_unsupported(r) && !dev->direct) {
			r = -posix_fallocate(dev->fd, (off_t)offset,
					     (off_t)len);
		}
		if (r < 0)
			return cp_error(r,
					"%s: fallocate at offset %" PRIu64
					" length %" PRIu64 ": %s",
					dev->name, offset, len, strerror(-r));
		break;
	case CP_PREALLOC_FULL: {
		/* Existing data is kept: reserve blocks inside the file,
		 * write real zeroes past its end. */
		uint64_t zstart = CP_MAX(offset, (uint64_t)size);
		if (offset < zstart) {
			uint64_t inner = CP_MIN(end, zstart) - offset;
			r = bc_fallocate(dev, 0, offset, inner);
			if (r < 0 && !bc_unsupported(r))
				return cp_error(
				    r,
				    "%s: fallocate at offset %" PRIu64
				    " length %" PRIu64 ": %s",
				    dev->name, offset, inner, strerror(-r));
		}
		if (zstart < end) {
			r = bc_write_zero_buffers(dev, zstart, end - zstart);
			if (r < 0)
				return r;
		}
		break;
	}
	case CP_PREALLOC_OFF:
	case CP_PREALLOC_METADATA:
	default:
		break;
	}
	size = bc_fd_size(dev);
	if (size >= 0 && (uint64_t)size < end &&
	    ftruncate(dev->fd, (off_t)end) < 0)
		return cp_error(-errno, "%s: truncate to %" PRIu64 ": %s",
				dev->name, end, strerror(errno));
	return 0;
}

int bc_all_data_block_status(cp_bdev *dev, uint64_t offset, uint64_t len,
			     uint64_t *pnum)
{
	(void)dev;
	(void)offset;
	*pnum = len;
	return 1;
}

int bc_fd_block_status(cp_bdev *dev, uint64_t offset, uint64_t len,
		       uint64_t *pnum)
{
	if (dev->is_blockdev)
		return bc_all_data_block_status(dev, offset, len, pnum);
	uint64_t end = offset + len;
	off_t data = lseek(dev->fd, (off_t)offset, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO)
			return 0; /* in the trailing hole or past EOF */
		return 1;	  /* SEEK_DATA unsupported: all data */
	}
	if ((uint64_t)data > offset) {
		*pnum = CP_MIN((uint64_t)data, end) - offset;
		return 0;
	}
	off_t hole = lseek(dev->fd, (off_t)offset, SEEK_HOLE);
	if (hole < 0 || (uint64_t)hole <= offset)
		return 1;
	*pnum = CP_MIN((uint64_t)hole, end) - offset;
	return 1;
}
