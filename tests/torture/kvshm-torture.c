/* SPDX-License-Identifier: MIT */
/*
 * kvshm-torture - a kill -9 soak: worker processes hammer one store while
 * the parent SIGKILLs and respawns them (and the janitor), checks the store
 * against a ledger of acknowledged operations, and watches for hangs. Uses
 * only <kvshm.h>; owns no library code.
 *
 * HOW IT WORKS
 *
 * Worker w exclusively owns the keys "k:w:i" and one counter "c:w"; every
 * worker also increments the shared counters "ctr:j" and the shared
 * compare-and-swap counter "cas" (a bytes value moved by KVSHM_CAS), and
 * writes short-lived keys "t:w:i" (TTL of a few ms) for expiry and the
 * janitor's sweeps. A value of "k:w:i" is a pure function of (key, seq), so
 * a value read back names the write that made it and any torn or foreign
 * byte shows.
 *
 * THE LEDGER lives in a MAP_SHARED|MAP_ANONYMOUS mapping made before the
 * first fork, so it outlives every worker. Per owned key: `acked` (the last
 * acknowledged write: seq << 2 | present or deleted) and `inflight` (the
 * write under way: seq << 2 | its op, or 0). A worker publishes inflight
 * (release) before the call and, after the call returned, acked and then
 * inflight = 0 (both release; the checker's acquire loads pair with them).
 * A kill anywhere leaves one of (a, 0), (a, f), (f, f), (f, 0): each says
 * exactly which store contents are allowed. Seqs come from the worker's
 * `seq`, which only grows, so a ledger state never repeats and a checker
 * that reads the same state before and after reading the store knows which
 * state the store was read under.
 *
 * Counters: per worker and counter, `acked` increments, `inflight` (0/1)
 * and `unknown` (increments in flight when a worker was killed; they may or
 * may not have landed). A worker bumps acked before clearing inflight, and a
 * respawned one moves inflight into unknown before clearing it, so
 * acked + unknown + inflight never decreases: the checker reads the lower
 * bound before the value and the upper bound (inflight, then unknown, then
 * acked) after it.
 *
 * Since one worker is the only writer of its keys, every outcome is exact:
 * add on a present key must say -EEXIST, a cas with the version just read
 * must succeed, a get must return the ledger's value. A respawned worker
 * first reconciles: it reads its key (or counter) in flight and records
 * whichever outcome is visible, which the library promises is all or
 * nothing and final.
 *
 * The store is created KVSHM_NOEVICT, so nothing live is ever evicted (the
 * end checks kvshm_stats().evictions == 0) and every acknowledged write
 * must stay visible.
 */
#include <kvshm.h>

#include "../lincheck.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NSHARED 4u /* shared counters ctr:0..3 */
#define NTTL 32u   /* short-lived keys per worker */
#define MAX_WORKERS 64u
#define HANG_MS 2000u /* an op running longer than this fails the run */
#define SPARE_MS 20u  /* the killer spares an op running this long */
#define CHECK_EVERY_MS 2000u
#define CHECK_SAMPLE 400u /* owned keys sampled per periodic check */
#define VAL_MAX 256u
#define KEY_MAX 48u
#define NLIN 8u /* shared keys "l:0".."l:7" whose histories are checked */
#define LIN_CAP 250000u  /* recorded ops per worker (then no more lin ops) */
#define VER_CAP 1000000u /* versions recorded per worker */

/* key ledger words: seq << 2 | state */
enum {
	ST_NONE = 0,
	ST_PRESENT = 1,
	ST_DELETED = 2
};

/* operations, for the heartbeat word and messages */
enum op {
	OP_IDLE = 0,
	OP_START,
	OP_GET,
	OP_SET,
	OP_ADD,
	OP_CAS,
	OP_DELETE,
	OP_EXPIRE,
	OP_INCR,
	OP_OWN_INCR,
	OP_CAS_CTR,
	OP_TTL_KEY,
	OP_LIN,
	OP_NOPS
};

static const char *const op_names[OP_NOPS] = {
	"idle",
	"open+reconcile",
	"get",
	"set",
	"add",
	"cas",
	"delete",
	"expire",
	"incr (shared counter)",
	"incr (own counter)",
	"cas (shared cas counter)",
	"short-TTL key op",
	"op on a shared checked key",
};

struct key_led {
	_Atomic uint64_t acked;    /* seq << 2 | ST_* of the last acked write */
	_Atomic uint64_t inflight; /* seq << 2 | ST_* of the write under way */
};

struct ctr_led {
	_Atomic uint64_t acked;    /* acknowledged increments */
	_Atomic uint64_t unknown;  /* killed while in flight: maybe landed */
	_Atomic uint64_t inflight; /* 0 or 1 */
};

/* One version a write of an owned key returned. */
struct ver_rec {
	uint64_t ver;
	uint32_t key; /* index among all owned keys */
	uint32_t pad;
};

struct worker_led {
	_Atomic uint64_t seq;      /* last seq handed out; only grows */
	_Atomic uint64_t nvers;    /* ver_rec used in this worker's log */
	_Atomic uint64_t hb;       /* monotonic ms of op start << 8 | op */
	_Atomic uint64_t ops;      /* operations acknowledged */
	_Atomic uint64_t verified; /* reads compared against the ledger */
	struct ctr_led shared[NSHARED];
	struct ctr_led cas;
	struct ctr_led own;   /* exact: only this worker writes c:w */
	struct ver_rec *vers; /* VER_CAP, in a shared mapping of its own */
};

/* The whole shared mapping: header, then workers, then keys. */
struct ledger {
	_Atomic uint64_t failures;
	_Atomic uint32_t stop;       /* threads mode: workers return */
	_Atomic uint64_t resize_gen; /* odd while the parent resizes */
	uint64_t t0_ms, t1_ms;       /* the run's start and end (monotonic), set
				  before the first worker starts */
	uint32_t nworkers;
	uint32_t keys_per_worker;
	struct worker_led w[MAX_WORKERS];
	struct key_led keys[]; /* nworkers * keys_per_worker */
};

struct config {
	unsigned workers;
	unsigned seconds;
	unsigned keys;
	unsigned arena_mib;
	unsigned kill_ms;
	unsigned resize_ms;
	const char *janitor;
	uint64_t seed;
	bool threads;
	char name[128];
};

/* one worker's context (a child process, or a thread) */
struct worker {
	struct kvshm *kv;
	struct worker_led *wl;
	struct key_led *keys;
	unsigned id;
	uint64_t rng;
	uint64_t lin_last[NLIN], lin_old[NLIN]; /* versions seen of l:k */
};

static struct config cfg;
static struct ledger *L;
static struct lc_log *LOG; /* histories of the l:k keys; slot nworkers is
			      the parent's (resizes) */
static volatile sig_atomic_t interrupted;

/* ---- small helpers ------------------------------------------------------ */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000u, (long)(ms % 1000u) * 1000000L };

	nanosleep(&ts, NULL);
}

static uint64_t rnd(uint64_t *s)
{
	/* splitmix64: good enough, and one word of state */
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static unsigned rnd_below(uint64_t *s, unsigned n)
{
	return n ? (unsigned)(rnd(s) % n) : 0;
}

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "torture: FAIL: %s\n", buf);
	atomic_fetch_add_explicit(&L->failures, 1, memory_order_relaxed);
}

static bool failed(void)
{
	return atomic_load_explicit(&L->failures, memory_order_relaxed) != 0;
}

static int key_name(char *buf, const char *kind, unsigned w, unsigned i)
{
	return snprintf(buf, KEY_MAX, "%s:%u:%u", kind, w, i);
}

/* The value written by seq to key: "key=seq;" then filler that depends on
 * both, 0..150 bytes of it, so lengths vary and any torn copy shows. */
