"""The console's routing rules over a real server: the form's validation errors next to their fields, reorder,
enable/disable, delete, the live explain of an unsaved draft, and the audit log (who, before, after)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import requests
from playwright.sync_api import expect
from sqlmodel import col, select

from gateway import store
from gateway.local import LocalGateway
from gateway.models import ApiKey, AuditEntry
from gateway.services.keys import hash_key
from tests.conftest import ADMIN_PASSWORD, screenshot, sign_in

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
JP_PHONE = "+819012345678"


class Console:
    """A signed-in console session driven with plain HTTP (no browser)."""

    def __init__(self, local: LocalGateway, name: str = "ada") -> None:
        self.local, self.web = local, requests.Session()
        form = self.web.get(f"{local.url}/admin/login")
        answer = self.web.post(
            f"{local.url}/admin/login",
            data={"name": name, "password": ADMIN_PASSWORD, "csrf_token": _token(form.text)},
            allow_redirects=False,
        )
        assert answer.status_code == 302, answer.text
        self.token = _token(self.web.get(f"{local.url}/admin/rules").text)

    def post(self, path: str, data: dict[str, Any], **kwargs: Any) -> requests.Response:
        return self.web.post(f"{self.local.url}{path}", data={"csrf_token": self.token, **data}, **kwargs)

    def get(self, path: str) -> requests.Response:
        return self.web.get(f"{self.local.url}{path}")


def _token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def field_error(page: str, field: str) -> str:
    """The error line of `field`: the first error line after its input (or fieldset), which is marked
    invalid and described by it."""
    ident = field.replace(".", "-")
    marked = re.search(rf'aria-describedby="e-{ident}" aria-invalid="true"', page)
    assert marked, f"{field} is not marked invalid"
    line = re.compile(r'<p class="field-error" id="([^"]+)" data-error-for="[^"]+">([^<]*)</p>')
    following = line.search(page, marked.end())
    assert following and following.group(1) == f"e-{ident}", f"no error shown next to {field}"
    return html.unescape(following.group(2))


def audit(local: LocalGateway) -> list[AuditEntry]:
    with store.transaction(local.gw.engine) as session:
        return list(session.exec(select(AuditEntry).order_by(col(AuditEntry.id))))


def rules_api(local: LocalGateway) -> list[dict[str, Any]]:
    answer = local.call("GET", "/v1/routing-rules")
    assert answer.status == 200, answer
    rules: list[dict[str, Any]] = answer.body["data"]
    return rules


RULE = {"name": "jp-email", "order": "10", "enabled": "on", "when.country": "JP", "route.0.channel": "email"}


@SQLITE
@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"route.0.channel": "pigeon"}, "route.0.channel", "Input should be 'whatsapp'"),
        ({"route.0.channel": "sms", "route.0.until": "read"}, "route.0.until", "sms cannot report 'read'"),
        # A blank row before the bad one: the error goes to the row the person filled in.
        ({"route.0.channel": "", "route.1.channel": "email", "route.1.until": "delivered"}, "route.1.until",
         "email cannot report 'delivered'"),
        ({"route.0.after": "soon"}, "route.0.after", "must be a duration"),
        ({"name": "no spaces allowed"}, "name", "String should match pattern"),
        ({"when.country": "JPN"}, "when.country", "String should match pattern"),
        ({"quiet_hours.start": "25:00", "quiet_hours.end": "08:00"}, "quiet_hours.start", "HH:MM"),
        ({"retry.attempts": "0"}, "retry.attempts", "greater than or equal to 1"),
        ({"order": "first"}, "order", "valid integer"),
        ({"route.0.channel": ""}, "route", "at least 1 item"),
    ],
)  # fmt: skip
def test_an_invalid_rule_is_422_with_the_message_next_to_its_field_and_nothing_stored(
    gateway: LocalGateway, admin_user: str, fields: dict[str, str], where: str, message: str
) -> None:
    console = Console(gateway)
    answer = console.post("/admin/rules/new", RULE | fields)
    assert answer.status_code == 422
    assert message in field_error(answer.text, where)
    assert 'role="alert"' in answer.text
    # What was typed is still in the form.
    assert f'value="{(RULE | fields)["name"]}"' in answer.text
    assert rules_api(gateway) == []
    assert audit(gateway) == []


@SQLITE
def test_editing_into_an_invalid_rule_or_a_taken_name_changes_nothing(
    gateway: LocalGateway, admin_user: str
) -> None:
    console = Console(gateway)
    assert console.post("/admin/rules/new", RULE, allow_redirects=False).status_code == 302
    assert (
        console.post("/admin/rules/new", RULE | {"name": "other"}, allow_redirects=False).status_code == 302
    )
    rules = {r["name"]: r for r in rules_api(gateway)}
    before = audit(gateway)
    rule_id = rules["other"]["id"]
    taken = console.post(f"/admin/rules/{rule_id}", RULE)
    assert taken.status_code == 422 and "jp-email" in field_error(taken.text, "name")
    bad = console.post(f"/admin/rules/{rule_id}", RULE | {"name": "other", "route.0.until": "read"})
    assert bad.status_code == 422 and "email cannot report 'read'" in field_error(bad.text, "route.0.until")
    assert {r["name"]: r for r in rules_api(gateway)} == rules
    assert len(audit(gateway)) == len(before)


@SQLITE
def test_reorder_enable_and_disable(gateway: LocalGateway, admin_user: str) -> None:
    for name, order in (("a-first", 10), ("b-second", 20), ("c-third", 20)):
        body = {"name": name, "order": order, "when": {"country": ["JP"]}, "route": [{"channel": "email"}]}
        assert gateway.call("POST", "/v1/routing-rules", body).status == 201
    ids = {r["name"]: r["id"] for r in rules_api(gateway)}
    console = Console(gateway)

    def order() -> list[tuple[str, int]]:
        return [(r["name"], r["order"]) for r in rules_api(gateway)]

    console.post(f"/admin/rules/{ids['a-first']}/move", {"direction": "down"})
    assert order() == [("b-second", 10), ("a-first", 20), ("c-third", 20)]
    # c-third shares its order with a-first (ties go by name): every rule is renumbered, then swapped.
    console.post(f"/admin/rules/{ids['c-third']}/move", {"direction": "up"})
    assert order() == [("b-second", 10), ("c-third", 20), ("a-first", 30)]
    console.post(f"/admin/rules/{ids['b-second']}/move", {"direction": "up"})  # already first
    assert order() == [("b-second", 10), ("c-third", 20), ("a-first", 30)]
    page = console.get("/admin/rules").text
    assert (
        page.index('data-rule="b-second"')
        < page.index('data-rule="c-third"')
        < page.index('data-rule="a-first"')
    )

    explain = {"to": {"phone": JP_PHONE}}
    assert gateway.call("POST", "/v1/routing/explain", explain).body["rule"]["name"] == "b-second"
    console.post(f"/admin/rules/{ids['b-second']}/enabled", {"enabled": "off"})
    assert gateway.call("POST", "/v1/routing/explain", explain).body["rule"]["name"] == "c-third"
    assert "Enable b-second" in console.get("/admin/rules").text
    console.post(f"/admin/rules/{ids['b-second']}/enabled", {"enabled": "off"})  # already off: no entry
    console.post(f"/admin/rules/{ids['b-second']}/enabled", {"enabled": "on"})
    assert gateway.call("POST", "/v1/routing/explain", explain).body["rule"]["name"] == "b-second"
    assert console.post(f"/admin/rules/{ids['a-first']}/move", {"direction": "sideways"}).status_code == 400

    with store.transaction(gateway.gw.engine) as session:
        key_id = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(gateway.key))).one().id
    entries = [(e.actor, e.action, e.target, e.before, e.after) for e in audit(gateway)]
    assert [e[:3] for e in entries] == [
        (f"api:{key_id}", "rule.create", ids["a-first"]),
        (f"api:{key_id}", "rule.create", ids["b-second"]),
        (f"api:{key_id}", "rule.create", ids["c-third"]),
        ("ada", "rule.reorder", ids["a-first"]),
        ("ada", "rule.reorder", ids["c-third"]),
        ("ada", "rule.disable", ids["b-second"]),
        ("ada", "rule.enable", ids["b-second"]),
    ]
    assert entries[3][3:] == (
        {"order": {"a-first": 10, "b-second": 20}},
        {"order": {"a-first": 20, "b-second": 10}},
    )
    assert entries[4][3:] == ({"order": {"a-first": 20}}, {"order": {"a-first": 30}})  # c-third kept 20
    assert entries[5][3]["enabled"] is True and entries[5][4]["enabled"] is False


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_create_edit_delete_through_the_console_with_the_audit_log(
    gateway: LocalGateway, admin_user: str
) -> None:
    console = Console(gateway)
    extra = {"retry.attempts": "5", "quiet_hours.start": "21:00", "quiet_hours.end": "08:00"}
    extra |= {"allow_fallback": "listed", "allow_fallback_for": "otp"}
    created = console.post("/admin/rules/new", RULE | extra, allow_redirects=False)
    assert created.status_code == 302
    (rule,) = rules_api(gateway)
    assert created.headers["Location"].endswith(f"/admin/rules/{rule['id']}")
    assert rule["retry"] == {"attempts": 5} and rule["quiet_hours"] == {"start": "21:00", "end": "08:00"}
    assert rule["allow_fallback_for"] == ["otp"] and rule["when"] == {"country": ["JP"]}
    # The edit form shows the stored rule; saving it unchanged keeps it the same.
    form = console.get(f"/admin/rules/{rule['id']}").text
    assert (
        'name="retry.attempts" size="8" value="5"' in form
        and 'id="f-allow-listed" name="allow_fallback" value="listed" checked' in form
    )
    edited = RULE | {
        "route.0.channel": "sms",
        "route.0.after": "2m",
        "route.1.channel": "email",
        "retry.attempts": "5",
    }
    assert console.post(f"/admin/rules/{rule['id']}", edited, allow_redirects=False).status_code == 302
    (after,) = rules_api(gateway)
    assert after["route"] == [{"channel": "sms", "after": "2m"}, {"channel": "email"}]
    assert after["quiet_hours"] is None and after["allow_fallback_for"] is None
    page = console.get(f"/admin/rules/{rule['id']}").text  # its history is on the rule's page
    assert "rule.update" in page and "rule.create" in page
    assert console.post(f"/admin/rules/{rule['id']}/delete", {}, allow_redirects=False).status_code == 302
    assert rules_api(gateway) == []
    assert console.get(f"/admin/rules/{rule['id']}").status_code == 404
    entries = audit(gateway)
    assert [(e.actor, e.action) for e in entries] == [
        ("ada", "rule.create"),
        ("ada", "rule.update"),
        ("ada", "rule.delete"),
    ]
    assert (
        entries[0].before is None
        and entries[0].after is not None
        and entries[0].after["route"] == [{"channel": "email"}]
    )
    assert entries[1].before == entries[0].after | {"updated_at": entries[1].before["updated_at"]}
    assert entries[1].after is not None and entries[1].after["route"] == after["route"]
    assert (
        entries[2].before is not None and entries[2].before["name"] == "jp-email" and entries[2].after is None
    )
    log = console.get(f"/admin/audit?target={rule['id']}").text
    assert log.count('data-action="rule.') == 3


@SQLITE
def test_the_explain_of_a_draft_replaces_the_stored_rule_and_saves_nothing(
    gateway: LocalGateway, admin_user: str
) -> None:
    console = Console(gateway)
    assert console.post("/admin/rules/new", RULE, allow_redirects=False).status_code == 302
    (rule,) = rules_api(gateway)
    contact = {"contact.phone": JP_PHONE, "contact.email": "hana@example.com"}

    def explain(fields: dict[str, str]) -> dict[str, Any]:
        answer = console.post("/admin/rules/explain", fields, headers={"Accept": "application/json"})
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    stored = explain(RULE | contact | {"rule_id": rule["id"]})
    assert "Rule: <strong>jp-email</strong> (this draft)" in stored["html"]
    assert re.search(r'<ol id="explain-plan">\s*<li><strong>email</strong>', stored["html"])
    # The draft takes the stored rule's place: with another country, jp-email no longer matches at all.
    moved = explain(RULE | contact | {"rule_id": rule["id"], "when.country": "US"})
    assert "No rule matched" in moved["html"]
    assert re.search(r'<ol id="explain-plan">\s*<li><strong>sms</strong>', moved["html"])
    # A new draft is added beside the stored rules and wins by its lower order.
    new = explain(RULE | contact | {"name": "jp-sms", "order": "5", "route.0.channel": "sms"})
    assert "Rule: <strong>jp-sms</strong> (this draft)" in new["html"]
    # Invalid drafts and contacts name their fields; nothing is explained.
    bad = explain(RULE | contact | {"route.0.until": "read"})
    assert bad["errors"] == {"route.0.until": "email cannot report 'read'"} and "No plan" in bad["html"]
    unparseable = explain(RULE | contact | {"contact.phone": "12"})
    assert list(unparseable["errors"]) == ["contact.phone"] and "No plan" in unparseable["html"]
    assert "Enter a phone" in explain(RULE)["html"]
    # A known contact is offered by id and explained by id.
    known = gateway.call("POST", "/v1/contacts", {"phone": "+819011112222", "name": "Hana"}).body
    assert (
        f'<option value="{known["id"]}">Hana · +819011112222</option>' in console.get("/admin/rules/new").text
    )
    by_id = explain(RULE | {"contact.contact_id": known["id"], "rule_id": rule["id"]})
    assert re.search(r'<ol id="explain-plan">\s*<li><strong>email</strong>', by_id["html"]) is None
    assert "(this draft)" in by_id["html"] and "Nothing can be sent" in by_id["html"]  # no email address
    unknown = explain(RULE | {"contact.contact_id": "ct_nobody"})
    assert list(unknown["errors"]) == ["contact.contact_id"] and "No plan" in unknown["html"]
    # Without JavaScript the Explain button gets the whole page back with the panel filled in.
    page = console.post(
        "/admin/rules/explain", RULE | contact | {"rule_id": rule["id"], "route.0.channel": "sms"}
    )
    assert (
        page.status_code == 200
        and "(this draft)" in page.text
        and 'action="/admin/rules/' + rule["id"] in page.text
    )
    assert rules_api(gateway) == [rule]
    assert gateway.call("GET", "/v1/contacts?phone=%2B819012345678").body["data"] == []  # explain made none
    assert [e.action for e in audit(gateway)] == ["rule.create"]
    # The API's explain is unchanged: the stored rule decides.
    assert (
        gateway.call("POST", "/v1/routing/explain", {"to": {"phone": JP_PHONE}}).body["rule"]["name"]
        == "jp-email"
    )


@SQLITE
def test_the_explain_endpoint_needs_a_session_and_the_csrf_header(
    gateway: LocalGateway, admin_user: str
) -> None:
    anonymous = requests.post(f"{gateway.url}/admin/rules/explain", data=RULE, allow_redirects=False)
    assert anonymous.status_code == 400  # no CSRF token in a cookie-less request
    console = Console(gateway)
    forged = console.web.post(f"{gateway.url}/admin/rules/explain", data=RULE, headers={"X-CSRF-Token": "x"})
    assert forged.status_code == 400
    ok = console.web.post(
        f"{gateway.url}/admin/rules/explain",
        data=RULE,
        headers={"X-CSRF-Token": console.token, "Accept": "application/json"},
    )
    assert ok.status_code == 200 and "html" in ok.json()


def panel(page: Any) -> str:
    text: str = page.locator("#explain-result").inner_text()
    return text


def wait_for_panel(page: Any, expected: str) -> str:
    """The explain panel's text once it contains `expected` (it follows edits after a short pause)."""
    expect(page.locator("#explain-result")).to_contain_text(expected)
    return panel(page)


