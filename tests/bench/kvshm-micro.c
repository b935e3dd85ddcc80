/* SPDX-License-Identifier: MIT */
/*
 * kvshm-micro.c - the micro-benchmark: ns/op of get (hit and miss), set
 * (overwrite) and incr (many counters, one hot counter) on one store, with
 * one and with two processes, next to the same get/set loop on a trivial
 * unsynchronised in-process hash table (the limit). Prints numbers; asserts
 * only on correctness (wrong values, lost increments, a failed
 * kvshm_check), never on time. Uses only the public API.
 *
 * HOW IT MEASURES. The parent creates a fresh store, writes the keys and
 * builds every key string and random order before anything is timed. Each
 * case forks its worker processes (also for one process, so both cases run
 * the same code); a worker warms up (reads what its loop will touch), says
 * "ready" on a pipe and blocks reading a second pipe, which the parent
 * closes once every worker is ready, so all start together. A worker runs
 * its loop in batches until its time is up, reading CLOCK_MONOTONIC once
 * per batch, and reports {ops, ns} through a third pipe. ns/op is per
 * process; Mops/s is the sum over processes of ops/s.
 *
 * READING THE TABLE. "speed-up" is Mops/s with two processes over Mops/s
 * with one; "vs in-proc" is kvshm's ns/op over the in-process table's, at
 * the same process count. The last row, a dependent multiply-add per op
 * (no memory), is the machine's own speed-up: on a VM whose two vCPUs share
 * a core, or a busy host, it is well below 2 and so is everything else.
 * The keys are visited in a random order, so with the default key set the
 * costs are mostly cache and TLB misses (the store's index is sized for
 * its arena, not for the keys); --keys 1000 shows the in-cache costs. On a
 * noisy machine, --repeat 3 shows the median of three runs of each case.
 *
 * CHECKS. Every get returns its key's value (index checked in the loop, all
 * bytes after the SET runs); the counters grow by exactly the number of
 * increments that returned 0; a hot-counter result only grows within a
 * process; no eviction or lock recovery happens; kvshm_check() passes.
 * Any failure is printed and makes the exit status 1.
 *
 *   kvshm-micro [--quick] [--keys N] [--seconds S] [--repeat R]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvshm.h>

#define KEY_LEN 16
#define VAL_LEN 64
#define MAX_PROCS 2
#define MAX_REPEAT 15
#define BATCH 1024 /* ops between two clock reads */
#define MIB (1024u * 1024u)

enum op {
	OP_GET_HIT,
	OP_GET_MISS,
	OP_SET,
	OP_INCR_MANY,
	OP_INCR_HOT,
	OP_TBL_GET,
	OP_TBL_SET,
	OP_ALU,
	OP_COUNT
};

static const char *const op_names[OP_COUNT] = {
	"GET hit",
	"GET miss",
	"SET overwrite",
	"INCR many counters",
	"INCR 1 hot counter",
	"in-process GET hit",
	"in-process SET overwrite",
	"ALU loop (machine)",
};

/* ---- the in-process table: the limit ----------------------------------- */

/* The table hashes with the library's own SipHash-1-3 (shm/hash.c, linked
 * from libkvshm.a), so the comparison is about everything but the hash. */
uint64_t kv__siphash13(const uint64_t key[2], const void *data, size_t len);

/* Open addressing, linear probing, load <= 1/2, keys of exactly KEY_LEN
 * bytes, values up to VAL_LEN inline. hash 0 = empty slot. */
struct tbl_slot {
	uint64_t hash;
	uint8_t key[KEY_LEN];
	uint32_t vlen;
	uint8_t val[VAL_LEN];
};

struct tbl {
	struct tbl_slot *slot;
	size_t mask;
	uint64_t seed[2];
};

