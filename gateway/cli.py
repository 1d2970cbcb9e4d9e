"""The ``linkloop`` command: serve, merchant, token, user, product, detect, stats.

It never surprises: a mistake is one line on stderr (exit status 2) and changes nothing, a
closed pipe (``linkloop detect < uas | head``) ends quietly, every option says what it does.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .jsonout import dumps
from .settings import ConfigError, Settings, load_settings
from .store import StoreUnavailable

__all__ = ["CliError", "check_domains", "main", "read_password"]

# A unit is required: a bare ``--ttl 30`` once made a 30-second token where 30 days was meant.
_TTL = re.compile(r"([0-9]+)([smhd])")
_TTL_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
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
    _check_public_url(settings)
    if args.workers > 1:
        return _supervise(args, settings)
    # The port first: when it is taken, nothing (data directory, database, generated keys)
    # has been made yet. aiohttp would open the app's resources before it binds.
    sockets = _listen(settings["server.host"], settings["server.port"],
                      reuse_port=args.worker_index > 0 or args.reuse_port)
    configure_logging(settings["log.level"], settings["log.format"])
    app = create_app(settings, worker=args.worker_index)
    if args.demo and args.worker_index == 0:
        app.cleanup_ctx.append(demo_ctx)
    loop = _new_loop()
    from .tally import ShareLinkTimer, timing_logger

    # No access log lines; the hook times share-link requests for GET /metrics.
    web.run_app(app, sock=sockets, access_log=timing_logger, access_log_class=ShareLinkTimer,
                print=lambda msg: print(msg, file=sys.stderr), loop=loop)
    return 0


def _is_wildcard(host: str) -> bool:
    """Whether ``host`` means every address of the machine (0.0.0.0, ::, empty)."""
    if host in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _check_public_url(settings: Settings) -> None:
    """Refuse to mint share links like http://0.0.0.0:8080/p/..., which no phone can open."""
    host = settings["server.host"]
    if _is_wildcard(host) and not settings["server.public_url"]:
        raise CliError(
            f"--host {host or repr(host)} listens on every address, so share links need the "
            "address shoppers reach: set server.public_url (or LINKLOOP_SERVER_PUBLIC_URL), "
            "e.g. https://go.example.com")


def _listen(host: str, port: int, *, reuse_port: bool) -> list[socket.socket]:
    """Sockets bound to every address ``host`` names, like aiohttp's own site would bind;
    a port in use, an unknown host or a refused bind is one clear CliError."""
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CliError(f"--host {host!r}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(
                (f, k, p, "", a) for f, k, p, _n, a in found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CliError(f"port {port} on {host} is in use: stop whatever holds it, or "
                           "choose another with --port") from None
        raise CliError(f"cannot listen on {host} port {port}: {exc.strerror}") from None
    return sockets


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """``serve --workers N``: N processes on one port (SO_REUSEPORT); the kernel spreads
    connections. SIGTERM or SIGINT is passed on to every worker, which drains and writes
    its clicks before exiting; a worker that dies takes the others down with it."""
    import signal
    import subprocess
    import time

    if not settings["server.port"]:
        raise CliError("--workers needs a fixed --port")
    # Bound for a moment: a port in use is one line now, not N workers failing in turn.
    for sock in _listen(settings["server.host"], settings["server.port"], reuse_port=False):
        sock.close()
    base = [sys.executable, "-m", "gateway"]
    metrics_dir, made = _metrics_dir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    if args.config:
        base += ["--config", args.config]
    base += ["serve", "--host", settings["server.host"], "--port", str(settings["server.port"])]
    if args.demo:
        base.append("--demo")
    workers = [subprocess.Popen([*base, "--reuse-port", "--worker-index", str(i)], env=env)
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
    if made:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return max(codes, key=abs)


def _metrics_dir() -> tuple[Path, bool]:
    """Where the workers' metrics meet (the Prometheus client's multiprocess mode), empty:
    the directory set in PROMETHEUS_MULTIPROC_DIR, emptied, or a new one (and True)."""
    import tempfile

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not given:
        return Path(tempfile.mkdtemp(prefix="linkloop-metrics-")), True
    directory = Path(given)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # a previous run's figures would be added in
        stale.unlink()
    return directory, False


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
    """``30s``, ``15m``, ``12h`` or ``30d`` as seconds; a bare number is refused."""
    match = _TTL.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        hint = (f" (did you mean {text.strip()}d?)" if text.strip().isdigit() else "")
        raise CliError(f"--ttl {text!r}: give a number and a unit: 30s, 15m, 12h or "
                       f"30d{hint}")
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
        print(dumps(detector.user_agent(args.ua).as_json()))
        return 0
    out = sys.stdout
    for line in sys.stdin:
        ua = line.rstrip("\r\n")
        out.write(dumps(detector.user_agent(ua).as_json()))
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
             "product": args.product, "platform": args.platform, "channel": args.channel},
            clock.today())
    except StatsQueryError as exc:
        raise CliError(f"--{exc.field}: {exc.message}") from None

    async def work(store: Any) -> int:
        if await store.get_merchant(args.merchant) is None:
            raise CliError(f"no merchant {args.merchant!r}")
        answer = await stats_answer(store, args.merchant, query, clock.timezone)
        output = args.output or ("table" if sys.stdout.isatty() else "json")
        if output == "csv":
            sys.stdout.write(rows_csv(query.by, answer["rows"], clock.timezone))
        elif output == "table":
            sys.stdout.write(_stats_table(args.merchant, query, answer["rows"],
                                          clock.timezone))
        else:
            print(json.dumps(answer, ensure_ascii=False))
        return 0

    return _run(_with_store(settings, work))


