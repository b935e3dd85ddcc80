/* SPDX-License-Identifier: MIT */
/*
 * scan.c - walking the index: kvshm_scan() (a resumable, lock-free listing
 * that never holds a lock while calling back) and kvshm_sweep() (reclaiming
 * expired items a few buckets per lock hold). Changes slots only through
 * kv__drop().
 *
 * CURSOR. 0 = start or done; otherwise (tag << 48) | (bucket * 8 + slot +
 * 1), the next slot to look at, where tag names the segment (16 bits of its
 * hash seed, never 0). A cursor from another segment (the store was resized
 * during the scan) restarts the scan from the beginning: keys are then
 * visited again, but none is missed. Items never move between slots (a write of the same key
 * reuses its slot, the cleaner swaps the slot's offset in place), so a key
 * present for the whole scan is found at the same position however the
 * table changes, and is visited exactly once unless it is deleted and
 * written again during the scan.
 */
#include "internal.h"

#include <stdlib.h>

#define KV_SLOT_POS 8u /* cursor positions per bucket */
#define KV_CURSOR_POS_MASK ((UINT64_C(1) << 48) - 1)

static uint64_t cursor_tag(const struct kv__seg *kv)
{
	return ((kv->seed[0] >> 48) | 1) << 48;
}

/* One key copied out of a bucket. */
struct scan_entry {
	unsigned slot;
	size_t klen;
	uint8_t *key;             /* points into the scan's key buffer */
	struct kv__hit hit;
};

/* Copy the bucket's slots >= from into e[] optimistically; validate with
 * the bucket sequence. Returns the number copied, or -EAGAIN. */
static KV_RACY_FN int collect_once(struct kv__seg *kv, uint64_t b, unsigned from,
			struct scan_entry *e, uint8_t *keys)
{
	struct kv__bucket *bk = &kv->buckets[b];
	uint64_t m = atomic_load_explicit(&bk->meta, memory_order_acquire);
	int n = 0;

	if (m & 1)
		return -EAGAIN;
	for (unsigned s = from; s < KV_BUCKET_SLOTS; s++) {
		uint64_t w = atomic_load_explicit(&bk->slot[s],
						  memory_order_acquire);
		uint64_t off = kv__slot_off(w);
		const struct kv__item *it;
		size_t klen, vlen;
		unsigned kind;
		if (!w)
			continue;
		if (!kv__in_data(kv, off, KV_ITEM_HDR))
			return -EAGAIN;
		it = kv__item_at(kv, off);
		klen = __atomic_load_n(&it->klen, __ATOMIC_RELAXED);
		vlen = __atomic_load_n(&it->vlen, __ATOMIC_RELAXED);
		kind = __atomic_load_n(&it->kind, __ATOMIC_RELAXED);
		if (klen == 0 || klen > kv->max_key || vlen > kv->max_value ||
		    (kind != KV_KIND_BYTES && kind != KV_KIND_COUNTER) ||
		    !kv__in_data(kv, off, kv__item_size(klen, vlen, kind)))
			return -EAGAIN;
		e[n].slot = s;
		e[n].klen = klen;
		e[n].key = keys + (size_t)n * kv->max_key;
		kv__copy_racy(e[n].key, (const uint8_t *)it + KV_ITEM_HDR,
			      klen);
		e[n].hit = (struct kv__hit){
			.bucket = b,
			.slot = s,
			.word = w,
			.off = off,
			.kind = (uint8_t)kind,
			.vlen = (uint32_t)vlen,
			.uflags = __atomic_load_n(&it->uflags, __ATOMIC_RELAXED),
			.expires_at = atomic_load_explicit(&it->expires_at,
							   memory_order_relaxed),
			.version = atomic_load_explicit(&it->version,
							memory_order_relaxed) &
				   ~KV_VER_FROZEN,
		};
		n++;
	}
	/* pairs with the writer's release fence after making the seq odd */
	KV_FENCE(memory_order_acquire);
	if (atomic_load_explicit(&bk->meta, memory_order_relaxed) != m)
		return -EAGAIN;
	return n;
}

