/* SPDX-License-Identifier: MIT */
/*
 * eventlog.c - a capped event log that many processes append to: the last
 * CAP events, in order, in a fixed amount of memory.
 *
 * THE PATTERN. A ring of CAP slots, each slot its own key, and a sequence
 * counter:
 *	append:	seq = kvshm_incr(kv, "log:seq", 1, ...);
 *		write the event (which carries seq) to "log:slot:<seq % CAP>",
 *		unless the slot already holds a newer event.
 *	read:	head = the counter; the events are slots head-CAP+1 .. head,
 *		each slot checked to hold the seq expected there.
 * incr hands out every number exactly once, so no two appends share a
 * number, and each append writes its own key, so appends do not contend
 * for one big value. Two appends CAP apart land on the same slot; if the
 * older one is slower, it must not overwrite the newer one, so the slot is
 * written with a compare-and-swap loop (kvshm_get_ex() for its version,
 * KVSHM_CAS put; KVSHM_ADD for an empty slot) that gives up when the slot
 * holds a newer seq. A reader that meets a slot still holding an older seq
 * has met an append in flight.
 *
 * THE NAIVE VERSIONS RACE: the whole log in one value, rewritten as
 * get, append, trim, set, loses every event appended by another process
 * between the get and the set; a ring written with plain sets lets a slow
 * older event overwrite a newer one.
 *
 * THE RUN. N workers append EVENTS events each and note, in memory shared
 * outside the store, who got which seq. Invariant: afterwards the log holds
 * exactly the last CAP events, each once, in seq order, each the event its
 * writer wrote, and each worker's events in the order it appended them.
 *
 *   build/release/examples/eventlog [WORKERS]
 */
#include "example.h"

#define SEQ "log:seq"
#define CAP 64
#define EVENTS 2000

struct event {
	int64_t seq;
	uint32_t worker, n; /* the n-th event of that worker */
	char text[48];
};

static int slot_key(char *key, size_t len, int64_t seq)
{
	return snprintf(key, len, "log:slot:%d", (int)(seq % CAP));
}

static void append(struct kvshm *kv, struct event *ev)
{
	char key[32];
	size_t klen;

	TRY(kvshm_incr(kv, SEQ, strlen(SEQ), 1, KVSHM_TTL_NEVER, &ev->seq));
	klen = (size_t)slot_key(key, sizeof(key), ev->seq);
	for (;;) {
		struct kvshm_write w = { .ttl_ms = KVSHM_TTL_NEVER };
		struct kvshm_item it;
		struct event old;
		int err =
			kvshm_get_ex(kv, key, klen, &old, sizeof(old), &it, 0);

		if (err == -ENOENT) {
			w.mode = KVSHM_ADD;
		} else {
			TRY(err);
			if (old.seq > ev->seq)
				return; /* a newer event has the slot already */
			w.mode = KVSHM_CAS;
			w.cas = it.cas;
		}
		err = kvshm_put(kv, key, klen, ev, sizeof(*ev), &w, NULL);
		if (err != -ESTALE && err != -EEXIST) {
			TRY(err);
			return;
		}
	}
}

/* Who was given each seq (index seq - 1), written by the appender. */
struct origin {
	uint32_t worker, n;
};

static int worker(struct kvshm *kv, int id, void *arg)
{
	struct origin *origin = arg;

	for (uint32_t n = 0; n < EVENTS; n++) {
		struct event ev = { .worker = (uint32_t)id, .n = n };

		snprintf(ev.text, sizeof(ev.text), "worker %d: event %u", id,
			 n);
		append(kv, &ev);
		origin[ev.seq - 1] = (struct origin){ (uint32_t)id, n };
	}
	return 0;
}

/* Read the log and check it against origin; NULL if it is right. */
static const char *check_log(struct kvshm *kv, const struct origin *origin,
			     int64_t head)
{
	int64_t first = head > CAP ? head - CAP + 1 : 1;
	uint32_t last_n[EXAMPLE_MAX_WORKERS];
	static char why[128];

	memset(last_n, 0xff, sizeof(last_n)); /* no event seen yet */
	for (int64_t seq = first; seq <= head; seq++) {
		const struct origin *o = &origin[seq - 1];
		struct event ev;
		char key[32], text[48];
		size_t klen = (size_t)slot_key(key, sizeof(key), seq);

		snprintf(why, sizeof(why), "event %" PRId64 " ", seq);
		if (kvshm_get(kv, key, klen, &ev, sizeof(ev), NULL) != 0)
			return strcat(why, "is missing");
		if (ev.seq != seq)
			return strcat(why, "is not in its slot");
		snprintf(text, sizeof(text), "worker %u: event %u", o->worker,
			 o->n);
		if (ev.worker != o->worker || ev.n != o->n ||
		    strcmp(ev.text, text) != 0)
			return strcat(why, "is not the event appended");
		if (last_n[o->worker] != UINT32_MAX &&
		    last_n[o->worker] >= o->n)
			return strcat(why, "is out of its writer's order");
		last_n[o->worker] = o->n;
		if (seq == first || seq == head)
			printf("  seq %4" PRId64 "  %s\n", seq, ev.text);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct origin *origin;
	const char *why;
	int64_t head = 0, total;
	int rc = example_start("eventlog", argc, argv, NULL);

	if (rc)
		return rc;
	total = (int64_t)ex.workers * EVENTS;
	origin = shared_alloc((size_t)total * sizeof(*origin));
	example_fork(worker, origin);
	if (!example_wait())
		return example_end(false, "a worker failed");

	TRY(kvshm_counter(ex.kv, SEQ, strlen(SEQ), &head));
	printf("eventlog: %d workers appended %" PRId64 " events; the log "
	       "keeps the last %d:\n",
	       ex.workers, head, CAP);
	if (head != total)
		return example_end(false,
				   "%" PRId64 " events numbered, %" PRId64
				   " appended",
				   head, total);
	why = check_log(ex.kv, origin, head);
	if (why)
		return example_end(false, "%s", why);
	return example_end(true,
			   "the last %d of %" PRId64 " events are all "
			   "there, in order, none twice",
			   CAP, total);
}
