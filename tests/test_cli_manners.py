"""A CLI that never surprises: units on --ttl, a taken port, a wildcard host, help on every
option, --version, stats as a table or JSON, and a closed pipe. Real ``linkloop`` processes."""

from __future__ import annotations

import argparse
import json
import os
import pty
import socket
import subprocess
import unicodedata
from datetime import date
from pathlib import Path

import jwt
import pytest

from gateway.cli import build_parser

from .conftest import BOT_UA, DESKTOP_UA, LINKLOOP, TAOBAO_UA
from .test_cli import free_port, run


def _merchant(env: dict[str, str]) -> None:
    made = run(env, "merchant", "create", "acme", "--name", "Acme 茶庄")
    assert made.returncode == 0, made.stderr


def test_ttl_needs_a_unit(cli_env: dict[str, str]) -> None:
    _merchant(cli_env)
    bare = run(cli_env, "token", "--merchant", "acme", "--role", "merchant", "--ttl", "30")
    assert bare.returncode == 2 and bare.stdout == ""
    assert bare.stderr.count("\n") == 1 and "--ttl '30'" in bare.stderr
    assert "30d" in bare.stderr  # says what was probably meant
    for ttl, seconds in (("45s", 45), ("15m", 900), ("12h", 43200), ("30d", 2592000)):
        token = run(cli_env, "token", "--merchant", "acme", "--role", "merchant", "--ttl", ttl)
        assert token.returncode == 0, token.stderr
        claims = jwt.decode(token.stdout.strip(), options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == seconds


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_and_creates_nothing(cli_env: dict[str, str],
                                                       tmp_path: Path, workers: str) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = run(cli_env, "serve", "--port", str(port), "--workers", workers)
    assert result.returncode == 2
    assert result.stderr == (f"linkloop: port {port} on 127.0.0.1 is in use: stop whatever "
                             "holds it, or choose another with --port\n")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", [["serve", "--port", "0"],
                                     ["stats", "--merchant", "acme"],
                                     ["merchant", "create", "bolt", "--name", "Bolt"]])
def test_storage_away_is_one_line_and_its_own_exit_status(cli_env: dict[str, str],
                                                          command: list[str]) -> None:
    # Nothing listens on port 1: PostgreSQL refuses. It was 70 lines of traceback (exit
    # 1); a script or a supervisor needs one line and a status that says "try again".
    env = {**cli_env, "LINKLOOP_STORAGE_URL": "postgresql://nobody@127.0.0.1:1/none",
           "LINKLOOP_STORAGE_TIMEOUT_SECONDS": "2"}
    result = run(env, *command)
    assert (result.returncode, result.stdout) == (69, "")
    assert result.stderr.startswith("linkloop: storage unavailable: PostgreSQL unavailable")
    assert result.stderr.count("\n") == 1 and "Errno 111" in result.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]"])
def test_a_wildcard_host_needs_a_public_url(cli_env: dict[str, str], tmp_path: Path,
                                            host: str) -> None:
    # Refused before anything listens. The port is held on both loopbacks all along, so
    # that a gateway that failed to refuse could not listen on a wildcard address either.
    port = free_port()
    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6:
        v4.bind(("127.0.0.1", port))
        v6.bind(("::1", port))
        v4.listen()
        v6.listen()
        result = run(cli_env, "serve", "--host", host, "--port", str(port))
        from_config = run({**cli_env, "LINKLOOP_SERVER_HOST": host}, "serve", "--port",
                          str(port))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "server.public_url" in result.stderr and "LINKLOOP_SERVER_PUBLIC_URL" in result.stderr
    assert from_config.returncode == 2 and "server.public_url" in from_config.stderr
    assert not (tmp_path / "data").exists()


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = (),
             ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, (*path, name))
    return found


def test_every_option_and_command_has_help() -> None:
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{' '.join(path)} {c.dest}" for c in action._choices_actions
                            if not c.help]
            elif not (action.help or "").strip():
                missing.append(f"{' '.join(path) or 'linkloop'} {action.option_strings or action.dest}")
    assert missing == []


def test_version(cli_env: dict[str, str]) -> None:
    from importlib.metadata import version

    result = run(cli_env, "--version")
    assert result.returncode == 0 and result.stdout == f"linkloop {version('linkloop')}\n"


def _export_with_clicks(path: Path) -> None:
    """A merchant with one Chinese-titled product and clicks, as ``linkloop import`` reads."""
    today = date.today().isoformat()
    lines = [{"format": "linkloop-export", "version": 1, "merchant": "acme"},
             {"kind": "merchant", "data": {"id": "acme", "name": "Acme 茶庄", "domains": [],
                                           "created_at": 1.0}},
             {"kind": "product", "data": {
                 "id": 7, "merchant_id": "acme", "code": "longjing", "title": "明前龙井 250g",
                 "targets": {"taobao": {"item_id": "600000000001"}}, "image_url": None,
                 "price": None, "status": "active", "created_at": 1.0, "updated_at": 1.0}}]
    for n, ua_platform in enumerate(["taobao"] * 12 + ["web"]):
        lines.append({"kind": "click", "data": {
            "id": f"c{n:04d}", "merchant_id": "acme", "product_id": 7, "ts": 1.0, "day": today,
            "platform": ua_platform, "source": "ua", "visitor": f"v{n % 5}", "ip_hash": "h",
            "bot": False, "mobile": True, "os": "ios", "channel": None}})
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


def _on_a_terminal(env: dict[str, str], *args: str) -> str:
    """What ``linkloop args`` prints with its stdout on a terminal (a pseudo-terminal)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*LINKLOOP, *args], env=env, stdout=follower,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    return out.decode().replace("\r\n", "\n")


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def test_stats_is_a_table_on_a_terminal_and_json_for_scripts(cli_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    export = tmp_path / "acme.jsonl"
    _export_with_clicks(export)
    assert run(cli_env, "import", str(export)).returncode == 0

    table = _on_a_terminal(cli_env, "stats", "--merchant", "acme", "--by", "product")
    title, header, rule, row = table.splitlines()
    assert title.startswith("acme: ") and "by product" in title
    assert header.split()[:5] == ["product_id", "code", "title", "clicks", "unique_visitors"]
    assert "明前龙井 250g" in row and row.split()[4:7] == ["13", "5", "0"]
    # Lined up on the terminal: every line as wide, the Chinese title counted double.
    assert _columns(header) == _columns(rule) == _columns(row)

    as_json = _on_a_terminal(cli_env, "stats", "--merchant", "acme", "--by", "product", "--json")
    assert json.loads(as_json)["rows"][0]["title"] == "明前龙井 250g"
    piped = run(cli_env, "stats", "--merchant", "acme", "--by", "product")
    assert json.loads(piped.stdout)["rows"][0]["clicks"] == 13
    forced = run(cli_env, "stats", "--merchant", "acme", "--table")
    assert forced.stdout.splitlines()[1].split()[0] == "platform"
    both = run(cli_env, "stats", "--merchant", "acme", "--json", "--csv")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_a_closed_pipe_ends_quietly(cli_env: dict[str, str], tmp_path: Path) -> None:
    # Far more than a pipe holds, so the writer meets the closed end for sure.
    agents = tmp_path / "agents.txt"
    agents.write_text("".join(f"{ua}\n" for ua in [TAOBAO_UA, BOT_UA, DESKTOP_UA] * 20000))
    with agents.open("rb") as stdin:
        proc = subprocess.Popen([*LINKLOOP, "detect"], env=cli_env, stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    assert json.loads(first)["platform"] == "taobao"
    assert proc.wait(timeout=60) in (0, 141)
    assert proc.stderr.read() == b""
