/* spm/lease.c - sanlock lockspaces and resources (see spm.h, "lease.c").
 *
 * How cowpoold uses sanlock
 * -------------------------
 * - The sanlock daemon runs on every host, one per host, started by the
 *   system (here: by the test harness, one per simulated host, each with its
 *   own SANLOCK_RUN_DIR).  Every call below talks to the daemon of this
 *   host through its unix socket; libsanlock reads SANLOCK_RUN_DIR once per
 *   process, at the first call.
 * - Host ids: for each attached domain cowpoold joins the domain's lockspace
 *   (its `ids` volume) with the host's id, cp_lockspace_join_start() from
 *   the domain monitor, then cp_lockspace_status() each monitor cycle.  The
 *   daemon renews the host id every 2 io_timeout on its own; cowpoold does
 *   nothing per renewal.  The daemon is started with a stable host name
 *   (-e) so that after a restart the host id is re-acquired at once.
 * - Registered process: sanlock grants leases to a process, not to a
 *   connection.  cowpoold opens ONE cp_lease_client at start-up
 *   (sanlock_register) and keeps it until exit; every lease it acquires -
 *   the SPM lease `SDM`, the lease of each volume it exports writable -
 *   belongs to the cowpoold process.  Commands for it go over that socket,
 *   one at a time (the daemon refuses a second concurrent command of the
 *   same process with EBUSY), hence the client mutex.
 * - Process death: when cowpoold exits or is killed (kill -9 included) the
 *   daemon sees the socket close and releases its leases on disk at once
 *   (lease timestamp 0): another host acquires them within milliseconds.
 *   Nothing else is needed to "unlock" after a crash.
 * - Host death: when the daemon itself dies, or the host, or its access to
 *   storage, the leases stay owned on disk by this host id; other hosts may
 *   take them only after cp_host_dead_seconds(io) without a renewal
 *   (spm/timeouts.h has the timeline).  Normally the watchdog resets the
 *   host before that; without a watchdog (-w 0) the cowpoold process keeps
 *   running, so it must notice by itself: the registered socket reports
 *   POLLRDHUP (cp_lease_client_fd() in its event loop) and
 *   cp_lease_client_check() returns -ESTALE, which it calls before every
 *   structural metadata write.  On -ESTALE cowpoold drops the SPM role
 *   and stops all writes under leases.
 * - The renewal of a held lease is implicit: a paxos lease stays held as
 *   long as the owner's host id is renewed.
 *
 * Lease version: every successful acquisition commits leader version + 1
 * (sanlock's lver), so the version of the SDM lease counts SPM terms and
 * `spm status` reports it; cp_lease_acquire_opts.expect_lver makes an
 * acquisition conditional on it.
 *
 * Errors: sanlock returns -errno values and its own SANLK_* codes (-2xx);
 * lease_err() maps both to one -errno and a message naming the lease,
 * path:offset and, when known, the holder.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "common.h"
#include "spm.h"
#include "timeouts.h"

#if CP_HAVE_SANLOCK
#include <sanlock.h>
#include <sanlock_admin.h>
#include <sanlock_resource.h>
#include <sanlock_rv.h>
#endif

CP_EXPORT void cp_lockspace_opts_init(struct cp_lockspace_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->io_timeout = CP_IO_TIMEOUT_DEFAULT;
}

CP_EXPORT void cp_lease_opts_init(struct cp_lease_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
}

CP_EXPORT void cp_lease_acquire_opts_init(struct cp_lease_acquire_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
}

CP_EXPORT const char *cp_host_state_name(enum cp_host_state s)
{
	switch (s) {
	case CP_HOST_FREE:
		return "free";
	case CP_HOST_LIVE:
		return "live";
	case CP_HOST_FAIL:
		return "failing";
	case CP_HOST_DEAD:
		return "dead";
	case CP_HOST_UNKNOWN:
		break;
	}
	return "unknown";
}

#if CP_HAVE_SANLOCK

struct cp_lease_client {
	int fd;		      /* registered socket (sanlock_register) */
	pid_t pid;	      /* the registering process */
	pthread_mutex_t lock; /* one command at a time on fd */
};

/* One resource with its single disk, as libsanlock wants it. */
struct res1 {
	struct sanlk_resource r;
	struct sanlk_disk disk; /* r.disks[0] */
};

/* ---- options -> sanlock structs ---------------------------------------- */

static int geom_flags(uint32_t sector_size, uint32_t align, uint32_t *flags,
		      const char *what)
{
	*flags = 0;
	switch (sector_size) {
	case 0:
		break;
	case 512:
		*flags |= SANLK_RES_SECTOR512;
		break;
	case 4096:
		*flags |= SANLK_RES_SECTOR4K;
		break;
	default:
		return cp_error(-EINVAL,
				"%s: sector size %" PRIu32 " (512 or 4096)",
				what, sector_size);
	}
	switch (align) {
	case 0:
		break;
	case 1u << 20:
		*flags |= SANLK_RES_ALIGN1M;
		break;
	case 2u << 20:
		*flags |= SANLK_RES_ALIGN2M;
		break;
	case 4u << 20:
		*flags |= SANLK_RES_ALIGN4M;
		break;
	case 8u << 20:
		*flags |= SANLK_RES_ALIGN8M;
		break;
	default:
		return cp_error(-EINVAL,
				"%s: alignment %" PRIu32 " (1, 2, 4 or 8 MiB)",
				what, align);
	}
	return 0;
}

