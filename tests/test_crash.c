/* SPDX-License-Identifier: MIT */
/*
 * test_crash.c - kill -9 at every crash point of a write. For each kind of
 * write a child opens the store, arms kvshm__test_crash_after(n) and
 * performs the one write, for n = 1, 2, ... until the write completes
 * (a disarmed dry run first counts the points; when there are more than
 * CAP, CAP of them spread evenly are tried).
 * After every run the parent, under a watchdog, checks that the key holds
 * its old or its new state, writes the same key (which must recover any
 * lock the child died holding), runs kvshm_check(), and checks that every
 * acknowledged key is intact.
 */
#include "testutil.h"

#include "testing.h"
#include "internal.h" /* kv__roomy_segments: when the janitor compacts */

#define CAP 200
#define TARGET "target"
#define TARGET_ID 7777u
#define NBASE 300

struct scen;

/* One kind of write, as the child does it and as the parent judges it. */
struct scen_ops {
	const char *what;
	bool locked; /* every crash point is under a stripe lock */
	/* parent: (re)establish the precondition, writing the target key */
	void (*prepare)(struct scen *s);
	/* child: the write under test; returns its result */
	int (*op)(struct scen *s, struct kvshm *kv);
	/* parent: the target holds its old or new state (fails otherwise) */
	void (*judge)(struct scen *s);
	/* parent: everything acknowledged is intact */
	void (*acked)(struct scen *s);
	/* parent, optional: prepare again after kvshm_check(), which
	 * changes the precondition (it purges cleared stripes) */
	void (*rearm)(struct scen *s);
};

struct scen {
	const struct scen_ops *ops;
	struct kvshm *kv; /* the parent's handle */
	const char *name;
	int nfill;        /* set-evict: fillers written so far */
	size_t big_len;   /* set-evict: length of the value that must evict */
	uint64_t made_room; /* set-evict: evictions + segments reclaimed */
};

/* What a child that finished its write sends back. */
struct report {
	int rc;
	long points;
};

/* ---- values ----------------------------------------------------------- */

static size_t target_val(uint8_t *buf, bool newer)
{
	return tu_val_make(buf, TARGET_ID, newer, newer ? 2 : 1);
}

static void base_key(char *k, size_t len, const char *pfx, int i)
{
	snprintf(k, len, "%s-%05d", pfx, i);
}

/* Write n keys pfx-i with self-validating values (writer 9). */
static void write_keys(struct kvshm *kv, const char *pfx, int n, uint64_t ttl)
{
	uint8_t v[TU_VAL_MAX];
	char k[32];

	for (int i = 0; i < n; i++) {
		const size_t len = tu_val_make(v, (uint32_t)i, 9, 1);

		base_key(k, sizeof(k), pfx, i);
		assert_ok(kvshm_set(kv, KS(k), v, len, ttl));
	}
}

/* How many of pfx-0..n-1 are present; fails if one present is not intact. */
static int count_intact(struct kvshm *kv, const char *pfx, int n)
{
	uint8_t v[TU_VAL_MAX];
	char k[32];
	int present = 0;

	for (int i = 0; i < n; i++) {
		size_t len = 0;
		const char *why;
		int rc;

		base_key(k, sizeof(k), pfx, i);
		rc = kvshm_get(kv, KS(k), v, sizeof(v), &len);
		if (rc == -ENOENT)
			continue;
		assert_ok(rc);
		why = tu_val_verify(v, len, (uint32_t)i, NULL);
		if (why)
			fail_msg("%s: %s", k, why);
		present++;
	}
	return present;
}

static void base_intact(struct scen *s)
{
	assert_int_equal(count_intact(s->kv, "base", NBASE), NBASE);
}

/* 0 = absent, 1 = old value, 2 = new value; fails on anything else. */
static int target_state(struct kvshm *kv)
{
	uint8_t v[TU_VAL_MAX];
	struct kvshm_item it = { 0 };
	struct tu_val_hdr h = { 0 };
	const char *why;
	int rc;

	rc = kvshm_get_ex(kv, KS(TARGET), v, sizeof(v), &it, 0);
	if (rc == -ENOENT)
		return 0;
	assert_ok(rc);
	assert_false(it.counter);
	why = tu_val_verify(v, it.value_len, TARGET_ID, &h);
	if (why)
		fail_msg("target is neither old nor new: %s", why);
	assert_true(h.writer <= 1 && h.seq == h.writer + 1);
	return h.writer ? 2 : 1;
}

