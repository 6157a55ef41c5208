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
// agencies, data in the named volume server-data, healthy once /probe
// reaches it) and services "client1" ... "clientN" (image
// loteria-agency:latest, CLI_ID=I, its own bets file
// ./.data/agency-I.csv mounted read-only at /.data/agency-I.csv), each
// starting only after the server is healthy. Container names equal the
// service names. All services share the bridge network lottery_net
// (172.25.125.0/24). Images are built locally, so every service has
// pull_policy: never.
//
// The file has no top-level name: or version: key, so it is read the same
// by docker compose (v2) and docker-compose (v1 1.29); the project name
// comes from the caller (make passes -p).
//
// # Choices
//
// Zero agencies gives the server alone, started with --agencies 1 (the
// server rejects 0) and a comment in the file saying no clients were
// generated; such a server waits for an agency started by other means.
//
// At most [MaxAgencies] agencies fit: the /24 network has 253 host
// addresses after the gateway, one of them taken by the server.
package compose
