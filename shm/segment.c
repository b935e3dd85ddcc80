/* SPDX-License-Identifier: MIT */
/*
 * segment.c - naming, creating, attaching and detaching stores: the
 * segment's geometry, its secure creation, the create/attach race, and the
 * checks made before anything is mapped, and the janitor role. Writes
 * shared memory while initialising a segment nobody else can use yet, and
 * the janitor's record in the header (only as the role's holder).
 *
 * CREATE/ATTACH RACE. The creator makes the object with O_EXCL, takes an
 * exclusive OFD lock on its first byte, sizes it, initialises it, and
 * publishes `magic` last (release), then drops the lock. An attacher that
 * finds no magic yet looks at that lock: held means "being initialised,
 * wait" (up to 5 s); not held means the creator died half-way, and an
 * attacher with KVSHM_CREATE takes the lock and initialises afresh (one
 * wins the lock; the others wait for it). The kernel drops OFD locks when
 * the last descriptor closes, so a kill -9 can never leave the lock held.
 */
#include "internal.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KV_MIB (UINT64_C(1) << 20)
#define KV_MIN_ARENA KVSHM_MIN_ARENA_BYTES
#define KV_MAX_ARENA KVSHM_MAX_ARENA_BYTES
#define KV_DEFAULT_ARENA KVSHM_DEFAULT_ARENA_BYTES
#define KV_DEFAULT_MAX_KEY 512u
#define KV_DEFAULT_MAX_VALUE KV_MIB
#define KV_ATTACH_WAIT_NS (5 * 1000 * 1000 * 1000LL)

#ifdef KVSHM_TESTING
/* Test builds: fail the n-th call of a system function (fault injection). */
long kv__test_fail_ftruncate, kv__test_fail_mmap, kv__test_fail_getrandom,
	kv__test_fail_fallocate;
bool kv__test_zero_seed;
static bool fault(long *countdown)
{
	return *countdown > 0 && --*countdown == 0;
}
#define KV_FAULT(which) fault(&kv__test_fail_##which)
#else
#define KV_FAULT(which) false
#endif

uint64_t kv__abi_fingerprint(void)
{
	uint64_t fp = 0;

	fp |= (uint64_t)sizeof(pthread_mutex_t);
	fp |= (uint64_t)_Alignof(pthread_mutex_t) << 8;
	fp |= (uint64_t)sizeof(void *) << 16;
	fp |= (uint64_t)KV_CACHELINE << 24;
	fp |= (uint64_t)sizeof(struct kv__stripe) << 32;
#if defined(__GLIBC__)
	fp |= UINT64_C(1) << 48; /* glibc's mutex protocol, not musl's */
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	fp |= UINT64_C(1) << 49;
#endif
	return fp;
}

uint64_t kv__header_check(const struct kv__header *h)
{
	static const uint64_t key[2] = {UINT64_C(0x6b7673686d2d6864),
					UINT64_C(0x722d636865636b31)};
	const uint8_t *from = (const uint8_t *)&h->layout;
	const uint8_t *to = (const uint8_t *)&h->header_check;

	return kv__siphash13(key, from, (size_t)(to - from));
}

/* ---- geometry ----------------------------------------------------------- */

/*
 * Derive the whole layout from the creation parameters in h (arena_bytes,
 * max_items, max_key_bytes, max_value_bytes). The creator fills the header
 * with it; an attacher recomputes it and refuses a header that disagrees,
 * so no offset is ever taken from the segment on trust.
 */
