"""The study's judge servers (eval.judge.serve) on Slurm: one server job per study and judge, in step
with the evaluations that need it.

- launch.grid, before it submits evaluation jobs, makes sure a server job will be there for them: none
  queued or running -> one is submitted whose dependency is `afterok:` any of those evaluations'
  trainings (`?`: the first that ends well), or none when an evaluation can start now: it becomes
  eligible when the first evaluation does and, submitted before them, has the higher priority, so the
  evaluations do not take the resources it needs while they wait for it. One queued -> cancelled and
  submitted anew with the new evaluations among its starters; one running -> nothing. The server's
  `clients` file (`<eval job> <its training job or ->` per line) holds a placeholder for them until the
  eval jobs exist.
- The server job (JudgeServerJob) runs `python -m lorafull.judge.serve SERVER_DIR` and asks Slurm every
  serve.poll_s whether its clients still need it. It ends (COMPLETED) once every client eval job has
  ended. When no request came for serve.idle_timeout_s and every remaining evaluation still waits for
  its training (hours away, maybe), it hands over: it submits its successor, `afterok:` those
  trainings, records it in job.json and ends -- so it never holds GPUs for nothing.
- A time-limit or preemption signal requeues it (submitit), SIGTERM (scancel, --cancel) stops it.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable, Optional

import submitit

from lorafull.config import SlurmConfig, Study, load_study_settings, server_key
from lorafull.judge.serve.files import (ServerPaths, all_servers, read_clients, read_json, server_lock,
                                       write_text_atomic)
from lorafull.judge.serve.local import ServerProcess, write_settings
from lorafull.judge.serve.server import load_settings
from lorafull.runs import write_json_atomic

from .job_bodies import _Child
from .jobs import cancel_jobs, job_state, launch_dir, query_jobs
from .resources import Shape, cpu_partition, python_command, study_job_prefix

STOP_WAIT_S = 60.0


def server_shape(slurm: SlurmConfig, serve) -> Shape:
    gpus = 0 if cpu_partition(slurm) else serve.gpus
    return Shape(nodes=1, tasks_per_node=1, gpus_per_node=gpus, cpus_per_task=serve.cpus, mem_gb=serve.mem_gb,
                 timeout_min=serve.timeout_min)


def served_runs_settings(study: Study, views) -> dict[str, object]:
    """key -> serve settings of every served judge the views' evaluations use (nothing written)."""
    return {server_key(v.run.eval.judge.serve): v.run.eval.judge.serve for v in views
            if v.run.eval.judge.serve is not None}


def served_runs(study: Study, views) -> dict[str, tuple[ServerPaths, list]]:
    """key -> (the server's folder, the views whose evaluation judges through it)."""
    out: dict[str, tuple[ServerPaths, list]] = {}
    for view in views:
        if view.run.eval.judge.serve is None:
            continue
        key = server_key(view.run.eval.judge.serve)
        if key not in out:
            out[key] = (write_settings(study.output_dir, view.run.eval.judge.serve, view.run.data.cache_dir), [])
        out[key][1].append(view)
    return out


def current_job(paths: ServerPaths) -> Optional[str]:
    """The server job that serves (or will serve) the study's next evaluations; None once it ended."""
    record = read_json(paths.job) or {}
    return None if record.get("ended") else record.get("job")


def submit_server_job(study_dir: Path, study_name: str, paths: ServerPaths, slurm: SlurmConfig,
                      dependency: Optional[str]) -> str:
    """One sbatch of the server job; job.json names it. Callable from inside a job (a hand-over):
    submitit.helpers.clean_env keeps this job's SLURM_* settings out of the new one."""
    from .executors import _slurm_params

    serve = load_settings(paths)[0]
    python = python_command(slurm)
    ex = submitit.SlurmExecutor(folder=launch_dir(study_dir) / "slurm" / "%j", max_num_timeout=slurm.max_requeues,
                                python=python)
    ex.update_parameters(**_slurm_params(slurm, server_shape(slurm, serve), f"{study_job_prefix(study_name)}-judge",
                                         use_srun=False, extra={"dependency": dependency} if dependency else None))
    with submitit.helpers.clean_env():
        job = ex.submit(JudgeServerJob(str(study_dir), paths.key, python))
    write_json_atomic(paths.job, {"job": job.job_id, "submitted": time.time(), "dependency": dependency})
    return job.job_id


