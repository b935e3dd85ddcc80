/* SPDX-License-Identifier: MIT */
/*
 * demo.c - kvshm in one page. A prefork "server": 4 worker processes share
 * one store for request counters, sessions with a sliding TTL, a
 * per-client rate limit and a response cache, for about 2 seconds. After 1
 * second the parent kills worker 0 with SIGKILL (maybe in the middle of a
 * write) and checks the store; the others carry on. At the end the parent
 * prints what the workers saw and verifies that no acknowledged increment
 * was lost. Exit status 0: every check passed.
 *
 *   demo [NAME]   (default "kvshm-demo")
 *
 * If the store NAME exists, the demo uses it and leaves it there: `make
 * demo` (examples/demo.sh) creates it with kvshm-janitor, runs the janitor
 * beside the workers, and shows the store with kvshm-stat afterwards. If
 * it does not, the demo creates it, prints the store's statistics itself,
 * and removes it at the end.
 *
 * Each pattern here has an example of its own that checks it under many
 * processes: sessions.c, ratelimit.c, swr_cache.c (a cache that also never
 * stampedes).
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, kill */

#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvshm.h>

#define WORKERS 4
#define RUN_MS 2000        /* how long the workers serve */
#define KILL_S 1           /* when worker 0 is killed */
#define CLIENTS 5000       /* client 0 is noisy: 10% of all requests */
#define RATE_LIMIT 1000    /* requests per client per 1 s window */
#define SESSION_TTL_MS 500 /* idle sessions expire after this */
#define CACHE_TTL_MS 200   /* cached responses expire after this */

/* What a worker saw. Survivors store theirs under "report:<n>". */
struct report {
	int64_t requests; /* acknowledged incrs of req:worker:<n> */
	int64_t global;   /* acknowledged incrs of req:total */
	int64_t limited, new_sessions, cache_hits, add_races;
};

