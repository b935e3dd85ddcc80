/* SPDX-License-Identifier: MIT */
/*
 * test_multiproc.c - several processes on one store: handles inherited
 * across fork(), exact counters, racing creators, ADD as a lock, and
 * readers that must never see a torn value while other processes write;
 * a fork()ed child inherits no lock and no role (issue 13 item 7).
 * Children report failure through their exit status; the parent asserts.
 */
#include "testutil.h"

#include "internal.h"
#include "testing.h"

#include <pthread.h>
#include <sched.h>

#define NKIDS 4
#define RACE_ROUNDS 200 /* fresh stores raced for per test: the window is small */

static int64_t counter_of(struct kvshm *kv, const char *k)
{
	int64_t v = -1;

	assert_ok(kvshm_counter(kv, KS(k), &v));
	return v;
}

/* Poll until counter k reaches want (or 10 s pass); true if it did. */
static bool child_wait_counter(struct kvshm *kv, const char *k, int64_t want)
{
	const int64_t end = tu_mono_ms() + 10000;
	int64_t v = 0;

	while (tu_mono_ms() < end) {
		const int rc = kvshm_counter(kv, KS(k), &v);

		CHILD_ASSERT(rc == 0 || rc == -ENOENT);
		if (v >= want)
			return v == want;
		tu_sleep_ms(1);
	}
	return false;
}

/* ---- handles across fork ---------------------------------------------- */

struct inherit_arg {
	struct kvshm *kv;
	int id;
};

static void inherit_child(void *p)
{
	const struct inherit_arg *a = p;
	char buf[32], k[32];
	size_t len = 0;

	CHILD_ASSERT_RC(kvshm_get(a->kv, KS("parent"), buf, sizeof(buf), &len), 0);
	CHILD_ASSERT(len == 5 && memcmp(buf, "hello", 5) == 0);
	snprintf(k, sizeof(k), "child-%d", a->id);
	CHILD_ASSERT_RC(kvshm_set(a->kv, KS(k), KS("was here"), 0), 0);
	CHILD_ASSERT_RC(kvshm_incr(a->kv, KS("children"), 1, 0, NULL), 0);
	CHILD_ASSERT_RC(kvshm_check(a->kv, NULL, 0), 0);
}

static void test_handle_opened_before_fork_works_in_children(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct inherit_arg a = { fx->kv, 0 };
	pid_t pids[NKIDS];
	char buf[32], k[32];

	assert_ok(kvshm_set(fx->kv, KS("parent"), KS("hello"), 0));
	for (int i = 0; i < NKIDS; i++) {
		a.id = i;
		pids[i] = tu_spawn(fx, inherit_child, &a);
	}
	for (int i = 0; i < NKIDS; i++)
		tu_reap(fx, pids[i]);
	assert_int_equal(counter_of(fx->kv, "children"), NKIDS);
	for (int i = 0; i < NKIDS; i++) {
		snprintf(k, sizeof(k), "child-%d", i);
		assert_ok(kvshm_get(fx->kv, KS(k), buf, sizeof(buf), NULL));
	}
	/* and the parent's handle still writes after the children exited */
	assert_ok(kvshm_set(fx->kv, KS("parent"), KS("again"), 0));
	tu_check(fx->kv);
}

/* ---- counters --------------------------------------------------------- */

struct incr_arg {
	struct kvshm *kv;    /* inherited handle, or NULL: open name */
	const char *name;
	struct tu_barrier *bar;
	int n;
};

static struct kvshm *child_handle(struct kvshm *inherited, const char *name)
{
	struct kvshm *kv = NULL;

	if (inherited)
		return inherited;
	CHILD_ASSERT_RC(kvshm_open(name, NULL, &kv), 0);
	return kv;
}