static void set_target_old(struct scen *s)
{
	uint8_t v[TU_VAL_MAX];
	const size_t len = target_val(v, false);

	assert_ok(kvshm_set(s->kv, KS(TARGET), v, len, 0));
}

static void delete_target(struct scen *s)
{
	const int rc = kvshm_delete(s->kv, KS(TARGET));

	if (rc != -ENOENT)
		assert_ok(rc);
}

/* ---- the writes ------------------------------------------------------- */

static int op_set_new(struct scen *s, struct kvshm *kv)
{
	uint8_t v[TU_VAL_MAX];
	const size_t len = target_val(v, true);

	(void)s;
	return kvshm_set(kv, KS(TARGET), v, len, 0);
}

static void judge_old_or_new(struct scen *s)
{
	assert_true(target_state(s->kv) != 0);
}

static void judge_absent_or_new(struct scen *s)
{
	assert_true(target_state(s->kv) != 1);
}

static void judge_old_or_absent(struct scen *s)
{
	assert_true(target_state(s->kv) != 2);
}

static const struct scen_ops set_overwrite = {
	.what = "set overwriting a key",
	.locked = true,
	.prepare = set_target_old,
	.op = op_set_new,
	.judge = judge_old_or_new,
	.acked = base_intact,
};

static const struct scen_ops set_insert = {
	.what = "set of a new key",
	.locked = true,
	.prepare = delete_target,
	.op = op_set_new,
	.judge = judge_absent_or_new,
	.acked = base_intact,
};

static int op_delete(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return kvshm_delete(kv, KS(TARGET));
}

static const struct scen_ops delete_key = {
	.what = "delete",
	.locked = true,
	.prepare = set_target_old,
	.op = op_delete,
	.judge = judge_old_or_absent,
	.acked = base_intact,
};

static int op_incr(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return kvshm_incr(kv, KS(TARGET), 7, 0, NULL);
}

/* The counter is old or new; absent counts as old when old is 0. */
static void judge_counter(struct scen *s, int64_t old, int64_t new)
{
	int64_t v = -1;
	const int rc = kvshm_counter(s->kv, KS(TARGET), &v);

	if (rc == -ENOENT && old == 0)
		return;
	assert_ok(rc);
	if (old == 0)
		old = new; /* a counter that exists must hold the delta */
	if (v != old && v != new)
		fail_msg("counter is %" PRId64 ", neither %" PRId64 " nor %" PRId64,
			 v, old, new);
}

static void judge_incr_create(struct scen *s)
{
	judge_counter(s, 0, 7);
}

static const struct scen_ops incr_create = {
	.what = "incr creating a counter",
	.locked = true,
	.prepare = delete_target,
	.op = op_incr,
	.judge = judge_incr_create,
	.acked = base_intact,
};

static void counter_100(struct scen *s)
{
	delete_target(s);
	assert_ok(kvshm_incr(s->kv, KS(TARGET), 100, 0, NULL));
}

static void judge_incr_existing(struct scen *s)
{
	judge_counter(s, 100, 107);
}

static const struct scen_ops incr_existing = {
	.what = "incr of an existing counter",
	.locked = false,
	.prepare = counter_100,
	.op = op_incr,
	.judge = judge_incr_existing,
	.acked = base_intact,
};

/* clear: all of the keys or none of them, never a mix */
static void write_clear_keys(struct scen *s)
{
	write_keys(s->kv, "base", NBASE, 0);
}

static int op_clear(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return kvshm_clear(kv);
}

static void judge_clear(struct scen *s)
{
	const int n = count_intact(s->kv, "base", NBASE);

	if (n != 0 && n != NBASE)
		fail_msg("a killed clear left %d of %d keys", n, NBASE);
}

static void nothing_more(struct scen *s)
{
	(void)s;
}

static const struct scen_ops clear_all = {
	.what = "clear",
	.locked = false,
	.prepare = write_clear_keys,
	.op = op_clear,
	.judge = judge_clear,
	.acked = nothing_more,
};

