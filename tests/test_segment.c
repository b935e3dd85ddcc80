/* SPDX-License-Identifier: MIT */
/*
 * test_segment.c - the segment's life cycle (shm/segment.c): what attaching
 * refuses (another layout or lock ABI, a damaged header, another PID
 * namespace), waiting for a creator that never finishes, system call
 * failures during creation, and kvshm_check() finding damage in the index;
 * what kvshm_unlink() refuses to remove, and a store larger than its tmpfs.
 */
#include "testutil.h"

#include "internal.h"
#include "testing.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_bare, tu_teardown)

/* Create a file-path store, close it, and return its path. */
static const char *made_store(struct tu_fx *fx, const char *leaf)
{
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, 2 * TU_MIB);
	const char *path = tu_new_path(fx, leaf);
	struct kvshm *kv;

	assert_ok(kvshm_open(path, &o, &kv));
	assert_ok(kvshm_set(kv, KS("k"), "v", 1, 0));
	kvshm_close(kv);
	return path;
}

static void poke(const char *path, off_t off, const void *bytes, size_t len)
{
	int fd = open(path, O_WRONLY);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, bytes, len, off), (ssize_t)len);
	close(fd);
}

static int try_open(const char *path)
{
	struct kvshm *kv = NULL;
	int rc = kvshm_open(path, NULL, &kv);

	if (rc == 0)
		kvshm_close(kv);
	return rc;
}

static void test_segment_of_another_layout_version_is_refused(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *path = made_store(fx, "layout");
	const uint32_t other = KV_LAYOUT + 1;

	poke(path, offsetof(struct kv__header, layout), &other, sizeof(other));
	assert_kv(try_open(path), -EPROTONOSUPPORT);
}

static void test_segment_of_another_lock_abi_is_refused(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *path = made_store(fx, "abi");
	const uint64_t other = kv__abi_fingerprint() ^ 0x28; /* mutex size */

	poke(path, offsetof(struct kv__header, abi), &other, sizeof(other));
	assert_kv(try_open(path), -EPROTONOSUPPORT);
}

/* A header field changed behind the checksum's back, and a header whose
 * geometry does not recompute from its parameters, are both refused. */
static void test_segment_with_a_damaged_header_is_refused(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *path = made_store(fx, "damaged");
	const uint64_t off = 12345;

	poke(path, offsetof(struct kv__header, data_off), &off, sizeof(off));
	assert_kv(try_open(path), -EBADMSG);
}

/* ---- what kvshm_unlink() removes ------------------------------------------ */

static void write_file(const char *path, const void *bytes, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, bytes, len), (ssize_t)len);
	close(fd);
}

/* path still exists as a file of exactly these bytes. */
static void assert_file_is(const char *path, const void *bytes, size_t len)
{
	char got[8192];
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_true(len <= sizeof(got));
	assert_int_equal(read(fd, got, sizeof(got)), (ssize_t)len);
	close(fd);
	assert_memory_equal(got, bytes, len);
}

/* Issue 13, defect 10: `destroy FILE` deleted a text file, a random file
 * and another program's shm object. Each is refused now and left as it
 * was; so are a directory, a FIFO, an empty file, a file of zeros (what a
 * creator that died before its header leaves, which only the library's
 * own cleanup removes) and a symbolic link to a real store (neither the
 * link nor the store is touched). */
