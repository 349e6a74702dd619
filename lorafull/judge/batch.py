"""Batch judging (eval.judge.mode: batch): the judge's requests go through the OpenAI Batch API, which
answers within a day at half the price, and scores.jsonl comes out exactly as the online mode writes it.

    python -m lorafull.judge RUN_DIR      # submits the batch; run again later: polls, then scores

The batch asks what the online judge would ask, in rounds. Round 0 holds every first attempt the reply
cache lacks (one request per item and sample). A reply that cannot be read is asked again in the next
round, with the online re-ask's settings and cache key, up to eval.judge.parse_retries rounds. Each
round's requests go to RUN_DIR/judge_batch_input.jsonl, which is uploaded and submitted as one batch;
its id goes to RUN_DIR/judge_batch.json. Later calls poll it (BatchPending while it runs). Once no
request is left, the online path scores every item from the cache (same parsing, same rows, nothing
requested) with eval.judge.prices halved. A line the batch failed is recorded unscored (error_kind
"batch"), never bought again; lines an expired or cancelled batch left unanswered go into the next
round. A batch refused as a whole (status failed) stops the judge with its errors, and the next call
submits a new one.

Nothing is submitted twice: the state file is written after the upload and again after the batch is
created; a job that died between the two finds its batch by the uploaded file's id. A request whose
reply is in the cache is never put in a batch, so a crash after a download costs nothing either.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lorafull.config import JudgeConfig
from lorafull.judge.cache import JudgeCache
from lorafull.judge.client import resolve_api_key
from lorafull.judge.limits import FatalJudgeError
from lorafull.judge.prompts import build_messages, load_prompts, normalize_class
from lorafull.judge.request import attempts, read_reply, request_key, request_options
from lorafull.runs import JsonlWriter, RunPaths, read_jsonl, write_json_atomic

STATE_FILE = RunPaths.of(".").judge_batch.name
INPUT_FILE = RunPaths.of(".").judge_batch_input.name
BATCH_PRICE_FACTOR = 0.5  # the Batch API's discount on both input and output tokens
ENDPOINT = "/v1/chat/completions"
_RUNNING = ("validating", "in_progress", "finalizing", "cancelling")


class BatchPending(Exception):
    """The batch has not ended yet; the run's judging resumes on the next call."""


@dataclasses.dataclass
class Walk:
    """Where each item stands against the cache, walked as the online judge would ask."""
    needed: dict[str, tuple[list, int]]  # cache key -> (messages, attempt) still to buy
    errors: dict[str, str]  # item id -> why a request of it cannot be answered (a failed batch line)
    ready: list[dict]  # items whose every reply the online path will find in the cache


def walk(todo: list[dict], cfg: JudgeConfig, cache: JudgeCache, failed: dict[str, str]) -> Walk:
    """Per item and sample, follow the attempts through the cache: a readable reply ends the sample,
    an unreadable one moves on to the re-ask, a missing one is needed, a failed one marks the item."""
    prompts = load_prompts(cfg.prompts)
    out = Walk({}, {}, [])
    for item in todo:
        msgs = build_messages(prompts[normalize_class(item["class"])], item.get("question", ""),
                              item.get("response", ""), item.get("std_answer", ""))
        needs, error = {}, None
        for sample in range(max(1, cfg.n_samples)):
            for attempt in attempts(cfg):
                key = request_key(cfg, msgs, sample, attempt)
                if key in failed:
                    error = error or failed[key]
                    break
                hit = cache.get(key)
                if hit is None:
                    needs[key] = (msgs, attempt)
                    break
                if read_reply(cfg, hit.reply).score is not None:
                    break
        if error:
            out.errors[str(item["id"])] = error
        elif needs:
            out.needed.update(needs)
        else:
            out.ready.append(item)
    return out


def _state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _save(run_dir: Path, state: dict) -> dict:
    write_json_atomic(run_dir / STATE_FILE, state)
    return state