/* the first write after a clear empties its stripe lazily */
static void write_then_clear(struct scen *s)
{
	delete_target(s);
	write_keys(s->kv, "base", NBASE, 0);
	assert_ok(kvshm_clear(s->kv));
}

static void judge_cleared_absent_or_new(struct scen *s)
{
	assert_int_equal(count_intact(s->kv, "base", NBASE), 0);
	judge_absent_or_new(s);
}

static const struct scen_ops set_after_clear = {
	.what = "set after a clear",
	.locked = true,
	.prepare = write_then_clear,
	.op = op_set_new,
	.judge = judge_cleared_absent_or_new,
	.acked = nothing_more,
	.rearm = write_then_clear,
};

/* sweep: expired keys go, live ones stay */
static void write_expiring(struct scen *s)
{
	write_keys(s->kv, "exp", 100, 1);
	tu_sleep_ms(3);
}

static int op_sweep(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return kvshm_sweep(kv, 0, NULL);
}

static void judge_sweep(struct scen *s)
{
	assert_int_equal(count_intact(s->kv, "exp", 100), 0);
}

static const struct scen_ops sweep_expired = {
	.what = "sweep",
	.locked = true,
	.prepare = write_expiring,
	.op = op_sweep,
	.judge = judge_sweep,
	.acked = base_intact,
};

/* set that must evict: a full 1 MiB store and a value larger than the
 * largest free block */
static void big_val(uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 131 + len);
}

static void fill_until_full(struct scen *s)
{
	uint8_t v[TU_VAL_MAX];
	struct kvshm_stats st;
	char k[32];

	delete_target(s);
	for (int guard = 0;; guard++) {
		assert_true(guard < 100000);
		assert_ok(kvshm_stats(s->kv, &st));
		if (st.evictions > 0 &&
		    st.largest_free_bytes + 1 <= st.max_value_bytes)
			break;
		const size_t len = tu_val_make(v, (uint32_t)s->nfill, 9, 1);
		base_key(k, sizeof(k), "fill", s->nfill++);
		assert_ok(kvshm_set(s->kv, KS(k), v, len, 0));
	}
	s->big_len = st.largest_free_bytes + 1;
	s->made_room = st.evictions + st.segments_reclaimed;
}

static int op_set_big(struct scen *s, struct kvshm *kv)
{
	uint8_t *v = malloc(s->big_len);
	int rc;

	if (!v)
		return -ENOMEM;
	big_val(v, s->big_len);
	rc = kvshm_set(kv, KS(TARGET), v, s->big_len, 0);
	free(v);
	return rc;
}

static void judge_big(struct scen *s)
{
	uint8_t *v = malloc(s->big_len), *want = malloc(s->big_len);
	size_t len = 0;
	int rc;

	assert_non_null(v);
	assert_non_null(want);
	rc = kvshm_get(s->kv, KS(TARGET), v, s->big_len, &len);
	if (rc != -ENOENT) {
		assert_ok(rc);
		assert_int_equal(len, s->big_len);
		big_val(want, len);
		assert_memory_equal(v, want, len);
	}
	free(v);
	free(want);
}

static void fillers_intact_or_evicted(struct scen *s)
{
	count_intact(s->kv, "fill", s->nfill);
}

static const struct scen_ops set_evict = {
	.what = "set that must evict",
	.locked = true,
	.prepare = fill_until_full,
	.op = op_set_big,
	.judge = judge_big,
	.acked = fillers_intact_or_evicted,
};

/* ---- the campaign ----------------------------------------------------- */

struct child_arg {
	struct scen *s;
	long n; /* crash point to die at; 0 = dry run */
	int fd[2];
};

static void crash_child(void *p)
{
	struct child_arg *a = p;
	struct kvshm *kv = NULL;
	struct report r;

	memset(&r, 0, sizeof(r)); /* padding goes through the pipe too */
	close(a->fd[0]);
	CHILD_ASSERT_RC(kvshm_open(a->s->name, NULL, &kv), 0);
	kvshm__test_crash_after(a->n);
	r.rc = a->s->ops->op(a->s, kv);
	r.points = kvshm__test_crashpoints();
	kvshm__test_crash_after(0);
	CHILD_ASSERT(write(a->fd[1], &r, sizeof(r)) == (ssize_t)sizeof(r));
	_exit(0);
}

