"""Typed settings of a study and of each run, loaded from the study YAML.

    python -m lorafull.config configs/demo.yaml [dotted.key=value ...]   # print the resolved runs

A study file has the sections `study`, `base`, `grid`, `runs`, `slurm`, `plan`, `analysis`
(see README "Study file reference"). Every run starts from `base`; `grid` is a cross product over
dotted keys of `base`; `runs` are explicit named points. Unknown keys and wrong types are errors that
name the file, the line and the key, so a typo never silently trains the default.

A run's signature is a short hash of the settings that change its result. Paths to outputs, logging,
checkpoint cadence and resources (ZeRO stage, offload, micro batch, processes, Slurm) are left out:
the same run on other hardware is the same run, and its folder (and checkpoints) are reused.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml


class ConfigError(ValueError):
    """A bad study file or override; the message names the file, line and key."""


# ---------------------------------------------------------------------------------------------
# Sections of a run
# ---------------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    # a local HF folder, a hub id, "run:<name>" (another run's final model), or
    # "scratch:<arch>" = random init from lorafull/archs/<arch>.json or from a config.json path
    name_or_path: str = "scratch:tiny-llama"
    dtype: str = "bf16"  # bf16 | fp16 | fp32
    tokenizer: Optional[str] = None  # defaults to name_or_path (required for scratch:)
    # architecture for the plan when name_or_path has no config.json here (a hub id, or a path that
    # exists only on the cluster): a shipped arch name (lorafull/archs/<arch>.json) or a config.json path.
    # Planning only: not in the signature.
    arch: Optional[str] = None


@dataclass
class MethodConfig:
    kind: str = "lora"  # full | lora
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    # attention | mlp | all-linear | [q_proj, v_proj, ...]
    target_modules: Union[str, list[str]] = "all-linear"


@dataclass
class DataConfig:
    train: Optional[str] = None  # .json or .jsonl
    format: str = "auto"  # alpaca | conversations | text (plain {"text"}: every token trained) | auto
    num_samples: Optional[int] = None  # deterministic subset (by train.seed); null = all
    max_length: int = 1024
    template: str = "belle"  # belle | chat (the tokenizer's chat template)
    # concatenate samples into max_length blocks (labels keep their masks; attention crosses
    # sample boundaries; long samples are split across blocks instead of truncated)
    packing: bool = False
    cache_dir: Optional[str] = None  # tokenized cache; default STUDY_DIR/cache/tokenized


@dataclass
class TrainConfig:
    epochs: float = 3.0
    max_steps: Optional[int] = None  # stop after this many optimizer steps (overrides epochs)
    global_batch_size: int = 32
    micro_batch_size: int = 2
    lr: float = 5.0e-6
    scheduler: str = "cosine"  # cosine | linear | constant
    warmup_ratio: float = 0.03
    warmup_steps: Optional[int] = None  # when set, wins over warmup_ratio
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    zero_stage: int = 2  # 0 | 1 | 2 | 3
    offload: bool = False  # ZeRO CPU offload of optimizer states (and params for stage 3)
    gradient_checkpointing: bool = False
    seed: int = 42
    save_every_steps: int = 500
    keep_checkpoints: int = 2
    log_every_steps: int = 10
    deepspeed: bool = True  # false = the same loop without DeepSpeed (plain torch, 1 process)
    nproc: Optional[int] = None  # processes per node; default: GPUs per node, or 1 on the CPU


@dataclass
class JudgeConfig:
    kind: str = "openai"  # openai | reference
    model: str = "gpt-3.5-turbo"
    base_url: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    prompts: Optional[str] = None  # BELLE format {"class", "prompt"} per line; default: the package's
    temperature: float = 0.0
    max_tokens: int = 256
    n_samples: int = 1  # judge each item n times and average
    concurrency: int = 16
    requests_per_minute: Optional[int] = None
    tokens_per_minute: Optional[int] = None
    max_retries: int = 6
    backoff_base_s: float = 1.0  # retry k waits uniform(0, min(60, backoff_base_s * 2^k)) s (no Retry-After)
    timeout_s: float = 60.0
    cache: Optional[str] = None  # default STUDY_DIR/cache/judge.sqlite
    # USD per 1M tokens, by judge model: {gpt-3.5-turbo: {input: 0.5, output: 1.5}}
    prices: dict = field(default_factory=dict)
    # an unreadable judge reply is asked again this many times (a new sample), then recorded as null
    parse_retries: int = 2
    # kind: reference -- eval class -> offline scorer (math | code | text); unlisted classes use text
    scorers: dict = field(default_factory=lambda: {"math": "math", "code": "code"})


@dataclass
class EvalConfig:
    eval_set: Optional[str] = None
    max_new_tokens: int = 512
    temperature: float = 0.001  # <= 0.01 is treated as greedy
    batch_size: int = 16
    num_items: Optional[int] = None  # first N items only (quick looks)
    backend: str = "auto"  # auto | hf | vllm
    merge_lora: bool = True  # hf backend: fold a LoRA adapter into the weights first (faster, same outputs)
    judge: JudgeConfig = field(default_factory=JudgeConfig)


@dataclass
class RunConfig:
    name: Optional[str] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def parent(self) -> Optional[str]:
        """Name of the run this one starts from (model.name_or_path = run:<name>), else None."""
        p = self.model.name_or_path
        return p[len("run:"):] if p.startswith("run:") else None


# ---------------------------------------------------------------------------------------------
# Study-level sections
# ---------------------------------------------------------------------------------------------
@dataclass
class StudySection:
    name: str = "study"
    output_dir: str = "studies/{name}"
    # "module:function" called with (study) before planning, to make data files that are missing
    prepare: Optional[str] = None


@dataclass
class SlurmConfig:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_gpu: int = 8
    mem_per_gpu_gb: int = 60
    timeout_min: int = 2880
    signal_delay_s: int = 120
    array_parallelism: int = 16
    max_requeues: int = 10
    gpu_mem_gb: float = 40.0  # memory of one GPU of the partition; the plan checks fit against it
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load ...)
    eval_gpus: int = 1  # GPUs for a generation job
    eval_timeout_min: int = 600
    # (launch) generic resource requested per GPU: "gpu", or a typed "gpu:a100"; null = a CPU partition:
    # no GPUs are requested and training starts train.nproc (default gpus_per_node) processes per node
    gres: Optional[str] = "gpu"
    # (launch) interpreter command of the jobs; null = the launching interpreter (launch.grid) or
    # "python" from the job's environment (the scripts of launch.render)
    python: Optional[str] = None
    report_timeout_min: int = 60  # (launch) the report job's time limit


@dataclass
class PlanConfig:
    mfu: float = 0.4  # model FLOPs utilisation assumed for GPU-hour estimates
    gpu_tflops: float = 312.0  # peak dense bf16 TFLOP/s of one GPU (A100: 312)
    # mean tokens per training sample (prompt + answer); null = counted from data.train when the file
    # is here (first lines, with the run's tokenizer), else max_length / 2
    avg_tokens_per_sample: Optional[float] = None
    mem_margin: float = 0.1  # fraction of slurm.gpu_mem_gb kept free (allocator fragmentation, spikes)
    overhead_gb: float = 1.5  # per GPU: CUDA context, NCCL and DeepSpeed buffers


@dataclass
class TaskSpec:
    name: str = ""
    path: str = ""
    kind: str = "choice"  # choice (log-likelihood of options) | generation (offline scorer)
    scorer: Optional[str] = None  # math | code | text, for generation tasks
    # (analysis) choice tasks: which accuracy is the task's score: acc | acc_norm (length-normalised)
    metric: str = "acc"
    num_items: Optional[int] = None  # (analysis) first N items only; null = all
    max_new_tokens: Optional[int] = None  # (analysis) generation tasks; null = the run's eval.max_new_tokens


@dataclass
class AnalysisConfig:
    target_tasks: list[TaskSpec] = field(default_factory=list)
    source_tasks: list[TaskSpec] = field(default_factory=list)
    spectrum: bool = False  # spectral analysis of the weight change of every run
    checkpoints: bool = False  # also evaluate intermediate checkpoints for learning/forgetting
    spike_factor: float = 3.0  # loss above k x running median = a spike


@dataclass
class Study:
    path: Path
    study: StudySection
    base: RunConfig
    runs: list[RunConfig]
    slurm: SlurmConfig
    plan: PlanConfig
    analysis: AnalysisConfig

    @property
    def output_dir(self) -> Path:
        return Path(self.study.output_dir)

    def run(self, name: str) -> RunConfig:
        for r in self.runs:
            if r.name == name:
                return r
        raise ConfigError(f"{self.path}: no run named {name!r} (runs: {', '.join(r.name for r in self.runs)})")

    def run_dir(self, run: RunConfig) -> Path:
        return self.output_dir / "runs" / run.name


# ---------------------------------------------------------------------------------------------
# Typed loading with errors that name the key and line
# ---------------------------------------------------------------------------------------------
def _line_map(text: str) -> dict[str, int]:
    """dotted key path -> 1-based line of that key in the YAML text (best effort)."""
    lines: dict[str, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                key = f"{prefix}[{i}]"
                lines[key] = v.start_mark.line + 1
                walk(v, key)

    try:
        walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    except yaml.YAMLError:
        pass
    return lines


class _Where:
    """Where a value came from, for error messages: file + key path -> 'file:line: key'."""

    def __init__(self, file: str, lines: dict[str, int], prefix: str = ""):
        self.file, self.lines, self.prefix = file, lines, prefix

    def at(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.file}:{line}: {key}" if line else f"{self.file}: {key}"


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, key: str, where: _Where):
    """Check/convert `value` to annotation `tp`; raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where.at(key)}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where.at(key)}: expected a mapping, got {value!r}")
        return _build(tp, value, where, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{where.at(key)}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where.at(key)}: expected a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where.at(key)}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where.at(key)}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-6" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where.at(key)}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where.at(key)}: expected a string, got {value!r}")
    return value