def _stats_table(merchant: str, query: Any, rows: list[dict[str, Any]], timezone: str) -> str:
    from .stats import RATES, unrounded_rate
    from .store import METRICS
    from .texttable import render_table

    keys = ["product_id", "code", "title"] if query.by == "product" else [query.by]
    title = (f"{merchant}: {query.from_day} to {query.to_day}, by {query.by} "
             f"(days in {timezone})\n")
    if not rows:
        return title + "no figures in this range\n"
    table = render_table([*keys, *METRICS, *RATES],
                         # Rates from the counts, rounded once (as on the dashboard).
                         [[*(row[k] for k in [*keys, *METRICS]),
                           *(unrounded_rate(row, rate) for rate in RATES)] for row in rows],
                         numeric_from=1 if query.by != "product" else 3)
    return title + table


# --- migrate, export, import ----------------------------------------------------------------
def cmd_migrate(args: argparse.Namespace) -> int:
    """Opening storage applies every pending migration; say where it stands."""
    settings = _settings(args)

    async def work(store: Any) -> int:
        engine = "postgresql" if type(store).__name__ == "PostgresStore" else "sqlite"
        print(dumps({"engine": engine, "schema_version": await store.schema_version()}))
        return 0

    return _run(_with_store(settings, work))


def cmd_export(args: argparse.Namespace) -> int:
    import os

    from .clock import DayClock
    from .retention import retention_cutoff
    from .transfer import TransferError, export_merchant

    settings = _settings(args)
    cutoff = retention_cutoff(settings, DayClock(settings["stats.timezone"]))
    kept_from = cutoff[0] if cutoff else None

    async def work(store: Any) -> int:
        out: TextIO = sys.stdout
        if args.out:
            # The file holds the merchant's secrets: readable by its owner only.
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            out = os.fdopen(fd, "w", encoding="utf-8")
        try:
            async for line in export_merchant(store, args.merchant,
                                              decrypt_secrets=args.decrypt_secrets,
                                              rollups_before=kept_from):
                out.write(line)
        except TransferError as exc:
            raise CliError(str(exc)) from None
        finally:
            if out is not sys.stdout:
                out.close()
        return 0

    return _run(_with_store(settings, work))


def cmd_import(args: argparse.Namespace) -> int:
    from .secretbox import read_key_file
    from .transfer import TransferError, import_merchant

    keys = read_key_file(Path(args.secrets_key_file)) if args.secrets_key_file else []
    try:
        with (open(args.file, encoding="utf-8") if args.file != "-" else sys.stdin) as fh:
            lines = fh.readlines()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None

    async def work(store: Any) -> int:
        try:
            counts = await import_merchant(store, lines, keys=keys)
        except TransferError as exc:
            raise CliError(str(exc)) from None
        print(dumps(counts))
        return 0

    return _run(_with_store(_settings(args), work))


