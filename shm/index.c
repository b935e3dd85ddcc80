/* SPDX-License-Identifier: MIT */
/*
 * index.c - the bucket index: lock-free lookups, lookups and slot changes
 * under a stripe lock, and the repair of a stripe whose owner died. Owns the
 * buckets, the stripes and their intent records; never touches allocation
 * segments except to adjust their live_hint.
 *
 * THE ONE CRITICAL SECTION THAT CHANGES A SLOT (kv__swap_slot)
 *   0. intent = {op, bucket, slot, old_word, new_word}; state = ARMED
 *   1. if the old item is a counter: freeze it (16-byte CAS), so no
 *      lock-free incr can land on it any more
 *   2. bucket.seq += 1 (odd), release fence
 *   3. slot = new_word (release); a moved counter's copy, frozen until
 *      now (relocate, carry), is unfrozen
 *   4. bucket.seq += 1 (even); home bucket's overflow count +-1
 *   5. stripe totals; wseq += 1; intent.state = NONE
 * kill -9 before 0: nothing changed. Between 0 and 3: the slot holds
 * old_word, the old counter may be frozen, a bucket seq may be odd: the
 * repair unfreezes it and evens the seq (the write was not acknowledged, so
 * undoing it is allowed). From 3 on: the slot holds new_word (the write is
 * complete as far as readers go); the repair evens the seq and recounts the
 * overflow counts and totals, and unfreezes the linked counters, a moved
 * copy still frozen included. Either way the repair then recounts the whole
 * stripe from its slots, so totals never drift.
 */
#include "internal.h"

#include <sched.h>
#include <time.h>

/* ---- racy copies ------------------------------------------------------
 * Optimistic readers copy bytes that a writer may be reusing at the same
 * moment; the copy is thrown away unless the bucket sequence validates it.
 * That is a data race by the letter of C11, and deliberate. ThreadSanitizer
 * builds use word-at-a-time atomic loads in uninstrumented functions so the
 * validated pattern is not reported; other builds use memcpy/memcmp.
 */
#if KV_TSAN
__attribute__((no_sanitize("thread"))) void
kv__copy_racy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	for (size_t i = 0; i < n; i++)
		d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

__attribute__((no_sanitize("thread"))) bool
kv__equal_racy(const void *shared, const void *mine, size_t n)
{
	const unsigned char *s = shared, *m = mine;
	for (size_t i = 0; i < n; i++)
		if (__atomic_load_n(&s[i], __ATOMIC_RELAXED) != m[i])
			return false;
	return true;
}
#else
void kv__copy_racy(void *dst, const void *src, size_t n)
{
	memcpy(dst, src, n);
}

bool kv__equal_racy(const void *shared, const void *mine, size_t n)
{
	return memcmp(shared, mine, n) == 0;
}
#endif

/* ---- small helpers ---------------------------------------------------- */

static inline uint64_t meta_seq(uint64_t meta)
{
	return meta & KV_META_SEQ_MASK;
}

static inline unsigned meta_ovf(uint64_t meta)
{
	return (unsigned)(meta >> KV_META_OVF_SHIFT);
}

static inline uint64_t meta_make(uint64_t seq, unsigned ovf)
{
	return (seq & KV_META_SEQ_MASK) | ((uint64_t)ovf << KV_META_OVF_SHIFT);
}

static inline struct kv__bucket *bucket_at(struct kv__seg *kv, uint64_t b)
{
	return &kv->buckets[b];
}

void kv__key_init(const struct kv__seg *kv, struct kv__key *k, const void *key,
		  size_t klen)
{
	k->ptr = key;
	k->len = klen;
	k->hash = kv__hash(kv, key, klen);
	k->home = kv__home_bucket(kv, (uint32_t)(k->hash >> 32));
	k->stripe = kv__stripe_of(kv, k->home);
}

bool kv__is_expired(int64_t expires_at, int64_t *now)
{
	if (expires_at == 0)
		return false;
	if (*now == 0)
		*now = kv__now_ms();
	return expires_at <= *now;
}

/* Size of a linked item, from its header; 0 if the header is not sane.
 * Callers hold the item's stripe lock, so the header is stable, but it is
 * still shared memory: bounded before use. */
uint64_t kv__item_bytes(const struct kv__seg *kv, const struct kv__item *it)
{
	unsigned kind = it->kind;
	size_t klen = it->klen, vlen = it->vlen;

	if ((kind != KV_KIND_BYTES && kind != KV_KIND_COUNTER) || klen == 0 ||
	    klen > kv->max_key || vlen > kv->max_value ||
	    (kind == KV_KIND_COUNTER && vlen != 0))
		return 0;
	return kv__item_size(klen, vlen, kind);
}

/* The stripe's buckets belong to the current clear generation. Both loads
 * acquire: they pair with the release stores in kvshm_clear() and in
 * kv__purge_stripe(). */
