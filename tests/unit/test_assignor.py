"""The cooperative assignor's placement: complete, balanced per topic, sticky, and
converging in two rounds."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flagsched.consumer.assignor import Partition, first_round, place

NAMES = ["w0", "w1", "w2", "w3", "w4", "gone"]


@st.composite
def groups(draw: Any) -> tuple[dict[str, int], dict[str, set[str]], dict[str, set[Partition]]]:
    """Topics, the members (all subscribed to every topic), and who owned what before:
    each partition owned by nobody, a present member, or one that has left."""
    topics = {f"t{i}": draw(st.integers(1, 12)) for i in range(draw(st.integers(1, 4)))}
    members = draw(st.lists(st.sampled_from(NAMES[:-1]), min_size=1, max_size=5, unique=True))
    owners = [*members, "gone", None]
    owned: dict[str, set[Partition]] = {}
    for topic, n in topics.items():
        for p in range(n):
            who = draw(st.sampled_from(owners))
            if who is not None:
                owned.setdefault(who, set()).add((topic, p))
    return topics, {m: set(topics) for m in members}, owned


@given(groups())
def test_every_partition_is_placed_once_and_balanced_per_topic(group: Any) -> None:
    topics, subs, owned = group
    final = place(topics, subs, owned)
    assert set(final) == set(subs)
    for topic, n in topics.items():
        counts = [sum(1 for t, _ in parts if t == topic) for parts in final.values()]
        assert sum(counts) == n
        assert max(counts) - min(counts) <= 1
        placed = [tp for parts in final.values() for tp in parts if tp[0] == topic]
        assert sorted(placed) == [(topic, p) for p in range(n)]


@given(groups())
def test_members_keep_what_they_own_up_to_their_share(group: Any) -> None:
    topics, subs, owned = group
    final = place(topics, subs, owned)
    for m in subs:
        for topic, n in topics.items():
            mine = {tp for tp in owned.get(m, set()) if tp[0] == topic}
            kept = mine & final[m]
            assert len(kept) >= min(len(mine), n // len(subs))


@given(groups())
def test_a_moving_partition_waits_a_round_and_the_second_round_completes(group: Any) -> None:
    topics, subs, owned = group
    present = {m: parts for m, parts in owned.items() if m in subs}
    round1 = first_round(place(topics, subs, owned), owned)
    for m, parts in round1.items():
        for tp in parts:
            assert all(tp not in p for o, p in present.items() if o != m)
    # The owners revoked what moved; now each member owns its round-one assignment.
    final = place(topics, subs, round1)
    assert first_round(final, round1) == final


def test_a_member_that_joins_gets_a_share_of_every_topic() -> None:
    topics = {"due": 6, "retry": 6}
    alone = place(topics, {"a": set(topics)}, {})
    both = place(topics, {"a": set(topics), "b": set(topics)}, alone)
    for member in ("a", "b"):
        for topic in topics:
            assert len([p for t, p in both[member] if t == topic]) == 3
    assert both["a"] <= alone["a"]  # a keeps half of each topic, moves nothing else
