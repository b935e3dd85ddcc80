/* SPDX-License-Identifier: MIT */
/*
 * fuzz_segment.c - libFuzzer harness: a corrupted segment.
 *
 * Once per process a small valid store is built (1 MiB: byte values of
 * many sizes, counters, items that expired but were not reclaimed, deleted
 * and overwritten items left as garbage, a kvshm_clear() with stripes not
 * yet purged, several allocation segments in use) and its bytes are kept as
 * an image. Each input is a list of byte changes to that image, 4 bytes
 * each:
 *     [what] [offset lo] [offset hi] [value]
 * where what & 7 picks the region (the mutable part of the header page, the
 * whole header page, the lanes/cleaner/stats, the stripes with their
 * mutexes and intent records, the stripe generations and segment table,
 * the index, the header of a linked item, anywhere in the data area), and
 * what >> 3 & 3 the change (xor the byte, set the byte, set the aligned
 * 8-byte word to one of a few telling values, add to the byte). The image
 * is then written to a fresh file, opened as a store (a name with '/' is a
 * file path), and used: get, get_ex with GET_STALE, exists, ttl, counter,
 * put, incr, expire, delete, scan, sweep, stats, check, clear, check again,
 * and a read, check and stats through a read-only handle. kvshm may refuse the
 * segment or report it corrupt, with any error, but must not crash, read
 * or write outside the mapping (ASan), leave a lock held (a leaked robust
 * mutex would crash glibc's robust list after unmapping), or hang
 * (libFuzzer's -timeout).
 *
 * Lock timeouts: a garbage lock word looks like a lock held by a live
 * process, which a real store waits up to 5 s for. The harness shortens
 * that wait through the test hook kv__test_lock_timeout_ns (shm/testing.h)
 * so that each input costs milliseconds; the -ETIMEDOUT path is the same.
 * The mutex type word (__kind) and the robust list pointers are left
 * alone: they are glibc's own bookkeeping, whose corruption glibc (not
 * kvshm) may answer with an assertion, so changes there are skipped.
 *
 *   make fuzz && build/fuzz/fuzz_segment -max_total_time=60 CORPUS_DIR
 *
 * Environment: KVSHM_FUZZ_DIR, a directory for the store files (default
 * /dev/shm); every file is unlinked after its input. KVSHM_FUZZ_VERBOSE:
 * print what kvshm_open() and kvshm_check() said about each input.
 */
#define _GNU_SOURCE 1

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kvshm.h>

#include "format.h"
#include "testing.h"

#define ARENA_BYTES (1u << 20)
#define MAX_KEY 32u
#define MAX_ITEMS 1024u
#define NKEYS 160u
#define MAX_ITEM_OFFS 512u

static uint8_t *image;
static size_t image_len;
static struct kv__header geo; /* the image's header */
static uint64_t item_offs[MAX_ITEM_OFFS];
static unsigned nitem_offs;
static char path[4096];
static bool verbose; /* KVSHM_FUZZ_VERBOSE=1: say what open and check said */

static void die(const char *what, int rc)
{
	fprintf(stderr, "fuzz_segment: %s: %s\n", what, kvshm_strerror(rc));
	abort();
}

static size_t key_of(unsigned i, char *out)
{
	return (size_t)sprintf(out, "%c:%u", "skcx"[i % 4], i);
}

/* ---- the image ------------------------------------------------------------ */

