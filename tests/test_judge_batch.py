"""Batch judging (eval.judge.mode: batch) against a local Files + Batches server, through the real openai
client: a batch that completes on the third poll, a crash between submit and download, failed lines.
Each ends with every item scored or marked, and each request paid once."""
from __future__ import annotations

import json

import pytest

from helpers.batch_server import FakeBatchServer
from helpers.eval_runs import judge_cli, make_judge_run, scores_by_id
from helpers.openai_server import expected_score
from lorafull.judge.batch import STATE_FILE, BatchPending
from lorafull.judge.stage import judge_run

N = 8


def responses(fail: set[int] = frozenset()) -> list[dict]:
    return [{"id": i, "class": "brainstorming", "question": f"ideas {i}",
             "response": f"ITEM-{i} idea" + (" BATCHFAIL" if i in fail else "")} for i in range(N)]


def test_a_batch_completing_on_the_third_poll_scores_every_item_at_half_price(tmp_path):
    with FakeBatchServer(polls_to_complete=3) as server:
        run_dir = make_judge_run(tmp_path, responses(), server.base_url, mode="batch")
        for poll in (1, 2):  # submit + first poll, second poll: still running
            with pytest.raises(BatchPending, match=r"is (validating|in_progress)"):
                judge_run(run_dir, progress=False)
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


def test_a_crash_between_submit_and_download_resumes_the_same_batch(tmp_path):
    with FakeBatchServer(polls_to_complete=2) as server:
        run_dir = make_judge_run(tmp_path, responses(), server.base_url, mode="batch")
        first = judge_cli(run_dir)  # a whole process: submits, polls once, exits
        assert first.returncode == 1 and "again later" in first.stderr
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
        still = grid(cfg, "--status", "--executor", "local")  # poll 2
        assert "is in_progress" in still.stdout, still.stdout
        done = grid(cfg, "--status", "--executor", "local")  # poll 3: completes, scores
        assert "judge batch finished" in done.stdout and " done " in done.stdout, done.stdout
        report = grid(cfg, "--executor", "local")
    assert server.created == 1 and server.chat_requests == 0 and set(server.paid.values()) == {1}
    assert len(scores_by_id(run_dir)) == 4 and (tmp_path / "batched" / "report" / "table.md").exists(), report.stdout