static size_t make_value(char *buf, const char *key, uint64_t seq)
{
	int n = snprintf(buf, VAL_MAX, "%s=%" PRIu64 ";", key, seq);
	uint64_t s = seq * UINT64_C(0x9e3779b97f4a7c15) + (uint64_t)n;
	size_t len = (size_t)n + (size_t)(seq % 151u);

	for (size_t i = (size_t)n; i < len; i++)
		buf[i] = (char)('a' + (rnd(&s) % 26u));
	return len;
}

/* The seq that made val for key, or 0 if val is not exactly such a value. */
static uint64_t parse_value(const char *key, const char *val, size_t len)
{
	char want[VAL_MAX];
	size_t klen = strlen(key);
	uint64_t seq = 0;
	size_t i;

	if (len <= klen + 1 || memcmp(val, key, klen) || val[klen] != '=')
		return 0;
	for (i = klen + 1; i < len && val[i] >= '0' && val[i] <= '9'; i++)
		seq = seq * 10u + (uint64_t)(val[i] - '0');
	if (seq == 0 || make_value(want, key, seq) != len ||
	    memcmp(want, val, len))
		return 0;
	return seq;
}

static void heartbeat(struct worker_led *wl, enum op op)
{
	/* release: pairs with the watchdog's acquire load; one word, so the
	 * watchdog never pairs one op's name with another's start time */
	atomic_store_explicit(&wl->hb, mono_ms() << 8 | (uint64_t)op,
			      memory_order_release);
}

static const char *state_name(uint64_t word)
{
	switch (word & 3u) {
	case ST_PRESENT:
		return "present";
	case ST_DELETED:
		return "deleted";
	default:
		return "never written";
	}
}

/* ---- reading a key and judging it against the ledger -------------------- */

/* What the store holds for an owned key: 0 absent, else the seq of its
 * value; -1 if it holds a value no write of ours could have made (err and
 * the bytes go to the caller's message), -2 on an unexpected error. */
static int64_t read_owned(struct kvshm *kv, const char *key, char *msg,
			  size_t msglen)
{
	char val[VAL_MAX];
	size_t vlen = 0;
	int err = kvshm_get(kv, key, strlen(key), val, sizeof(val), &vlen);
	uint64_t seq;

	if (err == -ENOENT)
		return 0;
	if (err) {
		snprintf(msg, msglen, "get %s: %s", key, kvshm_strerror(err));
		return -2;
	}
	seq = parse_value(key, val, vlen);
	if (!seq) {
		snprintf(msg, msglen,
			 "%s holds a value no write made: %zu "
			 "bytes \"%.*s\"",
			 key, vlen, (int)(vlen < 60 ? vlen : 60), val);
		return -1;
	}
	return (int64_t)seq;
}

/* Does the store content got (0 absent, else a seq) match ledger word w? */
static bool outcome_is(uint64_t w, int64_t got)
{
	if ((w & 3u) == ST_PRESENT)
		return got == (int64_t)(w >> 2);
	return got == 0; /* deleted or never written */
}

static void describe(char *buf, size_t len, uint64_t acked, uint64_t inflight,
		     int64_t got)
{
	char g[48];

	if (got == 0)
		snprintf(g, sizeof(g), "absent");
	else
		snprintf(g, sizeof(g), "the value of seq %" PRId64, got);
	char f[48];

	if (inflight)
		snprintf(f, sizeof(f), "seq %" PRIu64 " (%s)", inflight >> 2,
			 (inflight & 3u) == ST_DELETED ? "delete" : "write");
	else
		snprintf(f, sizeof(f), "none");
	snprintf(buf, len,
		 "ledger: last acked seq %" PRIu64 " (%s), in flight %s; "
		 "store holds %s",
		 acked >> 2, state_name(acked), f, g);
}

/* ---- the worker --------------------------------------------------------- */

static int bad_result(struct worker *wk, const char *what, int err,
		      int expected, const char *key)
{
	fail("worker %u pid %ld: %s %s returned %d (%s), the ledger says it "
	     "must return %d (%s)",
	     wk->id, (long)getpid(), what, key, err, kvshm_strerror(err),
	     expected, expected ? kvshm_strerror(expected) : "success");
	return -1;
}

static void key_begin(struct key_led *kl, uint64_t seq, unsigned st)
{
	/* release: the checker that sees this may see the write itself */
	atomic_store_explicit(&kl->inflight, seq << 2 | st,
			      memory_order_release);
}

static void key_ack(struct worker *wk, struct key_led *kl, uint64_t word)
{
	/* acked before inflight = 0, both release: a checker that sees
	 * inflight == 0 (acquire) also sees the new acked */
	atomic_store_explicit(&kl->acked, word, memory_order_release);
	atomic_store_explicit(&kl->inflight, 0, memory_order_release);
	atomic_fetch_add_explicit(&wk->wl->ops, 1, memory_order_relaxed);
}

static uint64_t next_seq(struct worker *wk)
{
	/* relaxed: only this worker (or its successor, after waitpid) uses
	 * it; the key ledger's own release stores publish the seq */
	uint64_t prev = atomic_fetch_add_explicit(&wk->wl->seq, 1,
						  memory_order_relaxed);

	return prev + 1;
}

/* A respawned worker's first job: settle the key write a killed
 * predecessor left in flight, by what the store shows. */
static int reconcile_key(struct worker *wk, unsigned i)
{
	struct key_led *kl = &wk->keys[i];
	uint64_t acked = atomic_load_explicit(&kl->acked, memory_order_acquire);
	uint64_t infl =
		atomic_load_explicit(&kl->inflight, memory_order_acquire);
	char key[KEY_MAX], msg[256], d[256];
	int64_t got;

	if (!infl)
		return 0;
	key_name(key, "k", wk->id, i);
	got = read_owned(wk->kv, key, msg, sizeof(msg));
	if (got < 0) {
		fail("worker %u reconciling: %s", wk->id, msg);
		return -1;
	}
	if (outcome_is(infl, got)) {
		atomic_store_explicit(&kl->acked, infl, memory_order_release);
	} else if (!outcome_is(acked, got)) {
		describe(d, sizeof(d), acked, infl, got);
		fail("worker %u reconciling %s after a kill: %s", wk->id, key,
		     d);
		return -1;
	}
	atomic_store_explicit(&kl->inflight, 0, memory_order_release);
	return 0;
}

static void reconcile_shared(struct ctr_led *c)
{
	/* unknown before inflight = 0: acked + unknown + inflight never
	 * decreases, which the checker's upper bound relies on */
	if (atomic_load_explicit(&c->inflight, memory_order_acquire)) {
		atomic_fetch_add_explicit(&c->unknown, 1, memory_order_release);
		atomic_store_explicit(&c->inflight, 0, memory_order_release);
	}
}

static int reconcile(struct worker *wk)
{
	struct worker_led *wl = wk->wl;
	char key[KEY_MAX];
	int64_t v = 0;
	uint64_t a;
	int err;

	for (unsigned i = 0; i < L->keys_per_worker; i++)
		if (reconcile_key(wk, i))
			return -1;
	for (unsigned j = 0; j < NSHARED; j++)
		reconcile_shared(&wl->shared[j]);
	reconcile_shared(&wl->cas);
	if (!atomic_load_explicit(&wl->own.inflight, memory_order_acquire))
		return 0;
	snprintf(key, sizeof(key), "c:%u", wk->id);
	err = kvshm_counter(wk->kv, key, strlen(key), &v);
	if (err && err != -ENOENT) {
		fail("worker %u reconciling %s: %s", wk->id, key,
		     kvshm_strerror(err));
		return -1;
	}
	a = atomic_load_explicit(&wl->own.acked, memory_order_relaxed);
	if ((uint64_t)v == a + 1) {
		atomic_store_explicit(&wl->own.acked, a + 1,
				      memory_order_release);
	} else if ((uint64_t)v != a) {
		fail("worker %u reconciling %s: ledger says %" PRIu64
		     " acked + 1 in flight, store holds %" PRId64,
		     wk->id, key, a, v);
		return -1;
	}
	atomic_store_explicit(&wl->own.inflight, 0, memory_order_release);
	return 0;
}

