/* spm/timeouts.h - every lease timeout of cowpool, derived from one number:
 * the io_timeout written in a domain's lockspace (cp_lockspace_format()).
 *
 * This is the one place where lease timing is computed (docs/hacking.md).  The
 * formulas are sanlock's (src/timeouts.c and the comments of
 * src/timeouts.h, src/delta_lease.c, src/paxos_lease.c of sanlock 3.8), so
 * that cowpool's expectations and the daemon's behaviour agree.  Tests
 * assert measured times against the same functions.
 *
 * Inputs
 *   io   io_timeout, seconds: the longest one lease read or write may take.
 *        Written into the lockspace when it is formatted; every host joins
 *        with the value on disk (cp_lockspace_join() reads it), so all
 *        hosts of a domain share it.  Production 10, tests 1.
 *   W    watchdog_fire_timeout = 60 s: how long /dev/watchdog runs without
 *        being petted.  sanlock uses this constant in host_dead_seconds
 *        even when started with -w 0 (no watchdog, as in our test sandbox):
 *        the other hosts cannot know whether the silent host had a
 *        watchdog, so they always wait for it.
 *
 * Derived (seconds)                      io=1  io=10
 *   id_renewal       = 2 io                 2     20  renewal period
 *   id_renewal_warn  = 6 io                 6     60  renewal late: warning
 *   id_renewal_fail  = 8 io                 8     80  renewal failed: the
 *                                                     host's daemon kills its
 *                                                     lease holders; other
 *                                                     hosts see it FAIL
 *   host_dead        = 8 io + W            68    140  others see it DEAD and
 *                                                     may take its leases
 *   join_free        = 2 io .. 5 io + 1  2..6 20..51  join a free host id
 *   join_held_max    = host_dead + 6 io    74    200  join a host id left held
 *                                                     by a crashed host of
 *                                                     another name
 *   paxos_free_max   = 6 io                 6     60  acquire a free lease
 *   paxos_held_max   = host_dead + 7 io    75    210  acquire a dead host's
 *                                                     lease, waiting
 *   release_takeover = io + 6 io            7     70  a holder PROCESS dies:
 *                                                     until another host
 *                                                     holds the lease
 *   takeover_min     = host_dead - 2 io    66    120  a holder HOST dies:
 *   takeover_max     = host_dead + 8io + 2 78    222  until another host
 *                                                     holds the lease
 *
 * Worked timeline: the SPM (host 2) dies at T (power loss, or here: its
 * sanlock daemon is killed with kill -9).  io = 10, in parentheses io = 1.
 *
 *   T-20 (T-2)  host 2 renews its host id for the last time (it renews every
 *               id_renewal; its last renewal lies in [T - 2 io, T]).
 *               Call that moment R.
 *   R..R+20     every other host reads all host ids once per own renewal
 *   (R..R+2)    and notes "last_live" = the moment it saw host 2's
 *               timestamp change; last_live lies in [R, R + 2 io].
 *   R+60 (R+6)  host 2, were it alive without storage, would log warnings.
 *   R+80 (R+8)  id_renewal_fail: host 2's own daemon (if alive) kills the
 *               processes holding its leases (SIGTERM, SIGKILL after the
 *               kill grace of 40 s, so before the watchdog fires); other
 *               hosts report host 2 as FAIL.  An acquire of SDM now fails
 *               at once with -EAGAIN ("stopped renewing") unless
 *               wait_dead_owner is set, in which case it waits.
 *   R+130..R+139  host 2's watchdog fires (last keepalive + W): host 2 is
 *               reset and cannot write any more.  With -w 0 nothing resets
 *               it: a killed daemon leaves its client processes running;
 *               they learn of it from cp_lease_client_check() (-ESTALE)
 *               and must stop writing at once.
 *   last_live + host_dead + 1 = R+141..R+161 (R+69..R+71)
 *               an acquirer's daemon sees host 2 as dead (now - last_live >
 *               host_dead, whole seconds) and runs the paxos ballot for SDM
 *               (at most paxos_free_max of I/O); the new SPM holds the lease
 *               with lease version + 1.
 *
 *   So, from the death T: takeover >= R + host_dead >= T - 2 io + host_dead,
 *   and takeover <= R + 2 io + host_dead + 1 (whole-second clock) + 1
 *   (the acquirer re-checks once a second) + paxos_free_max
 *   <= T + host_dead + 8 io + 2.
 *
 * Clean cases are fast: a process that exits or is killed (kill -9) has its
 * leases released on disk by its daemon at once, so another host acquires
 * in milliseconds; a host that leaves its lockspace frees its host id.
 *
 * Joining (sanlock delta lease): read the host id record; if free, write
 * ours, wait delta_short_delay = 2 io, read back to see nobody else wrote
 * it; the daemon polls once a second for the result.  Measured: ~3 s for
 * io = 1, ~21 s for io = 10.  A record left held by a host with the same
 * host name (-e) is re-acquired as fast ("fast reacquire"), so cowpoold
 * passes a stable host name.  A record left by another name waits
 * max(host_dead, 8 io) before it may be taken.
 */
