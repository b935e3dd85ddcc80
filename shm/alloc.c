/* SPDX-License-Identifier: MIT */
/*
 * alloc.c - where items live: lanes that append items to allocation
 * segments, and the cleaner that empties segments for reuse (dropping what
 * expired, moving what was read recently, evicting the rest). Owns the lane
 * and cleaner structs and the segment table; changes index slots only
 * through index.c's kv__swap_slot().
 *
 * LANES. A writer locks a lane (trying each without waiting before it waits
 * on its favourite), writes the item's bytes at the lane segment's `used`
 * cursor, then advances `used` with one release store. The item is not yet
 * linked; the caller links it under the stripe lock while it still holds
 * the lane, so a segment is never sealed while an item in it is in flight.
 * kill -9 inside a lane: bytes past `used` are garbage that the next writer
 * overwrites; an item below `used` that was never linked is garbage the
 * cleaner skips. Nothing to repair, so kv__lane_repair() only returns 0; the
 * lane's segment is re-validated on every use anyway.
 *
 * THE CLEANER MUTEX guards every segment state change and every change of a
 * lane's `seg` (made while holding that lane's mutex too). A lane taking a
 * new segment (lane_refill):
 *   1. old.state = SEALED (or FREE if empty)   2. lane.seg = none
 *   3. new.owner = lane; new.state = OPEN        4. lane.seg = new
 * kill -9 between 1 and 4 leaves a lane pointing at a segment that is not
 * OPEN for it, or an OPEN segment no lane points at; kv__cleaner_repair()
 * looks for exactly these two and undoes them.
 *
 * RECLAIMING (kv__reclaim) takes the cleaner's drain mutex for the whole
 * reclaim, and the cleaner mutex only for its two short steps: picking the
 * victim (marked DRAINING) and the destination (DEST), then, after the walk,
 * giving them back (the victim empty, used = 0, then RESERVE or FREE; the
 * destination PARTIAL or RESERVE). The walk between the two holds only one
 * stripe mutex at a time: each item of the victim is looked up by offset in
 * its probe window and, if linked, dropped or moved (one kv__swap_slot
 * each). Nothing but the drain mutex's holder changes a DRAINING or DEST
 * segment: lanes take only FREE and PARTIAL ones, and kv__cleaner_repair()
 * touches only OPEN ones and impossible states, so lanes keep taking
 * segments while a drain runs. A crash leaves the victim DRAINING and the
 * destination DEST; the next reclaim resumes the same victim, which is safe
 * because every step is "if still linked here, unlink or move it".
 */
#include "internal.h"

/* ---- segment helpers ---------------------------------------------------- */

static inline struct kv__segment *seg_at(struct kv__seg *kv, uint32_t s)
{
	return &kv->segs[s];
}

static inline uint32_t seg_state(struct kv__seg *kv, uint32_t s)
{
	return atomic_load_explicit(&kv->segs[s].state, memory_order_acquire);
}

static inline void seg_set_state(struct kv__seg *kv, uint32_t s, uint32_t st)
{
	KV_CRASHPOINT();
	atomic_store_explicit(&kv->segs[s].state, st, memory_order_release);
}

static inline uint64_t seg_base(const struct kv__seg *kv, uint32_t s)
{
	return kv->data_off + (uint64_t)s * kv->segment_bytes;
}

void kv__live_add(struct kv__seg *kv, uint64_t off, int64_t bytes)
{
	uint32_t s = kv__seg_of(kv, off);
	if (s < kv->nsegs) {
		KV_CRASHPOINT();
		atomic_fetch_add_explicit(&kv->segs[s].live_hint, bytes,
					  memory_order_relaxed);
	}
}

void kv__note_expiry(struct kv__seg *kv, uint64_t off, int64_t expires_at)
{
	uint32_t s = kv__seg_of(kv, off);
	int64_t want = expires_at ? expires_at : INT64_MAX;
	int64_t cur;

	if (s >= kv->nsegs)
		return;
	cur = atomic_load_explicit(&kv->segs[s].max_expiry,
				   memory_order_relaxed);
	if (cur < want)
		KV_CRASHPOINT();
	while (cur < want &&
	       !atomic_compare_exchange_weak_explicit(
		       &kv->segs[s].max_expiry, &cur, want,
		       memory_order_relaxed, memory_order_relaxed))
		;
}

