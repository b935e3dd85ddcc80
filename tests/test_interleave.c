/* SPDX-License-Identifier: MIT */
/*
 * test_interleave.c - a second actor at the wrong moment. The crash points
 * mark every step of every critical section; here, instead of dying at a
 * point, the library calls kvshm__test_hook() and the test lets another
 * actor do something in the middle of the step, then the first goes on.
 * This finds what kills cannot: lost updates that need two actors.
 *
 * STALE INCREMENTS DURING MOVES (issue 13 item 1). A thread that looked a
 * counter up and then stalled holds {offset, version}; when it wakes it
 * adds by a 16-byte CAS on that offset, which must succeed only while that
 * memory is the counter's live copy. The cleaner moves counters between
 * segments, and with few live items it moves them back to the same offsets.
 * Here the cleaner is steered to the counters' segment, so they bounce
 * between two segments; the {offset, version} pairs each counter had are
 * kept, and at every crash point passed while the cleaner walks a victim
 * (its copy, the slot swap, the carry) each stale one is tried with
 * kv__counter_add(). Every add that reports success
 * is an acknowledged increment; at the end each counter must equal its
 * start plus its acknowledged adds. The old relocate() wrote the copy's
 * real, unfrozen version before the source was frozen, so an add landed
 * on the copy and the carry overwrote it: increments lost.
 */
#include "testutil.h"

#include "internal.h" /* kv__cur, kv__counter_add, kv__read */
#include "testing.h"

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_bare, tu_teardown)

#define NCOUNTERS 6
#define MAX_SNAPS 64

struct stale {
	struct kv__seg *kv;
	uint64_t off[NCOUNTERS][MAX_SNAPS], ver[NCOUNTERS][MAX_SNAPS];
	int nsnap[NCOUNTERS];
	int64_t acked[NCOUNTERS];
	long tries, landed, points;
};

static void counter_name(char *k, size_t len, int i)
{
	snprintf(k, len, "counter-%d", i);
}

/* Remember where counter i lives now: one entry per offset and creation
 * id (kv__counter_add() compares only the id), kept newest last, so the
 * last entry is always the live copy. The oldest is forgotten when full. */
static void snapshot(struct stale *st, int i)
{
	struct kv__key k;
	struct kv__hit hit;
	char name[32];
	int drop = st->nsnap[i] == MAX_SNAPS ? 0 : -1;

	counter_name(name, sizeof(name), i);
	kv__key_init(st->kv, &k, name, strlen(name));
	assert_int_equal(kv__read(st->kv, &k, NULL, 0, &hit), 1);
	for (int s = 0; s < st->nsnap[i]; s++)
		if (st->off[i][s] == hit.off &&
		    st->ver[i][s] >> KV_VER_ID_SHIFT ==
			    hit.version >> KV_VER_ID_SHIFT)
			drop = s;
	if (drop >= 0) {
		int after = st->nsnap[i] - drop - 1;
		memmove(&st->off[i][drop], &st->off[i][drop + 1],
			(size_t)after * sizeof(st->off[i][0]));
		memmove(&st->ver[i][drop], &st->ver[i][drop + 1],
			(size_t)after * sizeof(st->ver[i][0]));
		st->nsnap[i]--;
	}
	st->off[i][st->nsnap[i]] = hit.off;
	st->ver[i][st->nsnap[i]++] = hit.version;
}

/* At crash point n: the stalled threads wake up, each with its snapshot. */
static void stale_adds(long n, void *ctx)
{
	struct stale *st = ctx;
	int64_t result;
	bool draining = false;

	(void)n;
	/* only while the cleaner walks a victim: each add uses up one of the
	 * counter's 4095 lock-free writes, so spend them where moves happen */
	for (uint32_t s = 0; s < st->kv->nsegs; s++)
		draining |= atomic_load(&st->kv->segs[s].state) ==
			    KV_SEG_DRAINING;
	if (!draining)
		return;
	st->points++;
	for (int i = 0; i < NCOUNTERS; i++)
		for (int s = 0; s + 1 < st->nsnap[i]; s++) {
			/* not the newest (where the counter lives): adds
			 * there would only use up its write count */
			st->tries++;
			if (kv__counter_add(st->kv, st->off[i][s], st->ver[i][s],
					    1, &result) == 0) {
				st->acked[i]++;
				st->landed++;
			}
		}
}

