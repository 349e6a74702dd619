"""The study's judge servers (eval.judge.serve) on Slurm: one server job per study and judge, in step
with the evaluations that need it.

- launch.grid, after submitting evaluation jobs, appends their ids to the server's `clients` file and
  makes sure a server job will be there for them: none queued or running -> submit one whose dependency
  is `after:` any of those eval jobs (it starts once the first evaluation starts: it loads while that
  job generates its answers); one queued -> cancelled and submitted anew with the new jobs among its
  starters; one running -> nothing more.
- The server job (JudgeServerJob) runs `python -m lorafull.judge.serve SERVER_DIR` and asks Slurm every
  serve.poll_s whether its clients still need it. It ends (COMPLETED) once every client eval job has
  ended. When no client is running and no request came for serve.idle_timeout_s (evaluations waiting
  for their trainings, hours away), it hands over: it submits its successor, `after:` the waiting
  evaluations, records it in job.json and ends -- so it never holds GPUs for nothing.
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
from lorafull.judge.serve.files import ServerPaths, all_servers, read_clients, read_json, server_lock
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


def _starts_after(clients: list[str], infos: dict) -> Optional[str]:
    """`after:` any client still pending (OR); None when one runs already (start now)."""
    states = [job_state(infos, c) for c in clients]
    if any(s is not None and s.state == "RUNNING" for s in states):
        return None
    pending = [c for c, s in zip(clients, states) if s is None or s.active]
    return "?".join(f"after:{c}" for c in pending) or None


def _prune_clients(paths: ServerPaths) -> list[str]:
    """The clients file without eval jobs that have ended (or that Slurm no longer knows)."""
    clients = read_clients(paths)
    infos = query_jobs(clients)
    keep = [c for c in clients if (i := job_state(infos, c)) is not None and i.active]
    paths.clients.write_text("".join(f"{c}\n" for c in keep))
    return keep


def ensure_servers(study: Study, views, eval_jobs: dict[str, str], log: Callable[[str], None] = print) -> list[str]:
    """After eval jobs were submitted: each served judge they need has a server job coming. Returns the
    server job ids submitted."""
    submitted = []
    for key, (paths, served) in served_runs(study, views).items():
        new = [eval_jobs[v.name] for v in served if v.name in eval_jobs]
        if not new:
            continue
        with server_lock(paths):
            with open(paths.clients, "a") as f:
                f.write("".join(f"{j}\n" for j in new))
            job = current_job(paths)
            info = job_state(query_jobs([job]), job) if job else None
            if info is not None and info.state == "RUNNING":
                log(f"  judge server {key}: job {job} runs; {len(new)} more eval job(s) will judge through it")
                continue
            if info is not None and info.active:  # queued for other evaluations: wait for these too
                cancel_jobs([job])
            clients = _prune_clients(paths)
            dependency = _starts_after(clients, query_jobs(clients))
            job = submit_server_job(study.output_dir, study.study.name, paths, study.slurm, dependency)
            submitted.append(job)
            log(f"  sbatch judge server {job} ({key}): starts with the first of {len(clients)} eval job(s)")
    return submitted


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
        if not self._active_clients(paths)[0]:
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

    def _active_clients(self, paths: ServerPaths) -> tuple[list[str], list[str]]:
        """(client eval jobs not ended, those of them running)."""
        clients = read_clients(paths)
        infos = query_jobs(clients)
        states = {c: job_state(infos, c) for c in clients}
        active = [c for c, s in states.items() if s is not None and s.active]
        return active, [c for c in active if states[c].state == "RUNNING"]

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
        when no client needs the server; hand over when idle with none running; else None."""
        state = read_json(paths.state) or {}
        idle_s = time.time() - float(state.get("last_request") or time.time())
        idle = state.get("state") == "serving" and not state.get("in_flight") and idle_s >= serve.idle_timeout_s
        with server_lock(paths):
            active, running = self._active_clients(paths)
            if not active:
                write_json_atomic(paths.job, {"job": os.environ.get("SLURM_JOB_ID"), "ended": time.time()})
                return "stopped: every eval job that needed it has ended"
            if not idle or running:
                return None
            settings = load_study_settings(self.study_dir)
            job = submit_server_job(Path(self.study_dir), settings.study.name, paths, settings.slurm,
                                    "?".join(f"after:{c}" for c in active))
        return f"idle for {idle_s:.0f} s with no eval job running: server job {job} starts with the next evaluation"

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
