"""The topic layout: every topic name flagsched uses, in one place.

Topic names are part of the public contract: ``{prefix}.schedule-due``,
``{prefix}.schedule-due.priority``, ``{prefix}.retry.{tier}`` for each rung of
the delay ladder, ``{prefix}.dead-letter``, ``{prefix}.lifecycle`` and the
compacted ``{prefix}.control``. The number of retry topics depends on the
ladder only, never on max_retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from flagsched.schemas.retry.tiers import pick_tier, tier_suffix

#: The defaults of the layout; the runtime settings use these same numbers as their
#: defaults, so the exported AsyncAPI document describes a default deployment.
DEFAULT_PREFIX = "flagsched"
DEFAULT_TIERS_S: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)
DEFAULT_PARTITIONS = 6
#: The workers' consumer group by default (named in dead-letter headers' origin group).
DEFAULT_GROUP_ID = "flagsched-workers"

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: name, partition count and topic-level configs."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicLayout:
    """Every topic flagsched uses, by role."""

    prefix: str = DEFAULT_PREFIX
    tiers_s: tuple[float, ...] = DEFAULT_TIERS_S
    due_partitions: int = DEFAULT_PARTITIONS
    priority_partitions: int = DEFAULT_PARTITIONS
    tier_partitions: int = DEFAULT_PARTITIONS

    @property
    def due(self) -> str:
        """First attempts of normal schedules."""
        return f"{self.prefix}.schedule-due"

    @property
    def priority(self) -> str:
        """First attempts and retries of critical schedules (drained first)."""
        return f"{self.prefix}.schedule-due.priority"

    @property
    def dead_letter(self) -> str:
        """Exhausted, permanent and poison records, with the dead-letter headers."""
        return f"{self.prefix}.dead-letter"

    @property
    def lifecycle(self) -> str:
        """Applied / retry_scheduled / superseded / dead_lettered / cancelled events."""
        return f"{self.prefix}.lifecycle"

    @property
    def control(self) -> str:
        """Compacted coordination topic (circuit-breaker state)."""
        return f"{self.prefix}.control"

    def tier_topic(self, tier_s: float) -> str:
        """The delay-tier topic of one rung of the ladder."""
        if tier_s not in self.tiers_s:
            raise ValueError(f"{tier_s}s is not on the ladder {self.tiers_s}")
        return f"{self.prefix}.retry.{tier_suffix(tier_s)}"

    @property
    def tier_topics(self) -> dict[str, float]:
        """Tier topic name -> its delay in seconds."""
        return {self.tier_topic(t): t for t in self.tiers_s}

    def tier_for_delay(self, remaining_s: float) -> str | None:
        """Topic of the largest tier not exceeding ``remaining_s``; None to hold in place."""
        tier = pick_tier(self.tiers_s, remaining_s)
        return None if tier is None else self.tier_topic(tier)

    def tier_label(self, topic: str) -> str:
        """The ``tier`` label of a consumed topic: the delay tier's seconds (``"0.5"``,
        ``"30"``, ``"3600"``), ``"due"``, ``"priority"``, or ``"none"`` for anything else."""
        return self._labels.get(topic, "none")

    @cached_property
    def _labels(self) -> dict[str, str]:
        labels = {self.due: "due", self.priority: "priority"}
        labels.update({topic: f"{t:g}" for topic, t in self.tier_topics.items()})
        return labels

    @property
    def consumed(self) -> list[str]:
        """What a worker subscribes to."""
        return [self.priority, self.due, *self.tier_topics]

    def specs(self) -> list[TopicSpec]:
        """All topics with their partitions and configs, for `flagsched topics create`."""
        keep = {"retention.ms": str(7 * _DAY_MS)}
        # A tier record wakes at its timestamp plus the tier: the broker's append time,
        # so that no producer can hold a tier partition with a future timestamp.
        tier_keep = {"retention.ms": str(7 * _DAY_MS), "message.timestamp.type": "LogAppendTime"}
        return [
            TopicSpec(self.due, self.due_partitions, dict(keep)),
            TopicSpec(self.priority, self.priority_partitions, dict(keep)),
            *(TopicSpec(t, self.tier_partitions, dict(tier_keep)) for t in self.tier_topics),
            TopicSpec(self.dead_letter, 3, {"retention.ms": str(30 * _DAY_MS)}),
            TopicSpec(self.lifecycle, 3, dict(keep)),
            TopicSpec(self.control, 1, {"cleanup.policy": "compact"}),
        ]
