"""Where each item of a run stands, walked as the online judge would ask: the requests still to buy,
the items a failed request leaves unscored, and the items whose every reply is in the cache.
Library module (no command); used by lorafull.judge.batch and lorafull.judge.batch_pool.

Per item and sample, follow the attempts through the reply cache: a readable reply ends the sample,
an unreadable one moves on to the re-ask (eval.judge.parse_retries), a missing one is needed, unless
the batches failed it for good: a permanent failure, or a transient one asked max_retries times
already. Needed requests carry the cache key as their custom id, so replies map back to them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from lorafull.config import JudgeConfig
from lorafull.judge.cache import JudgeCache
from lorafull.judge.prompts import build_messages, load_prompts, normalize_class
from lorafull.judge.request import attempts, read_reply, request_key, request_options
from lorafull.runs import RunPaths, read_jsonl

ENDPOINT = "/v1/chat/completions"


@dataclasses.dataclass
class Walk:
    needed: dict[str, tuple[list, int]]  # cache key -> (messages, attempt) still to buy
    errors: dict[str, tuple[str, str]]  # item id -> (why it cannot be scored, error_kind)
    ready: list[dict]  # items whose every reply the online path will find in the cache


def final_failure(failure: dict | None, cfg: JudgeConfig) -> tuple[str, str] | None:
    """(reason, error_kind) when a request's failure is final: permanent ("batch"), or transient and
    tried 1 + max_retries times ("transport", re-asked when the run is judged again, as online)."""
    if not failure:
        return None
    if failure["kind"] == "permanent":
        return failure["error"], "batch"
    if failure["tries"] > cfg.max_retries:
        return f"gave up after {failure['tries']} batch rounds: {failure['error']}"[:300], "transport"
    return None


def walk(todo: list[dict], cfg: JudgeConfig, cache: JudgeCache, failures: dict[str, dict]) -> Walk:
    prompts = load_prompts(cfg.prompts)
    by_class = {c: prompts[normalize_class(c)] for c in {item["class"] for item in todo}}
    messages = [build_messages(by_class[item["class"]], item.get("question", ""), item.get("response", ""),
                               item.get("std_answer", "")) for item in todo]
    needs: dict[int, dict] = {}
    errors: dict[int, tuple[str, str]] = {}
    asking = [(i, sample) for i in range(len(todo)) for sample in range(max(1, cfg.n_samples))]
    for attempt in attempts(cfg):  # attempt by attempt, each looked up for all items at once
        keys = {(i, sample): request_key(cfg, messages[i], sample, attempt) for i, sample in asking}
        hits = cache.get_many(set(keys.values()))
        asking = []
        for (i, sample), key in keys.items():
            if key in hits:
                if not _readable(cfg, hits[key].reply):
                    asking.append((i, sample))  # unreadable: the re-ask
                continue
            error = final_failure(failures.get(key), cfg)
            if error:
                errors.setdefault(i, error)
            else:
                needs.setdefault(i, {})[key] = (messages[i], attempt)
        if not asking:
            break
    out = Walk({}, {}, [])
    for i, item in enumerate(todo):
        if i in errors:
            out.errors[str(item["id"])] = errors[i]
        elif i in needs:
            out.needed.update(needs[i])
        else:
            out.ready.append(item)
    return out


_READABLE: dict[tuple[bool, str], bool] = {}  # (structured, reply) -> whether the reply carries a score


def _readable(cfg: JudgeConfig, reply: str) -> bool:
    """Read once per reply text in this process: a study's pumps walk the same replies again and again."""
    memo = (cfg.structured, reply)
    if memo not in _READABLE:
        if len(_READABLE) > 1_000_000:
            _READABLE.clear()
        _READABLE[memo] = read_reply(cfg, reply).score is not None
    return _READABLE[memo]


def request_line(cfg: JudgeConfig, key: str, messages: list, attempt: int) -> dict:
    """The batch input line of one request, asked exactly as the online judge asks it."""
    return {"custom_id": key, "method": "POST", "url": ENDPOINT,
            "body": {"model": cfg.model, "messages": messages, **request_options(cfg, attempt)}}


def unjudged(run_dir: Path) -> list[dict]:
    """A waiting run's responses not scored yet, read without writing anything (another process may
    be the run's judge): the items its judge would ask about."""
    paths = RunPaths.of(run_dir)
    done = {str(r["id"]) for r in read_jsonl(paths.scores) if r.get("error_kind") != "transport"}
    return [r for r in read_jsonl(paths.responses) if str(r.get("id")) not in done]
