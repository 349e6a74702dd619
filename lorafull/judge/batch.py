"""Batch judging (eval.judge.mode: batch): the judge's requests go through the OpenAI Batch API, which
answers within a day at half the price, and scores.jsonl comes out exactly as the online mode writes it.

    python -m lorafull.judge RUN_DIR      # hands the run's requests to the study's batches; run again later

The batches ask what the online judge would ask, in rounds (lorafull.judge.batch_walk): first every
request the reply cache lacks (one per item and sample), then the re-asks of unreadable replies
(eval.judge.parse_retries) and the requests that failed transiently (eval.judge.max_retries rounds,
with the online judge's backoff between them). The run's requests join those of the study's other
runs for the same judge in shared batches (lorafull.judge.batch_pool); while any is unanswered the
call raises BatchPending and the run is waiting. Once none is left, the online path scores every item
from the cache (same parsing, same rows, nothing requested) with eval.judge.prices halved; an item
whose request failed for good is recorded unscored with the reason (error_kind "batch" for a
permanent failure, "transport" after max_retries rounds: judged again when the run's judge runs again).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lorafull.config import JudgeConfig
from lorafull.judge.batch_flight import BatchPending, open_client, pump_errors
from lorafull.judge.batch_pool import BatchPool, Member
from lorafull.judge.batch_size import encode_line, request_tokens
from lorafull.judge.batch_walk import walk
from lorafull.judge.cache import JudgeCache
from lorafull.runs import RunPaths, read_jsonl

__all__ = ["BatchPending", "judge_batch", "batch_price", "open_client", "pump_errors", "STATE_FILE"]

# the per-run batch record of earlier versions: a batch it names is taken over by the study's pool
STATE_FILE = RunPaths.of(".").judge_batch.name
BATCH_PRICE_FACTOR = 0.5  # the Batch API's discount on both input and output tokens


def batch_price(cfg: JudgeConfig) -> JudgeConfig:
    prices = {m: {k: float(v) * BATCH_PRICE_FACTOR for k, v in p.items()} if isinstance(p, dict) else p
              for m, p in cfg.prices.items()}
    return dataclasses.replace(cfg, prices=prices)


def judge_batch(run_dir: Path, todo: list[dict], cfg: JudgeConfig, cache: JudgeCache) -> tuple[list, dict, dict]:
    """Hand this run's requests to the study's batches, poll them, and raise BatchPending while any is
    unanswered. Once none is: (the items whose replies are all in the cache, {item id: (error,
    error_kind)} for the items a failed request leaves unscored, counters). The judge then scores the
    first from the cache, exactly as online, at the batch price (batch_price), and marks the others."""
    run_dir = Path(run_dir)
    pool = BatchPool.of_run(run_dir, cfg)
    with pool.opened():
        _adopt_run_batch(pool, run_dir)
        failures = pool.state["failures"]
        if pool.registered(run_dir):
            plan = walk(todo, cfg, cache, failures)
        else:  # judged anew: requests that ran out of rounds get new ones
            plan = walk(todo, cfg, cache, {k: f for k, f in failures.items() if f["kind"] == "permanent"})
            reset = [key for key in plan.needed if failures.get(key, {}).get("kind") == "transient"]
            for key in reset:
                failures.pop(key)
            pool.state["generation"] += bool(reset)  # other runs asking them walk again too
        if plan.needed:
            pool.register(run_dir)
            pool.save()
            with pump_errors(cfg):
                pool.pump(open_client(cfg), cache, Member(run_dir, cfg, todo, plan))
            if pool.collected:  # replies came in: where does the run stand now?
                plan = walk(todo, cfg, cache, failures)
            if plan.needed:
                raise BatchPending(pool.why_waiting(plan.needed))
        pool.unregister(run_dir)
        pool.save()
    return plan.ready, plan.errors, {"batch_pool": pool.name, "batch_unscored": len(plan.errors)}


def _adopt_run_batch(pool: BatchPool, run_dir: Path) -> None:
    """A run judged by an earlier version has its own batch record: its batch joins the pool (polled,
    never sent again) and its failed lines stay failed."""
    paths = RunPaths.of(run_dir)
    if not paths.judge_batch.exists():
        return
    old = json.loads(paths.judge_batch.read_text())
    for key, why in (old.get("failed") or {}).items():
        pool.state["failures"].setdefault(key, {"kind": "permanent", "tries": 0, "error": str(why)[:300]})
    if old.get("input_file_id") and paths.judge_batch_input.exists():
        lines = list(read_jsonl(paths.judge_batch_input))
        n = pool.state["next"]
        pool.state["next"] = n + 1
        (pool.root / "batches").mkdir(parents=True, exist_ok=True)
        (pool.root / "batches" / f"{n}.jsonl").write_bytes(b"".join(encode_line(x) for x in lines))
        pool.state["batches"].append({
            "n": n, "file": f"{n}.jsonl", "requests": len(lines), "bytes": sum(len(encode_line(x)) for x in lines),
            "tokens": sum(request_tokens(x["body"]) for x in lines), "input_file_id": old["input_file_id"],
            "batch_id": old.get("batch_id"), "create_tried": True, "uploaded": 0})
        pool._flight = None
    pool.register(run_dir)
    pool.save()
    paths.judge_batch.unlink()
    paths.judge_batch_input.unlink(missing_ok=True)
