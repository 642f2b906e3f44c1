/* spm/domain.c - file storage domains: layout and metadata records.
 *
 * Byte layouts are in docs/formats/domain.md; this file is the one in/out
 * pair for each record (encode/decode) plus the directory helpers.  All
 * on-disk integers are little-endian.  A decode checks everything it can
 * (magic, version, CRC32C, enums, UUID text, lengths, UTF-8, zero padding)
 * and reports the first problem as -EUCLEAN; it never guesses.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "common.h"
#include "spm.h"
#include "sd_int.h"
#include "vector.h"

/* ---- little-endian helpers ------------------------------------------------ */

static uint32_t dom_le32(const uint8_t *b)
{
	return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
	       ((uint32_t)b[3] << 24);
}
static uint64_t dom_le64(const uint8_t *b)
{
	return (uint64_t)dom_le32(b) | ((uint64_t)dom_le32(b + 4) << 32);
}
static uint16_t dom_le16(const uint8_t *b)
{
	return (uint16_t)(b[0] | (b[1] << 8));
}
static void dom_put_le16(uint8_t *b, uint16_t v)
{
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
}
static void dom_put_le32(uint8_t *b, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}
static void dom_put_le64(uint8_t *b, uint64_t v)
{
	dom_put_le32(b, (uint32_t)v);
	dom_put_le32(b + 4, (uint32_t)(v >> 32));
}

/* ---- CRC32C (Castagnoli), reflected, table-driven ------------------------- */

static uint32_t crc32c_table[256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init_table(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc32c_table[i] = c;
	}
}

CP_EXPORT uint32_t cp_crc32c(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = 0xFFFFFFFFu;

	pthread_once(&crc32c_once, crc32c_init_table);
	while (len--)
		c = crc32c_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

/* ---- UUIDs ---------------------------------------------------------------- */

static bool dom_is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	       (c >= 'A' && c <= 'F');
}

/* Exactly 36 bytes at s (not NUL-terminated) form a UUID. */
static bool dom_uuid_valid_n(const char *s)
{
	for (int i = 0; i < CP_UUID_STR_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!dom_is_hex(s[i])) {
			return false;
		}
	}
	return true;
}

CP_EXPORT bool cp_uuid_valid(const char *s)
{
	return s && strnlen(s, CP_UUID_STR_LEN + 1) == CP_UUID_STR_LEN &&
	       dom_uuid_valid_n(s);
}

CP_EXPORT int cp_uuid_generate(char *out)
{
	CP_API_ENTER();
	uint8_t r[16];
	size_t got = 0;
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return cp_error(-errno, "/dev/urandom: %s", strerror(errno));
	while (got < sizeof(r)) {
		ssize_t n = read(fd, r + got, sizeof(r) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;
			close(fd);
			return cp_error(err, "/dev/urandom: short read");
		}
		got += (size_t)n;
	}
	close(fd);
	r[6] = (uint8_t)((r[6] & 0x0F) | 0x40);
	r[8] = (uint8_t)((r[8] & 0x3F) | 0x80);
	snprintf(out, CP_UUID_STR_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
		 r[10], r[11], r[12], r[13], r[14], r[15]);
	return 0;
}

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Well-formed UTF-8 (cp_utf8_valid()) and no NUL byte. */
static bool dom_utf8_valid(const uint8_t *s, size_t n)
{
	return !memchr(s, 0, n) && cp_utf8_valid(s, n);
}

/* ---- common record header ------------------------------------------------- */

#define MD_OFF_MAGIC   0
#define MD_OFF_VERSION 8
#define MD_OFF_CRC     12
#define MD_OFF_BODY    16
#define MD_VERSION     1u

static uint32_t md_crc(const uint8_t *buf)
{
	uint8_t tmp[CP_MD_SECTOR_SIZE];

	memcpy(tmp, buf, sizeof(tmp));
	memset(tmp + MD_OFF_CRC, 0, 4);
	return cp_crc32c(tmp, sizeof(tmp));
}

static void md_seal(uint8_t *buf, const char *magic)
{
	memcpy(buf + MD_OFF_MAGIC, magic, 8);
	dom_put_le32(buf + MD_OFF_VERSION, MD_VERSION);
	dom_put_le32(buf + MD_OFF_CRC, 0);
	dom_put_le32(buf + MD_OFF_CRC, cp_crc32c(buf, CP_MD_SECTOR_SIZE));
}

/* Magic, version and checksum, in that order. */
static int md_check_header(const uint8_t *buf, const char *magic,
			   const char *what)
{
	uint32_t stored, computed, ver;

	if (memcmp(buf + MD_OFF_MAGIC, magic, 8) != 0)
		return cp_error(-EUCLEAN, "%s: bad magic (expected %s)", what,
				magic);
	ver = dom_le32(buf + MD_OFF_VERSION);
	if (ver != MD_VERSION)
		return cp_error(-EUCLEAN, "%s: unknown version %u (supported: %u)",
				what, ver, MD_VERSION);
	stored = dom_le32(buf + MD_OFF_CRC);
	computed = md_crc(buf);
	if (stored != computed)
		return cp_error(-EUCLEAN,
				"%s: checksum mismatch: stored 0x%08x, computed 0x%08x",
				what, stored, computed);
	return 0;
}

