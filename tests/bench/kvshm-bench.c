/* SPDX-License-Identifier: MIT */
/*
 * kvshm-bench.c - the workload benchmark: GET, SET, INCR, MIX95 (95% get,
 * 5% set) and MIX50 over N keys of 16 bytes, uniform or Zipf(0.99), values
 * of any size, from 1..P processes, against kvshm or against the
 * unsynchronised in-process hash table (the limit). Reports ns/op per
 * process, total Mops/s, sampled p50/p99/p999 latency and bytes per item;
 * --json for machines. tests/bench/compare builds the same source with the
 * peers of tests/bench/peers/ (LMDB, Redis, memcached) and runs them all.
 * Prints numbers; fails only on a wrong answer (a value that is not its
 * key's, a lost increment, a failed kvshm_check), never on time.
 *
 *   kvshm-bench [--backend B,..] [--workload W,..] [--dist uniform|zipf]
 *               [--keys N] [--value BYTES] [--procs P,..] [--seconds S]
 *               [--repeat R] [--json] [--quick]     (--help for the rest)
 *   kvshm-bench --sweep [--keys N]     CPU time to sweep N expired items
 *
 * WHY ONE LOOP FOR EVERY SYSTEM. Each backend is a struct of functions
 * (peers/backend.h). The timing loop, run_ops(), is always inlined and
 * instantiated once per backend with a constant backend pointer, so for
 * kvshm and the in-process table the compiler turns the calls into direct
 * ones (the table's are inlined entirely, as a header-only table would
 * be): neither pays an indirect call the other does not. The peers share
 * one instantiation through pointers; an indirect call is ~1 ns against
 * their hundreds. Every system sees the very same operation sequence.
 * "--backend kvshm,inproc --repeat 3" fills both, then runs each case on
 * each in turn, three times, and shows the medians: on a shared VM whose
 * speed drifts by 2x from minute to minute, only turns make the ratio
 * between two systems mean something.
 *
 * HOW IT MEASURES. The parent makes the store, writes every key (and the
 * counters, if INCR is asked for), and builds the operation sequence
 * before anything is timed: 2^20..2^22 operations, each with its key's 16
 * bytes inline so the loop reads keys sequentially and only the store is
 * accessed at random. Zipf ranks go through a random permutation, so hot
 * keys are spread over the store. For each process count it forks the
 * workers (also for one, so every case runs the same code); each starts at
 * its own offset in the sequence, warms up (runs the workload untimed over
 * the sequence, which also takes the page faults of the inherited
 * mappings), says "ready" on a pipe and blocks on a second pipe that the
 * parent closes once all are ready. A worker runs batches until its time
 * is up, reading CLOCK_MONOTONIC once per batch; one operation in 64 (on
 * average: the gap is random) is timed on its own for the latency
 * percentiles. The cost of a clock read is measured first and subtracted
 * from both. ns/op is per process; Mops/s is the sum over processes. A get
 * that finds its key evicted counts as a miss (reported), not a failure.
 *
 * THE IN-PROCESS TABLE. Open addressing with linear probing at load <= 1/2,
 * each slot {hash, key, length, value inline}: one cache miss for a hit,
 * the fastest a hash table can be. It hashes with the library's own
 * SipHash-1-3, so the comparison is about everything but the hash. It is
 * not shared: with P processes each has its own copy (copy-on-write after
 * fork), which is what "no synchronisation" costs nothing for.
 *
 * BYTES PER ITEM. For kvshm, after the fill: used_bytes / items (what the
 * items take in the data area), its overhead beyond key + value, and the
 * rest of the segment (index, tables) per item. The arena is sized so the
 * working set fits many times over, so no run evicts; the eviction count is
 * reported, and at the first eviction kvshm-fill measures the fill ratio.
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
#include <strings.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvshm.h>

#include "peers/backend.h"

#define MAX_PROCS 64
#define MAX_VALUE (1u << 20)
#define BATCH 1024            /* operations between two clock reads */
#define SAMPLE_EVERY 64       /* one operation in 64 (on average) is timed */
#define SAMPLE_CAP (1u << 21) /* samples kept per process (a ring) */
#define MIB (1024u * 1024u)

#define unlikely(x) __builtin_expect(!!(x), 0)

enum kind {
	K_GET,
	K_SET,
	K_INCR
};

enum workload {
	W_GET,
	W_SET,
	W_INCR,
	W_MIX95,
	W_MIX50,
	W_COUNT
};

static const char *const workload_names[W_COUNT] = { "GET", "SET", "INCR",
						     "MIX95", "MIX50" };

/* One operation of the sequence: 24 bytes, read sequentially. */
struct op {
	uint8_t key[KEY_LEN];
	uint32_t idx; /* key number: values start with it */
	uint32_t kind;
};

/* ---- small things ------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

/* Exactly KEY_LEN bytes: a 4-byte prefix and 12 decimal digits. */
static void make_key(uint8_t *dst, const char *prefix, uint64_t i)
{
	memcpy(dst, prefix, 4);
	for (int j = KEY_LEN - 1; j >= 4; j--, i /= 10)
		dst[j] = (uint8_t)('0' + i % 10);
}

/* A value: the key number, a generation, then a pattern. */
static void make_value(uint8_t *v, size_t vlen, uint64_t idx, uint64_t gen)
{
	for (size_t j = 0; j < vlen; j++)
		v[j] = (uint8_t)(idx * 31 + j);
	if (vlen >= 8)
		memcpy(v, &idx, 8);
	if (vlen >= 16)
		memcpy(v + 8, &gen, 8);
}

static bool value_ok(const uint8_t *v, size_t vlen, size_t want, uint64_t idx)
{
	uint64_t got;

	if (vlen != want)
		return false;
	if (vlen < 8)
		return true;
	memcpy(&got, v, 8);
	return got == idx;
}

/* ---- the in-process table: the limit ------------------------------------ */

/* The library's SipHash-1-3 (shm/hash.c, linked from libkvshm.a). */
uint64_t kv__siphash13(const uint64_t key[2], const void *data, size_t len);

struct tbl_slot {
	uint64_t hash; /* 0 = empty */
	uint8_t key[KEY_LEN];
	uint32_t vlen;
	uint32_t pad;
	uint8_t val[]; /* stride - sizeof(struct tbl_slot) bytes */
};

struct tbl {
	uint8_t *slots;
	size_t mask, stride, cap_value;
	uint64_t seed[2];
};

static inline struct tbl_slot *tbl_slot(struct tbl *t, size_t i)
{
	return (struct tbl_slot *)(t->slots + i * t->stride);
}

