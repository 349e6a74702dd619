"""Analysis tasks of kind lm_eval: a harness task (a local task file) on a tiny model with a LoRA adapter,
run unmerged (lm-eval loads base + adapter) and merged in memory: the same numbers both ways."""
from __future__ import annotations

import pytest

from helpers.choice_harness import option_items, wino_items, write_task_files

pytest.importorskip("lm_eval", reason="lm-eval is a test extra: pip install -e .[test]")
pytestmark = pytest.mark.slow  # the harness's task loading: ~30 s on 2 cores


def test_an_lm_eval_task_gives_the_same_numbers_unmerged_and_merged(tmp_path, tiny_tokenizer_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from lorafull.analysis.harness import HarnessError, harness_on_folder
    from lorafull.analysis.tasks import evaluate_tasks
    from lorafull.config import TaskSpec
    from lorafull.models.methods import load_trained_folder
    from lorafull.models.tiny import build_tiny_model

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    build_tiny_model("tiny-llama", vocab_size=len(tok), seed=1).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    torch.manual_seed(0)  # a random (not zero) B: the adapter changes the model
    peft_model = get_peft_model(build_tiny_model("tiny-llama", vocab_size=len(tok), seed=1),
                                LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(adapter_dir)
    tok.save_pretrained(adapter_dir)

    tasks = tmp_path / "tasks"
    write_task_files(tasks, option_items(40, seed=4), wino_items(8, seed=5))
    specs = [TaskSpec(name="opts", kind="lm_eval", harness_task="lf_options", path=str(tasks), metric="acc_norm"),
             TaskSpec(name="wino", kind="lm_eval", harness_task="lf_wino", path=str(tasks), metric="acc")]
    unmerged = harness_on_folder(adapter_dir, specs)
    merged_model = load_trained_folder(adapter_dir, torch.float32, merge=True).eval()
    merged = evaluate_tasks(merged_model, tok, specs, "belle", 8, progress=False)
    base = harness_on_folder(base_dir, specs)
    for name in ("opts", "wino"):
        assert unmerged[name]["n"] == merged[name]["n"] == (40 if name == "opts" else 8)
        for metric in ("acc,none", "acc_norm,none"):
            assert unmerged[name]["harness"][metric] == pytest.approx(merged[name]["harness"][metric]), (name, metric)
    assert unmerged["opts"]["score"] == unmerged["opts"]["harness"]["acc_norm,none"]
    assert [base[n]["harness"] for n in base] != [unmerged[n]["harness"] for n in unmerged]  # the adapter counts

    bad = TaskSpec(name="x", kind="lm_eval", harness_task="lf_options", path=str(tasks), metric="f1")
    with pytest.raises(HarnessError, match="metric: the harness reported no 'f1'"):
        harness_on_folder(base_dir, [bad])