Client = tuple  # (eval job id, or PLACEHOLDER<time> while it is being submitted; its training job id or None)
PLACEHOLDER = "submitting@"
PLACEHOLDER_TTL_S = 600.0
MAX_TERMS = 1000


def read_client_pairs(paths: ServerPaths) -> list[Client]:
    pairs = []
    for line in read_clients(paths, whole_lines=True):
        eval_job, _, train_job = line.partition(" ")
        pairs.append((eval_job, None if train_job.strip() in ("", "-") else train_job.strip()))
    return pairs


def _placeholder_alive(eval_job: str) -> bool:
    return time.time() - float(eval_job[len(PLACEHOLDER):] or 0) <= PLACEHOLDER_TTL_S


def start_condition(clients: list[Client], infos: dict) -> tuple[bool, Optional[str]]:
    """(needed, dependency) of a server for these clients: not needed when every eval job has ended; no
    dependency (start now) when one runs or can start (its training done or none); else `afterok:` any
    of their trainings."""
    terms, needed = [], False
    for eval_job, train_job in clients:
        if eval_job.startswith(PLACEHOLDER):  # being submitted: counts, unless launch.grid died meanwhile
            if not _placeholder_alive(eval_job):
                continue
            info = None
        else:
            info = job_state(infos, eval_job)
            if info is None or not info.active:
                continue  # ended (or forgotten by Slurm)
        needed = True
        train = job_state(infos, train_job) if train_job else None
        if (info is not None and info.state == "RUNNING") or train is None or not train.active:
            return True, None
        terms.append(f"afterok:{train_job}")
    # Slurm takes a long OR list (1,000 terms tested), but not an unbounded one: array tasks mostly end in
    # index order, so the first trainings stand for the rest (an evaluation waits at most serve.wait_s)
    return needed, "?".join(list(dict.fromkeys(terms))[:MAX_TERMS]) or None


def _client_infos(clients: list[Client]) -> dict:
    return query_jobs([j for pair in clients for j in pair if j and not j.startswith(PLACEHOLDER)])


def _write_clients(paths: ServerPaths, clients: list[Client]) -> None:
    write_text_atomic(paths.clients, "".join(f"{e} {t or '-'}\n" for e, t in clients))


def _live_clients(paths: ServerPaths) -> list[Client]:
    """The clients file's eval jobs that have not ended (those Slurm no longer knows are left out)."""
    clients = read_client_pairs(paths)
    infos = _client_infos(clients)
    return [c for c in clients if _placeholder_alive(c[0]) if c[0].startswith(PLACEHOLDER)] + \
        [c for c in clients if not c[0].startswith(PLACEHOLDER) and (i := job_state(infos, c[0])) is not None
         and i.active]


