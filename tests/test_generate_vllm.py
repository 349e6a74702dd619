"""The vLLM backend's structure on the CPU (vLLM itself needs a GPU and is not installed here): what it would
serve (the merged model, or the base + the adapter through a LoRARequest), the decoding it asks for, the
prompts it sends, and the comparison bench/bench_vllm.py makes between two backends' answers."""
from __future__ import annotations

import json

import pytest

from helpers.eval_runs import eval_items, make_generation_run, make_lora_generation_run, responses_by_id
from lorafull.config import load_run_config
from lorafull.data.dataset import encode_prompt
from lorafull.generate.stage import (choose_backend, compare_responses, generate_run, vllm_prompts, vllm_sampling,
                                     vllm_setup)
from lorafull.models.load import load_tokenizer


def test_what_vllm_would_serve_for_each_kind_of_run(tmp_path, tiny_final):
    items = eval_items(3)
    full = make_generation_run(tmp_path, tiny_final, items, "full")
    args, adapter = vllm_setup(full, load_run_config(full))
    assert args["model"] == str(full / "final") and adapter is None and args["dtype"] == "float32"

    lora = make_lora_generation_run(tmp_path, tiny_final, items, "lora", r=12, merge_lora=False)
    args, adapter = vllm_setup(lora, load_run_config(lora))
    assert adapter == str(lora / "final") and args["enable_lora"] and args["max_lora_rank"] == 16
    assert args["model"] == json.loads((lora / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]

    merged = make_lora_generation_run(tmp_path, tiny_final, items, "merged", merge_lora=True)
    args, adapter = vllm_setup(merged, load_run_config(merged))
    assert adapter is None and args["model"] == str(merged / "merged") and (merged / "merged" / "config.json").exists()
    assert "enable_lora" not in args and args["tokenizer"] == str(merged / "final")


def test_vllm_decodes_and_prompts_as_the_hf_backend(tmp_path, tiny_final):
    run_dir = make_generation_run(tmp_path, tiny_final, eval_items(4), "r")
    cfg = load_run_config(run_dir)
    assert vllm_sampling(cfg)["temperature"] == 0.0  # BELLE's 0.001 is greedy, as in the HF backend
    cfg.eval.temperature, cfg.eval.top_p, cfg.eval.num_samples = 0.7, 0.95, 3
    assert vllm_sampling(cfg) == {"temperature": 0.7, "top_p": 0.95, "max_tokens": 12, "seed": cfg.train.seed, "n": 3}
    tok = load_tokenizer(str(tiny_final))
    items = eval_items(4)
    assert [p["prompt_token_ids"] for p in vllm_prompts(items, tok, cfg)] == \
        [encode_prompt(it["question"], tok, "belle") for it in items]


def test_asking_for_vllm_where_it_is_missing_is_one_line():
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    assert choose_backend("auto") in ("hf", "vllm") and choose_backend("hf") == "hf"
    with pytest.raises(ValueError, match=r"^eval.backend: vllm is not installed"):
        choose_backend("vllm")


def test_comparing_two_backends_answers(tmp_path, tiny_final):
    items = eval_items(6)
    merged, adapter = (make_lora_generation_run(tmp_path, tiny_final, items, n, merge_lora=m)
                       for n, m in (("m", True), ("a", False)))
    plain = make_generation_run(tmp_path, tiny_final, items, "plain")
    for run_dir in (merged, adapter, plain):
        generate_run(run_dir, progress=False)
    rows = {d.name: list(responses_by_id(d).values()) for d in (merged, adapter, plain)}
    same = compare_responses(rows["m"], rows["a"])
    assert same == {"items": 6, "identical": 6, "identical_share": 1.0, "mean_common_prefix_of_different": None}
    other = compare_responses(rows["m"], rows["plain"])
    assert other["items"] == 6 and other["identical"] < 6 and 0 <= other["mean_common_prefix_of_different"] < 1
