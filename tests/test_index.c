/* SPDX-License-Identifier: MIT */
/*
 * test_index.c - white-box tests of the index (shm/index.c): the slot word
 * encoding, lookups that stop early, capacity up to max_items, and the
 * lock-free counter's refusal to touch memory that holds another item.
 * Uses the internal header, so it links against the test archive.
 */
#include "testutil.h"

#include "internal.h"
#include "testing.h" /* kv__test_zero_seed */

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_bare, tu_teardown)

static void test_slot_word_round_trips_offset_disp_and_tag(void **state)
{
	struct kv__seg kv = {.stripe_buckets = 256};
	const uint64_t hash = UINT64_C(0x123456789abcdef1);
	const uint64_t off = (UINT64_C(1) << 40) - 16; /* near the 1 TiB cap */
	(void)state;

	for (unsigned disp = 0; disp < KV_MAX_PROBE; disp++) {
		uint64_t w = kv__slot_word(hash, off, disp);
		uint64_t b = 512 + (7 + disp) % 256; /* home 519 in stripe 2 */
		assert_int_equal(kv__slot_off(w), off);
		assert_int_equal(kv__slot_disp(w), disp);
		assert_true(kv__slot_tag_matches(w, hash));
		assert_false(w & KV_SLOT_VISITED);
		assert_int_equal(kv__slot_home(&kv, b, w), 519);
	}
	/* a home near the end of its stripe wraps inside the stripe */
	assert_int_equal(kv__probe(&kv, 767, 3), 514);
	assert_int_equal(kv__slot_home(&kv, 514, kv__slot_word(hash, off, 3)),
			 767);
}

/* A store that may not evict takes about max_items small items before any
 * index window is full (with too-short probe windows it stopped at ~42%). */
static void test_noevict_store_holds_max_items_before_an_index_window_fills(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_NOEVICT, 8 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct kvshm_stats st;
	char key[32];
	uint64_t n = 0;
	int rc;

	assert_ok(kvshm_stats(kv, &st));
	for (;;) {
		snprintf(key, sizeof(key), "k-%012llu", (unsigned long long)n);
		rc = kvshm_set(kv, key, strlen(key), "v", 1, 0);
		if (rc)
			break;
		n++;
	}
	assert_kv(rc, -ENOSPC);
	assert_ok(kvshm_stats(kv, &st));
	print_message("NOEVICT 8 MiB: %llu small items of max_items %llu, "
		      "index-full refusals %llu\n",
		      (unsigned long long)n, (unsigned long long)st.max_items,
		      (unsigned long long)st.fail_index_full);
	assert_true(n >= st.max_items * 95 / 100);
	tu_check(kv);
}

/* Lookups of missing keys in a store whose buckets rarely overflow read
 * only the home bucket: the overflow count lets them stop there. */
static void test_miss_in_a_bucket_without_overflow_reads_one_bucket(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 8 * TU_MIB);
	struct kvshm *h = tu_create(fx, &o, NULL);
	struct kv__seg *kv = kv__cur(h);
	struct kv__key k;
	struct kv__hit hit;
	unsigned checked = 0;

	assert_ok(kvshm_set(h, KS("present"), "v", 1, 0));
	for (unsigned i = 0; i < 1000; i++) {
		char key[32];
		snprintf(key, sizeof(key), "missing-%u", i);
		kv__key_init(kv, &k, key, strlen(key));
		if ((atomic_load(&kv->buckets[k.home].meta) >>
		     KV_META_OVF_SHIFT) != 0)
			continue;
		/* poison the next bucket's meta: a read of it would retry
		 * forever (odd seq), so a miss that returns read only home */
		uint64_t next = kv__probe(kv, k.home, 1);
		uint64_t m = atomic_load(&kv->buckets[next].meta);
		atomic_store(&kv->buckets[next].meta, m | 1);
		assert_int_equal(kv__read(kv, &k, NULL, 0, &hit), 0);
		atomic_store(&kv->buckets[next].meta, m);
		checked++;
	}
	assert_true(checked > 900);
	tu_check(h);
}

/*
 * The regression behind the lock-free incr: a process finds a counter,
 * stalls, and meanwhile the counter is replaced and its memory reused. Its
 * CAS must refuse memory whose version has another creation id, and must
 * refuse a frozen (unlinked) counter.
 */
