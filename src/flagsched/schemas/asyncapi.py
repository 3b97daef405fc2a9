"""The AsyncAPI 3.0 document of flagsched's topics, generated from the contract (pure; no I/O).

Channels are the topics of a :class:`TopicLayout` (the default settings' layout unless one
is given), payload schemas come from the pydantic models, header schemas from the header
set in headers.py. Operations are seen from flagsched itself: the dispatcher sends to the
schedule-due topics; workers receive from those and from the retry tiers, send to the
tiers, the dead-letter topic and the lifecycle topic, and both send to and follow the
control topic. The rendered document is checked in under ``schemas/asyncapi/`` by
``flagsched schemas export``; docs/subscribers.md is the prose version.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from flagsched import __version__
from flagsched.schemas import CONTRACT_VERSION
from flagsched.schemas import headers as h
from flagsched.schemas.error_classes import ErrorClass
from flagsched.schemas.events import (
    BreakerState,
    ControlEvent,
    FlagKey,
    LifecycleEvent,
    LifecycleType,
    ScheduleDue,
    to_epoch_ms,
)
from flagsched.schemas.jsonschema import render as _render
from flagsched.schemas.topics import TopicLayout, TopicSpec
from flagsched.settings import Settings

ASYNCAPI_VERSION: Final = "3.0.0"
KAFKA_BINDING_VERSION: Final = "0.5.0"
FILE_NAME: Final = "flagsched.asyncapi.json"

#: The key of every control record (the breaker's state is one compacted key).
CONTROL_KEY: Final = "breaker"

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

_NUMBER = r"^[0-9]+$"
_ERROR_CLASSES = ", ".join(f"`{c.value}`" for c in ErrorClass)

#: Every header flagsched writes: name -> schema of its (UTF-8 string) value.
HEADERS: Final[dict[str, dict[str, Any]]] = {
    h.ATTEMPT: {
        "pattern": r"^[1-9][0-9]*$",
        "description": "1-based number of the attempt this record asks for (decimal); on "
        "the dead-letter topic, the last attempt made.",
    },
    h.DUE_MS: {
        "pattern": _NUMBER,
        "description": "Absolute time the attempt is due, epoch milliseconds (decimal); "
        "workers never process a record before it. On the dead-letter topic, the due time "
        "of the last attempt.",
    },
    h.FIRST_FAILURE_MS: {
        "pattern": _NUMBER,
        "description": "When attempt 1 of the schedule failed, epoch milliseconds (decimal).",
    },
    h.ORIGIN_TOPIC: {"description": "Topic the failed attempt was consumed from."},
    h.ORIGIN_PARTITION: {"pattern": _NUMBER, "description": "Its partition (decimal)."},
    h.ORIGIN_OFFSET: {"pattern": _NUMBER, "description": "Its offset (decimal)."},
    h.ORIGIN_GROUP: {"description": "Consumer group of the worker that processed it."},
    h.ERROR_CLASS: {
        "description": f"Class of the last error; one of {_ERROR_CLASSES} "
        "(new classes may be added).",
    },
    h.ERROR_MESSAGE: {
        "description": "Last error message, UTF-8, at most "
        f"{h.ERROR_MESSAGE_MAX_BYTES} bytes (longer messages are cut and end in `...`).",
    },
    h.DLT_REASON: {
        "enum": [r.value for r in h.DeadLetterReason],
        "description": "Why the record was dead-lettered: retries `exhausted`, a `permanent` "
        "error, or a `poison` record that could not be decoded.",
    },
    h.TRACEPARENT: {
        "description": "W3C trace context of the attempt that sent the record; optional, "
        "may be absent.",
    },
}

_ORIGIN = [h.ORIGIN_TOPIC, h.ORIGIN_PARTITION, h.ORIGIN_OFFSET, h.ORIGIN_GROUP]
_FAILURE = [h.ATTEMPT, h.DUE_MS, h.FIRST_FAILURE_MS, *_ORIGIN, h.ERROR_CLASS, h.ERROR_MESSAGE]

#: header schema id -> (description, header names, required header names)
HEADER_SETS: Final[dict[str, tuple[str, list[str], list[str]]]] = {
    "ScheduleDueHeaders": (
        "Headers of a record the dispatcher publishes.",
        [h.ATTEMPT, h.DUE_MS, h.TRACEPARENT],
        [h.ATTEMPT, h.DUE_MS],
    ),
    "RetryHeaders": (
        "Headers of a record on a retry tier: the next attempt, its due time and the "
        "failure that caused it.",
        [*_FAILURE, h.TRACEPARENT],
        _FAILURE,
    ),
    "DeadLetterHeaders": (
        "Headers of a dead-lettered record: the last attempt, where it was consumed from, "
        f"the last error and the reason. `{h.FIRST_FAILURE_MS}` is absent when no attempt "
        "was recorded (a `poison` record, or a permanent failure before the attempt was "
        f"recorded); `{h.ATTEMPT}` is 1 and `{h.DUE_MS}` 0 when the record's own headers "
        "could not be read.",
        [*_FAILURE, h.DLT_REASON, h.TRACEPARENT],
        [h.ATTEMPT, h.DUE_MS, *_ORIGIN, h.ERROR_CLASS, h.ERROR_MESSAGE, h.DLT_REASON],
    ),
    "LifecycleHeaders": (
        "Headers of a lifecycle event: the trace context of the attempt that caused it, "
        "when tracing is on, so a subscriber can continue the schedule's trace.",
        [h.TRACEPARENT],
        [],
    ),
}


def default_layout() -> TopicLayout:
    """The layout of the default settings, read from the field defaults (not the env)."""
    fields = Settings.model_fields
    return TopicLayout(
        prefix=fields["topic_prefix"].default,
        tiers_s=fields["retry_tiers_s"].default,
        due_partitions=fields["due_partitions"].default,
        priority_partitions=fields["priority_partitions"].default,
        tier_partitions=fields["tier_partitions"].default,
    )


def document(layout: TopicLayout | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``layout`` (the default settings' layout if None)."""
    layout = layout or default_layout()
    channels = _channels(layout)
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
        "channels": channels,
        "operations": _operations(layout, channels),
        "components": {
            "schemas": _schemas(),
            "messages": {mid: _message(mid, layout) for mid in MESSAGES},
        },
    }


