/* SPDX-License-Identifier: MIT */
/*
 * test_crash.c - kill -9 at every crash point of every kind of write, and
 * kill -9 again during the recovery of that crash.
 *
 * EVERY POINT. For each kind of write, every run starts from a fresh store
 * brought to the same state (fixed lane, same writes), so the write passes
 * the same crash points every time. A disarmed dry run counts them (P);
 * then for n = 1 .. P a child arms kvshm__test_crash_after(n) and does the
 * write, and must be killed; at n = P + 1 it must complete. No sampling.
 *
 * CRASH DURING RECOVERY. For a pair (n, m): the first child dies at point
 * n, then a second child attaches, arms point m and does the same write
 * again: its crash points are those of the repair of what the first one
 * left (stripe rebuild, cleaner repair, a resumed reclaim), then those of
 * its own write. Every m is tried for a sample of n (every n with
 * KVSHM_CRASH_FULL=1 in the environment).
 *
 * After every run the parent, under a watchdog, judges the target (its old
 * or its new state: an unacknowledged write is all or nothing), runs
 * kvshm_check() (which takes every stripe lock, so it recovers whatever a
 * child died holding), judges again, checks that every acknowledged key is
 * intact, writes once more, and checks again.
 */
#include "testutil.h"

#include "testing.h"
#include "internal.h" /* kv__self, the header, kv__roomy_segments */

#include <dirent.h>

#define TARGET "target"
#define TARGET_ID 7777u
#define NBASE 100
#define NEXPIRED 10

struct scen;

/* One kind of write, as the child does it and as the parent judges it. */
struct scen_ops {
	const char *what;
	uint32_t flags;   /* store flags */
	uint64_t arena;   /* store size */
	bool locked;      /* a kill must leave a lock for someone to recover */
	/* parent, on a fresh store: the precondition */
	void (*prepare)(struct scen *s);
	/* child: the write under test; returns its result */
	int (*op)(struct scen *s, struct kvshm *kv);
	/* what a repeated write may return when the first one took effect
	 * before its writer died (0 when the write can simply repeat) */
	int retry_rc;
	/* parent: the target holds its old or a new state; tries is how
	 * many unacknowledged attempts were made (1 or 2) */
	void (*judge)(struct scen *s, int tries);
	/* parent: everything acknowledged is intact */
	void (*acked)(struct scen *s);
};

struct scen {
	const struct scen_ops *ops;
	struct tu_fx *fx;
	struct kvshm *kv;  /* the parent's handle on the current store */
	const char *name;  /* the store's name, the same for every run */
	uint64_t cas;      /* cas of the target's old value */
	int nfill;         /* set-evict: fillers written */
	size_t big_len;    /* set-evict: length of the value that must evict */
	int rounds;        /* compacting sweep: rounds written */
};

/* What a child that finished its write sends back. */
struct report {
	int rc;
	long points;
};

/* Totals over the whole program, printed at the end. */
static struct {
	long points, runs, kills, pairs, second_kills;
	uint64_t recoveries;
} total;

static bool full_mode(void)
{
	const char *e = getenv("KVSHM_CRASH_FULL");

	return e && *e && strcmp(e, "0") != 0;
}

/* ---- values ----------------------------------------------------------- */

static size_t target_val(uint8_t *buf, bool newer)
{
	return tu_val_make(buf, TARGET_ID, newer, newer ? 2 : 1);
}

static void base_key(char *k, size_t len, const char *pfx, int i)
{
	snprintf(k, len, "%s-%05d", pfx, i);
}

/* Write n keys pfx-i with self-validating values (writer 9); a w with
 * expires_at_ms in the past writes them already expired. */
