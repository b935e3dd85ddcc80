/* SPDX-License-Identifier: MIT */
/*
 * cli.h - small helpers shared by the kvshm tools: parsing sizes, counts and
 * octal modes from the command line, printing sizes, and error messages that
 * name the program and the store. Uses <kvshm.h> for kvshm_strerror() only;
 * holds no state of its own.
 *
 * Parsers return 0 and store the value, or -EINVAL (not a number of that
 * kind) or -ERANGE (too large), and leave *out untouched on failure.
 */
#ifndef KVSHM_CLI_H
#define KVSHM_CLI_H

#include <stddef.h>
#include <stdint.h>

/* Exit statuses of every tool. */
enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_FAILURE = 1, /* the command ran and failed */
	CLI_EXIT_USAGE = 2,   /* bad command line */
};

/* "4096", "64K", "64M", "1G", "1T" (powers of 1024; the suffix may be lower
 * case and may be followed by "B" or "iB": "64MiB"). */
int cli_parse_size(const char *s, uint64_t *out);

/* A plain unsigned decimal number, at most max. */
int cli_parse_uint(const char *s, uint64_t max, uint64_t *out);

/* Permission bits in octal ("600", "0640"), at most 07777. */
int cli_parse_mode(const char *s, uint32_t *out);

/* bytes as "512 B", "64.0 KiB", "1.5 GiB" into buf (always NUL-terminated
 * when len > 0). Returns buf. */
char *cli_format_size(uint64_t bytes, char *buf, size_t len);

/* The directory that holds store name's file, by the kvshm.h naming rule
 * ("NAME" and "/NAME" live in /dev/shm, other names with '/' are paths),
 * into dir, and the bytes free there (statvfs f_bavail) into *free_bytes.
 * 0, or -errno (-EINVAL: does not fit dir). */
int cli_store_dir_free(const char *name, char *dir, size_t len,
		       uint64_t *free_bytes);

/* Print "PROG: message\n" to stderr, PROG being the program's short name,
 * with an optional prefix (such as a syslog priority "<3>") before it. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_error_prefixed(const char *prefix, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Report a failed kvshm call on store name: "no such store: NAME" for
 * -ENOENT from an open, else "NAME: WHAT: <kvshm_strerror(err)>".
 * prefix as for cli_error_prefixed() (NULL or "" for none). */
void cli_store_error(const char *prefix, const char *name, const char *what,
		     int err);

#endif /* KVSHM_CLI_H */
