/* tests/unit/test_domain.c - spm/domain.c: the volume and domain metadata
 * records (round trips, every single-byte corruption detected, bad magic,
 * version and enums), the atomic .meta write, the generation
 * compare-and-bump, and the file domain layout under a mkdtemp directory.
 * Deterministic; no sleeps.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common.h"
#include "spm.h"

#define U_VOL  "11111111-2222-4333-8444-555555555555"
#define U_IMG  "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
#define U_PAR  "01234567-89ab-4cde-8f01-23456789abcd"
#define U_DOM  "deadbeef-0000-4000-8000-000000000001"
#define U_POOL "cafebabe-0000-4000-8000-000000000002"

static void sample_vol(struct cp_volmeta *m)
{
	memset(m, 0, sizeof(*m));
	strcpy(m->vol_uuid, U_VOL);
	strcpy(m->img_uuid, U_IMG);
	strcpy(m->parent_uuid, U_PAR);
	strcpy(m->dom_uuid, U_DOM);
	m->format = CP_VOL_FORMAT_COW;
	m->allocation = CP_VOL_ALLOC_SPARSE;
	m->role = CP_VOL_ROLE_LEAF;
	m->legality = CP_VOL_LEGAL;
	m->capacity = 10ull << 30;
	m->generation = 7;
	m->ctime = 1700000000;
	strcpy(m->description, "disque système \xe2\x9c\x93");
}

static void sample_dom(struct cp_domain_md *d)
{
	memset(d, 0, sizeof(*d));
	strcpy(d->dom_uuid, U_DOM);
	strcpy(d->pool_uuid, U_POOL);
	strcpy(d->name, "data-1");
	d->type = CP_DOMAIN_TYPE_FILE;
	d->dom_version = 1;
	d->master = true;
	d->generation = 3;
	d->chunk_size = 1ull << 30;
	d->io_timeout = 10;
	d->max_volumes = 0;
}

static void assert_vol_equal(const struct cp_volmeta *a,
			     const struct cp_volmeta *b)
{
	assert_string_equal(a->vol_uuid, b->vol_uuid);
	assert_string_equal(a->img_uuid, b->img_uuid);
	assert_string_equal(a->parent_uuid, b->parent_uuid);
	assert_string_equal(a->dom_uuid, b->dom_uuid);
	assert_int_equal(a->format, b->format);
	assert_int_equal(a->allocation, b->allocation);
	assert_int_equal(a->role, b->role);
	assert_int_equal(a->legality, b->legality);
	assert_true(a->capacity == b->capacity);
	assert_true(a->generation == b->generation);
	assert_true(a->ctime == b->ctime);
	assert_string_equal(a->description, b->description);
}

/* Rewrite the crc so a deliberately bad field reaches the field checks. */
static void reseal(uint8_t *buf)
{
	uint32_t c;

	memset(buf + 12, 0, 4);
	c = cp_crc32c(buf, 512);
	buf[12] = (uint8_t)c;
	buf[13] = (uint8_t)(c >> 8);
	buf[14] = (uint8_t)(c >> 16);
	buf[15] = (uint8_t)(c >> 24);
}

/* ---- primitives ----------------------------------------------------------- */

static void test_crc32c(void **state)
{
	(void)state;
	assert_int_equal(cp_crc32c("123456789", 9), 0xE3069283u);
	assert_int_equal(cp_crc32c("", 0), 0);
}

