"""The AsyncAPI document: checked in, complete, consistent with the contract, and valid."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

from flagsched.admin.export import ASYNCAPI_DIR
from flagsched.runtime.settings import Settings
from flagsched.schemas import CONTRACT_VERSION
from flagsched.schemas import headers as h
from flagsched.schemas.asyncapi import (
    CONTROL_KEY,
    FILE_NAME,
    HEADERS,
    MESSAGES,
    default_layout,
    document,
    render,
)
from flagsched.schemas.events import ControlEvent, LifecycleEvent, ScheduleDue
from flagsched.schemas.topics import TopicLayout
from tests.support.required import unavailable

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "asyncapi"
CHECKED_IN = ASYNCAPI_DIR / FILE_NAME
NPM_CI_TIMEOUT_S = 300
VALIDATE_TIMEOUT_S = 120

ALL_HEADERS = {
    h.ATTEMPT,
    h.DUE_MS,
    h.FIRST_FAILURE_MS,
    h.ORIGIN_TOPIC,
    h.ORIGIN_PARTITION,
    h.ORIGIN_OFFSET,
    h.ORIGIN_GROUP,
    h.ERROR_CLASS,
    h.ERROR_MESSAGE,
    h.DLT_REASON,
    h.TRACEPARENT,
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def _deref(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _layout_of_default_settings() -> TopicLayout:
    return Settings.model_construct().topic_layout()


# --- (a) drift --------------------------------------------------------------------------


def test_checked_in_document_is_the_generated_one():
    assert CHECKED_IN.exists(), "run `flagsched schemas export` and commit the file"
    assert CHECKED_IN.read_text("utf-8") == render(document()), (
        "run `flagsched schemas export` and commit the file"
    )


def test_rendering_is_deterministic():
    assert render(document()) == render(document())
    assert json.loads(render(document())) == document()


# --- (b) structure ----------------------------------------------------------------------


def test_default_layout_is_the_default_settings_layout():
    assert default_layout() == _layout_of_default_settings()


def test_every_topic_of_the_default_layout_has_a_channel(doc):
    specs = _layout_of_default_settings().specs()
    by_address = {c["address"]: c for c in doc["channels"].values()}
    assert set(by_address) == {s.name for s in specs}
    for spec in specs:
        binding = by_address[spec.name]["bindings"]["kafka"]
        assert binding["topic"] == spec.name
        assert binding["partitions"] == spec.partitions
        config = binding.get("topicConfiguration", {})
        assert set(config) == set(spec.configs)
        if "retention.ms" in spec.configs:
            assert config["retention.ms"] == int(spec.configs["retention.ms"])
        if "cleanup.policy" in spec.configs:
            assert config["cleanup.policy"] == spec.configs["cleanup.policy"].split(",")


def test_topic_names_use_the_layout_prefix():
    custom = TopicLayout(prefix="acme.fs", tiers_s=(2.0, 90.0))
    addresses = {c["address"] for c in document(custom)["channels"].values()}
    assert addresses == {s.name for s in custom.specs()}
    assert "acme.fs.retry.90s" in addresses
    assert "`acme.fs`" in document(custom)["info"]["description"]


def test_each_channel_carries_the_right_message(doc):
    layout = default_layout()
    expected = {
        layout.due: "scheduleDue",
        layout.priority: "scheduleDue",
        **dict.fromkeys(layout.tier_topics, "scheduleRetry"),
        layout.dead_letter: "scheduleDeadLetter",
        layout.lifecycle: "lifecycleEvent",
        layout.control: "controlEvent",
    }
    for channel in doc["channels"].values():
        assert list(channel["messages"]) == [expected[channel["address"]]]


@pytest.mark.parametrize(
    ("message_id", "model"),
    [
        ("scheduleDue", ScheduleDue),
        ("scheduleRetry", ScheduleDue),
        ("scheduleDeadLetter", ScheduleDue),
        ("lifecycleEvent", LifecycleEvent),
        ("controlEvent", ControlEvent),
    ],
)
def test_message_payload_references_its_model_schema(doc, message_id, model):
    message = doc["components"]["messages"][message_id]
    ref = message["payload"]["$ref"]
    assert ref == f"#/components/schemas/{model.__name__}"
    schema = _deref(doc, ref)
    assert schema["title"] == model.__name__
    assert set(schema["properties"]) == set(model.model_fields)
    assert schema["properties"]["schema_version"]["const"] == 1


def test_every_ref_resolves(doc):
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                _deref(doc, node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert "$defs" not in json.dumps(doc)


def test_header_names_are_the_header_constants(doc):
    assert set(HEADERS) == ALL_HEADERS
    full = h.RecordHeaders(
        attempt=1,
        due_ms=0,
        first_failure_ms=0,
        origin_topic="t",
        origin_partition=0,
        origin_offset=0,
        origin_group="g",
        error_class="unknown",
        error_message="m",
        dlt_reason=h.DeadLetterReason.POISON,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    assert {name for name, _ in full.encode()} == ALL_HEADERS
    documented: set[str] = set()
    for message in doc["components"]["messages"].values():
        if "headers" not in message:
            continue
        schema = _deref(doc, message["headers"]["$ref"])
        assert set(schema["required"]) <= set(schema["properties"])
        for value in schema["properties"].values():
            assert value["type"] == "string"
            assert value["description"]
        documented |= set(schema["properties"])
    assert documented == ALL_HEADERS


def test_header_sets_per_message(doc):
    def props(message_id: str) -> tuple[set[str], set[str]]:
        message = doc["components"]["messages"][message_id]
        schema = _deref(doc, message["headers"]["$ref"])
        return set(schema["properties"]), set(schema["required"])

    _, due_required = props("scheduleDue")
    assert due_required == {h.ATTEMPT, h.DUE_MS}
    assert h.DLT_REASON not in props("scheduleRetry")[0]
    assert h.DLT_REASON in props("scheduleDeadLetter")[1]
    enum = _deref(doc, "#/components/schemas/DeadLetterHeaders")["properties"][h.DLT_REASON]
    assert enum["enum"] == ["exhausted", "permanent", "poison"]
    lifecycle = _deref(doc, doc["components"]["messages"]["lifecycleEvent"]["headers"]["$ref"])
    assert set(lifecycle["properties"]) == {h.TRACEPARENT}
    assert lifecycle["required"] == []


def test_kafka_key_is_the_flag_key(doc):
    for message_id, message in doc["components"]["messages"].items():
        if message_id == "controlEvent":
            key = message["bindings"]["kafka"]["key"]
            assert key["enum"] == [CONTROL_KEY]
            continue
        key = _deref(doc, message["bindings"]["kafka"]["key"]["$ref"])
        assert key["type"] == "string"
        assert (
            key["pattern"] == ScheduleDue.model_json_schema()["properties"]["flag_key"]["pattern"]
        )


def test_examples_are_what_the_models_accept(doc):
    for message_id, message in doc["components"]["messages"].items():
        model = MESSAGES[message_id][0]
        assert message["examples"]
        for example in message["examples"]:
            model.model_validate(example["payload"])
            if "headers" in message:
                schema = _deref(doc, message["headers"]["$ref"])
                headers = example.get("headers", {})
                assert set(schema["required"]) <= set(headers)
                assert set(headers) <= set(schema["properties"])
                if schema["required"]:  # the schedule-due header sets
                    h.RecordHeaders.decode([(k, v.encode()) for k, v in headers.items()])


def test_operations_from_the_application_point_of_view(doc):
    layout = default_layout()
    received: set[str] = set()
    sent: set[str] = set()
    for op in doc["operations"].values():
        channel = _deref(doc, op["channel"]["$ref"])
        for msg in op["messages"]:
            assert msg["$ref"].startswith(op["channel"]["$ref"] + "/messages/")
            _deref(doc, msg["$ref"])
        (received if op["action"] == "receive" else sent).add(channel["address"])
    assert received == {*layout.consumed, layout.control}
    assert sent == {
        layout.due,
        layout.priority,
        *layout.tier_topics,
        layout.dead_letter,
        layout.lifecycle,
        layout.control,
    }


def test_control_key_is_the_workers_key():
    from flagsched.consumer.control import BREAKER_KEY

    assert CONTROL_KEY.encode() == BREAKER_KEY


def test_info_version_is_tied_to_the_contract_and_package(doc):
    from flagsched.schemas import __version__

    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == f"{CONTRACT_VERSION}+flagsched.{__version__}"
    assert "configurable" in doc["info"]["description"]


# --- (c) the official parser ------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    unavailable(f"{reason}; the AsyncAPI parser check is required")


def test_official_parser_accepts_the_document():
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        _unavailable("node is not installed")
    if not (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        if npm is None:
            _unavailable("npm is not installed and tools/asyncapi/node_modules is missing")
        try:
            installed = subprocess.run(
                [npm, "ci", "--prefix", str(TOOLS), "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=TOOLS,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            _unavailable(f"`npm ci` in tools/asyncapi took over {NPM_CI_TIMEOUT_S}s")
        else:
            if installed.returncode != 0:
                _unavailable(f"`npm ci` in tools/asyncapi failed:\n{installed.stderr[-2000:]}")
    result = subprocess.run(
        [node, str(TOOLS / "validate.mjs"), str(CHECKED_IN)],
        capture_output=True,
        text=True,
        timeout=VALIDATE_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid (AsyncAPI 3.0.0" in result.stdout
