/* SPDX-License-Identifier: MIT */
/*
 * test_resize.c - kvshm_resize() (shm/resize.c, shm/handle.c): every item
 * survives with its value, flags, counter and expiry; handles opened before
 * the resize move by themselves; writers running through it lose no
 * acknowledged write; a resize that cannot fit changes nothing; a resizer
 * killed at any crash point (every point of a small resize, a sample of a
 * big one) leaves a working store with nothing lost and nothing left in
 * /dev/shm, also when the process recovering it is killed in turn.
 */
#include "testutil.h"

#include "internal.h"
#include "testing.h"

#include <dirent.h>

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_bare, tu_teardown)
#define NKEYS 2000

static void key_of(char *buf, size_t len, int i)
{
	snprintf(buf, len, "key-%05d", i);
}

/* Keys with values i*3 bytes long, flags i, every 4th with a TTL of an
 * hour, every 10th a counter holding i. */
static void fill_n(struct kvshm *kv, int nkeys)
{
	uint8_t v[TU_VAL_MAX];
	char k[32];

	for (int i = 0; i < nkeys; i++) {
		key_of(k, sizeof(k), i);
		if (i % 10 == 0) {
			assert_ok(kvshm_incr(kv, KS(k), i, 0, NULL));
			continue;
		}
		struct kvshm_write w = {.flags = (uint32_t)i,
					.ttl_ms = i % 4 ? 0 : 3600 * 1000};
		size_t len = tu_val_make(v, (uint32_t)i, 1, 1);
		assert_ok(kvshm_put(kv, KS(k), v, len, &w, NULL));
	}
}

static void verify_n(struct kvshm *kv, int nkeys)
{
	uint8_t v[TU_VAL_MAX];
	struct kvshm_item item;
	char k[32];

	for (int i = 0; i < nkeys; i++) {
		key_of(k, sizeof(k), i);
		assert_ok(kvshm_get_ex(kv, KS(k), v, sizeof(v), &item, 0));
		if (i % 10 == 0) {
			int64_t c;
			assert_true(item.counter);
			memcpy(&c, v, sizeof(c));
			assert_int_equal(c, i);
			continue;
		}
		assert_null(tu_val_verify(v, item.value_len, (uint32_t)i, NULL));
		assert_int_equal(item.flags, (uint32_t)i);
		if (i % 4)
			assert_int_equal(item.ttl_ms, -1);
		else
			assert_true(item.ttl_ms > 3500 * 1000);
	}
}

static void fill(struct kvshm *kv)
{
	fill_n(kv, NKEYS);
}

static void verify(struct kvshm *kv)
{
	verify_n(kv, NKEYS);
}

static void test_resize_keeps_every_item_and_moves_open_handles(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB), big = tu_opts(0, 16 * TU_MIB);
	const char *name;
	struct kvshm *kv = tu_create(fx, &o, &name);
	struct kvshm_stats st;

	fill(kv);
	assert_ok(kvshm_resize(name, &big));
	verify(kv); /* the old handle switched on its own */
	assert_ok(kvshm_stats(kv, &st));
	assert_int_equal(st.arena_bytes, 16 * TU_MIB);
	assert_int_equal(st.items, NKEYS);
	verify(tu_open(fx, name, NULL)); /* and new opens find the new one */
	tu_check(kv);
}

static void test_resize_that_cannot_fit_changes_nothing(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 8 * TU_MIB), small = tu_opts(0, 2 * TU_MIB);
	const char *name;
	struct kvshm *kv = tu_create(fx, &o, &name);
	uint8_t v[3000] = {0};
	char k[32];

	for (int i = 0; i < 1500; i++) { /* ~4.5 MiB of values */
		key_of(k, sizeof(k), i);
		assert_ok(kvshm_set(kv, KS(k), v, sizeof(v), 0));
	}
	assert_true(kvshm_resize(name, &small) < 0);
	assert_ok(kvshm_set(kv, KS("after"), "x", 1, 0));
	for (int i = 0; i < 1500; i++) {
		key_of(k, sizeof(k), i);
		assert_int_equal(kvshm_exists(kv, KS(k)), 1);
	}
	assert_int_equal(atomic_load(&kv__cur(kv)->hdr->life), KV_LIFE_LIVE);
	tu_check(kv);
}

/* ---- writers running through a resize ---------------------------------- */

