"""Scoring a model on analysis tasks: the target domain (what a run should learn) and source tasks
(what it may forget).

- choice tasks: lines {"id"?, "context", "options": [...], "answer": int}. Each option is scored by
  its log-likelihood given the context; accuracy picks the most likely option, length-normalised
  accuracy (acc_norm) divides each option's log-likelihood by its length in characters (as common
  benchmark harnesses do), so long options are not penalised for having more tokens.
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

import torch

from lorafull.config import TaskSpec
from lorafull.runs import iter_json_lines
from lorafull.stats import estimate

KINDS = ("choice", "generation")


class TaskError(ValueError):
    """A bad task file or spec; the message names the file:line and the field."""


def load_task(spec: TaskSpec) -> list[dict]:
    """The task's items, checked: every error names the file, line and field."""
    path = Path(spec.path)
    if spec.kind not in KINDS:
        raise TaskError(f"analysis task {spec.name!r}: kind: expected choice or generation, got {spec.kind!r}")
    if spec.kind == "generation" and spec.scorer not in ("math", "code", "text"):
        raise TaskError(f"analysis task {spec.name!r}: scorer: a generation task needs math, code or text, "
                        f"got {spec.scorer!r}")
    if spec.kind == "choice" and spec.metric not in ("acc", "acc_norm"):
        raise TaskError(f"analysis task {spec.name!r}: metric: expected acc or acc_norm, got {spec.metric!r}")
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
        for key, tp in (("context", str), ("options", list), ("answer", int)):
            if not isinstance(item.get(key), tp):
                raise TaskError(f"{where}: {key}: missing or not a {tp.__name__}")
        if not item["options"] or not all(isinstance(o, str) and o for o in item["options"]):
            raise TaskError(f"{where}: options: expected a list of non-empty strings")
        if not 0 <= item["answer"] < len(item["options"]):
            raise TaskError(f"{where}: answer: {item['answer']} is not an index of options")
    else:
        for key in ("question", "std_answer"):
            if not isinstance(item.get(key), str):
                raise TaskError(f"{where}: {key}: missing or not a string")


# ---------------------------------------------------------------------------------------------
# Choice tasks: log-likelihood of each option
# ---------------------------------------------------------------------------------------------
def _encode_pair(tokenizer, context: str, option: str, max_len: int) -> tuple[list[int], int]:
    """(token ids of context + option, number of option tokens). Context and option are tokenised
    apart, so the option's tokens are the same whatever the context; long contexts lose their start."""
    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    opt = tokenizer(option, add_special_tokens=False)["input_ids"]
    if not ctx:  # the first option token needs something to be predicted from
        ctx = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    opt = opt[: max_len - 1]
    ids = (ctx + opt)[-max_len:]
    return ids, len(opt)


@torch.no_grad()
def option_loglikelihoods(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 8,
                          progress: bool = False) -> list[float]:
    """Sum of log p(option tokens | context) for each (context, option) pair."""
    from tqdm import tqdm

    device = next(model.parameters()).device
    max_len = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [_encode_pair(tokenizer, c, o, max_len) for c, o in pairs]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))  # similar lengths share a batch
    out = [0.0] * len(encoded)
    for start in tqdm(range(0, len(order), batch_size), desc="choice", disable=not progress, unit="batch"):
        idx = order[start: start + batch_size]
        width = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):  # right padding: positions (and rotary phases) match unpadded
            seq = encoded[i][0]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        for row, i in enumerate(idx):
            seq, n_opt = encoded[i]
            # logits at position t predict token t+1: the option's tokens are predicted from L-n-1 .. L-2
            first, last = len(seq) - n_opt - 1, len(seq) - 1
            logp = torch.log_softmax(logits[row, first:last], dim=-1)
            target = ids[row, first + 1: last + 1].to(logp.device)
            out[i] = float(logp.gather(1, target[:, None]).sum())
    return out


def score_choice(model, tokenizer, items: list[dict], batch_size: int = 8, progress: bool = False) -> dict:
    pairs = [(it["context"], o) for it in items for o in it["options"]]
    ll = option_loglikelihoods(model, tokenizer, pairs, batch_size, progress)
    correct = correct_norm = 0
    per_item = []
    k = 0
    for it in items:
        n = len(it["options"])
        scores = ll[k: k + n]
        k += n
        norm = [s / len(o) for s, o in zip(scores, it["options"])]
        pred = max(range(n), key=scores.__getitem__)
        pred_norm = max(range(n), key=norm.__getitem__)
        correct += pred == it["answer"]
        correct_norm += pred_norm == it["answer"]
        per_item.append({"id": it["id"], "loglik": scores, "pred": pred, "pred_norm": pred_norm, "answer": it["answer"]})
    return {"acc": correct / len(items), "acc_norm": correct_norm / len(items), "n": len(items), "items": per_item}


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


def _item_scores(per_item: list[dict], spec: TaskSpec) -> list[Optional[float]]:
    if spec.kind == "choice":
        key = "pred_norm" if spec.metric == "acc_norm" else "pred"
        return [1.0 if x[key] == x["answer"] else 0.0 for x in per_item]
    return [None if x["score"] is None else float(x["score"]) for x in per_item]


def evaluate_tasks(model, tokenizer, specs: list[TaskSpec], template: str, default_max_new_tokens: int,
                   items_dir: Optional[str | os.PathLike] = None, batch_size: int = 8,
                   progress: bool = True) -> dict[str, dict]:
    """{task name: {"kind", "metric", "score", "n", "item_scores", "interval": [low, high], ...}}; per-item details go to items_dir/<task>.jsonl."""
    results = {}
    for spec in specs:
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
        est = estimate([{spec.name: r["item_scores"]}])
        r["interval"] = None if est is None else [est.low, est.high]
        if items_dir is not None:
            path = Path(items_dir) / f"{spec.name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in per_item))
        results[spec.name] = r
    return results
