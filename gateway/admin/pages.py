"""The console's page modules; importing one registers its views on the admin blueprint."""

from __future__ import annotations

import importlib

from flask import current_app

from gateway.admin import bp

MODULES = ("dashboard", "messages", "contacts", "rules", "audit", "keys", "webhooks")
# The navigation, in order; an entry shows once its page module registers the endpoint.
NAV = (
    ("admin.dashboard", "Dashboard"),
    ("admin.rules", "Rules"),
    ("admin.messages", "Messages"),
    ("admin.contacts", "Contacts"),
    ("admin.keys", "API keys"),
    ("admin.webhooks", "Webhooks"),
    ("admin.audit", "Audit log"),
)


def load() -> None:
    for name in MODULES:
        importlib.import_module(f"gateway.admin.{name}")


@bp.app_template_global("nav_items")
def nav_items() -> list[tuple[str, str]]:
    return [(endpoint, label) for endpoint, label in NAV if endpoint in current_app.view_functions]
