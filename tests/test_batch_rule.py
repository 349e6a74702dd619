"""One rule for micro batch, accumulation and processes (lorafull.config.resources): load_study checks it
against the study's resources, and the plan, the auto chooser and the training loop follow it, so the
plan refuses exactly the shapes training would refuse.

    pytest tests/test_batch_rule.py
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers.grid import make_data, study_dict, write_study

from lorafull.config import ConfigError, load_study
from lorafull.config.resources import grad_accumulation, micro_batch_choices, world_size
from lorafull.plan.auto import choose
from lorafull.plan.steptime import grad_accumulation as planned_accumulation
from lorafull.train.order import BatchOrder

# (global batch, micro batch, nodes, processes per node)
SHAPES = [(32, 2, 1, 8), (32, 4, 2, 8), (24, 2, 1, 8), (48, 3, 1, 8), (8, 4, 1, 3), (12, 4, 1, 3), (16, 16, 1, 1),
          (16, 32, 1, 1), (30, "auto", 1, 8), (32, "auto", 2, 8), (6, "auto", 1, 4)]


def _training_refuses(global_batch, micro, world) -> bool:
    """What the training loop does with the shape: the trainer's accumulation (the rule), then the
    order its ranks read samples in must cover the global batch exactly once per step."""
    if micro == "auto":
        choices = micro_batch_choices(global_batch, world)
        if not choices:
            return True
        micro = choices[-1]
    try:
        accum = grad_accumulation(global_batch, micro, world)
    except ValueError:
        return True
    lengths = np.full(4 * global_batch, 7)
    ranks = [BatchOrder(lengths, global_batch, micro, world, rank, seed=0) for rank in range(world)]
    seen = np.concatenate([mb for r in ranks for mb in r.micro_batches(0)])
    assert all(len(r.micro_batches(0)) == accum for r in ranks)
    assert sorted(seen) == sorted(ranks[0].global_indices(0))  # every sample of the step, once
    return False


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_tokenizer_dir):
    return make_data(tmp_path_factory.mktemp("batch"), tiny_tokenizer_dir)


@pytest.mark.parametrize("global_batch,micro,nodes,nproc", SHAPES)
def test_the_plan_refuses_exactly_what_training_would(tmp_path, files, global_batch, micro, nodes, nproc):
    train = {"global_batch_size": global_batch, "micro_batch_size": micro, "deepspeed": True, "nproc": nproc}
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, base={"train": train},
                                                      slurm={"nodes": nodes}))
    world = nodes * nproc
    refused = _training_refuses(global_batch, micro, world)
    if refused:
        with pytest.raises(ConfigError, match=r"s\.yaml:\d+: base\.train\.global_batch_size: .*processes"):
            load_study(cfg)
        return
    study = load_study(cfg)
    run = study.runs[0]
    assert world_size(run, study.slurm) == world
    if micro == "auto":  # the chooser picks among the rule's micro batches, whatever fits
        arch = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 512}
        choice = choose(run, study, arch, {"total": 10 ** 5, "trainable": 10 ** 4}, world, gpu_mem_gb=80)
        assert choice["micro_batch_size"] in micro_batch_choices(global_batch, world)
        assert choice["grad_accum"] == grad_accumulation(global_batch, choice["micro_batch_size"], world)
    else:
        assert planned_accumulation(run, study) == grad_accumulation(global_batch, micro, world)
