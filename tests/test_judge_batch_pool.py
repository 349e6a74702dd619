"""The study's judge batches (lorafull.judge.batch_pool): the runs of a study share batches, --status
polls once per batch whatever the number of runs, batches stay within the request, size and
enqueued-token limits, and a 150,000-request study goes out as three batches of at most 50,000.
Against the local Files + Batches server, through the real openai client."""
from __future__ import annotations

import json

import pytest

from helpers.batch_server import FakeBatchServer
from helpers.common import write_jsonl
from helpers.eval_runs import make_judge_run, scores_by_id
from helpers.openai_server import expected_score
from lorafull.config import JudgeConfig, load_run_config
from lorafull.judge.batch_pool import poll_study
from lorafull.judge.batch_size import Queued, batch_length, request_tokens, tokenizer_for
from lorafull.judge.limits import estimate_tokens
from lorafull.judge.stage import judge_run
from lorafull.runs import Stage, read_status, status as run_status

N = 8


def responses(tag: str, n: int = N) -> list[dict]:
    return [{"id": i, "class": "brainstorming", "question": f"ideas {i}", "response": f"ITEM-{tag}{i} idea"}
            for i in range(n)]


def study_runs(run_dirs) -> list:
    return [(d, load_run_config(d).eval.judge) for d in run_dirs]


def test_the_runs_of_a_study_share_one_batch_and_status_polls_once_per_batch(tmp_path):
    with FakeBatchServer(polls_to_complete=2) as server:
        # r1 and r2 ask the judge the same prompts (one request each), r3 others
        runs = [make_judge_run(tmp_path, responses(tag), server.base_url, name=name, mode="batch")
                for name, tag in (("r1", "a"), ("r2", "a"), ("r3", "b"))]
        for later in runs[1:]:  # still training when r1 reaches the judge
            run_status.queued(later, Stage.TRAIN)
        first = judge_run(runs[0], progress=False)["waiting"]
        assert "waiting for 2 more run(s) of the study to reach the judge (r2, r3)" in first, first
        assert "waiting for 1 more run(s) of the study to reach the judge (r3)" in \
            judge_run(runs[1], progress=False)["waiting"]
        assert server.created == 0
        last = judge_run(runs[2], progress=False)["waiting"]  # the last one: everything goes, together
        assert server.created == 1 and len(server.lines) == 2 * N and "is validating" in last, last
        polled = poll_study(study_runs(runs))  # --status: one call for the study's one batch
        assert polled.polls == 1 and polled.settled == [] and server.retrievals == 1
        assert "1 batch(es) in flight" in polled.notes[0] and "3 run(s) waiting on it" in polled.notes[0], polled.notes
        assert all("is in_progress" in read_status(d)["waiting_for"] for d in runs)  # what --status shows per run
        polled = poll_study(study_runs(runs))
        assert polled.polls == 1 and sorted(d.name for d in polled.settled) == ["r1", "r2", "r3"]
        summaries = [judge_run(d, progress=False) for d in runs]  # scored from the cache: no call at all
    assert server.retrievals == 2 and server.created == 1 and server.chat_requests == 0
    assert all(s["unscored"] == 0 and not s.get("waiting") for s in summaries)
    assert set(server.paid.values()) == {1} and len(server.paid) == 2 * N
    for run_dir, tag in zip(runs, "aab"):  # each run's own scores, in its own folder
        assert {i: r["score"] for i, r in scores_by_id(run_dir).items()} == pytest.approx(
            {str(i): expected_score(f"ITEM-{tag}{i}") for i in range(N)})
        assert read_status(run_dir)["state"] == "done"


def test_a_run_waits_for_the_others_at_most_batch_wait_s(tmp_path):
    with FakeBatchServer(polls_to_complete=1) as server:
        run_dir = make_judge_run(tmp_path, responses("a"), server.base_url, mode="batch", batch_wait_s=0)
        other = make_judge_run(tmp_path, responses("b"), server.base_url, name="r2", mode="batch")
        run_status.started(other, Stage.TRAIN)
        judge_run(run_dir, progress=False)
    assert server.created == 1 and len(server.lines) == N


