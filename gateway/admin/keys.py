"""`/admin/keys`: API keys: create (the secret is shown on this one answer only), list, revoke."""

from __future__ import annotations

from typing import Annotated, Any

from flask import current_app, flash, redirect, render_template, request, url_for
from pydantic import Field, StringConstraints, ValidationError
from werkzeug.datastructures import MultiDict

from gateway import store
from gateway.admin import bp
from gateway.admin.auth import admin_required, current_user
from gateway.admin.forms import field_errors
from gateway.api.http import gateway
from gateway.schemas import Scope, Strict
from gateway.services import keys


class KeyForm(Strict):
    """The create form: a name (the column's 100 characters) and at least one scope."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    scopes: list[Scope] = Field(min_length=1)


def _page(errors: dict[str, str] | None = None, created: tuple[Any, str] | None = None) -> Any:
    with store.transaction(gateway().engine) as session:
        listed = keys.list_keys(session)
    page = render_template(
        "admin/keys.html",
        keys=listed,
        scopes=keys.SCOPES,
        errors=errors or {},
        values=request.form if errors else MultiDict(),
        created=created,
    )
    return page, 422 if errors else 200


@bp.get("/keys", endpoint="keys")
@admin_required
def keys_page() -> Any:
    return _page()


@bp.post("/keys")
@admin_required
def key_create() -> Any:
    try:
        form = KeyForm.model_validate(
            {"name": request.form.get("name", ""), "scopes": request.form.getlist("scopes")}, strict=False
        )
    except ValidationError as exc:
        return _page(field_errors(exc))
    gw = gateway()
    with store.transaction(gw.engine) as session:
        key, secret = keys.create_key(session, gw, form.name, list(form.scopes), actor=current_user().name)
    # No redirect: the secret is in this answer only (never in the session cookie or a later page).
    return _page(created=(key, secret))


@bp.post("/keys/<key_id>/revoke")
@admin_required
def key_revoke(key_id: str) -> Any:
    gw = gateway()
    with store.transaction(gw.engine) as session:
        keys.revoke_key(session, gw, key_id, actor=current_user().name)
    checker: keys.KeyChecker = current_app.extensions["gateway.keys"]
    checker.forget()  # this process refuses the key at once; others within CACHE_SECONDS
    flash(f"Key {key_id} revoked: requests with it are now refused.")
    return redirect(url_for("admin.keys"))
