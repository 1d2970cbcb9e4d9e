"""Charts as inline SVG, drawn on the server: no script, no library, nothing fetched.

Each chart is a picture of numbers the page also prints in a table: it carries a ``<title>``
and an ``aria-label`` saying what it shows, and every bar is labelled with its value, so
the figures are readable without the picture (and by a screen reader). Text in the SVG is
escaped; the result is ``Markup`` for the autoescaping templates.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["SERIES_COLOURS", "bar_chart", "day_bars", "funnel", "number", "sparkline"]

#: Colours of the metrics drawn, the same in every chart and legend.
SERIES_COLOURS = {
    "clicks": "#3370ff",
    "unique_visitors": "#14c9c9",
    "storefront_opens": "#7bc616",
    "entries": "#ff9a2e",
    "adds": "#f5319d",
}

_WIDTH = 400  # viewBox width: about one CSS pixel per unit on a phone
_FONT = 'font-family="-apple-system,PingFang SC,Microsoft YaHei,sans-serif"'


def number(value: int) -> str:
    """An integer as people read it: 12,345."""
    return f"{value:,}"


def _svg(width: int, height: int, label: str, body: list[str]) -> Markup:
    text = escape(label)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{text}" preserveAspectRatio="xMinYMin meet" {_FONT}>'
        f"<title>{text}</title>{''.join(body)}</svg>")


def bar_chart(rows: Sequence[tuple[str, Sequence[int]]], series: Sequence[tuple[str, str]], *,
              label: str) -> Markup:
    """Horizontal bars, one group per row and one bar per series ((key, name) pairs).

    ``rows``: (row label, values in ``series`` order).
    """
    label_w, value_w, bar_h, gap, group_gap, legend_h = 76, 56, 12, 2, 12, 22
    plot_w = _WIDTH - label_w - value_w
    peak = max((v for _, values in rows for v in values), default=0) or 1
    body: list[str] = []
    x = 0
    for key, name in series:  # the legend
        colour = SERIES_COLOURS.get(key, "#888")
        body.append(f'<rect x="{x}" y="4" width="10" height="10" rx="2" fill="{colour}"/>'
                    f'<text x="{x + 14}" y="13" font-size="11" fill="#4e5969">'
                    f"{escape(name)}</text>")
        x += 14 + 12 * len(name) + 16
    y = legend_h
    group_h = len(series) * (bar_h + gap)
    for row_label, values in rows:
        body.append(f'<text x="{label_w - 6}" y="{y + group_h / 2 + 4:.1f}" font-size="12" '
                    f'text-anchor="end" fill="#1d2129">{escape(row_label)}</text>')
        for (key, name), value in zip(series, values, strict=True):
            width = max(value / peak * plot_w, 1.5 if value else 0)
            colour = SERIES_COLOURS.get(key, "#888")
            body.append(
                f'<rect x="{label_w}" y="{y}" width="{width:.1f}" height="{bar_h}" rx="2" '
                f'fill="{colour}"><title>{escape(row_label)} {escape(name)}：'
                f"{number(value)}</title></rect>"
                f'<text x="{label_w + width + 4:.1f}" y="{y + bar_h - 2}" font-size="10" '
                f'fill="#4e5969">{number(value)}</text>')
            y += bar_h + gap
        y += group_gap
    return _svg(_WIDTH, max(y, legend_h + 10), label, body)


def funnel(steps: Sequence[tuple[str, int]], *, label: str) -> Markup:
    """The funnel as bars shrinking step by step, each with its count and share of the first."""
    label_w, row_h, bar_h = 96, 34, 22
    plot_w = _WIDTH - label_w - 8
    first = steps[0][1] if steps else 0
    peak = max((v for _, v in steps), default=0) or 1
    body: list[str] = []
    for index, (name, value) in enumerate(steps):
        y = index * row_h + 4
        width = max(value / peak * plot_w, 1.5 if value else 0)
        share = "" if index == 0 or not first else f"（{value / first:.1%}）"
        body.append(
            f'<text x="{label_w - 8}" y="{y + bar_h / 2 + 4:.1f}" font-size="12" '
            f'text-anchor="end" fill="#1d2129">{escape(name)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{width:.1f}" height="{bar_h}" rx="3" '
            f'fill="#3370ff" fill-opacity="{1 - index * 0.18:.2f}"/>'
            f'<text x="{label_w + 6}" y="{y + bar_h / 2 + 4:.1f}" font-size="12" '
            f'fill="{"#fff" if width > 110 else "#1d2129"}" font-weight="600">'
            f"{number(value)}{escape(share)}</text>")
    return _svg(_WIDTH, len(steps) * row_h + 4, label, body)


def sparkline(values: Sequence[int], *, label: str, width: int = 120,
              height: int = 28) -> Markup:
    """A small line of a daily series, its last point marked."""
    if not values:
        return _svg(width, height, label, [])
    peak = max(values) or 1
    step = (width - 4) / max(len(values) - 1, 1)

    def point(i: int, v: int) -> tuple[float, float]:
        return 2 + i * step, height - 3 - v / peak * (height - 6)

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, v) for i, v in
                                                       enumerate(values)))
    last_x, last_y = point(len(values) - 1, values[-1])
    body = [f'<polyline points="{points}" fill="none" stroke="#3370ff" stroke-width="1.6" '
            'stroke-linejoin="round"/>',
            f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="2.2" fill="#3370ff"/>']
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f"{''.join(body)}</svg>")


def day_bars(days: Sequence[tuple[str, int]], *, label: str) -> Markup:
    """Vertical bars, one a day, with the first and last day and the peak written out."""
    width, height, axis_h, top = 480, 150, 18, 16
    plot_h = height - axis_h - top
    peak = max((v for _, v in days), default=0) or 1
    slot = (width - 8) / max(len(days), 1)
    bar_w = max(slot * 0.7, 1.0)
    body: list[str] = []
    for index, (day, value) in enumerate(days):
        bar_h = value / peak * plot_h
        x = 4 + index * slot + (slot - bar_w) / 2
        body.append(f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{bar_w:.1f}" '
                    f'height="{bar_h:.1f}" fill="#3370ff"><title>{escape(day)}：'
                    f"{number(value)}</title></rect>")
    if days:
        body.append(f'<line x1="4" y1="{top + plot_h}" x2="{width - 4}" y2="{top + plot_h}" '
                    'stroke="#c9cdd4"/>'
                    f'<text x="4" y="{height - 3}" font-size="12" fill="#86909c">'
                    f"{escape(days[0][0])}</text>"
                    f'<text x="{width - 4}" y="{height - 3}" font-size="12" fill="#86909c" '
                    f'text-anchor="end">{escape(days[-1][0])}</text>'
                    f'<text x="4" y="12" font-size="12" fill="#86909c">最高 {number(peak)}'
                    "</text>")
    return _svg(width, height, label, body)
