"""The overview's chart, drawn on the server as SVG: applied and failed attempts per
minute. Drawn with attributes and classes only (the CSP allows no inline style); every
text in it is escaped."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from flagsched.admin.service.overview import Minute

WIDTH, HEIGHT = 720, 180
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 40, 10, 10, 24


def _points(values: Sequence[int], top: int) -> str:
    span_x = WIDTH - PAD_LEFT - PAD_RIGHT
    span_y = HEIGHT - PAD_TOP - PAD_BOTTOM
    n = max(1, len(values) - 1)
    return " ".join(
        f"{PAD_LEFT + i * span_x / n:.1f},{PAD_TOP + span_y * (1 - v / top):.1f}"
        for i, v in enumerate(values)
    )


def per_minute_chart(minutes: Sequence[Minute]) -> Markup:
    """An SVG line chart of ``minutes`` (applied in green, failed in red) with a title
    and a description for screen readers."""
    applied = [m.applied for m in minutes]
    failed = [m.failed for m in minutes]
    top = max([1, *applied, *failed])
    base_y, right = HEIGHT - PAD_BOTTOM, WIDTH - PAD_RIGHT
    first = minutes[0].at.strftime("%H:%M") if minutes else ""
    last = minutes[-1].at.strftime("%H:%M") if minutes else ""
    summary = (
        f"Over the last {len(minutes)} minutes: {sum(applied)} applied, {sum(failed)} failed;"
        f" at most {top} in one minute."
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"'
        ' role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Applied and failed attempts per minute</title>',
        f'<desc id="chart-desc">{escape(summary)}</desc>',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{base_y}" x2="{right}" y2="{base_y}"/>',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{base_y}"/>',
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + 10}" text-anchor="end">{top}</text>',
        f'<text x="{PAD_LEFT - 6}" y="{base_y}" text-anchor="end">0</text>',
        f'<text x="{PAD_LEFT}" y="{HEIGHT - 6}">{escape(first)} UTC</text>',
        f'<text x="{right}" y="{HEIGHT - 6}" text-anchor="end">{escape(last)} UTC</text>',
    ]
    if minutes:
        parts.append(f'<polyline class="applied" points="{_points(applied, top)}"/>')
        parts.append(f'<polyline class="failed" points="{_points(failed, top)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (built from numbers and escaped text only)
