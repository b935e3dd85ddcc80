/* SPDX-License-Identifier: MIT */
/*
 * format.h - the on-segment format of a kvshm store and the protocol that
 * keeps it consistent. Owns every struct that lives in shared memory; owns no
 * code. Everything here is read by processes that may be running another
 * build of the library, so it changes only with KVSHM_LAYOUT_VERSION.
 *
 * SEGMENT LAYOUT
 *
 *   offset            size                 what
 *   0                 4096                 struct kv__header (one page)
 *   stats_off         KV_STAT_SHARDS*192   struct kv__stat_shard[]
 *   lanes_off         KV_MAX_LANES*128     struct kv__lane[] (nlanes used)
 *   cleaner_off       128                  struct kv__cleaner
 *   stripes_off       nstripes*256         struct kv__stripe[]
 *   gens_off          nstripes*8           kv__stripe_gen[] (64-aligned)
 *   segtab_off        nsegs_max*64         struct kv__segment[] (64-aligned)
 *   index_off         nbuckets*64          struct kv__bucket[]
 *   data_off          nsegs*segment_bytes  items, in allocation segments
 *
 * Every offset is from the start of the mapping and every region is 64-byte
 * aligned (data_off is page aligned). The mapping is arena_bytes long and
 * never grows. No pointer is ever stored in the segment.
 *
 * THE INDEX. nbuckets buckets of 64 bytes (one cache line) each: a meta word
 * (48-bit sequence number, 16-bit overflow count) and KV_BUCKET_SLOTS slot
 * words. A slot word is 0 (empty) or
 *     bits 63..49  tag: 15 bits of the key's hash, to skip most non-matches
 *     bit  48      visited: set by a reader on a hit (eviction second chance)
 *     bits 47..44  displacement: how many buckets past its home bucket the
 *                  key lives (0..KV_MAX_PROBE-1)
 *     bits 43..0   the item's offset in the mapping, in 16-byte units
 * A key's hash picks its home bucket. The buckets are split into nstripes
 * contiguous stripes of stripe_buckets each, one robust mutex per stripe. A
 * key lives in its home bucket or, when that is full, in one of the next
 * KV_MAX_PROBE-1 buckets of the same stripe (wrapping inside the stripe), so
 * one stripe lock covers everything about one key. The home bucket's
 * overflow count says how many of its keys live further on. A lookup counts
 * the slots it passes whose displacement points back at its home bucket and
 * stops once it has seen that many: a miss usually reads one bucket, and a
 * bucket that overflowed costs only the buckets up to its last displaced key.
 * The index is sized for 60% slot load (nbuckets = max_items / 4.2): with
 * 16-bucket windows the first full window then comes beyond max_items with
 * high probability (simulated: first failure at 64-75% load for 1.5k to
 * 1.5M buckets).
 *
 * ITEMS. An item is a 40-byte struct kv__item, the key, then the value
 * (counters keep their value in the header), padded to 16 bytes. Once
 * published an item's key, value, lengths, kind and flags never change;
 * only expires_at (kvshm_expire, under the stripe lock) and, for counters,
 * the {version, cvalue} pair (16-byte CAS, lock-free) do. A write of a key
 * makes a new item and swaps the slot word; the old item becomes garbage.
 *
 * ALLOCATION. The data area is cut into nsegs allocation segments of
 * segment_bytes (at least one maximal item). Writers append items to the
 * segment their lane owns (state OPEN) under the lane's mutex. A lane whose
 * segment is full seals it and takes a FREE or PARTIAL segment, under the
 * cleaner mutex. When none is left, the cleaner reclaims one: it picks a
 * sealed segment with little live data (garbage first), and for each item
 * in it that the index still links: drops it if expired, moves it to the
 * cleaner's destination segment if it was read since it was written (or if
 * the store may not evict), else evicts it. Then the victim is empty and
 * becomes the cleaner's next RESERVE, and the destination (partly filled)
 * becomes PARTIAL for the lanes. Whether an item is live is never stored
 * in the item: it is live exactly when a slot word points at it.
 *
 * VERSIONS. A version is [frozen:1][creation id:51][writes:12]. A creation
 * id is (stripe's vseq << 16 | stripe index), unique for 2^35 creations per
 * stripe. A lock-free incr adds 1 to the writes field; at 4095 it takes the
 * locked path, which makes a new item with a new creation id. So a version
 * is never handed out twice (until a stripe wraps 2^35 creations), and
 * kvshm_resize() starts the new segment's stripes past every vseq of the
 * old one (resize.c), so not across a resize either.
 *
 * READER ALGORITHM (get, exists, ttl, counter; no lock, no shared store)
 *   1. s0 = bucket.meta (acquire); odd sequence -> retry.
 *   2. For each slot whose tag matches: read the offset once, bound it to the
 *      data area; read klen, vlen, kind once, bound them by the store's
 *      maxima and the mapping; compare the key; copy the value (at most the
 *      caller's buffer); read expires_at, version, cvalue.
 *   3. Acquire fence; s1 = bucket.meta. s1 == s0: everything read in 2 is
 *      consistent, because memory is reused only after its slot word is
 *      cleared, and clearing a slot bumps the sequence first (release). For
 *      counters, also version before == version after the value read.
 *   4. Up to KV_READ_RETRIES retries, then the same lookup under the stripe
 *      lock (read-only handles keep retrying with backoff instead).
 *   A hit sets the slot's visited bit with a CAS when it is clear; nothing
 *   else is written.
 *
 * LOCKS AND ORDER. Robust, process-shared pthread mutexes: one per stripe,
 * one per lane, and the cleaner's two (mutex, drain). A thread holds at
 * most two, in this order: lane -> stripe (a write that allocates), lane ->
 * cleaner (a lane taking a new segment), drain -> cleaner (a reclaim
 * picking or releasing its victim), drain -> stripe (a reclaim walking its
 * victim). Stripes are never nested, nothing else is held while taking the
 * drain mutex, and lane and cleaner are never both held while taking a
 * stripe.
 * Waits are timed (100 ms slices, 5 s in all) so a lost wake-up cannot hang
 * anybody.
 *
 * RECOVERY (what kill -9 leaves behind, and who repairs it)
 *   stripe: a slot change is announced in the stripe's intent record before
 *     its first store (index.c has the step-by-step account). The next owner
 *     (EOWNERDEAD) sees which slot was in flight: if it still holds the old
 *     word the change is undone (a frozen counter unfrozen), if it holds the
 *     new word the change stands. Either way the owner then rebuilds what is
 *     derived from the slots (even sequences, overflow counts, item and byte
 *     totals), clearing any slot that does not verify, and only then calls
 *     pthread_mutex_consistent(). A purge after kvshm_clear() is redone.
 *   lane: only its segment's `used` cursor matters, advanced by one store
 *     after the item bytes are written; nothing to repair. A half-written
 *     item past `used` is overwritten later; one below it that was never
 *     linked is garbage the cleaner skips.
 *   cleaner: segment states change one store at a time in an order whose
 *     half-done states the repair recognises and undoes (alloc.c); an
 *     interrupted reclaim (its drain mutex found dead) leaves a DRAINING
 *     victim that the next reclaim resumes, item by item.
 *   hints (live_hint, max_expiry, statistics) are atomic adds made after the
 *     fact; a crash can leave them slightly off, and nothing depends on
 *     them for correctness.
 *   resize: a segment's header `life` goes LIVE -> MIGRATING -> SWITCHING
 *     -> RETIRED while kvshm_resize() copies it and renames the copy over
 *     the name (resize.c); a dead resizer is rolled back or forward by the
 *     next process that waits on it (or, after the rename, that reads).
 *   The janitor is never needed for any of this: the next process to take
 *   a lock repairs what that lock protects.
 */