static int md_get_uuid(const uint8_t *b, char *out, bool optional,
		       const char *what, const char *field)
{
	if (optional && cp_is_zero(b, CP_UUID_STR_LEN)) {
		out[0] = '\0';
		return 0;
	}
	if (!dom_uuid_valid_n((const char *)b))
		return cp_error(-EUCLEAN, "%s: %s is not a valid UUID", what,
				field);
	memcpy(out, b, CP_UUID_STR_LEN);
	out[CP_UUID_STR_LEN] = '\0';
	return 0;
}

/* A length-prefixed UTF-8 string field of cap bytes, zero after len. */
static int md_get_str(const uint8_t *lenp, const uint8_t *s, size_t cap,
		      char *out, const char *what, const char *field)
{
	size_t len = dom_le16(lenp);

	if (len > cap)
		return cp_error(-EUCLEAN, "%s: %s length %zu exceeds %zu", what,
				field, len, cap);
	if (!dom_utf8_valid(s, len))
		return cp_error(-EUCLEAN, "%s: %s is not valid UTF-8", what,
				field);
	if (!cp_is_zero(s + len, cap - len))
		return cp_error(-EUCLEAN, "%s: %s padding is not zero", what,
				field);
	memcpy(out, s, len);
	out[len] = '\0';
	return 0;
}

/* ---- volume record -------------------------------------------------------- */

#define VOL_MAGIC "CPVOLMD1"
#define VOL_OFF_VOL      16
#define VOL_OFF_IMG      52
#define VOL_OFF_PARENT   88
#define VOL_OFF_DOM      124
#define VOL_OFF_FORMAT   160
#define VOL_OFF_ALLOC    164
#define VOL_OFF_ROLE     168
#define VOL_OFF_LEGAL    172
#define VOL_OFF_CAPACITY 176
#define VOL_OFF_GEN      184
#define VOL_OFF_CTIME    192
#define VOL_OFF_DESCLEN  200
#define VOL_OFF_DESC     202
#define VOL_OFF_RESERVED 457
_Static_assert(VOL_OFF_VOL == MD_OFF_BODY, "vol uuid offset");
_Static_assert(VOL_OFF_IMG == VOL_OFF_VOL + CP_UUID_STR_LEN, "img offset");
_Static_assert(VOL_OFF_PARENT == VOL_OFF_IMG + CP_UUID_STR_LEN, "parent");
_Static_assert(VOL_OFF_DOM == VOL_OFF_PARENT + CP_UUID_STR_LEN, "dom");
_Static_assert(VOL_OFF_FORMAT == VOL_OFF_DOM + CP_UUID_STR_LEN, "format");
_Static_assert(VOL_OFF_CAPACITY == VOL_OFF_LEGAL + 4, "capacity");
_Static_assert(VOL_OFF_CAPACITY % 8 == 0, "capacity aligned");
_Static_assert(VOL_OFF_DESCLEN == VOL_OFF_CTIME + 8, "desclen");
_Static_assert(VOL_OFF_DESC == VOL_OFF_DESCLEN + 2, "desc");
_Static_assert(VOL_OFF_RESERVED == VOL_OFF_DESC + CP_VOLMETA_DESC_MAX,
	       "reserved");
_Static_assert(VOL_OFF_RESERVED < CP_MD_SECTOR_SIZE, "fits one sector");
_Static_assert(CP_MD_SECTOR_SIZE == 512, "sector size");

static int volmeta_check(const struct cp_volmeta *m, const char *what, int err)
{
	if (!cp_uuid_valid(m->vol_uuid) || !cp_uuid_valid(m->img_uuid) ||
	    !cp_uuid_valid(m->dom_uuid) ||
	    (m->parent_uuid[0] && !cp_uuid_valid(m->parent_uuid)))
		return cp_error(err, "%s: invalid UUID", what);
	if (m->format != CP_VOL_FORMAT_RAW && m->format != CP_VOL_FORMAT_COW)
		return cp_error(err, "%s: format %u out of range", what,
				(unsigned)m->format);
	if (m->allocation != CP_VOL_ALLOC_PREALLOCATED &&
	    m->allocation != CP_VOL_ALLOC_SPARSE)
		return cp_error(err, "%s: allocation %u out of range", what,
				(unsigned)m->allocation);
	if (m->role < CP_VOL_ROLE_LEAF || m->role > CP_VOL_ROLE_SHARED)
		return cp_error(err, "%s: role %u out of range", what,
				(unsigned)m->role);
	if (m->legality != CP_VOL_LEGAL && m->legality != CP_VOL_ILLEGAL)
		return cp_error(err, "%s: legality %u out of range", what,
				(unsigned)m->legality);
	return 0;
}