static void incr_child(void *p)
{
	const struct incr_arg *a = p;
	struct kvshm *kv = child_handle(a->kv, a->name);

	tu_barrier_wait(a->bar);
	for (int i = 0; i < a->n; i++)
		CHILD_ASSERT_RC(kvshm_incr(kv, KS("counter"), 1, 0, NULL), 0);
	if (kv != a->kv)
		kvshm_close(kv); /* our own handle (valgrind counts it) */
}

static void test_incr_from_4_processes_counts_exactly(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct tu_barrier bar;
	struct incr_arg a = { NULL, fx->name, &bar, 10000 };
	pid_t pids[NKIDS];

	tu_barrier_init(&bar);
	for (int i = 0; i < NKIDS; i++) {
		/* half use the handle inherited from the parent, half their own */
		a.kv = i % 2 ? fx->kv : NULL;
		pids[i] = tu_spawn(fx, incr_child, &a);
	}
	tu_barrier_release(&bar);
	for (int i = 0; i < NKIDS; i++)
		tu_reap(fx, pids[i]);
	assert_int_equal(counter_of(fx->kv, "counter"), NKIDS * 10000);
	tu_check(fx->kv);
}

static void create_incr_child(void *p)
{
	const struct incr_arg *a = p;
	char k[32];

	tu_barrier_wait(a->bar);
	for (int i = 0; i < a->n; i++) {
		snprintf(k, sizeof(k), "c-%d", i);
		CHILD_ASSERT_RC(kvshm_incr(a->kv, KS(k), 1, 0, NULL), 0);
	}
}

static void test_counters_created_concurrently_by_processes_count_exactly(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct tu_barrier bar;
	struct incr_arg a = { fx->kv, NULL, &bar, 500 };
	pid_t pids[NKIDS];
	char k[32];

	tu_barrier_init(&bar);
	for (int i = 0; i < NKIDS; i++)
		pids[i] = tu_spawn(fx, create_incr_child, &a);
	tu_barrier_release(&bar);
	for (int i = 0; i < NKIDS; i++)
		tu_reap(fx, pids[i]);
	for (int i = 0; i < a.n; i++) {
		snprintf(k, sizeof(k), "c-%d", i);
		if (counter_of(fx->kv, k) != NKIDS)
			fail_msg("%s = %" PRId64 ", expected %d", k,
				 counter_of(fx->kv, k), NKIDS);
	}
	assert_int_equal(tu_items(fx->kv), (uint64_t)a.n);
	tu_check(fx->kv);
}

/* ---- disjoint writers ------------------------------------------------- */

struct writer_arg {
	struct kvshm *kv;
	int id, n;
};

static void disjoint_child(void *p)
{
	const struct writer_arg *a = p;
	uint8_t v[TU_VAL_MAX];
	char k[32];

	for (int i = 0; i < a->n; i++) {
		const size_t len = tu_val_make(v, (uint32_t)i, (uint32_t)a->id, 1);

		snprintf(k, sizeof(k), "w%d-%05d", a->id, i);
		CHILD_ASSERT_RC(kvshm_set(a->kv, KS(k), v, len % 200 + 24, 0), 0);
	}
}

static void test_keys_written_by_children_are_all_visible_to_the_parent(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct writer_arg a = { fx->kv, 0, 2000 };
	uint8_t v[TU_VAL_MAX], got[TU_VAL_MAX];
	pid_t pids[NKIDS];
	char k[32];
	size_t len;

	for (int i = 0; i < NKIDS; i++) {
		a.id = i;
		pids[i] = tu_spawn(fx, disjoint_child, &a);
	}
	for (int i = 0; i < NKIDS; i++)
		tu_reap(fx, pids[i]);
	for (int c = 0; c < NKIDS; c++) {
		for (int i = 0; i < a.n; i++) {
			const size_t want = tu_val_make(v, (uint32_t)i, (uint32_t)c, 1) % 200 + 24;

			snprintf(k, sizeof(k), "w%d-%05d", c, i);
			assert_ok(kvshm_get(fx->kv, KS(k), got, sizeof(got), &len));
			assert_int_equal(len, want);
			assert_memory_equal(got, v, want);
		}
	}
	assert_int_equal(tu_items(fx->kv), (uint64_t)NKIDS * a.n);
	tu_check(fx->kv);
}

