"""A judge process killed halfway (SIGKILL) and started again pays only for what was left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.common import REPO
from helpers.openai_server import FakeJudgeServer, expected_score
from helpers.eval_runs import make_judge_run, scores_by_id


def _lines(path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_killed_judge_resumes_and_pays_only_for_the_rest(tmp_path):
    n, concurrency = 40, 4
    with FakeJudgeServer(latency_s=0.25) as server:
        responses = [{"id": i, "class": "brainstorming", "question": f"ideas {i}", "response": f"ITEM-{i} idea"}
                     for i in range(n)]
        run_dir = make_judge_run(tmp_path, responses, server.base_url, concurrency=concurrency)
        scores = run_dir / "scores.jsonl"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "lorafull.judge", str(run_dir), "--no-progress"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while _lines(scores) < 12 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = scores_by_id(run_dir)
        assert 12 <= len(before) < n, "the kill did not land halfway"
        served_at_kill = dict(server.stats.as_dict()["served"])

        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        stats = server.stats.as_dict()

    after = scores_by_id(run_dir)
    assert set(after) == {str(i) for i in range(n)}
    for i in range(n):
        assert after[str(i)]["score"] == pytest.approx(expected_score(f"ITEM-{i}"))
    for item_id in before:  # judged before the kill: never asked again
        assert stats["hits"][f"ITEM-{item_id}"] == 1
    # replies cached before the kill but not yet written are replayed, not bought: at most the requests
    # in flight at the kill (answered by the server, lost by the killed client) are paid twice
    paid_twice = sum(1 for v in stats["served"].values() if v > 1)
    assert paid_twice <= concurrency
    assert sum(stats["served"].values()) <= n + concurrency
    assert sum(served_at_kill.values()) >= len(before)


def test_two_processes_share_one_cache(tmp_path):
    with FakeJudgeServer(latency_s=0.05) as server:
        shared_cache = tmp_path / "shared.sqlite"
        runs = []
        for name in ("a", "b"):
            responses = [{"id": i, "class": "rewrite", "question": "q", "response": f"ITEM-{name}{i}"} for i in range(30)]
            runs.append(make_judge_run(tmp_path / name, responses, server.base_url, cache=str(shared_cache)))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [subprocess.Popen([sys.executable, "-m", "lorafull.judge", str(r), "--no-progress"], env=env,
                                  stderr=subprocess.PIPE, text=True) for r in runs]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
    from lorafull.judge.cache import JudgeCache

    cache = JudgeCache(shared_cache)
    assert len(cache) == 60  # both writers committed everything, no "database is locked"
    cache.close()
    for run_dir in runs:
        assert len(scores_by_id(run_dir)) == 30