static void write_keys(struct kvshm *kv, const char *pfx, int n,
		       const struct kvshm_write *w)
{
	uint8_t v[TU_VAL_MAX];
	char k[32];

	for (int i = 0; i < n; i++) {
		const size_t len = tu_val_make(v, (uint32_t)i, 9, 1);

		base_key(k, sizeof(k), pfx, i);
		assert_ok(kvshm_put(kv, KS(k), v, len, w, NULL));
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

static void write_base(struct scen *s)
{
	write_keys(s->kv, "base", NBASE, NULL);
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

/* The base keys, and the target with its old value (its cas kept). */
static void base_and_old_target(struct scen *s)
{
	uint8_t v[TU_VAL_MAX];
	const size_t len = target_val(v, false);
	const struct kvshm_write w = { .mode = KVSHM_SET };

	write_base(s);
	assert_ok(kvshm_put(s->kv, KS(TARGET), v, len, &w, &s->cas));
}

/* ---- the writes ------------------------------------------------------- */

static int put_new(struct kvshm *kv, uint32_t mode, uint64_t cas)
{
	uint8_t v[TU_VAL_MAX];
	const size_t len = target_val(v, true);
	const struct kvshm_write w = { .mode = mode, .cas = cas };

	return kvshm_put(kv, KS(TARGET), v, len, &w, NULL);
}

static int op_set_new(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return put_new(kv, KVSHM_SET, 0);
}

static int op_add_new(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return put_new(kv, KVSHM_ADD, 0);
}

static int op_cas_new(struct scen *s, struct kvshm *kv)
{
	return put_new(kv, KVSHM_CAS, s->cas);
}

static void judge_old_or_new(struct scen *s, int tries)
{
	(void)tries;
	assert_true(target_state(s->kv) != 0);
}

static void judge_absent_or_new(struct scen *s, int tries)
{
	(void)tries;
	assert_true(target_state(s->kv) != 1);
}

static void judge_old_or_absent(struct scen *s, int tries)
{
	(void)tries;
	assert_true(target_state(s->kv) != 2);
}

static const struct scen_ops set_overwrite = {
	.what = "set overwriting a key",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = base_and_old_target,
	.op = op_set_new,
	.judge = judge_old_or_new,
	.acked = base_intact,
};

static const struct scen_ops set_insert = {
	.what = "set of a new key",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = write_base,
	.op = op_set_new,
	.judge = judge_absent_or_new,
	.acked = base_intact,
};

static const struct scen_ops add_insert = {
	.what = "put KVSHM_ADD of a new key",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = write_base,
	.op = op_add_new,
	.retry_rc = -EEXIST,
	.judge = judge_absent_or_new,
	.acked = base_intact,
};

static const struct scen_ops cas_overwrite = {
	.what = "put KVSHM_CAS",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = base_and_old_target,
	.op = op_cas_new,
	.retry_rc = -ESTALE,
	.judge = judge_old_or_new,
	.acked = base_intact,
};

static int op_delete(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return kvshm_delete(kv, KS(TARGET));
}

static int op_delete_cas(struct scen *s, struct kvshm *kv)
{
	return kvshm_delete_cas(kv, KS(TARGET), s->cas);
}

static const struct scen_ops delete_key = {
	.what = "delete",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = base_and_old_target,
	.op = op_delete,
	.retry_rc = -ENOENT,
	.judge = judge_old_or_absent,
	.acked = base_intact,
};

static const struct scen_ops delete_cas = {
	.what = "delete_cas",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = base_and_old_target,
	.op = op_delete_cas,
	.retry_rc = -ENOENT,
	.judge = judge_old_or_absent,
	.acked = base_intact,
};

/* expire: the target keeps its value, with no TTL (old) or about an hour
 * (new) */
#define EXPIRE_MS (3600 * 1000)

static int op_expire(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return kvshm_expire(kv, KS(TARGET), EXPIRE_MS);
}

static void judge_expire(struct scen *s, int tries)
{
	int64_t ttl = 0;

	(void)tries;
	assert_int_equal(target_state(s->kv), 1);
	assert_ok(kvshm_ttl(s->kv, KS(TARGET), &ttl));
	if (ttl != -1 && (ttl <= EXPIRE_MS - 60 * 1000 || ttl > EXPIRE_MS))
		fail_msg("TTL %" PRId64 " is neither none nor the new one", ttl);
}

static const struct scen_ops expire_key = {
	.what = "expire",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = base_and_old_target,
	.op = op_expire,
	.judge = judge_expire,
	.acked = base_intact,
};

static int op_incr(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return kvshm_incr(kv, KS(TARGET), 7, 0, NULL);
}

/* The counter started at old and got up to tries unacknowledged +7s;
 * absent counts as 0 when old is 0. */
static void judge_counter(struct scen *s, int64_t old, int tries)
{
	int64_t v = -1;
	const int rc = kvshm_counter(s->kv, KS(TARGET), &v);

	if (rc == -ENOENT && old == 0)
		return;
	assert_ok(rc);
	for (int i = old ? 0 : 1; i <= tries; i++)
		if (v == old + 7 * i)
			return;
	fail_msg("counter is %" PRId64 ", not %" PRId64 " plus up to %d "
		 "increments of 7", v, old, tries);
}

static void judge_incr_create(struct scen *s, int tries)
{
	judge_counter(s, 0, tries);
}

static const struct scen_ops incr_create = {
	.what = "incr creating a counter",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = write_base,
	.op = op_incr,
	.judge = judge_incr_create,
	.acked = base_intact,
};

static void base_and_counter_100(struct scen *s)
{
	write_base(s);
	assert_ok(kvshm_incr(s->kv, KS(TARGET), 100, 0, NULL));
}

static void judge_incr_existing(struct scen *s, int tries)
{
	judge_counter(s, 100, tries);
}

/* one lock-free CAS: no crash point, so the campaign only shows that */
static const struct scen_ops incr_existing = {
	.what = "incr of an existing counter",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = false,
	.prepare = base_and_counter_100,
	.op = op_incr,
	.judge = judge_incr_existing,
	.acked = base_intact,
};

/* clear: all of the keys or none of them, never a mix */
static int op_clear(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return kvshm_clear(kv);
}

static void judge_clear(struct scen *s, int tries)
{
	const int n = count_intact(s->kv, "base", NBASE);

	(void)tries;
	if (n != 0 && n != NBASE)
		fail_msg("a killed clear left %d of %d keys", n, NBASE);
}

static void nothing_more(struct scen *s)
{
	(void)s;
}

static const struct scen_ops clear_all = {
	.what = "clear",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = false,
	.prepare = write_base,
	.op = op_clear,
	.judge = judge_clear,
	.acked = nothing_more,
};

/* the first write after a clear empties its stripe lazily */
static void base_then_clear(struct scen *s)
{
	write_base(s);
	assert_ok(kvshm_clear(s->kv));
}

static void judge_cleared_absent_or_new(struct scen *s, int tries)
{
	assert_int_equal(count_intact(s->kv, "base", NBASE), 0);
	judge_absent_or_new(s, tries);
}

static const struct scen_ops set_after_clear = {
	.what = "set after a clear",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = base_then_clear,
	.op = op_set_new,
	.judge = judge_cleared_absent_or_new,
	.acked = nothing_more,
};

/* sweep: expired keys go, live ones stay */
static void base_and_expired(struct scen *s)
{
	const struct kvshm_write w = { .expires_at_ms = 1 }; /* in 1970 */

	write_base(s);
	write_keys(s->kv, "exp", NEXPIRED, &w);
}

static int op_sweep(struct scen *s, struct kvshm *kv)
{
	(void)s;
	return kvshm_sweep(kv, 0, NULL);
}

static void judge_sweep(struct scen *s, int tries)
{
	(void)tries;
	assert_int_equal(count_intact(s->kv, "exp", NEXPIRED), 0);
}

static const struct scen_ops sweep_expired = {
	.what = "sweep",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = base_and_expired,
	.op = op_sweep,
	.judge = judge_sweep,
	.acked = base_intact,
};

/* set that must evict: a 1 MiB store filled until it evicted and every
 * segment is at least 3/4 full, and a value larger than the largest free
 * block: the write empties a whole segment of live items */
static void big_val(uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 131 + len);
}

static void fill_until_full(struct scen *s)
{
	uint8_t v[TU_VAL_MAX];
	const uint64_t seg_bytes = kv__cur(s->kv)->segment_bytes;
	struct kvshm_stats st;
	char k[32];

	s->nfill = 0;
	for (int guard = 0;; guard++) {
		assert_true(guard < 100000);
		assert_ok(kvshm_stats(s->kv, &st));
		if (st.evictions > 0 && st.largest_free_bytes < seg_bytes / 4)
			break;
		const size_t len = tu_val_make(v, (uint32_t)s->nfill, 9, 1);
		base_key(k, sizeof(k), "fill", s->nfill++);
		assert_ok(kvshm_set(s->kv, KS(k), v, len, 0));
	}
	s->big_len = st.largest_free_bytes + 1;
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

static void judge_big(struct scen *s, int tries)
{
	uint8_t *v = malloc(s->big_len), *want = malloc(s->big_len);
	size_t len = 0;
	int rc;

	(void)tries;
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
	.flags = 0, .arena = TU_MIB, .locked = true,
	.prepare = fill_until_full,
	.op = op_set_big,
	.judge = judge_big,
	.acked = fillers_intact_or_evicted,
};

/* A compacting sweep: every run starts from a store whose lanes have no
 * room left (each round adds CMP_STABLE keys never written again and
 * overwrites the CMP_KEYS churning ones, so every segment is part live,
 * part garbage), and kvshm_sweep() compacts a segment, moving every live
 * item. Nothing may be lost and nothing evicted. */
#define CMP_KEYS 100
#define CMP_STABLE 10
#define CMP_VAL 600

static void cmp_val(char *buf, int key, int round)
{
	memset(buf, 0, CMP_VAL);
	snprintf(buf, CMP_VAL, "key %d round %d", key, round);
}

static void cmp_prepare(struct scen *s)
{
	char k[32], v[CMP_VAL];
	int round = 0;

	do {
		assert_true(round < 10000);
		for (int j = 0; j < CMP_STABLE; j++) {
			snprintf(k, sizeof(k), "st-%d-%d", round, j);
			cmp_val(v, j, -round);
			assert_ok(kvshm_set(s->kv, KS(k), v, CMP_VAL, 0));
		}
		for (int i = 0; i < CMP_KEYS; i++) {
			snprintf(k, sizeof(k), "cmp-%d", i);
			cmp_val(v, i, round);
			assert_ok(kvshm_set(s->kv, KS(k), v, CMP_VAL, 0));
		}
		round++;
	} while (kv__roomy_segments(kv__cur(s->kv)) > 0);
	s->rounds = round;
}

static void cmp_expect(struct kvshm *kv, const char *k, const char *want)
{
	char got[CMP_VAL];
	size_t len;

	assert_ok(kvshm_get(kv, KS(k), got, sizeof(got), &len));
	assert_int_equal(len, CMP_VAL);
	assert_memory_equal(got, want, CMP_VAL);
}

static void cmp_verify(struct scen *s, int tries)
{
	char k[32], v[CMP_VAL];
	struct kvshm_stats st;

	(void)tries;
	for (int i = 0; i < CMP_KEYS; i++) {
		snprintf(k, sizeof(k), "cmp-%d", i);
		cmp_val(v, i, s->rounds - 1);
		cmp_expect(s->kv, k, v);
	}
	for (int r = 0; r < s->rounds; r++)
		for (int j = 0; j < CMP_STABLE; j++) {
			snprintf(k, sizeof(k), "st-%d-%d", r, j);
			cmp_val(v, j, -r);
			cmp_expect(s->kv, k, v);
		}
	assert_ok(kvshm_stats(s->kv, &st));
	assert_int_equal(st.evictions, 0); /* compaction never evicts */
}

static const struct scen_ops compacting_sweep = {
	.what = "compacting sweep",
	.flags = KVSHM_NOEVICT, .arena = 2 * TU_MIB, .locked = true,
	.prepare = cmp_prepare,
	.op = op_sweep,
	.judge = cmp_verify,
	.acked = nothing_more,
};

/* ---- one run ---------------------------------------------------------- */

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
	kv__self.lane = 0; /* the parent's lane: the same path every run */
	kvshm__test_crash_after(a->n);
	r.rc = a->s->ops->op(a->s, kv);
	r.points = kvshm__test_crashpoints();
	kvshm__test_crash_after(0);
	CHILD_ASSERT(write(a->fd[1], &r, sizeof(r)) == (ssize_t)sizeof(r));
	kvshm_close(kv);
	_exit(0);
}

/* Run the write in a child armed at n; true if it completed (in *r). */
static bool run_child(struct scen *s, long n, struct report *r)
{
	struct child_arg a = { s, n, { -1, -1 } };
	ssize_t got;
	pid_t pid;
	int status;

	assert_int_equal(pipe(a.fd), 0);
	pid = tu_spawn(s->fx, crash_child, &a);
	close(a.fd[1]);
	do
		got = read(a.fd[0], r, sizeof(*r));
	while (got < 0 && errno == EINTR);
	close(a.fd[0]);
	status = tu_wait(s->fx, pid);
	if (got == (ssize_t)sizeof(*r)) {
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		return true;
	}
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail_msg("%s, n=%ld: child neither finished nor was killed "
			 "(status %#x)", s->ops->what, n, (unsigned)status);
	return false;
}

/* No object of the store's name or its temporary names is left. */
static void assert_no_leftovers(const char *name)
{
	const size_t len = strlen(name);
	DIR *d = opendir("/dev/shm");
	struct dirent *e;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, name, len))
			fail_msg("left behind: /dev/shm/%s", e->d_name);
	closedir(d);
}