static inline struct tbl_slot *tbl_find(struct tbl *t, const uint8_t *key,
					bool insert)
{
	const uint64_t h = kv__siphash13(t->seed, key, KEY_LEN) | 1;

	for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
		struct tbl_slot *s = tbl_slot(t, i);
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

static int tbl_setup(const struct bench_cfg *cfg, void **state)
{
	struct tbl *t = calloc(1, sizeof(*t));
	size_t cap = 16, n = cfg->nkeys * (cfg->counters ? 2 : 1);

	if (!t)
		return -ENOMEM;
	while (cap < 2 * n)
		cap *= 2;
	t->cap_value = cfg->vsize > 8 ? cfg->vsize : 8;
	t->stride = (sizeof(struct tbl_slot) + t->cap_value + 7) & ~(size_t)7;
	/* mmap, not calloc: untouched slots cost nothing, and a large table
	 * is not copied by fork() until written */
	t->slots = mmap(NULL, cap * t->stride, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->slots == MAP_FAILED) {
		free(t);
		return -ENOMEM;
	}
	t->mask = cap - 1;
	t->seed[0] = UINT64_C(0x0123456789abcdef) ^ (uint64_t)getpid();
	t->seed[1] = UINT64_C(0xfedcba9876543210);
	*state = t;
	return 0;
}

static void tbl_teardown(void *state)
{
	struct tbl *t = state;

	munmap(t->slots, (t->mask + 1) * t->stride);
	free(t);
}

/* Write to every page of the table once: after fork() the first write to
 * each page copies it (copy-on-write, 4 KB per page), which a process that
 * owns its table pays once in its life, not per operation. Without this a
 * 16 KB SET measured 40 us, the copies of 4 pages. Only for workloads that
 * write: a GET-only worker shares the parent's pages. */
static void tbl_own_pages(struct tbl *t)
{
	const size_t bytes = (t->mask + 1) * t->stride;

	for (size_t off = 0; off < bytes; off += 4096) {
		volatile uint8_t *p = t->slots + off;
		*p = *p;
	}
}

static int tbl_attach(void *state, bool bulk, void **h)
{
	(void)bulk;
	*h = state;
	return 0;
}

static void tbl_detach(void *h)
{
	(void)h;
}

static inline int tbl_get(void *h, const uint8_t *key, void *buf, size_t buflen,
			  size_t *vlen)
{
	const struct tbl_slot *s = tbl_find(h, key, false);

	if (!s)
		return -ENOENT;
	*vlen = s->vlen;
	if (s->vlen > buflen)
		return -ENOBUFS;
	memcpy(buf, s->val, s->vlen);
	return 0;
}

static inline int tbl_set(void *h, const uint8_t *key, const void *val,
			  size_t vlen)
{
	struct tbl *t = h;
	struct tbl_slot *s;

	if (vlen > t->cap_value)
		return -E2BIG;
	s = tbl_find(t, key, true);
	memcpy(s->val, val, vlen);
	s->vlen = (uint32_t)vlen;
	return 0;
}

static inline int tbl_incr(void *h, const uint8_t *key, int64_t delta,
			   int64_t *result)
{
	struct tbl_slot *s = tbl_find(h, key, true);
	int64_t v = 0;

	if (s->vlen == 8)
		memcpy(&v, s->val, 8);
	v += delta;
	memcpy(s->val, &v, 8);
	s->vlen = 8;
	*result = v;
	return 0;
}

static int tbl_counter_init(void *h, const uint8_t *key)
{
	int64_t r;

	return tbl_incr(h, key, 0, &r);
}

static int tbl_counter_read(void *h, const uint8_t *key, int64_t *value)
{
	size_t vlen;

	return tbl_get(h, key, value, 8, &vlen);
}

static int tbl_memory(void *state, void *h, struct bench_mem *m)
{
	struct tbl *t = state;
	uint64_t items = 0;

	(void)h;
	for (size_t i = 0; i <= t->mask; i++)
		items += tbl_slot(t, i)->hash != 0;
	m->store_bytes = (t->mask + 1) * t->stride;
	m->used_bytes = items * t->stride;
	m->items = items;
	m->index_bytes = m->store_bytes - m->used_bytes; /* empty slots */
	return 0;
}

static const struct backend backend_inproc = {
	.name = "inproc",
	.setup = tbl_setup,
	.teardown = tbl_teardown,
	.attach = tbl_attach,
	.detach = tbl_detach,
	.get = tbl_get,
	.set = tbl_set,
	.incr = tbl_incr,
	.counter_init = tbl_counter_init,
	.counter_read = tbl_counter_read,
	.memory = tbl_memory,
};

/* ---- kvshm -------------------------------------------------------------- */

struct kv_state {
	char name[64];
	struct kvshm *kv; /* the parent's; workers inherit it across fork */
};

/*
 * Give the store's tmpfs file all its pages now, when /dev/shm has room
 * for them twice over. Otherwise a write that appends to a part of the
 * arena never used before pays for allocating and zeroing pages (a 16 KB
 * SET into a fresh arena measured 25x its cost in a recycled one), which
 * a long-running store never does. The workers still take one minor fault
 * per page they have not mapped yet.
 */
static void prefault(const char *name, uint64_t bytes)
{
	char path[128];
	struct statvfs vfs;
	int fd;

	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	if (statvfs("/dev/shm", &vfs) ||
	    (uint64_t)vfs.f_bavail * vfs.f_frsize < 2 * bytes)
		return;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	/* fallocate() only reserves tmpfs pages; the first fault still
	 * zeroes each one. A populating read-only mapping does that here. */
	if (fallocate(fd, 0, 0, (off_t)bytes) == 0) {
		void *p = mmap(NULL, bytes, PROT_READ,
			       MAP_SHARED | MAP_POPULATE, fd, 0);
		if (p != MAP_FAILED)
			munmap(p, bytes);
	}
	close(fd);
}

static int kv_setup(const struct bench_cfg *cfg, void **state)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct kv_state *s = calloc(1, sizeof(*s));
	const uint64_t items = cfg->nkeys * (cfg->counters ? 2 : 1);
	/* 40-byte header + key + value, padded to 16 */
	const uint64_t item = (40 + KEY_LEN + cfg->vsize + 15) & ~15ull;
	int err;

	if (!s)
		return -ENOMEM;
	/* Twice the items, 64 bytes of index per item and 1 GiB: SET
	 * runs leave garbage behind, and without a janitor compacting, the
	 * allocator reclaims a segment by evicting its live items that were
	 * not read since written (it evicted with 4x the items and no 1 GiB).
	 * A get that misses anyway is counted as a miss, not a failure. */
	o.flags = KVSHM_CREATE | KVSHM_EXCL;
	o.arena_bytes = cfg->arena ?
				cfg->arena :
				2 * items * item + 64 * items + 1024ull * MIB;
	o.max_items = items + items / 4 + 1024;
	if (cfg->vsize > MIB)
		o.max_value_bytes = (uint32_t)cfg->vsize;
	snprintf(s->name, sizeof(s->name), "kvshm-bench-%ld", (long)getpid());
	err = kvshm_open(s->name, &o, &s->kv);
	if (err) {
		fprintf(stderr, "kvshm_open %s (%" PRIu64 " MiB): %s\n",
			s->name, o.arena_bytes / MIB, kvshm_strerror(err));
		free(s);
		return err;
	}
	prefault(s->name, o.arena_bytes);
	*state = s;
	return 0;
}

