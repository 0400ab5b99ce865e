#!/usr/bin/python3
"""Offline validation of convserve's Kubernetes manifests and compose file.

No API server is reachable, so `kubectl --dry-run` cannot validate. Instead every object is
checked against the typed models of python3-kubernetes (Debian, API about 1.22):

  1. strict schema walk: every key must be a field of the model (no unknown fields), every value
     must have the model's type (str/int/bool/list/dict/nested model); quantities must be strings;
  2. deserialization into the typed model (V1Deployment, ...) through the client's ApiClient,
     whose setters reject missing required fields and invalid enum values;
  3. fields newer than the client's API are stripped before 1-2 and checked here by hand:
     the `grpc:` probe (V1GRPCAction, Kubernetes 1.24+); autoscaling/v2 HPAs are checked against
     the autoscaling/v2beta2 models (v2 is v2beta2 promoted unchanged, Kubernetes 1.23+);
  4. convserve's deployment policy across objects (--policy): selectors match the pod labels,
     probes use gRPC health, non-root with a read-only root filesystem, resources set, the grace
     period exceeds the server's exit timeout, Prometheus annotations name the metrics port, ...

Usage:
  validate_manifests.py [--policy] FILE...        exit 0 when every file is valid
  validate_manifests.py --expect-invalid FILE...  exit 0 when every file is rejected with the
                                                  message its "# expect: TEXT" comment names
  validate_manifests.py --compose FILE            structural checks of a compose file
  validate_manifests.py --dockerfile FILE         the Dockerfile's required properties
"""

import argparse
import json
import os
import re
import sys

import yaml

import kubernetes.client as k8s
from kubernetes.client import ApiClient


class Invalid(Exception):
    pass


# (apiVersion, kind) -> model class name, where the name is not V<version><Kind>.
MODEL_OVERRIDES = {
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2beta2HorizontalPodAutoscaler",
}

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def model_name(api_version, kind):
    if (api_version, kind) in MODEL_OVERRIDES:
        return MODEL_OVERRIDES[(api_version, kind)]
    version = api_version.split("/")[-1]
    return version[0].upper() + version[1:] + kind


def check_grpc_action(value, path):
    """V1GRPCAction (Kubernetes 1.24+): {port: int32 (required), service: string}."""
    if not isinstance(value, dict):
        raise Invalid(f"{path}: expected an object, got {type(value).__name__}")
    for key in value:
        if key not in ("port", "service"):
            raise Invalid(f"{path}: unknown field '{key}'")
    port = value.get("port")
    if port is None:
        raise Invalid(f"{path}.port: required field missing")
    if not isinstance(port, int) or isinstance(port, bool):
        raise Invalid(f"{path}.port: expected int, got {type(port).__name__} {port!r}")
    if not 1 <= port <= 65535:
        raise Invalid(f"{path}.port: {port} is not a port number")
    if "service" in value and not isinstance(value["service"], str):
        raise Invalid(f"{path}.service: expected str, got {type(value['service']).__name__}")


# Fields unknown to python3-kubernetes 22 (API 1.22): model -> field -> checker. The walk checks
# them with the checker and leaves them out of the copy handed to the typed deserializer.
NEWER_FIELDS = {
    "V1Probe": {"grpc": check_grpc_action},
}

PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def strict(value, type_name, path):
    """Checks `value` against the openapi type `type_name`; returns the value with the newer
    fields stripped (what the 1.22 deserializer can take)."""
    if value is None:
        return None
    if type_name in PRIMITIVES:
        expected = PRIMITIVES[type_name]
        if isinstance(value, bool) and type_name != "bool":
            raise Invalid(f"{path}: expected {type_name}, got bool {value!r}")
        if not isinstance(value, expected):
            raise Invalid(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return value
    if type_name in ("datetime", "date"):
        if not isinstance(value, str):
            raise Invalid(f"{path}: expected a timestamp string, got {type(value).__name__}")
        return value
    if type_name == "object":  # IntOrString and free-form fields
        return value
    match = re.fullmatch(r"list\[(.*)\]", type_name)
    if match:
        if not isinstance(value, list):
            raise Invalid(f"{path}: expected a list, got {type(value).__name__}")
        return [strict(item, match.group(1), f"{path}[{i}]") for i, item in enumerate(value)]
    match = re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name)
    if match:
        if not isinstance(value, dict):
            raise Invalid(f"{path}: expected a map, got {type(value).__name__}")
        return {k: strict(v, match.group(2), f"{path}.{k}") for k, v in value.items()}
    klass = getattr(k8s, type_name, None)
    if klass is None:
        raise Invalid(f"{path}: the client has no model {type_name}")
    if not isinstance(value, dict):
        raise Invalid(f"{path}: expected an object ({type_name}), got {type(value).__name__}")
    by_json_name = {json_name: attr for attr, json_name in klass.attribute_map.items()}
    newer = NEWER_FIELDS.get(type_name, {})
    if type_name == "V1Probe":
        handlers = [h for h in PROBE_HANDLERS if h in value]
        if len(handlers) != 1:
            raise Invalid(f"{path}: a probe needs exactly one handler of {PROBE_HANDLERS}, "
                          f"got {handlers}")
    out = {}
    for key, item in value.items():
        if key in newer:
            newer[key](item, f"{path}.{key}")
            continue
        if key not in by_json_name:
            raise Invalid(f"{path}: unknown field '{key}' for {type_name}")
        out[key] = strict(item, klass.openapi_types[by_json_name[key]], f"{path}.{key}")
    return out


class _Response:
    def __init__(self, data):
        self.data = json.dumps(data)


API = ApiClient()


def validate_object(doc, where):
    """Schema-checks one Kubernetes object; returns the typed model instance."""
    if not isinstance(doc, dict):
        raise Invalid(f"{where}: a manifest document must be an object")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise Invalid(f"{where}: apiVersion and kind are required strings")
    name = model_name(api_version, kind)
    if getattr(k8s, name, None) is None:
        raise Invalid(f"{where}: unknown apiVersion/kind {api_version} {kind}")
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        raise Invalid(f"{where}: metadata.name is required")
    stripped = strict(doc, name, f"{where} {kind}")
    try:
        return API.deserialize(_Response(stripped), name)
    except (ValueError, TypeError) as error:
        raise Invalid(f"{where} {kind}: {error}") from None


KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "images", "namespace", "labels",
                        "commonLabels", "commonAnnotations", "namePrefix", "patches"}


