/* tests/fuzz/fuzz.h - what the libFuzzer targets share.  A target defines
 * FUZZ_NAME (its name, a string literal) before including this. */
#ifndef CP_FUZZ_H
#define CP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A finding: print the printf-style message after the target's name and
 * stop with a trap, which libFuzzer reports as a crash. */
#define FINDING(...)                                                           \
	do {                                                                   \
		fprintf(stderr, FUZZ_NAME ": " __VA_ARGS__);                   \
		fputc('\n', stderr);                                           \
		__builtin_trap();                                              \
	} while (0)

#endif
