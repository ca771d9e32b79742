"""Charts drawn on the server as inline SVG, so a page (or the static report opened from disk)
shows them at first paint with no JavaScript, no chart library and no network.

Every function is pure: data in, `markupsafe.Markup` of one `<svg role="img">` out, with a
`<title>` naming the chart (its accessible name), every piece of text escaped, and a small
"no data" picture when there is nothing to draw. The `<svg>` is meant to sit inside HTML,
whose parser gives it its namespace, so it names no URL at all. Colours are presentation
attributes, not CSS, so a chart looks the same on any page; each mark also carries a class
a stylesheet may override.

Times are Unix nanoseconds, as the store keeps them.

    from api.ui import svg
    svg.sparkline([(1, 0.5), (2, 0.75)], label="success rate")
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

#: series colours, in order (colour-blind safe, Okabe–Ito)
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442")
STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "ok": "#2e7d32",
    "failed": "#c62828",
    "error": "#c62828",
    "timeout": "#c62828",
    "running": "#1565c0",
    "production": "#2e7d32",
    "candidate": "#1565c0",
    "experimental": "#1565c0",
}
OTHER_COLOUR = "#757575"
MARKER_COLOUR = "#8e24aa"
#: an estimate of one character's width at font-size 11, to size label gutters
CHAR_WIDTH = 6.2


# -- shared pieces ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """A linear map from data values [lo, hi] onto pixels [start, end] (end may be < start,
    as a y axis is). A flat domain is widened so a single value lands mid-range."""

    lo: float
    hi: float
    start: float
    end: float

    @classmethod
    def fit(cls, values: Iterable[float], start: float, end: float) -> Scale:
        values = list(values)
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        if lo == hi:
            lo, hi = lo - (abs(lo) * 0.1 or 1.0), hi + (abs(hi) * 0.1 or 1.0)
        return cls(lo, hi, start, end)

    def __call__(self, value: float) -> float:
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def _n(value: float) -> str:
    """A coordinate: short, and stable across runs."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def fmt_value(value: float, digits: int = 3) -> str:
    """A number for a label: `digits` significant digits, thousands separated."""
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def tick_labels(values: Sequence[float]) -> list[str]:
    """Labels for an axis's ticks, with as many digits as it takes to tell them apart."""
    for digits in range(3, 10):
        labels = [fmt_value(value, digits) for value in values]
        if len(set(labels)) == len(set(values)):
            return labels
    return labels


def fmt_time(ns: float, *, span_ns: float = 0) -> str:
    """A Unix-nanosecond time in UTC, as precise as the plotted range needs."""
    when = datetime.fromtimestamp(ns / 1e9, UTC)
    if span_ns >= 86_400e9:
        return when.strftime("%Y-%m-%d %H:%M")
    return when.strftime("%H:%M:%S" if span_ns >= 60e9 else "%H:%M:%S.%f")[:12]


def fmt_duration(ns: float) -> str:
    for unit, size in (("h", 3600e9), ("min", 60e9), ("s", 1e9), ("ms", 1e6)):
        if abs(ns) >= size:
            return f"{ns / size:.3g} {unit}"
    return f"{ns / 1e3:.3g} µs"


def _attrs(attrs: Mapping[str, Any]) -> str:
    """Keyword arguments as SVG attributes: `stroke_width` → stroke-width, `class_` → class;
    floats shortened, everything escaped, None left out."""
    return "".join(
        f' {key.rstrip("_").replace("_", "-")}="'
        f'{_n(val) if isinstance(val, float) else escape(val)}"'
        for key, val in attrs.items()
        if val is not None
    )


def _el(tag: str, content: Any = None, *, title: str | None = None, **attrs: Any) -> Markup:
    """One element: `content` (text, escaped, or Markup of children) and an optional
    `<title>`, which browsers show as the mark's tooltip and screen readers read."""
    inner = Markup("") if title is None else Markup("<title>%s</title>") % title
    if content is not None:
        inner += content
    if not inner:
        return Markup(f"<{tag}{_attrs(attrs)}/>")
    return Markup(f"<{tag}{_attrs(attrs)}>") + inner + Markup(f"</{tag}>")


