"""A served judge on a real Slurm: launch.grid submits one server job beside the eval jobs, the evaluations
judge through it (SmolLM2-135M-Instruct under `transformers serve`), the server dies mid-evaluation and
`--retry` finishes the runs through a new server without asking again what was judged; the server job
ends after the last eval job; the bearer token lives in the 0600 address file only.

    pytest -m slurm tests/test_slurm_judge_serve.py
"""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from helpers.common import write_jsonl
from helpers.grid import grid, job_log_text, ledger, make_data, sacct_rows, status, wait_for_jobs, write_study
from helpers.judge_serve import TokenWatcher, files_holding, read_state, served_study, server_dirs, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ITEMS = [{"id": f"q{i}", "question": f"What is {i} plus {i}?", "class": "math", "std_answer": str(2 * i)}
         for i in range(6)]


def _scored_rows(run_dir):
    path = run_dir / "scores.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _jobs(study_dir, server_jobs):
    led = ledger(study_dir)
    return [j for e in led["runs"].values() for k, j in e.items() if k in ("train", "eval") and j] + \
        ([led["report"]] if led.get("report") else []) + list(server_jobs)


def _server_job(server_dir) -> str:
    return json.loads((server_dir / "job.json").read_text())["job"]


def test_server_job_serves_dies_and_retry_judges_only_the_rest(tmp_path, tiny_tokenizer_dir, smollm2_dir, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # no API key anywhere: the jobs inherit this environment
    files = make_data(tmp_path, tiny_tokenizer_dir)
    write_jsonl(tmp_path / "data" / "eval.jsonl", ITEMS)
    cfg = write_study(tmp_path / "served.yaml", served_study(tmp_path, files, smollm2_dir, "served",
                                                              grid={"method.kind": ["full", "lora"]}))
    study_dir = tmp_path / "served"
    with TokenWatcher(study_dir) as watcher:
        first = grid(cfg)
        assert "sbatch judge server" in first.stdout, first.stdout
        server = wait_until(lambda: server_dirs(study_dir), 60, what="the server's folder")[0]
        first_job = _server_job(server)
        evals = [e["eval"] for e in ledger(study_dir)["runs"].values()]
        priority = dict(line.split() for line in subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %Q", "-j", ",".join({first_job, *(e.split("_")[0] for e in evals)})],
            capture_output=True, text=True).stdout.splitlines())
        # submitted ahead of its evaluations: the scheduler starts it first when both can start
        assert all(int(priority[first_job]) > int(priority[e]) for e in evals if e in priority), priority
        runs = sorted((study_dir / "runs").iterdir())
        # the server dies once the first answer is judged, while the rest are in flight
        wait_until(lambda: any(_scored_rows(r) for r in runs), 1500, what="a first judged item")
        seen = subprocess.run(["squeue", "-h", "-o", "%j %o"], capture_output=True, text=True).stdout + \
            subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout  # argv, job names
        assert watcher.tokens and not any(t in seen for t in watcher.tokens)
        os.kill(read_state(server)["engine_pid"], signal.SIGKILL)
        wait_for_jobs(_jobs(study_dir, [first_job]), timeout_s=600)
        kept = {}
        for run in runs:
            st = status(run)
            assert st["state"] == "failed" and "\n" not in st["error"], st
            assert "judge server" in st["error"] and "--retry" in st["error"], st["error"]
            kept[run.name] = {r["id"]: r for r in _scored_rows(run) if r.get("error_kind") != "transport"}
        assert sum(map(len, kept.values())) < 2 * len(ITEMS), kept  # the kill left work to do
        assert read_state(server)["state"] == "failed"

        second = grid(cfg, "--retry")
        second_job = _server_job(server)
        assert second_job != first_job, second.stdout
        wait_for_jobs(_jobs(study_dir, [second_job]), timeout_s=1500)

    name = json.loads((server / "serve.json").read_text())["name"]
    assert "@" in name and name.startswith("served:")
    for run in runs:
        assert status(run)["state"] == "done", status(run)
        rows = {r["id"]: r for r in _scored_rows(run)}
        assert sorted(rows) == sorted(i["id"] for i in ITEMS)
        assert {r["judge"] for r in rows.values()} == {name}  # every score row names the served judge by hash
        for item_id, row in kept[run.name].items():  # judged before the kill: left as it was
            assert rows[item_id] == row
    # the new server was asked exactly for what was missing: one request per item, nothing twice
    asked = read_state(server)
    assert asked["state"] == "stopped", asked
    assert asked["requests"] == 2 * len(ITEMS) - sum(map(len, kept.values())), asked

    led = ledger(study_dir)
    evals = [e["eval"] for e in led["runs"].values()]
    rows = sacct_rows(evals + [first_job, second_job])
    detail = json.dumps(rows, indent=1) + job_log_text(study_dir)
    assert rows[first_job]["state"] == "FAILED", detail
    assert rows[second_job]["state"] == "COMPLETED", detail  # ended by itself, not by its time limit
    assert rows[second_job]["end"] >= max(rows[e]["end"] for e in evals), detail

    assert len(watcher.tokens) == 2 and watcher.modes == {0o600}
    assert files_holding(study_dir, watcher.tokens) == []  # nowhere but the (now removed) address file
    assert not any(t in first.stdout + second.stdout for t in watcher.tokens)
    st = grid(cfg, "--status").stdout
    assert f"judge server {server.name}: stopped" in st, st