static void test_uuid(void **state)
{
	char u[CP_UUID_STR_LEN + 1], u2[CP_UUID_STR_LEN + 1];

	(void)state;
	assert_true(cp_uuid_valid(U_VOL));
	assert_true(cp_uuid_valid("ABCDEF01-2345-6789-abcd-ef0123456789"));
	assert_false(cp_uuid_valid(NULL));
	assert_false(cp_uuid_valid(""));
	assert_false(cp_uuid_valid("11111111-2222-4333-8444-55555555555"));
	assert_false(cp_uuid_valid("11111111-2222-4333-8444-5555555555555"));
	assert_false(cp_uuid_valid("11111111x2222-4333-8444-555555555555"));
	assert_false(cp_uuid_valid("1111111g-2222-4333-8444-555555555555"));
	assert_int_equal(cp_uuid_generate(u), 0);
	assert_int_equal(cp_uuid_generate(u2), 0);
	assert_true(cp_uuid_valid(u));
	assert_string_not_equal(u, u2);
	assert_int_equal(u[14], '4');
	assert_non_null(strchr("89ab", u[19]));
}

/* ---- volume record -------------------------------------------------------- */

static void test_vol_roundtrip(void **state)
{
	struct cp_volmeta m, r;
	uint8_t buf[512];

	(void)state;
	sample_vol(&m);
	assert_int_equal(cp_volmeta_encode(&m, buf), 0);
	assert_memory_equal(buf, "CPVOLMD1", 8);
	assert_int_equal(cp_volmeta_decode(buf, "t", &r), 0);
	assert_vol_equal(&m, &r);

	/* no parent, empty description, extreme values */
	m.parent_uuid[0] = '\0';
	m.description[0] = '\0';
	m.capacity = UINT64_MAX;
	m.generation = UINT64_MAX - 1;
	m.ctime = -1;
	m.role = CP_VOL_ROLE_SHARED;
	m.format = CP_VOL_FORMAT_RAW;
	m.allocation = CP_VOL_ALLOC_PREALLOCATED;
	m.legality = CP_VOL_ILLEGAL;
	assert_int_equal(cp_volmeta_encode(&m, buf), 0);
	assert_int_equal(cp_volmeta_decode(buf, "t", &r), 0);
	assert_vol_equal(&m, &r);

	/* description of exactly 255 bytes */
	memset(m.description, 'x', 255);
	m.description[255] = '\0';
	assert_int_equal(cp_volmeta_encode(&m, buf), 0);
	assert_int_equal(cp_volmeta_decode(buf, "t", &r), 0);
	assert_vol_equal(&m, &r);
}

static void test_vol_encode_rejects(void **state)
{
	struct cp_volmeta m;
	uint8_t buf[512];

	(void)state;
	sample_vol(&m);
	m.format = 3;
	assert_int_equal(cp_volmeta_encode(&m, buf), -EINVAL);
	sample_vol(&m);
	m.role = 0;
	assert_int_equal(cp_volmeta_encode(&m, buf), -EINVAL);
	sample_vol(&m);
	strcpy(m.img_uuid, "not-a-uuid");
	assert_int_equal(cp_volmeta_encode(&m, buf), -EINVAL);
	sample_vol(&m);
	strcpy(m.description, "bad \xc3\x28 utf8");
	assert_int_equal(cp_volmeta_encode(&m, buf), -EINVAL);
	sample_vol(&m);
	strcpy(m.description, "overlong \xc0\xaf");
	assert_int_equal(cp_volmeta_encode(&m, buf), -EINVAL);
}

/* Flip every byte of the sector (several patterns): never a successful
 * parse.  CRC32C detects every error burst of <= 32 bits. */
static void flip_every_byte(uint8_t *good, int (*decode)(const uint8_t *))
{
	static const uint8_t pats[] = { 0x01, 0x80, 0xFF, 0x5A };
	uint8_t buf[512];

	for (size_t i = 0; i < 512; i++) {
		for (size_t p = 0; p < sizeof(pats); p++) {
			memcpy(buf, good, 512);
			buf[i] ^= pats[p];
			if (decode(buf) != -EUCLEAN)
				fail_msg("byte %zu ^ 0x%02x parsed", i, pats[p]);
		}
	}
}

static int vol_decode(const uint8_t *b)
{
	struct cp_volmeta m;
	return cp_volmeta_decode(b, "flip", &m);
}

static int dom_decode(const uint8_t *b)
{
	struct cp_domain_md d;
	return cp_domain_md_decode(b, "flip", &d);
}

