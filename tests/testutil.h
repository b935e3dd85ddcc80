/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - helpers shared by the kvshm test suites: unique store names,
 * a fixture that checks, closes and unlinks everything a test made, forked
 * children that report failure through their exit status, and
 * self-validating values that make a torn read detectable.
 * Include it first: it selects the feature macros the tests need.
 */
#ifndef KVSHM_TESTUTIL_H
#define KVSHM_TESTUTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <kvshm.h>

#define TU_MIB (1024u * 1024u)
#define TU_NAME_LEN 256
#define TU_MAX_STORES 512
#define TU_MAX_HANDLES 32
#define TU_MAX_KIDS 64

/* A string literal or char array as a (pointer, length) pair, without NUL. */
#define KS(s) (s), strlen(s)

/* Assert that a kvshm call returns want, naming both codes on failure. */
#define assert_kv(expr, want)                                                  \
	do {                                                                   \
		const long got_ = (expr);                                      \
		const long want_ = (want);                                     \
		if (got_ != want_)                                             \
			fail_msg("%s returned %ld (%s), expected %ld (%s)",    \
				 #expr, got_, kvshm_strerror((int)got_),       \
				 want_, kvshm_strerror((int)want_));           \
	} while (0)
#define assert_ok(expr) assert_kv(expr, 0)

/*
 * Children never use cmocka's asserts (they would unwind into a copy of the
 * runner): they print the failed condition and exit 1, and the parent
 * asserts on the exit status.
 */
#define CHILD_ASSERT(cond)                                                     \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "child %d: %s:%d: %s\n", (int)getpid(), \
				__FILE__, __LINE__, #cond);                    \
			_exit(1);                                              \
		}                                                              \
	} while (0)
#define CHILD_ASSERT_RC(expr, want)                                            \
	do {                                                                   \
		const int got_ = (expr);                                       \
		if (got_ != (want)) {                                          \
			fprintf(stderr, "child %d: %s:%d: %s = %d (%s)\n",     \
				(int)getpid(), __FILE__, __LINE__, #expr,      \
				got_, kvshm_strerror(got_));                   \
			_exit(1);                                              \
		}                                                              \
	} while (0)

/* Everything a test made, undone by tu_teardown(). */
struct tu_fx {
	struct kvshm *kv; /* the main store of tu_setup_store(), or NULL */
	const char *name; /* its name */
	char stores[TU_MAX_STORES][TU_NAME_LEN]; /* unlinked in teardown */
	int nstores;
	struct kvshm *handles[TU_MAX_HANDLES]; /* checked, closed in teardown */
	int nhandles;
	pid_t kids[TU_MAX_KIDS]; /* killed and reaped in teardown */
	int nkids;
	char dir[64]; /* mkdtemp() folder for path stores, removed in teardown */
	int saved_umask; /* restored in teardown if >= 0 */
};

static inline int64_t tu_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t tu_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void tu_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* xorshift64*: a tiny deterministic PRNG; *s must start nonzero. */
static inline uint64_t tu_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static inline uint32_t tu_fnv1a(const void *p, size_t n, uint32_t h)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

static inline struct kvshm_options tu_opts(uint32_t flags, uint64_t arena)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;

	o.flags = flags;
	o.arena_bytes = arena;
	return o;
}

/* Verify the store; print the report and fail the test if inconsistent. */
static inline void tu_check(struct kvshm *kv)
{
	char report[8192];
	const int rc = kvshm_check(kv, report, sizeof(report));

	if (rc != 0) {
		print_message("kvshm_check: %d (%s)\n%s\n", rc,
			      kvshm_strerror(rc), report);
		fail_msg("kvshm_check() returned %d", rc);
	}
}

/* The store's item count (live + expired-but-unreclaimed). */
static inline uint64_t tu_items(struct kvshm *kv)
{
	struct kvshm_stats st;

	assert_int_equal(kvshm_stats(kv, &st), 0);
	return st.items;
}

static inline struct tu_fx *tu_fx(void **state)
{
	return *state;
}

/* A fresh, tracked shm name: "kvshm-t-<pid>-<n>-<tag>". */
static inline const char *tu_new_name(struct tu_fx *fx, const char *tag)
{
	static unsigned counter;

	assert_true(fx->nstores < TU_MAX_STORES);
	char *name = fx->stores[fx->nstores++];
	snprintf(name, TU_NAME_LEN, "kvshm-t-%d-%u-%s", (int)getpid(),
		 counter++, tag);
	return name;
}

/* The test's private folder, created on first use. */
static inline const char *tu_dir(struct tu_fx *fx)
{
	if (!fx->dir[0]) {
		strcpy(fx->dir, "/tmp/kvshm-test-XXXXXX");
		assert_non_null(mkdtemp(fx->dir));
	}
	return fx->dir;
}

