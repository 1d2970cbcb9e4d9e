"""The one error a merchant's input raises in the adapters: a stable code and the bad field."""

from __future__ import annotations

__all__ = ["TargetError"]


class TargetError(ValueError):
    """A merchant's target (or any URL they give) is unusable.

    ``code`` is stable (``invalid_url``, ``host_not_allowed``, ``invalid_field``...);
    ``field`` names the bad field, as the caller named it.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
