"""Opaque, time-sortable identifiers with a type prefix (`msg_…`, `ct_…`)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 10-bit value as two digits
_SHIFTS = range(120, -1, -10)


def new_id(prefix: str) -> str:
    """Return `prefix_` + 10 chars of milliseconds + 16 random chars; sorts by creation time.

    The 26 base32 digits, most significant first, of the milliseconds (50 bits) followed by 80 random
    bits, taken two at a time (an id is made for every row an accept writes)."""
    value = int(time.time() * 1000) << 80 | int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{''.join([_PAIRS[value >> shift & 1023] for shift in _SHIFTS])}"