/* ---- racing creators -------------------------------------------------- */

struct creator_arg {
	const char *name;
	struct tu_barrier *bar;
	uint32_t flags;
	int id, n;
};

static void creator_child(void *p)
{
	const struct creator_arg *a = p;
	struct kvshm_options o = tu_opts(a->flags, 4 * TU_MIB);
	struct kvshm *kv = NULL;
	char k[32], buf[8];

	tu_barrier_wait(a->bar);
	CHILD_ASSERT_RC(kvshm_open(a->name, &o, &kv), 0);
	snprintf(k, sizeof(k), "child-%d", a->id);
	CHILD_ASSERT_RC(kvshm_set(kv, KS(k), KS("x"), 0), 0);
	CHILD_ASSERT_RC(kvshm_incr(kv, KS("joined"), 1, 0, NULL), 0);
	/* everyone joined the same store, so everyone's key is here */
	CHILD_ASSERT(child_wait_counter(kv, "joined", a->n));
	for (int i = 0; i < a->n; i++) {
		snprintf(k, sizeof(k), "child-%d", i);
		CHILD_ASSERT_RC(kvshm_get(kv, KS(k), buf, sizeof(buf), NULL), 0);
	}
	CHILD_ASSERT_RC(kvshm_check(kv, NULL, 0), 0);
	kvshm_close(kv);
}

static void test_racing_creators_all_attach_to_one_store(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	pid_t pids[8];

	for (int round = 0; round < RACE_ROUNDS; round++) {
		struct tu_barrier bar;
		struct creator_arg a = { tu_new_name(fx, "race"), &bar,
					 KVSHM_CREATE, 0, 8 };

		tu_barrier_init(&bar);
		for (int i = 0; i < 8; i++) {
			a.id = i;
			pids[i] = tu_spawn(fx, creator_child, &a);
		}
		tu_barrier_release(&bar);
		for (int i = 0; i < 8; i++)
			tu_reap(fx, pids[i]);
		struct kvshm *kv = tu_open(fx, a.name, NULL);
		assert_int_equal(counter_of(kv, "joined"), 8);
		assert_int_equal(tu_items(kv), 9);
		tu_check(kv);
		tu_close(fx, kv);
	}
}

static void excl_child(void *p)
{
	const struct creator_arg *a = p;
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, 4 * TU_MIB);
	struct kvshm *kv = NULL;
	int rc;

	tu_barrier_wait(a->bar);
	rc = kvshm_open(a->name, &o, &kv);
	if (rc == -EEXIST)
		_exit(10);
	CHILD_ASSERT_RC(rc, 0);
	CHILD_ASSERT_RC(kvshm_set(kv, KS("winner"), &a->id, sizeof(a->id), 0), 0);
	_exit(0);
}

static void test_racing_exclusive_creators_have_exactly_one_winner(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	pid_t pids[8];

	for (int round = 0; round < RACE_ROUNDS; round++) {
		struct tu_barrier bar;
		struct creator_arg a = { tu_new_name(fx, "excl"), &bar, 0, 0, 8 };
		int winners = 0, winner = -1, stored = -2;

		tu_barrier_init(&bar);
		for (int i = 0; i < 8; i++) {
			a.id = i;
			pids[i] = tu_spawn(fx, excl_child, &a);
		}
		tu_barrier_release(&bar);
		for (int i = 0; i < 8; i++) {
			const int st = tu_wait(fx, pids[i]);

			assert_true(WIFEXITED(st));
			if (WEXITSTATUS(st) == 0) {
				winners++;
				winner = i;
			} else if (WEXITSTATUS(st) != 10) {
				fail_msg("creator %d exited with %d", i,
					 WEXITSTATUS(st));
			}
		}
		assert_int_equal(winners, 1);
		struct kvshm *kv = tu_open(fx, a.name, NULL);
		assert_ok(kvshm_get(kv, KS("winner"), &stored, sizeof(stored), NULL));
		assert_int_equal(stored, winner);
		tu_close(fx, kv);
	}
}

