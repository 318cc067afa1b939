"""A provider's status that beats our record of the send is kept and applied; housekeeping forgets."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from gateway import store
from gateway.channels.base import SendResult, StatusUpdate
from gateway.housekeeping import purge
from gateway.local import LocalGateway
from gateway.models import Attempt, EarlyStatus, IdempotencyRecord
from gateway.services.provider_webhooks import apply_early_statuses, apply_status_update


def test_a_status_that_arrives_before_the_send_is_recorded_is_applied_after(database_url: str) -> None:
    settings = {
        "database_url": database_url,
        "twilio_account_sid": "AC1",
        "twilio_auth_token": "t",
        "twilio_from": "+14155550000",
    }
    local = LocalGateway(settings, with_dispatcher=False).start()
    try:
        gw = local.gw
        accepted = local.call(
            "POST", "/v1/messages", {"to": {"phone": "+14155550140"}, "content": {"text": "x"}}
        )
        assert accepted.status == 202
        # The provider reports delivery of SMearly before the dispatcher has recorded that id.
        assert apply_status_update(gw, StatusUpdate("SMearly", "delivered")) is False
        with store.transaction(gw.engine) as session:
            message = store.lock_message(session, accepted.body["id"])
            assert message is not None
            job = gw.progress.take_due(session, message)
            assert job is not None
        with store.transaction(gw.engine) as session:
            message = store.lock_message(session, accepted.body["id"])
            attempt = session.get(Attempt, job.attempt_id)
            assert message is not None and attempt is not None
            gw.progress.finish_send(session, message, attempt, SendResult("SMearly"))
            apply_early_statuses(gw, session, message, attempt)
        answer = local.call("GET", f"/v1/messages/{accepted.body['id']}").body
        assert answer["status"] == "delivered"
        assert answer["attempts"][0]["status"] == "delivered"
        with store.transaction(gw.engine) as session:
            assert list(session.exec(select(EarlyStatus))) == []
    finally:
        local.stop()


def test_housekeeping_forgets_day_old_records(database_url: str) -> None:
    local = LocalGateway({"database_url": database_url}, with_dispatcher=False).start()
    try:
        gw = local.gw
        old = gw.clock() - timedelta(hours=25)
        with store.transaction(gw.engine) as session:
            session.add(IdempotencyRecord(api_key_id="k", key="old", request_hash="h", response_status=202,
                                          created_at=old))  # fmt: skip
            session.add(IdempotencyRecord(api_key_id="k", key="new", request_hash="h", response_status=202))
            session.add(EarlyStatus(provider_message_id="SMold", status="delivered", received_at=old))
        assert purge(gw) == 2
        with store.transaction(gw.engine) as session:
            assert [r.key for r in session.exec(select(IdempotencyRecord))] == ["new"]
    finally:
        local.stop()