#define WRITERS 3
#define SPACE 2000 /* keys per writer: small enough that nothing is evicted */

struct acks {
	_Atomic int stop;
	_Atomic long sets[WRITERS];  /* writes 0 .. sets-1 acknowledged */
	_Atomic long incrs[WRITERS];
};

struct writer_arg {
	struct kvshm *kv; /* opened before fork, before the resize */
	struct acks *acks;
	int id;
};

/* Write i goes to key w<id>-<i % SPACE> with value "<i>". */
static void writer(void *p)
{
	struct writer_arg *a = p;
	char k[48], v[32], c[32];

	snprintf(c, sizeof(c), "ctr-%d", a->id);
	for (long i = 0; !atomic_load(&a->acks->stop); i++) {
		snprintf(k, sizeof(k), "w%d-%ld", a->id, i % SPACE);
		snprintf(v, sizeof(v), "%ld", i);
		CHILD_ASSERT_RC(kvshm_set(a->kv, KS(k), v, strlen(v), 0), 0);
		atomic_store(&a->acks->sets[a->id], i + 1);
		CHILD_ASSERT_RC(kvshm_incr(a->kv, KS(c), 1, 0, NULL), 0);
		atomic_store(&a->acks->incrs[a->id], i + 1);
	}
}

/* Every key holds the last value acknowledged for it. */
static void verify_writer(struct kvshm *kv, int w, long n)
{
	char k[48], v[32], got[32];
	size_t len;

	for (long j = 0; j < SPACE && j < n; j++) {
		long last = j + (n - 1 - j) / SPACE * SPACE;
		snprintf(k, sizeof(k), "w%d-%ld", w, j);
		snprintf(v, sizeof(v), "%ld", last);
		assert_ok(kvshm_get(kv, KS(k), got, sizeof(got), &len));
		assert_int_equal(len, strlen(v));
		assert_memory_equal(got, v, len);
	}
}

