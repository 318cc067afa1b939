"""The channel registry: which adapter serves which channel name, and which are enabled.

Adapters are named by dotted path (so an optional dependency is imported only when its channel is used).
The order of CHANNEL_NAMES is the default routing order among channels of the same address kind.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from gateway.channels.base import Channel
from gateway.routing import ChannelInfo
from gateway.settings import Settings

CHANNEL_NAMES = (
    "whatsapp",
    "messenger",
    "instagram",
    "telegram",
    "line",
    "viber",
    "x",
    "wechat",
    "discord",
    "sms",
    "email",
)

ADAPTERS: dict[str, str] = {
    "sms": "fallbacks.sms:SmsChannel",
    "email": "fallbacks.email:EmailChannel",
    "whatsapp": "gateway.channels.whatsapp:WhatsAppChannel",
    "messenger": "gateway.channels.messenger:MessengerChannel",
    "instagram": "gateway.channels.instagram:InstagramChannel",
    "telegram": "gateway.channels.telegram:TelegramChannel",
    "line": "gateway.channels.line:LineChannel",
    "viber": "gateway.channels.viber:ViberChannel",
    "x": "gateway.channels.x:XChannel",
    "wechat": "gateway.channels.wechat:WeChatChannel",
    "discord": "gateway.channels.discord:DiscordChannel",
}


@dataclass(frozen=True)
class ChannelStatus:
    name: str
    enabled: bool
    reason: str


def adapter_class(name: str) -> type[Channel] | None:
    """Import the adapter class of a channel, or None when this version has none."""
    path = ADAPTERS.get(name)
    if path is None:
        return None
    module, _, attr = path.partition(":")
    cls: type[Channel] = getattr(importlib.import_module(module), attr)
    return cls


def channel_statuses(settings: Settings) -> list[ChannelStatus]:
    """Every channel name, enabled or not, with the reason."""
    out = []
    for name in CHANNEL_NAMES:
        cls = adapter_class(name)
        if cls is None:
            out.append(ChannelStatus(name, False, "no adapter in this version yet"))
            continue
        reason = cls.disabled_reason(settings)
        out.append(ChannelStatus(name, reason is None, reason or "credentials set"))
    return out


def channel_infos(settings: Settings) -> dict[str, ChannelInfo]:
    """What routing needs about every channel, in default order."""
    infos = {}
    for status in channel_statuses(settings):
        cls = adapter_class(status.name)
        infos[status.name] = ChannelInfo(
            name=status.name,
            enabled=status.enabled,
            disabled_reason=None if status.enabled else status.reason,
            address_kind=cls.address_kind if cls else "identity",
            window_seconds=cls.window_seconds if cls else None,
            delivery_receipts=cls.delivery_receipts if cls else False,
            read_receipts=cls.read_receipts if cls else False,
            window_message_limit=cls.window_message_limit if cls else None,
            human_agent_window_seconds=cls.human_agent_window_seconds if cls else None,
        )
    return infos


def build_channels(settings: Settings) -> dict[str, Channel]:
    """An adapter instance for every enabled channel."""
    built: dict[str, Channel] = {}
    for status in channel_statuses(settings):
        cls = adapter_class(status.name)
        if status.enabled and cls is not None:
            built[status.name] = cls(settings)
    return built
