/* SPDX-License-Identifier: MIT */
/*
 * test_linearize.c - linearizability of the whole API, per key, checked by
 * tests/lincheck.c: forked processes run random get, set, add, replace,
 * cas (with the last version seen and with an older one), delete,
 * delete_cas, expire and incr on a few shared keys while the parent resizes
 * the store (grow and shrink) and clears it; every operation is recorded
 * with its invocation and response times and checked against the
 * sequential model of one key. Three phases: a store with room, a full
 * evicting store (keys may vanish), a full KVSHM_NOEVICT store (-ENOSPC is
 * an allowed failure that changes nothing). First the checker itself is
 * shown to reject hand-made non-linearizable histories.
 *
 *   KVSHM_LIN_SECONDS=N  seconds per phase (default 2)
 *   KVSHM_LIN_OPS=N      operations per process per phase (default 40000)
 */
#include "testutil.h"

#include "lincheck.h"

#define NPROC 4
#define NKEYS 6
#define NFILL 1500 /* filler keys of the full phases */

static unsigned env_uint(const char *name, unsigned dflt)
{
	const char *v = getenv(name);
	char *end;
	unsigned long n;

	if (!v || !*v)
		return dflt;
	n = strtoul(v, &end, 10);
	return *end || n == 0 || n > 1000000000ul ? dflt : (unsigned)n;
}

/* ---- the checker on hand-made histories --------------------------------- */

/* A completed op of key 0 in slot, from inv to ret (us). */
static struct lc_op op(unsigned kind, unsigned slot, uint64_t inv, uint64_t ret)
{
	struct lc_op o = { .kind = (uint8_t)kind, .slot = (uint16_t)slot };

	o.pid = slot;
	o.t_invoke = inv * 1000 + 1;
	o.t_return = ret ? ret * 1000 + 1 : 0;
	return o;
}

static struct lc_op set_(unsigned slot, uint64_t inv, uint64_t ret,
			 uint64_t vid, uint64_t ver)
{
	struct lc_op o = op(LC_SET, slot, inv, ret);

	o.arg_val = vid;
	o.res_ver = ver;
	return o;
}

static struct lc_op get_(unsigned slot, uint64_t inv, uint64_t ret,
			 uint64_t vid, uint64_t ver)
{
	struct lc_op o = op(LC_GET, slot, inv, ret);

	if (vid) {
		o.res_val = vid;
		o.res_ver = ver;
	} else {
		o.res_err = -ENOENT;
	}
	return o;
}

static struct lc_op cas_(unsigned slot, uint64_t inv, uint64_t ret,
			 uint64_t vid, uint64_t expect, uint64_t ver, int err)
{
	struct lc_op o = op(LC_CAS, slot, inv, ret);

	o.arg_val = vid;
	o.arg_ver = expect;
	o.res_ver = err ? 0 : ver;
	o.res_err = err;
	return o;
}

static struct lc_op global_(unsigned kind, unsigned slot, uint64_t inv,
			    uint64_t ret)
{
	struct lc_op o = op(kind, slot, inv, ret);

	o.key = LC_ALL_KEYS;
	return o;
}

static int check(const struct lc_op *ops, size_t n, bool evict, bool enospc,
		 struct lc_report *rep)
{
	struct lc_check_opts o = { .evict = evict,
				   .enospc = enospc,
				   .nkeys = 1,
				   .out = stdout,
				   .strict = true };

	return lc_check_ops(ops, n, 0, &o, rep);
}

#define CHECK(ops, ev, sp, rep)                                                \
	check(ops, sizeof(ops) / sizeof(ops[0]), ev, sp, rep)

static void
test_checker_accepts_concurrent_writes_read_in_either_order(void **state)
{
	/* two overlapping sets; readers during them may see either, and
	 * once one reader saw the second, the first is gone for good */
	const struct lc_op h[] = {
		set_(0, 0, 10, 1, 101),
		set_(1, 1, 12, 2, 102),
		get_(2, 2, 3, 2, 102),
		get_(3, 4, 5, 1, 101), /* set 1 linearized after set 2 */
		get_(2, 20, 21, 1, 101),
	};
	struct lc_report rep;

	(void)state;
	assert_int_equal(CHECK(h, false, false, &rep), 0);
	assert_int_equal(rep.ops, 5);
	assert_int_equal(rep.windows, 2);
}

