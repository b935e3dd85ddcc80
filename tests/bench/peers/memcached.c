/* SPDX-License-Identifier: MIT */
/*
 * memcached.c - the memcached peer of kvshm-bench: the text protocol over a
 * Unix socket, one connection per process ("get", "set", "incr"; counters
 * are decimal strings, created with "set" first). With --pipeline N, N
 * requests go out in one write and their replies are read together;
 * otherwise every operation is one round trip. compare starts a private
 * memcached (-s SOCKET, enough -m to never evict) and passes --target.
 */
#include <inttypes.h>
#include <stdio.h>

#include "backend.h"
#include "conn.h"

struct mc_state {
	const char *path;
	int pipeline;
	size_t vsize;
};

struct mc {
	struct conn c;
	int depth;
};

static int mc_setup(const struct bench_cfg *cfg, void **state)
{
	struct mc_state *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->path = cfg->target;
	s->pipeline = cfg->pipeline > 1 ? cfg->pipeline : 1;
	s->vsize = cfg->vsize;
	*state = s;
	return 0;
}

static void mc_teardown(void *state)
{
	free(state);
}

static int mc_attach(void *state, bool bulk, void **h)
{
	struct mc_state *s = state;
	struct mc *m = calloc(1, sizeof(*m));
	int err;

	if (!m)
		return -ENOMEM;
	err = conn_open(&m->c, s->path, 2 * s->vsize + (1u << 20));
	if (err) {
		free(m);
		return err;
	}
	m->depth = bulk ? 256 : s->pipeline;
	*h = m;
	return 0;
}

static void mc_detach(void *h)
{
	struct mc *m = h;

	conn_close(&m->c);
	free(m);
}

/* Read one reply: "VALUE k f n" + data + "END", "END", "STORED", a number
 * (incr), "NOT_FOUND". */
static int mc_reply(struct mc *m, void *buf, size_t buflen, size_t *vlen,
		    int64_t *num)
{
	char *line;
	size_t len;
	int err = conn_line(&m->c, &line, &len);

	if (err)
		return err;
	m->c.queued--;
	if (!strncmp(line, "VALUE ", 6)) {
		char *sp = strrchr(line, ' ');
		size_t n = strtoull(sp + 1, NULL, 10);
		if (vlen)
			*vlen = n;
		if (buf && n > buflen)
			err = conn_bytes(&m->c, NULL, n) ?: -ENOBUFS;
		else
			err = conn_bytes(&m->c, buf, n);
		if (!err || err == -ENOBUFS) {
			int e2 = conn_line(&m->c, &line, &len);
			if (e2 || strcmp(line, "END"))
				return e2 ?: -EIO;
		}
		return err;
	}
	if (!strcmp(line, "END") || !strcmp(line, "NOT_FOUND"))
		return -ENOENT;
	if (!strcmp(line, "STORED"))
		return 0;
	if (line[0] >= '0' && line[0] <= '9') {
		if (num)
			*num = strtoll(line, NULL, 10);
		return 0;
	}
	fprintf(stderr, "memcached: %s\n", line);
	return -EIO;
}

static int mc_flush(void *h)
{
	struct mc *m = h;
	int err = conn_send(&m->c);

	while (!err && m->c.queued > 0) {
		err = mc_reply(m, NULL, 0, NULL, NULL);
		if (err == -ENOENT)
			err = 0;
	}
	return err;
}

/* Queue the request in parts; then either leave it in the pipeline (1) or
 * send it (0). */
static int mc_queue(struct mc *m, const char *head, size_t hlen,
		    const void *data, size_t dlen)
{
	int err = conn_put(&m->c, head, hlen);

	if (!err && data)
		err = conn_put(&m->c, data, dlen) ?: conn_put(&m->c, "\r\n", 2);
	m->c.queued++;
	if (err)
		return err;
	if (m->depth > 1) {
		if (m->c.queued >= m->depth)
			return mc_flush(m) ?: 1;
		return 1;
	}
	return conn_send(&m->c);
}

