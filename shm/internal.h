/* SPDX-License-Identifier: MIT */
/*
 * internal.h - the handle and the functions the shm/ modules share. Nothing
 * here is public; public names start with kvshm_, internal ones with kv__.
 */
#ifndef KVSHM_INTERNAL_H
#define KVSHM_INTERNAL_H

#include "format.h"
#include "kvshm.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#ifdef KVSHM_TESTING
void kv__crashpoint(void);
#define KV_CRASHPOINT() kv__crashpoint()
#else
#define KV_CRASHPOINT() ((void)0)
#endif

#if defined(__SANITIZE_THREAD__)
#define KV_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KV_TSAN 1
#endif
#endif
#ifndef KV_TSAN
#define KV_TSAN 0
#endif

/*
 * Fences of the seqlock protocol. ThreadSanitizer does not model fences (gcc
 * rejects them under -fsanitize=thread), so its builds use a compiler
 * barrier: the optimistic reads these fences order are not instrumented
 * there, and on x86, where TSan runs, acquire/release fences compile to a
 * compiler barrier anyway.
 */
#if KV_TSAN
#define KV_FENCE(order) atomic_signal_fence(order)
#else
#define KV_FENCE(order) atomic_thread_fence(order)
#endif

/* Marks a function that reads shared memory optimistically, racing writers
 * by design and validating afterwards (see READER ALGORITHM in format.h):
 * ThreadSanitizer does not instrument it. */
#if KV_TSAN
#define KV_RACY_FN __attribute__((no_sanitize("thread")))
#else
#define KV_RACY_FN
#endif

#define KV_LIKELY(x) __builtin_expect(!!(x), 1)
#define KV_UNLIKELY(x) __builtin_expect(!!(x), 0)

/*
 * An attached store. The geometry is read from the header once at attach,
 * validated, and kept here, so no operation re-reads (and re-trusts) it from
 * shared memory. Everything in this struct is immutable after kvshm_open(),
 * so threads share a handle without locking, except `janitor` (claim and
 * release, one thread at a time) and, in a fork()ed child, `janitor` and
 * the description behind `fd` and `base` (fork.c, before the child runs
 * anything else).
 */
struct kv__seg {
	uint8_t *base;            /* the mapping */
	size_t map_bytes;
	int fd;                   /* the object, kept for its OFD locks; it and
	                             the mapping use this process's own open
	                             file description (fork.c) */
	bool rdonly;
	bool janitor;             /* this handle holds the janitor lock */
	bool noevict;

	uint64_t seed[2];
	uint32_t max_key, max_value;
	uint64_t default_ttl_ms;
	uint32_t nlanes, nstripes, stripe_buckets, stripe_shift, nsegs;
	uint64_t nbuckets, segment_bytes, data_bytes, max_items;

	struct kv__header *hdr;
	struct kv__stat_shard *stats;
	struct kv__lane *lanes;
	struct kv__cleaner *cleaner;
	struct kv__stripe *stripes;
	kv__stripe_gen *gens;
	struct kv__segment *segs;
	struct kv__bucket *buckets;
	uint8_t *data;            /* base + data_off */
	uint64_t data_off;
	struct kv__seg *next_retired; /* in the handle's retired list */
	struct kv__seg *fork_prev, *fork_next; /* open segments (fork.c) */
};

/*
 * The public handle: which segment this process uses for the store now.
 * kvshm_resize() retires a segment; every operation notices (header life)
 * and switches the handle to the store's new segment by name. Segments left
 * behind stay mapped until kvshm_close(), because other threads may still
 * be inside them.
 */
struct kvshm {
	_Atomic(struct kv__seg *) cur; /* (acquire; stored under switch_lock) */
	pthread_mutex_t switch_lock;   /* process-private; fork() takes it
	                                  (fork.c), so a child never starts
	                                  with it held */
	struct kv__seg *retired;       /* older segments (switch_lock) */
	char *name;
	bool rdonly;
	bool janitor;                  /* holds the role (claim/release) */
	struct kvshm *fork_prev, *fork_next; /* open handles (fork.c) */
};

/* Internal result: the stripe was moved by a resize; retry on the successor
 * once the old segment is retired. Never returned by a public function. */
#define KV_EMOVED (-ESHUTDOWN)

/* The segment a handle uses right now (tests and tools of this tree). */
static inline struct kv__seg *kv__cur(struct kvshm *h)
{
	return atomic_load_explicit(&h->cur, memory_order_acquire);
}

/* ---- geometry helpers ---- */

static inline uint64_t kv__align(uint64_t x, uint64_t a)
{
	return (x + a - 1) & ~(a - 1);
}

