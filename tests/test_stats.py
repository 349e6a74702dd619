"""Confidence intervals: the bootstrap against hand computations and scipy, seeds expanded into runs and
pooled in the report, and its comparison paired seed by seed (tests/test_paired.py: paired differences)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from helpers.common import write_jsonl
from lorafull.analysis.forgetting import paired_strata
from lorafull.config import RunConfig, load_study, save_run_config
from lorafull.judge.summary import summarize
from lorafull.report.build import build_report
from lorafull.stats import estimate, paired_difference, percentile_interval


def test_percentile_rank_rule_by_hand():
    # B = 40 replicates 1..40: tail 2.5 % -> rank floor(0.025 * 40) = 1 -> value 2;
    # 97.5 % -> rank ceil(0.975 * 40) - 1 = 38 -> value 39
    assert percentile_interval(np.arange(40, 0, -1)) == (2.0, 39.0)


def test_one_class_interval_equals_the_exact_bootstrap_distribution():
    # items [0, 0, 0, 1, 1]: a resample's mean is k/5 with k ~ Binomial(5, 0.4). Its CDF at k = 0..5 is
    # 0.078, 0.337, 0.683, 0.913, 0.990, 1: the 2.5th percentile is k = 0 and the 97.5th is k = 4 -> [0.0, 0.8]
    est = estimate([{"c": [0, 0, 0, 1, 1]}])
    assert float(est) == pytest.approx(0.4)
    assert (est.low, est.high) == (0.0, pytest.approx(0.8))
    assert est.half_width == pytest.approx(0.4) and est.text(2) == "0.40 ± 0.40"


def test_classes_are_resampled_apart():
    # class a always scores 1; class b [0, 1] resamples to 0, 0.5, 1 (1/4, 1/2, 1/4): the macro average
    # (a + b) / 2 is 0.5, 0.75 or 1 -> interval [0.5, 1.0] around 0.75. Pooling the five items instead
    # would give means in steps of 1/5 (0.4, 0.6, ...), never 0.5 or 0.75.
    est = estimate([{"a": [1, 1, 1], "b": [0, 1]}])
    assert float(est) == pytest.approx(0.75) and (est.low, est.high) == (0.5, 1.0)
    assert estimate([{"a": [None, None], "b": [1, None, 1]}]).as_dict() == {"mean": 1.0, "low": 1.0, "high": 1.0,
                                                                         "seeds": 1}


def test_seeds_widen_the_interval():
    # each seed scores its items alike, so item resamples change nothing; drawing two of the seeds with
    # replacement gives 0, 0.5 or 1 -> interval [0, 1] around 0.5. One seed alone has no spread.
    two = estimate([{"c": [1, 1, 1, 1]}, {"c": [0, 0, 0, 0]}])
    assert float(two) == pytest.approx(0.5) and (two.low, two.high, two.seeds) == (0.0, 1.0, 2)
    one = estimate([{"c": [1, 1, 1, 1]}])
    assert (one.low, one.high) == (1.0, 1.0)


def test_interval_matches_scipys_percentile_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(7).binomial(1, 0.6, size=120).astype(float)
    ours = estimate([{"c": list(x)}], resamples=20000)
    ref = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=20000, random_state=0).confidence_interval
    # two random resamplings of the same distribution: the bounds agree to about a resolution step (1/120)
    assert ours.low == pytest.approx(ref.low, abs=0.015) and ours.high == pytest.approx(ref.high, abs=0.015)


def test_judge_summary_and_paired_task_intervals():
    rows = [{"class": "math", "score": s} for s in (1, 1, 0)] + [{"class": "rewrite", "score": s} for s in (0.5, 0.5)]
    summary = summarize(rows)
    assert summary["intervals"]["average"] == [estimate([{"others": [1, 1, 0], "rewrite": [0.5, 0.5]}]).low,
                                              estimate([{"others": [1, 1, 0], "rewrite": [0.5, 0.5]}]).high]
    assert summary["intervals"]["rewrite"] == [0.5, 0.5]
    tasks = {"target_tasks": ["t"], "source_tasks": ["s"],
             "tasks": {"t": {"item_scores": [1.0, 1.0, None]}, "s": {"item_scores": [0.0, 1.0]}},
             "base": {"t": {"item_scores": [0.0, 1.0, 1.0]}, "s": {"item_scores": [1.0, 1.0]}}}
    learning, forgetting = paired_strata(tasks)
    assert learning == {"t": [1.0, 0.0, None]} and forgetting == {"s": [1.0, 0.0]}


def _study_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"""study: {{name: s, output_dir: {tmp_path / 'out'}, seeds: [1, 2]}}
base: {{model: {{name_or_path: "run:pre", tokenizer: tok}}}}
grid: {{method.kind: [full, lora]}}
runs:
  - {{name: pre, model.name_or_path: "scratch:tiny-llama", train.seed: 42}}
  - {{name: more, model.name_or_path: "run:full"}}
