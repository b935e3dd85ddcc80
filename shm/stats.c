/* SPDX-License-Identifier: MIT */
/*
 * stats.c - statistics (sharded counters in the segment, and the
 * kvshm_stats() snapshot), clocks, error strings and version queries.
 * Writes only the stat shards.
 */
#include "internal.h"

#include <limits.h>
#include <time.h>
#include <unistd.h>

int64_t kv__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t kv__mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

_Thread_local struct kv__thread kv__self = {UINT32_MAX, UINT32_MAX};

/* A well-spread number in [0, n) for this thread: its kernel thread id,
 * which differs between the processes and threads of a host. */
uint32_t kv__thread_pick(uint32_t n)
{
	uint64_t tid = (uint64_t)gettid();
	return (uint32_t)(((tid * UINT64_C(0x9e3779b97f4a7c15)) >> 32) % n);
}

static void forget_thread_choices(void)
{
	kv__self.shard = UINT32_MAX;
	kv__self.lane = UINT32_MAX;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_install(void)
{
	pthread_atfork(NULL, NULL, forget_thread_choices);
}

void kv__atfork_register(void)
{
	pthread_once(&atfork_once, atfork_install);
}

/* Each thread adds to its own shard, so counting is an uncontended atomic
 * add on a line few others write. Read-only handles count nothing: they may
 * not write to the segment. */
void kv__stat_add(struct kv__seg *kv, enum kv__stat which, uint64_t n)
{
	if (kv->rdonly)
		return;
	if (KV_UNLIKELY(kv__self.shard >= KV_STAT_SHARDS))
		kv__self.shard = kv__thread_pick(KV_STAT_SHARDS);
	/* relaxed: a count orders nothing */
	atomic_fetch_add_explicit(&kv->stats[kv__self.shard].v[which], n,
				  memory_order_relaxed);
}

static uint64_t stat_sum(const struct kv__seg *kv, enum kv__stat which)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < KV_STAT_SHARDS; i++)
		sum += atomic_load_explicit(&kv->stats[i].v[which],
					    memory_order_relaxed);
	return sum;
}

int kv__stats(struct kv__seg *kv, struct kvshm_stats *st)
{
	if (!kv || !st)
		return -EINVAL;
	*st = (struct kvshm_stats){
		.arena_bytes = kv->map_bytes,
		.data_bytes = kv->data_bytes,
		.segment_bytes = kv->segment_bytes,
		.max_items = kv->max_items,
		.max_key_bytes = kv->max_key,
		.max_value_bytes = kv->max_value,
		.default_ttl_ms = kv->default_ttl_ms,
		.stripes = kv->nstripes,
		.noevict = kv->noevict,
		.created_at_ms = kv->hdr->created_at_ms,
	};
	/* stripe totals are read without the locks: a snapshot that may be
	 * a few writes old, which is all a statistic promises */
	for (uint32_t s = 0; s < kv->nstripes; s++) {
		if (!kv__stripe_is_current(kv, s))
			continue;
		st->items += __atomic_load_n(&kv->stripes[s].items,
					     __ATOMIC_RELAXED);
		st->used_bytes += __atomic_load_n(&kv->stripes[s].bytes,
						  __ATOMIC_RELAXED);
	}
	st->free_bytes = st->used_bytes < kv->data_bytes
				 ? kv->data_bytes - st->used_bytes
				 : 0;
	st->largest_free_bytes =
		kv__largest_free(kv, &st->free_segments);
	st->hits = stat_sum(kv, KV_ST_HITS);
	st->misses = stat_sum(kv, KV_ST_MISSES);
	st->gets = st->hits + st->misses;
	st->sets = stat_sum(kv, KV_ST_SETS);
	st->deletes = stat_sum(kv, KV_ST_DELETES);
	st->incrs = stat_sum(kv, KV_ST_INCRS);
	st->evictions = stat_sum(kv, KV_ST_EVICTIONS);
	st->expired = stat_sum(kv, KV_ST_EXPIRED);
	st->expired_swept = stat_sum(kv, KV_ST_EXPIRED_SWEPT);
	st->clears = stat_sum(kv, KV_ST_CLEARS);
	st->fail_nospace = stat_sum(kv, KV_ST_FAIL_NOSPACE);
	st->fail_index_full = stat_sum(kv, KV_ST_FAIL_INDEX_FULL);
	st->fail_too_big = stat_sum(kv, KV_ST_FAIL_TOO_BIG);
	st->store_failures =
		st->fail_nospace + st->fail_index_full + st->fail_too_big;
	st->segments_reclaimed = stat_sum(kv, KV_ST_SEGS_RECLAIMED);
	st->items_relocated = stat_sum(kv, KV_ST_RELOCATED);
	st->lock_contended = stat_sum(kv, KV_ST_LOCK_CONTENDED);
	st->lock_recoveries = stat_sum(kv, KV_ST_LOCK_RECOVERIES);
	st->read_retries = stat_sum(kv, KV_ST_READ_RETRIES);
	st->read_fallbacks = stat_sum(kv, KV_ST_READ_FALLBACKS);
	st->janitor_alive = kv__janitor_lock_held(kv);
	if (st->janitor_alive) {
		st->janitor_pid = atomic_load_explicit(&kv->hdr->janitor_pid,
						       memory_order_relaxed);
		st->janitor_started_ms = atomic_load_explicit(
			&kv->hdr->janitor_started_ms, memory_order_relaxed);
	}
	st->janitor_heartbeat_ms = atomic_load_explicit(
		&kv->hdr->janitor_heartbeat_ms, memory_order_relaxed);
	return 0;
}

