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
        batches/<n>.jsonl    the input file of batch n while it is in flight (<n>.keys: its custom ids)
        needs/<run>.jsonl    the requests a waiting run needed at its last walk
        .pool.lock           one process at a time works on the pool

Each pump (a judge call, or --status) polls the batches in flight, stores what the ended ones
answered, walks the waiting runs for what they still need (first asks, re-asks of unreadable replies,
requests that failed transiently and have waited out their backoff; a run is walked again only when
replies came in since its last walk) and submits that as new batches:
- when the study's other runs that will use the pool have reached it (none is queued or running), or
  the oldest request has waited eval.judge.batch_wait_s, or a full batch is queued;
- within eval.judge.enqueued_token_limit: the estimated tokens (lorafull.judge.batch_size) of the
  batches in flight plus the new one stay under it, the rest waits for a batch to end;
- after a refusal for the provider's enqueued-token cap: the refused requests go again once a batch in
  flight has ended (or, with none in flight, after the judge's backoff), and the batches in flight
  hold at most what was in flight at the refusal plus half the refused batch.
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

from lorafull.config import JudgeConfig, load_run_config, read_eval_fingerprint
from lorafull.judge.batch_flight import (BatchPending, batch_keys, collect, finish_creation, open_client, pump_errors,
                                         submit)
from lorafull.judge.batch_size import Queued, tokenizer_for
from lorafull.judge.batch_walk import Walk, request_line, unjudged, walk
from lorafull.judge.cache import JudgeCache, default_cache_path
from lorafull.judge.limits import FatalJudgeError, RetryPolicy
from lorafull.runs import (Stage, error_line, read_jsonl, read_status, stage_lock, status as run_status,
                           write_json_atomic)

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
    def of(cls, each: list[dict]) -> "Settings":
        """The strictest of several runs' settings (as _settings_of records them)."""
        return cls(min(s["max_requests"] for s in each), min(s["max_bytes"] for s in each),
                   min((s["token_limit"] for s in each if s.get("token_limit")), default=float("inf")),
                   min(s["wait_s"] for s in each), min(s["backoff_base_s"] for s in each))


def _write_lines(path: Path, rows: list[dict]) -> None:
    """A JSON-lines file written whole and renamed into place (one fsync, not one per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _settings_of(cfg: JudgeConfig) -> dict:
    return {"max_requests": cfg.batch_max_requests, "max_bytes": int(cfg.batch_max_mb * MB),
            "token_limit": cfg.enqueued_token_limit, "wait_s": cfg.batch_wait_s, "backoff_base_s": cfg.backoff_base_s}


def _json_settings(settings: Settings) -> dict:
    return {**vars(settings), "token_limit": None if settings.token_limit == float("inf") else settings.token_limit}


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
        self.needs: dict[Path, set[str]] = {}  # waiting run -> the requests it still needs (this pump)
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
                                 ("failures", {}), ("refusal", None), ("next", 1), ("queued_since", None),
                                 ("generation", 0)):
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
        self._record(run_dir)

    def unregister(self, run_dir: Path) -> None:
        if self.state["runs"].pop(self._rel(run_dir), None) is not None:
            self._needs_path(self._rel(run_dir)).unlink(missing_ok=True)

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
        if caller is not None:
            self._record(caller.run_dir)["settings"] = _settings_of(caller.cfg)
        self.settings = Settings.of([r["settings"] for r in self.state["runs"].values() if r.get("settings")]
                                    or [self.state.get("settings") or vars(Settings())])
        self.state["settings"] = _json_settings(self.settings)  # batches of runs that left: their last settings
        fatal = []
        for rec in [r for r in self.state["batches"] if r.get("batch_id")]:
            batch = client.batches.retrieve(rec["batch_id"])
            self.polls += 1
            counts = getattr(batch, "request_counts", None)
            rec.update(status=batch.status, done=getattr(counts, "completed", None), total=getattr(counts, "total", None))
            if batch.status not in RUNNING:
                fatal += collect(self, client, cache, rec, batch)
                self.collected += 1
                self.state["generation"] += 1  # replies and failures changed: the runs are walked again
        for rec in [r for r in self.state["batches"] if not r.get("batch_id")]:
            finish_creation(self, client, rec)  # cut short by a crash or a failed call
        self.save()
        if fatal:
            raise FatalJudgeError("; ".join(fatal))
        self.queue = self._queue(cache, caller)
        submit(self, client)
        self.save()

    def _record(self, run_dir: Path) -> dict:
        return self.state["runs"].setdefault(self._rel(run_dir), {"since": time.time()})

    def _needs_path(self, rel: str) -> Path:
        return self.root / "needs" / f"{hashlib.sha256(rel.encode()).hexdigest()[:16]}.jsonl"

    def _needs_of(self, rel: str, cache: JudgeCache, caller: Optional[Member]) -> Optional[list[Queued]]:
        """The requests a waiting run still needs, walked again only when replies came in since its
        last walk or its eval settings changed (else read back: a pump costs no walk of every run).
        None when the run has left the pool (folder gone, judge settings of another pool)."""
        run_dir, rec, path = self._abs(rel), self.state["runs"][rel], self._needs_path(rel)
        fingerprint = (read_eval_fingerprint(run_dir) or {}).get("fingerprint")
        is_caller = caller is not None and run_dir == Path(caller.run_dir).resolve()
        if not is_caller and rec.get("generation") == self.state["generation"] and rec.get("fingerprint") == \
                fingerprint and path.exists():
            return [Queued(**x) for x in read_jsonl(path)]
        if is_caller:
            member = caller
        else:
            try:
                cfg = load_run_config(run_dir).eval.judge
                member = Member(run_dir, cfg, unjudged(run_dir)) if in_pool(run_dir, cfg, self.root) else None
            except (OSError, ValueError):
                member = None
            if member is None:
                return None
        plan = member.plan if member.plan is not None and not self.collected else \
            walk(member.todo, member.cfg, cache, self.state["failures"])
        now = time.time()
        needed = [Queued.of(request_line(member.cfg, key, msgs, attempt), now)
                  for key, (msgs, attempt) in plan.needed.items()]
        _write_lines(path, [q.to_json() for q in needed])
        rec.update(generation=self.state["generation"], fingerprint=fingerprint, settings=_settings_of(member.cfg))
        return needed

    def _queue(self, cache: JudgeCache, caller: Optional[Member]) -> Queue:
        """What the waiting runs need that is neither in flight nor backing off after a failure."""
        flight, failures = self.in_flight(), self.state["failures"]
        lines: dict[str, Queued] = {}
        self.settled, self.needs = [], {}
        for rel in list(self.state["runs"]):
            needed = self._needs_of(rel, cache, caller)
            if needed is None:
                self.unregister(self._abs(rel))
                continue
            if not needed:
                self.settled.append(self._abs(rel))
            self.needs[self._abs(rel)] = {q.line["custom_id"] for q in needed}
            for q in needed:
                if q.line["custom_id"] not in flight:
                    lines.setdefault(q.line["custom_id"], q)
        # a transient failure waits out the online judge's backoff, counted from the end of its batch;
        # one that ends within BACKOFF_SLEEP_S is waited for here, so that it joins this round
        now = time.time()
        due = [failures[k]["not_before"] for k in lines if failures.get(k, {}).get("not_before", 0) > now]
        if due and max(due) - now <= BACKOFF_SLEEP_S:
            time.sleep(max(due) - now)
        now = time.time()
        queue = Queue()
        queue.items = [q for key, q in lines.items() if failures.get(key, {}).get("not_before", 0) <= now]
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


def _describe_batch(rec: dict) -> str:
    if not rec.get("batch_id"):
        return f"batch {rec['n']} being submitted ({rec['requests']} requests)"
    done = f"{rec['done']}/{rec['total']} done" if rec.get("total") else f"{rec['requests']} requests"
    return f"judge batch {rec['batch_id']} is {rec.get('status', 'validating')} ({done})"


def _tell_waiting_runs(pool: BatchPool) -> None:
    """Each run still waiting gets the current reason in its status.json (what --status shows for it)."""
    for run_dir, keys in pool.needs.items():
        status = read_status(run_dir)
        if keys and status.get("state") == "waiting" and status.get("stage") == "judge":
            why = pool.why_waiting(keys)
            if why != status.get("waiting_for"):
                run_status.waiting(run_dir, Stage.JUDGE, waiting_for=why)


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
                if not (pool.state["runs"] or pool.state["batches"]):
                    continue  # nothing waits on it, nothing in flight
                pool.pump(open_client(cfg), cache)
                _tell_waiting_runs(pool)
            out.notes.append(pool.describe())
        except BatchPending as e:  # the endpoint did not answer: the runs go on waiting
            out.notes.append(f"{pool.identity['model']}: {e}")
        except Exception as e:  # noqa: BLE001 -- one line per pool (a missing key, a refused batch...)
            out.notes.append(f"{pool.identity['model']}: {error_line(e)}")
        finally:
            cache.close()
        out.settled += pool.settled
        out.polls += pool.polls
    return out
