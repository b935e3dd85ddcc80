#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_stat.sh - runs the real kvshm-stat as a user would, on stores that a
# small C helper (compiled here from the here-doc below) fills. Needs
# BUILD_DIR (build/<build>, as `make test` sets it) and python3 for the
# JSON check. Prints one PASS/FAIL line per check and ends with
# "N passed, N failed"; exits non-zero if any check failed.
# SC2016: the bash -c scripts expand their own $1; SC1003: \x01 is literal.
# shellcheck disable=SC2016,SC1003
set -u

BUILD_DIR=${BUILD_DIR:-build/release}
STAT=$BUILD_DIR/bin/kvshm-stat
TMPBASE=$BUILD_DIR/tmp
NAME=kvshm-test-stat-$$
KEYS=kvshm-test-stat-keys-$$
. "$(dirname "$0")/lib.sh"

mkdir -p "$TMPBASE"
WORK=$(mktemp -d "$TMPBASE/test_stat.XXXXXX")
HELPER=$WORK/helper

cleanup() {
	rm -f "/dev/shm/$NAME" "/dev/shm/$KEYS" "/dev/shm/$NAME.slash"
	rm -f "/$NAME.slash" # the old name rule put /NAME in /
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ---- the helper: creates a store and writes what argv says ------------------
cat >"$WORK/helper.c" <<'EOF'
/* helper STORE CMD...: create (if missing) a 16 MiB store, then run CMDs:
 *   keys N PREFIX     N keys PREFIX0..PREFIX<N-1>, value "v<i>", no TTL
 *   set KEY VALUE     a string value, no TTL
 *   ttl KEY MS        a value with a TTL
 *   counter KEY N     a counter at N
 *   binary KEY        the value bytes 00 01 ff 'A' '\n'
 *   get KEY           one lookup (a hit or a miss)
 *   binkey            the key bytes 'a' 01 'b' '\\' with value "x"
 */
#include <kvshm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, int err)
{
	fprintf(stderr, "helper: %s: %s\n", what, kvshm_strerror(err));
	exit(1);
}

int main(int argc, char **argv)
{
	struct kvshm_options o = KVSHM_OPTIONS_INIT;
	struct kvshm *kv;
	char k[256], v[64], buf[64];
	int err, i;

	o.flags = KVSHM_CREATE;
	o.arena_bytes = 16u << 20;
	if (argc < 2)
		return 2;
	err = kvshm_open(argv[1], &o, &kv);
	if (err)
		die("open", err);
	for (i = 2; i < argc; i++) {
		const char *cmd = argv[i];
		if (!strcmp(cmd, "keys") && i + 2 < argc) {
			long n = atol(argv[i + 1]);
			for (long j = 0; j < n; j++) {
				int kl = snprintf(k, sizeof(k), "%s%ld", argv[i + 2], j);
				int vl = snprintf(v, sizeof(v), "v%ld", j);
				if ((err = kvshm_set(kv, k, (size_t)kl, v, (size_t)vl,
						     KVSHM_TTL_NEVER)))
					die("set", err);
			}
			i += 2;
		} else if (!strcmp(cmd, "set") && i + 2 < argc) {
			err = kvshm_set(kv, argv[i + 1], strlen(argv[i + 1]),
					argv[i + 2], strlen(argv[i + 2]),
					KVSHM_TTL_NEVER);
			if (err)
				die("set", err);
			i += 2;
		} else if (!strcmp(cmd, "ttl") && i + 2 < argc) {
			err = kvshm_set(kv, argv[i + 1], strlen(argv[i + 1]), "t", 1,
					(uint64_t)atoll(argv[i + 2]));
			if (err)
				die("set ttl", err);
			i += 2;
		} else if (!strcmp(cmd, "counter") && i + 2 < argc) {
			err = kvshm_incr(kv, argv[i + 1], strlen(argv[i + 1]),
					 atoll(argv[i + 2]), KVSHM_TTL_NEVER, NULL);
			if (err)
				die("incr", err);
			i += 2;
		} else if (!strcmp(cmd, "binary") && i + 1 < argc) {
			static const char bin[] = {0, 1, (char)0xff, 'A', '\n'};
			err = kvshm_set(kv, argv[i + 1], strlen(argv[i + 1]), bin,
					sizeof(bin), KVSHM_TTL_NEVER);
			if (err)
				die("set binary", err);
			i += 1;
		} else if (!strcmp(cmd, "binkey")) {
			err = kvshm_set(kv, "a\001b\\", 4, "x", 1, KVSHM_TTL_NEVER);
			if (err)
				die("set binkey", err);
		} else if (!strcmp(cmd, "get") && i + 1 < argc) {
			kvshm_get(kv, argv[i + 1], strlen(argv[i + 1]), buf,
				  sizeof(buf), NULL);
			i += 1;
		} else {
			fprintf(stderr, "helper: bad command %s\n", cmd);
			return 2;
		}
	}
	kvshm_close(kv);
	return 0;
}
EOF

if [ ! -x "$STAT" ]; then
	echo "FAIL: $STAT is not built (make tools)"
	echo "0 passed, 1 failed"
	exit 1
fi
SAN=
case $BUILD_DIR in
*asan*) SAN=-fsanitize=address,undefined ;;
*tsan*) SAN=-fsanitize=thread ;;
esac
# shellcheck disable=SC2086 # $SAN is empty or one flag
if ! ${CC:-cc} -std=c11 -D_GNU_SOURCE $SAN -Iinclude -o "$HELPER" "$WORK/helper.c" \
	"$BUILD_DIR/libkvshm.a" -pthread; then
	echo "FAIL: cannot compile the helper"
	echo "0 passed, 1 failed"
	exit 1