static void test_vol_every_byte(void **state)
{
	struct cp_volmeta m;
	uint8_t buf[512];

	(void)state;
	sample_vol(&m);
	assert_int_equal(cp_volmeta_encode(&m, buf), 0);
	flip_every_byte(buf, vol_decode);
}

static void test_vol_bad_fields(void **state)
{
	struct cp_volmeta m, r;
	uint8_t good[512], buf[512];

	(void)state;
	sample_vol(&m);
	assert_int_equal(cp_volmeta_encode(&m, good), 0);

	/* checksum message names the file and both values */
	memcpy(buf, good, 512);
	buf[100] ^= 1;
	assert_int_equal(cp_volmeta_decode(buf, "/x/v.meta", &r), -EUCLEAN);
	assert_non_null(strstr(cp_last_error(), "/x/v.meta: checksum mismatch: stored 0x"));
	assert_non_null(strstr(cp_last_error(), "computed 0x"));

	memcpy(buf, good, 512);
	memcpy(buf, "CPVOLMD2", 8);
	reseal(buf);
	assert_int_equal(cp_volmeta_decode(buf, "f", &r), -EUCLEAN);
	assert_non_null(strstr(cp_last_error(), "bad magic"));

	memcpy(buf, good, 512);
	buf[8] = 2;
	reseal(buf);
	assert_int_equal(cp_volmeta_decode(buf, "f", &r), -EUCLEAN);
	assert_non_null(strstr(cp_last_error(), "unknown version 2"));

	/* each enum: 0 and one past the end */
	static const struct { size_t off; uint8_t bad[2]; } enums[] = {
		{ 160, { 0, 3 } }, { 164, { 0, 3 } },
		{ 168, { 0, 4 } }, { 172, { 0, 3 } },
	};
	for (size_t i = 0; i < CP_ARRAY_SIZE(enums); i++) {
		for (int k = 0; k < 2; k++) {
			memcpy(buf, good, 512);
			buf[enums[i].off] = enums[i].bad[k];
			reseal(buf);
			assert_int_equal(cp_volmeta_decode(buf, "f", &r), -EUCLEAN);
			assert_non_null(strstr(cp_last_error(), "out of range"));
		}
	}

	/* bad UUID text, description length, reserved bytes, UTF-8 */
	memcpy(buf, good, 512);
	buf[16 + 8] = 'x';
	reseal(buf);
	assert_int_equal(cp_volmeta_decode(buf, "f", &r), -EUCLEAN);
	memcpy(buf, good, 512);
	buf[200] = 0;
	buf[201] = 1; /* length 256 */
	reseal(buf);
	assert_int_equal(cp_volmeta_decode(buf, "f", &r), -EUCLEAN);
	memcpy(buf, good, 512);
	buf[511] = 1;
	reseal(buf);
	assert_int_equal(cp_volmeta_decode(buf, "f", &r), -EUCLEAN);
	memcpy(buf, good, 512);
	buf[202] = 0xFF;
	reseal(buf);
	assert_int_equal(cp_volmeta_decode(buf, "f", &r), -EUCLEAN);
	/* byte after the description must be zero */
	memcpy(buf, good, 512);
	buf[202 + strlen(m.description)] = 'z';
	reseal(buf);
	assert_int_equal(cp_volmeta_decode(buf, "f", &r), -EUCLEAN);
}

/* ---- domain record -------------------------------------------------------- */