/* The system's description of an errno kvshm_strerror() does not list (a
 * directory given to kvshm_unlink_ex() with FORCE: EISDIR). Thread-local,
 * because the library never hands threads a buffer they share. */
static const char *system_message(int errnum)
{
	static _Thread_local char buf[128];

	/* GNU strerror_r (_GNU_SOURCE): returns the message, which may be a
	 * static string rather than buf; "Unknown error N" if it has none */
	return strerror_r(errnum, buf, sizeof(buf));
}

const char *kvshm_strerror(int err)
{
	if (err == INT_MIN)
		return "unknown error";
	switch (err < 0 ? -err : err) {
	case 0: return "success";
	case EINVAL: return "invalid argument";
	case ENOENT: return "no such key or store";
	case EEXIST: return "key or store already exists";
	case E2BIG: return "key or value too long for this store";
	case ENOSPC:
		return "no room: the store is full and may not evict, or its "
		       "file system has no room for the segment";
	case ENOBUFS: return "buffer too small for the value";
	case ESTALE: return "version (cas) does not match";
	case ENOMSG: return "value is not a counter";
	case ERANGE: return "counter would overflow";
	case EROFS: return "store opened read-only";
	case EBADMSG: return "not a kvshm segment, truncated or corrupt";
	case EPROTONOSUPPORT:
		return "segment made by an incompatible kvshm (layout or lock "
		       "ABI)";
	case EACCES: return "permission denied (owner or mode)";
	case ELOOP: return "store name is a symbolic link";
	case EXDEV: return "store belongs to another PID namespace";
	case ETIMEDOUT: return "timed out waiting for a lock or the creator";
	case ENOTRECOVERABLE: return "store part quarantined after a crash";
	case EUCLEAN: return "consistency check failed";
	case ENOMEM: return "out of memory";
	case EAGAIN: return "resource busy, try again";
	case EBUSY: return "busy (another janitor is running?)";
	case EIO: return "input/output error";
	case EPERM: return "operation not permitted";
	case EALREADY: return "already done";
	case ENAMETOOLONG: return "store name too long";
	default: return system_message(err < 0 ? -err : err);
	}
}

const char *kvshm_version(void)
{
	return KVSHM_VERSION_STRING;
}

unsigned kvshm_layout_version(void)
{
	return KV_LAYOUT;
}
