"""Ids: a prefix, 10 base32 digits of milliseconds and 16 of randomness, sorting by creation time."""

from __future__ import annotations

import os
import time

import pytest

from gateway import ids

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def digits(value: int, length: int) -> str:
    """The reference: `value` as `length` Crockford base32 digits, most significant first."""
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(ALPHABET[rem])
    return "".join(reversed(out))


@pytest.mark.parametrize(
    ("seconds", "random"),
    [
        (0.0, bytes(10)),
        (1.0, bytes(range(10))),
        (1_795_000_000.123, bytes([255] * 10)),
        (2**50 / 1000 - 0.001, os.urandom(10)),  # the last millisecond 10 digits hold (year 37648)
    ],
)
def test_an_id_is_its_milliseconds_and_random_bytes_in_base32(
    monkeypatch: pytest.MonkeyPatch, seconds: float, random: bytes
) -> None:
    monkeypatch.setattr(time, "time", lambda: seconds)
    monkeypatch.setattr(os, "urandom", lambda n: random[:n])
    expected = f"msg_{digits(int(seconds * 1000), 10)}{digits(int.from_bytes(random, 'big'), 16)}"
    assert ids.new_id("msg") == expected


def test_ids_sort_by_creation_time_and_differ() -> None:
    made = []
    for _ in range(5):
        made.append(ids.new_id("ct"))
        time.sleep(0.002)
    assert made == sorted(made)
    assert len(set(made)) == 5
    assert all(len(i) == 3 + 26 and set(i[3:]) <= set(ALPHABET) for i in made)
