"""Shared fixtures: a real gateway on loopback, real SQLite files under tmp_path."""

from __future__ import annotations

import os
import re
import secrets
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.appkeys import STORE, TOKENS
from gateway.settings import Settings, load_settings
from gateway.store import Merchant

REPO = Path(__file__).resolve().parents[1]
#: Real-world data the tests check against, with its sources (tests/data/README.md).
DATA = REPO / "tests" / "data"

# A taobao-app shopper and a desktop browser, reduced to the markers that matter.
TAOBAO_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 AliApp(TB/10.30.0)"
DESKTOP_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
              "(KHTML, like Gecko) Chrome/120.0 Safari/537.36")
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


# The fuzz suite's seed (tests/test_fuzz.py): fixed per run, printed in pytest's header, and
# replayed with LINKLOOP_FUZZ_SEED=<seed>.
_FUZZ_SEED_TEXT = os.environ.get("LINKLOOP_FUZZ_SEED", "").strip()
FUZZ_SEED = (int(_FUZZ_SEED_TEXT) if _FUZZ_SEED_TEXT.isdigit()
             else zlib.crc32(_FUZZ_SEED_TEXT.encode()) if _FUZZ_SEED_TEXT
             else secrets.randbelow(2**32))


def pytest_report_header() -> str:
    return f"fuzz seed: {FUZZ_SEED} (replay with LINKLOOP_FUZZ_SEED={FUZZ_SEED})"


def _fuzz_summary(terminalreporter: Any) -> None:
    fuzz = sys.modules.get("tests.test_fuzz")
    sent = getattr(fuzz, "SENT", None)
    if sent:
        families = ", ".join(f"{name} {count}" for name, count in sent.items())
        terminalreporter.write_line(
            f"fuzz: {sum(sent.values())} generated requests ({families}), seed {FUZZ_SEED} "
            f"(replay with LINKLOOP_FUZZ_SEED={FUZZ_SEED})")


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base = load_settings(environ={})
    values: dict[str, Any] = {"storage__data_dir": str(tmp_path / "data"),
                              "recorder__flush_interval_ms": 50,
                              "server__public_url": "https://go.test"}
    values.update(overrides)
    return base.with_overrides(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def client(aiohttp_client: ClientFactory, settings: Settings) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(settings))


class Tenant:
    """A merchant with API tokens, made through the real store and token service."""

    def __init__(self, merchant_id: str, token: str, marketing_token: str) -> None:
        self.id = merchant_id
        self.token = token
        self.marketing_token = marketing_token

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def marketing_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.marketing_token}"}


async def add_tenant(client: TestClient[Any, Any], merchant_id: str,
                     domains: tuple[str, ...] = ("shop.example.com",)) -> Tenant:
    app = client.app
    assert app is not None
    await app[STORE].create_merchant(Merchant(merchant_id, merchant_id.title(), domains))
    tokens = app[TOKENS]
    return Tenant(merchant_id, tokens.mint(merchant_id, "merchant", 3600),
                  tokens.mint(merchant_id, "marketing", 3600))


@pytest.fixture
async def tenant(client: TestClient[Any, Any]) -> Tenant:
    return await add_tenant(client, "acme")


PRODUCT = {
    "title": "明前龙井 250g",
    "price": 168,
    "image_url": "https://img.example.com/tea.jpg",
    "targets": {
        "taobao": {"item_id": "600000000001", "share_token": "￥AbC123￥"},
        "jd": {"sku": "100000000001"},
        "web": {"url": "https://shop.example.com/tea"},
    },
}


async def create_product(client: TestClient[Any, Any], tenant: Tenant,
                         body: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await client.post("/api/products", json=body or PRODUCT, headers=tenant.auth)
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running ``linkloop`` as a real process against tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLOOP_")}
    env["LINKLOOP_STORAGE_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONUNBUFFERED"] = "1"
    return env


LINKLOOP = [sys.executable, "-m", "gateway"]


@pytest.fixture
async def recorder_flushed(client: TestClient[Any, Any]) -> AsyncIterator[Callable[[], Any]]:
    from gateway.appkeys import RECORDER

    async def flush() -> None:
        assert client.app is not None
        await client.app[RECORDER].flush()

    yield flush


# --- CI: no test skips unnoticed ----------------------------------------------------------------
#: Set by .ci/run: a test that skips fails the run, unless its reason is on ALLOWED_SKIPS.
STRICT_SKIPS_VAR = "LINKLOOP_TEST_STRICT_SKIPS"
#: Skips CI may have: (a regular expression matching the skip's reason, why CI can't run that
#: test). Empty: CI has PostgreSQL, Chromium and zbar, runs on Linux, and runs everything.
ALLOWED_SKIPS: tuple[tuple[str, str], ...] = ()

_skips: list[tuple[str, str]] = []


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):  # (file, line, "Skipped: reason")
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


def _note_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips.append((report.nodeid, _skip_reason(report)))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _note_skip(report)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note_skip(report)


def _unexpected_skips() -> list[tuple[str, str]]:
    if os.environ.get(STRICT_SKIPS_VAR) != "1":
        return []
    return [(test, reason) for test, reason in _skips
            if not any(re.search(allowed, reason) for allowed, _why in ALLOWED_SKIPS)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected_skips() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    _fuzz_summary(terminalreporter)
    unexpected = _unexpected_skips()
    if unexpected:
        terminalreporter.section(f"{len(unexpected)} unexpected skips ({STRICT_SKIPS_VAR}=1)",
                                 red=True)
        for test, reason in unexpected:
            terminalreporter.line(f"{test}: {reason}")
        terminalreporter.line("Each one fails this run: make it run here, or add its reason "
                              "to ALLOWED_SKIPS in tests/conftest.py with why CI can't run it.")
