"""Which rule sends a notice to which sink (pure; the dedup and digest state is in the
database, see store.py)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from flagsched.notifier.config import EventKind, NotifyConfig, Rule
from flagsched.notifier.notice import Notice


def matches(rule: Rule, notice: Notice) -> bool:
    """Whether ``notice`` passes every filter of ``rule`` (an empty filter passes all).

    A filter on a field the notice does not have (a flag-key glob for a breaker
    change, say) does not match it: such a rule was written about schedules.
    """
    if notice.kind not in rule.events:
        return False
    if (
        rule.reasons
        and notice.kind is EventKind.DEAD_LETTERED
        and notice.reason not in rule.reasons
    ):
        return False
    if rule.priorities and notice.priority not in rule.priorities:
        return False
    if rule.flag_keys and not (
        notice.flag_key is not None and any(fnmatchcase(notice.flag_key, g) for g in rule.flag_keys)
    ):
        return False
    return not rule.error_classes or notice.error_class in rule.error_classes


def route(config: NotifyConfig, notice: Notice) -> list[tuple[Rule, str]]:
    """(rule, sink) pairs for ``notice``: one per sink, from the first rule (in file order)
    that sends it there, since a delivery is one row per (event, sink)."""
    chosen: dict[str, Rule] = {}
    for rule in config.rules:
        if matches(rule, notice):
            for sink in rule.sinks:
                chosen.setdefault(sink, rule)
    return [(rule, sink) for sink, rule in chosen.items()]
