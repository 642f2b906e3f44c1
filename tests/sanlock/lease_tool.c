/* tests/sanlock/lease_tool.c - a small CLI over spm/lease.c for the
 * integration tests (tests/integration/leases.sh).  Not installed.
 *
 * The daemon it talks to is chosen by SANLOCK_RUN_DIR, as for every caller
 * of lease.c.
 *
 *   lease_tool init-lockspace LS_ARGS [--io-timeout S]
 *   lease_tool init-resource  RES_ARGS
 *   lease_tool join      LS_ARGS --host-id N [--async]
 *   lease_tool leave     LS_ARGS --host-id N
 *   lease_tool ls-status LS_ARGS --host-id N      joined | not-joined | busy
 *   lease_tool host-state --lockspace L --host-id N
 *   lease_tool status    RES_ARGS                 free lver=V
 *                                                 held host=N lver=V gen=G
 * state=S lease_tool acquire   RES_ARGS [--wait] [--expect-lver V] [--hold]
 *   lease_tool session   RES_ARGS
 *   lease_tool timeouts  --io-timeout S           the timeline of timeouts.h
 *
 *   LS_ARGS  = --lockspace NAME --path P [--offset N]
 *   RES_ARGS = --lockspace NAME --resource NAME --path P [--offset N]
 *
 * acquire --hold keeps the lease until SIGTERM/SIGINT (then releases it and
 * prints "released") or until the daemon connection is lost (prints
 * "lost: ..." and exits 5).
 *
 * session registers once and then reads one command per line on stdin,
 * answering one line each on stdout ("ok ..." or "err ERRNAME message"):
 *   acquire [wait] [lver=V]   ok acquired lver=V
 *   release                   ok released
 *   held                      ok held lver=V | ok not-held
 *   check                     ok connected
 *   pid                       ok pid=P
 *   quit                      (exit 0; leases still held are released by
 *                              the daemon when the process exits)
 *
 * Exit status: 0 success, 2 EBUSY, 3 EAGAIN, 4 ENOTCONN, 5 ESTALE,
 * 6 ECONNREFUSED, 1 anything else.  Errors go to stderr as
 * "lease_tool: ERRNAME: message".
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "spm.h"
#include "timeouts.h"

static const char *errname(int err)
{
	const char *n = strerrorname_np(err < 0 ? -err : err);
	return n ? n : "E?";
}

static int exit_code(int err)
{
	switch (err) {
	case 0:
		return 0;
	case -EBUSY:
		return 2;
	case -EAGAIN:
		return 3;
	case -ENOTCONN:
		return 4;
	case -ESTALE:
		return 5;
	case -ECONNREFUSED:
		return 6;
	default:
		return 1;
	}
}

static int fail(int err)
{
	fprintf(stderr, "lease_tool: %s: %s\n", errname(err), cp_last_error());
	return exit_code(err);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: lease_tool COMMAND --lockspace NAME [--resource NAME] "
		"--path P [--offset N] [--host-id N] [--io-timeout S] "
		"[--async] [--wait] [--expect-lver V] [--hold]\n"
		"commands: init-lockspace init-resource join leave ls-status "
		"host-state status acquire session timeouts\n");
	exit(1);
}

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig)
{
	stop_signal = sig;
}

/* acquire --hold: wait for SIGTERM/SIGINT or the loss of the daemon. */
static int hold(cp_lease_client *c, const struct cp_lease_opts *lo)
{
	struct sigaction sa;
	int rv;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	while (!stop_signal) {
		struct pollfd p = {.fd = cp_lease_client_fd(c),
				   .events = POLLRDHUP};
		rv = poll(&p, 1, 200);
		if (rv > 0 || cp_lease_client_check(c) < 0) {
			rv = cp_lease_client_check(c);
			if (rv < 0) {
				printf("lost: %s\n", cp_last_error());
				return exit_code(rv);
			}
		}
	}
	rv = cp_lease_release(c, lo);
	if (rv < 0)
		return fail(rv);
	printf("released\n");
	return 0;
}

