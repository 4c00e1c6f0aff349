"""Small static SVG charts for `stcstore report`: inline in the page, no JavaScript, no external files.

Hover titles (`<title>`) carry the exact values, so the page stays readable without a plotting library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..core.html import esc

_PAD_L, _PAD_R, _PAD_T, _PAD_B = 56, 12, 28, 44
_LEGEND_W = 190


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]          # (x, y), drawn in order
    colour: str
    width: float = 1.6
    dash: str | None = None                    # SVG stroke-dasharray, e.g. "5 4"
    marker: float = 2.6                         # marker radius; 0 for none
    titles: list[str] = field(default_factory=list)  # hover text per point (default: name, x, y)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


class _Frame:
    """Maps data to pixels inside a plot area, and draws its axes and grid."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float],
                 legend: bool) -> None:  # legend: leave room for one on the right
        self.w, self.h = width, height
        self.x0, self.x1 = _PAD_L, width - _PAD_R - (_LEGEND_W if legend else 0)
        self.y0, self.y1 = height - _PAD_B, _PAD_T
        lo, hi = x_range
        self.xlo, self.xhi = (lo - 0.5, hi + 0.5) if hi == lo else (lo, hi)
        lo, hi = y_range
        self.ylo, self.yhi = (lo - 0.5, hi + 0.5) if hi == lo else (lo, hi)

    def x(self, v: float) -> float:
        return self.x0 + (v - self.xlo) / (self.xhi - self.xlo) * (self.x1 - self.x0)

    def y(self, v: float) -> float:
        return self.y0 - (v - self.ylo) / (self.yhi - self.ylo) * (self.y0 - self.y1)

    def axes(self, x_ticks: list[float], y_ticks: list[float], x_label: str, y_label: str,
             x_names: dict[float, str] | None = None) -> list[str]:
        out = []
        for t in y_ticks:
            yy = self.y(t)
            out.append(f'<line x1="{self.x0}" y1="{yy:.1f}" x2="{self.x1}" y2="{yy:.1f}" class="grid"/>'
                       f'<text x="{self.x0 - 6}" y="{yy + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        for t in x_ticks:
            xx = self.x(t)
            name = (x_names or {}).get(t, _fmt(t))
            out.append(f'<line x1="{xx:.1f}" y1="{self.y0}" x2="{xx:.1f}" y2="{self.y0 + 4}" class="axis"/>'
                       f'<text x="{xx:.1f}" y="{self.y0 + 17}" text-anchor="middle">{esc(name)}</text>')
        out.append(f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x1}" y2="{self.y0}" class="axis"/>'
                   f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}" class="axis"/>')
        out.append(f'<text x="{(self.x0 + self.x1) / 2:.1f}" y="{self.h - 8}" text-anchor="middle">'
                   f'{esc(x_label)}</text>')
        out.append(f'<text transform="translate(14,{(self.y0 + self.y1) / 2:.1f}) rotate(-90)" '
                   f'text-anchor="middle">{esc(y_label)}</text>')
        return out


def _legend(frame: _Frame, entries: list[tuple[str, str, str | None]]) -> list[str]:
    out = []
    for i, (name, colour, dash) in enumerate(entries):
        y = _PAD_T + 6 + 17 * i
        d = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{frame.x1 + 14}" y1="{y}" x2="{frame.x1 + 36}" y2="{y}" stroke="{colour}" '
                   f'stroke-width="2.2"{d}/><text x="{frame.x1 + 42}" y="{y + 4}">{esc(name)}</text>')
    return out


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{esc(title)}" class="chart">'
            f'<text x="{_PAD_L}" y="16" class="title">{esc(title)}</text>{"".join(body)}</svg>')


def line_chart(series: list[Series], *, title: str, x_label: str, y_label: str, width: int = 720,
               height: int = 330, x_ticks: list[float] | None = None, x_names: dict[float, str] | None = None,
               y_range: tuple[float, float] | None = None, marks: list[tuple[float, str]] = (),
               rings: list[tuple[float, float, str]] = (), legend: bool = True) -> str:
    """Lines with point markers, a legend on the right (unless legend=False), optional vertical marks
    (x, label) and rings around chosen points (x, y, hover text)."""
    pts = [p for s in series for p in s.points if math.isfinite(p[1])]
    if not pts:
        return _svg(width, 60, title, ['<text x="56" y="40">no data</text>'])
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if y_range is None:
        pad = (max(ys) - min(ys)) * 0.08 or 0.01
        y_range = (min(ys) - pad, max(ys) + pad)
    frame = _Frame(width, height, (min(xs), max(xs)), y_range, legend=legend)
    y_ticks = [t for t in nice_ticks(*y_range) if y_range[0] <= t <= y_range[1]]
    if x_ticks is None:
        x_ticks = sorted(set(xs)) if len(set(xs)) <= 16 else nice_ticks(min(xs), max(xs), 8)
    body = frame.axes(x_ticks, y_ticks, x_label, y_label, x_names)
    for x, label in marks:
        xx = frame.x(x)
        right = xx > frame.x0 + 0.7 * (frame.x1 - frame.x0)  # label on the left of a mark near the legend
        anchor = "end" if right else "start"
        body.append(f'<line x1="{xx:.1f}" y1="{frame.y0}" x2="{xx:.1f}" y2="{frame.y1}" class="mark"/>'
                    f'<text x="{xx - 4 if right else xx + 4:.1f}" y="{frame.y1 + 10}" class="marklabel" '
                    f'text-anchor="{anchor}">{esc(label)}</text>')
    for s in series:
        live = [(x, y) for x, y in s.points if math.isfinite(y)]
        if not live:
            continue
        d = " ".join(f"{'M' if i == 0 else 'L'}{frame.x(x):.1f},{frame.y(y):.1f}" for i, (x, y) in enumerate(live))
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        body.append(f'<path d="{d}" fill="none" stroke="{s.colour}" stroke-width="{s.width}"{dash}>'
                    f'<title>{esc(s.name)}</title></path>')
        if s.marker:
            for i, (x, y) in enumerate(s.points):
                if not math.isfinite(y):
                    continue
                tip = s.titles[i] if i < len(s.titles) else f"{s.name}: {_fmt(x)} → {y:.4f}"
                body.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="{s.marker}" '
                            f'fill="{s.colour}"><title>{esc(tip)}</title></circle>')
    for x, y, tip in rings:
        body.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="7" fill="none" stroke="#222" '
                    f'stroke-width="1.6"><title>{esc(tip)}</title></circle>')
    if legend:
        body += _legend(frame, [(s.name, s.colour, s.dash) for s in series])
    return _svg(width, height, title, body)


