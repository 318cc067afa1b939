"""Fit a message's content to one channel: the one place that decides native versus adapted.

`adapt(content, support)` takes the request's `content` and what a channel declares it can show
(`ContentSupport`, built from the `Channel` class attributes) and returns what the adapter serialises:

- media the channel shows natively (by MIME type, up to its count), the rest as `name: url` links in the text;
- buttons as the channel's reply buttons when all of them fit (titles cut to the channel's length), else a
  numbered list in the text ("Reply with a number"), whose numbers the inbound pipeline maps back to ids;
- the text within the channel's limit: `split` into at most `max_parts` messages at word boundaries, or
  `truncate`d with "…" (the links and the numbered list are kept; the body is cut).

`sms_segments` counts the SMS segments of a text exactly as GSM 03.38 and UCS-2 concatenation do.
Nothing here does I/O.
"""

from __future__ import annotations

import html as html_lib
import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

TextPolicy = Literal["split", "truncate"]
ANY_MEDIA = "*/*"
ELLIPSIS = "…"
REPLY_HINT = "Reply with a number."


@dataclass(frozen=True)
class MediaItem:
    """One file to show: its URL, MIME type (given, else guessed from the name) and file name."""

    url: str
    type: str
    filename: str


@dataclass(frozen=True)
class ButtonItem:
    """One reply button: the id reported back when it is chosen, and its (possibly cut) title."""

    id: str
    title: str


@dataclass(frozen=True)
class ContentSupport:
    """What one channel can show natively and how it treats long texts (its class attributes)."""

    media_types: frozenset[str] = frozenset()
    max_media: int = 10
    media_https_only: bool = False
    max_buttons: int = 0
    max_button_title: int = 20
    # A text carrying native buttons may be shorter than other texts (WhatsApp's interactive body: 1024).
    button_text_length: int | None = None
    max_text_length: int = 4096
    text_policy: TextPolicy = "truncate"
    max_parts: int = 5
    # Messages one provider call may carry, media included (LINE's push: 5); None = no such limit.
    messages_per_send: int | None = None

    def shows(self, media: MediaItem) -> bool:
        """Whether this channel shows `media` natively."""
        if self.media_https_only and not media.url.lower().startswith("https://"):
            return False
        kind = media.type.lower()
        return any(
            wanted == ANY_MEDIA or kind == wanted or (wanted.endswith("/") and kind.startswith(wanted))
            for wanted in self.media_types
        )


@dataclass(frozen=True)
class Adapted:
    """Content fitted to one channel."""

    text: str | None  # the whole text (parts joined by a blank line), links and numbered list included
    parts: tuple[str, ...] = ()  # the text as the channel's messages: one, or several under `split`
    media: tuple[MediaItem, ...] = ()  # shown natively
    buttons: tuple[ButtonItem, ...] = ()  # shown natively
    html: str | None = None  # email: the HTML with the numbered list added
    numbered: tuple[ButtonItem, ...] = field(default=())  # buttons sent as a numbered list


def media_items(content: Mapping[str, Any]) -> list[MediaItem]:
    """The request's media with a MIME type and a file name each."""
    found = []
    for media in content.get("media") or []:
        url = str(media["url"])
        name = media.get("filename") or unquote(urlsplit(url).path.rpartition("/")[2]) or "attachment"
        kind = media.get("type") or mimetypes.guess_type(name)[0] or "application/octet-stream"
        found.append(MediaItem(url, str(kind).lower(), str(name)))
    return found


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, ending with "…" when it was longer."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + ELLIPSIS if limit > 0 else ""


def split_text(text: str, limit: int, last_limit: int | None = None) -> list[str]:
    """Parts of at most `limit` characters (the last at most `last_limit`), cut at a line break or space
    in the second half of a part when there is one, else mid-word."""
    parts: list[str] = []
    rest = text.strip()
    while rest:
        size = limit
        if last_limit is not None and len(rest) <= limit:
            size = min(limit, last_limit)  # this could be the last part: it must fit the button text
        if len(rest) <= size:
            parts.append(rest)
            break
        window = rest[: size + 1]
        at = max(window.rfind("\n"), window.rfind(" "))
        end = at if at >= size // 2 else size
        parts.append(rest[:end].rstrip())
        rest = rest[end:].strip()
    return parts


def _join(*pieces: str) -> str:
    return "\n\n".join(p for p in pieces if p)