static void test_unlink_refuses_what_is_not_a_kvshm_store(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	static const char text[] = "not a store\n";
	static const uint8_t zeros[4096];
	uint8_t random_bytes[4096];
	const char *shm_other = tu_new_name(fx, "other-program");
	const char *store = made_store(fx, "target");
	const char *link = tu_new_path(fx, "link");
	const char *dir = tu_new_path(fx, "dir");
	const char *fifo = tu_new_path(fx, "fifo");
	char shm_path[PATH_MAX];
	struct stat st;
	uint64_t seed = 13;

	for (size_t i = 0; i < sizeof(random_bytes); i++)
		random_bytes[i] = (uint8_t)tu_rand(&seed);
	write_file(tu_new_path(fx, "text"), text, sizeof(text) - 1);
	write_file(tu_new_path(fx, "random"), random_bytes,
		   sizeof(random_bytes));
	write_file(tu_new_path(fx, "empty"), "", 0);
	write_file(tu_new_path(fx, "zeros"), zeros, sizeof(zeros));
	snprintf(shm_path, sizeof(shm_path), "/dev/shm/%s", shm_other);
	write_file(shm_path, random_bytes, sizeof(random_bytes));
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(symlink(store, link), 0);

	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/text", tu_dir(fx));
	assert_kv(kvshm_unlink(path), -EBADMSG);
	assert_file_is(path, text, sizeof(text) - 1);
	snprintf(path, sizeof(path), "%s/random", tu_dir(fx));
	assert_kv(kvshm_unlink(path), -EBADMSG);
	assert_file_is(path, random_bytes, sizeof(random_bytes));
	snprintf(path, sizeof(path), "%s/empty", tu_dir(fx));
	assert_kv(kvshm_unlink(path), -EBADMSG);
	assert_file_is(path, "", 0);
	snprintf(path, sizeof(path), "%s/zeros", tu_dir(fx));
	assert_kv(kvshm_unlink(path), -EBADMSG);
	assert_file_is(path, zeros, sizeof(zeros));
	assert_kv(kvshm_unlink(shm_other), -EBADMSG); /* /dev/shm/NAME */
	assert_file_is(shm_path, random_bytes, sizeof(random_bytes));
	assert_kv(kvshm_unlink(dir), -EBADMSG);
	assert_int_equal(stat(dir, &st), 0);
	assert_kv(kvshm_unlink(fifo), -EBADMSG); /* and never hangs */
	assert_int_equal(lstat(fifo, &st), 0);
	assert_kv(kvshm_unlink(link), -ELOOP);
	assert_int_equal(lstat(link, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(try_open(store), 0);
	assert_kv(kvshm_unlink_ex(store, 1u << 7), -EINVAL); /* unknown flag */
	assert_int_equal(try_open(store), 0);
}

/* KVSHM_UNLINK_FORCE removes what kvshm_unlink() refuses (a symbolic link
 * itself, not its target), and still cannot remove a directory: -EISDIR,
 * which kvshm_strerror() names with the system's message. */
static void test_forced_unlink_removes_anything_but_a_directory(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *store = made_store(fx, "target");
	const char *text = tu_new_path(fx, "text");
	const char *link = tu_new_path(fx, "link");
	const char *dir = tu_new_path(fx, "dir");
	struct stat st;

	write_file(text, "hello\n", 6);
	assert_int_equal(symlink(store, link), 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_ok(kvshm_unlink_ex(text, KVSHM_UNLINK_FORCE));
	assert_int_equal(lstat(text, &st), -1);
	assert_ok(kvshm_unlink_ex(link, KVSHM_UNLINK_FORCE));
	assert_int_equal(lstat(link, &st), -1);
	assert_int_equal(try_open(store), 0); /* the target is untouched */
	assert_kv(kvshm_unlink_ex(dir, KVSHM_UNLINK_FORCE), -EISDIR);
	assert_string_equal(kvshm_strerror(-EISDIR), strerror(EISDIR));
	assert_ok(kvshm_unlink_ex(store, 0)); /* flags 0: checked, a store */
	assert_kv(try_open(store), -ENOENT);
}

/* A store of another layout version, or with a damaged header, is still
 * ours: its magic says so, and unlink removes it. */
static void test_unlink_removes_a_store_of_another_layout_or_damaged(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *other = made_store(fx, "layout");
	const char *damaged = made_store(fx, "damaged");
	const uint32_t layout = KV_LAYOUT + 1;
	const uint64_t off = 12345;

	poke(other, offsetof(struct kv__header, layout), &layout,
	     sizeof(layout));
	assert_kv(try_open(other), -EPROTONOSUPPORT);
	assert_ok(kvshm_unlink(other));
	assert_kv(try_open(other), -ENOENT);
	poke(damaged, offsetof(struct kv__header, data_off), &off, sizeof(off));
	assert_kv(try_open(damaged), -EBADMSG);
	assert_ok(kvshm_unlink(damaged));
	assert_kv(try_open(damaged), -ENOENT);
}

/* ---- a store larger than its tmpfs ----------------------------------------- */

#define NO_SMALL_FS 100 /* exit status: could not mount one; skipped */

/* entries of dir other than . and .. */
static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

#define CHILD_CHECK(cond)                                                      \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "small tmpfs: line %d: %s\n",          \
				__LINE__, #cond);                              \
			_exit(1);                                              \
		}                                                              \
	} while (0)

/* Child, in a mount namespace of its own (so the mount goes when it dies,
 * whatever happens): a 4 MiB tmpfs on dir, then stores too large for it. */
static void small_tmpfs_child(void *arg)
{
	const char *dir = arg;
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL,
					 16 * TU_MIB);
	char big[PATH_MAX], dflt[PATH_MAX], small[PATH_MAX];
	struct kvshm *kv = NULL;
	char got[8];
	size_t len;

	if (unshare(CLONE_NEWNS) ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
	    mount("tmpfs", dir, "tmpfs", 0, "size=" "4m")) {
		fprintf(stderr, "small tmpfs: cannot mount one (%s): skipped\n",
			strerror(errno));
		_exit(NO_SMALL_FS);
	}
	snprintf(big, sizeof(big), "%s/big", dir);
	snprintf(dflt, sizeof(dflt), "%s/default", dir);
	snprintf(small, sizeof(small), "%s/small", dir);

	/* 16 MiB, and the default 64 MiB: -ENOSPC at once, nothing left */
	CHILD_CHECK(kvshm_open(big, &o, &kv) == -ENOSPC && !kv);
	CHILD_CHECK(entries(dir) == 0);
	o.arena_bytes = 0;
	CHILD_CHECK(kvshm_open(dflt, &o, &kv) == -ENOSPC && !kv);
	CHILD_CHECK(entries(dir) == 0);

	/* 2 MiB fits; growing it to 3 MiB needs 2 + 3 at once: -ENOSPC, the
	 * store as it was and no NAME.resize-PID left */
	o.arena_bytes = 2 * TU_MIB;
	CHILD_CHECK(kvshm_open(small, &o, &kv) == 0);
	CHILD_CHECK(kvshm_set(kv, KS("k"), "v", 1, 0) == 0);
	o = tu_opts(0, 3 * TU_MIB);
	CHILD_CHECK(kvshm_resize(small, &o) == -ENOSPC);
	CHILD_CHECK(entries(dir) == 1);
	CHILD_CHECK(kvshm_get(kv, KS("k"), got, sizeof(got), &len) == 0);
	CHILD_CHECK(kvshm_check(kv, NULL, 0) == 0);
	/* and 1 MiB does fit next to it */
	o = tu_opts(0, 1 * TU_MIB);
	CHILD_CHECK(kvshm_resize(small, &o) == 0);
	CHILD_CHECK(entries(dir) == 1);
	CHILD_CHECK(kvshm_get(kv, KS("k"), got, sizeof(got), &len) == 0);
	kvshm_close(kv);
	_exit(0);
}

