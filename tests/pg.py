"""PostgreSQL for the tests: the server from the environment, a throwaway schema per test.

``LINKLOOP_TEST_POSTGRES_URL`` names the server (e.g. postgresql://postgres@127.0.0.1:5432/test).
Without it the PostgreSQL cases skip, unless ``LINKLOOP_TEST_REQUIRE_POSTGRES=1`` (as in CI),
which turns the skip into a failure so a missing server can never pass unnoticed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.store.postgres import quote_ident

__all__ = ["REQUIRE_VAR", "URL_VAR", "connect", "fresh_schema", "postgres_url", "with_schema"]

URL_VAR = "LINKLOOP_TEST_POSTGRES_URL"
REQUIRE_VAR = "LINKLOOP_TEST_REQUIRE_POSTGRES"


def postgres_url() -> str:
    """The test server's URL; skips the test (or fails it, when required) if none is set."""
    url = os.environ.get(URL_VAR, "")
    if not url:
        reason = (f"PostgreSQL tests need {URL_VAR} "
                  "(e.g. postgresql://postgres@127.0.0.1:5432/test)")
        if os.environ.get(REQUIRE_VAR) == "1":
            pytest.fail(f"{reason}; {REQUIRE_VAR}=1 forbids skipping them", pytrace=False)
        pytest.skip(reason)
    return url


def with_schema(url: str, schema: str) -> str:
    """``url`` with LinkLoop's ``schema=`` query parameter (as ``storage.url`` takes it)."""
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


async def connect(url: str, schema: str | None = None) -> asyncpg.Connection:
    """A plain connection for looking behind the store, in ``schema`` if given."""
    settings = {"search_path": quote_ident(schema)} if schema else {}
    return await asyncpg.connect(url, server_settings=settings)


@contextlib.asynccontextmanager
async def fresh_schema(url: str, *, create: bool = True) -> AsyncIterator[str]:
    """A uniquely named schema (made now, or left for the store to make), dropped after."""
    name = f"linkloop_test_{secrets.token_hex(6)}"
    if create:
        conn = await connect(url)
        try:
            await conn.execute(f"CREATE SCHEMA {quote_ident(name)}")
        finally:
            await conn.close()
    try:
        yield name
    finally:
        conn = await connect(url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
        finally:
            await conn.close()
