"""Channel gateway: one send endpoint that reaches a person on the channel they use."""

from __future__ import annotations

from typing import Any

from flask import Flask


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app: settings, database, channel adapters, API blueprints, error handlers.

    `test_config` may hold `settings` (a Settings), `clock`, or setting overrides by name.
    """
    from gateway.api import (
        auto_replies,
        contacts,
        guards,
        messages,
        meta,
        provider_hooks,
        rules,
        unsubscribe,
        webhooks_out,
    )
    from gateway.api.http import MAX_BODY
    from gateway.api.limits import RateLimiter
    from gateway.channels import build_channels
    from gateway.core import build_gateway
    from gateway.services.keys import KeyChecker
    from gateway.settings import Settings, load_settings
    from gateway.timeutil import utcnow

    config = dict(test_config or {})
    settings = config.pop("settings", None)
    clock = config.pop("clock", utcnow)
    if not isinstance(settings, Settings):
        settings = load_settings(overrides=config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    gw = build_gateway(settings, clock)
    app.extensions["gateway"] = gw
    app.extensions["gateway.keys"] = KeyChecker(gw)
    app.extensions["gateway.rate_limiter"] = RateLimiter(settings.api_rate_limit)
    app.extensions["gateway.channels"] = build_channels(settings)
    for module in (meta, messages, contacts, rules, auto_replies, webhooks_out, provider_hooks, unsubscribe):
        app.register_blueprint(module.bp)

    guards.install(app)
    from gateway import admin

    admin.install(app)  # the console under /admin
    from gateway import logs, metrics

    logs.install(app)  # request ids (X-Request-Id) and one log line per request
    metrics.install(app)  # GET /metrics (GATEWAY_METRICS_TOKEN)
    return app
