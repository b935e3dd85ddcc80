/* SPDX-License-Identifier: MIT */
/*
 * kvshm-stat.c - inspect a live store without disturbing it: a summary,
 * JSON, Prometheus text, a live rate view, key listing, one value, the
 * consistency check, and a list of the host's stores. Uses <kvshm.h> and
 * cli.h only, and opens every store with KVSHM_RDONLY, so it never writes
 * to a segment and never takes a lock a writer waits for.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <kvshm.h>

#include "cli.h"

#define SCAN_PAGE 256        /* keys per kvshm_scan() call */
#define LIVE_HEADER_EVERY 20 /* live mode: repeat the header this often */
#define CHECK_REPORT_BYTES (64 * 1024)
#define SHM_DIR "/dev/shm"

enum mode {
	MODE_SUMMARY,
	MODE_JSON,
	MODE_PROMETHEUS,
	MODE_LIVE,
	MODE_KEYS,
	MODE_GET,
	MODE_CHECK,
	MODE_LIST,
};

struct args {
	enum mode mode;
	bool mode_set;
	const char *name;   /* the store, or the --list directory */
	const char *prefix; /* --keys */
	const char *key;    /* --get */
	const char *output; /* -o */
	uint64_t limit;     /* --keys --limit, 0 = all */
	double interval_s;  /* -i */
};

/* ---- usage --------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: kvshm-stat [OPTION]... NAME\n"
		"       kvshm-stat --list [DIR]\n"
		"Inspect a kvshm store read-only, without disturbing its users.\n"
		"NAME or /NAME is a POSIX shared-memory store (/dev/shm/NAME);\n"
		"a name with more '/' is a file path.\n"
		"\n"
		"  (no option)          a readable summary of the store\n"
		"  -j, --json           the summary as one JSON object\n"
		"  -p, --prometheus     the summary in the Prometheus text format\n"
		"      --format=FMT     text, json or prometheus\n"
		"  -o, --output=FILE    write the summary to FILE atomically\n"
		"                       (temporary file + rename)\n"
		"  -i, --interval=SEC   live mode: one line of rates every SEC seconds\n"
		"                       until SIGINT or SIGTERM\n"
		"  -k, --keys[=PREFIX]  list keys (a second operand is the prefix too)\n"
		"  -n, --limit=N        with --keys: print at most N keys\n"
		"  -g, --get=KEY        print KEY's value\n"
		"  -c, --check          run the consistency check (exit 1 if it fails)\n"
		"  -l, --list           list the stores in /dev/shm (or in DIR)\n"
		"  -h, --help           show this help and exit\n"
		"  -V, --version        show the library and layout versions and exit\n"
		"\n"
		"Exit status: 0 success, 1 failure, 2 bad command line.\n"
		"See kvshm-stat(1).\n");
}

static int usage_error(const char *msg)
{
	cli_error("%s", msg);
	fprintf(stderr, "Try 'kvshm-stat --help' for more information.\n");
	return CLI_EXIT_USAGE;
}

/* ---- escaping ------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence (2..4 bytes) at p, or 0. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
	size_t n;
	uint32_t cp;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, cp = p[0] & 0x07;
	else
		return 0;
	if (left < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0; /* overlong or surrogate */
	return n;
}

/* Printable ASCII except '\' as is, '\' as "\\", anything else as \xHH:
 * one line, unambiguous, safe on a terminal. */
static void put_escaped(FILE *f, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\\')
			fputs("\\\\", f);
		else if (p[i] >= 0x20 && p[i] < 0x7f)
			putc(p[i], f);
		else
			fprintf(f, "\\x%02x", p[i]);
	}
}

/* Text a terminal shows as it is: printable ASCII, tab, newline, CR, and
 * valid UTF-8. */
static bool is_text(const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len;) {
		size_t n = 1;
		if (p[i] >= 0x80)
			n = utf8_seq(p + i, len - i);
		else if ((p[i] < 0x20 && p[i] != '\t' && p[i] != '\n' &&
			  p[i] != '\r') ||
			 p[i] == 0x7f)
			n = 0;
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* A JSON string; invalid UTF-8 bytes become \u00XX (read as Latin-1). */
static void put_json_string(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s);

	putc('"', f);
	for (size_t i = 0; i < len;) {
		size_t n = p[i] >= 0x80 ? utf8_seq(p + i, len - i) : 1;
		if (p[i] == '"' || p[i] == '\\') {
			fprintf(f, "\\%c", p[i]);
		} else if (p[i] < 0x20 || p[i] == 0x7f || n == 0) {
			fprintf(f, "\\u%04x", p[i]);
			n = 1;
		} else {
			fwrite(p + i, 1, n, f);
		}
		i += n;
	}
	putc('"', f);
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void put_label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '"')
			fputs("\\\"", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			putc(*s, f);
	}
}

