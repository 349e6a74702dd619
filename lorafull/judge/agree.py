"""Score the same answers with two judges and say how far they agree.

    python -m lorafull.judge.agree STUDY --judge A --judge B [--runs R1,R2] [--items N]

STUDY is a study folder (or its YAML file). A judge is `study` (the scores each run already has in
scores.jsonl), `reference` (the offline scorers, eval.judge.kind: reference) or a YAML file of eval.judge
keys, e.g. an API model ({kind: openai, model: gpt-4o-mini}) or an open model the study serves
({kind: openai, serve: {model: /models/judge, engine: vllm, gpus: 4}}: started here as a subprocess and
stopped at the end). --items N judges only the first N answers of each class in every run: validate an
open judge against a GPT judge on a subset before trusting it for the whole study.

Each judge's scores go to STUDY_DIR/agreement/judges/<judge>/<run>.jsonl (resumable; replies cached in
the study's judge cache, so nothing is paid twice), the comparison to
STUDY_DIR/agreement/<A>-vs-<B>.json, and a table to the terminal: Spearman and Kendall (tau-b)
correlations, the mean absolute difference and Cohen's kappa on binned scores, over all items and per
class, each with its 95 % bootstrap interval (lorafull.judge.agreement), and whether the two judges rank
the runs the same way.
"""
from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Optional

from lorafull.config import ConfigError, JudgeConfig, load_judge_file, load_study
from lorafull.judge.agreement import STATISTICS, agreement, same_order
from lorafull.judge.cache import JudgeCache
from lorafull.judge.prompts import normalize_class
from lorafull.judge.stage import check_judge_setup, judge_openai, judge_reference, load_responses, resume_scores
from lorafull.judge.summary import summarize
from lorafull.runs import BackgroundJsonlWriter, RunPaths, command_parser, error_line, read_jsonl, write_json_atomic

OUT_DIR = "agreement"


class Judge:
    """One side of the comparison: its label (a folder name) and its settings (None: the study's scores)."""

    def __init__(self, spec: str):
        self.spec = spec
        if spec == "study":
            self.label, self.cfg = "study", None
        elif spec == "reference":
            self.label, self.cfg = "reference", JudgeConfig(kind="reference")
        else:
            self.cfg = load_judge_file(spec)
            self.label = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(spec).stem) or "judge"


def study_dir_of(study: str) -> Path:
    path = Path(study)
    if path.is_file():
        return load_study(path).output_dir
    if not (path / "runs").is_dir():
        raise ConfigError(f"{path}: not a study folder (no runs/ in it) nor a study file")
    return path


def run_folders(study_dir: Path, names: Optional[list[str]]) -> list[Path]:
    runs = sorted(p for p in (study_dir / "runs").iterdir() if RunPaths.of(p).responses.exists())
    if names:
        missing = sorted(set(names) - {p.name for p in runs})
        if missing:
            raise ConfigError(f"--runs: no answers (responses.jsonl) for {', '.join(missing)} in {study_dir}/runs")
        runs = [p for p in runs if p.name in names]
    if not runs:
        raise ConfigError(f"{study_dir}/runs: no run has answers yet (responses.jsonl)")
    return runs


def _judge_into(path: Path, todo: list[dict], cfg: JudgeConfig, study_dir: Path, endpoint, progress: bool) -> None:
    from tqdm import tqdm

    with BackgroundJsonlWriter(path) as writer, tqdm(total=len(todo), desc=path.stem, disable=not progress) as bar:
        if cfg.kind == "reference":
            judge_reference(todo, cfg, writer, bar)
            return
        cache = JudgeCache(cfg.cache or study_dir / "cache" / "judge.sqlite")
        try:
            aimed = endpoint.judge_config(cfg) if endpoint else cfg
            asyncio.run(judge_openai(todo, aimed, cache, writer, bar, endpoint))
        finally:
            cache.close()


def scores_of(judge: Judge, study_dir: Path, runs: list[Path], items: Optional[int], progress: bool) -> dict:
    """run -> {item id: row} under this judge (judged now where it is not the study's own)."""
    out = {}
    if judge.cfg is None:
        for run in runs:
            rows = list(read_jsonl(RunPaths.of(run).scores)) if RunPaths.of(run).scores.exists() else []
            out[run.name] = {str(r["id"]): r for r in rows}
        return out
    folder = study_dir / OUT_DIR / "judges" / judge.label
    folder.mkdir(parents=True, exist_ok=True)
    answers = {run.name: first_per_class(load_responses(run), items) for run in runs}
    check_judge_setup(judge.cfg, {a["class"] for rows in answers.values() for a in rows})
    todo = {}
    for run in runs:  # what earlier calls left to judge (a served judge starts only when there is some)
        done = resume_scores(folder / f"{run.name}.jsonl")
        todo[run.name] = [a for a in answers[run.name] if str(a["id"]) not in done]
    with _served(judge.cfg if any(todo.values()) else None, study_dir) as endpoint:
        for run in runs:
            path = folder / f"{run.name}.jsonl"
            if todo[run.name]:
                _judge_into(path, todo[run.name], judge.cfg, study_dir, endpoint, progress)
            wanted = {str(a["id"]) for a in answers[run.name]}
            out[run.name] = {str(r["id"]): r for r in read_jsonl(path) if str(r["id"]) in wanted} if path.exists() else {}
    return out


