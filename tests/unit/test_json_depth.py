"""`json_depth`: how deeply a JSON text nests, with brackets inside strings (escapes and all) not counted."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api.limits import json_depth


def byte_by_byte(raw: bytes) -> int:
    """The reference: every byte read, strings tracked with their escapes."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x7D, 0x5D):
            depth -= 1
    return deepest


def nested(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(nested, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(nested, value), default=0)
    return 0


# Strings made of what could fool a scanner: brackets, quotes, backslashes, and text.
tricky = st.text(alphabet='{}[]"\\\\/an\u00e9\U0001f600 ', max_size=12)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky, inner, max_size=4),
    max_leaves=30,
)


@given(values, st.booleans())
def test_the_depth_of_any_json_text_is_how_deeply_it_nests(value: object, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert json_depth(raw) == nested(value) == byte_by_byte(raw)


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b'{"a": "[[[[", "b": [1, {"c": "\\\\"}]}', 3),
        (b'["\\\\\\"[[", [[]]]', 3),  # an escaped backslash, then an escaped quote: still in the string
        (b'"\\\\"[[]]', 2),  # the string ends after its escaped backslash
        (b'{"a": "unclosed [[[[', 1),  # brackets in a string that never ends
        (b"[" * 40 + b"]" * 40, 40),
        (b"", 0),
    ],
)
def test_brackets_in_strings_do_not_count(raw: bytes, depth: int) -> None:
    assert json_depth(raw) == depth == byte_by_byte(raw)