bool kv__stripe_is_current(struct kv__seg *kv, uint32_t stripe)
{
	uint64_t want = atomic_load_explicit(&kv->hdr->clear_gen,
					     memory_order_acquire);
	return (atomic_load_explicit(&kv->gens[stripe], memory_order_acquire) &
		~KV_GEN_MOVED) == want;
}

int kv__stripe_lock(struct kv__seg *kv, uint32_t stripe)
{
	struct kv__stripe *st = &kv->stripes[stripe];
	int err = kv__lock(kv, &st->mutex, kv__stripe_repair, st);

	if (err)
		return err;
	/* relaxed: the mutex orders it; MOVED is only set under it */
	if (KV_UNLIKELY(atomic_load_explicit(&kv->gens[stripe],
					     memory_order_relaxed) &
			KV_GEN_MOVED)) {
		/* MOVED is set only once the segment is MIGRATING, and a
		 * rollback clears it under this mutex before the segment is
		 * LIVE again: on a LIVE segment it is damage (or a clear_gen
		 * with bit 63 set), and KV_EMOVED would send the caller to
		 * wait, for ever, for a resize that does not exist. */
		bool stray = atomic_load_explicit(&kv->hdr->life,
						  memory_order_acquire) ==
			     KV_LIFE_LIVE;
		kv__unlock(&st->mutex);
		return stray ? -ENOTRECOVERABLE : KV_EMOVED;
	}
	if (KV_UNLIKELY(!kv__stripe_is_current(kv, stripe)))
		kv__purge_stripe(kv, stripe);
	return 0;
}

void kv__stripe_unlock(struct kv__seg *kv, uint32_t stripe)
{
	kv__unlock(&kv->stripes[stripe].mutex);
}

/* ---- versions and counters -------------------------------------------- */

uint64_t kv__new_version(struct kv__seg *kv, uint32_t stripe)
{
	struct kv__stripe *st = &kv->stripes[stripe];
	uint64_t id;

	KV_CRASHPOINT();
	st->vseq++;
	id = ((st->vseq & ((UINT64_C(1) << 35) - 1)) << 16) | (stripe & 0xffff);
	return id << KV_VER_ID_SHIFT;
}

/*
 * The {version, cvalue} pair of a counter changes only by this 16-byte CAS,
 * a full barrier that pairs with the acquire loads of counter_load(). On
 * x86-64 it is written out as `lock cmpxchg16b`: compilers otherwise call
 * libatomic, and ThreadSanitizer emulates 16-byte atomics with a lock that
 * is private to one process, which is not atomic between processes.
 */
#if defined(__x86_64__)
static bool cas_pair(struct kv__item *it, uint64_t v, uint64_t c, uint64_t nv,
		     uint64_t nc)
{
	bool ok;
	__asm__ __volatile__("lock cmpxchg16b (%[pair])"
			     : "=@ccz"(ok), "+a"(v), "+d"(c)
			     : [pair] "r"(&it->version), "b"(nv), "c"(nc)
			     : "memory");
	return ok;
}
#else
static bool cas_pair(struct kv__item *it, uint64_t v, uint64_t c, uint64_t nv,
		     uint64_t nc)
{
	unsigned __int128 *pair = (unsigned __int128 *)(void *)&it->version;
	unsigned __int128 expect = ((unsigned __int128)c << 64) | v;
	unsigned __int128 want = ((unsigned __int128)nc << 64) | nv;

	return __sync_bool_compare_and_swap(pair, expect, want);
}
#endif

/* Read a counter's {version, value} consistently without writing: versions
 * never repeat, so an unchanged version means no CAS happened in between. */
static KV_RACY_FN bool counter_load(struct kv__item *it, uint64_t *v,
				       uint64_t *c)
{
	for (unsigned i = 0; i < 1000; i++) {
		uint64_t v0 = atomic_load_explicit(&it->version,
						   memory_order_acquire);
		uint64_t c0 = atomic_load_explicit(&it->cvalue,
						   memory_order_acquire);
		if (atomic_load_explicit(&it->version, memory_order_acquire) ==
		    v0) {
			*v = v0;
			*c = c0;
			return true;
		}
	}
	return false;
}

/*
 * Add delta to the counter at off, which a validated lookup (or the stripe
 * lock) showed linked with version `seen`. Returns 0 and the new value,
 * -ERANGE, or -EAGAIN when the caller must take the locked path (frozen,
 * write count used up, not the same item any more, or contention).
 *
 * WHY THIS LANDS ONLY ON THE COUNTER'S LIVE COPY: the CAS is attempted only
 * while the version at off is unfrozen and carries the creation id of
 * `seen`. Creation ids are never handed out twice (VERSIONS in format.h),
 * even across a resize, so memory that now holds another item's header has
 * another id (or value bytes would have to reproduce exactly a version this
 * counter had). The same counter can be at off again, as a copy the cleaner
 * moved back there, but a copy is written frozen and unfrozen only after
 * its slot is published (relocate(), kv__swap_slot() step 3); the source is
 * frozen before that, in step 1, and stays frozen until its memory is
 * reused. So at any moment at most one copy of a counter is unfrozen, and
 * it is the linked one (or, between a crash and the repair, an unlinked
 * one that the repair unfreezes back because the change was undone): an
 * acknowledged add is never overwritten by a carry.
 */
