"""``/wecom/callback/{merchant}``: WeCom tells us a shopper added the contact or joined.

A callback is accepted only with a valid ``msg_signature``, a timestamp within
``wecom.callback_max_skew_seconds`` of now, an unseen nonce, and a message addressed to the
merchant's corp id. Anyone can send a callback, so the checks run cheapest first and nothing
is parsed before the cheap ones pass: the query's shape and freshness, the merchant's
callback settings, the body's size (read to at most ``MAX_CALLBACK_BODY``) and its
markup (``message.parse_envelope``); then the envelope (hardened XML), its signature, the
decrypted message (hardened XML again), and last the nonce, in storage so a restart
forgets none.

Accepting means storing the decrypted message in the inbox; then we answer at once (WeCom
waits five seconds at most) and a background worker does the work:
reading the state, asking WeCom for group members, recording the ``add``, the added
contact's first chat and its loss, keeping 获客助手 alerts. An inbox row is
marked done only after its work, so a crash between answering and working loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from typing import Any

import structlog
from aiohttp import web

from ..alerts import ALERT_KINDS
from ..appkeys import CALLBACKS, ENTRIES, SETTINGS, STORE
from ..clock import DayClock
from ..errors import guarded, json_error
from ..inputs import body_idle, read_body
from ..recorder import Recorder
from ..store import Contact, Entry, Event, EventKind, InboxItem, Store, StoreUnavailable
from ..trouble import Trouble
from .client import WeComClient
from .crypto import WeComCrypto, WeComCryptoError
from .message import MalformedMessage, parse_envelope, parse_message
from .state import StateSigner

__all__ = ["MAX_CALLBACK_BODY", "CallbackWorker", "setup_routes", "timestamp_fresh"]

log = structlog.get_logger("linkloop.wecom.callback")

UNATTRIBUTED = "unattributed"
#: The largest callback body read; a longer one is a 413 before anything is parsed. WeCom's
#: envelope holds one encrypted event (doc 事件格式 92130): a few hundred bytes for a contact,
#: a line per member for a group change (MemChangeList), so 64 KiB is a wide margin.
MAX_CALLBACK_BODY = 64 * 1024
_MAX_ATTEMPTS = 5
# The query's shape (WeCom doc 回调和回复的加解密方案): msg_signature is a SHA-1 hex digest,
# timestamp decimal seconds, nonce a random string WeCom keeps unique for two hours (it
# sends digits; letters, "-" and "_" are let through too, the length is ours).
_SIGNATURE = re.compile(r"[0-9a-fA-F]{40}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[0-9A-Za-z_-]{1,64}")


def _crypto(entry: Entry | None) -> WeComCrypto | None:
    secrets = entry.secrets if entry else {}
    if not all(k in secrets for k in ("corp_id", "callback_token", "encoding_aes_key")):
        return None
    return WeComCrypto(secrets["callback_token"], secrets["encoding_aes_key"],
                       secrets["corp_id"])


class CallbackWorker:
    """Turns stored callbacks into events and alerts; runs after the answer, survives
    restarts."""

    def __init__(self, store: Store, recorder: Recorder, client: WeComClient,
                 signer: StateSigner, clock: DayClock) -> None:
        self.store = store
        self.recorder = recorder
        self.client = client
        self.signer = signer
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempts: dict[int, int] = {}
        # One drain at a time: an item is read, worked and marked done by one caller.
        self._draining = asyncio.Lock()
        #: Storage away while draining: said once, not every 5 s (trouble.py).
        self._storage_trouble = Trouble(log, "callback.storage_unavailable",
                                        "callback.storage_back")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="linkloop-wecom-callbacks")

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.drain()
            except StoreUnavailable as exc:  # an outage, not a bug: the callbacks wait stored
                self._storage_trouble.failed(error=str(exc))
                busy = False
            except Exception:
                log.exception("callback.worker_error")
                busy = False
            else:
                self._storage_trouble.ok()
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=5.0)
                self._wake.clear()

    async def drain(self) -> bool:
        """Work through pending callbacks; True when some are left to retry."""
        async with self._draining:
            return await self._drain()

    async def _drain(self) -> bool:
        items = await self.store.pending_callbacks(100)
        retry = False
        for item in items:
            try:
                await self._handle(item)
            except StoreUnavailable:
                # Storage's trouble, not the callback's: it stays stored and is tried again
                # once storage answers, however long that takes, never given up on.
                raise
            except Exception as exc:  # WeComApiError: retry, then give up
                attempts = self._attempts[item.id] = self._attempts.get(item.id, 0) + 1
                if attempts < _MAX_ATTEMPTS:
                    log.warning("callback.retry", item=item.id, attempts=attempts,
                                error=str(exc))
                    retry = True
                    continue
                log.error("callback.abandoned", item=item.id, attempts=attempts,
                          error=str(exc))
            self._attempts.pop(item.id, None)
            await self.store.finish_callback(item.id)
        if retry:
            await asyncio.sleep(1.0)
        return retry or len(items) == 100

    async def _handle(self, item: InboxItem) -> None:
        try:
            fields = parse_message(item.message)
        except MalformedMessage:
            log.warning("callback.malformed", item=item.id)
            return
        event, change = fields.get("Event"), fields.get("ChangeType")
        user, external = str(fields.get("UserID", "")), str(fields.get("ExternalUserID", ""))
        ts = _int(fields.get("CreateTime"))
        if event == "change_external_contact" and change in ("add_external_contact",
                                                             "add_half_external_contact"):
            await self._add(item.merchant_id, fields.get("State"),
                      key=f"contact:{fields.get('UserID')}:{fields.get('ExternalUserID')}",
                      ts=ts, contact=(user, external))
        elif (event == "change_external_contact"
              and change in ("del_external_contact", "del_follow_user")):
            # 事件格式 (path/92130): the member deleted the customer, or the customer
            # deleted the member; both carry UserID and ExternalUserID. Either way the
            # contact is lost, counted once per deletion (a re-add may be lost again).
            await self._contact_event(item.merchant_id, "lost", user, external, ts,
                                      key=f"lost:{user}:{external}:{ts}")
        elif event == "customer_acquisition" and change == "customer_start_chat":
            # 获客助手事件通知 (path/97299), 成员首次收消息: UserID, ExternalUserID, LinkId.
            # The first chat of a contact, once however often WeCom sends it.
            await self._contact_event(item.merchant_id, "chat", user, external, ts,
                                      key=f"chat:{user}:{external}")
        elif event == "customer_acquisition" and isinstance(change, str) and (
                change in ALERT_KINDS):
            await self._alert(item.merchant_id, change, fields, ts)
        elif (event == "change_external_chat" and change == "update"
              and fields.get("UpdateDetail") == "add_member"):
            await self._group_join(item.merchant_id, fields)
        else:
            log.info("callback.ignored", merchant=item.merchant_id, msg_event=event,
                     change=change)

    async def _contact_event(self, merchant_id: str, kind: EventKind, user: str,
                             external: str, ts: int | None, *, key: str) -> None:
        """A chat or a loss, counted where the contact's add came from (its platform, and
        through its click the product and channel), or unattributed if we never saw it."""
        contact = (await self.store.get_contact(merchant_id, user, external)
                   if user and external else None)
        when = float(ts) if ts else time.time()
        self.recorder.event(Event(
            id=_event_id(merchant_id, key), merchant_id=merchant_id,
            product_id=contact.product_id if contact else None, kind=kind,
            platform=contact.platform if contact else UNATTRIBUTED, ts=when,
            day=self.clock.day_of(when), click_id=contact.click_id if contact else None))
        log.info(f"callback.{kind}", merchant=merchant_id, attributed=contact is not None,
                 platform=contact.platform if contact else UNATTRIBUTED)

    async def _alert(self, merchant_id: str, kind: str, fields: dict[str, Any],
                     ts: int | None) -> None:
        """获客助手 says the acquisition link or its quota needs the merchant (path/97299):
        balance_low, balance_exhausted and quota_expire_soon (ExpireTime, ExpireQuotaNum)
        carry no link; link_unavailable and delete_link carry its LinkId."""
        detail = {name: fields[name] for name in ("LinkId", "ExpireTime", "ExpireQuotaNum")
                  if isinstance(fields.get(name), str) and fields[name]}
        when = float(ts) if ts else time.time()
        added = await self.store.add_alert(
            merchant_id, kind, detail, key=f"{kind}:{detail.get('LinkId', '')}:{ts}",
            created_at=when)
        log.warning("callback.alert", merchant=merchant_id, kind=kind, new=added, **detail)

    async def _group_join(self, merchant_id: str, fields: dict[str, Any]) -> None:
        entry = await self.store.get_entry(merchant_id)
        chat_id = str(fields.get("ChatId", ""))
        if entry is None or "secret" not in entry.secrets or not chat_id:
            log.warning("callback.group_join_unreadable", merchant=merchant_id)
            return
        changed = fields.get("MemChangeList")
        wanted = set(changed) if isinstance(changed, list) and changed else None
        members = await self.client.group_members(entry.secrets["corp_id"],
                                                  entry.secrets["secret"], chat_id)
        for member in members:
            userid = str(member.get("userid", ""))
            if member.get("type") != 2 or not userid or (wanted and userid not in wanted):
                continue  # WeCom members are staff, not customers
            if await self.store.add_group_member(merchant_id, chat_id, userid):
                await self._add(merchant_id, member.get("state"), key=f"group:{chat_id}:{userid}",
                          ts=_int(member.get("join_time")))

    async def _add(self, merchant_id: str, raw_state: Any, *, key: str, ts: int | None,
                   contact: tuple[str, str] | None = None) -> None:
        state = self.signer.read(merchant_id, raw_state if isinstance(raw_state, str) else None)
        origin = None
        if state and state.click_id:
            # The wristband: the click tells which product the shopper came for.
            origin = await self.store.click_origin(merchant_id, state.click_id)
        when = float(ts) if ts else time.time()
        platform = state.platform if state else UNATTRIBUTED
        click_id = state.click_id if state else None
        if contact and all(contact):
            # The contact's first chat and its loss will count where this add came from.
            await self.store.put_contact(Contact(
                merchant_id, contact[0], contact[1], platform,
                origin[0] if origin else None, click_id, when))
        # One add per contact or member, whatever WeCom retries: the id is derived from them.
        self.recorder.event(Event(
            id=_event_id(merchant_id, key), merchant_id=merchant_id,
            product_id=origin[0] if origin else None, kind="add", platform=platform, ts=when,
            day=self.clock.day_of(when), click_id=click_id))
        log.info("callback.add", merchant=merchant_id, attributed=state is not None,
                 platform=state.platform if state else UNATTRIBUTED)


def _event_id(merchant_id: str, key: str) -> str:
    """An event id derived from what it is about: WeCom's retries of it are one event."""
    return hashlib.sha256(f"{merchant_id}\0{key}".encode()).hexdigest()[:24]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def timestamp_fresh(timestamp: str, now: float, max_skew: int) -> bool:
    """Whether a callback's ``timestamp`` lies within ``max_skew`` seconds of ``now``.

    Both ways: a timestamp from the future is as suspect as a stale one. Only decimal ASCII
    digits are a timestamp (``int()`` would also take "+1", " 1", "1_0" and other scripts'
    digits, none of which WeCom sends).
    """
    if not _TIMESTAMP.fullmatch(timestamp):
        return False
    return abs(now - int(timestamp)) <= max_skew


