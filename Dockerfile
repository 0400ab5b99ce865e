# convserve container image: a build stage (Debian -dev packages, Release build, unit tests) and a
# slim runtime stage (runtime libraries, convserve-server, the convserve CLI, bundled models).
#
#   podman build --format docker -t convserve .        (or: docker build -t convserve .)
#   podman run -p 8001:8001 -p 8002:8002 convserve
#   podman run -v ./my-models:/models:ro convserve      (mount a repository over the bundled one)
#   podman run -e CONVSERVE_THREADS=2 -e CONVSERVE_LOG_FORMAT=json convserve
#
# Build arguments:
#   DEBIAN_IMAGE       base of both stages (default debian:bookworm-slim)
#   UNIT_TEST_TARGETS  test executables built in the build stage; their tests labelled "unit" run
#   RUN_UNIT_TESTS     1 (default) runs `ctest -L unit` in the build stage; 0 skips it
# See deploy/README.md for compose and Kubernetes.

ARG DEBIAN_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# The build packages are .ci/install-deps' PACKAGES array, minus what only the host's tests,
# training and container checks need (Python/PyTorch, data sets, linters, buildah/podman).
COPY .ci/install-deps /tmp/install-deps
RUN eval "$(sed -n '/^PACKAGES=(/,/^)/p' /tmp/install-deps)" \
 && build_packages=$(printf '%s\n' "${PACKAGES[@]}" | grep -vxE \
      'python3(-.*)?|libopenblas.*|dataset-.*|libonnx-testdata|clang-format|git|yamllint|buildah|podman|crun|debootstrap|uidmap|slirp4netns|fuse-overlayfs|tini') \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ${build_packages} \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

ARG UNIT_TEST_TARGETS="engine_ops_sweep_test host_ops_test"
ARG RUN_UNIT_TESTS=1
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON > /dev/null \
 && known_targets=$(cmake --build build --target help) \
 && tests=() \
 && for t in ${UNIT_TEST_TARGETS}; do \
      if grep -qw -- "$t" <<< "${known_targets}"; then tests+=("$t"); fi; \
    done \
 && echo "building convserve-server convserve ${tests[*]}" \
 && cmake --build build -j"$(nproc)" --target convserve-server convserve "${tests[@]}" \
 && if [ "${RUN_UNIT_TESTS}" = 1 ] && [ "${#tests[@]}" -gt 0 ]; then \
      ctest --test-dir build -L unit --output-on-failure -j"$(nproc)" --no-tests=error; \
    fi \
 && mkdir -p /out/bin \
 && install -m 0755 -s build/server/api/convserve-server build/client/convserve /out/bin/

# ---------------------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Runtime libraries only (apt pulls their dependencies); tini is PID 1 and forwards SIGTERM.
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libdnnl2 libgomp1 libspdlog1.10 libfmt9 libonnx1 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libjpeg62-turbo libpng16-16 tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
      /usr/share/doc/* /usr/share/man/* /usr/share/info/* \
 && groupadd --system --gid 10001 convserve \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin convserve

COPY --from=build /out/bin/convserve-server /out/bin/convserve /usr/local/bin/
COPY --chown=0:0 models/repository/ /models/

# Every library resolves, and both programs start.
RUN missing=$(ldd /usr/local/bin/convserve-server /usr/local/bin/convserve | grep 'not found' || true) \
 && if [ -n "${missing}" ]; then echo "${missing}"; exit 1; fi \
 && /usr/local/bin/convserve-server --help > /dev/null \
 && /usr/local/bin/convserve --help > /dev/null

# Configuration: each CONVSERVE_* variable maps to the server flag of the same name
# (CONVSERVE_GRPC_PORT = --grpc-port, ...); a flag given after the image name wins.
# Also read when set: CONVSERVE_GRPC_ADDRESS, CONVSERVE_MODEL_CONTROL_MODE (none|poll|explicit),
# CONVSERVE_LOAD_MODEL, CONVSERVE_REPOSITORY_POLL_SECS, CONVSERVE_LOG_LEVEL,
# CONVSERVE_MAX_REQUEST_BYTES, CONVSERVE_MAX_IMAGE_PIXELS, and for TLS CONVSERVE_TLS_CERT,
# CONVSERVE_TLS_KEY, CONVSERVE_TLS_CLIENT_CA (the HEALTHCHECK's client then needs its own
# certificate settings: deploy/README.md, "Configuration").
ENV CONVSERVE_MODEL_REPOSITORY=/models \
    CONVSERVE_GRPC_PORT=8001 \
    CONVSERVE_METRICS_PORT=8002 \
    CONVSERVE_THREADS=0 \
    CONVSERVE_EXIT_TIMEOUT_SECS=30 \
    CONVSERVE_LOG_FORMAT=text

USER 10001:10001
WORKDIR /
EXPOSE 8001 8002

# Ready = live, ready and SERVING over gRPC (grpc.health.v1 and the KServe ServerReady).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/bin/sh", "-c", "exec convserve health --url \"127.0.0.1:${CONVSERVE_GRPC_PORT:-8001}\" --timeout 4 > /dev/null"]

# tini is PID 1: it forwards SIGTERM to the server (which drains in-flight requests for up to
# CONVSERVE_EXIT_TIMEOUT_SECS, then exits 0) and returns the server's exit status.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/convserve-server"]
CMD []