/* "cmd <key>" followed by tail, into buf; returns the length. */
static size_t mc_head(char *buf, const char *cmd, const uint8_t *key,
		      const char *tail, size_t tlen)
{
	size_t n = strlen(cmd);

	memcpy(buf, cmd, n);
	memcpy(buf + n, key, KEY_LEN);
	memcpy(buf + n + KEY_LEN, tail, tlen);
	return n + KEY_LEN + tlen;
}

static int mc_get(void *h, const uint8_t *key, void *buf, size_t buflen,
		  size_t *vlen)
{
	char head[64];
	int q = mc_queue(h, head, mc_head(head, "get ", key, "\r\n", 2), NULL,
			 0);

	if (q)
		return q < 0 ? q : 0;
	return mc_reply(h, buf, buflen, vlen, NULL);
}

static int mc_set(void *h, const uint8_t *key, const void *val, size_t vlen)
{
	char head[64], tail[40];
	size_t t;
	int q;

	memcpy(tail, " 0 0 ", 5);
	t = 5 + conn_utoa(tail + 5, vlen);
	memcpy(tail + t, "\r\n", 2);
	q = mc_queue(h, head, mc_head(head, "set ", key, tail, t + 2), val,
		     vlen);
	if (q)
		return q < 0 ? q : 0;
	return mc_reply(h, NULL, 0, NULL, NULL);
}

static int mc_incr(void *h, const uint8_t *key, int64_t delta, int64_t *result)
{
	char head[64], tail[32];
	size_t t;
	int q;

	if (delta < 0)
		return -EINVAL; /* memcached has "decr" for that; unused */
	tail[0] = ' ';
	t = 1 + conn_utoa(tail + 1, (unsigned long long)delta);
	memcpy(tail + t, "\r\n", 2);
	q = mc_queue(h, head, mc_head(head, "incr ", key, tail, t + 2), NULL,
		     0);
	if (q)
		return q < 0 ? q : 0;
	return mc_reply(h, NULL, 0, NULL, result);
}

static int mc_counter_init(void *h, const uint8_t *key)
{
	return mc_set(h, key, "0", 1);
}

static int mc_counter_read(void *h, const uint8_t *key, int64_t *value)
{
	struct mc *m = h;
	const int depth = m->depth;
	char buf[32];
	size_t len = 0;
	int err = mc_flush(m);

	m->depth = 1; /* this one needs its reply now */
	err = err ?: mc_get(h, key, buf, sizeof(buf) - 1, &len);
	m->depth = depth;
	if (err)
		return err;
	buf[len] = '\0';
	*value = strtoll(buf, NULL, 10);
	return 0;
}

/* "stats": bytes (items, headers included), curr_items, hash_bytes. */
static int mc_memory(void *state, void *h, struct bench_mem *mem)
{
	struct mc *m = h;
	char *line;
	size_t len;
	int err;

	(void)state;
	err = conn_put(&m->c, "stats\r\n", 7) ?: conn_send(&m->c);
	while (!err) {
		err = conn_line(&m->c, &line, &len);
		if (err || !strcmp(line, "END"))
			break;
		if (!strncmp(line, "STAT bytes ", 11))
			mem->used_bytes = strtoull(line + 11, NULL, 10);
		else if (!strncmp(line, "STAT curr_items ", 16))
			mem->items = strtoull(line + 16, NULL, 10);
		else if (!strncmp(line, "STAT hash_bytes ", 16))
			mem->index_bytes = strtoull(line + 16, NULL, 10);
		else if (!strncmp(line, "STAT evictions ", 15))
			mem->evictions = strtoull(line + 15, NULL, 10);
	}
	mem->store_bytes = mem->used_bytes + mem->index_bytes;
	return err;
}

const struct backend bench_memcached = {
	.name = "memcached",
	.remote = true,
	.setup = mc_setup,
	.teardown = mc_teardown,
	.attach = mc_attach,
	.detach = mc_detach,
	.get = mc_get,
	.set = mc_set,
	.incr = mc_incr,
	.counter_init = mc_counter_init,
	.counter_read = mc_counter_read,
	.flush = mc_flush,
	.memory = mc_memory,
};