int kv__counter_add(struct kv__seg *kv, uint64_t off, uint64_t seen,
		    int64_t delta, int64_t *result)
{
	struct kv__item *it = kv__item_at(kv, off);

	for (unsigned tries = 0; tries < 64; tries++) {
		uint64_t v, c;
		int64_t sum;
		if (!counter_load(it, &v, &c))
			return -EAGAIN;
		if ((v >> KV_VER_ID_SHIFT) != (seen >> KV_VER_ID_SHIFT) ||
		    (v & KV_VER_WRITES_MASK) == KV_VER_WRITES_MASK)
			return -EAGAIN; /* frozen, another item, or worn out */
		if (__builtin_add_overflow((int64_t)c, delta, &sum))
			return -ERANGE;
		if (cas_pair(it, v, c, v + 1, (uint64_t)sum)) {
			*result = sum;
			return 0;
		}
	}
	return -EAGAIN;
}

/*
 * Freeze the counter item at hit (under its stripe lock, intent armed): no
 * lock-free incr can change it afterwards. With check_cas, fail with
 * -ESTALE unless its version is cas. hit->version/cvalue get the frozen
 * values. Non-counters are immutable, so they only get the version check.
 */
int kv__freeze(struct kv__seg *kv, struct kv__hit *hit, bool check_cas,
	       uint64_t cas)
{
	struct kv__item *it = kv__item_at(kv, hit->off);

	if (hit->kind != KV_KIND_COUNTER)
		return check_cas && hit->version != cas ? -ESTALE : 0;
	for (;;) {
		uint64_t v, c;
		if (!counter_load(it, &v, &c))
			continue;
		if (v & KV_VER_FROZEN) { /* left by a crash; repair unfroze? */
			v &= ~KV_VER_FROZEN;
			hit->version = v;
			hit->cvalue = c;
			return check_cas && v != cas ? -ESTALE : 0;
		}
		if (check_cas && v != cas)
			return -ESTALE;
		KV_CRASHPOINT();
		if (cas_pair(it, v, c, v | KV_VER_FROZEN, c)) {
			hit->version = v;
			hit->cvalue = c;
			return 0;
		}
	}
}

/* Undo kv__freeze() (repair of an unpublished change, or a failed CAS). */
void kv__unfreeze(struct kv__seg *kv, uint64_t off)
{
	struct kv__item *it = kv__item_at(kv, off);
	uint64_t v, c;

	while (counter_load(it, &v, &c) && (v & KV_VER_FROZEN)) {
		KV_CRASHPOINT();
		if (cas_pair(it, v, c, v & ~KV_VER_FROZEN, c))
			break;
	}
}

/* ---- lookups ------------------------------------------------------------ */

/* Fill hit from the item at off (caller holds the stripe lock). */
void kv__hit_fill(struct kv__seg *kv, struct kv__hit *hit, uint64_t b,
		     unsigned slot, uint64_t word)
{
	struct kv__item *it = kv__item_at(kv, kv__slot_off(word));

	hit->bucket = b;
	hit->slot = slot;
	hit->word = word;
	hit->off = kv__slot_off(word);
	hit->kind = it->kind;
	hit->vlen = it->vlen;
	hit->uflags = it->uflags;
	hit->expires_at = atomic_load_explicit(&it->expires_at,
					       memory_order_relaxed);
	if (hit->kind == KV_KIND_COUNTER) {
		/* lock-free adds kept changing the pair for 1000 reads: take
		 * the version, then the value, each one it held. Whoever acts
		 * on the version checks it again with the pair's CAS
		 * (kv__counter_add, kv__freeze); a value read alone is one the
		 * counter held during this call. */
		if (!counter_load(it, &hit->version, &hit->cvalue)) {
			hit->version = atomic_load_explicit(
				&it->version, memory_order_acquire);
			hit->cvalue = atomic_load_explicit(
				&it->cvalue, memory_order_acquire);
		}
		hit->version &= ~KV_VER_FROZEN;
	} else {
		hit->version = atomic_load_explicit(&it->version,
						    memory_order_relaxed);
		hit->cvalue = 0;
	}
}

/* Does the linked item at word hold key k? (stripe lock held) */
static bool item_matches(struct kv__seg *kv, const struct kv__key *k,
			 uint64_t word)
{
	uint64_t off = kv__slot_off(word);
	const struct kv__item *it;

	if (!kv__slot_tag_matches(word, k->hash) ||
	    !kv__in_data(kv, off, KV_ITEM_HDR))
		return false;
	it = kv__item_at(kv, off);
	if (it->klen != k->len || kv__item_bytes(kv, it) == 0 ||
	    !kv__in_data(kv, off, kv__item_bytes(kv, it)))
		return false;
	return memcmp((const uint8_t *)it + KV_ITEM_HDR, k->ptr, k->len) == 0;
}

