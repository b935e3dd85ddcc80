/* SPDX-License-Identifier: MIT */
/*
 * lock.c - a lock shared by processes, done right: a lease, an owner-checked
 * release and a fencing token.
 *
 * ACQUIRE  kvshm_put(kv, "lock:job", me, ...,
 *		      &(struct kvshm_write){ .mode = KVSHM_ADD, .ttl_ms = LEASE },
 *		      &mine)
 *   ADD writes the key only if it is absent (or expired): one process wins,
 *   the others get -EEXIST and try again later. The lease frees the lock if
 *   its holder dies, without anyone having to notice the death. mine, the
 *   version of the item we wrote, is our proof of ownership.
 * FENCE    kvshm_incr(kv, "lock:job:fence", 1, ...) gives the holder a
 *   token to hand to the protected resource with each write; the resource
 *   refuses a token lower than one it has already seen. A holder that
 *   stalls past its lease (stopped, swapped out, paused) and wakes up still
 *   believing it holds the lock is refused: the next holder's token is
 *   higher.
 * RENEW    a KVSHM_CAS put of the same value with cas = mine and a new TTL;
 *   -ESTALE or -ENOENT means the lock is lost. (kvshm_expire() checks no
 *   owner: it would lengthen another holder's lease.)
 * RELEASE  kvshm_delete_cas(kv, "lock:job", mine): deletes our lock only.
 *
 * THE RACY VERSION, as often shown for hosted key-value stores:
 *	if (get("lock:job") == NOT_FOUND) {
 *		set("lock:job", me);
 *		critical_section();
 *		del("lock:job");
 *	}
 * Two processes both find the lock free before either sets it, and both
 * enter. And the plain delete at the end removes whatever lock is there:
 * once our lease has expired, another process's, so a third one enters too.
 *
 * THE RUN. N workers take the lock ROUNDS times each. Inside, they show
 * their fencing token to a "resource" in memory shared outside the store,
 * and increment its counter in a deliberately non-atomic way (read, yield,
 * write), while an atomic count of the holders watches for a second one.
 * Then the parent replays a holder that stalls past its lease. Invariant:
 * never two holders at once, tokens strictly increasing, no increment lost,
 * and the stalled holder's renewal, write and release are all refused.
 *
 *   build/release/examples/lock [WORKERS]
 */
#include <sched.h>
#include <stdatomic.h>

#include "example.h"

#define LOCK "lock:job"
#define FENCE "lock:job:fence"
#define LEASE_MS 5000 /* far longer than the critical section */
#define ROUNDS 200

/* What the lock protects: a store that checks fencing tokens. */
struct resource {
	atomic_int holders;      /* processes inside the critical section */
	atomic_int max_holders;  /* the most there ever were */
	atomic_llong last_token; /* highest fencing token accepted */
	atomic_long refused;     /* writes refused for an old token */
	long long counter;       /* guarded by the lock alone */
};

static int lock_try(struct kvshm *kv, uint64_t lease_ms, uint64_t *mine)
{
	const struct kvshm_write add = { .mode = KVSHM_ADD,
					 .ttl_ms = lease_ms };
	char me[32];
	int n = snprintf(me, sizeof(me), "pid %d", (int)getpid());

	return kvshm_put(kv, LOCK, strlen(LOCK), me, (size_t)n, &add, mine);
}

static void lock_acquire(struct kvshm *kv, uint64_t lease_ms, uint64_t *mine)
{
	int err;

	while ((err = lock_try(kv, lease_ms, mine)) == -EEXIST)
		sched_yield(); /* a real program would back off, and give up */
	TRY(err);
}

/* Extend our lease: only if the lock is still the item we wrote. */
static int lock_renew(struct kvshm *kv, uint64_t lease_ms, uint64_t *mine)
{
	const struct kvshm_write w = { .mode = KVSHM_CAS,
				       .ttl_ms = lease_ms,
				       .cas = *mine };
	char me[32];
	int n = snprintf(me, sizeof(me), "pid %d", (int)getpid());

	return kvshm_put(kv, LOCK, strlen(LOCK), me, (size_t)n, &w, mine);
}

static int lock_release(struct kvshm *kv, uint64_t mine)
{
	return kvshm_delete_cas(kv, LOCK, strlen(LOCK), mine);
}

