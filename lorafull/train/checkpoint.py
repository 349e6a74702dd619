"""Resumable checkpoints, written atomically: a kill at any moment leaves the last complete one usable.

    RUN_DIR/checkpoints/step-00000040/   trainer_state.json   step, tokens seen, time, world size (written last)
                                         engine/              weights + optimizer + scheduler (per engine)
                                         rng/rank-00000.pkl   python, numpy, torch (+cuda) RNG of each rank

Every rank writes into checkpoints/.tmp-step-N/; when all are done, rank 0 writes trainer_state.json
and renames the folder to step-N. Only names matching step-N with a trainer_state.json count, so a
half-written temporary folder is ignored (and removed by the next job). The last `keep` are kept, and
every pinned step (train.save_at_tokens) for good.

Fault injection for tests: LORAFULL_FAULT_KILL_IN_SAVE=<step> SIGKILLs the job after the engine state
of that step's checkpoint is written but before it is complete.
"""
from __future__ import annotations

import json
import os
import pickle
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
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    with open(folder / "rng" / f"rank-{rank:05d}.pkl", "wb") as f:
        pickle.dump(state, f)


def load_rng(folder: Path, rank: int) -> None:
    path = folder / "rng" / f"rank-{rank:05d}.pkl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no RNG state for rank {rank} "
                                "(was the checkpoint written by fewer processes?)")
    with open(path, "rb") as f:
        state = pickle.load(f)  # our own file, written by save_rng
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