static void test_lock_free_incr_refuses_memory_of_another_item(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm *h = tu_create(fx, &o, NULL);
	struct kv__seg *kv = kv__cur(h);
	struct kv__key k;
	struct kv__hit hit;
	struct kv__item *it;
	int64_t v = 0, res;
	uint64_t saved_v, saved_c;

	assert_ok(kvshm_incr(h, KS("ctr"), 5, 0, &v));
	kv__key_init(kv, &k, "ctr", 3);
	assert_int_equal(kv__read(kv, &k, NULL, 0, &hit), 1);
	it = kv__item_at(kv, hit.off);
	saved_v = atomic_load(&it->version);
	saved_c = atomic_load(&it->cvalue);

	/* the same item: the stale view still works, and bumps the version */
	assert_ok(kv__counter_add(kv, hit.off, hit.version, 1, &res));
	assert_int_equal(res, 6);

	/* reuse: the memory now holds an item with another creation id */
	atomic_store(&it->version,
		     saved_v + (UINT64_C(1) << KV_VER_ID_SHIFT) + 1);
	assert_kv(kv__counter_add(kv, hit.off, hit.version, 1, &res), -EAGAIN);
	assert_int_equal(atomic_load(&it->cvalue), saved_c + 1); /* untouched */

	/* frozen (unlinked or being moved): refused too */
	atomic_store(&it->version, (saved_v + 1) | KV_VER_FROZEN);
	assert_kv(kv__counter_add(kv, hit.off, hit.version, 1, &res), -EAGAIN);

	/* put it back as it was, so the store checks clean */
	atomic_store(&it->version, saved_v + 1);
	assert_ok(kvshm_counter(h, KS("ctr"), &v));
	assert_int_equal(v, 6);
	tu_check(h);
}

/* After 4095 lock-free increments the write count is used up: the next
 * incr makes a new item (new creation id) and the value carries over. */
static void test_incr_past_the_write_count_carries_the_value_over(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct kvshm_item item;
	uint64_t first_id;
	int64_t v = 0, buf;

	assert_ok(kvshm_incr(kv, KS("ctr"), 1, 0, &v));
	assert_ok(kvshm_get_ex(kv, KS("ctr"), &buf, sizeof(buf), &item, 0));
	first_id = item.cas >> KV_VER_ID_SHIFT;
	for (int i = 0; i < 10000; i++)
		assert_ok(kvshm_incr(kv, KS("ctr"), 1, 0, &v));
	assert_int_equal(v, 10001);
	assert_ok(kvshm_get_ex(kv, KS("ctr"), &buf, sizeof(buf), &item, 0));
	assert_true(item.counter);
	assert_int_equal(buf, 10001);
	assert_true((item.cas >> KV_VER_ID_SHIFT) != first_id);
	tu_check(kv);
}

/* With no free allocation segment left and plenty of garbage (values
 * overwritten many times), a sweep compacts a segment: free segments come
 * back, nothing is evicted, every key keeps its last value. */
static void test_sweep_compacts_garbage_when_no_segment_is_free(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct kvshm_stats st, st2;
	char key[32], val[600], got[600];
	size_t len;
	int round = 0;

	memset(val, 0, sizeof(val));
	do { /* overwrite 200 keys until no segment is free */
		for (int i = 0; i < 200; i++) {
			snprintf(key, sizeof(key), "k%d", i);
			snprintf(val, sizeof(val), "%d/%d", i, round);
			assert_ok(kvshm_set(kv, KS(key), val, sizeof(val), 0));
		}
		round++;
		assert_ok(kvshm_stats(kv, &st));
	} while (st.free_segments > 0 && round < 1000);
	assert_int_equal(st.free_segments, 0);
	assert_ok(kvshm_sweep(kv, 0, NULL));
	assert_ok(kvshm_stats(kv, &st2));
	assert_true(st2.segments_reclaimed > st.segments_reclaimed);
	assert_int_equal(st2.evictions, st.evictions);
	/* the next sweep finds room and leaves the live items alone */
	assert_ok(kvshm_sweep(kv, 0, NULL));
	assert_ok(kvshm_stats(kv, &st));
	assert_int_equal(st.segments_reclaimed, st2.segments_reclaimed);
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		snprintf(val, sizeof(val), "%d/%d", i, round - 1);
		assert_ok(kvshm_get(kv, KS(key), got, sizeof(got), &len));
		assert_string_equal(got, val);
	}
	tu_check(kv);
}

/* Write j of fill_with_garbage(): one in 10 a new key that stays ("p<j>"),
 * the others an overwrite of one of 200 keys ("k<j % 200>"); value "<j>". */
static void garbage_key(long j, char *key, size_t klen, char *val,
			size_t vlen)
{
	if (j % 10 == 0)
		snprintf(key, klen, "p%ld", j);
	else
		snprintf(key, klen, "k%ld", j % 200);
	memset(val, 0, vlen);
	snprintf(val, vlen, "%ld", j);
}

/* Fill a 4 MiB store until no segment is free, so that every segment is
 * mostly garbage with some live items a compaction must move. Returns the
 * number of writes. */
static long fill_with_garbage(struct kvshm *kv)
{
	struct kvshm_stats st;
	char key[32], val[600];
	long j = 0;

	do {
		for (long end = j + 100; j < end; j++) {
			garbage_key(j, key, sizeof(key), val, sizeof(val));
			assert_ok(kvshm_set(kv, KS(key), val, sizeof(val), 0));
		}
		assert_ok(kvshm_stats(kv, &st));
	} while (st.free_segments > 0 && j < 1000000);
	assert_int_equal(st.free_segments, 0);
	assert_int_equal(st.evictions, 0);
	return j;
}

static void sweep_then_die(void *p)
{
	kvshm__test_crash_after(10); /* a few items into the walk */
	(void)kvshm_sweep(p, 0, NULL);
	_exit(3); /* the walk was shorter than 10 crash points */
}

