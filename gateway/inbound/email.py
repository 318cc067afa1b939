"""Inbound email: an SMTP listener (aiosmtpd) that turns replies to gateway emails into inbound messages.

Outgoing email carries `Reply-To: reply+<token>@<GATEWAY_INBOUND_EMAIL_DOMAIN>`, the token naming the
message it belongs to (gateway.inbound.reply_token). This listener, on GATEWAY_INBOUND_SMTP_HOST and
GATEWAY_INBOUND_SMTP_PORT, is where the MX of that domain delivers (or a relay forwards) such replies.

- RCPT accepts only `reply+<token>@<domain>` with a token this gateway signed (domain and token are
  compared case-insensitively); every other recipient is refused with 550, so the listener is not an open
  inbox and spam to guessed addresses never reaches the timeline.
- DATA parses the message (email.parser, policy.default). A message that is not valid MIME (no header
  block, broken multipart structure, undecodable text), has no From address or no text part is refused
  with 554 / 550, so the sending server bounces it. Messages larger than 10 MiB are refused by aiosmtpd
  (552).
- The text is the text/plain body (else the HTML body as text, blockquotes left out) with quoted history
  removed by `strip_quoted`. The sender is the From address; the provider message id is the Message-ID
  (a SHA-256 of the raw bytes when there is none); `in_reply_to` is the message the first recipient's
  token names. The inbound pipeline stores it once, on that message's contact, even when the reply comes
  from another address.
- Delivery and read reports (multipart/report) and mail with a null return path (`MAIL FROM:<>`: bounces and
  auto-responders, RFC 3834) are accepted and dropped: they are not the person's words.
- A failure while storing answers 451 so the sending server tries again later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from email import errors as email_errors
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.channels.base import Inbound
from gateway.core import Gateway
from gateway.inbound.pipeline import receive_inbound
from gateway.inbound.reply_token import read_token, reply_key, token_of_address

log = logging.getLogger("gateway.inbound.email")

DATA_SIZE_LIMIT = 10 * 1024 * 1024
MAX_MESSAGE_ID = 255

# Each rule matches a line, or a line and the next one, that starts the quoted history: that line and
# everything after it are dropped. Lines starting with ">" are dropped wherever they are.
HISTORY_STARTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # Gmail, Apple Mail, Thunderbird; Gmail wraps a long one over two lines.
    ("On … wrote:", re.compile(r"On\s.+\swrote:", re.S)),
    ("Le … a écrit :", re.compile(r"Le\s.+\sa\s+écrit\s*:", re.S)),
    ("Am … schrieb …:", re.compile(r"Am\s.+\sschrieb\b.*:", re.S)),
    ("El … escribió:", re.compile(r"El\s.+\sescribió\s*:", re.S)),
    (
        "-----Original Message-----",
        re.compile(
            r"-{2,}\s*(Original Message|Message d'origine|Ursprüngliche Nachricht|Mensaje original)\s*-{2,}",
            re.I,
        ),
    ),
    # Outlook's header block: "From: …" then "Sent: …" (or "De : …" / "Envoyé : …", "Von: …" / "Gesendet: …").
    ("From: … Sent: …", re.compile(r"(From|De|Von)\s*:.*\n\s*(Sent|Envoyé|Gesendet)\s*:.*", re.I)),
    # Outlook on the web: a rule of underscores above that header block.
    ("____ From:", re.compile(r"_{10,}\s*\n\s*(From|De|Von)\s*:.*", re.I)),
)


MAX_HISTORY_LINE = 400  # longer lines are text, never an attribution (and keep the rules linear in time)


def _scoped(rule: re.Pattern[str]) -> str:
    flags = ("i" if rule.flags & re.I else "") + ("s" if rule.flags & re.S else "")
    return f"(?{flags}:{rule.pattern})" if flags else f"(?:{rule.pattern})"


_ANY_HISTORY_START = re.compile("|".join(_scoped(rule) for _, rule in HISTORY_STARTS))


def _starts_history(line: str, following: str | None) -> bool:
    if len(line) > MAX_HISTORY_LINE or line.lstrip().startswith(">"):
        return False
    if _ANY_HISTORY_START.fullmatch(line.strip()):
        return True
    if following is None or len(following) > MAX_HISTORY_LINE or _starts_history(following, None):
        return False  # the next line starts it on its own: cut there, not here
    return _ANY_HISTORY_START.fullmatch(line.strip() + "\n" + following.strip()) is not None


def strip_quoted(text: str) -> str:
    """The reply without the history it quotes: drop `>` lines and everything from the first line that
    starts a quoted message (`HISTORY_STARTS`), then trim blank lines and surrounding whitespace."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else None
        if _starts_history(line, following):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