static int layout_compute(struct kv__header *h)
{
	uint64_t arena = h->arena_bytes, want, fixed, nsegs_max, seg;
	uint32_t sb = KV_STRIPE_BUCKETS;

	_Static_assert(KV_MAX_ARENA / KV_ITEM_ALIGN <= KV_SLOT_OFF_MASK + 1,
		       "slot words address the largest arena");
	if (arena < KV_MIN_ARENA || arena > KV_MAX_ARENA ||
	    h->max_key_bytes == 0 || h->max_key_bytes > UINT16_MAX ||
	    h->max_value_bytes == 0 || h->max_value_bytes > arena / 4 ||
	    h->max_items == 0 || h->max_items > arena / 16)
		return -EINVAL;
	seg = kv__align(KV_ITEM_HDR + h->max_key_bytes + h->max_value_bytes,
			4096);
	if (seg < 64 * 1024)
		seg = 64 * 1024;
	want = (h->max_items * 5 + 20) / 21; /* 7 slots at 60% load */
	while (sb > KV_MAX_PROBE && want / sb < 16)
		sb /= 2;
	while ((want + sb - 1) / sb > KV_MAX_STRIPES)
		sb *= 2;
	h->stripe_buckets = sb;
	h->nstripes = (uint32_t)((want + sb - 1) / sb);
	h->nbuckets = (uint64_t)h->nstripes * sb;

	h->stats_off = KV_HEADER_BYTES;
	h->lanes_off = h->stats_off + KV_STATS_BYTES;
	h->cleaner_off = h->lanes_off + KV_MAX_LANES * KV_LANE_BYTES;
	h->stripes_off = h->cleaner_off + KV_CLEANER_BYTES;
	h->gens_off = h->stripes_off + (uint64_t)h->nstripes * KV_STRIPE_BYTES;
	h->segtab_off = kv__align(h->gens_off + (uint64_t)h->nstripes *
							sizeof(kv__stripe_gen),
				  KV_CACHELINE);
	fixed = h->segtab_off + h->nbuckets * sizeof(struct kv__bucket);
	if (fixed + 4 * seg > arena)
		return -EINVAL; /* too small for its max_value_bytes/max_items */
	nsegs_max = (arena - fixed) / seg;
	if (nsegs_max > KV_MAX_SEGMENTS) {
		seg = kv__align((arena - fixed) / KV_MAX_SEGMENTS + 1, 4096);
		nsegs_max = (arena - fixed) / seg;
	}
	h->segment_bytes = seg;
	h->index_off = kv__align(h->segtab_off +
					 nsegs_max * sizeof(struct kv__segment),
				 KV_CACHELINE);
	h->data_off = kv__align(h->index_off +
					h->nbuckets * sizeof(struct kv__bucket),
				4096);
	if (h->data_off >= arena || (arena - h->data_off) / seg < KV_MIN_SEGMENTS)
		return -EINVAL;
	h->nsegs = (uint32_t)((arena - h->data_off) / seg);
	h->nlanes = h->nsegs / 4 < KV_MAX_LANES ? h->nsegs / 4 : KV_MAX_LANES;
	if (h->nlanes == 0)
		h->nlanes = 1;
	return 0;
}

/* Creation parameters from the caller's options, with the defaults. */
static int params_from_options(const struct kvshm_options *o,
			       struct kv__header *h)
{
	memset(h, 0, sizeof(*h));
	h->arena_bytes = o->arena_bytes ? o->arena_bytes : KV_DEFAULT_ARENA;
	h->max_items = o->max_items ? o->max_items : h->arena_bytes / 128;
	h->max_key_bytes = o->max_key_bytes ? o->max_key_bytes
					    : KV_DEFAULT_MAX_KEY;
	h->max_value_bytes = o->max_value_bytes;
	if (!h->max_value_bytes)
		h->max_value_bytes = h->arena_bytes / 16 < KV_DEFAULT_MAX_VALUE
					     ? (uint32_t)(h->arena_bytes / 16)
					     : KV_DEFAULT_MAX_VALUE;
	h->default_ttl_ms = o->default_ttl_ms;
	h->flags = o->flags & KVSHM_NOEVICT;
	if (h->default_ttl_ms == KVSHM_TTL_NEVER)
		h->default_ttl_ms = 0;
	return layout_compute(h);
}

/* ---- names -------------------------------------------------------------- */

/*
 * NAMES. "NAME" and "/NAME" (one leading '/' and no other) are the POSIX shm
 * object /NAME, which is how shm_open(3) users write it, so "/myapp" is
 * /dev/shm/myapp and never a file in the root directory. Any other name
 * with a '/' is a file path ("./NAME", "dir/NAME", "/run/app/NAME").
 * Returns the shm object's name without its '/', or NULL for a path.
 */
