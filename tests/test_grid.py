"""launch.grid without a scheduler: planning, states, conflicts, missing stages, dry runs of every
shipped config, and the local and debug executors running the real stages.

    pytest tests/test_grid.py
"""
from __future__ import annotations

import os
import pickle
import runpy
import sys
import types
from pathlib import Path

import pytest

from helpers.common import REPO, write_jsonl
from helpers.grid import (EVAL_ITEMS, dry_run_counts, grid, make_data, status, study_dict, study_dir_files,
                          write_study)

from launch import grid as grid_cli
from launch.jobs import JobInfo, Ledger
from launch.arrays import make_plan
from launch.state import study_views
from lorafull.config import load_study, save_run_config, study_signatures
from lorafull.runs import Stage, status as run_status


@pytest.fixture()
def files(tmp_path, tiny_tokenizer_dir) -> dict:
    return make_data(tmp_path, tiny_tokenizer_dir)


def _views(study, infos=None, ledger=None):
    return study_views(study, ledger or Ledger(study.output_dir), infos or {})


def _finish(run_dir: Path, signature: str, evaluated: bool = True) -> None:
    """A run folder as training (and evaluation) leave it."""
    (run_dir / "final").mkdir(parents=True, exist_ok=True)
    (run_dir / "final" / "adapter_config.json").write_text("{}")
    run_status.done(run_dir, Stage.TRAIN, signature=signature)
    if evaluated:
        run_status.done(run_dir, Stage.EVALUATE)


def test_plan_groups_training_arrays_by_depth_and_shape(tmp_path, files):
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[
        {"name": "a"}, {"name": "b", "method.kind": "full"},
        {"name": "c", "train.deepspeed": True, "train.nproc": 2},  # another resource shape
        {"name": "a_child", "model.name_or_path": "run:a"},
        {"name": "a_grandchild", "model.name_or_path": "run:a_child"}]))
    study = load_study(cfg)
    plan = make_plan(study, _views(study))
    shapes = [(a.depth, a.shape.tasks_per_node, [v.name for v in a.runs]) for a in plan.train_arrays]
    assert shapes == [(0, 1, ["a", "b"]), (0, 2, ["c"]), (1, 1, ["a_child"]), (2, 1, ["a_grandchild"])]
    assert plan.parent_dep["a_child"][1] is plan.train_arrays[0]
    assert plan.parent_dep["a_grandchild"][1] is plan.train_arrays[2]
    assert plan.report and not plan.eval_only and not plan.blocked


def test_plan_skips_done_queued_running_and_retries_failed(tmp_path, files):
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[
        {"name": n} for n in ("done", "trained", "failed", "running", "new")] + [
        {"name": "child_of_failed", "model.name_or_path": "run:failed"},
        {"name": "child_of_running", "model.name_or_path": "run:running"}]))
    study = load_study(cfg)
    sigs = study_signatures(study)
    d = lambda name: study.run_dir(study.run(name))  # noqa: E731
    _finish(d("done"), sigs["done"])
    _finish(d("trained"), sigs["trained"], evaluated=False)
    run_status.failed(d("failed"), Stage.TRAIN, error="data.jsonl:3: malformed JSON line")
    run_status.started(d("running"), Stage.TRAIN)
    ledger = Ledger(study.output_dir)
    ledger.set_job("running", "train", "41_2", eval="42_2")
    infos = {"41_2": JobInfo("RUNNING"), "42_2": JobInfo("PENDING", "Dependency")}
    views = _views(study, infos, ledger)
    states = {v.name: v.state for v in views}
    assert states == {"done": "done", "trained": "trained", "failed": "failed", "running": "running", "new": "new",
                      "child_of_failed": "new", "child_of_running": "new"}
    assert "malformed JSON line" in next(v for v in views if v.name == "failed").detail

    plan = make_plan(study, views)
    assert [v.name for v in plan.to_train] == ["new", "child_of_running"]
    assert [v.name for v in plan.eval_only] == ["trained"]
    assert plan.parent_dep["child_of_running"] == ("job", "41_2")  # waits for the earlier job
    assert "child_of_failed" in plan.blocked

    retry = make_plan(study, views, retry=True)
    assert sorted(v.name for v in retry.to_train) == ["child_of_failed", "child_of_running", "failed", "new"]
    assert retry.parent_dep["child_of_failed"][1].runs[0].name == "failed"


