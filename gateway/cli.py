"""The `gateway` command: serve, worker, demo, keys, rules, check-config."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from gateway import gctune
from gateway.errors import ConfigError, ProblemError

if TYPE_CHECKING:
    from gateway.core import Gateway


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except ConfigError as exc:
        print(f"gateway: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except ProblemError as exc:
        print(f"gateway: {exc.detail or exc.title}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="HTTP API and dispatcher in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--threads", type=int, default=8)
    serve.set_defaults(run=_serve)
    sub.add_parser("worker", help="the dispatcher alone").set_defaults(run=_worker)
    sub.add_parser("demo", help="a guided run on local simulators").set_defaults(run=_demo)
    sub.add_parser("check-config", help="validate settings; list channels").set_defaults(run=_check)
    keys = sub.add_parser("keys", help="API keys").add_subparsers(required=True, metavar="ACTION")
    create = keys.add_parser("create", help="create a key and print it")
    create.add_argument("--scope", action="append", choices=["send", "read", "admin"], required=True)
    create.add_argument("--name", required=True)
    create.set_defaults(run=_keys_create)
    keys.add_parser("list", help="one line per key").set_defaults(run=_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("id")
    revoke.set_defaults(run=_keys_revoke)
    rules = sub.add_parser("rules", help="routing rules").add_subparsers(required=True, metavar="ACTION")
    load = rules.add_parser("load", help="create or replace rules from a TOML file")
    load.add_argument("file", type=Path)
    load.set_defaults(run=_rules_load)
    replies = sub.add_parser("auto-replies", help="auto-reply rules")
    autos = replies.add_subparsers(required=True, metavar="ACTION")
    load = autos.add_parser("load", help="create or replace auto-replies from a TOML file")
    load.add_argument("file", type=Path)
    load.set_defaults(run=_auto_replies_load)
    admin = sub.add_parser("admin", help="console users").add_subparsers(required=True, metavar="ACTION")
    for action, helptext in (
        ("create-user", "create a console user (asks for the password)"),
        ("set-password", "change a user's password (ends their sessions)"),
        ("delete-user", "delete a console user (ends their sessions)"),
    ):
        cmd = admin.add_parser(action, help=helptext)
        cmd.add_argument("name")
        if action != "delete-user":
            cmd.add_argument(
                "--password-stdin", action="store_true", help="read the password from stdin (for scripts)"
            )
        cmd.set_defaults(run=_admin_user, action=action)
    admin.add_parser("list-users", help="one line per console user").set_defaults(run=_admin_list)
    return parser


def _configure_logging(level: str) -> None:
    """Log at `level` in GATEWAY_LOG_FORMAT (text or json), redacted (gateway.logs)."""
    from gateway.logs import configure
    from gateway.settings import load_settings

    configure(level, load_settings())


def _stop_on_sigterm(stop: threading.Event | None = None) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        if stop is not None:
            stop.set()
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _serve(args: argparse.Namespace) -> int:
    from waitress.server import create_server

    from gateway import create_app
    from gateway.dispatch import Dispatcher
    from gateway.inbound.email import InboundEmailServer
    from gateway.scheduler import start_scheduler

    app = create_app()
    gw = app.extensions["gateway"]
    _configure_logging(gw.settings.log_level)
    dispatcher = Dispatcher(gw)
    gw.nudge = dispatcher.nudge
    dispatcher.start()
    scheduler = start_scheduler(dispatcher)
    inbound_email = None
    if gw.settings.inbound_smtp_port is not None:
        host, port = gw.settings.inbound_smtp_host, gw.settings.inbound_smtp_port
        inbound_email = InboundEmailServer(gw, host, port).start()
        print(f"gateway: receiving email on smtp://{host}:{port}", flush=True)
    server = create_server(app, host=args.host, port=args.port, threads=args.threads)
    print(
        f"gateway: serving on http://{args.host}:{getattr(server, 'effective_port', args.port)}", flush=True
    )
    _stop_on_sigterm()
    gctune.settle()
    try:
        server.run()
    except KeyboardInterrupt:
        print("gateway: stopping", flush=True)
    finally:
        scheduler.shutdown(wait=False)
        server.close()
        if inbound_email is not None:
            inbound_email.stop()
        dispatcher.stop()
    return 0


def _worker(_args: argparse.Namespace) -> int:
    from gateway.core import build_gateway
    from gateway.dispatch import Dispatcher
    from gateway.scheduler import start_scheduler
    from gateway.settings import load_settings

    gw = build_gateway(load_settings())
    _configure_logging(gw.settings.log_level)
    dispatcher = Dispatcher(gw)
    dispatcher.start()
    scheduler = start_scheduler(dispatcher)
    stop = threading.Event()
    _stop_on_sigterm(stop)
    gctune.settle()
    print(f"gateway: worker {dispatcher.worker} running", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    scheduler.shutdown(wait=False)
    dispatcher.stop()
    return 0


def _demo(_args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo()


def _check(_args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from gateway.channels import channel_statuses
    from gateway.settings import load_settings

    settings = load_settings()
    print(f"database: {make_url(settings.database_url).render_as_string(hide_password=True)}")
    for status in channel_statuses(settings):
        state = "enabled" if status.enabled else "disabled"
        print(f"{status.name}: {state} ({status.reason})")
    return 0


def _gateway() -> Gateway:
    from gateway.core import build_gateway
    from gateway.settings import load_settings

    return build_gateway(load_settings())


def _keys_create(args: argparse.Namespace) -> int:
    from gateway import store
    from gateway.services.keys import create_key

    gw = _gateway()
    with store.transaction(gw.engine) as session:
        _, secret = create_key(session, gw, args.name, args.scope, actor="cli")
    print(secret)
    return 0


def _keys_list(_args: argparse.Namespace) -> int:
    from gateway import store
    from gateway.services.keys import format_key_line, list_keys

    gw = _gateway()
    with store.transaction(gw.engine) as session:
        for key in list_keys(session):
            print(format_key_line(key))
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from gateway import store
    from gateway.services.keys import revoke_key

    gw = _gateway()
    with store.transaction(gw.engine) as session:
        revoke_key(session, gw, args.id, actor="cli")
    print(f"revoked {args.id}")
    return 0


def _rules_load(args: argparse.Namespace) -> int:
    from gateway import store
    from gateway.services.rules import load_rules_file

    if not args.file.exists():
        print(f"gateway: {args.file} does not exist", file=sys.stderr)
        return 1
    gw = _gateway()
    with store.transaction(gw.engine) as session:
        names = load_rules_file(session, gw, args.file)
    print(f"loaded {len(names)} rules: {', '.join(names)}")
    return 0


def _auto_replies_load(args: argparse.Namespace) -> int:
    from gateway import store
    from gateway.services.auto_replies import load_auto_replies_file

    if not args.file.exists():
        print(f"gateway: {args.file} does not exist", file=sys.stderr)
        return 1
    gw = _gateway()
    with store.transaction(gw.engine) as session:
        names = load_auto_replies_file(session, gw, args.file)
    print(f"loaded {len(names)} auto-replies: {', '.join(names)}")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise ProblemError(422, "validation-error", "Invalid request", "the passwords differ")
    return first


def _admin_user(args: argparse.Namespace) -> int:
    from gateway import store
    from gateway.services import admin_users

    password = "" if args.action == "delete-user" else _read_password(args)
    gw = _gateway()
    with store.transaction(gw.engine) as session:
        if args.action == "create-user":
            admin_users.create_user(session, args.name, password, gw.clock())
        elif args.action == "set-password":
            admin_users.set_password(session, args.name, password)
        else:
            admin_users.delete_user(session, args.name)
        admin_users.audit(session, "cli", f"user.{args.action}", args.name, None, None, gw.clock())
    print(
        {"create-user": "created", "set-password": "changed the password of", "delete-user": "deleted"}[
            args.action
        ]
        + f" {args.name}"
    )
    return 0


def _admin_list(_args: argparse.Namespace) -> int:
    from gateway import store
    from gateway.services import admin_users
    from gateway.timeutil import rfc3339

    gw = _gateway()
    with store.transaction(gw.engine) as session:
        for user in admin_users.list_users(session):
            last = rfc3339(user.last_login_at) if user.last_login_at else "never"
            print(f"{user.name}\tcreated {rfc3339(user.created_at)}\tlast sign-in {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
