"""What the shopper gets: source app x product targets -> a redirect or a page.

Pure functions over the adapters' declarations; the share link calls ``resolve`` once per
product version and app (the answer is kept with the cached link) and the ``/o/`` hop calls
``hop``. Only URLs built from stored, validated targets (or a minted link checked against
its platform's hosts and forms) ever come out of here.

The policy, in order:

* a bot never redirects (it gets the page, with web links only);
* a desktop shopper never redirects and never gets an app scheme: the landing page offers
  the web storefronts and the share link's QR code for the rest;
* inside an app (known from the User-Agent), a target on the app's own platform that the app
  opens is a straight redirect (Taobao -> the Taobao item, Douyin -> the Douyin shop item or
  mini-program), then the app's native mini-program (WeChat -> the WeChat mini-program, by
  its URL Link; with none, the landing page carries the mini-program's card: the open tag,
  its code, or how to find it); otherwise the landing page lists what the app opens, and
  what it blocks with the open-in-browser guide and share tokens;
* in a mobile browser everything opens, so the page lists everything; it redirects only when
  there is exactly one sensible choice (the product's only storefront, or the one on the
  platform the ``?ch=`` channel or Referer named).

A mini-program is reached as its platform documents for the place the shopper is in (see
``RULES``, each with its source, and ``_mini_program_hop``): never ``weixin://`` inside WeChat,
a scheme straight away only from an iOS browser, and elsewhere on a phone a launch page the
shopper taps (``Hop.kind == "launch"``).

A channel or Referer names where the click came from, not what the shopper's app can do: the
User-Agent said "plain browser", so the browser's capabilities apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from adapters import ADAPTERS, Adapter, Storefront, TargetError, by_platform

from .detect import Detection

__all__ = [
    "RULES",
    "SCHEME_SUFFIX",
    "Hop",
    "Resolution",
    "hop",
    "hop_url",
    "resolve",
    "storefronts",
]


def _registered(platform: str) -> Adapter:
    adapter = by_platform(platform)
    if adapter is None:  # pragma: no cover -- the registry always ends with web
        raise RuntimeError(f"no {platform} adapter registered")
    return adapter


_WEB = _registered("web")
_ORDER = {a.platform: i for i, a in enumerate(ADAPTERS)}

#: ``links[platform + SCHEME_SUFFIX]``: a scheme minted for the platform (WeChat's encrypted
#: ``weixin://dl/business/?t=..``); ``links[platform]``: an https link minted for it (a URL Link).
SCHEME_SUFFIX = ":scheme"

#: Why a mini-program storefront is reached the way it is, where it is: rule -> its source.
RULES: dict[str, str] = {
    "url_link_in_wechat": (
        "获取加密 URL Link: 适用于从短信、邮件、网页、微信内等场景打开小程序; 当用户在微信内访问 "
        "URL Link, 会调整为开放标签打开小程序. "
        "https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/url-link.html"),
    "page_in_wechat": (
        "获取加密scheme码, 注意事项: 微信内的网页如需打开小程序请使用微信开放标签-小程序跳转按钮 "
        "(URL Scheme 只用于微信外); 开放标签 wx-open-launch-weapp: "
        "https://developers.weixin.qq.com/miniprogram/dev/api-backend/open-api/url-scheme/"
        "UrlScheme.generate.html, "
        "https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/Wechat_Open_Tag.html"),
    "scheme_ios_browser": (
        "获取 URL Scheme: iOS系统支持识别 URL Scheme, "
        "可在短信等应用场景中直接通过Scheme跳转小程序. "
        "https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/url-scheme.html"),
    "launch_page": (
        "获取 URL Scheme: Android系统不支持直接识别 URL Scheme, "
        "开发者需要使用 H5 页面中转, 再跳转到 Scheme (location.href); "
        "部分浏览器会限制打开网页直接跳转, 可参考示例网页设置跳转按钮. "
        "https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/url-scheme.html"),
    "url_link_outside_wechat": (
        "获取加密 URL Link, 注意事项: 在微信内或者安卓手机打开 URL Link 时, 默认会先跳转官方 H5 "
        "中间页. https://developers.weixin.qq.com/miniprogram/dev/framework/open-ability/"
        "url-link.html"),
    "own_scheme_in_app": (
        "支付宝 小程序 scheme 链接 alipays://platformapi/startapp (https://opendocs.alipay.com/"
        "support/01rb6e); 抖音小程序 snssdk1128://microapp, used by Douyin but not documented: "
        "the Link from 生成 Link V2 is (give it as url)"),
    "platform_https_page": (
        "支付宝: scheme 转换成 https 链接唤起小程序, https://ds.alipay.com/?scheme=<urlencoded "
        "scheme> (https://opendocs.alipay.com/support/01rb6e); 抖音: 生成 Link V2, "
        "https://developer.open-douyin.com/docs/resource/zh-CN/mini-app/develop/server/"
        "url-and-qrcode/link/url-link-generate"),
    "no_scheme_in_web_view": (
        "web-view 组件: 网页只能是小程序配置的业务域名; a mini-program's web-view follows no "
        "scheme. https://developers.weixin.qq.com/miniprogram/dev/component/web-view.html"),
    "phone_only": (
        "URL Scheme 和唤起小程序的中间页都只在手机上拉起 App: a desktop gets the share link's QR "
        "code (or a URL Link's page) instead"),
}


@dataclass(frozen=True, slots=True)
class Resolution:
    #: Where to send the shopper straight away (302), or None for a page.
    redirect: str | None
    #: Storefronts the shopper's app opens, best first: buttons through ``/o/``.
    options: tuple[Storefront, ...] = ()
    #: Storefronts the app blocks: offered with the open-in-browser guide and share token.
    blocked: tuple[Storefront, ...] = ()
    #: True when the landing page should show the open-in-browser guide.
    guide: bool = False
    #: The platform of the storefront ``redirect`` (or ``launch``) goes to.
    target: str | None = None
    #: Why: ``bot``, ``desktop``, ``own_platform``, ``miniprogram`` (WeChat -> its
    #: mini-program's URL Link), ``miniprogram_page`` (WeChat, the landing page with the
    #: mini-program's card), ``single_choice``, ``launch`` (the launch page of a scheme),
    #: ``choose`` (landing, nothing blocked), ``blocked`` (landing with the guide) or
    #: ``no_storefront``. Stable, for logs and tests.
    reason: str = ""
    #: Storefronts only a phone app opens (no web URL), for a desktop shopper: the landing
    #: page shows them with the share link's QR code.
    phone_only: tuple[Storefront, ...] = ()
    #: True when the landing page should offer the share link's QR code (desktop shoppers).
    qr: bool = False
    #: The scheme the launch page hands to the phone on a tap (``reason == "launch"``).
    launch: str | None = None
    #: Inside WeChat with no URL Link: the WeChat mini-program, shown on the landing page as a
    #: card (open tag, mini-program code or how to find it) instead of a button.
    card: Storefront | None = None
    #: Blocked storefronts whose ``/o/`` hop still serves a launch page worth a tap (a
    #: mini-program scheme the app may or may not follow; the page says what to do if not).
    tryable: tuple[str, ...] = ()
    #: The ``RULES`` key that decided how the target storefront (or card) is reached.
    rule: str | None = None
    #: The click's outcome (store.OUTCOMES) for a person: ``redirect`` (straight to the
    #: storefront, or the launch page handing the phone its mini-program's scheme, as the
    #: ``/o/`` hop's launch page counts an open), ``guide`` (the landing page with the
    #: open-in-browser guide) or ``landing``. Worked out here, once per memoised
    #: resolution, so a click only copies it.
    outcome: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", "redirect" if self.redirect is not None
                           or self.launch is not None else "guide" if self.guide
                           else "landing")


class Hop(NamedTuple):
    """Where the ``/o/`` hop sends a shopper for one storefront."""

    #: ``redirect`` (302 to ``url``), ``launch`` (the launch page of the scheme ``url``) or
    #: ``page`` (the landing page with the mini-program's card; ``url`` is None).
    kind: Literal["redirect", "launch", "page"]
    url: str | None
    #: The ``RULES`` key, for a mini-program; None for a shop's ordinary link.
    rule: str | None = None


def storefronts(targets: Mapping[str, Mapping[str, str]]) -> list[Storefront]:
    """Every storefront of a product, in registry order; unknown platforms are skipped."""
    found = []
    for platform in sorted(targets, key=lambda p: _ORDER.get(p, len(_ORDER))):
        adapter = by_platform(platform)
        if adapter is not None and adapter.is_target:
            found.append(adapter.storefront(dict(targets[platform])))
    return found


def _environment(detection: Detection) -> Adapter:
    """The app whose capabilities apply: the User-Agent's app, else a plain browser."""
    if detection.source == "ua":
        return by_platform(detection.platform) or _WEB
    return _WEB


