"""`/admin/`: the dashboard."""

from __future__ import annotations

from typing import Any

from flask import render_template

from gateway.admin import bp
from gateway.admin.auth import admin_required


@bp.get("/")
@admin_required
def dashboard() -> Any:
    return render_template("admin/dashboard.html")