static unsigned segments_in_state(const struct kv__seg *seg, uint32_t st)
{
	unsigned n = 0;

	for (uint32_t s = 0; s < seg->nsegs; s++)
		n += atomic_load(&seg->segs[s].state) == st;
	return n;
}

/* A reclaim walks its victim holding only the drain mutex and one stripe
 * mutex at a time: the cleaner mutex, which lanes need to take a new
 * segment, is free meanwhile. So a reclaim killed in the middle of its walk
 * leaves the cleaner mutex free (not owner-dead), and the next reclaim
 * takes over the dead drain mutex and finishes the same victim. */
static void test_a_reclaim_killed_mid_walk_leaves_the_cleaner_mutex_free(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct kv__seg *seg = kv__cur(kv);
	struct kvshm_stats st, st2;
	char key[32], val[600], got[600];
	size_t len;
	long writes = fill_with_garbage(kv);
	int status, rc;

	assert_ok(kvshm_stats(kv, &st));
	status = tu_wait(fx, tu_spawn(fx, sweep_then_die, kv));
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail_msg("the sweeping child was not killed mid-walk (status %#x)",
			 status);
	assert_int_equal(segments_in_state(seg, KV_SEG_DRAINING), 1);

	rc = pthread_mutex_trylock(&seg->cleaner->mutex);
	assert_int_equal(rc, 0); /* EOWNERDEAD if the walk held it */
	pthread_mutex_unlock(&seg->cleaner->mutex);

	assert_ok(kvshm_sweep(kv, 0, NULL)); /* resumes the victim */
	assert_ok(kvshm_stats(kv, &st2));
	assert_int_equal(segments_in_state(seg, KV_SEG_DRAINING), 0);
	assert_true(st2.segments_reclaimed > st.segments_reclaimed);
	assert_true(st2.items_relocated > st.items_relocated);
	assert_true(st2.lock_recoveries > st.lock_recoveries);
	assert_int_equal(st2.evictions, 0);
	for (long j = 0; j < writes; j += 10) { /* the keys that stay */
		garbage_key(j, key, sizeof(key), val, sizeof(val));
		assert_ok(kvshm_get(kv, KS(key), got, sizeof(got), &len));
		assert_memory_equal(got, val, sizeof(val));
	}
	for (long i = 1; i < 200; i++) { /* the last write of each k key */
		long j = writes - 1 - (writes - 1 - i) % 200;
		if (i % 10 == 0)
			continue; /* such writes are p keys */
		garbage_key(j, key, sizeof(key), val, sizeof(val));
		assert_ok(kvshm_get(kv, KS(key), got, sizeof(got), &len));
		assert_memory_equal(got, val, sizeof(val));
	}
	tu_check(kv);
}

/* ---- hash flooding --------------------------------------------------- */

#define FLOOD_KEYS 3000
#define FLOOD_BITS 8 /* crafted homes fall in the first 1/256 unseeded */

/* Keys an attacker who knows SipHash but not the seed would send: their
 * hash under the all-zero key has its top FLOOD_BITS bits zero. */
static void craft_flood_keys(char (*keys)[17], int n)
{
	static const uint64_t zero[2] = {0, 0};
	uint64_t ctr = 0;

	for (int i = 0; i < n; ctr++) {
		snprintf(keys[i], 17, "F%015llx", (unsigned long long)ctr);
		if (kv__siphash13(zero, keys[i], 16) >> (64 - FLOOD_BITS) == 0)
			i++;
	}
}

struct flood {
	int stored, refused;
	uint64_t in_corner;  /* indexed keys whose home is in the corner */
	unsigned max_disp;
};

/* Write the keys to a fresh NOEVICT store, then read every stored one
 * back and look at where the index put them. */
static struct flood flood_store(struct tu_fx *fx, char (*keys)[17], int n)
{
	struct kvshm_options o = tu_opts(KVSHM_NOEVICT, 8 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	const struct kv__seg *seg = kv__cur(kv);
	struct flood f = {0};
	char got[8];
	size_t len;

	for (int i = 0; i < n; i++) {
		int rc = kvshm_set(kv, keys[i], 16, "v", 1, 0);
		if (rc == -ENOSPC)
			f.refused++;
		else
			assert_ok(rc);
	}
	for (int i = 0; i < n; i++) {
		int rc = kvshm_get(kv, keys[i], 16, got, sizeof(got), &len);
		assert_true(rc == 0 || rc == -ENOENT);
		f.stored += rc == 0;
	}
	for (uint64_t b = 0; b < seg->nbuckets; b++)
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			uint64_t w = atomic_load(&seg->buckets[b].slot[s]);
			if (kv__slot_off(w) == 0)
				continue;
			if (kv__slot_disp(w) > f.max_disp)
				f.max_disp = kv__slot_disp(w);
			f.in_corner += kv__slot_home(seg, b, w) <
				       seg->nbuckets >> FLOOD_BITS;
		}
	tu_check(kv);
	return f;
}

/* Keys crafted to collide under an unseeded hash pile into one corner of
 * an unseeded index, where the bounded probe window refuses them (never a
 * longer probe); the per-store random seed spreads them like any keys. */
