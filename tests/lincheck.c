/* SPDX-License-Identifier: MIT */
/*
 * lincheck.c - the history log, the recording wrapper around the kvshm
 * calls, and the per-key linearizability checker of lincheck.h. Uses only
 * <kvshm.h> (linked into the test programs and the torture program).
 *
 * HOW THE SEARCH WORKS (one window of one key)
 *
 * Each operation is two entries, its call at t_invoke and its return at
 * t_return (a pending or weakened one returns "never": after everything,
 * or at the bound a death gives it), in one list sorted by time, calls
 * before returns on a tie. The search walks the list from the start: at a
 * call it tries to linearize that operation now (the model must allow the
 * recorded result from the current state; a nondeterministic model gives
 * up to four successor states, tried in turn); a success lifts both of its
 * entries out of the list and restarts from the start. Reaching a return
 * means that operation should have been linearized by now: if its result
 * is unknown it may instead never have happened (lift it unchanged), else
 * this is a dead end and the search backtracks to the last choice. An empty
 * list is a linearization: its state is one the window may end in, and the
 * search backtracks for the others. Every (set of operations decided,
 * state) reached is remembered as a 128-bit fingerprint (Zobrist hashes of
 * the set, mixed with the state), and never explored twice: what follows
 * depends on nothing else. That keeps a window of n operations near n *
 * states instead of n!.
 */
#include "lincheck.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define INF UINT64_MAX
#define LONG_TTL_MS 3600000u

/* ---- the log ------------------------------------------------------------ */

struct lc_slot {
	_Atomic size_t count; /* records published (release) */
	char pad[56];         /* one line per slot: slots are written by
				 different processes */
};

struct lc_log {
	size_t len; /* of the whole mapping */
	unsigned nslots;
	size_t cap;
	struct lc_slot slots[];
	/* then nslots * cap struct lc_op */
};

static struct lc_op *slot_ops(const struct lc_log *log, unsigned slot)
{
	const size_t hdr = sizeof(*log) + log->nslots * sizeof(struct lc_slot);
	struct lc_op *base =
		(struct lc_op *)((char *)log + ((hdr + 63) & ~(size_t)63));

	return base + (size_t)slot * log->cap;
}