/* Bytes an item occupies in a segment. */
static inline uint64_t kv__item_size(size_t klen, size_t vlen, unsigned kind)
{
	return kv__align(KV_ITEM_HDR + klen + (kind == KV_KIND_COUNTER ? 0 : vlen),
			 KV_ITEM_ALIGN);
}

static inline uint64_t kv__home_bucket(const struct kv__seg *kv, uint32_t hash32)
{
	return ((uint64_t)hash32 * kv->nbuckets) >> 32;
}

static inline uint32_t kv__stripe_of(const struct kv__seg *kv, uint64_t bucket)
{
	return (uint32_t)(bucket >> kv->stripe_shift);
}

/* The i-th bucket of home's probe window (wraps inside the stripe). */
static inline uint64_t kv__probe(const struct kv__seg *kv, uint64_t home,
				 unsigned i)
{
	uint64_t first = home & ~(uint64_t)(kv->stripe_buckets - 1);
	return first + ((home - first + i) & (kv->stripe_buckets - 1));
}

/* Displacement of bucket b from home, inside their stripe. */
static inline unsigned kv__disp(const struct kv__seg *kv, uint64_t home,
				uint64_t b)
{
	return (unsigned)((b - home) & (kv->stripe_buckets - 1));
}

static inline uint64_t kv__slot_word(uint64_t hash, uint64_t off,
				     unsigned disp)
{
	return ((hash & KV_SLOT_TAG_MASK) << KV_SLOT_TAG_SHIFT) |
	       ((uint64_t)disp << KV_SLOT_DISP_SHIFT) | (off / KV_ITEM_ALIGN);
}

static inline uint64_t kv__slot_off(uint64_t word)
{
	return (word & KV_SLOT_OFF_MASK) * KV_ITEM_ALIGN;
}

static inline unsigned kv__slot_disp(uint64_t word)
{
	return (unsigned)((word >> KV_SLOT_DISP_SHIFT) & KV_SLOT_DISP_MASK);
}

/* Home bucket of the key whose slot word w sits in bucket b. */
static inline uint64_t kv__slot_home(const struct kv__seg *kv, uint64_t b,
				     uint64_t w)
{
	uint64_t first = b & ~(uint64_t)(kv->stripe_buckets - 1);
	return first + ((b - first - kv__slot_disp(w)) &
			(kv->stripe_buckets - 1));
}

static inline bool kv__slot_tag_matches(uint64_t word, uint64_t hash)
{
	return (word >> KV_SLOT_TAG_SHIFT) == (hash & KV_SLOT_TAG_MASK);
}

/* Is [off, off+len) inside the data area? */
static inline bool kv__in_data(const struct kv__seg *kv, uint64_t off,
			       uint64_t len)
{
	return off >= kv->data_off && off % KV_ITEM_ALIGN == 0 &&
	       len <= kv->map_bytes && off <= kv->map_bytes - len;
}

/* Segment index holding data offset off (which must be in the data area). */
static inline uint32_t kv__seg_of(const struct kv__seg *kv, uint64_t off)
{
	return (uint32_t)((off - kv->data_off) / kv->segment_bytes);
}

static inline struct kv__item *kv__item_at(const struct kv__seg *kv,
					   uint64_t off)
{
	return (struct kv__item *)(void *)(kv->base + off);
}

/* ---- hash.c ---- */
uint64_t kv__siphash13(const uint64_t key[2], const void *data, size_t len);

static inline uint64_t kv__hash(const struct kv__seg *kv, const void *key,
				size_t klen)
{
	return kv__siphash13(kv->seed, key, klen);
}

/* ---- clock (stats.c) ---- */
int64_t kv__now_ms(void);
uint64_t kv__mono_ns(void);

/* ---- per-thread state (stats.c) ----
 * Which stat shard and which lane this thread prefers. Picked from the
 * thread id on first use and forgotten in a fork()ed child (pthread_atfork),
 * so the workers of a prefork server do not all inherit the master's
 * choices and pile onto the same cache lines. */
struct kv__thread {
	uint32_t shard;           /* UINT32_MAX = not picked yet */
	uint32_t lane;            /* UINT32_MAX = not picked yet */
};
extern _Thread_local struct kv__thread kv__self;
uint32_t kv__thread_pick(uint32_t n);
void kv__atfork_register(void);

/* ---- stats.c ---- */
void kv__stat_add(struct kv__seg *kv, enum kv__stat which, uint64_t n);
static inline void kv__stat_inc(struct kv__seg *kv, enum kv__stat which)
{
	kv__stat_add(kv, which, 1);
}

/* ---- lock.c ---- */
typedef int (*kv__repair_fn)(struct kv__seg *kv, void *what);
int kv__mutex_init(pthread_mutex_t *m);
int kv__lock(struct kv__seg *kv, pthread_mutex_t *m, kv__repair_fn repair,
	     void *what);
