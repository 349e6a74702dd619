"""Answer the eval set with a run's final model: RUN_DIR/responses.jsonl, one flushed line per item.

    python -m lorafull.generate RUN_DIR

Eval set (eval.eval_set, .json or .jsonl, one object per line): BELLE's fields "question", "class",
"std_answer"; "id" is optional (default: the line's index). eval.num_items keeps the first N.
Each line of responses.jsonl: {"id", "class", "question", "std_answer", "response", "tokens" (new
tokens, EOS included), "seconds" (the batch's wall time shared among its items)}; with eval.num_samples
n > 1 also "samples" (all n answers; "response" is the first), scored as pass@k by the reference judge.
eval.top_p: nucleus sampling. eval.fewshot k: k solved examples of eval.fewshot_file, drawn once by
train.seed, precede every question (the template wraps the whole).

The prompt is the run's template applied exactly as in training (lorafull.data.encode_prompt).
Decoding: eval.temperature <= 0.01 is greedy -- the BELLE paper's 0.001 samples from a distribution so
peaked that it is greedy decoding in all but name, and greedy is reproducible; above that, sampling
(seeded by train.seed). Resumable: ids already in responses.jsonl are skipped, so a killed or
preempted job continues where it stopped.

Backends: vLLM when installed and a GPU is present (eval.backend: auto | vllm); otherwise Hugging Face
generate in length-sorted, left-padded batches (eval.batch_size). In both, eval.merge_lora folds a LoRA
adapter into the weights first; without it vLLM serves the adapter through its LoRARequest.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import random
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from lorafull.config import RunConfig, load_run_config, refresh_eval_results
from lorafull.models.method_table import method_of
from lorafull.runs import (JsonlWriter, RunPaths, Stage, iter_json_lines, read_jsonl, repair_jsonl_tail,
                           run_stage_cli, stage_lock, status as run_status)

GREEDY_BELOW = 0.01  # temperatures at or below this decode greedily
REQUIRED_FIELDS = ("question", "class")


class EvalSetError(ValueError):
    """A bad eval-set file; the message names file:line and the field."""


def read_eval_set(path: str | Path, num_items: Optional[int] = None) -> list[dict]:
    """Items {"id", "question", "class", "std_answer"} of a .json/.jsonl eval set (one object per
    line; a .json holding one JSON array also works)."""
    path = Path(path)
    if not path.exists():
        raise EvalSetError(f"{path}: eval set not found (eval.eval_set)")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            objects = [(i + 1, obj) for i, obj in enumerate(json.loads(text))]
        except json.JSONDecodeError as e:
            raise EvalSetError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None
    else:
        objects = [(lineno, obj) for lineno, obj, _ in iter_json_lines(path, EvalSetError)]
    items, seen = [], set()
    for lineno, obj in objects:
        if not isinstance(obj, dict):
            raise EvalSetError(f"{path}:{lineno}: expected a JSON object with question, class, std_answer")
        for key in REQUIRED_FIELDS:
            if not isinstance(obj.get(key), str):
                raise EvalSetError(f"{path}:{lineno}: {key}: missing or not a string")
        item_id = obj.get("id", lineno - 1)  # the line's index when the set has no ids
        if str(item_id) in seen:
            raise EvalSetError(f"{path}:{lineno}: id: {item_id!r} appears twice")
        seen.add(str(item_id))
        std = obj.get("std_answer") or ""
        items.append({"id": item_id, "class": obj["class"], "question": obj["question"], "std_answer": str(std)})
        if num_items is not None and len(items) >= num_items:
            break
    return items


def run_eval_items(run_dir: Path, cfg: RunConfig) -> list[dict]:
    """The items a run is evaluated on: eval.eval_set, its first eval.num_items."""
    if not cfg.eval.eval_set:
        raise EvalSetError(f"{run_dir / 'config.yaml'}: eval.eval_set: not set")
    return read_eval_set(cfg.eval.eval_set, cfg.eval.num_items)


def pending_items(run_dir: Path, items: list[dict]) -> list[dict]:
    """Items without a line in responses.jsonl yet (a torn last line is removed first)."""
    path = RunPaths.of(run_dir).responses
    repair_jsonl_tail(path)
    done = {str(r["id"]) for r in read_jsonl(path)}
    return [it for it in items if str(it["id"]) not in done]


@functools.lru_cache(maxsize=8)
def fewshot_prefix(path: Optional[str], k: int, seed: int) -> str:
    """k solved examples ("question\nanswer\n\n" each), drawn once from the file by the seed."""
    if not k:
        return ""
    pool = read_eval_set(path)
    if k > len(pool):
        raise EvalSetError(f"{path}: eval.fewshot: {k} examples asked, the file has {len(pool)}")
    picked = random.Random(seed).sample(pool, k)
    return "".join(f"{it['question']}\n{it['std_answer']}\n\n" for it in picked)


def prompt_question(cfg: RunConfig, item: dict) -> str:
    """The question as the model sees it: after the run's few-shot examples (eval.fewshot), if any."""
    return fewshot_prefix(cfg.eval.fewshot_file, cfg.eval.fewshot, cfg.train.seed) + item["question"]


