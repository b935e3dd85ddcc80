/* SPDX-License-Identifier: MIT */
/*
 * resize.c - kvshm_resize(): give a live store a new geometry without
 * stopping its users, and the rollback of a resize whose process died.
 * Reads the old segment under its stripe locks, writes the new one through
 * the ordinary write path, and changes the old header's `life` word and its
 * stripes' MOVED bits.
 *
 * HOW IT WORKS
 *   1. Take the old segment's resize lock (an OFD lock: it dies with us)
 *      and set life = MIGRATING.
 *   2. Create the new segment under a temporary name, NAME.resize-PID.
 *   3. For each stripe, in index order: lock it, copy every live item
 *      (key, value, flags, absolute expiry; counters frozen first, so no
 *      lock-free incr can land on the old copy afterwards), set the
 *      stripe's MOVED bit, unlock. From then on a writer that locks the
 *      stripe gets KV_EMOVED and waits for step 4 or 5 (handle.c), as long
 *      as the run of MOVED stripes from stripe 0 keeps growing (that is
 *      how it measures progress); readers keep reading the old copy, which
 *      no one changes any more.
 *   4. life = SWITCHING (release), then rename() the new segment over
 *      NAME: new opens find it, and so does every operation on the old
 *      segment that starts from then on (it sees SWITCHING, finds that
 *      the name leads elsewhere, and switches: handle.c), readers
 *      included, so no one reads the old copy after a write to the new.
 *   5. life = RETIRED (release): every handle switches on its next
 *      operation, and the waiting writers run again on the new segment.
 * Versions (cas) are not carried over, but they stay unique (see VERSIONS
 * STAY UNIQUE below): a CAS across a resize gets -ESTALE.
 *
 * LOCKS. The resizer holds an old stripe lock while it writes into the new
 * segment (lane and stripe locks there): three locks, but the new segment
 * is invisible to every other process until step 4, so its locks cannot be
 * part of a cycle.
 *
 * KILL -9. Before the rename the store is still the old segment (life
 * MIGRATING or SWITCHING): whoever next waits on a MOVED stripe finds the
 * resize lock free and rolls back (clears the MOVED bits, unfreezes
 * counters, removes the temporary segment, life = LIVE); reads stay right
 * on the old copy meanwhile. After the rename the name already leads to
 * the new segment, so the same process rolls forward instead (life =
 * RETIRED), and until then every operation that starts on the old segment
 * sees SWITCHING and follows the name.
 */
#include "internal.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * VERSIONS STAY UNIQUE. A creation id is (stripe vseq, stripe index), and
 * the new segment's stripes would start their vseq at 0 again, so a copy
 * could be handed a version that a client read before the resize, and that
 * client's CAS would succeed on a value it never saw. So no version the new
 * segment makes may have a vseq at or below one the old segment used:
 *   - before a key is copied, its new stripe's vseq is raised to `floor`,
 *     the largest vseq of the old stripes copied so far, its own included
 *     (that old stripe is locked and then MOVED: it makes no more);
 *   - before the rename, every new stripe is raised to the floor of all old
 *     stripes, for keys made later (one deleted before the resize, say).
 * The new segment is invisible to other processes until the rename, and
 * only this thread writes it, so these plain stores need no stripe lock.
 * A chain of resizes carries the floor forward. kvshm_clear() does not
 * touch vseq, so it never repeats one either.
 */
static void raise_vseq(struct kv__seg *neu, uint32_t stripe, uint64_t floor)
{
	if (neu->stripes[stripe].vseq < floor)
		neu->stripes[stripe].vseq = floor;
}

/* Copy one live item of the old segment (stripe lock held). */
static int copy_item(struct kv__seg *old, struct kv__seg *neu,
		     struct kv__hit *hit, uint64_t floor)
{
	const struct kv__item *it = kv__item_at(old, hit->off);
	const uint8_t *key = (const uint8_t *)it + KV_ITEM_HDR;
	struct kv__key nk;
	struct kvshm_write w = {.opts = KVSHM_NOEVICT_WRITE | KV_WRITE_COPY,
				.flags = hit->uflags,
				.expires_at_ms = hit->expires_at,
				.ttl_ms = KVSHM_TTL_NEVER};
	int err;

	kv__key_init(neu, &nk, key, it->klen);
	raise_vseq(neu, nk.stripe, floor);
	if (hit->kind == KV_KIND_COUNTER) {
		err = kv__freeze(old, hit, false, 0); /* hit gets the value */
		if (err)
			return err;
		return kv__put_counter(neu, key, it->klen,
				       (int64_t)hit->cvalue, hit->expires_at);
	}
	return kv__put(neu, key, it->klen, key + it->klen, hit->vlen, &w,
		       NULL);
}

