"""The method of a run: which parameters train (method.kind), and how a trained folder loads back.

    python -c "from lorafull.models.load import count_params_meta as c; from lorafull.config import MethodConfig as M; print(c('llama-7b', M(kind='dora')))"

full     every weight trains
lora     peft LoRA on method.target_modules (r, alpha, dropout)
dora     peft LoRA with weight decomposition (use_dora)
loha     peft LoHa (Hadamard product of two low-rank pairs) on the target modules
ia3      peft IA3: learned scaling vectors on the targets (feed-forward ones scale their input)
prompt   peft prompt tuning: method.num_virtual_tokens learned input embeddings
prefix   peft prefix tuning: learned keys/values of method.num_virtual_tokens positions in every layer
adapter  bottleneck adapters of size method.adapter_size after each MLP block (lorafull.models.bottleneck)
qlora    peft LoRA (as lora) over a base held in 4 bits by bitsandbytes (lorafull.models.qlora)
Every kind but full freezes the base; final/ then holds only what trained (a peft adapter folder, or
the bottleneck adapters), and the base is named inside it.
"""
from __future__ import annotations

from pathlib import Path

from typing import Optional

import torch

PEFT_KINDS = ("lora", "dora", "loha", "ia3", "prompt", "prefix", "qlora")
# kinds whose weight change folds into the base weights (peft merge_and_unload; qlora into the dequantised base)
MERGEABLE_KINDS = ("lora", "dora", "loha", "ia3", "qlora")
# names of the parameters a method adds (peft's tuner prefixes; our adapters)
ADDED_NAME_PARTS = ("lora_", "hada_", "ia3_", "prompt_encoder", "bottleneck_adapter")


def _targets(model, method_cfg) -> list[str] | str:
    from lorafull.models.targets import linear_module_names, resolve_target_modules

    targets = resolve_target_modules(model, method_cfg.target_modules)
    if targets == "all-linear":  # written out: not every peft tuner takes the keyword
        targets = [n for n in linear_module_names(model) if n != "lm_head"]
    return targets


def peft_config(model, method_cfg):
    """The peft config of a method.kind in PEFT_KINDS."""
    import peft

    kind, common = method_cfg.kind, {"task_type": "CAUSAL_LM"}
    if kind in ("lora", "dora", "qlora"):
        targets = method_cfg.target_modules if method_cfg.target_modules == "all-linear" else _targets(model, method_cfg)
        return peft.LoraConfig(r=method_cfg.r, lora_alpha=method_cfg.alpha, lora_dropout=method_cfg.dropout,
                               target_modules=targets, bias="none", use_dora=kind == "dora", **common)
    if kind == "loha":
        return peft.LoHaConfig(r=method_cfg.r, alpha=method_cfg.alpha, module_dropout=method_cfg.dropout,
                               target_modules=_targets(model, method_cfg), **common)
    if kind == "ia3":
        from lorafull.models.targets import TARGET_KEYWORDS

        targets = _targets(model, method_cfg)
        feedforward = [t for t in targets if t in TARGET_KEYWORDS["mlp"]]
        return peft.IA3Config(target_modules=targets, feedforward_modules=feedforward, **common)
    if kind == "prompt":
        return peft.PromptTuningConfig(num_virtual_tokens=method_cfg.num_virtual_tokens, **common)
    return peft.PrefixTuningConfig(num_virtual_tokens=method_cfg.num_virtual_tokens, **common)


def apply_method(model, method_cfg, seed: int = 0, adapter_dtype: Optional[torch.dtype] = None):
    """full: every parameter trains; any other kind: the base frozen and the method's parameters added.
    The RNG is seeded first so every process (and every rerun) starts from the same added weights.

    adapter_dtype (peft methods) None: peft's default, adapters in fp32 and each adapted layer's input cast
    up to fp32 (a copy of every activation an adapter reads). A dtype: the adapters are held in it and the
    input cast is off, so an adapter computes in the dtype its input arrives in -- pass fp32 when the
    adapters are themselves the master weights (plain torch under autocast), the compute dtype when the
    engine keeps an fp32 master copy (DeepSpeed bf16/fp16). dropout 0: peft puts an Identity in place of
    the dropout, so no dropout kernel runs (tests/test_speed.py checks it)."""
    kind = method_cfg.kind
    if kind == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    torch.manual_seed(seed)
    if kind == "adapter":
        from lorafull.models.bottleneck import add_adapters

        return add_adapters(model, method_cfg.adapter_size)
    if kind not in PEFT_KINDS:
        raise ValueError(f"method.kind: expected full, adapter or one of {', '.join(PEFT_KINDS)}, got {kind!r}")
    from peft import get_peft_model

    if kind == "qlora" and getattr(model, "is_loaded_in_4bit", False):  # a meta-device count has no 4-bit base
        from lorafull.models.qlora import prepare_for_training

        model = prepare_for_training(model)
    model = get_peft_model(model, peft_config(model, method_cfg))
    if adapter_dtype is not None:
        _hold_adapters_in(model, adapter_dtype)
    return model


def _hold_adapters_in(model, dtype: torch.dtype) -> None:
    for p in model.parameters():
        if p.requires_grad:  # the method's added parameters: the base is frozen
            p.data = p.data.to(dtype)
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False


def is_added(name: str) -> bool:
    return any(part in name for part in ADDED_NAME_PARTS)


def is_trained_folder(folder: Path) -> bool:
    """A finished model of any method: an HF folder, a peft adapter folder, or a bottleneck adapter folder."""
    from lorafull.models.bottleneck import is_adapter_folder

    folder = Path(folder)
    return any((folder / f).exists() for f in ("config.json", "adapter_config.json")) or is_adapter_folder(folder)


def load_trained_folder(folder: Path, dtype: torch.dtype, merge: bool = False):
    """The model a trained folder holds: a peft adapter on its base (merged into it when merge=True and the
    method can be merged; a qlora adapter on its 4-bit base, or merged into the dequantised base),
    bottleneck adapters on their base (never merged: nonlinear), or an HF folder."""
    from transformers import AutoModelForCausalLM

    from lorafull.models.bottleneck import is_adapter_folder, load_with_adapters

    from lorafull.models.qlora import load_adapter_folder, read_settings

    folder = Path(folder)
    quantized = read_settings(folder)
    if quantized is not None:  # qlora: the 4-bit base the adapter was trained on, or merged into its dequantisation
        return load_adapter_folder(folder, quantized, dtype, merge)
    if (folder / "adapter_config.json").exists():
        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(str(folder))
        base = AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path, dtype=dtype)
        model = PeftModel.from_pretrained(base, str(folder))
        return model.merge_and_unload() if merge and not config.is_prompt_learning else model
    if is_adapter_folder(folder):
        return load_with_adapters(folder, dtype)
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