def _query_refused(request: web.Request) -> web.Response | None:
    """The refusal of a callback whose query is malformed or stale; no I/O, no parsing."""
    query = request.query
    signature, timestamp, nonce = (query.get("msg_signature", ""), query.get("timestamp", ""),
                                   query.get("nonce", ""))
    if not (_SIGNATURE.fullmatch(signature) and _TIMESTAMP.fullmatch(timestamp)
            and _NONCE.fullmatch(nonce)):
        return json_error(400, "bad_request",
                          "msg_signature (40 hex digits), timestamp (seconds) and nonce "
                          "(up to 64 letters, digits, - or _) are required")
    skew = request.app[SETTINGS]["wecom.callback_max_skew_seconds"]
    if not timestamp_fresh(timestamp, time.time(), skew):
        return json_error(403, "stale_timestamp", "timestamp is not fresh")
    return None


async def _verified(request: web.Request) -> tuple[WeComCrypto, str, str, str] | web.Response:
    """The merchant's crypto and the query's signature fields, or the refusal.

    The cheap checks, before any body is read or parsed: the query's shape and freshness
    (no I/O), then the merchant's callback settings (a cached read).
    """
    refused = _query_refused(request)
    if refused is not None:
        return refused
    entry = await request.app[ENTRIES].get(request.match_info["merchant"])
    crypto = _crypto(entry)
    if crypto is None:
        return json_error(404, "callback_not_configured",
                          "no callback token is set for this merchant")
    query = request.query
    return crypto, query["msg_signature"], query["timestamp"], query["nonce"]