/*
 * Give the fresh store a fixed hash seed, so that every run places the keys
 * in the same buckets and the write passes the same crash points (the
 * number of displaced items, which the repair recounts one by one, depends
 * on it). The header is rewritten with its checksum before anyone else has
 * attached; the handle is opened again to use the new seed.
 */
static void fix_seed(struct scen *s)
{
	struct kv__header *h = kv__cur(s->kv)->hdr;

	h->hash_seed[0] = UINT64_C(0x0123456789abcdef);
	h->hash_seed[1] = UINT64_C(0xfedcba9876543210);
	h->header_check = kv__header_check(h);
	tu_close(s->fx, s->kv);
	s->kv = tu_open(s->fx, s->name, NULL);
}

/* The outcome of one run (both children). */
struct outcome {
	bool first_done, second_done;
	struct report first, second;
	uint64_t recoveries;
};

/*
 * One run on a fresh store: the first child armed at n (0 = disarmed), then
 * if it was killed and m >= 0, a second child armed at m (0 = disarmed)
 * repeating the write. Then the parent's recovery and checks.
 */
static struct outcome one_run(struct scen *s, long n, long m)
{
	struct kvshm_options o = tu_opts(s->ops->flags | KVSHM_CREATE |
						 KVSHM_EXCL,
					 s->ops->arena);
	struct outcome out = { 0 };
	struct kvshm_stats st;
	int tries = 1;

