"""The ``linkloop`` command: serve, merchant, token, user, product, detect, stats."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from .settings import ConfigError, Settings, load_settings

__all__ = ["CliError", "check_domains", "main", "read_password"]

_TTL = re.compile(r"(\d+)([smhd]?)")
_TTL_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MERCHANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{1,63}")
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _run(coro: Awaitable[int]) -> int:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _with_store(settings: Settings, work: Callable[[Any], Awaitable[int]]) -> int:
    from .store import open_store

    store = await open_store(settings)
    try:
        return await work(store)
    finally:
        await store.close()


# --- serve --------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import create_app
    from .demo import demo_ctx
    from .logs import configure_logging

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["server__host"] = args.host
    if args.port is not None:
        overrides["server__port"] = args.port
    settings = _settings(args).with_overrides(**overrides)
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    if args.workers > 1:
        return _supervise(args, settings)
    configure_logging(settings["log.level"], settings["log.format"])
    app = create_app(settings, worker=args.worker_index)
    if args.demo and args.worker_index == 0:
        app.cleanup_ctx.append(demo_ctx)
    loop = _new_loop()
    web.run_app(app, host=settings["server.host"], port=settings["server.port"],
                access_log=None, print=lambda msg: print(msg, file=sys.stderr), loop=loop,
                reuse_port=args.worker_index > 0 or args.reuse_port)
    return 0


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """``serve --workers N``: N processes on one port (SO_REUSEPORT); the kernel spreads
    connections. SIGTERM or SIGINT is passed on to every worker, which drains and writes
    its clicks before exiting; a worker that dies takes the others down with it."""
    import signal
    import subprocess
    import time

    if not settings["server.port"]:
        raise CliError("--workers needs a fixed --port")
    base = [sys.executable, "-m", "gateway"]
    if args.config:
        base += ["--config", args.config]
    base += ["serve", "--host", settings["server.host"], "--port", str(settings["server.port"])]
    if args.demo:
        base.append("--demo")
    workers = [subprocess.Popen([*base, "--reuse-port", "--worker-index", str(i)])
               for i in range(args.workers)]

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        # Once: a worker that has drained and is exiting must not get a second SIGTERM,
        # which would find Python's default handler back in place and kill it (-15).
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(w.poll() is None for w in workers):
        time.sleep(0.2)
    stop(signal.SIGTERM, None)
    codes = [w.wait() for w in workers]
    return max(codes, key=abs)


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (the fastest loop here), the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


# --- merchant create ------------------------------------------------------------------------
def cmd_merchant_create(args: argparse.Namespace) -> int:
    from .store import Merchant, MerchantExists

    if not _MERCHANT_ID.fullmatch(args.id):
        raise CliError("merchant id must be 2-64 of a-z, 0-9, - and _")
    domains = check_domains(args.domain)

    async def work(store: Any) -> int:
        try:
            merchant = await store.create_merchant(Merchant(args.id, args.name, domains))
        except MerchantExists:
            raise CliError(f"merchant {args.id!r} already exists") from None
        print(json.dumps({"id": merchant.id, "name": merchant.name,
                          "domains": list(merchant.domains)}, ensure_ascii=False))
        return 0

    return _run(_with_store(_settings(args), work))


def check_domains(given: Sequence[str]) -> tuple[str, ...]:
    """``--domain`` values as stored (lower case, no trailing dot); CliError for a non-host."""
    domains = tuple(d.lower().rstrip(".") for d in given)
    for domain in domains:
        if not _DOMAIN.fullmatch(domain):
            raise CliError(f"--domain {domain!r} is not a host name like shop.example.com")
    return domains


# --- token ----------------------------------------------------------------------------------
def parse_ttl(text: str) -> int:
    match = _TTL.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise CliError(f"--ttl {text!r}: use a number with s, m, h or d, e.g. 30d")
    return int(match.group(1)) * _TTL_UNIT[match.group(2)]


def cmd_token(args: argparse.Namespace) -> int:
    from .auth import TokenService
    from .keys import auth_secret

    settings = _settings(args)
    ttl = parse_ttl(args.ttl) if args.ttl else settings["auth.token_ttl_days"] * 86400

    async def work(store: Any) -> int:
        if await store.get_merchant(args.merchant) is None:
            raise CliError(f"no merchant {args.merchant!r}: create it with `linkloop merchant "
                           "create` first")
        tokens = TokenService(auth_secret(settings), settings["auth.audience"])
        print(tokens.mint(args.merchant, args.role, ttl))
        return 0

    return _run(_with_store(settings, work))


# --- user create ----------------------------------------------------------------------------
def read_password() -> str:
    """From the terminal (asked twice), or the first line of stdin when it is not one."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    password = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != password:
        raise CliError("the two passwords differ")
    return password


