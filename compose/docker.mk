# Docker targets, included by the top-level Makefile (which sets AGENCIES,
# DATA_DIR, KEYS_DIR, PROJECT and BIN).
#
# Compose file: AGENCIES=5 (the default) uses the committed
# docker-compose-dev.yaml; any other count is generated into
# $(BIN)/docker-compose-<N>.yaml on every up/down. COMPOSE_YAML=<file>
# overrides both. Relative paths in the file are taken from the repository
# root (--project-directory), wherever the file lives. Data, keys and receipt
# folders are made for the agencies the file runs (its client services).
#
# The agencies' bets are always read from ./.data (the Compose file mounts
# .data/agency-I.csv), whatever DATA_DIR says.
#
# Keys and receipts: the Compose file mounts, read-only, each agency's own
# private key and the server's public keys into that agency's container, and
# the server's two private keys and the agencies' public keys into the
# server's, all from .keys/ (docker-compose-keys writes the missing ones with
# bin/keygen). Each agency saves its receipt in .data/receipts/agency-I/, a
# writable bind mount (docker-compose-receipts makes them). The containers run
# as uid 65534, not as you, so both are opened to one group, KEYS_GID (your
# primary group unless set): the private keys become mode 0640 (never
# world-readable), the receipt folders 2770, and every container gets that
# group as an extra group (group_add, interpolated by Compose at run time, so
# the committed Compose file holds no host's group number).
#
# METRICS_PORT=<port> publishes the server's metrics port on the host's
# 127.0.0.1 (the override compose/publish-metrics.yaml); without it the port
# is reachable on the Compose network only, as http://server:9090/metrics.

DOCKER ?= docker
SERVER_IMAGE := loteria-eventserver:latest
AGENCY_IMAGE := loteria-agency:latest
COMPOSE_YAML ?= $(if $(filter 5,$(AGENCIES)),docker-compose-dev.yaml,$(BIN)/docker-compose-$(AGENCIES).yaml)
# Fixed by the Compose file (package compose: KeysDir, ReceiptsDir).
RECEIPTS_DIR := .data/receipts

# `docker compose` (v2) when the CLI has it, else `docker-compose` (v1);
# looked up once, and only by the targets that use it.
COMPOSE = $(eval COMPOSE := $(shell \
	if $(DOCKER) compose version >/dev/null 2>&1; then echo "$(DOCKER) compose"; \
	elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi))$(COMPOSE)
COMPOSE_FILES = -f $(COMPOSE_YAML) $(if $(METRICS_PORT),-f compose/publish-metrics.yaml)
COMPOSE_CMD = $(COMPOSE) -p $(PROJECT) $(COMPOSE_FILES) --project-directory $(CURDIR)

# The group that may read the mounted private keys and write the receipts;
# Compose reads it from the environment (group_add: ${KEYS_GID:-0}).
KEYS_GID ?= $(shell id -g)
export KEYS_GID
export METRICS_PORT
# The agencies the Compose file runs (its client services), once
# docker-compose-file has written it: data, keys and receipt folders are made
# for those, so a file ./generar-compose.sh wrote for another count (say over
# docker-compose-dev.yaml) starts too. AGENCIES when the file cannot be read.
STACK_AGENCIES = $(shell n=$$(grep -cE '^  client[0-9]+:' $(COMPOSE_YAML) 2>/dev/null) || [ "$$n" = 0 ]; echo $${n:-$(AGENCIES)})
# The server expects at least one agency, so there is always agency-1's key.
COMPOSE_AGENCIES = $(if $(filter 0,$(STACK_AGENCIES)),1,$(STACK_AGENCIES))

.PHONY: docker-image docker-compose-check docker-compose-file docker-compose-data docker-compose-keys \
	docker-compose-receipts docker-compose-up docker-compose-down docker-compose-logs docker-compose-restart \
	docker-compose-rotate-key e2e

# Each rebuild with new binaries leaves the previous image untagged; those
# (and only those: dangling, with our title label) are pruned.
docker-image: build ## server and agency images (FROM scratch, from bin/)
	$(DOCKER) build -f eventserver/Dockerfile -t $(SERVER_IMAGE) .
	$(DOCKER) build -f agency/Dockerfile -t $(AGENCY_IMAGE) .
	@$(DOCKER) image prune -f --filter label=org.opencontainers.image.title=loteria-eventserver >/dev/null
	@$(DOCKER) image prune -f --filter label=org.opencontainers.image.title=loteria-agency >/dev/null

# Fails early, with the fix, when no Compose is installed.
docker-compose-check:
	@if [ -z "$(COMPOSE)" ]; then \
		echo "error: neither 'docker compose' (v2) nor 'docker-compose' (v1) was found; install one of them" >&2; \
		exit 1; \
	fi

# Writes the Compose file for AGENCIES unless it is the committed one.
docker-compose-file:
	@case "$(AGENCIES)" in ''|*[!0-9]*) echo "error: AGENCIES must be a number, got '$(AGENCIES)'" >&2; exit 2;; esac
	@if [ "$(COMPOSE_YAML)" = "$(BIN)/docker-compose-$(AGENCIES).yaml" ]; then \
		mkdir -p $(BIN) && ./generar-compose.sh $(COMPOSE_YAML) $(AGENCIES); \
	fi

