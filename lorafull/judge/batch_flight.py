"""A judge batch pool's traffic with the provider: cutting the queue into batches and submitting them,
and reading a batch that ended. Library module (no command); lorafull.judge.batch_pool is its caller
and holds the pool's lock throughout.

A batch goes out in steps, the pool's state saved after each: its input file is written
(batches/<n>.jsonl), uploaded (input_file_id), then created (create_tried, then batch_id). A process
that dies between two steps leaves a record that the next pump completes; one that died while
creating looks the batch up by its input file first, so no batch is created (and paid) twice. The
openai client's own retries are off for the create call for the same reason.
"""
from __future__ import annotations

import contextlib
import json
import os
import time

from lorafull.config import JudgeConfig
from lorafull.judge.batch_lines import read_line, read_refusal
from lorafull.judge.batch_size import Queued, batch_length, encode_line
from lorafull.judge.batch_walk import ENDPOINT
from lorafull.judge.cache import JudgeCache
from lorafull.judge.client import resolve_api_key
from lorafull.judge.limits import FatalJudgeError, classify
from lorafull.runs import read_jsonl

KEEP_ENDED = 200  # ended batches kept in pool.json, newest last
# uploads of up to 200 MB and their downloads: a longer wait between two reads than a chat request's
FILES_TIMEOUT_S = 120.0


class BatchPending(Exception):
    """The run's requests are not all answered yet; its judging resumes on the next call."""


def open_client(cfg: JudgeConfig):
    import openai

    return openai.OpenAI(api_key=resolve_api_key(cfg), base_url=cfg.base_url,
                         timeout=max(cfg.timeout_s, FILES_TIMEOUT_S))


@contextlib.contextmanager
def pump_errors(cfg: JudgeConfig):
    """The provider's errors while pumping, as the judge reads them: a bad key or an unknown endpoint
    stops the judge (FatalJudgeError); an endpoint that does not answer now leaves the runs waiting
    (the openai client has already retried it), their state saved."""
    import openai

    try:
        yield
    except (openai.APIConnectionError, openai.APIStatusError) as e:
        where = f"the batch API at {cfg.base_url or 'api.openai.com'}"
        text = f"{type(e).__name__}{f' {e.status_code}' if getattr(e, 'status_code', None) else ''}: " \
               f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
        if classify(e) == "retry":
            raise BatchPending(f"{where} did not answer ({text}); asked again on the next call") from None
        raise FatalJudgeError(f"{where}: {text}") from None


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


# ---- a batch's input file, and its custom ids beside it (read at every pump: no JSON to parse) ----
def _keys_path(path):
    return path.with_suffix(".keys")


def write_keys(path, keys: list[str]) -> None:
    tmp = path.with_name(f".{path.stem}.keys.tmp")
    tmp.write_text("".join(f"{k}\n" for k in keys))
    os.replace(tmp, _keys_path(path))


def batch_keys(path) -> list[str]:
    """The custom ids of a batch in flight, in input-file order (line n of the file is keys[n - 1])."""
    if not _keys_path(path).exists():  # written before the input file's rename, or lost: read the file
        write_keys(path, [line["custom_id"] for line in read_jsonl(path)])
    return _keys_path(path).read_text().split()


# ---- sending -------------------------------------------------------------------------------------
def submit(pool, client) -> None:
    """Send the pool's queue as batches, as far as the gathering rule and the token limits allow;
    what stays queued gets its reason in pool.queue.why."""
    s, q, now = pool.settings, pool.queue, time.time()
    refusal = pool.state["refusal"]
    if not q.items:
        return
    if refusal and ((refusal["after_end"] and pool.state["batches"]) or now < refusal["not_before"]):
        when = "once a batch in flight ends" if refusal["after_end"] else f"from {_clock(refusal['not_before'])}"
        q.why = (f"refused for the model's enqueued-token limit at {_clock(refusal['at'])} ({refusal['message']}); "
                 f"sent again {when}, at most {refusal['limit']:,} estimated tokens in flight")
        return
    gathered, why = _gathered(pool, now)
    items = q.items
    while items:
        if not gathered and len(items) < s.max_requests:
            q.why = why
            break
        in_flight = sum(r["tokens"] for r in pool.state["batches"])
        limit = min(s.token_limit, refusal["limit"] if refusal else float("inf"))
        n = batch_length(items, s.max_requests, s.max_bytes, limit - in_flight)
        if n == 0 and pool.state["batches"]:  # room comes back when a batch ends
            which = "eval.judge.enqueued_token_limit" if limit == s.token_limit else \
                f"the model's enqueued-token limit, as its refusal at {_clock(refusal['at'])} showed it"
            q.why = (f"waiting for room under {which}: {in_flight:,} of {limit:,.0f} estimated tokens in "
                     f"flight ({pool.token_note()})")
            break
        _send(pool, client, items[:max(n, 1)])  # alone over the limit, with nothing in flight: it goes alone
        items = items[max(n, 1):]
    q.items = items
    if not items:
        pool.state["queued_since"] = None


