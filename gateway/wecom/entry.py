"""The merchant's single WeCom entry point: ``PUT/GET /api/entry`` and the ``/e/`` hop.

Four kinds, one door:

* ``acquisition_link`` -- a WeCom customer-acquisition link; each shopper's hop appends
  ``customer_channel=<state>`` carrying their platform and click id;
* ``contact_way`` -- "contact me" for member user ids; one contact way per source platform
  is made through WeCom's API on first use and reused, its state carrying the platform;
* ``group`` -- customer groups; one join way per platform, likewise;
* ``static`` -- a QR the merchant supplies: visits are counted, adds can't be attributed.

Corp id, secret, callback token and EncodingAESKey are write-only: a PUT may set them (or
omit them to keep the stored ones); no answer or log line ever carries them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import structlog
from aiohttp import web
from cachetools import TTLCache

from adapters import TargetError
from adapters.urls import ANY_PUBLIC_HOST, check_url

from ..api import json_body, merchant_of, principal
from ..appkeys import ENTRIES, PUBLIC_URL
from ..errors import ApiError, guarded
from ..jsonout import json_response
from ..store import Entry, EntryWay, Store
from ..trouble import Trouble
from .client import WeComApiError, WeComClient
from .state import StateSigner

__all__ = ["MAX_IDS", "SECRET_FIELDS", "EntryDirectory", "WeComApiError", "entry_json",
           "setup_routes", "validate_entry"]

log = structlog.get_logger("linkloop.entry")

KINDS = ("acquisition_link", "contact_way", "group", "static")
SECRET_FIELDS = ("corp_id", "secret", "callback_token", "encoding_aes_key")
_PUBLIC_FIELDS = {"acquisition_link": ("url",), "contact_way": ("users",),
                  "group": ("chat_ids",), "static": ("qr_url",)}
_USER_ID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CORP_ID = re.compile(r"w[wx][0-9a-f]{16}")
_TOKEN = re.compile(r"[A-Za-z0-9]{1,32}")
_AES_KEY = re.compile(r"[A-Za-z0-9+/]{43}")
#: The most ids WeCom takes in one way (API docs: add_contact_way's ``user``, up to 100
#: for a multi-person way; groupchat/add_join_way's ``chat_id_list``, 5 groups).
MAX_IDS = {"users": 100, "chat_ids": 5}
#: Each secret's format (gateway/openapi.py describes them from here too).
_SECRET_PATTERNS = {"corp_id": _CORP_ID, "secret": re.compile(r"[A-Za-z0-9_-]{8,128}"),
                    "callback_token": _TOKEN, "encoding_aes_key": _AES_KEY}


def _bad(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(422, code, message, field)


#: WeCom's customer-acquisition links: https://work.weixin.qq.com/ca/<id> (WeCom API docs,
#: 获客助手 "创建获客链接": the link the API answers is on this host, under /ca/).
ACQUISITION_HOSTS = ("work.weixin.qq.com",)
_ACQUISITION_PREFIX = "https://work.weixin.qq.com/ca/"


def _url(value: Any, field: str, hosts: tuple[str, ...] | None) -> str:
    """The one URL check (adapters/urls.py), answered as the API's error."""
    try:
        return check_url(value, field, hosts)
    except TargetError as exc:
        raise _bad(field, exc.message, exc.code) from None


def _ids(value: Any, field: str, pattern: re.Pattern[str]) -> list[str]:
    most = MAX_IDS[field]
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and pattern.fullmatch(v) for v in value)):
        raise _bad(field, f"{field} must be a list of 1 to {most} WeCom ids")
    ids = list(dict.fromkeys(value))
    if len(ids) > most:  # WeCom would refuse the way when the first shopper needs it
        raise _bad(field, f"WeCom takes at most {most} {field} in one way, not {len(ids)}")
    return ids


def validate_entry(body: Any, previous: Entry | None, merchant_id: str) -> Entry:
    if not isinstance(body, Mapping):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    kind = body.get("kind")
    if kind not in KINDS:
        raise _bad("kind", f"kind must be one of {', '.join(KINDS)}")
    allowed = {"kind", *_PUBLIC_FIELDS[kind], *SECRET_FIELDS}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(unknown[0], f"{kind} has no field {unknown[0]!r}", "unknown_field")
    config: dict[str, Any] = {}
    if kind == "acquisition_link":
        url = _url(body.get("url"), "url", ACQUISITION_HOSTS)
        # The checked URL is the browser's own serialisation: its text says exactly which
        # host and path it opens. A fragment would swallow the customer_channel we append.
        if not url.startswith(_ACQUISITION_PREFIX) or "#" in url:
            raise _bad("url", "url must be a WeCom acquisition link "
                              "(https://work.weixin.qq.com/ca/...)", "host_not_allowed")
        config["url"] = url
    elif kind == "contact_way":
        config["users"] = _ids(body.get("users"), "users", _USER_ID)
    elif kind == "group":
        config["chat_ids"] = _ids(body.get("chat_ids"), "chat_ids", _CHAT_ID)
    else:
        # A QR picture, shown on the /e/ page and never navigated to: any public host (the
        # merchant's site, WeCom's image server, a CDN) under the one URL check.
        config["qr_url"] = _url(body.get("qr_url"), "qr_url", ANY_PUBLIC_HOST)

    # Secrets: a new value replaces, an omitted one is kept, null clears it.
    secrets = dict(previous.secrets) if previous else {}
    checks = _SECRET_PATTERNS
    for name in SECRET_FIELDS:
        if name not in body:
            continue
        value = body[name]
        if value is None:
            secrets.pop(name, None)
        elif isinstance(value, str) and checks[name].fullmatch(value):
            secrets[name] = value
        else:
            raise _bad(name, f"{name} is not in WeCom's format")
    if kind in ("contact_way", "group"):
        missing = [n for n in ("corp_id", "secret") if n not in secrets]
        if missing:
            raise _bad(missing[0], f"{kind} needs {' and '.join(missing)} to call WeCom's API",
                       "missing_field")
    half = {"callback_token", "encoding_aes_key"} & set(secrets)
    if half and (len(half) == 1 or "corp_id" not in secrets):
        raise _bad("callback_token", "callbacks need corp_id, callback_token and "
                                     "encoding_aes_key together", "missing_field")
    return Entry(merchant_id, kind, config, secrets)