/* ---- small helpers ------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A duration in ms as "3d 04h 05m", "2h 03m 14s", "5m 09s", "12.3s". */
static char *format_duration(int64_t ms, char *buf, size_t len)
{
	uint64_t s;

	if (ms < 0)
		ms = 0;
	s = (uint64_t)ms / 1000;
	if (s < 60)
		snprintf(buf, len, "%.1fs", (double)ms / 1000);
	else if (s < 3600)
		snprintf(buf, len, "%" PRIu64 "m %02" PRIu64 "s", s / 60,
			 s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%" PRIu64 "h %02" PRIu64 "m %02" PRIu64 "s",
			 s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(buf, len, "%" PRIu64 "d %02" PRIu64 "h %02" PRIu64 "m",
			 s / 86400, s / 3600 % 24, s / 60 % 60);
	return buf;
}

static char *format_utc(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) ||
	    !strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, len, "?");
	return buf;
}

static double pct(uint64_t part, uint64_t whole)
{
	return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

static int open_store(const char *name, struct kvshm **kv)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	int err;

	o.flags = KVSHM_RDONLY;
	err = kvshm_open(name, &o, kv);
	if (err)
		cli_store_error(NULL, name, "open", err);
	return err;
}

/* Open the store and take one stats snapshot. */
static int snapshot(const char *name, struct kvshm **kv, struct kvshm_stats *st)
{
	int err = open_store(name, kv);

	if (err)
		return err;
	err = kvshm_stats(*kv, st);
	if (err) {
		cli_store_error(NULL, name, "stats", err);
		kvshm_close(*kv);
		*kv = NULL;
	}
	return err;
}

/* ---- the summary, as text ------------------------------------------------ */

#define ROW(f, label, ...)                                                     \
	do {                                                                   \
		fprintf(f, "  %-22s ", label);                                 \
		fprintf(f, __VA_ARGS__);                                       \
		putc('\n', f);                                                 \
	} while (0)

static void text_store(FILE *f, const char *name, const struct kvshm_stats *st)
{
	const char *base = name[0] == '/' ? name + 1 : name; /* kvshm.h */
	char a[64], b[64];
	int64_t now = now_ms();

	fprintf(f, "store\n");
	if (strchr(base, '/'))
		ROW(f, "name", "%s", name);
	else
		ROW(f, "name", "%s (%s/%s)", name, SHM_DIR, base);
	ROW(f, "library", "kvshm %s, layout version %u", kvshm_version(),
	    kvshm_layout_version());
	ROW(f, "uptime", "%s (created %s)",
	    format_duration(now - (int64_t)st->created_at_ms, a, sizeof(a)),
	    format_utc((int64_t)st->created_at_ms, b, sizeof(b)));
	ROW(f, "eviction", "%s",
	    st->noevict ? "off (NOEVICT: full -> ENOSPC)" : "on");
	if (st->default_ttl_ms)
		ROW(f, "default TTL", "%s",
		    format_duration((int64_t)st->default_ttl_ms, a, sizeof(a)));
	else
		ROW(f, "default TTL", "never expire");
	ROW(f, "limits", "keys up to %" PRIu64 " B, values up to %s",
	    st->max_key_bytes,
	    cli_format_size(st->max_value_bytes, a, sizeof(a)));
	ROW(f, "lock stripes", "%" PRIu64, st->stripes);
	ROW(f, "attached processes",
	    "unknown (not tracked by the library yet)");
}

static void text_memory(FILE *f, const struct kvshm_stats *st)
{
	char a[32], b[32];

	fprintf(f, "memory\n");
	ROW(f, "size (arena)", "%s (%" PRIu64 " bytes)",
	    cli_format_size(st->arena_bytes, a, sizeof(a)), st->arena_bytes);
	ROW(f, "data area",
	    "%s (%.1f%% of the arena; the rest is the index "
	    "and tables)",
	    cli_format_size(st->data_bytes, a, sizeof(a)),
	    pct(st->data_bytes, st->arena_bytes));
	ROW(f, "used", "%s (%.1f%% of the data area)",
	    cli_format_size(st->used_bytes, a, sizeof(a)),
	    pct(st->used_bytes, st->data_bytes));
	ROW(f, "free", "%s", cli_format_size(st->free_bytes, a, sizeof(a)));
	ROW(f, "largest free extent",
	    "%s (%" PRIu64 " of %" PRIu64 " allocation segments of %s free)",
	    cli_format_size(st->largest_free_bytes, a, sizeof(a)),
	    st->free_segments,
	    st->segment_bytes ? st->data_bytes / st->segment_bytes : 0,
	    cli_format_size(st->segment_bytes, b, sizeof(b)));
	ROW(f, "items", "%" PRIu64 " of %" PRIu64 " (%.1f%% of capacity)",
	    st->items, st->max_items, pct(st->items, st->max_items));
}

static void text_operations(FILE *f, const struct kvshm_stats *st)
{
	fprintf(f, "operations\n");
	if (st->hits + st->misses)
		ROW(f, "hit ratio",
		    "%.2f%% (%" PRIu64 " hits, %" PRIu64 " misses)",
		    pct(st->hits, st->hits + st->misses), st->hits, st->misses);
	else
		ROW(f, "hit ratio", "- (no lookups yet)");
	ROW(f, "gets", "%" PRIu64, st->gets);
	ROW(f, "sets", "%" PRIu64, st->sets);
	ROW(f, "deletes", "%" PRIu64, st->deletes);
	ROW(f, "incrs", "%" PRIu64, st->incrs);
	ROW(f, "clears", "%" PRIu64, st->clears);
	ROW(f, "evictions", "%" PRIu64 " (live items removed to make room)",
	    st->evictions);
	ROW(f, "expirations",
	    "%" PRIu64 " (%" PRIu64 " by sweep/janitor, %" PRIu64 " lazily)",
	    st->expired, st->expired_swept,
	    st->expired >= st->expired_swept ? st->expired - st->expired_swept :
					       0);
	ROW(f, "store failures",
	    "%" PRIu64 " (no space %" PRIu64 ", index window full %" PRIu64
	    ", too big %" PRIu64 ")",
	    st->store_failures, st->fail_nospace, st->fail_index_full,
	    st->fail_too_big);
	ROW(f, "segments reclaimed",
	    "%" PRIu64 " (%" PRIu64 " items relocated, not evicted)",
	    st->segments_reclaimed, st->items_relocated);
}

