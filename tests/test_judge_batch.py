"""Batch judging (eval.judge.mode: batch) against a local Files + Batches server that fails the way the
Batch API does, through the real openai client: transient line errors in both of the API's forms,
permanent 400 lines, shuffled output, a batch refused for the enqueued-token limit, an expired batch
with partial output, a files endpoint answering 502, a crash between creating a batch and recording
it. Each ends with every item scored or marked with its reason, each request paid once, and the rows
the online judge writes for the same replies. Then the study's shared batches: several runs in one
batch, one poll per batch for the study, and a 150,000-request study cut into batches of 50,000."""
from __future__ import annotations

import json
import re

import pytest

from helpers.batch_server import FakeBatchServer
from helpers.eval_runs import judge_cli, make_judge_run, scores_by_id
from helpers.openai_server import FakeJudgeServer, expected_score
from lorafull.judge.batch_pool import POOL_FILE
from lorafull.judge.request import STRUCTURED_FORMAT
from lorafull.judge.stage import judge_run
from lorafull.runs import read_status

N = 8
KEEP = ("id", "class", "score", "samples", "reply", "tokens", "error", "error_kind")


def responses(markers: dict[int, str] | None = None, tag: str = "") -> list[dict]:
    markers = markers or {}
    return [{"id": i, "class": "brainstorming", "question": f"ideas {i}",
             "response": f"ITEM-{tag}{i} idea" + (f" {markers[i]}" if i in markers else "")} for i in range(N)]


def pool_state(run_dir) -> dict:
    (pool,) = (run_dir.parent.parent / "cache" / "judge_batches").iterdir()
    return json.loads((pool / POOL_FILE).read_text())


def judge_until_done(run_dir, calls: int = 15) -> tuple[dict, list[str]]:
    """Call the judge as the user (or --status) would, until the run is no longer waiting."""
    waits = []
    for _ in range(calls):
        summary = judge_run(run_dir, progress=False)
        if not summary.get("waiting"):
            return summary, waits
        waits.append(summary["waiting"])
        assert read_status(run_dir)["state"] == "waiting"
    raise AssertionError(f"still waiting after {calls} calls: {waits[-3:]}")


def online_rows(tmp_path, items: list[dict], **judge) -> dict:
    with FakeJudgeServer() as server:
        run_dir = make_judge_run(tmp_path / "online", items, server.base_url, **judge)
        judge_run(run_dir, progress=False)
    return scores_by_id(run_dir)


