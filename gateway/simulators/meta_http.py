"""The Meta simulator's HTTP side: Graph's `/{id}/messages` endpoint and the `/_sim/…` controls."""

from __future__ import annotations

import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from gateway.simulators.meta import MetaSimulator

SILENT_SUFFIX, SLOW_SUFFIX, READ_SUFFIX = "99999", "99998", "88888"

# WhatsApp error code -> (HTTP status, Meta's title); HTTP statuses vary on purpose: classify by code.
WHATSAPP_ERRORS: dict[int, tuple[int, str]] = {
    131026: (400, "Message undeliverable"),
    131047: (400, "Re-engagement message"),
    131051: (400, "Unsupported message type"),
    130429: (400, "Rate limit hit"),
    131056: (400, "(Business Account, Consumer Account) pair rate limit hit"),
    131048: (400, "Spam rate limit hit"),
    131049: (400, "This message was not delivered to maintain healthy ecosystem engagement."),
    131050: (400, "User has stopped marketing messages"),
    131030: (400, "Recipient phone number not in allowed list"),
    131000: (500, "Something went wrong"),
    131016: (503, "Service unavailable"),
    2: (503, "Service temporarily unavailable"),
}
# Codes Meta usually reports in a `failed` status webhook after accepting the send.
WHATSAPP_ASYNC = frozenset({131026, 131047, 131048, 131049, 131050})
# Last digits of a PSID -> (code, subcode, HTTP status, message).
PAGE_ERRORS: dict[int, tuple[int, int | None, int, str]] = {
    1545041: (551, 1545041, 400, "This person isn't available right now."),
    551: (551, None, 400, "This person isn't available right now."),
    2018278: (10, 2018278, 400, "This message is sent outside of allowed window."),
    2018001: (100, 2018001, 400, "No matching user found"),
    613: (613, None, 400, "Calls to this api have exceeded the rate limit."),
    4: (4, None, 400, "Application request limit reached"),
    1200: (1200, None, 500, "Temporary send message failure. Please try again later"),
    2: (2, None, 500, "An unexpected error has occurred. Please retry your request later."),
    190: (190, None, 401, "Invalid OAuth access token."),
    200: (200, None, 403, "Permissions error"),
    230: (230, None, 403, "Requires pages_messaging permission to manage the object"),
}


@dataclass(frozen=True)
class Behaviour:
    """What the simulator does with sends to one recipient."""

    kind: Literal["deliver", "read", "error", "silence"] = "deliver"
    code: int | None = None  # WhatsApp code, or Messenger/Instagram code or subcode (a PAGE_ERRORS key)
    latency: float = 0.0
    # WhatsApp only: report the error in a `failed` status webhook; None = as Meta usually does.
    asynchronous: bool | None = None
    # Fail with `code` only on the first N sends, then deliver; None fails every time.
    fail_times: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("deliver", "read", "error", "silence"):
            raise ValueError(f"unknown behaviour kind {self.kind!r}")
        if self.kind == "error" and self.code is None:
            raise ValueError("an error behaviour needs a code")


def default_behaviour(product: str, recipient: str, slow_latency: float) -> Behaviour:
    """Pick a behaviour from the recipient's last digits."""
    found = re.sub(r"\D", "", recipient)
    if found.endswith(SILENT_SUFFIX):
        return Behaviour("silence")
    if found.endswith(SLOW_SUFFIX):
        return Behaviour("deliver", latency=slow_latency)
    if found.endswith(READ_SUFFIX):
        return Behaviour("read")
    if product == "whatsapp" and found[-6:].isdigit() and int(found[-6:]) in WHATSAPP_ERRORS:
        return Behaviour("error", int(found[-6:]))
    if product != "whatsapp" and found[-7:].isdigit() and int(found[-7:]) in PAGE_ERRORS:
        return Behaviour("error", int(found[-7:]))
    return Behaviour("deliver")


