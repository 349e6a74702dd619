"""The judge server's hours before launch: one served judge (eval.judge.serve) per study and judge model,
counted as its GPUs x (loading + prefill + decoding) for every run's judge pass.

Library module (no command): launch.grid's plan and `python -m lorafull.plan` print it.

The model (a roofline, as the training's step time; every assumption is named in the row's notes):
- requests = items x eval.judge.n_samples per run (first asks only: re-asks of unreadable replies add more);
  items = the eval set's lines (eval.num_items caps them), else plan.judge_items;
- prompt tokens per request = (the judge prompt + question + reference answer) / 4 characters per token,
  plus eval.max_new_tokens for the answer; reply tokens = eval.judge.max_tokens (both upper-ish bounds);
- parameters P from the judge's config.json (its folder, or serve.arch): a Llama-style decoder
  (attention with grouped KV heads, a gated MLP, embeddings, untied or tied output);
- loading: 2 bytes per parameter from storage at plan.hardware.load_gbs, plus ENGINE_START_S;
- prefill: 2 P FLOPs per prompt token on serve.gpus devices at plan.hardware's peak x plan.mfu;
- decoding: each step reads the weights once from device memory (plan.hardware's bandwidth x gpus) and
  advances eval.judge.concurrency requests together (one evaluation judging at a time).
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Optional

from lorafull.config import ServeConfig, Study, server_key

ENGINE_START_S = 60.0  # assumed: engine start-up beside the weights (CUDA graphs, workers)
CHARS_PER_TOKEN = 4.0
BYTES_PER_PARAM = 2  # bf16 / fp16 weights, as vLLM serves them by default


def decoder_params(cfg: dict) -> int:
    """Parameters of a Llama-style decoder from its config.json (SmolLM2-135M: 134,515,008, as counted)."""
    h, i, layers, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or h // heads
    kv = cfg.get("num_key_value_heads") or heads
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q and o, k and v
    per_layer = attention + 3 * h * i + 2 * h  # gated MLP, two norms
    embeddings = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return layers * per_layer + embeddings + h


def _judge_config(serve: ServeConfig, study: Study) -> Optional[dict]:
    from lorafull.plan.params import arch_dict

    folder = Path(serve.model or "").expanduser()
    if (folder / "config.json").exists():
        return json.loads((folder / "config.json").read_text())
    if serve.arch:
        p = Path(serve.arch).expanduser()
        if p.suffix == ".json" and not p.is_absolute():
            p = Path(study.path).parent / p
        return arch_dict(str(p) if p.suffix == ".json" else serve.arch)
    return None


def _mean_chars(path: Optional[str], fields: tuple[str, ...]) -> tuple[Optional[int], Optional[float]]:
    """(lines, mean characters of the fields) of a JSON-lines file, or (None, None) when it is not here."""
    try:
        lines = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, TypeError, ValueError):
        return None, None
    chars = [sum(len(str(rec.get(f, ""))) for f in fields) for rec in lines if isinstance(rec, dict)]
    return len(lines), (sum(chars) / len(chars) if chars else 0.0)


def _items(run, study: Study, notes: list[str]) -> tuple[Optional[int], float]:
    lines, chars = _mean_chars(run.eval.eval_set, ("question", "std_answer"))
    if lines is None:
        lines = study.plan.judge_items
        chars = 400.0
        notes.append(f"eval set not readable here: {lines or '?'} items per run (plan.judge_items), "
                     f"{chars:.0f} characters of question and answer assumed")
    if lines is not None and run.eval.num_items:
        lines = min(lines, run.eval.num_items)
    return lines, chars


def _prompt_chars(prompts: Optional[str]) -> float:
    """Mean characters of a judge prompt: the study's prompts file, else (not here) the package's own."""
    builtin = str(resources.files("lorafull") / "judge" / "builtin" / "judge_default.jsonl")
    _, chars = _mean_chars(prompts, ("prompt",)) if prompts else (None, None)
    return chars if chars is not None else (_mean_chars(builtin, ("prompt",))[1] or 0.0)


def _server_row(serve: ServeConfig, runs: list, study: Study) -> dict:
    from lorafull.plan.hardware import resolve_hardware

    notes: list[str] = []
    row = {"key": server_key(serve), "model": Path(serve.model or "?").name, "engine": serve.engine,
           "gpus": serve.gpus, "runs": len(runs), "requests": None, "gpu_hours": None, "hours": None, "notes": notes}
    judge = runs[0].eval.judge
    requests = prompt_tokens = 0
    for run in runs:
        items, chars = _items(run, study, notes)
        if items is None:
            return row
        asks = items * judge.n_samples
        requests += asks
        prompt_tokens += asks * ((chars + _prompt_chars(judge.prompts)) / CHARS_PER_TOKEN + run.eval.max_new_tokens)
    cfg = _judge_config(serve, study)
    if cfg is None:
        notes.append("no config.json for the judge model here: set eval.judge.serve.arch")
        row["requests"] = requests
        return row
    params = decoder_params(cfg)
    hw = resolve_hardware(study.plan.hardware, gpu_tflops=study.plan.gpu_tflops)
    devices = max(1, serve.gpus)
    weights = params * BYTES_PER_PARAM
    load_s = weights / (hw.load_gbs * 1e9) + ENGINE_START_S
    prefill_s = 2 * params * prompt_tokens / (devices * hw.peak("bf16") * 1e12 * study.plan.mfu)
    steps = requests * judge.max_tokens / max(1, judge.concurrency)
    decode_s = steps * weights / (devices * hw.mem_bw_gbs * 1e9)
    hours = (load_s + prefill_s + decode_s) / 3600
    row.update(requests=requests, params=params, prompt_tokens=int(prompt_tokens),
               completion_tokens=requests * judge.max_tokens, load_s=load_s, prefill_s=prefill_s,
               decode_s=decode_s, hours=hours, gpu_hours=hours * serve.gpus if serve.gpus else 0.0)
    return row


def judge_servers(study: Study) -> list[dict]:
    """One row per served judge of the study (none when no run serves its judge)."""
    groups: dict[str, tuple[ServeConfig, list]] = {}
    for run in study.runs:
        serve = run.eval.judge.serve
        if serve is not None:
            groups.setdefault(server_key(serve), (serve, []))[1].append(run)
    return [_server_row(serve, runs, study) for serve, runs in groups.values()]


def judge_lines(rows: list[dict]) -> list[str]:
    """The plan's lines for the judge servers."""
    lines = []
    for r in rows:
        what = f"judge server {r['model']} ({r['engine']}, {r['gpus']} GPU): {r['runs']} run(s)"
        if r["hours"] is None:
            lines.append(f"{what}, {r['requests'] or '?'} request(s): hours unknown")
        else:
            parts = (f"{r['load_s'] / 3600:.2g} h loading + {r['prefill_s'] / 3600:.2g} h prefill + "
                     f"{r['decode_s'] / 3600:.2g} h decoding")
            cost = f"{r['gpu_hours']:.3g} GPU-hours = {r['gpus']} x ({parts})" if r["gpus"] else \
                f"no GPU-hours (a CPU job; the GPU roofline says {parts})"
            lines.append(f"{what}, {r['requests']:,} requests, {r['params'] / 1e9:.3g}B parameters: {cost}")
        lines += [f"  {r['model']}: {n}" for n in dict.fromkeys(r["notes"])]
    return lines