static int tbl_init(struct tbl *t, size_t nkeys)
{
	size_t cap = 16;

	while (cap < 2 * nkeys)
		cap *= 2;
	t->slot = calloc(cap, sizeof(*t->slot));
	t->mask = cap - 1;
	t->seed[0] = UINT64_C(0x0123456789abcdef) ^ (uint64_t)getpid();
	t->seed[1] = UINT64_C(0xfedcba9876543210);
	return t->slot ? 0 : -ENOMEM;
}

static struct tbl_slot *tbl_find(struct tbl *t, const uint8_t *key, bool insert)
{
	uint64_t h = kv__siphash13(t->seed, key, KEY_LEN) | 1;

	for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
		struct tbl_slot *s = &t->slot[i];
		if (s->hash == h && memcmp(s->key, key, KEY_LEN) == 0)
			return s;
		if (s->hash == 0) {
			if (!insert)
				return NULL;
			s->hash = h;
			memcpy(s->key, key, KEY_LEN);
			return s;
		}
	}
}

static int tbl_get(struct tbl *t, const uint8_t *key, void *buf, size_t buflen,
		   size_t *vlen)
{
	const struct tbl_slot *s = tbl_find(t, key, false);

	if (!s)
		return -ENOENT;
	*vlen = s->vlen;
	if (s->vlen > buflen)
		return -ENOBUFS;
	memcpy(buf, s->val, s->vlen);
	return 0;
}

static void tbl_set(struct tbl *t, const uint8_t *key, const void *val,
		    size_t vlen)
{
	struct tbl_slot *s = tbl_find(t, key, true);

	memcpy(s->val, val, vlen);
	s->vlen = (uint32_t)vlen;
}

/* ---- keys, values, the benchmark's state -------------------------------- */

struct bench {
	struct kvshm *kv;
	size_t nkeys;
	uint8_t *hit_keys;  /* nkeys * KEY_LEN, stored with VAL_LEN values */
	uint8_t *miss_keys; /* nkeys * KEY_LEN, never stored */
	uint8_t *ctr_keys;  /* nkeys * KEY_LEN, counters */
	uint8_t hot_key[KEY_LEN + 1];
	uint32_t *order; /* a random permutation of [0, nkeys) */
	/* the same keys in that order, so the loops read their key strings
	 * sequentially and only the store (or table) is accessed at random */
	uint8_t *hit_seq, *miss_seq, *ctr_seq;
	struct tbl tbl;
	double seconds; /* per repetition of a case */
	int repeat;     /* repetitions of each case; the median is shown */
};

static char store_name[64];
static bool store_made;

