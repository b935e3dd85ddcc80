/* SPDX-License-Identifier: MIT */
/*
 * conn.h - a buffered Unix-socket connection for the socket peers (Redis,
 * memcached): requests are appended to an output buffer and sent in one
 * write() by conn_send(); replies are read through an input buffer. Plain
 * POSIX sockets, no client library, so what is measured is the server and
 * the round trip, not a client's extras. Header-only: each peer includes it.
 */
#ifndef KVSHM_BENCH_CONN_H
#define KVSHM_BENCH_CONN_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct conn {
	int fd;
	char *out, *in;
	size_t out_len, out_cap;
	size_t in_pos, in_len, in_cap;
	int queued; /* requests sent or buffered whose replies are unread */
};

static int conn_open(struct conn *c, const char *path, size_t cap)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	memset(c, 0, sizeof(*c));
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int err = -errno;
		close(c->fd);
		return err;
	}
	c->out_cap = c->in_cap = cap;
	c->out = malloc(cap);
	c->in = malloc(cap);
	if (!c->out || !c->in) {
		free(c->out);
		free(c->in);
		close(c->fd);
		return -ENOMEM;
	}
	return 0;
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c->out);
	free(c->in);
}

static int conn_send(struct conn *c)
{
	for (size_t done = 0; done < c->out_len;) {
		ssize_t n = write(c->fd, c->out + done, c->out_len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EIO;
		done += (size_t)n;
	}
	c->out_len = 0;
	return 0;
}

/* Append len bytes; sends first if the buffer would overflow. */
static int conn_put(struct conn *c, const void *p, size_t len)
{
	if (c->out_len + len > c->out_cap) {
		int err = conn_send(c);
		if (err)
			return err;
		if (len >
		    c->out_cap) { /* larger than the buffer: straight out */
			for (size_t done = 0; done < len;) {
				ssize_t n = write(c->fd, (const char *)p + done,
						  len - done);
				if (n <= 0)
					return -EIO;
				done += (size_t)n;
			}
			return 0;
		}
	}
	memcpy(c->out + c->out_len, p, len);
	c->out_len += len;
	return 0;
}

/* Read more bytes into the input buffer (keeping the unread ones). */
static int conn_fill(struct conn *c)
{
	ssize_t n;

	if (c->in_pos > 0) {
		memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
		c->in_len -= c->in_pos;
		c->in_pos = 0;
	}
	if (c->in_len == c->in_cap)
		return -ENOBUFS;
	do
		n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return -EIO;
	c->in_len += (size_t)n;
	return 0;
}

/* The next line without its "\r\n" (NUL-terminated in place) in *line. */
static int conn_line(struct conn *c, char **line, size_t *len)
{
	for (;;) {
		char *start = c->in + c->in_pos;
		char *nl = memchr(start, '\n', c->in_len - c->in_pos);
		if (nl && nl > start && nl[-1] == '\r') {
			nl[-1] = '\0';
			*line = start;
			*len = (size_t)(nl - 1 - start);
			c->in_pos += *len + 2;
			return 0;
		}
		int err = conn_fill(c);
		if (err)
			return err;
	}
}

/* The next len bytes, copied to dst (if not NULL), then "\r\n". */
static int conn_bytes(struct conn *c, void *dst, size_t len)
{
	size_t done = 0;

	while (done < len + 2) {
		size_t avail = c->in_len - c->in_pos, take;
		if (!avail) {
			int err = conn_fill(c);
			if (err)
				return err;
			continue;
		}
		take = len + 2 - done < avail ? len + 2 - done : avail;
		if (dst && done < len)
			memcpy((char *)dst + done, c->in + c->in_pos,
			       take < len - done ? take : len - done);
		done += take;
		c->in_pos += take;
	}
	return 0;
}

/* Decimal digits of v into buf (not terminated); returns their count. */
static size_t conn_utoa(char *buf, unsigned long long v)
{
	char tmp[24];
	size_t n = 0;

	do
		tmp[n++] = (char)('0' + v % 10);
	while (v /= 10);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

#endif
