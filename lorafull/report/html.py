"""STUDY_DIR/report/index.html: the report as one self-contained page (written by build_report).

    python -m lorafull.report STUDY_DIR     # then open STUDY_DIR/report/index.html

Sections: the study (name, when, runs by state), the results table (the columns of table.md, best score
marked), every figure of the report folder (PNGs inlined as data URIs, so the page needs no other file),
and per run its state, signature, settings (config.yaml) and links to its folder and files. Links are
relative (../runs/<run>/...), so the page works from a cluster's file browser and after rsync to a laptop.
"""
from __future__ import annotations

import base64
import html
import time
from collections import Counter
from pathlib import Path

from lorafull.report.rows import cell_text
from lorafull.runs import read_status

# figures first in this order, then any other PNG (the analyses add theirs)
FIGURE_ORDER = ("score_per_run.png", "category_scores.png", "score_vs_cost.png", "loss_curves.png")
RUN_FILES = ("config.yaml", "status.json", "metrics.jsonl", "responses.jsonl", "scores.jsonl",
             "judge_summary.json")
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}tr.best td{background:#e8f6e8}
img{max-width:100%;border:1px solid #ddd;margin:6px 0}pre{background:#f7f7f7;padding:8px;overflow:auto}
details{margin:4px 0}summary{cursor:pointer}"""


def _cell(value) -> str:
    return html.escape(cell_text(value))


def _table(rows: list[dict], cols: list[str]) -> str:
    scored = [r["score"] for r in rows if isinstance(r.get("score"), (int, float))]
    best = max(scored) if scored else None
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cls = ' class="best"' if best is not None and r.get("score") == best else ""
        cells = [f'<td><a href="#run-{html.escape(r["run"])}">{html.escape(r["run"])}</a></td>']
        cells += [f"<td>{_cell(r.get(c))}</td>" for c in cols[1:]]
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figures(report_dir: Path) -> str:
    pngs = sorted(report_dir.glob("*.png"), key=lambda p: (FIGURE_ORDER.index(p.name) if p.name in FIGURE_ORDER
                                                           else len(FIGURE_ORDER), p.name))
    parts = []
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f'<figure><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(png.name)}</figcaption></figure>")
    return "\n".join(parts) or "<p>No figures yet.</p>"


def _run_section(run_dir: Path) -> str:
    name = run_dir.name
    status = read_status(run_dir)
    links = " · ".join(f'<a href="../runs/{html.escape(name)}/{f}">{f}</a>' for f in RUN_FILES
                       if (run_dir / f).exists())
    config = (run_dir / "config.yaml").read_text(encoding="utf-8") if (run_dir / "config.yaml").exists() else ""
    detail = status.get("error") or ""
    return (f'<details id="run-{html.escape(name)}"><summary><b>{html.escape(name)}</b> '
            f"— {html.escape(str(status.get('state', '?')))}"
            f"{' (' + html.escape(str(status.get('stage'))) + ')' if status.get('stage') else ''}"
            f"{' — ' + html.escape(detail) if detail else ''}</summary>"
            f'<p><a href="../runs/{html.escape(name)}/">run folder</a> · {links}</p>'
            f"<pre>{html.escape(config)}</pre></details>")


def write_html(study_dir: Path, rows: list[dict], cols: list[str], report_dir: Path) -> Path:
    study_dir = Path(study_dir)
    states = Counter(str(r.get("state")) for r in rows)
    run_dirs = [study_dir / "runs" / r["run"] for r in rows]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(study_dir.name)} — lorafull report</title>
<style>{STYLE}</style></head><body>
<h1>Study {html.escape(study_dir.name)}</h1>
<p>{len(rows)} runs ({", ".join(f"{n} {html.escape(s)}" for s, n in sorted(states.items()))}); written
{time.strftime("%Y-%m-%d %H:%M")}. Also as <a href="table.csv">table.csv</a> and <a href="table.md">table.md</a>.</p>
<h2 id="results">Results</h2>
<p>score: the mean over the eval classes of the mean item score (math and code pooled into others);
the best run is highlighted.</p>
{_table(rows, cols)}
<h2 id="figures">Figures</h2>
{_figures(report_dir)}
<h2 id="runs">Runs</h2>
{"".join(_run_section(d) for d in run_dirs)}
</body></html>
"""
    out = report_dir / "index.html"
    tmp = out.with_name(".index.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
