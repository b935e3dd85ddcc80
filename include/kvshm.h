/* SPDX-License-Identifier: MIT */
/*
 * kvshm.h - the public interface of libkvshm, a host-local key-value cache
 * that co-located processes share through one shared-memory segment.
 *
 * This header is the manual. Read the three rules below once; each function
 * then lists only what is particular to it.
 *
 * ERRORS. Every int function returns 0 (or a documented count >= 0) on
 * success and a negative errno value on failure. It never returns a bare -1
 * and never leaves its contract in errno. kvshm_strerror() names any code.
 * A failed call changes nothing in the store unless its comment says so.
 *
 * THREADS AND PROCESSES. A struct kvshm handle may be used by any number of
 * threads at once, and a handle opened before fork() keeps working in the
 * child. A child inherits no lock and no role: its copy of a janitor's
 * handle is not the janitor, and the janitor role and the lock of a resize
 * the parent was running end when the parent does, whatever its children
 * do (this needs /proc mounted; fork() also waits for a handle that
 * another thread is moving to a resized store's new segment). Every
 * operation is atomic with respect to every other thread and
 * process attached to the same store. A process killed at any instruction
 * (kill -9 included) never leaves the store locked or inconsistent: the next
 * process that needs the part it was changing repairs it. An operation that
 * returned success is never lost by such a repair.
 *
 * KEYS, VALUES, TIME. Keys and values are binary-safe byte strings. A key is
 * 1..max_key_bytes long (-EINVAL if empty, -E2BIG if longer); a value is
 * 0..max_value_bytes long (-E2BIG if longer). A NULL pointer with a non-zero
 * length is -EINVAL. Times are milliseconds; absolute times are Unix-epoch
 * milliseconds on CLOCK_REALTIME. Expiry has millisecond precision: an item
 * whose expiry time is <= now is never returned by get, exists, incr or scan.
 */
#ifndef KVSHM_H
#define KVSHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KVSHM_API __attribute__((visibility("default")))
#else
#define KVSHM_API
#endif

/* Version of this library. The on-segment layout has its own version below:
 * two builds of the library share a segment only if their layout versions
 * (and lock ABI) are equal. */
#define KVSHM_VERSION_MAJOR 0
#define KVSHM_VERSION_MINOR 1
#define KVSHM_VERSION_PATCH 0
#define KVSHM_VERSION_STRING "0.1.0"
#define KVSHM_LAYOUT_VERSION 2

/* The library's version string and layout version, as compiled into the
 * library (which may differ from the header the caller was built with). */
KVSHM_API const char *kvshm_version(void);
KVSHM_API unsigned kvshm_layout_version(void);

/* An attached store. Opaque; safe to share between threads. */
struct kvshm;

/* kvshm_options.arena_bytes: 1 MiB to 1 TiB, 64 MiB when 0. */
#define KVSHM_MIN_ARENA_BYTES (UINT64_C(1) << 20)
#define KVSHM_MAX_ARENA_BYTES (UINT64_C(1) << 40)
#define KVSHM_DEFAULT_ARENA_BYTES (UINT64_C(64) << 20)
/* The largest kvshm_options.max_key_bytes. */
#define KVSHM_MAX_KEY_BYTES 65535u

/* kvshm_options.flags */
enum {
	KVSHM_CREATE = 1u << 0,  /* create the segment if it does not exist */
	KVSHM_EXCL = 1u << 1,    /* with CREATE: -EEXIST if it does exist */
	KVSHM_RDONLY = 1u << 2,  /* inspect only: writes return -EROFS */
	KVSHM_NOEVICT = 1u << 3, /* create: never evict; a full store -> -ENOSPC */
};

/*
 * How to open a store. Zero fields mean "default". The create-time fields
 * (marked "create") only matter when this call creates the segment; when it
 * attaches to an existing one they are ignored and the segment's own values
 * apply (kvshm_stats() reports them).
 */
