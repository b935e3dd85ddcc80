#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_examples.sh - every pattern example (examples/*.c but the demo) keeps
# its invariant with 1, 2 and 4 worker processes, says so in its "ok:" line,
# and leaves no store behind in /dev/shm. Under BUILD=tsan the workers are
# still forked single-threaded processes, which TSan handles.
#
#   BUILD_DIR=build/release bash tests/test_examples.sh
#
# Prints PASS/FAIL per check and a last line "N passed, N failed"; exits
# non-zero if any check failed.
set -u

BUILD_DIR=${BUILD_DIR:-build/release}
E=$BUILD_DIR/examples
. "$(dirname "$0")/lib.sh"

examples=()
for src in examples/*.c; do
	name=$(basename "$src" .c)
	[ "$name" = demo ] || examples+=("$name")
done

# leftovers PID...: the stores the examples with these pids left
leftovers() {
	local pid
	for pid in "$@"; do
		ls /dev/shm 2>/dev/null | grep -- "-$pid\$"
	done
}

# run NAME WORKERS: run one example, show its last lines, judge it
run() {
	local name=$1 workers=$2 out rc pid left
	"$E/$name" "$workers" >"$tmp" 2>&1 &
	pid=$! # the store is kvex-NAME-PID
	wait $pid
	rc=$?
	out=$(cat "$tmp")
	printf '%s\n' "$out" | tail -n 3 | sed 's/^/     /'
	if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q '^ok: '; then
		ok "$name with $workers workers keeps its invariant"
	else
		bad "$name with $workers workers keeps its invariant" \
			"exit status $rc"
	fi
	left=$(leftovers "$pid")
	if [ -z "$left" ]; then
		ok "$name with $workers workers removed its store"
	else
		bad "$name with $workers workers removed its store" \
			"left /dev/shm/$left"
		rm -f /dev/shm/"$left"
	fi
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
trap 'exit 130' INT TERM

if [ ${#examples[@]} -eq 0 ]; then
	bad "examples found" "no examples/*.c besides demo.c"
fi
for name in "${examples[@]}"; do
	if [ ! -x "$E/$name" ]; then
		bad "$name built" "missing $E/$name (make examples)"
		continue
	fi
	for workers in 1 2 4; do
		run "$name" "$workers"
	done
done

# a bad command line is a usage error (exit 2), and creates no store
"$E/dedup" 0 >/dev/null 2>&1
rc=$?
if [ $rc -eq 2 ]; then
	ok "a bad worker count exits 2"
else
	bad "a bad worker count exits 2" "got $rc"
fi

finish
