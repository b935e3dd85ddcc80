/* SPDX-License-Identifier: MIT */
/*
 * testing.c - the crash points of test builds (see testing.h). Compiled to
 * nothing in the real library.
 */
#ifdef KVSHM_TESTING
#include "internal.h"
#include "testing.h"

#include <signal.h>
#include <unistd.h>

static _Atomic long crash_at, passed;

void kvshm__test_crash_after(long n)
{
	atomic_store(&passed, 0);
	atomic_store(&crash_at, n);
}

long kvshm__test_crashpoints(void)
{
	return atomic_load(&passed);
}

void kv__crashpoint(void)
{
	long n = atomic_fetch_add(&passed, 1) + 1;
	if (n == atomic_load(&crash_at))
		kill(getpid(), SIGKILL);
}
#else
/* ISO C wants a translation unit to declare something. */
typedef int kv__testing_unused;
#endif