static void test_dom_roundtrip(void **state)
{
	struct cp_domain_md d, r;
	uint8_t buf[512];

	(void)state;
	sample_dom(&d);
	assert_int_equal(cp_domain_md_encode(&d, buf), 0);
	assert_memory_equal(buf, "CPDOMMD1", 8);
	assert_int_equal(cp_domain_md_decode(buf, "t", &r), 0);
	assert_string_equal(r.dom_uuid, d.dom_uuid);
	assert_string_equal(r.pool_uuid, d.pool_uuid);
	assert_string_equal(r.name, d.name);
	assert_int_equal(r.type, CP_DOMAIN_TYPE_FILE);
	assert_int_equal(r.dom_version, 1);
	assert_true(r.master);
	assert_true(r.generation == 3);
	assert_true(r.chunk_size == 1ull << 30);
	assert_int_equal(r.io_timeout, 10);
	assert_int_equal(r.max_volumes, 0);
	flip_every_byte(buf, dom_decode);

	/* out of range on encode: io_timeout, chunk size */
	struct cp_domain_md bad = d;
	bad.io_timeout = 0;
	assert_int_equal(cp_domain_md_encode(&bad, buf + 0), -EINVAL);
	bad = d;
	bad.chunk_size = 12345;
	assert_int_equal(cp_domain_md_encode(&bad, buf + 0), -EINVAL);
	assert_int_equal(cp_domain_md_encode(&d, buf), 0);

	/* bad type, unknown flag, empty name, io_timeout 0, chunk not MiB */
	uint8_t b2[512];
	memcpy(b2, buf, 512);
	b2[156] = 3;
	reseal(b2);
	assert_int_equal(cp_domain_md_decode(b2, "f", &r), -EUCLEAN);
	memcpy(b2, buf, 512);
	b2[156] = 2; /* block: valid */
	reseal(b2);
	assert_int_equal(cp_domain_md_decode(b2, "f", &r), 0);
	assert_int_equal(r.type, CP_DOMAIN_TYPE_BLOCK);
	memcpy(b2, buf, 512);
	memset(b2 + 184, 0, 4);
	reseal(b2);
	assert_int_equal(cp_domain_md_decode(b2, "f", &r), -EUCLEAN);
	memcpy(b2, buf, 512);
	b2[176] = 1;
	reseal(b2);
	assert_int_equal(cp_domain_md_decode(b2, "f", &r), -EUCLEAN);
	memcpy(b2, buf, 512);
	b2[160] |= 2;
	reseal(b2);
	assert_int_equal(cp_domain_md_decode(b2, "f", &r), -EUCLEAN);
	memcpy(b2, buf, 512);
	memset(b2 + 88, 0, 2 + 64);
	reseal(b2);
	assert_int_equal(cp_domain_md_decode(b2, "f", &r), -EUCLEAN);
	memcpy(b2, buf, 512);
	memcpy(b2, "CPVOLMD1", 8); /* a volume record is not a domain record */
	reseal(b2);
	assert_int_equal(cp_domain_md_decode(b2, "f", &r), -EUCLEAN);
}

/* ---- files ---------------------------------------------------------------- */

struct fx {
	char root[64];
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	strcpy(f->root, "/tmp/cp-test-domain-XXXXXX");
	if (!mkdtemp(f->root))
		return -1;
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->root);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static off_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static void make_domain(struct fx *f, struct cp_domain_md *out)
{
	struct cp_domain_create_opts o;

	cp_domain_create_opts_init(&o);
	o.root = f->root;
	o.dom_uuid = U_DOM;
	o.pool_uuid = U_POOL;
	o.name = "data-1";
	o.master = true;
	assert_int_equal(cp_domain_create(&o, out), 0);
	assert_int_equal(cp_domain_image_create(f->root, U_DOM, U_IMG), 0);
}

