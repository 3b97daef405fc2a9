"""The deployment files stay true to the code: the Dockerfile, deploy/compose/ and the
Helm chart deploy/helm/flagsched use real settings with values that parse, real
commands, one image, the ports the code binds, locked-down pods, and grace periods
longer than a process needs to stop.

The chart is rendered by the real ``helm`` for the default values and for the two
example value files (tests/support/helm.py), and every rendering is checked by
``kubeconform`` against the Kubernetes schemas and KEDA's CRD schemas. No cluster is
needed: nothing here is applied. A missing tool skips on a developer machine and fails
the run when ``CI=true``.

Every part is on by default: the admin API, the notifier and the cleanup (retention)
too. Each part's variables must be settings of the class that part reads
(PART_SETTINGS: the runtime settings, plus the admin API's and the notifier's own),
and parse there.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

from flagsched.admin.settings import AdminSettings, load_admin_settings
from flagsched.cli import build_parser
from flagsched.devstack.containers import KAFKA_IMAGE, POSTGRES_IMAGE
from flagsched.notifier.settings import NotifySettings, load_notify_settings
from flagsched.runtime.settings import Settings, load_settings
from flagsched.runtime.telemetry.metrics import Metrics
from tests.support.helm import VALUE_SETS, helm, kubeconform, render, rendered_text
from tests.support.required import unavailable

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
CHART = ROOT / "deploy" / "helm" / "flagsched"

PREFIX = "FLAGSCHED_"
FLAGSCHED_SERVICES = ("init", "dispatcher", "worker")
#: The value given to env entries that Kubernetes fills in (valueFrom: ...).
FROM_CLUSTER = "filled-in-by-kubernetes"
#: libpq's own variables that the chart sets (the password, from each part's Secret).
LIBPQ_VARIABLES = frozenset({"PGPASSWORD"})
#: The variables each part reads beyond the runtime settings (FLAGSCHED_<field>).
PART_SETTINGS: dict[str, frozenset[str]] = {
    "admin": frozenset(f"{PREFIX}{f.upper()}" for f in AdminSettings.model_fields),
    "notifier": frozenset(f"{PREFIX}NOTIFY_{f.upper()}" for f in NotifySettings.model_fields),
}
#: The /metrics port of each part that serves one, as the chart's defaults set it.
METRICS_PORTS = {"worker": 9400, "dispatcher": 9401, "notifier": 9402, "cleanup": 9403}
WORKLOADS = ("Deployment", "StatefulSet", "Job")
SETS = list(VALUE_SETS)


def _missing(reason: str) -> NoReturn:
    unavailable(reason)


@cache
def _yaml() -> Any:
    # Imported by name: the test then needs no type stubs for PyYAML.
    try:
        return importlib.import_module("yaml")
    except ImportError:
        _missing("PyYAML is missing (pip install pyyaml; it belongs in the dev extras)")


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of ``path``."""
    docs = [d for d in _yaml().safe_load_all(path.read_text()) if d is not None]
    assert all(isinstance(d, dict) for d in docs), f"{path}: a document is not a mapping"
    return docs


# --- the rendered chart ----------------------------------------------------------------