static void seg_reset(struct kv__seg *kv, uint32_t s)
{
	struct kv__segment *sg = seg_at(kv, s);

	KV_CRASHPOINT();
	atomic_store_explicit(&sg->used, 0, memory_order_release);
	atomic_store_explicit(&sg->live_hint, 0, memory_order_relaxed);
	atomic_store_explicit(&sg->max_expiry, 0, memory_order_relaxed);
}

/* First segment in state st, or KV_NO_SEG (cleaner mutex held). */
static uint32_t seg_find(struct kv__seg *kv, uint32_t st)
{
	for (uint32_t s = 0; s < kv->nsegs; s++)
		if (seg_state(kv, s) == st)
			return s;
	return KV_NO_SEG;
}

/* ---- lanes -------------------------------------------------------------- */

int kv__lane_repair(struct kv__seg *kv, void *what)
{
	(void)kv;
	(void)what;
	return 0; /* see LANES above: a lane has nothing to repair */
}

static int lane_lock(struct kv__seg *kv, uint32_t *lane)
{
	uint32_t n = kv->nlanes, pref = kv__self.lane;
	int err;

	if (pref >= n)
		pref = kv__thread_pick(n);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t l = (pref + i) % n;
		err = kv__trylock(kv, &kv->lanes[l].mutex, kv__lane_repair,
				  &kv->lanes[l]);
		if (err == 0) {
			kv__self.lane = l;
			*lane = l;
			return 0;
		}
		if (err != -EBUSY)
			return err;
	}
	err = kv__lock(kv, &kv->lanes[pref].mutex, kv__lane_repair,
		       &kv->lanes[pref]);
	if (err == 0) {
		kv__self.lane = pref;
		*lane = pref;
	}
	return err;
}

/* The lane's segment, if it is a valid OPEN segment owned by it. */
static uint32_t lane_seg(struct kv__seg *kv, uint32_t lane)
{
	uint32_t s = atomic_load_explicit(&kv->lanes[lane].seg,
					  memory_order_acquire);

	if (s >= kv->nsegs || seg_state(kv, s) != KV_SEG_OPEN ||
	    atomic_load_explicit(&kv->segs[s].owner, memory_order_relaxed) !=
		    lane ||
	    atomic_load_explicit(&kv->segs[s].used, memory_order_relaxed) >
		    kv->segment_bytes)
		return KV_NO_SEG;
	return s;
}

/* Could a lane take segment s for an item of size bytes? FREE or PARTIAL,
 * with an aligned cursor and room (cleaner mutex held). */
static bool seg_takes(struct kv__seg *kv, uint32_t s, uint64_t size)
{
	uint32_t st = seg_state(kv, s);
	uint64_t used = atomic_load_explicit(&seg_at(kv, s)->used,
					     memory_order_relaxed);

	return (st == KV_SEG_FREE || st == KV_SEG_PARTIAL) &&
	       used % KV_ITEM_ALIGN == 0 && used <= kv->segment_bytes - size;
}

/* Seal the lane's segment and give it one with room for size bytes (lane
 * mutex held; takes the cleaner mutex). -ENOSPC: none is free. */
static int lane_refill(struct kv__seg *kv, uint32_t lane, uint64_t size)
{
	struct kv__lane *ln = &kv->lanes[lane];
	uint32_t old, pick = KV_NO_SEG;
	int err = kv__lock(kv, &kv->cleaner->mutex, kv__cleaner_repair,
			   kv->cleaner);

	if (err)
		return err;
	old = lane_seg(kv, lane);
	if (old != KV_NO_SEG) {
		bool empty = atomic_load_explicit(&seg_at(kv, old)->used,
						  memory_order_relaxed) == 0;
		seg_set_state(kv, old, empty ? KV_SEG_FREE : KV_SEG_SEALED);
	}
	KV_CRASHPOINT();
	atomic_store_explicit(&ln->seg, KV_NO_SEG, memory_order_release);

	for (uint32_t i = 0; i < kv->nsegs && pick == KV_NO_SEG; i++) {
		uint32_t s = (kv->cleaner->hand + i) % kv->nsegs;
		if (seg_takes(kv, s, size))
			pick = s;
	}
	if (pick == KV_NO_SEG) {
		err = -ENOSPC;
	} else {
		KV_CRASHPOINT();
		kv->cleaner->hand = (pick + 1) % kv->nsegs;
		atomic_store_explicit(&seg_at(kv, pick)->owner, lane,
				      memory_order_relaxed);
		seg_set_state(kv, pick, KV_SEG_OPEN);
		KV_CRASHPOINT();
		atomic_store_explicit(&ln->seg, pick, memory_order_release);
	}
	kv__unlock(&kv->cleaner->mutex);
	return err;
}

