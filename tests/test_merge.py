"""Merging a LoRA adapter into its base: same logits as the adapter on top of the base, a plain HF
folder that later (chained) runs train from."""
from __future__ import annotations

import json

import pytest
import torch

from lorafull.models import merge
from lorafull.train import trainer as train
from lorafull.models.load import load_final, resolve_run_reference
from lorafull.runs import read_status


@pytest.fixture()
def lora_run(make_run):
    run_dir = make_run("parent", **{"method.kind": "lora", "train.max_steps": 10, "train.lr": 2e-2})
    assert train.main([str(run_dir)]) == 0
    return run_dir


def logits(model, tok) -> torch.Tensor:
    batch = tok(["What is 3 plus 4?", "Repeat the word. cat"], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def test_merged_logits_equal_unmerged(lora_run, capsys):
    unmerged, tok = load_final(lora_run)
    merged_in_memory, _ = load_final(lora_run, merge=True)
    reference = logits(unmerged, tok)
    with unmerged.disable_adapter():
        assert (logits(unmerged, tok) - reference).abs().max() > 1e-3  # the adapter changes the output

    assert merge.main([str(lora_run)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(lora_run / "merged")
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (logits(merged, tok) - reference).abs().max().item() < 1e-5
    assert (logits(merged_in_memory, tok) - reference).abs().max().item() < 1e-5
    assert (lora_run / "merged" / "tokenizer.json").exists()
    # built once: a second call returns the same folder untouched
    stamp = (lora_run / "merged" / "config.json").stat().st_mtime_ns
    assert merge.merge_run(lora_run) == lora_run / "merged"
    assert (lora_run / "merged" / "config.json").stat().st_mtime_ns == stamp


def test_chained_run_trains_from_the_merged_parent(lora_run, make_run):
    child = make_run("child", **{"model.name_or_path": "run:parent", "model.tokenizer": None,
                                 "method.kind": "lora", "train.max_steps": 3, "train.save_every_steps": 0})
    assert resolve_run_reference("run:parent", child) == str(lora_run / "merged")
    assert train.main([str(child)]) == 0
    assert read_status(child)["state"] == "done"
    config = json.loads((child / "final" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(lora_run / "merged")


def test_merge_of_unfinished_or_full_run(make_run, capsys):
    unfinished = make_run("unfinished")
    assert merge.main([str(unfinished)]) == 1
    assert "no finished adapter" in capsys.readouterr().err
    full = make_run("full", **{"method.kind": "full", "train.max_steps": 2, "train.save_every_steps": 0})
    assert train.main([str(full)]) == 0
    assert merge.merge_run(full) == full / "final"
