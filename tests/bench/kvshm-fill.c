/* SPDX-License-Identifier: MIT */
/*
 * kvshm-fill.c - how much of a store holds data: write unique keys into a
 * fresh store until it first evicts (or, created with KVSHM_NOEVICT, until
 * a write fails with -ENOSPC), then count the live keys and their bytes
 * with kvshm_scan() and report them against the arena and the data area.
 * Prints numbers; fails only on a correctness problem (a write error other
 * than the expected one, a scan that disagrees with kvshm_exists() over
 * every key written, or a failed kvshm_check()). Uses only the public API.
 *
 *   kvshm-fill [--arena MIB] [--max-items N] [--seed N]
 *
 * Workloads: "uniform", every item 100 bytes (16-byte key, 84-byte value);
 * "mixed", key + value uniform in 64..4096 bytes (16-byte key), from a
 * fixed seed. The index is keyed by a random per-store hash seed, so runs
 * that stop on the index vary from run to run.
 *
 * READING THE TABLE. "stopped at" says what ended the run: "evict: index"
 * when the first eviction came before the cleaner had reclaimed any
 * segment (so a key's index window was full, not the memory), "evict:
 * memory" otherwise; "-ENOSPC: index" or "-ENOSPC: memory" from the
 * store's fail_index_full / fail_nospace counters. "live" is the sum of
 * key and value lengths of the keys still there. "used% of data" is
 * used_bytes / data_bytes. The overhead per item is (used_bytes - live) /
 * items (item headers, padding) and (arena_bytes - live) / items
 * (everything: index, tables, unused space).
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
#include <time.h>
#include <unistd.h>

#include <kvshm.h>

#define KEY_LEN 16
#define MIX_MIN 64
#define MIX_MAX 4096
#define MIB (1024u * 1024u)

struct workload {
	const char *name;
	bool mixed;
	bool noevict;
};

/* What one run measured. */
struct fill {
	uint64_t writes;       /* successful sets */
	uint64_t items;        /* live keys (scan) */
	uint64_t live;         /* their key + value bytes (scan) */
	struct kvshm_stats st; /* when the run stopped */
	const char *stop;      /* why it stopped */
	/* evicting stores, then as many writes of new keys again (see
	 * after_full()) */
	uint64_t more;         /* writes */
	uint64_t needed_room;  /* ... that evicted something */
	uint64_t evicted, evicted_max, moved; /* items */
	double ns_per_write;   /* a second, timed pass of as many writes */
};

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

static void make_key(char *dst, uint64_t i)
{
	char tmp[KEY_LEN + 1];

	snprintf(tmp, sizeof(tmp), "fill:%011" PRIu64, i % 100000000000u);
	memcpy(dst, tmp, KEY_LEN);
}

struct scan_sum {
	uint64_t items, bytes;
};

static int sum_live(const void *key, size_t klen, const struct kvshm_item *item,
		    void *ctx)
{
	struct scan_sum *s = ctx;

	(void)key;
	s->items++;
	s->bytes += klen + item->value_len;
	return 0;
}

/*
 * Count what is live twice: by scanning, and by asking for every key
 * written (sizes[i] is the key + value length of key i). 0 if they agree
 * with each other and with the stats.
 */
static int count_live(struct kvshm *kv, const uint32_t *sizes, uint64_t n,
		      struct fill *f)
{
	struct scan_sum s = { 0 };
	uint64_t cursor = 0, items = 0, bytes = 0;
	int rc = kvshm_scan(kv, NULL, 0, &cursor, 0, sum_live, &s);
	char key[KEY_LEN];

	if (rc < 0 || cursor != 0) {
		fprintf(stderr, "kvshm_scan: %s\n", kvshm_strerror(rc));
		return -1;
	}
	for (uint64_t i = 0; i < n; i++) {
		make_key(key, i);
		rc = kvshm_exists(kv, key, KEY_LEN);
		if (rc < 0) {
			fprintf(stderr, "kvshm_exists: %s\n",
				kvshm_strerror(rc));
			return -1;
		}
		items += (uint64_t)rc;
		bytes += rc ? sizes[i] : 0;
	}
	f->items = s.items;
	f->live = s.bytes;
	if (items != s.items || bytes != s.bytes || f->st.items != s.items) {
		fprintf(stderr,
			"live count disagrees: scan %" PRIu64 " keys/%" PRIu64
			" bytes, exists %" PRIu64 "/%" PRIu64 ", stats %" PRIu64
			" items\n",
			s.items, s.bytes, items, bytes, f->st.items);
		return -1;
	}
	return 0;
}

