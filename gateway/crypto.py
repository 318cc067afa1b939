"""Optional encryption of message bodies at rest (Fernet, from `cryptography`).

With GATEWAY_ENCRYPTION_KEY set, the columns typed `Sealed` are written as `fernet:<token>`; values
written before encryption was turned on stay readable. Key rotation: put the new key first
(`NEW,OLD`): new writes use NEW, both decrypt; `gateway reseal` rewrites old rows with NEW, after which
OLD can be dropped.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet as _Fernet
from cryptography.fernet import InvalidToken, MultiFernet
from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

PREFIX = "fernet:"
_cipher: MultiFernet | None = None


def configure(keys: str | None) -> None:
    """Set the process-wide keys (newest first); None turns encryption off for new writes."""
    global _cipher
    _cipher = MultiFernet([_Fernet(k.strip()) for k in keys.split(",")]) if keys else None


class Sealed(TypeDecorator[Any]):
    """A JSON value stored as text, encrypted when keys are configured."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        text = json.dumps(value, separators=(",", ":"))
        if _cipher is None:
            return text
        return PREFIX + _cipher.encrypt(text.encode()).decode()

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.startswith(PREFIX):
            if _cipher is None:
                raise RuntimeError("an encrypted body was read but GATEWAY_ENCRYPTION_KEY is not set")
            try:
                value = _cipher.decrypt(value[len(PREFIX) :].encode()).decode()
            except InvalidToken:
                raise RuntimeError("no key in GATEWAY_ENCRYPTION_KEY opens this body") from None
        return json.loads(value)
