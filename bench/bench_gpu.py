"""Full FT vs LoRA on one GPU, each with the fast path off and on, side by side in one run: tokens/s, MFU,
peak memory, and the plan's memory estimate beside each.

    python bench/bench_gpu.py                         # 1.1B LLaMA shape, seq 512, micro 8, ZeRO-2 bf16
    python bench/bench_gpu.py --seq 2048 --micro 2    # the MFU check at sequence length 2048
    python bench/bench_gpu.py --breakdown             # + LoRA with each fast-path option alone
    python bench/bench_gpu.py --tiny                  # the tiny model on the CPU: checks the script end to end

Every run trains the same randomly initialised architecture (no weights are downloaded) on the same
synthetic instruction data through `python -m lorafull.train`, one process, DeepSpeed ZeRO-2, and reads
tokens/s and peak memory from its metrics.jsonl (the first third of the steps is warm-up and skipped).
LoRA is r=8 on all linear layers. "plain" is each method as the papers ran it (LoRA dropout 0.05, peft's
fp32 adapters); "fast" turns on, in the same study file keys a user sets:
    method.dropout: 0 (LoRA), train.adapter_dtype: compute (LoRA), train.compile: true,
    train.fused_kernels: true (CUDA only), train.group_by_length: true,
    train.micro_batch_size: auto and train.gradient_checkpointing: auto (the plan's memory model).
MFU = tokens/s x model FLOPs per token / peak FLOP/s, the model FLOPs per token counted as the plan does
(no recomputation counted; printed with the table).
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

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# A 1.1B LLaMA-shaped model (TinyLlama's published shape, MHA instead of GQA to keep the count simple)
LLAMA_1B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
            "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "initializer_range": 0.02}
# dense bf16 peak TFLOP/s (no sparsity) by device name fragment
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
FLOPS_FORMULA = ("model FLOPs/token: full 6N + 12 L h s; LoRA 4N + 6T + 12 L h s (N = base parameters in "
                 "matmuls, T = trainable, L layers, h hidden, s tokens/sample); MFU = tokens/s x FLOPs/token / peak")

FAST_COMMON = {"train.compile": True, "train.fused_kernels": True, "train.group_by_length": True,
               "train.micro_batch_size": "auto", "train.gradient_checkpointing": "auto"}
FAST_LORA = {"method.dropout": 0.0, "train.adapter_dtype": "compute"}


def synthetic_records(n: int, words: int) -> list[dict]:
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(400)] + ["的", "是", "在", "我们", "模型", "数据"]
    return [{"instruction": " ".join(rng.choices(vocab, k=min(24, words // 8))), "input": "",
             "output": " ".join(rng.choices(vocab, k=rng.randint(words // 2, words)))} for _ in range(n)]


def bench_runs(args, cuda: bool) -> list[dict]:
    """name -> the dotted settings of each run, on top of the base."""
    fast = dict(FAST_COMMON)
    if not cuda:  # the fused kernels need CUDA; compiling on a CPU takes minutes per run
        fast = {k: v for k, v in fast.items() if k not in ("train.fused_kernels", "train.compile")}
    runs = []
    for method in args.methods.split(","):
        extra = FAST_LORA if method == "lora" else {}
        runs.append({"name": f"{method}-plain", "method.kind": method})
        runs.append({"name": f"{method}-fast", "method.kind": method, **fast, **extra})
    if args.breakdown:
        for key, value in {**FAST_LORA, **fast}.items():
            runs.append({"name": f"lora+{key.split('.')[-1]}", "method.kind": "lora", key: value})
    for r in runs:
        if r["method.kind"] == "full":
            r["train.lr"] = 1.0e-5
    return runs


def write_study(work: Path, arch_path: str, tokenizer: Path, data: Path, args, cuda: bool) -> Path:
    body = {
        "study": {"name": "bench_gpu", "output_dir": str(work / "study")},
        "base": {"model": {"name_or_path": f"scratch:{arch_path}", "tokenizer": str(tokenizer),
                           "dtype": "bf16" if cuda else "fp32"},
                 "method": {"kind": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
                 "data": {"train": str(data), "max_length": args.seq},
                 "train": {"max_steps": args.steps, "global_batch_size": args.global_batch,
                           "micro_batch_size": args.micro, "lr": 1.0e-4, "warmup_steps": 2, "zero_stage": 2,
                           "save_every_steps": 100000, "log_every_steps": 1, "nproc": 1,
                           "gradient_checkpointing": args.checkpointing}},
        "runs": bench_runs(args, cuda),
        "slurm": {"gpus_per_node": 1, "gpu_mem_gb": args.gpu_mem_gb},
        "plan": {"avg_tokens_per_sample": args.seq, **({} if cuda else {"overhead_gb": 0.0})},
    }
    path = work / "study.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return path


def measure(run, study, sig: str, env: dict, peak_tflops: float) -> dict:
    from lorafull.config import save_run_config
    from lorafull.plan.estimate import estimate_run
    from lorafull.runs import read_jsonl

    run_dir = study.run_dir(run)
    save_run_config(run, run_dir, sig)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], env=env, cwd=REPO)
    if proc.returncode != 0:
        return {"failed": f"exit {proc.returncode}: {json.loads((run_dir / 'status.json').read_text()).get('error')}"}
    rows = list(read_jsonl(run_dir / "metrics.jsonl"))
    steps = [r for r in rows if "tokens_per_s" in r and "event" not in r and not r.get("summary")]
    tail = steps[len(steps) // 3:]  # warm-up skipped (allocator, kernels, compilation)
    settings = next(r for r in rows if r.get("event") == "settings")
    plan = estimate_run(run, study)
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in tail)
    return {"tokens_per_s": tokens_per_s, "step_time_s": statistics.median(r["step_time_s"] for r in tail),
            "peak_mem_gb": max(r["peak_mem_gb"] for r in steps), "plan_mem_gb": plan["mem_per_gpu_gb"],
            "flops_per_token": plan["flops_per_token"],
            "mfu": tokens_per_s * plan["flops_per_token"] / (peak_tflops * 1e12) if peak_tflops else None,
            "micro": settings["micro_batch_size"], "checkpointing": settings["gradient_checkpointing"],
            "padding": statistics.mean(r.get("padding_fraction", 0) for r in steps), "wall_s": time.time() - t0}


def print_table(results: dict, header: str) -> None:
    print(f"\n{header}\n{FLOPS_FORMULA}")
    print(f"{'run':26} {'tokens/s':>10} {'MFU':>6} {'step s':>8} {'micro':>5} {'ckpt':>5} {'pad':>5} "
          f"{'peak GB':>8} {'plan GB':>8}")
    for name, r in results.items():
        if "failed" in r:
            print(f"{name:26} failed: {r['failed']}")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(f"{name:26} {r['tokens_per_s']:>10.0f} {mfu:>6} {r['step_time_s']:>8.3f} {r['micro']:>5} "
              f"{'on' if r['checkpointing'] else 'off':>5} {r['padding']:>5.2f} {r['peak_mem_gb']:>8.2f} "
              f"{r['plan_mem_gb'] or float('nan'):>8.2f}")
    ok = {k: v for k, v in results.items() if "failed" not in v}
    for mode in ("plain", "fast"):
        f, lo = ok.get(f"full-{mode}"), ok.get(f"lora-{mode}")
        if f and lo:
            print(f"LoRA / full ({mode}): tokens/s {lo['tokens_per_s'] / f['tokens_per_s']:.2f}x, "
                  f"peak memory {lo['peak_mem_gb'] / f['peak_mem_gb']:.2f}x")
    if "lora-plain" in ok:
        base = ok["lora-plain"]["tokens_per_s"]
        for name, r in ok.items():
            if name.startswith("lora+") or name == "lora-fast":
                print(f"  {name}: {r['tokens_per_s'] / base:.2f}x LoRA plain's tokens/s")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="llama-1b", help="llama-1b, a shipped arch name, or a config.json path")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--micro", type=int, default=8, help="micro batch of the plain runs (fast: auto)")
    ap.add_argument("--global-batch", type=int, default=32)
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in the plain runs")
    ap.add_argument("--gpu-mem-gb", type=float, default=80.0, help="what auto plans against (default: an H100)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s (default: by device name)")
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--breakdown", action="store_true", help="also LoRA with each fast-path option alone")
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU (checks the script; no figures)")
    ap.add_argument("--workdir", default=None)
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    import torch

    from lorafull.config import load_study, save_study_settings, study_signatures
    from lorafull.models.tiny import build_tokenizer

    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        print("no GPU: pass --tiny to check the script on the CPU", file=sys.stderr)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    arch, device = args.arch, torch.cuda.get_device_name(0) if cuda else "cpu"
    if args.tiny:
        arch, args.seq, args.micro, args.global_batch, args.steps = "tiny-llama", 64, 2, 8, min(args.steps, 6)
        args.gpu_mem_gb = 0.013  # 13 MiB, no overhead: small enough that auto has something to choose here
    if arch == "llama-1b":
        arch = str(work / "llama-1b.json")
        Path(arch).write_text(json.dumps(LLAMA_1B))
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
    records = synthetic_records(max(args.global_batch * args.steps, 256), words=args.seq)
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tok = work / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        build_tokenizer([r["instruction"] + " " + r["output"] for r in records[:200]], tok, vocab_size=2000)
    study = load_study(write_study(work, arch, tok, data, args, cuda))
    save_study_settings(study)  # the jobs read slurm.gpu_mem_gb and plan.* from it (auto batch settings)
    sigs = study_signatures(study)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    results = {}
    for run in study.runs:
        results[run.name] = measure(run, study, sigs[run.name], env, peak)
        if len(results) == 1 and "failed" in results[run.name]:  # the setup itself is broken: stop here
            break
    header = (f"device: {device} (peak {peak or '?'} TFLOP/s); arch: {Path(arch).stem}; seq {args.seq}, plain micro "
              f"{args.micro}, global batch {args.global_batch}, {args.steps} steps, ZeRO-2, "
              f"{'bf16' if cuda else 'fp32'}; auto plans against {args.gpu_mem_gb:g} GB")
    print_table(results, header)
    (work / "bench_gpu.json").write_text(json.dumps({"device": device, "header": header, "results": results}, indent=1))
    print(f"results: {work / 'bench_gpu.json'}")
    return 0 if all("failed" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
