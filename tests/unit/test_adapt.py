"""gateway/adapt.py: native versus adapted media and buttons, text policies, and SMS segment counts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.adapt import ANY_MEDIA, ContentSupport, adapt, cut, media_items, sms_segments, split_text
from gateway.channels import adapter_class
from gateway.settings import load_settings

PDF = {"url": "https://biz.example/invoice-42.pdf", "type": "application/pdf", "filename": "invoice-42.pdf"}
PHOTO = {"url": "https://biz.example/parcel.jpg"}  # no type: guessed from the name
BUTTONS = [{"id": "track", "title": "Track parcel"}, {"id": "agent", "title": "Talk to a person now please"}]
SMS_LIKE = ContentSupport(max_text_length=1600, text_policy="truncate")
CHAT_LIKE = ContentSupport(
    media_types=frozenset({"image/", "application/pdf"}),
    max_buttons=3,
    max_button_title=20,
    max_text_length=100,
    text_policy="split",
    max_parts=3,
)


def content(**extra: Any) -> dict[str, Any]:
    return {"text": "Order 42 shipped.", **extra}


def test_media_types_are_guessed_from_the_name_and_file_names_from_the_url() -> None:
    [pdf, photo, odd] = media_items({"media": [PDF, PHOTO, {"url": "https://x.example/dl?id=7"}]})
    assert (pdf.type, pdf.filename) == ("application/pdf", "invoice-42.pdf")
    assert (photo.type, photo.filename) == ("image/jpeg", "parcel.jpg")
    assert (odd.type, odd.filename) == ("application/octet-stream", "dl")


def test_sms_gets_links_and_a_numbered_list_and_no_native_content() -> None:
    fitted = adapt(content(media=[PDF], buttons=BUTTONS), SMS_LIKE)
    assert fitted.media == () and fitted.buttons == ()
    assert fitted.text == (
        "Order 42 shipped.\n\ninvoice-42.pdf: https://biz.example/invoice-42.pdf\n\n"
        "1. Track parcel\n2. Talk to a person now please\nReply with a number."
    )
    assert fitted.parts == (fitted.text,)
    assert [b.id for b in fitted.numbered] == ["track", "agent"]


def test_a_chat_channel_shows_what_it_supports_and_links_the_rest() -> None:
    video = {"url": "https://biz.example/unboxing.mp4", "type": "video/mp4", "filename": "unboxing.mp4"}
    fitted = adapt(content(media=[PDF, PHOTO, video], buttons=BUTTONS), CHAT_LIKE)
    assert [m.filename for m in fitted.media] == ["invoice-42.pdf", "parcel.jpg"]
    assert fitted.text == "Order 42 shipped.\n\nunboxing.mp4: https://biz.example/unboxing.mp4"
    # Titles are cut to the channel's length, ids kept.
    assert [(b.id, b.title) for b in fitted.buttons] == [
        ("track", "Track parcel"),
        ("agent", "Talk to a person no…"),
    ]


def test_more_buttons_than_the_channel_shows_all_become_a_numbered_list() -> None:
    two_only = ContentSupport(max_buttons=2, max_text_length=500)
    three = [*BUTTONS, {"id": "stop", "title": "Stop"}]
    fitted = adapt(content(buttons=three), two_only)
    assert fitted.buttons == ()
    assert fitted.text is not None and fitted.text.endswith("3. Stop\nReply with a number.")


def test_https_only_channels_link_plain_http_media() -> None:
    support = ContentSupport(media_types=frozenset({"image/"}), media_https_only=True)
    fitted = adapt(content(media=[{"url": "http://biz.example/a.png"}, PHOTO]), support)
    assert [m.url for m in fitted.media] == ["https://biz.example/parcel.jpg"]
    assert fitted.text == "Order 42 shipped.\n\na.png: http://biz.example/a.png"


def test_any_media_and_a_count_limit() -> None:
    fitted = adapt(
        content(media=[PDF, PHOTO]), ContentSupport(media_types=frozenset({ANY_MEDIA}), max_media=1)
    )
    assert [m.filename for m in fitted.media] == ["invoice-42.pdf"]
    assert fitted.text == "Order 42 shipped.\n\nparcel.jpg: https://biz.example/parcel.jpg"


def test_truncate_cuts_the_body_and_keeps_links_and_the_list() -> None:
    long_body = "word " * 400
    fitted = adapt(
        {"text": long_body, "media": [PDF], "buttons": BUTTONS}, ContentSupport(max_text_length=300)
    )
    assert fitted.text is not None and len(fitted.text) <= 300
    assert "…\n\ninvoice-42.pdf: https://biz.example/invoice-42.pdf\n\n1. Track parcel" in fitted.text
    assert fitted.text.endswith("Reply with a number.")


def test_split_cuts_at_word_boundaries_and_the_last_part_fits_the_button_text() -> None:
    body = " ".join(f"w{i:03d}" for i in range(60))  # 299 characters
    support = ContentSupport(max_buttons=3, max_text_length=100, text_policy="split", button_text_length=40)
    fitted = adapt({"text": body, "buttons": BUTTONS}, support)
    assert all(len(p) <= 100 for p in fitted.parts) and len(fitted.parts[-1]) <= 40
    assert " ".join(fitted.parts).split() == body.split()  # nothing lost, no word cut
    assert fitted.text == "\n\n".join(fitted.parts)


def test_split_beyond_max_parts_cuts_the_body_but_keeps_the_links() -> None:
    body = "x" * 1000
    fitted = adapt({"text": body, "media": [{"url": "https://biz.example/v.mov"}]}, CHAT_LIKE)
    assert len(fitted.parts) <= 3 and all(len(p) <= 100 for p in fitted.parts)
    assert fitted.parts[-1].endswith("v.mov: https://biz.example/v.mov")
    assert "…" in fitted.text  # type: ignore[operator]


def test_messages_per_send_counts_the_media() -> None:
    support = ContentSupport(
        media_types=frozenset({"image/"}), max_text_length=50, text_policy="split", messages_per_send=5
    )
    images = [{"url": f"https://biz.example/{i}.png"} for i in range(3)]
    fitted = adapt({"text": "y " * 200, "media": images}, support)
    assert (len(fitted.media), len(fitted.parts)) == (3, 2)
    many = [{"url": f"https://biz.example/{i}.png"} for i in range(7)]
    fitted = adapt({"text": "short", "media": many}, replace(support, max_text_length=500))
    assert (len(fitted.media), len(fitted.parts)) == (4, 1)  # the text keeps a slot; the rest are links
    assert fitted.text is not None and fitted.text.count("https://biz.example/") == 3


def test_email_html_gets_the_numbered_list_too() -> None:
    support = ContentSupport(media_types=frozenset({ANY_MEDIA}), max_text_length=10**6)
    fitted = adapt(content(html="<p>Shipped</p>", buttons=BUTTONS[:1]), support)
    assert fitted.html == "<p>Shipped</p><ol><li>Track parcel</li></ol><p>Reply with a number.</p>"


def test_cut_and_split_text_edges() -> None:
    assert cut("abcdef", 6) == "abcdef" and cut("abcdef", 4) == "abc…"
    assert split_text("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]
    assert split_text("", 10) == []


@pytest.mark.parametrize(
    ("text", "encoding", "count"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("é ü Ñ £ ¥ Ç", "GSM-7", 1),  # all in the GSM default alphabet
        ("€" * 80, "GSM-7", 1),  # 160 septets: the euro sign is an escape plus one septet
        ("€" * 81, "GSM-7", 2),
        ("x" * 69 + "€", "GSM-7", 1),  # 71 septets
        ("{" + "a" * 152, "GSM-7", 1),  # 154 septets fit one 160-septet SMS
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 3),  # 306 septets, but the escape pair starts part 2
        ("Price: 10€ {ok} [a|b] ~^\\", "GSM-7", 1),
        ("Your parcel 📦", "UCS-2", 1),
        ("ç" * 70, "UCS-2", 1),  # small c cedilla is not GSM-7 (only the capital is)
        ("ç" * 71, "UCS-2", 2),
        ("ç" * 134, "UCS-2", 2),
        ("ç" * 135, "UCS-2", 3),
        ("📦" * 35, "UCS-2", 1),  # 70 UTF-16 code units
        ("📦" * 36, "UCS-2", 2),
        ("ç" * 66 + "📦", "UCS-2", 1),  # 68 units
        ("ç" * 66 + "📦" + "ç" * 66, "UCS-2", 3),  # 134 units, but the surrogate pair starts part 2
    ],
)
def test_sms_segments(text: str, encoding: str, count: int) -> None:
    found = sms_segments(text)
    assert (found.encoding, found.count) == (encoding, count)


def test_every_adapter_declares_a_valid_policy_and_sensible_limits() -> None:
    settings = load_settings(environ={}, overrides={})
    for name in ("sms", "email", "whatsapp", "messenger", "instagram", "telegram", "line", "viber", "x"):
        cls = adapter_class(name)
        assert cls is not None
        assert cls.text_policy in ("split", "truncate"), name
        assert cls.max_buttons == 0 or cls.max_buttons >= 3, name  # 3 is what the API accepts
        support = cls(settings).content_support()
        assert support.max_text_length == cls.max_text_length
