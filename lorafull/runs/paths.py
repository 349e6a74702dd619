"""The run folder's file names, the check that a run's folder stays inside its study, and atomic JSON files.

Library module (no command).

    RUN_DIR/config.yaml  status.json  metrics.jsonl  checkpoints/  final/  responses.jsonl  scores.jsonl
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @classmethod
    def of(cls, run_dir: str | os.PathLike) -> "RunPaths":
        return cls(Path(run_dir))

    config = property(lambda s: s.root / "config.yaml")
    status = property(lambda s: s.root / "status.json")
    metrics = property(lambda s: s.root / "metrics.jsonl")
    checkpoints = property(lambda s: s.root / "checkpoints")
    final = property(lambda s: s.root / "final")
    merged = property(lambda s: s.root / "merged")
    responses = property(lambda s: s.root / "responses.jsonl")
    scores = property(lambda s: s.root / "scores.jsonl")
    analysis = property(lambda s: s.root / "analysis")
    judge_summary = property(lambda s: s.root / "judge_summary.json")
    judge_batch = property(lambda s: s.root / "judge_batch.json")  # the judge batch in flight (lorafull.judge.batch)
    judge_batch_input = property(lambda s: s.root / "judge_batch_input.jsonl")
    eval_fingerprint = property(lambda s: s.root / "eval_fingerprint.json")  # lorafull.config.fingerprint
    eval_history = property(lambda s: s.root / "eval_history")  # results of earlier eval settings
    logs = property(lambda s: s.root / "logs")


def path_inside(root: str | os.PathLike, path: str | os.PathLike, what: str) -> Path:
    """`path` (relative to `root`, or absolute) if it lies strictly below `root` once `..` are folded,
    else a one-line ValueError naming `what`: a run named ../../x, .. or /abs must not write outside its
    folder. Lexical on purpose: a run folder that the user made a symlink to scratch space stays allowed."""
    root = Path(os.path.normpath(os.path.abspath(root)))
    full = Path(os.path.normpath(os.path.join(root, path)))
    if "\n" in str(path) or root not in full.parents:
        raise ValueError(f"{what}: {str(path)!r} would lie outside {root}")
    return full


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str))
    os.replace(tmp, path)