static int copy_name(char dst[SANLK_NAME_LEN], const char *src,
		     const char *what)
{
	size_t n = src ? strlen(src) : 0;
	if (!n || n > SANLK_NAME_LEN)
		return cp_error(-EINVAL, "%s name '%s': 1..%d bytes", what,
				src ? src : "", SANLK_NAME_LEN);
	memset(dst, 0, SANLK_NAME_LEN);
	memcpy(dst, src, n);
	return 0;
}

static int copy_disk(struct sanlk_disk *d, const char *path, uint64_t off)
{
	size_t n = path ? strlen(path) : 0;
	if (!n || n >= SANLK_PATH_LEN)
		return cp_error(-EINVAL, "lease path '%s': 1..%d bytes",
				path ? path : "", SANLK_PATH_LEN - 1);
	memset(d, 0, sizeof(*d));
	memcpy(d->path, path, n);
	d->offset = off;
	return 0;
}

static int ls_from_opts(const struct cp_lockspace_opts *o, uint64_t host_id,
			struct sanlk_lockspace *ls)
{
	uint32_t f;
	int rv;

	if (!o || o->size < sizeof(*o))
		return cp_error(-EINVAL, "lockspace: options not initialised "
					 "(cp_lockspace_opts_init)");
	memset(ls, 0, sizeof(*ls));
	rv = copy_name(ls->name, o->name, "lockspace");
	if (rv < 0)
		return rv;
	rv = copy_disk(&ls->host_id_disk, o->path, o->offset);
	if (rv < 0)
		return rv;
	rv = geom_flags(o->sector_size, o->align, &f, o->name);
	if (rv < 0)
		return rv;
	/* SANLK_LSF_* and SANLK_RES_* geometry bits have the same values */
	ls->flags = f;
	if (host_id > CP_LEASE_MAX_HOST_ID)
		return cp_error(-EINVAL,
				"lockspace %s: host id %" PRIu64 " (1..%d)",
				o->name, host_id, CP_LEASE_MAX_HOST_ID);
	ls->host_id = host_id;
	return 0;
}

static int res_from_opts(const struct cp_lease_opts *o, struct res1 *r)
{
	uint32_t f;
	int rv;

	if (!o || o->size < sizeof(*o))
		return cp_error(-EINVAL, "lease: options not initialised "
					 "(cp_lease_opts_init)");
	memset(r, 0, sizeof(*r));
	rv = copy_name(r->r.lockspace_name, o->lockspace, "lockspace");
	if (rv < 0)
		return rv;
	rv = copy_name(r->r.name, o->name, "lease");
	if (rv < 0)
		return rv;
	rv = copy_disk(&r->disk, o->path, o->offset);
	if (rv < 0)
		return rv;
	rv = geom_flags(o->sector_size, o->align, &f, o->name);
	if (rv < 0)
		return rv;
	r->r.flags = f;
	r->r.num_disks = 1;
	return 0;
}

/* ---- error mapping ------------------------------------------------------- */

/* Is any daemon answering at SANLOCK_RUN_DIR?  Used on error paths only,
 * to tell "daemon down" from a refusal of the daemon. */
static bool daemon_up(void)
{
	uint32_t version = 0, proto = 0;
	return sanlock_version(0, &version, &proto) >= 0;
}

static const char *run_dir(void)
{
	const char *d = getenv("SANLOCK_RUN_DIR");
	return d && *d ? d : "/run/sanlock";
}

/* Codes common to every command.  what: "lockspace X on P:O" or
 * "lease X on P:O".  Returns the -errno with the message set. */
static int lease_err(int rv, const char *what, const char *op)
{
	switch (rv) {
	case -ECONNREFUSED:
	case -ENOENT:
	case -ECONNRESET:
	case -EPIPE:
		if (!daemon_up())
			return cp_error(-ECONNREFUSED,
					"%s: %s: no sanlock "
					"daemon at %s",
					what, op, run_dir());
		break;
	default:
		break;
	}

	switch (rv) {
	case SANLK_AIO_TIMEOUT:
		return cp_error(-EIO, "%s: %s: lease I/O timed out", what, op);
	case SANLK_DBLOCK_READ:
	case SANLK_LEADER_READ:
		return cp_error(-EIO, "%s: %s: lease read failed", what, op);
	case SANLK_DBLOCK_WRITE:
	case SANLK_LEADER_WRITE:
		return cp_error(-EIO, "%s: %s: lease write failed", what, op);
	case SANLK_LEADER_MAGIC:
		return cp_error(-ENOENT,
				"%s: %s: no sanlock lease written "
				"there (not formatted)",
				what, op);
	case SANLK_DBLOCK_CHECKSUM:
	case SANLK_LEADER_CHECKSUM:
		return cp_error(-EUCLEAN, "%s: %s: lease checksum mismatch",
				what, op);
	case SANLK_LEADER_DIFF:
	case SANLK_LEADER_VERSION:
	case SANLK_LEADER_SECTORSIZE:
	case SANLK_LEADER_NUMHOSTS:
		return cp_error(-EUCLEAN,
				"%s: %s: lease data invalid (sanlock "
				"%d)",
				what, op, rv);
	case SANLK_LEADER_LOCKSPACE:
		return cp_error(-EUCLEAN,
				"%s: %s: the lease there belongs to "
				"another lockspace",
				what, op);
	case SANLK_LEADER_RESOURCE:
		return cp_error(-EUCLEAN,
				"%s: %s: the lease there has another "
				"name",
				what, op);
	case SANLK_ADDLS_SIZES:
		return cp_error(-EINVAL,
				"%s: %s: sector size/alignment do not "
				"match the lockspace on disk",
				what, op);
	case SANLK_ADDLS_INVALID_HOSTID:
		return cp_error(-EINVAL, "%s: %s: invalid host id", what, op);
	case SANLK_HOSTID_BUSY:
		return cp_error(-EBUSY,
				"%s: %s: the host id is owned by "
				"another live host",
				what, op);
	case SANLK_WD_ERROR:
		return cp_error(-EIO, "%s: %s: watchdog (wdmd) error", what,
				op);
	case -EPIPE:
	case -ECONNRESET:
		return cp_error(-ESTALE,
				"%s: %s: connection to the sanlock "
				"daemon lost; no lease of this process is held",
				what, op);
	case -1:
	case SANLK_ERROR:
		return cp_error(-EIO, "%s: %s: sanlock failed (%d)", what, op,
				rv);
	default:
		break;
	}
	if (rv <= -200)
		return cp_error(-EIO, "%s: %s: sanlock error %d", what, op, rv);
	return cp_error(rv, "%s: %s: %s", what, op, strerror(-rv));
}