static void test_checker_rejects_a_stale_read(void **state)
{
	/* set 1, then set 2, then a read of 1: nothing else wrote 1 */
	const struct lc_op h[] = {
		set_(0, 0, 1, 1, 101), get_(2, 2, 3, 1, 101),
		set_(1, 4, 5, 2, 102), get_(2, 6, 7, 2, 102),
		get_(3, 8, 9, 1, 101),
	};
	struct lc_report rep;

	(void)state;
	print_message("(a deliberately non-linearizable history follows)\n");
	assert_int_equal(CHECK(h, false, false, &rep), -1);
	assert_int_equal(rep.failures, 1);
}

static void
test_checker_rejects_a_cas_with_a_version_from_before_a_resize(void **state)
{
	/* a resize gives every key a new version: a CAS with the one read
	 * before it must fail (the bug fixed in 893e576) */
	const struct lc_op bad[] = {
		set_(0, 0, 1, 1, 101),
		get_(1, 2, 3, 1, 101),
		global_(LC_RESIZE, 4, 4, 5),
		cas_(1, 6, 7, 2, 101, 103, 0),
	};
	/* a version read after the resize may be used */
	const struct lc_op good[] = {
		set_(0, 0, 1, 1, 101),         global_(LC_RESIZE, 4, 2, 5),
		get_(1, 3, 4, 1, 777), /* read during the resize: after it */
		cas_(1, 6, 7, 2, 777, 103, 0), get_(2, 8, 9, 2, 103),
	};
	struct lc_report rep;

	(void)state;
	print_message("(a deliberately non-linearizable history follows)\n");
	assert_int_equal(CHECK(bad, false, false, &rep), -1);
	assert_int_equal(CHECK(good, false, false, &rep), 0);
}

static void test_checker_rejects_a_version_handed_out_twice(void **state)
{
	/* a CAS success returning a version an earlier write had */
	const struct lc_op h[] = {
		set_(0, 0, 1, 1, 101),
		cas_(1, 2, 3, 2, 101, 102, 0),
		cas_(1, 4, 5, 3, 102, 101, 0),
	};
	struct lc_report rep;

	(void)state;
	print_message("(a deliberately repeated version follows)\n");
	assert_int_equal(CHECK(h, false, false, &rep), -1);
	assert_int_equal(rep.failures, 1);
}

static void
test_checker_lets_a_pending_write_happen_or_not_but_once(void **state)
{
	struct lc_op seen[] = {
		set_(0, 0, 0, 1, 0), /* pending: its process died */
		get_(1, 5, 6, 0, 0),
		get_(1, 7, 8, 1, 55),
		get_(1, 9, 10, 1, 55),
	};
	struct lc_op twice[] = {
		set_(0, 0, 0, 1, 0), get_(1, 5, 6, 1, 55), set_(2, 7, 8, 2, 56),
		get_(1, 9, 10, 1, 55), /* 1 again: it cannot land twice */
	};
	struct lc_report rep;

	(void)state;
	assert_int_equal(CHECK(seen, false, false, &rep), 0);
	assert_int_equal(rep.pending, 1);
	print_message("(a deliberately non-linearizable history follows)\n");
	assert_int_equal(CHECK(twice, false, false, &rep), -1);
}

static void
test_checker_lets_keys_vanish_only_in_a_full_evicting_store(void **state)
{
	const struct lc_op h[] = {
		set_(0, 0, 1, 1, 101),
		get_(1, 2, 3, 0, 0),
		get_(1, 4, 5, 0, 0),
	};
	struct lc_op full[] = {
		set_(0, 0, 1, 1, 101),
		set_(0, 2, 3, 2, 0),
		get_(1, 4, 5, 1, 101),
	};
	struct lc_report rep;

	(void)state;
	full[1].res_err = -ENOSPC;
	assert_int_equal(CHECK(h, true, false, &rep), 0);
	assert_int_equal(CHECK(full, false, true, &rep), 0);
	print_message("(two deliberately non-linearizable histories follow)\n");
	assert_int_equal(CHECK(h, false, false, &rep), -1);
	assert_int_equal(CHECK(full, true, false, &rep), -1);
}

