"""The visual report of one evaluation: a self-contained `<output>/report.html`, written by
`python -m mer_jax.evaluate` (process 0, after summary.json).

One HTML file that fetches nothing: inline CSS, the chart as inline SVG, the thumbnails as base64
JPEG data URIs (~160 px wide, about 7 KB each: a 30-sequence DAVIS report is under 1 MB). It
holds the headline numbers of the model beside its floors (`copy`, `lab`; without floor columns
when `--config.floors=False`), a table with one row per scored unit and one column per metric and
encoder (the model's cell green where it clears every floor, red where it is below one), a bar
chart of the rows' first metric, and per video a strip of overlay thumbnails (`thumbnails.py`:
first, middle and last frame and the frame with the worst score). Every name is HTML-escaped;
numbers have 3 decimals ('-' where undefined).

What a benchmark shows is its evaluator's `report_page` (`benchmark_run.py`):
  - DAVIS: rows are objects `<sequence>_<id>` (J&F); each sequence's strip is read back from the
    written masks, its worst frame the one of lowest J (mean over the objects), computed from
    them and the ground truth with `benchmarks/davis/metrics.py`.
  - JHMDB: rows are videos (PCK@0.1, PCK@0.2); strips draw the predicted joints
    (`jhmdb_predictions.npz`), the worst frame by PCK@0.1.
  - TAP-Vid: rows are videos (AJ, <d_avg, OA); strips draw the predicted points
    (`tapvid_predictions.npz`), the worst frame by the Average Jaccard of its points.
  - synthetic: rows are objects (J&F), no strips: its held-out videos live in memory and no mask
    is written.
  - YouTube-VOS: no report. Its validation ground truth is not public (the server scores the
    submission), so there is no number per video to tabulate or frame to call worst; the
    command says so, and `save_overlays` shows the masks.
A strip whose files are missing (another process of a multi-process run wrote them to a folder
this one does not see) says so in place of its thumbnails.
"""

import base64
import html
import math
import os
from typing import Any, Mapping, NamedTuple

import cv2
import numpy as np

from mer_jax.evaluation import thumbnails

_JPEG_QUALITY = 85
_COLOURS = ("#1f77b4", "#8c8c8c", "#ff7f0e", "#2ca02c", "#9467bd")  # The model's, then each floor's.
_CHART_LABEL_PX, _CHART_PLOT_PX, _BAR_PX = 190, 640, 7

_STYLE = (
    """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; } h3 { font-size: 15px; margin: 14px 0 4px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
td.num { text-align: right; } td.above { background: #d9f2d9; } td.below { background: #f8d7d7; }
th { background: #f2f2f2; }
.strip { display: flex; flex-wrap: wrap; gap: 6px; }
figure { margin: 0; width: %dpx; } figcaption { font-size: 11px; color: #555; }
img { display: block; border: 1px solid #bbb; }
.note { color: #666; font-style: italic; }
"""
    % thumbnails.WIDTH
)


class Strip(NamedTuple):
    """One video's thumbnails, or why it has none.

    Attributes:
      name: the video's (sequence's) name.
      pictures: its thumbnails, in order.
      note: why there are no thumbnails ('' when there are).
    """

    name: str
    pictures: tuple[thumbnails.Thumbnail, ...] = ()
    note: str = ""


class Page(NamedTuple):
    """What a report shows.

    Attributes:
      title: the heading (the data, the model, the preset).
      columns: {column: the scores the benchmark returned}: the model first, then each floor.
      headline_keys: the overall numbers shown for each column (the benchmark's HEADLINE_KEYS).
      row_label: what a row is ('object', 'video').
      metrics: the numbers of each row (the chart shows the first).
      rows: {row: {column: {metric: number or None}}}, in the order shown (`rows_of`).
      strips: one per video.
      notes: sentences printed under the title.
    """

    title: str
    columns: Mapping[str, Mapping[str, Any]]
    headline_keys: tuple[str, ...]
    row_label: str
    metrics: tuple[str, ...]
    rows: Mapping[str, Mapping[str, Mapping[str, float | None]]]
    strips: tuple[Strip, ...] = ()
    notes: tuple[str, ...] = ()


