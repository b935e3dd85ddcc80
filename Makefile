# SPDX-License-Identifier: MIT
#
# kvshm - one non-recursive GNU Makefile for the library, tests, benchmarks
# and examples. Everything a build makes goes to build/$(BUILD)/.
#
# Targets
#   all (default)  libkvshm.a, libkvshm.so.X.Y.Z (+ .so.X, .so links), tools,
#                  examples
#   libs           the two installable libraries only
#   tools          daemon/kvshm-*.c -> build/$(BUILD)/bin/NAME (<kvshm.h> only)
#   examples       examples/*.c     -> build/$(BUILD)/examples/NAME (<kvshm.h> only)
#   bench          tests/bench/*.c  -> build/$(BUILD)/bench/NAME
#   torture        tests/torture/*.c -> build/$(BUILD)/torture/NAME (test archive)
#   tests          tests/test_*.c   -> build/$(BUILD)/tests/test_NAME (build only)
#   test           build everything, run every test, print "N passed, N failed"
#   demo           the main job: a store, its janitor, the demo's workers,
#                  kvshm-stat, clean-up (examples/demo.sh)
#   check-header   include/kvshm.h compiles alone as C11 and as C++
#   fuzz           tests/fuzz/fuzz_*.c -> build/fuzz/NAME, libFuzzer harnesses
#                  (clang, ASan+UBSan, whatever BUILD is)
#   install        header, libraries, kvshm.pc under $(DESTDIR)$(PREFIX)
#   uninstall      remove what install put there
#   deps           apt-get install the test dependency (cmocka)
#   format         clang-format -i the C sources (not include/kvshm.h)
#   clean          remove build/ (every BUILD)
#
# Variables
#   BUILD=release|debug|asan|tsan  release: -O2 -g (default); debug: -O0 -g3;
#                  asan: ASan+UBSan; tsan: ThreadSanitizer
#   WERROR=0       do not turn warnings into errors (for packagers)
#   TESTS="..."    run only these tests: make test TESTS="test_foo test_bar.sh"
#   TEST_TIMEOUT   seconds each test may run (default 300)
#   PREFIX, LIBDIR, INCLUDEDIR, PKGCONFIGDIR, BINDIR, MANDIR, SYSTEMDUNITDIR,
#   DESTDIR        for install
#   CC, CXX, CPPFLAGS, CFLAGS, LDFLAGS   appended after the project's flags
#   V=1            print whole commands

BUILD ?= release
WERROR ?= 1
TEST_TIMEOUT ?= 300
PREFIX ?= /usr/local
INCLUDEDIR ?= $(PREFIX)/include
LIBDIR ?= $(PREFIX)/lib
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CLANG_FORMAT ?= clang-format
INSTALL ?= install
CMOCKA_LIBS ?= -lcmocka

O := build/$(BUILD)

# ---- version, read from the public header ----------------------------------

kv_version = $(shell awk '$$2 == "KVSHM_VERSION_$(1)" { print $$3; exit }' include/kvshm.h)
VERSION_MAJOR := $(call kv_version,MAJOR)
VERSION_MINOR := $(call kv_version,MINOR)
VERSION_PATCH := $(call kv_version,PATCH)
ifeq ($(VERSION_MAJOR)$(VERSION_MINOR)$(VERSION_PATCH),)
$(error cannot read KVSHM_VERSION_MAJOR/MINOR/PATCH from include/kvshm.h)
endif
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
SONAME := libkvshm.so.$(VERSION_MAJOR)

# ---- flags -----------------------------------------------------------------

ifeq ($(BUILD),release)
OPT_CFLAGS := -O2 -g
else ifeq ($(BUILD),debug)
OPT_CFLAGS := -O0 -g3
else ifeq ($(BUILD),asan)
OPT_CFLAGS := -O1 -g -fno-omit-frame-pointer
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all
else ifeq ($(BUILD),tsan)
OPT_CFLAGS := -O1 -g
SAN_FLAGS := -fsanitize=thread
else
$(error BUILD must be one of release, debug, asan, tsan (not '$(BUILD)'))
endif