CP_EXPORT int cp_volmeta_encode(const struct cp_volmeta *m, uint8_t *buf)
{
	CP_API_ENTER();
	size_t dlen = strnlen(m->description, CP_VOLMETA_DESC_MAX + 1);
	int r = volmeta_check(m, "volume metadata", -EINVAL);

	if (r < 0)
		return r;
	if (dlen > CP_VOLMETA_DESC_MAX)
		return cp_error(-EINVAL, "volume %s: description longer than %d bytes",
				m->vol_uuid, CP_VOLMETA_DESC_MAX);
	if (!dom_utf8_valid((const uint8_t *)m->description, dlen))
		return cp_error(-EINVAL, "volume %s: description is not UTF-8",
				m->vol_uuid);
	memset(buf, 0, CP_MD_SECTOR_SIZE);
	memcpy(buf + VOL_OFF_VOL, m->vol_uuid, CP_UUID_STR_LEN);
	memcpy(buf + VOL_OFF_IMG, m->img_uuid, CP_UUID_STR_LEN);
	if (m->parent_uuid[0])
		memcpy(buf + VOL_OFF_PARENT, m->parent_uuid, CP_UUID_STR_LEN);
	memcpy(buf + VOL_OFF_DOM, m->dom_uuid, CP_UUID_STR_LEN);
	dom_put_le32(buf + VOL_OFF_FORMAT, (uint32_t)m->format);
	dom_put_le32(buf + VOL_OFF_ALLOC, (uint32_t)m->allocation);
	dom_put_le32(buf + VOL_OFF_ROLE, (uint32_t)m->role);
	dom_put_le32(buf + VOL_OFF_LEGAL, (uint32_t)m->legality);
	dom_put_le64(buf + VOL_OFF_CAPACITY, m->capacity);
	dom_put_le64(buf + VOL_OFF_GEN, m->generation);
	dom_put_le64(buf + VOL_OFF_CTIME, (uint64_t)m->ctime);
	dom_put_le16(buf + VOL_OFF_DESCLEN, (uint16_t)dlen);
	memcpy(buf + VOL_OFF_DESC, m->description, dlen);
	md_seal(buf, VOL_MAGIC);
	return 0;
}

CP_EXPORT int cp_volmeta_decode(const uint8_t *buf, const char *what,
				struct cp_volmeta *out)
{
	CP_API_ENTER();
	struct cp_volmeta m;
	int r;

	memset(&m, 0, sizeof(m));
	r = md_check_header(buf, VOL_MAGIC, what);
	if (r < 0)
		return r;
	if ((r = md_get_uuid(buf + VOL_OFF_VOL, m.vol_uuid, false, what,
			     "volume UUID")) < 0 ||
	    (r = md_get_uuid(buf + VOL_OFF_IMG, m.img_uuid, false, what,
			     "image UUID")) < 0 ||
	    (r = md_get_uuid(buf + VOL_OFF_PARENT, m.parent_uuid, true, what,
			     "parent UUID")) < 0 ||
	    (r = md_get_uuid(buf + VOL_OFF_DOM, m.dom_uuid, false, what,
			     "domain UUID")) < 0)
		return r;
	m.format = (enum cp_vol_format)dom_le32(buf + VOL_OFF_FORMAT);
	m.allocation = (enum cp_vol_alloc)dom_le32(buf + VOL_OFF_ALLOC);
	m.role = (enum cp_vol_role)dom_le32(buf + VOL_OFF_ROLE);
	m.legality = (enum cp_vol_legality)dom_le32(buf + VOL_OFF_LEGAL);
	m.capacity = dom_le64(buf + VOL_OFF_CAPACITY);
	m.generation = dom_le64(buf + VOL_OFF_GEN);
	m.ctime = (int64_t)dom_le64(buf + VOL_OFF_CTIME);
	r = volmeta_check(&m, what, -EUCLEAN);
	if (r < 0)
		return r;
	r = md_get_str(buf + VOL_OFF_DESCLEN, buf + VOL_OFF_DESC,
		       CP_VOLMETA_DESC_MAX, m.description, what, "description");
	if (r < 0)
		return r;
	if (!cp_is_zero(buf + VOL_OFF_RESERVED,
			CP_MD_SECTOR_SIZE - VOL_OFF_RESERVED))
		return cp_error(-EUCLEAN, "%s: reserved bytes are not zero", what);
	*out = m;
	return 0;
}

/* ---- domain record -------------------------------------------------------- */

#define DOM_MAGIC "CPDOMMD1"
#define DOM_OFF_DOM      16
#define DOM_OFF_POOL     52
#define DOM_OFF_NAMELEN  88
#define DOM_OFF_NAME     90
#define DOM_OFF_PAD      154
#define DOM_OFF_TYPE     156
#define DOM_OFF_FLAGS    160
#define DOM_OFF_DVERSION 164
#define DOM_OFF_GEN      168
#define DOM_OFF_CHUNK    176
#define DOM_OFF_IOTMO    184
#define DOM_OFF_MAXVOL   188
#define DOM_OFF_RESERVED 192
_Static_assert(DOM_OFF_DOM == MD_OFF_BODY, "dom uuid offset");
_Static_assert(DOM_OFF_POOL == DOM_OFF_DOM + CP_UUID_STR_LEN, "pool");
_Static_assert(DOM_OFF_NAMELEN == DOM_OFF_POOL + CP_UUID_STR_LEN, "namelen");
_Static_assert(DOM_OFF_NAME == DOM_OFF_NAMELEN + 2, "name");
_Static_assert(DOM_OFF_PAD == DOM_OFF_NAME + CP_DOMAIN_NAME_MAX, "pad");
_Static_assert(DOM_OFF_TYPE == DOM_OFF_PAD + 2, "type");
_Static_assert(DOM_OFF_GEN == DOM_OFF_DVERSION + 4 && DOM_OFF_GEN % 8 == 0,
	       "generation");
