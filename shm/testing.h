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
#include <stdint.h>

/* SIGKILL this process at the n-th crash point passed from now on (n >= 1);
 * 0 disarms. Crash points sit before every store to shared memory inside
 * critical sections, in the library's writers, cleaner and repairs. */
void kvshm__test_crash_after(long n);

/* Number of crash points passed by this process since the last
 * kvshm__test_crash_after(). */
long kvshm__test_crashpoints(void);

/* Call fn(n, ctx) at every crash point this process passes (n as counted
 * by kvshm__test_crashpoints(); a point armed to crash kills first); NULL
 * removes it. The interleaving campaign uses it to let a second actor run
 * one operation while the first is stopped at point n. Calls the hook makes
 * into the library pass crash points without calling it again. */
void kvshm__test_hook(void (*fn)(long point, void *ctx), void *ctx);

/* Called in switch_from() (handle.c) while the handle's switch_lock is
 * held, if set: the fork tests hold the lock there while another thread
 * forks. */
extern void (*kv__test_in_switch)(void);

/* Make the n-th following stripe lock of a resize's undo fail
 * (-ETIMEDOUT), n >= 1; 0 = off. */
extern long kv__test_fail_undo;
/* How long a write waits for a resize that makes no progress, in ns; 0 =
 * the real 30 s. */
extern long long kv__test_move_wait_ns;

/* Fault injection: make the n-th following call fail (n >= 1; 0 = off). */
extern long kv__test_fail_ftruncate, kv__test_fail_mmap,
	kv__test_fail_getrandom, kv__test_fail_fallocate;
/* Stores created while this is set get the all-zero hash seed (the hash
 * flooding test shows what the random seed prevents). */
extern bool kv__test_zero_seed;
/* Make the next n contended lock waits return -ETIMEDOUT. */
extern long kv__test_lock_timeouts;
/* How long a contended lock wait lasts before -ETIMEDOUT, in ns; 0 = the
 * real 5 s. For the fuzzers, whose garbage lock words look held. */
extern long long kv__test_lock_timeout_ns;

/* Lock hold timing, for benchmarks (tests/bench/kvshm-sweep.c): while
 * kv__test_time_holds is set, every hold of a shared lock by this process
 * is timed from acquisition (repair included) to release. One thread only:
 * the totals are plain fields. The cleaner's drain mutex, which only other
 * reclaims ever wait for, is counted apart from the locks that readers,
 * writers and lanes wait for. */
#define KV_HOLD_BUCKETS 40
struct kv__hold_stats {
	uint64_t holds;
	uint64_t max_ns;
	uint64_t over_200us;
	uint64_t log2_ns[KV_HOLD_BUCKETS]; /* [b]: holds in [2^(b-1), 2^b) ns */
	uint64_t drain_holds;
	uint64_t drain_max_ns;
};
extern bool kv__test_time_holds;
extern struct kv__hold_stats kv__test_holds;
void kv__test_hold_reset(void);

#endif /* KVSHM_TESTING_H */