# Generates .data/agency-I.csv for the agencies that lack one (make data
# never overwrites) and checks that the container user (65534) can read them.
docker-compose-data:
	@missing=0; for i in $$(seq 1 $(STACK_AGENCIES)); do [ -f .data/agency-$$i.csv ] || missing=1; done; \
	if [ $$missing = 1 ]; then $(MAKE) --no-print-directory data AGENCIES=$(STACK_AGENCIES) DATA_DIR=.data; fi
	@unreadable=$$(for i in $$(seq 1 $(STACK_AGENCIES)); do [ -z "$$(find .data/agency-$$i.csv -perm -o=r)" ] && echo .data/agency-$$i.csv; done); \
	if [ -n "$$unreadable" ]; then \
		echo "error: the agencies run as uid 65534 and cannot read:" $$unreadable >&2; \
		echo "fix: chmod o+r .data/agency-*.csv" >&2; exit 1; \
	fi

# Writes the missing keys (keygen never overwrites one) and opens the private
# keys the containers mount to KEYS_GID: group-readable, never world-readable.
docker-compose-keys: build
	@case "$(KEYS_GID)" in ''|*[!0-9]*) echo "error: KEYS_GID must be a group number, got '$(KEYS_GID)'" >&2; exit 2;; esac
	$(BIN)/keygen --dir $(KEYS_DIR) --agencies $(COMPOSE_AGENCIES)
	@private="$(KEYS_DIR)/server.key $(KEYS_DIR)/server-sign.key $$(for i in $$(seq 1 $(COMPOSE_AGENCIES)); do printf '%s ' $(KEYS_DIR)/agency-$$i.key; done)"; \
	chgrp $(KEYS_GID) $$private && chmod 0640 $$private || { \
		echo "error: cannot give group $(KEYS_GID) read access to the private keys in $(KEYS_DIR)/;" \
			"set KEYS_GID to a group you belong to (id -G lists them)" >&2; exit 1; }

# One folder per agency for its receipt, writable by KEYS_GID (setgid, so the
# receipts the containers write belong to that group too).
docker-compose-receipts:
	@for i in $$(seq 1 $(STACK_AGENCIES)); do \
		d=$(RECEIPTS_DIR)/agency-$$i; \
		mkdir -p $$d && chgrp $(KEYS_GID) $$d && chmod 2770 $$d || { \
			echo "error: cannot make $$d writable by group $(KEYS_GID); set KEYS_GID to a group you belong to" >&2; exit 1; }; \
	done

docker-compose-up: docker-compose-check docker-image docker-compose-file docker-compose-data docker-compose-keys docker-compose-receipts ## build images, make data and keys if missing, start server and AGENCIES clients
	$(COMPOSE_CMD) up -d --remove-orphans
	@echo "started project $(PROJECT) from $(COMPOSE_YAML): make docker-compose-logs to follow, make docker-compose-down to stop"
	@echo "receipts: $(RECEIPTS_DIR)/agency-I/agency-I.json; metrics: http://server:9090/metrics on the Compose network$(if $(METRICS_PORT), and http://127.0.0.1:$(METRICS_PORT)/metrics here)"

docker-compose-down: docker-compose-check docker-compose-file ## stop (SIGTERM, 10 s to drain), remove containers, network and the data volume
	$(COMPOSE_CMD) stop -t 10
	$(COMPOSE_CMD) down -v --remove-orphans

docker-compose-logs: docker-compose-check docker-compose-file ## follow the logs of every container
	$(COMPOSE_CMD) logs -f

docker-compose-restart: docker-compose-check docker-compose-file ## restart SERVICE (default server): re-reads its config.yaml and key files, keeps the bets
	$(COMPOSE_CMD) restart -t 10 $(or $(SERVICE),server)

# A new key pair for agency AGENCY while everything runs: bin/keygen writes it
# in a scratch folder and it is copied over .keys/agency-AGENCY.{key,pub} in
# place, keeping their mode and group. In place matters: the containers
# bind-mount those files, and a bind mount keeps showing the file it started
# with, so a file replaced by a new one (a rename) would stay hidden from
# them. Then the server re-reads the agencies' public keys on SIGHUP.
docker-compose-rotate-key: docker-compose-check docker-compose-file build ## new key pair for AGENCY, live: the server reloads its keys on SIGHUP; restart clientAGENCY to use it
	@case "$(AGENCY)" in ''|0|*[!0-9]*) echo "error: AGENCY must be an agency number, got '$(AGENCY)'" >&2; exit 2;; esac
	@for f in $(KEYS_DIR)/agency-$(AGENCY).key $(KEYS_DIR)/agency-$(AGENCY).pub; do \
		[ -f $$f ] || { echo "error: $$f does not exist; make docker-compose-up writes the keys" >&2; exit 1; }; \
	done
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(BIN)/keygen --dir "$$tmp" --only $(AGENCY) >/dev/null && \
		cp "$$tmp/agency-$(AGENCY).key" $(KEYS_DIR)/agency-$(AGENCY).key && \
		cp "$$tmp/agency-$(AGENCY).pub" $(KEYS_DIR)/agency-$(AGENCY).pub
	$(COMPOSE_CMD) kill -s SIGHUP server
	@echo "agency $(AGENCY) has a new key pair and the server reloaded the public keys (its log: keys_reload);" \
		"the old key is refused from now on. make docker-compose-restart SERVICE=client$(AGENCY) runs the agency with the new one."

e2e: ## end to end in Docker, secured: 5 agencies, winners, receipts, readiness, crash restart, drain, echo check
	@MAKE="$(MAKE)" DOCKER="$(DOCKER)" COMPOSE="$(COMPOSE)" bash compose/e2e.sh
