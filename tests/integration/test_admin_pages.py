"""The console's dashboard, message search and journey, and contact pages, in headless Chromium over a real
server whose SMS and email go to the Twilio and SMTP simulators."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from sqlmodel import select

from gateway import store
from gateway.local import LocalGateway
from gateway.models import Attempt
from gateway.services import stats
from gateway.simulators.twilio import TwilioSimulator, twilio_signature
from tests.conftest import ADMIN_PASSWORD, screenshot, sign_in, status_is, wait_for

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
FELL_BACK_PHONE = "+14155521211"  # the Twilio simulator answers error 21211 (invalid number)
DELIVERED_PHONE = "+14155550100"


@dataclass
class Traffic:
    fell_back: str  # SMS failed with invalid_address, then email
    email_only: str
    delivered_sms: str
    sms_contact: str  # the contact of delivered_sms, who also wrote back


def _send(local: LocalGateway, body: dict[str, Any]) -> dict[str, Any]:
    answer = local.call("POST", "/v1/messages", body)
    assert answer.status == 202, answer.body
    return dict(answer.body)


def _inbound_sms(local: LocalGateway, twilio: TwilioSimulator, sender: str, text: str) -> None:
    form = {"MessageSid": "SMin0001", "From": sender, "To": "+14155550000", "Body": text, "NumMedia": "0"}
    signature = twilio_signature(twilio.auth_token, local.url + "/webhooks/twilio/inbound", form)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    answer = local.call(
        "POST", "/webhooks/twilio/inbound", key="", headers=headers, raw=urlencode(form).encode()
    )
    assert answer.status in (200, 204), answer.body


def send_traffic(local: LocalGateway, twilio: TwilioSimulator) -> Traffic:
    """Three messages: an SMS that falls back to email, an email, a delivered SMS that gets a reply."""
    fell_back = _send(
        local,
        {
            "to": {"phone": FELL_BACK_PHONE, "email": "ada@example.test", "name": "Ada"},
            "content": {"text": "Your order 42 has shipped", "subject": "Order 42"},
        },
    )
    email_only = _send(
        local, {"to": {"email": "bob@example.test"}, "content": {"text": "Hello Bob", "subject": "Hi"}}
    )
    delivered = _send(
        local,
        {
            "to": {"phone": DELIVERED_PHONE, "name": "Hana", "identities": {"telegram": "777000"}},
            "content": {"text": "Your code is 1234"},
            "category": "otp",
        },
    )
    message = wait_for(local, fell_back["id"], lambda m: m["status"] == "sent" and m["channel"] == "email")
    assert [a["channel"] for a in message["attempts"]] == ["sms", "email"]
    wait_for(local, email_only["id"], status_is("sent"))
    wait_for(local, delivered["id"], status_is("delivered"))
    _inbound_sms(local, twilio, DELIVERED_PHONE, "Thanks <b>a lot</b>!")
    return Traffic(fell_back["id"], email_only["id"], delivered["id"], delivered["contact_id"])


def console_errors(page: Any) -> list[str]:
    """Content-Security-Policy violations the page reports from now on (an inline style or script)."""
    errors: list[str] = []

    def seen(message: Any) -> None:
        if message.type == "error" and (
            "Content Security Policy" in message.text or "Refused" in message.text
        ):
            errors.append(message.text)

    page.on("console", seen)
    return errors


def _figure(page: Any, table: str, channel: str, figure: str) -> str:
    text: str = page.locator(f'#{table} tr[data-channel="{channel}"] [data-figure="{figure}"]').inner_text()
    return text.strip()


@sqlite_only
def test_message_search_and_the_journey_of_a_fallback(
    page: Any, gateway: LocalGateway, twilio: TwilioSimulator, admin_user: str
) -> None:
    traffic = send_traffic(gateway, twilio)
    errors = console_errors(page)
    sign_in(page, gateway)
    page.get_by_role("link", name="Messages", exact=True).click()
    page.wait_for_url(f"{gateway.url}/admin/messages")
    listed = page.locator("#message-list tbody tr")
    assert listed.count() == 3
    # Status and channel together: sent by email finds the fallback and the plain email, not the SMS.
    page.get_by_label("sent", exact=True).check()
    page.get_by_label("Channel").select_option("email")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r".*status=sent.*channel=email"))
    ids = {listed.nth(i).get_attribute("data-message") for i in range(listed.count())}
    assert ids == {traffic.fell_back, traffic.email_only}
    row = page.locator(f'tr[data-message="{traffic.fell_back}"]')
    assert "sms (invalid_address) → email" in row.inner_text()
    screenshot(page, "messages")
    page.get_by_label("sent", exact=True).uncheck()
    page.get_by_label("delivered", exact=True).check()
    page.get_by_label("Channel").select_option("sms")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r".*status=delivered.*channel=sms"))
    assert [listed.nth(i).get_attribute("data-message") for i in range(listed.count())] == [
        traffic.delivered_sms
    ]
    # A contact given by phone number filters too; an impossible one is explained, not a crash.
    page.goto(f"{gateway.url}/admin/messages?contact={FELL_BACK_PHONE.replace('+', '%2B')}")
    assert [listed.nth(i).get_attribute("data-message") for i in range(listed.count())] == [traffic.fell_back]
    later = (gateway.gw.clock() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    page.goto(f"{gateway.url}/admin/messages?since={later}")
    assert listed.count() == 0 and "No messages match" in page.locator("main").inner_text()
    page.goto(f"{gateway.url}/admin/messages?until={later}&status=delivered")
    assert listed.count() == 1
    page.goto(f"{gateway.url}/admin/messages?contact=12")
    assert "valid phone number" in page.locator("#contact-error").inner_text()

    page.goto(f"{gateway.url}/admin/messages")
    page.get_by_role("link", name=traffic.fell_back).click()
    page.wait_for_url(f"{gateway.url}/admin/messages/{traffic.fell_back}")
    assert page.locator("#message-status").inner_text() == "sent"
    steps = page.locator("ol.journey > li")
    kinds = [steps.nth(i).get_attribute("data-kind") for i in range(steps.count())]
    assert kinds == ["accepted", "attempt", "fallback", "attempt"]
    first, fallback, second = steps.nth(1), steps.nth(2), steps.nth(3)
    assert "Step 1: sms, try 1" in first.inner_text()
    assert first.locator('[data-field="error-kind"]').inner_text() == "invalid_address"
    assert first.locator('[data-field="error-code"]').inner_text() == "21211"
    assert "Fallback from sms to email" in fallback.inner_text()
    assert "invalid_address (code 21211)" in fallback.inner_text()
    assert "Step 2: email, try 1" in second.inner_text()
    assert "ada@example.test" in second.inner_text()
    chart = page.locator("svg.chart")
    assert chart.get_attribute("role") == "img"
    assert chart.locator("title").first.text_content() == f"Timeline of message {traffic.fell_back}"
    assert chart.locator("rect.span").count() == 2
    assert chart.locator("rect.span.bad").count() == 1
    screenshot(page, "message-journey")
    assert errors == []


@sqlite_only
def test_contact_page_shows_identities_channel_states_and_timeline(
    page: Any, gateway: LocalGateway, twilio: TwilioSimulator, admin_user: str
) -> None:
    traffic = send_traffic(gateway, twilio)
    errors = console_errors(page)
    sign_in(page, gateway)
    page.get_by_role("link", name="Contacts", exact=True).click()
    page.wait_for_url(f"{gateway.url}/admin/contacts")
    assert page.locator("#contact-list tbody tr").count() == 3  # newest contacts without a search
    page.get_by_label("Find a contact").fill("telegram:777000")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r".*q=telegram"))
    rows = page.locator("#contact-list tbody tr")
    assert [rows.nth(i).get_attribute("data-contact") for i in range(rows.count())] == [traffic.sms_contact]
    page.get_by_role("link", name=traffic.sms_contact).click()
    page.wait_for_url(f"{gateway.url}/admin/contacts/{traffic.sms_contact}")
    assert page.get_by_role("heading", level=1).inner_text().startswith("Hana")
    assert "777000" in page.locator("#identity-list").inner_text()
    sms = page.locator('#channel-rows tr[data-channel="sms"]')
    assert DELIVERED_PHONE in sms.inner_text()
    assert sms.locator('[data-field="reachability"]').inner_text() == "reachable"
    assert sms.locator('[data-field="evidence"]').inner_text().startswith("inbound message")
    telegram = page.locator('#channel-rows tr[data-channel="telegram"]')
    assert telegram.locator('[data-field="reachability"]').inner_text() == "unknown"
    entries = page.locator("#contact-timeline > li")
    assert [entries.nth(i).get_attribute("data-direction") for i in range(entries.count())] == [
        "outbound",
        "inbound",
    ]
    assert "Your code is 1234" in entries.nth(0).inner_text()
    assert "Thanks <b>a lot</b>!" in entries.nth(1).inner_text()  # shown as text, not markup
    assert entries.nth(1).locator("b").count() == 0
    screenshot(page, "contact")
    # The contact whose SMS failed: unreachable on SMS, with the provider's answer as evidence.
    page.goto(f"{gateway.url}/admin/contacts?q={FELL_BACK_PHONE.replace('+', '%2B')}")
    page.locator("#contact-list a").first.click()
    sms = page.locator('#channel-rows tr[data-channel="sms"]')
    assert sms.locator('[data-field="reachability"]').inner_text() == "unreachable"
    assert sms.locator('[data-field="evidence"]').inner_text().startswith("invalid_address")
    page.locator("#contact-timeline a").first.click()
    page.wait_for_url(f"{gateway.url}/admin/messages/{traffic.fell_back}")
    assert errors == []


@sqlite_only
def test_dashboard_counts_what_was_sent(
    page: Any, gateway: LocalGateway, twilio: TwilioSimulator, admin_user: str
) -> None:
    send_traffic(gateway, twilio)
    errors = console_errors(page)
    sign_in(page, gateway)
    assert _figure(page, "figures", "email", "sent") == "2"
    assert _figure(page, "figures", "email", "failed") == "0"
    assert _figure(page, "figures", "email", "fallback-rate") == "0 %"
    assert _figure(page, "figures", "email", "median-delivery") == "—"  # email has no receipts
    assert _figure(page, "figures", "sms", "attempts") == "2"
    assert _figure(page, "figures", "sms", "sent") == "1"
    assert _figure(page, "figures", "sms", "delivered") == "1"
    assert _figure(page, "figures", "sms", "failed") == "1"
    assert _figure(page, "figures", "sms", "failed-by-kind") == "invalid_address: 1"
    assert _figure(page, "figures", "sms", "fallback-rate") == "50 %"
    assert _figure(page, "figures", "sms", "median-delivery") != "—"
    # Enabled channels with the reason, disabled ones with why, breakers known from this process's dispatcher.
    assert _figure(page, "channel-states", "sms", "reason") == "credentials set"
    assert _figure(page, "channel-states", "sms", "breaker") == "closed"
    whatsapp = page.locator('#channel-states tr[data-channel="whatsapp"]').inner_text()
    assert "disabled" in whatsapp and _figure(page, "channel-states", "whatsapp", "reason") != ""
    charts = page.locator("svg.chart")
    assert charts.count() == 2
    assert charts.nth(0).locator("title").first.text_content() == "Attempts per channel"
    assert charts.nth(0).locator("rect.bar.failed").count() == 2  # one failed bar per channel (0 for email)
    assert "email: sent 2, delivered 0, failed 0" in charts.nth(0).locator("desc").text_content()
    screenshot(page, "dashboard")
    page.get_by_role("link", name="Last day").click()
    page.wait_for_url(re.compile(r".*window=day"))
    assert _figure(page, "figures", "email", "sent") == "2"
    assert errors == []


@sqlite_only
def test_every_page_fits_a_360_px_screen_and_labels_every_input(
    chromium: Any, gateway: LocalGateway, twilio: TwilioSimulator, admin_user: str
) -> None:
    traffic = send_traffic(gateway, twilio)
    context = chromium.new_context(viewport={"width": 360, "height": 740})
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        sign_in(page, gateway)
        for path in (
            "/admin/",
            "/admin/?window=day",
            "/admin/messages",
            f"/admin/messages/{traffic.fell_back}",
            "/admin/contacts",
            f"/admin/contacts/{traffic.sms_contact}",
            "/admin/rules",
            "/admin/rules/new",
            "/admin/keys",
            "/admin/webhooks",
            "/admin/audit",
        ):
            page.goto(gateway.url + path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"{path} is {width} px wide"
            unlabelled = page.evaluate(UNLABELLED_CONTROLS)
            assert unlabelled == [], f"{path}: inputs without a label: {unlabelled}"
    finally:
        context.close()


# Every visible form control must have a <label>, aria-label or aria-labelledby.
UNLABELLED_CONTROLS = """
[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !e.getAttribute('aria-labelledby'))
  .map(e => e.outerHTML.slice(0, 120))
