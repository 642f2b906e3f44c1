/* Compiles the public header spm.h alone, with -std=c11 -pedantic-errors
 * (STYLE.md #8): it must include what it needs and use no extensions. */
#include "spm.h"

int main(void)
{
	return 0;
}
