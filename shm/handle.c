/* SPDX-License-Identifier: MIT */
/*
 * handle.c - the public handle (struct kvshm) and the public functions that
 * take one: they run the operation on the handle's current segment and,
 * when a resize has moved or retired that segment, switch to the store's
 * new segment and run it again. Owns no shared memory; reads the header's
 * `life` word.
 *
 * SWITCHING. An operation that starts on a segment whose life is RETIRED
 * re-attaches by name first (once per handle, under switch_lock). One that
 * starts on a SWITCHING segment (the resizer renames the copy over the name
 * right after storing that, and may have died since) asks the name: if it
 * leads elsewhere the rename happened, and it switches the same way; if
 * not, the old segment still is the store and the operation runs on it.
 * So an operation, a read included, that starts after the rename never
 * uses the old segment, whether or not the resizer lives to store RETIRED:
 * that is the bound kvshm.h states. The fast path pays nothing for it: the
 * life word was loaded already, and one compare tests both states.
 * An operation that needs a stripe that kvshm_resize() has already copied
 * gets KV_EMOVED; it waits, for as long as the copy makes progress, until
 * the resize retires the segment or renames its copy, then switches and
 * runs again. A write is
 * acknowledged only by the segment that owns the key at that moment, so
 * nothing acknowledged is left behind.
 * If the resizing process dies, the waiter that notices (the resize lock is
 * free while life is still MIGRATING or SWITCHING) rolls the resize back or
 * forward: see resize.c. A writable handle that only reads does the same
 * when it meets a SWITCHING segment whose name has not moved, so that it
 * does not ask the name on every read until some writer comes by.
 */
#include "internal.h"
#ifdef KVSHM_TESTING
#include "testing.h"
#endif

#include <stdlib.h>
#include <time.h>

/* How long a write waits for a resize that makes no progress. */
#define KV_MOVE_WAIT_NS (30 * 1000 * 1000 * 1000LL)

#ifdef KVSHM_TESTING
long long kv__test_move_wait_ns;
void (*kv__test_in_switch)(void);
#define IN_SWITCH_HOOK()                                                       \
	do {                                                                   \
		if (kv__test_in_switch)                                        \
			kv__test_in_switch();                                  \
	} while (0)
#else
#define IN_SWITCH_HOOK() ((void)0)
#endif

static uint64_t life_of(struct kv__seg *seg)
{
	/* acquire: pairs with the release store that retires the segment,
	 * after which the successor is in place under the name */
	return atomic_load_explicit(&seg->hdr->life, memory_order_acquire);
}

/* Move h to the store's current segment, if seg (which h used) is retired. */
static int switch_from(struct kvshm *h, struct kv__seg *seg)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct kv__seg *next;
	int err = 0;

	pthread_mutex_lock(&h->switch_lock);
	IN_SWITCH_HOOK();
	if (kv__cur(h) != seg)
		goto out; /* another thread switched already */
	o.flags = h->rdonly ? KVSHM_RDONLY : 0;
	err = kv__seg_open(h->name, &o, &next);
	if (err)
		goto out;
	if (h->janitor && kv__janitor_claim(next) != 0)
		h->janitor = false; /* someone else holds it there */
	seg->next_retired = h->retired;
	h->retired = seg;
	atomic_store_explicit(&h->cur, next, memory_order_release);
out:
	pthread_mutex_unlock(&h->switch_lock);
	return err;
}

/* seg is SWITCHING. 0 if h moved on (the name leads elsewhere: the rename
 * happened), else seg is still the store and -EAGAIN; a writable handle
 * then finishes a resize whose resizer died before its rename. */
static int follow_switch(struct kvshm *h, struct kv__seg *seg)
{
	if (!kv__name_is(h->name, seg))
		return switch_from(h, seg);
	if (!h->rdonly && !kv__ofd_held(seg, KV_RESIZE_LOCK_BYTE) &&
	    kv__resize_rollback(seg, h->name) == 0 &&
	    life_of(seg) == KV_LIFE_RETIRED)
		return switch_from(h, seg); /* renamed after all */
	return -EAGAIN;
}

/* The segment h should use now. */
static struct kv__seg *seg_now(struct kvshm *h)
{
	struct kv__seg *seg = kv__cur(h);
	const uint64_t life = life_of(seg);

	if (KV_UNLIKELY(life == KV_LIFE_RETIRED || life == KV_LIFE_SWITCHING)) {
		const int err = life == KV_LIFE_RETIRED ? switch_from(h, seg)
							: follow_switch(h, seg);
		if (err == 0)
			seg = kv__cur(h);
	}
	return seg;
}

