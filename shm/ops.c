/* SPDX-License-Identifier: MIT */
/*
 * ops.c - the public key-value operations: argument checks, TTL rules and
 * write modes. Builds every operation from index.c (find, read, swap a
 * slot) and alloc.c (write an unlinked item); touches shared memory only
 * through them, plus an item's expiry and header fields before it is
 * linked, a linked item's expiry and its stripe's wseq (expire, under the
 * stripe lock), and the header's clear_gen (clear).
 */
#include "internal.h"

/* ---- argument checks ---------------------------------------------------- */

static int check_key(const struct kv__seg *kv, const void *key, size_t klen)
{
	if (!kv || klen == 0 || !key)
		return -EINVAL;
	return klen > kv->max_key ? -E2BIG : 0;
}

static int check_writable(const struct kv__seg *kv)
{
	return kv->rdonly ? -EROFS : 0;
}

/*
 * Absolute expiry for a write: expires_at if > 0, else now + ttl, where
 * ttl 0 means the store's default and KVSHM_TTL_NEVER (or a TTL so long it
 * overflows) means never (0).
 */
static int64_t expiry_for(const struct kv__seg *kv, uint64_t ttl_ms,
			  int64_t expires_at, int64_t *now)
{
	if (expires_at > 0)
		return expires_at;
	if (ttl_ms == 0)
		ttl_ms = kv->default_ttl_ms;
	if (ttl_ms == 0 || ttl_ms == KVSHM_TTL_NEVER)
		return 0;
	if (*now == 0)
		*now = kv__now_ms();
	if (ttl_ms > (uint64_t)(INT64_MAX - *now))
		return 0;
	return *now + (int64_t)ttl_ms;
}

/* ---- writing ------------------------------------------------------------ */

/* What kind of value a write stores. */
struct kv__value {
	const void *ptr;
	size_t len;
	unsigned kind;            /* KV_KIND_BYTES or KV_KIND_COUNTER */
	int64_t counter;          /* initial value of a new counter */
};

/* Why w's condition fails for its key, found live or not (hit filled when
 * live), or 0. A counter's CAS is checked when it is frozen. */
static int write_condition(const struct kvshm_write *w, bool live,
			   const struct kv__hit *hit)
{
	if (w->mode == KVSHM_ADD && live)
		return -EEXIST;
	if ((w->mode == KVSHM_REPLACE || w->mode == KVSHM_CAS) && !live)
		return -ENOENT;
	if (w->mode == KVSHM_CAS && hit->kind != KV_KIND_COUNTER &&
	    hit->version != w->cas)
		return -ESTALE;
	return 0;
}

/*
 * The write path shared by put and a locked incr that creates a counter:
 * write the new item into a lane, then under the stripe lock check the mode,
 * fill in version and expiry, and swap the slot. Fails without changing the
 * old value; the unlinked item is garbage for the cleaner.
 *
 * A failed call changes nothing: before it allocates (which may evict), a
 * conditional write checks its condition
 * with a lock-free read, the failure's linearization point. Only a write
 * whose condition changed between that read and the lock can fail after
 * allocating; then what its reclaim evicted stays evicted. The reclaim never
 * evicts the key itself (see alloc.c, EVICTION ORDER).
 */
