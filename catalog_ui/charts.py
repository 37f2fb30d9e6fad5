"""Small charts as inline SVG, drawn on the server: no script, readable without colour
(each series is also named in a legend and every point has a title for tooltips and
screen readers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 640, 180, 36
COLOURS = ("#1f5fbf", "#b3401a", "#2f7d32", "#6a3fa0")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]


def _scale(series: Sequence[Series]) -> float:
    top = max((v for s in series for v in s.values if v is not None), default=0.0)
    return top if top > 0 else 1.0


def _frame(title: str, labels: Sequence[str], top: float, unit: str) -> list[str]:
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + 24}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{PAD}" y1="{HEIGHT}" x2="{WIDTH - 4}" y2="{HEIGHT}" stroke="#555"/>',
        f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{HEIGHT}" stroke="#555"/>',
        f'<text x="{PAD - 4}" y="14" text-anchor="end" font-size="11">'
        f"{escape(_num(top))}{escape(unit)}</text>",
        f'<text x="{PAD - 4}" y="{HEIGHT}" text-anchor="end" font-size="11">0</text>',
    ]
    step = max(1, len(labels) // 8)
    for i, label in enumerate(labels):
        if i % step == 0:
            x = _x(i, len(labels))
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT + 16}" text-anchor="middle" font-size="11">'
                f"{escape(label)}</text>"
            )
    return parts


def _x(i: int, n: int) -> float:
    span = WIDTH - PAD - 16
    return PAD + 8 + (span * (i + 0.5) / max(n, 1))


def _y(v: float, top: float) -> float:
    return HEIGHT - (HEIGHT - 16) * (v / top)


def _num(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.2f}"


def _legend(series: Sequence[Series]) -> Markup:
    items = "".join(
        f'<li><span class="swatch" style="background:{COLOURS[i % len(COLOURS)]}"></span>'
        f"{escape(s.name)}</li>"
        for i, s in enumerate(series)
    )
    return Markup(f'<ul class="legend">{items}</ul>')  # escaped above


def bars(title: str, labels: Sequence[str], series: Sequence[Series], unit: str = "") -> Markup:
    """Grouped bars, one group per label."""
    top = _scale(series)
    parts = _frame(title, labels, top, unit)
    n, k = len(labels), max(len(series), 1)
    group = (WIDTH - PAD - 16) / max(n, 1) * 0.8
    for j, s in enumerate(series):
        for i, v in enumerate(s.values):
            if v is None:
                continue
            width = group / k
            x = _x(i, n) - group / 2 + j * width
            y = _y(v, top)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width - 1, 1):.1f}" '
                f'height="{HEIGHT - y:.1f}" fill="{COLOURS[j % len(COLOURS)]}">'
                f"<title>{escape(labels[i])} {escape(s.name)}: {escape(_num(v))}{escape(unit)}"
                "</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts)) + _legend(series)  # escaped above


def lines(title: str, labels: Sequence[str], series: Sequence[Series], unit: str = "") -> Markup:
    """One polyline per series (gaps where a value is missing), with a dot per point."""
    top = _scale(series)
    parts = _frame(title, labels, top, unit)
    n = len(labels)
    for j, s in enumerate(series):
        colour = COLOURS[j % len(COLOURS)]
        run: list[str] = []
        for i, v in enumerate(s.values):
            if v is None:
                if len(run) > 1:
                    parts.append(_polyline(run, colour))
                run = []
                continue
            x, y = _x(i, n), _y(v, top)
            run.append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(labels[i])} {escape(s.name)}: {escape(_num(v))}{escape(unit)}"
                "</title></circle>"
            )
        if len(run) > 1:
            parts.append(_polyline(run, colour))
    parts.append("</svg>")
    return Markup("".join(parts)) + _legend(series)  # escaped above


def _polyline(points: list[str], colour: str) -> str:
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>'
