/* qcow/perm.c - which locks each layer of a chain takes.
 *
 * blockcore locks bytes (blockcore.h, "image locks"); this file decides the
 * permissions, as QEMU's qcow2 driver asks its file node for them (what
 * qemu-img, qemu-io and qemu-nbd hold on a qcow2 file, checked against
 * them by tests/compat/locks.sh):
 *
 *   layer                          holds                       shares
 *   top, read-write                consistent read, write,     consistent read,
 *                                  resize                      write unchanged
 *   top read-only, backing layer   consistent read             consistent read,
 *                                                              write unchanged
 *   read-only layer, force share   consistent read             everything
 *
 * Force share never loosens a writable layer: as with qemu-img rebase -U,
 * it applies to the layers read (the backing chain, old and new).
 *
 * So a writer excludes every other writer and every reader that does not
 * force-share; readers coexist.  Raw layers take the same permissions: as
 * a backing layer under QEMU, or a guest disk, a raw file is locked the
 * same way (qemu-io alone shares more on raw files; cowpool does not).
 */
#include <errno.h>

#include "qcow_int.h"

int qc_image_lock(cp_image *img, cp_bdev *dev, bool writable)
{
	unsigned perm = CP_PERM_CONSISTENT_READ;
	unsigned shared = CP_PERM_CONSISTENT_READ | CP_PERM_WRITE_UNCHANGED;
	if (writable)
		perm |= CP_PERM_WRITE | CP_PERM_RESIZE;
	else if (img->opts.force_share)
		shared = CP_PERM_ALL;
	return cp_bdev_set_perm(dev, perm, shared);
}

void qc_image_unlock(cp_image *img)
{
	cp_bdev_set_perm(img->dev, 0, CP_PERM_ALL); /* dropping cannot fail */
}

int qc_create_lock(cp_bdev *dev)
{
	/* QEMU's file driver creating a file: write and resize, sharing all
	 * but resize */
	return cp_bdev_set_perm(dev, CP_PERM_WRITE | CP_PERM_RESIZE,
				CP_PERM_ALL & ~CP_PERM_RESIZE);
}
