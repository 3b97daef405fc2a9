"""The deployment files stay true to the code: the Dockerfile, deploy/compose/ and
deploy/k8s/ use real settings with values that parse, real commands, one image, the
metrics port that the probes and Services use, and a grace period longer than a
worker needs to stop.

Static checks only: no service, Docker engine or cluster is needed (the build machine
has none, so these files have never been run here; see docs/deployment.md). The YAML
is read with PyYAML and ``kubectl kustomize`` builds the Kubernetes base; a missing
tool skips on a developer machine and fails the run when ``CI=true``.
"""

from __future__ import annotations

import base64
import importlib
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

from flagsched.cli import build_parser
from flagsched.devstack.containers import KAFKA_IMAGE, POSTGRES_IMAGE
from flagsched.runtime.settings import Settings, load_settings
from tests.support.required import unavailable

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_TEMPLATE = K8S / "secret.example.yaml"

PREFIX = "FLAGSCHED_"
FLAGSCHED_SERVICES = ("init", "dispatcher", "worker")
#: The value given to env entries that Kubernetes fills in (valueFrom: fieldRef ...).
FROM_CLUSTER = "filled-in-by-kubernetes"


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


# --- Kubernetes -----------------------------------------------------------------------


def manifest_files() -> list[Path]:
    """The manifests applied by the base (every YAML file but the kustomization and
    the ``*.example.yaml`` templates)."""
    return sorted(
        p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION and not p.name.endswith(".example.yaml")
    )


@cache
def _k8s_objects() -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple(
        (p.name, doc) for p in [*manifest_files(), SECRET_TEMPLATE] for doc in load_docs(p)
    )