struct kvshm_options {
	uint32_t size;            /* sizeof(struct kvshm_options); 0 is taken as the
	                             current size. A larger size (a newer
	                             caller) is accepted if every byte this
	                             version does not know is 0, else -E2BIG */
	uint32_t flags;           /* KVSHM_CREATE | KVSHM_EXCL | KVSHM_RDONLY |
	                             KVSHM_NOEVICT */
	uint64_t arena_bytes;     /* create: whole segment size, default 64 MiB,
	                             at least 1 MiB */
	uint64_t max_items;       /* create: index capacity, 0 = arena_bytes / 128 */
	uint32_t max_key_bytes;   /* create: default 512, at most 65535 */
	uint32_t max_value_bytes; /* create: default 1 MiB or arena_bytes / 16,
	                             whichever is smaller */
	uint64_t default_ttl_ms;  /* create: TTL applied when a write gives 0;
	                             0 = never expire */
	uint32_t mode;            /* create: permission bits, default 0600; the
	                             umask neither widens nor narrows them */
};

#define KVSHM_OPTIONS_INIT                                                     \
	{ sizeof(struct kvshm_options), 0, 0, 0, 0, 0, 0, 0 }

/* Explicit "never expires", for ttl_ms arguments. */
#define KVSHM_TTL_NEVER UINT64_MAX

/* kvshm_write.mode */
enum kvshm_mode {
	KVSHM_SET = 0, /* upsert */
	KVSHM_ADD,     /* only if absent or expired, else -EEXIST */
	KVSHM_REPLACE, /* only if live, else -ENOENT */
	KVSHM_CAS,     /* only if live and its version == cas: -ENOENT if absent,
	                  -ESTALE if it changed */
};

/* kvshm_write.opts */
enum {
	KVSHM_KEEPTTL = 1u << 0,       /* keep the key's current expiry (a missing
	                                  key gets ttl_ms as usual) */
	KVSHM_NOEVICT_WRITE = 1u << 1, /* this write may not evict live items */
};

/* One write's parameters for kvshm_put(). Zero-initialised = plain set with
 * the store's default TTL and user flags 0. */
struct kvshm_write {
	uint32_t mode;         /* enum kvshm_mode */
	uint32_t opts;         /* KVSHM_KEEPTTL | KVSHM_NOEVICT_WRITE */
	uint32_t flags;        /* opaque user flags stored with the value */
	uint64_t ttl_ms;       /* 0 = store default; KVSHM_TTL_NEVER = never */
	int64_t expires_at_ms; /* absolute expiry; overrides ttl_ms if > 0 */
	uint64_t cas;          /* expected version for KVSHM_CAS */
};

/* What kvshm_get_ex() and kvshm_scan() report about an item. */
struct kvshm_item {
	size_t value_len; /* full length, also when the caller's buffer was
	                     too small */
	uint64_t cas;     /* version: changes on every write of this key
	                     (set, put, incr); never 0 */
	int64_t ttl_ms;   /* ms left; -1 = never expires; <= 0 only when stale */
	uint32_t flags;   /* user flags (always 0 for counters) */
	bool counter;     /* value is an int64 counter (8 bytes, host order) */
	bool stale;       /* expired; only returned with KVSHM_GET_STALE */
};

/* kvshm_get_ex() flags */
enum {
	KVSHM_GET_STALE = 1u << 0, /* also return expired, unreclaimed items */
};

/* Called by kvshm_scan() for each visited key; nonzero stops the scan and
 * becomes kvshm_scan()'s return value if negative. key and item are valid
 * only during the call. */
typedef int (*kvshm_scan_fn)(const void *key, size_t klen,
			     const struct kvshm_item *item, void *ctx);

