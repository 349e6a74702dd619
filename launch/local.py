"""Carry out a Plan on this machine, without a scheduler (launch.grid --executor local | debug).

local: each stage (`python -m lorafull.train RUN_DIR`, `... lorafull.evaluate RUN_DIR`, `... lorafull.report
STUDY_DIR`) is a subprocess; independent runs go in parallel, up to --parallel at once (default: the
CPU cores this process may use divided by the processes of one run), with the order and dependencies
of a Slurm submission: a run's evaluation after its training, a chained run's training after its
parent's, the report after every evaluation (whether it failed or not). Each stage gets an equal share
of the cores as its thread budget (OMP/MKL/OpenBLAS threads, torch's intra-op threads), so runs side by
side never oversubscribe the CPU. A stage's output goes to RUN_DIR/logs/<stage>.log (the report's to
STUDY_DIR/launch/logs/report.log); the terminal gets one line per event and the overall progress.

Interrupts: every stage runs in its own session, so a terminal's Ctrl-C reaches only this process.
The first SIGINT / SIGTERM / SIGHUP passes SIGINT on to the running stages: a training saves a
checkpoint at its next step and exits (status "interrupted"), an evaluation stops (its jsonl files
keep what was written); runs that never started stay new. One line then says how to go on: the same
command resumes (no --retry). A third signal kills what still runs (it resumes from its last
checkpoint). debug: the same stages one after another in this process, for a debugger.
"""
from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from lorafull.config import Study
from lorafull.config.resources import processes_per_node
from lorafull.runs import RunPaths, read_status, status as run_status

from .jobs import Ledger, launch_dir
from .arrays import Plan
from .state import RunView

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
POLL_S = 0.2


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: taskset, cgroup cpusets), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # (macOS has no affinity mask)
        return max(1, os.cpu_count() or 1)


