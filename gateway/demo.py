"""`gateway demo`: a guided run on local simulators, no credentials needed.

It starts Twilio, LINE and Meta Graph stand-ins and an SMTP server on loopback, serves the gateway on a
temporary SQLite database, creates a routing rule for Japan (LINE first) through the API, sends a handful
of messages that show delivery, a retried transient error, a fallback from SMS to email, a silent channel
timing out into fallback, a failure with nothing left, a number not on WhatsApp falling back to SMS, and a
Japanese LINE friend reached on LINE, then
prints each message's journey.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime
from typing import Any

from gateway.local import LocalGateway, simulator_settings
from gateway.simulators.line import LineSimulator
from gateway.simulators.meta import MetaSimulator
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.twilio import Behaviour, TwilioSimulator

SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    (
        "Delivered by SMS",
        {"to": {"phone": "+14155550100", "email": "ada@demo.test"}, "content": {"text": "Order 1 shipped."}},
    ),
    (
        "SMS fails once with a transient error (30008), is retried, then delivered",
        {"to": {"phone": "+14155550101"}, "content": {"text": "Order 2 shipped."}},
    ),
    (
        "SMS number invalid (21211): falls back to email at once",
        {
            "to": {"phone": "+14155521211", "email": "grace@demo.test"},
            "content": {"text": "Order 3 shipped.", "subject": "Order 3"},
        },
    ),
    (
        "SMS accepted but silent: after 3 s without a receipt, falls back to email",
        {
            "to": {"phone": "+14155599999", "email": "linus@demo.test"},
            "content": {"text": "Order 4 shipped."},
            "fallback": {"after": "3s"},
        },
    ),
    (
        "Email only, mailbox unknown (550): nothing left, so the message fails",
        {"to": {"email": "unknown-user@demo.test"}, "content": {"text": "Order 5 shipped."}},
    ),
    (
        "Not on WhatsApp (131026): tried by phone with a template, falls back to SMS at once",
        {
            "to": {"phone": "+14155131026"},
            "content": {
                "text": "Order 7 shipped.",
                "templates": {"whatsapp": {"name": "order_update", "language": "en_US", "params": ["7"]}},
            },
        },
    ),
    (
        "LINE friend in Japan: the country rule sends by LINE (accepted; LINE has no delivery receipts)",
        {
            "to": {"phone": "+819012345678", "identities": {"line": "U4af4980629demo"}},
            "content": {"text": "ご注文6を発送しました。"},
        },
    ),
]
# Created through the API at the start of the demo, as an admin would.
JAPAN_RULE: dict[str, Any] = {
    "name": "japan-line-first",
    "order": 10,
    "when": {"country": ["JP"]},
    "route": [{"channel": "line"}, {"channel": "sms"}, {"channel": "email"}],
}
# Channels whose messages end as `sent`: the provider accepts them and never reports delivery.
NO_RECEIPTS = ("email", "line")


def run_demo(timeout: float = 30.0) -> int:
    """Run the scenarios and print their journeys; returns a process exit code."""
    folder = tempfile.mkdtemp(prefix="gateway-demo-")
    database = f"sqlite:///{folder}/gateway.db"
    print("Channel gateway demo: local stand-ins for every provider, no real provider is called.\n")
    with (
        TwilioSimulator(callback_delay=0.3) as twilio,
        SmtpSimulator() as smtp,
        LineSimulator() as line,
        MetaSimulator() as meta,
    ):
        twilio.set_behaviour("+14155550101", Behaviour(kind="error", code=30008, fail_times=1))
        overrides = (
            simulator_settings(twilio, smtp)
            | line.gateway_settings()
            | meta.settings()
            | {
                "database_url": database,
                "retry_backoff": "1s",
                "dispatch_interval": "0.5s",
            }
        )
        with LocalGateway(overrides) as local:
            print(f"Gateway serving on {local.url}, database {database}\n")
            line.connect(local.url)
            meta.point_at(local.url)
            rule = local.call("POST", "/v1/routing-rules", JAPAN_RULE)
            if rule.status != 201:
                print(f"unexpected answer {rule.status}: {rule.body}")
                return 1
            print(f"Created routing rule {JAPAN_RULE['name']}: country JP → line, sms, email\n")
            sent = []
            for title, body in SCENARIOS:
                answer = local.call("POST", "/v1/messages", body)
                if answer.status != 202:
                    print(f"unexpected answer {answer.status}: {answer.body}")
                    return 1
                plan = answer.body["plan"]
                steps = " → ".join(s["channel"] for s in plan) or "none"
                because = f" ({plan[0]['because']})" if plan else ""
                print(f"• {title}\n  accepted {answer.body['id']}, plan: {steps}{because}")
                sent.append((title, answer.body["id"]))
            print("\nWaiting for deliveries, retries and fallbacks…\n")
            journeys = _wait_for_all(local, [m for _, m in sent], timeout)
            for title, message_id in sent:
                print(format_journey(title, journeys[message_id]))
            print(
                f"The SMTP server received {len(smtp.messages)} emails, "
                f"the Twilio stand-in {len(twilio.messages)} SMS, "
                f"the LINE stand-in {len(line.messages)} push, the Graph API stand-in {len(meta.messages)} "
                "WhatsApp message."
            )
            print(
                "\nKeep exploring: the database stays at\n"
                f"  {database}\n"
                "Serve it with\n"
                f"  GATEWAY_DATABASE_URL={database} gateway serve --port 8000\n"
                "and read a journey with\n"
                f"  curl -H 'Authorization: Bearer {local.key}' "
                f"http://127.0.0.1:8000/v1/messages/{sent[0][1]}\n"
                f"(this run served {local.url} with that admin key), or see the journeys in the console\n"
                f"  GATEWAY_DATABASE_URL={database} gateway admin create-user you\n"
                "and sign in at http://127.0.0.1:8000/admin."
            )
    unfinished = [m for m, j in journeys.items() if not _settled(j)]
    return 1 if unfinished else 0


def _settled(message: dict[str, Any]) -> bool:
    return message["status"] in ("delivered", "read", "failed", "expired", "cancelled") or (
        message["status"] == "sent" and message["channel"] in NO_RECEIPTS
    )


def _wait_for_all(local: LocalGateway, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    journeys: dict[str, dict[str, Any]] = {}
    while True:
        journeys = {m: local.call("GET", f"/v1/messages/{m}").body for m in ids}
        if all(_settled(j) for j in journeys.values()) or time.monotonic() > deadline:
            return journeys
        time.sleep(0.3)


def format_journey(title: str, message: dict[str, Any]) -> str:
    """A message's attempts as lines a person can read, with times relative to its creation."""
    start = _time(message["created_at"])
    reason = f" ({message['reason']})" if message.get("reason") else ""
    lines = [f"{title}\n  {message['id']}: {message['status'].upper()}{reason} via {message['channel']}"]
    for attempt in message["attempts"]:
        offset = (_time(attempt["created_at"]) - start).total_seconds()
        line = (
            f"    +{offset:5.2f}s  {attempt['channel']:<5} try {attempt['try_number']} "
            f"to {attempt['address']}: {attempt['status']}"
        )
        if attempt["provider_message_id"]:
            line += f" [{attempt['provider_message_id'][:14]}…]"
        error = attempt["error"]
        if error:
            code = f" {error['code']}" if error["code"] else ""
            line += f"\n              error {error['kind']}{code}: {error['detail']}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