#ifndef KVSHM_FORMAT_H
#define KVSHM_FORMAT_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define KV_MAGIC UINT64_C(0x314d48535643564b) /* "KVCSHM1" little-endian */
/* = KVSHM_LAYOUT_VERSION. 2: the cleaner's drain mutex. Later changes kept
 * 2, because a layout-2 build reads them as before: the cleaner's drain_hand
 * (was pad, 0) and the life state SWITCHING (which an older build attached
 * to the same store takes for damage while a resize renames). */
#define KV_LAYOUT 2u
#define KV_CACHELINE 64u
#define KV_HEADER_BYTES 4096u

#define KV_BUCKET_SLOTS 7u
#define KV_MAX_PROBE 16u         /* buckets a key may live in */
#define KV_STAT_SHARDS 64u
#define KV_MAX_LANES 8u
#define KV_MAX_STRIPES 65536u
#define KV_STRIPE_BUCKETS 256u   /* target buckets per stripe */
#define KV_MIN_SEGMENTS 4u
#define KV_MAX_SEGMENTS 65536u
#define KV_ITEM_ALIGN 16u
#define KV_READ_RETRIES 64u

/* slot words */
#define KV_SLOT_OFF_MASK ((UINT64_C(1) << 44) - 1)
#define KV_SLOT_DISP_SHIFT 44
#define KV_SLOT_DISP_MASK UINT64_C(0xf)
#define KV_SLOT_VISITED (UINT64_C(1) << 48)
#define KV_SLOT_TAG_SHIFT 49
#define KV_SLOT_TAG_MASK UINT64_C(0x7fff)

