"""Full FT vs LoRA on one GPU, side by side in one run: throughput, peak memory, and the plan's
memory estimate against the measured peak.

    python bench/bench_gpu.py [--arch llama-1b] [--steps 30] [--seq 512] [--micro 4] [--global-batch 32]

Both runs train the same randomly initialised architecture (no weights are downloaded) on the same
synthetic instruction data through `python -m lorafull.train`, under DeepSpeed ZeRO-2 in bf16, and
read tokens/s and peak memory from their metrics.jsonl. On a machine with no GPU it runs on the CPU
with a tiny model (useful only to check the script).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# A 1.1B LLaMA-shaped model (TinyLlama's published shape, MHA instead of GQA to keep the count simple)
LLAMA_1B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
            "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "initializer_range": 0.02}


def synthetic_records(n: int, words: int) -> list[dict]:
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(400)] + ["的", "是", "在", "我们", "模型", "数据"]
    return [{"instruction": " ".join(rng.choices(vocab, k=24)), "input": "",
             "output": " ".join(rng.choices(vocab, k=words))} for _ in range(n)]


def write_study(work: Path, arch_path: str, tokenizer: Path, data: Path, args, cuda: bool) -> Path:
    dtype = "bf16" if cuda else "fp32"
    text = f"""
study: {{name: bench_gpu, output_dir: {work / 'study'}}}
base:
  model: {{name_or_path: "scratch:{arch_path}", tokenizer: {tokenizer}, dtype: {dtype}}}
  method: {{kind: lora, r: 8, alpha: 16, dropout: {args.lora_dropout}, target_modules: all-linear}}
  data: {{train: {data}, max_length: {args.seq}}}
  train: {{max_steps: {args.steps}, global_batch_size: {args.global_batch}, micro_batch_size: {args.micro},
          lr: 1.0e-4, warmup_steps: 2, zero_stage: 2, save_every_steps: 100000, log_every_steps: 1,
          gradient_checkpointing: {str(args.checkpointing).lower()}, nproc: 1}}
runs:
  - {{name: full, method.kind: full, train.lr: 1.0e-5}}
  - {{name: lora, method.kind: lora}}
slurm: {{gpus_per_node: 1, gpu_mem_gb: {args.gpu_mem_gb}}}
plan: {{avg_tokens_per_sample: {args.seq}}}
"""
    path = work / "study.yaml"
    path.write_text(text)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="llama-1b", help="llama-1b, a shipped arch name, or a config.json path")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--global-batch", type=int, default=32)
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--gpu-mem-gb", type=float, default=80.0)
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    args = ap.parse_args()

    import torch

    from lorafull.config import load_study, save_run_config, study_signatures
    from lorafull.plan.estimate import estimate_run
    from lorafull.runs import read_jsonl
    from lorafull.models.tiny import build_tokenizer

    cuda = torch.cuda.is_available()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    arch = args.arch
    if not cuda:
        arch, args.seq, args.micro, args.global_batch = "tiny-llama", 128, 2, 8
        print("no GPU: running the tiny model on the CPU (checks the script, measures nothing useful)")
    if arch == "llama-1b":
        arch = str(work / "llama-1b.json")
        Path(arch).write_text(json.dumps(LLAMA_1B))
    records = synthetic_records(max(args.global_batch * args.steps, 256), words=args.seq)
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tok = work / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        build_tokenizer([r["instruction"] + " " + r["output"] for r in records[:200]], tok, vocab_size=2000)
    study = load_study(write_study(work, arch, tok, data, args, cuda))
    sigs = study_signatures(study)

    results = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    for run in study.runs:
        if run.name not in args.methods.split(","):
            continue
        run_dir = study.run_dir(run)
        save_run_config(run, run_dir, sigs[run.name])
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], env=env, cwd=REPO)
        wall = time.time() - t0
        if proc.returncode != 0:
            print(f"{run.name}: training failed (exit {proc.returncode}); see {run_dir}/status.json")
            return 1
        rows = list(read_jsonl(run_dir / "metrics.jsonl"))
        steps = [r for r in rows if "step" in r and "tokens_per_s" in r]
        tail = steps[len(steps) // 3:]  # skip warm-up steps (allocator, kernels, first-step compile)
        summary = next(r for r in rows if r.get("summary"))
        plan = estimate_run(run, study)
        results[run.name] = {
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in tail),
            "step_time_s": statistics.median(r["step_time_s"] for r in tail),
            "peak_mem_gb": max(r["peak_mem_gb"] for r in steps),
            "plan_mem_gb": plan["mem_per_gpu_gb"],
            "trainable": summary.get("trainable_params"), "total": summary.get("total_params"),
            "wall_s": wall,
        }
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"\ndevice: {device}; arch: {Path(arch).stem}; seq {args.seq}, micro {args.micro}, global batch "
          f"{args.global_batch}, {args.steps} steps, ZeRO-2, {'bf16' if cuda else 'fp32'}, "
          f"gradient checkpointing {'on' if args.checkpointing else 'off'}")
    print(f"{'run':6} {'trainable':>14} {'tokens/s':>10} {'step s':>8} {'peak GB':>8} {'plan GB':>8} {'plan/peak':>9}")
    for name, r in results.items():
        ratio = r["plan_mem_gb"] / r["peak_mem_gb"] if r["plan_mem_gb"] and r["peak_mem_gb"] else float("nan")
        print(f"{name:6} {r['trainable']:>14,} {r['tokens_per_s']:>10.0f} {r['step_time_s']:>8.3f} "
              f"{r['peak_mem_gb']:>8.2f} {r['plan_mem_gb'] or float('nan'):>8.2f} {ratio:>9.2f}")
    if {"full", "lora"} <= results.keys():
        f, lo = results["full"], results["lora"]
        print(f"LoRA / full: tokens/s {lo['tokens_per_s'] / f['tokens_per_s']:.2f}x, "
              f"peak memory {lo['peak_mem_gb'] / f['peak_mem_gb']:.2f}x")
    (work / "bench_gpu.json").write_text(json.dumps({"device": device, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