static void test_domain_create_read(void **state)
{
	struct fx *f = *state;
	struct cp_domain_create_opts o;
	struct cp_domain_md d, r;
	char p[256];
	static const struct { const char *n; off_t sz; } files[] = {
		{ "metadata", 512 }, { "ids", 1 << 20 }, { "leases", 2 << 20 },
		{ "inbox", 1 << 20 }, { "outbox", 1 << 20 }, { "tasks", 1 << 20 },
	};

	make_domain(f, &d);
	for (size_t i = 0; i < CP_ARRAY_SIZE(files); i++) {
		snprintf(p, sizeof(p), "%s/%s/dom_md/%s", f->root, U_DOM, files[i].n);
		assert_int_equal(file_size(p), files[i].sz);
	}
	/* zero filled */
	snprintf(p, sizeof(p), "%s/%s/dom_md/leases", f->root, U_DOM);
	{
		static uint8_t big[2 << 20];
		int fd = open(p, O_RDONLY);
		assert_true(fd >= 0);
		assert_int_equal(read(fd, big, sizeof(big)), (ssize_t)sizeof(big));
		close(fd);
		assert_true(cp_is_zero(big, sizeof(big)));
	}
	assert_int_equal(cp_domain_read(f->root, U_DOM, &r), 0);
	assert_string_equal(r.dom_uuid, U_DOM);
	assert_string_equal(r.pool_uuid, U_POOL);
	assert_string_equal(r.name, "data-1");
	assert_true(r.master);

	/* second create of the same domain refused */
	cp_domain_create_opts_init(&o);
	o.root = f->root;
	o.dom_uuid = U_DOM;
	o.pool_uuid = U_POOL;
	o.name = "again";
	assert_int_equal(cp_domain_create(&o, NULL), -EEXIST);
	/* a generated UUID */
	o.dom_uuid = NULL;
	assert_int_equal(cp_domain_create(&o, &d), 0);
	assert_true(cp_uuid_valid(d.dom_uuid));
	assert_int_equal(cp_domain_read(f->root, d.dom_uuid, &r), 0);
	assert_false(r.master);

	/* missing root named */
	o.root = "/nonexistent/cp-root";
	assert_int_equal(cp_domain_create(&o, NULL), -ENOENT);
	assert_non_null(strstr(cp_last_error(), "/nonexistent/cp-root"));
	assert_int_equal(cp_domain_read("/nonexistent/cp-root", U_DOM, &r), -ENOENT);
	assert_non_null(strstr(cp_last_error(), "/nonexistent/cp-root"));
	assert_int_equal(cp_domain_read(f->root, U_POOL, &r), -ENOENT);

	/* a wrong-sized ids file is corruption */
	snprintf(p, sizeof(p), "%s/%s/dom_md/ids", f->root, U_DOM);
	assert_int_equal(truncate(p, 4096), 0);
	assert_int_equal(cp_domain_read(f->root, U_DOM, &r), -EUCLEAN);
	assert_non_null(strstr(cp_last_error(), "ids"));
	assert_int_equal(truncate(p, 1 << 20), 0);
	assert_int_equal(cp_domain_read(f->root, U_DOM, &r), 0);

	/* corrupt metadata */
	snprintf(p, sizeof(p), "%s/%s/dom_md/metadata", f->root, U_DOM);
	{
		int fd = open(p, O_WRONLY);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, "Z", 1, 40), 1);
		close(fd);
	}
	assert_int_equal(cp_domain_read(f->root, U_DOM, &r), -EUCLEAN);
	assert_non_null(strstr(cp_last_error(), "checksum mismatch"));
}

