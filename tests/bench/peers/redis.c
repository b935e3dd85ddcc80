/* SPDX-License-Identifier: MIT */
/*
 * redis.c - the Redis peer of kvshm-bench: RESP over a Unix socket, one
 * connection per process, GET / SET / INCR as a cache client would send
 * them. With --pipeline N, N requests go out in one write and their replies
 * are read together (the "pipelined" note of the comparison); otherwise
 * every operation is one round trip. compare starts a private redis-server
 * with persistence off and passes its socket as --target.
 */
#include <inttypes.h>
#include <stdio.h>

#include "backend.h"
#include "conn.h"

struct sock_state {
	const char *path;
	int pipeline;
	size_t vsize;
};

struct redis {
	struct conn c;
	int depth; /* requests per round trip */
};

static int rd_setup(const struct bench_cfg *cfg, void **state)
{
	struct sock_state *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->path = cfg->target;
	s->pipeline = cfg->pipeline > 1 ? cfg->pipeline : 1;
	s->vsize = cfg->vsize;
	*state = s;
	return 0;
}

static void rd_teardown(void *state)
{
	free(state);
}

static int rd_attach(void *state, bool bulk, void **h)
{
	struct sock_state *s = state;
	struct redis *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return -ENOMEM;
	err = conn_open(&r->c, s->path, 2 * s->vsize + (1u << 20));
	if (err) {
		free(r);
		return err;
	}
	r->depth = bulk ? 256 : s->pipeline;
	*h = r;
	return 0;
}

static void rd_detach(void *h)
{
	struct redis *r = h;

	conn_close(&r->c);
	free(r);
}

/* Read one reply. A bulk string goes to buf (if it fits, else -ENOBUFS),
 * its length to *vlen; an integer to *num. */
static int rd_reply(struct redis *r, void *buf, size_t buflen, size_t *vlen,
		    int64_t *num)
{
	char *line;
	size_t len;
	int err = conn_line(&r->c, &line, &len);
	long long n;

	if (err)
		return err;
	r->c.queued--;
	switch (line[0]) {
	case '+':
		return 0;
	case ':':
		if (num)
			*num = strtoll(line + 1, NULL, 10);
		return 0;
	case '$':
		n = strtoll(line + 1, NULL, 10);
		if (n < 0)
			return -ENOENT;
		if (vlen)
			*vlen = (size_t)n;
		if (buf && (size_t)n > buflen)
			return conn_bytes(&r->c, NULL, (size_t)n) ?: -ENOBUFS;
		return conn_bytes(&r->c, buf, (size_t)n);
	default:
		fprintf(stderr, "redis: %s\n", line);
		return -EIO;
	}
}

static int rd_flush(void *h)
{
	struct redis *r = h;
	int err = conn_send(&r->c);

	while (!err && r->c.queued > 0) {
		err = rd_reply(r, NULL, 0, NULL, NULL);
		if (err == -ENOENT) /* a nil reply is not the server failing */
			err = 0;
	}
	return err;
}

/* Append "*argc\r\n" and the arguments as bulk strings. */
static int rd_cmd(struct redis *r, int argc, const void *const *argv,
		  const size_t *lens)
{
	char hdr[32];
	size_t n;
	int err;

	hdr[0] = '*';
	n = 1 + conn_utoa(hdr + 1, (unsigned)argc);
	memcpy(hdr + n, "\r\n", 2);
	err = conn_put(&r->c, hdr, n + 2);
	for (int i = 0; i < argc && !err; i++) {
		hdr[0] = '$';
		n = 1 + conn_utoa(hdr + 1, lens[i]);
		memcpy(hdr + n, "\r\n", 2);
		err = conn_put(&r->c, hdr, n + 2);
		if (!err)
			err = conn_put(&r->c, argv[i], lens[i]);
		if (!err)
			err = conn_put(&r->c, "\r\n", 2);
	}
	r->c.queued++;
	return err;
}

/* 1: the request waits in the pipeline; 0: send it and read the reply. */
static int rd_queued(struct redis *r)
{
	if (r->depth <= 1)
		return 0;
	if (r->c.queued >= r->depth)
		return rd_flush(r) ?: 1;
	return 1;
}

