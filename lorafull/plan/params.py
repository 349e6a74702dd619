"""Parameter counts of a run before any weight is read: the architecture a run trains (its own, its
root run's for run:<name>, model.arch, or a scratch: architecture grown to its tokenizer's vocabulary)
and trainable / total / added parameters counted on the meta device.

Library module (no command): lorafull.plan.estimate uses it.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

from lorafull.config import RunConfig, Study
from lorafull.models.method_table import method_of


def root_run(run: RunConfig, study: Study) -> RunConfig:
    """The run a chain of run:<name> references starts from (load_study has ruled out cycles)."""
    while run.parent is not None:
        run = study.run(run.parent)
    return run


def resolve_arch(run: RunConfig, study: Study) -> Optional[str]:
    """What count_params_meta accepts for this run's base model, or None when nothing here names it."""
    run = root_run(run, study)  # a chained run has its root's architecture
    path = run.model.name_or_path
    if path.startswith("scratch:"):
        return path
    if (Path(path).expanduser() / "config.json").exists():
        return str(Path(path).expanduser())
    arch = run.model.arch
    if arch:
        p = Path(arch).expanduser()
        if p.suffix == ".json" and not p.is_absolute():
            p = (Path(study.path).parent / p) if (Path(study.path).parent / p).exists() else p.resolve()
        return str(p) if p.suffix == ".json" else arch
    return None


def arch_dict(arch: str) -> dict:
    """The config dict (hidden_size, layers, ...) behind a resolve_arch() answer."""
    from lorafull.models.tiny import arch_config

    if arch.startswith("scratch:"):
        arch = arch[len("scratch:"):]
    p = Path(arch)
    if (p / "config.json").exists():
        return json.loads((p / "config.json").read_text())
    return arch_config(arch)


@functools.lru_cache(maxsize=256)
def _count(arch: str, method_key: str) -> dict:
    from lorafull.config import MethodConfig
    from lorafull.models.load import count_params_meta

    return dict(count_params_meta(arch, MethodConfig(**json.loads(method_key))))


def count_params(arch: str, run: RunConfig) -> dict:
    """{"total", "trainable", "added"}, cached: a grid shares a handful of (arch, method) pairs."""
    key = method_of(run).setting_values(run.method)  # the kind and each setting that shapes it
    return _count(arch, json.dumps(key, sort_keys=True))


def grow_vocab(run: RunConfig, study: Study, arch_name: str, arch: dict, counts: dict) -> tuple[dict, dict]:
    """A scratch: model's embeddings grow to its tokenizer's vocabulary (lorafull.models.load.prepare_base)."""
    tok = tokenizer_file(run, study)
    if not arch_name.startswith("scratch:") or tok is None:
        return arch, counts
    from tokenizers import Tokenizer

    extra = Tokenizer.from_file(str(tok)).get_vocab_size(with_added_tokens=True) - arch["vocab_size"]
    if extra <= 0:
        return arch, counts
    grown = extra * arch["hidden_size"] * (1 if arch.get("tie_word_embeddings") else 2)
    counts = {**counts, "total": counts["total"] + grown}
    if not method_of(run).frozen_base:
        counts["trainable"] += grown
    return {**arch, "vocab_size": arch["vocab_size"] + extra}, counts


def tokenizer_file(run: RunConfig, study: Study) -> Optional[Path]:
    """The tokenizer.json the run trains with, when it is here."""
    root = root_run(run, study)
    for cand in (run.model.tokenizer, root.model.tokenizer, root.model.name_or_path):
        if cand and not cand.startswith(("run:", "scratch:")) and (Path(cand) / "tokenizer.json").exists():
            return Path(cand) / "tokenizer.json"
    return None
