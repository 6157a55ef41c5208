# Docker targets, included by the top-level Makefile (which sets AGENCIES,
# DATA_DIR, PROJECT and BIN).
#
# Compose file: AGENCIES=5 (the default) uses the committed
# docker-compose-dev.yaml; any other count is generated into
# $(BIN)/docker-compose-<N>.yaml on every up/down. COMPOSE_YAML=<file>
# overrides both. Relative paths in the file are taken from the repository
# root (--project-directory), wherever the file lives.
#
# The agencies' bets are always read from ./.data (the Compose file mounts
# .data/agency-I.csv), whatever DATA_DIR says.

DOCKER ?= docker
SERVER_IMAGE := loteria-eventserver:latest
AGENCY_IMAGE := loteria-agency:latest
COMPOSE_YAML ?= $(if $(filter 5,$(AGENCIES)),docker-compose-dev.yaml,$(BIN)/docker-compose-$(AGENCIES).yaml)

# `docker compose` (v2) when the CLI has it, else `docker-compose` (v1);
# looked up once, and only by the targets that use it.
COMPOSE = $(eval COMPOSE := $(shell \
	if $(DOCKER) compose version >/dev/null 2>&1; then echo "$(DOCKER) compose"; \
	elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi))$(COMPOSE)
COMPOSE_CMD = $(COMPOSE) -p $(PROJECT) -f $(COMPOSE_YAML) --project-directory $(CURDIR)

.PHONY: docker-image docker-compose-check docker-compose-file docker-compose-data docker-compose-up docker-compose-down \
	docker-compose-logs docker-compose-restart e2e

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
	@missing=0; for i in $$(seq 1 $(AGENCIES)); do [ -f .data/agency-$$i.csv ] || missing=1; done; \
	if [ $$missing = 1 ]; then $(MAKE) --no-print-directory data AGENCIES=$(AGENCIES) DATA_DIR=.data; fi
	@unreadable=$$(for i in $$(seq 1 $(AGENCIES)); do [ -z "$$(find .data/agency-$$i.csv -perm -o=r)" ] && echo .data/agency-$$i.csv; done); \
	if [ -n "$$unreadable" ]; then \
		echo "error: the agencies run as uid 65534 and cannot read:" $$unreadable >&2; \
		echo "fix: chmod o+r .data/agency-*.csv" >&2; exit 1; \
	fi

docker-compose-up: docker-compose-check docker-image docker-compose-file docker-compose-data ## build images, make data if missing, start server and AGENCIES clients
	$(COMPOSE_CMD) up -d --remove-orphans
	@echo "started project $(PROJECT) from $(COMPOSE_YAML): make docker-compose-logs to follow, make docker-compose-down to stop"

docker-compose-down: docker-compose-check docker-compose-file ## stop (SIGTERM, 10 s to drain), remove containers, network and the data volume
	$(COMPOSE_CMD) stop -t 10
	$(COMPOSE_CMD) down -v --remove-orphans

docker-compose-logs: docker-compose-check docker-compose-file ## follow the logs of every container
	$(COMPOSE_CMD) logs -f

docker-compose-restart: docker-compose-check docker-compose-file ## restart SERVICE (default server): re-reads its config.yaml, keeps the bets
	$(COMPOSE_CMD) restart -t 10 $(or $(SERVICE),server)

e2e: ## end to end in Docker: 5 agencies, winners, draw, drain, echo check
	@MAKE="$(MAKE)" DOCKER="$(DOCKER)" COMPOSE="$(COMPOSE)" bash compose/e2e.sh
