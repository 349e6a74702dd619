"""The judge end to end: the real openai client over real HTTP to tests/openai_server.py.

Shows that every item ends scored or unscored (null, never 0), that faults (429 with Retry-After,
5xx, timeouts, dropped connections, non-JSON bodies, unreadable replies) are retried, that nothing is
paid twice (the server's counts), and that the cache holds across processes.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from helpers.common import REPO, need_shared
from helpers.eval_runs import judge_cli, make_judge_run, scores_by_id
from helpers.openai_server import FakeJudgeServer, expected_score
from lorafull.config import RunConfig, save_run_config
from lorafull.judge.stage import judge_run
from lorafull.judge.client import JudgeSetupError
from lorafull.judge.prompts import PromptError, build_messages, load_prompts, normalize_class
from lorafull.runs import read_jsonl, read_status


FAULT_PLANS = ["429", "500", "503", "timeout", "drop", "html", "garbage", "429,500,garbage", "drop,timeout",
               "garbage,garbage,garbage", "", "", ""]


def test_faults_are_retried_and_nothing_is_paid_twice(tmp_path):
    with FakeJudgeServer(retry_after_s=0.5, timeout_sleep_s=2.5) as server:
        responses = [{"id": i, "class": "open qa", "question": f"Q{i}?",
                      "response": f"ITEM-{i} answer" + (f" FAULTS={plan}" if plan else "")}
                     for i, plan in enumerate(FAULT_PLANS)]
        run_dir = make_judge_run(tmp_path, responses, server.base_url)
        summary = judge_run(run_dir, progress=False)
        stats = server.stats.as_dict()

    rows = scores_by_id(run_dir)
    assert set(rows) == {str(i) for i in range(len(FAULT_PLANS))}
    for i, plan in enumerate(FAULT_PLANS):
        key, row, faults = f"ITEM-{i}", rows[str(i)], [f for f in plan.split(",") if f]
        if plan == "garbage,garbage,garbage":  # 1 ask + parse_retries=2 re-asks, all unreadable
            assert stats["hits"][key] == 3
            assert row["score"] is None and "error" not in row
            assert row["reply"] == "I am not able to decide on this one."
            assert stats["served"].get(key, 0) == 0
        else:
            assert stats["hits"][key] == len(faults) + 1, (plan, stats["hits"][key])
            assert row["score"] == pytest.approx(expected_score(key)), plan
            assert stats["served"][key] == 1  # paid once, whatever failed before
        assert stats["garbage"].get(key, 0) == faults.count("garbage")
        assert row["judge"] == "gpt-3.5-turbo" and row["tokens"] > 0 and row["cost"] > 0
    t429 = stats["times"]["ITEM-0"]
    assert t429[1] - t429[0] >= 0.5  # Retry-After: 0.5 honoured
    assert summary["unscored"] == 1 and summary["scored"] == len(FAULT_PLANS) - 1
    assert summary["cost"] == pytest.approx(sum(r["cost"] for r in rows.values()))
    assert read_status(run_dir)["stages"]["judge"] == "done"


def test_cache_holds_across_processes_and_rerun_pays_nothing(tmp_path):
    with FakeJudgeServer() as server:
        responses = [{"id": f"q{i}", "class": "math", "question": f"{i}+1?", "std_answer": f"{i + 1}",
                      "response": f"ITEM-q{i} it is {i + 1}"} for i in range(12)]
        run_dir = make_judge_run(tmp_path, responses, server.base_url)
        first = judge_cli(run_dir)
        assert first.returncode == 0, first.stderr
        hits_after_first = dict(server.stats.as_dict()["hits"])
        assert sum(hits_after_first.values()) == 12
        before = scores_by_id(run_dir)
        (run_dir / "scores.jsonl").unlink()  # lose the results: the replies are still in the cache
        second = judge_cli(run_dir)
        assert second.returncode == 0, second.stderr
        assert server.stats.as_dict()["hits"] == hits_after_first  # nothing requested again
        after = scores_by_id(run_dir)
    assert {k: r["score"] for k, r in after.items()} == {k: r["score"] for k, r in before.items()}
    assert all(r["cached"] == 1 and r["paid"] == 0 for r in after.values())


def test_transport_failures_are_unscored_then_retried_by_a_rerun(tmp_path):
    with FakeJudgeServer() as server:
        responses = [{"id": 0, "class": "rewrite", "question": "q", "response": "ITEM-0 FAULTS=500,500,500"},
                     {"id": 1, "class": "rewrite", "question": "q", "response": "ITEM-1 fine"}]
        run_dir = make_judge_run(tmp_path, responses, server.base_url, max_retries=1)
        judge_run(run_dir, progress=False)
        rows = scores_by_id(run_dir)
        assert rows["0"]["score"] is None and rows["0"]["error_kind"] == "transport"
        assert rows["1"]["score"] == pytest.approx(expected_score("ITEM-1"))
        make_judge_run(tmp_path, responses, server.base_url, max_retries=3)  # same folder, more patience
        judge_run(run_dir, progress=False)
        rows = scores_by_id(run_dir)
        stats = server.stats.as_dict()
    assert rows["0"]["score"] == pytest.approx(expected_score("ITEM-0"))
    assert stats["hits"]["ITEM-0"] == 4 and stats["hits"]["ITEM-1"] == 1


def test_n_samples_are_averaged_and_each_sample_paid_once(tmp_path):
    with FakeJudgeServer() as server:
        responses = [{"id": 7, "class": "generation", "question": "write", "response": "ITEM-7 FAULTS=,garbage"}]
        run_dir = make_judge_run(tmp_path, responses, server.base_url, n_samples=3)
        judge_run(run_dir, progress=False)
        stats = server.stats.as_dict()
    row = scores_by_id(run_dir)["7"]
    assert len(row["samples"]) == 3 and row["score"] == pytest.approx(expected_score("ITEM-7"))
    assert stats["served"]["ITEM-7"] == 3 and stats["garbage"]["ITEM-7"] == 1  # sample 2's garbage re-asked


def test_unknown_class_fails_before_any_request(tmp_path):
    with FakeJudgeServer() as server:
        responses = [{"id": 0, "class": "open qa", "question": "q", "response": "ITEM-0"},
                     {"id": 1, "class": "poetry", "question": "q", "response": "ITEM-1"}]
        run_dir = make_judge_run(tmp_path, responses, server.base_url)
        with pytest.raises(PromptError, match="poetry.*known classes: .*open qa"):
            judge_run(run_dir, progress=False)
        result = judge_cli(run_dir)
        assert server.stats.as_dict()["hits"] == {}
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "poetry" in result.stderr
    assert read_status(run_dir)["state"] == "failed"


def test_bad_key_stops_the_judge(tmp_path):
    with FakeJudgeServer() as server:
        responses = [{"id": i, "class": "open qa", "question": "q", "response": f"ITEM-{i} FAULTS=401"}
                     for i in range(3)]
        run_dir = make_judge_run(tmp_path, responses, server.base_url)
        result = judge_cli(run_dir)
    assert result.returncode == 1 and "401" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_api_key_from_environment_is_sent_and_never_written(tmp_path):
    secret = "sk-test-" + "7f3a9c" * 4
    with FakeJudgeServer() as server:
        responses = [{"id": 0, "class": "open qa", "question": "q", "response": "ITEM-0"}]
        run_dir = make_judge_run(tmp_path, responses, server.base_url, api_key_env="LORAFULL_TEST_JUDGE_KEY")
        result = judge_cli(run_dir, {"LORAFULL_TEST_JUDGE_KEY": secret})
        assert result.returncode == 0, result.stderr
        assert server.stats.as_dict()["auth_headers"] == [f"Bearer {secret}"]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    remote = make_judge_run(tmp_path / "remote", responses, "https://judge.example.invalid/v1", api_key_env="LORAFULL_NO_KEY")
    os.environ.pop("LORAFULL_NO_KEY", None)
    with pytest.raises(JudgeSetupError, match="LORAFULL_NO_KEY"):
        judge_run(remote, progress=False)


def test_requests_per_minute_limit_spaces_requests(tmp_path):
    with FakeJudgeServer() as server:
        responses = [{"id": i, "class": "open qa", "question": "q", "response": f"ITEM-{i}"} for i in range(15)]
        run_dir = make_judge_run(tmp_path, responses, server.base_url, requests_per_minute=300, concurrency=15)
        started = time.time()
        judge_run(run_dir, progress=False)
        arrivals = sorted(server.stats.as_dict()["arrivals"])
    # 300/min = 5/s with a burst of 5: the last 10 requests need at least 2 s of refill. Measured from
    # the judge's start, not the first arrival: opening 15 connections on a loaded machine can delay
    # the first arrivals, which would shorten the spread without the limiter being wrong.
    assert len(arrivals) == 15 and arrivals[-1] - started >= 1.9
    # and no 1-second window holds more than the burst plus one second's rate (+1 for network jitter)
    assert max(sum(1 for b in arrivals if a <= b < a + 1.0) for a in arrivals) <= 11


def _hand_macro(rows: list[dict]) -> float:
    groups: dict[str, list[float]] = {}
    for r in rows:
        if r["score"] is None:
            continue
        cls = normalize_class(r["class"])
        groups.setdefault("others" if cls in ("math", "code") else cls, []).append(r["score"])
    means = [sum(v) / len(v) for v in groups.values()]
    return sum(means) / len(means)


@pytest.mark.parametrize("prompts", ["belle", "default"])
def test_belle_sample_goes_through_with_every_category_matched(tmp_path, prompts):
    belle = need_shared("belle_eval")
    sample = [json.loads(line) for line in (belle / "eval_sample.jsonl").read_text().splitlines()]
    responses = [{**item, "id": i, "response": f"ITEM-{i} 回答"} for i, item in enumerate(sample)]
    prompt_file = str(belle / "eval_prompt.json") if prompts == "belle" else None
    with FakeJudgeServer(fault_rate=0.15, seed=3, retry_after_s=0.1, timeout_sleep_s=1.5) as server:
        run_dir = make_judge_run(tmp_path, responses, server.base_url, prompts=prompt_file, concurrency=16)
        summary = judge_run(run_dir, progress=False)
        stats = server.stats.as_dict()
    rows = scores_by_id(run_dir)
    assert len(rows) == 100
    table = load_prompts(prompt_file)
    assert {normalize_class(r["class"]) for r in sample} <= set(table)
    # reference answers go into the prompt only for categories whose protocol uses them
    closed = next(r for r in responses if normalize_class(r["class"]) == "closed qa" and r["std_answer"])
    assert closed["std_answer"].strip() in build_messages(table["closed qa"], closed["question"], "x",
                                                           closed["std_answer"])[1]["content"]
    for i in range(100):
        key = f"ITEM-{i}"
        row = rows[str(i)]
        garbage = stats["garbage"].get(key, 0)
        assert row["score"] is None or row["score"] == pytest.approx(expected_score(key))
        assert row["score"] is not None or garbage == 3  # unscored only after three unreadable replies
        assert stats["served"].get(key, 0) == (1 if row["score"] is not None else 0)
    assert sum(len(v) for v in stats["faults"].values()) > 10  # the run did meet faults
    assert summary["average"] == pytest.approx(_hand_macro(list(rows.values())))
    assert set(summary["categories"]) == {normalize_class(r["class"]) for r in sample}