def bar_chart(categories: list[str], bars: list[tuple[str, list[float], str]], *, title: str, x_label: str,
              y_label: str, width: int = 720, height: int = 300, titles: list[list[str]] | None = None) -> str:
    """Grouped vertical bars: one group per category, one bar per (name, values, colour)."""
    if not categories or not bars:
        return _svg(width, 60, title, ['<text x="56" y="40">no data</text>'])
    top = max([v for _, vals, _ in bars for v in vals] + [0.0]) or 1.0
    frame = _Frame(width, height, (-0.5, len(categories) - 0.5), (0.0, top * 1.08), legend=True)
    ticks = nice_ticks(0.0, top * 1.08)
    body = frame.axes(list(range(len(categories))), ticks, x_label, y_label,
                      {float(i): c for i, c in enumerate(categories)})
    slot = (frame.x(1) - frame.x(0)) * 0.8
    bw = slot / len(bars)
    for b, (name, vals, colour) in enumerate(bars):
        for i, v in enumerate(vals):
            x = frame.x(i) - slot / 2 + b * bw
            y = frame.y(v)
            tip = titles[b][i] if titles else f"{name}, {categories[i]}: {_fmt(v)}"
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" '
                        f'height="{max(frame.y0 - y, 0):.1f}" fill="{colour}"><title>{esc(tip)}</title></rect>')
    body += _legend(frame, [(n, c, None) for n, _, c in bars])
    return _svg(width, height, title, body)


CSS = """
svg.chart { font: 12px system-ui, sans-serif; display: block; margin: .6em 0 1.2em; max-width: 100%; height: auto; }
svg.chart .title { font-weight: 600; font-size: 13px; }
svg.chart .grid { stroke: #e5e5e5; } svg.chart .axis { stroke: #888; }
.multiples { display: flex; flex-wrap: wrap; gap: 0 8px; } .multiples svg.chart { margin: 0; }
svg.chart .mark { stroke: #444; stroke-dasharray: 2 3; } svg.chart .marklabel { fill: #444; font-size: 11px; }
"""


def scatter(series: list[Series], *, title: str, x_label: str, y_label: str, diagonal: bool = False,
            zero_line: bool = False, width: int = 360, height: int = 330) -> str:
    """Points only (each series its colour; hover titles as in `line_chart`), with the y = x diagonal
    (predicted vs true) or the y = 0 line (residuals) when asked."""
    pts = [p for s in series for p in s.points if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not pts:
        return _svg(width, 60, title, ['<text x="56" y="40">no data</text>'])
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if diagonal:  # the same range on both axes, so the diagonal is at 45°
        lo, hi = min(xs + ys), max(xs + ys)
        pad = (hi - lo) * 0.05 or 0.01
        x_range = y_range = (lo - pad, hi + pad)
    else:
        pad_x, pad_y = (max(xs) - min(xs)) * 0.05 or 0.01, (max(ys) - min(ys)) * 0.08 or 0.01
        x_range = (min(xs) - pad_x, max(xs) + pad_x)
        y_range = (min(min(ys), 0.0) - pad_y, max(max(ys), 0.0) + pad_y) if zero_line else \
            (min(ys) - pad_y, max(ys) + pad_y)
    frame = _Frame(width, height, x_range, y_range, legend=False)
    body = frame.axes([t for t in nice_ticks(*x_range) if x_range[0] <= t <= x_range[1]],
                      [t for t in nice_ticks(*y_range) if y_range[0] <= t <= y_range[1]], x_label, y_label)
    if diagonal:
        a, b = x_range
        body.append(f'<line x1="{frame.x(a):.1f}" y1="{frame.y(a):.1f}" x2="{frame.x(b):.1f}" y2="{frame.y(b):.1f}" '
                    f'class="mark"/>')
    if zero_line:
        body.append(f'<line x1="{frame.x0}" y1="{frame.y(0):.1f}" x2="{frame.x1}" y2="{frame.y(0):.1f}" class="mark"/>')
    for s in series:
        for i, (x, y) in enumerate(s.points):
            if math.isfinite(x) and math.isfinite(y):
                tip = s.titles[i] if i < len(s.titles) else f"{s.name}: {x:.4f}, {y:.4f}"
                body.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="{s.marker}" fill="{s.colour}" '
                            f'fill-opacity="0.6"><title>{esc(tip)}</title></circle>')
    return _svg(width, height, title, body)
