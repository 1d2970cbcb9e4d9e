"""Staff logins: scrypt hashes, the login check, its lockout and its per-address limit,
``linkloop user create|list|unlock``."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse

from gateway.app import create_app
from gateway.appkeys import STORE
from gateway.store import Merchant, User
from gateway.store.sqlite import SQLiteStore
from gateway.users import (
    ADDRESS_MAX_ATTEMPTS,
    ADDRESS_WINDOW_SECONDS,
    LOCK_SECONDS,
    MAX_FAILURES,
    authenticate,
    hash_password,
    normalize_email,
    verify_password,
)

from .conftest import ClientFactory, make_settings
from .test_cli import run, serving
from .test_dashboard import PASSWORD, Client, add_user, login


def test_hashes_are_salted_scrypt_and_verify_only_the_password() -> None:
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert first != second  # a fresh salt each time
    kdf, n, r, p, _salt, _digest = first.split("$")
    assert (kdf, n, r, p) == ("scrypt", "16384", "8", "1")
    assert verify_password("correct horse battery", first)
    assert verify_password("correct horse battery", second)
    assert not verify_password("correct horse battery!", first)
    assert not verify_password("", first)


@pytest.mark.parametrize("broken", [
    "", "plain-text-password", "bcrypt$12$x$y$z$w", "scrypt$16384$8$1$!!!$???",
    "scrypt$3$8$1$c2FsdA==$aGFzaA==",  # N not a power of two: scrypt refuses it
    "scrypt$16384$8$1$c2FsdA==",
])
def test_a_malformed_hash_never_matches(broken: str) -> None:
    assert not verify_password("anything at all", broken)


def test_changed_parameters_do_not_verify() -> None:
    kdf, n, r, _p, salt, digest = hash_password("correct horse battery").split("$")
    assert not verify_password("correct horse battery", "$".join([kdf, n, r, "2", salt, digest]))


def test_emails_are_compared_lower_cased() -> None:
    assert normalize_email("  Anna@Example.COM ") == "anna@example.com"
    for bad in ("anna", "anna@", "@example.com", "anna@example", "a b@example.com"):
        with pytest.raises(ValueError):
            normalize_email(bad)


async def test_lockout_refuses_the_right_password_until_it_passes(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "users.db")
    try:
        await store.create_merchant(Merchant("m1", "One"))
        await store.create_user(User("anna@example.com", "m1", "marketing",
                                     hash_password("correct horse battery")))
        now = 1_000_000.0
        ok = await authenticate(store, "ANNA@example.com", "correct horse battery", now=now)
        assert ok.user is not None and ok.reason == "ok"
        for _ in range(MAX_FAILURES):
            assert (await authenticate(store, "anna@example.com", "wrong guess!",
                                       now=now)).reason == "bad_password"
        locked = await authenticate(store, "anna@example.com", "correct horse battery",
                                    now=now + 1)
        assert (locked.user, locked.reason) == (None, "locked")
        # Guessing on while locked does not extend the lock.
        await authenticate(store, "anna@example.com", "wrong guess!", now=now + 2)
        later = await authenticate(store, "anna@example.com", "correct horse battery",
                                   now=now + LOCK_SECONDS + 1)
        assert later.user is not None and later.user.email == "anna@example.com"
        unknown = await authenticate(store, "nobody@example.com", "correct horse battery",
                                     now=now)
        assert (unknown.user, unknown.reason) == (None, "unknown_email")
    finally:
        await store.close()


def test_user_create_reads_the_password_from_stdin(cli_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    assert run(cli_env, "merchant", "create", "acme", "--name", "Acme").returncode == 0
    made = run(cli_env, "user", "create", "Anna@Example.com", "--merchant", "acme",
               "--role", "marketing", stdin="correct horse battery\n")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {"email": "anna@example.com", "merchant": "acme",
                                       "role": "marketing"}
    with sqlite3.connect(tmp_path / "data" / "linkloop.db") as conn:
        (stored,) = conn.execute(
            "SELECT password_hash FROM users WHERE email = 'anna@example.com'").fetchone()
    assert stored.startswith("scrypt$") and "correct horse battery" not in stored
    assert verify_password("correct horse battery", stored)

    async def check() -> None:
        store = await SQLiteStore.open(tmp_path / "data" / "linkloop.db")
        try:
            result = await authenticate(store, "anna@example.com", "correct horse battery")
            assert result.user is not None and result.user.merchant_id == "acme"
        finally:
            await store.close()

    asyncio.run(check())


def test_user_create_mistakes_are_one_clear_line(cli_env: dict[str, str]) -> None:
    assert run(cli_env, "merchant", "create", "acme", "--name", "Acme").returncode == 0
    good = "correct horse battery\n"
    cases = [
        (["anna@example.com", "--merchant", "ghost", "--role", "marketing"], good,
         "no merchant 'ghost'"),
        (["not-an-email", "--merchant", "acme", "--role", "marketing"], good,
         "is not an email address"),
        (["anna@example.com", "--merchant", "acme", "--role", "marketing"], "short\n",
         "at least 10 characters"),
    ]
    for args, stdin, message in cases:
        result = run(cli_env, "user", "create", *args, stdin=stdin)
        assert result.returncode == 2, result
        assert message in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1
    assert run(cli_env, "user", "create", "anna@example.com", "--merchant", "acme",
               "--role", "merchant", stdin=good).returncode == 0
    again = run(cli_env, "user", "create", "ANNA@example.com", "--merchant", "acme",
                "--role", "marketing", stdin=good)
    assert again.returncode == 2 and "already exists" in again.stderr
    admin = run(cli_env, "user", "create", "root@example.com", "--merchant", "acme",
                "--role", "admin", stdin=good)
    assert admin.returncode == 2  # staff logins are marketing or merchant, never admin


# --- the limit per client address -------------------------------------------------------------
async def _gateway(aiohttp_client: ClientFactory, tmp_path: Path, **overrides: Any) -> Client:
    """A gateway with two merchants and a login in each (data under tmp_path/data)."""
    client = await aiohttp_client(create_app(make_settings(
        tmp_path, server__public_url="", **overrides)))
    assert client.app is not None
    for merchant, email in (("acme", "anna@acme.cn"), ("beta", "bob@beta.cn")):
        await client.app[STORE].create_merchant(Merchant(merchant, merchant.title()))
        await add_user(client, merchant, email)
    return client


def _error(page: str) -> str:
    found = re.search(r'id="login-error">([^<]+)<', page)
    assert found, page
    return found.group(1)


async def _assert_throttled(resp: ClientResponse) -> None:
    assert resp.status == 429 and "ll_session" not in resp.cookies
    assert 0 < int(resp.headers["Retry-After"]) <= ADDRESS_WINDOW_SECONDS
    assert _error(await resp.text()) == (
        "这个网络登录失败的次数太多，为保护账号安全，暂时不能登录。请 15 分钟后再试。")


async def _locked(client: Client, email: str) -> bool:
    assert client.app is not None
    user = await client.app[STORE].get_user(email)
    assert user is not None
    return user.locked(time.time())


async def test_one_address_spraying_many_logins_gets_429_and_locks_no_one(
    aiohttp_client: ClientFactory, tmp_path: Path,
) -> None:
    client = await _gateway(aiohttp_client, tmp_path, server__trust_forwarded=True)
    sprayed = ["anna@acme.cn", "bob@beta.cn",
               *(f"staff{n}@acme.cn" for n in range(ADDRESS_MAX_ATTEMPTS - 2))]
    for email in sprayed:  # one guess per login: no login's own lock is reached
        resp = await login(client, email, "Password123", **{"X-Forwarded-For": "203.0.113.7"})
        assert resp.status == 401
    # Refused before any password is checked, even the right one, and naming another
    # client in front of the address our proxy saw changes nothing.
    for forwarded in ("203.0.113.7", "198.51.100.1, 203.0.113.7"):
        await _assert_throttled(await login(client, "anna@acme.cn", PASSWORD,
                                            **{"X-Forwarded-For": forwarded}))
    # Anna, from her own address, is not locked out by someone else's spraying.
    assert not await _locked(client, "anna@acme.cn") and not await _locked(client, "bob@beta.cn")
    ok = await login(client, "anna@acme.cn", PASSWORD, **{"X-Forwarded-For": "198.51.100.2"})
    assert ok.status == 303 and "ll_session" in ok.cookies


async def test_without_a_trusted_proxy_forwarded_addresses_are_ignored(
    aiohttp_client: ClientFactory, tmp_path: Path,
) -> None:
    client = await _gateway(aiohttp_client, tmp_path)  # server.trust_forwarded = false
    for n in range(ADDRESS_MAX_ATTEMPTS):
        resp = await login(client, f"staff{n}@acme.cn", "Password123",
                           **{"X-Forwarded-For": f"198.51.100.{n}"})
        assert resp.status == 401
    await _assert_throttled(await login(client, "anna@acme.cn", PASSWORD,
                                        **{"X-Forwarded-For": "192.0.2.99"}))


async def test_only_failed_attempts_count_against_an_address(
    aiohttp_client: ClientFactory, tmp_path: Path,
) -> None:
    client = await _gateway(aiohttp_client, tmp_path)
    for n in range(ADDRESS_MAX_ATTEMPTS - 1):
        assert (await login(client, f"staff{n}@acme.cn", "Password123")).status == 401
    assert (await login(client, "anna@acme.cn", PASSWORD)).status == 303
    client.session.cookie_jar.clear()  # signed out again, in this browser
    assert (await login(client, "staff@acme.cn", "Password123")).status == 401  # the last one
    await _assert_throttled(await login(client, "bob@beta.cn", PASSWORD))


async def test_an_admin_unlocks_a_login_from_the_command_line(
    aiohttp_client: ClientFactory, tmp_path: Path, cli_env: dict[str, str],
) -> None:
    client = await _gateway(aiohttp_client, tmp_path)
    await add_user(client, "acme", "carl@acme.cn")
    for _ in range(MAX_FAILURES):
        assert (await login(client, "anna@acme.cn", "Password123")).status == 401
    assert (await login(client, "anna@acme.cn", PASSWORD)).status == 401  # locked
    listed = run(cli_env, "user", "list", "--merchant", "acme")
    assert listed.returncode == 0, listed.stderr
    users = {u["email"]: u for u in map(json.loads, listed.stdout.splitlines())}
    assert sorted(users) == ["anna@acme.cn", "carl@acme.cn"]  # acme's logins only
    assert users["anna@acme.cn"]["locked"] and users["anna@acme.cn"]["locked_until"]
    assert not users["carl@acme.cn"]["locked"] and users["carl@acme.cn"]["locked_until"] is None

    unlocked = run(cli_env, "user", "unlock", "Anna@Acme.cn")
    assert unlocked.returncode == 0, unlocked.stderr
    assert json.loads(unlocked.stdout) == {"email": "anna@acme.cn", "merchant": "acme",
                                           "was_locked": True, "locked": False}
    ok = await login(client, "anna@acme.cn", PASSWORD)  # at once, in the running gateway
    assert ok.status == 303 and "ll_session" in ok.cookies
    for args, message in ((["unlock", "nobody@acme.cn"], "no user 'nobody@acme.cn'"),
                          (["unlock", "not-an-email"], "is not an email address"),
                          (["list", "--merchant", "ghost"], "no merchant 'ghost'")):
        wrong = run(cli_env, "user", *args)
        assert wrong.returncode == 2 and message in wrong.stderr
        assert wrong.stderr.count("\n") == 1 and "Traceback" not in wrong.stderr


async def test_the_limit_holds_across_serve_workers(cli_env: dict[str, str]) -> None:
    assert run(cli_env, "merchant", "create", "acme", "--name", "Acme").returncode == 0
    made = run(cli_env, "user", "create", "anna@acme.cn", "--merchant", "acme", "--role",
               "marketing", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr

    async def attempt(base: str, password: str) -> int:
        # A new connection for each: the kernel spreads them over both processes.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(f"{base}/dashboard/login") as page:
                token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
                assert token
            async with http.post(f"{base}/dashboard/login", allow_redirects=False, data={
                    "csrf": token.group(1), "email": "anna@acme.cn",
                    "password": password}) as resp:
                return resp.status

    async def workers_answering(base: str) -> set[int]:
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as ready:
                seen.add((await ready.json())["worker"])
        return seen

    with serving(cli_env, "--workers", "2") as (_proc, base):
        assert await workers_answering(base) == {0, 1}
        # Anna's own lock comes after five; the address's limit counts locked tries too.
        assert [await attempt(base, f"guess {n} wrong")
                for n in range(ADDRESS_MAX_ATTEMPTS)] == [401] * ADDRESS_MAX_ATTEMPTS
        assert [await attempt(base, PASSWORD) for _ in range(4)] == [429] * 4
