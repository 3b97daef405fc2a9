"""The Helm chart as the tests see it: rendered by the real ``helm``, checked by the real
``kubeconform``. Both are built into the dev cache by ``make setup``
(flagsched.devstack.go_tools); a missing one skips locally and fails in CI.
"""

from __future__ import annotations

import importlib
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from flagsched.devstack.go_tools import HELM, KUBECONFORM, keda_schema_dir, tool_path
from tests.support.required import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "flagsched"
EXAMPLES = ROOT / "deploy" / "helm" / "examples"
RELEASE = "flagsched"
#: The Kubernetes version the chart is rendered for and validated against (the oldest
#: the chart supports: PodDisruptionBudget's unhealthyPodEvictionPolicy is GA in 1.31,
#: beta and on by default since 1.27).
KUBE_VERSION = "1.30.0"

#: The value sets the tests render: the defaults and the two example files.
VALUE_SETS: dict[str, tuple[Path, ...]] = {
    "default": (),
    "production": (EXAMPLES / "production.yaml",),
    "operator-surface": (EXAMPLES / "operator-surface.yaml",),
}


def binary(tool: Any) -> Path:
    """A Go tool's cached binary, or skip (fail in CI) saying how to build it."""
    path = tool_path(tool)
    if not path.is_file():
        unavailable(f"{tool.name} {tool.version} is not built: run `make setup` ({path})")
    return path


def helm(*args: str) -> str:
    """Run helm; its stdout, or an AssertionError with its stderr."""
    done = subprocess.run(
        [str(binary(HELM)), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@cache
def rendered_text(value_set: str, *sets: str) -> str:
    """``helm template`` of the chart with a value set and ``--set`` overrides."""
    args = ["template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION]
    for path in VALUE_SETS[value_set]:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    return helm(*args)


def render(value_set: str, *sets: str) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders (fresh copies: tests may change them)."""
    yaml = importlib.import_module("yaml")
    docs = [d for d in yaml.safe_load_all(rendered_text(value_set, *sets)) if d is not None]
    assert all(isinstance(d, dict) for d in docs)
    return docs


@cache
def k8s_schema_dir() -> Path:
    """kubernetes-validate's schemas for KUBE_VERSION, with their ``$ref``s made absolute
    ``file://`` URLs (they point at ``/api/_definitions.json``, which kubeconform cannot
    resolve), in a directory of their own under the dev cache."""
    try:
        package = importlib.import_module("kubernetes_validate")
    except ImportError:
        unavailable("kubernetes-validate is missing (a dev dependency: make setup)")
    schemas = Path(str(package.__file__)).parent / "kubernetes-json-schema"
    source = schemas / f"v{KUBE_VERSION}-local-strict"
    target = keda_schema_dir().parent / f"kubernetes-v{KUBE_VERSION}-strict"
    marker = target / ".complete"
    if not marker.is_file():
        target.mkdir(parents=True, exist_ok=True)
        definitions = (target / "_definitions.json").as_uri()
        for schema in source.glob("*.json"):
            text = schema.read_text().replace('"/api/_definitions.json', f'"{definitions}')
            (target / schema.name).write_text(text)
        marker.touch()
    return target


def kubeconform(manifests: str) -> dict[str, Any]:
    """kubeconform's JSON report on ``manifests``: strict, Kubernetes' and KEDA's
    schemas only, no download."""
    keda = keda_schema_dir()
    if not (keda / ".complete").is_file():
        unavailable(f"KEDA's CRD schemas are not converted: run `make setup` ({keda})")
    command = [
        str(binary(KUBECONFORM)),
        "-strict",
        "-summary",
        "-output",
        "json",
        "-kubernetes-version",
        KUBE_VERSION,
        "-schema-location",
        f"{k8s_schema_dir()}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        "-schema-location",
        f"{keda}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
    ]
    done = subprocess.run(
        command, input=manifests, capture_output=True, text=True, timeout=120, check=False
    )
    report: dict[str, Any] = json.loads(done.stdout)
    report["returncode"] = done.returncode
    return report
