"""The admin UI's vendored files are the ones recorded (name, version, sha256), and
every template and static file ships in the admin wheel (its package-data globs)."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "admin" / "src" / "flagsched" / "admin" / "ui"


@pytest.mark.parametrize(
    ("folder", "name"),
    [(UI / "static", "htmx.min.js"), (ROOT / "tests" / "support" / "vendor", "axe.min.js")],
)
def test_a_vendored_file_has_the_recorded_hash(folder: Path, name: str) -> None:
    table = (folder / "VENDORED.md").read_text("utf-8")
    row = next(line for line in table.splitlines() if line.startswith(f"| `{name}`"))
    recorded = re.findall(r"`([0-9a-f]{64})`", row)
    assert recorded == [hashlib.sha256((folder / name).read_bytes()).hexdigest()]


def test_htmx_is_the_2_x_line_chosen_on_purpose() -> None:
    head = (UI / "static" / "htmx.min.js").read_text("utf-8")[:5000]
    assert re.search(r'version:"2\.0\.\d+"', head)


def test_every_template_and_static_file_is_package_data() -> None:
    with (ROOT / "admin" / "pyproject.toml").open("rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["flagsched.admin.ui"]
    shipped = [p for p in UI.rglob("*") if p.is_file() and p.parent.name in ("templates", "static")]
    assert shipped
    for path in shipped:
        rel = path.relative_to(UI).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} would not ship in the wheel"
