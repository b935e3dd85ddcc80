/* SPDX-License-Identifier: MIT */
/*
 * example.h - the scaffolding the pattern examples share, so that each
 * example's own file is only its pattern: a store of its own, N forked
 * worker processes, the clock TTLs run on, and memory shared outside the
 * store where the workers leave evidence for the final check. Like the
 * examples, it uses <kvshm.h> and nothing else of kvshm.
 *
 * Every example runs as   NAME [WORKERS]   (1..64, default 4), prints
 * "ok: <its invariant>" and exits 0, or prints "FAIL: <why>" and exits 1
 * (2 for a bad command line). Its store is called kvex-NAME-<pid> and is
 * unlinked at the end, whatever happened.
 */
#ifndef KVSHM_EXAMPLE_H
#define KVSHM_EXAMPLE_H

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvshm.h>

#define EXAMPLE_MAX_WORKERS 64
#define EXAMPLE_HANG_MS 60000 /* a worker still running then is stuck */

/* The one example this process runs (a program runs exactly one). */
static struct example {
	const char *prog;
	char store[64];
	struct kvshm *kv;
	int workers;
	int id; /* worker number in a worker, -1 in the parent */
	pid_t pid[EXAMPLE_MAX_WORKERS];
} ex = { .id = -1 };

/* Unix-epoch milliseconds on CLOCK_REALTIME, the clock that TTLs and
 * absolute expiries are measured on. */
static inline int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* A small, fast generator each worker seeds for itself (xorshift64*). */
static inline uint64_t rnd(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 0x2545f4914f6cdd1dull;
}

/* Zeroed memory that the parent and all workers share: fork() keeps a
 * MAP_SHARED mapping shared. The workers record what they did there,
 * independently of the store, and the parent checks the store against it.
 * Exits on failure (there is nothing to clean up yet). */
static inline void *shared_alloc(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	return p;
}

/* The end of the example: print the verdict, close and unlink the store.
 * Returns the exit status. */
static inline int example_end(bool ok, const char *fmt, ...)
{
	va_list ap;

	fputs(ok ? "ok: " : "FAIL: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	kvshm_close(ex.kv);
	kvshm_unlink(ex.store);
	return ok ? 0 : 1;
}

/* An unexpected error ends a worker with exit status 1 (the parent says
 * so) and the parent with FAIL. */
static inline void example_die(const char *what, int err)
{
	if (ex.id >= 0) {
		fprintf(stderr, "%s worker %d: %s: %s\n", ex.prog, ex.id, what,
			kvshm_strerror(err));
		_exit(1);
	}
	exit(example_end(false, "%s: %s", what, kvshm_strerror(err)));
}

/* For calls that may only fail unexpectedly. */
#define TRY(call)                                                              \
	do {                                                                   \
		int err_ = (call);                                             \
		if (err_ < 0)                                                  \
			example_die(#call, err_);                              \
	} while (0)

/*
 * Parse "PROG [WORKERS]" and create the store kvex-PROG-<pid> (4 MiB, or
 * opts' geometry if opts is not NULL). Returns 0, or the exit status to
 * end with (2 for a bad command line, 1 if the store cannot be created).
 */
static inline int example_start(const char *prog, int argc, char **argv,
				const struct kvshm_options *opts)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	char *end;
	long n = 4;
	int err;

	if (argc > 1)
		n = strtol(argv[1], &end, 10);
	if (argc > 2 || (argc > 1 && (*end || end == argv[1])) || n < 1 ||
	    n > EXAMPLE_MAX_WORKERS) {
		fprintf(stderr, "usage: %s [WORKERS]   (1..%d, default 4)\n",
			prog, EXAMPLE_MAX_WORKERS);
		return 2;
	}
	ex.prog = prog;
	ex.workers = (int)n;
	snprintf(ex.store, sizeof(ex.store), "kvex-%s-%d", prog, (int)getpid());
	if (opts)
		o = *opts;
	else
		o.arena_bytes = 4 << 20;
	o.flags |= KVSHM_CREATE | KVSHM_EXCL;
	err = kvshm_open(ex.store, &o, &ex.kv);
	if (err) {
		fprintf(stderr, "%s: kvshm_open(%s): %s\n", prog, ex.store,
			kvshm_strerror(err));
		return 1;
	}
	return 0;
}

/* Fork the workers. Each runs fn(kv, id, arg) on the handle opened before
 * fork() (it keeps working in the child) and exits with fn's return. They
 * start together, when all are forked, so that they really race. */
static inline void example_fork(int (*fn)(struct kvshm *kv, int id, void *arg),
				void *arg)
{
	int go[2];
	char c;

	if (pipe(go))
		example_die("pipe", -errno);
	fflush(stdout); /* or the children would print it again */
	for (int i = 0; i < ex.workers; i++) {
		ex.pid[i] = fork();
		if (ex.pid[i] < 0)
			example_die("fork", -errno);
		if (ex.pid[i] == 0) {
			int status;

			ex.id = i;
			close(go[1]);
			while (read(go[0], &c, 1) < 0 && errno == EINTR)
				; /* end of file: the parent closed it, go */
			close(go[0]);
			status = fn(ex.kv, i, arg);
			kvshm_close(ex.kv);
			_exit(status);
		}
	}
	close(go[0]);
	close(go[1]);
}

/* Wait for every worker; true if all exited with status 0. A worker still
 * running after EXAMPLE_HANG_MS is stuck: it is killed and counts as
 * failed, so that the store is still unlinked. */
static inline bool example_wait(void)
{
	int64_t give_up = now_ms() + EXAMPLE_HANG_MS;
	int left = ex.workers, failed = 0, status;

	while (left > 0) {
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid == 0 && now_ms() >= give_up) { /* stuck: stop them */
			printf("workers still running after %d ms: killed\n",
			       EXAMPLE_HANG_MS);
			for (int i = 0; i < ex.workers; i++)
				if (ex.pid[i] > 0)
					kill(ex.pid[i], SIGKILL);
			give_up = INT64_MAX;
		}
		if (pid == 0 || (pid < 0 && errno == EINTR)) {
			sleep_ms(5);
			continue;
		}
		if (pid < 0) /* no children left: cannot happen */
			return false;
		for (int i = 0; i < ex.workers; i++)
			if (ex.pid[i] == pid) {
				ex.pid[i] = 0;
				left--;
				if (!WIFEXITED(status) ||
				    WEXITSTATUS(status) != 0) {
					printf("worker %d failed\n", i);
					failed++;
				}
			}
	}
	return failed == 0;
}

#endif /* KVSHM_EXAMPLE_H */
