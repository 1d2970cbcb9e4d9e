"""The app's typed keys: one place every route module reads its resources from.

Route modules import this, never the app factory (``gateway/app.py``), so imports flow one
way: the factory imports the routes, the routes import the keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .auth import TokenService
from .clock import DayClock
from .detect import Detector
from .links import LinkCache
from .pages import Pages
from .privacy import IpHasher
from .recorder import Recorder
from .settings import Settings
from .store import Store
from .tally import ShareLinkCounts

if TYPE_CHECKING:  # these modules import this one for its keys
    from .wechat.jssdk import JsSdk
    from .wechat.links import MiniProgramLinks
    from .wecom.callback import CallbackWorker
    from .wecom.entry import EntryDirectory

__all__ = [
    "CALLBACKS",
    "CLOCK",
    "DETECTOR",
    "ENTRIES",
    "IP_HASHER",
    "JSSDK",
    "LINKS",
    "MINIPROGRAM_LINKS",
    "OPENAPI",
    "PAGES",
    "PUBLIC_URL",
    "RECORDER",
    "SETTINGS",
    "SHARE_LINK_COUNTS",
    "STORE",
    "TOKENS",
    "WORKER",
]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
RECORDER = web.AppKey("recorder", Recorder)
LINKS = web.AppKey("links", LinkCache)
DETECTOR = web.AppKey("detector", Detector)
TOKENS = web.AppKey("tokens", TokenService)
PAGES = web.AppKey("pages", Pages)
CLOCK = web.AppKey("clock", DayClock)
IP_HASHER = web.AppKey("ip_hasher", IpHasher)
PUBLIC_URL = web.AppKey("public_url", str)
#: The API's OpenAPI document, built once when the app is made (gateway/openapi.py).
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
#: What the share link counts of itself, for GET /metrics.
SHARE_LINK_COUNTS = web.AppKey("share_link_counts", ShareLinkCounts)
#: Which of ``serve --workers N`` processes this is (0 for a single process).
WORKER = web.AppKey("worker", int)
ENTRIES: web.AppKey[EntryDirectory] = web.AppKey("entries")
CALLBACKS: web.AppKey[CallbackWorker] = web.AppKey("callbacks")
MINIPROGRAM_LINKS: web.AppKey[MiniProgramLinks] = web.AppKey("miniprogram_links")
JSSDK: web.AppKey[JsSdk] = web.AppKey("jssdk")