static int collect(struct kv__seg *kv, uint64_t b, unsigned from,
		   struct scan_entry *e, uint8_t *keys)
{
	uint32_t stripe = kv__stripe_of(kv, b);
	unsigned limit = kv->rdonly ? 100000 : KV_READ_RETRIES;
	int n;

	if (!kv__stripe_is_current(kv, stripe))
		return 0;
	for (unsigned i = 0; i < limit; i++) {
		n = collect_once(kv, b, from, e, keys);
		if (n != -EAGAIN)
			return n;
	}
	if (kv->rdonly)
		return -ETIMEDOUT;
	/* the bucket keeps changing: copy it under the lock instead */
	n = kv__stripe_lock(kv, stripe);
	if (n)
		return n;
	n = collect_once(kv, b, from, e, keys);
	kv__stripe_unlock(kv, stripe);
	return n < 0 ? -EIO : n;
}

static void item_info(const struct kv__hit *hit, struct kvshm_item *item,
		      int64_t now)
{
	item->value_len = hit->kind == KV_KIND_COUNTER ? sizeof(int64_t)
						       : hit->vlen;
	item->cas = hit->version;
	item->ttl_ms = hit->expires_at ? hit->expires_at - now : -1;
	item->flags = hit->uflags;
	item->counter = hit->kind == KV_KIND_COUNTER;
	item->stale = false;
}

int kv__scan(struct kv__seg *kv, const void *prefix, size_t plen,
	       uint64_t *cursor, size_t limit, kvshm_scan_fn fn, void *ctx)
{
	struct scan_entry e[KV_BUCKET_SLOTS];
	uint64_t b, total, pos;
	unsigned from;
	uint8_t *keys;
	int64_t now = 0;
	int visited = 0, rc = 0;

	if (!kv || !cursor || !fn || (!prefix && plen))
		return -EINVAL;
	total = kv->nbuckets * KV_SLOT_POS;
	pos = *cursor & KV_CURSOR_POS_MASK;
	if (*cursor && (*cursor & ~KV_CURSOR_POS_MASK) != cursor_tag(kv))
		pos = 0; /* from another segment: start over */
	else if (pos > total)
		return -EINVAL;
	b = pos ? (pos - 1) / KV_SLOT_POS : 0;
	from = pos ? (unsigned)((pos - 1) % KV_SLOT_POS) : 0;
	keys = malloc((size_t)KV_BUCKET_SLOTS * kv->max_key);
	if (!keys)
		return -ENOMEM;

	for (; b < kv->nbuckets; b++, from = 0) {
		int n = from < KV_BUCKET_SLOTS ? collect(kv, b, from, e, keys)
					       : 0;
		if (n < 0) {
			rc = n;
			goto out;
		}
		for (int i = 0; i < n; i++) {
			struct kvshm_item item;
			/* the clock is read again for each item with a TTL:
			 * a slow callback must not be handed keys that
			 * expired while it ran */
			if (e[i].hit.expires_at &&
			    e[i].hit.expires_at <= (now = kv__now_ms()))
				continue;
			if (plen && (e[i].klen < plen ||
				     memcmp(e[i].key, prefix, plen) != 0))
				continue;
			if (limit && (size_t)visited == limit) {
				*cursor = cursor_tag(kv) |
					  (b * KV_SLOT_POS + e[i].slot + 1);
				goto out;
			}
			item_info(&e[i].hit, &item, now);
			visited++;
			rc = fn(e[i].key, e[i].klen, &item, ctx);
			if (rc) {
				*cursor = cursor_tag(kv) |
					  (b * KV_SLOT_POS + e[i].slot + 2);
				goto out;
			}
		}
	}
	*cursor = 0;
out:
	free(keys);
	if (rc < 0)
		return rc;
	return visited;
}

/* ---- sweep -------------------------------------------------------------- */