fi

# The store most checks look at: 50 keys, a string, a counter, a binary
# value, a TTL key, and one hit and one miss.
"$HELPER" "$NAME" keys 50 item: set greeting "hello world" counter hits 42 \
	binary blob ttl short 600000 binkey get greeting get nope || exit 1
ITEMS=55

# ---- the summary -------------------------------------------------------------
out=$("$STAT" "$NAME" 2>&1)
rc=$?
check "summary exits 0" test $rc -eq 0
check "summary shows items and capacity" \
	grep -Eq "items +$ITEMS of [0-9]+" <<<"$out"
check "summary shows sizes in human units" \
	grep -Eq "size \(arena\) +16\.0 MiB" <<<"$out"
check "summary shows used, free and the largest free extent" \
	bash -c 'grep -q "^  used " <<<"$1" && grep -q "^  free " <<<"$1" &&
		grep -q "largest free extent" <<<"$1"' _ "$out"
check "summary shows the hit ratio" grep -Eq "hit ratio +50\.00%" <<<"$out"
check "summary says the janitor is absent" grep -Eq "status +none" <<<"$out"
check "summary says attached processes are unknown" \
	grep -Eq "attached processes +unknown" <<<"$out"

# ---- --json -------------------------------------------------------------------
out=$("$STAT" --json "$NAME")
check "--json exits 0" test $? -eq 0
check "--json parses and has the items, the name and numbers as numbers" \
	python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["items"] == int(sys.argv[1]), d["items"]
assert d["name"] == sys.argv[2]
assert isinstance(d["arena_bytes"], int) and d["arena_bytes"] == 16 << 20
assert d["janitor"]["alive"] is False
assert abs(d["hit_ratio"] - 0.5) < 1e-9
' "$ITEMS" "$NAME" <<<"$out"