static int write_new(struct kv__seg *kv, const struct kv__key *k,
		     const struct kv__value *v, const struct kvshm_write *w,
		     uint64_t *cas_out)
{
	bool may_evict = !kv->noevict && !(w->opts & KVSHM_NOEVICT_WRITE);
	struct kv__alloc a;
	struct kv__hit old, where;
	struct kv__item *it;
	struct kv__swap sw = {.check_cas = w->mode == KVSHM_CAS, .cas = w->cas};
	int64_t now = 0, expires;
	uint64_t old_size = 0, version;
	bool found, live;
	int err;

	unsigned how = (may_evict ? KV_ALLOC_MAY_EVICT : 0) |
		       (w->opts & KV_WRITE_COPY ? KV_ALLOC_COPY : 0);

	if (w->mode != KVSHM_SET) {
		int r = kv__read(kv, k, NULL, 0, &old);
		if (r < 0 && r != -EAGAIN)
			return r;
		/* -EAGAIN, or an expired hit: the lock decides (a locked
		 * write that found the key live before its TTL ran out may be
		 * publishing; see lookup()) */
		if (r == 1 && kv__is_expired(old.expires_at, &now))
			r = -EAGAIN;
		if (r >= 0) {
			err = write_condition(w, r == 1, &old);
			if (err)
				return err;
		}
	}
	/* The stripe's mutex and the home bucket are the next two cache
	 * misses: start them now so they overlap the copy into the lane. */
	__builtin_prefetch(&kv->stripes[k->stripe], 1);
	__builtin_prefetch(&kv->buckets[k->home], 1);
	err = kv__alloc_item(kv, k, v->ptr, v->len, v->kind, how, &a);
	if (err)
		return err;
	err = kv__stripe_lock(kv, k->stripe);
	if (err)
		goto out_lane;

	/* the clock again: the pre-check's reading may be long past (the
	 * allocation may have reclaimed), and a key that expired since must
	 * not pass as live */
	now = 0;
	found = kv__find_locked(kv, k, &old);
	live = found && !kv__is_expired(old.expires_at, &now);
	err = write_condition(w, live, &old);
	if (err)
		goto out_stripe;

	if (found) {
		where = old;
		old_size = kv__item_bytes(kv, kv__item_at(kv, old.off));
	} else {
		err = kv__place(kv, k, may_evict, &where);
		if (err) {
			kv__stat_inc(kv, KV_ST_FAIL_INDEX_FULL);
			goto out_stripe;
		}
	}

	expires = (w->opts & KVSHM_KEEPTTL) && live
			  ? old.expires_at
			  : expiry_for(kv, w->ttl_ms, w->expires_at_ms, &now);
	version = kv__new_version(kv, k->stripe);
	it = kv__item_at(kv, a.off);
	KV_CRASHPOINT();
	atomic_store_explicit(&it->expires_at, expires, memory_order_relaxed);
	atomic_store_explicit(&it->version, version, memory_order_relaxed);
	atomic_store_explicit(&it->cvalue, (uint64_t)v->counter,
			      memory_order_relaxed);
	it->uflags = v->kind == KV_KIND_COUNTER ? 0 : w->flags;

	err = kv__swap_slot(kv, k->stripe, &where, k->home,
			    kv__slot_word(k->hash, a.off,
				  kv__disp(kv, k->home, where.bucket)),
			    found ? 0 : 1,
			    (int64_t)a.size - (int64_t)old_size, &sw);
	if (err)
		goto out_stripe;
	kv__live_add(kv, a.off, (int64_t)a.size);
	kv__note_expiry(kv, a.off, expires);
	if (found) {
		kv__live_add(kv, old.off, -(int64_t)old_size);
		if (!live)
			kv__stat_inc(kv, KV_ST_EXPIRED);
	}
	if (cas_out)
		*cas_out = version;
out_stripe:
	kv__stripe_unlock(kv, k->stripe);
out_lane:
	kv__alloc_done(kv, &a);
	return err;
}

/* Write key as a counter holding value, expiring at expires_at (0 never),
 * never evicting: kvshm_resize() copies counters with it. */
int kv__put_counter(struct kv__seg *kv, const void *key, size_t klen,
		    int64_t value, int64_t expires_at)
{
	struct kv__value v = {.kind = KV_KIND_COUNTER, .counter = value};
	struct kvshm_write w = {.opts = KVSHM_NOEVICT_WRITE | KV_WRITE_COPY,
				.expires_at_ms = expires_at,
				.ttl_ms = KVSHM_TTL_NEVER};
	struct kv__key k;
	int err = check_key(kv, key, klen);

	if (err)
		return err;
	kv__key_init(kv, &k, key, klen);
	return write_new(kv, &k, &v, &w, NULL);
}

