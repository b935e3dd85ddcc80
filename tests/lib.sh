# SPDX-License-Identifier: MIT
#
# lib.sh - what the tests/test_*.sh scripts share: counting checks, the
# PASS/FAIL lines and the closing "N passed, N failed" line that make test
# and CI read. Sourced, never run (make test runs only tests/test_*).

pass=0
fail=0

# ok DESCRIPTION
ok() { pass=$((pass + 1)); echo "PASS $1"; }

# bad DESCRIPTION [DETAIL...]: a failed check, with indented details
bad() {
	fail=$((fail + 1))
	echo "FAIL $1"
	shift
	[ $# -gt 0 ] && printf '     %s\n' "$@"
	return 0
}

# check DESCRIPTION COMMAND...: PASS if the command succeeds
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}

# finish: the closing line; the script's status is 0 only if nothing failed
finish() {
	echo "$pass passed, $fail failed"
	[ "$fail" -eq 0 ]
}
