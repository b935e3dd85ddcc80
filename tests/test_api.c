/* SPDX-License-Identifier: MIT */
/*
 * test_api.c - every function of include/kvshm.h and each of its documented
 * errors, one process, one thread. Each test gets fresh stores, checked with
 * kvshm_check() and unlinked in teardown.
 */
#include "testutil.h"

#include <pthread.h>

/* ---- helpers ---------------------------------------------------------- */

static struct kvshm_stats stats_of(struct kvshm *kv)
{
	struct kvshm_stats st;

	memset(&st, 0xa5, sizeof(st));
	assert_ok(kvshm_stats(kv, &st));
	return st;
}

/* A fresh store of arena bytes with a default TTL and extra flags. */
static struct kvshm *new_store(struct tu_fx *fx, uint64_t arena,
			       uint32_t flags, uint64_t default_ttl_ms,
			       const char **name)
{
	struct kvshm_options o = tu_opts(flags, arena);

	o.default_ttl_ms = default_ttl_ms;
	return tu_create(fx, &o, name);
}

static void set_str(struct kvshm *kv, const char *k, const char *v,
		    uint64_t ttl_ms)
{
	assert_ok(kvshm_set(kv, KS(k), KS(v), ttl_ms));
}

static void assert_bytes(struct kvshm *kv, const void *k, size_t klen,
			 const void *v, size_t vlen)
{
	static char buf[300 * 1024];
	size_t got = (size_t)-1;

	assert_true(vlen <= sizeof(buf));
	assert_ok(kvshm_get(kv, k, klen, buf, sizeof(buf), &got));
	assert_int_equal(got, vlen);
	assert_memory_equal(buf, v, vlen);
}

static void assert_str(struct kvshm *kv, const char *k, const char *v)
{
	assert_bytes(kv, KS(k), KS(v));
}

static void assert_gone(struct kvshm *kv, const char *k)
{
	char buf[64];

	assert_kv(kvshm_get(kv, KS(k), buf, sizeof(buf), NULL), -ENOENT);
	assert_kv(kvshm_exists(kv, KS(k)), 0);
}

static struct kvshm_item item_of(struct kvshm *kv, const char *k,
				 unsigned flags)
{
	char buf[4096];
	struct kvshm_item it;

	memset(&it, 0xa5, sizeof(it));
	assert_ok(kvshm_get_ex(kv, KS(k), buf, sizeof(buf), &it, flags));
	return it;
}

static int put_str(struct kvshm *kv, const char *k, const char *v,
		   const struct kvshm_write *w, uint64_t *cas)
{
	return kvshm_put(kv, KS(k), KS(v), w, cas);
}

static int64_t ttl_of(struct kvshm *kv, const char *k)
{
	int64_t t = INT64_MIN;

	assert_ok(kvshm_ttl(kv, KS(k), &t));
	return t;
}

/* ttl of k is in (want - 2000, want]: set within the last two seconds. */
static void assert_ttl_near(struct kvshm *kv, const char *k, int64_t want)
{
	const int64_t t = ttl_of(kv, k);

	if (t > want || t <= want - 2000)
		fail_msg("ttl of %s is %" PRId64 ", expected about %" PRId64,
			 k, t, want);
}

static void write_file(const char *path, const void *buf, size_t len)
{
	const int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static void *read_file(const char *path, size_t *len)
{
	struct stat st;
	const int fd = open(path, O_RDONLY);
	char *buf;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

/* Key pfx + "%05d" of i holds vlen bytes derived from i. */
static void set_key_i(struct kvshm *kv, const char *pfx, int i, size_t vlen,
		      int *rc)
{
	char k[64], v[8192];

	snprintf(k, sizeof(k), "%s%05d", pfx, i);
	assert_true(vlen <= sizeof(v));
	for (size_t j = 0; j < vlen; j++)
		v[j] = (char)(i * 31 + j);
	*rc = kvshm_set(kv, KS(k), v, vlen, 0);
}

static bool key_i_intact(struct kvshm *kv, const char *pfx, int i,
			 size_t vlen)
{
	char k[64], v[8192];
	size_t got = 0;

	snprintf(k, sizeof(k), "%s%05d", pfx, i);
	if (kvshm_get(kv, KS(k), v, sizeof(v), &got) != 0 || got != vlen)
		return false;
	for (size_t j = 0; j < vlen; j++)
		if (v[j] != (char)(i * 31 + j))
			return false;
	return true;
}

/* Scan that records what it visits. */
struct visits {
	int calls;
	int stop_at;  /* return stop_rc at this call (1-based), 0 = never */
	int stop_rc;
	unsigned char seen[1000]; /* visits of key "k" */
	struct kvshm *del; /* delete each visited key through this handle */
	int del_ok;
	struct kvshm_item last;
	char prefix[16];
	bool bad_prefix;
};

static int visit(const void *key, size_t klen, const struct kvshm_item *it,
		 void *ctx)
{
	struct visits *v = ctx;
	char k[128];
	int i;

	v->calls++;
	v->last = *it;
	if (klen >= sizeof(k))
		klen = sizeof(k) - 1;
	memcpy(k, key, klen);
	k[klen] = 0;
	if (strncmp(k, v->prefix, strlen(v->prefix)) != 0)
		v->bad_prefix = true;
	if (sscanf(k, "k%5d", &i) == 1 && i >= 0 && i < 1000 &&
	    v->seen[i] < 255)
		v->seen[i]++;
	if (v->del) {
		char other[32];

		v->del_ok += kvshm_delete(v->del, key, klen) == 0;
		/* and a write to another key, also while the scan runs */
		snprintf(other, sizeof(other), "other%d", v->calls);
		if (kvshm_set(v->del, KS(other), KS("x"), 0) != 0)
			v->del_ok = -100000;
	}
	if (v->stop_at && v->calls == v->stop_at)
		return v->stop_rc;
	return 0;
}

/* Scan everything matching prefix in one call; returns keys visited. */
static int scan_all(struct kvshm *kv, const char *prefix, struct visits *v)
{
	uint64_t cursor = 0;
	int n;

	snprintf(v->prefix, sizeof(v->prefix), "%s", prefix);
	n = kvshm_scan(kv, KS(prefix), &cursor, 0, visit, v);
	assert_true(n >= 0);
	assert_int_equal(cursor, 0);
	assert_int_equal(n, v->calls);
	assert_false(v->bad_prefix);
	return n;
}

/* ---- open, names, geometry -------------------------------------------- */

static void test_version_functions_match_the_header(void **state)
{
	(void)state;
	assert_string_equal(kvshm_version(), KVSHM_VERSION_STRING);
	assert_int_equal(kvshm_layout_version(), KVSHM_LAYOUT_VERSION);
}

static void test_open_without_create_of_missing_store_returns_enoent(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 0);
	struct kvshm *kv = NULL;
	const char *name = tu_new_name(fx, "missing");

	assert_kv(kvshm_open(name, &o, &kv), -ENOENT);
	assert_null(kv);
	assert_kv(kvshm_open(name, NULL, &kv), -ENOENT);
	assert_kv(kvshm_open(tu_new_path(fx, "missing"), NULL, &kv), -ENOENT);
	o.flags = KVSHM_RDONLY;
	assert_kv(kvshm_open(name, &o, &kv), -ENOENT);
}

static void test_open_with_create_makes_a_store_that_others_attach_to(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	const char *name = tu_new_name(fx, "c");
	struct kvshm *a = tu_open(fx, name, &o);
	struct kvshm *b = tu_open(fx, name, &o); /* exists now: attaches */
	struct kvshm *c = tu_open(fx, name, NULL);

	set_str(a, "k", "from a", 0);
	assert_str(b, "k", "from a");
	assert_str(c, "k", "from a");
	set_str(c, "k", "from c", 0);
	assert_str(a, "k", "from c");
	tu_check(a);
}

static void test_open_with_create_excl_of_existing_store_returns_eexist(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, 0);
	struct kvshm *kv = NULL;

	set_str(fx->kv, "k", "v", 0);
	assert_kv(kvshm_open(fx->name, &o, &kv), -EEXIST);
	assert_null(kv);
	assert_str(fx->kv, "k", "v");
}

static void test_open_with_null_options_attaches_to_an_existing_store(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *kv = tu_open(fx, fx->name, NULL);

	set_str(fx->kv, "k", "v", 0);
	assert_str(kv, "k", "v");
}

static void test_open_with_zero_options_size_is_taken_as_current_size(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	const char *name = tu_new_name(fx, "z");

	o.size = 0;
	o.max_key_bytes = 100;
	struct kvshm *kv = tu_open(fx, name, &o);
	assert_int_equal(stats_of(kv).max_key_bytes, 100);
}

static void test_open_of_invalid_name_returns_einval(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	struct kvshm *kv = NULL;
	char longname[1001];

	memset(longname, 'a', 1000);
	longname[1000] = 0;
	assert_kv(kvshm_open("", &o, &kv), -EINVAL);
	assert_kv(kvshm_open(NULL, &o, &kv), -EINVAL);
	assert_kv(kvshm_open(tu_new_name(fx, "noout"), &o, NULL), -EINVAL);
	assert_kv(kvshm_unlink(""), -EINVAL);
	assert_kv(kvshm_unlink(NULL), -EINVAL);
	/* issue 2: "Invalid names give -EINVAL"; too long is invalid */
	assert_kv(kvshm_open(longname, &o, &kv), -EINVAL);
	assert_kv(kvshm_unlink(longname), -EINVAL);
	assert_null(kv);
}

static void test_dot_and_dotdot_are_refused_as_store_names(void **state)
{
	struct kvshm_options o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	struct kvshm *kv = NULL;
	int rc;

	(void)state;
	rc = kvshm_open(".", &o, &kv);
	if (rc >= 0)
		fail_msg("open(\".\") returned %d", rc);
	rc = kvshm_open("..", &o, &kv);
	if (rc >= 0)
		fail_msg("open(\"..\") returned %d", rc);
	assert_null(kv);
}

static void test_open_with_invalid_options_returns_einval(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o;
	struct kvshm *kv = NULL;
	const char *name = tu_new_name(fx, "badopt");

	o = tu_opts(KVSHM_CREATE | (1u << 20), 4 * TU_MIB);
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL);
	o = tu_opts(KVSHM_CREATE, TU_MIB - 1);
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL);
	o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	o.max_key_bytes = 65536;
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL);
	o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	o.mode = 0777; /* could never be attached to */
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL);
	o.mode = 04600;
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL);
	o = tu_opts(KVSHM_EXCL, 4 * TU_MIB); /* EXCL means nothing alone */
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL);
	o = tu_opts(KVSHM_CREATE | KVSHM_RDONLY, 4 * TU_MIB); /* cannot init */
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL);
	assert_null(kv);
	/* nothing was created by the failed calls */
	assert_kv(kvshm_open(name, NULL, &kv), -ENOENT);
	/* the limits themselves are accepted */
	o = tu_opts(KVSHM_CREATE, TU_MIB);
	o.max_key_bytes = 65535;
	kv = tu_open(fx, name, &o);
	assert_int_equal(stats_of(kv).max_key_bytes, 65535);
	assert_int_equal(stats_of(kv).arena_bytes, TU_MIB);
}

/* Sizes and limits outside the documented ranges are refused up front;
 * nothing is created. */
static void test_open_with_out_of_range_sizes_returns_einval(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *name = tu_new_name(fx, "range");
	struct kvshm_options o;
	struct kvshm *kv = NULL;

	o = tu_opts(KVSHM_CREATE, (UINT64_C(1) << 40) + TU_MIB);
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL); /* over 1 TiB */
	o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	o.max_value_bytes = TU_MIB + 1; /* over 1/4 of the segment */
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL);
	o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	o.max_items = UINT64_C(1) << 40; /* an index larger than the segment */
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL);
	o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	o.size = 4; /* too small to hold even the flags */
	assert_kv(kvshm_open(name, &o, &kv), -EINVAL);
	assert_null(kv);
	assert_kv(kvshm_open(name, NULL, &kv), -ENOENT);
}

/* A caller built against a newer kvshm passes a larger options struct: it
 * works while the fields this version does not know are zero, and is
 * refused (-E2BIG), not silently half-obeyed, when one is set. */
static void test_options_from_a_newer_caller_work_only_with_unknown_fields_zero(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct {
		struct kvshm_options o;
		uint64_t future_option;
	} newer;
	const char *name = tu_new_name(fx, "newer");
	struct kvshm *kv = NULL;

	memset(&newer, 0, sizeof(newer));
	newer.o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	newer.o.size = sizeof(newer);
	newer.future_option = 1;
	assert_kv(kvshm_open(name, &newer.o, &kv), -E2BIG);
	assert_kv(kvshm_resize(name, &newer.o), -E2BIG);
	assert_null(kv);
	assert_kv(kvshm_open(name, NULL, &kv), -ENOENT);
	newer.o.size = 1u << 20; /* absurd: refused before reading past */
	assert_kv(kvshm_open(name, &newer.o, &kv), -EINVAL);
	newer.o.size = sizeof(newer);
	newer.future_option = 0;
	kv = tu_open(fx, name, &newer.o);
	assert_int_equal(stats_of(kv).arena_bytes, 4 * TU_MIB);
}

/* kvshm_resize() with nothing to resize to, or no store, changes nothing. */
static void test_resize_with_bad_arguments_fails_and_changes_nothing(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *name = tu_new_name(fx, "rs");
	struct kvshm_options o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	struct kvshm *kv = tu_open(fx, name, &o);

	assert_ok(kvshm_set(kv, KS("k"), KS("v"), 0));
	assert_kv(kvshm_resize(name, NULL), -EINVAL);
	o = tu_opts(0, 0);
	assert_kv(kvshm_resize(name, &o), -EINVAL); /* no size given */
	o = tu_opts(0, TU_MIB - 1);
	assert_kv(kvshm_resize(name, &o), -EINVAL); /* below the minimum */
	o = tu_opts(0, 8 * TU_MIB);
	assert_kv(kvshm_resize(tu_new_name(fx, "nostore"), &o), -ENOENT);
	assert_kv(kvshm_resize("", &o), -EINVAL);
	assert_int_equal(stats_of(kv).arena_bytes, 4 * TU_MIB);
	assert_str(kv, "k", "v");
}

