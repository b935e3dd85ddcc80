#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_fuzz.sh - the libFuzzer harnesses of tests/fuzz/: build them
# (`make fuzz`: clang, ASan+UBSan, into build/fuzz/), replay the whole seed
# corpus tests/fuzz/corpus/NAME/ through each, then fuzz each for
# FUZZ_SECONDS (default 30 s in BUILD=release). The fuzz binaries are the
# same clang+ASan build in every BUILD, so the asan and tsan passes of
# `make test` only replay the corpus and say SKIP for the timed run (set
# FUZZ_SECONDS to fuzz there anyway).
#
#   BUILD_DIR=build/release bash tests/test_fuzz.sh
#   FUZZ_SECONDS=3600 BUILD_DIR=build/release bash tests/test_fuzz.sh
#
# New inputs go to a temporary working corpus, never into tests/fuzz/corpus;
# a crash or hang reproducer is kept in build/fuzz/artifacts/ (replay it
# with build/fuzz/NAME FILE; fuzz_ops also wants KVSHM_FUZZ_FRESH=1, see
# its header). Without clang or its libFuzzer runtime (libclang-rt-14-dev
# on Debian 12) every check is a SKIP.
#
# Prints PASS/FAIL/SKIP per check and a last line "N passed, N failed";
# exits non-zero if any check failed.
set -u

BUILD_DIR=${BUILD_DIR:-build/release}
FUZZ_CC=${FUZZ_CC:-clang}
F=build/fuzz
CORPUS=tests/fuzz/corpus
ART=$F/artifacts
PER_INPUT_TIMEOUT=10 # seconds; an input that takes longer is a hang
RSS_MB=2048
. "$(dirname "$0")/lib.sh"

skip() { echo "SKIP $1"; }

if [ -n "${FUZZ_SECONDS:-}" ]; then
	seconds=$FUZZ_SECONDS
	why=
else
	case $BUILD_DIR in
	*release*) seconds=30 why= ;;
	*) seconds=0 why="only the release pass of make test fuzzes (the fuzz binaries are the same clang+ASan build in every BUILD); FUZZ_SECONDS=N forces it" ;;
	esac
fi
case $seconds in
'' | *[!0-9]*)
	bad "FUZZ_SECONDS is a number of seconds" "got '$seconds'"
	finish
	exit
	;;
esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvshm-fuzz.XXXXXX") || exit 1
# the stores themselves go to tmpfs, like real ones, in a directory of ours
stores=$(mktemp -d /dev/shm/kvshm-fuzz.XXXXXX 2>/dev/null || mktemp -d "$tmp/stores.XXXXXX")
cleanup() { rm -rf "$tmp" "$stores"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
export KVSHM_FUZZ_DIR=$stores

# ---- can we build libFuzzer programs here? ---------------------------------
if ! command -v "$FUZZ_CC" >/dev/null 2>&1; then
	skip "fuzz harnesses: $FUZZ_CC is not installed (apt-get install clang libclang-rt-14-dev)"
	finish
	exit
fi
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' >"$tmp/probe.c"
if ! "$FUZZ_CC" -fsanitize=fuzzer,address,undefined -o "$tmp/probe" \
	"$tmp/probe.c" >"$tmp/probe.log" 2>&1; then
	skip "fuzz harnesses: $FUZZ_CC cannot link -fsanitize=fuzzer,address,undefined (libFuzzer runtime missing? apt-get install libclang-rt-14-dev): $(head -n 1 "$tmp/probe.log")"
	finish
	exit
fi

# ---- build -----------------------------------------------------------------
if MAKEFLAGS= make --no-print-directory fuzz FUZZ_CC="$FUZZ_CC" >"$tmp/make.log" 2>&1; then
	ok "make fuzz builds the harnesses"
else
	bad "make fuzz builds the harnesses" "$(tail -n 20 "$tmp/make.log")"
	finish
	exit
fi

harnesses=()
for src in tests/fuzz/fuzz_*.c; do
	harnesses+=("$(basename "$src" .c)")
done
mkdir -p "$ART"

# ---- replay the seed corpus ------------------------------------------------
for name in "${harnesses[@]}"; do
	bin=$F/$name
	seeds=("$CORPUS/$name"/*)
	if [ ! -e "${seeds[0]}" ]; then
		bad "$name: seed corpus $CORPUS/$name/ exists and is not empty"
		continue
	fi
	log=$tmp/$name.replay.log
	"$bin" -timeout=$PER_INPUT_TIMEOUT -rss_limit_mb=$RSS_MB \
		-artifact_prefix="$ART/$name-" "${seeds[@]}" >"$log" 2>&1
	rc=$?
	ran=$(grep -c '^Executed ' "$log")
	if [ $rc -eq 0 ] && [ "$ran" -eq "${#seeds[@]}" ]; then
		ok "$name: replays its ${#seeds[@]} seeds"
	else
		bad "$name: replays its ${#seeds[@]} seeds" \
			"exit status $rc, $ran executed" \
			"$(grep -m 5 -E 'ERROR|BUG|runtime error|line [0-9]+:' "$log")" \
			"log: $(tail -n 5 "$log")"
	fi
done

# ---- fuzz ------------------------------------------------------------------
for name in "${harnesses[@]}"; do
	if [ "$seconds" -eq 0 ]; then
		skip "$name: timed fuzzing: ${why:-FUZZ_SECONDS=0}"
		continue
	fi
	bin=$F/$name
	work=$tmp/corpus-$name
	log=$tmp/$name.fuzz.log
	mkdir -p "$work"
	echo "---- $bin -max_total_time=$seconds (working corpus in a temporary directory)"
	# new inputs go to the first directory (ours); the seeds are only read
	"$bin" -max_total_time="$seconds" -timeout=$PER_INPUT_TIMEOUT \
		-rss_limit_mb=$RSS_MB -print_final_stats=1 \
		-artifact_prefix="$ART/$name-" "$work" "$CORPUS/$name" \
		>"$log" 2>&1
	rc=$?
	done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1)
	if [ $rc -eq 0 ] && [ -n "$done_line" ]; then
		runs=$(echo "$done_line" | awk '{ print $2 }')
		secs=$(echo "$done_line" | awk '{ print $5 }')
		cov=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | grep -oE 'cov: [0-9]+ ft: [0-9]+' | tail -n 1)
		echo "     $name: $runs runs in $secs s ($((runs / (secs > 0 ? secs : 1))) exec/s), $cov, working corpus $(ls "$work" | wc -l) inputs"
		ok "$name: $seconds s of fuzzing found nothing"
	else
		bad "$name: $seconds s of fuzzing found nothing" \
			"exit status $rc" \
			"$(grep -m 8 -E 'ERROR|SUMMARY|fuzz_[a-z]+: line|runtime error|Test unit written' "$log")" \
			"reproducer(s) kept in $ART/"
	fi
done

finish
