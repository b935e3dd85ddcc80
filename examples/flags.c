/* SPDX-License-Identifier: MIT */
/*
 * flags.c - feature flags, and A/B test variants that stick to each user
 * whichever process serves them.
 *
 * FLAGS are plain keys ("flag:new_checkout" = "on"/"off", TTL never) that
 * an admin sets and every request reads: a lock-free read, and every
 * process sees a change from the moment the set returns. A percentage
 * rollout ("flag:dark_mode" = "25") needs no per-user state: user u is in
 * it if hash(u) % 100 < 25, the same answer in every process.
 *
 * STICKY VARIANTS. A user's variant is drawn at random on their first
 * request and must never change:
 *	get "ab:checkout:<user>"; if found, that is the variant.
 *	Not found: draw one and write it with KVSHM_ADD; -EEXIST means another
 *	process drew one first: read it and use theirs.
 * ADD makes the first assignment win everywhere.
 *
 * THE NAIVE VERSION RACES:  v = get(); if (!v) { v = draw(); set(v); }
 * Two processes serving the same new user at once both draw, both set, and
 * the user sees variant A on one request and B on the next (and the test's
 * statistics count them in both).
 *
 * THE RUN. N workers serve REQUESTS requests from USERS users, noting in
 * memory shared outside the store which variants each user was shown;
 * halfway through, worker 0 (the admin) turns new_checkout on. Invariant:
 * every user saw exactly one variant, the stored one, and no worker saw
 * the flag off again after seeing it on.
 *
 *   build/release/examples/flags [WORKERS]
 */
#include <stdatomic.h>

#include "example.h"

#define USERS 200
#define REQUESTS 4000
#define VARIANTS 2
#define ASSIGNMENT_TTL_MS (30ull * 24 * 3600 * 1000) /* the experiment */

static const char *const variant_name[VARIANTS] = { "A", "B" };

struct seen {
	atomic_uint variants[USERS]; /* bit v: the user was shown variant v */
	atomic_long assigned, lost_races;
};

/* The flag's current value: true if on. */
static bool flag_on(struct kvshm *kv, const char *flag)
{
	char val[8];
	size_t len;
	int err = kvshm_get(kv, flag, strlen(flag), val, sizeof(val), &len);

	if (err == -ENOENT)
		return false; /* an unknown flag is off */
	TRY(err);
	return len == 2 && memcmp(val, "on", 2) == 0;
}

/* The user's variant: the stored one, or a new draw that wins the ADD. */
static int variant(struct kvshm *kv, unsigned user, uint64_t *seed,
		   struct seen *s)
{
	const struct kvshm_write add = { .mode = KVSHM_ADD,
					 .ttl_ms = ASSIGNMENT_TTL_MS };
	char key[32], val[8];
	size_t klen =
		(size_t)snprintf(key, sizeof(key), "ab:checkout:%u", user);

	for (;;) {
		size_t len;
		int v, err = kvshm_get(kv, key, klen, val, sizeof(val), &len);

		if (err == 0) {
			for (v = 0; v < VARIANTS; v++)
				if (strlen(variant_name[v]) == len &&
				    memcmp(val, variant_name[v], len) == 0)
					return v;
			example_die("a variant that does not exist", -EINVAL);
		}
		if (err != -ENOENT)
			TRY(err);
		v = (int)(rnd(seed) % VARIANTS); /* a first visit */
		err = kvshm_put(kv, key, klen, variant_name[v], 1, &add, NULL);
		if (err == 0) {
			atomic_fetch_add(&s->assigned, 1);
			return v;
		}
		if (err != -EEXIST)
			TRY(err);
		atomic_fetch_add(&s->lost_races, 1); /* read the winner's */
	}
}

static int worker(struct kvshm *kv, int id, void *arg)
{
	struct seen *s = arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
	bool saw_on = false;

	for (int i = 0; i < REQUESTS; i++) {
		/* every worker first serves the users in the same order, as
		 * when an experiment starts, so that first visits collide */
		unsigned user = i < USERS ? (unsigned)i :
					    (unsigned)(rnd(&seed) % USERS);
		int v;

		if (id == 0 && i == REQUESTS / 2) /* the admin flips it */
			TRY(kvshm_set(kv, "flag:new_checkout", 17, "on", 2,
				      KVSHM_TTL_NEVER));
		if (flag_on(kv, "flag:new_checkout"))
			saw_on = true;
		else if (saw_on) {
			fprintf(stderr,
				"worker %d: new_checkout was on, then "
				"off\n",
				id);
			return 1;
		}
		v = variant(kv, user, &seed, s);
		atomic_fetch_or(&s->variants[user], 1u << v);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct seen *s;
	int users = 0, rc = example_start("flags", argc, argv, NULL);

	if (rc)
		return rc;
	TRY(kvshm_set(ex.kv, "flag:new_checkout", 17, "off", 3,
		      KVSHM_TTL_NEVER));
	s = shared_alloc(sizeof(*s));
	example_fork(worker, s);
	if (!example_wait())
		return example_end(false, "a worker failed");

	for (unsigned u = 0; u < USERS; u++) {
		unsigned mask = atomic_load(&s->variants[u]);
		char key[32], val[8];
		size_t len;
		int klen = snprintf(key, sizeof(key), "ab:checkout:%u", u);

		if (mask == 0)
			continue; /* never came */
		users++;
		if (mask & (mask - 1))
			return example_end(false,
					   "user %u saw more than one "
					   "variant",
					   u);
		TRY(kvshm_get(ex.kv, key, (size_t)klen, val, sizeof(val),
			      &len));
		if (len != 1 || mask != 1u << (val[0] - 'A'))
			return example_end(false,
					   "user %u saw another variant "
					   "than the stored one",
					   u);
	}
	printf("flags: %d workers, %d requests, %ld first assignments, %ld "
	       "lost ADD races (the winner's variant was used)\n",
	       ex.workers, ex.workers * REQUESTS, atomic_load(&s->assigned),
	       atomic_load(&s->lost_races));
	if (atomic_load(&s->assigned) != users)
		return example_end(false, "%ld assignments for %d users",
				   atomic_load(&s->assigned), users);
	return example_end(true,
			   "each of %d users saw exactly one variant; "
			   "the flag never went back to off",
			   users);
}
