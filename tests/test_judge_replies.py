"""Judge replies read as a careful human would: a corpus of replies (tests/data/judge_replies.jsonl,
Chinese and English, each with the score a human reads in it, or null) read by the parser and END TO
END: the local OpenAI-compatible server answers each item with its corpus reply, the real openai
client carries it over HTTP, and scores.jsonl must hold the human's score -- or null with the raw
reply after asking again, never a 0.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.eval_runs import make_judge_run, scores_by_id
from helpers.openai_server import FakeJudgeServer
from lorafull.judge.request import STRUCTURED_FORMAT
from lorafull.judge.parse import read_score, read_structured
from lorafull.judge.stage import judge_run
from lorafull.runs import read_jsonl

CORPUS = list(read_jsonl(Path(__file__).parent / "data" / "judge_replies.jsonl"))
_CJK = re.compile(r"[\u4e00-\u9fff]")


def test_the_corpus_is_big_and_mixed():
    assert len(CORPUS) >= 40
    chinese = [c for c in CORPUS if _CJK.search(c["reply"])]
    assert len(chinese) >= 10 and len(CORPUS) - len(chinese) >= 10
    assert sum(c["score"] is None for c in CORPUS) >= 10  # and the unreadable ones in both languages
    assert any(c["score"] is None for c in chinese)


@pytest.mark.parametrize("case", CORPUS, ids=[c["note"] for c in CORPUS])
def test_each_reply_reads_as_a_human_reads_it(case):
    reading = read_score(case["reply"])
    if case["score"] is None:
        assert reading.score is None and reading.problem
    else:
        assert reading.score == pytest.approx(case["score"], abs=1e-12)


@pytest.mark.parametrize("reply, problem", [
    ("Score: N/A - 0 out of 1 criteria could be checked", "n/a"), ("Score: 1.05", "out of range"),
    ("Score: 0.8\nScore: 0.4", "conflicting scores"), ("Looks fine to me.", "no score"),
])
def test_the_reason_a_reply_is_unreadable_is_kept(reply, problem):
    assert read_score(reply).problem == problem


def test_the_issue_examples_read_right():
    assert read_score("Score: N/A - 0 out of 1 criteria could be checked").score is None
    assert read_score("Score: 1.05").score is None
    assert read_score("分数：3分（满分5分）").score == pytest.approx(0.6)
    assert read_score("Score: 0.9 (the reference itself would get score: 0.1)").score == pytest.approx(0.9)
    assert read_score("Score: 1e-3").score == pytest.approx(0.001)


def _corpus_run(tmp_path, server, **judge):
    responses = [{"id": f"c{i}", "class": "open qa", "question": "Q?", "response": f"ITEM-c{i} answer"}
                 for i in range(len(CORPUS))]
    return make_judge_run(tmp_path, responses, server.base_url, **judge)


def test_the_corpus_end_to_end_through_the_judge(tmp_path):
    replies = {f"ITEM-c{i}": [c["reply"]] for i, c in enumerate(CORPUS)}
    with FakeJudgeServer(replies=replies) as server:
        run_dir = _corpus_run(tmp_path, server, parse_retries=1)
        summary = judge_run(run_dir, progress=False)
        stats = server.stats.as_dict()
    rows = scores_by_id(run_dir)
    assert len(rows) == len(CORPUS)
    for i, case in enumerate(CORPUS):
        row, hits = rows[f"c{i}"], stats["hits"][f"ITEM-c{i}"]
        if case["score"] is None:  # asked again once (parse_retries: 1), then null with the raw reply
            assert row["score"] is None and row["reply"] == case["reply"] and row["unreadable"], case
            assert hits == 2 and row["replies"] == [case["reply"]] * 2
        else:
            assert row["score"] == pytest.approx(case["score"], abs=1e-12), case
            assert hits == 1 and "unreadable" not in row
    assert summary["unscored"] == sum(c["score"] is None for c in CORPUS)
    assert all(f is None for f in stats["response_formats"])  # free text unless structured: true


def test_a_reply_readable_on_the_second_ask_is_scored(tmp_path):
    replies = {"ITEM-c0": ["Score: N/A", "Score: 0.4"], "ITEM-c1": ["分数：不适用", "得分：8/10"]}
    with FakeJudgeServer(replies=replies) as server:
        responses = [{"id": f"c{i}", "class": "open qa", "question": "Q?", "response": f"ITEM-c{i}"} for i in range(2)]
        run_dir = make_judge_run(tmp_path, responses, server.base_url)
        judge_run(run_dir, progress=False)
    rows = scores_by_id(run_dir)
    assert rows["c0"]["score"] == pytest.approx(0.4) and rows["c1"]["score"] == pytest.approx(0.8)
    assert rows["c1"]["replies"] == replies["ITEM-c1"]


STRUCTURED = [
    ('{"score": 0.7, "reason": "mostly right"}', 0.7),
    ('{"score": 0, "reason": "wrong answer"}', 0.0),
    ('{"score": 1, "reason": "完全正确"}', 1.0),
    ('{"score": 1.5, "reason": "too generous"}', None),  # out of range: not clamped
    ('{"score": "0.7", "reason": "a string"}', None),  # not a number
    ('{"score": 0.7}', None),  # no reason
    ("Score: 0.7", None),  # not JSON at all
    ('{"score": null, "reason": "cannot tell"}', None),
]


def test_structured_replies_are_requested_and_validated(tmp_path):
    replies = {f"ITEM-c{i}": [text] for i, (text, _) in enumerate(STRUCTURED)}
    with FakeJudgeServer(replies=replies) as server:
        responses = [{"id": f"c{i}", "class": "open qa", "question": "Q?", "response": f"ITEM-c{i}"}
                     for i in range(len(STRUCTURED))]
        run_dir = make_judge_run(tmp_path, responses, server.base_url, structured=True, parse_retries=0)
        judge_run(run_dir, progress=False)
        stats = server.stats.as_dict()
    assert stats["response_formats"] and all(f == STRUCTURED_FORMAT for f in stats["response_formats"])
    rows = scores_by_id(run_dir)
    for i, (text, expected) in enumerate(STRUCTURED):
        assert read_structured(text).score == expected
        if expected is None:
            assert rows[f"c{i}"]["score"] is None and rows[f"c{i}"]["reply"] == text
        else:
            assert rows[f"c{i}"]["score"] == pytest.approx(expected)
