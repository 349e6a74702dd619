"""The eval side of a served judge: find the study's server, wait for it within a bound, judge through it,
and tell a server that died from a slow one.

An eval job reaches its judge at STUDY_DIR/judge_server/<key>/address.json (0600: url, bearer token,
name). It waits at most eval.judge.serve.wait_s for that file to name a healthy server of the judge
its settings name (by content: a changed model is another judge), and stops at once with the server's
own error when the server it waits for has failed. While judging, a request that cannot connect asks
`gone()`: a server whose state says stopped or failed, whose address was withdrawn or replaced, or
that no longer answers, stops the judge with one line (the items already judged stay in scores.jsonl
and the reply cache: `launch.grid --retry` judges only the rest, through a new server).

Library module (no command).
"""
from __future__ import annotations

import dataclasses
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from lorafull.config import JudgeConfig, served_identity, served_label, server_key
from lorafull.judge.serve.files import ServerPaths, read_json
from lorafull.runs import register_secret

POLL_S = 2.0
GONE_CONFIRM_S = 15.0
RETRY_HINT = "launch.grid --retry starts a new server and judges only what is missing"


def served_name(cfg: JudgeConfig, cache_dir: Optional[str]) -> str:
    """The judge's name in score rows, the reply cache and the report: the served model by content."""
    return served_label(served_identity(cfg.serve, cache_dir))


def health(url: str, timeout_s: float = 5.0) -> Optional[str]:
    """None when GET <server>/health answers 200, else what went wrong (one phrase)."""
    root = url.rsplit("/v1", 1)[0]
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=timeout_s) as r:
            return None if r.status == 200 else f"health check answered {r.status}"
    except urllib.error.HTTPError as e:
        return f"health check answered {e.code}"
    except (OSError, urllib.error.URLError) as e:
        return f"nothing answers at {root} ({getattr(e, 'reason', e)})"


@dataclass
class ServedEndpoint:
    paths: ServerPaths
    url: str
    token: str
    name: str
    instance: str

    def judge_config(self, cfg: JudgeConfig) -> JudgeConfig:
        """The run's judge settings aimed at this server, named by the served model's identity."""
        return dataclasses.replace(cfg, base_url=self.url, model=self.name)

    def gone(self) -> Optional[str]:
        """Why this server can answer no more (one line), or None while it may still answer. Asked after
        a request failed: a health check that fails too is looked at for up to GONE_CONFIRM_S (a dying
        server withdraws its address and records why within a second or two)."""
        deadline = time.monotonic() + GONE_CONFIRM_S
        while True:
            reason = self._ended()
            if reason:
                return f"judge server {self.paths.key} ({self.name}) {reason}; {RETRY_HINT}"
            problem = health(self.url)
            if problem is None:
                return None
            if time.monotonic() > deadline:
                return f"judge server {self.paths.key} ({self.name}) died during the evaluation: {problem}; {RETRY_HINT}"
            time.sleep(1.0)

    def _ended(self) -> Optional[str]:
        state = read_json(self.paths.state) or {}
        if state.get("instance") == self.instance and state.get("state") in ("stopped", "failed"):
            return f"{state['state']} during the evaluation" + (f": {state['error']}" if state.get("error") else "")
        address = read_json(self.paths.address)
        if address is None or address.get("instance") != self.instance:
            return "ended during the evaluation (its address was withdrawn)"
        return None


def _current_job(paths: ServerPaths) -> Optional[str]:
    record = read_json(paths.job) or {}
    return None if record.get("ended") else record.get("job")


def _failed_for_good(paths: ServerPaths, state: dict) -> bool:
    """The server this job waits for has failed: the study's current server job, or (no Slurm job coming:
    the local executors, the agreement command) the server process itself."""
    if state.get("state") != "failed":
        return False
    job = _current_job(paths)
    return job is None or str(state.get("job")) == str(job)


def _waiting_for(paths: ServerPaths, state: dict) -> str:
    job = _current_job(paths)
    where = f"server job {job}" if job else "the server"
    if not state:
        return f"{where} has not started"
    return f"{where} is {state.get('state')}" + (f": {state['error']}" if state.get("error") else "")


def wait_for_server(study_dir: str | Path, cfg: JudgeConfig, cache_dir: Optional[str],
                    log: Callable[[str], None] = print) -> ServedEndpoint:
    """The study's server for this run's judge (under STUDY_DIR/judge_server/), once it answers;
    RuntimeError (one line) after eval.judge.serve.wait_s, or at once when it failed."""
    paths = ServerPaths.of(study_dir, server_key(cfg.serve))
    name = served_name(cfg, cache_dir)
    deadline = time.monotonic() + cfg.serve.wait_s
    told = False
    while True:
        address, state = read_json(paths.address), read_json(paths.state) or {}
        if address is not None:
            if address.get("name") != name:
                raise RuntimeError(f"eval.judge.serve: the study's server {paths.key} serves {address.get('name')}, "
                                   f"but this run's judge is {name} (the model changed): run launch.grid again")
            if health(address["url"]) is None:
                register_secret(address["token"])  # never in an error line, a status or a log
                return ServedEndpoint(paths, address["url"], address["token"], name, address.get("instance", ""))
        if _failed_for_good(paths, state):
            raise RuntimeError(f"judge server {paths.key} failed: {state.get('error')}; {RETRY_HINT}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no judge server answered within eval.judge.serve.wait_s={cfg.serve.wait_s:g} s "
                               f"({_waiting_for(paths, state)}; {paths.root})")
        if not told:
            log(f"[judge] waiting for judge server {paths.key} ({_waiting_for(paths, state)})")
            told = True
        time.sleep(POLL_S)
