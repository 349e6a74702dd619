"""A persistent cache of judge replies (SQLite in WAL mode), so a rerun or a crash never pays twice.

Key = sha256 of (judge model, the full prompt messages, sample index, attempt): the same question
asked of the same judge is answered once, whichever run or process asks. WAL lets several processes
(e.g. the eval jobs of a study's runs) read and write the one file at the same time; a busy timeout
makes a writer wait for another instead of failing. Every reply is committed as soon as it arrives,
before anything else is done with it. Temperature and max_tokens are not part of the key: to judge
again under other settings, point eval.judge.cache at a new file.

Claims make "paid once" hold across processes: before its request, a process claims the key (a row
in `claims` with its owner and a lease). Another process that finds the key claimed waits for the
reply to appear instead of buying it too; if the owner gives up (releases) or dies (a process of this
host that no longer exists, or a lease run out on another host), the waiter claims the key itself.
The owner renews the lease before every attempt and wait. Owners are "host:pid:tag".

The cache also counts items failing in a row per endpoint for all the processes that share it
(eval.judge.max_consecutive_failures is a study-level stop).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lorafull.runs import file_lock


def cache_key(model: str, messages: list[dict], sample: int, attempt: int = 0, extra: Optional[dict] = None) -> str:
    payload = {"model": model, "messages": messages, "sample": sample, "attempt": attempt, **(extra or {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

STALE_STREAK_S = 600.0


def default_cache_path(run_dir: str | Path) -> Path:
    """eval.judge.cache when unset: STUDY_DIR/cache/judge.sqlite, shared by the study's runs."""
    return Path(run_dir).resolve().parent.parent / "cache" / "judge.sqlite"


def _dead_here(owner: str) -> bool:
    """True for an owner process of this host that has exited (killed mid-request)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


@dataclass
class CachedReply:
    reply: str
    prompt_tokens: int
    completion_tokens: int


class JudgeCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode (isolation_level=None): each INSERT is its own transaction, durable at once
        self.db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout=60000")
        # Switching a new file to WAL, and creating its tables, happen in rollback-journal mode, where
        # SQLite answers some lock conflicts with "database is locked" at once instead of waiting (its
        # deadlock avoidance): several eval jobs opening one new cache together failed that way. One
        # process at a time sets the file up, under a lock file beside it; WAL then stays on the file.
        with file_lock(f"{self.path}.setup.lock", poll_s=0.05, what=f"{self.path}: set up by another process"):
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT, "
                "prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT, expires REAL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS failures (endpoint TEXT PRIMARY KEY, in_a_row INTEGER, "
                            "last REAL)")
        # NORMAL in WAL survives a killed process (the WAL is on disk); only an OS crash may lose the tail
        self.db.execute("PRAGMA synchronous=NORMAL")

    def get(self, key: str) -> Optional[CachedReply]:
        row = self.db.execute("SELECT reply, prompt_tokens, completion_tokens FROM replies WHERE key = ?",
                              (key,)).fetchone()
        return CachedReply(*row) if row else None

    def get_many(self, keys) -> dict[str, CachedReply]:
        """The cached replies of those `keys` that have one: one query per 500 keys, not one per key
        (a batch walk looks up every request of a study)."""
        keys, found = list(keys), {}
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            rows = self.db.execute("SELECT key, reply, prompt_tokens, completion_tokens FROM replies WHERE key IN "
                                   f"({','.join('?' * len(part))})", part).fetchall()
            found.update((row[0], CachedReply(*row[1:])) for row in rows)
        return found

    def put(self, key: str, model: str, reply: str, prompt_tokens: int, completion_tokens: int) -> None:
        # OR IGNORE: if another process stored the same key meanwhile, its reply stays (first one wins)
        self.db.execute("INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                        (key, model, reply, prompt_tokens, completion_tokens, time.time()))

    def put_many(self, rows: list[tuple[str, str, str, int, int]]) -> None:
        """(key, model, reply, prompt_tokens, completion_tokens) rows in one transaction: a downloaded
        batch of 50,000 replies is stored at once, all or nothing."""
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                                [(*row, now) for row in rows])
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def claim(self, key: str, owner: str, lease_s: float) -> bool:
        """True when `owner` may request `key` now: nobody holds it, the holder's lease ran out, or
        `owner` already holds it (the lease is renewed). One transaction, so two claimants never both win."""
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
            mine = row is None or row[0] == owner or row[1] < now or _dead_here(row[0])
            if mine:
                self.db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (key, owner, now + lease_s))
        finally:
            self.db.execute("COMMIT")
        return mine

    def release(self, key: str, owner: str) -> None:
        self.db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner))

    def count_failure(self, endpoint: str) -> int:
        """One more item failed at `endpoint`; returns how many failed in a row, counted over every
        process sharing this cache (the study's runs), so a dead endpoint stops the whole study."""
        now = time.time()
        # a streak whose last failure is older than STALE_STREAK_S (yesterday's outage) starts again
        self.db.execute("INSERT INTO failures VALUES (?, 1, ?) ON CONFLICT(endpoint) DO UPDATE SET "
                        "in_a_row = CASE WHEN last < ? THEN 1 ELSE in_a_row + 1 END, last = ?",
                        (endpoint, now, now - STALE_STREAK_S, now))
        return self.db.execute("SELECT in_a_row FROM failures WHERE endpoint = ?", (endpoint,)).fetchone()[0]

    def count_success(self, endpoint: str) -> None:
        self.db.execute("UPDATE failures SET in_a_row = 0 WHERE endpoint = ? AND in_a_row > 0", (endpoint,))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self.db.close()