static void text_locks(FILE *f, const struct kvshm_stats *st)
{
	char a[32];
	int64_t now = now_ms();

	fprintf(f, "locks\n");
	ROW(f, "contended", "%" PRIu64 " acquisitions had to wait",
	    st->lock_contended);
	ROW(f, "owner-died recoveries", "%" PRIu64, st->lock_recoveries);
	ROW(f, "read retries", "%" PRIu64 " (%" PRIu64 " fell back to a lock)",
	    st->read_retries, st->read_fallbacks);
	fprintf(f, "janitor\n");
	if (st->janitor_alive && st->janitor_heartbeat_ms)
		ROW(f, "status",
		    "alive, pid %" PRIu64 ", last heartbeat %s ago",
		    st->janitor_pid,
		    format_duration(now - (int64_t)st->janitor_heartbeat_ms, a,
				    sizeof(a)));
	else if (st->janitor_alive)
		ROW(f, "status", "alive, pid %" PRIu64 ", no heartbeat yet",
		    st->janitor_pid);
	else if (st->janitor_heartbeat_ms)
		ROW(f, "status", "none (last heartbeat %s ago)",
		    format_duration(now - (int64_t)st->janitor_heartbeat_ms, a,
				    sizeof(a)));
	else
		ROW(f, "status", "none");
}

static void print_text(FILE *f, const char *name, const struct kvshm_stats *st)
{
	text_store(f, name, st);
	text_memory(f, st);
	text_operations(f, st);
	text_locks(f, st);
}

/* ---- the summary, as JSON ------------------------------------------------ */

static void json_u64(FILE *f, const char *key, uint64_t v)
{
	fprintf(f, ",\n  \"%s\": %" PRIu64, key, v);
}

static void print_json(FILE *f, const char *name, const struct kvshm_stats *st)
{
	int64_t now = now_ms();
	const struct {
		const char *key;
		uint64_t v;
	} fields[] = {
		{ "arena_bytes", st->arena_bytes },
		{ "data_bytes", st->data_bytes },
		{ "segment_bytes", st->segment_bytes },
		{ "max_items", st->max_items },
		{ "max_key_bytes", st->max_key_bytes },
		{ "max_value_bytes", st->max_value_bytes },
		{ "default_ttl_ms", st->default_ttl_ms },
		{ "stripes", st->stripes },
		{ "noevict", st->noevict },
		{ "created_at_ms", st->created_at_ms },
		{ "items", st->items },
		{ "used_bytes", st->used_bytes },
		{ "free_bytes", st->free_bytes },
		{ "free_segments", st->free_segments },
		{ "largest_free_bytes", st->largest_free_bytes },
		{ "gets", st->gets },
		{ "hits", st->hits },
		{ "misses", st->misses },
		{ "sets", st->sets },
		{ "deletes", st->deletes },
		{ "incrs", st->incrs },
		{ "clears", st->clears },
		{ "evictions", st->evictions },
		{ "expired", st->expired },
		{ "expired_swept", st->expired_swept },
		{ "expired_lazily", st->expired >= st->expired_swept ?
					    st->expired - st->expired_swept :
					    0 },
		{ "store_failures", st->store_failures },
		{ "fail_nospace", st->fail_nospace },
		{ "fail_index_full", st->fail_index_full },
		{ "fail_too_big", st->fail_too_big },
		{ "segments_reclaimed", st->segments_reclaimed },
		{ "items_relocated", st->items_relocated },
		{ "lock_contended", st->lock_contended },
		{ "lock_recoveries", st->lock_recoveries },
		{ "read_retries", st->read_retries },
		{ "read_fallbacks", st->read_fallbacks },
	};

	fprintf(f, "{\n  \"name\": ");
	put_json_string(f, name);
	fprintf(f, ",\n  \"library_version\": ");
	put_json_string(f, kvshm_version());
	fprintf(f, ",\n  \"layout_version\": %u", kvshm_layout_version());
	fprintf(f, ",\n  \"uptime_ms\": %" PRId64,
		now > (int64_t)st->created_at_ms ?
			now - (int64_t)st->created_at_ms :
			0);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		json_u64(f, fields[i].key, fields[i].v);
	if (st->hits + st->misses)
		fprintf(f, ",\n  \"hit_ratio\": %.6f",
			(double)st->hits / (double)(st->hits + st->misses));
	else
		fprintf(f, ",\n  \"hit_ratio\": null");
	fprintf(f,
		",\n  \"janitor\": {\"alive\": %s, \"pid\": %" PRIu64
		", \"started_ms\": %" PRIu64 ", \"heartbeat_ms\": %" PRIu64,
		st->janitor_alive ? "true" : "false", st->janitor_pid,
		st->janitor_started_ms, st->janitor_heartbeat_ms);
	if (st->janitor_heartbeat_ms)
		fprintf(f, ", \"heartbeat_age_ms\": %" PRId64 "}",
			now - (int64_t)st->janitor_heartbeat_ms);
	else
		fprintf(f, ", \"heartbeat_age_ms\": null}");
	/* the library does not track attached processes yet */
	fprintf(f, ",\n  \"attached_processes\": null\n}\n");
}

