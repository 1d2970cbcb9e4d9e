"""SQL both engines share, parametrised by each driver's placeholder style."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import METRICS, GroupBy, StatsRow

__all__ = ["stats_query", "stats_row"]


def stats_query(
    merchant_id: str, *, from_day: str, to_day: str, by: GroupBy,
    product_id: int | None, platform: str | None, mark: str, channel: str | None = None,
) -> tuple[str, list[Any]]:
    """The one rollup query both engines run; ``mark`` yields each placeholder in turn.

    ``mark`` is a format string given ``n``, the 1-based parameter number: ``"?"`` for
    SQLite, ``"${n}"`` for PostgreSQL.
    """
    marks = iter(mark.format(n=i) for i in range(1, 10))
    params: list[Any] = [merchant_id, from_day, to_day]
    where = f"r.merchant_id = {next(marks)} AND r.day >= {next(marks)} AND r.day <= {next(marks)}"
    if product_id is not None:
        where += f" AND r.product_id = {next(marks)}"
        params.append(product_id)
    if platform is not None:
        where += f" AND r.platform = {next(marks)}"
        params.append(platform)
    if channel is not None:
        where += f" AND r.channel = {next(marks)}"
        params.append(channel)
    sums = ", ".join(f"SUM(r.{m})" for m in METRICS)
    if by == "product":
        # Sum per product id first, then join the few resulting rows to their titles: grouping
        # by text columns over a year of rollup rows is what made this query slow. Joined on
        # the merchant too, so a product id can never reach across tenants. A LEFT join: adds
        # whose product could not be traced roll up under product 0 and must still count.
        merchant_param = next(marks)  # its own placeholder: SQLite's ? are positional
        params.append(merchant_id)
        inner = ", ".join(f"SUM(r.{m}) AS {m}" for m in METRICS)
        outer = ", ".join(f"s.{m}" for m in METRICS)
        query = (f"SELECT s.product_id, p.code, p.title, {outer} FROM "
                 f"(SELECT r.product_id, {inner} FROM rollups r WHERE {where} "
                 "GROUP BY r.product_id) s "
                 "LEFT JOIN products p ON p.id = s.product_id AND p.merchant_id = "
                 f"{merchant_param} ORDER BY s.product_id")
    else:
        query = (f"SELECT r.{by}, {sums} FROM rollups r WHERE {where} "
                 f"GROUP BY r.{by} ORDER BY r.{by}")
    return query, params


def stats_row(by: GroupBy, row: Sequence[Any]) -> StatsRow:
    if by == "product":
        # Product 0 holds what could not be traced to a product: say so, don't show an id.
        key: dict[str, Any] = {"product_id": row[0] or None, "code": row[1], "title": row[2]}
        counts = row[3:]
    else:
        key = {by: row[0]}
        counts = row[1:]
    return StatsRow.of(key, counts)
