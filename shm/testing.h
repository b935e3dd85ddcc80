/* SPDX-License-Identifier: MIT */
/*
 * testing.h - hooks that exist only in test builds (-DKVSHM_TESTING, the
 * libkvshm-test.a archive): crash points and fault injection. Never part of
 * the installed library.
 */
#ifndef KVSHM_TESTING_H
#define KVSHM_TESTING_H

#ifndef KVSHM_TESTING
#error "shm/testing.h is for test builds (-DKVSHM_TESTING) only"
#endif

#include <stdbool.h>

/* SIGKILL this process at the n-th crash point passed from now on (n >= 1);
 * 0 disarms. Crash points sit before every store to shared memory inside
 * critical sections, in the library's writers, cleaner and repairs. */
void kvshm__test_crash_after(long n);

/* Number of crash points passed by this process since the last
 * kvshm__test_crash_after(). */
long kvshm__test_crashpoints(void);

/* Fault injection: make the n-th following call fail (n >= 1; 0 = off). */
extern long kv__test_fail_ftruncate, kv__test_fail_mmap,
	kv__test_fail_getrandom;
/* Stores created while this is set get the all-zero hash seed (the hash
 * flooding test shows what the random seed prevents). */
extern bool kv__test_zero_seed;
/* Make the next n contended lock waits return -ETIMEDOUT. */
extern long kv__test_lock_timeouts;
/* How long a contended lock wait lasts before -ETIMEDOUT, in ns; 0 = the
 * real 5 s. For the fuzzers, whose garbage lock words look held. */
extern long long kv__test_lock_timeout_ns;

#endif /* KVSHM_TESTING_H */