async def verify_url(request: web.Request) -> web.Response:
    """WeCom's URL check: decrypt ``echostr`` and answer the plaintext."""
    found = await _verified(request)
    if isinstance(found, web.Response):
        return found
    crypto, signature, timestamp, nonce = found
    try:
        plain = crypto.open(signature, timestamp, nonce, request.query.get("echostr", ""))
    except WeComCryptoError as exc:
        log.warning("callback.refused", reason=exc.code)
        return json_error(403, exc.code, str(exc))
    return web.Response(text=plain)


async def _body(request: web.Request) -> bytes | web.Response:
    """The callback body, at most ``MAX_CALLBACK_BODY`` bytes read, or the 413."""
    declared = request.content_length
    if declared is not None and declared > MAX_CALLBACK_BODY:
        return _too_large()
    try:
        return await read_body(request.content.iter_any(), limit=MAX_CALLBACK_BODY,
                               seconds=body_idle(request))
    except web.HTTPRequestEntityTooLarge:
        return _too_large()


def _too_large() -> web.Response:
    log.warning("callback.refused", reason="body_too_large")
    return json_error(413, "body_too_large",
                      f"a callback body is at most {MAX_CALLBACK_BODY} bytes")


def _malformed(exc: MalformedMessage | UnicodeDecodeError, what: str) -> web.Response:
    reason = exc.reason if isinstance(exc, MalformedMessage) else "malformed"
    log.warning("callback.refused", reason=reason)
    return json_error(400, "malformed", f"{what} is not a WeCom XML message "
                      "(UTF-8, no DTD, no entities)")


