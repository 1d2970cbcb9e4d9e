"""Retention and privacy: raw rows older than retention.raw_clicks_days go (by `linkloop
prune` and by a running gateway), their days still count in the stats API, PostgreSQL drops
old month partitions whole, exports carry the pruned days, and `linkloop privacy forget`
deletes one visitor's raw rows. Two merchants throughout; real processes, both engines."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.clock import DayClock

from .pg import connect, fresh_schema, postgres_url, with_schema
from .test_cli import run, serving


def _today() -> date:
    """Today in the gateway's days (Asia/Shanghai: the day turns at 16:00 UTC)."""
    return DayClock("Asia/Shanghai").today()


def _cutoffs(started: date, days: int = 180) -> set[str]:
    """The first day a command begun on ``started`` keeps: ``days`` before that day, or
    before the next one if the day turned while it ran."""
    return {(day - timedelta(days=days)).isoformat() for day in (started, _today())}


#: Fixed when the tests are collected, which may be before the day turns: only days far
#: from the retention's cutoff, which a day's shift can't carry across it.
TODAY = _today()
#: Older than the 180-day default, and in a month that ended before the cutoff too (so its
#: PostgreSQL partition goes whole whatever today is).
OLD = (TODAY - timedelta(days=250)).isoformat()
RECENT = (TODAY - timedelta(days=10)).isoformat()
SHARED_VISITOR = "visitorShared001"  # one ll_v cookie, seen by both merchants


def _export_lines(merchant: str, product_id: int) -> list[dict[str, Any]]:
    """A merchant with one product: clicks on an old and a recent day (one visitor on both,
    and shared with the other merchant), and a storefront open after the old click."""
    lines: list[dict[str, Any]] = [
        {"format": "linkloop-export", "version": 1, "merchant": merchant},
        {"kind": "merchant", "data": {"id": merchant, "name": merchant, "domains": [],
                                      "created_at": 1.0}},
        {"kind": "product", "data": {
            "id": product_id, "merchant_id": merchant, "code": f"{merchant}-tea",
            "title": "明前龙井", "targets": {"taobao": {"item_id": "600000000001"}},
            "image_url": None, "price": None, "status": "active", "created_at": 1.0,
            "updated_at": 1.0}}]
    clicks = [(OLD, SHARED_VISITOR), (OLD, "visitorOther0001"), (RECENT, SHARED_VISITOR),
              (RECENT, "visitorOther0002")]
    for n, (day, visitor) in enumerate(clicks):
        lines.append({"kind": "click", "data": {
            "id": f"{merchant}-click-{n}", "merchant_id": merchant, "product_id": product_id,
            "ts": 1.0, "day": day, "platform": "taobao", "source": "ua", "visitor": visitor,
            "ip_hash": "0" * 24, "bot": False, "mobile": True, "os": "ios", "channel": None}})
    for n, click in ((0, 0), (1, 2)):
        lines.append({"kind": "event", "data": {
            "id": f"{merchant}-event-{n}", "merchant_id": merchant, "product_id": product_id,
            "kind": "storefront_open", "platform": "taobao", "ts": 1.0,
            "day": clicks[click][0], "click_id": f"{merchant}-click-{click}",
            "target": "taobao"}})
    return lines


def _seed(env: dict[str, str], tmp_path: Path) -> None:
    for merchant, product in (("acme", 1), ("beta", 2)):
        path = tmp_path / f"{merchant}.jsonl"
        path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n"
                                for line in _export_lines(merchant, product)))
        made = run(env, "import", str(path))
        assert made.returncode == 0, made.stderr


class Raw:
    """The raw tables, read behind the gateway's back."""

    def __init__(self, engine: str, env: dict[str, str], schema: str | None) -> None:
        self.engine, self.env, self.schema = engine, env, schema

    async def rows(self, query: str) -> list[tuple[Any, ...]]:
        if self.engine == "sqlite":
            db = Path(self.env["LINKLOOP_STORAGE_DATA_DIR"]) / "linkloop.db"
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                return [tuple(r) for r in conn.execute(query)]
        conn = await connect(postgres_url(), self.schema)
        try:
            return [tuple(r) for r in await conn.fetch(query)]
        finally:
            await conn.close()

    async def days(self, table: str) -> list[tuple[str, str]]:
        return sorted(await self.rows(f"SELECT merchant_id, day FROM {table}"))


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, cli_env: dict[str, str],
                 ) -> AsyncIterator[Raw]:
    if request.param == "sqlite":
        yield Raw("sqlite", cli_env, None)
        return
    url = postgres_url()
    async with fresh_schema(url, create=False) as schema:
        yield Raw("postgres", {**cli_env, "LINKLOOP_STORAGE_URL": with_schema(url, schema)},
                  schema)


