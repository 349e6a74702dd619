"""Methods beyond LoRA (peft DoRA, LoHa, IA3, prompt and prefix tuning; our bottleneck adapters): each trains
with a frozen base, saves only what it added, reloads from final/, and evaluates (generation + choice)."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers.common import alpaca_records, write_jsonl
from helpers.eval_runs import eval_items
from lorafull.config import MethodConfig
from lorafull.data.template import format_prompt
from lorafull.runs import read_jsonl, read_status
from lorafull.train import trainer as train

FILES = {"dora": "adapter_config.json", "loha": "adapter_config.json", "ia3": "adapter_config.json",
         "prompt": "adapter_config.json", "prefix": "adapter_config.json", "adapter": "bottleneck_config.json"}


def answer_loss(model, tokenizer, records) -> float:
    """Mean loss of the answers given their prompts (what training lowers)."""
    losses = []
    for r in records:
        prompt = format_prompt(f"{r['instruction']}\n{r['input']}".strip(), tokenizer, "belle")
        p_ids = tokenizer(prompt)["input_ids"]
        a_ids = tokenizer(r["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([p_ids + a_ids])
        labels = ids.clone()
        labels[0, :len(p_ids)] = -100
        with torch.no_grad():
            losses.append(float(model(input_ids=ids, labels=labels).loss))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("kind", list(FILES))
def test_a_method_trains_saves_reloads_and_evaluates(make_run, tmp_path, kind):
    from lorafull.analysis.tasks import score_choice
    from lorafull.generate.stage import generate_run
    from lorafull.models.load import load_final

    lr = {"ia3": 1e-1, "prompt": 3e-1, "prefix": 3e-2}.get(kind, 1e-2)  # scale-only and prefix methods need more
    eval_set = write_jsonl(tmp_path / "eval.jsonl", eval_items(3))
    run_dir = make_run(kind, **{"method.kind": kind, "method.target_modules": "all-linear", "train.lr": lr,
                                "train.max_steps": 30, "train.save_every_steps": 0, "method.num_virtual_tokens": 8,
                                "method.adapter_size": 16, "eval.eval_set": str(eval_set), "eval.max_new_tokens": 8})
    assert train.main([str(run_dir)]) == 0, read_status(run_dir)
    summary = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("summary")][-1]
    assert 0 < summary["trainable_params"] == summary["added_params"] < summary["total_params"] / 5
    assert (run_dir / "final" / FILES[kind]).exists() and not (run_dir / "final" / "model.safetensors").exists()

    records = alpaca_records(256)[:16]
    model, tok = load_final(run_dir, dtype="fp32")
    base = AutoModelForCausalLM.from_pretrained(str(run_dir / "base"), dtype=torch.float32).eval()
    trained, before = answer_loss(model, tok, records), answer_loss(base, tok, records)
    assert trained < before - 0.1, (trained, before)  # the reloaded adapter carries what was learned

    stats = generate_run(run_dir, progress=False)
    assert stats["generated"] == 3 and len(list(read_jsonl(run_dir / "responses.jsonl"))) == 3
    items = [{"id": i, "context": f"What is {a} plus {b}?", "options": [f" {a + b}", f" {a + b + 1}"], "answer": 0}
             for i, (a, b) in enumerate([(1, 2), (3, 4), (2, 2)])]
    scored = score_choice(model, tok, items)
    assert scored["n"] == 3 and all(len(r["loglik"]) == 2 for r in scored["items"])


@pytest.mark.parametrize("kind", ["dora", "loha", "ia3", "prompt", "prefix", "adapter"])
def test_the_plan_counts_what_training_adds(kind, tiny_tokenizer_dir):
    from lorafull.models.load import apply_method, count_params_meta, param_counts
    from lorafull.models.tiny import build_tiny_model

    method = MethodConfig(kind=kind, r=4, num_virtual_tokens=8, adapter_size=16)
    real = param_counts(apply_method(build_tiny_model("tiny-llama"), method))
    assert count_params_meta("scratch:tiny-llama", method) == real and real["added"] == real["trainable"] > 0


@pytest.mark.parametrize("kind", ["dora", "adapter"])
def test_a_method_trains_under_deepspeed_and_reloads(make_run, kind):
    """ZeRO-2 with a frozen base: only the added weights are checkpointed and exported."""
    import subprocess
    import sys

    from helpers.common import REPO, job_env
    from lorafull.models.load import load_final

    run_dir = make_run(f"ds_{kind}", **{"method.kind": kind, "train.deepspeed": True, "train.nproc": 1,
                                        "train.zero_stage": 2, "train.max_steps": 12, "train.save_every_steps": 6,
                                        "method.adapter_size": 16})
    proc = subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=job_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("summary")][-1]
    assert summary["engine"] == "deepspeed-zero2" and 0 < summary["trainable_params"] == summary["added_params"]
    assert (run_dir / "final" / FILES[kind]).exists()
    model, tok = load_final(run_dir, dtype="fp32")
    base = AutoModelForCausalLM.from_pretrained(str(run_dir / "base"), dtype=torch.float32).eval()
    records = alpaca_records(256)[:16]
    assert answer_loss(model, tok, records) < answer_loss(base, tok, records)