static void kv_teardown(void *state)
{
	struct kv_state *s = state;

	kvshm_close(s->kv);
	kvshm_unlink(s->name);
	free(s);
}

static int kv_attach(void *state, bool bulk, void **h)
{
	(void)bulk;
	/* the handle opened before fork() keeps working in the child (the
	 * contract), which is how prefork servers use it */
	*h = ((struct kv_state *)state)->kv;
	return 0;
}

static int kv_get(void *h, const uint8_t *key, void *buf, size_t buflen,
		  size_t *vlen)
{
	return kvshm_get(h, key, KEY_LEN, buf, buflen, vlen);
}

static int kv_set(void *h, const uint8_t *key, const void *val, size_t vlen)
{
	return kvshm_set(h, key, KEY_LEN, val, vlen, KVSHM_TTL_NEVER);
}

static int kv_incr(void *h, const uint8_t *key, int64_t delta, int64_t *result)
{
	return kvshm_incr(h, key, KEY_LEN, delta, KVSHM_TTL_NEVER, result);
}

static int kv_counter_init(void *h, const uint8_t *key)
{
	int64_t r;

	return kvshm_incr(h, key, KEY_LEN, 0, KVSHM_TTL_NEVER, &r);
}

static int kv_counter_read(void *h, const uint8_t *key, int64_t *value)
{
	return kvshm_counter(h, key, KEY_LEN, value);
}

static int kv_memory(void *state, void *h, struct bench_mem *m)
{
	struct kvshm_stats st;
	int err = kvshm_stats(((struct kv_state *)state)->kv, &st);

	(void)h;
	if (err)
		return err;
	m->store_bytes = st.arena_bytes;
	m->used_bytes = st.used_bytes;
	m->items = st.items;
	m->index_bytes = st.arena_bytes - st.data_bytes;
	m->evictions = st.evictions;
	return 0;
}

static const struct backend backend_kvshm = {
	.name = "kvshm",
	.setup = kv_setup,
	.teardown = kv_teardown,
	.attach = kv_attach,
	.detach = tbl_detach, /* nothing to do */
	.get = kv_get,
	.set = kv_set,
	.incr = kv_incr,
	.counter_init = kv_counter_init,
	.counter_read = kv_counter_read,
	.memory = kv_memory,
};

static const struct backend *const backends[] = {
	&backend_kvshm, &backend_inproc,
#ifdef WITH_PEERS
	&bench_redis,   &bench_memcached,
#endif
#ifdef WITH_LMDB
	&bench_lmdb,
#endif
};

/* ---- the run's parameters and the operation sequence -------------------- */

#define MAX_SYS 8
#define MAX_REPEAT 15

/* One system under test: its backend, store and memory report. */
struct sys {
	const struct backend *be;
	void *state;
	struct bench_mem mem;
	bool ready;
};

struct bench {
	const struct backend *be; /* the system being run (use_sys) */
	void *state;
	struct sys sys[MAX_SYS];
	int nsys;
	int repeat;
	struct bench_cfg cfg;
	bool dist_zipf;
	double seconds;
	bool json, quick;
	unsigned workloads; /* bit per enum workload */
	int procs[MAX_PROCS], nprocs_list;
	uint64_t seq_len;     /* power of two */
	uint32_t *perm;       /* key number of each Zipf rank */
	uint64_t clock_ns;    /* cost of one clock read */
	const char *dump_ops; /* write the sequence for apcu.php and stop */
	bool sweep;
	size_t sweep_batch;
	double zipf_theta;
};

/* pow() without libm: the Makefile links benchmarks with -pthread -lrt
 * only. x > 0; accurate to ~1e-15, plenty for drawing random keys. */
static double log_pos(double x)
{
	uint64_t bits;
	double m, t, t2, sum = 0, term;
	int e;

	memcpy(&bits, &x, 8);
	e = (int)((bits >> 52) & 0x7ff) - 1023;
	bits = (bits & ((UINT64_C(1) << 52) - 1)) | (UINT64_C(1023) << 52);
	memcpy(&m, &bits, 8); /* x = m * 2^e, m in [1, 2) */
	if (m > 1.4142135623730951) {
		m /= 2;
		e++;
	}
	t = (m - 1) / (m + 1); /* log m = 2 atanh t, |t| < 0.18 */
	t2 = t * t;
	term = t;
	for (int k = 1; k < 40; k += 2, term *= t2)
		sum += term / k;
	return 2 * sum + e * 0.6931471805599453;
}

static double exp_any(double x)
{
	const double k = (double)(int64_t)(x / 0.6931471805599453 +
					   (x < 0 ? -0.5 : 0.5));
	const double r = x - k * 0.6931471805599453;
	double sum = 1, term = 1, scale;
	uint64_t bits;

	if (k < -1000)
		return 0;
	for (int i = 1; i < 25; i++) {
		term *= r / i;
		sum += term;
	}
	bits = (uint64_t)((int64_t)k + 1023) << 52;
	memcpy(&scale, &bits, 8);
	return sum * scale;
}

static double pow_pos(double x, double y)
{
	return exp_any(y * log_pos(x));
}

/* Zipf over [0, n) (Gray et al., "Quickly generating billion-record
 * synthetic databases", as YCSB does it); rank 0 is the hottest. */
struct zipf {
	double n, theta, alpha, zetan, eta, half_pow;
};

static void zipf_init(struct zipf *z, uint64_t n, double theta)
{
	double zeta2 = 1.0 + pow_pos(0.5, theta);

	z->n = (double)n;
	z->theta = theta;
	z->zetan = 0;
	for (uint64_t i = 1; i <= n; i++)
		z->zetan += 1.0 / pow_pos((double)i, theta);
	z->alpha = 1.0 / (1.0 - theta);
	z->eta = (1.0 - pow_pos(2.0 / z->n, 1.0 - theta)) /
		 (1.0 - zeta2 / z->zetan);
	z->half_pow = 1.0 + pow_pos(0.5, theta);
}

static uint64_t zipf_next(const struct zipf *z, uint64_t *rng)
{
	double u = (double)(rng_next(rng) >> 11) / 9007199254740992.0;
	double uz = u * z->zetan;
	uint64_t r;

	if (uz < 1.0)
		return 0;
	if (uz < z->half_pow)
		return 1;
	r = (uint64_t)(z->n * pow_pos(z->eta * u - z->eta + 1.0, z->alpha));
	return r < (uint64_t)z->n ? r : (uint64_t)z->n - 1;
}

