"""The Kubernetes manifests (deploy/k8s): valid against the Kubernetes and KEDA schemas, and
saying what issue 14 asks of a deployment.

Validation is kubeconform's (a Go module `make test` installs into .venv/bin) against schemas made
from the Kubernetes and KEDA sources (``stack/k8s_schemas.py``, into .venv/k8s-schemas), strict:
a field the API does not know fails too. A deliberately broken manifest
(tests/fixtures/k8s-broken) shows that the validation catches mistakes. Needs no running stack.
"""
import glob
import json
import os
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "deploy", "k8s")
BROKEN = os.path.join(ROOT, "tests", "fixtures", "k8s-broken")
KUBECONFORM = os.environ.get("KUBECONFORM") or os.path.join(ROOT, ".venv", "bin", "kubeconform")
SCHEMAS = os.environ.get("K8S_SCHEMAS") or os.path.join(ROOT, ".venv", "k8s-schemas")
SERVICES = ("org", "membership", "notifications", "usage", "audit")


def kubeconform(path):
    """(exit code, [resource results]) of a strict validation of every manifest under ``path``."""
    assert os.path.exists(KUBECONFORM), f"kubeconform is missing: `make test` installs it ({KUBECONFORM})"
    assert os.path.exists(os.path.join(SCHEMAS, "deployment-apps-v1.json")), f"no schemas in {SCHEMAS}"
    result = subprocess.run([KUBECONFORM, "-strict", "-verbose", "-output", "json", "-skip", "Kustomization",
                             "-schema-location", os.path.join(SCHEMAS, "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
                             path], capture_output=True, text=True, timeout=120)
    return result.returncode, json.loads(result.stdout)["resources"] if result.stdout.strip() else []


def manifests():
    """{(kind, name): document} of every manifest of the base."""
    found = {}
    for path in sorted(glob.glob(os.path.join(K8S, "base", "*.yaml"))):
        with open(path) as handle:
            for document in yaml.safe_load_all(handle):
                if document and document.get("kind") != "Kustomization":
                    found[(document["kind"], document["metadata"]["name"])] = document
    return found


@pytest.fixture(scope="module")
def base():
    return manifests()


def test_every_manifest_is_valid_against_the_kubernetes_and_keda_schemas():
    code, resources = kubeconform(K8S)
    statuses = {(r["filename"], r["kind"], r.get("name")): r["status"] for r in resources}
    problems = [r for r in resources if r["status"] not in ("statusValid", "statusSkipped")]
    assert code == 0 and not problems, problems
    skipped = {kind for (_, kind, _), status in statuses.items() if status == "statusSkipped"}
    assert skipped <= {"Kustomization"}, skipped   # no kind goes unchecked for want of a schema
    kinds = {kind for (_, kind, _), status in statuses.items() if status == "statusValid"}
    assert {"Deployment", "StatefulSet", "Job", "PodDisruptionBudget", "ScaledObject", "TriggerAuthentication",
            "Ingress", "Service", "ConfigMap", "Namespace"} <= kinds, kinds


def test_a_broken_manifest_is_caught():
    code, resources = kubeconform(BROKEN)
    assert code == 1
    errors = {(r["kind"], e["path"]): e["msg"] for r in resources for e in r.get("validationErrors") or ()}
    assert "want integer" in errors[("Deployment", "/spec/replicas")]
    assert "livenessProbes" in errors[("Deployment", "/spec/template/spec/containers/0")]
    assert "type" in errors[("ScaledObject", "/spec/triggers/0")]


def container(deployment):
    [one] = deployment["spec"]["template"]["spec"]["containers"]
    return one


def env_of(deployment):
    return {e["name"]: e for e in container(deployment).get("env", [])}


@pytest.mark.parametrize("name", SERVICES + ("gateway",))
def test_each_component_is_a_deployment_ready_for_production(base, name):
    deployment = base[("Deployment", name)]
    pod = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    assert deployment["spec"]["replicas"] >= 2
    assert main["resources"]["requests"]["cpu"] and main["resources"]["limits"]["cpu"]
    assert main["resources"]["requests"]["memory"] and main["resources"]["limits"]["memory"]
    assert main["livenessProbe"] and main["readinessProbe"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert env_of(deployment)["MALLOC_ARENA_MAX"]["value"] == "2"
    assert pod["securityContext"]["runAsNonRoot"] and main["securityContext"]["readOnlyRootFilesystem"]
    assert base[("PodDisruptionBudget", name)]["spec"]["selector"] == deployment["spec"]["selector"]
    assert ("ScaledObject", name) in base


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_is_alive_while_its_consumer_beats_into_a_writable_tmp(base, name):
    deployment = base[("Deployment", name)]
    main = container(deployment)
    assert main["livenessProbe"]["exec"]["command"] == ["python", "-m", "common.probe"]
    # the heartbeat (common/heartbeat.py) is a file in the temporary directory of a read-only root
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in deployment["spec"]["template"]["spec"]["volumes"]


def test_the_gateway_is_ready_when_it_reaches_the_broker_not_when_every_service_does(base):
    main = container(base[("Deployment", "gateway")])
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz/gateway"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_scales_on_the_depth_of_its_own_queues(base, name):
    [trigger] = base[("ScaledObject", name)]["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq" and trigger["authenticationRef"]["name"] == "rabbitmq-management"
    assert trigger["metadata"]["mode"] == "QueueLength" and trigger["metadata"]["useRegex"] == "true"
    import re
    pattern = re.compile(trigger["metadata"]["queueName"])
    from common import topology
    own = [f"rpc-{name}"] + [topology.queue_name(s) for s in topology.subscriptions() if s.service == name]
    others = [topology.queue_name(s) for s in topology.subscriptions() if s.service != name]
    assert all(pattern.match(q) for q in own) and not any(pattern.match(q) for q in others)
    assert not pattern.match(own[-1] + ".parked")   # parked events wait for an operator, not a replica


def test_the_gateway_scales_on_cpu_and_is_reached_through_the_ingress(base):
    [trigger] = base[("ScaledObject", "gateway")]["spec"]["triggers"]
    assert trigger["type"] == "cpu" and trigger["metricType"] == "Utilization"
    [rule] = base[("Ingress", "orgplatform")]["spec"]["rules"]
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "gateway"


def test_the_signing_key_is_mounted_into_membership_only(base):
    holders = []
    for (kind, name), document in base.items():
        if kind not in ("Deployment", "StatefulSet", "Job"):
            continue
        volumes = document["spec"]["template"]["spec"].get("volumes") or []
        if any((v.get("secret") or {}).get("secretName") == "orgplatform-signing-key" for v in volumes):
            holders.append(name)
    assert holders == ["membership"]


def test_argon2_concurrency_follows_the_cpu_limit(base):
    source = env_of(base[("Deployment", "membership")])["ARGON2_CONCURRENCY"]["valueFrom"]["resourceFieldRef"]
    assert source["resource"] == "limits.cpu" and source["containerName"] == "membership"


def test_the_broker_is_a_three_node_cluster_and_topology_a_one_shot_job(base):
    rabbit = base[("StatefulSet", "rabbitmq")]
    assert rabbit["spec"]["replicas"] == 3
    assert base[("PodDisruptionBudget", "rabbitmq")]["spec"]["maxUnavailable"] == 1  # a majority stays
    job = base[("Job", "topology")]
    assert container(job)["command"] == ["python", "-m", "common.topology", "--users"]


def test_every_component_lists_every_broker_node_and_a_majority_writing_mongo():
    folder = os.path.join(K8S, "overlays", "production", "secrets")
    for name in SERVICES + ("gateway", "topology"):
        with open(os.path.join(folder, f"{name}.env.example")) as handle:
            values = dict(line.split("=", 1) for line in handle.read().splitlines()
                          if line and not line.startswith("#"))
        from common.bus import broker_addresses
        assert [host for host, _ in broker_addresses(values["AMQP_URI"])] == [
            f"rabbitmq-{i}.rabbitmq-nodes" for i in range(3)]
        if "MONGO_URL" in values:
            assert "w=majority" in values["MONGO_URL"] and "readPreference=primary" in values["MONGO_URL"]
