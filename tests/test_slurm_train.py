"""Training jobs on a real Slurm: preemption -> checkpoint -> requeue -> resume with identical
weights, and a DeepSpeed run over two nodes (one rank each, gloo) equal to one node x two processes.

    pytest -m slurm tests/test_slurm_train.py
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers.grid import (final_state_dict, grid, job_log_text, ledger, make_data, need_slurm, sacct_rows,
                               status, study_dict, wait_for_jobs, write_study)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _all_job_ids(study_dir: Path) -> list[str]:
    led = ledger(study_dir)
    return [j for e in led["runs"].values() for k, j in e.items() if k in ("train", "eval") and j] + [led["report"]]


def _steps_logged(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.startswith('{"step"'))


def test_preempted_tasks_checkpoint_requeue_and_resume_to_the_same_weights(tmp_path, tiny_tokenizer_dir):
    """Three identical runs in one array. Mid-run, task 0 gets USR2 on its training step (as Slurm's
    --signal and a plain scancel --signal deliver it) and task 1 also on its submitit process
    (scancel --full); both save, are requeued and resume; their final weights equal task 2's, which
    ran straight through."""
    need_slurm()
    files = make_data(tmp_path, tiny_tokenizer_dir)
    names = ["to_steps", "to_batch_too", "straight"]
    cfg = write_study(tmp_path / "p.yaml", study_dict(tmp_path, files, name="preempt",
                                                      base={"train": {"max_steps": 300}},
                                                      runs=[{"name": n} for n in names]))
    study_dir = tmp_path / "preempt"
    grid(cfg)
    tasks = {n: ledger(study_dir)["runs"][n]["train"] for n in names}
    for name, flags in (("to_steps", []), ("to_batch_too", ["--full"])):
        deadline = time.monotonic() + 300
        while _steps_logged(study_dir / "runs" / name) < 20:
            assert time.monotonic() < deadline, job_log_text(study_dir)
            time.sleep(0.3)
        subprocess.run(["scancel", *flags, "--signal=USR2", tasks[name]], check=True)
    wait_for_jobs(_all_job_ids(study_dir), timeout_s=600)

    logs = job_log_text(study_dir)
    reference = final_state_dict(study_dir / "runs" / "straight")
    assert status(study_dir / "runs" / "straight")["resumed_from"] is None
    for name in ("to_steps", "to_batch_too"):
        run_dir = study_dir / "runs" / name
        st = status(run_dir)
        assert st["state"] == "done" and st["resumed_from"] is not None and 20 <= st["resumed_from"] < 300, (st, logs)
        assert "Requeued job " + tasks[name] in logs, logs
        assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["steps"] == 300
        weights = final_state_dict(run_dir)
        assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in weights)
    assert "asking the training step of job " + tasks["to_batch_too"] in logs  # checkpoint() passed it on
    rows = sacct_rows(list(tasks.values()))
    assert all(rows[t]["state"] == "COMPLETED" for t in tasks.values()), rows


def test_two_node_deepspeed_run_equals_one_node_two_processes(tmp_path, tiny_tokenizer_dir):
    need_slurm()
    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "m.yaml", study_dict(
        tmp_path, files, name="multinode", runs=[{"name": "full_ds"}],
        base={"method": {"kind": "full"}, "train": {"deepspeed": True, "zero_stage": 2, "max_steps": 6}}))
    two, one = tmp_path / "two_nodes", tmp_path / "one_node"
    grid(cfg, "slurm.nodes=2", "train.nproc=1", f"study.output_dir={two}")
    grid(cfg, "slurm.nodes=1", "train.nproc=2", "slurm.cpus_per_gpu=1", f"study.output_dir={one}")
    wait_for_jobs(_all_job_ids(two) + _all_job_ids(one), timeout_s=1200)
    logs = job_log_text(two) + job_log_text(one)
    for study_dir in (two, one):
        st = status(study_dir / "runs" / "full_ds")
        assert st["state"] == "done" and st["world_size"] == 2, (st, logs)
    task = ledger(two)["runs"]["full_ds"]["train"]
    nodes = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "NodeList,NNodes", "-j", task], capture_output=True,
                           text=True).stdout.split()
    assert nodes and nodes[0].split("|") == ["n[1-2]", "2"], nodes
    summary = json.loads((two / "runs" / "full_ds" / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["engine"].startswith("deepspeed") and summary["world_size"] == 2, summary
    a, b = final_state_dict(two / "runs" / "full_ds"), final_state_dict(one / "runs" / "full_ds")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), max((a[k] - b[k]).abs().max().item() for k in a)
