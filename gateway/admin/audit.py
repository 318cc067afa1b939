"""`/admin/audit`: who changed what and when, with the values before and after (newest first)."""

from __future__ import annotations

import json
from typing import Any

from flask import abort, render_template, request

from gateway import store
from gateway.admin import bp
from gateway.admin.auth import admin_required
from gateway.api.http import gateway
from gateway.services import admin_users

SHOWN = 200  # entries a page; `?target=` narrows them to one rule, key or subscription, `?cursor=` pages


@bp.get("/audit", endpoint="audit")
@admin_required
def audit_page() -> Any:
    target = request.args.get("target", "").strip() or None
    cursor_text = request.args.get("cursor", "").strip()
    if cursor_text and not (cursor_text.isascii() and cursor_text.isdigit()):
        abort(400, "cursor must be an entry number (follow the Older entries link)")
    cursor = int(cursor_text) if cursor_text else None
    with store.transaction(gateway().engine) as session:
        entries = admin_users.audit_entries(session, SHOWN + 1, target=target, before=cursor)
    next_cursor = entries[SHOWN - 1].id if len(entries) > SHOWN else None
    return render_template(
        "admin/audit.html",
        entries=entries[:SHOWN],
        target=target,
        shown=SHOWN,
        cursor=cursor,
        next_cursor=next_cursor,
    )


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@bp.app_template_global("audit_changes")
def audit_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(field, before, after) for every field that differs; every field of a creation or deletion."""
    before, after = before or {}, after or {}
    keys = [*before, *(k for k in after if k not in before)]
    return [(k, _text(before.get(k)), _text(after.get(k))) for k in keys if before.get(k) != after.get(k)]