/*
 * Open (and with KVSHM_CREATE maybe create) the store called name, and
 * return a handle in *out, which the caller owns and frees with
 * kvshm_close(). opts may be NULL (attach to an existing store).
 *
 * NAMES. "NAME" and "/NAME" (a leading '/' and no other, as shm_open(3)
 * spells it) are the same POSIX shared-memory object, /dev/shm/NAME; any
 * other name with a '/' is a file path ("./NAME", "/run/myapp/NAME"), for a
 * file on tmpfs or in a private runtime directory. So "/myapp" is never a
 * file in the root directory (write "/./myapp" if that is really wanted).
 * The shm object's part may not be empty, "." or "..", or longer than 254
 * bytes; a path may not end in '/'. Either way the segment is created with
 * O_EXCL and exactly opts->mode, and on attach its type, owner (must be this
 * effective user), mode (no bits beyond 0666) and size are verified with
 * fstat() before anything is mapped; symbolic links are refused.
 *
 * Creating reserves the whole segment's memory (posix_fallocate(3)) before
 * it is used, so a store larger than the room left on its file system (the
 * tmpfs behind /dev/shm, often only 64 MiB in a container) fails with
 * -ENOSPC at once and leaves nothing behind, instead of killing its users
 * with SIGBUS later.
 *
 * Racing creators: exactly one initialises the segment, the others wait for
 * it (at most ~5 s) and attach. A creator that died half-way is detected and,
 * with KVSHM_CREATE, its segment initialised afresh.
 *
 * Errors: -EINVAL bad name or options (including RDONLY with CREATE, EXCL
 * without CREATE, unknown flags, a mode beyond 0666, or create-time sizes
 * that do not fit: an arena under 1 MiB or too small for 4 maximal items);
 * -ENOENT no such store (without
 * CREATE); -EEXIST it exists (CREATE|EXCL); -EBADMSG not a kvshm segment,
 * truncated, or corrupt header; -EPROTONOSUPPORT another layout version or
 * lock ABI; -EACCES owned by another user or mode wider than 0666, or denied
 * by the system; -ELOOP name is a symlink; -EXDEV created in another PID
 * namespace; -ETIMEDOUT the creator did not finish in time; -ENOSPC no room
 * for the whole segment on its file system (nothing created); -ENOMEM;
 * whatever shm_open/open/ftruncate/posix_fallocate/mmap fail with.
 */
KVSHM_API int kvshm_open(const char *name, const struct kvshm_options *opts,
			 struct kvshm **out);

/* Detach and free the handle. Other handles and processes are unaffected;
 * the store itself stays until kvshm_unlink(). NULL is a no-op. The caller
 * must not use kv (from any thread) after or during this call. */
KVSHM_API void kvshm_close(struct kvshm *kv);

/*
 * Give the store called name a new size (opts->arena_bytes, required) and
 * index capacity (opts->max_items, 0 = derived), keeping its key and value
 * limits, default TTL, NOEVICT flag and mode. Every live item is copied with
 * its value, flags, counter value and expiry; then the old segment is
 * retired and the new one takes its name. Processes that have the store
 * open keep working throughout and move to the new segment by themselves:
 * every operation that starts after the new segment took the name, a read
 * included, uses the new segment, in every process and whether or not the
 * resizing process lived to finish, so no one reads a value older than a
 * write made there. No acknowledged write is lost (a write that meets a
 * part already copied waits until the copy ends and goes to the new
 * segment; it gives up with -ETIMEDOUT only if the resize makes no
 * progress, not one more stripe copied, for 30 s). Versions are not carried over, but they stay unique: no
 * version is ever handed out again after a resize (or a clear), so a CAS
 * across a resize gets -ESTALE. If the resizing process dies, the store
 * goes back to the old segment (or on to the new one, if it was already in
 * place) by itself.
 * The new segment's memory is reserved as kvshm_open() reserves it.
 * Errors: -EINVAL; -ENOENT no such store; -EBUSY another resize is running;
 * -ENOSPC the live items do not fit the new size, or the file system has
 * no room for the new segment next to the old one (nothing changes in
 * either case); the errors of kvshm_open().
 */
KVSHM_API int kvshm_resize(const char *name, const struct kvshm_options *opts);

/*
 * Remove the store's name. Processes that have it open keep using the
 * memory until they close it; new opens no longer find it.
 *
 * Only a kvshm store is removed: a regular file (never a symbolic link,
 * directory, FIFO or device) that starts with kvshm's magic. A store of
 * another layout version or with a damaged header counts as one (its
 * magic is ours); so that a typo cannot delete another program's shm
 * object, anything else is refused and left untouched. The check is made
 * on an open descriptor and the name looked up again just before the
 * unlink; a process that may write the directory (in /dev/shm: the
 * owner or root) can still swap the name in that last instant.
 * Errors: -EINVAL bad name; -ENOENT; -EBADMSG not a kvshm store (also an
 * object a creator left before writing its header); -ELOOP a symbolic
 * link; -EAGAIN the name changed while it was checked; -EACCES, or what
 * lstat/open/unlink fail with.
 */