/* ---- the summary, in the Prometheus text format -------------------------- */

struct prom_ctx {
	FILE *f;
	const char *name;
};

static void prom_head(const struct prom_ctx *p, const char *metric,
		      const char *type, const char *help)
{
	fprintf(p->f, "# HELP kvshm_%s %s\n# TYPE kvshm_%s %s\n", metric, help,
		metric, type);
}

/* One sample; extra is "" or ",label=\"value\"". */
static void prom_sample(const struct prom_ctx *p, const char *metric,
			const char *extra, double v)
{
	fprintf(p->f, "kvshm_%s{segment=\"", metric);
	put_label_value(p->f, p->name);
	/* counts print whole; seconds made from milliseconds keep three
	 * decimals, which is exact */
	if (v == (double)(uint64_t)v)
		fprintf(p->f, "\"%s} %.0f\n", extra, v);
	else
		fprintf(p->f, "\"%s} %.3f\n", extra, v);
}

static void prom_one(const struct prom_ctx *p, const char *metric,
		     const char *type, const char *help, double v)
{
	prom_head(p, metric, type, help);
	prom_sample(p, metric, "", v);
}

static void prom_gauges(const struct prom_ctx *p, const struct kvshm_stats *st)
{
	prom_one(p, "arena_bytes", "gauge", "Size of the whole segment.",
		 (double)st->arena_bytes);
	prom_one(p, "data_bytes", "gauge",
		 "Part of the segment that holds items.",
		 (double)st->data_bytes);
	prom_one(p, "used_bytes", "gauge",
		 "Bytes of stored items, headers included.",
		 (double)st->used_bytes);
	prom_one(p, "free_bytes", "gauge",
		 "Data area bytes not holding linked items.",
		 (double)st->free_bytes);
	prom_one(p, "largest_free_bytes", "gauge",
		 "Largest item that fits without reclaiming anything.",
		 (double)st->largest_free_bytes);
	prom_one(p, "free_allocation_segments", "gauge",
		 "Fully free allocation segments.", (double)st->free_segments);
	prom_one(p, "items", "gauge",
		 "Items stored (live and expired but not yet reclaimed).",
		 (double)st->items);
	prom_one(p, "max_items", "gauge", "Index capacity in items.",
		 (double)st->max_items);
	prom_one(p, "max_value_bytes", "gauge",
		 "Largest value the store takes.", (double)st->max_value_bytes);
	prom_one(p, "noevict", "gauge",
		 "1 if the store never evicts (full means ENOSPC).",
		 (double)st->noevict);
	prom_one(p, "start_time_seconds", "gauge",
		 "When the store was created, Unix time.",
		 (double)st->created_at_ms / 1000);
}

static void prom_counters(const struct prom_ctx *p,
			  const struct kvshm_stats *st)
{
	uint64_t lazy = st->expired >= st->expired_swept ?
				st->expired - st->expired_swept :
				0;

	prom_one(p, "gets_total", "counter", "Lookups.", (double)st->gets);
	prom_one(p, "hits_total", "counter", "Lookups that found the key.",
		 (double)st->hits);
	prom_one(p, "misses_total", "counter",
		 "Lookups that did not find the key.", (double)st->misses);
	prom_one(p, "sets_total", "counter", "Writes.", (double)st->sets);
	prom_one(p, "deletes_total", "counter", "Deletes.",
		 (double)st->deletes);
	prom_one(p, "incrs_total", "counter", "Counter increments.",
		 (double)st->incrs);
	prom_one(p, "clears_total", "counter", "Whole-store clears.",
		 (double)st->clears);
	prom_one(p, "evictions_total", "counter",
		 "Live items removed to make room.", (double)st->evictions);
	prom_head(
		p, "expired_total", "counter",
		"Expired items reclaimed, by cause: sweep (the janitor) or lazy "
		"(writers and the cleaner).");
	prom_sample(p, "expired_total", ",cause=\"sweep\"",
		    (double)st->expired_swept);
	prom_sample(p, "expired_total", ",cause=\"lazy\"", (double)lazy);
	prom_head(p, "store_failures_total", "counter",
		  "Writes that failed for lack of room, by reason.");
	prom_sample(p, "store_failures_total", ",reason=\"nospace\"",
		    (double)st->fail_nospace);
	prom_sample(p, "store_failures_total", ",reason=\"index_full\"",
		    (double)st->fail_index_full);
	prom_sample(p, "store_failures_total", ",reason=\"too_big\"",
		    (double)st->fail_too_big);
	prom_one(p, "segments_reclaimed_total", "counter",
		 "Allocation segments emptied for reuse.",
		 (double)st->segments_reclaimed);
	prom_one(p, "items_relocated_total", "counter",
		 "Recently read items moved instead of evicted.",
		 (double)st->items_relocated);
	prom_one(p, "lock_contended_total", "counter",
		 "Lock acquisitions that had to wait.",
		 (double)st->lock_contended);
	prom_one(p, "lock_recoveries_total", "counter",
		 "Locks taken over from a dead owner and repaired.",
		 (double)st->lock_recoveries);
	prom_one(p, "read_retries_total", "counter",
		 "Optimistic reads retried.", (double)st->read_retries);
	prom_one(p, "read_fallbacks_total", "counter",
		 "Optimistic reads that fell back to a lock.",
		 (double)st->read_fallbacks);
}