"""


@sqlite_only
def test_personal_data_is_escaped_and_pages_need_a_session(gateway: LocalGateway, admin_user: str) -> None:
    hostile = '<img src=x onerror="alert(1)">'
    sent = _send(
        gateway,
        {"to": {"email": "eve@example.test", "name": hostile}, "content": {"text": hostile, "subject": "x"}},
    )
    wait_for(gateway, sent["id"], status_is("sent"))
    for path in ("/admin/messages", f"/admin/contacts/{sent['contact_id']}"):
        assert "/admin/login" in requests.get(gateway.url + path, allow_redirects=False).headers["Location"]
    web = requests.Session()
    form = web.get(f"{gateway.url}/admin/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token
    web.post(
        f"{gateway.url}/admin/login",
        data={"name": admin_user, "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
    )
    for path in ("/admin/contacts", f"/admin/contacts/{sent['contact_id']}"):
        html = web.get(gateway.url + path).text
        assert "<img src=x" not in html and "&lt;img src=x onerror=" in html
    assert web.get(f"{gateway.url}/admin/messages/msg_nope").status_code == 404
    assert web.get(f"{gateway.url}/admin/contacts/ct_nope").status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_dashboard_figures_on_each_database(gateway: LocalGateway, twilio: TwilioSimulator) -> None:
    traffic = send_traffic(gateway, twilio)
    with store.transaction(gateway.gw.engine) as session:
        # The email-only message's attempt is moved to two hours ago: out of the hour, inside the day.
        old = session.exec(select(Attempt).where(Attempt.message_id == traffic.email_only)).one()
        old.created_at = gateway.gw.clock() - timedelta(hours=2)
    with store.transaction(gateway.gw.engine) as session:
        hour = {
            f.channel: stats.figures_out(f)
            for f in stats.dashboard(session, gateway.gw.clock(), "hour").channels
        }
        day = stats.dashboard(session, gateway.gw.clock(), "day")
    assert hour["email"]["sent"] == 1 and hour["email"]["fallback_rate"] == 0.0
    assert hour["sms"] | {"median_delivery": None} == {
        "channel": "sms",
        "attempts": 2,
        "sent": 1,
        "delivered": 1,
        "failed": {"invalid_address": 1},
        "failed_total": 1,
        "fallback_rate": 0.5,
        "median_delivery": None,
    }
    assert hour["sms"]["median_delivery"] is not None and 0 <= hour["sms"]["median_delivery"] < 15
    by_day = {f.channel: f for f in day.channels}
    assert by_day["email"].sent == 2
    assert sum(b.sent for b in day.buckets) == 3 and sum(b.failed for b in day.buckets) == 1
    assert len(day.buckets) == 24 and not day.truncated


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_message_search_filters_and_pages_on_each_database(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    traffic = send_traffic(gateway, twilio)
    everything = {traffic.fell_back, traffic.email_only, traffic.delivered_sms}
    now = gateway.gw.clock()
    with store.transaction(gateway.gw.engine) as session:
        first, cursor = stats.search_messages(session, stats.MessageQuery(), 2, None)
        rest, end = stats.search_messages(session, stats.MessageQuery(), 2, cursor)
        assert len(first) == 2 and cursor == first[-1].id and end is None
        assert {m.id for m in first + rest} == everything
        assert first[0].id > first[1].id > rest[0].id  # newest first

        def ids(**filters: Any) -> set[str]:
            found, _ = stats.search_messages(session, stats.MessageQuery(**filters), 50, None)
            return {m.id for m in found}

        assert ids(statuses=("sent",), channel="email") == {traffic.fell_back, traffic.email_only}
        assert ids(statuses=("sent", "delivered"), channel="sms") == {traffic.delivered_sms}
        assert ids(contact_id=traffic.sms_contact) == {traffic.delivered_sms}
        assert ids(since=now - timedelta(minutes=5), until=now + timedelta(seconds=1)) == everything
        assert (
            ids(since=now + timedelta(seconds=1)) == set() and ids(until=now - timedelta(minutes=5)) == set()
        )
