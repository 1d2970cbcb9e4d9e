"""What every platform adapter declares, and the shared checks adapters build on.

An adapter answers three questions about one platform:

* *is the shopper inside my app?* -- ``claims(user_agent)``, from ``ua_markers`` (any one),
  ``ua_requires`` (all of them), ``ua_excludes`` (none of them) and ``ua_pattern``;
* *what can my app open?* -- ``opens``: the target platforms whose storefront links the app
  opens in place (``"web"`` among them when outside web pages load);
* *how is a product of mine reached?* -- ``validate_target`` (the merchant's fields) and
  ``storefront`` (web URL, app scheme, mini-program link).

Identity lives in class attributes so a reader sees a platform at a glance; behaviour that
differs lives in a small override.

User-Agent markers are matched case-insensitively: the same app is seen with ``BaiduBoxApp``
and ``baiduboxapp``, and some fixtures (and proxies) lower-case the whole header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from .errors import TargetError
from .urls import check_url, host_is_within

__all__ = [
    "MINI_PATH_PATTERN",
    "MINI_QUERY_PATTERN",
    "Adapter",
    "FieldDoc",
    "Storefront",
    "Target",
    "TargetError",
    "check_url",
    "encode",
    "host_is_within",
    "strip_mini_program_fields",
]

#: A validated target: the adapter's own fields, plain strings only.
Target = dict[str, str]

# Fields every target may carry, whatever the platform (see DESIGN.md's target table).
COMMON_OPTIONAL_FIELDS = ("share_token", "url")
_MAX_FIELD_LENGTH = 2048
_MAX_SHARE_TOKEN_LENGTH = 512
# C0 and C1 controls, DEL and lone surrogates: never part of an id, a path or a share token;
# controls break headers and CSV rows, and a lone surrogate can't be encoded to UTF-8 at all
# (storage, the landing page and every JSON answer would fail on it).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# JSON integers the gateway takes for an id: a signed 64-bit range, as every store keeps them.
_MAX_INT = 2**63 - 1

#: A mini-program page path (``pages/item/index``), no query, at most 256 characters. A
#: leading ``/`` is accepted and dropped: WeChat's plain-text scheme refuses it.
MINI_PATH_PATTERN = r"(?=.{1,256}\Z)/?[A-Za-z0-9_-]+(?:/[A-Za-z0-9_.-]+)*"
#: A mini-program launch query (``id=42&from=share``): WeChat's documented character set and
#: 512-character limit; Alipay takes the same shape. A leading ``?`` is accepted and dropped.
MINI_QUERY_PATTERN = r"\??[A-Za-z0-9!#$&'()*+,/:;=?@._~%-]{1,512}"


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
    #: An https page of the platform's own that hands a phone over to its app (Alipay's
    #: ``ds.alipay.com/?scheme=``): for phones outside the app, never for a desktop.
    phone_url: str | None = None
    #: A mini-program (WeChat's, Alipay's, Douyin's): its scheme is handed to the phone by
    #: the rules of gateway/resolve.py, never by a bare redirect from just anywhere.
    mini_program: bool = False


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """How a person is told about one target field: in the console's form, the import
    template and ``linkloop product``. ``example`` must pass the field's own check."""

    #: A short name (``商品 ID``).
    label: str
    #: Where to find the value, in a sentence.
    help: str
    #: A value that is valid for this field.
    example: str


#: What the fields every target may carry mean, unless an adapter says more.
COMMON_FIELD_DOCS: Mapping[str, FieldDoc] = {
    "share_token": FieldDoc(
        "口令（可选）", "顾客在别的 App 里打不开时，可复制这段文字到该 App 打开商品",
        "￥AbC123￥"),
}


def encode(value: str) -> str:
    """Percent-encode a whole query value (``=``, ``&``, ``/`` and ``?`` included)."""
    return quote(value, safe="")


