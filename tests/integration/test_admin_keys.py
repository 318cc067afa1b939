"""The console's API keys and webhook subscriptions over a real server: secrets shown once and never audited,
a revoked key refused by the API at once, validation errors next to their fields."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from sqlmodel import col, select

from gateway import store
from gateway.local import LocalGateway
from gateway.models import ApiKey, AuditEntry, WebhookSubscription
from tests.conftest import ADMIN_PASSWORD, screenshot, sign_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def console(local: LocalGateway) -> tuple[requests.Session, str]:
    """A signed-in console session and its CSRF token."""
    web = requests.Session()
    form = web.get(f"{local.url}/admin/login")
    answer = web.post(
        f"{local.url}/admin/login",
        data={"name": "ada", "password": ADMIN_PASSWORD, "csrf_token": _token(form.text)},
        allow_redirects=False,
    )
    assert answer.status_code == 302, answer.text
    return web, _token(web.get(f"{local.url}/admin/keys").text)


def audit_text(local: LocalGateway) -> tuple[list[tuple[str, str]], str]:
    """(actor, action) of every entry, and every entry's before and after as one JSON text."""
    with store.transaction(local.gw.engine) as session:
        entries = list(session.exec(select(AuditEntry).order_by(col(AuditEntry.id))))
    text = json.dumps([[e.before, e.after] for e in entries])
    return [(e.actor, e.action) for e in entries], text


def error_next_to(page: str, field: str) -> str:
    ident = field.replace(".", "-")
    marked = re.search(rf'aria-describedby="e-{ident}" aria-invalid="true"', page)
    assert marked, f"{field} is not marked invalid"
    following = re.compile(r'<p class="field-error" id="([^"]+)"[^>]*>([^<]*)</p>').search(page, marked.end())
    assert following and following.group(1) == f"e-{ident}", f"no error next to {field}"
    return following.group(2)


def test_invalid_keys_and_subscriptions_are_422_next_to_the_field(
    gateway: LocalGateway, admin_user: str
) -> None:
    web, token = console(gateway)
    with store.transaction(gateway.gw.engine) as session:
        keys_before = len(list(session.exec(select(ApiKey))))
    no_scope = web.post(f"{gateway.url}/admin/keys", data={"csrf_token": token, "name": "billing"})
    assert no_scope.status_code == 422 and "at least 1 item" in error_next_to(no_scope.text, "scopes")
    assert 'value="billing"' in no_scope.text
    no_name = web.post(f"{gateway.url}/admin/keys", data={"csrf_token": token, "name": " ", "scopes": "send"})
    assert no_name.status_code == 422 and "at least 1 character" in error_next_to(no_name.text, "name")
    bad_scope = web.post(
        f"{gateway.url}/admin/keys", data={"csrf_token": token, "name": "x", "scopes": "root"}
    )
    assert bad_scope.status_code == 422 and "Input should be" in error_next_to(bad_scope.text, "scopes")

    hooks = f"{gateway.url}/admin/webhooks"
    bad_url = web.post(hooks, data={"csrf_token": token, "url": "ftp://x", "events": "message.status"})
    assert bad_url.status_code == 422 and "should match pattern" in error_next_to(bad_url.text, "url")
    no_events = web.post(hooks, data={"csrf_token": token, "url": "https://biz.example/h"})
    assert no_events.status_code == 422 and error_next_to(no_events.text, "events")
    respond = web.post(
        hooks,
        data={
            "csrf_token": token,
            "url": "https://biz.example/h",
            "events": "message.status",
            "respond": "on",
        },
    )
    assert respond.status_code == 422
    assert "respond needs message.inbound" in error_next_to(respond.text, "respond")
    with store.transaction(gateway.gw.engine) as session:
        assert len(list(session.exec(select(ApiKey)))) == keys_before
        assert list(session.exec(select(WebhookSubscription))) == []
    assert audit_text(gateway)[0] == []