WARN_CFLAGS := -Wall -Wextra -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wformat=2
ifneq ($(WERROR),0)
WARN_CFLAGS += -Werror
endif

# The library may use 16-byte compare-and-swap (cmpxchg16b) on x86_64.
ifneq ($(filter x86_64-%,$(shell $(CC) -dumpmachine)),)
ARCH_CFLAGS := -mcx16
endif

# -D_GNU_SOURCE: the library needs F_OFD_SETLK, getrandom() and friends.
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT_CFLAGS) $(SAN_FLAGS) \
	$(WARN_CFLAGS) $(ARCH_CFLAGS) -fvisibility=hidden -pthread -MMD -MP
ALL_CFLAGS = $(BASE_CFLAGS) $(CPPFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(SAN_FLAGS) -pthread $(LDFLAGS)
LDLIBS := -pthread -lrt

# Refuse undefined symbols in the shared library, except under sanitizers,
# whose runtimes resolve some of them only in the final executable.
ifeq ($(SAN_FLAGS),)
SO_LDFLAGS := -Wl,-z,defs
endif

# ---- sources and outputs ---------------------------------------------------

LIB_SRCS := $(wildcard shm/*.c)
LIB_OBJS := $(patsubst shm/%.c,$(O)/obj/%.o,$(LIB_SRCS))
TLIB_OBJS := $(patsubst shm/%.c,$(O)/test-obj/%.o,$(LIB_SRCS))

STATIC_LIB := $(O)/libkvshm.a
TEST_LIB := $(O)/libkvshm-test.a
SHARED_LIB := $(O)/libkvshm.so.$(VERSION)
SHARED_LINKS := $(O)/$(SONAME) $(O)/libkvshm.so

# Each tests/test_*.c is one cmocka program, each tests/test_*.sh one bash
# script. Any other tests/*.c is a helper linked into every test program.
ALL_TESTS := $(patsubst tests/%.c,%,$(wildcard tests/test_*.c)) \
	$(patsubst tests/%,%,$(wildcard tests/test_*.sh))
# TESTS narrows the run only when given on the command line: a stray TESTS in
# the environment must not make CI run a subset.
ifneq ($(origin TESTS),command line)
TESTS := $(ALL_TESTS)
endif
TEST_BINS := $(addprefix $(O)/tests/,$(filter-out %.sh,$(TESTS)))
TEST_SCRIPTS := $(addprefix tests/,$(filter %.sh,$(TESTS)))
TEST_HELPER_OBJS := $(patsubst tests/%.c,$(O)/tests/%.o,\
	$(filter-out tests/test_%.c,$(wildcard tests/*.c)))

BENCH_BINS := $(patsubst tests/bench/%.c,$(O)/bench/%,$(wildcard tests/bench/*.c))
# White-box benchmarks time the library from inside (lock holds): they link
# the test archive, whose hooks cost nothing until a benchmark turns them on.
BENCH_TESTLIB_BINS := $(filter $(O)/bench/kvshm-sweep,$(BENCH_BINS))
# Long-running stress programs (also usable by hand); tests/test_*.sh run
# short versions of them.
TORTURE_BINS := $(patsubst tests/torture/%.c,$(O)/torture/%,$(wildcard tests/torture/*.c))
EXAMPLE_BINS := $(patsubst examples/%.c,$(O)/examples/%,$(wildcard examples/*.c))
# The operator tools: each daemon/kvshm-*.c is one program; other
# daemon/*.c files are helpers linked into every tool.
TOOL_BINS := $(patsubst daemon/%.c,$(O)/bin/%,$(wildcard daemon/kvshm-*.c))
TOOL_HELPER_OBJS := $(patsubst daemon/%.c,$(O)/daemon/%.o,\
	$(filter-out daemon/kvshm-%.c,$(wildcard daemon/*.c)))
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system

# include/kvshm.h is left out: it is the manual, hand-laid tables included.
FORMAT_SRCS := $(wildcard shm/*.c shm/*.h tests/*.c tests/*.h \
	tests/bench/*.c tests/bench/*.h examples/*.c examples/*.h \
	daemon/*.c daemon/*.h)

HAVE_CMOCKA := $(or $(wildcard /usr/include/cmocka.h),\
	$(shell pkg-config --exists cmocka 2>/dev/null && echo yes))

# Sanitizer defaults for `make test`; values from the environment win.
export ASAN_OPTIONS ?= detect_leaks=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS ?= halt_on_error=1

ifeq ($(V),1)
Q :=
msg = @:
else
Q := @
msg = @printf '  %-8s %s\n' '$(1)' '$(2)'
endif

# ---- top-level targets -----------------------------------------------------

.PHONY: all libs tools examples bench torture tests test demo check-header install \
	uninstall deps format clean fuzz FORCE
.DEFAULT_GOAL := all

all: libs tools examples

tools: $(TOOL_BINS)
libs: $(STATIC_LIB) $(SHARED_LIB) $(SHARED_LINKS)
examples: $(EXAMPLE_BINS)
bench: $(BENCH_BINS)
torture: $(TORTURE_BINS)
tests: $(TEST_BINS)

# ---- compiling -------------------------------------------------------------

# Every object depends on this stamp, which changes only when the compiler or
# the flags do, so `make CFLAGS=...` or WERROR=0 rebuilds what it must.
$(O)/.flags: FORCE
	@mkdir -p $(@D)
	@echo '$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) $(LDLIBS)' | cmp -s - $@ || \
		echo '$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) $(LDLIBS)' > $@

$(LIB_OBJS): $(O)/obj/%.o: shm/%.c $(O)/.flags
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -fPIC -Iinclude -Ishm -c -o $@ $<

# The same sources again with the crash points of shm/testing.h compiled in.
$(TLIB_OBJS): $(O)/test-obj/%.o: shm/%.c $(O)/.flags
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -fPIC -DKVSHM_TESTING -Iinclude -Ishm -c -o $@ $<

$(O)/tests/%.o: tests/%.c $(O)/.flags
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -DKVSHM_TESTING -Iinclude -Ishm -c -o $@ $<

$(O)/bench/%.o: tests/bench/%.c $(O)/.flags
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Iinclude -Ishm -c -o $@ $<

# Torture programs link the test archive (crash points, fault injection).
$(O)/torture/%.o: tests/torture/%.c $(O)/.flags
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -DKVSHM_TESTING -Iinclude -Ishm -c -o $@ $<

# The tools are API users too: <kvshm.h> and their own daemon/*.h only.
$(O)/daemon/%.o: daemon/%.c $(O)/.flags
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Iinclude -Idaemon -c -o $@ $<

# Examples are API users: they see <kvshm.h> and nothing else.
$(O)/examples/%.o: examples/%.c $(O)/.flags
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Iinclude -c -o $@ $<

# ---- libraries -------------------------------------------------------------

$(STATIC_LIB): $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(TEST_LIB): $(TLIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(SHARED_LIB): $(LIB_OBJS)
	$(call msg,LD,$@)
	$(Q)$(CC) -shared -Wl,-soname,$(SONAME) $(SO_LDFLAGS) $(ALL_LDFLAGS) \
		-o $@ $^ $(LDLIBS)

$(O)/$(SONAME): $(SHARED_LIB)
	$(Q)ln -sf $(notdir $<) $@

$(O)/libkvshm.so: $(O)/$(SONAME)
	$(Q)ln -sf $(notdir $<) $@

# ---- programs --------------------------------------------------------------

$(TEST_BINS): $(O)/tests/%: $(O)/tests/%.o $(TEST_HELPER_OBJS) $(TEST_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(TEST_HELPER_OBJS) $(TEST_LIB) \
		$(CMOCKA_LIBS) $(LDLIBS)

$(filter-out $(BENCH_TESTLIB_BINS),$(BENCH_BINS)): $(O)/bench/%: \
		$(O)/bench/%.o $(STATIC_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(STATIC_LIB) $(LDLIBS)

$(BENCH_TESTLIB_BINS): $(O)/bench/%: $(O)/bench/%.o $(TEST_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(TEST_LIB) $(LDLIBS)

# ... and the history recorder and linearizability checker of the tests.
$(TORTURE_BINS): $(O)/torture/%: $(O)/torture/%.o $(O)/tests/lincheck.o \
		$(TEST_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(O)/tests/lincheck.o $(TEST_LIB) \
		$(LDLIBS)

$(EXAMPLE_BINS): $(O)/examples/%: $(O)/examples/%.o $(STATIC_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(STATIC_LIB) $(LDLIBS)

$(TOOL_BINS): $(O)/bin/%: $(O)/daemon/%.o $(TOOL_HELPER_OBJS) $(STATIC_LIB)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(TOOL_HELPER_OBJS) $(STATIC_LIB) $(LDLIBS)

# ---- running tests ---------------------------------------------------------

# Builds everything first (so examples and benchmarks are compiled in every
# BUILD too), then runs each test in turn under `timeout`, from the repo root,
# with BUILD_DIR=build/$(BUILD) in its environment. The last line is always
# "<passed> passed, <failed> failed"; the exit status is non-zero if any test
# failed or timed out.
ifeq ($(HAVE_CMOCKA),)
# A fresh machine: install cmocka (make deps), then run the tests in a new
# make that sees it. Where apt-get is not available, say what is missing.
test:
	@if command -v apt-get >/dev/null 2>&1; then \
		echo "cmocka is missing: installing it with 'make deps'"; \
		$(MAKE) --no-print-directory deps && \
		$(MAKE) --no-print-directory test; \
	else \
		echo "cmocka is missing: install libcmocka-dev (or your system's cmocka package), then run make test again" >&2; \
		exit 1; \
	fi
else
test: libs tools examples bench torture $(TEST_BINS)
	@pass=0; fail=0; failed=; \
	[ -n "$(strip $(TEST_BINS) $(TEST_SCRIPTS))" ] || \
		echo "note: no tests found (tests/test_*.c, tests/test_*.sh)"; \
	for t in $(TEST_BINS) $(TEST_SCRIPTS); do \
		name=$${t##*/}; \
		case $$t in *.sh) run="bash $$t" ;; *) run=$$t ;; esac; \
		echo "==== $$name ($(BUILD))"; \
		start=$$(date +%s); \
		BUILD_DIR=$(O) timeout -k 10 $(TEST_TIMEOUT) $$run; rc=$$?; \
		secs=$$(( $$(date +%s) - start )); \
		if [ $$rc -eq 0 ]; then \
			pass=$$((pass + 1)); echo "PASS $$name ($${secs}s)"; \
		else \
			fail=$$((fail + 1)); failed="$$failed $$name"; \
			if [ $$rc -eq 124 ]; then \
				echo "FAIL $$name (timed out after $(TEST_TIMEOUT)s)"; \
			elif [ $$rc -gt 128 ]; then \
				echo "FAIL $$name (killed by signal $$((rc - 128)), $${secs}s)"; \
			else \
				echo "FAIL $$name (exit status $$rc, $${secs}s)"; \
			fi; \
		fi; \
	done; \
	[ $$fail -eq 0 ] || echo "failed:$$failed"; \
	echo "$$pass passed, $$fail failed"; \
	[ $$fail -eq 0 ]