static void populate(struct kvshm *kv)
{
	static uint8_t val[6000];
	char key[32];
	int rc;

	for (size_t i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)(i * 31 + 7);
	for (unsigned i = 0; i < NKEYS; i++) {
		size_t klen = key_of(i, key);
		struct kvshm_write w = { .flags = i };
		switch (i % 4) {
		case 0: /* a byte value, some large */
			rc = kvshm_put(kv, key, klen, val, (i * 37) % 6000, &w,
				       NULL);
			break;
		case 1: /* a counter, some with a TTL */
			rc = kvshm_incr(kv, key, klen, (int64_t)i * 1000 - 5,
					i % 8 == 1 ? 0 : 1000000000, NULL);
			break;
		case 2: /* expired, not reclaimed */
			w.expires_at_ms = 1000 + i;
			rc = kvshm_put(kv, key, klen, val, i % 300, &w, NULL);
			break;
		default: /* written twice: the first copy is garbage */
			rc = kvshm_set(kv, key, klen, val + 1, i, 0);
			if (rc == 0)
				rc = kvshm_set(kv, key, klen, val, i * 3,
					       5000000);
			break;
		}
		if (rc)
			die("populate", rc);
	}
	for (unsigned i = 0; i < NKEYS; i += 9) { /* garbage and holes */
		size_t klen = key_of(i, key);
		kvshm_delete(kv, key, klen);
	}
	/* a clear, then new items: stripes of both generations */
	if ((rc = kvshm_clear(kv)))
		die("clear", rc);
	for (unsigned i = 0; i < NKEYS; i++) {
		size_t klen = key_of(i, key);
		if (i % 3 == 0)
			rc = kvshm_set(kv, key, klen, val + i, i * 11 % 4000,
				       0);
		else if (i % 3 == 1)
			rc = kvshm_incr(kv, key, klen, -(int64_t)i, 0, NULL);
		else
			rc = 0;
		if (rc)
			die("refill", rc);
	}
}

static void build_image(void)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct kvshm *kv;
	FILE *f;
	int rc;

	o.flags = KVSHM_CREATE | KVSHM_EXCL;
	o.arena_bytes = ARENA_BYTES;
	o.max_items = MAX_ITEMS;
	o.max_key_bytes = MAX_KEY;
	unlink(path); /* maybe a mutated image of a crashed run */
	if ((rc = kvshm_open(path, &o, &kv)))
		die("create", rc);
	populate(kv);
	kvshm_close(kv);

	image = malloc(ARENA_BYTES);
	f = fopen(path, "rb");
	if (!image || !f || fread(image, 1, ARENA_BYTES, f) != ARENA_BYTES)
		die("read image", -EIO);
	fclose(f);
	kvshm_unlink(path);
	image_len = ARENA_BYTES;
	memcpy(&geo, image, sizeof(geo));

	/* where the linked items are, for mutations of item headers */
	for (uint64_t b = 0; b < geo.nbuckets; b++) {
		const struct kv__bucket *bk =
			(const void *)(image + geo.index_off + b * 64);
		for (unsigned s = 0; s < KV_BUCKET_SLOTS; s++) {
			uint64_t w = bk->slot[s];
			if (w && nitem_offs < MAX_ITEM_OFFS)
				item_offs[nitem_offs++] =
					(w & KV_SLOT_OFF_MASK) * KV_ITEM_ALIGN;
		}
	}
	if (!nitem_offs)
		die("no items in the image", -EINVAL);
}

/* ---- mutations ------------------------------------------------------------ */

/* Is off inside a mutex's glibc-private bookkeeping (__kind, __list)? The
 * arrays are indexed with their struct's size (the layout reserves more per
 * element than that), so that is the stride here too. */
static bool in_mutex_private(uint64_t off)
{
	const uint64_t kind = offsetof(pthread_mutex_t, __data.__kind);
	const uint64_t lane = sizeof(struct kv__lane);
	const uint64_t stripe = sizeof(struct kv__stripe);
	uint64_t base, rel;

	if (off >= geo.lanes_off && off < geo.lanes_off + KV_MAX_LANES * lane)
		base = geo.lanes_off + (off - geo.lanes_off) / lane * lane;
	else if (off >= geo.cleaner_off &&
		 off < geo.cleaner_off + offsetof(struct kv__cleaner, drain))
		base = geo.cleaner_off;
	else if (off >= geo.cleaner_off + offsetof(struct kv__cleaner, drain) &&
		 off < geo.cleaner_off + sizeof(struct kv__cleaner))
		base = geo.cleaner_off + offsetof(struct kv__cleaner, drain);
	else if (off >= geo.stripes_off &&
		 off < geo.stripes_off + (uint64_t)geo.nstripes * stripe)
		base = geo.stripes_off +
		       (off - geo.stripes_off) / stripe * stripe;
	else
		return false;
	rel = off - base;
	return (rel >= kind && rel < kind + 4) ||            /* __kind */
	       (rel >= 24 && rel < sizeof(pthread_mutex_t)); /* __list */
}