class _HtmlText(HTMLParser):
    """HTML as plain text: block elements end lines; scripts, styles and blockquotes are left out."""

    SKIP = frozenset({"script", "style", "head", "title", "blockquote"})
    BLOCKS = frozenset(
        {"p", "div", "br", "li", "tr", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "pre"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class Refused(Exception):
    """The message is refused with this SMTP reply."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


# Defects that mean the bytes are not a MIME message (as opposed to small sloppiness mail clients commit).
_BROKEN = (
    email_errors.MissingHeaderBodySeparatorDefect,
    email_errors.NoBoundaryInMultipartDefect,
    email_errors.StartBoundaryNotFoundDefect,
    email_errors.MultipartInvariantViolationDefect,
)
NOT_MIME = "554 5.6.0 Message is not a valid MIME message"
NO_TEXT = "554 5.6.0 Message has no text part"
NO_FROM = "550 5.1.7 Message has no valid From address"


@dataclass(frozen=True)
class Parsed:
    sender: str
    text: str
    message_id: str
    subject: str | None
    report: bool = False  # a delivery or read report (multipart/report), not something a person wrote


def parse_reply(raw: bytes) -> Parsed:
    """Read an inbound email; raise Refused when it cannot be taken."""
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception:  # the parser is lenient; anything it still raises means broken input
        raise Refused(NOT_MIME) from None
    assert isinstance(message, EmailMessage)
    if not message.keys() or any(isinstance(d, _BROKEN) for part in message.walk() for d in part.defects):
        raise Refused(NOT_MIME)
    try:
        addresses = message["From"].addresses if message["From"] is not None else ()
        sender = next((a.addr_spec for a in addresses if a.username and a.domain), None)
        subject = str(message["Subject"]) if message["Subject"] is not None else None
        message_id = str(message["Message-ID"] or "").strip().strip("<>").strip()
    except Exception:  # a header the policy cannot read
        raise Refused(NOT_MIME) from None
    if not message_id or len(message_id) > MAX_MESSAGE_ID or any(c.isspace() for c in message_id):
        message_id = "sha256:" + hashlib.sha256(message_id.encode() if message_id else raw).hexdigest()
    if message.get_content_type() == "multipart/report":
        return Parsed(sender or "", "", message_id, subject, report=True)
    if sender is None:
        raise Refused(NO_FROM)
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None or body.get_content_maintype() != "text":
        raise Refused(NO_TEXT)
    try:
        content = body.get_content()
    except (LookupError, UnicodeError, ValueError, KeyError):  # unknown charset, undecodable bytes
        raise Refused(NOT_MIME) from None
    if not isinstance(content, str):
        raise Refused(NO_TEXT)
    text = html_to_text(content) if body.get_content_subtype() == "html" else content
    return Parsed(sender, strip_quoted(text), message_id, subject)


class _Handler:
    """aiosmtpd hooks; they run in the listener's event loop, and the database work in a thread."""

    def __init__(self, gw: Gateway, key: str) -> None:
        self.gw = gw
        self.key = key

    def message_id_of(self, address: str) -> str | None:
        token = token_of_address(address, self.gw.settings.inbound_email_domain)
        return read_token(self.key, token) if token else None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.message_id_of(address) is None:
            return "550 5.1.1 No such reply address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            parsed = await asyncio.to_thread(parse_reply, raw)
        except Refused as refused:
            log.info("refused inbound email from %s: %s", envelope.mail_from, refused.reply)
            return refused.reply
        if parsed.report or envelope.mail_from in ("", "<>"):
            # Bounces, read receipts and auto-responders (null return path, RFC 3834) are not replies: taking
            # them as the person's words would mark the address reachable and could start auto-reply loops.
            log.info("dropped automatic inbound email %s from <%s>", parsed.message_id, envelope.mail_from)
            return "250 2.0.0 OK (automatic message, not stored)"
        in_reply_to = next((m for m in map(self.message_id_of, envelope.rcpt_tos) if m), None)
        item = Inbound(
            channel="email",
            sender=parsed.sender,
            text=parsed.text,
            provider_message_id=parsed.message_id,
            raw={
                "mail_from": envelope.mail_from,
                "rcpt_to": list(envelope.rcpt_tos),
                "from": parsed.sender,
                "subject": parsed.subject,
                "message_id": parsed.message_id,
                "size": len(raw),
            },
            in_reply_to=in_reply_to,
        )
        try:
            received = await asyncio.to_thread(receive_inbound, self.gw, item)
        except Exception:
            log.exception("could not store inbound email %s", parsed.message_id)
            return "451 4.3.0 Could not store the message, try again later"
        return f"250 2.0.0 OK {received.id}"


class InboundEmailServer:
    """The SMTP listener in its own thread; `start()` and `stop()` from any thread."""

    def __init__(self, gw: Gateway, host: str, port: int) -> None:
        self.gw = gw
        self.host = host
        self.port = port
        self._controller: Controller | None = None

    def start(self) -> InboundEmailServer:
        if self._controller is not None:
            return self
        if not self.gw.settings.inbound_email_domain:
            log.warning("GATEWAY_INBOUND_EMAIL_DOMAIN is not set: inbound email refuses every recipient")
        handler = _Handler(self.gw, reply_key(self.gw))
        kwargs: dict[str, Any] = {"data_size_limit": DATA_SIZE_LIMIT, "enable_SMTPUTF8": True}
        if self.gw.settings.inbound_email_domain:
            kwargs["server_hostname"] = self.gw.settings.inbound_email_domain
        controller = Controller(handler, hostname=self.host, port=self.port, **kwargs)
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