def render(doc: dict[str, Any]) -> str:
    """Stable text form (sorted keys, two-space indent, trailing newline)."""
    return _render(doc)


def channel_id(layout: TopicLayout, topic: str) -> str:
    """A topic's channel id: its name without the prefix (``retry.30s``, ``lifecycle``)."""
    return topic.removeprefix(f"{layout.prefix}.")


def channel_message(layout: TopicLayout, topic: str) -> str:
    """The id of the message a topic carries."""
    if topic in (layout.due, layout.priority):
        return "scheduleDue"
    if topic in layout.tier_topics:
        return "scheduleRetry"
    if topic == layout.dead_letter:
        return "scheduleDeadLetter"
    if topic == layout.lifecycle:
        return "lifecycleEvent"
    if topic == layout.control:
        return "controlEvent"
    raise ValueError(f"{topic} is not a topic of the layout")


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


# --- channels -----------------------------------------------------------------------


def _channel_description(layout: TopicLayout, topic: str) -> str:
    if topic == layout.due:
        return (
            "Wake-ups of normal-priority schedules, published by the dispatcher: first "
            "attempts, and re-sent wake-ups of schedules stuck past their due time."
        )
    if topic == layout.priority:
        return (
            "Wake-ups of critical schedules (as schedule-due), on their own partitions so "
            "they do not queue behind normal ones."
        )
    if topic in layout.tier_topics:
        tier = topic.removeprefix(f"{layout.prefix}.retry.")
        return (
            f"Retry tier {tier}: a record waits here until min(its due time, record "
            f"timestamp + {tier}), then is attempted or hops to a smaller tier. Key and value "
            "are the original schedule-due record's."
        )
    if topic == layout.dead_letter:
        return (
            "Records that will not be retried: retries exhausted, a permanent error, or a "
            "poison record. Key and value are the original record's, unchanged."
        )
    if topic == layout.lifecycle:
        return (
            "What happened to each schedule: applied, retry_scheduled, superseded, "
            "dead_lettered, cancelled. Written by workers only."
        )
    return (
        "Compacted coordination topic: the circuit breaker's state, shared by workers. The "
        f"latest record of key `{CONTROL_KEY}` is the current state; workers read the topic "
        "from the beginning when they start."
    )


