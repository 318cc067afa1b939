"""Media, buttons and text limits per channel, over real sockets: an invoice PDF as a WhatsApp document,
a Telegram document, an email attachment the gateway fetched, and a link in an SMS; native buttons and
their taps; numbered replies on SMS; SMS segments on the attempt; fetch failures; validation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest

from gateway.local import LocalGateway
from gateway.simulators.line import LineSimulator
from gateway.simulators.meta import MetaSimulator
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.telegram import TelegramSimulator
from gateway.simulators.twilio import TwilioSimulator, twilio_signature
from gateway.simulators.viber import ViberSimulator
from tests.conftest import eventually

# A real (minimal, one blank page) PDF document.
PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\n"
    b"xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n0000000052 00000 n \n0000000101 00000 n \n"
    b"trailer<</Size 4/Root 1 0 R>>\nstartxref\n170\n%%EOF\n"
)
FETCH_LIMIT = 4096
FETCH_TIMEOUT = 0.5
BUTTONS = [
    {"id": "track", "title": "Track parcel"},
    {"id": "agent", "title": "Talk to a person"},
    {"id": "cancel", "title": "Cancel my order please"},  # 22 characters: cut to 20 where buttons are
]
WA_SENDER = "+14155238886"


class FileServer:
    """The business's file server: a real PDF, a 404, a file over the limit, and one that is too slow."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/invoice-42.pdf":
                    self._send(200, PDF_BYTES)
                elif self.path == "/huge.pdf":
                    self._send(200, b"%PDF-1.4\n" + b"0" * (FETCH_LIMIT * 4))
                elif self.path in ("/moved.pdf", "/loop.pdf"):
                    self.send_response(302)
                    self.send_header(
                        "Location", "/invoice-42.pdf" if self.path == "/moved.pdf" else "/loop.pdf"
                    )
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/slow.pdf":
                    time.sleep(FETCH_TIMEOUT * 4)
                    self._send(200, PDF_BYTES)
                else:
                    self._send(404, b"not found")

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/pdf" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the gateway gave up (too slow, too large)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def media(self, name: str) -> dict[str, str]:
        return {"url": f"{self.url}/{name}", "type": "application/pdf", "filename": name}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.stop()


@pytest.fixture
def local(
    make_gateway: Callable[..., LocalGateway],
    meta: MetaSimulator,
    telegram: TelegramSimulator,
    line: LineSimulator,
    viber: ViberSimulator,
) -> LocalGateway:
    """SMS and email, WhatsApp (Cloud API), Messenger, Instagram, Telegram, LINE and Viber, on simulators."""
    gateway = make_gateway(
        **meta.settings(),
        **telegram.gateway_settings(),
        **line.gateway_settings(),
        **viber.gateway_settings(),
        media_fetch_max_bytes=FETCH_LIMIT,
        media_fetch_timeout=f"{FETCH_TIMEOUT}s",
        media_fetch_private="on",  # the file server is on loopback
        event_backoff="0.2s",
        channel_rates="sms=0,email=0,whatsapp=0,messenger=0,telegram=0,line=0,viber=0",
    )
    meta.point_at(gateway.url)
    for sim in (telegram, line, viber):
        sim.connect(gateway.url)
    return gateway


def send(local: LocalGateway, body: dict[str, Any]) -> dict[str, Any]:
    answer = local.call("POST", "/v1/messages", body)
    assert answer.status == 202, answer.body
    return answer.body


