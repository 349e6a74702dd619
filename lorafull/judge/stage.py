"""Judge a run's responses: RUN_DIR/responses.jsonl -> RUN_DIR/scores.jsonl (+ judge_summary.json).

    python -m lorafull.judge RUN_DIR

eval.judge.kind = openai: a judge model through the openai client (any OpenAI-compatible endpoint,
key from the environment variable eval.judge.api_key_env), one prompt per category
(eval.judge.prompts, BELLE's format; default: the package's own). kind = reference: offline scorers
(lorafull.judge.scorers) chosen per class by eval.judge.scorers.

scores.jsonl gets one flushed line per item: {"id", "class", "score" (0..1 or null), "judge", "reply",
"tokens", "cost", ...}. Resumable: items already scored are skipped; items whose requests kept
failing (error_kind "transport") are dropped from the file and tried again. Replies are cached in
eval.judge.cache (SQLite), so nothing already paid for is requested again. One judge per run at a
time (runs.stage_lock): a second one waits for the first, then finds its items done.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from lorafull.config import JudgeConfig, load_run_config, refresh_eval_results, study_dir_of_run
from lorafull.judge.batch import BatchPending, batch_price, judge_batch
from lorafull.judge.cache import JudgeCache, default_cache_path
from lorafull.judge.client import ItemFailed, JudgeSetupError, OpenAIJudge, request_cost, resolve_api_key
from lorafull.judge.prompts import build_messages, check_classes, load_prompts, normalize_class
from lorafull.judge.summary import summarize
from lorafull.runs import (BackgroundJsonlWriter, JsonlWriter, RunPaths, Stage, read_jsonl, redact, repair_jsonl_tail,
                           run_stage_cli, stage_lock, status as run_status, write_json_atomic)

SUMMARY_FILE = "judge_summary.json"


def load_responses(run_dir: Path) -> list[dict]:
    paths = RunPaths.of(run_dir)
    if not paths.responses.exists():
        raise FileNotFoundError(f"{paths.responses}: no responses (run python -m lorafull.generate {run_dir} first)")
    rows = list(read_jsonl(paths.responses))
    for lineno, row in enumerate(rows, 1):
        for key in ("id", "class", "response"):
            if key not in row:
                raise ValueError(f"{paths.responses}:{lineno}: {key}: missing (expected the fields generation writes)")
    return rows


def resume_scores(scores_path: Path) -> set[str]:
    """Ids already judged. Lines of items that failed on transport errors are removed (atomically)
    so those items are judged again; a torn last line from a crash is dropped."""
    repair_jsonl_tail(scores_path)
    rows = list(read_jsonl(scores_path))
    keep = [r for r in rows if r.get("error_kind") != "transport"]
    if len(keep) != len(rows):
        tmp = scores_path.with_name(f".{scores_path.name}.tmp")
        with JsonlWriter(tmp, mode="w") as w:
            for r in keep:
                w.write(r)
        tmp.replace(scores_path)
    return {str(r["id"]) for r in keep}


def check_judge_setup(cfg: JudgeConfig, classes: set[str]) -> None:
    """What can fail before any request (or before generation, see evaluate): key, prompts, classes."""
    if cfg.kind == "reference":
        from lorafull.judge.scorers import SCORERS

        for cls, name in cfg.scorers.items():
            if name not in SCORERS:
                raise JudgeSetupError(f"eval.judge.scorers.{cls}: unknown scorer {name!r} (known: {', '.join(SCORERS)})")
        code_classes = {normalize_class(k) for k, v in cfg.scorers.items() if v == "code"}
        if code_classes & {normalize_class(c) for c in classes}:
            from lorafull.judge.sandbox import SandboxUnavailable, require_isolation

            try:
                require_isolation(cfg.unsafe_code_execution)
            except SandboxUnavailable as e:
                raise JudgeSetupError(str(e)) from None
        return
    if cfg.serve is None:  # a served judge's token comes from its server (lorafull.judge.serve), no key
        resolve_api_key(cfg)
    check_classes(classes, load_prompts(cfg.prompts), cfg.prompts)


def _row(item: dict, **fields) -> dict:
    return {"id": item["id"], "class": item["class"], **fields}


def judge_reference(todo: list[dict], cfg: JudgeConfig, writer, bar) -> None:
    from lorafull.judge.scorers import samples_score, score

    scorers = {normalize_class(k): v for k, v in cfg.scorers.items()}
    for item in todo:
        name = scorers.get(normalize_class(item["class"]), "text")
        samples = item.get("samples") or [item.get("response", "")]  # n samples (eval.num_samples): pass@k
        kw = {"unsafe": cfg.unsafe_code_execution} if name == "code" else {}
        values = [score(name, s, item.get("std_answer", ""), **kw) for s in samples]
        more = {"sample_scores": values, "pass_k": cfg.pass_k} if len(samples) > 1 else {}
        writer.write(_row(item, score=samples_score(name, values, cfg.pass_k), judge=f"reference:{name}", reply=None,
                          tokens=0, cost=0.0, **more))
        bar.update()


async def judge_openai(todo: list[dict], cfg: JudgeConfig, cache: JudgeCache, writer, bar, endpoint=None) -> dict:
    """endpoint: a served judge (lorafull.judge.serve.ServedEndpoint): its token, and how to tell it died."""
    prompts = load_prompts(cfg.prompts)
    judge = OpenAIJudge(cfg, cache, api_key=endpoint.token if endpoint else None,
                        gone=endpoint.gone if endpoint else None)

    async def one(item: dict) -> None:
        cat = prompts[normalize_class(item["class"])]
        messages = build_messages(cat, item.get("question", ""), item.get("response", ""), item.get("std_answer", ""))
        try:
            j = await judge.judge(messages)
        except ItemFailed as e:
            # recorded unscored; "transport" failures are retried by the next run (resume_scores)
            writer.write(_row(item, score=None, judge=cfg.model, reply=None, tokens=0, cost=None,
                              error=redact(str(e)), error_kind=e.kind))
        else:
            row = _row(item, score=j.score, judge=cfg.model, reply=j.replies[-1],
                       tokens=j.prompt_tokens + j.completion_tokens, cost=request_cost(cfg, j.prompt_tokens,
                                                                                       j.completion_tokens),
                       prompt_tokens=j.prompt_tokens, completion_tokens=j.completion_tokens,
                       paid=j.paid_requests, cached=j.cached_replies)
            if len(j.replies) > 1:
                row["replies"] = j.replies
            if cfg.n_samples > 1:
                row["samples"] = j.samples
            if j.score is None:
                row["unreadable"] = j.problem  # no score | n/a | conflicting scores | out of range
            writer.write(row)
        bar.update()

    tasks = [asyncio.ensure_future(one(item)) for item in todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        await judge.close()
    c = judge.counters
    return {"requests": c.requests, "retries": c.retries, "paid_replies": c.paid, "cache_hits": c.cache_hits,
            "paid_tokens": c.paid_prompt_tokens + c.paid_completion_tokens,
            "paid_cost": request_cost(cfg, c.paid_prompt_tokens, c.paid_completion_tokens)}


def _judge_by_batch(run_dir: Path, todo: list[dict], cfg: JudgeConfig, cache, writer, bar) -> dict:
    """The Batch API fills the reply cache (lorafull.judge.batch); scoring from it is the online path's."""
    ready, errors, stats = judge_batch(run_dir, todo, cfg, cache)
    for item in todo:
        if str(item["id"]) in errors:
            error, kind = errors[str(item["id"])]  # "transport" rows are judged again by the next call
            writer.write(_row(item, score=None, judge=cfg.model, reply=None, tokens=0, cost=None,
                              error=redact(error), error_kind=kind))
            bar.update()
    # every reply the online path looks up is in the cache now (batch.walk followed its steps): nothing is bought
    counters = asyncio.run(judge_openai(ready, batch_price(cfg), cache, writer, bar)) if ready else {}
    return {**counters, **stats}