/* Issue 13, defect 10: a 16 MiB store on a 4 MiB tmpfs was "created", then
 * killed its writers and kvshm-stat --check with SIGBUS once the pages ran
 * out. Creating and resizing reserve the memory now (needs root to mount
 * a tmpfs: skipped, and said so, otherwise). */
static void test_a_store_larger_than_its_tmpfs_fails_with_enospc(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *dir = tu_new_path(fx, "fs");
	int status;

	assert_int_equal(mkdir(dir, 0700), 0);
	status = tu_wait(fx, tu_spawn(fx, small_tmpfs_child, (void *)dir));
	if (WIFSIGNALED(status))
		fail_msg("the child died of signal %d (SIGBUS is %d)",
			 WTERMSIG(status), SIGBUS);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == NO_SMALL_FS)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(entries(dir), 0); /* the mount died with the child */
}

/* Child: from a new PID namespace, try to attach; exit with -rc. */
static void open_from_new_pidns(void *arg)
{
	const char *path = arg;
	pid_t pid;
	int status;

	if (unshare(CLONE_NEWPID) != 0)
		_exit(100); /* not permitted here: the test is skipped */
	pid = fork(); /* the first child lives in the new namespace */
	if (pid == 0)
		_exit(-try_open(path));
	waitpid(pid, &status, 0);
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 101);
}