/* Write an unlinked item at off. Its atomic fields are stored atomically:
 * a stale optimistic reader may still be looking at this memory. */
static void item_write(struct kv__seg *kv, uint64_t off,
		       const struct kv__key *k, const void *val, size_t vlen,
		       unsigned kind)
{
	struct kv__item *it = kv__item_at(kv, off);
	uint8_t *p = (uint8_t *)it + KV_ITEM_HDR;

	KV_CRASHPOINT();
	atomic_store_explicit(&it->expires_at, 0, memory_order_relaxed);
	it->vlen = kind == KV_KIND_COUNTER ? 0 : (uint32_t)vlen;
	it->klen = (uint16_t)k->len;
	it->kind = (uint8_t)kind;
	it->pad = 0;
	atomic_store_explicit(&it->version, 0, memory_order_relaxed);
	atomic_store_explicit(&it->cvalue, 0, memory_order_relaxed);
	it->uflags = 0;
	it->hash32 = (uint32_t)(k->hash >> 32);
	memcpy(p, k->ptr, k->len);
	if (kind != KV_KIND_COUNTER && vlen)
		memcpy(p + k->len, val, vlen);
}



/*
 * Write a new, unlinked item for key k with value val into a lane segment.
 * On success the lane stays locked (a->lane) until kv__alloc_done(), so the
 * caller can link the item first. Reclaims memory when the store is full.
 * Errors: -E2BIG (can never fit), -ENOSPC, lock errors.
 */
int kv__alloc_item(struct kv__seg *kv, const struct kv__key *k, const void *val,
		   size_t vlen, unsigned kind, bool may_evict,
		   struct kv__alloc *a)
{
	uint64_t size = kv__item_size(k->len, vlen, kind);
	bool held = false;
	uint32_t lane = 0;
	int err = 0;

	if (size > kv->segment_bytes) {
		kv__stat_inc(kv, KV_ST_FAIL_TOO_BIG);
		return -E2BIG;
	}
	for (unsigned attempt = 0; attempt < 16; attempt++) {
		uint32_t s;
		if (!held) {
			err = lane_lock(kv, &lane);
			if (err)
				return err;
			held = true;
		}
		s = lane_seg(kv, lane);
		if (s != KV_NO_SEG) {
			struct kv__segment *sg = seg_at(kv, s);
			uint64_t used = atomic_load_explicit(
				&sg->used, memory_order_relaxed);
			/* a misaligned cursor (damage) would misalign the
			 * item's atomics: refill instead */
			if (used % KV_ITEM_ALIGN == 0 &&
			    used <= kv->segment_bytes - size) {
				a->lane = lane;
				a->off = seg_base(kv, s) + used;
				a->size = size;
				item_write(kv, a->off, k, val, vlen, kind);
				KV_CRASHPOINT();
				/* release: the item bytes are in place before
				 * the cleaner can walk past them (acquire) */
				atomic_store_explicit(&sg->used, used + size,
						      memory_order_release);
				return 0;
			}
		}
		err = lane_refill(kv, lane, size);
		if (err == 0)
			continue;
		kv__unlock(&kv->lanes[lane].mutex);
		held = false;
		if (err != -ENOSPC)
			return err;
		err = kv__reclaim(kv, may_evict, size);
		if (err)
			break;
	}
	if (held)
		kv__unlock(&kv->lanes[lane].mutex);
	if (err == 0 || err == -ENOSPC) {
		kv__stat_inc(kv, KV_ST_FAIL_NOSPACE);
		err = -ENOSPC;
	}
	return err;
}

void kv__alloc_done(struct kv__seg *kv, const struct kv__alloc *a)
{
	kv__unlock(&kv->lanes[a->lane].mutex);
}

/* ---- the cleaner -------------------------------------------------------- */

/*
 * kv__lock()'s repair for the cleaner mutex: undo a half-done lane refill
 * (see the top of this file) and put impossible segment states back to
 * SEALED, which the cleaner will empty. A DRAINING victim is left for the
 * next reclaim to finish. Bounded by nsegs + nlanes.
 */
