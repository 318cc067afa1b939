"""`/admin/webhooks`: event subscriptions: create (the signing secret is shown once), list, delete."""

from __future__ import annotations

from typing import Any, get_args

from flask import flash, redirect, render_template, request, url_for
from pydantic import ValidationError
from werkzeug.datastructures import MultiDict

from gateway import store
from gateway.admin import bp
from gateway.admin.auth import admin_required, current_user
from gateway.admin.forms import field_errors
from gateway.api.http import gateway
from gateway.schemas import EventType, WebhookIn
from gateway.services import webhooks

EVENTS: tuple[str, ...] = get_args(EventType)


def _page(errors: dict[str, str] | None = None, created: tuple[Any, str] | None = None) -> Any:
    with store.transaction(gateway().engine) as session:
        listed = webhooks.list_subscriptions(session)
    page = render_template(
        "admin/webhooks.html",
        subscriptions=listed,
        events=EVENTS,
        errors=errors or {},
        values=request.form if errors else MultiDict(),
        created=created,
    )
    return page, 422 if errors else 200


@bp.get("/webhooks", endpoint="webhooks")
@admin_required
def webhooks_page() -> Any:
    return _page()


@bp.post("/webhooks")
@admin_required
def webhook_create() -> Any:
    data = {
        "url": request.form.get("url", "").strip(),
        "events": request.form.getlist("events"),
        "respond": request.form.get("respond") == "on",
    }
    try:
        body = WebhookIn.model_validate(data, strict=False)
    except ValidationError as exc:
        return _page(field_errors(exc))
    gw = gateway()
    with store.transaction(gw.engine) as session:
        sub, secret = webhooks.subscribe(session, gw, body, current_user().name)
    gw.subscriptions.forget()
    # No redirect: the secret is in this answer only.
    return _page(created=(sub, secret))


@bp.post("/webhooks/<webhook_id>/delete")
@admin_required
def webhook_delete(webhook_id: str) -> Any:
    gw = gateway()
    with store.transaction(gw.engine) as session:
        url = webhooks.get_subscription(session, webhook_id).url
        webhooks.unsubscribe(session, gw, webhook_id, current_user().name)
    gw.subscriptions.forget()
    flash(f"Subscription {webhook_id} ({url}) deleted.")
    return redirect(url_for("admin.webhooks"))