/* get, and check the value is exactly what the ledger says */
static int op_get(struct worker *wk, struct key_led *kl, const char *key)
{
	uint64_t acked = atomic_load_explicit(&kl->acked, memory_order_relaxed);
	char msg[256], d[256];
	int64_t got = read_owned(wk->kv, key, msg, sizeof(msg));

	if (got < 0) {
		fail("worker %u: %s", wk->id, msg);
		return -1;
	}
	if (!outcome_is(acked, got)) {
		describe(d, sizeof(d), acked, 0, got);
		fail("worker %u pid %ld: get %s: %s", wk->id, (long)getpid(),
		     key, d);
		return -1;
	}
	atomic_fetch_add_explicit(&wk->wl->verified, 1, memory_order_relaxed);
	return 0;
}

/* May a log of cap records that holds used take one more now? Yes while
 * it is no fuller than the run is old, so records spread over the run. */
static bool paced(size_t used, size_t cap)
{
	const uint64_t now = mono_ms();
	const uint64_t len = L->t1_ms > L->t0_ms ? L->t1_ms - L->t0_ms : 1;

	if (used >= cap)
		return false;
	if (now >= L->t1_ms)
		return true;
	return (double)used / (double)cap <=
	       (double)(now - L->t0_ms) / (double)len;
}

/* Note the version a write of an owned key returned, for the final check
 * that no version was handed out twice for one key (a kill between the
 * write and this loses the record, never makes a false one). */
static void record_version(struct worker *wk, struct key_led *kl, uint64_t ver)
{
	/* relaxed: only this worker (or its successor, after waitpid) and
	 * the final check (after every worker was reaped) use it */
	uint64_t n = atomic_load_explicit(&wk->wl->nvers, memory_order_relaxed);

	/* every write of one owned key in 4, as long as the log keeps up
	 * with the run, so that a repeat shows whenever it happens */
	if ((kl - L->keys) % 4 || !paced(n, VER_CAP))
		return;
	wk->wl->vers[n] =
		(struct ver_rec){ .ver = ver, .key = (uint32_t)(kl - L->keys) };
	/* release: the record is written before it counts */
	atomic_store_explicit(&wk->wl->nvers, n + 1, memory_order_release);
}

/* The parent's resize generation (odd while a resize runs). */
static uint64_t resize_gen(void)
{
	/* acquire: pairs with resize_store()'s release increments */
	return atomic_load_explicit(&L->resize_gen, memory_order_acquire);
}

/* Was a resize running at gen, or did one start since? Then a version
 * read at gen may be gone (-ESTALE), as kvshm_resize() promises. */
static bool resized_since(uint64_t gen)
{
	return (gen & 1) || resize_gen() != gen;
}

/* set, add or (mode KVSHM_CAS) cas a new value of an owned key */
static int op_write(struct worker *wk, struct key_led *kl, const char *key,
		    enum op op)
{
	uint64_t acked = atomic_load_explicit(&kl->acked, memory_order_relaxed);
	bool present = (acked & 3u) == ST_PRESENT;
	struct kvshm_write w = { .ttl_ms = KVSHM_TTL_NEVER };
	uint64_t seq = next_seq(wk);
	char val[VAL_MAX];
	size_t vlen = make_value(val, key, seq);
	uint64_t ver = 0, gen = resize_gen();
	int expected = 0, err;

	if (op == OP_ADD) {
		w.mode = KVSHM_ADD;
		expected = present ? -EEXIST : 0;
	} else if (op == OP_CAS) {
		struct kvshm_item it;
		char cur[VAL_MAX];

		err = kvshm_get_ex(wk->kv, key, strlen(key), cur, sizeof(cur),
				   &it, 0);
		if (err != (present ? 0 : -ENOENT))
			return bad_result(wk, "get_ex before cas", err,
					  present ? 0 : -ENOENT, key);
		if (present &&
		    (it.value_len > sizeof(cur) ||
		     parse_value(key, cur, it.value_len) != acked >> 2)) {
			fail("worker %u pid %ld: get_ex %s before cas: ledger "
			     "says seq %" PRIu64 ", store holds %zu bytes "
			     "\"%.*s\"",
			     wk->id, (long)getpid(), key, acked >> 2,
			     it.value_len,
			     (int)(it.value_len < 60 ? it.value_len : 60), cur);
			return -1;
		}
		atomic_fetch_add_explicit(&wk->wl->verified, 1,
					  memory_order_relaxed);
		w.mode = KVSHM_CAS;
		w.cas = present ? it.cas : 1;
		w.opts = rnd_below(&wk->rng, 2) ? KVSHM_KEEPTTL : 0;
		expected = present ? 0 : -ENOENT;
	}
	key_begin(kl, seq, ST_PRESENT);
	err = kvshm_put(wk->kv, key, strlen(key), val, vlen, &w, &ver);
	if (err == -ESTALE && op == OP_CAS && resized_since(gen))
		expected = -ESTALE; /* a resize gave the key a new version */
	if (err != expected)
		return bad_result(wk, op_names[op], err, expected, key);
	if (err == 0) {
		record_version(wk, kl, ver);
		key_ack(wk, kl, seq << 2 | ST_PRESENT);
	} else
		atomic_store_explicit(&kl->inflight, 0, memory_order_release);
	return 0;
}

static int op_delete(struct worker *wk, struct key_led *kl, const char *key)
{
	uint64_t acked = atomic_load_explicit(&kl->acked, memory_order_relaxed);
	bool present = (acked & 3u) == ST_PRESENT;
	int expected = present ? 0 : -ENOENT, err;
	uint64_t seq = next_seq(wk), gen = resize_gen();
	bool by_cas = false;

	key_begin(kl, seq, ST_DELETED);
	if (present && rnd_below(&wk->rng, 2)) {
		struct kvshm_item it;
		char cur[VAL_MAX];

		err = kvshm_get_ex(wk->kv, key, strlen(key), cur, sizeof(cur),
				   &it, 0);
		if (err)
			return bad_result(wk, "get_ex before delete_cas", err,
					  0, key);
		err = kvshm_delete_cas(wk->kv, key, strlen(key), it.cas);
		by_cas = true;
	} else {
		err = kvshm_delete(wk->kv, key, strlen(key));
	}
	if (err == -ESTALE && by_cas && resized_since(gen)) {
		/* a resize gave the key a new version: nothing deleted */
		atomic_store_explicit(&kl->inflight, 0, memory_order_release);
		return 0;
	}
	if (err != expected)
		return bad_result(wk, "delete", err, expected, key);
	key_ack(wk, kl, seq << 2 | ST_DELETED);
	return 0;
}

static int op_expire(struct worker *wk, struct key_led *kl, const char *key)
{
	uint64_t acked = atomic_load_explicit(&kl->acked, memory_order_relaxed);
	int expected = (acked & 3u) == ST_PRESENT ? 0 : -ENOENT;
	/* long TTLs only: the ledger tracks values, not expiry */
	uint64_t ttl = rnd_below(&wk->rng, 2) ? KVSHM_TTL_NEVER : 3600000u;
	int err = kvshm_expire(wk->kv, key, strlen(key), ttl);

	if (err != expected)
		return bad_result(wk, "expire", err, expected, key);
	atomic_fetch_add_explicit(&wk->wl->ops, 1, memory_order_relaxed);
	return 0;
}

static void ctr_begin(struct ctr_led *c)
{
	atomic_store_explicit(&c->inflight, 1, memory_order_release);
}

static void ctr_ack(struct worker *wk, struct ctr_led *c)
{
	/* acked before inflight = 0, see the top of the file */
	atomic_fetch_add_explicit(&c->acked, 1, memory_order_release);
	atomic_store_explicit(&c->inflight, 0, memory_order_release);
	atomic_fetch_add_explicit(&wk->wl->ops, 1, memory_order_relaxed);
}