def settle(local: LocalGateway, message_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        message = local.call("GET", f"/v1/messages/{message_id}").body
        if message["status"] in statuses:
            return message
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def twilio_inbound(local: LocalGateway, twilio: TwilioSimulator, sender: str, text: str, sid: str) -> int:
    """A signed Twilio inbound webhook (`whatsapp:+…` senders are WhatsApp through Twilio)."""
    form = {"MessageSid": sid, "From": sender, "To": "+14155550000", "Body": text, "NumMedia": "0"}
    url = local.url + "/webhooks/twilio/inbound"
    headers = {
        "X-Twilio-Signature": twilio_signature(twilio.auth_token, url, form),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return local.call(
        "POST", "/webhooks/twilio/inbound", key="", headers=headers, raw=urlencode(form).encode()
    ).status


def test_an_invoice_pdf_goes_as_a_document_an_attachment_and_a_link(
    local: LocalGateway,
    files: FileServer,
    meta: MetaSimulator,
    telegram: TelegramSimulator,
    twilio: TwilioSimulator,
    smtp: SmtpSimulator,
) -> None:
    invoice = files.media("invoice-42.pdf")
    content = {"text": "Your invoice for order 42", "subject": "Invoice 42", "media": [invoice]}
    assert meta.inbound("whatsapp", "+14155550301", "Send me the invoice")[0] == 200  # opens the window
    sent = {
        "whatsapp": send(
            local, {"to": {"phone": "+14155550301"}, "content": content, "channels": ["whatsapp"]}
        ),
        "telegram": send(
            local,
            {"to": {"identities": {"telegram": "5550301"}}, "content": content, "channels": ["telegram"]},
        ),
        "email": send(
            local, {"to": {"email": "ada@example.test"}, "content": content, "channels": ["email"]}
        ),
        "sms": send(local, {"to": {"phone": "+14155550302"}, "content": content, "channels": ["sms"]}),
    }
    for name, answer in sent.items():
        message = settle(local, answer["id"], "sent", "delivered")
        assert [a["channel"] for a in message["attempts"]] == [name], message

    # WhatsApp Cloud API: a document message by link, then the text.
    records = [m for m in meta.snapshot() if m["to"] == "14155550301"]
    assert [(m["type"], m["text"]) for m in records] == [
        ("document", None),
        ("text", "Your invoice for order 42"),
    ]
    assert records[0]["media"] == {"link": invoice["url"], "filename": "invoice-42.pdf"}

    # Telegram: sendDocument with the URL (the Bot API fetches it), then sendMessage.
    calls = [(m["method"], m["file"], m["text"]) for m in telegram.snapshot()]
    assert calls == [
        ("sendDocument", invoice["url"], None),
        ("sendMessage", None, "Your invoice for order 42"),
    ]

    # Email: the gateway fetched the file and attached the very bytes.
    [mail] = smtp.received_for("ada@example.test")
    assert mail["text"].strip() == "Your invoice for order 42"
    assert mail["attachments"] == [
        {"filename": "invoice-42.pdf", "type": "application/pdf", "data": PDF_BYTES}
    ]

    # SMS: a link in the body, no MediaUrl (MMS is off by default).
    [sms] = [m for m in twilio.snapshot() if m["to"] == "+14155550302"]
    assert sms["body"] == f"Your invoice for order 42\n\ninvoice-42.pdf: {invoice['url']}"
    assert sms["media_urls"] == []


def test_whatsapp_through_twilio_sends_the_pdf_as_media_url(
    make_gateway: Callable[..., LocalGateway], files: FileServer, twilio: TwilioSimulator
) -> None:
    local = make_gateway(twilio_whatsapp_from=WA_SENDER)
    assert twilio_inbound(local, twilio, "whatsapp:+14155550303", "hi", "SMwa-rich-1") == 200
    invoice = files.media("invoice-42.pdf")
    body = {"text": "Your invoice", "media": [invoice], "buttons": BUTTONS[:2]}
    sent = send(local, {"to": {"phone": "+14155550303"}, "content": body, "channels": ["whatsapp"]})
    settle(local, sent["id"], "delivered")
    [record] = [m for m in twilio.snapshot() if m["to"] == "whatsapp:+14155550303"]
    assert record["media_urls"] == [invoice["url"]]
    # Twilio sends free-form buttons only as Content templates: a numbered list instead.
    assert record["body"] == "Your invoice\n\n1. Track parcel\n2. Talk to a person\nReply with a number."


def test_with_mms_on_images_go_as_media_url_and_other_files_as_links(
    make_gateway: Callable[..., LocalGateway], files: FileServer, twilio: TwilioSimulator
) -> None:
    local = make_gateway(twilio_mms="on")
    photo = {"url": "https://biz.example/parcel.jpg"}
    invoice = files.media("invoice-42.pdf")
    content = {"text": "Delivered", "media": [photo, invoice]}
    sent = send(local, {"to": {"phone": "+14155550305"}, "content": content, "channels": ["sms"]})
    settle(local, sent["id"], "delivered")
    [record] = [m for m in twilio.snapshot() if m["to"] == "+14155550305"]
    assert record["media_urls"] == [photo["url"]]
    assert record["body"] == f"Delivered\n\ninvoice-42.pdf: {invoice['url']}"


def test_buttons_are_native_on_whatsapp_telegram_and_messenger_and_taps_come_back_as_button_ids(
    local: LocalGateway, meta: MetaSimulator, telegram: TelegramSimulator, receiver: Any
) -> None:
    assert (
        local.call("POST", "/v1/webhooks", {"url": receiver.url, "events": ["message.inbound"]}).status == 201
    )
    content = {"text": "Your parcel is out for delivery", "buttons": BUTTONS}
    assert meta.inbound("whatsapp", "+14155550311", "hi")[0] == 200
    assert meta.inbound("messenger", "PSID-311", "hi")[0] == 200
    assert telegram.user_message(5550311, "hi") == 200
    targets = {"whatsapp": {"phone": "+14155550311"}, "messenger": {"identities": {"messenger": "PSID-311"}}}
    targets["telegram"] = {"identities": {"telegram": "5550311"}}
    for name, to in targets.items():
        answer = send(local, {"to": to, "content": content, "channels": [name]})
        settle(local, answer["id"], "sent", "delivered")

    [wa] = [m for m in meta.snapshot() if m["product"] == "whatsapp"]
    assert (wa["type"], wa["text"]) == ("interactive", "Your parcel is out for delivery")
    assert wa["buttons"] == [
        {"id": "track", "title": "Track parcel"},
        {"id": "agent", "title": "Talk to a person"},
        {"id": "cancel", "title": "Cancel my order ple…"},
    ]
    [fb] = [m for m in meta.snapshot() if m["product"] == "messenger"]
    assert fb["text"] == "Your parcel is out for delivery"
    assert [(q["content_type"], q["payload"], q["title"]) for q in fb["quick_replies"]] == [
        ("text", "track", "Track parcel"),
        ("text", "agent", "Talk to a person"),
        ("text", "cancel", "Cancel my order ple…"),
    ]
    [tg] = telegram.snapshot()
    assert tg["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "Track parcel", "callback_data": "track"}],
            [{"text": "Talk to a person", "callback_data": "agent"}],
            [{"text": "Cancel my order please", "callback_data": "cancel"}],
        ]
    }

    assert meta.tap_button("whatsapp", "+14155550311", "agent", "Talk to a person")[0] == 200
    assert meta.tap_button("messenger", "PSID-311", "track", "Track parcel")[0] == 200
    assert telegram.tap_button(5550311, tg, "cancel") == 200
    # The tap is acknowledged in the webhook's answer (answerCallbackQuery), a plain message is not.
    [acknowledged] = telegram.answered_callbacks
    assert acknowledged.isdigit()
    assert telegram.user_message(5550311, "thanks") == 200
    assert telegram.answered_callbacks == [acknowledged]

    def buttons() -> dict[str, tuple[str | None, str | None]]:
        found = {}
        for event in receiver.events("message.inbound"):
            data = event["data"]
            if "button" in data:
                found[data["channel"]] = (data["button"]["id"], data["text"])
        return found if len(found) == 3 else {}

    assert eventually(buttons) == {
        "whatsapp": ("agent", "Talk to a person"),
        "messenger": ("track", "Track parcel"),
        "telegram": ("cancel", "Cancel my order please"),
    }


def test_line_and_viber_show_images_and_buttons_natively_and_report_taps(
    local: LocalGateway, files: FileServer, line: LineSimulator, viber: ViberSimulator, receiver: Any
) -> None:
    assert (
        local.call("POST", "/v1/webhooks", {"url": receiver.url, "events": ["message.inbound"]}).status == 201
    )
    photo = {"url": "https://biz.example/parcel.png", "filename": "parcel.png"}
    invoice = files.media("invoice-42.pdf")  # neither shows PDFs: a link
    content = {"text": "Your parcel", "media": [photo, invoice], "buttons": BUTTONS}
    for name, user in (("line", "U-rich-1"), ("viber", "vb-rich-1")):
        answer = send(local, {"to": {"identities": {name: user}}, "content": content, "channels": [name]})
        settle(local, answer["id"], "sent", "delivered")
    text = f"Your parcel\n\ninvoice-42.pdf: {invoice['url']}"

    [image, last] = line.snapshot()  # one push: the image, then the text with the quick replies
    assert (image["type"], image["image"], image["quick_reply"]) == ("image", photo["url"], [])
    assert (last["type"], last["text"]) == ("text", text)
    assert [(a["type"], a["data"], a["label"]) for a in last["quick_reply"]] == [
        ("postback", "track", "Track parcel"),
        ("postback", "agent", "Talk to a person"),
        ("postback", "cancel", "Cancel my order ple…"),
    ]
    [picture, message] = viber.snapshot()
    assert (picture["type"], picture["media"]) == ("picture", photo["url"])
    assert (message["type"], message["text"]) == ("text", text)
    assert [b["ActionBody"] for b in message["keyboard"]["Buttons"]] == [
        "Track parcel",
        "Talk to a person",
        "Cancel my order please",
    ]

    assert line.postback("U-rich-1", "cancel") == 200
    assert viber.tap_button("vb-rich-1", message, "Talk to a person") == 200
    assert viber.user_message("vb-rich-1", "Talk to a person") == 200  # typed, not tapped: no button

    def taps() -> list[tuple[str, str | None]]:
        found = [(e["data"]["channel"], (e["data"].get("button") or {}).get("id")) for e in receiver.events()]
        return found if len(found) == 3 else []

    assert sorted(eventually(taps), key=str) == sorted(
        [("line", "cancel"), ("viber", "agent"), ("viber", None)], key=str
    )


def test_on_sms_buttons_are_a_numbered_list_and_a_reply_of_2_is_the_second_button(
    local: LocalGateway, twilio: TwilioSimulator, receiver: Any
) -> None:
    assert (
        local.call("POST", "/v1/webhooks", {"url": receiver.url, "events": ["message.inbound"]}).status == 201
    )
    content = {"text": "Your parcel is out for delivery", "buttons": BUTTONS}
    sent = send(local, {"to": {"phone": "+14155550321"}, "content": content, "channels": ["sms"]})
    settle(local, sent["id"], "delivered")
    [sms] = [m for m in twilio.snapshot() if m["to"] == "+14155550321"]
    assert sms["body"] == (
        "Your parcel is out for delivery\n\n"
        "1. Track parcel\n2. Talk to a person\n3. Cancel my order please\nReply with a number."
    )
    assert twilio_inbound(local, twilio, "+14155550321", " 2 ", "SMrich-2") == 200
    [event] = eventually(lambda: receiver.events("message.inbound"))
    assert event["data"]["button"] == {"id": "agent"}
    assert event["data"]["in_reply_to"] == sent["id"]


def test_sms_segments_are_counted_for_gsm7_and_ucs2_and_shown_on_the_attempt(
    local: LocalGateway, twilio: TwilioSimulator
) -> None:
    texts = {
        "+14155550331": ("a" * 160, 1),  # GSM-7, exactly one SMS
        "+14155550332": ("a" * 161, 2),  # GSM-7, 153 + 8
        # 155 characters but 165 septets: `€` and `{` are escape pairs in GSM-7.
        "+14155550333": ("€" * 5 + "{" * 5 + "a" * 145, 2),
        "+14155550334": ("Your parcel 📦 is on its way", 1),  # UCS-2, 28 code units
        "+14155550335": ("📦 " + "x" * 68, 2),  # UCS-2: 71 code units (the emoji takes two)
        "+14155550336": ("ç" * 135, 3),  # UCS-2: 67 + 67 + 1
    }
    sent = {
        number: send(local, {"to": {"phone": number}, "content": {"text": text}, "channels": ["sms"]})
        for number, (text, _) in texts.items()
    }
    for number, (_, segments) in texts.items():
        message = settle(local, sent[number]["id"], "delivered")
        assert [a["segments"] for a in message["attempts"]] == [segments], (number, message)

    # Email has no segments.
    mail = send(
        local, {"to": {"email": "seg@example.test"}, "content": {"text": "hi"}, "channels": ["email"]}
    )
    assert [a["segments"] for a in settle(local, mail["id"], "sent")["attempts"]] == [None]


def test_email_attachments_that_cannot_be_fetched_reject_the_attempt_and_the_dispatcher_goes_on(
    local: LocalGateway, files: FileServer, smtp: SmtpSimulator
) -> None:
    cases = {
        "missing.pdf": "the server answered HTTP 404",
        "huge.pdf": f"it is larger than {FETCH_LIMIT} bytes",
        "slow.pdf": f"was not fetched within {FETCH_TIMEOUT:g}s",
        "loop.pdf": "more than 5 redirects",
    }
    failed = {
        name: send(
            local,
            {
                "to": {"email": f"{name.removesuffix('.pdf')}@example.test"},
                "content": {"text": "Your invoice", "media": [files.media(name)]},
                "channels": ["email"],
            },
        )
        for name in cases
    }
    for name, detail in cases.items():
        message = settle(local, failed[name]["id"], "failed")
        [attempt] = message["attempts"]
        assert attempt["error"]["kind"] == "rejected", attempt
        assert name in attempt["error"]["detail"] and detail in attempt["error"]["detail"], attempt
    assert smtp.messages == []

    # The dispatcher is still sending: the next message with a good file (behind a redirect) goes out.
    good = send(
        local,
        {
            "to": {"email": "ok@example.test"},
            "content": {"text": "Your invoice", "media": [files.media("moved.pdf")]},
            "channels": ["email"],
        },
    )
    settle(local, good["id"], "sent")
    [mail] = smtp.received_for("ok@example.test")
    assert [a["data"] for a in mail["attachments"]] == [PDF_BYTES]


def test_too_many_buttons_and_bad_media_are_422_naming_the_field_and_store_nothing(
    local: LocalGateway,
) -> None:
    cases = [
        ({"text": "x", "buttons": [*BUTTONS, {"id": "more", "title": "More"}]}, "content.buttons"),
        ({"text": "x", "buttons": [BUTTONS[0], {"id": "track", "title": "Again"}]}, "content.buttons"),
        ({"text": "x", "buttons": [{"id": "é" * 33, "title": "Too long an id"}]}, "content.buttons.0.id"),
        ({"text": "x", "media": [{"url": "ftp://biz.example/invoice.pdf"}]}, "content.media.0.url"),
        ({"text": "x", "media": [{"url": "https://"}]}, "content.media.0.url"),
        (
            {"text": "x", "media": [{"url": "https://biz.example/a.pdf", "type": "pdf"}]},
            "content.media.0.type",
        ),
    ]
    for content, field in cases:
        answer = local.call("POST", "/v1/messages", {"to": {"phone": "+14155550341"}, "content": content})
        assert answer.status == 422, answer.body
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        assert [e["field"] for e in answer.body["errors"]] == [field], answer.body
    assert local.call("GET", "/v1/messages").body["data"] == []
    assert local.call("GET", "/v1/contacts?phone=%2B14155550341").body["data"] == []


def test_by_default_email_does_not_fetch_attachments_from_private_addresses(
    make_gateway: Callable[..., LocalGateway], files: FileServer, smtp: SmtpSimulator
) -> None:
    local = make_gateway(channel_rates="email=0")  # GATEWAY_MEDIA_FETCH_PRIVATE left off
    port = files.url.rsplit(":", 1)[1]
    cases = {
        f"http://127.0.0.1:{port}/invoice-42.pdf": "127.0.0.1 is not a public address",
        f"http://localhost:{port}/invoice-42.pdf": "localhost resolves only to non-public addresses",
        f"http://[::ffff:127.0.0.1]:{port}/invoice-42.pdf": "is not a public address",
    }
    sent = {
        url: send(
            local,
            {
                "to": {"email": "guarded@example.test"},
                "content": {"text": "Invoice", "media": [{"url": url, "type": "application/pdf"}]},
                "channels": ["email"],
            },
        )
        for url in cases
    }
    for url, detail in cases.items():
        [attempt] = settle(local, sent[url]["id"], "failed")["attempts"]
        assert attempt["error"]["kind"] == "rejected" and detail in attempt["error"]["detail"], attempt
    assert smtp.messages == []
