/* SPDX-License-Identifier: MIT */
/*
 * lock.c - robust process-shared mutexes: initialisation, timed acquisition,
 * and the one place where a dead owner's lock is taken over (the
 * EOWNERDEAD path). Knows nothing about what the locks protect: each caller
 * passes the repair function for its own critical sections. Writes shared
 * memory only in the mutexes themselves and the lock statistics.
 */
#include "internal.h"
#ifdef KVSHM_TESTING
#include "testing.h"
#endif

#include <time.h>

/* How long one wait may sleep before re-checking the lock word. A timeout
 * recovers from a lost wake-up (kernel/glibc bugs around owner death); the
 * total bound turns a lock held by a live but stuck process into an error. */
#define KV_LOCK_SLICE_NS (100 * 1000 * 1000L)
#define KV_LOCK_TIMEOUT_NS (5 * 1000 * 1000 * 1000LL)

/* Slices are measured on CLOCK_MONOTONIC, which wall-clock jumps cannot
 * stretch. ThreadSanitizer's runtime does not intercept clocklock, so its
 * builds use timedlock (CLOCK_REALTIME) to keep the lock visible to it. */
#if KV_TSAN
#define KV_LOCK_CLOCK CLOCK_REALTIME
#define KV_TIMED_LOCK(m, ts) pthread_mutex_timedlock(m, ts)
#else
#define KV_LOCK_CLOCK CLOCK_MONOTONIC
#define KV_TIMED_LOCK(m, ts) pthread_mutex_clocklock(m, CLOCK_MONOTONIC, ts)
#endif

int kv__mutex_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t attr;
	int rc = pthread_mutexattr_init(&attr);

	if (rc)
		return -rc;
	rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	if (!rc)
		rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	if (!rc)
		rc = pthread_mutex_init(m, &attr);
	pthread_mutexattr_destroy(&attr);
	return -rc;
}

#ifdef KVSHM_TESTING
/* Test builds: make the next n lock waits time out (fault injection). */
long kv__test_lock_timeouts;
/* Test builds: the whole wait, if > 0 (a fuzzer that corrupts lock words
 * would otherwise wait 5 s for each garbage owner). */
long long kv__test_lock_timeout_ns;
#endif

#ifdef KVSHM_TESTING
bool kv__test_time_holds;
struct kv__hold_stats kv__test_holds;
/* The locks this thread holds, with when it took them (nesting is shallow:
 * a stripe inside the cleaner or a lane). */
static _Thread_local struct {
	pthread_mutex_t *m;
	uint64_t since;
	bool drain;
} held[4];

void kv__test_hold_reset(void)
{
	memset(&kv__test_holds, 0, sizeof(kv__test_holds));
	memset(held, 0, sizeof(held));
}

static void hold_begin(pthread_mutex_t *m, kv__repair_fn repair)
{
	if (!kv__test_time_holds)
		return;
	for (unsigned i = 0; i < sizeof(held) / sizeof(held[0]); i++)
		if (!held[i].m) {
			held[i].m = m;
			held[i].since = kv__mono_ns();
			held[i].drain = repair == kv__drain_repair;
			return;
		}
}

static void hold_end(pthread_mutex_t *m)
{
	for (unsigned i = 0; i < sizeof(held) / sizeof(held[0]); i++) {
		if (held[i].m != m)
			continue;
		uint64_t ns = kv__mono_ns() - held[i].since;
		unsigned b = 0;
		held[i].m = NULL;
		if (held[i].drain) {
			kv__test_holds.drain_holds++;
			if (ns > kv__test_holds.drain_max_ns)
				kv__test_holds.drain_max_ns = ns;
			return;
		}
		while (b + 1 < KV_HOLD_BUCKETS && ns >> b)
			b++;
		kv__test_holds.holds++;
		kv__test_holds.log2_ns[b]++;
		kv__test_holds.over_200us += ns > 200 * 1000;
		if (ns > kv__test_holds.max_ns)
			kv__test_holds.max_ns = ns;
		return;
	}
}
#else
#define hold_begin(m, repair) ((void)(repair))
#define hold_end(m) ((void)0)
#endif

static long long lock_wait_ns(void)
{
#ifdef KVSHM_TESTING
	if (kv__test_lock_timeout_ns > 0)
		return kv__test_lock_timeout_ns;
#endif
	return KV_LOCK_TIMEOUT_NS;
}

/*
 * We hold m, but maybe in the state its dead owner left. Repair what that
 * owner was doing, and only when the repair succeeded mark the mutex
 * consistent. A failed repair unlocks without marking it, which makes the
 * mutex ENOTRECOVERABLE for everyone: the stripe is quarantined rather than
 * trusted.
 */
static int kv__acquired(struct kv__seg *kv, pthread_mutex_t *m, int rc,
			kv__repair_fn repair, void *what)
{
	if (KV_LIKELY(rc == 0)) {
		hold_begin(m, repair);
		return 0;
	}
	if (rc == EOWNERDEAD) {
		int err;
		hold_begin(m, repair);
		err = repair ? repair(kv, what) : 0;
		if (err == 0) {
			KV_CRASHPOINT();
			pthread_mutex_consistent(m);
			kv__stat_inc(kv, KV_ST_LOCK_RECOVERIES);
			return 0;
		}
		hold_end(m);
		pthread_mutex_unlock(m);
		return -ENOTRECOVERABLE;
	}
	return -rc;
}

int kv__trylock(struct kv__seg *kv, pthread_mutex_t *m, kv__repair_fn repair,
		void *what)
{
	int rc = pthread_mutex_trylock(m);

	if (rc == EBUSY)
		return -EBUSY;
	return kv__acquired(kv, m, rc, repair, what);
}

int kv__lock(struct kv__seg *kv, pthread_mutex_t *m, kv__repair_fn repair,
	     void *what)
{
	int rc = pthread_mutex_trylock(m);
	long long wait, slice;
	uint64_t deadline;

	if (KV_LIKELY(rc != EBUSY))
		return kv__acquired(kv, m, rc, repair, what);

	kv__stat_inc(kv, KV_ST_LOCK_CONTENDED);
	wait = lock_wait_ns();
	slice = wait < KV_LOCK_SLICE_NS ? wait : KV_LOCK_SLICE_NS;
	deadline = kv__mono_ns() + (uint64_t)wait;
	for (;;) {
		struct timespec ts;
		clock_gettime(KV_LOCK_CLOCK, &ts);
		ts.tv_nsec += slice;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		rc = KV_TIMED_LOCK(m, &ts);
#ifdef KVSHM_TESTING
		if (rc == 0 && kv__test_lock_timeouts > 0) {
			kv__test_lock_timeouts--;
			pthread_mutex_unlock(m);
			return -ETIMEDOUT;
		}
#endif
		if (rc != ETIMEDOUT)
			return kv__acquired(kv, m, rc, repair, what);
		if (kv__mono_ns() >= deadline)
			return -ETIMEDOUT;
	}
}

void kv__unlock(pthread_mutex_t *m)
{
	hold_end(m);
	pthread_mutex_unlock(m);
}