static int session(cp_lease_client *c, const struct cp_lease_opts *lo)
{
	char line[256];

	while (fgets(line, sizeof(line), stdin)) {
		char *save = NULL, *cmd = strtok_r(line, " \t\r\n", &save), *a;
		uint64_t v = 0;
		int rv;

		if (!cmd)
			continue;
		if (!strcmp(cmd, "quit"))
			break;
		if (!strcmp(cmd, "acquire")) {
			struct cp_lease_acquire_opts ao;
			cp_lease_acquire_opts_init(&ao);
			while ((a = strtok_r(NULL, " \t\r\n", &save))) {
				if (!strcmp(a, "wait"))
					ao.wait_dead_owner = true;
				else if (!strncmp(a, "lver=", 5))
					ao.expect_lver =
					    strtoull(a + 5, NULL, 0);
			}
			rv = cp_lease_acquire(c, lo, &ao, &v);
			if (rv == 0)
				printf("ok acquired lver=%" PRIu64 "\n", v);
		} else if (!strcmp(cmd, "release")) {
			rv = cp_lease_release(c, lo);
			if (rv == 0)
				printf("ok released\n");
		} else if (!strcmp(cmd, "held")) {
			rv = cp_lease_held(c, lo, &v);
			if (rv == 1)
				printf("ok held lver=%" PRIu64 "\n", v);
			else if (rv == 0)
				printf("ok not-held\n");
		} else if (!strcmp(cmd, "check")) {
			rv = cp_lease_client_check(c);
			if (rv == 0)
				printf("ok connected\n");
		} else if (!strcmp(cmd, "pid")) {
			rv = 0;
			printf("ok pid=%d\n", (int)getpid());
		} else {
			rv = cp_error(-EINVAL, "unknown session command '%s'",
				      cmd);
		}
		if (rv < 0)
			printf("err %s %s\n", errname(rv), cp_last_error());
	}
	return 0;
}