/* bucket meta word */
#define KV_META_SEQ_MASK ((UINT64_C(1) << 48) - 1)
#define KV_META_OVF_SHIFT 48

/* versions */
#define KV_VER_FROZEN (UINT64_C(1) << 63)
#define KV_VER_WRITES_MASK UINT64_C(0xfff)
#define KV_VER_ID_SHIFT 12

/* item kinds; 0 never appears in a written header */
#define KV_KIND_BYTES 1u
#define KV_KIND_COUNTER 2u

/* segment states */
enum kv__seg_state {
	KV_SEG_FREE = 0,  /* empty, available to lanes */
	KV_SEG_PARTIAL,   /* has live items and a free tail, available to lanes */
	KV_SEG_OPEN,      /* a lane appends to it; owner = lane index */
	KV_SEG_SEALED,    /* full; only the cleaner empties it */
	KV_SEG_DRAINING,  /* the cleaner is emptying it */
	KV_SEG_DEST,      /* the cleaner moves items into it */
	KV_SEG_RESERVE,   /* empty, kept for the cleaner's next destination */
	KV_SEG_NSTATES
};

/* intent record states and operations */
#define KV_INTENT_NONE 0u
#define KV_INTENT_ARMED 0x41524d44u /* "ARMD" */
enum kv__intent_op {
	KV_OP_PUBLISH = 1, /* slot: old_word -> new_word (new_word 0 = unlink) */
	KV_OP_PURGE,       /* empty every bucket of the stripe (after clear) */
};

/*
 * The header: page 0. Written once by the creator before `magic` is
 * published (release); read-only afterwards except the fields marked
 * otherwise.
 */
struct kv__header {
	_Atomic uint64_t magic;   /* KV_MAGIC, stored last at creation (release);
	                             attachers load it (acquire) */
	uint32_t layout;          /* KV_LAYOUT */
	uint32_t header_bytes;    /* KV_HEADER_BYTES */
	uint64_t abi;             /* kv__abi_fingerprint() of the creator */
	uint64_t arena_bytes;
	uint64_t created_at_ms;
	uint64_t hash_seed[2];    /* SipHash key, from getrandom() */
	uint64_t pidns_dev, pidns_ino; /* creator's /proc/self/ns/pid */
	/* creation parameters */
	uint64_t max_items;
	uint64_t default_ttl_ms;
	uint32_t max_key_bytes;
	uint32_t max_value_bytes;
	uint32_t flags;           /* KVSHM_NOEVICT */
	uint32_t nlanes;
	uint32_t nstripes;        /* power of two */
	uint32_t stripe_buckets;  /* power of two */
	uint32_t nsegs;
	uint32_t pad0;
	uint64_t nbuckets;        /* nstripes * stripe_buckets */
	uint64_t segment_bytes;
	/* region offsets */
	uint64_t stats_off, lanes_off, cleaner_off, stripes_off, gens_off;
	uint64_t segtab_off;
	uint64_t index_off, data_off;
	uint64_t header_check;    /* kv__header_check() over the fields above */

	/* mutable, own cache line: written by kvshm_clear() (atomic add,
	 * release) and read by every operation (acquire) */
	alignas(KV_CACHELINE) _Atomic uint64_t clear_gen;
	/* on the same line, read by every operation (acquire): KV_LIFE_*.
	 * Changed only by kvshm_resize() (release), or by the process that
	 * rolls back a resize whose resizer died (holding the resize lock). */
	_Atomic uint64_t life;
	_Atomic uint64_t resizer_pid; /* names the resize's temporary segment;
	                                 stored (relaxed) before the acq_rel CAS
	                                 that sets MIGRATING, read by a rescuer
	                                 after it saw MIGRATING (acquire) */
	/* mutable, own cache line: kvshm_sweep()'s resume point (relaxed; any
	 * value is a valid place to resume) */
	alignas(KV_CACHELINE) _Atomic uint64_t sweep_pos;
	/* mutable, own cache line: the janitor's record. Written only by the
	 * holder of the janitor OFD lock (byte KV_JANITOR_LOCK_BYTE of the
	 * object), relaxed: readers only display them, and whether a janitor
	 * is alive is asked of the lock, never of these fields. */
	alignas(KV_CACHELINE) _Atomic uint64_t janitor_pid;
	_Atomic uint64_t janitor_started_ms;
	_Atomic uint64_t janitor_heartbeat_ms;
};