static const char *shm_object_name(const char *name)
{
	const char *base = name[0] == '/' ? name + 1 : name;

	return strchr(base, '/') ? NULL : base;
}

static int name_check(const char *name)
{
	const char *base;
	size_t len;

	if (!name)
		return -EINVAL;
	len = strnlen(name, PATH_MAX);
	if (len == 0 || len >= PATH_MAX)
		return -EINVAL;
	base = shm_object_name(name);
	if (base) {
		len = strlen(base);
		if (len == 0 || len > NAME_MAX - 1)
			return -EINVAL;
		if (!strcmp(base, ".") || !strcmp(base, ".."))
			return -EINVAL;
	} else if (name[len - 1] == '/') {
		return -EINVAL;
	}
	return 0;
}

static int obj_open(const char *name, int oflag, mode_t mode)
{
	const char *base = shm_object_name(name);
	int fd;

	if (!base) {
		fd = open(name, oflag | O_NOFOLLOW | O_CLOEXEC, mode);
	} else {
		char shm_name[NAME_MAX + 1];
		snprintf(shm_name, sizeof(shm_name), "/%s", base);
		fd = shm_open(shm_name, oflag, mode); /* adds NOFOLLOW|CLOEXEC */
	}
	return fd < 0 ? -errno : fd;
}

/* The file system path of a store: the name itself, or /dev/shm/NAME for a
 * POSIX shm object (where glibc's shm_open() keeps them). */
int kv__fs_path(const char *name, char *buf, size_t len)
{
	const char *base;
	int n = name_check(name);

	if (n)
		return n;
	base = shm_object_name(name);
	n = base ? snprintf(buf, len, "/dev/shm/%s", base)
		 : snprintf(buf, len, "%s", name);
	return n < 0 || (size_t)n >= len ? -EINVAL : 0;
}

/* Remove name, whatever it is: for objects this library made itself (a
 * half-made one has no magic yet) and for KVSHM_UNLINK_FORCE. */
int kv__unlink_name(const char *name)
{
	char path[PATH_MAX];
	int err = kv__fs_path(name, path, sizeof(path));

	if (err)
		return err;
	return unlink(path) ? -errno : 0;
}

/* Is the object behind fd a kvshm store? Only its magic is looked at, so a
 * store of another layout version, or one whose header is damaged past the
 * magic, is ours too. Read with pread(), never mapped: the file may be
 * anything, shorter than a page included. */
static int fd_is_store(int fd)
{
	uint64_t magic;
	ssize_t n = pread(fd, &magic, sizeof(magic), 0);

	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(magic) && magic == KV_MAGIC ? 0 : -EBADMSG;
}

/*
 * Remove name only if it is a kvshm store: a regular file (not a symbolic
 * link, FIFO, device or directory) that starts with our magic. The check is
 * made on a descriptor, and the name is looked up again just before the
 * unlink to see it still leads to the file checked.
 *
 * RESIDUAL WINDOW. Between that last lookup and unlink() the name can be
 * replaced, and then the replacement is removed unchecked. Only a process
 * that may write the directory can do that: in /dev/shm (sticky) that is
 * the store's owner or root, who could remove the store anyway; a path
 * store should live in a directory nobody else writes. POSIX has no
 * "unlink this inode only", so the window cannot be closed.
 */
static int unlink_checked(const char *path)
{
	struct stat named, opened, again;
	int fd, err;

	if (lstat(path, &named))
		return -errno;
	if (S_ISLNK(named.st_mode))
		return -ELOOP;
	if (!S_ISREG(named.st_mode))
		return -EBADMSG; /* never opened: a FIFO or device is not ours */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
				O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &opened))
		err = -errno;
	else if (!S_ISREG(opened.st_mode) || opened.st_dev != named.st_dev ||
		 opened.st_ino != named.st_ino)
		err = -EAGAIN; /* replaced while we looked: check nothing */
	else
		err = fd_is_store(fd);
	if (!err && (lstat(path, &again) || again.st_dev != opened.st_dev ||
		     again.st_ino != opened.st_ino))
		err = -EAGAIN;
	if (!err && unlink(path))
		err = -errno;
	close(fd);
	return err;
}