static void ls_what(char *buf, size_t n, const struct cp_lockspace_opts *o)
{
	snprintf(buf, n, "lockspace %s on %s:%" PRIu64, o->name ? o->name : "?",
		 o->path ? o->path : "?", o->offset);
}

static void res_what(char *buf, size_t n, const struct cp_lease_opts *o)
{
	snprintf(buf, n, "lease %s on %s:%" PRIu64, o->name ? o->name : "?",
		 o->path ? o->path : "?", o->offset);
}

/* ---- lockspaces ------------------------------------------------------------
 */

CP_EXPORT int cp_lockspace_format(const struct cp_lockspace_opts *o)
{
	CP_API_ENTER();
	struct sanlk_lockspace ls;
	char what[1200];
	int rv = ls_from_opts(o, 0, &ls);

	if (rv < 0)
		return rv;
	ls_what(what, sizeof(what), o);
	if (o->io_timeout < 1 || o->io_timeout > CP_IO_TIMEOUT_MAX)
		return cp_error(-EINVAL, "%s: io_timeout %" PRIu32 " (1..%u s)",
				what, o->io_timeout, CP_IO_TIMEOUT_MAX);
	rv = sanlock_write_lockspace(&ls, 0, 0, o->io_timeout);
	if (rv < 0)
		return lease_err(rv, what, "format");
	return 0;
}

CP_EXPORT int cp_lockspace_read_io_timeout(const struct cp_lockspace_opts *o,
					   uint32_t *io_timeout)
{
	CP_API_ENTER();
	struct sanlk_lockspace ls;
	char what[1200];
	uint32_t io = 0;
	int rv = ls_from_opts(o, 0, &ls);

	if (rv < 0)
		return rv;
	ls_what(what, sizeof(what), o);
	rv = sanlock_read_lockspace(&ls, 0, &io);
	if (rv < 0)
		return lease_err(rv, what, "read");
	if (strncmp(ls.name, o->name, SANLK_NAME_LEN))
		return cp_error(-EUCLEAN,
				"%s: the lockspace there is named "
				"'%.48s'",
				what, ls.name);
	if (!io)
		return cp_error(-EUCLEAN, "%s: no io_timeout on disk", what);
	*io_timeout = io;
	return 0;
}

static int join(const struct cp_lockspace_opts *o, uint64_t host_id,
		uint32_t flags)
{
	struct sanlk_lockspace ls;
	char what[1200];
	uint32_t io;
	int rv = ls_from_opts(o, host_id, &ls);

	if (rv < 0)
		return rv;
	ls_what(what, sizeof(what), o);
	if (!host_id)
		return cp_error(-EINVAL, "%s: host id 0 (1..%d)", what,
				CP_LEASE_MAX_HOST_ID);
	/* every host uses the io_timeout written at format time */
	rv = cp_lockspace_read_io_timeout(o, &io);
	if (rv < 0)
		return rv;
	rv = sanlock_add_lockspace_timeout(&ls, flags, io);
	if (rv == -EEXIST)
		return 0;
	if (rv == -EINPROGRESS && (flags & SANLK_ADD_ASYNC))
		return 0;
	if (rv == -EINPROGRESS)
		return cp_error(-EBUSY,
				"%s: join as host %" PRIu64 ": a join "
				"or leave is already in progress",
				what, host_id);
	if (rv == -EAGAIN)
		return cp_error(-EBUSY,
				"%s: join as host %" PRIu64 ": the "
				"lockspace is being left",
				what, host_id);
	if (rv == -EINVAL)
		return cp_error(
		    -EINVAL,
		    "%s: join as host %" PRIu64 ": this "
		    "host has joined a lockspace with the same name "
		    "or path with other parameters",
		    what, host_id);
	if (rv < 0) {
		char op[64];
		snprintf(op, sizeof(op), "join as host %" PRIu64, host_id);
		return lease_err(rv, what, op);
	}
	return 0;
}

