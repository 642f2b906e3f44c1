/* spm/spm.h - storage pool: domains, volumes, LVM, sanlock leases, the
 * Storage Pool Manager role and its task journal (public header).
 *
 * Errors: int functions return >= 0 on success, -errno on failure, with a
 * message in cp_last_error() naming the domain/volume/host.  -ESTALE means
 * a lease this host relied on is no longer held.
 *
 * Sections are added module by module:
 *   lvm.c    - LVM volume groups and logical volumes through the lvm
 *              commands, with activation off; LV extent maps
 *   lease.c  - sanlock lockspaces and resources
 */
#ifndef CP_SPM_H
#define CP_SPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blockcore.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- lvm.c ---------------------------------------------------------------- */

/* ---- lease.c -------------------------------------------------------------- */

#ifdef __cplusplus
}
#endif

#endif