int kv__cleaner_repair(struct kv__seg *kv, void *what)
{
	(void)what;
	for (uint32_t s = 0; s < kv->nsegs; s++)
		if (seg_state(kv, s) >= KV_SEG_NSTATES)
			seg_set_state(kv, s, KV_SEG_SEALED);
	for (uint32_t l = 0; l < kv->nlanes; l++) {
		uint32_t s = atomic_load_explicit(&kv->lanes[l].seg,
						  memory_order_acquire);
		if (s != KV_NO_SEG &&
		    (s >= kv->nsegs || seg_state(kv, s) != KV_SEG_OPEN ||
		     atomic_load_explicit(&kv->segs[s].owner,
					  memory_order_relaxed) != l)) {
			KV_CRASHPOINT();
			atomic_store_explicit(&kv->lanes[l].seg, KV_NO_SEG,
					      memory_order_release);
		}
	}
	for (uint32_t s = 0; s < kv->nsegs; s++) {
		uint32_t l;
		if (seg_state(kv, s) != KV_SEG_OPEN)
			continue;
		l = atomic_load_explicit(&kv->segs[s].owner,
					 memory_order_relaxed);
		if (l >= kv->nlanes ||
		    atomic_load_explicit(&kv->lanes[l].seg,
					 memory_order_acquire) != s)
			seg_set_state(kv, s,
				      atomic_load_explicit(&kv->segs[s].used,
							   memory_order_relaxed)
					      ? KV_SEG_PARTIAL
					      : KV_SEG_FREE);
	}
	return 0;
}

/* Estimated live bytes of a segment: its hint, clamped, or 0 when every
 * item in it has expired. */
static uint64_t seg_live(struct kv__seg *kv, uint32_t s, int64_t now)
{
	struct kv__segment *sg = seg_at(kv, s);
	int64_t live = atomic_load_explicit(&sg->live_hint,
					    memory_order_relaxed);
	uint64_t used = atomic_load_explicit(&sg->used, memory_order_relaxed);
	int64_t maxexp = atomic_load_explicit(&sg->max_expiry,
					      memory_order_relaxed);

	if (maxexp > 0 && maxexp != INT64_MAX && maxexp <= now)
		return 0;
	if (live < 0)
		return 0;
	return (uint64_t)live > used ? used : (uint64_t)live;
}

/* The sealed or partial segment with the least live data: garbage first.
 * With !may_evict it must free at least need bytes. */
static uint32_t pick_victim(struct kv__seg *kv, bool may_evict, uint64_t need)
{
	int64_t now = kv__now_ms();
	uint32_t best = KV_NO_SEG;
	uint64_t best_live = UINT64_MAX;

	for (uint32_t s = 0; s < kv->nsegs; s++) {
		uint32_t st = seg_state(kv, s);
		uint64_t live;
		if (st != KV_SEG_SEALED && st != KV_SEG_PARTIAL)
			continue;
		live = seg_live(kv, s, now);
		if (live < best_live) {
			best = s;
			best_live = live;
		}
	}
	if (best != KV_NO_SEG && !may_evict &&
	    best_live > kv->segment_bytes - need)
		return KV_NO_SEG;
	return best;
}

/* The cleaner's destination: the current DEST, else an empty RESERVE or
 * FREE segment made DEST, else none. */
static uint32_t dest_get(struct kv__seg *kv)
{
	uint32_t d = seg_find(kv, KV_SEG_DEST);

	if (d == KV_NO_SEG)
		d = seg_find(kv, KV_SEG_RESERVE);
	if (d == KV_NO_SEG)
		d = seg_find(kv, KV_SEG_FREE);
	if (d != KV_NO_SEG && seg_state(kv, d) != KV_SEG_DEST)
		seg_set_state(kv, d, KV_SEG_DEST);
	return d;
}

struct kv__drain {
	uint32_t victim, dest;
	bool may_evict;
	bool move_all;            /* the victim is at least half garbage */
	uint64_t move_budget;     /* bytes we may still move (second chance) */
};

/* Find the slot linking the item at off, among the slots of home's probe
 * window that lead back to home (stripe lock held). */