	tu_watchdog(20); /* a hang in child or parent fails the test */
	s->kv = tu_open(s->fx, s->name, &o);
	fix_seed(s);
	kv__self.lane = 0; /* the children write through the same lane */
	s->ops->prepare(s);
	out.first_done = run_child(s, n, &out.first);
	if (out.first_done)
		assert_ok(out.first.rc);
	if (!out.first_done && m >= 0) {
		tries = 2;
		out.second_done = run_child(s, m, &out.second);
		if (out.second_done && out.second.rc != 0 &&
		    out.second.rc != s->ops->retry_rc)
			fail_msg("%s, n=%ld m=%ld: the repeated write returned "
				 "%d (%s)", s->ops->what, n, m, out.second.rc,
				 kvshm_strerror(out.second.rc));
	}
	s->ops->judge(s, tries); /* before any repair: readers see old/new */
	tu_check(s->kv);         /* takes every lock: recovers them all */
	s->ops->judge(s, tries);
	s->ops->acked(s);
	assert_ok(kvshm_set(s->kv, KS(TARGET), "after", 5, 0));
	tu_check(s->kv);
	assert_ok(kvshm_stats(s->kv, &st));
	out.recoveries = st.lock_recoveries;
	tu_close(s->fx, s->kv);
	s->kv = NULL;
	assert_ok(kvshm_unlink(s->name));
	assert_no_leftovers(s->name);
	tu_watchdog(0);
	return out;
}

