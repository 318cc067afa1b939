"""Quoted history is stripped from email replies; what the person wrote is kept."""

from __future__ import annotations

import pytest

from gateway.inbound.email import html_to_text, strip_quoted

CASES = [
    (
        "gmail",
        "Yes, Tuesday works.\n\nOn Mon, 3 Nov 2025 at 10:02, Shop <shop@example.test> wrote:\n"
        "> Can we deliver on Tuesday?\n>\n> Thanks\n",
        "Yes, Tuesday works.",
    ),
    (
        "gmail, attribution wrapped over two lines",
        "Sounds good\r\n\r\nOn Mon, Nov 3, 2025 at 10:02 AM Example Shop Customer Service <\r\n"
        "service@example.test> wrote:\r\n\r\n> Your parcel is ready.\r\n",
        "Sounds good",
    ),
    (
        "outlook",
        "Please call me.\n\n-----Original Message-----\nFrom: Shop <shop@example.test>\n"
        "Sent: Monday, November 3, 2025 10:02 AM\nTo: Ada\nSubject: Order 42\n\nYour order shipped.\n",
        "Please call me.",
    ),
    (
        "outlook without the divider",
        "Thanks!\n\nFrom: Shop <shop@example.test>\nSent: Monday, November 3, 2025 10:02 AM\n"
        "To: Ada\nSubject: Order 42\n\nYour order shipped.\n",
        "Thanks!",
    ),
    (
        "outlook on the web",
        "Got it.\n\n________________________________\nFrom: Shop <shop@example.test>\n"
        "Sent: Monday, November 3, 2025 10:02\nSubject: Order 42\n",
        "Got it.",
    ),
    (
        "french",
        "Merci, c'est parfait.\n\nLe lun. 3 nov. 2025 à 10:02, Boutique <shop@example.test> a écrit :\n"
        "> Votre commande est partie.\n",
        "Merci, c'est parfait.",
    ),
    (
        "french outlook",
        "D'accord.\n\nDe : Boutique <shop@example.test>\nEnvoyé : lundi 3 novembre 2025 10:02\nÀ : Ada\n",
        "D'accord.",
    ),
    (
        "no quote",
        "Hello,\n\nwhere is my order?\n\nAda\n",
        "Hello,\n\nwhere is my order?\n\nAda",
    ),
    (
        "top-posting keeps only the top",
        "Tuesday is fine.\nAda\n\nOn Mon, 3 Nov 2025, Shop wrote:\nWhen shall we come?\n> earlier\n",
        "Tuesday is fine.\nAda",
    ),
    (
        "interleaved answers keep the answers",
        "> Which day?\nTuesday.\n\n> Which time?\nAfter 5 pm.\n",
        "Tuesday.\n\nAfter 5 pm.",
    ),
    (
        "a sentence that merely mentions writing is kept",
        "On Monday I wrote to you about the refund.\nAny news?",
        "On Monday I wrote to you about the refund.\nAny news?",
    ),
    (
        "a line starting with On just before the attribution is kept",
        "On second thought, yes.\nOn Mon, 3 Nov 2025 at 10:02, Shop <shop@example.test> wrote:\n> Shall we?",
        "On second thought, yes.",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_strip_quoted(name: str, text: str, expected: str) -> None:
    assert strip_quoted(text) == expected


def test_html_reply_becomes_text_without_the_quoted_block() -> None:
    html = (
        "<html><head><style>p {color: red}</style></head><body>"
        "<div dir='ltr'>Yes &amp; thanks,<br>Ada</div>"
        "<div class='gmail_quote'><div>On Mon, 3 Nov 2025 at 10:02, Shop wrote:</div>"
        "<blockquote>Your <b>order</b> shipped.</blockquote></div></body></html>"
    )
    assert strip_quoted(html_to_text(html)) == "Yes & thanks,\nAda"