/* Make the counters' segment the cleaner's next victim: its live hint is
 * the lowest (hints only steer the choice; nothing depends on them). Its
 * live items then go to the start of the reserve, and the emptied victim
 * becomes the next reserve: the counters move back to offsets they had. */
static void steer_cleaner(struct stale *st)
{
	struct kv__seg *kv = st->kv;
	uint32_t home = kv__seg_of(kv, st->off[0][st->nsnap[0] - 1]);

	for (uint32_t s = 0; s < kv->nsegs; s++) {
		uint32_t state = atomic_load(&kv->segs[s].state);
		if (s != home &&
		    (state == KV_SEG_SEALED || state == KV_SEG_PARTIAL))
			atomic_store(&kv->segs[s].live_hint,
				     (int64_t)kv->segment_bytes);
	}
}

static void test_stale_increments_during_moves_are_never_lost(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 1 * TU_MIB);
	static struct stale st;
	const char *name;
	struct kvshm *kv;
	uint8_t big[2000];
	struct kvshm_stats before, after;
	char k[32];

	memset(&st, 0, sizeof(st));
	memset(big, 'g', sizeof(big));
	o.max_items = 2000;
	kv = tu_create(fx, &o, &name);
	st.kv = kv__cur(kv);
	for (int i = 0; i < NCOUNTERS; i++) {
		counter_name(k, sizeof(k), i);
		assert_ok(kvshm_incr(kv, KS(k), 1000, 0, NULL));
		snapshot(&st, i);
	}
	assert_ok(kvshm_stats(kv, &before));
	/* one key overwritten: garbage, and the cleaner, steered to the
	 * counters' segment, moves them back and forth between two segments */
	kvshm__test_hook(stale_adds, &st);
	for (int w = 0; w < 20000; w++) {
		steer_cleaner(&st);
		assert_ok(kvshm_set(kv, KS("garbage"), big, sizeof(big), 0));
		if (w % 16 == 0)
			for (int i = 0; i < NCOUNTERS; i++) {
				int64_t v;
				counter_name(k, sizeof(k), i);
				assert_ok(kvshm_get(kv, KS(k), &v, sizeof(v),
						    NULL));
				/* a write of its own; once the write count is
				 * used up, a new item with a new version */
				assert_ok(kvshm_incr(kv, KS(k), 1, 0, NULL));
				st.acked[i]++;
				snapshot(&st, i);
			}
	}
	kvshm__test_hook(NULL, NULL);
	assert_ok(kvshm_stats(kv, &after));
	print_message("stale increments: %ld crash points during reclaims, "
		      "%ld stale adds tried, %ld acknowledged, %" PRIu64
		      " reclaims, %" PRIu64 " items moved\n",
		      st.points, st.tries, st.landed,
		      after.segments_reclaimed - before.segments_reclaimed,
		      after.items_relocated - before.items_relocated);
	assert_true(after.items_relocated - before.items_relocated > 10 * NCOUNTERS);
	assert_true(st.landed > 0); /* else the test proves nothing */
	for (int i = 0; i < NCOUNTERS; i++) {
		int64_t v;
		counter_name(k, sizeof(k), i);
		assert_ok(kvshm_counter(kv, KS(k), &v));
		if (v != 1000 + st.acked[i])
			fail_msg("%s = %" PRId64 ", but 1000 + %" PRId64
				 " acknowledged increments = %" PRId64
				 ": %" PRId64 " lost",
				 k, v, st.acked[i], 1000 + st.acked[i],
				 1000 + st.acked[i] - v);
	}
	tu_check(kv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_stale_increments_during_moves_are_never_lost),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