def _text(x: float, y: float, content: Any, *, anchor: str = "start", **attrs: Any) -> Markup:
    return _el("text", content, x=float(x), y=float(y), text_anchor=anchor, **attrs)


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, **attrs: Any) -> Markup:
    return _el(
        "line", x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2), stroke=stroke, **attrs
    )


def _dot(x: float, y: float, r: float, fill: str, **attrs: Any) -> Markup:
    return _el("circle", cx=float(x), cy=float(y), r=float(r), fill=fill, **attrs)


def _polyline(points: Iterable[tuple[float, float]], stroke: str, cls: str) -> Markup:
    coords = " ".join(f"{_n(x)},{_n(y)}" for x, y in points)
    return _el(
        "polyline",
        class_=cls,
        points=coords,
        fill="none",
        stroke=stroke,
        stroke_width="1.5",
        stroke_linejoin="round",
    )


def _linked(mark: Markup, href: str | None) -> Markup:
    """`mark` inside a link when there is somewhere to go (links are keyboard-focusable)."""
    return mark if not href else _el("a", mark, href=href)


def _svg(label: str, width: float, height: float, body: Iterable[Markup], cls: str) -> Markup:
    return _el(
        "svg",
        Markup("").join(body),
        title=label,
        role="img",
        class_=f"chart {cls}",
        width=float(width),
        height=float(height),
        viewBox=f"0 0 {_n(width)} {_n(height)}",
        font_family="system-ui, sans-serif",
        font_size="11",
    )


def no_data(label: str, *, width: float = 160, height: float = 32) -> Markup:
    """The picture of an empty chart: its frame and "no data", still named by `label`."""
    frame = _el(
        "rect",
        x=0.5,
        y=0.5,
        width=float(width - 1),
        height=float(height - 1),
        fill="none",
        stroke="#ccc",
        stroke_dasharray="3 3",
    )
    note = _text(width / 2, height / 2 + 4, "no data", anchor="middle", fill=OTHER_COLOUR)
    return _svg(label, width, height, [frame, note], "no-data")


def _label_gutter(labels: Iterable[Any], *, most: float) -> float:
    """Room on the left for the longest label, at most `most` pixels."""
    return min(most, max((len(str(text)) for text in labels), default=0) * CHAR_WIDTH + 12)


def _clip(text: Any, room: float) -> str:
    """`text` cut to what fits in `room` pixels (the full text stays in the mark's title)."""
    text = str(text)
    fits = max(1, int(room / CHAR_WIDTH))
    return text if len(text) <= fits else text[: max(1, fits - 1)] + "…"


def _markers(
    markers: Iterable[tuple[float, str]], x: Scale, top: float, bottom: float
) -> list[Markup]:
    """Change markers: a dashed vertical line per marker inside the plotted range, titled."""
    return [
        _line(
            x(at),
            top,
            x(at),
            bottom,
            MARKER_COLOUR,
            title=str(text),
            class_="marker",
            stroke_width="2",
            stroke_dasharray="4 3",
        )
        for at, text in markers
        if _finite(at) and x.lo <= at <= x.hi
    ]


def _x_axis(x: Scale, y: float, *, is_time: bool, above: bool = False) -> list[Markup]:
    """Baseline with the range's two ends labelled (and the middle, when there is room),
    below it or `above` it."""
    span = x.hi - x.lo
    ticks = [x.lo, x.hi] if abs(x.end - x.start) < 300 else [x.lo, (x.lo + x.hi) / 2, x.hi]
    out = [_line(x.start, y, x.end, y, "#999")]
    texts = [fmt_time(value, span_ns=span) for value in ticks] if is_time else tick_labels(ticks)
    for i, (value, text) in enumerate(zip(ticks, texts, strict=True)):
        anchor = "start" if i == 0 else "end" if i == len(ticks) - 1 else "middle"
        out.append(_text(x(value), y - 5 if above else y + 13, text, anchor=anchor, fill="#555"))
    return out


def _y_room(y: Scale) -> float:
    """The width the y axis's labels take, left of the axis."""
    return 10 + CHAR_WIDTH * max(len(text) for text in tick_labels((y.lo, y.hi)))


