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

/*
 * NOEVICT HEADROOM. In a log-structured store an overwrite writes the new
 * copy before the old one becomes garbage, so a NOEVICT store filled to
 * the last byte by new keys could not overwrite any of them. New keys
 * (n->insert) therefore leave headroom_bytes() of the lanes' room (FREE and
 * PARTIAL segments) to overwrites; the garbage those overwrites leave is
 * what the cleaner compacts to make room again.
 */
static uint64_t headroom_bytes(const struct kv__seg *kv)
{
	return (1 + (uint64_t)kv->nsegs / 32) * kv->segment_bytes;
}

/* Is k missing or expired, for the headroom? A lock-free look, asked only
 * when a lane needs a new segment, so writes that fit in their lane pay
 * nothing for it. Not knowing (the bucket kept changing) counts as an
 * overwrite: the headroom is a reserve, and refusing an overwrite is what
 * it exists to prevent. */
static bool key_is_new(struct kv__seg *kv, const struct kv__key *k)
{
	struct kv__hit hit;
	int64_t now = 0;
	int r = kv__read(kv, k, NULL, 0, &hit);

	return r == 0 || (r == 1 && kv__is_expired(hit.expires_at, &now));
}

/* Room a lane could take for the write n describes: the first segment at
 * or after the hand that takes n->bytes, or KV_NO_SEG; a new key in a
 * NOEVICT store must also leave the headroom (cleaner mutex held). */
static uint32_t room_for(struct kv__seg *kv, const struct kv__need *n)
{
	uint32_t pick = KV_NO_SEG;
	uint64_t room = 0;

	for (uint32_t i = 0; i < kv->nsegs; i++) {
		uint32_t s = (kv->cleaner->hand + i) % kv->nsegs;
		uint32_t st = seg_state(kv, s);
		uint64_t used = atomic_load_explicit(&seg_at(kv, s)->used,
						     memory_order_relaxed);
		if (pick == KV_NO_SEG && seg_takes(kv, s, n->bytes)) {
			pick = s;
			if (!n->insert || !kv->noevict)
				return pick;
		}
		if ((st == KV_SEG_FREE || st == KV_SEG_PARTIAL) &&
		    used <= kv->segment_bytes)
			room += kv->segment_bytes - used;
	}
	if (pick != KV_NO_SEG && room < n->bytes + headroom_bytes(kv))
		return KV_NO_SEG;
	return pick;
}

/* Seal the lane's segment and give it one with room for the write n (lane
 * mutex held; takes the cleaner mutex). -ENOSPC: none is free. */
static int lane_refill(struct kv__seg *kv, uint32_t lane,
		       const struct kv__need *n)
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

	pick = room_for(kv, n);
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
 * caller can link the item first. Reclaims memory when the store is full
 * (how: KV_ALLOC_MAY_EVICT, KV_ALLOC_COPY), never evicting k itself.
 * Errors: -E2BIG (can never fit), -ENOSPC, lock errors.
 */
int kv__alloc_item(struct kv__seg *kv, const struct kv__key *k, const void *val,
		   size_t vlen, unsigned kind, unsigned how,
		   struct kv__alloc *a)
{
	uint64_t size = kv__item_size(k->len, vlen, kind);
	struct kv__need need = {.bytes = size,
				.may_evict = how & KV_ALLOC_MAY_EVICT,
				.key = k};
	bool held = false, ask = kv->noevict && !(how & KV_ALLOC_COPY);
	uint32_t lane = 0;
	int err = 0;