static int op_incr(struct worker *wk, struct ctr_led *c, const char *key)
{
	int64_t res = 0;
	int err;

	ctr_begin(c);
	err = kvshm_incr(wk->kv, key, strlen(key), 1, KVSHM_TTL_NEVER, &res);
	if (err)
		return bad_result(wk, "incr", err, 0, key);
	if (c == &wk->wl->own &&
	    (uint64_t)res !=
		    atomic_load_explicit(&c->acked, memory_order_relaxed) + 1) {
		fail("worker %u: incr %s returned %" PRId64 ", the ledger has "
		     "%" PRIu64 " acked increments before it",
		     wk->id, key, res,
		     atomic_load_explicit(&c->acked, memory_order_relaxed));
		return -1;
	}
	ctr_ack(wk, c);
	return 0;
}

/* The shared cas counter: read it, write value + 1 if unchanged. */
static int op_cas_ctr(struct worker *wk)
{
	struct kvshm_write w = { .mode = KVSHM_CAS, .ttl_ms = KVSHM_TTL_NEVER };
	struct ctr_led *c = &wk->wl->cas;
	struct kvshm_item it;
	uint64_t v = 0;
	int err = kvshm_get_ex(wk->kv, "cas", 3, &v, sizeof(v), &it, 0);

	if (err == -ENOENT) {
		w.mode = KVSHM_ADD;
	} else if (err) {
		return bad_result(wk, "get_ex", err, 0, "cas");
	} else if (it.value_len != sizeof(v)) {
		fail("worker %u: cas counter holds %zu bytes", wk->id,
		     it.value_len);
		return -1;
	}
	w.cas = it.cas;
	v++;
	ctr_begin(c);
	err = kvshm_put(wk->kv, "cas", 3, &v, sizeof(v), &w, NULL);
	if (err == 0) {
		ctr_ack(wk, c);
		return 0;
	}
	/* the cas counter is never deleted and never expires: losing a
	 * race is the only expected failure */
	if (err != (w.mode == KVSHM_ADD ? -EEXIST : -ESTALE))
		return bad_result(wk, w.mode == KVSHM_ADD ? "add" : "cas", err,
				  w.mode == KVSHM_ADD ? -EEXIST : -ESTALE,
				  "cas");
	atomic_store_explicit(&c->inflight, 0, memory_order_release);
	return 0;
}

/* Short-lived keys: set with a TTL of a few ms, read, or shorten. Only
 * their integrity is checked: a hit must be a value we made for that key. */
static int op_ttl_key(struct worker *wk)
{
	unsigned i = rnd_below(&wk->rng, NTTL), r = rnd_below(&wk->rng, 3);
	char key[KEY_MAX], val[VAL_MAX];
	size_t vlen;
	int err;

	key_name(key, "t", wk->id, i);
	if (r == 0) {
		vlen = make_value(val, key, next_seq(wk));
		err = kvshm_set(wk->kv, key, strlen(key), val, vlen,
				1 + rnd_below(&wk->rng, 50));
	} else if (r == 1) {
		err = kvshm_get(wk->kv, key, strlen(key), val, sizeof(val),
				&vlen);
		if (err == 0 && !parse_value(key, val, vlen)) {
			fail("worker %u: %s holds a value no write made (%zu "
			     "bytes)",
			     wk->id, key, vlen);
			return -1;
		}
	} else {
		err = kvshm_expire(wk->kv, key, strlen(key),
				   1 + rnd_below(&wk->rng, 20));
	}
	if (err && err != -ENOENT)
		return bad_result(wk, "short-TTL op on", err, 0, key);
	atomic_fetch_add_explicit(&wk->wl->ops, 1, memory_order_relaxed);
	return 0;
}

/* A random op on a shared key l:k, recorded for the linearizability
 * check after the run (which judges its result, not this). */
static int op_lin(struct worker *wk)
{
	const unsigned k = rnd_below(&wk->rng, NLIN);
	struct lc_ctx c = {
		.kv = wk->kv, .log = LOG, .slot = wk->id, .prefix = "l:"
	};
	struct lc_op o;
	uint64_t r1 = rnd(&wk->rng), r2 = rnd(&wk->rng);

	lc_random_op(&o, r1, r2, k, wk->lin_last[k], wk->lin_old[k]);
	if (lc_run(&c, &o, NULL) == -EOVERFLOW)
		return 0;
	if (o.res_err == 0 && o.kind != LC_INCR && o.kind != LC_DELETE &&
	    o.kind != LC_DELETE_CAS && o.kind != LC_EXPIRE &&
	    o.res_ver != wk->lin_last[k]) {
		wk->lin_old[k] = wk->lin_last[k] ? wk->lin_last[k] : o.res_ver;
		wk->lin_last[k] = o.res_ver;
	}
	atomic_fetch_add_explicit(&wk->wl->ops, 1, memory_order_relaxed);
	return 0;
}

static int one_op(struct worker *wk)
{
	unsigned r = rnd_below(&wk->rng, 100);
	unsigned i = rnd_below(&wk->rng, L->keys_per_worker);
	struct key_led *kl = &wk->keys[i];
	char key[KEY_MAX];
	enum op op;

	key_name(key, "k", wk->id, i);
	if (rnd_below(&wk->rng, 8) == 0 &&
	    paced(lc_log_count(LOG, wk->id), LIN_CAP)) {
		heartbeat(wk->wl, OP_LIN);
		return op_lin(wk);
	}
	op = r < 24 ? OP_GET :
	     r < 42 ? OP_SET :
	     r < 49 ? OP_ADD :
	     r < 57 ? OP_CAS :
	     r < 64 ? OP_DELETE :
	     r < 70 ? OP_EXPIRE :
	     r < 80 ? OP_INCR :
	     r < 85 ? OP_OWN_INCR :
	     r < 91 ? OP_CAS_CTR :
		      OP_TTL_KEY;
	heartbeat(wk->wl, op);
	switch (op) {
	case OP_GET:
		return op_get(wk, kl, key);
	case OP_SET:
	case OP_ADD:
	case OP_CAS:
		return op_write(wk, kl, key, op);
	case OP_DELETE:
		return op_delete(wk, kl, key);
	case OP_EXPIRE:
		return op_expire(wk, kl, key);
	case OP_INCR: {
		unsigned j = rnd_below(&wk->rng, NSHARED);

		snprintf(key, sizeof(key), "ctr:%u", j);
		return op_incr(wk, &wk->wl->shared[j], key);
	}
	case OP_OWN_INCR:
		snprintf(key, sizeof(key), "c:%u", wk->id);
		return op_incr(wk, &wk->wl->own, key);
	case OP_CAS_CTR:
		return op_cas_ctr(wk);
	default:
		return op_ttl_key(wk);
	}
}

static int worker_loop(struct worker *wk)
{
	heartbeat(wk->wl, OP_START);
	if (reconcile(wk))
		return -1;
	while (!atomic_load_explicit(&L->stop, memory_order_relaxed)) {
		if (one_op(wk))
			return -1;
		heartbeat(wk->wl, OP_IDLE);
	}
	return 0;
}

static void worker_init(struct worker *wk, struct kvshm *kv, unsigned id,
			uint64_t gen)
{
	wk->kv = kv;
	wk->wl = &L->w[id];
	wk->keys = &L->keys[(size_t)id * L->keys_per_worker];
	wk->id = id;
	wk->rng = cfg.seed ^ ((uint64_t)id << 32) ^
		  (gen * 0x2545F4914F6CDD1DULL);
}

/* A child process: its own handle or the inherited one, then work until
 * killed. Never returns. */
static void worker_process(struct kvshm *parent_kv, unsigned id, uint64_t gen)
{
	struct kvshm *kv = parent_kv;
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct worker wk;
	int err;

	heartbeat(&L->w[id], OP_START);
	if ((id + gen) % 2 == 0) {
		err = kvshm_open(cfg.name, &o, &kv);
		if (err) {
			fail("worker %u: kvshm_open %s: %s", id, cfg.name,
			     kvshm_strerror(err));
			_exit(1);
		}
	}
	worker_init(&wk, kv, id, gen);
	_exit(worker_loop(&wk) ? 1 : 0);
}

