"""Nothing executable is loaded from a run folder: a crafted pickle placed where a checkpoint's RNG
state, engine state or DeepSpeed files go is refused, never run; the new RNG format round-trips."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from helpers.crafted import write_crafted
from lorafull.train.checkpoint import load_rng, safe_checkpoint_engine, safe_load, save_rng


def test_the_crafted_file_does_run_code_when_unpickled(tmp_path):
    """The control: the payload is live, so its absence below means it was not run."""
    marker = tmp_path / "ran"
    path = write_crafted(tmp_path / "x.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_rng_state_round_trips_without_pickle(tmp_path):
    (tmp_path / "rng").mkdir()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # a cached Gaussian in both
    save_rng(tmp_path, rank=0)
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    load_rng(tmp_path, rank=0)
    assert (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected
    with pytest.raises(pickle.UnpicklingError):  # what weights_only refuses: the file is data only
        pickle.loads((tmp_path / "rng" / "rank-00000.pt").read_bytes())


@pytest.mark.parametrize("where", ["rng/rank-00000.pt", "engine/state.pt", "engine/state/mp_rank_00_model_states.pt"])
def test_a_crafted_pickle_in_a_checkpoint_is_never_executed(tmp_path, where):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "step-00000010"
    path = write_crafted(ckpt / where, marker)
    with pytest.raises(ValueError, match="refused to load") as err:
        if where.startswith("rng/"):
            load_rng(ckpt, rank=0)
        elif where == "engine/state.pt":
            safe_load(path)
        else:
            safe_checkpoint_engine().load(str(path), map_location="cpu")  # what DeepSpeed's resume calls
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_the_analysis_reads_checkpoints_without_pickle(tmp_path):
    from lorafull.analysis.checkpoints import trainable_state

    marker = tmp_path / "ran"
    ckpt = tmp_path / "step-00000010"
    write_crafted(ckpt / "engine" / "state" / "mp_rank_00_model_states.pt", marker)  # ZeRO-0 layout
    with pytest.raises(ValueError, match="refused to load"):
        trainable_state(ckpt)
    (ckpt / "engine" / "state" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(
        (ckpt / "engine" / "state" / "mp_rank_00_model_states.pt").read_bytes())  # ZeRO-1..3 layout
    with pytest.raises(ValueError, match="refused to load"):
        trainable_state(ckpt)
    assert not marker.exists()


def test_a_checkpoint_in_the_old_pickle_format_is_refused(tmp_path):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "step-00000010"
    write_crafted(ckpt / "rng" / "rank-00000.pkl", marker, as_torch=False)
    with pytest.raises(ValueError, match="old pickle format is not loaded") as err:
        load_rng(ckpt, rank=0)
    assert "delete that checkpoint folder" in str(err.value)
    assert not marker.exists()
