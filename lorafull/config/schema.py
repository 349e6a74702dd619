"""The settings of a study and of each run: one dataclass per YAML section, each key with its default
and a comment. This is the reference of every key a study file may set; add a key here (with a comment)
and the typed loader (lorafull.config_typed) accepts it.

Library module (no command): lorafull.config re-exports every class defined here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union, get_args

from lorafull.config.analysis_section import AnalysisConfig, TaskSpec  # noqa: F401 -- sections of Study
from lorafull.config.judge import JudgeConfig
from lorafull.config.selection import SelectConfig
from lorafull.config.serve import serve_problems
from lorafull.config.typed import ConfigError, named, ranged

# The choices of every enumerated key: the typed loader checks them at load, and nothing else does.
DType = Literal["bf16", "fp16", "fp32"]
MethodKind = Literal["full", "lora", "dora", "loha", "ia3", "prompt", "prefix", "adapter", "qlora"]
QuantType = Literal["nf4", "fp4"]
DataFormat = Literal["auto", "alpaca", "conversations", "text"]
Template = Literal["belle", "chat"]
Scheduler = Literal["cosine", "linear", "constant", "inverse_sqrt"]
ZeroStage = Literal[0, 1, 2, 3]
Backend = Literal["auto", "hf", "vllm"]
Optimizer = Literal["adamw", "lion"]
Tracker = Literal["tensorboard", "wandb", "mlflow"]


# ---------------------------------------------------------------------------------------------
# Sections of a run
# ---------------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    # a local HF folder, a hub id, "run:<name>" (another run's final model), or
    # "scratch:<arch>" = random init from lorafull/archs/<arch>.json or from a config.json path, or
    # "gguf:<file.gguf>" / "gguf:smollm2" = a GGUF model converted once into $LORAFULL_MODEL_CACHE
    name_or_path: str = "scratch:tiny-llama"
    dtype: DType = "bf16"
    tokenizer: Optional[str] = None  # defaults to name_or_path (required for scratch:)
    # architecture for the plan when name_or_path has no config.json here (a hub id, or a path that
    # exists only on the cluster): a shipped arch name (lorafull/archs/<arch>.json) or a config.json path.
    # Planning only: not in the signature.
    arch: Optional[str] = None


# full trains every weight; the rest freeze the base and train added parameters (peft, or our adapter)
METHOD_KINDS = get_args(MethodKind)
QLORA_KEYS = ("method.quant_type", "method.double_quant", "method.compute_dtype")  # in qlora's signatures only


@dataclass
class MethodConfig:
    # full | lora | dora | loha | ia3 | prompt | prefix (peft) | adapter (bottleneck) | qlora (LoRA, 4-bit base)
    kind: MethodKind = "lora"
    r: int = ranged(8, ge=1)  # lora / dora / loha rank
    alpha: float = ranged(16.0, gt=0)
    dropout: float = ranged(0.05, ge=0, lt=1)
    # attention | mlp | all-linear | [q_proj, v_proj, ...]
    target_modules: Union[str, list[str]] = "all-linear"
    # -- methods beyond LoRA --
    num_virtual_tokens: int = ranged(20, ge=1)  # prompt / prefix tuning: length of the learned prefix
    adapter_size: int = ranged(64, ge=1)  # adapter: bottleneck width of each adapter (after every MLP block)
    quant_type: QuantType = "nf4"  # qlora (lorafull.models.qlora): 4-bit data type nf4 (the QLoRA paper's) | fp4
    double_quant: bool = True  # qlora: the per-64-weight scales quantised too (8 bits instead of 32)
    compute_dtype: Optional[DType] = None  # qlora: 4-bit weights dequantised to it per matmul; null = model.dtype


@dataclass
class DataConfig:
    # .json / .jsonl, a .parquet file, a datasets save_to_disk folder, or hf:OWNER/NAME (a hub dataset read
    # from the datasets cache); split and subset choose within the last two
    train: Optional[str] = None
    split: str = "train"
    subset: Optional[str] = None
    format: DataFormat = "auto"  # alpaca | conversations | text (plain {"text"}: every token trained) | auto
    num_samples: Optional[int] = ranged(None, ge=1)  # deterministic subset (by train.seed); null = all
    max_length: int = ranged(1024, ge=2)  # a prompt token and an answer token at least
    template: Template = "belle"  # chat = the tokenizer's chat template
    # concatenate samples into max_length blocks (labels keep their masks; attention crosses
    # sample boundaries; long samples are split across blocks instead of truncated)
    packing: bool = False
    cache_dir: Optional[str] = None  # tokenized cache; default STUDY_DIR/cache/tokenized
    # -- task-count sweeps --
    num_tasks: Optional[int] = ranged(None, ge=1)  # keep the samples of k tasks (chosen by train.seed); null = all
    task_field: str = "task"  # the field of a training record that names its task
    # processes that tokenize a JSON-lines file of 32 MB or more; null = every core this job may use
    num_proc: Optional[int] = ranged(None, ge=1)


@dataclass
class TrainConfig:
    epochs: float = ranged(3.0, gt=0)
    max_steps: Optional[int] = ranged(None, ge=1)  # stop after this many optimizer steps (overrides epochs)
    global_batch_size: int = ranged(32, ge=1)
    # or auto: the largest that the memory model fits (lorafull.plan.auto)
    micro_batch_size: Union[int, Literal["auto"]] = ranged(2, ge=1)
    lr: float = ranged(5.0e-6, gt=0)
    scheduler: Scheduler = "cosine"
    warmup_ratio: float = ranged(0.03, ge=0, lt=1)
    warmup_steps: Optional[int] = ranged(None, ge=0)  # when set, wins over warmup_ratio
    weight_decay: float = ranged(0.0, ge=0)  # decoupled (AdamW / LionW), on weight matrices only
    grad_clip: float = ranged(1.0, ge=0)  # 0 = no clipping
    # -- optimizer, schedule floor, token budget --
    optimizer: Optimizer = "adamw"  # adamw | lion (sign update of Chen et al. 2023, decoupled weight decay)
    betas: Optional[list[float]] = None  # null = adamw (0.9, 0.999), lion (0.9, 0.99); two numbers in [0, 1)
    min_lr_ratio: float = ranged(0.0, ge=0, le=1)  # cosine / linear decay ends at min_lr_ratio x lr instead of 0
    max_tokens: Optional[int] = ranged(None, ge=1)  # stop once this many training tokens were seen (wins over epochs)
    save_at_tokens: list[int] = field(default_factory=list)  # also checkpoint at these token counts (kept)
    # -- inverse_sqrt (llm-foundry's inv_sqrt_with_warmup, the CPT schedule of Biderman et al. 2024): warmup,
    # then alpha_f_decay + (1 - alpha_f_decay) / sqrt((t - warmup + t_scale) / t_scale), then a linear
    # cooldown to alpha_f_cooldown over the last cooldown_steps (or cooldown_ratio of the run's steps)
    t_scale: Optional[int] = ranged(None, ge=1)  # optimizer steps; needed unless alpha_f_decay is 1 (flat)
    alpha_f_decay: float = ranged(0.0, ge=0, le=1)  # the multiplier the decay tends to (1: constant after warmup)
    alpha_f_cooldown: float = ranged(0.0, ge=0, le=1)  # the floor the cooldown reaches, at the last step
    cooldown_steps: Optional[int] = ranged(None, ge=0)  # wins over cooldown_ratio; neither: no cooldown
    cooldown_ratio: Optional[float] = ranged(None, ge=0, le=1)  # of the run's optimizer steps (rounded up)
    # -- cooldown branches (lorafull.config.branches): this run becomes a trunk at the stable lr plus one
    # branch run per token budget, each resuming from the trunk's checkpoint where its cooldown starts
    branch_max_tokens: list[int] = field(default_factory=list)
    # set by the expansion (or by hand): the trunk run whose checkpoint this run resumes from
    branch_of: Optional[str] = named(None)
    zero_stage: ZeroStage = 2
    offload: bool = False  # ZeRO CPU offload of optimizer states (and params for stage 3)
    gradient_checkpointing: Union[bool, Literal["auto"]] = False  # or auto: on only when no micro batch fits without it
    seed: int = ranged(42, ge=0)
    save_every_steps: int = ranged(500, ge=0)  # 0 = no periodic checkpoints (preemption still saves one)
    keep_checkpoints: int = ranged(2, ge=1)
    log_every_steps: int = ranged(10, ge=1)
    deepspeed: bool = True  # false = the same loop without DeepSpeed (plain torch, 1 process)
    nproc: Optional[int] = ranged(None, ge=1)  # processes per node; default: GPUs per node, or 1 on the CPU
    # experiment trackers fed with metrics.jsonl's numbers: [tensorboard, wandb, mlflow] (any of them);
    # null = [tensorboard] when it is installed, else none; [] = none. Not in the signature.
    report_to: Optional[list[Tracker]] = None
    # the fast path (each off by default; README "Training speed" says what each one does)
    adapter_dtype: Literal["fp32", "compute"] = "fp32"  # compute: LoRA adapters computed in model.dtype, fp32 master kept
    compile: bool = False  # torch.compile the model (peft wrapper included)
    fused_kernels: bool = False  # Liger-Kernel RMSNorm/RoPE/SwiGLU/fused linear cross-entropy (CUDA only)
    group_by_length: bool = False  # sort each global batch by length before cutting micro batches


@dataclass
class EvalConfig:
    eval_set: Optional[str] = None
    max_new_tokens: int = ranged(512, ge=1)
    temperature: float = ranged(0.001, ge=0)  # <= 0.01 is treated as greedy
    batch_size: int = ranged(16, ge=1)
    num_items: Optional[int] = ranged(None, ge=1)  # first N items only (quick looks)
    backend: Backend = "auto"
    merge_lora: bool = True  # fold a LoRA adapter into the weights first (false + vllm: served via LoRARequest)
    # -- sampling protocols (HumanEval pass@1 from n samples, GSM8K k-shot) --
    top_p: float = ranged(1.0, gt=0, le=1)  # nucleus sampling (sampled decoding only)
    num_samples: int = ranged(1, ge=1)  # answers per item (> 1 needs temperature > 0.01); the reference judge: pass@k
    fewshot: int = ranged(0, ge=0)  # k solved examples before each question, drawn once from fewshot_file by train.seed
    fewshot_file: Optional[str] = None  # eval-set format lines: their "question" and "std_answer"
    judge: JudgeConfig = field(default_factory=JudgeConfig)


@dataclass
class RunConfig:
    name: Optional[str] = named(None)
    # set by study.seeds, not by hand: the run's name without its seed; the report pools a group's seeds
    group: Optional[str] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def parent(self) -> Optional[str]:
        """Name of the run this one starts from: the trunk of a cooldown branch (train.branch_of), or the
        run whose final model it trains (model.name_or_path = run:<name>); else None."""
        if self.train.branch_of:
            return self.train.branch_of
        p = self.model.name_or_path
        return p[len("run:"):] if p.startswith("run:") else None

    def problems(self) -> list[tuple[str, str]]:
        """(key, why) for checks across keys; each key's own type, choices and range the loader checks."""
        out = []
        t = self.train  # the batch rule needs the resources: load_study checks it (config.resources)
        if self.model.name_or_path.startswith("scratch:") and not self.model.tokenizer:
            out.append(("model.tokenizer", "a scratch: model needs a tokenizer path"))
        if t.betas is not None and (len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas)):
            out.append(("train.betas", f"expected two numbers in [0, 1), got {t.betas!r}"))
        if self.method.kind == "qlora" and t.deepspeed and (t.zero_stage == 3 or t.offload):  # neither is supported
            key, fix = ("train.zero_stage", "2") if t.zero_stage == 3 else ("train.offload", "false")
            out.append((key, f"method.kind qlora trains under ZeRO stage 0-2 without offload (set {key}: {fix})"))
        if any(n <= 0 for n in t.save_at_tokens):
            out.append(("train.save_at_tokens", f"token counts must be > 0, got {t.save_at_tokens}"))
        from lorafull.config.branches import schedule_problems

        out += schedule_problems(t)
        ev = self.eval
        if ev.num_samples > 1 and ev.temperature <= 0.01:
            out.append(("eval.num_samples", f"{ev.num_samples} samples per item need eval.temperature > 0.01 "
                        f"(got {ev.temperature}: greedy answers would all be the same)"))
        if ev.fewshot and not ev.fewshot_file:
            out.append(("eval.fewshot_file", f"eval.fewshot: {ev.fewshot} needs a file of solved examples"))
        if ev.judge.pass_k > ev.num_samples:
            out.append(("eval.judge.pass_k", f"expected 1 .. eval.num_samples ({ev.num_samples}), got {ev.judge.pass_k}"))
        return out + serve_problems(ev.judge)