def test_a_job_that_ended_badly_makes_its_run_failed(tmp_path, files):
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[{"name": "x"}, {"name": "y"}]))
    study = load_study(cfg)
    for name in ("x", "y"):
        run_status.queued(study.run_dir(study.run(name)), Stage.TRAIN)
    ledger = Ledger(study.output_dir)
    ledger.set_job("x", "train", "7_0", eval="8_0")
    ledger.set_job("y", "train", "7_1", eval="8_1")
    infos = {"7_0": JobInfo("COMPLETED"), "8_0": JobInfo("CANCELLED", start="None"), "7_1": JobInfo("TIMEOUT")}
    views = {v.name: v for v in _views(study, infos, ledger)}
    assert views["x"].state == "failed" and "8_0 ended CANCELLED" in views["x"].detail
    assert views["y"].state == "failed" and "7_1 ended TIMEOUT" in views["y"].detail


def test_changed_settings_are_reported_and_never_overwritten(tmp_path, files, capsys):
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[{"name": "x"}, {"name": "y"}]))
    study = load_study(cfg)
    run_dir = study.run_dir(study.run("x"))
    save_run_config(study.run("x"), run_dir, "0ldsig00")
    before = (run_dir / "config.yaml").read_text()
    assert grid_cli.main([str(cfg), "--executor", "local"]) == 3
    err = capsys.readouterr().err
    assert "run x" in err and "0ldsig00" in err and study_signatures(study)["x"] in err
    assert "0 jobs submitted" in err
    assert (run_dir / "config.yaml").read_text() == before
    assert not (study.run_dir(study.run("y")) / "status.json").exists()  # nothing else started either


def test_a_missing_stage_is_an_error_before_anything_runs(tmp_path, files, monkeypatch, capsys):
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[{"name": "x"}]))
    monkeypatch.setitem(grid_cli.STAGE_MODULES, "evaluate", "lorafull.no_such_stage")
    assert grid_cli.main([str(cfg), "--executor", "local"]) == 2
    assert "lorafull.no_such_stage not found" in capsys.readouterr().err
    assert not (tmp_path / "gridtest" / "runs" / "x" / "status.json").exists()
    # the dry run still plans, and says what a real launch would miss
    assert grid_cli.main([str(cfg), "--dry-run", "--executor", "local"]) == 0
    assert "lorafull.no_such_stage" in capsys.readouterr().out


@pytest.mark.slow
def test_dry_run_of_every_shipped_config_needs_no_slurm(tmp_path, monkeypatch, capsys):
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs, "configs/ holds no study"
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # no sbatch, squeue, sacct: nothing to find
    monkeypatch.chdir(tmp_path)  # relative output_dirs land here, not in the repository
    for cfg in configs:
        assert grid_cli.main([str(cfg), "--dry-run"]) == 0, cfg
        out = capsys.readouterr().out
        study = load_study(cfg)
        assert "executor local" in out and "nothing submitted" in out, out
        for run in study.runs:
            assert run.name in out, (cfg, run.name)
        assert not (study.output_dir / "runs").exists(), f"{cfg}: a dry run wrote run folders"
        assert not (study.output_dir / "launch" / "jobs.json").exists()


