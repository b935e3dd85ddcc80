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
static void (*_Atomic hook_fn)(long point, void *ctx);
static void *_Atomic hook_ctx;
static _Thread_local bool in_hook;

void kvshm__test_hook(void (*fn)(long point, void *ctx), void *ctx)
{
	atomic_store(&hook_fn, NULL);
	atomic_store(&hook_ctx, ctx);
	atomic_store(&hook_fn, fn);
}

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
	void (*fn)(long, void *) = atomic_load(&hook_fn);

	if (n == atomic_load(&crash_at))
		kill(getpid(), SIGKILL);
	/* the hook's own calls into the library pass crash points too: they
	 * are counted, but do not call the hook again */
	if (fn && !in_hook) {
		in_hook = true;
		fn(n, atomic_load(&hook_ctx));
		in_hook = false;
	}
}
#else
/* ISO C wants a translation unit to declare something. */
typedef int kv__testing_unused;
#endif
