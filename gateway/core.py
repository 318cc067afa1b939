"""The composition root: settings, database, clock and channel facts, built once per process."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from gateway import crypto, store
from gateway.channels import channel_infos
from gateway.combine import Combiner
from gateway.events import Subscriptions
from gateway.models import Setting
from gateway.progress import Progress
from gateway.routing import ChannelInfo, Defaults, RetrySpec
from gateway.settings import Settings
from gateway.timeutil import Clock, utcnow


@dataclass
class Gateway:
    """Everything a use case needs; views, the CLI and the dispatcher pass it to the services."""

    settings: Settings
    engine: Engine
    clock: Clock = utcnow
    channels: dict[str, ChannelInfo] = field(default_factory=dict)
    # Called after a message is accepted so the in-process dispatcher starts at once.
    nudge: Callable[[], None] = lambda: None
    subscriptions: Subscriptions = field(default_factory=Subscriptions)
    # Called with each newly stored inbound message, after its transaction committed.
    after_inbound: list[Callable[[Gateway, Any], None]] = field(default_factory=list)
    # Send requests of this process that arrive together are written in one transaction.
    accepts: Combiner[Any, Any] = field(default_factory=Combiner, repr=False)
    # Provider status reports of this process that arrive together are applied in one transaction.
    statuses: Combiner[Any, int] = field(default_factory=Combiner, repr=False)
    _callback_secret: str | None = field(default=None, repr=False)

    @property
    def progress(self) -> Progress:
        from gateway.effects import GatewayEffects

        return Progress(self.clock, self.settings.retry_jitter, effects=GatewayEffects(self))

    @property
    def defaults(self) -> Defaults:
        s = self.settings
        retry = RetrySpec(s.retry_attempts, s.retry_backoff, s.retry_multiplier, s.retry_max_backoff)
        return Defaults(after=s.default_after, retry=retry, timezone=s.default_timezone)

    def callback_secret(self) -> str:
        """The secret that signs status_callback deliveries: configured, or generated once and kept."""
        if self.settings.callback_secret:
            return self.settings.callback_secret
        if self._callback_secret is None:
            with store.transaction(self.engine) as session:
                row = session.get(Setting, "callback_secret")
                if row is None:
                    row = Setting(name="callback_secret", value=secrets.token_urlsafe(32))
                    session.add(row)
                self._callback_secret = row.value
        return self._callback_secret


def build_gateway(settings: Settings, clock: Clock = utcnow) -> Gateway:
    """Connect to the database, create missing tables and read which channels are enabled."""
    crypto.configure(settings.encryption_key)
    engine = store.make_engine(settings.database_url, settings.db_pool_size)
    store.create_schema(engine)
    gateway = Gateway(settings, engine, clock, channel_infos(settings))
    from gateway.inbound.auto_replies import answer_inbound

    gateway.after_inbound.append(answer_inbound)
    gateway.callback_secret()
    return gateway