@pytest.mark.slow
def test_local_executor_trains_chains_reports_and_retries(tmp_path, files):
    """A laptop without Slurm: parent -> chained child -> report in subprocesses; a run with bad data
    fails alone with its error in status.json and is not rerun without --retry (tests/test_slurm_grid.py
    retries it on Slurm)."""
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "Say hi.", "input": "", "output": "hi"}] * 8)
    with open(bad, "a") as f:
        f.write('{"instruction": "broken\n')
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[
        {"name": "parent"}, {"name": "child", "model.name_or_path": "run:parent", "method.kind": "full"},
        {"name": "bad", "data.train": str(bad)}]))
    out = grid(cfg, "--executor", "local", check=False, timeout_s=900)
    assert out.returncode == 1, out.stdout + out.stderr
    study_dir = tmp_path / "gridtest"
    runs = study_dir / "runs"
    assert status(runs / "parent")["state"] == "done" and status(runs / "child")["state"] == "done"
    assert (runs / "parent" / "merged" / "config.json").exists()  # the LoRA parent merged for its child
    failed = status(runs / "bad")
    assert failed["state"] == "failed" and "bad.jsonl:9" in failed["error"], failed
    assert (study_dir / "report" / "table.md").exists()
    order = out.stdout.index("lorafull.train " + str(runs / "parent")), out.stdout.index(
        "lorafull.train " + str(runs / "child"))
    assert order[0] < order[1]

    again = grid(cfg, "--executor", "local")
    assert "0 jobs submitted" in again.stdout and "use --retry" in again.stdout
    st = grid(cfg, "--status", "--executor", "local").stdout
    assert "2 done" in st and "1 failed" in st


def test_debug_executor_runs_the_stages_in_this_process(tmp_path, files, monkeypatch, capsys):
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[{"name": "only"}],
                                                      base={"train": {"max_steps": 2}}))
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm: the default would be local
    seen = []
    real_run_module = runpy.run_module

    def spy(module, **kw):  # every stage runs here, not in a subprocess
        seen.append((module, os.getpid()))
        return real_run_module(module, **kw)

    monkeypatch.setattr("launch.executors.runpy.run_module", spy)
    assert grid_cli.main([str(cfg), "--executor", "debug"]) == 0, capsys.readouterr()
    assert [m for m, _ in seen] == ["lorafull.train", "lorafull.evaluate", "lorafull.report"]
    assert {pid for _, pid in seen} == {os.getpid()}
    assert status(tmp_path / "gridtest" / "runs" / "only")["state"] == "done"


def test_job_bodies_pickle_without_processes_or_environment(tmp_path, monkeypatch):
    import cloudpickle

    from launch.job_bodies import StageJob, TrainJob, _this_job

    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-pickled-123")
    job = TrainJob(str(tmp_path), sys.executable, nodes=2, tasks_per_node=4, cpus_per_task=3)
    cmd = job.command()
    assert cmd[:5] == ["srun", "--nodes=2", "--ntasks-per-node=4", "--cpus-per-task=3", "--unbuffered"]
    assert cmd[-3:] == ["-m", "lorafull.train", str(tmp_path)]
    job._child = types.SimpleNamespace(returncode=0, proc=object())  # a process handle: never pickled
    delayed = job.checkpoint()
    blob = cloudpickle.dumps(delayed) + cloudpickle.dumps(job) + cloudpickle.dumps(StageJob("python", "m", "p", "s"))
    assert b"sk-never-pickled-123" not in blob
    assert pickle.loads(cloudpickle.dumps(job))._child is None
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert _this_job() == "12_3"  # never the bare array id: that would signal every task


