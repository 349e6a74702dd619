"""launch.grid within the cluster's limits, on the real local Slurm (MaxArraySize 1001): a study larger than
an array may be is cut into arrays that fit, each evaluation still after its own run's training; under a
submit limit a call submits what fits, a later call the rest, and nothing is submitted twice. The tests
look at the queue and cancel everything they submitted: no run of theirs trains.

    pytest -m slurm tests/test_slurm_limits.py
"""
from __future__ import annotations

import subprocess
import time

import pytest

from helpers.grid import grid, ledger, make_data, study_dict, write_study

from launch.limits import read_limits
from lorafull.config import SlurmConfig

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _cancel(study_dir) -> None:
    """Every job the study submitted, at once, then until none is queued (other engineers share the nodes)."""
    led = ledger(study_dir)
    ids = sorted({s["job_id"] for s in led["submissions"]})
    deadline = time.monotonic() + 120
    while ids and time.monotonic() < deadline:
        subprocess.run(["scancel", *ids], capture_output=True)
        left = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True).stdout
        if not left.strip():
            return
        time.sleep(1)


def _queued(prefix: str) -> int:
    """The study's jobs queued or running now, array tasks one each."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%j"], capture_output=True, text=True).stdout
    return sum(1 for name in out.split() if name.startswith(prefix))


def _dependency(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("Dependency=")), "")


def _grid(n_lr: int, n_samples: int) -> dict:
    return {"train.lr": [1e-4 * (i + 1) for i in range(n_lr)], "data.num_samples": list(range(8, 8 + n_samples))}


def test_the_limits_come_from_the_cluster_unless_the_study_sets_them():
    cluster = read_limits(SlurmConfig(), ask=True)
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    assert f"MaxArraySize            = {cluster.max_array_size}" in shown and "scontrol" in cluster.array_source
    given = read_limits(SlurmConfig(max_array_size=7, max_submit_jobs=50), ask=True)
    assert (given.max_array_size, given.max_submit_jobs) == (7, 50)


def test_a_study_larger_than_an_array_goes_in_arrays_that_fit(tmp_path, tiny_tokenizer_dir):
    """1,500 runs under MaxArraySize 1001: two training arrays of 750, two evaluation arrays whose task i
    waits for training task i of the same runs; the same command again submits nothing new."""
    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "big.yaml", study_dict(tmp_path, files, name="big", grid=_grid(30, 50),
                                                        slurm={"array_parallelism": 1}))
    study_dir = tmp_path / "big"
    try:
        first = grid(cfg, "--executor", "slurm", timeout_s=1800)
        led = ledger(study_dir)
        trains = [s for s in led["submissions"] if s["kind"] == "train"]
        evals = [s for s in led["submissions"] if s["kind"] == "eval"]
        assert [s["tasks"] for s in trains] == [750, 750] and [s["tasks"] for s in evals] == [750, 750], first.stdout
        assert "3001 jobs submitted" in first.stdout, first.stdout
        for train, ev in zip(trains, evals):
            assert ev["runs"] == train["runs"]  # the same runs in the same order ...
            assert _dependency(ev["job_id"]).startswith(f"aftercorr:{train['job_id']}_*")  # ... task i after task i
        runs = led["runs"]
        assert len(runs) == 1500
        for name, entry in list(runs.items())[::97]:  # each run's evaluation is its own training's twin
            assert entry["eval"].split("_")[1] == entry["train"].split("_")[1], entry
        again = grid(cfg, "--executor", "slurm", timeout_s=900)
        assert "0 jobs submitted" in again.stdout, again.stdout
        assert ledger(study_dir)["submissions"] == led["submissions"]
    finally:
        _cancel(study_dir)


def test_a_submit_limit_sends_the_study_in_waves_and_nothing_twice(tmp_path, tiny_tokenizer_dir):
    """slurm.max_submit_jobs 50 on a 30-run study (61 jobs): the first call submits what fits beside the
    user's queued jobs and holds back the rest; the study never has more than 50 jobs queued; once the
    first wave is gone (cancelled here, so that nothing trains), a later call submits the rest, and no
    run is ever submitted twice."""
    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "waves.yaml", study_dict(tmp_path, files, name="waves", grid=_grid(6, 5),
                                                          slurm={"array_parallelism": 1, "max_submit_jobs": 50}))
    study_dir = tmp_path / "waves"
    try:
        first = grid(cfg, "--executor", "slurm", timeout_s=900)
        assert "held back:" in first.stdout and "submit limit of 50" in first.stdout, first.stdout
        assert _queued("lf-waves-") <= 50
        wave1 = ledger(study_dir)
        submitted = {n for s in wave1["submissions"] if s["kind"] == "train" for n in s["runs"]}
        assert 0 < len(submitted) < 30 and wave1.get("report") is None
        second = grid(cfg, "--executor", "slurm", timeout_s=900)  # while the first wave waits
        assert _queued("lf-waves-") <= 50, second.stdout
        _cancel(study_dir)
        rest = grid(cfg, "--executor", "slurm", timeout_s=900)
        assert "held back:" not in rest.stdout, rest.stdout
        assert _queued("lf-waves-") <= 50
        final = ledger(study_dir)
        per_run = [n for s in final["submissions"] if s["kind"] == "train" for n in s["runs"]]
        assert sorted(per_run) == sorted(set(per_run)) and len(per_run) == 30  # every run, each once
        assert final.get("report")  # the last wave brought the report
    finally:
        _cancel(study_dir)


def _wait_for(predicate, timeout_s: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def test_follow_sends_each_next_wave_and_stays_until_the_study_ends(tmp_path, tiny_tokenizer_dir):
    """--follow under a submit limit of 50: the first wave, then (once it is gone: cancelled here, so that
    nothing trains) the rest with the report, then it ends by itself once nothing is queued or left."""
    import os
    import sys

    from helpers.common import REPO

    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "follow.yaml", study_dict(tmp_path, files, name="follow", grid=_grid(6, 5),
                                                           slurm={"array_parallelism": 1, "max_submit_jobs": 50}))
    study_dir = tmp_path / "follow"
    proc = subprocess.Popen([sys.executable, "-m", "launch.grid", str(cfg), "--executor", "slurm", "--follow", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=dict(os.environ))
    trains = lambda: [s for s in ledger(study_dir)["submissions"] if s["kind"] == "train"]  # noqa: E731
    try:
        _wait_for(lambda: (study_dir / "launch" / "jobs.json").exists() and trains(), what="the first wave")
        first = {n for s in trains() for n in s["runs"]}
        _cancel(study_dir)
        _wait_for(lambda: ledger(study_dir).get("report"), what="the second wave and the report")
        assert _queued("lf-follow-") <= 50
        _cancel(study_dir)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        _cancel(study_dir)
    assert proc.returncode == 0 and "the study has ended" in out, out
    runs = [n for s in trains() for n in s["runs"]]
    assert sorted(runs) == sorted(set(runs)) and len(runs) == 30 and first < set(runs), out