/* Bytes of the segment object used as OFD locks (fcntl F_OFD_SETLK): the
 * creator's init lock, the janitor role, and the resizer's lock. A fork()ed
 * child gets descriptions of its own (fork.c), so it never holds them. */
#define KV_INIT_LOCK_BYTE 0
#define KV_JANITOR_LOCK_BYTE 1
#define KV_RESIZE_LOCK_BYTE 2

/* header.life: a segment is live, being copied by kvshm_resize(),
 * switching (copied; the copy is about to take, or has taken, its name),
 * or retired (its name belongs to the copy). SWITCHING is stored before
 * the rename, so an operation that starts after the rename sees it and
 * asks the name which segment is the store (handle.c). It came after
 * layout 2's first build, which takes it for damage. */
#define KV_LIFE_LIVE 0u
#define KV_LIFE_MIGRATING 1u
#define KV_LIFE_RETIRED 2u
#define KV_LIFE_SWITCHING 3u

/* A stripe generation with this bit set: kvshm_resize() has copied the
 * stripe; writers must wait for the retirement and use the new segment. */
#define KV_GEN_MOVED (UINT64_C(1) << 63)

/* One shard of the statistics. A thread adds to the shard picked by its
 * thread index (relaxed fetch_add: counts need no ordering), so the shards
 * are not lines that every process writes. kvshm_stats() sums them. */
enum kv__stat {
	KV_ST_HITS, KV_ST_MISSES, KV_ST_SETS, KV_ST_DELETES, KV_ST_INCRS,
	KV_ST_EVICTIONS, KV_ST_EXPIRED, KV_ST_EXPIRED_SWEPT, KV_ST_CLEARS,
	KV_ST_FAIL_NOSPACE, KV_ST_FAIL_INDEX_FULL, KV_ST_FAIL_TOO_BIG,
	KV_ST_SEGS_RECLAIMED, KV_ST_RELOCATED, KV_ST_LOCK_CONTENDED,
	KV_ST_LOCK_RECOVERIES, KV_ST_READ_RETRIES, KV_ST_READ_FALLBACKS,
	KV_ST_DISCARDED, /* damaged slots and items unlinked (not evictions;
	                    not yet in kvshm_stats) */
	KV_ST_COUNT
};
struct kv__stat_shard {
	alignas(KV_CACHELINE) _Atomic uint64_t v[KV_ST_COUNT];
};

/* A lane: where one writer at a time appends items. seg is changed only
 * while holding both this mutex and the cleaner's (see alloc.c). */
struct kv__lane {
	alignas(KV_CACHELINE) pthread_mutex_t mutex;
	_Atomic uint32_t seg;     /* OPEN segment index, or KV_NO_SEG */
};
#define KV_NO_SEG UINT32_MAX

/* The cleaner. `mutex` serialises segment state changes and is held only
 * for short steps; `drain` serialises reclaims and is held while one walks
 * its victim, which takes milliseconds, so lanes taking a new segment never
 * wait for a drain (see alloc.c). */
struct kv__cleaner {
	alignas(KV_CACHELINE) pthread_mutex_t mutex;
	uint32_t hand;            /* next segment lanes consider (under mutex) */
	uint32_t drain_hand;      /* next segment the cleaner empties, in an
	                             evicting store (under mutex) */
	alignas(KV_CACHELINE) pthread_mutex_t drain;
};

/* The record of a stripe's change in progress; see RECOVERY above. All
 * fields are written under the stripe mutex before state is set to ARMED
 * (release), and only read by a later owner of the mutex. The repair needs
 * nothing else: it resolves this one slot, then recounts the stripe. */
struct kv__intent {
	_Atomic uint32_t state;   /* KV_INTENT_NONE or KV_INTENT_ARMED */
	uint32_t op;              /* enum kv__intent_op */
	uint64_t bucket;          /* bucket index of the slot */
	uint32_t slot;            /* slot in bucket */
	uint32_t pad;
	uint64_t old_word;        /* slot before (visited bit ignored) */
	uint64_t new_word;        /* slot after, 0 = unlink */
};

