"""The shopper's pages that hand them over to a mini-program (gateway/resolve.py decides
which one a click gets):

* inside WeChat with no URL Link, the landing page's mini-program card: the open tag
  ``wx-open-launch-weapp`` when the merchant's official account signs the page (see
  gateway/wechat/jssdk.py), the mini-program code ("长按识别小程序码"), and otherwise the
  plain steps to find the mini-program by name, with the stores WeChat does open below it;
* on a phone outside the mini-program's app (Android browsers, other apps' web-views) the
  launch page: one big button that sets ``location.href`` to the scheme, and a line saying
  what to do when the app did not open within two seconds. Source: 获取 URL Scheme, "Android
  系统不支持直接识别 URL Scheme ... 需要使用 H5 页面中转" and "部分浏览器会限制打开网页直接跳转，
  可参考示例网页设置跳转按钮",
  https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/url-scheme.html;
* ``GET /p/{code}/miniprogram-code``: the mini-program code minted for the product, served
  from storage (gateway/wechat/links.py fetched it once).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from aiohttp import web
from cachetools import LRUCache

from adapters import ADAPTERS, Storefront

from .appkeys import JSSDK, LINKS, PAGES, PUBLIC_URL, SETTINGS, STORE
from .detect import Detection
from .guide import overlay_for
from .links import CachedLink
from .store import Product
from .wechat.jssdk import JsConfig
from .wechat.links import CODE_KEY

__all__ = ["NO_CARD", "OpenTag", "card_context", "launch_page", "miniprogram_code",
           "page_config"]

#: The landing page's mini-program parts when it has no card.
NO_CARD: dict[str, Any] = {"card": None, "card_name": None, "open_tag": None, "code_url": None,
                           "jssdk_url": None}

# The app whose mini-program each platform is ("微信" for a WeChat mini-program).
_HOST_APP = {a.miniprogram_platform: a.label for a in ADAPTERS if a.miniprogram_platform}


class OpenTag(NamedTuple):
    """What the open tag ``wx-open-launch-weapp`` needs (its ``wx.config`` is per page)."""

    #: The mini-program's appid, and its original id (``gh_...``) when the merchant gave it:
    #: the tag's ``appid`` and ``username`` attributes.
    appid: str
    username: str | None
    #: "所需跳转的小程序内页面路径及参数", the page with ``.html`` as the documentation's example
    #: writes it (``pages/home/index.html?user=123``).
    path: str


def mini_program_label(front: Storefront) -> str:
    return front.label if front.label.endswith("小程序") else f"{front.label}小程序"


async def page_config(request: web.Request, cached: CachedLink) -> JsConfig | None:
    """The JS-SDK config of this request's page, signed for the page's own URL as the
    shopper's browser has it (its fragment never reaches us, and the signature leaves it
    out anyway); None when the merchant has no official account or no ticket yet."""
    app = request.app
    return await app[JSSDK].config(cached.merchant_id, f"{app[PUBLIC_URL]}{request.raw_path}")


def card_context(app: web.Application, cached: CachedLink, card: Storefront,
                 *, signed: bool) -> dict[str, Any]:
    """The landing page's mini-program card inside WeChat: the open tag when the page is
    ``signed`` (its ``wx.config`` is put in per request), the code, or how to find it."""
    product = cached.product
    assert product is not None
    target = product.targets.get(card.platform, {})
    token = cached.minted.get(CODE_KEY)
    code_url = f"/p/{product.code}/miniprogram-code?v={token}" if token else None
    open_tag = None
    if signed and target.get("appid"):
        path = f"{target['path']}.html" + (f"?{target['query']}" if target.get("query") else "")
        open_tag = OpenTag(target["appid"], target.get("username"), path)
    return {"card": card, "card_name": target.get("name"), "open_tag": open_tag,
            "code_url": code_url,
            "jssdk_url": app[SETTINGS]["wechat.jssdk_url"] if open_tag else None}


def launch_page(request: web.Request, product: Product, front: Storefront, scheme: str,
                detection: Detection, share_url: str, *, others: bool) -> web.Response:
    """One button that hands ``scheme`` to the phone, and what to do if nothing opens."""
    app_name = _HOST_APP.get(front.platform, front.label)
    target = product.targets.get(front.platform, {})
    in_app = detection.source == "ua" and detection.platform != "web"
    return request.app[PAGES].render(
        "launch.html", product=product, scheme=scheme, label=mini_program_label(front),
        app_name=app_name, mini_name=target.get("name"), share_token=front.share_token,
        share_url=share_url, others_url=share_url if others else None,
        overlay=overlay_for(detection.platform, detection.os) if in_app else None)


_CODES: LRUCache[str, tuple[str, bytes]] = LRUCache(256)


async def miniprogram_code(request: web.Request) -> web.StreamResponse:
    """``/p/{code}/miniprogram-code``: the product's mini-program code image."""
    app = request.app
    code = request.match_info["code"]
    product = await app[LINKS].get(code)
    found = _CODES.get(code)
    if found is None and product is not None and not product.retired:
        found = await app[STORE].minted_image(code)
        if found is not None:
            _CODES[code] = found
    if found is not None and request.query.get("v") not in (None, found[0]):
        found = await app[STORE].minted_image(code)  # newer than this process holds
        if found is not None:
            _CODES[code] = found
    if product is None or product.retired or found is None:
        return app[PAGES].message(404, "code_not_found", "小程序码不存在",
                                  "这个商品还没有小程序码。")
    token, image = found
    # WeChat sends JPEG (or PNG): say which by the bytes, not by a stored guess.
    content_type = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
    return web.Response(body=image, content_type=content_type, headers={
        "Cache-Control": "public, max-age=86400", "ETag": f'"{token}"',
        "X-Content-Type-Options": "nosniff"})
