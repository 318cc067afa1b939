"""The console's rule form: fields to the API's RuleIn and errors back to the field that caused them."""

from __future__ import annotations

from werkzeug.datastructures import MultiDict

from gateway.admin import rule_form
from gateway.schemas import RuleIn

STORED = {
    "id": "rule_1",
    "name": "japan-line-first",
    "order": 10,
    "enabled": True,
    "when": {"country": ["JP", "TW"], "category": ["transactional", "otp"], "tags": ["vip"],
             "has_identity": ["line"]},
    "route": [{"channel": "line", "after": "2m", "until": "accepted"}, {"channel": "sms", "after": "10m"},
              {"channel": "email"}],
    "retry": {"attempts": 3, "backoff": "30s", "multiplier": 2.0, "max_backoff": "30m"},
    "quiet_hours": {"start": "21:00", "end": "08:00"},
    "allow_fallback_for": ["transactional", "alert"],
}  # fmt: skip


def test_a_stored_rule_survives_the_form_unchanged() -> None:
    body, errors = rule_form.validate_rule(rule_form.form_values(STORED))
    assert errors == {} and body is not None
    fields = ("name", "order", "enabled", "when", "route", "retry", "quiet_hours", "allow_fallback_for")
    expected = RuleIn.model_validate({k: STORED[k] for k in fields}, strict=False)
    assert body == expected


def test_blank_rows_are_dropped_and_errors_go_back_to_their_row() -> None:
    form = MultiDict(
        [("name", "r"), ("route.0.channel", ""), ("route.1.channel", "sms"), ("route.2.channel", ""),
         ("route.3.channel", "email"), ("route.3.until", "read")]
    )  # fmt: skip
    data, rows = rule_form.rule_data(form)
    assert data["route"] == [{"channel": "sms"}, {"channel": "email", "until": "read"}] and rows == [1, 3]
    body, errors = rule_form.validate_rule(form)
    assert body is None and errors == {"route.3.until": "email cannot report 'read'"}


def test_a_problem_s_field_path_names_the_nearest_form_field() -> None:
    rows = [0, 2]
    assert rule_form.form_field("route.1.after", rows) == "route.2.after"
    assert rule_form.form_field("route.1", rows) == "route"
    assert rule_form.form_field("route", rows) == "route"
    assert rule_form.form_field("when.country.1", rows) == "when.country"
    assert rule_form.form_field("quiet_hours.end", rows) == "quiet_hours.end"
    assert rule_form.form_field("retry", rows) == "retry"
    assert rule_form.form_field("body", rows) == "form"


def test_empty_sections_are_left_out_and_listed_fallback_may_be_empty() -> None:
    form = MultiDict([("name", "r"), ("route.0.channel", "sms"), ("allow_fallback", "listed")])
    data, _ = rule_form.rule_data(form)
    assert data == {
        "name": "r",
        "enabled": False,
        "when": {},
        "route": [{"channel": "sms"}],
        "allow_fallback_for": [],
    }
    form["allow_fallback"] = "default"
    body, errors = rule_form.validate_rule(form)
    assert errors == {} and body is not None and body.allow_fallback_for is None and body.order == 100


def test_route_rows_drawn_end_with_one_blank_row() -> None:
    assert rule_form.shown_rows(MultiDict()) == [0]
    assert rule_form.shown_rows(rule_form.form_values(STORED)) == [0, 1, 2, 3]
    full = MultiDict([(f"route.{n}.channel", "sms") for n in range(rule_form.MAX_STEPS)])
    assert rule_form.shown_rows(full) == list(range(rule_form.MAX_STEPS))
    assert rule_form.shown_rows(MultiDict([("route.0.channel", ""), ("route.1.channel", "")])) == [0, 1]


def test_the_explain_contact() -> None:
    assert rule_form.explain_request(MultiDict([("contact.category", "otp")])) == (None, {})
    form = MultiDict(
        [("contact.phone", " +819012345678 "), ("contact.identities", "line: U4af\n\ntelegram:123\n"),
         ("contact.tags", "vip, jp"), ("contact.category", "otp")]
    )  # fmt: skip
    request, errors = rule_form.explain_request(form)
    assert errors == {} and request is not None
    assert request.to.phone == "+819012345678" and request.to.identities == {
        "line": "U4af",
        "telegram": "123",
    }
    assert request.to.tags == ["vip", "jp"] and request.category == "otp"
    _, bad = rule_form.explain_request(MultiDict([("contact.identities", "pigeon:42")]))
    assert list(bad) == ["contact.identities"]


def test_every_message_shows_at_once_even_the_receipt_check_of_an_otherwise_invalid_rule() -> None:
    form = MultiDict(
        [
            ("name", "bad name"),
            ("route.0.channel", "sms"),
            ("route.0.until", "read"),
            ("route.1.channel", "fax"),
        ]
    )
    body, errors = rule_form.validate_rule(form)
    assert body is None and set(errors) == {"name", "route.0.until", "route.1.channel"}
    assert errors["route.0.until"] == "sms cannot report 'read'"