class Adapter:
    """One platform. Subclasses set the class attributes and override what differs."""

    #: The platform id of the interface contract (``taobao``, ``wechat``...).
    platform: ClassVar[str]
    #: The name shoppers see on the landing page.
    label: ClassVar[str]
    #: User-Agent substrings that mean "inside this app" (case-insensitive, any one matches).
    ua_markers: ClassVar[tuple[str, ...]] = ()
    #: Substrings that must *also* all be present (a mini-program web-view inside WeChat).
    ua_requires: ClassVar[tuple[str, ...]] = ()
    #: Substrings that veto a marker match (an overseas sibling app, a preview bot...).
    ua_excludes: ClassVar[tuple[str, ...]] = ()
    #: A regular expression the lower-cased User-Agent must also contain, for a marker too
    #: short to trust as a plain substring (QQ's ``QQ/<digits>``).
    ua_pattern: ClassVar[str | None] = None
    #: Referer hosts (and their subdomains) that mean the shopper came from this app.
    referer_hosts: ClassVar[tuple[str, ...]] = ()
    #: Hosts a target URL on this platform may point to (and their subdomains).
    owned_hosts: ClassVar[tuple[str, ...]] = ()
    #: Required target fields, as alternatives: the target must have every field of one set.
    #: Empty for an app that has no storefront of its own: it cannot be a product target.
    target_fields: ClassVar[tuple[tuple[str, ...], ...]] = ()
    #: Optional target fields beyond ``share_token`` and ``url``.
    optional_fields: ClassVar[tuple[str, ...]] = ()
    #: Per-field patterns the value must match in full.
    field_patterns: ClassVar[Mapping[str, str]] = {}
    #: Target platforms whose storefront this app opens in place when the shopper taps it.
    opens: ClassVar[frozenset[str]] = frozenset()
    #: The mini-program platform this app runs natively, whose target is reached by its
    #: mini-program link (WeChat: ``wechat_miniprogram``). Alipay and Douyin mini-programs are
    #: their own platform's targets.
    miniprogram_platform: ClassVar[str | None] = None
    #: False for a web-view that follows no link off http(s) at all (a mini-program's
    #: web-view): an app scheme is never worth a try there, not even from a launch page.
    follows_schemes: ClassVar[bool] = True
    #: Short synthetic User-Agent fragments this adapter must win in detection (tests).
    ua_samples: ClassVar[tuple[str, ...]] = ()
    #: What each of the target's fields means, for people (label, help, example); fields
    #: not named here fall back to COMMON_FIELD_DOCS, then to the field's own name.
    field_docs: ClassVar[Mapping[str, FieldDoc]] = {}

    _compiled: ClassVar[dict[str, re.Pattern[str]]]
    _markers_lc: ClassVar[tuple[str, ...]]
    _requires_lc: ClassVar[tuple[str, ...]]
    _excludes_lc: ClassVar[tuple[str, ...]]
    _ua_re: ClassVar[re.Pattern[str] | None]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._compiled = {f: re.compile(p) for f, p in cls.field_patterns.items()}
        cls._markers_lc = tuple(m.lower() for m in cls.ua_markers)
        cls._requires_lc = tuple(m.lower() for m in cls.ua_requires)
        cls._excludes_lc = tuple(m.lower() for m in cls.ua_excludes)
        cls._ua_re = re.compile(cls.ua_pattern) if cls.ua_pattern else None

    # --- is the shopper inside my app? -------------------------------------------------------
    def claims(self, user_agent: str) -> bool:
        return self.claims_lowered(user_agent.lower())

    def claims_lowered(self, lowered: str) -> bool:
        """``claims`` for a User-Agent already lower-cased (the detector lowers it once)."""
        # Plain loops, not any()/all() over generators: this runs ~20 times per click.
        for marker in self._markers_lc:
            if marker in lowered:
                break
        else:
            return False
        for required in self._requires_lc:
            if required not in lowered:
                return False
        for excluded in self._excludes_lc:
            if excluded in lowered:
                return False
        return self._ua_re is None or self._ua_re.search(lowered) is not None

    # --- how is a product of mine reached? ---------------------------------------------------
    @property
    def is_target(self) -> bool:
        """True when a product can have a storefront on this platform."""
        return bool(self.target_fields)

    @property
    def form_fields(self) -> tuple[str, ...]:
        """Every field a target may have, in the order a person fills them in: each
        alternative's fields, the optional ones, then ``share_token`` and ``url``."""
        names: dict[str, None] = {}
        for group in self.target_fields:
            names.update(dict.fromkeys(group))
        names.update(dict.fromkeys(self.optional_fields))
        names.update(dict.fromkeys(COMMON_OPTIONAL_FIELDS))
        return tuple(names)

    def field_doc(self, name: str) -> FieldDoc:
        """How a person is told about one of the target's fields."""
        found = self.field_docs.get(name) or COMMON_FIELD_DOCS.get(name)
        if found is not None:
            return found
        if name == "url" and self.owned_hosts:
            # The platform's own page for the example product, on the hosts it must be on.
            built = self.web_url({f: self.field_doc(f).example for f in self.target_fields[0]})
            hosts = "、".join(self.owned_hosts)
            return FieldDoc(
                "商品网址（可选）",
                f"该平台自己的 https 网址（{hosts}）；" + ("不填则按商品 ID 自动生成" if built
                                                         else "可不填"),
                built or f"https://{self.owned_hosts[0]}/s/AbCdEf12")
        return FieldDoc(name, "", "")

    def validate_target(self, raw: object, *, web_domains: tuple[str, ...] = ()) -> Target:
        """Check a merchant's target for this platform and return its normalised fields."""
        if not self.target_fields:
            raise TargetError(
                "unsupported_platform",
                f"{self.platform} is an app shoppers browse in, with no storefront of its own; "
                "give the product's web, mini-program or shop targets instead",
                self.platform,
            )
        if not isinstance(raw, Mapping):
            raise TargetError("invalid_target", f"target {self.platform} must be an object",
                              self.platform)
        allowed = {f for group in self.target_fields for f in group}
        allowed |= set(self.optional_fields) | set(COMMON_OPTIONAL_FIELDS)
        unknown = sorted(str(k) for k in set(raw) - allowed)
        if unknown:
            fields = ", ".join(sorted(allowed))
            raise TargetError(
                "unknown_field",
                f"{self.platform} has no field {unknown[0]!r}; fields: {fields}",
                f"{self.platform}.{unknown[0]}",
            )
        target: Target = {}
        for name, value in raw.items():
            path = f"{self.platform}.{name}"
            if value is None:
                continue
            if (not isinstance(value, str | int) or isinstance(value, bool)
                    or (isinstance(value, int) and not -_MAX_INT <= value <= _MAX_INT)):
                raise TargetError("invalid_field", f"{path} must be a string", path)
            text = str(value).strip()
            if not text:
                continue
            if name == "url":  # judged whole by the one URL check, below
                target[name] = text
                continue
            limit = _MAX_SHARE_TOKEN_LENGTH if name == "share_token" else _MAX_FIELD_LENGTH
            if len(text) > limit:
                raise TargetError("invalid_field", f"{path} is longer than {limit}", path)
            if _CONTROL.search(text):
                raise TargetError("invalid_field", f"{path} contains control characters", path)
            pattern = self._compiled.get(name)
            if pattern is not None and not pattern.fullmatch(text):
                raise TargetError("invalid_field", f"{path} {text!r} is not a valid {name}", path)
            target[name] = text
        self._check_groups(target)
        target = self.normalize(target)
        if "url" in target:
            target["url"] = self.check_url(target["url"], f"{self.platform}.url", web_domains)
        return target

    def _check_groups(self, target: Target) -> None:
        """One whole alternative is required, and no alternative may be given half-way."""
        wanted = " or ".join(" + ".join(g) for g in self.target_fields)
        for group in self.target_fields:
            given = [f for f in group if f in target]
            if given and len(given) < len(group):
                missing = next(f for f in group if f not in target)
                raise TargetError(
                    "missing_field",
                    f"{self.platform}.{given[0]} needs {missing} too ({self.platform} needs "
                    f"{wanted})",
                    f"{self.platform}.{missing}",
                )
        if not any(all(f in target for f in g) for g in self.target_fields):
            raise TargetError("missing_field", f"{self.platform} needs {wanted}", self.platform)

    def normalize(self, target: Target) -> Target:
        """Put accepted variants in their one stored form (a hook; most ids need nothing)."""
        return target

    def check_url(self, url: str, field: str, web_domains: tuple[str, ...]) -> str:
        """A URL field must be on a host this platform owns (the one URL check)."""
        return check_url(url, field, self.owned_hosts)

    def storefront(self, target: Target) -> Storefront:
        """Web URL, app scheme and share token for a validated target."""
        return Storefront(
            platform=self.platform,
            label=self.label,
            web_url=target.get("url") or self.web_url(target),
            app_url=self.app_url(target),
            share_token=target.get("share_token"),
            phone_url=self.phone_url(target),
            mini_program=self.is_mini_program(target),
        )

    def web_url(self, target: Target) -> str | None:
        return None

    def app_url(self, target: Target) -> str | None:
        return None

    def phone_url(self, target: Target) -> str | None:
        return None

    def is_mini_program(self, target: Target) -> bool:
        """True when the target is a mini-program (reached by its scheme, not a shop page)."""
        return False

    def check_scheme(self, value: str) -> str | None:
        """A scheme minted for this platform through its API, or None when ``value`` is not
        one (the resolver then ignores it: minted links obey the no-open-redirect rule too)."""
        return None

    def __repr__(self) -> str:
        return f"<adapter {self.platform}>"


def strip_mini_program_fields(target: Target, path_field: str) -> Target:
    """Drop the leading ``/`` of a page path and the leading ``?`` of a query."""
    out = dict(target)
    if path_field in out:
        out[path_field] = out[path_field].lstrip("/")
    if "query" in out:
        out["query"] = out["query"].lstrip("?")
        if not out["query"]:
            del out["query"]
    return out