def _submit(client, run_dir: Path, state: dict, needed: dict[str, tuple[list, int]], cfg: JudgeConfig) -> dict:
    if not state.get("input_file_id"):
        with JsonlWriter(run_dir / INPUT_FILE, mode="w") as w:
            for key, (msgs, attempt) in needed.items():  # the cache key is the custom id: replies map back to it
                w.write({"custom_id": key, "method": "POST", "url": ENDPOINT,
                         "body": {"model": cfg.model, "messages": msgs, **request_options(cfg, attempt)}})
        with open(run_dir / INPUT_FILE, "rb") as f:
            uploaded = client.files.create(file=f, purpose="batch")
        state = _save(run_dir, {**state, "input_file_id": uploaded.id, "requests": state.get("requests", 0) + len(needed)})
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


def _download(client, batch, run_dir: Path, cache: JudgeCache, cfg: JudgeConfig) -> dict[str, str]:
    """Store every successful reply in the cache; key -> error of every request it did not answer."""
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
    if batch.status == "completed":  # an expired or cancelled batch leaves lines unanswered: asked again
        for sent in read_jsonl(run_dir / INPUT_FILE):
            if cache.get(sent["custom_id"]) is None:
                failed.setdefault(sent["custom_id"], f"no reply in the output of batch {batch.id}")
    return failed


def batch_price(cfg: JudgeConfig) -> JudgeConfig:
    prices = {m: {k: float(v) * BATCH_PRICE_FACTOR for k, v in p.items()} if isinstance(p, dict) else p
              for m, p in cfg.prices.items()}
    return dataclasses.replace(cfg, prices=prices)


def _poll(client, run_dir: Path, state: dict, cache: JudgeCache, cfg: JudgeConfig) -> dict:
    """The state after the current batch has ended and its replies are in the cache; BatchPending before."""
    batch = client.batches.retrieve(state["batch_id"])
    if batch.status in _RUNNING:
        counts = getattr(batch, "request_counts", None)
        done = f"{counts.completed}/{counts.total} done" if counts else "running"
        raise BatchPending(f"judge batch {batch.id} is {batch.status} ({done}); "
                           f"run python -m lorafull.judge {run_dir} again later")
    ended = {k: v for k, v in state.items() if k not in ("input_file_id", "batch_id")}
    ended["batches"] = state.get("batches", []) + [batch.id]
    if batch.status == "failed":  # refused as a whole (validation), nothing answered or billed
        _save(run_dir, ended)  # the next call submits anew instead of polling this batch forever
        raise FatalJudgeError(f"judge batch {batch.id} failed: {_errors(batch)}")
    failed = {**state.get("failed", {}), **_download(client, batch, run_dir, cache, cfg)}
    return _save(run_dir, {**ended, "failed": failed})


def _errors(batch) -> str:
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    text = "; ".join(f"line {e.line}: {e.message}" if getattr(e, "line", None) is not None else str(e.message)
                     for e in errors[:3])
    return text or "no reason given"


def judge_batch(run_dir: Path, todo: list[dict], cfg: JudgeConfig, cache: JudgeCache) -> tuple[list, dict, dict]:
    """Submit, poll or finish this run's batches; raises BatchPending while one runs. Once every request
    is answered or failed: (the items whose replies are all in the cache, {item id: error} for the items
    a failed line leaves unanswered, the batches' counters). The judge then scores the first from the
    cache, exactly as online, at the batch price (batch_price), and marks the others."""
    import openai

    run_dir = Path(run_dir)
    client = openai.OpenAI(api_key=resolve_api_key(cfg), base_url=cfg.base_url, timeout=cfg.timeout_s)
    state = _state(run_dir)
    while True:
        if state.get("batch_id") or state.get("input_file_id"):
            if not state.get("batch_id"):  # uploaded, then the process died: create (or find) the batch
                state = _submit(client, run_dir, state, {}, cfg)
            state = _poll(client, run_dir, state, cache, cfg)
        plan = walk(todo, cfg, cache, state.get("failed", {}))
        if not plan.needed:
            break
        state = _submit(client, run_dir, state, plan.needed, cfg)  # the first round, or the re-asks
    (run_dir / STATE_FILE).unlink(missing_ok=True)  # done: a later judging pass starts afresh
    return plan.ready, plan.errors, {"batch_ids": state.get("batches", []), "batch_requests": state.get("requests", 0),
                                     "batch_failed_lines": len(state.get("failed", {}))}
