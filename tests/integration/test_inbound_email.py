"""Inbound email over real sockets: replies to a gateway email come back through a real SMTP connection
into the gateway's listener, thread to their message and contact, and lose their quoted history; broken
or forged mail is refused at the SMTP level; marketing email carries RFC 8058 one-click unsubscribe."""

from __future__ import annotations

import re
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest

from gateway.local import LocalGateway, free_port
from gateway.simulators import smtp as smtp_simulator
from gateway.simulators.smtp import SmtpSimulator
from tests.conftest import status_is, wait_for

DOMAIN = "in.example.test"
CUSTOMER = "ada@example.test"


@pytest.fixture
def local(make_gateway: Callable[..., LocalGateway]) -> LocalGateway:
    return make_gateway(inbound_smtp_port=free_port(), inbound_email_domain=DOMAIN)


def send(local: LocalGateway, body: dict[str, Any]) -> dict[str, Any]:
    answer = local.call("POST", "/v1/messages", body)
    assert answer.status == 202, answer.body
    return answer.body


def email_to(local: LocalGateway, smtp: SmtpSimulator, category: str = "transactional") -> dict[str, Any]:
    """Send an email-only message and return what the SMTP server received."""
    before = len(smtp.received_for(CUSTOMER))
    accepted = send(
        local,
        {
            "to": {"email": CUSTOMER},
            "content": {"text": "Your order 42 has shipped.", "subject": "Order 42"},
            "category": category,
        },
    )
    assert [s["channel"] for s in accepted["plan"]] == ["email"]
    wait_for(local, accepted["id"], status_is("sent"))
    received = smtp.received_for(CUSTOMER)
    assert len(received) == before + 1
    return {"accepted": accepted, "email": received[-1]}


def smtp_send(local: LocalGateway, mail_from: str, to: str, raw: bytes | str) -> None:
    """Deliver a message into the gateway's inbound listener over a real SMTP connection."""
    settings = local.gw.settings
    assert settings.inbound_smtp_port is not None
    with smtplib.SMTP(settings.inbound_smtp_host, settings.inbound_smtp_port, timeout=10) as client:
        client.sendmail(mail_from, [to], raw)


