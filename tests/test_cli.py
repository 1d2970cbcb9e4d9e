"""The public interface as a script uses it: real ``linkloop`` processes and real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import BOT_UA, DESKTOP_UA, LINKLOOP, TAOBAO_UA
from .wait import until


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LINKLOOP, *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(env: dict[str, str], *extra: str, log: Path | None = None,
            ) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``linkloop serve`` on a free port; its output piped, or appended to ``log``: a file
    for a server that logs more than a pipe holds while nobody reads it."""
    port = free_port()
    # A session of its own, like a server started from a terminal: Ctrl-C there reaches
    # the whole process group (the gateway and its click writer), as a test can do here.
    with ExitStack() as files:
        out: Any = files.enter_context(log.open("a")) if log else subprocess.PIPE
        proc = subprocess.Popen([*LINKLOOP, "serve", "--port", str(port), *extra], env=env,
                                stdout=out, stderr=out, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    said = proc.stderr.read() if proc.stderr else log.read_text() if log else ""
                    raise AssertionError(f"server did not start: {said}") from None
                time.sleep(0.05)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)  # a loaded machine may take a while to drain the writer


def _merchant_and_token(env: dict[str, str]) -> str:
    made = run(env, "merchant", "create", "acme", "--name", "Acme 茶庄", "--domain",
               "shop.acme.cn")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {"id": "acme", "name": "Acme 茶庄",
                                       "domains": ["shop.acme.cn"]}
    token = run(env, "token", "--merchant", "acme", "--role", "merchant", "--ttl", "1h")
    assert token.returncode == 0, token.stderr
    return token.stdout.strip()


async def test_a_script_drives_the_whole_loop_through_cli_and_http(cli_env: dict[str, str]) -> None:
    token = _merchant_and_token(cli_env)
    auth = {"Authorization": f"Bearer {token}"}
    with serving(cli_env) as (_proc, base):
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"{base}/api/products", headers=auth, json={
                "title": "Tea", "targets": {"taobao": {"item_id": "600000000001"},
                                            "jd": {"sku": "100000000001"},
                                            "web": {"url": "https://shop.acme.cn/tea"}}})
            assert resp.status == 201, await resp.text()
            share_url = (await resp.json())["share_url"]
            assert share_url.startswith(base + "/p/")

            async def visit(ua: str, cookie: str = "") -> aiohttp.ClientResponse:
                headers = {"User-Agent": ua, **({"Cookie": cookie} if cookie else {})}
                async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
                    r = await s.get(share_url, headers=headers, allow_redirects=False)
                    await r.read()
                    return r

            taobao = await visit(TAOBAO_UA)
            assert taobao.status == 302
            assert taobao.headers["Location"] == "https://item.taobao.com/item.htm?id=600000000001"
            visitor = taobao.cookies["ll_v"].value
            assert (await visit(TAOBAO_UA, f"ll_v={visitor}")).status == 302
            desktop = await visit(DESKTOP_UA)
            assert desktop.status == 200 and desktop.content_type == "text/html"
            bot = await visit(BOT_UA)
            assert bot.status == 200

            async def all_four_counted() -> Any:
                async with http.get(f"{base}/api/stats?by=platform", headers=auth) as r:
                    body = await r.json()
                counted = sum(row["clicks"] + row["bot_clicks"] for row in body["rows"])
                return body if counted == 4 else None

            stats = await until(all_four_counted, what="the four visits in the stats")
    rows = {r["platform"]: r for r in stats["rows"]}
    assert (rows["taobao"]["clicks"], rows["taobao"]["unique_visitors"]) == (2, 1)
    assert (rows["web"]["clicks"], rows["web"]["bot_clicks"]) == (1, 1)
    # The CLI reads the same figures.
    cli = run(cli_env, "stats", "--merchant", "acme", "--by", "platform")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["rows"] == stats["rows"]
    csv = run(cli_env, "stats", "--merchant", "acme", "--csv").stdout.splitlines()
    assert csv[0] == ("platform,clicks,unique_visitors,bot_clicks,redirects,landings,guides,"
                      "storefront_opens,entries,adds,chats,lost_contacts,unique_visitors_error,"
                      "open_rate,entry_rate,add_rate,chat_rate,timezone")
    # Text quoted, figures bare (gateway/spreadsheet.py); an empty rate is an empty cell.
    # Two Taobao shoppers sent straight to the item: two redirects, two storefront opens.
    assert '"taobao",2,1,0,2,0,0,2,0,0,0,0,0,1.0,0.0,"","","Asia/Shanghai"' in csv


@pytest.mark.parametrize("stop", ["sigterm", "ctrl_c_to_the_process_group"])
async def test_stopping_right_after_clicks_loses_none(cli_env: dict[str, str], stop: str) -> None:
    token = _merchant_and_token(cli_env)
    # A long flush interval: every click is still in memory when SIGTERM arrives.
    env = {**cli_env, "LINKLOOP_RECORDER_FLUSH_INTERVAL_MS": "600000"}
    clicks = 300
    with serving(env) as (proc, base):
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"{base}/api/products", json={
                "title": "Tea", "targets": {"taobao": {"item_id": "600000000001"}}},
                headers={"Authorization": f"Bearer {token}"})
            code = (await resp.json())["code"]

            async def one() -> int:
                r = await http.get(f"{base}/p/{code}", headers={"User-Agent": TAOBAO_UA},
                                   allow_redirects=False)
                return r.status

            statuses = await asyncio.gather(*(one() for _ in range(clicks)))
            assert statuses == [302] * clicks
        if stop == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:  # the click writer gets the SIGINT too, and must still write the last batch
            os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    stats = json.loads(run(cli_env, "stats", "--merchant", "acme").stdout)
    assert stats["rows"][0]["platform"] == "taobao"
    assert stats["rows"][0]["clicks"] == clicks


def test_detect_one_and_many(cli_env: dict[str, str]) -> None:
    one = run(cli_env, "detect", "--ua", TAOBAO_UA)
    assert json.loads(one.stdout) == {"platform": "taobao", "bot": False, "mobile": True,
                                      "os": "ios"}
    many = run(cli_env, "detect", stdin=f"{TAOBAO_UA}\n{BOT_UA}\n{DESKTOP_UA}\n")
    got = [json.loads(line) for line in many.stdout.splitlines()]
    assert [(g["platform"], g["bot"], g["mobile"]) for g in got] == [
        ("taobao", False, True), ("web", True, False), ("web", False, False)]


def test_cli_mistakes_are_one_clear_line(cli_env: dict[str, str], tmp_path: Any) -> None:
    unknown = run(cli_env, "token", "--merchant", "ghost", "--role", "merchant")
    assert unknown.returncode == 2 and "no merchant 'ghost'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    bad_ttl = run(cli_env, "token", "--merchant", "ghost", "--role", "merchant", "--ttl", "soon")
    assert bad_ttl.returncode == 2 and "--ttl" in bad_ttl.stderr
    bad_config = run({**cli_env, "LINKLOOP_SERVER_PROT": "1"}, "serve")
    assert bad_config.returncode == 2 and "LINKLOOP_SERVER_PROT" in bad_config.stderr
    assert run(cli_env, "merchant", "create", "Bad Id!", "--name", "x").returncode == 2
    _merchant_and_token(cli_env)
    again = run(cli_env, "merchant", "create", "acme", "--name", "x")
    assert again.returncode == 2 and "already exists" in again.stderr
    bad_range = run(cli_env, "stats", "--merchant", "acme", "--from", "2026-12-01",
                    "--to", "2026-11-01")
    assert bad_range.returncode == 2 and "--from" in bad_range.stderr