def test_resources_follow_the_slurm_section(tmp_path, files):
    from lorafull.plan.estimate import world_size as plan_world_size
    from launch.resources import eval_shape, gres, train_shape

    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[
        {"name": "gpu8", "train.deepspeed": True, "train.nproc": None}, {"name": "cpu2", "train.deepspeed": True,
                                                                          "train.nproc": 2}],
        slurm={"gres": "gpu:a100", "gpus_per_node": 8, "nodes": 2, "cpus_per_gpu": 6, "mem_per_gpu_gb": 50},
        base={"train": {"global_batch_size": 32}}))  # micro batch 2 x 16 processes: the batch rule holds
    study = load_study(cfg)
    s8 = train_shape(study.run("gpu8"), study.slurm)
    assert (s8.nodes, s8.tasks_per_node, s8.gpus_per_node, s8.cpus_per_task, s8.mem_gb) == (2, 8, 8, 6, 400)
    assert gres(study.slurm, s8.gpus_per_node) == "gpu:a100:8"
    s2 = train_shape(study.run("cpu2"), study.slurm)
    assert (s2.tasks_per_node, s2.gpus_per_node, s2.mem_gb) == (2, 2, 100)
    # the plan's world size is the launcher's, also for the one-process plain-torch loop
    study.run("cpu2").train.deepspeed = False
    for run in (study.run("gpu8"), study.run("cpu2")):
        shape = train_shape(run, study.slurm)
        assert plan_world_size(run, study) == shape.nodes * shape.tasks_per_node
    assert plan_world_size(study.run("cpu2"), study) == 1 and plan_world_size(study.run("gpu8"), study) == 16
    study.slurm.gres = None  # a CPU partition: processes from train.nproc / gpus_per_node, no GPUs asked
    s8 = train_shape(study.run("gpu8"), study.slurm)
    assert (s8.tasks_per_node, s8.gpus_per_node) == (8, 0) and gres(study.slurm, 0) is None
    assert eval_shape(study.slurm).gpus_per_node == 0
    assert s8.describe().startswith("2 node x 8 proc (CPU/node), 6 cpu/proc, ")
    # gpus_per_node: 0 with a gres set is a CPU partition too: no `gpu:0` gres (Slurm rejects it), one process
    study.slurm.gres, study.slurm.gpus_per_node = "gpu:a100", 0
    s0 = train_shape(study.run("gpu8"), study.slurm)
    assert (s0.tasks_per_node, s0.gpus_per_node) == (1, 0) and gres(study.slurm, 0) is None
    assert gres(study.slurm, 1) is None and eval_shape(study.slurm).gpus_per_node == 0 and "CPU" in s0.describe()
    from launch.render import sbatch_lines
    assert "--gres" not in sbatch_lines(study, s0, "t") and "--ntasks-per-node=1" in sbatch_lines(study, s0, "t")


# ---------------------------------------------------------------------------------------------
# Portable names, current evaluations
# ---------------------------------------------------------------------------------------------
def _dry_run(cfg, capsys, *overrides) -> tuple[int, int]:
    assert grid_cli.main([str(cfg), "--dry-run", "--executor", "local", *overrides]) == 0
    return dry_run_counts(capsys.readouterr().out)


def test_a_cloned_study_keeps_every_run_name_and_plans_nothing_after_it_finished(tmp_path, tiny_tokenizer_dir,
                                                                                   monkeypatch, capsys):
    import shutil

    first, clone = tmp_path / "first", tmp_path / "elsewhere" / "clone"
    files = study_dir_files(first / "studies" / "moving", tiny_tokenizer_dir)
    study = study_dict(first, files, name="moving", base={"train": {"max_steps": 2}},
                       runs=[{"name": "child", "model.name_or_path": "run:full", "train.seed": 5}])
    study["study"]["output_dir"] = "studies/{name}"  # relative to where launch.grid runs
    study["grid"] = {"method.kind": ["full", "lora"]}
    write_study(first / "s.yaml", study)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(first)
    assert grid_cli.main(["s.yaml", "--executor", "debug"]) == 0, capsys.readouterr()
    names = [r.name for r in load_study("s.yaml").runs]
    assert _dry_run("s.yaml", capsys) == (0, 0)

    shutil.copytree(first, clone)  # the whole project: study file, data, run folders
    monkeypatch.chdir(clone)
    moved = load_study("s.yaml")
    assert moved.output_dir == clone / "studies" / "moving"
    assert [r.name for r in moved.runs] == names and len(names) == 3
    assert _dry_run("s.yaml", capsys) == (0, 0)