/* ---- the campaigns ---------------------------------------------------- */

/* Every crash point: returns P, the points of the dry run. */
static long every_point(struct scen *s)
{
	struct outcome out = one_run(s, 0, -1);
	const long points = out.first.points;
	long kills = 0, runs = 0;
	uint64_t recoveries = 0;

	assert_true(out.first_done);
	if (s->ops->locked && points < 1)
		fail_msg("%s passed no crash point", s->ops->what);
	for (long n = 1;; n++) {
		out = one_run(s, n, -1);
		runs++;
		recoveries += out.recoveries;
		if (out.first_done)
			break;
		kills++;
		assert_true(n <= points); /* the write must end somewhere */
	}
	/* the same state, the same path: killed at each of the P points,
	 * and done at P + 1 */
	assert_int_equal(kills, points);
	print_message("%s: %ld crash points (dry run), %ld exercised, %ld "
		      "kills, %" PRIu64 " lock recoveries\n",
		      s->ops->what, points, runs, kills, recoveries);
	if (s->ops->locked)
		assert_true(recoveries >= (uint64_t)kills / 2);
	total.points += points;
	total.runs += runs;
	total.kills += kills;
	total.recoveries += recoveries;
	return points;
}

/* n values for the pairs: every n in full mode or when there are few,
 * else `want` of them spread over 1..points (first and last included). */
