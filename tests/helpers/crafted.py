"""A crafted pickle: loading it with plain pickle (or torch.load(weights_only=False)) creates a file."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch


class _Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # what an attacker writes: a call that runs when the file is unpickled
        return (Path.touch, (self.marker,))


def write_crafted(path: Path, marker: Path, as_torch: bool = True) -> Path:
    """A file at `path` holding tensors and, inside, the planted call; torch's format or plain pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"module": {"w": torch.zeros(2)}, "torch": torch.get_rng_state(), "extra": _Planted(marker)}
    if as_torch:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path
