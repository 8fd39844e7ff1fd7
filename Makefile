# openai-usage: build, install, test.
#   make                      build openai_usage/core.so for Lua 5.4
#   make LUA_VERSION=5.1      build against LuaJIT's (or Lua 5.1's) headers into build/5.1/
#   make install PREFIX=P     install the standard tree under P
#   make rules                regenerate src/rules_table.c from tools/openai-usage-openapi.yaml
#   make report               the main job: a 30-day images report (see README)
#   make test                 install missing Debian packages, build, run the busted suite
#   make test-all             the suite on Lua 5.4, 5.3, 5.1 and LuaJIT 2.1
#   make bench                benchmarks, printed as ratios against named peers
#   make check-memory         the suite under valgrind (no definite leaks, no errors); alias check-valgrind
#   make check-asan           the suite with an ASan+UBSan build of the module
#   make check-tsan           the threaded specs with a ThreadSanitizer build of the module
#   make fuzz [FUZZ_SECONDS=60] libFuzzer runs of the decoder and the query encoder
#   make check                test + check-asan + a 60 s fuzz run of each harness
#   make lint                 clang-format check, cppcheck, clang-tidy, luacheck

SHELL := /bin/bash
LUA_VERSION ?= 5.4
PREFIX ?= /usr/local
CC ?= cc
PKG_CONFIG ?= pkg-config

# pkg-config name of the Lua headers: LuaJIT for 5.1 when it is installed.
ifeq ($(LUA_VERSION),5.1)
LUA_PKG ?= $(shell $(PKG_CONFIG) --exists luajit && echo luajit || echo lua5.1)
else
LUA_PKG ?= lua$(LUA_VERSION)
endif
LUA ?= lua$(LUA_VERSION)

ifeq ($(LUA_VERSION),5.4)
OUTDIR ?= .
else
OUTDIR ?= build/$(LUA_VERSION)
endif
ifdef SANITIZE
OUTDIR := build/sanitize
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif
ifdef TSAN
OUTDIR := build/tsan
SAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer
endif
OBJDIR := $(if $(filter .,$(OUTDIR)),build/$(LUA_VERSION),$(OUTDIR))/obj
MODULE := $(OUTDIR)/openai_usage/core.so
SQLITE_MODULE := $(OUTDIR)/openai_usage/sqlite.so

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread -fPIC -fvisibility=hidden $(WARN) $(CFLAGS) $(SAN_FLAGS) \
	$(shell $(PKG_CONFIG) --cflags $(LUA_PKG) libcurl)
# libcurl is loaded at run time (src/curl_api.c), not linked: see there why.
LDLIBS := -ldl -lm -pthread