def choose_backend(requested: str) -> str:
    if requested == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ValueError("eval.backend: vllm is not installed in this environment (pip install vllm on a GPU "
                         "machine), or set eval.backend: auto | hf")
    if requested in ("hf", "vllm"):
        return requested
    import torch

    return "vllm" if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() else "hf"


# ---------------------------------------------------------------------------------------------
# Hugging Face backend
# ---------------------------------------------------------------------------------------------
def left_pad(batch_ids: list[list[int]], pad_id: int):
    """input_ids and attention_mask tensors, padded on the left so every prompt ends where
    generation starts."""
    import torch

    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for row, ids in enumerate(batch_ids):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids):] = 1
    return input_ids, mask


def generate_batch(model, tokenizer, batch_ids: list[list[int]], max_new_tokens: int, temperature: float,
                   top_p: float = 1.0, n: int = 1):
    """Decoded answers and their token counts (up to and including EOS) for one batch of prompts: n answers
    per prompt, consecutive (n > 1 samples)."""
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids, mask = left_pad(batch_ids, pad_id)
    device = next(model.parameters()).device
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "num_return_sequences": n} \
        if temperature > GREEDY_BELOW else {"do_sample": False}
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                             eos_token_id=tokenizer.eos_token_id, **sampling)
    texts, counts = [], []
    for row in out[:, input_ids.shape[1]:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[:row.index(tokenizer.eos_token_id) + 1]
        counts.append(len(row))
        texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts, counts


def load_for_generation(run_dir: Path, cfg: RunConfig):
    """(model, tokenizer) on the GPU when there is one; fp32 on the CPU, where bf16 matmuls are slow."""
    import torch

    from lorafull.models.load import load_final

    dtype = cfg.model.dtype if torch.cuda.is_available() else "fp32"
    model, tokenizer = load_final(run_dir, dtype=dtype, merge=cfg.eval.merge_lora)
    if torch.cuda.is_available():
        model = model.to("cuda")
    tokenizer.padding_side = "left"
    return model, tokenizer


def run_hf(run_dir: Path, cfg: RunConfig, todo: list[dict], emit: Callable[[dict, str, int, float], None]) -> None:
    import torch

    from lorafull.data.dataset import encode_prompt

    model, tokenizer = load_for_generation(run_dir, cfg)
    torch.manual_seed(cfg.train.seed)
    encoded = [(item, encode_prompt(prompt_question(cfg, item), tokenizer, cfg.data.template)) for item in todo]
    # longest first: similar lengths share a batch (little padding) and an out-of-memory shows at once
    encoded.sort(key=lambda pair: -len(pair[1]))
    size = max(1, cfg.eval.batch_size)
    for start in range(0, len(encoded), size):
        chunk = encoded[start:start + size]
        t0 = time.perf_counter()
        n = cfg.eval.num_samples
        texts, counts = generate_batch(model, tokenizer, [ids for _, ids in chunk], cfg.eval.max_new_tokens,
                                       cfg.eval.temperature, cfg.eval.top_p, n)
        per_item_s = (time.perf_counter() - t0) / len(chunk)
        for i, (item, _) in enumerate(chunk):
            emit(item, texts[i * n:(i + 1) * n], sum(counts[i * n:(i + 1) * n]), per_item_s)


# ---------------------------------------------------------------------------------------------
# vLLM backend (GPU machines only: vLLM does not run on this CPU test setup; bench/bench_vllm.py runs
# it against the Hugging Face backend on the same items)
# ---------------------------------------------------------------------------------------------
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)  # vLLM preallocates LoRA buffers for one of these ranks


def vllm_setup(run_dir: Path, cfg: RunConfig) -> tuple[dict, Optional[str]]:
    """(keyword arguments of vllm.LLM, the adapter folder for a LoRARequest or None). A LoRA run is served
    merged into its base when eval.merge_lora (RUN_DIR/merged, built once; plain linear layers, fastest),
    else as the base plus the adapter through vLLM's LoRA support; a full fine-tune is final/ itself."""
    final = RunPaths.of(run_dir).final
    dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[cfg.model.dtype]
    common = {"tokenizer": str(final), "dtype": dtype, "seed": cfg.train.seed}
    adapter_cfg = final / "adapter_config.json"
    if not adapter_cfg.exists():
        return {"model": str(final), **common}, None
    if cfg.eval.merge_lora:
        from lorafull.models.merge import merge_run

        return {"model": str(merge_run(run_dir)), **common}, None
    adapter = json.loads(adapter_cfg.read_text())
    rank = next(r for r in VLLM_LORA_RANKS if r >= int(adapter.get("r", 8)))  # the smallest that fits
    return {"model": adapter["base_model_name_or_path"], **common, "enable_lora": True, "max_lora_rank": rank,
            "max_loras": 1}, str(final)


def vllm_sampling(cfg: RunConfig) -> dict:
    """Keyword arguments of vllm.SamplingParams: the same decoding rule as the HF backend."""
    greedy = cfg.eval.temperature <= GREEDY_BELOW
    return {"temperature": 0.0 if greedy else cfg.eval.temperature, "top_p": cfg.eval.top_p,
            "max_tokens": cfg.eval.max_new_tokens, "seed": cfg.train.seed, "n": cfg.eval.num_samples}


