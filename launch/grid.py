"""Plan, submit, watch, retry and cancel every run of a study.

    python -m launch.grid CONFIG [dotted.key=value ...] [--dry-run | --status | --retry | --cancel | --follow]
                                 [--executor slurm|local|debug] [--parallel N]

    python -m launch.grid configs/demo.yaml --dry-run     # the plan table; submits nothing, needs no Slurm
    python -m launch.grid configs/demo.yaml               # submit what is not done, queued or running
    python -m launch.grid configs/demo.yaml --status      # each run's state: run folder + squeue/sacct
    python -m launch.grid configs/demo.yaml --retry       # also resubmit the failed runs
    python -m launch.grid configs/demo.yaml --cancel      # scancel the study's queued and running jobs
    python -m launch.grid configs/demo.yaml --follow      # submit, then stay: the next wave as room frees up
    python -m launch.grid configs/demo.yaml --calibrate   # time a short probe of each training shape, then
                                                          # plan from what was measured (launch.calibrate)

Executors: slurm (default when `sbatch` is on PATH): one training job array per resource shape (cut to
the cluster's MaxArraySize), the evaluations after their training, one report after all evaluations;
under a submit limit (slurm.max_submit_jobs, else the QOS's) each call submits what fits and holds back
the rest (launch.arrays, launch.limits); local (default otherwise): the same stages on this machine in
subprocesses, independent runs side by side (launch.local); debug: one after another, in this process.
Re-running is always safe: a run folder is named by the run and holds its signature; done, queued and
running runs are never submitted again, and a folder whose signature differs is never overwritten.
"""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import shutil
import sys
import time
from typing import Optional

from lorafull.config import ConfigError, Study, load_study, save_run_config, save_study_settings
from lorafull.plan.cache import estimates, write_planned
from lorafull.plan.judge import judge_lines, judge_servers
from lorafull.runs import RunPaths, read_status, status as run_status

from .batches import poll_judge_batches
from .jobs import (CANCEL_MARKER, Ledger, Queue, cancel_jobs, job_state, launch_dir, query_jobs, query_queue,
                   slurm_available, study_lock, summarize_ids)
from .inputs import missing_inputs
from .limits import read_limits
from .tables import plan_notes, plan_text, status_text, write_full_plan
from .arrays import Plan, make_plan
from .state import counts, set_aside_failed, study_run_dir, study_views

