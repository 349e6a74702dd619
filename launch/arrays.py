"""Which stages of which runs to submit, grouped into job arrays, with their dependencies.

Training arrays are grouped by (depth, resource shape): depth 0 holds runs that can start now; a
chained run (model.name_or_path: run:<parent>) whose parent trains in this submission sits one level
deeper and waits for its parent's task (afterok). Every training array gets an evaluation array whose
task i waits for training task i (aftercorr); runs that only need evaluation share one more array.
One report job waits for all evaluations (afterany: a failed run does not block the table).

The cluster's limits (launch.limits): an array larger than MaxArraySize is cut into even parts, each
with its own evaluation array (task i still waits for training task i); under a submit limit a call
takes the runs that fit beside the user's queued jobs, in study order, and holds back the rest (and
the report) for a later call: waves. Nothing is submitted twice: held runs stay new.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from lorafull.config import Study

from .limits import Limits
from .resources import Shape, cpu_partition, train_shape
from .state import RunView


@dataclass
class TrainArray:
    depth: int
    shape: Shape
    runs: list[RunView] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)  # per run, once submitted ("12_0", ... or "12")

    def index(self, run_name: str) -> int:
        if len(getattr(self, "_index", ())) != len(self.runs):  # (a dict: 1,000-task arrays look up parents)
            self._index = {v.name: i for i, v in enumerate(self.runs)}
        return self._index[run_name]

    def has(self, run_name: str) -> bool:
        try:
            self.index(run_name)
            return True
        except KeyError:
            return False

    def task_id(self, run_name: str) -> Optional[str]:
        return self.job_ids[self.index(run_name)] if self.job_ids else None

    @property
    def job_id(self) -> Optional[str]:
        """The array's id (or the single job's)."""
        return self.job_ids[0].split("_")[0] if self.job_ids else None


@dataclass
class Plan:
    views: list[RunView]
    train_arrays: list[TrainArray] = field(default_factory=list)
    eval_only: list[RunView] = field(default_factory=list)  # trained already: evaluation alone
    # run -> ("array", TrainArray) when its parent trains in this submission, ("job", id) when the
    # parent's training job from an earlier submission is still queued or running
    parent_dep: dict[str, tuple] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # run -> why it cannot be submitted
    report: bool = False
    cpu: bool = False  # a CPU partition: no GPU requested (launch.resources.cpu_partition)
    limits: Optional[Limits] = None  # the cluster's array size and submit limits (launch.limits)
    queued_jobs: int = 0  # the user's jobs queued or running before this call (all studies)
    held: list[RunView] = field(default_factory=list)  # over the submit limit: the next call submits them
    room: Optional[int] = None  # jobs still free under the submit limit after this plan's runs
    report_held: bool = False  # the report waits for a later call (runs held back, or no room)

    @property
    def to_train(self) -> list[RunView]:
        return [v for a in self.train_arrays for v in a.runs]

    @property
    def to_eval(self) -> list[RunView]:
        return self.to_train + self.eval_only

    @property
    def conflicts(self) -> list[RunView]:
        # a superseded folder is set aside by --retry before planning; without it, it blocks like a conflict
        return [v for v in self.views if v.state in ("conflict", "superseded")]

    def array_of(self, run_name: str) -> Optional[TrainArray]:
        return next((a for a in self.train_arrays if a.has(run_name)), None)

    @property
    def jobs(self) -> int:
        """The jobs this plan submits (array tasks one each), as a submit limit counts them."""
        return 2 * len(self.to_train) + len(self.eval_only) + int(self.report)

    def parent_task(self, view: RunView) -> Optional[str]:
        """The job id the run's training waits for (afterok), once its parent's array is submitted."""
        dep = self.parent_dep.get(view.name)
        if dep is None:
            return None
        return dep[1].task_id(view.parent) if dep[0] == "array" else dep[1]

    def empty(self) -> bool:
        return not (self.train_arrays or self.eval_only or self.report)


def make_plan(study: Study, views: list[RunView], retry: bool = False, report_needed: bool = False,
              limits: Optional[Limits] = None, queued_jobs: int = 0) -> Plan:
    """Select runs (new / trained / interrupted, and failed ones with retry) and arrange their jobs in
    arrays of at most limits.max_array_size tasks; with a submit limit, only what fits beside the
    user's `queued_jobs` (the rest is plan.held: the next call submits it)."""
    plan = Plan(views=views, cpu=cpu_partition(study.slurm), limits=limits, queued_jobs=queued_jobs)
    selected, depth = _select(plan, views, retry)
    selected = _within_submit_limit(plan, selected)
    groups: dict[tuple, TrainArray] = {}
    for view in selected:
        if view.trained:
            plan.eval_only.append(view)
            continue
        shape = train_shape(view.run, study.slurm)
        key = (depth[view.name], shape)
        if key not in groups:
            groups[key] = TrainArray(depth=depth[view.name], shape=shape)
        groups[key].runs.append(view)
    size = limits.max_array_size if limits else None
    arrays = sorted(groups.values(), key=lambda a: a.depth)  # stable: study order within a depth
    plan.train_arrays = [part for a in arrays for part in split_array(a, size)]
    by_name = {v.name: v for v in views}
    for name, dep in list(plan.parent_dep.items()):
        if dep[0] == "array":
            plan.parent_dep[name] = ("array", plan.array_of(by_name[name].parent))
    wanted = bool(plan.to_eval) or report_needed
    plan.report = wanted and not plan.held and (plan.room is None or plan.room >= 1)
    plan.report_held = wanted and not plan.report
    return plan