/* ---- the checker -------------------------------------------------------- */

struct tally {
	uint64_t verified;
	uint64_t skipped; /* ledger moved during the read: retried too often */
	uint64_t keys;
};

/* One owned key against the ledger, read under a stable ledger state. */
static int check_key(struct kvshm *kv, unsigned w, unsigned i, struct tally *t)
{
	struct key_led *kl = &L->keys[(size_t)w * L->keys_per_worker + i];
	char key[KEY_MAX], msg[256], d[256];

	key_name(key, "k", w, i);
	for (int tries = 0; tries < 8; tries++) {
		/* acquire: pair with the worker's release stores, so the
		 * store read below is at least as new as the ledger read */
		uint64_t a1 =
			atomic_load_explicit(&kl->acked, memory_order_acquire);
		uint64_t f1 = atomic_load_explicit(&kl->inflight,
						   memory_order_acquire);
		int64_t got = read_owned(kv, key, msg, sizeof(msg));
		uint64_t f2 = atomic_load_explicit(&kl->inflight,
						   memory_order_acquire);
		uint64_t a2 =
			atomic_load_explicit(&kl->acked, memory_order_acquire);

		if (got < 0) {
			fail("checker: %s", msg);
			return -1;
		}
		if (a1 != a2 || f1 != f2)
			continue;
		if (!outcome_is(a1, got) && !(f1 && outcome_is(f1, got))) {
			describe(d, sizeof(d), a1, f1, got);
			fail("checker: %s: %s", key, d);
			return -1;
		}
		t->verified++;
		return 0;
	}
	t->skipped++;
	return 0;
}

static uint64_t ctr_low(const struct ctr_led *c)
{
	return atomic_load_explicit(&c->acked, memory_order_acquire);
}

static uint64_t ctr_high(const struct ctr_led *c)
{
	/* inflight, then unknown, then acked: each acquire pairs with the
	 * release that moved the previous one, so nothing is missed */
	uint64_t f = atomic_load_explicit(&c->inflight, memory_order_acquire);
	uint64_t u = atomic_load_explicit(&c->unknown, memory_order_acquire);

	return f + u + atomic_load_explicit(&c->acked, memory_order_acquire);
}

/* ctr selects the counter: 0..NSHARED-1 shared, NSHARED the cas one */
static const struct ctr_led *ctr_of(unsigned w, unsigned ctr)
{
	return ctr < NSHARED ? &L->w[w].shared[ctr] : &L->w[w].cas;
}

static int read_counter(struct kvshm *kv, unsigned ctr, int64_t *v)
{
	char key[KEY_MAX];
	int err;

	if (ctr < NSHARED) {
		snprintf(key, sizeof(key), "ctr:%u", ctr);
		err = kvshm_counter(kv, key, strlen(key), v);
	} else {
		uint64_t u = 0;
		size_t len = 0;

		snprintf(key, sizeof(key), "cas");
		err = kvshm_get(kv, "cas", 3, &u, sizeof(u), &len);
		if (!err && len != sizeof(u))
			err = -EBADMSG;
		*v = (int64_t)u;
	}
	if (err == -ENOENT) {
		*v = 0;
		err = 0;
	}
	if (err)
		fail("checker: reading %s: %s", key, kvshm_strerror(err));
	return err;
}

static int check_counters(struct kvshm *kv, struct tally *t)
{
	for (unsigned ctr = 0; ctr <= NSHARED; ctr++) {
		uint64_t lo = 0, hi = 0;
		int64_t v;

		for (unsigned w = 0; w < L->nworkers; w++)
			lo += ctr_low(ctr_of(w, ctr));
		if (read_counter(kv, ctr, &v))
			return -1;
		for (unsigned w = 0; w < L->nworkers; w++)
			hi += ctr_high(ctr_of(w, ctr));
		if (v < 0 || (uint64_t)v < lo || (uint64_t)v > hi) {
			char name[KEY_MAX];

			if (ctr < NSHARED)
				snprintf(name, sizeof(name), "ctr:%u", ctr);
			else
				snprintf(name, sizeof(name), "cas");
			fail("checker: counter %s = %" PRId64 ", outside "
			     "[acked %" PRIu64 ", acked + in flight %" PRIu64
			     "]",
			     name, v, lo, hi);
			return -1;
		}
		t->verified++;
	}
	for (unsigned w = 0; w < L->nworkers; w++) {
		const struct ctr_led *c = &L->w[w].own;
		char key[KEY_MAX];
		int64_t v = 0;
		int err;

		snprintf(key, sizeof(key), "c:%u", w);
		for (int tries = 0; tries < 8; tries++) {
			uint64_t a1 = atomic_load_explicit(
				&c->acked, memory_order_acquire);
			uint64_t f1 = atomic_load_explicit(
				&c->inflight, memory_order_acquire);

			err = kvshm_counter(kv, key, strlen(key), &v);
			if (err && err != -ENOENT) {
				fail("checker: %s: %s", key,
				     kvshm_strerror(err));
				return -1;
			}
			if (f1 != atomic_load_explicit(&c->inflight,
						       memory_order_acquire) ||
			    a1 != atomic_load_explicit(&c->acked,
						       memory_order_acquire))
				continue;
			if ((uint64_t)v != a1 && (uint64_t)v != a1 + f1) {
				fail("checker: %s = %" PRId64
				     ", ledger: %" PRIu64 " acked, %" PRIu64
				     " in flight",
				     key, v, a1, f1);
				return -1;
			}
			t->verified++;
			break;
		}
	}
	return 0;
}

static int run_check(struct kvshm *kv)
{
	char report[4096];
	int err = kvshm_check(kv, report, sizeof(report));

	if (err) {
		fail("kvshm_check: %s: %s", kvshm_strerror(err), report);
		return -1;
	}
	return 0;
}

/* The periodic check: kvshm_check, a sample of keys, every counter. */
static int periodic_check(struct kvshm *kv, uint64_t *rng, struct tally *t)
{
	unsigned nkeys = L->nworkers * L->keys_per_worker;

	if (run_check(kv))
		return -1;
	for (unsigned n = 0; n < CHECK_SAMPLE && n < nkeys; n++) {
		unsigned k = rnd_below(rng, nkeys);

		if (check_key(kv, k / L->keys_per_worker,
			      k % L->keys_per_worker, t))
			return -1;
	}
	return check_counters(kv, t);
}

/* Everything stopped: every key, every counter, and the statistics. */
static int final_check(struct kvshm *kv, struct tally *t,
		       struct kvshm_stats *st)
{
	int err;

	if (run_check(kv))
		return -1;
	for (unsigned w = 0; w < L->nworkers; w++)
		for (unsigned i = 0; i < L->keys_per_worker; i++) {
			if (check_key(kv, w, i, t))
				return -1;
			t->keys++;
		}
	if (check_counters(kv, t))
		return -1;
	t->keys += NSHARED + 1 + L->nworkers; /* the counters */
	if (run_check(kv))
		return -1;
	err = kvshm_stats(kv, st);
	if (err) {
		fail("kvshm_stats: %s", kvshm_strerror(err));
		return -1;
	}
	if (st->evictions) {
		fail("%" PRIu64 " items were evicted from a KVSHM_NOEVICT "
		     "store",
		     st->evictions);
		return -1;
	}
	return 0;
}

/* ---- the parent: spawning, killing, watching ---------------------------- */

struct proc {
	pid_t pid;
	uint64_t gen;
};

static struct proc workers[MAX_WORKERS];
static struct proc janitor;

