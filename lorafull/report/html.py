"""STUDY_DIR/report/index.html: the report as one self-contained page, the study's front door.

    python -m lorafull.report STUDY_DIR     # then open STUDY_DIR/report/index.html

Sections, top to bottom: the study (runs by state, the other report files); Results: a "how to read
this" box (each column and the ± intervals), the key columns of table.md in one table that fits a
laptop screen (cells on one line, best score marked, the seeds' numbers linking to each seed's run
folder), every column of table.csv behind a toggle; Comparisons: the trade-off figure when the
analyses drew one, then each comparison the report states (lorafull.report.groups), those within noise
greyed; Figures, grouped (scores, learning and forgetting, training, weight change, the per-run spectra
folded away); Runs: per run folder its state, signature, settings (config.yaml) and links to its files.

PNGs are inlined as data URIs, links are relative (../runs/<run>/...), the page has no script: it works
offline, from a cluster's file browser, after rsync to a laptop, in any browser and at phone width.
"""
from __future__ import annotations

import base64
import html
import re
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from lorafull.report.columns import DEFINITIONS, INTERVALS, key_columns
from lorafull.report.findings import selection_markdown
from lorafull.report.rows import cell_text
from lorafull.runs import read_status
from lorafull.stats import PAIRED_PROCEDURE, Estimate

RUN_FILES = ("config.yaml", "status.json", "metrics.jsonl", "responses.jsonl", "scores.jsonl",
             "judge_summary.json")
