/* SPDX-License-Identifier: MIT */
/*
 * lincheck.h - record what every process did to a store (each operation's
 * invocation and response times on CLOCK_MONOTONIC, its arguments and its
 * result) and check each key's history for linearizability against a
 * sequential model of one key. Uses only <kvshm.h>: the torture program
 * links it too. Nothing here uses cmocka.
 *
 * RECORDING. lc_log_create() maps a log outside the store
 * (MAP_SHARED|MAP_ANONYMOUS, before the first fork), one slot per process.
 * A process runs its operations through lc_run() (or lc_begin()/lc_end()),
 * which publishes the invocation (arguments, t_invoke) before the call and
 * the response (result, t_return) after it. A process SIGKILLed in between
 * leaves the operation pending: it may have taken effect at any moment
 * after its invocation, or never. The process that reaped it appends
 * lc_death() to its slot, which bounds that: the next successful
 * lock-taking write of the same key (invoked after the death) repairs or
 * undoes whatever the dead process left, so a pending operation takes
 * effect before that write returns, or never.
 *
 * THE MODEL of one key: absent, or a value (a value id, or a counter) with a
 * version and a "doomed" bit (a TTL that may end any moment). Versions are
 * concrete, or FRESH (after incr or a resize: a version nobody saw yet, so
 * a CAS with any version seen before fails with -ESTALE, and a read adopts
 * what it returns), or ANY (only in shrunk histories: any version).
 * clear() and resize() are recorded once and checked as an operation on
 * every key: clear makes every key absent; resize keeps values and TTLs and
 * gives every key a FRESH version. In an evicting store (lc_check_opts.evict)
 * any key may vanish before any operation; with lc_check_opts.enospc a
 * write may fail with -ENOSPC and change nothing.
 *
 * CHECKING. Per key, the history is cut into windows at quiescent points (no
 * operation of that key in flight); each window is searched (Wing & Gong,
 * with Lowe's just-in-time linearization and memoization of the set of
 * linearized operations and the model state) from every state the previous
 * window may have ended in. Separately, no version may be handed out to two
 * writes of one key, nor stand for two different values.
 *
 * A window with no linearization is shrunk: operations that change nothing
 * (reads, failed writes) are dropped and writes weakened to "pending,
 * result unknown" one at a time while the rest stays non-linearizable,
 * which only ever makes it easier to linearize, so what is printed is a
 * genuine witness, not an artefact of shrinking.
 */
#ifndef KVSHM_LINCHECK_H
#define KVSHM_LINCHECK_H

#include <kvshm.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* operation kinds */
enum lc_kind {
	LC_GET = 1,    /* kvshm_get_ex: res_val, res_ver, LC_F_CTR */
	LC_SET,        /* kvshm_put KVSHM_SET: arg_val; res_ver */
	LC_ADD,        /* kvshm_put KVSHM_ADD */
	LC_REPLACE,    /* kvshm_put KVSHM_REPLACE */
	LC_CAS,        /* kvshm_put KVSHM_CAS with arg_ver */
	LC_DELETE,     /* kvshm_delete */
	LC_DELETE_CAS, /* kvshm_delete_cas with arg_ver */
	LC_EXPIRE,     /* kvshm_expire with arg_ttl */
	LC_INCR,       /* kvshm_incr with arg_delta: res_val = the result */
	LC_CLEAR,      /* kvshm_clear: every key */
	LC_RESIZE,     /* kvshm_resize: every key */
	LC_DEATH,      /* not an operation: the slot's process was reaped */
	LC_NKINDS
};

/* lc_op.arg_ttl: TTL classes, never a wall-clock race the model must time */
enum lc_ttl {
	LC_TTL_NEVER = 0, /* KVSHM_TTL_NEVER */
	LC_TTL_LONG,      /* an hour */
	LC_TTL_SHORT,     /* 1 ms: the key is doomed (may vanish any time) */
	LC_TTL_PAST,      /* writes: expires_at_ms in the past (already gone) */
};

/* lc_op.flags */
enum {
	LC_F_KEEPTTL = 1u << 0, /* writes: KVSHM_KEEPTTL */
	LC_F_CTR = 1u << 1,  /* GET result: a counter (res_val is its value) */
	LC_F_WEAK = 1u << 2, /* shrinking: result unknown, may never happen */
};

#define LC_ALL_KEYS 0xffffu   /* lc_op.key of clear and resize */
#define LC_VAL_BAD UINT64_MAX /* res_val of a read whose bytes were wrong */

/* One operation as recorded. t_return == 0: pending. */
struct lc_op {
	uint32_t pid;  /* the process that ran it (getpid()) */
	uint16_t slot; /* its log slot (one per process or thread) */
	uint16_t pad_;
	uint64_t t_invoke;   /* CLOCK_MONOTONIC ns */
	uint64_t t_return;   /* ns, 0 = no response; stored last (release) */
	uint64_t arg_val;    /* value id written */
	uint64_t arg_ver;    /* expected version (CAS, DELETE_CAS) */
	int64_t arg_delta;   /* INCR */
	uint64_t res_val;    /* value id read, or counter value */
	uint64_t res_ver;    /* version returned (writes) or read (GET) */
	int32_t res_err;     /* 0 or -errno */
	uint16_t key;        /* key index, LC_ALL_KEYS for clear/resize */
	uint8_t kind;        /* enum lc_kind */
	uint8_t arg_ttl : 4; /* enum lc_ttl */
	uint8_t flags : 4;   /* LC_F_* */
};

/* A log in memory shared by forked processes: nslots slots of cap ops. */
struct lc_log;