static int copy_stripe(struct kv__seg *old, struct kv__seg *neu,
		       uint32_t stripe, uint64_t *floor)
{
	uint64_t first = (uint64_t)stripe * old->stripe_buckets;
	int64_t now = kv__now_ms();
	int err = kv__stripe_lock(old, stripe);

	if (err)
		return err == KV_EMOVED ? -EIO : err;
	if (old->stripes[stripe].vseq > *floor)
		*floor = old->stripes[stripe].vseq;
	for (uint64_t b = first; b < first + old->stripe_buckets; b++) {
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			uint64_t w = atomic_load_explicit(
				&old->buckets[b].slot[s], memory_order_relaxed);
			uint64_t home, size;
			struct kv__hit hit;
			if (!w || !kv__slot_sane(old, b, w, &home, &size))
				continue;
			kv__hit_fill(old, &hit, b, s, w);
			if (kv__is_expired(hit.expires_at, &now))
				continue;
			err = copy_item(old, neu, &hit, *floor);
			if (err)
				goto out;
		}
	}
	KV_CRASHPOINT();
	atomic_fetch_or_explicit(&old->gens[stripe], KV_GEN_MOVED,
				 memory_order_release);
out:
	kv__stripe_unlock(old, stripe);
	return err;
}

static void temp_name(const char *name, uint64_t pid, char *buf, size_t len)
{
	snprintf(buf, len, "%s.resize-%llu", name, (unsigned long long)pid);
}

/* Does name (still) lead to the segment seg? */
bool kv__name_is(const char *name, struct kv__seg *seg)
{
	char path[PATH_MAX];
	struct stat a, b;

	return kv__fs_path(name, path, sizeof(path)) == 0 &&
	       stat(path, &a) == 0 && fstat(seg->fd, &b) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

#ifdef KVSHM_TESTING
/* Test builds: make the n-th following stripe lock of undo_moves() fail as
 * if it had timed out (n >= 1; 0 = off). */
long kv__test_fail_undo;
static bool undo_fault(void)
{
	return kv__test_fail_undo > 0 && --kv__test_fail_undo == 0;
}
#else
#define undo_fault() false
#endif

/* Undo the MOVED bits and counter freezes of an unfinished resize. On
 * failure the stripes not reached yet are still MOVED: the caller must
 * leave life MIGRATING, so that the next writer that meets one of them
 * finds the resize lock free and runs the undo again (a LIVE segment with
 * a MOVED stripe is damage: -ENOTRECOVERABLE for good, index.c). */
static int undo_moves(struct kv__seg *seg)
{
	for (uint32_t st = 0; st < seg->nstripes; st++) {
		uint64_t first = (uint64_t)st * seg->stripe_buckets;
		int err = undo_fault() ? -ETIMEDOUT
				       : kv__lock(seg, &seg->stripes[st].mutex,
						  kv__stripe_repair,
						  &seg->stripes[st]);
		if (err)
			return err;
		for (uint64_t b = first; b < first + seg->stripe_buckets; b++)
			for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
				uint64_t w = atomic_load_explicit(
					&seg->buckets[b].slot[s],
					memory_order_relaxed);
				uint64_t home, size;
				if (w && kv__slot_sane(seg, b, w, &home, &size) &&
				    kv__item_at(seg, kv__slot_off(w))->kind ==
					    KV_KIND_COUNTER)
					kv__unfreeze(seg, kv__slot_off(w));
			}
		KV_CRASHPOINT();
		atomic_fetch_and_explicit(&seg->gens[st], ~KV_GEN_MOVED,
					  memory_order_release);
		kv__unlock(&seg->stripes[st].mutex);
	}
	return 0;
}

/* Is a resize of seg under way (or abandoned by a dead resizer)? */
bool kv__resizing(uint64_t life)
{
	return life == KV_LIFE_MIGRATING || life == KV_LIFE_SWITCHING;
}

/*
 * Finish a resize whose process died (life MIGRATING or SWITCHING, resize
 * lock free): roll it forward if the name already leads elsewhere, else
 * back. -EBUSY if another process holds the resize lock (the resizer, or
 * another rescuer).
 */
int kv__resize_rollback(struct kv__seg *seg, const char *name)
{
	char tmp[PATH_MAX];
	int err = kv__ofd_lock(seg, KV_RESIZE_LOCK_BYTE, F_WRLCK);

	if (err)
		return err == -EAGAIN || err == -EACCES ? -EBUSY : err;
	if (!kv__resizing(atomic_load_explicit(&seg->hdr->life,
					       memory_order_acquire)))
		goto unlock;
	if (!kv__name_is(name, seg)) {
		KV_CRASHPOINT();
		atomic_store_explicit(&seg->hdr->life, KV_LIFE_RETIRED,
				      memory_order_release);
		goto unlock;
	}
	err = undo_moves(seg);
	if (err)
		goto unlock;
	temp_name(name,
		  atomic_load_explicit(&seg->hdr->resizer_pid,
				       memory_order_relaxed),
		  tmp, sizeof(tmp));
	KV_CRASHPOINT();
	kv__unlink_name(tmp); /* may be half-made: unchecked */
	KV_CRASHPOINT();
	atomic_store_explicit(&seg->hdr->life, KV_LIFE_LIVE,
			      memory_order_release);
unlock:
	kv__ofd_lock(seg, KV_RESIZE_LOCK_BYTE, F_UNLCK);
	return err;
}

