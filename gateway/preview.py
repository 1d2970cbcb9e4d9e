"""What a shopper gets in each app, without a phone: ``GET /api/products/{id}/preview``.

For each of the 18 apps, a phone's browser and a desktop browser, the share link's own
resolver (``gateway.resolve.resolve``, with the links minted for the product) is asked what
it would answer a shopper there: a redirect (and to where), the launch page of a
mini-program's scheme, the landing page and its buttons (and where each button's ``/o/``
hop leads), with the mini-program's card in WeChat, or with the open-in-browser guide.
The shopper is a ``Detection`` as the detector makes it for that app's User-Agent
(``tests/test_console_api`` checks that against real User-Agents, and against the share
link itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from adapters import ADAPTERS, Storefront, by_platform

from .detect import Detection
from .resolve import Resolution, hop, resolve
from .store import Product

__all__ = ["OSES", "Place", "places", "preview"]

#: The phone operating systems a preview can be asked for (answers differ between them).
OSES = ("ios", "android")
Os = Literal["ios", "android"]


class Place:
    """Where a shopper may tap the link: an app, or a plain browser on a phone or desktop."""

    def __init__(self, key: str, label: str, detection: Detection) -> None:
        #: ``wechat``, ``douyin``..., ``mobile_browser`` or ``desktop_browser``.
        self.key = key
        self.label = label
        self.detection = detection


def places(os: Os = "ios") -> list[Place]:
    """Every app in registry order (their web-views on ``os``), then the two browsers."""
    found = [Place(a.platform, a.label, Detection(a.platform, False, True, os, "ua"))
             for a in ADAPTERS if a.platform != "web"]
    found.append(Place("mobile_browser", "手机浏览器", Detection("web", False, True, os, "none")))
    found.append(Place("desktop_browser", "电脑浏览器",
                       Detection("web", False, False, "windows", "none")))
    return found


def _label(platform: str) -> str:
    adapter = by_platform(platform)
    return adapter.label if adapter is not None else platform


def _outcome(resolution: Resolution) -> str:
    """``redirect``, ``launch`` (a page that hands the phone a mini-program's scheme),
    ``guide`` (the landing page with the open-in-browser guide) or ``landing``."""
    if resolution.redirect is not None:
        return "redirect"
    if resolution.launch is not None:
        return "launch"
    return "guide" if resolution.guide else "landing"


def _button(detection: Detection, front: Storefront,
            links: Mapping[str, str] | None) -> dict[str, Any]:
    """A storefront button, and what its ``/o/`` hop does: redirect or launch page, and to
    where."""
    found = hop(detection, front, links=links)
    return {"platform": front.platform, "label": front.label,
            "how": found.kind if found else None, "opens": found.url if found else None}


def preview(product: Product, *, os: Os = "ios", minted: Mapping[str, str] | None = None,
            entry: bool = False) -> list[dict[str, Any]]:
    """One answer per place. ``minted``: links minted for the product (a WeChat URL Link),
    which phones get as the share link gives them; ``entry``: a WeCom entry is set up."""
    answers = []
    for place in places(os):
        detection = place.detection
        links = minted if detection.mobile and minted else None
        resolution = resolve(detection, product.targets, links=links)
        landing = resolution.redirect is None and resolution.launch is None
        answers.append({
            "place": place.key,
            "label": place.label,
            "platform": detection.platform,
            "mobile": detection.mobile,
            "os": detection.os,
            "outcome": _outcome(resolution),
            "reason": resolution.reason,
            "rule": resolution.rule,
            "redirect": resolution.redirect,
            "launch": resolution.launch,
            "card": resolution.card.label if resolution.card else None,
            "target": resolution.target,
            "target_label": _label(resolution.target) if resolution.target else None,
            "buttons": [_button(detection, f, links) for f in resolution.options]
            if landing else [],
            "blocked": [{"platform": f.platform, "label": f.label,
                         "share_token": f.share_token,
                         "tryable": f.platform in resolution.tryable}
                        for f in resolution.blocked]
            if landing else [],
            "phone_only": [{"platform": f.platform, "label": f.label}
                           for f in resolution.phone_only] if landing else [],
            "qr": resolution.qr and landing,
            "entry": entry and landing,
        })
    return answers