#define KV_SWEEP_BATCH 16u /* buckets per lock hold */

/* Might buckets [b, end) hold an expired item? A lock-free look, only to
 * avoid locking batches with nothing to do: a wrong answer costs a lock or
 * leaves an item for the next sweep. */
static KV_RACY_FN bool batch_has_expired(struct kv__seg *kv, uint64_t b, uint64_t end,
			      int64_t now)
{
	for (; b < end; b++)
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			uint64_t w = atomic_load_explicit(
				&kv->buckets[b].slot[s], memory_order_acquire);
			uint64_t off = kv__slot_off(w);
			int64_t exp;
			if (!w || !kv__in_data(kv, off, KV_ITEM_HDR))
				continue;
			exp = atomic_load_explicit(
				&kv__item_at(kv, off)->expires_at,
				memory_order_relaxed);
			if (exp && exp <= now)
				return true;
		}
	return false;
}

/* Drop the expired items of buckets [b, end) (stripe lock held). */
static size_t sweep_batch(struct kv__seg *kv, uint32_t stripe, uint64_t b,
			  uint64_t end, size_t budget)
{
	size_t n = 0;
	int64_t now = 0;

	for (; b < end && n < budget; b++)
		for (unsigned s = 0; s < KV_BUCKET_SLOTS && n < budget; s++) {
			uint64_t w = atomic_load_explicit(
				&kv->buckets[b].slot[s], memory_order_relaxed);
			uint64_t home, size;
			struct kv__hit hit;
			if (!w || !kv__slot_sane(kv, b, w, &home, &size))
				continue;
			kv__hit_fill(kv, &hit, b, s, w);
			if (!kv__is_expired(hit.expires_at, &now))
				continue;
			kv__drop(kv, stripe, &hit, KV_ST_EXPIRED);
			kv__stat_inc(kv, KV_ST_EXPIRED_SWEPT);
			n++;
		}
	return n;
}

/*
 * Give writers room before they need it: when no segment with at least half
 * a segment of room is left for the lanes, compact the sealed segment with
 * the most garbage, if at least half of it is garbage. It moves live items
 * and never evicts, so it changes nothing a user can see except that the
 * next writer to run out of room in its lane finds some instead of emptying
 * a segment itself.
 */
static void sweep_compact(struct kv__seg *kv)
{
	struct kv__need half = {.bytes = kv->segment_bytes / 2};

	if (kv__roomy_segments(kv) == 0)
		kv__reclaim(kv, &half); /* best effort */
}

int kv__sweep(struct kv__seg *kv, size_t max_items, size_t *reclaimed)
{
	size_t done = 0, budget = max_items ? max_items : SIZE_MAX;
	uint64_t pos, seen = 0;
	int err = 0;

	if (!kv)
		return -EINVAL;
	if (kv->rdonly)
		return -EROFS;
	pos = atomic_load_explicit(&kv->hdr->sweep_pos, memory_order_relaxed) %
	      kv->nbuckets;
	while (seen < kv->nbuckets && done < budget) {
		uint32_t stripe = kv__stripe_of(kv, pos);
		uint64_t stripe_end = ((uint64_t)stripe + 1) * kv->stripe_buckets;
		uint64_t end = pos + KV_SWEEP_BATCH < stripe_end
				       ? pos + KV_SWEEP_BATCH
				       : stripe_end;
		if (!kv__stripe_is_current(kv, stripe) ||
		    batch_has_expired(kv, pos, end, kv__now_ms())) {
			err = kv__stripe_lock(kv, stripe); /* purges if stale */
			if (err)
				break;
			done += sweep_batch(kv, stripe, pos, end, budget - done);
			kv__stripe_unlock(kv, stripe);
		}
		seen += end - pos;
		pos = end % kv->nbuckets;
	}
	atomic_store_explicit(&kv->hdr->sweep_pos, pos, memory_order_relaxed);
	if (reclaimed)
		*reclaimed = done;
	if (err == 0)
		sweep_compact(kv);
	return err;
}
