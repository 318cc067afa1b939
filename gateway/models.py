"""SQLModel tables: the database is the source of truth for every message, attempt and due time.

Times are aware UTC. JSON columns hold what is read and written whole (plans, content, rule parts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm.attributes import set_attribute
from sqlmodel import Field, SQLModel

from gateway.crypto import Sealed
from gateway.timestamp import Timestamp
from gateway.timeutil import utcnow

_COLUMN_KEYS: dict[type, frozenset[str]] = {}
# Values compared by equality when set again: JSON values are not (the code may have changed one in place).
_SCALARS = frozenset({str, int, float, bool, datetime, type(None)})
_MISSING = object()


class Table(SQLModel):
    """The tables' base. Setting a column attribute goes through SQLAlchemy's instrumentation once: SQLModel's
    own `__setattr__` then runs pydantic's, which stores the same value in the same `__dict__` a second time
    (2.9 µs a set instead of 0.7; the dispatcher makes about 30 a message). Fields set are still recorded.
    Setting a loaded scalar column to the value it holds does nothing (a quarter of the dispatcher's sets:
    a claim dropped that was never taken, a channel set again), so the flush has fewer changes to compare."""

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        keys = _COLUMN_KEYS.get(cls)
        if keys is None:
            keys = _COLUMN_KEYS.setdefault(cls, frozenset(sa_inspect(cls).column_attrs.keys()))
        if name in keys:
            current = self.__dict__.get(name, _MISSING)  # absent when not loaded (expired or deferred)
            if type(value) in _SCALARS and type(current) is type(value) and current == value:
                return  # unchanged: nothing for the flush to compare or write
            set_attribute(self, name, value)
            self.__pydantic_fields_set__.add(name)
        else:
            super().__setattr__(name, value)


def _moment(**kwargs: Any) -> Any:
    """A time column (gateway.timestamp)."""
    return Field(sa_type=Timestamp, **kwargs)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=nullable))


def _sealed() -> Any:
    """A JSON value that holds what people wrote: encrypted at rest when a key is configured."""
    return Field(default=None, sa_column=Column(Sealed, nullable=True))


class Contact(Table, table=True):
    id: str = Field(primary_key=True, max_length=40)
    external_id: str | None = Field(default=None, unique=True, max_length=255)
    name: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, index=True, max_length=20)
    email: str | None = Field(default=None, index=True, max_length=320)
    country: str | None = Field(default=None, max_length=2)
    timezone: str | None = Field(default=None, max_length=64)
    locale: str | None = Field(default=None, max_length=35)
    tags: list[str] | None = _json()
    preferred_channel: str | None = Field(default=None, max_length=20)
    created_at: datetime = _moment(default_factory=utcnow)
    updated_at: datetime = _moment(default_factory=utcnow)
    # erased: addresses and bodies gone, delivery counts kept
    deleted_at: datetime | None = _moment(default=None)
    merged_into: str | None = Field(default=None, max_length=40)  # this record became that contact


class ChannelIdentity(Table, table=True):
    """How a contact is addressed on a channel; unique per (channel, address)."""

    __table_args__ = (UniqueConstraint("channel", "address"),)
    id: int | None = Field(default=None, primary_key=True)
    contact_id: str = Field(foreign_key="contact.id", index=True, max_length=40)
    channel: str = Field(max_length=20)
    address: str = Field(max_length=320)
    created_at: datetime = _moment(default_factory=utcnow)


class ChannelState(Table, table=True):
    """What the gateway has learned about one contact on one channel."""

    contact_id: str = Field(foreign_key="contact.id", primary_key=True, max_length=40)
    channel: str = Field(primary_key=True, max_length=20)
    reachability: str = Field(default="unknown", max_length=16)
    reason: str | None = Field(default=None, max_length=500)
    since: datetime | None = _moment(default=None)
    reprobe_at: datetime | None = _moment(default=None)
    window_open_until: datetime | None = _moment(default=None)
    last_inbound_at: datetime | None = _moment(default=None)
    opted_out: bool = False
    opted_out_at: datetime | None = _moment(default=None)
    sent_in_window: int = 0  # messages accepted since the person last wrote (for per-window limits)


class Message(Table, table=True):
    """One send request and its routing state; `due_at` says when the dispatcher must look at it."""

    __table_args__ = (
        Index("ix_message_due", "due_at"),
        Index("ix_message_contact", "contact_id", "id"),
    )
    id: str = Field(primary_key=True, max_length=40)
    api_key_id: str | None = Field(default=None, max_length=40)
    contact_id: str = Field(foreign_key="contact.id", max_length=40)
    category: str = Field(default="transactional", max_length=20)
    status: str = Field(default="queued", max_length=16, index=True)
    reason: str | None = Field(default=None, max_length=40)
    channel: str | None = Field(default=None, max_length=20)
    content: dict[str, Any] | None = _sealed()
    plan: list[dict[str, Any]] | None = _json()
    skipped: list[dict[str, Any]] | None = _json()
    retry: dict[str, Any] | None = _json()
    rule_id: str | None = Field(default=None, max_length=40)
    step_index: int = 0
    current_attempt_id: str | None = Field(default=None, max_length=40)
    metadata_: dict[str, Any] | None = Field(
        default=None, sa_column=Column("metadata", Sealed, nullable=True)
    )
    status_callback: str | None = Field(default=None, max_length=2048)
    in_reply_to: str | None = Field(default=None, max_length=40)
    human_agent: bool = False
    send_at: datetime | None = _moment(default=None)
    expires_at: datetime | None = _moment(default=None)
    due_at: datetime | None = _moment(default=None)
    claimed_until: datetime | None = _moment(default=None)
    claimed_by: str | None = Field(default=None, max_length=64)
    completed: bool = False
    # Whether a later step may be used after an opt-out (categories the rule allows to fall back).
    fallback_past_opt_out: bool = True
    created_at: datetime = _moment(default_factory=utcnow)
    updated_at: datetime = _moment(default_factory=utcnow)


class Attempt(Table, table=True):
    """One try of one plan step on one channel."""

    # ix_attempt_created: the console dashboard reads the attempts of the last hour or day.
    __table_args__ = (
        Index("ix_attempt_address", "channel", "address"),
        Index("ix_attempt_created", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    message_id: str = Field(foreign_key="message.id", index=True, max_length=40)
    step_index: int
    try_number: int = 1
    channel: str = Field(max_length=20)
    address: str = Field(max_length=320)
    status: str = Field(default="pending", max_length=16)
    provider_message_id: str | None = Field(default=None, index=True, max_length=255)
    error_kind: str | None = Field(default=None, max_length=20)
    error_code: str | None = Field(default=None, max_length=64)
    error_detail: str | None = Field(default=None, max_length=1000)
    segments: int | None = None  # SMS segments the text cost (gateway/adapt.py)
    sends: int = 0
    sent_by: str | None = Field(default=None, max_length=64)  # the dispatcher that made the last send
    # Sends the channel's template, not text (the provider reported the window closed after accepting text).
    as_template: bool = False
    deadline_at: datetime | None = _moment(default=None)
    created_at: datetime = _moment(default_factory=utcnow)
    updated_at: datetime = _moment(default_factory=utcnow)
    sent_at: datetime | None = _moment(default=None)
    delivered_at: datetime | None = _moment(default=None)


class RoutingRule(Table, table=True):
    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(unique=True, max_length=100)
    order: int = Field(default=100, index=True)
    enabled: bool = True
    when: dict[str, Any] | None = _json()
    route: list[dict[str, Any]] | None = _json()
    retry: dict[str, Any] | None = _json()
    quiet_hours: dict[str, Any] | None = _json()
    allow_fallback_for: list[str] | None = _json()
    created_at: datetime = _moment(default_factory=utcnow)
    updated_at: datetime = _moment(default_factory=utcnow)


class ApiKey(Table, table=True):
    """An API key; only the SHA-256 of the secret is stored (keys are 256-bit random)."""

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=100)
    scopes: str = Field(max_length=100)
    key_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = _moment(default_factory=utcnow)
    last_used_at: datetime | None = _moment(default=None)
    revoked_at: datetime | None = _moment(default=None)


class IdempotencyRecord(Table, table=True):
    __table_args__ = (UniqueConstraint("api_key_id", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    api_key_id: str = Field(max_length=40)
    key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    response_status: int
    response_body: dict[str, Any] | None = _json()
    created_at: datetime = _moment(default_factory=utcnow, index=True)


class Setting(Table, table=True):
    """Values the gateway generates once and keeps (the callback secret)."""

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=500)


class InboundMessage(Table, table=True):
    """A message a customer sent; stored once per (channel, provider message id)."""

    __table_args__ = (
        UniqueConstraint("channel", "provider_message_id"),
        Index("ix_inbound_contact", "contact_id", "received_at"),
    )
    id: str = Field(primary_key=True, max_length=40)
    contact_id: str = Field(foreign_key="contact.id", max_length=40)
    channel: str = Field(max_length=20)
    address: str = Field(max_length=320)
    text: str | None = _sealed()
    button_id: str | None = Field(default=None, max_length=64)
    provider_message_id: str = Field(max_length=255)
    in_reply_to: str | None = Field(default=None, max_length=40)
    received_at: datetime = _moment(default_factory=utcnow)
    raw: dict[str, Any] | None = _sealed()
    # The provider's one-use token for answering this message (LINE replyToken), until used or expired.
    reply_token: str | None = _sealed()
    reply_token_expires_at: datetime | None = _moment(default=None)


class WebhookSubscription(Table, table=True):
    """A business system's endpoint for events; the secret signs deliveries and is shown once."""

    id: str = Field(primary_key=True, max_length=40)
    url: str = Field(max_length=2048)
    events: list[str] | None = _json()
    secret: str = Field(max_length=100)
    # A bot hook: its answer to a `message.inbound` event may carry a reply (gateway/bot_hooks.py).
    respond: bool = False
    created_at: datetime = _moment(default_factory=utcnow)
    deleted_at: datetime | None = _moment(default=None)


