"""Analyses of one run folder, from the command line.

    python -m lorafull.analysis spectrum RUN_DIR [--device cpu|cuda]   # -> RUN_DIR/analysis/spectrum.json, .png
    python -m lorafull.analysis tasks RUN_DIR       # all the study asks: tasks.json (+ spectrum, instability)
    python -m lorafull.analysis instability RUN_DIR [--recompute]      # -> RUN_DIR/analysis/instability.json

On failure: exit 1 with one line on stderr naming the file or key at fault.
"""
from __future__ import annotations

import json
import sys


def main(argv=None) -> int:
    from lorafull.runs import command_parser, not_a_run_folder

    run = "studies/demo/runs/lora-num_samples600-seed1-ff88b81b"
    parser = command_parser("python -m lorafull.analysis", __doc__, f"python -m lorafull.analysis spectrum {run}",
                            f"python -m lorafull.analysis tasks {run}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{spectrum,tasks,instability}")
    p_spec = sub.add_parser("spectrum", help="singular values / rank90 of the weight change")
    p_spec.add_argument("run_dir", metavar="RUN_DIR", help="a trained run folder")
    p_spec.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    p_tasks = sub.add_parser("tasks", help="every analysis the study's analysis section asks for")
    p_tasks.add_argument("run_dir", metavar="RUN_DIR", help="a trained run folder")
    p_inst = sub.add_parser("instability", help="loss spikes, NaNs, divergence, grad-norm explosions")
    p_inst.add_argument("run_dir", metavar="RUN_DIR", help="a run folder with a metrics.jsonl")
    p_inst.add_argument("--recompute", action="store_true", help="ignore events recorded during training")
    args = parser.parse_args(argv)
    refusal = not_a_run_folder(args.run_dir)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        if args.command == "spectrum":
            from lorafull.analysis.spectrum import analyse_run

            out = analyse_run(args.run_dir, device=args.device)
            summary = json.loads(out.read_text())["summary"]
            print(f"{out}: {summary['modules']} matrices, median rank90 {summary.get('median_rank90')} "
                  f"(random baseline {summary.get('median_baseline_rank90')})")
        elif args.command == "tasks":
            from lorafull.analysis.stage import run_analyses

            print(run_analyses(args.run_dir))
        else:
            from lorafull.config import load_study_settings, study_dir_of_run
            from lorafull.runs import RunPaths, write_json_atomic
            from lorafull.analysis.instability import scan_metrics, summarise

            factor = load_study_settings(study_dir_of_run(args.run_dir)).analysis.spike_factor
            if not RunPaths.of(args.run_dir).metrics.exists():
                raise FileNotFoundError(f"{RunPaths.of(args.run_dir).metrics}: no such file (has the run trained?)")
            events = scan_metrics(RunPaths.of(args.run_dir).metrics, spike_factor=factor, recompute=args.recompute)
            result = {"summary": summarise(events), "events": events}
            write_json_atomic(RunPaths.of(args.run_dir).analysis / "instability.json", result)
            print(json.dumps(result["summary"]))
    except Exception as e:  # one line for the job log; the traceback is noise for a bad input
        from lorafull.runs import error_line

        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