static void unlink_store(void)
{
	if (store_made)
		kvshm_unlink(store_name);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

/* Exactly KEY_LEN bytes: a prefix and a zero-padded decimal number. */
static void make_key(uint8_t *dst, const char *prefix, size_t i)
{
	const size_t plen = strlen(prefix);

	memcpy(dst, prefix, plen);
	for (size_t j = KEY_LEN; j > plen; j--, i /= 10)
		dst[j - 1] = (uint8_t)('0' + i % 10);
}

/* The value of key i: its index, a generation, then a pattern of i. A
 * reader checks the index (cheap, in the timed loop) or everything. */
static void make_value(uint8_t *v, uint64_t i, uint64_t gen)
{
	memcpy(v, &i, 8);
	memcpy(v + 8, &gen, 8);
	for (unsigned j = 16; j < VAL_LEN; j++)
		v[j] = (uint8_t)(i * 31 + j);
}

static bool value_ok(const uint8_t *v, size_t vlen, uint64_t i, bool full)
{
	uint64_t got;

	if (vlen != VAL_LEN)
		return false;
	memcpy(&got, v, 8);
	if (got != i)
		return false;
	for (unsigned j = 16; full && j < VAL_LEN; j++)
		if (v[j] != (uint8_t)(i * 31 + j))
			return false;
	return true;
}

static uint8_t *key_at(uint8_t *keys, size_t i)
{
	return keys + i * KEY_LEN;
}

/* Allocate and build the keys for b->nkeys (set by parse_args). */
static int bench_init(struct bench *b)
{
	uint64_t rng = UINT64_C(0x9e3779b97f4a7c15);
	const size_t nkeys = b->nkeys;

	b->hit_keys = malloc(nkeys * KEY_LEN);
	b->miss_keys = malloc(nkeys * KEY_LEN);
	b->ctr_keys = malloc(nkeys * KEY_LEN);
	b->order = malloc(nkeys * sizeof(*b->order));
	b->hit_seq = malloc(nkeys * KEY_LEN);
	b->miss_seq = malloc(nkeys * KEY_LEN);
	b->ctr_seq = malloc(nkeys * KEY_LEN);
	if (!b->hit_keys || !b->miss_keys || !b->ctr_keys || !b->order ||
	    !b->hit_seq || !b->miss_seq || !b->ctr_seq ||
	    tbl_init(&b->tbl, nkeys))
		return -ENOMEM;
	for (size_t i = 0; i < nkeys; i++) {
		make_key(key_at(b->hit_keys, i), "user:", i);
		make_key(key_at(b->miss_keys, i), "miss:", i);
		make_key(key_at(b->ctr_keys, i), "ctr:", i);
		b->order[i] = (uint32_t)i;
	}
	memcpy(b->hot_key, "hot-counter-0001", KEY_LEN + 1);
	for (size_t i = nkeys - 1; i > 0; i--) { /* Fisher-Yates */
		size_t j = rng_next(&rng) % (i + 1);
		uint32_t t = b->order[i];
		b->order[i] = b->order[j];
		b->order[j] = t;
	}
	for (size_t p = 0; p < nkeys; p++) {
		memcpy(key_at(b->hit_seq, p), key_at(b->hit_keys, b->order[p]),
		       KEY_LEN);
		memcpy(key_at(b->miss_seq, p),
		       key_at(b->miss_keys, b->order[p]), KEY_LEN);
		memcpy(key_at(b->ctr_seq, p), key_at(b->ctr_keys, b->order[p]),
		       KEY_LEN);
	}
	return 0;
}

/* Write every key (kvshm and the table), then create every counter: the
 * values are contiguous in the store, as they are in the table. */
static int bench_fill(struct bench *b)
{
	uint8_t v[VAL_LEN];
	int64_t r;
	int err = 0;

	for (size_t i = 0; i < b->nkeys && !err; i++) {
		make_value(v, i, 0);
		err = kvshm_set(b->kv, key_at(b->hit_keys, i), KEY_LEN, v,
				VAL_LEN, 0);
		tbl_set(&b->tbl, key_at(b->hit_keys, i), v, VAL_LEN);
	}
	for (size_t i = 0; i < b->nkeys && !err; i++)
		err = kvshm_incr(b->kv, key_at(b->ctr_keys, i), KEY_LEN, 0, 0,
				 &r);
	if (!err)
		err = kvshm_incr(b->kv, b->hot_key, KEY_LEN, 0, 0, &r);
	if (err)
		fprintf(stderr, "filling the store: %s\n", kvshm_strerror(err));
	return err;
}

/* ---- one worker --------------------------------------------------------- */

struct worker {
	struct bench *b;
	enum op op;
	size_t pos;   /* next index into b->order */
	uint64_t gen; /* generation of the values this one sets */
	int64_t last; /* last hot-counter value seen */
	uint64_t alu; /* OP_ALU's running value */
};

struct result {
	uint64_t ops, ns;
	uint64_t sink; /* OP_ALU's value, so the loop is not elided */
	int32_t failed;
};

#define FAIL(w, ...)                                                           \
	do {                                                                   \
		fprintf(stderr, "worker %d: %s: ", (int)getpid(),              \
			op_names[(w)->op]);                                    \
		fprintf(stderr, __VA_ARGS__);                                  \
		fputc('\n', stderr);                                           \
		return -1;                                                     \
	} while (0)

/* Run n operations of w->op. 0, or -1 after printing what was wrong. */
static int run_batch(struct worker *w, size_t n)
{
	struct bench *b = w->b;
	uint8_t buf[VAL_LEN], v[VAL_LEN];
	size_t vlen = 0;
	int64_t r = 0;
	int err = 0;

	for (size_t k = 0; k < n; k++) {
		const size_t p = w->pos, i = b->order[p];
		if (++w->pos == b->nkeys)
			w->pos = 0;
		switch (w->op) {
		case OP_GET_HIT:
			err = kvshm_get(b->kv, key_at(b->hit_seq, p), KEY_LEN,
					buf, sizeof(buf), &vlen);
			if (err || !value_ok(buf, vlen, i, false))
				FAIL(w, "key %zu: %s, vlen %zu", i,
				     kvshm_strerror(err), vlen);
			break;
		case OP_GET_MISS:
			err = kvshm_get(b->kv, key_at(b->miss_seq, p), KEY_LEN,
					buf, sizeof(buf), &vlen);
			if (err != -ENOENT)
				FAIL(w, "key %zu: %s", i, kvshm_strerror(err));
			break;
		case OP_SET:
			make_value(v, i, ++w->gen);
			err = kvshm_set(b->kv, key_at(b->hit_seq, p), KEY_LEN,
					v, VAL_LEN, 0);
			if (err)
				FAIL(w, "key %zu: %s", i, kvshm_strerror(err));
			break;
		case OP_INCR_MANY:
			err = kvshm_incr(b->kv, key_at(b->ctr_seq, p), KEY_LEN,
					 1, 0, &r);
			if (err || r <= 0)
				FAIL(w, "key %zu: %s, value %" PRId64, i,
				     kvshm_strerror(err), r);
			break;
		case OP_INCR_HOT:
			err = kvshm_incr(b->kv, b->hot_key, KEY_LEN, 1, 0, &r);
			if (err || r <= w->last)
				FAIL(w, "%s, value %" PRId64 " after %" PRId64,
				     kvshm_strerror(err), r, w->last);
			w->last = r;
			break;
		case OP_TBL_GET:
			err = tbl_get(&b->tbl, key_at(b->hit_seq, p), buf,
				      sizeof(buf), &vlen);
			if (err || !value_ok(buf, vlen, i, false))
				FAIL(w, "key %zu: %d", i, err);
			break;
		case OP_TBL_SET:
			make_value(v, i, ++w->gen);
			tbl_set(&b->tbl, key_at(b->hit_seq, p), v, VAL_LEN);
			break;
		case OP_ALU: /* one dependent multiply-add (an LCG step) */
			w->alu = w->alu * UINT64_C(6364136223846793005) +
				 UINT64_C(1442695040888963407);
			break;
		case OP_COUNT:
			return -1;
		}
	}
	return 0;
}

/* Touch what the loop will touch, so page faults on the inherited
 * mappings are not timed. The store is only read. */
static int warm_up(struct worker *w)
{
	struct bench *b = w->b;
	uint8_t buf[VAL_LEN];
	int64_t c;

	for (size_t i = 0; i < b->nkeys; i++) {
		switch (w->op) {
		case OP_INCR_MANY:
			if (kvshm_counter(b->kv, key_at(b->ctr_keys, i),
					  KEY_LEN, &c))
				return -1;
			break;
		case OP_INCR_HOT:
			if (kvshm_counter(b->kv, b->hot_key, KEY_LEN, &c))
				return -1;
			w->last = c;
			return 0;
		case OP_ALU:
			return 0;
		case OP_GET_MISS:
			kvshm_exists(b->kv, key_at(b->miss_keys, i), KEY_LEN);
			break;
		case OP_TBL_GET:
			if (!tbl_find(&b->tbl, key_at(b->hit_keys, i), false))
				return -1;
			break;
		case OP_TBL_SET: /* also takes the copy-on-write faults */
			make_value(buf, i, 0);
			tbl_set(&b->tbl, key_at(b->hit_keys, i), buf, VAL_LEN);
			break;
		default:
			if (kvshm_get(b->kv, key_at(b->hit_keys, i), KEY_LEN,
				      buf, sizeof(buf), NULL))
				return -1;
			break;
		}
	}
	return 0;
}

static void worker_main(struct worker *w, int ready_fd, int go_fd, int res_fd)
{
	struct result res = { 0 };
	const uint64_t budget = (uint64_t)(w->b->seconds * 1e9);
	uint64_t start, now;
	char c = 'r';

	res.failed = warm_up(w) != 0;
	if (res.failed)
		fprintf(stderr, "worker %d: warm-up failed\n", (int)getpid());
	if (write(ready_fd, &c, 1) != 1 || read(go_fd, &c, 1) != 0)
		_exit(2); /* the parent went away */
	start = now_ns();
	do {
		if (res.failed || run_batch(w, BATCH)) {
			res.failed = 1;
			break;
		}
		res.ops += BATCH;
		now = now_ns();
	} while (now - start < budget);
	res.ns = now_ns() - start;
	res.sink = w->alu;
	if (write(res_fd, &res, sizeof(res)) != (ssize_t)sizeof(res))
		_exit(2);
	_exit(res.failed ? 1 : 0);
}

/* ---- one case: nprocs workers on one op --------------------------------- */

struct case_result {
	enum op op;
	int nprocs;
	uint64_t ops[MAX_PROCS], ns[MAX_PROCS];
	double ns_per_op; /* mean over processes */
	double mops;      /* sum over processes */
	bool failed;
};

static int read_full(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n = read(fd, (char *)buf + got, len - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

/* Run the case; 0, or -1 if a worker failed or died. */
static int run_case(struct bench *b, enum op op, int nprocs,
		    struct case_result *cr)
{
	int ready[2], go[2], res[2], failed = 0;
	pid_t pid[MAX_PROCS];
	char c;

	*cr = (struct case_result){ .op = op, .nprocs = nprocs };
	if (pipe(ready) || pipe(go) || pipe(res)) {
		perror("pipe");
		return -1;
	}
	fflush(NULL);
	for (int p = 0; p < nprocs; p++) {
		pid[p] = fork();
		if (pid[p] < 0) {
			perror("fork");
			exit(1);
		}
		if (pid[p] == 0) {
			struct worker w = { .b = b,
					    .op = op,
					    .pos = (size_t)p * b->nkeys / 2 };
			close(ready[0]);
			close(go[1]);
			close(res[0]);
			worker_main(&w, ready[1], go[0], res[1]);
		}
	}
	close(ready[1]);
	close(go[0]);
	close(res[1]);
	for (int p = 0; p < nprocs; p++)
		if (read(ready[0], &c, 1) != 1)
			failed = 1;
	close(go[1]); /* the start signal: every worker reads EOF */
	for (int p = 0; p < nprocs && !failed; p++) {
		struct result r;
		if (read_full(res[0], &r, sizeof(r)) || r.failed) {
			failed = 1;
			break;
		}
		cr->ops[p] = r.ops;
		cr->ns[p] = r.ns;
		cr->ns_per_op += (double)r.ns / (double)r.ops / nprocs;
		cr->mops += (double)r.ops / (double)r.ns * 1e3;
	}
	for (int p = 0; p < nprocs; p++) {
		int status;
		if (waitpid(pid[p], &status, 0) != pid[p] ||
		    !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "%s, %d process(es): worker %d %s %d\n",
				op_names[op], nprocs, (int)pid[p],
				WIFSIGNALED(status) ? "killed by signal" :
						      "exited with",
				WIFSIGNALED(status) ? WTERMSIG(status) :
						      WEXITSTATUS(status));
			failed = 1;
		}
	}
	close(ready[0]);
	close(res[0]);
	cr->failed = failed;
	return failed ? -1 : 0;
}

static uint64_t total_ops(const struct case_result *cr)
{
	uint64_t n = 0;

	for (int p = 0; p < cr->nprocs; p++)
		n += cr->ops[p];
	return n;
}

/* ---- checks between cases ----------------------------------------------- */

static int sum_counters(struct bench *b, int64_t *sum)
{
	*sum = 0;
	for (size_t i = 0; i < b->nkeys; i++) {
		int64_t c;
		int err = kvshm_counter(b->kv, key_at(b->ctr_keys, i), KEY_LEN,
					&c);
		if (err) {
			fprintf(stderr, "counter %zu: %s\n", i,
				kvshm_strerror(err));
			return -1;
		}
		*sum += c;
	}
	return 0;
}

/* Every key is still there with a whole value of its own. */
static int check_values(struct bench *b)
{
	uint8_t buf[VAL_LEN];

	for (size_t i = 0; i < b->nkeys; i++) {
		size_t vlen = 0;
		int err = kvshm_get(b->kv, key_at(b->hit_keys, i), KEY_LEN, buf,
				    sizeof(buf), &vlen);
		if (err || !value_ok(buf, vlen, i, true)) {
			fprintf(stderr,
				"key %zu after the SET run: %s, "
				"vlen %zu\n",
				i, kvshm_strerror(err), vlen);
			return -1;
		}
	}
	return 0;
}

/* The sum of the counters op increments (0 for other ops). */
static int counted(struct bench *b, enum op op, int64_t *sum)
{
	*sum = 0;
	if (op == OP_INCR_MANY)
		return sum_counters(b, sum);
	if (op == OP_INCR_HOT)
		return kvshm_counter(b->kv, b->hot_key, KEY_LEN, sum) ? -1 : 0;
	return 0;
}

/* The repetition with the median ns/op (r[] gets reordered). */
static struct case_result median(struct case_result *r, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && r[j].ns_per_op < r[j - 1].ns_per_op;
		     j--) {
			struct case_result t = r[j];
			r[j] = r[j - 1];
			r[j - 1] = t;
		}
	return r[(n - 1) / 2];
}

/* Run op b->repeat times with 1 and with 2 processes, keep the median of
 * each, and check the store afterwards. */
static int run_op(struct bench *b, enum op op, struct case_result *cr)
{
	struct case_result reps[MAX_REPEAT];
	int failed = 0;

	for (int np = 1; np <= MAX_PROCS; np++) {
		int64_t before, after;
		uint64_t ops = 0;
		if (counted(b, op, &before))
			return -1;
		bool bad = false;
		for (int r = 0; r < b->repeat; r++) {
			bad |= run_case(b, op, np, &reps[r]) != 0;
			ops += total_ops(&reps[r]);
		}
		if (counted(b, op, &after))
			return -1;
		if ((op == OP_INCR_MANY || op == OP_INCR_HOT) && !bad &&
		    (uint64_t)(after - before) != ops) {
			fprintf(stderr,
				"%s, %d process(es): counters grew by %" PRId64
				", but %" PRIu64 " increments returned 0\n",
				op_names[op], np, after - before, ops);
			bad = true;
		}
		if (op == OP_SET && check_values(b))
			bad = true;
		cr[np - 1] = median(reps, b->repeat);
		cr[np - 1].failed = bad;
		failed |= bad;
	}
	return failed ? -1 : 0;
}

/* ---- output ------------------------------------------------------------- */

static void print_machine(void)
{
	char line[256], model[256] = "unknown";
	struct utsname u;
	FILE *f = fopen("/proc/cpuinfo", "r");

	while (f && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (strncmp(line, "model name", 10) == 0 && colon) {
			snprintf(model, sizeof(model), "%s", colon + 2);
			model[strcspn(model, "\n")] = '\0';
			break;
		}
	}
	if (f)
		fclose(f);
	if (uname(&u))
		snprintf(u.release, sizeof(u.release), "unknown");
	printf("machine: nproc %ld, cpu \"%s\", linux %s, kvshm %s\n",
	       sysconf(_SC_NPROCESSORS_ONLN), model, u.release,
	       kvshm_version());
}

/* One row; one_proc is the same op with one process (for the speed-up),
 * limit the same op on the in-process table (for the ratio). */
static void print_row(const struct case_result *cr,
		      const struct case_result *one_proc,
		      const struct case_result *limit)
{
	char per[2][16], ratio[16] = "", scale[16] = "";

	if (cr->failed) {
		printf("%-26s %5d   failed: see the messages above\n",
		       op_names[cr->op], cr->nprocs);
		return;
	}
	for (int p = 0; p < MAX_PROCS; p++)
		if (p < cr->nprocs)
			snprintf(per[p], sizeof(per[p]), "%.1f",
				 (double)cr->ns[p] / (double)cr->ops[p]);
		else
			snprintf(per[p], sizeof(per[p]), "-");
	if (limit && !limit->failed && limit->ns_per_op > 0)
		snprintf(ratio, sizeof(ratio), "%.2fx",
			 cr->ns_per_op / limit->ns_per_op);
	if (cr != one_proc && !one_proc->failed && one_proc->mops > 0)
		snprintf(scale, sizeof(scale), "%.2fx",
			 cr->mops / one_proc->mops);
	printf("%-26s %5d %8.2f %9s %9s %8.2f %8s %10s\n", op_names[cr->op],
	       cr->nprocs, (double)total_ops(cr) / 1e6, per[0], per[1],
	       cr->mops, scale, ratio);
}

/* ---- main --------------------------------------------------------------- */

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--quick] [--keys N] [--seconds S] [--repeat R]\n"
		"  --quick      short runs (CI smoke test): 0.1 s, 1 repeat\n"
		"  --keys N     keys per key set (default 100000)\n"
		"  --seconds S  time per case, process count and repeat "
		"(default 1.5)\n"
		"  --repeat R   run each case R times, show the median "
		"(default 1)\n",
		argv0);
	exit(2);
}

