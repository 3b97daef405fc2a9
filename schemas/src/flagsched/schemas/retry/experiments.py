"""Backoff experiments: named arms, each a retry policy, with integer weights.

A schedule's arm is a pure function of (experiment name, schedule id): ``bucket`` hashes
them, ``assign`` maps the bucket onto the arms' cumulative weights. Migration 0009's
trigger computes exactly the same in SQL (``flagsched_experiment_bucket``) when a
schedule without an explicit policy is inserted while the experiment runs, and stores
the arm and its policy on the row. So the arm never changes afterwards (an edit of the
schedule or of the experiment does not reshuffle), and a preview of the row's policy is
what the worker will do.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Self

from pydantic import BaseModel, Field, StrictInt, model_validator

from flagsched.schemas.retry.policy import PolicyOverride

_Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")]


class Arm(BaseModel, frozen=True, extra="forbid"):
    """One arm: its name, its weight (an integer >= 1) and its policy (a partial policy,
    stored as the schedule's ``retry_policy``, so it wins over class adjustments)."""

    name: _Name
    weight: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 1
    policy: PolicyOverride


class Experiment(BaseModel, frozen=True, extra="forbid"):
    """A named experiment; arm names are distinct."""

    name: _Name
    arms: Annotated[tuple[Arm, ...], Field(min_length=1, max_length=20)]

    @model_validator(mode="after")
    def _distinct_arms(self) -> Self:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be distinct, got {names}")
        return self

    @property
    def total_weight(self) -> int:
        """The sum of the arms' weights."""
        return sum(a.weight for a in self.arms)


def bucket(experiment: str, schedule_id: int) -> int:
    """A 60-bit number from ``md5("flagsched.experiment:<name>:<id>")`` (its first 15 hex
    digits), the same as the SQL function ``flagsched_experiment_bucket``."""
    text = f"flagsched.experiment:{experiment}:{schedule_id}"
    return int(hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:15], 16)


def assign(experiment: Experiment, schedule_id: int) -> Arm:
    """The arm of ``schedule_id``: the first whose cumulative weight exceeds
    ``bucket mod total weight``, in the experiment's order."""
    pick = bucket(experiment.name, schedule_id) % experiment.total_weight
    cumulative = 0
    for arm in experiment.arms:
        cumulative += arm.weight
        if pick < cumulative:
            return arm
    raise AssertionError("unreachable: pick < total weight")  # pragma: no cover