_Static_assert(DOM_OFF_CHUNK == DOM_OFF_GEN + 8, "chunk");
_Static_assert(DOM_OFF_RESERVED == DOM_OFF_MAXVOL + 4, "reserved");

CP_EXPORT int cp_domain_md_encode(const struct cp_domain_md *d, uint8_t *buf)
{
	CP_API_ENTER();
	size_t nlen = strnlen(d->name, CP_DOMAIN_NAME_MAX + 1);

	if (!cp_uuid_valid(d->dom_uuid) || !cp_uuid_valid(d->pool_uuid))
		return cp_error(-EINVAL, "domain metadata: invalid UUID");
	if (d->type != CP_DOMAIN_TYPE_FILE && d->type != CP_DOMAIN_TYPE_BLOCK)
		return cp_error(-EINVAL, "domain %s: type %u out of range",
				d->dom_uuid, (unsigned)d->type);
	if (d->io_timeout < 1 || d->io_timeout > 255)
		return cp_error(-EINVAL, "domain %s: io_timeout %u out of 1..255",
				d->dom_uuid, d->io_timeout);
	if (d->chunk_size == 0 || d->chunk_size % (1u << 20))
		return cp_error(-EINVAL,
				"domain %s: chunk size must be a positive multiple of 1 MiB",
				d->dom_uuid);
	if (nlen == 0 || nlen > CP_DOMAIN_NAME_MAX ||
	    !dom_utf8_valid((const uint8_t *)d->name, nlen))
		return cp_error(-EINVAL,
				"domain %s: name must be 1..%d bytes of UTF-8",
				d->dom_uuid, CP_DOMAIN_NAME_MAX);
	memset(buf, 0, CP_MD_SECTOR_SIZE);
	memcpy(buf + DOM_OFF_DOM, d->dom_uuid, CP_UUID_STR_LEN);
	memcpy(buf + DOM_OFF_POOL, d->pool_uuid, CP_UUID_STR_LEN);
	dom_put_le16(buf + DOM_OFF_NAMELEN, (uint16_t)nlen);
	memcpy(buf + DOM_OFF_NAME, d->name, nlen);
	dom_put_le32(buf + DOM_OFF_TYPE, (uint32_t)d->type);
	dom_put_le32(buf + DOM_OFF_FLAGS, d->master ? CP_DOMAIN_FLAG_MASTER : 0);
	dom_put_le32(buf + DOM_OFF_DVERSION, d->dom_version);
	dom_put_le64(buf + DOM_OFF_GEN, d->generation);
	dom_put_le64(buf + DOM_OFF_CHUNK, d->chunk_size);
	dom_put_le32(buf + DOM_OFF_IOTMO, d->io_timeout);
	dom_put_le32(buf + DOM_OFF_MAXVOL, d->max_volumes);
	md_seal(buf, DOM_MAGIC);
	return 0;
}

CP_EXPORT int cp_domain_md_decode(const uint8_t *buf, const char *what,
				  struct cp_domain_md *out)
{
	CP_API_ENTER();
	struct cp_domain_md d;
	uint32_t flags;
	int r;

	memset(&d, 0, sizeof(d));
	r = md_check_header(buf, DOM_MAGIC, what);
	if (r < 0)
		return r;
	if ((r = md_get_uuid(buf + DOM_OFF_DOM, d.dom_uuid, false, what,
			     "domain UUID")) < 0 ||
	    (r = md_get_uuid(buf + DOM_OFF_POOL, d.pool_uuid, false, what,
			     "pool UUID")) < 0)
		return r;
	r = md_get_str(buf + DOM_OFF_NAMELEN, buf + DOM_OFF_NAME,
		       CP_DOMAIN_NAME_MAX, d.name, what, "name");
	if (r < 0)
		return r;
	if (d.name[0] == '\0')
		return cp_error(-EUCLEAN, "%s: empty name", what);
	if (!cp_is_zero(buf + DOM_OFF_PAD, 2))
		return cp_error(-EUCLEAN, "%s: padding is not zero", what);
	d.type = (enum cp_domain_type)dom_le32(buf + DOM_OFF_TYPE);
	if (d.type != CP_DOMAIN_TYPE_FILE && d.type != CP_DOMAIN_TYPE_BLOCK)
		return cp_error(-EUCLEAN, "%s: type %u out of range", what,
				(unsigned)d.type);
	flags = dom_le32(buf + DOM_OFF_FLAGS);
	if (flags & ~CP_DOMAIN_FLAG_MASTER)
		return cp_error(-EUCLEAN, "%s: unknown flags 0x%x", what,
				flags & ~CP_DOMAIN_FLAG_MASTER);
	d.master = flags & CP_DOMAIN_FLAG_MASTER;
	d.dom_version = dom_le32(buf + DOM_OFF_DVERSION);
	d.generation = dom_le64(buf + DOM_OFF_GEN);
	d.chunk_size = dom_le64(buf + DOM_OFF_CHUNK);
	d.io_timeout = dom_le32(buf + DOM_OFF_IOTMO);
	d.max_volumes = dom_le32(buf + DOM_OFF_MAXVOL);
	if (d.io_timeout < 1 || d.io_timeout > 255)
		return cp_error(-EUCLEAN, "%s: io_timeout %u out of 1..255", what,
				d.io_timeout);
	if (d.chunk_size == 0 || d.chunk_size % (1u << 20))
		return cp_error(-EUCLEAN, "%s: chunk size %" PRIu64
				" is not a positive multiple of 1 MiB", what,
				d.chunk_size);
	if (!cp_is_zero(buf + DOM_OFF_RESERVED,
			CP_MD_SECTOR_SIZE - DOM_OFF_RESERVED))
		return cp_error(-EUCLEAN, "%s: reserved bytes are not zero", what);
	*out = d;
	return 0;
}

