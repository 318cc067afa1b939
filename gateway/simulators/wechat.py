"""A local stand-in for the WeChat Official Account API: access tokens, customer-service messages (with
the 48-hour window and its 5-message limit enforced), template messages with `TEMPLATESENDJOBFINISH`
receipts, and the users' XML messages and (un)subscriptions, signed with the server Token.

Recipients by convention (docs/simulators-social.md): `not_following-…` 43004, `invalid_openid-…` 40003,
`rate_limited-…` 45009, `busy-…` -1, `window_closed-…` 45015; anyone else gets 45015 outside the window
and 45047 past its 5 messages, as WeChat does. `expire_tokens()` makes issued tokens answer 42001.
Run it alone with `python -m gateway.simulators.wechat --port 8815`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import time
from typing import Any, ClassVar
from urllib.parse import urlencode

from gateway.simulators.http_stub import Reply, Request, post
from gateway.simulators.social import SocialSimulator, serve

DEFAULT_APP_ID = "wx0000000000simulator"
DEFAULT_APP_SECRET = "simulator-app-secret"
DEFAULT_TOKEN = "simulator-server-token"
ACCOUNT_ID = "gh_000000simulator"
WINDOW_SECONDS, WINDOW_LIMIT = 48 * 3600, 5
ERRORS: dict[str, tuple[int, str]] = {
    "not_following": (43004, "require subscribe"),
    "invalid_openid": (40003, "invalid openid"),
    "rate_limited": (45009, "reach max api daily quota limit"),
    "busy": (-1, "system error"),
    "window_closed": (45015, "response out of time limit or subscription is canceled"),
}


def wechat_signature(token: str, timestamp: str, nonce: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()


def xml_message(fields: dict[str, Any]) -> bytes:
    """WeChat's flat XML; strings in CDATA, numbers bare."""
    parts = []
    for tag, value in fields.items():
        if isinstance(value, int):
            parts.append(f"<{tag}>{value}</{tag}>")
        else:
            parts.append(f"<{tag}><![CDATA[{str(value).replace(']]>', ']]]]><![CDATA[>')}]]></{tag}>")
    return ("<xml>" + "".join(parts) + "</xml>").encode()


def _err(code: int, message: str) -> Reply:
    return Reply(200, {"errcode": code, "errmsg": message})


