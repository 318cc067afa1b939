"""Console users and the audit log: argon2-hashed passwords, lock-out after repeated failures.

API keys are never accepted as passwords: sign-in checks only the `admin_user` table.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, select

from gateway.errors import FieldError, ProblemError, not_found
from gateway.ids import new_id
from gateway.models import AdminUser, AuditEntry

MAX_FAILURES = 5  # failed sign-ins in a row before the account is locked
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD = 12  # characters
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the name is unknown, so a wrong name costs the same time as a wrong
    password. Made on first use: argon2 takes 64 MiB, which processes that never sign anyone in
    (the worker) should not pay for."""
    return _hasher.hash("not a password of anyone")


def _invalid(field: str, message: str) -> ProblemError:
    return ProblemError(422, "validation-error", "Invalid request", message, [FieldError(field, message)])


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise _invalid("password", f"must be at least {MIN_PASSWORD} characters")


def create_user(session: Session, name: str, password: str, now: datetime) -> AdminUser:
    if not NAME.match(name):
        raise _invalid("name", "use 1-100 letters, digits and . _ @ -")
    check_new_password(password)
    if session.exec(select(AdminUser).where(AdminUser.name == name)).first() is not None:
        raise ProblemError(409, "conflict", "Conflict", f"user {name} already exists")
    user = AdminUser(id=new_id("usr"), name=name, password_hash=_hasher.hash(password), created_at=now)
    session.add(user)
    return user


def set_password(session: Session, name: str, password: str) -> AdminUser:
    user = find_user(session, name)
    check_new_password(password)
    user.password_hash = _hasher.hash(password)
    user.session_version += 1  # every open session of this user ends
    user.failed_logins, user.locked_until = 0, None
    return user


def find_user(session: Session, name: str) -> AdminUser:
    user = session.exec(select(AdminUser).where(AdminUser.name == name)).first()
    if user is None:
        raise not_found(f"user {name}")
    return user


def delete_user(session: Session, name: str) -> None:
    session.delete(find_user(session, name))


def list_users(session: Session) -> list[AdminUser]:
    return list(session.exec(select(AdminUser).order_by(col(AdminUser.name))))


def sign_in(session: Session, name: str, password: str, now: datetime) -> AdminUser | str:
    """The user, or why signing in failed (one message for unknown names and wrong passwords)."""
    user = session.exec(select(AdminUser).where(AdminUser.name == name)).first()
    if user is None:
        _verify(_dummy_hash(), password)
        return "Wrong name or password."
    if user.locked_until is not None and user.locked_until > now:
        return "Too many failed sign-ins: this account is locked for a while. Try again later."
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILURES:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
        return "Wrong name or password."
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def audit(
    session: Session,
    actor: str,
    action: str,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now: datetime,
) -> None:
    """Record one change in the same transaction as the change itself."""
    session.add(AuditEntry(at=now, actor=actor, action=action, target=target, before=before, after=after))


def audit_entries(
    session: Session, limit: int = 100, target: str | None = None, before: int | None = None
) -> list[AuditEntry]:
    """The newest `limit` entries (of one target), or the newest older than entry `before`."""
    query = select(AuditEntry)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    if before is not None:
        query = query.where(col(AuditEntry.id) < before)
    return list(session.exec(query.order_by(col(AuditEntry.id).desc()).limit(limit)))
