/* SPDX-License-Identifier: MIT */
/*
 * test_full.c - full stores, both kinds. An evicting store must fit any
 * value up to max_value_bytes and evict about what a write needs, in CLOCK
 * order; a NOEVICT store must keep overwriting its own keys and have room
 * again after a clear; in either, a failed conditional write changes
 * nothing, and no write evicts the key it is conditioned on.
 */
#include "testutil.h"

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_bare, tu_teardown)

static struct kvshm_stats stats_of(struct kvshm *kv)
{
	struct kvshm_stats st;

	assert_ok(kvshm_stats(kv, &st));
	return st;
}

static struct kvshm *create_store(void **state, uint32_t flags,
				  uint64_t arena, uint64_t max_items,
				  uint32_t max_value)
{
	struct kvshm_options o = tu_opts(flags, arena);

	o.max_items = max_items;
	o.max_value_bytes = max_value;
	return tu_create(tu_fx(state), &o, NULL);
}

/* Write small keys k0, k1, ... of vlen bytes until the store evicts (an
 * evicting store) or refuses (NOEVICT); returns how many are stored. */
static int fill(struct kvshm *kv, const char *prefix, size_t vlen)
{
	char key[64], val[4096];
	uint64_t evicted = stats_of(kv).evictions;
	int n;

	assert_true(vlen <= sizeof(val));
	memset(val, 'v', vlen);
	for (n = 0;; n++) {
		int rc;
		snprintf(key, sizeof(key), "%s%d", prefix, n);
		rc = kvshm_set(kv, KS(key), val, vlen, 0);
		if (rc == -ENOSPC)
			return n;
		assert_ok(rc);
		if (stats_of(kv).evictions != evicted)
			return n + 1;
		assert_true(n < 10 * 1000 * 1000);
	}
}

/* Issue 13 item 4: an evicting store whose small items are read must fit a
 * value of nearly max_value_bytes. The old reclaim moved the same read
 * items back and forth between two segments until its 16 attempts gave
 * -ENOSPC (153 of 200 sets). */
static void test_evicting_store_fits_any_value_up_to_its_limit(void **state)
{
	struct kvshm *kv = create_store(state, 0, 16 * TU_MIB, 0, TU_MIB);
	static char big[900000];
	char key[32], buf[1024];
	int failed = 0, n = 0;

	memset(big, 'b', sizeof(big));
	for (int round = 0; round < 200; round++) {
		/* read items, the kind the cleaner keeps */
		for (int i = 0; i < 400; i++, n++) {
			memset(buf, 'a' + n % 26, sizeof(buf));
			snprintf(key, sizeof(key), "small%d", n % 8000);
			assert_ok(kvshm_set(kv, KS(key), buf, sizeof(buf), 0));
			kvshm_get(kv, KS(key), buf, sizeof(buf), NULL);
		}
		snprintf(key, sizeof(key), "big%d", round % 4);
		int rc = kvshm_set(kv, KS(key), big, sizeof(big), 0);
		if (rc != 0) {
			assert_kv(rc, -ENOSPC);
			failed++;
		}
	}
	print_message("900,000-byte sets failed: %d of 200\n", failed);
	assert_int_equal(failed, 0);
	tu_check(kv);
}

/* Issue 13 item 12: values over half a segment, alternating sizes. The old
 * reclaim gave -ENOSPC at write 21 with 385 KB free (3,331 of 20,000). */
static void test_evicting_store_takes_alternating_large_values(void **state)
{
	struct kvshm *kv = create_store(state, 0, TU_MIB, 0, 0);
	static char val[40000];
	struct kvshm_stats st = stats_of(kv);
	char key[16];
	int failed = 0, first = -1;

	assert_true(st.max_value_bytes >= sizeof(val));
	assert_true(40000 > st.segment_bytes / 2); /* the case under test */
	for (int i = 0; i < 20000; i++) {
		size_t len = i % 2 ? 40000 : 30000;
		memset(val, 'a' + i % 26, len);
		snprintf(key, sizeof(key), "k%d", i % 12);
		int rc = kvshm_set(kv, KS(key), val, len, 0);
		if (rc != 0) {
			assert_kv(rc, -ENOSPC);
			if (first < 0)
				first = i;
			failed++;
		}
	}
	print_message("alternating 30,000/40,000-byte sets failed: %d of "
		      "20,000 (first at %d)\n", failed, first);
	assert_int_equal(failed, 0);
	tu_check(kv);
}