static int spawn_worker(struct kvshm *kv, unsigned id)
{
	pid_t pid;

	workers[id].gen++;
	atomic_store_explicit(&L->w[id].hb, mono_ms() << 8 | OP_START,
			      memory_order_release);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fail("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0)
		worker_process(kv, id, workers[id].gen);
	workers[id].pid = pid;
	return 0;
}

static int spawn_janitor(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fail("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		if (!getenv("KVSHM_TORTURE_VERBOSE") &&
		    !freopen("/dev/null", "w", stderr))
			_exit(127);
		execl(cfg.janitor, cfg.janitor, "run", cfg.name, "--interval",
		      "50", (char *)NULL);
		fprintf(stderr, "torture: exec %s: %s\n", cfg.janitor,
			strerror(errno));
		_exit(127);
	}
	janitor.pid = pid;
	janitor.gen++;
	return 0;
}

static void describe_status(char *buf, size_t len, int status)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "exited with status %d",
			 WEXITSTATUS(status));
}

/* SIGKILL pid and reap it; a death of anything but our SIGKILL fails. */
static int kill_and_reap(pid_t pid, const char *who)
{
	char s[80];
	int status;

	kill(pid, SIGKILL);
	if (waitpid(pid, &status, 0) != pid) {
		fail("waitpid %s: %s", who, strerror(errno));
		return -1;
	}
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
		describe_status(s, sizeof(s), status);
		fail("%s pid %ld %s before it was killed", who, (long)pid, s);
		return -1;
	}
	return 0;
}

/* Children that died on their own (crashed, or exited after a failure). */
static int reap_unexpected(void)
{
	char s[80];
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		describe_status(s, sizeof(s), status);
		if (pid == janitor.pid) {
			fail("the janitor (pid %ld) %s", (long)pid, s);
			janitor.pid = 0;
			continue;
		}
		for (unsigned w = 0; w < L->nworkers; w++)
			if (workers[w].pid == pid) {
				fail("worker %u (pid %ld) %s", w, (long)pid, s);
				workers[w].pid = 0;
			}
	}
	return failed() ? -1 : 0;
}

/* How long worker w's current op has been running (0 if idle); its name
 * goes to *op. */
static uint64_t op_age(unsigned w, unsigned *op)
{
	/* acquire: pairs with heartbeat()'s release */
	uint64_t hb = atomic_load_explicit(&L->w[w].hb, memory_order_acquire);
	uint64_t now = mono_ms(), start = hb >> 8;

	*op = (unsigned)(hb & 0xffu);
	if (*op == OP_IDLE || *op >= OP_NOPS || now <= start)
		return 0;
	return now - start;
}

/* Fails the run if a live worker's current op has run for over HANG_MS. */
static int watchdog(void)
{
	for (unsigned w = 0; w < L->nworkers; w++) {
		unsigned op;
		uint64_t age = op_age(w, &op);

		if (age <= HANG_MS)
			continue;
		fail("hang: worker %u (pid %ld) has been in %s for %" PRIu64
		     " ms",
		     w, (long)workers[w].pid, op_names[op], age);
		return -1;
	}
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void on_alarm(int sig)
{
	static const char m[] = "torture: FAIL: hang: the checker's own "
				"kvshm call did not return in 10 s\n";

	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0) {
		/* nothing to do */
	}
	_exit(1);
}

/* Runs ops in the parent with a hard limit (alarm) and a soft one
 * (measured): the checker is held to the same 2 s rule as the workers. */
static int timed_check(struct kvshm *kv, uint64_t *rng, struct tally *t)
{
	uint64_t t0 = mono_ms(), dt;
	int err;

	alarm(10);
	err = periodic_check(kv, rng, t);
	alarm(0);
	dt = mono_ms() - t0;
	if (!err && dt > HANG_MS) {
		fail("hang: the periodic check took %" PRIu64 " ms", dt);
		err = -1;
	}
	return err;
}

struct run_stats {
	uint64_t worker_kills;
	uint64_t janitor_kills;
	uint64_t checks;
	uint64_t resizes;        /* done */
	uint64_t resize_refused; /* -ENOSPC: the items did not fit */
	struct tally t;
};

/* Resize the store to between --arena and 1.5 times it (so a resize
 * grows or shrinks it), recorded in the parent's slot of the histories
 * as an operation on every checked key. */
static int resize_store(uint64_t *rng, struct run_stats *rs)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct lc_ctx c = { .log = LOG, .slot = L->nworkers, .name = cfg.name };
	struct lc_op g = { .kind = LC_RESIZE, .key = LC_ALL_KEYS };
	uint64_t t0 = mono_ms();
	int err;

	o.arena_bytes = ((uint64_t)cfg.arena_mib << 20) +
			((uint64_t)rnd_below(rng, cfg.arena_mib + 1) << 19);
	/* release: a worker that loads the new value (acquire) knows a
	 * resize may have given its key a new version */
	atomic_fetch_add_explicit(&L->resize_gen, 1, memory_order_release);
	alarm(10);
	err = lc_run(&c, &g, &o);
	if (err == -EOVERFLOW)
		err = kvshm_resize(cfg.name, &o); /* log full: resize anyway */
	alarm(0);
	atomic_fetch_add_explicit(&L->resize_gen, 1, memory_order_release);
	if (err == -ENOSPC) {
		rs->resize_refused++;
	} else if (err) {
		fail("kvshm_resize to %" PRIu64 " bytes: %s", o.arena_bytes,
		     kvshm_strerror(err));
		return -1;
	} else {
		rs->resizes++;
	}
	if (mono_ms() - t0 > HANG_MS) {
		fail("hang: a resize took %" PRIu64 " ms", mono_ms() - t0);
		return -1;
	}
	return 0;
}

static uint64_t next_resize_at(uint64_t now, uint64_t *rng)
{
	return cfg.resize_ms ? now + 1 + rnd_below(rng, 2 * cfg.resize_ms) :
			       UINT64_MAX;
}

static int kill_one(struct kvshm *kv, uint64_t *rng, struct run_stats *rs)
{
	unsigned w, op;

	if (janitor.pid && rnd_below(rng, 8) == 0) {
		if (kill_and_reap(janitor.pid, "the janitor"))
			return -1;
		janitor.pid = 0;
		rs->janitor_kills++;
		return spawn_janitor();
	}
	/* A worker whose op has already run for SPARE_MS is spared (another
	 * is picked), so that a real hang lives long enough for the watchdog
	 * to see it: each worker is otherwise killed every few hundred ms. */
	w = rnd_below(rng, L->nworkers);
	for (unsigned n = 0; op_age(w, &op) > SPARE_MS; n++) {
		if (n == L->nworkers)
			return 0;
		w = (w + 1) % L->nworkers;
	}
	if (kill_and_reap(workers[w].pid, "worker"))
		return -1;
	lc_death(LOG, w); /* its op in flight, if any, is pending */
	workers[w].pid = 0;
	rs->worker_kills++;
	return spawn_worker(kv, w);
}

static int soak_loop(struct kvshm *kv, uint64_t *rng, struct run_stats *rs)
{
	uint64_t now = mono_ms(), end = now + (uint64_t)cfg.seconds * 1000u;
	uint64_t next_kill = cfg.kill_ms ?
				     now + rnd_below(rng, 2 * cfg.kill_ms + 1) :
				     UINT64_MAX;
	uint64_t next_check = now + CHECK_EVERY_MS;
	uint64_t next_resize = next_resize_at(now, rng);

	while ((now = mono_ms()) < end && !interrupted) {
		uint64_t until = end;

		if (reap_unexpected() || watchdog())
			return -1;
		if (now >= next_resize) {
			if (resize_store(rng, rs))
				return -1;
			next_resize = next_resize_at(mono_ms(), rng);
		}
		if (next_resize < until)
			until = next_resize;
		if (now >= next_kill) {
			if (kill_one(kv, rng, rs))
				return -1;
			next_kill = now + 1 + rnd_below(rng, 2 * cfg.kill_ms);
		}
		if (now >= next_check) {
			if (timed_check(kv, rng, &rs->t))
				return -1;
			rs->checks++;
			next_check = mono_ms() + CHECK_EVERY_MS;
		}
		if (next_kill < until)
			until = next_kill;
		if (next_check < until)
			until = next_check;
		now = mono_ms();
		if (until > now)
			sleep_ms((unsigned)(until - now < 20 ? until - now :
							       20));
	}
	return interrupted ? (fail("interrupted"), -1) : 0;
}