/* The resource's side of fencing: accept a write only with a token higher
 * than every token accepted before. */
static bool resource_admit(struct resource *r, long long token)
{
	long long last = atomic_load(&r->last_token);

	do {
		if (token <= last) {
			atomic_fetch_add(&r->refused, 1);
			return false;
		}
	} while (!atomic_compare_exchange_weak(&r->last_token, &last, token));
	return true;
}

static void critical_section(struct resource *r, long long token)
{
	int now = atomic_fetch_add(&r->holders, 1) + 1;
	int max = atomic_load(&r->max_holders);

	while (now > max &&
	       !atomic_compare_exchange_weak(&r->max_holders, &max, now))
		;
	if (resource_admit(r, token)) {
		long long c = r->counter; /* lost if another holder is here */

		sched_yield();
		r->counter = c + 1;
	}
	atomic_fetch_sub(&r->holders, 1);
}

static int worker(struct kvshm *kv, int id, void *arg)
{
	struct resource *r = arg;

	(void)id;
	for (int i = 0; i < ROUNDS; i++) {
		uint64_t mine;
		int64_t token;

		lock_acquire(kv, LEASE_MS, &mine);
		TRY(kvshm_incr(kv, FENCE, strlen(FENCE), 1, KVSHM_TTL_NEVER,
			       &token));
		critical_section(r, token);
		TRY(lock_release(kv, mine)); /* ours: must succeed */
	}
	return 0;
}

/* Holder A stalls past its lease; B takes the lock. A's renewal, its write
 * and its release must all be refused, and B's lock must survive them.
 * Returns what went wrong, or NULL. */
static const char *stalled_holder(struct kvshm *kv, struct resource *r)
{
	uint64_t a, b;
	int64_t token_a, token_b;

	lock_acquire(kv, 50, &a); /* A: a 50 ms lease */
	TRY(kvshm_incr(kv, FENCE, strlen(FENCE), 1, KVSHM_TTL_NEVER, &token_a));
	sleep_ms(100); /* A stalls; its lease runs out */
	if (lock_try(kv, LEASE_MS, &b) != 0)
		return "B could not take the lock after A's lease expired";
	TRY(kvshm_incr(kv, FENCE, strlen(FENCE), 1, KVSHM_TTL_NEVER, &token_b));
	if (!resource_admit(r, token_b))
		return "B's write was refused";
	if (lock_renew(kv, LEASE_MS, &a) != -ESTALE)
		return "A renewed B's lock";
	if (resource_admit(r, token_a))
		return "A's write with an old token was accepted";
	if (lock_release(kv, a) != -ESTALE)
		return "A's release did not fail with -ESTALE";
	if (lock_release(kv, b) != 0)
		return "B's lock did not survive A's release";
	printf("stalled holder: A (token %" PRId64 ") woke after its lease: "
	       "renew refused, write refused, release refused; B (token %" PRId64
	       ") unaffected\n",
	       token_a, token_b);
	return NULL;
}

int main(int argc, char **argv)
{
	struct resource *r;
	const char *stall;
	long long want;
	int rc = example_start("lock", argc, argv, NULL);
	bool ok;

	if (rc)
		return rc;
	r = shared_alloc(sizeof(*r));
	example_fork(worker, r);
	ok = example_wait();

	want = (long long)ex.workers * ROUNDS;
	printf("lock: %d workers, %lld acquisitions, most holders at once %d, "
	       "counter %lld, tokens refused %ld\n",
	       ex.workers, want, atomic_load(&r->max_holders), r->counter,
	       atomic_load(&r->refused));
	if (!ok)
		return example_end(false, "a worker failed");
	if (atomic_load(&r->max_holders) != 1 || r->counter != want ||
	    atomic_load(&r->refused) != 0)
		return example_end(false, "two holders at once, a lost "
					  "increment or a fencing token out "
					  "of order");
	stall = stalled_holder(ex.kv, r);
	if (stall)
		return example_end(false, "stalled holder: %s", stall);
	return example_end(true,
			   "never two holders at once, %lld increments "
			   "kept, tokens strictly increasing; the stalled "
			   "holder was fenced off",
			   want);
}