def test_an_idle_server_hands_over_to_a_successor_that_starts_with_the_waiting_evaluations(tmp_path):
    """No request for idle_timeout_s and every evaluation still waiting for its training: the server job
    submits its successor, `afterok:` those trainings, and ends; once no eval job needs it, it ends for good."""
    import sys
    import time

    import yaml

    from launch.judge_server import JudgeServerJob
    from lorafull.config import ServeConfig
    from lorafull.judge.serve.files import write_state
    from lorafull.judge.serve.local import write_settings

    study_dir = tmp_path / "handover"
    study_dir.mkdir()
    (study_dir / "study.yaml").write_text(yaml.safe_dump({"study": {"name": "handover"}, "slurm": {
        "partition": "debug", "gres": None, "timeout_min": 5}}))
    serve = ServeConfig(model=str(tmp_path), engine="transformers", gpus=0, cpus=1, mem_gb=1, idle_timeout_s=1,
                        timeout_min=5)
    paths = write_settings(study_dir, serve, None)

    def held(name: str, *extra: str) -> str:
        return subprocess.run(["sbatch", "--parsable", "--hold", "-p", "debug", "-c1", "--mem=100M", "-J", name, *extra,
                               "--wrap", "true"], capture_output=True, text=True, check=True).stdout.strip()

    training = held("lf-handover-train")  # a training that has not run yet, and its evaluation after it
    evaluation = held("lf-handover-eval", f"--dependency=afterok:{training}")
    successor = None
    try:
        paths.clients.write_text(f"{evaluation} {training}\n")
        write_state(paths, "serving", last_request=time.time() - 60, in_flight=0)
        job = JudgeServerJob(str(study_dir), paths.key, sys.executable)
        assert "idle for" in job._decide(paths, serve)
        successor = json.loads(paths.job.read_text())["job"]
        dependency = subprocess.run(["squeue", "-h", "-j", successor, "-o", "%E"], capture_output=True,
                                    text=True).stdout
        assert f"afterok:{training}" in dependency, dependency
        write_state(paths, "serving", last_request=time.time())  # busy again: it stays
        assert job._decide(paths, serve) is None
        subprocess.run(["scancel", evaluation, training], check=True)
        wait_until(lambda: not subprocess.run(["squeue", "-h", "-j", f"{evaluation},{training}"], capture_output=True,
                                              text=True).stdout.strip(), 60, what="the jobs' end")
        assert "every eval job" in job._decide(paths, serve)
        assert json.loads(paths.job.read_text())["ended"]
    finally:
        subprocess.run(["scancel", evaluation, training] + ([successor] if successor else []), check=False)


def test_cancel_stops_the_study_s_judge_server_job(tmp_path, tiny_tokenizer_dir):
    from launch.judge_server import submit_server_job
    from lorafull.config import load_study
    from lorafull.judge.serve.local import write_settings

    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "c.yaml", served_study(tmp_path, files, tmp_path, "cancelled"))
    study = load_study(cfg)
    run = study.runs[0]
    paths = write_settings(study.output_dir, run.eval.judge.serve, run.data.cache_dir)
    training = subprocess.run(["sbatch", "--parsable", "--hold", "-p", "debug", "-c1", "--mem=100M", "--wrap", "true"],
                              capture_output=True, text=True, check=True).stdout.strip()
    try:
        job = submit_server_job(study.output_dir, "cancelled", paths, study.slurm, f"afterok:{training}")
        status_text = grid(cfg, "--status").stdout
        assert f"judge server {paths.key}: pending" in status_text and f"job {job} PENDING" in status_text, status_text
        out = grid(cfg, "--cancel")
        assert job in out.stdout, out.stdout
        wait_for_jobs([job], timeout_s=60)
    finally:
        subprocess.run(["scancel", training], check=False)
