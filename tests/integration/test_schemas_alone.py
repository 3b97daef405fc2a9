"""A downstream team installs only the contract (``pip install ./schemas``) and decodes
the dead-letter and lifecycle records a real run produced, with typed models.

The samples in tests/data/contract/ were recorded from a real dispatcher and worker by
``python -m tests.support.record_contract_samples``. The check runs in a fresh virtual
environment that holds nothing but ``flagsched-schemas`` and what it depends on.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "data" / "contract"

pytestmark = pytest.mark.integration

# Runs inside the fresh environment: decode every sample, report what it saw.
CHECK = r"""
import base64, importlib.metadata, importlib.resources, importlib.util, json, sys
from flagsched.schemas.events import LifecycleEvent, LifecycleType, ScheduleDue
from flagsched.schemas.headers import DeadLetterReason, RecordHeaders

def b(text):
    return None if text is None else base64.b64decode(text)

samples = sys.argv[1]
dead, life = [], []
for rec in json.load(open(f"{samples}/dead-letter.json")):
    event = ScheduleDue.model_validate_json(b(rec["value"]))
    headers = RecordHeaders.decode([(k, b(v)) for k, v in rec["headers"]])
    assert isinstance(headers.dlt_reason, DeadLetterReason), headers
    dead.append([event.flag_key, headers.dlt_reason.value, headers.error_class, headers.attempt])
for rec in json.load(open(f"{samples}/lifecycle.json")):
    event = LifecycleEvent.model_validate_json(b(rec["value"]))
    assert isinstance(event.type, LifecycleType)
    life.append([event.flag_key, event.type.value, event.attempt])
data = importlib.resources.files("flagsched.schemas")
print(json.dumps({
    "dead": dead,
    "lifecycle": life,
    "dists": sorted(
        d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()
    ),
    "runtime_importable": importlib.util.find_spec("flagsched.runtime") is not None,
    "migrations": sorted(p.name for p in data.joinpath("migrations").iterdir()),
    "asyncapi": data.joinpath("asyncapi", "flagsched.asyncapi.json").is_file(),
}))
"""


@pytest.mark.timeout(600)  # a fresh virtualenv and pip installs: slow on a loaded machine
def test_the_contract_installs_alone_and_decodes_real_records(tmp_path: Path) -> None:
    env_dir = tmp_path / "subscriber"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "./schemas"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    run = subprocess.run(
        [str(python), "-c", CHECK, str(SAMPLES)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)

    # pydantic (with its own dependencies) is all the contract brings along.
    others = set(seen["dists"]) - {"flagsched-schemas", "pip", "setuptools"}
    assert others <= {
        "pydantic",
        "pydantic-core",
        "annotated-types",
        "typing-extensions",
        "typing-inspection",
    }, others
    assert "pydantic" in others
    assert not seen["runtime_importable"]
    assert seen["asyncapi"]
    assert seen["migrations"] and all(name.endswith(".sql") for name in seen["migrations"])

    assert sorted(seen["dead"]) == [
        ["missing.flag", "permanent", "flag_not_found", 1],
        ["promo.locked", "exhausted", "lock_contention", 2],
    ]
    assert sorted(seen["lifecycle"]) == [
        ["missing.flag", "dead_lettered", 1],
        ["promo.holiday", "applied", 1],
        ["promo.locked", "dead_lettered", 2],
        ["promo.locked", "retry_scheduled", 1],
    ]
    assert sys.version_info >= (3, 11)


@pytest.mark.timeout(900)
def test_the_product_installs_without_the_developer_tooling(tmp_path: Path) -> None:
    """What the container image installs (the Dockerfile's parts): the CLI works, the
    dev stack and the demo are not there, and it asks for the user's own services."""
    env_dir = tmp_path / "product"
    venv.create(env_dir, with_pip=True)
    parts = ["./schemas", "./runtime", "./producer", "./consumer", "./admin", "./notifier", "."]
    install = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", *parts],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    cli = str(env_dir / "bin" / "flagsched")
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    usage = subprocess.run([cli, "--help"], capture_output=True, text=True, env=clean, timeout=60)
    assert usage.returncode == 0, usage.stderr
    commands = set(re.findall(r"^    ([a-z-]+)", usage.stdout, re.MULTILINE))
    assert {"worker", "producer", "db", "topics", "stats", "notifier", "notify"} <= commands
    assert not commands & {"dev", "demo"}
    run = subprocess.run(
        [cli, "db", "migrate"], capture_output=True, text=True, env=clean, timeout=60
    )
    assert run.returncode == 2
    assert "FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS" in run.stderr
    assert "FLAGSCHED_DATABASE_URL" in run.stderr
