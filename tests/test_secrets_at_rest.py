"""Secrets at rest: WeCom and WeChat secrets are sealed in the database on both engines,
older plain rows are sealed when storage opens, `linkloop secrets rotate` changes the key
under a running gateway, and exports keep the secrets sealed unless asked."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.settings import Settings
from gateway.wecom.crypto import WeComCrypto

from .conftest import add_tenant, make_settings
from .fake_wechat import APP_SECRET, APPID, FakeWeChat
from .fake_wecom import AES_KEY, CALLBACK_TOKEN, CORP_ID, SECRET, FakeWeCom
from .pg import connect, fresh_schema, postgres_url, with_schema
from .test_cli import _merchant_and_token, run, serving

ENTRY = {"kind": "acquisition_link", "url": "https://work.weixin.qq.com/ca/cawcde5a6b7c8d9e0f",
         "corp_id": CORP_ID, "secret": SECRET, "callback_token": CALLBACK_TOKEN,
         "encoding_aes_key": AES_KEY}
#: Every secret a merchant hands over, as the text that must never be in storage.
PLAIN = (SECRET, CALLBACK_TOKEN, AES_KEY, APP_SECRET)


@pytest.fixture
async def fakes(aiohttp_server: Any) -> tuple[TestServer, TestServer]:
    return (await aiohttp_server(FakeWeCom().app()), await aiohttp_server(FakeWeChat().app()))


@pytest.fixture(params=["sqlite", "postgres"])
async def engine_settings(request: pytest.FixtureRequest, tmp_path: Path,
                          fakes: tuple[TestServer, TestServer],
                          ) -> AsyncIterator[tuple[str, Settings]]:
    wecom, wechat = fakes
    apis = {"wecom__api_base": str(wecom.make_url("/cgi-bin")),
            "wechat__api_base": str(wechat.make_url(""))}
    if request.param == "sqlite":
        yield "sqlite", make_settings(tmp_path, **apis)
        return
    url = postgres_url()
    async with fresh_schema(url, create=False) as schema:
        yield schema, make_settings(tmp_path, storage__url=with_schema(url, schema), **apis)


def _stored_bytes(data_dir: Path) -> bytes:
    """Everything SQLite keeps on disk: the file, its write-ahead log and its index."""
    return b"".join(p.read_bytes() for p in data_dir.glob("linkloop.db*"))


async def _stored_rows(where: str, settings: Settings) -> list[str]:
    """The stored secret columns, as text, read behind the gateway's back."""
    queries = ("SELECT secrets FROM entries", "SELECT secret FROM app_credentials")
    if where == "sqlite":
        with sqlite3.connect(settings.data_dir / "linkloop.db") as conn:
            return [str(r[0]) for q in queries for r in conn.execute(q)]
    conn = await connect(postgres_url(), where)
    try:
        return [str(r[0]) for q in (queries[0].replace("secrets", "secrets::text", 1),
                                    queries[1]) for r in await conn.fetch(q)]
    finally:
        await conn.close()


async def _verifies_callbacks(client: Any, merchant: str = "acme") -> bool:
    """WeCom's URL verification: answered only with the right callback token and AES key."""
    crypto = WeComCrypto(CALLBACK_TOKEN, AES_KEY, CORP_ID)
    echostr = crypto.encrypt("8217465830185")
    params, _ = FakeWeCom.envelope("x")
    params["msg_signature"] = crypto.sign(params["timestamp"], params["nonce"], echostr)
    resp = await client.get(f"/wecom/callback/{merchant}", params={**params, "echostr": echostr})
    return resp.status == 200 and await resp.text() == "8217465830185"


async def test_the_database_holds_no_plain_secret(aiohttp_client: Any,
                                                  engine_settings: tuple[str, Settings]) -> None:
    where, settings = engine_settings
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    tenant = await add_tenant(client, "acme")
    resp = await client.put("/api/entry", json=ENTRY, headers=tenant.auth)
    assert resp.status == 200, await resp.text()
    resp = await client.put("/api/credentials/wechat_miniprogram",
                            json={"appid": APPID, "secret": APP_SECRET}, headers=tenant.auth)
    assert resp.status == 200, await resp.text()
    # The gateway uses them (the callback is verified with the stored token and key) ...
    assert await _verifies_callbacks(client)
    # ... and storage holds them only sealed.
    rows = await _stored_rows(where, settings)
    assert len(rows) == 2 and all('llsec1:' in row for row in rows)
    assert not [s for s in PLAIN if any(s in row for row in rows)]
    if where == "sqlite":
        stored = _stored_bytes(settings.data_dir)
        assert not [s for s in PLAIN if s.encode() in stored]


