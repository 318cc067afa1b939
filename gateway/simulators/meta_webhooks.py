"""The Meta simulator's webhooks: payloads as Meta sends them, signed with the app secret, posted in order.

`WebhookPoster` posts JSON with `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>` from
worker threads; the events of one message (sent, then delivered, then read) never overtake each other.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

from gateway.simulators.poster import OrderedPoster

WABA_ID = "400000000000001"  # the WhatsApp Business Account the simulated number belongs to


def now_ms() -> int:
    return int(time.time() * 1000)


def hub_signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def whatsapp_change(phone_number_id: str, display_number: str, **value: Any) -> dict[str, Any]:
    """A Cloud API webhook carrying one `messages` change (statuses, or contacts and messages)."""
    metadata = {"display_phone_number": display_number, "phone_number_id": phone_number_id}
    change = {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}
    return {"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": [change]}]}


def whatsapp_status(
    wamid: str, status: str, recipient: str, error: tuple[int, str] | None = None
) -> dict[str, Any]:
    """One entry of `value.statuses`."""
    found: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient,
    }
    if error is not None:
        code, message = error
        details = {"details": message}
        found["errors"] = [{"code": code, "title": message, "message": message, "error_data": details}]
    return found


def whatsapp_message(
    sender: str, name: str, wamid: str, text: str, at: float | None = None
) -> dict[str, Any]:
    """`contacts` and `messages` of a customer's text message, written at `at` (Unix time; default now)."""
    return {
        "contacts": [{"profile": {"name": name}, "wa_id": sender}],
        "messages": [
            {
                "from": sender,
                "id": wamid,
                "timestamp": str(int(time.time() if at is None else at)),
                "type": "text",
                "text": {"body": text},
            }
        ],
    }


def page_webhook(obj: str, account_id: str, psid: str, **event: Any) -> dict[str, Any]:
    """A Messenger (`page`) or Instagram (`instagram`) webhook with one messaging event from `psid`."""
    messaging = {"sender": {"id": psid}, "recipient": {"id": account_id}, "timestamp": now_ms(), **event}
    return {"object": obj, "entry": [{"id": account_id, "time": now_ms(), "messaging": [messaging]}]}


class WebhookPoster(OrderedPoster):
    """Posts signed webhooks from worker threads, one message's events strictly in order."""

    def __init__(self, app_secret: str, workers: int = 3, retries: int = 2) -> None:
        self.app_secret = app_secret
        super().__init__(lambda url, payload: 200 <= self.post(url, payload) < 300, workers, retries)

    def post(self, url: str, payload: dict[str, Any], signature: str | None = None) -> int:
        """Post one webhook now; the HTTP status (0 when the gateway could not be reached)."""
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature
            if signature is not None
            else hub_signature(self.app_secret, body),
        }
        request = urllib.request.Request(url, body, headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except (OSError, ValueError, http.client.HTTPException):
            return 0
