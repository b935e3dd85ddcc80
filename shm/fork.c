/* SPDX-License-Identifier: MIT */
/*
 * fork.c - what a fork()ed child must not inherit from its parent: the open
 * file descriptions that carry the parent's OFD locks (the janitor role, the
 * resize lock), the janitor role itself, and a handle's switch_lock caught
 * held by a thread the child does not have. Owns the process-private lists
 * of open segments and handles; touches no shared memory.
 *
 * WHY. An OFD lock belongs to the open file description, and lives until
 * the last reference to it goes: a descriptor, or a mapping made through
 * it. fork() shares both, so a child of a janitor (or of a resizer) keeps
 * the parent's lock alive after the parent dies, and the child's F_UNLCK
 * would drop a living parent's lock. So the child handler gives every open
 * segment a description of its own: open("/proc/self/fd/N") makes a NEW
 * description of the same object, mmap(MAP_FIXED) maps the same object
 * through it at the same address, and dup2() puts it in place of N; the
 * child keeps no reference to the parent's description. Nothing else
 * changes for the child: same object, same pages, same address.
 *
 * LOCK ORDER. handles_lock -> a handle's switch_lock -> segs_lock. The
 * prepare handler takes all of them in that order, so the child starts
 * with every list consistent and no switch half-done (a thread inside
 * switch_from() holds switch_lock and may take segs_lock while opening the
 * new segment; nobody takes handles_lock while holding either). fork()
 * therefore waits for a switch in progress, which is bounded by the 5 s
 * attach wait. Parent and child release them (the pattern of POSIX's
 * pthread_atfork() rationale; the child's thread is the one that took
 * them).
 *
 * ASYNC-SIGNAL-SAFETY. The child of a multithreaded parent may only make
 * async-signal-safe calls until it execs. The child handler uses fcntl(),
 * open(), dup2() and close() (on POSIX's list) and mmap() (not listed, but
 * on Linux a bare system call: no lock, no allocation), formats the path by
 * hand, allocates nothing, and unlocks the mutexes its own thread locked in
 * the prepare handler.
 *
 * KILL -9. The lists and locks here are process-private: a killed process
 * takes them with it. A child killed inside its handler holds at worst its
 * parent's description, which dies with it.
 *
 * LIMITS. Without /proc the child cannot re-open a segment and keeps
 * sharing its parent's descriptions (the locks outlive the parent while
 * the child lives, as before), but it still does not act as the janitor.
 * _Fork(), vfork() and posix_spawn() run no fork handlers: their children
 * must exec or _exit (every descriptor of ours is O_CLOEXEC, and exec drops
 * the mappings).
 */
#include "internal.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t segs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kvshm *handles; /* open handles (handles_lock) */
static struct kv__seg *segs;  /* open segments (segs_lock) */

static void fork_prepare(void)
{
	pthread_mutex_lock(&handles_lock);
	for (struct kvshm *h = handles; h; h = h->fork_next)
		pthread_mutex_lock(&h->switch_lock);
	pthread_mutex_lock(&segs_lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&segs_lock);
	for (struct kvshm *h = handles; h; h = h->fork_next)
		pthread_mutex_unlock(&h->switch_lock);
	pthread_mutex_unlock(&handles_lock);
}

/* "/proc/self/fd/<fd>" into buf, without snprintf (not async-signal-safe). */
static void proc_fd_path(int fd, char *buf, size_t len)
{
	static const char prefix[] = "/proc/self/fd/";
	char digits[16];
	size_t n = 0, at = sizeof(prefix) - 1;

	memcpy(buf, prefix, at);
	do {
		digits[n++] = (char)('0' + fd % 10);
		fd /= 10;
	} while (fd > 0 && n < sizeof(digits));
	while (n > 0 && at + 1 < len)
		buf[at++] = digits[--n];
	buf[at] = '\0';
}

/* Give seg a description of its own (child, one thread): a new one of the
 * same object, mapped over the old mapping (a mapping holds a reference to
 * the description it was made from, so it too would keep the parent's
 * locks alive) and put in place of the old descriptor number. */
static void own_description(struct kv__seg *seg)
{
	char path[sizeof("/proc/self/fd/") + 16];
	const int prot = PROT_READ | (seg->rdonly ? 0 : PROT_WRITE);
	int access, fd_flags, fresh;

	access = fcntl(seg->fd, F_GETFL);
	fd_flags = fcntl(seg->fd, F_GETFD);
	if (access < 0 || fd_flags < 0)
		return;
	proc_fd_path(seg->fd, path, sizeof(path));
	fresh = open(path, (access & O_ACCMODE) | O_CLOEXEC);
	if (fresh < 0)
		return; /* no /proc: the child shares, as it always did */
	/* same object, same pages: nothing the program sees changes */
	if (mmap(seg->base, seg->map_bytes, prot, MAP_SHARED | MAP_FIXED, fresh,
		 0) != MAP_FAILED &&
	    dup2(fresh, seg->fd) == seg->fd)
		fcntl(seg->fd, F_SETFD, fd_flags); /* dup2 cleared CLOEXEC */
	close(fresh);
}

static void fork_child(void)
{
	for (struct kv__seg *seg = segs; seg; seg = seg->fork_next) {
		own_description(seg);
		seg->janitor = false; /* the role stays with the parent */
	}
	pthread_mutex_unlock(&segs_lock);
	for (struct kvshm *h = handles; h; h = h->fork_next) {
		h->janitor = false;
		pthread_mutex_unlock(&h->switch_lock);
	}
	pthread_mutex_unlock(&handles_lock);
}

static void fork_install(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void kv__fork_track_seg(struct kv__seg *seg)
{
	pthread_once(&fork_once, fork_install);
	pthread_mutex_lock(&segs_lock);
	seg->fork_prev = NULL;
	seg->fork_next = segs;
	if (segs)
		segs->fork_prev = seg;
	segs = seg;
	pthread_mutex_unlock(&segs_lock);
}

/* The caller has unmapped seg; its descriptor is closed under segs_lock: a
 * fork() between the two would hand the child our description, locks and
 * all, and no child handler would know to replace it. */
void kv__fork_untrack_seg(struct kv__seg *seg)
{
	pthread_mutex_lock(&segs_lock);
	close(seg->fd);
	if (seg->fork_prev)
		seg->fork_prev->fork_next = seg->fork_next;
	else
		segs = seg->fork_next;
	if (seg->fork_next)
		seg->fork_next->fork_prev = seg->fork_prev;
	pthread_mutex_unlock(&segs_lock);
}

void kv__fork_track_handle(struct kvshm *h)
{
	pthread_once(&fork_once, fork_install);
	pthread_mutex_lock(&handles_lock);
	h->fork_prev = NULL;
	h->fork_next = handles;
	if (handles)
		handles->fork_prev = h;
	handles = h;
	pthread_mutex_unlock(&handles_lock);
}

void kv__fork_untrack_handle(struct kvshm *h)
{
	pthread_mutex_lock(&handles_lock);
	if (h->fork_prev)
		h->fork_prev->fork_next = h->fork_next;
	else
		handles = h->fork_next;
	if (h->fork_next)
		h->fork_next->fork_prev = h->fork_prev;
	pthread_mutex_unlock(&handles_lock);
}
