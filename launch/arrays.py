"""Which stages of which runs to submit, grouped into job arrays, with their dependencies.

Training arrays are grouped by (depth, resource shape): depth 0 holds runs that can start now; a
chained run (model.name_or_path: run:<parent>) whose parent trains in this submission sits one level
deeper and waits for its parent's task (afterok). Every training array gets an evaluation array whose
task i waits for training task i (aftercorr); runs that only need evaluation share one more array.
One report job waits for all evaluations (afterany: a failed run does not block the table).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from lorafull.config import Study

from .resources import Shape, cpu_partition, train_shape
from .state import RunView


@dataclass
class TrainArray:
    depth: int
    shape: Shape
    runs: list[RunView] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)  # per run, once submitted ("12_0", ... or "12")

    def task_id(self, run_name: str) -> Optional[str]:
        index = [v.name for v in self.runs].index(run_name)
        return self.job_ids[index] if self.job_ids else None

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
        return next((a for a in self.train_arrays if any(v.name == run_name for v in a.runs)), None)

    def parent_task(self, view: RunView) -> Optional[str]:
        """The job id the run's training waits for (afterok), once its parent's array is submitted."""
        dep = self.parent_dep.get(view.name)
        if dep is None:
            return None
        return dep[1].task_id(view.parent) if dep[0] == "array" else dep[1]

    def empty(self) -> bool:
        return not (self.train_arrays or self.eval_only or self.report)


def make_plan(study: Study, views: list[RunView], retry: bool = False, report_needed: bool = False) -> Plan:
    """Select runs (new / trained, and failed ones with retry) and arrange their jobs."""
    plan = Plan(views=views, cpu=cpu_partition(study.slurm))
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
    plan.train_arrays = sorted(groups.values(), key=lambda a: a.depth)  # stable: study order within a depth
    for name, dep in list(plan.parent_dep.items()):
        if dep[0] == "array":
            plan.parent_dep[name] = ("array", plan.array_of(by_name[name].parent))
    plan.report = bool(plan.to_eval) or report_needed
    return plan
