#!/usr/bin/env bash
# The course's check that the server answers: runs the health probe in a
# throwaway container on the Compose network (no port published, nothing
# installed on the host) and prints
#   action: test_echo_server | result: success    (exit 0)
#   action: test_echo_server | result: fail       (exit 1)
# the reason for a fail going to stderr.
#
# Environment: PROJECT (Compose project, default tp0; the network is
# <PROJECT>_lottery_net), NETWORK (overrides the network name), SERVER_ADDRESS
# (default server:12345), SERVER_IMAGE (default loteria-eventserver:latest,
# which carries /probe).
set -uo pipefail

project=${PROJECT:-tp0}
network=${NETWORK:-${project}_lottery_net}
address=${SERVER_ADDRESS:-server:12345}
image=${SERVER_IMAGE:-loteria-eventserver:latest}

result() { echo "action: test_echo_server | result: $1"; }
fail() {
	echo "validar-echo-server: $*" >&2
	result fail
	exit 1
}

command -v docker >/dev/null 2>&1 || fail "docker is not installed"
if ! docker network inspect "$network" >/dev/null 2>&1; then
	docker info >/dev/null 2>&1 || fail "no Docker daemon answers"
	fail "network $network not found: is the system up? (make docker-compose-up)"
fi
docker image inspect "$image" >/dev/null 2>&1 ||
	fail "image $image not found: build it with make docker-image"

# The probe gives up after 3 s; the outer limit only guards a stuck docker CLI.
limit=()
command -v timeout >/dev/null 2>&1 && limit=(timeout 30)
out=$(${limit[@]+"${limit[@]}"} docker run --rm --pull never --network "$network" --entrypoint /probe "$image" \
	--server "$address" --timeout 3s 2>&1)
rc=$?
if [[ $rc -eq 0 && $out == *"action: test_echo_server | result: success"* ]]; then
	result success
	exit 0
fi
fail "probe exited $rc: ${out:-no output}"
