"""vLLM vs Hugging Face batched generation on the same items: speed, and whether greedy answers agree.

    python bench/bench_vllm.py                      # 1.1B LLaMA shape, 256 items, 128 new tokens, bf16 (GPU)
    python bench/bench_vllm.py --dtype fp32 --items 64
    python bench/bench_vllm.py --tiny               # CPU: the tiny model, the hf side only (checks the script)

Needs a CUDA GPU and `pip install vllm` (not installable usefully on a CPU machine). One random-init
base model (no download) and one LoRA r=8 adapter on all linear layers with random A and B, so the
adapter changes the answers. Three run folders answer the same synthetic questions through the real
generation stage (`python -m lorafull.generate RUN_DIR`, one process each so each backend has the GPU
to itself):
    hf             eval.backend: hf, the adapter merged first (length-sorted batches, --hf-batch)
    vllm-merged    eval.backend: vllm, eval.merge_lora: true (the merged model: plain linear layers)
    vllm-adapter   eval.backend: vllm, eval.merge_lora: false (the base + the adapter via LoRARequest)
and each vLLM side is compared with hf: identical answers (greedy), and for the others how far they
agree (lorafull.generate.stage.compare_responses). Random weights make near-ties between tokens more
common than in a trained model, so bf16 kernels of two libraries can part ways on some items; --dtype
fp32 shows whether any difference is more than rounding. Speed: generated tokens per second of
generation (model loading and vLLM's start-up excluded; the start-up is printed on its own).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_gpu import LLAMA_1B  # noqa: E402  (the same 1.1B shape as the training bench)

QUESTIONS = ["Explain {} in simple words.", "Write a short story about {}.", "List three facts about {}.",
             "请解释{}。", "把下面的句子翻译成英文：{}", "回答问题：{}是什么？"]
TOPICS = ["rivers", "the moon", "neural networks", "tea", "猫", "计算机", "history", "长城", "music", "rain"]


def make_base_and_adapter(work: Path, arch: str, dtype: str) -> tuple[Path, Path]:
    """(base folder, adapter folder): a random-init base and a LoRA r=8 adapter with random A and B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorafull.config import ModelConfig
    from lorafull.models.load import prepare_base
    from lorafull.models.tiny import build_tokenizer

    tok = work / "tokenizer"
    texts = [q.format(t) for q in QUESTIONS for t in TOPICS] * 20
    build_tokenizer(texts, tok, vocab_size=2000)
    base = Path(prepare_base(ModelConfig(name_or_path=f"scratch:{arch}", tokenizer=str(tok), dtype=dtype),
                             work / "base-run", seed=0))
    torch.manual_seed(0)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    adapter = work / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), cfg)
    with torch.no_grad():  # small random B: the adapter moves the answers without drowning the base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    model.save_pretrained(adapter)
    for f in tok.iterdir():
        shutil.copy(f, adapter / f.name)
    return base, adapter


def make_run(work: Path, name: str, base: Path, adapter: Path, eval_set: Path, args, **eval_kw) -> Path:
    from lorafull.config import RunConfig, save_run_config

    run_dir = work / "study" / "runs" / name
    shutil.copytree(adapter, run_dir / "final")
    cfg = json.loads((run_dir / "final" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (run_dir / "final" / "adapter_config.json").write_text(json.dumps(cfg, indent=1))
    run = RunConfig(name=name)
    run.model.name_or_path, run.model.dtype = str(base), args.dtype
    run.eval.eval_set, run.eval.max_new_tokens, run.eval.batch_size = str(eval_set), args.max_new_tokens, args.hf_batch
    for k, v in eval_kw.items():
        setattr(run.eval, k, v)
    save_run_config(run, run_dir, "bench000")
    return run_dir


def generate(run_dir: Path) -> dict:
    from lorafull.runs import read_jsonl

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lorafull.generate", str(run_dir)], env=env, cwd=REPO)
    total = time.perf_counter() - t0
    status = json.loads((run_dir / "status.json").read_text())
    if proc.returncode != 0:
        return {"failed": status.get("error")}
    rows = list(read_jsonl(run_dir / "responses.jsonl"))
    gen_s = sum(r["seconds"] for r in rows)  # each batch's wall time, shared among its items
    return {"rows": rows, "generation_s": gen_s, "total_s": total, "tokens": sum(r["tokens"] for r in rows),
            "stage_s": status.get("generate", {}).get("seconds")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="llama-1b", help="llama-1b, a shipped arch name, or a config.json path")
    ap.add_argument("--items", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--hf-batch", type=int, default=32)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--tiny", action="store_true", help="CPU check: tiny model, hf side only, nothing measured")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    import importlib.util

    import torch

    if args.tiny:
        args.arch, args.dtype, args.items, args.max_new_tokens, args.hf_batch = "tiny-llama", "fp32", 8, 16, 4
    elif not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
        print("bench_vllm needs a CUDA GPU and vLLM (pip install vllm); nothing measured", file=sys.stderr)
        return 2
    from lorafull.generate.stage import compare_responses

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_vllm_"))
    work.mkdir(parents=True, exist_ok=True)
    arch = args.arch
    if arch == "llama-1b":
        arch = str(work / "llama-1b.json")
        Path(arch).write_text(json.dumps(LLAMA_1B))
    base, adapter = make_base_and_adapter(work, arch, args.dtype)
    rng = random.Random(0)
    items = [{"id": i, "class": "generation", "question": rng.choice(QUESTIONS).format(rng.choice(TOPICS)),
              "std_answer": ""} for i in range(args.items)]
    eval_set = work / "eval.jsonl"
    eval_set.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items))
    variants = {"hf": {"backend": "hf", "merge_lora": True},
                "vllm-merged": {"backend": "vllm", "merge_lora": True},
                "vllm-adapter": {"backend": "vllm", "merge_lora": False}}
    if args.tiny:
        variants = {"hf": variants["hf"]}
    results = {name: generate(make_run(work, name, base, adapter, eval_set, args, **kw)) for name, kw in variants.items()}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"\ndevice: {device}; arch {Path(arch).stem}, {args.dtype}; {args.items} items, up to {args.max_new_tokens} "
          f"new tokens, greedy; HF batch {args.hf_batch}")
    print(f"{'backend':14} {'gen s':>8} {'tokens/s':>10} {'vs hf':>7} {'total s':>8} {'identical to hf':>16} "
          f"{'prefix kept':>12}")
    hf = results["hf"]
    for name, r in results.items():
        if "failed" in r:
            print(f"{name:14} failed: {r['failed']}")
            continue
        rate = r["tokens"] / max(r["generation_s"], 1e-9)
        speed = rate / (hf["tokens"] / max(hf["generation_s"], 1e-9)) if "failed" not in hf else float("nan")
        cmp = compare_responses(hf["rows"], r["rows"]) if "failed" not in hf else {}
        prefix = cmp.get("mean_common_prefix_of_different")
        print(f"{name:14} {r['generation_s']:>8.1f} {rate:>10.0f} {speed:>6.2f}x {r['total_s']:>8.1f} "
              f"{cmp.get('identical', 0):>8}/{cmp.get('items', 0):<7} {'-' if prefix is None else f'{prefix:.2f}':>12}")
    (work / "bench_vllm.json").write_text(json.dumps(
        {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in results.items()}, indent=1))
    return 0 if all("failed" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