/* ---- ADD as a lock ---------------------------------------------------- */

struct lock_arg {
	struct kvshm *kv;
	struct tu_barrier *bar;
	int id, n, rounds;
};

static void lock_child(void *p)
{
	const struct lock_arg *a = p;
	const struct kvshm_write add = { .mode = KVSHM_ADD };
	char k[32];

	tu_barrier_wait(a->bar);
	for (int r = 0; r < a->rounds; r++) {
		int64_t arrived = 0;
		int rc;

		/* everyone reaches round r before anyone tries its lock */
		snprintf(k, sizeof(k), "arrive-%d", r);
		CHILD_ASSERT_RC(kvshm_incr(a->kv, KS(k), 1, 0, NULL), 0);
		const int64_t end = tu_mono_ms() + 10000;
		while (kvshm_counter(a->kv, KS(k), &arrived) == 0 &&
		       arrived < a->n && tu_mono_ms() < end)
			sched_yield();
		CHILD_ASSERT(arrived == a->n); /* else an increment was lost */
		snprintf(k, sizeof(k), "lock-%d", r);
		rc = kvshm_put(a->kv, KS(k), &a->id, sizeof(a->id), &add, NULL);
		CHILD_ASSERT(rc == 0 || rc == -EEXIST);
		if (rc == 0) {
			snprintf(k, sizeof(k), "won-%d", r);
			CHILD_ASSERT_RC(kvshm_incr(a->kv, KS(k), 1, 0, NULL), 0);
		}
	}
}

static void test_add_as_a_lock_has_exactly_one_winner_per_round(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct tu_barrier bar;
	struct lock_arg a = { fx->kv, &bar, 0, 6, 200 };
	pid_t pids[6];
	int spread[6] = { 0 };
	char k[32];

	tu_barrier_init(&bar);
	for (int i = 0; i < 6; i++) {
		a.id = i;
		pids[i] = tu_spawn(fx, lock_child, &a);
	}
	tu_barrier_release(&bar);
	for (int i = 0; i < 6; i++)
		tu_reap(fx, pids[i]);
	for (int r = 0; r < a.rounds; r++) {
		int owner = -1;

		snprintf(k, sizeof(k), "won-%d", r);
		if (counter_of(fx->kv, k) != 1)
			fail_msg("round %d had %" PRId64 " winners", r,
				 counter_of(fx->kv, k));
		snprintf(k, sizeof(k), "lock-%d", r);
		assert_ok(kvshm_get(fx->kv, KS(k), &owner, sizeof(owner), NULL));
		assert_true(owner >= 0 && owner < 6);
		spread[owner]++;
	}
	print_message("rounds won per process: %d %d %d %d %d %d\n", spread[0],
		      spread[1], spread[2], spread[3], spread[4], spread[5]);
	tu_check(fx->kv);
}

/* ---- torn reads ------------------------------------------------------- */

#define TORN_KEYS 64

struct torn_arg {
	const char *name;
	int id;
	int64_t until; /* CLOCK_MONOTONIC ms */
	uint64_t *result; /* shared: reads verified, or writes done */
};

static void torn_key(char *k, size_t len, uint32_t i)
{
	snprintf(k, len, "torn-%02u", (unsigned)i);
}

