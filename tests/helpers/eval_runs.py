"""Run folders built by hand for the evaluation stages: an eval set + final/ for generation, responses for the judge."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.common import REPO, write_jsonl
from lorafull.config import RunConfig, save_run_config
from lorafull.runs import read_jsonl

QUESTIONS = ["What is 3 plus 4?", "Repeat the word.\ncat", "请把这句话翻译成英文：我喜欢猫。",
             "Classify the sentiment: I love this movie.", "What is 9 plus 9? Think step by step, then answer.",
             "小明有5个苹果，又买了3个，一共有几个？", "Hi", "Rewrite in upper case: hello world"]


def eval_items(n: int) -> list[dict]:
    return [{"question": QUESTIONS[i % len(QUESTIONS)] + (f" ({i})" if i >= len(QUESTIONS) else ""),
             "class": ["open qa", "rewrite", "math"][i % 3], "std_answer": "x"} for i in range(n)]


def make_generation_run(root: Path, final_src: Path, items: list[dict], name: str = "r", **eval_kw) -> Path:
    import shutil

    run_dir = root / "study" / "runs" / name
    shutil.copytree(final_src, run_dir / "final")
    run = RunConfig(name=name)
    run.model.name_or_path, run.model.dtype = str(final_src), "fp32"
    run.eval.eval_set = str(write_jsonl(root / f"eval_{name}.jsonl", items))
    run.eval.max_new_tokens, run.eval.batch_size = 12, 4
    for k, v in eval_kw.items():
        setattr(run.eval, k, v)
    save_run_config(run, run_dir, "sig00000")
    return run_dir


def make_lora_generation_run(root: Path, base: Path, items: list[dict], name: str, r: int = 4, **eval_kw) -> Path:
    """A generation run whose final/ is a peft adapter on `base` with random A and B (so it changes answers)."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = make_generation_run(root, base, items, name, **eval_kw)
    shutil.rmtree(run_dir / "final")
    torch.manual_seed(0)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), cfg).save_pretrained(run_dir / "final")
    AutoTokenizer.from_pretrained(base).save_pretrained(run_dir / "final")
    return run_dir


def responses_by_id(run_dir: Path) -> dict:
    rows = list(read_jsonl(run_dir / "responses.jsonl"))
    assert len(rows) == len({str(r["id"]) for r in rows}), "an item was written twice"
    return {str(r["id"]): r for r in rows}


def make_judge_run(root: Path, responses: list[dict], base_url: str, name: str = "r1", **judge) -> Path:
    """A run folder by hand: config.yaml + responses.jsonl (what generation would have written)."""
    run_dir = root / "study" / "runs" / name
    run = RunConfig(name=name)
    j = run.eval.judge
    j.base_url, j.model, j.timeout_s, j.concurrency, j.backoff_base_s = base_url, "gpt-3.5-turbo", 1.0, 8, 0.05
    j.cache = str(root / "study" / "cache" / "judge.sqlite")
    j.prices = {"gpt-3.5-turbo": {"input": 0.5, "output": 1.5}}
    for k, v in judge.items():
        setattr(j, k, v)
    save_run_config(run, run_dir, "sig00000")
    with open(run_dir / "responses.jsonl", "w", encoding="utf-8") as f:
        for r in responses:
            f.write(json.dumps({"std_answer": "", "tokens": 3, "seconds": 0.1, **r}, ensure_ascii=False) + "\n")
    return run_dir


def judge_cli(run_dir: Path, env_extra: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "lorafull.judge", str(run_dir), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=timeout)


def scores_by_id(run_dir: Path) -> dict:
    rows = list(read_jsonl(run_dir / "scores.jsonl"))
    ids = [str(r["id"]) for r in rows]
    assert len(ids) == len(set(ids)), "an item was written twice"
    return {str(r["id"]): r for r in rows}
