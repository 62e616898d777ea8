# dfw — distributed firewall for Linux bridges.
#
#   make            build dfwd, dfwctl, dfw-lab into build/
#   make check      install missing packages, run unit tests (plain and under
#                   ASan+UBSan) and the real-kernel tests in private namespaces
#   make demo       a simulated VDI host: tag a desktop, watch it get isolated
#   make bench      benchmarks at datacenter scale: figures on stdout and in
#                   bench-results.json (docs/PERFORMANCE.md); `make check`
#                   runs a tiny version of each so they cannot rot
#   make SAN=1      build with AddressSanitizer + UndefinedBehaviorSanitizer
#   make V=1        show the commands
#
# -Werror is on when CI=true or WERROR=1.

DEB_PKGS := gcc make pkg-config libnftnl-dev libmnl-dev libnl-3-dev \
	libnl-route-3-dev libcunit1-dev libsqlite3-dev \
	etcd-server libcurl4-openssl-dev libjansson-dev curl \
	nftables iproute2 iputils-ping netcat-openbsd conntrack procps iperf3 sqlite3 \
	python3 jq

PKG_LIBS := libnftnl libmnl libnl-3.0 libnl-route-3.0 sqlite3 libcurl jansson

ifeq ($(SAN),1)
BUILD ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
else
BUILD ?= build
SANFLAGS :=
endif

ifneq ($(filter true 1,$(CI) $(WERROR)),)
WERR := -Werror
endif

CC ?= cc
PKG_CFLAGS = $(shell pkg-config --cflags $(PKG_LIBS) 2>/dev/null)
PKG_LDLIBS = $(shell pkg-config --libs $(PKG_LIBS) 2>/dev/null)
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wformat=2 -Wmissing-prototypes \
	-Wstrict-prototypes -Wpointer-arith -Wwrite-strings -Wundef \
	-Wno-unused-parameter -Wno-missing-field-initializers \
	$(WERR) $(SANFLAGS) -I. $(PKG_CFLAGS) -MMD -MP
LDFLAGS += $(SANFLAGS)
LDLIBS += $(PKG_LDLIBS) -pthread

ifneq ($(V),1)
Q := @
quiet = @printf '  %-7s %s\n' $(1) $(2);
endif

LIB_SRCS := $(wildcard common/*.c groups/*.c tagger/*.c) \
	$(filter-out dfw/dfwd.c dfw/dfwctl.c,$(wildcard dfw/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
LAB_SRCS := $(filter-out sim/dfw-lab.c sim/dfw-gen.c sim/dfw-scan.c,$(wildcard sim/*.c))
UNIT_SRCS := $(wildcard tests/unit/*.c)
BENCH_SRCS := $(filter-out tests/bench/bench.c,$(wildcard tests/bench/bench-*.c))
BENCHES := $(BENCH_SRCS:tests/bench/%.c=$(BUILD)/%)

PROGS := $(BUILD)/dfwd $(BUILD)/dfwctl $(BUILD)/dfw-lab $(BUILD)/dfw-gen $(BUILD)/dfw-scan
UNIT := $(BUILD)/unit-tests

all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(call quiet,CC,$<)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libdfw.a: $(LIB_OBJS)
	$(call quiet,AR,$@)rm -f $@ && ar rcs $@ $^

$(BUILD)/dfwd: $(BUILD)/dfw/dfwd.o $(BUILD)/libdfw.a
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/dfwctl: $(BUILD)/dfw/dfwctl.o $(BUILD)/libdfw.a
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/dfw-lab: $(BUILD)/sim/dfw-lab.o $(LAB_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/libdfw.a
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/dfw-scan: $(BUILD)/sim/dfw-scan.o $(BUILD)/sim/scanner.o $(BUILD)/libdfw.a
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/dfw-gen: $(BUILD)/sim/dfw-gen.o $(BUILD)/libdfw.a
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Each tests/bench/bench-NAME.c is one program; tests/bench/bench.c is the
# shared reporting code.
# Each needs dfw-gen (it writes the synthetic datacenters) beside it.
$(BUILD)/bench-%: $(BUILD)/tests/bench/bench-%.o $(BUILD)/tests/bench/bench.o $(BUILD)/libdfw.a | $(BUILD)/dfw-gen
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The detection benchmark writes the lab's test signatures (sim/scanner.c)
# and probes from two threads.
$(BUILD)/bench-detect: $(BUILD)/tests/bench/bench-detect.o $(BUILD)/tests/bench/bench.o $(BUILD)/sim/scanner.o $(BUILD)/libdfw.a | $(BUILD)/dfw-lab $(BUILD)/dfw-scan $(BUILD)/dfwd $(BUILD)/dfwctl
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -pthread -o $@ $^ $(LDLIBS)

# The cluster benchmark drives dfw-lab (and so dfwd, dfwctl, dfw-scan).
$(BUILD)/bench-cluster: | $(BUILD)/dfw-lab $(BUILD)/dfw-scan $(BUILD)/dfwd $(BUILD)/dfwctl

# The scanner (the simulated security appliance) lives in sim/ and is
# unit-tested like the libraries.
$(UNIT): $(UNIT_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/sim/scanner.o $(BUILD)/libdfw.a
	$(call quiet,LD,$@)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcunit

# Installs the Debian packages the build, the tests and the demo need, only
# when some are missing (needs root, as the kernel tests do anyway).
deps:
	$(Q)missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The store's etcd tests need an etcd: the driver starts a private one.
unit: $(UNIT)
	$(Q)tests/unit/with-etcd.sh $(UNIT)

check: deps
	$(Q)$(MAKE) --no-print-directory all $(UNIT)
	$(Q)tests/unit/with-etcd.sh $(UNIT)
	$(Q)$(MAKE) --no-print-directory SAN=1 $(BUILD:build=build-san)/unit-tests
	$(Q)ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/unit/with-etcd.sh build-san/unit-tests
	$(Q)tests/kernel/run.sh $(BUILD)
	$(Q)$(MAKE) --no-print-directory $(BENCHES)
	$(Q)tests/bench/run.sh $(BUILD) --tiny

bench: deps
	$(Q)$(MAKE) --no-print-directory all $(BENCHES)
	$(Q)tests/bench/run.sh $(BUILD)

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)sim/demo.sh $(BUILD)

clean:
	rm -rf build build-san

.PHONY: all deps unit check bench demo clean

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
