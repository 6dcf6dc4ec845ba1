"""The report's charts, as self-contained SVG: real axes (ticks and units), a legend, and
every value a reader (or a test in a browser) can read back from the page: each mark
carries its value in a <title> and in data- attributes."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy

PHASE_COLOURS = {"start-up": "#c9c9c9", "first batch": "#e0b15a", "steady": "#4a7ab8", "shutdown": "#8c8c8c"}
RUN_COLOURS = ("#4a7ab8", "#d0743c", "#5a9e5a", "#8e5ab8", "#b8a04a", "#4ab8b0")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """0 and round steps (1, 2 or 5 x a power of ten) up to at least `maximum`."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [step * i for i in range(int(math.ceil(maximum / step)) + 1)]


def _number(value: float) -> str:
    return f"{value:g}" if value < 1e6 else f"{value:.3g}"


def phases_svg(phases: dict) -> str:
    """The wall time split into its phases, in time order, to scale, with a legend."""
    ordered = [(name, max(float(phases.get(name, 0.0)), 0.0)) for name in PHASE_COLOURS]
    width, total, x, bars, legend = 480, sum(s for _, s in ordered) or 1.0, 0.0, [], []
    for i, (name, seconds) in enumerate(ordered):
        w = width * seconds / total
        bars.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="18" fill="{PHASE_COLOURS[name]}" '
            f'data-phase="{_e(name)}" data-seconds="{seconds:.1f}"><title>{_e(name)}: {seconds:.1f} s</title></rect>'
        )
        x += w
        lx = 120 * i
        legend.append(
            f'<rect x="{lx}" y="26" width="10" height="10" fill="{PHASE_COLOURS[name]}"/>'
            f'<text class="legend" x="{lx + 14}" y="35" data-phase="{_e(name)}">{_e(name)} {seconds:.1f} s</text>'
        )
    return (
        f'<svg id="phases" width="{width}" height="42">{"".join(bars)}<g id="phases-legend">{"".join(legend)}</g></svg>'
    )


@dataclass(frozen=True)
class RunSeries:
    """One run of the output: when it was launched, and its rows saved against seconds since then."""

    launched: float
    points: list[tuple[float, int]]


def runs_svg(series: Sequence[RunSeries]) -> str:
    """Rows saved against seconds since each run's launch, a line per run (a flat stretch is a
    stall), with both axes ticked and labeled, and a legend of the runs."""
    width, height, left, bottom, top, right = 520, 220, 56, 40, 10, 12
    end = max((t for s in series for t, _ in s.points), default=1.0) or 1.0
    most = max((n for s in series for _, n in s.points), default=1) or 1
    xs, ys = nice_ticks(end), nice_ticks(most)
    plot_w, plot_h = width - left - right, height - top - bottom

    def at(t: float, n: float) -> tuple[float, float]:
        return left + plot_w * t / xs[-1], top + plot_h * (1 - n / ys[-1])

    parts = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>']
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>')
    for t in xs:
        x, _ = at(t, 0)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="#444"/>'
            f'<text class="x-tick" x="{x:.1f}" y="{top + plot_h + 15}" text-anchor="middle">{_number(t)} s</text>'
        )
    for n in ys:
        _, y = at(0, n)
        parts.append(
            f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#444"/>'
            f'<text class="y-tick" x="{left - 6}" y="{y + 3:.1f}" text-anchor="end">{_number(n)}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle">'
        "seconds since the run's launch</text>"
        f'<text x="12" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2:.0f})">rows saved</text>'
    )
    legend = []
    for i, run in enumerate(series):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        xy = [at(t, n) for t, n in [(0.0, 0), *run.points]]
        path = " ".join(f"{'M' if j == 0 else 'L'}{x:.1f},{y:.1f}" for j, (x, y) in enumerate(xy))
        parts.append(f'<path class="run" data-run="{i + 1}" d="{path}" fill="none" stroke="{colour}"/>')
        parts += [
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}" data-run="{i + 1}" data-seconds="{t:.1f}" '
            f'data-rows="{n}"><title>{t:.0f} s: {n} rows</title></circle>'
            for (x, y), (t, n) in zip(xy[1:], run.points, strict=True)
        ]
        launched = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.launched)) if run.launched else "?"
        rows = run.points[-1][1] if run.points else 0
        legend.append(
            f'<li style="color:{colour}" data-run="{i + 1}">run {i + 1}, launched {launched}: {rows} rows saved</li>'
        )
    svg = f'<svg id="throughput" width="{width}" height="{height}">{"".join(parts)}</svg>'
    return f'{svg}<ul id="runs-legend">{"".join(legend)}</ul>'


def histogram_svg(counts: Sequence[int] | numpy.ndarray) -> str:
    """Images per top-1 probability, in bins from 0 to 1."""
    width, height, peak = 400, 120, max(int(max(counts)), 1)
    bar = width / len(counts)
    bars = []
    for i, count in enumerate(counts):
        h = (height - 20) * int(count) / peak
        bars.append(
            f'<rect x="{i * bar:.1f}" y="{height - 15 - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
            f'fill="#4a7ab8"><title>{i / len(counts):.2f}-{(i + 1) / len(counts):.2f}: {count}</title></rect>'
        )
    ticks = "".join(
        f'<text x="{f * width:.0f}" y="{height}" text-anchor="middle">{f:.1f}</text>' for f in (0.1, 0.3, 0.5, 0.7, 0.9)
    )
    return f'<svg id="histogram" width="{width}" height="{height}">{"".join(bars)}{ticks}</svg>'
