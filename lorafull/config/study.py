"""From a study file to its runs: dotted overrides, grid expansion (cross product, zipped keys), run
names, path resolution, validation and parents-first ordering (signatures: lorafull.config.signatures).

Library module; the command that prints the result is `python -m lorafull.config FILE [k=v ...]`.
"""
from __future__ import annotations

import difflib
import importlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from lorafull.config.branches import as_written, check_branches, expand_branch_points, follow_parents
from lorafull.config.schema import AnalysisConfig, PlanConfig, RunConfig, SlurmConfig, Study, StudySection
from lorafull.config.overrides import check_overrides
from lorafull.config.resources import batch_problem
from lorafull.config.selection import SelectConfig
from lorafull.config.signatures import study_signatures
from lorafull.config.typed import ConfigError, _build, _Where, read_yaml_file, to_dict


# ---------------------------------------------------------------------------------------------
# Dotted overrides, grid expansion
# ---------------------------------------------------------------------------------------------
_SECTIONS = ("model", "method", "data", "train", "eval")


def set_dotted(d: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        nxt = d.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
        d = nxt
    d[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=2e-4' -> ('train.lr', 0.0002); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _run_key(dotted: str) -> str:
    """Grid/run keys may omit the 'base.' prefix: 'method.kind' == 'base.method.kind'."""
    return dotted[len("base."):] if dotted.startswith("base.") else dotted


def _short(v) -> str:
    s = str(v)
    if isinstance(v, float):
        s = f"{v:g}"
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1000 and v % 1000 == 0:
        s = f"{v // 1000000}m" if v % 1000000 == 0 else f"{v // 1000}k"
    if isinstance(v, list):
        s = "+".join(map(str, v))
    # ASCII only: a run name is a folder and a job name (lorafull.config.typed.NAME_PATTERN)
    return "".join(c if (c.isascii() and c.isalnum()) or c in ".-" else "-" for c in s)[:24]


def _grid_points(grid: dict, where: _Where) -> list[dict]:
    """Cross product over the grid's keys. A key 'a.b,c.d' zips settings that vary together (e.g. a
    rank with its alpha): its values are lists [a.b value, c.d value]."""
    if not grid:
        return []
    keys = list(grid)
    values = [v if isinstance(v, list) else [v] for v in grid.values()]
    for key, vals in zip(keys, values):
        if not vals:  # an empty list would silently collapse the whole grid to nothing
            raise ConfigError(f"{where.at(f'grid.{key}')}: an empty list of values (give at least one)")
    points = []
    for combo in itertools.product(*values):
        point = {}
        for key, value in zip(keys, combo):
            parts = [k.strip() for k in str(key).split(",")]
            if len(parts) == 1:
                point[key] = value
                continue
            if not isinstance(value, list) or len(value) != len(parts):
                raise ConfigError(f"{where.at(f'grid.{key}')}: each value must be a list of {len(parts)} settings, "
                                  f"got {value!r}")
            point.update(zip(parts, value))
        points.append(point)
    return points


def _name_keys(grid: dict) -> set[str]:
    """Grid keys that name a run: every plain key, and the first key of each zipped group (every key,
    where two points would otherwise get one name)."""
    return {str(k).split(",")[0].strip() for k in (grid or {})}


# ---------------------------------------------------------------------------------------------
# Loading a study
# ---------------------------------------------------------------------------------------------
_TOP_KEYS = ("study", "base", "grid", "runs", "slurm", "plan", "analysis", "select")


def _resolve_paths(run: RunConfig, study_dir: Path) -> None:
    """Make file paths absolute (jobs run elsewhere) and expand {study_dir}."""

    def fix(p: Optional[str]) -> Optional[str]:
        if p is not None and p.startswith("gguf:") and p.endswith(".gguf"):
            return "gguf:" + fix(p[5:])  # a .gguf file is relative to the study; gguf:<name> stays a name
        if p is None or ":" in p.split("/")[0]:  # run:..., scratch:..., hub ids have no ':' but no '/'-prefix
            return p
        p = p.replace("{study_dir}", str(study_dir))
        path = Path(p).expanduser()
        if path.is_absolute() or path.exists() or p.startswith((".", "~")) or "{" in p:
            return str(path.resolve())
        # "org/model" hub ids that do not exist locally stay as they are
        return p if p.count("/") == 1 and not p.endswith((".json", ".jsonl")) else str(path.resolve())

    run.model.name_or_path = fix(run.model.name_or_path)
    run.model.tokenizer = fix(run.model.tokenizer)
    run.data.train = fix(run.data.train)
    run.data.cache_dir = fix(run.data.cache_dir) or str((study_dir / "cache" / "tokenized").resolve())
    run.eval.eval_set = fix(run.eval.eval_set)
    run.eval.fewshot_file = fix(run.eval.fewshot_file)
    run.eval.judge.prompts = fix(run.eval.judge.prompts)
    if run.eval.judge.serve is not None:
        run.eval.judge.serve.model = fix(run.eval.judge.serve.model)
    run.eval.judge.cache = fix(run.eval.judge.cache) or str((study_dir / "cache" / "judge.sqlite").resolve())


def check_run(run: RunConfig, where: _Where) -> None:
    """The checks across keys (RunConfig.problems); each key alone was checked when it was loaded."""
    for key, why in run.problems():
        raise ConfigError(f"{where.at(key)}: {why}" + (f" (run {run.name})" if run.name else ""))


def validate_run(run: RunConfig, where: str) -> None:
    """The cross-key checks of a run built in code (no file lines to name)."""
    check_run(run, _Where(where, {}))


def _default_name(point: dict) -> str:
    # a path value is named by its file stem (a run called "math" rather than "-home-me-data-ma")
    return "-".join(f"{k.split('.')[-1]}{_short(v)}" if not isinstance(v, str)
                    else _short(Path(v).stem if "/" in v else v)
                    for k, v in point.items()) or "run"


def _read_study_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """The study file's mapping and its key lines; every failure is one ConfigError line."""
    raw, lines = read_yaml_file(path, "study file")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study file is a mapping with keys {', '.join(_TOP_KEYS)}")
    return raw, lines


def _apply_overrides(raw: dict, overrides: list[str]) -> dict[str, str]:
    """Set each 'dotted.key=value' in the raw study; returns file key -> the override's text, so that
    an error in a value given on the command line is blamed on the command line."""
    cli: dict[str, str] = {}
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ConfigError as e:
            raise ConfigError(f"command line: {e}") from None
        if key.split(".")[0] in _SECTIONS:
            key = "base." + key
        top = key.split(".")[0]
        if top not in _TOP_KEYS:
            close = difflib.get_close_matches(top, _TOP_KEYS, n=1)
            raise ConfigError(f"command line override {text!r}: unknown section {top!r}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""))
        try:
            if top == "grid" and "." in key:  # grid keys are dotted themselves: grid.train.lr=[...]
                raw.setdefault("grid", {})[key[len("grid."):]] = value
            else:
                set_dotted(raw, key, value)
        except ConfigError as e:
            raise ConfigError(f"command line override {text!r}: {e}") from None
        cli[key] = text
    return cli


def _run_points(raw: dict, where: _Where, default_name: str) -> list[tuple[str, dict, dict]]:
    """(name, dotted overrides of base, run key -> file key that set it) for every grid point and
    explicit run; the base alone (named after the study) when there are neither."""
    points: list[tuple[str, dict, dict]] = []
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{where.at('grid')}: expected a mapping of dotted keys to lists")
    naming = _name_keys(grid)
    origin_of = {_run_key(part.strip()): f"grid.{k}" for k in grid for part in str(k).split(",")}
    grid_points = _grid_points(grid, where)
    names = [_default_name({k: v for k, v in point.items() if k in naming}) for point in grid_points]
    if len(set(names)) < len(names):  # zipped groups alike in their first keys: named by all their keys
        names = [_default_name(point) for point in grid_points]
    for name, point in zip(names, grid_points):
        dotted = {_run_key(k): v for k, v in point.items()}
        points.append((name, dotted, {k: origin_of[k] for k in dotted}))
    runs = raw.get("runs") or []
    if not isinstance(runs, list):
        raise ConfigError(f"{where.at('runs')}: expected a list of runs like [{{name: ..., method.kind: full}}]")
    for i, entry in enumerate(runs):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where.at(f'runs[{i}]')}: expected a mapping like {{name: ..., method.kind: full}}")
        entry = dict(entry)
        name = entry.pop("name", None)
        if not name:
            raise ConfigError(f"{where.at(f'runs[{i}]')}: every explicit run needs a name")
        origins = {_run_key(k): f"runs[{i}].{k}" for k in entry} | {"name": f"runs[{i}].name"}
        points.append((str(name), {_run_key(k): v for k, v in entry.items()}, origins))
    if not points:
        points.append((default_name, {}, {"name": "study.name"}))
    return points


def _study_sections(raw: dict, where: _Where) -> dict:
    for k in raw:
        if k not in _TOP_KEYS:
            close = difflib.get_close_matches(str(k), _TOP_KEYS, n=1)
            raise ConfigError(f"{where.at(k)}: unknown section" + (f" (did you mean {close[0]!r}?)" if close else ""))
    for k in ("study", "base", "slurm", "plan", "analysis", "select"):
        if raw.get(k) is not None and not isinstance(raw[k], dict):
            raise ConfigError(f"{where.at(k)}: expected a mapping, got {raw[k]!r}")
    section = _build(StudySection, raw.get("study") or {}, where, "study")
    section.output_dir = str(Path(section.output_dir.replace("{name}", section.name)).expanduser().resolve())
    analysis = _build(AnalysisConfig, raw.get("analysis") or {}, where, "analysis")
    for key, why in analysis.problems():
        raise ConfigError(f"{where.at(key)}: {why}")
    for task in analysis.target_tasks + analysis.source_tasks:
        if task.path:  # (an lm_eval task may have none: the harness's own task)
            task.path = str(Path(task.path.replace("{study_dir}", section.output_dir)).expanduser().resolve())
    return {"study": section, "slurm": _build(SlurmConfig, raw.get("slurm") or {}, where, "slurm"),
            "plan": _build(PlanConfig, raw.get("plan") or {}, where, "plan"), "analysis": analysis,
            "base": _build(RunConfig, raw.get("base") or {}, where, "base"), "select": _select(raw, where)}


def _select(raw: dict, where: _Where) -> SelectConfig:
    select = _build(SelectConfig, raw.get("select") or {}, where, "select")
    for key, why in select.problems(RunConfig):
        raise ConfigError(f"{where.at(key)}: {why}")
    return select


def _expand_seeds(points: list, seeds: list[int], where: _Where) -> tuple[list, dict[str, str]]:
    """One point per seed (study.seeds) for every point that does not set train.seed itself (a shared
    base model such as a pre-training run keeps one seed); returns (points, seeded name -> its group)."""
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where.at('study.seeds')}: {seeds} lists a seed twice")
    if not seeds:
        return points, {}
    out, groups = [], {}
    for name, dotted, origins in points:
        if "train.seed" in dotted:
            out.append((name, dotted, origins))
            continue
        for seed in seeds:
            out.append((f"{name}-seed{seed}", {**dotted, "train.seed": seed}, {**origins, "train.seed": "study.seeds"}))
            groups[f"{name}-seed{seed}"] = name
    return out, groups


def _follow_seed_parent(run: RunConfig, groups: dict[str, str]) -> None:
    """A seeded run whose parent (or trunk) was expanded by seed too starts from the one of its own seed."""
    if run.group is not None:
        seeded = set(groups.values())
        follow_parents(run, lambda p: f"{p}-seed{run.train.seed}" if p in seeded else p)


def _expand_runs(raw: dict, where: _Where, parts: dict) -> tuple[list[RunConfig], set[str]]:
    """(every run, the names of the grid's runs)."""
    study_dir = Path(parts["study"].output_dir)
    base_dict = to_dict(parts["base"])
    runs: list[RunConfig] = []
    grid_names = set()
    points = expand_branch_points(_run_points(raw, where, parts["study"].name), parts["base"].train)
    points, groups = _expand_seeds(points, parts["study"].seeds, where)
    check_overrides(where.cli, as_written(points))
    for name, dotted, origins in points:
        if "name" not in origins:  # only explicit runs (and the base alone) are named in the file
            grid_names.add(name)
        run_where = where.for_run(origins)
        d = json.loads(json.dumps(base_dict))
        for k, v in dotted.items():
            if k.split(".")[0] not in _SECTIONS:
                raise ConfigError(f"{run_where.at(k)}: unknown key (keys start with {', '.join(_SECTIONS)})")
            set_dotted(d, k, v)
        d["name"], d["group"] = name, groups.get(name)
        run = _build(RunConfig, d, run_where, "")
        _follow_seed_parent(run, groups)
        check_run(run, run_where)
        problem = batch_problem(run, parts["slurm"])  # the batch rule, against the study's resources
        if problem:
            raise ConfigError(f"{run_where.at(problem[0])}: {problem[1]} (run {name})")
        _resolve_paths(run, study_dir)
        runs.append(run)
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where.file}: run names appear twice: {', '.join(dupes)}")
    return runs, grid_names


