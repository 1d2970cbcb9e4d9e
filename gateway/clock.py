"""Which day a moment counts on, in the merchant-facing time zone, cheaply."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .settings import ConfigError

__all__ = ["DayClock"]


class DayClock:
    """``now()`` gives (timestamp, day); the day string is recomputed only at midnight.

    ``clock`` is where the time comes from: ``time.time``, or a test's own hand.
    """

    def __init__(self, timezone: str, clock: Callable[[], float] = time.time) -> None:
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"stats.timezone: unknown time zone {timezone!r}") from None
        #: The zone's IANA name, which every stats answer names.
        self.timezone = timezone
        self._clock = clock
        self._day = ""
        self._since = self._until = 0.0

    def now(self) -> tuple[float, str]:
        ts = self._clock()
        if not self._since <= ts < self._until:  # a new day (or a clock set back)
            local = datetime.fromtimestamp(ts, self.zone)
            self._day = local.date().isoformat()
            start = datetime.combine(local.date(), datetime.min.time(), self.zone)
            self._since = start.timestamp()
            self._until = datetime.combine(local.date() + timedelta(days=1),
                                           datetime.min.time(), self.zone).timestamp()
        return ts, self._day

    def day_of(self, ts: float) -> str:
        """The day a past or present moment counts on."""
        return datetime.fromtimestamp(ts, self.zone).date().isoformat()

    def today(self) -> date:
        return date.fromisoformat(self.now()[1])