def _native(env: Adapter, front: Storefront) -> bool:
    """The app's own storefront (or its own mini-program runtime): its links open natively."""
    return front.platform == env.platform or front.platform == env.miniprogram_platform


def _minted(front: Storefront, links: Mapping[str, str] | None) -> str | None:
    """An https link minted for this storefront (a WeChat URL Link), if valid for its platform.

    A link that is not https on the platform's own hosts is ignored, never followed: the
    no-open-redirect rule holds for minted links too.
    """
    if not links or front.platform not in links:
        return None
    adapter = by_platform(front.platform)
    if adapter is None or adapter.platform == "web":
        return None
    try:
        return adapter.check_url(links[front.platform], f"{front.platform}.link", ())
    except TargetError:
        return None


def _minted_scheme(front: Storefront, links: Mapping[str, str] | None) -> str | None:
    """A scheme minted for this storefront (WeChat's encrypted scheme), if it is one."""
    value = links.get(front.platform + SCHEME_SUFFIX) if links else None
    adapter = by_platform(front.platform)
    return adapter.check_scheme(value) if value and adapter is not None else None


def _mini_program_hop(detection: Detection, env: Adapter, front: Storefront,
                      links: Mapping[str, str] | None) -> Hop | None:
    """A mini-program on a phone, as its platform documents for where the shopper is."""
    https = _minted(front, links) or front.web_url
    if _native(env, front) and front.platform in env.opens:
        if front.platform == env.miniprogram_platform:
            # WeChat and its own mini-program: a URL Link, else the page with the open tag,
            # the code or how to find it. Never weixin://: URL Schemes are for outside WeChat.
            if https:
                return Hop("redirect", https, "url_link_in_wechat")
            return Hop("page", None, "page_in_wechat")
        # Alipay or Douyin and their own mini-program: their link, else their scheme.
        url = https or front.app_url
        rule = "platform_https_page" if https else "own_scheme_in_app"
        return Hop("redirect", url, rule) if url else None
    if not env.follows_schemes:
        return None  # a mini-program's web-view: nothing but its business domains
    # Outside the mini-program's own app: a minted scheme (WeChat's encrypted one opens any
    # published page), else the platform's own https page, else the plain scheme.
    scheme = _minted_scheme(front, links)
    if scheme is None:
        https = https or front.phone_url
        if https:
            rule = ("url_link_outside_wechat" if front.platform == "wechat_miniprogram"
                    else "platform_https_page")
            return Hop("redirect", https, rule)
        scheme = front.app_url
    if scheme is None:
        return None
    if env is _WEB and detection.os == "ios":
        return Hop("redirect", scheme, "scheme_ios_browser")
    # Android browsers, and any app's web-view: one tap on a page of ours, with a way out
    # when nothing opens (the app refused the scheme, or the phone lacks the app).
    return Hop("launch", scheme, "launch_page")