def vllm_prompts(items: list[dict], tokenizer, cfg: RunConfig) -> list[dict]:
    """Token-id prompts, encoded exactly as for training and for the HF backend (few-shot examples first)."""
    from lorafull.data.dataset import encode_prompt

    return [{"prompt_token_ids": encode_prompt(prompt_question(cfg, it), tokenizer, cfg.data.template)}
            for it in items]


def run_vllm(run_dir: Path, cfg: RunConfig, todo: list[dict], emit: Callable[[dict, str, int, float], None],
             chunk_items: int = 256) -> None:
    from vllm import LLM, SamplingParams

    from lorafull.models.load import load_tokenizer

    engine_args, adapter = vllm_setup(run_dir, cfg)
    tokenizer = load_tokenizer(str(RunPaths.of(run_dir).final))
    llm = LLM(**engine_args)
    lora_request = None
    if adapter is not None:
        from vllm.lora.request import LoRARequest

        lora_request = LoRARequest("run", 1, adapter)
    params = SamplingParams(**vllm_sampling(cfg))
    for start in range(0, len(todo), chunk_items):  # chunks: results reach the file as they come
        chunk = todo[start:start + chunk_items]
        t0 = time.perf_counter()
        outputs = llm.generate(vllm_prompts(chunk, tokenizer, cfg), params,
                               lora_request=lora_request, use_tqdm=False)
        per_item_s = (time.perf_counter() - t0) / len(chunk)
        for item, out in zip(chunk, outputs):
            emit(item, [o.text.strip() for o in out.outputs], sum(len(o.token_ids) for o in out.outputs), per_item_s)


def compare_responses(a: list[dict], b: list[dict]) -> dict:
    """Two backends' responses.jsonl lines on the same items: how many are identical, and for the others
    the mean share of the longer answer's characters before the first difference."""
    by_id = {str(r["id"]): r["response"] for r in b}
    common = [(r["response"], by_id[str(r["id"])]) for r in a if str(r["id"]) in by_id]
    same = sum(x == y for x, y in common)
    prefix = []
    for x, y in common:
        if x != y:
            n = next((i for i, (cx, cy) in enumerate(zip(x, y)) if cx != cy), min(len(x), len(y)))
            prefix.append(n / max(len(x), len(y), 1))
    return {"items": len(common), "identical": same, "identical_share": same / len(common) if common else None,
            "mean_common_prefix_of_different": sum(prefix) / len(prefix) if prefix else None}


# ---------------------------------------------------------------------------------------------
def generate_run(run_dir: str | Path, progress: bool = True) -> dict:
    """Generate every missing response of the run; returns {"items", "generated", "backend", ...}."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    items = run_eval_items(run_dir, cfg)
    with stage_lock(run_dir, "generate"):  # a second generator waits, then finds its items written
        refresh_eval_results(run_dir, cfg)  # responses of other eval settings go to eval_history/, never mixed in
        return _generate_locked(run_dir, cfg, items, progress)


def _generate_locked(run_dir: Path, cfg: RunConfig, items: list[dict], progress: bool) -> dict:
    from tqdm import tqdm

    todo = pending_items(run_dir, items)
    backend = choose_backend(cfg.eval.backend)
    method = method_of(cfg)
    if backend == "vllm" and method.frozen_base and not method.vllm_adapter and cfg.eval.backend == "auto":
        backend = "hf"  # vLLM serves plain LoRA adapters only: DoRA, IA3, prompts, bottlenecks go through HF
    run_status.started(run_dir, Stage.GENERATE)
    stats = {"items": len(items), "generated": 0, "backend": backend, "new_tokens": 0, "seconds": 0.0}
    if todo:
        t0 = time.perf_counter()
        with JsonlWriter(RunPaths.of(run_dir).responses) as writer, \
                tqdm(total=len(todo), desc=f"generate {run_dir.name}", disable=not progress, unit="item") as bar:

            def emit(item: dict, samples: list[str], tokens: int, seconds: float) -> None:
                more = {"samples": samples} if len(samples) > 1 else {}  # n samples: scored as pass@k
                writer.write({**item, "response": samples[0], **more, "tokens": tokens, "seconds": round(seconds, 4)})
                stats["generated"] += 1
                stats["new_tokens"] += tokens
                bar.update()

            (run_vllm if backend == "vllm" else run_hf)(run_dir, cfg, todo, emit)
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        stats["tokens_per_s"] = round(stats["new_tokens"] / max(stats["seconds"], 1e-9), 2)
    run_status.done(run_dir, Stage.GENERATE, generate=stats)
    return stats


def describe(run_dir: Path, stats: dict) -> str:
    return f"{run_dir.name}: {stats['generated']} new responses ({stats['items']} items, {stats['backend']})"


def main(argv: list[str] | None = None) -> int:
    return run_stage_cli("generate", __doc__, generate_run, describe, argv)


if __name__ == "__main__":
    sys.exit(main())