# --- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .auth import ROLES
    from .stats import GROUPINGS

    parser = argparse.ArgumentParser(
        prog="linkloop", description="One share link per product for every Chinese app, "
        "with a closed loop into WeCom.")
    parser.add_argument("--version", action="version", version=f"linkloop {_version()}")
    parser.add_argument("--config", help="TOML settings file (default: $LINKLOOP_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=argparse.SUPPRESS, help="TOML settings file")
    serve.add_argument("--host", help="address to listen on (default: server.host); a "
                                      "wildcard like 0.0.0.0 needs server.public_url")
    serve.add_argument("--port", type=int, help="TCP port (default: server.port)")
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
    create.add_argument("id", help="the merchant's id: 2-64 of a-z, 0-9, - and _")
    create.add_argument("--name", required=True, help="the name shoppers and staff see")
    create.add_argument("--domain", action="append", default=[],
                        help="a domain web targets may use (repeatable; subdomains included)")
    create.set_defaults(func=cmd_merchant_create)

    token = sub.add_parser("token", help="print a signed API token")
    token.add_argument("--merchant", required=True, help="the merchant the token acts for")
    token.add_argument("--role", required=True, choices=ROLES,
                       help="marketing reads figures; merchant and admin also change products")
    token.add_argument("--ttl", help="lifetime with its unit: 30s, 15m, 12h or 30d "
                                     "(default: auth.token_ttl_days)")
    token.set_defaults(func=cmd_token)

    user = sub.add_parser("user", help="manage dashboard logins")
    usub = user.add_subparsers(dest="action", required=True)
    user_create = usub.add_parser(
        "create", help="create a staff login; the password comes from stdin when it is not "
        "a terminal")
    user_create.add_argument("email", help="the login's email address")
    user_create.add_argument("--merchant", required=True, help="the merchant whose data it sees")
    user_create.add_argument("--role", required=True, choices=("marketing", "merchant"),
                             help="marketing reads figures; merchant also runs the console")
    user_create.set_defaults(func=cmd_user_create)
    user_list = usub.add_parser("list", help="one merchant's staff logins, one JSON a line")
    user_list.add_argument("--merchant", required=True, help="whose logins")
    user_list.set_defaults(func=cmd_user_list)
    user_unlock = usub.add_parser(
        "unlock", help="lift a login's lock after too many wrong passwords, at once")
    user_unlock.add_argument("email", help="the login's email address")
    user_unlock.set_defaults(func=cmd_user_unlock)
    from .cli_console import add_commands

    add_commands(sub, msub, usub)  # product ..., merchant list|update, user reset-password

    detect = sub.add_parser("detect", help="classify User-Agents")
    detect.add_argument("--ua", help="one User-Agent; without it, one a line on stdin")
    detect.set_defaults(func=cmd_detect)

    migrate = sub.add_parser("migrate",
                             help="apply pending schema migrations and say the version")
    migrate.set_defaults(func=cmd_migrate)

    export = sub.add_parser("export", help="write one merchant's data as JSON lines")
    export.add_argument("--merchant", required=True, help="the merchant to write")
    export.add_argument("--out", help="file to write (mode 0600); default stdout")
    export.add_argument("--decrypt-secrets", action="store_true",
                        help="write the WeCom and WeChat secrets in plain text (default: "
                             "sealed under this deployment's secrets key)")
    export.set_defaults(func=cmd_export)

    import_ = sub.add_parser("import", help="read a merchant written by `linkloop export`")
    import_.add_argument("file", nargs="?", default="-", help="the export file (default stdin)")
    import_.add_argument("--secrets-key-file",
                         help="the exporting deployment's secrets key file, to open its "
                              "sealed secrets (not needed within one deployment)")
    import_.set_defaults(func=cmd_import)

    stats = sub.add_parser("stats", help="figures from the rollups")
    stats.add_argument("--merchant", required=True, help="whose figures")
    stats.add_argument("--from", dest="from_day",
                       help="first day, YYYY-MM-DD (default: 29 days before --to)")
    stats.add_argument("--to", dest="to_day", help="last day, YYYY-MM-DD (default: today)")
    stats.add_argument("--by", default="platform", choices=GROUPINGS,
                       help="one row per platform (default), product, day or channel")
    stats.add_argument("--product", help="only this product id")
    stats.add_argument("--platform", help="only this source platform, e.g. taobao")
    stats.add_argument("--channel", help="only this ?ch= channel, e.g. live")
    output = stats.add_mutually_exclusive_group()
    output.add_argument("--json", dest="output", action="store_const", const="json",
                        help="JSON, as GET /api/stats answers (the default when stdout is "
                             "not a terminal)")
    output.add_argument("--csv", dest="output", action="store_const", const="csv",
                        help="CSV, as GET /api/stats?format=csv answers")
    output.add_argument("--table", dest="output", action="store_const", const="table",
                        help="a table for people (the default on a terminal)")
    stats.set_defaults(func=cmd_stats, output=None)

    from .ops_commands import add_ops_commands

    add_ops_commands(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("linkloop")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


#: The exit status of a command whose reader went away (128 + SIGPIPE), as a shell's own
#: tools end in ``yes | head``.
_CLOSED_PIPE = 128 + 13
#: The exit status of a command that found storage away (sysexits' EX_UNAVAILABLE): not the
#: user's mistake (2), and worth a retry by whatever runs it.
_STORAGE_AWAY = 69


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below, not at exit
        return result
    except (CliError, ConfigError) as exc:
        print(f"linkloop: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        # An outage, not a bug: one line that says what is away, not 70 of traceback.
        print(f"linkloop: storage unavailable: {exc}", file=sys.stderr)
        return _STORAGE_AWAY
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): nothing more to say. Python would flush stdout
        # once more at exit and complain on stderr; point stdout at nothing first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _CLOSED_PIPE
