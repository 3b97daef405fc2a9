"""The AsyncAPI 3.0 document of flagsched's topics, generated from the contract (pure; no I/O).

Channels are the topics of a :class:`TopicLayout` (the default settings' layout unless one
is given), payload schemas come from the pydantic models, header schemas from the header
set in headers.py. This module assembles the document (info, servers, components); its
parts live beside it: channels and operations in asyncapi_channels.py, header schemas in
asyncapi_headers.py, example messages in asyncapi_examples.py. The rendered document is
checked in under ``schemas/asyncapi/`` by ``flagsched schemas export``;
docs/subscribers.md is the prose version.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from flagsched.schemas import CONTRACT_VERSION, __version__
from flagsched.schemas.asyncapi_channels import (
    CONTROL_KEY,
    KAFKA_BINDING_VERSION,
    channel_id,
    channel_message,
    channels,
    operations,
)
from flagsched.schemas.asyncapi_examples import examples
from flagsched.schemas.asyncapi_headers import HEADER_SETS, HEADERS
from flagsched.schemas.events import ControlEvent, FlagKey, LifecycleEvent, ScheduleDue
from flagsched.schemas.jsonschema import render as _render
from flagsched.schemas.topics import TopicLayout

__all__ = [
    "ASYNCAPI_VERSION",
    "CONTROL_KEY",
    "FILE_NAME",
    "HEADERS",
    "HEADER_SETS",
    "KAFKA_BINDING_VERSION",
    "MESSAGES",
    "channel_id",
    "channel_message",
    "default_layout",
    "document",
    "render",
]

ASYNCAPI_VERSION: Final = "3.0.0"
FILE_NAME: Final = "flagsched.asyncapi.json"

_REF = "#/components/schemas/{model}"
_SERVER = "kafka"

#: message id -> (payload model, headers schema id or None, title)
MESSAGES: Final[dict[str, tuple[type[BaseModel], str | None, str]]] = {
    "scheduleDue": (ScheduleDue, "ScheduleDueHeaders", "Schedule due"),
    "scheduleRetry": (ScheduleDue, "RetryHeaders", "Schedule retry"),
    "scheduleDeadLetter": (ScheduleDue, "DeadLetterHeaders", "Schedule dead-lettered"),
    "lifecycleEvent": (LifecycleEvent, "LifecycleHeaders", "Lifecycle event"),
    "controlEvent": (ControlEvent, None, "Control event"),
}


def default_layout() -> TopicLayout:
    """The layout of the default settings (the layout's own defaults, not the env)."""
    return TopicLayout()


def document(layout: TopicLayout | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``layout`` (the default settings' layout if None)."""
    layout = layout or default_layout()
    topic_channels = channels(layout)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:flagsched",
        "info": _info(layout),
        "defaultContentType": "application/json",
        "servers": {
            _SERVER: {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The Kafka cluster flagsched is configured with.",
                "variables": {
                    "bootstrap": {
                        "description": "Bootstrap servers, `host:port[,host:port]` "
                        "(FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS)."
                    }
                },
            }
        },
        "channels": topic_channels,
        "operations": operations(layout, topic_channels),
        "components": {
            "schemas": _schemas(),
            "messages": {mid: _message(mid, layout) for mid in MESSAGES},
        },
    }


def render(doc: dict[str, Any]) -> str:
    """Stable text form (sorted keys, two-space indent, trailing newline)."""
    return _render(doc)


# --- info ---------------------------------------------------------------------------


def _info(layout: TopicLayout) -> dict[str, Any]:
    tiers = ", ".join(f"`{t}`" for t in layout.tier_topics)
    description = f"""\
Scheduled feature-flag changes. A dispatcher publishes one schedule-due record per due \
schedule; workers apply it in PostgreSQL, retry failures through a fixed ladder of \
delay-tier topics, dead-letter what cannot succeed, and publish lifecycle events.

Topic names here use the prefix `{layout.prefix}` and the retry ladder {tiers}. Both are \
configurable (FLAGSCHED_TOPIC_PREFIX, FLAGSCHED_RETRY_TIERS_S), so a deployment's topic \
names may differ: `<prefix>.schedule-due`, `<prefix>.schedule-due.priority`, \
`<prefix>.retry.<tier>`, `<prefix>.dead-letter`, `<prefix>.lifecycle`, `<prefix>.control`.

Schedule records (schedule-due, retry, dead-letter, lifecycle) are keyed by their flag key \
(UTF-8), so the records of one flag stay in one partition of each topic, in write order. \
Values are UTF-8 JSON; header values are UTF-8 strings. Workers write tier, dead-letter \
and lifecycle records in the same Kafka transaction that commits the consumed offset: \
read those topics with `isolation.level=read_committed`. Delivery to subscribers is at \
least once.

`info.version` is `<contract version>+flagsched.<package version>`; each payload carries \
its own `schema_version`. See docs/subscribers.md for the evolution rules."""
    return {
        "title": "flagsched",
        "version": f"{CONTRACT_VERSION}+flagsched.{__version__}",
        "description": description,
        "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        "tags": [
            {"name": "dispatcher", "description": "`flagsched producer`"},
            {"name": "worker", "description": "`flagsched worker`"},
        ],
        "x-flagsched-contract-version": CONTRACT_VERSION,
        "x-flagsched-package-version": __version__,
    }


# --- components ---------------------------------------------------------------------


def _schemas() -> dict[str, Any]:
    models = [(m, "serialization") for m in (ScheduleDue, LifecycleEvent, ControlEvent)]
    _, top = models_json_schema(models, ref_template=_REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = dict(top["$defs"])
    schemas["FlagKey"] = {
        **TypeAdapter(FlagKey).json_schema(),
        "title": "FlagKey",
        "description": "The record key: the schedule's flag key, UTF-8.",
    }
    for sid, (description, names, required) in HEADER_SETS.items():
        schemas[sid] = {
            "title": sid,
            "type": "object",
            "description": f"{description} Every value is a UTF-8 string; other headers "
            "may be present and are ignored.",
            "properties": {name: {"type": "string", **HEADERS[name]} for name in names},
            "required": required,
        }
    return schemas


def _message(mid: str, layout: TopicLayout) -> dict[str, Any]:
    model, headers, title = MESSAGES[mid]
    message: dict[str, Any] = {
        "name": mid,
        "title": title,
        "summary": _MESSAGE_SUMMARY[mid],
        "contentType": "application/json",
        "payload": {"$ref": _REF.format(model=model.__name__)},
        "examples": examples(mid, layout),
    }
    if headers is not None:
        message["headers"] = {"$ref": _REF.format(model=headers)}
    key: dict[str, Any] = {"$ref": _REF.format(model="FlagKey")}
    if mid == "controlEvent":
        key = {"type": "string", "enum": [CONTROL_KEY], "description": "Always `breaker`."}
    message["bindings"] = {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}}
    return message


_MESSAGE_SUMMARY: Final = {
    "scheduleDue": "A wake-up: a schedule is due. The database row is the truth; "
    "this record only names it.",
    "scheduleRetry": "The original schedule-due record, unchanged, with a rebuilt header set "
    "naming the next attempt.",
    "scheduleDeadLetter": "The original record, unchanged, with the dead-letter header set. "
    "With reason `poison` the key and value are whatever arrived and may not match the "
    "schemas.",
    "lifecycleEvent": "One transition of a schedule. De-duplicate on "
    "(schedule_id, type, attempt); `replay: true` marks a re-sent event.",
    "controlEvent": "A worker opened (database failures in a row) or closed (a probe "
    "succeeded) the circuit breaker that pauses every worker's partitions.",
}
