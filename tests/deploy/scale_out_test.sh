#!/usr/bin/env bash
# Scale-out without Kubernetes: three convserve-server processes on free loopback ports, one
# client with round-robin over them (`convserve --url a,b,c`).
#   1. every bundled test image is classified once; each server's ModelStatistics shows it served
#      a share, and the shares add up to the number of images;
#   2. classify loops run while one server is killed (SIGKILL) mid-run: every request the client
#      retries (UNAVAILABLE on the next target, client/README.md) succeeds, none is lost.
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

# 2. Kill server 1 while three classify loops run; no request is lost.
t2=$(now)
rounds=${CONVSERVE_SCALE_OUT_ROUNDS:-4}
loop_pids=()
for loop in 0 1 2; do
  (
    for round in $(seq 1 "$rounds"); do
      status=0
      "$client_bin" --url "$url" classify "$model" "$images" --batch 1 --format json \
        > "$work/loop$loop.round$round.json" 2> "$work/loop$loop.round$round.err" || status=$?
      echo "$status" > "$work/loop$loop.round$round.status"
    done
  ) &
  loop_pids+=("$!")
done
# Kill once the first round of every loop is done, so calls are in flight on all servers.
deadline=$((SECONDS + 300))
until [ -f "$work/loop0.round1.status" ] && [ -f "$work/loop1.round1.status" ] &&
  [ -f "$work/loop2.round1.status" ]; do
  ((SECONDS < deadline)) || fail "the first classify round did not finish"
  sleep 0.05
done
kill -KILL "${pids[1]}"
wait "${pids[1]}" 2> /dev/null || true
log "killed server 1 (${urls[1]}) with SIGKILL during the loops"
for pid in "${loop_pids[@]}"; do wait "$pid"; done

lost=0
for loop in 0 1 2; do
  for round in $(seq 1 "$rounds"); do
    base=$work/loop$loop.round$round
    status=$(cat "$base.status")
    if [ "$status" != 0 ]; then
      echo "loop $loop round $round: exit $status: $(cat "$base.err")"
      lost=$((lost + 1))
    elif ! check_classification "$base.json" "$image_count" > /dev/null; then
      lost=$((lost + 1))
    fi
  done
done
[ "$lost" -eq 0 ] || fail "$lost classify runs lost requests after a server was killed"
# The survivors' counts before the loops, from round 0: the total minus server 1's share.
after=0
for i in 0 2; do
  after=$((after + $(inference_count "$client_bin" "${urls[$i]}" "$model")))
done
requests=$((3 * rounds * image_count))
log "$requests requests (3 loops x $rounds rounds x $image_count images), server 1 killed" \
  "mid-run: none lost; the 2 survivors served $((after - total + server1_round0)) of them"
timing "kill one server mid-run" "$t2"
print_timings
echo "PASS"