def k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for the manifests and the Secret template."""
    return list(_k8s_objects())


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for _, obj in k8s_objects() if obj["kind"] == kind]


def k8s_named(kind: str, name: str) -> dict[str, Any]:
    found = [obj for obj in k8s_kind(kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every Deployment and Job."""
    for obj in k8s_kind("Deployment") + k8s_kind("Job"):
        yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def k8s_containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) of every container, init ones included."""
    for name, pod in pod_templates():
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            yield name, pod, container


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment the container starts with: envFrom sources, then env (which
    wins, as in Kubernetes). Values from the cluster get a placeholder."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= k8s_named("ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            env |= k8s_named("Secret", source["secretRef"]["name"])["stringData"]
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", FROM_CLUSTER)
    return env


def workload(name: str) -> dict[str, Any]:
    return k8s_named("Deployment", name)


def only_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def test_every_manifest_parses_and_names_itself():
    assert manifest_files(), "no manifests in deploy/k8s"
    for file, obj in k8s_objects():
        assert obj.get("apiVersion"), f"{file}: apiVersion missing"
        assert obj.get("kind"), f"{file}: kind missing"
        assert obj.get("metadata", {}).get("name"), f"{file}: metadata.name missing"
        # A base for any namespace: `kubectl apply -n NS` or an overlay sets it.
        assert "namespace" not in obj["metadata"], f"{file}: namespace is set"


def test_kustomization_lists_every_manifest():
    kustomization = load_docs(KUSTOMIZATION)[0]
    listed = kustomization["resources"]
    assert sorted(listed) == [p.name for p in manifest_files()]
    assert len(set(listed)) == len(listed)
    # The Secret template stays out: an apply must never overwrite real credentials.
    assert SECRET_TEMPLATE.name not in listed
    images = {i["name"] for i in kustomization.get("images", [])}
    assert images == {image_name(flagsched_image())}


def test_setup_phase_selects_the_config_and_the_job():
    # docs/deployment.md applies these first, with
    # -l 'app.kubernetes.io/component in (config,setup)', and waits for the Job.
    phase = {
        (obj["kind"], obj["metadata"]["name"])
        for file, obj in k8s_objects()
        if file != SECRET_TEMPLATE.name
        and obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        in ("config", "setup")
    }
    assert phase == {("ConfigMap", "flagsched-config"), ("Job", "flagsched-setup")}


def test_kustomize_builds_the_base():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        _missing("kubectl is missing (it builds the kustomization)")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    built = [d for d in _yaml().safe_load_all(done.stdout) if d is not None]
    expected = {
        (obj["kind"], obj["metadata"]["name"])
        for file, obj in k8s_objects()
        if file != SECRET_TEMPLATE.name
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in built} == expected


def test_k8s_settings_are_real_and_parse(monkeypatch):
    config = k8s_named("ConfigMap", "flagsched-config")
    for key, value in config["data"].items():
        assert isinstance(value, str), f"ConfigMap {key}: values must be strings"
        assert value, f"ConfigMap {key}: leave a setting out instead of giving it ''"
    for workload_name, _pod, container in k8s_containers():
        env = k8s_env(container)
        unknown = sorted(name for name in env if not is_known_variable(name))
        assert not unknown, f"{workload_name}: not a setting: {unknown}"
        settings = settings_from(monkeypatch, env)
        assert settings.kafka_bootstrap_servers and settings.database_url
        assert settings.metrics_addr not in ("127.0.0.1", "localhost", "::1"), (
            f"{workload_name}: /metrics would be unreachable for probes and Prometheus"
        )


def test_k8s_references_resolve():
    names = {(obj["kind"], obj["metadata"]["name"]) for _, obj in k8s_objects()}
    for workload_name, _pod, container in k8s_containers():
        for source in container.get("envFrom", []):
            kind, ref = (
                ("ConfigMap", source["configMapRef"])
                if "configMapRef" in source
                else ("Secret", source["secretRef"])
            )
            assert (kind, ref["name"]) in names, f"{workload_name}: no {kind} {ref['name']}"
    for service in k8s_kind("Service"):
        selector = service["spec"]["selector"]
        matched = [
            name for name, _pod in pod_templates() if selector.items() <= pod_labels(name).items()
        ]
        assert matched, f"Service {service['metadata']['name']} selects no pod"
    for pdb in k8s_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels("flagsched-worker").items()


def pod_labels(workload_name: str) -> dict[str, str]:
    for obj in k8s_kind("Deployment") + k8s_kind("Job"):
        if obj["metadata"]["name"] == workload_name:
            return obj["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]
    raise AssertionError(workload_name)


def test_deployment_selectors_match_their_pods():
    for obj in k8s_kind("Deployment"):
        selector = obj["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels(obj["metadata"]["name"]).items()


def test_k8s_commands_are_real():
    for workload_name, _pod, container in k8s_containers():
        assert container["image"] == flagsched_image(), workload_name
        if "command" in container:  # the entrypoint replaced: a shell script
            assert container["command"] == ["sh", "-c"], workload_name
            assert_flagsched_script(" ".join(container["args"]))
        else:  # arguments to the image's ENTRYPOINT ["flagsched"]
            assert_flagsched_args(container["args"])


def test_probes_use_the_metrics_port():
    services = {
        s["spec"]["selector"]["app.kubernetes.io/component"]: s for s in k8s_kind("Service")
    }
    for deployment in k8s_kind("Deployment"):
        name = deployment["metadata"]["name"]
        container = only_container(deployment)
        port = int(k8s_env(container)["FLAGSCHED_METRICS_PORT"])
        declared = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert declared == {"metrics": port}, name
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/metrics", f"{name} {probe}"
            assert get["port"] in ("metrics", port), f"{name} {probe}"
            assert container[probe]["timeoutSeconds"] >= 5, f"{name} {probe}"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port), name
        assert annotations["prometheus.io/path"] == "/metrics", name
        component = deployment["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/component"
        ]
        service_ports = services[component]["spec"]["ports"]
        assert [(p["name"], p["port"], p["targetPort"]) for p in service_ports] == [
            ("metrics", port, "metrics")
        ], name
    assert {
        int(only_container(d)["ports"][0]["containerPort"]) for d in k8s_kind("Deployment")
    } <= (dockerfile_exposed_ports())


def test_pods_run_locked_down():
    uid = dockerfile_uid()
    for workload_name, pod in pod_templates():
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, workload_name
        assert security["runAsUser"] == uid, f"{workload_name}: not the image's user"
        assert pod["automountServiceAccountToken"] is False, workload_name
        # Service links would add FLAGSCHED_<SERVICE>_PORT... variables to the settings.
        assert pod["enableServiceLinks"] is False, workload_name
    for workload_name, _pod, container in k8s_containers():
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, workload_name
        assert security["allowPrivilegeEscalation"] is False, workload_name
        assert security["capabilities"]["drop"] == ["ALL"], workload_name
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= resources[kind].keys(), f"{workload_name} {kind}"


def test_service_links_could_not_shadow_a_setting():
    # Even with enableServiceLinks turned back on, no Service name may produce
    # FLAGSCHED_<field> (e.g. a Service "flagsched-metrics" gives FLAGSCHED_METRICS_PORT).
    fields = {f"{PREFIX}{name.upper()}" for name in Settings.model_fields}
    for service in k8s_kind("Service"):
        base = service["metadata"]["name"].upper().replace("-", "_")
        made = {f"{base}_SERVICE_HOST", f"{base}_SERVICE_PORT", f"{base}_PORT"}
        for port in service["spec"]["ports"]:
            tcp = f"{base}_PORT_{port['port']}_{port.get('protocol', 'TCP')}"
            made |= {tcp, f"{tcp}_PROTO", f"{tcp}_PORT", f"{tcp}_ADDR"}
        made |= {f"{base}_SERVICE_PORT_{p['name'].upper()}" for p in service["spec"]["ports"]}
        assert not made & fields, service["metadata"]["name"]


def test_worker_scaling_fits_the_partitions(monkeypatch):
    worker = workload("flagsched-worker")
    settings = settings_from(monkeypatch, k8s_env(only_container(worker)))
    replicas = worker["spec"]["replicas"]
    assert 2 <= replicas <= min(settings.due_partitions, settings.priority_partitions)
    pdb = k8s_named("PodDisruptionBudget", "flagsched-worker")["spec"]
    assert pdb.get("maxUnavailable", 0) < replicas or pdb.get("minAvailable", 0) < replicas


def test_k8s_worker_grace_period_covers_its_shutdown(monkeypatch):
    worker = workload("flagsched-worker")
    env = k8s_env(only_container(worker))
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    bound = worker_shutdown_bound_s(settings_from(monkeypatch, env), env)
    assert grace >= 30
    assert grace > bound, f"terminationGracePeriodSeconds {grace} <= shutdown bound {bound}"
    dispatcher = workload("flagsched-dispatcher")
    env = k8s_env(only_container(dispatcher))
    grace = dispatcher["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > dispatcher_shutdown_bound_s(settings_from(monkeypatch, env), env)


def test_setup_job_runs_to_completion_once():
    job = k8s_named("Job", "flagsched-setup")
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["backoffLimit"] >= 1
    assert "activeDeadlineSeconds" in job["spec"]


def test_secret_template_has_placeholders_only():
    secret = load_docs(SECRET_TEMPLATE)[0]
    assert secret["kind"] == "Secret"
    assert "data" not in secret, "use stringData placeholders, never encoded values"
    values = secret["stringData"]
    assert "FLAGSCHED_DATABASE_URL" in values
    assert all(is_known_variable(name) for name in values)
    assert all("CHANGE-ME" in value for value in values.values())


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
    images = {str(container["image"]) for _, _, container in k8s_containers()}
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


def is_known_variable(name: str) -> bool:
    """A flagsched setting (FLAGSCHED_<field>) or a standard OpenTelemetry variable."""
    if name.startswith("OTEL_"):
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