static void torn_writer(void *p)
{
	const struct torn_arg *a = p;
	struct kvshm *kv = child_handle(NULL, a->name);
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(a->id + 1), seq = 0;
	uint8_t v[TU_VAL_MAX];
	char k[32];

	while (tu_mono_ms() < a->until) {
		const uint32_t key = (uint32_t)(tu_rand(&seed) % TORN_KEYS);
		const size_t len = tu_val_make(v, key, (uint32_t)a->id, ++seq);
		int rc;

		torn_key(k, sizeof(k), key);
		if (seq % 64 == 0) {
			rc = kvshm_delete(kv, KS(k));
			CHILD_ASSERT(rc == 0 || rc == -ENOENT);
		} else {
			CHILD_ASSERT_RC(kvshm_set(kv, KS(k), v, len, 0), 0);
		}
	}
	a->result[a->id] = seq;
	kvshm_close(kv);
}

static void torn_reader(void *p)
{
	const struct torn_arg *a = p;
	struct kvshm *kv = child_handle(NULL, a->name);
	uint64_t seed = 0x2545f4914f6cdd1dull * (uint64_t)(a->id + 1), ok = 0;
	uint64_t last[2][TORN_KEYS] = { { 0 } };
	uint8_t v[TU_VAL_MAX];
	char k[32];

	while (tu_mono_ms() < a->until) {
		const uint32_t key = (uint32_t)(tu_rand(&seed) % TORN_KEYS);
		struct kvshm_item it = { 0 };
		struct tu_val_hdr h = { 0 };
		const char *why;
		size_t len = 0;
		int rc;

		torn_key(k, sizeof(k), key);
		if (ok % 2) {
			rc = kvshm_get_ex(kv, KS(k), v, sizeof(v), &it, 0);
			len = it.value_len;
		} else {
			rc = kvshm_get(kv, KS(k), v, sizeof(v), &len);
		}
		if (rc == -ENOENT)
			continue;
		CHILD_ASSERT_RC(rc, 0);
		why = tu_val_verify(v, len, key, &h);
		if (why) {
			fprintf(stderr, "reader %d: %s: torn value (%s), %zu bytes\n",
				a->id, k, why, len);
			_exit(1);
		}
		CHILD_ASSERT(h.writer < 2);
		/* a value once seen is never followed by an older one */
		CHILD_ASSERT(h.seq >= last[h.writer][key]);
		last[h.writer][key] = h.seq;
		ok++;
	}
	a->result[a->id] = ok;
	kvshm_close(kv);
}

static void test_readers_never_see_torn_values_written_by_other_processes(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	uint64_t *result = tu_shared(4 * sizeof(uint64_t));
	struct torn_arg a = { fx->name, 0, tu_mono_ms() + 1500, result };
	pid_t pids[4];

	for (int i = 0; i < 2; i++) {
		a.id = i;
		pids[i] = tu_spawn(fx, torn_writer, &a);
	}
	for (int i = 2; i < 4; i++) {
		a.id = i;
		pids[i] = tu_spawn(fx, torn_reader, &a);
	}
	for (int i = 0; i < 4; i++)
		tu_reap(fx, pids[i]);
	print_message("writes %" PRIu64 " + %" PRIu64 ", verified reads %" PRIu64
		      " + %" PRIu64 "\n", result[0], result[1], result[2],
		      result[3]);
	for (int i = 0; i < 4; i++)
		assert_true(result[i] > 100);
	munmap(result, 4 * sizeof(uint64_t));
	tu_check(fx->kv);
}

/* ---- clear and a full store across processes -------------------------- */

static void clear_child(void *p)
{
	struct kvshm *kv = p;

	CHILD_ASSERT_RC(kvshm_clear(kv), 0);
}

static void cleared_child(void *p)
{
	struct kvshm *kv = p;
	char k[32];

	for (int i = 0; i < 100; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		CHILD_ASSERT_RC(kvshm_exists(kv, KS(k)), 0);
	}
}