/* A fresh, tracked file-path name inside the test's private folder. */
static inline const char *tu_new_path(struct tu_fx *fx, const char *leaf)
{
	const char *dir = tu_dir(fx);

	assert_true(fx->nstores < TU_MAX_STORES);
	char *name = fx->stores[fx->nstores++];
	snprintf(name, TU_NAME_LEN, "%s/%s", dir, leaf);
	return name;
}

static inline void tu_track(struct tu_fx *fx, struct kvshm *kv)
{
	assert_true(fx->nhandles < TU_MAX_HANDLES);
	fx->handles[fx->nhandles++] = kv;
}

/* Open name with o (NULL = attach); the handle is closed in teardown. */
static inline struct kvshm *tu_open(struct tu_fx *fx, const char *name,
				    const struct kvshm_options *o)
{
	struct kvshm *kv = NULL;

	assert_ok(kvshm_open(name, o, &kv));
	assert_non_null(kv);
	tu_track(fx, kv);
	return kv;
}

/* Create a fresh store with o (CREATE|EXCL added); *name_out gets its name. */
static inline struct kvshm *tu_create(struct tu_fx *fx,
				      const struct kvshm_options *o,
				      const char **name_out)
{
	struct kvshm_options c = *o;
	const char *name = tu_new_name(fx, "s");

	c.flags |= KVSHM_CREATE | KVSHM_EXCL;
	if (name_out)
		*name_out = name;
	return tu_open(fx, name, &c);
}

/* Check and close a tracked handle before teardown. */
static inline void tu_close(struct tu_fx *fx, struct kvshm *kv)
{
	for (int i = 0; i < fx->nhandles; i++) {
		if (fx->handles[i] != kv)
			continue;
		fx->handles[i] = fx->handles[--fx->nhandles];
		if (fx->kv == kv)
			fx->kv = NULL;
		kvshm_close(kv);
		return;
	}
	fail_msg("tu_close of an untracked handle");
}

static inline int tu_setup_bare(void **state)
{
	struct tu_fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	fx->saved_umask = -1;
	*state = fx;
	return 0;
}

/* A fresh evicting 4 MiB store in fx->kv. */
static inline int tu_setup_store(void **state)
{
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct tu_fx *fx;

	if (tu_setup_bare(state))
		return -1;
	fx = *state;
	fx->kv = tu_create(fx, &o, &fx->name);
	return 0;
}

/* The filesystem path of a store name ("NAME" and "/NAME" are shm
 * objects; other names with a '/' are paths: the kvshm.h rule). */
static inline const char *tu_fs_path(const char *name, char *buf, size_t len)
{
	const char *base = name[0] == '/' ? name + 1 : name;

	if (strchr(base, '/'))
		snprintf(buf, len, "%s", name);
	else
		snprintf(buf, len, "/dev/shm/%s", base);
	return buf;
}

static inline void tu_rmtree(const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *e;
	char sub[PATH_MAX];

	if (lstat(path, &st) != 0)
		return;
	if (!S_ISDIR(st.st_mode)) {
		unlink(path);
		return;
	}
	d = opendir(path);
	while (d && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) <
		    (int)sizeof(sub))
			tu_rmtree(sub);
	}
	if (d)
		closedir(d);
	rmdir(path);
}

/* Undo everything: names first (so that nothing leaks even if a broken
 * handle crashes the check), then check and close every open handle. */
static inline int tu_teardown(void **state)
{
	struct tu_fx *fx = *state;
	char report[8192];
	int bad = 0;

	for (int i = 0; i < fx->nkids; i++) {
		kill(fx->kids[i], SIGKILL);
		waitpid(fx->kids[i], NULL, 0);
	}
	for (int i = 0; i < fx->nstores; i++) {
		char path[TU_NAME_LEN + 16];

		/* also removes what kvshm_unlink() may refuse (a symlink) */
		kvshm_unlink(fx->stores[i]);
		unlink(tu_fs_path(fx->stores[i], path, sizeof(path)));
	}
	if (fx->dir[0])
		tu_rmtree(fx->dir);
	if (fx->saved_umask >= 0)
		umask((mode_t)fx->saved_umask);
	for (int i = 0; i < fx->nhandles; i++) {
		const int rc = kvshm_check(fx->handles[i], report,
					   sizeof(report));
		if (rc != 0) {
			print_message("teardown kvshm_check: %d\n%s\n", rc,
				      report);
			bad = 1;
		}
		kvshm_close(fx->handles[i]);
	}
	free(fx);
	*state = NULL;
	if (bad)
		fail_msg("kvshm_check failed in teardown");
	return 0;
}

/* Change the umask for this test; teardown restores it. */
static inline void tu_umask(struct tu_fx *fx, mode_t m)
{
	const mode_t old = umask(m);

	if (fx->saved_umask < 0)
		fx->saved_umask = (int)old;
}

static inline void tu_on_alarm(int sig)
{
	static const char msg[] = "\nwatchdog: the test hung (SIGALRM)\n";

	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(3);
}

/* Fail (exit 3) if the test is still running after seconds; 0 disarms. */
static inline void tu_watchdog(unsigned seconds)
{
	signal(SIGALRM, tu_on_alarm);
	alarm(seconds);
}

