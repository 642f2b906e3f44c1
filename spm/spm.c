/* spm/spm.c - the storage pool library (module entry; see spm.h). */
#include "spm.h"
