/* SPDX-License-Identifier: MIT */
/*
 * kvshm-janitor - the store's janitor daemon (`run`) and the admin commands
 * (create, reset, flush, check, resize, destroy). Uses only <kvshm.h>.
 *
 * HOW THE DAEMON WORKS
 *   run NAME attaches to an existing store and claims the janitor role
 *   (kvshm_janitor_claim: an OFD lock the kernel drops when we die, so a
 *   crashed janitor never blocks its successor). Then, every tick:
 *     - sweep expired items in batches of SWEEP_BATCH, as long as a batch
 *       comes back full, up to SWEEP_BATCHES_PER_TICK batches; if the last
 *       one was still full the next tick comes after BACKLOG_PAUSE_MS
 *       instead of the interval, so a large backlog drains quickly while
 *       each kvshm_sweep() call still holds each stripe lock only briefly;
 *     - write a heartbeat, so kvshm-stat can tell the janitor is alive;
 *     - compare lock_recoveries with the last tick and warn when processes
 *       died inside a critical section (their locks were repaired);
 *     - every CHECK_PERIOD_MS run kvshm_check(), which takes each stripe
 *       lock in turn and so also repairs whatever dead processes left;
 *     - every IDENTITY_PERIOD_MS make sure NAME still names our segment:
 *       after `destroy` the janitor exits 0, after destroy + create it
 *       re-attaches to the new store.
 *   The store is correct without a janitor; it only returns memory sooner
 *   and makes problems visible sooner.
 *
 * SIGNALS
 *   SIGTERM, SIGINT and SIGHUP are blocked for the whole run and taken with
 *   sigtimedwait() as the tick's sleep, so no handler runs in the middle of
 *   a library call and nothing is async-signal-unsafe. Between two sweep
 *   batches we look at the pending set: a pending SIGTERM/SIGINT ends the
 *   tick after the batch in hand.
 *
 * LOGGING
 *   stderr, one line per event, with sd-daemon(3) priority prefixes (<3>
 *   error, <4> warning, <6> info) that journald turns into priorities.
 *   Quiet when idle: a line only at start and stop, when items were
 *   reclaimed, and when something is wrong.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <kvshm.h>

#include "cli.h"

#define LOG_ERR "<3>"
#define LOG_WARNING "<4>"
#define LOG_INFO "<6>"

#define DEFAULT_INTERVAL_MS 1000
#define MIN_INTERVAL_MS 10
#define MAX_INTERVAL_MS 3600000
#define SWEEP_BATCH 1000           /* items per kvshm_sweep() call */
#define SWEEP_BATCHES_PER_TICK 64  /* then heartbeat and look at signals */
#define BACKLOG_PAUSE_MS 10        /* next tick, when a backlog remains */
#define CHECK_PERIOD_MS 60000      /* kvshm_check() */
#define IDENTITY_PERIOD_MS 5000    /* does NAME still name our segment? */
#define RECLAIM_LOG_PERIOD_MS 10000 /* during a backlog, log this often */

/* ---- commands and usage ---------------------------------------------- */

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage; /* after "kvshm-janitor " */
	const char *help;  /* description and options */
};

static const struct command *find_command(const char *name);

/* argv[0] for getopt's own messages: "kvshm-janitor CMD". */
static char prog_cmd[64];

static int usage_error(const struct command *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int usage_error(const struct command *c, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		cli_error("%s", msg);
	}
	fprintf(stderr, "usage: kvshm-janitor %s\n", c->usage);
	fprintf(stderr, "Try 'kvshm-janitor %s --help'.\n", c->name);
	return CLI_EXIT_USAGE;
}

static int print_help(const struct command *c)
{
	printf("usage: kvshm-janitor %s\n\n%s", c->usage, c->help);
	return CLI_EXIT_OK;
}

/* Start getopt_long() afresh on a command's argv (argv[0] = command name). */
static void getopt_reset(char **argv)
{
	snprintf(prog_cmd, sizeof(prog_cmd), "kvshm-janitor %s", argv[0]);
	argv[0] = prog_cmd;
	optind = 0; /* glibc: 0 re-initialises, so SIGHUP can parse again */
	opterr = 1;
}

/* The one store name a command takes, after its options. */
static int take_name(const struct command *c, int argc, char **argv,
		     const char **name)
{
	if (optind >= argc)
		return usage_error(c, "missing store NAME");
	if (optind + 1 < argc)
		return usage_error(c, "unexpected argument '%s'",
				   argv[optind + 1]);
	if (!argv[optind][0])
		return usage_error(c, "empty store NAME");
	*name = argv[optind];
	return 0;
}

/* Parse a command that takes NAME and no options but --help. Returns -1 if
 * it parsed (the name is in *name), else the exit status. */
static int parse_name_only(const struct command *c, int argc, char **argv,
			   const char **name)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int ch;

	getopt_reset(argv);
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (ch == 'h')
			return print_help(c);
		return usage_error(c, NULL);
	}
	return take_name(c, argc, argv, name) ? CLI_EXIT_USAGE : -1;
}

/* Open an existing store, reporting failure; 0 or the exit status. */
static int open_store(const char *prefix, const char *name, uint32_t flags,
		      struct kvshm **kv)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	int err;

	o.flags = flags;
	err = kvshm_open(name, &o, kv);
	if (err) {
		cli_store_error(prefix, name, "open", err);
		return CLI_EXIT_FAILURE;
	}
	return 0;
}