int kv__put(struct kv__seg *kv, const void *key, size_t klen, const void *val,
	      size_t vlen, const struct kvshm_write *w, uint64_t *cas_out)
{
	static const struct kvshm_write plain = {0};
	struct kv__value v = {.ptr = val, .len = vlen, .kind = KV_KIND_BYTES};
	struct kv__key k;
	int err = check_key(kv, key, klen);

	if (err)
		return err;
	if (!w)
		w = &plain;
	if ((!val && vlen) || w->mode > KVSHM_CAS ||
	    (w->opts & ~(KVSHM_KEEPTTL | KVSHM_NOEVICT_WRITE | KV_WRITE_COPY)))
		return -EINVAL;
	if (vlen > kv->max_value) {
		kv__stat_inc(kv, KV_ST_FAIL_TOO_BIG);
		return -E2BIG;
	}
	err = check_writable(kv);
	if (err)
		return err;
	kv__key_init(kv, &k, key, klen);
	err = write_new(kv, &k, &v, w, cas_out);
	if (err == 0)
		kv__stat_inc(kv, KV_ST_SETS);
	return err;
}

/* ---- reading ------------------------------------------------------------ */

/*
 * Look k up: lock-free first, under the stripe lock if the bucket keeps
 * changing. The value is copied into buf when it fits. Returns 1 (hit),
 * 0 (miss) or a negative errno; *now is the clock it judged expiry by.
 *
 * A hit that has expired is looked up again under the lock: a conditional
 * write (REPLACE, CAS) that found the key live a moment before its TTL ran
 * out may be publishing its new value, and a reader must not see the key
 * gone and then back. The lock orders this read after that write. Only
 * read-only handles, which may not lock, can see that (kvshm.h).
 */
static int lookup(struct kv__seg *kv, const struct kv__key *k, void *buf,
		  size_t buflen, struct kv__hit *hit, int64_t *now)
{
	int r = kv__read(kv, k, buf, buflen, hit);

	if (KV_LIKELY(r != -EAGAIN)) {
		if (r != 1 || kv->rdonly ||
		    KV_LIKELY(!kv__is_expired(hit->expires_at, now)))
			return r;
		*now = 0; /* judged again after the lock */
	} else if (kv->rdonly) {
		return -ETIMEDOUT;
	}
	r = kv__stripe_lock(kv, k->stripe);
	if (r)
		return r;
	r = kv__find_locked(kv, k, hit);
	if (r && buf) {
		const uint8_t *val = (const uint8_t *)kv__item_at(kv, hit->off) +
				     KV_ITEM_HDR + k->len;
		if (hit->kind == KV_KIND_COUNTER && buflen >= sizeof(int64_t))
			memcpy(buf, &hit->cvalue, sizeof(int64_t));
		else if (hit->kind != KV_KIND_COUNTER && hit->vlen <= buflen)
			memcpy(buf, val, hit->vlen);
	}
	kv__stripe_unlock(kv, k->stripe);
	return r;
}

static size_t value_len(const struct kv__hit *hit)
{
	return hit->kind == KV_KIND_COUNTER ? sizeof(int64_t) : hit->vlen;
}

int kv__get_ex(struct kv__seg *kv, const void *key, size_t klen, void *buf,
		 size_t buflen, struct kvshm_item *item, unsigned flags)
{
	struct kv__key k;
	struct kv__hit hit;
	int64_t now = 0;
	bool stale;
	int r = check_key(kv, key, klen);

	if (r)
		return r;
	if ((flags & ~(unsigned)KVSHM_GET_STALE) || (!buf && buflen))
		return -EINVAL;
	kv__key_init(kv, &k, key, klen);
	r = lookup(kv, &k, buf, buflen, &hit, &now);
	if (r < 0)
		return r;
	stale = r && kv__is_expired(hit.expires_at, &now);
	if (!r || (stale && !(flags & KVSHM_GET_STALE))) {
		kv__stat_inc(kv, KV_ST_MISSES);
		return -ENOENT;
	}
	kv__stat_inc(kv, KV_ST_HITS);
	kv__mark_visited(kv, &hit);
	if (item) {
		item->value_len = value_len(&hit);
		item->cas = hit.version;
		item->flags = hit.uflags;
		item->counter = hit.kind == KV_KIND_COUNTER;
		item->stale = stale;
		if (hit.expires_at == 0) {
			item->ttl_ms = -1;
		} else {
			if (now == 0)
				now = kv__now_ms();
			/* a stale item's expiry may be anything <= now,
			 * INT64_MIN included (a damaged segment) */
			if (__builtin_sub_overflow(hit.expires_at, now,
						   &item->ttl_ms))
				item->ttl_ms = INT64_MIN;
		}
	}
	return value_len(&hit) > buflen ? -ENOBUFS : 0;
}

