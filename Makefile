# pptpgw: `make demo` and `make test` are the two quick-start commands.
# Both install what is missing (Debian packages, as root) before they run.

GO      ?= $(shell command -v go || echo /usr/local/go/bin/go)
PKGS    := pptp-linux pptpd iperf3 nftables iptables tshark iproute2 prometheus conntrack
BIN     := bin/pptpgw
FUZZTIME ?= 10s
FUZZMINIMIZETIME ?= 5s

.PHONY: all deps build demo test bench fuzz clean install

all: build

# deps installs the third-party peers and tools the tests and the demo use.
deps:
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build:
	$(GO) build -o $(BIN) ./cmd/pptpgw

# demo: 3 pptp-linux clients behind the gateway call one pptpd (needs root).
demo: deps build
	./$(BIN) demo

# test: every unit, fuzz-seed, and (as root) network-namespace integration test.
# Packages run one at a time (-p 1): the netns tests compare throughput
# (pptpgw vs kernel masquerade) within one run, and another package's load on
# a 2-core machine would only add noise. The gateway suite (testbed) runs a
# second time with every gateway on the userspace GRE path (gre_path:
# userspace; tests of the kernel path pin --gre-path kernel), so both paths
# stay tested. The whole run takes about six minutes.
test: deps
	$(GO) vet ./...
	$(GO) test -p 1 -count=1 -timeout 25m ./...
	PPTPGW_TEST_GRE_PATH=userspace $(GO) test -p 1 -count=1 -timeout 15m ./testbed

# bench: the performance table of the README (needs root).
bench: deps build
	$(GO) test -run '^$$' -bench . -benchmem ./...
	./$(BIN) bench

# fuzz: every fuzz target, one after another, for FUZZTIME each, on one core
# (make fuzz FUZZTIME=30s). make test already runs their seed corpora.
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZMINIMIZETIME=$(FUZZMINIMIZETIME) .ci/fuzz

clean:
	rm -rf bin

# install: the binary, the systemd units and example configs (an existing
# config is never overwritten). PREFIX=/usr for a package, DESTDIR to stage
# (make install DESTDIR=/tmp/stage PREFIX=/usr). Then:
#   systemctl daemon-reload && systemctl enable --now pptpgw
PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/pptpgw
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	for u in pptpgw.service pptpgw-serve.service; do \
		sed -e 's#@SBINDIR@#$(SBINDIR)#g' -e 's#@SYSCONFDIR@#$(SYSCONFDIR)#g' dist/$$u > $(DESTDIR)$(UNITDIR)/$$u; \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; \
	done
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/pptpgw
	for c in pptpgw.yaml serve.yaml; do \
		[ -e $(DESTDIR)$(SYSCONFDIR)/pptpgw/$$c ] || install -m 0640 dist/$$c $(DESTDIR)$(SYSCONFDIR)/pptpgw/$$c; \
	done