static int64_t now_ms(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A worker stops at the first unexpected error, with exit status 1. */
#define CHECK(call)                                                            \
	do {                                                                   \
		int err_ = (call);                                             \
		if (err_) {                                                    \
			fprintf(stderr, "worker %d: %s: %s\n", id, #call,      \
				kvshm_strerror(err_));                         \
			_exit(1);                                              \
		}                                                              \
	} while (0)

/* One synthetic request from a random client. */
static void handle_request(struct kvshm *kv, int id, struct report *r)
{
	unsigned client = rand() % 10 == 0 ? 0 : 1 + rand() % (CLIENTS - 1);
	const struct kvshm_write add = { .mode = KVSHM_ADD,
					 .ttl_ms = CACHE_TTL_MS };
	const struct kvshm_write new_session = { .mode = KVSHM_ADD,
						 .ttl_ms = SESSION_TTL_MS };
	char key[64], buf[128];
	size_t klen, vlen;
	int64_t n;
	int err;

	/* 1. count it: this worker's counter first, then the global one */
	klen = (size_t)snprintf(key, sizeof(key), "req:worker:%d", id);
	CHECK(kvshm_incr(kv, key, klen, 1, KVSHM_TTL_NEVER, &n));
	r->requests++;
	CHECK(kvshm_incr(kv, "req:total", 9, 1, KVSHM_TTL_NEVER, &n));
	r->global++;

	/* 2. fixed-window rate limit: one counter per client and second,
	 * created with a TTL so that old windows clean themselves up */
	klen = (size_t)snprintf(key, sizeof(key), "rl:%u:%" PRId64, client,
				now_ms(CLOCK_REALTIME) / 1000);
	CHECK(kvshm_incr(kv, key, klen, 1, 2000, &n));
	if (n > RATE_LIMIT) {
		r->limited++;
		return;
	}

	/* 3. the client's session: refresh its TTL (it expires after
	 * SESSION_TTL_MS without a request), or start a new one; ADD, so
	 * that of two workers starting it at once the first one wins */
	klen = (size_t)snprintf(key, sizeof(key), "sess:%u", client);
	err = kvshm_get(kv, key, klen, buf, sizeof(buf), &vlen);
	if (err == 0)
		err = kvshm_expire(kv, key, klen, SESSION_TTL_MS);
	if (err == -ENOENT) { /* never seen, or expired */
		vlen = (size_t)snprintf(buf, sizeof(buf), "user=%u", client);
		err = kvshm_put(kv, key, klen, buf, vlen, &new_session, NULL);
		r->new_sessions += err == 0;
		CHECK(err == -EEXIST ? 0 : err);
	} else {
		CHECK(err);
	}

	/* 4. the response: from the cache, or rendered and added, unless
	 * another worker added it meanwhile (KVSHM_ADD: -EEXIST) */
	klen = (size_t)snprintf(key, sizeof(key), "resp:/page/%d",
				rand() % 100);
	err = kvshm_get(kv, key, klen, buf, sizeof(buf), &vlen);
	if (err == -ENOENT) {
		vlen = (size_t)snprintf(buf, sizeof(buf), "<p>%s</p>", key);
		err = kvshm_put(kv, key, klen, buf, vlen, &add, NULL);
		r->add_races += err == -EEXIST;
		CHECK(err == -EEXIST ? 0 : err);
	} else {
		CHECK(err);
		r->cache_hits++;
	}
}

static void worker(struct kvshm *kv, int id, int64_t deadline)
{
	struct report r = { 0 };
	char key[32];

	srand((unsigned)getpid());
	while (now_ms(CLOCK_MONOTONIC) < deadline)
		handle_request(kv, id, &r);
	snprintf(key, sizeof(key), "report:%d", id);
	CHECK(kvshm_set(kv, key, strlen(key), &r, sizeof(r), KVSHM_TTL_NEVER));
	_exit(0);
}

static int count_key(const void *key, size_t klen,
		     const struct kvshm_item *item, void *ctx)
{
	(void)key, (void)klen, (void)item;
	++*(int64_t *)ctx;
	return 0;
}

/* Print a check's outcome (detail, if any, ends the line); 1 if failed. */
static int verdict(int ok, const char *what, const char *detail)
{
	printf("  %-4s %s%s", ok ? "ok" : "FAIL", what, detail ? detail : "\n");
	return !ok;
}

/* kvshm_check() says what it found; a lock error leaves report empty. */
static int check_store(struct kvshm *kv, const char *when)
{
	char report[512] = "";
	int err = kvshm_check(kv, report, sizeof(report));

	if (!report[0])
		snprintf(report, sizeof(report), "%s\n", kvshm_strerror(err));
	return verdict(err == 0, when, report);
}

/* Print what the workers and the store counted; check that nothing
 * acknowledged was lost. Worker 0 counted each request in req:worker:0
 * and then in req:total, so req:total may hold one less of its requests
 * (it died in between, or during the first increment). */
static int report_and_check(struct kvshm *kv, const struct report *rep)
{
	int64_t counter[WORKERS], total = -1, sum = 0, acked = 0, sessions = 0;
	uint64_t cursor = 0;
	int exact = 1, failed = 0;
	char key[32];

	printf("\nworker  requests  rate-limited  new sessions  cache hits  "
	       "add races\n");
	for (int i = 0; i < WORKERS; i++) {
		snprintf(key, sizeof(key), "req:worker:%d", i);
		failed |= kvshm_counter(kv, key, strlen(key), &counter[i]) != 0;
		sum += counter[i];
		if (i == 0) {
			printf("%6d %9" PRId64
			       "  (killed: the store's count)\n",
			       i, counter[i]);
			continue;
		}
		acked += rep[i].global;
		exact &= counter[i] == rep[i].requests &&
			 rep[i].global == rep[i].requests;
		printf("%6d %9" PRId64 " %13" PRId64 " %13" PRId64 " %11" PRId64
		       " %10" PRId64 "\n",
		       i, rep[i].requests, rep[i].limited, rep[i].new_sessions,
		       rep[i].cache_hits, rep[i].add_races);
	}
	failed |= kvshm_counter(kv, "req:total", 9, &total) != 0;
	if (kvshm_scan(kv, "sess:", 5, &cursor, 0, count_key, &sessions) < 0)
		failed = 1;
	printf("global counter %" PRId64 ", sum of worker counters %" PRId64
	       ", sessions live %" PRId64 "\n\nchecks:\n",
	       total, sum, sessions);
	failed |= verdict(total == sum || total == sum - 1,
			  "global counter == sum of worker counters", NULL);
	failed |= verdict(exact, "survivors: counter == acknowledged incrs",
			  NULL);
	failed |= verdict(
		total - acked == counter[0] || total - acked == counter[0] - 1,
		"global - survivors' acknowledged == worker 0's", NULL);
	return failed | check_store(kv, "kvshm_check at the end: ");
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "kvshm-demo";
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct report rep[WORKERS] = { { 0 } };
	struct kvshm_stats s;
	struct kvshm *kv;
	pid_t pid[WORKERS];
	int64_t deadline;
	int err, status, failed = 0;
	bool created = false;
	char key[32];

	if (argc > 2 || (argc > 1 && argv[1][0] == '-')) {
		fprintf(stderr, "usage: demo [NAME]   (default kvshm-demo)\n");
		return 2;
	}
	err = kvshm_open(name, NULL, &kv); /* make demo created it */
	if (err == -ENOENT) {
		o.flags = KVSHM_CREATE | KVSHM_EXCL;
		o.arena_bytes = 64 << 20;
		err = kvshm_open(name, &o, &kv);
		created = err == 0;
	}
	if (err) {
		fprintf(stderr, "kvshm_open(%s): %s\n", name,
			kvshm_strerror(err));
		return 1;
	}
	printf("kvshm %s: store \"%s\"%s, %d workers for %d ms\n",
	       kvshm_version(), name, created ? " (created)" : "", WORKERS,
	       RUN_MS);
	fflush(stdout); /* or the children would print it again */

	deadline = now_ms(CLOCK_MONOTONIC) + RUN_MS;
	for (int i = 0; i < WORKERS; i++)
		if ((pid[i] = fork()) == 0)
			worker(kv, i, deadline); /* never returns */

	sleep(KILL_S);
	kill(pid[0], SIGKILL);
	waitpid(pid[0], &status, 0);
	printf("killed worker 0 (pid %d) with SIGKILL; the others go on\n",
	       (int)pid[0]);
	failed |= check_store(kv, "kvshm_check after the kill: ");

	for (int i = 1; i < WORKERS; i++) {
		snprintf(key, sizeof(key), "report:%d", i);
		if (waitpid(pid[i], &status, 0) != pid[i] ||
		    !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
		    kvshm_get(kv, key, strlen(key), &rep[i], sizeof(rep[i]),
			      NULL)) {
			printf("worker %d failed\n", i);
			failed = 1;
		}
	}
	failed |= report_and_check(kv, rep);

	if (created && kvshm_stats(kv, &s) == 0) /* else kvshm-stat shows it */
		printf("\nstore: %" PRIu64 " items, %" PRIu64
		       " KiB used, %" PRIu64 " KiB free\ngets %" PRIu64
		       " (hits %" PRIu64 ", misses %" PRIu64
		       ", hit ratio %.1f%%), sets %" PRIu64 ", incrs %" PRIu64
		       "\nevictions %" PRIu64 ", expired %" PRIu64
		       ", lock recoveries %" PRIu64 ", lock contended %" PRIu64
		       "\n",
		       s.items, s.used_bytes / 1024, s.free_bytes / 1024,
		       s.gets, s.hits, s.misses,
		       s.gets ? 100.0 * (double)s.hits / (double)s.gets : 0.0,
		       s.sets, s.incrs, s.evictions, s.expired,
		       s.lock_recoveries, s.lock_contended);

	kvshm_close(kv);
	if (created)
		kvshm_unlink(name);
	printf("%s\n", failed ? "FAILED" : "all checks passed");
	return failed;
}
