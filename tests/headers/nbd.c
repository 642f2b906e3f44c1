/* Compiles the public header nbd.h alone, with -std=c11 -pedantic-errors
 * (docs/hacking.md): it must include what it needs and use no extensions. */
#include "nbd.h"

int main(void)
{
	return 0;
}
