"""Carry out a Plan: on Slurm through submitit (job arrays with dependencies), or here, stage after
stage in subprocesses (local) or in this process (debug).

Slurm, per submission:
    training arrays   one `sbatch` per (depth, resource shape); chained runs' arrays are submitted held,
                      each task gets `afterok:<parent task>` and the array is released
    evaluation arrays one per training array, task i `aftercorr` training task i; plus one for runs that
                      are trained already; `--kill-on-invalid-dep` ends the evaluation of a failed training
    report            one job, `afterany` on every evaluation of the study still to come
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from lorafull.config import Study, SlurmConfig
from lorafull.runs import Stage, read_status, status as run_status

from .jobs import Ledger, launch_dir
from .arrays import Plan, TrainArray
from .judge_server import LocalServers, prepare_servers, record_clients
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
        for view in plan.to_eval:
            run_status.queued(view.run_dir, Stage.TRAIN if view in plan.to_train else Stage.EVALUATE,
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
        if plan.eval_only:
            eval_groups.append((plan.eval_only, None))

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
        return {v.eval_job for v in plan.views
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


# ---------------------------------------------------------------------------------------------
# Here, without a scheduler
# ---------------------------------------------------------------------------------------------
class LocalRunner:
    """Runs the plan's stages one after another: train -> evaluate per run (parents first), then the
    report. `in_process=True` (the debug executor) runs them in this process, for a debugger."""

    def __init__(self, study: Study, ledger: Ledger, in_process: bool = False, log: Callable[[str], None] = print):
        self.study, self.ledger, self.in_process, self.log = study, ledger, in_process, log
        self.failed: list[str] = []

    def _stage(self, module: str, path: Path) -> int:
        self.log(f"== python -m {module} {path}")
        if not self.in_process:
            return subprocess.run([sys.executable, "-m", module, str(path)]).returncode
        argv = sys.argv
        sys.argv = [module, str(path)]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            return 0
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = argv

    def submit(self, plan: Plan) -> None:
        order = [v for v in plan.views if v in plan.to_eval]  # the study's order: parents first
        for view in order:
            self.ledger.set_job(view.name, "train", None, eval=None, local_pid=os.getpid())
            run_status.queued(view.run_dir, Stage.TRAIN if view in plan.to_train else Stage.EVALUATE,
                              signature=view.signature)
        self.ledger.save()
        servers = LocalServers(self.study, order, self.log)  # eval.judge.serve: a judge server subprocess
        try:
            for view in order:
                if view.parent in self.failed:
                    run_status.failed(view.run_dir, Stage.TRAIN, error=f"parent run {view.parent} failed")
                    self.failed.append(view.name)
                    continue
                if view in plan.to_train:
                    rc = self._stage("lorafull.train", view.run_dir)
                    if rc != 0:
                        self._fail(view, "train", f"training exited with code {rc}")
                        continue
                servers.before_eval(view)
                rc = self._stage("lorafull.evaluate", view.run_dir)
                servers.after_eval(view)
                if rc != 0:
                    self._fail(view, "evaluate", f"evaluation exited with code {rc}")
        except KeyboardInterrupt:  # runs left queued/running would look busy forever: failed, resumable
            for view in order:
                st = read_status(view.run_dir)
                if st.get("state") in ("queued", "running"):
                    run_status.failed(view.run_dir, st.get("stage", "train"),
                                      error="interrupted (Ctrl-C): resume with --retry")
            raise
        finally:
            servers.close()
        if plan.report:
            rc = self._stage("lorafull.report", self.study.output_dir)
            if rc != 0:
                self.failed.append("report")
                self.log(f"report failed (exit {rc})")

    def _fail(self, view: RunView, stage: str, message: str) -> None:
        run_status.failed(view.run_dir, stage, error=message, keep_earlier=True)
        self.failed.append(view.name)
        self.log(f"   {view.name}: {stage} failed ({message})")