static bool find_by_offset(struct kv__seg *kv, uint64_t home, uint64_t off,
			   struct kv__hit *hit)
{
	unsigned displaced = (unsigned)(atomic_load_explicit(
					       &kv->buckets[home].meta,
					       memory_order_relaxed) >>
				       KV_META_OVF_SHIFT);
	unsigned passed = 0;

	for (unsigned i = 0; i < KV_MAX_PROBE; i++) {
		uint64_t b = kv__probe(kv, home, i);
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			uint64_t w = atomic_load_explicit(
				&kv->buckets[b].slot[s], memory_order_relaxed);
			if (!w || kv__slot_disp(w) != i)
				continue;
			if (kv__slot_off(w) == off) {
				kv__hit_fill(kv, hit, b, s, w);
				return true;
			}
			passed += i > 0;
		}
		if (passed >= displaced)
			break;
	}
	return false;
}

/* Copy the linked item at hit into the destination and swap the slot to
 * the copy (stripe lock held). The copy keeps the item's version: moving is
 * not a write. A counter's copy stays frozen until its slot is published
 * (see kv__swap_slot's carry). */
static int relocate(struct kv__seg *kv, uint32_t stripe, struct kv__hit *hit,
		    uint64_t home, uint64_t size, struct kv__drain *d)
{
	struct kv__segment *dg = seg_at(kv, d->dest);
	uint64_t used = atomic_load_explicit(&dg->used, memory_order_relaxed);
	uint64_t doff = seg_base(kv, d->dest) + used;
	const struct kv__item *src = kv__item_at(kv, hit->off);
	struct kv__item *dst = kv__item_at(kv, doff);
	struct kv__swap carry = {.carry = dst, .carry_version = true};
	int err;

	KV_CRASHPOINT();
	atomic_store_explicit(&dst->expires_at, hit->expires_at,
			      memory_order_relaxed);
	dst->vlen = src->vlen;
	dst->klen = src->klen;
	dst->kind = src->kind;
	dst->pad = 0;
	/* a counter's copy is written frozen: a thread that saw this counter
	 * at doff before (it has moved back and forth) must not add to the
	 * copy before the carry fills it; kv__swap_slot() unfreezes it once
	 * it is linked */
	atomic_store_explicit(&dst->version,
			      hit->version | (src->kind == KV_KIND_COUNTER
						      ? KV_VER_FROZEN
						      : 0),
			      memory_order_relaxed);
	atomic_store_explicit(&dst->cvalue, hit->cvalue, memory_order_relaxed);
	dst->uflags = src->uflags;
	dst->hash32 = src->hash32;
	memcpy((uint8_t *)dst + KV_ITEM_HDR, (const uint8_t *)src + KV_ITEM_HDR,
	       size - KV_ITEM_HDR);
	KV_CRASHPOINT();
	atomic_store_explicit(&dg->used, used + size, memory_order_release);
	err = kv__swap_slot(kv, stripe, hit, home,
			    (hit->word & ~(KV_SLOT_OFF_MASK | KV_SLOT_VISITED)) |
				    (doff / KV_ITEM_ALIGN),
			    0, 0, &carry);
	if (err)
		return err;
	kv__live_add(kv, doff, (int64_t)size);
	kv__live_add(kv, hit->off, -(int64_t)size);
	kv__note_expiry(kv, doff, hit->expires_at);
	kv__stat_inc(kv, KV_ST_RELOCATED);
	return 0;
}

/* Handle one item of the victim: if still linked, drop, move or evict it.
 * Takes the item's stripe lock (cleaner mutex held). */
static int drain_one(struct kv__seg *kv, uint64_t off, uint32_t hash32,
		     uint64_t size, struct kv__drain *d)
{
	uint64_t home = kv__home_bucket(kv, hash32);
	uint32_t stripe = kv__stripe_of(kv, home);
	struct kv__hit hit;
	int64_t now = 0;
	uint64_t dest_used;
	int err = kv__stripe_lock(kv, stripe);

	if (err)
		return err;
	if (!find_by_offset(kv, home, off, &hit))
		goto out;
	if (kv__is_expired(hit.expires_at, &now)) {
		kv__drop(kv, stripe, &hit, KV_ST_EXPIRED);
		goto out;
	}
	dest_used = d->dest != KV_NO_SEG
			    ? atomic_load_explicit(&seg_at(kv, d->dest)->used,
						   memory_order_relaxed)
			    : 0;
	if (d->dest != KV_NO_SEG &&
	    (!d->may_evict || d->move_all ||
	     ((hit.word & KV_SLOT_VISITED) && d->move_budget >= size)) &&
	    dest_used % KV_ITEM_ALIGN == 0 &&
	    dest_used <= kv->segment_bytes - size) {
		err = relocate(kv, stripe, &hit, home, size, d);
		if (err == 0 && d->move_budget >= size)
			d->move_budget -= size;
		goto out;
	}
	if (d->may_evict)
		kv__drop(kv, stripe, &hit, KV_ST_EVICTIONS);
	else
		err = -ENOSPC;
out:
	kv__stripe_unlock(kv, stripe);
	return err;
}