static void test_resize_under_writers_loses_no_acknowledged_write(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 16 * TU_MIB), big = tu_opts(0, 48 * TU_MIB);
	const char *name;
	struct kvshm *kv = tu_create(fx, &o, &name);
	struct acks *acks = tu_shared(sizeof(*acks));
	struct writer_arg args[WRITERS];
	pid_t pids[WRITERS];
	long before = 0, total = 0;
	struct kvshm_stats st;

	for (int w = 0; w < WRITERS; w++) {
		args[w] = (struct writer_arg){kv, acks, w};
		pids[w] = tu_spawn(fx, writer, &args[w]);
	}
	tu_sleep_ms(300);
	for (int w = 0; w < WRITERS; w++)
		before += atomic_load(&acks->sets[w]);
	assert_ok(kvshm_resize(name, &big));
	tu_sleep_ms(300);
	atomic_store(&acks->stop, 1);
	for (int w = 0; w < WRITERS; w++) {
		int status = tu_wait(fx, pids[w]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	for (int w = 0; w < WRITERS; w++) {
		char k[32];
		int64_t c;
		long n = atomic_load(&acks->sets[w]);
		verify_writer(kv, w, n);
		snprintf(k, sizeof(k), "ctr-%d", w);
		assert_ok(kvshm_counter(kv, KS(k), &c));
		assert_int_equal(c, atomic_load(&acks->incrs[w]));
		total += n;
	}
	print_message("%ld acknowledged writes before the resize, %ld in all; "
		      "every key holds its last acknowledged value\n",
		      before, total);
	assert_true(total > before); /* writes went on during/after it */
	assert_ok(kvshm_stats(kv, &st));
	assert_int_equal(st.arena_bytes, 48 * TU_MIB);
	assert_int_equal(st.evictions, 0);
	tu_check(kv);
}

/* ---- a resizer killed half-way ----------------------------------------- */

static bool full_mode(void)
{
	const char *e = getenv("KVSHM_CRASH_FULL");

	return e && *e && strcmp(e, "0") != 0;
}

struct resize_arg {
	const char *name;
	uint64_t arena;   /* the new size */
	long crash_at;
	bool recover;     /* kvshm_check() then a write, instead of resizing */
	int fd[2];
};

/* Child: resize (or, with recover, recover the store as any user would:
 * kvshm_check() rolls back a dead resizer's work, then a write), armed at
 * crash_at; report the crash points passed. */
static void resizer(void *p)
{
	struct resize_arg *a = p;
	struct kvshm_options big = tu_opts(0, a->arena);
	struct kvshm *kv = NULL;
	char report[256];
	long points;
	int rc;

	if (a->recover && kvshm_open(a->name, NULL, &kv) != 0)
		_exit(3);
	kv__self.lane = 0; /* the same path every run */
	kvshm__test_crash_after(a->crash_at);
	if (a->recover) {
		rc = kvshm_check(kv, report, sizeof(report));
		if (rc == 0)
			rc = kvshm_set(kv, KS("recovered"), "y", 1, 0);
	} else {
		rc = kvshm_resize(a->name, &big);
	}
	points = kvshm__test_crashpoints();
	kvshm__test_crash_after(0);
	if (write(a->fd[1], &points, sizeof(points)) != sizeof(points))
		_exit(2);
	kvshm_close(kv);
	_exit(rc == 0 ? 0 : 1);
}

/* Run a resizer (or recoverer) armed at `at`; the crash points it passed,
 * or -1 if it was killed. */
static long run_resizer_ex(struct tu_fx *fx, const char *name, uint64_t arena,
			   long at, bool recover)
{
	struct resize_arg a = {.name = name, .arena = arena, .crash_at = at,
			       .recover = recover};
	long points = -1;
	int status;

	assert_int_equal(pipe(a.fd), 0);
	status = tu_wait(fx, tu_spawn(fx, resizer, &a));
	close(a.fd[1]);
	if (read(a.fd[0], &points, sizeof(points)) != sizeof(points))
		points = -1; /* killed */
	close(a.fd[0]);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		assert_true(points >= 0);
	else if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail_msg("resizer (at %ld) neither finished nor was killed "
			 "(status %#x)", at, (unsigned)status);
	return points;
}

static long run_resizer(struct tu_fx *fx, const char *name, long at)
{
	return run_resizer_ex(fx, name, 8 * TU_MIB, at, false);
}

/* A sample of the crash points of a big resize (every one with
 * KVSHM_CRASH_FULL=1). */
static void test_resizer_killed_anywhere_leaves_a_working_store(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	const char *name;
	struct kvshm *kv = tu_create(fx, &o, &name);
	const bool full = full_mode();
	long points, tried = 0;

	fill(kv);
	points = run_resizer(fx, name, 0); /* dry run: how many points */
	assert_true(points > 10);
	verify(kv);
	for (long n = 1; n <= points;
	     n += full || n < 40 ? 1 : points / 25) {
		char extra[32];
		tu_watchdog(30);
		run_resizer(fx, name, n);
		/* the next write finishes or undoes what the resizer left */
		snprintf(extra, sizeof(extra), "extra-%ld", n);
		assert_ok(kvshm_set(kv, KS(extra), "x", 1, 0));
		verify(kv);
		tu_check(kv);
		tried++;
	}
	tu_watchdog(0);
	print_message("resize of %d keys: %ld crash points, %ld killed runs "
		      "checked%s\n", NKEYS, points, tried,
		      full ? " (every point)" : " (a sample; every point with "
						"KVSHM_CRASH_FULL=1)");
}

/* ---- every crash point of a small resize -------------------------------- */

#define SMALL_KEYS 30

/* No object of the store's name or its temporary names (NAME.resize-PID)
 * is left. */
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

/* A fresh 1 MiB store with SMALL_KEYS keys and a fixed hash seed (so every
 * run copies the keys in the same order through the same points). */
static struct kvshm *small_store(struct tu_fx *fx, const char *name)
{
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, TU_MIB);
	struct kvshm *kv = tu_open(fx, name, &o);
	struct kv__header *h = kv__cur(kv)->hdr;

	h->hash_seed[0] = UINT64_C(0x0123456789abcdef);
	h->hash_seed[1] = UINT64_C(0xfedcba9876543210);
	h->header_check = kv__header_check(h);
	tu_close(fx, kv);
	kv = tu_open(fx, name, NULL);
	kv__self.lane = 0;
	fill_n(kv, SMALL_KEYS);
	return kv;
}

/* One run: a resizer killed at n (0 = not armed), then, if m >= 0, a
 * recoverer armed at m (0 = not armed); then the parent checks that every
 * key is intact, that the store works and is consistent, and that nothing
 * is left in /dev/shm once it is unlinked. Returns the points the last
 * child passed, or -1 if it was killed. */