/* Issue 13 item 12, the larger case: 80 keys, values up to 1,000,000 bytes. */
static void test_evicting_store_takes_values_up_to_a_megabyte(void **state)
{
	struct kvshm *kv = create_store(state, 0, 64 * TU_MIB, 0, 0);
	static char val[1000000];
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	char key[16];
	int failed = 0;

	memset(val, 'x', sizeof(val));
	for (int i = 0; i < 2000; i++) {
		size_t len = 1 + tu_rand(&seed) % sizeof(val);
		snprintf(key, sizeof(key), "k%d", (int)(tu_rand(&seed) % 80));
		int rc = kvshm_set(kv, KS(key), val, len, 0);
		if (rc != 0) {
			assert_kv(rc, -ENOSPC);
			failed++;
		}
	}
	print_message("sets of up to 1,000,000 bytes failed: %d of 2,000\n",
		      failed);
	assert_int_equal(failed, 0);
	tu_check(kv);
}

/* Issue 13 item 13: the first write that needs room evicts about what it
 * needs (old code: a whole segment, 621 items in a 1 MiB store), and the
 * items evicted are the ones not read (CLOCK order). */
static void test_a_write_evicts_about_what_it_needs(void **state)
{
	struct kvshm *kv = create_store(state, 0, TU_MIB, 0, 0);
	struct kvshm_stats st = stats_of(kv);
	const uint64_t batch_items = st.segment_bytes / 8 / 100 + 2;
	uint64_t worst = 0, reclaiming = 0, evicted = 0;
	char key[32], val[100], buf[100];
	int n = fill(kv, "k", sizeof(val)), lost_read = 0, nread = 0;

	/* read every third key still there: those have a second chance */
	for (int i = 0; i < n; i += 3) {
		snprintf(key, sizeof(key), "k%d", i);
		nread += kvshm_get(kv, KS(key), buf, sizeof(buf), NULL) == 0;
	}
	memset(val, 'n', sizeof(val));
	for (int i = 0; i < 1500; i++) {
		uint64_t before = stats_of(kv).evictions, d;
		snprintf(key, sizeof(key), "new%d", i);
		assert_ok(kvshm_set(kv, KS(key), val, sizeof(val), 0));
		d = stats_of(kv).evictions - before;
		if (d) {
			reclaiming++;
			evicted += d;
		}
		if (d > worst)
			worst = d;
	}
	for (int i = 0; i < n; i += 3) {
		snprintf(key, sizeof(key), "k%d", i);
		lost_read += kvshm_exists(kv, KS(key)) != 1;
	}
	lost_read -= (n + 2) / 3 - nread; /* gone before they were read */
	print_message("%d items of 100 B fill the store; 1,500 new writes: %" PRIu64
		      " needed room, %" PRIu64 " items evicted (at most %" PRIu64
		      " by one write; batch bound %" PRIu64 "); %d read items "
		      "evicted\n",
		      n, reclaiming, evicted, worst, batch_items, lost_read);
	assert_true(reclaiming > 0);
	assert_true(worst <= batch_items);
	assert_int_equal(lost_read, 0); /* 1,500 writes need less room than
					   the unread two thirds hold */
	tu_check(kv);
}

/* Issue 13 item 5: right after a clear a full NOEVICT store has room. The
 * old code answered -ENOSPC (100 of 100) until someone swept. */
static void test_noevict_store_has_room_right_after_a_clear(void **state)
{
	struct kvshm *kv = create_store(state, KVSHM_NOEVICT, TU_MIB, 0, 0);
	char key[32], val[200];
	int n = fill(kv, "k", sizeof(val)), failed = 0;

	assert_true(n > 100);
	assert_ok(kvshm_clear(kv));
	memset(val, 'c', sizeof(val));
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "after%d", i);
		failed += kvshm_set(kv, KS(key), val, sizeof(val), 0) != 0;
	}
	print_message("%d keys filled the store; after clear, %d of 100 sets "
		      "failed\n", n, failed);
	assert_int_equal(failed, 0);
	/* and the store fills again to about the same size */
	assert_true(fill(kv, "again", sizeof(val)) + 100 >= n * 9 / 10);
	tu_check(kv);
}

/* Issue 13 item 14: a full NOEVICT store keeps overwriting its own keys
 * (old code: the first same-size overwrite answered -ENOSPC). */
