"""Models: load a base, apply the method (lorafull.models.methods), count parameters, load a run's final model.

    python -c "from lorafull.models.load import *; print(count_params_meta('llama-7b', MethodConfig()))"

The run folder's final/ is the contract between training and every later stage:
- full FT: final/ is a Hugging Face model folder (config.json, *.safetensors) plus the tokenizer;
- LoRA and the other peft methods: final/ is a peft adapter folder (adapter_config.json,
           adapter_model.safetensors) plus the tokenizer; base_model_name_or_path is the resolved base;
- adapter: final/ holds bottleneck_config.json (naming the base) and bottleneck_adapter.safetensors.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import torch

from lorafull.config import MethodConfig, ModelConfig, RunConfig, load_run_config
from lorafull.models.targets import TARGET_KEYWORDS, linear_module_names, resolve_target_modules  # noqa: F401 (the loader's API)
from lorafull.models.method_table import final_format, method_of
from lorafull.runs import RunPaths

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[name]


def resolve_run_reference(name_or_path: str, run_dir: Path) -> str:
    """'run:<name>' -> that run's final model folder (a sibling of run_dir); LoRA parents are
    merged into <parent>/merged first (chained runs train from a plain HF model). 'gguf:<file or name>'
    -> its converted Hugging Face folder (lorafull.models.gguf; converted on first use)."""
    if name_or_path.startswith("gguf:"):
        from lorafull.models.gguf import gguf_folder  # local import: only GGUF users need the gguf package

        return str(gguf_folder(name_or_path))
    if not name_or_path.startswith("run:"):
        return name_or_path
    parent_dir = Path(run_dir).parent / name_or_path[len("run:"):]
    paths = RunPaths.of(parent_dir)
    fmt = final_format(paths.final)
    if fmt not in (None, "hf"):  # adapters: the parent's merged model (merge_run says which cannot merge)
        if final_format(paths.merged) != "hf":
            merge_run(parent_dir)
        return str(paths.merged)
    if fmt is None:
        raise FileNotFoundError(f"{name_or_path}: {paths.final} holds no finished model (has the parent run finished?)")
    return str(paths.final)


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token_id is None:  # LLaMA tokenizers ship without a pad token
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def load_final(run_dir: str | os.PathLike, dtype: Optional[str] = None, merge: bool = False):
    """(model, tokenizer) of a finished run, in eval mode. Adapter runs come back as a PeftModel (merged into
    the base weights when merge=True and the method merges) or a base with bottleneck adapters."""
    from lorafull.models.methods import is_trained_folder, load_trained_folder

    paths = RunPaths.of(run_dir)
    cfg: RunConfig = load_run_config(run_dir)
    if not is_trained_folder(paths.final):
        raise FileNotFoundError(f"{paths.final}: no finished model (run python -m lorafull.train {run_dir} first)")
    model = load_trained_folder(paths.final, torch_dtype(dtype or cfg.model.dtype), merge=merge)
    tokenizer = load_tokenizer(str(paths.final))
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------
# The base model of a run
# ---------------------------------------------------------------------------------------------
def base_folder(run_dir: str | os.PathLike) -> Path:
    """Where a scratch: base is written once (RUN_DIR/base/), so an adapter has a real base folder."""
    return Path(run_dir) / "base"


def resolve_base_path(model_cfg: ModelConfig, run_dir: str | os.PathLike) -> str:
    """The folder (or hub id) the base weights load from; no side effects (see prepare_base)."""
    name = model_cfg.name_or_path
    if name.startswith("scratch:"):
        return str(base_folder(run_dir).resolve())
    return resolve_run_reference(name, Path(run_dir))


def prepare_base(model_cfg: ModelConfig, run_dir: str | os.PathLike, seed: int = 0) -> str:
    """Make the base loadable and return its path: a run: parent that is LoRA gets merged, a scratch:
    architecture is initialised from `seed` and saved (fp32) into RUN_DIR/base/ once. Idempotent; under
    several processes call it on one rank first (training does), then load_base everywhere."""
    name = model_cfg.name_or_path
    if not name.startswith("scratch:"):
        return resolve_run_reference(name, Path(run_dir))
    out = base_folder(run_dir)
    if (out / "config.json").exists():
        return str(out.resolve())
    from lorafull.models.tiny import build_tiny_model

    arch = name[len("scratch:"):]
    vocab_size = None
    if model_cfg.tokenizer:
        # the tokenizer must fit the embedding; grow the vocabulary to it rather than fail on an id
        from lorafull.models.tiny import arch_config

        n_tokens = len(load_tokenizer(model_cfg.tokenizer))
        vocab_size = max(arch_config(arch)["vocab_size"], n_tokens)
    model = build_tiny_model(arch, vocab_size=vocab_size, seed=seed)
    tmp = out.with_name(f".base.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if model_cfg.tokenizer:
        load_tokenizer(model_cfg.tokenizer).save_pretrained(tmp)
    if out.exists():  # a torn folder from a crash: replace it
        shutil.rmtree(out)
    os.replace(tmp, out)
    return str(out.resolve())


def load_base(model_cfg: ModelConfig, run_dir: str | os.PathLike, seed: int = 0, dtype: Optional[str] = None):
    """The base model of a run: a local folder, a hub id, run:<name> (a parent run's final model),
    gguf:<file or name> (converted once into a cache) or scratch:<arch> (random init with `seed`, saved to RUN_DIR/base/ the first time)."""
    from transformers import AutoModelForCausalLM

    path = prepare_base(model_cfg, run_dir, seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype or model_cfg.dtype))
    model.config.use_cache = False  # training never reuses the KV cache
    return model


# ---------------------------------------------------------------------------------------------
# The method: which parameters train
# ---------------------------------------------------------------------------------------------
def apply_method(model, method_cfg: MethodConfig, seed: int = 0, adapter_dtype: Optional[torch.dtype] = None):
    """The run's method applied to the model (lorafull.models.methods, where every kind is described;
    adapter_dtype: see there)."""
    from lorafull.models.methods import apply_method as apply

    return apply(model, method_cfg, seed, adapter_dtype=adapter_dtype)


def _numel(p) -> int:
    # under ZeRO-3 a partitioned parameter has numel() == 0; ds_numel is its full size
    return int(getattr(p, "ds_numel", 0) or p.numel())


def param_counts(model) -> dict:
    """{"total", "trainable", "added"}: added = parameters the method introduced (LoRA A/B, adapters...),
    0 for full."""
    from lorafull.models.methods import is_added

    total = trainable = added = 0
    for name, p in model.named_parameters():
        n = _numel(p)
        total += n
        trainable += n if p.requires_grad else 0
        added += n if is_added(name) else 0
    return {"total": total, "trainable": trainable, "added": added}


def _architecture_config(name_or_arch: str):
    from transformers import AutoConfig

    from lorafull.models.tiny import ARCH_DIR, arch_config

    name = name_or_arch[len("scratch:"):] if name_or_arch.startswith("scratch:") else name_or_arch
    path = Path(name)
    if path.is_dir():
        return AutoConfig.from_pretrained(str(path))
    if path.suffix == ".json" or (ARCH_DIR / f"{name}.json").exists():
        cfg = arch_config(name)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return AutoConfig.from_pretrained(name)  # a hub id: config.json only, from the cache or the hub


def count_params_meta(name_or_arch: str, method_cfg: MethodConfig) -> dict:
    """Parameter counts of a model + method without weights: the model is built on the meta device.
    Accepts scratch:<arch>, an arch name (lorafull/models/archs), a folder or config.json path, a hub id."""
    from transformers import AutoModelForCausalLM

    config = _architecture_config(name_or_arch)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        model = apply_method(model, method_cfg)
    return param_counts(model)


def merge_run(run_dir: str | os.PathLike) -> Path:
    """RUN_DIR/merged/ (built once, atomically); final/ itself for a full fine-tune."""
    paths = RunPaths.of(run_dir)
    fmt = final_format(paths.final)
    if fmt == "hf":
        return paths.final
    kind = load_run_config(run_dir).method.kind
    if fmt == "bottleneck" or not method_of(kind).mergeable:
        raise ValueError(f"{paths.final}: method.kind {kind} adds layers or "
                         "inputs that cannot be folded into the base weights: no merged model to build")
    if fmt is None:
        raise FileNotFoundError(f"{paths.final}: no finished adapter (run python -m lorafull.train {run_dir} first)")
    if final_format(paths.merged) == "hf":
        return paths.merged
    # the base in its own dtype (half the memory of fp32 for a 13B merge on a login node); peft adds
    # the fp32 adapter product into it, one rounding as when the merged weights are saved
    dtype = load_run_config(run_dir).model.dtype
    model, tokenizer = load_final(run_dir, dtype=dtype, merge=True)
    tmp = paths.root / f".merged.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.dtype = torch_dtype(dtype)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    try:
        os.replace(tmp, paths.merged)
    except OSError:  # another job merged the same run meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (paths.merged / "config.json").exists():
            raise
    return paths.merged