/* ---- file helpers --------------------------------------------------------- */

static int dom_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return cp_error(-errno, "%s: %s", dir, strerror(errno));
	if (fsync(fd) < 0) {
		int err = -errno;
		close(fd);
		return cp_error(err, "%s: fsync: %s", dir, strerror(-err));
	}
	close(fd);
	return 0;
}

/* The directory part of path (into dir, PATH_MAX). */
static void dom_dirname(const char *path, char *dir)
{
	const char *slash = strrchr(path, '/');

	if (!slash) {
		strcpy(dir, ".");
	} else if (slash == path) {
		strcpy(dir, "/");
	} else {
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
	}
}

static int dom_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- confinement and ownership (sd_int.h) --------------------------------- */

int sd_openat(int dirfd, const char *what, const char *rel, int flags,
	      mode_t mode)
{
	struct open_how how;
	long fd;

	memset(&how, 0, sizeof(how));
	how.flags = (uint64_t)(flags | O_CLOEXEC);
	if (flags & O_CREAT)
		how.mode = mode;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
		      RESOLVE_NO_MAGICLINKS;
	do {
		fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
	} while (fd < 0 && (errno == EINTR || errno == EAGAIN));
	if (fd < 0) {
		int err = -errno;
		if (err == -ELOOP || err == -EXDEV)
			return cp_error(-ELOOP, "%s: %s: a symbolic link or a path "
					"leaving the domain: refused", what, rel);
		return cp_error(err, "%s: %s: %s", what, rel, strerror(-err));
	}
	return (int)fd;
}

int sd_dom_dirfd(const char *root, const char *uuid)
{
	int rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC), fd;

	if (rfd < 0)
		return cp_error(-errno, "domain root %s: %s", root,
				strerror(errno));
	fd = sd_openat(rfd, root, uuid, O_PATH | O_DIRECTORY, 0);
	close(rfd);
	return fd;
}

int sd_own(int fd, const char *what, mode_t mode, uint32_t uid, uint32_t gid)
{
	if ((uid || gid) &&
	    fchown(fd, uid ? (uid_t)uid : (uid_t)-1,
		   gid ? (gid_t)gid : (gid_t)-1) < 0)
		return cp_error(-errno, "%s: chown %u:%u: %s", what, uid, gid,
				strerror(errno));
	if (fchmod(fd, mode) < 0)
		return cp_error(-errno, "%s: chmod %o: %s", what, (unsigned)mode,
				strerror(errno));
	return 0;
}

/* Overwrite an existing name of exactly len bytes in place (one write). */
static int dom_write_in_place(int dirfd, const char *name, const uint8_t *buf,
			      size_t len)
{
	struct stat st;
	int fd = openat(dirfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != len) {
		close(fd);
		return -ENOSPC;
	}
	ssize_t n = pwrite(fd, buf, len, 0);
	if (n < 0)
		r = -errno;
	else if ((size_t)n != len)
		r = -EIO;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

int sd_atomic_write_at(int dirfd, const char *what, const char *name,
		       const uint8_t *buf, size_t len, uint32_t uid,
		       uint32_t gid)
{
	char tmp[NAME_MAX + 1];
	int fd, r;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", name) >= (int)sizeof(tmp))
		return cp_error(-ENAMETOOLONG, "%s/%s: name too long", what, name);
	if (!uid && !gid) {
		/* keep the owner of the record it replaces */
		struct stat st;
		if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) && (st.st_uid != geteuid() ||
					    st.st_gid != getegid())) {
			uid = st.st_uid;
			gid = st.st_gid;
		}
	}
	/* a leftover tmp (even a planted link) is replaced, never followed */
	if (unlinkat(dirfd, tmp, 0) < 0 && errno != ENOENT)
		return cp_error(-errno, "%s/%s: %s", what, tmp, strerror(errno));
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
			   O_CLOEXEC, SD_FILE_MODE);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	r = sd_own(fd, what, SD_FILE_MODE, uid, gid);
	if (r == 0)
		r = dom_write_all(fd, buf, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		goto fail;
	}
	if (fsync(dirfd) < 0)
		return cp_error(-errno, "%s: fsync: %s", what, strerror(errno));
	return 0;
fail:
	if ((r == -ENOSPC || r == -EDQUOT) && len <= 4096 &&
	    dom_write_in_place(dirfd, name, buf, len) == 0)
		return 0;
	return cp_error(r, "%s/%s: write: %s", what, name, strerror(-r));
}