static void test_full_noevict_store_overwrites_its_own_keys(void **state)
{
	struct kvshm *kv = create_store(state, KVSHM_NOEVICT, TU_MIB, 0, 0);
	uint64_t seed = 42;
	char key[32], val[300], buf[300];
	int n = fill(kv, "k", sizeof(val)), failed = 0;
	static char last[100000];

	assert_true(n > 100 && n <= (int)sizeof(last));
	memset(last, 'v', (size_t)n);
	for (int i = 0; i < 20 * n; i++) {
		int j = i < 2 * n ? i % n : (int)(tu_rand(&seed) % (uint64_t)n);
		snprintf(key, sizeof(key), "k%d", j);
		memset(val, 'a' + i % 26, sizeof(val));
		int rc = kvshm_set(kv, KS(key), val, sizeof(val), 0);
		if (rc) {
			assert_kv(rc, -ENOSPC);
			failed++;
		} else {
			last[j] = val[0];
		}
	}
	/* every key holds its last value */
	for (int j = 0; j < n; j++) {
		snprintf(key, sizeof(key), "k%d", j);
		assert_ok(kvshm_get(kv, KS(key), buf, sizeof(buf), NULL));
		assert_int_equal(buf[0], last[j]);
	}
	print_message("%d keys fill the store; %d of %d same-size overwrites "
		      "failed\n", n, failed, 20 * n);
	assert_int_equal(failed, 0);
	tu_check(kv);
}

/* Issue 13 item 11: in a full store a conditional write that fails answers
 * for its condition and changes nothing: no eviction, no lost item. */
static void conditional_failures_change_nothing(void **state, uint32_t flags)
{
	struct kvshm *kv = create_store(state, flags, TU_MIB, 0, 0);
	char key[32], val[2000];
	struct kvshm_item item;
	struct kvshm_write add = {.mode = KVSHM_ADD};
	struct kvshm_write rep = {.mode = KVSHM_REPLACE};
	struct kvshm_write cas = {.mode = KVSHM_CAS};
	int n = fill(kv, "k", 100);
	struct kvshm_stats before, after;

	char newest[32];

	snprintf(newest, sizeof(newest), "k%d", n - 1);
	assert_kv(kvshm_get_ex(kv, KS(newest), NULL, 0, &item, 0), -ENOBUFS);
	cas.cas = item.cas + 12345;
	memset(val, 'z', sizeof(val));
	before = stats_of(kv);
	for (int i = 0; i < 50; i++) {
		snprintf(key, sizeof(key), "k%d", n - 1 - i);
		assert_kv(kvshm_put(kv, KS(key), val, sizeof(val), &add, NULL),
			  -EEXIST);
		snprintf(key, sizeof(key), "missing%d", i);
		assert_kv(kvshm_put(kv, KS(key), val, sizeof(val), &rep, NULL),
			  -ENOENT);
		assert_kv(kvshm_put(kv, KS(key), val, sizeof(val), &cas, NULL),
			  -ENOENT);
		assert_kv(kvshm_put(kv, KS(newest), val, sizeof(val), &cas,
				    NULL),
			  -ESTALE);
	}
	after = stats_of(kv);
	assert_int_equal(after.evictions, before.evictions);
	assert_int_equal(after.items, before.items);
	assert_int_equal(after.segments_reclaimed, before.segments_reclaimed);
	tu_check(kv);
}

static void test_failed_conditional_writes_change_nothing_evicting(void **state)
{
	conditional_failures_change_nothing(state, 0);
}

static void test_failed_conditional_writes_change_nothing_noevict(void **state)
{
	conditional_failures_change_nothing(state, KVSHM_NOEVICT);
}

/* Make "lock" the one unread item of the store's least-live segment, with
 * no room left: the next write that needs 40,000 bytes reclaims that
 * segment, where the cleaner's first eviction would be "lock". Returns its
 * version (from the write: reading it would give it a second chance). */
