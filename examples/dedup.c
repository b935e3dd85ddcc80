/* SPDX-License-Identifier: MIT */
/*
 * dedup.c - process each message once although the queue delivers it more
 * than once (at-least-once delivery: redeliveries after a timeout, producer
 * retries, several consumers on one feed).
 *
 * THE PATTERN. Before processing message ID, claim it:
 *
 *	kvshm_put(kv, "seen:ID", ...,
 *		  &(struct kvshm_write){ .mode = KVSHM_ADD, .ttl_ms = WINDOW })
 *
 * 0: the first delivery, process it. -EEXIST: a duplicate, drop it. ADD is
 * one atomic check-and-insert, so of any number of processes racing on the
 * same ID exactly one wins. The TTL bounds the memory the claims use; a
 * duplicate that comes more than WINDOW after the first is not caught, so
 * WINDOW must exceed the longest redelivery delay of the queue.
 *
 * THE NAIVE VERSION RACES:  if (!exists("seen:ID")) { set("seen:ID");
 * process(); }  Two consumers both find the key absent before either sets
 * it, and both process the message.
 *
 * CRASHES. A consumer that dies between its claim and the end of the
 * processing loses that message. Where that matters, claim with a short
 * lease ("processing", TTL a little over the processing time) and after
 * processing turn it into "done" with the long TTL by a KVSHM_CAS put on the
 * claim's version: a dead consumer's lease expires and the next redelivery
 * is processed.
 *
 * THE RUN. Every message is delivered twice to each worker, in a shuffled
 * order; the workers count in memory shared outside the store how often
 * each message was processed. Invariant: every message exactly once.
 *
 *   build/release/examples/dedup [WORKERS]
 */
#include <stdatomic.h>

#include "example.h"

#define MESSAGES 2000
#define WINDOW_MS (60 * 1000) /* how long a claim catches duplicates */

struct tally {
	atomic_int processed[MESSAGES]; /* times each message was processed */
	atomic_long duplicates;         /* deliveries dropped as duplicates */
};

/* The consumer: true if this delivery is the first of message id. */
static bool first_delivery(struct kvshm *kv, unsigned id)
{
	const struct kvshm_write claim = { .mode = KVSHM_ADD,
					   .ttl_ms = WINDOW_MS };
	char key[32];
	size_t klen = (size_t)snprintf(key, sizeof(key), "seen:%u", id);
	int err = kvshm_put(kv, key, klen, "1", 1, &claim, NULL);

	if (err == -EEXIST)
		return false;
	TRY(err);
	return true;
}

static int worker(struct kvshm *kv, int id, void *arg)
{
	struct tally *t = arg;
	static unsigned feed[2 * MESSAGES];
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);

	/* this worker's deliveries: every message twice, shuffled */
	for (unsigned i = 0; i < 2 * MESSAGES; i++)
		feed[i] = i % MESSAGES;
	for (unsigned i = 2 * MESSAGES - 1; i > 0; i--) {
		unsigned j = (unsigned)(rnd(&seed) % (i + 1)), m = feed[i];

		feed[i] = feed[j];
		feed[j] = m;
	}

	for (unsigned i = 0; i < 2 * MESSAGES; i++) {
		if (first_delivery(kv, feed[i])) /* then process it: */
			atomic_fetch_add(&t->processed[feed[i]], 1);
		else
			atomic_fetch_add(&t->duplicates, 1);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct tally *t;
	long once = 0;
	int rc = example_start("dedup", argc, argv, NULL);
	bool ok;

	if (rc)
		return rc;
	t = shared_alloc(sizeof(*t));
	example_fork(worker, t);
	ok = example_wait();

	for (unsigned m = 0; m < MESSAGES; m++) {
		int n = atomic_load(&t->processed[m]);

		if (n != 1 && once == m) /* say which was the first */
			printf("message %u was processed %d times\n", m, n);
		once += n == 1;
	}
	printf("dedup: %d workers, %d messages, %ld deliveries, %ld duplicates "
	       "dropped\n",
	       ex.workers, MESSAGES, 2L * MESSAGES * ex.workers,
	       atomic_load(&t->duplicates));
	if (!ok)
		return example_end(false, "a worker failed");
	return example_end(once == MESSAGES,
			   "every message processed exactly once (%ld of %d)",
			   once, MESSAGES);
}
