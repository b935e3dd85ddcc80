/* SPDX-License-Identifier: MIT */
/*
 * ratelimit.c - per-client rate limits that hold across every process:
 * a fixed window with kvshm_incr(), and a token bucket with a
 * compare-and-swap loop.
 *
 * FIXED WINDOW (LIMIT requests per WINDOW_MS). The window is the key:
 *	w = now / WINDOW_MS;
 *	kvshm_incr(kv, "rl:<client>:<w>", 1, 2 * WINDOW_MS, &n);
 *	allow iff n <= LIMIT, and the clock is still in window w.
 * incr is atomic across processes, so the n-th request of a window gets n,
 * exactly once. The initial TTL makes old windows delete themselves; it is
 * two windows long, so a window's counter outlives the window, and a
 * request delayed until after its window ends is refused (else it could
 * meet a counter that had expired and been created afresh at 1).
 *
 * TOKEN BUCKET (BURST tokens, refilled at RATE per second). The bucket is
 * one value {tokens, last refill time}:
 *	1. kvshm_get_ex() it (item.cas is its version), then read the clock;
 *	2. refill it for the time since its last refill; no whole token left:
 *	   refuse, without writing anything;
 *	3. take a token and write it back with KVSHM_CAS and cas = item.cas
 *	   (KVSHM_ADD, as a full bucket, if there was none);
 *	4. -ESTALE (-EEXIST): another process took a token meanwhile; retry.
 * The TTL is the time a bucket takes to fill up: an idle client's bucket
 * disappears when it would be full anyway.
 *
 * THE NAIVE VERSIONS RACE:  n = get(); if (n < LIMIT) set(n + 1);  lets
 * every process that read the same n through; and a bucket read, refilled
 * and written back with a plain set hands the same token to every process
 * that read it before the first set.
 *
 * THE RUN. N workers send requests for CLIENTS clients as fast as they can
 * for RUN_MS, and log each grant (window, or time of the bucket) in memory
 * shared outside the store. Invariant: no client got more than LIMIT in
 * any window, nor more than BURST + RATE * t tokens in any t seconds.
 *
 *   build/release/examples/ratelimit [WORKERS]
 */
#include "example.h"

#define CLIENTS 4
#define RUN_MS 500
#define WINDOW_MS 100                 /* fixed window: */
#define LIMIT 20                      /*   requests per window */
#define RATE 100                      /* token bucket: tokens per second, */
#define BURST 10                      /*   and at most this many at once */
#define FULL_MS (BURST * 1000 / RATE) /* an empty bucket fills up in this */
#define WINDOWS (RUN_MS / WINDOW_MS + 3)
#define MAX_GRANTS 4096

/* ---- the two limiters ---------------------------------------------------- */

/* Fixed window: true if allowed; *window gets the window it counted in. */
static bool window_allow(struct kvshm *kv, unsigned client, int64_t *window)
{
	int64_t w = now_ms() / WINDOW_MS, n;
	char key[48];
	size_t klen =
		(size_t)snprintf(key, sizeof(key), "rl:%u:%" PRId64, client, w);

	TRY(kvshm_incr(kv, key, klen, 1, 2 * WINDOW_MS, &n));
	*window = w;
	return n <= LIMIT && now_ms() / WINDOW_MS == w;
}

/* A token bucket's value; tokens in thousandths, so that a refill of
 * RATE per second is exact for every whole millisecond. */
struct bucket {
	int64_t milli_tokens;
	int64_t last_ms; /* time of the last refill */
};

/* Token bucket: true if a token was taken; *when gets the bucket's time. */
static bool bucket_take(struct kvshm *kv, unsigned client, int64_t *when)
{
	char key[32];
	size_t klen = (size_t)snprintf(key, sizeof(key), "tb:%u", client);

	for (;;) {
		struct kvshm_write w = { .ttl_ms = FULL_MS };
		struct kvshm_item it;
		struct bucket b;
		int err = kvshm_get_ex(kv, key, klen, &b, sizeof(b), &it, 0);
		int64_t now = now_ms(); /* after the read: never before b's */

		if (err == -ENOENT) { /* none, or idle long enough to be full */
			b = (struct bucket){ BURST * 1000, now };
			w.mode = KVSHM_ADD;
		} else {
			TRY(err);
			if (now > b.last_ms) {
				b.milli_tokens += (now - b.last_ms) * RATE;
				if (b.milli_tokens > BURST * 1000)
					b.milli_tokens = BURST * 1000;
				b.last_ms = now;
			}
			w.mode = KVSHM_CAS;
			w.cas = it.cas;
		}
		if (b.milli_tokens < 1000)
			return false;
		b.milli_tokens -= 1000;
		err = kvshm_put(kv, key, klen, &b, sizeof(b), &w, NULL);
		if (err == 0) {
			*when = b.last_ms;
			return true;
		}
		if (err != -ESTALE && err != -EEXIST)
			TRY(err);
	}
}

