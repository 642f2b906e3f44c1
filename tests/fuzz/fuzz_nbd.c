/* tests/fuzz/fuzz_nbd.c - libFuzzer target for the NBD server.
 *
 * Each input is the byte stream a client sends: it is written into one
 * end of a socketpair (then that direction is shut down), the server runs
 * the connection on the other end with cp_nbd_server_serve_fd(), and a
 * drain thread reads and discards everything the server answers.  The
 * handshake and the transmission phase are both reached: the seed corpus
 * (corpus_nbd/, made by make_nbd_corpus.py) holds whole sessions.
 *
 * The server has three exports on one 4 MiB qcow2 image on a RAM device,
 * made afresh for every input: "" (read-write, allocation depth), "ro"
 * (read-only) and "z" (detect-zeroes=unmap, unmap).
 *
 * Oracles: ASan/LSan/UBSan, libFuzzer's timeout (a connection that does
 * not end when its input ends), and after the connection: the server has
 * no client left, the image still checks without corruption and every
 * export is still listed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blockcore.h"
#include "common.h"
#include "nbd.h"
#include "qcow.h"

#define FUZZ_NAME "fuzz_nbd"
#include "fuzz.h"

struct feed {
	int fd;
	const uint8_t *data;
	size_t size;
};

static void *feed_thread(void *arg)
{
	struct feed *f = arg;
	size_t off = 0;

	while (off < f->size) {
		ssize_t r = send(f->fd, f->data + off, f->size - off,
				 MSG_NOSIGNAL);
		if (r <= 0)
			break; /* the server hung up: fine */
		off += (size_t)r;
	}
	shutdown(f->fd, SHUT_WR);
	return NULL;
}

static void *drain_thread(void *arg)
{
	int fd = *(int *)arg;
	char buf[65536];

	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
	return NULL;
}

static void add_export(cp_nbd_server *s, cp_image *img, const char *name,
		       bool ro, bool dz)
{
	struct cp_nbd_export_opts eo;

	cp_nbd_export_opts_init(&eo);
	eo.name = name;
	eo.description = "fuzz";
	eo.img = img;
	eo.readonly = ro;
	eo.allocation_depth = !ro;
	eo.unmap = dz;
	eo.detect_zeroes = dz ? CP_NBD_DETECT_ZEROES_UNMAP :
				CP_NBD_DETECT_ZEROES_OFF;
	if (cp_nbd_server_add_export(s, &eo) < 0)
		FINDING("add_export %s: %s", name, cp_last_error());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cp_ram_opts ro;
	struct cp_create_opts co;
	struct cp_open_opts oo;
	struct cp_nbd_server_opts so;
	struct cp_nbd_export_stats st[4];
	struct cp_check_result res;
	cp_nbd_server *s;
	cp_bdev *dev;
	cp_image *img;
	pthread_t feeder, drainer;
	struct feed f;
	int sv[2];

	cp_ram_opts_init(&ro);
	ro.max_size = 16u << 20;
	if (cp_bdev_open_ram(&ro, &dev) < 0)
		FINDING("ram: %s", cp_last_error());
	cp_create_opts_init(&co);
	co.virtual_size = 4u << 20;
	if (cp_image_create_dev(dev, "fuzz.qcow2", &co, NULL, NULL) < 0)
		FINDING("create: %s", cp_last_error());
	cp_open_opts_init(&oo);
	if (cp_image_open_dev(dev, "fuzz.qcow2", &oo, &img) < 0)
		FINDING("open: %s", cp_last_error());

	cp_nbd_server_opts_init(&so);
	so.max_inflight = 8;
	so.handshake_timeout_ms = 0; /* input end ends the handshake */
	if (cp_nbd_server_create(&so, &s) < 0)
		FINDING("server: %s", cp_last_error());
	add_export(s, img, "", false, false);
	add_export(s, img, "ro", true, false);
	add_export(s, img, "z", false, true);

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		FINDING("socketpair: %s", strerror(errno));
	f.fd = sv[0];
	f.data = data;
	f.size = size;
	pthread_create(&feeder, NULL, feed_thread, &f);
	pthread_create(&drainer, NULL, drain_thread, &sv[0]);
	cp_nbd_server_serve_fd(s, sv[1]); /* closes sv[1] */
	pthread_join(feeder, NULL);
	pthread_join(drainer, NULL);
	close(sv[0]);

	if (cp_nbd_server_clients(s) != 0)
		FINDING("a client is still counted after its connection ended");
	if (cp_nbd_server_list_exports(s, st, 4) != 3)
		FINDING("exports changed");
	cp_nbd_server_destroy(s);

	if (cp_image_close(img) < 0)
		FINDING("close: %s", cp_last_error());
	oo.for_check = true;
	oo.readonly = true;
	if (cp_image_open_dev(dev, "fuzz.qcow2", &oo, &img) < 0)
		FINDING("reopen: %s", cp_last_error());
	memset(&res, 0, sizeof(res));
	if (cp_image_check(img, 0, &res, NULL, NULL) < 0 || res.corruptions)
		FINDING("image corrupt after the session (%llu corruptions)",
			(unsigned long long)res.corruptions);
	cp_image_close(img);
	cp_bdev_close(dev);
	return 0;
}
