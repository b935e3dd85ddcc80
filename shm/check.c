/* SPDX-License-Identifier: MIT */
/*
 * check.c - kvshm_check(): verify the whole segment and explain what is
 * wrong. Reads everything, writes nothing but its report (and, on a
 * writable handle, takes each stripe lock in turn, which may run a repair).
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

#define KV_REPORT_MAX_PROBLEMS 32u

struct report {
	char *buf;
	size_t len, pos;
	unsigned problems;
};

__attribute__((format(printf, 2, 3))) static void
problem(struct report *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	r->problems++;
	if (!r->buf || r->len == 0 || r->pos >= r->len - 1)
		return;
	if (r->problems > KV_REPORT_MAX_PROBLEMS) {
		if (r->problems == KV_REPORT_MAX_PROBLEMS + 1)
			n = snprintf(r->buf + r->pos, r->len - r->pos,
				     "... more problems not listed\n");
		else
			return;
	} else {
		va_start(ap, fmt);
		n = vsnprintf(r->buf + r->pos, r->len - r->pos, fmt, ap);
		va_end(ap);
	}
	if (n > 0)
		r->pos += (size_t)n < r->len - r->pos ? (size_t)n
						      : r->len - r->pos - 1;
}

/* Totals found while checking one stripe. */
struct stripe_tally {
	uint64_t items, bytes;
};

/* Check one linked item: the slot's link, the key's hash, the segment it
 * lives in, and that no earlier slot in the probe order holds the same
 * key (which would hide this one). */
static void check_slot(struct kv__seg *kv, struct report *r, uint64_t b,
		       unsigned s, uint64_t w, struct stripe_tally *t)
{
	uint64_t home, size, off = kv__slot_off(w);
	const struct kv__item *it;
	size_t klen;
	struct kv__key k;
	struct kv__hit first;
	uint32_t seg, st;
	uint64_t used;

	if (!kv__slot_sane(kv, b, w, &home, &size)) {
		problem(r, "bucket %llu slot %u: bad link to offset %llu\n",
			(unsigned long long)b, s, (unsigned long long)off);
		return;
	}
	it = kv__item_at(kv, off);
	/* one read of klen, bounded by the size just checked: a read-only
	 * check holds no lock, and a reused item may change under it */
	klen = it->klen;
	if (klen == 0 || KV_ITEM_HDR + klen > size) {
		problem(r, "bucket %llu slot %u: item changed while checked\n",
			(unsigned long long)b, s);
		return;
	}
	kv__key_init(kv, &k, (const uint8_t *)it + KV_ITEM_HDR, klen);
	if ((uint32_t)(k.hash >> 32) != it->hash32 ||
	    !kv__slot_tag_matches(w, k.hash) || k.home != home)
		problem(r, "bucket %llu slot %u: key hash does not match\n",
			(unsigned long long)b, s);
	else if (!kv__find_locked(kv, &k, &first) ||
		 first.bucket != b || first.slot != s)
		problem(r, "bucket %llu slot %u: key also linked at bucket "
			   "%llu slot %u\n",
			(unsigned long long)b, s,
			(unsigned long long)first.bucket, first.slot);
	seg = kv__seg_of(kv, off);
	st = atomic_load_explicit(&kv->segs[seg].state, memory_order_acquire);
	used = atomic_load_explicit(&kv->segs[seg].used, memory_order_acquire);
	if (st == KV_SEG_FREE || st == KV_SEG_RESERVE || st >= KV_SEG_NSTATES)
		problem(r, "bucket %llu slot %u: item in segment %u, which is "
			   "empty (state %u)\n",
			(unsigned long long)b, s, seg, st);
	else if (off + size > kv->data_off +
				      (uint64_t)seg * kv->segment_bytes + used)
		problem(r, "bucket %llu slot %u: item past segment %u's end\n",
			(unsigned long long)b, s, seg);
	if (it->kind == KV_KIND_COUNTER &&
	    (atomic_load_explicit(&it->version, memory_order_relaxed) &
	     KV_VER_FROZEN))
		problem(r, "bucket %llu slot %u: linked counter is frozen\n",
			(unsigned long long)b, s);
	t->items++;
	t->bytes += size;
}

