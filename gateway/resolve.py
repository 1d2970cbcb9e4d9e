"""What the shopper gets: source app x product targets -> a redirect or a landing page.

Pure functions over the adapters' declarations; the hot path calls ``resolve`` once per
click and the ``/o/`` hop calls ``hop_url``. Only URLs built from stored, validated targets
ever come out of here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adapters import Storefront, by_platform

from .detect import Detection

__all__ = ["Resolution", "hop_url", "resolve", "storefronts"]


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


def storefronts(targets: Mapping[str, Mapping[str, str]]) -> list[Storefront]:
    """Every storefront of a product, in registry order."""
    found = []
    for platform, target in targets.items():
        adapter = by_platform(platform)
        if adapter is not None:
            found.append(adapter.storefront(dict(target)))
    return found


def resolve(detection: Detection, targets: Mapping[str, Mapping[str, str]]) -> Resolution:
    source = by_platform(detection.platform) or by_platform("web")
    assert source is not None
    all_fronts = storefronts(targets)
    own = targets.get(detection.platform)
    if own is not None and detection.platform in source.opens and not detection.bot:
        front = next(f for f in all_fronts if f.platform == detection.platform)
        url = front.web_url or front.app_url
        if url:
            return Resolution(redirect=url, options=tuple(all_fronts))
    options = tuple(f for f in all_fronts if f.platform in source.opens)
    blocked = tuple(f for f in all_fronts if f.platform not in source.opens)
    return Resolution(redirect=None, options=options, blocked=blocked,
                      guide=bool(blocked) and source.blocks_web)


def hop_url(detection: Detection, front: Storefront) -> str | None:
    """The URL the ``/o/`` hop sends a shopper to for one storefront."""
    if detection.platform == front.platform and front.web_url:
        return front.web_url
    return front.web_url or front.app_url
