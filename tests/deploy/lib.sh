#!/usr/bin/env bash
# Helpers shared by tests/deploy/*.sh (sourced).

# Seconds since the epoch, with milliseconds.
now() { date +%s.%N | cut -c1-14; }

# "12.3" seconds between two now() values.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Records "<name> <seconds>" for the summary printed by print_timings.
TIMINGS=()
timing() { TIMINGS+=("$(printf '%-34s %7s s' "$1" "$(elapsed "$2" "$(now)")")"); }
print_timings() {
  echo "timings:"
  local line
  for line in "${TIMINGS[@]}"; do echo "  $line"; done
}

log() { echo "[$(date -u +%H:%M:%S)] $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# A TCP port free on 127.0.0.1 at the time of the call.
free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_ready CLIENT URL TIMEOUT_S: polls `convserve health` until it exits 0.
wait_ready() {
  local client=$1 url=$2 deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    if "$client" --url "$url" --timeout 2 health > /dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  "$client" --url "$url" --timeout 2 health || true
  return 1
}

# The model to classify with: $CONVSERVE_TEST_MODEL, else fashion-k3, else the first model
# folder of the repository.
pick_model() {
  local repository=$1
  if [ -n "${CONVSERVE_TEST_MODEL:-}" ]; then
    echo "$CONVSERVE_TEST_MODEL"
  elif [ -d "$repository/fashion-k3" ]; then
    echo fashion-k3
  else
    find "$repository" -mindepth 2 -maxdepth 2 -name config.pbtxt -printf '%h\n' | sort |
      head -1 | xargs -r basename
  fi
}

# check_classification JSON_FILE EXPECTED_COUNT: every image classified (no error), the count
# matches, and the predicted index agrees with the label-<idx> in the file name for most images.
# Prints "<correct>/<total>".
check_classification() {
  /usr/bin/python3 - "$1" "$2" << 'PY'
import json, re, sys
results = json.load(open(sys.argv[1]))
expected = int(sys.argv[2])
errors = [r for r in results if "error" in r]
if errors:
    sys.exit(f"{len(errors)} images failed, first: {errors[0]}")
if len(results) != expected:
    sys.exit(f"{len(results)} results, expected {expected}")
correct = total = 0
for r in results:
    match = re.search(r"label-(\d+)", r["file"])
    if match:
        total += 1
        correct += int(match.group(1)) == r["index"]
if total and correct < 0.6 * total:
    sys.exit(f"only {correct}/{total} images classified as their label")
print(f"{correct}/{total}")
PY
}

# inference_count CLIENT URL MODEL: the model's inference count on that one server.
inference_count() {
  "$1" --url "$2" stats "$3" --format json | /usr/bin/python3 -c '
import json, sys
rows = json.load(sys.stdin)
rows = rows if isinstance(rows, list) else rows.get("model_stats", [rows])
print(sum(int(r.get("inferences", r.get("inference_count", 0))) for r in rows))'
}