static void parse_args(int argc, char **argv, struct bench *b)
{
	b->nkeys = 100000;
	b->seconds = 1.5;
	b->repeat = 1;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i],
			   *val = i + 1 < argc ? argv[i + 1] : "";
		char *end = NULL;
		if (strcmp(arg, "--quick") == 0) {
			b->seconds = 0.1;
			b->repeat = 1;
			continue;
		}
		i++;
		if (strcmp(arg, "--keys") == 0) {
			unsigned long long n = strtoull(val, &end, 10);
			if (n < 16 || n > 10000000)
				end = NULL;
			b->nkeys = (size_t)n;
		} else if (strcmp(arg, "--seconds") == 0) {
			b->seconds = strtod(val, &end);
			if (!(b->seconds > 0 && b->seconds <= 3600))
				end = NULL;
		} else if (strcmp(arg, "--repeat") == 0) {
			long r = strtol(val, &end, 10);
			if (r < 1 || r > MAX_REPEAT)
				end = NULL;
			b->repeat = (int)r;
		}
		if (!end || end == val || *end)
			usage(argv[0]);
	}
}

/* Create a fresh store sized for b->nkeys (unlinked at exit). */
static int bench_open(struct bench *b)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	int err;

	/* ~200 bytes of items per key; 256 MiB leaves lots of room for the
	 * garbage that SET overwrites leave behind */
	o.flags = KVSHM_CREATE | KVSHM_EXCL;
	o.arena_bytes = 256 * (uint64_t)MIB;
	if (o.arena_bytes < b->nkeys * 2048)
		o.arena_bytes = b->nkeys * 2048;
	snprintf(store_name, sizeof(store_name), "kvshm-micro-%ld",
		 (long)getpid());
	err = kvshm_open(store_name, &o, &b->kv);
	if (err) {
		fprintf(stderr, "kvshm_open %s: %s\n", store_name,
			kvshm_strerror(err));
		return err;
	}
	store_made = true;
	atexit(unlink_store);
	return 0;
}