def reply(to: str, sender: str, text: str, message_id: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Re: Order 42"
    message["Message-ID"] = message_id or make_msgid(domain="corp.example")
    message.set_content(text)
    return message


def timeline(local: LocalGateway, contact_id: str) -> list[dict[str, Any]]:
    answer = local.call("GET", f"/v1/contacts/{contact_id}/timeline")
    assert answer.status == 200, answer.body
    entries: list[dict[str, Any]] = answer.body["data"]
    return entries


def wait_inbound(local: LocalGateway, contact_id: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        inbound = [e for e in timeline(local, contact_id) if e["direction"] == "inbound"]
        if len(inbound) >= count:
            return inbound
        assert time.monotonic() < deadline, timeline(local, contact_id)
        time.sleep(0.05)


def test_reply_from_another_address_threads_to_its_message_and_contact(
    local: LocalGateway, smtp: SmtpSimulator
) -> None:
    sent = email_to(local, smtp)
    accepted, email = sent["accepted"], sent["email"]
    reply_to = email["headers"]["Reply-To"]
    assert re.fullmatch(rf"reply\+[a-z0-9_.-]+@{re.escape(DOMAIN)}", reply_to), reply_to
    assert "List-Unsubscribe" not in email["headers"]  # transactional

    text = (
        "Yes, Tuesday works.\n\n"
        "On Mon, 3 Nov 2025 at 10:02, Gateway <gateway@demo.test> wrote:\n"
        "> Your order 42 has shipped.\n"
    )
    message = reply(reply_to, "Ada at work <ada.lovelace@corp.example>", text)
    smtp_send(local, "ada.lovelace@corp.example", reply_to, message.as_bytes())

    inbound = wait_inbound(local, accepted["contact_id"])
    assert len(inbound) == 1
    entry = inbound[0]
    assert entry["channel"] == "email"
    assert entry["in_reply_to"] == accepted["id"]
    assert entry["text"] == "Yes, Tuesday works."
    entries = timeline(local, accepted["contact_id"])
    assert [e["direction"] for e in entries] == ["outbound", "inbound"]

    # The same message delivered again (a retrying server) is stored once.
    smtp_send(local, "ada.lovelace@corp.example", reply_to.upper(), message.as_bytes())
    time.sleep(0.3)
    assert len(wait_inbound(local, accepted["contact_id"])) == 1
    # The other address did not become a contact of its own.
    found = local.call("GET", "/v1/contacts?email=ada.lovelace@corp.example")
    assert found.status == 200 and found.body["data"] == [], found.body


def test_html_only_reply_is_read_as_text(local: LocalGateway, smtp: SmtpSimulator) -> None:
    sent = email_to(local, smtp)
    reply_to = sent["email"]["headers"]["Reply-To"]
    message = EmailMessage()
    message["From"] = CUSTOMER
    message["To"] = reply_to
    message["Subject"] = "Re: Order 42"
    message.set_content(
        "<div>Thank you!</div><div class='gmail_quote'><div>On Mon, 3 Nov 2025, Gateway wrote:</div>"
        "<blockquote>Your order 42 has shipped.</blockquote></div>",
        subtype="html",
    )  # no Message-ID: the gateway uses a hash of the bytes
    smtp_send(local, CUSTOMER, reply_to, message.as_bytes())
    entry = wait_inbound(local, sent["accepted"]["contact_id"])[0]
    assert (entry["text"], entry["in_reply_to"]) == ("Thank you!", sent["accepted"]["id"])


def test_broken_or_forged_mail_is_refused_and_nothing_is_stored(
    local: LocalGateway, smtp: SmtpSimulator
) -> None:
    sent = email_to(local, smtp)
    contact_id = sent["accepted"]["contact_id"]
    reply_to = sent["email"]["headers"]["Reply-To"]
    token = reply_to.partition("+")[2].partition("@")[0]
    message_part, _, mac = token.partition(".")
    forged = [
        f"reply+{message_part}.{'a' * len(mac)}@{DOMAIN}",  # wrong MAC
        f"reply+msg_00000000000000000000000000.{mac}@{DOMAIN}",  # MAC of another message
        f"reply+{token}@elsewhere.test",  # right token, wrong domain
        f"support@{DOMAIN}",  # not a reply address
    ]
    for address in forged:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp_send(local, CUSTOMER, address, reply(address, CUSTOMER, "hello").as_bytes())
        assert refused.value.recipients[address][0] == 550

    no_text = EmailMessage()
    no_text["From"] = CUSTOMER
    no_text["To"] = reply_to
    no_text["Message-ID"] = make_msgid()
    no_text.set_content(b"\x89PNG\r\n", maintype="image", subtype="png")
    no_from = reply(reply_to, CUSTOMER, "who am I?")
    del no_from["From"]
    broken_multipart = (
        f"From: {CUSTOMER}\r\nTo: {reply_to}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b1"\r\n\r\nno boundary ever starts\r\n'
    ).encode()
    bad_charset = (
        f"From: {CUSTOMER}\r\nTo: {reply_to}\r\n"
        "Content-Type: text/plain; charset=no-such-charset\r\n\r\nhi\r\n"
    ).encode()
    for raw in (
        b"\x00\xff\xfe this is not an email at all\r\n",
        broken_multipart,
        bad_charset,
        no_text.as_bytes(),
        no_from.as_bytes(),
    ):
        with pytest.raises(smtplib.SMTPDataError) as refused_data:
            smtp_send(local, CUSTOMER, reply_to, raw)
        assert 500 <= refused_data.value.smtp_code < 600, refused_data.value

    huge = reply(reply_to, CUSTOMER, "x" * (10 * 1024 * 1024 + 1)).as_bytes()
    with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as too_big:
        smtp_send(local, CUSTOMER, reply_to, huge)  # smtplib honours the SIZE the listener announces
    assert too_big.value.smtp_code == 552, too_big.value

    # Bounces and auto-responders (null return path) and delivery reports are accepted but not stored.
    smtp_send(local, "", reply_to, reply(reply_to, "MAILER-DAEMON@corp.example", "Undeliverable").as_bytes())
    report = EmailMessage()
    report["From"] = "postmaster@corp.example"
    report["To"] = reply_to
    report.set_content("Your message was read.")
    report.add_attachment("Final-Recipient: rfc822;ada@example.test\n", subtype="plain")
    report_type = 'multipart/report; report-type=disposition-notification; boundary="r"'
    report.replace_header("Content-Type", report_type)
    report.set_boundary("r")
    smtp_send(local, "postmaster@corp.example", reply_to, report.as_bytes())

    assert [e["direction"] for e in timeline(local, contact_id)] == ["outbound"]
    found = local.call("GET", f"/v1/contacts?email={CUSTOMER}")
    assert [c["id"] for c in found.body["data"]] == [contact_id]


def post_form(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    return _open(request)


def get_page(url: str) -> tuple[int, str]:
    return _open(urllib.request.Request(url))


def _open(request: urllib.request.Request) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_one_click_unsubscribe_opts_the_contact_out_of_email(
    local: LocalGateway, smtp: SmtpSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = (*smtp_simulator.RECORDED_HEADERS, "List-Unsubscribe", "List-Unsubscribe-Post")
    monkeypatch.setattr(smtp_simulator, "RECORDED_HEADERS", recorded)
    sent = email_to(local, smtp, category="marketing")
    contact_id = sent["accepted"]["contact_id"]
    headers = sent["email"]["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(rf"<({re.escape(local.url)}/unsubscribe/[a-z0-9_.-]+)>", headers["List-Unsubscribe"])
    assert match, headers
    url = match.group(1)
    assert headers["Reply-To"].endswith("@" + DOMAIN)

    # The link shows a confirmation page and changes nothing (mail scanners follow links).
    status, page = get_page(url)
    assert status == 200 and 'method="post"' in page and "List-Unsubscribe" in page
    channels = local.call("GET", f"/v1/contacts/{contact_id}/channels").body["data"]
    assert [c["opted_out"] for c in channels if c["channel"] == "email"] == [False]

    for bad in (url[:-1] + ("a" if url[-1] != "a" else "b"), local.url + "/unsubscribe/nonsense"):
        assert get_page(bad)[0] == 404
        assert post_form(bad, b"List-Unsubscribe=One-Click")[0] == 404
    assert post_form(url, b"something=else")[0] == 400

    status, page = post_form(url, b"List-Unsubscribe=One-Click")  # what mailbox providers send
    assert status == 200, page
    channels = local.call("GET", f"/v1/contacts/{contact_id}/channels").body["data"]
    email = next(c for c in channels if c["channel"] == "email")
    assert email["opted_out"] is True
    assert post_form(url, b"List-Unsubscribe=One-Click")[0] == 200  # again: still fine

    answer = send(
        local,
        {"to": {"email": CUSTOMER}, "content": {"text": "Big sale!"}, "category": "marketing"},
    )
    assert (answer["status"], answer["reason"]) == ("failed", "opted-out"), answer
    assert answer["contact_id"] == contact_id
    time.sleep(0.3)
    assert len(smtp.received_for(CUSTOMER)) == 1