int kv__trylock(struct kv__seg *kv, pthread_mutex_t *m, kv__repair_fn repair,
		void *what);
void kv__unlock(pthread_mutex_t *m);

/* ---- index.c ---- */

/* Where a key was found, or where it could go (word 0). */
struct kv__hit {
	uint64_t bucket;          /* bucket of the slot */
	unsigned slot;
	uint64_t word;            /* slot word as read */
	uint64_t off;             /* item offset */
	int64_t expires_at;
	uint64_t version;         /* without the frozen bit */
	uint64_t cvalue;
	uint32_t vlen;
	uint32_t uflags;
	uint8_t kind;
};

/* What a lookup needs to know about the key. */
struct kv__key {
	const void *ptr;
	size_t len;
	uint64_t hash;
	uint64_t home;
	uint32_t stripe;
};

/* Options of kv__swap_slot(). */
struct kv__swap {
	bool check_cas;           /* old item's version must be cas */
	uint64_t cas;
	struct kv__item *carry;   /* new item that takes the old counter's
	                             value + carry_delta once it is frozen */
	int64_t carry_delta;
	bool carry_version;       /* ... and its version (a move, not a write) */
	int64_t *carried;         /* if not NULL, gets the value carried */
};

void kv__key_init(const struct kv__seg *kv, struct kv__key *k, const void *key,
		  size_t klen);
bool kv__stripe_is_current(struct kv__seg *kv, uint32_t stripe);
int kv__stripe_lock(struct kv__seg *kv, uint32_t stripe);
void kv__stripe_unlock(struct kv__seg *kv, uint32_t stripe);
bool kv__is_expired(int64_t expires_at, int64_t *now);
uint64_t kv__item_bytes(const struct kv__seg *kv, const struct kv__item *it);
bool kv__slot_sane(struct kv__seg *kv, uint64_t b, uint64_t w, uint64_t *home,
		   uint64_t *size);
void kv__hit_fill(struct kv__seg *kv, struct kv__hit *hit, uint64_t b,
		  unsigned slot, uint64_t word);
bool kv__find_locked(struct kv__seg *kv, const struct kv__key *k,
		     struct kv__hit *hit);
int kv__read(struct kv__seg *kv, const struct kv__key *k, void *buf,
	     size_t buflen, struct kv__hit *hit);
void kv__mark_visited(struct kv__seg *kv, const struct kv__hit *hit);
uint64_t kv__new_version(struct kv__seg *kv, uint32_t stripe);
int kv__counter_add(struct kv__seg *kv, uint64_t off, uint64_t seen,
		    int64_t delta, int64_t *result);
int kv__freeze(struct kv__seg *kv, struct kv__hit *hit, bool check_cas,
	       uint64_t cas);
void kv__unfreeze(struct kv__seg *kv, uint64_t off);
int kv__swap_slot(struct kv__seg *kv, uint32_t stripe, struct kv__hit *at,
		  uint64_t home, uint64_t new_word, int64_t items_delta,
		  int64_t bytes_delta, const struct kv__swap *o);
void kv__drop(struct kv__seg *kv, uint32_t stripe, struct kv__hit *hit,
	      enum kv__stat why);
int kv__place(struct kv__seg *kv, const struct kv__key *k, bool may_evict,
	      struct kv__hit *where);
int kv__stripe_repair(struct kv__seg *kv, void *what);
void kv__purge_stripe(struct kv__seg *kv, uint32_t stripe);

/* ---- alloc.c ---- */
struct kv__alloc {
	uint32_t lane;            /* lane held */
	uint64_t off;             /* where the item was written */
	uint64_t size;
};
/* kvshm_write.opts, internal: a resize's copy of an item, which a NOEVICT
 * store takes into its headroom (the old store held it). handle.c refuses
 * it from callers. */
#define KV_WRITE_COPY (1u << 31)
/* kv__alloc_item()'s how */
enum {
	KV_ALLOC_MAY_EVICT = 1u << 0, /* the write may evict live items */
	KV_ALLOC_COPY = 1u << 1,      /* a resize's copy: may use a NOEVICT
	                                 store's headroom (the old store held
	                                 it) */
};
/* What a write waiting for room needs from a reclaim. */
struct kv__need {
	uint64_t bytes;           /* its item's size */
	bool may_evict;
	bool insert;              /* a new key in a NOEVICT store, which
	                             leaves the headroom; asked only when a
	                             lane needs a new segment */
	const struct kv__key *key; /* never evicted for it; may be NULL */
};
/* A reclaim evicts at most what a write needs or 1/KV_EVICT_BATCH_DIV of a
 * segment, whichever is more, beyond what fits in its destination. */
