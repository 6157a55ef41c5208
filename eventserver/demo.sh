#!/usr/bin/env bash
# make demo: the event server and 5 agencies on 127.0.0.1 over .data/,
# secured with the keys in KEYS_DIR (default .keys; bin/keygen writes the
# missing ones and never overwrites one), the server's metrics on a free port
# of 127.0.0.1. Prints the draw, each agency's winners with the root it was
# given, a few metrics, then stops the server with SIGTERM.
# Needs bin/ (make build) and .data/agency-I.csv (make data).
set -euo pipefail
cd "$(dirname "$0")/.."

agencies=${AGENCIES:-5}
keys=${KEYS_DIR:-.keys}
work=$(mktemp -d "${TMPDIR:-/tmp}/lottery-demo.XXXXXX")
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for b in eventserver agency keygen probe; do
  [ -x "bin/$b" ] || { echo "bin/$b is missing: run make build" >&2; exit 1; }
done
for i in $(seq 1 "$agencies"); do
  [ -f ".data/agency-$i.csv" ] || { echo "missing .data/agency-$i.csv: run make data" >&2; exit 1; }
done

# log_field LOG ACTION FIELD prints FIELD of the last successful ACTION line.
log_field() {
  { grep "action: $2 | result: success" "$1" || true; } | tail -1 | sed -n "s/.* | $3: \([^ ]*\).*/\1/p"
}

echo "== keys in $keys (bin/keygen adds the missing ones, never overwrites one)"
bin/keygen --dir "$keys" --agencies "$agencies" >"$work/keygen.log" 2>&1 || { cat "$work/keygen.log"; exit 1; }
grep -h "action: keygen | result: success | dir:" "$work/keygen.log" | sed 's/^.*action: /   /'

echo "== starting the event server, secured (data in $work)"
bin/eventserver --listen 127.0.0.1:0 --agencies "$agencies" --data-dir "$work/data" \
  --keys "$keys" --metrics-listen 127.0.0.1:0 >"$work/server.log" 2>&1 &
server_pid=$!
addr=""
for _ in $(seq 1 100); do
  addr=$(log_field "$work/server.log" listen address)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start"; cat "$work/server.log"; exit 1; }
metrics=$(log_field "$work/server.log" metrics_listen address)
echo "   listening on $addr ($(log_field "$work/server.log" config mode))"
echo "   metrics: http://$metrics/metrics (health: /healthz, readiness: /readyz)"

echo "== uploading $agencies agencies' bets"
pids=()
for i in $(seq 1 "$agencies"); do
  bin/agency --id "$i" --server "$addr" --key "$keys/agency-$i.key" --server-pub "$keys/server.pub" \
    --receipt "$work/receipt-$i.json" >"$work/agency-$i.log" 2>&1 &
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
# The server writes its log every 100 ms (logging stays off the event
# loops), so its sorteo line may reach the file just after the agencies
# exit: wait for it rather than read too soon.
root=""
for _ in $(seq 1 50); do
  root=$(log_field "$work/server.log" sorteo root)
  [ -n "$root" ] && break
  sleep 0.1
done
grep -h "action: sorteo" "$work/server.log" || echo "no sorteo line in the server's log"
for i in $(seq 1 "$agencies"); do
  grep -h "action: consulta_ganadores | result: success" "$work/agency-$i.log" || echo "agency $i: no winners line"
  got=$(log_field "$work/agency-$i.log" consulta_ganadores root)
  if [ -z "$root" ] || [ "$got" != "$root" ]; then
    failed=1
    echo "agency $i got root '$got', the server's sorteo line says '$root'"
  fi
done
[ "$failed" -ne 0 ] || echo "   every agency holds the draw's root ${root:0:16}... (bin/verify checks their receipts against it)"

echo "== metrics (http://$metrics/metrics)"
if bin/probe --http "http://$metrics/metrics" --body >"$work/metrics.txt" 2>"$work/metrics.err"; then
  grep -E '^lottery_(bets_stored_total|agencies|agencies_finished|commit_duration_seconds_count|commit_bets_sum|connections)[ {]' \
    "$work/metrics.txt" | sed 's/^/   /'
else
  failed=1
  echo "cannot scrape the metrics: $(cat "$work/metrics.err")"
fi

echo "== stopping the server (SIGTERM)"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
grep -h "action: shutdown | result: success" "$work/server.log" || true
echo "   server exited with status $status"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ] || exit 1