int kvshm_unlink_ex(const char *name, unsigned flags)
{
	char path[PATH_MAX];
	int err;

	if (flags & ~(unsigned)KVSHM_UNLINK_FORCE)
		return -EINVAL;
	if (flags & KVSHM_UNLINK_FORCE)
		return kv__unlink_name(name);
	err = kv__fs_path(name, path, sizeof(path));
	return err ? err : unlink_checked(path);
}

int kvshm_unlink(const char *name)
{
	return kvshm_unlink_ex(name, 0);
}

/* ---- OFD locks on bytes of the object -------------------------------------
 * Byte KV_INIT_LOCK_BYTE: held by whoever initialises the segment.
 * Byte KV_JANITOR_LOCK_BYTE: held by the janitor. The kernel drops an OFD
 * lock when its open file description is closed, so a dead process never
 * holds one, whatever PID it had. */

static int ofd_lock(int fd, off_t byte, short type)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET,
			   .l_start = byte, .l_len = 1};
	return fcntl(fd, F_OFD_SETLK, &fl) ? -errno : 0;
}

/* Does another open file description hold a lock on byte? */
static bool ofd_lock_held(int fd, off_t byte)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
			   .l_start = byte, .l_len = 1};
	if (fcntl(fd, F_OFD_GETLK, &fl))
		return false;
	return fl.l_type != F_UNLCK;
}

int kv__ofd_lock(struct kv__seg *kv, int byte, short type)
{
	return ofd_lock(kv->fd, byte, type);
}

bool kv__ofd_held(struct kv__seg *kv, int byte)
{
	return ofd_lock_held(kv->fd, byte);
}

static int init_lock(int fd, short type)
{
	return ofd_lock(fd, KV_INIT_LOCK_BYTE, type);
}

static bool init_lock_held(int fd)
{
	return ofd_lock_held(fd, KV_INIT_LOCK_BYTE);
}

static void pidns_id(uint64_t *dev, uint64_t *ino)
{
	struct stat st;

	if (stat("/proc/self/ns/pid", &st) == 0) {
		*dev = st.st_dev;
		*ino = st.st_ino;
	} else {
		*dev = *ino = 0;
	}
}

/* ---- creating ----------------------------------------------------------- */

static void init_regions(uint8_t *base, const struct kv__header *h)
{
	struct kv__lane *lanes = (void *)(base + h->lanes_off);
	struct kv__cleaner *cl = (void *)(base + h->cleaner_off);
	struct kv__stripe *stripes = (void *)(base + h->stripes_off);
	struct kv__segment *segs = (void *)(base + h->segtab_off);

	/* ftruncate() zero-filled everything; only non-zero state is set */
	for (uint32_t l = 0; l < KV_MAX_LANES; l++) {
		kv__mutex_init(&lanes[l].mutex);
		atomic_store_explicit(&lanes[l].seg, KV_NO_SEG,
				      memory_order_relaxed);
	}
	kv__mutex_init(&cl->mutex);
	kv__mutex_init(&cl->drain);
	for (uint32_t s = 0; s < h->nstripes; s++)
		kv__mutex_init(&stripes[s].mutex);
	atomic_store_explicit(&segs[0].state, KV_SEG_RESERVE,
			      memory_order_relaxed);
}

/*
 * Initialise the segment behind fd (we hold its init lock, nobody has it
 * mapped usefully yet). Sizes the object and reserves its memory (-ENOSPC
 * if the file system has not that much room), so a failure leaves a
 * zero-size or magic-less object that the caller unlinks.
 */