/* One line describing a store's geometry, from kvshm_stats(). */
static void format_geometry(const struct kvshm_stats *st, char *buf,
			    size_t len)
{
	char arena[32], data[32], seg[32], key[32], val[32], ttl[48];

	if (st->default_ttl_ms)
		snprintf(ttl, sizeof(ttl), "%" PRIu64 " ms",
			 st->default_ttl_ms);
	else
		snprintf(ttl, sizeof(ttl), "never");
	snprintf(buf, len,
		 "%s segment, %s for items in %s allocation segments, "
		 "up to %" PRIu64 " items, keys up to %s, values up to %s, "
		 "default TTL %s, %" PRIu64 " lock stripes, %s",
		 cli_format_size(st->arena_bytes, arena, sizeof(arena)),
		 cli_format_size(st->data_bytes, data, sizeof(data)),
		 cli_format_size(st->segment_bytes, seg, sizeof(seg)),
		 st->max_items,
		 cli_format_size(st->max_key_bytes, key, sizeof(key)),
		 cli_format_size(st->max_value_bytes, val, sizeof(val)), ttl,
		 st->stripes,
		 st->noevict ? "never evicts" : "evicts when full");
}

/* ---- systemd notify protocol, by hand (sd_notify(3) NOTES) ------------ */

/*
 * Send one datagram to $NOTIFY_SOCKET; a no-op when it is unset. A leading
 * '@' names an abstract socket (the '@' becomes a NUL, and the address
 * length counts no trailing NUL). Failures are reported once and otherwise
 * ignored: the janitor's work does not depend on systemd hearing it.
 */
static void notify(const char *msg)
{
	static bool warned;
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t plen;
	socklen_t salen;
	int fd;

	if (!path || !path[0])
		return;
	plen = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || plen >= sizeof(sa.sun_path))
		goto fail_addr;
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
			    (path[0] == '/'));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail_errno;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   salen) < 0) {
		close(fd);
		goto fail_errno;
	}
	close(fd);
	return;

fail_addr:
	errno = EAFNOSUPPORT;
fail_errno:
	if (!warned)
		cli_error_prefixed(LOG_WARNING, "NOTIFY_SOCKET=%s: %s", path,
				   strerror(errno));
	warned = true;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- run: the daemon --------------------------------------------------- */

struct run_opts {
	const char *name;
	const char *pidfile;
	uint64_t interval_ms;
};

struct janitor {
	struct run_opts opts;
	struct kvshm *kv;
	uint64_t created_at_ms;   /* identifies our segment */
	sigset_t sigs;            /* TERM, INT, HUP: blocked, taken by wait */
	int stop_signal;          /* set when we are to stop */
	uint64_t last_recoveries; /* lock_recoveries at the last tick */
	uint64_t reclaimed_total; /* by this janitor */
	uint64_t unlogged;        /* reclaimed, not logged yet */
	uint64_t last_reclaim_log_ms;
	uint64_t next_check_ms, next_identity_ms;
	int last_sweep_err;       /* log a repeated error once */
	int check_state;          /* -1 not run, 0 consistent, 1 failed */
	bool identity_recheck;    /* store looked gone once: look again */
	char status[160];         /* last STATUS= sent */
};

static const struct command *run_command(void);

/* Parse run's argv into *o. Returns -1 on success, else the exit status
 * (0 for --help). Also used to re-read the options on SIGHUP. */