async def _plain_rows(where: str, settings: Settings) -> None:
    """What a version before sealing stored, for two merchants: the secrets as they came."""
    secrets = json.dumps({k: v for k, v in ENTRY.items() if k not in ("kind", "url")})
    statements = []
    for merchant in ("acme", "beta"):
        statements += [
            f"INSERT INTO merchants (id, name, domains, created_at) VALUES ('{merchant}', "
            "'M', '[]', 1)",
            "INSERT INTO entries (merchant_id, kind, config, secrets, updated_at) VALUES "
            f"('{merchant}', 'acquisition_link', '{{\"url\": \"{ENTRY['url']}\"}}', "
            f"'{secrets}', 1)",
            "INSERT INTO app_credentials (merchant_id, platform, app_id, secret, updated_at) "
            f"VALUES ('{merchant}', 'wechat_miniprogram', '{APPID}', '{APP_SECRET}', 1)"]
    if where == "sqlite":
        with sqlite3.connect(settings.data_dir / "linkloop.db") as conn:
            for statement in statements:
                conn.execute(statement)
        return
    conn = await connect(postgres_url(), where)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _postgres_table_files(schema: str) -> bytes:
    """The bytes of the two tables' files as the server keeps them (after a checkpoint
    writes its buffers out): dead row versions included, which no SELECT shows."""
    conn = await connect(postgres_url(), schema)
    try:
        await conn.execute("CHECKPOINT")
        found = b""
        for table in ("entries", "app_credentials"):
            found += await conn.fetchval(
                "SELECT pg_read_binary_file(pg_relation_filepath($1::regclass))", table)
        return found
    finally:
        await conn.close()


async def test_plain_secrets_of_an_older_version_are_sealed_on_open(
        engine_settings: tuple[str, Settings], cli_env: dict[str, str]) -> None:
    where, settings = engine_settings
    env = {**cli_env, "LINKLOOP_STORAGE_URL": settings["storage.url"]}
    assert run(env, "migrate").returncode == 0  # the tables, empty
    await _plain_rows(where, settings)
    assert run(env, "migrate").returncode == 0  # the upgrade: storage opens
    rows = await _stored_rows(where, settings)
    assert len(rows) == 4 and all(row.startswith(('llsec1:', '"llsec1:')) for row in rows)
    # Not even on a free page, in the write-ahead log, or in a dead row version.
    if where == "sqlite":
        assert not [s for s in PLAIN if s.encode() in _stored_bytes(settings.data_dir)]
    else:
        # PostgreSQL keeps a dead row version while any older transaction in the database
        # might still read it (other suites share this server): the tables are rewritten
        # (VACUUM FULL) on every re-seal, so `secrets rotate` again until none is left.
        deadline = time.monotonic() + 30
        while [s for s in PLAIN if s.encode() in await _postgres_table_files(where)]:
            assert time.monotonic() < deadline, "a plain secret stays in the table files"
            assert run(env, "secrets", "rotate").returncode == 0
    plain = run(env, "export", "--merchant", "acme", "--decrypt-secrets")
    lines = [json.loads(line) for line in plain.stdout.splitlines()]
    entry = next(line["data"] for line in lines if line.get("kind") == "entry")
    assert entry["secrets"]["callback_token"] == CALLBACK_TOKEN
    credentials = next(line["data"] for line in lines if line.get("kind") == "credentials")
    assert credentials["secret"] == APP_SECRET


def test_a_sealed_secret_opens_only_in_its_own_place() -> None:
    from gateway.secretbox import SecretBox, SecretsKeyError

    box = SecretBox.ephemeral_box()
    sealed = box.seal(SECRET, "entries/acme")
    assert box.open(sealed, "entries/acme") == SECRET
    with pytest.raises(SecretsKeyError, match="entries/beta"):
        box.open(sealed, "entries/beta")  # copied onto another merchant's row
    with pytest.raises(SecretsKeyError, match="does not hold"):
        SecretBox.ephemeral_box().open(sealed, "entries/acme")


def _key_ids(rows: list[str]) -> set[str]:
    return {row.strip('"').split(":")[1] for row in rows}


