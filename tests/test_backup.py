"""linkloop backup: a copy taken under load restores into a fresh data directory, serves,
and its figures are the figures of one moment. On PostgreSQL it points to pg_dump."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import stat
import sys
import time
from pathlib import Path

import aiohttp

from .conftest import TAOBAO_UA
from .pg import postgres_url, with_schema
from .test_cli import _merchant_and_token, run, serving

CLICKS = 200


async def _clicks(http: aiohttp.ClientSession, base: str, code: str, count: int) -> None:
    async def one() -> None:
        async with http.get(f"{base}/p/{code}", headers={"User-Agent": TAOBAO_UA},
                            allow_redirects=False) as resp:
            assert resp.status == 302

    await asyncio.gather(*(one() for _ in range(count)))


async def _total_clicks(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> int:
    async with http.get(f"{base}/api/stats?by=product", headers=auth) as resp:
        assert resp.status == 200, await resp.text()
        return sum(row["clicks"] for row in (await resp.json())["rows"])


async def _until_clicks(http: aiohttp.ClientSession, base: str, auth: dict[str, str],
                        want: int) -> None:
    deadline = time.monotonic() + 30
    while (got := await _total_clicks(http, base, auth)) != want:
        assert time.monotonic() < deadline, f"{got} clicks written, not {want}"
        await asyncio.sleep(0.1)


def _raw_clicks(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        found: int = conn.execute("SELECT count(*) FROM clicks WHERE NOT bot").fetchone()[0]
    return found


async def test_a_backup_under_load_restores_and_serves(cli_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    token = _merchant_and_token(cli_env)
    auth = {"Authorization": f"Bearer {token}"}
    out = tmp_path / "linkloop-backup.db"
    with serving(cli_env) as (_proc, base):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            made = await (await http.post(f"{base}/api/products", headers=auth, json={
                "title": "明前龙井", "slug": "longjing",
                "targets": {"taobao": {"item_id": "600000000001"}}})).json()
            await _clicks(http, base, made["code"], CLICKS)
            await _until_clicks(http, base, auth, CLICKS)

            loading = True

            async def load() -> None:
                while loading:
                    await _clicks(http, base, made["code"], 20)

            shoppers = asyncio.create_task(load())
            await asyncio.sleep(0.5)  # clicks are being written when the copy starts
            backup = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "backup", "--out", str(out), env=cli_env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            said, complaint = await backup.communicate()
            await asyncio.sleep(0.5)  # and go on after it: load only, nothing waits on it
            loading = False
            await shoppers
            assert backup.returncode == 0, complaint.decode()
    report = json.loads(said)
    assert report["engine"] == "sqlite" and report["out"] == str(out)
    assert set(report["keys_not_included"]) >= {"auth.secret", "ip.salt"}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    live = _raw_clicks(tmp_path / "data" / "linkloop.db")

    # Restore, as the README says: the file as linkloop.db in a fresh data directory, with
    # the keys it does not hold.
    fresh = tmp_path / "restored"
    fresh.mkdir()
    shutil.copy(out, fresh / "linkloop.db")
    for key in report["keys_not_included"]:
        shutil.copy(tmp_path / "data" / key, fresh / key)
    restored_env = {**cli_env, "LINKLOOP_STORAGE_DATA_DIR": str(fresh)}
    copied = _raw_clicks(fresh / "linkloop.db")
    assert CLICKS <= copied < live  # a moment during the load: before its end
    with serving(restored_env) as (_proc, base):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            # The old token still works (the key came along) and the figures are the
            # copy's own: the rollups agree with the raw clicks of the same moment.
            assert await _total_clicks(http, base, auth) == copied
            products = await (await http.get(f"{base}/api/products", headers=auth)).json()
            assert [p["title"] for p in products["items"]] == ["明前龙井"]
            await _clicks(http, base, "longjing", 1)
            await _until_clicks(http, base, auth, copied + 1)
    cli = json.loads(run(restored_env, "stats", "--merchant", "acme", "--json").stdout)
    assert sum(r["clicks"] for r in cli["rows"]) == copied + 1


def test_backup_mistakes_change_nothing(cli_env: dict[str, str], tmp_path: Path) -> None:
    nothing = run(cli_env, "backup", "--out", str(tmp_path / "b.db"))
    assert nothing.returncode == 2 and "nothing to back up" in nothing.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "b.db").exists()
    _merchant_and_token(cli_env)
    taken = tmp_path / "taken.db"
    taken.write_text("keep me")
    refused = run(cli_env, "backup", "--out", str(taken))
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert taken.read_text() == "keep me"
    assert run(cli_env, "backup", "--out", str(taken), "--force").returncode == 0
    with sqlite3.connect(taken) as conn:
        assert conn.execute("SELECT id FROM merchants").fetchall() == [("acme",)]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_on_postgresql_it_says_to_use_pg_dump(cli_env: dict[str, str], tmp_path: Path) -> None:
    url = with_schema(postgres_url().replace("postgres@", "postgres:hunter2@"), "shop")
    result = run({**cli_env, "LINKLOOP_STORAGE_URL": url}, "backup", "--out",
                 str(tmp_path / "b.db"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "pg_dump" in result.stderr and "--schema=shop" in result.stderr
    assert "hunter2" not in result.stderr  # the password is never echoed
    assert not (tmp_path / "b.db").exists()


