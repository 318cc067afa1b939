"""Console sign-in over a real WSGI server: sessions, CSRF, lock-out, deleted users, API keys refused."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import requests

from gateway import store
from gateway.local import LocalGateway
from gateway.models import AdminUser, AuditEntry
from gateway.services import admin_users
from tests.conftest import ADMIN_PASSWORD, screenshot, sign_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _post_login(
    web: requests.Session, local: LocalGateway, name: str, password: str, query: str = ""
) -> requests.Response:
    """Fetch the sign-in form (for its CSRF token) and post it, without following the redirect."""
    form = web.get(f"{local.url}/admin/login")
    return web.post(
        f"{local.url}/admin/login{query}",
        data={"name": name, "password": password, "csrf_token": _token(form.text)},
        allow_redirects=False,
    )


def _signed_in(local: LocalGateway, name: str = "ada", password: str = ADMIN_PASSWORD) -> requests.Session:
    web = requests.Session()
    answer = _post_login(web, local, name, password)
    assert answer.status_code == 302, answer.text
    assert answer.headers["Location"].endswith("/admin/")
    return web


def test_pages_need_a_session(gateway: LocalGateway) -> None:
    answer = requests.get(f"{gateway.url}/admin/", allow_redirects=False)
    assert answer.status_code == 302
    assert "/admin/login" in answer.headers["Location"]


def test_sign_in_sets_a_protected_cookie_and_sign_out_ends_it(gateway: LocalGateway, admin_user: str) -> None:
    web = requests.Session()
    answer = _post_login(web, gateway, admin_user, ADMIN_PASSWORD)
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # the public URL is http here
    home = web.get(f"{gateway.url}/admin/", allow_redirects=False)
    assert home.status_code == 200 and admin_user in home.text
    assert "frame-ancestors 'none'" in home.headers["Content-Security-Policy"]
    web.post(f"{gateway.url}/admin/logout", data={"csrf_token": _token(home.text)})
    assert web.get(f"{gateway.url}/admin/", allow_redirects=False).status_code == 302


def test_secure_cookie_when_the_public_url_is_https(make_gateway: Any) -> None:
    local = make_gateway(public_url="https://gateway.example")
    with store.transaction(local.gw.engine) as session:
        admin_users.create_user(session, "ada", ADMIN_PASSWORD, local.gw.clock())
    app = local.app
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_a_post_without_the_csrf_token_is_400_and_changes_nothing(
    gateway: LocalGateway, admin_user: str
) -> None:
    web = requests.Session()
    web.get(f"{gateway.url}/admin/login")
    answer = web.post(
        f"{gateway.url}/admin/login",
        data={"name": admin_user, "password": ADMIN_PASSWORD},
        allow_redirects=False,
    )
    assert answer.status_code == 400
    assert "security token" in answer.text
    assert web.get(f"{gateway.url}/admin/", allow_redirects=False).status_code == 302  # not signed in
    signed = _signed_in(gateway)
    forged = signed.post(f"{gateway.url}/admin/logout", data={"csrf_token": "forged"}, allow_redirects=False)
    assert forged.status_code == 400
    assert signed.get(f"{gateway.url}/admin/", allow_redirects=False).status_code == 200  # still signed in


def test_a_deleted_user_s_session_no_longer_works(gateway: LocalGateway, admin_user: str) -> None:
    web = _signed_in(gateway)
    assert web.get(f"{gateway.url}/admin/", allow_redirects=False).status_code == 200
    with store.transaction(gateway.gw.engine) as session:
        admin_users.delete_user(session, admin_user)
    assert web.get(f"{gateway.url}/admin/", allow_redirects=False).status_code == 302
    # A new user of the same name does not inherit the old cookie either.
    with store.transaction(gateway.gw.engine) as session:
        admin_users.create_user(session, admin_user, ADMIN_PASSWORD, gateway.gw.clock())
    assert web.get(f"{gateway.url}/admin/", allow_redirects=False).status_code == 302


def test_a_password_change_ends_other_sessions(gateway: LocalGateway, admin_user: str) -> None:
    web = _signed_in(gateway)
    with store.transaction(gateway.gw.engine) as session:
        admin_users.set_password(session, admin_user, "another long passphrase")
    assert web.get(f"{gateway.url}/admin/", allow_redirects=False).status_code == 302
    _signed_in(gateway, password="another long passphrase")


def test_lock_out_after_repeated_failures(gateway: LocalGateway, admin_user: str) -> None:
    web = requests.Session()
    for _ in range(admin_users.MAX_FAILURES):
        wrong = _post_login(web, gateway, admin_user, "wrong password!")
        assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    locked = _post_login(web, gateway, admin_user, ADMIN_PASSWORD)
    assert locked.status_code == 401 and "locked" in locked.text
    with store.transaction(gateway.gw.engine) as session:
        user = admin_users.find_user(session, admin_user)
        assert user.locked_until is not None


def test_unknown_names_and_api_keys_are_not_passwords(gateway: LocalGateway, admin_user: str) -> None:
    key = gateway.new_key("admin")
    web = requests.Session()
    for name, password in (("nobody", ADMIN_PASSWORD), (admin_user, key)):
        form = web.get(f"{gateway.url}/admin/login")
        answer = web.post(
            f"{gateway.url}/admin/login",
            data={"name": name, "password": password, "csrf_token": _token(form.text)},
        )
        assert answer.status_code == 401 and "Wrong name or password" in answer.text
    # An API key in the Authorization header does not open the console either.
    answer = requests.get(
        f"{gateway.url}/admin/", headers={"Authorization": f"Bearer {key}"}, allow_redirects=False
    )
    assert answer.status_code == 302


def test_next_only_goes_inside_the_console(gateway: LocalGateway, admin_user: str) -> None:
    answer = _post_login(requests.Session(), gateway, admin_user, ADMIN_PASSWORD, "?next=//evil.example/")
    assert answer.headers["Location"].endswith("/admin/")


def test_cli_creates_lists_and_deletes_users(database_url: str, tmp_path: Any) -> None:
    env = {"GATEWAY_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "admin", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=tmp_path,
        )

    short = run("create-user", "bob", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 12" in short.stderr
    made = run("create-user", "bob", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    again = run("create-user", "bob", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    listed = run("list-users")
    assert listed.stdout.startswith("bob\t")
    from sqlalchemy import create_engine
    from sqlmodel import Session, select

    engine = create_engine(database_url)
    with Session(engine) as session:
        user = session.exec(select(AdminUser)).one()
        assert user.password_hash.startswith("$argon2id$") and ADMIN_PASSWORD not in user.password_hash
        assert [e.action for e in session.exec(select(AuditEntry))] == ["user.create-user"]
    assert run("delete-user", "bob").returncode == 0
    assert run("list-users").stdout == ""
    engine.dispose()


def test_sign_in_in_the_browser(page: Any, gateway: LocalGateway, admin_user: str) -> None:
    page.goto(f"{gateway.url}/admin/login")
    page.get_by_label("Name").fill(admin_user)
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_role("button", name="Sign in").click()
    assert "Wrong name or password" in page.get_by_role("alert").inner_text()
    screenshot(page, "login")
    # The form works from the keyboard alone: focus moves name → password, Enter signs in.
    page.get_by_label("Name").fill("")
    page.get_by_label("Name").focus()
    page.keyboard.type(admin_user)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type(ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{gateway.url}/admin/")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{gateway.url}/admin/login")
    sign_in(page, gateway)
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{gateway.url}/admin/login")
