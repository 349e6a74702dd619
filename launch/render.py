"""Plain sbatch scripts for a study, for people who submit by hand (same arrays, same resources).

    python -m launch.render configs/demo.yaml OUT_DIR [dotted.key=value ...] [--render-only]
    bash OUT_DIR/submit.sh          # sbatch --parsable each script, chaining the job ids

OUT_DIR gets, per training array k: train_<k>.sbatch, eval_<k>.sbatch and train_<k>.runs (the
manifest: array index i -> the run folder on line i+1); one report.sbatch; submit.sh. The text is a
pure function of the study's settings (tests compare it with stored files). Unless --render-only, the
study folder is prepared as launch.grid does (STUDY_DIR/study.yaml and every run's config.yaml), since
the scripts start `python -m lorafull.train RUN_DIR` on those folders.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from lorafull.config import ConfigError, Study, load_study, save_run_config, save_study_settings, study_signatures
from slurm_templates import TEMPLATES

from .jobs import launch_dir
from .limits import Limits, read_limits
from .arrays import Plan, make_plan
from .resources import (EXIT_REQUEUE, Shape, eval_shape, gres, python_command, report_shape,
                        sbatch_time, study_job_prefix)
from .state import RunView, study_run_dir

def _template(name: str) -> str:
    path = TEMPLATES / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: sbatch template missing (the slurm_templates package ships it: "
                                "reinstall lorafull)")
    return path.read_text()


def fill(template: str, values: dict[str, str]) -> str:
    """{{name}} -> value; an empty value removes its whole line; an unknown name is an error."""
    def line(m: re.Match) -> str:
        return "" if values.get(m.group(1), None) == "" else m.group(0)

    text = re.sub(r"^[ \t]*\{\{(\w+)\}\}[ \t]*\n", line, template, flags=re.M)

    def one(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"template placeholder {{{{{m.group(1)}}}}} has no value")
        return str(values[m.group(1)])

    return re.sub(r"\{\{(\w+)\}\}", one, text)


def comment_text(value) -> str:
    """A value shown inside a # comment of a script: one line, so it cannot start a command."""
    return " ".join(str(value).split())


def sbatch_lines(study: Study, shape: Shape, name: str, array_size: int = 0, signal: bool = False) -> str:
    slurm = study.slurm
    opts: list[tuple[str, str]] = [("job-name", name)]
    if array_size:
        opts.append(("array", f"0-{array_size - 1}%{min(array_size, slurm.array_parallelism)}"))
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(slurm, key):
            opts.append((key, getattr(slurm, key)))
    opts += [("nodes", str(shape.nodes)), ("ntasks-per-node", str(shape.tasks_per_node)),
             ("cpus-per-task", str(shape.cpus_per_task)), ("mem", f"{shape.mem_gb}G"),
             ("time", sbatch_time(shape.timeout_min))]
    if gres(slurm, shape.gpus_per_node):
        opts.append(("gres", gres(slurm, shape.gpus_per_node)))
    if signal:
        opts.append(("signal", f"USR2@{slurm.signal_delay_s}"))
    opts += [("requeue", ""), ("kill-on-invalid-dep", "yes"), ("open-mode", "append"),
             ("output", str(launch_dir(study.output_dir) / "logs" / ("%x_%A_%a.out" if array_size else "%x_%j.out")))]
    return "\n".join(f"#SBATCH --{k}={shlex.quote(v)}" if v else f"#SBATCH --{k}" for k, v in opts)


def full_plan(study: Study) -> Plan:
    """The arrays of the whole study, as a first submission would make them (no folder is read), cut to
    slurm.max_array_size (else Slurm's default MaxArraySize: the text depends on the settings alone).
    No submit limit: submit.sh submits every job at once."""
    sigs = study_signatures(study)
    views = [RunView(run=r, signature=sigs[r.name], run_dir=study_run_dir(study, r), status={},
                     folder_signature=None) for r in study.runs]
    limits = read_limits(study.slurm, ask=False)
    return make_plan(study, views, limits=Limits(limits.max_array_size, None, limits.array_source, "none"))