struct lc_log *lc_log_create(unsigned nslots, size_t cap)
{
	const size_t hdr =
		sizeof(struct lc_log) + nslots * sizeof(struct lc_slot);
	const size_t len = ((hdr + 63) & ~(size_t)63) +
			   (size_t)nslots * cap * sizeof(struct lc_op);
	struct lc_log *log = mmap(NULL, len, PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (log == MAP_FAILED)
		return NULL;
	log->len = len;
	log->nslots = nslots;
	log->cap = cap;
	return log; /* zero-filled: every slot empty */
}

void lc_log_destroy(struct lc_log *log)
{
	if (log)
		munmap(log, log->len);
}

size_t lc_log_count(const struct lc_log *log, unsigned slot)
{
	/* acquire: pairs with lc_begin()'s release; the reader runs after
	 * the writer was reaped anyway */
	return atomic_load_explicit(&((struct lc_log *)log)->slots[slot].count,
				    memory_order_acquire);
}

size_t lc_log_room(const struct lc_log *log, unsigned slot)
{
	return log->cap - lc_log_count(log, slot);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct lc_op *lc_begin(struct lc_log *log, unsigned slot,
		       const struct lc_op *op)
{
	const size_t n = lc_log_count(log, slot);
	struct lc_op *rec;

	if (n >= log->cap)
		return NULL;
	rec = slot_ops(log, slot) + n;
	*rec = *op;
	rec->pid = (uint32_t)getpid();
	rec->slot = (uint16_t)slot;
	rec->t_return = 0;
	rec->res_err = 0;
	rec->res_val = 0;
	rec->res_ver = 0;
	rec->t_invoke = now_ns();
	/* release: the record is complete before it counts; a kill before
	 * this leaves no record, and the call has not been made yet */
	atomic_store_explicit(&log->slots[slot].count, n + 1,
			      memory_order_release);
	return rec;
}

void lc_end(struct lc_op *rec)
{
	/* release: the result fields are written before the response
	 * counts; a kill before this leaves the op pending */
	__atomic_store_n(&rec->t_return, now_ns(), __ATOMIC_RELEASE);
}

void lc_death(struct lc_log *log, unsigned slot)
{
	struct lc_op d = { .kind = LC_DEATH, .key = LC_ALL_KEYS };
	struct lc_op *rec = lc_begin(log, slot, &d);

	if (rec)
		lc_end(rec);
}

uint64_t lc_next_vid(const struct lc_log *log, unsigned slot)
{
	return (uint64_t)(slot + 1) << 40 | (lc_log_count(log, slot) + 1);
}

/* ---- keys and values ---------------------------------------------------- */

size_t lc_key_name(char *buf, const char *prefix, unsigned k)
{
	int n = snprintf(buf, 32, "%s%u", prefix ? prefix : "lc:", k);

	return n < 0 ? 0 : (size_t)n;
}

static uint8_t val_byte(uint64_t vid, unsigned k, size_t i)
{
	const uint64_t x = vid * 0x9e3779b97f4a7c15ull ^ (uint64_t)k * 131u;

	return (uint8_t)(x >> (8 * (i % 8))) ^ (uint8_t)(i * 7);
}

/* header: key index (4 bytes), vid (8), total length (4); then filler */
#define VAL_HDR 16u

size_t lc_val_make(uint8_t *buf, unsigned k, uint64_t vid, size_t minlen)
{
	size_t len = VAL_HDR + (size_t)((vid * 2654435761u) % 97u);
	uint32_t k32 = k, l32;

	if (len < minlen)
		len = minlen + (size_t)(vid % 61u);
	if (len > LC_VAL_MAX)
		len = LC_VAL_MAX;
	l32 = (uint32_t)len;
	memcpy(buf, &k32, 4);
	memcpy(buf + 4, &vid, 8);
	memcpy(buf + 12, &l32, 4);
	for (size_t i = VAL_HDR; i < len; i++)
		buf[i] = val_byte(vid, k, i);
	return len;
}

uint64_t lc_val_parse(const uint8_t *buf, size_t len, unsigned k)
{
	uint32_t k32, l32;
	uint64_t vid;

	if (len < VAL_HDR)
		return LC_VAL_BAD;
	memcpy(&k32, buf, 4);
	memcpy(&vid, buf + 4, 8);
	memcpy(&l32, buf + 12, 4);
	if (k32 != k || l32 != len || vid == LC_VAL_BAD)
		return LC_VAL_BAD;
	for (size_t i = VAL_HDR; i < len; i++)
		if (buf[i] != val_byte(vid, k, i))
			return LC_VAL_BAD;
	return vid;
}

/* ---- running and recording one operation -------------------------------- */

static bool is_write(unsigned kind)
{
	return kind == LC_SET || kind == LC_ADD || kind == LC_REPLACE ||
	       kind == LC_CAS;
}

static uint64_t ttl_ms(unsigned ttl)
{
	switch (ttl) {
	case LC_TTL_LONG:
		return LONG_TTL_MS;
	case LC_TTL_SHORT:
	case LC_TTL_PAST:
		return 1;
	default:
		return KVSHM_TTL_NEVER;
	}
}

static int run_put(const struct lc_ctx *c, const char *key, size_t klen,
		   struct lc_op *rec)
{
	static const uint32_t modes[] = { [LC_SET] = KVSHM_SET,
					  [LC_ADD] = KVSHM_ADD,
					  [LC_REPLACE] = KVSHM_REPLACE,
					  [LC_CAS] = KVSHM_CAS };
	struct kvshm_write w = { .mode = modes[rec->kind],
				 .ttl_ms = ttl_ms(rec->arg_ttl),
				 .cas = rec->arg_ver };
	uint8_t buf[LC_VAL_MAX];
	const size_t vlen = lc_val_make(buf, rec->key, rec->arg_val, c->minlen);
	uint64_t ver = 0;
	int err;

	if (rec->flags & LC_F_KEEPTTL)
		w.opts |= KVSHM_KEEPTTL;
	if (rec->arg_ttl == LC_TTL_PAST)
		w.expires_at_ms = 1; /* 1970: already expired */
	err = kvshm_put(c->kv, key, klen, buf, vlen, &w, &ver);
	rec->res_ver = err ? 0 : ver;
	return err;
}

static int run_get(const struct lc_ctx *c, const char *key, size_t klen,
		   struct lc_op *rec)
{
	uint8_t buf[LC_VAL_MAX];
	struct kvshm_item it;
	int err = kvshm_get_ex(c->kv, key, klen, buf, sizeof(buf), &it, 0);

	if (err)
		return err;
	rec->res_ver = it.cas;
	if (it.counter) {
		int64_t v = 0;

		memcpy(&v, buf, it.value_len == 8 ? 8 : 0);
		rec->flags |= LC_F_CTR;
		rec->res_val = it.value_len == 8 ? (uint64_t)v : LC_VAL_BAD;
	} else {
		rec->res_val = lc_val_parse(buf, it.value_len, rec->key);
	}
	return 0;
}

int lc_run(const struct lc_ctx *c, struct lc_op *op,
	   const struct kvshm_options *ropts)
{
	char key[32];
	const size_t klen = lc_key_name(key, c->prefix, op->key);
	struct lc_op *rec;
	int64_t res = 0;
	int err;

	if (is_write(op->kind))
		op->arg_val = lc_next_vid(c->log, c->slot);
	rec = lc_begin(c->log, c->slot, op);
	if (!rec)
		return -EOVERFLOW;
	switch (rec->kind) {
	case LC_GET:
		err = run_get(c, key, klen, rec);
		break;
	case LC_DELETE:
		err = kvshm_delete(c->kv, key, klen);
		break;
	case LC_DELETE_CAS:
		err = kvshm_delete_cas(c->kv, key, klen, rec->arg_ver);
		break;
	case LC_EXPIRE:
		err = kvshm_expire(c->kv, key, klen, ttl_ms(rec->arg_ttl));
		break;
	case LC_INCR:
		err = kvshm_incr(c->kv, key, klen, rec->arg_delta,
				 KVSHM_TTL_NEVER, &res);
		rec->res_val = err ? 0 : (uint64_t)res;
		break;
	case LC_CLEAR:
		err = kvshm_clear(c->kv);
		break;
	case LC_RESIZE:
		err = kvshm_resize(c->name, ropts);
		break;
	default:
		err = run_put(c, key, klen, rec);
	}
	rec->res_err = err;
	lc_end(rec);
	*op = *rec;
	return err;
}

static uint64_t pick_ttl(uint64_t r)
{
	return r % 8 == 0 ? LC_TTL_SHORT : r % 2 ? LC_TTL_NEVER : LC_TTL_LONG;
}

void lc_random_op(struct lc_op *o, uint64_t r1, uint64_t x, unsigned k,
		  uint64_t last, uint64_t old)
{
	const unsigned r = (unsigned)(r1 % 100);

	*o = (struct lc_op){ .key = (uint16_t)k };
	if (r < 24) {
		o->kind = LC_GET;
	} else if (r < 36) {
		o->kind = LC_SET;
		o->arg_ttl =
			(uint8_t)(x % 16 == 0 ? LC_TTL_PAST : pick_ttl(x >> 8));
		if (x % 5 == 1 && o->arg_ttl != LC_TTL_PAST)
			o->flags = LC_F_KEEPTTL;
	} else if (r < 43) {
		o->kind = LC_ADD;
		o->arg_ttl = (uint8_t)pick_ttl(x);
	} else if (r < 48) {
		o->kind = LC_REPLACE;
		o->arg_ttl = (uint8_t)pick_ttl(x);
	} else if (r < 60) {
		o->kind = LC_CAS;
		o->arg_ver = r < 56 ? last : old;
		o->arg_ttl = (uint8_t)pick_ttl(x);
		if (x % 3 == 0)
			o->flags = LC_F_KEEPTTL;
	} else if (r < 65) {
		o->kind = LC_DELETE;
	} else if (r < 71) {
		o->kind = LC_DELETE_CAS;
		o->arg_ver = x % 4 ? last : old;
	} else if (r < 77) {
		o->kind = LC_EXPIRE;
		o->arg_ttl = (uint8_t)pick_ttl(x);
	} else {
		o->kind = LC_INCR;
		o->arg_delta = (int64_t)(x % 5) + 1;
	}
}

/* ---- the model of one key ----------------------------------------------- */

enum {
	VK_EXACT = 0,
	VK_FRESH,
	VK_ANY
};

struct st {
	uint64_t val; /* value id, or the counter's value */
	uint64_t ver;
	uint8_t exists, ctr, doomed, vk;
};

/* One operation of a key's history, as the search sees it. */
struct hop {
	struct lc_op op;
	uint64_t inv, ret; /* ret INF: may never happen */
	uint64_t z1, z2;   /* Zobrist keys */
	bool unknown;      /* pending or weakened: result unknown */
};

static const struct st ABSENT;

static bool st_eq(const struct st *a, const struct st *b)
{
	return a->exists == b->exists && a->val == b->val && a->ver == b->ver &&
	       a->ctr == b->ctr && a->doomed == b->doomed && a->vk == b->vk;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

static uint64_t st_hash(const struct st *s, uint64_t seed)
{
	uint64_t h = mix64(seed ^ s->val);

	h = mix64(h ^ s->ver);
	return mix64(h ^ ((uint64_t)s->exists | (uint64_t)s->ctr << 8 |
			  (uint64_t)s->doomed << 16 | (uint64_t)s->vk << 24));
}

/* -1 no, 1 yes, 0 either (ANY) */
static int ver_match(const struct st *s, uint64_t cas)
{
	if (s->vk == VK_ANY)
		return 0;
	if (s->vk == VK_FRESH)
		return -1; /* nobody has seen it: cas is an older version */
	return s->ver == cas ? 1 : -1;
}

static bool takes_room(unsigned kind)
{
	return is_write(kind) || kind == LC_INCR;
}

/* The new state of a successful write of h from s. */
static struct st written(const struct st *s, const struct hop *h)
{
	const bool keep = (h->op.flags & LC_F_KEEPTTL) && s->exists;
	struct st n = { .val = h->op.arg_val, .exists = 1 };

	if (h->unknown)
		n.vk = (h->op.flags & LC_F_WEAK) ? VK_ANY : VK_FRESH;
	else
		n.ver = h->op.res_ver;
	n.doomed = keep ? s->doomed : h->op.arg_ttl == LC_TTL_SHORT;
	if (!keep && h->op.arg_ttl == LC_TTL_PAST)
		return ABSENT;
	return n;
}

static unsigned new_vk(const struct hop *h)
{
	return (h->op.flags & LC_F_WEAK) ? VK_ANY : VK_FRESH;
}

/* A known outcome: out[0] = to if the recorded error is want. */
static int expect(const struct hop *h, int want, const struct st *to,
		  struct st *out)
{
	if (h->unknown) {
		if (want)
			return 0; /* a failure is the same as never */
		out[0] = *to;
		return 1;
	}
	if (h->op.res_err != want)
		return 0;
	out[0] = *to;
	return 1;
}

static int step_get(const struct st *s, const struct hop *h, struct st *out)
{
	const struct lc_op *o = &h->op;

	if (h->unknown)
		return 0; /* dropped before the search; never linearized */
	if (!s->exists)
		return expect(h, -ENOENT, s, out);
	if (o->res_err || !!(o->flags & LC_F_CTR) != s->ctr ||
	    o->res_val != s->val)
		return 0;
	out[0] = *s;
	if (s->vk == VK_EXACT)
		return o->res_ver == s->ver;
	out[0].vk = VK_EXACT; /* the read adopts the version it saw */
	out[0].ver = o->res_ver;
	return 1;
}

static int step_put(const struct st *s, const struct hop *h, struct st *out)
{
	const struct st n = written(s, h);
	int m;

	switch (h->op.kind) {
	case LC_ADD:
		return s->exists ? expect(h, -EEXIST, s, out) :
				   expect(h, 0, &n, out);
	case LC_REPLACE:
		return s->exists ? expect(h, 0, &n, out) :
				   expect(h, -ENOENT, s, out);
	case LC_CAS:
		if (!s->exists)
			return expect(h, -ENOENT, s, out);
		m = ver_match(s, h->op.arg_ver);
		if (m > 0)
			return expect(h, 0, &n, out);
		if (m < 0)
			return expect(h, -ESTALE, s, out);
		return expect(h, 0, &n, out) +
		       (h->unknown ? 0 : expect(h, -ESTALE, s, out));
	default:
		return expect(h, 0, &n, out);
	}
}

static int step_delete_cas(const struct st *s, const struct hop *h,
			   struct st *out)
{
	int m;

	if (!s->exists)
		return expect(h, -ENOENT, s, out);
	m = ver_match(s, h->op.arg_ver);
	if (m > 0)
		return expect(h, 0, &ABSENT, out);
	if (m < 0)
		return expect(h, -ESTALE, s, out);
	return expect(h, 0, &ABSENT, out) +
	       (h->unknown ? 0 : expect(h, -ESTALE, s, out));
}

static int step_incr(const struct lc_check_opts *o, const struct st *s,
		     const struct hop *h, struct st *out)
{
	struct st n = { .exists = 1, .ctr = 1, .vk = (uint8_t)new_vk(h) };

	if (s->exists && !s->ctr)
		return expect(h, -ENOMSG, s, out);
	if (s->exists) {
		n.val = s->val + (uint64_t)h->op.arg_delta;
		n.doomed = s->doomed; /* an existing counter keeps its TTL */
	} else {
		n.val = (uint64_t)h->op.arg_delta;
		/* KNOWN BUG (lincheck.h, lc_check_opts.strict): the incr
		 * that creates a counter reads its result back after the
		 * counter is published, so lock-free adds that land in
		 * between are in it too */
		if (!o->strict && !h->unknown && h->op.res_err == 0 &&
		    h->op.arg_delta > 0 &&
		    (int64_t)h->op.res_val > h->op.arg_delta) {
			out[0] = n;
			return 1;
		}
	}
	if (!h->unknown && h->op.res_err == 0 && h->op.res_val != n.val)
		return 0;
	return expect(h, 0, &n, out);
}

/* Successor states of s by h that agree with h's recorded result. */
static int step_det(const struct lc_check_opts *o, const struct st *s,
		    const struct hop *h, struct st *out)
{
	struct st n;

	if (!h->unknown && h->op.res_err == -ENOSPC && o->enospc &&
	    takes_room(h->op.kind)) {
		out[0] = *s; /* a failed write changes nothing */
		return 1;
	}
	switch (h->op.kind) {
	case LC_GET:
		return step_get(s, h, out);
	case LC_DELETE:
		return s->exists ? expect(h, 0, &ABSENT, out) :
				   expect(h, -ENOENT, s, out);
	case LC_DELETE_CAS:
		return step_delete_cas(s, h, out);
	case LC_EXPIRE:
		n = *s;
		n.doomed = h->op.arg_ttl == LC_TTL_SHORT ||
			   h->op.arg_ttl == LC_TTL_PAST;
		return s->exists ? expect(h, 0, &n, out) :
				   expect(h, -ENOENT, s, out);
	case LC_INCR:
		return step_incr(o, s, h, out);
	case LC_CLEAR:
		if (!h->unknown && h->op.res_err)
			return out[0] = *s, 1;
		out[0] = ABSENT;
		return 1;
	case LC_RESIZE:
		out[0] = *s;
		if ((h->unknown || h->op.res_err == 0) && s->exists) {
			out[0].vk = (uint8_t)new_vk(h);
			out[0].ver = 0;
		}
		return 1;
	default:
		return step_put(s, h, out);
	}
}

/* Up to 4 successors: a key that may vanish (doomed, or any key of a
 * full evicting store) may first have vanished. */
static int step(const struct lc_check_opts *o, const struct st *s,
		const struct hop *h, struct st *out)
{
	struct st gone[2];
	int n = step_det(o, s, h, out), m;

	if (!s->exists || !(s->doomed || o->evict))
		return n;
	m = step_det(o, &ABSENT, h, gone);
	for (int i = 0; i < m; i++) {
		bool dup = false;

		for (int j = 0; j < n && !dup; j++)
			dup = st_eq(&gone[i], &out[j]);
		if (!dup)
			out[n++] = gone[i];
	}
	return n;
}

/* ---- the search --------------------------------------------------------- */

struct ent {
	uint64_t t;
	int op; /* index into the window */
	bool call;
	struct ent *prev, *next, *match;
};

struct frame {
	struct ent *e; /* the call entry of the op decided */
	int bi;        /* branch taken; -1: "never happened" */
	struct st s;   /* state before */
};

/* A set of states (small: the states a window may end in). */
struct stset {
	struct st *v;
	size_t n, cap;
};

static void stset_add(struct stset *ss, const struct st *s)
{
	for (size_t i = 0; i < ss->n; i++)
		if (st_eq(&ss->v[i], s))
			return;
	if (ss->n == ss->cap) {
		size_t cap = ss->cap ? 2 * ss->cap : 8;
		struct st *v = realloc(ss->v, cap * sizeof(*v));

		if (!v)
			abort();
		ss->v = v;
		ss->cap = cap;
	}
	ss->v[ss->n++] = *s;
}

/* fingerprints remembered, open addressing; {0, 0} = empty */
struct memo {
	uint64_t (*t)[2];
	size_t cap, n;
};

static void memo_reset(struct memo *m, size_t want)
{
	size_t cap = 64;

	while (cap < 2 * want)
		cap *= 2;
	if (cap > m->cap) {
		free(m->t);
		m->t = malloc(cap * sizeof(*m->t));
		if (!m->t)
			abort();
		m->cap = cap;
	}
	memset(m->t, 0, m->cap * sizeof(*m->t));
	m->n = 0;
}

static bool memo_insert(struct memo *m, uint64_t a, uint64_t b);

static void memo_grow(struct memo *m)
{
	struct memo g = { 0 };
	uint64_t(*old)[2] = m->t;
	const size_t oc = m->cap;

	g.cap = 2 * oc;
	g.t = calloc(g.cap, sizeof(*g.t));
	if (!g.t)
		abort();
	for (size_t i = 0; i < oc; i++)
		if (old[i][0] | old[i][1])
			memo_insert(&g, old[i][0], old[i][1]);
	free(old);
	*m = g;
}

/* true if (a, b) was new */
static bool memo_insert(struct memo *m, uint64_t a, uint64_t b)
{
	size_t i;

	if (!(a | b))
		a = 1;
	if (2 * (m->n + 1) > m->cap)
		memo_grow(m);
	for (i = (size_t)a & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		if (!(m->t[i][0] | m->t[i][1])) {
			m->t[i][0] = a;
			m->t[i][1] = b;
			m->n++;
			return true;
		}
		if (m->t[i][0] == a && m->t[i][1] == b)
			return false;
	}
}

/* One window: its operations, entries and working memory. */
struct win {
	const struct lc_check_opts *o;
	struct hop *ops;
	size_t n;
	struct ent *ents; /* 2n, sorted, plus the head at ents[2n] */
	struct frame *stack;
	struct memo memo;
	size_t budget;
	size_t used;
};

static int ent_cmp(const void *pa, const void *pb)
{
	const struct ent *a = pa, *b = pb;

	if (a->t != b->t)
		return a->t < b->t ? -1 : 1;
	if (a->call != b->call)
		return a->call ? -1 : 1; /* a tie is concurrency */
	return a->op - b->op;
}

static void win_build(struct win *w)
{
	struct ent *head;
	size_t i;

	w->ents = realloc(w->ents, (2 * w->n + 1) * sizeof(*w->ents));
	w->stack = realloc(w->stack, (w->n + 1) * sizeof(*w->stack));
	if (!w->ents || !w->stack)
		abort();
	for (i = 0; i < w->n; i++) {
		w->ents[2 * i] = (struct ent){ .t = w->ops[i].inv,
					       .op = (int)i,
					       .call = true };
		w->ents[2 * i + 1] =
			(struct ent){ .t = w->ops[i].ret, .op = (int)i };
	}
	qsort(w->ents, 2 * w->n, sizeof(*w->ents), ent_cmp);
	{
		struct ent **calls = malloc((w->n + 1) * sizeof(*calls));

		if (!calls)
			abort();
		for (i = 0; i < 2 * w->n; i++)
			if (w->ents[i].call)
				calls[w->ents[i].op] = &w->ents[i];
		for (i = 0; i < 2 * w->n; i++)
			if (!w->ents[i].call) {
				w->ents[i].match = calls[w->ents[i].op];
				calls[w->ents[i].op]->match = &w->ents[i];
			}
		free(calls);
	}
	head = &w->ents[2 * w->n];
	*head = (struct ent){ .op = -1 };
}

static void win_link(struct win *w)
{
	struct ent *head = &w->ents[2 * w->n], *prev = head;

	for (size_t i = 0; i < 2 * w->n; i++) {
		prev->next = &w->ents[i];
		w->ents[i].prev = prev;
		prev = &w->ents[i];
	}
	prev->next = NULL;
}

static void lift(struct ent *call)
{
	struct ent *r = call->match;

	call->prev->next = call->next;
	if (call->next)
		call->next->prev = call->prev;
	r->prev->next = r->next;
	if (r->next)
		r->next->prev = r->prev;
}

static void unlift(struct ent *call)
{
	struct ent *r = call->match;

	r->prev->next = r;
	if (r->next)
		r->next->prev = r;
	call->prev->next = call;
	if (call->next)
		call->next->prev = call;
}

enum {
	S_DONE = 0,
	S_UNDECIDED = 1
};

/* Every state the window may end in from s0 goes into out (first_only:
 * stop at the first). */
static int search(struct win *w, const struct st *s0, struct stset *out,
		  bool first_only)
{
	struct ent *head = &w->ents[2 * w->n], *e;
	struct st s = *s0, succ[4];
	uint64_t z1 = 0, z2 = 0;
	size_t sp = 0;
	int bi = 0;

	win_link(w);
	e = head->next;
	for (;;) {
		struct frame *f;
		const struct hop *h;
		int nb;

		if (!e) {
			stset_add(out, &s);
			if (first_only)
				return S_DONE;
			goto backtrack;
		}
		h = &w->ops[e->op];
		if (e->call) {
			nb = step(w->o, &s, h, succ);
			for (; bi < nb; bi++)
				if (memo_insert(
					    &w->memo,
					    z1 ^ h->z1 ^ st_hash(&succ[bi], 1),
					    z2 ^ h->z2 ^ st_hash(&succ[bi], 2)))
					break;
			if (bi >= nb) {
				e = e->next;
				bi = 0;
				continue;
			}
			w->stack[sp++] = (struct frame){ e, bi, s };
			s = succ[bi];
			goto descend;
		}
		/* the return of an op not linearized yet */
		if (h->unknown &&
		    memo_insert(&w->memo, z1 ^ h->z1 ^ st_hash(&s, 1),
				z2 ^ h->z2 ^ st_hash(&s, 2))) {
			e = e->match;
			w->stack[sp++] = (struct frame){ e, -1, s };
			goto descend;
		}
backtrack:
		for (;;) {
			if (sp == 0)
				return S_DONE;
			f = &w->stack[--sp];
			s = f->s;
			z1 ^= w->ops[f->e->op].z1;
			z2 ^= w->ops[f->e->op].z2;
			unlift(f->e);
			if (f->bi >= 0)
				break;
		}
		e = f->e;
		bi = f->bi + 1;
		continue;
descend:
		z1 ^= h->z1;
		z2 ^= h->z2;
		lift(e);
		e = head->next;
		bi = 0;
		if (++w->used > w->budget)
			return S_UNDECIDED;
	}
}

/* Search the window from every state in in; out gets the end states.
 * Returns S_DONE or S_UNDECIDED. */
static int win_run(struct win *w, const struct stset *in, struct stset *out,
		   bool first_only)
{
	uint64_t r = 0x2545f4914f6cdd1dull ^ w->n;

	for (size_t i = 0; i < w->n; i++) {
		w->ops[i].z1 = mix64(r += 0x9e3779b97f4a7c15ull);
		w->ops[i].z2 = mix64(r += 0x9e3779b97f4a7c15ull);
	}
	win_build(w);
	memo_reset(&w->memo, 4 * w->n);
	w->used = 0;
	out->n = 0;
	for (size_t i = 0; i < in->n; i++) {
		if (search(w, &in->v[i], out, first_only) == S_UNDECIDED)
			return S_UNDECIDED;
		if (first_only && out->n)
			break;
	}
	return S_DONE;
}

static void win_free(struct win *w)
{
	free(w->ents);
	free(w->stack);
	free(w->memo.t);
}

/* ---- describing --------------------------------------------------------- */

static const char *const kind_names[LC_NKINDS] = {
	[LC_GET] = "get",
	[LC_SET] = "set",
	[LC_ADD] = "add",
	[LC_REPLACE] = "replace",
	[LC_CAS] = "cas",
	[LC_DELETE] = "delete",
	[LC_DELETE_CAS] = "delete_cas",
	[LC_EXPIRE] = "expire",
	[LC_INCR] = "incr",
	[LC_CLEAR] = "clear",
	[LC_RESIZE] = "resize",
	[LC_DEATH] = "death",
};

static const char *const ttl_names[] = { "never", "1h", "1ms", "past" };

static void vid_str(char *buf, size_t len, uint64_t vid)
{
	if (vid == LC_VAL_BAD)
		snprintf(buf, len, "<bytes no write made>");
	else
		snprintf(buf, len, "v%" PRIu64 ".%" PRIu64, vid >> 40,
			 vid & (((uint64_t)1 << 40) - 1));
}

static double ms(uint64_t t, uint64_t t0)
{
	return t == INF || t == 0 ? -1.0 : (double)(int64_t)(t - t0) / 1e6;
}

void lc_op_print(FILE *f, const struct lc_op *o, uint64_t t0,
		 const char *prefix)
{
	char v[48], key[32];
	const char *kn = o->kind < LC_NKINDS && kind_names[o->kind] ?
				 kind_names[o->kind] :
				 "?";

	if (o->key == LC_ALL_KEYS)
		snprintf(key, sizeof(key), "(all keys)");
	else
		lc_key_name(key, prefix, o->key);
	fprintf(f, "slot %2u pid %-7u [%10.3f .. ", o->slot, o->pid,
		ms(o->t_invoke, t0));
	if (o->t_return && !(o->flags & LC_F_WEAK))
		fprintf(f, "%10.3f ms] ", ms(o->t_return, t0));
	else
		fprintf(f, "   never  ] ");
	fprintf(f, "%s %s", kn, key);
	if (is_write(o->kind)) {
		vid_str(v, sizeof(v), o->arg_val);
		fprintf(f, " = %s ttl %s%s", v, ttl_names[o->arg_ttl & 3],
			(o->flags & LC_F_KEEPTTL) ? " keepttl" : "");
	}
	if (o->kind == LC_CAS || o->kind == LC_DELETE_CAS)
		fprintf(f, " if version %#" PRIx64, o->arg_ver);
	if (o->kind == LC_EXPIRE)
		fprintf(f, " ttl %s", ttl_names[o->arg_ttl & 3]);
	if (o->kind == LC_INCR)
		fprintf(f, " by %" PRId64, o->arg_delta);
	if (!o->t_return) {
		fprintf(f, " -> ? (pending: may or may not have happened)");
		return;
	}
	if (o->flags & LC_F_WEAK)
		fprintf(f,
			" -> ? (weakened: may or may not have happened, "
			"any time after its call; it returned at %.3f ms:",
			ms(o->t_return, t0));
	if (o->res_err) {
		fprintf(f, " -> %s%s", kvshm_strerror(o->res_err),
			(o->flags & LC_F_WEAK) ? ")" : "");
		return;
	}
	fprintf(f, (o->flags & LC_F_WEAK) ? " ok" : " -> ok");
	if (o->kind == LC_GET) {
		if (o->flags & LC_F_CTR)
			fprintf(f, " counter %" PRId64, (int64_t)o->res_val);
		else
			vid_str(v, sizeof(v), o->res_val), fprintf(f, " %s", v);
		fprintf(f, " version %#" PRIx64, o->res_ver);
	} else if (is_write(o->kind)) {
		fprintf(f, " version %#" PRIx64, o->res_ver);
	} else if (o->kind == LC_INCR) {
		fprintf(f, " = %" PRId64, (int64_t)o->res_val);
	}
	if (o->flags & LC_F_WEAK)
		fprintf(f, ")");
}

static void st_print(FILE *f, const struct st *s)
{
	char v[48];

	if (!s->exists) {
		fprintf(f, "absent");
		return;
	}
	if (s->ctr)
		fprintf(f, "counter %" PRId64, (int64_t)s->val);
	else
		vid_str(v, sizeof(v), s->val), fprintf(f, "%s", v);
	if (s->vk == VK_EXACT)
		fprintf(f, " version %#" PRIx64, s->ver);
	else
		fprintf(f, " version %s", s->vk == VK_FRESH ? "new" : "any");
	if (s->doomed)
		fprintf(f, " (may expire)");
}

/* ---- checking a key ----------------------------------------------------- */

static bool hop_changes_nothing(const struct hop *h)
{
	return !h->unknown && (h->op.kind == LC_GET || h->op.res_err != 0);
}

static bool nonlin(const struct lc_check_opts *o, struct win *scratch,
		   const struct hop *ops, size_t n, const struct stset *in)
{
	struct stset out = { 0 };
	struct win w = *scratch;
	int r;

	w.o = o;
	w.ops = (struct hop *)ops;
	w.n = n;
	w.budget = o->budget ? o->budget : 4000000;
	r = win_run(&w, in, &out, true);
	*scratch = w;
	free(out.v);
	return r == S_DONE && out.n == 0;
}

/* Shrink the failing window ops[0..n) and print what is left. */
static void report_window(const struct lc_check_opts *o, struct win *scratch,
			  const struct hop *ops, size_t n, size_t failing,
			  const struct stset *in, unsigned key)
{
	FILE *f = o->out ? o->out : stderr;
	struct hop *cur = malloc((n + 1) * sizeof(*cur));
	struct hop *cand = malloc((n + 1) * sizeof(*cand));
	size_t m = n;
	bool changed = true;
	char kname[32];

	if (!cur || !cand)
		abort();
	memcpy(cur, ops, n * sizeof(*cur));
	while (changed) {
		changed = false;
		for (size_t i = 0; i < m; i++) {
			size_t cn = 0;

			if (cur[i].unknown)
				continue;
			for (size_t j = 0; j < m; j++) {
				if (j != i) {
					cand[cn++] = cur[j];
				} else if (!hop_changes_nothing(&cur[j])) {
					cand[cn] = cur[j];
					cand[cn].unknown = true;
					cand[cn].ret = INF;
					cand[cn].op.flags |= LC_F_WEAK;
					cn++;
				}
			}
			if (nonlin(o, scratch, cand, cn, in)) {
				memcpy(cur, cand, cn * sizeof(*cur));
				m = cn;
				changed = true;
				i--; /* the same index holds the next op now */
			}
		}
	}
	lc_key_name(kname, o->prefix, key);
	fprintf(f,
		"lincheck: FAIL: key %s is not linearizable: a window of "
		"%zu operations has none; shrunk from the last %zu "
		"operations to a minimal non-linearizable sub-history of "
		"%zu (times in ms from the first), the key being ",
		kname, failing, n, m);
	for (size_t i = 0; i < in->n; i++) {
		fprintf(f, i ? " or " : "");
		st_print(f, &in->v[i]);
	}
	fprintf(f, ":\n");
	for (size_t i = 0; i < m; i++) {
		fprintf(f, "    ");
		lc_op_print(f, &cur[i].op, m ? cur[0].inv : 0, o->prefix);
		fprintf(f, "\n");
	}
	free(cur);
	free(cand);
}

struct vrec {
	uint64_t ver, val;
	size_t op;
	bool write, ctr;
};

static int vrec_cmp(const void *pa, const void *pb)
{
	const struct vrec *a = pa, *b = pb;

	if (a->ver != b->ver)
		return a->ver < b->ver ? -1 : 1;
	return a->op < b->op ? -1 : a->op > b->op;
}

/* No version handed out to two writes of the key, nor standing for two
 * values. Returns the number of failures (described). */
static size_t check_versions(const struct lc_check_opts *o,
			     const struct hop *ops, size_t n, unsigned key,
			     size_t *checked)
{
	FILE *f = o->out ? o->out : stderr;
	struct vrec *v = malloc((n + 1) * sizeof(*v));
	size_t nv = 0, bad = 0;
	char kname[32];

	if (!v)
		abort();
	for (size_t i = 0; i < n; i++) {
		const struct lc_op *p = &ops[i].op;

		if (ops[i].unknown || p->res_err)
			continue;
		if (is_write(p->kind) || p->kind == LC_GET)
			v[nv++] = (struct vrec){ p->res_ver, p->res_val, i,
						 is_write(p->kind),
						 !!(p->flags & LC_F_CTR) };
		if (is_write(p->kind))
			v[nv - 1].val = p->arg_val;
	}
	*checked += nv;
	qsort(v, nv, sizeof(*v), vrec_cmp);
	lc_key_name(kname, o->prefix, key);
	for (size_t i = 0, j; i < nv; i = j) {
		size_t writes = 0;
		bool differ = false;

		for (j = i; j < nv && v[j].ver == v[i].ver; j++) {
			writes += v[j].write;
			differ |= v[j].val != v[i].val || v[j].ctr != v[i].ctr;
		}
		if (writes < 2 && !differ)
			continue;
		if (++bad > 3)
			continue; /* counted, not printed */
		fprintf(f, "lincheck: FAIL: key %s: version %#" PRIx64 " %s:\n",
			kname, v[i].ver,
			writes > 1 ? "was handed out to two writes" :
				     "stands for two different values");
		for (size_t k = i; k < j && k < i + 6; k++) {
			fprintf(f, "    ");
			lc_op_print(f, &ops[v[k].op].op, ops[0].inv, o->prefix);
			fprintf(f, "\n");
		}
	}
	if (bad > 3)
		fprintf(f,
			"lincheck: FAIL: key %s: %zu more repeated versions\n",
			kname, bad - 3);
	free(v);
	return bad;
}

static int hop_cmp(const void *pa, const void *pb)
{
	const struct hop *a = pa, *b = pb;

	if (a->inv != b->inv)
		return a->inv < b->inv ? -1 : 1;
	return a->op.slot - b->op.slot;
}

#define CTX 8 /* windows of context a failure is shrunk from */

static void stset_copy(struct stset *to, const struct stset *from)
{
	to->n = 0;
	for (size_t i = 0; i < from->n; i++)
		stset_add(to, &from->v[i]);
}

/* Check the key's history ops[0..n) (sorted by invocation). */
static int check_key(const struct lc_check_opts *o, struct hop *ops, size_t n,
		     unsigned key, struct lc_report *rep)
{
	struct stset in = { 0 }, out = { 0 }, ctx_in[CTX] = { { 0 } };
	size_t ctx_start[CTX], nctx = 0;
	struct win w = { .o = o };
	size_t start = 0, bad = 0;

	rep->histories++;
	rep->ops += n;
	if (n > rep->max_ops)
		rep->max_ops = n;
	bad += check_versions(o, ops, n, key, &rep->versions);
	stset_add(&in, &ABSENT);
	while (start < n) {
		uint64_t maxret = ops[start].ret;
		size_t end = start + 1;

		/* ops[start..end) is a window: nothing in flight at its end */
		while (end < n && ops[end].inv <= maxret) {
			if (ops[end].ret > maxret)
				maxret = ops[end].ret;
			end++;
		}
		/* remember where this window starts and from which states,
		 * for a failure's context */
		ctx_start[nctx % CTX] = start;
		stset_copy(&ctx_in[nctx % CTX], &in);
		nctx++;
		w.ops = ops + start;
		w.n = end - start;
		w.budget = o->budget ? o->budget : 4000000;
		rep->windows++;
		if (w.n > rep->max_window)
			rep->max_window = w.n;
		if (win_run(&w, &in, &out, false) == S_UNDECIDED) {
			rep->undecided++; /* the rest of the key is unknown */
			break;
		}
		if (!out.n) {
			/* shrink from up to CTX windows back (64 ops at most,
			 * unless the failing window alone is longer) */
			size_t c = nctx - 1;
			const size_t wn = w.n;

			while (c > 0 && nctx - c < CTX &&
			       end - ctx_start[(c - 1) % CTX] <= 64)
				c--;
			/* the failing window alone, from the states it may
			 * start in; then with the windows before it, so the
			 * writes behind those states show too */
			report_window(o, &w, ops + start, wn, wn, &in, key);
			if (c != nctx - 1)
				report_window(o, &w, ops + ctx_start[c % CTX],
					      end - ctx_start[c % CTX], wn,
					      &ctx_in[c % CTX], key);
			bad++;
			break;
		}
		{
			struct stset t = in;

			in = out;
			out = t;
		}
		start = end;
	}
	win_free(&w);
	free(in.v);
	free(out.v);
	for (size_t i = 0; i < CTX; i++)
		free(ctx_in[i].v);
	rep->failures += bad;
	return bad ? -1 : 0;
}

/* Turn a recorded op into a search op; pending ones get their bound. */
static void to_hop(struct hop *h, const struct lc_op *o)
{
	*h = (struct hop){ .op = *o, .inv = o->t_invoke, .ret = o->t_return };
	if (!o->t_return || (o->flags & LC_F_WEAK)) {
		h->unknown = true;
		h->ret = INF;
	}
}

static bool locks_key(const struct hop *h)
{
	/* a successful write of the key took its stripe lock: whatever a
	 * dead process left there was repaired or undone before */
	return !h->unknown && h->op.res_err == 0 &&
	       (is_write(h->op.kind) || h->op.kind == LC_DELETE ||
		h->op.kind == LC_DELETE_CAS || h->op.kind == LC_EXPIRE);
}

/* Pending ops of dead processes (death[i] != 0) take effect before the
 * first successful locking write of the key invoked after the death
 * returns, or never. */
static void bound_pending(struct hop *ops, size_t n, const uint64_t *death)
{
	uint64_t *suf = malloc((n + 1) * sizeof(*suf));

	if (!suf)
		abort();
	suf[n] = INF;
	for (size_t i = n; i-- > 0;)
		suf[i] = locks_key(&ops[i]) && ops[i].ret < suf[i + 1] ?
				 ops[i].ret :
				 suf[i + 1];
	for (size_t i = 0; i < n; i++) {
		size_t lo = i + 1, hi = n;

		if (!ops[i].unknown || !death[i])
			continue;
		while (lo < hi) { /* first op invoked after the death */
			size_t mid = (lo + hi) / 2;

			if (ops[mid].inv > death[i])
				hi = mid;
			else
				lo = mid + 1;
		}
		ops[i].ret = suf[lo];
	}
	free(suf);
}

/* Sort, bound and check one key's gathered ops; death[] runs along. */
static int check_gathered(const struct lc_check_opts *o, struct hop *ops,
			  uint64_t *death, size_t n, unsigned key,
			  struct lc_report *rep)
{
	size_t m = 0;

	/* sort by invocation, carrying death times: pack the index */
	for (size_t i = 0; i < n; i++)
		ops[i].z1 = death[i];
	qsort(ops, n, sizeof(*ops), hop_cmp);
	for (size_t i = 0; i < n; i++)
		death[i] = ops[i].z1;
	for (size_t i = 0; i < n; i++) {
		if (ops[i].unknown)
			rep->pending++;
		/* a pending read has no effect: drop it */
		if (ops[i].unknown && ops[i].op.kind == LC_GET)
			continue;
		death[m] = death[i];
		ops[m++] = ops[i];
	}
	bound_pending(ops, m, death);
	return check_key(o, ops, m, key, rep);
}

int lc_check_ops(const struct lc_op *ops, size_t n, unsigned key,
		 const struct lc_check_opts *o, struct lc_report *rep)
{
	struct hop *h = calloc(n + 1, sizeof(*h));
	uint64_t *death = calloc(n + 1, sizeof(*death));
	size_t m = 0;
	int r;

	if (!h || !death)
		abort();
	memset(rep, 0, sizeof(*rep));
	for (size_t i = 0; i < n; i++)
		if (ops[i].kind != LC_DEATH &&
		    (ops[i].key == key || ops[i].key == LC_ALL_KEYS))
			to_hop(&h[m++], &ops[i]);
	r = check_gathered(o, h, death, m, key, rep);
	free(h);
	free(death);
	return r;
}

int lc_check_log(const struct lc_log *log, const struct lc_check_opts *o,
		 struct lc_report *rep)
{
	size_t total = 0;
	struct hop *h;
	uint64_t *death;
	int r = 0;

	memset(rep, 0, sizeof(*rep));
	for (unsigned s = 0; s < log->nslots; s++)
		total += lc_log_count(log, s);
	h = calloc(total + 1, sizeof(*h));
	death = calloc(total + 1, sizeof(*death));
	if (!h || !death)
		abort();
	for (unsigned k = 0; k < o->nkeys; k++) {
		size_t m = 0;

		for (unsigned s = 0; s < log->nslots; s++) {
			const struct lc_op *ops = slot_ops(log, s);
			const size_t cnt = lc_log_count(log, s);
			size_t last_pending = SIZE_MAX;

			for (size_t i = 0; i < cnt; i++) {
				if (ops[i].kind == LC_DEATH) {
					if (last_pending != SIZE_MAX)
						death[last_pending] =
							ops[i].t_invoke;
					last_pending = SIZE_MAX;
					continue;
				}
				if (ops[i].key != k &&
				    ops[i].key != LC_ALL_KEYS)
					continue;
				death[m] = 0;
				to_hop(&h[m], &ops[i]);
				if (!ops[i].t_return)
					last_pending = m;
				m++;
			}
		}
		if (check_gathered(o, h, death, m, k, rep))
			r = -1;
	}
	free(h);
	free(death);
	return r;
}

void lc_report_add(struct lc_report *into, const struct lc_report *r)
{
	into->histories += r->histories;
	into->ops += r->ops;
	if (r->max_ops > into->max_ops)
		into->max_ops = r->max_ops;
	into->windows += r->windows;
	if (r->max_window > into->max_window)
		into->max_window = r->max_window;
	into->pending += r->pending;
	into->undecided += r->undecided;
	into->versions += r->versions;
	into->failures += r->failures;
}
