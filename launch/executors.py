"""Carry out a Plan on Slurm through submitit (job arrays with dependencies); launch.local runs one
on this machine.

Slurm, per submission:
    training arrays   one `sbatch` per (depth, resource shape); chained runs' arrays are submitted held,
                      each task gets `afterok:<parent task>` and the array is released
    evaluation arrays one per training array, task i `aftercorr` training task i; plus one for runs that
                      are trained already; `--kill-on-invalid-dep` ends the evaluation of a failed training
    report            one job, `afterany` on every evaluation of the study still to come
"""
from __future__ import annotations

import subprocess
from typing import Callable, Optional

from lorafull.config import Study, SlurmConfig
from lorafull.runs import Stage, status as run_status

from .jobs import Ledger, launch_dir
from .arrays import Plan, TrainArray
from .judge_server import prepare_servers, record_clients
from .resources import Shape, eval_shape, gres, python_command, report_shape, study_job_prefix
from .state import RunView


class SubmitError(RuntimeError):
    pass


def _slurm_params(slurm: SlurmConfig, shape: Shape, name: str, use_srun: bool, extra: Optional[dict] = None) -> dict:
    params = dict(job_name=name, nodes=shape.nodes, ntasks_per_node=shape.tasks_per_node,
                  cpus_per_task=shape.cpus_per_task, mem=f"{shape.mem_gb}GB", time=shape.timeout_min,
                  signal_delay_s=slurm.signal_delay_s, array_parallelism=slurm.array_parallelism,
                  use_srun=use_srun, setup=list(slurm.setup) or None)
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(slurm, key):
            params[key] = getattr(slurm, key)
    if gres(slurm, shape.gpus_per_node):
        params["gres"] = gres(slurm, shape.gpus_per_node)
    # requeue: a preempted or timed-out task goes back to the queue (also where JobRequeue=0);
    # kill-on-invalid-dep: a job whose dependency failed is cancelled instead of pending forever,
    # so that the report's afterany is reached
    params["additional_parameters"] = {"requeue": True, "kill_on_invalid_dep": "yes", **(extra or {})}
    return params


