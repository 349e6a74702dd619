"""`python -m lorafull.evaluate`: generate -> judge on a tiny model; and the offline reference judge."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers.common import REPO, need_shared
from helpers.openai_server import FakeJudgeServer
from helpers.eval_runs import make_generation_run
from helpers.eval_runs import make_judge_run
from helpers.eval_runs import scores_by_id
from lorafull.config import ConfigError, load_run_config, save_run_config
from lorafull.judge.stage import judge_run
from lorafull.runs import read_status


def _set_judge(run_dir, **judge):
    cfg = load_run_config(run_dir)
    for k, v in judge.items():
        setattr(cfg.eval.judge, k, v)
    save_run_config(cfg, run_dir, "sig00000")


def _belle_items(n: int) -> list[dict]:
    lines = (need_shared("belle_eval", "eval_sample.jsonl")).read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines]
    by_class = {}
    for it in items:  # one item per class: short questions keep the tiny model fast
        by_class.setdefault(it["class"], it)
    return list(by_class.values())[:n]


def test_evaluate_runs_generation_then_judge(tmp_path, tiny_final):  # noqa: F811
    items = _belle_items(6)
    with FakeJudgeServer() as server:
        run_dir = make_generation_run(tmp_path, tiny_final, items, "ev", max_new_tokens=6)
        _set_judge(run_dir, base_url=server.base_url, prompts=str(need_shared("belle_eval", "eval_prompt.json")),
                   cache=str(tmp_path / "judge.sqlite"), backoff_base_s=0.05)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "lorafull.evaluate", str(run_dir), "--no-progress"], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        stats = server.stats.as_dict()
    rows = scores_by_id(run_dir)
    assert len(rows) == len(items) and all(r["score"] is not None for r in rows.values())
    assert sum(stats["served"].values()) == len(items)
    status = read_status(run_dir)
    assert status["stages"] == {"generate": "done", "judge": "done", "evaluate": "done"}
    assert (run_dir / "judge_summary.json").exists()


def test_evaluate_checks_the_judge_before_generating(tmp_path, tiny_final):  # noqa: F811
    items = [{"question": "q", "class": "poetry", "std_answer": ""}]
    run_dir = make_generation_run(tmp_path, tiny_final, items, "early")
    _set_judge(run_dir, base_url="http://127.0.0.1:9/v1")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "lorafull.evaluate", str(run_dir), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "poetry" in done.stderr and done.stderr.strip().count("\n") == 0
    assert not (run_dir / "responses.jsonl").exists()  # nothing generated for a judge that cannot work
    assert read_status(run_dir)["state"] == "failed"


def test_reference_judge_uses_offline_scorers_per_class(tmp_path):
    responses = [
        {"id": "m1", "class": "math", "question": "3+5?", "std_answer": "答案是8", "response": "一共8个。"},
        {"id": "m2", "class": "math", "question": "3+4?", "std_answer": "7", "response": "It is 8."},
        {"id": "c1", "class": "code", "question": "square", "std_answer": "assert square(4) == 16",
         "response": "```python\ndef square(x):\n    return x * x\n```"},
        {"id": "c2", "class": "code", "question": "loop", "std_answer": "assert f() == 1",
         "response": "```python\ndef f():\n    return 2\n```"},
        {"id": "t1", "class": "open\u00a0QA", "question": "?", "std_answer": "我喜欢猫", "response": "我喜欢狗"},
    ]
    run_dir = make_judge_run(tmp_path, responses, None, kind="reference")
    summary = judge_run(run_dir, progress=False)
    rows = scores_by_id(run_dir)
    assert [rows[k]["score"] for k in ("m1", "m2", "c1", "c2")] == [1.0, 0.0, 1.0, 0.0]
    assert rows["t1"]["score"] == pytest.approx(0.75) and rows["t1"]["judge"] == "reference:text"
    assert rows["c1"]["judge"] == "reference:code"
    assert summary["others"] == pytest.approx(0.5) and summary["average"] == pytest.approx((0.5 + 0.75) / 2)
    bad = make_judge_run(tmp_path / "bad", responses, None, kind="reference", scorers={"math": "algebra"})
    # the schema lists the scorers: the run's config.yaml is refused when it is read, naming the line
    with pytest.raises(ConfigError, match=r"config.yaml:\d+: eval.judge.scorers.math: expected one of math, code"):
        judge_run(bad, progress=False)
