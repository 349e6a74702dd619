"""Score parsing, category normalisation, prompt files and the macro average (no server needed)."""
from __future__ import annotations

import json

import pytest

from helpers.common import need_shared
from lorafull.judge.limits import TokenBucket, estimate_tokens
from lorafull.judge.parse import parse_score
from lorafull.judge.prompts import (DEFAULT_PROMPTS, PromptError, build_messages, check_classes, load_prompts,
                                    normalize_class)
from lorafull.judge.summary import summarize


@pytest.mark.parametrize("reply, expected", [
    ("得分: 0.8", 0.8), ("得分：0.8", 0.8), ("Score: 0.8", 0.8), ("0.8/1", 0.8), ("80%", 0.8), ("8/10", 0.8),
    ("score 4 out of 5", 0.8), ("0.8", 0.8), ("**Score:** 0.75", 0.75), ("0.8。", 0.8),
    ("The answer misses the second step.\n得分: 0.5", 0.5), ("评分：7/10分", 0.7), ("Score (0-1): 0.7", 0.7),
    ("I give it 3 points out of 5.", 0.6), ("得分：1分", 1.0), ("Rating: 7/10", 0.7), ("得分: 0", 0.0),
    ("Score: 65%", 0.65),
])
def test_scores_in_many_formats(reply, expected):
    assert parse_score(reply) == pytest.approx(expected)


# a number off the 0..1 scale without a scale of its own is out of range: never re-read as tenths or percent
@pytest.mark.parametrize("reply", ["", "   ", "I cannot judge this answer.", "得分: 1.5/1", "Score: -1",
                                   "得分: 250", "Score: 7/0", "Rating: 7", "Score: 65"])
def test_unreadable_or_out_of_range_is_none_never_zero(reply):
    assert parse_score(reply) is None


def test_class_names_are_normalised():
    assert normalize_class("open QA") == normalize_class("open qa") == normalize_class("open\u00a0qa") == "open qa"
    assert normalize_class("  Closed_QA ") == "closed qa"


def test_belle_and_default_prompt_files_cover_the_eval_classes():
    belle = need_shared("belle_eval")
    classes = {json.loads(l)["class"] for l in (belle / "eval_sample.jsonl").read_text().splitlines()}
    for path in (belle / "eval_prompt.json", DEFAULT_PROMPTS):
        table = load_prompts(path)
        check_classes(classes, table, path)
        assert "translation" in table
        assert table["math"].uses_reference and not table["generation"].uses_reference
    with pytest.raises(PromptError, match=r"'poetry'.*known classes: .*translation"):
        check_classes(classes | {"poetry"}, load_prompts(None))


def test_reference_answer_only_where_the_protocol_uses_it():
    table = load_prompts(None)
    with_ref = build_messages(table["closed qa"], "Q?", "A.", "REF-ANSWER")
    assert "REF-ANSWER" in with_ref[1]["content"] and with_ref[0]["content"] == table["closed qa"].prompt
    assert "REF-ANSWER" not in build_messages(table["generation"], "Q?", "A.", "REF-ANSWER")[1]["content"]
    assert "Reference" not in build_messages(table["closed qa"], "Q?", "A.", "  ")[1]["content"]


def test_bad_prompt_file_names_the_line(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"class": "math", "prompt": "x"}\n{"class": "code"\n', encoding="utf-8")
    with pytest.raises(PromptError, match=r"p.jsonl:2"):
        load_prompts(bad)


def test_macro_average_by_hand():
    rows = [{"class": "open qa", "score": 1.0}, {"class": "open\u00a0QA", "score": 0.0},  # open qa: 0.5
            {"class": "rewrite", "score": 0.8}, {"class": "rewrite", "score": None},  # rewrite: 0.8
            {"class": "math", "score": 1.0}, {"class": "code", "score": 0.0}, {"class": "code", "score": 0.0}]
    s = summarize(rows)
    assert s["categories"]["open qa"] == pytest.approx(0.5)
    assert s["others"] == pytest.approx(1 / 3)  # math and code items pooled, as the paper
    assert s["average"] == pytest.approx((0.5 + 0.8 + 1 / 3) / 3)
    assert s["unscored"] == 1 and s["scored"] == 6 and s["cost"] is None


def test_token_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate_per_minute=600)  # 10/s, burst 10
    bucket.take(10)
    assert bucket.wait_s(5) == pytest.approx(0.5, abs=0.05)
    assert estimate_tokens([{"content": "你好" * 10}], max_tokens=16) >= 36


def test_tokens_per_minute_limit_holds_back_requests():
    import asyncio
    import time

    from lorafull.judge.limits import RateLimiter

    async def admit_all() -> float:
        limiter = RateLimiter(concurrency=32, tokens_per_minute=60_000)  # 1,000 tokens/s, burst 10,000
        t0 = time.monotonic()
        for _ in range(12):  # 12,000 tokens: 10,000 from the burst, 2,000 more need 2 s of refill
            await limiter.acquire(1_000)
        return time.monotonic() - t0

    assert asyncio.run(admit_all()) >= 1.9


def test_settling_returns_unused_tokens():
    from lorafull.judge.limits import RateLimiter

    limiter = RateLimiter(concurrency=1, tokens_per_minute=60_000)
    limiter.tokens.take(10_000)
    limiter.settle(est_tokens=5_000, used_tokens=1_000)  # the request used less than estimated
    assert limiter.tokens.wait_s(4_000) == pytest.approx(0.0, abs=0.01)
