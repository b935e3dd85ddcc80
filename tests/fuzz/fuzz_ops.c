/* SPDX-License-Identifier: MIT */
/*
 * fuzz_ops.c - libFuzzer harness: operation sequences against a model.
 *
 * Each input is decoded into a sequence of kvshm operations (set, put in
 * every mode with KEEPTTL, user flags and absolute expiry, get/get_ex with
 * small buffers and GET_STALE, exists, ttl, expire, delete, delete_cas,
 * incr, counter, clear, scan by prefix with a cursor and a limit, sweep,
 * check, stats). Every operation runs on one store and on a small model of
 * what the store must hold (key -> value, kind, flags, version, expiry);
 * any difference in a return code, a value, a flag, a version or a TTL is a
 * bug and stops the run with __builtin_trap().
 *
 * Keys are 1..3 bytes over {'a', 'b', '\0'} (39 keys that collide often and
 * share prefixes) plus one key of the maximal length; invalid keys and
 * values (empty, too long) are generated too. The model stays exact
 * because:
 *   - the store is KVSHM_NOEVICT, so nothing disappears behind its back;
 *     -ENOSPC is accepted only when the live data the model holds is at
 *     least half the store (a store that says "full" while mostly empty is
 *     a bug: README, "never says no memory while memory is free");
 *   - TTLs are either none, the store default (~115 days), or at least
 *     11 days, or an absolute expiry in 1970 (already expired) or far in
 *     the future: nothing expires because time passes during a run, yet
 *     expired-but-unreclaimed items are exercised.
 * The store is created once per process and emptied with kvshm_clear()
 * between inputs (each input starts from an empty store; the garbage and
 * clear generations left by earlier inputs are part of what is tested).
 * KVSHM_FUZZ_FRESH=1 in the environment creates a fresh store per input
 * instead, which makes a crash reproducible from its input alone.
 *
 *   make fuzz && build/fuzz/fuzz_ops -max_total_time=60 CORPUS_DIR
 *   KVSHM_FUZZ_FRESH=1 build/fuzz/fuzz_ops crash-<sha1>
 *
 * Environment: KVSHM_FUZZ_DIR, a directory for the store (default
 * /dev/shm; the store's name is unlinked right after it is opened).
 */
#define _GNU_SOURCE 1

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kvshm.h>

#define ARENA_BYTES (8u << 20)
#define MAX_KEY 32u
#define MAX_ITEMS 2048u
#define DEFAULT_TTL_MS UINT64_C(10000000000) /* ~115 days */
#define NKEYS 40u                            /* 39 short keys + 1 maximal */
#define MAX_OPS 512u
#define MAX_VERSIONS 4096u /* power of two */

static struct kvshm *kv;
static struct kvshm_stats geo;
static uint8_t *valbuf, *pattern_buf;

/* The model: one entry per key. Expiry is known only to the millisecond
 * the store read the clock, so it is kept as a [lo, hi] range; 0 = never. */
struct entry {
	bool present; /* written and not deleted or cleared */
	bool counter;
	uint32_t vlen;
	uint8_t vseed; /* value bytes are pattern(vseed, vlen) */
	uint32_t flags;
	int64_t cval;
	uint64_t version;
	int64_t exp_lo, exp_hi;
};
static struct entry model[NKEYS];
static uint64_t versions[MAX_VERSIONS]; /* every version seen this input */
static unsigned nversions;

#define BUG(...)                                                               \
	do {                                                                   \
		fprintf(stderr, "fuzz_ops: line %d: ", __LINE__);              \
		fprintf(stderr, __VA_ARGS__);                                  \
		fputc('\n', stderr);                                           \
		__builtin_trap();                                              \
	} while (0)

#define EXPECT_RC(got, want, what)                                             \
	do {                                                                   \
		int g_ = (got), w_ = (want);                                   \
		if (g_ != w_)                                                  \
			BUG("%s: got %d (%s), want %d (%s)", what, g_,         \
			    kvshm_strerror(g_), w_, kvshm_strerror(w_));       \
	} while (0)

/* ---- input decoding ----------------------------------------------------- */