def prepare_servers(study: Study, views, train_jobs: dict[str, Optional[str]],
                    log: Callable[[str], None] = print) -> list[str]:
    """Before the eval jobs are submitted: a server job for each served judge they need unless one runs.
    train_jobs: run -> the training task its evaluation waits for (None: it can start now). Its clients
    get a placeholder (`submitting@<time> <training>`) until record_clients names the eval jobs, so a
    server that starts at once counts them. Returns the server jobs submitted."""
    submitted = []
    for key, (paths, served) in served_runs(study, views).items():
        with server_lock(paths):
            _write_clients(paths, _live_clients(paths) + [(PLACEHOLDER + f"{time.time():.0f}", train_jobs.get(v.name))
                                                          for v in served])
            job = current_job(paths)
            info = job_state(query_jobs([job]), job) if job else None
            if info is not None and info.state == "RUNNING":
                log(f"  judge server {key}: job {job} runs; {len(served)} more evaluation(s) will judge through it")
                continue
            if info is not None and info.active:  # queued for other evaluations: wait for these too
                cancel_jobs([job])
            clients = read_client_pairs(paths)
            _, dependency = start_condition(clients, _client_infos(clients))
            job = submit_server_job(study.output_dir, study.study.name, paths, study.slurm, dependency)
            submitted.append(job)
            log(f"  sbatch judge server {job} ({key}): " + (f"starts after the first of {dependency.count('?') + 1} "
                                                            "training(s)" if dependency else "starts now"))
    return submitted


def record_clients(study: Study, views, eval_jobs: dict[str, str], train_jobs: dict[str, Optional[str]]) -> None:
    """After the eval jobs were submitted: each served judge's clients file names them (placeholders out)."""
    for key, (paths, served) in served_runs(study, views).items():
        new = [(eval_jobs[v.name], train_jobs.get(v.name)) for v in served if eval_jobs.get(v.name)]
        with server_lock(paths):
            _write_clients(paths, [c for c in read_client_pairs(paths) if not c[0].startswith(PLACEHOLDER)] + new)


def active_server_jobs(study_dir: Path) -> list[str]:
    jobs = [j for j in (current_job(p) for p in all_servers(study_dir)) if j]
    infos = query_jobs(jobs)
    return [j for j in jobs if (i := job_state(infos, j)) is not None and i.active]


