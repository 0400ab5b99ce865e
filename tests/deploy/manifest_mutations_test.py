#!/usr/bin/python3
"""The real manifests of deploy/k8s pass; each with one deliberate defect fails with exactly
the message that names the defect (schema and policy), so no check passes by accident."""

import copy
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import validate_manifests as vm  # noqa: E402

K8S_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "k8s")


def load_real():
    docs = []
    for name in sorted(os.listdir(K8S_DIR)):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            docs += vm.load_documents(os.path.join(K8S_DIR, name))
    return docs


def find(docs, kind, name=None):
    for doc in docs:
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name):
            return doc
    raise KeyError(kind)


def server(docs):
    return find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env(container, name, value):
    for item in container["env"]:
        if item["name"] == name:
            item["value"] = value


def check(docs):
    """Schema-validates every document, then the policy over all of them."""
    objects = [(doc, vm.validate_object(doc, doc["kind"])) for doc in docs]
    vm.check_policy(objects)


class RealManifests(unittest.TestCase):
    def test_real_manifests_pass(self):
        check(load_real())

    def test_typed_models(self):
        objects = [vm.validate_object(doc, doc["kind"]) for doc in load_real()]
        names = sorted(type(o).__name__ for o in objects)
        self.assertEqual(names, ["V1Deployment", "V1PodDisruptionBudget", "V1Service",
                                 "V1Service", "V2beta2HorizontalPodAutoscaler"])
        deployment = next(o for o in objects if type(o).__name__ == "V1Deployment")
        container = deployment.spec.template.spec.containers[0]
        self.assertTrue(container.security_context.read_only_root_filesystem)
        self.assertEqual(container.resources.limits["cpu"], "2")


# (what, mutation, exact message expected in the error)
SCHEMA_DEFECTS = [
    ("misspelt field", lambda d: find(d, "Deployment")["spec"].update(replica=3),
     "unknown field 'replica' for V1DeploymentSpec"),
    ("port as string", lambda d: server(d)["ports"][0].update(containerPort="8001"),
     "ports[0].containerPort: expected int, got str '8001'"),
    ("grpc probe port by name", lambda d: server(d)["livenessProbe"]["grpc"].update(port="grpc"),
     "livenessProbe.grpc.port: expected int, got str 'grpc'"),
    ("grpc probe without port", lambda d: server(d)["readinessProbe"]["grpc"].pop("port"),
     "readinessProbe.grpc.port: required field missing"),
    ("probe with two handlers",
     lambda d: server(d)["livenessProbe"].update(tcpSocket={"port": 8001}),
     "a probe needs exactly one handler"),
    ("cpu as a number", lambda d: server(d)["resources"]["limits"].update(cpu=2),
     "resources.limits.cpu: expected str, got int 2"),
    ("bool as string",
     lambda d: server(d)["securityContext"].update(readOnlyRootFilesystem="true"),
     "readOnlyRootFilesystem: expected bool, got str 'true'"),
    ("HPA field of autoscaling/v1",
     lambda d: find(d, "HorizontalPodAutoscaler")["spec"].update(
         targetCPUUtilizationPercentage=70),
     "unknown field 'targetCPUUtilizationPercentage'"),
    ("PDB selector as a string",
     lambda d: find(d, "PodDisruptionBudget")["spec"].update(selector="app=convserve"),
     "selector: expected an object (V1LabelSelector), got str"),
    ("service without ports' port", lambda d: find(d, "Service")["spec"]["ports"][0].pop("port"),
     "Invalid value for `port`, must not be `None`"),
]