static void test_segment_from_another_pid_namespace_is_refused(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *path = made_store(fx, "pidns");
	int status = tu_wait(fx, tu_spawn(fx, open_from_new_pidns,
					  (void *)path));

	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 100)
		skip(); /* unshare(CLONE_NEWPID) needs privileges */
	assert_int_equal(WEXITSTATUS(status), EXDEV);
}

/* Child: create an empty object, hold its init lock, and never finish. */
static void stuck_creator(void *arg)
{
	const char *path = arg;
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
			   .l_start = 0, .l_len = 1};
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);

	if (fd < 0 || fcntl(fd, F_OFD_SETLK, &fl) != 0)
		_exit(1);
	pause();
}

static void test_open_waits_for_a_stuck_creator_then_times_out(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *path = tu_new_path(fx, "stuck");
	struct timespec t0, t1;
	pid_t pid = tu_spawn(fx, stuck_creator, (void *)path);
	struct stat st;
	double waited;

	while (stat(path, &st) != 0) /* until the child made it */
		tu_sleep_ms(1);
	tu_sleep_ms(20);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_kv(try_open(path), -ETIMEDOUT);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	waited = (double)(t1.tv_sec - t0.tv_sec) +
		 (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(waited >= 4.0); /* it waited for the creator first */
	kill(pid, SIGKILL);
	tu_wait(fx, pid);
	/* with the creator dead, KVSHM_CREATE takes the object over */
	struct kvshm_options o = tu_opts(KVSHM_CREATE, 2 * TU_MIB);
	struct kvshm *kv = tu_open(fx, path, &o);
	assert_ok(kvshm_set(kv, KS("k"), "v", 1, 0));
}

/* Failed system calls during creation leave no store behind. */
static void test_failed_creation_leaves_nothing_behind(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE, 2 * TU_MIB);
	long *faults[] = {&kv__test_fail_ftruncate, &kv__test_fail_mmap,
			  &kv__test_fail_getrandom, &kv__test_fail_fallocate};

	for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		const char *name = tu_new_name(fx, "fault");
		struct kvshm *kv = NULL;
		*faults[i] = 1;
		assert_true(kvshm_open(name, &o, &kv) < 0);
		*faults[i] = 0;
		assert_null(kv);
		assert_kv(kvshm_open(name, NULL, &kv), -ENOENT);
	}
}

/* kvshm_check() reports a slot that points outside the data area, and
 * passes again once the slot is put back. */
static void test_check_reports_a_damaged_slot(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 2 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct kv__seg *seg = kv__cur(kv);
	struct kv__key k;
	struct kv__hit hit;
	char report[1024];
	_Atomic uint64_t *slot;
	uint64_t saved;

	assert_ok(kvshm_set(kv, KS("victim"), "v", 1, 0));
	kv__key_init(seg, &k, "victim", 6);
	assert_int_equal(kv__read(seg, &k, NULL, 0, &hit), 1);
	slot = &seg->buckets[hit.bucket].slot[hit.slot];
	saved = atomic_load(slot);
	atomic_store(slot, (saved & ~KV_SLOT_OFF_MASK) | 1); /* offset 16 */
	assert_kv(kvshm_check(kv, report, sizeof(report)), -EUCLEAN);
	print_message("report: %s", report);
	assert_non_null(strstr(report, "bad link"));
	atomic_store(slot, saved);
	assert_ok(kvshm_check(kv, report, sizeof(report)));
}

/* Child: claim the janitor role of the store named arg, report, wait. */
struct janitor_arg {
	const char *name;
	int fd[2];
};

static void janitor_child(void *arg)
{
	struct janitor_arg *a = arg;
	struct kvshm *kv;
	int rc = kvshm_open(a->name, NULL, &kv);

	if (rc == 0)
		rc = kvshm_janitor_claim(kv);
	if (write(a->fd[1], &rc, sizeof(rc)) != sizeof(rc))
		_exit(1);
	pause();
}