def _build(cls, data: dict, where: _Where, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in hints:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"{where.at(key)}: unknown key{hint}")
        kwargs[k] = _coerce(v, hints[k], key, where)
    return cls(**kwargs)


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


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


def load_study(path: str | os.PathLike, overrides: list[str] | None = None) -> Study:
    """Read, validate and expand a study file. Overrides are 'dotted.key=value' strings; a key
    without a top-level section (e.g. 'train.lr') applies to base."""
    path = Path(path)
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
        points.append((section.name, {}, "base"))

    runs: list[RunConfig] = []
    base_dict = to_dict(base)
    for name, dotted, origin in points:
        d = json.loads(json.dumps(base_dict))
        for k, v in dotted.items():
            if k.split(".")[0] not in _SECTIONS:
                raise ConfigError(f"{where.at(origin)}: {k}: unknown key (keys start with {', '.join(_SECTIONS)})")
            set_dotted(d, k, v)
        d["name"] = name
        run = _build(RunConfig, d, _Where(str(path), where.lines), "")
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


def load_run_config(run_dir: str | os.PathLike) -> RunConfig:
    """The resolved settings a stage runs with (RUN_DIR/config.yaml)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: no such file (is {run_dir} a run folder? launch.grid writes it)")
    text = path.read_text()
    d = yaml.safe_load(text) or {}
    d.pop("signature", None)
    return _build(RunConfig, d, _Where(str(path), _line_map(text)), "")


def run_signature_from_folder(run_dir: str | os.PathLike) -> Optional[str]:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return None
    return (yaml.safe_load(path.read_text()) or {}).get("signature")


# ---------------------------------------------------------------------------------------------
# Study-level settings beside the runs (STUDY_DIR/study.yaml), for stages that run on one folder
# ---------------------------------------------------------------------------------------------
_STUDY_SETTINGS = {"study": StudySection, "slurm": SlurmConfig, "plan": PlanConfig, "analysis": AnalysisConfig}


def save_study_settings(study: Study) -> Path:
    """Write the resolved study-level sections to STUDY_DIR/study.yaml (launch.grid does this)."""
    out = study.output_dir / "study.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {"source": str(Path(study.path).resolve()), **{k: to_dict(getattr(study, k)) for k in _STUDY_SETTINGS}}
    tmp = out.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    os.replace(tmp, out)
    return out


@dataclass
class StudySettings:
    study: StudySection
    slurm: SlurmConfig
    plan: PlanConfig
    analysis: AnalysisConfig


def load_study_settings(study_dir: str | os.PathLike) -> StudySettings:
    """The study-level sections saved by save_study_settings; defaults when the file is absent
    (a run folder made by hand still runs every stage)."""
    path = Path(study_dir) / "study.yaml"
    raw = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    where = _Where(str(path), _line_map(path.read_text()) if path.exists() else {})
    parts = {k: _build(cls, raw.get(k) or {}, where, k) for k, cls in _STUDY_SETTINGS.items()}
    return StudySettings(**parts)


def study_dir_of_run(run_dir: str | os.PathLike) -> Path:
    """RUN_DIR = STUDY_DIR/runs/<run>."""
    return Path(run_dir).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip().splitlines()[0])
        return 2
    try:
        study = load_study(argv[0], argv[1:])
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
