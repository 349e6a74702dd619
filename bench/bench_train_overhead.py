"""Overhead of lorafull's training loop over a bare PyTorch loop, on the same tiny model and batches.

    python bench/bench_train_overhead.py [--steps 40] [--repeats 5] [--method full|lora] [--deepspeed] [--threads 1]

The bare loop is the least a loop can do: collate the same micro-batches, forward, backward (with
accumulation), clip, AdamW step, schedule step. Ours is lorafull.train.Trainer with train.deepspeed:
false (and, with --deepspeed, DeepSpeed ZeRO-2 with 1 process), logging every 10 steps, no checkpoint.
Repeats interleave the variants (order reversed every other repeat) so machine load hits all alike; each repeat's mean step time
is one sample, the median over repeats is reported. One torch thread by default: on a shared machine
more threads than free cores make every step time noise. Target: plain-torch path <= 1.10x the bare loop.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lorafull.config import RunConfig, load_run_config, save_run_config, signature  # noqa: E402


def records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        out.append({"instruction": f"What is {a} plus {b}? Show the sum.", "input": "",
                    "output": f"{a} + {b} = {a + b}."})
    return out


def make_run_dir(root: Path, name: str, method: str, deepspeed: bool, steps: int) -> Path:
    from lorafull.models.tiny import SAMPLE_TEXTS, build_tokenizer

    tok, data = root / "tok", root / "train.jsonl"
    if not tok.exists():
        recs = records(512)
        data.write_text("".join(json.dumps(r) + "\n" for r in recs))
        build_tokenizer(SAMPLE_TEXTS * 5 + [f"{r['instruction']} {r['output']}" for r in recs], tok)
    run = RunConfig(name=name)
    run.model.name_or_path, run.model.tokenizer, run.model.dtype = "scratch:tiny-llama", str(tok), "fp32"
    run.method.kind = method
    run.data.train, run.data.max_length, run.data.cache_dir = str(data), 128, str(root / "cache")
    t = run.train
    t.max_steps, t.global_batch_size, t.micro_batch_size, t.lr, t.warmup_steps = steps, 16, 8, 1e-3, 2
    t.save_every_steps, t.log_every_steps, t.deepspeed, t.zero_stage, t.nproc = 0, 10, deepspeed, 2, 1
    run_dir = root / "study" / "runs" / name
    save_run_config(run, run_dir, signature(run))
    return run_dir


def time_ours(run_dir: Path) -> float:
    """Mean seconds per optimizer step of Trainer.train() (setup excluded)."""
    from lorafull.train import distributed as dist
    from lorafull.train.stop import StopGate
    from lorafull.train.trainer import Trainer

    trainer = Trainer(run_dir, load_run_config(run_dir), dist.detect_env(), StopGate())  # (no handlers: a bench)
    trainer.setup()
    t0 = time.perf_counter()
    assert trainer.train()
    seconds = (time.perf_counter() - t0) / trainer.total_steps
    trainer.cleanup()
    return seconds


def time_bare(run_dir: Path, base: str) -> float:
    """The same steps on the same batches in a minimal loop."""
    from transformers import AutoModelForCausalLM

    from lorafull.data.dataset import build_dataset, collate
    from lorafull.models.load import apply_method, load_tokenizer
    from lorafull.train.engine import lr_lambda
    from lorafull.train.order import BatchOrder

    run = load_run_config(run_dir)
    tok = load_tokenizer(run.model.tokenizer)
    ds = build_dataset(run, tok)
    order = BatchOrder(ds.lengths(), run.train.global_batch_size, run.train.micro_batch_size, 1, 0, run.train.seed)
    model = apply_method(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), run.method)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=run.train.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(run.train.max_steps, 2, "cosine"))
    accum = run.train.global_batch_size // run.train.micro_batch_size
    t0 = time.perf_counter()
    for step in range(run.train.max_steps):
        for mb in order.micro_batches(step):
            batch = collate([ds[int(i)] for i in mb], tok.pad_token_id)
            (model(**batch).loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / run.train.max_steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--method", choices=["full", "lora"], default="full")
    parser.add_argument("--deepspeed", action="store_true", help="also time DeepSpeed ZeRO-2 with 1 process")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from lorafull.models.load import prepare_base

    samples: dict[str, list[float]] = {"bare": [], "ours-torch": []}
    if args.deepspeed:
        samples["ours-deepspeed-z2"] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm = make_run_dir(root, "warmup", args.method, False, 5)
        base = prepare_base(load_run_config(warm).model, warm, seed=42)
        time_ours(warm)  # tokenizer cache, imports, first-call kernels
        time_bare(warm, base)
        for r in range(args.repeats):
            variants = list(samples) if r % 2 == 0 else list(samples)[::-1]  # no variant always goes first
            for variant in variants:
                if variant == "bare":
                    samples[variant].append(time_bare(make_run_dir(root, f"bare{r}", args.method, False, args.steps),
                                                      base))
                else:
                    run_dir = make_run_dir(root, f"{variant}{r}", args.method, variant != "ours-torch", args.steps)
                    prepare_base(load_run_config(run_dir).model, run_dir, seed=42)
                    samples[variant].append(time_ours(run_dir))
    bare = statistics.median(samples["bare"])
    print(f"tiny-llama {args.method}, {args.steps} steps x {args.repeats} repeats, global batch 16 (micro 8 x 2), "
          f"torch threads {torch.get_num_threads()}")
    for variant, values in samples.items():
        med = statistics.median(values)
        print(f"  {variant:20s} median step {med * 1000:7.2f} ms   ratio to bare {med / bare:5.3f}x   "
              f"(samples: {', '.join(f'{v * 1000:.1f}' for v in values)})")
    ratio = statistics.median(samples["ours-torch"]) / bare
    print(f"plain-torch path overhead: {ratio:.3f}x (target <= 1.10x): {'OK' if ratio <= 1.10 else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
