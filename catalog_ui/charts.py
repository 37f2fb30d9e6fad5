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


def _frame(
    title: str,
    labels: Sequence[str],
    top: float,
    unit: str,
    x_label: str = "",
    y_label: str = "",
    width: int = WIDTH,
) -> list[str]:
    tall = HEIGHT + (38 if x_label else 24)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {tall}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{PAD}" y1="{HEIGHT}" x2="{width - 4}" y2="{HEIGHT}" stroke="#555"/>',
        f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{HEIGHT}" stroke="#555"/>',
        f'<text x="{PAD - 4}" y="14" text-anchor="end" font-size="11">'
        f"{escape(_num(top))}{escape(unit)}</text>",
        f'<text x="{PAD - 4}" y="{HEIGHT}" text-anchor="end" font-size="11">0</text>',
    ]
    step = max(1, len(labels) // 8, -(-len(labels) * 34 // (width - PAD - 16)))
    for i, label in enumerate(labels):
        if i % step == 0:
            x = _x(i, len(labels), width)
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT + 16}" text-anchor="middle" font-size="11">'
                f"{escape(label)}</text>"
            )
    mid = top / 2
    parts.append(
        f'<line x1="{PAD}" y1="{_y(mid, top):.1f}" x2="{width - 4}" y2="{_y(mid, top):.1f}" '
        'stroke="#ddd" stroke-dasharray="3 3"/>'
        f'<text x="{PAD - 4}" y="{_y(mid, top) + 4:.1f}" text-anchor="end" font-size="11">'
        f"{escape(_num(mid))}</text>"
    )
    if x_label:
        parts.append(
            f'<text x="{width - 4}" y="{HEIGHT + 34}" text-anchor="end" font-size="11" '
            f'fill="#444">{escape(x_label)}</text>'
        )
    if y_label:
        parts.append(
            f'<text x="{PAD + 4}" y="12" font-size="11" fill="#444">{escape(y_label)}</text>'
        )
    return parts


def _x(i: int, n: int, width: int = WIDTH) -> float:
    span = width - PAD - 16
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


def bars(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    unit: str = "",
    *,
    x_label: str = "",
    y_label: str = "",
    width: int = WIDTH,
) -> Markup:
    """Grouped bars, one group per label (``x_label``/``y_label``: the axes' names;
    ``width``: of the drawing, narrower for a small box so its text stays readable)."""
    top = _scale(series)
    parts = _frame(title, labels, top, unit, x_label, y_label, width)
    n, k = len(labels), max(len(series), 1)
    group = (width - PAD - 16) / max(n, 1) * 0.8
    for j, s in enumerate(series):
        for i, v in enumerate(s.values):
            if v is None:
                continue
            bar = group / k
            x = _x(i, n, width) - group / 2 + j * bar
            y = _y(v, top)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{HEIGHT - y:.1f}" fill="{COLOURS[j % len(COLOURS)]}">'
                f"<title>{escape(labels[i])} {escape(s.name)}: {escape(_num(v))}{escape(unit)}"
                "</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts)) + _legend(series)  # escaped above


def lines(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    unit: str = "",
    *,
    x_label: str = "",
    y_label: str = "",
    width: int = WIDTH,
) -> Markup:
    """One polyline per series (gaps where a value is missing), with a dot per point."""
    top = _scale(series)
    parts = _frame(title, labels, top, unit, x_label, y_label, width)
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
            x, y = _x(i, n, width), _y(v, top)
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


ROW, LABEL_W, H_WIDTH = 26, 128, 420


def _short(text: str, chars: int = 9) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def hbars(
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    unit: str = "",
    *,
    name: str = "",
    colour: int = 0,
    value_format: str = "{:.0f}",
    label_w: int = LABEL_W,
) -> Markup:
    """Horizontal bars, one row per label (long names fit: they are shortened to
    ``label_w`` pixels on the chart and given whole in each bar's title), the value
    written at the bar's end; ``name`` names the series in a legend."""
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    height = max(len(labels), 1) * ROW + 8
    span = H_WIDTH - label_w - 64
    chars = max(label_w // 14, 4)
    fill = COLOURS[colour % len(COLOURS)]
    parts = [
        f'<svg class="chart hbars" viewBox="0 0 {H_WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{label_w}" y1="2" x2="{label_w}" y2="{height - 4}" stroke="#555"/>',
    ]
    for i, (label, v) in enumerate(zip(labels, values, strict=False)):
        y = 4 + i * ROW
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end" font-size="13">'
            f"{escape(_short(label, chars))}</text>"
        )
        shown = "—" if v is None else value_format.format(v) + unit
        w = 0.0 if v is None else span * v / top
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{ROW - 8}" '
            f'fill="{fill}"><title>{escape(label)}: {escape(shown)}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" font-size="13">{escape(shown)}</text>'
        )
    parts.append("</svg>")
    out = Markup("".join(parts))  # escaped above
    if not name:
        return out
    return out + Markup(
        '<ul class="legend"><li><span class="swatch" style="background:{}"></span>{}</li></ul>'
    ).format(fill, name)
