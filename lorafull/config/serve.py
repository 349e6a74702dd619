"""The settings of a served judge (eval.judge.serve), their checks across keys, and what a served judge
is: its identity by content (the weights and tokenizer, the engine and its version).

Library module (no command): lorafull.config re-exports ServeConfig; the schema's JudgeConfig holds one.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from lorafull.config.content import gguf_file, input_identity, is_gguf_reference
from lorafull.config.typed import ranged

ServeEngine = Literal["vllm", "transformers"]


@dataclass
class ServeConfig:
    """eval.judge.serve: a judge model the study serves itself (lorafull.judge.serve), one server per
    study and judge, started with the first evaluation that needs it and stopped after the last."""
    model: Optional[str] = None  # a local Hugging Face folder (weights + tokenizer), or gguf:<file.gguf> / gguf:smollm2
    engine: ServeEngine = "vllm"  # vllm (GPUs) | transformers (`transformers serve`: CPUs, tests)
    gpus: int = ranged(1, ge=0)  # GPUs of the server job (0: a CPU job)
    tensor_parallel: Optional[int] = ranged(None, ge=1)  # vllm --tensor-parallel-size; null = gpus (at least 1)
    max_model_len: Optional[int] = ranged(None, ge=16)  # prompt + reply tokens; null = the model's context length
    engine_args: list[str] = field(default_factory=list)  # more arguments for the engine, e.g. [--dtype, bfloat16]
    startup_timeout_s: float = ranged(1800.0, gt=0)  # the engine must answer its health check within this
    wait_s: float = ranged(7200.0, gt=0)  # an eval job waits this long for the server's address, then fails
    # no request this long and every remaining evaluation waiting for its training: the server job hands over
    idle_timeout_s: float = ranged(900.0, gt=0)
    poll_s: float = ranged(30.0, ge=1)  # how often the server job asks Slurm whether its eval jobs still need it
    cpus: int = ranged(8, ge=1)  # CPUs of the server job
    mem_gb: int = ranged(64, ge=1)  # memory of the server job
    timeout_min: int = ranged(1440, ge=1)  # time limit of one server job (a later evaluation starts another)
    # (plan) the judge model's architecture when model has no config.json here (lorafull/models/archs)
    arch: Optional[str] = None


def serve_problems(judge) -> list[tuple[str, str]]:
    """eval.judge.serve across keys: the served model is the judge, reached online through its server."""
    serve = judge.serve
    if serve is None:
        return []
    out = []
    if not serve.model:
        out.append(("eval.judge.serve.model", "the judge model to serve: a local folder, or gguf:<file.gguf>"))
    if judge.kind != "openai":
        out.append(("eval.judge.serve", f"a served judge is asked through its OpenAI-compatible API: "
                    f"eval.judge.kind must be openai, got {judge.kind}"))
    if judge.mode == "batch":
        out.append(("eval.judge.mode", "batch is OpenAI's Batch API; a served judge (eval.judge.serve) is "
                    "asked online: set eval.judge.mode: online"))
    if judge.base_url:
        out.append(("eval.judge.base_url", "set by eval.judge.serve (the server's own address): leave it null"))
    if serve.tensor_parallel and serve.gpus and serve.tensor_parallel > serve.gpus:
        out.append(("eval.judge.serve.tensor_parallel", f"{serve.tensor_parallel} exceeds serve.gpus ({serve.gpus})"))
    return out


# ---------------------------------------------------------------------------------------------
# What a served judge is: by content, never by path or name
# ---------------------------------------------------------------------------------------------
ENGINE_PACKAGES = {"vllm": "vllm", "transformers": "transformers"}
# serve settings that change what the judge replies (the rest only decide where and how fast it runs)
SERVE_SCORING_KEYS = ("max_model_len", "engine_args")


def engine_version(engine: str) -> str:
    """The installed version of the engine's package, as this interpreter (the jobs' too) sees it."""
    from importlib import metadata  # (here: importing it costs every launcher call tens of ms)

    try:
        return metadata.version(ENGINE_PACKAGES[engine])
    except metadata.PackageNotFoundError:
        return "not-installed"


def served_model_source(model: str) -> str:
    """The file or folder whose content is the served model: a gguf: reference's .gguf file (the folder
    converted from it is derived from the file), else the folder itself."""
    if is_gguf_reference(model):
        try:
            return str(gguf_file(model))
        except FileNotFoundError:
            return model  # not here: counted by its text, as input_identity counts paths that are elsewhere
    return model


def served_identity(serve: ServeConfig, cache_dir: Optional[str] = None) -> dict:
    """{"engine", "engine_version", "model": the content hash of the weights + tokenizer folder (or the
    .gguf file), "name": the folder's or file's name, for people}."""
    source = served_model_source(serve.model)
    return {"engine": serve.engine, "engine_version": engine_version(serve.engine),
            "model": input_identity(source, cache_dir), "name": Path(source.rstrip("/")).name or source}


def served_label(identity: dict) -> str:
    """How a score row, the cache and the report name a served judge: name@hash (engine-version)."""
    model = str(identity["model"])
    digest = model.rsplit(":", 1)[-1] if model.startswith(("sha256:", "folder-sha256:")) else \
        hashlib.sha256(model.encode()).hexdigest()
    return f"served:{identity['name']}@{digest[:12]}/{identity['engine']}-{identity['engine_version']}"


def server_key(serve: ServeConfig) -> str:
    """The folder name of a study's server for these settings (STUDY_DIR/judge_server/<key>): runs whose
    judge settings name the same model and engine setup share one server."""
    what = {k: getattr(serve, k) for k in ("model", "engine", "gpus", "tensor_parallel", "max_model_len",
                                            "engine_args")}
    return "judge-" + hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]