/*
 * Find k under its stripe lock. Only slots whose displacement leads back to
 * k's home bucket can hold k; the home bucket's overflow count says how many
 * such slots lie past it, so the walk stops once it has passed them all.
 */
bool kv__find_locked(struct kv__seg *kv, const struct kv__key *k,
		     struct kv__hit *hit)
{
	unsigned displaced = 0, seen = 0;

	for (unsigned i = 0; i < KV_MAX_PROBE; i++) {
		uint64_t b = kv__probe(kv, k->home, i);
		struct kv__bucket *bk = bucket_at(kv, b);
		if (i == 0)
			displaced = meta_ovf(atomic_load_explicit(
				&bk->meta, memory_order_relaxed));
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			uint64_t w = atomic_load_explicit(&bk->slot[s],
							  memory_order_relaxed);
			if (!w || kv__slot_disp(w) != i)
				continue;
			seen += i > 0;
			if (item_matches(kv, k, w)) {
				kv__hit_fill(kv, hit, b, s, w);
				return true;
			}
		}
		if (seen >= displaced)
			break;
	}
	return false;
}

enum { KV_READ_MISS = 0, KV_READ_HIT = 1, KV_READ_RETRY = 2 };

/*
 * Examine one candidate slot optimistically. Everything read from the item
 * is untrusted until the caller validates the bucket sequence: each field is
 * read once and bounded before it is used for anything.
 */
static KV_RACY_FN int read_candidate(struct kv__seg *kv,
				     const struct kv__key *k, uint64_t word,
				     void *buf, size_t buflen,
				     struct kv__hit *hit)
{
	uint64_t off = kv__slot_off(word);
	const struct kv__item *it;
	unsigned kind;
	size_t klen, vlen;

	if (!kv__in_data(kv, off, KV_ITEM_HDR))
		return KV_READ_RETRY; /* garbage: a writer got in between */
	it = kv__item_at(kv, off);
	klen = __atomic_load_n(&it->klen, __ATOMIC_RELAXED);
	if (klen != k->len)
		return KV_READ_MISS;
	kind = __atomic_load_n(&it->kind, __ATOMIC_RELAXED);
	vlen = __atomic_load_n(&it->vlen, __ATOMIC_RELAXED);
	if ((kind != KV_KIND_BYTES && kind != KV_KIND_COUNTER) ||
	    vlen > kv->max_value ||
	    !kv__in_data(kv, off, kv__item_size(klen, vlen, kind)))
		return KV_READ_RETRY;
	if (!kv__equal_racy((const uint8_t *)it + KV_ITEM_HDR, k->ptr, klen))
		return KV_READ_MISS;

	hit->off = off;
	hit->word = word;
	hit->kind = (uint8_t)kind;
	hit->vlen = (uint32_t)vlen;
	hit->uflags = __atomic_load_n(&it->uflags, __ATOMIC_RELAXED);
	hit->expires_at = atomic_load_explicit(&it->expires_at,
					       memory_order_relaxed);
	if (kind == KV_KIND_COUNTER) {
		uint64_t v, c;
		if (!counter_load((struct kv__item *)it, &v, &c))
			return KV_READ_RETRY;
		hit->version = v & ~KV_VER_FROZEN;
		hit->cvalue = c;
		if (buf && buflen >= sizeof(int64_t))
			memcpy(buf, &c, sizeof(int64_t));
	} else {
		hit->version = atomic_load_explicit(&it->version,
						    memory_order_relaxed);
		hit->cvalue = 0;
		if (buf && vlen <= buflen)
			kv__copy_racy(buf, (const uint8_t *)it + KV_ITEM_HDR +
						   klen,
				      vlen);
	}
	return KV_READ_HIT;
}

/* One optimistic pass over the key's probe window, stopping as
 * kv__find_locked() does. Every bucket looked at is re-validated. */
