# Lotería Nacional: event server, agencies and tools.
# `make help` lists the targets.

SHELL := /bin/bash
GO ?= go
BIN := bin
AGENCIES ?= 5
DATA_DIR ?= .data
# Key files (bin/keygen): git-ignored; the Compose files mount them from here.
KEYS_DIR := .keys
PROJECT ?= tp0
GOFLAGS_BUILD := -trimpath -ldflags "-s -w"
COMMANDS := eventserver/cmd/eventserver eventserver/cmd/probe agency/cmd/agency agency/cmd/gendata \
	compose/cmd/compose bench/cmd/bench agency/cmd/verify secure/cmd/keygen persist/pgstore/cmd/export

.PHONY: help build lint test test-short fuzz data keys demo drain-demo clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

build: ## static binaries in bin/
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ $(addprefix ./,$(COMMANDS))

lint: ## gofmt check, go vet, staticcheck
	@unformatted=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*' -not -path './bench/results/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

test: lint ## lint, then every test with -race
	$(GO) test -race -count=1 ./...

FUZZTIME ?= 60s

# fuzz_one PACKAGE TARGET [FLAGS] fuzzes one target for FUZZTIME. Go 1.26's
# fuzz coordinator can fail a clean run at its own -fuzztime deadline with a
# bare "context deadline exceeded" and no failing input (Go issue 75804,
# fixed in Go 1.27): only that run is tried again, at most twice. A real
# finding writes its input under testdata/fuzz and fails at once.
define fuzz_one
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	for try in 1 2 3; do \
	  echo "$(GO) test -run '^$$' -fuzz '^$(2)$$' -fuzztime $(FUZZTIME) $(3) $(1)"; \
	  $(GO) test -run '^$$' -fuzz '^$(2)$$' -fuzztime $(FUZZTIME) $(3) $(1) 2>&1 | tee "$$log"; \
	  [ $${PIPESTATUS[0]} -eq 0 ] && exit 0; \
	  if ! grep -q 'context deadline exceeded' "$$log" || grep -q 'Failing input written to' "$$log"; then exit 1; fi; \
	  echo "fuzz: $(2): Go's fuzz coordinator raced its own deadline, no input failed (Go issue 75804); run $$try of 3"; \
	done; exit 1
endef

fuzz: ## run every fuzzer (decoders: frames, handshake, records both ways, CSV rows; seal/open round trips; X25519 against crypto/ecdh) for FUZZTIME each (default 60s)
	$(call fuzz_one,./frame,FuzzDecode)
	$(call fuzz_one,./secure,FuzzServerConn,-fuzzminimizetime 5s)
	$(call fuzz_one,./secure,FuzzOpen,-fuzzminimizetime 5s)
	$(call fuzz_one,./secure,FuzzClientConn,-fuzzminimizetime 5s)
	$(call fuzz_one,./secure,FuzzRoundTrip,-fuzzminimizetime 5s)
	$(call fuzz_one,./secure,FuzzX25519)
	$(call fuzz_one,./persist/filestore,FuzzRowRoundTrip)

data: ## synthetic .data/agency-{1..AGENCIES}.csv (never overwrites)
	$(GO) run ./agency/cmd/gendata --dir $(DATA_DIR) --agencies $(AGENCIES)

keys: build ## key files for the server and AGENCIES agencies in .keys/ (adds missing ones, never overwrites)
	$(BIN)/keygen --dir $(KEYS_DIR) --agencies $(AGENCIES)

demo: build data ## server and 5 agencies on 127.0.0.1, secured, winners and metrics printed, server stopped
	@KEYS_DIR=$(KEYS_DIR) bash eventserver/demo.sh

drain-demo: build ## secured; SIGTERM mid-upload, drain, restart, agencies resume, store and receipts checked
	@KEYS_DIR=$(KEYS_DIR) bash eventserver/drain-demo.sh

clean: ## remove binaries (keeps .data and .keys)
	rm -rf $(BIN)

# Docker targets (docker-image, docker-compose-up/down/logs, e2e) and the
# benchmark targets (bench, bench-scale) live next to their code.
include compose/docker.mk
include bench/bench.mk