static void test_checker_models_counters_expiry_and_clear(void **state)
{
	struct lc_op h[] = {
		op(LC_INCR, 0, 0, 1),   op(LC_INCR, 1, 2, 5),
		op(LC_INCR, 2, 3, 4),   get_(0, 6, 7, 0, 0),
		op(LC_EXPIRE, 0, 8, 9), get_(1, 10, 11, 0, 0),
		op(LC_INCR, 0, 12, 13), global_(LC_CLEAR, 3, 14, 15),
		get_(1, 16, 17, 0, 0),
	};
	struct lc_report rep;

	(void)state;
	h[0].arg_delta = 5, h[0].res_val = 5;
	h[1].arg_delta = 1, h[1].res_val = 8; /* after the incr by 2 */
	h[2].arg_delta = 2, h[2].res_val = 7;
	h[3] = get_(0, 6, 7, 8, 900), h[3].flags = LC_F_CTR;
	h[4].arg_ttl = LC_TTL_SHORT;          /* may expire any moment */
	h[6].arg_delta = 1, h[6].res_val = 1; /* expired: starts again */
	assert_int_equal(CHECK(h, false, false, &rep), 0);
	h[6].res_val = 9; /* as if not expired: but a read saw it gone */
	print_message("(a deliberately non-linearizable history follows)\n");
	assert_int_equal(CHECK(h, false, false, &rep), -1);
}

/* ---- the multi-process run ---------------------------------------------- */

enum phase {
	PH_ROOM,
	PH_FULL_EVICT,
	PH_FULL_NOEVICT
};

static const char *const phase_names[] = { "store with room",
					   "full evicting store",
					   "full NOEVICT store" };

struct run {
	const char *name;
	struct kvshm *kv;
	struct lc_log *log;
	enum phase ph;
	int64_t end_ms; /* CLOCK_MONOTONIC */
	unsigned ops;   /* per worker */
	struct tu_barrier bar;
	size_t minlen;
	volatile int *stop; /* shared: the filler stops */
};

struct warg {
	struct run *run;
	unsigned id;
};

static void worker(void *p)
{
	const struct warg *wa = p;
	const struct run *a = wa->run;
	struct kvshm *kv = a->kv;
	uint64_t rng = 0x9e3779b97f4a7c15ull * (wa->id + 1) ^
		       (uint64_t)getpid();
	uint64_t last[NKEYS] = { 0 }, old[NKEYS] = { 0 };
	const int64_t start = tu_mono_ms();
	unsigned done = 0;
	struct lc_ctx c;

	if (wa->id % 2)
		CHILD_ASSERT_RC(kvshm_open(a->name, NULL, &kv), 0);
	c = (struct lc_ctx){ .kv = kv,
			     .log = a->log,
			     .slot = wa->id,
			     .prefix = "lc:",
			     .minlen = a->minlen };
	tu_barrier_wait((struct tu_barrier *)&a->bar);
	while (done < a->ops) {
		const int64_t now = tu_mono_ms();
		const unsigned k = (unsigned)(tu_rand(&rng) % NKEYS);
		struct lc_op o;

		if (now >= a->end_ms)
			break;
		/* spread the ops over the phase, so the resizes and clears
		 * land among them */
		if ((double)done / a->ops >
		    (double)(now - start) / (double)(a->end_ms - start)) {
			struct timespec ts = { 0, 200000 };

			nanosleep(&ts, NULL);
			continue;
		}
		lc_random_op(&o, tu_rand(&rng), tu_rand(&rng), k, last[k],
			     old[k]);
		if (lc_run(&c, &o, NULL) == -EOVERFLOW)
			break;
		done++;
		if (o.res_err == 0 &&
		    (o.kind == LC_GET || o.kind == LC_SET || o.kind == LC_ADD ||
		     o.kind == LC_REPLACE || o.kind == LC_CAS) &&
		    o.res_ver != last[k]) {
			old[k] = last[k] ? last[k] : o.res_ver;
			last[k] = o.res_ver;
		}
	}
	if (kv != a->kv)
		kvshm_close(kv);
}