def render_study(study: Study) -> dict[str, str]:
    """file name -> text of every file of OUT_DIR."""
    plan = full_plan(study)
    prefix = study_job_prefix(study.study.name)
    python = python_command(study.slurm, rendered=True)
    setup = "\n".join(["# slurm.setup"] + list(study.slurm.setup)) if study.slurm.setup else ""
    common = {"study": comment_text(study.study.name), "setup": setup, "python": python,
              "study_dir": shlex.quote(str(study.output_dir))}
    files: dict[str, str] = {}
    lines = [
        "#!/bin/bash",
        f"# Submit study {comment_text(study.study.name)}: training arrays, their evaluations (task i after training task i),",
        "# chained runs after their parent's task, one report after every evaluation.",
        "# Rendered by `python -m launch.render STUDY.yaml OUT_DIR`; run it from anywhere: bash OUT_DIR/submit.sh",
        "set -euo pipefail",
        'cd "$(dirname "$0")"  # the scripts find their manifests in the submit folder',
        f"mkdir -p {shlex.quote(str(launch_dir(study.output_dir) / 'logs'))}",
        'submit() { local out; out=$(sbatch --parsable "$@"); echo "${out%%;*}"; }  # "id;cluster" -> id',
    ]
    index = {id(a): k for k, a in enumerate(plan.train_arrays)}
    evals = []
    for k, array in enumerate(plan.train_arrays):
        manifest = f"train_{k}.runs"
        files[manifest] = "".join(f"{v.run_dir}\n" for v in array.runs)  # data: read by sed, used "$RUN_DIR"
        n = len(array.runs)
        files[f"train_{k}.sbatch"] = fill(_template("train_array.sbatch"), {
            **common, "job_name": f"{prefix}-train-{k}", "manifest": manifest,
            "sbatch": sbatch_lines(study, array.shape, f"{prefix}-train-{k}", n, signal=True),
            "nodes": array.shape.nodes, "tasks_per_node": array.shape.tasks_per_node,
            "cpus_per_task": array.shape.cpus_per_task, "max_requeues": study.slurm.max_requeues,
            "exit_requeue": EXIT_REQUEUE})
        files[f"eval_{k}.sbatch"] = fill(_template("eval.sbatch"), {
            **common, "job_name": f"{prefix}-eval-{k}", "manifest": manifest,
            "sbatch": sbatch_lines(study, eval_shape(study.slurm), f"{prefix}-eval-{k}", n)})
        chained = [(i, v) for i, v in enumerate(array.runs) if v.name in plan.parent_dep]
        lines.append("")
        lines.append(f"# training array {k}: depth {array.depth}, {n} run(s), {array.shape.describe()}")
        lines.append(f"train_{k}=$(submit {'--hold ' if chained else ''}train_{k}.sbatch)")
        for i, view in chained:
            parent_array = plan.parent_dep[view.name][1]
            p_index = [v.name for v in parent_array.runs].index(view.parent)
            lines.append(f"scontrol update JobId=\"${{train_{k}}}_{i}\" "
                         f"Dependency=afterok:\"${{train_{index[id(parent_array)]}}}_{p_index}\"  "
                         f"# {comment_text(view.name)} after {comment_text(view.parent)}")
        if chained:
            lines.append(f'scontrol release "$train_{k}"')
        lines.append(f"eval_{k}=$(submit --dependency=aftercorr:\"$train_{k}\" eval_{k}.sbatch)")
        evals.append(f"$eval_{k}")
    lines += _judge_servers(study, plan, common, files, evals)
    files["report.sbatch"] = fill(_template("report.sbatch"), {
        **common, "sbatch": sbatch_lines(study, report_shape(study.slurm), f"{prefix}-report")})
    lines.append("")
    dep = f"--dependency=afterany:{':'.join(evals)} " if evals else ""
    lines.append(f'report=$(submit {dep}report.sbatch)')
    trains = " ".join(f"$train_{k}" for k in range(len(plan.train_arrays)))
    lines.append(f'echo {shlex.quote("study " + study.study.name)}": training {trains}; evaluation '
                 f'{" ".join(evals)}; report $report"')
    files["submit.sh"] = "\n".join(lines) + "\n"
    return files


