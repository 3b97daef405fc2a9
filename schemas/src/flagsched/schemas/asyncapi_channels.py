"""The channels and operations of the AsyncAPI document: one channel per topic.

A channel is a topic of the :class:`TopicLayout` with its Kafka binding (partitions,
topic configuration); operations are seen from flagsched itself: the dispatcher sends
to the schedule-due topics; workers receive from those and from the retry tiers, send
to the tiers, the dead-letter topic and the lifecycle topic, and both send to and
follow the control topic.
"""

from __future__ import annotations

from typing import Any, Final

from flagsched.schemas.topics import DEFAULT_GROUP_ID, TopicLayout, TopicSpec

KAFKA_BINDING_VERSION: Final = "0.5.0"

#: The key of every control record (the breaker's state is one compacted key).
CONTROL_KEY: Final = "breaker"


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


def channels(layout: TopicLayout) -> dict[str, Any]:
    """The ``channels`` object: one channel per topic of ``layout``, keyed by channel id."""
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


def operations(layout: TopicLayout, channels: dict[str, Any]) -> dict[str, Any]:
    """The ``operations`` object: who sends to and receives from each channel."""
    group = DEFAULT_GROUP_ID
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
