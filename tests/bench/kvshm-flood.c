/* SPDX-License-Identifier: MIT */
/*
 * kvshm-flood.c - hash flooding, measured. An attacker who knows the hash
 * but not the store's seed crafts keys that would all collide under an
 * unseeded hash: here, keys whose SipHash-1-3 with the all-zero key has its
 * top --bits bits zero, so under that hash every one of them would have its
 * home in the first 1/2^bits of the index. The benchmark writes N crafted
 * keys and N ordinary keys into fresh stores and reports, for each set,
 * SET and GET ns/op, index-full refusals, and the probe lengths (how far
 * from its home bucket each key sits, read from the index) and how the
 * homes spread over the index. With the per-store random seed the crafted
 * keys should cost the same as ordinary ones (the target is within 1.5x).
 *
 *   kvshm-flood [--keys N] [--bits B] [--repeat R] [--threads T]
 *
 * "crafted" keys collide under the unseeded hash, "ordinary" ones are a
 * counter. Defaults: 1,000,000 keys of 16 bytes with 16-byte values, 8 bits (about
 * 256 hashes tried per crafted key), the best of 3 timed passes. Crafting
 * is parallel over T threads (default 2) and is not timed as part of the
 * operations. What an unseeded table would suffer is shown by a test
 * instead (tests/test_index.c, a store with its seed forced to zero): the
 * crafted keys pile into one corner of the index, and the bounded probe
 * window turns that into refusals, never into longer probes.
 *
 * This reads the index of its own stores (probe lengths) through shm/
 * internals, so it is a white-box benchmark of this tree, not an API user.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kvshm.h>

#include "internal.h"

#define KEY_LEN 16
#define VAL_LEN 16
#define MIB (1024u * 1024u)

struct config {
	size_t keys;
	unsigned bits;
	unsigned repeat;
	unsigned threads;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Key i of a family: a letter, then 15 hex digits of the counter (by hand:
 * snprintf would cost more than the hash while crafting). */
static void make_key(uint8_t *k, char family, uint64_t counter)
{
	static const char hex[] = "0123456789abcdef";

	k[0] = (uint8_t)family;
	for (int i = KEY_LEN - 1; i >= 1; i--, counter >>= 4)
		k[i] = (uint8_t)hex[counter & 15];
}

/* ---- crafting: keys that collide under the unseeded hash --------------- */

struct craft {
	const struct config *cfg;
	uint8_t *keys;       /* cfg->keys * KEY_LEN, shared */
	_Atomic size_t *next; /* next free key index, shared */
	unsigned id;
	uint64_t tried;
};

static bool collides_unseeded(const uint8_t *k, unsigned bits)
{
	static const uint64_t zero[2] = {0, 0};

	return kv__siphash13(zero, k, KEY_LEN) >> (64 - bits) == 0;
}

static void *craft_thread(void *p)
{
	struct craft *c = p;
	const size_t n = c->cfg->keys;
	uint8_t k[KEY_LEN];

	/* thread id owns counters id, id + T, id + 2T, ... */
	for (uint64_t ctr = c->id;; ctr += c->cfg->threads) {
		if (atomic_load_explicit(c->next, memory_order_relaxed) >= n)
			break;
		make_key(k, 'F', ctr);
		c->tried++;
		if (!collides_unseeded(k, c->cfg->bits))
			continue;
		size_t at = atomic_fetch_add_explicit(c->next, 1,
						      memory_order_relaxed);
		if (at >= n)
			break;
		memcpy(c->keys + at * KEY_LEN, k, KEY_LEN);
	}
	return NULL;
}

static int craft_keys(const struct config *cfg, uint8_t *keys)
{
	struct craft c[16];
	pthread_t tid[16];
	_Atomic size_t next = 0;
	uint64_t tried = 0, t0 = now_ns();
	unsigned started = 0;

	for (unsigned i = 0; i < cfg->threads; i++) {
		c[i] = (struct craft){.cfg = cfg, .keys = keys, .next = &next,
				      .id = i};
		if (pthread_create(&tid[i], NULL, craft_thread, &c[i]) != 0)
			break;
		started++;
	}
	if (started == 0)
		return -EAGAIN;
	for (unsigned i = 0; i < started; i++) {
		pthread_join(tid[i], NULL);
		tried += c[i].tried;
	}
	printf("crafted %zu keys whose unseeded hash has its top %u bits zero: "
	       "%" PRIu64 " hashes tried in %.1f s\n",
	       cfg->keys, cfg->bits, tried, (double)(now_ns() - t0) / 1e9);
	/* every crafted key must really collide: the benchmark proves nothing
	 * if the crafting is wrong */
	for (size_t i = 0; i < cfg->keys; i++)
		if (!collides_unseeded(keys + i * KEY_LEN, cfg->bits))
			return -EPROTO;
	return 0;
}