def _hop(detection: Detection, env: Adapter, front: Storefront,
         links: Mapping[str, str] | None) -> Hop | None:
    web_url = _minted(front, links) or front.web_url
    if detection.bot or not detection.mobile:
        # Desktops and bots: web pages only, never an app scheme.
        return Hop("redirect", web_url) if web_url else None
    if front.mini_program:
        return _mini_program_hop(detection, env, front, links)
    if env is _WEB or (_native(env, front) and front.platform in env.opens):
        # A mobile browser hands a scheme to the phone; an app opens its own scheme in place.
        url = web_url or front.app_url
    else:
        # Another platform's scheme from inside an app is refused or silently dropped: the
        # web page is the only thing worth trying (a blocked one shows the app's own page).
        url = web_url
    return Hop("redirect", url) if url else None


def hop(detection: Detection, front: Storefront, *,
        links: Mapping[str, str] | None = None) -> Hop | None:
    """What the ``/o/`` hop does for one storefront; None when nothing fits (the landing
    page with the open-in-browser guide then)."""
    return _hop(detection, _environment(detection), front, links)


def hop_url(detection: Detection, front: Storefront, *,
            links: Mapping[str, str] | None = None) -> str | None:
    """The link ``hop`` sends a shopper to (a redirect's URL or a launch page's scheme)."""
    found = hop(detection, front, links=links)
    return found.url if found is not None else None


