"""method.kind: qlora -- a tiny llama trains in the one loop on a base held in 4 bits by bitsandbytes (its
layers are Linear4bit), resumes bit for bit, saves a peft adapter that loads on the unquantised base,
merges into the dequantised base within a stated bound of the 4-bit model with the adapter, generates,
is planned with 4-bit weights, and refuses bad settings in one line."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.common import IN_CI, REPO, job_env, write_jsonl, write_run_config
from helpers.eval_runs import eval_items
from lorafull.runs import read_jsonl, read_status

try:
    import bitsandbytes as bnb
except ImportError:  # a clone without the extra skips; CI installs the test extra, where it is a failure
    if IN_CI:
        raise
    pytest.skip("method.kind qlora needs bitsandbytes (pip install -e '.[qlora]')", allow_module_level=True)

QLORA = {"method.kind": "qlora", "train.max_steps": 30, "train.save_every_steps": 10, "eval.max_new_tokens": 8}
# The merged model (dequantised base + adapter, fp32) against the 4-bit model with the adapter: the same
# linear maps on the same dequantised weights, only the order of the float sums differs, so the logits
# agree to fp32 rounding (measured 4.2e-7 on this model); the unquantised base with the adapter is off by
# the quantisation error itself (measured 0.058), which merging into the original weights would leave.
MERGE_BOUND = 1e-5
QUANTISATION_ERROR_AT_LEAST = 1e-2


def losses(run_dir: Path) -> dict:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "event" not in r}


def adapter_weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "final" / "adapter_model.safetensors"))


def logits(model, tok) -> torch.Tensor:
    batch = tok(["What is 3 plus 4?", "Repeat the word. cat"], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("qlora")


@pytest.fixture(scope="module")
def qlora_run(root, tiny_tokenizer_dir):
    """(run folder, the model the trainer trained): 30 steps, plain torch, fp32, checkpoints every 10."""
    from lorafull.config import load_run_config
    from lorafull.train.distributed import detect_env
    from lorafull.train.stop import StopGate
    from lorafull.train.trainer import Trainer

    eval_set = write_jsonl(root / "eval.jsonl", eval_items(3))
    run_dir = write_run_config(root, "q", tiny_tokenizer_dir, **QLORA, **{"eval.eval_set": str(eval_set)})
    trainer = Trainer(run_dir, load_run_config(run_dir, for_training=True), detect_env(), StopGate())  # no handlers
    assert trainer.run_to_end() == 0, read_status(run_dir)
    return run_dir, trainer.engine.model


def test_a_tiny_llama_trains_on_a_4bit_base(qlora_run):
    run_dir, model = qlora_run
    adapted = {name: m.base_layer for name, m in model.named_modules() if hasattr(m, "lora_A")}
    assert len(adapted) == 2 * 7  # all-linear: q k v o gate up down in both layers
    for name, layer in adapted.items():
        assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.dtype == torch.uint8, name
        assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.quant_state.nested, name
    assert not isinstance(model.get_output_embeddings(), bnb.nn.Linear4bit)  # the head stays in 16/32 bit
    curve = list(losses(run_dir).values())
    assert len(curve) == 30 and sum(curve[:5]) / 5 > sum(curve[-5:]) / 5 + 0.15, curve
    summary = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("summary")][-1]
    # counted as weights, not packed bytes: the same 164,672 base + 19,520 LoRA parameters as a lora run
    assert summary["trainable_params"] == summary["added_params"] == 19_520
    assert summary["total_params"] == 164_672 + 19_520 and summary["engine"] == "torch"


def test_the_adapter_loads_with_peft_on_the_unquantised_base(qlora_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _ = qlora_run
    final = run_dir / "final"
    config = json.loads((final / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((run_dir / "base").resolve())
    assert json.loads((final / "qlora_config.json").read_text()) == {
        "quant_type": "nf4", "double_quant": True, "compute_dtype": "fp32", "base_dtype": "fp32"}
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"], dtype=torch.float32)
    plain = PeftModel.from_pretrained(base, str(final))
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in plain.modules())
    loaded = {n: p for n, p in plain.named_parameters() if "lora_" in n}
    saved = adapter_weights(run_dir)
    assert len(loaded) == len(saved) == 28
    assert all(loaded[n.replace(".weight", ".default.weight")].equal(t) for n, t in saved.items())


def test_the_merged_model_matches_the_4bit_model_with_its_adapter(qlora_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lorafull.models import merge
    from lorafull.models.load import load_final

    run_dir, _ = qlora_run
    four_bit, tok = load_final(run_dir, dtype="fp32")  # the 4-bit base rebuilt from qlora_config.json + adapter
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in four_bit.modules())
    reference = logits(four_bit, tok)
    with four_bit.disable_adapter():
        assert (logits(four_bit, tok) - reference).abs().max() > 0.1  # the adapter changes the output

    assert merge.main([str(run_dir)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(str(run_dir / "merged"))
    assert "quantization_config" not in json.loads((run_dir / "merged" / "config.json").read_text())
    assert not any(isinstance(m, bnb.nn.Linear4bit) or "lora" in n for n, m in merged.named_modules())
    merge_error = (logits(merged, tok) - reference).abs().max().item()
    assert merge_error < MERGE_BOUND

    unquantised = AutoModelForCausalLM.from_pretrained(str(run_dir / "base"), dtype=torch.float32)
    on_original = PeftModel.from_pretrained(unquantised, str(run_dir / "final"))
    assert (logits(on_original, tok) - reference).abs().max().item() > QUANTISATION_ERROR_AT_LEAST


@pytest.mark.slow
def test_a_killed_qlora_run_resumes_bit_for_bit(root, tiny_tokenizer_dir, qlora_run):
    """Killed while writing the step-20 checkpoint: the rerun continues from step 10 and ends where the
    uninterrupted run ended, to the last bit (CPU, fp32, one thread)."""
    reference, _ = qlora_run
    run_dir = write_run_config(root, "killed", tiny_tokenizer_dir, **QLORA)
    proc = subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=job_env(LORAFULL_FAULT_KILL_IN_SAVE="20"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    from lorafull.train import trainer as train

    assert train.main([str(run_dir)]) == 0
    assert read_status(run_dir)["resumed_from"] == 10
    a, b = adapter_weights(run_dir), adapter_weights(reference)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert losses(run_dir) == losses(reference)


def test_a_qlora_run_generates_on_its_4bit_base_and_reports_as_its_own_method(qlora_run):
    from lorafull.generate.stage import generate_run
    from lorafull.report.rows import run_row

    run_dir, _ = qlora_run
    stats = generate_run(run_dir, progress=False)
    assert stats["generated"] == 3 and stats["backend"] == "hf"
    responses = list(read_jsonl(run_dir / "responses.jsonl"))
    assert len(responses) == 3 and all(isinstance(r["response"], str) for r in responses)
    row, _ = run_row(run_dir)
    assert row["method"] == "qlora r=8"


@pytest.mark.slow
def test_qlora_trains_under_deepspeed_zero_2_and_resumes_bit_for_bit(root, tiny_tokenizer_dir):
    """ZeRO-2, one process: the frozen 4-bit base stays out of the checkpoints; a new job given the step-8
    checkpoint resumes from it and ends bitwise where the job that wrote it ended (a kill while saving is
    the plain-torch test's: two jobs here, not three, as a job's time is mostly its start-up)."""
    settings = {**QLORA, "train.deepspeed": True, "train.nproc": 1, "train.zero_stage": 2, "train.max_steps": 12,
                "train.save_every_steps": 4}

    def train_job(run_dir: Path) -> None:
        proc = subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO,
                              capture_output=True, text=True, timeout=900, env=job_env())
        assert proc.returncode == 0, proc.stderr[-3000:]

    whole = write_run_config(root, "z2", tiny_tokenizer_dir, **settings)
    train_job(whole)
    summary = [r for r in read_jsonl(whole / "metrics.jsonl") if r.get("summary")][-1]
    assert summary["engine"] == "deepspeed-zero2" and summary["trainable_params"] == 19_520
    curve = list(losses(whole).values())
    assert sum(curve[:4]) / 4 > sum(curve[-4:]) / 4
    ckpt = whole / "checkpoints" / "step-00000008"
    saved = sum(f.stat().st_size for f in (ckpt / "engine").rglob("*") if f.is_file())
    assert saved < 20 * 19_520 * 4  # adapters, their Adam moments and DeepSpeed's bookkeeping: no base weights

    resumed = write_run_config(root, "z2_resumed", tiny_tokenizer_dir, **settings)
    shutil.copytree(ckpt, resumed / "checkpoints" / ckpt.name)
    train_job(resumed)
    assert read_status(resumed)["resumed_from"] == 8
    a, b = adapter_weights(resumed), adapter_weights(whole)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert losses(resumed) == {step: loss for step, loss in losses(whole).items() if step > 8}


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def test_qlora_under_zero_3_or_offload_is_refused_in_one_line(make_run, tmp_path):
    from lorafull.config import ConfigError, load_study

    run_dir = make_run("z3", **{"method.kind": "qlora", "train.deepspeed": True, "train.zero_stage": 3})
    proc = subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=job_env())
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 1 and "train.zero_stage" in line and "qlora" in line and "config.yaml" in line
    study = tmp_path / "s.yaml"
    study.write_text("study: {name: s}\nbase:\n  model: {name_or_path: /PATH/TO/llama-7b-hf}\n"
                     "  method: {kind: qlora}\n  train: {zero_stage: 2, offload: true}\n")
    with pytest.raises(ConfigError) as e:
        load_study(study)
    assert "s.yaml:5" in str(e.value) and "train.offload" in str(e.value) and "\n" not in str(e.value)


def test_qlora_without_bitsandbytes_says_so_in_one_line(make_run, tmp_path):
    """bitsandbytes hidden from the job's imports (a sitecustomize that makes it unfindable), not uninstalled."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hidden:\n"
        "    def __init__(self, inner):\n"
        "        self.inner = inner\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'bitsandbytes':\n"
        "            return None\n"
        "        return self.inner.find_spec(name, path, target)\n"
        "    def __getattr__(self, name):\n"
        "        return getattr(self.inner, name)\n"
        "sys.meta_path[:] = [_Hidden(f) if hasattr(f, 'find_spec') else f for f in sys.meta_path]\n")
    run_dir = make_run("nobnb", **{"method.kind": "qlora"})
    env = job_env(PYTHONPATH=f"{hide}:{REPO}")
    check = subprocess.run([sys.executable, "-c", "import bitsandbytes"], capture_output=True, text=True, env=env)
    assert check.returncode == 1 and "No module named 'bitsandbytes'" in check.stderr  # the simulation holds
    proc = subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 1 and "method.kind: qlora needs the bitsandbytes package" in line
    assert "pip install" in line and read_status(run_dir)["state"] == "failed"


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("double_quant", [True, False])
def test_the_plan_counts_the_bytes_bitsandbytes_stores(qlora_run, double_quant):
    """packed_bytes (half a byte a weight + the block scales) against what bitsandbytes itself holds."""
    from lorafull.config import MethodConfig
    from lorafull.models.load import count_params_meta
    from lorafull.models.qlora import load_4bit, packed_bytes

    run_dir, _ = qlora_run
    base = str(run_dir / "base")
    model = load_4bit(base, {"quant_type": "nf4", "double_quant": double_quant, "compute_dtype": "fp32",
                             "base_dtype": "fp32"})
    stored, weights = 0, 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            qs = m.weight.quant_state
            weights += qs.shape.numel()
            tensors = [m.weight.data, qs.absmax] + ([qs.state2.absmax, qs.offset] if qs.nested else [])
            stored += sum(t.numel() * t.element_size() for t in tensors)
    counts = count_params_meta(base, MethodConfig(kind="qlora", double_quant=double_quant))
    assert counts["quantized"] == weights == 2 * (4 * 64 * 64 + 3 * 64 * 172)  # every linear layer but the head
    # exact without double quantisation; with it, each tensor rounds its second-level blocks up (tiny here)
    assert packed_bytes(counts["quantized"], double_quant) == pytest.approx(stored, rel=0.005 if double_quant else 1e-12)


