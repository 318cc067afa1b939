"""Instagram direct messages: Meta's Send API for an Instagram professional account.

The same platform as Messenger (see messenger.py): the 24-hour window, the HUMAN_AGENT tag for replies
written by a person (7 days), the same error codes. Differences: the sender is the Instagram account id,
texts are limited to 1000 characters, webhooks carry `"object": "instagram"`, and Meta reports no
deliveries for Instagram, only reads (`messaging_seen`, naming the message id): a step completes when
Meta accepts the message, and a read receipt still moves it to `read`.
"""

from __future__ import annotations

from typing import ClassVar

from gateway.channels.messenger import MessengerChannel


class InstagramChannel(MessengerChannel):
    """Messages to an Instagram-scoped id (IGSID) from an Instagram professional account."""

    name: ClassVar[str] = "instagram"
    delivery_receipts: ClassVar[bool] = False
    read_receipts: ClassVar[bool] = True
    max_text_length: ClassVar[int] = 1000
    # Instagram takes images, videos and audio by URL, not other files.
    media_types: ClassVar[frozenset[str]] = frozenset({"image/", "video/", "audio/"})
    status_webhook: ClassVar[str | None] = "instagram"
    inbound_webhook: ClassVar[str | None] = "instagram"
    webhook_object: ClassVar[str] = "instagram"
    token_setting: ClassVar[str] = "instagram_token"
    account_setting: ClassVar[str] = "instagram_account_id"
