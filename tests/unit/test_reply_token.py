"""Reply and unsubscribe tokens: they round-trip, resist tampering, and fit in an email local part."""

from __future__ import annotations

import re

import pytest

from gateway.ids import new_id
from gateway.inbound.reply_token import (
    derive_key,
    make_token,
    make_unsubscribe_token,
    read_token,
    read_unsubscribe_token,
    reply_address,
    token_of_address,
)

SECRET = derive_key("callback-secret", "reply token")


def test_round_trip() -> None:
    message_id = new_id("msg")
    token = make_token(SECRET, message_id)
    assert read_token(SECRET, token) == message_id


def test_token_is_compact_and_safe_in_a_local_part() -> None:
    token = make_token(SECRET, new_id("msg"))
    address = reply_address(token, "in.example.test")
    local = address.partition("@")[0]
    assert len(local) <= 64  # RFC 5321 limit of a local part
    assert re.fullmatch(r"reply\+[a-z0-9_.-]+", local)
    assert ".." not in local and not local.endswith(".")


def test_letter_case_does_not_matter() -> None:
    message_id = new_id("msg")
    assert read_token(SECRET, make_token(SECRET, message_id).upper()) == message_id


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("a" if t[-1] != "a" else "b"),  # MAC changed
        lambda t: "msg_00000000000000000000000000" + t[t.index(".") :],  # another message, same MAC
        lambda t: t.partition(".")[0],  # MAC removed
        lambda t: t + ".extra",
        lambda t: "",
        lambda t: "msg_x." + "a" * 20,
    ],
)
def test_tampered_token_is_refused(tamper: object) -> None:
    token = make_token(SECRET, new_id("msg"))
    assert callable(tamper)
    assert read_token(SECRET, tamper(token)) is None


def test_wrong_secret_is_refused() -> None:
    token = make_token(SECRET, new_id("msg"))
    assert read_token(derive_key("another-secret", "reply token"), token) is None


def test_a_token_of_one_purpose_is_not_valid_for_another() -> None:
    contact_id = new_id("ct")
    unsubscribe = make_unsubscribe_token(SECRET, contact_id, "email")
    assert read_unsubscribe_token(SECRET, unsubscribe) == (contact_id, "email")
    assert read_token(SECRET, unsubscribe) is None
    assert read_unsubscribe_token(SECRET, make_token(SECRET, contact_id)) is None
    assert derive_key("s", "reply token") != derive_key("s", "unsubscribe token")


def test_ids_that_do_not_fit_a_local_part_are_refused() -> None:
    with pytest.raises(ValueError):
        make_token(SECRET, "msg@evil")
    with pytest.raises(ValueError):
        make_token(SECRET, "Msg_UPPER")


def test_token_of_address() -> None:
    assert token_of_address("reply+abc.def@In.Example.Test", "in.example.test") == "abc.def"
    assert token_of_address("<REPLY+abc@in.example.test>", "in.example.test") == "abc"
    assert token_of_address("reply+abc@other.test", "in.example.test") is None
    assert token_of_address("support@in.example.test", "in.example.test") is None
    assert token_of_address("reply+@in.example.test", "in.example.test") is None
    assert token_of_address("reply+abc@in.example.test", None) is None