/* Write keys 0, 1, ... until the store evicts or refuses. */
static int fill_store(struct kvshm *kv, const struct workload *wl,
		      uint64_t seed, uint32_t **sizes_out, struct fill *f)
{
	static uint8_t val[MIX_MAX];
	uint64_t cap = 1u << 16, rng = seed | 1;
	uint32_t *sizes = malloc(cap * sizeof(*sizes));
	char key[KEY_LEN];

	*sizes_out = sizes;
	for (uint64_t i = 0;; i++) {
		size_t total =
			wl->mixed ? MIX_MIN + rng_next(&rng) %
						      (MIX_MAX - MIX_MIN + 1) :
				    100;
		int err;
		if (!sizes)
			return -ENOMEM;
		if (i == cap) {
			uint32_t *more =
				realloc(sizes, 2 * cap * sizeof(*sizes));
			if (!more)
				return -ENOMEM;
			cap *= 2;
			*sizes_out = sizes = more;
		}
		make_key(key, i);
		memset(val, (int)(i & 0xff), total - KEY_LEN);
		err = kvshm_set(kv, key, KEY_LEN, val, total - KEY_LEN, 0);
		if (err == -ENOSPC && wl->noevict) {
			f->stop = "-ENOSPC";
			break;
		}
		if (err) {
			fprintf(stderr, "%s: set of key %" PRIu64 ": %s\n",
				wl->name, i, kvshm_strerror(err));
			return err;
		}
		sizes[i] = (uint32_t)total;
		f->writes = i + 1;
		kvshm_stats(kv, &f->st);
		if (f->st.evictions > 0) {
			/* only the cleaner reclaims segments; an eviction
			 * before any reclaim came from a full index window */
			f->stop = f->st.segments_reclaimed ? "evict: memory" :
							     "evict: index";
			break;
		}
	}
	kvshm_stats(kv, &f->st);
	if (wl->noevict && f->st.fail_index_full)
		f->stop = "-ENOSPC: index";
	else if (wl->noevict)
		f->stop = "-ENOSPC: memory";
	return 0;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * An evicting store once full: write as many new keys again as it held,
 * reading each stats after every write to see what that write evicted
 * (issue 13: evict what the write needs), then time another pass of the
 * same size without the stats calls.
 */
static int after_full(struct kvshm *kv, const struct workload *wl,
		      uint64_t seed, struct fill *f)
{
	static uint8_t val[MIX_MAX];
	uint64_t rng = seed * 7 + 3, n = f->writes, t0;
	struct kvshm_stats a, b;
	char key[KEY_LEN];

	kvshm_stats(kv, &a);
	f->more = n;
	for (uint64_t pass = 0; pass < 2; pass++) {
		t0 = mono_ns();
		for (uint64_t i = 0; i < n; i++) {
			size_t total = wl->mixed
					       ? MIX_MIN + rng_next(&rng) %
							   (MIX_MAX - MIX_MIN + 1)
					       : 100;
			int err;
			make_key(key, (pass + 1) * 1000000000u + i);
			memset(val, (int)(i & 0xff), total - KEY_LEN);
			err = kvshm_set(kv, key, KEY_LEN, val, total - KEY_LEN,
					0);
			if (err) {
				fprintf(stderr, "%s: write %" PRIu64
					" after full: %s\n",
					wl->name, i, kvshm_strerror(err));
				return err;
			}
			if (pass == 1)
				continue;
			kvshm_stats(kv, &b);
			if (b.evictions > a.evictions) {
				uint64_t d = b.evictions - a.evictions;
				f->needed_room++;
				f->evicted += d;
				if (d > f->evicted_max)
					f->evicted_max = d;
			}
			f->moved += b.items_relocated - a.items_relocated;
			a = b;
		}
		if (pass == 1)
			f->ns_per_write = (double)(mono_ns() - t0) / (double)n;
	}
	return 0;
}

static int run(const struct workload *wl, uint64_t arena, uint64_t max_items,
	       uint64_t seed, struct fill *f)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct kvshm *kv = NULL;
	uint32_t *sizes = NULL;
	char name[64], report[256];
	int err;

	*f = (struct fill){ 0 };
	snprintf(name, sizeof(name), "kvshm-fill-%ld", (long)getpid());
	o.flags = KVSHM_CREATE | KVSHM_EXCL | (wl->noevict ? KVSHM_NOEVICT : 0);
	o.arena_bytes = arena;
	o.max_items = max_items;
	err = kvshm_open(name, &o, &kv);
	if (err) {
		fprintf(stderr, "kvshm_open %s: %s\n", name,
			kvshm_strerror(err));
		return -1;
	}
	err = fill_store(kv, wl, seed, &sizes, f);
	if (!err)
		err = count_live(kv, sizes, f->writes, f);
	if (!err && !wl->noevict)
		err = after_full(kv, wl, seed, f);
	if (kvshm_check(kv, report, sizeof(report))) {
		fprintf(stderr, "%s: kvshm_check: %s\n", wl->name, report);
		err = -1;
	}
	free(sizes);
	kvshm_close(kv);
	kvshm_unlink(name);
	return err ? -1 : 0;
}