@SQLITE
def test_rules_in_the_browser_explain_changes_while_editing_then_the_audit_log(
    page: Any, gateway: LocalGateway, admin_user: str
) -> None:
    sign_in(page, gateway)
    page.get_by_role("link", name="Rules").click()
    page.get_by_role("link", name="New rule").click()
    page.get_by_label("Name", exact=True).fill("japan")
    page.get_by_label("Order").fill("10")
    page.get_by_label("Countries").fill("JP")
    page.get_by_label("Step 1 channel").select_option("email")
    page.get_by_label("Phone", exact=True).fill(JP_PHONE)
    page.get_by_label("Email", exact=True).fill("hana@example.com")
    text = wait_for_panel(page, "Rule: japan (this draft)")
    assert re.search(r"Plan\s*email to hana@example.com", text), text
    # Changing the route changes the plan, before anything is saved.
    page.get_by_label("Step 1 channel").select_option("sms")
    text = wait_for_panel(page, f"sms to {JP_PHONE}")
    assert re.search(r"Plan\s*sms to", text), text
    # A second step added with the button.
    page.get_by_role("button", name="Add a step").click()
    page.get_by_label("Step 2 channel").select_option("email")
    wait_for_panel(page, "email to hana@example.com")
    # A country the contact is not in: the draft no longer matches.
    page.get_by_label("Countries").fill("US")
    wait_for_panel(page, "No rule matched")
    page.get_by_label("Countries").fill("JP")
    wait_for_panel(page, "Rule: japan (this draft)")
    # A receipt SMS cannot give: the message appears next to the field as it is chosen.
    page.get_by_label("Step 1 until").select_option("read")
    expect(page.locator("#e-route-0-until")).to_have_text("sms cannot report 'read'")
    expect(page.get_by_label("Step 1 until")).to_have_attribute("aria-invalid", "true")
    assert "No plan" in panel(page)
    page.get_by_label("Step 1 until").select_option("delivered")
    wait_for_panel(page, "Rule: japan (this draft)")
    expect(page.locator("#e-route-0-until")).to_have_text("")
    assert rules_api(gateway) == []  # nothing saved yet
    page.get_by_role("button", name="Save rule").click()
    page.wait_for_url(re.compile(r".*/admin/rules/rule_\w+$"))
    assert "Rule japan created." in page.get_by_role("status").inner_text()
    (rule,) = rules_api(gateway)
    assert rule["route"] == [{"channel": "sms", "until": "delivered"}, {"channel": "email"}]

    # Edit: the stored rule still says sms first while the panel already shows email first.
    page.get_by_label("Email", exact=True).fill("hana@example.com")
    page.get_by_label("Phone", exact=True).fill(JP_PHONE)
    page.get_by_label("Step 1 channel").select_option("email")
    page.get_by_label("Step 1 until").select_option("")
    page.get_by_label("Step 2 channel").select_option("sms")
    text = wait_for_panel(page, f"sms to {JP_PHONE}")
    assert re.search(r"Plan\s*email to hana@example.com.*sms to", text, re.S), text
    assert rules_api(gateway)[0]["route"][0]["channel"] == "sms"
    screenshot(page, "rules-explain")
    page.get_by_role("button", name="Save rule").click()
    page.wait_for_url(f"{gateway.url}/admin/rules/{rule['id']}")
    assert rules_api(gateway)[0]["route"] == [{"channel": "email"}, {"channel": "sms"}]

    page.get_by_role("link", name="Audit log", exact=True).click()
    update = page.locator('tr[data-action="rule.update"]')
    assert update.locator("td").nth(1).inner_text() == "ada"
    route = update.locator("table.changes tr", has_text="route")
    before, after = route.locator("td").nth(0).inner_text(), route.locator("td").nth(1).inner_text()
    assert before.index('"sms"') < before.index('"email"') and after.index('"email"') < after.index('"sms"')
    assert page.locator('tr[data-action="rule.create"]').count() == 1
    screenshot(page, "audit-log")

    # The list, readable at 360 px: nothing wider than the screen.
    page.set_viewport_size({"width": 360, "height": 800})
    for path in ("/admin/rules", f"/admin/rules/{rule['id']}", "/admin/audit"):
        page.goto(f"{gateway.url}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, (path, width)
    page.goto(f"{gateway.url}/admin/rules")
    assert page.get_by_role("link", name="japan").is_visible()


@SQLITE
def test_without_javascript_the_explain_button_and_saving_still_work(
    chromium: Any, gateway: LocalGateway, admin_user: str
) -> None:
    context = chromium.new_context(java_script_enabled=False, viewport={"width": 360, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        sign_in(page, gateway)
        page.goto(f"{gateway.url}/admin/rules/new")
        assert not page.get_by_role("button", name="Add a step").is_visible()
        page.get_by_label("Name", exact=True).fill("japan")
        page.get_by_label("Countries").fill("JP")
        page.get_by_label("Step 1 channel").select_option("email")
        page.get_by_label("Step 1 until").select_option("delivered")  # email cannot report it
        page.get_by_label("Phone", exact=True).fill(JP_PHONE)
        page.get_by_label("Email", exact=True).fill("hana@example.com")
        page.get_by_role("button", name="Explain").click()
        expect(page.locator("#e-route-0-until")).to_have_text("email cannot report 'delivered'")
        assert "No plan" in panel(page) and page.locator("#form-error").count() == 0
        page.get_by_label("Step 1 until").select_option("")
        page.get_by_role("button", name="Explain").click()
        expect(page.locator("#explain-result")).to_contain_text("Rule: japan (this draft)")
        assert page.get_by_label("Phone", exact=True).input_value() == JP_PHONE  # the form kept its values
        page.get_by_label("Step 2 channel").select_option("sms")  # the blank row drawn after the last step
        page.get_by_label("Step 2 until").select_option("read")
        page.get_by_role("button", name="Save rule").click()
        assert "not saved" in page.get_by_role("alert").inner_text()
        assert page.locator("#e-route-1-until").inner_text() == "sms cannot report 'read'"
        assert rules_api(gateway) == []
        page.get_by_label("Step 2 until").select_option("")
        page.get_by_role("button", name="Save rule").click()
        page.wait_for_url(re.compile(r".*/admin/rules/rule_\w+$"))
        assert [s["channel"] for s in rules_api(gateway)[0]["route"]] == ["email", "sms"]
        page.goto(f"{gateway.url}/admin/rules")
        assert page.get_by_role("link", name="japan").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
    finally:
        context.close()


@SQLITE
def test_the_audit_log_pages_to_older_entries_keeping_its_filter(
    gateway: LocalGateway, admin_user: str
) -> None:
    from gateway.admin.audit import SHOWN

    with store.transaction(gateway.gw.engine) as session:  # SHOWN + 5 changes to one key, 3 to another
        for i in range(SHOWN + 5):
            session.add(
                AuditEntry(actor="cli", action="key.create", target="key_one", after={"name": f"n{i}"})
            )
        for i in range(3):
            session.add(
                AuditEntry(actor="cli", action="key.revoke", target="key_two", after={"name": f"t{i}"})
            )
    console = Console(gateway)

    def names(page: str) -> list[str]:
        return re.findall(r"<strong>(n\d+|t\d+)</strong>", page)

    def older_link(page: str) -> str | None:
        found = re.search(r'<a rel="next" href="([^"]+)">Older entries', page)
        return html.unescape(found.group(1)) if found else None

    first = console.get("/admin/audit").text
    assert names(first) == ["t2", "t1", "t0"] + [f"n{i}" for i in range(SHOWN + 4, 7, -1)]
    link = older_link(first)
    assert link is not None and "Newest entries" not in first
    second = console.get(link).text
    assert names(second) == [f"n{i}" for i in range(7, -1, -1)]  # the rest, none twice
    assert older_link(second) is None and "Newest entries" in second

    narrowed = console.get("/admin/audit?target=key_one").text
    assert names(narrowed) == [f"n{i}" for i in range(SHOWN + 4, 4, -1)]
    link = older_link(narrowed)
    assert link is not None and "target=key_one" in link
    assert names(console.get(link).text) == ["n4", "n3", "n2", "n1", "n0"]

    refused = console.get("/admin/audit?cursor=abc")
    assert refused.status_code == 400 and "cursor must be an entry number" in refused.text