static void test_clear_in_one_process_is_seen_by_all_others(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *own = tu_open(fx, fx->name, NULL);
	char k[32];

	for (int i = 0; i < 100; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		assert_ok(kvshm_set(fx->kv, KS(k), KS("v"), 0));
	}
	tu_reap(fx, tu_spawn(fx, clear_child, own));
	for (int i = 0; i < 100; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		assert_kv(kvshm_exists(fx->kv, KS(k)), 0);
	}
	tu_reap(fx, tu_spawn(fx, cleared_child, fx->kv));
	tu_check(fx->kv);
}

static void full_child(void *p)
{
	const struct writer_arg *a = p;
	uint8_t v[TU_VAL_MAX];
	char k[32];

	for (int i = 0; i < a->n; i++) {
		const uint32_t key = (uint32_t)(a->id * 100000 + i);
		const size_t len = tu_val_make(v, key, (uint32_t)a->id, 1);

		snprintf(k, sizeof(k), "f%u", (unsigned)key);
		CHILD_ASSERT_RC(kvshm_set(a->kv, KS(k), v, len, 0), 0);
	}
}

static void test_writers_in_many_processes_on_a_full_store_keep_succeeding(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct writer_arg a = { kv, 0, 3000 };
	uint8_t v[TU_VAL_MAX];
	pid_t pids[NKIDS];
	struct kvshm_stats st;
	int present = 0;
	char k[32];

	for (int i = 0; i < NKIDS; i++) {
		a.id = i;
		pids[i] = tu_spawn(fx, full_child, &a);
	}
	for (int i = 0; i < NKIDS; i++)
		tu_reap(fx, pids[i]);
	for (int c = 0; c < NKIDS; c++) {
		for (int i = 0; i < a.n; i++) {
			const uint32_t key = (uint32_t)(c * 100000 + i);
			size_t len = 0;
			const char *why;

			snprintf(k, sizeof(k), "f%u", (unsigned)key);
			if (kvshm_get(kv, KS(k), v, sizeof(v), &len) != 0)
				continue;
			present++;
			why = tu_val_verify(v, len, key, NULL);
			if (why)
				fail_msg("%s: %s", k, why);
		}
	}
	assert_ok(kvshm_stats(kv, &st));
	print_message("%d of %d values present, %" PRIu64 " evictions\n",
		      present, NKIDS * a.n, st.evictions);
	assert_true(st.evictions > 0);
	assert_true(present > 0);
	assert_int_equal(st.items, (uint64_t)present);
	tu_check(kv);
}


/* ---- what a child must not inherit (issue 13 item 7) -------------------- */

/* Poll a flag another process sets (10 s at most). */
static bool wait_flag(_Atomic int *flag)
{
	const int64_t end = tu_mono_ms() + 10000;

	while (!atomic_load(flag))
		if (tu_mono_ms() >= end)
			return false;
		else
			tu_sleep_ms(1);
	return true;
}

struct heir {
	const char *name;
	_Atomic int child_pid;
	_Atomic int child_done;      /* the grandchild tried the role */
	_Atomic int child_heartbeat; /* its kvshm_janitor_heartbeat() */
	_Atomic int child_release;   /* its kvshm_janitor_release() */
	_Atomic int parent_ready;    /* the parent checked it still holds it */
	_Atomic int parent_go;       /* the test lets the parent exit */
	_Atomic int in_resize;       /* the resizing thread is paused */
};

/* The grandchild: try what only the janitor may do, then live on (until
 * the test kills it) holding its copies of the parent's descriptors. */
static void heir_lives_on(struct heir *a, struct kvshm *kv)
{
	alarm(30); /* pending alarms are not inherited: never linger */
	if (kv) {
		atomic_store(&a->child_heartbeat, kvshm_janitor_heartbeat(kv));
		atomic_store(&a->child_release, kvshm_janitor_release(kv));
	}
	atomic_store(&a->child_pid, (int)getpid());
	atomic_store(&a->child_done, 1);
	for (;;)
		pause();
}

/* Child: claim the janitor role, fork a worker, check the role is still
 * ours after the worker tried to use and release it, then die. */
