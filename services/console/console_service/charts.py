"""Charts drawn on the server as SVG: no chart library, nothing loaded from
elsewhere, and they print. Colours are presentation attributes, which the
Content-Security-Policy (no inline styles) allows."""

from dataclasses import dataclass

# Colour-blind-safe (Okabe-Ito), one per progress status, in the order the bars stack.
STATUS_COLOURS = {
    "pipeline": "#999999", "implementation": "#0072B2", "finalisation": "#56B4E9",
    "closed": "#009E73", "suspended": "#E69F00", "cancelled": "#D55E00",
}


@dataclass(frozen=True)
class Segment:
    status: str
    count: int
    x: float
    width: float
    colour: str


@dataclass(frozen=True)
class Bar:
    label: str
    total: int
    y: float
    segments: list[Segment]


@dataclass(frozen=True)
class StackedBars:
    width: int
    height: int
    label_width: int
    bar_height: int
    bars: list[Bar]


def stacked_bars(rows: list[tuple[str, dict[str, int]]], *, width: int = 760, label_width: int = 260,
                 bar_height: int = 26, gap: int = 12) -> StackedBars:
    """One horizontal bar per row, its segments the counts by status, all bars
    on the scale of the longest, so pillars compare by length too."""
    longest = max((sum(counts.values()) for _, counts in rows), default=0) or 1
    scale = (width - label_width - 40) / longest
    bars = []
    for index, (label, counts) in enumerate(rows):
        x, segments = float(label_width), []
        for status, colour in STATUS_COLOURS.items():
            count = counts.get(status, 0)
            if count:
                segments.append(Segment(status, count, x, count * scale, colour))
                x += count * scale
        bars.append(Bar(label, sum(counts.values()), index * (bar_height + gap), segments))
    return StackedBars(width=width, height=max(1, len(rows) * (bar_height + gap)), label_width=label_width,
                       bar_height=bar_height, bars=bars)