/* Run the write in a child armed at n; true if it completed (in *r). */
static bool run_child(struct tu_fx *fx, struct scen *s, long n,
		      struct report *r)
{
	struct child_arg a = { s, n, { -1, -1 } };
	ssize_t got;
	pid_t pid;
	int status;

	assert_int_equal(pipe(a.fd), 0);
	pid = tu_spawn(fx, crash_child, &a);
	close(a.fd[1]);
	do
		got = read(a.fd[0], r, sizeof(*r));
	while (got < 0 && errno == EINTR);
	close(a.fd[0]);
	status = tu_wait(fx, pid);
	if (got == (ssize_t)sizeof(*r)) {
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		return true;
	}
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail_msg("%s, n=%ld: child neither finished nor was killed "
			 "(status %#x)", s->ops->what, n, (unsigned)status);
	return false;
}

/* After a run: judge, write the key again, check, then acknowledged keys. */
static void after_run(struct scen *s)
{
	s->ops->judge(s);
	s->ops->prepare(s);
	tu_check(s->kv);
	s->ops->acked(s);
	if (s->ops->rearm)
		s->ops->rearm(s);
}

/* The set-evict write had to make room: it evicted (the dry run, when
 * nothing is garbage yet) or at least emptied a segment. */
static void assert_made_room(struct scen *s, uint64_t before, bool evicted)
{
	struct kvshm_stats st;

	assert_ok(kvshm_stats(s->kv, &st));
	if (evicted)
		assert_true(st.evictions > before);
	else
		assert_true(st.evictions + st.segments_reclaimed > before);
}

/* Every step-th crash point, then one past the last (where the write should
 * complete), then one by one if this run of the write passes more points. */
static long next_point(long n, long step, long points)
{
	if (n > points)
		return n + 1;
	return n + step > points ? points + 1 : n + step;
}

static void crash_campaign(struct tu_fx *fx, struct scen *s)
{
	struct kvshm_stats st0, st1;
	struct report r = { -1, -1 };
	long points, n, step, tried = 0, kills = 0;
	bool done = false;

	tu_watchdog(10);
	s->ops->prepare(s);
	assert_ok(kvshm_stats(s->kv, &st0));
	assert_true(run_child(fx, s, 0, &r)); /* the dry run */
	assert_ok(r.rc);
	points = r.points;
	if (s->ops == &set_evict)
		assert_made_room(s, st0.evictions, true);
	after_run(s);
	if (s->ops->locked && points < 1)
		fail_msg("%s passed no crash point", s->ops->what);

	/* every point, or CAP of them spread evenly, then one past the last */
	step = points > CAP ? (points + CAP - 1) / CAP : 1;
	for (n = 1; !done; n = next_point(n, step, points)) {
		const uint64_t room = s->made_room;

		assert_true(n <= points + 50); /* the write must end somewhere */
		tu_watchdog(10); /* a hang in child or parent fails the test */
		done = run_child(fx, s, n, &r);
		tried++;
		if (done) {
			assert_ok(r.rc);
			if (s->ops == &set_evict)
				assert_made_room(s, room, false);
		} else {
			kills++;
		}
		after_run(s);
	}
	tu_watchdog(0);
	assert_ok(kvshm_stats(s->kv, &st1));
	print_message("%s: %ld crash points (dry run), %ld exercised (every "
		      "%ld), %ld kills, %" PRIu64 " lock recoveries\n",
		      s->ops->what, points, tried, step, kills,
		      st1.lock_recoveries - st0.lock_recoveries);
	if (s->ops->locked && kills > 0)
		assert_true(st1.lock_recoveries > st0.lock_recoveries);
}

/* A fresh store with the base keys, and a campaign of ops against it. */
static void campaign(void **state, const struct scen_ops *ops,
		     uint32_t flags, uint64_t arena, bool base)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(flags, arena);
	struct scen s = { ops, NULL, NULL, 0, 0, 0 };

	s.kv = tu_create(fx, &o, &s.name);
	if (base)
		write_keys(s.kv, "base", NBASE, 0);
	crash_campaign(fx, &s);
}