# ---------------------------------------------------------------------------------------------
# Study-level sections
# ---------------------------------------------------------------------------------------------
@dataclass
class StudySection:
    name: str = named("study")
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
    nodes: int = ranged(1, ge=1)
    gpus_per_node: int = ranged(8, ge=0)  # 0: a CPU partition (no GPU requested)
    cpus_per_gpu: int = ranged(8, ge=1)
    mem_per_gpu_gb: int = ranged(60, ge=1)
    timeout_min: int = ranged(2880, ge=1)
    signal_delay_s: int = ranged(120, ge=0)
    array_parallelism: int = ranged(16, ge=1)
    max_requeues: int = ranged(10, ge=0)
    gpu_mem_gb: float = ranged(40.0, gt=0)  # memory of one GPU of the partition; the plan checks fit against it
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load ...)
    eval_gpus: int = ranged(1, ge=0)  # GPUs for a generation job
    eval_timeout_min: int = ranged(600, ge=1)
    # (launch) generic resource requested per GPU: "gpu", or a typed "gpu:a100"; null = a CPU partition:
    # no GPUs are requested and training starts train.nproc (default gpus_per_node) processes per node
    gres: Optional[str] = "gpu"
    # (launch) interpreter command of the jobs; null = the launching interpreter (launch.grid) or
    # "python" from the job's environment (the scripts of launch.render)
    python: Optional[str] = None
    report_timeout_min: int = ranged(60, ge=1)  # (launch) the report job's time limit
    # (launch) the cluster's limits, when `scontrol show config` / sacctmgr cannot say (or to stay under
    # them): most tasks in one job array (MaxArraySize; null = read it, else Slurm's default 1001), and
    # most jobs of yours queued or running at once, array tasks one each (the QOS's MaxSubmitJobsPerUser;
    # null = read it from sacctmgr, else no limit). A study larger than the limit goes in waves.
    max_array_size: Optional[int] = ranged(None, ge=0)
    max_submit_jobs: Optional[int] = ranged(None, ge=1)