/* A live (unexpired) hit for key, without copying the value: 1, 0 or
 * -errno. Reads of this kind count neither as hits nor misses. */
static int lookup_live(struct kv__seg *kv, const void *key, size_t klen,
		       struct kv__hit *hit)
{
	struct kv__key k;
	int64_t now = 0;
	int r = check_key(kv, key, klen);

	if (r)
		return r;
	kv__key_init(kv, &k, key, klen);
	r = lookup(kv, &k, NULL, 0, hit, &now);
	if (r == 1 && kv__is_expired(hit->expires_at, &now))
		r = 0;
	return r;
}

int kv__exists(struct kv__seg *kv, const void *key, size_t klen)
{
	struct kv__hit hit;
	return lookup_live(kv, key, klen, &hit);
}

int kv__ttl(struct kv__seg *kv, const void *key, size_t klen, int64_t *ttl_ms)
{
	struct kv__hit hit;
	int r;

	if (!ttl_ms)
		return -EINVAL;
	r = lookup_live(kv, key, klen, &hit);
	if (r <= 0)
		return r ? r : -ENOENT;
	if (hit.expires_at == 0) {
		*ttl_ms = -1;
	} else {
		int64_t left = hit.expires_at - kv__now_ms();
		*ttl_ms = left > 0 ? left : 1;
	}
	return 0;
}

int kv__counter(struct kv__seg *kv, const void *key, size_t klen,
		  int64_t *value)
{
	struct kv__hit hit;
	int r;

	if (!value)
		return -EINVAL;
	*value = 0;
	r = lookup_live(kv, key, klen, &hit);
	if (r <= 0)
		return r ? r : -ENOENT;
	if (hit.kind != KV_KIND_COUNTER)
		return -ENOMSG;
	*value = (int64_t)hit.cvalue;
	return 0;
}

/* ---- changing existing keys --------------------------------------------- */

/*
 * The common start of delete and expire: check the key, lock its stripe and
 * find it live. Returns 0 with the stripe locked and *hit filled, or an
 * error (-ENOENT for a missing or expired key) with nothing locked. An
 * expired item found on the way is reclaimed: this is a write of its key.
 */
static int lock_live(struct kv__seg *kv, const void *key, size_t klen,
		     struct kv__key *k, struct kv__hit *hit)
{
	int64_t now = 0;
	int err = check_key(kv, key, klen);

	if (!err)
		err = check_writable(kv);
	if (err)
		return err;
	kv__key_init(kv, k, key, klen);
	err = kv__stripe_lock(kv, k->stripe);
	if (err)
		return err;
	if (kv__find_locked(kv, k, hit)) {
		if (!kv__is_expired(hit->expires_at, &now))
			return 0;
		kv__drop(kv, k->stripe, hit, KV_ST_EXPIRED);
	}
	kv__stripe_unlock(kv, k->stripe);
	return -ENOENT;
}

/* Delete key, if its version is cas when check_cas. */
static int delete_key(struct kv__seg *kv, const void *key, size_t klen,
		      bool check_cas, uint64_t cas)
{
	struct kv__key k;
	struct kv__hit hit;
	struct kv__swap sw = {.check_cas = check_cas, .cas = cas};
	uint64_t size;
	int err = lock_live(kv, key, klen, &k, &hit);

	if (err)
		return err;
	size = kv__item_bytes(kv, kv__item_at(kv, hit.off));
	err = kv__swap_slot(kv, k.stripe, &hit, k.home, 0, -1, -(int64_t)size,
			    &sw);
	if (err == 0) {
		kv__live_add(kv, hit.off, -(int64_t)size);
		kv__stat_inc(kv, KV_ST_DELETES);
	}
	kv__stripe_unlock(kv, k.stripe);
	return err;
}

int kv__delete(struct kv__seg *kv, const void *key, size_t klen)
{
	return delete_key(kv, key, klen, false, 0);
}

int kv__delete_cas(struct kv__seg *kv, const void *key, size_t klen,
		     uint64_t cas)
{
	return delete_key(kv, key, klen, true, cas);
}

