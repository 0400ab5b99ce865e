#!/usr/bin/env bash
# Builds the real Dockerfile with buildah and runs the image with podman, without a Docker
# engine (docs: /work/shared/docs/platform.md, "Containers"). Checks, from the host:
#   - the image: size (limit CONVSERVE_IMAGE_MAX_MB, default 250), non-root numeric USER,
#     HEALTHCHECK kept (--format docker), ports 8001/8002 exposed;
#   - a container (read-only root filesystem, no capabilities): ready through `convserve health`,
#     PID 1 is tini and the server runs as a non-root user, `podman healthcheck run` healthy,
#     the bundled test images classified with the host's `convserve` client, /metrics served;
#   - SIGTERM during a request loop (`convserve bench`, 4 streams): the server drains, logs
#     "all requests finished", exits 0 within its exit timeout; the client saw no error other
#     than UNAVAILABLE (requests refused after the signal, which the client may retry elsewhere);
#   - a model repository mounted over the bundled one at /models is what the server serves;
#   - mutual TLS set through CONVSERVE_TLS_* with mounted certificates: the HEALTHCHECK passes
#     (its client reads CONVSERVE_CA/CERT/KEY), the host client classifies with a client
#     certificate and is refused without one or in plaintext.
# Prints timings and cleans up every container, image and file it made.
#
# Usage: container_test.sh [SOURCE_DIR [CONVSERVE_CLIENT]]   (needs root)
# Environment:
#   CONVSERVE_SKIP_CONTAINER_TEST=1   skip (exit 77)
#   CONVSERVE_CI_CACHE                cache of the debootstrapped base image tarball
#                                     (default /var/cache/convserve-ci)
#   CONVSERVE_REFRESH_BASE_IMAGE=1    rebuild the cached base image
#   CONVSERVE_CONTAINER_NETWORK       slirp4netns (default: published ports) or host
#   CONVSERVE_KEEP_TEST_DIR=1         keep the private container storage and logs
#   CONVSERVE_BUILD_ARGS              extra arguments for buildah bud (e.g. --build-arg ...)
#   CONVSERVE_DOCKERFILE              the Dockerfile (default SOURCE_DIR/Dockerfile)
#   CONVSERVE_PREPARE_BASE_ONLY=1     only make (and cache) the base image, then stop
set -euo pipefail

if [ "${CONVSERVE_SKIP_CONTAINER_TEST:-0}" = 1 ]; then
  echo "SKIP: CONVSERVE_SKIP_CONTAINER_TEST=1"
  exit 77
fi
source_dir=$(realpath "${1:-$(dirname "$0")/../..}")
client_bin=$(realpath "${2:-$source_dir/build/client/convserve}")
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$(realpath "$0")")/lib.sh"

if [ "$(id -u)" != 0 ]; then
  echo "SKIP: the container build and run need root"
  exit 77
fi
for tool in buildah podman debootstrap unshare crun; do
  if ! command -v "$tool" > /dev/null && [ ! -x "/usr/sbin/$tool" ]; then
    echo "SKIP: $tool is not installed (.ci/install-deps installs it)"
    exit 77
  fi
done
[ -x "$client_bin" ] || fail "no convserve client at $client_bin"

# Everything below runs in a private mount namespace: there, and only there, the cgroup v2
# mount of this hybrid-cgroup host is removed, which podman's runtime needs. And in a private
# PID namespace, where this script is PID 1: it reaps conmon and slirp4netns when they exit,
# and whatever is left when it ends is killed with it.
if [ -z "${CONVSERVE_PRIVATE_MOUNT_NS:-}" ]; then
  exec unshare --mount --propagation private --pid --fork --mount-proc --kill-child=SIGTERM \
    env CONVSERVE_PRIVATE_MOUNT_NS=1 bash "$(realpath "$0")" "$source_dir" "$client_bin"
fi
umount /sys/fs/cgroup/unified 2> /dev/null || true

t_start=$(now)

# ---------------------------------------------------------------------------------------------
# Private container state.
work=$(mktemp -d /var/tmp/convserve-container-test.XXXXXX)
cache=${CONVSERVE_CI_CACHE:-/var/cache/convserve-ci}
mkdir -p "$work"/{storage,run,tmp,libpod-tmp,volumes,networks} "$cache"
cat > "$work/storage.conf" << EOF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/run"
EOF
cat > "$work/containers.conf" << EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$work/events.log"
runtime = "crun"
tmp_dir = "$work/libpod-tmp"
volume_path = "$work/volumes"
[network]
network_config_dir = "$work/networks"
EOF
cat > "$work/registries.conf" << 'EOF'
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
export CONTAINERS_STORAGE_CONF=$work/storage.conf
export CONTAINERS_CONF=$work/containers.conf
export CONTAINERS_REGISTRIES_CONF=$work/registries.conf
export TMPDIR=$work/tmp