static int parse_run(int argc, char **argv, struct run_opts *o)
{
	static const struct option longopts[] = {
		{"interval", required_argument, NULL, 'i'},
		{"pidfile", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const struct command *c = run_command();
	struct run_opts n = {.interval_ms = DEFAULT_INTERVAL_MS};
	int ch;

	getopt_reset(argv);
	while ((ch = getopt_long(argc, argv, "i:p:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'i':
			if (cli_parse_uint(optarg, MAX_INTERVAL_MS,
					   &n.interval_ms) ||
			    n.interval_ms < MIN_INTERVAL_MS)
				return usage_error(c,
						   "--interval: '%s' is not a "
						   "number of milliseconds "
						   "from %d to %d",
						   optarg, MIN_INTERVAL_MS,
						   MAX_INTERVAL_MS);
			break;
		case 'p':
			if (!optarg[0])
				return usage_error(c, "--pidfile: empty path");
			n.pidfile = optarg;
			break;
		case 'h':
			return print_help(c);
		default:
			return usage_error(c, NULL);
		}
	}
	if (take_name(c, argc, argv, &n.name))
		return CLI_EXIT_USAGE;
	*o = n;
	return -1;
}

static int write_pidfile(const char *path)
{
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return -errno;
	if (write(fd, buf, (size_t)len) != len) {
		int err = errno ? -errno : -EIO;

		close(fd);
		unlink(path);
		return err;
	}
	if (close(fd))
		return -errno;
	return 0;
}

/* Open NAME and claim the janitor role on it. 0, or the exit status after
 * saying why not. */
static int attach(struct janitor *j)
{
	const char *name = j->opts.name;
	struct kvshm_stats st;
	int err, rc = open_store(LOG_ERR, name, 0, &j->kv);

	if (rc)
		return rc;
	err = kvshm_janitor_claim(j->kv);
	if (err == -EBUSY) {
		/* pid 0: the other one is between its claim and its pid. */
		if (kvshm_stats(j->kv, &st) || !st.janitor_pid)
			cli_error_prefixed(LOG_ERR, "%s already has a janitor",
					   name);
		else
			cli_error_prefixed(LOG_ERR, "%s already has a janitor "
					   "(pid %" PRIu64 ")",
					   name, st.janitor_pid);
		goto fail_close;
	}
	if (err) {
		cli_store_error(LOG_ERR, name, "cannot claim the janitor role",
				err);
		goto fail_close;
	}
	err = kvshm_stats(j->kv, &st);
	if (err) {
		cli_store_error(LOG_ERR, name, "stats", err);
		goto fail_release;
	}
	j->created_at_ms = st.created_at_ms;
	j->last_recoveries = st.lock_recoveries;
	return 0;

fail_release:
	kvshm_janitor_release(j->kv);
fail_close:
	kvshm_close(j->kv);
	j->kv = NULL;
	return CLI_EXIT_FAILURE;
}

static void detach(struct janitor *j)
{
	int err = kvshm_janitor_release(j->kv);

	if (err && err != -EPERM) /* -EPERM: the role was already lost */
		cli_store_error(LOG_WARNING, j->opts.name,
				"releasing the janitor role", err);
	kvshm_close(j->kv);
	j->kv = NULL;
}

static bool stop_pending(const struct janitor *j)
{
	sigset_t p;

	if (j->stop_signal)
		return true;
	if (sigpending(&p))
		return false;
	return sigismember(&p, SIGTERM) == 1 || sigismember(&p, SIGINT) == 1;
}

/* Sweep in batches while they come back full. Returns true if the last
 * batch was full, i.e. more expired items are probably waiting. */
static bool sweep(struct janitor *j, uint64_t now)
{
	bool full = false;
	int i, err = 0;

	for (i = 0; i < SWEEP_BATCHES_PER_TICK && !stop_pending(j); i++) {
		size_t n = 0;

		err = kvshm_sweep(j->kv, SWEEP_BATCH, &n);
		j->reclaimed_total += n;
		j->unlogged += n;
		full = !err && n >= SWEEP_BATCH;
		if (!full)
			break;
	}
	if (err && err != j->last_sweep_err)
		cli_store_error(err == -ETIMEDOUT ? LOG_WARNING : LOG_ERR,
				j->opts.name, "sweep", err);
	j->last_sweep_err = err;
	if (j->unlogged && (!full || now - j->last_reclaim_log_ms >=
					     RECLAIM_LOG_PERIOD_MS)) {
		cli_error_prefixed(LOG_INFO, "%s: reclaimed %" PRIu64
			" expired items%s", j->opts.name, j->unlogged,
			full ? " (more are waiting)" : "");
		j->unlogged = 0;
		j->last_reclaim_log_ms = now;
	}
	return full;
}

/* Log every line of a check report with the given priority. */
static void log_report(const char *prio, const char *name, const char *rep)
{
	while (*rep) {
		size_t len = strcspn(rep, "\n");

		cli_error_prefixed(prio, "%s: check: %.*s", name, (int)len,
				   rep);
		rep += len;
		rep += *rep == '\n';
	}
}

/* kvshm_check(): a failure every time, success only the first time and
 * when it follows a failure (quiet when idle). */
static void run_check(struct janitor *j)
{
	char report[4096];
	int err = kvshm_check(j->kv, report, sizeof(report));

	if (err == -EUCLEAN) {
		log_report(LOG_ERR, j->opts.name, report);
		cli_error_prefixed(LOG_ERR, "%s: the store is inconsistent "
				   "(see the report above)", j->opts.name);
		j->check_state = 1;
	} else if (err) {
		cli_store_error(LOG_WARNING, j->opts.name, "check", err);
	} else {
		if (j->check_state != 0)
			log_report(LOG_INFO, j->opts.name, report);
		j->check_state = 0;
	}
}

/* Created-at time of the store NAME names now: 0 and *created, or -ENOENT
 * when it is gone, or another error. */
static int current_identity(const char *name, uint64_t *created)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct kvshm_stats st;
	struct kvshm *kv;
	int err;

	o.flags = KVSHM_RDONLY;
	err = kvshm_open(name, &o, &kv);
	if (err)
		return err;
	err = kvshm_stats(kv, &st);
	kvshm_close(kv);
	if (err)
		return err;
	*created = st.created_at_ms;
	return 0;
}

/*
 * Does NAME still name our segment? After `destroy` it is gone: look once
 * more on the next tick (a store being re-created may be briefly absent),
 * then stop with status 0, since there is nothing left to look after.
 * After destroy + create it names another segment: move to that one.
 * Returns -1 to go on, or the exit status.
 */
static int check_identity(struct janitor *j)
{
	uint64_t created = 0;
	int err = current_identity(j->opts.name, &created);

	if (err == -ENOENT) {
		if (!j->identity_recheck) {
			j->identity_recheck = true;
			return -1;
		}
		cli_error_prefixed(LOG_WARNING,
				   "%s: the store was destroyed; nothing left "
				   "to look after, exiting",
				   j->opts.name);
		return CLI_EXIT_OK;
	}
	j->identity_recheck = false;
	if (err || created == j->created_at_ms)
		return -1; /* a transient failure: look again later */
	cli_error_prefixed(LOG_WARNING,
			   "%s: the name now belongs to a new store; "
			   "moving to it",
			   j->opts.name);
	detach(j);
	if (attach(j))
		return CLI_EXIT_FAILURE;
	j->check_state = -1;
	run_check(j);
	return -1;
}

/* Live counts for STATUS=, sent when they change. */
static void notify_status(struct janitor *j, const struct kvshm_stats *st)
{
	char msg[sizeof(j->status)], freeb[32];

	snprintf(msg, sizeof(msg),
		 "STATUS=%" PRIu64 " items of %" PRIu64 ", %s free, "
		 "%" PRIu64 " expired items reclaimed",
		 st->items, st->max_items,
		 cli_format_size(st->free_bytes, freeb, sizeof(freeb)),
		 j->reclaimed_total);
	if (strcmp(msg, j->status)) {
		memcpy(j->status, msg, sizeof(msg));
		notify(msg);
	}
}

/* One tick. Returns -1 to go on (*backlog says whether to come back soon),
 * or the exit status. */
static int tick(struct janitor *j, bool *backlog)
{
	uint64_t now = mono_ms();
	struct kvshm_stats st;
	int err;

	*backlog = sweep(j, now);
	err = kvshm_janitor_heartbeat(j->kv);
	if (err == -EPERM) {
		/* The role went with a segment the handle left (a resize). */
		cli_error_prefixed(LOG_WARNING, "%s: lost the janitor role; "
				   "claiming it again", j->opts.name);
		detach(j);
		if (attach(j))
			return CLI_EXIT_FAILURE;
	} else if (err) {
		cli_store_error(LOG_WARNING, j->opts.name, "heartbeat", err);
	}
	if (kvshm_stats(j->kv, &st) == 0) {
		if (st.lock_recoveries > j->last_recoveries)
			cli_error_prefixed(LOG_WARNING,
				"%s: %" PRIu64 " lock(s) taken over from dead "
				"processes and repaired since the last tick "
				"(%" PRIu64 " since creation)", j->opts.name,
				st.lock_recoveries - j->last_recoveries,
				st.lock_recoveries);
		j->last_recoveries = st.lock_recoveries;
		notify_status(j, &st);
	}
	if (now >= j->next_check_ms) {
		run_check(j);
		j->next_check_ms = now + CHECK_PERIOD_MS;
	}
	if (now >= j->next_identity_ms || j->identity_recheck) {
		j->next_identity_ms = now + IDENTITY_PERIOD_MS;
		err = check_identity(j);
		if (err >= 0)
			return err;
	}
	return -1;
}

/* SIGHUP: read the options again (today: argv, so the interval). */
static void reload(struct janitor *j, int argc, char **argv)
{
	char msg[64];
	struct run_opts o;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
		 (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000);
	notify(msg);
	if (parse_run(argc, argv, &o) == -1 && !strcmp(o.name, j->opts.name)) {
		o.pidfile = j->opts.pidfile; /* written once, removed at exit */
		j->opts = o;
		cli_error_prefixed(LOG_INFO, "%s: reloaded on SIGHUP: interval "
				   "%" PRIu64 " ms", j->opts.name,
				   j->opts.interval_ms);
	} else {
		cli_error_prefixed(LOG_ERR, "%s: SIGHUP: options do not parse; "
				   "keeping the old ones", j->opts.name);
	}
	j->next_check_ms = 0; /* and look at the store now */
	notify("READY=1");
}

/* Sleep until deadline (monotonic ms) or a stop signal; handles SIGHUP on
 * the way. Returns false when it is time to stop. */
static bool wait_tick(struct janitor *j, uint64_t deadline, int argc,
		      char **argv)
{
	for (;;) {
		uint64_t now = mono_ms();
		uint64_t left = deadline > now ? deadline - now : 0;
		struct timespec ts = {(time_t)(left / 1000),
				      (long)(left % 1000) * 1000000};
		int sig = sigtimedwait(&j->sigs, NULL, &ts);

		if (sig == SIGHUP) {
			reload(j, argc, argv);
			continue;
		}
		if (sig == SIGTERM || sig == SIGINT) {
			j->stop_signal = sig;
			return false;
		}
		if (sig < 0 && errno == EINTR)
			continue;
		return true; /* EAGAIN: the deadline passed */
	}
}

static void log_started(const struct janitor *j)
{
	char geom[512];
	struct kvshm_stats st;

	if (kvshm_stats(j->kv, &st)) {
		cli_error_prefixed(LOG_INFO, "%s: janitor started (pid %ld)",
				   j->opts.name, (long)getpid());
		return;
	}
	format_geometry(&st, geom, sizeof(geom));
	cli_error_prefixed(LOG_INFO,
			   "%s: janitor started (pid %ld, interval %" PRIu64
			   " ms, libkvshm %s): %" PRIu64 " items; %s",
			   j->opts.name, (long)getpid(), j->opts.interval_ms,
			   kvshm_version(), st.items, geom);
}

static int janitor_loop(struct janitor *j, int argc, char **argv)
{
	uint64_t next = mono_ms();
	bool backlog = false;
	int rc;

	for (;;) {
		if (!wait_tick(j, next, argc, argv))
			return CLI_EXIT_OK;
		rc = tick(j, &backlog);
		if (rc >= 0)
			return rc;
		next = mono_ms() + (backlog ? BACKLOG_PAUSE_MS
					    : j->opts.interval_ms);
	}
}

static int cmd_run(int argc, char **argv)
{
	struct janitor j = {.check_state = -1};
	int err, rc = parse_run(argc, argv, &j.opts);

	if (rc >= 0)
		return rc;
	/* Block before attaching: a SIGTERM from now on waits for us. */
	sigemptyset(&j.sigs);
	sigaddset(&j.sigs, SIGTERM);
	sigaddset(&j.sigs, SIGINT);
	sigaddset(&j.sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &j.sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	rc = attach(&j);
	if (rc)
		return rc;
	if (j.opts.pidfile) {
		err = write_pidfile(j.opts.pidfile);
		if (err) {
			cli_error_prefixed(LOG_ERR,
					   "%s: cannot write pid file %s: %s",
					   j.opts.name, j.opts.pidfile,
					   strerror(-err));
			detach(&j);
			return CLI_EXIT_FAILURE;
		}
	}
	log_started(&j);
	notify("READY=1");
	/* The first tick runs at once: sweep, then check (next_check_ms 0). */
	rc = janitor_loop(&j, argc, argv);

	notify("STOPPING=1");
	if (j.kv)
		detach(&j);
	if (j.opts.pidfile)
		unlink(j.opts.pidfile);
	if (rc == CLI_EXIT_OK && j.stop_signal)
		cli_error_prefixed(LOG_INFO, "%s: janitor stopped (%s); "
				   "reclaimed %" PRIu64 " expired items in all",
				   j.opts.name, strsignal(j.stop_signal),
				   j.reclaimed_total);
	else
		cli_error_prefixed(rc ? LOG_ERR : LOG_INFO,
				   "%s: janitor stopped", j.opts.name);
	return rc;
}

/* ---- create ------------------------------------------------------------ */

/* The option values as given, to name them in messages ("--size 512K"). */
struct create_args {
	const char *size, *max_items, *max_key, *max_value, *mode;
};

/* --max-items (0 = default) for a segment of arena bytes; -1 if it fits. */
static int max_items_range(const struct command *c, uint64_t arena,
			   uint64_t max_items, const char *given)
{
	if (max_items > arena / 16)
		return usage_error(c, "--max-items %s is too large: at most "
				   "the segment size / 16 (%" PRIu64 " here)",
				   given, arena / 16);
	return -1;
}

/* --size (given as text) is within the limits of kvshm.h; -1 if so. */
static int size_range(const struct command *c, uint64_t bytes,
		      const char *given)
{
	char lim[32];

	if (bytes < KVSHM_MIN_ARENA_BYTES)
		return usage_error(c, "--size %s is too small: a store is at "
				   "least %s", given,
				   cli_format_size(KVSHM_MIN_ARENA_BYTES, lim,
						   sizeof(lim)));
	if (bytes > KVSHM_MAX_ARENA_BYTES)
		return usage_error(c, "--size %s is too large: a store is at "
				   "most %s", given,
				   cli_format_size(KVSHM_MAX_ARENA_BYTES, lim,
						   sizeof(lim)));
	return -1;
}

/* Refuse what kvshm_open() would refuse with a bare -EINVAL, naming the
 * option and its limit. Returns -1 if all is well, else the exit status.
 * Mirrors the limits of kvshm.h; whatever slips through (the geometry as a
 * whole) the library still refuses, and create_invalid() explains. */
static int create_ranges(const struct command *c, const struct kvshm_options *o,
			 const struct create_args *a)
{
	uint64_t arena = o->arena_bytes ? o->arena_bytes
					: KVSHM_DEFAULT_ARENA_BYTES;
	char lim[32];
	int rc = a->size ? size_range(c, o->arena_bytes, a->size) : -1;

	if (rc >= 0)
		return rc;
	if (a->mode && (o->mode & ~0666u))
		return usage_error(c, "--mode %s: a store's mode has read and "
				   "write bits only, at most 0666", a->mode);
	/* 0 means the default here as in kvshm_options: not an error */
	if (o->max_key_bytes > KVSHM_MAX_KEY_BYTES)
		return usage_error(c, "--max-key %s is too large: keys are at "
				   "most %u bytes", a->max_key,
				   KVSHM_MAX_KEY_BYTES);
	if (o->max_value_bytes > arena / 4)
		return usage_error(c, "--max-value %s is too large: values are "
				   "at most a quarter of the segment (%s here)",
				   a->max_value,
				   cli_format_size(arena / 4, lim, sizeof(lim)));
	return max_items_range(c, arena, o->max_items, a->max_items);
}

/* kvshm_open() said -EINVAL although every option is in range: the name is
 * bad, or the options do not fit together. Attaching (no options) tells
 * them apart: it fails with -EINVAL only for a bad name. */
static int create_invalid(const struct command *c, const char *name,
			  const struct kvshm_options *o,
			  const struct create_args *a)
{
	struct kvshm *kv;
	char size[32], given[160];
	int err = kvshm_open(name, NULL, &kv);

	if (err == 0)
		kvshm_close(kv);
	if (err == -EINVAL)
		return usage_error(c, "bad store name '%s': a store is NAME or "
				   "/NAME (the shm object /dev/shm/NAME: 1 to "
				   "254 bytes, not . or ..) or a file path (a "
				   "'/' after the first character, not at the "
				   "end)", name);
	snprintf(given, sizeof(given), "%s%s%s%s%s",
		 a->max_items ? " --max-items " : "",
		 a->max_items ? a->max_items : "",
		 a->max_value ? " --max-value " : "",
		 a->max_value ? a->max_value : "",
		 a->max_items || a->max_value ? "" : " the default geometry");
	return usage_error(c, "a %s segment is too small for%s: it must hold "
			   "the index and 4 values of the largest size; give a "
			   "larger --size or a smaller --max-items or "
			   "--max-value",
			   cli_format_size(o->arena_bytes
						   ? o->arena_bytes
						   : KVSHM_DEFAULT_ARENA_BYTES,
					   size, sizeof(size)),
			   given);
}

/* Explain -ENOSPC from a create or resize: is the file system short of
 * room for the segment? Returns true if it said so. */
static bool explain_no_room(const char *name, uint64_t want,
			    const char *what, const char *outcome)
{
	char dir[4096], freeb[32], wantb[32];
	uint64_t free_bytes;

	if (cli_store_dir_free(name, dir, sizeof(dir), &free_bytes) ||
	    free_bytes >= want)
		return false;
	cli_error("%s: %s: %s has %s free, not enough for a %s segment "
		  "(its memory is reserved up front); %s",
		  name, what, dir,
		  cli_format_size(free_bytes, freeb, sizeof(freeb)),
		  cli_format_size(want, wantb, sizeof(wantb)), outcome);
	return true;
}

static int parse_create(const struct command *c, int argc, char **argv,
			struct kvshm_options *o, const char **name,
			struct create_args *a)
{
	static const struct option longopts[] = {
		{"size", required_argument, NULL, 's'},
		{"max-items", required_argument, NULL, 'n'},
		{"max-key", required_argument, NULL, 'k'},
		{"max-value", required_argument, NULL, 'v'},
		{"default-ttl", required_argument, NULL, 't'},
		{"mode", required_argument, NULL, 'm'},
		{"noevict", no_argument, NULL, 'E'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t v;
	int ch, err;

	getopt_reset(argv);
	while ((ch = getopt_long(argc, argv, "s:n:k:v:t:m:Eh", longopts,
				 NULL)) != -1) {
		switch (ch) {
		case 's':
			a->size = optarg;
			err = cli_parse_size(optarg, &o->arena_bytes);
			if (err == -ERANGE)
				o->arena_bytes = UINT64_MAX; /* too large */
			else if (err)
				goto bad_size;
			break;
		case 'n':
			a->max_items = optarg;
			if (cli_parse_uint(optarg, UINT64_MAX, &o->max_items))
				goto bad_number;
			break;
		case 'k':
		case 'v':
			if (ch == 'k')
				a->max_key = optarg;
			else
				a->max_value = optarg;
			err = cli_parse_size(optarg, &v);
			if (err && err != -ERANGE)
				goto bad_size;
			if (err || v > UINT32_MAX)
				v = UINT32_MAX; /* too large, said below */
			if (ch == 'k')
				o->max_key_bytes = (uint32_t)v;
			else
				o->max_value_bytes = (uint32_t)v;
			break;
		case 't':
			if (cli_parse_uint(optarg, UINT64_MAX,
					   &o->default_ttl_ms))
				goto bad_number;
			break;
		case 'm':
			a->mode = optarg;
			err = cli_parse_mode(optarg, &o->mode);
			if (err == -ERANGE)
				o->mode = 07777; /* too wide, said below */
			else if (err)
				return usage_error(c, "--mode: '%s' is not an "
						   "octal mode", optarg);
			break;
		case 'E':
			o->flags |= KVSHM_NOEVICT;
			break;
		case 'h':
			return print_help(c);
		default:
			return usage_error(c, NULL);
		}
	}
	if (take_name(c, argc, argv, name))
		return CLI_EXIT_USAGE;
	return create_ranges(c, o, a);

bad_size:
	return usage_error(c, "'%s' is not a size (bytes, or with a K, M, G "
			   "or T suffix)", optarg);
bad_number:
	return usage_error(c, "'%s' is not a number", optarg);
}

static int cmd_create(int argc, char **argv)
{
	const struct command *c = find_command("create");
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct create_args a = {0};
	const char *name = NULL;
	char geom[512];
	struct kvshm_stats st;
	struct kvshm *kv;
	int err, rc = parse_create(c, argc, argv, &o, &name, &a);

	if (rc >= 0)
		return rc;
	o.flags |= KVSHM_CREATE | KVSHM_EXCL;
	err = kvshm_open(name, &o, &kv);
	if (err == -EEXIST) {
		cli_error("store %s already exists", name);
		return CLI_EXIT_FAILURE;
	}
	if (err == -EINVAL)
		return create_invalid(c, name, &o, &a);
	if (err == -ENOSPC &&
	    explain_no_room(name, o.arena_bytes ? o.arena_bytes : KVSHM_DEFAULT_ARENA_BYTES,
			    "cannot create", "nothing was created"))
		return CLI_EXIT_FAILURE;
	if (err) {
		cli_store_error(NULL, name, "cannot create", err);
		return CLI_EXIT_FAILURE;
	}
	err = kvshm_stats(kv, &st);
	kvshm_close(kv);
	if (err) {
		cli_store_error(NULL, name, "created, but stats", err);
		return CLI_EXIT_FAILURE;
	}
	format_geometry(&st, geom, sizeof(geom));
	printf("created %s (mode %04o): %s\n", name, o.mode ? o.mode : 0600,
	       geom);
	return CLI_EXIT_OK;
}

/* ---- reset, flush, check, destroy -------------------------------------- */

static int cmd_reset(int argc, char **argv)
{
	const char *name = NULL;
	struct kvshm_stats st;
	struct kvshm *kv;
	int err, rc = parse_name_only(find_command("reset"), argc, argv, &name);

	if (rc >= 0 || (rc = open_store(NULL, name, 0, &kv)))
		return rc;
	err = kvshm_stats(kv, &st);
	if (!err)
		err = kvshm_clear(kv);
	kvshm_close(kv);
	if (err) {
		cli_store_error(NULL, name, "reset", err);
		return CLI_EXIT_FAILURE;
	}
	printf("reset %s: removed every key (%" PRIu64 " items were there, "
	       "expired ones included); processes keep their handles\n",
	       name, st.items);
	return CLI_EXIT_OK;
}

static int cmd_flush(int argc, char **argv)
{
	const char *name = NULL;
	struct kvshm *kv;
	size_t n = 0;
	int err, rc = parse_name_only(find_command("flush"), argc, argv, &name);

	if (rc >= 0 || (rc = open_store(NULL, name, 0, &kv)))
		return rc;
	err = kvshm_sweep(kv, 0, &n);
	kvshm_close(kv);
	if (err) {
		cli_store_error(NULL, name, "flush", err);
		if (n)
			printf("flush %s: reclaimed %zu expired items before "
			       "the error\n", name, n);
		return CLI_EXIT_FAILURE;
	}
	printf("flush %s: reclaimed %zu expired items\n", name, n);
	return CLI_EXIT_OK;
}

static int cmd_check(int argc, char **argv)
{
	const char *name = NULL;
	char report[16384];
	struct kvshm *kv;
	int err, rc = parse_name_only(find_command("check"), argc, argv, &name);

	if (rc >= 0 || (rc = open_store(NULL, name, 0, &kv)))
		return rc;
	report[0] = '\0';
	err = kvshm_check(kv, report, sizeof(report));
	kvshm_close(kv);
	if (report[0])
		printf("%s%s", report,
		       report[strlen(report) - 1] == '\n' ? "" : "\n");
	if (err == -EUCLEAN) {
		cli_error("%s: check failed: the store is inconsistent, as the "
			  "report above says. Stop its writers, then "
			  "destroy and re-create it (kvshm-janitor destroy %s)",
			  name, name);
		return CLI_EXIT_FAILURE;
	}
	if (err) {
		cli_store_error(NULL, name, "check could not finish", err);
		if (err == -ETIMEDOUT)
			cli_error("%s: a live process held a lock for over 5 s "
				  "(stopped in a debugger?); try again",
				  name);
		return CLI_EXIT_FAILURE;
	}
	return CLI_EXIT_OK;
}

static int parse_destroy(const struct command *c, int argc, char **argv,
			 const char **name, bool *force)
{
	static const struct option longopts[] = {
		{"force", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int ch;

	getopt_reset(argv);
	while ((ch = getopt_long(argc, argv, "fh", longopts, NULL)) != -1) {
		if (ch == 'f')
			*force = true;
		else if (ch == 'h')
			return print_help(c);
		else
			return usage_error(c, NULL);
	}
	return take_name(c, argc, argv, name) ? CLI_EXIT_USAGE : -1;
}

/* Why kvshm_unlink() refused name, in words an operator can act on. */
static void destroy_refused(const char *name, int err)
{
	if (err == -EBADMSG)
		cli_error("%s is not a kvshm store (not a regular file that "
			  "starts with a kvshm header); nothing removed. If it "
			  "really is to go: kvshm-janitor destroy --force %s",
			  name, name);
	else if (err == -ELOOP)
		cli_error("%s is a symbolic link, not a kvshm store; nothing "
			  "removed (--force removes the link itself, not what "
			  "it points to)", name);
	else if (err == -EAGAIN)
		cli_error("%s changed while it was being checked; nothing "
			  "removed; try again", name);
	else
		cli_store_error(NULL, name, "destroy", err);
}

static int cmd_destroy(int argc, char **argv)
{
	const char *name = NULL;
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct kvshm_stats st = {0};
	struct kvshm *kv;
	const struct command *c = find_command("destroy");
	bool force = false;
	int err, open_err, rc = parse_destroy(c, argc, argv, &name, &force);

	if (rc >= 0)
		return rc;
	/* Only to tell the operator about a running janitor or another
	 * layout: a store too damaged to open is destroyed all the same. */
	o.flags = KVSHM_RDONLY;
	open_err = kvshm_open(name, &o, &kv);
	if (open_err == 0) {
		if (kvshm_stats(kv, &st))
			st.janitor_alive = 0;
		kvshm_close(kv);
	}
	err = kvshm_unlink_ex(name, force ? KVSHM_UNLINK_FORCE : 0);
	if (err == -ENOENT) {
		cli_error("no such store: %s", name);
		return CLI_EXIT_FAILURE;
	}
	if (err) {
		destroy_refused(name, err);
		return CLI_EXIT_FAILURE;
	}
	printf("destroyed %s: new opens will not find it; processes that "
	       "still have it open keep using their mapping until they close "
	       "it, and the memory is freed then\n",
	       name);
	if (open_err == -EPROTONOSUPPORT)
		printf("it was a kvshm store of another layout version or lock "
		       "ABI (this kvshm has layout version %u)\n",
		       kvshm_layout_version());
	else if (open_err && force)
		printf("removed unchecked (--force): %s could not be opened as "
		       "a store (%s)\n",
		       name, kvshm_strerror(open_err));
	if (st.janitor_alive)
		printf("its janitor (pid %" PRIu64 ") notices within %d s and "
		       "exits\n",
		       st.janitor_pid, IDENTITY_PERIOD_MS / 1000 * 2);
	return CLI_EXIT_OK;
}

/* ---- resize ------------------------------------------------------------- */

static int parse_resize(const struct command *c, int argc, char **argv,
			struct kvshm_options *o, const char **name)
{
	static const struct option longopts[] = {
		{"size", required_argument, NULL, 's'},
		{"max-items", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *size = NULL, *max_items = NULL;
	int ch, err;

	getopt_reset(argv);
	while ((ch = getopt_long(argc, argv, "s:n:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			size = optarg;
			err = cli_parse_size(optarg, &o->arena_bytes);
			if (err == -ERANGE)
				o->arena_bytes = UINT64_MAX; /* too large */
			else if (err)
				return usage_error(c, "'%s' is not a size",
						   optarg);
			break;
		case 'n':
			max_items = optarg;
			if (cli_parse_uint(optarg, UINT64_MAX, &o->max_items))
				return usage_error(c, "'%s' is not a number",
						   optarg);
			break;
		case 'h':
			return print_help(c);
		default:
			return usage_error(c, NULL);
		}
	}
	if (take_name(c, argc, argv, name))
		return CLI_EXIT_USAGE;
	if (!size)
		return usage_error(c, "--size is required");
	err = size_range(c, o->arena_bytes, size);
	if (err >= 0)
		return err;
	return max_items_range(c, o->arena_bytes, o->max_items, max_items);
}

static int cmd_resize(int argc, char **argv)
{
	const struct command *c = find_command("resize");
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	const char *name = NULL;
	struct kvshm_stats before, after;
	char geom[512];
	struct kvshm *kv;
	int err, rc = parse_resize(c, argc, argv, &o, &name);

	if (rc >= 0 || (rc = open_store(NULL, name, KVSHM_RDONLY, &kv)))
		return rc;
	err = kvshm_stats(kv, &before);
	kvshm_close(kv);
	if (!err)
		err = kvshm_resize(name, &o);
	if (err == -ENOSPC) {
		if (!explain_no_room(name, o.arena_bytes, "resize",
					     "the store is unchanged"))
			cli_error("%s: resize: the live items do not fit the "
				  "new size; nothing changed", name);
	} else if (err == -EBUSY)
		cli_error("%s: resize: another resize of this store is running",
			  name);
	else if (err)
		cli_store_error(NULL, name, "resize", err);
	if (err)
		return CLI_EXIT_FAILURE;
	if ((rc = open_store(NULL, name, KVSHM_RDONLY, &kv)))
		return rc;
	err = kvshm_stats(kv, &after);
	kvshm_close(kv);
	if (err) {
		cli_store_error(NULL, name, "resized, but stats", err);
		return CLI_EXIT_FAILURE;
	}
	format_geometry(&after, geom, sizeof(geom));
	printf("resized %s: %" PRIu64 " items before, %" PRIu64
	       " after; now %s\n",
	       name, before.items, after.items, geom);
	return CLI_EXIT_OK;
}

/* ---- the command table and main ------------------------------------------ */

static const struct command commands[] = {
	{"run", cmd_run, "run NAME [--interval MS] [--pidfile PATH]",
	 "Look after store NAME in the foreground, as its janitor: sweep\n"
	 "expired items, write a heartbeat, run the consistency check every\n"
	 "minute, log to stderr with syslog priority prefixes. SIGTERM or\n"
	 "SIGINT stops it (exit 0), SIGHUP re-reads the options. Speaks the\n"
	 "systemd notify protocol when NOTIFY_SOCKET is set.\n\n"
	 "  -i, --interval MS   time between two sweeps (default 1000, "
	 "10..3600000)\n"
	 "  -p, --pidfile PATH  write the pid to PATH, remove it at exit\n"
	 "  -h, --help          this help\n"},
	{"create", cmd_create,
	 "create NAME [--size BYTES] [--max-items N] [--max-key BYTES]\n"
	 "       [--max-value BYTES] [--default-ttl MS] [--mode OCTAL] "
	 "[--noevict]",
	 "Create store NAME (it must not exist) and print its geometry.\n"
	 "NAME or /NAME is the shm object /dev/shm/NAME; a name with more\n"
	 "'/' is a file path. The whole segment's memory is reserved now, so\n"
	 "a size its file system has no room for fails here, not later.\n"
	 "Sizes are bytes or take a K, M, G or T suffix (powers of 1024).\n\n"
	 "  -s, --size BYTES       whole segment (default 64M, 1M to 1T)\n"
	 "  -n, --max-items N      index capacity (default size / 128, at "
	 "most\n"
	 "                         size / 16)\n"
	 "  -k, --max-key BYTES    longest key (default 512, at most 65535)\n"
	 "  -v, --max-value BYTES  longest value (default 1M or size / 16)\n"
	 "  -t, --default-ttl MS   TTL of writes that give none (default: "
	 "never)\n"
	 "  -m, --mode OCTAL       permissions (default 0600, at most 0666)\n"
	 "  -E, --noevict          when full, fail writes instead of "
	 "evicting\n"
	 "  -h, --help             this help\n"},
	{"reset", cmd_reset, "reset NAME",
	 "Remove every key of store NAME now. Processes using it keep running\n"
	 "and keep their handles. Prints how many items were there.\n"},
	{"flush", cmd_flush, "flush NAME",
	 "Reclaim every expired item of store NAME now, and print how many.\n"},
	{"check", cmd_check, "check NAME",
	 "Verify store NAME (which also repairs what dead processes left\n"
	 "behind) and print the report. Exit status 1 if it is "
	 "inconsistent.\n"},
	{"resize", cmd_resize, "resize NAME --size BYTES [--max-items N]",
	 "Move store NAME to a new segment of the given size, copying every\n"
	 "live item; processes using it follow by themselves.\n\n"
	 "  -s, --size BYTES   new segment size (K, M, G, T suffixes)\n"
	 "  -n, --max-items N  new index capacity (default size / 128)\n"
	 "  -h, --help         this help\n"},
	{"destroy", cmd_destroy, "destroy NAME [--force]",
	 "Remove store NAME. Processes that have it open keep using their\n"
	 "mapping until they close it; new opens will not find it. Refuses\n"
	 "anything that is not a kvshm store (another program's shm object,\n"
	 "a symbolic link, a directory) and leaves it untouched.\n\n"
	 "  -f, --force  remove NAME even if it is not a kvshm store\n"
	 "  -h, --help   this help\n"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *find_command(const char *name)
{
	size_t i;

	for (i = 0; i < NCOMMANDS; i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static const struct command *run_command(void)
{
	return &commands[0];
}

static void print_main_usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: kvshm-janitor COMMAND [OPTIONS] NAME\n"
		   "       kvshm-janitor --help | --version\n\n"
		   "commands:\n");
	for (i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %s\n", commands[i].usage);
	fprintf(f, "\n'kvshm-janitor COMMAND --help' describes a command. "
		   "Exit status: 0 success, 1 failure, 2 usage.\n");
}

int main(int argc, char **argv)
{
	const struct command *c;

	if (argc < 2) {
		cli_error("missing COMMAND");
		print_main_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		print_main_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("kvshm-janitor (libkvshm %s, layout version %u)\n",
		       kvshm_version(), kvshm_layout_version());
		return CLI_EXIT_OK;
	}
	c = find_command(argv[1]);
	if (!c) {
		cli_error("unknown command '%s'", argv[1]);
		fprintf(stderr, "Try 'kvshm-janitor --help'.\n");
		return CLI_EXIT_USAGE;
	}
	return c->fn(argc - 1, argv + 1);
}