CP_EXPORT int cp_lockspace_join(const struct cp_lockspace_opts *o,
				uint64_t host_id)
{
	CP_API_ENTER();
	return join(o, host_id, 0);
}

CP_EXPORT int cp_lockspace_join_start(const struct cp_lockspace_opts *o,
				      uint64_t host_id)
{
	CP_API_ENTER();
	return join(o, host_id, SANLK_ADD_ASYNC);
}

CP_EXPORT int cp_lockspace_leave(const struct cp_lockspace_opts *o,
				 uint64_t host_id)
{
	CP_API_ENTER();
	struct sanlk_lockspace ls;
	char what[1200];
	int rv = ls_from_opts(o, host_id, &ls);

	if (rv < 0)
		return rv;
	ls_what(what, sizeof(what), o);
	rv = sanlock_rem_lockspace(&ls, SANLK_REM_UNUSED);
	if (rv == -ENOENT && daemon_up())
		return cp_error(-ENOENT,
				"%s: leave: host %" PRIu64 " has not "
				"joined",
				what, host_id);
	if (rv == -EBUSY)
		return cp_error(-EBUSY,
				"%s: leave: processes of this host "
				"still hold leases in it",
				what);
	if (rv == -EINPROGRESS)
		return cp_error(-EBUSY, "%s: leave: already being left", what);
	if (rv < 0)
		return lease_err(rv, what, "leave");
	return 0;
}

CP_EXPORT int cp_lockspace_status(const struct cp_lockspace_opts *o,
				  uint64_t host_id)
{
	CP_API_ENTER();
	struct sanlk_lockspace ls;
	char what[1200];
	int rv = ls_from_opts(o, host_id, &ls);

	if (rv < 0)
		return rv;
	ls_what(what, sizeof(what), o);
	rv = sanlock_inq_lockspace(&ls, 0);
	if (rv == 0)
		return CP_LOCKSPACE_JOINED;
	if (rv == -EINPROGRESS)
		return CP_LOCKSPACE_BUSY;
	if (rv == -ENOENT && daemon_up())
		return CP_LOCKSPACE_NOT_JOINED;
	return lease_err(rv, what, "status");
}

/* Liveness and io_timeout of host_id as this host's daemon sees it. */
static int host_info(const char *lockspace, uint64_t host_id, uint32_t *io)
{
	struct sanlk_host *hss = NULL;
	char name[SANLK_NAME_LEN + 1] = "";
	int n = 0, rv, st;

	rv = copy_name(name, lockspace, "lockspace");
	if (rv < 0)
		return rv;
	name[SANLK_NAME_LEN] = 0;
	if (!host_id || host_id > CP_LEASE_MAX_HOST_ID)
		return cp_error(-EINVAL, "lockspace %s: host id %" PRIu64,
				lockspace, host_id);
	rv = sanlock_get_hosts(name, host_id, &hss, &n, 0);
	if (rv == -EAGAIN) /* joined, other hosts not checked yet */
		return CP_HOST_UNKNOWN;
	if (rv == -ENOENT && daemon_up())
		return cp_error(-ENOTCONN,
				"lockspace %s is not joined on this "
				"host",
				lockspace);
	if (rv < 0) {
		char what[128];
		snprintf(what, sizeof(what), "lockspace %s", lockspace);
		return lease_err(rv, what, "host status");
	}
	st = CP_HOST_UNKNOWN;
	if (n > 0 && hss) {
		switch (hss[0].flags & SANLK_HOST_MASK) {
		case SANLK_HOST_FREE:
			st = CP_HOST_FREE;
			break;
		case SANLK_HOST_LIVE:
			st = CP_HOST_LIVE;
			break;
		case SANLK_HOST_FAIL:
			st = CP_HOST_FAIL;
			break;
		case SANLK_HOST_DEAD:
			st = CP_HOST_DEAD;
			break;
		default:
			break;
		}
		if (io)
			*io = hss[0].io_timeout;
	}
	free(hss);
	return st;
}

CP_EXPORT int cp_lockspace_host_state(const char *lockspace, uint64_t host_id)
{
	CP_API_ENTER();
	return host_info(lockspace, host_id, NULL);
}

/* ---- direct reads of a paxos lease ----------------------------------------
 */

/* sanlock's on-disk paxos lease (sanlock src/leader.h, paxos_dblock.h;
 * format 6.x, little-endian): sector 0 the leader record, sector 1 the
 * request record, sector 1 + h the "dblock" of host h.  Each record carries
 * a CRC32C (kernel crc32c_le, seed ~1, no final xor) of its leading bytes.
 *
 * Why read it ourselves: read_resource_owners reports the leader's owner.
 * When contending hosts run one ballot, the leader may be written by a
 * host other than the owner; the owner's release then only marks its
 * dblock RELEASED and leaves the leader alone (paxos_release "skip
 * write"), and sanlock's acquirers treat that lease as free
 * (paxos_lease_acquire reads the owner's dblock).  cp_lease_read() must
 * answer the same, so it checks that dblock. */
#define PAXOS_DISK_MAGIC 0x06152010u
#define DELTA_DISK_MAGIC 0x12212010u
#define LEADER_CHECKSUM_LEN 168
#define DBLOCK_CHECKSUM_LEN 48
#define DBLOCK_FL_RELEASED 0x1u
#define LEASE_IO_BLOCK 4096

