/* SPDX-License-Identifier: MIT */
/*
 * cli.c - command-line helpers shared by the kvshm tools (see cli.h).
 * Touches no store; only parses, formats and prints.
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include <kvshm.h>

/* Leading decimal digits of s into *out; *end is the first other character.
 * No sign, no spaces, at least one digit. */
static int parse_digits(const char *s, uint64_t *out, const char **end)
{
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	*end = s;
	return 0;
}

int cli_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGT";
	const char *end, *u;
	uint64_t v;
	unsigned shift = 0;
	int err = parse_digits(s, &v, &end);

	if (err)
		return err;
	if (*end) {
		u = strchr(units, toupper((unsigned char)*end));
		if (!u)
			return -EINVAL;
		shift = 10 * (unsigned)(u - units + 1);
		end++;
		if (strcmp(end, "") && strcmp(end, "B") && strcmp(end, "iB"))
			return -EINVAL;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = v << shift;
	return 0;
}

int cli_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	const char *end;
	uint64_t v;
	int err = parse_digits(s, &v, &end);

	if (err)
		return err;
	if (*end)
		return -EINVAL;
	if (v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int cli_parse_mode(const char *s, uint32_t *out)
{
	uint32_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '7')
			return -EINVAL;
		v = v * 8 + (uint32_t)(*s - '0');
		if (v > 07777)
			return -ERANGE;
	}
	*out = v;
	return 0;
}

char *cli_format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)bytes;
	size_t i = 0;

	if (bytes < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", bytes);
		return buf;
	}
	v /= 1024;
	while (v >= 1024 && i + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		i++;
	}
	snprintf(buf, len, "%.1f %s", v, units[i]);
	return buf;
}

int cli_store_dir_free(const char *name, char *dir, size_t len,
		       uint64_t *free_bytes)
{
	const char *base = name[0] == '/' ? name + 1 : name;
	const char *slash = strrchr(name, '/');
	struct statvfs vfs;
	int n;

	if (!strchr(base, '/'))
		n = snprintf(dir, len, "/dev/shm");
	else if (slash == name)
		n = snprintf(dir, len, "/");
	else
		n = snprintf(dir, len, "%.*s", (int)(slash - name), name);
	if (n < 0 || (size_t)n >= len)
		return -EINVAL;
	if (statvfs(dir, &vfs))
		return -errno;
	*free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	return 0;
}

/* One fprintf per message, so lines from several processes writing to the
 * same journal or terminal do not interleave mid-line. */
static void verror(const char *prefix, const char *fmt, va_list ap)
{
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	fprintf(stderr, "%s%s: %s\n", prefix ? prefix : "",
		program_invocation_short_name, msg);
}

void cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(NULL, fmt, ap);
	va_end(ap);
}

void cli_error_prefixed(const char *prefix, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(prefix, fmt, ap);
	va_end(ap);
}

void cli_store_error(const char *prefix, const char *name, const char *what,
		     int err)
{
	if (err == -ENOENT && what && !strcmp(what, "open"))
		cli_error_prefixed(prefix, "no such store: %s", name);
	else
		cli_error_prefixed(prefix, "%s: %s: %s", name, what,
				   kvshm_strerror(err));
}
