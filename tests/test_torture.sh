#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_torture.sh - the short version of the kill -9 soak
# (tests/torture/kvshm-torture.c): worker processes SIGKILLed and respawned
# every ~30 ms, with the janitor running (and killed too) and the store
# resized (grown and shrunk) every ~0.7 s, every acknowledged write and
# counter checked, no version handed out twice, and the histories of the
# shared keys l:0..7 checked for linearizability (tests/lincheck.h).
# Under BUILD=tsan the same workload runs as threads sharing one handle
# instead (TSan does not follow across processes, and kills are not its
# business).
#
#   BUILD_DIR=build/release bash tests/test_torture.sh
#   TORTURE_SECONDS=3600 BUILD_DIR=build/release bash tests/test_torture.sh
#
# Prints PASS/FAIL per check and a last line "N passed, N failed"; exits
# non-zero if any check failed.
set -u

BUILD_DIR=${BUILD_DIR:-build/release}
T=$BUILD_DIR/torture/kvshm-torture
J=$BUILD_DIR/bin/kvshm-janitor
S=kvtt$$ # store name prefix: unique per run
. "$(dirname "$0")/lib.sh"

cleanup() { rm -f /dev/shm/"$S"*; }
trap cleanup EXIT
trap 'exit 130' INT TERM


# soak NAME ARGS...: run the torture program, show its output, judge it
soak()
{
	local name=$1 out rc
	shift
	echo "---- $T $*"
	out=$("$T" --name "$S.$name" "$@" 2>&1)
	rc=$?
	printf '%s\n' "$out" | sed 's/^/     /'
	if [ $rc -eq 0 ] && printf '%s\n' "$out" |
		grep -q '^torture: .* kills (.*), .* lock recoveries .*, 0 failures$'; then
		ok "$name"
	else
		bad "$name" "exit status $rc"
	fi
	# the histories of the shared keys were recorded and checked, and
	# the store was resized under the workers
	if printf '%s\n' "$out" |
		grep -Eq '^torture: lincheck: [1-9][0-9]* histories checked, [1-9][0-9]* ops'; then
		ok "$name: histories checked for linearizability"
	else
		bad "$name: histories checked for linearizability"
	fi
	if printf '%s\n' "$out" | grep -Eq '^torture: [1-9][0-9]* resizes'; then
		ok "$name: the store was resized during the soak"
	else
		bad "$name: the store was resized during the soak"
	fi
	[ ! -e /dev/shm/"$S.$name" ] || bad "$name: store unlinked" \
		"/dev/shm/$S.$name is still there"
}

if [ ! -x "$T" ] || [ ! -x "$J" ]; then
	bad "binaries built" "missing $T or $J (make torture tools)"
	finish
	exit 1
fi

# --help is usage, exit 0; a bad option is a usage error, exit 2
if "$T" --help | grep -q -- '--kill-ms'; then
	ok "--help documents the options"
else
	bad "--help documents the options"
fi
"$T" --workers 0 >/dev/null 2>&1
rc=$?
if [ $rc -eq 2 ]; then ok "a bad option exits 2"; else bad "a bad option exits 2" "got $rc"; fi

# About a minute in all per build (TORTURE_SECONDS sets each soak's length):
# the main soak, and one on a small arena where the cleaner reclaims
# segments all the time while workers die.
secs=${TORTURE_SECONDS:-}
case $BUILD_DIR in
*tsan)
	soak threads --threads --workers 4 \
		--seconds "${secs:-20}" --janitor "$J"
	;;
*asan)
	soak kill-soak --workers 4 --seconds "${secs:-30}" \
		--kill-ms 30 --janitor "$J"
	soak small-arena --workers 4 --seconds "${secs:-10}" --arena 4 \
		--kill-ms 20 --janitor "$J"
	;;
*)
	soak kill-soak --workers 4 --seconds "${secs:-45}" \
		--kill-ms 30 --janitor "$J"
	soak small-arena --workers 4 --seconds "${secs:-15}" --arena 4 \
		--kill-ms 20 --janitor "$J"
	;;
esac

finish