struct input {
	const uint8_t *p;
	size_t left;
};

static uint8_t in_u8(struct input *in)
{
	if (!in->left)
		return 0;
	in->left--;
	return *in->p++;
}

/* ---- keys and values ---------------------------------------------------- */

static const uint8_t alphabet[3] = { 'a', 'b', '\0' };

/* Key i (0..38: 1..3 bytes over the alphabet; 39: MAX_KEY bytes). */
static size_t key_of(unsigned i, uint8_t *out)
{
	if (i >= 39) {
		memset(out, 'k', MAX_KEY);
		return MAX_KEY;
	}
	if (i < 3) {
		out[0] = alphabet[i];
		return 1;
	}
	if (i < 12) {
		i -= 3;
		out[0] = alphabet[i / 3];
		out[1] = alphabet[i % 3];
		return 2;
	}
	i -= 12;
	out[0] = alphabet[i / 9];
	out[1] = alphabet[i / 3 % 3];
	out[2] = alphabet[i % 3];
	return 3;
}

static const uint8_t *pattern(uint8_t seed, size_t len)
{
	/* pattern_buf holds the 256 rotations' source; a value is a window
	 * into it, so no value needs generating per call */
	(void)len;
	return pattern_buf + seed * 7u;
}

/* A value length: mostly small, sometimes tens of KiB, rarely huge or one
 * byte beyond the limit. */
static size_t vlen_of(uint8_t b, uint8_t b2)
{
	if (b < 200)
		return b;
	if (b < 240)
		return (size_t)(b - 200) * 1024 + b2;
	if (b < 254)
		return (size_t)(b - 239) * 16384 + b2;
	if (b == 254)
		return geo.max_value_bytes - b2;
	return geo.max_value_bytes + 1 + b2;
}

/* Bytes an item of this key and value takes in the store (header, key,
 * value, 16-byte alignment). */
static uint64_t item_bytes(size_t klen, size_t vlen)
{
	return (40 + klen + vlen + 15) & ~(uint64_t)15;
}

/* ---- time and expiry ---------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool expired(const struct entry *e, int64_t now)
{
	/* exp_hi <= now: surely expired; exp_lo > now: surely not. Expiry
	 * times are in 1970 or days away, so the range never straddles now. */
	if (e->exp_lo == 0)
		return false;
	if (e->exp_hi <= now)
		return true;
	if (e->exp_lo > now)
		return false;
	BUG("expiry [%" PRId64 ", %" PRId64 "] straddles now %" PRId64,
	    e->exp_lo, e->exp_hi, now);
}

static bool live(const struct entry *e)
{
	return e->present && !expired(e, now_ms());
}

/* A TTL argument: 0 (default), never, a long one, or one so long that it
 * overflows (= never). */
static uint64_t ttl_of(uint8_t b)
{
	switch (b & 3) {
	case 0:
		return 0;
	case 1:
		return KVSHM_TTL_NEVER;
	case 2:
		return UINT64_C(1000000000) + (uint64_t)b * 1000; /* 11+ days */
	default:
		return UINT64_MAX - 1 - b;
	}
}

/* Set e's expiry for a ttl argument, given the clock before and after the
 * call. */
static void expiry_from_ttl(struct entry *e, uint64_t ttl, int64_t t0,
			    int64_t t1)
{
	if (ttl == 0)
		ttl = DEFAULT_TTL_MS;
	if (ttl == KVSHM_TTL_NEVER || ttl > (uint64_t)(INT64_MAX - t1)) {
		e->exp_lo = e->exp_hi = 0;
		return;
	}
	e->exp_lo = t0 + (int64_t)ttl;
	e->exp_hi = t1 + (int64_t)ttl;
}

/* ---- versions ----------------------------------------------------------- */

static bool version_seen(uint64_t v)
{
	for (unsigned i = 0; i < nversions; i++)
		if (versions[i] == v)
			return true;
	return false;
}

/* A write returned version v: it must be new (never 0, never handed out
 * before in this input). */
