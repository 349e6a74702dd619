"""The evaluation fingerprint: what a run's responses and scores were computed under, so that results
stay current when a study's eval settings change.

    RUN_DIR/eval_fingerprint.json   {"fingerprint", "generation", "judge", "settings": {...}}

`generation` hashes the eval set's content and the generation settings (max_new_tokens, temperature,
backend, num_items); `judge` hashes the judge settings that change a score: kind, model, the prompts
file's content, temperature, max_tokens, n_samples, ... (for kind: reference, its scorers). Settings
that change how the judge runs but not what it returns (endpoint, key, concurrency, rate limits,
retries, timeouts, cache, prices) are left out. `fingerprint` hashes both.

The generate and judge stages call refresh_eval_results before they write: results computed under
another fingerprint are moved to RUN_DIR/eval_history/<their fingerprint>/ (never overwritten; the
responses are kept in place when only the judge changed), then the current fingerprint is recorded.
launch.grid plans the evaluation of a done run again when eval_is_current says no.

Library module (no command).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Optional

from lorafull.config.content import input_identity
from lorafull.config.schema import RunConfig
from lorafull.config.serve import SERVE_SCORING_KEYS, served_identity
from lorafull.config.typed import to_dict
from lorafull.runs import RunPaths, write_json_atomic

FINGERPRINT_FILE = RunPaths.of(".").eval_fingerprint.name
HISTORY_DIR = RunPaths.of(".").eval_history.name
GENERATION_KEYS = ("max_new_tokens", "temperature", "backend", "num_items")
# judge settings that change how it runs, not what it returns
JUDGE_OPERATIONAL = {"base_url", "api_key_env", "concurrency", "requests_per_minute", "tokens_per_minute",
                     "max_retries", "backoff_base_s", "timeout_s", "cache", "prices", "batch_max_requests",
                     "batch_max_mb", "enqueued_token_limit", "batch_wait_s"}


def _short_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _default_prompts() -> str:
    # the judge package's shipped prompts: a file, not an import (config sits below the judge)
    return str(resources.files("lorafull") / "judge" / "builtin" / "judge_default.jsonl")


def eval_fingerprint(run: RunConfig) -> dict:
    cache = run.data.cache_dir
    generation = {k: getattr(run.eval, k) for k in GENERATION_KEYS}
    generation["eval_set"] = input_identity(run.eval.eval_set, cache)
    judge_cfg = to_dict(run.eval.judge)
    if judge_cfg["kind"] == "reference":
        judge = {"kind": "reference", "scorers": judge_cfg["scorers"]}
    else:
        # serve: absent unless set, so that fingerprints recorded before the key existed stay current
        judge = {k: v for k, v in judge_cfg.items() if k not in JUDGE_OPERATIONAL and k not in ("scorers", "serve")}
        judge["prompts"] = input_identity(run.eval.judge.prompts or _default_prompts(), cache)
        if run.eval.judge.serve is not None:  # the judge is the served model, whatever eval.judge.model says
            judge["model"] = served_identity(run.eval.judge.serve, cache)
            judge["serve"] = {k: judge_cfg["serve"][k] for k in SERVE_SCORING_KEYS}
    return {"fingerprint": _short_hash([generation, judge]), "generation": _short_hash(generation),
            "judge": _short_hash(judge), "settings": {"generation": generation, "judge": judge}}


def read_eval_fingerprint(run_dir: str | os.PathLike) -> Optional[dict]:
    path = RunPaths.of(run_dir).eval_fingerprint
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _has_results(run_dir: Path) -> bool:
    paths = RunPaths.of(run_dir)
    return paths.responses.exists() or paths.scores.exists()


def eval_is_current(run_dir: str | os.PathLike, run: RunConfig, current: Optional[str] = None) -> bool:
    """False when the folder's responses or scores were computed under other eval settings than the run's.
    Results without a fingerprint (written before fingerprints existed, or by hand) are taken as they
    are: re-evaluating every old study on upgrade would cost GPU time and judge fees unasked, and the
    report marks their rows 'unknown'."""
    recorded = read_eval_fingerprint(run_dir)  # `current`: eval_fingerprint(run)["fingerprint"], if known
    return recorded is None or recorded.get("fingerprint") == (current or eval_fingerprint(run)["fingerprint"])


def _free_folder(base: Path) -> Path:
    dest, n = base, 1
    while dest.exists():  # A -> B -> A -> B: each earlier result set keeps its own folder
        n += 1
        dest = base.with_name(f"{base.name}-{n}")
    return dest


def refresh_eval_results(run_dir: str | os.PathLike, run: RunConfig) -> Optional[Path]:
    """Before a stage writes responses or scores: move results of other eval settings aside, record the
    current fingerprint. Returns the folder the old results went to, if any."""
    run_dir = Path(run_dir)
    now = eval_fingerprint(run)
    old = read_eval_fingerprint(run_dir)
    if old is None and _has_results(run_dir):
        return None  # results of unknown settings: continued, never stamped with settings they may not have
    moved = None
    if old is not None and old.get("fingerprint") != now["fingerprint"] and _has_results(run_dir):
        paths = RunPaths.of(run_dir)
        moved = _free_folder(paths.eval_history / str(old["fingerprint"]))
        moved.mkdir(parents=True)
        # a judge batch in flight was asked under the old settings: its record goes with their results
        for path in (paths.scores, paths.judge_summary, paths.eval_fingerprint, paths.judge_batch,
                     paths.judge_batch_input):
            if path.exists():
                os.replace(path, moved / path.name)
        if paths.responses.exists():
            if old.get("generation") == now["generation"]:  # only the judge changed: answers still hold
                shutil.copy2(paths.responses, moved / paths.responses.name)
            else:
                os.replace(paths.responses, moved / paths.responses.name)
    if old != now:
        write_json_atomic(RunPaths.of(run_dir).eval_fingerprint, now)
    return moved