def _y_axis(y: Scale, x: float) -> list[Markup]:
    out = [_line(x, y.start, x, y.end, "#999")]
    for value, text in zip((y.lo, y.hi), tick_labels((y.lo, y.hi)), strict=True):
        out.append(_text(x - 4, y(value) + 4, text, anchor="end", fill="#555"))
    return out


# -- charts -------------------------------------------------------------------------------------


def sparkline(
    points: Sequence[tuple[float, float]], *, label: str, width: int = 160, height: int = 32
) -> Markup:
    """A small line of `points` [(x, y)] with no axes; the last value is dotted."""
    points = sorted((x, y) for x, y in points if _finite(x, y))
    if not points:
        return no_data(label, width=width, height=height)
    x = Scale.fit((p[0] for p in points), 2, width - 4)
    y = Scale.fit((p[1] for p in points), height - 3, 3)
    last_x, last_y = points[-1]
    body = [
        _polyline(((x(px), y(py)) for px, py in points), PALETTE[0], "series"),
        _dot(x(last_x), y(last_y), 2, PALETTE[0]),
    ]
    return _svg(f"{label} (last {fmt_value(last_y)})", width, height, body, "sparkline")


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    label: str,
    width: int = 640,
    height: int = 200,
    x_is_time: bool = True,
    markers: Iterable[tuple[float, str]] = (),
) -> Markup:
    """One line per series {name: [(x, y)]} on shared axes, a legend, and change `markers`
    [(x, text)] as titled vertical lines. With `x_is_time`, x is Unix nanoseconds."""
    clean = {
        name: sorted((px, py) for px, py in points if _finite(px, py))
        for name, points in series.items()
    }
    clean = {name: points for name, points in clean.items() if points}
    if not clean:
        return no_data(label, width=width, height=min(height, 48))
    everything = [p for points in clean.values() for p in points]
    top, bottom = 8, height - 38
    y = Scale.fit((p[1] for p in everything), bottom, top)
    left = max(32.0, _y_room(y))
    x = Scale.fit((p[0] for p in everything), left, width - 12)
    body = [*_y_axis(y, left), *_x_axis(x, bottom, is_time=x_is_time)]
    legend_x = float(left)
    for i, (name, points) in enumerate(clean.items()):
        colour = PALETTE[i % len(PALETTE)]
        body.append(_polyline(((x(px), y(py)) for px, py in points), colour, "series"))
        if len(points) == 1:
            body.append(_dot(x(points[0][0]), y(points[0][1]), 3, colour))
        swatch = _el("rect", x=legend_x, y=float(height - 12), width="10", height="3", fill=colour)
        body += [swatch, _text(legend_x + 14, height - 7, name, fill="#333")]
        legend_x += 24 + len(str(name)) * CHAR_WIDTH
    body += _markers(markers, x, top, bottom)
    return _svg(label, width, height, body, "line-chart")


def interval_chart(groups: Sequence[Mapping[str, Any]], *, label: str, width: int = 640) -> Markup:
    """A row per group {key, mean, ci95: [lo, hi] | None, count}: its mean as a point, its
    95 % interval as a whisker, and n on the right, on one shared value axis. A group
    without a key (rewards of spans with no agent) is "(none)"."""
    rows = [g for g in groups if _finite(g.get("mean"))]
    if not rows:
        return no_data(label, width=width, height=48)
    row_h, top = 22, 6
    height = top + row_h * len(rows) + 22
    keys = ["(none)" if g.get("key") is None else str(g["key"]) for g in rows]
    gutter = _label_gutter(keys, most=width * 0.35)
    intervals = [g.get("ci95") if g.get("ci95") and _finite(*g["ci95"]) else None for g in rows]
    values = [g["mean"] for g in rows] + [v for ci in intervals if ci for v in ci]
    x = Scale.fit(values, gutter, width - 56)
    body = _x_axis(x, height - 20, is_time=False)
    for i, (g, key, ci) in enumerate(zip(rows, keys, intervals, strict=True)):
        cy = top + row_h * i + row_h / 2
        count = g.get("count", "?")
        title = f"{key}: mean {fmt_value(g['mean'])}"
        if ci:
            title += f", 95% CI [{fmt_value(ci[0])}, {fmt_value(ci[1])}]"
            body.append(_line(x(ci[0]), cy, x(ci[1]), cy, PALETTE[0], stroke_width="2"))
            body += [_line(x(v), cy - 5, x(v), cy + 5, PALETTE[0]) for v in ci]
        body += [
            _text(gutter - 6, cy + 4, _clip(key, gutter - 8), anchor="end"),
            _dot(x(g["mean"]), cy, 4, PALETTE[1], class_="mean", title=f"{title}, n={count}"),
            _text(width - 4, cy + 4, f"n={count}", anchor="end", fill="#555"),
        ]
    return _svg(label, width, height, body, "interval-chart")