def belle_with_qlora(tmp_path: Path) -> Path:
    """configs/belle_comparative.yaml with its commented qlora arm uncommented, and a 13B full fine-tuning
    row at the qlora 13B row's settings (ZeRO-2 over 8 GPUs, no offload)."""
    import yaml

    lines, in_arm = [], False
    for line in (REPO / "configs" / "belle_comparative.yaml").read_text().splitlines():
        in_arm = line.startswith("  # - {name: qlora") or (in_arm and line.startswith("  #    "))
        lines.append("  " + line[len("  # "):] if in_arm else line)
    study = yaml.safe_load("\n".join(lines))
    rows = {r["name"]: r for r in study["runs"]}
    assert {"qlora_2m", "qlora_13b_2m"} <= set(rows), "the commented qlora arm is missing"
    study["runs"].append({**rows["qlora_13b_2m"], "name": "full_13b_2m", "method.kind": "full"})
    study["study"]["output_dir"] = str(tmp_path / "study")
    path = tmp_path / "belle_qlora.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_the_belle_plan_puts_qlora_beside_lora_and_full_fine_tuning(tmp_path):
    from lorafull.config import load_study
    from lorafull.plan.estimate import estimate_study, format_plan

    rows, totals = estimate_study(load_study(belle_with_qlora(tmp_path)))
    by = {r["run"]: r for r in rows}
    q7, l7 = by["qlora_2m"], by["lora_2m"]
    # the same adapters (Baize's six modules at r 8), over a base a quarter of the size
    assert q7["trainable_params"] == l7["trainable_params"] == 17_891_328
    assert q7["total_params"] == l7["total_params"]
    assert q7["mem_per_gpu_gb"] < l7["mem_per_gpu_gb"]
    assert q7["mem_parts_gb"]["weights"] < 0.3 * l7["mem_parts_gb"]["weights"]
    assert q7["mem_parts_gb"]["optimizer"] == pytest.approx(l7["mem_parts_gb"]["optimizer"])
    # dequantising costs time: more FLOPs per token and a step part of its own
    assert q7["flops_per_token"] > l7["flops_per_token"] and q7["step_parts_s"]["dequantize"] > 0
    assert l7["step_parts_s"]["dequantize"] == 0
    assert by["qlora_13b_2m"]["fits"] is True and by["full_13b_2m"]["fits"] is False
    assert "full_13b_2m" in totals["not_fitting"] and "qlora_13b_2m" not in totals["not_fitting"]
    text = format_plan(rows, totals)
    assert "qlora_13b_2m: step" in text and "dequantize" in text