static void test_keys_crafted_to_collide_unseeded_spread_under_the_seed(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	char (*keys)[17] = calloc(FLOOD_KEYS, sizeof(*keys));
	struct flood seeded, unseeded;

	assert_non_null(keys);
	craft_flood_keys(keys, FLOOD_KEYS);

	kv__test_zero_seed = true;
	unseeded = flood_store(fx, keys, FLOOD_KEYS);
	kv__test_zero_seed = false;
	seeded = flood_store(fx, keys, FLOOD_KEYS);
	print_message("unseeded: %d stored, %d refused, %llu homes in the "
		      "corner, max probe %u; seeded: %d stored, %d refused, "
		      "%llu in the corner, max probe %u\n",
		      unseeded.stored, unseeded.refused,
		      (unsigned long long)unseeded.in_corner,
		      unseeded.max_disp, seeded.stored, seeded.refused,
		      (unsigned long long)seeded.in_corner, seeded.max_disp);

	/* the attack is real without the seed: every stored key is in the
	 * corner, most are refused, and the probe stays inside its window */
	assert_int_equal(unseeded.in_corner, (uint64_t)unseeded.stored);
	assert_true(unseeded.refused > FLOOD_KEYS / 2);
	assert_int_equal(unseeded.stored + unseeded.refused, FLOOD_KEYS);
	assert_true(unseeded.max_disp < KV_MAX_PROBE);
	/* with the seed: all stored, the corner holds its fair share (1/256,
	 * i.e. ~12 of 3000; allow 4x), probes short */
	assert_int_equal(seeded.stored, FLOOD_KEYS);
	assert_int_equal(seeded.refused, 0);
	assert_true(seeded.in_corner <= 4 * FLOOD_KEYS >> FLOOD_BITS);
	assert_true(seeded.max_disp < KV_MAX_PROBE);
	free(keys);
}

/* ---- a repair killed while it recounts -------------------------------- */

struct rebuild_fx {
	struct kvshm *kv;
	struct kv__seg *seg;
	uint32_t stripe;
	char other[32];   /* a key of the same stripe, for the repairer */
	long crash_at;    /* the repairer's crash point */
};

/* Die holding the stripe's mutex, as a writer killed mid-change would. */
static void die_holding_stripe(void *p)
{
	struct rebuild_fx *r = p;

	if (pthread_mutex_lock(&r->seg->stripes[r->stripe].mutex) != 0)
		_exit(1);
	kill(getpid(), SIGKILL);
}

/* Take the lock (repairing the stripe) and die at crash point crash_at. */
static void repair_then_die(void *p)
{
	struct rebuild_fx *r = p;

	kvshm__test_crash_after(r->crash_at);
	(void)kvshm_set(r->kv, KS(r->other), "x", 1, 0);
	_exit(0);
}

/* A key whose slot sits in a bucket other than its home, and a key of the
 * same stripe; fills the store until there is one. */
static bool find_displaced(struct rebuild_fx *r, char *disp, size_t len)
{
	char key[32];

	for (int i = 0; i < 200000; i++) {
		struct kv__key k;
		snprintf(key, sizeof(key), "d%06d", i);
		if (kvshm_set(r->kv, KS(key), "v", 1, 0) != 0)
			return false;
		kv__key_init(r->seg, &k, key, strlen(key));
		for (unsigned j = 1; j < KV_MAX_PROBE; j++) {
			struct kv__bucket *bk =
				&r->seg->buckets[kv__probe(r->seg, k.home, j)];
			for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
				uint64_t w = atomic_load(&bk->slot[s]);
				if (w && kv__slot_disp(w) == j &&
				    kv__slot_tag_matches(w, k.hash)) {
					snprintf(disp, len, "%s", key);
					r->stripe = k.stripe;
					goto found;
				}
			}
		}
	}
	return false;
found:
	for (int i = 0; i < 200000; i++) {
		struct kv__key k;
		snprintf(r->other, sizeof(r->other), "o%06d", i);
		kv__key_init(r->seg, &k, r->other, strlen(r->other));
		if (k.stripe == r->stripe)
			return true;
	}
	return false;
}

/* A stripe repair recounts the overflow counts that let lookups stop
 * early. Killed at any point of it, the repair must not leave a state in
 * which a lock-free lookup of a displaced key stops early and misses it. */
static void test_repair_killed_anywhere_never_hides_a_displaced_key(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_NOEVICT, TU_MIB);
	struct rebuild_fx r = {0};
	char disp[32], got[8];
	size_t len;
	long m;

	r.kv = tu_create(fx, &o, NULL);
	r.seg = kv__cur(r.kv);
	assert_true(find_displaced(&r, disp, sizeof(disp)));
	for (m = 1; m < 10000; m++) {
		int status;

		/* the same path every time: the parent's write first repairs
		 * whatever the last run left, then one writer dies holding
		 * the stripe and the next dies at point m of its repair */
		assert_ok(kvshm_set(r.kv, KS(r.other), "p", 1, 0));
		tu_wait(fx, tu_spawn(fx, die_holding_stripe, &r));
		r.crash_at = m;
		status = tu_wait(fx, tu_spawn(fx, repair_then_die, &r));
		/* the first lookup after the kill is lock-free */
		assert_kv(kvshm_get(r.kv, KS(disp), got, sizeof(got), &len),
			  0);
		if (WIFEXITED(status))
			break; /* the repair and the write ran to the end */
		assert_true(WIFSIGNALED(status) &&
			    WTERMSIG(status) == SIGKILL);
	}
	print_message("repair killed at each of its %ld crash points: the "
		      "displaced key %s was found every time\n", m - 1, disp);
	assert_true(m > 3);
	tu_check(r.kv);
}

