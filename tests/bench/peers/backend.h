/* SPDX-License-Identifier: MIT */
/*
 * backend.h - what kvshm-bench asks of a store it measures. kvshm-bench.c
 * defines the kvshm and in-process backends; the files beside this one
 * define the peers (LMDB, Redis, memcached), which tests/bench/compare
 * compiles into a second binary together with kvshm-bench.c (-DWITH_PEERS,
 * -DWITH_LMDB), so every system runs the same key sequences through the
 * same timing loop.
 *
 * A backend is set up once in the parent (create the store, or remember the
 * server's socket), attached once in every process that uses it (the
 * parent for the fill, then each forked worker: LMDB environments and
 * sockets must not cross fork()), and torn down in the parent. Keys are
 * always KEY_LEN bytes. Every function returns 0 or a negative errno.
 */
#ifndef KVSHM_BENCH_BACKEND_H
#define KVSHM_BENCH_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEY_LEN 16

/* What the command line chose, as the backends need it. */
struct bench_cfg {
	size_t nkeys;
	size_t vsize;
	bool counters;      /* INCR is among the workloads: make counters */
	uint64_t arena;     /* kvshm: arena bytes (0 = derived) */
	const char *target; /* peer: socket path or directory */
	int pipeline;       /* socket peers: requests per round trip */
};

/* Memory a backend reports after the fill (0 = unknown). */
struct bench_mem {
	uint64_t store_bytes; /* whole store as allocated */
	uint64_t used_bytes;  /* bytes holding items */
	uint64_t items;
	uint64_t index_bytes; /* metadata beyond the items (index etc.) */
	uint64_t evictions;   /* so far */
};

struct backend {
	const char *name;
	/* socket peers: the loop's value checks wait for flush() */
	bool remote;
	int (*setup)(const struct bench_cfg *cfg, void **state);
	void (*teardown)(void *state);
	/* bulk: the caller only writes and calls flush() at the end, so
	 * requests may be pipelined (the fill) */
	int (*attach)(void *state, bool bulk, void **h);
	void (*detach)(void *h);
	int (*get)(void *h, const uint8_t *key, void *buf, size_t buflen,
		   size_t *vlen);
	int (*set)(void *h, const uint8_t *key, const void *val, size_t vlen);
	int (*incr)(void *h, const uint8_t *key, int64_t delta,
		    int64_t *result);
	int (*counter_init)(void *h, const uint8_t *key);
	int (*counter_read)(void *h, const uint8_t *key, int64_t *value);
	/* pipelined requests: send what is queued, read every reply; NULL if
	 * the backend never queues */
	int (*flush)(void *h);
	/* may be NULL */
	int (*memory)(void *state, void *h, struct bench_mem *m);
};

#ifdef WITH_PEERS
extern const struct backend bench_redis, bench_memcached;
#endif
#ifdef WITH_LMDB
extern const struct backend bench_lmdb;
#endif

#endif
