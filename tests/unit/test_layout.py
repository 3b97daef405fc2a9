"""The workspace layout: each top-level part is a distribution whose declared
dependencies are exactly what its code imports (README, "Parts")."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

from flagsched.schemas import __version__

ROOT = Path(__file__).resolve().parents[2]
#: part folder -> the flagsched subpackages it ships.
PARTS = {
    "schemas": {"schemas"},
    "runtime": {"runtime"},
    "producer": {"producer"},
    "consumer": {"consumer"},
    "admin": {"admin"},
    "notifier": {"notifier"},
    "devtools": {"devstack", "demo"},
    ".": {"cli"},
}
#: import name of each third-party distribution the parts declare.
IMPORT_NAME = {
    "pydantic": "pydantic",
    "pydantic-settings": "pydantic_settings",
    "psycopg": "psycopg",
    "kafka-python": "kafka",
    "tenacity": "tenacity",
    "opentelemetry-api": "opentelemetry",
    "opentelemetry-sdk": "opentelemetry",
    "opentelemetry-exporter-otlp-proto-http": "opentelemetry",
    "prometheus-client": "prometheus_client",
    "rich": "rich",
    "httpx": "httpx",
    "pyyaml": "yaml",
    "testcontainers": "testcontainers",
    "psycopg-pool": "psycopg_pool",
    "pyjwt": "jwt",
    "fastapi": "fastapi",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "jinja2": "jinja2",
    "markupsafe": "markupsafe",
}
#: declared without an import of their own: kafka-python uses crc32c when it is there.
RUNTIME_ONLY = {"crc32c"}


def _project(part: str) -> dict[str, object]:
    with (ROOT / part / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]  # type: ignore[no-any-return]


def _declared(part: str) -> set[str]:
    project = _project(part)
    deps = list(project.get("dependencies", []))  # type: ignore[call-overload]
    if part != ".":  # the root's extras are dev and bench tools, not the CLI's own
        for extra in project.get("optional-dependencies", {}).values():  # type: ignore[attr-defined]
            deps += extra
    return {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower() for d in deps}


def _imports(part: str) -> tuple[set[str], set[str]]:
    """(flagsched subpackages, third-party top-level modules) the part's code imports."""
    own, external = set(), set()
    src = ROOT / ("cli" if part == "." else part) / "src" / "flagsched"
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top, _, rest = name.partition(".")
                if top == "flagsched":
                    own.add(rest.split(".")[0])
                elif top not in sys.stdlib_module_names and top != "__future__":
                    external.add(top)
    return own, external


def _dist_of(sub: str) -> str:
    part = next(p for p, subs in PARTS.items() if sub in subs)
    return "flagsched" if part == "." else f"flagsched-{part}"


@pytest.mark.parametrize("part", sorted(PARTS))
def test_a_part_declares_what_it_imports_and_nothing_else(part: str) -> None:
    declared = _declared(part)
    own, external = _imports(part)
    needed_parts = {_dist_of(sub) for sub in own - PARTS[part]}
    declared_parts = {d for d in declared if d.startswith("flagsched")}
    if part == ".":
        # The meta-package installs every product part; the CLI reaches the developer
        # tooling only when it is there (its `dev` extra), never in a product install.
        product = {f"flagsched-{p}" for p in PARTS if p not in (".", "devtools")}
        assert declared_parts == product
        assert needed_parts - {"flagsched-devtools"} <= product
        assert "flagsched-devtools" in _project(".")["optional-dependencies"]["dev"][0]  # type: ignore[index]
    else:
        assert needed_parts == declared_parts, f"{part}: imports {needed_parts}"
    declared_external = {IMPORT_NAME.get(d, d) for d in declared - declared_parts - RUNTIME_ONLY}
    assert external == declared_external, f"{part}: imports {external}"


@pytest.mark.parametrize("part", sorted(PARTS))
def test_every_part_has_a_readme_and_the_product_version(part: str) -> None:
    project = _project(part)
    assert project["version"] == __version__
    assert (ROOT / part / str(project["readme"])).is_file()


def test_the_contract_depends_on_pydantic_only() -> None:
    assert _declared("schemas") == {"pydantic"}


def test_the_namespace_has_no_init_in_any_part() -> None:
    for part in PARTS:
        base = ROOT / ("cli" if part == "." else part) / "src" / "flagsched"
        assert not (base / "__init__.py").exists(), f"{base} would hide the other parts"