static void janitor_then_fork(void *p)
{
	struct heir *a = p;
	struct kvshm *kv = NULL;
	pid_t pid;

	CHILD_ASSERT_RC(kvshm_open(a->name, NULL, &kv), 0);
	CHILD_ASSERT_RC(kvshm_janitor_claim(kv), 0);
	pid = fork();
	CHILD_ASSERT(pid >= 0);
	if (pid == 0)
		heir_lives_on(a, kv);
	CHILD_ASSERT(wait_flag(&a->child_done));
	CHILD_ASSERT_RC(kvshm_janitor_heartbeat(kv), 0);
	atomic_store(&a->parent_ready, 1);
	CHILD_ASSERT(wait_flag(&a->parent_go));
	_exit(0); /* the janitor dies; its worker lives on */
}

static void test_janitor_role_dies_with_the_janitor_not_with_its_forked_child(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct heir *a = tu_shared(sizeof(*a));
	struct kvshm_stats st;
	pid_t janitor;

	a->name = fx->name;
	janitor = tu_spawn(fx, janitor_then_fork, a);
	assert_true(wait_flag(&a->parent_ready));
	/* the child's release did not take the role from its live parent */
	assert_kv(kvshm_janitor_claim(fx->kv), -EBUSY);
	atomic_store(&a->parent_go, 1);
	tu_reap(fx, janitor);
	assert_ok(kvshm_stats(fx->kv, &st));
	assert_int_equal(st.janitor_alive, 0);
	assert_ok(kvshm_janitor_claim(fx->kv)); /* while the child lives */
	assert_kv(atomic_load(&a->child_heartbeat), -EPERM);
	assert_kv(atomic_load(&a->child_release), -EPERM);
	kill(atomic_load(&a->child_pid), SIGKILL);
	assert_ok(kvshm_janitor_release(fx->kv));
}

/* The resizing thread stops at the first crash point of the resize, the
 * resize lock held, and stays there until its process dies. */
static void pause_resize(long point, void *ctx)
{
	struct heir *a = ctx;

	(void)point;
	atomic_store(&a->in_resize, 1);
	for (;;)
		pause();
}

static void *resize_thread(void *p)
{
	struct heir *a = p;
	struct kvshm_options big = tu_opts(0, 8 * TU_MIB);

	kvshm_resize(a->name, &big);
	return NULL;
}

/* Child: start a resize in a thread, fork a worker while the thread holds
 * the resize lock, then die. */
static void resizer_then_fork(void *p)
{
	struct heir *a = p;
	pthread_t t;
	pid_t pid;

	kvshm__test_hook(pause_resize, a);
	CHILD_ASSERT(pthread_create(&t, NULL, resize_thread, a) == 0);
	CHILD_ASSERT(wait_flag(&a->in_resize));
	pid = fork();
	CHILD_ASSERT(pid >= 0);
	if (pid == 0)
		heir_lives_on(a, NULL);
	CHILD_ASSERT(wait_flag(&a->child_done));
	_exit(0); /* the resizer dies in the middle; its worker lives on */
}

static void test_resize_lock_dies_with_the_resizer_not_with_its_forked_child(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct heir *a = tu_shared(sizeof(*a));
	struct kvshm_options big = tu_opts(0, 8 * TU_MIB);
	struct kvshm_stats st;
	char buf[8];

	a->name = fx->name;
	assert_ok(kvshm_set(fx->kv, KS("k"), KS("v"), 0));
	tu_reap(fx, tu_spawn(fx, resizer_then_fork, a));
	assert_false(kv__ofd_held(kv__cur(fx->kv), KV_RESIZE_LOCK_BYTE));
	assert_ok(kvshm_resize(fx->name, &big)); /* while the child lives */
	assert_ok(kvshm_get(fx->kv, KS("k"), buf, sizeof(buf), NULL));
	assert_ok(kvshm_stats(fx->kv, &st));
	assert_int_equal(st.arena_bytes, 8 * TU_MIB);
	kill(atomic_load(&a->child_pid), SIGKILL);
	tu_check(fx->kv);
}

