"""Analysis tasks of `kind: lm_eval`: named lm-evaluation-harness tasks (hellaswag, arc_challenge,
winogrande, gsm8k, ...) run on a run's model, so forgetting and learning are the numbers papers report.

Library module (no command): lorafull.analysis.tasks.evaluate_tasks runs them on the model in memory
(full weights, or an adapter merged where the method merges); harness_on_folder runs them on a trained
folder as it is, a peft adapter unmerged on its base (lm-eval's own `peft=` loading).

Task spec keys: name (our label), harness_task (the harness's task name; default: name), metric (a
harness metric: acc, acc_norm, exact_match,strict-match ...), num_fewshot, num_items (the harness's
`limit`), path (optional: a folder of the user's own task YAML files, the harness's include_path).

Compute nodes without internet: the harness loads its datasets through Hugging Face `datasets`. Fill the
cache on a login node with the same environment and HF_DATASETS_CACHE (e.g. run the task once with
`lm_eval --model hf --model_args pretrained=<tiny model> --tasks hellaswag,arc_challenge,winogrande
--limit 1`), then run jobs with HF_DATASETS_OFFLINE=1 and HF_HUB_OFFLINE=1; or point a task at local
files with your own task YAML (`dataset_path: json`, `dataset_kwargs: {data_files: ...}`) in `path`.
Code tasks (humaneval) execute model-written code: the harness runs them only with
HF_ALLOW_CODE_EVAL=1, in-process; score code with `kind: generation, scorer: code` (our sandbox) instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional


class HarnessError(ValueError):
    """A bad lm_eval task spec or a metric the harness did not report; the message names the task."""


def _metric_value(results: dict, spec) -> float:
    """The spec's metric from the harness's results of one task ("acc" matches "acc,none")."""
    for key, value in results.items():
        if key == spec.metric or key.split(",")[0] == spec.metric and key.endswith(",none"):
            return float(value)
    for key, value in results.items():
        if key.split(",")[0] == spec.metric:
            return float(value)
    metrics = sorted(k for k in results if "," in k and not k.split(",")[0].endswith("_stderr"))
    raise HarnessError(f"analysis task {spec.name!r}: metric: the harness reported no {spec.metric!r} "
                       f"(it reported: {', '.join(metrics)})")


def run_harness(lm, specs: list, batch_size: int = 8) -> dict[str, dict]:
    """{task name: {"kind": "lm_eval", "metric", "score", "n", "harness": {metric: value}}} on an lm-eval LM."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out, managers = {}, {}
    for spec in specs:  # one call per spec: each may have its own include path, few-shot count and limit
        task = spec.harness_task or spec.name
        if spec.path not in managers:  # indexing the harness's task folders takes seconds: once per path
            managers[spec.path] = TaskManager(include_path=spec.path) if spec.path else TaskManager()
        manager = managers[spec.path]
        if task not in manager.all_tasks:
            raise HarnessError(f"analysis task {spec.name!r}: harness_task: lm-eval knows no task {task!r}"
                               + (f" (nor does {spec.path})" if spec.path else ""))
        res = simple_evaluate(model=lm, tasks=[task], task_manager=manager, num_fewshot=spec.num_fewshot,
                              limit=spec.num_items, batch_size=batch_size, log_samples=False)
        metrics = {k: v for k, v in res["results"][task].items() if k != "alias"}
        n = res.get("n-samples", {}).get(task, {}).get("effective")
        out[spec.name] = {"kind": "lm_eval", "metric": spec.metric, "score": _metric_value(metrics, spec),
                          "n": n, "harness": metrics}
    return out


def harness_on_model(model, tokenizer, specs: list, batch_size: int = 8) -> dict[str, dict]:
    """The harness on a model in memory (full weights, a merged adapter, bottleneck adapters)."""
    from lm_eval.models.huggingface import HFLM

    device = str(next(model.parameters()).device)
    return run_harness(HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device),
                       specs, batch_size)


def harness_on_folder(folder: str | Path, specs: list, dtype: str = "float32", batch_size: int = 8,
                      device: Optional[str] = None) -> dict[str, dict]:
    """The harness on a trained folder as it is: an HF folder, or a peft adapter left unmerged on its base."""
    import torch
    from lm_eval.models.huggingface import HFLM

    folder = Path(folder)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    args = {"tokenizer": str(folder), "dtype": dtype, "batch_size": batch_size, "device": device}
    if (folder / "adapter_config.json").exists():
        from peft import PeftConfig

        base = PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
        lm = HFLM(pretrained=base, peft=str(folder), **args)
    elif (folder / "config.json").exists():
        lm = HFLM(pretrained=str(folder), **args)
    else:
        raise HarnessError(f"{folder}: neither an HF model folder nor a peft adapter folder "
                           "(bottleneck adapters: use harness_on_model)")
    return run_harness(lm, specs, batch_size)