static long small_run(struct tu_fx *fx, const char *name, long n, long m,
		      uint64_t *recoveries)
{
	struct kvshm *kv;
	struct kvshm_stats st;
	long points;

	tu_watchdog(30);
	kv = small_store(fx, name);
	points = run_resizer_ex(fx, name, 2 * TU_MIB, n, false);
	if (m >= 0) {
		assert_true(points < 0);
		points = run_resizer_ex(fx, name, 2 * TU_MIB, m, true);
	}
	verify_n(kv, SMALL_KEYS); /* readers need no recovery */
	tu_check(kv);             /* rolls a dead resize back or forward */
	assert_ok(kvshm_set(kv, KS("after"), "x", 1, 0));
	verify_n(kv, SMALL_KEYS);
	tu_check(kv);
	assert_ok(kvshm_stats(kv, &st));
	*recoveries += st.lock_recoveries;
	tu_close(fx, kv);
	assert_ok(kvshm_unlink(name));
	assert_no_leftovers(name);
	tu_watchdog(0);
	return points;
}

static void test_small_resize_killed_at_every_point_then_during_recovery_loses_nothing(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *name = tu_new_name(fx, "rs");
	const bool full = full_mode();
	uint64_t recoveries = 0;
	long points, kills = 0, runs = 0, pairs = 0, second_kills = 0;
	long nfirst = 0, all_m_for = -1, max_q = 0;

	points = small_run(fx, name, 0, -1, &recoveries);
	assert_true(points > SMALL_KEYS);
	for (long n = 1;; n++) {
		const long got = small_run(fx, name, n, -1, &recoveries);
		runs++;
		if (got >= 0)
			break;
		kills++;
		assert_true(n <= points);
	}
	/* the new segment's seed is random, but with so few keys nothing
	 * is displaced there: every run passes the same points */
	assert_int_equal(kills, points);
	print_message("small resize (%d keys, 1 -> 2 MiB): %ld crash points "
		      "(dry run), %ld exercised, %ld kills, %" PRIu64
		      " lock recoveries\n",
		      SMALL_KEYS, points, runs, kills, recoveries);

	/* killed again while recovering: for 6 n spread over the resize
	 * (every n in full mode), every m of the recoverer's kvshm_check()
	 * and write */
	recoveries = 0;
	for (long n = 1; n <= points;
	     n += full ? 1 : (points + 5) / 6) {
		const long q = small_run(fx, name, n, 0, &recoveries);
		assert_true(q >= 0);
		nfirst++;
		if (q > max_q) {
			max_q = q;
			all_m_for = n;
		}
		for (long m = 1; m <= q + 1; m++) {
			const long got = small_run(fx, name, n, m, &recoveries);
			pairs++;
			if (m <= q)
				assert_true(got < 0);
			else
				assert_true(got >= 0);
			second_kills += got < 0;
		}
	}
	print_message("small resize, recovery killed too: %ld pairs (n, m) "
		      "over %ld first points, every m for each (up to %ld, "
		      "n=%ld), %ld second kills, %" PRIu64
		      " lock recoveries\n",
		      pairs, nfirst, max_q, all_m_for, second_kills,
		      recoveries);
}

/* Issue 13 item 2: a CAS version read before a resize must never be handed
 * out again after it. One stripe (max_items 50), so the old code's new
 * segment restarted the very sequence that produced v1. */
