"""The analyses on runs the real trainer made (python -m lorafull.train, tiny model, 20 steps):
spectrum, learning/forgetting along checkpoints, instability, the report columns; and the
checkpoint loader reproduces the final weights for the plain-torch and DeepSpeed engines."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.common import alpaca_records, write_jsonl
from helpers.analysis import make_study, save_base
from helpers.analysis import arithmetic_items, word_items

REPO = Path(__file__).resolve().parents[1]

TRAIN = {"train.max_steps": 20, "train.global_batch_size": 8, "train.micro_batch_size": 8, "train.warmup_steps": 2,
         "train.log_every_steps": 2, "train.save_every_steps": 10, "train.keep_checkpoints": 3}


def train(run_dir: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_analyses_of_real_full_and_lora_runs(tmp_path, tiny_tokenizer_dir):
    from lorafull.analysis import extend_report, run_analyses
    from lorafull.analysis.checkpoints import list_checkpoints, load_checkpoint_model
    from lorafull.config import load_run_config
    from lorafull.models.load import load_final

    base = save_base(tmp_path / "base", tiny_tokenizer_dir)
    data = write_jsonl(tmp_path / "train.jsonl", alpaca_records(128))
    tasks = {"add": write_jsonl(tmp_path / "add.jsonl", arithmetic_items(10, 0)),
             "words": write_jsonl(tmp_path / "words.jsonl", word_items(10, 2))}
    common = {"data.train": str(data), "train.deepspeed": False, **TRAIN}
    study, dirs = make_study(tmp_path, base, [
        {"name": "full", "method.kind": "full", "train.lr": 1e-3, **common},
        {"name": "lora", "method.kind": "lora", "train.lr": 1e-2, **common}],
        {"target_tasks": [{"name": "add", "path": str(tasks["add"])}],
         "source_tasks": [{"name": "words", "path": str(tasks["words"])}], "spectrum": True, "checkpoints": True})
    for name in ("full", "lora"):
        train(dirs[name])
        # the checkpoint at the last step, loaded over the base, is the final model exactly
        ckpts = list_checkpoints(dirs[name])
        assert [s for s, _ in ckpts] == [10, 20]
        at_end = load_checkpoint_model(dirs[name], ckpts[-1][1], load_run_config(dirs[name]), "fp32").state_dict()
        final = load_final(dirs[name], dtype="fp32", merge=True)[0].state_dict()
        assert set(at_end) == set(final) and all(torch.equal(at_end[k], final[k]) for k in final)
        run_analyses(dirs[name])

    res = {n: json.loads((dirs[n] / "analysis" / "tasks.json").read_text()) for n in dirs}
    spec = {n: json.loads((dirs[n] / "analysis" / "spectrum.json").read_text()) for n in dirs}
    for r in res.values():
        assert r["learning"] == pytest.approx(r["tasks"]["add"]["score"] - r["base"]["add"]["score"])
        assert r["forgetting"] == pytest.approx(r["base"]["words"]["score"] - r["tasks"]["words"]["score"])
        assert [c["step"] for c in r["checkpoints"]] == [10]  # step 20 is the final model
        assert r["checkpoints"][0]["learning"] is not None
    assert res["full"]["base"] == res["lora"]["base"]  # one base, evaluated once
    assert len(list((study.output_dir / "analysis").glob("base_*.json"))) == 1
    assert all(m["rank90"] <= load_run_config(dirs["lora"]).method.r for m in spec["lora"]["modules"])
    assert spec["full"]["summary"]["median_rank90"] > spec["lora"]["summary"]["median_rank90"]

    rows = [{"run": n, "method": n, "score": 0.5} for n in dirs]
    extend_report(study.output_dir, rows, study.output_dir / "report")
    assert {r["unstable"] for r in rows} == {"no"}
    assert rows[0]["rank90"] == spec["full"]["summary"]["median_rank90"]
    assert rows[1]["learning"] == pytest.approx(round(res["lora"]["learning"], 4))
    assert (study.output_dir / "report" / "spectrum_full_vs_lora.png").exists()

    # the report stage calls extend_report itself: the columns reach table.csv
    import csv

    from lorafull.report.build import build_report

    report = build_report(study.output_dir)
    table = list(csv.DictReader(open(report / "table.csv", encoding="utf-8")))
    assert {"unstable", "instability_events", "learning", "forgetting", "rank90"} <= set(table[0])
    by_run = {r["run"]: r for r in table}
    assert by_run["lora"]["unstable"] == "no"
    assert int(by_run["full"]["rank90"]) == spec["full"]["summary"]["median_rank90"]
    assert float(by_run["full"]["learning"]) == pytest.approx(res["full"]["learning"], abs=1e-4)
    # the trade-off: one curve per method, the final model and its checkpoint as points
    trade = json.loads((report / "tradeoff.json").read_text())
    assert (report / "tradeoff.png").exists()
    # (the curves differ in train.lr too, so their names carry it: "full, lr=0.001")
    assert sorted((c["name"].split(",")[0], sorted(p["step"] or 20 for p in c["points"])) for c in trade["curves"]) \
        == [("full", [10, 20]), ("lora r=4", [10, 20])]


@pytest.mark.slow
def test_deepspeed_checkpoints_load_as_the_final_model(tmp_path, tiny_tokenizer_dir):
    from lorafull.analysis.checkpoints import list_checkpoints, load_checkpoint_model
    from lorafull.config import load_run_config
    from lorafull.models.load import load_final

    base = save_base(tmp_path / "base", tiny_tokenizer_dir)
    data = write_jsonl(tmp_path / "train.jsonl", alpaca_records(64))
    common = {"data.train": str(data), "train.deepspeed": True, "train.nproc": 1, **TRAIN}
    _, dirs = make_study(tmp_path, base, [
        {"name": "full_z2", "method.kind": "full", "train.zero_stage": 2, "train.lr": 1e-3, **common},
        {"name": "lora_z3", "method.kind": "lora", "train.zero_stage": 3, "train.lr": 1e-2, **common}])
    for name, run_dir in dirs.items():
        train(run_dir)
        (step, ckpt), = [c for c in list_checkpoints(run_dir) if c[0] == 20]
        at_end = load_checkpoint_model(run_dir, ckpt, load_run_config(run_dir), "fp32").state_dict()
        final = load_final(run_dir, dtype="fp32", merge=True)[0].state_dict()
        assert all(torch.equal(at_end[k], final[k]) for k in final), name
