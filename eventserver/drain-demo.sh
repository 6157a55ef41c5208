#!/usr/bin/env bash
# make drain-demo: five agencies upload to the event server on 127.0.0.1; in
# the middle of it the server gets SIGTERM and drains (stops accepting,
# finishes the batches in flight, closes each connection, flushes and fsyncs
# the store, exits 0). It is started again on the same port and data; the
# agencies, which kept retrying, resume where the server's WELCOME says and
# finish. bin/verify then checks the store against the draw's signed
# commitment, the agencies' signed receipts and the agencies' files.
# Secured with the keys in KEYS_DIR (default .keys; bin/keygen writes the
# missing ones, never overwrites one). Needs bin/ (make build); makes its own
# data in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

agencies=5
sizes=60000,60000,40000,30000,5000
batch=40
keys=${KEYS_DIR:-.keys}
work=$(mktemp -d "${TMPDIR:-/tmp}/lottery-drain-demo.XXXXXX")
server_pid=""
agency_pids=()

cleanup() {
  for pid in $server_pid "${agency_pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section() { printf '\n=== %s\n' "$*"; }
show() { sed -e 's/^[0-9-]* [0-9:]* [A-Z]* //' -e 's/^/    /'; }
fail() { printf '\nFAIL: %s\n' "$*"; exit 1; }

for b in eventserver agency gendata verify keygen; do
  [ -x "bin/$b" ] || fail "bin/$b is missing: run make build"
done

# start_server LOG LISTEN starts the server in the background.
start_server() {
  bin/eventserver --listen "$2" --agencies "$agencies" --data-dir "$work/store" --keys "$keys" \
    --shutdown-grace 10s >"$1" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    grep -q "action: listen | result: success" "$1" && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$1"; fail "the server did not start"; }
    sleep 0.1
  done
  fail "the server did not listen within 10s"
}

section "1. Demo data: $agencies agency files ($sizes bets) in $work; keys in $keys"
bin/gendata --dir "$work/files" --agencies "$agencies" --sizes "$sizes" | show
bin/keygen --dir "$keys" --agencies "$agencies" >"$work/keygen.log" 2>&1 || { show <"$work/keygen.log"; fail "bin/keygen failed"; }
grep "action: keygen | result: success | dir:" "$work/keygen.log" | show
mkdir -p "$work/receipts"

section "2. Server up, $agencies agencies uploading (batches of $batch bets)"
start_server "$work/server-1.log" 127.0.0.1:0
addr=$(sed -n 's/.*action: listen | result: success | address: \([^ ]*\).*/\1/p' "$work/server-1.log")
mode=$(grep "action: config | result: success" "$work/server-1.log" | sed -n 's/.* | mode: \([a-z]*\).*/\1/p')
echo "    server listening on $addr (mode: $mode; each agency proves its key, every frame encrypted)"
for i in $(seq 1 "$agencies"); do
  bin/agency --id "$i" --server "$addr" --bets "$work/files/agency-$i.csv" --batch-max-amount "$batch" \
    --key "$keys/agency-$i.key" --server-pub "$keys/server.pub" --sign-pub "$keys/server-sign.pub" \
    --receipt "$work/receipts/agency-$i.json" \
    --retry-base 100ms --retry-max 1s --give-up 60s >"$work/agency-$i.log" 2>&1 &
  agency_pids+=($!)
done
# The whole upload takes about a second here: the signal goes as soon as the
# first batches are in bets.csv (the server's log lines come up to 100 ms later).
for _ in $(seq 1 500); do
  [ -s "$work/store/bets.csv" ] && break
  sleep 0.02
done
[ -s "$work/store/bets.csv" ] || fail "no bet reached bets.csv within 10s"
echo "    $(grep -c . "$work/store/bets.csv" || true) bets in bets.csv so far"

section "3. SIGTERM to the server in the middle of the upload: it drains"
echo "    stop accepting -> finish the batches in flight -> ERROR shutting_down and close each"
echo "    connection -> stop the event loops -> flush, fsync and close the store -> exit 0"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
grep -E "action: (signal|shutdown|session_error|connection_closed|engine_stop|store_drain|file_sync|file_close|store_close|server_exit) " \
  "$work/server-1.log" | show
echo "    server exit status: $status"
[ "$status" -eq 0 ] || fail "the server exited with status $status after SIGTERM"
acked=$(grep "action: apuesta_recibida | result: success" "$work/server-1.log" |
  sed -n 's/.*| stored: \([0-9]*\).*/\1/p' | awk '{s += $1} END {print s + 0}')
on_disk=$(grep -c . "$work/store/bets.csv" || true)
echo "    the server acknowledged $acked bets; bets.csv holds $on_disk rows"
total=$(tr , '\n' <<<"$sizes" | awk '{s += $1} END {print s + 0}')
[ "$acked" -lt "$total" ] || fail "the upload ($total bets) was over before the SIGTERM took effect: nothing left to resume; run again"

section "4. Server down for 2s: the agencies keep retrying"
sleep 2
for i in $(seq 1 "$agencies"); do
  n=$(grep -c "action: connect | result: in_progress" "$work/agency-$i.log" || true)
  last=$({ grep "action: connect | result: in_progress" "$work/agency-$i.log" || true; } | tail -1 | sed 's/.*| attempt: /attempt: /')
  echo "    agency $i: $n × connect | result: in_progress; last: $last"
done

section "5. Server restarted on $addr with the same data"
start_server "$work/server-2.log" "$addr"
grep -E "action: (store_open|store_recover|listen) " "$work/server-2.log" | show
recovered=$(sed -n 's/.*action: store_open | result: success .*| bets: \([0-9]*\).*/\1/p' "$work/server-2.log")
[ "$recovered" = "$acked" ] || fail "the server acknowledged $acked bets before the drain but recovered $recovered"
echo "    recovered $recovered bets = the $acked acknowledged before the drain"

section "6. The agencies resume where WELCOME says and finish"
failed=0
for i in $(seq 1 "$agencies"); do
  if ! wait "${agency_pids[$((i - 1))]}"; then
    failed=1
    echo "    agency $i failed:"
    tail -5 "$work/agency-$i.log" | show
  fi
done
agency_pids=()
for i in $(seq 1 "$agencies"); do
  echo "    agency $i:"
  grep -E "action: (hello|upload|receipt|consulta_ganadores) \| result: success" "$work/agency-$i.log" |
    grep -v "held: 0 |" | show | sed 's/^/  /'
done
[ "$failed" -eq 0 ] || fail "an agency did not finish"

section "7. Server stopped; bin/verify checks the store against the signed commitment, the receipts and the files"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
[ "$status" -eq 0 ] || fail "the restarted server exited with status $status"
receipts=""
for i in $(seq 1 "$agencies"); do
  receipts="$receipts${receipts:+,}$work/receipts/agency-$i.json"
done
echo "    bin/verify --store $work/store --sign-pub $keys/server-sign.pub --receipts <the $agencies receipts> \\"
echo "        --agency-files $work/files/agency-%d.csv --agencies $agencies"
bin/verify --store "$work/store" --sign-pub "$keys/server-sign.pub" --receipts "$receipts" \
  --agency-files "$work/files/agency-%d.csv" --agencies "$agencies" \
  >"$work/verify.log" || { show <"$work/verify.log"; fail "the store differs from the commitment, a receipt or the agency files"; }
show <"$work/verify.log"
# Each agency must have received as many winners as its own file holds winning bets.
for i in $(seq 1 "$agencies"); do
  want=$(sed -n "s/.*action: verify | result: success | agency: $i | .*cant_ganadores: \([0-9]*\).*/\1/p" "$work/verify.log")
  got=$(sed -n 's/.*action: consulta_ganadores | result: success | .*cant_ganadores: \([0-9]*\).*/\1/p' "$work/agency-$i.log")
  [ -n "$want" ] && [ "$got" = "$want" ] || fail "agency $i received $got winners, its file holds $want"
done
printf '\nPASS: secured; drained with exit 0, nothing acknowledged was lost, every bet stored exactly once,\n'
printf '      winners right, the signed commitment and every signed receipt match the store\n'

