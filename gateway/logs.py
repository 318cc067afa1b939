"""Structured logs: one line per event, text or JSON (`GATEWAY_LOG_FORMAT`), never a body or an address.

Every flow event is logged through `event()` with fields (`message_id`, `attempt_id`, `contact_id`,
`channel`, `provider_message_id`, `outcome`, `duration_ms`, ...). `configure()` puts one handler on the
root logger with two filters: `ContextFilter` adds the HTTP request id (`X-Request-Id`) to every record
made while a request is served, and `RedactionFilter` removes what must never be written:

- by field name: message content (`text`, `body`, `html`, `subject`, `content`), addresses (`to`, `from`,
  `address`, `phone`, `email`, `sender`, `recipient`) and credentials (any name with `token`, `secret`,
  `password`, `authorization`, `api_key`, `signature`);
- by pattern, in the message, in string fields and in tracebacks, as a safety net: phone numbers, email
  addresses, bearer/basic credentials, gateway API keys, passwords in URLs, and the configured secrets
  themselves (every setting named like a token, secret, password or key).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from flask import Flask, Response, g, request

from gateway.settings import Settings

REDACTED = "[redacted]"
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# LogRecord attributes (an event field of the same name is renamed), and what is not an event field.
_RESERVED = frozenset(
    set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
)
_STANDARD = _RESERVED | {"request_id", "event"}
_SENSITIVE_NAME = re.compile(
    r"(^|_)(text|body|html|subject|content|to|from|address|phone|email|sender|recipient|"
    r"password|passwd|authorization|cookie)($|_)|token|secret|api_?key|signature|credential",
    re.I,
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    (re.compile(r"\bgw_[A-Za-z0-9_-]{8,}"), "[api-key]"),
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^\s:/@]+):[^\s@/]+@"), r"\1:" + REDACTED + "@"),
    (re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "[email]"),
    # E.164 and written-out international numbers: +1 415 555 0100, +44 (20) 7946-0958
    (re.compile(r"\+\d(?:[\s().-]{0,2}\d){6,16}"), "[phone]"),
    # National formats: (415) 555-0100, 415-555-0100, 415.555.0100
    (re.compile(r"(?<![\w.])\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?![\w.])"), "[phone]"),
    # Bare digit runs long enough to be a phone number (ids and times carry letters or separators).
    (re.compile(r"(?<![\w.:/-])\d{9,15}(?![\w.:/-])"), "[phone]"),
)
# Identifiers the gateway or a provider made (an email Message-ID looks like an address): kept as they are.
_ID_FIELDS = frozenset(
    {"message_id", "attempt_id", "contact_id", "provider_message_id", "inbound_id", "event_id", "delivery_id"}
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class Redactor:
    """Replaces phone numbers, email addresses and credentials in text; drops sensitive fields."""

    def __init__(self, secret_values: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secret_values if len(s) >= 6}, key=len, reverse=True)

    def text(self, value: str, patterns: bool = True) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if not patterns:
            return value
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def value(self, name: str, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if _SENSITIVE_NAME.search(name):
            return REDACTED
        if isinstance(value, str):
            return self.text(value, patterns=name not in _ID_FIELDS)
        if isinstance(value, Mapping):
            return {str(k): self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(name, v) for v in value]
        return self.text(str(value))


def secrets_of(settings: Settings) -> list[str]:
    """The configured values that are secrets: tokens, secrets, passwords, keys, the database password."""
    from dataclasses import fields

    from sqlalchemy.engine import make_url

    found = []
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if isinstance(value, str) and re.search(r"token|secret|password|_key$", f.name):
            found += [part.strip() for part in value.split(",")]
    try:
        password = make_url(settings.database_url).password
    except Exception:  # an unparsable URL has no password to hide
        password = None
    if password:
        found.append(str(password))
    return found


class RedactionFilter(logging.Filter):
    """Rewrites each record so that nothing sensitive reaches a handler (see the module docstring)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
        r = self.redactor
        record.msg = r.text(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = r.text(record.exc_text)
        if record.stack_info:
            record.stack_info = r.text(record.stack_info)
        for name in fields_of(record):
            setattr(record, name, r.value(name, getattr(record, name)))
        setattr(record, "_redacted", True)  # noqa: B010 (not a LogRecord attribute)
        return True


class ContextFilter(logging.Filter):
    """Adds the id of the HTTP request being served (if any) to the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            setattr(record, "request_id", request_id_var.get())  # noqa: B010
        return True


def _stamp_request_ids() -> None:
    """Make every record created while a request is served carry its id, whatever handler gets it."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_gateway", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        rid = request_id_var.get()
        if rid is not None:
            record.request_id = rid
        return record

    factory._gateway = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def fields_of(record: logging.LogRecord) -> list[str]:
    """Names of the event fields a record carries (its `extra`)."""
    return [k for k in vars(record) if k not in _STANDARD and not k.startswith("_")]


def _timestamp(record: logging.LogRecord) -> str:
    at = datetime.fromtimestamp(record.created, UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, msg, request_id, the fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if getattr(record, "event", None):
            line["event"] = getattr(record, "event")  # noqa: B009
        line["msg"] = record.getMessage()
        if getattr(record, "request_id", None):
            line["request_id"] = getattr(record, "request_id")  # noqa: B009
        for name in fields_of(record):
            line.setdefault(name, getattr(record, name))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`time level logger message key=value ...` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        text = super().formatMessage(record)
        pairs = [("request_id", getattr(record, "request_id", None))]
        pairs += [(n, getattr(record, n)) for n in fields_of(record)]
        extra = " ".join(f"{k}={_plain(v)}" for k, v in pairs if v is not None)
        return f"{text} [{extra}]" if extra else text


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


class OncePer(logging.Filter):
    """Lets one record through every `seconds`; the next one through says how many were left out meanwhile.

    For a warning a busy server repeats on every request: waitress's "Task queue depth is N" comes each time
    a request waits for a thread, and is written while waitress holds the lock its threads take their work
    from (a saturated `gateway serve` wrote thousands a minute, each formatted and redacted).
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.seconds, self.clock = seconds, clock
        self._next = float("-inf")
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        if now < self._next:
            self._left_out += 1
            return False
        self._next = now + self.seconds
        if self._left_out:
            more = f"{self._left_out} more like it in the {self.seconds:g} s before"
            record.msg = f"{record.getMessage()} ({more})"
            record.args = None
            self._left_out = 0
        return True


QUEUE_WARNING_EVERY = 10.0  # seconds between waitress's queue-depth warnings


class _GatewayHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs (so configuring twice replaces it)."""


def configure(level: str, settings: Settings | None = None, stream: TextIO | None = None) -> logging.Handler:
    """Log to stderr (or `stream`) at `level` in the configured format, with the filters installed."""
    fmt = settings.log_format if settings is not None else "text"
    handler = _GatewayHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactionFilter(Redactor(secrets_of(settings) if settings else ())))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "waitress.queue", "twilio", "mail.log"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    queue = logging.getLogger("waitress.queue")
    for old_filter in [f for f in queue.filters if isinstance(f, OncePer)]:
        queue.removeFilter(old_filter)
    queue.addFilter(OncePer(QUEUE_WARNING_EVERY))
    return handler


def event(logger: logging.Logger, name: str, msg: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one flow event: `name` (e.g. `attempt.failed`), a sentence of ids, and its fields."""
    if logger.isEnabledFor(level):
        clean = {(k + "_" if k in _RESERVED else k): v for k, v in fields.items() if v is not None}
        logger.log(level, msg, extra={"event": name, **clean})


# -- HTTP request ids ------------------------------------------------------------------------------

http_log = logging.getLogger("gateway.http")


def install(app: Flask) -> None:
    """Give every request an id (a well-formed incoming `X-Request-Id`, else a new one), put it on
    every log line made while serving it and on the answer, and log one line per request."""
    _stamp_request_ids()

    @app.before_request
    def _start() -> None:
        given = request.headers.get("X-Request-Id", "")
        rid = given if _REQUEST_ID.match(given) else "req_" + secrets.token_hex(8)
        g.request_id = rid
        g.request_started = time.monotonic()
        g.request_id_token = request_id_var.set(rid)

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = getattr(g, "request_id", None)
        if rid is None:
            return response
        response.headers["X-Request-Id"] = rid
        quiet = request.path in QUIET_PATHS and response.status_code < 500
        level = logging.DEBUG if quiet else logging.INFO
        if not http_log.isEnabledFor(level):  # the line is not written: do not build it
            return response
        elapsed = (time.monotonic() - g.request_started) * 1000
        event(
            http_log,
            "http.request",
            f"{request.method} {request.path} {response.status_code} in {elapsed:.1f} ms",
            level,
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round(elapsed, 1),
        )
        return response

    @app.teardown_request
    def _forget(_error: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id_var.reset(token)
