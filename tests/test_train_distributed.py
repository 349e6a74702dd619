"""Launch modes and the DeepSpeed config (pure functions of the environment and the settings)."""
from __future__ import annotations

import os

import pytest

from lorafull.train import distributed as dist
from lorafull.config import TrainConfig

SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_JOB_ID",
              "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_NNODES", "SLURM_NODEID")
TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@pytest.fixture()
def clean_env(monkeypatch):
    saved = dict(os.environ)  # detect_env writes RANK/MASTER_* for srun tasks: none may leak out
    for v in SLURM_VARS + TORCH_VARS:
        monkeypatch.delenv(v, raising=False)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("nodelist,first", [("n1", "n1"), ("n[1-2]", "n1"), ("gpu[07-09,12],cpu1", "gpu07"),
                                            ("node12,node3", "node12"), ("a-b[003]", "a-b003")])
def test_first_host(nodelist, first):
    assert dist.first_host(nodelist) == first


def test_alone_is_one_process(clean_env):
    assert dist.detect_env() == dist.DistEnv(0, 1, 0, "single")


def test_under_torchrun(clean_env):
    clean_env.setenv("RANK", "3")
    clean_env.setenv("WORLD_SIZE", "8")
    clean_env.setenv("LOCAL_RANK", "3")
    clean_env.setenv("TORCHELASTIC_RUN_ID", "x")
    assert dist.detect_env() == dist.DistEnv(3, 8, 3, "torchrun")


def test_under_srun_sets_the_torch_variables(clean_env):
    for k, v in {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
                 "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[03-04]"}.items():
        clean_env.setenv(k, v)
    env = dist.detect_env()
    assert env == dist.DistEnv(5, 16, 1, "slurm") and not env.is_main
    assert os.environ["RANK"] == "5" and os.environ["WORLD_SIZE"] == "16" and os.environ["LOCAL_RANK"] == "1"
    assert os.environ["MASTER_ADDR"] == "gpu03"
    assert os.environ["MASTER_PORT"] == str(dist.port_from_job_id("4242")) == "24242"


def test_sbatch_script_without_srun_is_one_process(clean_env):
    clean_env.setenv("SLURM_PROCID", "0")
    clean_env.setenv("SLURM_NTASKS", "8")  # the allocation has 8 tasks, but this is the batch shell
    assert dist.detect_env().launcher == "single"


def test_torchrun_command_single_and_multi_node(clean_env):
    cmd = dist.torchrun_command(["lorafull.train", "RUN"], 4)
    assert "--standalone" in cmd and "--nproc_per_node=4" in cmd and cmd[-3:] == ["-m", "lorafull.train", "RUN"]
    for k, v in {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
                 "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "n[1-2]"}.items():
        clean_env.setenv(k, v)
    cmd = dist.torchrun_command(["lorafull.train", "RUN"], 8)
    assert "--nnodes=2" in cmd and "--node_rank=1" in cmd and "--master_addr=n1" in cmd
    assert f"--master_port={dist.port_from_job_id('77')}" in cmd and "--standalone" not in cmd


def test_ds_config():
    t = TrainConfig(global_batch_size=64, micro_batch_size=2, zero_stage=3, offload=True, grad_clip=1.0)
    c = dist.ds_config(t, "bf16", world_size=8, grad_accum=4, on_gpu=True)
    assert c["train_batch_size"] == 64 == c["train_micro_batch_size_per_gpu"] * c["gradient_accumulation_steps"] * 8
    z = c["zero_optimization"]
    assert z["stage"] == 3 and z["stage3_gather_16bit_weights_on_model_save"]
    assert z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["pin_memory"]
    assert c["bf16"]["enabled"] and not c["fp16"]["enabled"] and c["gradient_clipping"] == 1.0
    assert "optimizer" not in c  # ours is passed to deepspeed.initialize: nothing to JIT-compile
    c2 = dist.ds_config(TrainConfig(zero_stage=2, grad_clip=0.0), "fp16", 1, 16, on_gpu=False)
    assert c2["fp16"]["enabled"] and "offload_optimizer" not in c2["zero_optimization"]
    assert "gradient_clipping" not in c2
