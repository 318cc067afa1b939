"""The admin console: server-rendered pages under /admin that call the same services as the API.

Pages work without JavaScript for reading; small scripts in static/ only make editing livelier.
Every form post carries a CSRF token; every page but sign-in needs a signed-in console user.
"""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


def install(app: Flask) -> None:
    """Register the console on `app` (session cookie settings, CSRF, pages)."""
    from gateway.admin import auth, pages

    auth.configure(app)
    pages.load()
    app.register_blueprint(bp)
