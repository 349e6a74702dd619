"""Run signatures: a short hash of the settings that change what a run learns, with its inputs (data,
tokenizer, base model) by content and a chained run's parent by the parent's signature. Paths, the
study folder, the working directory, resources, cadence and eval settings are no part of it, so the
same run moved, cloned or run on other hardware keeps its name and its folder.

Library module (no command); `python -m lorafull.config FILE` prints every run's signature.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

from lorafull.config.content import input_identity
from lorafull.config.schema import RunConfig, Study
from lorafull.config.typed import to_dict

# Settings that do not change what a run learns: resources, cadence, logging, outputs, eval.
_NOT_IN_SIGNATURE = {
    "name",
    "group",  # set by study.seeds: the seed itself is in the signature
    "eval",
    "model.arch",  # planning hint only
    "data.cache_dir",
    "data.num_proc",
    "train.zero_stage",
    "train.offload",
    "train.micro_batch_size",
    "train.gradient_checkpointing",
    "train.save_every_steps",
    "train.keep_checkpoints",
    "train.log_every_steps",
    "train.deepspeed",
    "train.nproc",
    "train.report_to",
    "train.adapter_dtype",  # the same fp32 master weights either way; only where the casts happen
    "train.compile",
    "train.fused_kernels",
}


def _model_identity(name_or_path: str, cache_dir: Optional[str], study_dir) -> str:
    """A base model by what it is: a local folder by its files' contents, scratch:<config.json> by the
    file's content; a hub id or a shipped scratch architecture by its name."""
    if name_or_path.startswith("scratch:"):
        arch = name_or_path[len("scratch:"):]
        return "scratch:" + (input_identity(arch, cache_dir, study_dir) if "/" in arch else arch)
    return input_identity(name_or_path, cache_dir, study_dir)


def signature_payload(run: RunConfig, parent_signature: Optional[str] = None,
                      study_dir: Optional[str | os.PathLike] = None) -> dict:
    """The settings that change what a run learns, with every input path replaced by its content's
    identity (lorafull.config.content): where a file lies is no part of a run."""
    d = to_dict(run)
    for dotted in _NOT_IN_SIGNATURE:
        parts = dotted.split(".")
        sub = d
        for p in parts[:-1]:
            sub = sub.get(p, {})
        sub.pop(parts[-1], None)
    cache = run.data.cache_dir
    d["data"]["train"] = input_identity(run.data.train, cache, study_dir)
    d["model"]["tokenizer"] = input_identity(run.model.tokenizer, cache, study_dir)
    if run.parent is not None:
        # a chained run depends on what its parent learned, not on the parent's name
        d["model"]["name_or_path"] = f"run-signature:{parent_signature}"
    else:
        d["model"]["name_or_path"] = _model_identity(run.model.name_or_path, cache, study_dir)
    if run.train.branch_of:
        # a cooldown branch: the trunk (its signature, above) and the branch point, which the branch's own
        # settings fix (its token budget, warmup and cooldown on the trunk's data order); marked, so that a
        # branch never shares a signature with a run trained on the trunk's final model
        d["train"]["branch_of"] = "trunk-checkpoint"
    return d


def signature(run: RunConfig, parent_signature: Optional[str] = None,
              study_dir: Optional[str | os.PathLike] = None) -> str:
    payload = json.dumps(signature_payload(run, parent_signature, study_dir), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def study_signatures(study: Study) -> dict[str, str]:
    """name -> signature for every run, parents first (chained runs hash their parent's signature)."""
    sigs: dict[str, str] = {}
    for run in study.runs:  # runs are topologically ordered by load_study
        sigs[run.name] = signature(run, sigs.get(run.parent) if run.parent else None, study.output_dir)
    return sigs
