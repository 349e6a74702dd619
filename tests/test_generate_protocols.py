"""The generation side of the papers' protocols: n samples per item with top_p, scored as the unbiased
pass@k; k-shot prompts drawn from a file by the seed."""
from __future__ import annotations

import math

import pytest

from helpers.common import write_jsonl
from helpers.eval_runs import eval_items, make_generation_run, make_judge_run
from lorafull.runs import read_jsonl


def test_pass_at_k_equals_its_combinatorial_definition():
    from lorafull.judge.scorers import pass_at_k, samples_score

    for n in (1, 5, 20, 50):
        for c in range(n + 1):
            for k in (1, 5, 10):
                if k <= n:
                    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)
    assert samples_score("code", [1.0, 0.0, None, 1.0], 1) == pytest.approx(0.5)  # c/n at k = 1
    assert samples_score("text", [0.5, None, 1.0], 1) == pytest.approx(0.75)
    assert samples_score("math", [None, None], 1) is None


def test_n_samples_with_top_p_reach_responses_and_are_scored_as_pass_at_k(tmp_path, tiny_final):
    from lorafull.generate.stage import generate_run
    from lorafull.judge.stage import judge_run

    items = eval_items(4)
    run_dir = make_generation_run(tmp_path, tiny_final, items, temperature=0.9, top_p=0.8, num_samples=5)
    stats = generate_run(run_dir, progress=False)
    rows = list(read_jsonl(run_dir / "responses.jsonl"))
    assert stats["generated"] == 4 and all(len(r["samples"]) == 5 and r["response"] == r["samples"][0] for r in rows)
    assert any(len(set(r["samples"])) > 1 for r in rows)  # sampled, not five copies of one answer

    # scoring: known per-sample outcomes (the answer "7" in 2 of 5 samples) -> pass@1 = 2/5, pass@2 = 0.7
    responses = [{"id": "m1", "class": "math", "question": "q", "std_answer": "7", "response": "7",
                  "samples": ["7", "3", "7", "no", "8"]}]
    for k, expected in ((1, 0.4), (2, 1 - math.comb(3, 2) / math.comb(5, 2))):
        judged = make_judge_run(tmp_path / f"k{k}", responses, None, kind="reference", pass_k=k)
        judge_run(judged, progress=False)
        (row,) = read_jsonl(judged / "scores.jsonl")
        assert row["score"] == pytest.approx(expected) and row["sample_scores"] == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_fewshot_examples_are_drawn_by_the_seed_and_precede_the_question(tmp_path):
    from lorafull.config import RunConfig
    from lorafull.generate.stage import prompt_question

    shots = write_jsonl(tmp_path / "shots.jsonl", [{"question": f"Q{i}?", "class": "math", "std_answer": f"A{i}"}
                                                   for i in range(20)])
    run = RunConfig(name="r")
    run.eval.fewshot, run.eval.fewshot_file = 5, str(shots)
    text = prompt_question(run, {"question": "What is 2 plus 2?"})
    blocks = text.split("\n\n")
    assert len(blocks) == 6 and blocks[-1] == "What is 2 plus 2?"
    assert all(b.startswith("Q") and "?\nA" in b for b in blocks[:5])
    assert prompt_question(run, {"question": "x"}).startswith("\n\n".join(blocks[:5]))  # the same shots for all
    run.train.seed = 7
    assert prompt_question(run, {"question": "x"}) != "\n\n".join(blocks[:5]) + "\n\nx"  # another seed, others


def test_protocol_settings_are_checked_at_load(tmp_path):
    from lorafull.config import ConfigError, load_study

    path = tmp_path / "s.yaml"
    path.write_text('base: {model: {name_or_path: "scratch:tiny-llama", tokenizer: tok}, eval: {num_samples: 5}}\n')
    with pytest.raises(ConfigError, match="eval.num_samples: 5 samples per item need"):
        load_study(path)
    path.write_text('base: {model: {name_or_path: "scratch:tiny-llama", tokenizer: tok}, train: {optimizer: sgd}}\n')
    with pytest.raises(ConfigError, match=r"s.yaml:1: base.train.optimizer: expected one of adamw, lion, got 'sgd'"):
        load_study(path)
