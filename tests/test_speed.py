"""The fast path (train.adapter_dtype, compile, group_by_length, fused_kernels; LoRA dropout 0): each option
trains the loss curve of the plain path within a stated tolerance and resumes bitwise; the padding
fraction in metrics.jsonl. The auto batch settings are in test_auto_batch.py."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from helpers.common import REPO, job_env
from lorafull.runs import read_jsonl, read_status
from lorafull.train import trainer as train

SHORT = {"train.max_steps": 8, "train.save_every_steps": 4, "train.global_batch_size": 8,
         "train.micro_batch_size": 2, "method.kind": "lora"}


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "event" not in r
            and not r.get("summary")]


def step_lines(run_dir) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "event" not in r
            and not r.get("summary")]


def final_weights(run_dir) -> dict:
    final = run_dir / "final"
    name = "adapter_model.safetensors" if (final / "adapter_config.json").exists() else "model.safetensors"
    return load_file(str(final / name))


def preempted_at(run_dir, step: int, monkeypatch) -> int:
    """Train in this process and stop (as on SIGUSR2) before optimizer step `step` + 1: exit 75."""
    calls = {"n": 0}

    def stop_at(flag, device):
        calls["n"] += 1
        if calls["n"] > step + 1:  # after the stop: the trainer's next question (was it the user's SIGINT?)
            return bool(flag)  # is answered as asked
        return calls["n"] > step

    with monkeypatch.context() as m:
        m.setattr(train.dist, "any_rank", stop_at)
        return train.main([str(run_dir)])


def test_dropout_zero_puts_no_dropout_module_in_the_model():
    from lorafull.config import MethodConfig
    from lorafull.models.load import apply_method
    from lorafull.models.tiny import build_tiny_model

    def dropouts(p):
        model = apply_method(build_tiny_model("tiny-llama", seed=0), MethodConfig(dropout=p))
        return sum(isinstance(m, torch.nn.Dropout) for m in model.modules())

    assert dropouts(0.0) == 0 and dropouts(0.05) > 0


def test_compute_adapter_dtype_drops_the_upcast_without_changing_a_bf16_forward():
    """Plain torch keeps fp32 adapters (the master weights) either way; with adapter_dtype: compute the
    bf16 activations no longer get copied to fp32 first -- and the autocast forward is bitwise the same,
    since autocast would have cast them straight back down."""
    from lorafull.config import MethodConfig
    from lorafull.models.load import apply_method
    from lorafull.models.tiny import build_tiny_model

    ids = torch.randint(3, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    out = {}
    for dtype in (None, torch.float32):
        base = build_tiny_model("tiny-llama", seed=0).to(torch.bfloat16)
        model = apply_method(base, MethodConfig(dropout=0.0), seed=0, adapter_dtype=dtype)
        lora = [p for n, p in model.named_parameters() if "lora_B" in n]
        for p in lora:  # B starts at zero: give the adapters something to contribute
            torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(1))
        assert all(p.dtype == torch.float32 for p in lora)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out[dtype] = model(input_ids=ids, labels=ids).loss.detach()
    assert out[None].equal(out[torch.float32])
    # under DeepSpeed the adapters are held in the compute dtype (its optimizer keeps the fp32 master)
    model = apply_method(build_tiny_model("tiny-llama", seed=0).to(torch.bfloat16), MethodConfig(), seed=0,
                         adapter_dtype=torch.bfloat16)
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.bfloat16}


# option -> (settings, relative tolerance of its fp32 loss curve against the plain path's: first step, curve)
OPTIONS = {
    # fp32: the input cast it removes is a no-op, so the curve is the same to the bit
    "adapter_dtype": ({"train.adapter_dtype": "compute"}, 0.0, 0.0),
    # the same samples per step, regrouped into micro batches: each micro batch's loss is a mean over its
    # own tokens, so the weighting of samples within a step moves a little, from the first step on
    "group_by_length": ({"train.group_by_length": True}, 0.05, 0.05),
}
SLOW_OPTIONS = {
    # fused kernels reorder float sums: ~1e-6 on the first step, grown by 8 Adam steps at lr 1e-2
    "compile": ({"train.compile": True}, 1e-5, 2e-3),
}


@pytest.mark.parametrize("option", [*OPTIONS, *(pytest.param(o, marks=pytest.mark.slow) for o in SLOW_OPTIONS)])
def test_each_option_trains_the_plain_loss_curve_and_resumes_bitwise(make_run, monkeypatch, option):
    settings, first_step, curve = {**OPTIONS, **SLOW_OPTIONS}[option]
    plain, fast, resumed = (make_run(name, **SHORT, **settings if name != "plain" else {})
                            for name in ("plain", option, f"{option}-resumed"))
    assert train.main([str(plain)]) == 0 and train.main([str(fast)]) == 0
    assert losses(fast)[0] == pytest.approx(losses(plain)[0], rel=first_step, abs=1e-7)
    assert losses(fast) == pytest.approx(losses(plain), rel=curve, abs=1e-7)
    assert preempted_at(resumed, 3, monkeypatch) == train.EXIT_PREEMPTED
    assert train.main([str(resumed)]) == 0
    a, b = final_weights(fast), final_weights(resumed)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert losses(resumed) == losses(fast)


def test_grouping_by_length_lowers_the_padding_fraction_in_metrics(make_run):
    plain, grouped = make_run("plain", **SHORT), make_run("grouped", **SHORT, **{"train.group_by_length": True})
    assert train.main([str(plain)]) == 0 and train.main([str(grouped)]) == 0
    pad_plain = [r["padding_fraction"] for r in step_lines(plain)]
    pad_grouped = [r["padding_fraction"] for r in step_lines(grouped)]
    assert all(0 <= p < 1 for p in pad_plain + pad_grouped)
    assert sum(pad_grouped) < 0.8 * sum(pad_plain), (pad_plain, pad_grouped)


def test_fused_kernels_without_a_gpu_is_one_line_naming_the_setting(make_run, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the kernels may well run")
    run_dir = make_run("fused", **SHORT, **{"train.fused_kernels": True})
    assert train.main([str(run_dir)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "train.fused_kernels: the Liger-Kernel kernels need a CUDA GPU" in err[0], err
    assert read_status(run_dir)["state"] == "failed" and not (run_dir / "final").exists()


def job(run_dir, **env) -> subprocess.Popen:
    """`python -m lorafull.train RUN_DIR` in its own process (DeepSpeed's groups live once per process)."""
    return subprocess.Popen([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO, env=job_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finished(proc: subprocess.Popen, rc: int = 0) -> bool:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == rc, err[-3000:]
    return True


@pytest.mark.slow
def test_deepspeed_fast_lora_trains_the_plain_curve_and_resumes_bitwise(make_run):
    """The same under DeepSpeed (ZeRO-2, one process, fp32): compute-dtype adapters and length grouping
    against the plain path (dropout 0 in both), then the fast run preempted mid-way and resumed."""
    ds = {**SHORT, "train.deepspeed": True, "train.zero_stage": 2, "method.dropout": 0.0}
    fast_options = {"train.adapter_dtype": "compute", "train.group_by_length": True}
    plain, fast, resumed = (make_run(n, **ds, **({} if n == "plain" else fast_options))
                            for n in ("plain", "fast", "fast-resumed"))
    assert finished(job(plain)) and finished(job(fast))
    assert losses(fast) == pytest.approx(losses(plain), rel=0.05)
    proc = job(resumed, LORAFULL_FAULT_STEP_SLEEP_S="1.0")
    deadline = time.time() + 300
    while not losses(resumed) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR2)
    assert finished(proc, rc=train.EXIT_PREEMPTED)
    stopped_at = read_status(resumed)["step"]
    assert 1 <= stopped_at < 8
    assert finished(job(resumed)) and read_status(resumed)["resumed_from"] == stopped_at
    a, b = final_weights(fast), final_weights(resumed)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert losses(resumed) == losses(fast)
