"""From a study file to its runs: dotted overrides, grid expansion (cross product, zipped keys), run
names, signatures, path resolution, validation and parents-first ordering.

Library module; the command that prints the result is `python -m lorafull.config FILE [k=v ...]`.
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from lorafull.config.schema import AnalysisConfig, PlanConfig, RunConfig, SlurmConfig, Study, StudySection
from lorafull.config.typed import ConfigError, _build, _line_map, _Where, to_dict


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
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in s)[:24]


def _grid_points(grid: dict) -> list[dict]:
    """Cross product over the grid's keys. A key 'a.b,c.d' zips settings that vary together (e.g. a
    rank with its alpha): its values are lists [a.b value, c.d value]."""
    if not grid:
        return []
    keys = list(grid)
    values = [v if isinstance(v, list) else [v] for v in grid.values()]
    points = []
    for combo in itertools.product(*values):
        point = {}
        for key, value in zip(keys, combo):
            parts = [k.strip() for k in str(key).split(",")]
            if len(parts) == 1:
                point[key] = value
                continue
            if not isinstance(value, list) or len(value) != len(parts):
                raise ConfigError(f"grid.{key}: each value must be a list of {len(parts)} settings, got {value!r}")
            point.update(zip(parts, value))
        points.append(point)
    return points


def _name_keys(grid: dict) -> set[str]:
    """Grid keys that name a run: every plain key, and the first key of each zipped group."""
    return {str(k).split(",")[0].strip() for k in (grid or {})}


# ---------------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------------
# Settings that do not change what a run learns: resources, cadence, logging, outputs, eval.
_NOT_IN_SIGNATURE = {
    "name",
    "group",
    "eval",
    "model.arch",  # planning hint only
    "data.cache_dir",
    "train.zero_stage",
    "train.offload",
    "train.micro_batch_size",
    "train.gradient_checkpointing",
    "train.save_every_steps",
    "train.keep_checkpoints",
    "train.log_every_steps",
    "train.deepspeed",
    "train.nproc",
}


def signature_payload(run: RunConfig, parent_signature: Optional[str] = None) -> dict:
    d = to_dict(run)
    for dotted in _NOT_IN_SIGNATURE:
        parts = dotted.split(".")
        sub = d
        for p in parts[:-1]:
            sub = sub.get(p, {})
        sub.pop(parts[-1], None)
    if run.parent is not None:
        # a chained run depends on what its parent learned, not on the parent's name
        d["model"]["name_or_path"] = f"run-signature:{parent_signature}"
    return d


def signature(run: RunConfig, parent_signature: Optional[str] = None) -> str:
    payload = json.dumps(signature_payload(run, parent_signature), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def study_signatures(study: Study) -> dict[str, str]:
    """name -> signature for every run, parents first (chained runs hash their parent's signature)."""
    sigs: dict[str, str] = {}
    for run in study.runs:  # runs are topologically ordered by load_study
        sigs[run.name] = signature(run, sigs.get(run.parent) if run.parent else None)
    return sigs


# ---------------------------------------------------------------------------------------------
# Loading a study
# ---------------------------------------------------------------------------------------------
_TOP_KEYS = ("study", "base", "grid", "runs", "slurm", "plan", "analysis")


def _resolve_paths(run: RunConfig, study_dir: Path) -> None:
    """Make file paths absolute (jobs run elsewhere) and expand {study_dir}."""

    def fix(p: Optional[str]) -> Optional[str]:
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
    run.eval.judge.prompts = fix(run.eval.judge.prompts)
    run.eval.judge.cache = fix(run.eval.judge.cache) or str((study_dir / "cache" / "judge.sqlite").resolve())


def validate_run(run: RunConfig, where: str) -> None:
    """Checks that need no files: enumerations and ranges."""

    def bad(key, msg):
        raise ConfigError(f"{where}: run {run.name!r}: {key}: {msg}")

    if run.method.kind not in ("full", "lora"):
        bad("method.kind", f"expected full or lora, got {run.method.kind!r}")
    if run.model.dtype not in ("bf16", "fp16", "fp32"):
        bad("model.dtype", f"expected bf16, fp16 or fp32, got {run.model.dtype!r}")
    if run.data.format not in ("auto", "alpaca", "conversations", "text"):
        bad("data.format", f"expected auto, alpaca, conversations or text, got {run.data.format!r}")
    if run.data.template not in ("belle", "chat"):
        bad("data.template", f"expected belle or chat, got {run.data.template!r}")
    if run.train.scheduler not in ("cosine", "linear", "constant"):
        bad("train.scheduler", f"expected cosine, linear or constant, got {run.train.scheduler!r}")
    if run.train.zero_stage not in (0, 1, 2, 3):
        bad("train.zero_stage", f"expected 0, 1, 2 or 3, got {run.train.zero_stage}")
    if run.train.global_batch_size % run.train.micro_batch_size:
        bad("train.global_batch_size", f"{run.train.global_batch_size} is not a multiple of micro_batch_size "
            f"{run.train.micro_batch_size}")
    if run.eval.judge.kind not in ("openai", "reference"):
        bad("eval.judge.kind", f"expected openai or reference, got {run.eval.judge.kind!r}")
    if run.method.kind == "lora" and run.method.r <= 0:
        bad("method.r", "must be > 0")
    if run.model.name_or_path.startswith("scratch:") and not run.model.tokenizer:
        bad("model.tokenizer", "a scratch: model needs a tokenizer path")


def _default_name(point: dict) -> str:
    # a path value is named by its file stem (a run called "math" rather than "-home-me-data-ma")
    return "-".join(f"{k.split('.')[-1]}{_short(v)}" if not isinstance(v, str)
                    else _short(Path(v).stem if "/" in v else v)
                    for k, v in point.items()) or "run"


def _read_study_yaml(path: Path) -> tuple[dict, str]:
    """The study file's mapping and its text (for line numbers); every failure is one ConfigError line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read study file: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study file is a mapping with keys {', '.join(_TOP_KEYS)}")
    return raw, text


def _run_points(raw: dict, where: "_Where", default_name: str) -> list[tuple[str, dict, str]]:
    """(name, dotted overrides of base, origin) for every grid point and explicit run; the base alone
    (named after the study) when there are neither."""
    points: list[tuple[str, dict, str]] = []  # (name, dotted overrides, where-prefix)
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{where.at('grid')}: expected a mapping of dotted keys to lists")
    try:
        grid_points = _grid_points(grid)
    except ConfigError as e:
        raise ConfigError(f"{where.at('grid')}: {e}") from None
    naming = _name_keys(grid)
    for point in grid_points:
        name = _default_name({k: v for k, v in point.items() if k in naming})
        points.append((name, {_run_key(k): v for k, v in point.items()}, "grid"))
    for i, entry in enumerate(raw.get("runs") or []):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where.at(f'runs[{i}]')}: expected a mapping like {{name: ..., method.kind: full}}")
        entry = dict(entry)
        name = entry.pop("name", None)
        if not name:
            raise ConfigError(f"{where.at(f'runs[{i}]')}: every explicit run needs a name")
        points.append((str(name), {_run_key(k): v for k, v in entry.items()}, f"runs[{i}]"))
    if not points:
        points.append((default_name, {}, "base"))

    return points


def _expand_seeds(points: list, seeds: list[int], where: "_Where") -> tuple[list, dict[str, str]]:
    """One point per seed for every point that does not set train.seed itself (a shared base model
    such as a pre-training run keeps one seed); returns (points, seeded name -> its group name)."""
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where.at('study.seeds')}: {seeds} lists a seed twice")
    if not seeds:
        return points, {}
    out, groups = [], {}
    for name, dotted, origin in points:
        if "train.seed" in dotted:
            out.append((name, dotted, origin))
            continue
        for seed in seeds:
            out.append((f"{name}-seed{seed}", {**dotted, "train.seed": seed}, origin))
            groups[f"{name}-seed{seed}"] = name
    return out, groups


def _follow_seed_parent(run: RunConfig, groups: dict[str, str]) -> None:
    """A seeded run whose parent was expanded by seed too starts from the parent of its own seed."""
    if run.group is not None and run.parent in groups.values():
        run.model.name_or_path = f"run:{run.parent}-seed{run.train.seed}"


def load_study(path: str | os.PathLike, overrides: list[str] | None = None) -> Study:
    """Read, validate and expand a study file. Overrides are 'dotted.key=value' strings; a key
    without a top-level section (e.g. 'train.lr') applies to base."""
    path = Path(path)
    raw, text = _read_study_yaml(path)
    where = _Where(str(path), _line_map(text))

    for text_override in overrides or []:
        key, value = parse_override(text_override)
        if key.split(".")[0] in _SECTIONS:
            key = "base." + key
        if key.split(".")[0] not in _TOP_KEYS:
            raise ConfigError(f"override {text_override!r}: unknown section {key.split('.')[0]!r}")
        set_dotted(raw, key, value)

    for k in raw:
        if k not in _TOP_KEYS:
            close = difflib.get_close_matches(str(k), _TOP_KEYS, n=1)
            raise ConfigError(f"{where.at(k)}: unknown section" + (f" (did you mean {close[0]!r}?)" if close else ""))

    section = _build(StudySection, raw.get("study") or {}, where, "study")
    section.output_dir = section.output_dir.replace("{name}", section.name)
    study_dir = Path(section.output_dir).expanduser().resolve()
    section.output_dir = str(study_dir)
    slurm = _build(SlurmConfig, raw.get("slurm") or {}, where, "slurm")
    plan = _build(PlanConfig, raw.get("plan") or {}, where, "plan")
    analysis = _build(AnalysisConfig, raw.get("analysis") or {}, where, "analysis")

    base_raw = raw.get("base") or {}
    if not isinstance(base_raw, dict):
        raise ConfigError(f"{where.at('base')}: expected a mapping")
    base = _build(RunConfig, base_raw, where, "base")

    points, groups = _expand_seeds(_run_points(raw, where, section.name), section.seeds, where)

    runs: list[RunConfig] = []
    base_dict = to_dict(base)
    for name, dotted, origin in points:
        d = json.loads(json.dumps(base_dict))
        for k, v in dotted.items():
            if k.split(".")[0] not in _SECTIONS:
                raise ConfigError(f"{where.at(origin)}: {k}: unknown key (keys start with {', '.join(_SECTIONS)})")
            set_dotted(d, k, v)
        d["name"], d["group"] = name, groups.get(name)
        run = _build(RunConfig, d, _Where(str(path), where.lines), "")
        _follow_seed_parent(run, groups)
        _resolve_paths(run, study_dir)
        validate_run(run, str(path))
        runs.append(run)

    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: run names appear twice: {', '.join(dupes)}")
    runs = _order_by_parents(runs, path)
    for task in analysis.target_tasks + analysis.source_tasks:
        task.path = str(Path(task.path.replace("{study_dir}", str(study_dir))).expanduser().resolve())
    study = Study(path=path, study=section, base=base, runs=runs, slurm=slurm, plan=plan, analysis=analysis)
    _name_grid_runs(study, {n for n, _, o in points if o == "grid"})
    return study


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
                raise ConfigError(f"{path}: run {r.name!r}: model.name_or_path run:{r.parent} names no run "
                                  f"(runs: {', '.join(by_name)})")
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
    for run in study.runs:  # "run:<slug>" in a chained run follows its grid parent's new name
        if run.parent in renamed:
            run.model.name_or_path = f"run:{renamed[run.parent]}"