def _gathered(pool, now: float) -> tuple[bool, str]:
    """May a part-filled batch go now? When the study's other runs for this pool have all reached it,
    or the oldest request has waited batch_wait_s."""
    since = pool.state["queued_since"] or now
    if now - since >= pool.settings.wait_s:
        return True, ""
    others = pool.runs_on_their_way()
    if not others:
        return True, ""
    names = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    return False, (f"waiting for {len(others)} more run(s) of the study to reach the judge ({names}), at most "
                   f"until {_clock(since + pool.settings.wait_s)} (eval.judge.batch_wait_s)")


def _send(pool, client, chunk: list[Queued]) -> None:
    n = pool.state["next"]
    pool.state["next"] = n + 1
    path = pool.root / "batches" / f"{n}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        for q in chunk:
            f.write(encode_line(q.line))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    write_keys(path, [q.line["custom_id"] for q in chunk])
    rec = {"n": n, "file": path.name, "requests": len(chunk), "bytes": sum(q.size for q in chunk),
           "tokens": sum(q.tokens for q in chunk), "queued": time.time()}
    pool.state["batches"].append(rec)
    flight = pool.in_flight()
    for q in chunk:
        flight[q.line["custom_id"]] = rec
    pool.save()
    finish_creation(pool, client, rec)


def finish_creation(pool, client, rec: dict) -> None:
    """Upload the batch's input file and create the batch, each step at most once."""
    import openai

    if not rec.get("input_file_id"):
        with open(pool.root / "batches" / rec["file"], "rb") as f:
            rec["input_file_id"] = client.files.create(file=f, purpose="batch").id
        rec["uploaded"] = time.time()
        pool.save()
    batch = _find(client, rec) if rec.get("create_tried") else None
    if batch is None:
        rec["create_tried"] = True
        pool.save()
        try:
            batch = client.with_options(max_retries=0).batches.create(
                input_file_id=rec["input_file_id"], endpoint=ENDPOINT, completion_window="24h",
                metadata={"lorafull_pool": pool.name, "batch": str(rec["n"])})
        except openai.BadRequestError as e:  # this file will never do: cut the requests anew next time
            _drop(pool, rec)
            raise FatalJudgeError(f"the provider refused to create a batch of {rec['requests']:,} requests "
                                  f"({rec['bytes'] / 1e6:.1f} MB): {e} (eval.judge.batch_max_requests, "
                                  f"batch_max_mb)") from None
        except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError):
            batch = _find(client, rec)  # created, and only the answer was lost?
            if batch is None:
                raise
    rec.update(batch_id=batch.id, status=batch.status, submitted=time.time())
    pool.save()


def _find(client, rec: dict):
    """The batch created from this record's input file, if any (newest first; stops at older ones)."""
    for batch in client.batches.list(limit=100):
        if batch.input_file_id == rec["input_file_id"]:
            return batch
        if batch.created_at < rec.get("uploaded", 0) - 3600:
            return None
    return None


def _drop(pool, rec: dict) -> None:
    pool.state["batches"].remove(rec)
    for path in (pool.root / "batches" / rec["file"], _keys_path(pool.root / "batches" / rec["file"])):
        path.unlink(missing_ok=True)
    pool._flight = None
    pool.save()