/* Issue 13, defect 10: "/myapp", the way shm_open(3) users write names,
 * became a 64 MiB file in the root directory. A leading '/' and no other
 * is the shm object now: "/NAME" and "NAME" are one store in /dev/shm,
 * for open, resize and unlink alike; "/", "/." and "/.." are refused. */
static void test_leading_slash_and_no_other_is_the_shm_object(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, 2 * TU_MIB);
	struct kvshm_options bigger = tu_opts(0, 3 * TU_MIB);
	const char *name = tu_new_name(fx, "slash");
	char slashed[TU_NAME_LEN + 2], shm_path[TU_NAME_LEN + 16];
	struct kvshm *kv = NULL, *plain;
	struct stat st;
	bool in_root;
	int rc;

	snprintf(slashed, sizeof(slashed), "/%s", name);
	snprintf(shm_path, sizeof(shm_path), "/dev/shm/%s", name);
	rc = kvshm_open(slashed, &o, &kv);
	in_root = stat(slashed, &st) == 0;
	if (in_root) /* the old rule: do not leave it in / */
		unlink(slashed);
	assert_false(in_root);
	assert_ok(rc);
	tu_track(fx, kv);
	assert_int_equal(stat(shm_path, &st), 0);
	assert_int_equal(st.st_size, 2 * TU_MIB);
	set_str(kv, "k", "v", 0);
	plain = tu_open(fx, name, NULL); /* the same store */
	assert_str(plain, "k", "v");

	assert_ok(kvshm_resize(slashed, &bigger));
	assert_str(kv, "k", "v"); /* both handles follow it */
	assert_str(plain, "k", "v");
	assert_int_equal(stats_of(plain).arena_bytes, 3 * TU_MIB);
	assert_int_equal(stat(shm_path, &st), 0);
	assert_int_equal(st.st_size, 3 * TU_MIB);

	assert_ok(kvshm_unlink(slashed));
	assert_kv(kvshm_open(name, NULL, &kv), -ENOENT);
	assert_str(plain, "k", "v"); /* open handles keep working */

	static const char *const bad[] = {"/", "/.", "/.."};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		kv = NULL;
		assert_kv(kvshm_open(bad[i], &o, &kv), -EINVAL);
		assert_null(kv);
		assert_kv(kvshm_unlink(bad[i]), -EINVAL);
	}
}

static void test_name_with_slash_is_a_file_path(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, 2 * TU_MIB);
	const char *path = tu_new_path(fx, "store");
	char dotted[TU_NAME_LEN + 16], cwd[PATH_MAX];
	struct kvshm *kv = tu_open(fx, path, &o);
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 2 * TU_MIB);
	set_str(kv, "k", "v", 0);

	/* "sub/../store" is just another spelling of the same path */
	snprintf(dotted, sizeof(dotted), "%s/sub", tu_dir(fx));
	assert_int_equal(mkdir(dotted, 0700), 0);
	snprintf(dotted, sizeof(dotted), "%s/sub/../store", tu_dir(fx));
	assert_str(tu_open(fx, dotted, NULL), "k", "v");

	/* and a relative path with a '/' is relative to the cwd */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(tu_dir(fx)), 0);
	struct kvshm *rel = NULL;
	const int rc = kvshm_open("./store", NULL, &rel);
	assert_int_equal(chdir(cwd), 0);
	assert_ok(rc);
	tu_track(fx, rel);
	assert_str(rel, "k", "v");

	assert_ok(kvshm_unlink(path));
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_str(kv, "k", "v");
}

static void test_default_options_give_the_documented_geometry(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 0);
	const int64_t t0 = tu_now_ms();
	struct kvshm *kv = tu_create(fx, &o, NULL);
	const int64_t t1 = tu_now_ms();
	struct kvshm_stats st = stats_of(kv);

	assert_int_equal(st.arena_bytes, 64 * TU_MIB);
	assert_int_equal(st.max_items, 64 * TU_MIB / 128);
	assert_int_equal(st.max_key_bytes, 512);
	assert_int_equal(st.max_value_bytes, TU_MIB);
	assert_int_equal(st.default_ttl_ms, 0);
	assert_int_equal(st.noevict, 0);
	assert_true(st.stripes > 0);
	assert_true(st.segment_bytes > 0);
	assert_true(st.data_bytes > st.arena_bytes / 2);
	assert_true(st.data_bytes < st.arena_bytes);
	assert_true((int64_t)st.created_at_ms >= t0 &&
		    (int64_t)st.created_at_ms <= t1);
	assert_int_equal(st.items, 0);

	/* max_value_bytes is arena_bytes / 16 when that is smaller */
	st = stats_of(fx->kv);
	assert_int_equal(st.arena_bytes, 4 * TU_MIB);
	assert_int_equal(st.max_value_bytes, 4 * TU_MIB / 16);
	assert_int_equal(st.max_items, 4 * TU_MIB / 128);
}

static void test_attach_with_other_create_options_keeps_the_original_geometry(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_NOEVICT, 4 * TU_MIB);
	const char *name;
	struct kvshm *a, *b;
	struct kvshm_stats sa, sb;
	char key[101];

	o.max_items = 5000;
	o.max_key_bytes = 100;
	o.max_value_bytes = 1000;
	o.default_ttl_ms = 123456;
	a = tu_create(fx, &o, &name);
	o = tu_opts(KVSHM_CREATE, 16 * TU_MIB);
	o.max_items = 9999;
	o.max_key_bytes = 200;
	o.max_value_bytes = 5000;
	o.default_ttl_ms = 7;
	b = tu_open(fx, name, &o);
	sa = stats_of(a);
	sb = stats_of(b);
	assert_int_equal(sb.arena_bytes, 4 * TU_MIB);
	assert_true(sb.max_items >= 5000);
	assert_int_equal(sb.max_items, sa.max_items);
	assert_int_equal(sb.max_key_bytes, 100);
	assert_int_equal(sb.max_value_bytes, 1000);
	assert_int_equal(sb.default_ttl_ms, 123456);
	assert_int_equal(sb.noevict, 1);
	assert_int_equal(sb.created_at_ms, sa.created_at_ms);

	memset(key, 'k', sizeof(key));
	assert_kv(kvshm_set(b, key, 101, KS("v"), 0), -E2BIG);
	assert_ok(kvshm_set(b, key, 100, KS("v"), 0));
	int64_t t = 0;
	assert_ok(kvshm_ttl(b, key, 100, &t)); /* the original default TTL */
	assert_true(t > 123456 - 2000 && t <= 123456);
	char big[1001] = { 0 };
	assert_kv(kvshm_set(b, KS("x"), big, 1001, 0), -E2BIG);
	assert_ok(kvshm_set(b, KS("x"), big, 1000, 0));
}

static void test_file_of_zeros_is_not_a_store_and_returns_ebadmsg(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *path = tu_new_path(fx, "zeros");
	void *zeros = calloc(1, TU_MIB);
	struct kvshm *kv = NULL;
	int64_t t0;

	write_file(path, zeros, TU_MIB);
	free(zeros);
	tu_watchdog(20);
	t0 = tu_mono_ms();
	assert_kv(kvshm_open(path, NULL, &kv), -EBADMSG);
	print_message("open of a zero-filled file took %" PRId64 " ms\n",
		      tu_mono_ms() - t0);
	tu_watchdog(0);
	assert_null(kv);
}

static void test_file_of_random_bytes_returns_ebadmsg_and_is_left_untouched(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *path = tu_new_path(fx, "random");
	struct kvshm_options o = tu_opts(KVSHM_CREATE, 4 * TU_MIB);
	uint64_t *junk = malloc(TU_MIB), seed = 0x1234567 ^ (uint64_t)getpid();
	struct kvshm *kv = NULL;
	size_t len;
	void *after;

	for (size_t i = 0; i < TU_MIB / 8; i++)
		junk[i] = tu_rand(&seed);
	write_file(path, junk, TU_MIB);
	tu_watchdog(20);
	assert_kv(kvshm_open(path, NULL, &kv), -EBADMSG);
	/* CREATE must not take a foreign file over */
	assert_kv(kvshm_open(path, &o, &kv), -EBADMSG);
	tu_watchdog(0);
	assert_null(kv);
	after = read_file(path, &len);
	assert_int_equal(len, TU_MIB);
	assert_memory_equal(after, junk, TU_MIB);
	free(after);
	free(junk);
}

/* Create a 2 MiB store at name with one key, closed again. */
static void make_closed_store(struct tu_fx *fx, const char *name)
{
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, 2 * TU_MIB);
	struct kvshm *kv = tu_open(fx, name, &o);

	set_str(kv, "k", "v", 0);
	tu_close(fx, kv);
}

static void test_truncated_store_returns_ebadmsg(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *names[2] = { tu_new_name(fx, "trunc"),
				 tu_new_path(fx, "trunc") };
	const off_t sizes[2] = { TU_MIB, 4096 };
	char path[TU_NAME_LEN + 16];
	struct kvshm *kv = NULL;

	for (int i = 0; i < 2; i++) {
		make_closed_store(fx, names[i]);
		tu_fs_path(names[i], path, sizeof(path));
		for (int j = 0; j < 2; j++) {
			assert_int_equal(truncate(path, sizes[j]), 0);
			assert_kv(kvshm_open(names[i], NULL, &kv), -EBADMSG);
			assert_null(kv);
		}
	}
}

static void test_store_with_corrupt_magic_returns_ebadmsg(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *path = tu_new_path(fx, "magic");
	unsigned char head[8];
	struct kvshm *kv = NULL;
	int fd;

	make_closed_store(fx, path);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, head, sizeof(head), 0), sizeof(head));
	for (size_t i = 0; i < sizeof(head); i++)
		head[i] ^= 0xff;
	assert_int_equal(pwrite(fd, head, sizeof(head), 0), sizeof(head));
	close(fd);
	assert_kv(kvshm_open(path, NULL, &kv), -EBADMSG);
	assert_null(kv);
}

static void test_store_abandoned_by_a_dead_creator_is_initialised_afresh_with_create(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE, 2 * TU_MIB);
	const char *path = tu_new_path(fx, "abandoned");
	struct kvshm *kv = NULL;
	struct stat st;

	/* what a creator killed right after its O_EXCL open leaves behind */
	write_file(path, "", 0);
	tu_watchdog(20);
	assert_kv(kvshm_open(path, NULL, &kv), -EBADMSG);
	o.mode = 0640;
	kv = tu_open(fx, path, &o);
	tu_watchdog(0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_size, 2 * TU_MIB);
	assert_ok(kvshm_set(kv, KS("k"), KS("v"), 0));
	assert_str(tu_open(fx, path, NULL), "k", "v");
	tu_check(kv);
}

static void test_created_store_has_exactly_the_requested_mode_whatever_the_umask(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	static const mode_t umasks[] = { 077, 0, 022 };
	static const uint32_t modes[] = { 0, 0600, 0640, 0604, 0660, 0666 };
	char path[TU_NAME_LEN + 16];
	struct stat st;

	for (size_t u = 0; u < sizeof(umasks) / sizeof(umasks[0]); u++) {
		tu_umask(fx, umasks[u]);
		for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
			for (int as_path = 0; as_path < 2; as_path++) {
				struct kvshm_options o = tu_opts(KVSHM_CREATE, TU_MIB);
				const char *name = as_path ? tu_new_path(fx, "mode") :
							     tu_new_name(fx, "mode");
				struct kvshm *kv;
				const mode_t want = modes[m] ? modes[m] : 0600;

				o.mode = modes[m];
				kv = tu_open(fx, name, &o);
				assert_int_equal(stat(tu_fs_path(name, path, sizeof(path)), &st), 0);
				if ((st.st_mode & 07777) != want)
					fail_msg("umask %03o mode %03o: %s has mode %03o",
						 (unsigned)umasks[u], (unsigned)want,
						 name, (unsigned)(st.st_mode & 07777));
				tu_close(fx, kv);
				assert_ok(kvshm_unlink(name));
			}
		}
	}
}

static void test_attach_accepts_mode_0666_and_refuses_wider_modes_with_eacces(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	static const mode_t ok[] = { 0600, 0644, 0666, 0660 };
	static const mode_t wide[] = { 0777, 0700, 0601, 0610, 04600, 02600, 01600 };
	const char *names[2] = { tu_new_name(fx, "wide"), tu_new_path(fx, "wide") };
	char path[TU_NAME_LEN + 16];
	struct kvshm *kv = NULL;

	for (int i = 0; i < 2; i++) {
		make_closed_store(fx, names[i]);
		tu_fs_path(names[i], path, sizeof(path));
		for (size_t j = 0; j < sizeof(ok) / sizeof(ok[0]); j++) {
			assert_int_equal(chmod(path, ok[j]), 0);
			kv = tu_open(fx, names[i], NULL);
			assert_str(kv, "k", "v");
			tu_close(fx, kv);
		}
		for (size_t j = 0; j < sizeof(wide) / sizeof(wide[0]); j++) {
			kv = NULL;
			assert_int_equal(chmod(path, wide[j]), 0);
			const int rc = kvshm_open(names[i], NULL, &kv);
			if (rc != -EACCES)
				fail_msg("%s with mode %04o: open returned %d (%s)",
					 names[i], (unsigned)wide[j], rc,
					 kvshm_strerror(rc));
			assert_null(kv);
		}
		assert_int_equal(chmod(path, 0600), 0);
	}
}