static void print_prometheus(FILE *f, const char *name,
			     const struct kvshm_stats *st)
{
	const struct prom_ctx p = { f, name };
	char extra[96];

	prom_head(&p, "build_info", "gauge",
		  "Always 1; the labels name the library and layout versions.");
	snprintf(extra, sizeof(extra), ",version=\"%s\",layout_version=\"%u\"",
		 kvshm_version(), kvshm_layout_version());
	prom_sample(&p, "build_info", extra, 1);
	prom_gauges(&p, st);
	prom_counters(&p, st);
	prom_one(&p, "janitor_up", "gauge",
		 "1 if a janitor process holds the role.",
		 (double)st->janitor_alive);
	prom_one(&p, "janitor_heartbeat_timestamp_seconds", "gauge",
		 "Last janitor heartbeat, Unix time (0 if none).",
		 (double)st->janitor_heartbeat_ms / 1000);
}

/* ---- writing a file atomically ------------------------------------------- */

typedef void (*render_fn)(FILE *f, const char *name,
			  const struct kvshm_stats *st);

/* Write the output to a temporary file next to path, then rename() it over
 * path, so a reader (node_exporter's textfile collector) sees the old file
 * or the new one, never half of one. The temporary name starts with '.' and
 * does not end in ".prom", so the collector never picks it up. */
static int write_atomically(const char *path, render_fn render,
			    const char *name, const struct kvshm_stats *st)
{
	const char *slash = strrchr(path, '/');
	size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
	size_t tlen = strlen(path) + 16;
	char *tmp = malloc(tlen);
	FILE *f;
	int fd, err = 0;

	if (!tmp)
		return -ENOMEM;
	snprintf(tmp, tlen, "%.*s.%s.XXXXXX", (int)dirlen, path, path + dirlen);
	fd = mkstemp(tmp);
	if (fd < 0) {
		err = -errno;
		goto free_tmp;
	}
	/* mkstemp makes it 0600; the collector usually runs as another user */
	if (fchmod(fd, 0644) || !(f = fdopen(fd, "w"))) {
		err = -errno;
		close(fd);
		goto unlink_tmp;
	}
	render(f, name, st);
	if (fflush(f) || ferror(f) || fsync(fileno(f)))
		err = errno ? -errno : -EIO;
	if (fclose(f) && !err)
		err = -errno;
	if (!err && rename(tmp, path))
		err = -errno;
unlink_tmp:
	if (err)
		unlink(tmp);
free_tmp:
	free(tmp);
	return err;
}

static int cmd_summary(const struct args *a)
{
	static const render_fn renders[] = {
		[MODE_SUMMARY] = print_text,
		[MODE_JSON] = print_json,
		[MODE_PROMETHEUS] = print_prometheus,
	};
	render_fn render = renders[a->mode];
	struct kvshm_stats st;
	struct kvshm *kv;
	int err = snapshot(a->name, &kv, &st);

	if (err)
		return CLI_EXIT_FAILURE;
	kvshm_close(kv);
	if (!a->output) {
		render(stdout, a->name, &st);
		return CLI_EXIT_OK;
	}
	err = write_atomically(a->output, render, a->name, &st);
	if (err) {
		cli_error("%s: %s", a->output, strerror(-err));
		return CLI_EXIT_FAILURE;
	}
	return CLI_EXIT_OK;
}

/* ---- live mode ----------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* SIGINT/SIGTERM end the live mode; no SA_RESTART, so they cut the sleep
 * short. */
static void catch_stop_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

static void sleep_s(double s)
{
	struct timespec ts;

	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL); /* EINTR: the caller checks stop_requested */
}

/* Counters can only go backwards if the store was resized (new segment,
 * new counters): show 0 then rather than a huge rate. */
static double rate(uint64_t now, uint64_t before, double dt)
{
	return now >= before && dt > 0 ? (double)(now - before) / dt : 0;
}

static void live_header(void)
{
	printf("%-8s %10s %10s %6s %10s %10s %9s %9s\n", "time", "gets/s",
	       "sets/s", "hit%", "items", "used", "evict/s", "expired/s");
}

