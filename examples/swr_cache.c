/* SPDX-License-Identifier: MIT */
/*
 * swr_cache.c - a response cache with stale-while-revalidate: fresh
 * responses are served from the cache; once one goes stale, it is still
 * served while exactly one process renders the new one; never a stampede of
 * every process rendering the same page at once.
 *
 * THE PATTERN. A cached page carries its own freshness (fresh_until), and
 * its TTL is longer: FRESH_MS + STALE_MS, the time a stale copy may still
 * be served. A request:
 *	fresh copy:  serve it.
 *	stale copy:  serve it, and try to refresh it.
 *	no copy:     refresh it, or wait for the process that does.
 * Refreshing is single-flight through a lock key:
 *	1. kvshm_put(KVSHM_ADD) "lock:<page>" with a lease TTL; -EEXIST means
 *	   another process is refreshing: just serve the stale copy. The
 *	   version it returns (cas) identifies this holder.
 *	2. Read the page again: someone may have refreshed it between our
 *	   read and our lock; if it is fresh now, there is nothing to do.
 *	3. Render, and publish with KVSHM_CAS on the version read in 2
 *	   (KVSHM_ADD if there was none): even a holder whose lease ran out
 *	   can never overwrite a newer copy.
 *	4. Release with kvshm_delete_cas(lock, cas): only our own lock. If it
 *	   fails, our lease expired during the render (render took longer than
 *	   the lease): make the lease longer.
 * (A server would respond first and refresh after, or in the background;
 * here the refresh follows the response in the same call.)
 *
 * THE NAIVE VERSION STAMPEDES:  if (!(v = get()) || stale(v)) { v =
 * render(); set(v); }  Every process that sees the page stale or missing
 * renders it, at the moment the backend can least afford it.
 *
 * THE RUN. N workers serve requests for PAGES pages as fast as they can
 * for RUN_MS; a page is fresh for FRESH_MS and renders in RENDER_MS. Each
 * render records, in memory shared outside the store, which generation of
 * the page it produced. Invariant: each generation was rendered exactly
 * once (the refresh ran once per expiry) and no two renders of a page ever
 * ran at once.
 *
 *   build/release/examples/swr_cache [WORKERS]
 */
#include <stdatomic.h>

#include "example.h"

#define PAGES 3
#define RUN_MS 500
#define FRESH_MS 50
#define STALE_MS 10000 /* a stale copy may be served this long */
#define RENDER_MS 2    /* the backend's time to render a page */
#define LEASE_MS 5000  /* far longer than a render */
#define MAX_GEN 4096

struct page {
	int64_t generation; /* 1 for the first render, +1 per refresh */
	int64_t fresh_until_ms;
	char body[48];
};

struct tally {
	atomic_int renders[PAGES][MAX_GEN]; /* renders of each generation */
	atomic_int rendering[PAGES];        /* renders of a page running now */
	atomic_int most_at_once;
	atomic_long fresh, stale, waits, lease_lost;
};

/* The backend: slow, and watched by the tally. */
static void render(struct tally *t, int p, struct page *pg)
{
	int now = atomic_fetch_add(&t->rendering[p], 1) + 1;
	int most = atomic_load(&t->most_at_once);

	while (now > most &&
	       !atomic_compare_exchange_weak(&t->most_at_once, &most, now))
		;
	sleep_ms(RENDER_MS);
	if (pg->generation < MAX_GEN)
		atomic_fetch_add(&t->renders[p][pg->generation], 1);
	snprintf(pg->body, sizeof(pg->body),
		 "<h1>page %d, version %" PRId64 "</h1>", p, pg->generation);
	atomic_fetch_sub(&t->rendering[p], 1);
}