/* A new expiry is one aligned 8-byte store: a crash leaves the old or the
 * new value, both valid, so no intent is needed. */
int kv__expire(struct kv__seg *kv, const void *key, size_t klen,
		 uint64_t ttl_ms)
{
	struct kv__key k;
	struct kv__hit hit;
	int64_t now = 0, expires;
	int err = lock_live(kv, key, klen, &k, &hit);

	if (err)
		return err;
	expires = expiry_for(kv, ttl_ms, 0, &now);
	KV_CRASHPOINT();
	atomic_store_explicit(&kv__item_at(kv, hit.off)->expires_at, expires,
			      memory_order_release);
	kv__note_expiry(kv, hit.off, expires);
	KV_CRASHPOINT();
	atomic_fetch_add_explicit(&kv->stripes[k.stripe].wseq, 1,
				  memory_order_release);
	kv__stripe_unlock(kv, k.stripe);
	return 0;
}

/* ---- counters ----------------------------------------------------------- */

/*
 * A value that is exactly a decimal int64, as Redis's INCR takes it: an
 * optional '-', then "0" or a digit 1-9 and more digits, nothing else (no
 * '+', no spaces, no leading zeros, no "-0"). 1 with *out set, else 0.
 */
static int parse_decimal(const uint8_t *p, size_t n, int64_t *out)
{
	bool neg = n > 0 && p[0] == '-';
	uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX;
	size_t i = neg;

	if (n == 0 || n > 20 || i == n)
		return 0;
	if (p[i] == '0')
		return n == 1 ? (*out = 0, 1) : 0;
	for (; i < n; i++) {
		unsigned d = (unsigned)p[i] - '0';
		if (d > 9 || v > (limit - d) / 10)
			return 0;
		v = v * 10 + d;
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 1;
}

/* The decimal integer a live bytes item holds, for incr (stripe lock
 * held): 0 with *value, or -ENOMSG. */
static int text_counter(struct kv__seg *kv, const struct kv__hit *hit,
			const struct kv__key *k, int64_t *value)
{
	const uint8_t *p = (const uint8_t *)kv__item_at(kv, hit->off) +
			   KV_ITEM_HDR + k->len;

	return parse_decimal(p, hit->vlen, value) ? 0 : -ENOMSG;
}

/*
 * incr under the stripe lock: add to a live counter (still by CAS, since
 * lock-free incrs do not take the lock), or, when that is not possible,
 * write a new counter item: a fresh one for a missing or expired key, or a
 * copy carrying the old value plus delta when the old one used up its
 * write count, or a counter replacing a value that is decimal text (Redis's
 * rule: "32" + 1 is the counter 33, with the text's TTL). The new item
 * needs a lane, and lanes come before stripes, so the stripe is unlocked,
 * the item allocated, and the check repeated. The result is the value this
 * call linked, not what the item holds later: once linked, lock-free adds
 * of other callers may land on it at once.
 */
static int incr_locked(struct kv__seg *kv, const struct kv__key *k,
		       int64_t delta, uint64_t init_ttl_ms, int64_t *result)
{
	struct kv__alloc a;
	bool have_item = false;
	int err;

	for (;;) {
		struct kv__hit hit, where;
		struct kv__item *it;
		struct kv__swap sw = {0};
		int64_t now = 0, expires = 0, value = delta, text = 0;
		uint64_t old_size = 0, version;
		bool found, live, is_text;

		err = kv__stripe_lock(kv, k->stripe);
		if (err)
			break;
		found = kv__find_locked(kv, k, &hit);
		live = found && !kv__is_expired(hit.expires_at, &now);
		is_text = live && hit.kind != KV_KIND_COUNTER;
		if (is_text) {
			err = text_counter(kv, &hit, k, &text);
			if (!err && __builtin_add_overflow(text, delta, &value))
				err = -ERANGE;
			if (err)
				goto unlock;
		} else if (live) {
			err = kv__counter_add(kv, hit.off, hit.version, delta,
					      result);
			if (err != -EAGAIN)
				goto unlock;
			err = 0;
		}
		if (!have_item) {
			kv__stripe_unlock(kv, k->stripe);
			err = kv__alloc_item(kv, k, NULL, 0, KV_KIND_COUNTER,
					     kv->noevict ? 0
							 : KV_ALLOC_MAY_EVICT,
					     &a);
			if (err)
				return err;
			have_item = true;
			continue;
		}
		/* write the new counter item and link it */
		if (found) {
			where = hit;
			old_size = kv__item_bytes(kv, kv__item_at(kv, hit.off));
		} else if ((err = kv__place(kv, k, !kv->noevict, &where))) {
			kv__stat_inc(kv, KV_ST_FAIL_INDEX_FULL);
			goto unlock;
		}
		if (is_text) { /* the text's value + delta, the text's TTL */
			expires = hit.expires_at;
		} else if (live) { /* carry the old value: kv__swap_slot() */
			sw.carry = kv__item_at(kv, a.off);
			sw.carry_delta = delta;
			sw.carried = &value;
			expires = hit.expires_at;
		} else {
			expires = expiry_for(kv, init_ttl_ms, 0, &now);
		}
		version = kv__new_version(kv, k->stripe);
		it = kv__item_at(kv, a.off);
		KV_CRASHPOINT();
		atomic_store_explicit(&it->expires_at, expires,
				      memory_order_relaxed);
		atomic_store_explicit(&it->version, version,
				      memory_order_relaxed);
		atomic_store_explicit(&it->cvalue, (uint64_t)value,
				      memory_order_relaxed);
		err = kv__swap_slot(kv, k->stripe, &where, k->home,
				    kv__slot_word(k->hash, a.off,
				  kv__disp(kv, k->home, where.bucket)),
			    found ? 0 : 1,
				    (int64_t)a.size - (int64_t)old_size, &sw);
		if (err)
			goto unlock;
		*result = value;
		kv__live_add(kv, a.off, (int64_t)a.size);
		kv__note_expiry(kv, a.off, expires);
		if (found) {
			kv__live_add(kv, hit.off, -(int64_t)old_size);
			if (!live)
				kv__stat_inc(kv, KV_ST_EXPIRED);
		}
unlock:
		kv__stripe_unlock(kv, k->stripe);
		break;
	}
	if (have_item)
		kv__alloc_done(kv, &a);
	return err;
}

int kv__incr(struct kv__seg *kv, const void *key, size_t klen, int64_t delta,
	       uint64_t init_ttl_ms, int64_t *result)
{
	struct kv__key k;
	struct kv__hit hit;
	int64_t now = 0, value;
	int err = check_key(kv, key, klen);

	if (!err)
		err = check_writable(kv);
	if (err)
		return err;
	kv__key_init(kv, &k, key, klen);

	/* fast path: one lock-free CAS on a live counter */
	err = kv__read(kv, &k, NULL, 0, &hit);
	if (err == 1 && !kv__is_expired(hit.expires_at, &now) &&
	    hit.kind == KV_KIND_COUNTER) {
		err = kv__counter_add(kv, hit.off, hit.version, delta,
				      &value);
		if (err == -ERANGE)
			return err;
		if (err == 0)
			kv__mark_visited(kv, &hit); /* a use, like a get */
	} else {
		err = -EAGAIN;
	}
	if (err == -EAGAIN)
		err = incr_locked(kv, &k, delta, init_ttl_ms, &value);
	if (err)
		return err;
	kv__stat_inc(kv, KV_ST_INCRS);
	if (result)
		*result = value;
	return 0;
}

/* Bump the clear generation: every stripe is now logically empty, and is
 * purged by the next lock of it (kv__stripe_lock) or by kvshm_sweep().
 * release: pairs with the acquire in kv__stripe_is_current(). */
int kv__clear(struct kv__seg *kv)
{
	int err;

	if (!kv)
		return -EINVAL;
	err = check_writable(kv);
	if (err)
		return err;
	KV_CRASHPOINT();
	atomic_fetch_add_explicit(&kv->hdr->clear_gen, 1, memory_order_release);
	kv__stat_inc(kv, KV_ST_CLEARS);
	/* a resize may have copied stripes before the bump: clear the
	 * successor too (the caller retries there) */
	if (atomic_load_explicit(&kv->hdr->life, memory_order_acquire) !=
	    KV_LIFE_LIVE)
		return KV_EMOVED;
	return 0;
}
