"""linkloop migrate, export and import: a merchant moves between SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import DESKTOP_UA, TAOBAO_UA
from .pg import fresh_schema, postgres_url, with_schema
from .test_cli import run, serving
from .test_dashboard import csrf_of


@pytest.fixture
async def pg_env(cli_env: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    url = postgres_url()
    async with fresh_schema(url, create=False) as schema:
        yield {**cli_env, "LINKLOOP_STORAGE_URL": with_schema(url, schema)}


def test_migrate_reports_the_schema_version(cli_env: dict[str, str]) -> None:
    first = run(cli_env, "migrate")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["engine"] == "sqlite" and report["schema_version"] >= 2
    assert json.loads(run(cli_env, "migrate").stdout) == report  # idempotent


async def _traffic(env: dict[str, str]) -> dict[str, Any]:
    """A merchant with two products (one retired), clicks and a storefront open."""
    assert run(env, "merchant", "create", "acme", "--name", "Acme", "--domain",
               "shop.acme.cn").returncode == 0
    token = run(env, "token", "--merchant", "acme", "--role", "merchant").stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    with serving(env) as (_proc, base):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            made = []
            for slug in ("tea", "mug"):
                resp = await http.post(f"{base}/api/products", headers=auth, json={
                    "title": slug, "slug": slug, "valid_until": "2099-01-01T00:00+08:00",
                    "targets": {"taobao": {"item_id": "600000000001"},
                                "web": {"url": f"https://shop.acme.cn/{slug}"}}})
                made.append(await resp.json())
            await http.post(f"{base}/api/channels", headers=auth,
                            json={"name": "spring_live", "label": "春季直播"})
            for _ in range(3):
                await http.get(f"{base}/p/tea", headers={"User-Agent": TAOBAO_UA},
                               allow_redirects=False)
            await http.get(f"{base}/p/mug", headers={"User-Agent": DESKTOP_UA})
            await http.get(f"{base}/o/mug/web", headers={"User-Agent": DESKTOP_UA},
                           allow_redirects=False)
            await http.delete(f"{base}/api/products/{made[1]['id']}", headers=auth)
    return {"by_product": json.loads(run(env, "stats", "--merchant", "acme", "--by",
                                         "product").stdout)["rows"],
            "by_platform": json.loads(run(env, "stats", "--merchant", "acme").stdout)["rows"],
            "by_product_months": _by_product_over_whole_months(env)}


def _by_product_over_whole_months(env: dict[str, str]) -> list[dict[str, Any]]:
    """Stats by product over whole months around today: read from monthly_rollups."""
    today = date.today()
    first = (today - timedelta(days=40)).replace(day=1)
    last = ((today + timedelta(days=40)).replace(day=1) + timedelta(days=32)).replace(
        day=1) - timedelta(days=1)
    rows: list[dict[str, Any]] = json.loads(run(
        env, "stats", "--merchant", "acme", "--by", "product", "--from", first.isoformat(),
        "--to", last.isoformat()).stdout)["rows"]
    return [{k: v for k, v in r.items() if k != "product_id"} for r in rows]


async def _moved(source: dict[str, str], target: dict[str, str], tmp_path: Path) -> None:
    before = await _traffic(source)
    staff = run(source, "user", "create", "anna@acme.cn", "--merchant", "acme", "--role",
                "marketing", stdin="correct horse battery\n")
    assert staff.returncode == 0, staff.stderr
    out = tmp_path / "acme.jsonl"
    exported = run(source, "export", "--merchant", "acme", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    imported = run(target, "import", str(out))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["clicks"] == 4
    assert json.loads(imported.stdout)["users"] == 1
    assert json.loads(imported.stdout)["channels"] == 1
    after_platform = json.loads(run(target, "stats", "--merchant", "acme").stdout)["rows"]
    assert after_platform == before["by_platform"]
    after_product = json.loads(run(target, "stats", "--merchant", "acme", "--by",
                                   "product").stdout)["rows"]
    strip = [{k: v for k, v in r.items() if k != "product_id"} for r in before["by_product"]]
    assert [{k: v for k, v in r.items() if k != "product_id"} for r in after_product] == strip
    # The import rebuilt the monthly rollups too (the record path writes every table).
    assert sum(r["clicks"] for r in before["by_product_months"]) == 4
    assert _by_product_over_whole_months(target) == before["by_product_months"]
    # The links people hold work in the target: the share code answers, retired stays 410;
    # and the staff member signs in to the dashboard with the same password.
    with serving(target) as (_proc, base):
        # unsafe=True: keep cookies from an IP-address host (the login form's CSRF cookie).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            page = await (await http.get(f"{base}/dashboard/login")).text()
            signed_in = await http.post(f"{base}/dashboard/login", allow_redirects=False, data={
                "csrf": csrf_of(page), "email": "anna@acme.cn",
                "password": "correct horse battery", "next": "/dashboard"}, headers={
                "Origin": base})
            assert signed_in.status == 303, await signed_in.text()
            assert signed_in.headers["Location"] == "/dashboard"
            tea = await http.get(f"{base}/p/tea", headers={"User-Agent": TAOBAO_UA},
                                 allow_redirects=False)
            assert tea.status == 302
            token = run(target, "token", "--merchant", "acme", "--role", "merchant")
            auth = {"Authorization": f"Bearer {token.stdout.strip()}"}
            listed = await (await http.get(f"{base}/api/products", headers=auth)).json()
            assert {p["code"]: p["valid_until"] for p in listed["items"]} == {
                "tea": "2099-01-01T00:00:00+08:00", "mug": "2099-01-01T00:00:00+08:00"}
            channels = await (await http.get(f"{base}/api/channels", headers=auth)).json()
            assert channels["items"][0]["label"] == "春季直播"
            assert (await http.get(f"{base}/p/mug", allow_redirects=False)).status == 410
    # A second import refuses, writing nothing.
    again = run(target, "import", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr


async def test_sqlite_to_postgresql(cli_env: dict[str, str], pg_env: dict[str, str],
                                    tmp_path: Path) -> None:
    await _moved(cli_env, pg_env, tmp_path)


async def test_postgresql_to_sqlite(cli_env: dict[str, str], pg_env: dict[str, str],
                                    tmp_path: Path) -> None:
    target = {**cli_env, "LINKLOOP_STORAGE_DATA_DIR": str(tmp_path / "other")}
    await _moved(pg_env, target, tmp_path)


def test_bad_exports_are_refused(cli_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "something-else"}\n')
    result = run(cli_env, "import", str(bad))
    assert result.returncode == 2 and "not a LinkLoop export" in result.stderr
    missing = run(cli_env, "export", "--merchant", "ghost")
    assert missing.returncode == 2 and "no merchant 'ghost'" in missing.stderr