class JudgeServerJob(submitit.helpers.Checkpointable):
    """The body of a server job: the server process, watched until no eval job needs it."""

    def __init__(self, study_dir: str, key: str, python: str):
        self.study_dir, self.key, self.python = study_dir, key, python
        self._child: Optional[_Child] = None
        self._stop_asked = False

    def __call__(self) -> dict:
        paths = ServerPaths.of(self.study_dir, self.key)
        serve = load_settings(paths)[0]
        signal.signal(signal.SIGTERM, self._on_term)  # scancel: stop the server cleanly (submitit would ignore it)
        if not start_condition(read_client_pairs(paths), _client_infos(read_client_pairs(paths)))[0]:
            print(f"[judge-server] {self.key}: no evaluation needs it any more", flush=True)
            return {"key": self.key, "ended": "not needed"}
        cmd = [*self.python.split(), "-m", "lorafull.judge.serve", str(paths.root)]
        print(f"[judge-server] {' '.join(cmd)}", flush=True)
        self._child = _Child(cmd, dict(os.environ), new_session=True)
        try:
            ended = self._watch(paths, serve)
        finally:
            self._stop_child()
        if ended == "failed":
            raise RuntimeError(f"judge server {self.key} failed: {(read_json(paths.state) or {}).get('error')}")
        print(f"[judge-server] {self.key}: {ended}", flush=True)
        return {"key": self.key, "ended": ended}

    def _watch(self, paths: ServerPaths, serve) -> str:
        next_check = time.monotonic() + serve.poll_s
        while True:
            rc = self._child.wait(1.0)
            if rc is not None:
                return "failed" if rc else "stopped"
            if self._stop_asked:
                return "stopped (cancelled)"
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + serve.poll_s
                ended = self._decide(paths, serve)
                if ended:
                    return ended

    def _decide(self, paths: ServerPaths, serve) -> Optional[str]:
        """Under the server's lock, so that launch.grid adding eval jobs meanwhile is never missed: end
        when no client needs the server; hand over when idle with every client waiting for its training;
        else None."""
        state = read_json(paths.state) or {}
        idle_s = time.time() - float(state.get("last_request") or time.time())
        idle = state.get("state") == "serving" and not state.get("in_flight") and idle_s >= serve.idle_timeout_s
        with server_lock(paths):
            clients = read_client_pairs(paths)
            needed, dependency = start_condition(clients, _client_infos(clients))
            if not needed:
                write_json_atomic(paths.job, {"job": os.environ.get("SLURM_JOB_ID"), "ended": time.time()})
                return "stopped: every eval job that needed it has ended"
            if not idle or dependency is None:
                return None
            settings = load_study_settings(self.study_dir)
            job = submit_server_job(Path(self.study_dir), settings.study.name, paths, settings.slurm, dependency)
        return (f"idle for {idle_s:.0f} s with every evaluation waiting for its training: server job {job} "
                "starts when the first of them can")

    def _on_term(self, *_args) -> None:
        self._stop_asked = True

    def _stop_child(self) -> None:
        child = self._child
        if child is None or child.returncode is not None:
            return
        try:
            os.killpg(child.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if child.wait(STOP_WAIT_S) is None:
            os.killpg(child.proc.pid, signal.SIGKILL)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Time limit or preemption: stop the server; the requeued job starts it again if still needed."""
        self._stop_child()
        return submitit.helpers.DelayedSubmission(JudgeServerJob(self.study_dir, self.key, self.python))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_child"} | {"_child": None}


# ---------------------------------------------------------------------------------------------
# Here, without a scheduler (--executor local / debug)
# ---------------------------------------------------------------------------------------------
class LocalServers:
    """The local executors' served judges: one server subprocess per judge (lorafull.judge.serve.local),
    started before the first evaluation that needs it and stopped after the last one (or when the
    launcher stops). A server that died is started again before the next evaluation that needs it."""

    def __init__(self, study: Study, views, log: Callable[[str], None] = print):
        self.groups = served_runs(study, views)
        self.left = {key: {v.name for v in served} for key, (_, served) in self.groups.items()}
        self.procs = {key: ServerProcess(paths) for key, (paths, _) in self.groups.items()}
        self.log = log

    @staticmethod
    def _key(view) -> Optional[str]:
        serve = view.run.eval.judge.serve
        return server_key(serve) if serve is not None else None

    def before_eval(self, view) -> None:
        proc = self.procs.get(self._key(view))
        if proc is not None and not proc.running():
            proc.start()
            self.log(f"== judge server {proc.paths.key}: python -m lorafull.judge.serve {proc.paths.root} "
                     f"(log {proc.log_path})")

    def after_eval(self, view) -> None:
        key = self._key(view)
        if key in self.left:
            self.left[key].discard(view.name)
            if not self.left[key] and self.procs[key].running():
                self.procs[key].stop()
                self.log(f"== judge server {key} stopped")

    def close(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def _ago(t) -> str:
    return "-" if not t else f"{max(0.0, time.time() - float(t)):.0f} s ago"


def server_status_lines(study_dir: Path, slurm: bool = True) -> list[str]:
    """One line per judge server of the study, for --status: its state, job, address and traffic."""
    lines = []
    for paths in all_servers(study_dir):
        state = read_json(paths.state) or {}
        record = read_json(paths.job) or {}
        job = record.get("job")
        info = job_state(query_jobs([job]), job) if (job and slurm) else None
        name = (read_json(paths.settings) or {}).get("name", "?")
        what = state.get("state", "not started")
        if info is not None and info.active and what in ("not started", "stopped", "failed"):
            what = f"{info.state.lower()} ({info.reason})" if info.reason and info.reason != "None" else info.state.lower()
        parts = [f"judge server {paths.key}: {what}"]
        if job:
            parts.append(f"job {job}" + (f" {info.state}" if info else ""))
        if state.get("state") == "serving":
            parts.append(f"at {state.get('url')}, {state.get('requests', 0)} request(s), "
                         f"{state.get('in_flight', 0)} in flight, last {_ago(state.get('last_request'))}")
        if state.get("error"):
            parts.append(f"error: {state['error']}")
        lines.append("; ".join(parts) + f" [{name}]")
    return lines