KVSHM_API int kvshm_unlink(const char *name);

/* kvshm_unlink_ex() flags */
enum {
	KVSHM_UNLINK_FORCE = 1u << 0, /* remove the name unchecked, whatever it
	                                 is (a symbolic link itself, not what
	                                 it points to) */
};

/* kvshm_unlink() with flags; flags 0 is kvshm_unlink(). Errors: those of
 * kvshm_unlink(), -EINVAL unknown flags; with KVSHM_UNLINK_FORCE only
 * -EINVAL (bad name) and what unlink(2) fails with (-EISDIR, ...). */
KVSHM_API int kvshm_unlink_ex(const char *name, unsigned flags);

/* Upsert key with ttl_ms (0 = store default, KVSHM_TTL_NEVER = never) and
 * user flags 0. Same as kvshm_put() with mode KVSHM_SET.
 * Errors: see kvshm_put(). */
KVSHM_API int kvshm_set(struct kvshm *kv, const void *key, size_t klen,
			const void *val, size_t vlen, uint64_t ttl_ms);

/*
 * Write key as w describes (NULL = plain set). On success the new version
 * goes to *cas_out if cas_out is not NULL. The write is visible to every
 * process before this returns.
 *
 * When the store is full the write evicts (items that are expired or were
 * not read recently go first), unless the store is KVSHM_NOEVICT or w->opts
 * has KVSHM_NOEVICT_WRITE: then -ENOSPC. If the write fails for any reason
 * the old value is untouched.
 *
 * Errors: -EEXIST (ADD, key live); -ENOENT (REPLACE/CAS, key absent);
 * -ESTALE (CAS, version differs); -E2BIG key or value too long, or the item
 * can never fit; -ENOSPC full and may not evict; -EINVAL bad mode or
 * arguments; -EROFS read-only handle; -ETIMEDOUT a lock was held for more
 * than 5 s by a live process, or a resize stalled (see kvshm_resize()); -ENOTRECOVERABLE the store is quarantined
 * (see kvshm_check()).
 */
KVSHM_API int kvshm_put(struct kvshm *kv, const void *key, size_t klen,
			const void *val, size_t vlen,
			const struct kvshm_write *w, uint64_t *cas_out);

/* Copy key's value into buf and its length into *vlen (vlen may be NULL).
 * Missing or expired: -ENOENT. buf too small: -ENOBUFS with *vlen set to the
 * length needed (buf holds nothing useful). Takes no lock, except to decide
 * on an item whose TTL has run out: a REPLACE or CAS that found it live a
 * moment before may be publishing, and the lock orders the read after it.
 * A read-only handle, which may not lock, can see such a key gone for an
 * instant before that write's value appears. */
KVSHM_API int kvshm_get(struct kvshm *kv, const void *key, size_t klen,
			void *buf, size_t buflen, size_t *vlen);

/* As kvshm_get(), also filling *item (which may be NULL). With
 * KVSHM_GET_STALE an expired item that has not been reclaimed yet is
 * returned with item->stale = true. Counters come back as their 8 bytes with
 * item->counter = true. Errors: -ENOENT, -ENOBUFS (item->value_len set),
 * -EINVAL unknown flags. */
KVSHM_API int kvshm_get_ex(struct kvshm *kv, const void *key, size_t klen,
			   void *buf, size_t buflen, struct kvshm_item *item,
			   unsigned flags);

/* 1 if key is live, 0 if missing or expired, or a negative errno. */
KVSHM_API int kvshm_exists(struct kvshm *kv, const void *key, size_t klen);

/* Delete key. Errors: -ENOENT missing or expired; -EROFS. */
KVSHM_API int kvshm_delete(struct kvshm *kv, const void *key, size_t klen);

/* Delete key only if its version is cas. Errors: -ESTALE version differs;
 * -ENOENT missing or expired; -EROFS. */
KVSHM_API int kvshm_delete_cas(struct kvshm *kv, const void *key, size_t klen,
			       uint64_t cas);