static int rd_get(void *h, const uint8_t *key, void *buf, size_t buflen,
		  size_t *vlen)
{
	const void *argv[] = { "GET", key };
	const size_t lens[] = { 3, KEY_LEN };
	struct redis *r = h;
	int err = rd_cmd(r, 2, argv, lens), q;

	if (err || (q = rd_queued(r)))
		return err ?: (q < 0 ? q : 0);
	err = conn_send(&r->c);
	return err ?: rd_reply(r, buf, buflen, vlen, NULL);
}

static int rd_set(void *h, const uint8_t *key, const void *val, size_t vlen)
{
	const void *argv[] = { "SET", key, val };
	const size_t lens[] = { 3, KEY_LEN, vlen };
	struct redis *r = h;
	int err = rd_cmd(r, 3, argv, lens), q;

	if (err || (q = rd_queued(r)))
		return err ?: (q < 0 ? q : 0);
	err = conn_send(&r->c);
	return err ?: rd_reply(r, NULL, 0, NULL, NULL);
}

static int rd_incrby(struct redis *r, const uint8_t *key, int64_t delta,
		     int64_t *result)
{
	char num[24];
	const void *argv[] = { "INCRBY", key, num };
	size_t lens[] = { 6, KEY_LEN, 0 };
	int err, q;

	lens[2] = (size_t)snprintf(num, sizeof(num), "%" PRId64, delta);
	err = rd_cmd(r, 3, argv, lens);
	if (err || (q = rd_queued(r)))
		return err ?: (q < 0 ? q : 0);
	err = conn_send(&r->c);
	return err ?: rd_reply(r, NULL, 0, NULL, result);
}

static int rd_incr(void *h, const uint8_t *key, int64_t delta, int64_t *result)
{
	const void *argv[] = { "INCR", key };
	const size_t lens[] = { 4, KEY_LEN };
	struct redis *r = h;
	int err, q;

	if (delta != 1)
		return rd_incrby(r, key, delta, result);
	err = rd_cmd(r, 2, argv, lens);
	if (err || (q = rd_queued(r)))
		return err ?: (q < 0 ? q : 0);
	err = conn_send(&r->c);
	return err ?: rd_reply(r, NULL, 0, NULL, result);
}

static int rd_counter_init(void *h, const uint8_t *key)
{
	int64_t r;

	return rd_incrby(h, key, 0, &r);
}

static int rd_counter_read(void *h, const uint8_t *key, int64_t *value)
{
	struct redis *r = h;
	const int depth = r->depth;
	char buf[32];
	size_t len = 0;
	int err = rd_flush(r);

	r->depth = 1; /* this one needs its reply now */
	err = err ?: rd_get(h, key, buf, sizeof(buf) - 1, &len);
	r->depth = depth;
	if (err)
		return err;
	buf[len] = '\0';
	*value = strtoll(buf, NULL, 10);
	return 0;
}

/* used_memory from INFO memory, items from DBSIZE. */
static int rd_memory(void *state, void *h, struct bench_mem *m)
{
	const void *info[] = { "INFO", "memory" }, *dbsize[] = { "DBSIZE" };
	const size_t info_lens[] = { 4, 6 }, dbsize_lens[] = { 6 };
	struct redis *r = h;
	char buf[8192], *p;
	size_t len = 0;
	int64_t items = 0;
	int err;

	(void)state;
	err = rd_cmd(r, 2, info, info_lens) ?:
		      conn_send(&r->c)      ?:
		      rd_reply(r, buf, sizeof(buf) - 1, &len, NULL);
	if (err)
		return err;
	buf[len] = '\0';
	p = strstr(buf, "used_memory:");
	if (p)
		m->store_bytes = strtoull(p + 12, NULL, 10);
	err = rd_cmd(r, 1, dbsize, dbsize_lens) ?:
		      conn_send(&r->c)          ?:
		      rd_reply(r, NULL, 0, NULL, &items);
	m->items = (uint64_t)items;
	m->used_bytes = m->store_bytes;
	return err;
}

const struct backend bench_redis = {
	.name = "redis",
	.remote = true,
	.setup = rd_setup,
	.teardown = rd_teardown,
	.attach = rd_attach,
	.detach = rd_detach,
	.get = rd_get,
	.set = rd_set,
	.incr = rd_incr,
	.counter_init = rd_counter_init,
	.counter_read = rd_counter_read,
	.flush = rd_flush,
	.memory = rd_memory,
};