class WeChatSimulator(SocialSimulator):
    name: ClassVar[str] = "wechat"
    errors: ClassVar[tuple[str, ...]] = tuple(ERRORS)

    def __init__(
        self,
        app_id: str = DEFAULT_APP_ID,
        app_secret: str = DEFAULT_APP_SECRET,
        token: str = DEFAULT_TOKEN,
        expires_in: int = 7200,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.app_id, self.app_secret, self.token, self.expires_in = app_id, app_secret, token, expires_in
        self.token_requests = 0
        self._tokens: dict[str, float] = {}  # access token -> time.time() it expires
        self._interactions: dict[str, tuple[float, int]] = {}  # openid -> (last interaction, sent since)

    def gateway_settings(self) -> dict[str, Any]:
        """Setting overrides that point the gateway's WeChat channel here."""
        return {
            "wechat_app_id": self.app_id,
            "wechat_app_secret": self.app_secret,
            "wechat_token": self.token,
            "wechat_api_url": self.base_url,
        }

    def expire_tokens(self) -> None:
        """Every token issued so far now answers 42001 (access_token expired)."""
        with self.lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    def route(self, request: Request) -> Reply:
        if request.path == "/cgi-bin/token" and request.method == "GET":
            return self._issue_token(request.query)
        sends = {
            "/cgi-bin/message/custom/send": self._custom,
            "/cgi-bin/message/template/send": self._template,
        }
        if request.path not in sends or request.method != "POST":
            return Reply(404, "Not Found", content_type="text/plain")
        with self.lock:
            expires = self._tokens.get(request.query.get("access_token", ""))
        if expires is None:
            return _err(40001, "invalid credential, access_token is invalid or not latest")
        if expires <= time.time():
            return _err(42001, "access_token expired")
        return sends[request.path](request.json() or {})

    def _issue_token(self, query: dict[str, str]) -> Reply:
        if query.get("grant_type") != "client_credential":
            return _err(40002, "invalid grant_type")
        if query.get("appid") != self.app_id:
            return _err(40013, "invalid appid")
        if not hmac.compare_digest(query.get("secret", ""), self.app_secret):
            return _err(40125, "invalid appsecret")
        token = secrets.token_urlsafe(48)
        with self.lock:
            self.token_requests += 1
            self._tokens[token] = time.time() + self.expires_in
        return Reply(200, {"access_token": token, "expires_in": self.expires_in})

    def _forced_error(self, openid: str) -> Reply | None:
        behaviour = self.outcome(openid)
        if behaviour.kind == "error" and behaviour.error in ERRORS:
            return _err(*ERRORS[behaviour.error])
        return None

    def _custom(self, body: dict[str, Any]) -> Reply:
        openid, text = str(body.get("touser") or ""), (body.get("text") or {}).get("content")
        if not openid or body.get("msgtype") != "text" or not text:
            return _err(44002, "empty post data")
        forced = self._forced_error(openid)
        if forced is not None:
            return forced
        with self.lock:
            last, sent = self._interactions.get(openid, (0.0, 0))
            if time.time() - last > WINDOW_SECONDS:
                return _err(45015, "response out of time limit or subscription is canceled")
            if sent >= WINDOW_LIMIT:
                return _err(45047, "out of response count limit")
            self._interactions[openid] = (last, sent + 1)
        self.record(kind="custom", to=openid, text=text)
        return _err(0, "ok")

    def _template(self, body: dict[str, Any]) -> Reply:
        openid, template_id = str(body.get("touser") or ""), body.get("template_id")
        if not openid:
            return _err(40003, "invalid openid")
        if not template_id:
            return _err(40037, "invalid template_id")
        forced = self._forced_error(openid)
        if forced is not None:
            return forced
        entry = self.record(kind="template", to=openid, template_id=template_id, data=body.get("data") or {})
        msg_id = 200_000_000 + entry["id"]
        if self.webhook_url:
            receipt = {
                "ToUserName": ACCOUNT_ID,
                "FromUserName": openid,
                "CreateTime": int(time.time()),
                "MsgType": "event",
                "Event": "TEMPLATESENDJOBFINISH",
                "MsgID": msg_id,
                "Status": "success",
            }
            self.later(lambda: self.post_xml(receipt))
        return Reply(200, {"errcode": 0, "errmsg": "ok", "msgid": msg_id})

    # -- the users' side -------------------------------------------------------------------------

    def signed(self, body: bytes, query: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        signature = wechat_signature(self.token, timestamp, nonce)
        return {}, {"signature": signature, "timestamp": timestamp, "nonce": nonce}

    def post_xml(self, fields: dict[str, Any], **forge: Any) -> int:
        return self.post_webhook(xml_message(fields), "text/xml", **forge)

    def _from_user(self, openid: str, at: float | None, forge: dict[str, Any], **fields: Any) -> int:
        created = int(time.time() if at is None else at)
        with self.lock:  # any message or subscription opens the 48-hour window again
            if created >= self._interactions.get(openid, (0.0, 0))[0]:
                self._interactions[openid] = (float(created), 0)
        base = {"ToUserName": ACCOUNT_ID, "FromUserName": openid, "CreateTime": created}
        return self.post_xml({**base, **fields}, **forge)

    def user_message(self, openid: str, text: str, at: float | None = None, **forge: Any) -> int:
        """The follower writes (at `at`, a Unix time, to simulate an old message)."""
        msg_id = 6_000_000_000 + self.next_id()
        return self._from_user(openid, at, forge, MsgType="text", Content=text, MsgId=msg_id)

    def subscribe(self, openid: str) -> int:
        return self._from_user(openid, None, {}, MsgType="event", Event="subscribe", EventKey="")

    def unsubscribe(self, openid: str) -> int:
        with self.lock:
            self._interactions.pop(openid, None)
        base = {"ToUserName": ACCOUNT_ID, "FromUserName": openid, "CreateTime": int(time.time())}
        return self.post_xml({**base, "MsgType": "event", "Event": "unsubscribe", "EventKey": ""})

    def verify_url(self, echostr: str = "echo-123", **forge: str) -> tuple[int, str]:
        """The signed GET WeChat makes when the server URL is saved; (status, body)."""
        _, query = self.signed(b"", {})
        query = {**query, "echostr": echostr, **forge}
        status, body = post(f"{self.webhook_url}?{urlencode(query)}", b"", {}, "GET")
        return status, body.decode(errors="replace")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local WeChat Official Account API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8815)
    parser.add_argument("--app-id", default=DEFAULT_APP_ID)
    parser.add_argument("--app-secret", default=DEFAULT_APP_SECRET)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--webhook-url", help="where messages go, e.g. http://127.0.0.1:8000/webhooks/wechat")
    args = parser.parse_args(argv)
    sim = WeChatSimulator(
        args.app_id, args.app_secret, args.token, host=args.host, port=args.port, webhook_url=args.webhook_url
    )
    serve(sim)


if __name__ == "__main__":
    main()