/* Check one stripe; the caller holds its lock or re-checks wseq. */
static void check_stripe(struct kv__seg *kv, struct report *r, uint32_t stripe,
			 struct stripe_tally *t)
{
	struct kv__stripe *st = &kv->stripes[stripe];
	uint64_t first = (uint64_t)stripe * kv->stripe_buckets;
	*t = (struct stripe_tally){0};
	if (!kv__stripe_is_current(kv, stripe))
		return; /* logically empty since a clear */
	if (atomic_load_explicit(&st->intent.state, memory_order_acquire) !=
	    KV_INTENT_NONE)
		problem(r, "stripe %u: unresolved intent record\n", stripe);
	for (uint64_t b = first; b < first + kv->stripe_buckets; b++) {
		struct kv__bucket *bk = &kv->buckets[b];
		uint64_t m = atomic_load_explicit(&bk->meta,
						  memory_order_acquire);
		unsigned displaced = 0;
		if (m & 1)
			problem(r, "bucket %llu: sequence left odd\n",
				(unsigned long long)b);
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			uint64_t w = atomic_load_explicit(
				&bk->slot[s], memory_order_relaxed);
			if (w)
				check_slot(kv, r, b, s, w, t);
		}
		/* the home bucket's overflow count: keys homed here that
		 * live in the next buckets of the window */
		for (unsigned i = 1; i < KV_MAX_PROBE; i++) {
			uint64_t nb = kv__probe(kv, b, i);
			for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
				uint64_t w = atomic_load_explicit(
					&kv->buckets[nb].slot[s],
					memory_order_relaxed);
				uint64_t home, size;
				if (w && kv__slot_sane(kv, nb, w, &home,
						       &size) &&
				    home == b)
					displaced++;
			}
		}
		if (displaced != (unsigned)(m >> KV_META_OVF_SHIFT))
			problem(r, "bucket %llu: overflow count %u, but %u "
				   "keys live past it\n",
				(unsigned long long)b,
				(unsigned)(m >> KV_META_OVF_SHIFT), displaced);
	}
	if (t->items != st->items || t->bytes != st->bytes)
		problem(r, "stripe %u: totals say %llu items/%llu bytes, "
			   "buckets hold %llu/%llu\n",
			stripe, (unsigned long long)st->items,
			(unsigned long long)st->bytes,
			(unsigned long long)t->items,
			(unsigned long long)t->bytes);
}

/* A read-only handle cannot lock: check, then make sure no writer changed
 * the stripe meanwhile (wseq unchanged, no intent armed), else retry. */
static int check_stripe_optimistic(struct kv__seg *kv, struct report *r,
				   uint32_t stripe, struct stripe_tally *t)
{
	struct kv__stripe *st = &kv->stripes[stripe];

	for (unsigned attempt = 0; attempt < 100; attempt++) {
		struct report tmp = {0};
		uint64_t w0 = atomic_load_explicit(&st->wseq,
						   memory_order_acquire);
		check_stripe(kv, &tmp, stripe, t);
		KV_FENCE(memory_order_acquire);
		if (atomic_load_explicit(&st->intent.state,
					 memory_order_acquire) !=
			    KV_INTENT_NONE ||
		    atomic_load_explicit(&st->wseq, memory_order_acquire) !=
			    w0)
			continue;
		if (tmp.problems) /* stable: report for real */
			check_stripe(kv, r, stripe, t);
		return 0;
	}
	return -EBUSY;
}