def status_colour(status: Any) -> str:
    return STATUS_COLOURS.get(str(status).lower(), OTHER_COLOUR)


def timeline(
    bars: Sequence[Mapping[str, Any]],
    *,
    label: str,
    width: int = 800,
    row_height: int = 18,
    markers: Iterable[tuple[float, str]] = (),
) -> Markup:
    """A Gantt chart: a row per bar {label, start_ns, end_ns (None: still running), status,
    href, title} coloured by status, on a shared time axis, with change `markers`
    [(t_ns, text)] as titled vertical lines (those inside the bars' range: a marker long
    after the last bar would squeeze every bar to a sliver). The time axis is on top, where a
    long chart is read from."""
    rows = [b for b in bars if _finite(b.get("start_ns"))]
    if not rows:
        return no_data(label, width=width, height=48)
    starts = [b["start_ns"] for b in rows]
    ends = [b["end_ns"] for b in rows if _finite(b.get("end_ns"))]
    last = max([*starts, *ends])
    gutter = _label_gutter((b["label"] for b in rows), most=width * 0.3)
    top = 20
    height = top + row_height * len(rows) + 4
    x = Scale.fit([*starts, last], gutter, width - 8)
    body = _x_axis(x, top, is_time=True, above=True)
    for i, bar in enumerate(rows):
        y = top + row_height * i
        start, status = bar["start_ns"], bar.get("status") or "other"
        end = bar["end_ns"] if _finite(bar.get("end_ns")) else last
        title = bar.get("title") or f"{bar['label']}: {status}, {fmt_duration(end - start)}"
        rect = _el(
            "rect",
            title=title,
            x=x(start),
            y=float(y + 2),
            width=max(2.0, x(end) - x(start)),
            height=float(row_height - 4),
            rx="2",
            fill=status_colour(status),
            class_=f"bar status-{status}",
        )
        name = _text(
            gutter - 6, y + row_height / 2 + 4, _clip(bar["label"], gutter - 8), anchor="end"
        )
        body.append(_linked(rect + name, bar.get("href")))
    body += _markers(markers, x, top, height)
    return _svg(label, width, height, body, "timeline")


def scatter(
    points: Sequence[Mapping[str, Any]],
    *,
    label: str,
    x_label: str,
    y_label: str,
    width: int = 480,
    height: int = 320,
) -> Markup:
    """A point per {x, y, label, href, on_front}; the Pareto front (points with `on_front`)
    drawn filled and joined by a step line in x order, the other points hollow."""
    rows = [p for p in points if _finite(p.get("x"), p.get("y"))]
    if not rows:
        return no_data(label, width=width, height=48)
    top, bottom = 10, height - 36
    y = Scale.fit((p["y"] for p in rows), bottom, top)
    left = 18 + max(32.0, _y_room(y))  # and the rotated y label
    x = Scale.fit((p["x"] for p in rows), left, width - 12)
    middle = (bottom + top) / 2
    body = [
        *_y_axis(y, left),
        *_x_axis(x, bottom, is_time=False),
        _text((left + width) / 2, height - 4, x_label, anchor="middle", fill="#333"),
        _text(
            12,
            middle,
            y_label,
            anchor="middle",
            fill="#333",
            transform=f"rotate(-90 12 {_n(middle)})",
        ),
    ]
    front = sorted((p["x"], p["y"]) for p in rows if p.get("on_front"))
    if len(front) > 1:
        steps = [front[0]]
        for px, py in front[1:]:
            steps += [(px, steps[-1][1]), (px, py)]
        body.append(_polyline(((x(px), y(py)) for px, py in steps), PALETTE[5], "front"))
    for p in rows:
        title = f"{p.get('label', '')}: {x_label} {fmt_value(p['x'])}, "
        title += f"{y_label} {fmt_value(p['y'])}" + (" (Pareto front)" if p.get("on_front") else "")
        dot = _dot(
            x(p["x"]),
            y(p["y"]),
            4.5,
            PALETTE[5] if p.get("on_front") else "white",
            stroke=PALETTE[5],
            stroke_width="1.5",
            class_="point",
            title=title,
        )
        body.append(_linked(dot, p.get("href")))
    return _svg(label, width, height, body, "scatter")