/* The sequence of workload wl: b->seq_len operations. */
static struct op *make_ops(const struct bench *b, enum workload wl)
{
	static const unsigned set_permille[W_COUNT] = {
		[W_SET] = 1000, [W_MIX95] = 50, [W_MIX50] = 500
	};
	struct op *ops = malloc(b->seq_len * sizeof(*ops));
	uint64_t rng = UINT64_C(0x9e3779b97f4a7c15) + wl, kr = rng ^ 0x5555;
	struct zipf z;

	if (!ops)
		return NULL;
	if (b->dist_zipf)
		zipf_init(&z, b->cfg.nkeys, b->zipf_theta);
	for (uint64_t i = 0; i < b->seq_len; i++) {
		uint64_t idx = b->dist_zipf ? b->perm[zipf_next(&z, &rng)] :
					      rng_next(&rng) % b->cfg.nkeys;
		struct op *o = &ops[i];
		o->idx = (uint32_t)idx;
		if (wl == W_INCR)
			o->kind = K_INCR;
		else if (rng_next(&kr) % 1000 < set_permille[wl])
			o->kind = K_SET;
		else
			o->kind = K_GET;
		make_key(o->key, wl == W_INCR ? "ctr:" : "key:", idx);
	}
	return ops;
}

/* ---- one worker --------------------------------------------------------- */

/* Operations until the next timed one: 32..95 at random, not a fixed 64,
 * which would alias with anything periodic in the store (a SET of 128-byte
 * items crosses a page every 32 operations: a fixed period samples the
 * same phase every time). */
static inline uint32_t sample_gap(uint64_t *rng)
{
	return SAMPLE_EVERY / 2 + (uint32_t)(rng_next(rng) >> 58);
}

struct worker {
	const struct backend *be;
	void *h;
	const struct op *ops;
	uint64_t mask, pos;
	size_t vsize;
	uint64_t gen;
	uint8_t *vbuf, *rbuf; /* the value written, the buffer read into */
	size_t rbuf_len;
	uint32_t *samples; /* SAMPLE_CAP, in shared memory */
	uint64_t nsamples, until_sample, rng;
	uint64_t clock_ns;
	bool sample;
	bool deferred;   /* pipelined: replies (and their checks) come later */
	int64_t incr_ok; /* increments that returned 0 (all of them) */
	uint64_t misses; /* gets of a key the store had evicted */
	char err[160];
};

/* Run n operations; 0, or -1 with w->err saying what was wrong. Always
 * inlined, so each caller below gets a copy specialised for its backend. */
static inline __attribute__((always_inline)) int
run_ops(const struct backend *be, struct worker *w, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct op *o = &w->ops[w->pos];
		const bool timed = w->sample &&
				   unlikely(--w->until_sample == 0);
		uint64_t t0 = 0;
		size_t vlen = 0;
		int64_t r = 0;
		int err;

		w->pos = (w->pos + 1) & w->mask;
		if (timed)
			t0 = now_ns();
		switch (o->kind) {
		case K_GET:
			err = be->get(w->h, o->key, w->rbuf, w->rbuf_len,
				      &vlen);
			if (unlikely(err == -ENOENT)) { /* evicted: a miss */
				w->misses++;
				break;
			}
			if (unlikely(err || ((!be->remote || !w->deferred) &&
					     !value_ok(w->rbuf, vlen, w->vsize,
						       o->idx)))) {
				snprintf(w->err, sizeof(w->err),
					 "get key %u: %s, %zu bytes", o->idx,
					 kvshm_strerror(err), vlen);
				return -1;
			}
			break;
		case K_SET:
			if (w->vsize >= 16) {
				uint64_t idx = o->idx, gen = ++w->gen;
				memcpy(w->vbuf, &idx, 8);
				memcpy(w->vbuf + 8, &gen, 8);
			}
			err = be->set(w->h, o->key, w->vbuf, w->vsize);
			if (unlikely(err)) {
				snprintf(w->err, sizeof(w->err),
					 "set key %u: %s", o->idx,
					 kvshm_strerror(err));
				return -1;
			}
			break;
		default:
			err = be->incr(w->h, o->key, 1, &r);
			if (unlikely(err || ((!be->remote || !w->deferred) &&
					     r <= 0))) {
				snprintf(w->err, sizeof(w->err),
					 "incr key %u: %s, result %" PRId64,
					 o->idx, kvshm_strerror(err), r);
				return -1;
			}
			w->incr_ok++;
			break;
		}
		if (timed) {
			uint64_t d = now_ns() - t0;
			w->until_sample = sample_gap(&w->rng);
			d = d > w->clock_ns ? d - w->clock_ns : 0;
			w->samples[w->nsamples++ % SAMPLE_CAP] =
				d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		}
	}
	if (be->flush && be->flush(w->h)) {
		snprintf(w->err, sizeof(w->err), "flush: the server failed");
		return -1;
	}
	return 0;
}

static int run_kvshm(struct worker *w, size_t n)
{
	return run_ops(&backend_kvshm, w, n);
}

static int run_inproc(struct worker *w, size_t n)
{
	return run_ops(&backend_inproc, w, n);
}

static int run_generic(struct worker *w, size_t n)
{
	return run_ops(w->be, w, n);
}

typedef int (*run_fn)(struct worker *w, size_t n);

static run_fn runner_for(const struct backend *be)
{
	if (be == &backend_kvshm)
		return run_kvshm;
	if (be == &backend_inproc)
		return run_inproc;
	return run_generic;
}

struct result {
	uint64_t ops, ns, nsamples;
	int64_t incr_ok; /* warm-up included */
	uint64_t misses; /* warm-up included */
	int32_t failed;
	char err[160];
};

