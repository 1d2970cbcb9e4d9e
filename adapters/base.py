"""What every platform adapter declares, and the shared checks adapters build on.

An adapter answers three questions about one platform:

* *is the shopper inside my app?* -- ``claims(user_agent)``, from ``ua_markers``;
* *what can my app open?* -- ``opens`` (target platforms whose storefront links the app opens
  in place) and ``blocks_web`` (whether outside web links need the open-in-browser guide);
* *how is a product of mine reached?* -- ``validate_target`` (the merchant's fields) and
  ``storefront`` (web URL, app scheme, mini-program link).

Identity lives in class attributes so a reader sees a platform at a glance; behaviour that
differs lives in a small override.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

__all__ = [
    "Adapter",
    "Storefront",
    "Target",
    "TargetError",
    "host_is_within",
]

#: A validated target: the adapter's own fields, plain strings only.
Target = dict[str, str]

# Fields every target may carry, whatever the platform (see DESIGN.md's target table).
COMMON_OPTIONAL_FIELDS = ("share_token", "url")
_MAX_FIELD_LENGTH = 2048
_MAX_SHARE_TOKEN_LENGTH = 512


class TargetError(ValueError):
    """A merchant's target is unusable. ``code`` is stable; ``field`` names the bad field."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class Storefront:
    """Every way the product can be reached on one platform."""

    platform: str
    label: str
    #: An https URL on the platform's own hosts (or the merchant's domain for ``web``).
    web_url: str | None = None
    #: The app's own scheme (``taobao://...``) or a mini-program link (``weixin://dl/...``).
    app_url: str | None = None
    #: Text the shopper can copy into the app (a Taobao 口令, say).
    share_token: str | None = None


def host_is_within(host: str, allowed: tuple[str, ...] | list[str]) -> bool:
    """True when ``host`` is one of ``allowed`` or a subdomain of one."""
    host = host.lower().rstrip(".")
    return any(host == a or host.endswith("." + a) for a in allowed)


def check_https_url(value: object, field: str, allowed_hosts: tuple[str, ...] | list[str]) -> str:
    """An absolute http(s) URL on one of ``allowed_hosts``; anything else is refused."""
    if not isinstance(value, str) or not value:
        raise TargetError("invalid_url", f"{field} must be a URL string", field)
    if len(value) > _MAX_FIELD_LENGTH:
        raise TargetError("invalid_url", f"{field} is longer than {_MAX_FIELD_LENGTH}", field)
    if any(c.isspace() or ord(c) < 0x20 for c in value):
        raise TargetError("invalid_url", f"{field} contains whitespace or control characters", field)
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise TargetError("invalid_url", f"{field} must be an absolute http(s) URL", field)
    if parts.username or parts.password:
        raise TargetError("invalid_url", f"{field} must not carry credentials", field)
    if not host_is_within(parts.hostname, allowed_hosts):
        raise TargetError(
            "host_not_allowed",
            f"{field} host {parts.hostname!r} is not one of: {', '.join(allowed_hosts) or 'none'}",
            field,
        )
    return value


class Adapter:
    """One platform. Subclasses set the class attributes and override what differs."""

    #: The platform id of the interface contract (``taobao``, ``wechat``...).
    platform: ClassVar[str]
    #: The name shoppers see on the landing page.
    label: ClassVar[str]
    #: User-Agent substrings that mean "inside this app" (case-sensitive, any one matches).
    ua_markers: ClassVar[tuple[str, ...]] = ()
    #: Substrings that veto a marker match (an overseas sibling app, a preview bot...).
    ua_excludes: ClassVar[tuple[str, ...]] = ()
    #: Referer hosts (and their subdomains) that mean the shopper came from this app.
    referer_hosts: ClassVar[tuple[str, ...]] = ()
    #: Hosts a target URL on this platform may point to (and their subdomains).
    owned_hosts: ClassVar[tuple[str, ...]] = ()
    #: Required target fields, as alternatives: the target must have every field of one set.
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = ()
    #: Optional target fields beyond ``share_token`` and ``url``.
    optional_fields: ClassVar[tuple[str, ...]] = ()
    #: Per-field patterns the value must match in full.
    field_patterns: ClassVar[Mapping[str, str]] = {}
    #: Target platforms whose storefront this app opens in place when the shopper taps it.
    opens: ClassVar[frozenset[str]] = frozenset()
    #: True when the app blocks outside web links (the landing page shows the browser guide).
    blocks_web: ClassVar[bool] = False
    #: True for a platform a shopper can be *in* (every app); False for target-only entries.
    is_app: ClassVar[bool] = True
    #: User-Agent fragments this adapter must claim and no other adapter may (tests).
    ua_samples: ClassVar[tuple[str, ...]] = ()

    _compiled: ClassVar[dict[str, re.Pattern[str]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._compiled = {f: re.compile(p) for f, p in cls.field_patterns.items()}

    # --- is the shopper inside my app? -------------------------------------------------------
    def claims(self, user_agent: str) -> bool:
        return any(m in user_agent for m in self.ua_markers) and not any(
            x in user_agent for x in self.ua_excludes
        )

    # --- how is a product of mine reached? ---------------------------------------------------
    def validate_target(self, raw: object, *, web_domains: tuple[str, ...] = ()) -> Target:
        """Check a merchant's target for this platform and return its normalised fields."""
        if not isinstance(raw, Mapping):
            raise TargetError("invalid_target", f"target {self.platform} must be an object")
        allowed = {f for group in self.target_fields for f in group}
        allowed |= set(self.optional_fields) | set(COMMON_OPTIONAL_FIELDS)
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise TargetError(
                "unknown_field",
                f"{self.platform} has no field {unknown[0]!r}; fields: {', '.join(sorted(allowed))}",
                f"{self.platform}.{unknown[0]}",
            )
        target: Target = {}
        for name, value in raw.items():
            path = f"{self.platform}.{name}"
            if value is None:
                continue
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise TargetError("invalid_field", f"{path} must be a string", path)
            text = str(value).strip()
            if not text:
                continue
            limit = _MAX_SHARE_TOKEN_LENGTH if name == "share_token" else _MAX_FIELD_LENGTH
            if len(text) > limit:
                raise TargetError("invalid_field", f"{path} is longer than {limit}", path)
            pattern = self._compiled.get(name)
            if pattern is not None and not pattern.fullmatch(text):
                raise TargetError("invalid_field", f"{path} {text!r} is not a valid {name}", path)
            target[name] = text
        if self.target_fields and not any(all(f in target for f in g) for g in self.target_fields):
            wanted = " or ".join(" + ".join(g) for g in self.target_fields)
            raise TargetError("missing_field", f"{self.platform} needs {wanted}", self.platform)
        if "url" in target:
            target["url"] = self.check_url(target["url"], f"{self.platform}.url", web_domains)
        return target

    def check_url(self, url: str, field: str, web_domains: tuple[str, ...]) -> str:
        """A URL field must be on a host this platform owns."""
        return check_https_url(url, field, self.owned_hosts)

    def storefront(self, target: Target) -> Storefront:
        """Web URL, app scheme and share token for a validated target."""
        return Storefront(
            platform=self.platform,
            label=self.label,
            web_url=target.get("url") or self.web_url(target),
            app_url=self.app_url(target),
            share_token=target.get("share_token"),
        )

    def web_url(self, target: Target) -> str | None:
        return None

    def app_url(self, target: Target) -> str | None:
        return None

    def __repr__(self) -> str:
        return f"<adapter {self.platform}>"
