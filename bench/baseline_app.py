"""The one-insert baseline for the accept case: a plain Flask app that parses the same JSON body as
`POST /v1/messages` and inserts one row, through an engine configured exactly as the gateway's
(`gateway.store.make_engine`: SQLite in WAL mode with `BEGIN IMMEDIATE`, or PostgreSQL with a pool), and
with the gateway's garbage-collector settings (`gateway.gctune`), so the ratio compares code, not settings.

Run it as the gateway is run: `BENCH_BASELINE_DB=<url> gunicorn bench.baseline_app:app`.
"""

from __future__ import annotations

import gc
import os
import secrets
from datetime import UTC, datetime

from flask import Flask, Response, jsonify, request
from sqlalchemy import JSON, Column, DateTime, Engine, MetaData, String, Table, insert

from gateway.store import make_engine

metadata = MetaData()
messages = Table(
    "baseline_message",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def create_schema(url: str) -> None:
    """Create the table before the server's workers start (they would race to create it)."""
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()


def create_app(engine: Engine) -> Flask:
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.post("/v1/messages")
    def send() -> tuple[Response, int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("to"), dict):
            return jsonify(type="validation-error", status=422), 422
        message_id = "msg_" + secrets.token_hex(13)
        with engine.begin() as conn:
            conn.execute(insert(messages).values(id=message_id, body=body, created_at=datetime.now(UTC)))
        return jsonify(id=message_id, status="queued"), 202

    return app


def _app_from_env() -> Flask | None:
    url = os.environ.get("BENCH_BASELINE_DB")
    if not url:
        return None
    app = create_app(make_engine(url))
    # gateway.gctune.settle(), written out: `--gateway-ref` may name a gateway commit without it.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    return app


app = _app_from_env()
