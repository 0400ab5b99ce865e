#!/usr/bin/env bash
# Scale-out without Kubernetes: three convserve-server processes on free loopback ports, one
# client with round-robin over them (`convserve --url a,b,c`).
#   1. every bundled test image is classified once; each server's ModelStatistics shows it served
#      a share, and the shares add up to the number of images;
#   2. classify loops run while one server is killed (SIGKILL, a crash) mid-run, and
#   3. while another gets SIGTERM (a graceful stop, as in a rolling update): every request the
#      client retries (UNAVAILABLE on the next target, client/README.md) succeeds, none is lost;
#      the stopped server exits 0 after finishing its requests.
# Usage: scale_out_test.sh CONVSERVE_SERVER CONVSERVE_CLIENT SOURCE_DIR
# Exit 77 (skipped) when the bundled models or test images are missing.
set -euo pipefail

server_bin=$(realpath "$1")
client_bin=$(realpath "$2")
source_dir=$(realpath "$3")
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

repository=$source_dir/models/repository
images=$source_dir/tests/data/images
model=$(pick_model "$repository" || true)
if [ -z "$model" ] || [ ! -d "$images" ]; then
  echo "SKIP: no bundled models ($repository) or test images ($images)"
  exit 77
fi
image_count=$(find "$images" -type f \( -name '*.png' -o -name '*.jpg' -o -name '*.jpeg' \) | wc -l)
[ "$image_count" -gt 0 ] || fail "no images in $images"

work=$(mktemp -d /tmp/convserve-scale-out.XXXXXX)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null || true; done
  if [ "${CONVSERVE_KEEP_TEST_DIR:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

t0=$(now)
ports=()
for i in 0 1 2; do
  port=$(free_port)
  ports+=("$port")
  # One compute thread each: three servers share the machine's cores.
  "$server_bin" --model-repository "$repository" --grpc-address 127.0.0.1 --grpc-port "$port" \
    --metrics-port 0 --threads 1 --exit-timeout-secs 10 > "$work/server$i.log" 2>&1 &
  pids+=("$!")
done
urls=()
for i in 0 1 2; do
  urls+=("127.0.0.1:${ports[$i]}")
  wait_ready "$client_bin" "${urls[$i]}" 180 ||
    { cat "$work/server$i.log"; fail "server $i (${urls[$i]}) not ready"; }
done
url=$(IFS=,; echo "${urls[*]}")
log "three servers ready: $url (model $model, $image_count images)"
timing "start 3 servers" "$t0"

# 1. Every server serves a share.
t1=$(now)
"$client_bin" --url "$url" classify "$model" "$images" --batch 1 --format json \
  > "$work/round0.json"
accuracy=$(check_classification "$work/round0.json" "$image_count")
total=0
for i in 0 1 2; do
  count=$(inference_count "$client_bin" "${urls[$i]}" "$model")
  log "server $i (${urls[$i]}): $count inferences"
  [ "$i" != 1 ] || server1_round0=$count
  [ "$count" -gt 0 ] || fail "server $i served nothing: round-robin does not spread the calls"
  total=$((total + count))
done
[ "$total" -eq "$image_count" ] ||
  fail "the servers counted $total inferences for $image_count images"
log "round-robin: $image_count images over 3 servers, $accuracy classified as labelled"
timing "classify over 3 servers" "$t1"

# loops_with_signal SIGNAL SERVER PHASE: three classify loops (CONVSERVE_SCALE_OUT_ROUNDS rounds
# each, default 4) over all three targets; once every loop has finished its first round, SIGNAL
# goes to server SERVER. Every image of every round must be classified: the client retries what
# the signalled server refuses or drops on another target.
loops_with_signal() {
  local signal=$1 victim=$2 phase=$3 rounds=${CONVSERVE_SCALE_OUT_ROUNDS:-4}
  local loop round pid status base lost=0 loop_pids=() deadline
  for loop in 0 1 2; do
    (
      for round in $(seq 1 "$rounds"); do
        status=0
        "$client_bin" --url "$url" classify "$model" "$images" --batch 1 --format json \
          > "$work/$phase.loop$loop.round$round.json" \
          2> "$work/$phase.loop$loop.round$round.err" || status=$?
        echo "$status" > "$work/$phase.loop$loop.round$round.status"
      done
    ) &
    loop_pids+=("$!")
  done
  # Signal once the first round of every loop is done, so calls are in flight on all servers.
  deadline=$((SECONDS + 300))
  for loop in 0 1 2; do
    until [ -f "$work/$phase.loop$loop.round1.status" ]; do
      ((SECONDS < deadline)) || fail "the first classify round did not finish"
      sleep 0.05
    done
  done
  kill "-$signal" "${pids[$victim]}"
  status=0
  wait "${pids[$victim]}" 2> /dev/null || status=$?
  log "server $victim (${urls[$victim]}) got SIG$signal during the loops: exit status $status"
  for pid in "${loop_pids[@]}"; do wait "$pid"; done
  if [ "$signal" = TERM ]; then
    [ "$status" = 0 ] || fail "server $victim exited with $status after SIGTERM"
    grep -q 'exit (all requests finished)' "$work/server$victim.log" ||
      fail "server $victim did not finish every accepted request"
  fi
  for loop in 0 1 2; do
    for round in $(seq 1 "$rounds"); do
      base=$work/$phase.loop$loop.round$round
      if [ "$(cat "$base.status")" != 0 ]; then
        echo "loop $loop round $round: exit $(cat "$base.status"): $(head -3 "$base.err")"
        lost=$((lost + 1))
      elif ! check_classification "$base.json" "$image_count" > /dev/null; then
        lost=$((lost + 1))
      fi
    done
  done
  [ "$lost" -eq 0 ] || fail "$lost classify runs lost requests after SIG$signal to server $victim"
  log "$((3 * rounds * image_count)) requests (3 loops x $rounds rounds x $image_count" \
    "images), server $victim signalled mid-run: every image classified"
}

# 2. A crash: server 1 killed with SIGKILL mid-run.
t2=$(now)
loops_with_signal KILL 1 crash
survivors=0
for i in 0 2; do
  survivors=$((survivors + $(inference_count "$client_bin" "${urls[$i]}" "$model")))
done
log "the 2 survivors served $((survivors - total + server1_round0)) requests of that phase" \
  "(server 1 the rest, before it died)"
timing "SIGKILL one server mid-run" "$t2"

# 3. A graceful stop, as in a rolling update: server 2 gets SIGTERM mid-run, drains, exits 0;
# the requests it refuses while draining (UNAVAILABLE) go to server 0.
t3=$(now)
loops_with_signal TERM 2 drain
timing "SIGTERM one server mid-run" "$t3"
print_timings
echo "PASS"
