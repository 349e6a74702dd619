"""ONE table of the training methods (method.kind): for each, how it is built, saved, loaded, merged and
planned. Every other module asks this table instead of testing method.kind; a new method is a new row
here (and its kind in lorafull.config.schema), plus its builder where none of the existing ones fits.

Library module (no command); light: nothing here imports torch, so the launcher and the report may ask.

    from lorafull.models.method_table import method_of
    method_of(run.method).frozen_base, method_of("lora").label(run.method), method_of(cfg).build(model, ...)

Save formats of final/ (what a finished run's folder holds):
    hf          a Hugging Face model folder (config.json, *.safetensors): every weight trained
    peft        a peft adapter folder (adapter_config.json): the base named inside it
    bottleneck  our bottleneck adapters (bottleneck_config.json, lorafull.models.bottleneck)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

# the file in final/ that names a finished model of each save format
FINAL_FILES = {"hf": "config.json", "peft": "adapter_config.json", "bottleneck": "bottleneck_config.json"}


@dataclass(frozen=True)
class Method:
    kind: str
    summary: str
    format: str  # save format of final/: hf | peft | bottleneck (FINAL_FILES)
    # the method.* settings that shape it (parameter counts, calibration shapes, report comparisons)
    settings: tuple[str, ...] = ()
    label_setting: Optional[str] = None  # shown beside the kind: "lora r=8", "adapter 64"
    mergeable: bool = False  # its weight change folds into the base weights (a plain model folder)
    dropout_memory: bool = False  # the memory model counts its dropout copies of each adapted input
    vllm_adapter: bool = False  # vLLM serves it directly (eval.backend: auto keeps vLLM for it)
    compute_dtype_adapters: bool = False  # train.adapter_dtype: compute holds its adapters in model.dtype
    peft_config: Optional[str] = None  # format peft: the config builder (lorafull.models.methods.PEFT_CONFIGS)

    @property
    def frozen_base(self) -> bool:
        """Only the added parameters train; the base stays as loaded."""
        return self.format != "hf"

    @property
    def final_file(self) -> str:
        return FINAL_FILES[self.format]

    def label(self, method_cfg=None, sep: str = "=") -> str:
        """'full', 'lora r=8', 'adapter 64' (sep: what joins a setting to its name, ' r8' with sep='')."""
        if self.label_setting is None or method_cfg is None:
            return self.kind
        value = getattr(method_cfg, self.label_setting)
        return f"{self.kind} r{sep}{value}" if self.label_setting == "r" else f"{self.kind} {value}"

    def setting_values(self, method_cfg) -> dict:
        """{"kind": ..., and each setting that shapes this method}: what counts and shapes are keyed by."""
        return {"kind": self.kind, **{k: getattr(method_cfg, k) for k in self.settings}}

    # ---- the work, in the modules that import torch / peft ------------------------------------------
    def build(self, model, method_cfg, seed: int = 0, adapter_dtype=None):
        """The model with this method applied (lorafull.models.methods)."""
        from lorafull.models import methods

        return methods.BUILDERS[self.format](model, method_cfg, seed, adapter_dtype)

    def save(self, model, folder: Path, state: dict, method_cfg, base_path: str, dtype) -> None:
        """Write final/'s contents (not the tokenizer) from the gathered trainable `state`."""
        from lorafull.models import methods

        methods.SAVERS[self.format](model, Path(folder), state, method_cfg, base_path, dtype)


_LOW_RANK = ("r", "alpha", "dropout", "target_modules")
METHODS: dict[str, Method] = {m.kind: m for m in (
    Method("full", "every weight trains", "hf", mergeable=True),
    Method("lora", "peft LoRA on method.target_modules (r, alpha, dropout)", "peft", _LOW_RANK, "r",
           mergeable=True, dropout_memory=True, vllm_adapter=True, compute_dtype_adapters=True, peft_config="lora"),
    Method("dora", "peft LoRA with weight decomposition (use_dora)", "peft", _LOW_RANK, "r", mergeable=True,
           peft_config="dora"),
    Method("loha", "peft LoHa: Hadamard product of two low-rank pairs on the target modules", "peft", _LOW_RANK,
           "r", mergeable=True, peft_config="loha"),
    Method("ia3", "peft IA3: learned scaling vectors on the targets (feed-forward ones scale their input)",
           "peft", ("target_modules",), mergeable=True, peft_config="ia3"),
    Method("prompt", "peft prompt tuning: method.num_virtual_tokens learned input embeddings", "peft",
           ("num_virtual_tokens",), "num_virtual_tokens", peft_config="prompt"),
    Method("prefix", "peft prefix tuning: learned keys/values of method.num_virtual_tokens positions per layer",
           "peft", ("num_virtual_tokens",), "num_virtual_tokens", peft_config="prefix"),
    Method("adapter", "bottleneck adapters of method.adapter_size after each MLP block", "bottleneck",
           ("adapter_size",), "adapter_size"),
)}


def method_of(kind_or_cfg: Union[str, object]) -> Method:
    """The table's row for a kind, a MethodConfig, or a RunConfig; one line naming the kind otherwise."""
    kind = kind_or_cfg
    if hasattr(kind, "method"):
        kind = kind.method
    if hasattr(kind, "kind"):
        kind = kind.kind
    try:
        return METHODS[kind]
    except KeyError:
        raise ValueError(f"method.kind: expected one of {', '.join(METHODS)}, got {kind!r}") from None


def final_format(folder: Path) -> Optional[str]:
    """The save format of a finished model folder (final/, a checkpoint's HF folder), None when it holds
    none. An adapter folder may also hold config.json (peft copies the base's): adapters are asked first."""
    folder = Path(folder)
    for fmt in ("peft", "bottleneck", "hf"):
        if (folder / FINAL_FILES[fmt]).exists():
            return fmt
    return None
