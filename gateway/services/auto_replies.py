"""Auto-reply rules: validate, store, list, delete, and load from TOML (`[[auto_replies]]` tables)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete
from sqlmodel import Session, col, select

from gateway.core import Gateway
from gateway.errors import FieldError, ProblemError, conflict, not_found
from gateway.ids import new_id
from gateway.inbound.auto_replies import normalise
from gateway.models import AutoReplyRule, AutoReplySent
from gateway.schemas import AutoReplyIn
from gateway.timeutil import format_duration, rfc3339


def check_keywords(body: AutoReplyIn) -> None:
    """Reject a keyword with nothing left to match once normalised (only punctuation or symbols)."""
    errors = [
        FieldError(f"keywords.{i}", "has no letters or digits to match")
        for i, keyword in enumerate(body.keywords or [])
        if not normalise(keyword)
    ]
    if errors:
        detail = f"{errors[0].field}: {errors[0].message}"
        raise ProblemError(422, "validation-error", "The request is invalid", detail, errors)


def _columns(body: AutoReplyIn) -> dict[str, Any]:
    data = body.model_dump(mode="json")
    return {
        "name": data["name"],
        "order": data["order"],
        "enabled": data["enabled"],
        "keywords": data["keywords"],
        "business_hours": data["business_hours"],
        "channels": data["channels"],
        "reply": data["reply"],
        "once_per": float(data["once_per"]),
    }


def auto_reply_out(row: AutoReplyRule) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "order": row.order,
        "enabled": row.enabled,
        "keywords": row.keywords,
        "business_hours": row.business_hours,
        "channels": row.channels,
        "reply": row.reply,
        "once_per": format_duration(row.once_per),
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }


def _name_taken(session: Session, name: str, rule_id: str | None) -> bool:
    row = session.exec(select(AutoReplyRule).where(AutoReplyRule.name == name)).first()
    return row is not None and row.id != rule_id


def create_auto_reply(session: Session, gw: Gateway, body: AutoReplyIn) -> dict[str, Any]:
    check_keywords(body)
    if _name_taken(session, body.name, None):
        raise conflict(f"an auto-reply named {body.name!r} exists")
    now = gw.clock()
    row = AutoReplyRule(id=new_id("ar"), created_at=now, updated_at=now, **_columns(body))
    session.add(row)
    return auto_reply_out(row)


def replace_auto_reply(session: Session, gw: Gateway, rule_id: str, body: AutoReplyIn) -> dict[str, Any]:
    check_keywords(body)
    row = get_auto_reply(session, rule_id)
    if _name_taken(session, body.name, rule_id):
        raise conflict(f"an auto-reply named {body.name!r} exists")
    for key, value in _columns(body).items():
        setattr(row, key, value)
    row.updated_at = gw.clock()
    return auto_reply_out(row)


def get_auto_reply(session: Session, rule_id: str) -> AutoReplyRule:
    row = session.get(AutoReplyRule, rule_id)
    if row is None:
        raise not_found(f"auto-reply {rule_id}")
    return row


def delete_auto_reply(session: Session, rule_id: str) -> None:
    """Delete a rule and its record of whom it answered."""
    session.delete(get_auto_reply(session, rule_id))
    session.exec(delete(AutoReplySent).where(col(AutoReplySent.rule_id) == rule_id))


def list_auto_replies(session: Session) -> list[AutoReplyRule]:
    query = select(AutoReplyRule).order_by(col(AutoReplyRule.order), col(AutoReplyRule.name))
    return list(session.exec(query))


def load_auto_replies_file(session: Session, gw: Gateway, path: Path) -> list[str]:
    """Create or replace (by name) every `[[auto_replies]]` table of a TOML file; all or nothing."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProblemError(400, "malformed-request", "Malformed TOML", f"{path}: {exc}") from None
    names = []
    for i, raw in enumerate(data.get("auto_replies", [])):
        try:
            body = AutoReplyIn.model_validate(raw, strict=False)
            existing = session.exec(select(AutoReplyRule).where(AutoReplyRule.name == body.name)).first()
            if existing:
                replace_auto_reply(session, gw, existing.id, body)
            else:
                create_auto_reply(session, gw, body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise ProblemError(
                422, "validation-error", "Invalid auto-reply", f"auto_replies[{i}].{where}: {message}"
            ) from None
        except ProblemError as exc:
            raise ProblemError(exc.status, exc.slug, exc.title, f"auto_replies[{i}]: {exc.detail}") from None
        names.append(body.name)
    return names