# src/sqlite.c is a module of its own (openai_usage.sqlite), linked with -lsqlite3.
SOURCES := $(filter-out src/sqlite.c,$(wildcard src/*.c))
OBJECTS := $(patsubst src/%.c,$(OBJDIR)/%.o,$(SOURCES))
HEADERS := $(wildcard src/*.h)
LUA_FILES := $(wildcard lua/openai_usage/*.lua lua/openai_usage/*/*.lua)

# Debian packages the build and the suite need.
DEB_PACKAGES := gcc make pkg-config lua5.4 liblua5.4-dev libcurl4-openssl-dev lua-busted lua-cjson \
	libsqlite3-dev sqlite3 python3 curl locales luarocks lua-yaml clang-format openssl \
	nginx libnginx-mod-http-lua lua-resty-core libluajit2-5.1-dev neovim chromium prometheus
BUSTED := $(LUA) /usr/bin/busted
BUSTED_ARGS ?= -o TAP

.PHONY: all install test test-all test-one report bench rules fuzz check check-valgrind check-memory check-asan check-tsan deps lint clean uninstall FORCE

all: $(MODULE) $(SQLITE_MODULE)

# The flags a build directory was built with, rewritten only when they
# change: objects and the module depend on it, so a directory built against
# another Lua's headers (or with other flags) is rebuilt, never reused.
BUILD_FLAGS := $(CC) $(ALL_CFLAGS) -shared $(SAN_FLAGS) $(LDFLAGS) $(LDLIBS)
FLAGS_STAMP := $(OBJDIR)/build-flags
$(FLAGS_STAMP): FORCE
	@mkdir -p $(dir $@)
	@echo '$(BUILD_FLAGS)' | cmp -s - $@ || echo '$(BUILD_FLAGS)' > $@

$(OBJDIR)/%.o: src/%.c $(HEADERS) Makefile $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(MODULE): $(OBJECTS) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -shared $(SAN_FLAGS) $(LDFLAGS) -o $@ $(OBJECTS) $(LDLIBS)

# The history store's SQLite binding (openai_usage.store): its own module, so
# only a host that opens a store loads libsqlite3.
$(SQLITE_MODULE): src/sqlite.c src/compat.h Makefile $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(shell $(PKG_CONFIG) --cflags sqlite3) -shared $(LDFLAGS) -o $@ $< \
	  $(shell $(PKG_CONFIG) --libs sqlite3)

install: $(MODULE) $(SQLITE_MODULE)
	install -d $(DESTDIR)$(PREFIX)/share/lua/$(LUA_VERSION)/openai_usage
	install -d $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VERSION)/openai_usage
	install -d $(DESTDIR)$(PREFIX)/bin
	cd lua && for f in openai_usage/*.lua openai_usage/*/*.lua; do \
	  [ -f "$$f" ] || continue; \
	  install -d "$(DESTDIR)$(PREFIX)/share/lua/$(LUA_VERSION)/$$(dirname $$f)"; \
	  install -m 644 "$$f" "$(DESTDIR)$(PREFIX)/share/lua/$(LUA_VERSION)/$$f"; \
	done
	install -m 755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VERSION)/openai_usage/core.so
	install -m 755 $(SQLITE_MODULE) $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VERSION)/openai_usage/sqlite.so
	sed '1s|^#!.*|#!/usr/bin/env $(LUA)|' bin/openai-usage > $(DESTDIR)$(PREFIX)/bin/openai-usage
	chmod 755 $(DESTDIR)$(PREFIX)/bin/openai-usage
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="$(OUTDIR)/?.so;;" $(LUA) -e \
	  'io.write(require("openai_usage.cli").bash_completion())' \
	  > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/openai-usage

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/share/lua/$(LUA_VERSION)/openai_usage
	rm -rf $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VERSION)/openai_usage
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/openai-usage
	rm -f $(DESTDIR)$(PREFIX)/bin/openai-usage

# Installs whatever of DEB_PACKAGES is missing; refreshes the lists only when needed.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; }; \
	fi

# The suite's environment: its own module paths (whatever LUA_PATH and
# LUA_CPATH `luarocks path` left), and none of this make's command line
# (MAKEFLAGS would hand LUA_PKG=... to the specs' own make runs).
NO_MAKE_ENV := env -u MAKEFLAGS -u MFLAGS -u MAKEOVERRIDES -u MAKELEVEL
SUITE_ENV := $(NO_MAKE_ENV) \
	LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" LUA_CPATH="$(OUTDIR)/?.so;;" \
	OPENAI_USAGE_LUA="$(LUA)" OPENAI_USAGE_LUA_VERSION="$(LUA_VERSION)" \
	OPENAI_USAGE_MAKE_ARGS="LUA_VERSION=$(LUA_VERSION) LUA_PKG=$(LUA_PKG) OUTDIR=$(OUTDIR)"

# The rule table, generated from the OpenAPI description (output committed).
rules:
	@dpkg-query -W lua-yaml >/dev/null 2>&1 || apt-get install -y -qq lua-yaml >/dev/null
	$(LUA) tools/gen-rules.lua tools/openai-usage-openapi.yaml > src/rules_table.c.tmp
	clang-format src/rules_table.c.tmp > src/rules_table.c && rm -f src/rules_table.c.tmp

# The main job: a 30-day report (offline against the stand-in without OPENAI_ADMIN_KEY).
report: deps
	@$(MAKE) --no-print-directory all
	@$(SUITE_ENV) $(LUA) bin/report.lua