static uint64_t special(uint8_t v)
{
	static const uint64_t vals[] = { 0,
					 UINT64_MAX,
					 UINT64_C(1) << 63,
					 1,
					 UINT64_MAX >> 1,
					 0x40000000 /* FUTEX_OWNER_DIED */,
					 0xc0000001,
					 0x80000000,
					 KV_INTENT_ARMED,
					 (uint64_t)ARENA_BYTES,
					 (uint64_t)ARENA_BYTES - 8,
					 (uint64_t)ARENA_BYTES / 16,
					 KV_SLOT_OFF_MASK,
					 0xffff,
					 0x10000 };
	if (v < sizeof(vals) / sizeof(vals[0]))
		return vals[v];
	return (uint64_t)v * 0x0101010101010101u;
}

static void mutate(uint8_t *img, const uint8_t *rec)
{
	uint32_t r16 = rec[1] | (uint32_t)rec[2] << 8;
	uint64_t lo, len, off;

	switch (rec[0] & 7) {
	case 0: /* the header's mutable part: clear_gen, life, sweep_pos... */
		lo = offsetof(struct kv__header, clear_gen);
		len = sizeof(struct kv__header) - lo;
		break;
	case 1:
		lo = 0;
		len = KV_HEADER_BYTES;
		break;
	case 2:
		lo = geo.stats_off;
		len = geo.stripes_off - lo;
		break;
	case 3:
		lo = geo.stripes_off;
		len = geo.gens_off - lo;
		break;
	case 4:
		lo = geo.gens_off;
		len = geo.index_off - lo;
		break;
	case 5:
		lo = geo.index_off;
		len = geo.data_off - lo;
		break;
	case 6: /* a linked item's header (or its key) */
		lo = item_offs[r16 % nitem_offs];
		len = 64;
		r16 = rec[2];
		break;
	default:
		lo = geo.data_off;
		len = image_len - lo;
		r16 |= (uint32_t)(rec[0] >> 5) << 16;
		break;
	}
	off = lo + r16 % len;
	if (off >= image_len || in_mutex_private(off))
		return;
	switch (rec[0] >> 3 & 3) {
	case 0:
		img[off] ^= rec[3] ? rec[3] : 0x80;
		break;
	case 1:
		img[off] = rec[3];
		break;
	case 2: {
		uint64_t v = special(rec[3]);
		off &= ~(uint64_t)7;
		if (in_mutex_private(off) || in_mutex_private(off + 7))
			return;
		memcpy(img + off, &v, 8);
		break;
	}
	default:
		img[off] += rec[3];
		break;
	}
}

/* ---- using the damaged store ---------------------------------------------- */

static int visit(const void *key, size_t klen, const struct kvshm_item *it,
		 void *ctx)
{
	(void)key;
	(void)it;
	*(size_t *)ctx += klen;
	return 0;
}

static void scan_all(struct kvshm *kv)
{
	uint64_t cursor = 0;
	size_t sum = 0;

	for (unsigned i = 0; i < 1000; i++) {
		int rc = kvshm_scan(kv, NULL, 0, &cursor, 50, visit, &sum);
		if (rc < 0 || cursor == 0)
			return;
	}
	fprintf(stderr, "fuzz_segment: scan did not end in 1000 rounds\n");
	__builtin_trap();
}

static void reads(struct kvshm *kv, unsigned from)
{
	static uint8_t buf[8192];
	char key[32];

	for (unsigned i = from; i < NKEYS; i += 7) {
		size_t klen = key_of(i, key), vlen;
		struct kvshm_item it;
		int64_t v;
		kvshm_get(kv, key, klen, buf, sizeof(buf), &vlen);
		kvshm_get(kv, key, klen, buf, 3, &vlen);
		kvshm_get_ex(kv, key, klen, buf, sizeof(buf), &it,
			     KVSHM_GET_STALE);
		kvshm_exists(kv, key, klen);
		kvshm_ttl(kv, key, klen, &v);
		kvshm_counter(kv, key, klen, &v);
	}
	scan_all(kv);
}

