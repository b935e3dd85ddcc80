#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# demo.sh - what `make demo` runs: examples/demo.c's prefork simulation on a
# store looked after the way an operator would. It shows each command, then
# runs it:
#   1. kvshm-janitor create the store (kvshm-demo);
#   2. kvshm-janitor run, in the background: the janitor;
#   3. the demo's workers share the store (one is killed mid-run);
#   4. kvshm-stat: the store's summary, with the janitor alive;
#   5. kill -TERM the janitor, show its log, kvshm-janitor destroy.
# The janitor is stopped and the store destroyed also when a step fails or
# the demo is interrupted. Exit status 0 if every step succeeded.
#
#   BUILD_DIR=build/release bash examples/demo.sh [NAME]
set -u

B=${BUILD_DIR:-build/release}
J=$B/bin/kvshm-janitor
S=$B/bin/kvshm-stat
D=$B/examples/demo
store=${1:-kvshm-demo}
log=$(mktemp)
janitor= # its pid while it runs
rc=0

stop_janitor() {
	[ -n "$janitor" ] || return 0
	kill -TERM "$janitor" 2>/dev/null
	wait "$janitor" # 0 if it stopped cleanly on SIGTERM
	local status=$?
	janitor=
	return $status
}

cleanup() {
	stop_janitor
	"$J" destroy "$store" >/dev/null 2>&1
	rm -f "$log"
}
trap cleanup EXIT
trap 'echo "interrupted: cleaning up"; exit 130' INT TERM

# step COMMAND...: show the command, then run it
step() {
	printf '\n$ %s\n' "$*"
	"$@"
}

for tool in "$J" "$S" "$D"; do
	[ -x "$tool" ] || { echo "missing $tool: run make first" >&2; exit 1; }
done
if [ -e "/dev/shm/$store" ]; then # left by an interrupted earlier demo
	"$J" destroy "$store" >/dev/null || exit 1
fi

step "$J" create "$store" --size 64M || exit 1

printf '\n$ %s &   # the janitor; its log is shown at the end\n' \
	"$J run $store --interval 100"
"$J" run "$store" --interval 100 2>"$log" &
janitor=$!
for _ in $(seq 100); do # until it holds the role (it logs "started")
	grep -q 'janitor started' "$log" && break
	kill -0 "$janitor" 2>/dev/null || break
	sleep 0.02
done
if ! grep -q 'janitor started' "$log"; then
	echo "the janitor did not start:"
	sed 's/^/  /' "$log"
	exit 1
fi

step "$D" "$store" || rc=1
step "$S" "$store" || rc=1

printf '\n$ kill -TERM %s   # the janitor\n' "$janitor"
stop_janitor || { echo "the janitor did not stop cleanly"; rc=1; }
echo "the janitor's log:"
sed 's/^<[0-9]>/  /' "$log"

step "$J" destroy "$store" || rc=1

echo
if [ $rc -eq 0 ]; then
	echo "demo: all checks passed; the janitor is stopped and $store is gone"
else
	echo "demo: FAILED (see above); the janitor is stopped and $store is gone"
fi
exit $rc
