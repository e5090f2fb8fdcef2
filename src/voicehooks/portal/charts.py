"""The overview's charts as server-rendered SVG: no script, no chart library, no inline style.

Colours come from the stylesheet through classes; each bar and point has a <title> (shown on
hover) and each chart a text summary for screen readers.
"""

from collections.abc import Sequence
from datetime import UTC

from markupsafe import Markup, escape

from voicehooks.portal.repository import HourCounts

WIDTH = 720
HEIGHT = 220
LEFT = 48
RIGHT = 12
TOP = 12
BOTTOM = 28
STACK = (("succeeded", "succeeded"), ("pending", "pending or retrying"), ("failed", "failed"))


def _nice_ceiling(value: float) -> float:
    """1, 2 or 5 times a power of ten, at least `value` (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _frame(parts: list[str], top_value: float, unit: str, hours: Sequence[HourCounts]) -> None:
    plot_height = HEIGHT - TOP - BOTTOM
    for fraction in (0, 0.5, 1):
        y = TOP + plot_height * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        label = _number(top_value * fraction) + unit
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    slot = (WIDTH - LEFT - RIGHT) / len(hours)
    for index, hour in enumerate(hours):
        if index % 3:
            continue
        x = LEFT + slot * index + slot / 2
        iso = hour.hour.astimezone(UTC).isoformat().replace("+00:00", "Z")
        parts.append(
            f'<text class="axis hour" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle" '
            f'data-hour="{iso}">{hour.hour.astimezone(UTC):%H}:00</text>'
        )


def _open(label: str) -> list[str]:
    return [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(label)}</title>",
    ]


def deliveries_chart(hours: Sequence[HourCounts]) -> Markup:
    """Deliveries per hour, stacked by state."""
    totals = [sum(hour.counts.get(state, 0) for state, _ in STACK) for hour in hours]
    top_value = _nice_ceiling(max(totals, default=0))
    summary = f"Deliveries per hour, last 24 hours: {sum(totals):,} in all"
    parts = _open(summary)
    _frame(parts, top_value, "", hours)
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / len(hours)
    width = max(slot * 0.7, 1)
    for index, hour in enumerate(hours):
        x = LEFT + slot * index + (slot - width) / 2
        base = float(TOP + plot_height)
        when = f"{hour.hour.astimezone(UTC):%H}:00 UTC"
        for state, words in STACK:
            count = hour.counts.get(state, 0)
            if not count:
                continue
            height = plot_height * count / top_value
            base -= height
            parts.append(
                f'<rect class="bar bar-{state}" x="{x:.1f}" y="{base:.1f}" width="{width:.1f}" '
                f'height="{height:.1f}" data-count="{count}">'
                f"<title>{when}: {count:,} {words}</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers and escaped labels only


def latency_chart(hours: Sequence[HourCounts]) -> Markup:
    """Attempt duration per hour: the median and the 95th percentile."""
    values = [value for hour in hours for value in (hour.p50_ms, hour.p95_ms) if value is not None]
    top_value = _nice_ceiling(max(values, default=0))
    measured = sum(1 for hour in hours if hour.p50_ms is not None)
    summary = (
        f"Attempt latency per hour, p50 and p95, last 24 hours: {measured} hours with attempts"
    )
    parts = _open(summary)
    _frame(parts, top_value, " ms", hours)
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / len(hours)
    for name, pick in (("p95", lambda h: h.p95_ms), ("p50", lambda h: h.p50_ms)):
        points = []
        dots = []
        for index, hour in enumerate(hours):
            value = pick(hour)
            if value is None:
                continue
            x = LEFT + slot * index + slot / 2
            y = TOP + plot_height * (1 - value / top_value)
            points.append(f"{x:.1f},{y:.1f}")
            when = f"{hour.hour.astimezone(UTC):%H}:00 UTC"
            dots.append(
                f'<circle class="dot dot-{name}" cx="{x:.1f}" cy="{y:.1f}" r="3.5">'
                f"<title>{when}: {name} {_number(value)} ms</title></circle>"
            )
        if len(points) > 1:
            parts.append(f'<polyline class="line line-{name}" points="{" ".join(points)}"/>')
        parts.extend(dots)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers and escaped labels only
