"""Console sign-in: a signed session cookie naming the user, CSRF tokens, lock-out (services.admin_users).

The cookie is `HttpOnly`, `SameSite=Lax`, and `Secure` when GATEWAY_PUBLIC_URL is https. It holds the user
id and the user's session version: deleting the user, or changing their password, ends every session.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

from flask import Flask, Request, Response, abort, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from gateway import store
from gateway.admin import bp
from gateway.api.http import gateway
from gateway.errors import ProblemError
from gateway.models import AdminUser
from gateway.services import admin_users

F = TypeVar("F", bound=Callable[..., Any])
SESSION_LIFETIME = timedelta(hours=12)
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


class _ConsoleSessions(SecureCookieSessionInterface):
    """The console's cookie session, opened only under /admin (the cookie's path): API requests never carry
    it, and building its signer for each of them cost more than the rest of Flask's request set-up."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.path.startswith("/admin"):
            return None  # Flask gives the request a null session, which refuses writes
        return super().open_session(app, request)


def configure(app: Flask) -> None:
    gw = app.extensions["gateway"]
    app.session_interface = _ConsoleSessions()
    # The cookie signing key is derived from the callback secret, so every process of one deployment
    # (and a restart) accepts the same sessions without another secret to configure.
    app.secret_key = hmac.new(gw.callback_secret().encode(), b"admin-session", hashlib.sha256).hexdigest()
    app.config.update(
        SESSION_COOKIE_NAME="gateway_admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=gw.settings.public_url.startswith("https://"),
        SESSION_COOKIE_PATH="/admin",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


@bp.app_template_global("csrf_token")
def _csrf_token_global() -> str:
    return csrf_token()


@bp.before_request
def _check_csrf() -> None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(
            400, "The form was missing its security token or it has expired. Reload the page and try again."
        )


@bp.before_request
def _load_user() -> None:
    g.admin_user = None
    uid, version = session.get("uid"), session.get("ver")
    if not isinstance(uid, str) or request.endpoint == "admin.static":
        return  # stylesheets and scripts are public and need no database lookup
    with store.transaction(gateway().engine) as db:
        user = db.get(AdminUser, uid)
    if user is None or user.session_version != version:
        session.pop("uid", None)
        session.pop("ver", None)
        return
    g.admin_user = user


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    return response


def current_user() -> AdminUser:
    user = g.get("admin_user")
    assert user is not None, "view not wrapped in admin_required"
    return cast(AdminUser, user)


def admin_required(view: F) -> F:
    """Send visitors without a valid session to the sign-in page."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("admin_user") is None:
            return redirect(url_for("admin.sign_in", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return cast(F, wrapper)


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return url_for("admin.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def sign_in() -> Any:
    error = None
    name = ""
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        password = request.form.get("password", "")
        gw = gateway()
        with store.transaction(gw.engine) as db:
            outcome = admin_users.sign_in(db, name, password, gw.clock())
            if isinstance(outcome, AdminUser):
                session.clear()
                session.permanent = True
                session["uid"], session["ver"] = outcome.id, outcome.session_version
                csrf_token()  # a fresh token for the new session
                return redirect(_safe_next(request.args.get("next")))
        error = outcome
    status = 401 if error else 200
    return render_template("admin/login.html", error=error, name=name), status


@bp.post("/logout")
def sign_out() -> Any:
    session.clear()
    return redirect(url_for("admin.sign_in"))


@bp.errorhandler(ProblemError)
def _problem(error: ProblemError) -> Any:
    return render_template("admin/error.html", title=error.title, detail=error.detail), error.status


@bp.errorhandler(400)
def _bad_request(error: Any) -> Any:
    return render_template("admin/error.html", title="Bad request", detail=error.description), 400