# ---- --prometheus -----------------------------------------------------------------
prom_ok() { # prom_ok FILE: the exposition-format rules the issue names
	python3 - "$1" "$NAME" <<'EOF'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
name = re.escape(sys.argv[2])
sample = re.compile(r'^(kvshm_[a-z_]+)\{segment="' + name +
                    r'"(,[a-z_]+="[^"]*")*\} [0-9.eE+-]+$')
help_, type_, seen = set(), {}, set()
for l in lines:
    if l.startswith("# HELP "):
        help_.add(l.split()[2])
    elif l.startswith("# TYPE "):
        type_[l.split()[2]] = l.split()[3]
    else:
        m = sample.match(l)
        assert m, "bad sample line: " + l
        seen.add(m.group(1))
for metric in seen:
    assert metric in help_, "no HELP for " + metric
    assert metric in type_, "no TYPE for " + metric
    if type_[metric] == "counter":
        assert metric.endswith("_total"), "counter without _total: " + metric
assert "kvshm_build_info" in seen and "kvshm_items" in seen
assert any(l.startswith("kvshm_items{") and l.endswith(" 55") for l in lines)
EOF
}
"$STAT" --prometheus "$NAME" >"$WORK/stdout.prom"
check "--prometheus exits 0" test $? -eq 0
check "--prometheus follows the exposition format" prom_ok "$WORK/stdout.prom"
mkdir -p "$WORK/textfile"
"$STAT" --prometheus -o "$WORK/textfile/kvshm.prom" "$NAME"
check "-o exits 0" test $? -eq 0
check "-o writes the file in the same format" prom_ok "$WORK/textfile/kvshm.prom"
check "-o leaves no temporary file behind" \
	test "$(ls -A "$WORK/textfile")" = kvshm.prom
"$STAT" -p -o "$WORK/textfile/kvshm.prom" "$NAME" # replace an existing file
check "-o replaces an existing file" prom_ok "$WORK/textfile/kvshm.prom"
"$STAT" -p -o "$WORK/no/such/dir/kvshm.prom" "$NAME" 2>/dev/null
check "-o into a missing directory exits 1" test $? -eq 1

# ---- --keys -------------------------------------------------------------------------
"$HELPER" "$KEYS" keys 1000 k: keys 7 other: || exit 1
"$STAT" --keys "$KEYS" k: >"$WORK/keys.txt"
check "--keys exits 0" test $? -eq 0
check "--keys pages through 1000 keys, each listed exactly once" bash -c '
	tail -n +2 "$1" | awk "{ print \$NF }" | sort >"$1.sorted"
	test "$(wc -l <"$1.sorted")" -eq 1000 &&
	test "$(sort -u "$1.sorted" | wc -l)" -eq 1000 &&
	! grep -qv "^k:" "$1.sorted"' _ "$WORK/keys.txt"
n=$("$STAT" "$KEYS" --keys 2>/dev/null | tail -n +2 | wc -l)
check "--keys without a prefix lists every key (1007)" test "$n" -eq 1007
n=$("$STAT" --keys=k: --limit 300 "$KEYS" 2>/dev/null | tail -n +2 | wc -l)
check "--limit 300 prints 300 keys" test "$n" -eq 300
out=$("$STAT" --keys "$NAME")
check "--keys marks counters and shows no TTL as -" \
	grep -Eq "^ +8 +- +0 counter hits$" <<<"$out"
check "--keys escapes non-printable key bytes and backslashes" \
	grep -Fq ' a\x01b\\' <<<"$out"
check "--keys shows the TTL left" grep -Eq "^ +1 +[0-9]+m [0-9]+s +0 value +short$" <<<"$out"

# ---- --get ----------------------------------------------------------------------------
check "--get prints a string as is" test "$("$STAT" --get greeting "$NAME")" = "hello world"
check "--get prints a counter in decimal" test "$("$STAT" "$NAME" --get hits)" = 42
check "--get escapes a binary value" \
	test "$("$STAT" "$NAME" --get blob)" = '\x00\x01\xffA\x0a'
out=$("$STAT" "$NAME" --get nope 2>&1)
rc=$?
check "--get of a missing key exits 1 saying so" \
	bash -c '[ "$1" -eq 1 ] && grep -q "no such key" <<<"$2"' _ "$rc" "$out"

# ---- --check -------------------------------------------------------------------------
"$STAT" --check "$NAME" >/dev/null
check "--check passes on a healthy store" test $? -eq 0

# ---- live mode --------------------------------------------------------------------------
"$STAT" -i 1 "$NAME" >"$WORK/live.txt" 2>&1 &
live=$!
sleep 2.5
kill -INT $live
wait $live
rc=$?
check "-i 1 exits 0 on SIGINT" test $rc -eq 0
check "-i 1 prints a header and at least two lines in 2.5 s" \
	test "$(wc -l <"$WORK/live.txt")" -ge 3
