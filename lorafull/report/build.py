"""A study's report: every run folder -> STUDY_DIR/report/table.md, table.csv, PNG figures and index.html.

    python -m lorafull.report STUDY_DIR

One row per run (per group of seeds when study.seeds lists several: runs.md has each seed's row), in
the study's order (the untuned base first, then the grid's order). table.md is for people: the columns
that answer the study's question (lorafull.report.columns: method, size, score, learning, forgetting,
cost), what they mean, and the comparisons between rows. table.csv has every column: settings, the
average score (macro: mean over the paper's categories -- math and code pooled into "others" -- of the
mean over scored items), every category, and the cost columns the paper puts beside the score: added
parameters, training hours per epoch, GPU-hours (CPU-hours on a CPU: wall time x processes), tokens/s,
peak memory, judge cost, and the number of unscored items; beside them the planned hours per epoch and
peak memory (from STUDY_DIR/launch/plan.json) and measured / planned (lorafull.report.planned).
lorafull.analysis.extend_report may add columns and figures. Runs not trained, generated or judged yet
appear with empty cells: the report can be built at any time. Every score is shown as mean ±
half-width of its 95 % bootstrap interval (lorafull.stats; table.csv has the bounds as <column>_low /
_high), and table.md ends with the sweep's selection and the paired comparisons (lorafull.report.findings:
also comparisons.json, tradeoff.json, tradeoff.png).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from lorafull.report.html import write_html
from lorafull.report.plots import plot_categories, plot_losses, plot_score_vs_cost, plot_scores
from lorafull.report.columns import DEFINITIONS, INTERVALS, key_columns
from lorafull.report.findings import findings_markdown, study_findings
from lorafull.report.groups import group_rows
from lorafull.report.rows import cell_text, collect_rows, fingerprint_note, loss_curve
from lorafull.stats import Estimate
from lorafull.runs import command_parser, error_line

def columns_of(rows: list[dict]) -> list[str]:
    """Union of the rows' keys in first-seen order (every key becomes a column, but the hidden "_" ones)."""
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols and not k.startswith("_")]
    return cols


def _cell(value) -> str:
    return cell_text(value).replace("|", "\\|")  # a pipe would end the Markdown cell


def write_markdown(rows: list[dict], cols: list[str], path: Path, notes: list[str] = ()) -> Path:
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    path.write_text("\n".join(lines + list(notes)) + "\n", encoding="utf-8")
    return path


def _csv_columns(rows: list[dict], cols: list[str]) -> list[str]:
    """Every column, and after each one that carries an interval somewhere, its _low and _high."""
    out = []
    for c in cols:
        out.append(c)
        if any(isinstance(r.get(c), Estimate) and r[c].low is not None for r in rows):
            out += [f"{c}_low", f"{c}_high"]
    return out


def _csv_value(row: dict, col: str):
    for suffix, attr in (("_low", "low"), ("_high", "high")):
        base = col[: -len(suffix)]
        if col.endswith(suffix) and isinstance(row.get(base), Estimate):
            return getattr(row[base], attr)
    value = row.get(col)
    return float(value) if isinstance(value, Estimate) else value


def write_csv(rows: list[dict], cols: list[str], path: Path) -> Path:
    cols = _csv_columns(rows, cols)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(cols)
        for r in rows:
            writer.writerow(["" if _csv_value(r, c) is None else _csv_value(r, c) for c in cols])
    return path


def _notes(rows: list[dict], cols: list[str], findings: dict) -> list[str]:
    """What the columns and the ± mean, which eval the scores come from, then the sweep, the comparisons
    and the trade-off's statements."""
    lines = ["", "Columns: " + "; ".join(f"`{c}` {DEFINITIONS[c]}" for c in cols if c in DEFINITIONS) + ".",
             "", INTERVALS, "", "Every other column (per class, cost, plan, instability) is in table.csv."]
    prints = sorted({str(r["eval_fingerprint"]) for r in rows if r.get("eval_fingerprint")})
    if len(prints) == 1 and prints[0] != "unknown":
        lines += ["", f"Scored under eval fingerprint {prints[0]} (eval_fingerprint.json in each run folder)."]
    return lines + findings_markdown(findings)


def _extend(study_dir: Path, rows: list[dict], report_dir: Path) -> None:
    from lorafull.analysis import extend_report

    try:
        extend_report(study_dir, rows, report_dir)
    except Exception as e:  # noqa: BLE001 -- the analysis columns must never cost the whole report
        print(f"warning: analysis columns left out: {error_line(e)}", file=sys.stderr)


def build_report(study_dir: str | Path) -> Path:
    """Write the tables and figures; returns STUDY_DIR/report."""
    study_dir = Path(study_dir)
    if not (study_dir / "runs").is_dir():
        raise FileNotFoundError(f"{study_dir}: no runs/ folder (is this a STUDY_DIR? launch.grid creates it)")
    report_dir = study_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    for stale in report_dir.glob("*.png"):  # every figure is drawn anew: none left from an earlier study state
        stale.unlink()
    per_run, categories = collect_rows(study_dir)
    _extend(study_dir, per_run, report_dir)
    rows = group_rows(per_run)
    findings = study_findings(study_dir, rows, report_dir)  # marks the selected rows: before the columns
    if "seeds" in rows[0] if rows else False:  # each seed's own row, beside the pooled table
        singles = group_rows([{**r, "_group": None} for r in per_run])
        write_markdown(singles, key_columns(singles), report_dir / "runs.md")
        write_csv(singles, columns_of(singles), report_dir / "runs.csv")
    cols, key = columns_of(rows), key_columns(rows)
    note = fingerprint_note(per_run)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    write_markdown(rows, key, report_dir / "table.md", (["", note] if note else []) + _notes(rows, key, findings))
    write_csv(rows, cols, report_dir / "table.csv")
    plot_scores(rows, report_dir / "score_per_run.png")
    plot_score_vs_cost(rows, report_dir / "score_vs_cost.png")
    plot_categories(rows, [c for c in categories if c not in ("math", "code") or "others" not in cols],
                    report_dir / "category_scores.png")
    runs_dir = study_dir / "runs"
    plot_losses({r["run"]: loss_curve(runs_dir / r["run"]) for r in per_run},
                {r["run"]: r.get("_group") or r["run"] for r in per_run}, report_dir / "loss_curves.png",
                methods={r["run"]: r.get("method") for r in per_run})
    # last: the page inlines every figure written above
    write_html(study_dir, rows, per_run, report_dir, findings, notes=[note] if note else [])
    return report_dir


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m lorafull.report", __doc__, "python -m lorafull.report studies/demo")
    parser.add_argument("study_dir", type=Path, metavar="STUDY_DIR",
                        help="a study folder (study.output_dir: the one holding runs/); writes STUDY_DIR/report/")
    args = parser.parse_args(argv)
    try:
        out = build_report(args.study_dir)
    except Exception as e:  # noqa: BLE001 -- one line on stderr
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    print(f"report: {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