/* Issue 13 item 6: a probe window full of slots whose offsets lie outside
 * the store. get answered -ENOENT, but set followed each slot to fill in
 * an eviction candidate and died of SIGSEGV. Now damaged slots are never
 * followed: the set fails cleanly (the window has no usable slot) or
 * succeeds, in a child so a crash is reported, not suffered. */
static void test_set_into_a_window_of_damaged_slots_fails_cleanly(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	const char *name;
	struct kvshm *kv = tu_create(fx, &o, &name);
	struct kv__seg *seg = kv__cur(kv);
	struct kv__key k;
	char buf[8];
	int status;
	pid_t pid;

	kv__key_init(seg, &k, KS("victim"));
	for (unsigned i = 0; i < KV_MAX_PROBE; i++) {
		uint64_t b = kv__probe(seg, k.home, i);
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++)
			atomic_store(&seg->buckets[b].slot[s],
				     kv__slot_word(k.hash,
						   (KV_SLOT_OFF_MASK - s) *
							   KV_ITEM_ALIGN,
						   i));
	}
	assert_kv(kvshm_get(kv, KS("victim"), buf, sizeof(buf), NULL), -ENOENT);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int rc = kvshm_set(kv, KS("victim"), "v", 1, 0);
		CHILD_ASSERT(rc == 0 || rc == -ENOSPC);
		rc = kvshm_incr(kv, KS("victim-counter"), 1, 0, NULL);
		CHILD_ASSERT(rc == 0 || rc == -ENOSPC);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		fail_msg("set into a damaged window: killed by signal %d",
			 WTERMSIG(status));
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* undo the damage, so the teardown's check judges the rest */
	for (unsigned i = 0; i < KV_MAX_PROBE; i++) {
		uint64_t b = kv__probe(seg, k.home, i);
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++)
			if (kv__slot_off(atomic_load(&seg->buckets[b].slot[s])) >
			    seg->map_bytes)
				atomic_store(&seg->buckets[b].slot[s], 0);
	}
	tu_check(kv);
}

/* ---- mutants no test noticed (tests/mutate/mutants) ------------------ */

/* Mutant read-unbounded: a linked item whose header says it runs past the
 * end of the mapping (damage) is never copied from. The lock-free read
 * retries (the lock decides, and the locked lookup does not match it); a
 * read that trusted the length would copy from beyond the mapping. */
static void test_lock_free_read_refuses_an_item_running_past_the_mapping(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm *h = tu_create(fx, &o, NULL);
	struct kv__seg *kv = kv__cur(h);
	static char buf[8192];
	struct kv__key k;
	struct kv__hit hit;
	struct kv__item *fake;
	uint64_t off, saved, w;
	size_t len;

	assert_ok(kvshm_set(h, KS("key"), "value", 5, 0));
	kv__key_init(kv, &k, "key", 3);
	assert_int_equal(kv__read(kv, &k, NULL, 0, &hit), 1);
	/* a header in the mapping's last 64 bytes: key "key", 4096 bytes of
	 * value that would lie past the end */
	off = (kv->map_bytes - 64) / KV_ITEM_ALIGN * KV_ITEM_ALIGN;
	assert_true(off >= kv->data_off);
	assert_true(4096 <= kv->max_value);
	fake = kv__item_at(kv, off);
	memset(fake, 0, 64);
	fake->vlen = 4096;
	fake->klen = 3;
	fake->kind = KV_KIND_BYTES;
	fake->hash32 = (uint32_t)(k.hash >> 32);
	memcpy((uint8_t *)fake + KV_ITEM_HDR, "key", 3);
	saved = atomic_load(&kv->buckets[hit.bucket].slot[hit.slot]);
	w = kv__slot_word(k.hash, off, kv__slot_disp(saved));
	atomic_store(&kv->buckets[hit.bucket].slot[hit.slot], w);

	assert_kv(kv__read(kv, &k, NULL, 0, &hit), -EAGAIN);
	assert_kv(kvshm_get(h, KS("key"), buf, sizeof(buf), &len), -ENOENT);

	atomic_store(&kv->buckets[hit.bucket].slot[hit.slot], saved);
	memset(fake, 0, 64);
	assert_ok(kvshm_get(h, KS("key"), buf, sizeof(buf), &len));
	assert_memory_equal(buf, "value", 5);
	tu_check(h);
}

/* Incr "ctr" with delta 0 until its write count is used up; returns the
 * version. */
