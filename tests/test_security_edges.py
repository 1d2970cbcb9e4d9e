"""Security edges at their boundaries: the visitor cookie and API tokens.

Each case sits right at an edge (a cookie one character too long, a token one second
before and at its expiry) or just past it, and checks what a user or an attacker would
see: the status and error code, and what storage keeps.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import json
import time
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from gateway.appkeys import RECORDER, SETTINGS, STORE
from gateway.auth import AuthError, TokenService
from gateway.ids import _ClickIds, _clock, is_visitor_id, new_click_id
from gateway.keys import auth_secret
from gateway.shopper import VISITOR_COOKIE

from .conftest import DESKTOP_UA, PRODUCT, TAOBAO_UA, Tenant, add_tenant, create_product
from .hand import Hand

# --- the visitor cookie ----------------------------------------------------------------------
OURS = "AbCdEfGh_-012345"  # 16 base64url characters: what the gateway sets
NOT_OURS = {
    "one_too_long": OURS + "x",
    "twice_as_long": OURS * 2,
    "huge": "A" * 4000,
    "one_too_short": OURS[:-1],
    "eight_chars": "AAAAAAAA",
    "twelve_chars": "AAAAAAAAAAAA",
    "uuid": "550e8400-e29b-41d4-a716-446655440000",
    "analytics_cookie": "GA1.2.1234567890",
    "dot_inside": "AAAAAAAA.AAAAAAA",
    "percent_inside": "AAAAAAAAAAAAAA%41",
    "markup": "<script>alert(1)</script>",
    "quoted": f'"{OURS}"',
    "space_inside": "AAAAAAAA AAAAAAA",
    "sql": "' OR 1=1 --AAAAAA",
    "empty": "",
}


async def _tap(client: TestClient[Any, Any], code: str, ua: str, cookie: str | None
               ) -> tuple[int, str | None]:
    """One share-link visit; (status, the ll_v value the answer sets, if any)."""
    client.session.cookie_jar.clear()
    headers = {"User-Agent": ua}
    if cookie is not None:
        headers["Cookie"] = f"{VISITOR_COOKIE}={cookie}"
    resp = await client.get(f"/p/{code}", headers=headers, allow_redirects=False)
    await resp.read()
    morsel = resp.cookies.get(VISITOR_COOKIE)
    return resp.status, morsel.value if morsel else None


async def _stored_visitors(client: TestClient[Any, Any], merchant_id: str) -> list[str]:
    app = client.app
    assert app is not None
    await app[RECORDER].flush()
    return [c.visitor for c in await app[STORE].export_clicks(merchant_id, after="", limit=100)]


@pytest.mark.parametrize("ua", [TAOBAO_UA, DESKTOP_UA], ids=["redirect", "landing_page"])
@pytest.mark.parametrize("value", list(NOT_OURS.values()), ids=list(NOT_OURS))
async def test_a_visitor_cookie_not_ours_gets_a_fresh_one_and_is_never_stored(
    client: TestClient[Any, Any], tenant: Tenant, value: str, ua: str,
) -> None:
    product = await create_product(client, tenant)
    status, fresh = await _tap(client, product["code"], ua, value)
    assert status == (302 if ua == TAOBAO_UA else 200)
    assert fresh is not None and fresh != value and is_visitor_id(fresh)
    assert await _stored_visitors(client, tenant.id) == [fresh]


@pytest.mark.parametrize("ua", [TAOBAO_UA, DESKTOP_UA], ids=["redirect", "landing_page"])
async def test_our_visitor_cookie_is_kept_as_it_is(
    client: TestClient[Any, Any], tenant: Tenant, ua: str,
) -> None:
    product = await create_product(client, tenant)
    status, first = await _tap(client, product["code"], ua, None)
    assert first is not None and is_visitor_id(first)
    assert await _tap(client, product["code"], ua, first) == (status, None)
    assert await _tap(client, product["code"], ua, OURS) == (status, None)
    # (Sorted: click ids made in one millisecond sort by their random half.)
    assert sorted(await _stored_visitors(client, tenant.id)) == sorted([first, first, OURS])


async def test_a_retired_links_click_stores_only_a_visitor_cookie_of_ours(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    # A retired link's click still counts, under the visitor in its cookie only when the
    # gateway could have set that cookie: the same rule as a live link's.
    other = await add_tenant(client, "other")
    mine, theirs = await create_product(client, tenant), await create_product(client, other)
    for owner, product in ((tenant, mine), (other, theirs)):
        assert (await client.delete(f"/api/products/{product['id']}", headers=owner.auth)).ok
    for value in NOT_OURS.values():
        assert await _tap(client, mine["code"], TAOBAO_UA, value) == (410, None)
    assert await _tap(client, theirs["code"], TAOBAO_UA, OURS) == (410, None)
    stored = await _stored_visitors(client, tenant.id)
    assert len(stored) == len(NOT_OURS) and all(is_visitor_id(v) for v in stored)
    assert not set(stored) & set(NOT_OURS.values())
    assert await _stored_visitors(client, other.id) == [OURS]


# --- click ids (a new visitor's id is their first click's) ----------------------------------
#: The clock half's digits, value 0 to 61.
_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _millisecond(click_id: str) -> int:
    """The clock half of a click id: its first 8 characters, milliseconds in base 62."""
    return functools.reduce(lambda n, c: n * 62 + _DIGITS.index(c), click_id[:8], 0)


def test_click_ids_sort_by_the_millisecond_they_were_made_in() -> None:
    # Later ids land at the end of storage's B-trees, and an export reads them in order.
    made = [new_click_id()]
    while _millisecond(made[-1]) < _millisecond(made[0]) + 3:
        made.append(new_click_id())
    assert sorted(made, key=lambda click_id: click_id[:8]) == made
    # Across each digit's carry (61 to 62, 3843 to 3844 ...), and the clock of today; and no
    # id starts with "-", which a command line (privacy forget --visitor) takes for an option.
    now = time.time_ns() // 1_000_000
    moments = sorted({n for k in range(8) for n in (62**k - 1, 62**k, 2 * 62**k - 1)}
                     | {62**8 - 1} | set(range(now - 300, now + 300)))
    assert sorted(moments, key=_clock) == moments
    assert all(_millisecond(_clock(n) + "x" * 8) == n for n in moments)
    assert all(len(_clock(n)) == 8 and _clock(n)[0] != "-" for n in moments)


def test_a_click_id_carries_the_millisecond_it_was_made_in() -> None:
    before = time.time_ns() // 1_000_000
    click_id = new_click_id()
    after = time.time_ns() // 1_000_000
    assert is_visitor_id(click_id)
    assert before <= _millisecond(click_id) <= after


def test_a_new_click_id_generator_makes_whole_ids_from_its_first() -> None:
    # The gateway's one generator is made at import; a fresh one starts from nothing.
    before = time.time_ns() // 1_000_000
    click_id = _ClickIds().new()
    assert is_visitor_id(click_id)
    assert before <= _millisecond(click_id) <= time.time_ns() // 1_000_000


def test_click_ids_past_a_batch_of_randomness_stay_whole_and_unpredictable() -> None:
    # Random halves come 4,096 to a batch: 8,193 ids use up at least two.
    made = [new_click_id() for _ in range(2 * 4096 + 1)]
    assert all(is_visitor_id(click_id) for click_id in made)
    halves = [click_id[8:] for click_id in made]
    assert len(set(halves)) == len(halves)
    # 48 random bits each: no half is the one before it shifted by a character (a visitor's
    # id would tell an attacker the next visitor's).
    for first, second in itertools.pairwise(halves):
        assert first[1:] != second[:-1] and second[1:] != first[:-1]


# --- API tokens ------------------------------------------------------------------------------
#: 2023-11-14, safely in the past: pyjwt checks iat against the real time itself.
START = 1_700_000_000.0


def test_a_token_lives_until_one_second_before_exp() -> None:
    hand = Hand(START)
    tokens = TokenService("s" * 32, "linkloop", clock=hand)
    token = tokens.mint("acme", "merchant", 60)
    # Everything a token says, as anyone holding it can read it.
    assert jwt.decode(token, options={"verify_signature": False}) == {
        "sub": "acme", "role": "merchant", "aud": "linkloop", "iat": 1_700_000_000,
        "exp": 1_700_000_060}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    for now in (1_700_000_000.0, 1_700_000_059.0, 1_700_000_059.999):
        hand.set(now)
        assert tokens.verify(token).merchant_id == "acme"
    for now in (1_700_000_060.0, 1_700_000_061.0, 1_800_000_000.0):
        hand.set(now)
        with pytest.raises(AuthError) as caught:
            tokens.verify(token)
        assert caught.value.code == "token_expired"


def test_a_token_minted_with_no_lifetime_is_already_expired() -> None:
    hand = Hand(START)
    tokens = TokenService("s" * 32, "linkloop", clock=hand)
    with pytest.raises(AuthError, match="expired"):
        tokens.verify(tokens.mint("acme", "merchant", 0))


def test_no_token_is_minted_for_an_unknown_role() -> None:
    tokens = TokenService("s" * 32, "linkloop", clock=Hand(START))
    for role in ("owner", "Admin", ""):
        with pytest.raises(ValueError, match="role must be one of merchant, marketing, admin"):
            tokens.mint("acme", role, 60)  # type: ignore[arg-type]


def _secret(client: TestClient[Any, Any]) -> str:
    assert client.app is not None
    return auth_secret(client.app[SETTINGS])


def _claims(**changes: Any) -> dict[str, Any]:
    import time

    claims: dict[str, Any] = {"sub": "acme", "role": "merchant", "aud": "linkloop",
                              "iat": int(time.time()) - 10, "exp": int(time.time()) + 3600}
    for name, value in changes.items():
        if value is ...:
            claims.pop(name)
        else:
            claims[name] = value
    return claims


def _hs256(claims: dict[str, Any], secret: str, header: dict[str, Any] | None = None) -> str:
    """A token signed by hand: pyjwt refuses to write some of these."""
    def part(obj: Any) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = part(header or {"alg": "HS256", "typ": "JWT"}) + "." + part(claims)
    mac = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def _products_status(client: TestClient[Any, Any], token: str) -> tuple[int, str]:
    resp = await client.get("/api/products", headers={"Authorization": f"Bearer {token}"})
    body = await resp.json()
    if resp.status < 400:
        return resp.status, "ok"
    # A refusal a person can read: a stable code and a message in words.
    message = body["error"]["message"]
    assert isinstance(message, str) and message.strip(), body
    return resp.status, body["error"]["code"]


async def test_expiry_over_http_one_second_either_side(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    import time

    secret = _secret(client)
    now = int(time.time())
    assert await _products_status(client, jwt.encode(
        _claims(exp=now - 1), secret, algorithm="HS256")) == (401, "token_expired")
    # A whole minute of margin on the live side: the request must not race the clock.
    assert await _products_status(client, jwt.encode(
        _claims(exp=now + 60), secret, algorithm="HS256")) == (200, "ok")


BAD_CLAIMS: dict[str, dict[str, Any]] = {
    "wrong_audience": {"aud": "another-service"},
    "audience_missing": {"aud": ...},
    "audience_empty": {"aud": ""},
    "role_unknown": {"role": "owner"},
    "role_capitalised": {"role": "Admin"},
    "role_empty": {"role": ""},
    "role_null": {"role": None},
    "role_as_list": {"role": ["admin"]},
    "role_missing": {"role": ...},
    "subject_missing": {"sub": ...},
    "subject_empty": {"sub": ""},
    "subject_not_text": {"sub": 42},
    "expiry_missing": {"exp": ...},
    "expiry_as_text": {"exp": "99999999999"},
    "expiry_fractional": {"exp": 99999999999.5},
    "expiry_true": {"exp": True},
    "not_yet_valid": {"nbf": 99999999999},
    "issued_in_the_future": {"iat": 99999999999},
}


@pytest.mark.parametrize("changes", list(BAD_CLAIMS.values()), ids=list(BAD_CLAIMS))
async def test_tokens_with_a_bad_claim_are_refused(
    client: TestClient[Any, Any], tenant: Tenant, changes: dict[str, Any],
) -> None:
    token = _hs256(_claims(**changes), _secret(client))
    assert await _products_status(client, token) == (401, "invalid_token")


@pytest.mark.parametrize("raw_exp", ["NaN", "Infinity", "1e400"])
async def test_an_expiry_that_never_comes_is_refused(
    client: TestClient[Any, Any], tenant: Tenant, raw_exp: str,
) -> None:
    # JSON parsers in Python read NaN and Infinity; neither is ever "<= now".
    secret = _secret(client)
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    body = ('{"sub":"acme","role":"admin","aud":"linkloop","exp":' + raw_exp + "}").encode()
    signing = head + "." + base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    mac = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    token = signing + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert await _products_status(client, token) == (401, "invalid_token")


async def test_only_hs256_signed_with_our_secret_is_accepted(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    secret = _secret(client)
    claims = _claims(role="admin")
    assert await _products_status(client, jwt.encode(claims, secret, "HS256")) == (200, "ok")
    for algorithm in ("HS384", "HS512"):  # our secret, another algorithm
        token = jwt.encode(claims, secret, algorithm=algorithm)
        assert await _products_status(client, token) == (401, "invalid_token"), algorithm
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert await _products_status(client, unsigned) == (401, "invalid_token")
    # "none" in the header over an HS256 signature, and HS256 with the signature cut off.
    relabelled = _hs256(claims, secret, {"alg": "none", "typ": "JWT"})
    assert await _products_status(client, relabelled) == (401, "invalid_token")
    stripped = jwt.encode(claims, secret, "HS256").rsplit(".", 1)[0] + "."
    assert await _products_status(client, stripped) == (401, "invalid_token")
    forged = jwt.encode(claims, secret + "x", algorithm="HS256")
    assert await _products_status(client, forged) == (401, "invalid_token")


async def test_marketing_reads_every_merchant_route_but_writes_none(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    product = await create_product(client, tenant)
    auth = tenant.marketing_auth
    for path in ("/api/products", f"/api/products/{product['id']}", "/api/stats",
                 "/api/credentials", f"/api/products/{product['id']}/qr.svg"):
        assert (await client.get(path, headers=auth)).status == 200, path
    writes = [("POST", "/api/products", PRODUCT),
              ("PATCH", f"/api/products/{product['id']}", {"title": "x"}),
              ("DELETE", f"/api/products/{product['id']}", None),
              ("PUT", "/api/entry", {"kind": "static", "qr_url": "https://shop.example.com/q"}),
              ("PUT", "/api/credentials/wechat_miniprogram",
               {"appid": "wx0123456789abcdef", "secret": "0123456789abcdef0123"})]
    for method, path, body in writes:
        resp = await client.request(method, path, json=body, headers=auth)
        assert resp.status == 403, (method, path, resp.status)
        assert (await resp.json())["error"]["code"] == "forbidden"
    # Nothing changed.
    again = await (await client.get(f"/api/products/{product['id']}", headers=auth)).json()
    assert again["title"] == product["title"] and again.get("status", "active") == "active"
    assert (await client.get("/api/entry", headers=auth)).status == 404


#: A body for every write route under /api/, valid but for the merchant: the test below
#: fails on a write route missing here, so a new one is checked for a ghost token too.
_GHOST_WRITES: dict[tuple[str, str], tuple[Any, int]] = {
    # Writes in the merchant's name are refused as such (401 unknown_merchant) ...
    ("POST", "/api/products"): (PRODUCT, 401),
    ("PATCH", "/api/products/{id}"): ({"title": "x"}, 401),
    ("POST", "/api/products/import"): (None, 401),
    ("PUT", "/api/entry"): ({"kind": "static", "qr_url": "https://shop.example.com/q"}, 401),
    ("PUT", "/api/credentials/{platform}"): ({"appid": "wx0123456789abcdef",
                                              "secret": "0123456789abcdef0123"}, 401),
    ("POST", "/api/channels"): ({"name": "spring_live"}, 401),
    # ... and what names another merchant's product, channel or entry is not found.
    ("DELETE", "/api/products/{id}"): (None, 404),
    ("POST", "/api/products/{id}/restore"): (None, 404),
    ("POST", "/api/entry/check"): (None, 404),
    ("DELETE", "/api/channels/{name}"): (None, 404),
}


async def test_a_token_for_a_merchant_that_does_not_exist_reaches_nothing(
    client: TestClient[Any, Any], tenant: Tenant,
) -> None:
    # Validly signed (the secret is shared, the merchant is not): a token minted against
    # another database, or for a typo the CLI would have refused. PUT /api/entry and
    # /api/credentials, then POST /api/channels (found by the fuzz test), got a 500: a
    # foreign key refused the write.
    product = await create_product(client, tenant)
    await client.post("/api/channels", json={"name": "spring_live"}, headers=tenant.auth)
    ghost = {"Authorization": "Bearer " + jwt.encode(_claims(sub="ghost", role="admin"),
                                                    _secret(client), "HS256")}
    routes = {(route.method, route.resource.canonical)
              for route in client.app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith("/api/")
              and route.method in ("POST", "PUT", "PATCH", "DELETE")}
    assert routes == set(_GHOST_WRITES), "a write route has no ghost-token case here"
    names = {"id": str(product["id"]), "platform": "wechat_miniprogram", "name": "spring_live"}
    for (method, route), (body, status) in sorted(_GHOST_WRITES.items()):
        path = route.format(**names)
        resp = await client.request(method, path, json=body, headers=ghost)
        code = {401: "unknown_merchant", 404: "not_found"}[status]
        assert (resp.status, (await resp.json())["error"]["code"]) == (status, code), (
            method, path, resp.status, await resp.text())
    # The real merchant's product and channel are as they were.
    mine = await (await client.get(f"/api/products/{product['id']}", headers=tenant.auth)).json()
    assert mine["title"] == product["title"] and mine.get("status", "active") == "active"
    channels = await (await client.get("/api/channels", headers=tenant.auth)).json()
    assert [c["name"] for c in channels["items"]] == ["spring_live"]
    # Reads find nothing: another merchant's product is simply not there.
    for path in (f"/api/products/{product['id']}", f"/api/products/{product['id']}/qr.svg",
                 "/api/entry"):
        assert (await client.get(path, headers=ghost)).status == 404, path
    listed = await (await client.get("/api/products", headers=ghost)).json()
    assert listed["items"] == []
    stats = await (await client.get("/api/stats", headers=ghost)).json()
    assert stats["rows"] == []
    assert (await (await client.get("/api/credentials", headers=ghost)).json())["items"] == []
    # acme's product is as it was, and no one else's rows were written.
    mine = await (await client.get(f"/api/products/{product['id']}", headers=tenant.auth)).json()
    assert mine["title"] == product["title"] and mine.get("status", "active") == "active"
    assert client.app is not None
    store = client.app[STORE]
    assert await store.get_entry("ghost") is None and await store.list_credentials("ghost") == []