static void live_line(const struct kvshm_stats *cur,
		      const struct kvshm_stats *prev, double dt)
{
	uint64_t gets = cur->hits + cur->misses;
	uint64_t pgets = prev->hits + prev->misses;
	char hit[16], used[32], when[16];
	time_t t = time(NULL);
	struct tm tm;

	if (gets > pgets && cur->hits >= prev->hits)
		snprintf(hit, sizeof(hit), "%.1f",
			 pct(cur->hits - prev->hits, gets - pgets));
	else
		snprintf(hit, sizeof(hit), "-");
	if (!localtime_r(&t, &tm) ||
	    !strftime(when, sizeof(when), "%H:%M:%S", &tm))
		snprintf(when, sizeof(when), "-");
	printf("%-8s %10.0f %10.0f %6s %10" PRIu64 " %10s %9.0f %9.0f\n", when,
	       rate(gets, pgets, dt), rate(cur->sets, prev->sets, dt), hit,
	       cur->items, cli_format_size(cur->used_bytes, used, sizeof(used)),
	       rate(cur->evictions, prev->evictions, dt),
	       rate(cur->expired, prev->expired, dt));
}

static int cmd_live(const struct args *a)
{
	struct kvshm_stats prev, cur;
	struct kvshm *kv;
	double t0, t1;
	unsigned lines = 0;
	int err = snapshot(a->name, &kv, &prev);

	if (err)
		return CLI_EXIT_FAILURE;
	catch_stop_signals();
	t0 = mono_s();
	while (!stop_requested) {
		sleep_s(a->interval_s);
		if (stop_requested)
			break;
		err = kvshm_stats(kv, &cur);
		if (err) {
			cli_store_error(NULL, a->name, "stats", err);
			break;
		}
		t1 = mono_s();
		if (lines++ % LIVE_HEADER_EVERY == 0)
			live_header();
		live_line(&cur, &prev, t1 - t0);
		if (fflush(stdout) || ferror(stdout)) {
			err = -EIO;
			break;
		}
		prev = cur;
		t0 = t1;
	}
	kvshm_close(kv);
	return err ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

/* ---- --keys -------------------------------------------------------------- */

static char *format_ttl(int64_t ttl_ms, char *buf, size_t len)
{
	if (ttl_ms < 0)
		snprintf(buf, len, "-");
	else
		format_duration(ttl_ms, buf, len);
	return buf;
}

static int print_key(const void *key, size_t klen,
		     const struct kvshm_item *item, void *ctx)
{
	char ttl[32];

	(void)ctx;
	printf("%10zu %12s %10" PRIu32 " %-7s ", item->value_len,
	       format_ttl(item->ttl_ms, ttl, sizeof(ttl)), item->flags,
	       item->counter ? "counter" : "value");
	put_escaped(stdout, key, klen);
	putc('\n', stdout);
	return ferror(stdout) ? -EIO : 0;
}

/* Page through the keys SCAN_PAGE at a time: every kvshm_scan() call is
 * short and holds no lock while we print, so even a million keys never
 * hold anyone up. */
static int cmd_keys(const struct args *a)
{
	const char *prefix = a->prefix ? a->prefix : "";
	uint64_t cursor = 0, printed = 0;
	struct kvshm *kv;
	int n, err = open_store(a->name, &kv);

	if (err)
		return CLI_EXIT_FAILURE;
	printf("%10s %12s %10s %-7s %s\n", "SIZE", "TTL", "FLAGS", "TYPE",
	       "KEY");
	do {
		size_t page = SCAN_PAGE;
		if (a->limit && a->limit - printed < page)
			page = (size_t)(a->limit - printed);
		n = kvshm_scan(kv, prefix, strlen(prefix), &cursor, page,
			       print_key, NULL);
		if (n < 0)
			break;
		printed += (uint64_t)n;
	} while (cursor && !(a->limit && printed >= a->limit));
	kvshm_close(kv);
	if (fflush(stdout) || ferror(stdout)) {
		cli_error("write error on standard output");
		return CLI_EXIT_FAILURE;
	}
	if (n < 0) {
		cli_store_error(NULL, a->name, "scan", n);
		return CLI_EXIT_FAILURE;
	}
	if (cursor)
		cli_error("--limit %" PRIu64 " reached; more keys may match",
			  a->limit);
	return CLI_EXIT_OK;
}

/* ---- --get --------------------------------------------------------------- */

static void print_value(const void *val, const struct kvshm_item *item)
{
	if (item->counter && item->value_len == sizeof(int64_t)) {
		int64_t v;
		memcpy(&v, val, sizeof(v));
		printf("%" PRId64 "\n", v);
	} else if (is_text(val, item->value_len)) {
		fwrite(val, 1, item->value_len, stdout);
		putc('\n', stdout);
	} else {
		put_escaped(stdout, val, item->value_len);
		putc('\n', stdout);
	}
}

static int cmd_get(const struct args *a)
{
	struct kvshm_item item;
	struct kvshm *kv;
	size_t cap = 4096;
	void *buf = NULL;
	int err = open_store(a->name, &kv);

	if (err)
		return CLI_EXIT_FAILURE;
	for (;;) {
		void *nb = realloc(buf, cap ? cap : 1);
		if (!nb) {
			err = -ENOMEM;
			break;
		}
		buf = nb;
		err = kvshm_get_ex(kv, a->key, strlen(a->key), buf, cap, &item,
				   0);
		if (err != -ENOBUFS)
			break;
		cap = item.value_len; /* it grew since: try again */
	}
	kvshm_close(kv);
	if (!err)
		print_value(buf, &item);
	else if (err == -ENOENT)
		cli_error("no such key: %s", a->key);
	else
		cli_store_error(NULL, a->name, "get", err);
	free(buf);
	return err ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

/* ---- --check ------------------------------------------------------------- */

static int cmd_check(const struct args *a)
{
	struct kvshm *kv;
	char *report = malloc(CHECK_REPORT_BYTES);
	int err;

	if (!report) {
		cli_error("%s", strerror(ENOMEM));
		return CLI_EXIT_FAILURE;
	}
	err = open_store(a->name, &kv);
	if (err) {
		free(report);
		return CLI_EXIT_FAILURE;
	}
	report[0] = '\0';
	err = kvshm_check(kv, report, CHECK_REPORT_BYTES);
	kvshm_close(kv);
	if (report[0])
		printf("%s%s", report,
		       report[strlen(report) - 1] == '\n' ? "" : "\n");
	if (err)
		cli_store_error(NULL, a->name, "check", err);
	free(report);
	return err ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

/* ---- --list -------------------------------------------------------------- */

struct store_row {
	char *name;
	uid_t uid;
	struct kvshm_stats st;
};

static int row_cmp(const void *x, const void *y)
{
	return strcmp(((const struct store_row *)x)->name,
		      ((const struct store_row *)y)->name);
}

/* The store behind directory entry ent, if it is one we can open: returns
 * 1 and fills *row, 0 to skip it silently, or -ENOMEM. */
static int list_probe(int dfd, const char *dir, const char *ent,
		      struct store_row *row)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct stat sb;
	struct kvshm *kv;
	char *name;
	int err;

	if (ent[0] == '.' || fstatat(dfd, ent, &sb, AT_SYMLINK_NOFOLLOW) ||
	    !S_ISREG(sb.st_mode))
		return 0;
	if (dir) {
		size_t len = strlen(dir) + strlen(ent) + 2;
		name = malloc(len);
		if (name)
			snprintf(name, len, "%s%s%s", dir,
				 dir[strlen(dir) - 1] == '/' ? "" : "/", ent);
	} else {
		name = strdup(ent);
	}
	if (!name)
		return -ENOMEM;
	o.flags = KVSHM_RDONLY;
	err = kvshm_open(name, &o, &kv);
	if (!err) {
		err = kvshm_stats(kv, &row->st);
		kvshm_close(kv);
	}
	if (err) {
		free(name);
		return 0; /* not a store, or not ours: skip it */
	}
	row->name = name;
	row->uid = sb.st_uid;
	return 1;
}

static void list_print(const struct store_row *rows, size_t n)
{
	char size[32], used[32], owner[32];
	int width = 4; /* strlen("NAME") */

	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(rows[i].name);
		if (len > (size_t)width)
			width = len > 64 ? 64 : (int)len;
	}
	printf("%-*s %-12s %10s %10s %12s %s\n", width, "NAME", "OWNER", "SIZE",
	       "USED", "ITEMS", "JANITOR");
	for (size_t i = 0; i < n; i++) {
		const struct store_row *r = &rows[i];
		struct passwd *pw = getpwuid(r->uid);

		if (pw)
			snprintf(owner, sizeof(owner), "%s", pw->pw_name);
		else
			snprintf(owner, sizeof(owner), "%u", (unsigned)r->uid);
		printf("%-*s %-12s %10s %10s %12" PRIu64 " %s\n", width,
		       r->name, owner,
		       cli_format_size(r->st.arena_bytes, size, sizeof(size)),
		       cli_format_size(r->st.used_bytes, used, sizeof(used)),
		       r->st.items, r->st.janitor_alive ? "alive" : "none");
	}
}

static int cmd_list(const struct args *a)
{
	const char *dirpath = a->name ? a->name : SHM_DIR;
	struct store_row *rows = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int err = 0;
	DIR *d = opendir(dirpath);

	if (!d) {
		cli_error("%s: %s", dirpath, strerror(errno));
		return CLI_EXIT_FAILURE;
	}
	while ((de = readdir(d))) {
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 16;
			struct store_row *nr =
				realloc(rows, ncap * sizeof(*nr));
			if (!nr) {
				err = -ENOMEM;
				break;
			}
			rows = nr;
			cap = ncap;
		}
		err = list_probe(dirfd(d), a->name, de->d_name, &rows[n]);
		if (err < 0)
			break;
		n += (size_t)err;
		err = 0;
	}
	closedir(d);
	if (!err) {
		qsort(rows, n, sizeof(*rows), row_cmp);
		list_print(rows, n);
	} else {
		cli_error("%s", strerror(-err));
	}
	for (size_t i = 0; i < n; i++)
		free(rows[i].name);
	free(rows);
	return err ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

/* ---- command line -------------------------------------------------------- */

static int set_mode(struct args *a, enum mode m)
{
	if (a->mode_set && a->mode != m)
		return usage_error(
			"choose one of --json, --prometheus, "
			"--interval, --keys, --get, --check, --list");
	a->mode = m;
	a->mode_set = true;
	return 0;
}

static int parse_interval(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0.01 && v <= 86400))
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_format(struct args *a, const char *s)
{
	if (!strcmp(s, "text"))
		return set_mode(a, MODE_SUMMARY);
	if (!strcmp(s, "json"))
		return set_mode(a, MODE_JSON);
	if (!strcmp(s, "prometheus"))
		return set_mode(a, MODE_PROMETHEUS);
	return usage_error("--format takes text, json or prometheus");
}