static void worker_main(struct bench *b, const struct op *ops, int proc,
			int nprocs, uint32_t *samples, int ready_fd, int go_fd,
			int res_fd)
{
	const run_fn run = runner_for(b->be);
	const uint64_t budget = (uint64_t)(b->seconds * 1e9);
	struct result res = { 0 };
	struct worker w = {
		.be = b->be,
		.ops = ops,
		.mask = b->seq_len - 1,
		.pos = b->seq_len / (uint64_t)nprocs * (uint64_t)proc,
		.vsize = b->cfg.vsize,
		.samples = samples,
		.clock_ns = b->clock_ns,
		.rbuf_len = b->cfg.vsize + 64,
		.deferred = b->cfg.pipeline > 1,
	};
	uint64_t start, now, warm = 0, warm_until;
	bool writes = false;
	char c = 'r';

	for (uint64_t i = 0; i < b->seq_len && !writes; i++)
		writes = ops[i].kind != K_GET;

	w.vbuf = malloc(w.vsize + 16);
	w.rbuf = malloc(w.rbuf_len);
	if (!w.vbuf || !w.rbuf || b->be->attach(b->state, false, &w.h)) {
		res.failed = 1;
		snprintf(res.err, sizeof(res.err), "attach failed");
		goto report;
	}
	make_value(w.vbuf, w.vsize, 0, 0);
	if (b->be == &backend_inproc && writes)
		tbl_own_pages(b->state);
	w.rng = UINT64_C(0x2545f4914f6cdd1d) + (uint64_t)proc;
	w.until_sample = sample_gap(&w.rng);
	/* Warm up over the whole sequence (or for the time budget, or 2000
	 * operations of a socket peer): page faults, caches, copy-on-write. */
	warm_until = now_ns() + budget;
	while (warm < (b->be->remote ? 2048 : b->seq_len)) {
		if (run(&w, BATCH)) {
			res.failed = 1;
			break;
		}
		warm += BATCH;
		if (now_ns() > warm_until)
			break;
	}
	w.sample = !b->cfg.pipeline || b->cfg.pipeline == 1;
report:
	if (write(ready_fd, &c, 1) != 1 || read(go_fd, &c, 1) != 0)
		_exit(2); /* the parent went away */
	start = now = now_ns();
	while (!res.failed) {
		if (run(&w, BATCH)) {
			res.failed = 1;
			break;
		}
		res.ops += BATCH;
		now = now_ns();
		if (now - start >= budget)
			break;
	}
	res.ns = now - start;
	/* the timed operations' clock reads are not the store's time */
	if (res.ns > 2 * w.nsamples * w.clock_ns)
		res.ns -= 2 * w.nsamples * w.clock_ns;
	res.nsamples = w.nsamples < SAMPLE_CAP ? w.nsamples : SAMPLE_CAP;
	res.incr_ok = w.incr_ok;
	res.misses = w.misses;
	if (res.failed && !res.err[0])
		memcpy(res.err, w.err, sizeof(res.err));
	if (w.h)
		b->be->detach(w.h);
	if (write(res_fd, &res, sizeof(res)) != (ssize_t)sizeof(res))
		_exit(2);
	_exit(res.failed ? 1 : 0);
}

/* ---- one case ----------------------------------------------------------- */

struct case_result {
	enum workload wl;
	int nprocs;
	uint64_t ops[MAX_PROCS], ns[MAX_PROCS];
	double ns_per_op; /* mean over processes */
	double mops;      /* sum over processes */
	double p50, p99, p999;
	uint64_t nsamples;
	int64_t incr_ok;
	uint64_t misses;
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

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static double percentile(const uint32_t *sorted, uint64_t n, double q)
{
	if (!n)
		return 0;
	return sorted[(uint64_t)(q * (double)(n - 1) + 0.5)];
}

/* Gather every worker's samples at the front and sort them. */
static void latencies(uint32_t *samples, const uint64_t *counts, int nprocs,
		      struct case_result *cr)
{
	uint64_t n = 0;

	for (int p = 0; p < nprocs; p++) {
		memmove(samples + n, samples + (uint64_t)p * SAMPLE_CAP,
			counts[p] * sizeof(*samples));
		n += counts[p];
	}
	qsort(samples, n, sizeof(*samples), cmp_u32);
	cr->nsamples = n;
	cr->p50 = percentile(samples, n, 0.50);
	cr->p99 = percentile(samples, n, 0.99);
	cr->p999 = percentile(samples, n, 0.999);
}

static int run_case(struct bench *b, const struct op *ops, enum workload wl,
		    int nprocs, uint32_t *samples, struct case_result *cr)
{
	int ready[2], go[2], res[2], failed = 0;
	uint64_t counts[MAX_PROCS] = { 0 };
	pid_t pid[MAX_PROCS];
	char c;

	*cr = (struct case_result){ .wl = wl, .nprocs = nprocs };
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
			close(ready[0]);
			close(go[1]);
			close(res[0]);
			worker_main(b, ops, p, nprocs,
				    samples + (uint64_t)p * SAMPLE_CAP,
				    ready[1], go[0], res[1]);
		}
	}
	close(ready[1]);
	close(go[0]);
	close(res[1]);
	for (int p = 0; p < nprocs; p++)
		if (read(ready[0], &c, 1) != 1)
			failed = 1;
	close(go[1]); /* the start signal: every worker reads EOF */
	for (int p = 0; p < nprocs; p++) {
		struct result r;
		if (read_full(res[0], &r, sizeof(r))) {
			failed = 1;
			break;
		}
		if (r.failed) {
			fprintf(stderr, "%s %s, %d process(es): %s\n",
				b->be->name, workload_names[wl], nprocs, r.err);
			failed = 1;
			continue;
		}
		cr->ops[p] = r.ops;
		cr->ns[p] = r.ns;
		cr->incr_ok += r.incr_ok;
		cr->misses += r.misses;
		counts[p] = r.nsamples;
		cr->ns_per_op += (double)r.ns / (double)r.ops / nprocs;
		cr->mops += (double)r.ops / (double)r.ns * 1e3;
	}
	for (int p = 0; p < nprocs; p++) {
		int status;
		if (waitpid(pid[p], &status, 0) != pid[p] ||
		    !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed = 1;
	}
	close(ready[0]);
	close(res[0]);
	if (!failed)
		latencies(samples, counts, nprocs, cr);
	cr->failed = failed;
	return failed ? -1 : 0;
}

/* ---- fill, checks ------------------------------------------------------- */

static int fill(struct bench *b)
{
	uint8_t *v = malloc(b->cfg.vsize + 16);
	uint8_t key[KEY_LEN];
	void *h = NULL;
	int err = v ? b->be->attach(b->state, true, &h) : -ENOMEM;

	for (uint64_t i = 0; i < b->cfg.nkeys && !err; i++) {
		make_value(v, b->cfg.vsize, i, 0);
		make_key(key, "key:", i);
		err = b->be->set(h, key, v, b->cfg.vsize);
	}
	for (uint64_t i = 0; i < b->cfg.nkeys && b->cfg.counters && !err; i++) {
		make_key(key, "ctr:", i);
		err = b->be->counter_init(h, key);
	}
	if (!err && b->be->flush)
		err = b->be->flush(h);
	if (h)
		b->be->detach(h);
	free(v);
	if (err)
		fprintf(stderr, "%s: filling the store: %s\n", b->be->name,
			kvshm_strerror(err));
	return err;
}

static int sum_counters(struct bench *b, int64_t *sum)
{
	uint8_t key[KEY_LEN];
	void *h;
	int err = b->be->attach(b->state, false, &h);

	*sum = 0;
	for (uint64_t i = 0; i < b->cfg.nkeys && !err; i++) {
		int64_t c = 0;
		make_key(key, "ctr:", i);
		err = b->be->counter_read(h, key, &c);
		*sum += c;
	}
	if (!err)
		b->be->detach(h);
	return err;
}

/* ---- output ------------------------------------------------------------- */

