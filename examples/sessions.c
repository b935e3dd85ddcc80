/* SPDX-License-Identifier: MIT */
/*
 * sessions.c - web sessions shared by every worker process: create,
 * validate, refresh (a sliding TTL), log out, and a count of the live
 * sessions that stays right.
 *
 * THE PATTERN.
 *	login:	  kvshm_put(KVSHM_ADD) "session:<token>" with TTL SESSION_TTL
 *		  (ADD: a token is never silently reused), then
 *		  kvshm_incr("sessions:live", +1).
 *	validate: kvshm_get() the session, then kvshm_expire() it to
 *		  SESSION_TTL from now: a session expires only after
 *		  SESSION_TTL without a request. -ENOENT from either: it is
 *		  over (logged out or expired).
 *	logout:	  kvshm_delete() it.
 * The live counter must go down once per session, however it ended, and
 * an expiry has no one to do it. So whoever first sees a session over
 * (its logout, a request that finds it expired, a periodic sweep) claims
 * its end with kvshm_put(KVSHM_ADD) "ended:<token>" and only the winner
 * decrements. The claim must outlive any chance of seeing the token again
 * (here: never expires; a day would do for real tokens).
 *
 * THE NAIVE VERSIONS RACE: "if exists then decrement" on logout counts a
 * session twice when its logout and its expiry are noticed at once;
 * get + set of the counter loses updates; and refreshing with a get and a
 * set of the whole session can bring a logged-out session back to life.
 *
 * THE RUN. Each worker keeps one busy user's session alive by refreshing
 * it on every request, lets visitors log in, validates random sessions of
 * every worker and logs some of its own out, for RUN_MS. Then the parent
 * claims the end of every session that expired unnoticed. Invariant: the
 * live counter equals the number of sessions still alive, no ended session
 * is alive, and the busy sessions never expired while being refreshed.
 *
 *   build/release/examples/sessions [WORKERS]
 */
#include <stdatomic.h>

#include "example.h"

#define RUN_MS 400
#define SESSION_TTL_MS 100
#define LIVE "sessions:live"

struct tally {
	atomic_long logins, logouts, expired, longest_ms;
};

static size_t session_key(char *key, size_t len, const char *prefix, int w,
			  int64_t n)
{
	return (size_t)snprintf(key, len, "%s:%d.%" PRId64, prefix, w, n);
}

/* Log in as session w.n (w: the worker that issued it). */
static void login(struct kvshm *kv, int w, int64_t n, struct tally *t)
{
	const struct kvshm_write add = { .mode = KVSHM_ADD,
					 .ttl_ms = SESSION_TTL_MS };
	char key[48], val[32], issued[32];
	size_t klen = session_key(key, sizeof(key), "session", w, n);
	int vlen = snprintf(val, sizeof(val), "user=%d.%" PRId64, w, n);

	TRY(kvshm_put(kv, key, klen, val, (size_t)vlen, &add, NULL));
	TRY(kvshm_incr(kv, LIVE, strlen(LIVE), 1, KVSHM_TTL_NEVER, NULL));
	/* others may now pick tokens w.0 .. w.n */
	snprintf(issued, sizeof(issued), "issued:%d", w);
	TRY(kvshm_incr(kv, issued, strlen(issued), 1, KVSHM_TTL_NEVER, NULL));
	atomic_fetch_add(&t->logins, 1);
}

/* Session w.n is over: the first to claim it decrements the counter. */
static bool end_session(struct kvshm *kv, int w, int64_t n)
{
	const struct kvshm_write add = { .mode = KVSHM_ADD,
					 .ttl_ms = KVSHM_TTL_NEVER };
	char key[48];
	size_t klen = session_key(key, sizeof(key), "ended", w, n);
	int err = kvshm_put(kv, key, klen, "", 0, &add, NULL);

	if (err == -EEXIST)
		return false; /* someone else ended it */
	TRY(err);
	TRY(kvshm_incr(kv, LIVE, strlen(LIVE), -1, KVSHM_TTL_NEVER, NULL));
	return true;
}

/* A request with session w.n: true if it is valid (and now refreshed). */
static bool validate(struct kvshm *kv, int w, int64_t n, struct tally *t)
{
	char key[48], val[32];
	size_t klen = session_key(key, sizeof(key), "session", w, n);
	int err = kvshm_get(kv, key, klen, val, sizeof(val), NULL);

	if (err == 0)
		err = kvshm_expire(kv, key, klen, SESSION_TTL_MS);
	if (err == 0)
		return true;
	if (err != -ENOENT)
		TRY(err);
	if (end_session(kv, w, n))
		atomic_fetch_add(&t->expired, 1); /* or logged out meanwhile */
	return false;
}

