"""A run's file paths made absolute (jobs run elsewhere, in other folders) with {study_dir} expanded;
hub ids, run:/scratch: references and gguf:<name> stay as they are.

Library module (no command): lorafull.config.study applies it to every run it loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from lorafull.config.schema import RunConfig


def resolve_paths(run: RunConfig, study_dir: Path, memo: Optional[dict] = None) -> None:
    """Make file paths absolute (jobs run elsewhere) and expand {study_dir}. `memo` (path text -> result)
    is shared by the runs of one study: a sweep's runs name the same few files."""
    memo = {} if memo is None else memo

    def fix(p: Optional[str]) -> Optional[str]:
        if p not in memo:
            memo[p] = resolved_path(p, study_dir)
        return memo[p]

    run.model.name_or_path = fix(run.model.name_or_path)
    run.model.tokenizer = fix(run.model.tokenizer)
    run.data.train = fix(run.data.train)
    run.data.cache_dir = fix(run.data.cache_dir) or fix("{study_dir}/cache/tokenized")
    run.eval.eval_set = fix(run.eval.eval_set)
    run.eval.fewshot_file = fix(run.eval.fewshot_file)
    run.eval.judge.prompts = fix(run.eval.judge.prompts)
    if run.eval.judge.serve is not None:
        run.eval.judge.serve.model = fix(run.eval.judge.serve.model)
    run.eval.judge.cache = fix(run.eval.judge.cache) or fix("{study_dir}/cache/judge.sqlite")


def resolved_path(p: Optional[str], study_dir: Path) -> Optional[str]:
    if p is not None and p.startswith("gguf:") and p.endswith(".gguf"):
        return "gguf:" + resolved_path(p[5:], study_dir)  # a .gguf file is relative to the study; gguf:<name> stays a name
    if p is None or ":" in p.split("/")[0]:  # run:..., scratch:..., hub ids have no ':' but no '/'-prefix
        return p
    p = p.replace("{study_dir}", str(study_dir))
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists() or p.startswith((".", "~")) or "{" in p:
        return str(path.resolve())
    # "org/model" hub ids that do not exist locally stay as they are
    return p if p.count("/") == 1 and not p.endswith((".json", ".jsonl")) else str(path.resolve())