@dataclass
class HardwareConfig:
    # (plan) the step-time model's hardware: a preset (A100-40GB-SXM | A100-80GB | H100-SXM | H200 | CPU;
    # figures from vendors' data sheets, cited in lorafull/plan/hardware.py); any figure set below wins
    preset: str = "A100-40GB-SXM"
    peak_tflops: Optional[float] = None  # dense TFLOP/s of one device in the run's dtype
    mem_bw_gbs: Optional[float] = None  # device memory bandwidth, GB/s
    intra_node_gbs: Optional[float] = None  # device-to-device inside a node (NVLink), GB/s one way
    inter_node_gbs: Optional[float] = None  # per node, between nodes (InfiniBand), GB/s one way
    pcie_gbs: Optional[float] = None  # host <-> device per device, GB/s one way (offload traffic)
    host_mem_bw_gbs: Optional[float] = None  # per node: CPU memory bandwidth (CPU Adam under offload)
    devices_per_node: Optional[int] = None  # devices sharing the node's network and CPU memory
    startup_s: Optional[float] = None  # a training job's fixed set-up before its first step, seconds
    load_gbs: Optional[float] = None  # read bandwidth of the storage holding the base model's weights, GB/s


@dataclass
class PlanConfig:
    mfu: float = ranged(0.4, gt=0, le=1)  # achievable fraction of the peak for the matmuls (model FLOPs utilisation)
    # peak dense TFLOP/s of one GPU; null = plan.hardware's figure for the run's dtype
    gpu_tflops: Optional[float] = ranged(None, gt=0)
    # mean tokens per training sample (prompt + answer): a number, or a mapping from run names or data
    # file paths to numbers; null (or no entry) = counted from data.train when the file is here (a
    # deterministic random sample of its records, with the run's tokenizer), else max_length / 2
    avg_tokens_per_sample: Union[float, dict, None] = None
    # items each run's judge pass scores, for the judge server's GPU-hours when eval.eval_set is not
    # readable here (null: eval.num_items, else counted from the file)
    judge_items: Optional[int] = ranged(None, ge=1)
    mem_margin: float = ranged(0.1, ge=0, lt=1)  # fraction of slurm.gpu_mem_gb kept free (allocator fragmentation, spikes)
    overhead_gb: float = ranged(1.5, ge=0)  # per GPU: CUDA context, NCCL and DeepSpeed buffers
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    # (launch) --calibrate: optimizer steps each probe job trains (the first probe_warmup_steps untimed)
    probe_steps: int = ranged(30, ge=1)
    probe_warmup_steps: int = ranged(5, ge=0)
    use_calibration: bool = True  # plan from STUDY_DIR/launch/calibration.json where a shape was measured
    # hours per epoch measured elsewhere (a paper's table), by run name: printed beside the plan's
    reference_hours_per_epoch: dict = field(default_factory=dict)


@dataclass
class Study:
    path: Path
    study: StudySection
    base: RunConfig
    runs: list[RunConfig]
    slurm: SlurmConfig
    plan: PlanConfig
    analysis: AnalysisConfig
    select: SelectConfig = field(default_factory=SelectConfig)
    # name -> signature as load_study computed them (lorafull.config.study_signatures): the launcher
    # reuses them instead of signing 10,000 runs twice; valid while the runs are as loaded
    signatures: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def output_dir(self) -> Path:
        return Path(self.study.output_dir)

    def run(self, name: str) -> RunConfig:
        # an index built once (a 10,000-run study looks parents up by name), again when the list or a
        # name changed
        key, index = self.__dict__.get("_by_name", (None, {}))
        if key != (id(self.runs), len(self.runs)) or name not in index or index[name].name != name:
            index = {r.name: r for r in self.runs}
            self.__dict__["_by_name"] = ((id(self.runs), len(self.runs)), index)
        if name in index:
            return index[name]
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
    select: SelectConfig = field(default_factory=SelectConfig)