""")
    return path


def test_seeds_expand_every_run_that_does_not_fix_its_seed(tmp_path):
    study = load_study(_study_file(tmp_path))
    by = {r.name.rsplit("-", 1)[0] if r.name.startswith(("full", "lora")) else r.name: r for r in study.runs}
    assert set(by) == {"pre", "full-seed1", "full-seed2", "lora-seed1", "lora-seed2", "more-seed1", "more-seed2"}
    assert by["pre"].group is None and by["pre"].train.seed == 42
    assert [by[f"lora-seed{k}"].train.seed for k in (1, 2)] == [1, 2] and by["lora-seed2"].group == "lora"
    assert by["full-seed1"].model.name_or_path == "run:pre"
    # a chained run follows the parent of its own seed (grid parents carry their signature)
    assert by["more-seed2"].model.name_or_path == f"run:{by['full-seed2'].name}"
    bad = _study_file(tmp_path)
    bad.write_text(bad.read_text().replace("seeds: [1, 2]", "seeds: [3, 3]"))
    with pytest.raises(Exception, match=r"s\.yaml:1: study\.seeds: \[3, 3\] lists a seed twice"):
        load_study(bad)


def test_report_pools_seeds_into_one_row(tmp_path):
    study_dir = tmp_path / "study"
    items = {("full", 1): [1, 1, 1, 0], ("full", 2): [1, 1, 1, 1], ("lora", 1): [0, 0, 1, 0], ("lora", 2): [0, 1, 0, 0]}
    for (kind, seed), scores in items.items():
        run = RunConfig(name=f"{kind}-seed{seed}", group=kind)
        run.method.kind, run.train.seed = kind, seed
        save_run_config(run, study_dir / "runs" / run.name, "sig")
        write_jsonl(study_dir / "runs" / run.name / "scores.jsonl",
                    [{"id": i, "class": "qa", "score": s} for i, s in enumerate(scores)])
    report = build_report(study_dir)
    with open(report / "table.csv", encoding="utf-8") as f:
        table = {r["run"]: r for r in csv.DictReader(f)}
    assert set(table) == {"full", "lora"} and table["full"]["seeds"] == "2"
    full = estimate([{"qa": items[("full", 1)]}, {"qa": items[("full", 2)]}])
    assert float(table["full"]["score"]) == pytest.approx((0.75 + 1.0) / 2) == pytest.approx(float(full))
    assert float(table["full"]["score_low"]) == full.low and float(table["full"]["score_high"]) == full.high
    with open(report / "runs.csv", encoding="utf-8") as f:
        assert sorted(r["run"] for r in csv.DictReader(f)) == ["full-seed1", "full-seed2", "lora-seed1", "lora-seed2"]
    md = (report / "table.md").read_text(encoding="utf-8")
    assert f"| full | 2 | full |" in md and full.text(3) in md
    # the comparison is the paired difference: seed k of full against seed k of lora, on the same items
    paired = paired_difference([(s, {"qa": items[("full", s)]}) for s in (1, 2)],
                               [(s, {"qa": items[("lora", s)]}) for s in (1, 2)])
    [line] = [ln for ln in md.splitlines() if ln.startswith("- `full` vs `lora`")]
    assert f"difference {float(paired):+.3f} ({paired.interval_text()}, paired over 4 items, 2 seeds paired" in line
    assert line.endswith("within noise (the paired interval contains 0)") is paired.within_noise