def judge_run(run_dir: str | Path, progress: bool = True) -> dict:
    """Judge every response not judged yet; returns the run's score summary."""
    run_dir = Path(run_dir)
    run_cfg = load_run_config(run_dir)
    cfg = run_cfg.eval.judge
    with stage_lock(run_dir, "judge"):
        refresh_eval_results(run_dir, run_cfg)  # scores of another judge go to eval_history/, never mixed in
        responses = load_responses(run_dir)
        check_judge_setup(cfg, {r["class"] for r in responses})  # before any request
        return _judge_locked(run_dir, cfg, responses, progress, run_cfg.data.cache_dir)


def _judge_name(cfg: JudgeConfig, cache_dir) -> str:
    if cfg.kind != "openai":
        return "reference"
    if cfg.serve is not None:  # the served model by content (lorafull.judge.serve.client)
        from lorafull.judge.serve.client import served_name

        return served_name(cfg, cache_dir)
    return cfg.model


def _judge_online(run_dir: Path, todo: list[dict], cfg: JudgeConfig, cache, writer, bar, cache_dir) -> dict:
    if cfg.serve is None:
        return asyncio.run(judge_openai(todo, cfg, cache, writer, bar))
    from lorafull.judge.serve.client import wait_for_server

    endpoint = wait_for_server(study_dir_of_run(run_dir), cfg, cache_dir)
    return asyncio.run(judge_openai(todo, endpoint.judge_config(cfg), cache, writer, bar, endpoint))