def test_qlora_settings_name_qlora_runs_only():
    """method.quant_type / double_quant / compute_dtype are in a qlora run's signature and in no other
    kind's, so adding them renamed no existing run."""
    import dataclasses

    from lorafull.config import RunConfig, signature

    def with_method(run, **method):
        return dataclasses.replace(run, method=dataclasses.replace(run.method, **method))

    for kind, counts in (("lora", False), ("full", False), ("qlora", True)):
        run = with_method(RunConfig(name="r"), kind=kind)
        changed = [signature(with_method(run, **{k: v})) != signature(run)
                   for k, v in (("quant_type", "fp4"), ("double_quant", False), ("compute_dtype", "bf16"))]
        assert changed == [counts] * 3, kind


def test_the_tradeoff_draws_qlora_as_a_curve_of_its_own():
    """Report rows of lora and qlora runs (their labels and settings as the report makes them) give two
    curves, `lora r=8` and `qlora r=8`, compared at matched learning like any two methods."""
    from lorafull.analysis.tradeoff import tradeoff
    from lorafull.config import RunConfig
    from lorafull.models.method_table import method_of
    from lorafull.report.rows import comparable_setting

    rows = []
    for kind, forgetting in (("lora", 0.1), ("qlora", 0.3)):
        for epochs, learning in ((1, 0.2), (2, 0.6)):
            cfg = RunConfig(name=f"{kind}{epochs}")
            cfg.method.kind, cfg.train.epochs = kind, epochs
            rows.append({"run": cfg.name, "method": method_of(cfg).label(cfg.method), "_seed": 1,
                         "_setting": comparable_setting(cfg),
                         "_samples": {"learning": {"t": dict(enumerate([learning] * 3))},
                                      "forgetting": {"s": dict(enumerate([forgetting] * 2))}}})
    assert "method.quant_type" in rows[2]["_setting"] and "method.quant_type" not in rows[0]["_setting"]
    body = tradeoff(rows, swept=[])
    assert [c["name"] for c in body["curves"]] == ["lora r=8", "qlora r=8"]
    assert [len(c["points"]) for c in body["curves"]] == [2, 2] and body["matched_learning"]