struct lc_log *lc_log_create(unsigned nslots, size_t cap);
void lc_log_destroy(struct lc_log *log);
/* Operations recorded in slot (invoked; pending ones included). */
size_t lc_log_count(const struct lc_log *log, unsigned slot);
/* Space left in slot. */
size_t lc_log_room(const struct lc_log *log, unsigned slot);

/* Record op's invocation in slot (t_invoke is taken here), return the
 * record to complete with lc_end(), or NULL if the slot is full. Only the
 * slot's one process (or thread) may call it. */
struct lc_op *lc_begin(struct lc_log *log, unsigned slot,
		       const struct lc_op *op);
/* Take t_return and publish the response (rec's res_* fields). */
void lc_end(struct lc_op *rec);
/* After reaping the process of slot: it left at most one op pending. */
void lc_death(struct lc_log *log, unsigned slot);

/* A unique value id for the next write from slot: (slot + 1) << 40 | n. */
uint64_t lc_next_vid(const struct lc_log *log, unsigned slot);

/* The name of key index k: "<prefix>k" into buf (at least 32 bytes). */
size_t lc_key_name(char *buf, const char *prefix, unsigned k);
/* The bytes of value id vid of key k (length varies with vid, at least
 * minlen, at most LC_VAL_MAX); a read checks every byte. */
#define LC_VAL_MAX 4096u
size_t lc_val_make(uint8_t *buf, unsigned k, uint64_t vid, size_t minlen);
/* The value id of buf[0..len) for key k, or LC_VAL_BAD. */
uint64_t lc_val_parse(const uint8_t *buf, size_t len, unsigned k);

/*
 * Run op (kind, key, arg_* and flags filled in; arg_val is taken from
 * lc_next_vid() for writes) against kv, recorded in slot. The result goes
 * into the record and into *op. Values are at least minlen bytes. Returns
 * the kvshm result, or -EOVERFLOW (nothing run) if the slot is full.
 * Keys are named prefix + index. For LC_RESIZE, name and ropts are the
 * store and its new size; other kinds ignore them.
 */
struct lc_ctx {
	struct kvshm *kv;
	struct lc_log *log;
	unsigned slot;
	const char *prefix; /* key names */
	size_t minlen;      /* value bytes */
	const char *name;   /* the store, for LC_RESIZE */
};
int lc_run(const struct lc_ctx *c, struct lc_op *op,
	   const struct kvshm_options *ropts);

/*
 * A random operation on key k into *o, from two random words: get 24%, set
 * 12% (some with KEEPTTL, some already expired), add 7%, replace 5%, cas 12%
 * (with last, the version this process saw last, or 1 in 3 with old, one it
 * saw before), delete 5%, delete_cas 6%, expire 6%, incr 23%. TTLs are
 * never, an hour, or 1 in 8 a millisecond.
 */
void lc_random_op(struct lc_op *o, uint64_t r1, uint64_t r2, unsigned k,
		  uint64_t last, uint64_t old);

/* ---- checking ----------------------------------------------------------- */

struct lc_check_opts {
	bool evict;     /* an evicting store that is full: keys may vanish */
	bool enospc;    /* writes may fail with -ENOSPC (NOEVICT, full) */
	unsigned nkeys; /* key indexes 0..nkeys-1 */
	size_t budget;  /* search configurations per window before giving up
			   (0 = 4 million) */
	FILE *out;      /* where failures are described (NULL = stderr) */
	/* Check the result of an incr that creates its counter exactly. A
	 * bug this checker found (shm/ops.c incr_locked()): such an incr
	 * returned the counter read back after it was
	 * published, so a lock-free incr of another process that lands in
	 * between is counted in both results. Minimal history (torture, no
	 * kills, no resizes; key absent after the delete):
	 *   slot 1 delete l:7 -> ok
	 *   slot 2 [1.519 .. 1.519 ms] incr l:7 by 4 -> ok = 5
	 *   slot 1 [1.519 .. 1.519 ms] incr l:7 by 1 -> ok = 5
	 * (fixed: incr_locked() now returns the value it linked). Unless
	 * strict, the result of an incr that creates its counter is only
	 * required to be more than its delta (the state is still exactly
	 * the delta). Strict is the default of the tests and the torture;
	 * KVSHM_LIN_STRICT=0 turns it off. */
	bool strict;
	const char *prefix; /* key names, for messages */
};

struct lc_report {
	size_t histories;  /* keys checked */
	size_t ops;        /* operations checked, every key's (clear and
			      resize counted once per key) */
	size_t max_ops;    /* longest one key's history */
	size_t windows;    /* windows searched */
	size_t max_window; /* longest window */
	size_t pending;    /* operations without a response */
	size_t undecided;  /* windows given up on (budget): not checked */
	size_t versions;   /* versions checked for uniqueness */
	size_t failures;   /* non-linearizable keys + repeated versions */
};

/* Check every key's history in log; *rep gets the numbers. Returns 0 if
 * every key is linearizable (undecided windows aside) and no version was
 * repeated, else -1 after describing each failure. */
int lc_check_log(const struct lc_log *log, const struct lc_check_opts *o,
		 struct lc_report *rep);

/* Check one key's history ops[0..n) (a hand-made one, say: ops of every
 * kind, clear and resize included, with key == the key or LC_ALL_KEYS),
 * starting from an absent key. Same result as lc_check_log. */
int lc_check_ops(const struct lc_op *ops, size_t n, unsigned key,
		 const struct lc_check_opts *o, struct lc_report *rep);

/* Print one op as a line (no newline). t0 is subtracted from times. */
void lc_op_print(FILE *f, const struct lc_op *op, uint64_t t0,
		 const char *prefix);

/* Add one report into another. */
void lc_report_add(struct lc_report *into, const struct lc_report *r);

#endif /* KVSHM_LINCHECK_H */