def first_per_class(answers: list[dict], n: Optional[int]) -> list[dict]:
    """The first n answers of each class (every class represented, whatever the file's order); all for None."""
    if not n:
        return answers
    seen: dict[str, int] = {}
    out = []
    for a in answers:
        cls = normalize_class(a["class"])
        seen[cls] = seen.get(cls, 0) + 1
        if seen[cls] <= n:
            out.append(a)
    return out


class _served:
    """A served judge's server (lorafull.judge.serve.local) for the time of the judging; nothing otherwise."""

    def __init__(self, cfg: Optional[JudgeConfig], study_dir: Path):
        self.cfg, self.study_dir, self.proc = cfg, study_dir, None

    def __enter__(self):
        if self.cfg is None or self.cfg.serve is None:
            return None
        from lorafull.judge.serve.client import wait_for_server
        from lorafull.judge.serve.local import ServerProcess, write_settings

        cache_dir = str(self.study_dir / "cache" / "tokenized")
        root = self.study_dir / OUT_DIR  # a server of its own, never the one the study's evaluations use
        self.proc = ServerProcess(write_settings(root, self.cfg.serve, cache_dir))
        self.proc.start()
        return wait_for_server(root, self.cfg, cache_dir)

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.stop()


def compare(a: dict, b: dict) -> dict:
    """The agreement of two judges' scores ({run: {id: row}}), over all items, per class, and on the runs."""
    pairs = []
    for run in sorted(set(a) & set(b)):
        for item_id, row in a[run].items():
            other = b[run].get(item_id)
            if other is not None and row.get("score") is not None and other.get("score") is not None:
                pairs.append((float(row["score"]), float(other["score"]), normalize_class(row.get("class", ""))))
    classes = sorted({c for _, _, c in pairs})
    result = {"overall": agreement([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs]),
              "per_class": {}}
    for cls in classes:
        sub = [p for p in pairs if p[2] == cls]
        result["per_class"][cls] = agreement([p[0] for p in sub], [p[1] for p in sub], [cls] * len(sub))
    means = [{run: summarize(rows.values())["average"] for run, rows in side.items()} for side in (a, b)]
    means = [{r: m for r, m in side.items() if m is not None} for side in means]
    result["runs"] = {**same_order(*means), "average_a": means[0], "average_b": means[1]}
    unpaired = sum(len(a[r]) for r in a) - len(pairs)
    result["unpaired_items"] = unpaired  # an item without a score from one of the two (unreadable, missing)
    return result


def _cell(stat: dict) -> str:
    if stat["value"] is None:
        return "-"
    interval = f" [{stat['low']:.2f}, {stat['high']:.2f}]" if stat["low"] is not None else ""
    return f"{stat['value']:.3f}{interval}"


def table_text(a: str, b: str, result: dict) -> str:
    head = ["", "items", *STATISTICS]
    rows = [["all", str(result["overall"]["items"]), *(_cell(result["overall"][s]) for s in STATISTICS)]]
    rows += [[c, str(r["items"]), *(_cell(r[s]) for s in STATISTICS)] for c, r in result["per_class"].items()]
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    lines = [f"judge A: {a}   judge B: {b}   (95 % bootstrap intervals; kappa on fifths of the 0..1 scale)"]
    lines += ["  ".join(x[i].ljust(widths[i]) for i in range(len(head))) for x in [head] + rows]
    runs = result["runs"]
    order = {True: "yes", None: "- (fewer than 2 runs scored by both)"}.get(
        runs["same_order"], f"no (swapped: {'; '.join(runs['swapped'])})")
    tau = "-" if runs["kendall"] is None else f"{runs['kendall']:.3f}"
    lines.append(f"runs ranked the same way: {order}; Kendall tau-b over {runs['runs']} runs' averages: {tau}")
    if result["unpaired_items"]:
        lines.append(f"{result['unpaired_items']} item(s) left out: unscored by one of the judges")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = command_parser("python -m lorafull.judge.agree", __doc__,
                       "python -m lorafull.judge.agree studies/demo --judge study --judge reference",
                       "python -m lorafull.judge.agree configs/demo.yaml --judge study --judge judge.yaml --items 20")
    p.epilog = __doc__.split("\n\n", 2)[2] + "\n" + p.epilog
    p.add_argument("study", help="study folder (or its YAML file)")
    p.add_argument("--judge", action="append", default=[], help="study | reference | JUDGE.yaml (give two)")
    p.add_argument("--runs", default=None, help="comma-separated run names (default: every run with answers)")
    p.add_argument("--items", type=int, default=None, help="only the first N answers of each class in every run")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        study_dir = study_dir_of(args.study)  # (a mistyped study first: it says the most)
        if len(args.judge) != 2:
            raise ConfigError(f"give exactly two --judge (got {len(args.judge)})")
        runs = run_folders(study_dir, args.runs.split(",") if args.runs else None)
        judges = [Judge(spec) for spec in args.judge]
        scores = [scores_of(j, study_dir, runs, args.items, not args.no_progress) for j in judges]
        result = compare(*scores)
    except Exception as e:  # noqa: BLE001 -- one line, as every stage
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    result["judges"] = {"a": judges[0].spec, "b": judges[1].spec}
    out = study_dir / OUT_DIR / f"{judges[0].label}-vs-{judges[1].label}.json"
    write_json_atomic(out, result)
    print(table_text(judges[0].spec, judges[1].spec, result))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
