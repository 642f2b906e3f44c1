/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cp_gen: seeded, reproducible test data for the compat and integration
 * suites.  No dependency on the cowpool libraries: the scripts use it to
 * drive qemu-img/qemu-io and cowpool alike, so it must not share code with
 * the engine under test.
 *
 *   cp_gen ops SEED COUNT SIZE CLUSTER [ZERO% [DISCARD%]]
 *       Print COUNT random I/O operations for an image of SIZE bytes with
 *       clusters of CLUSTER bytes, one per line:
 *           w PATTERN OFFSET LENGTH   write LENGTH bytes of PATTERN (0..255)
 *           z OFFSET LENGTH           write zeroes
 *           u OFFSET LENGTH           write zeroes, unmapping allowed
 *           d OFFSET LENGTH           discard
 *       Offsets and lengths mix cluster-aligned, sector-aligned, unaligned,
 *       tiny and cluster-straddling requests.  ZERO% (default 15) and
 *       DISCARD% (default 10) set the share of zero writes and discards.
 *
 *   cp_gen data SEED LENGTH
 *       Write LENGTH bytes to stdout, 4 KiB blocks that are by turns
 *       random, repeated text (compressible) and zero.
 *
 *   cp_gen fill PATTERN LENGTH
 *       Write LENGTH bytes of PATTERN to stdout.
 *
 *   cp_gen sectors FILE COUNT
 *       Print "OFFSET PATTERN" for up to COUNT 512-byte sectors of FILE
 *       whose bytes are all equal, spread evenly over those sectors and
 *       preferring non-zero ones (for `read -P` checks).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static uint64_t parse_u64(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);

	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*s == '\0' || *end != '\0') {
		fprintf(stderr, "cp_gen: bad number '%s'\n", s);
		exit(2);
	}
	return v;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static int cmd_ops(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: cp_gen ops SEED COUNT SIZE CLUSTER [ZERO%% [DISCARD%%]]\n");
		return 2;
	}
	rng_state = parse_u64(argv[2]);
	uint64_t count = parse_u64(argv[3]);
	uint64_t size = parse_u64(argv[4]);
	uint64_t cs = parse_u64(argv[5]);
	uint64_t zero_pct = argc > 6 ? parse_u64(argv[6]) : 15;
	uint64_t disc_pct = argc > 7 ? parse_u64(argv[7]) : 10;
	/* keep big-cluster images cheap: no request spans more than this */
	uint64_t span = min_u64(3 * cs, 512 * 1024);

	if (size == 0 || cs == 0) {
		fprintf(stderr, "cp_gen: size and cluster must be non-zero\n");
		return 2;
	}
	for (uint64_t i = 0; i < count; i++) {
		uint64_t off, len;

		switch (rnd_below(5)) {
		case 0: /* whole clusters */
			off = rnd_below(size / cs) * cs;
			len = (1 + rnd_below(span / cs > 0 ? span / cs : 1)) * cs;
			break;
		case 1: /* sector aligned */
			off = rnd_below(size / 512) * 512;
			len = (1 + rnd_below(span / 512)) * 512;
			break;
		case 2: /* unaligned */
			off = rnd_below(size);
			len = 1 + rnd_below(span);
			break;
		case 3: /* tiny */
			off = rnd_below(size);
			len = 1 + rnd_below(64);
			break;
		default: /* straddles a cluster boundary */
			off = (1 + rnd_below(size / cs > 1 ? size / cs - 1 : 1)) * cs;
			if (off >= size)
				off = size / 2;
			{
				uint64_t back = 1 + rnd_below(min_u64(cs, 65536));

				off = off > back ? off - back : 0;
				len = back + 1 + rnd_below(min_u64(cs, 65536));
			}
			break;
		}
		if (off >= size)
			off = size - 1;
		if (len > size - off)
			len = size - off;

		uint64_t kind = rnd_below(100);

		if (kind < zero_pct)
			printf("%c %" PRIu64 " %" PRIu64 "\n",
			       rnd_below(2) ? 'z' : 'u', off, len);
		else if (kind < zero_pct + disc_pct)
			printf("d %" PRIu64 " %" PRIu64 "\n", off, len);
		else
			printf("w %u %" PRIu64 " %" PRIu64 "\n",
			       (unsigned)(1 + rnd_below(255)), off, len);
	}
	return 0;
}

/* Write len bytes to stdout, a block of bs bytes at a time (the last one
 * cut short), next(block, bs) filling each block first when given.
 * Returns 0, or 1 after a write error. */
static int emit(unsigned char *block, size_t bs, uint64_t len,
		void (*next)(unsigned char *, size_t))
{
	while (len > 0) {
		size_t n = (size_t)min_u64(len, bs);

		if (next)
			next(block, bs);
		if (fwrite(block, 1, n, stdout) != n) {
			perror("cp_gen: write");
			return 1;
		}
		len -= n;
	}
	return 0;
}

/* A block of cmd_data: random bytes, text with one byte changed, or
 * zeroes. */
static void data_block(unsigned char *block, size_t bs)
{
	static const char text[] =
		"cowpool compat test data: the quick brown fox jumps over "
		"the lazy dog 0123456789\n";

	switch (rnd_below(3)) {
	case 0:
		for (size_t i = 0; i < bs; i += 8) {
			uint64_t r = rnd();

			memcpy(block + i, &r, 8);
		}
		break;
	case 1:
		for (size_t i = 0; i < bs; i++)
			block[i] = (unsigned char)text[i % (sizeof(text) - 1)];
		block[rnd_below(bs)] ^= 0x5a;
		break;
	default:
		memset(block, 0, bs);
		break;
	}
}

