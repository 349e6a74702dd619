"""Generation throughput: length-sorted, left-padded batches vs one prompt at a time (tiny model, CPU).

    python bench/bench_generate.py [--items 64] [--batch-size 16] [--max-new-tokens 32]

Builds the tiny LLaMA and a tokenizer offline, encodes the same prompts the way generation does
(lorafull.data.encode_prompt, the BELLE template) and times lorafull.generate.generate_batch both ways,
side by side in one process. Greedy outputs must be identical; prints items/s and the ratio
(target >= 5x at batch 16).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lorafull.data.dataset import encode_prompt  # noqa: E402
from lorafull.generate.stage import generate_batch  # noqa: E402
from lorafull.models.tiny import SAMPLE_TEXTS, build_tiny_model, build_tokenizer  # noqa: E402

QUESTIONS = ["What is {a} plus {b}?", "Repeat the word {a} twice.", "Rewrite in upper case: hello world {a}",
             "Classify the sentiment: I love this movie number {a}. Answer positive or negative.",
             "小明有{a}个苹果，又买了{b}个，一共有几个？请一步一步地计算。", "请把这句话翻译成英文：我喜欢猫。"]


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    # one thread: on a shared 2-core machine OpenMP threads spin-wait on each other and the timings
    # measure the neighbours' load rather than batching (both sides use the same setting)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tokenizer(SAMPLE_TEXTS * 5, Path(tmp), vocab_size=512)
    tok.padding_side = "left"
    model = build_tiny_model("tiny-llama", vocab_size=len(tok), seed=0).eval()
    questions = [QUESTIONS[i % len(QUESTIONS)].format(a=i, b=i * 7 % 10) for i in range(args.items)]
    prompts = sorted((encode_prompt(q, tok, "belle") for q in questions), key=len, reverse=True)
    generate_batch(model, tok, prompts[:2], 4, 0.0)  # warm-up (first-call allocations)

    def one_at_a_time():
        return [generate_batch(model, tok, [ids], args.max_new_tokens, 0.0)[0][0] for ids in prompts]

    def batched():
        out = []
        for start in range(0, len(prompts), args.batch_size):
            out += generate_batch(model, tok, prompts[start:start + args.batch_size], args.max_new_tokens, 0.0)[0]
        return out

    single_s, single_out = timed(one_at_a_time)
    batch_s, batch_out = timed(batched)
    same = sum(a == b for a, b in zip(single_out, batch_out))
    print(f"items={args.items} max_new_tokens={args.max_new_tokens} torch_threads={torch.get_num_threads()} "
          f"prompt_tokens={min(map(len, prompts))}..{max(map(len, prompts))}")
    print(f"one-at-a-time: {single_s:7.2f} s  ({args.items / single_s:6.1f} items/s)")
    print(f"batch {args.batch_size:>3}:     {batch_s:7.2f} s  ({args.items / batch_s:6.1f} items/s)")
    print(f"speed-up: {single_s / batch_s:.1f}x (target >= 5x); identical greedy outputs: {same}/{args.items}")


if __name__ == "__main__":
    main()