async def test_rotation_under_a_running_gateway(cli_env: dict[str, str], tmp_path: Path) -> None:
    token = _merchant_and_token(cli_env)
    auth = {"Authorization": f"Bearer {token}"}
    key_file = tmp_path / "data" / "secrets.key"
    settings = make_settings(tmp_path)
    with serving(cli_env) as (_proc, base):
        async with aiohttp.ClientSession(base_url=base) as http:
            resp = await http.put("/api/entry", json=ENTRY, headers=auth)
            assert resp.status == 200, await resp.text()
            old_rows = await _stored_rows("sqlite", settings)
            old_key = key_file.read_text()

            rotated = run(cli_env, "secrets", "rotate")
            assert rotated.returncode == 0, rotated.stderr
            report = json.loads(rotated.stdout)
            assert report["key"] != report["previous_key"]
            assert report["resealed"] == {"entries": 1, "app_credentials": 0}
            assert report["retired_keys"] == [report["previous_key"]]
            assert len(key_file.read_text().split()) == 1 and key_file.read_text() != old_key
            assert _key_ids(old_rows) == {report["previous_key"]}
            assert _key_ids(await _stored_rows("sqlite", settings)) == {report["key"]}

            # The running gateway reads the row sealed under the new key (reading the key
            # file again), and seals under it what it stores from now on.
            resp = await http.put("/api/entry", json={**ENTRY, "secret": "new-secret-0001"},
                                  headers=auth)
            assert resp.status == 200, await resp.text()
            assert await _verifies_callbacks(http)
    assert _key_ids(await _stored_rows("sqlite", settings)) == {report["key"]}


async def test_exports_keep_secrets_sealed_unless_asked(cli_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    source = tmp_path / "data"
    _merchant_and_token(cli_env)
    # An entry with secrets, stored the way the gateway stores them.
    from gateway.settings import load_settings
    from gateway.store import Entry, open_store

    store = await open_store(load_settings(environ={
        k: v for k, v in cli_env.items() if k.startswith("LINKLOOP_")}))
    try:
        await store.put_entry(Entry("acme", "acquisition_link",
                                    {"url": ENTRY["url"]},
                                    {k: ENTRY[k] for k in ("corp_id", "secret",
                                                           "callback_token", "encoding_aes_key")}))
    finally:
        await store.close()

    sealed = tmp_path / "sealed.jsonl"
    assert run(cli_env, "export", "--merchant", "acme", "--out", str(sealed)).returncode == 0
    text = sealed.read_text()
    assert not [s for s in PLAIN if s in text] and "llsec1:" in text
    assert json.loads(text.splitlines()[0])["secrets"] == "sealed"

    # Another deployment (its own key) can't open them without the source's key ...
    target = {**cli_env, "LINKLOOP_STORAGE_DATA_DIR": str(tmp_path / "other")}
    refused = run(target, "import", str(sealed))
    assert refused.returncode == 2 and "--secrets-key-file" in refused.stderr
    assert run(target, "merchant", "create", "acme", "--name", "x").returncode == 0  # none made
    target = {**cli_env, "LINKLOOP_STORAGE_DATA_DIR": str(tmp_path / "third")}
    # ... and can with it, storing them sealed under its own key.
    taken = run(target, "import", str(sealed), "--secrets-key-file", str(source / "secrets.key"))
    assert taken.returncode == 0, taken.stderr
    again = run(target, "export", "--merchant", "acme", "--decrypt-secrets")
    entry = next(json.loads(line)["data"] for line in again.stdout.splitlines()
                 if '"kind": "entry"' in line)
    assert entry["secrets"]["secret"] == SECRET
    assert not [s for s in PLAIN if s.encode() in _stored_bytes(tmp_path / "third")]

    # An export from before sealing (version 1, plain secrets) still imports.
    old = [json.loads(line) for line in again.stdout.splitlines()]
    old[0] = {"format": "linkloop-export", "version": 1, "merchant": "acme"}
    older = tmp_path / "v1.jsonl"
    older.write_text("".join(json.dumps(line) + "\n" for line in old))
    fourth = {**cli_env, "LINKLOOP_STORAGE_DATA_DIR": str(tmp_path / "fourth")}
    assert run(fourth, "import", str(older)).returncode == 0
    assert not [s for s in PLAIN if s.encode() in _stored_bytes(tmp_path / "fourth")]
    back = run(fourth, "export", "--merchant", "acme", "--decrypt-secrets").stdout
    assert f'"callback_token": "{CALLBACK_TOKEN}"' in back