/* Write-new-then-rename: <path>.tmp, fsync, rename, fsync directory. */
static int dom_atomic_write(const char *path, const uint8_t *buf, size_t len)
{
	char dir[PATH_MAX];
	const char *base = strrchr(path, '/');
	int dfd, r;

	dom_dirname(path, dir);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return cp_error(-errno, "%s: %s", dir, strerror(errno));
	r = sd_atomic_write_at(dfd, dir, base ? base + 1 : path, buf, len, 0, 0);
	close(dfd);
	return r;
}

/* Read exactly one sector from path (the file must be exactly that size). */
static int dom_read_sector(const char *path, uint8_t *buf)
{
	struct stat st;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return cp_error(-errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		int err = -errno;
		close(fd);
		return cp_error(err, "%s: %s", path, strerror(-err));
	}
	if (st.st_size != CP_MD_SECTOR_SIZE) {
		close(fd);
		return cp_error(-EUCLEAN, "%s: size %lld, expected %d", path,
				(long long)st.st_size, CP_MD_SECTOR_SIZE);
	}
	while (got < CP_MD_SECTOR_SIZE) {
		ssize_t n = read(fd, buf + got, CP_MD_SECTOR_SIZE - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EUCLEAN;
			close(fd);
			return cp_error(err, "%s: short read", path);
		}
		got += (size_t)n;
	}
	close(fd);
	return 0;
}

/* ---- volume metadata files ------------------------------------------------ */

/* Replace <root>/<dom>/dom_md/metadata atomically (filesd.c). */
int sd_file_write_domain_md(const char *root, const struct cp_domain_md *d)
{
	uint8_t buf[CP_MD_SECTOR_SIZE];
	char path[PATH_MAX];
	int r = cp_domain_md_encode(d, buf);

	if (r < 0)
		return r;
	if (snprintf(path, sizeof(path), "%s/%s/dom_md/metadata", root,
		     d->dom_uuid) >= (int)sizeof(path))
		return cp_error(-ENAMETOOLONG, "%s: path too long", root);
	return dom_atomic_write(path, buf, sizeof(buf));
}

CP_EXPORT int cp_volmeta_path(char *out, size_t outlen, const char *root,
			      const char *dom_uuid, const char *img_uuid,
			      const char *vol_uuid)
{
	CP_API_ENTER();
	if (!cp_uuid_valid(dom_uuid) || !cp_uuid_valid(img_uuid) ||
	    !cp_uuid_valid(vol_uuid))
		return cp_error(-EINVAL, "volume path: invalid UUID");
	if ((size_t)snprintf(out, outlen, "%s/%s/images/%s/%s.meta", root,
			     dom_uuid, img_uuid, vol_uuid) >= outlen)
		return cp_error(-ENAMETOOLONG, "%s/%s: path too long", root,
				dom_uuid);
	return 0;
}

CP_EXPORT int cp_volmeta_write(const char *path, const struct cp_volmeta *m)
{
	CP_API_ENTER();
	uint8_t buf[CP_MD_SECTOR_SIZE];
	int r = cp_volmeta_encode(m, buf);

	if (r < 0)
		return cp_error_prefix(r, "%s", path);
	return dom_atomic_write(path, buf, sizeof(buf));
}

CP_EXPORT int cp_volmeta_read(const char *path, struct cp_volmeta *m)
{
	CP_API_ENTER();
	uint8_t buf[CP_MD_SECTOR_SIZE];
	int r = dom_read_sector(path, buf);

	if (r < 0)
		return r;
	return cp_volmeta_decode(buf, path, m);
}

CP_EXPORT int cp_volmeta_update(const char *path, uint64_t expected_gen,
				struct cp_volmeta *rec)
{
	CP_API_ENTER();
	struct cp_volmeta cur, next;
	int r = cp_volmeta_read(path, &cur);

	if (r < 0)
		return r;
	if (cur.generation != expected_gen)
		return cp_error(-ESTALE,
				"%s: generation %llu expected, %llu on disk", path,
				(unsigned long long)expected_gen,
				(unsigned long long)cur.generation);
	if (strcasecmp(cur.vol_uuid, rec->vol_uuid) != 0)
		return cp_error(-EINVAL, "%s: record is for volume %s, file holds %s",
				path, rec->vol_uuid, cur.vol_uuid);
	if (expected_gen == UINT64_MAX)
		return cp_error(-EOVERFLOW, "%s: generation overflow", path);
	next = *rec;
	next.generation = expected_gen + 1;
	r = cp_volmeta_write(path, &next);
	if (r < 0)
		return r;
	rec->generation = next.generation;
	return 0;
}

/* ---- domains -------------------------------------------------------------- */

static const struct {
	const char *name;
	uint64_t size;
} dommd_files[] = {
	{ "ids", CP_DOMMD_IDS_SIZE },
	{ "leases", CP_DOMMD_LEASES_SIZE },
	{ "inbox", CP_DOMMD_INBOX_SIZE },
	{ "outbox", CP_DOMMD_OUTBOX_SIZE },
	{ "tasks", CP_DOMMD_TASKS_SIZE },
};

CP_EXPORT void cp_domain_create_opts_init(struct cp_domain_create_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
	opts->dom_version = 1;
	opts->chunk_size = CP_SD_CHUNK_DEFAULT;
	opts->io_timeout = 10;
}