static void test_janitor_role_has_one_holder_and_dies_with_it(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 2 * TU_MIB);
	const char *name;
	struct kvshm *kv = tu_create(fx, &o, &name);
	struct janitor_arg a = {.name = name};
	struct kvshm_stats st;
	pid_t pid;
	int rc = -1;

	assert_ok(kvshm_stats(kv, &st));
	assert_int_equal(st.janitor_alive, 0);
	assert_int_equal(pipe(a.fd), 0);
	pid = tu_spawn(fx, janitor_child, &a);
	assert_int_equal(read(a.fd[0], &rc, sizeof(rc)), sizeof(rc));
	assert_ok(rc);
	assert_ok(kvshm_stats(kv, &st));
	assert_int_equal(st.janitor_alive, 1);
	assert_int_equal(st.janitor_pid, pid);
	assert_true(st.janitor_heartbeat_ms > 0);
	assert_kv(kvshm_janitor_claim(kv), -EBUSY);
	assert_kv(kvshm_janitor_heartbeat(kv), -EPERM);

	kill(pid, SIGKILL); /* the kernel drops its lock */
	tu_wait(fx, pid);
	assert_ok(kvshm_stats(kv, &st));
	assert_int_equal(st.janitor_alive, 0);
	assert_ok(kvshm_janitor_claim(kv));
	assert_kv(kvshm_janitor_claim(kv), -EALREADY);
	assert_ok(kvshm_janitor_heartbeat(kv));
	assert_ok(kvshm_stats(kv, &st));
	assert_int_equal(st.janitor_pid, getpid());
	assert_ok(kvshm_janitor_release(kv));
	close(a.fd[0]);
	close(a.fd[1]);
}

/* A thread that holds one stripe lock for a while. */
struct holder {
	struct kv__seg *seg;
	uint32_t stripe;
	_Atomic int locked;
};

static void *hold_stripe(void *p)
{
	struct holder *h = p;

	if (kv__stripe_lock(h->seg, h->stripe) != 0)
		return NULL;
	atomic_store(&h->locked, 1);
	tu_sleep_ms(200);
	kv__stripe_unlock(h->seg, h->stripe);
	return NULL;
}

/* A write whose stripe lock times out (injected) fails with -ETIMEDOUT,
 * leaves the old value, and leaves no lock held: the next write works. */
static void test_lock_timeout_fails_the_write_cleanly(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 2 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	struct holder h = {.seg = kv__cur(kv)};
	struct kv__key k;
	pthread_t t;
	char got[16];
	size_t len;

	assert_ok(kvshm_set(kv, KS("key"), "old", 3, 0));
	kv__key_init(h.seg, &k, "key", 3);
	h.stripe = k.stripe;
	assert_int_equal(pthread_create(&t, NULL, hold_stripe, &h), 0);
	while (!atomic_load(&h.locked))
		tu_sleep_ms(1);
	kv__test_lock_timeouts = 1;
	assert_kv(kvshm_set(kv, KS("key"), "new", 3, 0), -ETIMEDOUT);
	kv__test_lock_timeouts = 0;
	pthread_join(t, NULL);
	assert_ok(kvshm_get(kv, KS("key"), got, sizeof(got), &len));
	assert_memory_equal(got, "old", 3);
	assert_ok(kvshm_set(kv, KS("key"), "new", 3, 0));
	assert_ok(kvshm_get(kv, KS("key"), got, sizeof(got), &len));
	assert_memory_equal(got, "new", 3);
	tu_check(kv);
}

/* ---- countdown fault sweeps ----------------------------------------------
 * For each injectable system call and each operation that makes it: fail
 * the 1st call, then the 2nd, ... until the operation succeeds. Every
 * failure must be a clean negative errno that leaves no file descriptor
 * open, nothing new in /dev/shm (no NAME.resize-PID either), and an
 * existing store intact and usable. */

#define FAULT_KEYS 50

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

/* How many objects in /dev/shm have a name starting with name. */
static int shm_objects(const char *name)
{
	const size_t len = strlen(name);
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += !strncmp(e->d_name, name, len);
	closedir(d);
	return n;
}

