"""Server-side SVG plots for the QA page: scatter, lines and histograms with axes, ticks,
labels and a legend.

Hand-written SVG, so the service needs no plotting library at run time and the page no
JavaScript: a :class:`Figure` of :class:`Series` in, one ``<svg>`` element out. Data marks
carry the class ``mark`` (points are ``<circle>``, curves ``<path>``, histogram bars
``<rect>``); reference curves (published demarcations) carry ``reference`` instead, so a
reader (or a test) can tell data from decoration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from html import escape

__all__ = ["PALETTE", "Figure", "Series", "nice_ticks", "render_svg"]

#: Okabe & Ito (2008) colours, distinguishable with the common colour-vision deficiencies
#: (their yellow left out: too faint on white)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

_FONT = "font-family:system-ui,sans-serif"


@dataclass(frozen=True)
class Series:
    """One legend entry. ``style``: ``points`` (scatter), ``line`` (a curve, broken where a
    value is None or not finite), ``bars`` (histogram: ``x`` the left bin edges, ``y`` the
    counts, ``width`` the bin width)."""

    label: str
    x: Sequence[float | None]
    y: Sequence[float | None]
    style: str = "points"
    color: str | None = None
    dashed: bool = False
    width: float = 0.0
    #: a reference curve, not data (drawn thinner, class ``reference``)
    reference: bool = False
    #: per point, what hovering over it says (e.g. the spectrum id); else its coordinates
    tips: Sequence[str] | None = None


@dataclass(frozen=True)
class Figure:
    title: str
    xlabel: str
    ylabel: str
    series: Sequence[Series]
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None
    width: int = 520
    height: int = 360
    #: a short line under the title (counts, what was left out)
    note: str = ""
    legend: bool = True
    #: whole-number ticks on the y axis (counts)
    integer_y: bool = False
    #: identifies the figure on the page (the clip path's id); letters, digits, '-'
    ident: str = "plot"
    extra_classes: tuple[str, ...] = field(default_factory=tuple)


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def nice_ticks(lo: float, hi: float, target: int = 6, integer: bool = False) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) inside [lo, hi]; ``integer``:
    whole numbers only (counts)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(target - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * 0.999)
    if integer:
        step = max(1.0, step if step == int(step) else math.ceil(step))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + len(ticks) * step
    return ticks


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(value) or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step else 0
    frac = step * 10**decimals % 1
    if min(frac, 1 - frac) > 1e-6:  # 2.5 x 10^k needs one more decimal
        decimals += 1
    return f"{value:.{decimals}f}".replace("-", "\u2212")


def _data_range(series: Sequence[Series], axis: str) -> tuple[float, float] | None:
    values: list[float] = []
    for s in series:
        if s.reference:
            continue  # the range follows the data; reference curves are clipped to it
        vals = s.x if axis == "x" else s.y
        values.extend(v for v in vals if _finite(v))
        if s.style == "bars":
            if axis == "x":
                values.extend(v + s.width for v in s.x if _finite(v))
            else:
                values.append(0.0)
    if not values:
        return None
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def render_svg(fig: Figure) -> str:
    """The figure as one ``<svg>`` element (inline in HTML or served as image/svg+xml)."""
    colored = []
    n_auto = 0
    for s in fig.series:
        if s.color is None:
            s = replace(s, color=PALETTE[n_auto % len(PALETTE)])
            n_auto += 1
        colored.append(s)
    legend_entries = [s for s in colored if fig.legend and s.label]
    legend_w = 0
    if legend_entries:
        longest = max(len(s.label) for s in legend_entries)
        legend_w = min(240, 44 + 7 * longest)
    left, right, top, bottom = 62, 16 + legend_w, 44 if fig.note else 30, 46
    pw, ph = fig.width - left - right, fig.height - top - bottom

    xr = fig.xlim or _data_range(colored, "x") or (0.0, 1.0)
    yr = fig.ylim or _data_range(colored, "y") or (0.0, 1.0)
    xticks = nice_ticks(*xr)
    yticks = nice_ticks(*yr, integer=fig.integer_y)

    def sx(v: float) -> float:
        return left + (v - xr[0]) / (xr[1] - xr[0]) * pw

    def sy(v: float) -> float:
        return top + ph - (v - yr[0]) / (yr[1] - yr[0]) * ph

    clip = f"clip-{fig.ident}"
    classes = " ".join(("qa-plot", *fig.extra_classes))
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="{escape(classes)}" id="{escape(fig.ident)}" '
            f'width="{fig.width}" height="{fig.height}" viewBox="0 0 {fig.width} {fig.height}" role="img" '
            f'aria-label="{escape(fig.title)}" style="{_FONT};font-size:12px">'
        ),
        f"<title>{escape(fig.title)}</title>",
        f'<defs><clipPath id="{clip}"><rect x="{left}" y="{top}" width="{pw}" height="{ph}"/></clipPath></defs>',
        f'<rect x="0" y="0" width="{fig.width}" height="{fig.height}" fill="#fff"/>',
        f'<text x="{left}" y="18" font-size="14" font-weight="600">{escape(fig.title)}</text>',
    ]
    if fig.note:
        out.append(f'<text x="{left}" y="34" font-size="11" fill="#555">{escape(fig.note)}</text>')
    # grid and ticks
    for t in xticks:
        x = sx(t)
        out.append(f'<line x1="{_fmt(x)}" y1="{top}" x2="{_fmt(x)}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<line x1="{_fmt(x)}" y1="{top + ph}" x2="{_fmt(x)}" y2="{top + ph + 5}" stroke="#333"/>')
        out.append(
            f'<text x="{_fmt(x)}" y="{top + ph + 18}" text-anchor="middle" class="tick">'
            f"{escape(_tick_label(t, xticks))}</text>"
        )
    for t in yticks:
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{_fmt(y)}" x2="{left + pw}" y2="{_fmt(y)}" stroke="#eee"/>')
        out.append(f'<line x1="{left - 5}" y1="{_fmt(y)}" x2="{left}" y2="{_fmt(y)}" stroke="#333"/>')
        out.append(
            f'<text x="{left - 8}" y="{_fmt(y + 4)}" text-anchor="end" class="tick">'
            f"{escape(_tick_label(t, yticks))}</text>"
        )
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{fig.height - 8}" text-anchor="middle" class="xlabel">'
        f"{escape(fig.xlabel)}</text>"
    )
    out.append(
        f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" class="ylabel">'
        f"{escape(fig.ylabel)}</text>"
    )
    # data, clipped to the frame
    out.append(f'<g clip-path="url(#{clip})">')
    for s in colored:
        out.extend(_marks(s, sx, sy))
    out.append("</g>")
    # legend, right of the frame
    for i, s in enumerate(legend_entries):
        lx, ly = left + pw + 14, top + 8 + 18 * i
        out.append(_legend_key(s, lx, ly))
        label = s.label if len(s.label) <= 30 else s.label[:29] + "\u2026"
        out.append(f'<text x="{lx + 24}" y="{ly + 4}" class="legend">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _dash(s: Series) -> str:
    return ' stroke-dasharray="6 4"' if s.dashed else ""


def _legend_key(s: Series, x: float, y: float) -> str:
    if s.style == "points":
        return f'<circle cx="{x + 9}" cy="{y}" r="4" fill="{s.color}" fill-opacity="0.8"/>'
    if s.style == "bars":
        return f'<rect x="{x + 3}" y="{y - 5}" width="12" height="10" fill="{s.color}" fill-opacity="0.7"/>'
    width = 1.5 if s.reference else 2
    return f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{s.color}" stroke-width="{width}"{_dash(s)}/>'


def _marks(s: Series, sx, sy) -> list[str]:
    kind = "reference" if s.reference else "mark"
    label = escape(s.label)
    if s.style == "points":
        tips = s.tips or [""] * len(s.x)
        return [
            f'<circle class="{kind}" cx="{_fmt(sx(x))}" cy="{_fmt(sy(y))}" r="3.2" fill="{s.color}" '
            f'fill-opacity="0.8" stroke="#fff" stroke-width="0.5"><title>{escape(tip) if tip else label}: '
            f"{x:.3g}, {y:.3g}</title></circle>"
            for x, y, tip in zip(s.x, s.y, tips)
            if _finite(x) and _finite(y)
        ]
    if s.style == "bars":
        base = sy(0.0)
        return [
            f'<rect class="{kind}" x="{_fmt(sx(x))}" y="{_fmt(sy(y))}" width="{_fmt(max(sx(x + s.width) - sx(x) - 1, 1))}" '
            f'height="{_fmt(max(base - sy(y), 0))}" fill="{s.color}" fill-opacity="0.7">'
            f"<title>{label}: {x:.3g} to {x + s.width:.3g}: {y:g}</title></rect>"
            for x, y in zip(s.x, s.y)
            if _finite(x) and _finite(y)
        ]
    # line: one path, a new sub-path after every gap
    parts: list[str] = []
    pen_up = True
    for x, y in zip(s.x, s.y):
        if not (_finite(x) and _finite(y)):
            pen_up = True
            continue
        parts.append(f"{'M' if pen_up else 'L'}{_fmt(sx(x))},{_fmt(sy(y))}")
        pen_up = False
    if not parts:
        return []
    width = 1.5 if s.reference else 2
    return [
        (
            f'<path class="{kind}" d="{" ".join(parts)}" fill="none" stroke="{s.color}" stroke-width="{width}"'
            f"{_dash(s)}><title>{label}</title></path>"
        )
    ]