/* *ttl_ms = milliseconds left, or -1 if key never expires.
 * Errors: -ENOENT missing or expired. */
KVSHM_API int kvshm_ttl(struct kvshm *kv, const void *key, size_t klen,
			int64_t *ttl_ms);

/* Give a live key a new TTL from now (0 = store default, KVSHM_TTL_NEVER =
 * never expire). The value and its version are unchanged.
 * Errors: -ENOENT missing or expired; -EROFS. */
KVSHM_API int kvshm_expire(struct kvshm *kv, const void *key, size_t klen,
			   uint64_t ttl_ms);

/*
 * Add delta to the counter at key, atomically across processes and threads,
 * and store the new value in *result (result may be NULL). A missing or
 * expired key is created as delta with TTL init_ttl_ms (0 = store default);
 * an existing counter keeps its TTL. On an existing counter this is one
 * lock-free atomic read-modify-write.
 * A value that is exactly a decimal int64 in text (Redis's rule: an
 * optional '-', no '+', spaces or leading zeros) is taken as that number:
 * "32" + 1 becomes the counter 33, keeping the text's TTL.
 * Errors: -ENOMSG the key holds any other non-counter value (unchanged);
 * -ERANGE the result would overflow int64 (unchanged); -ENOSPC/-E2BIG/
 * -EROFS as put.
 */
KVSHM_API int kvshm_incr(struct kvshm *kv, const void *key, size_t klen,
			 int64_t delta, uint64_t init_ttl_ms, int64_t *result);

/* Read a counter into *value. Missing or expired: -ENOENT with *value = 0.
 * A non-counter value: -ENOMSG. */
KVSHM_API int kvshm_counter(struct kvshm *kv, const void *key, size_t klen,
			    int64_t *value);

/* Remove every key. Every key written before this returns is gone for every
 * process afterwards. O(1): the index is emptied lazily, one stripe at a
 * time, by the next writer or sweep that touches each stripe. Errors: -EROFS. */
KVSHM_API int kvshm_clear(struct kvshm *kv);

/*
 * Visit up to limit (0 = no limit) live keys that start with prefix (plen 0
 * = every key), resuming from *cursor (0 = start). The resume point goes to
 * *cursor, 0 when the scan is complete. Returns the number of keys visited,
 * or fn's negative return value if fn stopped the scan with one.
 *
 * Keys present for the whole scan are visited at least once; keys written or
 * deleted during it may or may not be. No lock is held while fn runs, so fn
 * may call any kvshm function on any handle. Order is unspecified.
 * Errors: -EINVAL bad cursor or arguments; -ENOMEM.
 */
KVSHM_API int kvshm_scan(struct kvshm *kv, const void *prefix, size_t plen,
			 uint64_t *cursor, size_t limit, kvshm_scan_fn fn,
			 void *ctx);

/* Reclaim up to max_items (0 = all) expired items, a few buckets per lock
 * hold, and the slots of stripes emptied by kvshm_clear(). Then, if no
 * allocation segment is free, compact one that is at least half garbage
 * (moving live items, never evicting), so writers find room without
 * reclaiming it themselves. *reclaimed (may be NULL) gets the number of
 * items reclaimed. Errors: -EROFS. */
KVSHM_API int kvshm_sweep(struct kvshm *kv, size_t max_items,
			  size_t *reclaimed);

/*
 * Verify the whole segment: header, every index bucket and item, the segment
 * (memory) table, and the per-stripe accounting. Returns 0 when consistent
 * and -EUCLEAN otherwise, with a human-readable report of what is wrong (or
 * a one-line summary when all is well) in report, always NUL-terminated when
 * report_len > 0. report may be NULL.
 *
 * With a writable handle each stripe is checked under its lock, one stripe
 * at a time, so writers wait for at most one stripe's check; taking the
 * locks also repairs whatever dead processes left behind, and a resize
 * whose process died is finished or undone first. A read-only handle checks
 * optimistically and retries a stripe that changed under it.
 */
KVSHM_API int kvshm_check(struct kvshm *kv, char *report, size_t report_len);