static void fault_fill(struct kvshm *kv)
{
	char k[32], v[32];

	for (int i = 0; i < FAULT_KEYS; i++) {
		snprintf(k, sizeof(k), "fk-%d", i);
		snprintf(v, sizeof(v), "value %d", i);
		assert_ok(kvshm_set(kv, KS(k), v, strlen(v), 0));
	}
}

/* Every key is there with its value, the store takes a write and checks. */
static void fault_store_intact(const char *name)
{
	struct kvshm *kv = NULL;
	char k[32], v[32], got[32];
	size_t len;

	assert_ok(kvshm_open(name, NULL, &kv));
	for (int i = 0; i < FAULT_KEYS; i++) {
		snprintf(k, sizeof(k), "fk-%d", i);
		snprintf(v, sizeof(v), "value %d", i);
		assert_ok(kvshm_get(kv, KS(k), got, sizeof(got), &len));
		assert_int_equal(len, strlen(v));
		assert_memory_equal(got, v, len);
	}
	assert_ok(kvshm_set(kv, KS("after"), "x", 1, 0));
	assert_int_equal(atomic_load(&kv__cur(kv)->hdr->life), KV_LIFE_LIVE);
	tu_check(kv);
	kvshm_close(kv);
}

enum fault_op { FOP_CREATE, FOP_ATTACH, FOP_RESIZE, FOP_UNLINK, FOP_N };
static const char *const fop_name[FOP_N] = {
	"kvshm_open (create)", "kvshm_open (attach)", "kvshm_resize",
	"kvshm_unlink"};

/* Run op on name (which exists, with the fault keys, unless op creates). */
static int fault_op_run(enum fault_op op, const char *name)
{
	struct kvshm_options create = tu_opts(KVSHM_CREATE | KVSHM_EXCL,
					      TU_MIB);
	struct kvshm_options bigger = tu_opts(0, 2 * TU_MIB);
	struct kvshm *kv = NULL;
	int rc;

	switch (op) {
	case FOP_CREATE:
	case FOP_ATTACH:
		rc = kvshm_open(name, op == FOP_CREATE ? &create : NULL, &kv);
		if (rc == 0)
			kvshm_close(kv);
		else
			assert_null(kv);
		return rc;
	case FOP_RESIZE:
		return kvshm_resize(name, &bigger);
	default:
		return kvshm_unlink(name);
	}
}

/* Fail the n-th call of *countdown's function during op, n = 1, 2, ...;
 * returns how many failing runs there were (the calls op makes). */
static long fault_sweep(struct tu_fx *fx, long *countdown, enum fault_op op)
{
	const char *name = tu_new_name(fx, "fault");
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, TU_MIB);

	for (long n = 1;; n++) {
		int fds, rc;

		assert_true(n < 100);
		if (op != FOP_CREATE) {
			struct kvshm *kv = NULL;
			assert_ok(kvshm_open(name, &o, &kv));
			fault_fill(kv);
			kvshm_close(kv);
		}
		fds = open_fds();
		*countdown = n;
		rc = fault_op_run(op, name);
		*countdown = 0;
		assert_int_equal(open_fds(), fds); /* no descriptor leaked */
		if (rc == 0) {
			/* the n-th call was never made: the op is done */
			if (op == FOP_UNLINK) {
				assert_int_equal(shm_objects(name), 0);
			} else {
				assert_int_equal(shm_objects(name), 1);
				if (op != FOP_CREATE)
					fault_store_intact(name);
				assert_ok(kvshm_unlink(name));
			}
			return n - 1;
		}
		if (rc >= 0 || rc < -4095)
			fail_msg("%s with call %ld failing returned %d", fop_name[op],
				 n, rc);
		if (op == FOP_CREATE) {
			struct kvshm *kv = NULL;
			/* nothing half-created: the name is free again */
			assert_int_equal(shm_objects(name), 0);
			assert_kv(kvshm_open(name, NULL, &kv), -ENOENT);
			continue;
		}
		/* the store as it was, and nothing else (no NAME.resize-PID) */
		assert_int_equal(shm_objects(name), 1);
		fault_store_intact(name);
		if (op == FOP_RESIZE) { /* and a later resize works */
			struct kvshm_options bigger = tu_opts(0, 2 * TU_MIB);
			assert_ok(kvshm_resize(name, &bigger));
			assert_int_equal(shm_objects(name), 1);
			fault_store_intact(name);
		}
		assert_ok(kvshm_unlink(name));
	}
}

