"""Partition assignment: cooperative (KIP-429), sticky, balanced, and co-partitioned.

Range assignment gave partition ``i`` of every topic to the same member, so all of a
flag's records (the due topic and the tiers, keyed by flag, with equal partition
counts) reached one worker and were applied one after the other; but it is eager:
every rebalance stopped every member. kafka-python's ``CooperativeStickyAssignor``
is cooperative but balances only the total per member: a worker could own every
due partition and another only tier partitions, and one flag's records could reach
two workers at once, which then contend for the flag's row lock. This assignor
keeps the cooperative protocol and wire format of kafka-python's (owned
partitions in the subscription, moves staged over two rounds) and places *units*:

* topics with the same subscribers and the same partition count form a class, and
  partition ``i`` of each topic of a class is one unit, always placed whole (the
  co-partitioning of range assignment);
* each member gets ``u // m`` or ``u // m + 1`` units of a class with ``u`` units
  and ``m`` members; the larger quotas go to the members that own the most units
  already, then to those with the fewest partitions overall;
* a member keeps the units it owns up to its quota (sticky: survivors of a crash
  or a scale-out keep everything they can), and the rest go, lowest first, to the
  member with the most room, then the fewest partitions overall;
* round one withholds a partition that another present member still owns: that
  member revokes it and rejoins, and round two hands it over (KIP-429).

:func:`place` is the pure placement; ``tests/unit/test_assignor.py`` checks its
properties with Hypothesis.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment

log = logging.getLogger(__name__)

Partition = tuple[str, int]


def place(
    partitions: Mapping[str, int],
    subscriptions: Mapping[str, set[str]],
    owned: Mapping[str, set[Partition]],
) -> dict[str, set[Partition]]:
    """The final assignment: member -> partitions, balanced and sticky per unit.

    ``partitions`` is each topic's partition count, ``subscriptions`` each member's
    topics, ``owned`` what each member says it owns. A unit claimed by several members
    is claimed by the one that owns most of it (then the first by name).
    """
    out: dict[str, set[Partition]] = {m: set() for m in subscriptions}
    classes: dict[tuple[tuple[str, ...], int], list[str]] = defaultdict(list)
    for topic in sorted(partitions):
        members = tuple(sorted(m for m, topics in subscriptions.items() if topic in topics))
        if members:
            classes[(members, partitions[topic])].append(topic)
    for (members, n), topics in sorted(classes.items(), key=lambda c: (c[1], c[0])):
        units = {i: [(t, i) for t in topics] for i in range(n)}
        claims: dict[str, list[int]] = {m: [] for m in members}
        for i, unit in units.items():
            counts = {m: len(owned.get(m, set()).intersection(unit)) for m in members}
            best = min(members, key=lambda m: (-counts[m], m))
            if counts[best]:
                claims[best].append(i)
        base, extra = divmod(n, len(members))
        by_claim = sorted(members, key=lambda m: (-len(claims[m]), len(out[m]), m))
        quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_claim)}
        placed: set[int] = set()
        have: dict[str, int] = {}
        for m in members:
            kept = claims[m][: quota[m]]
            placed.update(kept)
            have[m] = len(kept)
            for i in kept:
                out[m].update(units[i])
        for i in sorted(set(units) - placed):
            m = min(members, key=lambda m: (have[m] - quota[m], len(out[m]), m))
            out[m].update(units[i])
            have[m] += 1
    return out


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
        try:
            return self._assign(cluster, members)
        except Exception:
            # An assignor that raises fails the SyncGroup, and the group rejoins in a loop.
            log.exception("placement failed; falling back to kafka-python's sticky placement")
            return dict(super().assign(cluster, members))

    def _assign(self, cluster: Any, members: Sequence[Any]) -> dict[str, Any]:
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
        _warn_if_split(counts)
        rounds = first_round(place(counts, subscriptions, owned), owned)
        result = {}
        for key, parts in rounds.items():
            by_topic: dict[str, list[int]] = defaultdict(list)
            for topic, p in parts:
                by_topic[topic].append(p)
            wire = sorted((t, sorted(ps)) for t, ps in by_topic.items())
            result[ids[key]] = ConsumerProtocolAssignment(self.version, wire, b"")
        return result


def _warn_if_split(counts: Mapping[str, int]) -> None:
    # Settings refuse unequal due and tier partition counts, but topics created by
    # hand (or altered) may still differ: then one flag's records can reach two
    # workers at once, and healthy schedules fail on lock_contention with each other.
    if len(set(counts.values())) > 1:
        log.warning(
            "topics of one group differ in partition count (%s): a flag's records are not"
            " co-partitioned and two workers may attempt one flag at once",
            ", ".join(f"{t}={n}" for t, n in sorted(counts.items())),
        )
