"""The API's OpenAPI 3.1 document (``GET /api/openapi.json``) and its docs page (``/api/docs``).

Nothing here is a second copy of the rules. The document is built, when the app starts,
from what the checks themselves use: the query parameter objects the handlers parse with
(gateway/params.py), each platform adapter's declared target fields and patterns, and the
validators' own constants (field sets, lengths, patterns, choices) for bodies. A test
(tests/test_openapi.py) checks the document against the OpenAPI 3.1 schema, checks that
every ``/api/`` route the app registers is in it, and lets schemathesis draw requests
from it.

The docs page is rendered by the gateway from the document: no script, no CDN, nothing
fetched from elsewhere.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web

from adapters import ADAPTERS, platform_ids
from adapters.base import COMMON_OPTIONAL_FIELDS

from . import alerts, api, catalog, inputs, preview, stats
from .appkeys import OPENAPI, PAGES, PUBLIC_URL
from .auth import ROLES
from .errors import guarded
from .ids import CODE_PATTERN
from .jsonout import json_response
from .params import json_pattern
from .store import METRICS, PRODUCT_STATES
from .wecom import entry

__all__ = ["document", "setup_routes"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_PRODUCT = {"$ref": "#/components/schemas/Product"}
_READ = ("merchant", "marketing", "admin")
_WRITE = ("merchant", "admin")


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ERROR}}}


#: The errors every authenticated operation may answer, with their stable codes.
_AUTH_ERRORS = {
    "401": _error("`unauthorized` (no bearer token), `invalid_token`, `token_expired`, "
                  "`unknown_merchant`."),
    "503": _error("`unavailable`: storage is away for a moment; try again."),
}
_WRITE_ERRORS = {
    **_AUTH_ERRORS,
    "400": _error("`invalid_json`, `invalid_body`: the body is not a JSON object; "
                  "`bad_request`: it could not be read (a `Content-Encoding` it is not in)."),
    "403": _error("`forbidden`: the token's role may only read."),
    "408": _error("`request_timeout`: the body stopped arriving for "
                  "`server.body_idle_seconds`; the connection closes."),
    "413": _error("`body_too_large`."),
    "415": _error("`unsupported_media_type`: send `Content-Type: application/json`."),
    "422": _error("`invalid_field`, `unknown_field`, `missing_field`, `host_not_allowed`, "
                  "... with the offending `field`."),
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(summary: str, roles: tuple[str, ...], responses: dict[str, Any], *,
               parameters: list[dict[str, Any]] | None = None,
               body: dict[str, Any] | None = None, errors: dict[str, Any] | None = None,
               ) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": (f"Roles: {', '.join(roles)}. Every query is scoped to the token's "
                        "merchant." if roles else "Public: no token needed."),
        "responses": {**responses, **(errors if errors is not None else
                                       _WRITE_ERRORS if body is not None else _AUTH_ERRORS)},
        "x-roles": list(roles),
    }
    op["security"] = [{"bearer": []}] if roles else []
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": body}}}
    return op


def _choice(name: str, choices: tuple[str, ...], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", "enum": list(choices)}}


def _product_filters() -> list[dict[str, Any]]:
    """``q`` and ``state``, as ``api.product_filters`` reads them."""
    return [{"name": "q", "in": "query", "required": False,
             "description": "Only products whose title or code holds this text.",
             "schema": {"type": "string", "maxLength": 100}},
            _choice("state", PRODUCT_STATES, "Only products in this state.")]


def _spreadsheet(description: str) -> dict[str, Any]:
    return {"200": {"description": description, "content": {
        "text/csv": {}, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {}}}}


def _path_id(description: str) -> dict[str, Any]:
    # Digits: a product's id is a number. Any other segment names no product (404), or
    # another resource on the same path (/api/products/export answers GET only: 405).
    return {"name": "id", "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": "^[0-9]+$"}}


# --- bodies, from the validators' declarations ------------------------------------------------
def _target_schema(adapter: Any) -> dict[str, Any]:
    """One platform's target, from its adapter's ``target_fields``, ``optional_fields`` and
    ``field_patterns``: what ``Adapter.validate_target`` checks."""
    names = [f for group in adapter.target_fields for f in group]
    names += [*adapter.optional_fields, *COMMON_OPTIONAL_FIELDS]
    properties: dict[str, Any] = {}
    for name in dict.fromkeys(names):
        pattern = adapter.field_patterns.get(name)
        field: dict[str, Any] = {"type": ["string", "integer", "null"]}
        if pattern is not None:
            field["pattern"] = json_pattern(pattern)
        if name == "url":
            field = {"type": ["string", "null"], "format": "uri",
                     "description": "https, on the platform's own hosts (web: the "
                                    "merchant's domains)"}
        properties[name] = field
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "anyOf": [{"required": list(group)} for group in adapter.target_fields],
            "description": f"{adapter.label}: "
                           + " or ".join(" + ".join(g) for g in adapter.target_fields)}


def _targets() -> dict[str, Any]:
    storefronts = [a for a in ADAPTERS if a.target_fields]
    return {"type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {a.platform: _target_schema(a) for a in storefronts},
            "description": "Each storefront platform's fields, checked by its adapter."}


def _plain_line() -> str:
    """What ``inputs.plain_text`` takes: no control character, something besides spaces."""
    controls = inputs._CONTROL.pattern.strip("[]")
    return f"^[^{controls}]*[^\\s{controls}][^{controls}]*$"


def _product_body(*, partial: bool) -> dict[str, Any]:
    fields = {
        "title": {"type": "string", "minLength": 1, "maxLength": catalog._MAX_TITLE,
                  "pattern": _plain_line(), "description": "one line of plain text"},
        "image_url": {"type": ["string", "null"], "format": "uri", "pattern": "^https://"},
        "price": {"anyOf": [
            {"type": "number", "minimum": 0, "maximum": int(catalog._MAX_PRICE)},
            {"type": "string", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,2})?$"}, {"type": "null"}],
            "description": f"0 to {catalog._MAX_PRICE}, at most two decimals"},
        "slug": {"type": ["string", "null"], "pattern": json_pattern(CODE_PATTERN),
                 "description": "the share code to use instead of a random one"},
        "targets": _targets(),
        **{name: {"type": ["string", "null"], "pattern": json_pattern(catalog._MOMENT),
                  "description": "when the sale opens / ends: a date and time, an offset "
                                 "optional (default: the stats time zone)"}
           for name in catalog.WINDOW_FIELDS},
    }
    assert set(fields) == catalog._FIELDS, "the product fields changed: describe them here"
    if partial:
        del fields["slug"]  # a share link's code never changes
    return {"type": "object", "properties": fields, "additionalProperties": False,
            **({} if partial else {"required": ["title", "targets"]})}


def _entry_body() -> dict[str, Any]:
    secrets = {name: {"type": ["string", "null"], "writeOnly": True,
                      "pattern": json_pattern(entry._SECRET_PATTERNS[name])}
               for name in entry.SECRET_FIELDS}
    ids = {"type": "array", "minItems": 1}
    public = {
        "url": {"type": "string", "format": "uri",
                "description": "a WeCom acquisition link, https://work.weixin.qq.com/ca/..."},
        "users": {**ids, "maxItems": entry.MAX_IDS["users"],
                  "items": {"type": "string", "pattern": json_pattern(entry._USER_ID)}},
        "chat_ids": {**ids, "maxItems": entry.MAX_IDS["chat_ids"],
                     "items": {"type": "string", "pattern": json_pattern(entry._CHAT_ID)}},
        "qr_url": {"type": "string", "format": "uri"},
    }
    kinds = []
    for kind in entry.KINDS:
        fields = entry._PUBLIC_FIELDS[kind]
        kinds.append({"type": "object", "additionalProperties": False,
                      "required": ["kind", *fields],
                      "properties": {"kind": {"const": kind},
                                     **{f: public[f] for f in fields}, **secrets}})
    return {"oneOf": kinds, "description": "Secrets are write-only: a new value replaces, an "
                                           "omitted one is kept, null clears it."}


def _credentials_body() -> dict[str, Any]:
    return {"type": "object", "required": ["appid", "secret"], "additionalProperties": False,
            "properties": {
                "appid": {"type": "string", "pattern": "^wx[0-9a-f]{16}$"},
                "secret": {"type": "string", "writeOnly": True,
                           "pattern": json_pattern(api._APP_SECRET)}}}


# --- the whole document ------------------------------------------------------------------------
def _stats_parameters() -> list[dict[str, Any]]:
    day = {"type": "string", "format": "date"}
    query = [
        ("from", day, f"First day (default: {stats.DEFAULT_DAYS - 1} days before `to`); "
                      f"a range covers at most {stats.MAX_DAYS} days."),
        ("to", day, "Last day (default: today, in the stats time zone)."),
        ("by", {"type": "string", "enum": list(stats.GROUPINGS), "default": "platform"},
         "One row per platform, product, day or channel."),
        ("product", {"type": "integer", "minimum": 0}, "Only this product."),
        ("platform", {"type": "string", "enum": list(platform_ids())},
         "Only visits from this platform."),
        ("channel", {"type": "string", "pattern": json_pattern(stats.CHANNEL_PATTERN)},
         "Only visits tagged with this `?ch=` channel."),
    ]
    return [{"name": name, "in": "query", "required": False, "description": text,
             "schema": schema} for name, schema, text in query] + [
        api.STATS_FORMAT.describe()]


def _components() -> dict[str, Any]:
    row = {name: {"type": "integer"} for name in METRICS}
    return {
        "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "`linkloop token --merchant ID --role "
                           f"{'|'.join(ROLES)}`: `sub` is the merchant."}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "description": "stable: scripts may rely on it"},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "the offending JSON path"}}}}},
            "Product": {"type": "object", "properties": {
                "id": {"type": "integer"}, "code": {"type": "string"},
                "share_url": {"type": "string"}, "qr_url": {"type": "string"},
                "title": {"type": "string"}, "image_url": {"type": ["string", "null"]},
                "price": {"type": ["string", "null"]}, "targets": {"type": "object"},
                "status": {"enum": ["active", "retired"]},
                "created_at": {"type": "number"}, "updated_at": {"type": "number"}}},
            "StatsRow": {"type": "object", "properties": {
                **row, **{rate: {"type": ["number", "null"]} for rate in stats.RATES}}},
        },
    }


def document(server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every ``/api/`` route."""
    products = _operation(
        "List the merchant's products, a page at a time.", _READ,
        {"200": _json({"type": "object", "properties": {
            "items": {"type": "array", "items": _PRODUCT},
            "next": {"type": ["string", "null"],
                     "description": "give it as `after` for the next page"}}},
            "A page of products.")},
        parameters=[api.PAGE_LIMIT.describe(), api.PAGE_AFTER.describe(),
                    *_product_filters()],
        errors={**_AUTH_ERRORS, "422": _error("`invalid_field`: limit or after.")})
    product_errors = {**_AUTH_ERRORS, "404": _error("`not_found`: no such product (or "
                                                    "another merchant's).")}
    paths: dict[str, Any] = {
        "/api/products": {
            "post": _operation(
                "Create a product: one share link and QR code for all its storefronts.",
                _WRITE, {"201": _json(_PRODUCT, "The product, with its share link.")},
                body=_product_body(partial=False),
                errors={**_WRITE_ERRORS, "409": _error("`slug_taken`.")}),
            "get": products,
        },
        "/api/products/{id}": {
            "parameters": [_path_id("The product's id.")],
            "get": _operation("Read one product.", _READ,
                              {"200": _json(_PRODUCT, "The product.")}, errors=product_errors),
            "patch": _operation(
                "Change a product's title, image, price or targets (its code never changes).",
                _WRITE, {"200": _json(_PRODUCT, "The changed product.")},
                body=_product_body(partial=True),
                errors={**_WRITE_ERRORS, **product_errors,
                        "409": _error("`product_retired`.")}),
            "delete": _operation(
                "Retire a product: its share link answers 410 from now on.", _WRITE,
                {"200": _json(_PRODUCT, "The retired product.")},
                errors={**product_errors, "403": _error("`forbidden`.")}),
        },
        "/api/products/{id}/restore": {
            "parameters": [_path_id("The product's id.")],
            "post": _operation(
                "Bring a retired product back, with the same code.", _WRITE,
                {"200": _json(_PRODUCT, "The product, live again.")},
                errors={**product_errors, "403": _error("`forbidden`."),
                        "409": _error("the product is not retired.")}),
        },
        "/api/products/{id}/preview": {
            "parameters": [_path_id("The product's id.")],
            "get": _operation(
                "What a shopper in each app (and in mobile and desktop browsers) gets.", _READ,
                {"200": _json({"type": "object"}, "Per app: redirect, landing or guide.")},
                parameters=[_choice("os", preview.OSES, "The phone's system.")],
                errors={**product_errors, "422": _error("`invalid_field`: os.")}),
        },
        "/api/products/export": {"get": _operation(
            "The products as a spreadsheet, as the import reads it.", _READ,
            _spreadsheet("The products."),
            parameters=[_choice("format", ("xlsx", "csv"), "The file's kind."),
                        *_product_filters()],
            errors={**_AUTH_ERRORS, "422": _error("`invalid_field`: format, q or state.")})},
        "/api/products/import/template": {"get": _operation(
            "An empty import file: every column, and what each means.", _READ,
            _spreadsheet("The template."),
            parameters=[_choice("format", ("xlsx", "csv"), "The file's kind.")],
            errors={**_AUTH_ERRORS, "422": _error("`invalid_field`: format.")})},
        "/api/products/import": {"post": {**_operation(
            "Create or change products from a CSV or XLSX file, all or nothing.", _WRITE,
            {"200": _json({"type": "object"}, "Per-row answers (a dry run, or nothing new)."),
             "201": _json({"type": "object"}, "Per-row answers; products were created.")},
            parameters=[_choice("dry_run", ("true", "false", "1", "0"),
                                "Check every row and write nothing.")],
            errors={**_WRITE_ERRORS, "415": _error("`unsupported_media_type`: send text/csv "
                                                   "or XLSX."),
                    "422": _error("`import_rejected`: rows with errors, nothing written; "
                                  "`invalid_field`: dry_run.")}),
            "requestBody": {"required": True, "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                    "schema": {"type": "string", "format": "binary"}}}}}},
        "/api/channels": {
            "get": _operation("The merchant's named `?ch=` channels.", _READ,
                              {"200": _json({"type": "object"}, "The channels.")}),
            "post": _operation(
                "Name a channel.", _WRITE, {"201": _json({"type": "object"}, "The channel.")},
                body={"type": "object", "required": ["name"], "additionalProperties": False,
                      "properties": {
                          "name": {"type": "string",
                                   "pattern": json_pattern(stats.CHANNEL_PATTERN),
                                   "description": "what `?ch=` carries; not a platform id"},
                          "label": {"type": ["string", "null"], "maxLength": 40}}},
                errors={**_WRITE_ERRORS, "409": _error("`channel_exists`.")}),
        },
        "/api/channels/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "delete": _operation("Forget a channel's name (its figures stay).", _WRITE,
                                 {"200": _json({"type": "object"}, "Which was deleted.")},
                                 errors={**_AUTH_ERRORS, "403": _error("`forbidden`."),
                                         "404": _error("`not_found`: no such channel.")}),
        },
        "/api/entry/check": {"post": _operation(
            "Call WeCom with the entry's settings and say what came back.", _WRITE,
            {"200": _json({"type": "object"}, "Each step, and whether all were ok.")},
            errors={**_AUTH_ERRORS, "403": _error("`forbidden`."),
                    "404": _error("`not_found`: no entry point is set.")})},
        "/api/products/{id}/qr.{fmt}": {
            "parameters": [_path_id("The product's id."),
                           {"name": "fmt", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": ["svg", "png"]}}],
            "get": _operation(
                "The share link as a QR code.", _READ,
                {"200": {"description": "The QR code.", "content": {
                    "image/svg+xml": {}, "image/png": {}}}},
                parameters=[api.QR_CHANNEL.describe()],
                errors={**product_errors, "422": _error("`invalid_field`: ch.")}),
        },
        "/api/stats": {"get": _operation(
            "Figures per platform, product, day or channel, from the rollups.", _READ,
            {"200": {"description": "The rows (JSON), or CSV with `format=csv`.", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "from": {"type": "string", "format": "date"},
                    "to": {"type": "string", "format": "date"},
                    "by": {"enum": list(stats.GROUPINGS)},
                    "timezone": {"type": "string", "description": "the days' time zone"},
                    "unique_visitors_accuracy": {"type": "object"},
                    "attribution": {"enum": ["none", "visits_only", "adds"]},
                    "rows": {"type": "array",
                             "items": {"$ref": "#/components/schemas/StatsRow"}},
                    "total": {"$ref": "#/components/schemas/StatsRow"}}}},
                "text/csv": {}}}},
            parameters=_stats_parameters(),
            errors={**_AUTH_ERRORS, "422": _error("`invalid_field` with the parameter.")})},
        "/api/alerts": {"get": _operation(
            "Warnings the merchant must act on (e.g. an acquisition link out of quota), "
            "newest first.", _READ,
            {"200": _json({"type": "object", "properties": {
                "days": {"type": "integer"}, "alerts": {"type": "array", "items": {
                    "type": "object", "properties": {
                        "kind": {"type": "string"},
                        "severity": {"enum": sorted({k.severity for k in
                                                     alerts.ALERT_KINDS.values()})},
                        "message": {"type": "string"}}}}}}, "The alerts.")},
            parameters=[alerts.ALERT_DAYS.describe()],
            errors={**_AUTH_ERRORS, "422": _error("`invalid_field`: days.")})},
        "/api/entry": {
            "put": _operation(
                "Set the merchant's single WeCom entry point.", _WRITE,
                {"200": _json({"type": "object"}, "The entry (secrets only as *_set).")},
                body=_entry_body()),
            "get": _operation(
                "Read the entry point (never its secrets).", _READ,
                {"200": _json({"type": "object"}, "The entry (secrets only as *_set).")},
                errors={**_AUTH_ERRORS, "404": _error("`not_found`: no entry is set.")}),
        },
        "/api/credentials": {"get": _operation(
            "The app credentials set (never their secrets).", _READ,
            {"200": _json({"type": "object", "properties": {"items": {"type": "array"}}},
                          "appid and secret_set per platform.")})},
        "/api/credentials/{platform}": {
            "parameters": [{"name": "platform", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": list(api._CREDENTIAL_PLATFORMS)}}],
            "put": _operation(
                "Set a WeChat app's appid and secret (write-only).", _WRITE,
                {"200": _json({"type": "object"}, "appid, and secret_set.")},
                body=_credentials_body(),
                errors={**_WRITE_ERRORS, "404": _error("`not_found`: no credentials are used "
                                                       "for that platform.")}),
        },
        "/api/openapi.json": {"get": _operation(
            "This document.", (), {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            errors={})},
        "/api/docs": {"get": _operation(
            "This document as a page.", (),
            {"200": {"description": "HTML.", "content": {"text/html": {}}}}, errors={})},
    }
    try:
        release = version("linkloop")
    except PackageNotFoundError:
        release = "unknown"
    return {
        "openapi": "3.1.0",
        "info": {"title": "LinkLoop API", "version": release,
                 "description": "One share link per product for every Chinese app, with a "
                                "closed loop into WeCom. Errors are "
                                "`{\"error\": {\"code\", \"message\", \"field\"}}`."},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": _components(),
    }


# --- the routes ------------------------------------------------------------------------------
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def docs_page(request: web.Request) -> web.Response:
    spec = request.app[OPENAPI]
    operations = [(method.upper(), path, op) for path, item in spec["paths"].items()
                  for method, op in item.items() if method != "parameters"]
    return request.app[PAGES].render("api_docs.html", spec=spec, operations=operations,
                                     path_parameters={p: i.get("parameters", [])
                                                      for p, i in spec["paths"].items()})


def setup_routes(app: web.Application) -> None:
    app[OPENAPI] = document(app[PUBLIC_URL])
    app.router.add_get("/api/openapi.json", guarded(openapi_json))
    app.router.add_get("/api/docs", guarded(docs_page))