endif

# The main job (examples/demo.sh): kvshm-janitor creates the store
# kvshm-demo and runs as its janitor while examples/demo.c's workers share
# it (one is killed mid-run); kvshm-stat shows the store; then the janitor
# is stopped and the store destroyed, also when something failed.
demo: $(O)/examples/demo $(TOOL_BINS)
	@BUILD_DIR=$(O) bash examples/demo.sh

# STYLE: the public header compiles alone as C11 and as C++.
check-header:
	$(Q)$(CC) -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only \
		-x c include/kvshm.h
	$(Q)$(CXX) -std=c++11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only \
		-x c++ include/kvshm.h
	@echo "include/kvshm.h compiles alone as C11 and C++11"

# ---- fuzzing ---------------------------------------------------------------

# libFuzzer harnesses: each tests/fuzz/fuzz_NAME.c is one, linked with the
# library sources compiled again with the test hooks (shm/testing.h). They
# are always clang + ASan + UBSan, whatever BUILD is, so every BUILD shares
# one copy in build/fuzz/. tests/test_fuzz.sh replays tests/fuzz/corpus/
# through them and fuzzes each for a while.
FUZZ_CC ?= clang
FUZZ_O := build/fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer \
	$(FUZZ_SAN) $(WARN_CFLAGS) $(ARCH_CFLAGS) -pthread -MMD -MP \
	-DKVSHM_TESTING -Iinclude -Ishm
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(FUZZ_O)/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_LIB_OBJS := $(patsubst shm/%.c,$(FUZZ_O)/obj/%.o,$(LIB_SRCS))