static void check_header(struct kv__seg *kv, struct report *r)
{
	const struct kv__header *h = kv->hdr;

	if (atomic_load_explicit(&h->magic, memory_order_acquire) != KV_MAGIC)
		problem(r, "header: bad magic\n");
	if (h->layout != KV_LAYOUT || h->abi != kv__abi_fingerprint())
		problem(r, "header: layout or lock ABI changed\n");
	if (h->header_check != kv__header_check(h))
		problem(r, "header: checksum mismatch (header overwritten)\n");
	if (h->nbuckets != kv->nbuckets || h->nsegs != kv->nsegs ||
	    h->data_off != kv->data_off || h->arena_bytes != kv->map_bytes)
		problem(r, "header: geometry changed since attach\n");
}

/* Segment states and lanes; the cleaner lock is held on writable handles
 * so the states are not changing under us. */
static void check_segments(struct kv__seg *kv, struct report *r)
{
	unsigned draining = 0;

	for (uint32_t s = 0; s < kv->nsegs; s++) {
		uint32_t st = atomic_load_explicit(&kv->segs[s].state,
						   memory_order_acquire);
		uint64_t used = atomic_load_explicit(&kv->segs[s].used,
						     memory_order_acquire);
		if (st >= KV_SEG_NSTATES)
			problem(r, "segment %u: unknown state %u\n", s, st);
		if (used > kv->segment_bytes)
			problem(r, "segment %u: used %llu exceeds its size\n",
				s, (unsigned long long)used);
		if ((st == KV_SEG_FREE || st == KV_SEG_RESERVE) && used)
			problem(r, "segment %u: empty state but used %llu\n",
				s, (unsigned long long)used);
		if (st == KV_SEG_DRAINING)
			draining++;
		if (st == KV_SEG_OPEN) {
			uint32_t l = atomic_load_explicit(&kv->segs[s].owner,
							  memory_order_relaxed);
			if (l >= kv->nlanes ||
			    atomic_load_explicit(&kv->lanes[l].seg,
						 memory_order_acquire) != s)
				problem(r, "segment %u: open for lane %u, "
					   "which does not use it\n",
					s, l);
		}
	}
	if (draining > 1)
		problem(r, "%u segments draining at once\n", draining);
}

int kv__check(struct kv__seg *kv, char *report, size_t report_len)
{
	struct report r = {.buf = report, .len = report_len};
	uint64_t items = 0, bytes = 0;
	unsigned busy = 0;
	int err;

	if (!kv || (!report && report_len))
		return -EINVAL;
	if (report && report_len)
		report[0] = '\0';
	check_header(kv, &r);
	if (!kv->rdonly) {
		err = kv__lock(kv, &kv->cleaner->mutex, kv__cleaner_repair,
			       kv->cleaner);
		if (err)
			return err;
		check_segments(kv, &r);
		kv__unlock(&kv->cleaner->mutex);
		/* take over the drain mutex if a dead reclaim left it, without
		 * waiting for a live one (its victim is resumed by the next
		 * reclaim either way) */
		err = kv__trylock(kv, &kv->cleaner->drain, kv__drain_repair,
				  NULL);
		if (err == 0)
			kv__unlock(&kv->cleaner->drain);
		else if (err != -EBUSY)
			return err;
	} else {
		check_segments(kv, &r);
	}
	for (uint32_t s = 0; s < kv->nstripes; s++) {
		struct stripe_tally t;
		if (kv->rdonly) {
			if (check_stripe_optimistic(kv, &r, s, &t))
				busy++;
		} else {
			err = kv__stripe_lock(kv, s);
			if (err)
				return err;
			check_stripe(kv, &r, s, &t);
			kv__stripe_unlock(kv, s);
		}
		items += t.items;
		bytes += t.bytes;
	}
	if (r.problems == 0 && report && report_len)
		snprintf(report, report_len,
			 "ok: %llu items, %llu bytes in %u stripes and %u "
			 "segments%s\n",
			 (unsigned long long)items, (unsigned long long)bytes,
			 kv->nstripes, kv->nsegs,
			 busy ? " (some stripes busy, not checked)" : "");
	return r.problems ? -EUCLEAN : 0;
}