# Speed and memory goals, as ratios against their peers measured in the same run.
bench: deps
	@$(MAKE) --no-print-directory all
	$(SUITE_ENV) $(LUA) bench/decode.lua
	$(SUITE_ENV) $(LUA) bench/paging.lua
	$(SUITE_ENV) $(LUA) bench/report.lua
	$(SUITE_ENV) $(LUA) bench/store.lua
	$(SUITE_ENV) $(LUA) bench/db_report.lua
	@command -v node >/dev/null || apt-get install -y -qq nodejs npm >/dev/null
	@dpkg-query -W python3-requests >/dev/null 2>&1 || apt-get install -y -qq python3-requests >/dev/null
	$(SUITE_ENV) $(LUA) bench/e2e.lua

# The suite, then a scan of everything it printed for the API keys it used.
test: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p build
	set -o pipefail; $(SUITE_ENV) $(BUSTED) $(BUSTED_ARGS) spec 2>&1 | tee build/test-output.txt
	@$(LUA) spec/support/scan_secrets.lua build/test-output.txt

check-memory: deps
	@$(MAKE) --no-print-directory all CFLAGS="-O1 -g"
	@command -v valgrind >/dev/null || apt-get install -y -qq valgrind
	$(SUITE_ENV) OPENAI_USAGE_VALGRIND=1 valgrind -q --leak-check=full --errors-for-leak-kinds=definite \
	  --error-exitcode=99 --suppressions=spec/support/valgrind.supp $(BUSTED) $(BUSTED_ARGS) spec

ASAN_RT = $(shell $(CC) -print-file-name=libasan.so)
UBSAN_RT = $(shell $(CC) -print-file-name=libubsan.so)
check-asan: deps
	@$(MAKE) --no-print-directory all SANITIZE=1 CFLAGS="-O1 -g"
	$(NO_MAKE_ENV) LD_PRELOAD="$(ASAN_RT) $(UBSAN_RT)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" LUA_CPATH="build/sanitize/?.so;;" \
	  OPENAI_USAGE_LUA="$(LUA)" $(BUSTED) $(BUSTED_ARGS) spec

# The specs that run threads (prefetch, async, cancel, SIGINT, two Lua
# states on two threads) against a ThreadSanitizer build of the module. The
# interpreter is spec/support/lua_host.c built with TSan too: preloading the
# runtime into lua5.4, as check-asan does for ASan, preloads it into every
# shell the specs start, and sh crashes under it. Any report fails the run.
TSAN_CC ?= $(CC)
TSAN_SPECS := spec/threads_spec.lua spec/paging_spec.lua spec/async_spec.lua spec/connection_spec.lua \
	spec/interrupt_spec.lua spec/client_spec.lua
build/tsan/lua_host: spec/support/lua_host.c Makefile
	@mkdir -p $(dir $@)
	$(TSAN_CC) -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=thread $(WARN) $(shell $(PKG_CONFIG) --cflags lua5.4) \
	  -o $@ $< $(shell $(PKG_CONFIG) --libs lua5.4)
check-tsan: deps
	@$(MAKE) --no-print-directory all TSAN=1 CC=$(TSAN_CC) LUA_VERSION=5.4 LUA_PKG=lua5.4 CFLAGS="-O1 -g"
	@$(MAKE) --no-print-directory build/tsan/lua_host
	TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1" \
	  LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" LUA_CPATH="build/tsan/?.so;;" \
	  OPENAI_USAGE_LUA=build/tsan/lua_host OPENAI_USAGE_TEST_CFLAGS="-fsanitize=thread" \
	  build/tsan/lua_host /usr/bin/busted $(BUSTED_ARGS) $(TSAN_SPECS)