static void writes(struct kvshm *kv, unsigned from)
{
	static const uint8_t val[3000];
	char key[32];

	for (unsigned i = from; i < NKEYS; i += 11) {
		size_t klen = key_of(i, key);
		struct kvshm_write w = { .mode = i % 4, .cas = i };
		kvshm_put(kv, key, klen, val, i * 17 % sizeof(val), &w, NULL);
		kvshm_incr(kv, key, klen, 3, 0, NULL);
		kvshm_expire(kv, key, klen, i % 2 ? 0 : 100000);
		if (i % 3 == 0)
			kvshm_delete(kv, key, klen);
		else if (i % 3 == 1)
			kvshm_delete_cas(kv, key, klen, i);
	}
	/* new keys: allocation, maybe eviction and the cleaner */
	for (unsigned i = 0; i < 40; i++) {
		size_t klen = (size_t)sprintf(key, "new:%u", i + from);
		kvshm_set(kv, key, klen, val, 2000 + i * 7, 0);
	}
}

static void use_store(unsigned plan)
{
	struct kvshm_options ro = KVSHM_OPTIONS_INIT;
	struct kvshm_stats st;
	struct kvshm *kv, *rd;
	char report[2048];
	size_t n;
	int rc;

	/* A read-only handle may not lock, so it cannot repair a bucket left
	 * mid-change: it retries such a read for ~2 s (a scan page for ~5 s)
	 * before -ETIMEDOUT, by design. One read keeps an input well under
	 * the per-input timeout. */
	ro.flags = KVSHM_RDONLY;
	if (kvshm_open(path, &ro, &rd) == 0) {
		char key[32];
		size_t klen = key_of(plan % NKEYS, key);
		uint8_t buf[64];
		kvshm_get(rd, key, klen, buf, sizeof(buf), NULL);
		kvshm_check(rd, report, sizeof(report));
		kvshm_stats(rd, &st);
		kvshm_close(rd);
	}
	rc = kvshm_open(path, NULL, &kv);
	if (verbose)
		fprintf(stderr, "fuzz_segment: open: %s\n", kvshm_strerror(rc));
	if (rc)
		return; /* refused: fine */
	rc = kvshm_check(kv, report, sizeof(report));
	if (verbose)
		fprintf(stderr, "fuzz_segment: check: %s: %s",
			kvshm_strerror(rc), report);
	reads(kv, plan % 7);
	writes(kv, plan % 11);
	kvshm_sweep(kv, plan & 2 ? 5 : 0, &n);
	kvshm_stats(kv, &st);
	reads(kv, 3);
	rc = kvshm_check(kv, report, sizeof(report));
	if (verbose)
		fprintf(stderr, "fuzz_segment: check after use: %s: %s",
			kvshm_strerror(rc), report);
	if (plan & 4) {
		kvshm_clear(kv);
		writes(kv, 1);
		kvshm_sweep(kv, 0, &n);
		kvshm_check(kv, report, sizeof(report));
	}
	kvshm_close(kv);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("KVSHM_FUZZ_DIR");

	(void)argc;
	(void)argv;
	snprintf(path, sizeof(path), "%s/kvfz-seg-%d",
		 dir && *dir ? dir : "/dev/shm", (int)getpid());
	verbose = getenv("KVSHM_FUZZ_VERBOSE") != NULL;
	build_image();
	kv__test_lock_timeout_ns = 20 * 1000 * 1000; /* 20 ms, not 5 s */
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *img;
	unsigned plan = size ? data[0] : 0;
	int fd;

	if (!img && !(img = malloc(image_len)))
		abort();
	memcpy(img, image, image_len);
	for (size_t i = 1; i + 4 <= size && i < 1 + 4 * 64; i += 4)
		mutate(img, data + i);

	unlink(path); /* a mutated image may not pass as a store */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, img, image_len) != (ssize_t)image_len) {
		perror("fuzz_segment: writing the image");
		abort();
	}
	close(fd);
	use_store(plan);
	unlink(path);
	return 0;
}
