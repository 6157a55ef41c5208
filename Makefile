# Lotería Nacional: event server, agencies and tools.
# `make help` lists the targets.

SHELL := /bin/bash
GO ?= go
BIN := bin
AGENCIES ?= 5
DATA_DIR ?= .data
PROJECT ?= tp0
GOFLAGS_BUILD := -trimpath -ldflags "-s -w"
COMMANDS := eventserver/cmd/eventserver eventserver/cmd/probe agency/cmd/agency agency/cmd/gendata \
	compose/cmd/compose bench/cmd/bench agency/cmd/verify secure/cmd/keygen persist/pgstore/cmd/export

.PHONY: help build lint test test-short fuzz data demo drain-demo clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

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

fuzz: ## run the frame decoder fuzzer for FUZZTIME (default 60s)
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(or $(FUZZTIME),60s) ./frame

data: ## synthetic .data/agency-{1..AGENCIES}.csv (never overwrites)
	$(GO) run ./agency/cmd/gendata --dir $(DATA_DIR) --agencies $(AGENCIES)

demo: build data ## server and 5 agencies on 127.0.0.1, winners printed, server stopped
	@bash eventserver/demo.sh

drain-demo: build ## SIGTERM mid-upload, drain, restart, agencies resume, store checked
	@bash eventserver/drain-demo.sh

clean: ## remove binaries (keeps .data)
	rm -rf $(BIN)

# Docker targets (docker-image, docker-compose-up/down/logs, e2e) and the
# benchmark targets (bench, bench-scale) live next to their code.
include compose/docker.mk
include bench/bench.mk
