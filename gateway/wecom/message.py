"""WeCom's XML, read with a hardened parser: every byte of it comes from the network.

WeCom posts ``<xml><ToUserName/><AgentID/><Encrypt/></xml>`` and the message inside
``Encrypt`` is XML too (WeCom doc 接收消息与事件 96466, 事件格式 92130). Neither ever carries a
DTD, so both are parsed by defusedxml with DTDs, entities and external references refused:
a body declaring entities (billion laughs, quadratic blowup) stops at its ``<!DOCTYPE``,
before a single entity is declared, instead of costing a fraction of a second of CPU each.

The envelope reaches us unsigned (its signature covers ``Encrypt``, which only parsing
finds), so its markup is counted before it is parsed (``parse_envelope``): a body of
thousands of nested or sibling elements costs the parser milliseconds of the event loop
each, and four attackers posting such 64 KiB bodies held shoppers' share-link median at
141 ms, 40 times its quiet value (bench/attack.py).
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

__all__ = ["ENVELOPE_MAX_MARKUP", "MalformedMessage", "parse_envelope", "parse_message"]

#: The most ``<`` an envelope may hold. WeCom's has 11 (``<xml>``, three fields, each
#: value in CDATA); this leaves room for an XML declaration and a few fields more.
ENVELOPE_MAX_MARKUP = 32


class MalformedMessage(ValueError):
    """Not a WeCom XML message; ``reason`` says why (``xml_forbidden``, ``too_much_markup``
    or ``malformed``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_message(text: str) -> dict[str, Any]:
    """The top-level fields of a WeCom XML message (nested lists kept as lists of text)."""
    try:
        root = fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise MalformedMessage("xml_forbidden", f"DTDs and entities are refused: {exc}",
                               ) from None
    except ParseError as exc:
        raise MalformedMessage("malformed", f"not XML: {exc}") from None
    fields: dict[str, Any] = {}
    for child in root:
        if len(child):
            fields[child.tag] = [(item.text or "").strip() for item in child]
        else:
            fields[child.tag] = (child.text or "").strip()
    return fields


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The fields of the envelope WeCom posts (``parse_message``), refused unparsed when it
    holds more markup than an envelope can (a byte count in C: no parser runs)."""
    if body.count(b"<") > ENVELOPE_MAX_MARKUP:
        raise MalformedMessage("too_much_markup", "more markup than a WeCom envelope holds")
    return parse_message(body.decode("utf-8"))
