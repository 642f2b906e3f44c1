/* tests/unit/test_nbd.c - the NBD server's embedding API (nbd.h), as
 * cowpoold uses it: exports added and removed at run time, stats, the
 * release callback, destroy with clients connected.  Connections run over
 * socketpairs with cp_nbd_server_serve_fd() on a thread; the client side
 * is a minimal hand-written NBD client.  No sleeps: every wait is on a
 * socket or a thread join.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "blockcore.h"
#include "common.h"
#include "nbd.h"
#include "qcow.h"

struct ram_img {
	cp_bdev *dev;
	cp_image *img;
};

static void ram_img_open(struct ram_img *r, uint64_t size)
{
	struct cp_ram_opts ro;
	struct cp_create_opts co;
	struct cp_open_opts oo;

	cp_ram_opts_init(&ro);
	ro.max_size = 64ull << 20;
	assert_int_equal(cp_bdev_open_ram(&ro, &r->dev), 0);
	cp_create_opts_init(&co);
	co.virtual_size = size;
	assert_int_equal(cp_image_create_dev(r->dev, "t.qcow2", &co, NULL, NULL), 0);
	cp_open_opts_init(&oo);
	assert_int_equal(cp_image_open_dev(r->dev, "t.qcow2", &oo, &r->img), 0);
}

static void ram_img_close(struct ram_img *r)
{
	assert_int_equal(cp_image_close(r->img), 0);
	cp_bdev_close(r->dev);
}

static int released;
static cp_image *released_img;

static void on_release(void *opaque, cp_image *img)
{
	(void)opaque;
	released++;
	released_img = img;
}

static void add(cp_nbd_server *s, const char *name, cp_image *img, bool ro)
{
	struct cp_nbd_export_opts eo;

	cp_nbd_export_opts_init(&eo);
	eo.name = name;
	eo.description = "unit";
	eo.img = img;
	eo.readonly = ro;
	eo.release = on_release;
	assert_int_equal(cp_nbd_server_add_export(s, &eo), 0);
}

/* --- a minimal client ------------------------------------------------------- */

struct served {
	cp_nbd_server *s;
	int fd;
	pthread_t t;
	int ret;
};

static void *serve_thread(void *arg)
{
	struct served *sv = arg;
	sv->ret = cp_nbd_server_serve_fd(sv->s, sv->fd);
	return NULL;
}

/* Start a connection; returns the client end. */
static int client_open(cp_nbd_server *s, struct served *sv)
{
	int p[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p), 0);
	sv->s = s;
	sv->fd = p[1];
	assert_int_equal(pthread_create(&sv->t, NULL, serve_thread, sv), 0);
	return p[0];
}

static void rd(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t r = recv(fd, p, len, 0);
		assert_true(r > 0);
		p += r;
		len -= (size_t)r;
	}
}