def graph_error(
    code: int, message: str, subcode: int | None = None, whatsapp: bool = False
) -> dict[str, Any]:
    """Graph's error object."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    if whatsapp:
        error["error_data"] = {"messaging_product": "whatsapp", "details": message}
    error["fbtrace_id"] = "A" + secrets.token_hex(10)
    return {"error": error}


_MESSAGES_PATH = re.compile(r"^(?:/v\d+\.\d+)?/(?P<id>[^/?]+)/messages$")
WHATSAPP_MEDIA = ("image", "video", "audio", "document", "sticker")
PAGE_ATTACHMENTS = frozenset({"image", "video", "audio", "file"})
MESSAGING_TYPES = frozenset({"RESPONSE", "UPDATE", "MESSAGE_TAG"})
TAGS = frozenset({"HUMAN_AGENT", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # bursts of connections from the dispatcher


def serve(sim: MetaSimulator, host: str, port: int) -> tuple[int, Callable[[], None]]:
    """Serve `sim` from a daemon thread; the bound port and a function that stops serving."""

    class Handler(_Handler):
        simulator = sim

    server = _Server((host, port), Handler)
    # A short poll interval keeps stop() (and so test teardown) quick.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return int(server.server_address[1]), stop


def whatsapp_problem(body: dict[str, Any]) -> str | None:
    """Why a Cloud API send body is invalid, or None."""
    if body.get("messaging_product") != "whatsapp":
        return "messaging_product must be whatsapp"
    if not isinstance(body.get("to"), str) or not re.sub(r"\D", "", body["to"]):
        return "to is required"
    kind = body.get("type", "text")
    if kind == "text":
        text = body.get("text")
        return (
            None
            if isinstance(text, dict) and isinstance(text.get("body"), str) and text["body"]
            else "text.body"
        )
    if kind == "template":
        template = body.get("template")
        if not isinstance(template, dict) or not template.get("name"):
            return "template.name is required"
        language = template.get("language")
        return None if isinstance(language, dict) and language.get("code") else "template.language.code"
    if kind in WHATSAPP_MEDIA:
        media = body.get(kind)
        if not isinstance(media, dict) or not (media.get("link") or media.get("id")):
            return f"{kind}.link or {kind}.id is required"
        if media.get("link") and not re.match(r"https?://", str(media["link"])):
            return f"{kind}.link must be an http(s) URL"
        return None
    if kind == "interactive":
        return interactive_problem(body.get("interactive"))
    return f"unsupported type {kind!r}"


def interactive_problem(interactive: Any) -> str | None:
    """Why an interactive reply-button message is invalid (Cloud API limits), or None."""
    if not isinstance(interactive, dict) or interactive.get("type") != "button":
        return "interactive.type must be button"
    body = interactive.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
        return "interactive.body.text is required"
    if len(body["text"]) > 1024:
        return "interactive.body.text is longer than 1024 characters"
    buttons = (interactive.get("action") or {}).get("buttons")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        return "interactive.action.buttons needs 1 to 3 buttons"
    replies = [b.get("reply") if isinstance(b, dict) and b.get("type") == "reply" else None for b in buttons]
    for reply in replies:
        if not isinstance(reply, dict) or not reply.get("id") or not reply.get("title"):
            return "each button is {type: reply, reply: {id, title}}"
        if len(str(reply["title"])) > 20 or len(str(reply["id"])) > 256:
            return "a button title is at most 20 characters and its id at most 256"
    if len({str(r["id"]) for r in replies if r}) != len(replies):
        return "button ids must be unique"
    return None


def page_problem(body: dict[str, Any]) -> str | None:
    """Why a Send API body is invalid, or None."""
    if not isinstance(body.get("recipient"), dict) or not body["recipient"].get("id"):
        return "recipient.id is required"
    message = body.get("message")
    if not isinstance(message, dict):
        return "message is required"
    attachment = message.get("attachment")
    if attachment is not None:
        if "text" in message:
            return "message takes text or attachment, not both"
        if not isinstance(attachment, dict) or attachment.get("type") not in PAGE_ATTACHMENTS:
            return "message.attachment.type must be image, video, audio or file"
        url = (attachment.get("payload") or {}).get("url")
        if not isinstance(url, str) or not re.match(r"https?://", url):
            return "message.attachment.payload.url is required"
    elif not isinstance(message.get("text"), str) or not message["text"]:
        return "message.text is required"
    elif len(message["text"]) > 2000:
        return "message.text is longer than 2000 characters"
    quick = message.get("quick_replies")
    if quick is not None:
        if not isinstance(quick, list) or not 1 <= len(quick) <= 13:
            return "message.quick_replies takes 1 to 13 items"
        for item in quick:
            if not isinstance(item, dict) or item.get("content_type") != "text":
                return "a quick reply needs content_type text"
            if not item.get("title") or len(str(item["title"])) > 20 or not item.get("payload"):
                return "a text quick reply needs a title of at most 20 characters and a payload"
    if body.get("messaging_type") not in MESSAGING_TYPES:
        return "messaging_type must be RESPONSE, UPDATE or MESSAGE_TAG"
    if body["messaging_type"] == "MESSAGE_TAG" and body.get("tag") not in TAGS:
        return "a MESSAGE_TAG send needs a valid tag"
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    simulator: MetaSimulator

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def do_GET(self) -> None:
        if self.path == "/_sim/messages":
            self._json(200, self.simulator.snapshot())
        else:
            self._graph_error(404, 803, "Some of the aliases you requested do not exist")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _MESSAGES_PATH.match(self.path)
        try:
            if self.path.startswith("/_sim/"):
                self._control(self.path.removeprefix("/_sim/"), json.loads(raw or b"{}"))
            elif match is None:
                self._graph_error(400, 100, "Unknown path components")
            else:
                self._send(match["id"], raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self._json(400, {"error": f"bad request: {exc}"})

    def _control(self, action: str, body: dict[str, Any]) -> None:
        sim = self.simulator
        if action == "reset":
            sim.reset()
            self._json(200, {"ok": True})
        elif action == "behaviours":
            known = {f.name for f in fields(Behaviour)}
            wanted = {
                who: Behaviour(**{k: v for k, v in spec.items() if k in known}) for who, spec in body.items()
            }
            for recipient, behaviour in wanted.items():
                sim.set_behaviour(recipient, behaviour)
            self._json(200, {"ok": True, "recipients": sorted(wanted)})
        elif action == "inbound":
            status, message_id = sim.inbound(body["product"], body["from"], body["text"])
            self._json(200, {"gateway_status": status, "id": message_id})
        elif action == "read":
            self._json(200, {"gateway_status": sim.mark_read(body["product"], body["recipient"])})
        else:
            self._json(404, {"error": f"unknown control {action}"})

    def _send(self, account_id: str, raw: bytes) -> None:
        sim = self.simulator
        product = sim.product_of(account_id)
        if product is None:
            self._graph_error(400, 100, f"Object with ID '{account_id}' does not exist", 33)
            return
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(token.encode(), sim.tokens[product].encode()):
            self._graph_error(401, 190, "Invalid OAuth access token.")
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problem = "the body must be a JSON object" if not isinstance(body, dict) else None
        assert body is None or isinstance(body, dict)
        problem = problem or (whatsapp_problem if product == "whatsapp" else page_problem)(body or {})
        if problem is not None or body is None:
            self._graph_error(400, 100, f"(#100) Invalid parameter: {problem}")
            return
        recipient = re.sub(r"\D", "", body["to"]) if product == "whatsapp" else str(body["recipient"]["id"])
        behaviour = sim.plan(product, recipient)
        time.sleep(behaviour.latency)
        code = behaviour.code or 0
        if behaviour.kind == "error" and product != "whatsapp":
            found, subcode, status, text = PAGE_ERRORS.get(code, (code, None, 400, "Simulated error"))
            self._graph_error(status, found, text, subcode)
            return
        is_async = behaviour.asynchronous if behaviour.asynchronous is not None else code in WHATSAPP_ASYNC
        if behaviour.kind == "error" and not is_async:
            status, title = WHATSAPP_ERRORS.get(code, (400, "Simulated error"))
            self._graph_error(status, code, title, whatsapp=True)
            return
        record, answer = sim.accept(product, recipient, body)
        self._json(200, answer)
        sim.report(product, record, behaviour)

    def _graph_error(
        self, status: int, code: int, message: str, subcode: int | None = None, whatsapp: bool = False
    ) -> None:
        self._json(status, graph_error(code, message, subcode, whatsapp))

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (its timeout was shorter than the latency)
