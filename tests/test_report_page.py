"""The report of a demo-shaped study (13 run folders written by hand, tests/helpers/report_study.py): the
page as front door (every link resolves, the table fits a laptop screen with cells on one line, no
page-wide overflow at phone width, the page checked in a headless Chromium), table.md for people, and
every figure read at a glance (no two texts overlap, no text is cut off, no legend lies on the data)."""
from __future__ import annotations

import csv
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure

from helpers.browser import measure, need_chromium, screenshot
from helpers.report_study import make_demo_study, run_names


def _tick_labels(ax) -> list:
    """The tick labels matplotlib draws: those of ticks inside the view (others keep stale positions)."""
    out = []
    for axis in (ax.xaxis, ax.yaxis):
        low, high = sorted(axis.get_view_interval())
        span = high - low
        out += [t.label1 for t in axis.get_major_ticks() + axis.get_minor_ticks()
                if low - 1e-9 * span <= t.get_loc() <= high + 1e-9 * span]
    return out


def figure_problems(fig) -> list[str]:
    """Texts of a rendered figure that overlap one another or leave the figure, and legends over data."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    ticks = {id(t) for ax in fig.axes for t in (ax.xaxis.get_majorticklabels() + ax.xaxis.get_minorticklabels()
                                                + ax.yaxis.get_majorticklabels() + ax.yaxis.get_minorticklabels())}
    drawn = {id(t) for ax in fig.axes for t in _tick_labels(ax)}
    texts = [t for t in texts if id(t) not in ticks or id(t) in drawn]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    page = fig.bbox
    problems = [f"cut off: {a!r}" for a, b in boxes
                if b.x0 < page.x0 - 1 or b.y0 < page.y0 - 1 or b.x1 > page.x1 + 1 or b.y1 > page.y1 + 1]
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if w > 0.5 and h > 0.5:
                problems.append(f"overlap: {a!r} / {b!r}")
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None and legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)):
            problems.append("a legend inside the axes (over the data)")
    return problems


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> tuple[Path, dict]:
    """(STUDY_DIR/report, figure file name -> its problems) with every figure checked as it was saved."""
    from lorafull.report.build import build_report

    checked: dict[str, list[str]] = {}
    save = Figure.savefig

    def checking_savefig(fig, fname, *args, **kwargs):
        checked[Path(str(fname)).name] = figure_problems(fig)
        return save(fig, fname, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", checking_savefig)
        study = make_demo_study(tmp_path_factory.mktemp("report"))
        report = build_report(study)
    return report, checked


def test_every_figure_reads_at_a_glance(demo_report):
    report, checked = demo_report
    expected = {"score_per_run.png", "score_vs_cost.png", "category_scores.png", "loss_curves.png",
                "tradeoff.png", "spectrum_full_vs_lora.png", "sensitivity_data.png"}
    assert expected <= set(checked), sorted(checked)
    assert {p.name for p in report.glob("*.png")} >= expected
    assert {name: problems for name, problems in checked.items() if problems} == {}


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids, self.text = [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a":
            self.hrefs.append(a["href"])

    def handle_data(self, data):
        self.text.append(data)


def test_no_link_of_the_page_is_broken_and_pooled_rows_link_each_seed(demo_report):
    report, _ = demo_report
    page = Page()
    page.feed((report / "index.html").read_text(encoding="utf-8"))
    for href in page.hrefs:
        assert not href.startswith(("/", "file:", "http")), href  # relative: the page travels with the study
        if href.startswith("#"):
            assert href[1:] in page.ids, href
        else:
            assert (report / href).exists(), href
    for name, group, _ in run_names():  # every seed's folder is linked, and it is a run folder
        assert f"../runs/{name}/" in page.hrefs and (report / f"../runs/{name}/config.yaml").exists()
        assert f"#run-{group}" in page.hrefs
    text = " ".join(page.text)
    assert "How to read this" in text and "half-width of the 95 % interval" in text
    assert "— ?" not in text and "within noise" in text and "Comparisons" in text


def test_the_page_fits_a_laptop_and_a_phone_in_a_browser(demo_report, tmp_path):
    need_chromium()
    report, _ = demo_report
    page = report / "index.html"
    shot = screenshot(page, tmp_path / "page.png")
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    laptop = measure(page, 1366)
    assert laptop["table_width"] <= laptop["table_box"], laptop  # the key table needs no sideways scroll
    assert laptop["row_max"] <= 1.2 * laptop["row_min"], laptop  # no cell wrapped onto a second line
    assert laptop["page_height"] < 7000, laptop  # the figures grouped, the per-run spectra folded away
    phone = measure(page, 390)
    assert phone["page_width"] <= phone["viewport"], phone  # nothing wider than the screen but the table's box
    assert {"results", "comparisons", "figures", "runs"} <= set(phone["ids"])


def test_table_md_answers_the_question_and_csv_keeps_every_column(demo_report):
    report, _ = demo_report
    lines = (report / "table.md").read_text(encoding="utf-8").splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["run", "seeds", "method", "model", "num_samples", "trainable_params", "score", "learning",
                      "forgetting", "cpu_hours"]
    body = [line.split("|")[1].strip() for line in lines[2:9]]
    assert body == ["pretrain", "full-num_samples600", "full-num_samples2400", "lora-num_samples600",
                    "lora-num_samples2400", "ft_math_full", "ft_math_lora"]  # the base first, then the grid's order
    assert "Columns: `run`" in "\n".join(lines) and "half-width of the 95 % interval" in "\n".join(lines)
    comparisons = [line for line in lines if line.startswith("- `")]
    assert comparisons and not any(re.search(r"0\.000 ± 0\.000 \S 0\.000 ± 0\.000", c) for c in comparisons)
    with open(report / "table.csv", encoding="utf-8") as f:
        columns = next(csv.reader(f))
    assert len(columns) == len(set(columns)) and "others" not in columns  # math alone: others would repeat it
    assert {"math", "rewrite", "rank90", "score_low", "planned_h_per_epoch", "h_per_epoch_ratio"} <= set(columns)


def test_rows_of_a_study_that_lists_no_order_put_parents_before_children(tmp_path):
    from lorafull.report.rows import study_order

    built = [({"run": r, "_parent": p}, {}) for r, p in (("b", "a"), ("a", None), ("c", "b"), ("aa", "a"))]
    assert [row["run"] for row, _ in study_order(tmp_path, built)] == ["a", "aa", "b", "c"]
    (tmp_path / "study.yaml").write_text("runs: [c, b, a]\n")  # launch.grid's list wins where there is one
    assert [row["run"] for row, _ in study_order(tmp_path, built)] == ["c", "b", "a", "aa"]
