"""The training knobs the papers need: Lion (LionW) and its betas, the cosine floor (min_lr_ratio), a token
budget with checkpoints at token counts, under plain torch and under real DeepSpeed on the CPU."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers.common import REPO, job_env
from lorafull.runs import read_jsonl, read_status
from lorafull.train import trainer as train
from lorafull.train.engine import lr_lambda
from lorafull.train.lion import Lion

PEAK = 1e-2
LION_FLOOR = {"train.optimizer": "lion", "train.betas": [0.9, 0.95], "train.min_lr_ratio": 0.1,
              "train.scheduler": "cosine", "train.max_steps": 8, "train.warmup_steps": 2, "train.lr": PEAK,
              "train.weight_decay": 0.1, "train.save_every_steps": 0}


def lines_of(run_dir):
    rows = list(read_jsonl(run_dir / "metrics.jsonl"))
    return [r for r in rows if "loss" in r and not r.get("summary") and "event" not in r], \
        [r for r in rows if r.get("summary")][-1]


def test_lion_follows_the_papers_update_rule_with_decoupled_decay():
    torch.manual_seed(0)
    w = torch.randn(4, 3)
    grads = [torch.randn(4, 3) for _ in range(3)]
    p = torch.nn.Parameter(w.clone())
    opt = Lion([p], lr=0.01, betas=(0.9, 0.95), weight_decay=0.5)
    theta, m = w.clone(), torch.zeros_like(w)
    for g in grads:  # the rule written out by hand (Chen et al. 2023, Algorithm 2)
        p.grad = g.clone()
        opt.step()
        theta = theta * (1 - 0.01 * 0.5) - 0.01 * torch.sign(0.9 * m + 0.1 * g)
        m = 0.95 * m + 0.05 * g
    assert torch.allclose(p.detach(), theta, atol=1e-7)
    with pytest.raises(ValueError, match="train.betas"):
        Lion([p], betas=(0.9, 1.2))


def test_cosine_floor_shape():
    f = lr_lambda(100, 10, "cosine", 0.1)
    assert f(9) == pytest.approx(1.0) and f(100) == pytest.approx(0.1) and f(55) == pytest.approx(0.55)
    assert lr_lambda(100, 0, "linear", 0.2)(100) == pytest.approx(0.2)


def test_lion_and_the_floor_reach_the_torch_optimizer(make_run):
    run_dir = make_run("lion", **{"method.kind": "lora", **LION_FLOOR})
    assert train.main([str(run_dir)]) == 0
    steps, summary = lines_of(run_dir)
    assert summary["optimizer"] == "Lion" and summary["engine"] == "torch"
    # the lr each step used, then the lr the optimizer holds after the last step: exactly the floor
    assert [r["lr"] for r in steps] == pytest.approx([PEAK * lr_lambda(8, 2, "cosine", 0.1)(s) for s in range(8)])
    assert steps[-1]["lr"] > PEAK * 0.1 and summary["lr_after_last_step"] == pytest.approx(PEAK * 0.1)


def test_lion_and_the_floor_reach_the_deepspeed_optimizer(make_run):
    run_dir = make_run("lion_ds", **{"method.kind": "full", **LION_FLOOR, "train.deepspeed": True, "train.nproc": 1,
                                     "train.zero_stage": 2, "model.dtype": "bf16"})
    proc = subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=job_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps, summary = lines_of(run_dir)
    assert summary["engine"] == "deepspeed-zero2" and summary["optimizer"] == "Lion"
    assert [r["lr"] for r in steps] == pytest.approx([PEAK * lr_lambda(8, 2, "cosine", 0.1)(s) for s in range(8)])
    assert summary["lr_after_last_step"] == pytest.approx(PEAK * 0.1)
    assert steps[-1]["loss"] < steps[0]["loss"]


def test_a_token_budget_sets_the_length_and_token_checkpoints_are_kept(make_run):
    run_dir = make_run("cpt", **{"method.kind": "lora", "train.max_steps": None, "train.epochs": 1,
                                 "train.max_tokens": 6000, "train.save_at_tokens": [1000, 3000],
                                 "train.save_every_steps": 0, "train.keep_checkpoints": 1})
    assert train.main([str(run_dir)]) == 0
    steps, summary = lines_of(run_dir)
    tokens = [r["tokens_seen"] for r in steps]
    # stops at the first step that reaches the budget, even past train.epochs (1 epoch = 32 steps)
    assert tokens[-1] >= 6000 and tokens[-2] < 6000 and summary["tokens_seen"] == tokens[-1]
    kept = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").iterdir())
    expected = [next(r["step"] for r in steps if r["tokens_seen"] >= t) for t in (1000, 3000)]
    assert kept == expected + [len(steps)], (kept, expected)  # pinned ones survive keep_checkpoints: 1
    assert read_status(run_dir)["state"] == "done"