fuzz: $(FUZZ_BINS)

$(FUZZ_LIB_OBJS): $(FUZZ_O)/obj/%.o: shm/%.c Makefile
	$(call msg,FUZZCC,$@)
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_O)/%.o: tests/fuzz/%.c Makefile
	$(call msg,FUZZCC,$@)
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BINS): $(FUZZ_O)/%: $(FUZZ_O)/%.o $(FUZZ_LIB_OBJS)
	$(call msg,LD,$@)
	$(Q)$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -pthread -o $@ $^ $(LDLIBS)

-include $(FUZZ_LIB_OBJS:.o=.d) $(FUZZ_BINS:=.d)

# ---- installing ------------------------------------------------------------

# kvshm.pc names the final paths, never DESTDIR.
$(O)/kvshm.pc: kvshm.pc.in FORCE
	@mkdir -p $(@D)
	$(Q)sed -e 's|@prefix@|$(PREFIX)|g' -e 's|@libdir@|$(LIBDIR)|g' \
		-e 's|@includedir@|$(INCLUDEDIR)|g' -e 's|@version@|$(VERSION)|g' \
		$< > $@.tmp && mv $@.tmp $@

install: libs $(O)/kvshm.pc
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 644 include/kvshm.h $(DESTDIR)$(INCLUDEDIR)/kvshm.h
	$(INSTALL) -m 644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/libkvshm.a
	$(INSTALL) -m 755 $(SHARED_LIB) $(DESTDIR)$(LIBDIR)/libkvshm.so.$(VERSION)
	ln -sf libkvshm.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libkvshm.so
	$(INSTALL) -m 644 $(O)/kvshm.pc $(DESTDIR)$(PKGCONFIGDIR)/kvshm.pc
	$(INSTALL) -d $(DESTDIR)$(BINDIR)
	$(if $(TOOL_BINS),$(INSTALL) -m 755 $(TOOL_BINS) $(DESTDIR)$(BINDIR)/)
	$(foreach sec,1 8,$(if $(wildcard daemon/*.$(sec)),\
		$(INSTALL) -d $(DESTDIR)$(MANDIR)/man$(sec) && \
		$(INSTALL) -m 644 $(wildcard daemon/*.$(sec)) $(DESTDIR)$(MANDIR)/man$(sec)/;))
	$(if $(wildcard daemon/*.service),\
		$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR) && \
		$(INSTALL) -m 644 $(wildcard daemon/*.service) $(DESTDIR)$(SYSTEMDUNITDIR)/)

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/kvshm.h $(DESTDIR)$(LIBDIR)/libkvshm.a \
		$(DESTDIR)$(LIBDIR)/libkvshm.so.$(VERSION) \
		$(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libkvshm.so \
		$(DESTDIR)$(PKGCONFIGDIR)/kvshm.pc

# ---- housekeeping ----------------------------------------------------------

deps:
	@if [ "$$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi; \
	set -x; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y libcmocka-dev || \
	{ $$sudo apt-get update && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y libcmocka-dev; }

format:
	$(CLANG_FORMAT) -i $(FORMAT_SRCS)

clean:
	rm -rf build

FORCE:

-include $(LIB_OBJS:.o=.d) $(TLIB_OBJS:.o=.d) $(TEST_BINS:=.d) \
	$(TEST_HELPER_OBJS:.o=.d) $(BENCH_BINS:=.d) $(EXAMPLE_BINS:=.d) \
	$(TOOL_HELPER_OBJS:.o=.d) $(patsubst $(O)/bin/%,$(O)/daemon/%.d,$(TOOL_BINS)) \
	$(TORTURE_BINS:=.d)
