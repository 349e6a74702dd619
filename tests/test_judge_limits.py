"""The judge cannot hang: a Retry-After of an hour (or inf) waits only the configured cap, a server
trickling one byte a second is cut off by the total deadline per request, N items failing in a row
stop the judge with one error line, and settings that would hang or crash it are refused at load.
Real openai client over real HTTP to tests/helpers/openai_server.py.
"""
from __future__ import annotations

import time

import pytest
import yaml

from helpers.eval_runs import judge_cli, make_judge_run, scores_by_id
from helpers.openai_server import FakeJudgeServer, expected_score
from lorafull.config import ConfigError, load_run_config, load_study
from lorafull.judge.stage import judge_run
from lorafull.runs import read_status


def _one_item_run(tmp_path, server, faults: str, **judge):
    responses = [{"id": 0, "class": "open qa", "question": "Q?", "response": f"ITEM-x answer FAULTS={faults}"}]
    return make_judge_run(tmp_path, responses, server.base_url, **judge)


@pytest.mark.parametrize("retry_after", ["3600", "inf"])
def test_a_huge_retry_after_waits_the_cap_then_tries_again(tmp_path, retry_after):
    with FakeJudgeServer(retry_after_s=retry_after) as server:
        run_dir = _one_item_run(tmp_path, server, "429", retry_after_cap_s=1.5)
        t0 = time.monotonic()
        judge_run(run_dir, progress=False)
        elapsed = time.monotonic() - t0
        times = server.stats.as_dict()["times"]["ITEM-x"]
    assert len(times) == 2 and times[1] - times[0] >= 1.5  # the cap was waited, not the header's hour
    assert elapsed < 1.5 * 1.1 + 0.05 + 3.0  # cap + jitter + slack for a loaded machine
    assert scores_by_id(run_dir)["0"]["score"] == pytest.approx(expected_score("ITEM-x"))


def test_a_trickling_server_is_cut_off_by_the_total_deadline(tmp_path):
    with FakeJudgeServer(trickle_s=1.0) as server:
        # a byte a second: every read gets its byte within the 2 s the client allows per read, so
        # only the total deadline can end the request
        run_dir = _one_item_run(tmp_path, server, "trickle", timeout_s=2.0)
        t0 = time.monotonic()
        judge_run(run_dir, progress=False)
        elapsed = time.monotonic() - t0
        hits = server.stats.as_dict()["hits"]["ITEM-x"]
    assert hits == 2 and elapsed < 2.0 + 3.0
    assert scores_by_id(run_dir)["0"]["score"] == pytest.approx(expected_score("ITEM-x"))


def test_a_server_that_only_trickles_fails_the_item_in_bounded_time(tmp_path):
    with FakeJudgeServer(trickle_s=1.0) as server:
        run_dir = _one_item_run(tmp_path, server, "trickle,trickle", timeout_s=2.0, max_retries=1)
        t0 = time.monotonic()
        summary = judge_run(run_dir, progress=False)
        elapsed = time.monotonic() - t0
    row = scores_by_id(run_dir)["0"]
    assert row["score"] is None and row["error_kind"] == "transport"
    assert "within timeout_s=2 s" in row["error"]
    assert summary["unscored"] == 1 and elapsed < 2 * 2.0 + 3.0


def test_failures_in_a_row_stop_the_judge_with_one_line(tmp_path):
    with FakeJudgeServer() as server:
        responses = [{"id": i, "class": "open qa", "question": "Q?", "response": f"ITEM-{i} FAULTS=500,500"}
                     for i in range(10)]
        run_dir = make_judge_run(tmp_path, responses, server.base_url, max_retries=0, concurrency=1,
                                 max_consecutive_failures=3)
        done = judge_cli(run_dir)
        hits = sum(server.stats.as_dict()["hits"].values())
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "3 items in a row failed" in lines[0] and "max_consecutive_failures" in lines[0]
    assert 3 <= hits <= 3 + 1  # stopped there (+ the one request already let through), not after all ten
    status = read_status(run_dir)
    assert status["stages"]["judge"] == "failed" and "in a row" in status["error"]


