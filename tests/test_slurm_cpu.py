"""A CPU partition on the real local Slurm (which has no GPU gres at all): `slurm.gpus_per_node: 0` with the
default `gres: gpu` asks for no generic resource, and training places one process per allocated task.

    pytest -m slurm tests/test_slurm_cpu.py
"""
from __future__ import annotations

import json
import subprocess

import pytest

from helpers.grid import grid, job_log_text, ledger, make_data, sacct_rows, study_dict, wait_for_jobs, write_study
from lorafull.runs import read_jsonl

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_gpus_per_node_0_submits_without_gres_and_runs_one_process_per_task(tmp_path, tiny_tokenizer_dir):
    files = make_data(tmp_path, tiny_tokenizer_dir)
    # two DeepSpeed processes on one node of the CPU partition; the local nodes have 2 CPUs each
    cfg = write_study(tmp_path / "cpu.yaml", study_dict(
        tmp_path, files, name="cpu", runs=[{"name": "lora2", "train.deepspeed": True, "train.nproc": 2,
                                             "train.zero_stage": 2}],
        slurm={"gres": "gpu", "gpus_per_node": 0}))
    dry = grid(cfg, "--dry-run")
    assert "CPU partition" in dry.stdout and "GPU-hours" not in dry.stdout, dry.stdout

    grid(cfg)
    study_dir = tmp_path / "cpu"
    entry = ledger(study_dir)["runs"]["lora2"]
    train_id = entry["train"]
    # while the controller still knows the job (MinJobAge): what it was granted
    shown = subprocess.run(["scontrol", "show", "job", train_id], capture_output=True, text=True).stdout
    wait_for_jobs([train_id, entry["eval"]], timeout_s=600)
    shown = subprocess.run(["scontrol", "show", "job", train_id], capture_output=True, text=True).stdout or shown
    fields = dict(f.split("=", 1) for f in shown.split() if "=" in f)
    assert fields.get("NumTasks") == "2" and fields.get("CPUs/Task") == "1", shown
    # a GPU request shows as TresPerNode=gres:gpu:N (or Gres=/TresPerJob=) and as gres/gpu in TRES
    assert not {"TresPerNode", "TresPerJob", "TresPerTask", "Gres"} & fields.keys(), shown
    assert "gpu" not in fields["TRES"], shown
    rows = sacct_rows([train_id, entry["eval"]])
    assert all(rows[j]["state"] == "COMPLETED" for j in (train_id, entry["eval"])), job_log_text(study_dir)
    tres = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "ReqTRES,AllocTRES", "-j", train_id],
                          capture_output=True, text=True).stdout
    assert "cpu=2" in tres and "gpu" not in tres, tres

    (summary,) = [r for r in read_jsonl(study_dir / "runs" / "lora2" / "metrics.jsonl") if r.get("summary")]
    assert summary["world_size"] == 2 and summary["device"] == "cpu", json.dumps(summary)
