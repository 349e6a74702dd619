"""Judge-to-judge agreement (lorafull.judge.agreement, python -m lorafull.judge.agree): the statistics
against a hand computation and scipy.stats, the stratified bootstrap, the runs' order, and the command
on a study judged by the offline scorers and by an OpenAI-compatible server over real HTTP.

    pytest tests/test_judge_agree.py
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

from helpers.common import REPO, job_env, write_jsonl
from helpers.openai_server import FakeJudgeServer
from lorafull.judge.agreement import JointTable, _draws, agreement, same_order

# five items; worked by hand below
A = [0.0, 0.5, 0.5, 1.0, 0.8]
B = [0.1, 0.4, 0.6, 0.9, 0.9]


def test_statistics_equal_a_hand_computation():
    stats = JointTable(A, B).statistics(JointTable(A, B).counts())
    # Spearman: average ranks A = [1, 2.5, 2.5, 5, 4], B = [1, 2, 3, 4.5, 4.5]; both have mean 3;
    # deviations A = [-2, -.5, -.5, 2, 1], B = [-2, -1, 0, 1.5, 1.5]; covariance sum 4 + .5 + 0 + 3 + 1.5 = 9,
    # squares 9.5 and 9.5: rho = 9 / 9.5
    assert stats["spearman"] == pytest.approx(9 / 9.5, abs=1e-12)
    # Kendall tau-b: of the 10 pairs, 8 are concordant, none discordant, (2,3) tied in A, (4,5) tied in B:
    # (8 - 0) / sqrt((10 - 1) (10 - 1)) = 8 / 9
    assert stats["kendall"] == pytest.approx(8 / 9, abs=1e-12)
    # mean absolute difference: every pair differs by 0.1
    assert stats["mean_abs_diff"] == pytest.approx(0.1, abs=1e-12)
    # kappa on fifths: bins A = [0, 2, 2, 4, 4], B = [0, 2, 3, 4, 4]; agreement 4/5; marginals A {0: 1, 2: 2, 4: 2},
    # B {0: 1, 2: 1, 3: 1, 4: 2}: chance (1*1 + 2*1 + 2*2) / 25 = 7/25; kappa = (0.8 - 0.28) / 0.72
    assert stats["kappa"] == pytest.approx((0.8 - 0.28) / 0.72, abs=1e-12)


def test_correlations_equal_scipy_with_many_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    a = rng.integers(0, 6, 300) / 5  # a judge's coarse scores: many ties
    b = np.clip(a + rng.normal(0, 0.25, 300), 0, 1).round(1)
    table = JointTable(a, b)
    ours = table.statistics(table.counts())
    assert ours["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert ours["kendall"] == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)  # tau-b, scipy's default
    assert ours["mean_abs_diff"] == pytest.approx(float(np.mean(np.abs(a - b))), abs=1e-12)
    const = JointTable([0.5] * 4, [0.1, 0.2, 0.3, 0.4])
    assert const.statistics(const.counts())["spearman"] is None  # no variance: undefined, never a number


def test_the_bootstrap_resamples_within_each_class_and_is_repeatable():
    classes = ["math"] * 3 + ["rewrite"] * 7
    draws = _draws(classes, np.random.default_rng(0), 50)
    assert (draws[:, :3].sum(axis=1) == 3).all() and (draws[:, 3:].sum(axis=1) == 7).all()
    rng = np.random.default_rng(3)
    a = rng.random(40)
    b = np.clip(a + rng.normal(0, 0.2, 40), 0, 1)
    labels = ["x", "y"] * 20
    first, again = agreement(a, b, labels, resamples=300), agreement(a, b, labels, resamples=300)
    assert first == again
    for name in ("spearman", "kendall", "mean_abs_diff", "kappa"):
        s = first[name]
        assert s["low"] <= s["value"] <= s["high"], (name, s)
    assert first["items"] == 40


def test_runs_ranked_alike_or_not():
    same = same_order({"r1": 0.2, "r2": 0.5, "r3": 0.9}, {"r1": 0.1, "r2": 0.3, "r3": 0.4})
    assert same["same_order"] and same["kendall"] == pytest.approx(1.0)
    swapped = same_order({"r1": 0.2, "r2": 0.5, "r3": 0.9}, {"r1": 0.1, "r2": 0.6, "r3": 0.4})
    assert not swapped["same_order"] and swapped["swapped"] == ["r2 / r3"]
    assert swapped["kendall"] == pytest.approx(1 / 3)  # 2 concordant, 1 discordant of 3 pairs
    assert same_order({"r1": 0.2}, {"r1": 0.4, "r2": 0.1})["same_order"] is None  # one run in common: no order


ANSWERS = [
    {"id": "m1", "class": "math", "question": "ITEM-m1 What is 2+3?", "std_answer": "5", "response": "5"},
    {"id": "m2", "class": "math", "question": "ITEM-m2 What is 4+4?", "std_answer": "8", "response": "9"},
    {"id": "m3", "class": "math", "question": "ITEM-m3 What is 1+1?", "std_answer": "2", "response": "2"},
    {"id": "w1", "class": "rewrite", "question": "ITEM-w1 Repeat: cat", "std_answer": "cat cat", "response": "cat cat"},
    {"id": "w2", "class": "rewrite", "question": "ITEM-w2 Repeat: dog", "std_answer": "dog dog", "response": "dog"},
    {"id": "w3", "class": "rewrite", "question": "ITEM-w3 Repeat: owl", "std_answer": "owl owl", "response": "cow"},
]


def test_the_command_compares_the_offline_scorers_with_an_api_judge(make_run, tmp_path):
    runs = [make_run(name) for name in ("r1", "r2")]
    for k, run in enumerate(runs):  # the second run answers differently
        write_jsonl(run / "responses.jsonl", [dict(a, response=a["response"] * (k + 1)) for a in ANSWERS])
    judge_file = tmp_path / "api-judge.yaml"
    with FakeJudgeServer() as server:
        judge_file.write_text(yaml.safe_dump({"kind": "openai", "model": "judge-x", "base_url": server.base_url,
                                              "api_key_env": "LORAFULL_AGREE_TEST_KEY", "parse_retries": 0}))
        study_dir = runs[0].parent.parent
        command = [sys.executable, "-m", "lorafull.judge.agree", str(study_dir), "--judge", "reference",
                   "--judge", str(judge_file), "--no-progress"]
        for _ in range(2):  # the second time finds every score written: nothing is asked again
            out = subprocess.run(command, capture_output=True, text=True, env=job_env(LORAFULL_AGREE_TEST_KEY="k"),
                                 cwd=REPO, timeout=300)
            assert out.returncode == 0, out.stdout + out.stderr
        asked = server.stats.as_dict()["hits"]
    assert asked == {f"ITEM-{a['id']}": 2 for a in ANSWERS}  # each answer of both runs judged once
    result = json.loads((study_dir / "agreement" / "reference-vs-api-judge.json").read_text())
    # recompute from the score files the command wrote: the same numbers
    rows = {}
    for side in ("reference", "api-judge"):
        for run in ("r1", "r2"):
            for line in (study_dir / "agreement" / "judges" / side / f"{run}.jsonl").read_text().splitlines():
                r = json.loads(line)
                rows.setdefault((run, r["id"]), {})[side] = r
    paired = [(v["reference"]["score"], v["api-judge"]["score"], v["reference"]["class"]) for v in rows.values()]
    expected = agreement([p[0] for p in paired], [p[1] for p in paired], [p[2] for p in paired])
    assert result["overall"] == expected
    assert set(result["per_class"]) == {"math", "rewrite"} and result["overall"]["items"] == 12
    assert "judge A: reference" in out.stdout and "runs ranked the same way" in out.stdout
    assert result["runs"]["runs"] == 2 and isinstance(result["runs"]["same_order"], bool)
    for stat in result["overall"].values():
        if isinstance(stat, dict) and stat["value"] is not None:
            assert math.isfinite(stat["value"])


def test_a_subset_takes_the_first_answers_of_every_class():
    from lorafull.judge.agree import first_per_class

    ordered = sorted(ANSWERS, key=lambda a: a["class"])  # an eval set ordered by class, as the demo's
    assert [a["id"] for a in first_per_class(ordered, 2)] == ["m1", "m2", "w1", "w2"]
    assert first_per_class(ordered, None) == ordered