static uint64_t move_wait_ns(void)
{
#ifdef KVSHM_TESTING
	if (kv__test_move_wait_ns > 0)
		return (uint64_t)kv__test_move_wait_ns;
#endif
	return KV_MOVE_WAIT_NS;
}

/* How many stripes of seg the resize has copied, counting on from `from`:
 * it copies them in index order (resize.c), so the MOVED bits form a run
 * from stripe 0. Relaxed: a measure of progress, not a decision. */
static uint32_t stripes_copied(struct kv__seg *seg, uint32_t from)
{
	while (from < seg->nstripes &&
	       (atomic_load_explicit(&seg->gens[from], memory_order_relaxed) &
		KV_GEN_MOVED))
		from++;
	return from;
}

/*
 * An operation met a stripe a resize moved: wait until the resize retires
 * seg or renames its copy (or roll it back if the resizer died), then
 * switch. 0 = run again. The wait lasts as long as the copy goes on: the
 * deadline moves whenever another stripe is copied or life changes, so
 * only a resize that makes no progress for KV_MOVE_WAIT_NS (a resizer that
 * is alive but stopped) ends it, with -ETIMEDOUT.
 */
static int after_moved(struct kvshm *h, struct kv__seg *seg)
{
	uint64_t deadline = kv__mono_ns() + move_wait_ns();
	uint64_t seen_life = life_of(seg);
	uint32_t copied = stripes_copied(seg, 0);

	for (;;) {
		uint64_t life = life_of(seg);
		uint32_t now_copied = stripes_copied(seg, copied);
		struct timespec ts = {0, 200 * 1000};
		if (life != seen_life || now_copied != copied) {
			deadline = kv__mono_ns() + move_wait_ns();
			seen_life = life;
			copied = now_copied;
		}
		if (life == KV_LIFE_RETIRED)
			return switch_from(h, seg);
		if (life == KV_LIFE_SWITCHING && !kv__name_is(h->name, seg))
			return switch_from(h, seg); /* renamed: go there */
		if (life == KV_LIFE_LIVE)
			return 0; /* rolled back: run again on seg */
		if (!kv__resizing(life))
			return -ENOTRECOVERABLE; /* damaged: nothing to wait for */
		if (!kv__ofd_held(seg, KV_RESIZE_LOCK_BYTE)) {
			int err = kv__resize_rollback(seg, h->name);
			if (err && err != -EBUSY)
				return err;
		}
		if (kv__mono_ns() >= deadline)
			return -ETIMEDOUT;
		nanosleep(&ts, NULL);
	}
}

/* Run expr (which uses `seg`) on h's current segment until it did not meet
 * a moved stripe. */
#define ON_CURRENT(h, expr)                                                    \
	do {                                                                   \
		if (!(h))                                                      \
			return -EINVAL;                                        \
		for (;;) {                                                     \
			struct kv__seg *seg = seg_now(h);                      \
			int rc_ = (expr);                                      \
			if (KV_LIKELY(rc_ != KV_EMOVED))                       \
				return rc_;                                    \
			rc_ = after_moved(h, seg);                             \
			if (rc_)                                               \
				return rc_;                                    \
		}                                                              \
	} while (0)

int kvshm_open(const char *name, const struct kvshm_options *opts,
	       struct kvshm **out)
{
	struct kvshm *h;
	struct kv__seg *seg;
	int err;

	if (!out)
		return -EINVAL;
	*out = NULL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->name = name ? strdup(name) : NULL;
	err = name && !h->name ? -ENOMEM : kv__seg_open(name, opts, &seg);
	if (err) {
		free(h->name);
		free(h);
		return err;
	}
	pthread_mutex_init(&h->switch_lock, NULL);
	h->rdonly = seg->rdonly;
	atomic_store_explicit(&h->cur, seg, memory_order_release);
	kv__fork_track_handle(h); /* fork() takes switch_lock (fork.c) */
	*out = h;
	return 0;
}

void kvshm_close(struct kvshm *h)
{
	if (!h)
		return;
	kv__fork_untrack_handle(h);
	kv__seg_close(kv__cur(h));
	while (h->retired) {
		struct kv__seg *next = h->retired->next_retired;
		kv__seg_close(h->retired);
		h->retired = next;
	}
	pthread_mutex_destroy(&h->switch_lock);
	free(h->name);
	free(h);
}

