"""A local stand-in for Meta's Graph API: the WhatsApp Cloud API and the Messenger/Instagram Send API.

`POST /v21.0/{id}/messages` with a Bearer token, where the id is the WhatsApp phone number id, the
Facebook Page id or the Instagram account id. Statuses and customers' messages reach the gateway as
webhooks signed with the app secret. The recipient picks the outcome (see docs/simulators-meta.md): a
WhatsApp number ending in an error code (+14155131026 → 131026), a PSID ending in a subcode or code
(…1545041 → 551/1545041, …0000613 → 613); …99999 is accepted but silent, …99998 slow, …88888 also read.
Run it alone with `python -m gateway.simulators.meta --port 8802`.
"""

from __future__ import annotations

import argparse
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from gateway.simulators import meta_webhooks as hooks
from gateway.simulators.meta_http import (
    WHATSAPP_ERRORS,
    Behaviour,
    default_behaviour,
    serve,
)

PRODUCTS = ("whatsapp", "messenger", "instagram")
DEFAULT_IDS = {"whatsapp": "100000000000001", "messenger": "200000000000001", "instagram": "300000000000001"}
DEFAULT_TOKENS = {
    "whatsapp": "sim-whatsapp-token",
    "messenger": "sim-page-token",
    "instagram": "sim-ig-token",
}
DEFAULT_APP_SECRET = "sim-app-secret"
DISPLAY_NUMBER = "15550001234"
GRAPH_VERSION = "v21.0"