static void test_attach_to_store_owned_by_another_user_returns_eacces(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char *names[2] = { tu_new_name(fx, "owner"), tu_new_path(fx, "owner") };
	char path[TU_NAME_LEN + 16];
	struct kvshm *kv = NULL;

	if (geteuid() != 0) {
		print_message("needs root to chown a store to another user\n");
		skip();
	}
	for (int i = 0; i < 2; i++) {
		make_closed_store(fx, names[i]);
		tu_fs_path(names[i], path, sizeof(path));
		assert_int_equal(chown(path, 65534, 65534), 0);
		assert_kv(kvshm_open(names[i], NULL, &kv), -EACCES);
		assert_null(kv);
		assert_int_equal(chown(path, 0, 0), 0);
	}
}

static void test_symlinked_store_name_returns_eloop(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE, TU_MIB);
	const char *real = tu_new_path(fx, "real");
	const char *link = tu_new_path(fx, "link");
	const char *dangle = tu_new_path(fx, "dangle");
	const char *shm_real = tu_new_name(fx, "real");
	const char *shm_link = tu_new_name(fx, "link");
	char target[TU_NAME_LEN + 16], path[TU_NAME_LEN + 16];
	struct kvshm *kv = NULL;
	struct stat st;

	make_closed_store(fx, real);
	assert_int_equal(symlink("real", link), 0);
	assert_kv(kvshm_open(link, NULL, &kv), -ELOOP);
	assert_kv(kvshm_open(link, &o, &kv), -ELOOP);

	/* a dangling link is not followed to create its target either */
	snprintf(target, sizeof(target), "%s/nothing", tu_dir(fx));
	assert_int_equal(symlink(target, dangle), 0);
	assert_kv(kvshm_open(dangle, &o, &kv), -ELOOP);
	assert_int_equal(lstat(target, &st), -1);

	make_closed_store(fx, shm_real);
	assert_int_equal(symlink(tu_fs_path(shm_real, target, sizeof(target)),
				 tu_fs_path(shm_link, path, sizeof(path))), 0);
	assert_kv(kvshm_open(shm_link, NULL, &kv), -ELOOP);
	assert_kv(kvshm_open(shm_link, &o, &kv), -ELOOP);
	assert_null(kv);
}

static void test_non_regular_files_are_refused_without_hanging(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE, TU_MIB);
	const char *fifo = tu_new_path(fx, "fifo");
	struct kvshm *kv = NULL;
	int rc;

	assert_int_equal(mkfifo(fifo, 0600), 0);
	tu_watchdog(10);
	rc = kvshm_open(fifo, NULL, &kv);
	if (rc >= 0)
		fail_msg("open of a FIFO returned %d", rc);
	rc = kvshm_open(fifo, &o, &kv);
	if (rc >= 0)
		fail_msg("open of a FIFO with CREATE returned %d", rc);
	rc = kvshm_open(tu_dir(fx), &o, &kv);
	if (rc >= 0)
		fail_msg("open of a directory returned %d", rc);
	tu_watchdog(0);
	assert_null(kv);
}

static void test_unlink_removes_the_name_but_open_handles_keep_working(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, 2 * TU_MIB);
	struct kvshm *kv = NULL, *fresh;

	set_str(fx->kv, "k", "old store", 0);
	assert_ok(kvshm_unlink(fx->name));
	assert_kv(kvshm_unlink(fx->name), -ENOENT);
	assert_kv(kvshm_open(fx->name, NULL, &kv), -ENOENT);
	assert_str(fx->kv, "k", "old store");
	set_str(fx->kv, "k2", "still writable", 0);
	assert_str(fx->kv, "k2", "still writable");

	/* the name can be created afresh, independent of the old memory */
	fresh = tu_open(fx, fx->name, &o);
	assert_gone(fresh, "k");
	set_str(fresh, "k", "new store", 0);
	assert_str(fx->kv, "k", "old store");
	tu_check(fx->kv);
}

static void test_close_of_null_is_a_no_op(void **state)
{
	struct tu_fx *fx = tu_fx(state);

	kvshm_close(NULL);
	set_str(fx->kv, "k", "v", 0);
	assert_str(fx->kv, "k", "v");
}

static void test_readonly_handle_refuses_writes_with_erofs(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_RDONLY, 0);
	struct kvshm *ro = tu_open(fx, fx->name, &o);
	struct kvshm_write w = { 0 };
	struct visits v = { 0 };
	uint64_t cas = 0;
	int64_t n;
	size_t swept;
	char buf[16];

	assert_ok(kvshm_put(fx->kv, KS("k"), KS("v"), NULL, &cas));
	assert_ok(kvshm_incr(fx->kv, KS("c"), 5, 0, NULL));

	assert_kv(kvshm_set(ro, KS("k"), KS("x"), 0), -EROFS);
	assert_kv(kvshm_set(ro, KS("new"), KS("x"), 0), -EROFS);
	assert_kv(kvshm_put(ro, KS("k"), KS("x"), &w, NULL), -EROFS);
	assert_kv(kvshm_delete(ro, KS("k")), -EROFS);
	assert_kv(kvshm_delete_cas(ro, KS("k"), cas), -EROFS);
	assert_kv(kvshm_expire(ro, KS("k"), 1000), -EROFS);
	assert_kv(kvshm_incr(ro, KS("c"), 1, 0, NULL), -EROFS);
	assert_kv(kvshm_incr(ro, KS("c2"), 1, 0, NULL), -EROFS);
	assert_kv(kvshm_clear(ro), -EROFS);
	assert_kv(kvshm_sweep(ro, 0, &swept), -EROFS);

	assert_str(ro, "k", "v");
	assert_kv(kvshm_exists(ro, KS("k")), 1);
	assert_kv(kvshm_exists(ro, KS("new")), 0);
	assert_int_equal(ttl_of(ro, "k"), -1);
	assert_ok(kvshm_counter(ro, KS("c"), &n));
	assert_int_equal(n, 5);
	assert_kv(kvshm_get(ro, KS("c2"), buf, sizeof(buf), NULL), -ENOENT);
	assert_int_equal(scan_all(ro, "", &v), 2);
	assert_int_equal(stats_of(ro).items, 2);
	tu_check(ro);
	assert_str(fx->kv, "k", "v");
	assert_ok(kvshm_counter(fx->kv, KS("c"), &n));
	assert_int_equal(n, 5);
}

static void test_readonly_handle_reads_without_modifying_the_segment(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, 2 * TU_MIB);
	const char *path = tu_new_path(fx, "ro");
	struct kvshm *kv = tu_open(fx, path, &o);
	struct kvshm_item it;
	struct visits v = { 0 };
	size_t len0, len1;
	void *before, *after;
	char buf[64];
	int rc;

	for (int i = 0; i < 200; i++) {
		set_key_i(kv, "k", i, 40, &rc);
		assert_ok(rc);
	}
	assert_ok(kvshm_incr(kv, KS("c"), 1, 0, NULL));
	tu_close(fx, kv);
	before = read_file(path, &len0);

	o = tu_opts(KVSHM_RDONLY, 0);
	kv = tu_open(fx, path, &o);
	for (int i = 0; i < 220; i++) /* hits, twice for some, and misses */
		assert_true(key_i_intact(kv, "k", i % 210, 40) == (i % 210 < 200));
	assert_ok(kvshm_get_ex(kv, KS("k00001"), buf, sizeof(buf), &it,
			       KVSHM_GET_STALE));
	assert_kv(kvshm_exists(kv, KS("k00002")), 1);
	assert_int_equal(ttl_of(kv, "k00003"), -1);
	assert_int_equal(scan_all(kv, "", &v), 201);
	stats_of(kv);
	tu_check(kv);
	tu_close(fx, kv);

	after = read_file(path, &len1);
	assert_int_equal(len0, len1);
	if (memcmp(before, after, len0) != 0) {
		size_t i = 0;

		while (((char *)before)[i] == ((char *)after)[i])
			i++;
		fail_msg("a read-only session changed the segment at byte %zu",
			 i);
	}
	free(before);
	free(after);
}

/* ---- set, get, limits ------------------------------------------------- */

static void test_get_returns_what_set_stored(void **state)
{
	struct tu_fx *fx = tu_fx(state);

	set_str(fx->kv, "alpha", "one", 0);
	set_str(fx->kv, "beta", "two", 0);
	assert_str(fx->kv, "alpha", "one");
	assert_str(fx->kv, "beta", "two");
	set_str(fx->kv, "alpha", "a much longer value than before", 0);
	assert_str(fx->kv, "alpha", "a much longer value than before");
	set_str(fx->kv, "alpha", "x", 0);
	assert_str(fx->kv, "alpha", "x");
	assert_int_equal(stats_of(fx->kv).items, 2);
}

static void test_get_of_missing_key_returns_enoent(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_item it;
	char buf[16];
	size_t len = 77;

	assert_kv(kvshm_get(fx->kv, KS("nope"), buf, sizeof(buf), &len), -ENOENT);
	assert_kv(kvshm_get_ex(fx->kv, KS("nope"), buf, sizeof(buf), &it, 0),
		  -ENOENT);
	assert_kv(kvshm_get_ex(fx->kv, KS("nope"), buf, sizeof(buf), &it,
			       KVSHM_GET_STALE), -ENOENT);
	set_str(fx->kv, "nope2", "v", 0);
	assert_kv(kvshm_get(fx->kv, KS("nope"), buf, sizeof(buf), &len), -ENOENT);
}

static void test_get_with_small_buffer_returns_enobufs_and_the_needed_length(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	char val[100], buf[100];
	struct kvshm_item it;
	size_t len = 0;

	memset(val, 'v', sizeof(val));
	assert_ok(kvshm_set(fx->kv, KS("k"), val, sizeof(val), 0));
	assert_kv(kvshm_get(fx->kv, KS("k"), buf, 10, &len), -ENOBUFS);
	assert_int_equal(len, 100);
	len = 0;
	assert_kv(kvshm_get(fx->kv, KS("k"), NULL, 0, &len), -ENOBUFS);
	assert_int_equal(len, 100);
	assert_kv(kvshm_get(fx->kv, KS("k"), buf, 99, NULL), -ENOBUFS);
	it.value_len = 0;
	assert_kv(kvshm_get_ex(fx->kv, KS("k"), buf, 99, &it, 0), -ENOBUFS);
	assert_int_equal(it.value_len, 100);
	assert_ok(kvshm_get(fx->kv, KS("k"), buf, 100, &len));
	assert_int_equal(len, 100);
	assert_memory_equal(buf, val, 100);
}

static void test_binary_keys_and_values_with_nul_bytes_round_trip(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const char k1[] = { 'a', 0, 'b' }, k2[] = { 'a', 0, 'c' };
	const char k3[] = { 'a' }, k4[] = { 'a', 0 };
	const char v1[] = { 0, 1, 0, 2, 0 }, v2[] = { 0 };
	unsigned char all[256], kall[256];

	for (int i = 0; i < 256; i++)
		all[i] = kall[i] = (unsigned char)(255 - i);
	assert_ok(kvshm_set(fx->kv, k1, 3, v1, sizeof(v1), 0));
	assert_ok(kvshm_set(fx->kv, k2, 3, v2, sizeof(v2), 0));
	assert_ok(kvshm_set(fx->kv, k3, 1, KS("short"), 0));
	assert_ok(kvshm_set(fx->kv, k4, 2, KS("with nul"), 0));
	assert_ok(kvshm_set(fx->kv, kall, sizeof(kall), all, sizeof(all), 0));
	assert_bytes(fx->kv, k1, 3, v1, sizeof(v1));
	assert_bytes(fx->kv, k2, 3, v2, sizeof(v2));
	assert_bytes(fx->kv, k3, 1, KS("short"));
	assert_bytes(fx->kv, k4, 2, KS("with nul"));
	assert_bytes(fx->kv, kall, sizeof(kall), all, sizeof(all));
	assert_int_equal(stats_of(fx->kv).items, 5);
}

static void test_zero_length_value_round_trips(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_item it;
	size_t len = 99;
	char buf[8];

	assert_ok(kvshm_set(fx->kv, KS("empty"), NULL, 0, 0));
	assert_ok(kvshm_get(fx->kv, KS("empty"), NULL, 0, &len));
	assert_int_equal(len, 0);
	assert_ok(kvshm_get_ex(fx->kv, KS("empty"), buf, sizeof(buf), &it, 0));
	assert_int_equal(it.value_len, 0);
	assert_false(it.counter);
	assert_kv(kvshm_exists(fx->kv, KS("empty")), 1);
	assert_ok(kvshm_set(fx->kv, KS("empty2"), "", 0, 0));
	assert_kv(kvshm_exists(fx->kv, KS("empty2")), 1);
}

static void test_key_of_max_key_bytes_works_and_one_more_is_e2big(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	const size_t maxes[2] = { 64, 65535 };
	char *key = malloc(65536), buf[16];
	int64_t n;
	struct kvshm_write w = { 0 };

	for (int i = 0; i < 2; i++) {
		o.max_key_bytes = (uint32_t)maxes[i];
		struct kvshm *kv = tu_create(fx, &o, NULL);
		const size_t m = maxes[i];

		memset(key, 0xff, m + 1);
		key[m - 1] = 1;
		assert_ok(kvshm_set(kv, key, m, KS("max"), 0));
		assert_bytes(kv, key, m, KS("max"));
		assert_ok(kvshm_incr(kv, key, m - 1, 1, 0, NULL));

		assert_kv(kvshm_set(kv, key, m + 1, KS("v"), 0), -E2BIG);
		assert_kv(kvshm_put(kv, key, m + 1, KS("v"), &w, NULL), -E2BIG);
		assert_kv(kvshm_incr(kv, key, m + 1, 1, 0, NULL), -E2BIG);
		assert_kv(kvshm_get(kv, key, m + 1, buf, sizeof(buf), NULL), -E2BIG);
		assert_kv(kvshm_exists(kv, key, m + 1), -E2BIG);
		assert_kv(kvshm_delete(kv, key, m + 1), -E2BIG);
		assert_kv(kvshm_counter(kv, key, m + 1, &n), -E2BIG);
		assert_int_equal(stats_of(kv).items, 2);
		tu_check(kv);
	}
	free(key);
}