/*
 * The janitor role. At most one live process at a time is a store's janitor
 * (kvshm-janitor claims it); the store is correct without one, a janitor
 * only reclaims memory sooner and reports problems sooner.
 *
 * kvshm_janitor_claim() makes this handle the janitor: it takes an OFD lock
 * on the segment, which the kernel drops when the process dies or the handle
 * is closed, and records this process's pid and a first heartbeat.
 * Errors: -EBUSY another process is the janitor (kvshm_stats() gives its
 * pid); -EROFS; -EALREADY this handle already is.
 * kvshm_janitor_heartbeat() records that the janitor is alive (now, in
 * Unix ms); -EPERM if this handle is not the janitor, as in a fork()ed
 * child of the janitor (the role is not inherited).
 * kvshm_janitor_release() gives the role up; -EPERM if not the janitor (a
 * child cannot release its parent's role).
 * All three are for one thread at a time per handle.
 */
KVSHM_API int kvshm_janitor_claim(struct kvshm *kv);
KVSHM_API int kvshm_janitor_heartbeat(struct kvshm *kv);
KVSHM_API int kvshm_janitor_release(struct kvshm *kv);

/* A snapshot of the store's geometry, occupancy and counters. Counters are
 * cumulative since creation and approximate while other processes run. */
struct kvshm_stats {
	/* geometry, fixed at creation */
	uint64_t arena_bytes;     /* whole segment */
	uint64_t data_bytes;      /* part of it that holds items */
	uint64_t segment_bytes;   /* size of one allocation segment */
	uint64_t max_items;       /* index capacity */
	uint64_t max_key_bytes;
	uint64_t max_value_bytes;
	uint64_t default_ttl_ms;
	uint64_t stripes;         /* lock stripes */
	uint64_t noevict;         /* 1 if created with KVSHM_NOEVICT */
	uint64_t created_at_ms;   /* Unix-epoch ms */
	/* occupancy */
	uint64_t items;           /* live + expired-but-unreclaimed items */
	uint64_t used_bytes;      /* bytes of those items, headers included */
	uint64_t free_bytes;      /* data_bytes not holding linked items */
	uint64_t free_segments;   /* fully free allocation segments */
	uint64_t largest_free_bytes; /* largest item that fits without
	                                reclaiming anything */
	/* operations */
	uint64_t gets, hits, misses;
	uint64_t sets, deletes, incrs;
	uint64_t evictions;       /* live items removed to make room */
	uint64_t expired;         /* expired items reclaimed, all causes */
	uint64_t expired_swept;   /* ... of which by kvshm_sweep() */
	uint64_t clears;
	uint64_t store_failures;  /* writes that failed for lack of room: */
	uint64_t fail_nospace;    /*   -ENOSPC, no memory could be reclaimed */
	uint64_t fail_index_full; /*   -ENOSPC, the key's index window was full */
	uint64_t fail_too_big;    /*   -E2BIG, the item can never fit */
	uint64_t segments_reclaimed; /* allocation segments emptied for reuse */
	uint64_t items_relocated; /* recently read items moved, not evicted */
	/* locks */
	uint64_t lock_contended;  /* lock acquisitions that had to wait */
	uint64_t lock_recoveries; /* locks taken over from a dead owner and
	                             repaired */
	uint64_t read_retries;    /* optimistic reads retried */
	uint64_t read_fallbacks;  /* optimistic reads that fell back to a lock */
	/* the janitor */
	uint64_t janitor_alive;   /* 1 if a janitor process holds the role */
	uint64_t janitor_pid;     /* its pid (as it recorded it), 0 if none */
	uint64_t janitor_heartbeat_ms; /* Unix ms of its last heartbeat, 0 if
	                                  none */
	uint64_t janitor_started_ms;   /* Unix ms when it claimed the role */
};

/* Fill *st. Works on read-only handles. Errors: -EINVAL. */
KVSHM_API int kvshm_stats(struct kvshm *kv, struct kvshm_stats *st);

/* A human-readable description of a kvshm error code (negative or positive
 * errno). Never NULL. The codes kvshm uses have descriptions of their own,
 * in static storage; any other errno gets the system's (strerror_r(3)), in
 * a buffer of the calling thread that the thread's next call may reuse.
 * Safe from any number of threads. */
KVSHM_API const char *kvshm_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* KVSHM_H */
