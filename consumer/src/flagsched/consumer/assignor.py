"""Partition assignment: cooperative (KIP-429), sticky, and balanced per topic.

kafka-python's ``CooperativeStickyAssignor`` balances the *total* number of
partitions per member: after a join one worker could own every due partition and
the other only tier partitions, so the due topic's load would not be shared. This
assignor keeps the cooperative protocol and the wire format of kafka-python's
(owned partitions in the subscription, moves staged over two rounds) and places
partitions per topic:

* each member may own ``n // m`` or ``n // m + 1`` partitions of a topic with ``n``
  partitions and ``m`` subscribed members; the larger quotas go to the members that
  own the most of that topic already, then to those with fewest partitions overall;
* a member keeps what it owns up to its quota (sticky: survivors of a crash or a
  scale-out keep everything they can), and the rest goes, lowest partition first, to
  the member with the most room, then the fewest partitions overall;
* round one withholds a partition that another present member still owns: that
  member revokes it and rejoins, and round two hands it over (KIP-429).

:func:`place` is the pure placement; ``tests/unit/test_assignor.py`` checks its
properties with Hypothesis.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment

Partition = tuple[str, int]


def place(
    partitions: Mapping[str, int],
    subscriptions: Mapping[str, set[str]],
    owned: Mapping[str, set[Partition]],
) -> dict[str, set[Partition]]:
    """The final assignment: member -> partitions, balanced per topic, sticky.

    ``partitions`` is each topic's partition count, ``subscriptions`` each member's
    topics, ``owned`` what each member says it owns (claims of a partition beyond the
    first, or of a partition that does not exist, are ignored).
    """
    out: dict[str, set[Partition]] = {m: set() for m in subscriptions}
    claimed: set[Partition] = set()
    for topic in sorted(partitions):
        members = sorted(m for m, topics in subscriptions.items() if topic in topics)
        if not members:
            continue
        n = partitions[topic]
        mine: dict[str, list[int]] = {}
        for m in members:
            parts = sorted(
                p
                for t, p in owned.get(m, set())
                if t == topic and 0 <= p < n and (t, p) not in claimed
            )
            claimed.update((topic, p) for p in parts)
            mine[m] = parts
        base, extra = divmod(n, len(members))
        by_claim = sorted(members, key=lambda m: (-len(mine[m]), len(out[m]), m))
        quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_claim)}
        for m in members:
            out[m].update((topic, p) for p in mine[m][: quota[m]])
        have = {m: min(len(mine[m]), quota[m]) for m in members}
        pool = sorted(set(range(n)) - {p for t, p in claimed_in(out, topic)})
        for p in pool:
            m = min(members, key=lambda m: (have[m] - quota[m], len(out[m]), m))
            out[m].add((topic, p))
            have[m] += 1
    return out


def claimed_in(out: Mapping[str, set[Partition]], topic: str) -> set[Partition]:
    """The partitions of ``topic`` placed so far."""
    return {tp for parts in out.values() for tp in parts if tp[0] == topic}


def first_round(
    final: Mapping[str, set[Partition]], owned: Mapping[str, set[Partition]]
) -> dict[str, set[Partition]]:
    """``final`` without the partitions another present member still owns (KIP-429)."""
    owner = {tp: m for m, parts in owned.items() if m in final for tp in parts}
    return {m: {tp for tp in parts if owner.get(tp, m) == m} for m, parts in final.items()}


class BalancedCooperativeAssignor(CooperativeStickyAssignor):  # type: ignore[misc]
    """kafka-python's cooperative sticky assignor with :func:`place` as its placement."""

    name = "flagsched-cooperative-sticky"

    def assign(self, cluster: Any, members: Sequence[Any]) -> dict[str, Any]:
        """Member id -> this round's assignment, for every member of the group."""
        ids: dict[str, str] = {}  # a stable identity (the instance id) -> member id
        subscriptions: dict[str, set[str]] = {}
        owned: dict[str, set[Partition]] = {}
        for member in members:
            key = str(getattr(member, "group_instance_id", None) or member.member_id)
            parsed = self.parse_member_metadata(member.metadata)
            ids[key] = member.member_id
            subscriptions[key] = set(parsed.subscription)
            owned[key] = {(tp.topic, tp.partition) for tp in parsed.partitions}
        topics = set().union(*subscriptions.values()) if subscriptions else set()
        counts = {t: len(cluster.partitions_for_topic(t) or ()) for t in topics}
        rounds = first_round(place(counts, subscriptions, owned), owned)
        result = {}
        for key, parts in rounds.items():
            by_topic: dict[str, list[int]] = defaultdict(list)
            for topic, p in parts:
                by_topic[topic].append(p)
            wire = sorted((t, sorted(ps)) for t, ps in by_topic.items())
            result[ids[key]] = ConsumerProtocolAssignment(self.version, wire, b"")
        return result
