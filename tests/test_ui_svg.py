"""The server-side charts (api/ui/svg.py): every chart is one well-formed `<svg role="img">`
named by its title, escapes what it is given, draws what the data says, and says "no data"
when there is none."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from api.ui import svg

HOSTILE = "<script>alert('x')</script> & \"quotes\""
T0 = 1_700_000_000_000_000_000
SECOND = 1_000_000_000


def parse(chart: Markup) -> ET.Element:
    """The chart as XML (it must be well formed), after checking what every chart promises."""
    assert isinstance(chart, Markup)
    root = ET.fromstring(str(chart))
    assert root.tag == "svg"
    assert root.get("role") == "img"
    assert root.find("title") is not None
    return root


def find(root: ET.Element, tag: str) -> list[ET.Element]:
    return list(root.iter(tag))


def texts(root: ET.Element) -> list[str]:
    return [el.text or "" for el in find(root, "text")]


def titles(root: ET.Element) -> list[str]:
    return [el.text or "" for el in find(root, "title")]


def point_count(polyline: ET.Element) -> int:
    return len(polyline.get("points", "").split())


def sample_charts(text: str) -> list[Markup]:
    """One chart of every kind, with `text` in every label and name it accepts."""
    return [
        svg.sparkline([(1, 1), (2, 2)], label=text),
        svg.line_chart({text: [(T0, 1), (T0 + SECOND, 2)]}, label=text, markers=[(T0, text)]),
        svg.interval_chart(
            [{"key": text, "mean": 0.5, "ci95": [0.2, 0.8], "count": 3}], label=text
        ),
        svg.timeline(
            [
                {
                    "label": text,
                    "start_ns": T0,
                    "end_ns": T0 + SECOND,
                    "status": text,
                    "href": "/x?a=1&b=2",
                    "title": text,
                }
            ],
            label=text,
            markers=[(T0, text)],
        ),  # fmt: skip
        svg.scatter(
            [{"x": 1, "y": 2, "label": text, "href": None, "on_front": True}],
            label=text,
            x_label=text,
            y_label=text,
        ),
        svg.lineage_tree(
            [
                {
                    "id": "a",
                    "parent_ids": [],
                    "label": text,
                    "fitness": 0.5,
                    "status": text,
                    "href": "/prompts/a",
                }
            ],
            label=text,
        ),  # fmt: skip
    ]


def test_every_chart_is_named_by_its_label_and_escapes_text() -> None:
    for chart in sample_charts(HOSTILE):
        root = parse(chart)
        assert root.find("title").text.startswith(HOSTILE)
        assert "<script>" not in str(chart)
        assert not find(root, "script")


@pytest.mark.parametrize(
    "chart",
    [
        svg.sparkline([], label="empty"),
        svg.line_chart({}, label="empty"),
        svg.line_chart({"a": [(1, math.nan)]}, label="empty"),
        svg.interval_chart([], label="empty"),
        svg.timeline([], label="empty"),
        svg.scatter([], label="empty", x_label="x", y_label="y"),
        svg.lineage_tree([], label="empty"),
    ],
)
def test_empty_data_says_no_data(chart: Markup) -> None:
    root = parse(chart)
    assert texts(root) == ["no data"]
    assert titles(root) == ["empty"]


def test_scale_maps_the_domain_onto_the_range_and_centres_a_flat_domain() -> None:
    scale = svg.Scale.fit([10, 20], 0, 100)
    assert (scale(10), scale(15), scale(20)) == (0, 50, 100)
    flipped = svg.Scale.fit([0, 1], 90, 10)  # a y axis: larger values higher up
    assert flipped(1) < flipped(0)
    assert svg.Scale.fit([5, 5], 0, 100)(5) == 50


def test_sparkline_draws_every_finite_point_and_names_the_last_value() -> None:
    root = parse(svg.sparkline([(3, 0.9), (1, 0.1), (2, math.inf), (2.5, 0.4)], label="rate"))
    (line,) = find(root, "polyline")
    assert point_count(line) == 3
    assert titles(root) == ["rate (last 0.9)"]


def test_line_chart_draws_a_line_and_legend_per_series_and_the_markers_in_range() -> None:
    series = {
        "p50": [(T0 + i * SECOND, i) for i in range(5)],
        "p95": [(T0 + i * SECOND, 2 * i) for i in range(5)],
        "single": [(T0, 3)],
    }
    markers = [(T0 + 2 * SECOND, "prompt v2 promoted"), (T0 + 3600 * SECOND, "outside")]
    root = parse(svg.line_chart(series, label="latency", markers=markers))
    assert [point_count(line) for line in find(root, "polyline")] == [5, 5, 1]
    assert {"p50", "p95", "single"} <= set(texts(root))
    marker_lines = [el for el in find(root, "line") if el.get("class") == "marker"]
    assert [el.find("title").text for el in marker_lines] == ["prompt v2 promoted"]


def test_line_chart_labels_time_in_utc_and_plain_numbers_otherwise() -> None:
    timed = parse(svg.line_chart({"a": [(T0, 1), (T0 + 120 * SECOND, 2)]}, label="t"))
    assert "22:13:20" in texts(timed)  # 1_700_000_000 s is 2023-11-14 22:13:20 UTC
    plain = parse(svg.line_chart({"a": [(1, 1), (3, 2)]}, label="n", x_is_time=False))
    assert {"1", "3"} <= set(texts(plain))


def test_interval_chart_draws_mean_whisker_and_n_per_group() -> None:
    groups = [
        {"key": "prompt:v1", "mean": 0.4, "ci95": [0.3, 0.5], "count": 40},
        {"key": "prompt:v2", "mean": 0.7, "ci95": None, "count": 1},
    ]
    root = parse(svg.interval_chart(groups, label="reward by prompt"))
    means = find(root, "circle")
    assert [el.find("title").text for el in means] == [
        "prompt:v1: mean 0.4, 95% CI [0.3, 0.5], n=40",
        "prompt:v2: mean 0.7, n=1",
    ]
    assert {"prompt:v1", "prompt:v2", "n=40", "n=1"} <= set(texts(root))
    whisker_ends = [el for el in find(root, "line") if el.get("y1") != el.get("y2")]
    assert len(whisker_ends) == 2  # the interval's two caps; the group without one has none


def test_timeline_colours_bars_by_status_links_them_and_runs_open_bars_to_the_end() -> None:
    bars = [
        {"label": "attempt 1", "start_ns": T0, "end_ns": T0 + 2 * SECOND, "status": "failed",
         "href": "/traces/1", "title": "attempt 1 failed"},
        {"label": "attempt 2", "start_ns": T0 + 3 * SECOND, "end_ns": T0 + 5 * SECOND,
         "status": "succeeded", "href": None, "title": None},
        {"label": "attempt 3", "start_ns": T0 + 4 * SECOND, "end_ns": None, "status": "running",
         "href": None, "title": None},
    ]  # fmt: skip
    root = parse(svg.timeline(bars, label="executions", markers=[(T0 + SECOND, "marker")]))
    rects = find(root, "rect")
    assert [r.get("fill") for r in rects] == [
        svg.STATUS_COLOURS["failed"],
        svg.STATUS_COLOURS["succeeded"],
        svg.STATUS_COLOURS["running"],
    ]
    assert [a.get("href") for a in find(root, "a")] == ["/traces/1"]
    right = [float(r.get("x")) + float(r.get("width")) for r in rects]
    assert right[2] == pytest.approx(right[1])  # still running: drawn up to the latest end
    assert titles(root)[1:4] == ["attempt 1 failed", "attempt 2: succeeded, 2 s",
                                 "attempt 3: running, 1 s"]  # fmt: skip
    assert [el.get("class") for el in find(root, "line")].count("marker") == 1


def test_timeline_gives_unknown_statuses_the_other_colour() -> None:
    bar = {"label": "x", "start_ns": T0, "end_ns": T0 + 1, "status": "cancelled"}
    (rect,) = find(parse(svg.timeline([bar], label="t")), "rect")
    assert rect.get("fill") == svg.OTHER_COLOUR


def test_scatter_joins_the_pareto_front_with_a_step_line_in_x_order() -> None:
    points = [
        {"x": 300, "y": 0.9, "label": "c", "href": "/c", "on_front": True},
        {"x": 100, "y": 0.5, "label": "a", "href": None, "on_front": True},
        {"x": 200, "y": 0.4, "label": "b", "href": None, "on_front": False},
    ]
    root = parse(svg.scatter(points, label="candidates", x_label="tokens", y_label="success"))
    (front,) = [el for el in find(root, "polyline") if el.get("class") == "front"]
    assert point_count(front) == 3  # a, the corner under c, c
    dots = find(root, "circle")
    assert [d.get("fill") == "white" for d in dots] == [False, False, True]
    assert [a.get("href") for a in find(root, "a")] == ["/c"]
    assert dots[0].find("title").text == "c: tokens 300, success 0.9 (Pareto front)"
    assert {"tokens", "success"} <= set(texts(root))


def test_scatter_with_one_front_point_draws_no_line() -> None:
    point = {"x": 1, "y": 1, "label": "only", "href": None, "on_front": True}
    root = parse(svg.scatter([point], label="s", x_label="x", y_label="y"))
    assert not find(root, "polyline")


def node(id_: str, *parents: str, fitness: float | None = None, href: str | None = None):
    return {"id": id_, "parent_ids": list(parents), "label": f"v-{id_}", "fitness": fitness,
            "status": "candidate", "href": href}  # fmt: skip


def test_generations_are_the_longest_path_from_a_root() -> None:
    nodes = [node("a"), node("b", "a"), node("c", "a", "b"), node("d", "unknown"), node("e", "c")]
    assert svg.generations(nodes) == {"a": 0, "b": 1, "c": 2, "d": 0, "e": 3}


def test_generations_cut_a_parent_cycle_instead_of_looping() -> None:
    depth = svg.generations([node("a", "b"), node("b", "a"), node("c", "c")])
    assert set(depth) == {"a", "b", "c"}
    assert depth["c"] == 0


def test_lineage_tree_draws_layers_edges_fitness_and_links() -> None:
    nodes = [node("a", fitness=0.5, href="/p/a"), node("b", "a", fitness=0.75), node("c", "a")]
    root = parse(svg.lineage_tree(nodes, label="lineage"))
    boxes = find(root, "rect")
    ys = {box.find("title").text.split(" ")[0]: float(box.get("y")) for box in boxes}
    assert ys["v-a"] < ys["v-b"] == ys["v-c"]
    edges = [el for el in find(root, "line") if el.get("class") == "edge"]
    assert len(edges) == 2
    assert {"fitness 0.5", "fitness 0.75", "fitness —"} <= set(texts(root))
    assert [a.get("href") for a in find(root, "a")] == ["/p/a"]


def test_a_crowded_generation_widens_the_tree_so_nodes_do_not_overlap() -> None:
    nodes = [node("root"), *(node(f"child{i}", "root") for i in range(30))]
    root = parse(svg.lineage_tree(nodes, label="wide", width=400))
    rects = find(root, "rect")
    top = min(float(r.get("y")) for r in rects)
    children = sorted(
        (float(r.get("x")), float(r.get("width"))) for r in rects if float(r.get("y")) > top
    )
    assert len(children) == 30
    for (x1, w1), (x2, _) in zip(children, children[1:], strict=False):
        assert x1 + w1 <= x2


def test_axis_labels_carry_the_digits_that_tell_the_ends_apart() -> None:
    assert svg.tick_labels([400.0, 401.0]) == ["400", "401"]
    assert svg.tick_labels([0.5, 0.50001]) == ["0.5", "0.50001"]
    assert svg.tick_labels([1, 2]) == ["1", "2"]
    root = parse(svg.line_chart({"a": [(1, 400.0), (2, 400.4)]}, label="close", x_is_time=False))
    assert {"400", "400.4"} <= set(texts(root))


def test_interval_chart_names_a_group_without_a_key() -> None:
    root = parse(
        svg.interval_chart([{"key": None, "mean": 1.0, "ci95": None, "count": 2}], label="x")
    )
    assert "(none)" in texts(root)


def test_a_marker_outside_the_bars_range_is_left_out_of_the_timeline() -> None:
    bar = {"label": "x", "start_ns": T0, "end_ns": T0 + SECOND, "status": "ok"}
    root = parse(svg.timeline([bar], label="t", markers=[(T0 + 3600 * SECOND, "much later")]))
    assert "much later" not in titles(root)
    (rect,) = find(root, "rect")
    assert float(rect.get("width")) > 100  # not squeezed by the far marker


def test_the_y_axis_makes_room_for_long_labels() -> None:
    root = parse(svg.line_chart({"a": [(1, 1), (2, 123456789)]}, label="big", x_is_time=False))
    (axis, *_) = find(root, "line")
    assert {"123,456,789"} <= set(texts(root))
    label_width = len("123,456,789") * svg.CHAR_WIDTH
    assert float(axis.get("x1")) >= label_width  # the first line drawn is the y axis
