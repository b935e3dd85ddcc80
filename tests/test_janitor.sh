#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_janitor.sh - kvshm-janitor as an operator uses it: the real binary,
# real stores in /dev/shm, real signals and a real notify socket. Items are
# written by a tiny helper compiled here against the library of this build
# (the janitor itself has no command to write keys, by design).
#
#   BUILD_DIR=build/release bash tests/test_janitor.sh
#
# Prints PASS/FAIL per check and a last line "N passed, N failed"; exits
# non-zero if any check failed.
set -u

BUILD_DIR=${BUILD_DIR:-build/release}
J=$BUILD_DIR/bin/kvshm-janitor
TMP=$BUILD_DIR/tmp/test_janitor.$$
S=kvjt$$ # store name prefix: unique per run
HELPER=$TMP/kvhelper
. "$(dirname "$0")/lib.sh"
pids=()
SOCKDIR=

cleanup()
{
	local p
	for p in "${pids[@]}"; do
		kill -9 "$p" 2>/dev/null
	done
	wait 2>/dev/null
	rm -f /dev/shm/"$S"*
	rm -f /"$S".slash # the old name rule put /NAME in /
	rm -rf "$TMP" "$SOCKDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run CMD...: sets $out (stdout+stderr) and $rc
run() { out=$("$@" 2>&1); rc=$?; }

# wait_for FILE PATTERN [SECONDS]: until FILE has a line matching PATTERN
wait_for()
{
	local i
	for ((i = 0; i < ${3:-5} * 20; i++)); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

# wait_exit PID SECONDS: the exit status of PID (a child), or 255 on timeout
wait_exit()
{
	local i
	for ((i = 0; i < $2 * 20; i++)); do
		if ! kill -0 "$1" 2>/dev/null; then
			wait "$1"
			return $?
		fi
		sleep 0.05
	done
	return 255
}

ms() { date +%s%3N; }

mkdir -p "$TMP"
# A socket path must fit in sun_path (108 bytes) and be absolute: /tmp.
SOCKDIR=$(mktemp -d /tmp/kvjt.XXXXXX)
if [ ! -x "$J" ]; then
	echo "FAIL $J is missing (make tools BUILD=...)"
	echo "0 passed, 1 failed"
	exit 1
fi

# ---- the helper: writes, reads and reports through the public API -----------
cat >"$TMP/kvhelper.c" <<'EOF'
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <kvshm.h>

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	struct kvshm *kv;
	struct kvshm_stats st;
	char key[64], val[64];
	int err, rc = 0;

	if (argc < 3)
		return 2;
	err = kvshm_open(argv[2], NULL, &kv);
	if (err) {
		fprintf(stderr, "open %s: %s\n", argv[2], kvshm_strerror(err));
		return 1;
	}
	if (!strcmp(argv[1], "fill") && argc == 6) {
		/* fill NAME PREFIX N TTL_MS */
		long n = atol(argv[4]), i;
		for (i = 0; i < n && !rc; i++) {
			int kl = snprintf(key, sizeof(key), "%s%ld", argv[3], i);
			int vl = snprintf(val, sizeof(val), "v%ld", i);
			err = kvshm_set(kv, key, (size_t)kl, val, (size_t)vl,
					strtoull(argv[5], NULL, 10));
			if (err) {
				fprintf(stderr, "set: %s\n", kvshm_strerror(err));
				rc = 1;
			}
		}
	} else if (!strcmp(argv[1], "writer") && argc == 5) {
		/* writer NAME PREFIX MS: set keys for MS ms, count failures */
		long long end = now_ms() + atol(argv[4]), ok = 0, failed = 0;
		while (now_ms() < end) {
			int kl = snprintf(key, sizeof(key), "%s%lld", argv[3],
					  ok % 1000);
			if (kvshm_set(kv, key, (size_t)kl, "x", 1, 0))
				failed++;
			else
				ok++;
		}
		printf("ok=%lld failed=%lld\n", ok, failed);
		rc = failed ? 1 : 0;
	} else if (!strcmp(argv[1], "load") && argc == 5) {
		/* load NAME PREFIX MS: for MS ms set PREFIX<i % 500> = i and
		 * incr PREFIXn; then verify every acknowledged write is there */
		long long end = now_ms() + atol(argv[4]), i, lost = 0;
		int64_t acked = 0, c = -1;
		int nl = snprintf(key, sizeof(key), "%sn", argv[3]);
		for (i = 0; now_ms() < end; i++) {
			int kl = snprintf(key, sizeof(key), "%s%lld", argv[3],
					  i % 500);
			int vl = snprintf(val, sizeof(val), "%lld", i);
			if (kvshm_set(kv, key, (size_t)kl, val, (size_t)vl, 0))
				break;
			snprintf(key, sizeof(key), "%sn", argv[3]);
			if (kvshm_incr(kv, key, (size_t)nl, 1, 0, NULL))
				break;
			acked++;
		}
		for (long long k = i > 500 ? i - 500 : 0; k < i; k++) {
			char got[64];
			size_t gl = 0;
			int kl = snprintf(key, sizeof(key), "%s%lld", argv[3],
					  k % 500);
			int vl = snprintf(val, sizeof(val), "%lld", k);
			if (kvshm_get(kv, key, (size_t)kl, got, sizeof(got), &gl) ||
			    gl != (size_t)vl || memcmp(got, val, gl))
				lost++;
		}
		snprintf(key, sizeof(key), "%sn", argv[3]);
		kvshm_counter(kv, key, (size_t)nl, &c);
		printf("acked=%lld lost=%lld counter=%lld\n", (long long)acked,
		       lost, (long long)c);
		rc = lost || c != acked || acked == 0;
	} else if (!strcmp(argv[1], "get") && argc == 4) {
		err = kvshm_get(kv, argv[3], strlen(argv[3]), val, sizeof(val),
				NULL);
		rc = err == 0 ? 0 : err == -2 ? 3 : 1;
	} else if (!strcmp(argv[1], "stats") && argc == 3) {
		if (kvshm_stats(kv, &st))
			rc = 1;
		else
			printf("items=%" PRIu64 " expired_swept=%" PRIu64
			       " janitor_alive=%" PRIu64 " janitor_pid=%" PRIu64
			       " arena_bytes=%" PRIu64 "\n",
			       st.items, st.expired_swept, st.janitor_alive,
			       st.janitor_pid, st.arena_bytes);
	} else if (strcmp(argv[1], "open")) {
		rc = 2;
	}
	kvshm_close(kv);
	return rc;
}
EOF
# Link as the library was built: the same sanitizers, if any.
san=$(grep -o -- '-fsanitize=[^ ]*' "$BUILD_DIR/.flags" 2>/dev/null | tr '\n' ' ')
# shellcheck disable=SC2086
if ! ${CC:-cc} -std=c11 -D_GNU_SOURCE -O1 $san -Iinclude -o "$HELPER" \
	"$TMP/kvhelper.c" "$BUILD_DIR/libkvshm.a" -pthread -lrt; then
	echo "FAIL cannot build the helper against $BUILD_DIR/libkvshm.a"
	echo "0 passed, 1 failed"
	exit 1
fi

# hstat NAME FIELD: one field of the helper's stats line
hstat()
{
	"$HELPER" stats "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# start_janitor LOG ARGS...: run the janitor in the background; sets $jpid
start_janitor()
{
	local log=$1
	shift
	"$J" run "$@" 2>"$log" &
	jpid=$!
	pids+=("$jpid")
}

# ---- the checks -------------------------------------------------------------

t="--help and --version exit 0 and print to stdout"
run "$J" --version
v_ok=$rc
[[ $out == *"layout version"* ]] || v_ok=1
h_ok=0
for c in run create reset flush check resize destroy; do
	"$J" "$c" --help | grep -q "^usage: kvshm-janitor $c" || h_ok=1
done
"$J" --help | grep -q '^usage: kvshm-janitor' || h_ok=1
if [ $v_ok -eq 0 ] && [ $h_ok -eq 0 ]; then ok "$t"; else bad "$t" "$out"; fi

t="bad arguments exit 2 with a usage line"
fails=()
for args in "" "frob" "create" "create $S.x --size 12X" \
	"create $S.x --mode 9" "create $S.x --bogus" "run $S.x --interval 0" \
	"run $S.x --interval abc" "check" "check a b" "resize $S.x" \
	"flush --nope $S.x"; do
	# shellcheck disable=SC2086
	run "$J" $args
	if [ $rc -ne 2 ] || [[ $out != *"usage: kvshm-janitor"* && $out != *"Try 'kvshm-janitor --help'"* ]]; then
		fails+=("'$args': exit $rc: $out")
	fi
done
if [ ${#fails[@]} -eq 0 ]; then ok "$t"; else bad "$t" "${fails[@]}"; fi

t="a missing store: exit 1 and 'no such store: NAME'"
fails=()
for c in run reset flush check destroy "resize --size 8M"; do
	# shellcheck disable=SC2086
	run "$J" $c "$S.none"
	if [ $rc -ne 1 ] || [[ $out != *"no such store: $S.none"* ]]; then
		fails+=("$c: exit $rc: $out")
	fi
done
if [ ${#fails[@]} -eq 0 ]; then ok "$t"; else bad "$t" "${fails[@]}"; fi

t="create prints the geometry"
run "$J" create "$S.a" --size 8M --max-items 10000 --max-key 128 \
	--max-value 64K --default-ttl 60000 --mode 0640
if [ $rc -eq 0 ] && [[ $out == "created $S.a (mode 0640): 8.0 MiB segment"* ]] &&
	[[ $out == *"up to 10000 items"* && $out == *"keys up to 128 B"* ]] &&
	[[ $out == *"values up to 64.0 KiB"* && $out == *"default TTL 60000 ms"* ]] &&
	[ "$(hstat "$S.a" arena_bytes)" = 8388608 ]; then
	ok "$t"
else
	bad "$t" "exit $rc: $out"
fi

t="create of an existing store: exit 1, 'store NAME already exists'"
run "$J" create "$S.a"
if [ $rc -eq 1 ] && [[ $out == *"store $S.a already exists"* ]]; then
	ok "$t"
else
	bad "$t" "exit $rc: $out"
fi

t="check passes on a healthy store"
"$HELPER" fill "$S.a" live: 500 0
run "$J" check "$S.a"
if [ $rc -eq 0 ] && [[ $out == ok* ]]; then ok "$t"; else bad "$t" "exit $rc: $out"; fi

t="flush reclaims expired items and prints how many"
"$HELPER" fill "$S.a" short: 300 50
sleep 0.2
run "$J" flush "$S.a"
if [ $rc -eq 0 ] && [[ $out == "flush $S.a: reclaimed 300 expired items" ]] &&
	"$HELPER" get "$S.a" live:7; then
	ok "$t"
else
	bad "$t" "exit $rc: $out"
fi

t="run reclaims expired items in batches and logs it"
"$J" create "$S.b" --size 16M >/dev/null
"$HELPER" fill "$S.b" exp: 20000 100
"$HELPER" fill "$S.b" keep: 100 0
sleep 0.3
start_janitor "$TMP/b.log" "$S.b" --interval 100
j1=$jpid
wait_for "$TMP/b.log" "reclaimed" 5
sleep 0.3
items=$(hstat "$S.b" items)
swept=$(hstat "$S.b" expired_swept)
total=$(sed -n 's/.*reclaimed \([0-9]*\) expired items.*/\1/p' "$TMP/b.log" |
	awk '{ s += $1 } END { print s + 0 }')
if [ "$items" = 100 ] && [ "$swept" = 20000 ] && [ "$total" = 20000 ] &&
	grep -q '^<6>kvshm-janitor: '"$S.b"': janitor started' "$TMP/b.log" &&
	[ "$(hstat "$S.b" janitor_alive)" = 1 ] &&
	[ "$(hstat "$S.b" janitor_pid)" = "$j1" ]; then
	ok "$t"
else
	bad "$t" "items=$items swept=$swept logged=$total" "$(cat "$TMP/b.log")"
fi

t="a second janitor refuses: exit 1, 'NAME already has a janitor (pid P)'"
run "$J" run "$S.b"
if [ $rc -eq 1 ] && [[ $out == "<3>kvshm-janitor: $S.b already has a janitor (pid $j1)" ]]; then
	ok "$t"
else
	bad "$t" "exit $rc: $out"
fi

t="SIGHUP reloads and the janitor keeps running"
kill -HUP "$j1"
if wait_for "$TMP/b.log" "reloaded on SIGHUP: interval 100 ms" 3 &&
	kill -0 "$j1" 2>/dev/null; then
	ok "$t"
else
	bad "$t" "$(cat "$TMP/b.log")"
fi

t="SIGTERM: exit 0 within a second, and the role is released"
start=$(ms)
kill -TERM "$j1"
wait_exit "$j1" 3
rc=$?
took=$(($(ms) - start))
alive=$(hstat "$S.b" janitor_alive)
start_janitor "$TMP/b2.log" "$S.b"
j2=$jpid
if [ $rc -eq 0 ] && [ $took -lt 1000 ] && [ "$alive" = 0 ] &&
	wait_for "$TMP/b2.log" "janitor started" 5 &&
	grep -q '^<6>.*janitor stopped' "$TMP/b.log"; then
	ok "$t"
else
	bad "$t" "exit $rc after ${took} ms, janitor_alive=$alive" \
		"$(cat "$TMP/b.log" "$TMP/b2.log")"
fi
kill -INT "$j2"
wait_exit "$j2" 3
rc=$?
t="SIGINT: exit 0"
if [ $rc -eq 0 ]; then ok "$t"; else bad "$t" "exit $rc"; fi

t="--pidfile: written while running, removed at exit"
start_janitor "$TMP/p.log" "$S.b" --pidfile "$TMP/j.pid"
wait_for "$TMP/p.log" "janitor started" 5
pidok=0
[ "$(cat "$TMP/j.pid" 2>/dev/null)" = "$jpid" ] || pidok=1
kill -TERM "$jpid"
wait_exit "$jpid" 3
rc=$?
if [ $pidok -eq 0 ] && [ $rc -eq 0 ] && [ ! -e "$TMP/j.pid" ]; then
	ok "$t"
else
	bad "$t" "pidfile ok=$pidok exit $rc" "$(cat "$TMP/p.log")"
fi

# notify_test ADDRESS-FOR-PYTHON NOTIFY_SOCKET-VALUE: READY, STATUS,
# RELOADING/READY on SIGHUP, STOPPING
notify_test()
{
	local n=0 i
	rm -f "$TMP/notify.out" "$TMP/notify.ready"
	python3 - "$1" "$TMP/notify.out" "$TMP/notify.ready" <<'EOF' &
import socket, sys
addr = sys.argv[1]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(addr)
open(sys.argv[3], "w").close()
s.settimeout(15)
with open(sys.argv[2], "a") as f:
    while True:
        try:
            m = s.recv(4096).decode()
        except socket.timeout:
            break
        f.write(m.replace("\n", "|") + "\n")
        f.flush()
        if "STOPPING=1" in m:
            break
EOF
	local ppid=$!
	pids+=("$ppid")
	for ((i = 0; i < 100; i++)); do
		[ -e "$TMP/notify.ready" ] && break
		sleep 0.05
	done
	NOTIFY_SOCKET=$2 "$J" run "$S.b" 2>"$TMP/n.log" &
	jpid=$!
	pids+=("$jpid")
	wait_for "$TMP/notify.out" "^READY=1" 5 && n=$((n + 1))
	wait_for "$TMP/notify.out" "^STATUS=" 5 && n=$((n + 1))
	kill -HUP "$jpid"
	wait_for "$TMP/notify.out" "^RELOADING=1|MONOTONIC_USEC=" 5 && n=$((n + 1))
	kill -TERM "$jpid"
	wait_exit "$jpid" 3 && n=$((n + 1))
	wait_exit "$ppid" 5
	grep -q "^STOPPING=1" "$TMP/notify.out" && n=$((n + 1))
	[ "$(grep -c '^READY=1' "$TMP/notify.out")" = 2 ] && n=$((n + 1))
	[ $n -eq 6 ]
}

t="NOTIFY_SOCKET (path): READY=1, STATUS=, RELOADING=1 + READY=1, STOPPING=1"
if ! command -v python3 >/dev/null; then
	bad "$t" "python3 is needed for this check"
elif notify_test "$SOCKDIR/notify.sock" "$SOCKDIR/notify.sock"; then
	ok "$t"
else
	bad "$t" "$(cat "$TMP/notify.out" "$TMP/n.log" 2>/dev/null)"
fi

t="NOTIFY_SOCKET (abstract '@' address): the same"
if ! command -v python3 >/dev/null; then
	bad "$t" "python3 is needed for this check"
elif notify_test "@kvshm-test-$$" "@kvshm-test-$$"; then
	ok "$t"
else
	bad "$t" "$(cat "$TMP/notify.out" "$TMP/n.log" 2>/dev/null)"
fi

t="reset while a writer keeps writing: the writer never fails, old keys go"
"$J" create "$S.c" --size 8M >/dev/null
"$HELPER" fill "$S.c" old: 2000 0
"$HELPER" writer "$S.c" w: 1500 >"$TMP/writer.out" 2>&1 &
wpid=$!
pids+=("$wpid")
sleep 0.5
run "$J" reset "$S.c"
reset_out=$out
reset_rc=$rc
wait "$wpid"
wrc=$?
"$HELPER" get "$S.c" old:1
grc=$?
nitems=$(hstat "$S.c" items)
if [ $reset_rc -eq 0 ] && [ $wrc -eq 0 ] && [ $grc -eq 3 ] &&
	[[ $reset_out =~ "reset $S.c: removed every key ("([0-9]+)" items" ]] &&
	[ "${BASH_REMATCH[1]}" -ge 2000 ] && [ "$nitems" -le 1000 ] &&
	"$HELPER" writer "$S.c" after: 100 >/dev/null; then
	ok "$t"
else
	bad "$t" "reset exit $reset_rc: $reset_out" \
		"writer exit $wrc: $(cat "$TMP/writer.out")" \
		"get old:1 -> $grc, items after: $nitems"
fi

t="resize under 3 writers and a janitor: no acknowledged write is lost"
start_janitor "$TMP/r.log" "$S.c" --interval 100
wait_for "$TMP/r.log" "janitor started" 5
rpids=()
for w in 1 2 3; do
	"$HELPER" load "$S.c" "r$w:" 2000 >"$TMP/load.$w" 2>&1 &
	rpids+=($!)
	pids+=($!)
done
sleep 0.5
run "$J" resize "$S.c" --size 16M
lrc=0
for w in 0 1 2; do
	wait "${rpids[$w]}" || lrc=1
done
loads=$(cat "$TMP"/load.*)
if [ $rc -eq 0 ] && [[ $out == "resized $S.c: "*"now 16.0 MiB segment"* ]] &&
	[ "$(hstat "$S.c" arena_bytes)" = 16777216 ] && [ $lrc -eq 0 ] &&
	"$HELPER" get "$S.c" after:1 && kill -0 "$jpid" &&
	[ "$(hstat "$S.c" janitor_pid)" = "$jpid" ]; then
	ok "$t ($(tr "\n" " " <<<"$loads"))"
else
	bad "$t" "exit $rc: $out" "writers (exit $lrc):" "$loads" "$(cat "$TMP/r.log")"
fi
kill -TERM "$jpid"
wait_exit "$jpid" 3

t="destroy: explains, later opens fail, and its janitor exits 0"
start_janitor "$TMP/d.log" "$S.c" --interval 100
wait_for "$TMP/d.log" "janitor started" 5
run "$J" destroy "$S.c"
d_out=$out
d_rc=$rc
"$HELPER" open "$S.c" 2>/dev/null
orc=$?
run "$J" check "$S.c"
wait_exit "$jpid" 15
jrc=$?
if [ $d_rc -eq 0 ] && [[ $d_out == *"keep using their mapping"* ]] &&
	[[ $d_out == *"new opens will not find it"* ]] && [ $orc -ne 0 ] &&
	[ $rc -eq 1 ] && [[ $out == *"no such store: $S.c"* ]] &&
	[ $jrc -eq 0 ] && grep -q '^<4>.*was destroyed' "$TMP/d.log"; then
	ok "$t"
else
	bad "$t" "destroy exit $d_rc: $d_out" "open after: $orc" \
		"check after: exit $rc: $out" "janitor exit $jrc" \
		"$(cat "$TMP/d.log")"
fi

# ---- operator safety (issue 13, defect 10) ----------------------------------

t="destroy refuses what is not a kvshm store and leaves it as it was"
printf 'a text file\n' >"$TMP/text"
head -c 8192 /dev/urandom >"$TMP/random"
head -c 8192 /dev/urandom >/dev/shm/"$S.other" # another program's object
cp /dev/shm/"$S.other" "$TMP/other.copy"
mkdir "$TMP/dir"
"$J" create "$S.target" --size 2M >/dev/null
ln -s /dev/shm/"$S.target" /dev/shm/"$S.link"
fails=()
for n in "$TMP/text" "$TMP/random" "$S.other" "$TMP/dir" "$S.link"; do
	run "$J" destroy "$n"
	want="$n is not a kvshm store"
	[ "$n" = "$S.link" ] && want="$n is a symbolic link, not a kvshm store"
	if [ $rc -ne 1 ] || [[ $out != *"$want"* ]] || [[ $out != *"nothing removed"* ]]; then
		fails+=("$n: exit $rc: $out")
	fi
done
[ "$(cat "$TMP/text")" = "a text file" ] || fails+=("the text file changed")
cmp -s /dev/shm/"$S.other" "$TMP/other.copy" || fails+=("/dev/shm/$S.other changed")
[ -f "$TMP/random" ] && [ -d "$TMP/dir" ] || fails+=("random file or dir gone")
[ -L /dev/shm/"$S.link" ] && "$HELPER" open "$S.target" || fails+=("the link or its store is gone")
if [ ${#fails[@]} -eq 0 ]; then ok "$t"; else bad "$t" "${fails[@]}"; fi

t="destroy --force removes what is not a store; a directory gets the system's message"
fails=()
run "$J" destroy --force "$TMP/text"
[ $rc -eq 0 ] && [ ! -e "$TMP/text" ] || fails+=("text: exit $rc: $out")
run "$J" destroy --force "$S.link"
[ $rc -eq 0 ] && [ ! -L /dev/shm/"$S.link" ] && "$HELPER" open "$S.target" ||
	fails+=("link: exit $rc: $out")
run "$J" destroy --force "$TMP/dir"
if [ $rc -ne 1 ] || [[ $out != *"Is a directory"* ]] || [[ $out == *"unknown error"* ]] ||
	[ ! -d "$TMP/dir" ]; then
	fails+=("dir: exit $rc: $out")
fi
if [ ${#fails[@]} -eq 0 ]; then ok "$t"; else bad "$t" "${fails[@]}"; fi

t="destroy removes a store of another layout version, and says so"
printf '\377' | dd of=/dev/shm/"$S.target" bs=1 seek=8 conv=notrunc status=none
run "$J" destroy "$S.target"
if [ $rc -eq 0 ] && [[ $out == *"another layout version"* ]] &&
	[ ! -e /dev/shm/"$S.target" ]; then
	ok "$t"
else
	bad "$t" "exit $rc: $out"
fi

t="each bad create option names what is wrong (exit 2)"
fails=()
while IFS='|' read -r args want; do
	# shellcheck disable=SC2086
	run "$J" create $args
	if [ $rc -ne 2 ] || [[ $out != *"$want"* ]] || [ -e /dev/shm/"$S.bad" ]; then
		fails+=("'$args': exit $rc: $out")
	fi
done <<EOF_CASES
$S.bad --size 512K|--size 512K is too small: a store is at least 1.0 MiB
$S.bad --size 2T|--size 2T is too large: a store is at most 1.0 TiB
$S.bad --size 99999999999T|--size 99999999999T is too large
$S.bad --mode 0777|--mode 0777: a store's mode has read and write bits only, at most 0666
$S.bad --mode 4600|--mode 4600: a store's mode has read and write bits only
$S.bad --max-key 70000|--max-key 70000 is too large: keys are at most 65535 bytes
$S.bad --size 8M --max-value 3M|--max-value 3M is too large: values are at most a quarter of the segment (2.0 MiB here)
$S.bad --size 8M --max-items 999999999|--max-items 999999999 is too large: at most the segment size / 16 (524288 here)
$S.bad --size 1M --max-value 256K|a 1.0 MiB segment is too small for --max-value 256K
/..|bad store name '/..'
$TMP/dir/|bad store name '$TMP/dir/'
EOF_CASES
run "$J" resize "$S.none" --size 512K
[ $rc -eq 2 ] && [[ $out == *"--size 512K is too small"* ]] || fails+=("resize: exit $rc: $out")
if [ ${#fails[@]} -eq 0 ]; then ok "$t"; else bad "$t" "${fails[@]}"; fi

t="/NAME is the shm object /dev/shm/NAME, never a file in /"
run "$J" create "/$S.slash" --size 2M
c_out=$out
c_rc=$rc
in_root=no
[ -e /"$S.slash" ] && in_root=yes
run "$J" destroy "$S.slash" # the same store, without the '/'
if [ $c_rc -eq 0 ] && [ $in_root = no ] && [ $rc -eq 0 ] &&
	[ ! -e /dev/shm/"$S.slash" ]; then
	ok "$t"
else
	bad "$t" "create exit $c_rc: $c_out" "a file in /: $in_root" "destroy exit $rc: $out"
fi

t="a store larger than its tmpfs: create and resize fail at once, ENOSPC named, nothing left"
mkdir -p "$TMP/fs"
# A mount namespace of its own: the 4 MiB tmpfs goes away with it.
unshare -m --propagation private bash -c '
	mount -t tmpfs -o size=4m tmpfs "$1" || exit 100
	J=$2
	"$J" create "$1/big" --size 16M >"$1.big.out" 2>&1; echo $? >"$1.big.rc"
	ls -A "$1" >"$1.big.ls"
	"${J%/*}/kvshm-stat" --check "$1/big" >"$1.stat.out" 2>&1; echo $? >"$1.stat.rc"
	"$J" create "$1/small" --size 2M >/dev/null 2>&1 || exit 101
	"$J" resize "$1/small" --size 3M >"$1.resize.out" 2>&1; echo $? >"$1.resize.rc"
	ls -A "$1" >"$1.resize.ls"
	"$J" check "$1/small" >/dev/null 2>&1 || exit 102
' _ "$TMP/fs" "$J" 2>"$TMP/fs.err"
urc=$?
fs=$TMP/fs
if [ $urc -eq 100 ] || { [ $urc -ne 0 ] && [ ! -e "$fs.big.rc" ]; }; then
	echo "SKIP $t (cannot mount a tmpfs here: $(head -c 200 "$TMP/fs.err"))"
elif [ $urc -eq 0 ] && [ "$(cat "$fs.big.rc")" = 1 ] && [ ! -s "$fs.big.ls" ] &&
	grep -q "cannot create: $fs has 4.0 MiB free, not enough for a 16.0 MiB segment" "$fs.big.out" &&
	[ "$(cat "$fs.stat.rc")" = 1 ] && grep -q "no such store" "$fs.stat.out" &&
	[ "$(cat "$fs.resize.rc")" = 1 ] && [ "$(cat "$fs.resize.ls")" = small ] &&
	grep -q "resize: $fs has 2.0 MiB free, not enough for a 3.0 MiB segment" "$fs.resize.out"; then
	ok "$t"
else
	bad "$t" "unshare exit $urc: $(cat "$TMP/fs.err")" \
		"create 16M on 4M: exit $(cat "$fs.big.rc" 2>/dev/null): $(cat "$fs.big.out" 2>/dev/null); left: $(cat "$fs.big.ls" 2>/dev/null)" \
		"kvshm-stat --check: exit $(cat "$fs.stat.rc" 2>/dev/null): $(cat "$fs.stat.out" 2>/dev/null)" \
		"resize 2M to 3M: exit $(cat "$fs.resize.rc" 2>/dev/null): $(cat "$fs.resize.out" 2>/dev/null); left: $(cat "$fs.resize.ls" 2>/dev/null)"
fi

finish
