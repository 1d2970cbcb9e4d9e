"""What the shopper gets: source app x product targets -> a redirect or a landing page.

Pure functions over the adapters' declarations; the hot path calls ``resolve`` once per
click and the ``/o/`` hop calls ``hop_url``. Only URLs built from stored, validated targets
(or a minted link checked against its platform's hosts) ever come out of here.

The policy, in order:

* a bot never redirects (it gets the page, with web links only);
* a desktop shopper never redirects and never gets an app scheme: the landing page offers
  the web storefronts and the share link's QR code for the rest;
* inside an app (known from the User-Agent), a target on the app's own platform that the app
  opens is a straight redirect (Taobao -> the Taobao item, Douyin -> the Douyin shop item or
  mini-program), then the app's native mini-program (WeChat -> the WeChat mini-program);
  otherwise the landing page lists what the app opens, and what it blocks with the
  open-in-browser guide and share tokens;
* in a mobile browser everything opens, so the page lists everything; it redirects only when
  there is exactly one sensible choice with a web URL (the product's only storefront, or the
  one on the platform the ``?ch=`` channel or Referer named).

A channel or Referer names where the click came from, not what the shopper's app can do: the
User-Agent said "plain browser", so the browser's capabilities apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from adapters import ADAPTERS, Adapter, Storefront, TargetError, by_platform

from .detect import Detection

__all__ = ["Resolution", "hop_url", "resolve", "storefronts"]


def _registered(platform: str) -> Adapter:
    adapter = by_platform(platform)
    if adapter is None:  # pragma: no cover -- the registry always ends with web
        raise RuntimeError(f"no {platform} adapter registered")
    return adapter


_WEB = _registered("web")
_ORDER = {a.platform: i for i, a in enumerate(ADAPTERS)}


@dataclass(frozen=True, slots=True)
class Resolution:
    #: Where to send the shopper straight away (302), or None for the landing page.
    redirect: str | None
    #: Storefronts the shopper's app opens, best first: buttons through ``/o/``.
    options: tuple[Storefront, ...] = ()
    #: Storefronts the app blocks: offered with the open-in-browser guide and share token.
    blocked: tuple[Storefront, ...] = ()
    #: True when the landing page should show the open-in-browser guide.
    guide: bool = False
    #: The platform of the storefront ``redirect`` goes to; None for the landing page.
    target: str | None = None
    #: Why: ``bot``, ``desktop``, ``own_platform``, ``miniprogram``, ``single_choice``,
    #: ``choose`` (landing, nothing blocked), ``blocked`` (landing with the guide) or
    #: ``no_storefront``. Stable, for logs and tests.
    reason: str = ""
    #: Storefronts only a phone app opens (no web URL), for a desktop shopper: the landing
    #: page shows them with the share link's QR code.
    phone_only: tuple[Storefront, ...] = ()
    #: True when the landing page should offer the share link's QR code (desktop shoppers).
    qr: bool = False
    #: The click's outcome (store.OUTCOMES) for a person: ``redirect``, ``guide`` (the
    #: landing page with the open-in-browser guide) or ``landing``. Worked out here, once
    #: per memoised resolution, so a click only copies it.
    outcome: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", "redirect" if self.redirect is not None
                           else "guide" if self.guide else "landing")


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
    """A link minted for this storefront (a WeChat URL Link, say), if valid for its platform.

    The hook for links the gateway mints through a platform API: they replace the
    plain-text scheme. A link that is not https on the platform's own hosts is ignored,
    never followed: the no-open-redirect rule holds for minted links too.
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


def _url(detection: Detection, env: Adapter, front: Storefront,
         links: Mapping[str, str] | None) -> str | None:
    web_url = _minted(front, links) or front.web_url
    if detection.bot or not detection.mobile:
        # Desktops and bots: web pages only, never an app scheme.
        return web_url
    if env is _WEB or (_native(env, front) and front.platform in env.opens):
        # A mobile browser hands a scheme to the phone; an app opens its own scheme in place
        # (not a mini-program's web-view: it cannot leave for the mini-program's own link).
        return web_url or front.app_url
    # Another platform's scheme from inside an app is refused or silently dropped: the web
    # page is the only thing worth trying (a blocked one shows the app's own copy-link page).
    return web_url


def hop_url(detection: Detection, front: Storefront, *,
            links: Mapping[str, str] | None = None) -> str | None:
    """The URL the ``/o/`` hop sends a shopper to for one storefront, or None if none fits.

    A web URL in an app and on a desktop; the app scheme only on a phone, from a mobile
    browser (which hands it to the installed app) or from inside the storefront's own app.
    """
    return _url(detection, _environment(detection), front, links)


def resolve(detection: Detection, targets: Mapping[str, Mapping[str, str]], *,
            links: Mapping[str, str] | None = None) -> Resolution:
    """Redirect or landing page for one click. ``links`` maps a platform id to a link minted
    for this product (e.g. ``{"wechat_miniprogram": "https://wxaurl.cn/..."}``)."""
    env = _environment(detection)
    fronts = storefronts(targets)
    if not fronts:
        return Resolution(redirect=None, reason="no_storefront")

    def url(front: Storefront) -> str | None:
        return _url(detection, env, front, links)


    if detection.bot or not detection.mobile:
        with_web = [f for f in fronts if _minted(f, links) or f.web_url]
        opened = tuple(f for f in with_web if env is _WEB or f.platform in env.opens)
        blocked = tuple(f for f in with_web if f not in opened)
        return Resolution(
            redirect=None, options=opened, blocked=blocked, guide=bool(blocked),
            reason="bot" if detection.bot else "desktop",
            phone_only=tuple(f for f in fronts if f not in with_web), qr=not detection.bot,
        )

    if env is _WEB:
        # A mobile browser opens everything: redirect only on one sensible choice.
        usable = tuple(f for f in fronts if url(f))
        sensible = list(usable)
        named = by_platform(detection.platform)
        if detection.source in ("channel", "referer") and named is not None:
            preferred = [f for f in usable if _native(named, f)]
            if preferred:
                sensible = preferred
        if len(sensible) == 1 and (_minted(sensible[0], links) or sensible[0].web_url):
            only = sensible[0]
            return Resolution(redirect=url(only), options=usable, target=only.platform,
                              reason="single_choice")
        blocked = tuple(f for f in fronts if f not in usable)
        return Resolution(redirect=None, options=usable, blocked=blocked, guide=False,
                          reason="choose")

    # Inside an app: its own storefront first, then its native mini-program.
    native = sorted((f for f in fronts if _native(env, f) and f.platform in env.opens),
                    key=lambda f: f.platform != env.platform)
    options = [f for f in fronts if f.platform in env.opens and url(f)]
    options.sort(key=lambda f: not _native(env, f))
    blocked = tuple(f for f in fronts if f not in options)
    for front in native:
        target_url = url(front)
        if target_url:
            reason = "own_platform" if front.platform == env.platform else "miniprogram"
            return Resolution(redirect=target_url, options=tuple(options), blocked=blocked,
                              target=front.platform, reason=reason)
    return Resolution(redirect=None, options=tuple(options), blocked=blocked,
                      guide=bool(blocked), reason="blocked" if blocked else "choose")
