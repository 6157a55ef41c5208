#!/bin/sh
# The course's check that the server answers: runs the health probe in a
# throwaway container on the server's network (no port published, nothing
# installed on the host) and prints
#   action: test_echo_server | result: success    (exit 0)
#   action: test_echo_server | result: fail       (exit 1)
# the reason for a fail going to stderr.
#
# The network is the first one of the running container named server, so
# the check works however the system was started (make docker-compose-up
# with any PROJECT, or docker compose / docker-compose -f ... up -d from a
# folder of any name); no such container running is a fail.
#
# Environment: NETWORK (use this network instead; the server container is
# then not looked up), SERVER_ADDRESS (default server:12345), SERVER_IMAGE
# (default loteria-eventserver:latest, which carries /probe).
# POSIX sh: sh validar-echo-server.sh, bash ... and ./... all work.
set -u

address=${SERVER_ADDRESS:-server:12345}
image=${SERVER_IMAGE:-loteria-eventserver:latest}

result() { echo "action: test_echo_server | result: $1"; }
fail() {
	echo "validar-echo-server: $*" >&2
	result fail
	exit 1
}

command -v docker >/dev/null 2>&1 || fail "docker is not installed"
if [ -n "${NETWORK:-}" ]; then
	network=$NETWORK
	if ! docker network inspect "$network" >/dev/null 2>&1; then
		docker info >/dev/null 2>&1 || fail "no Docker daemon answers"
		fail "network $network (from NETWORK) not found"
	fi
else
	# One line per network of the container, only while it runs.
	format='{{if .State.Running}}{{range $k, $v := .NetworkSettings.Networks}}{{println $k}}{{end}}{{end}}'
	if ! networks=$(docker inspect --type container -f "$format" server 2>/dev/null); then
		docker info >/dev/null 2>&1 || fail "no Docker daemon answers"
		fail "no container named server: is the system up? (make docker-compose-up)"
	fi
	newline='
'
	network=${networks%%"$newline"*}
	[ -n "$network" ] || fail "the container named server is not running: is the system up? (make docker-compose-up)"
fi
docker image inspect "$image" >/dev/null 2>&1 ||
	fail "image $image not found: build it with make docker-image"

# The probe gives up after 3 s; the outer limit only guards a stuck docker CLI.
limit=
if command -v timeout >/dev/null 2>&1; then
	limit="timeout 30"
fi
out=$($limit docker run --rm --pull never --network "$network" --entrypoint /probe "$image" \
	--server "$address" --timeout 3s 2>&1)
rc=$?
if [ "$rc" -eq 0 ]; then
	case $out in
	*"action: test_echo_server | result: success"*)
		result success
		exit 0
		;;
	esac
fi
fail "probe exited $rc: ${out:-no output}"