/* Refresh page p unless another process is at it; false if one is. */
static bool refresh(struct kvshm *kv, int p, struct tally *t)
{
	const struct kvshm_write lease = { .mode = KVSHM_ADD,
					   .ttl_ms = LEASE_MS };
	struct kvshm_write publish = { .ttl_ms = FRESH_MS + STALE_MS };
	char key[32], lock[32];
	size_t klen = (size_t)snprintf(key, sizeof(key), "page:%d", p);
	size_t llen = (size_t)snprintf(lock, sizeof(lock), "lock:page:%d", p);
	struct kvshm_item it;
	struct page pg;
	uint64_t mine;
	int err = kvshm_put(kv, lock, llen, "", 0, &lease, &mine);

	if (err == -EEXIST)
		return false;
	TRY(err);
	err = kvshm_get_ex(kv, key, klen, &pg, sizeof(pg), &it, 0);
	if (err == 0 && now_ms() < pg.fresh_until_ms)
		goto release; /* refreshed by someone else just now */
	if (err == -ENOENT) {
		pg.generation = 0;
		publish.mode = KVSHM_ADD;
	} else {
		TRY(err);
		publish.mode = KVSHM_CAS;
		publish.cas = it.cas;
	}
	pg.generation++;
	render(t, p, &pg);
	pg.fresh_until_ms = now_ms() + FRESH_MS;
	err = kvshm_put(kv, key, klen, &pg, sizeof(pg), &publish, NULL);
	if (err != -ESTALE && err != -EEXIST) /* those: a newer copy won */
		TRY(err);
release:
	if (kvshm_delete_cas(kv, lock, llen, mine) != 0)
		atomic_fetch_add(&t->lease_lost, 1);
	return true;
}

static void serve(struct kvshm *kv, int p, struct tally *t)
{
	char key[32];
	size_t klen = (size_t)snprintf(key, sizeof(key), "page:%d", p);
	struct page pg;

	for (;;) {
		int err = kvshm_get(kv, key, klen, &pg, sizeof(pg), NULL);

		if (err == 0 && now_ms() < pg.fresh_until_ms) {
			atomic_fetch_add(&t->fresh, 1); /* serve pg */
			return;
		}
		if (err == 0) {
			atomic_fetch_add(&t->stale, 1); /* serve pg, then */
			refresh(kv, p, t);
			return;
		}
		if (err != -ENOENT)
			TRY(err);
		if (!refresh(kv, p, t)) { /* nothing to serve yet: wait */
			atomic_fetch_add(&t->waits, 1);
			sleep_ms(1);
		}
	}
}

static int worker(struct kvshm *kv, int id, void *arg)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
	int64_t end = now_ms() + RUN_MS;

	while (now_ms() < end)
		serve(kv, (int)(rnd(&seed) % PAGES), arg);
	return 0;
}

int main(int argc, char **argv)
{
	struct tally *t;
	long renders = 0;
	int rc = example_start("swr_cache", argc, argv, NULL);

	if (rc)
		return rc;
	t = shared_alloc(sizeof(*t));
	example_fork(worker, t);
	if (!example_wait())
		return example_end(false, "a worker failed");

	for (int p = 0; p < PAGES; p++) {
		char key[32];
		size_t klen = (size_t)snprintf(key, sizeof(key), "page:%d", p);
		struct page pg;

		TRY(kvshm_get(ex.kv, key, klen, &pg, sizeof(pg), NULL));
		if (pg.generation >= MAX_GEN)
			return example_end(false, "page %d: too many renders",
					   p);
		for (int64_t g = 1; g < MAX_GEN; g++) {
			int n = atomic_load(&t->renders[p][g]);

			renders += n;
			if (n != (g <= pg.generation))
				return example_end(false,
						   "page %d: version "
						   "%" PRId64 " rendered "
						   "%d times",
						   p, g, n);
		}
		printf("  page %d: %s\n", p, pg.body);
	}
	printf("swr_cache: %d workers: %ld served fresh, %ld served stale, "
	       "%ld waits for a first render, %ld renders\n",
	       ex.workers, atomic_load(&t->fresh), atomic_load(&t->stale),
	       atomic_load(&t->waits), renders);
	if (atomic_load(&t->most_at_once) != 1)
		return example_end(false, "%d renders of a page at once",
				   atomic_load(&t->most_at_once));
	if (atomic_load(&t->lease_lost))
		return example_end(false, "%ld leases expired during a render",
				   atomic_load(&t->lease_lost));
	return example_end(true, "every version of every page rendered "
				 "exactly once, never two renders at once");
}
