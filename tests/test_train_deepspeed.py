"""The same loop under real DeepSpeed ZeRO-2 / ZeRO-3 with 2 processes (torchrun started by the job
itself, gloo on the CPU), full and LoRA; and a 2-process job preempted, then SIGKILLed, that still ends
bitwise equal to an uninterrupted one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers.common import REPO, job_env, write_run_config
from lorafull.train import trainer as train
from lorafull.runs import read_jsonl, read_status

pytestmark = pytest.mark.slow


def run_job(run_dir: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=job_env(**env))


def step_lines(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "event" not in r]


def summary_of(run_dir: Path) -> dict:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("summary")][-1]


def final_weights(run_dir: Path) -> dict:
    final = run_dir / "final"
    name = "adapter_model.safetensors" if (final / "adapter_config.json").exists() else "model.safetensors"
    return load_file(str(final / name))


def descendants(pid: int) -> list[int]:
    """pid and every process below it (torchrun starts its workers in their own sessions, so killing a
    process group would miss them; Slurm kills the job's whole cgroup, which this imitates)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def ds(kind: str, stage: int, **more) -> dict:
    return {"method.kind": kind, "train.deepspeed": True, "train.nproc": 2, "train.zero_stage": stage, **more}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_tokenizer_dir):
    """(kind, stage) -> run folder of an uninterrupted 2-process run, trained once per module."""
    root, done = tmp_path_factory.mktemp("ds"), {}

    def get(kind: str, stage: int) -> Path:
        if (kind, stage) not in done:
            run_dir = write_run_config(root, f"{kind}-z{stage}", tiny_tokenizer_dir, **ds(kind, stage))
            result = run_job(run_dir)
            assert result.returncode == 0, result.stderr[-3000:]
            done[kind, stage] = run_dir
        return done[kind, stage]

    return get


@pytest.mark.parametrize("kind,stage", [("full", 2), ("lora", 2), ("full", 3), ("lora", 3)])
def test_deepspeed_two_processes_train(tmp_path, tiny_tokenizer_dir, trained, kind, stage):
    run_dir = trained(kind, stage)
    steps = step_lines(run_dir)
    assert [r["step"] for r in steps] == list(range(1, 41))
    first, last = np.mean([r["loss"] for r in steps[:5]]), np.mean([r["loss"] for r in steps[-5:]])
    assert last < first - 0.3, (first, last)
    summary = summary_of(run_dir)
    assert summary["world_size"] == 2 and summary["engine"] == f"deepspeed-zero{stage}"
    assert summary["trainable_params"] == (164_672 if kind == "full" else 19_520)  # ds_numel under ZeRO-3
    assert read_status(run_dir)["state"] == "done"
    weights = final_weights(run_dir)
    from lorafull.models.load import load_final

    model, tok = load_final(run_dir)
    if kind == "full":
        # consolidated from the shards: every tensor whole, loadable on its own
        assert weights["model.embed_tokens.weight"].shape == (512, 64) and len(weights) == 2 + 2 * 9 + 1
        # fp32 full fine-tuning has no randomness: one process and two agree (up to reduction order)
        plain = write_run_config(tmp_path, "plain", tiny_tokenizer_dir, **{"method.kind": "full"})
        assert train.main([str(plain)]) == 0
        np.testing.assert_allclose([r["loss"] for r in steps], [r["loss"] for r in step_lines(plain)], rtol=1e-4)
    else:
        assert len(weights) == 2 * 2 * 7 and all(w.numel() > 0 for w in weights.values())
        assert any(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)  # B starts at 0: it learned
        config = json.loads((run_dir / "final" / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str((run_dir / "base").resolve())
    ids = tok("What is 3 plus 4?", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits).all()


def test_deepspeed_preempted_then_killed_matches_uninterrupted(tmp_path, tiny_tokenizer_dir, trained):
    reference = trained("lora", 2)
    run_dir = write_run_config(tmp_path, "interrupted", tiny_tokenizer_dir, **ds("lora", 2))
    env = job_env(LORAFULL_FAULT_STEP_SLEEP_S="0.1")
    cmd = [sys.executable, "-m", "lorafull.train", str(run_dir)]

    log = open(tmp_path / "job.log", "w")  # a file, not a pipe: a full pipe would block the job

    def launch():
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True)

    def wait_for(proc, step):
        deadline = time.time() + 300
        while time.time() < deadline:
            if step_lines(run_dir) and step_lines(run_dir)[-1]["step"] >= step:
                return
            assert proc.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            time.sleep(0.05)
        raise AssertionError(f"step {step} not reached")

    # 1) SIGUSR2 to the job (it relays to both ranks through torchrun): both save at one step, exit 75
    proc = launch()
    wait_for(proc, 5)
    proc.send_signal(signal.SIGUSR2)
    proc.wait(timeout=300)
    assert proc.returncode == 75, (tmp_path / "job.log").read_text()[-3000:]
    status = read_status(run_dir)
    assert status["state"] == "queued" and status["preempted"] and 5 <= status["step"] < 40
    assert (run_dir / "checkpoints" / f"step-{status['step']:08d}" / "rng" / "rank-00001.pt").exists()

    # 2) requeued, then SIGKILL of the whole job (parent, torchrun, both ranks) after the step-20 checkpoint
    proc = launch()
    wait_for(proc, 22)
    tree = descendants(proc.pid)
    assert len(tree) >= 4  # this process, torchrun, 2 ranks
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    assert read_status(run_dir)["state"] == "running" and not (run_dir / "final").exists()

    # 3) requeued again: finishes, bit for bit the uninterrupted run
    result = run_job(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_status(run_dir)["resumed_from"] >= 20, (tmp_path / "job.log").read_text()[-3000:]
    a, b = final_weights(run_dir), final_weights(reference)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert [r["loss"] for r in step_lines(run_dir)] == [r["loss"] for r in step_lines(reference)]


@pytest.mark.slurm
def test_srun_tasks_are_the_ranks(tmp_path, tiny_tokenizer_dir):
    """Mode (c): two srun tasks (one per node when the cluster has two) find each other from SLURM_*."""
    import shutil

    if shutil.which("srun") is None:
        pytest.skip("no srun on this machine")
    run_dir = write_run_config(tmp_path, "srun", tiny_tokenizer_dir,
                               **ds("lora", 3, **{"train.nproc": 1, "train.max_steps": 12}))
    result = subprocess.run(["srun", "-n2", "--time=10", "--export=ALL,OMP_NUM_THREADS=1", sys.executable, "-m",
                             "lorafull.train", str(run_dir)], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env=job_env())
    assert result.returncode == 0, result.stderr[-3000:]
    summary = summary_of(run_dir)
    assert summary["world_size"] == 2 and summary["steps"] == 12
    assert (run_dir / "checkpoints" / "step-00000012" / "rng" / "rank-00001.pt").exists()