def test_the_failure_count_is_shared_by_the_runs_of_a_study(tmp_path):
    """Once a dead endpoint stopped one run's judge, the next run sharing the cache stops at its
    first failed item instead of spending N more items' retries."""
    with FakeJudgeServer() as server:
        cache = str(tmp_path / "shared.sqlite")
        runs = [make_judge_run(tmp_path / name, [{"id": i, "class": "open qa", "question": "Q?",
                                                   "response": f"ITEM-{name}{i} FAULTS=500,500"} for i in range(10)],
                               server.base_url, max_retries=0, concurrency=1, max_consecutive_failures=3, cache=cache)
                for name in ("a", "b")]
        first = judge_cli(runs[0])
        hits_first = sum(server.stats.as_dict()["hits"].values())
        second = judge_cli(runs[1])
        hits_second = sum(server.stats.as_dict()["hits"].values()) - hits_first
    assert first.returncode == second.returncode == 1
    assert hits_second <= 1 + 1 and "in a row failed" in second.stderr


BAD_SETTINGS = [("max_retries", -1, "must be >= 0"), ("timeout_s", 0, "must be > 0"),
                ("timeout_s", float("inf"), "finite"), ("retry_after_cap_s", float("inf"), "finite"),
                ("concurrency", 0, "must be >= 1"), ("parse_retries", -1, "must be >= 0"),
                ("n_samples", 0, "must be >= 1"), ("max_consecutive_failures", 0, "must be >= 1"),
                ("temperature", -0.5, "must be >= 0 and <= 2"), ("requests_per_minute", 0, "must be >= 1")]


@pytest.mark.parametrize("key, value, message", BAD_SETTINGS, ids=[f"{k}={v}" for k, v, _ in BAD_SETTINGS])
def test_bad_judge_settings_are_refused_at_load_naming_file_line_and_key(tmp_path, key, value, message):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"study": {"name": "s", "output_dir": str(tmp_path / "out")},
                                     "base": {"eval": {"judge": {key: value}}}}, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_study(study)
    text = str(err.value)
    assert text.startswith(f"{study}:") and f"base.eval.judge.{key}: " in text and message in text
    assert len(text.splitlines()) == 1
    line = int(text.split(":")[1])
    assert f"{key}:" in study.read_text().splitlines()[line - 1]


def test_a_run_folder_with_a_bad_judge_setting_fails_before_any_request(tmp_path):
    with FakeJudgeServer() as server:
        run_dir = _one_item_run(tmp_path, server, "")
        cfg_path = run_dir / "config.yaml"
        cfg_path.write_text(cfg_path.read_text().replace("max_retries: 6", "max_retries: -1"))
        with pytest.raises(ConfigError, match=r"config.yaml:\d+: eval.judge.max_retries: must be >= 0, got -1"):
            load_run_config(run_dir)
        done = judge_cli(run_dir)
        assert done.returncode == 1 and "eval.judge.max_retries" in done.stderr
        assert server.stats.as_dict()["hits"] == {}
    assert not (run_dir / "scores.jsonl").exists()


def test_an_old_failure_streak_starts_again(tmp_path):
    from lorafull.judge.cache import STALE_STREAK_S, JudgeCache

    cache = JudgeCache(tmp_path / "c.sqlite")
    assert [cache.count_failure("e") for _ in range(3)] == [1, 2, 3]
    cache.count_success("e")
    assert cache.count_failure("e") == 1
    cache.db.execute("UPDATE failures SET in_a_row = 9, last = last - ?", (STALE_STREAK_S + 1,))
    assert cache.count_failure("e") == 1  # yesterday's outage does not stop today's first failure
    cache.close()