static void test_value_of_max_value_bytes_works_and_one_more_is_e2big(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	char *val = malloc(256 * 1024 + 1);

	memset(val, 'x', 256 * 1024 + 1);
	o.max_value_bytes = 4096;
	struct kvshm *kv = tu_create(fx, &o, NULL);
	assert_ok(kvshm_set(kv, KS("k"), val, 4096, 0));
	assert_bytes(kv, KS("k"), val, 4096);
	assert_kv(kvshm_set(kv, KS("k"), val, 4097, 0), -E2BIG);
	assert_kv(kvshm_set(kv, KS("k2"), val, 4097, 0), -E2BIG);
	assert_bytes(kv, KS("k"), val, 4096);
	assert_kv(kvshm_exists(kv, KS("k2")), 0);

	/* the 4 MiB default store: arena_bytes / 16 = 256 KiB */
	assert_ok(kvshm_set(fx->kv, KS("k"), val, 256 * 1024, 0));
	assert_bytes(fx->kv, KS("k"), val, 256 * 1024);
	assert_kv(kvshm_set(fx->kv, KS("k"), val, 256 * 1024 + 1, 0), -E2BIG);
	assert_bytes(fx->kv, KS("k"), val, 256 * 1024);
	free(val);
}

static void test_empty_key_returns_einval_everywhere(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *kv = fx->kv;
	struct kvshm_item it;
	struct kvshm_write w = { 0 };
	char buf[16];
	int64_t n;

	assert_kv(kvshm_set(kv, "k", 0, KS("v"), 0), -EINVAL);
	assert_kv(kvshm_set(kv, NULL, 0, KS("v"), 0), -EINVAL);
	assert_kv(kvshm_put(kv, "k", 0, KS("v"), &w, NULL), -EINVAL);
	assert_kv(kvshm_get(kv, "k", 0, buf, sizeof(buf), NULL), -EINVAL);
	assert_kv(kvshm_get_ex(kv, "k", 0, buf, sizeof(buf), &it, 0), -EINVAL);
	assert_kv(kvshm_exists(kv, "k", 0), -EINVAL);
	assert_kv(kvshm_delete(kv, "k", 0), -EINVAL);
	assert_kv(kvshm_delete_cas(kv, "k", 0, 1), -EINVAL);
	assert_kv(kvshm_ttl(kv, "k", 0, &n), -EINVAL);
	assert_kv(kvshm_expire(kv, "k", 0, 1000), -EINVAL);
	assert_kv(kvshm_incr(kv, "k", 0, 1, 0, NULL), -EINVAL);
	assert_kv(kvshm_counter(kv, "k", 0, &n), -EINVAL);
	assert_int_equal(stats_of(kv).items, 0);
}

static void test_null_pointer_with_nonzero_length_returns_einval(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *kv = fx->kv;
	struct kvshm_item it;
	struct kvshm_write w = { 0 };
	struct visits v = { 0 };
	uint64_t cursor = 0;
	int64_t n;

	set_str(kv, "k", "v", 0);
	assert_kv(kvshm_set(kv, NULL, 3, KS("v"), 0), -EINVAL);
	assert_kv(kvshm_set(kv, KS("k"), NULL, 3, 0), -EINVAL);
	assert_kv(kvshm_put(kv, KS("k"), NULL, 3, &w, NULL), -EINVAL);
	assert_kv(kvshm_get(kv, NULL, 3, NULL, 0, NULL), -EINVAL);
	assert_kv(kvshm_get(kv, KS("k"), NULL, 8, NULL), -EINVAL);
	assert_kv(kvshm_get_ex(kv, KS("k"), NULL, 8, &it, 0), -EINVAL);
	assert_kv(kvshm_exists(kv, NULL, 3), -EINVAL);
	assert_kv(kvshm_delete(kv, NULL, 3), -EINVAL);
	assert_kv(kvshm_delete_cas(kv, NULL, 3, 1), -EINVAL);
	assert_kv(kvshm_ttl(kv, NULL, 3, &n), -EINVAL);
	assert_kv(kvshm_expire(kv, NULL, 3, 1), -EINVAL);
	assert_kv(kvshm_incr(kv, NULL, 3, 1, 0, NULL), -EINVAL);
	assert_kv(kvshm_counter(kv, NULL, 3, &n), -EINVAL);
	assert_kv(kvshm_scan(kv, NULL, 3, &cursor, 0, visit, &v), -EINVAL);
	assert_kv(kvshm_stats(kv, NULL), -EINVAL);
	assert_int_equal(v.calls, 0);
	assert_str(kv, "k", "v");
	assert_int_equal(stats_of(kv).items, 1);
}

static void test_bad_mode_options_or_flags_return_einval(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { 0 };
	struct kvshm_item it;
	char buf[16];

	set_str(fx->kv, "k", "v", 0);
	w.mode = KVSHM_CAS + 1;
	assert_kv(put_str(fx->kv, "k", "x", &w, NULL), -EINVAL);
	assert_kv(put_str(fx->kv, "new", "x", &w, NULL), -EINVAL);
	w.mode = KVSHM_SET;
	w.opts = 1u << 7;
	assert_kv(put_str(fx->kv, "k", "x", &w, NULL), -EINVAL);
	assert_kv(kvshm_get_ex(fx->kv, KS("k"), buf, sizeof(buf), &it, 1u << 5),
		  -EINVAL);
	assert_str(fx->kv, "k", "v");
	assert_gone(fx->kv, "new");
}

/* ---- put modes, versions, flags --------------------------------------- */

static void test_put_add_succeeds_only_when_key_is_absent_or_expired(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { .mode = KVSHM_ADD };

	assert_ok(put_str(fx->kv, "k", "first", &w, NULL));
	assert_kv(put_str(fx->kv, "k", "second", &w, NULL), -EEXIST);
	assert_str(fx->kv, "k", "first");

	w.ttl_ms = 30;
	assert_ok(put_str(fx->kv, "short", "first", &w, NULL));
	tu_sleep_ms(60);
	w.ttl_ms = 0;
	assert_ok(put_str(fx->kv, "short", "after expiry", &w, NULL));
	assert_str(fx->kv, "short", "after expiry");
	assert_int_equal(ttl_of(fx->kv, "short"), -1);
}

static void test_put_replace_succeeds_only_when_key_is_live(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { .mode = KVSHM_REPLACE };

	assert_kv(put_str(fx->kv, "k", "v", &w, NULL), -ENOENT);
	assert_gone(fx->kv, "k");
	set_str(fx->kv, "k", "old", 0);
	assert_ok(put_str(fx->kv, "k", "new", &w, NULL));
	assert_str(fx->kv, "k", "new");

	set_str(fx->kv, "short", "old", 30);
	tu_sleep_ms(60);
	assert_kv(put_str(fx->kv, "short", "new", &w, NULL), -ENOENT);
	assert_gone(fx->kv, "short");
}

static void test_put_cas_succeeds_only_with_the_current_version(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { .mode = KVSHM_CAS };
	uint64_t c1 = 0, c2 = 0, c3 = 0;

	assert_ok(put_str(fx->kv, "k", "v1", NULL, &c1));
	w.cas = c1;
	assert_ok(put_str(fx->kv, "k", "v2", &w, &c2));
	assert_true(c2 != c1 && c2 != 0);
	assert_kv(put_str(fx->kv, "k", "v3", &w, &c3), -ESTALE);
	assert_int_equal(c3, 0);
	assert_str(fx->kv, "k", "v2");
	w.cas = c2;
	assert_ok(put_str(fx->kv, "k", "v3", &w, NULL));
	assert_str(fx->kv, "k", "v3");

	w.cas = c1;
	assert_kv(put_str(fx->kv, "missing", "v", &w, NULL), -ENOENT);
	assert_gone(fx->kv, "missing");

	assert_ok(kvshm_put(fx->kv, KS("short"), KS("v"),
			    &(struct kvshm_write){ .ttl_ms = 30 }, &c1));
	tu_sleep_ms(60);
	w.cas = c1;
	assert_kv(put_str(fx->kv, "short", "new", &w, NULL), -ENOENT);
}

static void test_version_changes_on_every_write_and_is_never_zero(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { .flags = 3 };
	uint64_t seen[32];
	int n = 0;

	set_str(fx->kv, "k", "same", 0);
	seen[n++] = item_of(fx->kv, "k", 0).cas;
	set_str(fx->kv, "k", "same", 0);
	seen[n++] = item_of(fx->kv, "k", 0).cas;
	assert_ok(put_str(fx->kv, "k", "same", &w, &seen[n]));
	assert_int_equal(seen[n], item_of(fx->kv, "k", 0).cas);
	n++;
	assert_ok(kvshm_expire(fx->kv, KS("k"), 100000)); /* not a new version */
	assert_int_equal(item_of(fx->kv, "k", 0).cas, seen[n - 1]);
	for (int i = 0; i < 10; i++) {
		assert_ok(kvshm_incr(fx->kv, KS("c"), 1, 0, NULL));
		seen[n++] = item_of(fx->kv, "c", 0).cas;
	}
	for (int i = 0; i < n; i++) {
		assert_true(seen[i] != 0);
		for (int j = 0; j < i; j++)
			if (seen[i] == seen[j])
				fail_msg("writes %d and %d share version %" PRIu64,
					 j, i, seen[i]);
	}
}

static void test_version_of_recreated_key_differs_from_before_its_delete(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { .mode = KVSHM_CAS };
	uint64_t c1 = 0, c2 = 0;

	assert_ok(put_str(fx->kv, "k", "v", NULL, &c1));
	assert_ok(kvshm_delete(fx->kv, KS("k")));
	assert_ok(put_str(fx->kv, "k", "v", NULL, &c2));
	assert_true(c1 != c2);
	w.cas = c1;
	assert_kv(put_str(fx->kv, "k", "w", &w, NULL), -ESTALE);
	assert_kv(kvshm_delete_cas(fx->kv, KS("k"), c1), -ESTALE);
	assert_str(fx->kv, "k", "v");
}

static void test_put_keepttl_keeps_the_current_expiry(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { .opts = KVSHM_KEEPTTL };

	set_str(fx->kv, "k", "v", 10000);
	assert_ok(put_str(fx->kv, "k", "v2", &w, NULL));
	assert_ttl_near(fx->kv, "k", 10000);
	w.ttl_ms = 500;
	assert_ok(put_str(fx->kv, "k", "v3", &w, NULL));
	assert_ttl_near(fx->kv, "k", 10000);
	assert_str(fx->kv, "k", "v3");

	set_str(fx->kv, "never", "v", KVSHM_TTL_NEVER);
	assert_ok(put_str(fx->kv, "never", "v2", &w, NULL));
	assert_int_equal(ttl_of(fx->kv, "never"), -1);

	/* a missing key gets ttl_ms as usual */
	w.ttl_ms = 3000;
	assert_ok(put_str(fx->kv, "fresh", "v", &w, NULL));
	assert_ttl_near(fx->kv, "fresh", 3000);
}

/* Write 1 KiB values "fill%05d" until the store has evicted; returns count. */
static int fill_until_eviction(struct kvshm *kv)
{
	int i, rc;

	for (i = 0; i < 100000; i++) {
		set_key_i(kv, "fill", i, 1024, &rc);
		assert_ok(rc);
		if (stats_of(kv).evictions > 0)
			return i + 1;
	}
	fail_msg("no eviction after 100000 writes of 1 KiB");
	return 0;
}

static void test_put_noevict_write_returns_enospc_instead_of_evicting(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *kv = new_store(fx, 2 * TU_MIB, 0, 0, NULL);
	const struct kvshm_write w = { .opts = KVSHM_NOEVICT_WRITE };
	const int n = fill_until_eviction(kv);
	const uint64_t ev = stats_of(kv).evictions;
	bool *live = calloc((size_t)n, 1);
	char k[32], v[1024] = { 0 };
	int rc = 0, added = 0;

	for (int i = 0; i < n; i++)
		live[i] = key_i_intact(kv, "fill", i, 1024);
	assert_true(live[n - 1]);
	for (int i = 0; i < 100000; i++) {
		snprintf(k, sizeof(k), "noevict%05d", i);
		rc = kvshm_put(kv, KS(k), v, sizeof(v), &w, NULL);
		if (rc != 0)
			break;
		added++;
	}
	assert_kv(rc, -ENOSPC);
	print_message("%d NOEVICT_WRITE puts fitted before -ENOSPC\n", added);
	assert_int_equal(stats_of(kv).evictions, ev);
	for (int i = 0; i < n; i++)
		if (live[i] && !key_i_intact(kv, "fill", i, 1024))
			fail_msg("fill%05d was evicted by a NOEVICT_WRITE put", i);
	for (int i = 0; i < added; i++) {
		snprintf(k, sizeof(k), "noevict%05d", i);
		assert_kv(kvshm_exists(kv, KS(k)), 1);
	}
	snprintf(k, sizeof(k), "noevict%05d", added);
	assert_ok(kvshm_set(kv, KS(k), v, sizeof(v), 0)); /* may evict */
	free(live);
	tu_check(kv);
}

static void test_user_flags_round_trip_and_plain_set_resets_them(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { .flags = 0xa5a5f00d };

	assert_ok(put_str(fx->kv, "k", "v", &w, NULL));
	assert_int_equal(item_of(fx->kv, "k", 0).flags, 0xa5a5f00d);
	w.mode = KVSHM_REPLACE;
	w.flags = 7;
	assert_ok(put_str(fx->kv, "k", "v", &w, NULL));
	assert_int_equal(item_of(fx->kv, "k", 0).flags, 7);
	set_str(fx->kv, "k", "v", 0);
	assert_int_equal(item_of(fx->kv, "k", 0).flags, 0);
	assert_ok(kvshm_incr(fx->kv, KS("c"), 1, 0, NULL));
	assert_int_equal(item_of(fx->kv, "c", 0).flags, 0);
}

