"""The OpenAPI 3.1 document: valid, covering every /api/ route with its auth and errors, its
docs page served by the gateway alone, and requests drawn from it (schemathesis) never
answered with a 5xx or a status the document does not list."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from gateway.app import create_app

from .conftest import make_settings
from .test_cli import run, serving

#: Requests drawn per operation: bounded (about a minute for all of them on a busy machine).
EXAMPLES = 50
#: Where WeChat and WeCom would be: nothing listens there, and nothing leaves the machine.
DEAD_API = "http://127.0.0.1:9"


async def test_the_document_is_valid_and_covers_every_api_route(
        aiohttp_client: Any, tmp_path: Path) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(tmp_path)))
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    spec = await resp.json()
    validate(spec)  # OpenAPI 3.1, checked against its own schema
    assert spec["openapi"].startswith("3.1")

    documented = {(method.upper(), path) for path, item in spec["paths"].items()
                  for method in item if method != "parameters"}
    assert client.app is not None
    registered = {(route.method, route.resource.canonical)
                  for route in client.app.router.routes()
                  if route.resource is not None and route.resource.canonical.startswith("/api/")
                  and route.method not in (hdrs.METH_ANY, hdrs.METH_HEAD)}
    assert registered == documented

    for method, path in documented:
        op = spec["paths"][path][method.lower()]
        if op["x-roles"]:  # every guarded operation says how to authenticate and its errors
            assert op["security"] == [{"bearer": []}], (method, path)
            assert {"401", "503"} <= set(op["responses"]), (method, path)
            for status, answer in op["responses"].items():
                if status >= "400":
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
        if "requestBody" in op:
            assert {"400", "415", "422"} <= set(op["responses"]), (method, path)

    # No value the document allows for a path parameter names another, fixed path: the
    # router would take that path instead and answer something the operation doesn't
    # document (CI's schemathesis drew PATCH /api/products/export: 405, Allow: GET).
    for path, item in spec["paths"].items():
        params = [*item.get("parameters", []), *(p for method, op in item.items()
                                                  if method != "parameters"
                                                  for p in op.get("parameters", []))]
        for param in (p for p in params if p["in"] == "path"):
            mine = path.split("/")
            if "{" + param["name"] + "}" not in mine:
                continue  # part of a segment (qr.{fmt}): no fixed path shares it
            slot = mine.index("{" + param["name"] + "}")
            for other in map(lambda o: o.split("/"), spec["paths"]):
                if (len(other) == len(mine) and "{" not in other[slot]
                        and all(a == b for i, (a, b) in enumerate(zip(other, mine, strict=True))
                                if i != slot)):
                    assert not re.fullmatch(param["schema"].get("pattern", ".*"),
                                            other[slot]), (path, "/".join(other))


async def test_the_document_describes_what_the_checks_check(
        aiohttp_client: Any, tmp_path: Path) -> None:
    """Spot checks that the schema came from the validators, not from memory."""
    from adapters import by_platform

    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(tmp_path)))
    spec = await (await client.get("/api/openapi.json")).json()
    body = spec["paths"]["/api/products"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    jd = body["properties"]["targets"]["properties"]["jd"]
    assert jd["properties"]["sku"]["pattern"] == f"^(?:{by_platform('jd').field_patterns['sku']})$"
    assert jd["anyOf"] == [{"required": ["sku"]}]
    douyin = body["properties"]["targets"]["properties"]["douyin"]
    assert douyin["anyOf"] == [{"required": ["product_id"]}, {"required": ["appid", "path"]}]
    limit = next(p for p in spec["paths"]["/api/products"]["get"]["parameters"]
                 if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)
    # ... and the checks answer what the document says at its edges.
    from gateway.appkeys import TOKENS
    from gateway.store import Merchant

    assert client.app is not None
    from gateway.appkeys import STORE

    await client.app[STORE].create_merchant(Merchant("acme", "Acme"))
    auth = {"Authorization": f"Bearer {client.app[TOKENS].mint('acme', 'merchant', 60)}"}
    assert (await client.get("/api/products?limit=100", headers=auth)).status == 200
    over = await client.get("/api/products?limit=101", headers=auth)
    assert over.status == 422 and (await over.json())["error"]["field"] == "limit"


async def test_the_docs_page_needs_nothing_from_elsewhere(aiohttp_client: Any,
                                                          tmp_path: Path) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(tmp_path)))
    spec = await (await client.get("/api/openapi.json")).json()
    resp = await client.get("/api/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    for path, item in spec["paths"].items():
        for method in item:
            if method != "parameters":
                assert f"{method.upper()}</span>{path}" in page, (method, path)
    assert "default-src 'none'" in page
    # Every link and source on the page is the gateway's own (or the page itself).
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert references and all(r.startswith(("/", "#", "data:")) for r in references)
    assert "<script" not in page


# --- schemathesis: requests drawn from the document, against a real gateway ---------------------
@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A gateway process with a merchant and its token, WeChat and WeCom out of reach."""
    data = tmp_path_factory.mktemp("openapi") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLOOP_")}
    env.update({"LINKLOOP_STORAGE_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1",
                "LINKLOOP_WECHAT_API_BASE": DEAD_API, "LINKLOOP_WECOM_API_BASE": DEAD_API,
                "LINKLOOP_WECHAT_TIMEOUT_SECONDS": "0.5",
                "LINKLOOP_WECOM_TIMEOUT_SECONDS": "0.5"})
    assert run(env, "merchant", "create", "acme", "--name", "Acme", "--domain",
               "shop.example.com").returncode == 0
    token = run(env, "token", "--merchant", "acme", "--role", "merchant").stdout.strip()
    with serving(env, log=data.parent / "gateway.log") as (_proc, base):
        yield base, token


def test_requests_drawn_from_the_document(gateway: tuple[str, str]) -> None:
    """Every operation, EXAMPLES requests each (schemathesis' lazy pytest fixture does not run on
    pytest 9, so its strategies are driven here with Hypothesis directly)."""
    base, token = gateway
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def draw(case: Any) -> None:
            case.call_and_validate(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                   checks=[not_a_server_error, status_code_conformance])

        try:
            draw()
        except Exception as exc:  # every operation's failure, not just the first
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