/* Returns -1 to go on, or an exit status. */
static int parse_option(struct args *a, int c)
{
	switch (c) {
	case 'j':
		return set_mode(a, MODE_JSON) ? CLI_EXIT_USAGE : -1;
	case 'p':
		return set_mode(a, MODE_PROMETHEUS) ? CLI_EXIT_USAGE : -1;
	case 'F':
		return parse_format(a, optarg) ? CLI_EXIT_USAGE : -1;
	case 'c':
		return set_mode(a, MODE_CHECK) ? CLI_EXIT_USAGE : -1;
	case 'l':
		return set_mode(a, MODE_LIST) ? CLI_EXIT_USAGE : -1;
	case 'o':
		a->output = optarg;
		return -1;
	case 'i':
		if (parse_interval(optarg, &a->interval_s))
			return usage_error("--interval takes seconds (0.01 to "
					   "86400)");
		return set_mode(a, MODE_LIVE) ? CLI_EXIT_USAGE : -1;
	case 'k':
		a->prefix = optarg;
		return set_mode(a, MODE_KEYS) ? CLI_EXIT_USAGE : -1;
	case 'n':
		if (cli_parse_uint(optarg, UINT64_MAX, &a->limit) || !a->limit)
			return usage_error("--limit takes a positive number");
		return -1;
	case 'g':
		a->key = optarg;
		return set_mode(a, MODE_GET) ? CLI_EXIT_USAGE : -1;
	case 'h':
		usage(stdout);
		return CLI_EXIT_OK;
	case 'V':
		printf("kvshm-stat %s (libkvshm %s, layout version %u)\n",
		       KVSHM_VERSION_STRING, kvshm_version(),
		       kvshm_layout_version());
		return CLI_EXIT_OK;
	default:
		return usage_error("bad option");
	}
}