static void test_put_expires_at_ms_is_an_absolute_expiry_overriding_ttl(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { .ttl_ms = KVSHM_TTL_NEVER };

	w.expires_at_ms = tu_now_ms() + 5000;
	assert_ok(put_str(fx->kv, "k", "v", &w, NULL));
	assert_ttl_near(fx->kv, "k", 5000);
	w.expires_at_ms = tu_now_ms() + 300;
	assert_ok(put_str(fx->kv, "soon", "v", &w, NULL));
	assert_str(fx->kv, "soon", "v");
	tu_sleep_ms(400);
	assert_gone(fx->kv, "soon");
	assert_str(fx->kv, "k", "v");
}

/* ---- expiry ----------------------------------------------------------- */

static void test_zero_ttl_applies_the_store_default_ttl(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *kv = new_store(fx, 4 * TU_MIB, 0, 60000, NULL);
	const struct kvshm_write w = { 0 };

	set_str(kv, "zero", "v", 0);
	assert_ttl_near(kv, "zero", 60000);
	set_str(kv, "never", "v", KVSHM_TTL_NEVER);
	assert_int_equal(ttl_of(kv, "never"), -1);
	set_str(kv, "own", "v", 5000);
	assert_ttl_near(kv, "own", 5000);
	assert_ok(put_str(kv, "put", "v", &w, NULL));
	assert_ttl_near(kv, "put", 60000);
	assert_ok(kvshm_incr(kv, KS("incr"), 1, 0, NULL));
	assert_ttl_near(kv, "incr", 60000);
	assert_ok(kvshm_expire(kv, KS("never"), 0));
	assert_ttl_near(kv, "never", 60000);

	/* the store without a default never expires a ttl-0 write */
	set_str(fx->kv, "zero", "v", 0);
	assert_int_equal(ttl_of(fx->kv, "zero"), -1);
}

static void test_get_of_expired_key_returns_enoent(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_item it;
	char buf[16];
	int64_t t;

	set_str(fx->kv, "k", "v", 50);
	set_str(fx->kv, "stays", "v", 0);
	tu_sleep_ms(80);
	assert_kv(kvshm_get_ex(fx->kv, KS("k"), buf, sizeof(buf), &it, 0), -ENOENT);
	assert_gone(fx->kv, "k");
	assert_kv(kvshm_ttl(fx->kv, KS("k"), &t), -ENOENT);
	assert_kv(kvshm_expire(fx->kv, KS("k"), 10000), -ENOENT);
	assert_kv(kvshm_delete(fx->kv, KS("k")), -ENOENT);
	assert_str(fx->kv, "stays", "v");
}

static void test_get_ex_with_stale_returns_expired_unreclaimed_item(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { .ttl_ms = 50, .flags = 9 };
	struct kvshm_item it;
	char buf[16];
	size_t n = 0;

	set_str(fx->kv, "live", "v", 0);
	it = item_of(fx->kv, "live", KVSHM_GET_STALE);
	assert_false(it.stale);
	assert_ok(put_str(fx->kv, "k", "stale value", &w, NULL));
	tu_sleep_ms(80);
	memset(buf, 0, sizeof(buf));
	assert_ok(kvshm_get_ex(fx->kv, KS("k"), buf, sizeof(buf), &it,
			       KVSHM_GET_STALE));
	assert_true(it.stale);
	assert_true(it.ttl_ms <= 0);
	assert_int_equal(it.value_len, strlen("stale value"));
	assert_int_equal(it.flags, 9);
	assert_memory_equal(buf, "stale value", it.value_len);
	assert_kv(kvshm_get_ex(fx->kv, KS("k"), buf, sizeof(buf), &it, 0), -ENOENT);

	assert_ok(kvshm_sweep(fx->kv, 0, &n));
	assert_int_equal(n, 1);
	assert_kv(kvshm_get_ex(fx->kv, KS("k"), buf, sizeof(buf), &it,
			       KVSHM_GET_STALE), -ENOENT);
}

static void test_item_is_never_returned_at_or_after_its_expiry_time(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write w = { 0 };
	char buf[16];

	for (int round = 0; round < 8; round++) {
		const int64_t exp = tu_now_ms() + 20 + round;
		int64_t t0, t1;
		int rc;

		w.expires_at_ms = exp;
		assert_ok(put_str(fx->kv, "k", "v", &w, NULL));
		do {
			t0 = tu_now_ms();
			rc = kvshm_get(fx->kv, KS("k"), buf, sizeof(buf), NULL);
			t1 = tu_now_ms();
			if (rc == 0 && t0 >= exp)
				fail_msg("returned at %" PRId64 " ms, expiry %" PRId64,
					 t0, exp);
			if (rc == -ENOENT && t1 < exp)
				fail_msg("gone at %" PRId64 " ms, before expiry %" PRId64,
					 t1, exp);
			assert_true(rc == 0 || rc == -ENOENT);
		} while (t0 < exp + 3);
		assert_kv(kvshm_exists(fx->kv, KS("k")), 0);
	}
}

static void test_ttl_reports_ms_left_or_minus_one_for_never(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	int64_t t = 0;

	set_str(fx->kv, "ten", "v", 10000);
	assert_ttl_near(fx->kv, "ten", 10000);
	set_str(fx->kv, "never", "v", KVSHM_TTL_NEVER);
	assert_int_equal(ttl_of(fx->kv, "never"), -1);
	set_str(fx->kv, "default", "v", 0);
	assert_int_equal(ttl_of(fx->kv, "default"), -1);
	assert_ok(kvshm_incr(fx->kv, KS("c"), 1, 5000, NULL));
	assert_ttl_near(fx->kv, "c", 5000);
	set_str(fx->kv, "short", "v", 300);
	tu_sleep_ms(100);
	assert_ttl_near(fx->kv, "short", 200);
	assert_kv(kvshm_ttl(fx->kv, KS("missing"), &t), -ENOENT);
}

static void test_expire_sets_a_new_ttl_and_keeps_value_and_version(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_item it;
	uint64_t c = 0;

	assert_ok(put_str(fx->kv, "k", "v", NULL, &c));
	assert_int_equal(ttl_of(fx->kv, "k"), -1);
	assert_ok(kvshm_expire(fx->kv, KS("k"), 5000));
	assert_ttl_near(fx->kv, "k", 5000);
	it = item_of(fx->kv, "k", 0);
	assert_int_equal(it.cas, c);
	assert_str(fx->kv, "k", "v");
	assert_ok(kvshm_expire(fx->kv, KS("k"), KVSHM_TTL_NEVER));
	assert_int_equal(ttl_of(fx->kv, "k"), -1);
	assert_ok(kvshm_expire(fx->kv, KS("k"), 20000));
	assert_ok(kvshm_expire(fx->kv, KS("k"), 0)); /* store default: never */
	assert_int_equal(ttl_of(fx->kv, "k"), -1);
	assert_int_equal(item_of(fx->kv, "k", 0).cas, c);

	assert_ok(kvshm_incr(fx->kv, KS("c"), 1, 0, NULL));
	assert_ok(kvshm_expire(fx->kv, KS("c"), 5000));
	assert_ttl_near(fx->kv, "c", 5000);

	assert_kv(kvshm_expire(fx->kv, KS("missing"), 5000), -ENOENT);
	assert_gone(fx->kv, "missing");
	assert_ok(kvshm_expire(fx->kv, KS("k"), 1));
	tu_sleep_ms(20);
	assert_gone(fx->kv, "k");
}

static void test_exists_returns_1_for_live_and_0_for_missing_or_expired(void **state)
{
	struct tu_fx *fx = tu_fx(state);

	set_str(fx->kv, "live", "v", 0);
	set_str(fx->kv, "short", "v", 300);
	assert_ok(kvshm_incr(fx->kv, KS("c"), 1, 0, NULL));
	assert_kv(kvshm_exists(fx->kv, KS("live")), 1);
	assert_kv(kvshm_exists(fx->kv, KS("short")), 1);
	assert_kv(kvshm_exists(fx->kv, KS("c")), 1);
	assert_kv(kvshm_exists(fx->kv, KS("missing")), 0);
	tu_sleep_ms(400);
	assert_kv(kvshm_exists(fx->kv, KS("short")), 0);
	assert_kv(kvshm_exists(fx->kv, KS("live")), 1);
}

/* ---- delete ----------------------------------------------------------- */

static void test_delete_removes_the_key_and_a_second_delete_returns_enoent(void **state)
{
	struct tu_fx *fx = tu_fx(state);

	set_str(fx->kv, "k", "v", 0);
	set_str(fx->kv, "other", "v", 0);
	assert_ok(kvshm_delete(fx->kv, KS("k")));
	assert_gone(fx->kv, "k");
	assert_kv(kvshm_delete(fx->kv, KS("k")), -ENOENT);
	assert_kv(kvshm_delete(fx->kv, KS("never-was")), -ENOENT);
	assert_str(fx->kv, "other", "v");
	set_str(fx->kv, "k", "again", 0);
	assert_str(fx->kv, "k", "again");
}

static void test_delete_cas_deletes_only_the_matching_version(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	uint64_t c = 0;

	assert_ok(put_str(fx->kv, "k", "v", NULL, &c));
	assert_kv(kvshm_delete_cas(fx->kv, KS("k"), c ^ 0x10), -ESTALE);
	assert_str(fx->kv, "k", "v");
	assert_ok(kvshm_delete_cas(fx->kv, KS("k"), c));
	assert_gone(fx->kv, "k");
	assert_kv(kvshm_delete_cas(fx->kv, KS("k"), c), -ENOENT);

	assert_ok(kvshm_put(fx->kv, KS("short"), KS("v"),
			    &(struct kvshm_write){ .ttl_ms = 30 }, &c));
	tu_sleep_ms(60);
	assert_kv(kvshm_delete_cas(fx->kv, KS("short"), c), -ENOENT);
}

/* ---- counters --------------------------------------------------------- */

static void test_incr_of_missing_key_creates_a_counter_with_delta_and_init_ttl(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *kv = new_store(fx, 4 * TU_MIB, 0, 60000, NULL);
	int64_t r = 0;

	assert_ok(kvshm_incr(fx->kv, KS("c"), 5, 10000, &r));
	assert_int_equal(r, 5);
	assert_ttl_near(fx->kv, "c", 10000);
	assert_ok(kvshm_counter(fx->kv, KS("c"), &r));
	assert_int_equal(r, 5);
	assert_true(item_of(fx->kv, "c", 0).counter);

	assert_ok(kvshm_incr(fx->kv, KS("neg"), -3, 0, NULL));
	assert_ok(kvshm_counter(fx->kv, KS("neg"), &r));
	assert_int_equal(r, -3);
	assert_int_equal(ttl_of(fx->kv, "neg"), -1);

	assert_ok(kvshm_incr(kv, KS("d"), 1, 0, &r));
	assert_ttl_near(kv, "d", 60000);
	assert_ok(kvshm_incr(kv, KS("n"), 1, KVSHM_TTL_NEVER, &r));
	assert_int_equal(ttl_of(kv, "n"), -1);
}

static void test_incr_of_existing_counter_keeps_its_ttl(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	int64_t r = 0;

	assert_ok(kvshm_incr(fx->kv, KS("c"), 1, 10000, &r));
	assert_ok(kvshm_incr(fx->kv, KS("c"), 1, 500, &r));
	assert_ok(kvshm_incr(fx->kv, KS("c"), 1, KVSHM_TTL_NEVER, &r));
	assert_int_equal(r, 3);
	assert_ttl_near(fx->kv, "c", 10000);
	assert_ok(kvshm_expire(fx->kv, KS("c"), KVSHM_TTL_NEVER));
	assert_ok(kvshm_incr(fx->kv, KS("c"), 1, 500, &r));
	assert_int_equal(ttl_of(fx->kv, "c"), -1);
	assert_int_equal(r, 4);
}

static void test_incr_of_non_counter_returns_enomsg_and_leaves_the_value(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const int64_t eight = 41;
	int64_t r = 77;
	uint64_t c;

	set_str(fx->kv, "s", "abc", 0);
	c = item_of(fx->kv, "s", 0).cas;
	assert_kv(kvshm_incr(fx->kv, KS("s"), 1, 0, &r), -ENOMSG);
	assert_str(fx->kv, "s", "abc");
	assert_int_equal(item_of(fx->kv, "s", 0).cas, c);
	assert_kv(kvshm_counter(fx->kv, KS("s"), &r), -ENOMSG);

	/* eight bytes that look like an int64 are still bytes */
	assert_ok(kvshm_set(fx->kv, KS("b8"), &eight, sizeof(eight), 0));
	assert_kv(kvshm_incr(fx->kv, KS("b8"), 1, 0, NULL), -ENOMSG);
	assert_kv(kvshm_counter(fx->kv, KS("b8"), &r), -ENOMSG);
	assert_bytes(fx->kv, KS("b8"), &eight, sizeof(eight));

	assert_ok(kvshm_set(fx->kv, KS("e"), NULL, 0, 0));
	assert_kv(kvshm_incr(fx->kv, KS("e"), 1, 0, NULL), -ENOMSG);
	assert_bytes(fx->kv, KS("e"), NULL, 0);
}

/* Issue 13 item 15: incr takes a value that is exactly a decimal int64
 * (Redis's rule), turns it into a counter and keeps its TTL; anything else
 * is still -ENOMSG and unchanged. Old code: -ENOMSG for "32". */