static uint64_t wear_out(struct kvshm *kv, const char *key)
{
	struct kvshm_item item;
	int64_t buf;

	for (int i = 0; i < 5000; i++) {
		assert_ok(kvshm_get_ex(kv, KS(key), &buf, sizeof(buf), &item,
				       0));
		if ((item.cas & KV_VER_WRITES_MASK) == KV_VER_WRITES_MASK)
			return item.cas;
		assert_ok(kvshm_incr(kv, KS(key), 0, 0, NULL));
	}
	fail_msg("the write count of %s was never used up", key);
	return 0;
}

/* Mutant carry-no-overflow-check: an incr of a counter whose write count
 * is used up carries the value into a new item; an overflow there is
 * -ERANGE like anywhere else, and the counter keeps its value. */
static void test_incr_that_carries_over_still_refuses_to_overflow(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	int64_t v = 0;

	assert_ok(kvshm_incr(kv, KS("ctr"), INT64_MAX - 10, 0, &v));
	wear_out(kv, "ctr");
	assert_kv(kvshm_incr(kv, KS("ctr"), 100, 0, &v), -ERANGE);
	assert_ok(kvshm_counter(kv, KS("ctr"), &v));
	assert_int_equal(v, INT64_MAX - 10);
	wear_out(kv, "ctr");
	assert_kv(kvshm_incr(kv, KS("ctr"), INT64_MIN, 0, &v), 0);
	assert_int_equal(v, -11);
	tu_check(kv);
}

/* Mutant worn-out-unchecked: a counter's version is its creation id (the
 * stripe's sequence and the stripe number, VERSIONS in format.h) and a
 * count of writes. Once the count is used up the next incr makes a new
 * item; a count that ran on into the id would make it another stripe's id,
 * which the stale-incr guard takes for a different item's. */
static void test_counter_writes_never_run_into_the_creation_id(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct kv__seg *seg = kv__cur(kv);
	struct kvshm_item item;
	struct kv__key k;
	int64_t buf;
	unsigned ids = 1;
	uint64_t last;

	kv__key_init(seg, &k, "ctr", 3);
	assert_ok(kvshm_incr(kv, KS("ctr"), 1, 0, NULL));
	assert_ok(kvshm_get_ex(kv, KS("ctr"), &buf, sizeof(buf), &item, 0));
	last = item.cas >> KV_VER_ID_SHIFT;
	for (int i = 0; i < 10000; i++) {
		assert_ok(kvshm_incr(kv, KS("ctr"), 1, 0, NULL));
		assert_ok(kvshm_get_ex(kv, KS("ctr"), &buf, sizeof(buf), &item,
				       0));
		if (((item.cas >> KV_VER_ID_SHIFT) & 0xffff) !=
		    (k.stripe & 0xffff))
			fail_msg("incr %d: version %#" PRIx64 " names stripe "
				 "%u, the key is in stripe %u", i + 2, item.cas,
				 (unsigned)((item.cas >> KV_VER_ID_SHIFT) &
					    0xffff),
				 (unsigned)k.stripe);
		ids += (item.cas >> KV_VER_ID_SHIFT) != last;
		last = item.cas >> KV_VER_ID_SHIFT;
	}
	assert_int_equal(buf, 10001);
	assert_true(ids >= 3); /* 10,000 writes need at least 3 items */
	tu_check(kv);
}

/* Keys named "<prefix><n>" whose home bucket is home, n >= *next. */
static void key_with_home(struct kv__seg *seg, uint64_t home,
			  const char *prefix, long *next, char *key,
			  size_t len)
{
	struct kv__key k;

	for (;; (*next)++) {
		snprintf(key, len, "%s%ld", prefix, *next);
		kv__key_init(seg, &k, key, strlen(key));
		if (k.home == home) {
			(*next)++;
			return;
		}
	}
}

/* Mutant second-chance-never-cleared: when a key's probe window is full,
 * the index evicts like CLOCK: a read item loses its visited bit as the
 * hand passes it, and the first item not read since goes. So with every
 * item of the window read, a key written and read again before each
 * write into the window survives them; with bits never cleared every slot stays
 * "visited", the hand wraps to the first slot, and the key read last is
 * evicted first. */
static void test_full_probe_window_evicts_an_unread_item_not_the_last_read(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 2 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct kv__seg *seg = kv__cur(kv);
	const unsigned window = KV_MAX_PROBE * KV_BUCKET_SLOTS;
	struct kvshm_stats st, st2;
	struct kv__key k;
	char key[32], x[32], buf[8];
	long next = 0;

	kv__key_init(seg, &k, "anchor", 6);
	for (unsigned i = 0; i < window; i++) {
		key_with_home(seg, k.home, "w", &next, key, sizeof(key));
		assert_ok(kvshm_set(kv, KS(key), "v", 1, 0));
		assert_ok(kvshm_get(kv, KS(key), buf, sizeof(buf), NULL));
	}
	assert_ok(kvshm_stats(kv, &st));
	assert_int_equal(st.evictions, 0);
	/* the window is full and every item in it was read */
	key_with_home(seg, k.home, "x", &next, x, sizeof(x));
	assert_ok(kvshm_set(kv, KS(x), "x", 1, 0));
	for (int i = 0; i < 3; i++) { /* x is read before each write */
		assert_ok(kvshm_get(kv, KS(x), buf, sizeof(buf), NULL));
		key_with_home(seg, k.home, "y", &next, key, sizeof(key));
		assert_ok(kvshm_set(kv, KS(key), "y", 1, 0));
		assert_int_equal(kvshm_exists(kv, KS(x)), 1);
	}
	assert_ok(kvshm_stats(kv, &st2));
	assert_int_equal(st2.evictions, 4); /* the window stayed full */
	tu_check(kv);
}

