/* SPDX-License-Identifier: MIT */
/*
 * leaderboard.c - a top-10 board that many processes update, kept in one
 * key with a compare-and-swap loop.
 *
 * THE PATTERN. To submit a score:
 *	1. kvshm_get_ex() the board; item.cas is the version we read.
 *	2. If the score does not make the top 10, stop: most submissions end
 *	   here, with a lock-free read and no write.
 *	3. Insert it and write the board back with mode KVSHM_CAS and
 *	   cas = item.cas (KVSHM_ADD if there was no board yet).
 *	4. -ESTALE (or -EEXIST): another process wrote the board between 1 and
 *	   3; nothing was written, go back to 1 with the new board.
 * Each write is based on the board it replaces, so no submission is lost.
 *
 * THE NAIVE VERSION RACES:  board = get(); insert(board, score);
 * set(board);  Two processes read the same board, each inserts its own
 * score, and the second set throws away the first one's score.
 *
 * THE RUN. Each worker submits SUBMISSIONS pseudo-random scores from a
 * seed of its own, so the parent can regenerate every score submitted.
 * Invariant: the final board is exactly the true top 10 of all of them
 * (ties ordered by worker, then by submission).
 *
 *   build/release/examples/leaderboard [WORKERS]
 */
#include "example.h"

#define BOARD "leaderboard:top10"
#define TOP 10
#define SUBMISSIONS 2000

struct entry {
	int64_t score;
	uint32_t worker, seq; /* who submitted it: unique, breaks ties */
};

/* The value stored under BOARD, byte for byte (no padding). */
struct board {
	uint32_t n, unused;
	struct entry e[TOP]; /* best first */
};

static bool better(const struct entry *a, const struct entry *b)
{
	if (a->score != b->score)
		return a->score > b->score;
	if (a->worker != b->worker)
		return a->worker < b->worker;
	return a->seq < b->seq;
}

/* Insert e if it makes the top; false if it does not. */
static bool board_insert(struct board *b, const struct entry *e)
{
	uint32_t i = b->n < TOP ? b->n : TOP - 1;

	if (b->n == TOP && !better(e, &b->e[TOP - 1]))
		return false;
	for (; i > 0 && better(e, &b->e[i - 1]); i--)
		b->e[i] = b->e[i - 1];
	b->e[i] = *e;
	if (b->n < TOP)
		b->n++;
	return true;
}

/* Submit e; returns the number of CAS attempts that lost a race. */
static long submit(struct kvshm *kv, const struct entry *e)
{
	for (long lost = 0;; lost++) {
		struct kvshm_write w = { .ttl_ms = KVSHM_TTL_NEVER };
		struct kvshm_item it;
		struct board b = { 0 };
		int err = kvshm_get_ex(kv, BOARD, strlen(BOARD), &b, sizeof(b),
				       &it, 0);

		if (err == -ENOENT) {
			b = (struct board){ 0 };
			w.mode = KVSHM_ADD;
		} else {
			TRY(err);
			w.mode = KVSHM_CAS;
			w.cas = it.cas;
		}
		if (!board_insert(&b, e))
			return lost;
		err = kvshm_put(kv, BOARD, strlen(BOARD), &b, sizeof(b), &w,
				NULL);
		if (err != -ESTALE && err != -EEXIST) {
			TRY(err);
			return lost;
		}
	}
}

static struct entry nth_score(uint64_t *seed, int worker, uint32_t seq)
{
	return (struct entry){ .score = (int64_t)(rnd(seed) % 1000000),
			       .worker = (uint32_t)worker,
			       .seq = seq };
}

static int worker(struct kvshm *kv, int id, void *arg)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
	long *lost = arg;

	for (uint32_t i = 0; i < SUBMISSIONS; i++) {
		struct entry e = nth_score(&seed, id, i);

		lost[id] += submit(kv, &e);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct board truth = { 0 }, got = { 0 };
	long *lost, lost_all = 0;
	int rc = example_start("leaderboard", argc, argv, NULL);
	bool ok;

	if (rc)
		return rc;
	lost = shared_alloc(EXAMPLE_MAX_WORKERS * sizeof(*lost));
	example_fork(worker, lost);
	ok = example_wait();

	for (int w = 0; w < ex.workers; w++) { /* every score, again */
		uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(w + 1);

		for (uint32_t i = 0; i < SUBMISSIONS; i++) {
			struct entry e = nth_score(&seed, w, i);

			board_insert(&truth, &e);
		}
		lost_all += lost[w];
	}
	TRY(kvshm_get(ex.kv, BOARD, strlen(BOARD), &got, sizeof(got), NULL));
	printf("leaderboard: %d workers, %d scores, %ld CAS retries\n",
	       ex.workers, ex.workers * SUBMISSIONS, lost_all);
	for (uint32_t i = 0; i < got.n; i++)
		printf("  %2u. %7" PRId64 "  (worker %u, #%u)\n", i + 1,
		       got.e[i].score, got.e[i].worker, got.e[i].seq);
	if (!ok)
		return example_end(false, "a worker failed");
	if (memcmp(&truth, &got, sizeof(got)) != 0)
		return example_end(false, "the board is not the true top %d",
				   TOP);
	return example_end(true,
			   "the board is the true top %d of all %d scores", TOP,
			   ex.workers * SUBMISSIONS);
}