static void test_incr_on_decimal_text_makes_a_counter(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	static const char *const bad[] = {
		"+1", " 1", "1 ", "01", "-0", "-", "1.5", "1e3", "0x10",
		"9223372036854775808", "-9223372036854775809",
		"123456789012345678901",
	};
	int64_t r = 0, ttl;
	char k[16];

	set_str(fx->kv, "t", "32", 60000);
	assert_ok(kvshm_incr(fx->kv, KS("t"), 10, 0, &r));
	assert_int_equal(r, 42);
	assert_true(item_of(fx->kv, "t", 0).counter);
	assert_ok(kvshm_counter(fx->kv, KS("t"), &r));
	assert_int_equal(r, 42);
	assert_ok(kvshm_ttl(fx->kv, KS("t"), &ttl));
	assert_true(ttl > 50000 && ttl <= 60000); /* the text's TTL */
	assert_ok(kvshm_incr(fx->kv, KS("t"), 1, 0, &r)); /* now lock-free */
	assert_int_equal(r, 43);

	set_str(fx->kv, "z", "0", 0);
	assert_ok(kvshm_incr(fx->kv, KS("z"), -5, 0, &r));
	assert_int_equal(r, -5);
	set_str(fx->kv, "min", "-9223372036854775808", 0);
	assert_ok(kvshm_incr(fx->kv, KS("min"), 1, 0, &r));
	assert_int_equal(r, INT64_MIN + 1);
	set_str(fx->kv, "max", "9223372036854775807", 0);
	assert_kv(kvshm_incr(fx->kv, KS("max"), 1, 0, &r), -ERANGE);
	assert_str(fx->kv, "max", "9223372036854775807");

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(k, sizeof(k), "bad%zu", i);
		set_str(fx->kv, k, bad[i], 0);
		if (kvshm_incr(fx->kv, KS(k), 1, 0, &r) != -ENOMSG)
			fail_msg("incr of \"%s\" did not give -ENOMSG", bad[i]);
		assert_str(fx->kv, k, bad[i]);
	}
}

static void test_incr_overflow_returns_erange_and_leaves_the_value(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	int64_t r = 0;
	uint64_t c;

	assert_ok(kvshm_incr(fx->kv, KS("max"), INT64_MAX - 1, 0, NULL));
	assert_ok(kvshm_incr(fx->kv, KS("max"), 1, 0, &r));
	assert_true(r == INT64_MAX);
	c = item_of(fx->kv, "max", 0).cas;
	assert_kv(kvshm_incr(fx->kv, KS("max"), 1, 0, &r), -ERANGE);
	assert_kv(kvshm_incr(fx->kv, KS("max"), INT64_MAX, 0, &r), -ERANGE);
	assert_ok(kvshm_counter(fx->kv, KS("max"), &r));
	assert_true(r == INT64_MAX);
	assert_int_equal(item_of(fx->kv, "max", 0).cas, c);

	assert_ok(kvshm_incr(fx->kv, KS("min"), INT64_MIN, 0, &r));
	assert_true(r == INT64_MIN);
	assert_kv(kvshm_incr(fx->kv, KS("min"), -1, 0, &r), -ERANGE);
	assert_kv(kvshm_incr(fx->kv, KS("min"), INT64_MIN, 0, &r), -ERANGE);
	assert_ok(kvshm_counter(fx->kv, KS("min"), &r));
	assert_true(r == INT64_MIN);
	assert_ok(kvshm_incr(fx->kv, KS("min"), INT64_MAX, 0, &r));
	assert_true(r == -1);
	assert_kv(kvshm_incr(fx->kv, KS("min"), INT64_MIN, 0, &r), -ERANGE);
	assert_ok(kvshm_counter(fx->kv, KS("min"), &r));
	assert_true(r == -1);
	assert_ok(kvshm_incr(fx->kv, KS("min"), 1, 0, &r));
	assert_ok(kvshm_incr(fx->kv, KS("min"), INT64_MIN, 0, &r));
	assert_true(r == INT64_MIN);
}

static void test_incr_of_expired_non_counter_creates_a_new_counter(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	int64_t r = 0;

	set_str(fx->kv, "k", "bytes", 30);
	assert_ok(kvshm_incr(fx->kv, KS("c"), 10, 30, NULL));
	tu_sleep_ms(60);
	assert_ok(kvshm_incr(fx->kv, KS("k"), 4, 0, &r));
	assert_int_equal(r, 4);
	assert_int_equal(ttl_of(fx->kv, "k"), -1);
	assert_ok(kvshm_incr(fx->kv, KS("c"), 2, 0, &r));
	assert_int_equal(r, 2);
}

static void test_counter_of_missing_key_returns_enoent_and_zero(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	int64_t v = 42;

	assert_kv(kvshm_counter(fx->kv, KS("missing"), &v), -ENOENT);
	assert_int_equal(v, 0);
	assert_ok(kvshm_incr(fx->kv, KS("c"), 5, 30, NULL));
	tu_sleep_ms(60);
	v = 42;
	assert_kv(kvshm_counter(fx->kv, KS("c"), &v), -ENOENT);
	assert_int_equal(v, 0);
}

static void test_get_of_counter_returns_8_host_order_bytes(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const int64_t want = 0x0102030405060708;
	struct kvshm_item it;
	char buf[16];
	size_t len = 0;

	assert_ok(kvshm_incr(fx->kv, KS("c"), want, 0, NULL));
	assert_ok(kvshm_get_ex(fx->kv, KS("c"), buf, sizeof(buf), &it, 0));
	assert_int_equal(it.value_len, 8);
	assert_true(it.counter);
	assert_false(it.stale);
	assert_int_equal(it.flags, 0);
	assert_memory_equal(buf, &want, 8);
	assert_ok(kvshm_get(fx->kv, KS("c"), buf, 8, &len));
	assert_int_equal(len, 8);
	assert_kv(kvshm_get(fx->kv, KS("c"), buf, 4, &len), -ENOBUFS);
	assert_int_equal(len, 8);
}

static void test_set_on_counter_key_replaces_it_with_bytes(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	int64_t r;

	assert_ok(kvshm_incr(fx->kv, KS("c"), 5, 0, NULL));
	set_str(fx->kv, "c", "bytes", 0);
	assert_str(fx->kv, "c", "bytes");
	assert_false(item_of(fx->kv, "c", 0).counter);
	assert_kv(kvshm_incr(fx->kv, KS("c"), 1, 0, NULL), -ENOMSG);
	assert_kv(kvshm_counter(fx->kv, KS("c"), &r), -ENOMSG);
	assert_str(fx->kv, "c", "bytes");
}

/* ---- clear, scan, sweep ----------------------------------------------- */

static void test_clear_removes_every_key_and_later_writes_work(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *other = tu_open(fx, fx->name, NULL);
	const struct kvshm_write add = { .mode = KVSHM_ADD };
	const struct kvshm_write replace = { .mode = KVSHM_REPLACE };
	struct visits v = { 0 };
	const uint64_t clears = stats_of(fx->kv).clears;
	int64_t r;
	size_t n;
	int rc;

	for (int i = 0; i < 300; i++) {
		set_key_i(fx->kv, "k", i, 50, &rc);
		assert_ok(rc);
	}
	assert_ok(kvshm_incr(fx->kv, KS("c"), 10, 0, NULL));
	assert_int_equal(stats_of(fx->kv).items, 301);
	assert_ok(kvshm_clear(fx->kv));
	assert_int_equal(stats_of(fx->kv).clears, clears + 1);
	for (int i = 0; i < 300; i++) {
		assert_false(key_i_intact(fx->kv, "k", i, 50));
		assert_false(key_i_intact(other, "k", i, 50));
	}
	assert_kv(kvshm_counter(other, KS("c"), &r), -ENOENT);
	assert_int_equal(scan_all(other, "", &v), 0);
	assert_kv(put_str(fx->kv, "k0001", "x", &replace, NULL), -ENOENT);

	/* writes after clear work, also to the old names, and survive sweeps */
	assert_ok(put_str(fx->kv, "k0000", "after", &add, NULL));
	set_str(other, "k0002", "after", 0);
	assert_ok(kvshm_incr(fx->kv, KS("c"), 1, 0, &r));
	assert_int_equal(r, 1);
	assert_ok(kvshm_sweep(fx->kv, 0, &n));
	assert_str(other, "k0000", "after");
	assert_str(fx->kv, "k0002", "after");
	assert_ok(kvshm_counter(other, KS("c"), &r));
	assert_int_equal(r, 1);
	assert_int_equal(stats_of(fx->kv).items, 3);
	tu_check(fx->kv);
}

static void test_scan_visits_only_keys_with_the_prefix(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct visits v = { 0 };
	char k[32];

	for (int i = 0; i < 50; i++) {
		snprintf(k, sizeof(k), "user:%d", i);
		set_str(fx->kv, k, "v", 0);
	}
	for (int i = 0; i < 30; i++) {
		snprintf(k, sizeof(k), "item:%d", i);
		set_str(fx->kv, k, "v", 0);
	}
	set_str(fx->kv, "u", "v", 0);
	set_str(fx->kv, "user", "v", 0);
	assert_int_equal(scan_all(fx->kv, "user:", &v), 50);
	memset(&v, 0, sizeof(v));
	assert_int_equal(scan_all(fx->kv, "item:", &v), 30);
	memset(&v, 0, sizeof(v));
	assert_int_equal(scan_all(fx->kv, "u", &v), 52);
	memset(&v, 0, sizeof(v));
	assert_int_equal(scan_all(fx->kv, "", &v), 82);
	memset(&v, 0, sizeof(v));
	assert_int_equal(scan_all(fx->kv, "nothing", &v), 0);
}

static void test_scan_with_small_limit_visits_every_key_exactly_once(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct visits v = { 0 };
	uint64_t cursor = 0;
	int rc, calls = 0;

	for (int i = 0; i < 1000; i++) {
		set_key_i(fx->kv, "k", i, 8, &rc);
		assert_ok(rc);
	}
	do {
		const int before = v.calls;

		rc = kvshm_scan(fx->kv, NULL, 0, &cursor, 7, visit, &v);
		assert_true(rc >= 0 && rc <= 7);
		assert_int_equal(rc, v.calls - before);
		assert_true(++calls < 100000);
	} while (cursor != 0);
	print_message("1000 keys in %d pages of at most 7\n", calls);
	for (int i = 0; i < 1000; i++)
		if (v.seen[i] != 1)
			fail_msg("k%05d was visited %d times", i, v.seen[i]);
	assert_int_equal(v.calls, 1000);

	memset(&v, 0, sizeof(v));
	assert_int_equal(scan_all(fx->kv, "", &v), 1000);
}

static void test_scan_callback_may_delete_the_visited_key(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct visits v = { .del = fx->kv };
	uint64_t cursor = 0;
	int rc;

	for (int i = 0; i < 200; i++) {
		set_key_i(fx->kv, "k", i, 16, &rc);
		assert_ok(rc);
	}
	tu_watchdog(20);
	rc = kvshm_scan(fx->kv, KS("k"), &cursor, 0, visit, &v);
	tu_watchdog(0);
	assert_int_equal(rc, v.calls);
	assert_int_equal(cursor, 0);
	assert_int_equal(v.del_ok, 200);
	for (int i = 0; i < 200; i++) {
		assert_true(v.seen[i] >= 1); /* a revisit is allowed */
		assert_false(key_i_intact(fx->kv, "k", i, 16));
	}
	/* what is left are the "other" keys, one per callback */
	assert_int_equal(stats_of(fx->kv).items, (uint64_t)v.calls);
	tu_check(fx->kv);
}

static void test_scan_stops_on_nonzero_and_returns_a_negative_value(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct visits v = { .stop_at = 3, .stop_rc = 1 };
	uint64_t cursor = 0;
	int rc;

	for (int i = 0; i < 50; i++) {
		set_key_i(fx->kv, "k", i, 8, &rc);
		assert_ok(rc);
	}
	rc = kvshm_scan(fx->kv, NULL, 0, &cursor, 0, visit, &v);
	assert_int_equal(v.calls, 3);
	assert_int_equal(rc, 3);

	memset(&v, 0, sizeof(v));
	v.stop_at = 2;
	v.stop_rc = -77;
	cursor = 0;
	assert_kv(kvshm_scan(fx->kv, NULL, 0, &cursor, 0, visit, &v), -77);
	assert_int_equal(v.calls, 2);
}

static void test_scan_skips_expired_keys_and_reports_items(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const struct kvshm_write w = { .flags = 0x55, .ttl_ms = 100000 };
	struct visits v = { 0 };
	char k[32];

	for (int i = 0; i < 20; i++) {
		snprintf(k, sizeof(k), "short%d", i);
		set_str(fx->kv, k, "v", 30);
	}
	assert_ok(put_str(fx->kv, "live", "twelve bytes", &w, NULL));
	tu_sleep_ms(60);
	assert_int_equal(scan_all(fx->kv, "", &v), 1);
	assert_int_equal(v.last.value_len, 12);
	assert_int_equal(v.last.flags, 0x55);
	assert_false(v.last.counter);
	assert_false(v.last.stale);
	assert_true(v.last.ttl_ms > 90000 && v.last.ttl_ms <= 100000);
	assert_true(v.last.cas != 0);

	assert_ok(kvshm_delete(fx->kv, KS("live")));
	assert_ok(kvshm_incr(fx->kv, KS("c"), 3, 0, NULL));
	memset(&v, 0, sizeof(v));
	assert_int_equal(scan_all(fx->kv, "", &v), 1);
	assert_true(v.last.counter);
	assert_int_equal(v.last.value_len, 8);
	assert_int_equal(v.last.ttl_ms, -1);
}

static void test_scan_with_garbage_cursor_fails_cleanly_or_completes(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	const uint64_t garbage[] = { UINT64_MAX, 0x0123456789abcdefull,
				     1ull << 63 };
	int rc;

	for (int i = 0; i < 100; i++) {
		set_key_i(fx->kv, "k", i, 8, &rc);
		assert_ok(rc);
	}
	for (size_t g = 0; g < sizeof(garbage) / sizeof(garbage[0]); g++) {
		uint64_t cursor = garbage[g];
		struct visits v = { 0 };
		int pages = 0;

		do {
			rc = kvshm_scan(fx->kv, NULL, 0, &cursor, 10, visit, &v);
			if (rc < 0) {
				assert_kv(rc, -EINVAL);
				break;
			}
			assert_true(++pages < 10000);
		} while (cursor != 0);
		assert_true(v.calls <= 100 * 2);
	}
}