def generations(nodes: Sequence[Mapping[str, Any]]) -> dict[Any, int]:
    """Each node's generation: the longest path to it from a root (a node none of whose
    parents is among `nodes`). A parent cycle, which a registry should never hold, is cut
    where it closes rather than looping."""
    parents = {n["id"]: [p for p in n.get("parent_ids") or () if p != n["id"]] for n in nodes}
    depth: dict[Any, int] = {}
    for start in parents:
        stack, on_path = [start], {start}
        while stack:
            node = stack[-1]
            pending = [
                p for p in parents[node] if p in parents and p not in depth and p not in on_path
            ]
            if pending:
                stack.append(pending[0])
                on_path.add(pending[0])
                continue
            depth[node] = 1 + max((depth[p] for p in parents[node] if p in depth), default=-1)
            on_path.discard(stack.pop())
    return depth


def lineage_tree(nodes: Sequence[Mapping[str, Any]], *, label: str, width: int = 640) -> Markup:
    """A layered DAG of nodes {id, parent_ids, label, fitness, status, href}: a row per
    generation (roots on top), an edge from each parent to its child, the fitness printed
    on each node and its status as the border colour. A crowded generation widens it."""
    if not nodes:
        return no_data(label, width=width, height=48)
    depth = generations(nodes)
    layers: dict[int, list[Mapping[str, Any]]] = {}
    for node in {n["id"]: n for n in nodes}.values():
        layers.setdefault(depth[node["id"]], []).append(node)
    width = max(width, 8 + 56 * max(len(layer) for layer in layers.values()))
    box_h, gap_y, top = 34, 26, 6
    height = top + len(layers) * (box_h + gap_y) - gap_y + 6
    where: dict[Any, tuple[float, float, float]] = {}
    for level, layer in layers.items():
        slot = (width - 8) / len(layer)
        for i, node in enumerate(layer):
            box_w = min(slot - 8, 160)
            where[node["id"]] = (4 + slot * (i + 0.5), top + level * (box_h + gap_y), box_w)
    body = [
        _line(
            where[parent][0],
            where[parent][1] + box_h,
            *where[node["id"]][:2],
            "#999",
            class_="edge",
        )
        for level in layers.values()
        for node in level
        for parent in node.get("parent_ids") or ()
        if parent in where and parent != node["id"]
    ]
    for level in layers.values():
        for node in level:
            cx, cy, box_w = where[node["id"]]
            name, status = node.get("label") or node["id"], node.get("status") or "other"
            fitness = node.get("fitness")
            shown = f"fitness {fmt_value(fitness)}" if _finite(fitness) else "fitness —"
            box = _el(
                "rect",
                title=f"{name} ({status}), {shown}",
                x=cx - box_w / 2,
                y=float(cy),
                width=float(box_w),
                height=float(box_h),
                rx="4",
                fill="white",
                stroke=status_colour(status),
                stroke_width="2",
                class_=f"node status-{status}",
            )
            texts = _text(cx, cy + 14, _clip(name, box_w - 6), anchor="middle") + _text(
                cx, cy + 27, _clip(shown, box_w - 6), anchor="middle", fill="#555"
            )
            body.append(_linked(_el("g", box + texts), node.get("href")))
    return _svg(label, width, height, body, "lineage-tree")
