"""The input files a study's runs need, checked before anything is planned or submitted.

Library module (no command): launch.grid calls missing_inputs() for a launch and for --dry-run, so a
mistyped data path fails here in one line instead of in a training job hours later. A study whose
files exist only on the cluster (a laptop planning it) passes --inputs-on-cluster to skip the check.

Checked, per run: model.name_or_path and model.tokenizer when they are local paths (hub ids, run:,
scratch: are not files; gguf: names need their package), data.train unless it is a hub dataset (hf:),
eval.eval_set, eval.fewshot_file (with eval.fewshot), eval.judge.prompts; per study, the analysis
tasks' files. Paths are absolute by now (lorafull.config resolves them against the study folder).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from lorafull.config import RunConfig, Study


def _local(path: Optional[str]) -> Optional[str]:
    """The path if it names a file on this machine (absolute after resolution), else None."""
    return path if path and os.path.isabs(path) else None


def _model_problem(reference: Optional[str]) -> Optional[str]:
    """Why a model reference cannot be read here (None when it can or is not a local file)."""
    if not reference:
        return None
    if reference.startswith("gguf:"):
        from lorafull.models.gguf import require_gguf

        try:
            require_gguf(reference)
        except (FileNotFoundError, ImportError) as e:
            return str(e)
        return None
    local = _local(reference)
    return f"{local}: no such file or folder" if local and not Path(local).exists() else None


def run_inputs(run: RunConfig) -> dict[str, Optional[str]]:
    """key -> path of the files one run reads (None where the key names no local file)."""
    data = run.data.train if run.data.train and not run.data.train.startswith("hf:") else None
    return {"data.train": _local(data), "eval.eval_set": _local(run.eval.eval_set),
            "eval.fewshot_file": _local(run.eval.fewshot_file) if run.eval.fewshot else None,
            "eval.judge.prompts": _local(run.eval.judge.prompts)}


def missing_inputs(study: Study) -> list[str]:
    """One line per missing input, naming the key, the path and the runs that need it."""
    needs: dict[tuple[str, str], list[str]] = {}
    for run in study.runs:
        for key in ("model.name_or_path", "model.tokenizer"):
            problem = _model_problem(getattr(run.model, key.split(".")[1]))
            if problem:
                needs.setdefault((key, problem), []).append(run.name)
        for key, path in run_inputs(run).items():
            if path and not Path(path).exists():
                needs.setdefault((key, f"{path}: no such file"), []).append(run.name)
    for task in study.analysis.target_tasks + study.analysis.source_tasks:
        if _local(task.path) and not Path(task.path).exists():
            needs.setdefault((f"analysis task {task.name}", f"{task.path}: no such file"), []).append("analysis")
    lines = []
    for (key, problem), runs in needs.items():
        who = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
        lines.append(f"{problem} ({key} of {who})")
    return lines