def cmd_user_create(args: argparse.Namespace) -> int:
    from .store import StoreError, User, UserExists
    from .users import check_password, hash_password, normalize_email

    try:
        email = normalize_email(args.email)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    password = read_password()
    try:
        check_password(password)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    async def work(store: Any) -> int:
        if await store.get_merchant(args.merchant) is None:
            raise CliError(f"no merchant {args.merchant!r}: create it with `linkloop merchant "
                           "create` first")
        try:
            user = await store.create_user(User(email, args.merchant, args.role,
                                                hash_password(password)))
        except UserExists:
            raise CliError(f"a user {email!r} already exists") from None
        except StoreError as exc:
            raise CliError(str(exc)) from None
        print(json.dumps({"email": user.email, "merchant": user.merchant_id,
                          "role": user.role}, ensure_ascii=False))
        return 0

    return _run(_with_store(_settings(args), work))


# --- user list, user unlock -------------------------------------------------------------------
def _when(moment: float | None) -> str | None:
    """A stored moment as ISO 8601 in UTC, for people reading the output."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds") if moment else None


def cmd_user_list(args: argparse.Namespace) -> int:
    import time

    async def work(store: Any) -> int:
        if await store.get_merchant(args.merchant) is None:
            raise CliError(f"no merchant {args.merchant!r}")
        now = time.time()
        for user in await store.list_users(args.merchant):
            locked = user.locked(now)
            print(json.dumps({
                "email": user.email, "merchant": user.merchant_id, "role": user.role,
                "locked": locked, "locked_until": _when(user.locked_until) if locked else None,
                "failed_logins": user.failed_logins,
                "last_login_at": _when(user.last_login_at)}, ensure_ascii=False))
        return 0

    return _run(_with_store(_settings(args), work))


def cmd_user_unlock(args: argparse.Namespace) -> int:
    import time

    from .users import normalize_email

    try:
        email = normalize_email(args.email)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    async def work(store: Any) -> int:
        before = await store.unlock_user(email)
        if before is None:
            raise CliError(f"no user {email!r}")
        print(json.dumps({"email": email, "merchant": before.merchant_id,
                          "was_locked": before.locked(time.time()), "locked": False},
                         ensure_ascii=False))
        return 0

    return _run(_with_store(_settings(args), work))


# --- detect ---------------------------------------------------------------------------------
def cmd_detect(args: argparse.Namespace) -> int:
    from .detect import Detector

    detector = Detector()
    if args.ua is not None:
        print(json.dumps(detector.user_agent(args.ua).as_json()))
        return 0
    out = sys.stdout
    for line in sys.stdin:
        ua = line.rstrip("\r\n")
        out.write(json.dumps(detector.user_agent(ua).as_json()))
        out.write("\n")
    return 0


# --- stats ----------------------------------------------------------------------------------
def cmd_stats(args: argparse.Namespace) -> int:
    from .clock import DayClock
    from .stats import StatsQueryError, parse_stats_query, rows_csv, stats_answer

    settings = _settings(args)
    clock = DayClock(settings["stats.timezone"])
    try:
        query = parse_stats_query(
            {"from": args.from_day, "to": args.to_day, "by": args.by,
             "product": args.product, "platform": args.platform},
            clock.today())
    except StatsQueryError as exc:
        raise CliError(f"--{exc.field}: {exc.message}") from None

    async def work(store: Any) -> int:
        if await store.get_merchant(args.merchant) is None:
            raise CliError(f"no merchant {args.merchant!r}")
        answer = await stats_answer(store, args.merchant, query, clock.timezone)
        if args.csv:
            sys.stdout.write(rows_csv(query.by, answer["rows"], clock.timezone))
        else:
            print(json.dumps(answer, ensure_ascii=False))
        return 0

    return _run(_with_store(settings, work))


# --- migrate, export, import ----------------------------------------------------------------
def cmd_migrate(args: argparse.Namespace) -> int:
    """Opening storage applies every pending migration; say where it stands."""
    settings = _settings(args)

    async def work(store: Any) -> int:
        engine = "postgresql" if type(store).__name__ == "PostgresStore" else "sqlite"
        print(json.dumps({"engine": engine, "schema_version": await store.schema_version()}))
        return 0

    return _run(_with_store(settings, work))


def cmd_export(args: argparse.Namespace) -> int:
    import os

    from .transfer import TransferError, export_merchant

    async def work(store: Any) -> int:
        out: TextIO = sys.stdout
        if args.out:
            # The file holds the merchant's secrets: readable by its owner only.
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            out = os.fdopen(fd, "w", encoding="utf-8")
        try:
            async for line in export_merchant(store, args.merchant):
                out.write(line)
        except TransferError as exc:
            raise CliError(str(exc)) from None
        finally:
            if out is not sys.stdout:
                out.close()
        return 0

    return _run(_with_store(_settings(args), work))


def cmd_import(args: argparse.Namespace) -> int:
    from .transfer import TransferError, import_merchant

    try:
        with (open(args.file, encoding="utf-8") if args.file != "-" else sys.stdin) as fh:
            lines = fh.readlines()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None

    async def work(store: Any) -> int:
        try:
            counts = await import_merchant(store, lines)
        except TransferError as exc:
            raise CliError(str(exc)) from None
        print(json.dumps(counts))
        return 0

    return _run(_with_store(_settings(args), work))


# --- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .auth import ROLES
    from .stats import GROUPINGS

    parser = argparse.ArgumentParser(prog="linkloop", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: $LINKLOOP_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=argparse.SUPPRESS, help="TOML settings file")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--demo", action="store_true",
                       help="seed a demo merchant and products; print a token and links")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes sharing the port (SO_REUSEPORT); use PostgreSQL")
    # Set by --workers for each process it starts.
    serve.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    merchant = sub.add_parser("merchant", help="manage merchants")
    msub = merchant.add_subparsers(dest="action", required=True)
    create = msub.add_parser("create", help="create a merchant")
    create.add_argument("id")
    create.add_argument("--name", required=True)
    create.add_argument("--domain", action="append", default=[],
                        help="a domain web targets may use (repeatable; subdomains included)")
    create.set_defaults(func=cmd_merchant_create)

    token = sub.add_parser("token", help="print a signed API token")
    token.add_argument("--merchant", required=True)
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--ttl", help="lifetime, e.g. 30d, 12h (default: auth.token_ttl_days)")
    token.set_defaults(func=cmd_token)

    user = sub.add_parser("user", help="manage dashboard logins")
    usub = user.add_subparsers(dest="action", required=True)
    user_create = usub.add_parser(
        "create", help="create a staff login; the password comes from stdin when it is not "
        "a terminal")
    user_create.add_argument("email")
    user_create.add_argument("--merchant", required=True)
    user_create.add_argument("--role", required=True, choices=("marketing", "merchant"))
    user_create.set_defaults(func=cmd_user_create)
    user_list = usub.add_parser("list", help="one merchant's staff logins, one JSON a line")
    user_list.add_argument("--merchant", required=True)
    user_list.set_defaults(func=cmd_user_list)
    user_unlock = usub.add_parser(
        "unlock", help="lift a login's lock after too many wrong passwords, at once")
    user_unlock.add_argument("email")
    user_unlock.set_defaults(func=cmd_user_unlock)
    from .cli_console import add_commands

    add_commands(sub, msub, usub)  # product ..., merchant list|update, user reset-password

    detect = sub.add_parser("detect", help="classify User-Agents")
    detect.add_argument("--ua", help="one User-Agent; without it, one a line on stdin")
    detect.set_defaults(func=cmd_detect)

    migrate = sub.add_parser("migrate", help="apply pending schema migrations and say the version")
    migrate.set_defaults(func=cmd_migrate)

    export = sub.add_parser("export", help="write one merchant's data as JSON lines")
    export.add_argument("--merchant", required=True)
    export.add_argument("--out", help="file to write (mode 0600; it holds secrets); "
                                      "default stdout")
    export.set_defaults(func=cmd_export)

    import_ = sub.add_parser("import", help="read a merchant written by `linkloop export`")
    import_.add_argument("file", nargs="?", default="-", help="the export file (default stdin)")
    import_.set_defaults(func=cmd_import)

    stats = sub.add_parser("stats", help="figures from the rollups")
    stats.add_argument("--merchant", required=True)
    stats.add_argument("--from", dest="from_day")
    stats.add_argument("--to", dest="to_day")
    stats.add_argument("--by", default="platform", choices=GROUPINGS)
    stats.add_argument("--product")
    stats.add_argument("--platform")
    stats.add_argument("--csv", action="store_true")
    stats.set_defaults(func=cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (CliError, ConfigError) as exc:
        print(f"linkloop: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