/* ---- one store, one key set -------------------------------------------- */

struct result {
	double set_ns, get_ns;
	uint64_t refused;      /* writes that failed (index or memory full) */
	uint64_t items;        /* keys found in the index */
	unsigned max_disp;     /* longest probe: buckets from home */
	double mean_disp;
	double corner_share;   /* share of homes in the first 1/2^bits */
};

/* Probe lengths and home spread, read from the index (no writer runs). */
static void walk_index(struct kvshm *h, unsigned bits, struct result *r)
{
	const struct kv__seg *kv = kv__cur(h);
	const uint64_t corner = kv->nbuckets >> bits;
	uint64_t disp_sum = 0, in_corner = 0;

	r->items = 0;
	r->max_disp = 0;
	for (uint64_t b = 0; b < kv->nbuckets; b++) {
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			uint64_t w = atomic_load_explicit(
				&kv->buckets[b].slot[s], memory_order_relaxed);
			if (kv__slot_off(w) == 0)
				continue;
			unsigned d = kv__slot_disp(w);
			r->items++;
			disp_sum += d;
			if (d > r->max_disp)
				r->max_disp = d;
			if (kv__slot_home(kv, b, w) < corner)
				in_corner++;
		}
	}
	r->mean_disp = r->items ? (double)disp_sum / (double)r->items : 0;
	r->corner_share = r->items ? (double)in_corner / (double)r->items : 0;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int run_set(const struct config *cfg, const char *name,
		   const uint8_t *keys, const size_t *order, struct result *r)
{
	struct kvshm_options o = {.size = sizeof(o)};
	struct kvshm *kv;
	uint8_t val[VAL_LEN] = "0123456789abcdef";
	uint8_t buf[VAL_LEN];
	int rc;

	/* 80 bytes an item, the index at its default load: ample room, so
	 * any refusal is the index's doing */
	o.flags = KVSHM_CREATE | KVSHM_NOEVICT;
	o.max_items = cfg->keys + cfg->keys / 4;
	o.arena_bytes = ((uint64_t)cfg->keys * 160 / MIB + 16) * MIB;
	kvshm_unlink(name);
	rc = kvshm_open(name, &o, &kv);
	if (rc)
		return rc;
	*r = (struct result){.set_ns = 1e30, .get_ns = 1e30};
	for (unsigned pass = 0; pass < cfg->repeat; pass++) {
		uint64_t refused = 0, t0;

		if (pass > 0 && (rc = kvshm_clear(kv)) != 0)
			goto out;
		t0 = now_ns();
		for (size_t i = 0; i < cfg->keys; i++)
			if (kvshm_set(kv, keys + i * KEY_LEN, KEY_LEN, val,
				      VAL_LEN, 0) != 0)
				refused++;
		double set_ns = (double)(now_ns() - t0) / (double)cfg->keys;
		if (set_ns < r->set_ns)
			r->set_ns = set_ns;
		r->refused = refused;

		t0 = now_ns();
		for (size_t i = 0; i < cfg->keys; i++) {
			size_t vlen;
			rc = kvshm_get(kv, keys + order[i] * KEY_LEN, KEY_LEN,
				       buf, sizeof(buf), &vlen);
			if (rc != 0 && !(rc == -ENOENT && refused)) {
				fprintf(stderr, "%s: get: %s\n", name,
					kvshm_strerror(rc));
				goto out;
			}
		}
		double get_ns = (double)(now_ns() - t0) / (double)cfg->keys;
		if (get_ns < r->get_ns)
			r->get_ns = get_ns;
	}
	walk_index(kv, cfg->bits, r);
	rc = kvshm_check(kv, NULL, 0);
out:
	kvshm_close(kv);
	kvshm_unlink(name);
	return rc < 0 ? rc : 0;
}