/* The victim's items cannot be walked (corrupt header): unlink every slot
 * that points into it, one stripe lock at a time. */
static int unlink_all_in(struct kv__seg *kv, uint32_t victim)
{
	for (uint32_t st = 0; st < kv->nstripes; st++) {
		uint64_t first = (uint64_t)st * kv->stripe_buckets;
		int err = kv__stripe_lock(kv, st);
		if (err)
			return err;
		for (uint64_t b = first; b < first + kv->stripe_buckets; b++) {
			for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
				uint64_t w = atomic_load_explicit(
					&kv->buckets[b].slot[s],
					memory_order_relaxed);
				struct kv__hit hit;
				if (!w || !kv__in_data(kv, kv__slot_off(w), 1) ||
				    kv__seg_of(kv, kv__slot_off(w)) != victim)
					continue;
				kv__hit_fill(kv, &hit, b, s, w);
				kv__drop(kv, st, &hit, KV_ST_EVICTIONS);
			}
		}
		kv__stripe_unlock(kv, st);
	}
	return 0;
}

/* Walk the victim's items in order. Every length read from the segment is
 * bounded by the segment before it is used to step. */
static int drain(struct kv__seg *kv, struct kv__drain *d)
{
	uint64_t base = seg_base(kv, d->victim);
	uint64_t used = atomic_load_explicit(&seg_at(kv, d->victim)->used,
					     memory_order_acquire);
	uint64_t o = 0;

	if (used > kv->segment_bytes)
		return unlink_all_in(kv, d->victim);
	while (o < used) {
		const struct kv__item *it = kv__item_at(kv, base + o);
		uint64_t size = used - o >= KV_ITEM_HDR
					? kv__item_bytes(kv, it)
					: 0;
		int err;
		if (size == 0 || size > used - o)
			return unlink_all_in(kv, d->victim);
		err = drain_one(kv, base + o, it->hash32, size, d);
		if (err)
			return err;
		o += size;
	}
	return 0;
}

/*
 * kv__lock()'s repair for the drain mutex: nothing. A reclaim that died
 * left its victim DRAINING and its destination DEST, consistent states that
 * the next reclaim resumes; the walk's own changes were made under stripe
 * mutexes, whose repairs cover them.
 */
int kv__drain_repair(struct kv__seg *kv, void *what)
{
	(void)kv;
	(void)what;
	return 0;
}

/* Is there a segment lane_refill() would take for need bytes (cleaner
 * mutex held)? */
static bool room_for(struct kv__seg *kv, uint64_t need)
{
	for (uint32_t s = 0; s < kv->nsegs; s++)
		if (seg_takes(kv, s, need))
			return true;
	return false;
}

/* Pick the victim (or resume the DRAINING one) and the destination (drain
 * mutex held; takes the cleaner mutex). d->victim stays KV_NO_SEG when
 * there is room after all: a reclaim that waited for another one to finish
 * must not empty a second segment (and evict) for nothing. */
static int drain_begin(struct kv__seg *kv, struct kv__drain *d, uint64_t need)
{
	int err = kv__lock(kv, &kv->cleaner->mutex, kv__cleaner_repair,
			   kv->cleaner);

	if (err)
		return err;
	d->victim = seg_find(kv, KV_SEG_DRAINING);
	if (d->victim == KV_NO_SEG && room_for(kv, need))
		goto unlock;
	if (d->victim == KV_NO_SEG) {
		d->victim = pick_victim(kv, d->may_evict, need);
		if (d->victim == KV_NO_SEG) {
			err = -ENOSPC;
			goto unlock;
		}
		seg_set_state(kv, d->victim, KV_SEG_DRAINING);
	}
	/* A victim that is at least half garbage (values overwritten or
	 * deleted) frees half a segment or more without evicting anything:
	 * move every live item, read or not. Only a store that is mostly
	 * live data evicts, and then only items not read since written. */
	d->move_all = seg_live(kv, d->victim, kv__now_ms()) <=
		      kv->segment_bytes / 2;
	d->dest = dest_get(kv);
unlock:
	kv__unlock(&kv->cleaner->mutex);
	return err;
}