static void bench_release(struct bench *b)
{
	kvshm_close(b->kv);
	unlink_store();
	store_made = false;
	free(b->tbl.slot);
	free(b->hit_keys);
	free(b->miss_keys);
	free(b->ctr_keys);
	free(b->order);
	free(b->hit_seq);
	free(b->miss_seq);
	free(b->ctr_seq);
}

static void print_table(const struct bench *b,
			struct case_result cr[OP_COUNT][MAX_PROCS])
{
	static const enum op shown[] = { OP_GET_HIT,   OP_GET_MISS, OP_SET,
					 OP_INCR_MANY, OP_INCR_HOT, OP_TBL_GET,
					 OP_TBL_SET,   OP_ALU };
	struct kvshm_stats st;

	kvshm_stats(b->kv, &st);
	print_machine();
	printf("%zu keys of %d bytes, values of %d bytes, arena %" PRIu64
	       " MiB; %.2f s per case",
	       b->nkeys, KEY_LEN, VAL_LEN, st.arena_bytes / MIB, b->seconds);
	if (b->repeat > 1)
		printf(", median of %d runs", b->repeat);
	printf("\n\n%-26s %5s %8s %9s %9s %8s %8s %10s\n", "case", "procs",
	       "Mops", "ns/op p0", "ns/op p1", "Mops/s", "speed-up",
	       "vs in-proc");
	for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++) {
		enum op op = shown[i];
		for (int np = 0; np < MAX_PROCS; np++) {
			const struct case_result *limit =
				op == OP_GET_HIT ? &cr[OP_TBL_GET][np] :
				op == OP_SET     ? &cr[OP_TBL_SET][np] :
						   NULL;
			print_row(&cr[op][np], &cr[op][0], limit);
		}
	}
}

