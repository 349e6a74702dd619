"""The study's judge batches: one submitter per judge model for all the runs of a study.

Library module (no command): `python -m lorafull.judge RUN_DIR` reaches it through lorafull.judge.batch,
and `launch.grid CONFIG --status` through poll_study. It loads no model.

A run in eval.judge.mode: batch registers with the pool of its judge (model, endpoint, key variable)
and goes on waiting. The pool's requests for every waiting run go into shared batches, each cut at
eval.judge.batch_max_requests and batch_max_mb; so polling the study costs one call per batch in
flight, not one per run. A request is keyed by its cache key: runs asking the same prompt share it,
and a reply lands in the shared reply cache, from which each run's judge writes its own scores.jsonl.

    CACHE_DIR/judge_batches/<model>-<hash>/   (CACHE_DIR: the folder of eval.judge.cache)
        pool.json            the runs waiting on it, batches in flight, failed requests, a refusal
        batches/<n>.jsonl    the input file of batch n, while it is in flight
        .pool.lock           one process at a time works on the pool

Each pump (a judge call, or --status) polls the batches in flight, stores what the ended ones
answered, walks the waiting runs for what they still need (first asks, re-asks of unreadable replies,
requests that failed transiently and have waited out their backoff) and submits that as new batches:
- when the study's other runs that will use the pool have reached it (none is queued or running), or
  the oldest request has waited eval.judge.batch_wait_s, or a full batch is queued;
- within eval.judge.enqueued_token_limit: the estimated tokens (lorafull.judge.batch_size) of the
  batches in flight plus the new one stay under it, the rest waits for a batch to end;
- after a refusal for the provider's enqueued-token cap: the refused requests go again once a batch in
  flight has ended (or, with none in flight, after the judge's backoff), in batches of at most half
  the refused one's tokens.
Nothing is paid twice: a request in flight is never sent again; the state is saved after writing the
input file, after the upload and before and after creating the batch, and a batch whose creation
was cut short is looked up by its input file before another is created.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from lorafull.config import JudgeConfig, load_run_config
from lorafull.judge.batch_flight import (BatchPending, batch_keys, collect, finish_creation, open_client, pump_errors,
                                         submit)
from lorafull.judge.batch_size import Queued, tokenizer_for
from lorafull.judge.batch_walk import Walk, request_line, unjudged, walk
from lorafull.judge.cache import JudgeCache, default_cache_path
from lorafull.judge.limits import FatalJudgeError, RetryPolicy
from lorafull.runs import read_status, stage_lock, write_json_atomic

POOL_FILE = "pool.json"
RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
MB = 1_000_000
BACKOFF_SLEEP_S = 10.0  # a backoff ending sooner than this is slept out in the pump, not left to the next call


def identity(cfg: JudgeConfig) -> dict:
    return {"model": cfg.model, "base_url": cfg.base_url or None, "api_key_env": cfg.api_key_env}


def pool_dir(run_dir: Path, cfg: JudgeConfig) -> Path:
    cache = Path(cfg.cache) if cfg.cache else default_cache_path(run_dir)
    digest = hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:8]
    return cache.resolve().parent / "judge_batches" / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', cfg.model)[:40]}-{digest}"


def in_pool(run_dir: Path, cfg: JudgeConfig, root: Path) -> bool:
    return cfg.kind == "openai" and cfg.mode == "batch" and pool_dir(run_dir, cfg) == root


@dataclass
class Member:
    """A run waiting on the pool, with what its judge would ask about."""
    run_dir: Path
    cfg: JudgeConfig
    todo: list[dict]
    plan: Optional[Walk] = None  # where it stood before this pump, if its judge just walked it


@dataclass
class Settings:
    """The strictest of the waiting runs' settings (one study normally has one)."""
    max_requests: int = 50_000
    max_bytes: int = 200 * MB
    token_limit: float = float("inf")
    wait_s: float = 3600.0
    backoff_base_s: float = 1.0

    @classmethod
    def of(cls, cfgs: list[JudgeConfig]) -> "Settings":
        return cls(min(c.batch_max_requests for c in cfgs), int(min(c.batch_max_mb for c in cfgs) * MB),
                   min((c.enqueued_token_limit for c in cfgs if c.enqueued_token_limit), default=float("inf")),
                   min(c.batch_wait_s for c in cfgs), min(c.backoff_base_s for c in cfgs))


@dataclass
class Queue:
    """This pump's requests waiting for a batch, and why the last of them wait."""
    items: list[Queued] = field(default_factory=list)
    why: str = ""


