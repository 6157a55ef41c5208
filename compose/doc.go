// Package compose writes the Docker Compose file that runs the lottery server
// and N betting agencies on one private network.
//
// The output is plain YAML text written in a fixed order, so the same
// [Options] always give byte-identical files; the committed
// docker-compose-dev.yaml (5 agencies) is checked against it by the tests.
//
// # Usage
//
// From the repository root, the course's interface:
//
//	./generar-compose.sh docker-compose-dev.yaml 5
//
// or the generator itself (stdout when --output is omitted or "-"):
//
//	go build -o bin/compose ./compose/cmd/compose
//	bin/compose --agencies 5 --output docker-compose-dev.yaml
//
// # What is generated
//
// A service "server" (image loteria-eventserver:latest, told to expect N
// agencies, data in the named volume server-data) and services "client1" ...
// "clientN" (image loteria-agency:latest, CLI_ID=I, its own bets file
// ./.data/agency-I.csv mounted read-only at /.data/agency-I.csv, the
// course's agency/config.yaml unchanged), each starting only after the server
// is healthy. Container names equal the service names. All services share the
// bridge network lottery_net (172.25.125.0/24). Images are built locally, so
// every service has pull_policy: never. Host paths are bind mounts in the
// long syntax: a missing file stops Compose with an error, where the short
// syntax would have Docker create a root-owned directory in its place.
//
// # Keys, receipts and the container user
//
// Everything runs secured. bin/keygen writes the keys into [KeysDir]; each
// container mounts, read-only under /keys, only what it needs:
//
//   - clientI: agency-I.key, server.pub and server-sign.pub, named by
//     CLI_KEY, CLI_SERVER_PUB and CLI_SIGN_PUB (environment, never the
//     config file); its receipt goes to /receipts/agency-I.json (CLI_RECEIPT),
//     a writable bind mount of [ReceiptsDir]/agency-I, one folder per agency
//     so no agency can touch another's receipt;
//   - server: server.key, server-sign.key and agency-1.pub ... agency-N.pub,
//     exactly what --keys /keys reads.
//
// The containers run as uid 65534, not as the person who ran keygen, and
// keygen writes private keys with mode 0600. Rather than making them
// world-readable, or changing their owner (which needs root), the private
// keys are opened to one group: make docker-compose-keys sets them to mode
// 0640 and group [GroupVariable] (the user's primary group unless set), make
// docker-compose-receipts makes the receipt folders mode 2770 with that
// group, and every service has
//
//	group_add: ["${KEYS_GID:-0}"]
//
// which Compose (v1 and v2) interpolates when it starts the containers. The
// committed file therefore names no host's group; the Makefile exports
// KEYS_GID=$(id -g). Running docker compose by hand needs the same export
// (unset, the group is 0, which only works for root's files). Costs: the
// private keys are readable by the members of that group on the host (with
// the usual one-group-per-user setup, nobody else), and rootless Docker, where
// host groups do not map into the container, is not supported.
//
// A file bind mount keeps the file it found when the container started, so a
// key replaced on the host by a new file (as keygen writes them) reaches the
// server at its next restart (make docker-compose-restart), not on SIGHUP.
//
// # Health, restarts, metrics
//
// The server runs with --metrics-listen 0.0.0.0:[MetricsPort]; its health
// check is readiness, /probe --http http://127.0.0.1:9090/readyz (the image
// has no curl), so the agencies start once the server accepts agencies and
// its store can write. The port is reachable on lottery_net only; the
// override compose/publish-metrics.yaml (make docker-compose-up
// METRICS_PORT=9090) publishes it on the host's 127.0.0.1. validar-echo-server.sh
// keeps using /probe's PING mode, which needs no key.
//
// The server has restart: on-failure: it is crash-only (a failed store
// makes it exit 1) and recovery runs at start, on the same volume. The
// agencies have restart: "no": one that exits has finished, or needs a
// person.
//
// # Choices
//
// Zero agencies gives the server alone, started with --agencies 1 (the
// server rejects 0, and it mounts agency-1.pub) and a comment in the file
// saying no clients were generated; such a server waits for an agency
// started by other means.
//
// At most [MaxAgencies] agencies fit: the /24 network has 253 host
// addresses after the gateway, one of them taken by the server.
package compose