/* Stop everything: SIGKILL every worker (a last round of kills, so the
 * final check also repairs what they held), SIGTERM the janitor and expect
 * a clean exit. */
static int stop_all(void)
{
	int err = 0;

	for (unsigned w = 0; w < L->nworkers; w++)
		if (workers[w].pid) {
			if (kill_and_reap(workers[w].pid, "worker"))
				err = -1;
			lc_death(LOG, w);
			workers[w].pid = 0;
		}
	if (janitor.pid) {
		char s[80];
		int status = 0;
		pid_t r = 0;

		kill(janitor.pid, SIGTERM);
		for (int i = 0; i < 500 && r == 0; i++) {
			r = waitpid(janitor.pid, &status, WNOHANG);
			if (r == 0)
				sleep_ms(10);
		}
		if (r == 0) {
			fail("the janitor did not exit within 5 s of SIGTERM");
			kill(janitor.pid, SIGKILL);
			waitpid(janitor.pid, &status, 0);
			err = -1;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			describe_status(s, sizeof(s), status);
			fail("the janitor %s on SIGTERM", s);
			err = -1;
		}
		janitor.pid = 0;
	}
	return err;
}

/* ---- threads mode ------------------------------------------------------- */

struct thread_arg {
	struct kvshm *kv;
	unsigned id;
	pthread_t tid;
};

static void *worker_thread(void *p)
{
	struct thread_arg *a = p;
	struct worker wk;

	worker_init(&wk, a->kv, a->id, 1);
	worker_loop(&wk);
	return NULL;
}

static int threads_loop(struct kvshm *kv, uint64_t *rng, struct run_stats *rs)
{
	struct thread_arg args[MAX_WORKERS];
	uint64_t now = mono_ms(), end = now + (uint64_t)cfg.seconds * 1000u;
	uint64_t next_check = now + CHECK_EVERY_MS;
	uint64_t next_resize = next_resize_at(now, rng);
	unsigned started = 0;
	int err = 0;

	for (; started < L->nworkers; started++) {
		args[started] = (struct thread_arg){ .kv = kv, .id = started };
		err = pthread_create(&args[started].tid, NULL, worker_thread,
				     &args[started]);
		if (err) {
			fail("pthread_create: %s", strerror(err));
			break;
		}
	}
	while (!err && (now = mono_ms()) < end && !interrupted) {
		if (failed() || watchdog()) {
			err = -1;
			break;
		}
		if (now >= next_check) {
			err = timed_check(kv, rng, &rs->t);
			rs->checks++;
			next_check = mono_ms() + CHECK_EVERY_MS;
		}
		if (!err && now >= next_resize) {
			err = resize_store(rng, rs);
			next_resize = next_resize_at(mono_ms(), rng);
		}
		sleep_ms(20);
	}
	atomic_store_explicit(&L->stop, 1, memory_order_relaxed);
	for (unsigned i = 0; i < started; i++)
		pthread_join(args[i].tid, NULL);
	if (interrupted)
		fail("interrupted");
	return failed() ? -1 : err;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvshm-torture [options]\n"
		"A kill -9 soak of libkvshm: worker processes run set, get, "
		"add, cas, delete,\n"
		"incr and expire over one store while this process SIGKILLs "
		"and respawns\n"
		"them, checks the store against a ledger of acknowledged "
		"operations, and\n"
		"fails the run on a lost write, a counter out of bounds, a "
		"failed kvshm_check\n"
		"or an operation blocked for over 2 s.\n\n"
		"  --workers W     worker processes (default 4, at most %u)\n"
		"  --seconds S     how long to run (default 60)\n"
		"  --keys K        owned keys, split among the workers "
		"(default 2000)\n"
		"  --arena MIB     store size in MiB (default 32; the store "
		"never evicts)\n"
		"  --kill-ms MS    mean interval between kills (default 30; "
		"0 = no kills)\n"
		"  --resize-ms MS  mean interval between resizes of the "
		"store, to between\n"
		"                  --arena and 1.5 times it (default 700; 0 = "
		"none)\n"
		"  --janitor PATH  also run (and kill) PATH run NAME "
		"--interval 50\n"
		"  --seed N        random seed (default: time and pid)\n"
		"  --threads       threads sharing one handle, no kills (for "
		"BUILD=tsan)\n"
		"  --name NAME     store name (default kvtorture.PID; "
		"unlinked at the end)\n"
		"  --help          this text\n\n"
		"Exit status: 0 all verified, 1 a failure (printed), 2 usage "
		"error.\n"
		"KVSHM_TORTURE_VERBOSE=1 keeps the janitor's log on stderr.\n",
		MAX_WORKERS);
}

static bool parse_uint(const char *s, unsigned long long max,
		       unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return !errno && end != s && !*end && s[0] != '-' && *out <= max;
}

static int parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "workers", required_argument, NULL, 'w' },
		{ "seconds", required_argument, NULL, 's' },
		{ "keys", required_argument, NULL, 'k' },
		{ "arena", required_argument, NULL, 'a' },
		{ "kill-ms", required_argument, NULL, 'm' },
		{ "resize-ms", required_argument, NULL, 'r' },
		{ "janitor", required_argument, NULL, 'j' },
		{ "seed", required_argument, NULL, 'S' },
		{ "threads", no_argument, NULL, 't' },
		{ "name", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long long v;
	int c;

	cfg = (struct config){ .workers = 4,
			       .seconds = 60,
			       .keys = 2000,
			       .arena_mib = 32,
			       .kill_ms = 30,
			       .resize_ms = 700 };
	cfg.seed = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
	snprintf(cfg.name, sizeof(cfg.name), "kvtorture.%ld", (long)getpid());
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		bool ok = true;

		switch (c) {
		case 'w':
			ok = parse_uint(optarg, MAX_WORKERS, &v) && v > 0;
			cfg.workers = (unsigned)v;
			break;
		case 's':
			ok = parse_uint(optarg, 100u * 24 * 3600, &v);
			cfg.seconds = (unsigned)v;
			break;
		case 'k':
			ok = parse_uint(optarg, 1u << 22, &v) && v > 0;
			cfg.keys = (unsigned)v;
			break;
		case 'a':
			ok = parse_uint(optarg, 1u << 20, &v) && v > 0;
			cfg.arena_mib = (unsigned)v;
			break;
		case 'm':
			ok = parse_uint(optarg, 3600000u, &v);
			cfg.kill_ms = (unsigned)v;
			break;
		case 'r':
			ok = parse_uint(optarg, 3600000u, &v);
			cfg.resize_ms = (unsigned)v;
			break;
		case 'j':
			cfg.janitor = optarg;
			break;
		case 'S':
			ok = parse_uint(optarg, UINT64_MAX, &v);
			cfg.seed = v;
			break;
		case 't':
			cfg.threads = true;
			break;
		case 'n':
			ok = strlen(optarg) < sizeof(cfg.name);
			snprintf(cfg.name, sizeof(cfg.name), "%s", optarg);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			ok = false;
		}
		if (!ok) {
			if (c != '?')
				fprintf(stderr,
					"kvshm-torture: bad value for "
					"option: '%s'\n",
					optarg);
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvshm-torture: unexpected argument '%s'\n",
			argv[optind]);
		return -1;
	}
	if (cfg.keys < cfg.workers) {
		fprintf(stderr, "kvshm-torture: --keys must be at least "
				"--workers\n");
		return -1;
	}
	return 0;
}