static void test_every_failing_system_call_fails_cleanly_and_leaves_nothing(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	static const char *const fault_name[] = {"ftruncate", "mmap",
						 "getrandom", "posix_fallocate"};
	long *faults[] = {&kv__test_fail_ftruncate, &kv__test_fail_mmap,
			  &kv__test_fail_getrandom, &kv__test_fail_fallocate};
	long failing = 0;

	for (size_t f = 0; f < sizeof(faults) / sizeof(faults[0]); f++)
		for (int op = 0; op < FOP_N; op++) {
			const long calls = fault_sweep(fx, faults[f], op);
			failing += calls;
			print_message("%s failing in %s: %ld call(s), each "
				      "failed cleanly\n",
				      fault_name[f], fop_name[op], calls);
		}
	assert_true(failing >= 5); /* create and resize make these calls */
}

/* ---- injected lock timeouts across every write ---------------------------- */

/* A thread that holds a set of mutexes for a while. */
struct mutex_holder {
	struct kv__seg *seg;
	pthread_mutex_t *m[KV_MAX_LANES + 1];
	int n;
	_Atomic int locked;
};

static void *hold_mutexes(void *p)
{
	struct mutex_holder *h = p;

	for (int i = 0; i < h->n; i++)
		if (kv__lock(h->seg, h->m[i], NULL, NULL) != 0)
			return NULL;
	atomic_store(&h->locked, 1);
	tu_sleep_ms(50);
	for (int i = h->n - 1; i >= 0; i--)
		kv__unlock(h->m[i]);
	return NULL;
}

enum { LT_SET, LT_ADD, LT_CAS, LT_DELETE, LT_DELETE_CAS, LT_EXPIRE,
       LT_INCR, LT_SWEEP, LT_N };
static const char *const lt_name[LT_N] = {
	"set", "put ADD", "put CAS", "delete", "delete_cas", "expire",
	"incr (create)", "sweep"};

static int lt_op(struct kvshm *kv, int op, uint64_t cas)
{
	struct kvshm_write w = {.mode = op == LT_ADD ? KVSHM_ADD
				      : op == LT_CAS ? KVSHM_CAS
						     : KVSHM_SET,
				.cas = cas};
	const char *key = op == LT_ADD || op == LT_INCR ? "fresh" : "key";

	switch (op) {
	case LT_SET:
	case LT_ADD:
	case LT_CAS:
		return kvshm_put(kv, KS(key), "new", 3, &w, NULL);
	case LT_DELETE:
		return kvshm_delete(kv, KS(key));
	case LT_DELETE_CAS:
		return kvshm_delete_cas(kv, KS(key), cas);
	case LT_EXPIRE:
		return kvshm_expire(kv, KS(key), 1);
	case LT_INCR:
		return kvshm_incr(kv, KS(key), 1, 0, NULL);
	default:
		return kvshm_sweep(kv, 0, NULL);
	}
}

/* No lock of the segment is held: each can be taken at once. */
static void assert_no_lock_held(struct kv__seg *seg)
{
	for (uint32_t s = 0; s < seg->nstripes; s++) {
		assert_ok(kv__trylock(seg, &seg->stripes[s].mutex, NULL, NULL));
		kv__unlock(&seg->stripes[s].mutex);
	}
	for (uint32_t l = 0; l < seg->nlanes; l++) {
		assert_ok(kv__trylock(seg, &seg->lanes[l].mutex, NULL, NULL));
		kv__unlock(&seg->lanes[l].mutex);
	}
	assert_ok(kv__trylock(seg, &seg->cleaner->mutex, NULL, NULL));
	kv__unlock(&seg->cleaner->mutex);
}