class Event(Table, table=True):
    """Something a business system may want to hear about."""

    id: str = Field(primary_key=True, max_length=40)
    type: str = Field(max_length=40)
    contact_id: str | None = Field(default=None, max_length=40)
    data: dict[str, Any] | None = _sealed()
    created_at: datetime = _moment(default_factory=utcnow)


class EventDelivery(Table, table=True):
    """One event to one endpoint; retried with backoff, delivered in order per (endpoint, contact)."""

    __table_args__ = (
        Index("ix_delivery_due", "due_at"),
        Index("ix_delivery_order", "target", "contact_id", "delivered", "id"),
    )
    id: str = Field(primary_key=True, max_length=40)
    event_id: str = Field(foreign_key="event.id", max_length=40)
    target: str = Field(max_length=60)  # wh_… subscription id, or msg_… for a status_callback
    url: str = Field(max_length=2048)
    contact_id: str | None = Field(default=None, max_length=40)
    delivered: bool = False
    given_up: bool = False
    tries: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    due_at: datetime | None = _moment(default=None)
    claimed_until: datetime | None = _moment(default=None)
    claimed_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = _moment(default_factory=utcnow)
    updated_at: datetime = _moment(default_factory=utcnow)
    # A bot hook's answer: the reply message it produced, or why it produced none.
    reply_message_id: str | None = Field(default=None, max_length=40)
    reply_error: str | None = Field(default=None, max_length=500)


