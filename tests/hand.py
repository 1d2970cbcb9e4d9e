"""A clock in the test's hand, for code that takes a ``clock`` (DayClock, TokenService)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["Hand"]


class Hand:
    """``Hand(at)()`` is the timestamp of ``at`` (a UTC ISO moment, or a timestamp).

    ``step``: seconds each read moves the clock on, so that every click made through it
    has a moment of its own and "first" is never a tie.
    """

    def __init__(self, at: str | float, *, step: float = 0.0) -> None:
        self.ts = 0.0
        self.step = step
        self.set(at)

    def set(self, at: str | float) -> None:
        self.ts = (at if isinstance(at, float)
                   else datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp())

    def __call__(self) -> float:
        self.ts += self.step
        return self.ts