static void machine(char *model, size_t len, struct utsname *u)
{
	char line[256];
	FILE *f = fopen("/proc/cpuinfo", "r");

	snprintf(model, len, "unknown");
	while (f && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (strncmp(line, "model name", 10) == 0 && colon) {
			snprintf(model, len, "%s", colon + 2);
			model[strcspn(model, "\n")] = '\0';
			break;
		}
	}
	if (f)
		fclose(f);
	if (uname(u))
		snprintf(u->release, sizeof(u->release), "unknown");
}

static void print_header(const struct bench *b, const struct bench_mem *m)
{
	char model[128];
	struct utsname u;

	machine(model, sizeof(model), &u);
	if (b->json)
		return;
	printf("# %s: %zu keys of %d B, values of %zu B, %s keys, %.2f s per "
	       "case\n# machine: %ld cpus, \"%s\", linux %s; clock read %" PRIu64
	       " ns (subtracted)\n",
	       b->be->name, b->cfg.nkeys, KEY_LEN, b->cfg.vsize,
	       b->dist_zipf ? "zipf(0.99)" : "uniform", b->seconds,
	       sysconf(_SC_NPROCESSORS_ONLN), model, u.release, b->clock_ns);
	if (m->items)
		printf("# memory: %" PRIu64 " items, %.1f B/item in the item "
		       "area (%.1f beyond key+value), %.1f B/item of "
		       "index and tables, %.1f MiB store\n",
		       m->items, (double)m->used_bytes / (double)m->items,
		       (double)m->used_bytes / (double)m->items -
			       (double)(KEY_LEN + b->cfg.vsize),
		       (double)m->index_bytes / (double)m->items,
		       (double)m->store_bytes / MIB);
}

static void print_columns(void)
{
	printf("%-9s %-8s %5s %10s %9s %9s %9s %9s %9s  %s\n", "system",
	       "workload", "procs", "ns/op", "Mops/s", "p50 ns", "p99 ns",
	       "p999 ns", "samples", "ns/op per process");
}

static void print_case(const struct bench *b, const struct case_result *cr,
		       const struct bench_mem *m)
{
	if (b->json) {
		char model[128];
		struct utsname u;
		machine(model, sizeof(model), &u);
		printf("{\"backend\":\"%s\",\"workload\":\"%s\",\"dist\":\"%s\","
		       "\"keys\":%zu,\"key_bytes\":%d,\"value_bytes\":%zu,"
		       "\"procs\":%d,\"pipeline\":%d,\"seconds\":%.3f,"
		       "\"repeat\":%d,"
		       "\"failed\":%s,\"ns_per_op\":%.2f,\"mops\":%.4f,"
		       "\"p50_ns\":%.0f,\"p99_ns\":%.0f,\"p999_ns\":%.0f,"
		       "\"samples\":%" PRIu64 ",\"misses\":%" PRIu64
		       ",\"ns_per_op_per_proc\":[",
		       b->be->name, workload_names[cr->wl],
		       b->dist_zipf ? "zipf" : "uniform", b->cfg.nkeys, KEY_LEN,
		       b->cfg.vsize, cr->nprocs,
		       b->cfg.pipeline ? b->cfg.pipeline : 1, b->seconds,
		       b->repeat, cr->failed ? "true" : "false", cr->ns_per_op,
		       cr->mops, cr->p50, cr->p99, cr->p999, cr->nsamples,
		       cr->misses);
		for (int p = 0; p < cr->nprocs; p++)
			printf("%s%.2f", p ? "," : "",
			       cr->ops[p] ?
				       (double)cr->ns[p] / (double)cr->ops[p] :
				       0.0);
		printf("],\"items\":%" PRIu64 ",\"store_bytes\":%" PRIu64
		       ",\"used_bytes\":%" PRIu64 ",\"index_bytes\":%" PRIu64
		       ",\"evictions\":%" PRIu64 ",\"clock_ns\":%" PRIu64
		       ",\"cpus\":%ld,\"cpu\":\"%s\",\"kernel\":\"%s\"}\n",
		       m->items, m->store_bytes, m->used_bytes, m->index_bytes,
		       m->evictions, b->clock_ns, sysconf(_SC_NPROCESSORS_ONLN),
		       model, u.release);
		return;
	}
	if (cr->failed) {
		printf("%-9s %-8s %5d   failed: see the messages above\n",
		       b->be->name, workload_names[cr->wl], cr->nprocs);
		return;
	}
	printf("%-9s %-8s %5d %10.1f %9.2f %9.0f %9.0f %9.0f %9" PRIu64 " ",
	       b->be->name, workload_names[cr->wl], cr->nprocs, cr->ns_per_op,
	       cr->mops, cr->p50, cr->p99, cr->p999, cr->nsamples);
	for (int p = 0; p < cr->nprocs; p++)
		printf(" %.1f", (double)cr->ns[p] / (double)cr->ops[p]);
	if (cr->misses)
		printf("  (%" PRIu64 " gets missed: evicted)", cr->misses);
	printf("\n");
}

/* ---- the sweep measurement ---------------------------------------------- */

/* CPU time to reclaim N expired items with kvshm_sweep() in batches, and
 * the longest single call (an upper bound on a lock hold, which only
 * library instrumentation could measure exactly). */
static int run_sweep(struct bench *b)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	const size_t n = b->cfg.nkeys;
	uint64_t cpu0, wall0, max_call = 0, calls = 0, total = 0;
	uint8_t key[KEY_LEN], val[64] = { 0 };
	struct kvshm *kv;
	char name[64];
	int err;

	snprintf(name, sizeof(name), "kvshm-bench-sweep-%ld", (long)getpid());
	o.flags = KVSHM_CREATE | KVSHM_EXCL;
	o.max_items = n + n / 4 + 1024;
	o.arena_bytes = 3 * n * 128 + 64 * MIB;
	err = kvshm_open(name, &o, &kv);
	if (err) {
		fprintf(stderr, "kvshm_open: %s\n", kvshm_strerror(err));
		return 1;
	}
	for (size_t i = 0; i < n && !err; i++) {
		make_key(key, "exp:", i);
		err = kvshm_set(kv, key, KEY_LEN, val, sizeof(val), 1);
	}
	usleep(20000); /* every item is expired now */
	cpu0 = cpu_ns();
	wall0 = now_ns();
	while (!err) {
		size_t got = 0;
		uint64_t t = now_ns();
		err = kvshm_sweep(kv, b->sweep_batch, &got);
		t = now_ns() - t;
		max_call = t > max_call ? t : max_call;
		calls++;
		total += got;
		if (got == 0)
			break;
	}
	cpu0 = cpu_ns() - cpu0;
	wall0 = now_ns() - wall0;
	if (err)
		fprintf(stderr, "kvshm_sweep: %s\n", kvshm_strerror(err));
	if (b->json)
		printf("{\"sweep_items\":%zu,\"reclaimed\":%" PRIu64
		       ",\"batch\":%zu,\"calls\":%" PRIu64
		       ",\"cpu_s\":%.4f,\"wall_s\":%.4f,\"max_call_us\":%.1f}\n",
		       n, total, b->sweep_batch, calls, cpu0 / 1e9, wall0 / 1e9,
		       max_call / 1e3);
	else
		printf("sweep: %" PRIu64 " of %zu expired items reclaimed in "
		       "%" PRIu64 " calls of kvshm_sweep(max %zu): %.3f s CPU, "
		       "%.3f s wall, longest call %.1f us (a call holds "
		       "several locks in turn; the longest single hold needs "
		       "library instrumentation)\n",
		       total, n, calls, b->sweep_batch, cpu0 / 1e9, wall0 / 1e9,
		       max_call / 1e3);
	kvshm_close(kv);
	kvshm_unlink(name);
	return err || total != n;
}