def validate_kustomization(doc, path):
    unknown = set(doc) - KUSTOMIZATION_FIELDS
    if unknown:
        raise Invalid(f"{path}: unknown field(s) {sorted(unknown)} for Kustomization")
    resources = doc.get("resources", [])
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise Invalid(f"{path}: resources must be a list of file names")
    folder = os.path.dirname(path)
    for resource in resources:
        if not os.path.isfile(os.path.join(folder, resource)):
            raise Invalid(f"{path}: resource {resource} does not exist")
    manifests = {f for f in os.listdir(folder) if f.endswith((".yaml", ".yml"))
                 and f != os.path.basename(path) and not f.startswith(".")}
    missing = manifests - set(resources)
    if missing:
        raise Invalid(f"{path}: manifests not listed in resources: {sorted(missing)}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_documents(path):
    with open(path, encoding="utf-8") as f:
        try:
            return [d for d in yaml.load_all(f, Loader=_StrictLoader) if d is not None]
        except yaml.YAMLError as error:
            raise Invalid(f"{path}: YAML: {error}") from None


def validate_file(path):
    """Returns [(raw document, typed model)] of the file's Kubernetes objects."""
    objects = []
    for index, doc in enumerate(load_documents(path)):
        where = f"{path}#{index}"
        if isinstance(doc, dict) and doc.get("kind") == "Kustomization":
            validate_kustomization(doc, path)
            continue
        objects.append((doc, validate_object(doc, where)))
    return objects


# ---------------------------------------------------------------------------------------------
# convserve's deployment policy.

SOURCE_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def server_env_names():
    """The CONVSERVE_* variables convserve-server reads: envname("...") in server/api/main.cc."""
    with open(os.path.join(SOURCE_ROOT, "server", "api", "main.cc"), encoding="utf-8") as f:
        return set(re.findall(r'envname\("(CONVSERVE_[A-Z0-9_]+)"\)', f.read()))


def unknown_env(names):
    known = server_env_names()
    return sorted(n for n in names if n.startswith("CONVSERVE_") and n not in known)

def env_value(container, name):
    for item in container.get("env", []):
        if item.get("name") == name:
            return item.get("value")
    return None


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_policy(objects):
    by_kind = {}
    for doc, _ in objects:
        by_kind.setdefault(doc["kind"], []).append(doc)
    problems = []

    def need(condition, message):
        if not condition:
            problems.append(message)

    deployments = by_kind.get("Deployment", [])
    need(len(deployments) == 1, f"expected one Deployment, found {len(deployments)}")
    if not deployments:
        raise Invalid("; ".join(problems))
    deployment = deployments[0]
    name = deployment["metadata"]["name"]
    spec = deployment["spec"]
    pod = spec["template"]
    pod_labels = pod["metadata"].get("labels", {})
    pod_spec = pod["spec"]
    need(selects(spec["selector"].get("matchLabels"), pod_labels),
         "Deployment selector does not match its pod template labels")
    need(pod_spec.get("securityContext", {}).get("runAsNonRoot") is True,
         "pod securityContext.runAsNonRoot must be true")
    need(pod_spec.get("securityContext", {}).get("runAsUser", 0) != 0, "pods must not run as root")
    containers = pod_spec["containers"]
    server = containers[0]
    ports = {p.get("name"): p["containerPort"] for p in server.get("ports", [])}
    need(ports.get("grpc") == 8001 and ports.get("metrics") == 8002,
         "container ports grpc=8001 and metrics=8002 expected")
    for container in containers:
        cname = container["name"]
        context = container.get("securityContext", {})
        need(context.get("readOnlyRootFilesystem") is True,
             f"container {cname}: readOnlyRootFilesystem must be true")
        need(context.get("allowPrivilegeEscalation") is False,
             f"container {cname}: allowPrivilegeEscalation must be false")
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                need(resource in resources.get(part, {}),
                     f"container {cname}: resources.{part}.{resource} missing")
    for probe in ("livenessProbe", "readinessProbe"):
        grpc = server.get(probe, {}).get("grpc")
        need(grpc is not None, f"{probe} must be a gRPC health probe")
        if grpc:
            need(grpc.get("port") == ports.get("grpc"), f"{probe} must probe the gRPC port")
    # The grace period must cover the preStop hook and the server's drain.
    exit_timeout = int(env_value(server, "CONVSERVE_EXIT_TIMEOUT_SECS") or 30)
    pre_stop = 0
    command = server.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if len(command) == 2 and command[0].endswith("sleep"):
        pre_stop = int(command[1])
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    # After the exit timeout the server's stop takes up to 4 s more: at most 2 s holding its
    # UNAVAILABLE answers until clients are quiet, then at most 2 s for gRPC's shutdown.
    need(grace >= exit_timeout + pre_stop + 5,
         f"terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s + "
         f"CONVSERVE_EXIT_TIMEOUT_SECS {exit_timeout} s + 5 s for the server's stop")
    bad = unknown_env(item.get("name", "") for item in server.get("env", []))
    need(not bad, f"environment variables the server does not read: {bad}")
    threads = env_value(server, "CONVSERVE_THREADS")
    cpu_limit = server.get("resources", {}).get("limits", {}).get("cpu")
    need(threads is not None and cpu_limit is not None and threads == cpu_limit,
         f"CONVSERVE_THREADS ({threads}) should equal the CPU limit ({cpu_limit})")
    annotations = pod["metadata"].get("annotations", {})
    need(annotations.get("prometheus.io/scrape") == "true",
         "pod annotation prometheus.io/scrape: \"true\" missing")
    need(annotations.get("prometheus.io/port") == str(ports.get("metrics")),
         "pod annotation prometheus.io/port must name the metrics port")
    need(annotations.get("prometheus.io/path") == "/metrics",
         "pod annotation prometheus.io/path: /metrics missing")

    services = by_kind.get("Service", [])
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    need(len(headless) == 1, "one headless Service (clusterIP: None) expected")
    need(len(services) - len(headless) >= 1, "a Service for clients (with a cluster IP) expected")
    for service in services:
        sname = service["metadata"]["name"]
        need(selects(service["spec"].get("selector"), pod_labels),
             f"Service {sname} does not select the Deployment's pods")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            need(target in ports or target in ports.values(),
                 f"Service {sname} port {port.get('name')}: targetPort {target} not a container "
                 f"port")

    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    need(len(hpas) == 1, "one HorizontalPodAutoscaler expected")
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        need(ref.get("kind") == "Deployment" and ref.get("name") == name,
             "HorizontalPodAutoscaler must scale the Deployment")
        need(any(m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu"
                 for m in hpa["spec"].get("metrics", [])),
             "HorizontalPodAutoscaler must scale on CPU")
        need(hpa["spec"].get("minReplicas", 1) >= 2,
             "HorizontalPodAutoscaler minReplicas must be >= 2 (the PDB allows one down)")

    pdbs = by_kind.get("PodDisruptionBudget", [])
    need(len(pdbs) == 1, "one PodDisruptionBudget expected")
    for pdb in pdbs:
        need(selects(pdb["spec"].get("selector", {}).get("matchLabels"), pod_labels),
             "PodDisruptionBudget does not select the Deployment's pods")

    if problems:
        raise Invalid("policy: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# compose file: structure only (no compose schema is available offline).

def check_compose(path):
    docs = load_documents(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise Invalid(f"{path}: one mapping expected")
    compose = docs[0]
    unknown = set(compose) - {"name", "services", "volumes", "networks", "configs", "secrets"}
    if unknown:
        raise Invalid(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    service = compose.get("services", {}).get("convserve")
    if not isinstance(service, dict):
        raise Invalid(f"{path}: service 'convserve' missing")
    problems = []
    ports = [str(p) for p in service.get("ports", [])]
    for port in ("8001", "8002"):
        if not any(p.endswith(":" + port) for p in ports):
            problems.append(f"port {port} not published")
    health = service.get("healthcheck", {}).get("test", [])
    if "health" not in health:
        problems.append("healthcheck must run `convserve health`")
    mounts = [v for v in service.get("volumes", []) if isinstance(v, dict)]
    if not any(m.get("target") == "/models" and m.get("read_only") for m in mounts):
        problems.append("a read-only mount at /models (the model repository) expected")
    env = service.get("environment", {})
    if env.get("CONVSERVE_MODEL_REPOSITORY") != "/models":
        problems.append("CONVSERVE_MODEL_REPOSITORY must be /models")
    bad = unknown_env(env)
    if bad:
        problems.append(f"environment variables the server does not read: {bad}")
    grace = re.fullmatch(r"(\d+)s", str(service.get("stop_grace_period", "10s")))
    exit_timeout = int(env.get("CONVSERVE_EXIT_TIMEOUT_SECS", 30))
    if not grace or int(grace.group(1)) <= exit_timeout:
        problems.append("stop_grace_period must exceed CONVSERVE_EXIT_TIMEOUT_SECS")
    if str(service.get("user", "")).split(":")[0] in ("", "0", "root"):
        problems.append("user must be non-root")
    if problems:
        raise Invalid(f"{path}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# Dockerfile: the properties the issue asks for, read from the instructions.

def dockerfile_instructions(path):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            stripped = line.strip()
            if not current and (not stripped or stripped.startswith("#")):
                continue
            if stripped.startswith("#"):
                continue
            current += " " + stripped
            if current.endswith("\\"):
                current = current[:-1]
                continue
            word, _, rest = current.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
            current = ""
    return instructions


def check_dockerfile(path):
    instructions = dockerfile_instructions(path)
    args = {}
    stages = []  # [(base, [(instruction, arguments)])]
    for word, rest in instructions:
        if word == "ARG" and not stages and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
        elif word == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)),
                          rest.split()[0])
            stages.append((base, []))
        elif stages:
            stages[-1][1].append((word, rest))
    problems = []
    if len(stages) < 2:
        problems.append("multi-stage build expected")
    if any(base != "debian:bookworm-slim" for base, _ in stages):
        problems.append(f"every stage must start from debian:bookworm-slim: {[b for b, _ in stages]}")
    final = stages[-1][1] if stages else []

    def last(word):
        values = [rest for w, rest in final if w == word]
        return values[-1] if values else None

    user = last("USER")
    if user is None or user.split(":")[0] in ("0", "root"):
        problems.append(f"the runtime stage must switch to a non-root USER (got {user})")
    elif not user.split(":")[0].isdigit():
        problems.append("USER must be numeric (Kubernetes runAsNonRoot checks the number)")
    exposed = set(" ".join(rest for w, rest in final if w == "EXPOSE").split())
    if not {"8001", "8002"} <= exposed:
        problems.append(f"EXPOSE 8001 8002 expected, got {sorted(exposed)}")
    health = last("HEALTHCHECK") or ""
    if "convserve health" not in health:
        problems.append("HEALTHCHECK must run `convserve health`")
    entrypoint = last("ENTRYPOINT") or ""
    try:
        entry = json.loads(entrypoint)
    except ValueError:
        entry = None
    if not isinstance(entry, list) or not any("convserve-server" in e for e in entry):
        problems.append(f"ENTRYPOINT must be exec form (JSON array) running convserve-server: "
                        f"{entrypoint}")
    elif "tini" not in entry[0] and "convserve-server" not in entry[0]:
        problems.append("the server (or tini) must be PID 1")
    env_names = set()
    for word, rest in final:
        if word == "ENV":
            env_names |= set(re.findall(r"(\w+)=", rest))
    bad = unknown_env(env_names)
    if bad:
        problems.append(f"environment variables the server does not read: {bad}")
    if "CONVSERVE_MODEL_REPOSITORY" not in env_names:
        problems.append("ENV CONVSERVE_MODEL_REPOSITORY (the mount point of the models) expected")
    copies = " ".join(rest for w, rest in final if w == "COPY")
    for needed in ("convserve", "models/repository"):
        if needed not in copies:
            problems.append(f"the runtime stage must COPY {needed}")
    runs = " ".join(rest for w, rest in final if w == "RUN")
    if re.search(r"-dev\b", runs):
        problems.append("the runtime stage installs -dev packages")
    if problems:
        raise Invalid(f"{path}: " + "; ".join(problems))


def expected_message(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"#\s*expect:\s*(.+?)\s*$", line)
            if match:
                return match.group(1)
    raise Invalid(f"{path}: no '# expect: TEXT' comment")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--policy", action="store_true",
                        help="also check convserve's deployment policy across all files")
    parser.add_argument("--expect-invalid", action="store_true",
                        help="every file must be rejected with its '# expect:' message")
    parser.add_argument("--compose", action="store_true", help="the files are compose files")
    parser.add_argument("--dockerfile", action="store_true", help="the files are Dockerfiles")
    args = parser.parse_args()
    files = []
    for path in args.files:  # a folder stands for its *.yaml files
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.endswith((".yaml", ".yml")) and not f.startswith("."))
        else:
            files.append(path)
    args.files = files

    failures = 0
    if args.expect_invalid:
        for path in args.files:
            expected = expected_message(path)
            try:
                objects = validate_file(path)
                if args.policy:
                    check_policy(objects)
            except Invalid as error:
                if expected in str(error):
                    print(f"ok (rejected) {path}: {error}")
                    continue
                print(f"FAIL {path}: rejected with\n  {error}\nexpected a message containing\n"
                      f"  {expected}")
                failures += 1
                continue
            print(f"FAIL {path}: accepted, expected rejection with '{expected}'")
            failures += 1
        return 1 if failures else 0

    if args.compose or args.dockerfile:
        for path in args.files:
            try:
                (check_compose if args.compose else check_dockerfile)(path)
                print(f"ok {path}")
            except Invalid as error:
                print(f"FAIL {error}")
                failures += 1
        return 1 if failures else 0

    all_objects = []
    for path in args.files:
        try:
            objects = validate_file(path)
        except Invalid as error:
            print(f"FAIL {error}")
            failures += 1
            continue
        for doc, model in objects:
            print(f"ok {path}: {doc['apiVersion']} {doc['kind']} {doc['metadata']['name']} "
                  f"-> {type(model).__name__}")
        all_objects += objects
    if args.policy and not failures:
        try:
            check_policy(all_objects)
            print("ok policy")
        except Invalid as error:
            print(f"FAIL {error}")
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