static struct ledger *map_ledger(void)
{
	unsigned per = cfg.keys / cfg.workers;
	size_t len = sizeof(struct ledger) +
		     (size_t)per * cfg.workers * sizeof(struct key_led);
	struct ledger *l = mmap(NULL, len, PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	struct ver_rec *v;

	if (l == MAP_FAILED)
		return NULL;
	l->nworkers = cfg.workers;
	l->keys_per_worker = per;
	v = mmap(NULL, (size_t)cfg.workers * VER_CAP * sizeof(*v),
		 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (v == MAP_FAILED)
		return NULL;
	for (unsigned w = 0; w < cfg.workers; w++)
		l->w[w].vers = v + (size_t)w * VER_CAP;
	return l; /* zero-filled: every key never written, nothing in flight */
}

static int ver_cmp(const void *pa, const void *pb)
{
	const struct ver_rec *a = pa, *b = pb;

	if (a->key != b->key)
		return a->key < b->key ? -1 : 1;
	return a->ver < b->ver ? -1 : a->ver > b->ver;
}

/* No version was handed out to two writes of one owned key (each record
 * is one acknowledged write). *n gets the number of versions compared. */
static int check_owned_versions(uint64_t *n)
{
	size_t total = 0, k = 0, dups = 0;
	struct ver_rec *all;

	for (unsigned w = 0; w < L->nworkers; w++)
		total += atomic_load_explicit(&L->w[w].nvers,
					      memory_order_acquire);
	all = malloc((total + 1) * sizeof(*all));
	if (!all) {
		fail("out of memory for %zu versions", total);
		return -1;
	}
	for (unsigned w = 0; w < L->nworkers; w++) {
		size_t c = atomic_load_explicit(&L->w[w].nvers,
						memory_order_acquire);

		memcpy(all + k, L->w[w].vers, c * sizeof(*all));
		k += c;
	}
	qsort(all, total, sizeof(*all), ver_cmp);
	for (size_t i = 1; i < total; i++) {
		if (all[i].key != all[i - 1].key ||
		    all[i].ver != all[i - 1].ver)
			continue;
		if (dups++ < 5)
			fail("version %#" PRIx64
			     " was handed out to two writes "
			     "of k:%u:%u",
			     all[i].ver, all[i].key / L->keys_per_worker,
			     all[i].key % L->keys_per_worker);
	}
	if (dups > 5)
		fail("... %zu repeated versions in all", dups);
	free(all);
	*n = total;
	return dups ? -1 : 0;
}

/* Every checked key's history against the model (lincheck.h). */
static int check_histories(struct lc_report *rep)
{
	const char *strict = getenv("KVSHM_LIN_STRICT");
	struct lc_check_opts o = { .enospc = true, /* KVSHM_NOEVICT */
				   .strict = !(strict && *strict == '0'),
				   .nkeys = NLIN,
				   .out = stderr,
				   .prefix = "l:" };

	if (lc_check_log(LOG, &o, rep)) {
		fail("%zu of %zu histories are not linearizable or repeat a "
		     "version (above)",
		     rep->failures, rep->histories);
		return -1;
	}
	return 0;
}

static void install_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
}

static int run(struct kvshm *kv, struct run_stats *rs, uint64_t *rng)
{
	L->t0_ms = mono_ms();
	L->t1_ms = L->t0_ms + (uint64_t)cfg.seconds * 1000u;
	if (cfg.janitor && spawn_janitor())
		return -1;
	if (cfg.threads)
		return threads_loop(kv, rng, rs);
	for (unsigned w = 0; w < cfg.workers; w++)
		if (spawn_worker(kv, w))
			return -1;
	return soak_loop(kv, rng, rs);
}

static void summary(const struct run_stats *rs, const struct kvshm_stats *st,
		    uint64_t ms, const struct lc_report *lr, uint64_t nvers)
{
	uint64_t ops = 0, verified = rs->t.verified;

	for (unsigned w = 0; w < L->nworkers; w++) {
		ops += atomic_load_explicit(&L->w[w].ops, memory_order_relaxed);
		verified += atomic_load_explicit(&L->w[w].verified,
						 memory_order_relaxed);
	}
	printf("torture: %s, seed %" PRIu64 ", %.1f s: %" PRIu64
	       " operations acknowledged, %" PRIu64 " checks (%" PRIu64
	       " sampled reads skipped: ledger moving), %" PRIu64
	       " evictions (store is KVSHM_NOEVICT: every acknowledged write "
	       "had to stay visible), %" PRIu64 " expired reclaimed, %" PRIu64
	       " segments reclaimed\n",
	       cfg.threads ? "threads" : "processes", cfg.seed,
	       (double)ms / 1000, ops, rs->checks, rs->t.skipped, st->evictions,
	       st->expired, st->segments_reclaimed);
	printf("torture: %" PRIu64 " resizes (%" PRIu64 " more refused: the "
	       "items did not fit), %" PRIu64 " versions written to owned "
	       "keys, none twice\n",
	       rs->resizes, rs->resize_refused, nvers);
	printf("torture: lincheck: %zu histories checked, %zu ops, max %zu "
	       "ops per history (%zu windows, longest %zu; %zu ops pending at "
	       "a kill; %zu windows undecided; %zu versions unique)\n",
	       lr->histories, lr->ops, lr->max_ops, lr->windows, lr->max_window,
	       lr->pending, lr->undecided, lr->versions);
	printf("torture: %" PRIu64 " kills (%" PRIu64 " workers, %" PRIu64
	       " janitor), %" PRIu64
	       " lock recoveries (from kvshm_stats), %" PRIu64
	       " operations verified, %" PRIu64 " keys checked, 0 failures\n",
	       rs->worker_kills + rs->janitor_kills, rs->worker_kills,
	       rs->janitor_kills, st->lock_recoveries, verified, rs->t.keys);
}

int main(int argc, char **argv)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct run_stats rs = { 0 };
	struct kvshm_stats st = { 0 };
	struct lc_report lr = { 0 };
	struct kvshm *kv = NULL;
	uint64_t rng, t0, nvers = 0;
	int err;

	if (parse_args(argc, argv))
		return 2;
	L = map_ledger();
	LOG = lc_log_create(cfg.workers + 1, LIN_CAP);
	if (!L || !LOG) {
		fprintf(stderr, "torture: mmap: %s\n", strerror(errno));
		return 1;
	}
	rng = cfg.seed;
	install_signals();
	o.flags = KVSHM_CREATE | KVSHM_EXCL | KVSHM_NOEVICT;
	o.arena_bytes = (uint64_t)cfg.arena_mib << 20;
	err = kvshm_open(cfg.name, &o, &kv);
	if (err) {
		fprintf(stderr, "torture: kvshm_open %s: %s\n", cfg.name,
			kvshm_strerror(err));
		return 1;
	}
	printf("torture: store %s (%u MiB, no eviction), %u %s, %u keys, "
	       "%u s, %s, seed %" PRIu64 "\n",
	       cfg.name, cfg.arena_mib, cfg.workers,
	       cfg.threads ? "threads" : "worker processes",
	       L->keys_per_worker * cfg.workers, cfg.seconds,
	       cfg.threads ? "no kills" :
	       cfg.kill_ms ? "a SIGKILL every ~kill-ms" :
			     "no kills",
	       cfg.seed);
	fflush(stdout);
	t0 = mono_ms();
	err = run(kv, &rs, &rng);
	if (stop_all())
		err = -1;
	if (!err)
		err = final_check(kv, &rs.t, &st);
	if (!err)
		err = check_owned_versions(&nvers);
	if (!err)
		err = check_histories(&lr);
	if (!err && failed())
		err = -1;
	if (!err)
		summary(&rs, &st, mono_ms() - t0, &lr, nvers);
	else
		printf("torture: FAILED after %.1f s, %" PRIu64 " kills, "
		       "seed %" PRIu64 ": %" PRIu64 " failures (above)\n",
		       (double)(mono_ms() - t0) / 1000,
		       rs.worker_kills + rs.janitor_kills, cfg.seed,
		       atomic_load(&L->failures));
	kvshm_close(kv);
	kvshm_unlink(cfg.name);
	return err ? 1 : 0;
}