/* Keeps a full store full: big values under keys of its own. */
static void filler(void *p)
{
	const struct run *a = p;
	uint64_t rng = 12345 ^ (uint64_t)getpid();
	uint8_t val[2048];

	memset(val, 'f', sizeof(val));
	tu_barrier_wait((struct tu_barrier *)&a->bar);
	while (!*a->stop && tu_mono_ms() < a->end_ms + 1000) {
		char key[32];
		const uint64_t x = tu_rand(&rng);
		int rc;

		snprintf(key, sizeof(key), "f:%u", (unsigned)(x % NFILL));
		if (x % 10 < 3)
			rc = kvshm_delete(a->kv, KS(key));
		else
			rc = kvshm_set(a->kv, KS(key), val,
				       512 + (size_t)(x >> 20) % 1500, 0);
		CHILD_ASSERT(rc == 0 || rc == -ENOENT || rc == -ENOSPC);
	}
}

static void run_phase(struct tu_fx *fx, enum phase ph, struct lc_report *all)
{
	const unsigned secs = env_uint("KVSHM_LIN_SECONDS", 2);
	const uint64_t small = ph == PH_ROOM ? 8 * TU_MIB : 1 * TU_MIB;
	struct kvshm_options o =
		tu_opts(ph == PH_FULL_NOEVICT ? KVSHM_NOEVICT : 0, small);
	struct lc_check_opts co = { .evict = ph == PH_FULL_EVICT,
				    .enospc = ph == PH_FULL_NOEVICT,
				    .nkeys = NKEYS,
				    .out = stdout,
				    .prefix = "lc:",
				    .strict = env_uint("KVSHM_LIN_STRICT", 1) };
	struct run *a = tu_shared(sizeof(*a));
	volatile int *stop = tu_shared(sizeof(int));
	pid_t kids[NPROC + 1];
	struct warg wa[NPROC];
	unsigned nkids = 0, resizes = 0, clears = 0, failed_resizes = 0;
	uint64_t rng = 0x5bd1e995u + (uint64_t)ph;
	struct lc_report rep;
	struct lc_ctx pc;
	int rc;

	a->kv = tu_create(fx, &o, &a->name);
	a->log =
		lc_log_create(NPROC + 1, env_uint("KVSHM_LIN_OPS", 40000) + 16);
	assert_non_null(a->log);
	a->ph = ph;
	a->ops = env_uint("KVSHM_LIN_OPS", 40000);
	a->minlen = ph == PH_ROOM ? 0 : 200;
	a->stop = stop;
	tu_barrier_init(&a->bar);
	a->end_ms = tu_mono_ms() + 300 + (int64_t)secs * 1000;
	for (unsigned i = 0; i < NPROC; i++) {
		wa[i] = (struct warg){ a, i };
		kids[nkids++] = tu_spawn(fx, worker, &wa[i]);
	}
	if (ph != PH_ROOM)
		kids[nkids++] = tu_spawn(fx, filler, a);
	tu_barrier_release(&a->bar);
	pc = (struct lc_ctx){
		.kv = a->kv, .log = a->log, .slot = NPROC, .name = a->name
	};
	/* the parent: a resize (grow or shrink) or a clear every 20-150 ms */
	while (tu_mono_ms() < a->end_ms) {
		struct lc_op g = { .key = LC_ALL_KEYS };
		struct kvshm_options to = tu_opts(0, small);

		tu_sleep_ms(20 + (long)(tu_rand(&rng) % 130));
		if (tu_rand(&rng) % 4 == 0) {
			g.kind = LC_CLEAR;
			clears++;
		} else {
			g.kind = LC_RESIZE;
			to.arena_bytes = small * (1 + tu_rand(&rng) % 2) +
					 (tu_rand(&rng) % 2) * TU_MIB / 2;
			resizes++;
		}
		rc = lc_run(&pc, &g, &to);
		if (g.kind == LC_RESIZE && rc) {
			failed_resizes++;
			assert_true(rc == -ENOSPC || rc == -EBUSY);
		} else {
			assert_int_equal(rc, 0);
		}
	}
	*stop = 1;
	for (unsigned i = 0; i < nkids; i++)
		tu_reap(fx, kids[i]);
	tu_check(a->kv);
	rc = lc_check_log(a->log, &co, &rep);
	print_message("lincheck: %s: %zu histories checked, %zu ops, max %zu "
		      "ops per history (%zu windows, longest %zu; %zu pending, "
		      "%zu undecided; %zu versions unique); %u resizes (%u "
		      "refused), %u clears\n",
		      phase_names[ph], rep.histories, rep.ops, rep.max_ops,
		      rep.windows, rep.max_window, rep.pending, rep.undecided,
		      rep.versions, resizes, failed_resizes, clears);
	lc_report_add(all, &rep);
	lc_log_destroy(a->log);
	munmap(a, sizeof(*a));
	munmap((void *)stop, sizeof(int));
	assert_int_equal(rc, 0);
	assert_int_equal(rep.failures, 0);
}

