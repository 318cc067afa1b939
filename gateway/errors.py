"""The gateway's error tree.

    GatewayError
    ├── ConfigError            a setting is invalid; the process stops with one line naming it
    ├── ChannelError           a provider call failed; `kind` says what the dispatcher does next
    │     kinds: unreachable, blocked, window_closed, invalid_address, rejected, opted_out
    │            (fall back now), transient (retry with backoff, then fall back),
    │            rate_limited (retry after `retry_after`, not counted as a try)
    └── ProblemError           an API request cannot be served; rendered as problem+json
          ├── ValidationFailed     422 validation-error, with per-field errors
          ├── MalformedRequest     400 malformed-request
          ├── Unauthorized         401
          ├── Forbidden            403
          ├── NotFound             404
          ├── Conflict             409
          ├── IdempotencyConflict  422 idempotency-conflict
          ├── PayloadTooLarge      413
          └── RateLimited          429

Provider errors are mapped to a `ChannelError` at the adapter boundary (`raise ChannelError(...) from exc`);
nothing above the adapters sees a vendor exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A setting has an invalid value; the message names the variable."""


class ErrorKind(StrEnum):
    """What a failed provider call means for routing (see PROVIDERS.md)."""

    UNREACHABLE = "unreachable"
    BLOCKED = "blocked"
    WINDOW_CLOSED = "window_closed"
    INVALID_ADDRESS = "invalid_address"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    OPTED_OUT = "opted_out"


class ChannelError(GatewayError):
    """A provider call failed in a way the dispatcher can act on."""

    def __init__(
        self,
        kind: ErrorKind,
        detail: str,
        code: str | None = None,
        retry_after: float | None = None,
        fallback_now: bool = False,
    ) -> None:
        super().__init__(f"{kind}: {detail}" + (f" (code {code})" if code else ""))
        self.kind = kind
        self.detail = detail
        self.code = code
        self.retry_after = retry_after
        # Set by the dispatcher when the channel's circuit breaker is open: fall back now instead of
        # retrying; on the last step, retry after `retry_after` without counting a try.
        self.fallback_now = fallback_now


@dataclass
class FieldError:
    """One invalid field of a request, by dotted path."""

    field: str
    message: str


@dataclass
class ProblemError(GatewayError):
    """An RFC 9457 problem answer."""

    status: int
    slug: str
    title: str
    detail: str = ""
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.slug}: {self.detail or self.title}"

    def within(self, prefix: str) -> ProblemError:
        """The same problem with every field path put under `prefix` (for batch items)."""
        errors = [FieldError(prefix + e.field, e.message) for e in self.errors]
        detail = f"{prefix}{self.detail}" if errors else self.detail
        return ProblemError(self.status, self.slug, self.title, detail, errors, dict(self.headers))

    def to_body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "type": self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
        }
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


def validation_failed(field_name: str, message: str) -> ProblemError:
    """Build a 422 for one field."""
    return ProblemError(
        422,
        "validation-error",
        "The request is invalid",
        f"{field_name}: {message}",
        [FieldError(field_name, message)],
    )


def not_found(what: str) -> ProblemError:
    return ProblemError(404, "not-found", "Not found", f"{what} does not exist")


def conflict(detail: str) -> ProblemError:
    return ProblemError(409, "conflict", "Conflict", detail)