/* Mutant repair-keeps-frozen (and its mirror): a writer deleting a counter
 * is killed at each crash point in turn; the next owner of the stripe
 * repairs it. Where the delete was published, the old counter stays
 * frozen, so an incr that found it before (a stale {offset, version})
 * cannot land on the unlinked copy and be lost; where it was not, the
 * counter is linked and takes incrs again. */
struct del_ctr {
	struct kvshm *kv;
	char key[32];
	long crash_at;
};

static void delete_then_die(void *p)
{
	struct del_ctr *d = p;

	kvshm__test_crash_after(d->crash_at);
	(void)kvshm_delete(d->kv, KS(d->key));
	kvshm__test_crash_after(0);
	_exit(0);
}

static void test_repair_after_a_published_delete_keeps_the_old_counter_frozen(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct del_ctr d = {0};
	struct kv__seg *seg;
	long n, published = 0, undone = 0;

	d.kv = tu_create(fx, &o, NULL);
	seg = kv__cur(d.kv);
	for (n = 1; n < 200; n++) {
		struct kv__key k;
		struct kv__hit hit, now;
		int64_t res;
		int status, r;

		snprintf(d.key, sizeof(d.key), "ctr%ld", n);
		d.crash_at = n;
		assert_ok(kvshm_incr(d.kv, KS(d.key), 1, 0, NULL));
		kv__key_init(seg, &k, d.key, strlen(d.key));
		assert_int_equal(kv__read(seg, &k, NULL, 0, &hit), 1);
		status = tu_wait(fx, tu_spawn(fx, delete_then_die, &d));
		if (WIFEXITED(status))
			break; /* the delete ran to the end */
		assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		assert_ok(kv__stripe_lock(seg, k.stripe)); /* repairs it */
		kv__stripe_unlock(seg, k.stripe);
		r = kv__read(seg, &k, NULL, 0, &now);
		assert_true(r == 0 || r == 1);
		if (r == 0) {
			published++;
			assert_kv(kv__counter_add(seg, hit.off, hit.version, 1,
						  &res),
				  -EAGAIN);
		} else {
			undone++;
			assert_int_equal(now.off, hit.off);
			assert_ok(kv__counter_add(seg, hit.off, hit.version, 1,
						  &res));
			assert_int_equal(res, 2);
		}
	}
	print_message("delete of a counter killed at each of its %ld crash "
		      "points: %ld published, %ld undone\n",
		      n - 1, published, undone);
	assert_true(published > 0 && undone > 0);
	tu_check(d.kv);
}

/* Mutant relocate-drops-ttl: a compaction moves live items and they keep
 * their expiry. */
static void test_compaction_moves_items_with_their_ttl(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct kvshm_stats st, st2;
	char key[32], val[600];
	long writes = fill_with_garbage(kv);
	int64_t ttl;
	long keys = 0;

	/* every live key gets an hour to live */
	for (long j = 0; j < writes; j++) {
		garbage_key(j, key, sizeof(key), val, sizeof(val));
		if (j % 10 == 0 || j >= writes - 200) {
			assert_ok(kvshm_expire(kv, KS(key), 3600 * 1000));
			keys++;
		}
	}
	assert_ok(kvshm_stats(kv, &st));
	assert_ok(kvshm_sweep(kv, 0, NULL));
	assert_ok(kvshm_stats(kv, &st2));
	assert_true(st2.items_relocated > st.items_relocated);
	assert_int_equal(st2.evictions, st.evictions);
	for (long j = 0; j < writes; j++) {
		garbage_key(j, key, sizeof(key), val, sizeof(val));
		if (j % 10 != 0 && j < writes - 200)
			continue;
		assert_ok(kvshm_ttl(kv, KS(key), &ttl));
		if (ttl <= 0 || ttl > 3600 * 1000)
			fail_msg("%s: ttl %" PRId64 " after the compaction "
				 "moved %" PRIu64 " items", key, ttl,
				 st2.items_relocated - st.items_relocated);
	}
	print_message("%ld keys with a TTL, %" PRIu64 " moved: all kept it\n",
		      keys, st2.items_relocated - st.items_relocated);
	tu_check(kv);
}

/* Mutant incr-result-read-back (the bug test_linearize found): an incr
 * that creates a counter returns the value it linked, even when another
 * caller's lock-free add lands on the new counter the moment it is
 * linked. The other caller is a hook run at the crash points the creating
 * incr passes after the link. */
struct racer {
	struct kv__seg *seg;
	int fired;
};