/* ---- a bug it found (lincheck.h, lc_check_opts.strict) ------------------ */

struct race {
	struct kvshm *kv;
	struct lc_log *log;
	_Atomic unsigned round; /* child 0 deletes, then opens the round */
	_Atomic unsigned ready; /* children at the start of the round */
	unsigned rounds;
};

struct race_arg {
	struct race *r;
	unsigned id;
};

static void racer(void *p)
{
	const struct race_arg *ra = p;
	struct race *r = ra->r;
	struct lc_ctx c = {
		.kv = r->kv, .log = r->log, .slot = ra->id, .prefix = "lc:"
	};

	for (unsigned n = 1; n <= r->rounds; n++) {
		struct lc_op o = { .kind = LC_INCR, .arg_delta = ra->id + 1 };

		atomic_fetch_add(&r->ready, 1);
		if (ra->id == 0) {
			struct lc_op d = { .kind = LC_DELETE };

			while (atomic_load(&r->ready) < 2 * n)
				;
			lc_run(&c, &d, NULL);
			atomic_store(&r->round, n);
		}
		while (atomic_load(&r->round) < n)
			;
		lc_run(&c, &o, NULL);
	}
}

/* Two processes incr a key just deleted: the one that creates the counter
 * must return its own delta, not the sum. Failed every run before
 * incr_locked() returned the value it linked (ops.c). */
static void test_incr_that_creates_a_counter_returns_its_own_delta(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct lc_check_opts co = {
		.nkeys = 1, .out = stdout, .prefix = "lc:", .strict = true
	};
	struct race *r;
	struct race_arg ra[2];
	struct lc_report rep;
	pid_t kids[2];
	int rc;

	if (!env_uint("KVSHM_LIN_STRICT", 1)) {
		print_message("not run: KVSHM_LIN_STRICT=0\n");
		skip();
	}
	r = tu_shared(sizeof(*r));
	r->kv = tu_create(fx, &o, NULL);
	r->rounds = 20000;
	r->log = lc_log_create(2, 2 * r->rounds + 8);
	for (unsigned i = 0; i < 2; i++) {
		ra[i] = (struct race_arg){ r, i };
		kids[i] = tu_spawn(fx, racer, &ra[i]);
	}
	for (unsigned i = 0; i < 2; i++)
		tu_reap(fx, kids[i]);
	rc = lc_check_log(r->log, &co, &rep);
	print_message("lincheck: %zu ops, %zu failures\n", rep.ops,
		      rep.failures);
	lc_log_destroy(r->log);
	munmap(r, sizeof(*r));
	assert_int_equal(rc, 0);
}

static void
test_processes_with_resizes_and_clears_are_linearizable(void **state)
{
	struct lc_report all = { 0 };

	tu_watchdog(600);
	run_phase(tu_fx(state), PH_ROOM, &all);
	run_phase(tu_fx(state), PH_FULL_EVICT, &all);
	run_phase(tu_fx(state), PH_FULL_NOEVICT, &all);
	print_message("lincheck: %zu histories checked, %zu ops, max %zu ops "
		      "per history\n",
		      all.histories, all.ops, all.max_ops);
	tu_watchdog(0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_bare, tu_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_checker_accepts_concurrent_writes_read_in_either_order),
		T(test_checker_rejects_a_stale_read),
		T(test_checker_rejects_a_cas_with_a_version_from_before_a_resize),
		T(test_checker_rejects_a_version_handed_out_twice),
		T(test_checker_lets_a_pending_write_happen_or_not_but_once),
		T(test_checker_lets_keys_vanish_only_in_a_full_evicting_store),
		T(test_checker_models_counters_expiry_and_clear),
		T(test_processes_with_resizes_and_clears_are_linearizable),
		T(test_incr_that_creates_a_counter_returns_its_own_delta),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