static int read_once(struct kv__seg *kv, const struct kv__key *k, void *buf,
		     size_t buflen, struct kv__hit *hit)
{
	uint64_t seen_b[KV_MAX_PROBE], metas[KV_MAX_PROBE];
	unsigned nseen = 0, displaced = 0, passed = 0;
	int r = KV_READ_MISS;

	if (!kv__stripe_is_current(kv, k->stripe))
		return KV_READ_MISS; /* cleared, not yet purged */

	for (unsigned i = 0; i < KV_MAX_PROBE && r == KV_READ_MISS; i++) {
		uint64_t b = kv__probe(kv, k->home, i);
		struct kv__bucket *bk = bucket_at(kv, b);
		/* acquire: pairs with the writer's release of the even seq */
		uint64_t m = atomic_load_explicit(&bk->meta,
						  memory_order_acquire);
		if (m & 1)
			return KV_READ_RETRY;
		seen_b[nseen] = b;
		metas[nseen++] = m;
		if (i == 0)
			displaced = meta_ovf(m);
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			/* acquire: pairs with the release store of the slot,
			 * so the item bytes written before it are visible */
			uint64_t w = atomic_load_explicit(&bk->slot[s],
							  memory_order_acquire);
			if (!w || kv__slot_disp(w) != i)
				continue;
			passed += i > 0;
			if (!kv__slot_tag_matches(w, k->hash))
				continue;
			r = read_candidate(kv, k, w, buf, buflen, hit);
			if (r == KV_READ_RETRY)
				return r;
			if (r == KV_READ_HIT) {
				hit->bucket = b;
				hit->slot = s;
				break;
			}
		}
		if (passed >= displaced)
			break;
	}
	/* acquire fence: the item reads above happen before the re-reads of
	 * the sequences; pairs with the writer's release fence after it made
	 * a sequence odd (a change we overlapped shows up as a new seq). */
	KV_FENCE(memory_order_acquire);
	for (unsigned i = 0; i < nseen; i++)
		if (atomic_load_explicit(&bucket_at(kv, seen_b[i])->meta,
					 memory_order_relaxed) != metas[i])
			return KV_READ_RETRY;
	return r;
}

static void backoff(unsigned attempt)
{
	if (attempt < 8) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	} else if (attempt < 32) {
		sched_yield();
	} else {
		struct timespec ts = {0, 50 * 1000};
		nanosleep(&ts, NULL);
	}
}

/*
 * Look key up without taking a lock. Returns 1 (hit, *hit filled, value
 * copied into buf if it fits), 0 (miss) or -EAGAIN (the bucket kept
 * changing: the caller falls back to the stripe lock). Read-only handles,
 * which may not lock, keep retrying for up to ~2 s before -EAGAIN.
 */
int kv__read(struct kv__seg *kv, const struct kv__key *k, void *buf,
	     size_t buflen, struct kv__hit *hit)
{
	unsigned limit = kv->rdonly ? 40000 : KV_READ_RETRIES;

	for (unsigned attempt = 0; attempt < limit; attempt++) {
		int r = read_once(kv, k, buf, buflen, hit);
		if (r != KV_READ_RETRY) {
			if (attempt)
				kv__stat_add(kv, KV_ST_READ_RETRIES, attempt);
			return r;
		}
		backoff(attempt);
	}
	kv__stat_inc(kv, KV_ST_READ_FALLBACKS);
	return -EAGAIN;
}

/* Set the slot's visited bit after a hit, if it is still the same item.
 * The CAS fails harmlessly if a writer changed the slot meanwhile. */
void kv__mark_visited(struct kv__seg *kv, const struct kv__hit *hit)
{
	_Atomic uint64_t *slot;
	uint64_t w = hit->word;

	if (kv->rdonly || (w & KV_SLOT_VISITED))
		return;
	slot = &bucket_at(kv, hit->bucket)->slot[hit->slot];
	atomic_compare_exchange_strong_explicit(slot, &w, w | KV_SLOT_VISITED,
						memory_order_relaxed,
						memory_order_relaxed);
}

/* ---- changing a slot ---------------------------------------------------- */

static void bucket_bump(struct kv__bucket *bk)
{
	uint64_t m = atomic_load_explicit(&bk->meta, memory_order_relaxed);
	atomic_store_explicit(&bk->meta, meta_make(meta_seq(m) + 1, meta_ovf(m)),
			      memory_order_release);
}

static void home_ovf_add(struct kv__seg *kv, uint64_t home, int delta)
{
	struct kv__bucket *bk = bucket_at(kv, home);
	uint64_t m = atomic_load_explicit(&bk->meta, memory_order_relaxed);
	int ovf = (int)meta_ovf(m) + delta;

	if (ovf < 0)
		ovf = 0; /* impossible unless corrupt; the repair recounts */
	/* seq + 2 keeps it even; release so a reader that sees the new count
	 * also sees the slot stored before it */
	KV_CRASHPOINT();
	atomic_store_explicit(&bk->meta, meta_make(meta_seq(m) + 2,
						   (unsigned)ovf),
			      memory_order_release);
}

/*
 * Replace the slot at `at` (at->word is its current content, 0 if empty)
 * with new_word (0 = unlink), as described at the top of this file. `home`
 * is the home bucket of the key in that slot; the deltas go to the stripe
 * totals. A counter in the old slot is frozen first (with o->check_cas, its
 * version must be o->cas or the result is -ESTALE and nothing changes), and
 * o->carry, the new item, can take over its value (see struct kv__swap).
 * Stripe lock held.
 */