class MetaSimulator:
    """The Graph API's send endpoints on a local port, with per-recipient behaviours and signed webhooks."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        app_secret: str = DEFAULT_APP_SECRET,
        webhook_delay: float = 0.05,
        slow_latency: float = 2.0,
    ) -> None:
        self.host, self.port, self.app_secret = host, port, app_secret
        self.webhook_delay, self.slow_latency = webhook_delay, slow_latency
        self.ids, self.tokens = dict(DEFAULT_IDS), dict(DEFAULT_TOKENS)
        self.webhook_urls: dict[str, str] = {}
        self.messages: list[dict[str, Any]] = []
        self._behaviours: dict[str, Behaviour] = {}
        self._attempts: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop: Any = None
        self._poster: hooks.WebhookPoster | None = None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    @property
    def graph_url(self) -> str:
        """What GATEWAY_META_GRAPH_URL should be."""
        return f"{self.base_url}/{GRAPH_VERSION}"

    def settings(self) -> dict[str, str]:
        """Gateway setting overrides that send WhatsApp (Cloud API), Messenger and Instagram here."""
        return {
            "whatsapp_token": self.tokens["whatsapp"],
            "whatsapp_phone_number_id": self.ids["whatsapp"],
            "messenger_page_token": self.tokens["messenger"],
            "messenger_page_id": self.ids["messenger"],
            "instagram_token": self.tokens["instagram"],
            "instagram_account_id": self.ids["instagram"],
            "meta_app_secret": self.app_secret,
            "meta_graph_url": self.graph_url,
        }

    def start(self) -> MetaSimulator:
        """Listen and serve from a daemon thread; port 0 picks a free port."""
        self._poster = hooks.WebhookPoster(self.app_secret)
        self._poster.start()
        self.port, self._stop = serve(self, self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving and drop webhooks not yet posted."""
        if self._stop is not None:
            self._stop()
            self._stop = None
        if self._poster is not None:
            self._poster.stop()
            self._poster = None

    def __enter__(self) -> MetaSimulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what tests and the demo drive ------------------------------------------------------------

    def point_at(self, gateway_url: str) -> None:
        """Post every product's webhooks to the gateway's /webhooks/<product>."""
        for product in PRODUCTS:
            self.webhook_urls[product] = f"{gateway_url}/webhooks/{product}"

    def subscribe(self, product: str, url: str, verify_token: str) -> bool:
        """Meta's subscription check: GET the URL with hub.* and keep it when the challenge comes back."""
        challenge = str(secrets.randbelow(10**9))
        query = urlencode(
            {"hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": challenge}
        )
        try:
            with urllib.request.urlopen(f"{url}?{query}", timeout=10) as response:
                ok = bool(response.status == 200 and response.read().decode() == challenge)
        except (urllib.error.URLError, OSError):
            ok = False
        if ok:
            self.webhook_urls[product] = url
        return ok

    def set_behaviour(self, recipient: str, behaviour: Behaviour) -> None:
        """Override what happens to sends to `recipient` (WhatsApp: the number, with or without +)."""
        with self._lock:
            self._behaviours[re.sub(r"^\+", "", recipient)] = behaviour
            self._failures[re.sub(r"^\+", "", recipient)] = 0

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self._behaviours.clear()
            self._attempts.clear()
            self._failures.clear()

    def sends_to(self, recipient: str) -> int:
        """Authenticated send requests to `recipient`, errors included."""
        with self._lock:
            return self._attempts[recipient.lstrip("+")]

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(message) for message in self.messages]

    def inbound(
        self, product: str, sender: str, text: str, signature: str | None = None, at: float | None = None
    ) -> tuple[int, str]:
        """A customer writes (at Unix time `at`, default now): post the signed webhook now.

        Returns the gateway's HTTP status and the message id; `signature` replaces the real one."""
        if product == "whatsapp":
            wamid = "wamid." + secrets.token_hex(12)
            message = hooks.whatsapp_message(sender.lstrip("+"), "Sim Customer", wamid, text, at)
            payload = hooks.whatsapp_change(self.ids["whatsapp"], DISPLAY_NUMBER, **message)
            return self._post_now(product, payload, signature), wamid
        mid = "m_" + secrets.token_hex(12)
        event: dict[str, Any] = {"message": {"mid": mid, "text": text}}
        if at is not None:
            event["timestamp"] = int(at * 1000)
        return self._post_now(product, self._page(product, sender, event), signature), mid

    def tap_button(self, product: str, sender: str, button_id: str, title: str) -> tuple[int, str]:
        """A customer taps a reply button: WhatsApp's interactive `button_reply` (with the context of the
        last message sent to them), a Messenger or Instagram quick reply (its payload is the id)."""
        recipient = sender.lstrip("+")
        if product == "whatsapp":
            wamid = "wamid." + secrets.token_hex(12)
            sent = [m for m in self.snapshot() if m["product"] == product and m["to"] == recipient]
            message: dict[str, Any] = {
                "from": recipient,
                "id": wamid,
                "timestamp": str(int(time.time())),
                "type": "interactive",
                "interactive": {"type": "button_reply", "button_reply": {"id": button_id, "title": title}},
            }
            if sent:
                message["context"] = {"from": DISPLAY_NUMBER, "id": sent[-1]["id"]}
            contacts = [{"profile": {"name": "Sim Customer"}, "wa_id": recipient}]
            payload = hooks.whatsapp_change(
                self.ids[product], DISPLAY_NUMBER, contacts=contacts, messages=[message]
            )
            return self._post_now(product, payload, None), wamid
        mid = "m_" + secrets.token_hex(12)
        event = {"message": {"mid": mid, "text": title, "quick_reply": {"payload": button_id}}}
        return self._post_now(product, self._page(product, sender, event), None), mid

    def mark_read(self, product: str, recipient: str) -> int:
        """The person reads what was sent to them (Messenger: a read watermark, no message id)."""
        last = [m for m in self.snapshot() if m["product"] == product and m["to"] == recipient.lstrip("+")]
        if product == "messenger":
            payload = self._page(product, recipient, {"read": {"watermark": hooks.now_ms()}})
        elif not last:
            raise ValueError(f"nothing was sent to {recipient} on {product}")
        elif product == "whatsapp":
            status = hooks.whatsapp_status(last[-1]["id"], "read", last[-1]["to"])
            payload = hooks.whatsapp_change(self.ids["whatsapp"], DISPLAY_NUMBER, statuses=[status])
        else:
            payload = self._page(product, recipient, {"read": {"mid": last[-1]["id"]}})
        return self._post_now(product, payload, None)

    # -- the API --------------------------------------------------------------------------------

    def product_of(self, account_id: str) -> str | None:
        return next((p for p, i in self.ids.items() if i == account_id), None)

    def plan(self, product: str, recipient: str) -> Behaviour:
        """Count a send to `recipient` and decide what happens to it."""
        with self._lock:
            self._attempts[recipient] += 1
            behaviour = self._behaviours.get(recipient) or default_behaviour(
                product, recipient, self.slow_latency
            )
            if behaviour.fail_times is None or behaviour.kind != "error":
                return behaviour
            if self._failures[recipient] >= behaviour.fail_times:
                return Behaviour("deliver", latency=behaviour.latency)
            self._failures[recipient] += 1
            return behaviour

    def accept(
        self, product: str, recipient: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Record an accepted send; the record and the answer Meta gives for it."""
        message_id = ("wamid." if product == "whatsapp" else "m_") + secrets.token_hex(16)
        kind = body.get("type") or "text"
        page_message = body.get("message") or {}
        interactive = body.get("interactive") or {}
        record = {
            "id": message_id,
            "product": product,
            "to": recipient,
            "type": kind
            if product == "whatsapp"
            else ("attachment" if "attachment" in page_message else "text"),
            "text": (body.get("text") or {}).get("body")
            or page_message.get("text")
            or (interactive.get("body") or {}).get("text"),
            # WhatsApp media ({"link", "filename"?}) and reply buttons; Messenger attachments, quick replies.
            "media": body.get(kind) if kind in ("image", "video", "audio", "document", "sticker") else None,
            "buttons": [b["reply"] for b in (interactive.get("action") or {}).get("buttons") or []],
            "attachment": page_message.get("attachment"),
            "quick_replies": page_message.get("quick_replies"),
            "template": body.get("template"),
            "messaging_type": body.get("messaging_type"),
            "tag": body.get("tag"),
            "received_at": datetime.now(UTC).isoformat(),
        }
        with self._lock:
            self.messages.append(record)
        if product == "whatsapp":
            contacts = [{"input": body["to"], "wa_id": recipient}]
            return record, {
                "messaging_product": "whatsapp",
                "contacts": contacts,
                "messages": [{"id": message_id}],
            }
        return record, {"recipient_id": recipient, "message_id": message_id}

    def report(self, product: str, message: dict[str, Any], behaviour: Behaviour) -> None:
        """Queue the webhooks an accepted message gets."""
        url = self.webhook_urls.get(product)
        if url is None or self._poster is None or behaviour.kind == "silence":
            return
        to, mid = message["to"], message["id"]
        payloads: list[dict[str, Any]] = []
        if product == "whatsapp":
            if behaviour.kind == "error":
                title = WHATSAPP_ERRORS.get(behaviour.code or 0, (400, "Simulated error"))[1]
                events = [hooks.whatsapp_status(mid, "failed", to, (behaviour.code or 0, title))]
            else:
                wanted = ["sent", "delivered"] + (["read"] if behaviour.kind == "read" else [])
                events = [hooks.whatsapp_status(mid, status, to) for status in wanted]
            payloads = [
                hooks.whatsapp_change(self.ids[product], DISPLAY_NUMBER, statuses=[e]) for e in events
            ]
        elif product == "messenger":
            payloads = [self._page(product, to, {"delivery": {"mids": [mid], "watermark": hooks.now_ms()}})]
            if behaviour.kind == "read":
                payloads.append(self._page(product, to, {"read": {"watermark": hooks.now_ms() + 1}}))
        elif behaviour.kind == "read":  # Instagram reports reads (messaging_seen), not deliveries
            payloads = [self._page(product, to, {"read": {"mid": mid}})]
        self._poster.schedule(self.webhook_delay, url, payloads, self.webhook_delay)

    def _page(self, product: str, psid: str, event: dict[str, Any]) -> dict[str, Any]:
        obj = "page" if product == "messenger" else "instagram"
        return hooks.page_webhook(obj, self.ids[product], psid, **event)

    def _post_now(self, product: str, payload: dict[str, Any], signature: str | None) -> int:
        url = self.webhook_urls.get(product)
        if url is None or self._poster is None:
            raise RuntimeError(f"no webhook URL for {product}: call point_at() or subscribe() first")
        return self._poster.post(url, payload, signature)


def main(argv: list[str] | None = None) -> None:
    """Run the simulator in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        description="Local Meta Graph API (WhatsApp, Messenger, Instagram) simulator"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8802)
    parser.add_argument("--app-secret", default=DEFAULT_APP_SECRET)
    parser.add_argument("--gateway", help="gateway base URL to post webhooks to, e.g. http://127.0.0.1:8000")
    parser.add_argument("--webhook-delay", type=float, default=0.05)
    args = parser.parse_args(argv)
    with MetaSimulator(args.host, args.port, args.app_secret, args.webhook_delay) as simulator:
        if args.gateway:
            simulator.point_at(args.gateway.rstrip("/"))
        print(simulator.graph_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopped", flush=True)


if __name__ == "__main__":
    main()
