"""Provider status reports that arrive together are applied in one transaction (`gw.statuses`), each as it
would be alone; a report that cannot be applied costs only its own webhook call."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import select

from gateway import store
from gateway.channels.base import SendResult, StatusUpdate
from gateway.local import LocalGateway
from gateway.models import Attempt, ChannelState, EarlyStatus, Message
from gateway.services import provider_webhooks
from gateway.services.provider_webhooks import _apply_together, apply_status_update, apply_status_updates

SMS = {"twilio_account_sid": "AC1", "twilio_auth_token": "t", "twilio_from": "+14155550000"}


@pytest.fixture
def local(database_url: str) -> Iterator[LocalGateway]:
    gateway = LocalGateway({"database_url": database_url, **SMS}, with_dispatcher=False).start()
    yield gateway
    gateway.stop()


def sent(local: LocalGateway, n: int, provider_ids: bool = True) -> list[tuple[str, str, str]]:
    """Accept n SMS and record each as sent (as the dispatcher does); (message, attempt, provider id)."""
    out = []
    for i in range(n):
        answer = local.call(
            "POST", "/v1/messages", {"to": {"phone": f"+1415555{i:04d}"}, "content": {"text": "x"}}
        )
        assert answer.status == 202, answer.body
        with store.transaction(local.gw.engine) as session:
            message = store.lock_message(session, answer.body["id"])
            assert message is not None
            job = local.gw.progress.take_due(session, message)
            assert job is not None
            attempt = session.get(Attempt, job.attempt_id)
            assert attempt is not None
            provider_id = f"SM{i:032d}"
            if provider_ids:
                local.gw.progress.finish_send(session, message, attempt, SendResult(provider_id))
        out.append((answer.body["id"], job.attempt_id, provider_id))
    return out


def state(local: LocalGateway, message_id: str) -> tuple[str, str]:
    with store.transaction(local.gw.engine) as session:
        message = session.get(Message, message_id)
        assert message is not None and message.current_attempt_id is not None
        attempt = session.get(Attempt, message.current_attempt_id)
        assert attempt is not None
        return message.status, attempt.status


def refuse_reports_on(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    """Make every report on provider message `bad` fail while it is applied."""
    real = provider_webhooks.metrics.receipt

    def receipt(session: Any, message: Any, attempt: Any, update: StatusUpdate) -> None:
        if update.provider_message_id == bad:
            raise ValueError("this report cannot be applied")
        real(session, message, attempt, update)

    monkeypatch.setattr(provider_webhooks.metrics, "receipt", receipt)


def test_reports_of_several_calls_applied_together_move_each_message(local: LocalGateway) -> None:
    sends = sent(local, 4)
    items = [
        [StatusUpdate(pid, "sent", attempt_id=aid), StatusUpdate(pid, "delivered")] for _, aid, pid in sends
    ]
    assert _apply_together(local.gw, items) == [2, 2, 2, 2]
    for message_id, _, _ in sends:
        assert state(local, message_id) == ("delivered", "delivered")
    with store.transaction(local.gw.engine) as session:  # what the receipts taught, once per contact
        states = list(session.exec(select(ChannelState)))
        assert sorted(s.reachability for s in states) == ["reachable"] * 4


def test_a_report_naming_the_attempt_lets_a_later_one_find_it_by_provider_id(local: LocalGateway) -> None:
    [(message_id, attempt_id, provider_id)] = sent(local, 1, provider_ids=False)  # the send is not recorded
    updates = [
        StatusUpdate(provider_id, "sent", attempt_id=attempt_id),
        StatusUpdate(provider_id, "delivered"),
    ]
    assert apply_status_updates(local.gw, updates, "sms") == 2
    assert state(local, message_id) == ("delivered", "delivered")
    with store.transaction(local.gw.engine) as session:
        assert list(session.exec(select(EarlyStatus))) == []


def test_an_unknown_provider_id_is_kept_for_later_beside_reports_that_apply(local: LocalGateway) -> None:
    [(message_id, _, provider_id)] = sent(local, 1)
    items = [[StatusUpdate("SMunknown", "delivered")], [StatusUpdate(provider_id, "delivered")]]
    assert _apply_together(local.gw, items) == [0, 1]
    assert state(local, message_id) == ("delivered", "delivered")
    with store.transaction(local.gw.engine) as session:
        assert [e.provider_message_id for e in session.exec(select(EarlyStatus))] == ["SMunknown"]


def test_a_report_that_fails_costs_only_its_own_call(
    local: LocalGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = sent(local, 3)
    bad = sends[1][2]
    refuse_reports_on(monkeypatch, bad)
    items = [[StatusUpdate(pid, "delivered")] for _, _, pid in sends]
    first, second, third = _apply_together(local.gw, items)
    assert (first, third) == (1, 1)
    assert isinstance(second, ValueError)
    assert [state(local, m)[1] for m, _, _ in sends] == ["delivered", "accepted", "delivered"]


def test_reports_from_many_threads_at_once_are_each_applied(local: LocalGateway) -> None:
    sends = sent(local, 24)
    answers: list[bool] = []
    start = threading.Barrier(len(sends))

    def report(provider_id: str) -> None:
        start.wait()
        answers.append(apply_status_update(local.gw, StatusUpdate(provider_id, "delivered")))

    threads = [threading.Thread(target=report, args=(pid,)) for _, _, pid in sends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [True] * len(sends)
    assert {state(local, m) for m, _, _ in sends} == {("delivered", "delivered")}


def test_the_reports_of_one_call_are_applied_all_or_none(
    local: LocalGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = sent(local, 2)
    bad = sends[1][2]
    refuse_reports_on(monkeypatch, bad)
    with pytest.raises(ValueError):
        apply_status_updates(local.gw, [StatusUpdate(pid, "delivered") for _, _, pid in sends], "sms")
    assert [state(local, m)[1] for m, _, _ in sends] == ["accepted", "accepted"]  # the first not kept either
