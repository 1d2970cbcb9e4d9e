"""Which day a click counts on: ``DayClock`` with the time in the test's hand.

Merchants read their figures per day in ``stats.timezone`` (Asia/Shanghai by default), so
a click at 23:59:59 in Shanghai is yesterday's and one a second later is today's, although
both are 15:59:59 / 16:00:00 on the same UTC day. The clock caches the day string until
the next local midnight; these tests walk it across midnights, DST days and a time zone
whose midnight does not exist.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.appkeys import CLOCK, RECORDER
from gateway.clock import DayClock
from gateway.settings import ConfigError

from .conftest import TAOBAO_UA, ClientFactory, add_tenant, create_product, make_settings
from .hand import Hand


def _walk(zone: str, start: str, *moments: str) -> list[str]:
    """The day one clock reports at each UTC moment in turn (its cache carried along)."""
    hand = Hand(start)
    clock = DayClock(zone, clock=hand)
    days = [clock.now()[1]]
    for at in moments:
        hand.set(at)
        ts, day = clock.now()
        assert ts == hand.ts  # the moment itself is passed through untouched
        days.append(day)
    return days


def test_the_shanghai_day_turns_at_1600_utc() -> None:
    assert _walk("Asia/Shanghai", "2026-11-01T00:00:00", "2026-11-01T15:59:59",
                 "2026-11-01T16:00:00", "2026-11-02T15:59:59.999", "2026-11-02T16:00:00") == [
        "2026-11-01", "2026-11-01", "2026-11-02", "2026-11-02", "2026-11-03"]


def test_a_clock_set_back_across_midnight_counts_on_the_earlier_day_again() -> None:
    # The system clock steps back (an NTP correction) just after Shanghai's midnight: a
    # moment of the 1st again is the 1st's, not the 2nd cached a moment ago.
    assert _walk("Asia/Shanghai", "2026-11-01T16:00:01", "2026-11-01T15:59:58",
                 "2026-11-01T16:00:00") == ["2026-11-02", "2026-11-01", "2026-11-02"]


@pytest.mark.parametrize(("at", "day"), [("2026-11-01T15:59:59", "2026-11-01"),
                                         ("2026-11-01T16:00:00", "2026-11-02"),
                                         ("2026-12-31T16:00:00", "2027-01-01")])
def test_a_fresh_clock_and_day_of_agree_on_each_side_of_midnight(at: str, day: str) -> None:
    hand = Hand(at)
    clock = DayClock("Asia/Shanghai", clock=hand)
    assert clock.now() == (hand.ts, day)
    assert clock.day_of(hand.ts) == day
    assert clock.today() == date.fromisoformat(day)


def test_another_stats_timezone_turns_at_its_own_midnight() -> None:
    # UTC turns at 00:00 UTC; Los Angeles (UTC-8 in winter) at 08:00 UTC.
    assert _walk("UTC", "2026-11-30T12:00:00", "2026-11-30T23:59:59",
                 "2026-12-01T00:00:00") == ["2026-11-30", "2026-11-30", "2026-12-01"]
    assert _walk("America/Los_Angeles", "2026-12-01T07:59:59", "2026-12-01T08:00:00") == [
        "2026-11-30", "2026-12-01"]
    # The same moment is a different day in Shanghai.
    assert DayClock("Asia/Shanghai", clock=Hand("2026-12-01T07:59:59")).now()[1] == "2026-12-01"


def test_a_23_hour_day_ends_an_hour_early() -> None:
    # New York springs forward on 2026-03-08: that day has 23 hours and the next one
    # starts at 04:00 UTC, not at 05:00 as the day before did. A clock that cached the
    # day for 24 hours would put an hour of the 9th's clicks on the 8th.
    assert _walk("America/New_York", "2026-03-08T05:00:00", "2026-03-09T03:59:59",
                 "2026-03-09T04:00:00") == ["2026-03-08", "2026-03-08", "2026-03-09"]


def test_a_25_hour_day_ends_an_hour_late() -> None:
    # New York falls back on 2026-11-01: the next day starts at 05:00 UTC.
    assert _walk("America/New_York", "2026-11-01T04:00:00", "2026-11-02T04:00:00",
                 "2026-11-02T04:59:59", "2026-11-02T05:00:00") == [
        "2026-11-01", "2026-11-01", "2026-11-01", "2026-11-02"]


def test_a_midnight_that_does_not_exist() -> None:
    # Chile springs forward at 24:00: on 2026-09-06 the clocks go from 23:59:59 (-04) on
    # the 5th straight to 01:00 (-03). The 6th starts at that moment, 04:00 UTC.
    assert _walk("America/Santiago", "2026-09-05T12:00:00", "2026-09-06T03:59:59",
                 "2026-09-06T04:00:00") == ["2026-09-05", "2026-09-05", "2026-09-06"]
    # ... and falls back at 24:00 on 2026-04-04 (-03) to 23:00 (-04) of the 4th: the 4th
    # lasts 25 hours and the 5th starts at 04:00 UTC.
    assert _walk("America/Santiago", "2026-04-04T03:00:00", "2026-04-05T03:30:00",
                 "2026-04-05T04:00:00") == ["2026-04-04", "2026-04-04", "2026-04-05"]


@pytest.mark.parametrize("zone", ["Asia/Shanghia", "", "../../etc/passwd"])
def test_an_unknown_zone_is_a_configuration_error(zone: str) -> None:
    with pytest.raises(ConfigError, match=r"stats\.timezone"):
        DayClock(zone)


async def test_clicks_either_side_of_shanghai_midnight_count_on_their_own_days(
    aiohttp_client: ClientFactory, tmp_path: Path,
) -> None:
    # The whole way: the share link stamps each click with the clock's day, and the stats
    # API reports it under that day.
    app = create_app(make_settings(tmp_path))
    hand = Hand("2026-11-01T15:59:59")
    app[CLOCK] = DayClock("Asia/Shanghai", clock=hand)
    client = await aiohttp_client(app)
    tenant = await add_tenant(client, "acme")
    product = await create_product(client, tenant)

    async def tap() -> None:
        resp = await client.get(f"/p/{product['code']}", headers={"User-Agent": TAOBAO_UA},
                                allow_redirects=False)
        assert resp.status == 302

    await tap()
    hand.set("2026-11-01T16:00:00")
    await tap()
    await tap()
    await app[RECORDER].flush()
    resp = await client.get("/api/stats?by=day&from=2026-10-31&to=2026-11-03",
                            headers=tenant.auth)
    body: dict[str, Any] = await resp.json()
    assert [(r["day"], r["clicks"]) for r in body["rows"]] == [("2026-11-01", 1),
                                                               ("2026-11-02", 2)]
    # With no range given, the last 30 days end "today" by the clock: the 2nd in Shanghai.
    body = await (await client.get("/api/stats?by=day", headers=tenant.auth)).json()
    assert (body["from"], body["to"]) == ("2026-10-04", "2026-11-02")
