"""Typed settings of a study and of each run, loaded from the study YAML.

    python -m lorafull.config configs/demo.yaml [dotted.key=value ...]   # print the resolved runs

A study file has the sections `study`, `base`, `grid`, `runs`, `slurm`, `plan`, `analysis`
(see README "Study file reference"). Every run starts from `base`; `grid` is a cross product over
dotted keys of `base`; `runs` are explicit named points. Unknown keys and wrong types are errors that
name the file, the line and the key, so a typo never silently trains the default.

A run's signature is a short hash of the settings that change its result. Paths to outputs, logging,
checkpoint cadence and resources (ZeRO stage, offload, micro batch, processes, Slurm) are left out:
the same run on other hardware is the same run, and its folder (and checkpoints) are reused.

Import from the package (`from lorafull.config import RunConfig, load_study, ...`). This module holds
the entry points on files (RUN_DIR/config.yaml, STUDY_DIR/study.yaml) and the command; the parts
import only downwards:
    typed        ConfigError, YAML -> dataclass with file:line: key errors; ranges and name patterns
    schema       the dataclasses: every key a study file may set, with its default, choices and range
    content      input files and folders by content hash (cached by path, size and mtime)
    signatures   run signatures from the settings that change a result and the inputs' contents
    fingerprint  what a run's responses and scores were computed under; older results moved aside
    branches     durations as cooldown branches: the step arithmetic, the checks, the expansion
    study        overrides, grid expansion, run names, load_study
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional

import yaml

from lorafull.config.schema import (AnalysisConfig, JudgeConfig, PlanConfig, RunConfig, SlurmConfig, Study,
                                    StudySection, StudySettings)
from lorafull.config.selection import SelectConfig
from lorafull.config.serve import serve_problems
from lorafull.config.signatures import study_signatures
from lorafull.config.study import check_run, load_study
from lorafull.config.typed import ConfigError, _build, _Where, read_yaml_file, to_dict


# ---------------------------------------------------------------------------------------------
# A run's resolved config.yaml
# ---------------------------------------------------------------------------------------------
def save_run_config(run: RunConfig, run_dir: Path, signature_value: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "config.yaml"
    body = {"signature": signature_value, **to_dict(run)}
    tmp = out.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    os.replace(tmp, out)
    return out


def load_run_config(run_dir: str | os.PathLike, for_training: bool = False) -> RunConfig:
    """The resolved settings a stage runs with (RUN_DIR/config.yaml), every key checked as in a study
    file (type, choices, range): a folder edited by hand fails here, naming its line and key, before
    any work starts. for_training adds the checks across keys that only training needs (batch sizes
    that divide, a tokenizer for a scratch model), so a judge-only folder needs no tokenizer."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: no such file (is {run_dir} a run folder? launch.grid writes it)")
    d, lines = read_yaml_file(path, "run config")
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of the run's sections, got {type(d).__name__}")
    d.pop("signature", None)
    where = _Where(str(path), lines)
    run = _build(RunConfig, d, where, "")
    if for_training:
        check_run(run, where)
    return run


def load_judge_file(path: str | os.PathLike) -> JudgeConfig:
    """A judge's settings alone (the keys of eval.judge) from a YAML file, checked as in a study file;
    relative paths in it (prompts, serve.model, cache) are taken from the file's folder."""
    path = Path(path)
    d, lines = read_yaml_file(path, "judge settings")
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of eval.judge keys, got {type(d).__name__}")
    where = _Where(str(path), lines)
    judge = _build(JudgeConfig, d, where, "")
    for key, why in serve_problems(judge):
        raise ConfigError(f"{where.at(key.removeprefix('eval.judge.') or key)}: {why}")

    def here(p: Optional[str]) -> Optional[str]:
        if not p or ":" in p.split("/")[0]:  # gguf:smollm2 and other names stay names
            return p
        return str((path.parent / Path(p).expanduser()).resolve())

    judge.prompts, judge.cache = here(judge.prompts), here(judge.cache)
    if judge.serve is not None:
        judge.serve.model = ("gguf:" + here(judge.serve.model[5:])) if judge.serve.model.startswith("gguf:") and \
            judge.serve.model.endswith(".gguf") else here(judge.serve.model)
    return judge


def run_signature_from_folder(run_dir: str | os.PathLike) -> Optional[str]:
    path = Path(run_dir) / "config.yaml"
    try:
        with open(path, "rb") as f:
            head = f.readline(200)
    except OSError:
        return None
    # save_run_config writes the signature first: the launcher reads it from thousands of folders per
    # call without parsing the rest; a file edited by hand is parsed in full
    m = re.fullmatch(rb"signature: ([0-9a-f]{8})\n", head)
    if m:
        return m.group(1).decode()
    d, _ = read_yaml_file(path, "run config")
    return d.get("signature") if isinstance(d, dict) else None


# ---------------------------------------------------------------------------------------------
# Study-level settings beside the runs (STUDY_DIR/study.yaml), for stages that run on one folder
# ---------------------------------------------------------------------------------------------
_STUDY_SETTINGS = {"study": StudySection, "slurm": SlurmConfig, "plan": PlanConfig, "analysis": AnalysisConfig,
                   "select": SelectConfig}


def save_study_settings(study: Study) -> Path:
    """Write the resolved study-level sections to STUDY_DIR/study.yaml (launch.grid does this)."""
    out = study.output_dir / "study.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {"source": str(Path(study.path).resolve()), **{k: to_dict(getattr(study, k)) for k in _STUDY_SETTINGS},
            "runs": [r.name for r in study.runs]}  # the study's order: the report's rows follow it
    tmp = out.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    os.replace(tmp, out)
    return out


def load_study_settings(study_dir: str | os.PathLike) -> StudySettings:
    """The study-level sections saved by save_study_settings; defaults when the file is absent
    (a run folder made by hand still runs every stage)."""
    path = Path(study_dir) / "study.yaml"
    raw, lines = read_yaml_file(path, "study settings") if path.exists() else ({}, {})
    raw = raw if isinstance(raw, dict) else {}
    if isinstance(raw.get("slurm"), dict):  # written by versions that declared slurm.report_to (never read)
        raw["slurm"].pop("report_to", None)
    where = _Where(str(path), lines)
    parts = {k: _build(cls, raw.get(k) or {}, where, k) for k, cls in _STUDY_SETTINGS.items()}
    return StudySettings(**parts)


def study_dir_of_run(run_dir: str | os.PathLike) -> Path:
    """RUN_DIR = STUDY_DIR/runs/<run>."""
    return Path(run_dir).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from lorafull.runs import command_parser

    parser = command_parser("python -m lorafull.config", __doc__, "python -m lorafull.config configs/demo.yaml",
                            "python -m lorafull.config configs/demo.yaml train.lr=2e-4")
    parser.add_argument("config", metavar="CONFIG", help="a study file (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="settings put over the file's")
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    try:
        study = load_study(args.config, args.overrides, prepare=True)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sigs = study_signatures(study)
    for run in study.runs:
        print(f"# {run.name}  signature={sigs[run.name]}")
        print(yaml.safe_dump(to_dict(run), sort_keys=False, allow_unicode=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