/* Options of the new segment: the old one's, with the new sizes. */
static int new_options(struct kv__seg *old, const struct kvshm_options *req,
		       struct kvshm_options *o)
{
	struct stat st;

	if (fstat(old->fd, &st))
		return -errno;
	*o = (struct kvshm_options)KVSHM_OPTIONS_INIT;
	o->flags = KVSHM_CREATE | KVSHM_EXCL | (old->noevict ? KVSHM_NOEVICT : 0);
	o->arena_bytes = req->arena_bytes;
	o->max_items = req->max_items;
	o->max_key_bytes = old->max_key;
	o->max_value_bytes = old->max_value;
	o->default_ttl_ms = old->default_ttl_ms;
	o->mode = st.st_mode & 0666;
	return 0;
}

/* Steps 2-5 (resize lock held, life MIGRATING). */
static int migrate(struct kv__seg *old, const char *name,
		   const struct kvshm_options *req)
{
	char tmp[PATH_MAX], tmp_path[PATH_MAX], path[PATH_MAX];
	struct kvshm_options o;
	struct kv__seg *neu;
	uint64_t floor = 0;
	int err = new_options(old, req, &o);

	if (err)
		return err;
	temp_name(name, (uint64_t)getpid(), tmp, sizeof(tmp));
	kv__unlink_name(tmp); /* a leftover of an earlier try of ours */
	err = kv__seg_open(tmp, &o, &neu);
	if (err)
		return err;
	for (uint32_t s = 0; s < old->nstripes && !err; s++)
		err = copy_stripe(old, neu, s, &floor);
	for (uint32_t s = 0; s < neu->nstripes && !err; s++)
		raise_vseq(neu, s, floor);
	if (!err)
		err = kv__fs_path(tmp, tmp_path, sizeof(tmp_path));
	if (!err)
		err = kv__fs_path(name, path, sizeof(path));
	if (!err) {
		KV_CRASHPOINT();
		/* release: pairs with seg_now()'s acquire (handle.c); an
		 * operation that sees the rename's effects sees this */
		atomic_store_explicit(&old->hdr->life, KV_LIFE_SWITCHING,
				      memory_order_release);
		KV_CRASHPOINT();
		if (rename(tmp_path, path)) {
			err = -errno;
			KV_CRASHPOINT();
			/* the name never moved: MIGRATING again, for the
			 * undo (or, if we die, for the rescuer) */
			atomic_store_explicit(&old->hdr->life,
					      KV_LIFE_MIGRATING,
					      memory_order_release);
		}
	}
	kv__seg_close(neu);
	if (err) {
		kvshm_unlink(tmp);
		return err;
	}
	KV_CRASHPOINT();
	atomic_store_explicit(&old->hdr->life, KV_LIFE_RETIRED,
			      memory_order_release);
	return 0;
}

int kvshm_resize(const char *name, const struct kvshm_options *opts)
{
	struct kvshm_options req, none = KVSHM_OPTIONS_INIT;
	struct kv__seg *old;
	uint64_t live = KV_LIFE_LIVE;
	int err;

	if (!opts)
		return -EINVAL;
	err = kv__options_copy(opts, &req);
	if (err)
		return err;
	if (!req.arena_bytes)
		return -EINVAL;
	err = kv__seg_open(name, &none, &old);
	if (err)
		return err;
	err = kv__ofd_lock(old, KV_RESIZE_LOCK_BYTE, F_WRLCK);
	if (err) {
		err = err == -EAGAIN || err == -EACCES ? -EBUSY : err;
		goto close;
	}
	if (kv__resizing(atomic_load_explicit(&old->hdr->life,
					      memory_order_acquire))) {
		/* an earlier resizer died: undo it first */
		kv__ofd_lock(old, KV_RESIZE_LOCK_BYTE, F_UNLCK);
		err = kv__resize_rollback(old, name);
		if (!err)
			err = kv__ofd_lock(old, KV_RESIZE_LOCK_BYTE, F_WRLCK);
		if (err)
			goto close;
	}
	KV_CRASHPOINT();
	atomic_store_explicit(&old->hdr->resizer_pid, (uint64_t)getpid(),
			      memory_order_relaxed);
	if (!atomic_compare_exchange_strong_explicit(
		    &old->hdr->life, &live, KV_LIFE_MIGRATING,
		    memory_order_acq_rel, memory_order_acquire)) {
		err = live == KV_LIFE_RETIRED ? -ESTALE : -EBUSY;
		goto unlock;
	}
	err = migrate(old, name, &req);
	/* back to normal service on the old segment; if the undo fails (a
	 * stripe lock timed out), life stays MIGRATING and the next writer
	 * that meets a stripe still MOVED redoes it once we unlock */
	if (err && undo_moves(old) == 0) {
		KV_CRASHPOINT();
		atomic_store_explicit(&old->hdr->life, KV_LIFE_LIVE,
				      memory_order_release);
	}
unlock:
	kv__ofd_lock(old, KV_RESIZE_LOCK_BYTE, F_UNLCK);
close:
	kv__seg_close(old);
	return err;
}