class BatchPool:
    def __init__(self, root: Path, ident: dict):
        self.root, self.identity = Path(root), ident
        self.state: dict = {}
        self.settings = Settings()
        self.polls = 0  # batches.retrieve calls of this process
        self.collected = 0  # batches that ended and were read by this process
        self.settled: list[Path] = []  # waiting runs whose every request is answered or failed for good
        self.queue = Queue()
        self._flight: Optional[dict[str, dict]] = None  # cache key -> the in-flight batch holding it

    @classmethod
    def of_run(cls, run_dir: Path, cfg: JudgeConfig) -> "BatchPool":
        return cls(pool_dir(run_dir, cfg), identity(cfg))

    @property
    def name(self) -> str:
        return self.root.name

    # ---- state ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def opened(self) -> Iterator["BatchPool"]:
        """Hold the pool's lock (one process at a time), with its state loaded."""
        with stage_lock(self.root, "pool", on_wait=lambda _: None):
            path = self.root / POOL_FILE
            self.state = json.loads(path.read_text()) if path.exists() else {}
            for key, default in (("identity", self.identity), ("runs", {}), ("batches", []), ("ended", []),
                                 ("failures", {}), ("refusal", None), ("next", 1), ("queued_since", None)):
                self.state.setdefault(key, default)
            self._flight = None
            yield self

    def save(self) -> None:
        write_json_atomic(self.root / POOL_FILE, self.state)

    def _rel(self, run_dir: Path) -> str:
        # relative to the pool: a study moved with its cache keeps its waiting runs
        return os.path.relpath(Path(run_dir).resolve(), self.root)

    def _abs(self, rel: str) -> Path:
        return (self.root / rel).resolve()

    def registered(self, run_dir: Path) -> bool:
        return self._rel(run_dir) in self.state["runs"]

    def register(self, run_dir: Path) -> None:
        self.state["runs"].setdefault(self._rel(run_dir), {"since": time.time()})

    def unregister(self, run_dir: Path) -> None:
        self.state["runs"].pop(self._rel(run_dir), None)

    def in_flight(self) -> dict[str, dict]:
        """cache key -> the batch in flight that holds it (read from the batches' input files)."""
        if self._flight is None:
            self._flight = {}
            for rec in self.state["batches"]:
                self._flight.update(dict.fromkeys(batch_keys(self.root / "batches" / rec["file"]), rec))
        return self._flight

    # ---- one pump ------------------------------------------------------------------------------
    def pump(self, client, cache: JudgeCache, caller: Optional[Member] = None) -> None:
        """Poll the batches in flight, store what ended, and submit what the waiting runs need."""
        members = self._members(caller)
        if members:
            self.settings = Settings.of([m.cfg for m in members])
            self.state["settings"] = {**vars(self.settings), "token_limit": _finite(self.settings.token_limit)}
        elif self.state.get("settings"):  # batches of runs that left: polled under their last settings
            self.settings = Settings(**{**self.state["settings"], "token_limit": _finite(
                self.state["settings"]["token_limit"]) or float("inf")})
        fatal = []
        for rec in [r for r in self.state["batches"] if r.get("batch_id")]:
            batch = client.batches.retrieve(rec["batch_id"])
            self.polls += 1
            counts = getattr(batch, "request_counts", None)
            rec.update(status=batch.status, done=getattr(counts, "completed", None), total=getattr(counts, "total", None))
            if batch.status not in RUNNING:
                fatal += collect(self, client, cache, rec, batch)
                self.collected += 1
        for rec in [r for r in self.state["batches"] if not r.get("batch_id")]:
            finish_creation(self, client, rec)  # cut short by a crash or a failed call
        self.save()
        if fatal:
            raise FatalJudgeError("; ".join(fatal))
        self.queue = self._queue(members, cache)
        submit(self, client)
        self.save()

    def _members(self, caller: Optional[Member]) -> list[Member]:
        """The waiting runs; a run whose folder, responses or judge settings left this pool leaves it."""
        out = []
        for rel in list(self.state["runs"]):
            run_dir = self._abs(rel)
            if caller is not None and run_dir == Path(caller.run_dir).resolve():
                out.append(caller)
                continue
            try:
                cfg = load_run_config(run_dir).eval.judge
                member = Member(run_dir, cfg, unjudged(run_dir)) if in_pool(run_dir, cfg, self.root) else None
            except (OSError, ValueError):
                member = None
            if member is None:
                self.state["runs"].pop(rel)
            else:
                out.append(member)
        return out

    def _queue(self, members: list[Member], cache: JudgeCache) -> Queue:
        """What the waiting runs need that is neither in flight nor backing off after a failure."""
        flight, failures = self.in_flight(), self.state["failures"]
        lines: dict[str, dict] = {}
        self.settled = []
        for m in members:
            plan = m.plan if m.plan is not None and not self.collected else walk(m.todo, m.cfg, cache, failures)
            if not plan.needed:
                self.settled.append(m.run_dir)
            for key, (msgs, attempt) in plan.needed.items():
                if key not in flight and key not in lines:
                    lines[key] = request_line(m.cfg, key, msgs, attempt)
        # a transient failure waits out the online judge's backoff, counted from the end of its batch;
        # one that ends within BACKOFF_SLEEP_S is waited for here, so that it joins this round
        now = time.time()
        due = [failures[k]["not_before"] for k in lines if failures.get(k, {}).get("not_before", 0) > now]
        if due and max(due) - now <= BACKOFF_SLEEP_S:
            time.sleep(max(due) - now)
        now = time.time()
        queue = Queue()
        queue.items = [Queued.of(line, now) for key, line in lines.items()
                       if failures.get(key, {}).get("not_before", 0) <= now]
        if len(queue.items) < len(lines):
            later = min(failures[k]["not_before"] for k in lines if failures.get(k, {}).get("not_before", 0) > now)
            queue.why = (f"{len(lines) - len(queue.items)} request(s) wait out their backoff after a transient "
                         f"failure, until {time.strftime('%H:%M:%S', time.localtime(later))} at the earliest")
        if not queue.items:
            self.state["queued_since"] = None
        elif self.state["queued_since"] is None:
            self.state["queued_since"] = now
        return queue

    # ---- the study's other runs ----------------------------------------------------------------
    def runs_on_their_way(self) -> list[str]:
        """Runs of the waiting runs' studies that will use this pool but have not reached it yet
        (queued or running): their requests should go into the same batches."""
        folders = {self._abs(rel).parent for rel in self.state["runs"]}
        names = []
        for folder in folders:
            for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                if self.registered(run_dir) or read_status(run_dir).get("state") not in ("queued", "running"):
                    continue
                try:
                    cfg = load_run_config(run_dir).eval.judge
                except (OSError, ValueError):
                    continue
                if in_pool(run_dir, cfg, self.root):
                    names.append(run_dir.name)
        return names

    # ---- what waits, and why -------------------------------------------------------------------
    def why_waiting(self, keys) -> str:
        """One line for a run whose requests `keys` are not all answered yet."""
        flight, keys = self.in_flight(), set(keys)
        recs = {flight[k]["n"]: flight[k] for k in keys if k in flight}
        queued = sum(1 for q in self.queue.items if q.line["custom_id"] in keys)
        parts = [_describe_batch(r) for r in sorted(recs.values(), key=lambda r: r["n"])[:3]]
        if len(recs) > 3:
            parts.append(f"{len(recs) - 3} more batch(es) in flight")
        if queued:
            parts.append(f"{queued} request(s) queued for a shared batch of {self.identity['model']}: "
                         f"{self.queue.why or 'submitted by the next call'}")
        elif self.queue.why and not recs:
            parts.append(self.queue.why)
        return "; ".join(parts) or f"waiting on the judge batches of {self.identity['model']}"

    def describe(self) -> str:
        """One line for --status: the pool's batches, queue and runs."""
        batches = self.state["batches"]
        text = f"{self.identity['model']} ({self.identity['base_url'] or 'api.openai.com'}): "
        text += f"{len(batches)} batch(es) in flight" + (": " + ", ".join(_describe_batch(r) for r in batches[:3])
                                                         if batches else "")
        if self.queue.items:
            text += f"; {len(self.queue.items)} request(s) queued: {self.queue.why or 'submitted next call'}"
        elif self.queue.why:
            text += f"; {self.queue.why}"
        waiting = len(self.state["runs"]) - len(self.settled)
        return text + f"; {waiting} run(s) waiting on it, {len(self.settled)} with every reply in"

    def token_note(self) -> str:
        _, how = tokenizer_for(self.identity["model"])
        return f"tokens estimated by {how}"

    def policy(self) -> RetryPolicy:
        return RetryPolicy(base_s=self.settings.backoff_base_s)