/*
 * Empty one segment so that lanes have room again (takes the drain mutex,
 * and the cleaner mutex before and after the walk). Resumes an interrupted
 * reclaim first. need is the size of the item waiting for room. Errors:
 * -ENOSPC nothing can be freed (no victim, or only by evicting when
 * !may_evict), lock errors.
 */
int kv__reclaim(struct kv__seg *kv, bool may_evict, uint64_t need)
{
	struct kv__drain d = {.may_evict = may_evict,
			      .move_budget = kv->segment_bytes / 2};
	int err = kv__lock(kv, &kv->cleaner->drain, kv__drain_repair, NULL);
	int lock_err;

	if (err)
		return err;
	err = drain_begin(kv, &d, need);
	if (err || d.victim == KV_NO_SEG)
		goto unlock_drain;
	err = drain(kv, &d);
	if (err && err != -ENOSPC)
		goto unlock_drain; /* stays DRAINING; resumed next time */
	lock_err = kv__lock(kv, &kv->cleaner->mutex, kv__cleaner_repair,
			    kv->cleaner);
	if (lock_err) {
		err = lock_err; /* stays DRAINING; resumed next time */
		goto unlock_drain;
	}
	if (err == -ENOSPC) { /* may not evict: give the victim back */
		seg_set_state(kv, d.victim, KV_SEG_SEALED);
		goto unlock;
	}

	if (d.dest != KV_NO_SEG &&
	    atomic_load_explicit(&seg_at(kv, d.dest)->used,
				 memory_order_relaxed) == 0) {
		seg_set_state(kv, d.dest, KV_SEG_RESERVE);
		seg_reset(kv, d.victim);
		seg_set_state(kv, d.victim, KV_SEG_FREE);
	} else {
		if (d.dest != KV_NO_SEG)
			seg_set_state(kv, d.dest, KV_SEG_PARTIAL);
		seg_reset(kv, d.victim);
		seg_set_state(kv, d.victim, KV_SEG_RESERVE);
	}
	kv__stat_inc(kv, KV_ST_SEGS_RECLAIMED);
unlock:
	kv__unlock(&kv->cleaner->mutex);
unlock_drain:
	kv__unlock(&kv->cleaner->drain);
	return err;
}

/* How many segments a lane could take that have at least half a segment
 * of room (FREE, or PARTIAL and at most half used). Lock-free; a hint. */
uint32_t kv__roomy_segments(struct kv__seg *kv)
{
	uint32_t n = 0;

	for (uint32_t s = 0; s < kv->nsegs; s++) {
		uint32_t st = seg_state(kv, s);
		uint64_t used = atomic_load_explicit(&seg_at(kv, s)->used,
						     memory_order_relaxed);
		if (st == KV_SEG_FREE ||
		    (st == KV_SEG_PARTIAL && used <= kv->segment_bytes / 2))
			n++;
	}
	return n;
}

/* For kvshm_stats(): the largest item that fits without reclaiming, and
 * the number of empty segments. Reads without locks; approximate by nature. */
uint64_t kv__largest_free(struct kv__seg *kv, uint64_t *free_segs)
{
	uint64_t largest = 0;

	*free_segs = 0;
	for (uint32_t s = 0; s < kv->nsegs; s++) {
		uint32_t st = seg_state(kv, s);
		uint64_t used = atomic_load_explicit(&seg_at(kv, s)->used,
						     memory_order_relaxed);
		uint64_t room = used < kv->segment_bytes
					? kv->segment_bytes - used
					: 0;
		if (st == KV_SEG_FREE)
			(*free_segs)++;
		if ((st == KV_SEG_FREE || st == KV_SEG_PARTIAL ||
		     st == KV_SEG_OPEN) &&
		    room > largest)
			largest = room;
	}
	return largest > KV_ITEM_HDR ? largest - KV_ITEM_HDR : 0;
}
