"""extend_report: the analysis columns appear in the rows and the figures are written; the data
sensitivity fit recovers a known "points per doubling"; the Pareto front by hand."""
from __future__ import annotations

import json
import math

import pytest

from lorafull.runs import JsonlWriter, write_json_atomic
from helpers.analysis import make_study, perturbed_full, random_lora, save_base


def test_fit_per_doubling_and_pareto_front():
    from lorafull.analysis.tradeoff import pareto_front
    from lorafull.analysis.sensitivity import fit_per_doubling

    assert fit_per_doubling([1000, 2000, 4000, 8000], [0.50, 0.52, 0.54, 0.56]) == pytest.approx(0.02)
    assert fit_per_doubling([1000, 1000], [0.5, 0.6]) is None
    # (learning, forgetting): 3 dominates 0, 1 and 4; 2 learns more but forgets more: both on the front
    pts = [(0.1, 0.2), (0.2, 0.1), (0.5, 0.3), (0.3, 0.05), (0.25, 0.06)]
    assert pareto_front(pts) == [3, 2]
    assert pareto_front(pts + [(0.4, 0.2)]) == [3, 5, 2]


def _metrics(run_dir, losses):
    with JsonlWriter(run_dir / "metrics.jsonl") as w:
        for step, loss in enumerate(losses, 1):
            w.write({"step": step, "loss": loss, "grad_norm": 1.0, "lr": 1e-4})
        w.write({"summary": True, "wall_time_s": 1.0})


def test_extend_report_adds_columns_and_writes_figures(tmp_path, tiny_tokenizer_dir):
    from lorafull.analysis import extend_report
    from lorafull.analysis.spectrum import analyse_run

    base = save_base(tmp_path / "base", tiny_tokenizer_dir)
    runs, scores = [], {}
    for kind in ("full", "lora"):
        for lr in (1e-4, 1e-3):
            for n in (100, 200, 400, 800):
                name = f"{kind}-lr{lr:g}-n{n}"
                runs.append({"name": name, "method.kind": kind, "train.lr": lr, "data.num_samples": n})
                # a known law: full gains 0.05 per doubling of data, LoRA 0.03; lr shifts the level
                per = 0.05 if kind == "full" else 0.03
                scores[name] = 0.3 + per * math.log2(n / 100) + (0.02 if lr == 1e-3 else 0.0)
    study, dirs = make_study(tmp_path, base, runs)
    rows = [{"run": name, "method": name.split("-")[0], "score": s} for name, s in scores.items()]

    full, lora = "full-lr0.0001-n100", "lora-lr0.0001-n100"
    perturbed_full(base, dirs[full], tiny_tokenizer_dir)
    random_lora(base, dirs[lora], tiny_tokenizer_dir, r=4)
    analyse_run(dirs[full], device="cpu", progress=False)
    analyse_run(dirs[lora], device="cpu", progress=False)
    healthy = [2.0 - 0.01 * i for i in range(60)]
    for name in scores:
        _metrics(dirs[name], healthy)
    _metrics(dirs[lora], healthy[:30] + [9.0] + healthy[31:])  # one loss spike
    for i, name in enumerate([full, lora, "full-lr0.001-n800"]):
        write_json_atomic(dirs[name] / "analysis" / "tasks.json", {
            "learning": 0.1 * (i + 1), "forgetting": 0.05 * (3 - i),
            "checkpoints": [{"step": 5, "learning": 0.05, "forgetting": 0.01}] if i == 0 else []})

    report = study.output_dir / "report"
    out = extend_report(study.output_dir, rows, report)
    assert out is rows
    by_run = {r["run"]: r for r in rows}
    assert all({"unstable", "instability_events", "learning", "forgetting", "rank90"} <= set(r) for r in rows)
    assert by_run[lora]["unstable"] == "yes" and by_run[lora]["instability_events"] == 1
    assert by_run[full]["unstable"] == "no" and by_run[full]["instability_events"] == 0
    assert by_run[full]["learning"] == pytest.approx(0.1) and by_run[lora]["forgetting"] == pytest.approx(0.1)
    assert by_run["lora-lr0.001-n800"]["learning"] is None
    assert 1 <= by_run[lora]["rank90"] <= 4 and by_run[full]["rank90"] > by_run[lora]["rank90"]
    assert by_run["full-lr0.001-n400"]["rank90"] is None
    for png in ("spectrum_full_vs_lora.png", f"spectrum_{full}.png",
                "sensitivity_lr.png", "sensitivity_data.png"):
        assert (report / png).stat().st_size > 2000, png
    summary = json.loads((report / "analysis.json").read_text())
    slopes = summary["points_per_doubling"]
    assert slopes["full, lr=0.0001"] == pytest.approx(0.05) and slopes["lora r=4, lr=0.001"] == pytest.approx(0.03)


def test_extend_report_without_analyses_adds_empty_columns(tmp_path, tiny_tokenizer_dir):
    from lorafull.analysis import extend_report

    base = save_base(tmp_path / "base", tiny_tokenizer_dir)
    study, dirs = make_study(tmp_path, base, [{"name": "only"}])
    rows = [{"run": "only", "method": "lora", "score": None}]
    extend_report(study.output_dir, rows, study.output_dir / "report")
    assert rows[0]["unstable"] is None and rows[0]["learning"] is None and rows[0]["rank90"] is None
    assert not list((study.output_dir / "report").glob("*.png"))
