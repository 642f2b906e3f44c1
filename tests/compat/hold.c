/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cp_hold: open an image chain with the cowpool engine and keep it open,
 * so that tests/compat/locks.sh can try qemu-img, qemu-io and qemu-nbd
 * against the locks cowpool holds (`cowpool io` has no interactive mode).
 *
 *   cp_hold [-r] [-U] [-B] FILE
 *       -r  open read-only        -U  force share
 *       -B  then reopen the backing file read-write (what commit does)
 *
 * Prints "held" on stdout once the chain is open (and locked), then waits
 * for end of file on stdin, closes the chain and exits 0.  Exits 1 with
 * the engine's message on stderr if the open fails.
 *
 *   cp_hold -W FILE...
 *       Wait until no process holds an image lock on any FILE (a blocking
 *       F_OFD_SETLKW over the lock bytes 100..203), then exit 0.  A process
 *       killed with requests in flight keeps its locks until the kernel
 *       has finished them (io_uring holds the file until then), so tests
 *       that kill cowpool wait with this before looking at its files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "qcow.h"

static int wait_unlocked(int n, char **files)
{
	for (int i = 0; i < n; i++) {
		int fd = open(files[i], O_RDWR); /* a write lock needs it */
		if (fd < 0) {
			fprintf(stderr, "cp_hold: %s: %s\n", files[i], strerror(errno));
			return 1;
		}
		/* a write lock waits for every read lock on the bytes */
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
				   .l_start = 100, .l_len = 104};
		int r;
		while ((r = fcntl(fd, F_OFD_SETLKW, &fl)) < 0 && errno == EINTR)
			;
		if (r < 0) {
			fprintf(stderr, "cp_hold: %s: waiting for locks: %s\n",
				files[i], strerror(errno));
			close(fd);
			return 1;
		}
		close(fd);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "-W"))
		return wait_unlocked(argc - 2, argv + 2);
	struct cp_open_opts oo;
	bool reopen_base = false;
	int c;

	cp_open_opts_init(&oo);
	while ((c = getopt(argc, argv, "rUB")) != -1) {
		switch (c) {
		case 'r': oo.readonly = true; break;
		case 'U': oo.force_share = true; break;
		case 'B': reopen_base = true; break;
		default:
			fprintf(stderr, "usage: cp_hold [-r] [-U] [-B] FILE\n");
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: cp_hold [-r] [-U] [-B] FILE\n");
		return 2;
	}
	cp_image *img;
	if (cp_image_open(argv[optind], &oo, &img) < 0) {
		fprintf(stderr, "cp_hold: %s\n", cp_last_error());
		return 1;
	}
	if (reopen_base) {
		cp_image *b = cp_image_backing(img);
		if (!b || cp_image_reopen(b, true) < 0) {
			fprintf(stderr, "cp_hold: %s\n",
				b ? cp_last_error() : "no backing file");
			cp_image_close(img);
			return 1;
		}
	}
	printf("held\n");
	fflush(stdout);
	char buf[256];
	while (fgets(buf, sizeof(buf), stdin))
		;
	return cp_image_close(img) < 0 ? 1 : 0;
}
