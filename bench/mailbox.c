/* bench/mailbox.c - storage mailbox round trip: post -> reply, without
 * lvextend (the SPM's serve callback grants at once), for 1, 10 and 100
 * hosts posting at the same time, and the SPM's idle cost.
 *
 *   cp_mbox_bench [-d DIR] [-n HOSTS,...] [-c REQUESTS] [-t THINK_MS]
 *                 [-s SERVER_POLL_US] [-p HOST_POLL_US] [-i IDLE_SECONDS]
 *                 [-o RESULTS.json]
 *
 * The inbox and outbox are two files of 251 areas (250 hosts + doorbell)
 * in DIR (default /var/tmp/cowpool-bench; O_DIRECT, so not tmpfs), the
 * server scans 250 areas as on a full pool.  Every host is a thread with
 * its own cp_mbox_host; each posts REQUESTS requests (default 1000 / hosts,
 * at least 20), one at a time, each for its own volume, and times post ->
 * reply on CLOCK_MONOTONIC.  Between two requests a host pauses a random
 * 0..2*THINK_MS (default 20: 100 hosts then ask ~5000 times a second, far
 * more than thin disks growing 1 GiB at a time ever do); -t 0 is a closed
 * loop where every host posts again the moment it has its reply, which on
 * one machine measures how fast this process can post, not the mailbox.  Prints p50 / p99 / max per host count and
 * the idle cost (bytes read per second and CPU of the process while the
 * server polls with nobody posting, measured for IDLE_SECONDS, default 5,
 * once the server has slowed to its idle poll; the safety scan, 1 MiB
 * every 30 s, adds 35 KB/s on average), and appends one JSON object per row
 * to RESULTS.json when given.  See bench/README.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blockcore.h"
#include "common.h"
#include "mailbox.h"

#define DOM "11111111-2222-3333-4444-555555555555"
#define IMG "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
#define NHOSTS_AREAS 250u

static uint64_t now_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void serve(void *opaque, struct cp_mbox_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct cp_mbox_seg seg = { .lv_offset = 0,
					   .length = items[i].req.size,
					   .pv_offset = 1 << 20 };

		snprintf(seg.pv, sizeof(seg.pv), "pv0");
		items[i].reply.status = 0;
		items[i].reply.size = items[i].req.size;
		cp_mbox_reply_set_map(&items[i].reply, &seg, 1);
	}
}

struct poster {
	cp_bdev *in, *out;
	unsigned id, count, poll_us, think_ms;
	uint64_t *lat;          /* ns, count of them */
	int err;
};

static void *poster_main(void *arg)
{
	struct poster *p = arg;
	struct cp_mbox_host_opts o;
	cp_mbox_host *h = NULL;
	char vol[CP_MBOX_UUID_LEN + 1];
	unsigned seed = p->id;

	snprintf(vol, sizeof(vol), "%08x-0000-4000-8000-000000000001", p->id);
	cp_mbox_host_opts_init(&o);
	o.host_id = p->id;
	o.poll_us = p->poll_us;
	p->err = cp_mbox_host_open(p->in, p->out, &o, &h);
	for (unsigned k = 0; !p->err && k < p->count; k++) {
		struct cp_mbox_ticket t;
		struct cp_mbox_reply rp;
		uint64_t t0 = now_ns(CLOCK_MONOTONIC);

		p->err = cp_mbox_post_extend(h, DOM, IMG, vol,
					     (uint64_t)(k + 1) << 27, 0, &t);
		if (!p->err)
			p->err = cp_mbox_wait_reply(h, &t, 30000, &rp);
		if (!p->err && rp.status)
			p->err = rp.status;
		p->lat[k] = now_ns(CLOCK_MONOTONIC) - t0;
		if (p->think_ms) {
			/* load shaping between requests, not synchronisation */
			uint64_t ns = (uint64_t)rand_r(&seed) %
				      (2u * p->think_ms * 1000000u + 1);
			struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
					       .tv_nsec = (long)(ns % 1000000000u) };

			nanosleep(&ts, NULL);
		}
	}
	if (p->err)
		fprintf(stderr, "host %u: %s\n", p->id, cp_error_msg(p->err));
	cp_mbox_host_close(h);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int open_dev(const char *path, cp_bdev **out)
{
	struct cp_bdev_opts bo;

	cp_bdev_opts_init(&bo);
	bo.cache = CP_CACHE_NONE;
	bo.create = true;
	return cp_bdev_open(path, &bo, out);
}