static int segment_init(int fd, const struct kv__header *params, mode_t mode)
{
	struct kv__header *h;
	uint8_t *base;
	int err;

	if (fchmod(fd, mode))
		return -errno;
	if (KV_FAULT(ftruncate))
		return -EIO;
	if (ftruncate(fd, 0) || ftruncate(fd, (off_t)params->arena_bytes))
		return -errno;
	/* Reserve every page now. tmpfs hands pages out on first touch, so a
	 * store larger than the room left would be created and then SIGBUS
	 * whoever touches the page that is not there. posix_fallocate()
	 * returns the error; it does not set errno. */
	err = KV_FAULT(fallocate) ? ENOSPC
				  : posix_fallocate(fd, 0,
						    (off_t)params->arena_bytes);
	if (err)
		return -err;
	base = KV_FAULT(mmap) ? MAP_FAILED
			      : mmap(NULL, params->arena_bytes,
				     PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		return errno ? -errno : -ENOMEM;
	h = (struct kv__header *)(void *)base;
	memcpy((uint8_t *)h + sizeof(h->magic),
	       (const uint8_t *)params + sizeof(h->magic),
	       offsetof(struct kv__header, clear_gen) - sizeof(h->magic));
	h->layout = KV_LAYOUT;
	h->header_bytes = KV_HEADER_BYTES;
	h->abi = kv__abi_fingerprint();
	h->created_at_ms = (uint64_t)kv__now_ms();
	if (KV_FAULT(getrandom) ||
	    getrandom(h->hash_seed, sizeof(h->hash_seed), 0) !=
		    (ssize_t)sizeof(h->hash_seed)) {
		munmap(base, params->arena_bytes);
		return -EIO;
	}
#ifdef KVSHM_TESTING
	if (kv__test_zero_seed) /* what hash flooding would meet unseeded */
		memset(h->hash_seed, 0, sizeof(h->hash_seed));
#endif
	pidns_id(&h->pidns_dev, &h->pidns_ino);
	init_regions(base, h);
	h->header_check = kv__header_check(h);
	KV_CRASHPOINT();
	/* release: everything above is visible to whoever sees the magic */
	atomic_store_explicit(&h->magic, KV_MAGIC, memory_order_release);
	munmap(base, params->arena_bytes);
	return 0;
}

/* ---- attaching ---------------------------------------------------------- */

/* fstat() checks made before anything is mapped. */
static int attach_checks(int fd, struct stat *st)
{
	if (fstat(fd, st))
		return -errno;
	if (!S_ISREG(st->st_mode))
		return -EBADMSG;
	if (st->st_uid != geteuid())
		return -EACCES;
	if (st->st_mode & 07111)
		return -EACCES; /* wider than 0666: refuse */
	return 0;
}

/* Validate the header page against the object's size and our build. */
static int header_validate(const struct kv__header *h, uint64_t size)
{
	struct kv__header expect;
	uint64_t dev, ino;

	if (h->layout != KV_LAYOUT)
		return -EPROTONOSUPPORT;
	if (h->abi != kv__abi_fingerprint())
		return -EPROTONOSUPPORT;
	if (h->header_bytes != KV_HEADER_BYTES ||
	    h->header_check != kv__header_check(h) || h->arena_bytes != size)
		return -EBADMSG;
	memset(&expect, 0, sizeof(expect));
	expect.arena_bytes = h->arena_bytes;
	expect.max_items = h->max_items;
	expect.max_key_bytes = h->max_key_bytes;
	expect.max_value_bytes = h->max_value_bytes;
	if (layout_compute(&expect) || expect.nbuckets != h->nbuckets ||
	    expect.nstripes != h->nstripes ||
	    expect.stripe_buckets != h->stripe_buckets ||
	    expect.nsegs != h->nsegs || expect.nlanes != h->nlanes ||
	    expect.segment_bytes != h->segment_bytes ||
	    expect.stats_off != h->stats_off ||
	    expect.lanes_off != h->lanes_off ||
	    expect.cleaner_off != h->cleaner_off ||
	    expect.stripes_off != h->stripes_off ||
	    expect.gens_off != h->gens_off ||
	    expect.segtab_off != h->segtab_off ||
	    expect.index_off != h->index_off || expect.data_off != h->data_off)
		return -EBADMSG;
	pidns_id(&dev, &ino);
	if (dev != h->pidns_dev || ino != h->pidns_ino)
		return -EXDEV;
	return 0;
}

/* Fill the handle from a validated header (copied to private memory). */
static void handle_fill(struct kv__seg *kv, const struct kv__header *h)
{
	kv->seed[0] = h->hash_seed[0];
	kv->seed[1] = h->hash_seed[1];
	kv->max_key = h->max_key_bytes;
	kv->max_value = h->max_value_bytes;
	kv->default_ttl_ms = h->default_ttl_ms;
	kv->noevict = h->flags & KVSHM_NOEVICT;
	kv->nlanes = h->nlanes;
	kv->nstripes = h->nstripes;
	kv->stripe_buckets = h->stripe_buckets;
	kv->stripe_shift = (uint32_t)__builtin_ctz(h->stripe_buckets);
	kv->nsegs = h->nsegs;
	kv->nbuckets = h->nbuckets;
	kv->segment_bytes = h->segment_bytes;
	kv->data_bytes = (uint64_t)h->nsegs * h->segment_bytes;
	kv->max_items = h->max_items;
	kv->data_off = h->data_off;
	kv->hdr = (struct kv__header *)(void *)kv->base;
	kv->stats = (void *)(kv->base + h->stats_off);
	kv->lanes = (void *)(kv->base + h->lanes_off);
	kv->cleaner = (void *)(kv->base + h->cleaner_off);
	kv->stripes = (void *)(kv->base + h->stripes_off);
	kv->gens = (void *)(kv->base + h->gens_off);
	kv->segs = (void *)(kv->base + h->segtab_off);
	kv->buckets = (void *)(kv->base + h->index_off);
	kv->data = kv->base + h->data_off;
}

/* Outcomes of one attempt to attach or initialise (negative: an errno). */
enum { KV_ATTACHED = 0, KV_NOT_READY, KV_ABANDONED, KV_INITIALISED };

/* Try to attach once: KV_ATTACHED, KV_NOT_READY (creator still working),
 * KV_ABANDONED (creator died half-way), or -errno. */
static int attach_once(int fd, bool rdonly, struct kv__seg *kv)
{
	struct kv__header hcopy;
	struct stat st;
	void *page;
	uint64_t magic;
	int err = attach_checks(fd, &st);

	if (err)
		return err;
	if ((uint64_t)st.st_size < KV_HEADER_BYTES)
		return init_lock_held(fd) ? KV_NOT_READY : KV_ABANDONED;
	page = mmap(NULL, KV_HEADER_BYTES, PROT_READ, MAP_SHARED, fd, 0);
	if (page == MAP_FAILED)
		return -errno;
	/* acquire: pairs with the creator's release store of the magic */
	magic = atomic_load_explicit(&((struct kv__header *)page)->magic,
				     memory_order_acquire);
	memcpy(&hcopy, page, sizeof(hcopy)); /* read once, then validate */
	munmap(page, KV_HEADER_BYTES);
	if (magic == 0)
		return init_lock_held(fd) ? KV_NOT_READY : KV_ABANDONED;
	if (magic != KV_MAGIC)
		return -EBADMSG;
	err = header_validate(&hcopy, (uint64_t)st.st_size);
	if (err)
		return err;
	kv->map_bytes = hcopy.arena_bytes;
	kv->base = KV_FAULT(mmap) ? MAP_FAILED
				  : mmap(NULL, kv->map_bytes,
					 PROT_READ | (rdonly ? 0 : PROT_WRITE),
					 MAP_SHARED, fd, 0);
	if (kv->base == MAP_FAILED)
		return errno ? -errno : -ENOMEM;
	kv->rdonly = rdonly;
	handle_fill(kv, &hcopy);
	return KV_ATTACHED;
}

/* Is the segment behind fd initialised (magic published)? We hold its init
 * lock, so nobody is initialising it right now. */
static int initialised(int fd)
{
	struct stat st;
	struct kv__header *h;
	int err = attach_checks(fd, &st);

	if (err)
		return err;
	if ((uint64_t)st.st_size < KV_HEADER_BYTES)
		return 0;
	h = mmap(NULL, KV_HEADER_BYTES, PROT_READ, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED)
		return -errno;
	err = atomic_load_explicit(&h->magic, memory_order_acquire) != 0;
	munmap(h, KV_HEADER_BYTES);
	return err;
}

/*
 * Initialise the object behind fd unless someone else does or did: take
 * the init lock (EAGAIN: another process holds it, so it is initialising),
 * re-check under it, and only then initialise. Returns KV_INITIALISED when
 * we did, KV_NOT_READY when the caller should (wait and) attach.
 */
static int init_if_needed(int fd, const struct kv__header *params,
			  mode_t mode)
{
	int err = init_lock(fd, F_WRLCK);

	if (err)
		return err == -EAGAIN || err == -EACCES ? KV_NOT_READY : err;
	err = initialised(fd);
	if (err == 0) {
		err = segment_init(fd, params, mode);
		if (err == 0)
			err = KV_INITIALISED;
	}
	else if (err > 0)
		err = KV_NOT_READY;
	init_lock(fd, F_UNLCK);
	return err;
}

/* Create the object (O_EXCL) and initialise it. -EEXIST: it exists. Between
 * the O_EXCL create and our lock an attacher may see an empty, unlocked
 * object and initialise it itself (init_if_needed() serialises the two):
 * then we just attach. A failure leaves nothing behind. */
static int create_new(const char *name, const struct kv__header *params,
		      mode_t mode)
{
	int err, fd = obj_open(name, O_RDWR | O_CREAT | O_EXCL, mode);

	if (fd < 0)
		return fd;
	err = init_if_needed(fd, params, mode);
	if (err < 0)
		kv__unlink_name(name); /* ours, maybe magic-less: unchecked */
	close(fd);
	return err < 0 ? err : 0;
}

/* Copy the caller's options into *o, zero-filling what an older caller's
 * smaller struct lacks. A newer caller's larger struct is accepted only if
 * the fields this version does not know are zero (the openat2() rule), so
 * an option is never silently ignored; the size is bounded before those
 * bytes are read. */
int kv__options_copy(const struct kvshm_options *in, struct kvshm_options *o)
{
	size_t n;

	memset(o, 0, sizeof(*o));
	if (!in)
		return 0;
	n = in->size ? in->size : sizeof(*o);
	if (n < offsetof(struct kvshm_options, arena_bytes) ||
	    n > KV_MAX_OPTIONS_BYTES)
		return -EINVAL;
	for (size_t i = sizeof(*o); i < n; i++)
		if (((const uint8_t *)in)[i] != 0)
			return -E2BIG;
	memcpy(o, in, n < sizeof(*o) ? n : sizeof(*o));
	return 0;
}

/* This open created the object behind fd and then could not attach it:
 * remove it, if name still leads to it, so that a failed create leaves
 * nothing behind (and a retry with KVSHM_EXCL does not meet -EEXIST). */
static void unlink_created(const char *name, int fd)
{
	char path[PATH_MAX];
	struct stat a, b;

	if (kv__fs_path(name, path, sizeof(path)) == 0 &&
	    stat(path, &a) == 0 && fstat(fd, &b) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		kv__unlink_name(name);
}

static int open_checked(const char *name, const struct kvshm_options *o,
			struct kv__seg *kv)
{
	const unsigned known = KVSHM_CREATE | KVSHM_EXCL | KVSHM_RDONLY |
			       KVSHM_NOEVICT;
	bool may_init = o->flags & KVSHM_CREATE, try_create = may_init;
	bool created = false;
	bool rdonly = o->flags & KVSHM_RDONLY;
	mode_t mode = o->mode ? o->mode : 0600;
	struct kv__header params;
	uint64_t deadline;
	int err;

	if ((o->flags & ~known) || ((o->flags & KVSHM_EXCL) && !may_init) ||
	    (may_init && rdonly) || (mode & ~0666u))
		return -EINVAL;
	if (may_init) {
		err = params_from_options(o, &params);
		if (err)
			return err;
	}
	deadline = kv__mono_ns() + KV_ATTACH_WAIT_NS;
	for (;;) {
		int fd;
		if (try_create) {
			err = create_new(name, &params, mode);
			if (err != -EEXIST) {
				if (err)
					return err;
				try_create = false; /* made: attach to it */
				created = true;
			} else if (o->flags & KVSHM_EXCL) {
				return -EEXIST;
			}
		}
		fd = obj_open(name, rdonly ? O_RDONLY : O_RDWR, 0);
		if (fd == -ENOENT && try_create)
			continue; /* unlinked since: create again */
		if (fd < 0)
			return fd;
		err = attach_once(fd, rdonly, kv);
		if (err == KV_ATTACHED) {
			kv->fd = fd; /* kept for the OFD locks */
			return 0;
		}
		if (err == KV_ABANDONED)
			err = may_init ? init_if_needed(fd, &params, mode)
				       : -EBADMSG;
		if (err < 0 && created)
			unlink_created(name, fd);
		close(fd);
		if (err < 0)
			return err;
		/* KV_NOT_READY: someone is initialising it, wait; or
		 * init_if_needed() just initialised it: attach now */
		if (err == KV_NOT_READY) {
			struct timespec ts = {0, 1000 * 1000};
			if (kv__mono_ns() >= deadline)
				return -ETIMEDOUT;
			nanosleep(&ts, NULL);
		}
	}
}

/* Attach (and maybe create) one segment; see kvshm_open() in handle.c. */
int kv__seg_open(const char *name, const struct kvshm_options *opts,
		 struct kv__seg **out)
{
	struct kvshm_options o;
	struct kv__seg *kv;
	int err;

	if (!out)
		return -EINVAL;
	*out = NULL;
	err = name_check(name);
	if (!err)
		err = kv__options_copy(opts, &o);
	if (err)
		return err;
	kv__atfork_register();
	kv = calloc(1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	err = open_checked(name, &o, kv);
	if (err) {
		free(kv);
		return err;
	}
	kv__fork_track_seg(kv); /* a child gets a description of its own */
	*out = kv;
	return 0;
}

void kv__seg_close(struct kv__seg *kv)
{
	if (!kv)
		return;
	munmap(kv->base, kv->map_bytes);
	kv__fork_untrack_seg(kv); /* closes kv->fd, which drops the janitor
	                             lock if we held it */
	free(kv);
}

/* ---- the janitor role ----------------------------------------------------- */

bool kv__janitor_lock_held(struct kv__seg *kv)
{
	return kv->janitor || ofd_lock_held(kv->fd, KV_JANITOR_LOCK_BYTE);
}

int kv__janitor_claim(struct kv__seg *kv)
{
	struct kv__header *h;
	int64_t now;
	int err;

	if (!kv)
		return -EINVAL;
	if (kv->rdonly)
		return -EROFS;
	if (kv->janitor)
		return -EALREADY;
	err = ofd_lock(kv->fd, KV_JANITOR_LOCK_BYTE, F_WRLCK);
	if (err)
		return err == -EAGAIN || err == -EACCES ? -EBUSY : err;
	kv->janitor = true;
	h = kv->hdr;
	now = kv__now_ms();
	atomic_store_explicit(&h->janitor_pid, (uint64_t)getpid(),
			      memory_order_relaxed);
	atomic_store_explicit(&h->janitor_started_ms, (uint64_t)now,
			      memory_order_relaxed);
	atomic_store_explicit(&h->janitor_heartbeat_ms, (uint64_t)now,
			      memory_order_relaxed);
	return 0;
}

int kv__janitor_heartbeat(struct kv__seg *kv)
{
	if (!kv)
		return -EINVAL;
	if (!kv->janitor)
		return -EPERM;
	atomic_store_explicit(&kv->hdr->janitor_heartbeat_ms,
			      (uint64_t)kv__now_ms(), memory_order_relaxed);
	return 0;
}

int kv__janitor_release(struct kv__seg *kv)
{
	if (!kv)
		return -EINVAL;
	if (!kv->janitor)
		return -EPERM;
	atomic_store_explicit(&kv->hdr->janitor_pid, 0, memory_order_relaxed);
	kv->janitor = false;
	return ofd_lock(kv->fd, KV_JANITOR_LOCK_BYTE, F_UNLCK);
}