static void logout(struct kvshm *kv, int w, int64_t n, struct tally *t)
{
	char key[48];
	size_t klen = session_key(key, sizeof(key), "session", w, n);
	int err = kvshm_delete(kv, key, klen);

	if (err != -ENOENT) /* -ENOENT: it had expired already */
		TRY(err);
	if (end_session(kv, w, n))
		atomic_fetch_add(&t->logouts, 1);
}

static int64_t issued(struct kvshm *kv, int w)
{
	char key[32];
	int64_t n;
	int err;

	snprintf(key, sizeof(key), "issued:%d", w);
	err = kvshm_counter(kv, key, strlen(key), &n);
	if (err != -ENOENT)
		TRY(err);
	return n; /* 0 if none yet */
}

/* Worker id's busy user (session id.busy) makes a request every
 * millisecond and never logs out: the session may expire only if the worker
 * stalled for longer than the TTL. Other users log in, make requests to
 * any worker, and some log out. */
static int worker(struct kvshm *kv, int id, void *arg)
{
	struct tally *t = arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
	int64_t end = now_ms() + RUN_MS, busy = 0, next = 0, born, refreshed;

	login(kv, id, next++, t);
	born = refreshed = now_ms();
	while (now_ms() < end) {
		int64_t before = now_ms(), len;
		long old;
		int w = (int)(rnd(&seed) % (uint64_t)ex.workers);
		int64_t issued_w = issued(kv, w);

		if (validate(kv, id, busy, t)) {
			refreshed = before; /* expires >= before + TTL */
			len = refreshed - born;
			while (len > (old = atomic_load(&t->longest_ms)) &&
			       !atomic_compare_exchange_weak(&t->longest_ms,
							     &old, len))
				;
		} else if (now_ms() - refreshed < SESSION_TTL_MS) {
			fprintf(stderr,
				"worker %d: session %d.%" PRId64
				" expired less than %d ms after its "
				"refresh\n",
				id, id, busy, SESSION_TTL_MS);
			return 1;
		} else { /* the process was stalled longer than the TTL */
			busy = next;
			login(kv, id, next++, t);
			born = refreshed = now_ms();
		}
		if (rnd(&seed) % 4 == 0) /* a visitor logs in */
			login(kv, id, next++, t);
		if (issued_w > 0) /* a request with someone's session */
			validate(kv, w, (int64_t)(rnd(&seed) % issued_w), t);
		if (rnd(&seed) % 8 == 0 && next > 1) { /* a visitor leaves */
			int64_t n = (int64_t)(rnd(&seed) % (uint64_t)next);

			if (n != busy)
				logout(kv, id, n, t);
		}
		sleep_ms(1);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct tally *t;
	int64_t live, alive = 0, reaped = 0, total = 0;
	int rc = example_start("sessions", argc, argv, NULL);

	if (rc)
		return rc;
	t = shared_alloc(sizeof(*t));
	example_fork(worker, t);
	if (!example_wait())
		return example_end(false, "a worker failed");

	/* the sweep: end every session that expired unnoticed */
	for (int w = 0; w < ex.workers; w++) {
		int64_t n_w = issued(ex.kv, w);

		total += n_w;
		for (int64_t n = 0; n < n_w; n++) {
			char key[48];
			size_t klen =
				session_key(key, sizeof(key), "session", w, n);
			int is_live = kvshm_exists(ex.kv, key, klen), ended;

			klen = session_key(key, sizeof(key), "ended", w, n);
			ended = kvshm_exists(ex.kv, key, klen);
			TRY(is_live);
			TRY(ended);
			if (is_live && ended)
				return example_end(false,
						   "session %d.%" PRId64
						   " is alive after "
						   "its end",
						   w, n);
			if (!is_live && !ended && end_session(ex.kv, w, n))
				reaped++;
			alive += is_live && !ended;
		}
	}
	TRY(kvshm_counter(ex.kv, LIVE, strlen(LIVE), &live));
	printf("sessions: %d workers, %" PRId64 " logins (%ld counted), %ld "
	       "logouts, %ld seen expired, %" PRId64
	       " swept at the end; a busy "
	       "session lived %ld ms on a %d ms TTL\n",
	       ex.workers, total, atomic_load(&t->logins),
	       atomic_load(&t->logouts), atomic_load(&t->expired), reaped,
	       atomic_load(&t->longest_ms), SESSION_TTL_MS);
	if (total != atomic_load(&t->logins))
		return example_end(false, "issued counters do not match the "
					  "logins");
	return example_end(live == alive,
			   "live-session counter %" PRId64
			   " %s sessions alive %" PRId64,
			   live, live == alive ? "==" : "!=", alive);
}
