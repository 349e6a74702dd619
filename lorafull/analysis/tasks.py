"""Scoring a model on analysis tasks: the target domain (what a run should learn) and source tasks
(what it may forget).

- choice tasks: lines {"id"?, "context", "options": [...], "answer": int}, or the WinoGrande form
  {"id"?, "contexts": [...], "continuation", "answer": int}; scored as lm-evaluation-harness scores
  them (lorafull.analysis.choice: acc, and acc_norm by the choice's characters).
- generation tasks: eval-set lines {"id"?, "question", "class", "std_answer"}; the question goes
  through the run's prompt template (lorafull.data.encode_prompt: format_prompt's text with the
  special prefix training used), the answer is generated greedily (lorafull.generate's HF batch
  generation) and scored offline by lorafull.judge.scorers.score(scorer, response, std_answer).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional


from lorafull.analysis.choice import option_loglikelihoods, score_choice  # noqa: F401 -- the task API
from lorafull.config import TaskSpec
from lorafull.runs import iter_json_lines
from lorafull.stats import estimate



class TaskError(ValueError):
    """A bad task file or spec; the message names the file:line and the field."""


def load_task(spec: TaskSpec) -> list[dict]:
    """The task's items, checked: every error names the file, line and field."""
    path = Path(spec.path)  # kind, scorer and metric were checked when the study loaded (the schema)
    if not path.exists():
        raise TaskError(f"{path}: no such task file (analysis task {spec.name!r})")
    items = []
    for i, item, _ in iter_json_lines(path, TaskError):
        _check_item(item, spec.kind, f"{path}:{i}")
        item.setdefault("id", len(items))
        items.append(item)
        if spec.num_items and len(items) >= spec.num_items:
            break
    if not items:
        raise TaskError(f"{path}: no items (analysis task {spec.name!r})")
    return items


def _check_item(item, kind: str, where: str) -> None:
    if not isinstance(item, dict):
        raise TaskError(f"{where}: expected a JSON object")
    if kind == "choice":
        many = "contexts" if "contexts" in item else "options"  # the WinoGrande form, or options
        shared = ("continuation", str) if many == "contexts" else ("context", str)
        for key, tp in (shared, (many, list), ("answer", int)):
            if not isinstance(item.get(key), tp):
                raise TaskError(f"{where}: {key}: missing or not a {tp.__name__}")
        if not item[many] or not all(isinstance(o, str) and o for o in item[many]):
            raise TaskError(f"{where}: {many}: expected a list of non-empty strings")
        if not 0 <= item["answer"] < len(item[many]):
            raise TaskError(f"{where}: answer: {item['answer']} is not an index of {many}")
    else:
        for key in ("question", "std_answer"):
            if not isinstance(item.get(key), str):
                raise TaskError(f"{where}: {key}: missing or not a string")


# ---------------------------------------------------------------------------------------------
# Generation tasks: greedy answers scored offline
# ---------------------------------------------------------------------------------------------
def score_generation(model, tokenizer, items: list[dict], scorer: str, template: str, max_new_tokens: int,
                     batch_size: int = 8, progress: bool = False) -> dict:
    """Greedy answers to the questions, laid out as in training, scored offline."""
    from tqdm import tqdm

    from lorafull.data.dataset import encode_prompt
    from lorafull.generate.stage import generate_batch  # the eval stage's HF generation: same padding, EOS cut, decoding
    from lorafull.judge.scorers import score

    # prompt ids exactly as training saw them (BOS included where the tokenizer adds one)
    encoded = [encode_prompt(it["question"], tokenizer, template) for it in items]
    order = sorted(range(len(items)), key=lambda i: -len(encoded[i]))  # less padding per batch
    responses: list[str] = [""] * len(items)
    for start in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress, unit="batch"):
        idx = order[start: start + batch_size]
        texts, _ = generate_batch(model, tokenizer, [encoded[i] for i in idx], max_new_tokens, temperature=0.0)
        for i, text in zip(idx, texts):
            responses[i] = text
    per_item, values = [], []
    for it, resp in zip(items, responses):
        s = score(scorer, resp, it["std_answer"])
        per_item.append({"id": it["id"], "class": it.get("class"), "response": resp, "score": s})
        if s is not None:
            values.append(float(s))
    return {"score": sum(values) / len(values) if values else None, "n": len(items), "n_scored": len(values),
            "items": per_item}


def reference_losses(model, tokenizer, items: list[dict], kind: str, template: str,
                     batch_size: int = 8) -> list[Optional[float]]:
    """Per item, its validation loss: the mean negative log-likelihood per token of the right answer (a
    generation item's std_answer after its question laid out as in training, a choice item's right option
    after its context), tokenized and scored as the choice tasks are (lorafull.analysis.choice)."""
    from lorafull.analysis.choice import encode_pair, pairs_of
    from lorafull.data.template import format_prompt

    if kind == "choice":
        pairs = [pairs_of(it)[it["answer"]] for it in items]
    else:
        pairs = [(format_prompt(it["question"], tokenizer, template), it["std_answer"]) for it in items]
    loglik = option_loglikelihoods(model, tokenizer, pairs, batch_size)
    counts = [len(encode_pair(tokenizer, c, o)[1]) for c, o in pairs]
    return [-ll / n if n else None for ll, n in zip(loglik, counts)]


def _item_scores(per_item: list[dict], spec: TaskSpec) -> list[Optional[float]]:
    if spec.kind == "choice":
        key = "pred_norm" if spec.metric == "acc_norm" else "pred"
        return [1.0 if x[key] == x["answer"] else 0.0 for x in per_item]
    return [None if x["score"] is None else float(x["score"]) for x in per_item]


def evaluate_tasks(model, tokenizer, specs: list[TaskSpec], template: str, default_max_new_tokens: int,
                   items_dir: Optional[str | os.PathLike] = None, batch_size: int = 8,
                   progress: bool = True) -> dict[str, dict]:
    """{task name: {"kind", "metric", "score", "n", "item_scores", "item_losses", "interval": [low, high], ...}};
    per-item details go to items_dir/<task>.jsonl. item_losses: reference_losses (a sweep may select on them)."""
    results = {}
    harness = [s for s in specs if s.kind == "lm_eval"]
    if harness:  # the harness's own tasks, on this model as it is in memory
        from lorafull.analysis.harness import harness_on_model

        results.update(harness_on_model(model, tokenizer, harness, batch_size))
    for spec in (s for s in specs if s.kind != "lm_eval"):
        items = load_task(spec)
        if spec.kind == "choice":
            r = score_choice(model, tokenizer, items, batch_size, progress)
            r.update(kind="choice", metric=spec.metric, score=r[spec.metric])
        else:
            r = score_generation(model, tokenizer, items, spec.scorer, template,
                                 spec.max_new_tokens or default_max_new_tokens, batch_size, progress)
            r.update(kind="generation", metric=spec.scorer)
        per_item = r.pop("items")
        # per-item scores in file order: what the intervals (and learning's paired differences) resample
        r["item_scores"] = _item_scores(per_item, spec)
        r["item_losses"] = reference_losses(model, tokenizer, items, spec.kind, template, batch_size)
        est = estimate([{spec.name: r["item_scores"]}])
        r["interval"] = None if est is None else [est.low, est.high]
        if items_dir is not None:
            path = Path(items_dir) / f"{spec.name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in per_item))
        results[spec.name] = r
    return results
