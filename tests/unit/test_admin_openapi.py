"""The admin API's OpenAPI document: checked in under docs/ and free of drift, like the
AsyncAPI document; and it documents what a user writes (the retry policy, problems)."""

from __future__ import annotations

import json
from pathlib import Path

from flagsched.admin.api.app import openapi_document, render_openapi

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "docs" / "admin-api.openapi.json"


def test_the_checked_in_document_is_current():
    assert FILE.read_text("utf-8") == render_openapi(openapi_document()), (
        "docs/admin-api.openapi.json is stale: run `flagsched admin openapi`"
    )


def test_the_document_describes_the_retry_policy_and_the_problems():
    doc = json.loads(FILE.read_text("utf-8"))
    schemas = doc["components"]["schemas"]
    policy = schemas["PolicyOverride"]["properties"]
    assert set(policy) == {
        "max_retries",
        "base_s",
        "multiplier",
        "cap_s",
        "floor_s",
        "jitter",
        "max_retry_duration_s",
    }
    create = schemas["ScheduleCreate"]["properties"]
    assert "per error class" in json.dumps(create["retry_policy"]).lower()
    assert "Problem" in schemas
    post = doc["paths"]["/api/admin/flags/{flagKey}/schedules"]["post"]
    assert {"201", "401", "403", "404", "413", "422"} <= set(post["responses"])
    assert "application/problem+json" in post["responses"]["422"]["content"]
    header = [p for p in post["parameters"] if p["in"] == "header"]
    assert [p["name"] for p in header] == ["Idempotency-Key"]


def test_the_cli_offers_the_sort_orders_the_service_accepts():
    from flagsched.admin.cli import SORTS as CLI_SORTS
    from flagsched.admin.service.schedules_read import SORTS

    assert CLI_SORTS == SORTS


def test_registering_the_admin_verbs_imports_no_service_code():
    """`flagsched worker` parses the same command tree: it must not pay for the API."""
    import subprocess
    import sys

    code = (
        "import sys; from flagsched.cli.app import build_parser; build_parser();"
        " print(sorted(m for m in sys.modules if m.startswith(('flagsched.admin.service',"
        " 'flagsched.admin.api', 'fastapi', 'uvicorn', 'jwt'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
