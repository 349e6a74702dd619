"""The training loop on plain PyTorch (train.deepspeed: false): learning, outputs, schedule, data order,
errors. DeepSpeed runs are in test_train_deepspeed.py, interruptions in test_train_resume.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lorafull.train import trainer as train
from lorafull.train.distributed import grad_accumulation
from lorafull.runs import read_jsonl, read_status
from lorafull.train.engine import lr_lambda
from lorafull.train.order import BatchOrder


def metrics_of(run_dir):
    lines = list(read_jsonl(run_dir / "metrics.jsonl"))
    steps = [r for r in lines if "loss" in r and "event" not in r and not r.get("summary")]
    summaries = [r for r in lines if r.get("summary")]
    return steps, summaries


def assert_learned(steps, min_steps=30, margin=0.3):
    assert len(steps) >= min_steps and [r["step"] for r in steps] == list(range(1, len(steps) + 1))
    first = np.mean([r["loss"] for r in steps[:5]])
    last = np.mean([r["loss"] for r in steps[-5:]])
    assert last < first - margin, (first, last)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_plain_torch_trains_and_writes_the_contract(make_run, kind, capsys):
    run_dir = make_run(kind, **{"method.kind": kind})
    assert train.main([str(run_dir)]) == 0
    steps, summaries = metrics_of(run_dir)
    assert_learned(steps)
    for key in ("step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "step_time_s", "peak_mem_gb"):
        assert steps[-1][key] is not None and steps[-1][key] >= 0, key
    assert steps[-1]["epoch"] == pytest.approx(40 / (256 // 8))
    (summary,) = summaries
    expected_trainable = 164_672 if kind == "full" else 19_520
    assert summary["trainable_params"] == expected_trainable
    assert summary["added_params"] == (0 if kind == "full" else 19_520)
    assert summary["world_size"] == 1 and summary["device"] == "cpu" and summary["steps"] == 40
    assert summary["tokens_seen"] == steps[-1]["tokens_seen"] > 0
    assert summary["hours_per_epoch"] > 0 and summary["truncated"] == 0 and summary["data"]["samples"] == 256
    status = read_status(run_dir)
    assert status["state"] == "done" and status["stage"] == "train" and status["signature"]
    # checkpoints: every 10 steps, the last 2 kept
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000030", "step-00000040"]

    final = run_dir / "final"
    from lorafull.models.load import load_final

    model, tok = load_final(run_dir)
    if kind == "full":
        assert (final / "config.json").exists() and not (final / "adapter_config.json").exists()
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(final)
    else:
        config = json.loads((final / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str((run_dir / "base").resolve())
        assert config["r"] == 8
    ids = tok("What is 3 plus 4?", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits).all()

    # a rerun of a done run does nothing
    mtime = (run_dir / "metrics.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert train.main([str(run_dir)]) == 0
    assert "already done" in capsys.readouterr().err
    assert (run_dir / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_epochs_schedule_and_warmup_ratio(make_run):
    """epochs (float) instead of max_steps: 0.25 epoch of 32 steps = 8 steps; linear decay with a warmup ratio."""
    run_dir = make_run("epochs", **{"method.kind": "full", "train.max_steps": None, "train.epochs": 0.25,
                                    "train.warmup_steps": None, "train.warmup_ratio": 0.25,
                                    "train.scheduler": "linear"})
    assert train.main([str(run_dir)]) == 0
    steps, (summary,) = metrics_of(run_dir)
    assert len(steps) == 8 and steps[-1]["epoch"] == pytest.approx(0.25)
    peak = 3e-3
    expected = [peak * lr_lambda(8, 2, "linear")(s) for s in range(8)]
    assert [r["lr"] for r in steps] == pytest.approx(expected)
    assert expected[1] == pytest.approx(peak) and expected[-1] < peak / 4


def test_lr_lambda_shapes():
    cos = lr_lambda(100, 10, "cosine")
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(55) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0, abs=1e-12)
    lin = lr_lambda(100, 0, "linear")
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.5)
    assert lr_lambda(100, 5, "constant")(80) == 1.0


def test_batch_order_is_the_same_global_batch_for_any_world_size():
    lengths = np.arange(1, 101)
    one = BatchOrder(lengths, global_batch=8, micro_batch=2, world=1, rank=0, seed=1)
    ranks = [BatchOrder(lengths, global_batch=8, micro_batch=2, world=2, rank=r, seed=1) for r in (0, 1)]
    assert one.steps_per_epoch == 12
    for step in (0, 5, 11, 12, 30):
        mine = np.concatenate(one.micro_batches(step))
        split = [np.concatenate(o.micro_batches(step)) for o in ranks]
        assert len(one.micro_batches(step)) == 4 and len(ranks[0].micro_batches(step)) == 2
        assert sorted(mine) == sorted(np.concatenate(split)) and not set(split[0]) & set(split[1])
        assert one.tokens(step) == int(lengths[one.global_indices(step)].sum())
    epoch0 = np.concatenate([one.global_indices(s) for s in range(12)])
    epoch1 = np.concatenate([one.global_indices(s) for s in range(12, 24)])
    assert len(set(epoch0)) == 96 and not np.array_equal(epoch0, epoch1)
    # a fresh order (a resumed job) starts mid-epoch at the same samples
    fresh = BatchOrder(lengths, 8, 2, 1, 0, seed=1)
    assert np.array_equal(fresh.global_indices(17), one.global_indices(17))


def test_global_batch_must_divide():
    assert grad_accumulation(32, 2, 8) == 2
    with pytest.raises(ValueError, match="train.global_batch_size: 8 is not a multiple of micro_batch_size 4 x 3"):
        grad_accumulation(8, 4, 3)


def test_gradient_checkpointing_gives_the_same_losses(make_run):
    common = {"method.kind": "full", "train.max_steps": 4, "train.save_every_steps": 0}
    plain, ckpt = make_run("plain", **common), make_run("gc", **common, **{"train.gradient_checkpointing": True})
    assert train.main([str(plain)]) == 0 and train.main([str(ckpt)]) == 0
    a, b = ([r["loss"] for r in metrics_of(d)[0]] for d in (plain, ckpt))
    assert a == pytest.approx(b, rel=1e-5)


def test_bad_data_line_fails_with_one_line(make_run, capsys):
    run_dir = make_run("bad", **{"method.kind": "lora"})
    data = run_dir.parents[2] / "train.jsonl"
    lines = data.read_text().splitlines()
    lines[6] = '{"instruction": "broken", '
    data.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert train.main([str(run_dir)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "train.jsonl:7" in err[0], err
    status = read_status(run_dir)
    assert status["state"] == "failed" and "train.jsonl:7" in status["error"]
    assert (run_dir / "logs" / "train-error-rank0.log").exists()


def test_bad_target_module_fails_before_training(make_run, capsys):
    run_dir = make_run("badtarget", **{"method.target_modules": ["q_proj", "query_key_value"]})
    assert train.main([str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "query_key_value" in err and "down_proj, gate_proj, k_proj, lm_head" in err
    assert not (run_dir / "metrics.jsonl").exists() and read_status(run_dir)["state"] == "failed"


def test_multi_process_job_checks_inputs_before_starting_processes(make_run, capsys, monkeypatch):
    """nproc 2 would start torchrun; a bad data line must fail first, in the parent, in one line."""
    run_dir = make_run("bad2", **{"train.deepspeed": True, "train.nproc": 2})
    data = run_dir.parents[2] / "train.jsonl"
    data.write_text(data.read_text() + "not json\n")
    monkeypatch.setattr("lorafull.train.distributed.run_torchrun", lambda *a, **k: pytest.fail("torchrun started"))
    assert train.main([str(run_dir)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "train.jsonl:257" in err[0], err
    assert read_status(run_dir)["state"] == "failed"


def test_weight_decay_on_matrices_only():
    from lorafull.config import TrainConfig
    from lorafull.models.tiny import build_tiny_model
    from lorafull.train.engine import build_optimizer

    model = build_tiny_model("tiny-llama")
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1, lr=1e-4))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