static void add_once_linked(long point, void *ctx)
{
	struct racer *r = ctx;
	struct kv__key k;
	struct kv__hit hit;
	int64_t res;

	(void)point;
	if (r->fired)
		return;
	kv__key_init(r->seg, &k, "ctr", 3);
	if (kv__read(r->seg, &k, NULL, 0, &hit) == 1 &&
	    hit.kind == KV_KIND_COUNTER &&
	    kv__counter_add(r->seg, hit.off, hit.version, 100, &res) == 0)
		r->fired = 1;
}

static void test_incr_that_creates_a_counter_returns_what_it_linked(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct racer r = {.seg = kv__cur(kv)};
	int64_t v = 0;

	kvshm__test_hook(add_once_linked, &r);
	assert_ok(kvshm_incr(kv, KS("ctr"), 5, 0, &v));
	kvshm__test_hook(NULL, NULL);
	assert_int_equal(r.fired, 1);
	assert_int_equal(v, 5);
	assert_ok(kvshm_counter(kv, KS("ctr"), &v));
	assert_int_equal(v, 105);
	tu_check(kv);
}

/* Mutant full-dest-kept: a reclaim killed after its moves filled the
 * destination (or one whose own key could not be moved) leaves a DEST
 * with less room than the next write needs. The next reclaim seals it
 * (it is compacted later like any segment) and takes the spare: it evicts
 * about what the write needs. A reclaim that kept it would have almost no
 * room to move into and would evict nearly its whole victim. */
static void test_a_destination_too_full_for_the_write_is_not_kept(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct kv__seg *seg = kv__cur(kv);
	struct kvshm_stats st;
	char key[32], val[1000];
	uint32_t full = KV_NO_SEG;
	uint64_t batch, before, reclaims, evicted = 0;
	int i;

	memset(val, 'v', sizeof(val));
	for (i = 0;; i++) { /* until the store has evicted for a while */
		snprintf(key, sizeof(key), "k%d", i);
		assert_ok(kvshm_set(kv, KS(key), val, 100, 0));
		assert_ok(kvshm_stats(kv, &st));
		if (st.evictions > 1000)
			break;
		assert_true(i < 1000000);
	}
	batch = st.segment_bytes / 8 / 100 + 2;
	assert_true(segments_in_state(seg, KV_SEG_RESERVE) +
			    segments_in_state(seg, KV_SEG_FREE) >
		    0);
	assert_int_equal(segments_in_state(seg, KV_SEG_DEST), 0);
	for (uint32_t s = 0; s < seg->nsegs && full == KV_NO_SEG; s++)
		if (atomic_load(&seg->segs[s].state) == KV_SEG_SEALED &&
		    seg->segment_bytes - atomic_load(&seg->segs[s].used) <
			    sizeof(val))
			full = s;
	assert_true(full != KV_NO_SEG);
	/* what the killed reclaim left: a full segment as the destination */
	atomic_store(&seg->segs[full].state, KV_SEG_DEST);
	reclaims = st.segments_reclaimed;
	for (i = 0; i < 1000; i++) { /* up to the first write that reclaims */
		before = st.evictions;
		snprintf(key, sizeof(key), "big%d", i);
		assert_ok(kvshm_set(kv, KS(key), val, sizeof(val), 0));
		assert_ok(kvshm_stats(kv, &st));
		evicted = st.evictions - before;
		if (st.segments_reclaimed != reclaims)
			break;
	}
	print_message("the write that reclaimed with a full destination "
		      "evicted %" PRIu64 " items (batch bound %" PRIu64 ")\n",
		      evicted, batch);
	assert_true(st.segments_reclaimed != reclaims);
	assert_true(evicted <= batch);
	assert_int_equal(atomic_load(&seg->segs[full].state) == KV_SEG_DEST,
			 0);
	tu_check(kv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_set_into_a_window_of_damaged_slots_fails_cleanly),
		T(test_slot_word_round_trips_offset_disp_and_tag),
		T(test_noevict_store_holds_max_items_before_an_index_window_fills),
		T(test_miss_in_a_bucket_without_overflow_reads_one_bucket),
		T(test_lock_free_incr_refuses_memory_of_another_item),
		T(test_incr_past_the_write_count_carries_the_value_over),
		T(test_sweep_compacts_garbage_when_no_segment_is_free),
		T(test_a_reclaim_killed_mid_walk_leaves_the_cleaner_mutex_free),
		T(test_keys_crafted_to_collide_unseeded_spread_under_the_seed),
		T(test_repair_killed_anywhere_never_hides_a_displaced_key),
		T(test_lock_free_read_refuses_an_item_running_past_the_mapping),
		T(test_incr_that_carries_over_still_refuses_to_overflow),
		T(test_counter_writes_never_run_into_the_creation_id),
		T(test_full_probe_window_evicts_an_unread_item_not_the_last_read),
		T(test_repair_after_a_published_delete_keeps_the_old_counter_frozen),
		T(test_compaction_moves_items_with_their_ttl),
		T(test_incr_that_creates_a_counter_returns_what_it_linked),
		T(test_a_destination_too_full_for_the_write_is_not_kept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
