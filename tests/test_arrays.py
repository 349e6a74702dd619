"""launch.arrays at scale, without a scheduler: arrays cut to MaxArraySize (evenly, chained runs still
after their parent's own task), and waves under a submit limit (what fits now, in study order; the rest,
and the report, held for a later call).

    pytest tests/test_arrays.py
"""
from __future__ import annotations

import pytest

from helpers.grid import make_data, study_dict, write_study

from launch.arrays import make_plan
from launch.jobs import Ledger
from launch.limits import Limits
from launch.state import study_views
from lorafull.config import load_study


@pytest.fixture()
def files(tmp_path, tiny_tokenizer_dir) -> dict:
    return make_data(tmp_path, tiny_tokenizer_dir)


def _plan(tmp_path, files, runs: list[dict], array: int = 1001, submit=None, queued: int = 0, **grid):
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=runs, **grid))
    study = load_study(cfg)
    views = study_views(study, Ledger(study.output_dir), {})
    return make_plan(study, views, limits=Limits(array, submit, "test", "test"), queued_jobs=queued)


def test_an_array_larger_than_the_cluster_allows_is_cut_evenly(tmp_path, files):
    runs = [{"name": f"r{i}"} for i in range(23)] + [{"name": "child", "model.name_or_path": "run:r22"}]
    plan = _plan(tmp_path, files, runs, array=10)
    assert [(a.depth, len(a.runs)) for a in plan.train_arrays] == [(0, 8), (0, 8), (0, 7), (1, 1)]
    assert [v.name for a in plan.train_arrays[:3] for v in a.runs] == [f"r{i}" for i in range(23)]  # study order
    assert plan.parent_dep["child"][1] is plan.train_arrays[2]  # after its parent's own part
    assert plan.jobs == 2 * 24 + 1 and plan.report and not plan.held
    assert [len(a.runs) for a in _plan(tmp_path, files, runs[:23], array=1).train_arrays] == [1] * 23


def test_a_submit_limit_takes_what_fits_in_study_order_and_holds_the_rest(tmp_path, files):
    runs = [{"name": f"r{i}"} for i in range(10)] + [{"name": "child", "model.name_or_path": "run:r9"}]
    plan = _plan(tmp_path, files, runs, submit=20, queued=5)  # 15 jobs of room: 7 runs of 2 jobs
    assert [v.name for v in plan.to_train] == [f"r{i}" for i in range(7)]
    assert [v.name for v in plan.held] == ["r7", "r8", "r9", "child"]  # the child waits with its parent
    assert plan.jobs == 14 and plan.room == 1 and not plan.report and plan.report_held
    everything = _plan(tmp_path, files, runs, submit=23)  # 11 runs (22 jobs) + the report
    assert not everything.held and everything.report and everything.jobs == 23
    no_room_for_the_report = _plan(tmp_path, files, runs, submit=22)
    assert not no_room_for_the_report.held and not no_room_for_the_report.report
    assert no_room_for_the_report.report_held
    assert _plan(tmp_path, files, runs, submit=10, queued=12).to_eval == []  # the user's queue is full


def test_a_large_plan_prints_a_row_per_shape_and_writes_every_run_to_a_file(tmp_path, files, capsys, monkeypatch):
    """60 runs (6 learning rates x 10 data scales): 10 rows of 6 runs each, named by what they share; the
    table of every run in STUDY_DIR/launch/plan.txt; the waves and the trainings at once the study takes."""
    from launch import grid as grid_cli

    monkeypatch.setenv("PATH", str(tmp_path))  # no cluster: the limits come from the settings alone
    cfg = write_study(tmp_path / "s.yaml", study_dict(
        tmp_path, files, name="wide", grid={"train.lr": [1e-4 * (i + 1) for i in range(6)],
                                            "data.num_samples": list(range(8, 18))},
        slurm={"array_parallelism": 4, "max_array_size": 25}))
    assert grid_cli.main([str(cfg), "--dry-run", "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "(60 runs in 10 rows:" in out, out
    rows = [line for line in out.splitlines() if line.startswith("6 ") and "lr*-num_samples" in line]
    assert len(rows) == 10 and all(" * " in r for r in rows)  # the signature column folds too
    full = (tmp_path / "wide" / "launch" / "plan.txt").read_text()
    assert sum(1 for line in full.splitlines() if line.startswith("lr0.")) == 60
    assert "at most 12 trainings at once" in out  # 3 arrays of 20 x array_parallelism 4

    assert grid_cli.main([str(cfg), "slurm.max_submit_jobs=50", "--dry-run", "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "3 submission wave(s) under the submit limit of 50 jobs" in out, out  # 121 jobs / 50
    assert "held back: 35 run(s) (70 jobs)" in out and "would train 25 run(s)" in out
