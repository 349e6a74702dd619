"""The settings of a study and of each run: one dataclass per YAML section, each key with its default
and a comment. This is the reference of every key a study file may set; add a key here (with a comment)
and the typed loader (lorafull.config_typed) accepts it.

Library module (no command): lorafull.config re-exports every class defined here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from lorafull.config.typed import ConfigError


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
    # set by study.seeds, not by hand: the run's name without its seed; the report pools a group's seeds
    group: Optional[str] = None
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
    # training seeds: every run that does not set train.seed itself becomes one run per seed
    # (<name>-seed<k>); the report shows each group's mean over seeds with an interval over seeds and items
    seeds: list[int] = field(default_factory=list)


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


# The study-level sections read back from STUDY_DIR/study.yaml by lorafull.config.load_study_settings.
@dataclass
class StudySettings:
    study: StudySection
    slurm: SlurmConfig
    plan: PlanConfig
    analysis: AnalysisConfig
