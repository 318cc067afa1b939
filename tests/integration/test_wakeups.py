"""The dispatcher is woken by the work itself, not by its timer: every accept and every status callback that
makes work due nudges it, and a nudge already on its way absorbs the others without being lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gateway.local import LocalGateway
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.twilio import Behaviour, TwilioSimulator
from tests.conftest import eventually, status_is, wait_for

QUICK = 5.0  # seconds; the timer below would wake the dispatcher only after 600


def test_nudges_alone_move_messages_and_are_never_lost(make_gateway: Callable[..., LocalGateway]) -> None:
    local = make_gateway(dispatch_interval="600s")
    storm = [threading.Thread(target=lambda: [local.gw.nudge() for _ in range(2000)]) for _ in range(4)]
    for thread in storm:
        thread.start()
    for i in range(5):  # one after the other: each is woken by its own accept's nudge
        answer = local.call(
            "POST", "/v1/messages", {"to": {"phone": f"+1415555020{i}"}, "content": {"text": "hi"}}
        )
        assert answer.status == 202, answer
        wait_for(local, answer.body["id"], status_is("delivered"), timeout=QUICK)
    for thread in storm:
        thread.join()
    answer = local.call("POST", "/v1/messages", {"to": {"phone": "+14155550209"}, "content": {"text": "hi"}})
    wait_for(local, answer.body["id"], status_is("delivered"), timeout=QUICK)


def test_a_failure_callback_wakes_the_dispatcher_for_the_fallback(
    make_gateway: Callable[..., LocalGateway], twilio: TwilioSimulator, smtp: SmtpSimulator
) -> None:
    local = make_gateway(dispatch_interval="600s")
    number, email = "+14155550301", "fallback@example.test"
    twilio.set_behaviour(number, Behaviour("error", 30006))  # accepted, then reported undelivered
    body = {"to": {"phone": number, "email": email}, "channels": ["sms", "email"], "content": {"text": "hi"}}
    answer = local.call("POST", "/v1/messages", body)
    assert answer.status == 202, answer
    started = time.monotonic()
    eventually(lambda: smtp.received_for(email), timeout=QUICK)
    assert time.monotonic() - started < QUICK
    wait_for(local, answer.body["id"], status_is("sent"), timeout=QUICK)  # email's last status