/* A lock stripe: a mutex and the buckets [i*stripe_buckets, (i+1)*...). */
struct kv__stripe {
	alignas(KV_CACHELINE) pthread_mutex_t mutex;
	uint64_t items;           /* items linked from this stripe (mutex) */
	uint64_t bytes;           /* their sizes, headers and padding (mutex) */
	uint64_t vseq;            /* creation ids handed out (mutex; a resize
	                             raises a new segment's before publishing
	                             it, see resize.c) */
	_Atomic uint64_t wseq;    /* bumped at the end of every locked change
	                             (release), so a read-only checker can tell
	                             it raced a writer (acquire) */
	alignas(KV_CACHELINE) struct kv__intent intent; /* (mutex) */
};

/* The stripe generations: gens[i] is the clear_gen stripe i's buckets
 * belong to; lower than the header's means "logically empty, purge before
 * use". Read by every lookup, so they are packed 8 to a line, away from the
 * contended mutexes. Stored under stripe i's mutex (release), read
 * lock-free (acquire). */
typedef _Atomic uint64_t kv__stripe_gen;

/* The allocation segment table. state, owner and (except as below) used
 * are written under the cleaner mutex. The lane that owns an OPEN segment
 * advances `used` under its lane mutex (release) after writing the item
 * bytes below it; the cleaner reads it (acquire) only after the segment is
 * sealed, which happens under both mutexes. live_hint and max_expiry are
 * hints (relaxed atomic adds and max), used to choose what to reclaim. */
struct kv__segment {
	_Atomic uint32_t state;   /* enum kv__seg_state */
	_Atomic uint32_t owner;   /* lane index when OPEN */
	_Atomic uint64_t used;    /* bytes of items written from the start */
	_Atomic int64_t live_hint; /* approx. bytes of linked items */
	_Atomic int64_t max_expiry; /* latest expiry of an item written into it,
	                             INT64_MAX if one never expires */
	uint64_t pad[4];
};

struct kv__bucket {
	_Atomic uint64_t meta;    /* seq (48) | overflow count (16); stored under
	                             the stripe mutex, read lock-free (acquire) */
	_Atomic uint64_t slot[KV_BUCKET_SLOTS]; /* stored under the stripe
	                             mutex (release); visited bit CAS'd by
	                             readers */
};

/*
 * An item. Its writer fills every field while the item is unlinked (the
 * lengths, kind and hash32 before the lane's `used` advances, with release;
 * the rest under the stripe lock), then links it with the release store of
 * the slot word, which is what readers acquire. After that only expires_at
 * (one atomic store, under the stripe lock) and a counter's {version,
 * cvalue} (16-byte CAS, lock-free) change. Optimistic readers may see any
 * field of memory being reused; they bound each one and validate afterwards.
 */
struct kv__item {
	_Atomic int64_t expires_at; /* Unix ms, 0 = never */
	uint32_t vlen;            /* value bytes after the key (0 for counters) */
	uint16_t klen;
	uint8_t kind;             /* KV_KIND_*, written before `used` advances */
	uint8_t pad;
	_Atomic uint64_t version; /* at 16: {version, cvalue} is one 16-byte
	                             CAS for counters */
	_Atomic uint64_t cvalue;  /* counter value (int64 bits) */
	uint32_t uflags;          /* user flags */
	uint32_t hash32;          /* high 32 bits of the key hash: picks the home
	                             bucket without rehashing */
	/* key[klen], then value[vlen], then padding to KV_ITEM_ALIGN */
};
#define KV_ITEM_HDR 40u

_Static_assert(sizeof(struct kv__header) <= KV_HEADER_BYTES, "header");
_Static_assert(sizeof(struct kv__stat_shard) == 3 * KV_CACHELINE, "shard");
_Static_assert(sizeof(struct kv__lane) <= 128, "lane");
_Static_assert(sizeof(struct kv__cleaner) <= 128, "cleaner");
_Static_assert(sizeof(struct kv__stripe) <= 256, "stripe");
_Static_assert(sizeof(kv__stripe_gen) == 8, "stripe gen");
_Static_assert(sizeof(struct kv__segment) == 64, "segment");
_Static_assert(sizeof(struct kv__bucket) == KV_CACHELINE, "bucket");
_Static_assert(sizeof(struct kv__item) == KV_ITEM_HDR, "item header");
_Static_assert(offsetof(struct kv__item, version) == 16, "cas pair");
_Static_assert(offsetof(struct kv__item, cvalue) == 24, "cas pair");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics lock-free");

#define KV_STATS_BYTES (KV_STAT_SHARDS * sizeof(struct kv__stat_shard))
#define KV_LANE_BYTES 128u
#define KV_CLEANER_BYTES 128u
#define KV_STRIPE_BYTES 256u

#endif /* KVSHM_FORMAT_H */
