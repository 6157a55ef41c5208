#!/usr/bin/env bash
# make demo: the event server and 5 agencies on 127.0.0.1 over .data/,
# each agency's winners printed, then the server stopped with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

agencies=${AGENCIES:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/lottery-demo.XXXXXX")
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for i in $(seq 1 "$agencies"); do
  [ -f ".data/agency-$i.csv" ] || { echo "missing .data/agency-$i.csv: run make data" >&2; exit 1; }
done

echo "== starting the event server (data in $work)"
bin/eventserver --listen 127.0.0.1:0 --agencies "$agencies" --data-dir "$work/data" >"$work/server.log" 2>&1 &
server_pid=$!
addr=""
for _ in $(seq 1 100); do
  addr=$(sed -n 's/.*action: listen | result: success | address: \([^ ]*\).*/\1/p' "$work/server.log")
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start"; cat "$work/server.log"; exit 1; }
echo "   listening on $addr"

echo "== uploading $agencies agencies' bets"
pids=()
for i in $(seq 1 "$agencies"); do
  bin/agency --id "$i" --server "$addr" >"$work/agency-$i.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in $(seq 1 "$agencies"); do
  if ! wait "${pids[$((i - 1))]}"; then
    failed=1
    echo "agency $i failed:"; tail -5 "$work/agency-$i.log"
  fi
done

echo "== winners"
grep -h "action: sorteo" "$work/server.log" || true
for i in $(seq 1 "$agencies"); do
  grep -h "action: consulta_ganadores | result: success" "$work/agency-$i.log" || echo "agency $i: no winners line"
done

echo "== stopping the server (SIGTERM)"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
grep -h "action: shutdown | result: success" "$work/server.log" || true
echo "   server exited with status $status"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ] || exit 1
