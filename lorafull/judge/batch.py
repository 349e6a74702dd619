"""Batch judging (eval.judge.mode: batch): the judge's requests go through the OpenAI Batch API, which
answers within a day at half the price, and scores.jsonl comes out exactly as the online mode writes it.

    python -m lorafull.judge RUN_DIR      # submits the batch; run again later: polls, then scores

First call: every reply the cache lacks (one request per item and sample) becomes a line of
RUN_DIR/judge_batch_input.jsonl, which is uploaded and submitted as one batch; its id goes to
RUN_DIR/judge_batch.json. Later calls poll it (BatchPending while it runs). Once it has ended, its replies
go into the judge cache and the online path scores every item from that cache (same parsing, same rows,
nothing requested) with eval.judge.prices halved. A line the batch failed is recorded unscored
(error_kind "batch"). Unreadable replies are not asked again (parse_retries applies online only).

Nothing is submitted twice: the state file is written after the upload and again after the batch is
created; a job that died between the two finds its batch by the uploaded file's id.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lorafull.config import JudgeConfig
from lorafull.judge.cache import JudgeCache, cache_key
from lorafull.judge.client import resolve_api_key
from lorafull.judge.limits import FatalJudgeError
from lorafull.judge.prompts import build_messages, load_prompts, normalize_class
from lorafull.runs import JsonlWriter, write_json_atomic

STATE_FILE = "judge_batch.json"
INPUT_FILE = "judge_batch_input.jsonl"
BATCH_PRICE_FACTOR = 0.5  # the Batch API's discount on both input and output tokens
ENDPOINT = "/v1/chat/completions"
_RUNNING = ("validating", "in_progress", "finalizing", "cancelling")


class BatchPending(Exception):
    """The batch has not ended yet; the run's judging resumes on the next call."""


def _item_requests(todo: list[dict], cfg: JudgeConfig) -> dict[str, list[str]]:
    """item id -> the cache keys of its replies (sample k, first attempt), the messages kept aside."""
    prompts = load_prompts(cfg.prompts)
    keys, messages = {}, {}
    for item in todo:
        msgs = build_messages(prompts[normalize_class(item["class"])], item.get("question", ""),
                              item.get("response", ""), item.get("std_answer", ""))
        keys[str(item["id"])] = [cache_key(cfg.model, msgs, s, 0) for s in range(max(1, cfg.n_samples))]
        for k in keys[str(item["id"])]:
            messages[k] = msgs
    return keys, messages


def _state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _save(run_dir: Path, state: dict) -> dict:
    write_json_atomic(run_dir / STATE_FILE, state)
    return state


def _submit(client, run_dir: Path, state: dict, messages: dict[str, list], cfg: JudgeConfig) -> dict:
    if not state.get("input_file_id"):
        with JsonlWriter(run_dir / INPUT_FILE, mode="w") as w:
            for key, msgs in messages.items():  # the cache key is the custom id: replies map back to it
                w.write({"custom_id": key, "method": "POST", "url": ENDPOINT,
                         "body": {"model": cfg.model, "messages": msgs, "temperature": cfg.temperature,
                                  "max_tokens": cfg.max_tokens}})
        with open(run_dir / INPUT_FILE, "rb") as f:
            uploaded = client.files.create(file=f, purpose="batch")
        state = _save(run_dir, {"input_file_id": uploaded.id, "requests": len(messages)})
    for batch in client.batches.list(limit=100):  # created before a crash could record it?
        if batch.input_file_id == state["input_file_id"]:
            return _save(run_dir, {**state, "batch_id": batch.id})
    batch = client.batches.create(input_file_id=state["input_file_id"], endpoint=ENDPOINT,
                                  completion_window="24h", metadata={"run": run_dir.name})
    return _save(run_dir, {**state, "batch_id": batch.id})


def _lines(client, file_id) -> list[dict]:
    if not file_id:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _download(client, batch, cache: JudgeCache, cfg: JudgeConfig) -> dict[str, str]:
    """Store every successful reply in the cache; key -> error of every failed line."""
    failed = {}
    for line in _lines(client, batch.output_file_id) + _lines(client, batch.error_file_id):
        key, response = line.get("custom_id"), line.get("response") or {}
        body = response.get("body") or {}
        choices = body.get("choices") or []
        content = choices[0].get("message", {}).get("content") if choices else None
        if response.get("status_code") == 200 and isinstance(content, str):
            usage = body.get("usage") or {}
            cache.put(key, cfg.model, content, int(usage.get("prompt_tokens", 0)),
                      int(usage.get("completion_tokens", 0)))
        else:
            error = line.get("error") or body.get("error") or {}
            failed[key] = f"batch line failed ({response.get('status_code')}): {error.get('message', error)}"[:300]
    return failed


def batch_price(cfg: JudgeConfig) -> JudgeConfig:
    prices = {m: {k: float(v) * BATCH_PRICE_FACTOR for k, v in p.items()} if isinstance(p, dict) else p
              for m, p in cfg.prices.items()}
    return dataclasses.replace(cfg, prices=prices, parse_retries=0)


def judge_batch(run_dir: Path, todo: list[dict], cfg: JudgeConfig, cache: JudgeCache) -> tuple[list, dict, dict]:
    """Submit, poll or finish this run's batch; raises BatchPending while it runs. Once it has ended:
    (the items whose replies are now in the cache, {item id: error} for the items a failed batch line
    leaves unanswered, the batch's counters). The judge then scores the first from the cache, exactly as
    online, at the batch price (batch_price), and marks the others."""
    import openai

    run_dir = Path(run_dir)
    client = openai.OpenAI(api_key=resolve_api_key(cfg), base_url=cfg.base_url, timeout=cfg.timeout_s)
    keys, messages = _item_requests(todo, cfg)
    state = _state(run_dir)
    missing = {k: m for k, m in messages.items() if cache.get(k) is None and k not in state.get("failed", {})}
    if missing and not state.get("batch_id"):
        state = _submit(client, run_dir, state, missing, cfg)
    if state.get("batch_id") and "failed" not in state:
        batch = client.batches.retrieve(state["batch_id"])
        counts = getattr(batch, "request_counts", None)
        if batch.status in _RUNNING:
            done = f"{counts.completed}/{counts.total} done" if counts else "running"
            raise BatchPending(f"judge batch {batch.id} is {batch.status} ({done}); "
                               f"run python -m lorafull.judge {run_dir} again later")
        if batch.status == "failed":
            raise FatalJudgeError(f"judge batch {batch.id} failed: {getattr(batch, 'errors', None)}")
        state = _save(run_dir, {**state, "status": batch.status, "failed": _download(client, batch, cache, cfg)})
    failed = dict(state.get("failed", {}))
    failed.update({k: "no reply in the batch's output" for k in missing if cache.get(k) is None and k not in failed})
    ready, errors = [], {}
    for item in todo:
        lines = [failed[k] for k in keys[str(item["id"])] if k in failed]
        if lines:  # marked, not retried: a failed batch line is a request the judge cannot answer
            errors[str(item["id"])] = lines[0]
        else:
            ready.append(item)
    (run_dir / STATE_FILE).unlink(missing_ok=True)  # done: a later judging pass starts a new batch
    return ready, errors, {"batch_id": state.get("batch_id"), "batch_requests": state.get("requests", 0),
            "batch_failed_lines": len(state.get("failed", {}))}