class AutoReplyRule(Table, table=True):
    """An automatic answer to inbound messages: on keywords, or outside business hours."""

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(unique=True, max_length=100)
    order: int = 100
    enabled: bool = True
    keywords: list[str] | None = _json()
    business_hours: dict[str, Any] | None = _json()
    channels: list[str] | None = _json()
    reply: str = Field(max_length=4096)
    once_per: float = 86400.0
    created_at: datetime = _moment(default_factory=utcnow)
    updated_at: datetime = _moment(default_factory=utcnow)


class AutoReplySent(Table, table=True):
    """When an auto-reply rule last answered a contact (at most once per `once_per`)."""

    rule_id: str = Field(primary_key=True, max_length=40)
    contact_id: str = Field(primary_key=True, max_length=40)
    sent_at: datetime = _moment(default_factory=utcnow)


class EarlyStatus(Table, table=True):
    """A provider status that arrived before the send that caused it was recorded; applied then."""

    id: int | None = Field(default=None, primary_key=True)
    provider_message_id: str = Field(index=True, max_length=255)
    status: str = Field(max_length=16)
    error_kind: str | None = Field(default=None, max_length=20)
    error_code: str | None = Field(default=None, max_length=64)
    error_detail: str | None = Field(default=None, max_length=1000)
    received_at: datetime = _moment(default_factory=utcnow)


class ChannelPace(Table, table=True):
    """The next free send slot of a paced channel, shared by every dispatcher (unix seconds)."""

    channel: str = Field(primary_key=True, max_length=20)
    next_slot: float = 0.0


class AdminUser(Table, table=True):
    """A person who signs in to the console; only an argon2 hash of the password is kept."""

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(unique=True, max_length=100)
    password_hash: str = Field(max_length=255)
    failed_logins: int = 0  # since the last successful sign-in
    locked_until: datetime | None = _moment(default=None)
    # Bumped on sign-out-everywhere and password change: older session cookies stop working.
    session_version: int = 0
    created_at: datetime = _moment(default_factory=utcnow)
    last_login_at: datetime | None = _moment(default=None)


class AuditEntry(Table, table=True):
    """One change made through the console or the CLI: who, when, what, before and after."""

    __table_args__ = (Index("ix_audit_at", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _moment(default_factory=utcnow)
    actor: str = Field(max_length=100)  # admin user name, or "cli"
    action: str = Field(max_length=40)  # e.g. rule.create, rule.update, key.revoke
    target: str = Field(max_length=60)  # the id of what changed
    before: dict[str, Any] | None = _json()
    after: dict[str, Any] | None = _json()