def _stats(env: dict[str, str], merchant: str) -> list[dict[str, Any]]:
    result = run(env, "stats", "--merchant", merchant, "--from", OLD, "--by", "day", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)["rows"]
    return rows


async def _api_stats(base: str, token: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{base}/api/stats", params={"from": OLD, "by": "day"},
            headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        rows: list[dict[str, Any]] = (await resp.json())["rows"]
        return rows


async def test_prune_deletes_old_raw_rows_and_their_day_still_counts(
        engine: Raw, tmp_path: Path) -> None:
    env = engine.env
    _seed(env, tmp_path)
    if engine.engine == "postgres":  # the old month has its own partition, as in production
        conn = await connect(postgres_url(), engine.schema)
        try:
            await conn.execute("SELECT ensure_click_partition($1::date)", date.fromisoformat(OLD))
        finally:
            await conn.close()
    before = {m: _stats(env, m) for m in ("acme", "beta")}
    old_day = next(r for r in before["acme"] if r["day"] == OLD)
    assert (old_day["clicks"], old_day["unique_visitors"], old_day["storefront_opens"]) == (2, 2, 1)

    started = _today()
    pruned = run(env, "prune")
    assert pruned.returncode == 0, pruned.stderr
    report = json.loads(pruned.stdout)
    assert report["retention_days"] == 180
    assert report["kept_from"] in _cutoffs(started)
    assert (report["clicks"] + (4 if engine.engine == "postgres" else 0), report["events"],
            report["visitors"]) == (4, 2, 0)  # visitor rows: only older versions wrote them
    if engine.engine == "postgres":  # dropped whole, not deleted row by row
        assert report["partitions_dropped"] == [f"clicks_{OLD[:4]}_{OLD[5:7]}"]

    for table in ("clicks", "events"):
        assert {day for _m, day in await engine.days(table)} == {RECENT}, table
    assert {day for _m, day in await engine.days("daily_visitors")} <= {RECENT}
    assert run(env, "prune").stdout.count('"clicks": 0') == 1  # nothing left to do

    # The figures are the rollups': the old day still counts its clicks, through the API.
    token = run(env, "token", "--merchant", "acme", "--role", "marketing").stdout.strip()
    with serving(env) as (_proc, base):
        assert await _api_stats(base, token) == before["acme"]
    assert _stats(env, "beta") == before["beta"]


async def test_a_running_gateway_prunes(cli_env: dict[str, str], tmp_path: Path) -> None:
    raw = Raw("sqlite", cli_env, None)
    _seed(cli_env, tmp_path)
    before = _stats(cli_env, "acme")
    with serving(cli_env) as (_proc, _base):
        deadline = time.monotonic() + 30
        # Clicks go first, then events, each in short transactions of their own: wait for
        # both (asserting events gone as soon as the clicks were failed now and then).
        while OLD in {day for table in ("clicks", "events")
                      for _m, day in await raw.days(table)}:
            assert time.monotonic() < deadline, "the gateway did not prune"
            await asyncio.sleep(0.1)
    assert {day for _m, day in await raw.days("clicks")} == {RECENT}
    assert {day for _m, day in await raw.days("events")} == {RECENT}
    assert _stats(cli_env, "acme") == before


@pytest.mark.parametrize("pruned", [True, False])
async def test_an_export_keeps_the_days_before_the_retention(cli_env: dict[str, str],
                                                             tmp_path: Path, pruned: bool) -> None:
    _seed(cli_env, tmp_path)
    if pruned:
        assert run(cli_env, "prune").returncode == 0
    before = _stats(cli_env, "acme")
    out = tmp_path / "moved.jsonl"
    started = _today()
    assert run(cli_env, "export", "--merchant", "acme", "--out", str(out)).returncode == 0
    header = json.loads(out.read_text().splitlines()[0])
    assert header["rollups_before"] in _cutoffs(started)
    lines = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    # Raw rows past the retention don't travel, even when the source has not pruned yet.
    assert {line["data"]["day"] for line in lines if line["kind"] in ("click", "event")} == {
        RECENT}
    assert {line["data"]["day"] for line in lines if line["kind"] == "rollup"} == {OLD}
    target = {**cli_env, "LINKLOOP_STORAGE_DATA_DIR": str(tmp_path / "target")}
    moved = run(target, "import", str(out), "--secrets-key-file",
                str(tmp_path / "data" / "secrets.key"))
    assert moved.returncode == 0, moved.stderr
    # The old day as its rollup rows (its raw rows, pruned or not, never counted twice).
    assert _stats(target, "acme") == before


async def test_privacy_forget_deletes_one_visitors_raw_rows(engine: Raw, tmp_path: Path) -> None:
    env = engine.env
    _seed(env, tmp_path)
    before = {m: _stats(env, m) for m in ("acme", "beta")}
    visitors = "SELECT merchant_id, visitor FROM {} ORDER BY 1, 2"

    forgot = run(env, "privacy", "forget", "--visitor", SHARED_VISITOR, "--merchant", "acme")
    assert forgot.returncode == 0, forgot.stderr
    assert json.loads(forgot.stdout)["deleted"] == {
        "acme": {"clicks": 2, "events": 2, "visitors": 0}}
    # Two days, in two months: each day's and month's cell of the four kinds (all exact).
    assert json.loads(forgot.stdout)["sketches"] == {
        "acme": {"cleaned": 16, "rebuilt": 0, "left": 0}}
    left = await engine.rows(visitors.format("clicks"))
    assert ("acme", SHARED_VISITOR) not in left and ("beta", SHARED_VISITOR) in left
    assert ("acme", "visitorOther0001") in left
    assert ("acme", SHARED_VISITOR) not in await engine.rows(visitors.format("daily_visitors"))
    assert [r for r in await engine.rows("SELECT merchant_id FROM events")] == [("beta",)] * 2

    # acme's unique visitors lose the visitor (exact figures), its counts stay (anonymous
    # sums); beta's figures are untouched.
    after = _stats(env, "acme")
    assert [r["unique_visitors"] for r in after] == [
        r["unique_visitors"] - 1 for r in before["acme"]] == [1, 1]
    assert [_without_uniques(r) for r in after] == [_without_uniques(r) for r in before["acme"]]
    assert _stats(env, "beta") == before["beta"]
    assert _total_uniques(env, "acme") == 2 and _total_uniques(env, "beta") == 3

    everywhere = run(env, "privacy", "forget", "--visitor", SHARED_VISITOR, "--all-merchants")
    assert json.loads(everywhere.stdout)["deleted"] == {
        "beta": {"clicks": 2, "events": 2, "visitors": 0}}
    assert SHARED_VISITOR not in {v for _m, v in await engine.rows(visitors.format("clicks"))}
    assert _total_uniques(env, "beta") == 2
    assert _stats(env, "acme") == after

    unscoped = run(env, "privacy", "forget", "--visitor", SHARED_VISITOR)
    assert unscoped.returncode == 2 and "--merchant" in unscoped.stderr
    bad = run(env, "privacy", "forget", "--visitor", "'; DROP TABLE clicks", "--all-merchants")
    assert bad.returncode == 2 and "not a visitor id" in bad.stderr


def _without_uniques(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("unique_visitors")}


def _total_uniques(env: dict[str, str], merchant: str, first: str = OLD) -> int:
    result = run(env, "stats", "--merchant", merchant, "--from", first, "--by", "platform",
                 "--json")
    assert result.returncode == 0, result.stderr
    total: int = json.loads(result.stdout)["total"]["unique_visitors"]
    return total


def _import_clicks(env: dict[str, str], tmp_path: Path, merchant: str, product_id: int,
                   clicks: list[tuple[str, str]]) -> None:
    """A merchant with one product and these (day, visitor) human clicks."""
    lines = _export_lines(merchant, product_id)[:3]
    lines += [{"kind": "click", "data": {
        "id": f"{merchant}-click-{n}", "merchant_id": merchant, "product_id": product_id,
        "ts": 1.0, "day": day, "platform": "taobao", "source": "ua", "visitor": visitor,
        "ip_hash": "0" * 24, "bot": False, "mobile": True, "os": "ios", "channel": None}}
        for n, (day, visitor) in enumerate(clicks)]
    path = tmp_path / f"{merchant}.jsonl"
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    made = run(env, "import", str(path))
    assert made.returncode == 0, made.stderr


async def test_privacy_forget_after_prune_cleans_the_exact_cells_of_pruned_days(
        engine: Raw, tmp_path: Path) -> None:
    env = engine.env
    _seed(env, tmp_path)
    assert run(env, "prune").returncode == 0  # the old day's raw clicks are gone
    before = {m: _stats(env, m) for m in ("acme", "beta")}
    forgot = run(env, "privacy", "forget", "--visitor", SHARED_VISITOR, "--merchant", "acme")
    assert forgot.returncode == 0, forgot.stderr
    assert json.loads(forgot.stdout)["sketches"] == {
        "acme": {"cleaned": 16, "rebuilt": 0, "left": 0}}
    assert [(r["day"], r["unique_visitors"]) for r in _stats(env, "acme")] == [
        (OLD, 1), (RECENT, 1)]
    assert _stats(env, "beta") == before["beta"]


async def test_privacy_forget_rebuilds_an_estimated_cell_from_its_raw_clicks(
        engine: Raw, tmp_path: Path) -> None:
    """257 visitors on a day: an estimate. Forget one and its cells are rebuilt from the
    256 left: exact again."""
    env = engine.env
    for merchant, product in (("acme", 1), ("beta", 2)):
        _import_clicks(env, tmp_path, merchant, product,
                       [(RECENT, SHARED_VISITOR)]
                       + [(RECENT, f"visitor{merchant:>4}{n:05d}") for n in range(256)])
    before = {m: _stats(env, m) for m in ("acme", "beta")}
    assert [r["unique_visitors_error"] > 0 for r in before["acme"]] == [True]
    forgot = run(env, "privacy", "forget", "--visitor", SHARED_VISITOR, "--merchant", "acme")
    assert forgot.returncode == 0, forgot.stderr
    assert json.loads(forgot.stdout)["sketches"] == {
        "acme": {"cleaned": 0, "rebuilt": 8, "left": 0}}
    assert "8 estimated ones rebuilt" in forgot.stderr
    [row] = _stats(env, "acme")
    assert (row["unique_visitors"], row["unique_visitors_error"], row["clicks"]) == (256, 0, 257)
    assert _stats(env, "beta") == before["beta"]


async def test_privacy_forget_leaves_an_estimated_cell_whose_raw_clicks_are_pruned(
        engine: Raw, tmp_path: Path) -> None:
    """A month's cell estimated over 300 visitors, the first of its days past the
    retention: it can't be rebuilt, and the command says it was left; the day's exact
    cells are cleaned."""
    today = _today()  # this test's own: the cutoff must fall exactly between two days
    kept = next(today - timedelta(days=k) for k in range(20, 60)
                if (today - timedelta(days=k)).day >= 2)
    pruned_day, kept_day = (kept - timedelta(days=1)).isoformat(), kept.isoformat()
    env = {**engine.env,
           "LINKLOOP_RETENTION_RAW_CLICKS_DAYS": str((today - kept).days)}
    for merchant, product in (("acme", 1), ("beta", 2)):
        _import_clicks(env, tmp_path, merchant, product,
                       [(kept_day, SHARED_VISITOR), (kept_day, f"{merchant:>4}Visitor00001")]
                       + [(pruned_day, f"visitor{merchant:>4}{n:05d}") for n in range(300)])
    pruned = run(env, "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["kept_from"] == kept_day
    before = {m: _stats(env, m) for m in ("acme", "beta")}
    forgot = run(env, "privacy", "forget", "--visitor", SHARED_VISITOR, "--merchant", "acme")
    assert forgot.returncode == 0, forgot.stderr
    assert json.loads(forgot.stdout)["sketches"] == {
        "acme": {"cleaned": 4, "rebuilt": 0, "left": 4}}
    assert "4 left (their raw clicks are partly pruned" in forgot.stderr
    days = {r["day"]: r["unique_visitors"] for r in _stats(env, "acme")}
    was = {r["day"]: r["unique_visitors"] for r in before["acme"]}
    assert (was[kept_day], days[kept_day]) == (2, 1) and days[pruned_day] == was[pruned_day]
    assert _stats(env, "beta") == before["beta"]
