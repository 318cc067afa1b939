"""Request and response shapes of the HTTP API (pydantic); `/openapi.json` is generated from them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.timeutil import parse_duration

ChannelName = Literal[
    "whatsapp", "messenger", "instagram", "telegram", "line", "viber", "x", "wechat", "discord",
    "sms", "email",
]  # fmt: skip
Category = Literal["transactional", "otp", "marketing", "alert"]
Receipt = Literal["accepted", "sent", "delivered", "read"]
Scope = Literal["send", "read", "admin"]


def _seconds(value: str | int | float) -> float:
    return parse_duration(value)


Duration = Annotated[
    str | int | float,
    AfterValidator(_seconds),
    Field(description="'90s', '2m', '1h', '7d' or a number of seconds"),
]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=255)]


def _clock(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError("must be a time of day as HH:MM")
    return value


ClockTime = Annotated[str, AfterValidator(_clock)]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must be an RFC 3339 time with an offset, e.g. 2026-12-01T00:00:00Z")
    return value


AwareTime = Annotated[datetime, AfterValidator(_aware)]


def _no_repeats(channels: list[str] | None) -> list[str] | None:
    if channels and len(set(channels)) != len(channels):
        raise ValueError("channels must not repeat")
    return channels


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class To(Strict):
    contact_id: ShortText | None = None
    external_id: ShortText | None = None
    phone: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | None = None
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    identities: dict[ChannelName, ShortText] | None = None
    name: ShortText | None = None
    locale: Annotated[str, StringConstraints(max_length=35)] | None = None
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = None

    @model_validator(mode="after")
    def _needs_one(self) -> To:
        if not (self.contact_id or self.external_id or self.phone or self.email or self.identities):
            raise ValueError("needs at least one of contact_id, external_id, phone, email, identities")
        return self


# The smallest native button limit of the channels (WhatsApp's interactive reply buttons: 3); channels that
# show fewer, and SMS and email, send them as a numbered list (gateway/adapt.py).
MAX_BUTTONS = 3
# Telegram's callback_data holds 1-64 bytes, the smallest room any channel gives a button's id.
MAX_BUTTON_ID_BYTES = 64


def _media_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value, flags=re.IGNORECASE):
        raise ValueError("must be an http or https URL")
    return value


def _button_id(value: str) -> str:
    if len(value.encode()) > MAX_BUTTON_ID_BYTES:
        raise ValueError(f"must be at most {MAX_BUTTON_ID_BYTES} bytes in UTF-8")
    return value


class Media(Strict):
    url: Annotated[str, StringConstraints(max_length=2048), AfterValidator(_media_url)]
    type: Annotated[str, StringConstraints(pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=100)] | None = None
    filename: Annotated[str, StringConstraints(max_length=255)] | None = None


class Button(Strict):
    id: Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_button_id)]
    title: Annotated[str, StringConstraints(min_length=1, max_length=40)]


class Content(Strict):
    text: Annotated[str, StringConstraints(min_length=1, max_length=65536)] | None = None
    subject: Annotated[str, StringConstraints(max_length=998)] | None = None
    html: Annotated[str, StringConstraints(max_length=200000)] | None = None
    media: list[Media] | None = Field(default=None, max_length=10)
    buttons: list[Button] | None = Field(default=None, max_length=MAX_BUTTONS)
    templates: dict[ChannelName, dict[str, Any]] | None = None

    @field_validator("buttons")
    @classmethod
    def _unique_button_ids(cls, buttons: list[Button] | None) -> list[Button] | None:
        if buttons and len({b.id for b in buttons}) != len(buttons):
            raise ValueError("button ids must not repeat")
        return buttons

    @model_validator(mode="after")
    def _needs_text(self) -> Content:
        if self.text is None and not self.templates:
            raise ValueError("text is required unless templates are given")
        return self


class FallbackIn(Strict):
    after: Duration | None = None
    until: Receipt | None = None


class SendRequest(Strict):
    to: To
    content: Content
    human_agent: bool = False
    in_reply_to: ShortText | None = None
    category: Category = "transactional"
    channels: list[ChannelName] | None = Field(
        default=None, min_length=1, max_length=11, json_schema_extra={"uniqueItems": True}
    )
    fallback: FallbackIn | None = None
    ttl: Duration | None = None
    send_at: AwareTime | None = None
    metadata: dict[str, Any] | None = None
    status_callback: Annotated[str, StringConstraints(pattern=r"^https?://", max_length=2048)] | None = None

    _unique_channels = field_validator("channels")(lambda v: _no_repeats(v))


class BatchRequest(Strict):
    messages: list[dict[str, Any]] = Field(max_length=1000)


class ContactIn(To):
    preferred_channel: ChannelName | None = None


class ContactPatch(Strict):
    name: ShortText | None = None
    phone: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | None = None
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    identities: dict[ChannelName, ShortText] | None = None
    preferred_channel: ChannelName | None = None
    locale: Annotated[str, StringConstraints(max_length=35)] | None = None
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = None


class RouteStepIn(Strict):
    channel: ChannelName
    after: Duration | None = None
    until: Receipt | None = None


class RetryIn(Strict):
    attempts: Annotated[int, Field(ge=1, le=100)] | None = None
    backoff: Duration | None = None
    multiplier: Annotated[float, Field(ge=1.0, le=10.0, strict=False)] | None = None
    max_backoff: Duration | None = None


class QuietHoursIn(Strict):
    start: ClockTime
    end: ClockTime


class WhenIn(Strict):
    country: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")]] | None = None
    category: list[Category] | None = None
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = None
    has_identity: list[ChannelName] | None = None


class RuleIn(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    order: Annotated[int, Field(ge=0, le=1_000_000)] = 100
    enabled: bool = True
    when: WhenIn = WhenIn()
    route: list[RouteStepIn] = Field(min_length=1, max_length=11)
    retry: RetryIn | None = None
    quiet_hours: QuietHoursIn | None = None
    allow_fallback_for: list[Category] | None = None


class ExplainRequest(Strict):
    to: To
    category: Category = "transactional"
    channels: list[ChannelName] | None = Field(
        default=None, min_length=1, max_length=11, json_schema_extra={"uniqueItems": True}
    )
    content: Content | None = None
    fallback: FallbackIn | None = None
    in_reply_to: ShortText | None = None
    human_agent: bool = False

    _unique_channels = field_validator("channels")(lambda v: _no_repeats(v))


# -- responses (documented in /openapi.json; the services build these shapes) --------------------


class PlanStepOut(BaseModel):
    channel: str
    address: str
    because: str
    after: str
    until: str


class SkipOut(BaseModel):
    channel: str
    reason: str


class SendAccepted(BaseModel):
    id: str
    status: str
    reason: str | None = None
    contact_id: str
    plan: list[PlanStepOut]
    skipped: list[SkipOut]


class ErrorOut(BaseModel):
    kind: str
    code: str | None
    detail: str | None


class AttemptOut(BaseModel):
    id: str
    channel: str
    address: str
    try_number: int
    provider_message_id: str | None
    status: str
    error: ErrorOut | None
    # SMS only: segments the text cost (GSM-7 160/153 characters, UCS-2 70/67); null elsewhere.
    segments: int | None = None
    created_at: str
    updated_at: str


class MessageOut(BaseModel):
    id: str
    status: str
    reason: str | None
    channel: str | None
    contact_id: str
    category: str
    created_at: str
    updated_at: str
    send_at: str | None
    expires_at: str | None
    metadata: dict[str, Any] | None
    plan: list[PlanStepOut]
    skipped: list[SkipOut]
    attempts: list[AttemptOut]


class MessageList(BaseModel):
    data: list[MessageOut]
    next_cursor: str | None


class BatchOut(BaseModel):
    results: list[dict[str, Any]]


class ContactOut(BaseModel):
    id: str
    external_id: str | None
    name: str | None
    phone: str | None
    email: str | None
    country: str | None
    timezone: str | None
    locale: str | None
    tags: list[str]
    preferred_channel: str | None
    identities: dict[str, str]
    created_at: str
    updated_at: str


class ContactList(BaseModel):
    data: list[ContactOut]
    next_cursor: str | None


class ChannelRowOut(BaseModel):
    channel: str
    address: str | None
    reachability: str
    reason: str | None
    since: str | None
    window_open_until: str | None
    opted_out: bool


class ChannelList(BaseModel):
    data: list[ChannelRowOut]
    next_cursor: str | None


class TimelineEntry(BaseModel):
    direction: Literal["inbound", "outbound"]
    id: str
    channel: str | None
    text: str | None
    status: str
    at: str
    in_reply_to: str | None


class Timeline(BaseModel):
    data: list[TimelineEntry]
    next_cursor: str | None


class RuleOut(RuleIn):
    id: str
    created_at: str
    updated_at: str


class RuleList(BaseModel):
    data: list[RuleOut]
    next_cursor: str | None


class RuleRef(BaseModel):
    id: str
    name: str


class ExplainOut(BaseModel):
    plan: list[PlanStepOut]
    skipped: list[SkipOut]
    rule: RuleRef | None
    not_before: str | None


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


EventType = Literal["message.status", "message.inbound", "contact.opted_out", "contact.reachability"]


class WebhookIn(Strict):
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)]
    events: list[EventType] = Field(min_length=1, max_length=4)
    # A bot hook: its answer to `message.inbound` may be `{"reply": <content>}` (gateway/bot_hooks.py).
    respond: bool = False

    @field_validator("respond")
    @classmethod
    def _respond_needs_inbound(cls, value: bool, info: ValidationInfo) -> bool:
        if value and "events" in info.data and "message.inbound" not in info.data["events"]:
            raise ValueError("respond needs message.inbound in events")
        return value


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    respond: bool
    created_at: str
    secret: str | None = None  # only in the answer to the create


class WebhookList(BaseModel):
    data: list[WebhookOut]
    next_cursor: str | None


# -- auto-replies (admin scope) ---------------------------------------------------------------------

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone such as UTC or Europe/Paris") from None
    return value


def _unique_days(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("days must not repeat")
    return value


def _positive(value: float) -> float:
    if value < 1:
        raise ValueError("must be at least 1 second")
    return value


class BusinessHoursIn(Strict):
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_zone)]
    days: Annotated[list[Weekday], Field(min_length=1, max_length=7), AfterValidator(_unique_days)] = [
        "mon", "tue", "wed", "thu", "fri",
    ]  # fmt: skip
    start: ClockTime
    end: ClockTime


class AutoReplyIn(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    order: Annotated[int, Field(ge=0, le=1_000_000)] = 100
    enabled: bool = True
    keywords: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] | None = Field(
        default=None, min_length=1, max_length=100
    )
    business_hours: BusinessHoursIn | None = Field(default=None, validate_default=True)
    channels: list[ChannelName] | None = Field(default=None, min_length=1, max_length=11)
    reply: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    once_per: Annotated[Duration, AfterValidator(_positive)] = Field(default="24h", validate_default=True)

    @field_validator("business_hours")
    @classmethod
    def _needs_a_condition(cls, value: BusinessHoursIn | None, info: ValidationInfo) -> Any:
        if value is None and "keywords" in info.data and not info.data["keywords"]:
            raise ValueError("a rule needs keywords or business_hours (or both)")
        return value


class AutoReplyOut(AutoReplyIn):
    id: str
    created_at: str
    updated_at: str


class AutoReplyList(BaseModel):
    data: list[AutoReplyOut]
    next_cursor: str | None
