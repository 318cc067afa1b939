"""Email through an SMTP server (aiosmtplib), over a small pool of reused connections.

A 250 after DATA means the server accepted the message, not that it reached the inbox; bounces
arrive later by mail, so the channel reports `sent` and has no receipts. SMTP replies map onto
error kinds through `classify_smtp_error` (see PROVIDERS.md, "Email via SMTP").

Every `content.media` file is attached: fetched before the SMTP transaction, all at once, each within
GATEWAY_MEDIA_FETCH_TIMEOUT and GATEWAY_MEDIA_FETCH_MAX_BYTES. A file that cannot be fetched (an error
status, too large, too slow, unreachable) makes the attempt `rejected`, naming the file and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formatdate, make_msgid, parseaddr
from typing import ClassVar

import aiohttp
import aiosmtplib
from aiosmtplib import SMTPResponse, SMTPStatus

from gateway import media_fetch
from gateway.adapt import ANY_MEDIA, MediaItem, TextPolicy
from gateway.channels.base import AddressKind, Channel, OutgoingMessage, SendResult
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

SUBJECT_MAX = 78
_PLAIN_LINE = 78  # the email package folds or encodes longer lines: `_plain` leaves them to it
DEFAULT_SUBJECT = "Message"

# An RFC 3463 enhanced status at the start of the reply text, e.g. "5.1.1 <bob@x>: User unknown".
_ENHANCED_STATUS = re.compile(r"\s*(5\.\d{1,3}\.\d{1,3})\b")
# Enhanced codes say more than the basic code (a "550 5.7.1" is a policy refusal, not an unknown
# user), so they are consulted first: exact codes, then their "class.subject" prefix.
_BY_ENHANCED: dict[str, ErrorKind] = {
    "5.1.1": ErrorKind.UNREACHABLE,
    "5.1.10": ErrorKind.UNREACHABLE,
    "5.1.3": ErrorKind.INVALID_ADDRESS,
}
_BY_ENHANCED_SUBJECT: dict[str, ErrorKind] = {"5.7": ErrorKind.REJECTED}
# Basic 5xx codes with a specific meaning; every other 5xx is a permanent refusal.
_BY_CODE: dict[int, ErrorKind] = {
    550: ErrorKind.UNREACHABLE,
    551: ErrorKind.UNREACHABLE,
    553: ErrorKind.INVALID_ADDRESS,
    501: ErrorKind.INVALID_ADDRESS,
    554: ErrorKind.REJECTED,
}
SERVICE_UNAVAILABLE = 421
# What aiosmtplib refuses in a mailbox on a command line; an address without it (and ASCII) is sent as is.
_NOT_ON_A_COMMAND_LINE = re.compile(r'[\s<>"]')


def classify_smtp_error(code: int, message: str) -> ChannelError:
    """Map an SMTP reply refusing a recipient or the message onto a ChannelError."""
    if 500 <= code <= 599:
        kind = _BY_CODE.get(code, ErrorKind.REJECTED)
        match = _ENHANCED_STATUS.match(message)
        if match:
            status = match.group(1)
            subject = status.rpartition(".")[0]
            kind = _BY_ENHANCED.get(status) or _BY_ENHANCED_SUBJECT.get(subject) or kind
    else:
        # 4xx asks us to try again later; anything else (aiosmtplib's -1 = unparsable) is unknown.
        kind = ErrorKind.TRANSIENT
    return ChannelError(kind, f"{code} {message}".strip(), code=str(code))


def _classify_by_class(what: str, code: int, message: str) -> ChannelError:
    """Map a reply outside the recipient/message phase: 4xx is transient, the rest rejected."""
    kind = ErrorKind.TRANSIENT if 400 <= code <= 499 else ErrorKind.REJECTED
    return ChannelError(kind, f"{what}: {code} {message}".strip(), code=str(code))


def classify_exception(exc: BaseException, address: str) -> ChannelError:
    """Map an aiosmtplib (or socket) exception raised while sending to `address`."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = [r for r in exc.recipients if r.recipient == address] or exc.recipients
        if refused:
            return classify_smtp_error(refused[0].code, refused[0].message)
        return ChannelError(ErrorKind.TRANSIENT, "recipients refused without a reply")
    # Connection and timeout errors come before response errors: SMTPConnectResponseError is both.
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return ChannelError(ErrorKind.TRANSIENT, f"cannot connect to the SMTP server: {exc}")
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return ChannelError(ErrorKind.TRANSIENT, f"SMTP server timed out: {exc}")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return _classify_by_class(f"sender {exc.sender} refused", exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return _classify_by_class("SMTP authentication failed", exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        return _classify_by_class("EHLO refused", exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return classify_smtp_error(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return ChannelError(ErrorKind.REJECTED, f"SMTP server lacks a needed extension: {exc}")
    if isinstance(exc, OSError):  # includes SMTPServerDisconnected
        return ChannelError(ErrorKind.TRANSIENT, f"SMTP connection failed: {exc}")
    if isinstance(exc, UnicodeError):
        return ChannelError(ErrorKind.REJECTED, f"message cannot be encoded: {exc}")
    if isinstance(exc, ValueError):
        return ChannelError(ErrorKind.INVALID_ADDRESS, f"{address!r} cannot be sent to: {exc}")
    return ChannelError(ErrorKind.TRANSIENT, f"SMTP error: {exc}")


def _keeps_connection(exc: BaseException) -> bool:
    """Tell whether the connection is still in a known state after `exc` (aiosmtplib sent RSET)."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # After a 421 the server is closing the connection.
        return exc.code != SERVICE_UNAVAILABLE
    return isinstance(exc, aiosmtplib.SMTPRecipientsRefused | aiosmtplib.SMTPNotSupported | ValueError)


def _plain_mailbox(address: str) -> bool:
    """Whether an address goes on a MAIL or RCPT command line as it is: ASCII, nothing aiosmtplib refuses."""
    return address.isascii() and not _NOT_ON_A_COMMAND_LINE.search(address)


def _checked_address(address: str) -> str:
    """Return the bare addr-spec, or raise invalid_address before touching the network."""
    bare = address.strip()
    parsed = parseaddr(bare)[1]
    local, at, domain = parsed.rpartition("@")
    if parsed != bare or not (local and at and domain) or any(c.isspace() for c in bare):
        raise ChannelError(ErrorKind.INVALID_ADDRESS, f"{address!r} is not an email address")
    return bare


def _default_subject(text: str | None) -> str:
    """Derive a subject from the first non-empty line of the text, cut to one header line."""
    first = next((line for line in (text or "").splitlines() if line.strip()), "")
    subject = " ".join(first.split()) or DEFAULT_SUBJECT
    return subject if len(subject) <= SUBJECT_MAX else subject[: SUBJECT_MAX - 1] + "…"


def _plain_header(name: str, value: str) -> str:
    """One header as the email package writes it; a Message-ID too long for its line goes on the next one,
    and one too long for any line stays on the first (it has nowhere to fold)."""
    line = f"{name}: {value}"
    if name == "Message-ID" and len(line) > _PLAIN_LINE and len(value) < _PLAIN_LINE:
        return f"{name}:\r\n {value}"
    return line


class EmailChannel(Channel):
    """Email over SMTP; at most `smtp_pool_size` connections, opened lazily and reused."""

    name: ClassVar[str] = "email"
    address_kind: ClassVar[AddressKind] = "email"
    delivery_receipts: ClassVar[bool] = False
    read_receipts: ClassVar[bool] = False
    max_text_length: ClassVar[int] = 1_000_000
    text_policy: ClassVar[TextPolicy] = "truncate"
    media_types: ClassVar[frozenset[str]] = frozenset({ANY_MEDIA})  # every file is attached
    default_rate: ClassVar[float] = 0.0
    status_webhook: ClassVar[str | None] = None

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        sender = settings.smtp_from or ""
        self._sender = parseaddr(sender)[1] or sender
        self._domain = self._sender.rpartition("@")[2] or "localhost"
        self._plain_sender = _plain_mailbox(self._sender)  # `_mail_transaction` can put it on MAIL as it is
        # The semaphore caps live connections: only a slot holder that finds no idle one connects.
        self._slots = asyncio.Semaphore(settings.smtp_pool_size)
        self._idle: list[aiosmtplib.SMTP] = []
        self._closed = False
        self._http: aiohttp.ClientSession | None = None  # fetches attachments

    @classmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        """Name the missing setting, or None when email can be sent."""
        for setting in ("smtp_host", "smtp_from"):
            if not getattr(settings, setting):
                return f"{Settings.env_name(setting)} is not set"
        return None

    async def open(self) -> None:
        """Accept sends again; connections are opened lazily by the first sends."""
        self._closed = False
        if self._http is None:
            self._http = media_fetch.client_session(
                self.settings.media_fetch_timeout, self.settings.media_fetch_private == "on"
            )

    async def close(self) -> None:
        """Say QUIT on every idle connection; busy ones are closed when their send ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(client) for client in idle))
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Hand the message to the SMTP server for exactly one recipient."""
        address = _checked_address(message.address)
        files = await asyncio.gather(*(self._fetch(media) for media in message.media))
        plain = None if message.media else self._plain(message, address)
        content: EmailMessage | bytes
        if plain is not None:
            content, message_id = plain
        else:
            try:
                email_message = self._build(message, address)
                for media, data in zip(message.media, files, strict=True):
                    maintype, _, subtype = media.type.partition("/")
                    email_message.add_attachment(
                        data, maintype=maintype, subtype=subtype or "octet-stream", filename=media.filename
                    )
            except ValueError as exc:  # e.g. lone surrogates in the text
                raise ChannelError(ErrorKind.REJECTED, f"message cannot be rendered: {exc}") from exc
            content, message_id = email_message, str(email_message["Message-ID"]).strip("<>")
        try:
            async with self._slots:
                refused = await self._transmit(content, address)
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            raise classify_exception(exc, address) from exc
        # aiosmtplib raises when its only recipient is refused; a refusal in the dict is one too.
        response = refused.get(address) or next(iter(refused.values()), None)
        if response is not None:
            raise classify_smtp_error(response.code, response.message)
        return SendResult(provider_message_id=message_id, status="sent")

    def _plain(self, message: OutgoingMessage, address: str) -> tuple[bytes, str] | None:
        """The common case without the `email` package, which costs about 1 ms a message: the bytes
        `_build` makes (7bit text/plain) when everything is ASCII and no line needs folding, and the
        Message-ID; None for anything else (HTML, non-ASCII, long lines), which `_build` renders."""
        if message.html:
            return None
        subject = " ".join((message.subject or "").split()) or _default_subject(message.text)
        message_id = make_msgid(idstring=message.attempt_id, domain=self._domain)
        headers = {
            "From": self.settings.smtp_from or self._sender,
            "To": address,
            "Subject": subject,
            "Date": format_datetime(datetime.now(UTC)),  # as the header registry renders formatdate's
            "Message-ID": message_id,
            "X-Gateway-Attempt": message.attempt_id,
        }
        if message.reply_to:
            headers["Reply-To"] = message.reply_to
        for name, value in message.headers.items():  # replaces a header of the same name, as in _build
            headers = {k: v for k, v in headers.items() if k.lower() != name.lower()} | {name: value}
        if any("\r" in text or "\n" in text for header in headers.items() for text in header):
            return None
        lines = [_plain_header(name, value) for name, value in headers.items()]
        lines += [
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: 7bit",
            "MIME-Version: 1.0",
        ]
        try:
            head = "\r\n".join(lines).encode("ascii")
            body = (message.text or "").encode("ascii").splitlines()
        except UnicodeEncodeError:
            return None
        if any(len(line) > _PLAIN_LINE and not line.startswith("Message-ID:") for line in lines):
            return None
        if any(len(line) > _PLAIN_LINE for line in body):
            return None
        return head + b"\r\n\r\n" + b"".join(line + b"\r\n" for line in body or [b""]), message_id.strip("<>")

    def _build(self, message: OutgoingMessage, address: str) -> EmailMessage:
        """Render the attempt as a text/plain message with an optional HTML alternative."""
        email_message = EmailMessage()
        email_message["From"] = self.settings.smtp_from or self._sender
        email_message["To"] = address
        subject = " ".join((message.subject or "").split()) or _default_subject(message.text)
        email_message["Subject"] = subject
        email_message["Date"] = formatdate(usegmt=True)
        email_message["Message-ID"] = make_msgid(idstring=message.attempt_id, domain=self._domain)
        email_message["X-Gateway-Attempt"] = message.attempt_id
        if message.reply_to:
            email_message["Reply-To"] = message.reply_to  # reply+<token>@<inbound domain>
        for name, value in message.headers.items():  # e.g. List-Unsubscribe (RFC 8058)
            del email_message[name]
            email_message[name] = value
        email_message.set_content(message.text or "")
        if message.html:
            email_message.add_alternative(message.html, subtype="html")
        return email_message

    async def _fetch(self, media: MediaItem) -> bytes:
        """The bytes of one attachment; a `rejected` ChannelError naming the file when it cannot be had."""
        if self._http is None:
            raise RuntimeError("EmailChannel.send called before open()")
        limit, timeout = self.settings.media_fetch_max_bytes, self.settings.media_fetch_timeout
        what = f"attachment {media.filename!r} ({media.url})"
        try:
            return await media_fetch.fetch(
                self._http, media.url, limit, self.settings.media_fetch_private == "on"
            )
        except media_fetch.FetchError as exc:
            raise ChannelError(ErrorKind.REJECTED, f"{what}: {exc}") from exc
        except TimeoutError as exc:
            detail = f"{what} was not fetched within {timeout:g}s (GATEWAY_MEDIA_FETCH_TIMEOUT)"
            raise ChannelError(ErrorKind.REJECTED, detail) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ChannelError(ErrorKind.REJECTED, f"{what} cannot be fetched: {exc}") from exc

    async def _transmit(self, email_message: EmailMessage | bytes, address: str) -> dict[str, SMTPResponse]:
        """Send on a pooled connection, replacing it once if the server dropped it while idle."""
        client, reused = await self._checkout()
        try:
            try:
                refused = await self._send_on(client, email_message, address)
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                client.close()
                client = await self._connect()
                refused = await self._send_on(client, email_message, address)
        except BaseException as exc:
            self._checkin(client, reusable=_keeps_connection(exc))
            raise
        self._checkin(client, reusable=True)
        return refused

    async def _send_on(
        self, client: aiosmtplib.SMTP, email_message: EmailMessage | bytes, address: str
    ) -> dict[str, SMTPResponse]:
        """Run one mail transaction for exactly `address` (bytes: a message `_plain` rendered)."""
        if not isinstance(email_message, bytes):
            refused, _ = await client.send_message(email_message, sender=self._sender, recipients=[address])
            return refused
        if client.is_ehlo_or_helo_needed or not (self._plain_sender and _plain_mailbox(address)):
            refused, _ = await client.sendmail(self._sender, [address], email_message)
            return refused
        await self._mail_transaction(client, email_message, address)
        return {}

    async def _mail_transaction(self, client: aiosmtplib.SMTP, content: bytes, address: str) -> None:
        """MAIL, RCPT and DATA as `SMTP.sendmail` sends them for one recipient on a greeted connection,
        RSET after a refusal included, without parsing the two addresses again four times (each parse
        about 20 µs; checked once already: `_checked_address`, `_plain_mailbox`)."""
        size = [b"SIZE=%d" % len(content)] if client.supports_extension("size") else []  # lines end in CRLF
        try:
            # One deadline for the transaction: aiosmtplib's own, a command at a time, cost a timer each
            # (a tenth of the dispatcher loop's time). A late answer leaves the connection closed.
            async with asyncio.timeout(self.settings.provider_timeout):
                sender = b"FROM:<%s>" % self._sender.encode()
                answer = await client.execute_command(b"MAIL", sender, *size, timeout=None)
                if answer.code != SMTPStatus.completed:
                    raise aiosmtplib.SMTPSenderRefused(answer.code, answer.message, self._sender)
                answer = await client.execute_command(b"RCPT", b"TO:<%s>" % address.encode(), timeout=None)
                if answer.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
                    refusal = aiosmtplib.SMTPRecipientRefused(answer.code, answer.message, address)
                    raise aiosmtplib.SMTPRecipientsRefused([refusal])
                await client.data(content, timeout=None)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
                await client.rset()  # the envelope is reset, so the connection can be reused
            raise

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        """Take an idle live connection (reused=True) or open one; call while holding a slot."""
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client, True
            client.close()
        return await self._connect(), False

    def _checkin(self, client: aiosmtplib.SMTP, reusable: bool) -> None:
        """Return a connection to the idle list, or close it when its state is unknown."""
        if reusable and client.is_connected and not self._closed:
            self._idle.append(client)
        else:
            client.close()

    async def _connect(self) -> aiosmtplib.SMTP:
        """Open, greet, upgrade to TLS and log in per the settings."""
        tls = self.settings.smtp_tls
        client = aiosmtplib.SMTP(
            hostname=self.settings.smtp_host,
            port=self.settings.smtp_port,
            username=self.settings.smtp_username,
            password=self.settings.smtp_password,
            timeout=self.settings.provider_timeout,
            use_tls=tls == "tls",
            start_tls=tls == "starttls",
        )
        try:
            await client.connect()
        except BaseException:
            client.close()
            raise
        return client

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        """Say QUIT politely and close the socket."""
        # A server that already hung up needs no QUIT; the socket is closed either way.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()
        client.close()