static void test_set_overwriting_a_key_killed_anywhere_leaves_old_or_new(void **state)
{
	campaign(state, &set_overwrite, KVSHM_NOEVICT, 8 * TU_MIB, true);
}

static void test_set_of_a_new_key_killed_anywhere_leaves_nothing_or_new(void **state)
{
	campaign(state, &set_insert, KVSHM_NOEVICT, 8 * TU_MIB, true);
}

static void test_delete_killed_anywhere_leaves_old_or_nothing(void **state)
{
	campaign(state, &delete_key, KVSHM_NOEVICT, 8 * TU_MIB, true);
}

static void test_incr_creating_a_counter_killed_anywhere_leaves_nothing_or_delta(void **state)
{
	campaign(state, &incr_create, KVSHM_NOEVICT, 8 * TU_MIB, true);
}

static void test_incr_of_an_existing_counter_killed_anywhere_adds_once_or_not(void **state)
{
	campaign(state, &incr_existing, KVSHM_NOEVICT, 8 * TU_MIB, true);
}

static void test_set_that_must_evict_killed_anywhere_corrupts_nothing(void **state)
{
	campaign(state, &set_evict, 0, TU_MIB, false);
}

static void test_clear_killed_anywhere_removes_all_keys_or_none(void **state)
{
	campaign(state, &clear_all, KVSHM_NOEVICT, 8 * TU_MIB, false);
}

static void test_set_after_a_clear_killed_anywhere_revives_no_cleared_key(void **state)
{
	campaign(state, &set_after_clear, KVSHM_NOEVICT, 8 * TU_MIB, false);
}

static void test_sweep_killed_anywhere_keeps_every_live_key(void **state)
{
	campaign(state, &sweep_expired, KVSHM_NOEVICT, 8 * TU_MIB, true);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_bare, tu_teardown)

/* ---- the cleaner: a compacting sweep killed anywhere ------------------
 * The generic campaign cannot reach most of the cleaner's crash points: a
 * reclaim that was killed is resumed by the next one, so later runs finish
 * early. Here every run starts from a fresh store brought to the same
 * state (200 keys overwritten until the lanes have no room left), and a
 * child's kvshm_sweep() compacts a segment (moving every live item) until
 * it is killed at point n, for n spread over the whole drain. */

#define CMP_KEYS 200
#define CMP_VAL 600

static void cmp_val(char *buf, int key, int round)
{
	memset(buf, 0, CMP_VAL);
	snprintf(buf, CMP_VAL, "key %d round %d", key, round);
}

/* Each round adds CMP_STABLE keys that are never written again, then
 * overwrites the CMP_KEYS churning ones: every segment ends up part live,
 * part garbage. Rounds go on until no segment with room is left; returns
 * the number of rounds. */
#define CMP_STABLE 20

static int cmp_prepare(struct kvshm *kv)
{
	char k[32], v[CMP_VAL];
	int round = 0;

	do {
		assert_true(round < 10000);
		for (int j = 0; j < CMP_STABLE; j++) {
			snprintf(k, sizeof(k), "st-%d-%d", round, j);
			cmp_val(v, j, -round);
			assert_ok(kvshm_set(kv, KS(k), v, CMP_VAL, 0));
		}
		for (int i = 0; i < CMP_KEYS; i++) {
			snprintf(k, sizeof(k), "cmp-%d", i);
			cmp_val(v, i, round);
			assert_ok(kvshm_set(kv, KS(k), v, CMP_VAL, 0));
		}
		round++;
	} while (kv__roomy_segments(kv__cur(kv)) > 0);
	return round;
}

static void cmp_expect(struct kvshm *kv, const char *k, const char *want)
{
	char got[CMP_VAL];
	size_t len;

	assert_ok(kvshm_get(kv, KS(k), got, sizeof(got), &len));
	assert_int_equal(len, CMP_VAL);
	assert_memory_equal(got, want, CMP_VAL);
}

