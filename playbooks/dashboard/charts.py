"""Charts as inline SVG, rendered on the server: no JavaScript library, nothing fetched from the internet.

Every data point is an element with a ``<title>`` (hover shows its value) and ``data-*`` attributes, so a
browser test (or a curious operator) can read the plotted values back. Missing values (``None``) break a line
instead of being drawn as zero: a release's line starts where it was promoted and stops where it was replaced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 640, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 52, 16, 14, 44
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


@dataclass
class Series:
    name: str
    values: Sequence[float | None]
    color: str = ""
    dashed: bool = False


@dataclass
class Marker:
    """A vertical line at ``index`` (e.g. a promotion or a rollback)."""

    index: int
    label: str
    color: str = "#6b7280"


@dataclass
class Chart:
    """A chart's frame: x labels (days) and the y range, with coordinate helpers."""

    labels: Sequence[str]
    y_max: float
    y_format: Callable[[float], str] = lambda v: f"{v:g}"
    parts: list[str] = field(default_factory=list)

    @property
    def plot_w(self) -> float:
        return WIDTH - PAD_LEFT - PAD_RIGHT

    @property
    def plot_h(self) -> float:
        return HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(self, i: float) -> float:
        n = max(1, len(self.labels))
        return PAD_LEFT + self.plot_w * (i + 0.5) / n

    def y(self, v: float) -> float:
        return PAD_TOP + self.plot_h * (1 - min(max(v, 0.0), self.y_max) / self.y_max)

    def axes(self) -> None:
        for k in range(5):
            v = self.y_max * k / 4
            y = self.y(v)
            self.parts.append(f'<line class="grid" x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH - PAD_RIGHT}" y2="{y:.1f}"/>'
                              f'<text class="tick" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                              f'{escape(self.y_format(v))}</text>')
        n = len(self.labels)
        step = max(1, -(-n // 8))  # at most ~8 x labels
        for i in range(0, n, step):
            self.parts.append(f'<text class="tick" x="{self.x(i):.1f}" y="{HEIGHT - PAD_BOTTOM + 16}" '
                              f'text-anchor="middle">{escape(self.labels[i][5:])}</text>')

    def markers(self, markers: Sequence[Marker]) -> None:
        for m in markers:
            x = self.x(m.index)
            self.parts.append(f'<g class="marker"><line x1="{x:.1f}" y1="{PAD_TOP}" x2="{x:.1f}" '
                              f'y2="{HEIGHT - PAD_BOTTOM}" stroke="{m.color}" stroke-dasharray="3 3"/>'
                              f'<title>{escape(m.label)}</title></g>')

    def hline(self, value: float, label: str) -> None:
        y = self.y(value)
        self.parts.append(f'<g class="limit"><line x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH - PAD_RIGHT}" '
                          f'y2="{y:.1f}" stroke="#dc2626" stroke-dasharray="6 4"/><text class="tick" '
                          f'x="{WIDTH - PAD_RIGHT}" y="{y - 4:.1f}" text-anchor="end" fill="#dc2626">'
                          f'{escape(label)}</text></g>')

    def svg(self, chart_id: str, title: str, legend: Sequence[Series]) -> str:
        items = []
        for k, s in enumerate(legend):
            lx = PAD_LEFT + k * 130
            items.append(f'<rect x="{lx}" y="{HEIGHT - 16}" width="10" height="10" fill="{s.color}"/>'
                         f'<text class="legend" x="{lx + 14}" y="{HEIGHT - 7}">{escape(s.name[:18])}</text>')
        return (f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
                f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}"><title>{escape(title)}</title>'
                + "".join(self.parts) + "".join(items) + "</svg>")


def _colored(series: Sequence[Series]) -> list[Series]:
    return [Series(s.name, s.values, s.color or PALETTE[k % len(PALETTE)], s.dashed) for k, s in enumerate(series)]


def nice_max(values: Sequence[float | None]) -> float:
    """A round upper bound for the y axis (1, 2, 2.5 or 5 × a power of ten)."""
    top = max([v for v in values if v is not None] + [0.0])
    if top <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(top))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if step * magnitude >= top * (1 - 1e-9))