class SlurmSubmitter:
    """Submits through submitit's SlurmExecutor; job logs and pickles in STUDY_DIR/launch/slurm/."""

    def __init__(self, study: Study, ledger: Ledger, log: Callable[[str], None] = print):
        import submitit

        self.study, self.ledger, self.log = study, ledger, log
        self.folder = launch_dir(study.output_dir) / "slurm" / "%j"
        self.python = python_command(study.slurm)
        self.prefix = study_job_prefix(study.study.name)
        self._submitit = submitit
        self.sbatch_calls = 0
        self.tasks = 0

    def executor_for(self, shape: Shape, name: str, use_srun: bool, extra: Optional[dict] = None):
        """A submitit executor with the study's partition, account, limits and this shape's resources."""
        return self._executor(shape, name, use_srun, extra)

    def _executor(self, shape: Shape, name: str, use_srun: bool, extra: Optional[dict] = None):
        ex = self._submitit.SlurmExecutor(folder=self.folder, max_num_timeout=self.study.slurm.max_requeues,
                                          python=self.python)
        ex.update_parameters(**_slurm_params(self.study.slurm, shape, name, use_srun, extra))
        return ex

    def _submit_many(self, executor, fns: list) -> list[str]:
        """One sbatch: a job array when there are several, a single job otherwise."""
        if len(fns) == 1:
            jobs = [executor.submit(fns[0])]
        else:
            jobs = executor.submit_array(fns)
        self.sbatch_calls += 1
        self.tasks += len(jobs)
        return [j.job_id for j in jobs]

    def submit(self, plan: Plan) -> None:
        from .job_bodies import StageJob, TrainJob

        slurm = self.study.slurm
        # state "queued" before sbatch: a job that starts at once writes "running" after it, never before
        training = {v.name for v in plan.to_train}
        for view in plan.to_eval:
            run_status.queued(view.run_dir, Stage.TRAIN if view.name in training else Stage.EVALUATE,
                              signature=view.signature)
        eval_groups: list[tuple[list[RunView], Optional[str]]] = []  # (runs, dependency)
        for array in plan.train_arrays:
            chained = any(v.name in plan.parent_dep for v in array.runs)
            fns = [TrainJob(str(v.run_dir), self.python, array.shape.nodes, array.shape.tasks_per_node,
                            array.shape.cpus_per_task) for v in array.runs]
            ex = self._executor(array.shape, f"{self.prefix}-train-d{array.depth}", use_srun=False,
                                extra={"hold": True} if chained else None)
            array.job_ids = self._submit_many(ex, fns)
            for view, job_id in zip(array.runs, array.job_ids):
                self.ledger.set_job(view.name, "train", job_id, eval=None)
            self.ledger.add_submission("train", array.job_id, len(array.job_ids), [v.name for v in array.runs])
            self.ledger.save()
            if chained:
                self._chain(plan, array)
            self.log(f"  sbatch train {array.job_id}: {len(array.job_ids)} task(s), depth {array.depth}, "
                     f"{array.shape.describe()}")
            # evaluation task i after training task i; a single job is not an array: afterok on it
            many = len(array.job_ids) > 1
            eval_groups.append((array.runs, f"aftercorr:{array.job_id}" if many else f"afterok:{array.job_id}"))
        size = plan.limits.max_array_size if plan.limits else len(plan.eval_only)
        for start in range(0, len(plan.eval_only), max(1, size)):  # (cut to MaxArraySize like training)
            eval_groups.append((plan.eval_only[start:start + size], None))

        eval_ids: list[str] = []
        self._prepare_judge_servers(plan)
        for runs, dependency in eval_groups:
            fns = [StageJob(self.python, "lorafull.evaluate", str(v.run_dir), "evaluate") for v in runs]
            ex = self._executor(eval_shape(slurm), f"{self.prefix}-eval", use_srun=True,
                                extra={"dependency": dependency} if dependency else None)
            ids = self._submit_many(ex, fns)
            for view, job_id in zip(runs, ids):
                self.ledger.set_job(view.name, "eval", job_id)
            base = ids[0].split("_")[0]
            eval_ids.append(base)
            self.ledger.add_submission("eval", base, len(ids), [v.name for v in runs])
            self.ledger.save()
            self.log(f"  sbatch eval {base}: {len(ids)} task(s)" + (f", {dependency}" if dependency else ""))

        self._record_judge_clients(plan)
        if plan.report:
            waits = sorted(set(eval_ids) | self._active_eval_jobs(plan))
            ex = self._executor(report_shape(slurm), f"{self.prefix}-report", use_srun=True,
                                extra={"dependency": "afterany:" + ":".join(waits)} if waits else None)
            (job_id,) = self._submit_many(ex, [StageJob(self.python, "lorafull.report", str(self.study.output_dir),
                                                        "report")])
            self.ledger.data["report"] = job_id
            self.ledger.add_submission("report", job_id, 1, [])
            self.ledger.save()
            self.log(f"  sbatch report {job_id}" + (f": afterany on {len(waits)} evaluation job(s)" if waits else ""))

    def _train_jobs(self, plan: Plan) -> dict[str, Optional[str]]:
        """run -> the training task its evaluation waits for (None: trained already)."""
        return {v.name: self.ledger.run(v.name).get("train") if v in plan.to_train else None for v in plan.to_eval}

    def _prepare_judge_servers(self, plan: Plan) -> None:
        """eval.judge.serve: a server job per judge, submitted before the evaluations (so that it has the
        higher priority) and eligible with the first of them."""
        servers = prepare_servers(self.study, plan.to_eval, self._train_jobs(plan), self.log)
        self.sbatch_calls += len(servers)
        self.tasks += len(servers)

    def _record_judge_clients(self, plan: Plan) -> None:
        eval_jobs = {v.name: self.ledger.run(v.name).get("eval") for v in plan.to_eval}
        record_clients(self.study, plan.to_eval, eval_jobs, self._train_jobs(plan))

    def _active_eval_jobs(self, plan: Plan) -> set[str]:
        """Evaluations submitted earlier that have not ended: the report waits for them too."""
        return {v.eval_job.split("_")[0] for v in plan.views  # an array's id stands for all its tasks
                if v.eval_job and v.eval_info is not None and v.eval_info.active}

    def _chain(self, plan: Plan, array: TrainArray) -> None:
        """Per-task afterok on each chained run's parent, then release the held array."""
        for view, job_id in zip(array.runs, array.job_ids):
            parent_job = plan.parent_task(view)
            if parent_job:
                _scontrol(["update", f"JobId={job_id}", f"Dependency=afterok:{parent_job}"])
                self.ledger.set_job(view.name, "waits_for", parent_job)
        _scontrol(["release", array.job_id])


def _scontrol(args: list[str]) -> None:
    out = subprocess.run(["scontrol", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SubmitError(f"scontrol {' '.join(args)} failed: {out.stderr.strip()}")
