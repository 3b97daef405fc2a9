"""Who owns which partitions, asked of the group coordinator every 100 ms (bench/membership.py).

Describing the groups from outside does not depend on what the workers log or how
many consumers they run; a restarted static member shows as a new member id under
the same group instance id.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient

log = logging.getLogger("bench")

Owned = frozenset[tuple[str, int]]
#: instance id -> (member id, partitions)
Members = dict[str, tuple[str, Owned]]


@dataclass
class Snapshot:
    """Who owned what at ``at`` (epoch s), per group: (state, instance id -> partitions)."""

    at: float
    groups: dict[str, tuple[str, Members]]


class Watcher:
    """Describes both groups every 100 ms from a thread of its own."""

    def __init__(self, kafka: str, groups: list[str]) -> None:
        self._admin = KafkaAdminClient(bootstrap_servers=kafka.split(","))
        self._groups = groups
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="membership-watch", daemon=True)
        self.snapshots: list[Snapshot] = []

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._admin.close()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                described = self._admin.describe_groups(self._groups)
            except Exception as exc:  # the coordinator moves or loads: next round
                log.debug("describe failed: %s", exc)
                continue
            groups = {}
            for name, info in described.items():
                members: Members = {}
                for m in info["members"]:
                    assignment = m.get("member_assignment") or {}
                    members[str(m.get("group_instance_id") or m["member_id"])] = (
                        str(m["member_id"]),
                        frozenset(
                            (tp["topic"], p)
                            for tp in assignment.get("assigned_partitions", [])
                            for p in tp["partitions"]
                        ),
                    )
                groups[name] = (str(info["group_state"]), members)
            self.snapshots.append(Snapshot(time.time(), groups))

    def before(self, group: str, instance: str, at: float) -> tuple[str, Owned]:
        """``instance``'s member id and partitions in the last snapshot before ``at``."""
        for snap in reversed(self.snapshots):
            if snap.at < at and group in snap.groups:
                return snap.groups[group][1].get(instance, ("", frozenset()))
        return "", frozenset()

    def first(self, group: str, since: float, test: Any) -> float | None:
        """Seconds from ``since`` to the first snapshot of ``group`` passing ``test``."""
        for snap in self.snapshots:
            if snap.at >= since and group in snap.groups:
                state, members = snap.groups[group]
                if test(state, members):
                    return snap.at - since
        return None