def line_chart(chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series], *,
               y_max: float | None = None, y_format: Callable[[float], str] = lambda v: f"{v:g}",
               markers: Sequence[Marker] = (), hline: tuple[float, str] | None = None) -> str:
    series = _colored(series)
    values = [v for s in series for v in s.values]
    chart = Chart(labels, y_max or nice_max(values + ([hline[0]] if hline else [])), y_format)
    chart.axes()
    chart.markers(markers)
    if hline:
        chart.hline(*hline)
    for s in series:
        path, pen_down = [], False
        for i, v in enumerate(s.values):
            if v is None:
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{chart.x(i):.1f},{chart.y(v):.1f}")
            pen_down = True
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        chart.parts.append(f'<path class="line" data-series="{escape(s.name)}" d="{" ".join(path)}" fill="none" '
                           f'stroke="{s.color}" stroke-width="2"{dash}/>')
        for i, v in enumerate(s.values):
            if v is not None:
                chart.parts.append(
                    f'<circle class="pt" data-series="{escape(s.name)}" data-x="{escape(labels[i])}" data-y="{v:g}" '
                    f'cx="{chart.x(i):.1f}" cy="{chart.y(v):.1f}" r="3" fill="{s.color}">'
                    f'<title>{escape(s.name)} {escape(labels[i])}: {escape(y_format(v))}</title></circle>')
    return chart.svg(chart_id, title, series)


def bar_chart(chart_id: str, title: str, labels: Sequence[str], stacks: Sequence[Series], *,
              y_format: Callable[[float], str] = lambda v: f"{v:g}", hline: tuple[float, str] | None = None,
              markers: Sequence[Marker] = ()) -> str:
    """Stacked bars, one stack per label; ``hline`` draws a limit (e.g. the daily budget)."""
    stacks = _colored(stacks)
    totals = [sum(s.values[i] or 0.0 for s in stacks) for i in range(len(labels))]
    chart = Chart(labels, nice_max(totals + ([hline[0]] if hline else [])), y_format)
    chart.axes()
    chart.markers(markers)
    bar_w = max(2.0, chart.plot_w / max(1, len(labels)) * 0.7)
    for i in range(len(labels)):
        base = 0.0
        for s in stacks:
            v = s.values[i] or 0.0
            if v <= 0:
                continue
            top, bottom = chart.y(base + v), chart.y(base)
            chart.parts.append(
                f'<rect class="bar" data-series="{escape(s.name)}" data-x="{escape(labels[i])}" data-y="{v:g}" '
                f'x="{chart.x(i) - bar_w / 2:.1f}" y="{top:.1f}" width="{bar_w:.1f}" height="{max(0.5, bottom - top):.1f}" '
                f'fill="{s.color}"><title>{escape(s.name)} {escape(labels[i])}: {escape(y_format(v))}</title></rect>')
            base += v
    if hline:
        chart.hline(*hline)
    return chart.svg(chart_id, title, stacks)


def histogram_chart(chart_id: str, title: str, edges: Sequence[float], series: Sequence[Series]) -> str:
    """Side-by-side bars per bin (shares of each series), e.g. this week's scores against last week's."""
    series = _colored(series)
    labels = [f"{edges[i]:.2f}-{edges[i + 1]:.2f}" for i in range(len(edges) - 1)]
    chart = Chart(labels, nice_max([v for s in series for v in s.values]), lambda v: f"{100 * v:.0f}%")
    chart.axes()
    chart.parts = [p for p in chart.parts if 'text-anchor="middle"' not in p]  # replace the day labels
    for i in range(0, len(labels), max(1, len(labels) // 5)):
        chart.parts.append(f'<text class="tick" x="{chart.x(i) - chart.plot_w / len(labels) / 2:.1f}" '
                           f'y="{HEIGHT - PAD_BOTTOM + 16}" text-anchor="middle">{edges[i]:.1f}</text>')
    slot = chart.plot_w / max(1, len(labels))
    bar_w = slot * 0.8 / max(1, len(series))
    for k, s in enumerate(series):
        for i, v in enumerate(s.values):
            if not v:
                continue
            x = chart.x(i) - slot * 0.4 + k * bar_w
            chart.parts.append(
                f'<rect class="bar" data-series="{escape(s.name)}" data-x="{escape(labels[i])}" data-y="{v:g}" '
                f'x="{x:.1f}" y="{chart.y(v):.1f}" width="{bar_w:.1f}" height="{max(0.5, chart.y(0) - chart.y(v)):.1f}" '
                f'fill="{s.color}" fill-opacity="0.8"><title>{escape(s.name)} {escape(labels[i])}: '
                f'{100 * v:.1f}%</title></rect>')
    return chart.svg(chart_id, title, series)