def load_study(path: str | os.PathLike, overrides: list[str] | None = None, prepare: bool = False) -> Study:
    """Read, validate and expand a study file. Overrides are 'dotted.key=value' strings; a key
    without a top-level section (e.g. 'train.lr') applies to base. With prepare, the study's
    study.prepare hook makes its missing input files first: grid runs are named by their inputs'
    contents, so the names are taken once the inputs exist."""
    path = Path(path)
    raw, lines = _read_study_yaml(path)
    where = _Where(str(path), lines, cli=_apply_overrides(raw, overrides or []))
    parts = _study_sections(raw, where)
    runs, grid_names = _expand_runs(raw, where, parts)
    study = Study(path=path, runs=_order_by_parents(runs, path), **parts)
    check_branches(study)
    if prepare:
        prepare_study(study)
    _name_grid_runs(study, grid_names)
    return study


# example modules that moved under lorafull.examples: study files naming the old place still work
MOVED_PREPARE = {"lorafull.demo": "lorafull.examples.demo", "lorafull.smollm2": "lorafull.examples.smollm2"}


def prepare_study(study: Study) -> None:
    """Call study.prepare ("module:function") with the study: it makes the input files that are missing
    (the demo's data). The module is the user's, named in the study file, so it is imported by name."""
    if not study.study.prepare:
        return
    module, _, func = study.study.prepare.partition(":")
    module = MOVED_PREPARE.get(module, module)
    try:
        fn = getattr(importlib.import_module(module), func or "prepare")
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{study.path}: study.prepare: cannot load {study.study.prepare!r}: {e}") from None
    try:
        fn(study)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 -- a missing package or file of the hook: one line, no traceback
        from lorafull.runs import error_line

        raise ConfigError(f"{study.path}: study.prepare ({study.study.prepare}): {error_line(e)}") from None