static void test_cas_versions_stay_unique_across_resizes_and_clear(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm_write cas = {.mode = KVSHM_CAS};
	const char *name;
	struct kvshm *kv;
	struct kvshm_item item;
	uint64_t v1, seen[64];
	int nseen = 0;
	char buf[16];

	o.max_items = 50;
	kv = tu_create(fx, &o, &name);
	assert_ok(kvshm_put(kv, KS("k"), "a", 1, NULL, &v1));
	seen[nseen++] = v1;
	for (int round = 0; round < 6; round++) {
		struct kvshm_options to = tu_opts(0, (round % 2 ? 4 : 8) * TU_MIB);
		uint64_t v;
		to.max_items = 50;
		assert_ok(kvshm_put(kv, KS("k"), "b", 1, NULL, &v));
		seen[nseen++] = v;
		assert_ok(kvshm_put(kv, KS("k"), "c", 1, NULL, &v));
		seen[nseen++] = v;
		/* a key deleted before the resize and made again after it */
		assert_ok(kvshm_put(kv, KS("gone"), "x", 1, NULL, &v));
		seen[nseen++] = v;
		assert_ok(kvshm_delete(kv, KS("gone")));
		if (round == 3)
			assert_ok(kvshm_clear(kv));
		else
			assert_ok(kvshm_resize(name, &to));
		assert_ok(kvshm_put(kv, KS("gone"), "y", 1, NULL, &v));
		seen[nseen++] = v;
		if (round != 3) {
			assert_ok(kvshm_get_ex(kv, KS("k"), buf, sizeof(buf),
					       &item, 0));
			seen[nseen++] = item.cas;
		} else {
			assert_ok(kvshm_put(kv, KS("k"), "c", 1, NULL, &v));
			seen[nseen++] = v;
		}
		/* A's CAS with the version it read first must fail */
		cas.cas = v1;
		assert_kv(kvshm_put(kv, KS("k"), "A", 1, &cas, NULL), -ESTALE);
		assert_kv(kvshm_delete_cas(kv, KS("gone"), seen[3]), -ESTALE);
	}
	for (int i = 0; i < nseen; i++)
		for (int j = i + 1; j < nseen; j++)
			if (seen[i] == seen[j])
				fail_msg("version %#llx handed out twice (#%d, #%d)",
					 (unsigned long long)seen[i], i, j);
	assert_ok(kvshm_get(kv, KS("k"), buf, sizeof(buf), NULL));
	assert_memory_equal(buf, "c", 1);
	tu_check(kv);
}


/* ---- readers after the rename (issue 13 item 3) ------------------------- */

struct rename_arg {
	const char *name;
	bool die;         /* killed right after the rename, or only paused */
	ino_t old_ino;    /* the object the name led to before */
	_Atomic int renamed;
	_Atomic int go;
};

/* At the first crash point after the rename: die, or pause until told. */
static void after_rename(long point, void *ctx)
{
	struct rename_arg *a = ctx;
	char path[TU_NAME_LEN + 16];
	struct stat st;

	(void)point;
	if (atomic_load(&a->renamed) ||
	    stat(tu_fs_path(a->name, path, sizeof(path)), &st) != 0 ||
	    st.st_ino == a->old_ino)
		return;
	if (a->die)
		kill(getpid(), SIGKILL);
	atomic_store(&a->renamed, 1);
	for (int i = 0; i < 10000 && !atomic_load(&a->go); i++)
		tu_sleep_ms(1);
}

static void resize_then_stop(void *p)
{
	struct rename_arg *a = p;
	struct kvshm_options big = tu_opts(0, 8 * TU_MIB);

	kvshm__test_hook(after_rename, a);
	CHILD_ASSERT_RC(kvshm_resize(a->name, &big), 0);
}

/* ms until kv reads "new" for k (the first read: 0), or -1 if it still
 * read the old value after 2 s. */
static long ms_until_new(struct kvshm *kv)
{
	const int64_t start = tu_mono_ms();
	char buf[8];
	size_t len;

	do {
		const int64_t t = tu_mono_ms();
		assert_ok(kvshm_get(kv, KS("k"), buf, sizeof(buf), &len));
		if (len == 3 && memcmp(buf, "new", 3) == 0)
			return (long)(t - start);
		tu_sleep_ms(100);
	} while (tu_mono_ms() - start < 2000);
	return -1;
}

/* A resizer killed (or stopped) right after its rename; a new opener
 * writes; handles opened before that only read. The bound of kvshm.h: an
 * operation that starts after the rename uses the new segment, so the
 * first read already sees the write. */
