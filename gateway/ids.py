"""Opaque, time-sortable identifiers with a type prefix (`msg_…`, `ct_…`)."""

from __future__ import annotations

import base64
import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
# base64's base32 (RFC 4648 alphabet) turned into Crockford's: the same 5-bit groups, in C.
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def new_id(prefix: str) -> str:
    """Return `prefix_` + 10 chars of milliseconds + 16 random chars; sorts by creation time.

    Both are base32 digits, most significant first, computed by base64's C base32 rather than a digit at
    a time: 10 random bytes are exactly 16 digits, and the milliseconds' 50 bits, in 10 bytes, are the
    last 10 digits of 16."""
    millis = int(time.time() * 1000).to_bytes(10, "big")
    digits = base64.b32encode(millis + os.urandom(10)).translate(_CROCKFORD)
    return f"{prefix}_{digits[6:].decode()}"
