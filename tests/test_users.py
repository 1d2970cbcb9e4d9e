"""Staff logins: scrypt hashes, the login check and its lockout, ``linkloop user create``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.store import Merchant, User
from gateway.store.sqlite import SQLiteStore
from gateway.users import (
    LOCK_SECONDS,
    MAX_FAILURES,
    authenticate,
    hash_password,
    normalize_email,
    verify_password,
)

from .test_cli import run


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