def rows_of(columns: Mapping[str, Mapping[str, Any]], key: str, metric: str | None = None) -> dict[str, dict]:
    """A page's rows {row: {column: {metric: number}}} from each column's scores[key]: {row:
    {metric: number}}, or {row: number} when `metric` names that number. Rows come in the first
    column's order (then any other column's new ones); a row a column lacks is {} there."""
    per_column = {
        column: {row: value if metric is None else {metric: value} for row, value in scores[key].items()}
        for column, scores in columns.items()
    }
    names = list(dict.fromkeys(row for rows in per_column.values() for row in rows))
    return {row: {column: dict(rows.get(row, {})) for column, rows in per_column.items()} for row in names}


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _finite(value: Any) -> float | None:
    """value as a float, or None where it is missing or not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def number(value: Any) -> str:
    """A score with 3 decimals; '-' where missing or undefined (NaN)."""
    value = _finite(value)
    return "-" if value is None else f"{value:.3f}"


def _cell_class(model: Any, floors: list[Any]) -> str:
    """A number cell's class: 'num above' where the model's number clears every floor's, 'num
    below' where it is under one, else 'num' (also for the floors' own cells: floors=[])."""
    model, floors = _finite(model), [value for value in map(_finite, floors) if value is not None]
    if model is None or not floors or model == max(floors):
        return "num"
    return "num above" if model > max(floors) else "num below"


def data_uri(image: np.ndarray) -> str:
    """An RGB image [h, w, 3] uint8 as a `data:image/jpeg;base64,...` URI."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])  # fmt: skip
    if not ok:
        raise ValueError(f"cannot encode a {np.shape(image)} image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def _headline_table(page: Page) -> str:
    header = "".join(f"<th>{_esc(key)}</th>" for key in page.headline_keys)
    lines = [f"<table><tr><th></th>{header}</tr>"]
    columns = list(page.columns.values())
    for k, (column, scores) in enumerate(page.columns.items()):
        cells = []
        for key in page.headline_keys:
            floors = [floor.get(key) for floor in columns[1:]] if k == 0 else []
            cells.append(f'<td class="{_cell_class(scores.get(key), floors)}">{number(scores.get(key))}</td>')
        lines.append(f"<tr><th>{_esc(column)}</th>{''.join(cells)}</tr>")
    return "\n".join([*lines, "</table>"])


def _rows_table(page: Page) -> str:
    columns = list(page.columns)
    top = "".join(f'<th colspan="{len(columns)}">{_esc(metric)}</th>' for metric in page.metrics)
    names = "".join(f"<th>{_esc(column)}</th>" for _ in page.metrics for column in columns)
    lines = [f'<table><tr><th rowspan="2">{_esc(page.row_label)}</th>{top}</tr>', f"<tr>{names}</tr>"]
    for row, by_column in page.rows.items():
        cells = []
        for metric in page.metrics:
            values = [by_column.get(column, {}).get(metric) for column in columns]
            classes = [_cell_class(values[0], values[1:]), *["num"] * (len(values) - 1)]
            cells += [f'<td class="{kind}">{number(value)}</td>' for value, kind in zip(values, classes)]
        lines.append(f"<tr><th>{_esc(row)}</th>{''.join(cells)}</tr>")
    return "\n".join([*lines, "</table>"])


def bar_chart(page: Page) -> str:
    """An inline SVG: per row, one horizontal bar per column of the page's first metric, on a
    0-to-1 axis (wider when a number exceeds 1); a missing number draws no bar."""
    metric, columns = page.metrics[0], list(page.columns)
    values = [[_finite(by_column.get(c, {}).get(metric)) for c in columns] for by_column in page.rows.values()]
    top = max([1.0, *[v for row in values for v in row if v is not None]])
    group = _BAR_PX * len(columns) + 8
    legend, axis = 22, 18
    height = legend + axis + group * len(values) + 4
    width = _CHART_LABEL_PX + _CHART_PLOT_PX + 20

    def x(value: float) -> float:
        return _CHART_LABEL_PX + _CHART_PLOT_PX * max(value, 0.0) / top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11" role="img">']
    parts.append(f"<title>{_esc(metric)} per {_esc(page.row_label)}</title>")
    for k, column in enumerate(columns):
        left = _CHART_LABEL_PX + 150 * k
        parts.append(f'<rect x="{left}" y="4" width="10" height="10" fill="{_COLOURS[k % len(_COLOURS)]}"/>')
        parts.append(f'<text x="{left + 14}" y="13">{_esc(column)}</text>')
    for tick in np.linspace(0.0, top, 5):
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{legend + axis - 4}" y2="{height}" '
                     'stroke="#ddd"/>')  # fmt: skip
        parts.append(f'<text x="{x(tick):.1f}" y="{legend + axis - 7}" text-anchor="middle">{tick:.2f}</text>')
    for i, (row, row_values) in enumerate(zip(page.rows, values)):
        y0 = legend + axis + i * group
        name = row if len(row) <= 28 else row[:27] + "\u2026"
        parts.append(f'<text x="{_CHART_LABEL_PX - 6}" y="{y0 + group / 2 + 3:.1f}" text-anchor="end">'
                     f"<title>{_esc(row)}</title>{_esc(name)}</text>")  # fmt: skip
        for k, (column, value) in enumerate(zip(columns, row_values)):
            if value is None:
                continue
            parts.append(
                f'<rect x="{_CHART_LABEL_PX}" y="{y0 + 4 + k * _BAR_PX}" width="{x(value) - _CHART_LABEL_PX:.1f}" '
                f'height="{_BAR_PX - 1}" fill="{_COLOURS[k % len(_COLOURS)]}">'
                f"<title>{_esc(row)}, {_esc(column)}: {number(value)}</title></rect>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _strip(strip: Strip) -> str:
    lines = [f"<h3>{_esc(strip.name)}</h3>"]
    if not strip.pictures:
        return "\n".join([*lines, f'<p class="note">{_esc(strip.note or "no thumbnails")}</p>'])
    lines.append('<div class="strip">')
    for thumbnail in strip.pictures:
        height, width = thumbnail.image.shape[:2]
        lines.append(
            f'<figure><img src="{data_uri(thumbnail.image)}" width="{width}" height="{height}" '
            f'alt="{_esc(strip.name)}: {_esc(thumbnail.caption)}"><figcaption>{_esc(thumbnail.caption)}</figcaption>'
            "</figure>"
        )
    return "\n".join([*lines, "</div>"])


def render(page: Page) -> str:
    """The report of `page` as one HTML document."""
    floors = len(page.columns) > 1
    legend = (
        "The model's cell is green where it clears every floor and red where it is below one."
        if floors
        else "Scored without floors (--config.floors=False)."
    )
    body = [f"<h1>{_esc(page.title)}</h1>", *(f"<p>{_esc(note)}</p>" for note in page.notes)]
    body += ["<h2>Overall</h2>", _headline_table(page)]
    if page.rows:
        body += [f"<h2>{_esc(page.metrics[0])} per {_esc(page.row_label)}</h2>", bar_chart(page)]
        body += [f"<h2>Per {_esc(page.row_label)}</h2>", f"<p>{_esc(legend)}</p>", _rows_table(page)]
    if page.strips:
        body += ["<h2>Overlays</h2>", *(_strip(strip) for strip in page.strips)]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{_esc(page.title)}</title><style>{_STYLE}</style></head>",
            "<body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def write(path: str, page: Page) -> None:
    """Writes `render(page)` to path (UTF-8), creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(page))
