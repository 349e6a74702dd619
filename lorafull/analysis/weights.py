"""Streaming access to the weights of a saved model or LoRA adapter, one matrix at a time.

A 7B model in bf16 is 13 GB; the tuned and the base model together would not fit the memory of
an eval node comfortably, so nothing here ever loads a whole state dict: safetensors.safe_open
memory-maps each shard and `get(name)` reads one tensor. Sharded checkpoints are found through
their model.safetensors.index.json.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterator, Optional

import torch

LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")
# peft saves "base_model.model.<module>.lora_A.weight"; the plain model calls it "<module>.weight"
LORA_RE = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")


# safetensors dtype names -> torch dtypes (the ones model weights use)
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def read_header(path: Path) -> dict:
    """The JSON header of a .safetensors file: {name: {"dtype", "shape", "data_offsets"}}."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


class WeightFolder:
    """Tensors of an HF model folder (model.safetensors or sharded *.safetensors + index).

    Each tensor is read with plain file reads at its offset, never through a memory map: pages of a
    mapped file stay resident in the process while it is open (and safetensors' mapping can keep a
    whole shard alive through one tensor), so reading two 7B models that way ends with both counted in
    the job's memory. Here only the tensor being analysed is in memory."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = sorted(p.name for p in self.folder.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{self.folder}: no *.safetensors weights (a .bin checkpoint? re-save it with "
                                    f"save_pretrained(safe_serialization=True))")
        self._entries: dict[str, tuple[str, dict, int]] = {}  # name -> (file, header entry, data start)
        for f in files:
            path = self.folder / f
            with open(path, "rb") as fh:
                data_start = 8 + int.from_bytes(fh.read(8), "little")
            for name, entry in read_header(path).items():
                self._entries[name] = (f, entry, data_start)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name][1]["shape"])

    def get(self, name: str) -> torch.Tensor:
        f, entry, data_start = self._entries[name]
        if entry["dtype"] not in _DTYPES:
            raise ValueError(f"{self.folder / f}: {name}: unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        buf = bytearray(end - begin)
        with open(self.folder / f, "rb") as fh:
            fh.seek(data_start + begin)
            if fh.readinto(buf) != len(buf):
                raise ValueError(f"{self.folder / f}: {name}: file ends inside the tensor (a torn copy?)")
        if not buf:
            return torch.empty(entry["shape"], dtype=_DTYPES[entry["dtype"]])
        return torch.frombuffer(buf, dtype=_DTYPES[entry["dtype"]]).reshape(entry["shape"])


def layer_of(name: str) -> Optional[int]:
    m = LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def module_type(name: str) -> str:
    """'model.layers.3.self_attn.q_proj(.weight)' -> 'q_proj'."""
    parts = name.split(".")
    if parts[-1] == "weight":
        parts = parts[:-1]
    return parts[-1]


def decoder_matrices(folder: WeightFolder) -> list[str]:
    """Names of every 2-D weight inside the decoder layers (linear layers; norms are 1-D)."""
    return [n for n in folder.names() if n.endswith(".weight") and layer_of(n) is not None and len(folder.shape(n)) == 2]


def _match_base_name(name: str, base: WeightFolder) -> Optional[str]:
    """The same weight in the base folder; tolerates a 'model.' prefix difference (some exports
    save the bare decoder)."""
    if name in base:
        return name
    for cand in (name[len("model."):] if name.startswith("model.") else "model." + name,):
        if cand in base:
            return cand
    return None


def full_deltas(tuned_dir: str | os.PathLike, base_dir: str | os.PathLike) -> Iterator[tuple[str, torch.Tensor]]:
    """(module name, W_tuned - W_base in float32) for every decoder 2-D weight, one at a time."""
    tuned, base = WeightFolder(tuned_dir), WeightFolder(base_dir)
    for name in decoder_matrices(tuned):
        base_name = _match_base_name(name, base)
        if base_name is None:
            raise KeyError(f"{base_dir}: no weight {name!r} to compare {tuned_dir} with (is it the run's base?)")
        if base.shape(base_name) != tuned.shape(name):
            raise ValueError(f"{name}: shape {tuned.shape(name)} in {tuned_dir} but {base.shape(base_name)} in {base_dir}")
        delta = tuned.get(name).float() - base.get(base_name).float()
        yield name[: -len(".weight")], delta


def lora_scaling(cfg: dict, module: str) -> tuple[int, float]:
    """(r, scaling) of one module from an adapter_config.json (rank/alpha patterns, rsLoRA)."""
    r, alpha = cfg["r"], cfg["lora_alpha"]
    for key, val in (cfg.get("rank_pattern") or {}).items():
        if re.search(rf"(^|\.){key}$", module) or module.endswith(key):
            r = val
    for key, val in (cfg.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){key}$", module) or module.endswith(key):
            alpha = val
    scale = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
    return r, scale


def lora_factors(adapter_dir: str | os.PathLike) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, float]]:
    """(module name, B, A, scaling) for every LoRA pair of an adapter folder; dW = B @ A * scaling."""
    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if cfg.get("use_dora"):
        raise ValueError(f"{adapter_dir}/adapter_config.json: use_dora: DoRA's weight change is not B @ A; "
                         f"merge the run (python -m lorafull.models.merge) and analyse merged/ as a full model")
    folder = WeightFolder(adapter_dir)
    pairs: dict[str, dict[str, str]] = {}
    for name in folder.names():
        m = LORA_RE.match(name)
        if m:
            pairs.setdefault(m.group("module"), {})[m.group("which")] = name
    for module in sorted(pairs, key=lambda s: (layer_of(s) if layer_of(s) is not None else -1, s)):
        ab = pairs[module]
        if set(ab) != {"A", "B"}:
            raise KeyError(f"{adapter_dir}: {module} has lora_{''.join(ab)} but not its partner")
        _, scale = lora_scaling(cfg, module)
        yield module, folder.get(ab["B"]).float(), folder.get(ab["A"]).float(), scale


def base_folder_of_run(run_dir: str | os.PathLike, name_or_path: str) -> Path:
    """The local folder holding the weights a run started from:
    scratch:<arch> -> RUN_DIR/base/ (the trainer saves the random init there); run:<name> -> that
    run's final/ (or merged/); a hub id -> its snapshot in the local Hugging Face cache."""
    run_dir = Path(run_dir)
    if name_or_path.startswith("scratch:"):
        base = run_dir / "base"
        if not (base / "config.json").exists():
            raise FileNotFoundError(f"{base}: no saved initial weights; a scratch: run needs the random init the "
                                    f"trainer saves to RUN_DIR/base/ to measure its weight change")
        return base
    if name_or_path.startswith(("run:", "gguf:")):
        from lorafull.models.load import resolve_run_reference

        return Path(resolve_run_reference(name_or_path, run_dir))
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download  # hub id: compute nodes are often offline, use the cache

    return Path(snapshot_download(name_or_path, local_files_only=True))
