"""launch.grid --executor local: independent runs side by side within the cores, each with its share of
them as its thread budget, in the order and with the dependencies of a Slurm submission; the overall
progress line; and Ctrl-C / SIGTERM, which stop cleanly and resume with the same command.

    pytest tests/test_local_executor.py
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.common import REPO, write_jsonl
from helpers.grid import final_state_dict, grid, make_data, status, study_dict, write_study

from launch.local import LocalRunner, Task, thread_env
from lorafull.config import load_study
from lorafull.runs import read_jsonl


@pytest.fixture()
def files(tmp_path, tiny_tokenizer_dir) -> dict:
    return make_data(tmp_path, tiny_tokenizer_dir)


def _events(stdout: str) -> list[tuple[str, str, str]]:
    """(start|done|stop|FAILED, stage, run) in the order the launcher printed them."""
    return [(m.group(1), m.group(2), m.group(3))
            for m in re.finditer(r"^  (start|done|stop|FAILED) +(\w+):? +([\w.-]+)", stdout, re.M)]


def test_each_stage_gets_a_share_of_the_cores_and_never_more(tmp_path, files, monkeypatch):
    """The scheduler alone (no process is started): ready stages split the free cores, a lone stage
    gets them all, a stage waits while the cores are taken, and the budget reaches the environment."""
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[{"name": f"r{i}"} for i in range(4)]))
    started = []
    monkeypatch.setattr(LocalRunner, "_start", lambda self, task: started.append(task))

    def schedule(cores: int, parallel: int, ready: int, running: list[Task] = ()) -> list[int]:
        runner = LocalRunner(load_study(cfg), ledger=None, parallel=parallel)
        runner.cores = cores
        started.clear()
        pending = [Task("train", tmp_path, None) for _ in range(ready)]
        runner._start_ready(pending, list(running))
        return [t.threads for t in started]

    assert schedule(cores=4, parallel=2, ready=4) == [2, 2]
    assert schedule(cores=2, parallel=2, ready=4) == [1, 1]
    assert schedule(cores=8, parallel=4, ready=1) == [8]  # a lone stage (a chain's parent) gets every core
    busy = Task("train", tmp_path, None, threads=2)
    assert schedule(cores=2, parallel=2, ready=1, running=[busy]) == []  # waits: the cores are taken
    assert schedule(cores=4, parallel=3, ready=2, running=[busy]) == [1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = thread_env(4)
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "4"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # idle OpenMP threads sleep: no spinning against other work


@pytest.mark.slow
def test_local_executor_runs_side_by_side_in_order_and_retries_nothing_unasked(tmp_path, files):
    """Without Slurm: two independent trainings at once, a chained child after its parent's training,
    each evaluation after its training, the report last; a run with bad data fails alone (its error in
    status.json, its traceback in its log) and is not rerun without --retry."""
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "Say hi.", "input": "", "output": "hi"}] * 8)
    with open(bad, "a") as f:
        f.write('{"instruction": "broken\n')
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[
        {"name": "parent"}, {"name": "child", "model.name_or_path": "run:parent", "method.kind": "full"},
        {"name": "bad", "data.train": str(bad)}]))
    out = grid(cfg, "--executor", "local", "--parallel", "2", check=False, timeout_s=900,
               env={"OMP_NUM_THREADS": ""})  # the launcher sets each stage's threads
    assert out.returncode == 1, out.stdout + out.stderr
    runs = tmp_path / "gridtest" / "runs"
    assert status(runs / "parent")["state"] == "done" and status(runs / "child")["state"] == "done"
    failed = status(runs / "bad")
    assert failed["state"] == "failed" and "bad.jsonl:9" in failed["error"], failed
    assert "Traceback" not in out.stdout + out.stderr  # it is in the run's log
    assert "bad.jsonl:9" in (runs / "bad" / "logs" / "train.log").read_text()
    assert (tmp_path / "gridtest" / "report" / "table.md").exists()
    events = _events(out.stdout)
    at = {e: i for i, e in enumerate(events)}
    # parent and bad train side by side: both start before either ends
    assert at[("start", "train", "bad")] < min(at.get(("done", "train", "parent")), at[("FAILED", "train", "bad")])
    assert at[("done", "train", "parent")] < at[("start", "train", "child")]
    for run in ("parent", "child"):
        assert at[("done", "train", run)] < at[("start", "evaluate", run)]
    assert events[-2:] == [("start", "report", "report"), ("done", "report", "report")]
    assert "evaluate" not in {stage for _, stage, run in events if run == "bad"}
    # the thread budget each stage was given is what its torch used
    budgets = dict(re.findall(r"python -m lorafull\.train \S+/(\w+) \((\d+) thread", "".join(
        (runs / r / "logs" / "train.log").read_text() for r in ("parent", "child"))))
    cores = len(os.sched_getaffinity(0))
    for run in ("parent", "child"):
        summary = [r for r in read_jsonl(runs / run / "metrics.jsonl") if r.get("summary")][-1]
        assert summary["torch_threads"] == int(budgets[run]) <= cores
    assert re.search(r"\[2/3\] runs done, 0 running, 0 left, 1 failed", out.stdout), out.stdout

    again = grid(cfg, "--executor", "local")
    assert "0 jobs submitted" in again.stdout and "use --retry" in again.stdout
    st = grid(cfg, "--status", "--executor", "local").stdout
    assert "2 done" in st and "1 failed" in st


def _launcher(cfg: Path, *args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "launch.grid", str(cfg), "--executor", "local", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, **env})


def _wait_for_steps(run_dir: Path, steps: int, proc: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logged = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]
        if len(logged) >= steps:
            return
        if proc.poll() is not None:
            raise AssertionError("the launcher ended before the training got going:\n" + proc.stdout.read()
                                 + proc.stderr.read())
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"{run_dir}: fewer than {steps} steps logged after {timeout_s} s")


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_stops_cleanly_and_the_same_command_resumes_bitwise(tmp_path, files, how):
    """SIGINT (what Ctrl-C sends the launcher: its stages run in their own sessions) or SIGTERM mid-way
    through the first run: the run saves and is `interrupted`, its chained child never started and stays
    new, one line says how to go on, no traceback; the same command finishes the study, and the resumed
    run's weights equal, bit for bit, those of the same run trained without a stop (checked after Ctrl-C;
    SIGTERM's stop is checked up to the status line, since it leaves the same state behind)."""
    steps = {"train": {"max_steps": 12, "save_every_steps": 1000, "log_every_steps": 1}}
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, base=steps, runs=[
        {"name": "a"}, {"name": "a_child", "model.name_or_path": "run:a"}]))
    runs = tmp_path / "gridtest" / "runs"
    proc = _launcher(cfg, "--parallel", "1", env={"LORAFULL_FAULT_STEP_SLEEP_S": "0.5"})
    _wait_for_steps(runs / "a", 2, proc)
    proc.send_signal(how)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err, out + err
    stopped = status(runs / "a")
    assert stopped["state"] == "interrupted" and 2 <= stopped["step"] < 12, stopped
    assert not (runs / "a_child" / "status.json").exists()  # never started: still new
    line = [x for x in out.splitlines() if x.startswith("interrupted:")]
    assert len(line) == 1 and f"python -m launch.grid {cfg} --executor local --parallel 1" in line[0], out
    st = grid(cfg, "--status", "--executor", "local").stdout
    assert "1 interrupted, 1 new" in st, st
    if how == signal.SIGTERM:
        return  # the stop is the same as Ctrl-C's from here on: the resume is proven once, below

    again = grid(cfg, "--executor", "local", "--parallel", "1", timeout_s=900)  # the same command, no --retry
    assert "2/2 run(s) finished" in again.stdout, again.stdout
    done = status(runs / "a")
    assert done["state"] == "done" and done["resumed_from"] == stopped["step"], done
    assert status(runs / "a_child")["state"] == "done"

    reference = write_study(tmp_path / "ref.yaml", study_dict(tmp_path, files, name="reference", base=steps,
                                                              runs=[{"name": "a"}]))
    grid(reference, "--executor", "local", timeout_s=900)
    resumed, straight = final_state_dict(runs / "a"), final_state_dict(tmp_path / "reference" / "runs" / "a")
    assert resumed.keys() == straight.keys()
    for name, tensor in straight.items():
        assert resumed[name].dtype == tensor.dtype and bool((resumed[name] == tensor).all()), name