# ---- a batch that ended --------------------------------------------------------------------------
def collect(pool, client, cache: JudgeCache, rec: dict, batch) -> list[str]:
    """Take an ended batch off the flight: its replies into the cache, its failures recorded (a
    transient one waits out the judge's backoff, then goes in the next round). Returns the reason of
    a batch refused whole for no line and no token limit (the judge stops; the next call sends anew)."""
    keys = batch_keys(pool.root / "batches" / rec["file"])
    failures, fatal = pool.state["failures"], []
    if batch.status == "failed":  # refused at validation: nothing ran, nothing was billed
        refusal = read_refusal(batch)
        for line_no, why in refusal.lines.items():
            if 1 <= line_no <= len(keys):
                failures[keys[line_no - 1]] = {"kind": "permanent", "tries": 0,
                                               "error": f"refused at validation: {why}"[:300]}
        if refusal.token_limit:
            _refused(pool, rec, refusal.message, keys)
        elif not refusal.lines:
            fatal.append(f"judge batch {batch.id} failed: {refusal.message}")
    else:
        _download(pool, client, cache, batch, keys)
        if pool.state["refusal"]:
            pool.state["refusal"]["after_end"] = False  # room at the provider again
    pool.state["batches"].remove(rec)
    pool.state["ended"] = (pool.state["ended"] + [{
        "n": rec["n"], "batch_id": batch.id, "status": batch.status, "requests": rec["requests"],
        "tokens": rec["tokens"], "bytes": rec["bytes"], "ended": time.time()}])[-KEEP_ENDED:]
    for path in (pool.root / "batches" / rec["file"], _keys_path(pool.root / "batches" / rec["file"])):
        path.unlink(missing_ok=True)
    pool._flight = None
    pool.save()
    return fatal


def _download(pool, client, cache: JudgeCache, batch, keys: list[str]) -> None:
    sent, outcomes = set(keys), {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        for raw in client.files.content(file_id).text.splitlines():
            if raw.strip():
                out = read_line(json.loads(raw))
                if out.key in sent and (out.key not in outcomes or out.kind == "answered"):
                    outcomes[out.key] = out
    model = pool.identity["model"]
    cache.put_many([(o.key, model, o.reply, o.prompt_tokens, o.completion_tokens)
                    for o in outcomes.values() if o.kind == "answered"])  # stored before anything can fail
    if batch.status == "completed":  # a request a completed batch did not mention: asked again
        for key in sent - outcomes.keys():
            outcomes[key] = read_line({"custom_id": key, "response": None, "error": {
                "code": "server_error", "message": f"no reply in the output of batch {batch.id}"}})
    # the backoff runs from the batch's end: a batch polled hours after it ended has waited it out
    ended = getattr(batch, f"{batch.status}_at", None) or time.time()
    failures, now = pool.state["failures"], min(time.time(), float(ended))
    for key, out in outcomes.items():
        if out.kind == "answered":
            failures.pop(key, None)
        elif out.kind == "permanent":
            failures[key] = {"kind": "permanent", "tries": 0, "error": out.reason}
        elif out.kind == "transient":
            tries = failures.get(key, {}).get("tries", 0) + 1
            failures[key] = {"kind": "transient", "tries": tries, "error": out.reason,
                             "not_before": now + pool.policy().backoff_s(tries - 1)}


def _refused(pool, rec: dict, message: str, keys: list[str]) -> None:
    """A batch refused for the enqueued-token limit: its requests go again later, and from now on the
    batches in flight hold at most what was in flight then plus half the refused batch (the provider
    counts its own way: the limit it showed is learned, not assumed)."""
    others = [r for r in pool.state["batches"] if r is not rec and r.get("batch_id")]
    earlier = pool.state["refusal"] or {"count": 0, "limit": float("inf")}
    now, count = time.time(), earlier["count"] + 1
    if rec["requests"] == 1 and not others:  # alone and nothing else in flight: it can never go
        pool.state["failures"][keys[0]] = {"kind": "permanent", "tries": 0,
                                           "error": f"refused alone for the enqueued-token limit: {message}"[:300]}
    shown = sum(r["tokens"] for r in others) + rec["tokens"] // 2
    pool.state["refusal"] = {"at": now, "count": count, "message": message[:300],
                             "limit": max(1, min(earlier["limit"], shown)), "after_end": bool(others),
                             "not_before": now if others else now + pool.policy().backoff_s(count - 1)}