	if (size > kv->segment_bytes) {
		kv__stat_inc(kv, KV_ST_FAIL_TOO_BIG);
		return -E2BIG;
	}
	/* Other writers may take the room a reclaim made before this lane
	 * gets to it (a reclaim frees about what one write needs, not a whole
	 * segment). A reclaim that returns 0 emptied a segment or found room,
	 * so the store progresses while this write retries; the bound only
	 * stops one that keeps losing that race. */
	for (unsigned attempt = 0; attempt < 256; attempt++) {
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
		if (ask) { /* only now: the headroom (see above) asks */
			need.insert = key_is_new(kv, k);
			ask = false;
		}
		err = lane_refill(kv, lane, &need);
		if (err == 0)
			continue;
		kv__unlock(&kv->lanes[lane].mutex);
		held = false;
		if (err != -ENOSPC)
			return err;
		err = kv__reclaim(kv, &need);
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

/*
 * THE VICTIM (cleaner mutex held). What emptying a segment gains is its
 * garbage, the bytes it uses that no linked item holds: a PARTIAL segment's
 * free tail is room already. An evicting store empties sealed segments in
 * the order of the drain hand, which makes eviction CLOCK-like: each item
 * is examined about once per lap, so a read item's second chance lasts
 * about a lap. A segment elsewhere with clearly more garbage (by more than
 * 1/KV_GARBAGE_FIRST_DIV of a segment) goes first: it frees room with fewer
 * moves. A NOEVICT store takes, among the segments whose live items fit in
 * room (the destination's free bytes, 0 without one) with the waiting
 * write still fitting after them, the one with the most garbage; none
 * with garbage, no victim.
 */
#define KV_GARBAGE_FIRST_DIV 8u
static uint32_t pick_victim(struct kv__seg *kv, const struct kv__need *n,
			    uint64_t room)
{
	int64_t now = kv__now_ms();
	uint32_t best = KV_NO_SEG, next = KV_NO_SEG, hand;
	uint64_t best_gain = 0, next_gain = 0;

	hand = kv->cleaner->drain_hand % kv->nsegs; /* shared: bound it */
	for (uint32_t i = 0; i < kv->nsegs; i++) {
		uint32_t s = (hand + i) % kv->nsegs;
		uint32_t st = seg_state(kv, s);
		uint64_t live, used, gain;
		if (st != KV_SEG_SEALED && st != KV_SEG_PARTIAL)
			continue;
		live = seg_live(kv, s, now);
		used = atomic_load_explicit(&seg_at(kv, s)->used,
					    memory_order_relaxed);
		gain = used > live ? used - live : 0;
		if (next == KV_NO_SEG && st == KV_SEG_SEALED) {
			next = s;
			next_gain = gain;
		}
		if (!n->may_evict && live > 0 &&
		    (live > room || room - live < n->bytes))
			continue; /* would not fit with the write */
		if (best == KV_NO_SEG || gain > best_gain) {
			best = s;
			best_gain = gain;
		}
	}
	if (best == KV_NO_SEG)
		return KV_NO_SEG;
	if (!n->may_evict) /* no garbage: it would only move the room */
		return best_gain > 0 ? best : KV_NO_SEG;
	if (next != KV_NO_SEG &&
	    best_gain <= next_gain + kv->segment_bytes / KV_GARBAGE_FIRST_DIV) {
		kv->cleaner->drain_hand = (next + 1) % kv->nsegs;
		return next;
	}
	return best;
}

/* Free bytes at the end of segment s; 0 for a damaged cursor. */
static uint64_t seg_room(struct kv__seg *kv, uint32_t s)
{
	uint64_t used = atomic_load_explicit(&seg_at(kv, s)->used,
					     memory_order_relaxed);

	if (used % KV_ITEM_ALIGN || used > kv->segment_bytes)
		return 0;
	return kv->segment_bytes - used;
}

/* The cleaner's destination (cleaner mutex held): the current DEST, unless
 * it has no room for the waiting write; else an empty RESERVE or FREE
 * segment made DEST; else none. A DEST too full for the write is sealed
 * (a victim like any other later) when another destination exists or the
 * store may evict: an evicting store then drains one victim with no
 * destination, which becomes the new RESERVE. A NOEVICT store keeps it,
 * since without a destination it could compact nothing. */
static uint32_t dest_get(struct kv__seg *kv, const struct kv__need *n)
{
	uint32_t d = seg_find(kv, KV_SEG_DEST);
	uint32_t spare = seg_find(kv, KV_SEG_RESERVE);

	if (spare == KV_NO_SEG)
		spare = seg_find(kv, KV_SEG_FREE);
	if (d != KV_NO_SEG && seg_room(kv, d) < n->bytes &&
	    (spare != KV_NO_SEG || n->may_evict)) {
		seg_set_state(kv, d, KV_SEG_SEALED);
		d = KV_NO_SEG;
	}
	if (d == KV_NO_SEG && spare != KV_NO_SEG) {
		d = spare;
		seg_set_state(kv, d, KV_SEG_DEST);
	}
	return d;
}

/*
 * EVICTION ORDER. A reclaim empties its victim; what the victim holds that
 * is still live is moved to the destination or evicted. To evict about what
 * the waiting write needs, and not a whole segment, the reclaim gets an
 * eviction quota: the bytes that would not fit in the destination if it is
 * to keep max(n->bytes, segment/KV_EVICT_BATCH_DIV) free for the writes
 * that follow. The walk is the CLOCK hand: from the victim's start, while
 * quota is left, an item not read since it was last examined is evicted and
 * a read one loses its visited bit (its second chance). Then the items the
 * hand did not reach are moved, bits kept, and after them the ones that
 * used their second chance, so that the next lap reaches those last. A move
 * never takes the destination's last floor bytes, so the waiting write
 * finds room there. The key the write is for is never evicted by its own
 * reclaim: it is moved, or the reclaim fails. kill -9 in a pass leaves the
 * victim DRAINING; the next reclaim walks it again from the start, so the
 * items whose bit the first pass had cleared lose their second chance
 * (nothing else: each step is one unlink or move under the stripe lock).
 */
struct kv__drain {
	uint32_t victim, dest;
	const struct kv__need *need;
	uint64_t quota;           /* bytes still to evict */
	uint64_t floor;           /* destination bytes moves leave free */
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

/* Is the linked item at hit the item of key k (stripe lock held)? */
static bool is_key(struct kv__seg *kv, const struct kv__hit *hit,
		   const struct kv__key *k, uint32_t hash32, uint64_t size)
{
	const struct kv__item *it = kv__item_at(kv, hit->off);

	return hash32 == (uint32_t)(k->hash >> 32) && it->klen == k->len &&
	       KV_ITEM_HDR + k->len <= size &&
	       memcmp((const uint8_t *)it + KV_ITEM_HDR, k->ptr, k->len) == 0;
}

/* Copy the linked item at hit into the destination and swap the slot to
 * the copy (stripe lock held). The copy keeps the item's version and
 * visited bit: moving is neither a write nor a read. A counter's copy stays
 * frozen until its slot is published (see kv__swap_slot's carry). */
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
			    (hit->word & ~KV_SLOT_OFF_MASK) |
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

static void evict(struct kv__seg *kv, uint32_t stripe, struct kv__hit *hit,
		  uint64_t size, struct kv__drain *d)
{
	kv__drop(kv, stripe, hit, KV_ST_EVICTIONS);
	d->quota -= d->quota < size ? d->quota : size;
}

enum drain_step {
	DRAIN_EXAMINE, /* evict if not read, else clear the visited bit */
	DRAIN_MOVE,    /* move if it fits, else evict (or fail) */
};

/* One item of the victim: if still linked, drop it if expired, else take
 * the step (see EVICTION ORDER). Takes the item's stripe lock (drain mutex
 * held). */
static int drain_one(struct kv__seg *kv, uint64_t off, uint32_t hash32,
		     uint64_t size, struct kv__drain *d, enum drain_step step)
{
	const struct kv__need *n = d->need;
	uint64_t home = kv__home_bucket(kv, hash32);
	uint32_t stripe = kv__stripe_of(kv, home);
	struct kv__hit hit;
	int64_t now = 0;
	uint64_t room;
	bool keep;
	int err = kv__stripe_lock(kv, stripe);

	if (err)
		return err;
	if (!find_by_offset(kv, home, off, &hit))
		goto out;
	if (kv__is_expired(hit.expires_at, &now)) {
		kv__drop(kv, stripe, &hit, KV_ST_EXPIRED);
		goto out;
	}
	/* what may not be evicted: everything without eviction, and the key
	 * the waiting write is for */
	keep = !n->may_evict ||
	       (n->key && is_key(kv, &hit, n->key, hash32, size));
	if (step == DRAIN_EXAMINE) {
		if (keep)
			goto out; /* moved by the last pass */
		if (!(hit.word & KV_SLOT_VISITED)) {
			evict(kv, stripe, &hit, size, d);
		} else { /* second chance: clear the bit, move it last */
			KV_CRASHPOINT();
			atomic_fetch_and_explicit(
				&kv->buckets[hit.bucket].slot[hit.slot],
				~KV_SLOT_VISITED, memory_order_relaxed);
		}
		goto out;
	}
	room = d->dest != KV_NO_SEG ? seg_room(kv, d->dest) : 0;
	if (room >= size && (keep || room - size >= d->floor))
		err = relocate(kv, stripe, &hit, home, size, d);
	else if (!keep)
		evict(kv, stripe, &hit, size, d);
	else
		err = -ENOSPC; /* the victim is given back */
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
				if (!w ||
				    !kv__in_data(kv, kv__slot_off(w),
						 KV_ITEM_HDR) ||
				    kv__seg_of(kv, kv__slot_off(w)) != victim)
					continue;
				kv__hit_fill(kv, &hit, b, s, w);
				kv__drop(kv, st, &hit, KV_ST_DISCARDED);
			}
		}
		kv__stripe_unlock(kv, st);
	}
	return 0;
}