static int dom_check_root(const char *root)
{
	struct stat st;

	if (!root)
		return cp_error(-EINVAL, "domain root not given");
	if (stat(root, &st) < 0)
		return cp_error(-errno, "domain root %s: %s", root,
				strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return cp_error(-ENOTDIR, "domain root %s: not a directory", root);
	return 0;
}

static int dom_mkdir(const char *path, uint32_t uid, uint32_t gid)
{
	int fd, r;

	if (mkdir(path, SD_DIR_MODE) < 0)
		return cp_error(-errno, "%s: mkdir: %s", path, strerror(errno));
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cp_error(-errno, "%s: %s", path, strerror(errno));
	r = sd_own(fd, path, SD_DIR_MODE, uid, gid);
	close(fd);
	return r;
}

/* A zero-filled file of size bytes, really allocated (not sparse: the task
 * journal and the lease areas must be writable on a full file system). */
static int dom_create_zeroed(const char *path, uint64_t size, uint32_t uid,
			     uint32_t gid)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		      SD_FILE_MODE);
	int r = 0;

	if (fd < 0)
		return cp_error(-errno, "%s: %s", path, strerror(errno));
	if ((r = sd_own(fd, path, SD_FILE_MODE, uid, gid)) < 0) {
		close(fd);
		return r;
	}
	if (ftruncate(fd, (off_t)size) < 0)
		r = -errno;
	else if ((r = posix_fallocate(fd, 0, (off_t)size)) > 0)
		r = -r;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		return cp_error(r, "%s: allocate %llu bytes: %s", path,
				(unsigned long long)size, strerror(-r));
	return 0;
}

CP_EXPORT int cp_domain_create(const struct cp_domain_create_opts *opts,
			       struct cp_domain_md *out)
{
	CP_API_ENTER();
	struct cp_domain_create_opts o;
	struct cp_domain_md d;
	char dir[PATH_MAX - 128], mddir[PATH_MAX - 64], path[PATH_MAX];
	uint8_t buf[CP_MD_SECTOR_SIZE];
	int r;

	r = SD_OPTS_COPY(o, opts, cp_domain_create_opts_init, name,
			 "domain create");
	if (r < 0)
		return r;

	r = dom_check_root(o.root);
	if (r < 0)
		return r;
	memset(&d, 0, sizeof(d));
	if (o.dom_uuid) {
		if (!cp_uuid_valid(o.dom_uuid))
			return cp_error(-EINVAL, "domain UUID '%s' is not valid",
					o.dom_uuid);
		strcpy(d.dom_uuid, o.dom_uuid);
	} else if ((r = cp_uuid_generate(d.dom_uuid)) < 0) {
		return r;
	}
	if (!o.pool_uuid || !cp_uuid_valid(o.pool_uuid))
		return cp_error(-EINVAL, "domain %s: pool UUID is not valid",
				d.dom_uuid);
	strcpy(d.pool_uuid, o.pool_uuid);
	if (!o.name || strlen(o.name) > CP_DOMAIN_NAME_MAX)
		return cp_error(-EINVAL, "domain %s: name must be 1..%d bytes",
				d.dom_uuid, CP_DOMAIN_NAME_MAX);
	strcpy(d.name, o.name);
	d.type = CP_DOMAIN_TYPE_FILE;
	d.master = o.master;
	d.dom_version = o.dom_version;
	d.generation = 0;
	d.chunk_size = o.chunk_size;
	d.io_timeout = o.io_timeout;
	d.max_volumes = 0;
	r = cp_domain_md_encode(&d, buf);
	if (r < 0)
		return r;

	if (snprintf(dir, sizeof(dir), "%s/%s", o.root, d.dom_uuid) >=
	    (int)sizeof(dir))
		return cp_error(-ENAMETOOLONG, "%s: path too long", o.root);
	snprintf(mddir, sizeof(mddir), "%s/dom_md", dir);
	if ((r = dom_mkdir(dir, o.disk_uid, o.disk_gid)) < 0 ||
	    (r = dom_mkdir(mddir, o.disk_uid, o.disk_gid)) < 0)
		return r;
	for (size_t i = 0; i < CP_ARRAY_SIZE(dommd_files); i++) {
		snprintf(path, sizeof(path), "%s/%s", mddir, dommd_files[i].name);
		if ((r = dom_create_zeroed(path, dommd_files[i].size, o.disk_uid,
					   o.disk_gid)) < 0)
			return r;
	}
	snprintf(path, sizeof(path), "%s/images", dir);
	if ((r = dom_mkdir(path, o.disk_uid, o.disk_gid)) < 0)
		return r;
	if ((r = dom_fsync_dir(dir)) < 0)
		return r;
	/* The record last: a domain without it is an unfinished create. */
	int mdfd = open(mddir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (mdfd < 0)
		return cp_error(-errno, "%s: %s", mddir, strerror(errno));
	r = sd_atomic_write_at(mdfd, mddir, "metadata", buf, sizeof(buf),
			       o.disk_uid, o.disk_gid);
	close(mdfd);
	if (r < 0)
		return r;
	if ((r = dom_fsync_dir(o.root)) < 0)
		return r;
	if (out)
		*out = d;
	return 0;
}

CP_EXPORT int cp_domain_read(const char *root, const char *dom_uuid,
			     struct cp_domain_md *out)
{
	CP_API_ENTER();
	char dir[PATH_MAX - 128], path[PATH_MAX];
	uint8_t buf[CP_MD_SECTOR_SIZE];
	struct cp_domain_md d;
	struct stat st;
	int r = dom_check_root(root);