tag=localhost/convserve:ci-$$
base=docker.io/library/debian:bookworm-slim
containers=()
cleanup() {
  local status=$? name
  set +e
  for name in "${containers[@]}"; do podman rm --force --time 0 "$name" > /dev/null 2>&1; done
  podman rmi --force "$tag" "$base" > /dev/null 2>&1
  buildah rm --all > /dev/null 2>&1
  if [ "${CONVSERVE_KEEP_TEST_DIR:-0}" = 1 ]; then
    echo "kept $work"
  else
    # Overlay mounts made in this namespace go with it; unmount any left before deleting.
    grep -o "$work/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2> /dev/null
    rm -rf "${work:?}"
  fi
  print_timings
  exit "$status"
}
trap cleanup EXIT
# PID 1 of its namespace ignores signals it has no handler for: exit (and clean up) on these.
trap 'exit 143' TERM
trap 'exit 130' INT

# ---------------------------------------------------------------------------------------------
# 1. Base image: from the cache, else a registry pull, else debootstrap; cached for next time.

# make_rootfs_tar OUT: debootstraps bookworm (minbase) under $work and trims it the way
# debian:bookworm-slim is trimmed; writes the root filesystem as a tar to OUT.
make_rootfs_tar() {
  local out=$1 mirror rootfs=${work:?}/rootfs
  [[ "$rootfs" == /var/tmp/convserve-container-test.*/rootfs ]] || fail "bad rootfs $rootfs"
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' \
    /etc/apt/sources.list.d/debian.sources 2> /dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  log "registry unreachable: debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; fail "debootstrap failed"; }
  # As debian:bookworm-slim: deb822 sources with updates and security; packages installed
  # later bring no docs, man pages or locales; apt keeps no caches.
  rm -f "${rootfs:?}/etc/apt/sources.list"
  printf '%s\n' "Types: deb" "URIs: $mirror" "Suites: bookworm bookworm-updates" \
    "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" "" \
    "Types: deb" "URIs: ${mirror%/debian}/debian-security" "Suites: bookworm-security" \
    "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
    > "${rootfs:?}/etc/apt/sources.list.d/debian.sources"
  printf '%s\n' "path-exclude /usr/share/doc/*" "path-include /usr/share/doc/*/copyright" \
    "path-exclude /usr/share/man/*" "path-exclude /usr/share/info/*" \
    "path-exclude /usr/share/locale/*" "path-exclude /usr/share/lintian/*" \
    > "${rootfs:?}/etc/dpkg/dpkg.cfg.d/docker"
  local clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true";'
  printf '%s\n' "DPkg::Post-Invoke { $clean };" "APT::Update::Post-Invoke { $clean };" \
    'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' \
    > "${rootfs:?}/etc/apt/apt.conf.d/docker-clean"
  local trim
  for trim in var/cache/apt var/lib/apt/lists var/log usr/share/man usr/share/info \
    usr/share/locale tmp var/tmp; do
    find "${rootfs:?}/$trim" -mindepth 1 -delete
  done
  find "${rootfs:?}/usr/share/doc" -type f ! -name copyright -delete
  tar --numeric-owner -C "$rootfs" -cf "$out.partial" .
  mv "$out.partial" "$out"
  rm -rf "${rootfs:?}"
  log "cached the base root filesystem as $out ($(du -m "$out" | cut -f1) MB)"
}

t=$(now)
archive=$cache/debian-bookworm-slim.docker-archive  # a pulled image (podman save)
rootfs_tar=$cache/debian-bookworm-slim.rootfs.tar   # a debootstrapped root filesystem
if [ "${CONVSERVE_REFRESH_BASE_IMAGE:-0}" = 1 ]; then rm -f "$archive" "$rootfs_tar"; fi
if [ -s "$archive" ]; then
  log "base image from the cache: $archive"
  podman load --quiet -i "$archive" > /dev/null
elif [ -s "$rootfs_tar" ]; then
  log "base image from the cache: $rootfs_tar"
  podman import --quiet --change 'CMD ["bash"]' "$rootfs_tar" "$base" > /dev/null
