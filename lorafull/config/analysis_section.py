"""The study's `analysis` section: the target and source tasks each run is scored on (learning and
forgetting), the spectrum and checkpoint analyses, and the loss-spike rule (lorafull.analysis applies it).

Library module (no command): lorafull.config re-exports TaskSpec and AnalysisConfig.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from lorafull.config.judge import Scorer
from lorafull.config.typed import named, ranged

TaskKind = Literal["choice", "generation", "lm_eval"]
CHOICE_METRICS = ("acc", "acc_norm")  # a choice task's score (lm_eval tasks name the harness's metric)


@dataclass
class TaskSpec:
    name: str = named("task")
    path: str = ""
    # choice (log-likelihood of options) | generation (offline scorer) | lm_eval (a harness task;
    # path: optional folder of task YAMLs; lorafull.analysis.harness)
    kind: TaskKind = "choice"
    scorer: Optional[Scorer] = None  # for generation tasks
    # (analysis) choice tasks: which accuracy is the task's score: acc | acc_norm (length-normalised)
    # (lm_eval tasks: the harness's metric name, e.g. exact_match,strict-match)
    metric: str = "acc"
    num_items: Optional[int] = ranged(None, ge=1)  # (analysis) first N items only; null = all
    max_new_tokens: Optional[int] = ranged(None, ge=1)  # (analysis) generation tasks; null = the run's eval.max_new_tokens
    # -- lm_eval tasks --
    harness_task: Optional[str] = None  # the harness's task name (hellaswag, gsm8k ...); null = name
    num_fewshot: Optional[int] = ranged(None, ge=0)  # null = the harness task's default


@dataclass
class AnalysisConfig:
    target_tasks: list[TaskSpec] = field(default_factory=list)
    source_tasks: list[TaskSpec] = field(default_factory=list)
    spectrum: bool = False  # spectral analysis of the weight change of every run
    checkpoints: bool = False  # also evaluate intermediate checkpoints for learning/forgetting
    spike_factor: float = ranged(3.0, gt=1)  # loss above k x running median = a spike

    def problems(self) -> list[tuple[str, str]]:
        out, seen = [], set()
        for group in ("target_tasks", "source_tasks"):
            for i, task in enumerate(getattr(self, group)):
                if not task.path and task.kind != "lm_eval":  # an lm_eval task may name the harness's own
                    out.append((f"analysis.{group}[{i}].path", "every task needs a path"))
                if task.kind == "choice" and task.metric not in CHOICE_METRICS:
                    out.append((f"analysis.{group}[{i}].metric",
                                f"expected one of {', '.join(CHOICE_METRICS)}, got {task.metric!r}"))
                if task.kind == "generation" and task.scorer is None:
                    out.append((f"analysis.{group}[{i}].scorer", "a generation task needs a scorer: math, code or text"))
                if task.name in seen:
                    out.append((f"analysis.{group}[{i}].name", f"task name {task.name!r} given twice"))
                seen.add(task.name)
        return out