def default_parallel(study: Study, cores: Optional[int] = None) -> int:
    """Runs side by side: the cores divided by the processes of the widest run."""
    procs = max((processes_per_node(r, study.slurm) for r in study.runs), default=1)
    return max(1, (cores or usable_cores()) // max(1, procs))


def thread_env(threads: int, base: Optional[dict] = None) -> dict:
    """The environment of a stage given `threads` threads per process; a lower limit the user set stays.
    OpenMP's waiting threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE, unless set): on a
    machine shared with other work, torch's spinning threads burned 6x the CPU time for 6x the wall
    time of sleeping ones (a 2-thread tiny training beside other processes, bench note in README)."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_VARIABLES:
        given = env.get(var, "")
        env[var] = str(min(threads, int(given)) if given.isdigit() and int(given) > 0 else threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


@dataclass(eq=False)
class Task:
    stage: str  # train | evaluate | report
    path: Path  # the run folder (the study folder for the report)
    view: Optional[RunView] = None
    after: list["Task"] = field(default_factory=list)  # must succeed first (the report: must end)
    procs: int = 1
    threads: int = 1  # per process, set when it starts
    proc: Optional[subprocess.Popen] = None
    started: float = 0.0
    ended: float = 0.0
    rc: Optional[int] = None
    skipped: str = ""  # why it never started (a dependency failed)

    @property
    def name(self) -> str:
        return self.view.name if self.view else "report"

    @property
    def module(self) -> str:
        return f"lorafull.{self.stage}"

    @property
    def log(self) -> Path:
        if self.view is None:
            return launch_dir(self.path) / "logs" / "report.log"
        return RunPaths.of(self.path).logs / f"{self.stage}.log"


def make_tasks(study: Study, plan: Plan) -> list[Task]:
    """The plan's stages with their dependencies, in the study's order (parents first)."""
    tasks, trains = [], {}
    for view in plan.views:
        if view not in plan.to_eval:
            continue
        train = None
        if view in plan.to_train:
            parent = trains.get(view.parent)
            train = trains[view.name] = Task("train", view.run_dir, view, [parent] if parent else [],
                                             processes_per_node(view.run, study.slurm))
            tasks.append(train)
        tasks.append(Task("evaluate", view.run_dir, view, [train] if train else []))
    if plan.report:
        tasks.append(Task("report", study.output_dir, None, [t for t in tasks if t.stage == "evaluate"]))
    return tasks


class LocalRunner:
    """Runs the plan's stages here: in parallel subprocesses (local), or one after another in this
    process (`in_process=True`, the debug executor)."""

    def __init__(self, study: Study, ledger: Ledger, in_process: bool = False,
                 log: Optional[Callable[[str], None]] = None, parallel: Optional[int] = None,
                 planned_s: Optional[dict] = None):
        self.study, self.ledger, self.in_process = study, ledger, in_process
        self._log = log or (lambda message: print(message, flush=True))  # (a pipe shows each event as it comes)
        self.cores = usable_cores()
        self.parallel = 1 if in_process else max(1, parallel or default_parallel(study, self.cores))
        self.planned_s = planned_s or {}  # run name -> the plan's training seconds (for the ETA)
        self.failed: list[str] = []
        self.interrupted: list[str] = []  # runs stopped by the user after saving
        self.signals = 0
        self.tasks: list[Task] = []
        self.servers = None  # eval.judge.serve: launch.judge_server.LocalServers
        self.t0 = time.monotonic()

    @property
    def stopping(self) -> bool:
        return self.signals > 0

    def log(self, message: str) -> None:
        try:
            self._log(message)
        except OSError:  # the terminal went away (SIGHUP): the stages still stop and save
            pass

    def submit(self, plan: Plan) -> None:
        self.tasks = make_tasks(self.study, plan)
        for view in plan.to_eval:  # --status elsewhere shows these runs queued while this process lives
            self.ledger.set_job(view.name, "train", None, eval=None, local_pid=os.getpid())
        self.ledger.save()
        self.t0 = time.monotonic()
        self.servers = _local_servers(self.study, plan.to_eval, self.log)
        try:
            if self.in_process:
                return self._run_here()
            previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
            try:
                self._loop()
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
        finally:
            if self.servers is not None:
                self.servers.close()

    def _judge_server(self, task: Task, starting: bool) -> None:
        """eval.judge.serve: the judge's server runs from the first evaluation that needs it to the last."""
        if self.servers is not None and task.stage == "evaluate":
            (self.servers.before_eval if starting else self.servers.after_eval)(task.view)

    # ---- the event loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        pending, running = list(self.tasks), []
        while pending or running:
            for task in [t for t in running if t.proc.poll() is not None]:
                running.remove(task)
                self._finished(task, task.proc.returncode)
            if self.stopping:
                if not running:
                    break
            else:
                self._start_ready(pending, running)
            time.sleep(POLL_S)

    def _start_ready(self, pending: list[Task], running: list[Task]) -> None:
        for task in list(pending):
            ready = self._ready(task)
            if ready == "skip":
                pending.remove(task)
                self._skip(task)
        ready = [t for t in pending if self._ready(t) == "go"][:max(0, self.parallel - len(running))]
        free = self.cores - sum(t.procs * t.threads for t in running)
        for i, task in enumerate(ready):
            if free < task.procs and running:
                break  # wait for cores: never more threads than cores
            task.threads = max(1, free // (len(ready) - i) // task.procs)
            free -= task.threads * task.procs
            pending.remove(task)
            self._start(task)
            running.append(task)

    @staticmethod
    def _ready(task: Task) -> str:
        """go | wait | skip (a dependency failed: training and evaluation wait for success, the report
        for every evaluation to end)."""
        if any(d.rc is None and not d.skipped for d in task.after):
            return "wait"
        if task.stage != "report" and any(d.skipped or d.rc != 0 for d in task.after):
            return "skip"
        return "go"

    def _start(self, task: Task) -> None:
        self._judge_server(task, starting=True)
        task.log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", task.module, str(task.path)]
        env = thread_env(task.threads)
        task.threads = int(env["OMP_NUM_THREADS"])  # (a lower OMP_NUM_THREADS of the user's stays)
        env.setdefault("PYTHONUNBUFFERED", "1")  # the log follows the stage as it goes
        with open(task.log, "a", encoding="utf-8") as log:
            log.write(f"== {time.strftime('%Y-%m-%dT%H:%M:%S')} python -m {task.module} {task.path} "
                      f"({task.threads} thread(s) per process)\n")
            log.flush()
            # its own session: a terminal's Ctrl-C reaches this launcher only, which stops the stage
            task.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        task.started = time.monotonic()
        self.log(f"  start  {task.stage:<8} {task.name}  ({task.threads} thread(s); log {task.log})")

    def _finished(self, task: Task, rc: int) -> None:
        task.rc, task.ended = rc, time.monotonic()
        self._judge_server(task, starting=False)
        took = f"{task.ended - task.started:.0f} s"
        if rc == 0:
            self.log(f"  done   {task.stage:<8} {task.name}  {took}")
        elif self.stopping or (task.view is not None and read_status(task.path).get("state") == "interrupted"):
            self._mark_interrupted(task)
            self.log(f"  stop   {task.stage:<8} {task.name}  {self._where(task)}")
        elif task.view is None:
            self.failed.append("report")
            self.log(f"  FAILED report (exit {rc}; log {task.log})")
        else:
            self._fail(task.view, task.stage, f"{task.module} exited with code {rc} (log {task.log})")
        if not self.stopping and task.view is not None:
            self.log(self.progress())

    def _skip(self, task: Task) -> None:
        task.skipped = "a dependency failed"
        self._judge_server(task, starting=False)  # one evaluation fewer to serve
        if task.stage == "train" and task.view.name not in self.failed:
            self._fail(task.view, "train", f"parent run {task.view.parent} failed")

    def _fail(self, view: RunView, stage: str, message: str) -> None:
        run_status.failed(view.run_dir, stage, error=message, keep_earlier=True)  # (the stage's own line first)
        self.failed.append(view.name)
        self.log(f"  FAILED {stage:<8} {view.name}: {read_status(view.run_dir).get('error') or message}")

    def _mark_interrupted(self, task: Task) -> None:
        if task.view is None:
            return
        status = read_status(task.path)
        if status.get("state") not in ("interrupted", "done") or status.get("stage") != task.stage:
            run_status.interrupted(task.path, task.stage, f"{task.stage} stopped (what it wrote is kept): the same "
                                   "command resumes it")
        self.interrupted.append(task.view.name)

    @staticmethod
    def _where(task: Task) -> str:
        status = read_status(task.path) if task.view is not None else {}
        if task.stage == "train" and status.get("step") is not None:
            return f"checkpoint at step {status['step']} saved"
        return "stopped (what it wrote is kept)"

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1
        running = [t for t in self.tasks if t.proc is not None and t.rc is None]
        name = signal.Signals(signum).name
        if self.signals == 1:
            self.log(f"{name}: stopping; running now: {', '.join(t.name for t in running) or 'nothing'}; a training "
                     "saves a checkpoint first (press Ctrl-C twice more to kill without saving)")
            for task in running:
                _signal_group(task.proc, signal.SIGINT)
        elif self.signals == 2:
            self.log(f"{name}: still saving; once more kills the running stage(s) (they resume from their last "
                     "checkpoint)")
        else:
            for task in running:
                _signal_group(task.proc, signal.SIGKILL)

    # ---- what the user sees --------------------------------------------------------------------
    def progress(self) -> str:
        """[k/N] runs done, running, left (and failed) and the ETA from the plan, scaled by the runs done."""
        runs: dict[str, list[Task]] = {}
        for t in self.tasks:
            if t.view is not None:
                runs.setdefault(t.name, []).append(t)
        done = [n for n, ts in runs.items() if all(t.rc == 0 for t in ts)]
        ended = set(done) | set(self.failed) | set(self.interrupted)
        running = [n for n, ts in runs.items() if n not in ended and any(t.proc is not None for t in ts)]
        left = [n for n in runs if n not in ended and n not in running]
        elapsed = time.monotonic() - self.t0
        parts = [f"[{len(done)}/{len(runs)}] runs done", f"{len(running)} running", f"{len(left)} left"]
        if self.failed:
            parts.append(f"{len([n for n in self.failed if n in runs])} failed")
        eta = self.eta(runs, done, running + left)
        return "  " + ", ".join(parts) + f"; {_duration(elapsed)} so far" + (f"; {eta}" if eta else "")

    def eta(self, runs: dict, done: list[str], todo: list[str]) -> str:
        planned = {n: self.planned_s.get(n) for n in runs}
        known = [n for n in done if planned[n]]
        took = {n: max(t.ended for t in runs[n]) - min(t.started for t in runs[n]) for n in done}
        # the plan's training seconds, scaled by what the finished runs took (stages, start-up, load)
        scale = sum(took[n] for n in known) / sum(planned[n] for n in known) if known else 1.0
        mean = sum(took.values()) / len(took) if took else None
        work = 0.0
        for n in todo:
            if planned[n]:
                need = planned[n] * scale
            elif mean is not None:
                need = mean
            else:
                return ""  # nothing to go by yet
            started = [t.started for t in runs[n] if t.started]
            work += max(0.0, need - (time.monotonic() - min(started) if started else 0.0))
        if not todo:
            return ""
        basis = f"the plan scaled by the {len(known)} run(s) done" if known else "the plan"
        return f"ETA {_duration(work / self.parallel)} (from {basis})"

    def summary(self, command: str) -> str:
        """The one line after an interrupt: what stopped, what never started, how to go on."""
        names = {t.name for t in self.tasks if t.view is not None}
        started = {t.name for t in self.tasks if t.view is not None and t.proc is not None}
        never = sorted(names - started, key=[t.name for t in self.tasks].index)
        return (f"interrupted: {', '.join(self.interrupted) or 'no run'} stopped after saving; "
                f"{len(never)} run(s) not started; the same command goes on: {command}")

    # ---- debug: in this process ----------------------------------------------------------------
    def _run_here(self) -> None:
        for task in self.tasks:
            if self._ready(task) == "skip":
                self._skip(task)
                continue
            self.log(f"== python -m {task.module} {task.path}")
            self._judge_server(task, starting=True)
            task.started = time.monotonic()
            task.proc = True  # (started: for the summary)
            try:
                rc = _run_module_here(task.module, task.path)
            except KeyboardInterrupt:
                rc = 130
            if rc == 130 or (task.view is not None and read_status(task.path).get("state") == "interrupted"):
                self.signals = 1  # the stage stopped on Ctrl-C: so does the study
            self._finished(task, rc)
            if self.stopping:
                return


def _local_servers(study: Study, views, log: Callable[[str], None]):
    """The served judges' local server processes, where a run's judge is served (launch.judge_server
    loads submitit: only then)."""
    if not any(v.run.eval.judge.serve is not None for v in views):
        return None
    from .judge_server import LocalServers

    return LocalServers(study, views, log)


def _run_module_here(module: str, path: Path) -> int:
    argv = sys.argv
    sys.argv = [module, str(path)]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
