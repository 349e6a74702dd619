"""Batch judging (eval.judge.mode: batch) against a local Files + Batches server, through the real openai
client: a batch that completes on the third poll, a crash between submit and download, failed lines,
unreadable replies asked again in a second batch. Each ends with every item scored or marked, each
request paid once, and the rows the online judge writes for the same replies."""
from __future__ import annotations

import json
import re

import pytest

from helpers.batch_server import FakeBatchServer
from helpers.eval_runs import judge_cli, make_judge_run, scores_by_id
from helpers.openai_server import FakeJudgeServer, expected_score
from lorafull.judge.batch import STATE_FILE
from lorafull.judge.request import STRUCTURED_FORMAT
from lorafull.judge.stage import judge_run
from lorafull.runs import read_status

N = 8


def responses(fail: set[int] = frozenset()) -> list[dict]:
    return [{"id": i, "class": "brainstorming", "question": f"ideas {i}",
             "response": f"ITEM-{i} idea" + (" BATCHFAIL" if i in fail else "")} for i in range(N)]


def test_a_batch_completing_on_the_third_poll_scores_every_item_at_half_price(tmp_path):
    with FakeBatchServer(polls_to_complete=3) as server:
        run_dir = make_judge_run(tmp_path, responses(), server.base_url, mode="batch")
        for poll in (1, 2):  # submit + first poll, second poll: still running
            waiting = judge_run(run_dir, progress=False)
            assert re.match(r"judge batch \S+ is (validating|in_progress)", waiting["waiting"]), waiting
            st = read_status(run_dir)  # waiting, not failed: nothing for --retry to do
            assert (st["state"], st["stage"]) == ("waiting", "judge") and st["error"] is None, st
            state = json.loads((run_dir / STATE_FILE).read_text())
            assert state["requests"] == N and server.created == 1 and server.polls[state["batch_id"]] == poll
        summary = judge_run(run_dir, progress=False)
    assert server.created == 1 and server.chat_requests == 0
    assert len(server.paid) == N and set(server.paid.values()) == {1}
    scores = scores_by_id(run_dir)
    assert {i: r["score"] for i, r in scores.items()} == pytest.approx(
        {str(i): expected_score(f"ITEM-{i}") for i in range(N)})
    row = scores["0"]  # costed at half the online price: 0.25 / 0.75 USD per 1M tokens
    assert row["cost"] == pytest.approx((row["prompt_tokens"] * 0.25 + row["completion_tokens"] * 0.75) / 1e6)
    assert summary["unscored"] == 0 and not (run_dir / STATE_FILE).exists()
    assert read_status(run_dir)["state"] == "done"


def test_a_crash_between_submit_and_download_resumes_the_same_batch(tmp_path):
    with FakeBatchServer(polls_to_complete=2) as server:
        run_dir = make_judge_run(tmp_path, responses(), server.base_url, mode="batch")
        first = judge_cli(run_dir)  # a whole process: submits, polls once, exits
        assert first.returncode == 0 and "waiting: judge batch" in first.stdout, first.stdout + first.stderr
        batch_id = json.loads((run_dir / STATE_FILE).read_text())["batch_id"]
        # a crash after creating the batch but before recording it: the state lost its batch id
        state = json.loads((run_dir / STATE_FILE).read_text())
        del state["batch_id"]
        (run_dir / STATE_FILE).write_text(json.dumps(state))
        done = judge_cli(run_dir)
        assert done.returncode == 0, done.stderr
    assert server.created == 1 and list(server.batches) == [batch_id]
    assert len(scores_by_id(run_dir)) == N and set(server.paid.values()) == {1}


def test_failed_lines_are_marked_and_never_bought_again(tmp_path):
    with FakeBatchServer(polls_to_complete=1) as server:
        run_dir = make_judge_run(tmp_path, responses(fail={2, 5}), server.base_url, mode="batch")
        summary = judge_run(run_dir, progress=False)
        scores = scores_by_id(run_dir)
        again = judge_run(run_dir, progress=False)  # nothing left to judge: no new batch
    assert set(scores) == {str(i) for i in range(N)}
    for i in (2, 5):
        assert scores[str(i)]["score"] is None and scores[str(i)]["error_kind"] == "batch"
    assert all(scores[str(i)]["score"] is not None for i in range(N) if i not in (2, 5))
    assert summary["unscored"] == 2 and again["unscored"] == 2
    assert server.created == 1 and server.chat_requests == 0 and len(server.paid) == N - 2


def test_an_expired_batch_leaves_its_unanswered_lines_to_the_next_batch(tmp_path):
    with FakeBatchServer(polls_to_complete=1, expire_after=5) as server:
        run_dir = make_judge_run(tmp_path, responses(), server.base_url, mode="batch")
        first = judge_run(run_dir, progress=False)  # 5 answered, 3 asked again in a second batch
        assert first.get("waiting") is None and first["unscored"] == 0, first
    assert server.created == 2 and len(server.paid) == N and set(server.paid.values()) == {1}
    assert [b["status"] for b in server.batches.values()] == ["expired", "completed"]
    assert all(r["score"] is not None for r in scores_by_id(run_dir).values())