def _order_by_parents(runs: list[RunConfig], path: Path) -> list[RunConfig]:
    by_name = {r.name: r for r in runs}
    ordered, state = [], {}

    def visit(r: RunConfig, chain: list[str]):
        if state.get(r.name) == "done":
            return
        if state.get(r.name) == "visiting":
            raise ConfigError(f"{path}: runs form a cycle: {' -> '.join(chain + [r.name])}")
        state[r.name] = "visiting"
        if r.parent is not None:
            if r.parent not in by_name:
                ref = f"train.branch_of {r.parent}" if r.train.branch_of else f"model.name_or_path run:{r.parent}"
                raise ConfigError(f"{path}: run {r.name!r}: {ref} names no run (runs: {', '.join(by_name)})")
            visit(by_name[r.parent], chain + [r.name])
        state[r.name] = "done"
        ordered.append(r)

    for r in runs:
        visit(r, [])
    return ordered


def _name_grid_runs(study: Study, grid_names: set[str]) -> None:
    """Grid runs get a readable slug + signature; explicit runs keep their name."""
    sigs = study_signatures(study)
    renamed = {}
    for run in study.runs:
        if run.name in grid_names:
            renamed[run.name] = f"{run.name}-{sigs[run.name]}"
            run.name = renamed[run.name]
    for run in study.runs:  # "run:<slug>" and a branch's trunk follow their grid parent's new name
        follow_parents(run, lambda p: renamed.get(p, p))