def _topic_configuration(spec: TopicSpec) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name, value in spec.configs.items():
        if name == "cleanup.policy":
            config[name] = value.split(",")
        elif name.endswith((".ms", ".bytes")):
            config[name] = int(value)
        else:
            config[name] = value
    return config


def _channels(layout: TopicLayout) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    for spec in layout.specs():
        mid = channel_message(layout, spec.name)
        binding: dict[str, Any] = {
            "topic": spec.name,
            "partitions": spec.partitions,
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
        if spec.configs:
            binding["topicConfiguration"] = _topic_configuration(spec)
        channels[channel_id(layout, spec.name)] = {
            "address": spec.name,
            "title": spec.name,
            "description": _channel_description(layout, spec.name),
            "messages": {mid: {"$ref": f"#/components/messages/{mid}"}},
            "bindings": {"kafka": binding},
        }
    return channels


# --- operations ---------------------------------------------------------------------


def _operation(
    action: str, cid: str, channels: dict[str, Any], tag: str, description: str
) -> dict[str, Any]:
    (mid,) = channels[cid]["messages"]
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{cid}"},
        "messages": [{"$ref": f"#/channels/{cid}/messages/{mid}"}],
        "summary": f"{'Sends to' if action == 'send' else 'Receives from'} "
        f"{channels[cid]['address']}",
        "description": description,
        "tags": [{"name": tag}],
    }