def test_batches_stay_under_the_enqueued_token_limit_one_after_another(tmp_path):
    items = responses("a")
    with FakeBatchServer(polls_to_complete=1) as server:
        probe = make_judge_run(tmp_path / "probe", items, server.base_url, mode="batch")
        while judge_run(probe, progress=False).get("waiting"):  # only to read the requests the judge sends
            pass
        per_request = max(request_tokens(body) for body in server.lines)
        limit = 3 * per_request + per_request // 2  # room for three requests in flight
        lines_before, server.busy_at_create = len(server.lines), []
        run_dir = make_judge_run(tmp_path / "limited", responses("b"), server.base_url, mode="batch",
                                 enqueued_token_limit=limit)
        waits = []
        for _ in range(8):
            summary = judge_run(run_dir, progress=False)
            if not summary.get("waiting"):
                break
            waits.append(summary["waiting"])
    sizes = [b["request_counts"]["total"] for b in list(server.batches.values())[1:]]
    assert sizes == [3, 3, 2] and server.busy_at_create == [0, 0, 0], (sizes, server.busy_at_create)
    assert any("waiting for room under eval.judge.enqueued_token_limit" in w for w in waits), waits
    assert summary["unscored"] == 0 and len(server.lines) == lines_before + N and set(server.paid.values()) == {1}


def test_a_round_is_cut_at_the_request_and_size_limits():
    queue = [Queued.of({"custom_id": f"k{i}", "body": {"model": "judge", "messages": [
        {"role": "user", "content": "x" * 400}], "max_tokens": 10}}, 0.0) for i in range(10)]
    size = queue[0].size
    assert batch_length(queue, 4, 10**9, float("inf")) == 4
    assert batch_length(queue, 100, 3 * size, float("inf")) == 3  # bytes: whole lines only
    assert batch_length(queue, 100, size // 2, float("inf")) == 1  # a line alone over the size still goes
    assert batch_length(queue, 100, 10**9, 2.5 * queue[0].tokens) == 2
    assert batch_length(queue, 100, 10**9, queue[0].tokens - 1) == 0  # tokens: waits for room


def test_enqueued_tokens_count_the_prompt_plus_max_tokens():
    messages = [{"role": "system", "content": "Rate the answer."}, {"role": "user", "content": "答案是 4。" * 10}]
    body = {"model": "judge", "messages": messages, "max_tokens": 256}
    assert tokenizer_for("judge")[0] is None  # not an OpenAI model: characters / 4, one per CJK character
    assert request_tokens(body) == estimate_tokens(messages, 256)
    encoding, how = tokenizer_for("gpt-3.5-turbo")
    openai_body = {**body, "model": "gpt-3.5-turbo"}
    if encoding is None:  # tiktoken's encoding not cached and not reachable (offline): the estimate, said so
        assert how.startswith("characters / 4 (tiktoken could not load cl100k_base")
        assert request_tokens(openai_body) == estimate_tokens(messages, 256)
    else:
        prompt = sum(len(encoding.encode(m["content"])) for m in messages)
        assert how == "tiktoken cl100k_base" and request_tokens(openai_body) == prompt + 4 * 2 + 3 + 256


@pytest.mark.slow
def test_a_150000_request_study_goes_out_in_three_batches_of_at_most_50000(tmp_path):
    """Two runs of 75,000 small items: run 1 fills one batch (its other 25,000 wait for run 2), run 2
    the next two; one --status poll per batch reads all 150,000 replies."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"class": "c", "prompt": "Rate it."}])
    n = 75_000
    with FakeBatchServer(polls_to_complete=1) as server:
        runs = [make_judge_run(tmp_path, [{"id": i, "class": "c", "question": "", "response": f"ITEM-{tag}{i}"}
                                          for i in range(n)], server.base_url, name=name, mode="batch",
                               model="judge", prompts=str(prompts), max_tokens=8)
                for name, tag in (("r1", "a"), ("r2", "b"))]
        run_status.queued(runs[1], Stage.TRAIN)
        first = judge_run(runs[0], progress=False)["waiting"]
        assert server.created == 1 and "25000 request(s) queued" in first, first
        judge_run(runs[1], progress=False)
        sizes = [b["request_counts"]["total"] for b in server.batches.values()]
        ids = [body["messages"][1]["content"] for body in server.lines]
        polled = poll_study(study_runs(runs))
    assert sizes == [50_000, 50_000, 50_000] and len(ids) == len(set(ids)) == 2 * n
    # batch 1 was polled (and read) by run 2's judge, the other two by --status: each batch once
    assert polled.polls == 2 and sorted(server.polls.values()) == [1, 1, 1]
    assert sorted(d.name for d in polled.settled) == ["r1", "r2"]
    assert sum(server.paid.values()) == 2 * n and set(server.paid.values()) == {1}
    state = json.loads(next((tmp_path / "study" / "cache" / "judge_batches").iterdir()).joinpath("pool.json").read_text())
    assert state["batches"] == [] and [b["requests"] for b in state["ended"]] == sizes
    assert max(b["bytes"] for b in state["ended"]) <= 200 * 10**6