def _finite(x: Optional[float]) -> Optional[float]:
    return x if x is not None and x != float("inf") else None


def _describe_batch(rec: dict) -> str:
    if not rec.get("batch_id"):
        return f"batch {rec['n']} being submitted ({rec['requests']} requests)"
    done = f"{rec['done']}/{rec['total']} done" if rec.get("total") else f"{rec['requests']} requests"
    return f"judge batch {rec['batch_id']} is {rec.get('status', 'validating')} ({done})"


@dataclass
class StudyPoll:
    settled: list[Path] = field(default_factory=list)  # runs whose judge can now write every score
    notes: list[str] = field(default_factory=list)
    polls: int = 0


def poll_study(runs: list[tuple[Path, JudgeConfig]]) -> StudyPoll:
    """Pump every judge batch pool of a study's runs once: one poll per batch in flight, whatever the
    number of runs. Returns the runs now ready to be scored (their judge reads the cache, loads no
    model and asks nothing more) and one line per pool for --status."""
    pools: dict[Path, tuple[Path, JudgeConfig]] = {}
    for run_dir, cfg in runs:
        if cfg.kind == "openai" and cfg.mode == "batch":
            pools.setdefault(pool_dir(run_dir, cfg), (run_dir, cfg))
    out = StudyPoll()
    for root, (run_dir, cfg) in sorted(pools.items()):
        if not (root / POOL_FILE).exists():
            continue
        pool = BatchPool(root, identity(cfg))
        cache = JudgeCache(cfg.cache or default_cache_path(run_dir))
        try:
            with pool.opened(), pump_errors(cfg):
                pool.pump(open_client(cfg), cache)
            out.notes.append(pool.describe())
        except (BatchPending, RuntimeError) as e:
            out.notes.append(f"{pool.identity['model']}: {e}")
        finally:
            cache.close()
        out.settled += pool.settled
        out.polls += pool.polls
    return out