POLICY_DEFECTS = [
    ("grace period too short",
     lambda d: find(d, "Deployment")["spec"]["template"]["spec"].update(
         terminationGracePeriodSeconds=30),
     "terminationGracePeriodSeconds 30 must exceed preStop 5 s + CONVSERVE_EXIT_TIMEOUT_SECS 30 s + 5 s"),
    ("exit timeout raised past the grace period",
     lambda d: env(server(d), "CONVSERVE_EXIT_TIMEOUT_SECS", "60"),
     "terminationGracePeriodSeconds 45 must exceed preStop 5 s + CONVSERVE_EXIT_TIMEOUT_SECS 60 s + 5 s"),
    ("writable root filesystem",
     lambda d: server(d)["securityContext"].update(readOnlyRootFilesystem=False),
     "container convserve: readOnlyRootFilesystem must be true"),
    ("root allowed",
     lambda d: find(d, "Deployment")["spec"]["template"]["spec"]["securityContext"].update(
         runAsNonRoot=False),
     "pod securityContext.runAsNonRoot must be true"),
    ("no memory limit", lambda d: server(d)["resources"]["limits"].pop("memory"),
     "container convserve: resources.limits.memory missing"),
    ("readiness over TCP",
     lambda d: server(d).update(readinessProbe={"tcpSocket": {"port": 8001}}),
     "readinessProbe must be a gRPC health probe"),
    ("threads above the CPU limit", lambda d: env(server(d), "CONVSERVE_THREADS", "8"),
     "CONVSERVE_THREADS (8) should equal the CPU limit (2)"),
    ("scrape annotation on the wrong port",
     lambda d: find(d, "Deployment")["spec"]["template"]["metadata"]["annotations"].update(
         {"prometheus.io/port": "8001"}),
     "pod annotation prometheus.io/port must name the metrics port"),
    ("service label typo",
     lambda d: find(d, "Service", "convserve")["spec"]["selector"].update(
         {"app.kubernetes.io/name": "convserv"}),
     "Service convserve does not select the Deployment's pods"),
    ("headless service given a cluster IP",
     lambda d: find(d, "Service", "convserve-headless")["spec"].pop("clusterIP"),
     "one headless Service (clusterIP: None) expected"),
    ("HPA on another deployment",
     lambda d: find(d, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(name="x"),
     "HorizontalPodAutoscaler must scale the Deployment"),
    ("HPA down to one replica",
     lambda d: find(d, "HorizontalPodAutoscaler")["spec"].update(minReplicas=1),
     "HorizontalPodAutoscaler minReplicas must be >= 2"),
    ("PDB label typo",
     lambda d: find(d, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update(
         {"app.kubernetes.io/name": "x"}),
     "PodDisruptionBudget does not select the Deployment's pods"),
    ("service port to a missing container port",
     lambda d: find(d, "Service", "convserve")["spec"]["ports"][1].update(targetPort="prom"),
     "targetPort prom not a container port"),
]


class Defects(unittest.TestCase):
    def run_defect(self, mutate, expected, exact_policy):
        docs = copy.deepcopy(load_real())
        mutate(docs)
        with self.assertRaises(vm.Invalid) as raised:
            check(docs)
        message = str(raised.exception)
        self.assertIn(expected, message)
        if exact_policy:  # the defect is the only problem found
            self.assertEqual(message, "policy: " + next(
                p for p in message[len("policy: "):].split("; ") if expected in p))

    def test_schema_defects(self):
        for what, mutate, expected in SCHEMA_DEFECTS:
            with self.subTest(what):
                self.run_defect(mutate, expected, exact_policy=False)

    def test_policy_defects(self):
        for what, mutate, expected in POLICY_DEFECTS:
            with self.subTest(what):
                self.run_defect(mutate, expected, exact_policy=True)


DOCKERFILE = os.path.join(os.path.dirname(K8S_DIR), "..", "Dockerfile")

# (what, (old, new) replacement in the Dockerfile, message expected)
DOCKERFILE_DEFECTS = [
    ("runs as root", ("USER 10001:10001", "USER root"), "must switch to a non-root USER"),
    ("user by name", ("USER 10001:10001", "USER convserve"), "USER must be numeric"),
    ("shell-form entrypoint",
     ('ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/convserve-server"]',
      "ENTRYPOINT /usr/local/bin/convserve-server"), "ENTRYPOINT must be exec form"),
    ("metrics port not exposed", ("EXPOSE 8001 8002", "EXPOSE 8001"), "EXPOSE 8001 8002 expected"),
    ("variable the server ignores", ("CONVSERVE_THREADS=0", "CONVSERVE_NUM_THREADS=0"),
     "environment variables the server does not read: ['CONVSERVE_NUM_THREADS']"),
    ("another base", ("ARG DEBIAN_IMAGE=debian:bookworm-slim", "ARG DEBIAN_IMAGE=ubuntu:22.04"),
     "every stage must start from debian:bookworm-slim"),
]


class DockerfileDefects(unittest.TestCase):
    def test_real_dockerfile_passes(self):
        vm.check_dockerfile(DOCKERFILE)

    def test_defects(self):
        with open(DOCKERFILE, encoding="utf-8") as f:
            original = f.read()
        for what, (old, new), expected in DOCKERFILE_DEFECTS:
            with self.subTest(what):
                self.assertIn(old, original)
                with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile") as broken:
                    broken.write(original.replace(old, new))
                    broken.flush()
                    with self.assertRaises(vm.Invalid) as raised:
                        vm.check_dockerfile(broken.name)
                    self.assertIn(expected, str(raised.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