class Rendering:
    """The objects of one ``helm template`` run, with look-ups."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(o["metadata"]["name"] == name for o in self.kind(kind))

    def workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in WORKLOADS]

    def workload(self, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.workloads() if o["metadata"]["name"] == name]
        return found

    def containers(self) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(part, pod spec, container) of every container, init ones included."""
        for obj in self.workloads():
            pod = obj["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                yield part_of(obj), pod, container


def part_of(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]  # type: ignore[no-any-return]


def rendering(value_set: str, *sets: str) -> Rendering:
    return Rendering(render(value_set, *sets))


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The environment the container starts with; values from the cluster get a
    placeholder. The chart sets env entries only (no envFrom)."""
    assert "envFrom" not in container
    names = [e["name"] for e in container.get("env", [])]
    assert len(names) == len(set(names)), f"a variable is set twice: {names}"
    return {e["name"]: e.get("value", FROM_CLUSTER) for e in container.get("env", [])}


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and In expressions) against pod labels."""
    match = selector.get("matchLabels", {})
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        match = selector  # a Service's plain selector
    if not match.items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


@pytest.mark.parametrize("value_set", SETS)
def test_helm_lint_is_clean(value_set: str) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", "1.30.0"]
    for path in VALUE_SETS[value_set]:
        args += ["-f", str(path)]
    assert "0 chart(s) failed" in helm(*args)


@pytest.mark.parametrize("value_set", SETS)
def test_kubeconform_accepts_every_object(value_set: str) -> None:
    objects = render(value_set)
    report = kubeconform(rendered_text(value_set))
    print(f"kubeconform {value_set}: {json.dumps(report['summary'])}")
    assert report["returncode"] == 0, report["resources"]
    summary = report["summary"]
    assert summary == {"valid": len(objects), "invalid": 0, "errors": 0, "skipped": 0}


def test_kubeconform_rejects_a_wrong_field() -> None:
    # The check can fail: a misspelt field and a wrong type are reported.
    text = rendered_text("production")
    broken = text.replace("maxReplicaCount:", "maxReplicas:", 1).replace(
        "readOnlyRootFilesystem: true", 'readOnlyRootFilesystem: "yes"', 1
    )
    assert broken != text
    report = kubeconform(broken)
    assert report["summary"]["invalid"] == 2, report


@pytest.mark.parametrize("value_set", SETS)
def test_every_object_names_itself_and_no_namespace(value_set: str) -> None:
    for obj in render(value_set):
        assert obj.get("apiVersion") and obj.get("kind"), obj
        assert obj["metadata"].get("name"), obj
        # helm install -n NS sets it.
        assert "namespace" not in obj["metadata"], obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "flagsched"


def test_default_values_render_every_installed_part() -> None:
    r = rendering("default")
    parts = {(o["kind"], part_of(o)) for o in r.workloads()}
    assert parts == {
        ("Deployment", "dispatcher"),
        ("StatefulSet", "worker"),
        ("Job", "setup"),
        ("Deployment", "admin"),
        ("Deployment", "notifier"),
        ("Deployment", "cleanup"),
    }
    values = _yaml().safe_load((CHART / "values.yaml").read_text())
    assert all(values[part]["enabled"] is True for part in ("admin", "notifier", "cleanup"))
    assert r.workload("flagsched-cleanup")["spec"]["replicas"] == 1, "one cleanup runner"
    off = rendering("default", "admin.enabled=false", "notifier.enabled=false")
    assert {part_of(o) for o in off.workloads()} == {"dispatcher", "worker", "setup", "cleanup"}
    assert not rendering("default", "cleanup.enabled=false").has("Deployment", "flagsched-cleanup")


@pytest.mark.parametrize("value_set", SETS)
def test_settings_are_real_and_parse(value_set: str, monkeypatch: pytest.MonkeyPatch) -> None:
    r = rendering(value_set)
    metrics_open = r.has("NetworkPolicy", "flagsched-metrics")
    for part, _pod, container in r.containers():
        env = env_of(container)
        unknown = sorted(name for name in env if not is_known_variable(name, part))
        assert not unknown, f"{part}: not a setting: {unknown}"
        settings = settings_from(monkeypatch, env)
        part_settings_from(monkeypatch, part, env)  # raises ConfigError naming a bad one
        assert settings.kafka_bootstrap_servers, part
        assert settings.database_url, part
        # One role per part, none with a password in the URL.
        url = urlsplit(settings.require_database_url())
        assert url.username == f"flagsched_{part}" and url.password is None, part
        assert env["PGPASSWORD"] == FROM_CLUSTER, part
        if part in METRICS_PORTS:
            expected = "0.0.0.0" if metrics_open else "127.0.0.1"
            assert settings.metrics_addr == expected, f"{part}: /metrics on {expected}"
        if settings.kafka_security_protocol != "PLAINTEXT" and settings.kafka_sasl_mechanism:
            assert env["FLAGSCHED_KAFKA_SASL_PASSWORD"] == FROM_CLUSTER, part


@pytest.mark.parametrize("value_set", SETS)
def test_each_part_reads_its_own_secret(value_set: str) -> None:
    r = rendering(value_set)
    for part, _pod, container in r.containers():
        refs = {
            (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert {name for name, _ in refs} <= {f"flagsched-{part}"}, part
        for secret in r.kind("Secret"):  # made by the chart (secrets.create)
            if secret["metadata"]["name"] == f"flagsched-{part}":
                assert {key for _, key in refs} <= secret["stringData"].keys(), part
                assert all("CHANGE-ME" in v for v in secret["stringData"].values())
                assert "data" not in secret, "stringData placeholders, never encoded values"


@pytest.mark.parametrize("value_set", SETS)
def test_references_resolve(value_set: str) -> None:
    r = rendering(value_set)
    for service in r.kind("Service"):
        matched = [w for w in r.workloads() if selects(service["spec"]["selector"], pod_labels(w))]
        assert matched, f"Service {service['metadata']['name']} selects no pod"
    for pdb in r.kind("PodDisruptionBudget"):
        assert selects(pdb["spec"]["selector"], pod_labels(r.workload("flagsched-worker")))
    for obj in r.workloads():
        if obj["kind"] != "Job":
            assert selects(obj["spec"]["selector"], pod_labels(obj)), obj["metadata"]["name"]
        pod = obj["spec"]["template"]["spec"]
        mounts = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert mounts == {v["name"] for v in pod.get("volumes", [])}, obj["metadata"]["name"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert r.has("ConfigMap", volume["configMap"]["name"])


@pytest.mark.parametrize("value_set", SETS)
def test_scaling_and_ingress_references_resolve(value_set: str) -> None:
    r = rendering(value_set)
    for stateful in r.kind("StatefulSet"):
        governing = r.named("Service", stateful["spec"]["serviceName"])
        assert governing["spec"]["clusterIP"] == "None"
    for scaled in r.kind("ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]
        assert (target["kind"], target["apiVersion"]) == ("StatefulSet", "apps/v1")
        assert r.has("StatefulSet", target["name"])
        for trigger in scaled["spec"]["triggers"]:
            if "authenticationRef" in trigger:
                assert r.has("TriggerAuthentication", trigger["authenticationRef"]["name"])
    for ingress in r.kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                ports = r.named("Service", backend["name"])["spec"]["ports"]
                assert backend["port"]["name"] in {p["name"] for p in ports}


@pytest.mark.parametrize("value_set", SETS)
def test_commands_are_real(value_set: str) -> None:
    r = rendering(value_set)
    images = {c["image"] for _, _, c in r.containers()}
    assert len(images) == 1, f"one image for every flagsched container: {images}"
    for part, pod, container in r.containers():
        if "command" in container:  # the entrypoint replaced: a shell script
            assert container["command"] == ["sh", "-c"], part
            assert_setup_script(" ".join(container["args"]), pod, container)
        else:  # arguments to the image's ENTRYPOINT ["flagsched"]
            assert_flagsched_args(container["args"])


def assert_setup_script(script: str, pod: dict[str, Any], container: dict[str, Any]) -> None:
    """flagsched commands, then (with grants) the Python step that runs grants.sql."""
    steps = [shlex.split(step) for step in script.split("&&")]
    for words in steps:
        if words[0] == "python":
            assert words[1] == "-c"
            code = words[2]
            compile(code, "<setup grants>", "exec")
            mounted = {m["mountPath"] for m in container["volumeMounts"]}
            path = re.search(r"open\('([^']+)'\)", code)
            assert path and str(Path(path.group(1)).parent) in mounted, code
            assert any(v.get("configMap") for v in pod["volumes"])
        else:
            assert words[0] == "flagsched", script
            assert_flagsched_args(words[1:])
    assert [w[:3] for w in steps[:2]] == [
        ["flagsched", "db", "migrate"],
        ["flagsched", "topics", "create"],
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("value_set", SETS)
def test_metrics_ports_match_what_the_code_binds(value_set: str) -> None:
    r = rendering(value_set)
    exposed = r.has("NetworkPolicy", "flagsched-metrics")
    for part, default_port in METRICS_PORTS.items():
        name = f"flagsched-{part}"
        workload = r.workload(name)
        container = only_container(workload)
        port = int(env_of(container)["FLAGSCHED_METRICS_PORT"])
        assert port == default_port, f"{name}: the port of the convention"
        assert port in dockerfile_exposed_ports(), name
        for probe in ("readinessProbe", "livenessProbe"):
            spec = container[probe]
            assert spec["timeoutSeconds"] >= 5, f"{name} {probe}"
            if exposed:
                assert spec["httpGet"] == {"path": "/metrics", "port": "metrics"}, name
            else:
                assert f"http://127.0.0.1:{port}/metrics" in " ".join(spec["exec"]["command"])
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if exposed:
            declared = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert declared == {"metrics": port}, name
            assert annotations["prometheus.io/port"] == str(port), name
            if part in ("notifier", "cleanup"):  # scraped by pod annotation: no Service
                continue
            service_ports = r.named("Service", name)["spec"]["ports"]
            assert [(p["name"], p["port"], p["targetPort"]) for p in service_ports] == [
                ("metrics", port, "metrics")
            ], name
        else:
            assert "ports" not in container and not annotations, f"{name}: /metrics is closed"


def test_the_loopback_probe_reaches_the_metrics_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # The rendered probe command, run against flagsched's own metrics server bound as
    # the rendered settings say; and the same probe failing once the server is gone.
    port = free_port()
    r = rendering("default", f"metrics.workerPort={port}")
    container = only_container(r.workload("flagsched-worker"))
    settings = settings_from(monkeypatch, env_of(container))
    command = container["readinessProbe"]["exec"]["command"]
    assert command[0] == "python"
    probe = [sys.executable, *command[1:]]
    server = Metrics().serve(settings.metrics_port or 0, settings.metrics_addr)
    try:
        assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    finally:
        server.stop()
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode != 0


def test_admin_port_matches_its_setting_service_and_ingress() -> None:
    r = rendering("operator-surface")
    admin = r.workload("flagsched-admin")
    container = only_container(admin)
    env = env_of(container)
    port = int(env["FLAGSCHED_ADMIN_PORT"])
    assert env["FLAGSCHED_ADMIN_ADDR"] == "0.0.0.0", "the Service sends requests to the pod IP"
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", port)]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] == "http"
    service = r.named("Service", "flagsched-admin")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    values = _yaml().safe_load((CHART / "values.yaml").read_text())
    assert port == values["admin"]["port"] == 8080, "the admin API's default port"
    tokens = env["FLAGSCHED_ADMIN_TOKENS_FILE"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(tokens).parent) in mounts
    assert env["FLAGSCHED_TRACE_URL_TEMPLATE"].endswith("/trace/{trace_id}")


@pytest.mark.parametrize("value_set", SETS)
def test_pods_run_locked_down(value_set: str) -> None:
    uid = dockerfile_uid()
    r = rendering(value_set)
    for obj in r.workloads():
        name, pod = obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] == uid, f"{name}: not the image's user"
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        # Service links would add FLAGSCHED_<SERVICE>_PORT... variables to the settings.
        assert pod["enableServiceLinks"] is False, name
    for part, _pod, container in r.containers():
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, part
        assert security["allowPrivilegeEscalation"] is False, part
        assert security["runAsNonRoot"] is True, part
        assert security["capabilities"]["drop"] == ["ALL"], part
        assert "add" not in security["capabilities"], part
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][kind].keys(), f"{part} {kind}"


@pytest.mark.parametrize("value_set", SETS)
def test_network_policies_open_only_admin_and_metrics(value_set: str) -> None:
    r = rendering(value_set)
    policies = r.kind("NetworkPolicy")
    deny = r.named("NetworkPolicy", "flagsched-default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    for obj in r.workloads():
        assert selects(deny["podSelector"], pod_labels(obj)), obj["metadata"]["name"]
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            selected = [
                w for w in r.workloads() if selects(policy["spec"]["podSelector"], pod_labels(w))
            ]
            parts = {part_of(w) for w in selected}
            if "from" not in rule:  # from anywhere: the admin API only
                assert parts == {"admin"}, policy["metadata"]["name"]
                assert [p["port"] for p in rule["ports"]] == ["http"]
            else:
                assert parts == set(METRICS_PORTS), policy["metadata"]["name"]
                assert rule["from"] == [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                        }
                    }
                ]
                assert [p["port"] for p in rule["ports"]] == ["metrics"]
                for workload in selected:
                    names = {p["name"] for p in only_container(workload).get("ports", [])}
                    assert "metrics" in names
    assert r.has("NetworkPolicy", "flagsched-admin") == any(
        part_of(w) == "admin" for w in r.workloads()
    )


def test_service_links_could_not_shadow_a_setting() -> None:
    # Even with enableServiceLinks turned back on, no Service name may produce
    # FLAGSCHED_<field> (e.g. a Service "flagsched-metrics" gives FLAGSCHED_METRICS_PORT).
    fields = {f"{PREFIX}{name.upper()}" for name in Settings.model_fields}
    for value_set in SETS:
        for service in rendering(value_set).kind("Service"):
            base = service["metadata"]["name"].upper().replace("-", "_")
            made = {f"{base}_SERVICE_HOST", f"{base}_SERVICE_PORT", f"{base}_PORT"}
            for port in service["spec"].get("ports", []):
                tcp = f"{base}_PORT_{port['port']}_{port.get('protocol', 'TCP')}"
                made |= {tcp, f"{tcp}_PROTO", f"{tcp}_PORT", f"{tcp}_ADDR"}
                made.add(f"{base}_SERVICE_PORT_{port['name'].upper()}")
            assert not made & fields, service["metadata"]["name"]


@pytest.mark.parametrize("value_set", SETS)
def test_workers_have_stable_identities(value_set: str) -> None:
    r = rendering(value_set)
    worker = r.named("StatefulSet", "flagsched-worker")
    (identity,) = [e for e in only_container(worker)["env"] if e["name"] == "FLAGSCHED_WORKER_ID"]
    assert identity["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert not r.kind("Deployment") or all(part_of(d) != "worker" for d in r.kind("Deployment"))


@pytest.mark.parametrize("value_set", SETS)
def test_worker_scaling_fits_the_partitions(
    value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rendering(value_set)
    worker = r.named("StatefulSet", "flagsched-worker")
    settings = settings_from(monkeypatch, env_of(only_container(worker)))
    most = max(settings.due_partitions, settings.priority_partitions, settings.tier_partitions)
    pdb = r.named("PodDisruptionBudget", "flagsched-worker")["spec"]
    scaled = r.kind("ScaledObject")
    if not scaled:
        replicas = worker["spec"]["replicas"]
        assert 2 <= replicas <= min(settings.due_partitions, settings.priority_partitions)
        assert pdb["maxUnavailable"] < replicas
        return
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    spec = scaled[0]["spec"]
    values = _yaml().safe_load((CHART / "values.yaml").read_text())["worker"]["autoscaling"]
    assert spec["maxReplicaCount"] == most, "a worker more would get no partition"
    assert spec["minReplicaCount"] == math.ceil(most / values["maxPartitionsPerWorker"])
    assert spec["minReplicaCount"] >= 1, "never zero: due work needs a running worker"
    assert pdb["maxUnavailable"] < spec["minReplicaCount"] or spec["minReplicaCount"] == 1


@pytest.mark.parametrize("value_set", ["production", "operator-surface"])
def test_autoscaling_sums_the_lag_of_the_consumed_topics(
    value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rendering(value_set)
    settings = settings_from(
        monkeypatch, env_of(only_container(r.named("StatefulSet", "flagsched-worker")))
    )
    layout = settings.topic_layout()
    spec = r.named("ScaledObject", "flagsched-worker")["spec"]
    counted_up_to = (
        _yaml()
        .safe_load("\n".join(p.read_text() for p in VALUE_SETS[value_set]))["worker"]["autoscaling"]
        .get("countTiersUpToS", 120)
    )
    tiers = {t: s for t, s in layout.tier_topics.items() if s <= counted_up_to}
    assert tiers, "some tiers are counted"
    triggers = {t["name"]: t for t in spec["triggers"]}
    assert all(t["type"] == "kafka" for t in triggers.values())
    topics = {t["metadata"]["topic"]: t for t in triggers.values()}
    assert set(topics) == {layout.due, layout.priority, *tiers}
    for topic, trigger in topics.items():
        meta = trigger["metadata"]
        group = f"{settings.group_id}.priority" if topic == layout.priority else settings.group_id
        assert meta["consumerGroup"] == group, topic
        assert meta["bootstrapServers"] == settings.kafka_bootstrap_servers
        # Held tier records keep their partition's offset still: left out of the lag.
        assert meta["excludePersistentLag"] == ("true" if topic in tiers else "false"), topic
    # The sum of every trigger, not KEDA's default maximum.
    terms = [t.strip() for t in spec["advanced"]["scalingModifiers"]["formula"].split("+")]
    assert sorted(terms) == sorted(triggers)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] > max(tiers.values())
    # A held partition counts for one poll before it is seen standing still.
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] >= 2 * spec["pollingInterval"]


@pytest.mark.parametrize("value_set", SETS)
def test_grace_periods_cover_the_shutdowns(value_set: str, monkeypatch: pytest.MonkeyPatch) -> None:
    r = rendering(value_set)
    worker = r.named("StatefulSet", "flagsched-worker")
    env = env_of(only_container(worker))
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    bound = worker_shutdown_bound_s(settings_from(monkeypatch, env), env)
    assert grace > bound, f"terminationGracePeriodSeconds {grace} <= shutdown bound {bound}"
    dispatcher = r.named("Deployment", "flagsched-dispatcher")
    env = env_of(only_container(dispatcher))
    grace = dispatcher["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > dispatcher_shutdown_bound_s(settings_from(monkeypatch, env), env)


def test_setup_job_is_a_hook_that_runs_before_the_parts() -> None:
    r = rendering("default")
    job = r.named("Job", "flagsched-setup")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1 and "activeDeadlineSeconds" in job["spec"]
    hooks = {
        (o["kind"], o["metadata"]["name"]): o["metadata"]["annotations"]
        for o in r.objects
        if "helm.sh/hook" in o["metadata"].get("annotations", {})
    }
    assert set(hooks) == {("Job", "flagsched-setup"), ("ConfigMap", "flagsched-setup-sql")}
    for hook in hooks.values():
        assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    weight = {key: int(a["helm.sh/hook-weight"]) for key, a in hooks.items()}
    assert weight[("ConfigMap", "flagsched-setup-sql")] < weight[("Job", "flagsched-setup")]
    # Only the setup role runs DDL.
    url = env_of(only_container(job))["FLAGSCHED_DATABASE_URL"]
    assert urlsplit(url).username == "flagsched_setup"


# --- shutdown bounds --------------------------------------------------------------------


def worker_shutdown_bound_s(settings: Settings, env: dict[str, str]) -> float:
    """The longest a worker should take from SIGTERM to exit, from its settings.

    consumer/worker.py finishes the batch in hand: the shared transaction's longest
    statement (``apply_statement_timeout_ms``), plus one schedule whose flag is locked
    elsewhere (``apply_lock_timeout_ms``; a batch with several such flags takes longer,
    and a SIGKILL then is still safe), then commits its Kafka transaction (the request
    timeout, clients.py: ``max(5 s, connect_timeout_s)``). ``Worker._close`` lets both
    group consumers leave (kafka-python bounds close() by the request timeout), closes
    the transactional producer (5 s, consumer/txn.py) and the control channel (its
    consumer, then its producer: 5 s). cli.py then flushes queued spans (the batch
    span processor's export timeout, 30 s unless OTEL_BSP_EXPORT_TIMEOUT says).
    """
    request_s = max(5.0, settings.connect_timeout_s)
    batch_s = (settings.apply_statement_timeout_ms + settings.apply_lock_timeout_ms) / 1000
    close_s = 2 * request_s + 5.0 + request_s + 5.0
    return batch_s + request_s + close_s + span_flush_s(settings, env)


def dispatcher_shutdown_bound_s(settings: Settings, env: dict[str, str]) -> float:
    """producer/dispatcher.py ends after the round in hand: flush the producer and wait
    for the acknowledgements (``connect_timeout_s`` each), close the producer (5 s),
    then cli.py flushes queued spans."""
    return 2 * settings.connect_timeout_s + 5.0 + span_flush_s(settings, env)


def span_flush_s(settings: Settings, env: dict[str, str]) -> float:
    if settings.tracing == "off":
        return 0.0
    return int(env.get("OTEL_BSP_EXPORT_TIMEOUT", "30000")) / 1000


def test_shutdown_bound_of_the_defaults():
    # The defaults: 10 s statement + no lock wait + 10 s commit + 40 s close + 30 s spans.
    assert worker_shutdown_bound_s(Settings(), {}) == pytest.approx(90.0)


# --- Docker compose ---------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    docs = load_docs(COMPOSE)
    assert len(docs) == 1
    return docs[0]


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]  # type: ignore[no-any-return]


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments ignored (no quoting is used)."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        assert value[:1] not in ("'", '"'), f"{path.name}: {key}: quotes are kept literally"
        env[key.strip()] = value
    return env


def compose_env(name: str) -> dict[str, str]:
    """A service's environment: env_file(s), then environment (which wins)."""
    svc = service(name)
    files = svc.get("env_file", [])
    env: dict[str, str] = {}
    for file in [files] if isinstance(files, str) else files:
        env |= env_file(COMPOSE_DIR / (file if isinstance(file, str) else file["path"]))
    environment = svc.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return env | {k: str(v) for k, v in environment.items()}


def test_compose_has_the_stack():
    services = compose()["services"]
    assert set(services) >= {"kafka", "postgres", *FLAGSCHED_SERVICES}
    # The same broker and database as the dev stack.
    assert service("kafka")["image"] == KAFKA_IMAGE
    assert service("postgres")["image"] == POSTGRES_IMAGE
    for name in ("kafka", "postgres"):
        assert service(name)["healthcheck"]["test"], name
    for name in FLAGSCHED_SERVICES:
        depends = service(name)["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy", name
        assert depends["postgres"]["condition"] == "service_healthy", name
    for name in ("dispatcher", "worker"):
        assert service(name)["depends_on"]["init"]["condition"] == (
            "service_completed_successfully"
        )
    assert service("worker")["deploy"]["replicas"] == 2


def test_compose_kafka_is_a_single_kraft_node_for_transactions():
    env = {k: str(v) for k, v in service("kafka")["environment"].items()}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "not a base64 UUID"
    assert not cluster_id.startswith("-")
    # The address the flagsched containers use is one the broker advertises.
    bootstrap = compose_env("worker")["FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS"]
    advertised = [a.split("://", 1)[1] for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    assert bootstrap in advertised


def test_compose_database_url_matches_postgres():
    pg = {k: str(v) for k, v in service("postgres")["environment"].items()}
    for name in FLAGSCHED_SERVICES:
        url = urlsplit(compose_env(name)["FLAGSCHED_DATABASE_URL"])
        assert (url.hostname, url.port or 5432) == ("postgres", 5432), name
        assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
        assert url.path.lstrip("/") == pg["POSTGRES_DB"], name


def test_compose_settings_are_real_and_parse(monkeypatch):
    for name in FLAGSCHED_SERVICES:
        env = compose_env(name)
        unknown = sorted(key for key in env if not is_known_variable(key))
        assert not unknown, f"{name}: not a setting: {unknown}"
        settings = settings_from(monkeypatch, env)
        assert settings.replication_factor == 1, f"{name}: one broker"
        assert settings.metrics_addr == "0.0.0.0", name


def test_compose_commands_and_images():
    image = service("init")["image"]
    assert service("init")["build"]["context"] == "../.."
    assert (COMPOSE_DIR / "../.." / service("init")["build"]["dockerfile"]).resolve() == (
        DOCKERFILE
    )
    assert service("init")["entrypoint"] == ["sh", "-c"]
    assert_flagsched_script(" ".join(service("init")["command"]))
    assert service("init")["restart"] == "no"
    for name, command in (("dispatcher", ["producer"]), ("worker", ["worker"])):
        assert service(name)["image"] == image, f"{name}: built by init, same name"
        assert "build" not in service(name), f"{name}: one build, in init"
        assert service(name)["command"] == command
        assert_flagsched_args(service(name)["command"])


def test_compose_metrics_ports():
    for name in ("dispatcher", "worker"):
        port = int(compose_env(name)["FLAGSCHED_METRICS_PORT"])
        targets = []
        for spec in service(name)["ports"]:
            targets.append(
                int(spec["target"]) if isinstance(spec, dict) else int(spec.split(":")[-1])
            )
        assert targets == [port], name
    # Replicas cannot share a fixed host port: the worker's is left to Docker.
    (worker_port,) = service("worker")["ports"]
    assert isinstance(worker_port, dict) and "published" not in worker_port


def test_compose_grace_periods_cover_shutdown(monkeypatch):
    env = compose_env("worker")
    grace = go_duration_s(service("worker")["stop_grace_period"])
    assert grace > worker_shutdown_bound_s(settings_from(monkeypatch, env), env)
    env = compose_env("dispatcher")
    grace = go_duration_s(service("dispatcher")["stop_grace_period"])
    assert grace > dispatcher_shutdown_bound_s(settings_from(monkeypatch, env), env)
    settings = settings_from(monkeypatch, compose_env("worker"))
    assert service("worker")["deploy"]["replicas"] <= settings.due_partitions


def go_duration_s(text: str) -> float:
    """Compose's durations: ``1m30s``, ``120s``, ``2m``..."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# --- Dockerfile -------------------------------------------------------------------------


@cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        word, _, rest = pending.partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return tuple(instructions)


def instructions(word: str) -> list[str]:
    return [rest for w, rest in dockerfile() if w == word]


def final_stage() -> list[tuple[str, str]]:
    steps = list(dockerfile())
    last = max(i for i, (w, _) in enumerate(steps) if w == "FROM")
    return steps[last:]


def dockerfile_uid() -> int:
    users = [rest for w, rest in final_stage() if w == "USER"]
    assert users, "the image runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric USER, so runAsNonRoot can verify it"
    return int(uid)


def dockerfile_exposed_ports() -> set[int]:
    return {int(p.split("/")[0]) for rest in instructions("EXPOSE") for p in rest.split()}


@cache
def flagsched_image() -> str:
    images = {str(container["image"]) for _, _, container in rendering("default").containers()}
    assert len(images) == 1, f"one image for every flagsched container: {images}"
    return images.pop()


def image_name(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def test_dockerfile_is_a_slim_multi_stage_non_root_build():
    args = dict(a.split("=", 1) for a in instructions("ARG") if "=" in a)
    bases = [
        f.split()[0].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", ""))
        for f in instructions("FROM")
    ]
    assert len(bases) >= 2, "multi-stage"
    assert set(bases) == {"python:3.11-slim"}, bases
    assert dockerfile_uid() != 0
    final = final_stage()
    assert any(w == "COPY" and rest.startswith("--from=") for w, rest in final)
    text = DOCKERFILE.read_text()
    assert "[dev]" not in text and "requirements-dev" not in text, "no dev dependencies"


def test_dockerfile_entrypoint_is_the_console_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert instructions("ENTRYPOINT")[-1] == '["flagsched"]'
    assert "flagsched" in scripts
    assert instructions("CMD")[-1] == '["worker"]'
    assert_flagsched_args(["worker"])
    # The metrics ports used by compose and Kubernetes are documented in the image.
    assert {9400, 9401} <= dockerfile_exposed_ports()


def test_dockerignore_keeps_what_the_build_copies():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list: everything else stays out of the context"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    for rest in instructions("COPY"):
        if rest.startswith("--from="):
            continue
        *sources, _dest = rest.split()
        for source in sources:
            assert source.rstrip("/") in allowed, f"COPY {source} is not in the context"
            assert (ROOT / source).exists(), source


# --- shared ----------------------------------------------------------------------------


def is_known_variable(name: str, part: str | None = None) -> bool:
    """A flagsched setting (FLAGSCHED_<field>, or one of ``part``'s own settings:
    PART_SETTINGS), a standard OpenTelemetry variable or one of libpq's that the chart
    sets (LIBPQ_VARIABLES)."""
    if name.startswith("OTEL_") or name in LIBPQ_VARIABLES:
        return True
    if name in PART_SETTINGS.get(part or "", frozenset()):
        return True
    field = name.removeprefix(PREFIX).lower()
    return name.startswith(PREFIX) and field in Settings.model_fields


def settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Settings as a process with exactly ``env`` would read them (a bad value raises
    ConfigError naming the variable)."""
    with monkeypatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(PREFIX):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return load_settings()


def part_settings_from(monkeypatch: pytest.MonkeyPatch, part: str, env: dict[str, str]) -> None:
    """The admin API's or the notifier's own settings as that process would read them
    from exactly ``env`` (a bad value raises ConfigError naming the variable)."""
    loaders = {"admin": load_admin_settings, "notifier": load_notify_settings}
    if part not in loaders:
        return
    with monkeypatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(PREFIX):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        loaders[part]()


def assert_flagsched_args(args: list[str]) -> None:
    """``args`` is a valid command line of the ``flagsched`` console script."""
    parsed = build_parser().parse_args(args)
    assert callable(parsed.handler), args


def assert_flagsched_script(script: str) -> None:
    """A ``cmd && cmd`` shell script whose every command is a valid flagsched command."""
    for part in script.split("&&"):
        words = shlex.split(part)
        assert words[0] == "flagsched", script
        assert_flagsched_args(words[1:])