int main(int argc, char **argv)
{
	const char *dir = "/var/tmp/cowpool-bench", *json = NULL;
	char hosts_arg[64] = "1,10,100", in_path[512], out_path[512];
	unsigned reqs = 0, server_poll = 2000, host_poll = 1000, idle = 5;
	unsigned think = 20;
	cp_bdev *sin, *sout, *hin, *hout;
	struct cp_mbox_server_opts so;
	struct cp_mbox_server_stats st0, st1;
	cp_mbox_server *srv;
	FILE *jf = NULL;
	int c, r;

	while ((c = getopt(argc, argv, "d:n:c:t:s:p:i:o:")) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'n': snprintf(hosts_arg, sizeof(hosts_arg), "%s", optarg); break;
		case 'c': reqs = (unsigned)atoi(optarg); break;
		case 't': think = (unsigned)atoi(optarg); break;
		case 's': server_poll = (unsigned)atoi(optarg); break;
		case 'p': host_poll = (unsigned)atoi(optarg); break;
		case 'i': idle = (unsigned)atoi(optarg); break;
		case 'o': json = optarg; break;
		default:
			fprintf(stderr, "usage: cp_mbox_bench [-d dir] [-n hosts,...] "
				"[-c requests] [-t think_ms] [-s server_poll_us] [-p host_poll_us] "
				"[-i idle_s] [-o results.json]\n");
			return 2;
		}
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		perror(dir);
		return 1;
	}
	snprintf(in_path, sizeof(in_path), "%s/mbox-inbox", dir);
	snprintf(out_path, sizeof(out_path), "%s/mbox-outbox", dir);
	if ((r = open_dev(in_path, &sin)) < 0 || (r = open_dev(out_path, &sout)) < 0 ||
	    (r = open_dev(in_path, &hin)) < 0 || (r = open_dev(out_path, &hout)) < 0 ||
	    (r = cp_bdev_truncate(sin, 0)) < 0 || (r = cp_bdev_truncate(sout, 0)) < 0 ||
	    (r = cp_bdev_truncate(sin, (NHOSTS_AREAS + 1) * CP_MBOX_AREA_SIZE)) < 0 ||
	    (r = cp_bdev_truncate(sout, (NHOSTS_AREAS + 1) * CP_MBOX_AREA_SIZE)) < 0) {
		fprintf(stderr, "cp_mbox_bench: %s\n", cp_error_msg(r));
		return 1;
	}
	if (json && !(jf = fopen(json, "a"))) {
		perror(json);
		return 1;
	}
	cp_mbox_server_opts_init(&so);
	so.max_hosts = NHOSTS_AREAS;
	so.poll_us = server_poll;
	so.serve = serve;
	r = cp_mbox_server_start(sin, sout, &so, &srv);
	if (r < 0) {
		fprintf(stderr, "cp_mbox_bench: %s\n", cp_error_msg(r));
		return 1;
	}
	printf("mailbox round trip (post -> reply, no lvextend), server poll "
	       "%u us, host poll %u us, think 0..%u ms, %u areas scanned\n",
	       server_poll, host_poll, 2 * think, NHOSTS_AREAS);
	printf("%6s %9s %9s %9s %9s %8s\n", "hosts", "requests", "p50 ms",
	       "p99 ms", "max ms", "batches");
	for (char *save = NULL, *tok = strtok_r(hosts_arg, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		unsigned n = (unsigned)atoi(tok), count, total;
		struct poster *ps;
		pthread_t *th;
		uint64_t *all;
		int failed = 0;

		if (n < 1 || n > NHOSTS_AREAS) {
			fprintf(stderr, "cp_mbox_bench: %u hosts: 1..%u\n", n,
				NHOSTS_AREAS);
			return 2;
		}
		count = reqs ? reqs : CP_MAX(1000u / n, 20u);
		total = n * count;
		ps = calloc(n, sizeof(*ps));
		th = calloc(n, sizeof(*th));
		all = calloc(total, sizeof(*all));
		cp_mbox_server_stats(srv, &st0);
		for (unsigned i = 0; i < n; i++) {
			ps[i] = (struct poster){ .in = hin, .out = hout,
				.id = i + 1, .count = count, .poll_us = host_poll,
				.think_ms = think,
				.lat = all + (size_t)i * count };
			pthread_create(&th[i], NULL, poster_main, &ps[i]);
		}
		for (unsigned i = 0; i < n; i++) {
			pthread_join(th[i], NULL);
			failed |= ps[i].err != 0;
		}
		cp_mbox_server_stats(srv, &st1);
		if (failed)
			return 1;
		qsort(all, total, sizeof(*all), cmp_u64);
		{
			double p50 = all[total / 2] / 1e6,
			       p99 = all[(size_t)(total * 0.99)] / 1e6,
			       mx = all[total - 1] / 1e6;

			printf("%6u %9u %9.2f %9.2f %9.2f %8" PRIu64 "\n", n,
			       total, p50, p99, mx, st1.batches - st0.batches);
			if (jf)
				fprintf(jf, "{\"bench\":\"mailbox\",\"hosts\":%u,"
					"\"requests\":%u,\"p50_ms\":%.3f,"
					"\"p99_ms\":%.3f,\"max_ms\":%.3f,"
					"\"batches\":%" PRIu64 ",\"server_poll_us\":%u,"
					"\"host_poll_us\":%u,\"think_ms\":%u}\n", n,
					total, p50, p99, mx,
					st1.batches - st0.batches, server_poll,
					host_poll, think);
		}
		free(ps);
		free(th);
		free(all);
	}
	if (idle) {
		uint64_t t0, c0, t1, c1;
		double secs;

		/* past idle_after_ms, so the server polls at its idle pace */
		usleep(so.idle_after_ms * 1000u + 100000u);
		t0 = now_ns(CLOCK_MONOTONIC);
		c0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
		cp_mbox_server_stats(srv, &st0);
		sleep(idle); /* measuring an idle interval, not synchronising */
		cp_mbox_server_stats(srv, &st1);
		t1 = now_ns(CLOCK_MONOTONIC);
		c1 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
		secs = (t1 - t0) / 1e9;
		printf("idle SPM, 250 host areas, %u s: %.0f bytes read/s (%.0f "
		       "doorbell reads/s, %" PRIu64 " scans), CPU %.2f%% of one "
		       "core\n", idle,
		       (st1.bytes_read - st0.bytes_read) / secs,
		       (st1.doorbell_reads - st0.doorbell_reads) / secs,
		       st1.scans - st0.scans, 100.0 * (c1 - c0) / 1e9 / secs);
		if (jf)
			fprintf(jf, "{\"bench\":\"mailbox-idle\",\"bytes_read_per_s\":%.0f,"
				"\"cpu_pct\":%.3f,\"server_poll_us\":%u}\n",
				(st1.bytes_read - st0.bytes_read) / secs,
				100.0 * (c1 - c0) / 1e9 / secs, server_poll);
	}
	cp_mbox_server_stop(srv);
	cp_bdev_close(hin);
	cp_bdev_close(hout);
	cp_bdev_close(sin);
	cp_bdev_close(sout);
	unlink(in_path);
	unlink(out_path);
	if (jf)
		fclose(jf);
	return 0;
}