/* kvshm_check() and the counters that must have stayed 0; 0 if all good. */
static int check_store(struct kvshm *kv)
{
	struct kvshm_stats st;
	char report[512] = "";
	int err = kvshm_check(kv, report, sizeof(report));
	int failed = err != 0;

	printf("\nkvshm_check: %s", report[0] ? report : kvshm_strerror(err));
	if (!report[0])
		printf("\n");
	if (kvshm_stats(kv, &st))
		return 1;
	printf("stats: items %" PRIu64 ", sets %" PRIu64
	       ", segments reclaimed %" PRIu64 ", relocated %" PRIu64
	       ", evictions %" PRIu64 ", lock contended %" PRIu64
	       ", read retries %" PRIu64 ", read fallbacks %" PRIu64
	       ", lock recoveries %" PRIu64 "\n",
	       st.items, st.sets, st.segments_reclaimed, st.items_relocated,
	       st.evictions, st.lock_contended, st.read_retries,
	       st.read_fallbacks, st.lock_recoveries);
	if (st.evictions || st.lock_recoveries) {
		fprintf(stderr, "unexpected evictions or lock recoveries\n");
		failed = 1;
	}
	return failed;
}

int main(int argc, char **argv)
{
	static const enum op order[] = { OP_ALU,       OP_TBL_GET,  OP_TBL_SET,
					 OP_GET_HIT,   OP_GET_MISS, OP_SET,
					 OP_INCR_MANY, OP_INCR_HOT };
	struct case_result cr[OP_COUNT][MAX_PROCS];
	struct bench b = { 0 };
	int failed = 0;

	parse_args(argc, argv, &b);
	if (bench_init(&b)) {
		fprintf(stderr, "out of memory\n");
		failed = 1;
		goto out;
	}
	if (bench_open(&b) || bench_fill(&b)) {
		failed = 1;
		goto out;
	}
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		if (run_op(&b, order[i], cr[order[i]]))
			failed = 1;
	print_table(&b, cr);
	failed |= check_store(b.kv);
out:
	bench_release(&b);
	if (failed)
		printf("FAILED: see the messages above\n");
	return failed;
}