static void print_row(const struct workload *wl, const struct fill *f)
{
	const struct kvshm_stats *st = &f->st;
	double items = f->items ? (double)f->items : 1;

	printf("%-16s %-16s %8" PRIu64 " %8.2f %6.1f%% %6.1f%% %6.1f%% "
	       "%8.1f %8.1f\n",
	       wl->name, f->stop, f->items, (double)f->live / MIB,
	       100.0 * (double)f->live / (double)st->arena_bytes,
	       100.0 * (double)f->live / (double)st->data_bytes,
	       100.0 * (double)st->used_bytes / (double)st->data_bytes,
	       ((double)st->used_bytes - (double)f->live) / items,
	       ((double)st->arena_bytes - (double)f->live) / items);
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--arena MIB] [--max-items N] [--seed N]\n"
		"  --arena MIB      arena of each store (default 64)\n"
		"  --max-items N    index capacity (default: the store's)\n"
		"  --seed N         seed of the mixed sizes (default 1)\n",
		argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct workload wls[] = {
		{ "uniform 100 B", false, false },
		{ "mixed 64B-4KB", true, false },
		{ "uniform NOEVICT", false, true },
		{ "mixed NOEVICT", true, true },
	};
	enum {
		NWL = sizeof(wls) / sizeof(wls[0])
	};
	struct fill f[NWL];
	uint64_t arena = 64 * (uint64_t)MIB, max_items = 0, seed = 1;
	int failed = 0;

	for (int i = 1; i < argc; i++) {
		char *end = NULL;
		if (strcmp(argv[i], "--arena") == 0 && i + 1 < argc) {
			arena = strtoull(argv[++i], &end, 10) * MIB;
			if (*end || arena < MIB ||
			    arena > 65536 * (uint64_t)MIB)
				usage(argv[0]);
		} else if (strcmp(argv[i], "--max-items") == 0 &&
			   i + 1 < argc) {
			max_items = strtoull(argv[++i], &end, 10);
			if (*end)
				usage(argv[0]);
		} else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
			seed = strtoull(argv[++i], &end, 10);
			if (*end)
				usage(argv[0]);
		} else {
			usage(argv[0]);
		}
	}

	for (int i = 0; i < NWL; i++)
		if (run(&wls[i], arena, max_items, seed, &f[i]))
			failed = 1;

	printf("arena %" PRIu64 " MiB: data area %.2f MiB (%.1f%%), "
	       "%" PRIu64 " segments of %" PRIu64 " KiB, index for %" PRIu64
	       " items\n\n",
	       f[0].st.arena_bytes / MIB, (double)f[0].st.data_bytes / MIB,
	       100.0 * (double)f[0].st.data_bytes / (double)f[0].st.arena_bytes,
	       f[0].st.data_bytes / f[0].st.segment_bytes,
	       f[0].st.segment_bytes / 1024, f[0].st.max_items);
	printf("%-16s %-16s %8s %8s %7s %7s %7s %8s %8s\n", "workload",
	       "stopped at", "items", "live MiB", "%arena", "%data", "used%",
	       "ovh/item", "ovh/item");
	printf("%-16s %-16s %8s %8s %7s %7s %7s %8s %8s\n", "", "", "", "", "",
	       "", "of data", "(used)", "(arena)");
	for (int i = 0; i < NWL; i++)
		print_row(&wls[i], &f[i]);
	printf("\n%-16s %10s %10s %10s %10s %10s %10s\n", "workload", "writes",
	       "evictions", "reclaimed", "free segs", "nospace", "index full");
	for (int i = 0; i < NWL; i++)
		printf("%-16s %10" PRIu64 " %10" PRIu64 " %10" PRIu64
		       " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 "\n",
		       wls[i].name, f[i].writes, f[i].st.evictions,
		       f[i].st.segments_reclaimed, f[i].st.free_segments,
		       f[i].st.fail_nospace, f[i].st.fail_index_full);
	printf("\nonce full, as many new keys again (evicting stores; a write "
	       "\"needed room\" if it evicted):\n");
	printf("%-16s %10s %12s %10s %12s %10s %10s %10s\n", "workload",
	       "writes", "needed room", "evicted", "evicted per", "max per",
	       "moved per", "ns/write");
	printf("%-16s %10s %12s %10s %12s %10s %10s %10s\n", "", "", "", "",
	       "such write", "write", "write", "(pass 2)");
	for (int i = 0; i < NWL; i++)
		if (!wls[i].noevict)
			printf("%-16s %10" PRIu64 " %12" PRIu64 " %10" PRIu64
			       " %12.1f %10" PRIu64 " %10.2f %10.0f\n",
			       wls[i].name, f[i].more, f[i].needed_room,
			       f[i].evicted,
			       f[i].needed_room ? (double)f[i].evicted /
						  (double)f[i].needed_room
						: 0.0,
			       f[i].evicted_max,
			       f[i].more ? (double)f[i].moved / (double)f[i].more
					 : 0.0,
			       f[i].ns_per_write);
	if (failed)
		printf("FAILED: see the messages above\n");
	return failed;
}