/* Operands: NAME, then PREFIX with --keys; only DIR (optional) with --list. */
static int parse_operands(struct args *a, int argc, char **argv)
{
	int left = argc - optind;

	if (a->mode == MODE_LIST) {
		if (left > 1)
			return usage_error(
				"--list takes at most one directory");
		a->name = left ? argv[optind] : NULL;
		return 0;
	}
	if (left < 1)
		return usage_error("missing store NAME");
	a->name = argv[optind];
	if (a->mode == MODE_KEYS && left == 2 && !a->prefix)
		a->prefix = argv[optind + 1];
	else if (left > 1)
		return usage_error("too many operands");
	if (!a->name[0])
		return usage_error("empty store NAME");
	if (a->limit && a->mode != MODE_KEYS)
		return usage_error("--limit goes with --keys");
	if (a->output && a->mode != MODE_SUMMARY && a->mode != MODE_JSON &&
	    a->mode != MODE_PROMETHEUS)
		return usage_error("--output goes with the summary, --json or "
				   "--prometheus");
	return 0;
}

static int parse_args(struct args *a, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "prometheus", no_argument, NULL, 'p' },
		{ "format", required_argument, NULL, 'F' },
		{ "output", required_argument, NULL, 'o' },
		{ "interval", required_argument, NULL, 'i' },
		{ "keys", optional_argument, NULL, 'k' },
		{ "limit", required_argument, NULL, 'n' },
		{ "get", required_argument, NULL, 'g' },
		{ "check", no_argument, NULL, 'c' },
		{ "list", no_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0; /* our own message, with the usage hint */
	while ((c = getopt_long(argc, argv, ":jpo:i:kn:g:clhV", longopts,
				NULL)) != -1) {
		int rc;
		if (c == '?' || c == ':') {
			const char *opt = argv[optind - 1];
			cli_error("%s: %s",
				  c == ':' ? "missing argument for" :
					     "unknown option",
				  opt);
			fprintf(stderr, "Try 'kvshm-stat --help' for more "
					"information.\n");
			return CLI_EXIT_USAGE;
		}
		rc = parse_option(a, c);
		if (rc >= 0)
			return rc;
	}
	return parse_operands(a, argc, argv) ? CLI_EXIT_USAGE : -1;
}

int main(int argc, char **argv)
{
	struct args a = { .mode = MODE_SUMMARY };
	int rc = parse_args(&a, argc, argv);

	if (rc < 0) {
		switch (a.mode) {
		case MODE_LIVE:
			rc = cmd_live(&a);
			break;
		case MODE_KEYS:
			rc = cmd_keys(&a);
			break;
		case MODE_GET:
			rc = cmd_get(&a);
			break;
		case MODE_CHECK:
			rc = cmd_check(&a);
			break;
		case MODE_LIST:
			rc = cmd_list(&a);
			break;
		default:
			rc = cmd_summary(&a);
			break;
		}
	}
	/* a full disk or a closed stdout is a failure, not a silent success */
	if ((fflush(stdout) || ferror(stdout)) && rc == CLI_EXIT_OK) {
		cli_error("write error on standard output");
		rc = CLI_EXIT_FAILURE;
	}
	return rc;
}
