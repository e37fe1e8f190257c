"""Charts drawn on the server as inline SVG: no script, no outside service, colours from the page's theme."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 12, 28


@dataclass
class Series:
    label: str
    values: list[float]
    # The colour class (c1..c5, c-sent, c-failed, c-bounced) that the line or bar and its legend entry use.
    css: str = "c1"


@dataclass
class Chart:
    """A chart and the table it is drawn from: the table is the accessible version of the picture."""

    title: str
    description: str
    labels: list[str]
    series: list[Series] = field(default_factory=list)
    kind: str = "line"  # "line" or "bars" (stacked)
    unit: str = ""

    @property
    def ident(self) -> str:
        return "chart-" + re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")

    @property
    def empty(self) -> bool:
        return not self.labels or all(not any(s.values) for s in self.series)

    def rows(self) -> list[tuple[str, list[float]]]:
        return [(label, [s.values[i] for s in self.series]) for i, label in enumerate(self.labels)]

    def svg(self) -> Markup:
        return _bars(self) if self.kind == "bars" else _lines(self)


def nice_max(value: float, whole: bool = True) -> float:
    """A top for the axis whose four gridlines land on round numbers (whole ones for counts)."""
    if value <= 0:
        return 4.0 if whole else 1.0
    quarter = value / 4
    power = 10 ** math.floor(math.log10(quarter))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        size = step * power
        if size >= quarter and (not whole or size == int(size)):
            return 4 * size
    return 4 * 10 * power


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _frame(chart: Chart, top: float) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = []
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid-line" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(top * i / 4)}</text>')
    n = len(chart.labels)
    every = max(1, math.ceil(n / 6))
    for i, label in enumerate(chart.labels):
        if i % every and i != n - 1:
            continue
        x = _x(i, n, chart.kind)
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{escape(label)}</text>')
    return parts


def _x(i: int, n: int, kind: str) -> float:
    plot_w = WIDTH - LEFT - RIGHT
    if kind == "bars":
        return LEFT + plot_w * (i + 0.5) / max(n, 1)
    return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)


def _open(chart: Chart) -> str:
    ident = chart.ident
    return (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{ident}-t {ident}-d" '
            f'xmlns="http://www.w3.org/2000/svg"><title id="{ident}-t">{escape(chart.title)}</title>'
            f'<desc id="{ident}-d">{escape(chart.description)}</desc>')


def _lines(chart: Chart) -> Markup:
    values = [v for s in chart.series for v in s.values]
    top = nice_max(max(values, default=0), whole=all(float(v).is_integer() for v in values))
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [_open(chart), *_frame(chart, top)]
    n = len(chart.labels)
    for series in chart.series:
        points = " ".join(
            f"{_x(i, n, 'line'):.1f},{TOP + plot_h - plot_h * v / top:.1f}" for i, v in enumerate(series.values)
        )
        parts.append(f'<polyline class="series {series.css}" points="{points}"><title>{escape(series.label)}'
                     f'</title></polyline>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()


def _bars(chart: Chart) -> Markup:
    totals = [sum(s.values[i] for s in chart.series) for i in range(len(chart.labels))]
    top = nice_max(max(totals, default=0), whole=all(float(v).is_integer() for v in totals))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = len(chart.labels)
    bar_w = min(48.0, plot_w / max(n, 1) * 0.6)
    parts = [_open(chart), *_frame(chart, top)]
    for i, label in enumerate(chart.labels):
        base = TOP + plot_h
        x = _x(i, n, "bars") - bar_w / 2
        for series in chart.series:
            value = series.values[i]
            if not value:
                continue
            h = plot_h * value / top
            base -= h
            parts.append(f'<rect class="bar {series.css}" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}"><title>{escape(label)}: {escape(series.label)} {value:g}</title></rect>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()