struct leader_disk { /* decoded fields we use */
	uint32_t magic, sector_size;
	uint64_t owner_id, owner_generation, lver, timestamp, write_id;
	char space_name[SANLK_NAME_LEN], resource_name[SANLK_NAME_LEN];
};

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint32_t sanlock_crc32c(const uint8_t *p, size_t n)
{
	uint32_t crc = ~(uint32_t)1;
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
	}
	return crc;
}

/* Read LEASE_IO_BLOCK bytes at off (a multiple of LEASE_IO_BLOCK) with
 * O_DIRECT: other hosts write the lease behind our page cache. */
static int read_block(const char *path, uint64_t off, uint8_t **out)
{
	void *buf = NULL;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);

	if (fd < 0 && errno == EINVAL) /* e.g. tmpfs */
		fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (posix_memalign(&buf, LEASE_IO_BLOCK, LEASE_IO_BLOCK)) {
		close(fd);
		return -ENOMEM;
	}
	do
		n = pread(fd, buf, LEASE_IO_BLOCK, (off_t)off);
	while (n < 0 && errno == EINTR);
	n = n < 0 ? -errno : n;
	close(fd);
	if (n != LEASE_IO_BLOCK) {
		free(buf);
		return n < 0 ? (int)n : -EIO;
	}
	*out = buf;
	return 0;
}

/* 0 and *ld, -ENOENT no paxos lease there (*ld->magic says what is),
 * -EUCLEAN bad checksum, other -errno for I/O. */
static int read_leader(const char *path, uint64_t off, struct leader_disk *ld)
{
	uint8_t *b = NULL;
	int rv;

	if (off % LEASE_IO_BLOCK)
		return -EINVAL;
	rv = read_block(path, off, &b);
	if (rv < 0)
		return rv;
	memset(ld, 0, sizeof(*ld));
	ld->magic = le32(b);
	ld->sector_size = le32(b + 12);
	ld->owner_id = le64(b + 32);
	ld->owner_generation = le64(b + 40);
	ld->lver = le64(b + 48);
	memcpy(ld->space_name, b + 56, SANLK_NAME_LEN);
	memcpy(ld->resource_name, b + 104, SANLK_NAME_LEN);
	ld->timestamp = le64(b + 152);
	ld->write_id = le64(b + 176);
	if (ld->magic != PAXOS_DISK_MAGIC)
		rv = -ENOENT;
	else if (le32(b + 168) != sanlock_crc32c(b, LEADER_CHECKSUM_LEN))
		rv = -EUCLEAN;
	free(b);
	return rv;
}

/* 1 when host_id's dblock in the lease at off is marked released,
 * 0 when not, -errno when it cannot be read or is torn. */
static int dblock_released(const char *path, uint64_t off, uint32_t sector_size,
			   uint64_t host_id)
{
	uint64_t pos = (1 + host_id) * (uint64_t)sector_size;
	uint8_t *b = NULL, *d;
	int rv;

	if (!host_id || host_id > CP_LEASE_MAX_HOST_ID ||
	    (sector_size != 512 && sector_size != 4096))
		return -EINVAL;
	rv = read_block(path, off + pos / LEASE_IO_BLOCK * LEASE_IO_BLOCK, &b);
	if (rv < 0)
		return rv;
	d = b + pos % LEASE_IO_BLOCK;
	if (le32(d + 48) != sanlock_crc32c(d, DBLOCK_CHECKSUM_LEN))
		rv = -EUCLEAN;
	else
		rv = (le32(d + 52) & DBLOCK_FL_RELEASED) ? 1 : 0;
	free(b);
	return rv;
}

/* ---- resources ---------------------------------------------------------- */

CP_EXPORT int cp_lease_format(const struct cp_lease_opts *o)
{
	CP_API_ENTER();
	struct res1 r;
	char what[1200];
	int rv = res_from_opts(o, &r);

	if (rv < 0)
		return rv;
	res_what(what, sizeof(what), o);
	rv = sanlock_write_resource(&r.r, 0, 0, 0);
	if (rv < 0)
		return lease_err(rv, what, "format");
	return 0;
}

CP_EXPORT int cp_lease_read(const struct cp_lease_opts *o,
			    struct cp_lease_owner *out)
{
	CP_API_ENTER();
	struct sanlk_host *hss = NULL;
	struct leader_disk ld;
	struct res1 r;
	char what[1200];
	int n = 0, rv = res_from_opts(o, &r), drv;

	if (rv < 0)
		return rv;
	res_what(what, sizeof(what), o);
	memset(out, 0, sizeof(*out));
	/* the daemon validates the lease (magic, names, sizes, checksum) */
	rv = sanlock_read_resource_owners(&r.r, 0, &hss, &n);
	if (rv == -EINVAL) {
		/* what sanlock says of a zeroed or foreign area */
		drv = read_leader(o->path, o->offset, &ld);
		if (drv == -ENOENT && ld.magic == DELTA_DISK_MAGIC)
			return cp_error(-EUCLEAN,
					"%s: read owner: a lockspace "
					"is written there, not a lease",
					what);
		if (drv == -ENOENT)
			return lease_err(SANLK_LEADER_MAGIC, what,
					 "read owner");
	}
	if (rv < 0)
		return lease_err(rv, what, "read owner");
	out->lver = r.r.lver;
	if (n > 0 && hss) {
		out->held = true;
		out->host_id = hss[0].host_id;
		out->generation = hss[0].generation;
		out->timestamp = hss[0].timestamp;
	}
	free(hss);