	if (r < 0)
		return r;
	if (!cp_uuid_valid(dom_uuid))
		return cp_error(-EINVAL, "domain UUID '%s' is not valid",
				dom_uuid ? dom_uuid : "(null)");
	if (snprintf(dir, sizeof(dir), "%s/%s", root, dom_uuid) >=
	    (int)sizeof(dir))
		return cp_error(-ENAMETOOLONG, "%s: path too long", root);
	if (stat(dir, &st) < 0)
		return cp_error(-errno, "domain %s: %s", dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/dom_md/metadata", dir);
	if ((r = dom_read_sector(path, buf)) < 0 ||
	    (r = cp_domain_md_decode(buf, path, &d)) < 0)
		return r;
	if (strcasecmp(d.dom_uuid, dom_uuid) != 0)
		return cp_error(-EUCLEAN, "%s: record is for domain %s", path,
				d.dom_uuid);
	for (size_t i = 0; i < CP_ARRAY_SIZE(dommd_files); i++) {
		snprintf(path, sizeof(path), "%s/dom_md/%s", dir,
			 dommd_files[i].name);
		if (stat(path, &st) < 0)
			return cp_error(errno == ENOENT ? -EUCLEAN : -errno,
					"%s: %s", path, strerror(errno));
		if (!S_ISREG(st.st_mode) ||
		    (uint64_t)st.st_size != dommd_files[i].size)
			return cp_error(-EUCLEAN, "%s: size %lld, expected %llu",
					path, (long long)st.st_size,
					(unsigned long long)dommd_files[i].size);
	}
	snprintf(path, sizeof(path), "%s/images", dir);
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return cp_error(-EUCLEAN, "%s: missing or not a directory", path);
	if (out)
		*out = d;
	return 0;
}

CP_EXPORT int cp_domain_image_create(const char *root, const char *dom_uuid,
				     const char *img_uuid)
{
	CP_API_ENTER();
	char images[PATH_MAX - 128], path[PATH_MAX];
	int r = dom_check_root(root);

	if (r < 0)
		return r;
	if (!cp_uuid_valid(dom_uuid) || !cp_uuid_valid(img_uuid))
		return cp_error(-EINVAL, "image create: invalid UUID");
	if (snprintf(images, sizeof(images), "%s/%s/images", root, dom_uuid) >=
	    (int)sizeof(images))
		return cp_error(-ENAMETOOLONG, "%s: path too long", root);
	snprintf(path, sizeof(path), "%s/%s", images, img_uuid);
	if ((r = dom_mkdir(path, 0, 0)) < 0)
		return r;
	return dom_fsync_dir(images);
}

int sd_uuid_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cp_uuid_str *)a)->s,
		      ((const struct cp_uuid_str *)b)->s);
}

CP_VECTOR(dom_uuid_vec, struct cp_uuid_str);

int sd_list_uuids(DIR *dp, const char *what, const char *suffix,
		  struct cp_uuid_str **out, size_t *n)
{
	dom_uuid_vec v = {0};
	size_t sl = strlen(suffix);
	struct dirent *de;

	while ((de = readdir(dp))) {
		const char *nm = de->d_name;
		struct cp_uuid_str u;

		if (strlen(nm) != CP_UUID_STR_LEN + sl ||
		    strcmp(nm + CP_UUID_STR_LEN, suffix) != 0 ||
		    !dom_uuid_valid_n(nm))
			continue;
		memcpy(u.s, nm, CP_UUID_STR_LEN);
		u.s[CP_UUID_STR_LEN] = '\0';
		if (dom_uuid_vec_append(&v, u) < 0) {
			closedir(dp);
			dom_uuid_vec_reset(&v);
			return cp_error(-ENOMEM, "%s: out of memory", what);
		}
	}
	closedir(dp);
	if (v.len)
		qsort(v.ptr, v.len, sizeof(*v.ptr), sd_uuid_cmp);
	*out = v.ptr;
	*n = v.len;
	return 0;
}

CP_EXPORT int cp_domain_list_volumes(const char *root, const char *dom_uuid,
				     const char *img_uuid,
				     struct cp_uuid_str **out, size_t *n)
{
	CP_API_ENTER();
	char path[PATH_MAX];
	DIR *dp;
	int r = dom_check_root(root);

	if (r < 0)
		return r;
	if (!cp_uuid_valid(dom_uuid) || !cp_uuid_valid(img_uuid))
		return cp_error(-EINVAL, "list volumes: invalid UUID");
	if (snprintf(path, sizeof(path), "%s/%s/images/%s", root, dom_uuid,
		     img_uuid) >= (int)sizeof(path))
		return cp_error(-ENAMETOOLONG, "%s: path too long", root);
	dp = opendir(path);
	if (!dp)
		return cp_error(-errno, "%s: %s", path, strerror(errno));
	return sd_list_uuids(dp, path, ".meta", out, n);
}
