"""``linkloop product``, ``merchant list|update`` and ``user reset-password`` as real
processes on a real SQLite file: the API's checks and error codes, two merchants kept apart,
and a running gateway that hears of a product changed from the shell."""

from __future__ import annotations

import asyncio
import csv
import http.client
import io
import json
import time
from pathlib import Path
from typing import Any

from gateway.settings import load_settings
from gateway.store import open_store
from gateway.users import verify_password

from .test_cli import run, serving

TAOBAO_UA = "Mozilla/5.0 (iPhone) Mobile/15E148 AliApp(TB/10.30.0)"


def ok(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    done = run(env, *args, stdin=stdin)
    assert done.returncode == 0, (args, done.stderr)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else lines


def refused(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = run(env, *args, stdin=stdin)
    assert done.returncode == 2, (args, done.stdout, done.stderr)
    assert done.stdout == ""
    return done.stderr.strip()


def _two(env: dict[str, str]) -> None:
    for merchant, domain in (("acme", "shop.acme.cn"), ("other", "other.example.com")):
        ok(env, "merchant", "create", merchant, "--name", merchant.title(), "--domain", domain)


def test_products_from_the_shell_are_checked_as_the_api_checks_them(
        cli_env: dict[str, str]) -> None:
    _two(cli_env)
    made = ok(cli_env, "product", "create", "--merchant", "acme", "-", "--set", "slug=longjing",
              "--set", "targets.jd.sku=100012043978",
              stdin=json.dumps({"title": "明前龙井", "targets": {
                  "taobao": {"item_id": "600000000001"}}}))
    assert made["code"] == "longjing" and made["share_url"].endswith("/p/longjing")
    assert made["targets"] == {"taobao": {"item_id": "600000000001"},
                               "jd": {"sku": "100012043978"}} and made["state"] == "live"
    # The API's code and field, on one line.
    said = refused(cli_env, "product", "create", "--merchant", "acme", "--set", "title=x",
                   "--set", "targets.jd.sku=12a")
    assert said.startswith("linkloop: invalid_field targets.jd.sku: ")
    said = refused(cli_env, "product", "create", "--merchant", "acme", "--set", "title=x",
                   "--set", "targets.web.url=https://other.example.com/x")
    assert said.startswith("linkloop: host_not_allowed targets.web.url: ")
    assert "slug_taken slug" in refused(
        cli_env, "product", "create", "--merchant", "other", "--set", "title=x",
        "--set", "slug=longjing", "--set", "targets.jd.sku=12345")
    assert "--set 'oops'" in refused(cli_env, "product", "create", "--merchant", "acme",
                                     "--set", "oops")
    theirs = ok(cli_env, "product", "create", "--merchant", "other", "--set", "title=Theirs",
                "--set", "targets.jd.sku=12345", "--set", "valid_from=2099-01-01T00:00")
    assert theirs["valid_from"] == "2099-01-01T00:00:00+08:00" and theirs["state"] == "scheduled"

    # Shown by id or by code, never another merchant's.
    assert ok(cli_env, "product", "show", "--merchant", "acme", "longjing")["id"] == made["id"]
    assert ok(cli_env, "product", "show", "--merchant", "acme", str(made["id"]))["code"] == (
        "longjing")
    assert "no product" in refused(cli_env, "product", "show", "--merchant", "acme",
                                   str(theirs["id"]))
    assert "no product" in refused(cli_env, "product", "retire", "--merchant", "acme",
                                   theirs["code"])

    # One storefront's field changes, the others stay; --unset takes one out.
    changed = ok(cli_env, "product", "update", "--merchant", "acme", "longjing",
                 "--set", "targets.jd.sku=100000000009", "--set", "price=9.9")
    assert changed["targets"] == {"taobao": {"item_id": "600000000001"},
                                  "jd": {"sku": "100000000009"}} and changed["price"] == "9.90"
    changed = ok(cli_env, "product", "update", "--merchant", "acme", "longjing",
                 "--unset", "targets.jd")
    assert list(changed["targets"]) == ["taobao"]
    assert "immutable_field slug" in refused(cli_env, "product", "update", "--merchant", "acme",
                                             "longjing", "--set", "slug=new")

    # Retire and restore: the same code.
    assert ok(cli_env, "product", "retire", "--merchant", "acme", "longjing")["state"] == (
        "retired")
    assert "product_retired" in refused(cli_env, "product", "update", "--merchant", "acme",
                                        "longjing", "--set", "title=y")
    back = ok(cli_env, "product", "restore", "--merchant", "acme", "longjing")
    assert (back["code"], back["state"]) == ("longjing", "live")

    listed = ok(cli_env, "product", "list", "--merchant", "acme", "--q", "龙井")
    assert listed["code"] == "longjing"
    assert ok(cli_env, "product", "list", "--merchant", "other", "--state", "scheduled")[
        "code"] == theirs["code"]
    assert ok(cli_env, "product", "list", "--merchant", "other", "--state", "live") == []


def test_an_import_from_the_shell_is_all_or_nothing(cli_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    _two(cli_env)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["title", "targets.jd.sku", "targets.web.url"])
    for i in range(5):
        writer.writerow([f"茶 {i}", "12a" if i == 3 else f"1000{i}",
                         f"https://shop.acme.cn/{i}"])
    bad = tmp_path / "products.csv"
    bad.write_text(out.getvalue(), encoding="utf-8")
    done = run(cli_env, "product", "import", "--merchant", "acme", str(bad))
    assert done.returncode == 1, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["invalid"], answer["created"]) == (1, 0)
    assert [(r["row"], r["errors"][0]["field"]) for r in answer["rows"]
            if r["status"] == "error"] == [(5, "targets.jd.sku")]
    assert ok(cli_env, "product", "list", "--merchant", "acme") == []
    bad.write_text(out.getvalue().replace("12a", "10003"), encoding="utf-8")
    dry = ok(cli_env, "product", "import", "--merchant", "acme", str(bad), "--dry-run")
    assert (dry["valid"], dry["created"]) == (5, 0)
    assert ok(cli_env, "product", "list", "--merchant", "acme") == []
    assert ok(cli_env, "product", "import", "--merchant", "acme", str(bad))["created"] == 5
    assert len(ok(cli_env, "product", "list", "--merchant", "acme")) == 5
    assert ok(cli_env, "product", "list", "--merchant", "other") == []


def test_merchants_are_listed_and_their_domains_changed(cli_env: dict[str, str]) -> None:
    _two(cli_env)
    assert [m["id"] for m in ok(cli_env, "merchant", "list")] == ["acme", "other"]
    web = ["--set", "title=x", "--set", "targets.web.url=https://tea.acme.cn/x"]
    assert "host_not_allowed" in refused(cli_env, "product", "create", "--merchant", "acme",
                                         *web)
    moved = ok(cli_env, "merchant", "update", "acme", "--add-domain", "Tea.Acme.CN.",
               "--name", "Acme 茶庄")
    assert moved == {"id": "acme", "name": "Acme 茶庄",
                     "domains": ["shop.acme.cn", "tea.acme.cn"]}
    ok(cli_env, "product", "create", "--merchant", "acme", *web)
    assert ok(cli_env, "merchant", "update", "acme", "--remove-domain", "shop.acme.cn")[
        "domains"] == ["tea.acme.cn"]
    assert "no domain" in refused(cli_env, "merchant", "update", "acme", "--remove-domain",
                                  "nope.cn")
    assert "not a host name" in refused(cli_env, "merchant", "update", "acme", "--domain",
                                        "https://x")
    assert ok(cli_env, "merchant", "update", "other", "--domain", "b.cn", "--domain", "a.cn")[
        "domains"] == ["b.cn", "a.cn"]
    assert [m["domains"] for m in ok(cli_env, "merchant", "list")] == [["tea.acme.cn"],
                                                                        ["b.cn", "a.cn"]]
    assert "no merchant" in refused(cli_env, "merchant", "update", "nobody", "--name", "x")


def test_a_password_reset_from_the_shell(cli_env: dict[str, str]) -> None:
    _two(cli_env)
    for email, merchant in (("anna@acme.cn", "acme"), ("bob@other.cn", "other")):
        ok(cli_env, "user", "create", email, "--merchant", merchant, "--role", "merchant",
           stdin="the first passphrase\n")
    answer = ok(cli_env, "user", "reset-password", "Anna@Acme.cn",
                stdin="a brand new passphrase\n")
    assert answer == {"email": "anna@acme.cn", "merchant": "acme", "password_reset": True,
                      "sessions_ended": True, "locked": False}
    assert "at least" in refused(cli_env, "user", "reset-password", "anna@acme.cn",
                                 stdin="short\n")
    assert "no user" in refused(cli_env, "user", "reset-password", "nobody@acme.cn",
                                stdin="a brand new passphrase\n")

    async def hashes() -> dict[str, str]:
        settings = load_settings(environ=cli_env)
        store = await open_store(settings)
        try:
            found = {e: await store.get_user(e) for e in ("anna@acme.cn", "bob@other.cn")}
            return {e: u.password_hash for e, u in found.items() if u}
        finally:
            await store.close()

    stored = asyncio.run(hashes())
    assert verify_password("a brand new passphrase", stored["anna@acme.cn"])
    assert not verify_password("the first passphrase", stored["anna@acme.cn"])
    assert verify_password("the first passphrase", stored["bob@other.cn"])


def test_a_running_gateway_hears_of_a_product_retired_from_the_shell(
        cli_env: dict[str, str]) -> None:
    _two(cli_env)
    ok(cli_env, "product", "create", "--merchant", "acme", "--set", "title=Tea",
       "--set", "slug=tea-one", "--set", "targets.taobao.item_id=600000000001")
    with serving(cli_env) as (_proc, base):
        host, port = base.removeprefix("http://").split(":")

        def status() -> int:
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request("GET", "/p/tea-one", headers={"User-Agent": TAOBAO_UA})
                return conn.getresponse().status
            finally:
                conn.close()

        assert status() == 302  # cached now
        ok(cli_env, "product", "retire", "--merchant", "acme", "tea-one")
        deadline = time.monotonic() + 10
        while status() != 410 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status() == 410
        ok(cli_env, "product", "restore", "--merchant", "acme", "tea-one")
        deadline = time.monotonic() + 10
        while status() != 302 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status() == 302