	/* released by an owner that did not write the leader (see above) */
	if (out->held && read_leader(o->path, o->offset, &ld) == 0 &&
	    ld.owner_id == out->host_id && ld.lver == out->lver &&
	    ld.write_id != ld.owner_id &&
	    dblock_released(o->path, o->offset, ld.sector_size, ld.owner_id) ==
		1) {
		out->held = false;
		out->host_id = out->generation = out->timestamp = 0;
	}

	if (out->held) {
		rv = cp_lockspace_host_state(o->lockspace, out->host_id);
		out->host_state =
		    rv > 0 ? (enum cp_host_state)rv : CP_HOST_UNKNOWN;
		cp_clear_error();
	}
	return 0;
}

/* ---- the registered process ------------------------------------------------
 */

/* libsanlock writes with send(..., 0): a write to a socket whose daemon
 * died raises SIGPIPE.  A library must not kill its process for that, nor
 * change the process's signal dispositions, so each command runs with
 * SIGPIPE blocked in the calling thread and a SIGPIPE it raised is
 * consumed before the mask is restored. */
struct sigpipe_guard {
	sigset_t old;
	bool was_pending;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t set, pending;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	sigpending(&pending);
	g->was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void sigpipe_restore(struct sigpipe_guard *g)
{
	sigset_t set, pending;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	sigpending(&pending);
	if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
		const struct timespec zero = {0, 0};
		while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* 0 while the daemon holds our registration; -ESTALE once the socket
 * reports that the daemon closed it (POLLRDHUP/POLLHUP; a reply waiting to
 * be read while another thread runs a command is POLLIN only, so this
 * needs no lock). */
static int client_check_locked(cp_lease_client *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLRDHUP};
	int rv;

	if (c->fd < 0)
		return cp_error(-ESTALE, "sanlock registration was lost");
	do
		rv = poll(&p, 1, 0);
	while (rv < 0 && errno == EINTR);
	if (rv > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
		return cp_error(-ESTALE,
				"connection to the sanlock daemon "
				"(%s) lost: this process holds no lease any "
				"more",
				run_dir());
	return 0;
}

CP_EXPORT int cp_lease_client_open(cp_lease_client **out)
{
	CP_API_ENTER();
	cp_lease_client *c;
	struct sigpipe_guard g;
	int fd;

	c = calloc(1, sizeof(*c));
	if (!c)
		return cp_error(-ENOMEM, "sanlock client: out of memory");
	sigpipe_block(&g);
	fd = sanlock_register();
	sigpipe_restore(&g);
	if (fd < 0) {
		free(c);
		if (fd == -ECONNREFUSED || fd == -ENOENT)
			return cp_error(-ECONNREFUSED,
					"sanlock register: no "
					"sanlock daemon at %s",
					run_dir());
		if (fd > -200 && fd < -1)
			return cp_error(fd, "sanlock register (%s): %s",
					run_dir(), strerror(-fd));
		return cp_error(-EIO, "sanlock register (%s): failed (%d)",
				run_dir(), fd);
	}
	c->fd = fd;
	c->pid = getpid();
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return 0;
}

CP_EXPORT void cp_lease_client_close(cp_lease_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

CP_EXPORT int cp_lease_client_fd(const cp_lease_client *c)
{
	CP_API_ENTER();
	return c->fd;
}

/* Lock-free: fd does not change while the client is open, and a thread
 * blocked in a long acquire (wait_dead_owner) must not delay the check. */
CP_EXPORT int cp_lease_client_check(cp_lease_client *c)
{
	CP_API_ENTER();
	return client_check_locked(c);
}

/* The lease version of lockspace:name among the leases this process holds
 * (sanlock_inquire).  1 found, 0 not held, < 0 error.  Caller holds lock. */
static int inquire_locked(cp_lease_client *c, const struct res1 *want,
			  uint64_t *lver)
{
	struct sanlk_resource **args = NULL;
	struct sigpipe_guard g;
	char *state = NULL;
	int count = 0, found = 0, rv, i;

	sigpipe_block(&g);
	rv = sanlock_inquire(c->fd, -1, 0, &count, &state);
	sigpipe_restore(&g);
	if (rv < 0)
		return rv;
	if (!count || !state) {
		free(state);
		return 0;
	}
	rv = sanlock_state_to_args(state, &count, &args);
	free(state);
	if (rv < 0)
		return rv;
	for (i = 0; i < count; i++) {
		if (!found &&
		    !strncmp(args[i]->lockspace_name, want->r.lockspace_name,
			     SANLK_NAME_LEN) &&
		    !strncmp(args[i]->name, want->r.name, SANLK_NAME_LEN)) {
			found = 1;
			if (lver)
				*lver = args[i]->lver;
		}
		free(args[i]);
	}
	free(args);
	return found;
}

/* After a failed acquire: "held by host 2 (lease version 7, host live)".
 * *io: the holder's io_timeout (0 when unknown). */
static enum cp_host_state describe_holder(const struct cp_lease_opts *o,
					  char *buf, size_t n, uint32_t *io)
{
	struct cp_lease_owner ow;
	int st;

	*io = 0;
	if (cp_lease_read(o, &ow) < 0 || !ow.held) {
		snprintf(buf, n, "held by another host");
		cp_clear_error();
		return CP_HOST_UNKNOWN;
	}
	st = host_info(o->lockspace, ow.host_id, io);
	if (st < 0) {
		cp_clear_error();
		st = CP_HOST_UNKNOWN;
	}
	snprintf(
	    buf, n,
	    "held by host %" PRIu64 " (lease version %" PRIu64 ", host %s)",
	    ow.host_id, ow.lver, cp_host_state_name((enum cp_host_state)st));
	return (enum cp_host_state)st;
}

CP_EXPORT int cp_lease_acquire(cp_lease_client *c,
			       const struct cp_lease_opts *lease,
			       const struct cp_lease_acquire_opts *opts,
			       uint64_t *lver)
{
	CP_API_ENTER();
	struct cp_lease_acquire_opts def;
	struct sanlk_resource *rp[1];
	struct sanlk_options so;
	struct sigpipe_guard g;
	struct res1 r;
	char what[1200], holder[160];
	uint32_t flags = 0, io = 0;
	uint64_t v = 0;
	int rv = res_from_opts(lease, &r);

	if (rv < 0)
		return rv;
	if (!opts) {
		cp_lease_acquire_opts_init(&def);
		opts = &def;
	} else if (opts->size < sizeof(*opts)) {
		return cp_error(-EINVAL, "acquire: options not initialised "
					 "(cp_lease_acquire_opts_init)");
	}
	res_what(what, sizeof(what), lease);
	if (opts->expect_lver) {
		r.r.flags |= SANLK_RES_LVER;
		r.r.lver = opts->expect_lver;
	}
	if (!opts->wait_dead_owner)
		flags |= SANLK_ACQUIRE_OWNER_NOWAIT;
	memset(&so, 0, sizeof(so));
	snprintf(so.owner_name, sizeof(so.owner_name), "cowpool-%d",
		 (int)c->pid);
	rp[0] = &r.r;

	CP_LOCK_GUARD(&c->lock);
	rv = client_check_locked(c);
	if (rv < 0)
		return cp_error_prefix(rv, "%s: acquire", what);
	sigpipe_block(&g);
	rv = sanlock_acquire(c->fd, -1, flags, 1, rp, &so);
	sigpipe_restore(&g);
	if (rv < 0) {
		switch (rv) {
		case SANLK_ACQUIRE_IDLIVE:
		case SANLK_ACQUIRE_OWNED:
		case SANLK_ACQUIRE_OTHER:
		case SANLK_ACQUIRE_SHRETRY:
			(void)describe_holder(lease, holder, sizeof(holder),
					      &io);
			return cp_error(-EBUSY, "%s is %s", what, holder);
		case SANLK_ACQUIRE_OWNED_RETRY: {
			/* sanlock: the owner was not seen renewing during
			 * this call and is not dead yet.  That is also the
			 * answer between two renewals of a live owner that
			 * this daemon has not checked yet, so ask the
			 * daemon's own view (checked every 2 io_timeout). */
			enum cp_host_state hst;
			hst =
			    describe_holder(lease, holder, sizeof(holder), &io);
			if (hst != CP_HOST_FAIL && hst != CP_HOST_DEAD)
				return cp_error(-EBUSY, "%s is %s", what,
						holder);
			if (!io)
				io = CP_IO_TIMEOUT_DEFAULT;
			return cp_error(
			    -EAGAIN,
			    "%s is %s, which stopped "
			    "renewing its host id; it may be taken "
			    "%u s after its last renewal "
			    "(host_dead_seconds, io_timeout %" PRIu32 ")",
			    what, holder, cp_host_dead_seconds(io), io);
		}
		case SANLK_ACQUIRE_LVER:
			(void)describe_holder(lease, holder, sizeof(holder),
					      &io);
			return cp_error(-EAGAIN,
					"%s: lease version is no longer "
					"%" PRIu64 " (%s)",
					what, opts->expect_lver, holder);
		case SANLK_ACQUIRE_LOCKSPACE:
		case -ENOSPC:
			return cp_error(-ENOTCONN,
					"%s: acquire: lockspace %s is "
					"not joined on this host",
					what, lease->lockspace);
		case SANLK_ACQUIRE_IDDISK:
			return cp_error(-EIO,
					"%s: acquire: cannot read the "
					"lockspace of the holder",
					what);
		case -EEXIST:
			return cp_error(-EBUSY,
					"%s is already held on this host "
					"(by this or another process)",
					what);
		case -EBUSY:
			return cp_error(-EBUSY,
					"%s: another process of this "
					"host is acquiring it",
					what);
		case -ESTALE:
		case -1:
			/* header not received: the daemon closed on us */
			if (client_check_locked(c) < 0 || !daemon_up())
				return cp_error(-ESTALE,
						"%s: acquire: "
						"connection to the sanlock "
						"daemon lost; no lease of this "
						"process is held",
						what);
			break;
		default:
			break;
		}
		return lease_err(rv, what, "acquire");
	}
	rv = inquire_locked(c, &r, &v);
	if (rv < 0)
		return lease_err(rv, what, "acquire: inquire");
	if (rv == 0)
		return cp_error(-ESTALE,
				"%s: acquired, but the daemon no "
				"longer lists it for this process",
				what);
	if (lver)
		*lver = v;
	return 0;
}

CP_EXPORT int cp_lease_release(cp_lease_client *c,
			       const struct cp_lease_opts *lease)
{
	CP_API_ENTER();
	struct sanlk_resource *rp[1];
	struct sigpipe_guard g;
	struct res1 r;
	char what[1200];
	int rv = res_from_opts(lease, &r);

	if (rv < 0)
		return rv;
	res_what(what, sizeof(what), lease);
	rp[0] = &r.r;

	CP_LOCK_GUARD(&c->lock);
	rv = client_check_locked(c);
	if (rv < 0)
		return cp_error_prefix(rv, "%s: release", what);
	sigpipe_block(&g);
	rv = sanlock_release(c->fd, -1, 0, 1, rp);
	sigpipe_restore(&g);
	if (rv == -1 && (client_check_locked(c) < 0 || !daemon_up()))
		return cp_error(-ESTALE,
				"%s: release: connection to the "
				"sanlock daemon lost; no lease of this process "
				"is held",
				what);
	/* sanlock answers -1 (3.8) or -ENOENT for a lease the process
	 * does not hold */
	if (rv == -ENOENT || (rv == -1 && inquire_locked(c, &r, NULL) == 0))
		return cp_error(-ENOENT,
				"%s: release: not held by this "
				"process",
				what);
	if (rv < 0)
		return lease_err(rv, what, "release");
	return 0;
}

CP_EXPORT int cp_lease_held(cp_lease_client *c,
			    const struct cp_lease_opts *lease, uint64_t *lver)
{
	CP_API_ENTER();
	struct res1 r;
	char what[1200];
	int rv = res_from_opts(lease, &r);

	if (rv < 0)
		return rv;
	res_what(what, sizeof(what), lease);
	CP_LOCK_GUARD(&c->lock);
	rv = client_check_locked(c);
	if (rv < 0)
		return cp_error_prefix(rv, "%s", what);
	rv = inquire_locked(c, &r, lver);
	if (rv == -1 && (client_check_locked(c) < 0 || !daemon_up()))
		return cp_error(-ESTALE,
				"%s: connection to the sanlock daemon "
				"lost; no lease of this process is held",
				what);
	if (rv < 0)
		return lease_err(rv, what, "inquire");
	return rv;
}

#else /* !CP_HAVE_SANLOCK */

#define NOSANLOCK(what)                                                        \
	cp_error(-ENOTSUP,                                                     \
		 "%s: cowpool was built without "                              \
		 "sanlock",                                                    \
		 what)

struct cp_lease_client {
	int unused;
};

/* Every call that needs the daemon fails the same way: one definition. */
#define NOSANLOCK_STUB(name, what, params)                                     \
	CP_EXPORT int name params                                              \
	{                                                                      \
		CP_API_ENTER();                                                \
		return NOSANLOCK(what);                                        \
	}

NOSANLOCK_STUB(cp_lockspace_format, "lockspace format",
	       (const struct cp_lockspace_opts *o))
NOSANLOCK_STUB(cp_lockspace_read_io_timeout, "lockspace read",
	       (const struct cp_lockspace_opts *o, uint32_t *io_timeout))
NOSANLOCK_STUB(cp_lockspace_join, "lockspace join",
	       (const struct cp_lockspace_opts *o, uint64_t host_id))
NOSANLOCK_STUB(cp_lockspace_join_start, "lockspace join",
	       (const struct cp_lockspace_opts *o, uint64_t host_id))
NOSANLOCK_STUB(cp_lockspace_leave, "lockspace leave",
	       (const struct cp_lockspace_opts *o, uint64_t host_id))
NOSANLOCK_STUB(cp_lockspace_status, "lockspace status",
	       (const struct cp_lockspace_opts *o, uint64_t host_id))
NOSANLOCK_STUB(cp_lockspace_host_state, "host status",
	       (const char *lockspace, uint64_t host_id))
NOSANLOCK_STUB(cp_lease_format, "lease format", (const struct cp_lease_opts *o))
NOSANLOCK_STUB(cp_lease_read, "lease read",
	       (const struct cp_lease_opts *o, struct cp_lease_owner *out))
NOSANLOCK_STUB(cp_lease_client_open, "sanlock register",
	       (cp_lease_client **out))
NOSANLOCK_STUB(cp_lease_client_check, "sanlock", (cp_lease_client *c))
NOSANLOCK_STUB(cp_lease_acquire, "lease acquire",
	       (cp_lease_client *c, const struct cp_lease_opts *lease,
		const struct cp_lease_acquire_opts *opts, uint64_t *lver))
NOSANLOCK_STUB(cp_lease_release, "lease release",
	       (cp_lease_client *c, const struct cp_lease_opts *lease))
NOSANLOCK_STUB(cp_lease_held, "lease inquire",
	       (cp_lease_client *c, const struct cp_lease_opts *lease,
		uint64_t *lver))

CP_EXPORT void cp_lease_client_close(cp_lease_client *c)
{
}
CP_EXPORT int cp_lease_client_fd(const cp_lease_client *c)
{
	CP_API_ENTER();
	return -1;
}

#endif /* CP_HAVE_SANLOCK */