int kv__swap_slot(struct kv__seg *kv, uint32_t stripe, struct kv__hit *at,
		  uint64_t home, uint64_t new_word, int64_t items_delta,
		  int64_t bytes_delta, const struct kv__swap *o)
{
	struct kv__stripe *st = &kv->stripes[stripe];
	struct kv__bucket *bk = bucket_at(kv, at->bucket);
	uint64_t old_word = at->word & ~KV_SLOT_VISITED;
	int err = 0;

	KV_CRASHPOINT();
	st->intent.op = KV_OP_PUBLISH;
	st->intent.bucket = at->bucket;
	st->intent.slot = at->slot;
	st->intent.old_word = old_word;
	st->intent.new_word = new_word;
	KV_CRASHPOINT();
	atomic_store_explicit(&st->intent.state, KV_INTENT_ARMED,
			      memory_order_release);

	if (old_word) {
		err = kv__freeze(kv, at, o && o->check_cas, o ? o->cas : 0);
		if (err)
			goto disarm;
		if (o && o->carry && at->kind == KV_KIND_COUNTER) {
			int64_t sum;
			if (__builtin_add_overflow((int64_t)at->cvalue,
						   o->carry_delta, &sum)) {
				kv__unfreeze(kv, at->off);
				err = -ERANGE;
				goto disarm;
			}
			KV_CRASHPOINT();
			atomic_store_explicit(&o->carry->cvalue, (uint64_t)sum,
					      memory_order_relaxed);
			if (o->carried)
				*o->carried = sum;
			/* a move's copy keeps the version, and stays
			 * frozen (as relocate() wrote it) until step 3 */
			if (o->carry_version)
				atomic_store_explicit(&o->carry->version,
						      at->version |
							      KV_VER_FROZEN,
						      memory_order_relaxed);
		}
	}

	KV_CRASHPOINT();
	bucket_bump(bk); /* odd */
	/* release fence: a reader that reads anything stored below also
	 * sees the odd seq when it re-reads (pairs with its acquire fence) */
	KV_FENCE(memory_order_release);
	KV_CRASHPOINT();
	atomic_store_explicit(&bk->slot[at->slot], new_word,
			      memory_order_release);
	if (o && o->carry && o->carry_version && at->kind == KV_KIND_COUNTER)
		kv__unfreeze(kv, (uint64_t)((uint8_t *)o->carry - kv->base));
	KV_CRASHPOINT();
	bucket_bump(bk); /* even */
	if (at->bucket != home && (!old_word) != (!new_word))
		home_ovf_add(kv, home, new_word ? 1 : -1);
	KV_CRASHPOINT();
	st->items += (uint64_t)items_delta;
	st->bytes += (uint64_t)bytes_delta;
	atomic_fetch_add_explicit(&st->wseq, 1, memory_order_release);
disarm:
	KV_CRASHPOINT();
	atomic_store_explicit(&st->intent.state, KV_INTENT_NONE,
			      memory_order_release);
	return err;
}

/* Unlink the item at hit and count why (stripe lock held). */
void kv__drop(struct kv__seg *kv, uint32_t stripe, struct kv__hit *hit,
	      enum kv__stat why)
{
	uint64_t size = kv__item_bytes(kv, kv__item_at(kv, hit->off));

	kv__swap_slot(kv, stripe, hit, kv__slot_home(kv, hit->bucket, hit->word),
		      0, -1,
		      -(int64_t)size, NULL);
	kv__live_add(kv, hit->off, -(int64_t)size);
	kv__stat_inc(kv, why);
}

/*
 * Find a free slot in k's probe window, making one if the window is full:
 * an expired item goes first, then (may_evict) one not visited since the
 * hand last passed, like CLOCK. Returns 0 with *where set (word 0), or
 * -ENOSPC. Stripe lock held.
 */
int kv__place(struct kv__seg *kv, const struct kv__key *k, bool may_evict,
	      struct kv__hit *where)
{
	int64_t now = 0;
	struct kv__hit victim = {0}, first = {0}, cand;
	bool have_victim = false, have_first = false;

	/* pass 0: a free slot; pass 1: an expired item, else the victim */
	for (unsigned pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < KV_MAX_PROBE; i++) {
			uint64_t b = kv__probe(kv, k->home, i);
			struct kv__bucket *bk = bucket_at(kv, b);
			for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
				uint64_t w = atomic_load_explicit(
					&bk->slot[s], memory_order_relaxed);
				if (pass == 0 && w == 0) {
					*where = (struct kv__hit){.bucket = b,
								  .slot = s};
					return 0;
				}
				uint64_t home, size;
				if (pass == 0 || w == 0)
					continue;
				/* a damaged slot is never followed (nor
				 * evicted: kvshm_check and the stripe repair
				 * clear it) */
				if (!kv__slot_sane(kv, b, w, &home, &size))
					continue;
				kv__hit_fill(kv, &cand, b, s, w);
				if (!have_first) {
					first = cand;
					have_first = true;
				}
				if (kv__is_expired(cand.expires_at, &now)) {
					kv__drop(kv, k->stripe, &cand,
						 KV_ST_EXPIRED);
					*where = (struct kv__hit){.bucket = b,
								  .slot = s};
					return 0;
				}
				if (!may_evict || have_victim)
					continue;
				if (!(w & KV_SLOT_VISITED)) {
					victim = cand;
					have_victim = true;
				} else { /* second chance: clear the bit */
					KV_CRASHPOINT();
					atomic_fetch_and_explicit(
						&bk->slot[s], ~KV_SLOT_VISITED,
						memory_order_relaxed);
				}
			}
		}
	}
	if (!may_evict)
		return -ENOSPC;
	if (!have_victim) { /* all were visited: the hand wraps to the first */
		if (!have_first)
			return -ENOSPC; /* every slot of the window is damaged */
		victim = first;
	}
	*where = (struct kv__hit){.bucket = victim.bucket, .slot = victim.slot};
	kv__drop(kv, k->stripe, &victim, KV_ST_EVICTIONS);
	return 0;
}

