"""Resumable checkpoints, written atomically: a kill at any moment leaves the last complete one usable.

    RUN_DIR/checkpoints/step-00000040/   trainer_state.json   step, tokens seen, time, world size (written last)
                                         engine/              weights + optimizer + scheduler (per engine)
                                         rng/rank-00000.pt    python, numpy, torch (+cuda) RNG of each rank
                                                              (tensors and numbers only: loaded weights_only)

Every rank writes into checkpoints/.tmp-step-N/; when all are done, rank 0 writes trainer_state.json
and renames the folder to step-N. Only names matching step-N with a trainer_state.json count, so a
half-written temporary folder is ignored (and removed by the next job). The last `keep` are kept, and
every pinned step (train.save_at_tokens) for good.

Nothing in a checkpoint folder is unpickled: RNG state is tensors and numbers read with
torch.load(weights_only=True), and DeepSpeed's engine/ files go through SafeCheckpointEngine (the
same, with the few plain DeepSpeed types it stores allowed by name). A folder from before this format
(rng/rank-*.pkl) is refused with a message; its weights are not read.

Fault injection for tests: LORAFULL_FAULT_KILL_IN_SAVE=<step> SIGKILLs the job after the engine state
of that step's checkpoint is written but before it is complete.
"""
from __future__ import annotations

import json
import os
import pickle  # only for its exception class: nothing here unpickles
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lorafull.train import distributed as dist

_NAME = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoint_step(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


class Checkpoints:
    def __init__(self, root: Path, keep: int = 2, is_main: bool = True, pinned: frozenset = frozenset()):
        self.root, self.keep, self.is_main, self.pinned = Path(root), max(1, keep), is_main, pinned

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).exists()]
        return sorted(found, key=checkpoint_step)

    def latest(self) -> Optional[Path]:
        done = self.complete()
        return done[-1] if done else None

    def remove_partial(self) -> None:
        """Temporary folders of a save that never finished (rank 0, at start)."""
        if self.is_main and self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(".tmp-"):
                    shutil.rmtree(p, ignore_errors=True)

    def begin(self, step: int) -> Path:
        tmp = self.root / f".tmp-step-{step:08d}"
        if self.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            (tmp / "rng").mkdir(parents=True)
        dist.barrier()
        return tmp

    def commit(self, tmp: Path, step: int, state: dict) -> Path:
        """All ranks call this after writing their part into `tmp`."""
        if os.environ.get("LORAFULL_FAULT_KILL_IN_SAVE") == str(step):
            os.kill(os.getpid(), signal.SIGKILL)  # a crash mid-save, for tests
        dist.barrier()
        final = self.root / f"step-{step:08d}"
        if self.is_main:
            with open(tmp / STATE_FILE, "w") as f:
                json.dump(state, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            if final.exists():  # the same step saved again (e.g. preempted right after a save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in self.complete()[:-self.keep]:
                if checkpoint_step(old) not in self.pinned:
                    shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return final


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / STATE_FILE).read_text())


# ---------------------------------------------------------------------------------------------
# RNG of each rank (dropout masks; the data order itself is a pure function of seed and step)
# ---------------------------------------------------------------------------------------------
def save_rng(folder: Path, rank: int) -> None:
    """Each generator's state as tensors and numbers, so that loading it can run no code."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"format": 2, "python_version": version, "python_words": torch.tensor(words, dtype=torch.int64),
             "python_gauss": [] if gauss is None else [gauss], "numpy_kind": kind,
             "numpy_keys": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
             "numpy_has_gauss": int(has_gauss), "numpy_gauss": float(cached), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, folder / "rng" / f"rank-{rank:05d}.pt")


def load_rng(folder: Path, rank: int) -> None:
    path = folder / "rng" / f"rank-{rank:05d}.pt"
    if not path.exists():
        if (folder / "rng" / f"rank-{rank:05d}.pkl").exists():
            raise ValueError(f"{path.with_suffix('.pkl')}: a checkpoint in the old pickle format is not loaded "
                             "(unpickling a file can run code); delete that checkpoint folder to restart the run "
                             "from an earlier one or from scratch")
        raise FileNotFoundError(f"{path}: no RNG state for rank {rank} "
                                "(was the checkpoint written by fewer processes?)")
    state = safe_load(path)
    random.setstate((state["python_version"], tuple(state["python_words"].tolist()),
                     state["python_gauss"][0] if state["python_gauss"] else None))
    np.random.set_state((state["numpy_kind"], state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# loading without unpickling code: torch.load(weights_only=True), DeepSpeed included
# ---------------------------------------------------------------------------------------------
def _deepspeed_safe_types() -> list:
    """Plain DeepSpeed / stdlib types that DeepSpeed writes into its checkpoints (an enum, the
    fragment address of a parameter); allowed by name, nothing else is."""
    import argparse
    import collections

    allowed = [collections.OrderedDict, collections.defaultdict, argparse.Namespace, set, frozenset]
    try:
        from deepspeed.runtime.fp16.loss_scaler import LossScaler, DynamicLossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed += [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
    except ImportError:  # DeepSpeed is optional at run time (engine: torch)
        pass
    return allowed


def safe_load(path, map_location="cpu"):
    """torch.load(weights_only=True): tensors, numbers, strings and containers, plus DeepSpeed's
    plain types; a file holding anything else is refused with a one-line message naming it."""
    try:
        with torch.serialization.safe_globals(_deepspeed_safe_types()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # what weights_only raises for anything not allowed
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: refused to load: it holds objects other than tensors and plain data "
                         f"(loading them could run code): {first}") from None


def safe_checkpoint_engine(config_params=None):
    """DeepSpeed's torch checkpoint engine (it loads with weights_only=False), loading with safe_load."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class SafeCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            return safe_load(path, map_location=map_location)

    return SafeCheckpointEngine(config_params)


class _TorchLoadingSafely:
    """The torch module as seen by DeepSpeed's zero_to_fp32, whose torch.load calls hard-code
    weights_only=False: every attribute is torch's, load is safe_load."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(path, map_location="cpu", **_):
        return safe_load(path, map_location=map_location)


def fp32_state_from_zero_checkpoint(engine_dir: Path, tag: str) -> dict:
    """DeepSpeed's zero_to_fp32 consolidation of a ZeRO checkpoint, reading its files with safe_load."""
    from deepspeed.utils import zero_to_fp32

    original = zero_to_fp32.torch
    zero_to_fp32.torch = _TorchLoadingSafely()
    try:
        return zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(engine_dir), tag=tag)
    finally:
        zero_to_fp32.torch = original