static uint64_t make_lock_the_next_victim(struct kvshm *kv)
{
	char key[32], val[100], buf[100];
	uint64_t cas = 0;
	int n;

	memset(val, 'v', sizeof(val));
	assert_ok(kvshm_put(kv, KS("lock"), val, sizeof(val), NULL, &cas));
	for (n = 0;; n++) {
		struct kvshm_stats st = stats_of(kv);
		if (st.free_segments == 0 && st.largest_free_bytes < 40000)
			break;
		snprintf(key, sizeof(key), "fill%d", n);
		assert_ok(kvshm_set(kv, KS(key), val, sizeof(val), 0));
		assert_ok(kvshm_get(kv, KS(key), buf, sizeof(buf), NULL));
	}
	assert_int_equal(stats_of(kv).segments_reclaimed, 0);
	for (int i = 0; i < 100; i++) { /* "lock"'s neighbours */
		snprintf(key, sizeof(key), "fill%d", i);
		assert_ok(kvshm_delete(kv, KS(key)));
	}
	return cas;
}

/* Issue 13 item 11: a write's own reclaim never evicts the key it is
 * conditioned on. Old code: the REPLACE and the CAS answered -ENOENT after
 * evicting "lock" themselves, and the ADD succeeded, so a second holder
 * took a lock that was still held. */
static void test_a_write_never_evicts_the_key_it_is_conditioned_on(void **state)
{
	static char big[40000];
	const uint32_t modes[] = {KVSHM_ADD, KVSHM_REPLACE, KVSHM_CAS};
	int wrong = 0;

	memset(big, 'B', sizeof(big));
	for (int m = 0; m < 3; m++) {
		struct kvshm *kv = create_store(state, 0, TU_MIB, 0, 0);
		struct kvshm_write w = {.mode = modes[m]};
		uint64_t reclaims;
		int rc, want = modes[m] == KVSHM_ADD ? -EEXIST : 0;

		w.cas = make_lock_the_next_victim(kv);
		/* REPLACE and CAS: "lock" stays unread, the first item the
		 * reclaim would evict (mutant own-key-evicted: a read here gave
		 * it a second chance, and the test could not fail). ADD needs
		 * no room; the plain write after it, which may evict "lock",
		 * must not, because it was read. */
		if (modes[m] == KVSHM_ADD)
			assert_kv(kvshm_get(kv, KS("lock"), NULL, 0, NULL),
				  -ENOBUFS);
		reclaims = stats_of(kv).segments_reclaimed;
		rc = kvshm_put(kv, KS("lock"), big, sizeof(big), &w, NULL);
		print_message("mode %u on the next victim's unread key: %d (%s), "
			      "%" PRIu64 " reclaims\n",
			      modes[m], rc, kvshm_strerror(rc),
			      stats_of(kv).segments_reclaimed - reclaims);
		if (rc != want)
			wrong++;
		if (modes[m] == KVSHM_ADD) /* it needed no room: prove the
					      setup with a plain write */
			assert_ok(kvshm_set(kv, KS("other"), big, sizeof(big), 0));
		assert_true(stats_of(kv).segments_reclaimed > reclaims);
		assert_int_equal(kvshm_exists(kv, KS("lock")), 1);
		tu_check(kv);
	}
	assert_int_equal(wrong, 0);
}

/* Mutant drain-bit-kept: a read item's second chance lasts about one lap
 * of the cleaner's hand. Items read once and never again must go once the
 * hand has passed them twice, like any unread item; if the hand never
 * cleared the bit, a key read once would stay for ever and crowd out
 * every new write. */
static void test_a_second_chance_lasts_one_lap_of_the_hand(void **state)
{
	struct kvshm *kv = create_store(state, 0, TU_MIB, 0, 0);
	char key[32], val[100], buf[100];
	int n = fill(kv, "k", sizeof(val)), nread = 0, kept = 0;

	for (int i = 0; i < n; i++) { /* every key there is read once */
		snprintf(key, sizeof(key), "k%d", i);
		nread += kvshm_get(kv, KS(key), buf, sizeof(buf), NULL) == 0;
	}
	memset(val, 'n', sizeof(val));
	for (int i = 0; i < 5 * n; i++) { /* five times the store, unread */
		snprintf(key, sizeof(key), "new%d", i);
		assert_ok(kvshm_set(kv, KS(key), val, sizeof(val), 0));
	}
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		kept += kvshm_exists(kv, KS(key)) == 1;
	}
	print_message("%d keys read once, then %d new writes: %d of them "
		      "still there\n", nread, 5 * n, kept);
	assert_true(nread > n / 2);
	assert_true(kept < nread / 10);
	tu_check(kv);
}