static void wr(int fd, const void *buf, size_t len)
{
	assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Handshake and NBD_OPT_GO (simple replies); returns the option reply
 * type of GO's final reply (1 = ACK). */
static uint32_t client_go(int fd, const char *name, uint64_t *size)
{
	uint8_t b[64];
	size_t nl = strlen(name);

	rd(fd, b, 18);
	assert_true(cp_be64(b) == 0x4e42444d41474943ull);
	cp_put_be32(b, 3);
	wr(fd, b, 4);
	cp_put_be64(b, 0x49484156454F5054ull);
	cp_put_be32(b + 8, 7);
	cp_put_be32(b + 12, (uint32_t)(4 + nl + 2));
	cp_put_be32(b + 16, (uint32_t)nl);
	memcpy(b + 20, name, nl);
	cp_put_be16(b + 20 + nl, 0);
	wr(fd, b, 22 + nl);
	for (;;) {
		uint8_t h[20], d[256];
		uint32_t type, len;
		rd(fd, h, 20);
		type = cp_be32(h + 12);
		len = cp_be32(h + 16);
		assert_true(len <= sizeof(d));
		rd(fd, d, len);
		if (type == 3 && cp_be16(d) == 0)
			*size = cp_be64(d + 2);
		if (type != 3)
			return type;
	}
}

/* One request with a simple reply; returns the reply's error. */
static uint32_t client_rq(int fd, uint16_t type, uint64_t off, uint32_t len,
			  void *buf)
{
	uint8_t r[28], h[16];

	cp_put_be32(r, 0x25609513);
	cp_put_be16(r + 4, 0);
	cp_put_be16(r + 6, type);
	cp_put_be64(r + 8, 42);
	cp_put_be64(r + 16, off);
	cp_put_be32(r + 24, len);
	wr(fd, r, 28);
	if (type == 1)
		wr(fd, buf, len);
	rd(fd, h, 16);
	assert_int_equal(cp_be32(h), 0x67446698);
	assert_true(cp_be64(h + 8) == 42);
	if (type == 0 && cp_be32(h + 4) == 0)
		rd(fd, buf, len);
	return cp_be32(h + 4);
}

/* True when the server closed the connection. */
static bool client_eof(int fd)
{
	char c;
	return recv(fd, &c, 1, 0) <= 0;
}

/* --- tests ------------------------------------------------------------------ */

static void test_exports_and_stats(void **state)
{
	struct cp_nbd_export_stats st[4];
	struct ram_img ri;
	cp_nbd_server *s;
	struct served sv;
	uint8_t buf[4096], back[4096];
	uint64_t size = 0;
	int fd;

	(void)state;
	released = 0;
	ram_img_open(&ri, 8u << 20);
	assert_int_equal(cp_nbd_server_create(NULL, &s), 0);
	add(s, "a", ri.img, false);
	{
		struct cp_nbd_export_opts eo;
		cp_nbd_export_opts_init(&eo);
		eo.name = "a";
		eo.img = ri.img;
		eo.release = on_release;
		assert_int_equal(cp_nbd_server_add_export(s, &eo), -EEXIST);
		assert_int_equal(released, 0); /* refused: not released */
	}
	add(s, "b-ro", ri.img, true);
	assert_int_equal(cp_nbd_server_list_exports(s, st, 4), 2);
	assert_string_equal(st[0].name, "a");
	assert_string_equal(st[1].name, "b-ro");
	assert_true(st[1].readonly);
	assert_int_equal(st[0].clients, 0);

	/* unknown export: NBD_REP_ERR_UNKNOWN, then a good GO */
	fd = client_open(s, &sv);
	assert_int_equal(client_go(fd, "nope", &size), 0x80000006u);
	close(fd);
	pthread_join(sv.t, NULL);

	fd = client_open(s, &sv);
	assert_int_equal(client_go(fd, "a", &size), 1);
	assert_true(size == 8u << 20);
	memset(buf, 0x5c, sizeof(buf));
	assert_int_equal(client_rq(fd, 1, 4096, sizeof(buf), buf), 0);
	assert_int_equal(client_rq(fd, 0, 4096, sizeof(back), back), 0);
	assert_memory_equal(buf, back, sizeof(buf));
	assert_int_equal(client_rq(fd, 3, 0, 0, NULL), 0); /* flush */
	assert_int_equal(client_rq(fd, 0, 8u << 20, 512, back), 22);

	assert_int_equal(cp_nbd_server_list_exports(s, st, 4), 2);
	assert_int_equal(st[0].clients, 1);
	assert_true(st[0].bytes_written == 4096);
	assert_true(st[0].bytes_read == 4096);
	assert_true(st[0].ops == 4);
	assert_true(st[0].errors == 1);
	assert_int_equal(cp_nbd_server_clients(s), 1);

	/* busy without force; with force the client is cut off and the
	 * release callback runs once the connection is gone */
	assert_int_equal(cp_nbd_server_remove_export(s, "a", false), -EBUSY);
	assert_int_equal(cp_nbd_server_remove_export(s, "a", true), 0);
	assert_true(client_eof(fd));
	pthread_join(sv.t, NULL);
	assert_int_equal(sv.ret, 0);
	assert_int_equal(released, 1);
	assert_ptr_equal(released_img, ri.img);
	assert_int_equal(cp_nbd_server_remove_export(s, "a", false), -ENOENT);
	assert_int_equal(cp_nbd_server_list_exports(s, st, 4), 1);
	close(fd);

	/* read-only export refuses writes */
	fd = client_open(s, &sv);
	assert_int_equal(client_go(fd, "b-ro", &size), 1);
	assert_int_equal(client_rq(fd, 1, 0, sizeof(buf), buf), 1); /* EPERM */
	assert_int_equal(client_rq(fd, 0, 4096, sizeof(back), back), 0);
	assert_memory_equal(buf, back, sizeof(buf));

	/* destroy with a client connected: disconnects, releases b-ro */
	cp_nbd_server_destroy(s);
	assert_true(client_eof(fd));
	pthread_join(sv.t, NULL);
	assert_int_equal(released, 2);
	close(fd);
	ram_img_close(&ri);
}

static void test_remove_idle_releases_at_once(void **state)
{
	struct ram_img ri;
	cp_nbd_server *s;

	(void)state;
	released = 0;
	ram_img_open(&ri, 1u << 20);
	assert_int_equal(cp_nbd_server_create(NULL, &s), 0);
	add(s, "", ri.img, false);
	assert_int_equal(cp_nbd_server_remove_export(s, "", false), 0);
	assert_int_equal(released, 1);
	cp_nbd_server_destroy(s);
	assert_int_equal(released, 1);
	ram_img_close(&ri);
}

static void test_client_limit_and_oneshot(void **state)
{
	struct cp_nbd_server_opts so;
	struct ram_img ri;
	cp_nbd_server *s;
	struct served sv;
	uint64_t size, v;
	int fd, p[2];

	(void)state;
	ram_img_open(&ri, 1u << 20);
	cp_nbd_server_opts_init(&so);
	so.max_clients = 1;
	so.oneshot = true;
	assert_int_equal(cp_nbd_server_create(&so, &s), 0);
	add(s, "x", ri.img, false);
	fd = client_open(s, &sv);
	assert_int_equal(client_go(fd, "x", &size), 1);
	/* a second client over the limit is refused (and its fd closed) */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
	assert_int_equal(cp_nbd_server_serve_fd(s, p[1]), -EBUSY);
	assert_true(client_eof(p[0]));
	close(p[0]);
	/* the done fd fires once the only client leaves */
	assert_int_equal(read(cp_nbd_server_done_fd(s), &v, 8), -1);
	close(fd);
	pthread_join(sv.t, NULL);
	assert_int_equal(read(cp_nbd_server_done_fd(s), &v, 8), 8);
	cp_nbd_server_destroy(s);
	ram_img_close(&ri);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exports_and_stats),
		cmocka_unit_test(test_remove_idle_releases_at_once),
		cmocka_unit_test(test_client_limit_and_oneshot),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