elif timeout 60 podman pull --quiet "$base" > /dev/null 2>&1; then
  log "base image pulled from the registry; cached as $archive"
  podman save --quiet --format docker-archive -o "$archive.partial" "$base"
  mv "$archive.partial" "$archive"
else
  make_rootfs_tar "$rootfs_tar"
  podman import --quiet --change 'CMD ["bash"]' "$rootfs_tar" "$base" > /dev/null
fi
podman image exists "$base" || fail "no base image $base"
timing "base image" "$t"

if [ "${CONVSERVE_PREPARE_BASE_ONLY:-0}" = 1 ]; then
  log "base image cached in $cache; stopping (CONVSERVE_PREPARE_BASE_ONLY=1)"
  exit 0
fi

repository=$source_dir/models/repository
images=$source_dir/tests/data/images
model=$(pick_model "$repository" || true)
[ -n "$model" ] || fail "no model in $repository"
[ -d "$images" ] || fail "no test images in $images"
image_count=$(find "$images" -type f \( -name '*.png' -o -name '*.jpg' -o -name '*.jpeg' \) | wc -l)

# ---------------------------------------------------------------------------------------------
# 2. Build the real Dockerfile (compiles the project inside and runs its unit tests).
t=$(now)
dockerfile=${CONVSERVE_DOCKERFILE:-$source_dir/Dockerfile}
log "building $tag from $dockerfile (log: $work/build.log)"
# shellcheck disable=SC2086  # CONVSERVE_BUILD_ARGS is a list of arguments
if ! buildah bud --isolation=chroot --format docker --pull=never --force-rm --layers=false \
  ${CONVSERVE_BUILD_ARGS:-} -t "$tag" -f "$dockerfile" "$source_dir" \
  > "$work/build.log" 2>&1; then
  tail -60 "$work/build.log"
  fail "buildah bud failed"
fi
grep -E '^(STEP|COMMIT)|tests passed|Total Test time' "$work/build.log" | cut -c1-160 || true
timing "build image (compile + unit tests)" "$t"

# ---------------------------------------------------------------------------------------------
# 3. The image.
size_bytes=$(podman image inspect --format '{{.Size}}' "$tag")
size_mb=$((size_bytes / 1000000))
max_mb=${CONVSERVE_IMAGE_MAX_MB:-250}
log "image size: $size_mb MB (limit $max_mb MB)"
podman image inspect "$tag" > "$work/image.json"
/usr/bin/python3 - "$work/image.json" << 'PY'
import json, sys
image = json.load(open(sys.argv[1]))[0]
config = image.get("Config", {})
user = config.get("User", "")
assert user and user.split(":")[0] not in ("0", "root"), f"image user {user!r} is root"
assert user.split(":")[0].isdigit(), f"image user {user!r} is not numeric"
ports = set(config.get("ExposedPorts", {}))
assert {"8001/tcp", "8002/tcp"} <= ports, f"exposed ports {ports}"
health = image.get("Healthcheck") or image.get("HealthCheck") or config.get("Healthcheck") or {}
assert "convserve health" in " ".join(health.get("Test", [])), f"healthcheck {health}"
entry = config.get("Entrypoint") or []
assert entry[:2] == ["/usr/bin/tini", "--"], f"entrypoint {entry}"
print(f"image: user {user}, ports {sorted(ports)}, entrypoint {entry}, "
      f"healthcheck {health.get('Test')}")
PY
[ "$size_mb" -le "$max_mb" ] || fail "image is $size_mb MB, over $max_mb MB"

# ---------------------------------------------------------------------------------------------
# 4. Run it.
network=${CONVSERVE_CONTAINER_NETWORK:-slirp4netns}
# run_container NAME GRPC_PORT METRICS_PORT [podman run options...]: starts the container
# detached; the server listens on the given host ports.
run_container() {
  local name=$1 grpc=$2 metrics=$3
  shift 3
  local net=(--network=host -e "CONVSERVE_GRPC_PORT=$grpc" -e "CONVSERVE_METRICS_PORT=$metrics")
  if [ "$network" = slirp4netns ]; then
    net=(--network=slirp4netns -p "127.0.0.1:$grpc:8001" -p "127.0.0.1:$metrics:8002")
  fi
  containers+=("$name")
  podman run -d --name "$name" --cgroups=disabled --health-interval=disable \
    --read-only --tmpfs /tmp --cap-drop=all --security-opt=no-new-privileges \
    -e CONVSERVE_THREADS=2 -e CONVSERVE_EXIT_TIMEOUT_SECS=20 "${net[@]}" "$@" "$tag" > /dev/null
}