async def receive(request: web.Request) -> web.Response:
    """An event from WeCom: cheap checks, the body read (capped), the envelope parsed,
    its signature verified, the message decrypted and parsed, and only then stored."""
    found = await _verified(request)
    if isinstance(found, web.Response):
        return found
    crypto, signature, timestamp, nonce = found
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    try:
        encrypt = str(parse_envelope(body).get("Encrypt", ""))
    except (MalformedMessage, UnicodeDecodeError) as exc:
        return _malformed(exc, "the body")
    try:
        message = crypto.open(signature, timestamp, nonce, encrypt)
    except WeComCryptoError as exc:
        log.warning("callback.refused", reason=exc.code)
        return json_error(403, exc.code, str(exc))
    try:
        parse_message(message)  # signed by WeCom, and still parsed hardened
    except MalformedMessage as exc:
        return _malformed(exc, "the decrypted message")
    merchant = request.match_info["merchant"]
    if not await request.app[STORE].accept_callback(merchant, nonce, message):
        log.warning("callback.refused", reason="replayed_nonce")
        return json_error(403, "replayed_nonce", "this nonce was seen before")
    request.app[CALLBACKS].wake()
    return web.Response(text="success")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/wecom/callback/{merchant}", guarded(verify_url))
    app.router.add_post("/wecom/callback/{merchant}", guarded(receive))