def _operations(layout: TopicLayout, channels: dict[str, Any]) -> dict[str, Any]:
    group = Settings.model_fields["group_id"].default
    dispatch = (
        "Idempotent producer, acks=all, not transactional. The row is marked dispatched only "
        "after the broker acknowledged; a crash in between publishes the record again. Rows "
        "stuck past their due time are re-sent with the attempt the row expects."
    )
    consume = (
        f"Workers share one consumer group (FLAGSCHED_GROUP_ID, default `{group}`), read "
        "with isolation.level=read_committed and commit offsets inside their Kafka "
        "transaction."
    )
    forward = "Written in the worker's Kafka transaction together with the source offset."
    receive_binding = {
        "kafka": {
            "groupId": {"type": "string", "enum": [group]},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }
    ops: dict[str, Any] = {}
    for topic in (layout.due, layout.priority):
        cid = channel_id(layout, topic)
        ops[f"dispatch.{cid}"] = _operation("send", cid, channels, "dispatcher", dispatch)
    for topic in layout.consumed:
        cid = channel_id(layout, topic)
        ops[f"consume.{cid}"] = {
            **_operation("receive", cid, channels, "worker", consume),
            "bindings": receive_binding,
        }
    for topic in layout.tier_topics:
        cid = channel_id(layout, topic)
        text = f"A failed attempt's next attempt, or a hop to a smaller tier. {forward}"
        ops[f"forward.{cid}"] = _operation("send", cid, channels, "worker", text)
    for topic, text in (
        (layout.dead_letter, f"Dead-letters a record with its failure headers. {forward}"),
        (
            layout.lifecycle,
            f"One event per recorded outcome of an attempt; re-sent with `replay: true` when "
            f"a redelivered record redoes an attempt already recorded. {forward}",
        ),
    ):
        cid = channel_id(layout, topic)
        ops[f"publish.{cid}"] = _operation("send", cid, channels, "worker", text)
    cid = channel_id(layout, layout.control)
    ops[f"publish.{cid}"] = _operation(
        "send",
        cid,
        channels,
        "worker",
        "Idempotent producer, acks=all, not transactional; waits for the acknowledgement.",
    )
    ops[f"follow.{cid}"] = _operation(
        "receive",
        cid,
        channels,
        "worker",
        "Every worker reads partition 0 without a consumer group (assigned, from the "
        "beginning, read_committed) and ignores its own events and OPEN events older than "
        "FLAGSCHED_BREAKER_STALE_S.",
    )
    return ops


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
        "examples": _examples(mid, layout),
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


# --- examples (built with the models, so they are what flagsched emits) ---------------

_AT = datetime(2025, 1, 1, tzinfo=UTC)
_NEXT = datetime(2025, 1, 1, 0, 0, 4, 250000, tzinfo=UTC)
_FAILED = datetime(2025, 1, 1, 0, 0, 0, 120000, tzinfo=UTC)
_DUE = ScheduleDue(
    event_id=uuid.UUID("6f1c2c1e-2f55-4d0c-9a55-0c8f4f1d2a10"),
    schedule_id=42,
    flag_key="checkout.new-flow",
    scheduled_at=_AT,
    dispatched_at=datetime(2025, 1, 1, 0, 0, 0, 35000, tzinfo=UTC),
)
_ERROR = "LockNotAvailable: canceling statement due to lock timeout"


def _headers(headers: h.RecordHeaders) -> dict[str, str]:
    return {k: v.decode("utf-8") for k, v in headers.encode()}


def _failure(layout: TopicLayout, attempt: int, due: datetime, **kw: Any) -> h.RecordHeaders:
    return h.RecordHeaders(
        attempt=attempt,
        due_ms=to_epoch_ms(due),
        first_failure_ms=to_epoch_ms(_FAILED),
        origin_topic=layout.due if attempt == 2 else layout.tier_topic(layout.tiers_s[0]),
        origin_partition=3,
        origin_offset=1207,
        origin_group=Settings.model_fields["group_id"].default,
        error_class=ErrorClass.LOCK_CONTENTION.value,
        error_message=_ERROR,
        **kw,
    )


def _lifecycle(kind: LifecycleType, **kw: Any) -> dict[str, Any]:
    event = LifecycleEvent(
        event_id=uuid.UUID("0b7e5a8e-5d3f-4a86-8a53-3f0f0a3c9e41"),
        type=kind,
        schedule_id=_DUE.schedule_id,
        flag_key=_DUE.flag_key,
        scheduled_at=_DUE.scheduled_at,
        **kw,
    )
    return event.model_dump(mode="json")


def _examples(mid: str, layout: TopicLayout) -> list[dict[str, Any]]:
    due = _DUE.model_dump(mode="json")
    if mid == "scheduleDue":
        first = h.RecordHeaders(attempt=1, due_ms=to_epoch_ms(_AT))
        return [{"name": "first-attempt", "headers": _headers(first), "payload": due}]
    if mid == "scheduleRetry":
        retry = _failure(layout, 2, _NEXT)
        return [{"name": "second-attempt", "headers": _headers(retry), "payload": due}]
    if mid == "scheduleDeadLetter":
        dead = _failure(layout, 6, _NEXT, dlt_reason=h.DeadLetterReason.EXHAUSTED)
        return [{"name": "exhausted", "headers": _headers(dead), "payload": due}]
    if mid == "lifecycleEvent":
        return [
            {
                "name": "retry-scheduled",
                "payload": _lifecycle(
                    LifecycleType.RETRY_SCHEDULED,
                    attempt=1,
                    occurred_at=_FAILED,
                    next_attempt_at=_NEXT,
                    error_class=ErrorClass.LOCK_CONTENTION.value,
                    error_message=_ERROR,
                ),
            },
            {
                "name": "applied",
                "payload": _lifecycle(
                    LifecycleType.APPLIED, attempt=2, occurred_at=_NEXT, flag_version=7
                ),
            },
        ]
    control = ControlEvent(state=BreakerState.OPEN, worker_id="worker-a", at=_AT, reason="")
    return [{"name": "breaker-open", "payload": control.model_dump(mode="json")}]