/* ---- main --------------------------------------------------------------- */

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [options]\n"
		"  --backend B,..    kvshm (default), inproc",
		argv0);
	for (size_t i = 2; i < sizeof(backends) / sizeof(backends[0]); i++)
		fprintf(stderr, ", %s", backends[i]->name);
	fprintf(stderr,
		"\n"
		"  --workload W,..   GET, SET, INCR, MIX95, MIX50 or all "
		"(default GET)\n"
		"  --dist D          uniform (default) or zipf (theta 0.99)\n"
		"  --keys N          keys (default 100000)\n"
		"  --value BYTES     value size (default 64)\n"
		"  --procs P,..      process counts (default 1)\n"
		"  --seconds S       time per case (default 2; warm-up up to "
		"as long)\n"
		"  --repeat R        run each case R times (systems "
		"interleaved), show the median\n"
		"  --quick           0.3 s per case\n"
		"  --json            one JSON object per case\n"
		"  --arena MIB       kvshm arena (default: 4x the items)\n"
		"  --target PATH     peer's socket or directory\n"
		"  --pipeline N      socket peers: N requests per round trip\n"
		"  --dump-ops FILE   write the first workload's sequence "
		"(uint32 key number | 1<<31 for a set) and exit\n"
		"  --sweep [--batch N]  CPU time of kvshm_sweep over --keys "
		"expired items (default batch 1000)\n");
	exit(2);
}

static bool parse_list(const char *s, int *out, int *n, int max)
{
	char *end;

	*n = 0;
	do {
		long v = strtol(s, &end, 10);
		if (end == s || v < 1 || v > MAX_PROCS || *n == max)
			return false;
		out[(*n)++] = (int)v;
		s = end + (*end == ',');
	} while (*end == ',');
	return *end == '\0';
}

static bool parse_workloads(const char *s, unsigned *mask)
{
	char buf[128], *save = NULL, *tok;

	*mask = 0;
	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		int w;
		if (strcasecmp(tok, "all") == 0) {
			*mask = (1u << W_COUNT) - 1;
			continue;
		}
		for (w = 0; w < W_COUNT; w++)
			if (strcasecmp(tok, workload_names[w]) == 0)
				break;
		if (w == W_COUNT)
			return false;
		*mask |= 1u << w;
	}
	return *mask != 0;
}

/* "kvshm,inproc": several systems in one run, filled once each, their
 * cases interleaved (see run_cases). */
static bool parse_backends(const char *s, struct bench *b)
{
	char buf[128], *save = NULL, *tok;
	const size_t n = sizeof(backends) / sizeof(backends[0]);

	b->nsys = 0;
	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		size_t j;
		for (j = 0; j < n; j++)
			if (!strcmp(tok, backends[j]->name))
				break;
		if (j == n || b->nsys == MAX_SYS)
			return false;
		b->sys[b->nsys++].be = backends[j];
	}
	return b->nsys > 0;
}

static void parse_args(int argc, char **argv, struct bench *b)
{
	b->sys[0].be = b->be = &backend_kvshm;
	b->nsys = 1;
	b->repeat = 1;
	b->cfg.nkeys = 100000;
	b->cfg.vsize = 64;
	b->seconds = 2;
	b->workloads = 1u << W_GET;
	b->procs[0] = 1;
	b->nprocs_list = 1;
	b->sweep_batch = 1000;
	b->zipf_theta = 0.99;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i],
			   *val = i + 1 < argc ? argv[i + 1] : "";
		char *end = (char *)"";
		bool ok = true;
		if (!strcmp(arg, "--json")) {
			b->json = true;
			continue;
		} else if (!strcmp(arg, "--quick")) {
			b->quick = true;
			b->seconds = 0.3;
			continue;
		} else if (!strcmp(arg, "--sweep")) {
			b->sweep = true;
			continue;
		} else if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			usage(argv[0]);
		}
		i++;
		if (!strcmp(arg, "--backend")) {
			ok = parse_backends(val, b);
		} else if (!strcmp(arg, "--repeat")) {
			long n = strtol(val, &end, 10);
			ok = n >= 1 && n <= MAX_REPEAT;
			b->repeat = (int)n;
		} else if (!strcmp(arg, "--workload")) {
			ok = parse_workloads(val, &b->workloads);
		} else if (!strcmp(arg, "--dist")) {
			ok = !strcmp(val, "uniform") || !strcmp(val, "zipf");
			b->dist_zipf = !strcmp(val, "zipf");
		} else if (!strcmp(arg, "--keys")) {
			unsigned long long n = strtoull(val, &end, 10);
			ok = n >= 16 && n <= UINT32_MAX / 2;
			b->cfg.nkeys = (size_t)n;
		} else if (!strcmp(arg, "--value")) {
			unsigned long long n = strtoull(val, &end, 10);
			ok = n <= MAX_VALUE;
			b->cfg.vsize = (size_t)n;
		} else if (!strcmp(arg, "--procs")) {
			ok = parse_list(val, b->procs, &b->nprocs_list,
					MAX_PROCS);
		} else if (!strcmp(arg, "--seconds")) {
			b->seconds = strtod(val, &end);
			ok = b->seconds > 0 && b->seconds <= 3600;
		} else if (!strcmp(arg, "--arena")) {
			b->cfg.arena = strtoull(val, &end, 10) * MIB;
		} else if (!strcmp(arg, "--target")) {
			b->cfg.target = val;
		} else if (!strcmp(arg, "--pipeline")) {
			long n = strtol(val, &end, 10);
			ok = n >= 1 && n <= 4096;
			b->cfg.pipeline = (int)n;
		} else if (!strcmp(arg, "--dump-ops")) {
			b->dump_ops = val;
		} else if (!strcmp(arg, "--batch")) {
			b->sweep_batch = strtoull(val, &end, 10);
		} else {
			ok = false;
		}
		if (!ok || i >= argc || *end)
			usage(argv[0]);
	}
	b->cfg.counters = b->workloads & (1u << W_INCR);
	for (int i = 0; i < b->nsys; i++)
		if (b->sys[i].be->remote && !b->cfg.target) {
			fprintf(stderr, "--backend %s needs --target\n",
				b->sys[i].be->name);
			exit(2);
		}
	b->be = b->sys[0].be;
}