struct switcher {
	struct kvshm *kv; /* opened before the resize */
	const char *name;
	_Atomic int in_switch;
	_Atomic int switched;
};
static struct switcher *the_switcher;

/* Hold the handle's switch_lock for a while, as a slow re-attach would. */
static void slow_switch(void)
{
	atomic_store(&the_switcher->in_switch, 1);
	tu_sleep_ms(300);
}

static void *switch_thread(void *p)
{
	struct switcher *s = p;
	char buf[8];

	kvshm_get(s->kv, KS("k"), buf, sizeof(buf), NULL);
	atomic_store(&s->switched, 1);
	return NULL;
}

/* Child: its handle's segment is retired; one thread switches it while
 * another forks. The grandchild must be able to use the handle. */
static void fork_during_switch(void *p)
{
	struct switcher *s = p;
	struct kvshm_options big = tu_opts(0, 8 * TU_MIB);
	char buf[8];
	pthread_t t;
	pid_t pid;
	int status;

	CHILD_ASSERT_RC(kvshm_resize(s->name, &big), 0);
	the_switcher = s;
	kv__test_in_switch = slow_switch;
	CHILD_ASSERT(pthread_create(&t, NULL, switch_thread, s) == 0);
	pthread_detach(t); /* a child never sees it joined (TSan: a leak) */
	CHILD_ASSERT(wait_flag(&s->in_switch));
	pid = fork();
	CHILD_ASSERT(pid >= 0);
	if (pid == 0) {
		kv__test_in_switch = NULL;
		alarm(5); /* a handle locked for ever: SIGALRM, not a hang */
		CHILD_ASSERT_RC(kvshm_get(s->kv, KS("k"), buf, sizeof(buf),
					  NULL), 0);
		CHILD_ASSERT_RC(kvshm_set(s->kv, KS("k2"), KS("w"), 0), 0);
		_exit(0);
	}
	CHILD_ASSERT(waitpid(pid, &status, 0) == pid);
	CHILD_ASSERT(wait_flag(&s->switched));
	if (WIFSIGNALED(status)) {
		fprintf(stderr, "grandchild killed by signal %d (%s)\n",
			WTERMSIG(status),
			WTERMSIG(status) == SIGALRM ? "it hung" : "?");
		_exit(4);
	}
	CHILD_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_fork_while_another_thread_switches_the_handle_leaves_the_child_a_working_handle(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct switcher *s = tu_shared(sizeof(*s));
	char buf[8];

	assert_ok(kvshm_set(fx->kv, KS("k"), KS("v"), 0));
	s->kv = fx->kv;
	s->name = fx->name;
	tu_reap(fx, tu_spawn(fx, fork_during_switch, s));
	assert_ok(kvshm_get(fx->kv, KS("k2"), buf, sizeof(buf), NULL));
	tu_check(fx->kv);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_store, tu_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_handle_opened_before_fork_works_in_children),
		T(test_incr_from_4_processes_counts_exactly),
		T(test_counters_created_concurrently_by_processes_count_exactly),
		T(test_keys_written_by_children_are_all_visible_to_the_parent),
		T(test_racing_creators_all_attach_to_one_store),
		T(test_racing_exclusive_creators_have_exactly_one_winner),
		T(test_add_as_a_lock_has_exactly_one_winner_per_round),
		T(test_readers_never_see_torn_values_written_by_other_processes),
		T(test_clear_in_one_process_is_seen_by_all_others),
		T(test_writers_in_many_processes_on_a_full_store_keep_succeeding),
		T(test_janitor_role_dies_with_the_janitor_not_with_its_forked_child),
		T(test_resize_lock_dies_with_the_resizer_not_with_its_forked_child),
		T(test_fork_while_another_thread_switches_the_handle_leaves_the_child_a_working_handle),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