def _judge_locked(run_dir: Path, cfg: JudgeConfig, responses: list[dict], progress: bool, cache_dir=None) -> dict:
    from tqdm import tqdm

    paths = RunPaths.of(run_dir)
    done = resume_scores(paths.scores)
    todo = [r for r in responses if str(r["id"]) not in done]
    run_status.started(run_dir, Stage.JUDGE)
    counters: dict = {}
    with BackgroundJsonlWriter(paths.scores) as writer, tqdm(total=len(todo), desc=f"judge {run_dir.name}",
                                                      disable=not progress, unit="item") as bar:
        if cfg.kind == "reference":
            judge_reference(todo, cfg, writer, bar)
        elif todo:
            cache = JudgeCache(cfg.cache or default_cache_path(run_dir))
            try:
                if cfg.mode == "batch":  # the Batch API: submit / poll / score
                    try:
                        counters = _judge_by_batch(run_dir, todo, cfg, cache, writer, bar)
                    except BatchPending as e:  # not failed, not done: the next call polls again
                        run_status.waiting(run_dir, Stage.JUDGE, waiting_for=str(e))
                        return {**summarize(read_jsonl(paths.scores)), "judge": cfg.model, "waiting": str(e)}
                else:
                    counters = _judge_online(run_dir, todo, cfg, cache, writer, bar, cache_dir)
            finally:
                cache.close()
    summary = {**summarize(read_jsonl(paths.scores)), "judge": _judge_name(cfg, cache_dir), "this_process": counters}
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    run_status.done(run_dir, Stage.JUDGE, judge={k: summary[k] for k in ("average", "unscored", "cost", "tokens")})
    return summary


def describe(run_dir: Path, summary: dict) -> str:
    if summary.get("waiting"):
        return f"{run_dir.name}: waiting: {summary['waiting']}"
    avg = summary["average"]
    return (f"{run_dir.name}: average {'-' if avg is None else f'{avg:.4f}'} over {summary['scored']} scored "
            f"items, {summary['unscored']} unscored, cost {summary['cost']}")


def main(argv: list[str] | None = None) -> int:
    return run_stage_cli("judge", __doc__, judge_run, describe, argv)


if __name__ == "__main__":
    sys.exit(main())