static void use_sys(struct bench *b, const struct sys *y)
{
	b->be = y->be;
	b->state = y->state;
}

/* Ask the backend for its memory; after the fill all of it, later only the
 * eviction count changes. */
static void update_memory(struct bench *b, struct sys *y, bool all)
{
	struct bench_mem m = y->mem;
	void *h;

	if (!y->be->memory || y->be->attach(y->state, false, &h))
		return;
	if (!y->be->memory(y->state, h, &m)) {
		if (all)
			y->mem = m;
		else
			y->mem.evictions = m.evictions;
	}
	y->be->detach(h);
	(void)b;
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

/*
 * One workload at one process count on every system, b->repeat times, the
 * systems taking turns (kvshm, inproc, kvshm, inproc, ...) so a machine
 * whose speed drifts (a shared VM) slows all of them alike; then the
 * median of each. INCR is checked for exactness on every repetition.
 */
static int run_cases(struct bench *b, const struct op *ops, enum workload wl,
		     int nprocs, uint32_t *samples)
{
	static struct case_result reps[MAX_SYS][MAX_REPEAT];
	int failed = 0;

	for (int r = 0; r < b->repeat; r++) {
		for (int i = 0; i < b->nsys; i++) {
			struct case_result *cr = &reps[i][r];
			int64_t before = 0, after = 0;
			use_sys(b, &b->sys[i]);
			if (wl == W_INCR && sum_counters(b, &before))
				failed = 1;
			if (run_case(b, ops, wl, nprocs, samples, cr))
				failed = 1;
			/* each inproc worker counts in its own copy */
			if (wl != W_INCR || cr->failed ||
			    b->be == &backend_inproc)
				continue;
			if (sum_counters(b, &after) ||
			    after - before != cr->incr_ok) {
				fprintf(stderr,
					"%s INCR: counters grew by %" PRId64
					", %" PRId64
					" increments acknowledged\n",
					b->be->name, after - before,
					cr->incr_ok);
				cr->failed = true;
				failed = 1;
			}
		}
	}
	for (int i = 0; i < b->nsys; i++) {
		struct case_result cr;
		bool any_failed = false;
		for (int r = 0; r < b->repeat; r++)
			any_failed |= reps[i][r].failed;
		cr = median(reps[i], b->repeat);
		cr.failed = any_failed;
		use_sys(b, &b->sys[i]);
		update_memory(b, &b->sys[i], false);
		print_case(b, &cr, &b->sys[i].mem);
	}
	return failed;
}

/* Cost of one clock read: the smallest of many back-to-back differences. */
static uint64_t clock_cost(void)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 2000; i++) {
		uint64_t a = now_ns(), c = now_ns();
		best = c - a < best ? c - a : best;
	}
	return best;
}

static int dump_ops(struct bench *b)
{
	FILE *f = fopen(b->dump_ops, "wb");
	int w = __builtin_ctz(b->workloads);
	struct op *ops = make_ops(b, (enum workload)w);
	int failed = !f || !ops;

	for (uint64_t i = 0; !failed && i < b->seq_len; i++) {
		uint32_t v = ops[i].idx | (ops[i].kind == K_SET ? 1u << 31 : 0);
		failed = fwrite(&v, sizeof(v), 1, f) != 1;
	}
	if (f && fclose(f))
		failed = 1;
	free(ops);
	if (failed)
		fprintf(stderr, "--dump-ops %s failed\n", b->dump_ops);
	return failed;
}

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	uint32_t *samples = MAP_FAILED;
	size_t samples_len = 0;
	int failed = 0, err;

	parse_args(argc, argv, &b);
	if (b.sweep)
		return run_sweep(&b);
	b.clock_ns = clock_cost();
	for (b.seq_len = 1u << 20;
	     b.seq_len < (1u << 22) && b.seq_len < b.cfg.nkeys;)
		b.seq_len *= 2;
	if (b.dist_zipf) { /* rank -> key number, a random permutation */
		uint64_t rng = 42;
		b.perm = malloc(b.cfg.nkeys * sizeof(*b.perm));
		if (!b.perm)
			return 1;
		for (size_t i = 0; i < b.cfg.nkeys; i++)
			b.perm[i] = (uint32_t)i;
		for (size_t i = b.cfg.nkeys - 1; i > 0; i--) {
			size_t j = rng_next(&rng) % (i + 1);
			uint32_t t = b.perm[i];
			b.perm[i] = b.perm[j];
			b.perm[j] = t;
		}
	}
	if (b.dump_ops)
		return dump_ops(&b);
	for (int i = 0; i < b.nsys; i++) {
		struct sys *y = &b.sys[i];
		err = y->be->setup(&b.cfg, &y->state);
		if (err) {
			fprintf(stderr, "%s: setup: %s\n", y->be->name,
				kvshm_strerror(err));
			failed = 1;
			goto out;
		}
		y->ready = true;
		use_sys(&b, y);
		if (fill(&b)) {
			failed = 1;
			goto out;
		}
		update_memory(&b, y, true);
		print_header(&b, &y->mem);
	}
	if (!b.json)
		print_columns();
	samples_len = 0;
	for (int i = 0; i < b.nprocs_list; i++)
		if ((size_t)b.procs[i] * SAMPLE_CAP * 4 > samples_len)
			samples_len = (size_t)b.procs[i] * SAMPLE_CAP * 4;
	samples = mmap(NULL, samples_len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (samples == MAP_FAILED) {
		perror("mmap");
		failed = 1;
		goto out;
	}
	for (int wl = 0; wl < W_COUNT; wl++) {
		struct op *ops;
		if (!(b.workloads & (1u << wl)))
			continue;
		ops = make_ops(&b, (enum workload)wl);
		if (!ops) {
			failed = 1;
			break;
		}
		for (int i = 0; i < b.nprocs_list; i++)
			failed |= run_cases(&b, ops, (enum workload)wl,
					    b.procs[i], samples);
		free(ops);
	}
	for (int i = 0; i < b.nsys; i++) {
		struct sys *y = &b.sys[i];
		char report[256] = "";
		if (y->be != &backend_kvshm)
			continue;
		if (kvshm_check(((struct kv_state *)y->state)->kv, report,
				sizeof(report))) {
			fprintf(stderr, "kvshm_check: %s\n", report);
			failed = 1;
		}
		if (y->mem.evictions)
			fprintf(stderr,
				"note: %" PRIu64 " evictions: the arena was "
				"too small for this run (--arena)\n",
				y->mem.evictions);
	}
out:
	if (samples != MAP_FAILED)
		munmap(samples, samples_len);
	for (int i = 0; i < b.nsys; i++)
		if (b.sys[i].ready)
			b.sys[i].be->teardown(b.sys[i].state);
	free(b.perm);
	if (failed)
		fprintf(stderr, "FAILED: see the messages above\n");
	return failed;
}
