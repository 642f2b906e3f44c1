/* qcow/probe.c - recognise the image formats qemu-img probes
 *
 * cowpool reads raw and qcow2.  A file in another format opened without
 * -f must not be taken for raw: writing it as raw destroys its header.
 * The signatures are those QEMU's format drivers probe for (the facts of
 * their probe functions: magic bytes and where they sit).  As in QEMU, a
 * raw image that was probed (no -f) refuses a write to its first sector
 * whose data would make the file probe as another format.
 */
#include "qcow_int.h"

#include <string.h>

#include "common/iov.h"

#define PROBE_LEN 512 /* QEMU's BLOCK_PROBE_BUF_SIZE */

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* the text descriptor of a vmdk: comment and blank lines, then version=N */
static bool vmdk_text(const uint8_t *b, size_t n)
{
	const char *p = (const char *)b, *end = p + n;
	while (p < end) {
		if (*p == '#') {
			while (p < end && *p != '\n')
				p++;
			p++;
			continue;
		}
		if (*p == ' ') {
			while (p < end && *p == ' ')
				p++;
			if (p < end && *p == '\r')
				p++;
			if (p == end || *p != '\n')
				return false;
			p++;
			continue;
		}
		for (char v = '1'; v <= '3'; v++) {
			char lf[] = "version=X\n", crlf[] = "version=X\r\n";
			lf[8] = crlf[8] = v;
			if ((size_t)(end - p) >= strlen(lf) && !memcmp(p, lf, strlen(lf)))
				return true;
			if ((size_t)(end - p) >= strlen(crlf) &&
			    !memcmp(p, crlf, strlen(crlf)))
				return true;
		}
		return false;
	}
	return false;
}

static bool cstr_eq(const uint8_t *field, size_t fieldlen, const char *s)
{
	size_t l = strlen(s);
	return l < fieldlen && !memcmp(field, s, l + 1);
}

const char *qc_probe_format(const uint8_t *b, size_t n, const char *filename)
{
	static const char cloop[] = "#!/bin/sh\n#V2.0 Format\n"
				    "modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
	if (n > PROBE_LEN)
		n = PROBE_LEN;
	if (n >= 8 && cp_be32(b) == QC_MAGIC)
		return cp_be32(b + 4) == 1 ? "qcow" : "qcow2";
	if (n >= 4 && !memcmp(b, "QED\0", 4))
		return "qed";
	if (n >= 6 && !memcmp(b, "LUKS\xba\xbe", 6))
		return "luks";
	if (n >= 8 && !memcmp(b, "vhdxfile", 8))
		return "vhdx";
	if (n >= 8 && !memcmp(b, "conectix", 8))
		return "vpc";
	if (n >= 4 && (!memcmp(b, "KDMV", 4) || !memcmp(b, "COWD", 4)))
		return "vmdk";
	if (vmdk_text(b, n))
		return "vmdk";
	if (n >= 0x44 && le32(b + 0x40) == 0xbeda107fu)
		return "vdi";
	if (n >= 64 && (!memcmp(b, "WithoutFreeSpace", 16) ||
			!memcmp(b, "WithouFreSpacExt", 16)) && le32(b + 16) == 2)
		return "parallels";
	if (n >= sizeof(cloop) - 1 && !memcmp(b, cloop, sizeof(cloop) - 1))
		return "cloop";
	if (n >= 512 && cstr_eq(b, 32, "Bochs Virtual HD Image") &&
	    cstr_eq(b + 32, 16, "Redolog") && cstr_eq(b + 48, 16, "Growing") &&
	    (le32(b + 64) == 0x00020000u || le32(b + 64) == 0x00010000u))
		return "bochs";
	/* QEMU's dmg driver claims any file whose name ends in .dmg */
	size_t fl = filename ? strlen(filename) : 0;
	if (fl > 4 && !strcmp(filename + fl - 4, ".dmg"))
		return "dmg";
	return NULL;
}

int qc_probed_write_check(cp_image *img, const struct iovec *iov, int iovcnt,
			  uint64_t offset, uint64_t len)
{
	if (!img->probed || offset >= PROBE_LEN || !len)
		return 0;
	uint8_t *b = cp_bdev_alloc_buf(4096);
	if (!b)
		return -ENOMEM;
	memset(b, 0, PROBE_LEN);
	/* a probed image is raw: its size is img->size */
	uint64_t have = CP_MIN(img->size, (uint64_t)PROBE_LEN);
	int r = 0;
	if (offset > 0 || len < have)
		r = cp_bdev_pread(img->dev, b, 4096, 0);
	if (r < 0) {
		cp_bdev_free_buf(b);
		return cp_error_prefix(r, "%s: reading sector 0", img->filename);
	}
	uint64_t n = CP_MIN(len, PROBE_LEN - offset);
	cp_iov_to_buf(iov, iovcnt, 0, b + offset, n);
	const char *f = qc_probe_format(b, CP_MAX(have, offset + n), NULL);
	cp_bdev_free_buf(b);
	if (f)
		return cp_error(-EPERM, "%s: refusing to write a %s signature to "
				"sector 0 of a raw image whose format was probed; "
				"open it with -f raw", img->filename, f);
	return 0;
}