def entry_json(entry: Entry, public_url: str) -> dict[str, Any]:
    """What a merchant reads back: the public settings, and only *whether* secrets are set."""
    return {
        "kind": entry.kind,
        **entry.config,
        **{f"{name}_set": name in entry.secrets for name in SECRET_FIELDS},
        "callback_url": f"{public_url}/wecom/callback/{entry.merchant_id}",
        "attribution": "visits_only" if entry.kind == "static" else "adds",
        "updated_at": entry.updated_at,
    }


class EntryDirectory:
    """Entries by merchant (briefly cached) and the per-platform ways made for them."""

    def __init__(self, store: Store, client: WeComClient, signer: StateSigner) -> None:
        self.store = store
        self.client = client
        self.signer = signer
        self._entries: TTLCache[str, Entry | None] = TTLCache(10_000, 30)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        #: A merchant's WeCom failing to make ways: said when it starts and ends, not on
        #: every shopper's /e/ hop meanwhile (trouble.py). Per merchant: one merchant's
        #: broken secret must not hide, or keep announcing, another's.
        self._troubles: dict[str, Trouble] = {}

    async def get(self, merchant_id: str) -> Entry | None:
        try:
            return self._entries[merchant_id]
        except KeyError:
            entry = await self.store.get_entry(merchant_id)
            self._entries[merchant_id] = entry
            return entry

    async def put(self, entry: Entry) -> Entry:
        stored = await self.store.put_entry(entry)
        self._entries.pop(entry.merchant_id, None)
        return stored

    def acquisition_url(self, entry: Entry, platform: str, click_id: str | None) -> str:
        state = self.signer.mint(entry.merchant_id, platform, click_id)
        url = str(entry.config["url"])  # checked, so its only "?" starts the query
        return f"{url}{'&' if '?' in url else '?'}{urlencode({'customer_channel': state})}"

    async def way(self, entry: Entry, platform: str) -> EntryWay:
        """The contact or join way for one source platform, made through WeCom once."""
        found = await self.store.get_entry_way(entry.merchant_id, platform)
        if found is not None:
            return found
        lock = self._locks.setdefault((entry.merchant_id, platform), asyncio.Lock())
        async with lock:  # two shoppers at once must not make two ways
            found = await self.store.get_entry_way(entry.merchant_id, platform)
            if found is not None:
                return found
            trouble = self._troubles.setdefault(entry.merchant_id, Trouble(
                log, "entry.way_unavailable", "entry.way_back"))
            state = self.signer.mint(entry.merchant_id, platform)
            try:
                config_id, qr = await self._make_way(entry, platform, state)
            except WeComApiError as exc:
                trouble.failed(merchant=entry.merchant_id, platform=platform, error=str(exc),
                               errcode=exc.errcode)
                raise
            trouble.ok(merchant=entry.merchant_id)
            log.info("entry.way_created", merchant=entry.merchant_id, platform=platform,
                     kind=entry.kind, config_id=config_id)
            return await self.store.put_entry_way(EntryWay(
                entry.merchant_id, platform, config_id, qr, state))

    async def _make_way(self, entry: Entry, platform: str, state: str) -> tuple[str, str]:
        """Ask WeCom for a contact or join way carrying ``state``: (config_id, QR URL)."""
        corp, secret = entry.secrets["corp_id"], entry.secrets["secret"]
        remark = f"LinkLoop {platform}"
        if entry.kind == "contact_way":
            config_id, qr = await self.client.add_contact_way(
                corp, secret, users=list(entry.config["users"]), state=state, remark=remark)
        else:
            config_id, qr = await self.client.add_join_way(
                corp, secret, chat_ids=list(entry.config["chat_ids"]), state=state,
                remark=remark)
        try:  # shown to every shopper of this platform from now on: the one URL check
            return config_id, check_url(qr, "qr_code", ANY_PUBLIC_HOST)
        except TargetError:
            raise WeComApiError(f"the {entry.kind} answered {qr[:40]!r}, "
                                "not a QR code URL") from None


async def put_entry(request: web.Request) -> web.Response:
    who = principal(request, write=True)
    await merchant_of(request, who)
    directory = request.app[ENTRIES]
    previous = await directory.store.get_entry(who.merchant_id)
    entry = validate_entry(await json_body(request), previous, who.merchant_id)
    stored = await directory.put(entry)
    log.info("entry.updated", merchant=who.merchant_id, kind=stored.kind)
    return json_response(entry_json(stored, request.app[PUBLIC_URL]))


async def get_entry(request: web.Request) -> web.Response:
    who = principal(request)
    entry = await request.app[ENTRIES].store.get_entry(who.merchant_id)
    if entry is None:
        raise ApiError(404, "not_found", "no entry point is set: PUT /api/entry")
    return json_response(entry_json(entry, request.app[PUBLIC_URL]))


def setup_routes(app: web.Application) -> None:
    app.router.add_put("/api/entry", guarded(put_entry))
    app.router.add_get("/api/entry", guarded(get_entry))