t=$(now)
grpc_port=$(free_port)
metrics_port=$(free_port)
name=convserve-ci-$$
run_container "$name" "$grpc_port" "$metrics_port"
url=127.0.0.1:$grpc_port
wait_ready "$client_bin" "$url" 180 || { podman logs "$name" | tail -30; fail "not ready"; }
timing "container start to ready" "$t"
log "container $name ready at $url"

# Users: PID 1 is tini, the server is its child, neither runs as root.
processes=$(podman exec "$name" sh -c \
  'for s in /proc/[0-9]*/status; do
     printf "%s %s %s\n" "$(basename "$(dirname "$s")")" \
       "$(sed -n "s/^Name:\t//p" "$s")" "$(sed -n "s/^Uid:\t\([0-9]*\).*/\1/p" "$s")"
   done')
echo "processes (pid name uid):"
while IFS= read -r line; do echo "  $line"; done <<< "$processes"
echo "$processes" | grep -qE '^1 tini [0-9]+$' || fail "PID 1 is not tini"
echo "$processes" | grep -qE '^[0-9]+ convserve-serve' || fail "no convserve-server process"
if echo "$processes" | grep -E 'tini|convserve-serve' | grep -qE ' 0$'; then
  fail "a server process runs as root"
fi
[ "$(podman exec "$name" id -u)" != 0 ] || fail "exec runs as root"

# The image's HEALTHCHECK (convserve health inside the container).
t=$(now)
podman healthcheck run "$name" || fail "podman healthcheck run: unhealthy"
log "healthcheck: healthy"
timing "healthcheck run" "$t"

# Classify the bundled test images from the host through the published port.
t=$(now)
"$client_bin" --url "$url" classify "$model" "$images" --batch 8 --format json \
  > "$work/classify.json"
accuracy=$(check_classification "$work/classify.json" "$image_count")
log "classified $image_count images with $model through the container: $accuracy as labelled"
timing "classify $image_count images" "$t"

# Prometheus metrics.
/usr/bin/python3 - "$metrics_port" << 'PY' || fail "no /metrics"
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read()
text = text.decode()
assert "# TYPE" in text, text[:200]
print(f"/metrics: {len(text.splitlines())} lines")
PY

# SIGTERM during a request loop.
t=$(now)
"$client_bin" --url "$url" --timeout 30 bench "$model" --concurrency 4 --duration 8 \
  --images "$images" --batch 1 --no-progress --format json > "$work/bench.json" \
  2> "$work/bench.err" &
bench_pid=$!
sleep 3
t_term=$(now)
podman kill --signal TERM "$name" > /dev/null
# Poll the state (podman wait alone can lag behind the exit).
until [ "$(podman inspect --format '{{.State.Status}}' "$name")" = exited ]; do
  (($(date +%s) - ${t_term%.*} < 120)) || fail "still running 120 s after SIGTERM"
  sleep 0.1
done
term_to_exit=$(elapsed "$t_term" "$(now)")
timing "SIGTERM to exit" "$t_term"
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
wait "$bench_pid" || true
podman logs -t "$name" > "$work/server.log" 2>&1
log "SIGTERM during the bench loop: exit status $exit_code after $term_to_exit s"
grep -E 'received SIGTERM|in flight|stopped|exit \(' "$work/server.log" |
  while IFS= read -r line; do echo "  server: $line"; done
[ "$exit_code" = 0 ] || fail "container exit status $exit_code"
grep -q 'exit (all requests finished)' "$work/server.log" ||
  fail "the server did not finish every accepted request"
/usr/bin/python3 - "$work/bench.json" << 'PY' || { cat "$work/bench.err"; fail "requests lost"; }
import json, sys
result = json.load(open(sys.argv[1]))
rows = result if isinstance(result, list) else result.get("results", [result])
row = rows[0]
requests = row.get("requests", 0)
errors = row.get("errors", {})
other = {code: n for code, n in errors.items() if code != "UNAVAILABLE"}
print(f"bench: {requests} requests succeeded, errors {errors or 'none'}")
assert requests > 0, "no request succeeded"
if other.get("CANCELLED"):
    print("CANCELLED: calls the server cancelled during its gRPC shutdown (not retried by "
          "clients); see deploy/README.md, 'Known issues'")
assert not other, f"errors other than UNAVAILABLE: {other}"
PY

# A model repository mounted over the bundled one.
t=$(now)
mounted=$work/mounted-repository
mkdir -p "$mounted"
cp -r "$repository/$model" "$mounted/"
chmod -R a+rX "$mounted"
grpc_port=$(free_port)
metrics_port=$(free_port)
run_container "$name-mounted" "$grpc_port" "$metrics_port" -v "$mounted:/models:ro"
wait_ready "$client_bin" "127.0.0.1:$grpc_port" 180 || fail "mounted repository: not ready"
served=$("$client_bin" --url "127.0.0.1:$grpc_port" models --format json |
  /usr/bin/python3 -c 'import json, sys
rows = json.load(sys.stdin)
rows = rows if isinstance(rows, list) else rows.get("models", [])
print(" ".join(sorted({r.get("name", "") for r in rows})))')
[ "$served" = "$model" ] || fail "mounted repository: serves '$served', expected '$model'"
podman stop --time 30 "$name-mounted" > /dev/null
[ "$(podman inspect --format '{{.State.ExitCode}}' "$name-mounted")" = 0 ] ||
  fail "mounted repository container: non-zero exit"
log "mounted repository over /models: serves only $served; stopped with exit 0"
timing "mounted repository run" "$t"

# Mutual TLS configured through the environment, certificates mounted read-only; the image's
# HEALTHCHECK reads the client side (CONVSERVE_CA, CONVSERVE_CERT, CONVSERVE_KEY) from there too.
t=$(now)
certs=$work/certs
bash "$source_dir/tests/tls/make_test_certs.sh" "$certs" > "$work/certs.log" 2>&1 ||
  { cat "$work/certs.log"; fail "make_test_certs.sh failed"; }
chmod -R a+rX "$certs"
grpc_port=$(free_port)
metrics_port=$(free_port)
run_container "$name-tls" "$grpc_port" "$metrics_port" -v "$certs:/certs:ro" \
  -e CONVSERVE_TLS_CERT=/certs/server.crt -e CONVSERVE_TLS_KEY=/certs/server.key \
  -e CONVSERVE_TLS_CLIENT_CA=/certs/ca.crt -e CONVSERVE_CA=/certs/ca.crt \
  -e CONVSERVE_CERT=/certs/client.crt -e CONVSERVE_KEY=/certs/client.key
export CONVSERVE_CA=$certs/ca.crt CONVSERVE_CERT=$certs/client.crt CONVSERVE_KEY=$certs/client.key
wait_ready "$client_bin" "127.0.0.1:$grpc_port" 180 ||
  { podman logs "$name-tls" | tail -30; fail "mutual TLS: not ready"; }
podman healthcheck run "$name-tls" || fail "mutual TLS: podman healthcheck run: unhealthy"
"$client_bin" --url "127.0.0.1:$grpc_port" classify "$model" "$images" --batch 8 --format json \
  > "$work/classify-tls.json"
tls_accuracy=$(check_classification "$work/classify-tls.json" "$image_count")
unset CONVSERVE_CA CONVSERVE_CERT CONVSERVE_KEY
if "$client_bin" --url "127.0.0.1:$grpc_port" --ca "$certs/ca.crt" --timeout 5 health \
  > /dev/null 2>&1; then
  fail "mutual TLS: a client without a certificate was served"
fi
if "$client_bin" --url "127.0.0.1:$grpc_port" --timeout 5 health > /dev/null 2>&1; then
  fail "mutual TLS: a plaintext client was served"
fi
# (Read the whole log first: `podman logs | grep -q` fails under pipefail when grep exits early.)
tls_log=$(podman logs "$name-tls" 2>&1)
grep -q '(mutual TLS)' <<< "$tls_log" || fail "mutual TLS: not in the startup line"
podman stop --time 30 "$name-tls" > /dev/null
[ "$(podman inspect --format '{{.State.ExitCode}}' "$name-tls")" = 0 ] ||
  fail "mutual TLS container: non-zero exit"
log "mutual TLS from the environment: healthy, $image_count images classified ($tls_accuracy)," \
  "clients without a certificate or in plaintext refused; stopped with exit 0"
timing "mutual TLS run" "$t"

timing "container test total" "$t_start"
log "image $tag: $size_mb MB"
echo "PASS"