static int cmd_data(int argc, char **argv)
{
	unsigned char block[4096];

	if (argc != 4) {
		fprintf(stderr, "usage: cp_gen data SEED LENGTH\n");
		return 2;
	}
	rng_state = parse_u64(argv[2]);
	return emit(block, sizeof(block), parse_u64(argv[3]), data_block);
}

static int cmd_fill(int argc, char **argv)
{
	unsigned char block[65536];

	if (argc != 4) {
		fprintf(stderr, "usage: cp_gen fill PATTERN LENGTH\n");
		return 2;
	}
	memset(block, (int)(parse_u64(argv[2]) & 0xff), sizeof(block));
	return emit(block, sizeof(block), parse_u64(argv[3]), NULL);
}

static int cmd_sectors(int argc, char **argv)
{
	unsigned char sec[512];
	uint64_t *offs = NULL, n = 0, cap = 0, nz = 0;
	unsigned char *pats = NULL;
	FILE *f;

	if (argc != 4) {
		fprintf(stderr, "usage: cp_gen sectors FILE COUNT\n");
		return 2;
	}
	uint64_t want = parse_u64(argv[3]);

	f = fopen(argv[2], "rb");
	if (!f) {
		perror(argv[2]);
		return 1;
	}
	for (uint64_t off = 0; fread(sec, 1, sizeof(sec), f) == sizeof(sec);
	     off += sizeof(sec)) {
		size_t i;

		for (i = 1; i < sizeof(sec) && sec[i] == sec[0]; i++)
			;
		if (i < sizeof(sec))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 1024;
			offs = realloc(offs, cap * sizeof(*offs));
			pats = realloc(pats, cap);
			if (!offs || !pats) {
				perror("cp_gen");
				return 1;
			}
		}
		offs[n] = off;
		pats[n++] = sec[0];
		nz += sec[0] != 0;
	}
	fclose(f);
	/* two passes: non-zero sectors first, then any */
	uint64_t printed = 0;

	for (int pass = 0; pass < 2 && printed < want; pass++) {
		uint64_t pool = pass == 0 ? nz : n - nz;
		uint64_t take = want - printed < pool ? want - printed : pool;
		uint64_t seen = 0, next = 0, k = 0;

		for (uint64_t i = 0; i < n && k < take; i++) {
			if (pass == 0 && pats[i] == 0)
				continue;
			if (pass == 1 && pats[i] != 0)
				continue;
			if (seen++ == next) {
				printf("%" PRIu64 " %u\n", offs[i], pats[i]);
				k++;
				next = k * pool / take;
			}
		}
		printed += k;
	}
	free(offs);
	free(pats);
	return 0;
}

/* cp_gen addext FILE TYPE BYTES: insert a header extension of TYPE
 * (hex) holding BYTES (a string) at the start of the extension area of a
 * version 3 qcow2 image (after header_length), moving the others up.
 * The backing file name, if any, must lie past the extension area; its
 * offset field is moved along. */
static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

static void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static int cmd_addext(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: cp_gen addext FILE TYPE BYTES\n");
		return 2;
	}
	FILE *f = fopen(argv[2], "r+b");
	if (!f) {
		perror(argv[2]);
		return 1;
	}
	uint8_t h[4096];
	size_t n = fread(h, 1, sizeof(h), f);
	uint32_t cs = 1u << rd32(h + 20);
	if (n < 112 || rd32(h + 4) != 3 || cs < 4096) {
		fprintf(stderr, "addext: needs a version 3 image with clusters >= 4 KiB\n");
		fclose(f);
		return 1;
	}
	uint32_t hl = rd32(h + 100);
	uint32_t len = (uint32_t)strlen(argv[4]);
	uint32_t add = 8 + ((len + 7) & ~7u);
	uint64_t bo = rd64(h + 8);
	uint32_t bs = rd32(h + 16);
	uint32_t end = bo ? (uint32_t)(bo + bs) : 0;
	/* find the end of the extension area */
	uint32_t p = hl;
	while (p + 8 <= sizeof(h) && rd32(h + p) != 0)
		p += 8 + ((rd32(h + p + 4) + 7) & ~7u);
	p += 8;
	if (end < p)
		end = p;
	if (end + add > sizeof(h)) {
		fprintf(stderr, "addext: no room\n");
		fclose(f);
		return 1;
	}
	memmove(h + hl + add, h + hl, end - hl);
	memset(h + hl, 0, add);
	wr32(h + hl, (uint32_t)strtoul(argv[3], NULL, 16));
	wr32(h + hl + 4, len);
	memcpy(h + hl + 8, argv[4], len);
	if (bo) {
		bo += add;
		wr32(h + 8, (uint32_t)(bo >> 32));
		wr32(h + 12, (uint32_t)bo);
	}
	fseek(f, 0, SEEK_SET);
	fwrite(h, 1, sizeof(h), f);
	fclose(f);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "addext") == 0)
		return cmd_addext(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "sectors") == 0)
		return cmd_sectors(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "ops") == 0)
		return cmd_ops(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "data") == 0)
		return cmd_data(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "fill") == 0)
		return cmd_fill(argc, argv);
	fprintf(stderr, "usage: cp_gen ops|data|fill ...\n");
	return 2;
}