# (heading, figure names in order); the trade-off figure opens Comparisons instead
FIGURE_GROUPS = (
    ("Scores", ("score_per_run.png", "category_scores.png", "score_vs_cost.png")),
    ("Training", ("loss_curves.png", "sensitivity_lr.png", "sensitivity_data.png")),
    ("Weight change", ("spectrum_full_vs_lora.png",)),
)
PER_RUN_FIGURES = "spectrum_"  # spectrum_<run>.png: one per run, folded into small multiples
COMPARISON_FIGURES = "tradeoff"  # tradeoff*.png (the analyses' trade-off figure) opens Comparisons
STYLE = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:12px 16px;
max-width:1320px;color:#222;line-height:1.4}h1{font-size:1.5em;margin:.3em 0}h2{margin-top:1.4em;
border-bottom:1px solid #ddd}nav a{margin-right:1em}.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right;white-space:nowrap}th{background:#f0f0f0;cursor:help}td:first-child,th:first-child{text-align:left}
td.t,th.t{text-align:left}tr.best td{background:#e8f6e8}.pm{color:#666;font-size:.92em}.seedlinks a{margin-right:.35em}
.howto{background:#f6f8fb;border:1px solid #d6deea;padding:6px 12px;margin:8px 0}.howto dt{font-weight:600;
float:left;clear:left;width:11em}.howto dd{margin:0 0 3px 11.5em}.howto p{margin:6px 0}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,560px),1fr));gap:10px}
.thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,300px),1fr));gap:6px}
figure{margin:0}img{max-width:100%;height:auto;border:1px solid #ddd}figcaption{font-size:12px;color:#555}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}details{margin:4px 0}summary{cursor:pointer}
li.noise{color:#777}ul.cmp li{margin:2px 0}code{background:#f2f2f2;padding:0 3px}
@media (max-width:640px){body{padding:8px}.howto dt{float:none;width:auto}.howto dd{margin:0 0 4px 1em}}"""


def _cell(value) -> str:
    """A cell's text on one line; an interval's ± part set smaller."""
    text = html.escape(cell_text(value))
    if isinstance(value, Estimate) and " ± " in text:
        mean, half = text.split(" ± ", 1)
        return f'{mean}<span class="pm"> ± {half}</span>'
    return text


def _members(row: dict, per_run: list[dict]) -> list[dict]:
    """The run folders a (pooled) row stands for."""
    return [r for r in per_run if (r.get("_group") or r["run"]) == row["run"]] or [row]


def _seed_links(row: dict, per_run: list[dict]) -> str:
    links = [f'<a href="../runs/{html.escape(m["run"])}/" title="{html.escape(m["run"])}">'
             f'{html.escape(str(m.get("_seed") if m.get("_seed") is not None else m["run"]))}</a>'
             for m in _members(row, per_run)]
    return f'<span class="seedlinks">{"".join(links)}</span>'


def _table(rows: list[dict], cols: list[str], per_run: list[dict], best: set[int]) -> str:
    words = {c for c in cols if c != "seeds" and any(isinstance(r.get(c), str) for r in rows)}  # left-aligned
    head = "".join(f'<th{" class=t" if c in words else ""} title="{html.escape(DEFINITIONS.get(c, c))}">'
                   f"{html.escape(c)}</th>" for c in cols)
    body = []
    for i, r in enumerate(rows):
        cells = [f'<td><a href="#run-{html.escape(r["run"])}">{html.escape(r["run"])}</a></td>']
        for c in cols[1:]:
            text = isinstance(r.get(c), str) and c != "seeds"  # words read from the left, numbers from the right
            cells.append(f"<td>{_seed_links(r, per_run)}</td>" if c == "seeds" else
                         f'<td class="t">{_cell(r.get(c))}</td>' if text else f"<td>{_cell(r.get(c))}</td>")
        mark = ' class="best"' if i in best else ""
        body.append(f"<tr{mark}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _how_to_read(cols: list[str]) -> str:
    terms = "".join(f"<dt>{html.escape(c)}</dt><dd>{html.escape(DEFINITIONS[c])}</dd>" for c in cols
                    if c in DEFINITIONS)
    return (f'<details class="howto" open><summary><b>How to read this</b></summary><dl>{terms}</dl>'
            f"<p>{html.escape(INTERVALS)} The seeds column links to each seed's run folder; the best score is "
            "highlighted.</p></details>")


def _results(rows: list[dict], per_run: list[dict], all_cols: list[str], notes: list[str]) -> str:
    key = key_columns(rows)
    scores = [float(r["score"]) for r in rows if isinstance(r.get("score"), (int, float))]
    best = {i for i, r in enumerate(rows) if scores and isinstance(r.get("score"), (int, float))
            and float(r["score"]) == max(scores)}
    rest = [c for c in all_cols if c != "run"]
    return (_table(rows, key, per_run, best) + "".join(f"<p><b>{html.escape(n)}</b></p>" for n in notes)
            + _how_to_read(key)
            + f"<details><summary>All {len(rest)} columns (as in table.csv)</summary>"
            + _table(rows, ["run"] + rest, per_run, best) + "</details>")


def _inline(line: str) -> str:
    """A Markdown line as HTML: `code`, **bold**."""
    text = html.escape(line[2:] if line.startswith("- ") else line)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _markdown(lines: list[str]) -> str:
    """The few Markdown shapes the findings use: headings (left out: the page has its own), paragraphs,
    bullets and pipe tables."""
    out, table = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                table.append([_inline(c.strip()) for c in line.strip().strip("|").split("|")])
            continue
        if table:
            head, *body = table
            out.append('<div class="scroll"><table><thead><tr>' + "".join(f"<th class=t>{c}</th>" for c in head)
                       + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f'<td class="t">{c}</td>' for c in r)
                                                          + "</tr>" for r in body) + "</tbody></table></div>")
            table = []
        if line.strip() and not line.startswith("#"):
            out.append(f"<p>{'• ' if line.startswith('- ') else ''}{_inline(line)}</p>")
    return "".join(out)


def _statement(item) -> tuple[str, bool]:
    """(text, within noise) of a comparison: a structured item (lorafull.report.findings) or a line."""
    if isinstance(item, str):
        return item, "within noise" in item
    noisy = item.get("within_noise", (item.get("difference") or {}).get("within_noise"))
    if item.get("finding") is not None:
        noisy = not item["finding"]
    return str(item.get("text", item)), bool(noisy if noisy is not None else "within noise" in str(item.get("text")))


def _statements(items: list, what: str) -> str:
    found = [t for t, noisy in map(_statement, items) if not noisy]
    noise = [t for t, noisy in map(_statement, items) if noisy]
    parts = ['<ul class="cmp">' + "".join(f"<li>{_inline(t)}</li>" for t in found) + "</ul>"] if found else []
    if noise:
        parts.append(f"<details><summary>{len(noise)} {what} within noise (not a finding)</summary>"
                     '<ul class="cmp">' + "".join(f'<li class="noise">{_inline(t)}</li>' for t in noise)
                     + "</ul></details>")
    return "".join(parts)


def _comparisons(findings: dict, report_dir: Path) -> str:
    """The trade-off figure, the sweep's selection, the paired comparisons, forgetting at matched learning."""
    figs = sorted(report_dir.glob(f"{COMPARISON_FIGURES}*.png"))
    items = findings.get("comparisons") or []
    pairwise = [c for c in items if isinstance(c, str) or c.get("kind", "comparison") == "comparison"]
    matched = [c for c in items if not isinstance(c, str) and c.get("kind", "comparison") != "comparison"]
    parts = [_figure_grid(figs)] if figs else []
    if findings.get("selection"):
        parts.append("<details><summary>Sweep and selection</summary>"
                     + _markdown(selection_markdown(findings["selection"])) + "</details>")
    if not items:
        parts.append("<p>No two rows differ in few enough settings to compare.</p>")
    if pairwise:
        parts.append(f"<p>Each is a paired difference: {html.escape(PAIRED_PROCEDURE)}.</p>"
                     + _statements(pairwise, "comparisons"))
    if matched:
        parts.append("<h3>Forgetting at matched learning</h3>" + _statements(matched, "levels"))
    return "".join(parts)


def _img(png: Path, caption: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _figure_grid(pngs: list[Path], cls: str = "figs", caption=lambda p: p.name) -> str:
    return f'<div class="{cls}">' + "".join(_img(p, caption(p)) for p in pngs) + "</div>"


def _figures(report_dir: Path) -> str:
    pngs = {p.name: p for p in report_dir.glob("*.png")}
    used, parts = set(), []
    for heading, names in FIGURE_GROUPS:
        group = [pngs[n] for n in names if n in pngs]
        if heading == "Weight change":
            per_run = sorted(p for n, p in pngs.items() if n.startswith(PER_RUN_FIGURES) and n not in names)
            used |= {p.name for p in per_run}
        else:
            per_run = []
        if not group and not per_run:
            continue
        used |= {p.name for p in group}
        parts.append(f"<h3>{heading}</h3>" + (_figure_grid(group) if group else ""))
        if per_run:
            parts.append(f"<details><summary>Per-run spectra ({len(per_run)})</summary>"
                         + _figure_grid(per_run, "thumbs", lambda p: p.stem[len(PER_RUN_FIGURES):]) + "</details>")
    rest = sorted(p for n, p in pngs.items() if n not in used and not n.startswith(COMPARISON_FIGURES))
    if rest:
        parts.append("<h3>Other</h3>" + _figure_grid(rest))
    return "\n".join(parts) or "<p>No figures yet.</p>"


def _run_section(run_dir: Path) -> str:
    name = run_dir.name
    status = read_status(run_dir)
    links = " · ".join(f'<a href="../runs/{html.escape(name)}/{f}">{f}</a>' for f in RUN_FILES
                       if (run_dir / f).exists())
    config = (run_dir / "config.yaml").read_text(encoding="utf-8") if (run_dir / "config.yaml").exists() else ""
    detail = status.get("error") or ""
    state = status.get("state") or ("new" if not status else "?")
    return (f'<details id="run-{html.escape(name)}"><summary><b>{html.escape(name)}</b> '
            f"— {html.escape(str(state))}"
            f"{' (' + html.escape(str(status.get('stage'))) + ')' if status.get('stage') else ''}"
            f"{' — ' + html.escape(detail) if detail else ''}</summary>"
            f'<p><a href="../runs/{html.escape(name)}/">run folder</a> · {links}</p>'
            f"<pre>{html.escape(config)}</pre></details>")


def _runs(study_dir: Path, rows: list[dict], per_run: list[dict]) -> str:
    """Per row of the table, the run folders it stands for (each seed's), under the row's anchor."""
    parts = []
    for row in rows:
        members = _members(row, per_run)
        inner = "".join(_run_section(study_dir / "runs" / m["run"]) for m in members)
        if len(members) == 1 and members[0]["run"] == row["run"]:
            parts.append(inner)
        else:
            parts.append(f'<div id="run-{html.escape(row["run"])}"><h3>{html.escape(row["run"])} '
                         f"({len(members)} seeds)</h3>{inner}</div>")
    return "".join(parts)


def write_html(study_dir: Path, rows: list[dict], per_run: list[dict], report_dir: Path,
               findings: Optional[dict] = None, notes: list[str] = ()) -> Path:
    """rows: table.md's rows (pooled over seeds); per_run: one row per run folder; findings: the sweep,
    comparisons and trade-off (lorafull.report.findings.study_findings)."""
    study_dir = Path(study_dir)
    states = Counter(str(read_status(study_dir / "runs" / r["run"]).get("state") or "new") for r in per_run)
    all_cols = [c for c in dict.fromkeys(k for r in rows for k in r) if not c.startswith("_")]
    files = [f for f in ("table.md", "table.csv", "runs.md", "runs.csv") if (report_dir / f).exists()]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(study_dir.name)} — lorafull report</title><style>{STYLE}</style></head><body>
<h1>Study {html.escape(study_dir.name)}</h1>
<p>{len(per_run)} runs ({", ".join(f"{n} {html.escape(s)}" for s, n in sorted(states.items()))}) in {len(rows)}
rows; written {time.strftime("%Y-%m-%d %H:%M")}. Also as {" · ".join(f'<a href="{f}">{f}</a>' for f in files)}.</p>
<nav><a href="#results">Results</a><a href="#comparisons">Comparisons</a><a href="#figures">Figures</a>
<a href="#runs">Runs</a></nav>
<section id="results"><h2>Results</h2>
{_results(rows, per_run, all_cols, list(notes))}</section>
<section id="comparisons"><h2>Comparisons</h2>
{_comparisons(findings or {}, report_dir)}</section>
<section id="figures"><h2>Figures</h2>
{_figures(report_dir)}</section>
<section id="runs"><h2>Runs</h2>
{_runs(study_dir, rows, per_run)}</section>
</body></html>
"""
    out = report_dir / "index.html"
    tmp = out.with_name(".index.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