int kvshm_put(struct kvshm *h, const void *key, size_t klen, const void *val,
	      size_t vlen, const struct kvshm_write *w, uint64_t *cas_out)
{
	if (w && (w->opts & KV_WRITE_COPY))
		return -EINVAL; /* internal: resize's copies only */
	ON_CURRENT(h, kv__put(seg, key, klen, val, vlen, w, cas_out));
}

int kvshm_set(struct kvshm *h, const void *key, size_t klen, const void *val,
	      size_t vlen, uint64_t ttl_ms)
{
	struct kvshm_write w = {.mode = KVSHM_SET, .ttl_ms = ttl_ms};
	return kvshm_put(h, key, klen, val, vlen, &w, NULL);
}

int kvshm_get_ex(struct kvshm *h, const void *key, size_t klen, void *buf,
		 size_t buflen, struct kvshm_item *item, unsigned flags)
{
	ON_CURRENT(h, kv__get_ex(seg, key, klen, buf, buflen, item, flags));
}

int kvshm_get(struct kvshm *h, const void *key, size_t klen, void *buf,
	      size_t buflen, size_t *vlen)
{
	struct kvshm_item item;
	int r = kvshm_get_ex(h, key, klen, buf, buflen, &item, 0);

	if (vlen && (r == 0 || r == -ENOBUFS))
		*vlen = item.value_len;
	return r;
}

int kvshm_exists(struct kvshm *h, const void *key, size_t klen)
{
	ON_CURRENT(h, kv__exists(seg, key, klen));
}

int kvshm_delete(struct kvshm *h, const void *key, size_t klen)
{
	ON_CURRENT(h, kv__delete(seg, key, klen));
}

int kvshm_delete_cas(struct kvshm *h, const void *key, size_t klen,
		     uint64_t cas)
{
	ON_CURRENT(h, kv__delete_cas(seg, key, klen, cas));
}

int kvshm_ttl(struct kvshm *h, const void *key, size_t klen, int64_t *ttl_ms)
{
	ON_CURRENT(h, kv__ttl(seg, key, klen, ttl_ms));
}

int kvshm_expire(struct kvshm *h, const void *key, size_t klen,
		 uint64_t ttl_ms)
{
	ON_CURRENT(h, kv__expire(seg, key, klen, ttl_ms));
}

int kvshm_incr(struct kvshm *h, const void *key, size_t klen, int64_t delta,
	       uint64_t init_ttl_ms, int64_t *result)
{
	ON_CURRENT(h, kv__incr(seg, key, klen, delta, init_ttl_ms, result));
}

int kvshm_counter(struct kvshm *h, const void *key, size_t klen,
		  int64_t *value)
{
	ON_CURRENT(h, kv__counter(seg, key, klen, value));
}

int kvshm_clear(struct kvshm *h)
{
	ON_CURRENT(h, kv__clear(seg));
}

int kvshm_scan(struct kvshm *h, const void *prefix, size_t plen,
	       uint64_t *cursor, size_t limit, kvshm_scan_fn fn, void *ctx)
{
	ON_CURRENT(h, kv__scan(seg, prefix, plen, cursor, limit, fn, ctx));
}

int kvshm_sweep(struct kvshm *h, size_t max_items, size_t *reclaimed)
{
	ON_CURRENT(h, kv__sweep(seg, max_items, reclaimed));
}

/* Besides checking, finish a resize whose process died (its temporary
 * segment would otherwise linger until a writer met a moved stripe). */
int kvshm_check(struct kvshm *h, char *report, size_t report_len)
{
	if (h && !h->rdonly) {
		struct kv__seg *seg = seg_now(h);
		if (kv__resizing(life_of(seg)) &&
		    !kv__ofd_held(seg, KV_RESIZE_LOCK_BYTE))
			kv__resize_rollback(seg, h->name);
	}
	ON_CURRENT(h, kv__check(seg, report, report_len));
}

int kvshm_stats(struct kvshm *h, struct kvshm_stats *st)
{
	ON_CURRENT(h, kv__stats(seg, st));
}

int kvshm_janitor_claim(struct kvshm *h)
{
	int err;

	if (!h)
		return -EINVAL;
	err = kv__janitor_claim(seg_now(h));
	if (err == 0)
		h->janitor = true;
	return err;
}

int kvshm_janitor_heartbeat(struct kvshm *h)
{
	if (!h)
		return -EINVAL;
	return kv__janitor_heartbeat(seg_now(h));
}

int kvshm_janitor_release(struct kvshm *h)
{
	if (!h)
		return -EINVAL;
	h->janitor = false;
	return kv__janitor_release(seg_now(h));
}
