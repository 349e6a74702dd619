"""launch.grid on a real Slurm (the local 2-node cluster .ci/run starts): arrays, dependencies, the
report, idempotent re-runs, status, chained runs, a failing run and --retry, secrets.

    pytest -m slurm tests/test_slurm_grid.py
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from helpers.common import alpaca_records, write_jsonl
from helpers.grid import (grid, job_log_text, ledger, make_data, need_slurm, sacct_rows, status, study_dict,
                               wait_for_jobs, write_study)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SECRET = f"sk-lorafull-test-{uuid.uuid4().hex}"
JUDGE_SECRET = f"judge-key-{uuid.uuid4().hex}"


def _all_job_ids(study_dir: Path) -> list[str]:
    led = ledger(study_dir)
    ids = [j for e in led["runs"].values() for k, j in e.items() if k in ("train", "eval") and j]
    return ids + ([led["report"]] if led.get("report") else [])


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory, tiny_tokenizer_dir):
    """full/LoRA x 2 data scales, submitted once with API keys in the environment, run to the end."""
    need_slurm()
    root = tmp_path_factory.mktemp("grid4")
    files = make_data(root, tiny_tokenizer_dir)
    cfg = write_study(root / "four.yaml", study_dict(
        root, files, name="four", grid={"method.kind": ["full", "lora"], "data.num_samples": [16, 32]},
        base={"eval": {"judge": {"api_key_env": "LORAFULL_TEST_JUDGE_KEY"}}}))
    env = {"OPENAI_API_KEY": SECRET, "LORAFULL_TEST_JUDGE_KEY": JUDGE_SECRET}
    first = grid(cfg, env=env)
    study_dir = root / "four"
    wait_for_jobs(_all_job_ids(study_dir), timeout_s=900)
    return {"cfg": cfg, "root": root, "study_dir": study_dir, "first": first, "env": env}


def test_one_training_array_then_evaluations_then_the_report(four_runs):
    study_dir = four_runs["study_dir"]
    assert "9 jobs submitted in 3 sbatch call(s)" in four_runs["first"].stdout, four_runs["first"].stdout
    led = ledger(study_dir)
    kinds = [(s["kind"], s["tasks"]) for s in led["submissions"]]
    assert kinds == [("train", 4), ("eval", 4), ("report", 1)]
    train_ids = [e["train"] for e in led["runs"].values()]
    eval_ids = [e["eval"] for e in led["runs"].values()]
    assert len({t.split("_")[0] for t in train_ids}) == 1  # one array of 4 tasks
    rows = sacct_rows(train_ids + eval_ids + [led["report"]])
    detail = json.dumps(rows, indent=1) + job_log_text(study_dir)
    for jid in train_ids + eval_ids + [led["report"]]:
        assert rows[jid]["state"] == "COMPLETED", detail
    for t, e in zip(train_ids, eval_ids):  # each evaluation after its own training
        assert rows[e]["start"] >= rows[t]["end"], detail
    report = rows[led["report"]]
    assert report["start"] >= max(rows[e]["end"] for e in eval_ids), detail
    table = (study_dir / "report" / "table.md").read_text()
    for name in led["runs"]:
        assert name in table
        st = status(study_dir / "runs" / name)
        assert st["state"] == "done" and st["stages"]["train"] == "done" and st["stages"]["evaluate"] == "done"


def test_the_same_command_again_submits_nothing_and_status_shows_done(four_runs):
    before = ledger(four_runs["study_dir"])
    again = grid(four_runs["cfg"], env=four_runs["env"])
    assert "0 jobs submitted" in again.stdout, again.stdout
    assert ledger(four_runs["study_dir"]) == before
    st = grid(four_runs["cfg"], "--status").stdout
    assert "4 done" in st and "report: written" in st, st
    for name in before["runs"]:
        line = next(line for line in st.splitlines() if line.startswith(name))
        assert " done " in line and "COMPLETED" in line, line


def test_no_file_of_the_study_or_of_submitit_holds_a_secret(four_runs):
    root = four_runs["root"]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any("submitted.pkl" in p.name for p in files) and any(p.suffix == ".out" for p in files)
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data, path
        assert JUDGE_SECRET.encode() not in data, path


def test_chained_run_waits_for_its_parent_and_a_bad_run_is_retried_alone(tmp_path, tiny_tokenizer_dir):
    need_slurm()
    files = make_data(tmp_path, tiny_tokenizer_dir)
    bad = write_jsonl(tmp_path / "bad.jsonl", alpaca_records(8))
    with open(bad, "a") as f:
        f.write('{"instruction": "cut short\n')
    cfg = write_study(tmp_path / "chain.yaml", study_dict(tmp_path, files, name="chain", runs=[
        {"name": "parent"}, {"name": "other", "method.kind": "full"},
        {"name": "child", "model.name_or_path": "run:parent", "data.num_samples": 16},
        {"name": "bad", "data.train": str(bad)}]))
    study_dir = tmp_path / "chain"
    first = grid(cfg)
    assert "sbatch train" in first.stdout and "depth 1" in first.stdout, first.stdout
    led = ledger(study_dir)
    runs = led["runs"]
    assert runs["child"]["waits_for"] == runs["parent"]["train"]
    wait_for_jobs(_all_job_ids(study_dir), timeout_s=900)

    rows = sacct_rows([runs[n]["train"] for n in runs] + [led["report"]])
    detail = json.dumps(rows, indent=1) + job_log_text(study_dir)
    assert rows[runs["child"]["train"]]["start"] >= rows[runs["parent"]["train"]]["end"], detail
    # the child (LoRA) trained on its parent's merged final model
    adapter = json.loads((study_dir / "runs" / "child" / "final" / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]).resolve() == (study_dir / "runs" / "parent" / "merged").resolve()
    for name in ("parent", "other", "child"):
        assert status(study_dir / "runs" / name)["state"] == "done", detail
    failed = status(study_dir / "runs" / "bad")
    assert failed["state"] == "failed" and "bad.jsonl:9" in failed["error"], failed
    assert rows[runs["bad"]["train"]]["state"] == "FAILED", detail
    assert rows[led["report"]]["state"] == "COMPLETED", detail  # afterany: the failure did not block it
    assert (study_dir / "report" / "table.md").exists()

    st = grid(cfg, "--status").stdout
    assert "3 done" in st and "1 failed" in st and "bad.jsonl:9" in st, st
    plain = grid(cfg)
    assert "0 jobs submitted" in plain.stdout and "use --retry" in plain.stdout, plain.stdout

    write_jsonl(bad, alpaca_records(8))  # fix the data: a new input, so the failed folder is set aside
    retried = grid(cfg, "--retry")
    assert "failed run(s) whose settings or inputs changed start afresh" in retried.stdout, retried.stdout
    assert (study_dir / "runs" / ".superseded").is_dir()
    led2 = ledger(study_dir)
    new = led2["submissions"][len(led["submissions"]):]
    assert [(s["kind"], s["runs"]) for s in new] == [("train", ["bad"]), ("eval", ["bad"]), ("report", [])], \
        retried.stdout
    for name in ("parent", "other", "child"):
        assert led2["runs"][name] == runs[name]  # untouched
    wait_for_jobs(_all_job_ids(study_dir), timeout_s=600)
    assert status(study_dir / "runs" / "bad")["state"] == "done", job_log_text(study_dir)
    assert "4 done" in grid(cfg, "--status").stdout


def _wait_until_training(run_dir: Path, job_id: str, resumed: bool = False, timeout_s: float = 180) -> None:
    """Until the job's training loop has taken a step past where this job started it (resumed: past the
    checkpoint it resumed from), so that a cancel meets a live loop. (status.json keeps the earlier job's
    step, and metrics.jsonl the earlier job's lines: neither alone says that this job trains.)"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = status(run_dir)
        start = st.get("resumed_from")
        if st.get("state") == "running" and (start is not None or not resumed) and (st.get("step") or 0) > (start or 0):
            return
        time.sleep(0.5)
    raise AssertionError(f"{job_id}: training did not start within {timeout_s}s: {status(run_dir)}")


def _restarts(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    m = re.search(r"Restarts=(\d+)", out)
    return int(m.group(1)) if m else 0


def test_cancel_stops_a_running_study_for_good_and_retry_resumes_it(tmp_path, tiny_tokenizer_dir):
    """A running training answers scancel's SIGTERM like a preemption (checkpoint, exit 75); the job must
    still end cancelled, not requeue itself: through launch.grid --cancel and through a plain scancel."""
    need_slurm()
    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "c.yaml", study_dict(tmp_path, files, name="cancelled", runs=[{"name": "slow"}],
                                                     base={"train": {"max_steps": 100000, "save_every_steps": 50}}))
    study_dir, run_dir = tmp_path / "cancelled", tmp_path / "cancelled" / "runs" / "slow"
    grid(cfg)
    train_job = ledger(study_dir)["runs"]["slow"]["train"]
    _wait_until_training(run_dir, train_job)
    out = grid(cfg, "--cancel")
    assert "cancelled 3 job(s)" in out.stdout, out.stdout
    wait_for_jobs(_all_job_ids(study_dir), timeout_s=120)
    assert _restarts(train_job) == 0, job_log_text(study_dir)
    st = status(run_dir)
    assert st["state"] == "failed" and "--cancel" in st["error"], st
    assert "1 failed" in grid(cfg, "--status").stdout

    again = grid(cfg, "--retry")
    assert "sbatch train" in again.stdout
    retry_job = ledger(study_dir)["runs"]["slow"]["train"]
    assert retry_job != train_job
    _wait_until_training(run_dir, retry_job, resumed=True)
    subprocess.run(["scancel", retry_job], check=True)
    wait_for_jobs(_all_job_ids(study_dir), timeout_s=120)
    log = job_log_text(study_dir)
    assert _restarts(retry_job) == 0 and "the job was cancelled, so it is not requeued" in log, log
    resumed = status(run_dir).get("resumed_from")
    assert resumed and resumed > 0, status(run_dir)  # the retry went on from the cancel's checkpoint
