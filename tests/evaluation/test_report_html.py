"""The HTML report: its tables, chart and thumbnails as a parser reads them, names escaped, the
DAVIS strips read back from the written masks with the worst-J frame, and `mer_jax.evaluate`
writing it beside summary.json."""

import base64
import html.parser
import json

import cv2
import numpy as np
import pytest

from configs import davis as davis_config
from mer_jax import evaluate
from mer_jax.evaluation import masks_io, report_html, thumbnails
from mer_jax.evaluation.benchmarks.davis import data as davis_data
from mer_jax.evaluation.benchmarks.davis import evaluator as davis
from tests import fake_data

EVIL = "<script>alert(1)</script>"


class Parsed(html.parser.HTMLParser):
    """What a browser would see: tables (rows of (text, class) cells), images, SVG bars, tags."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.tables, self.images, self.bars, self.text = [], [], [], [], []
        self._cell = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ["", attrs.get("class", "")]
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "rect":
            self.bars.append(attrs)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell[0] += data

    def row(self, table: int, name: str) -> list[tuple[str, str]]:
        """The cells after the row header `name` of table `table`."""
        [row] = [row for row in self.tables[table] if row and row[0][0] == name]
        return row[1:]


def image(height, width, value):
    return np.full((height, width, 3), value, np.uint8)


def page(with_floors=True):
    columns = {
        "trained": {"J&F-Mean": 0.61234, "J-Mean": 0.6, "F-Mean": float("nan"),
                    "per_object": {"bear_1": 0.7, f"{EVIL}_1": 0.25}},
        "copy floor": {"J&F-Mean": 0.5, "J-Mean": 0.4, "F-Mean": 0.6, "per_object": {"bear_1": 0.5, f"{EVIL}_1": 0.3}},
        "lab floor": {"J&F-Mean": 0.2, "J-Mean": 0.1, "F-Mean": 0.3, "per_object": {"bear_1": 0.4, f"{EVIL}_1": 0.2}},
    }  # fmt: skip
    if not with_floors:
        columns = {"trained": columns["trained"]}
    strips = (
        report_html.Strip("bear", tuple(thumbnails.Thumbnail(image(9, 16, 40 * k), f"frame {k}") for k in range(4))),
        report_html.Strip(EVIL, (thumbnails.Thumbnail(image(9, 16, 0), f"worst {EVIL}"),)),
        report_html.Strip("far", note="no thumbnails: written elsewhere"),
    )
    return report_html.Page(
        title=f"DAVIS {EVIL}",
        columns=columns,
        headline_keys=("J&F-Mean", "J-Mean", "F-Mean"),
        row_label="object",
        metrics=("J&F",),
        rows=report_html.rows_of(columns, "per_object", "J&F"),
        strips=strips,
    )


def test_tables_hold_every_row_and_floor_to_3_decimals_and_mark_the_model_against_the_floors():
    parsed = Parsed(report_html.render(page()))
    headline, rows = 0, 1
    assert parsed.tables[headline][0] == [("", ""), ("J&F-Mean", ""), ("J-Mean", ""), ("F-Mean", "")]
    assert parsed.row(headline, "trained") == [("0.612", "num above"), ("0.600", "num above"), ("-", "num")]
    assert [cell[0] for cell in parsed.row(headline, "copy floor")] == ["0.500", "0.400", "0.600"]
    assert [cell[0] for cell in parsed.row(headline, "lab floor")] == ["0.200", "0.100", "0.300"]
    assert [cell[0] for cell in parsed.tables[rows][1]] == ["trained", "copy floor", "lab floor"]
    assert parsed.row(rows, "bear_1") == [("0.700", "num above"), ("0.500", "num"), ("0.400", "num")]
    assert parsed.row(rows, f"{EVIL}_1") == [("0.250", "num below"), ("0.300", "num"), ("0.200", "num")]


def test_names_are_escaped_and_nothing_is_fetched():
    text = report_html.render(page())
    parsed = Parsed(text)
    assert "script" not in parsed.tags and EVIL not in text and "&lt;script&gt;" in text
    assert f"DAVIS {EVIL}" in "".join(parsed.text)  # Shown as text, as written.
    assert not {"link", "iframe", "object", "embed"} & set(parsed.tags)
    assert "src=" not in text.replace('src="data:image/jpeg;base64,', "") and "href" not in text


def test_one_embedded_jpeg_per_thumbnail_and_a_note_where_there_is_none():
    text = report_html.render(page())
    parsed = Parsed(text)
    assert len(parsed.images) == 5
    for attrs in parsed.images:
        assert attrs["src"].startswith("data:image/jpeg;base64,") and (attrs["width"], attrs["height"]) == ("16", "9")
        decoded = cv2.imdecode(np.frombuffer(base64.b64decode(attrs["src"].split(",", 1)[1]), np.uint8), 1)
        assert decoded.shape == (9, 16, 3)
    assert parsed.images[2]["alt"] == "bear: frame 2"
    assert "no thumbnails: written elsewhere" in parsed.text


def test_the_chart_has_a_bar_per_row_and_column_on_a_0_to_1_axis():
    parsed = Parsed(report_html.render(page()))
    assert "svg" in parsed.tags
    bars = [bar for bar in parsed.bars if bar["height"] != "10"]  # The legend's squares are 10 px.
    assert len(bars) == 6  # 2 rows x 3 columns
    widths = [float(bar["width"]) for bar in bars]
    plot = report_html._CHART_PLOT_PX
    assert widths == pytest.approx([0.7 * plot, 0.5 * plot, 0.4 * plot, 0.25 * plot, 0.3 * plot, 0.2 * plot], abs=0.1)


def test_without_floors_there_are_no_floor_columns():
    text = report_html.render(page(with_floors=False))
    parsed = Parsed(text)
    assert "floor" not in "".join(cell[0] for table in parsed.tables for row in table for cell in row)
    assert parsed.row(1, "bear_1") == [("0.700", "num")]
    assert "without floors" in text


def test_frame_jaccard_is_the_mean_over_objects_of_each_scored_frame():
    truth = np.zeros((4, 2, 4), np.uint8)
    truth[:, :, :2], truth[:, :, 2:] = 1, 2
    predicted = truth.copy()
    predicted[1, 0, :2] = 0  # Object 1 loses half its pixels: J 0.5, object 2 stays 1.
    predicted[2, :, 2:] = 0  # Object 2 is lost: J 0, object 1 stays 1.
    np.testing.assert_array_equal(davis.frame_jaccard(truth, predicted), [np.nan, 0.75, 0.5, np.nan])


@pytest.fixture
def davis_tree(tmp_path):
    root = tmp_path / "DAVIS"
    fake_data.davis_tree(str(root), num_sequences=2, num_frames=6)
    return root


def test_a_davis_strip_shows_the_written_masks_and_the_frame_a_lost_object_makes_worst(davis_tree, tmp_path):
    truth, _, names = davis_data.read_ground_truth(davis_tree, "seq0", "2017")
    assert set(np.unique(truth[0])) == {0, 1, 2}
    output = tmp_path / "out"
    for t, name in enumerate(names):  # The ground truth itself, but object 1 lost in frame 2.
        masks_io.write_mask(
            output / "seq0" / f"{name}.png", np.where(truth[t] == 1, 0, truth[t]) if t == 2 else truth[t]
        )
    evaluator = davis.Evaluator(
        davis_root=str(davis_tree), year="2017", subset="val", sequences=None, save_overlays=False
    )
    scores = {"J&F-Mean": 0.8, "J-Mean": 0.8, "F-Mean": 0.8, "per_object": {"seq0_1": 0.9, "seq0_2": 1.0}}
    built = evaluator.report_page({"trained": scores}, str(output))
    seq0, seq1 = built.strips
    assert [picture.caption for picture in seq0.pictures] == [
        "first, frame 0", "middle, frame 3, J 1.000", "last, frame 5", "worst, frame 2, J 0.500",
    ]  # fmt: skip
    frame = fake_data.videos(2, num_frames=6)[0].frames[2]
    assert seq0.pictures[3].image.shape == frame.shape  # 64 px wide: kept at its size.
    assert not seq1.pictures and "No results for sequence 'seq1'" in seq1.note  # Another process's.


def test_evaluate_writes_the_report_beside_the_summary(davis_tree, tmp_path):
    config = davis_config.get_config("debug")
    config.update(dict(davis_root=str(davis_tree), output=str(tmp_path / "out")))
    summary = evaluate.evaluate(config)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    parsed = Parsed((tmp_path / "out" / "report.html").read_text())
    assert [cell[0] for cell in parsed.tables[1][1]] == ["lab", "copy floor", "lab floor"]
    for name, value in saved["results"]["per_object"].items():
        copy = saved["floors"]["copy"]["per_object"][name]
        assert [cell[0] for cell in parsed.row(1, name)] == [f"{value:.3f}", f"{copy:.3f}", f"{value:.3f}"]
    assert len(parsed.row(1, "seq1_2")) == 3 and len(parsed.tables[1]) == 2 + summary["results"]["objects"]
    assert len(parsed.images) == 2 * 4  # Two sequences: first, middle, last, worst.

    config.update(dict(floors=False, output=str(tmp_path / "alone")))
    evaluate.evaluate(config)
    parsed = Parsed((tmp_path / "alone" / "report.html").read_text())
    assert [cell[0] for cell in parsed.tables[1][1]] == ["lab"] and len(parsed.tables[0]) == 2