def _fit_body(body: str, extras: str, limit: int) -> str:
    """Body and extras in `limit` characters, cutting the body first and the extras only if they alone
    do not fit."""
    whole = _join(body, extras)
    if len(whole) <= limit:
        return whole
    if not extras:
        return cut(body, limit)
    room = limit - len(extras) - 2
    if room < 20:  # no useful room for the body: the extras alone, cut if need be
        return cut(extras, limit)
    return _join(cut(body, room), extras)


def _numbered_list(buttons: Sequence[ButtonItem]) -> str:
    return "\n".join(f"{i}. {b.title}" for i, b in enumerate(buttons, 1)) + "\n" + REPLY_HINT


def _numbered_html(buttons: Sequence[ButtonItem]) -> str:
    items = "".join(f"<li>{html_lib.escape(b.title)}</li>" for b in buttons)
    return f"<ol>{items}</ol><p>{REPLY_HINT}</p>"


def _links_html(media: Sequence[MediaItem]) -> str:
    links = "".join(
        f'<li><a href="{html_lib.escape(m.url)}">{html_lib.escape(m.filename)}</a></li>' for m in media
    )
    return f"<ul>{links}</ul>"


def adapt(content: Mapping[str, Any], support: ContentSupport) -> Adapted:
    """What one channel sends for `content`: native media and buttons, and the text carrying the rest."""
    media = media_items(content)
    room = support.max_media
    if support.messages_per_send is not None:  # one call carries the files and at least one text
        room = min(room, support.messages_per_send - 1)
    native_media = [m for m in media if support.shows(m)][:room]
    linked = [m for m in media if m not in native_media]
    given = [ButtonItem(str(b["id"]), str(b["title"])) for b in content.get("buttons") or []]
    native_buttons = bool(given) and len(given) <= support.max_buttons
    buttons = (
        [ButtonItem(b.id, cut(b.title, support.max_button_title)) for b in given] if native_buttons else []
    )
    numbered = [] if native_buttons else given
    body = str(content.get("text") or "")
    links = "\n".join(f"{m.filename}: {m.url}" for m in linked)
    extras = _join(links, _numbered_list(numbered) if numbered else "")

    last_limit = support.button_text_length if buttons else None
    limit = support.max_text_length
    if support.text_policy == "truncate":
        text = _fit_body(body, extras, min(limit, last_limit or limit))
        parts = [text] if text else []
    else:
        max_parts = support.max_parts
        if support.messages_per_send is not None:
            max_parts = max(1, min(max_parts, support.messages_per_send - len(native_media)))
        budget = limit * max_parts
        whole = _join(body, extras)
        parts = split_text(whole, limit, last_limit)
        while len(parts) > max_parts:  # too long even split: cut the body (never the links) and retry
            budget -= max(1, limit // 4)
            whole = _fit_body(body, extras, budget)
            parts = split_text(whole, limit, last_limit)
        text = "\n\n".join(parts)

    html = content.get("html")
    if html and (numbered or linked):
        extra_html = (_links_html(linked) if linked else "") + (_numbered_html(numbered) if numbered else "")
        html = str(html) + extra_html
    return Adapted(
        text=text or None,
        parts=tuple(parts),
        media=tuple(native_media),
        buttons=tuple(buttons),
        html=html,
        numbered=tuple(numbered),
    )


# -- SMS segments ----------------------------------------------------------------------------------

# GSM 03.38 default alphabet (one septet each) and its extension table (escape + one septet: two each).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
GSM7_SINGLE, GSM7_MULTI = 160, 153  # septets in one SMS, and per part of a concatenated one (UDH: 7)
UCS2_SINGLE, UCS2_MULTI = 70, 67  # UTF-16 code units, likewise


@dataclass(frozen=True)
class Segments:
    """How an SMS text travels: its encoding and the number of segments it costs."""

    encoding: Literal["GSM-7", "UCS-2"]
    count: int


def _pack(units: Sequence[int], single: int, multi: int) -> int:
    """Segments for characters of `units` size each; a character is never split across two segments."""
    total = sum(units)
    if total <= single:
        return 1 if total else 0
    segments, used = 1, 0
    for size in units:
        if used + size > multi:
            segments, used = segments + 1, 0
        used += size
    return segments


def sms_segments(text: str) -> Segments:
    """The encoding and segment count of an SMS text (160/153 GSM-7 septets, 70/67 UCS-2 units)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        return Segments(
            "GSM-7", _pack([2 if c in GSM7_EXTENSION else 1 for c in text], GSM7_SINGLE, GSM7_MULTI)
        )
    # Characters outside the Basic Multilingual Plane (most emoji) take two UTF-16 code units.
    return Segments("UCS-2", _pack([2 if ord(c) > 0xFFFF else 1 for c in text], UCS2_SINGLE, UCS2_MULTI))