static void readers_follow_the_rename(struct tu_fx *fx, bool die)
{
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm_options ro_opts = tu_opts(KVSHM_RDONLY, 0);
	struct rename_arg *a = tu_shared(sizeof(*a));
	struct kvshm *kv, *rw, *ro, *fresh;
	char path[TU_NAME_LEN + 16], buf[8];
	struct kvshm_stats st;
	struct stat sb;
	long rw_ms, ro_ms;
	pid_t pid;

	kv = tu_create(fx, &o, &a->name);
	assert_ok(kvshm_set(kv, KS("k"), KS("old"), 0));
	rw = tu_open(fx, a->name, NULL);
	ro = tu_open(fx, a->name, &ro_opts);
	assert_ok(kvshm_get(rw, KS("k"), buf, sizeof(buf), NULL));
	assert_ok(kvshm_get(ro, KS("k"), buf, sizeof(buf), NULL));
	assert_int_equal(stat(tu_fs_path(a->name, path, sizeof(path)), &sb), 0);
	a->old_ino = sb.st_ino;
	a->die = die;
	tu_watchdog(30);
	pid = tu_spawn(fx, resize_then_stop, a);
	if (die) {
		const int status = tu_wait(fx, pid);
		assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	} else {
		while (!atomic_load(&a->renamed))
			tu_sleep_ms(1);
	}
	fresh = tu_open(fx, a->name, NULL);
	assert_ok(kvshm_stats(fresh, &st));
	assert_int_equal(st.arena_bytes, 8 * TU_MIB); /* the new segment */
	assert_ok(kvshm_set(fresh, KS("k"), KS("new"), 0));
	ro_ms = ms_until_new(ro);
	rw_ms = ms_until_new(rw);
	print_message("resizer %s after its rename: the read-only handle read "
		      "the new value after %ld ms, the read-write one after "
		      "%ld ms (-1: still the old after 2 s)\n",
		      die ? "killed" : "stopped", ro_ms, rw_ms);
	if (!die) {
		atomic_store(&a->go, 1);
		tu_reap(fx, pid);
	}
	assert_int_equal(ro_ms, 0);
	assert_int_equal(rw_ms, 0);
	assert_ok(kvshm_stats(ro, &st));
	assert_int_equal(st.arena_bytes, 8 * TU_MIB);
	tu_check(rw); /* rolls a dead resizer's resize forward */
	assert_ok(kvshm_set(kv, KS("k2"), KS("x"), 0));
	assert_ok(kvshm_get(fresh, KS("k2"), buf, sizeof(buf), NULL));
	tu_watchdog(0);
}

static void test_readers_see_a_write_made_after_a_dead_resizers_rename(void **state)
{
	readers_follow_the_rename(tu_fx(state), true);
}

static void test_readers_see_a_write_made_between_the_rename_and_the_retirement(void **state)
{
	readers_follow_the_rename(tu_fx(state), false);
}


/* ---- a failed undo, a slow copy (issue 13 item 9) ----------------------- */

/* A resize that cannot fit fails half-way, and its undo fails too (a
 * stripe lock "timed out" at the first stripe): the stripes stay MOVED, so
 * the segment must stay MIGRATING for the next writer to undo them, rather
 * than be LIVE with stripes that answer -ENOTRECOVERABLE for good. */
static void test_a_failed_undo_is_redone_by_the_next_writer(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 8 * TU_MIB), small = tu_opts(0, 2 * TU_MIB);
	const char *name;
	struct kvshm *kv;
	uint8_t v[3000] = {0};
	uint32_t moved = 0;
	char k[32];
	int64_t c;

	o.max_value_bytes = 4096; /* so that a 2 MiB copy starts at all */
	kv = tu_create(fx, &o, &name);
	for (int i = 0; i < 1500; i++) { /* ~4.5 MiB of values */
		key_of(k, sizeof(k), i);
		assert_ok(kvshm_set(kv, KS(k), v, sizeof(v), 0));
	}
	assert_ok(kvshm_incr(kv, KS("ctr"), 5, 0, NULL));
	kv__test_fail_undo = 1;
	assert_kv(kvshm_resize(name, &small), -ENOSPC);
	kv__test_fail_undo = 0;
	for (uint32_t s = 0; s < kv__cur(kv)->nstripes; s++)
		moved += !!(atomic_load(&kv__cur(kv)->gens[s]) & KV_GEN_MOVED);
	print_message("the copy failed after %u of %u stripes, the undo at "
		      "the first\n", moved, kv__cur(kv)->nstripes);
	assert_true(moved > 0);
	/* left for the next writer, not declared LIVE */
	assert_int_equal(atomic_load(&kv__cur(kv)->hdr->life),
			 KV_LIFE_MIGRATING);
	for (int i = 0; i < 1500; i++) {
		key_of(k, sizeof(k), i);
		assert_ok(kvshm_set(kv, KS(k), "w", 1, 0));
		assert_int_equal(kvshm_exists(kv, KS(k)), 1);
	}
	assert_ok(kvshm_incr(kv, KS("ctr"), 1, 0, &c));
	assert_int_equal(c, 6);
	assert_int_equal(atomic_load(&kv__cur(kv)->hdr->life), KV_LIFE_LIVE);
	for (uint32_t s = 0; s < kv__cur(kv)->nstripes; s++)
		assert_false(atomic_load(&kv__cur(kv)->gens[s]) & KV_GEN_MOVED);
	tu_check(kv);
}