static void test_sweep_reclaims_expired_items_and_counts_them(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_stats before, after;
	size_t n = 0;
	int rc;

	for (int i = 0; i < 100; i++) {
		char k[32];

		snprintf(k, sizeof(k), "short%d", i);
		set_str(fx->kv, k, "v", 30);
	}
	for (int i = 0; i < 50; i++) {
		set_key_i(fx->kv, "k", i, 20, &rc);
		assert_ok(rc);
	}
	before = stats_of(fx->kv);
	assert_int_equal(before.items, 150);
	tu_sleep_ms(60);
	assert_ok(kvshm_sweep(fx->kv, 0, &n));
	assert_int_equal(n, 100);
	after = stats_of(fx->kv);
	assert_int_equal(after.items, 50);
	assert_int_equal(after.expired - before.expired, 100);
	assert_int_equal(after.expired_swept - before.expired_swept, 100);
	assert_true(after.used_bytes < before.used_bytes);
	for (int i = 0; i < 50; i++)
		assert_true(key_i_intact(fx->kv, "k", i, 20));
	assert_ok(kvshm_sweep(fx->kv, 0, &n));
	assert_int_equal(n, 0);
	assert_ok(kvshm_sweep(fx->kv, 0, NULL));
	tu_check(fx->kv);
}

static void test_sweep_with_a_limit_reclaims_at_most_that_many(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	size_t n, total = 0;
	int calls = 0;

	for (int i = 0; i < 100; i++) {
		char k[32];

		snprintf(k, sizeof(k), "short%d", i);
		set_str(fx->kv, k, "v", 30);
	}
	tu_sleep_ms(60);
	while (total < 100) {
		n = 999;
		assert_ok(kvshm_sweep(fx->kv, 10, &n));
		assert_true(n <= 10);
		total += n;
		assert_true(++calls < 10000);
	}
	assert_int_equal(total, 100);
	assert_int_equal(stats_of(fx->kv).items, 0);
}

/* ---- a full store ----------------------------------------------------- */

static void test_full_evicting_store_keeps_accepting_writes(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *kv = new_store(fx, TU_MIB, 0, 0, NULL);
	uint64_t seed = 42;
	size_t *len = calloc(6000, sizeof(size_t));
	int rc, present = 0;
	struct kvshm_stats st;

	for (int i = 0; i < 6000; i++) { /* ~12 MiB through a 1 MiB arena */
		len[i] = 16 + tu_rand(&seed) % 4000;
		set_key_i(kv, "k", i, len[i], &rc);
		if (rc != 0)
			fail_msg("write %d of %zu bytes: %d (%s)", i, len[i],
				 rc, kvshm_strerror(rc));
	}
	st = stats_of(kv);
	assert_true(st.evictions > 0);
	assert_true(st.items <= st.max_items);
	assert_true(st.used_bytes <= st.data_bytes);
	for (int i = 0; i < 6000; i++) {
		char k[32];

		snprintf(k, sizeof(k), "k%05d", i);
		if (kvshm_exists(kv, KS(k)) == 1) {
			present++;
			if (!key_i_intact(kv, "k", i, len[i]))
				fail_msg("k%05d is present but not intact", i);
		}
	}
	assert_true(key_i_intact(kv, "k", 5999, len[5999]));
	assert_int_equal((uint64_t)present, stats_of(kv).items);
	print_message("%d of 6000 items present, %" PRIu64 " evictions\n",
		      present, st.evictions);
	free(len);
	tu_check(kv);
}

/* Fill a NOEVICT store with 1 KiB values until -ENOSPC; returns the count. */
static int fill_until_enospc(struct kvshm *kv, const char *pfx)
{
	int i, rc = 0;

	for (i = 0; i < 100000; i++) {
		set_key_i(kv, pfx, i, 1024, &rc);
		if (rc != 0)
			break;
	}
	assert_kv(rc, -ENOSPC);
	return i;
}

/* Overwriting a few keys over and over fills the arena with garbage. The
 * writers' reclaim then moves the live items of a mostly-garbage segment,
 * read or not, instead of evicting them: a cache that is mostly garbage
 * never drops live data. */
static void test_reclaim_of_mostly_garbage_moves_live_items_instead_of_evicting(
	void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(0, 4 * TU_MIB);
	struct kvshm *kv = tu_create(fx, &o, NULL);
	enum { NKEYS = 2000 };
	static int last[NKEYS]; /* round of each key's last write */
	char key[32], val[200], got[200];
	uint64_t rng = 88172645463325252ull;
	size_t len;

	memset(val, 0, sizeof(val));
	/* random keys, so live items end up spread over every segment;
	 * ~15% of the arena is live, the rest garbage */
	for (int n = 0; n < 400000 && stats_of(kv).segments_reclaimed < 40;
	     n++) {
		rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
		int i = (int)(rng % NKEYS);
		snprintf(key, sizeof(key), "k%d", i);
		snprintf(val, sizeof(val), "%d/%d", i, n);
		assert_ok(kvshm_set(kv, KS(key), val, sizeof(val), 0));
		last[i] = n + 1;
	}
	assert_true(stats_of(kv).segments_reclaimed >= 40);
	assert_int_equal(stats_of(kv).evictions, 0);
	for (int i = 0; i < NKEYS; i++) {
		if (!last[i])
			continue;
		snprintf(key, sizeof(key), "k%d", i);
		snprintf(val, sizeof(val), "%d/%d", i, last[i] - 1);
		assert_ok(kvshm_get(kv, KS(key), got, sizeof(got), &len));
		assert_string_equal(got, val);
	}
	tu_check(kv);
}

static void test_full_noevict_store_returns_enospc_and_keeps_old_values(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *kv = new_store(fx, TU_MIB, KVSHM_NOEVICT, 0, NULL);
	const int n = fill_until_enospc(kv, "k");
	struct kvshm_stats st = stats_of(kv);
	char v[2048]; /* the growing overwrite below writes 2048 bytes */
	int rc;

	print_message("NOEVICT 1 MiB store: %d x 1 KiB values (%.0f%% of "
		      "data_bytes) before -ENOSPC\n",
		      n, 100.0 * n * 1030 / (double)st.data_bytes);
	assert_true((uint64_t)n * 1024 >= st.data_bytes / 2);
	assert_int_equal(st.noevict, 1);
	assert_int_equal(st.evictions, 0);
	assert_true(st.store_failures > 0);
	assert_true(st.fail_nospace + st.fail_index_full > 0);
	for (int i = 0; i < n; i++)
		if (!key_i_intact(kv, "k", i, 1024))
			fail_msg("acknowledged k%05d lost or changed", i);
	set_key_i(kv, "k", n + 1, 1024, &rc);
	assert_kv(rc, -ENOSPC);

	/* a failed overwrite leaves the old value */
	memset(v, 'z', sizeof(v));
	rc = kvshm_set(kv, KS("k00000"), v, 1024, 0);
	if (rc == -ENOSPC) {
		assert_true(key_i_intact(kv, "k", 0, 1024));
	} else {
		assert_ok(rc);
		assert_bytes(kv, KS("k00000"), v, 1024);
	}
	/* a growing overwrite may use the headroom kept for overwrites;
	 * either way nothing else changes */
	rc = kvshm_set(kv, KS("k00001"), v, 2048, 0);
	if (rc == -ENOSPC) {
		assert_true(key_i_intact(kv, "k", 1, 1024));
	} else {
		assert_ok(rc);
		assert_bytes(kv, KS("k00001"), v, 2048);
	}
	for (int i = 2; i < n; i++)
		if (!key_i_intact(kv, "k", i, 1024))
			fail_msg("acknowledged k%05d lost or changed", i);
	assert_int_equal(stats_of(kv).items, (uint64_t)n);
	tu_check(kv);
}

static void test_noevict_store_accepts_writes_again_after_deletes(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm *kv = new_store(fx, TU_MIB, KVSHM_NOEVICT, 0, NULL);
	const int n = fill_until_enospc(kv, "a");
	char k[32];
	int again;

	for (int i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "a%05d", i);
		assert_ok(kvshm_delete(kv, KS(k)));
	}
	again = fill_until_enospc(kv, "b");
	print_message("%d values fitted, then %d after deleting them all\n", n,
		      again);
	assert_true(again >= n * 9 / 10);
	tu_check(kv);
}

static void test_value_that_can_never_fit_fails_without_evicting(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, TU_MIB);
	const char *name = tu_new_name(fx, "huge");
	struct kvshm *kv = NULL;
	struct kvshm_stats before, after;
	size_t huge = TU_MIB;
	char *val;
	int rc;

	o.max_value_bytes = TU_MIB; /* so only room, not the limit, refuses */
	rc = kvshm_open(name, &o, &kv);
	if (rc == -EINVAL) {
		print_message("max_value_bytes = arena_bytes refused: testing "
			      "a value above the default limit instead\n");
		o.max_value_bytes = 0;
		huge = TU_MIB + 1;
		rc = kvshm_open(name, &o, &kv);
	}
	assert_ok(rc);
	tu_track(fx, kv);
	for (int i = 0; i < 100; i++) {
		set_key_i(kv, "k", i, 1024, &rc);
		assert_ok(rc);
	}
	before = stats_of(kv);
	val = calloc(1, huge);
	rc = kvshm_set(kv, KS("huge"), val, huge, 0);
	free(val);
	if (rc != -E2BIG && rc != -ENOSPC)
		fail_msg("a %zu-byte value in a 1 MiB store: %d (%s)", huge,
			 rc, kvshm_strerror(rc));
	after = stats_of(kv);
	assert_int_equal(after.items, before.items);
	assert_int_equal(after.evictions, before.evictions);
	for (int i = 0; i < 100; i++)
		assert_true(key_i_intact(kv, "k", i, 1024));
	assert_kv(kvshm_exists(kv, KS("huge")), 0);
	tu_check(kv);
}

static void test_value_of_max_value_bytes_fits_in_a_full_evicting_store(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_CREATE | KVSHM_EXCL, TU_MIB);
	const char *name = tu_new_name(fx, "bigfit");
	struct kvshm *kv = NULL;
	size_t max;
	char *val;
	int rc;

	o.max_value_bytes = TU_MIB / 4;
	rc = kvshm_open(name, &o, &kv);
	if (rc == -EINVAL) {
		o.max_value_bytes = 0;
		rc = kvshm_open(name, &o, &kv);
	}
	assert_ok(rc);
	tu_track(fx, kv);
	max = stats_of(kv).max_value_bytes;
	fill_until_eviction(kv);
	val = malloc(max);
	for (size_t i = 0; i < max; i++)
		val[i] = (char)(i * 7);
	for (int round = 0; round < 3; round++) { /* and again, over itself */
		val[0] = (char)round;
		assert_ok(kvshm_set(kv, KS("big"), val, max, 0));
		assert_bytes(kv, KS("big"), val, max);
	}
	free(val);
	tu_check(kv);
}

/* ---- stats, check, strerror ------------------------------------------- */

static void test_stats_count_gets_hits_misses_sets_deletes_incrs(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_options o = tu_opts(KVSHM_RDONLY, 0);
	struct kvshm_stats a = stats_of(fx->kv), b;
	char buf[16];

	set_str(fx->kv, "a", "1", 0);
	set_str(fx->kv, "b", "2", 0);
	assert_ok(put_str(fx->kv, "c", "3", NULL, NULL));
	assert_ok(kvshm_get(fx->kv, KS("a"), buf, sizeof(buf), NULL));
	assert_ok(kvshm_get(fx->kv, KS("b"), buf, sizeof(buf), NULL));
	assert_kv(kvshm_get(fx->kv, KS("zz"), buf, sizeof(buf), NULL), -ENOENT);
	assert_ok(kvshm_delete(fx->kv, KS("a")));
	b = stats_of(fx->kv);
	assert_int_equal(b.sets - a.sets, 3);
	assert_int_equal(b.gets - a.gets, 3);
	assert_int_equal(b.hits - a.hits, 2);
	assert_int_equal(b.misses - a.misses, 1);
	assert_int_equal(b.deletes - a.deletes, 1);
	assert_int_equal(b.items, 2);
	assert_true(b.used_bytes > 0);
	assert_true(b.used_bytes + b.free_bytes <= b.data_bytes);
	assert_true(b.largest_free_bytes <= b.free_bytes);

	a = b;
	assert_ok(kvshm_incr(fx->kv, KS("n"), 1, 0, NULL));
	assert_ok(kvshm_incr(fx->kv, KS("n"), 1, 0, NULL));
	b = stats_of(fx->kv);
	assert_int_equal(b.incrs - a.incrs, 2);
	assert_int_equal(b.items, 3);

	b = stats_of(tu_open(fx, fx->name, &o));
	assert_int_equal(b.arena_bytes, 4 * TU_MIB);
	assert_int_equal(b.items, 3);
}

static void test_check_of_consistent_store_returns_0_with_a_summary(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	char report[512], tiny[1] = { 'x' };

	set_str(fx->kv, "k", "v", 0);
	memset(report, 'x', sizeof(report));
	assert_ok(kvshm_check(fx->kv, report, sizeof(report)));
	assert_non_null(memchr(report, 0, sizeof(report)));
	assert_true(strlen(report) > 0);
	print_message("check summary: %s\n", report);
	assert_ok(kvshm_check(fx->kv, tiny, sizeof(tiny)));
	assert_int_equal(tiny[0], 0);
	assert_ok(kvshm_check(fx->kv, NULL, 0));
}