static void report(const char *what, const struct result *r)
{
	printf("| %-8s | %9.1f | %9.1f | %7" PRIu64 " | %8" PRIu64
	       " | %10.2f | %9u | %6.2f%% |\n",
	       what, r->set_ns, r->get_ns, r->refused, r->items, r->mean_disp,
	       r->max_disp, 100.0 * r->corner_share);
}

static int parse_args(int argc, char **argv, struct config *cfg)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		char *end;
		unsigned long long v;

		if (i + 1 >= argc)
			goto usage;
		errno = 0;
		v = strtoull(argv[++i], &end, 10);
		if (errno || *end || v == 0)
			goto usage;
		if (strcmp(a, "--keys") == 0 && v <= 100000000)
			cfg->keys = (size_t)v;
		else if (strcmp(a, "--bits") == 0 && v <= 24)
			cfg->bits = (unsigned)v;
		else if (strcmp(a, "--repeat") == 0 && v <= 100)
			cfg->repeat = (unsigned)v;
		else if (strcmp(a, "--threads") == 0 && v <= 16)
			cfg->threads = (unsigned)v;
		else
			goto usage;
	}
	return 0;
usage:
	fprintf(stderr, "usage: kvshm-flood [--keys N (<= 1e8)] [--bits 1..24] "
			"[--repeat 1..100] [--threads 1..16]\n");
	return -EINVAL;
}

int main(int argc, char **argv)
{
	struct config cfg = {.keys = 1000000, .bits = 8, .repeat = 3,
			     .threads = 2};
	struct result crafted, plain;
	uint8_t *ckeys = NULL, *rkeys = NULL;
	size_t *order = NULL;
	char name[64];
	uint64_t rng = UINT64_C(0x9e3779b97f4a7c15);
	int rc = 2;

	if (parse_args(argc, argv, &cfg) != 0)
		return 2;
	ckeys = malloc(cfg.keys * KEY_LEN);
	rkeys = malloc(cfg.keys * KEY_LEN);
	order = malloc(cfg.keys * sizeof(*order));
	if (!ckeys || !rkeys || !order) {
		fprintf(stderr, "kvshm-flood: out of memory\n");
		goto out;
	}
	if (craft_keys(&cfg, ckeys) != 0) {
		fprintf(stderr, "kvshm-flood: crafting failed\n");
		goto out;
	}
	for (size_t i = 0; i < cfg.keys; i++) {
		make_key(rkeys + i * KEY_LEN, 'R', i);
		order[i] = i;
	}
	/* one random order for both sets, so the reads differ only in keys */
	for (size_t i = cfg.keys - 1; i > 0; i--) {
		size_t j = (size_t)(xorshift(&rng) % (i + 1)), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}

	snprintf(name, sizeof(name), "kvshm-flood-%d", (int)getpid());
	if ((rc = run_set(&cfg, name, ckeys, order, &crafted)) != 0 ||
	    (rc = run_set(&cfg, name, rkeys, order, &plain)) != 0) {
		fprintf(stderr, "kvshm-flood: %s\n", kvshm_strerror(rc));
		rc = 1;
		goto out;
	}
	printf("\n%zu keys of %d bytes, %d-byte values, NOEVICT store, best of "
	       "%u passes; probe = buckets between a key's home and its slot "
	       "(at most %u by construction); corner = homes in the first "
	       "1/%u of the index\n\n",
	       cfg.keys, KEY_LEN, VAL_LEN, cfg.repeat, KV_MAX_PROBE - 1,
	       1u << cfg.bits);
	printf("| keys     | SET ns/op | GET ns/op | refused |  indexed | "
	       "mean probe | max probe | corner  |\n");
	printf("|----------|----------:|----------:|--------:|---------:|"
	       "-----------:|----------:|--------:|\n");
	report("crafted", &crafted);
	report("ordinary", &plain);
	printf("\ncrafted/ordinary: SET %.2fx, GET %.2fx (target: within 1.5x); "
	       "expected corner share for random homes %.2f%%\n",
	       crafted.set_ns / plain.set_ns, crafted.get_ns / plain.get_ns,
	       100.0 / (double)(1u << cfg.bits));
	rc = 0;
out:
	free(ckeys);
	free(rkeys);
	free(order);
	return rc;
}
