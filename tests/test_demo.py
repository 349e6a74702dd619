"""The demo study end to end, shortened: data generation, every stage, the report (real CLI, real
DeepSpeed, offline scorers). The full-length demo is what the README's first command runs."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers.common import REPO
from lorafull.config import load_study
from lorafull.examples.demo import make_data
from lorafull.examples.demo.tasks import CLASSES


def test_demo_data_is_deterministic_held_out_and_in_the_agreed_formats(tmp_path):
    a, b = make_data(tmp_path / "a"), make_data(tmp_path / "b")
    for rel in ("corpus.jsonl", "instructions.jsonl", "math.jsonl", "eval.jsonl", "tasks/facts_en.jsonl",
                "tokenizer/tokenizer.json"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    mtime = (a / "corpus.jsonl").stat().st_mtime_ns
    make_data(a)  # a rerun with the same seed and sizes leaves the files alone (tokenized caches stay valid)
    assert (a / "corpus.jsonl").stat().st_mtime_ns == mtime

    read = lambda rel: [json.loads(line) for line in (a / rel).read_text(encoding="utf-8").splitlines()]
    eval_items, train = read("eval.jsonl"), read("instructions.jsonl") + read("math.jsonl")
    assert {e["class"] for e in eval_items} == set(CLASSES)
    assert all(set(e) >= {"question", "class", "std_answer"} for e in eval_items)
    held_out = {e["question"] for e in eval_items}
    assert not held_out & {r["instruction"] for r in train}
    assert all(r["class"] == "math" for r in read("math.jsonl"))
    assert sum(any("\u4e00" <= c <= "\u9fff" for c in r["instruction"]) for r in train) > len(train) / 5
    assert all("text" in d for d in read("corpus.jsonl"))
    for cls in CLASSES:
        target = read(f"tasks/target_{cls.replace(' ', '_')}.jsonl")
        assert target and all(t["class"] == cls for t in target) and not {t["question"] for t in target} & held_out
    for task in ("facts_en", "facts_zh"):
        for item in read(f"tasks/{task}.jsonl"):
            assert 0 <= item["answer"] < len(item["options"]) == 3 and item["context"]
            # the true ending is what the corpus says
            truth = item["context"] + item["options"][item["answer"]]
            assert truth in (a / "corpus.jsonl").read_text(encoding="utf-8")


def test_demo_study_file_points_at_the_generated_data(tmp_path):
    study = load_study(REPO / "configs" / "demo.yaml", [f"study.output_dir={tmp_path}"])
    make_data(tmp_path / "data")
    paths = [r.data.train for r in study.runs] + [r.eval.eval_set for r in study.runs] + \
            [t.path for t in study.analysis.target_tasks + study.analysis.source_tasks]
    assert all(os.path.exists(p) for p in paths), [p for p in paths if not os.path.exists(p)]
    # tuned runs chain from the pre-trained model; the math runs from full FT on the larger scale, whose
    # grid name got its signature appended after the study file named it run:full-num_samples2400
    # Every tuned run comes once per seed (study.seeds), and a math run chains from its own seed's parent.
    assert study.run("pretrain").group is None and len(study.runs) == 1 + 2 * 6
    for seed in (1, 2):
        ft_large = next(r.name for r in study.runs if r.name.startswith(f"full-num_samples2400-seed{seed}-"))
        assert {r.parent for r in study.runs if r.train.seed == seed} == {"pretrain", ft_large}
        assert {r.name for r in study.runs if r.parent == ft_large} == {f"ft_math_full-seed{seed}",
                                                                        f"ft_math_lora-seed{seed}"}


@pytest.mark.slow
def test_short_demo_runs_end_to_end_and_reports_every_run(tmp_path):
    out = tmp_path / "demo"
    # a few steps per run, a few eval items: every stage runs, nothing learns (the full demo does)
    overrides = [f"study.output_dir={out}", "train.max_steps=6", "train.save_every_steps=4", "eval.num_items=8",
                 "eval.max_new_tokens=6"]
    cmd = [sys.executable, "-m", "launch.grid", "configs/demo.yaml", "--executor", "local", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800,  # 13 runs: two seeds
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])

    study = load_study(REPO / "configs" / "demo.yaml", overrides)  # max_steps is in the grid runs' names
    for run in study.runs:
        status = json.loads((out / "runs" / run.name / "status.json").read_text())
        assert status["state"] == "done", (run.name, status)
    table = (out / "report" / "table.md").read_text()
    rows = list(csv.DictReader(open(out / "report" / "table.csv", encoding="utf-8")))
    # one row per group of seeds in table.md, one per run in runs.md
    assert {r.group or r.name for r in study.runs} == {row.get("run") for row in rows}
    assert all(row["seeds"] == ("1" if row["run"] == "pretrain" else "2") for row in rows)
    per_run = (out / "report" / "runs.md").read_text()
    for run in study.runs:
        assert f"| {run.group or run.name} |" in table and f"| {run.name} |" in per_run

    # the finished study copied to another folder (run from another directory): the same run names,
    # nothing to train or evaluate, in the copy as in the original
    moved = tmp_path / "elsewhere" / "demo"
    shutil.copytree(out, moved)
    moved_overrides = [f"study.output_dir={moved}", *overrides[1:]]
    assert [r.name for r in load_study(REPO / "configs" / "demo.yaml", moved_overrides).runs] == \
        [r.name for r in study.runs]
    for settings in (overrides, moved_overrides):
        dry = subprocess.run([sys.executable, "-m", "launch.grid", str(REPO / "configs" / "demo.yaml"), "--dry-run",
                              "--executor", "local", *settings], cwd=tmp_path, capture_output=True, text=True,
                             timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert dry.returncode == 0, dry.stderr[-2000:]
        assert "would train 0 run(s)" in dry.stdout and "evaluate 0," in dry.stdout, dry.stdout[-2000:]