struct slow_arg {
	const char *name;
	uint32_t moved;     /* stripes seen MOVED so far (resizer only) */
	struct kvshm *kv;   /* the resizer's view of the old segment */
};

/* Sleep 100 ms each time the resize has copied another stripe: a slow
 * copy that keeps making progress. */
static void slow_copy(long point, void *ctx)
{
	struct slow_arg *a = ctx;
	struct kv__seg *seg = kv__cur(a->kv);
	uint32_t n = a->moved;

	(void)point;
	while (n < seg->nstripes && (atomic_load(&seg->gens[n]) & KV_GEN_MOVED))
		n++;
	if (n != a->moved) {
		a->moved = n;
		tu_sleep_ms(100);
	}
}

static void slow_resizer(void *p)
{
	struct slow_arg *a = p;
	struct kvshm_options big = tu_opts(0, 8 * TU_MIB);

	CHILD_ASSERT_RC(kvshm_open(a->name, NULL, &a->kv), 0);
	kvshm__test_hook(slow_copy, a);
	CHILD_ASSERT_RC(kvshm_resize(a->name, &big), 0);
}

/* A write that meets stripe 0 moved waits for the whole copy (about 3 s
 * of 100 ms steps) although the wait for a stalled resize is set to
 * 300 ms: the bound follows the copy's progress. */
static void test_a_write_waits_for_a_slow_resize_as_long_as_it_progresses(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct slow_arg a = {0};
	struct kvshm *kv = tu_create(fx, &o, &a.name);
	struct kv__seg *seg = kv__cur(kv);
	struct kv__key key;
	char k[32], buf[8];
	int64_t start, waited;
	pid_t pid;
	int i = 0, rc;

	fill(kv);
	do { /* a key of stripe 0, the first one copied */
		snprintf(k, sizeof(k), "s0-%d", i++);
		kv__key_init(seg, &key, k, strlen(k));
	} while (key.stripe != 0);
	assert_true(seg->nstripes >= 16);
	tu_watchdog(60);
	pid = tu_spawn(fx, slow_resizer, &a);
	while (!(atomic_load(&seg->gens[0]) & KV_GEN_MOVED))
		tu_sleep_ms(1);
	kv__test_move_wait_ns = 300 * 1000 * 1000LL;
	start = tu_mono_ms();
	rc = kvshm_set(kv, KS(k), KS("late"), 0);
	waited = tu_mono_ms() - start;
	kv__test_move_wait_ns = 0;
	print_message("a write on stripe 0 of %u waited %lld ms for the copy "
		      "(no-progress bound 300 ms): %d (%s)\n", seg->nstripes,
		      (long long)waited, rc, kvshm_strerror(rc));
	assert_ok(rc);
	assert_true(waited > 1000);
	tu_reap(fx, pid);
	assert_ok(kvshm_get(tu_open(fx, a.name, NULL), KS(k), buf, sizeof(buf),
			    NULL));
	verify(kv);
	tu_watchdog(0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_resize_keeps_every_item_and_moves_open_handles),
		T(test_resize_that_cannot_fit_changes_nothing),
		T(test_resize_under_writers_loses_no_acknowledged_write),
		T(test_resizer_killed_anywhere_leaves_a_working_store),
		T(test_small_resize_killed_at_every_point_then_during_recovery_loses_nothing),
		T(test_cas_versions_stay_unique_across_resizes_and_clear),
		T(test_readers_see_a_write_made_after_a_dead_resizers_rename),
		T(test_readers_see_a_write_made_between_the_rename_and_the_retirement),
		T(test_a_failed_undo_is_redone_by_the_next_writer),
		T(test_a_write_waits_for_a_slow_resize_as_long_as_it_progresses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
