"""The one URL check: every URL the gateway sends a shopper to, or shows one, passes here.

Product targets (every adapter's ``url`` fields, ``web.url``), the WeCom entry's ``url`` and
``qr_url``, a product's ``image_url`` and the links minted through platform APIs all go
through ``check_url``. A URL is accepted only when it means the same thing to a browser and
to every lesser parser on the way (Python's ``urlsplit``, an in-app web-view, a log reader):

1. The text itself is plain: a string of at most 2,048 characters, valid Unicode (no lone
   surrogates), with no control, format (zero-width, bidi), whitespace or separator
   character and no backslash. A browser silently drops tabs and newlines and reads ``\\``
   as ``/``, so ``https://evil.com\\@jd.com`` goes to evil.com while ``urlsplit`` sees jd.com.
2. It starts with ``https://``: no other scheme (``javascript:``, ``http:``), no
   scheme-relative ``//evil.com``, none of the forms a browser forgives (``https:evil.com``,
   ``https:/\\evil.com``, ``https:///evil.com``).
3. The authority, as written, is a plain DNS name: ASCII letters, digits, hyphens and dots,
   two labels at least, no trailing dot, the last label not a number, every ``xn--``
   label decodable. So no userinfo
   (``https://jd.com@evil.com``), no port, no IPv4 or IPv6 literal, no percent-encoded
   (``%65vil.com``) or full-width (``evil。com``, ``ＪＤ.com``) host that a browser would
   decode into another name. An internationalised name is written in its ``xn--`` form.
4. A WHATWG URL parser (ada, the parser inside Node.js; https://url.spec.whatwg.org) reads
   it as https with exactly that host, no credentials and no port: what a browser will do.
5. The host is on the allow list (the platform's hosts, or the merchant's domains, and
   their subdomains), unless the URL is only ever *shown* (an image): then any public DNS
   name passes rule 3 (``ANY_PUBLIC_HOST``), since an ``<img>`` is fetched, never navigated
   to, and the picture may live on any CDN.

What is stored, and later put in a ``Location`` header or a page, is the parser's
serialisation (``href``): plain ASCII, the path and query percent-encoded as a browser
sends them, so nothing stored can break a header or mean something else later.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Final

from ada_url import URL, HostType, idna_to_unicode

from .errors import TargetError

__all__ = ["ANY_PUBLIC_HOST", "MAX_URL_LENGTH", "check_url", "host_is_within"]

MAX_URL_LENGTH = 2048
#: The allow list of a URL that is only shown (an image), never redirected to.
ANY_PUBLIC_HOST: Final = None

_SCHEME = "https://"
# Unicode categories no URL we accept contains: controls (Cc), format characters such as
# zero-width spaces and bidi overrides (Cf), surrogates (Cs), and every space or line and
# paragraph separator (Zs, Zl, Zp).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
# A DNS label: letters, digits and inner hyphens, 1-63 characters (RFC 1123).
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})+", re.IGNORECASE)
# Names that never reach a public server.
_LOCAL_SUFFIXES = ("localhost",)


def host_is_within(host: str, allowed: Sequence[str]) -> bool:
    """True when ``host`` is one of ``allowed`` or a subdomain of one."""
    host = host.lower().rstrip(".")
    for domain in allowed:
        domain = domain.lower().rstrip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


def _refuse(field: str, message: str, code: str = "invalid_url") -> TargetError:
    return TargetError(code, f"{field} {message}", field)


def _plain_text(value: object, field: str) -> str:
    """Rule 1: a string a browser reads exactly as written."""
    if not isinstance(value, str) or not value:
        raise _refuse(field, "must be a URL string")
    if len(value) > MAX_URL_LENGTH:
        raise _refuse(field, f"is longer than {MAX_URL_LENGTH} characters")
    if not value.isascii():
        for char in value:
            if unicodedata.category(char) in _REFUSED_CATEGORIES:
                raise _refuse(field, f"contains the character U+{ord(char):04X}: no "
                                     "whitespace, control or invisible characters")
    for char in value:
        if char <= " " or char in "\x7f\\":
            raise _refuse(field, "contains whitespace, a backslash or a control character")
    return value


def _authority(value: str, field: str) -> str:
    """Rules 2 and 3: ``https://`` and then a plain DNS name, as written."""
    if value[: len(_SCHEME)].lower() != _SCHEME:
        raise _refuse(field, "must be an absolute https URL (https://host/...)")
    rest = value[len(_SCHEME):]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    if "@" in authority:
        raise _refuse(field, "must not carry credentials (user@ before the host)")
    if authority.startswith("["):
        raise _refuse(field, "must name its host, not an IP address")
    if ":" in authority:
        raise _refuse(field, "must not name a port")
    if not _HOST.fullmatch(authority):
        raise _refuse(field, f"host {authority!r} must be a plain domain name (ASCII letters, "
                             "digits, - and dots; an IDN in its xn-- form)")
    if authority.rsplit(".", 1)[-1].isdigit():
        raise _refuse(field, "must name its host, not an IP address")
    lowered = authority.lower()
    for label in lowered.split("."):
        # An A-label that does not decode is no name a browser can reach (or show).
        if label.startswith("xn--") and idna_to_unicode(label) == label:
            raise _refuse(field, f"host {authority!r} has a broken xn-- label")
    if any(lowered == s or lowered.endswith("." + s) for s in _LOCAL_SUFFIXES):
        raise _refuse(field, f"host {authority!r} is not a public name")
    return lowered


def check_url(value: object, field: str, hosts: Sequence[str] | None) -> str:
    """``value`` as a browser serialises it, when it is a safe https URL on ``hosts``.

    ``hosts`` is the allow list (each name and its subdomains), or ``ANY_PUBLIC_HOST`` for a
    URL that is only shown. Raises ``TargetError`` with code ``invalid_url`` or
    ``host_not_allowed`` and ``field``.
    """
    text = _plain_text(value, field)
    host = _authority(text, field)
    try:
        url = URL(text)
    except ValueError:
        raise _refuse(field, "is not a valid URL") from None
    # What a browser will do, checked against what the text says (rules 3 and 4 agree).
    if (url.protocol != "https:" or url.host_type != HostType.DEFAULT or url.hostname != host
            or url.username or url.password or url.port):
        raise _refuse(field, "is read by browsers as another host")
    if hosts is not ANY_PUBLIC_HOST and not host_is_within(host, hosts):
        raise _refuse(field, f"host {host!r} is not one of: {', '.join(hosts) or 'none'}",
                      "host_not_allowed")
    href = url.href
    if len(href) > MAX_URL_LENGTH or not href.isascii():
        raise _refuse(field, f"is longer than {MAX_URL_LENGTH} characters once encoded")
    return href