static void test_volmeta_files(void **state)
{
	struct fx *f = *state;
	struct cp_volmeta m, r;
	struct cp_uuid_str *list;
	size_t n;
	char path[512], tmp[600];
	int fd;

	make_domain(f, NULL);
	sample_vol(&m);
	m.generation = 0;
	assert_int_equal(cp_volmeta_path(path, sizeof(path), f->root, U_DOM,
					 U_IMG, U_VOL), 0);
	assert_int_equal(cp_volmeta_read(path, &r), -ENOENT);

	/* a crash before rename: .tmp with garbage, no .meta */
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "garbage", 7), 7);
	close(fd);
	assert_int_equal(cp_volmeta_read(path, &r), -ENOENT);
	assert_int_equal(cp_domain_list_volumes(f->root, U_DOM, U_IMG, &list, &n), 0);
	assert_int_equal(n, 0);
	free(list);

	/* the next write replaces it */
	assert_int_equal(cp_volmeta_write(path, &m), 0);
	assert_int_equal(access(tmp, F_OK), -1);
	assert_int_equal(file_size(path), 512);
	assert_int_equal(cp_volmeta_read(path, &r), 0);
	assert_vol_equal(&m, &r);

	/* a crash after a later .tmp was written: reader still sees the old */
	fd = open(tmp, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "half", 4), 4);
	close(fd);
	assert_int_equal(cp_volmeta_read(path, &r), 0);
	assert_vol_equal(&m, &r);

	/* compare-and-bump */
	m.legality = CP_VOL_ILLEGAL;
	assert_int_equal(cp_volmeta_update(path, 0, &m), 0);
	assert_true(m.generation == 1);
	assert_int_equal(access(tmp, F_OK), -1);
	assert_int_equal(cp_volmeta_read(path, &r), 0);
	assert_true(r.generation == 1);
	assert_int_equal(r.legality, CP_VOL_ILLEGAL);
	m.legality = CP_VOL_LEGAL;
	assert_int_equal(cp_volmeta_update(path, 0, &m), -ESTALE);
	assert_non_null(strstr(cp_last_error(), "generation 0 expected, 1 on disk"));
	assert_int_equal(cp_volmeta_read(path, &r), 0);
	assert_int_equal(r.legality, CP_VOL_ILLEGAL);
	assert_true(r.generation == 1);
	assert_int_equal(cp_volmeta_update(path, 1, &m), 0);
	assert_int_equal(cp_volmeta_read(path, &r), 0);
	assert_true(r.generation == 2);
	assert_int_equal(r.legality, CP_VOL_LEGAL);
	/* a record for another volume is refused */
	strcpy(m.vol_uuid, U_PAR);
	assert_int_equal(cp_volmeta_update(path, 2, &m), -EINVAL);

	/* list: three volumes, sorted, stray files skipped */
	static const char *vols[] = {
		"ffffffff-0000-4000-8000-000000000000",
		"00000000-0000-4000-8000-000000000000",
	};
	for (size_t i = 0; i < CP_ARRAY_SIZE(vols); i++) {
		sample_vol(&m);
		strcpy(m.vol_uuid, vols[i]);
		assert_int_equal(cp_volmeta_path(path, sizeof(path), f->root,
						 U_DOM, U_IMG, vols[i]), 0);
		assert_int_equal(cp_volmeta_write(path, &m), 0);
	}
	snprintf(tmp, sizeof(tmp), "%s/%s/images/%s/%s", f->root, U_DOM, U_IMG, U_VOL);
	fd = open(tmp, O_WRONLY | O_CREAT, 0644); /* the volume data file */
	assert_true(fd >= 0);
	close(fd);
	snprintf(tmp, sizeof(tmp), "%s/%s/images/%s/%s.lease", f->root, U_DOM, U_IMG, U_VOL);
	fd = open(tmp, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(cp_domain_list_volumes(f->root, U_DOM, U_IMG, &list, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(list[0].s, vols[1]);
	assert_string_equal(list[1].s, U_VOL);
	assert_string_equal(list[2].s, vols[0]);
	free(list);

	/* a short .meta is corruption, named */
	assert_int_equal(truncate(path, 100), 0);
	assert_int_equal(cp_volmeta_read(path, &r), -EUCLEAN);
	assert_non_null(strstr(cp_last_error(), path));

	assert_int_equal(cp_domain_image_create(f->root, U_DOM, U_IMG), -EEXIST);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_uuid),
		cmocka_unit_test(test_vol_roundtrip),
		cmocka_unit_test(test_vol_encode_rejects),
		cmocka_unit_test(test_vol_every_byte),
		cmocka_unit_test(test_vol_bad_fields),
		cmocka_unit_test(test_dom_roundtrip),
		cmocka_unit_test_setup_teardown(test_domain_create_read,
						fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_volmeta_files,
						fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
