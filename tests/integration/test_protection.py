"""Limits and data protection: client rate limits, strict bodies, security headers, encryption, retention."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from cryptography.fernet import Fernet
from sqlalchemy import text, update

from gateway import store
from gateway.housekeeping import erase_old_bodies
from gateway.local import LocalGateway
from gateway.models import Message

BODY = {"to": {"phone": "+14155550150"}, "content": {"text": "Secret order 42"}}


def test_each_api_key_is_rate_limited_with_retry_after(make_gateway: Callable[..., LocalGateway]) -> None:
    local = make_gateway(api_rate_limit=2)
    answers = [local.call("GET", "/v1/routing-rules") for _ in range(4)]
    assert [a.status for a in answers[:2]] == [200, 200]
    limited = answers[-1]
    assert limited.status == 429
    assert limited.body["type"] == "rate-limited"
    assert int(limited.headers["Retry-After"]) >= 1
    other = local.new_key("admin")  # another key has its own budget
    assert local.call("GET", "/v1/routing-rules", key=other).status == 200


def test_bodies_must_be_json_and_not_too_deep(gateway: LocalGateway) -> None:
    form = gateway.call("POST", "/v1/messages", raw=b"to=x", headers={"Content-Type": "text/plain"})
    assert form.status == 415
    assert form.body["type"] == "unsupported-media-type"
    deep = (
        b'{"to": {"phone": "+14155550150"}, "content": {"text": "x"}, "metadata": '
        + b'{"a":' * 40
        + b"1"
        + b"}" * 40
        + b"}"
    )
    nested = gateway.call("POST", "/v1/messages", raw=deep)
    assert nested.status == 400
    assert nested.body["type"] == "malformed-request"
    assert gateway.call("GET", "/v1/messages").body["data"] == []


def test_security_headers(gateway: LocalGateway) -> None:
    answer = gateway.call("GET", "/v1/messages")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]


def _raw_content(local: LocalGateway, message_id: str) -> str:
    with local.gw.engine.connect() as conn:
        value: str = conn.execute(
            text("SELECT content FROM message WHERE id = :id"), {"id": message_id}
        ).scalar_one()
        return value


def test_bodies_are_encrypted_at_rest_and_keys_rotate(make_gateway: Callable[..., LocalGateway]) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    first = make_gateway(encryption_key=old_key)
    sent = first.call("POST", "/v1/messages", BODY).body
    raw = _raw_content(first, sent["id"])
    assert raw.startswith("fernet:")
    assert "Secret order" not in raw
    first.stop()

    rotated = make_gateway(encryption_key=f"{new_key},{old_key}")  # same database, new key first
    timeline = rotated.call("GET", f"/v1/contacts/{sent['contact_id']}/timeline").body["data"]
    assert timeline[0]["text"] == "Secret order 42"  # written with the old key, still readable
    newer = rotated.call("POST", "/v1/messages", BODY).body
    assert Fernet(new_key.encode()).decrypt(_raw_content(rotated, newer["id"])[len("fernet:") :].encode())


def test_retention_erases_old_bodies_but_keeps_delivery_records(
    make_gateway: Callable[..., LocalGateway],
) -> None:
    local = make_gateway(retention_days=30)
    old = local.call("POST", "/v1/messages", BODY).body
    recent = local.call("POST", "/v1/messages", BODY).body
    with store.transaction(local.gw.engine) as session:
        session.execute(
            update(Message)
            .where(Message.id == old["id"])
            .values(created_at=local.gw.clock() - timedelta(days=31))
        )
    assert erase_old_bodies(local.gw) == 1
    timeline = {
        e["id"]: e for e in local.call("GET", f"/v1/contacts/{old['contact_id']}/timeline").body["data"]
    }
    assert timeline[old["id"]]["text"] is None
    kept = local.call("GET", f"/v1/messages/{old['id']}").body  # the delivery record stays
    assert kept["attempts"] and kept["attempts"][0]["channel"] == "sms"
    assert timeline[recent["id"]]["text"] == "Secret order 42"