/* Take step on the victim's items from offset *o until end, or, when
 * examining, until the quota is met; *o is where it stopped. Every length
 * read from the segment is bounded by the segment before it is used to
 * step; a length that does not fit is 1 (the walk cannot go on). */
static int drain_walk(struct kv__seg *kv, struct kv__drain *d, uint64_t *o,
		      uint64_t end, enum drain_step step)
{
	uint64_t base = seg_base(kv, d->victim);

	while (*o < end && (step != DRAIN_EXAMINE || d->quota > 0)) {
		const struct kv__item *it = kv__item_at(kv, base + *o);
		uint64_t size = end - *o >= KV_ITEM_HDR
					? kv__item_bytes(kv, it)
					: 0;
		int err;
		if (size == 0 || size > end - *o)
			return 1;
		err = drain_one(kv, base + *o, it->hash32, size, d, step);
		if (err)
			return err;
		*o += size;
	}
	return 0;
}

/* Empty the victim in three passes (see EVICTION ORDER): examine from the
 * start until the quota is met; move the rest, which the hand has not
 * looked at; then move what the first pass kept, so that it comes after
 * the rest in the destination and is examined again only after it. */
static int drain(struct kv__seg *kv, struct kv__drain *d)
{
	uint64_t used = atomic_load_explicit(&seg_at(kv, d->victim)->used,
					     memory_order_acquire);
	uint64_t split = 0, o, zero = 0;
	int err;

	if (used > kv->segment_bytes)
		return unlink_all_in(kv, d->victim);
	err = drain_walk(kv, d, &split, used, DRAIN_EXAMINE);
	o = split;
	if (!err)
		err = drain_walk(kv, d, &o, used, DRAIN_MOVE);
	if (!err)
		err = drain_walk(kv, d, &zero, split, DRAIN_MOVE);
	return err == 1 ? unlink_all_in(kv, d->victim) : err;
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

/* Pick the victim (or resume the DRAINING one) and the destination, and
 * set the quota (drain mutex held; takes the cleaner mutex). d->victim
 * stays KV_NO_SEG when there is room after all: a reclaim that waited for
 * another one to finish must not empty a second segment (and evict) for
 * nothing. */
static int drain_begin(struct kv__seg *kv, struct kv__drain *d)
{
	const struct kv__need *n = d->need;
	uint64_t room, live, keep_free;
	int err = kv__lock(kv, &kv->cleaner->mutex, kv__cleaner_repair,
			   kv->cleaner);

	if (err)
		return err;
	d->victim = seg_find(kv, KV_SEG_DRAINING);
	if (d->victim == KV_NO_SEG && room_for(kv, n) != KV_NO_SEG)
		goto unlock;
	d->dest = dest_get(kv, n);
	room = d->dest != KV_NO_SEG ? seg_room(kv, d->dest) : 0;
	if (d->victim == KV_NO_SEG) {
		d->victim = pick_victim(kv, n, room);
		if (d->victim == KV_NO_SEG) {
			err = -ENOSPC;
			goto unlock;
		}
		seg_set_state(kv, d->victim, KV_SEG_DRAINING);
	}
	live = seg_live(kv, d->victim, kv__now_ms());
	keep_free = kv->segment_bytes / KV_EVICT_BATCH_DIV;
	if (keep_free < n->bytes)
		keep_free = n->bytes;
	d->quota = n->may_evict && live + keep_free > room
			   ? live + keep_free - room
			   : 0;
	d->floor = room >= n->bytes ? n->bytes : 0;
unlock:
	kv__unlock(&kv->cleaner->mutex);
	return err;
}

/* Give the emptied victim and the destination back (cleaner mutex held).
 * The store keeps one spare, RESERVE or DEST, for the next reclaim, and
 * the waiting write gets a segment with room for it:
 *   nothing moved          the destination stays the spare, the victim FREE
 *   room left for n        the destination PARTIAL, the victim the spare
 *   no room left for n     the victim FREE; the destination stays DEST and
 *                          the next reclaim seals it (see dest_get)
 *   no destination         the victim is the spare; the caller reclaims
 *                          again, into it */
static void drain_end(struct kv__seg *kv, const struct kv__drain *d)
{
	uint64_t used = d->dest != KV_NO_SEG
				? atomic_load_explicit(&seg_at(kv, d->dest)->used,
						       memory_order_relaxed)
				: 0;

	seg_reset(kv, d->victim);
	if (d->dest == KV_NO_SEG) {
		seg_set_state(kv, d->victim, KV_SEG_RESERVE);
	} else if (used == 0) {
		seg_set_state(kv, d->dest, KV_SEG_RESERVE);
		seg_set_state(kv, d->victim, KV_SEG_FREE);
	} else if (seg_room(kv, d->dest) >= d->need->bytes) {
		seg_set_state(kv, d->dest, KV_SEG_PARTIAL);
		seg_set_state(kv, d->victim, KV_SEG_RESERVE);
	} else {
		seg_set_state(kv, d->victim, KV_SEG_FREE);
	}
}

/* Purge every stripe that a kvshm_clear() emptied but no writer has locked
 * since, so that the live hints stop counting what the clear removed.
 * Returns how many were purged (drain mutex held). */
static uint32_t purge_cleared_stripes(struct kv__seg *kv)
{
	uint32_t n = 0;

	for (uint32_t st = 0; st < kv->nstripes; st++) {
		if (kv__stripe_is_current(kv, st))
			continue;
		if (kv__stripe_lock(kv, st) == 0) { /* purges it */
			kv__stripe_unlock(kv, st);
			n++;
		}
	}
	return n;
}

/*
 * Empty one segment so that lanes have room for the write n describes
 * (takes the drain mutex, and the cleaner mutex before and after the walk).
 * Resumes an interrupted reclaim first. Errors: -ENOSPC nothing can be
 * freed (no victim, or only by evicting when !n->may_evict), lock errors.
 */
int kv__reclaim(struct kv__seg *kv, const struct kv__need *n)
{
	struct kv__drain d = {.need = n};
	int err = kv__lock(kv, &kv->cleaner->drain, kv__drain_repair, NULL);
	int lock_err;

	if (err)
		return err;
	err = drain_begin(kv, &d);
	/* after a clear the hints still count the cleared items: a store
	 * with nothing to evict would look full until every stripe is
	 * written or swept */
	if (err == -ENOSPC && purge_cleared_stripes(kv))
		err = drain_begin(kv, &d);
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
	if (err == -ENOSPC) { /* could not move what may not be evicted */
		seg_set_state(kv, d.victim, KV_SEG_SEALED);
		goto unlock;
	}
	drain_end(kv, &d);
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
