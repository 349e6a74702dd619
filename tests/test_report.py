"""The study report from run folders built by hand: tables, hand-computed averages, empty cells, plots."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.common import REPO, write_jsonl
from lorafull.config import RunConfig, save_run_config
from lorafull.report.build import build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_study(root: Path) -> Path:
    study = root / "study"
    specs = {
        "full_2m": {"kind": "full", "device": "cpu", "world": 2, "wall": 7200.0, "added": 0,
                    "scores": [("open qa", 1.0), ("open\u00a0qa", 0.5), ("rewrite", 0.25), ("math", 1.0),
                               ("code", 0.0), ("code", None)]},
        "lora_2m": {"kind": "lora", "device": "NVIDIA A100-SXM4-40GB", "world": 8, "wall": 3600.0, "added": 19520,
                    "scores": [("open qa", 0.5), ("rewrite", 1.0), ("math", 0.0)]},
        "lora_4m": {"kind": "lora"},  # queued: no metrics, no scores yet
    }
    for name, spec in specs.items():
        run_dir = study / "runs" / name
        run = RunConfig(name=name)
        run.method.kind = spec["kind"]
        save_run_config(run, run_dir, "sig")
        if "wall" in spec:
            steps = [{"step": s, "epoch": s / 10, "loss": 3.0 - 0.1 * s, "lr": 1e-4, "grad_norm": 1.0,
                      "tokens_per_s": 100.0, "step_time_s": 0.1, "peak_mem_gb": 1.0 + s / 100} for s in range(1, 11)]
            summary = {"summary": True, "wall_time_s": spec["wall"], "hours_per_epoch": spec["wall"] / 3600 / 2,
                       "tokens_seen": 360000, "trainable_params": 1000, "total_params": 5000,
                       "added_params": spec["added"], "world_size": spec["world"], "device": spec["device"]}
            write_jsonl(run_dir / "metrics.jsonl", steps + [{"event": "loss_spike", "step": 4}, summary])
        if "scores" in spec:
            write_jsonl(run_dir / "scores.jsonl", [
                {"id": i, "class": c, "score": s, "judge": "gpt-3.5-turbo", "reply": "r", "tokens": 100,
                 "cost": 0.001} for i, (c, s) in enumerate(spec["scores"])])
    return study


def read_table(path: Path) -> dict[str, dict]:
    with open(path, encoding="utf-8") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


def test_report_tables_and_plots(tmp_path):
    study = make_study(tmp_path)
    report = build_report(study)
    table = read_table(report / "table.csv")
    assert set(table) == {"full_2m", "lora_2m", "lora_4m"}
    full, lora, queued = table["full_2m"], table["lora_2m"], table["lora_4m"]
    # full_2m by hand: open qa (1 + 0.5)/2 = 0.75, rewrite 0.25, others = math 1 + code 0 pooled = 0.5
    assert float(full["open qa"]) == pytest.approx(0.75) and float(full["others"]) == pytest.approx(0.5)
    assert float(full["score"]) == pytest.approx((0.75 + 0.25 + 0.5) / 3)
    assert float(full["math"]) == 1.0 and float(full["code"]) == 0.0 and full["unscored"] == "1"
    assert float(lora["score"]) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert lora["method"] == "lora r=8" and full["method"] == "full"
    assert float(full["cpu_hours"]) == pytest.approx(4.0) and full["gpu_hours"] == ""
    assert float(lora["gpu_hours"]) == pytest.approx(8.0) and int(lora["added_params"]) == 19520
    assert float(full["hours_per_epoch"]) == pytest.approx(1.0)
    assert float(full["tokens_per_s"]) == pytest.approx(50.0) and float(full["peak_mem_gb"]) == pytest.approx(1.1)
    assert float(full["judge_cost_usd"]) == pytest.approx(0.006)
    assert queued["score"] == "" and queued["others"] == "" and queued["hours_per_epoch"] == ""
    md = (report / "table.md").read_text(encoding="utf-8")
    assert md.splitlines()[0].startswith("| run | method |") and "| lora_4m |" in md
    for png in ("score_per_run.png", "score_vs_cost.png", "category_scores.png", "loss_curves.png"):
        assert (report / png).read_bytes()[:8] == PNG_MAGIC, png


def test_report_cli_and_analysis_columns(tmp_path):
    study = make_study(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "lorafull.report", str(study)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    header = (study / "report" / "table.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    for col in ("run", "method", "score", "others", "open qa", "rewrite", "added_params", "hours_per_epoch",
                "tokens_per_s", "peak_mem_gb", "judge_cost_usd", "unscored"):
        assert col in header, col
    assert "unstable" in header  # a column added by lorafull.analysis.extend_report


def test_report_of_a_folder_without_runs_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lorafull.report", str(tmp_path)],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "no runs/ folder" in done.stderr and done.stderr.strip().count("\n") == 0


def test_each_row_shows_its_eval_fingerprint_and_mixed_fingerprints_are_called_out(tmp_path, capsys):
    from lorafull.config import FINGERPRINT_FILE, eval_fingerprint, load_run_config, refresh_eval_results

    study = make_study(tmp_path)
    full, lora = study / "runs" / "full_2m", study / "runs" / "lora_2m"
    for run_dir in (full, lora):  # what the stages record before they write
        (run_dir / "scores.jsonl").rename(run_dir / "kept.jsonl")
        refresh_eval_results(run_dir, load_run_config(run_dir))
        (run_dir / "kept.jsonl").rename(run_dir / "scores.jsonl")
    table = read_table(build_report(study) / "table.csv")
    same = eval_fingerprint(load_run_config(full))["fingerprint"]
    assert table["full_2m"]["eval_fingerprint"] == table["lora_2m"]["eval_fingerprint"] == same
    assert table["lora_4m"]["eval_fingerprint"] == ""  # nothing scored, nothing to fingerprint
    assert "note:" not in (study / "report" / "table.md").read_text(encoding="utf-8")

    (lora / FINGERPRINT_FILE).unlink()  # scores of unknown provenance, as before fingerprints existed
    report = build_report(study)
    assert read_table(report / "table.csv")["lora_2m"]["eval_fingerprint"] == "unknown"
    md = (report / "table.md").read_text(encoding="utf-8")
    assert f"note: rows were scored under 2 different eval fingerprints ({same}, unknown)" in md
    assert "different eval fingerprints" in capsys.readouterr().err


def test_the_html_report_is_one_page_with_table_figures_and_relative_run_links(tmp_path):
    import base64
    from html.parser import HTMLParser

    study = make_study(tmp_path)
    report = build_report(study)

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links, self.images, self.rows, self.row_classes = [], [], [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "a":
                self.links.append(a["href"])
            elif tag == "img":
                self.images.append(a["src"])
            elif tag == "tr":
                self.rows.append(a.get("class"))

    page = Page()
    page.feed((report / "index.html").read_text(encoding="utf-8"))
    # header, then full_2m, lora_2m, lora_4m: the first two tie at the best score 0.5 (both marked),
    # the queued run has none; in the key table and again in the table of all columns
    assert page.rows == [None, "best", "best", None] * 2
    assert len(page.images) == 4 and all(base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
                                         for src in page.images)
    files = [h for h in page.links if not h.startswith("#")]
    assert "../runs/lora_4m/" in files and "../runs/full_2m/scores.jsonl" in files
    for href in files:  # every link resolves from the report folder, wherever the study was copied
        assert not href.startswith(("/", "file:")) and (report / href).exists(), href
