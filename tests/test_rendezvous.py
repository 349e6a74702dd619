"""Rendezvous (first host, port) and the requeue exit code come from one place,
lorafull.train.distributed: the ranks, the submitit job body and the rendered sbatch scripts agree."""
from __future__ import annotations

import os

import pytest

from helpers.common import REPO
from launch.job_bodies import TrainJob
from launch.render import render_study
from lorafull.config import load_study
from lorafull.train import distributed as dist
from lorafull.train.trainer import EXIT_PREEMPTED


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_JOB_NODELIST": "gpu[07-09,12]", "SLURM_JOB_ID": "123"}, ("gpu07", 20123)),
    ({"SLURM_JOB_NODELIST": "n1,n2", "SLURM_JOB_ID": "45678"}, ("n1", 25678)),
    ({"SLURM_NODELIST": "c[3-4]", "SLURM_JOB_ID": "7"}, ("c3", 20007)),
    ({"SLURM_JOB_NODELIST": "n1", "SLURM_JOB_ID": "1", "MASTER_ADDR": "h", "MASTER_PORT": "999"}, ("h", 999)),
    ({}, ("127.0.0.1", 20000)),
])
def test_rendezvous_of_a_job(env, expected):
    assert dist.rendezvous(env) == expected


def test_the_srun_ranks_and_the_job_body_agree(monkeypatch):
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[02-03]")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    body_env = TrainJob("/r", "python", nodes=2, tasks_per_node=2, cpus_per_task=1).environment()
    for key in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_STEP_ID"):
        monkeypatch.setenv(key, {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}.get(key, "0"))
    rank = dist.detect_env()  # a rank started by srun straight from the sbatch script
    assert (body_env["MASTER_ADDR"], body_env["MASTER_PORT"]) == (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    assert (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])) == ("node02", 24242)
    assert (rank.rank, rank.world_size, rank.local_rank) == (3, 4, 1)


def test_the_exit_code_is_one_number_everywhere():
    assert EXIT_PREEMPTED == dist.EXIT_REQUEUE == 75
    files = render_study(load_study(REPO / "tests" / "expected" / "render_study.yaml"))
    train = [text for name, text in files.items() if name.startswith("train_") and name.endswith(".sbatch")]
    assert train and all(f"if ((rc == {dist.EXIT_REQUEUE})); then" in t for t in train)
    assert not any("MASTER_PORT=" in t or "MASTER_ADDR=" in t for t in files.values())  # not computed twice
