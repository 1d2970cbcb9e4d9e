"""Query parameters that parse a request and describe themselves in the OpenAPI document.

One object per parameter: the handler reads the parameter through it, and
gateway/openapi.py lists it from it, so the document says what the check does (bounds,
pattern, choices, default) because it is the check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .errors import ApiError
from .inputs import MAX_INT, strict_int

__all__ = ["ChoiceParam", "IntParam", "Param", "PatternParam", "json_pattern"]


def json_pattern(pattern: str | re.Pattern[str]) -> str:
    """A Python ``fullmatch`` pattern as a JSON Schema (ECMA-262) ``pattern``: anchored
    (JSON Schema patterns search), with ``\\Z`` spelled as ECMA-262 spells it."""
    text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    return "^(?:" + text.replace(r"\Z", "$") + ")$"


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    description: str

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The parameter as an OpenAPI 3.1 Parameter Object (always optional, in the query)."""
        return {"name": self.name, "in": "query", "required": False,
                "description": self.description, "schema": self.schema()}


@dataclass(frozen=True, slots=True)
class IntParam(Param):
    default: int = 0
    minimum: int = 0
    maximum: int = MAX_INT

    def parse(self, request: web.Request) -> int:
        return strict_int(request.query.get(self.name), self.name, default=self.default,
                          minimum=self.minimum, maximum=self.maximum)

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum,
                "default": self.default}


@dataclass(frozen=True, slots=True)
class PatternParam(Param):
    pattern: re.Pattern[str] = re.compile(".*")
    rule: str = ""  # the pattern in words, for the error

    def parse(self, request: web.Request) -> str | None:
        """The value, None when absent or empty; 422 naming the parameter otherwise."""
        value = request.query.get(self.name)
        if not value:
            return None
        if not self.pattern.fullmatch(value):
            raise ApiError(422, "invalid_field", f"{self.name} must be {self.rule}", self.name)
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": json_pattern(self.pattern)}


@dataclass(frozen=True, slots=True)
class ChoiceParam(Param):
    choices: tuple[str, ...] = ()
    default: str = ""

    def parse(self, request: web.Request) -> str:
        value = request.query.get(self.name) or self.default
        if value not in self.choices:
            raise ApiError(422, "invalid_field",
                           f"{self.name} must be {' or '.join(self.choices)}", self.name)
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.choices), "default": self.default}