static long pick_first(long i, long points, long want)
{
	if (points <= want)
		return i + 1;
	return want == 1 ? 1 : 1 + i * (points - 1) / (want - 1);
}

/*
 * Crash during recovery: for a sample of first points n (the first, the
 * middle and the last; every n with KVSHM_CRASH_FULL=1), every second point
 * m when the second write passes up to PAIR_M of them, else PAIR_M of them
 * spread evenly (every m in full mode). The sample keeps the suite within
 * a few minutes under ThreadSanitizer, where a fork costs ~50 ms.
 */
#define PAIR_N 3
#define PAIR_M 24

static void during_recovery(struct scen *s, long points)
{
	const bool full = full_mode();
	const long want = full ? points : PAIR_N;
	const long nfirst = points < want ? points : want;
	long pairs = 0, second_kills = 0, every_m = 0, max_q = 0;
	uint64_t recoveries = 0;

	for (long i = 0; i < nfirst; i++) {
		const long n = pick_first(i, points, want);
		struct outcome out = one_run(s, n, 0); /* second disarmed */
		const long q = out.second.points;
		long step;

		assert_false(out.first_done);
		assert_true(out.second_done);
		if (q > max_q)
			max_q = q;
		step = full || q <= PAIR_M ? 1 : (q + PAIR_M - 1) / PAIR_M;
		every_m += step == 1;
		for (long m = 1; m <= q + 1; m += m > q - step ? 1 : step) {
			out = one_run(s, n, m);
			pairs++;
			recoveries += out.recoveries;
			if (m <= q) {
				assert_false(out.second_done);
				second_kills++;
			} else {
				assert_true(out.second_done);
			}
		}
	}
	print_message("%s, killed again during recovery: %ld pairs (n, m) "
		      "over %ld first points, every m for %ld of them (up to "
		      "%ld second points), %ld second kills, %" PRIu64
		      " lock recoveries\n",
		      s->ops->what, pairs, nfirst, every_m, max_q,
		      second_kills, recoveries);
	total.pairs += pairs;
	total.second_kills += second_kills;
	total.recoveries += recoveries;
}