static void test_strerror_is_never_null_and_names_codes(void **state)
{
	static const int codes[] = { 0, EINVAL, ENOENT, EEXIST, EBADMSG,
				     EPROTONOSUPPORT, EACCES, ELOOP, EXDEV,
				     ETIMEDOUT, ENOMEM, ESTALE, E2BIG, ENOSPC,
				     EROFS, ENOTRECOVERABLE, ENOBUFS, ENOMSG,
				     ERANGE, EUCLEAN, 99999, INT_MAX };
	(void)state;
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *neg = kvshm_strerror(-codes[i]);
		const char *pos = kvshm_strerror(codes[i]);

		assert_non_null(neg);
		assert_non_null(pos);
		assert_true(neg[0] != 0);
		assert_string_equal(neg, pos);
	}
	assert_non_null(kvshm_strerror(INT_MIN));
	assert_string_not_equal(kvshm_strerror(-ENOENT), kvshm_strerror(-EEXIST));
	assert_string_not_equal(kvshm_strerror(-ENOSPC), kvshm_strerror(-E2BIG));
}

/* Issue 13, defect 10: an errno kvshm_strerror() does not list (a directory
 * given to destroy: EISDIR) said "unknown error". It gets the system's
 * message now, from a buffer of the calling thread: threads asking for
 * different codes at once each get their own. */
struct strerror_job {
	int code;
	char want[128];
	int wrong;
};

static void *strerror_many(void *arg)
{
	struct strerror_job *job = arg;

	for (int i = 0; i < 20000; i++)
		job->wrong += strcmp(kvshm_strerror(-job->code), job->want) != 0;
	return NULL;
}

static void test_strerror_falls_back_to_the_system_message(void **state)
{
	static const int codes[] = {EISDIR, ENOTDIR, EMFILE, EFBIG};
	struct strerror_job jobs[4];
	pthread_t t[4];
	char unknown[64];

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		jobs[i].code = codes[i];
		jobs[i].wrong = 0;
		/* GNU strerror_r: the message may not be in the buffer */
		snprintf(jobs[i].want, sizeof(jobs[i].want), "%s",
			 strerror_r(codes[i], jobs[i].want,
				    sizeof(jobs[i].want)));
		assert_string_equal(kvshm_strerror(-codes[i]), jobs[i].want);
		assert_string_equal(kvshm_strerror(codes[i]), jobs[i].want);
	}
	assert_string_not_equal(kvshm_strerror(-EISDIR), "unknown error");
	snprintf(unknown, sizeof(unknown), "%s", kvshm_strerror(-4242));
	assert_non_null(strstr(unknown, "4242")); /* "Unknown error 4242" */
	assert_string_equal(kvshm_strerror(-EINVAL), "invalid argument");
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, strerror_many,
						&jobs[i]), 0);
	for (size_t i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(jobs[i].wrong, 0);
	}
}

/* Issue 13 item 8: a scan whose callback is slow must not hand over keys
 * that expired while it ran (the old scan read the clock once, at the
 * start). */
struct slow_scan {
	int64_t expired_by; /* every TTL key has expired after this (ms) */
	int calls, ttl_after, plain;
};

static int slow_scan_cb(const void *key, size_t klen,
			const struct kvshm_item *item, void *ctx)
{
	struct slow_scan *sc = ctx;
	int64_t handed = tu_now_ms(); /* before this call's own sleep */

	(void)key;
	(void)klen;
	if (item->ttl_ms < 0)
		sc->plain++;
	else if (handed > sc->expired_by)
		sc->ttl_after++; /* handed over although it expired */
	if (sc->calls++ == 0)
		tu_sleep_ms(300);
	return 0;
}

static void test_scan_never_hands_over_a_key_that_expired_during_it(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct slow_scan sc = {0};
	uint64_t cursor = 0;
	char k[32];

	for (int i = 0; i < 100; i++) {
		snprintf(k, sizeof(k), "short-%03d", i);
		assert_ok(kvshm_set(fx->kv, KS(k), "v", 1, 100));
		snprintf(k, sizeof(k), "plain-%03d", i);
		assert_ok(kvshm_set(fx->kv, KS(k), "v", 1, KVSHM_TTL_NEVER));
	}
	/* expiry is set + 100 ms; the slack covers the moment between the
	 * scan's own look at the clock and the callback's */
	sc.expired_by = tu_now_ms() + 100 + 20;
	do
		assert_true(kvshm_scan(fx->kv, NULL, 0, &cursor, 0,
				       slow_scan_cb, &sc) >= 0);
	while (cursor);
	assert_int_equal(sc.plain, 100); /* the cursor still saw them all */
	if (sc.ttl_after)
		fail_msg("%d keys handed over after their TTL ran out",
			 sc.ttl_after);
}

/* Mutant keepttl-past: KEEPTTL keeps the TTL of a live key only; a key
 * that already expired is gone, so the write gets its own TTL and is
 * visible at once. */
static void test_keepttl_on_an_expired_key_does_not_keep_the_past_expiry(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write past = {.expires_at_ms = tu_now_ms() - 1000};
	struct kvshm_write keep = {.opts = KVSHM_KEEPTTL,
				   .ttl_ms = KVSHM_TTL_NEVER};
	char buf[8];
	int64_t ttl;

	assert_ok(kvshm_put(fx->kv, KS("k"), "old", 3, &past, NULL));
	assert_kv(kvshm_get(fx->kv, KS("k"), buf, sizeof(buf), NULL), -ENOENT);
	assert_ok(kvshm_put(fx->kv, KS("k"), "new", 3, &keep, NULL));
	assert_ok(kvshm_get(fx->kv, KS("k"), buf, sizeof(buf), NULL));
	assert_memory_equal(buf, "new", 3);
	assert_ok(kvshm_ttl(fx->kv, KS("k"), &ttl));
	assert_int_equal(ttl, -1);
}

/* Mutant ttl-overflow-unclamped: a TTL so long that now + ttl does not fit
 * means never, not an expiry in the past. */
static void test_ttl_too_long_to_add_means_never(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	char buf[8];
	int64_t ttl;

	assert_ok(kvshm_set(fx->kv, KS("k"), "v", 1, (uint64_t)INT64_MAX));
	assert_ok(kvshm_get(fx->kv, KS("k"), buf, sizeof(buf), NULL));
	assert_ok(kvshm_ttl(fx->kv, KS("k"), &ttl));
	assert_int_equal(ttl, -1);
	assert_ok(kvshm_expire(fx->kv, KS("k"), UINT64_MAX - 1));
	assert_ok(kvshm_ttl(fx->kv, KS("k"), &ttl));
	assert_int_equal(ttl, -1);
}

/* Mutant freeze-compares-value: a CAS write or delete_cas on a counter
 * compares the counter's version, never its value. */
static void test_cas_and_delete_cas_on_a_counter_check_its_version(void **state)
{
	struct tu_fx *fx = tu_fx(state);
	struct kvshm_write cas = {.mode = KVSHM_CAS};
	struct kvshm_item item;
	int64_t buf, v;

	/* the right version: the CAS replaces the counter with bytes */
	assert_ok(kvshm_incr(fx->kv, KS("c"), 7, 0, NULL));
	assert_ok(kvshm_get_ex(fx->kv, KS("c"), &buf, sizeof(buf), &item, 0));
	cas.cas = item.cas;
	assert_ok(kvshm_put(fx->kv, KS("c"), "bytes", 5, &cas, NULL));
	assert_kv(kvshm_counter(fx->kv, KS("c"), &v), -ENOMSG);

	/* a "version" equal to the value is stale */
	assert_ok(kvshm_incr(fx->kv, KS("d"), 3, 0, NULL));
	cas.cas = 3;
	assert_kv(kvshm_put(fx->kv, KS("d"), "bytes", 5, &cas, NULL), -ESTALE);
	assert_kv(kvshm_delete_cas(fx->kv, KS("d"), 3), -ESTALE);
	assert_ok(kvshm_counter(fx->kv, KS("d"), &v));
	assert_int_equal(v, 3);

	/* delete_cas with the counter's version deletes it */
	assert_ok(kvshm_get_ex(fx->kv, KS("d"), &buf, sizeof(buf), &item, 0));
	assert_ok(kvshm_delete_cas(fx->kv, KS("d"), item.cas));
	assert_int_equal(kvshm_exists(fx->kv, KS("d")), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_setup_store, tu_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_version_functions_match_the_header),
		T(test_open_without_create_of_missing_store_returns_enoent),
		T(test_open_with_create_makes_a_store_that_others_attach_to),
		T(test_open_with_create_excl_of_existing_store_returns_eexist),
		T(test_open_with_null_options_attaches_to_an_existing_store),
		T(test_open_with_zero_options_size_is_taken_as_current_size),
		T(test_open_of_invalid_name_returns_einval),
		T(test_dot_and_dotdot_are_refused_as_store_names),
		T(test_open_with_invalid_options_returns_einval),
		T(test_open_with_out_of_range_sizes_returns_einval),
		T(test_options_from_a_newer_caller_work_only_with_unknown_fields_zero),
		T(test_resize_with_bad_arguments_fails_and_changes_nothing),
		T(test_name_with_slash_is_a_file_path),
		T(test_leading_slash_and_no_other_is_the_shm_object),
		T(test_default_options_give_the_documented_geometry),
		T(test_attach_with_other_create_options_keeps_the_original_geometry),
		T(test_file_of_zeros_is_not_a_store_and_returns_ebadmsg),
		T(test_file_of_random_bytes_returns_ebadmsg_and_is_left_untouched),
		T(test_truncated_store_returns_ebadmsg),
		T(test_store_with_corrupt_magic_returns_ebadmsg),
		T(test_store_abandoned_by_a_dead_creator_is_initialised_afresh_with_create),
		T(test_created_store_has_exactly_the_requested_mode_whatever_the_umask),
		T(test_attach_accepts_mode_0666_and_refuses_wider_modes_with_eacces),
		T(test_attach_to_store_owned_by_another_user_returns_eacces),
		T(test_symlinked_store_name_returns_eloop),
		T(test_non_regular_files_are_refused_without_hanging),
		T(test_unlink_removes_the_name_but_open_handles_keep_working),
		T(test_close_of_null_is_a_no_op),
		T(test_readonly_handle_refuses_writes_with_erofs),
		T(test_readonly_handle_reads_without_modifying_the_segment),
		T(test_get_returns_what_set_stored),
		T(test_get_of_missing_key_returns_enoent),
		T(test_get_with_small_buffer_returns_enobufs_and_the_needed_length),
		T(test_binary_keys_and_values_with_nul_bytes_round_trip),
		T(test_zero_length_value_round_trips),
		T(test_key_of_max_key_bytes_works_and_one_more_is_e2big),
		T(test_value_of_max_value_bytes_works_and_one_more_is_e2big),
		T(test_empty_key_returns_einval_everywhere),
		T(test_null_pointer_with_nonzero_length_returns_einval),
		T(test_bad_mode_options_or_flags_return_einval),
		T(test_put_add_succeeds_only_when_key_is_absent_or_expired),
		T(test_put_replace_succeeds_only_when_key_is_live),
		T(test_put_cas_succeeds_only_with_the_current_version),
		T(test_version_changes_on_every_write_and_is_never_zero),
		T(test_version_of_recreated_key_differs_from_before_its_delete),
		T(test_put_keepttl_keeps_the_current_expiry),
		T(test_put_noevict_write_returns_enospc_instead_of_evicting),
		T(test_user_flags_round_trip_and_plain_set_resets_them),
		T(test_put_expires_at_ms_is_an_absolute_expiry_overriding_ttl),
		T(test_zero_ttl_applies_the_store_default_ttl),
		T(test_get_of_expired_key_returns_enoent),
		T(test_get_ex_with_stale_returns_expired_unreclaimed_item),
		T(test_item_is_never_returned_at_or_after_its_expiry_time),
		T(test_ttl_reports_ms_left_or_minus_one_for_never),
		T(test_expire_sets_a_new_ttl_and_keeps_value_and_version),
		T(test_exists_returns_1_for_live_and_0_for_missing_or_expired),
		T(test_delete_removes_the_key_and_a_second_delete_returns_enoent),
		T(test_delete_cas_deletes_only_the_matching_version),
		T(test_incr_of_missing_key_creates_a_counter_with_delta_and_init_ttl),
		T(test_incr_of_existing_counter_keeps_its_ttl),
		T(test_incr_of_non_counter_returns_enomsg_and_leaves_the_value),
		T(test_incr_on_decimal_text_makes_a_counter),
		T(test_incr_overflow_returns_erange_and_leaves_the_value),
		T(test_incr_of_expired_non_counter_creates_a_new_counter),
		T(test_counter_of_missing_key_returns_enoent_and_zero),
		T(test_get_of_counter_returns_8_host_order_bytes),
		T(test_set_on_counter_key_replaces_it_with_bytes),
		T(test_clear_removes_every_key_and_later_writes_work),
		T(test_scan_visits_only_keys_with_the_prefix),
		T(test_scan_with_small_limit_visits_every_key_exactly_once),
		T(test_scan_callback_may_delete_the_visited_key),
		T(test_scan_stops_on_nonzero_and_returns_a_negative_value),
		T(test_scan_skips_expired_keys_and_reports_items),
		T(test_scan_with_garbage_cursor_fails_cleanly_or_completes),
		T(test_sweep_reclaims_expired_items_and_counts_them),
		T(test_sweep_with_a_limit_reclaims_at_most_that_many),
		T(test_full_evicting_store_keeps_accepting_writes),
		T(test_reclaim_of_mostly_garbage_moves_live_items_instead_of_evicting),
		T(test_full_noevict_store_returns_enospc_and_keeps_old_values),
		T(test_noevict_store_accepts_writes_again_after_deletes),
		T(test_value_that_can_never_fit_fails_without_evicting),
		T(test_value_of_max_value_bytes_fits_in_a_full_evicting_store),
		T(test_stats_count_gets_hits_misses_sets_deletes_incrs),
		T(test_check_of_consistent_store_returns_0_with_a_summary),
		T(test_strerror_is_never_null_and_names_codes),
		T(test_strerror_falls_back_to_the_system_message),
		T(test_scan_never_hands_over_a_key_that_expired_during_it),
		T(test_keepttl_on_an_expired_key_does_not_keep_the_past_expiry),
		T(test_ttl_too_long_to_add_means_never),
		T(test_cas_and_delete_cas_on_a_counter_check_its_version),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