#define KV_EVICT_BATCH_DIV 8u
int kv__alloc_item(struct kv__seg *kv, const struct kv__key *k, const void *val,
		   size_t vlen, unsigned kind, unsigned how,
		   struct kv__alloc *a);
void kv__alloc_done(struct kv__seg *kv, const struct kv__alloc *a);
int kv__lane_repair(struct kv__seg *kv, void *what);
int kv__reclaim(struct kv__seg *kv, const struct kv__need *n);
int kv__cleaner_repair(struct kv__seg *kv, void *what);
int kv__drain_repair(struct kv__seg *kv, void *what);
void kv__live_add(struct kv__seg *kv, uint64_t off, int64_t bytes);
void kv__note_expiry(struct kv__seg *kv, uint64_t off, int64_t expires_at);
uint32_t kv__roomy_segments(struct kv__seg *kv);
uint64_t kv__largest_free(struct kv__seg *kv, uint64_t *free_segs);

/* ---- the operations behind the public functions (handle.c calls them
 * with the handle's current segment; they return KV_EMOVED when a resize
 * moved the stripe they needed) ---- */
int kv__put(struct kv__seg *kv, const void *key, size_t klen,
	    const void *val, size_t vlen, const struct kvshm_write *w,
	    uint64_t *cas_out);
int kv__get_ex(struct kv__seg *kv, const void *key, size_t klen, void *buf,
	       size_t buflen, struct kvshm_item *item, unsigned flags);
int kv__exists(struct kv__seg *kv, const void *key, size_t klen);
int kv__delete(struct kv__seg *kv, const void *key, size_t klen);
int kv__delete_cas(struct kv__seg *kv, const void *key, size_t klen,
		   uint64_t cas);
int kv__ttl(struct kv__seg *kv, const void *key, size_t klen, int64_t *ttl_ms);
int kv__expire(struct kv__seg *kv, const void *key, size_t klen,
	       uint64_t ttl_ms);
int kv__incr(struct kv__seg *kv, const void *key, size_t klen, int64_t delta,
	     uint64_t init_ttl_ms, int64_t *result);
int kv__counter(struct kv__seg *kv, const void *key, size_t klen,
		int64_t *value);
int kv__clear(struct kv__seg *kv);
int kv__scan(struct kv__seg *kv, const void *prefix, size_t plen,
	     uint64_t *cursor, size_t limit, kvshm_scan_fn fn, void *ctx);
int kv__sweep(struct kv__seg *kv, size_t max_items, size_t *reclaimed);
int kv__check(struct kv__seg *kv, char *report, size_t report_len);
int kv__stats(struct kv__seg *kv, struct kvshm_stats *st);
int kv__janitor_claim(struct kv__seg *kv);
int kv__janitor_heartbeat(struct kv__seg *kv);
int kv__janitor_release(struct kv__seg *kv);
int kv__put_counter(struct kv__seg *kv, const void *key, size_t klen,
		    int64_t value, int64_t expires_at);

/* ---- segment.c ---- */
/* A caller's struct kvshm_options may be at most this large (a newer
 * version's, with the fields this one does not know left zero). */
#define KV_MAX_OPTIONS_BYTES 4096u
int kv__options_copy(const struct kvshm_options *in, struct kvshm_options *o);
int kv__seg_open(const char *name, const struct kvshm_options *opts,
		 struct kv__seg **out);
void kv__seg_close(struct kv__seg *kv);
int kv__fs_path(const char *name, char *buf, size_t len);
int kv__unlink_name(const char *name);
int kv__ofd_lock(struct kv__seg *kv, int byte, short type);
bool kv__ofd_held(struct kv__seg *kv, int byte);

/* ---- fork.c ----
 * The process's open segments and handles, which a fork()ed child's
 * handler walks: kv__seg_open() and kvshm_open() track what they return;
 * kvshm_close() untracks the handle first, kv__seg_close() untracks the
 * segment, which also closes its fd. */
void kv__fork_track_seg(struct kv__seg *seg);
void kv__fork_untrack_seg(struct kv__seg *seg);
void kv__fork_track_handle(struct kvshm *h);
void kv__fork_untrack_handle(struct kvshm *h);

/* ---- resize.c ---- */
int kv__resize_rollback(struct kv__seg *seg, const char *name);
bool kv__resizing(uint64_t life);
bool kv__name_is(const char *name, struct kv__seg *seg);

/* ---- segment.c, for resize.c and the janitor ---- */
bool kv__janitor_lock_held(struct kv__seg *kv);
uint64_t kv__abi_fingerprint(void);
uint64_t kv__header_check(const struct kv__header *h);

/* ---- racy copies (index.c) ---- */
void kv__copy_racy(void *dst, const void *src, size_t n);
bool kv__equal_racy(const void *shared, const void *mine, size_t n);

#endif /* KVSHM_INTERNAL_H */