static void campaign(void **state, const struct scen_ops *ops)
{
	struct scen s = { .ops = ops, .fx = tu_fx(state) };
	long points;

	s.name = tu_new_name(s.fx, "crash");
	points = every_point(&s);
	if (points > 0)
		during_recovery(&s, points);
}

static void test_set_overwriting_a_key_killed_anywhere_leaves_old_or_new(void **state)
{
	campaign(state, &set_overwrite);
}

static void test_set_of_a_new_key_killed_anywhere_leaves_nothing_or_new(void **state)
{
	campaign(state, &set_insert);
}

static void test_add_of_a_new_key_killed_anywhere_leaves_nothing_or_new(void **state)
{
	campaign(state, &add_insert);
}

static void test_cas_killed_anywhere_leaves_old_or_new(void **state)
{
	campaign(state, &cas_overwrite);
}

static void test_delete_killed_anywhere_leaves_old_or_nothing(void **state)
{
	campaign(state, &delete_key);
}

static void test_delete_cas_killed_anywhere_leaves_old_or_nothing(void **state)
{
	campaign(state, &delete_cas);
}

static void test_expire_killed_anywhere_leaves_old_or_new_ttl(void **state)
{
	campaign(state, &expire_key);
}

static void test_incr_creating_a_counter_killed_anywhere_leaves_nothing_or_delta(void **state)
{
	campaign(state, &incr_create);
}

static void test_incr_of_an_existing_counter_killed_anywhere_adds_once_or_not(void **state)
{
	campaign(state, &incr_existing);
}

static void test_clear_killed_anywhere_removes_all_keys_or_none(void **state)
{
	campaign(state, &clear_all);
}

static void test_set_after_a_clear_killed_anywhere_revives_no_cleared_key(void **state)
{
	campaign(state, &set_after_clear);
}

static void test_sweep_killed_anywhere_keeps_every_live_key(void **state)
{
	campaign(state, &sweep_expired);
}

static void test_set_that_must_evict_killed_anywhere_corrupts_nothing(void **state)
{
	campaign(state, &set_evict);
}

static void test_compacting_sweep_killed_anywhere_loses_nothing(void **state)
{
	campaign(state, &compacting_sweep);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_bare, tu_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_set_overwriting_a_key_killed_anywhere_leaves_old_or_new),
		T(test_set_of_a_new_key_killed_anywhere_leaves_nothing_or_new),
		T(test_add_of_a_new_key_killed_anywhere_leaves_nothing_or_new),
		T(test_cas_killed_anywhere_leaves_old_or_new),
		T(test_delete_killed_anywhere_leaves_old_or_nothing),
		T(test_delete_cas_killed_anywhere_leaves_old_or_nothing),
		T(test_expire_killed_anywhere_leaves_old_or_new_ttl),
		T(test_incr_creating_a_counter_killed_anywhere_leaves_nothing_or_delta),
		T(test_incr_of_an_existing_counter_killed_anywhere_adds_once_or_not),
		T(test_clear_killed_anywhere_removes_all_keys_or_none),
		T(test_set_after_a_clear_killed_anywhere_revives_no_cleared_key),
		T(test_sweep_killed_anywhere_keeps_every_live_key),
		T(test_set_that_must_evict_killed_anywhere_corrupts_nothing),
		T(test_compacting_sweep_killed_anywhere_loses_nothing),
	};
	const int failed = cmocka_run_group_tests(tests, NULL, NULL);

	print_message("test_crash total%s: %ld crash points enumerated, %ld "
		      "runs, %ld kills; %ld crash-during-recovery pairs, %ld "
		      "second kills; %" PRIu64 " lock recoveries\n",
		      full_mode() ? " (KVSHM_CRASH_FULL)" : "", total.points,
		      total.runs, total.kills, total.pairs, total.second_kills,
		      total.recoveries);
	return failed;
}