/* ---- clear and repair --------------------------------------------------- */

/*
 * Empty a stripe left behind by kvshm_clear() (stripe lock held). The
 * intent says PURGE first, so a crash half-way is finished by the repair;
 * every step is idempotent.
 */
void kv__purge_stripe(struct kv__seg *kv, uint32_t stripe)
{
	struct kv__stripe *st = &kv->stripes[stripe];
	uint64_t gen = atomic_load_explicit(&kv->hdr->clear_gen,
					    memory_order_acquire);
	uint64_t first = (uint64_t)stripe * kv->stripe_buckets;

	KV_CRASHPOINT();
	st->intent.op = KV_OP_PURGE;
	KV_CRASHPOINT();
	atomic_store_explicit(&st->intent.state, KV_INTENT_ARMED,
			      memory_order_release);
	for (uint64_t b = first; b < first + kv->stripe_buckets; b++) {
		struct kv__bucket *bk = bucket_at(kv, b);
		uint64_t m = atomic_load_explicit(&bk->meta,
						  memory_order_relaxed);
		bool any = meta_ovf(m) != 0;
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++)
			any |= atomic_load_explicit(&bk->slot[s],
						    memory_order_relaxed) != 0;
		if (!any)
			continue;
		KV_CRASHPOINT();
		bucket_bump(bk);
		KV_FENCE(memory_order_release);
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			uint64_t w = atomic_load_explicit(
				&bk->slot[s], memory_order_relaxed);
			uint64_t off = kv__slot_off(w);
			if (!w)
				continue;
			if (kv__in_data(kv, off, KV_ITEM_HDR))
				kv__live_add(kv, off,
					     -(int64_t)kv__item_bytes(
						     kv, kv__item_at(kv, off)));
			KV_CRASHPOINT();
			atomic_store_explicit(&bk->slot[s], 0,
					      memory_order_release);
		}
		KV_CRASHPOINT();
		m = atomic_load_explicit(&bk->meta, memory_order_relaxed);
		atomic_store_explicit(&bk->meta, meta_make(meta_seq(m) + 1, 0),
				      memory_order_release);
	}
	KV_CRASHPOINT();
	st->items = 0;
	st->bytes = 0;
	atomic_fetch_add_explicit(&st->wseq, 1, memory_order_release);
	KV_CRASHPOINT();
	atomic_store_explicit(&kv->gens[stripe],
			      gen | (atomic_load_explicit(&kv->gens[stripe],
							  memory_order_relaxed) &
				     KV_GEN_MOVED),
			      memory_order_release);
	KV_CRASHPOINT();
	atomic_store_explicit(&st->intent.state, KV_INTENT_NONE,
			      memory_order_release);
}

/*
 * Is the slot word w, found in bucket b of stripe, a sane link? Checks what
 * can be checked without hashing the key: the offset, the header, that the
 * item lies inside one allocation segment, and that the slot's displacement
 * leads to the item's home bucket (*home). Used by the repair and by
 * kvshm_check().
 */
bool kv__slot_sane(struct kv__seg *kv, uint64_t b, uint64_t w, uint64_t *home,
		   uint64_t *size)
{
	uint64_t off = kv__slot_off(w), seg_end;
	const struct kv__item *it;

	if (!kv__in_data(kv, off, KV_ITEM_HDR) ||
	    kv__slot_disp(w) >= KV_MAX_PROBE)
		return false;
	it = kv__item_at(kv, off);
	*size = kv__item_bytes(kv, it);
	seg_end = kv->data_off +
		  ((uint64_t)kv__seg_of(kv, off) + 1) * kv->segment_bytes;
	if (*size == 0 || off + *size > seg_end ||
	    kv__seg_of(kv, off) >= kv->nsegs)
		return false;
	*home = kv__slot_home(kv, b, w);
	return kv__home_bucket(kv, it->hash32) == *home;
}

/*
 * Rebuild a stripe's derived state from its slots (stripe lock held, owner
 * dead): every seq even, insane slots cleared (they were never trustworthy:
 * counted as KV_ST_DISCARDED), overflow counts and totals recounted, counters left
 * frozen unfrozen. Bounded by stripe_buckets * KV_BUCKET_SLOTS.
 */