def server_tokens(items: list[dict]) -> int:
    """The fake server's own count of a line's enqueued tokens (characters / 4 of the line, plus
    max_tokens), for the largest of these items as the judge sends them."""
    from lorafull.config import JudgeConfig
    from lorafull.judge.batch_walk import request_line
    from lorafull.judge.prompts import build_messages, load_prompts

    prompt, cfg = load_prompts(None)["brainstorming"], JudgeConfig(model="gpt-3.5-turbo")
    lines = [request_line(cfg, "0" * 64, build_messages(prompt, it["question"], it["response"]), 0) for it in items]
    return max(len(json.dumps(line, ensure_ascii=False)) // 4 + cfg.max_tokens for line in lines)


# mode -> (server settings, markers by item, {item: (error_kind, reason)} of the items left unscored)
MODES = {
    "transient_output_lines": ({}, {1: "BATCH500x2", 4: "BATCH429x1", 6: "BATCH500x1"}, {}),
    "transient_error_file_lines": ({}, {2: "BATCHNULLx2", 5: "BATCHNULLx1"}, {}),
    "permanent_400_lines": ({}, {2: "BATCHFAIL", 5: "BATCHFAIL"},
                            {2: ("batch", "(400): invalid request"), 5: ("batch", "(400): invalid request")}),
    "shuffled_output": ({"shuffle": True}, {3: "BATCH500x1", 7: "BATCHNULLx1"}, {}),
    "refused_for_the_token_limit": ({"polls_to_complete": 2}, {}, {}),
    "expired_with_error_lines": ({"expire_after": 5, "expired_lines": "error"}, {}, {}),
    "expired_with_lines_missing": ({"expire_after": 5, "expired_lines": "missing"}, {}, {}),
    "files_502_once": ({"files_502": 1}, {}, {}),
    "a_line_refused_at_validation": ({}, {3: "BATCHINVALID"},
                                     {3: ("batch", "refused at validation: this line is not a valid request")}),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_item_is_scored_or_marked_paid_once_and_scored_as_online(tmp_path, mode):
    server_kw, markers, unscored = MODES[mode]
    items = responses(markers)
    if mode == "refused_for_the_token_limit":  # room for 6 of the 8 requests in progress
        server_kw = {**server_kw, "enqueued_token_limit": 6 * server_tokens(items)}
    with FakeBatchServer(**{"polls_to_complete": 1, **server_kw}) as server:
        run_dir = make_judge_run(tmp_path / "batch", items, server.base_url, mode="batch")
        summary, waits = judge_until_done(run_dir)
    rows, online = scores_by_id(run_dir), online_rows(tmp_path, items)
    assert set(rows) == {str(i) for i in range(N)}
    for i, (kind, reason) in unscored.items():
        assert rows[str(i)]["score"] is None and rows[str(i)]["error_kind"] == kind, rows[str(i)]
        assert reason in rows[str(i)]["error"], rows[str(i)]
    scored = {i: {k: r.get(k) for k in KEEP} for i, r in rows.items() if int(i) not in unscored}
    assert scored == {i: {k: r.get(k) for k in KEEP} for i, r in online.items() if int(i) not in unscored}
    assert all(rows[i]["cost"] == pytest.approx(online[i]["cost"] / 2) for i in scored)
    assert summary["unscored"] == len(unscored) and read_status(run_dir)["state"] == "done"
    # each answered request paid once, nothing asked online, nothing left in the pool
    assert set(server.paid.values()) == {1} and len(server.paid) == N - len(unscored)
    assert server.chat_requests == 0 and pool_state(run_dir)["runs"] == {} and pool_state(run_dir)["batches"] == []
    if mode == "refused_for_the_token_limit":
        assert server.refused_for_tokens >= 1 and any("enqueued-token limit" in w for w in waits), waits
        sizes = [(b["status"], b["request_counts"]["total"]) for b in server.batches.values()]
        assert sizes[0] == ("failed", N) and all(n <= N // 2 for _, n in sizes[1:]), sizes  # later, smaller
    if mode == "files_502_once":
        assert server.errors_502 == {"upload": 1, "content": 1}  # the client's own retry, nothing sent twice
        assert server.created == 1


def test_a_batch_in_progress_keeps_the_run_waiting_then_scores_every_item_at_half_price(tmp_path):
    with FakeBatchServer(polls_to_complete=3) as server:
        run_dir = make_judge_run(tmp_path, responses(), server.base_url, mode="batch")
        for polls in (0, 1, 2):  # submit (no poll), then two polls: still running
            waiting = judge_run(run_dir, progress=False)
            assert re.match(r"judge batch \S+ is (validating|in_progress)", waiting["waiting"]), waiting
            st = read_status(run_dir)  # waiting, not failed: nothing for --retry to do
            assert (st["state"], st["stage"]) == ("waiting", "judge") and st["error"] is None, st
            assert server.created == 1 and server.retrievals == polls
            assert list(pool_state(run_dir)["runs"]) == ["../../../runs/r1"]
        summary = judge_run(run_dir, progress=False)
    assert server.created == 1 and server.chat_requests == 0 and server.retrievals == 3
    assert len(server.paid) == N and set(server.paid.values()) == {1}
    scores = scores_by_id(run_dir)
    assert {i: r["score"] for i, r in scores.items()} == pytest.approx(
        {str(i): expected_score(f"ITEM-{i}") for i in range(N)})
    row = scores["0"]  # costed at half the online price: 0.25 / 0.75 USD per 1M tokens
    assert row["cost"] == pytest.approx((row["prompt_tokens"] * 0.25 + row["completion_tokens"] * 0.75) / 1e6)
    assert summary["unscored"] == 0 and read_status(run_dir)["state"] == "done"


def test_a_crash_between_creating_the_batch_and_recording_it_finds_the_same_batch(tmp_path):
    with FakeBatchServer(polls_to_complete=2) as server:
        run_dir = make_judge_run(tmp_path, responses(), server.base_url, mode="batch")
        first = judge_cli(run_dir)  # a whole process: uploads, creates, exits waiting
        assert first.returncode == 0 and "waiting: judge batch" in first.stdout, first.stdout + first.stderr
        pool = next((run_dir.parent.parent / "cache" / "judge_batches").iterdir()) / POOL_FILE
        state = json.loads(pool.read_text())
        (batch_id,) = [b.pop("batch_id") for b in state["batches"]]  # the create call answered, then the crash
        pool.write_text(json.dumps(state))
        summary, _ = judge_until_done(run_dir)
    assert server.created == 1 and list(server.batches) == [batch_id] and summary["unscored"] == 0
    assert len(scores_by_id(run_dir)) == N and set(server.paid.values()) == {1}


def test_transient_failures_past_max_retries_are_marked_and_asked_again_when_the_run_is_judged_again(tmp_path):
    with FakeBatchServer(polls_to_complete=1) as server:
        run_dir = make_judge_run(tmp_path, responses({2: "BATCH500x3"}), server.base_url, mode="batch", max_retries=1)
        summary, _ = judge_until_done(run_dir)  # asked twice (1 + max_retries), failed twice
        row = scores_by_id(run_dir)["2"]
        assert summary["unscored"] == 1 and row["error_kind"] == "transport", row
        assert "gave up after 2 batch rounds: batch line failed (500)" in row["error"], row
        again, _ = judge_until_done(run_dir)  # judged again: new rounds, the third failure then an answer
    assert again["unscored"] == 0 and scores_by_id(run_dir)["2"]["score"] == expected_score("ITEM-2")
    assert set(server.paid.values()) == {1} and len(server.paid) == N and sum(server.failed_runs.values()) == 3


def test_a_batch_refused_for_no_stated_line_stops_the_judge_and_the_next_call_sends_anew(tmp_path):
    with FakeBatchServer(polls_to_complete=1) as server:
        run_dir = make_judge_run(tmp_path, responses({3: "BATCHBADFILE"}), server.base_url, mode="batch")
        assert judge_cli(run_dir).returncode == 0 and server.created == 1  # sent, waiting
        refused = judge_cli(run_dir)
        assert refused.returncode == 1 and "failed: the input file could not be read" in refused.stderr, \
            refused.stderr
        assert read_status(run_dir)["state"] == "failed"
        again = judge_cli(run_dir)  # not stuck on the refused batch: sent anew (and waiting on it)
    assert again.returncode == 0 and "waiting" in again.stdout and server.created == 2 and not server.paid


def test_a_batch_of_an_earlier_version_is_taken_over_not_sent_again(tmp_path):
    import openai

    from lorafull.config import load_run_config
    from lorafull.judge.batch_walk import request_line, walk
    from lorafull.judge.cache import JudgeCache
    from lorafull.judge.stage import load_responses

    with FakeBatchServer(polls_to_complete=1) as server:
        run_dir = make_judge_run(tmp_path, responses(), server.base_url, mode="batch")
        # what an earlier version left in the run folder: its batch's input file and record
        cfg = load_run_config(run_dir).eval.judge
        cache = JudgeCache(cfg.cache)
        needed = walk(load_responses(run_dir), cfg, cache, {}).needed
        cache.close()
        sent = run_dir / "judge_batch_input.jsonl"
        sent.write_text("".join(json.dumps(request_line(cfg, k, m, a)) + "\n" for k, (m, a) in needed.items()))
        client = openai.OpenAI(api_key="local", base_url=server.base_url)
        file_id = client.files.create(file=sent.open("rb"), purpose="batch").id
        batch_id = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                         completion_window="24h").id
        (run_dir / "judge_batch.json").write_text(json.dumps({"input_file_id": file_id, "batch_id": batch_id}))
        summary, _ = judge_until_done(run_dir)
    assert server.created == 1 and summary["unscored"] == 0 and set(server.paid.values()) == {1}
    assert not sent.exists() and not (run_dir / "judge_batch.json").exists()


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
        summary, _ = judge_until_done(run_dir)  # round 1 ends unreadable for 2 items: round 2 asks them
    assert server.created == 2 and server.chat_requests == 0 and set(server.paid.values()) == {1}
    assert len(server.lines) == sum(asked_online.values()) == N + 2  # what the online judge bought, no more
    assert [line["temperature"] for line in server.lines[N:]] == [0.7, 0.7]  # the online re-ask's settings
    if structured:
        assert all(line["response_format"] == STRUCTURED_FORMAT for line in server.lines)
    batch_rows, online_rows_ = scores_by_id(run_dir), scores_by_id(online)
    assert {i: {k: r.get(k) for k in KEEP} for i, r in batch_rows.items()} == \
        {i: {k: r.get(k) for k in KEEP} for i, r in online_rows_.items()}
    assert summary["unscored"] == 0


@pytest.mark.slow
def test_launch_grid_status_polls_the_batch_and_the_report_follows(tmp_path, tiny_tokenizer_dir):
    from helpers.grid import grid, make_data, study_dict, write_study

    files = make_data(tmp_path, tiny_tokenizer_dir)
    with FakeBatchServer(polls_to_complete=2) as server:
        judge = {"kind": "openai", "mode": "batch", "base_url": server.base_url, "model": "judge",
                 "prices": {"judge": {"input": 1.0, "output": 2.0}}}
        cfg = write_study(tmp_path / "b.yaml", study_dict(tmp_path, files, name="batched",
                                                          base={"eval": {"judge": judge}}, runs=[{"name": "r"}]))
        first = grid(cfg, "--executor", "local", check=False)  # trains, generates, submits the batch
        run_dir = tmp_path / "batched" / "runs" / "r"
        assert server.created == 1 and server.retrievals == 0, first.stdout + first.stderr
        assert first.returncode == 0 and read_status(run_dir)["state"] == "waiting", first.stdout + first.stderr
        table = tmp_path / "batched" / "report" / "table.md"
        early = table.read_text()  # the report job ran after the eval job: the run shows as waiting
        assert "waiting" in early, early
        still = grid(cfg, "--status", "--executor", "local")  # poll 1
        assert "is in_progress" in still.stdout and " waiting " in still.stdout, still.stdout
        assert "1 waiting" in still.stdout and "failed" not in still.stdout, still.stdout
        assert grid(cfg, "--retry", "--executor", "local").stdout.count("0 jobs submitted") == 1  # not a failure
        done = grid(cfg, "--status", "--executor", "local")  # poll 2: completes, scores, writes the report
        assert "judge batch finished" in done.stdout and "and the report follow" in done.stdout, done.stdout
        assert " done " in done.stdout and "1 done" in done.stdout, done.stdout
        again = grid(cfg, "--executor", "local")
    assert server.created == 1 and server.retrievals == 2 and server.chat_requests == 0
    assert set(server.paid.values()) == {1}
    assert len(scores_by_id(run_dir)) == 4 and table.read_text() != early and "waiting" not in table.read_text()
    assert "nothing to do" in again.stdout, again.stdout
