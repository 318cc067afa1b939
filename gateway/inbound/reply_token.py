"""Signed tokens that let an email reply or an unsubscribe link name what it answers, without a lookup table.

A token is its fields and a MAC, joined by dots: `msg_01jc…x3.k2m9…` (reply) or `ct_01jc….email.q7…`
(unsubscribe). The MAC is HMAC-SHA256 over a purpose label and the fields, cut to 100 bits and written in
lower-case base32, so a token is short (a reply address stays within the 64 characters of an email local
part), uses only `[a-z0-9_.-]` (safe in a local part and a URL path) and survives a mail system that changes
the case of the local part. Comparison is constant-time. Tokens do not expire: a reply or an unsubscribe
may come months later.

The keys are derived from the gateway's callback secret (`Gateway.callback_secret()`) with HMAC, one per
purpose, so a token made for one purpose is never valid for another and the callback secret itself never
signs a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.core import Gateway

REPLY_PREFIX = "reply+"
_FIELD = re.compile(r"[a-z0-9_-]{1,64}")
_MAC_CHARS = 20  # 100 bits of base32
_REPLY_PURPOSE = "reply-to"
_UNSUBSCRIBE_PURPOSE = "unsubscribe"


def _mac(secret: str, purpose: str, fields: tuple[str, ...]) -> str:
    data = "\0".join((purpose, *fields)).encode()
    digest = hmac.new(secret.encode(), data, hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:_MAC_CHARS]


def _sign(secret: str, purpose: str, *fields: str) -> str:
    for value in fields:
        if not _FIELD.fullmatch(value):
            raise ValueError(f"{value!r} cannot go in a token: only a-z, 0-9, _ and -, at most 64")
    return ".".join((*fields, _mac(secret, purpose, fields)))


def _verify(secret: str, purpose: str, token: str, count: int) -> tuple[str, ...] | None:
    parts = token.strip().lower().split(".")
    if len(parts) != count + 1:
        return None
    *fields, mac = parts
    if not all(_FIELD.fullmatch(value) for value in fields) or len(mac) != _MAC_CHARS:
        return None
    if not hmac.compare_digest(mac, _mac(secret, purpose, tuple(fields))):
        return None
    return tuple(fields)


def make_token(secret: str, message_id: str) -> str:
    """A reply token naming a gateway message (ids are lower case: `msg_…`)."""
    return _sign(secret, _REPLY_PURPOSE, message_id)


def read_token(secret: str, token: str) -> str | None:
    """The message id a reply token names, or None when it is not one this secret signed."""
    fields = _verify(secret, _REPLY_PURPOSE, token, 1)
    return fields[0] if fields else None


def reply_address(token: str, domain: str) -> str:
    """The Reply-To address carrying a token: `reply+<token>@<domain>`."""
    return f"{REPLY_PREFIX}{token}@{domain}"


def token_of_address(address: str, domain: str | None) -> str | None:
    """The token of `reply+<token>@<domain>` (domain compared case-insensitively), else None."""
    local, at, host = address.strip().strip("<>").rpartition("@")
    if not at or domain is None or host.lower() != domain.lower():
        return None
    if not local.lower().startswith(REPLY_PREFIX):
        return None
    return local[len(REPLY_PREFIX) :] or None


def make_unsubscribe_token(secret: str, contact_id: str, channel: str) -> str:
    """An unsubscribe token naming a contact and the channel it opts out of."""
    return _sign(secret, _UNSUBSCRIBE_PURPOSE, contact_id, channel)


def read_unsubscribe_token(secret: str, token: str) -> tuple[str, str] | None:
    """(contact id, channel) of an unsubscribe token, or None when it is not valid."""
    fields = _verify(secret, _UNSUBSCRIBE_PURPOSE, token, 2)
    return (fields[0], fields[1]) if fields else None


def derive_key(secret: str, purpose: str) -> str:
    """A separate key for one use of the gateway's secret."""
    return hmac.new(secret.encode(), f"channel-gateway {purpose} v1".encode(), hashlib.sha256).hexdigest()


def reply_key(gw: Gateway) -> str:
    """The key that signs this gateway's reply tokens."""
    return derive_key(gw.callback_secret(), "reply token")


def unsubscribe_key(gw: Gateway) -> str:
    """The key that signs this gateway's unsubscribe tokens."""
    return derive_key(gw.callback_secret(), "unsubscribe token")
