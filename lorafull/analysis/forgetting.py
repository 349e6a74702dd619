"""Learning vs forgetting (Biderman et al. 2024): how much a run gained on its target domain and
how much it lost on source tasks, both measured against the model it started from.

Library module (no command): lorafull.analysis.stage runs it (python -m lorafull.analysis tasks RUN_DIR).

learning   = mean over target tasks of (run score - base score)
forgetting = mean source score of the base - mean source score of the run (positive = forgot)

The base model is evaluated once per study: its results are cached in
STUDY_DIR/analysis/base_<hash>.json, keyed by the base weights, tokenizer, template and task files.
"""
from __future__ import annotations

import gc
import hashlib
import json
import sys
from pathlib import Path
from statistics import mean
from typing import Optional

import torch

from lorafull.config import AnalysisConfig, RunConfig, load_run_config, study_dir_of_run, to_dict
from lorafull.runs import RunPaths, file_lock, write_json_atomic
from lorafull.analysis.weights import base_folder_of_run
from lorafull.stats import estimate, paired_differences


def learning_forgetting(run_scores: dict[str, Optional[float]], base_scores: dict[str, Optional[float]],
                        target: list[str], source: list[str]) -> dict:
    """{"target_mean", "source_mean", "base_target_mean", "base_source_mean", "learning", "forgetting"};
    a mean over no tasks (or a task scored None) is None."""

    def avg(scores, names):
        vals = [scores.get(n) for n in names]
        return mean(vals) if vals and all(v is not None for v in vals) else None

    t, s = avg(run_scores, target), avg(run_scores, source)
    bt, bs = avg(base_scores, target), avg(base_scores, source)
    gains = [run_scores.get(n) - base_scores.get(n) for n in target
             if run_scores.get(n) is not None and base_scores.get(n) is not None]
    return {"target_mean": t, "source_mean": s, "base_target_mean": bt, "base_source_mean": bs,
            "learning": mean(gains) if target and len(gains) == len(target) else None,
            "forgetting": bs - s if s is not None and bs is not None else None}


def paired_strata(tasks_json: dict) -> tuple[Optional[dict], Optional[dict]]:
    """(learning strata, forgetting strata) of a tasks.json: per task, the per-item differences
    run - base (target tasks) and base - run (source tasks), for lorafull.stats to resample in pairs.
    None where a task lacks per-item scores on either side (results written before they were kept)."""

    def strata(names: list[str], sign: float) -> Optional[dict]:
        out = {}
        for name in names:
            run = (tasks_json.get("tasks") or {}).get(name, {}).get("item_scores")
            base = (tasks_json.get("base") or {}).get(name, {}).get("item_scores")
            if run is None or base is None or len(run) != len(base):
                return None
            out[name] = [None if d is None else sign * d for d in paired_differences(run, base)]
        return out or None

    return (strata(tasks_json.get("target_tasks") or [], 1.0),
            strata(tasks_json.get("source_tasks") or [], -1.0))


def with_intervals(result: dict) -> dict:
    """Add learning_interval and forgetting_interval ([low, high], 95 %, paired bootstrap) to a tasks.json."""
    for key, st in zip(("learning", "forgetting"), paired_strata(result)):
        est = estimate([st]) if st else None
        result[f"{key}_interval"] = None if est is None else [est.low, est.high]
    return result


# ---------------------------------------------------------------------------------------------
# Base-model cache
# ---------------------------------------------------------------------------------------------
def _fingerprint(folder: Path) -> list:
    """Identity of a weight folder: small files by content (scratch inits differ by seed under the same
    name), big ones by size and modification time (hashing 13 GB per eval job is not worth it)."""
    out = []
    for p in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        st = p.stat()
        if st.st_size <= 64 << 20:
            out.append([p.name, hashlib.sha256(p.read_bytes()).hexdigest()[:16]])
        else:
            out.append([p.name, st.st_size, int(st.st_mtime)])
    return out


def _task_key(spec) -> dict:
    p = Path(spec.path)
    st = p.stat() if p.exists() else None
    return {**to_dict(spec), "size": st.st_size if st else None, "mtime": int(st.st_mtime) if st else None}