def resolve(detection: Detection, targets: Mapping[str, Mapping[str, str]], *,
            links: Mapping[str, str] | None = None) -> Resolution:
    """Redirect or page for one click. ``links`` holds what was minted for this product:
    ``{"wechat_miniprogram": "https://wxaurl.cn/..", "wechat_miniprogram:scheme": "weixin://.."}``.
    """
    env = _environment(detection)
    fronts = storefronts(targets)
    if not fronts:
        return Resolution(redirect=None, reason="no_storefront")

    def way(front: Storefront) -> Hop | None:
        return _hop(detection, env, front, links)

    if detection.bot or not detection.mobile:
        with_web = [f for f in fronts if way(f)]
        opened = tuple(f for f in with_web if env is _WEB or f.platform in env.opens)
        blocked = tuple(f for f in with_web if f not in opened)
        return Resolution(
            redirect=None, options=opened, blocked=blocked, guide=bool(blocked),
            reason="bot" if detection.bot else "desktop",
            phone_only=tuple(f for f in fronts if f not in with_web), qr=not detection.bot,
        )

    if env is _WEB:
        # A mobile browser opens everything: redirect (or launch) only on one sensible choice.
        usable = tuple(f for f in fronts if way(f))
        sensible = list(usable)
        named = by_platform(detection.platform)
        if detection.source in ("channel", "referer") and named is not None:
            preferred = [f for f in usable if _native(named, f)]
            if preferred:
                sensible = preferred
        if len(sensible) == 1:
            only = sensible[0]
            found = way(only)
            assert found is not None
            if found.kind == "launch":
                return Resolution(redirect=None, options=usable, target=only.platform,
                                  reason="launch", launch=found.url, rule=found.rule)
            if found.kind == "redirect":
                return Resolution(redirect=found.url, options=usable, target=only.platform,
                                  reason="single_choice", rule=found.rule)
        blocked = tuple(f for f in fronts if f not in usable)
        return Resolution(redirect=None, options=usable, blocked=blocked, guide=False,
                          reason="choose")

    # Inside an app: its own storefront first, then its native mini-program.
    native = sorted((f for f in fronts if _native(env, f) and f.platform in env.opens),
                    key=lambda f: f.platform != env.platform)
    card = None
    for front in native:
        found = way(front)
        if found is not None and found.kind == "redirect":
            reason = "own_platform" if front.platform == env.platform else "miniprogram"
            options = _in_app_options(env, fronts, way)
            return Resolution(redirect=found.url, options=options,
                              blocked=tuple(f for f in fronts if f not in options),
                              target=front.platform, reason=reason, rule=found.rule)
        if found is not None and found.kind == "page" and card is None:
            card = front
    options = tuple(f for f in _in_app_options(env, fronts, way) if f is not card)
    blocked = tuple(f for f in fronts if f not in options and f is not card)
    tryable = tuple(f.platform for f in blocked
                    if (found := way(f)) is not None and found.kind == "launch")
    if card is not None:
        return Resolution(redirect=None, options=options, blocked=blocked, guide=bool(blocked),
                          target=card.platform, reason="miniprogram_page", card=card,
                          tryable=tryable, rule="page_in_wechat")
    return Resolution(redirect=None, options=options, blocked=blocked, guide=bool(blocked),
                      reason="blocked" if blocked else "choose", tryable=tryable)


def _in_app_options(env: Adapter, fronts: list[Storefront],
                    way: Callable[[Storefront], Hop | None]) -> tuple[Storefront, ...]:
    """What the app opens with a usable link, its own (and its mini-program) first."""
    options = [f for f in fronts if f.platform in env.opens and way(f)]
    options.sort(key=lambda f: not _native(env, f))
    return tuple(options)