static void stripe_rebuild(struct kv__seg *kv, uint32_t stripe)
{
	struct kv__stripe *st = &kv->stripes[stripe];
	uint64_t first = (uint64_t)stripe * kv->stripe_buckets;
	uint64_t items = 0, bytes = 0;

	/* Every bucket of the stripe stays "being written" (odd sequence)
	 * while its overflow counts are zeroed and recounted, so lock-free
	 * readers retry (and in the end wait for this lock) rather than stop
	 * early on a count not yet recounted. A crash anywhere in here leaves
	 * sequences odd and counts partial: the next repair starts over. */
	KV_CRASHPOINT();
	for (uint64_t b = first; b < first + kv->stripe_buckets; b++) {
		struct kv__bucket *bk = bucket_at(kv, b);
		uint64_t m = atomic_load_explicit(&bk->meta,
						  memory_order_relaxed);
		atomic_store_explicit(&bk->meta, meta_make(meta_seq(m) | 1, 0),
				      memory_order_relaxed);
	}
	/* release fence: a reader that reads anything stored below also sees
	 * the odd seq when it re-reads (pairs with its acquire fence) */
	KV_FENCE(memory_order_release);
	for (uint64_t b = first; b < first + kv->stripe_buckets; b++) {
		struct kv__bucket *bk = bucket_at(kv, b);
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			uint64_t w = atomic_load_explicit(
				&bk->slot[s], memory_order_relaxed);
			uint64_t home, size;
			if (!w)
				continue;
			if (!kv__slot_sane(kv, b, w, &home, &size)) {
				KV_CRASHPOINT(); /* the bucket is odd */
				atomic_store_explicit(&bk->slot[s], 0,
						      memory_order_release);
				kv__stat_inc(kv, KV_ST_DISCARDED);
				continue;
			}
			items++;
			bytes += size;
			if (home != b)
				home_ovf_add(kv, home, 1);
			/* a counter is frozen only inside a critical section
			 * of this stripe, or for good once a resize moved it;
			 * anything else was left by the dead owner */
			if (kv__item_at(kv, kv__slot_off(w))->kind ==
				    KV_KIND_COUNTER &&
			    !(atomic_load_explicit(&kv->gens[stripe],
						   memory_order_relaxed) &
			      KV_GEN_MOVED))
				kv__unfreeze(kv, kv__slot_off(w));
		}
	}
	/* counts complete: make every sequence even again (a new value, so a
	 * reader that overlapped the rebuild retries) */
	KV_CRASHPOINT();
	for (uint64_t b = first; b < first + kv->stripe_buckets; b++) {
		struct kv__bucket *bk = bucket_at(kv, b);
		uint64_t m = atomic_load_explicit(&bk->meta,
						  memory_order_relaxed);
		atomic_store_explicit(&bk->meta,
				      meta_make(meta_seq(m) + 1, meta_ovf(m)),
				      memory_order_release);
	}
	KV_CRASHPOINT();
	st->items = items;
	st->bytes = bytes;
	atomic_fetch_add_explicit(&st->wseq, 1, memory_order_release);
}

/*
 * kv__lock()'s repair for a stripe whose owner died. Resolves the one slot
 * change the intent announces (see the top of this file), finishes a purge,
 * then rebuilds the stripe's derived state. Always succeeds: anything that
 * does not verify is cleared rather than trusted. Idempotent, so a crash
 * during the repair is repaired by the next owner.
 */
int kv__stripe_repair(struct kv__seg *kv, void *what)
{
	struct kv__stripe *st = what;
	uint32_t stripe = (uint32_t)(st - kv->stripes);
	struct kv__intent *in = &st->intent;

	if (atomic_load_explicit(&in->state, memory_order_acquire) ==
	    KV_INTENT_ARMED) {
		if (in->op == KV_OP_PURGE) {
			kv__purge_stripe(kv, stripe);
		} else if (in->op == KV_OP_PUBLISH &&
			   in->bucket / kv->stripe_buckets == stripe &&
			   in->slot < KV_BUCKET_SLOTS) {
			struct kv__bucket *bk = bucket_at(kv, in->bucket);
			uint64_t w = atomic_load_explicit(
					     &bk->slot[in->slot],
					     memory_order_relaxed) &
				     ~KV_SLOT_VISITED;
			uint64_t off = kv__slot_off(in->old_word);
			/* not published: undo the freeze of the old item */
			if (in->old_word && w == in->old_word &&
			    kv__in_data(kv, off, KV_ITEM_HDR) &&
			    kv__item_at(kv, off)->kind == KV_KIND_COUNTER)
				kv__unfreeze(kv, off);
		}
		KV_CRASHPOINT();
		atomic_store_explicit(&in->state, KV_INTENT_NONE,
				      memory_order_release);
	}
	stripe_rebuild(kv, stripe);
	return 0;
}