#ifndef CP_SPM_TIMEOUTS_H
#define CP_SPM_TIMEOUTS_H

#define CP_IO_TIMEOUT_DEFAULT 10u        /* seconds, sanlock's default */
#define CP_IO_TIMEOUT_MAX 255u           /* stored in one byte on disk */
#define CP_WATCHDOG_FIRE_TIMEOUT 60u     /* sanlock constant, even with -w 0 */

/* Host id renewal period. */
static inline unsigned cp_id_renewal_seconds(unsigned io)
{
	return 2 * io;
}

/* A renewal this late is logged as a warning. */
static inline unsigned cp_id_renewal_warn_seconds(unsigned io)
{
	return 6 * io;
}

/* No successful renewal for this long: the host's own daemon starts killing
 * its lease holders; other hosts report it as FAIL. */
static inline unsigned cp_id_renewal_fail_seconds(unsigned io)
{
	return 8 * io;
}

/* No renewal for this long: the host's watchdog has fired; other hosts
 * report DEAD and may take its leases. */
static inline unsigned cp_host_dead_seconds(unsigned io)
{
	return cp_id_renewal_fail_seconds(io) + CP_WATCHDOG_FIRE_TIMEOUT;
}

/* Joining a free host id: delta_short_delay (2 io) plus three lease I/Os,
 * plus the daemon's one-second poll for the result. */
static inline unsigned cp_join_free_min(unsigned io)
{
	return 2 * io;
}
static inline unsigned cp_join_free_max(unsigned io)
{
	return 2 * io + 3 * io + 1;
}

/* Joining a host id left held by a crashed host with another name. */
static inline unsigned cp_join_held_max(unsigned io)
{
	unsigned large = cp_id_renewal_seconds(io) + 6 * io;
	unsigned dead = cp_host_dead_seconds(io);
	return (dead > large ? dead : large) + 2 * io + 4 * io;
}

/* Acquiring a free lease: six lease I/Os at most (uncontended). */
static inline unsigned cp_paxos_acquire_free_max(unsigned io)
{
	return 6 * io;
}

/* Acquiring a lease held by a host that is dying, from the moment the
 * acquirer starts waiting (acquire with wait_dead_owner). */
static inline unsigned cp_paxos_acquire_held_max(unsigned io)
{
	return cp_host_dead_seconds(io) + 7 * io;
}

/* A process holding a lease exits or is killed: its daemon writes the
 * release at once (one lease write), then another host's acquire is a
 * free acquire.  Bound from the process's death to the new owner. */
static inline unsigned cp_release_takeover_max(unsigned io)
{
	return io + cp_paxos_acquire_free_max(io);
}

/* Window for another host to take over a lease, measured from the moment
 * the holder's host died (see the timeline above). */
static inline unsigned cp_takeover_min_seconds(unsigned io)
{
	return cp_host_dead_seconds(io) - cp_id_renewal_seconds(io);
}
static inline unsigned cp_takeover_max_seconds(unsigned io)
{
	return cp_host_dead_seconds(io) + cp_id_renewal_seconds(io) + 2 +
	       cp_paxos_acquire_free_max(io);
}

#endif