def base_cache_path(study_dir: Path, base: Path, tokenizer_src: str, cfg: RunConfig, analysis: AnalysisConfig,
                    dtype: str) -> Path:
    key = {"base": str(base), "weights": _fingerprint(base), "tokenizer": tokenizer_src,
           "template": cfg.data.template, "max_new_tokens": cfg.eval.max_new_tokens, "dtype": dtype,
           "tasks": [_task_key(s) for s in analysis.target_tasks + analysis.source_tasks]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(study_dir) / "analysis" / f"base_{digest}.json"


# ---------------------------------------------------------------------------------------------
# Evaluating a run, its base and its checkpoints
# ---------------------------------------------------------------------------------------------
def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _free(model) -> None:
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load_folder(folder: Path, dtype: str):
    """A plain HF model folder, or an adapter folder on its base (merged into it where the method merges)."""
    from lorafull.models.load import torch_dtype
    from lorafull.models.methods import load_trained_folder

    return load_trained_folder(folder, torch_dtype(dtype), merge=True)


def _evaluate_model(model, tokenizer, cfg: RunConfig, analysis: AnalysisConfig, items_dir: Optional[Path]) -> dict:
    """Every target and source task on `model` (freed afterwards)."""
    from lorafull.analysis.tasks import evaluate_tasks

    model.to(_device()).eval()
    try:
        return evaluate_tasks(model, tokenizer, analysis.target_tasks + analysis.source_tasks, cfg.data.template,
                              cfg.eval.max_new_tokens, items_dir)
    finally:
        _free(model)


def evaluate_base(run_dir: Path, cfg: RunConfig, analysis: AnalysisConfig, tokenizer, dtype: str) -> dict:
    """Task results of the run's base model, from the study's cache or evaluated (and cached) now."""
    base = base_folder_of_run(run_dir, cfg.model.name_or_path)
    tokenizer_src = cfg.model.tokenizer or str(base)
    cache = base_cache_path(study_dir_of_run(run_dir), base, tokenizer_src, cfg, analysis, dtype)
    # eval jobs of one study run in parallel: the first to reach the base evaluates it, the others wait
    # for its cache file instead of evaluating the same base again
    with file_lock(cache.with_suffix(".lock"), what=f"{cache.name}: the base model is being evaluated"):
        if cache.exists():
            return json.loads(cache.read_text())["tasks"]
        tasks = _evaluate_model(_load_folder(base, dtype), tokenizer, cfg, analysis, None)
        write_json_atomic(cache, {"base": str(base), "tokenizer": tokenizer_src, "tasks": tasks})
        return tasks


def evaluate_run_tasks(run_dir: Path, analysis: AnalysisConfig) -> dict:
    from lorafull.models.load import load_tokenizer

    cfg = load_run_config(run_dir)
    paths = RunPaths.of(run_dir)
    dtype = cfg.model.dtype
    # the tokenizer training used (final/ carries a copy) scores the run, its base and its checkpoints
    tokenizer = load_tokenizer(str(paths.final))
    target = [s.name for s in analysis.target_tasks]
    source = [s.name for s in analysis.source_tasks]
    run_tasks = _evaluate_model(_load_folder(paths.final, dtype), tokenizer, cfg, analysis, paths.analysis / "items")
    try:
        base_tasks = evaluate_base(run_dir, cfg, analysis, tokenizer, dtype)
        base_error = None
    except (FileNotFoundError, OSError) as e:  # no base weights here: scores still useful alone
        base_tasks, base_error = {}, str(e).splitlines()[0]
        print(f"warning: {run_dir.name}: base model not evaluated: {base_error}", file=sys.stderr)
    run_scores = {k: v["score"] for k, v in run_tasks.items()}
    base_scores = {k: v["score"] for k, v in base_tasks.items()}
    result = {"run": run_dir.name, "method": cfg.method.kind, "target_tasks": target, "source_tasks": source,
              "tasks": run_tasks, "base": base_tasks, "base_error": base_error,
              **learning_forgetting(run_scores, base_scores, target, source), "checkpoints": []}
    if analysis.checkpoints:
        result["checkpoints"] = _evaluate_checkpoints(run_dir, cfg, analysis, tokenizer, dtype, base_scores)
    return with_intervals(result)


def _evaluate_checkpoints(run_dir: Path, cfg: RunConfig, analysis: AnalysisConfig, tokenizer, dtype: str,
                          base_scores: dict) -> list[dict]:
    """Learning/forgetting at each intermediate checkpoint the trainer kept (train.keep_checkpoints);
    the one at the last step is the final model, already evaluated. An unreadable checkpoint is noted
    and skipped: the final model's analysis stands without it."""
    from lorafull.analysis.checkpoints import list_checkpoints, load_checkpoint_model, total_steps_of

    target = [s.name for s in analysis.target_tasks]
    source = [s.name for s in analysis.source_tasks]
    out = []
    for step, ckpt in list_checkpoints(run_dir):
        if total_steps_of(ckpt) is not None and step >= total_steps_of(ckpt):
            continue
        try:
            model = load_checkpoint_model(run_dir, ckpt, cfg, dtype)
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            print(f"warning: {ckpt}: not evaluated: {e}", file=sys.stderr)
            out.append({"step": step, "error": str(e).splitlines()[0]})
            continue
        ck = _evaluate_model(model, tokenizer, cfg, analysis, None)
        scores = {k: v["score"] for k, v in ck.items()}
        out.append({"step": step, "tasks": ck, **learning_forgetting(scores, base_scores, target, source)})
    return out
