"""Retry maths for flagsched: policies, backoff, delay tiers and previews.

Every backoff computation in the product goes through this package; see
:mod:`flagsched.schemas.retry.policy` for the attempt-numbering and seeding convention.
"""

from flagsched.schemas.retry.policy import (
    CLASS_ADJUSTMENTS,
    MAX_DELAY_S,
    MAX_RETRIES,
    Jitter,
    PolicyOverride,
    RetryPolicy,
    backoff_s,
    is_exhausted,
    next_attempt_at,
    planned_attempt_at,
    planned_delay_s,
    planned_delays,
    policy_for,
    seed_for,
)
from flagsched.schemas.retry.preview import MAX_PREVIEW_ATTEMPTS, PlannedAttempt, preview
from flagsched.schemas.retry.tiers import MAX_HOPS, hop_path, pick_tier, tier_suffix

__all__ = [
    "CLASS_ADJUSTMENTS",
    "MAX_DELAY_S",
    "MAX_HOPS",
    "MAX_PREVIEW_ATTEMPTS",
    "MAX_RETRIES",
    "Jitter",
    "PlannedAttempt",
    "PolicyOverride",
    "RetryPolicy",
    "backoff_s",
    "hop_path",
    "is_exhausted",
    "next_attempt_at",
    "pick_tier",
    "planned_attempt_at",
    "planned_delay_s",
    "planned_delays",
    "policy_for",
    "preview",
    "seed_for",
    "tier_suffix",
]
