/* SPDX-License-Identifier: MIT */
/*
 * test_threads.c - many threads sharing ONE handle: exact counters, no torn
 * reads under concurrent overwrites, a random mix of every operation that
 * only ever returns its documented results, and scans that see every key
 * that stays put. Threads never call cmocka: each fills its own result
 * struct, and the main thread asserts after joining. Shared test state is
 * atomic, so the suite is also clean under ThreadSanitizer.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>

#define NTHREADS 4

/* What a thread leaves for the main thread: the first failure and a count. */
struct tresult {
	char fail[256];
	uint64_t count;
};

#define T_FAIL(r, ...)                                                         \
	do {                                                                   \
		if (!(r)->fail[0])                                             \
			snprintf((r)->fail, sizeof((r)->fail), __VA_ARGS__);   \
	} while (0)

struct targ {
	struct kvshm *kv;
	int id;
	int64_t until; /* CLOCK_MONOTONIC ms */
	atomic_bool *stop;
	struct tresult res;
};

/* Run fn on n threads with args[i], join them, and fail on any failure. */
static void run_threads(int n, void *(*fn)(void *), struct targ *args)
{
	pthread_t t[16];

	assert_true(n <= 16);
	for (int i = 0; i < n; i++)
		assert_int_equal(pthread_create(&t[i], NULL, fn, &args[i]), 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	for (int i = 0; i < n; i++)
		if (args[i].res.fail[0])
			fail_msg("thread %d: %s", i, args[i].res.fail);
}

static void init_args(struct targ *args, int n, struct kvshm *kv,
		      int64_t run_ms, atomic_bool *stop)
{
	memset(args, 0, sizeof(*args) * (size_t)n);
	for (int i = 0; i < n; i++) {
		args[i].kv = kv;
		args[i].id = i;
		args[i].until = tu_mono_ms() + run_ms;
		args[i].stop = stop;
	}
}

static int64_t counter_of(struct kvshm *kv, const char *k)
{
	int64_t v = -1;

	assert_ok(kvshm_counter(kv, KS(k), &v));
	return v;
}

/* ---- counters --------------------------------------------------------- */

static void *incr_thread(void *p)
{
	struct targ *a = p;
	char own[32], k[32];
	int rc;

	snprintf(own, sizeof(own), "own-%d", a->id);
	for (int i = 0; i < 10000; i++) {
		if ((rc = kvshm_incr(a->kv, KS("shared"), 1, 0, NULL)) != 0 ||
		    (rc = kvshm_incr(a->kv, KS(own), 1, 0, NULL)) != 0) {
			T_FAIL(&a->res, "incr: %s", kvshm_strerror(rc));
			break;
		}
		if (i < 500) { /* racing creations of fresh counters */
			snprintf(k, sizeof(k), "c-%d", i);
			rc = kvshm_incr(a->kv, KS(k), 1, 0, NULL);
			if (rc != 0)
				T_FAIL(&a->res, "incr %s: %s", k, kvshm_strerror(rc));
		}
	}
	return NULL;
}

static void test_threads_sharing_one_handle_count_exactly(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct targ args[NTHREADS];
	char k[32];

	init_args(args, NTHREADS, fx->kv, 0, NULL);
	run_threads(NTHREADS, incr_thread, args);
	assert_int_equal(counter_of(fx->kv, "shared"), NTHREADS * 10000);
	for (int i = 0; i < NTHREADS; i++) {
		snprintf(k, sizeof(k), "own-%d", i);
		assert_int_equal(counter_of(fx->kv, k), 10000);
	}
	for (int i = 0; i < 500; i++) {
		snprintf(k, sizeof(k), "c-%d", i);
		assert_int_equal(counter_of(fx->kv, k), NTHREADS);
	}
	tu_check(fx->kv);
}

/* ---- torn reads ------------------------------------------------------- */

#define TORN_KEYS 64

static void torn_key(char *k, size_t len, uint32_t i)
{
	snprintf(k, len, "torn-%02u", (unsigned)i);
}

static void *torn_writer(void *p)
{
	struct targ *a = p;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(a->id + 1), seq = 0;
	uint8_t v[TU_VAL_MAX];
	char k[32];

	while (tu_mono_ms() < a->until && !a->res.fail[0]) {
		const uint32_t key = (uint32_t)(tu_rand(&seed) % TORN_KEYS);
		const size_t len = tu_val_make(v, key, (uint32_t)a->id, ++seq);
		int rc;

		torn_key(k, sizeof(k), key);
		if (seq % 64 == 0) {
			rc = kvshm_delete(a->kv, KS(k));
			if (rc != 0 && rc != -ENOENT)
				T_FAIL(&a->res, "delete: %s", kvshm_strerror(rc));
		} else if ((rc = kvshm_set(a->kv, KS(k), v, len, 0)) != 0) {
			T_FAIL(&a->res, "set: %s", kvshm_strerror(rc));
		}
	}
	a->res.count = seq;
	return NULL;
}

static void *torn_reader(void *p)
{
	struct targ *a = p;
	uint64_t seed = 0x2545f4914f6cdd1dull * (uint64_t)(a->id + 1);
	uint64_t last[2][TORN_KEYS] = { { 0 } };
	uint8_t v[TU_VAL_MAX];
	char k[32];

	while (tu_mono_ms() < a->until && !a->res.fail[0]) {
		const uint32_t key = (uint32_t)(tu_rand(&seed) % TORN_KEYS);
		struct kvshm_item it = { 0 };
		struct tu_val_hdr h = { 0 };
		const char *why;
		size_t len = 0;
		int rc;

		torn_key(k, sizeof(k), key);
		if (a->res.count % 2) {
			rc = kvshm_get_ex(a->kv, KS(k), v, sizeof(v), &it, 0);
			len = it.value_len;
		} else {
			rc = kvshm_get(a->kv, KS(k), v, sizeof(v), &len);
		}
		if (rc == -ENOENT)
			continue;
		if (rc != 0) {
			T_FAIL(&a->res, "get %s: %s", k, kvshm_strerror(rc));
			break;
		}
		why = tu_val_verify(v, len, key, &h);
		if (why)
			T_FAIL(&a->res, "%s: torn value (%s), %zu bytes", k, why, len);
		else if (h.writer >= 2)
			T_FAIL(&a->res, "%s: writer %u", k, (unsigned)h.writer);
		else if (h.seq < last[h.writer][key])
			T_FAIL(&a->res, "%s: seq %" PRIu64 " after %" PRIu64, k,
			       h.seq, last[h.writer][key]);
		else
			last[h.writer][key] = h.seq;
		a->res.count++;
	}
	return NULL;
}

static void *torn_role(void *p)
{
	const struct targ *a = p;

	return a->id < 2 ? torn_writer(p) : torn_reader(p);
}

static void test_threads_never_see_torn_values(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct targ args[4];

	init_args(args, 4, fx->kv, 1000, NULL);
	run_threads(4, torn_role, args);
	print_message("writes %" PRIu64 " + %" PRIu64 ", verified reads %" PRIu64
		      " + %" PRIu64 "\n", args[0].res.count, args[1].res.count,
		      args[2].res.count, args[3].res.count);
	for (int i = 0; i < 4; i++)
		assert_true(args[i].res.count > 100);
	tu_check(fx->kv);
}

/* ---- a random mix of everything --------------------------------------- */

#define MIX_KEYS 1024

/* True if rc is 0 or one of the two expected codes. */
static bool rc_in(int rc, int a, int b)
{
	return rc == 0 || rc == a || rc == b;
}

static int mix_scan_fn(const void *key, size_t klen,
		       const struct kvshm_item *it, void *ctx)
{
	struct targ *a = ctx;
	char buf[TU_VAL_MAX];
	int rc;

	/* fn may call back into the store */
	rc = kvshm_get(a->kv, key, klen, buf, sizeof(buf), NULL);
	if (!rc_in(rc, -ENOENT, -ENOENT))
		T_FAIL(&a->res, "get in scan: %s", kvshm_strerror(rc));
	if (it->value_len > TU_VAL_MAX)
		T_FAIL(&a->res, "scan: value_len %zu", it->value_len);
	return 0;
}

/* One random operation on a random key; records unexpected results. */
static void mix_op(struct targ *a, uint64_t *seed)
{
	const uint64_t r = tu_rand(seed);
	const uint32_t key = (uint32_t)(r % MIX_KEYS);
	const int op = (int)((r >> 16) % 17);
	struct kvshm_write w = { 0 };
	struct kvshm_item it = { 0 };
	uint8_t v[TU_VAL_MAX], got[TU_VAL_MAX];
	const size_t len = tu_val_make(v, key, (uint32_t)a->id, r >> 24);
	const char *why;
	uint64_t cursor = 0;
	int64_t n;
	size_t swept;
	char k[32];
	int rc = 0;
	bool ok = true;

	snprintf(k, sizeof(k), "mix-%04u", (unsigned)key);
	switch (op) {
	case 0:
	case 1:
		rc = kvshm_set(a->kv, KS(k), v, len, r % 8 == 0 ? 5 : 0);
		ok = rc == 0;
		break;
	case 2:
	case 3:
		w.mode = op == 2 ? KVSHM_ADD : KVSHM_REPLACE;
		rc = kvshm_put(a->kv, KS(k), v, len, &w, NULL);
		ok = rc_in(rc, op == 2 ? -EEXIST : -ENOENT, -ENOENT);
		break;
	case 4:
	case 5:
		rc = kvshm_get_ex(a->kv, KS(k), got, sizeof(got), &it,
				  op == 5 ? KVSHM_GET_STALE : 0);
		ok = rc_in(rc, -ENOENT, -ENOENT);
		why = rc == 0 && !it.counter ?
			      tu_val_verify(got, it.value_len, key, NULL) : NULL;
		if (why)
			T_FAIL(&a->res, "%s: %s, %zu bytes", k, why, it.value_len);
		if (rc == 0 && it.counter && it.value_len != 8)
			T_FAIL(&a->res, "%s: counter of %zu bytes", k, it.value_len);
		if (rc == 0 && op == 5 && !it.stale && it.ttl_ms == 0)
			T_FAIL(&a->res, "%s: live item with ttl 0", k);
		if (ok && rc == 0 && op == 4) { /* write back what we read */
			w.mode = KVSHM_CAS;
			w.cas = it.cas;
			rc = kvshm_put(a->kv, KS(k), v, len, &w, NULL);
			ok = rc_in(rc, -ESTALE, -ENOENT);
		}
		break;
	case 6:
		rc = kvshm_exists(a->kv, KS(k));
		ok = rc == 0 || rc == 1;
		break;
	case 7:
		rc = kvshm_delete(a->kv, KS(k));
		ok = rc_in(rc, -ENOENT, -ENOENT);
		break;
	case 8:
		rc = kvshm_delete_cas(a->kv, KS(k), r | 1);
		ok = rc_in(rc, -ESTALE, -ENOENT);
		break;
	case 9:
		rc = kvshm_ttl(a->kv, KS(k), &n);
		ok = rc_in(rc, -ENOENT, -ENOENT) && (rc || n == -1 || n > 0);
		break;
	case 10:
		rc = kvshm_expire(a->kv, KS(k), r % 2 ? 10 : KVSHM_TTL_NEVER);
		ok = rc_in(rc, -ENOENT, -ENOENT);
		break;
	case 11:
	case 12:
		rc = kvshm_incr(a->kv, KS(k), 1, 0, NULL);
		ok = rc_in(rc, -ENOMSG, -ENOMSG);
		break;
	case 13:
		rc = kvshm_counter(a->kv, KS(k), &n);
		ok = rc_in(rc, -ENOENT, -ENOMSG);
		break;
	case 14:
		do {
			rc = kvshm_scan(a->kv, KS("mix-0"), &cursor, 16,
					mix_scan_fn, a);
		} while (rc >= 0 && cursor != 0);
		ok = rc >= 0;
		break;
	case 15:
		rc = kvshm_sweep(a->kv, 32, &swept);
		ok = rc == 0 && swept <= 32;
		break;
	case 16:
		if (r % 500 == 0)
			rc = kvshm_clear(a->kv);
		break;
	}
	if (!ok)
		T_FAIL(&a->res, "op %d on %s: %d (%s)", op, k, rc,
		       kvshm_strerror(rc));
}

static void *mix_thread(void *p)
{
	struct targ *a = p;
	uint64_t seed = 0x853c49e6748fea9bull * (uint64_t)(a->id + 7);

	while (tu_mono_ms() < a->until && !a->res.fail[0]) {
		mix_op(a, &seed);
		a->res.count++;
	}
	return NULL;
}

static void test_mixed_operations_from_threads_leave_a_consistent_store(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct targ args[NTHREADS];
	struct kvshm_stats st;
	uint64_t ops = 0;

	init_args(args, NTHREADS, kv, 1500, NULL);
	run_threads(NTHREADS, mix_thread, args);
	for (int i = 0; i < NTHREADS; i++)
		ops += args[i].res.count;
	assert_ok(kvshm_stats(kv, &st));
	print_message("%" PRIu64 " operations; %" PRIu64 " evictions, %" PRIu64
		      " expired, %" PRIu64 " clears, %" PRIu64 " items\n", ops,
		      st.evictions, st.expired, st.clears, st.items);
	assert_true(ops > 1000);
	tu_check(kv);
}

/* ---- scans under churn ------------------------------------------------ */

#define STABLE 200

static void *churn_thread(void *p)
{
	struct targ *a = p;
	uint64_t seed = 0x5851f42d4c957f2dull * (uint64_t)(a->id + 3);
	char k[32];

	while (!atomic_load_explicit(a->stop, memory_order_relaxed)) {
		const uint64_t r = tu_rand(&seed);
		int rc;

		snprintf(k, sizeof(k), "churn-%u", (unsigned)(r % 2000));
		if (r & (1ull << 40)) {
			rc = kvshm_set(a->kv, KS(k), KS("churning value"), 0);
			if (rc != 0)
				T_FAIL(&a->res, "set: %s", kvshm_strerror(rc));
		} else {
			rc = kvshm_delete(a->kv, KS(k));
			if (rc != 0 && rc != -ENOENT)
				T_FAIL(&a->res, "delete: %s", kvshm_strerror(rc));
		}
		a->res.count++;
	}
	return NULL;
}

struct seen {
	unsigned char hit[STABLE];
};

static int stable_fn(const void *key, size_t klen,
		     const struct kvshm_item *it, void *ctx)
{
	struct seen *s = ctx;
	char k[32];
	int i;

	(void)it;
	if (klen >= sizeof(k))
		return -EINVAL;
	memcpy(k, key, klen);
	k[klen] = 0;
	if (sscanf(k, "stable-%d", &i) == 1 && i >= 0 && i < STABLE)
		s->hit[i] = 1;
	return 0;
}

static void *scan_thread(void *p)
{
	struct targ *a = p;
	int scans = 0;

	while (tu_mono_ms() < a->until && !a->res.fail[0]) {
		struct seen s = { { 0 } };
		uint64_t cursor = 0;
		int rc;

		do {
			rc = kvshm_scan(a->kv, NULL, 0, &cursor, 10, stable_fn, &s);
		} while (rc >= 0 && cursor != 0);
		if (rc < 0)
			T_FAIL(&a->res, "scan: %s", kvshm_strerror(rc));
		for (int i = 0; i < STABLE; i++)
			if (!s.hit[i])
				T_FAIL(&a->res, "scan %d missed stable-%d", scans, i);
		scans++;
	}
	a->res.count = (uint64_t)scans;
	atomic_store_explicit(a->stop, true, memory_order_relaxed);
	return NULL;
}

static void *stable_role(void *p)
{
	const struct targ *a = p;

	return a->id == 0 ? scan_thread(p) : churn_thread(p);
}

static void test_scans_under_churn_visit_every_key_present_throughout(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct targ args[3];
	atomic_bool stop = false;
	char k[32];

	for (int i = 0; i < STABLE; i++) {
		snprintf(k, sizeof(k), "stable-%d", i);
		assert_ok(kvshm_set(fx->kv, KS(k), KS("stays"), 0));
	}
	init_args(args, 3, fx->kv, 1000, &stop);
	run_threads(3, stable_role, args);
	print_message("%" PRIu64 " full scans against %" PRIu64 " + %" PRIu64
		      " churning writes\n", args[0].res.count,
		      args[1].res.count, args[2].res.count);
	assert_true(args[0].res.count > 0);
	tu_check(fx->kv);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_store, tu_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_threads_sharing_one_handle_count_exactly),
		T(test_threads_never_see_torn_values),
		T(test_mixed_operations_from_threads_leave_a_consistent_store),
		T(test_scans_under_churn_visit_every_key_present_throughout),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