def _judge_servers(study: Study, plan: Plan, common: dict, files: dict, evals: list[str]) -> list[str]:
    """eval.judge.serve: judge_server_<key>.sbatch per served judge and submit.sh's lines for them: each
    starts once the first task of an evaluation array starts, and ends after serve.idle_timeout_s without a
    request (a hand-submitted server has no job watching the evaluations: launch.grid's does more)."""
    from .judge_server import server_shape, served_runs_settings

    lines = []
    firsts = "?".join(f'after:"${{{e.lstrip("$")}}}_0"' for e in evals)  # "${eval_k}_0": task 0 of each array
    for key, serve in served_runs_settings(study, plan.views).items():
        server_dir = study.output_dir / "judge_server" / key
        files[f"judge_server_{key}.sbatch"] = fill(_template("judge_server.sbatch"), {
            **common, "key": key, "model": comment_text(serve.model), "idle_s": f"{serve.idle_timeout_s:g}",
            "server_dir": shlex.quote(str(server_dir)),
            "sbatch": sbatch_lines(study, server_shape(study.slurm, serve), f"{study_job_prefix(study.study.name)}-judge")})
        lines += ["", f"# judge server {key} (eval.judge.serve): with the first evaluation",
                  f"judge_{key.replace('-', '_')}=$(submit {'--dependency=' + firsts + ' ' if firsts else ''}"
                  f"judge_server_{key}.sbatch)"]
    return lines


def prepare_folders(study: Study) -> list[str]:
    """study.yaml + each run's config.yaml; runs whose folder holds another signature are refused."""
    from lorafull.config import run_signature_from_folder

    sigs = study_signatures(study)
    dirs = {r.name: study_run_dir(study, r) for r in study.runs}
    conflicts = [f"{dirs[r.name]}: signature {run_signature_from_folder(dirs[r.name])} != {sigs[r.name]}"
                 for r in study.runs
                 if run_signature_from_folder(dirs[r.name]) not in (None, sigs[r.name])]
    if conflicts:
        return conflicts
    save_study_settings(study)
    for run in study.runs:
        save_run_config(run, dirs[run.name], sigs[run.name])
        if run.eval.judge.serve is not None:  # what the rendered judge server serves
            from lorafull.judge.serve.local import write_settings

            write_settings(study.output_dir, run.eval.judge.serve, run.data.cache_dir)
    return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.render", description=__doc__.split("\n\n")[0].split("\n")[0],
                                epilog="example:\n  python -m launch.render configs/demo.yaml sbatch/\n"
                                       "  bash sbatch/submit.sh\n\n" + __doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG", help="study YAML file")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="where the scripts go (made if missing)")
    p.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="settings put over the file's")
    p.add_argument("--render-only", action="store_true", help="write OUT_DIR only, not the study's run folders")
    args = p.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    try:
        study = load_study(args.config, args.overrides, prepare=True)
        files = render_study(study)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.render_only:
        conflicts = prepare_folders(study)
        if conflicts:
            print("error: run folders hold other settings (give the runs new names or move the folders away):\n  "
                  + "\n  ".join(conflicts), file=sys.stderr)
            return 3
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out_dir / name).write_text(text)
    (args.out_dir / "submit.sh").chmod(0o755)
    print(f"wrote {len(files)} files to {args.out_dir}; submit with: bash {args.out_dir / 'submit.sh'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