/* Fork a tracked child that runs fn(arg) and exits 0 unless it fails. */
static inline pid_t tu_spawn(struct tu_fx *fx, void (*fn)(void *), void *arg)
{
	pid_t pid;

	assert_true(fx->nkids < TU_MAX_KIDS);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(60); /* an orphaned or hung child never lingers */
		fn(arg);
		_exit(0);
	}
	fx->kids[fx->nkids++] = pid;
	return pid;
}

/* Wait for a tracked child and return its raw wait status. */
static inline int tu_wait(struct tu_fx *fx, pid_t pid)
{
	int status = 0;

	while (waitpid(pid, &status, 0) < 0)
		assert_int_equal(errno, EINTR);
	for (int i = 0; i < fx->nkids; i++)
		if (fx->kids[i] == pid)
			fx->kids[i] = fx->kids[--fx->nkids];
	return status;
}

/* Wait for a tracked child and fail unless it exited 0. */
static inline void tu_reap(struct tu_fx *fx, pid_t pid)
{
	const int status = tu_wait(fx, pid);

	if (WIFSIGNALED(status))
		fail_msg("child %d killed by signal %d", (int)pid,
			 WTERMSIG(status));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("child %d exited with status %d", (int)pid,
			 WEXITSTATUS(status));
}

/* Zeroed memory that forked children share with the parent, for results a
 * child leaves behind (read by the parent after waitpid()). */
static inline void *tu_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

/* A start line: children block in tu_barrier_wait() until the parent calls
 * tu_barrier_release(), which closes the pipe and wakes them all at once. */
struct tu_barrier {
	int fd[2];
};

static inline void tu_barrier_init(struct tu_barrier *b)
{
	assert_int_equal(pipe(b->fd), 0);
}

/* In a child. */
static inline void tu_barrier_wait(struct tu_barrier *b)
{
	char c;

	close(b->fd[1]);
	while (read(b->fd[0], &c, 1) < 0 && errno == EINTR)
		;
	close(b->fd[0]);
}

/* In the parent, after forking every child. */
static inline void tu_barrier_release(struct tu_barrier *b)
{
	close(b->fd[0]);
	close(b->fd[1]);
}

/*
 * Self-validating values. A value is a header followed by a payload whose
 * bytes derive from (key, writer, seq), with a checksum over both, and a
 * length that varies with seq. A torn value or a mix of two writes fails
 * tu_val_verify().
 */
struct tu_val_hdr {
	uint32_t key;
	uint32_t writer;
	uint64_t seq;
	uint32_t len; /* whole value, header included */
	uint32_t sum; /* FNV-1a of the header (sum = 0) and the payload */
};

#define TU_VAL_MAX 2048

static inline uint8_t tu_val_byte(const struct tu_val_hdr *h, size_t i)
{
	const uint64_t x = h->seq * 0x9e3779b97f4a7c15ull ^ h->key * 131u ^
			   h->writer;

	return (uint8_t)(x >> (8 * (i % 8))) ^ (uint8_t)(i * 7);
}

/* Build the value into buf (TU_VAL_MAX bytes); returns its length. */
static inline size_t tu_val_make(uint8_t *buf, uint32_t key, uint32_t writer,
				 uint64_t seq)
{
	struct tu_val_hdr h = { key, writer, seq, 0, 0 };
	const size_t extra = (seq * 2654435761u + key) %
			     (TU_VAL_MAX - sizeof(h));

	h.len = (uint32_t)(sizeof(h) + extra);
	for (size_t i = 0; i < extra; i++)
		buf[sizeof(h) + i] = tu_val_byte(&h, i);
	h.sum = tu_fnv1a(&h, sizeof(h), 2166136261u);
	h.sum = tu_fnv1a(buf + sizeof(h), extra, h.sum);
	memcpy(buf, &h, sizeof(h));
	return h.len;
}

/* NULL if buf[0..len) is an intact value of key, else a short reason. */
static inline const char *tu_val_verify(const uint8_t *buf, size_t len,
					uint32_t key, struct tu_val_hdr *out)
{
	struct tu_val_hdr h;
	uint32_t sum;

	if (len < sizeof(h))
		return "shorter than a header";
	memcpy(&h, buf, sizeof(h));
	if (h.len != len)
		return "length differs from the header";
	if (h.key != key)
		return "value of another key";
	sum = h.sum;
	h.sum = 0;
	h.sum = tu_fnv1a(&h, sizeof(h), 2166136261u);
	h.sum = tu_fnv1a(buf + sizeof(h), len - sizeof(h), h.sum);
	if (h.sum != sum)
		return "checksum mismatch";
	h.sum = sum;
	for (size_t i = 0; i < len - sizeof(h); i++)
		if (buf[sizeof(h) + i] != tu_val_byte(&h, i))
			return "payload mismatch";
	if (out)
		*out = h;
	return NULL;
}

#endif /* KVSHM_TESTUTIL_H */
