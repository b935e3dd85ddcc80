/* SPDX-License-Identifier: MIT */
/*
 * lmdb.c - the LMDB peer of kvshm-bench, used as a cache would use it: an
 * environment in a directory on /dev/shm (--target), MDB_NOSYNC |
 * MDB_NOMETASYNC | MDB_WRITEMAP (no fsync, writes straight into the map),
 * each process opening its own environment after fork() (LMDB forbids
 * using one across fork). A read is a renewed read-only transaction
 * (mdb_txn_renew, mdb_get, copy out, mdb_txn_reset); a write is one write
 * transaction (begin, put, commit); an incr is one write transaction that
 * reads, adds and puts the 8-byte counter.
 */
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"

struct lm_state {
	char dir[512];
	uint64_t mapsize;
};

struct lm {
	MDB_env *env;
	MDB_dbi dbi;
	MDB_txn *rtxn; /* reset between reads */
};

static int lm_err(int rc)
{
	/* LMDB returns errno values or its own codes (< 0): map those */
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc == MDB_MAP_FULL)
		return -ENOSPC;
	return rc > 0 ? -rc : -EIO;
}

static int lm_setup(const struct bench_cfg *cfg, void **state)
{
	struct lm_state *s = calloc(1, sizeof(*s));
	const uint64_t items = cfg->nkeys * (cfg->counters ? 2 : 1);

	if (!s)
		return -ENOMEM;
	snprintf(s->dir, sizeof(s->dir), "%s", cfg->target);
	if (mkdir(s->dir, 0700) && errno != EEXIST) {
		free(s);
		return -errno;
	}
	/* B-tree pages at ~50% fill, copy-on-write pages of the writes:
	 * generous, and a sparse map costs nothing untouched */
	s->mapsize = 8 * items * (KEY_LEN + cfg->vsize + 64) + (256u << 20);
	*state = s;
	return 0;
}

static void lm_teardown(void *state)
{
	struct lm_state *s = state;
	char path[600];

	snprintf(path, sizeof(path), "%s/data.mdb", s->dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/lock.mdb", s->dir);
	unlink(path);
	rmdir(s->dir);
	free(s);
}

static int lm_attach(void *state, bool bulk, void **h)
{
	struct lm_state *s = state;
	struct lm *l = calloc(1, sizeof(*l));
	MDB_txn *txn;
	int rc;

	(void)bulk;
	if (!l)
		return -ENOMEM;
	rc = mdb_env_create(&l->env);
	if (!rc)
		rc = mdb_env_set_mapsize(l->env, s->mapsize);
	if (!rc)
		rc = mdb_env_set_maxreaders(l->env, 256);
	if (!rc)
		rc = mdb_env_open(l->env, s->dir,
				  MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP |
					  MDB_NOTLS,
				  0600);
	if (!rc)
		rc = mdb_txn_begin(l->env, NULL, 0, &txn);
	if (!rc) {
		rc = mdb_dbi_open(txn, NULL, 0, &l->dbi);
		rc = rc ?: mdb_txn_commit(txn);
	}
	if (!rc)
		rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &l->rtxn);
	if (!rc)
		mdb_txn_reset(l->rtxn);
	if (rc) {
		fprintf(stderr, "lmdb: %s\n", mdb_strerror(rc));
		if (l->env)
			mdb_env_close(l->env);
		free(l);
		return lm_err(rc);
	}
	*h = l;
	return 0;
}

static void lm_detach(void *h)
{
	struct lm *l = h;

	mdb_txn_abort(l->rtxn);
	mdb_env_close(l->env);
	free(l);
}

static int lm_get(void *h, const uint8_t *key, void *buf, size_t buflen,
		  size_t *vlen)
{
	struct lm *l = h;
	MDB_val k = { KEY_LEN, (void *)key }, v;
	int rc = mdb_txn_renew(l->rtxn);

	if (rc)
		return lm_err(rc);
	rc = mdb_get(l->rtxn, l->dbi, &k, &v);
	if (!rc) {
		*vlen = v.mv_size;
		if (v.mv_size > buflen)
			rc = ENOBUFS;
		else
			memcpy(buf, v.mv_data, v.mv_size);
	}
	mdb_txn_reset(l->rtxn);
	return rc ? lm_err(rc) : 0;
}

static int lm_put(struct lm *l, const uint8_t *key, const void *val,
		  size_t vlen)
{
	MDB_val k = { KEY_LEN, (void *)key }, v = { vlen, (void *)val };
	MDB_txn *txn;
	int rc = mdb_txn_begin(l->env, NULL, 0, &txn);

	if (rc)
		return lm_err(rc);
	rc = mdb_put(txn, l->dbi, &k, &v, 0);
	if (rc) {
		mdb_txn_abort(txn);
		return lm_err(rc);
	}
	rc = mdb_txn_commit(txn);
	return rc ? lm_err(rc) : 0;
}

static int lm_set(void *h, const uint8_t *key, const void *val, size_t vlen)
{
	return lm_put(h, key, val, vlen);
}

static int lm_incr(void *h, const uint8_t *key, int64_t delta, int64_t *result)
{
	struct lm *l = h;
	MDB_val k = { KEY_LEN, (void *)key }, v;
	MDB_txn *txn;
	int64_t n = 0;
	int rc = mdb_txn_begin(l->env, NULL, 0, &txn);

	if (rc)
		return lm_err(rc);
	rc = mdb_get(txn, l->dbi, &k, &v);
	if (!rc && v.mv_size == 8)
		memcpy(&n, v.mv_data, 8);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	n += delta;
	v.mv_size = 8;
	v.mv_data = &n;
	if (!rc)
		rc = mdb_put(txn, l->dbi, &k, &v, 0);
	if (rc) {
		mdb_txn_abort(txn);
		return lm_err(rc);
	}
	rc = mdb_txn_commit(txn);
	*result = n;
	return rc ? lm_err(rc) : 0;
}

static int lm_counter_init(void *h, const uint8_t *key)
{
	const int64_t zero = 0;

	return lm_put(h, key, &zero, 8);
}

static int lm_counter_read(void *h, const uint8_t *key, int64_t *value)
{
	size_t vlen;

	return lm_get(h, key, value, 8, &vlen);
}

static int lm_memory(void *state, void *h, struct bench_mem *m)
{
	struct lm *l = h;
	MDB_stat st;
	MDB_envinfo info;
	int rc;

	(void)state;
	rc = mdb_env_stat(l->env, &st);
	if (!rc)
		rc = mdb_env_info(l->env, &info);
	if (rc)
		return lm_err(rc);
	m->items = st.ms_entries;
	m->used_bytes = (uint64_t)st.ms_psize * st.ms_leaf_pages;
	m->index_bytes = (uint64_t)st.ms_psize * st.ms_branch_pages;
	m->store_bytes = (uint64_t)st.ms_psize * (info.me_last_pgno + 1);
	return 0;
}

const struct backend bench_lmdb = {
	.name = "lmdb",
	.remote = false,
	.setup = lm_setup,
	.teardown = lm_teardown,
	.attach = lm_attach,
	.detach = lm_detach,
	.get = lm_get,
	.set = lm_set,
	.incr = lm_incr,
	.counter_init = lm_counter_init,
	.counter_read = lm_counter_read,
	.memory = lm_memory,
};