/* Mutant move-takes-floor: when every item was read, the cleaner's first
 * pass evicts nothing (each only loses its bit) and the moves must leave
 * the waiting write its room in the destination. If the moves took it, the
 * destination would be left too full, the next reclaim would find no
 * destination, and an evicting store would then evict a whole segment at
 * once. A write still evicts about what it needs. */
static void test_a_write_evicts_about_what_it_needs_when_all_was_read(
	void **state)
{
	struct kvshm *kv = create_store(state, 0, TU_MIB, 0, 0);
	struct kvshm_stats st = stats_of(kv);
	const uint64_t batch_items = st.segment_bytes / 8 / 100 + 2;
	uint64_t worst = 0, reclaiming = 0;
	char key[32], val[100], buf[100];
	int n = fill(kv, "k", sizeof(val));

	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		kvshm_get(kv, KS(key), buf, sizeof(buf), NULL);
	}
	memset(val, 'n', sizeof(val));
	for (int i = 0; i < 3 * n; i++) {
		uint64_t before = stats_of(kv).evictions, d;
		snprintf(key, sizeof(key), "new%d", i);
		assert_ok(kvshm_set(kv, KS(key), val, sizeof(val), 0));
		d = stats_of(kv).evictions - before;
		reclaiming += d > 0;
		if (d > worst)
			worst = d;
	}
	print_message("%d items, all read, then %d new writes: %" PRIu64
		      " needed room, at most %" PRIu64 " evicted by one write "
		      "(batch bound %" PRIu64 ")\n",
		      n, 3 * n, reclaiming, worst, batch_items);
	assert_true(reclaiming > 0);
	assert_true(worst <= batch_items);
	tu_check(kv);
}

/* Mutant full-dest-kept: a NOEVICT store moves every live item, so a
 * compaction can leave its destination with less room than the next
 * write needs. That destination is sealed (compacted later like any
 * other) and an empty segment becomes the destination; kept instead, no
 * victim fits in its room and a store less than half full of live data
 * answers -ENOSPC. Values of mixed sizes, up to a third of a segment,
 * overwrite 16 keys, and one write in 13 is a small key that stays, so
 * that every segment holds live items to move. */
static void test_noevict_store_with_room_takes_overwrites_of_mixed_sizes(
	void **state)
{
	struct kvshm *kv = create_store(state, KVSHM_NOEVICT, TU_MIB, 0, 0);
	struct kvshm_stats st = stats_of(kv);
	const size_t most = st.segment_bytes / 3;
	static char val[65536];
	uint64_t seed = 7;
	char key[32];
	int failed = 0, first = -1;

	assert_true(most <= sizeof(val) && 16 * most < st.data_bytes / 2);
	memset(val, 'm', sizeof(val));
	for (int i = 0; i < 20000; i++) {
		size_t len = 1 + tu_rand(&seed) % most;
		snprintf(key, sizeof(key), "k%d", (int)(tu_rand(&seed) % 16));
		if (i % 13 == 0) {
			snprintf(key, sizeof(key), "stays%d", i);
			len = 100;
		}
		int rc = kvshm_set(kv, KS(key), val, len, 0);
		if (rc) {
			assert_kv(rc, -ENOSPC);
			if (first < 0)
				first = i;
			failed++;
		}
	}
	print_message("20,000 overwrites of 16 keys, 1 to %zu bytes, in a "
		      "NOEVICT store: %d failed (first at %d), %" PRIu64
		      " reclaims\n", most, failed, first,
		      stats_of(kv).segments_reclaimed);
	assert_int_equal(failed, 0);
	tu_check(kv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_evicting_store_fits_any_value_up_to_its_limit),
		T(test_evicting_store_takes_alternating_large_values),
		T(test_evicting_store_takes_values_up_to_a_megabyte),
		T(test_a_write_evicts_about_what_it_needs),
		T(test_noevict_store_has_room_right_after_a_clear),
		T(test_full_noevict_store_overwrites_its_own_keys),
		T(test_failed_conditional_writes_change_nothing_evicting),
		T(test_failed_conditional_writes_change_nothing_noevict),
		T(test_a_write_never_evicts_the_key_it_is_conditioned_on),
		T(test_a_second_chance_lasts_one_lap_of_the_hand),
		T(test_a_write_evicts_about_what_it_needs_when_all_was_read),
		T(test_noevict_store_with_room_takes_overwrites_of_mixed_sizes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