/* ---- the run --------------------------------------------------------------- */

struct grant {
	int64_t at; /* window number, or bucket time in ms */
	uint32_t client;
	bool bucket;
};

struct grant_log {
	long n;
	long refused;
	struct grant g[MAX_GRANTS];
};

static int worker(struct kvshm *kv, int id, void *arg)
{
	struct grant_log *log = (struct grant_log *)arg + id;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
	int64_t end = now_ms() + RUN_MS, at;

	while (now_ms() < end) {
		unsigned client = (unsigned)(rnd(&seed) % CLIENTS);

		for (int bucket = 0; bucket < 2; bucket++) {
			bool ok = bucket ? bucket_take(kv, client, &at) :
					   window_allow(kv, client, &at);

			if (!ok) {
				log->refused++;
				continue;
			}
			if (log->n == MAX_GRANTS) {
				fprintf(stderr,
					"worker %d: more grants than "
					"the limits allow\n",
					id);
				return 1;
			}
			log->g[log->n++] = (struct grant){ at, client, bucket };
		}
	}
	return 0;
}

static int by_time(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Check every client's bucket grants, sorted by time: in any [t_i, t_j]
 * at most BURST + RATE * (t_j - t_i) / 1000 of them. */
static bool bucket_ok(const int64_t *t, long n, unsigned client)
{
	qsort((void *)t, (size_t)n, sizeof(*t), by_time);
	for (long i = 0; i < n; i++)
		for (long j = i; j < n; j++)
			if ((j - i + 1) * 1000 >
			    BURST * 1000 + (t[j] - t[i]) * RATE) {
				printf("client %u: %ld tokens in %" PRId64
				       " ms\n",
				       client, j - i + 1, t[j] - t[i]);
				return false;
			}
	return true;
}

int main(int argc, char **argv)
{
	static int64_t times[CLIENTS][MAX_GRANTS];
	static int in_window[CLIENTS][WINDOWS];
	long n_times[CLIENTS] = { 0 }, windowed = 0, bucketed = 0, refused = 0;
	struct grant_log *logs;
	int64_t first_window;
	int rc = example_start("ratelimit", argc, argv, NULL);

	if (rc)
		return rc;
	logs = shared_alloc((size_t)ex.workers * sizeof(*logs));
	first_window = now_ms() / WINDOW_MS;
	example_fork(worker, logs);
	if (!example_wait())
		return example_end(false, "a worker failed");

	/* merge the workers' logs */
	for (int w = 0; w < ex.workers; w++) {
		refused += logs[w].refused;
		for (long i = 0; i < logs[w].n; i++) {
			const struct grant *g = &logs[w].g[i];
			int64_t win = g->at - first_window;

			if (g->bucket) {
				if (n_times[g->client] == MAX_GRANTS)
					return example_end(false,
							   "too many "
							   "bucket grants");
				times[g->client][n_times[g->client]++] = g->at;
				bucketed++;
				continue;
			}
			windowed++;
			if (win < 0 || win >= WINDOWS)
				return example_end(false,
						   "a grant in window "
						   "%" PRId64 " of the run",
						   win);
			if (++in_window[g->client][win] > LIMIT)
				return example_end(false,
						   "client %u got more "
						   "than %d in a window",
						   g->client, LIMIT);
		}
	}
	printf("ratelimit: %d workers, %d clients, %d ms: %ld window grants, "
	       "%ld bucket grants, %ld refusals\n",
	       ex.workers, CLIENTS, RUN_MS, windowed, bucketed, refused);
	for (unsigned c = 0; c < CLIENTS; c++)
		if (!bucket_ok(times[c], n_times[c], c))
			return example_end(false,
					   "client %u's bucket gave more "
					   "than BURST + RATE * t",
					   c);
	return example_end(true,
			   "no client got more than %d per %d ms window, "
			   "or more than %d + %d/s from its bucket",
			   LIMIT, WINDOW_MS, BURST, RATE);
}