def test_a_batch_refused_as_a_whole_is_one_line_and_the_next_call_submits_anew(tmp_path):
    items = responses()
    items[3]["response"] += " BATCHINVALID"
    with FakeBatchServer(polls_to_complete=1) as server:
        run_dir = make_judge_run(tmp_path, items, server.base_url, mode="batch")
        first = judge_cli(run_dir)
        assert first.returncode == 1 and "failed: line 4: this line is not a valid request" in first.stderr, \
            first.stderr
        assert read_status(run_dir)["state"] == "failed"
        second = judge_cli(run_dir)  # not stuck on the refused batch: a new one (refused again here)
    assert second.returncode == 1 and server.created == 2 and len(server.batches) == 2
    assert not server.paid


def _unreadable_first(structured: bool) -> dict[str, list[str]]:
    """Items 1 and 4 first get a reply nobody can read, then a readable one; the others a readable one."""
    def readable(i: int) -> str:
        value = expected_score(f"ITEM-{i}")
        return json.dumps({"score": value, "reason": "fine"}) if structured else f"Score: {value:g}"
    return {f"ITEM-{i}": (["I cannot decide on this one."] if i in (1, 4) else []) + [readable(i)] for i in range(N)}


@pytest.mark.parametrize("structured", [False, True], ids=["text", "structured"])
def test_unreadable_replies_are_asked_again_in_a_second_batch_and_rows_equal_the_online_judges(tmp_path, structured):
    replies = _unreadable_first(structured)
    with FakeJudgeServer(replies=replies) as online_server:
        online = make_judge_run(tmp_path / "online", responses(), online_server.base_url, structured=structured)
        judge_run(online, progress=False)
        asked_online = online_server.stats.as_dict()["hits"]
    with FakeBatchServer(polls_to_complete=1, replies=replies) as server:
        run_dir = make_judge_run(tmp_path / "batch", responses(), server.base_url, mode="batch",
                                 structured=structured)
        summary = judge_run(run_dir, progress=False)  # round 1 ends unreadable for 2 items: round 2 asks them
    assert server.created == 2 and server.chat_requests == 0 and set(server.paid.values()) == {1}
    assert len(server.lines) == sum(asked_online.values()) == N + 2  # what the online judge bought, no more
    assert [line["temperature"] for line in server.lines[N:]] == [0.7, 0.7]  # the online re-ask's settings
    if structured:
        assert all(line["response_format"] == STRUCTURED_FORMAT for line in server.lines)
    keep = ("id", "class", "score", "samples", "reply", "tokens", "error", "error_kind")
    batch_rows, online_rows = scores_by_id(run_dir), scores_by_id(online)
    assert {i: {k: r.get(k) for k in keep} for i, r in batch_rows.items()} == \
        {i: {k: r.get(k) for k in keep} for i, r in online_rows.items()}
    assert summary["unscored"] == 0
    for i in range(N):  # half the price of the online row, same tokens
        assert batch_rows[str(i)]["cost"] == pytest.approx(online_rows[str(i)]["cost"] / 2)


@pytest.mark.slow
def test_launch_grid_status_polls_the_batch_and_the_report_follows(tmp_path, tiny_tokenizer_dir):
    from helpers.grid import grid, make_data, study_dict, write_study

    files = make_data(tmp_path, tiny_tokenizer_dir)
    with FakeBatchServer(polls_to_complete=3) as server:
        judge = {"kind": "openai", "mode": "batch", "base_url": server.base_url, "model": "judge",
                 "prices": {"judge": {"input": 1.0, "output": 2.0}}}
        cfg = write_study(tmp_path / "b.yaml", study_dict(tmp_path, files, name="batched",
                                                          base={"eval": {"judge": judge}}, runs=[{"name": "r"}]))
        first = grid(cfg, "--executor", "local", check=False)  # trains, generates, submits the batch (poll 1)
        run_dir = tmp_path / "batched" / "runs" / "r"
        assert (run_dir / STATE_FILE).exists() and server.created == 1, first.stdout + first.stderr
        assert first.returncode == 0 and read_status(run_dir)["state"] == "waiting", first.stdout + first.stderr
        table = tmp_path / "batched" / "report" / "table.md"
        early = table.read_text()  # the report job ran after the eval job: the run shows as waiting
        assert "waiting" in early, early
        still = grid(cfg, "--status", "--executor", "local")  # poll 2
        assert "is in_progress" in still.stdout and " waiting " in still.stdout, still.stdout
        assert "1 waiting" in still.stdout and "failed" not in still.stdout, still.stdout
        assert grid(cfg, "--retry", "--executor", "local").stdout.count("0 jobs submitted") == 1  # not a failure
        done = grid(cfg, "--status", "--executor", "local")  # poll 3: completes, scores, writes the report
        assert "judge batch finished" in done.stdout and "and the report follow" in done.stdout, done.stdout
        assert " done " in done.stdout and "1 done" in done.stdout, done.stdout
        again = grid(cfg, "--executor", "local")
    assert server.created == 1 and server.chat_requests == 0 and set(server.paid.values()) == {1}
    assert len(scores_by_id(run_dir)) == 4 and table.read_text() != early and "waiting" not in table.read_text()
    assert "nothing to do" in again.stdout, again.stdout