static void cmp_verify(struct kvshm *kv, int rounds)
{
	char k[32], v[CMP_VAL];

	for (int i = 0; i < CMP_KEYS; i++) {
		snprintf(k, sizeof(k), "cmp-%d", i);
		cmp_val(v, i, rounds - 1);
		cmp_expect(kv, k, v);
	}
	for (int r = 0; r < rounds; r++)
		for (int j = 0; j < CMP_STABLE; j++) {
			snprintf(k, sizeof(k), "st-%d-%d", r, j);
			cmp_val(v, j, -r);
			cmp_expect(kv, k, v);
		}
}

struct cmp_child {
	const char *name;
	long n;
	int fd[2];
};

static void cmp_sweeper(void *p)
{
	struct cmp_child *a = p;
	struct kvshm *kv;
	long points;

	close(a->fd[0]);
	CHILD_ASSERT_RC(kvshm_open(a->name, NULL, &kv), 0);
	kvshm__test_crash_after(a->n);
	CHILD_ASSERT_RC(kvshm_sweep(kv, 0, NULL), 0);
	points = kvshm__test_crashpoints();
	CHILD_ASSERT(write(a->fd[1], &points, sizeof(points)) ==
		     (ssize_t)sizeof(points));
}

/* One run on a fresh store: returns the crash points a full sweep passed
 * (n == 0), or -1 if the child was killed. */
static long cmp_run(struct tu_fx *fx, long n, uint64_t *reclaimed)
{
	struct kvshm_options o = tu_opts(KVSHM_NOEVICT, 4 * TU_MIB);
	struct cmp_child a = {.n = n};
	struct kvshm *kv = tu_create(fx, &o, &a.name);
	struct kvshm_stats st;
	long points = -1;
	int rounds = cmp_prepare(kv), status;

	assert_int_equal(pipe(a.fd), 0);
	status = tu_wait(fx, tu_spawn(fx, cmp_sweeper, &a));
	close(a.fd[1]);
	if (read(a.fd[0], &points, sizeof(points)) != sizeof(points))
		points = -1;
	close(a.fd[0]);
	assert_true((WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
		    (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
	/* the parent's next write and check repair what the child left */
	assert_ok(kvshm_set(kv, KS("after"), "x", 1, 0));
	tu_check(kv);
	cmp_verify(kv, rounds);
	assert_ok(kvshm_stats(kv, &st));
	assert_int_equal(st.evictions, 0); /* compaction never evicts */
	*reclaimed = st.segments_reclaimed;
	tu_close(fx, kv);
	kvshm_unlink(a.name);
	return points;
}

static void test_compacting_sweep_killed_anywhere_loses_nothing(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	uint64_t reclaimed;
	long points, step, tried = 0, kills = 0;

	tu_watchdog(60);
	points = cmp_run(fx, 0, &reclaimed);
	print_message("dry run: %ld crash points, %llu segments reclaimed\n",
		      points, (unsigned long long)reclaimed);
	assert_true(points > 100);
	assert_true(reclaimed > 0); /* the dry run did compact */
	step = points > 120 ? points / 120 : 1;
	for (long n = 1; n <= points; n += step) {
		tu_watchdog(30);
		kills += cmp_run(fx, n, &reclaimed) < 0;
		tried++;
	}
	tu_watchdog(0);
	print_message("compacting sweep: %ld crash points (dry run), %ld "
		      "exercised (every %ld), %ld kills\n",
		      points, tried, step, kills);
	assert_true(kills > tried / 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_set_overwriting_a_key_killed_anywhere_leaves_old_or_new),
		T(test_set_of_a_new_key_killed_anywhere_leaves_nothing_or_new),
		T(test_delete_killed_anywhere_leaves_old_or_nothing),
		T(test_incr_creating_a_counter_killed_anywhere_leaves_nothing_or_delta),
		T(test_incr_of_an_existing_counter_killed_anywhere_adds_once_or_not),
		T(test_set_that_must_evict_killed_anywhere_corrupts_nothing),
		T(test_clear_killed_anywhere_removes_all_keys_or_none),
		T(test_set_after_a_clear_killed_anywhere_revives_no_cleared_key),
		T(test_sweep_killed_anywhere_keeps_every_live_key),
		T(test_compacting_sweep_killed_anywhere_loses_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
