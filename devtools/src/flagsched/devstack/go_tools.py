"""Go-built checkers and viewers, cached in the dev home like the Kafka jars.

``helm`` renders the chart, ``kubeconform`` checks the result against the Kubernetes
schemas and KEDA's CRD schemas, ``jaeger`` is the trace viewer of the tracing test.
Each is built once from the Go module proxy into ``{dev_home}/bin/{name}-{version}``;
a binary counts only once it is complete (it is built elsewhere and renamed). The
versions are written down here only.

    python -m flagsched.devstack.go_tools helm kubeconform keda   # what `make setup` builds
    python -m flagsched.devstack.go_tools jaeger                  # the trace viewer
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flagsched.devstack.process import file_lock
from flagsched.runtime.errors import DevStackError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoTool:
    """A command built from one Go module at one version."""

    name: str
    module: str
    version: str
    package: str
    #: The module has ``replace`` directives, so ``go install mod@v`` refuses it: its
    #: source is downloaded and built in place instead.
    build_in_module: bool = False


HELM = GoTool("helm", "helm.sh/helm/v3", "v3.22.0", "./cmd/helm")
KUBECONFORM = GoTool("kubeconform", "github.com/yannh/kubeconform", "v0.8.0", "./cmd/kubeconform")
JAEGER = GoTool(
    "jaeger", "github.com/jaegertracing/jaeger", "v1.76.0", "./cmd/jaeger", build_in_module=True
)
TOOLS = {tool.name: tool for tool in (HELM, KUBECONFORM, JAEGER)}

KEDA_MODULE, KEDA_VERSION = "github.com/kedacore/keda/v2", "v2.21.0"
#: The KEDA resources the chart renders.
KEDA_CRDS = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")


def dev_home() -> Path:
    """``FLAGSCHED_DEV_HOME``, else ``~/.cache/flagsched`` (as the settings say)."""
    return Path(os.environ.get("FLAGSCHED_DEV_HOME") or Path.home() / ".cache" / "flagsched")


def tool_path(tool: GoTool, home: Path | None = None) -> Path:
    """Where ``tool`` is cached (it may not be there yet)."""
    return (home or dev_home()) / "bin" / f"{tool.name}-{tool.version}"


def keda_schema_dir(home: Path | None = None) -> Path:
    """Where the KEDA CRDs' JSON schemas are cached, ``{kind}_{version}.json``."""
    return (home or dev_home()) / "schemas" / f"keda-{KEDA_VERSION}"


def _go() -> str:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None
    )
    if go is None:
        raise DevStackError("go not found: install Go 1.24 or newer (https://go.dev/doc/install)")
    return go


def module_dir(module: str, version: str) -> Path:
    """The (read-only) source directory of ``module@version`` in Go's module cache."""
    done = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        check=False,
    )
    info = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in info:
        raise DevStackError(
            f"go mod download {module}@{version} failed: {info.get('Error') or done.stderr}"
        )
    return Path(info["Dir"])


def ensure_tool(tool: GoTool, home: Path | None = None) -> Path:
    """The path of ``tool``, built first if it is not cached. Concurrent callers wait."""
    path = tool_path(tool, home)
    if path.is_file():
        return path
    with file_lock(path.parent / ".lock", timeout_s=1800, what="the Go tool cache"):
        if path.is_file():
            return path
        log.info("building %s %s from the Go module proxy (once)", tool.name, tool.version)
        with tempfile.TemporaryDirectory(prefix=f"{tool.name}-") as scratch:
            built = Path(scratch) / tool.name
            if tool.build_in_module:
                source = Path(scratch) / "src"
                shutil.copytree(module_dir(tool.module, tool.version), source)
                for entry in [source, *source.rglob("*")]:
                    entry.chmod(entry.stat().st_mode | 0o200)  # the module cache is read-only
                command = [_go(), "build", "-trimpath", "-o", str(built), tool.package]
                cwd: Path | None = source
            else:
                target = f"{tool.module}/{tool.package.removeprefix('./')}@{tool.version}"
                command, cwd = [_go(), "install", "-trimpath", target], None
            env = os.environ | {"GOBIN": scratch, "CGO_ENABLED": "0"}
            done = subprocess.run(
                command, cwd=cwd, env=env, capture_output=True, text=True, check=False
            )
            if done.returncode != 0 or not built.is_file():
                raise DevStackError(f"building {tool.name} failed: {done.stderr[-2000:]}")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(built, path.with_suffix(".part"))
            path.with_suffix(".part").rename(path)
    return path


def ensure_keda_schemas(home: Path | None = None) -> Path:
    """JSON schemas of KEDA's CRDs, converted with kubeconform's own script."""
    out = keda_schema_dir(home)
    marker = out / ".complete"
    if marker.is_file():
        return out
    keda = module_dir(KEDA_MODULE, KEDA_VERSION) / "config" / "crd" / "bases"
    script = (
        module_dir(KUBECONFORM.module, KUBECONFORM.version) / "scripts" / "openapi2jsonschema.py"
    )
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, str(script), *(str(keda / crd) for crd in KEDA_CRDS)],
        cwd=out,
        env=os.environ | {"FILENAME_FORMAT": "{kind}_{version}"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise DevStackError(f"converting KEDA's CRDs failed: {done.stderr[-2000:]}")
    marker.write_text("\n".join(sorted(p.name for p in out.glob("*.json"))))
    return out


def main(argv: list[str]) -> int:
    """Ensure each named tool (``helm``, ``kubeconform``, ``jaeger``, ``keda``)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in argv or ["helm", "kubeconform", "keda"]:
        try:
            path = ensure_keda_schemas() if name == "keda" else ensure_tool(TOOLS[name])
        except DevStackError as exc:
            # The checks that need it skip on a developer machine and fail in CI.
            print(f"{name}: {exc}", file=sys.stderr)
            continue
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