# The whole suite on every Lua the module supports: 5.4, 5.3, 5.1 and LuaJIT 2.1.
# LuaJIT: OpenResty's branch (luajit2), the one nginx's lua module needs; Debian's
# luajit conflicts with it and would remove libnginx-mod-http-lua.
MATRIX_PACKAGES := lua5.3 liblua5.3-dev lua5.1 liblua5.1-0-dev luajit2 libluajit2-5.1-dev
test-all: deps
	@missing=""; for p in $(MATRIX_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
	  grep -q 'ok installed' || missing="$$missing $$p"; done; \
	[ -z "$$missing" ] || apt-get install -y -qq $$missing >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; }
	@status=0; \
	for row in "5.4 lua5.4 lua5.4 ." "5.3 lua5.3 lua5.3 build/lua5.3" "5.1 lua5.1 lua5.1 build/lua5.1" \
	           "5.1 luajit luajit build/luajit"; do \
	  set -- $$row; echo "=== $$2"; \
	  $(MAKE) --no-print-directory test-one LUA_VERSION=$$1 LUA=$$2 LUA_PKG=$$3 OUTDIR=$$4 || status=1; \
	done; exit $$status

test-one:
	@$(MAKE) --no-print-directory all
	set -o pipefail; $(SUITE_ENV) $(BUSTED) $(BUSTED_ARGS) spec 2>&1 | tee build/test-output-$(LUA).txt
	@$(LUA) spec/support/scan_secrets.lua build/test-output-$(LUA).txt

# libFuzzer harnesses (clang), each run for FUZZ_SECONDS on its seed corpus.
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	$(shell $(PKG_CONFIG) --cflags lua5.4)
FUZZ_LIBS := $(shell $(PKG_CONFIG) --libs lua5.4) -lm
build/fuzz/decode_fuzz: fuzz/decode_fuzz.c src/decode.c src/error.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/decode_fuzz.c src/decode.c src/error.c $(FUZZ_LIBS)
build/fuzz/query_fuzz: fuzz/query_fuzz.c src/query.c src/rules.c src/rules_table.c src/buf.c src/error.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ fuzz/query_fuzz.c src/query.c src/rules.c src/rules_table.c src/buf.c src/error.c $(FUZZ_LIBS)

fuzz: deps
	@command -v $(FUZZ_CC) >/dev/null && dpkg-query -W libclang-rt-14-dev >/dev/null 2>&1 || \
	  apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
	@$(MAKE) --no-print-directory build/fuzz/decode_fuzz build/fuzz/query_fuzz
	@for h in decode query; do \
	  mkdir -p build/fuzz/corpus-$$h; \
	  echo "fuzzing $$h for $(FUZZ_SECONDS) s"; \
	  build/fuzz/$${h}_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -max_len=65536 \
	    -artifact_prefix=build/fuzz/$$h- build/fuzz/corpus-$$h fuzz/seeds/$$h \
	    >build/fuzz/$$h.log 2>&1 || { tail -40 build/fuzz/$$h.log; exit 1; }; \
	  grep -aE '^#[0-9]+[[:space:]]+DONE' build/fuzz/$$h.log | sed "s/^/$$h: /"; \
	  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' build/fuzz/$$h.log | sed "s/^/$$h: /"; \
	done

# Everything a change must pass: the suite, the suite under ASan+UBSan, a short fuzz run.
check: test check-asan
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=60

check-valgrind: check-memory

# The linters, installed when missing (luacheck is not on a new machine).
LINT_PACKAGES := clang-format cppcheck clang-tidy lua-check
lint:
	@missing=""; for p in $(LINT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
	  grep -q 'ok installed' || missing="$$missing $$p"; done; \
	[ -z "$$missing" ] || apt-get install -y -qq $$missing >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; }
	clang-format --dry-run --Werror src/*.c src/*.h
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
	  --suppress=missingIncludeSystem --inline-suppr -D__GNUC__ -DLLONG_MAX=9223372036854775807LL $(shell $(PKG_CONFIG) --cflags-only-I $(LUA_PKG) libcurl) src
	clang-tidy --quiet src/*.c -- -std=c11 -D_GNU_SOURCE $(shell $(PKG_CONFIG) --cflags $(LUA_PKG) libcurl)
	@# .luacheckrc names the files and the hosts' globals; a warning fails lint
	luacheck --no-color .

clean:
	rm -rf build openai_usage