"$STAT" --interval 1 "$NAME" >/dev/null 2>&1 &
live=$!
sleep 0.3
kill -TERM $live
wait $live
check "--interval exits 0 on SIGTERM" test $? -eq 0

# ---- --list ---------------------------------------------------------------------------
out=$("$STAT" --list)
check "--list shows the store with its item count" \
	grep -Eq "^$NAME +[^ ]+ +16\.0 MiB +[^ ]+ [^ ]+ +$ITEMS " <<<"$out"
mkdir -p "$WORK/stores"
"$HELPER" "$WORK/stores/a.kv" keys 3 x || exit 1
echo "not a store" >"$WORK/stores/junk"
out=$("$STAT" --list "$WORK/stores")
check "--list DIR shows file-path stores and skips other files" \
	bash -c 'grep -q "a.kv .* 3 " <<<"$1" && ! grep -q junk <<<"$1"' _ "$out"

ODD=$WORK/stores/q\"x
mkdir -p "$ODD"
"$HELPER" "$ODD/s.kv" keys 1 y || exit 1
check "--json escapes a store name with a double quote" python3 -c '
import json, sys
assert json.load(sys.stdin)["name"] == sys.argv[1]' "$ODD/s.kv" < <("$STAT" --json "$ODD/s.kv")
check "--prometheus escapes the segment label" \
	grep -Fq 'kvshm_items{segment="'"$WORK"'/stores/q\"x/s.kv"} 1' \
	< <("$STAT" --prometheus "$ODD/s.kv")

# ---- read-only: the segment's bytes do not change ----------------------------------------
FILE=$WORK/stores/a.kv
before=$(sha256sum <"$FILE")
"$STAT" "$FILE" >/dev/null && "$STAT" --json "$FILE" >/dev/null &&
	"$STAT" --keys "$FILE" >/dev/null && "$STAT" --get x1 "$FILE" >/dev/null &&
	"$STAT" --get missing "$FILE" 2>/dev/null
"$STAT" --check "$FILE" >/dev/null
after=$(sha256sum <"$FILE")
check "summary, --keys, --get and --check leave the segment's bytes unchanged" \
	test "$before" = "$after"

# ---- /NAME (issue 13, defect 10) ----------------------------------------------
"$HELPER" "/$NAME.slash" set a b
out=$("$STAT" "/$NAME.slash" 2>&1)
check "/NAME is the shm object /dev/shm/NAME, and the summary says so" \
	bash -c '[ ! -e "/$1" ] && [ -f "/dev/shm/$1" ] &&
		grep -q "name  *\/$1 (\/dev\/shm\/$1)" <<<"$2"' _ "$NAME.slash" "$out"

# ---- errors, help, version ------------------------------------------------------------
out=$("$STAT" "kvshm-test-missing-$$" 2>&1)
rc=$?
check "a missing store exits 1 with 'no such store'" \
	bash -c '[ "$1" -eq 1 ] && [ "$2" = "kvshm-stat: no such store: $3" ]' _ \
	"$rc" "$out" "kvshm-test-missing-$$"
for bad in "" "--bogus $NAME" "--json --keys $NAME" "$NAME extra" \
	"-i 0 $NAME" "-i x $NAME" "--limit 0 --keys $NAME" "--limit 5 $NAME" \
	"--format yaml $NAME" "--get"; do
	# shellcheck disable=SC2086 # word splitting wanted
	"$STAT" $bad >/dev/null 2>&1
	check "bad arguments '$bad' exit 2" test $? -eq 2
done
"$STAT" --help | grep -q "Usage: kvshm-stat"
check "--help exits 0 and prints the usage" test "${PIPESTATUS[0]}" -eq 0
out=$("$STAT" --version)
check "--version exits 0 with library and layout versions" \
	bash -c '[ "$1" -eq 0 ] && grep -Eq "libkvshm [0-9]+\.[0-9]+\.[0-9]+, layout version [0-9]+" <<<"$2"' _ $? "$out"

finish