/* Every write whose lock wait times out (injected while another thread
 * holds its stripe lock, or every lane for the writes that allocate)
 * returns -ETIMEDOUT, changes nothing, and leaves no lock held. */
static void test_lock_timeout_fails_every_write_cleanly(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 2 * TU_MIB);
	long timeouts = 0;

	for (int op = 0; op < LT_N; op++)
		for (int lanes = 0; lanes < 2; lanes++) {
			struct kvshm *kv = tu_create(fx, &o, NULL);
			struct mutex_holder h = {.seg = kv__cur(kv)};
			const struct kvshm_write expired = {.expires_at_ms = 1};
			struct kv__key k;
			pthread_t t;
			uint64_t cas;
			char got[16];
			size_t len;
			int rc;
			const bool allocates = op == LT_SET || op == LT_ADD ||
					       op == LT_CAS || op == LT_INCR;

			if (lanes && !allocates) {
				tu_close(fx, kv);
				continue;
			}
			assert_ok(kvshm_put(kv, KS("key"), "old", 3, NULL, &cas));
			assert_ok(kvshm_put(kv, KS("gone"), "old", 3, &expired,
					    NULL));
			const char *key = op == LT_ADD || op == LT_INCR ? "fresh"
					  : op == LT_SWEEP ? "gone"
							   : "key";

			kv__key_init(h.seg, &k, key, strlen(key));
			if (lanes)
				for (uint32_t l = 0; l < h.seg->nlanes; l++)
					h.m[h.n++] = &h.seg->lanes[l].mutex;
			else
				h.m[h.n++] = &h.seg->stripes[k.stripe].mutex;
			assert_int_equal(pthread_create(&t, NULL, hold_mutexes,
							&h), 0);
			while (!atomic_load(&h.locked))
				tu_sleep_ms(1);
			kv__test_lock_timeouts = 1;
			rc = lt_op(kv, op, cas);
			if (rc != -ETIMEDOUT)
				fail_msg("%s, %s held: %d (%s), not -ETIMEDOUT",
					 lt_name[op], lanes ? "every lane" : "its stripe",
					 rc, kvshm_strerror(rc));
			assert_int_equal(kv__test_lock_timeouts, 0);
			kv__test_lock_timeouts = 0;
			pthread_join(t, NULL);
			timeouts++;
			/* nothing changed, no lock left */
			assert_no_lock_held(h.seg);
			assert_ok(kvshm_get(kv, KS("key"), got, sizeof(got),
					    &len));
			assert_int_equal(len, 3);
			assert_memory_equal(got, "old", 3);
			{
				int64_t ttl;
				assert_ok(kvshm_ttl(kv, KS("key"), &ttl));
				assert_int_equal(ttl, -1);
			}
			assert_kv(kvshm_exists(kv, KS("fresh")), 0);
			assert_int_equal(tu_items(kv), 2); /* "gone" not swept */
			tu_check(kv);
			/* and the same write works now */
			assert_ok(lt_op(kv, op, cas));
			tu_check(kv);
			tu_close(fx, kv);
		}
	print_message("%ld lock waits timed out cleanly (%d kinds of write; "
		      "stripe held, and every lane held for the %d that "
		      "allocate)\n", timeouts, LT_N, 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_segment_of_another_layout_version_is_refused),
		T(test_segment_of_another_lock_abi_is_refused),
		T(test_segment_with_a_damaged_header_is_refused),
		T(test_segment_from_another_pid_namespace_is_refused),
		T(test_open_waits_for_a_stuck_creator_then_times_out),
		T(test_failed_creation_leaves_nothing_behind),
		T(test_check_reports_a_damaged_slot),
		T(test_janitor_role_has_one_holder_and_dies_with_it),
		T(test_lock_timeout_fails_the_write_cleanly),
		T(test_every_failing_system_call_fails_cleanly_and_leaves_nothing),
		T(test_lock_timeout_fails_every_write_cleanly),
		T(test_unlink_refuses_what_is_not_a_kvshm_store),
		T(test_forced_unlink_removes_anything_but_a_directory),
		T(test_unlink_removes_a_store_of_another_layout_or_damaged),
		T(test_a_store_larger_than_its_tmpfs_fails_with_enospc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