static void version_new(uint64_t v, const char *what)
{
	if (v == 0)
		BUG("%s: version 0", what);
	if (version_seen(v))
		BUG("%s: version %#" PRIx64 " handed out twice", what, v);
	if (nversions < MAX_VERSIONS)
		versions[nversions++] = v;
}

/* ---- comparing an item with the model ------------------------------------- */

static void expect_item(const struct entry *e, const struct kvshm_item *it,
			bool stale, int64_t t0, int64_t t1, const char *what)
{
	size_t want_len = e->counter ? 8 : e->vlen;

	if (it->value_len != want_len)
		BUG("%s: value_len %zu, want %zu", what, it->value_len,
		    want_len);
	if (it->counter != e->counter)
		BUG("%s: counter %d, want %d", what, it->counter, e->counter);
	if (it->flags != (e->counter ? 0 : e->flags))
		BUG("%s: flags %#x, want %#x", what, it->flags, e->flags);
	if (it->stale != stale)
		BUG("%s: stale %d, want %d", what, it->stale, stale);
	if (it->cas != e->version)
		BUG("%s: cas %#" PRIx64 ", want %#" PRIx64, what, it->cas,
		    e->version);
	if (e->exp_lo == 0) {
		if (it->ttl_ms != -1)
			BUG("%s: ttl %" PRId64 ", want -1", what, it->ttl_ms);
	} else if (!stale && (it->ttl_ms < e->exp_lo - t1 ||
			      it->ttl_ms > e->exp_hi - t0)) {
		BUG("%s: ttl %" PRId64 " outside [%" PRId64 ", %" PRId64 "]",
		    what, it->ttl_ms, e->exp_lo - t1, e->exp_hi - t0);
	} else if (stale && it->ttl_ms > 0) {
		BUG("%s: stale item with ttl %" PRId64, what, it->ttl_ms);
	}
}

static void expect_value(const struct entry *e, const uint8_t *buf,
			 const char *what)
{
	if (e->counter) {
		int64_t v;
		memcpy(&v, buf, 8);
		if (v != e->cval)
			BUG("%s: counter %" PRId64 ", want %" PRId64, what, v,
			    e->cval);
	} else if (memcmp(buf, pattern(e->vseed, e->vlen), e->vlen)) {
		BUG("%s: value bytes differ (len %u)", what, e->vlen);
	}
}

/* Bytes of live data the model holds (what a NOEVICT store must keep). */
static uint64_t live_bytes(void)
{
	uint8_t key[MAX_KEY];
	uint64_t sum = 0;

	for (unsigned i = 0; i < NKEYS; i++)
		if (live(&model[i]))
			sum += item_bytes(key_of(i, key),
					  model[i].counter ? 0 : model[i].vlen);
	return sum;
}

/* -ENOSPC is fine only if the store is really half full of live data. */
static void expect_nospace_ok(uint64_t need, const char *what)
{
	uint64_t have = live_bytes() + need;

	if (have < geo.data_bytes / 2)
		BUG("%s: -ENOSPC with %" PRIu64 " live bytes of %" PRIu64, what,
		    have, geo.data_bytes);
}

/* Redis's rule for a value INCR takes: an optional '-', then "0" or a
 * nonzero digit and more digits, within int64. Written apart from the
 * library's parser on purpose. */
