"""A poison record's bytes as the UI and the API show them: printable ASCII that names
every byte unambiguously (flagsched.admin.service.poison.escape_bytes)."""

from __future__ import annotations

import codecs

from hypothesis import given
from hypothesis import strategies as st

from flagsched.admin.service.poison import escape_bytes


def test_examples() -> None:
    assert escape_bytes(b"{not json") == "{not json"
    assert escape_bytes(b"a\\b\xff\x00\n<") == "a\\\\b\\xff\\x00\\x0a<"


@given(st.binary(max_size=600))
def test_printable_and_unambiguous(value: bytes) -> None:
    text = escape_bytes(value)
    assert all(0x20 <= ord(c) < 0x7F for c in text)
    assert codecs.escape_decode(text.encode("ascii"))[0] == value
