/* Compiles the public header mailbox.h alone, with -std=c11 -pedantic-errors
 * (docs/hacking.md): it must include what it needs and use no extensions. */
#include "mailbox.h"

int main(void)
{
	return 0;
}