def test_a_changed_eval_set_or_judge_model_re_evaluates_a_done_run_and_keeps_the_old_results(
        tmp_path, files, monkeypatch, capsys):
    from helpers.openai_server import FakeJudgeServer
    from lorafull.config import read_eval_fingerprint
    from lorafull.runs import read_jsonl

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with FakeJudgeServer() as server:
        judge = {"kind": "openai", "model": "judge-a", "base_url": server.base_url, "backoff_base_s": 0.05,
                 "cache": str(tmp_path / "judge.sqlite")}
        cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[{"name": "only"}],
                                                          base={"train": {"max_steps": 2}, "eval": {"judge": judge}}))
        assert grid_cli.main([str(cfg), "--executor", "debug"]) == 0, capsys.readouterr()
        run_dir = tmp_path / "gridtest" / "runs" / "only"
        trained = {p.name: p.stat().st_mtime_ns for p in (run_dir / "final").iterdir()}
        metrics = (run_dir / "metrics.jsonl").read_bytes()
        first = read_eval_fingerprint(run_dir)
        first_scores = (run_dir / "scores.jsonl").read_bytes()
        assert len(list(read_jsonl(run_dir / "scores.jsonl"))) == 4 and _dry_run(cfg, capsys) == (0, 0)

        # the eval set edited in place: generation and judging again; training untouched
        write_jsonl(Path(files["eval"]), EVAL_ITEMS + [{"id": "e9", "question": "What is 1 plus 1?", "class": "math",
                                                        "std_answer": "2"}])
        assert _dry_run(cfg, capsys) == (0, 1)
        assert grid_cli.main([str(cfg), "--executor", "debug"]) == 0, capsys.readouterr()
        old = run_dir / "eval_history" / first["fingerprint"]
        assert (old / "scores.jsonl").read_bytes() == first_scores and (old / "responses.jsonl").exists()
        second = read_eval_fingerprint(run_dir)
        assert second["fingerprint"] != first["fingerprint"] and second["judge"] == first["judge"]
        assert len(list(read_jsonl(run_dir / "scores.jsonl"))) == 5
        responses = (run_dir / "responses.jsonl").read_bytes()
        hits = sum(server.stats.as_dict()["hits"].values())

        # another judge model: judged again (each item paid once more), the responses kept as they are
        assert _dry_run(cfg, capsys, "eval.judge.model=judge-b") == (0, 1)
        assert grid_cli.main([str(cfg), "--executor", "debug", "eval.judge.model=judge-b"]) == 0
        assert sum(server.stats.as_dict()["hits"].values()) == hits + 5
    third = read_eval_fingerprint(run_dir)
    assert third["generation"] == second["generation"] and third["judge"] != second["judge"]
    assert (run_dir / "responses.jsonl").read_bytes() == responses
    assert (run_dir / "eval_history" / second["fingerprint"] / "responses.jsonl").read_bytes() == responses
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "final").iterdir()} == trained
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics
    assert status(run_dir)["state"] == "done"
    table = (tmp_path / "gridtest" / "report" / "table.md").read_text()
    assert third["fingerprint"] in table

    # a re-evaluation through a judge batch still running is waiting, not done
    from helpers.batch_server import FakeBatchServer

    with FakeBatchServer(polls_to_complete=3) as batch_server:
        batched = ["eval.judge.model=judge-d", f"eval.judge.base_url={batch_server.base_url}", "eval.judge.mode=batch"]
        assert grid_cli.main([str(cfg), "--executor", "debug", *batched]) == 0  # submitted
        capsys.readouterr()
        assert grid_cli.main([str(cfg), "--status", "--executor", "debug", *batched]) == 0  # poll 1
        shown = capsys.readouterr().out
        assert shown.splitlines()[-1] == "1 waiting", shown
        assert batch_server.retrievals == 1

        # a re-evaluation that fails half-way is failed, not done (the earlier evaluation's "done" is history)
        broken = ["eval.judge.model=judge-c", "eval.judge.base_url=http://127.0.0.1:9/v1", "eval.judge.max_retries=0",
                  "eval.judge.max_consecutive_failures=1"]
        assert grid_cli.main([str(cfg), "--executor", "debug", *broken]) == 1
        capsys.readouterr()
        assert grid_cli.main([str(cfg), "--status", "--executor", "debug", *broken]) == 0
        shown = capsys.readouterr().out
        assert "1 failed" in shown and "done" not in shown.splitlines()[-1], shown
        # the batch asked under judge-d belongs to judge-d's results: --status under judge-c polls it no more
        assert batch_server.retrievals == 1 and not (run_dir / "judge_batch.json").exists()