def _select(plan: Plan, views: list[RunView], retry: bool) -> tuple[list[RunView], dict[str, int]]:
    """The runs this call may submit, in study order (parents first), and each one's depth."""
    by_name = {v.name: v for v in views}
    # interrupted: a local run the user stopped resumes with the same command, no --retry needed
    wanted = {"new", "trained", "interrupted"} | ({"failed"} if retry else set())
    selected: list[RunView] = []
    depth: dict[str, int] = {}
    for view in views:  # parents come first
        if view.state not in wanted:
            continue
        parent = by_name.get(view.parent) if view.parent else None
        if parent is not None and not view.trained and not parent.trained:
            if parent.name in depth:  # the parent trains in this submission
                depth[view.name] = depth[parent.name] + 1
                plan.parent_dep[view.name] = ("array", None)
            elif parent.train_info is not None and parent.train_info.active:
                depth[view.name] = 0
                plan.parent_dep[view.name] = ("job", parent.train_job)
            else:
                plan.blocked[view.name] = f"parent run {parent.name} is {parent.state} and has no final model"
                continue
        elif not view.trained:
            depth[view.name] = 0
        selected.append(view)
    return selected, depth


def _within_submit_limit(plan: Plan, selected: list[RunView]) -> list[RunView]:
    """The runs whose jobs (training + evaluation: 2; evaluation alone: 1) fit under the submit limit
    beside the user's queued jobs, in study order; a run whose parent is held back waits with it."""
    limit = plan.limits.max_submit_jobs if plan.limits else None
    if limit is None:
        return selected
    room, kept, held = limit - plan.queued_jobs, [], set()
    for view in selected:
        cost = 1 if view.trained else 2
        if view.parent in held or cost > room:
            plan.held.append(view)
            held.add(view.name)
            plan.parent_dep.pop(view.name, None)
            continue
        kept.append(view)
        room -= cost
    plan.room = room
    return kept


def split_array(array: TrainArray, size: Optional[int]) -> list[TrainArray]:
    """An array cut into parts of at most `size` tasks, as even as can be (1,500 runs under MaxArraySize
    1001: 750 + 750, each with the same parallelism)."""
    n = len(array.runs)
    if not size or n <= size:
        return [array]
    base, extra = divmod(n, -(-n // size))  # the first `extra` parts one run larger
    out, start = [], 0
    for i in range(-(-n // size)):
        end = start + base + (i < extra)
        out.append(TrainArray(depth=array.depth, shape=array.shape, runs=array.runs[start:end]))
        start = end
    return out