def test_secrets_are_shown_once_and_never_audited(gateway: LocalGateway, admin_user: str) -> None:
    web, token = console(gateway)
    made = web.post(
        f"{gateway.url}/admin/keys", data={"csrf_token": token, "name": "crm", "scopes": ["read"]}
    )
    assert made.status_code == 200
    secret = re.search(r'id="new-key-secret" readonly value="(gw_[^"]+)"', made.text)
    assert secret
    assert gateway.call("GET", "/v1/messages", key=secret.group(1)).status == 200
    assert secret.group(1) not in web.get(f"{gateway.url}/admin/keys").text
    hook = web.post(
        f"{gateway.url}/admin/webhooks",
        data={
            "csrf_token": token,
            "url": "https://biz.example/h",
            "events": ["message.inbound"],
            "respond": "on",
        },
    )
    whsec = re.search(r'id="new-sub-secret" readonly value="(whsec_[^"]+)"', hook.text)
    assert hook.status_code == 200 and whsec
    assert whsec.group(1) not in web.get(f"{gateway.url}/admin/webhooks").text
    (sub,) = gateway.call("GET", "/v1/webhooks").body["data"]
    assert sub["url"] == "https://biz.example/h" and sub["respond"] is True and "secret" not in sub
    with store.transaction(gateway.gw.engine) as session:
        key = session.exec(select(ApiKey).where(ApiKey.name == "crm")).one()
    web.post(f"{gateway.url}/admin/keys/{key.id}/revoke", data={"csrf_token": token})
    web.post(f"{gateway.url}/admin/webhooks/{sub['id']}/delete", data={"csrf_token": token})
    assert gateway.call("GET", "/v1/webhooks").body["data"] == []
    # The API's own changes are audited too, naming the key.
    api_hook = gateway.call(
        "POST", "/v1/webhooks", {"url": "https://biz.example/2", "events": ["message.status"]}
    )
    assert api_hook.status == 201
    entries, text = audit_text(gateway)
    assert entries[:4] == [
        ("ada", "key.create"),
        ("ada", "webhook.create"),
        ("ada", "key.revoke"),
        ("ada", "webhook.delete"),
    ]
    assert entries[4][0].startswith("api:key_") and entries[4][1] == "webhook.create"
    for hidden in (secret.group(1), whsec.group(1), api_hook.body["secret"], key.key_hash):
        assert hidden not in text
    page = web.get(f"{gateway.url}/admin/audit").text
    assert "key.revoke" in page and "crm" in page and secret.group(1) not in page


def test_keys_and_webhooks_in_the_browser(page: Any, gateway: LocalGateway, admin_user: str) -> None:
    sign_in(page, gateway)
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("billing")
    page.get_by_label("send").check()
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Key", exact=True).input_value()
    assert secret.startswith("gw_") and "shown this once" in page.locator("#new-key").inner_text()
    assert gateway.call("GET", "/v1/messages", key=secret).status == 200
    screenshot(page, "keys")
    page.get_by_role("link", name="API keys").click()  # a fresh page: the secret is gone
    assert page.locator("#new-key").count() == 0 and secret not in page.content()
    row = page.locator("tr", has_text="billing")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=re.compile("^Revoke billing")).click()
    page.wait_for_url(f"{gateway.url}/admin/keys")
    assert "revoked" in page.get_by_role("status").inner_text()
    assert "revoked" in page.locator("tr", has_text="billing").inner_text()
    refused = gateway.call("GET", "/v1/messages", key=secret)
    assert refused.status == 401 and refused.body["type"] == "unauthorized"
    # Dismissing the question revokes nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("tr", has_text="local-admin").get_by_role("button").click()
    assert gateway.call("GET", "/v1/messages").status == 200

    page.get_by_role("link", name="Webhooks").click()
    page.get_by_label("URL").fill("https://biz.example/hooks/gateway")
    page.get_by_label("message.status").check()
    page.get_by_role("button", name="Subscribe").click()
    whsec = page.get_by_label("Signing secret").input_value()
    assert whsec.startswith("whsec_")
    (sub,) = gateway.call("GET", "/v1/webhooks").body["data"]
    assert sub["events"] == ["message.status"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr", has_text="biz.example/hooks/gateway").get_by_role("button", name="Delete").click()
    page.wait_for_url(f"{gateway.url}/admin/webhooks")
    assert "No subscriptions." in page.content()
    assert gateway.call("GET", "/v1/webhooks").body["data"] == []
    page.get_by_role("link", name="Audit log").click()
    assert page.locator('tr[data-action="webhook.delete"]').count() == 1
    assert whsec not in page.content() and secret not in page.content()
