/* SPDX-License-Identifier: MIT */
/*
 * test_resize.c - kvshm_resize() (shm/resize.c, shm/handle.c): every item
 * survives with its value, flags, counter and expiry; handles opened before
 * the resize move by themselves; writers running through it lose no
 * acknowledged write; a resize that cannot fit changes nothing; a resizer
 * killed at any of a sample of crash points leaves a working store.
 */
#include "testutil.h"

#include "internal.h"
#include "testing.h"

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_bare, tu_teardown)
#define NKEYS 2000

static void key_of(char *buf, size_t len, int i)
{
	snprintf(buf, len, "key-%05d", i);
}

/* Keys with values i*3 bytes long, flags i, every 4th with a TTL of an
 * hour, every 10th a counter holding i. */
static void fill(struct kvshm *kv)
{
	uint8_t v[TU_VAL_MAX];
	char k[32];

	for (int i = 0; i < NKEYS; i++) {
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

static void verify(struct kvshm *kv)
{
	uint8_t v[TU_VAL_MAX];
	struct kvshm_item item;
	char k[32];

	for (int i = 0; i < NKEYS; i++) {
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

struct resize_arg {
	const char *name;
	long crash_at;
	int fd[2];
};

static void resizer(void *p)
{
	struct resize_arg *a = p;
	struct kvshm_options big = tu_opts(0, 8 * TU_MIB);
	long points;
	int rc;

	kvshm__test_crash_after(a->crash_at);
	rc = kvshm_resize(a->name, &big);
	points = kvshm__test_crashpoints();
	if (write(a->fd[1], &points, sizeof(points)) != sizeof(points))
		_exit(2);
	_exit(rc == 0 ? 0 : 1);
}

static long run_resizer(struct tu_fx *fx, const char *name, long at)
{
	struct resize_arg a = {.name = name, .crash_at = at};
	long points = -1;
	int status;

	assert_int_equal(pipe(a.fd), 0);
	status = tu_wait(fx, tu_spawn(fx, resizer, &a));
	close(a.fd[1]);
	if (read(a.fd[0], &points, sizeof(points)) != sizeof(points))
		points = -1; /* killed */
	close(a.fd[0]);
	assert_true((WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
		    (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
	return points;
}

static void test_resizer_killed_anywhere_leaves_a_working_store(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	const char *name;
	struct kvshm *kv = tu_create(fx, &o, &name);
	long points, tried = 0;

	fill(kv);
	points = run_resizer(fx, name, 0); /* dry run: how many points */
	assert_true(points > 10);
	verify(kv);
	for (long n = 1; n <= points; n += n < 40 ? 1 : points / 25) {
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
	print_message("resize: %ld crash points, %ld killed runs checked\n",
		      points, tried);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_resize_keeps_every_item_and_moves_open_handles),
		T(test_resize_that_cannot_fit_changes_nothing),
		T(test_resize_under_writers_loses_no_acknowledged_write),
		T(test_resizer_killed_anywhere_leaves_a_working_store),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
