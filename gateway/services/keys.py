"""API keys: created once and shown once, stored as SHA-256, checked on every request."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from gateway import store
from gateway.core import Gateway
from gateway.errors import ProblemError, not_found
from gateway.ids import new_id
from gateway.models import ApiKey
from gateway.services.admin_users import audit
from gateway.timeutil import rfc3339

SCOPES = ("send", "read", "admin")
# What each scope may do: `admin` everything, `send` messages and contacts, `read` only GETs.
GRANTS = {"admin": {"admin", "send", "read"}, "send": {"send", "read"}, "read": {"read"}}
CACHE_SECONDS = 30.0  # a revoked key stops working within this long in other processes
LAST_USED_EVERY = 60.0  # last_used_at is written at most this often per key


@dataclass(frozen=True)
class Caller:
    key_id: str
    scopes: frozenset[str]

    def allows(self, needed: str) -> bool:
        return any(needed in GRANTS[s] for s in self.scopes)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    session: Session, gw: Gateway, name: str, scopes: list[str], actor: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key; the secret is returned once and never stored. With an `actor` (console user,
    `cli`) the creation is written to the audit log, without the secret or its hash."""
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}")
    secret = "gw_" + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key"),
        name=name,
        scopes=",".join(sorted(set(scopes))),
        key_hash=hash_key(secret),
        created_at=gw.clock(),
    )
    session.add(key)
    if actor is not None:
        audit(session, actor, "key.create", key.id, None, key_audit(key), key.created_at)
    return key, secret


def key_audit(key: ApiKey) -> dict[str, Any]:
    """What the audit log keeps of a key: never the secret or its hash."""
    return {
        "id": key.id,
        "name": key.name,
        "scopes": key.scopes.split(","),
        "created_at": rfc3339(key.created_at),
        "revoked_at": rfc3339(key.revoked_at),
    }


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.id))))


def revoke_key(session: Session, gw: Gateway, key_id: str, actor: str | None = None) -> None:
    """Revoke a key (again: nothing changes); other processes stop accepting it within CACHE_SECONDS."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise not_found(f"key {key_id}")
    if key.revoked_at is not None:
        return
    before = key_audit(key)
    key.revoked_at = gw.clock()
    if actor is not None:
        audit(session, actor, "key.revoke", key.id, before, key_audit(key), key.revoked_at)


class KeyChecker:
    """Authenticates bearer tokens with a short cache, so a request costs no write or lookup."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def authenticate(self, header: str | None) -> Caller:
        if not header or not header.startswith("Bearer "):
            raise ProblemError(
                401,
                "unauthorized",
                "Unauthorized",
                "missing bearer API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hash_key(header[len("Bearer ") :].strip())
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is None or cached[0] < now:
            caller = self._load(digest)
            with self._lock:
                self._cache[digest] = (now + CACHE_SECONDS, caller)
        else:
            caller = cached[1]
        if caller is None:
            raise ProblemError(
                401,
                "unauthorized",
                "Unauthorized",
                "unknown or revoked API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        self._touch(caller.key_id, now)
        return caller

    def _load(self, digest: str) -> Caller | None:
        with store.transaction(self.gw.engine) as session:
            key = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
            if key is None or key.revoked_at is not None:
                return None
            return Caller(key.id, frozenset(key.scopes.split(",")))

    def _touch(self, key_id: str, now: float) -> None:
        with self._lock:
            if now - self._used.get(key_id, -LAST_USED_EVERY) < LAST_USED_EVERY:
                return
            self._used[key_id] = now
        with store.transaction(self.gw.engine) as session:
            key = session.get(ApiKey, key_id)
            if key is not None:
                key.last_used_at = self.gw.clock()

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


def format_key_line(key: ApiKey) -> str:
    """`id name scopes created_at last_used_at` for `gateway keys list`."""

    def stamp(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"

    revoked = " revoked" if key.revoked_at else ""
    return f"{key.id} {key.name} {key.scopes} {stamp(key.created_at)} {stamp(key.last_used_at)}{revoked}"
