"""One writer per run, one payment per prompt: two judge processes on one run write one row per item
and buy each reply once; two runs sharing the judge cache judge the same prompts at the same time and
pay once per prompt (the server counts every request). Real processes, real HTTP, real SQLite.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from helpers.common import REPO
from helpers.eval_runs import make_judge_run, scores_by_id
from helpers.openai_server import FakeJudgeServer, expected_score
from lorafull.judge.cache import JudgeCache
from lorafull.judge.summary import summarize
from lorafull.runs import stage_lock


def _start_judge(run_dir, log):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "lorafull.judge", str(run_dir), "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def _wait_for_text(path, text, timeout_s=90.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never said {text!r}: {path.read_text() if path.exists() else ''}")


def test_two_judges_on_one_run_write_each_row_once_and_pay_once(tmp_path):
    n = 16
    with FakeJudgeServer(latency_s=0.1) as server:
        responses = [{"id": i, "class": "open qa", "question": f"Q{i}?", "response": f"ITEM-{i} answer"}
                     for i in range(n)]
        run_dir = make_judge_run(tmp_path, responses, server.base_url, concurrency=4)
        logs = [tmp_path / "judge_a.log", tmp_path / "judge_b.log"]
        with stage_lock(run_dir, "judge"):  # held here first, so both processes surely meet a holder
            procs = [_start_judge(run_dir, log) for log in logs]
            for log in logs:
                _wait_for_text(log, "judge is already running here")
        codes = [p.wait(timeout=120) for p in procs]
        stats = server.stats.as_dict()
    assert codes == [0, 0], [log.read_text() for log in logs]
    rows = scores_by_id(run_dir)  # asserts: no id written twice
    assert set(rows) == {str(i) for i in range(n)}
    assert all(rows[str(i)]["score"] == pytest.approx(expected_score(f"ITEM-{i}")) for i in range(n))
    assert all(stats["hits"][f"ITEM-{i}"] == 1 for i in range(n)) and len(stats["hits"]) == n
    assert "pid" in logs[0].read_text()  # the message names the holder


def test_two_runs_sharing_the_cache_pay_once_per_prompt(tmp_path):
    n = 12
    shared_cache = tmp_path / "shared.sqlite"
    with FakeJudgeServer(latency_s=0.4) as server:
        # the same questions and answers in both runs: the same prompts, judged at the same time
        responses = [{"id": i, "class": "rewrite", "question": "q", "response": f"ITEM-same{i}"} for i in range(n)]
        runs = [make_judge_run(tmp_path / name, responses, server.base_url, cache=str(shared_cache), concurrency=4)
                for name in ("a", "b")]
        procs = [_start_judge(run_dir, tmp_path / f"{i}.log") for i, run_dir in enumerate(runs)]
        codes = [p.wait(timeout=120) for p in procs]
        stats = server.stats.as_dict()
    assert codes == [0, 0], [(tmp_path / f"{i}.log").read_text() for i in range(2)]
    assert {k: v for k, v in stats["hits"].items()} == {f"ITEM-same{i}": 1 for i in range(n)}
    a, b = (scores_by_id(r) for r in runs)
    assert {k: r["score"] for k, r in a.items()} == {k: r["score"] for k, r in b.items()}
    assert sum(r["paid"] for r in a.values()) + sum(r["paid"] for r in b.values()) == n


def test_a_claim_is_exclusive_until_released_or_its_owner_is_gone(tmp_path):
    cache = JudgeCache(tmp_path / "c.sqlite")
    other = JudgeCache(tmp_path / "c.sqlite")  # a second connection, as a second process has
    assert cache.claim("k", "host-a:1:x", lease_s=60)
    assert not other.claim("k", "host-b:2:y", lease_s=60)  # held, lease running, another host
    assert cache.claim("k", "host-a:1:x", lease_s=60)  # the owner renews
    cache.release("k", "host-a:1:x")
    assert other.claim("k", "host-b:2:y", lease_s=0.0)
    time.sleep(0.01)
    assert cache.claim("k", "host-a:1:x", lease_s=60)  # the lease ran out
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    other.release("k", "host-a:1:x")
    cache.release("k", "host-a:1:x")
    assert cache.claim("k", f"{socket.gethostname()}:{dead.stdout.strip()}:z", lease_s=600)
    assert other.claim("k", "host-b:2:y", lease_s=60)  # the owner's process is gone: no waiting 10 minutes
    cache.close()
    other.close()


def test_stage_lock_makes_a_second_writer_wait(tmp_path):
    order, messages = [], []

    def second():
        with stage_lock(tmp_path, "judge", poll_s=0.05, on_wait=messages.append):
            order.append("second")

    with stage_lock(tmp_path, "judge"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        order.append("first done")
    t.join(timeout=10)
    assert order == ["first done", "second"]
    assert len(messages) == 1 and f"pid {os.getpid()}" in messages[0] and ".judge.lock" in messages[0]
    with stage_lock(tmp_path, "generate", on_wait=messages.append):  # other stages are not held up
        with stage_lock(tmp_path / "other_run", "judge", on_wait=messages.append):
            pass
    assert len(messages) == 1


def test_summaries_count_an_item_once():
    rows = [{"id": 1, "class": "math", "score": 0.0}, {"id": 2, "class": "math", "score": 1.0},
            {"id": 1, "class": "math", "score": 1.0}]  # item 1 twice (a file written by two processes)
    s = summarize(rows)
    assert s["items"] == 2 and s["categories"]["math"] == pytest.approx(1.0)


_OPEN_AT_ONCE = """
import os, sys, time
from lorafull.judge.cache import JudgeCache
path, tag, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
while time.time() < start:
    pass
cache = JudgeCache(path)
cache.put("key-" + tag, "judge", "Score: 1", 1, 1)
assert cache.claim("shared", f"host:{os.getpid()}:{tag}", 10.0) in (True, False)
cache.close()
"""


def test_several_processes_opening_one_new_cache_at_once_all_work(tmp_path):
    """A study's eval jobs start together on a cache file nobody has made yet: none of them may fail
    with "database is locked" while the file is set up (WAL switch, tables)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_ in range(4):
        path = tmp_path / f"cache-{round_}.sqlite"
        start = time.time() + 2.0  # every process waits for the same instant, imports done
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, str(path), str(i), str(start)], env=env,
                                  stderr=subprocess.PIPE, text=True) for i in range(6)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, errors
        assert len(JudgeCache(path)) == 6