FOLLOW_POLL_S = 60.0
STAGE_MODULES = {"train": "lorafull.train", "evaluate": "lorafull.evaluate", "report": "lorafull.report"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m launch.grid", description=__doc__.split("\n\n")[0],
                                epilog="examples:\n" + __doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG", help="study YAML file")
    p.add_argument("overrides", nargs="*", metavar="dotted.key=value",
                   help="settings put over the file's (e.g. slurm.partition=gpu train.micro_batch_size=2)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="check the inputs and print the plan; submit nothing, write no run folder (only the "
                           "plan's files under STUDY_DIR/launch/ and the content hashes' cache)")
    mode.add_argument("--status", action="store_true", help="show each run's state")
    mode.add_argument("--retry", action="store_true", help="submit as usual and resubmit failed runs")
    mode.add_argument("--cancel", action="store_true", help="cancel the study's queued and running jobs")
    mode.add_argument("--follow", nargs="?", type=float, const=FOLLOW_POLL_S, default=None, metavar="SECONDS",
                      help="submit what fits, then stay until the study ends: every SECONDS (default "
                           f"{FOLLOW_POLL_S:g}) show progress and submit the next wave as room frees up under the "
                           "submit limit (Ctrl-C stops following; the jobs stay queued)")
    mode.add_argument("--calibrate", action="store_true",
                      help="run one short probe job per training shape, write STUDY_DIR/launch/calibration.json "
                           "and print the plan from it")
    p.add_argument("--executor", choices=("slurm", "local", "debug"), default=None,
                   help="default: slurm when sbatch is on PATH, else local")
    p.add_argument("--parallel", type=int, default=None, metavar="N",
                   help="local executor: runs side by side (default: the usable CPU cores / each run's processes)")
    p.add_argument("--inputs-on-cluster", action="store_true",
                   help="the runs' input files exist only where the jobs run: do not check them here")
    return p.parse_intermixed_args(argv)


def missing_stages(plan: Plan) -> list[str]:
    needed = (["train"] if plan.to_train else []) + (["evaluate"] if plan.to_eval else []) + \
             (["report"] if plan.report else [])
    return [STAGE_MODULES[s] for s in needed if importlib.util.find_spec(STAGE_MODULES[s]) is None]


def _report_needed(study: Study, ledger: Ledger, infos: dict, views) -> bool:
    """A study whose runs are all settled but whose table is missing (its report job failed, say) or
    older than a run's scores (a judge batch finished after the report was written)."""
    table = study.output_dir / "report" / "table.md"
    report_job = job_state(infos, ledger.data.get("report"))
    settled = all(v.state in ("done", "failed") for v in views) and any(v.state == "done" for v in views)
    if not settled or (report_job and report_job.active):
        return False
    if not table.exists():
        return True
    written = table.stat().st_mtime
    scored = [RunPaths.of(v.run_dir).judge_summary for v in views if v.state == "done"]
    return any(p.exists() and p.stat().st_mtime > written for p in scored)


def _views(study: Study, ledger: Ledger, infos: dict, set_aside: bool) -> list:
    views = study_views(study, ledger, infos)
    moved = set_aside_failed(views) if set_aside else []
    if moved:
        print("failed run(s) whose settings or inputs changed start afresh (old folder kept): " + "; ".join(moved))
        views = study_views(study, ledger, infos)
    return views


def _plan(study: Study, ledger: Ledger, queue: Queue, views, retry: bool, finish: Optional[set[str]],
          limits) -> Plan:
    report_needed = _report_needed(study, ledger, queue.infos, views)
    plan = make_plan(study, views, retry=retry, report_needed=report_needed, limits=limits,
                     queued_jobs=queue.user_jobs)
    if finish is not None:  # only these runs' evaluations, and the report after them
        plan.train_arrays, plan.parent_dep, plan.held = [], {}, []
        plan.eval_only = [v for v in plan.eval_only if v.name in finish]
        plan.report = bool(plan.eval_only) or report_needed
    return plan


def launch(study: Study, executor: str, dry_run: bool, retry: bool, command: str = "",
           finish: Optional[set[str]] = None, parallel: Optional[int] = None, quiet: bool = False,
           outcome: Optional[dict] = None) -> int:
    """Plan and submit (or run here) what the study still needs. finish: only these runs' evaluations and
    the report (judge batches that finished); quiet: no plan table (--follow's later rounds); outcome:
    filled with the jobs submitted and the runs held back, for --follow."""
    ledger = Ledger(study.output_dir)  # (study.prepare ran in load_study: the run names need the inputs)
    # one squeue (+ one sacct): the study's jobs, and the user's queued jobs a submit limit counts
    queue = query_queue(ledger.job_ids()) if executor == "slurm" else Queue({})
    if not (queue.answered or dry_run):
        print("error: squeue did not answer: nothing submitted (queued runs would look unsubmitted and go out "
              "twice); try again", file=sys.stderr)
        return 1
    limits = read_limits(study.slurm, ask=slurm_available()) if executor == "slurm" else None
    views = _views(study, ledger, queue.infos, set_aside=retry and not dry_run)
    plan = _plan(study, ledger, queue, views, retry, finish, limits)
    t_est = time.perf_counter()
    # cached by what they depend on, also by a dry run: the launch after it plans without importing torch
    est, note = estimates(study, cache=launch_dir(study.output_dir) / "estimates.json")
    t_est = time.perf_counter() - t_est
    write_planned(study, est)
    if not quiet:
        print(f"study {study.study.name}: {len(views)} runs in {study.output_dir} ({counts(views)}); executor {executor}")
        print("\n".join([plan_text(plan, est, note, study.slurm)] + judge_lines(judge_servers(study))))  # + judge servers
        full = write_full_plan(plan, est, note, study.slurm, launch_dir(study.output_dir) / "plan.txt")
        if full:
            print(f"the plan of every run: {full}")
    if plan.conflicts:
        for v in plan.conflicts[:20]:
            print(f"error: run {v.name}: {v.detail}", file=sys.stderr)
        print(f"0 jobs submitted: resolve the {len(plan.conflicts)} signature conflict(s) above first", file=sys.stderr)
        return 3
    for line in plan_notes(plan, views, retry, quiet):
        print(line)
    if outcome is not None:
        outcome.update(submitted=0 if dry_run else plan.jobs, held=len(plan.held) + plan.report_held)
    if dry_run:
        print_dry_run(plan)
        return 0
    if plan.empty():
        print("0 jobs submitted: nothing to do (" + counts(views) + ")")
        return 0
    missing = missing_stages(plan)
    if missing:
        print(f"error: {', '.join(missing)} not found in this installation: its stage cannot run, so nothing "
              "was submitted (python -m launch.grid ... --dry-run shows the plan)", file=sys.stderr)
        return 2

    save_study_settings(study)
    for view in plan.to_eval:  # the settings each job reads; identical signature, so nothing is lost
        save_run_config(view.run, view.run_dir, view.signature)
    if executor == "slurm":
        return submit_to_slurm(study, ledger, plan, command, t_est)
    return run_here(study, ledger, plan, est, executor, command, parallel)


def print_dry_run(plan: Plan) -> None:
    arrays = [f"{len(a.runs)} (depth {a.depth}: {a.shape.describe()})" for a in plan.train_arrays]
    listed = ", ".join(arrays[:8]) + (f", and {len(arrays) - 8} more" if len(arrays) > 8 else "")
    print(f"dry run: would train {len(plan.to_train)} run(s) in {len(plan.train_arrays)} array(s)"
          + (f" [{listed}]" if arrays else "") + f", evaluate {len(plan.to_eval)}, report: "
          + ("yes" if plan.report else "no") + f"; {plan.jobs} jobs" + (f", {len(plan.held)} run(s) held back"
                                                                         if plan.held else "") + "; nothing submitted")
    missing = missing_stages(plan)
    if missing:
        print(f"note: not installed yet, a real launch would stop: {', '.join(missing)}")


def submit_to_slurm(study: Study, ledger: Ledger, plan: Plan, command: str, t_est: float) -> int:
    from .executors import SlurmSubmitter

    t0 = time.perf_counter()
    submitter = SlurmSubmitter(study, ledger)
    submitter.submit(plan)
    print(f"{submitter.tasks} jobs submitted in {submitter.sbatch_calls} sbatch call(s) (estimates {t_est:.1f}s, "
          f"submission {time.perf_counter() - t0:.1f}s); follow them: {command or 'python -m launch.grid CONFIG'} --status")
    return 0


def run_here(study: Study, ledger: Ledger, plan: Plan, est: dict, executor: str, command: str,
             parallel: Optional[int]) -> int:
    """The local and debug executors; 130 after an interrupt (the same command goes on)."""
    from .local import LocalRunner

    t0 = time.perf_counter()
    planned_s = {n: e["wall_hours"] * 3600 for n, e in est.items() if isinstance(e.get("wall_hours"), (int, float))}
    runner = LocalRunner(study, ledger, in_process=(executor == "debug"), parallel=parallel, planned_s=planned_s)
    print(f"{executor}: {len(plan.to_eval)} run(s), up to {runner.parallel} at once on {runner.cores} core(s)")
    runner.submit(plan)
    if runner.stopping:
        print(runner.summary(command or "python -m launch.grid CONFIG"))
        return 130
    done = len(plan.to_eval) - len([n for n in runner.failed if n != "report"])
    print(f"{executor}: {done}/{len(plan.to_eval)} run(s) finished in {time.perf_counter() - t0:.0f}s"
          + (f"; failed: {', '.join(runner.failed)} (see status.json; --retry after fixing)" if runner.failed else ""))
    return 1 if runner.failed else 0


def show_status(study: Study, executor: str, command: str = "") -> int:
    """Each run's state. Reads files and asks Slurm; judge batches are polled and scored from the reply
    cache here (no model). Runs whose batch finished get a short eval job (the analyses load models,
    so they never run in this process) or, without Slurm, the local executor runs it; the report follows."""
    notes, finished = poll_judge_batches(study)  # eval.judge.mode: batch -- scores arrive when the user comes back
    for note in notes:
        print(f"judge batch: {note}")
    if finished:
        print(f"judge batch of {len(finished)} run(s) finished: their evaluation's last steps and the report follow")
        with study_lock(study.output_dir):
            launch(study, executor, dry_run=False, retry=False, command=command, finish=set(finished))
    ledger = Ledger(study.output_dir)
    infos = query_jobs(ledger.job_ids()) if executor == "slurm" else {}
    views = study_views(study, ledger, infos)
    print(f"study {study.study.name}: {study.output_dir}")
    print(status_text(views))
    report_id = ledger.data.get("report")
    report_info = job_state(infos, report_id)
    table = study.output_dir / "report" / "table.md"
    print(f"report: {'written' if table.exists() else 'not written'}"
          + (f"; job {report_id} {report_info.state if report_info else '?'}" if report_id else ""))
    servers = _judge_servers(study)  # eval.judge.serve
    for line in servers.server_status_lines(study.output_dir, slurm=executor == "slurm") if servers else []:
        print(line)
    print(counts(views))
    return 0


def _judge_servers(study: Study):
    """launch.judge_server where the study has judge servers (it loads submitit and the server's code)."""
    if (study.output_dir / "judge_server").is_dir():
        from . import judge_server
        return judge_server


def cancel(study: Study, executor: str) -> int:
    ledger = Ledger(study.output_dir)
    if executor != "slurm":
        print("nothing to cancel: the local executors run in the foreground (stop them with Ctrl-C)")
        return 0
    infos = query_jobs(ledger.job_ids())
    active = [j for j in ledger.job_ids() if (i := job_state(infos, j)) is not None and i.active]
    servers = _judge_servers(study)
    active += servers.active_server_jobs(study.output_dir) if servers else []  # its judge servers stop too
    hit = {name for name, entry in ledger.data["runs"].items() if {entry.get("train"), entry.get("eval")} & set(active)}
    # the marker tells each training's job body that its checkpoint-and-exit is a cancel, not a
    # preemption to requeue (Slurm shows the dying job as COMPLETING, not CANCELLED)
    for run in study.runs:
        job, run_dir = ledger.run(run.name).get("train"), study_run_dir(study, run)
        if job in active and run_dir.is_dir():
            (run_dir / CANCEL_MARKER).write_text(job + "\n")
    cancelled = cancel_jobs(active)
    # runs stopped half-way are failed (resumable with --retry), not queued forever; written after the
    # jobs are gone, so that a stage dying of the cancel does not overwrite it
    marked = []
    for view in study_views(study, ledger, {}):
        if view.name in hit and not view.evaluated:
            run_status.failed(view.run_dir, read_status(view.run_dir).get("stage", "train"),
                              error="cancelled by launch.grid --cancel (resume with --retry)")
            marked.append(view.name)
    print(f"cancelled {len(cancelled)} job(s): {summarize_ids(cancelled)}; {len(marked)} run(s) marked failed")
    return 0


def follow(study: Study, executor: str, command: str, poll_s: float) -> int:
    """--follow: launch, then every poll_s seconds show where the study stands and launch again (the next
    wave, once room frees up under the submit limit), until no job of the study is queued or running and
    nothing is left to submit."""
    if executor != "slurm":
        print("error: --follow follows Slurm jobs; the local executor stays until the study ends anyway",
              file=sys.stderr)
        return 2
    rounds = 0
    try:
        while True:
            outcome: dict = {}
            with study_lock(study.output_dir):
                rc = launch(study, executor, dry_run=False, retry=False, command=command, quiet=rounds > 0,
                            outcome=outcome)
            if rc != 0:
                return rc
            rounds += 1
            ledger = Ledger(study.output_dir)
            views = study_views(study, ledger, query_jobs(ledger.job_ids()))
            active = [v for v in views if v.state in ("queued", "running")]
            report = job_state(query_jobs([ledger.data.get("report")]), ledger.data.get("report"))
            print(f"[{time.strftime('%H:%M:%S')}] {counts(views)}" + (f"; report job {report.state}" if report else ""),
                  flush=True)
            busy = active or outcome.get("held") or outcome.get("submitted") or (report and report.active)
            if not busy:
                print("the study has ended: nothing queued or running, nothing left to submit")
                return 0
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print(f"stopped following; submitted jobs stay queued (follow again: {command} --follow)")
        return 130


def run_calibration(study: Study, executor: str, command: str) -> int:
    from .calibrate import calibrate

    study.output_dir.mkdir(parents=True, exist_ok=True)
    rc = calibrate(study, executor)
    launch(study, executor, dry_run=True, retry=False, command=command)
    return rc


def _submission_errors() -> tuple:
    """submitit's FailedJobError, once submitit is loaded (only a submission loads it: a dry run, --status
    and a re-run with nothing to submit start without it)."""
    if "submitit" not in sys.modules:
        return ()
    from submitit.core.utils import FailedJobError

    return (FailedJobError,)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        study = load_study(args.config, args.overrides, prepare=True)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    have_slurm = slurm_available()
    executor = args.executor or ("slurm" if have_slurm else "local")
    if not args.executor and not have_slurm and shutil.which("sbatch"):
        print("note: sbatch is installed but no Slurm controller answers (scontrol ping): running locally")
    if executor == "slurm" and not have_slurm and not args.dry_run:
        why = "no Slurm controller answers (scontrol ping)" if shutil.which("sbatch") else "sbatch is not on PATH"
        print(f"error: --executor slurm but {why} (use --executor local, or --dry-run)", file=sys.stderr)
        return 2
    missing = [] if args.status or args.cancel or args.inputs_on_cluster else missing_inputs(study)
    if missing:  # before any plan or job: a missing data file is not found hours later, in a job
        for line in missing[:10]:
            print(f"error: input missing: {line}", file=sys.stderr)
        print(f"{len(missing)} input(s) missing, nothing planned or submitted (where they exist only on the cluster: "
              "--inputs-on-cluster)", file=sys.stderr)
        return 2
    try:
        given = (["--executor", args.executor] if args.executor else []) + \
            (["--parallel", str(args.parallel)] if args.parallel else [])
        command = " ".join(["python -m launch.grid", shlex.quote(args.config), *map(shlex.quote, args.overrides),
                            *given])
        if args.status:
            return show_status(study, executor, command)
        if args.dry_run:
            return launch(study, executor, dry_run=True, retry=False, command=command)
        if args.calibrate:
            return run_calibration(study, executor, command)
        if args.follow is not None:
            study.output_dir.mkdir(parents=True, exist_ok=True)
            return follow(study, executor, command, args.follow)
        study.output_dir.mkdir(parents=True, exist_ok=True)
        with study_lock(study.output_dir):
            if args.cancel:
                return cancel(study, executor)
            return launch(study, executor, dry_run=False, retry=args.retry, command=command, parallel=args.parallel)
    except KeyboardInterrupt:  # planning or submitting (the local executor handles its own stages' stop)
        print("interrupted: what was already submitted is in STUDY_DIR/launch/jobs.json and stays; the same "
              "command goes on", file=sys.stderr)
        return 130
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except _submission_errors() as e:  # sbatch refused (bad partition, account, limits): its own words, one line
        print(f"error: submission failed: {str(e).strip().splitlines()[-1]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