static bool decimal_text(const uint8_t *p, size_t n, int64_t *out)
{
	char buf[32];
	char *end;
	long long v;

	if (n == 0 || n > 20)
		return false;
	memcpy(buf, p, n);
	buf[n] = 0;
	for (size_t i = 0; i < n; i++)
		if (!(buf[i] >= '0' && buf[i] <= '9') && !(i == 0 && buf[i] == '-'))
			return false;
	if (buf[0] == '-' ? (n == 1 || buf[1] == '0') : (buf[0] == '0' && n > 1))
		return false;
	errno = 0;
	v = strtoll(buf, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

/* ---- the operations ------------------------------------------------------- */

static void op_get(struct input *in, unsigned k, const uint8_t *key,
		   size_t klen)
{
	struct entry *e = &model[k];
	uint8_t how = in_u8(in);
	unsigned flags = how & 1 ? KVSHM_GET_STALE : 0;
	size_t want_len = e->counter ? 8 : e->vlen, buflen;
	struct kvshm_item it;
	int64_t t0, t1;
	bool is_live, stale_ok;
	int rc;

	/* buffer: big enough, exact, or one byte short */
	buflen = geo.max_value_bytes;
	if ((how >> 1 & 3) == 1)
		buflen = want_len;
	else if ((how >> 1 & 3) == 2 && want_len > 0)
		buflen = want_len - 1;
	t0 = now_ms();
	if (how & 8) {
		size_t vlen = 12345;
		rc = kvshm_get(kv, key, klen, valbuf, buflen, &vlen);
		it.value_len = vlen;
		flags = 0;
	} else {
		rc = kvshm_get_ex(kv, key, klen, valbuf, buflen, &it, flags);
	}
	t1 = now_ms();
	is_live = e->present && !expired(e, t1);
	stale_ok = e->present && !is_live && (flags & KVSHM_GET_STALE);
	if (!is_live && !stale_ok) {
		EXPECT_RC(rc, -ENOENT, "get of a missing key");
		return;
	}
	if (stale_ok && rc == -ENOENT)
		return; /* reclaimed already: allowed */
	if (buflen < want_len) {
		EXPECT_RC(rc, -ENOBUFS, "get into a short buffer");
		if (it.value_len != want_len)
			BUG("get -ENOBUFS: needs %zu, want %zu", it.value_len,
			    want_len);
		return;
	}
	EXPECT_RC(rc, 0, "get of a live key");
	if (how & 8) {
		if (it.value_len != want_len)
			BUG("get: vlen %zu, want %zu", it.value_len, want_len);
	} else {
		expect_item(e, &it, !is_live, t0, t1, "get_ex");
	}
	expect_value(e, valbuf, "get");
}

static void op_put(struct input *in, unsigned k, const uint8_t *key,
		   size_t klen, uint8_t opc)
{
	struct entry *e = &model[k];
	struct kvshm_write w = { 0 };
	uint8_t b1 = in_u8(in), b2 = in_u8(in), b3 = in_u8(in);
	uint8_t seed = in_u8(in);
	size_t vlen = vlen_of(b1, b2);
	uint64_t cas = 0;
	int64_t t0, t1;
	bool was_live;
	int rc, want = 0;

	w.mode = opc & 3;
	w.opts = opc & 4 ? KVSHM_KEEPTTL : 0;
	w.flags = b3 & 0x80 ? (uint32_t)b3 * 0x01010101u : 0;
	w.ttl_ms = ttl_of(b3);
	switch (b3 >> 2 & 7) {
	case 0:
		w.expires_at_ms = 1 + b2; /* 1970: already expired */
		break;
	case 1:
		w.expires_at_ms = INT64_C(4102444800000) + b2; /* 2100 */
		break;
	default:
		break;
	}
	/* the cas argument: current version, an older one, or a wrong one */
	switch (seed & 3) {
	case 0:
	case 1:
		w.cas = e->version;
		break;
	case 2:
		w.cas = nversions ? versions[b2 % nversions] : 0;
		break;
	default:
		w.cas = e->version + 1;
		break;
	}
	if (vlen > geo.max_value_bytes)
		vlen = geo.max_value_bytes + 1;

	t0 = now_ms();
	was_live = e->present && !expired(e, t0);
	rc = opc & 8 ? kvshm_set(kv, key, klen, pattern(seed, vlen), vlen,
				 w.ttl_ms) :
		       kvshm_put(kv, key, klen, pattern(seed, vlen), vlen, &w,
				 &cas);
	t1 = now_ms();
	if (opc & 8) {
		w = (struct kvshm_write){ .ttl_ms = w.ttl_ms };
		cas = 0;
	}

	if (vlen > geo.max_value_bytes)
		want = -E2BIG;
	else if (w.mode == KVSHM_ADD && was_live)
		want = -EEXIST;
	else if ((w.mode == KVSHM_REPLACE || w.mode == KVSHM_CAS) && !was_live)
		want = -ENOENT;
	else if (w.mode == KVSHM_CAS && w.cas != e->version)
		want = -ESTALE;
	if (rc == -ENOSPC && want == 0) {
		expect_nospace_ok(item_bytes(klen, vlen), "put");
		return; /* the old value must still be there: later ops see */
	}
	EXPECT_RC(rc, want, "put");
	if (rc)
		return;
	if (!(opc & 8))
		version_new(cas, "put");
	if (!((w.opts & KVSHM_KEEPTTL) && was_live)) {
		if (w.expires_at_ms > 0)
			e->exp_lo = e->exp_hi = w.expires_at_ms;
		else
			expiry_from_ttl(e, w.ttl_ms, t0, t1);
	}
	e->present = true;
	e->counter = false;
	e->vlen = (uint32_t)vlen;
	e->vseed = seed;
	e->flags = w.flags;
	e->cval = 0;
	if (opc & 8) {
		/* kvshm_set() tells no version: learn it from get_ex */
		struct kvshm_item it;
		rc = kvshm_get_ex(kv, key, klen, NULL, 0, &it, KVSHM_GET_STALE);
		if (rc != 0 && rc != -ENOBUFS && rc != -ENOENT)
			BUG("get_ex after set: %s", kvshm_strerror(rc));
		if (rc == -ENOENT)
			BUG("get_ex (stale) right after set: -ENOENT");
		version_new(it.cas, "set");
		e->version = it.cas;
	} else {
		e->version = cas;
	}
}

static void op_delete(struct input *in, unsigned k, const uint8_t *key,
		      size_t klen, bool with_cas)
{
	struct entry *e = &model[k];
	uint8_t b = in_u8(in);
	uint64_t cas = b & 1 ? e->version : e->version ^ (uint64_t)b << 20;
	bool was_live = live(e);
	int rc, want = 0;

	rc = with_cas ? kvshm_delete_cas(kv, key, klen, cas) :
			kvshm_delete(kv, key, klen);
	if (!was_live)
		want = -ENOENT;
	else if (with_cas && cas != e->version)
		want = -ESTALE;
	EXPECT_RC(rc, want, with_cas ? "delete_cas" : "delete");
	if (rc == 0 || !was_live)
		e->present = false; /* an expired item may be reclaimed */
}

static void op_expire(struct input *in, unsigned k, const uint8_t *key,
		      size_t klen)
{
	struct entry *e = &model[k];
	uint64_t ttl = ttl_of(in_u8(in));
	int64_t t0 = now_ms(), t1;
	bool was_live = e->present && !expired(e, t0);
	int rc = kvshm_expire(kv, key, klen, ttl);

	t1 = now_ms();
	EXPECT_RC(rc, was_live ? 0 : -ENOENT, "expire");
	if (rc == 0)
		expiry_from_ttl(e, ttl, t0, t1);
	else
		e->present = false;
}

static void op_ttl(unsigned k, const uint8_t *key, size_t klen)
{
	struct entry *e = &model[k];
	int64_t t0 = now_ms(), t1, ttl = 12345;
	bool was_live = e->present && !expired(e, t0);
	int rc = kvshm_ttl(kv, key, klen, &ttl);

	t1 = now_ms();
	EXPECT_RC(rc, was_live ? 0 : -ENOENT, "ttl");
	if (rc)
		return;
	if (e->exp_lo == 0 ? ttl != -1 :
			     ttl < e->exp_lo - t1 || ttl > e->exp_hi - t0)
		BUG("ttl %" PRId64 ", model [%" PRId64 ", %" PRId64
		    "] at %" PRId64,
		    ttl, e->exp_lo, e->exp_hi, t0);
	if (kvshm_exists(kv, key, klen) != 1)
		BUG("exists of a live key is not 1");
}

/* Learn the version a successful incr gave key: it must differ from the
 * old one and be new. */
static void learn_counter_version(struct entry *e, const uint8_t *key,
				  size_t klen)
{
	struct kvshm_item it;
	int64_t v;
	int rc = kvshm_get_ex(kv, key, klen, &v, sizeof(v), &it, 0);

	EXPECT_RC(rc, 0, "get_ex after incr");
	if (!it.counter || v != e->cval)
		BUG("get_ex after incr: counter %d value %" PRId64
		    ", want %" PRId64,
		    it.counter, v, e->cval);
	if (it.cas == e->version)
		BUG("incr left the version at %#" PRIx64, it.cas);
	version_new(it.cas, "incr");
	e->version = it.cas;
}

static void op_incr(struct input *in, unsigned k, const uint8_t *key,
		    size_t klen)
{
	static const int64_t deltas[8] = {
		1, -1, 0, 1000, INT64_MAX, INT64_MIN, INT64_MAX / 2, -7
	};
	struct entry *e = &model[k];
	uint8_t b = in_u8(in);
	int64_t delta = b & 0x80 ? deltas[b & 7] : (int64_t)(int8_t)(b << 1),
		result = 0, sum;
	uint64_t ttl = ttl_of(in_u8(in));
	int64_t t0 = now_ms(), t1;
	bool was_live = e->present && !expired(e, t0);
	int rc = kvshm_incr(kv, key, klen, delta, ttl,
			    b & 0x40 ? NULL : &result);

	t1 = now_ms();
	bool was_text = was_live && !e->counter;
	int64_t base = e->cval;
	if (was_text && !decimal_text(pattern(e->vseed, e->vlen), e->vlen,
				      &base)) {
		EXPECT_RC(rc, -ENOMSG, "incr of a non-counter");
		return;
	}
	if (was_live && __builtin_add_overflow(base, delta, &sum)) {
		EXPECT_RC(rc, -ERANGE, "incr that overflows");
		return;
	}
	if (rc == -ENOSPC && (!was_live || was_text)) {
		expect_nospace_ok(item_bytes(klen, 0), "incr");
		return;
	}
	EXPECT_RC(rc, 0, "incr");
	if (was_text) { /* decimal text became a counter, TTL kept */
		e->counter = true;
		e->flags = 0;
		e->vlen = 0;
	}
	if (!was_live) {
		sum = delta;
		expiry_from_ttl(e, ttl, t0, t1);
		e->present = true;
		e->counter = true;
		e->flags = 0;
		e->vlen = 0;
	}
	if (!(b & 0x40) && result != sum)
		BUG("incr result %" PRId64 ", want %" PRId64, result, sum);
	e->cval = sum;
	learn_counter_version(e, key, klen);
}

static void op_counter(unsigned k, const uint8_t *key, size_t klen)
{
	struct entry *e = &model[k];
	int64_t v = 12345;
	bool was_live = live(e);
	int rc = kvshm_counter(kv, key, klen, &v);

	if (!was_live) {
		EXPECT_RC(rc, -ENOENT, "counter of a missing key");
		if (v != 0)
			BUG("counter of a missing key: value %" PRId64, v);
	} else if (!e->counter) {
		EXPECT_RC(rc, -ENOMSG, "counter of a non-counter");
	} else {
		EXPECT_RC(rc, 0, "counter");
		if (v != e->cval)
			BUG("counter %" PRId64 ", want %" PRId64, v, e->cval);
	}
}

/* ---- scan ----------------------------------------------------------------- */

struct scan_ctx {
	const uint8_t *prefix;
	size_t plen;
	unsigned seen[NKEYS];
	int stop_after; /* return -EXDEV at this visit (0 = never) */
	int visits;
	int64_t t0; /* the clock before the scan call */
};

static int scan_fn(const void *key, size_t klen, const struct kvshm_item *it,
		   void *ctx_)
{
	struct scan_ctx *ctx = ctx_;
	uint8_t want[MAX_KEY];
	int64_t now = now_ms();
	unsigned k;

	if (klen < ctx->plen || memcmp(key, ctx->prefix, ctx->plen))
		BUG("scan visited a key without the prefix");
	for (k = 0; k < NKEYS; k++)
		if (key_of(k, want) == klen && !memcmp(want, key, klen))
			break;
	if (k == NKEYS)
		BUG("scan visited a key never written (klen %zu)", klen);
	if (!live(&model[k]))
		BUG("scan visited key %u that is not live", k);
	expect_item(&model[k], it, false, ctx->t0, now, "scan");
	ctx->seen[k]++;
	if (++ctx->visits == ctx->stop_after)
		return -EXDEV;
	return 0;
}

static void op_scan(struct input *in)
{
	uint8_t b = in_u8(in), pk = in_u8(in);
	uint8_t prefix[MAX_KEY];
	struct scan_ctx ctx = { .prefix = prefix };
	uint64_t cursor = 0;
	size_t limit = b & 7;
	unsigned rounds = 0;

	ctx.plen = b & 0x40 ? 0 : key_of(pk % NKEYS, prefix);
	if (b & 0x80 && ctx.plen)
		ctx.plen--; /* a shorter prefix, maybe empty */
	ctx.stop_after = b & 0x20 ? 1 + (b >> 3 & 3) : 0;
	do {
		int rc;
		ctx.t0 = now_ms();
		rc = kvshm_scan(kv, prefix, ctx.plen, &cursor, limit, scan_fn,
				&ctx);
		if (rc == -EXDEV && ctx.stop_after)
			return; /* stopped by scan_fn: its code comes back */
		if (rc < 0)
			BUG("scan: %s", kvshm_strerror(rc));
		if (limit && (size_t)rc > limit)
			BUG("scan visited %d keys, limit %zu", rc, limit);
		if (++rounds > 100000)
			BUG("scan does not end");
	} while (cursor != 0);
	for (unsigned k = 0; k < NKEYS; k++) {
		uint8_t key[MAX_KEY];
		size_t klen = key_of(k, key);
		bool want = live(&model[k]) && klen >= ctx.plen &&
			    !memcmp(key, prefix, ctx.plen);
		if (want && !ctx.seen[k])
			BUG("scan missed live key %u", k);
		if (ctx.seen[k] > 1)
			BUG("scan visited key %u %u times", k, ctx.seen[k]);
	}
}

/* ---- whole-store operations ---------------------------------------------- */

static void op_sweep(void)
{
	struct kvshm_stats st;
	size_t reclaimed = 0;
	uint64_t n = 0;
	int64_t now = now_ms();

	EXPECT_RC(kvshm_sweep(kv, 0, &reclaimed), 0, "sweep");
	for (unsigned k = 0; k < NKEYS; k++) {
		if (model[k].present && expired(&model[k], now))
			model[k].present = false;
		n += model[k].present;
	}
	EXPECT_RC(kvshm_stats(kv, &st), 0, "stats");
	if (st.items != n)
		BUG("after sweep: %" PRIu64 " items, model has %" PRIu64,
		    st.items, n);
}

static void op_check(void)
{
	char report[4096];
	int rc = kvshm_check(kv, report, sizeof(report));

	if (rc)
		BUG("check: %s: %s", kvshm_strerror(rc), report);
}

/* Invalid arguments: each has a documented error. */
static void op_invalid(struct input *in)
{
	uint8_t key[MAX_KEY + 2];
	uint8_t b = in_u8(in);
	int64_t v;

	memset(key, 'a', sizeof(key));
	switch (b & 7) {
	case 0:
		EXPECT_RC(kvshm_set(kv, key, 0, "x", 1, 0), -EINVAL,
			  "empty key");
		break;
	case 1:
		EXPECT_RC(kvshm_set(kv, key, MAX_KEY + 1, "x", 1, 0), -E2BIG,
			  "long key");
		break;
	case 2:
		EXPECT_RC(kvshm_get(kv, key, MAX_KEY + 1, valbuf, 8, NULL),
			  -E2BIG, "get of a long key");
		break;
	case 3:
		EXPECT_RC(kvshm_incr(kv, NULL, 1, 1, 0, &v), -EINVAL,
			  "incr of a NULL key");
		break;
	case 4: {
		struct kvshm_write w = { .mode = 4 + (b >> 3) };
		EXPECT_RC(kvshm_put(kv, "a", 1, "x", 1, &w, NULL), -EINVAL,
			  "bad mode");
		break;
	}
	case 5:
		EXPECT_RC(kvshm_put(kv, "a", 1, NULL, 3, NULL, NULL), -EINVAL,
			  "NULL value with a length");
		break;
	case 6:
		EXPECT_RC(kvshm_get_ex(kv, "a", 1, valbuf, 8, NULL,
				       2u << (b >> 5)),
			  -EINVAL, "unknown get flags");
		break;
	default:
		EXPECT_RC(kvshm_delete(kv, key, 0), -EINVAL,
			  "delete empty key");
		break;
	}
}

static void run_ops(struct input *in)
{
	for (unsigned n = 0; n < MAX_OPS && in->left; n++) {
		uint8_t op = in_u8(in), kb = in_u8(in);
		uint8_t key[MAX_KEY];
		unsigned k = kb % NKEYS;
		size_t klen = key_of(k, key);

		switch (op % 16) {
		case 0:
		case 1:
			op_get(in, k, key, klen);
			break;
		case 2:
		case 3:
		case 4:
			op_put(in, k, key, klen, op >> 4);
			break;
		case 5: {
			int rc = kvshm_exists(kv, key, klen);
			EXPECT_RC(rc, live(&model[k]) ? 1 : 0, "exists");
			break;
		}
		case 6:
			op_delete(in, k, key, klen, op & 0x10);
			break;
		case 7:
			op_expire(in, k, key, klen);
			break;
		case 8:
			op_ttl(k, key, klen);
			break;
		case 9:
		case 10:
			op_incr(in, k, key, klen);
			break;
		case 11:
			op_counter(k, key, klen);
			break;
		case 12:
			op_scan(in);
			break;
		case 13:
			if (op & 0x10) {
				EXPECT_RC(kvshm_clear(kv), 0, "clear");
				memset(model, 0, sizeof(model));
			} else {
				op_sweep();
			}
			break;
		case 14:
			op_check();
			break;
		default:
			op_invalid(in);
			break;
		}
	}
}

/* ---- setup ---------------------------------------------------------------- */

static void open_store(void)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	const char *dir = getenv("KVSHM_FUZZ_DIR");
	char name[4096];
	int rc;

	if (dir && *dir)
		snprintf(name, sizeof(name), "%s/kvfz-ops-%d", dir,
			 (int)getpid());
	else
		snprintf(name, sizeof(name), "kvfz-ops-%d", (int)getpid());
	o.flags = KVSHM_CREATE | KVSHM_EXCL | KVSHM_NOEVICT;
	o.arena_bytes = ARENA_BYTES;
	o.max_key_bytes = MAX_KEY;
	o.max_items = MAX_ITEMS; /* a small index: kvshm_check() is quick */
	o.default_ttl_ms = DEFAULT_TTL_MS;
	kvshm_unlink(name); /* a leftover of an earlier crashed run */
	rc = kvshm_open(name, &o, &kv);
	if (rc) {
		fprintf(stderr, "fuzz_ops: cannot create %s: %s\n", name,
			kvshm_strerror(rc));
		abort();
	}
	kvshm_unlink(name); /* the mapping stays; nothing is left behind */
	if (kvshm_stats(kv, &geo))
		abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	open_store();
	valbuf = malloc(geo.max_value_bytes + 16);
	pattern_buf = malloc(geo.max_value_bytes + 256 * 7 + 16);
	if (!valbuf || !pattern_buf)
		abort();
	for (size_t i = 0; i < geo.max_value_bytes + 256 * 7 + 16; i++)
		pattern_buf[i] = (uint8_t)(i * 2654435761u >> 13);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool fresh_checked, fresh;
	struct input in = { data, size };

	if (!fresh_checked) {
		const char *f = getenv("KVSHM_FUZZ_FRESH");
		fresh = f && *f && strcmp(f, "0");
		fresh_checked = true;
	}
	if (fresh) {
		kvshm_close(kv);
		open_store();
	} else if (kvshm_clear(kv)) {
		BUG("clear between inputs failed");
	}
	memset(model, 0, sizeof(model));
	nversions = 0;
	run_ops(&in);
	op_check();
	return 0;
}