static void print_timeouts(unsigned io)
{
	printf("io_timeout=%u\n", io);
	printf("id_renewal=%u\n", cp_id_renewal_seconds(io));
	printf("id_renewal_warn=%u\n", cp_id_renewal_warn_seconds(io));
	printf("id_renewal_fail=%u\n", cp_id_renewal_fail_seconds(io));
	printf("host_dead=%u\n", cp_host_dead_seconds(io));
	printf("join_free_min=%u\n", cp_join_free_min(io));
	printf("join_free_max=%u\n", cp_join_free_max(io));
	printf("join_held_max=%u\n", cp_join_held_max(io));
	printf("paxos_acquire_free_max=%u\n", cp_paxos_acquire_free_max(io));
	printf("paxos_acquire_held_max=%u\n", cp_paxos_acquire_held_max(io));
	printf("release_takeover_max=%u\n", cp_release_takeover_max(io));
	printf("takeover_min=%u\n", cp_takeover_min_seconds(io));
	printf("takeover_max=%u\n", cp_takeover_max_seconds(io));
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"lockspace", required_argument, NULL, 'l'},
	    {"resource", required_argument, NULL, 'r'},
	    {"path", required_argument, NULL, 'p'},
	    {"offset", required_argument, NULL, 'o'},
	    {"host-id", required_argument, NULL, 'i'},
	    {"io-timeout", required_argument, NULL, 't'},
	    {"expect-lver", required_argument, NULL, 'v'},
	    {"async", no_argument, NULL, 'a'},
	    {"wait", no_argument, NULL, 'w'},
	    {"hold", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	struct cp_lockspace_opts lso;
	struct cp_lease_opts lo;
	struct cp_lease_acquire_opts ao;
	const char *cmd;
	uint64_t host_id = 0;
	bool async = false, holdit = false;
	int c, rv;

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* like cowpoold: a dead daemon must not kill us with SIGPIPE
	 * (lease.c guards its own calls too) */
	signal(SIGPIPE, SIG_IGN);

	if (argc < 2)
		usage();
	cmd = argv[1];
	cp_lockspace_opts_init(&lso);
	cp_lease_opts_init(&lo);
	cp_lease_acquire_opts_init(&ao);
	optind = 2;
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			lso.name = lo.lockspace = optarg;
			break;
		case 'r':
			lo.name = optarg;
			break;
		case 'p':
			lso.path = lo.path = optarg;
			break;
		case 'o':
			lso.offset = lo.offset = strtoull(optarg, NULL, 0);
			break;
		case 'i':
			host_id = strtoull(optarg, NULL, 0);
			break;
		case 't':
			lso.io_timeout = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'v':
			ao.expect_lver = strtoull(optarg, NULL, 0);
			break;
		case 'a':
			async = true;
			break;
		case 'w':
			ao.wait_dead_owner = true;
			break;
		case 'H':
			holdit = true;
			break;
		default:
			usage();
		}
	}

	if (!strcmp(cmd, "timeouts")) {
		print_timeouts(lso.io_timeout);
		return 0;
	}
	if (!strcmp(cmd, "init-lockspace")) {
		rv = cp_lockspace_format(&lso);
		if (rv < 0)
			return fail(rv);
		printf("lockspace %s written, io_timeout %" PRIu32 "\n",
		       lso.name, lso.io_timeout);
		return 0;
	}
	if (!strcmp(cmd, "init-resource")) {
		rv = cp_lease_format(&lo);
		if (rv < 0)
			return fail(rv);
		printf("lease %s written\n", lo.name);
		return 0;
	}
	if (!strcmp(cmd, "join")) {
		double t0 = now_s();
		rv = async ? cp_lockspace_join_start(&lso, host_id)
			   : cp_lockspace_join(&lso, host_id);
		if (rv < 0)
			return fail(rv);
		printf("%s host %" PRIu64 " in %.3f s\n",
		       async ? "joining" : "joined", host_id, now_s() - t0);
		return 0;
	}
	if (!strcmp(cmd, "leave")) {
		rv = cp_lockspace_leave(&lso, host_id);
		if (rv < 0)
			return fail(rv);
		printf("left host %" PRIu64 "\n", host_id);
		return 0;
	}
	if (!strcmp(cmd, "ls-status")) {
		rv = cp_lockspace_status(&lso, host_id);
		if (rv < 0)
			return fail(rv);
		printf("%s\n", rv == CP_LOCKSPACE_JOINED ? "joined"
			       : rv == CP_LOCKSPACE_BUSY ? "busy"
							 : "not-joined");
		return 0;
	}
	if (!strcmp(cmd, "host-state")) {
		rv = cp_lockspace_host_state(lso.name, host_id);
		if (rv < 0)
			return fail(rv);
		printf("%s\n", cp_host_state_name((enum cp_host_state)rv));
		return 0;
	}
	if (!strcmp(cmd, "status")) {
		struct cp_lease_owner ow;
		rv = cp_lease_read(&lo, &ow);
		if (rv < 0)
			return fail(rv);
		if (ow.held)
			printf("held host=%" PRIu64 " lver=%" PRIu64
			       " gen=%" PRIu64 " state=%s\n",
			       ow.host_id, ow.lver, ow.generation,
			       cp_host_state_name(ow.host_state));
		else
			printf("free lver=%" PRIu64 "\n", ow.lver);
		return 0;
	}
	if (!strcmp(cmd, "acquire") || !strcmp(cmd, "session")) {
		cp_lease_client *cl;
		uint64_t v = 0;

		rv = cp_lease_client_open(&cl);
		if (rv < 0)
			return fail(rv);
		if (!strcmp(cmd, "session")) {
			rv = session(cl, &lo);
			cp_lease_client_close(cl);
			return rv;
		}
		rv = cp_lease_acquire(cl, &lo, &ao, &v);
		if (rv < 0) {
			rv = fail(rv);
			cp_lease_client_close(cl);
			return rv;
		}
		printf("acquired %s lver=%" PRIu64 "\n", lo.name, v);
		rv = holdit ? hold(cl, &lo) : 0;
		cp_lease_client_close(cl);
		return rv;
	}
	usage();
	return 1;
}
